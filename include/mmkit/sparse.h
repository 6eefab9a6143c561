/* mmkit/sparse.h: huge lazily committed arrays.
 *
 * A sparse array is a fixed count of fixed-size elements laid out in one
 * address range that may be far larger than memory (1 TiB is fine): pages
 * appear, zero-filled, when first touched; a range of elements can be given
 * back; residency is measured, not guessed; pages that hold only zeros can be
 * reclaimed. Elements are addressed with plain pointers (mmk_sparse_at).
 *
 * Private arrays live in anonymous memory. Shared arrays (MMK_SPARSE_SHARED)
 * live in a memory file whose descriptor can be passed to another process.
 *
 * Thread-safety: the object itself is immutable after creation; elements are
 * plain memory (synchronise access to them yourself). mmk_sparse_release and
 * mmk_sparse_reclaim_zero must not race with writers to the same pages. */
#ifndef MMKIT_SPARSE_H
#define MMKIT_SPARSE_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mmk_sparse mmk_sparse;

/* Flags for mmk_sparse_create. */
#define MMK_SPARSE_SHARED 1u /* back with a shared memory file (mmk_sparse_fd); release
                                punches holes in it (MADV_REMOVE) */

/* Create an array of `count` elements of `elem_size` bytes each (both > 0).
 * Nothing is charged until touched. -EINVAL for zero sizes, unknown flags or
 * a NULL out; -ENOMEM when the address space (or count*elem_size) is too big. */
MMK_API int mmk_sparse_create(uint64_t count, size_t elem_size, unsigned flags,
                              mmk_sparse **out);

/* Unmap the array (and close its memory file). NULL is a no-op. */
MMK_API void mmk_sparse_destroy(mmk_sparse *s);

/* The address of element `index`, or NULL when index >= count. */
MMK_API void *mmk_sparse_at(const mmk_sparse *s, uint64_t index);

/* Element count, element size, base address (element 0). */
MMK_API uint64_t mmk_sparse_count(const mmk_sparse *s);
MMK_API size_t mmk_sparse_elem_size(const mmk_sparse *s);
MMK_API void *mmk_sparse_base(const mmk_sparse *s);

/* The memory file of a shared array (owned by the array), or -EINVAL for a
 * private one. Another process maps it MAP_SHARED to see the same elements. */
MMK_API int mmk_sparse_fd(const mmk_sparse *s);

/* Give back the memory of elements [first, first+n): every page lying
 * entirely inside the range is dropped at once (RSS falls; private: MADV_DONTNEED,
 * shared: a hole is punched in the file) and reads zero afterwards. Partial
 * pages at either end are zeroed instead, so the whole range reads zero.
 * -ERANGE when the range is outside the array. */
MMK_API int mmk_sparse_release(mmk_sparse *s, uint64_t first, uint64_t n);

/* Bytes of memory the elements [first, first+n) occupy now, in whole pages,
 * into *bytes. Pages that are mapped to the kernel's shared zero page (read
 * but never written) are not counted when the kernel can tell us
 * (PAGEMAP_SCAN, Linux 6.7), since they cost nothing. Note: this module never
 * uses MADV_FREE, whose pages would keep counting until memory pressure. */
MMK_API int mmk_sparse_resident(const mmk_sparse *s, uint64_t first, uint64_t n,
                                size_t *bytes);

/* Scan the resident pages lying entirely inside [first, first+n) and drop
 * those that contain only zero bytes; *bytes (may be NULL) receives the bytes
 * given back. Must not run concurrently with writers to those pages. */
MMK_API int mmk_sparse_reclaim_zero(mmk_sparse *s, uint64_t first, uint64_t n,
                                    size_t *bytes);

#ifdef __cplusplus
}
#endif
#endif
