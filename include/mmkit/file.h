/* mmkit/file.h: the safe mapped file.
 *
 * A file read and written at offsets through a memory mapping, without the
 * usual ways a mapping kills a program: reads and writes are bounds-checked
 * and guarded (fault.h), so a file truncated by another process, or a disk
 * error, gives -EFAULT or -EIO instead of SIGBUS; growing the file reserves
 * its disk blocks first (fallocate), so a full disk gives -ENOSPC instead of
 * a SIGBUS on a later store. The mapping sits at the start of a larger
 * address-space reservation, so growing the file never moves it.
 *
 * Each file picks a reading policy: mapping (no system call per read: about
 * 2-3x pread for random 4 KiB reads of cached data, and as fast as read(2)
 * or faster for large sequential ones, as measured here) or pread/pwrite
 * (network file systems, FUSE, pseudo file systems and files whose size
 * reads as 0 such as /proc, anything that is not a regular file, and every
 * file where mmap fails). See docs/guide-file.md.
 *
 * Thread-safety: read_at and write_at may run concurrently from any number
 * of threads (they take no lock on the fast path); resize, sync and advise
 * may run alongside them. Overlapping concurrent writes give no ordering
 * guarantee, as with pwrite. */
#ifndef MMKIT_FILE_H
#define MMKIT_FILE_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MMK_FILE_RDONLY 0u
#define MMK_FILE_RDWR   1u
#define MMK_FILE_CREATE 2u   /* create if missing (mode 0600 unless given); implies RDWR */
#define MMK_FILE_EXCL   4u   /* with CREATE: fail with -EEXIST if the file exists */
#define MMK_FILE_TRUNC  8u   /* with RDWR: truncate to 0 on open */
#define MMK_FILE_MMAP   16u  /* policy: always map (refused with -ENOTSUP where mmap fails) */
#define MMK_FILE_PREAD  32u  /* policy: always pread/pwrite, never map */

typedef struct mmk_file mmk_file;

/* Open (or create) a file; close-on-exec. flags: MMK_FILE_RDONLY (0),
 * MMK_FILE_RDWR, MMK_FILE_CREATE and the others above. Without MMK_FILE_MMAP
 * or MMK_FILE_PREAD the policy is chosen from the file system (statfs) and
 * the size; MMK_FILE_POLICY=mmap|pread in the environment overrides it.
 * Opening for writing reserves the blocks of any holes already in the file.
 * Errors: -errno from open/fstat/mmap, -EISDIR, -EINVAL for bad flags. */
MMK_API int mmk_file_open(const char *path, unsigned flags, mmk_file **out);

/* Options for mmk_file_open_opts; zero fields mean the defaults. */
struct mmk_file_opts {
    unsigned mode;      /* permissions of a created file (default 0600) */
    uint64_t reserve;   /* address space kept for growth (default max(64 GiB, 2 x size)) */
};

/* mmk_file_open with options (opts may be NULL). */
MMK_API int mmk_file_open_opts(const char *path, unsigned flags, const struct mmk_file_opts *opts,
                               mmk_file **out);

/* Unmap and close. Does not sync. Accepts NULL. */
MMK_API void mmk_file_close(mmk_file *f);

/* The size as this handle knows it. It follows growth made by this handle at
 * once and growth by others when a read reaches past it. */
MMK_API uint64_t mmk_file_size(const mmk_file *f);

/* Copy up to len bytes at off into buf. Returns the count: short at end of
 * file, 0 at or past it. -EFAULT when the file shrank under the read (another
 * process truncated it), -EIO on a disk or memory error; buf then holds an
 * unspecified prefix. A read reaching past the known size first checks
 * whether the file has grown. */
MMK_API ssize_t mmk_file_read_at(mmk_file *f, void *buf, size_t len, uint64_t off);

/* Write len bytes at off, growing the file when off + len is past its end
 * (blocks are reserved first: -ENOSPC on a full disk, nothing written).
 * Returns len, or -EBADF (opened read-only), -EFBIG (beyond the
 * reservation), -ENOSPC, -EFAULT (the file shrank under the write: the part
 * before the new end may be written, nothing is left past it), -EIO.
 * Through the mapping a store past the end inside the last page does not
 * fault, so each write then loads a byte of the page after it (a fault or
 * a write reaching the known end asks fstat) to catch a file cut under it. */
MMK_API ssize_t mmk_file_write_at(mmk_file *f, const void *buf, size_t len, uint64_t off);

/* Set the size. Growing reserves the new blocks (-ENOSPC when the disk is
 * full, the size unchanged); shrinking discards the tail. -EBADF read-only. */
MMK_API int mmk_file_resize(mmk_file *f, uint64_t size);

/* Make every write made so far durable (data and the size needed to read
 * it back) before returning; the first sync of a created file also syncs its
 * directory entry. -EIO when the disk failed. */
MMK_API int mmk_file_sync(mmk_file *f);

/* Advice for [off, off+len) (len 0: to the end of the reservation): one of
 * MMK_ADV_RANDOM, MMK_ADV_SEQUENTIAL, MMK_ADV_WILLNEED, MMK_ADV_HUGEPAGE,
 * MMK_ADV_NORMAL, MMK_ADV_DONTNEED (from mmkit/vm.h). Applied to the mapping
 * (madvise) and to the file (posix_fadvise) so both policies benefit. Huge
 * pages for file mappings need a file system that supports them; -ENOTSUP
 * otherwise. MMK_ADV_POPULATE_READ maps the range's pages now (within the
 * file's size), so first reads take no page fault: it waits for the disk
 * where the pages are not cached, so bound the range; -EFAULT if the file
 * shrank, -ENOTSUP under the pread policy or before Linux 5.14. -EINVAL for
 * other advice. */
MMK_API int mmk_file_advise(mmk_file *f, uint64_t off, uint64_t len, int advice);

/* MMK_FILE_MMAP or MMK_FILE_PREAD: the policy this file uses. */
MMK_API unsigned mmk_file_policy(const mmk_file *f);

/* The zero-copy view, UNGUARDED: *data receives the start of the mapping
 * (it never moves while the file is open) and *size the current size.
 * Reading it is as fast as memory, but a fault is not caught: if another
 * process truncates the file, or the disk fails, touching the lost pages
 * raises SIGBUS and, unless you handle it, kills the process. Use it for
 * files you own and nobody truncates, or copy with mmk_copy_guarded. Bytes
 * past *size must not be touched. -ENOTSUP under the pread policy. */
MMK_API int mmk_file_view(mmk_file *f, void **data, uint64_t *size);

#ifdef __cplusplus
}
#endif
#endif
