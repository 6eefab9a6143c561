/* vm.h: the cost of getting memory and giving it back, against mmap/munmap
 * and malloc/free, for regions of 64 KiB to 16 MiB touched once. */
#include <stdint.h>
#include <sys/mman.h>

#include <mmkit/vm.h>
#include "bench.h"

#define MAXLEN ((size_t)16 << 20)

static void touch(char *p, size_t len)
{
    for (size_t i = 0; i < len; i += 4096)
        p[i] = 1;
}

/* One cycle each: get len bytes, touch every page, give them back. */
static double cycle_mmk(void *res, size_t len, int reps)
{
    double t = bench_now();
    for (int i = 0; i < reps; i++) {
        mmk_commit(res, len);
        touch(res, len);
        mmk_decommit(res, len);
    }
    return (bench_now() - t) / reps;
}

static double cycle_mmap(size_t len, int reps)
{
    double t = bench_now();
    for (int i = 0; i < reps; i++) {
        char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        touch(p, len);
        munmap(p, len);
    }
    return (bench_now() - t) / reps;
}

static double cycle_malloc(size_t len, int reps)
{
    double t = bench_now();
    for (int i = 0; i < reps; i++) {
        char *p = malloc(len);
        touch(p, len);
        bench_keep(p);
        free(p);
    }
    return (bench_now() - t) / reps;
}

int main(int argc, char **argv)
{
    struct bench_opts o = bench_parse(argc, argv);
    void *res;
    if (mmk_reserve(MAXLEN, &res))
        return 1;
    printf("### get, touch and give back a region (median of %d runs, us per cycle)\n\n", o.runs);
    printf("| region | mmkit commit/decommit | mmap/munmap | malloc/free | mmkit vs mmap |\n");
    printf("|---:|---:|---:|---:|---:|\n");
    bench_plot_meta("vm_cycle", "get+touch+release a region", "region (KiB)", "us per cycle", 1);
    for (size_t len = 64 << 10; len <= MAXLEN; len *= 4) {
        int reps = (int)((o.quick ? 16 : 64) * (MAXLEN / len) / 16) + 4;
        double a[16], b[16], c[16];
        for (int r = 0; r < o.runs; r++) {
            a[r] = cycle_mmk(res, len, reps);
            b[r] = cycle_mmap(len, reps);
            c[r] = cycle_malloc(len, reps);
        }
        double ma = bench_median(a, o.runs) * 1e6, mb = bench_median(b, o.runs) * 1e6,
               mc = bench_median(c, o.runs) * 1e6;
        printf("| %zu KiB | %.1f | %.1f | %.1f | %.2fx |\n", len >> 10, ma, mb, mc, mb / ma);
        bench_plot("vm_cycle", "mmkit", (double)(len >> 10), ma);
        bench_plot("vm_cycle", "mmap", (double)(len >> 10), mb);
        bench_plot("vm_cycle", "malloc", (double)(len >> 10), mc);
    }
    printf("\nmmkit keeps the reservation and swaps pages in and out of it; the ratio is "
           "mmap time over mmkit time (above 1: mmkit faster). malloc looks cheap because it keeps "
           "freed memory mapped and touched: its pages are never given back, which is exactly "
           "what decommit does.\n");
    mmk_release(res, MAXLEN);
    return 0;
}
