/* sparse.h: a huge reservation, committed at once (charged only where
 * touched), with release, honest residency and zero-page reclaim. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/ioctl.h>
#include <sys/mman.h>
#endif

#include <mmkit/sparse.h>
#include <mmkit/vm.h>
#include "internal.h"

struct mmk_sparse {
    char *base;
    size_t len; /* mapped bytes: count * elem_size rounded up to pages */
    uint64_t count;
    size_t elem;
    int fd;     /* shared: the memory file; private: -1 */
};

MMK_API int mmk_sparse_create(uint64_t count, size_t elem_size, unsigned flags,
                              mmk_sparse **out)
{
    if (!out || !count || !elem_size || (flags & ~MMK_SPARSE_SHARED))
        return -EINVAL;
    if (count > SIZE_MAX / elem_size)
        return -ENOMEM;
    size_t len = mmk__align_up((size_t)count * elem_size, mmk__pagesz());
    if (!len)
        return -ENOMEM;
    mmk_sparse *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->count = count;
    s->elem = elem_size;
    s->len = len;
    s->fd = -1;
    void *p;
    int rc = mmk_reserve(len, &p);
    if (rc)
        goto fail;
    s->base = p;
    if (flags & MMK_SPARSE_SHARED) {
        rc = mmk_shm_create("mmkit-sparse", len, 0, &s->fd);
        if (rc < 0)
            goto fail;
        /* Over our own reservation: race-free. */
        rc = mmk__os_map_fd(p, len, MMK_PROT_READ | MMK_PROT_WRITE, 1, s->fd, 0, &p);
    } else {
        /* One mapping, MAP_NORESERVE: charged page by page on first touch. */
        rc = mmk_commit(p, len);
    }
    if (rc)
        goto fail;
    *out = s;
    return 0;
fail:
    if (s->base)
        mmk_release(s->base, len);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
    return rc;
}

