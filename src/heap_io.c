/* Default file I/O for the heap: thin wrappers over the system calls that
 * retry EINTR and finish short writes (a short write that makes no progress
 * becomes -EIO). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "heap_io.h"

static ssize_t d_pread(int fd, void *buf, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break; /* end of file: short read */
        done += (size_t)r;
    }
    return (ssize_t)done;
}

static ssize_t d_pwrite(int fd, const void *buf, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pwrite(fd, (const char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EIO;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

static ssize_t d_pwritev(int fd, const struct iovec *iov, int cnt, uint64_t off)
{
    size_t total = 0;
    struct iovec local[64];
    while (cnt > 0) {
        int k = cnt < 64 ? cnt : 64;
        memcpy(local, iov, (size_t)k * sizeof *iov);
        size_t want = 0;
        for (int i = 0; i < k; i++)
            want += local[i].iov_len;
        size_t got = 0;
        struct iovec *v = local;
        int vk = k;
        while (got < want) {
            ssize_t r = pwritev(fd, v, vk, (off_t)(off + total + got));
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            if (r == 0)
                return -EIO;
            got += (size_t)r;
            /* Skip what was written: a short write resumes mid-vector. */
            size_t s = (size_t)r;
            while (vk && s >= v->iov_len) {
                s -= v->iov_len;
                v++;
                vk--;
            }
            if (vk) {
                v->iov_base = (char *)v->iov_base + s;
                v->iov_len -= s;
            }
        }
        total += want;
        iov += k;
        cnt -= k;
    }
    return (ssize_t)total;
}

static int d_fdatasync(int fd)
{
    return fdatasync(fd) ? -errno : 0;
}

static int d_fsync_dir(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == path)
        strcpy(dir, "/");
    else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir)
            return -ENAMETOOLONG;
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) ? -errno : 0;
    close(fd);
    return rc;
}

static int d_ftruncate(int fd, uint64_t size)
{
    return ftruncate(fd, (off_t)size) ? -errno : 0;
}

static int d_fallocate(int fd, int mode, uint64_t off, uint64_t len)
{
    return fallocate(fd, mode, (off_t)off, (off_t)len) ? -errno : 0;
}

static int d_rename(const char *from, const char *to)
{
    return rename(from, to) ? -errno : 0;
}

static int d_boot_id(uint8_t out[16])
{
    memset(out, 0, 16);
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char txt[64];
    ssize_t n = read(fd, txt, sizeof txt - 1);
    close(fd);
    if (n <= 0)
        return -EIO;
    int k = 0;
    for (ssize_t i = 0; i < n && k < 32; i++) {
        char c = txt[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            continue;
        out[k / 2] |= (uint8_t)(k % 2 ? v : v << 4);
        k++;
    }
    return k == 32 ? 0 : -EIO;
}

const struct mmk__heap_io mmk__heap_io_default = {
    d_pread, d_pwrite, d_pwritev, d_fdatasync, d_fsync_dir,
    d_ftruncate, d_fallocate, d_rename, d_boot_id,
};

static struct mmk__heap_io current = {
    d_pread, d_pwrite, d_pwritev, d_fdatasync, d_fsync_dir,
    d_ftruncate, d_fallocate, d_rename, d_boot_id,
};

const struct mmk__heap_io *mmk__heap_io = &current;

void mmk__heap_io_set_hooks(const struct mmk__heap_io *io)
{
    const struct mmk__heap_io *d = &mmk__heap_io_default;
    struct mmk__heap_io n = *d;
    if (io) {
#define TAKE(f) n.f = io->f ? io->f : d->f
        TAKE(pread);
        TAKE(pwrite);
        TAKE(pwritev);
        TAKE(fdatasync);
        TAKE(fsync_dir);
        TAKE(ftruncate);
        TAKE(fallocate);
        TAKE(rename);
        TAKE(boot_id);
#undef TAKE
    }
    current = n;
}
