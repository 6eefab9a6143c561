/* The safe mapped file: bounds-checked, guarded reads and writes through a
 * mapping that sits in a larger reservation, or pread/pwrite where mapping
 * does not pay or is not safe.
 *
 * Invariants (mmap policy): the mapping covers [0, mapped) of the
 * reservation and only grows; `size` is published (release) only after the
 * mapping covers it, so the lock-free read path can trust base + size. Growth
 * and resizing hold `lock`. A file truncated by someone else is caught by
 * the guarded copy, not by the bounds check. */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <mmkit/file.h>
#include <mmkit/vm.h>
#include "fault_internal.h"
#include "internal.h"

#define DEFAULT_RESERVE ((uint64_t)64 << 30)
#define MAP_STEP_MIN    ((size_t)1 << 20)

struct mmk_file {
    int fd;
    unsigned policy;        /* MMK_FILE_MMAP or MMK_FILE_PREAD */
    int writable;
    int dir_fd;             /* directory of a file we created, until its first sync */
    char *base;             /* reservation; the mapping starts here */
    size_t reserve;
    atomic_size_t mapped;
    _Atomic uint64_t size;
    pthread_mutex_t lock;
    int fault_ref;
};

/* ------------------------------------------------------------------ policy */

/* File systems where a mapping is a bad idea: remote or userspace ones
 * (a stalled server or a daemon can make a page fault hang or fail, and
 * coherence with other clients is weaker than for read), and pseudo file
 * systems whose files report size 0. Magic numbers from statfs(2). */
static const long no_map_fs[] = {
    0x6969,              /* NFS */
    0x517B,              /* SMB */
    (long)0xFF534D42,    /* CIFS */
    (long)0xFE534D42,    /* SMB2 */
    0x65735546,          /* FUSE */
    0x00C36400,          /* Ceph */
    0x01021997,          /* 9P (v9fs) */
    0x5346414F,          /* AFS */
    0x6B414653,          /* kAFS */
    0x013111A8,          /* IBRIX */
    0x47504653,          /* GPFS */
    0x0BD00BD0,          /* Lustre */
    0x9FA0,              /* procfs */
    0x62656572,          /* sysfs */
    0x64626720,          /* debugfs */
    0x74726163,          /* tracefs */
    0x27E0EB,            /* cgroup */
    0x63677270,          /* cgroup2 */
};

static unsigned choose_policy(int fd, const struct stat *st, unsigned flags, int writable)
{
    if (flags & MMK_FILE_MMAP)
        return MMK_FILE_MMAP;
    if (flags & MMK_FILE_PREAD)
        return MMK_FILE_PREAD;
    const char *e = getenv("MMK_FILE_POLICY");
    if (e && !strcasecmp(e, "mmap"))
        return MMK_FILE_MMAP;
    if (e && (!strcasecmp(e, "pread") || !strcasecmp(e, "read")))
        return MMK_FILE_PREAD;
    if (!S_ISREG(st->st_mode))
        return MMK_FILE_PREAD;
    if (st->st_size == 0 && !writable) /* /proc and friends: the size lies */
        return MMK_FILE_PREAD;
    struct statfs sfs;
    if (fstatfs(fd, &sfs) == 0)
        for (size_t i = 0; i < MMK__ARRAY_LEN(no_map_fs); i++)
            if ((long)sfs.f_type == no_map_fs[i])
                return MMK_FILE_PREAD;
    return MMK_FILE_MMAP;
}

/* ------------------------------------------------------------------ mapping */

/* Extend the mapping to cover [0, need). Under f->lock. Maps ahead in
 * growing steps so appends do not cost an mmap each; pages past the end of
 * file are harmless (an access there is a guarded fault). */
static int ensure_mapped(mmk_file *f, uint64_t need)
{
    size_t page = mmk__pagesz(), mapped = atomic_load(&f->mapped);
    if (need <= mapped)
        return 0;
    if (need > f->reserve)
        return -EFBIG;
    size_t want = mmk__align_up((size_t)need, page);
    size_t ahead = mapped * 2 > MAP_STEP_MIN ? mapped * 2 : MAP_STEP_MIN;
    if (want < ahead)
        want = ahead < f->reserve ? ahead : f->reserve;
    unsigned prot = MMK_PROT_READ | (f->writable ? MMK_PROT_WRITE : 0);
    void *p;
    int rc = mmk__os_map_fd(f->base + mapped, want - mapped, prot, 1, f->fd, mapped, &p);
    if (rc)
        return rc;
    atomic_store_explicit(&f->mapped, want, memory_order_release);
    return 0;
}

