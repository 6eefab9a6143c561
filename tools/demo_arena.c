/* Demo stop: an arena grows without moving, allocates for a few ns, and
 * gives its memory back at once on rewind. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mmkit/arena.h>
#include "mmk.h"

int demo_stop_arena(const char *tmpdir)
{
    (void)tmpdir;
    char b1[32], b2[32], b3[32];
    const size_t reserve = (size_t)16 << 30, n = (size_t)4 << 20;
    demo_title("4. Growable arenas", "reserve once, commit in steps, bump, rewind (arena.h)");
    mmk_arena *a;
    int rc = mmk_arena_create(reserve, MMK_ARENA_GUARD, &a);
    if (rc) {
        demo_note("a 16 GiB reservation was refused here (%s): skipping", mmk_strerror(rc));
        return 77;
    }
    long r0 = mmk_rss_bytes();
    size_t mark = mmk_arena_mark(a);
    char *first = NULL, *p = NULL;
    double t0 = 0, t1 = 0;
    /* Two rounds: the first commits and faults the pages in, the second
     * (timed) reuses them, as an arena rewound every request would. */
    mmk_arena_set_keep(a, reserve);
    for (int round = 0; round < 2; round++) {
        mmk_arena_rewind(a, mark);
        t0 = mmk_now();
        for (size_t i = 0; i < n; i++) {
            p = mmk_arena_alloc_inline(a, 16 + (i & 31), 8);
            if (!p)
                break;
            p[0] = (char)i;
            if (!first)
                first = p;
            else if (i == 0 && p != first)
                first = NULL; /* moved: cannot happen */
        }
        t1 = mmk_now();
    }
    struct mmk_arena_stats st;
    mmk_arena_stats(a, &st);
    long r1 = mmk_rss_bytes();
    mmk_arena_set_keep(a, MMK_ARENA_DEFAULT_KEEP);
    mmk_arena_rewind(a, mark);
    long r2 = mmk_rss_bytes();
    /* malloc, also warm: allocate, free, allocate again (timed). */
    void **m = malloc(n * sizeof *m);
    double t2 = mmk_now(), t3 = t2;
    for (int round = 0; m && round < 2; round++) {
        t2 = mmk_now();
        for (size_t i = 0; i < n; i++) {
            m[i] = malloc(16 + (i & 31));
            if (m[i])
                ((char *)m[i])[0] = (char)i;
        }
        t3 = mmk_now();
        for (size_t i = 0; i < n; i++)
            free(m[i]);
    }
    free(m);
    demo_fact("4 M objects of 16-47 B, arena", "%.1f ns each (malloc: %.1f ns)",
              (t1 - t0) * 1e9 / (double)n, (t3 - t2) * 1e9 / (double)n);
    demo_fact("committed in geometric steps", "%s in %llu steps, first object never moved",
              mmk_fmt_bytes((double)st.committed, b1, sizeof b1),
              (unsigned long long)st.commits);
    demo_fact("RSS: before, after allocating, after rewind", "%s -> %s -> %s",
              mmk_fmt_bytes((double)r0, b1, sizeof b1), mmk_fmt_bytes((double)r1, b2, sizeof b2),
              mmk_fmt_bytes((double)r2, b3, sizeof b3));
    demo_note("rewind decommits everything beyond the keep size (1 MiB by default) at once;");
    demo_note("a guard region after the 16 GiB makes an overrun fault instead of corrupting.");
    int ok = p && first && r1 - r2 > (long)(st.used / 2);
    demo_verdict(ok, "pointers stable, allocation is a bump, memory given back on rewind");
    mmk_arena_destroy(a);
    return ok ? 0 : 1;
}
