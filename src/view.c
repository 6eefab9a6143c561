/* view.h, dual views: one memory object mapped writable and read-only,
 * both inside one reservation of ours (MAP_FIXED there is race-free). */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mmkit/view.h>
#include <mmkit/vm.h>
#include "internal.h"

struct mmk_view {
    char *rw;       /* NULL when attached */
    const char *ro;
    char *res;      /* the reservation holding the maps */
    size_t size, res_len;
    int fd;
};

static void view_free(mmk_view *v)
{
    if (v->res)
        mmk_release(v->res, v->res_len);
    if (v->fd >= 0)
        close(v->fd);
    free(v);
}

MMK_API int mmk_view_create(size_t size, unsigned flags, mmk_view **out)
{
    if (!out || !size || (flags & ~MMK_VIEW_SEAL))
        return -EINVAL;
    size_t len = mmk__align_up(size, mmk__pagesz());
    if (!len || len > SIZE_MAX / 2)
        return -ENOMEM;
    mmk_view *v = calloc(1, sizeof *v);
    if (!v)
        return -ENOMEM;
    v->fd = -1;
    v->size = len;
    v->res_len = 2 * len;
    void *p;
    /* Only memfd can carry F_SEAL_FUTURE_WRITE. */
    int rc = mmk_shm_create("mmkit-view", len, (flags & MMK_VIEW_SEAL) ? MMK_SHM_MEMFD : 0, &v->fd);
    if (rc < 0)
        goto fail;
    rc = mmk_reserve(v->res_len, &p);
    if (rc)
        goto fail;
    v->res = p;
    rc = mmk__os_map_fd(v->res, len, MMK_PROT_READ | MMK_PROT_WRITE, 1, v->fd, 0, &p);
    if (rc)
        goto fail;
    v->rw = p;
    if (flags & MMK_VIEW_SEAL) {
        /* After our writable map, before the read-only one: a map made
         * after the seal cannot be mprotect()ed writable either. */
        rc = mmk_shm_seal(v->fd, MMK_SEAL_FUTURE_WRITE | MMK_SEAL_SHRINK | MMK_SEAL_GROW);
        if (rc)
            goto fail;
    }
    rc = mmk__os_map_fd(v->res + len, len, MMK_PROT_READ, 1, v->fd, 0, &p);
    if (rc)
        goto fail;
    v->ro = p;
    *out = v;
    return 0;
fail:
    view_free(v);
    return rc;
}

MMK_API int mmk_view_attach(int fd, size_t size, mmk_view **out)
{
    if (!out || fd < 0)
        return -EINVAL;
    struct stat st;
    if (fstat(fd, &st))
        return -errno;
    if (!size)
        size = (size_t)st.st_size;
    /* Mapping past the end would turn reads into SIGBUS. */
    if (!size || (uint64_t)size > (uint64_t)st.st_size)
        return -EINVAL;
    mmk_view *v = calloc(1, sizeof *v);
    if (!v)
        return -ENOMEM;
    v->size = size;
    v->res_len = mmk__align_up(size, mmk__pagesz());
    v->fd = dup(fd);
    int rc = v->fd < 0 ? -errno : 0;
    void *p;
    if (!rc)
        rc = mmk_reserve(v->res_len, &p);
    if (!rc) {
        v->res = p;
        rc = mmk__os_map_fd(p, v->res_len, MMK_PROT_READ, 1, v->fd, 0, &p);
    }
    if (rc) {
        view_free(v);
        return rc;
    }
    v->ro = p;
    *out = v;
    return 0;
}

MMK_API void mmk_view_destroy(mmk_view *v)
{
    if (v)
        view_free(v);
}

MMK_API void *mmk_view_rw(const mmk_view *v) { return v ? v->rw : NULL; }
MMK_API const void *mmk_view_ro(const mmk_view *v) { return v ? v->ro : NULL; }
MMK_API size_t mmk_view_size(const mmk_view *v) { return v ? v->size : 0; }
MMK_API int mmk_view_fd(const mmk_view *v) { return v ? v->fd : -EINVAL; }