/* Re-read the size from the file system (someone else may have grown or
 * shrunk it) and map what is new. Returns the size now known. */
static uint64_t refresh_size(mmk_file *f)
{
    pthread_mutex_lock(&f->lock);
    uint64_t size = atomic_load(&f->size), s;
    if (mmk__os_file_size(f->fd, &s) == 0) {
        if (f->policy == MMK_FILE_MMAP) {
            if (s > f->reserve)
                s = f->reserve; /* we cannot see further without moving */
            if (ensure_mapped(f, s))
                s = size < s ? size : s;
        }
        size = s;
        atomic_store_explicit(&f->size, size, memory_order_release);
    }
    pthread_mutex_unlock(&f->lock);
    return size;
}

/* Reserve blocks for [from, to) and set the file size to `to`. A full disk
 * answers now (-ENOSPC) instead of with SIGBUS on a later store. File
 * systems without fallocate get a plain ftruncate (and the old risk). */
static int grow_file(mmk_file *f, uint64_t from, uint64_t to)
{
    if (to > (uint64_t)LLONG_MAX)
        return -EFBIG;
    uint64_t size0, size1;
    int rs = mmk__os_file_size(f->fd, &size0);
    if (rs)
        return rs;
    if (fallocate(f->fd, 0, (off_t)from, (off_t)(to - from)) == 0)
        return 0;
    int e = errno;
    if (e == EOPNOTSUPP || e == ENOSYS)
        return size0 >= to || ftruncate(f->fd, (off_t)to) == 0 ? 0 : -errno;
    /* A failed fallocate may have extended the file part way: put back the
     * size it had (`from` may be stale if someone else changed the file). */
    if (mmk__os_file_size(f->fd, &size1) == 0 && size1 != size0)
        (void)!ftruncate(f->fd, (off_t)size0);
    return -e;
}

