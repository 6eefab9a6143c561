/* mmkit/view.h: one memory, two views; point-in-time snapshots without fork.
 *
 * Dual views (mmk_view): one shared memory object mapped twice, once
 * read-only and once writable. Code that must not write gets the read-only
 * address: a stray write there faults (SIGSEGV) instead of corrupting data.
 * The descriptor can be handed to another process; sealed (MMK_VIEW_SEAL),
 * nobody can map it writable again, so that process's view stays read-only.
 *
 * Snapshots (mmk_region + mmk_snapshot): a region of memory whose contents
 * can be frozen at a point in time. Taking a snapshot copies nothing: it
 * write-protects the region. The first write to a page afterwards copies that
 * one page aside (before the write proceeds) into every live snapshot that
 * has not saved it yet; the snapshot then reads as the region was when it
 * was taken. Two mechanisms, chosen at creation:
 *   - userfaultfd write-protection (Linux 6.4+ for UFFD_FEATURE_WP_UNPOPULATED;
 *     opened with UFFD_USER_MODE_ONLY so no privilege is needed): a handler
 *     thread takes each write fault, copies the page, un-protects it;
 *   - mprotect + the fault layer's claims (any POSIX system): the SIGSEGV of
 *     the write is handled in the faulting thread itself.
 * Both handle faults of user-mode instructions only: a system call that
 * writes into a protected page of the region (read(2) into it, say) fails
 * with EFAULT. Do not write the region from a signal handler that may
 * interrupt mmk_snapshot_take.
 * Not a snapshot: a MAP_PRIVATE mapping of a memory file. Its pages not yet
 * written through it keep showing later writes made through a shared map.
 */
#ifndef MMKIT_VIEW_H
#define MMKIT_VIEW_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ dual views */

typedef struct mmk_view mmk_view;

/* Flags for mmk_view_create. */
#define MMK_VIEW_SEAL 1u /* seal the object after mapping: size fixed and no new
                            writable mapping or write(2) by anyone (F_SEAL_FUTURE_WRITE);
                            our writable view keeps working */

/* Create `size` bytes (rounded up to pages, zero-filled) visible at two
 * addresses, one writable, one read-only. -EINVAL, -ENOMEM, -ENOTSUP (the
 * platform cannot seal, with MMK_VIEW_SEAL). */
MMK_API int mmk_view_create(size_t size, unsigned flags, mmk_view **out);

/* Map an existing memory object read-only (e.g. an fd received from the
 * creating process). mmk_view_rw then returns NULL. `size` 0 means the
 * object's size. The view duplicates fd; the caller keeps its own. */
MMK_API int mmk_view_attach(int fd, size_t size, mmk_view **out);

/* Unmap both views and close the object. NULL is a no-op. */
MMK_API void mmk_view_destroy(mmk_view *v);

MMK_API void *mmk_view_rw(const mmk_view *v);       /* NULL for an attached view */
MMK_API const void *mmk_view_ro(const mmk_view *v); /* writes through it fault */
MMK_API size_t mmk_view_size(const mmk_view *v);

/* The memory object's descriptor (owned by the view): pass it to another
 * process (SCM_RIGHTS, inheritance) for mmk_view_attach. */
MMK_API int mmk_view_fd(const mmk_view *v);

/* ------------------------------------------------------------- snapshots */

typedef struct mmk_region mmk_region;
typedef struct mmk_snapshot mmk_snapshot;

/* Flags for mmk_region_create; the environment variable
 * MMK_SNAPSHOT_MODE=uffd|mprotect forces a mechanism too (flags win). */
#define MMK_REGION_UFFD     1u /* userfaultfd write-protection only (else -ENOTSUP) */
#define MMK_REGION_MPROTECT 2u /* mprotect + fault handler only */
#define MMK_REGION_SMALL    4u /* no transparent huge pages. By default the region asks
                                  for 2 MiB pages, which makes taking a snapshot of a
                                  large populated region about 500x cheaper (one entry
                                  per 2 MiB to protect) at the price of 2 MiB RSS
                                  granularity; copies stay 4 KiB. */

/* At most this many live snapshots per region. */
#define MMK_SNAPSHOT_MAX 16

/* Create a region of `size` bytes (rounded up to pages; zero-filled, private
 * memory, at mmk_region_base) that supports snapshots. Without a mode flag,
 * userfaultfd is preferred and mprotect is the fallback. -EINVAL, -ENOMEM,
 * -ENOTSUP (the forced mechanism is unavailable here). */
MMK_API int mmk_region_create(size_t size, unsigned flags, mmk_region **out);

/* Release every live snapshot and the region. NULL is a no-op. */
MMK_API void mmk_region_destroy(mmk_region *r);

MMK_API void *mmk_region_base(const mmk_region *r);
MMK_API size_t mmk_region_size(const mmk_region *r);

/* The mechanism in use: MMK_REGION_UFFD or MMK_REGION_MPROTECT. */
MMK_API unsigned mmk_region_mode(const mmk_region *r);

/* Freeze the region's current contents. Copies nothing; costs one
 * write-protect operation over the pages written since the previous
 * snapshot (the whole region the first time). Safe while other threads
 * write the region: each write lands either before the snapshot (and is in
 * it) or after (and is not). -ENOSPC with MMK_SNAPSHOT_MAX live snapshots. */
MMK_API int mmk_snapshot_take(mmk_region *r, mmk_snapshot **out);

/* Copy `len` bytes at offset `off` of the snapshot (the region as it was when
 * the snapshot was taken) into buf. -ERANGE outside the region. Thread-safe
 * against writers of the region and against other readers. */
MMK_API int mmk_snapshot_read(const mmk_snapshot *s, size_t off, void *buf, size_t len);

/* Bytes copied into this snapshot so far (pages written since it was taken). */
MMK_API size_t mmk_snapshot_copied(const mmk_snapshot *s);

/* Free the snapshot and its copied pages. NULL is a no-op. Not concurrent
 * with mmk_snapshot_read of the same snapshot. */
MMK_API void mmk_snapshot_release(mmk_snapshot *s);

#ifdef __cplusplus
}
#endif
#endif
