/* Arena allocation of small objects (16-48 B) against malloc, side by side.
 * A batch allocates B objects (a request's or a frame's worth), writes a
 * 32-bit field of each (as initialising an object would), then frees everything (arena: one reset; malloc: B frees,
 * timed apart). A run is N/B batches of each kind, interleaved; medians over
 * all batches. */
#include <mmkit/mmkit.h>
#include "bench.h"

#define N (1 << 20)
#define B (1 << 14)

static unsigned sizes[N];
static void *ptrs[N];

/* One batch of each kind, back to back, so that the noise of a shared
 * machine (preemption) hits all alike; ns per allocation into the outputs. */
static void batch(mmk_arena *a, int b, double *ai, double *ac, double *ma, double *mf)
{
    double t0 = bench_now();
    for (int i = b; i < b + B; i++) {
        uint32_t *p = mmk_arena_alloc_inline(a, sizes[i], 8);
        p[0] = (uint32_t)i;
        ptrs[i] = p;
    }
    double t1 = bench_now();
    mmk_arena_reset(a);
    double t2 = bench_now();
    for (int i = b; i < b + B; i++) {
        uint32_t *p = mmk_arena_alloc(a, sizes[i], 8);
        p[0] = (uint32_t)i;
        ptrs[i] = p;
    }
    double t3 = bench_now();
    mmk_arena_reset(a);
    double t4 = bench_now();
    for (int i = b; i < b + B; i++) {
        uint32_t *p = malloc(sizes[i]);
        p[0] = (uint32_t)i;
        ptrs[i] = p;
    }
    double t5 = bench_now();
    for (int i = b; i < b + B; i++)
        free(ptrs[i]);
    double t6 = bench_now();
    *ai = (t1 - t0) * 1e9 / B;
    *ac = (t3 - t2) * 1e9 / B;
    *ma = (t5 - t4) * 1e9 / B;
    *mf = (t6 - t4) * 1e9 / B;
}

#define MAXB (32 * (N / B))

static void measure(const char *label, unsigned lo, unsigned hi, struct bench_opts o,
                    mmk_arena *a, int plot)
{
    static double ai[MAXB], ac[MAXB], m[MAXB], mf[MAXB];
    uint64_t s = 12345;
    for (int i = 0; i < N; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        sizes[i] = lo + (unsigned)(s % (hi - lo + 1));
    }
    int runs = o.runs > 32 ? 32 : o.runs, k = 0;
    batch(a, 0, &ai[0], &ac[0], &m[0], &mf[0]); /* warm-up: commit the pages once */
    for (int r = 0; r < runs; r++)
        for (int b = 0; b < N; b += B, k++)
            batch(a, b, &ai[k], &ac[k], &m[k], &mf[k]);
    double mai = bench_median(ai, k), mac = bench_median(ac, k);
    double mm = bench_median(m, k), mmf = bench_median(mf, k);
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
    printf("### arena: small-object allocation against malloc (ns per allocation, median over "
           "%d batches)\n\n", o.runs * (N / B));
    printf("Batches of %d allocations, a 32-bit field written into each; after each batch the arena "
           "frees by one reset, malloc by %d free() calls (timed apart). The kinds run batch by "
           "batch, interleaved. glibc malloc.\n\n", B, B);
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