/* Grow to at least `end` bytes (file and mapping). Under no lock. */
static int grow_to(mmk_file *f, uint64_t end)
{
    if (f->policy == MMK_FILE_MMAP && end > f->reserve)
        return -EFBIG;
    pthread_mutex_lock(&f->lock);
    uint64_t size = atomic_load(&f->size);
    int rc = 0;
    if (end > size) {
        rc = grow_file(f, size, end);
        if (!rc && f->policy == MMK_FILE_MMAP)
            rc = ensure_mapped(f, end);
        if (!rc)
            atomic_store_explicit(&f->size, end, memory_order_release);
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

/* ------------------------------------------------------------------ open, close */

MMK_API int mmk_file_open_opts(const char *path, unsigned flags, const struct mmk_file_opts *opts,
                               mmk_file **out)
{
    const unsigned known = MMK_FILE_RDWR | MMK_FILE_CREATE | MMK_FILE_EXCL | MMK_FILE_TRUNC |
                           MMK_FILE_MMAP | MMK_FILE_PREAD;
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!path || (flags & ~known) || ((flags & MMK_FILE_MMAP) && (flags & MMK_FILE_PREAD)) ||
        ((flags & MMK_FILE_EXCL) && !(flags & MMK_FILE_CREATE)))
        return -EINVAL;
    int writable = (flags & (MMK_FILE_RDWR | MMK_FILE_CREATE)) != 0;
    if ((flags & MMK_FILE_TRUNC) && !writable)
        return -EINVAL;
    unsigned mode = opts && opts->mode ? opts->mode : 0600;

    int oflags = O_CLOEXEC | (writable ? O_RDWR : O_RDONLY) | ((flags & MMK_FILE_TRUNC) ? O_TRUNC : 0);
    int fd = -1, created = 0;
    if (flags & MMK_FILE_CREATE) {
        /* Exclusive first, so we know whether the directory entry is new. */
        fd = open(path, oflags | O_CREAT | O_EXCL, mode);
        created = fd >= 0;
        if (fd < 0 && errno == EEXIST && !(flags & MMK_FILE_EXCL))
            fd = open(path, oflags, mode);
    } else {
        fd = open(path, oflags);
    }
    if (fd < 0)
        return -errno;

    int rc = -ENOMEM;
    struct stat st;
    mmk_file *f = calloc(1, sizeof *f);
    if (!f)
        goto fail;
    f->fd = fd;
    f->dir_fd = -1;
    f->writable = writable;
    pthread_mutex_init(&f->lock, NULL);
    if (fstat(fd, &st)) {
        rc = -errno;
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        goto fail;
    }
    atomic_store(&f->size, (uint64_t)st.st_size);
    f->policy = choose_policy(fd, &st, flags, writable);

    if (f->policy == MMK_FILE_MMAP) {
        size_t page = mmk__pagesz();
        uint64_t want = opts && opts->reserve ? opts->reserve : DEFAULT_RESERVE;
        if (!(opts && opts->reserve) && (uint64_t)st.st_size > want / 2)
            want = (uint64_t)st.st_size * 2;
        if (want < (uint64_t)st.st_size)
            want = (uint64_t)st.st_size;
        if (want > SIZE_MAX - page) {
            rc = -EFBIG;
            goto fail;
        }
        f->reserve = mmk__align_up((size_t)want ? (size_t)want : page, page);
        void *base;
        /* 2 MiB aligned: where the page cache holds huge folios, the kernel
         * can then map them with one TLB entry. A default reservation that
         * the address space refuses (valgrind allows < 64 GiB, so may a
         * ulimit -v) is halved until it fits; one the caller chose is not. */
        size_t floor = mmk__align_up((size_t)st.st_size + 1, (size_t)1 << 20);
        while ((rc = mmk_reserve_aligned(f->reserve, (size_t)2 << 20, &base)) != 0 &&
               !(opts && opts->reserve) && f->reserve / 2 >= floor)
            f->reserve = mmk__align_up(f->reserve / 2, page);
        if (rc)
            goto fail;
        f->base = base;
        rc = mmk__fault_acquire();
        if (rc)
            goto fail;
        f->fault_ref = 1;
        pthread_mutex_lock(&f->lock);
        rc = ensure_mapped(f, (uint64_t)st.st_size);
        pthread_mutex_unlock(&f->lock);
        if (rc && !(flags & MMK_FILE_MMAP)) {
            /* Not mappable (ENODEV and the like): read it instead. */
            mmk__fault_release();
            f->fault_ref = 0;
            mmk_release(f->base, f->reserve);
            f->base = NULL;
            f->policy = MMK_FILE_PREAD;
            rc = 0;
        }
        if (rc)
            goto fail;
    }

    if (created) {
        /* Remember the directory so the first sync makes the name durable. */
        const char *slash = strrchr(path, '/');
        if (!slash) {
            f->dir_fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        } else {
            size_t n = (size_t)(slash - path);
            char *dir = malloc(n + 2);
            if (dir) {
                memcpy(dir, path, n);
                dir[n ? n : 1] = 0;
                if (!n)
                    dir[0] = '/';
                f->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                free(dir);
            }
        }
    }
    *out = f;
    return 0;

fail:
    if (f) {
        if (f->fault_ref)
            mmk__fault_release();
        if (f->base)
            mmk_release(f->base, f->reserve);
        pthread_mutex_destroy(&f->lock);
        free(f);
    }
    close(fd);
    if (created)
        unlink(path);
    return rc;
}

MMK_API int mmk_file_open(const char *path, unsigned flags, mmk_file **out)
{
    return mmk_file_open_opts(path, flags, NULL, out);
}

MMK_API void mmk_file_close(mmk_file *f)
{
    if (!f)
        return;
    if (f->base)
        mmk_release(f->base, f->reserve);
    if (f->fault_ref)
        mmk__fault_release();
    if (f->dir_fd >= 0)
        close(f->dir_fd);
    close(f->fd);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

MMK_API uint64_t mmk_file_size(const mmk_file *f)
{
    return f ? atomic_load_explicit(&f->size, memory_order_acquire) : 0;
}

MMK_API unsigned mmk_file_policy(const mmk_file *f) { return f ? f->policy : 0; }

MMK_API int mmk_file_view(mmk_file *f, void **data, uint64_t *size)
{
    if (!f || !data || !size)
        return -EINVAL;
    if (f->policy != MMK_FILE_MMAP)
        return -ENOTSUP;
    *data = f->base;
    *size = atomic_load_explicit(&f->size, memory_order_acquire);
    return 0;
}

/* ------------------------------------------------------------------ read, write */

static ssize_t pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return done ? (ssize_t)done : -errno;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

MMK_API ssize_t mmk_file_read_at(mmk_file *f, void *buf, size_t len, uint64_t off)
{
    if (!f || (!buf && len))
        return -EINVAL;
    if (len > SSIZE_MAX)
        len = SSIZE_MAX;
    if (off > (uint64_t)LLONG_MAX)
        return 0;
    if (f->policy != MMK_FILE_MMAP)
        return pread_full(f->fd, buf, len, off);
    uint64_t size = atomic_load_explicit(&f->size, memory_order_acquire);
    if (off >= size || len > size - off) {
        size = refresh_size(f);
        if (off >= size)
            return 0;
        if (len > size - off)
            len = (size_t)(size - off);
    }
    /* Large reads too: bench_file measured copying out of the mapping as
     * fast as read(2) or faster at 64 KiB to 1 MiB chunks, even from a
     * fresh mapping (docs/BENCHMARKS.md), so size alone never picks pread. */
    int rc = mmk__copy_guarded(buf, f->base + off, len);
    if (mmk__unlikely(rc)) {
        if (rc == -EFAULT)
            refresh_size(f); /* later reads see the new end of file */
        return rc;
    }
    return (ssize_t)len;
}

/* A write [off, end) through the mapping found the file shorter than end:
 * someone truncated it. Zero what the store left past the end of file in
 * its last page (bytes of this write only, so at worst this races with an
 * overlapping write, which has no order anyway), then learn the new size.
 * Under the lock so that our own growth cannot slip in between. */
static void undo_past_eof(mmk_file *f, uint64_t off, uint64_t end)
{
    static const unsigned char zeros[4096];
    pthread_mutex_lock(&f->lock);
    uint64_t eof;
    if (mmk__os_file_size(f->fd, &eof) == 0 && eof < end) {
        uint64_t from = off > eof ? off : eof;
        uint64_t to = mmk__align_up((size_t)eof, mmk__pagesz());
        if (to > end)
            to = end;
        while (from < to) {
            size_t n = to - from < sizeof zeros ? (size_t)(to - from) : sizeof zeros;
            if (mmk__store_guarded(f->base + from, zeros, n))
                break; /* cut further: the kernel dropped the page */
            from += n;
        }
    }
    pthread_mutex_unlock(&f->lock);
    refresh_size(f);
}

/* Only whole pages past the end of file fault: a store into the rest of the
 * last page succeeds, the file does not keep it, and some file systems
 * (tmpfs) show it as file data when the file grows again, by anyone. So
 * after each store through the mapping we make sure the file still reaches
 * past it. Cheaply: load a byte from the page after the one holding
 * end - 1. That load succeeds only while the file extends into that page:
 * a truncation unmaps the pages wholly past its new end before it zeroes
 * the tail of the new last page, and a fault past the end raises SIGBUS. So
 * if our store landed past a cut, the cut had unmapped that page already and
 * the load faults (unless the file grew back over it in between, and then
 * the bytes are file data written by this write). 1 when the file surely
 * reaches past end; 0 when unsure (the page is not inside the known size, or
 * the load faulted). Costs a page fault when that page was not mapped. */
static int file_reaches_past(mmk_file *f, uint64_t end)
{
    uint64_t next = mmk__align_up((size_t)end, mmk__pagesz());
    uint32_t v;
    return next < atomic_load_explicit(&f->size, memory_order_acquire) &&
           mmk__load_u32_guarded(f->base + next, &v) == 0;
}

/* The slow end of a store through the mapping: it faulted (rc), or we are
 * unsure whether the file still reaches past it. Ask the file system; if
 * the file is now shorter than end, take back what the store left past its
 * end and say -EFAULT. */
static ssize_t store_checked(mmk_file *f, uint64_t off, uint64_t end, int rc)
{
    uint64_t size;
    int rs = mmk__os_file_size(f->fd, &size);
    if (rs)
        return rs;
    if (size < end) {
        undo_past_eof(f, off, end);
        return -EFAULT;
    }
    if (rc) {
        if (rc == -EFAULT)
            refresh_size(f);
        return rc;
    }
    return (ssize_t)(end - off);
}

static ssize_t pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        done += (size_t)n;
    }
    return (ssize_t)done;
}

