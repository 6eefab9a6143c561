/* arena.h: reserve once, commit in growing steps, bump, rewind. */
#include <stdlib.h>
#include <string.h>

#include <mmkit/arena.h>
#include <mmkit/vm.h>
#include "internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define MMK__ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MMK__ARENA_ASAN 1
#endif
#endif
#ifdef MMK__ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((void *)(p), (size_t)(n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((void *)(p), (size_t)(n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define FIRST_STEP ((size_t)64 << 10)
#define MAX_STEP   ((size_t)256 << 20)
#define HUGE_ALIGN ((size_t)2 << 20)
#define GUARD_SIZE ((size_t)64 << 10)

struct mmk_arena {
    struct mmk_arena_cursor_ cur; /* first: the inline fast path reads it */
    uintptr_t base, commit_end, end;
    size_t map_len; /* reservation including the guard */
    size_t keep, step, peak, granule;
    unsigned flags;
    uint64_t commits, decommits;
};

static void sync_fast_end(mmk_arena *a)
{
#ifdef MMK__ARENA_ASAN
    a->cur.fast_end = 0; /* every allocation must pass through the unpoisoning path */
#else
    a->cur.fast_end = a->commit_end;
#endif
}

MMK_API int mmk_arena_create(size_t reserve, unsigned flags, mmk_arena **out)
{
    if (!out || !reserve || (flags & ~(MMK_ARENA_GUARD | MMK_ARENA_HUGEPAGE)))
        return -EINVAL;
    size_t page = mmk__pagesz();
    size_t granule = (flags & MMK_ARENA_HUGEPAGE) ? HUGE_ALIGN : page;
    size_t len = mmk__align_up(reserve, granule);
    size_t guard = (flags & MMK_ARENA_GUARD) ? GUARD_SIZE : 0;
    if (!len || len + guard < len)
        return -ENOMEM;
    mmk_arena *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    void *p;
    int rc = mmk_reserve_aligned(len + guard, granule, &p);
    if (rc) {
        free(a);
        return rc;
    }
    if (flags & MMK_ARENA_HUGEPAGE)
        (void)mmk_advise(p, len, MMK_ADV_HUGEPAGE); /* a wish: no THP is not an error */
    a->base = a->cur.pos = a->commit_end = (uintptr_t)p;
    a->end = a->base + len;
    a->map_len = len + guard;
    a->keep = MMK_ARENA_DEFAULT_KEEP;
    a->step = FIRST_STEP > granule ? FIRST_STEP : granule;
    a->granule = granule;
    a->flags = flags;
    sync_fast_end(a);
    *out = a;
    return 0;
}

MMK_API void mmk_arena_destroy(mmk_arena *a)
{
    if (!a)
        return;
    /* Clear our poison so a later mapping at these addresses starts clean. */
    UNPOISON(a->base, a->commit_end - a->base);
    mmk_release((void *)a->base, a->map_len);
    free(a);
}

/* Commit up to at least `need` (> commit_end), in a geometric step so that
 * growth costs O(log n) system calls and the committed range stays one
 * mapping (vm.max_map_count). Falls back to the minimum on failure. */
static __attribute__((noinline)) int grow(mmk_arena *a, uintptr_t need)
{
    uintptr_t min_end = mmk__align_up(need, a->granule);
    uintptr_t want = a->commit_end + a->step;
    if (want < min_end || want < a->commit_end)
        want = min_end;
    if (want > a->end)
        want = a->end;
    if (min_end > a->end)
        return -ENOMEM;
    int rc = mmk_commit((void *)a->commit_end, want - a->commit_end);
    if (rc && want > min_end) {
        want = min_end;
        rc = mmk_commit((void *)a->commit_end, want - a->commit_end);
    }
    if (rc)
        return rc;
    POISON(a->commit_end, want - a->commit_end);
    a->commit_end = want;
    a->commits++;
    if (a->step < MAX_STEP)
        a->step *= 2;
    sync_fast_end(a);
    return 0;
}

MMK_API void *mmk_arena_alloc(mmk_arena *a, size_t size, size_t align)
{
    if (!a)
        return NULL;
    if (!align)
        align = 16;
    else if (align & (align - 1))
        return NULL;
    uintptr_t pos = a->cur.pos;
    uintptr_t p = (pos + (align - 1)) & ~(uintptr_t)(align - 1);
    if (p < pos || p > a->end || size > a->end - p)
        return NULL;
    uintptr_t e = p + size;
    if (e > a->commit_end && grow(a, e))
        return NULL;
    a->cur.pos = e;
    UNPOISON(p, size);
    return (void *)p;
}

MMK_API size_t mmk_arena_mark(const mmk_arena *a) { return a ? a->cur.pos - a->base : 0; }

MMK_API void mmk_arena_rewind(mmk_arena *a, size_t mark)
{
    if (!a || mark > a->cur.pos - a->base)
        return;
    uintptr_t pos = a->cur.pos;
    if (pos - a->base > a->peak)
        a->peak = pos - a->base;
    a->cur.pos = a->base + mark;
    /* Keep max(keep, the mark) committed; give the rest back now. */
    size_t keep = mmk__align_up(mark > a->keep ? mark : a->keep, a->granule);
    uintptr_t keep_end = keep && keep < a->end - a->base ? a->base + keep : a->end;
    if (a->commit_end > keep_end) {
        UNPOISON(keep_end, a->commit_end - keep_end);
        if (mmk_decommit((void *)keep_end, a->commit_end - keep_end) == 0) {
            a->commit_end = keep_end;
            a->decommits++;
            /* Start growing gently again. */
            a->step = FIRST_STEP > a->granule ? FIRST_STEP : a->granule;
        }
    }
    POISON(a->cur.pos, a->commit_end - a->cur.pos);
    sync_fast_end(a);
}

MMK_API void mmk_arena_reset(mmk_arena *a) { mmk_arena_rewind(a, 0); }

MMK_API void mmk_arena_set_keep(mmk_arena *a, size_t keep)
{
    if (a)
        a->keep = keep;
}

MMK_API int mmk_arena_stats(const mmk_arena *a, struct mmk_arena_stats *out)
{
    if (!a || !out)
        return -EINVAL;
    size_t used = a->cur.pos - a->base;
    out->reserved = a->end - a->base;
    out->committed = a->commit_end - a->base;
    out->used = used;
    out->peak = used > a->peak ? used : a->peak;
    out->keep = a->keep;
    out->commits = a->commits;
    out->decommits = a->decommits;
    return 0;
}

MMK_API int mmk_arena_contains(const mmk_arena *a, const void *p)
{
    return a && (uintptr_t)p >= a->base && (uintptr_t)p < a->end;
}
