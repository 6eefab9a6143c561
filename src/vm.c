/* vm.h: argument checking over the platform layer. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mmkit/vm.h>
#include "internal.h"

size_t mmk__page;

MMK_API size_t mmk_page_size(void) { return mmk__pagesz(); }

MMK_API size_t mmk_alloc_granularity(void) { return mmk__os_alloc_granularity(); }

/* Validate a page-aligned, non-empty range and round len up to pages. */
static int check_range(const void *addr, size_t *len)
{
    size_t page = mmk__pagesz();
    if (!addr || !*len || !mmk__is_aligned(addr, page))
        return -EINVAL;
    size_t l = mmk__align_up(*len, page);
    if (!l || (uintptr_t)addr + l < (uintptr_t)addr)
        return -EINVAL;
    *len = l;
    return 0;
}

MMK_API int mmk_reserve_aligned(size_t len, size_t align, void **out)
{
    size_t page = mmk__pagesz();
    if (!out || !len || !mmk__is_pow2(align))
        return -EINVAL;
    if (align < page)
        align = page;
    size_t l = mmk__align_up(len, page);
    if (!l)
        return -ENOMEM;
    return mmk__os_reserve(l, align, out);
}

MMK_API int mmk_reserve(size_t len, void **out) { return mmk_reserve_aligned(len, 0x1, out); }

MMK_API int mmk_commit(void *addr, size_t len)
{
    int rc = check_range(addr, &len);
    return rc ? rc : mmk__os_commit(addr, len);
}

MMK_API int mmk_decommit(void *addr, size_t len)
{
    int rc = check_range(addr, &len);
    return rc ? rc : mmk__os_decommit(addr, len);
}

MMK_API int mmk_release(void *addr, size_t len)
{
    int rc = check_range(addr, &len);
    return rc ? rc : mmk__os_release(addr, len);
}

MMK_API int mmk_protect(void *addr, size_t len, unsigned prot)
{
    int rc = check_range(addr, &len);
    if (rc)
        return rc;
    if (prot & ~(MMK_PROT_READ | MMK_PROT_WRITE | MMK_PROT_EXEC))
        return -EINVAL;
    return mmk__os_protect(addr, len, prot);
}

MMK_API int mmk_advise(void *addr, size_t len, int advice)
{
    int rc = check_range(addr, &len);
    if (rc)
        return rc;
    if (advice < 0 || advice >= MMK_ADV_COUNT_)
        return -EINVAL;
    return mmk__os_advise(addr, len, advice);
}

MMK_API int mmk_resident(const void *addr, size_t len, size_t *bytes)
{
    if (!bytes)
        return -EINVAL;
    int rc = check_range(addr, &len);
    return rc ? rc : mmk__os_resident(addr, len, bytes);
}

MMK_API int mmk_hugepage_info(struct mmk_hugepage_info *out)
{
    if (!out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    return mmk__os_hugepage_info(&out->size, &out->thp, &out->hugetlb_free);
}

/* ------------------------------------------------------------- shared memory */

static unsigned forced_backend(void)
{
    const char *e = getenv("MMK_SHM_BACKEND");
    if (!e || !*e)
        return 0;
    if (!strcmp(e, "memfd"))
        return MMK_SHM_MEMFD;
    if (!strcmp(e, "posix"))
        return MMK_SHM_POSIX;
    if (!strcmp(e, "tmpfile"))
        return MMK_SHM_TMPFILE;
    return 0;
}

MMK_API int mmk_shm_create(const char *name, size_t size, unsigned only, int *fd)
{
    const unsigned all = MMK_SHM_MEMFD | MMK_SHM_POSIX | MMK_SHM_TMPFILE;
    unsigned huge = only & MMK_SHM_HUGETLB;
    only &= ~MMK_SHM_HUGETLB;
    if (!fd || (only & ~all))
        return -EINVAL;
    if (size > (size_t)INT64_MAX)
        return -EFBIG;
    unsigned want = only ? only : all, f = forced_backend();
    if (f)
        want = f;
    int rc = -ENOTSUP;
    for (unsigned b = MMK_SHM_MEMFD; b <= MMK_SHM_TMPFILE; b <<= 1) {
        if (!(want & b))
            continue;
        rc = mmk__os_shm_create(b | huge, name, size, fd);
        if (rc == 0)
            return (int)b;
        /* Size errors are the caller's, not the backend's: stop there. */
        if (rc == -EFBIG || rc == -ENOSPC)
            break;
    }
    return rc;
}

MMK_API int mmk_shm_seal(int fd, unsigned seals)
{
    const unsigned all = MMK_SEAL_SHRINK | MMK_SEAL_GROW | MMK_SEAL_WRITE |
                         MMK_SEAL_FUTURE_WRITE | MMK_SEAL_SEAL;
    if (fd < 0 || !seals || (seals & ~all))
        return -EINVAL;
    return mmk__os_shm_seal(fd, seals);
}

MMK_API int mmk_shm_seal_size(int fd)
{
    return mmk_shm_seal(fd, MMK_SEAL_SHRINK | MMK_SEAL_GROW | MMK_SEAL_SEAL);
}

MMK_API int mmk_shm_seals(int fd)
{
    if (fd < 0)
        return -EBADF;
    return mmk__os_shm_seals(fd);
}