MMK_API ssize_t mmk_file_write_at(mmk_file *f, const void *buf, size_t len, uint64_t off)
{
    if (!f || (!buf && len))
        return -EINVAL;
    if (!f->writable)
        return -EBADF;
    if (len > SSIZE_MAX)
        return -EINVAL;
    if (!len)
        return 0;
    if (off > (uint64_t)LLONG_MAX || len > (uint64_t)LLONG_MAX - off)
        return -EFBIG;
    uint64_t end = off + len;
    if (end > atomic_load_explicit(&f->size, memory_order_acquire)) {
        int rc = grow_to(f, end);
        if (rc)
            return rc;
    }
    if (f->policy != MMK_FILE_MMAP)
        return pwrite_full(f->fd, buf, len, off);
    int rc = mmk__store_guarded(f->base + off, buf, len);
    if (mmk__unlikely(rc) || mmk__unlikely(!file_reaches_past(f, end)))
        return store_checked(f, off, end, rc);
    return (ssize_t)len;
}

MMK_API int mmk_file_resize(mmk_file *f, uint64_t size)
{
    if (!f)
        return -EINVAL;
    if (!f->writable)
        return -EBADF;
    if (size > (uint64_t)LLONG_MAX || (f->policy == MMK_FILE_MMAP && size > f->reserve))
        return -EFBIG;
    pthread_mutex_lock(&f->lock);
    uint64_t cur = atomic_load(&f->size);
    uint64_t now;
    if (mmk__os_file_size(f->fd, &now) == 0)
        cur = now; /* someone else may have changed it */
    int rc = 0;
    if (size > cur) {
        rc = grow_file(f, cur, size);
    } else if (size < cur) {
        /* Publish the smaller size first so our own readers stop short
         * rather than fault; the pages past it stay mapped (and guarded). */
        atomic_store_explicit(&f->size, size, memory_order_release);
        if (ftruncate(f->fd, (off_t)size))
            rc = -errno;
    }
    /* Also when shrinking: the file may have grown behind our back to more
     * than we ever mapped (found by fuzz_file). */
    if (!rc && f->policy == MMK_FILE_MMAP)
        rc = ensure_mapped(f, size);
    atomic_store_explicit(&f->size, rc ? cur : size, memory_order_release);
    pthread_mutex_unlock(&f->lock);
    return rc;
}

