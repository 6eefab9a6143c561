// mmk-test: labels=map timeout=300
/* Readers in another process while a writer grows the map: every read view
 * shows exactly one commit (the count, the commit number stored in the map
 * and the keys present all agree) and a map that passes mmk_map_check, also
 * while buckets split and segments are added. */
#include <mmkit/mmkit.h>

#include "testutil.h"

#define PER_TXN 150

static char path[600];

static void writer(long txns)
{
    mmk_heap *h;
    if (mmk_heap_open(path, MMK_HEAP_NOSYNC, &h))
        _exit(3);
    mmk_ref m = mmk_heap_root(h);
    for (uint64_t t = 1; t <= (uint64_t)txns; t++) {
        if (mmk_heap_begin(h))
            _exit(4);
        for (uint64_t i = 0; i < PER_TXN; i++) {
            uint64_t k = t * PER_TXN + i;
            uint64_t v[4] = {k, ~k, k * 3, t};
            if (mmk_map_put(h, m, &k, sizeof k, v, sizeof v))
                _exit(5);
        }
        /* Replace and delete too, so views also see entries moving. */
        uint64_t old = (t - 1) * PER_TXN + 7;
        if (t > 1 && mmk_map_del(h, m, &old, sizeof old))
            _exit(6);
        if (mmk_map_put(h, m, "__n", 3, &t, sizeof t) || mmk_heap_commit(h))
            _exit(7);
    }
    mmk_heap_close(h);
    _exit(0);
}

int main(void)
{
    long txns = test_scaled(400);
    snprintf(path, sizeof path, "%s/readers.heap", test_tmpdir());
    mmk_heap *h;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE | MMK_HEAP_NOSYNC, &h));
    mmk_ref m;
    uint64_t zero = 0;
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_map_create(h, &m));
    CHECK_OK(mmk_heap_set_root(h, m));
    CHECK_OK(mmk_map_put(h, m, "__n", 3, &zero, sizeof zero));
    CHECK_OK(mmk_heap_commit(h));

    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        writer(txns);

    uint64_t views = 0, checks = 0, last = 0;
    int st = 0;
    for (;;) {
        int done = waitpid(pid, &st, WNOHANG) == pid;
        CHECK_OK(mmk_heap_read_begin(h));
        const void *v;
        size_t vl;
        CHECK_OK(mmk_map_get(h, m, "__n", 3, &v, &vl));
        CHECK_EQ(vl, 8);
        uint64_t n;
        memcpy(&n, v, 8);
        CHECK(n >= last);
        last = n;
        /* n commits: 150 n keys, minus the n-1 deleted, plus "__n". */
        CHECK_EQ(mmk_map_count(h, m), 1 + PER_TXN * n - (n ? n - 1 : 0));
        for (int j = 0; j < 20 && n; j++) {
            uint64_t t = 1 + (uint64_t)rand() % n, k = t * PER_TXN + (uint64_t)rand() % PER_TXN;
            int rc = mmk_map_get(h, m, &k, sizeof k, &v, &vl);
            if (k % PER_TXN == 7 && t < n) {
                CHECK_EQ(rc, -ENOENT);
                continue;
            }
            CHECK_OK(rc);
            uint64_t want[4] = {k, ~k, k * 3, t};
            CHECK(vl == sizeof want && !memcmp(v, want, sizeof want));
        }
        uint64_t next = (n + 1) * PER_TXN;
        CHECK_EQ(mmk_map_get(h, m, &next, sizeof next, NULL, NULL), -ENOENT);
        if (views++ % 16 == 0) {
            CHECK_OK(mmk_map_check(h, m));
            checks++;
        }
        mmk_heap_read_end(h);
        if (done)
            break;
    }
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_EQ(last, (uint64_t)txns);
    printf("readers: %llu read views (%llu full checks) during %ld commits\n",
           (unsigned long long)views, (unsigned long long)checks, txns);
    mmk_heap_close(h);
    rm_rf(test_tmpdir());
    return 0;
}
