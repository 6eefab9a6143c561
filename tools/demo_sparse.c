/* Demo stop: a 1 TiB array that costs only the pages written. */
#include <stdio.h>
#include <unistd.h>

#include <mmkit/sparse.h>
#include "mmk.h"

int demo_stop_sparse(const char *tmpdir)
{
    (void)tmpdir;
    char b1[32], b2[32];
    const uint64_t count = ((uint64_t)1 << 40) / 8;
    const size_t writes = 10000;
    demo_title("5. Sparse memory", "a 1 TiB array, pages appear on first touch (sparse.h)");
    mmk_sparse *s;
    double t0 = mmk_now();
    int rc = mmk_sparse_create(count, 8, 0, &s);
    double t1 = mmk_now();
    if (rc) {
        demo_note("1 TiB of address space was refused here (%s): skipping", mmk_strerror(rc));
        return 77;
    }
    long r0 = mmk_rss_bytes();
    uint64_t x = 88172645463325252ull;
    double t2 = mmk_now();
    for (size_t i = 0; i < writes; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        *(uint64_t *)mmk_sparse_at(s, x % count) = x;
    }
    double t3 = mmk_now();
    long r1 = mmk_rss_bytes();
    size_t res = 0;
    mmk_sparse_resident(s, 0, count, &res);
    demo_fact("create 1 TiB of uint64_t", "%.1f us", (t1 - t0) * 1e6);
    demo_fact("10 000 writes at random indices", "%.1f us each, RSS +%s",
              (t3 - t2) * 1e6 / (double)writes, mmk_fmt_bytes((double)(r1 - r0), b1, sizeof b1));
    demo_fact("resident pages (PAGEMAP_SCAN)", "%s of 1 TiB", mmk_fmt_bytes((double)res, b2, sizeof b2));
    mmk_sparse_release(s, 0, count);
    long r2 = mmk_rss_bytes();
    size_t after = 1;
    mmk_sparse_resident(s, 0, count, &after);
    demo_fact("release the whole array", "RSS back to +%s, resident %zu",
              mmk_fmt_bytes((double)(r2 - r0), b1, sizeof b1), after);
    demo_note("private arrays give pages back with MADV_DONTNEED (never MADV_FREE, whose pages");
    demo_note("stay counted until memory pressure); shared ones punch holes in their memfd.");
    int ok = after == 0 && res <= writes * 4096 && res >= writes * 4096 * 9 / 10;
    demo_verdict(ok, "memory is charged for touched pages only, and given back on release");
    mmk_sparse_destroy(s);
    return ok ? 0 : 1;
}