MMK_API int mmk_file_sync(mmk_file *f)
{
    if (!f)
        return -EINVAL;
#ifndef __linux__
    /* Elsewhere a mapping may have its own dirty pages: flush them first. */
    size_t mapped = atomic_load(&f->mapped);
    if (f->writable && mapped && msync(f->base, mapped, MS_SYNC))
        return -errno;
#endif
    /* On Linux the mapping and the file share one page cache, so fdatasync
     * writes pages dirtied through the mapping as well as by pwrite. */
    if (f->writable && fdatasync(f->fd))
        return -errno;
    pthread_mutex_lock(&f->lock);
    int rc = 0;
    if (f->dir_fd >= 0) {
        if (fsync(f->dir_fd))
            rc = -errno;
        else {
            close(f->dir_fd);
            f->dir_fd = -1;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

MMK_API int mmk_file_advise(mmk_file *f, uint64_t off, uint64_t len, int advice)
{
    if (!f)
        return -EINVAL;
    int fadv;
    switch (advice) {
    case MMK_ADV_NORMAL: fadv = POSIX_FADV_NORMAL; break;
    case MMK_ADV_RANDOM: fadv = POSIX_FADV_RANDOM; break;
    case MMK_ADV_SEQUENTIAL: fadv = POSIX_FADV_SEQUENTIAL; break;
    case MMK_ADV_WILLNEED: fadv = POSIX_FADV_WILLNEED; break;
    case MMK_ADV_DONTNEED: fadv = POSIX_FADV_DONTNEED; break;
    case MMK_ADV_HUGEPAGE: fadv = -1; break;
    case MMK_ADV_POPULATE_READ: fadv = -1; break;
    default: return -EINVAL;
    }
    if (f->policy == MMK_FILE_MMAP) {
        size_t page = mmk__pagesz(), mapped = atomic_load(&f->mapped);
        uint64_t start = off & ~(uint64_t)(page - 1);
        uint64_t end = len && len <= UINT64_MAX - off ? off + len : mapped;
        if (end > mapped)
            end = mapped;
        if (advice == MMK_ADV_POPULATE_READ) {
            /* Only the file's pages: past its end the kernel says EFAULT. */
            uint64_t size = atomic_load_explicit(&f->size, memory_order_acquire);
            if (end > size)
                end = size;
        }
        if (start < end) {
            int rc = mmk_advise(f->base + start, (size_t)(end - start), advice);
            if (rc)
                return rc;
        }
    } else if (fadv < 0) {
        return -ENOTSUP;
    }
    /* DONTNEED on the file would drop clean cached pages for everyone;
     * for the mapping it only unmaps ours. Do both: that is what asking
     * to forget a range means. WILLNEED through fadvise starts read-ahead
     * without mapping anything. */
    if (fadv >= 0) {
        int e = posix_fadvise(f->fd, (off_t)off, (off_t)(len > (uint64_t)LLONG_MAX ? 0 : len), fadv);
        if (e && e != ESPIPE)
            return -e;
    }
    return 0;
}
