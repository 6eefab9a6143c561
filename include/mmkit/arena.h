/* mmkit/arena.h: growable arenas over reserved address space.
 *
 * An arena reserves its whole capacity once (no access, no memory charged)
 * and commits it in growing steps as allocations reach it, so pointers never
 * move and a 64 GiB arena costs nothing until used. Allocation is a pointer
 * bump; freeing is by mark/rewind or reset, which also give the pages beyond
 * a "keep" size back to the system at once (RSS falls).
 *
 * Thread-safety: an arena is not synchronised; use one from one thread at a
 * time (or lock around it). Different arenas are independent. */
#ifndef MMKIT_ARENA_H
#define MMKIT_ARENA_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mmk_arena mmk_arena;

/* Flags for mmk_arena_create. */
#define MMK_ARENA_GUARD    1u /* reserve a no-access guard region after the end, so a
                                 write past the reservation faults instead of landing
                                 in whatever mapping follows */
#define MMK_ARENA_HUGEPAGE 2u /* align the reservation to 2 MiB and ask for
                                 transparent huge pages (fewer TLB misses, coarser RSS) */

/* The default keep size: on rewind/reset, committed memory up to this many
 * bytes stays committed (reused without new page faults); the rest is given
 * back at once. Change it with mmk_arena_set_keep. */
#define MMK_ARENA_DEFAULT_KEEP ((size_t)1 << 20)

/* Create an arena able to hold `reserve` bytes (rounded up to pages). Nothing
 * is committed yet. -EINVAL (reserve 0, unknown flags, out NULL), -ENOMEM
 * (address space). */
MMK_API int mmk_arena_create(size_t reserve, unsigned flags, mmk_arena **out);

/* Release the reservation and every pointer into it. NULL is a no-op. */
MMK_API void mmk_arena_destroy(mmk_arena *a);

/* `size` bytes aligned to `align` (a power of two; 0 means 16, the alignment
 * of max_align_t). Returns NULL when the reservation is used up, when
 * committing more memory fails, or for an align that is not a power of two;
 * never crashes. size 0 gives a valid pointer that must not be written. The
 * memory is not zeroed once rewound memory is reused (fresh pages are zero). */
MMK_API void *mmk_arena_alloc(mmk_arena *a, size_t size, size_t align);

/* The current position (bytes used), to rewind to later. */
MMK_API size_t mmk_arena_mark(const mmk_arena *a);

/* Free everything allocated after `mark` (from mmk_arena_mark); committed
 * pages beyond the keep size (and beyond the mark) are decommitted at once.
 * A mark beyond the current position is ignored. */
MMK_API void mmk_arena_rewind(mmk_arena *a, size_t mark);

/* Free everything: mmk_arena_rewind(a, 0). */
MMK_API void mmk_arena_reset(mmk_arena *a);

/* Set how many committed bytes rewind/reset keep (rounded up to pages).
 * Takes effect at the next rewind/reset. */
MMK_API void mmk_arena_set_keep(mmk_arena *a, size_t keep);

/* Statistics, in bytes. */
struct mmk_arena_stats {
    size_t reserved;   /* capacity */
    size_t committed;  /* readable and writable now (RSS only where touched) */
    size_t used;       /* the current position */
    size_t peak;       /* highest position ever reached */
    size_t keep;       /* see mmk_arena_set_keep */
    uint64_t commits;  /* commit steps taken (system calls) */
    uint64_t decommits;/* decommits done by rewind/reset */
};

/* Fill *out. -EINVAL for NULL arguments. */
MMK_API int mmk_arena_stats(const mmk_arena *a, struct mmk_arena_stats *out);

/* True (1) when p points into the arena's reservation. */
MMK_API int mmk_arena_contains(const mmk_arena *a, const void *p);

/* ---- inline fast path.
 * Every arena starts with this cursor. It is public only so that the bump
 * below can be inlined into the caller (a handful of instructions, no call);
 * never write it. When the library is built with AddressSanitizer, `fast_end`
 * stays 0 so every allocation goes through mmk_arena_alloc, which unpoisons. */
struct mmk_arena_cursor_ {
    uintptr_t pos;
    uintptr_t fast_end;
};

/* Same contract as mmk_arena_alloc; inlined. */
static inline void *mmk_arena_alloc_inline(mmk_arena *a, size_t size, size_t align)
{
    struct mmk_arena_cursor_ *c = (struct mmk_arena_cursor_ *)(void *)a;
    if (align && !(align & (align - 1))) {
        uintptr_t p = (c->pos + (align - 1)) & ~(uintptr_t)(align - 1);
        if (p >= c->pos && p <= c->fast_end && size <= c->fast_end - p) {
            c->pos = p + size;
            return (void *)p;
        }
    }
    return mmk_arena_alloc(a, size, align);
}

#ifdef __cplusplus
}
#endif
#endif
