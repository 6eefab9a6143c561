/* Sparse arrays: the cost of touching a page for the first time (1 TiB
 * private array and a 64 GiB shared one), of giving pages back (one call for
 * a range against a call a page), of measuring residency (PAGEMAP_SCAN, as
 * mmk_sparse_resident does, against mincore over the same range), and of the
 * zero-page reclaim scan. Side by side, medians. */
#include <sys/mman.h>

#include <mmkit/mmkit.h>
#include "bench.h"

#define PAGE 4096u

static double med(double *v, int n) { return bench_median(v, n); }

/* ns per first write to `n` scattered pages. */
static double touch(mmk_sparse *s, size_t n, uint64_t stride)
{
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++)
        *(volatile uint64_t *)mmk_sparse_at(s, (uint64_t)i * stride) = i + 1;
    return (bench_now() - t0) * 1e9 / (double)n;
}

static double release_range(mmk_sparse *s, size_t n, uint64_t stride, int per_page)
{
    double t0 = bench_now();
    if (per_page) {
        uint64_t per = PAGE / mmk_sparse_elem_size(s);
        for (size_t i = 0; i < n; i++)
            mmk_sparse_release(s, (uint64_t)i * stride, per);
    } else {
        mmk_sparse_release(s, 0, (uint64_t)n * stride);
    }
    return (bench_now() - t0) * 1e9 / (double)n;
}

/* mincore over [b, b+len): what a residency count without PAGEMAP_SCAN costs. */
static double mincore_scan(char *b, size_t len, size_t *count)
{
    static unsigned char vec[65536];
    double t0 = bench_now();
    size_t c = 0;
    for (size_t off = 0; off < len; off += sizeof vec * PAGE) {
        size_t l = len - off < sizeof vec * PAGE ? len - off : sizeof vec * PAGE;
        if (mincore(b + off, l, vec))
            break;
        for (size_t i = 0; i < l / PAGE; i++)
            c += vec[i] & 1;
    }
    *count = c;
    return bench_now() - t0;
}

int main(int argc, char **argv)
{
    struct bench_opts o = bench_parse(argc, argv);
    int runs = o.runs > 16 ? 16 : o.runs;
    size_t n = o.quick ? 4000 : 20000;
    const uint64_t count = ((uint64_t)1 << 40) / 8;
    const uint64_t stride = count / n & ~(uint64_t)511; /* one page each, page-aligned */
    mmk_sparse *s;
    if (mmk_sparse_create(count, 8, 0, &s)) {
        printf("skipped: 1 TiB of address space refused here\n");
        return 0;
    }
    mmk_sparse *sh = NULL;
    const uint64_t shcount = ((uint64_t)64 << 30) / 8;
    if (mmk_sparse_create(shcount, 8, MMK_SPARSE_SHARED, &sh))
        sh = NULL;
    const uint64_t shstride = shcount / n & ~(uint64_t)511;

    double tp[16], ts[16], rr[16], rp[16], rs[16], pm[16], mc[16], rz[16];
    size_t res = 0, mcount = 0;
    for (int r = 0; r < runs; r++) {
        tp[r] = touch(s, n, stride);
        ts[r] = sh ? touch(sh, n, shstride) : -1;
        double t0 = bench_now();
        mmk_sparse_resident(s, 0, count, &res);
        pm[r] = bench_now() - t0;
        mc[r] = mincore_scan(mmk_sparse_base(s), (size_t)count * 8 / 64, &mcount); /* 1/64 of it */
        mc[r] *= 64;
        t0 = bench_now();
        size_t freed = 0;
        mmk_sparse_reclaim_zero(s, 0, count, &freed); /* nothing is zero: a pure scan */
        rz[r] = (bench_now() - t0) * 1e9 / (double)n;
        rr[r] = release_range(s, n, stride, 0);
        touch(s, n, stride);
        rp[r] = release_range(s, n, stride, 1);
        rs[r] = sh ? release_range(sh, n, shstride, 0) : -1;
    }
    printf("### sparse: 1 TiB array, %zu scattered pages (median of %d)\n\n", n, runs);
    printf("| operation | cost | note |\n|---|---|---|\n");
    printf("| first write to a page, private 1 TiB | %.0f ns/page | a zero-fill fault |\n",
           med(tp, runs));
    if (sh)
        printf("| first write to a page, shared 64 GiB (memfd) | %.0f ns/page | shmem page "
               "allocation |\n", med(ts, runs));
    printf("| release, one call over the range (DONTNEED) | %.0f ns/page | |\n", med(rr, runs));
    printf("| release, one call per page | %.0f ns/page | %.1fx the range call |\n",
           med(rp, runs), med(rp, runs) / med(rr, runs));
    if (sh)
        printf("| release, shared (hole punch, MADV_REMOVE) | %.0f ns/page | |\n", med(rs, runs));
    printf("| residency of 1 TiB, PAGEMAP_SCAN (mmk_sparse_resident) | %.2f ms | %zu pages found |\n",
           med(pm, runs) * 1e3, res / PAGE);
    printf("| residency of 1 TiB, mincore (extrapolated from 1/64) | %.2f ms | %.0fx slower |\n",
           med(mc, runs) * 1e3, med(mc, runs) / med(pm, runs));
    printf("| zero-page reclaim scan | %.0f ns/resident page | reads each page |\n\n", med(rz, runs));
    mmk_sparse_destroy(sh);
    mmk_sparse_destroy(s);
    return 0;
}
