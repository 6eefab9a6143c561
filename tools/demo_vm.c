/* Demo stop: reserve address space for free, commit, give memory back. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <mmkit/vm.h>
#include "mmk.h"

int demo_stop_vm(const char *tmpdir)
{
    (void)tmpdir;
    char b1[32], b2[32];
    const size_t tib = (size_t)1 << 40, touch = (size_t)64 << 20;
    demo_title("1. Address space is not memory", "reserve, commit, decommit (vm.h)");
    long r0 = mmk_rss_bytes();
    double t0 = mmk_now();
    void *p;
    int rc = mmk_reserve(tib, &p);
    double t1 = mmk_now();
    if (rc) {
        demo_note("a 1 TiB reservation was refused here (%s): skipping", mmk_strerror(rc));
        return 77;
    }
    long r1 = mmk_rss_bytes();
    demo_fact("reserve 1 TiB of address space", "%.1f us, RSS +%s", (t1 - t0) * 1e6,
              mmk_fmt_bytes((double)(r1 - r0), b1, sizeof b1));
    rc = mmk_commit(p, touch);
    if (rc == 0) {
        t0 = mmk_now();
        memset(p, 0xa5, touch);
        t1 = mmk_now();
        long r2 = mmk_rss_bytes();
        demo_fact("commit and touch 64 MiB inside it", "%s in %.1f ms, RSS +%s",
                  mmk_fmt_rate((double)touch / (t1 - t0), b2, sizeof b2), (t1 - t0) * 1e3,
                  mmk_fmt_bytes((double)(r2 - r1), b1, sizeof b1));
        t0 = mmk_now();
        rc = mmk_decommit(p, touch);
        t1 = mmk_now();
        long r3 = mmk_rss_bytes();
        demo_fact("decommit the 64 MiB", "%.2f ms, RSS back to +%s", (t1 - t0) * 1e3,
                  mmk_fmt_bytes((double)(r3 - r0), b1, sizeof b1));
        demo_verdict(rc == 0 && (r3 - r0) < (long)(touch / 8),
                     "memory is charged only where pages are touched, and given back at once");
    }
    mmk_release(p, tib);
    return rc ? 1 : 0;
}
