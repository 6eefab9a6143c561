/* Arena allocation of small objects (16-48 B) against malloc, side by side.
 * A batch allocates B objects (a request's or a frame's worth), writes one
 * byte into each, then frees everything (arena: one reset; malloc: B frees,
 * timed apart). A round is N/B batches; medians over rounds. */
#include <mmkit/mmkit.h>
#include "bench.h"

#define N (1 << 20)
#define B (1 << 14)

static unsigned sizes[N];
static void *ptrs[N];

static double run_arena_inline(mmk_arena *a)
{
    double t = 0;
    for (int b = 0; b < N; b += B) {
        double t0 = bench_now();
        for (int i = b; i < b + B; i++) {
            char *p = mmk_arena_alloc_inline(a, sizes[i], 8);
            p[0] = (char)i;
            ptrs[i] = p;
        }
        t += bench_now() - t0;
        mmk_arena_reset(a);
    }
    return t * 1e9 / N;
}

static double run_arena_call(mmk_arena *a)
{
    double t = 0;
    for (int b = 0; b < N; b += B) {
        double t0 = bench_now();
        for (int i = b; i < b + B; i++) {
            char *p = mmk_arena_alloc(a, sizes[i], 8);
            p[0] = (char)i;
            ptrs[i] = p;
        }
        t += bench_now() - t0;
        mmk_arena_reset(a);
    }
    return t * 1e9 / N;
}

static double run_malloc(double *with_free)
{
    double ta = 0, tf = 0;
    for (int b = 0; b < N; b += B) {
        double t0 = bench_now();
        for (int i = b; i < b + B; i++) {
            char *p = malloc(sizes[i]);
            p[0] = (char)i;
            ptrs[i] = p;
        }
        double t1 = bench_now();
        for (int i = b; i < b + B; i++)
            free(ptrs[i]);
        double t2 = bench_now();
        ta += t1 - t0;
        tf += t2 - t1;
    }
    *with_free = (ta + tf) * 1e9 / N;
    return ta * 1e9 / N;
}

static void measure(const char *label, unsigned lo, unsigned hi, struct bench_opts o,
                    mmk_arena *a, int plot)
{
    uint64_t s = 12345;
    for (int i = 0; i < N; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        sizes[i] = lo + (unsigned)(s % (hi - lo + 1));
    }
    double ai[32], ac[32], m[32], mf[32];
    int runs = o.runs > 32 ? 32 : o.runs;
    run_arena_inline(a); /* warm-up: commit the pages once */
    for (int r = 0; r < runs; r++) { /* interleaved, so noise hits all alike */
        ai[r] = run_arena_inline(a);
        ac[r] = run_arena_call(a);
        m[r] = run_malloc(&mf[r]);
    }
    double mai = bench_median(ai, runs), mac = bench_median(ac, runs);
    double mm = bench_median(m, runs), mmf = bench_median(mf, runs);
    printf("| %s | %.2f | %.2f | %.2f | %.2f | %.1fx | %.1fx |\n", label, mai, mac, mm, mmf,
           mm / mai, mmf / mai);
    if (plot) {
        bench_plot("arena_alloc", "arena-inline", lo, mai);
        bench_plot("arena_alloc", "arena-call", lo, mac);
        bench_plot("arena_alloc", "malloc", lo, mm);
        bench_plot("arena_alloc", "malloc+free", lo, mmf);
    }
}

int main(int argc, char **argv)
{
    struct bench_opts o = bench_parse(argc, argv);
    mmk_arena *a;
    if (mmk_arena_create((size_t)1 << 30, 0, &a)) {
        printf("skipped: cannot reserve 1 GiB\n");
        return 0;
    }
    /* Keep everything committed between rounds: we time allocation, not faults. */
    mmk_arena_set_keep(a, (size_t)1 << 30);
    printf("### arena: small-object allocation against malloc (ns per allocation, median of %d)\n\n",
           o.runs);
    printf("Batches of %d allocations (%d a round), one byte written into each; after each "
           "batch the arena frees by one reset, malloc by %d free() calls (timed apart). "
           "glibc malloc.\n\n", B, N, B);
    printf("| sizes (B) | arena inline | arena call | malloc | malloc+free | malloc/arena | "
           "(malloc+free)/arena |\n|---|---|---|---|---|---|---|\n");
    measure("16-48 random", 16, 48, o, a, 0);
    bench_plot_meta("arena_alloc", "Allocation cost by object size", "object size (bytes)",
                    "ns per allocation", 0);
    const unsigned fixed[] = {16, 24, 32, 48};
    for (int i = 0; i < 4; i++) {
        char l[32];
        snprintf(l, sizeof l, "%u", fixed[i]);
        measure(l, fixed[i], fixed[i], o, a, 1);
    }
    printf("\n");
    mmk_arena_destroy(a);
    return 0;
}
