/* The heap's file I/O layer, internal. Every byte the heap (and the map on
 * top of it) writes to or reads from its files goes through this table, so a
 * test can record, reorder, drop or fail writes and syncs (power-loss
 * simulation, injected EIO/ENOSPC, short writes).
 *
 * Each function has the contract of the system call it is named after, but
 * returns -errno instead of setting errno (>= 0 on success). The defaults
 * retry EINTR and complete short writes. */
#ifndef MMK_HEAP_IO_H
#define MMK_HEAP_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct mmk__heap_io {
    ssize_t (*pread)(int fd, void *buf, size_t n, uint64_t off);
    ssize_t (*pwrite)(int fd, const void *buf, size_t n, uint64_t off);
    ssize_t (*pwritev)(int fd, const struct iovec *iov, int cnt, uint64_t off);
    int (*fdatasync)(int fd);
    int (*fsync_dir)(const char *path);           /* the directory holding path */
    int (*ftruncate)(int fd, uint64_t size);
    int (*fallocate)(int fd, int mode, uint64_t off, uint64_t len);
    int (*rename)(const char *from, const char *to);
    /* 16 bytes identifying this boot of the machine: recovery trusts the
     * page cache only when the boot that wrote the last checkpoint is the
     * current one. A power-loss simulator returns a different id. */
    int (*boot_id)(uint8_t out[16]);
};

/* The table in use (never NULL). */
extern const struct mmk__heap_io *mmk__heap_io;

/* Replace the table (NULL restores the defaults). Not thread-safe against
 * heap calls in flight: set it before opening heaps. Any member left NULL
 * falls back to the default. */
void mmk__heap_io_set_hooks(const struct mmk__heap_io *io);

/* The default implementations, for hooks that wrap them. */
extern const struct mmk__heap_io mmk__heap_io_default;

#endif