MMK_API void mmk_sparse_destroy(mmk_sparse *s)
{
    if (!s)
        return;
    mmk_release(s->base, s->len);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

MMK_API void *mmk_sparse_at(const mmk_sparse *s, uint64_t index)
{
    if (!s || index >= s->count)
        return NULL;
    return s->base + (size_t)index * s->elem;
}

MMK_API uint64_t mmk_sparse_count(const mmk_sparse *s) { return s ? s->count : 0; }
MMK_API size_t mmk_sparse_elem_size(const mmk_sparse *s) { return s ? s->elem : 0; }
MMK_API void *mmk_sparse_base(const mmk_sparse *s) { return s ? s->base : NULL; }
MMK_API int mmk_sparse_fd(const mmk_sparse *s) { return s && s->fd >= 0 ? s->fd : -EINVAL; }

/* Byte range of elements [first, first+n), checked. */
static int elem_range(const mmk_sparse *s, uint64_t first, uint64_t n, uintptr_t *b, uintptr_t *e)
{
    if (!s)
        return -EINVAL;
    if (first > s->count || n > s->count - first)
        return -ERANGE;
    *b = (uintptr_t)s->base + (size_t)first * s->elem;
    *e = *b + (size_t)n * s->elem;
    return 0;
}

static int drop(mmk_sparse *s, uintptr_t b, uintptr_t e)
{
    if (e <= b)
        return 0;
    /* Private: DONTNEED frees at once (never FREE: RSS would not fall).
     * Shared: DONTNEED would only unmap; REMOVE punches the hole. */
    return mmk_advise((void *)b, e - b, s->fd >= 0 ? MMK_ADV_REMOVE : MMK_ADV_DONTNEED);
}

static int page_resident(const void *p)
{
    size_t r = 0;
    return mmk_resident(p, mmk__pagesz(), &r) == 0 && r;
}

MMK_API int mmk_sparse_release(mmk_sparse *s, uint64_t first, uint64_t n)
{
    uintptr_t b, e;
    int rc = elem_range(s, first, n, &b, &e);
    if (rc || b == e)
        return rc;
    size_t page = mmk__pagesz();
    uintptr_t pb = mmk__align_up(b, page), pe = mmk__align_down(e, page);
    if (pb >= pe) { /* inside one page (or two partial ones) */
        if (page_resident((void *)mmk__align_down(b, page)) ||
            page_resident((void *)mmk__align_down(e - 1, page)))
            memset((void *)b, 0, e - b);
        return 0;
    }
    /* Zero the partial ends only where a page exists (no new page for it). */
    if (b < pb && page_resident((void *)(pb - page)))
        memset((void *)b, 0, pb - b);
    if (pe < e && page_resident((void *)pe))
        memset((void *)pe, 0, e - pe);
    return drop(s, pb, pe);
}

/* ------------------------------------------------------------ residency */

#ifdef __linux__
/* PAGEMAP_SCAN (Linux 6.7); defined here for older headers. */
struct mmk__page_region {
    uint64_t start, end, categories;
};
struct mmk__pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define MMK__PAGEMAP_SCAN _IOWR('f', 16, struct mmk__pm_scan_arg)
#define MMK__PAGE_IS_PRESENT (1u << 3)
#define MMK__PAGE_IS_PFNZERO (1u << 5)

/* Visit the present pages of [b, e) that are not the shared zero page:
 * fn(ctx, start, end) for each run. -ENOTSUP when the kernel lacks the ioctl. */
static int scan_present(uintptr_t b, uintptr_t e, int (*fn)(void *, uintptr_t, uintptr_t),
                        void *ctx)
{
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -ENOTSUP;
    struct mmk__page_region vec[256];
    int rc = 0;
    while (b < e) {
        struct mmk__pm_scan_arg a = {
            .size = sizeof a, .start = b, .end = e, .vec = (uintptr_t)vec,
            .vec_len = MMK__ARRAY_LEN(vec),
            .category_mask = MMK__PAGE_IS_PRESENT | MMK__PAGE_IS_PFNZERO,
            .category_inverted = MMK__PAGE_IS_PFNZERO,
            .return_mask = MMK__PAGE_IS_PRESENT,
        };
        long n = ioctl(fd, MMK__PAGEMAP_SCAN, &a);
        if (n < 0) {
            rc = (errno == ENOTTY || errno == EINVAL) ? -ENOTSUP : -errno;
            break;
        }
        for (long i = 0; i < n && !rc; i++)
            rc = fn(ctx, vec[i].start, vec[i].end);
        if (rc || a.walk_end <= b)
            break;
        b = a.walk_end;
    }
    close(fd);
    return rc;
}
#else
static int scan_present(uintptr_t b, uintptr_t e, int (*fn)(void *, uintptr_t, uintptr_t),
                        void *ctx)
{
    (void)b, (void)e, (void)fn, (void)ctx;
    return -ENOTSUP;
}
#endif

/* The same walk with mincore: runs of resident pages. */
static int scan_mincore(uintptr_t b, uintptr_t e, int (*fn)(void *, uintptr_t, uintptr_t),
                        void *ctx)
{
    size_t page = mmk__pagesz();
    unsigned char vec[16384];
    while (b < e) {
        size_t pages = (e - b) / page;
        if (pages > sizeof vec)
            pages = sizeof vec;
        if (mincore((void *)b, pages * page, vec))
            return -errno;
        size_t i = 0;
        while (i < pages) {
            if (!(vec[i] & 1)) {
                i++;
                continue;
            }
            size_t j = i;
            while (j < pages && (vec[j] & 1))
                j++;
            int rc = fn(ctx, b + i * page, b + j * page);
            if (rc)
                return rc;
            i = j;
        }
        b += pages * page;
    }
    return 0;
}

static int scan(const mmk_sparse *s, uintptr_t b, uintptr_t e,
                int (*fn)(void *, uintptr_t, uintptr_t), void *ctx)
{
    /* For shared memory the page cache is the truth (another process may
     * have filled pages we never mapped): mincore. Private memory: the page
     * tables, minus the zero page. */
    if (s->fd < 0) {
        int rc = scan_present(b, e, fn, ctx);
        if (rc != -ENOTSUP)
            return rc;
    }
    return scan_mincore(b, e, fn, ctx);
}

static int add_run(void *ctx, uintptr_t b, uintptr_t e)
{
    *(size_t *)ctx += e - b;
    return 0;
}

MMK_API int mmk_sparse_resident(const mmk_sparse *s, uint64_t first, uint64_t n, size_t *bytes)
{
    uintptr_t b, e;
    if (!bytes)
        return -EINVAL;
    int rc = elem_range(s, first, n, &b, &e);
    if (rc)
        return rc;
    size_t page = mmk__pagesz(), total = 0;
    b = mmk__align_down(b, page);
    e = mmk__align_up(e, page);
    if (b < e)
        rc = scan(s, b, e, add_run, &total);
    if (rc)
        return rc;
    *bytes = total;
    return 0;
}

static int page_is_zero(const void *p, size_t len)
{
    const uint64_t *w = p;
    for (size_t i = 0; i < len / 8; i += 8) {
        uint64_t x = w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] |
                     w[i + 7];
        if (x)
            return 0;
    }
    return 1;
}

struct reclaim {
    mmk_sparse *s;
    size_t freed;
};

static int reclaim_run(void *ctx, uintptr_t b, uintptr_t e)
{
    struct reclaim *r = ctx;
    size_t page = mmk__pagesz();
    uintptr_t zb = 0; /* start of the current run of zero pages */
    for (uintptr_t p = b; p <= e; p += page) {
        int z = p < e && page_is_zero((const void *)p, page);
        if (z && !zb)
            zb = p;
        if (!z && zb) {
            int rc = drop(r->s, zb, p);
            if (rc)
                return rc;
            r->freed += p - zb;
            zb = 0;
        }
    }
    return 0;
}

MMK_API int mmk_sparse_reclaim_zero(mmk_sparse *s, uint64_t first, uint64_t n, size_t *bytes)
{
    uintptr_t b, e;
    int rc = elem_range(s, first, n, &b, &e);
    if (rc)
        return rc;
    size_t page = mmk__pagesz();
    struct reclaim r = {s, 0};
    b = mmk__align_up(b, page);
    e = mmk__align_down(e, page);
    if (b < e)
        rc = scan(s, b, e, reclaim_run, &r);
    if (bytes)
        *bytes = r.freed;
    return rc;
}
