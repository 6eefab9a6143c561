/* bench_fault: what a guarded copy costs on the happy path.
 *
 * mmk_copy_guarded against memcpy (called through libc with a run-time size,
 * as in real code) and against the classic alternative, a sigsetjmp per call
 * (savemask 0, the cheap kind), for sizes from 64 B to 64 KiB, buffers in
 * L1/L2. Also the cost of one fault turned into an error. Each run takes
 * the fastest of 200 short batches (the machine is shared: this filters out
 * preemptions); the table shows the median over --runs runs. */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>

#include <mmkit/mmkit.h>
#include "bench.h"

static sigjmp_buf jb;
static volatile sig_atomic_t armed;

/* The per-call setjmp guard that an exception table avoids. */
static __attribute__((noinline)) int copy_setjmp(void *dst, const void *src, size_t n)
{
    if (sigsetjmp(jb, 0)) {
        armed = 0;
        return -14;
    }
    armed = 1;
    memcpy(dst, src, n);
    armed = 0;
    return 0;
}

typedef int (*copy_fn)(void *, const void *, size_t);

static int copy_memcpy(void *dst, const void *src, size_t n)
{
    memcpy(dst, src, n);
    return 0;
}

/* ns per copy: the fastest of many short batches, so that a preemption on
 * this shared machine spoils one batch, not the figure. */
static double time_copy(copy_fn fn, char *dst, const char *src, size_t n, long iters)
{
    long batch = iters / 200 > 0 ? iters / 200 : 1;
    double best = 1e30;
    for (long b = 0; b < iters; b += batch) {
        double t0 = bench_now();
        for (long i = 0; i < batch; i++) {
            int rc = fn(dst, src, n);
            bench_keep(rc);
            __asm__ volatile("" ::: "memory");
        }
        double t = (bench_now() - t0) / (double)batch * 1e9;
        best = t < best ? t : best;
    }
    return best;
}

int main(int argc, char **argv)
{
    struct bench_opts o = bench_parse(argc, argv);
    /* Source and destination 2 KiB apart modulo 4 KiB: no 4K aliasing
     * between the stores of one step and the loads of the next, which
     * would measure the CPU's store forwarding rather than the copy. */
    char *mem = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return 1;
    char *src = mem, *dst = mem + (512 << 10) + 2048;
    memset(mem, 1, 1 << 20);
    mmk_fault_install();
    copy_fn memcpy_fn = copy_memcpy; /* through a pointer: memcpy is a real call */

    static const size_t sizes[] = {64, 256, 1024, 2048, 4096, 16384, 65536};
    printf("### Guarded copy vs memcpy (ns per copy: median over %d runs of the best of 200 "
           "batches; buffers in cache)\n\n",
           o.runs);
    printf("| size | memcpy | mmk_copy_guarded | sigsetjmp+memcpy | guarded - memcpy | guarded / memcpy |\n");
    printf("|---:|---:|---:|---:|---:|---:|\n");
    bench_plot_meta("fault_copy", "Guarded copy vs memcpy", "bytes", "ns per copy", 1);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        long iters = (long)((o.quick ? 2e7 : 1e8) / (double)(n + 64));
        double a[32], b[32], c[32];
        int runs = o.runs > 32 ? 32 : o.runs;
        for (int r = 0; r < runs; r++) {
            /* Interleaved, so drifting machine load hits all three alike. */
            a[r] = time_copy(memcpy_fn, dst, src, n, iters);
            b[r] = time_copy(mmk_copy_guarded, dst, src, n, iters);
            c[r] = time_copy(copy_setjmp, dst, src, n, iters);
        }
        double ma = bench_median(a, runs), mb = bench_median(b, runs), mc = bench_median(c, runs);
        printf("| %zu B | %.1f | %.1f | %.1f | %+.1f ns | %.3f |\n", n, ma, mb, mc, mb - ma, mb / ma);
        bench_plot("fault_copy", "memcpy", (double)n, ma);
        bench_plot("fault_copy", "mmk_copy_guarded", (double)n, mb);
        bench_plot("fault_copy", "sigsetjmp+memcpy", (double)n, mc);
    }

    /* The unhappy path: one fault, caught and returned as -EFAULT. */
    char *none = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    long iters = o.quick ? 20000 : 100000;
    double f[32];
    int runs = o.runs > 32 ? 32 : o.runs;
    for (int r = 0; r < runs; r++) {
        double t0 = bench_now();
        for (long i = 0; i < iters; i++) {
            int rc = mmk_copy_guarded(dst, none, 64);
            bench_keep(rc);
        }
        f[r] = (bench_now() - t0) / (double)iters * 1e6;
    }
    printf("\nA fault turned into -EFAULT (SIGSEGV, handler, PC moved to the error exit): "
           "%.2f us (median of %d runs).\n", bench_median(f, runs), runs);
    munmap(none, 4096);
    return 0;
}
