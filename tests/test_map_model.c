// mmk-test: labels=map timeout=300
/* Model-based test of the persistent map: random puts, gets, deletes,
 * commits, aborts, read views and reopens, compared after every step with an
 * in-memory reference model. Keys of 0..45 bytes over a small key space (so
 * operations collide), values of 0 bytes to 64 KiB.
 *   test_map_model [--ops N] [--seed S] [--keys K]   (default 1 M ops, scaled) */
#include <mmkit/mmkit.h>

#include "testutil.h"

static char path[600];
static uint32_t nkeys = 5000;

struct ent {
    uint32_t ver; /* 0 = absent */
    uint32_t len;
};
static struct ent *cur, *com; /* in the transaction / committed */

static size_t key_of(uint32_t id, char *k)
{
    if (id == 0)
        return 0; /* the empty key */
    int n = snprintf(k, 24, "%u#", id);
    uint32_t extra = id % 33;
    for (uint32_t j = 0; j < extra; j++)
        k[n + j] = (char)('a' + (id + j) % 26);
    return (size_t)n + extra;
}

static void val_of(uint32_t id, uint32_t ver, uint32_t len, uint8_t *v)
{
    uint64_t s = ((uint64_t)id << 32 | ver) * 0x9e3779b97f4a7c15ull | 1;
    for (uint32_t i = 0; i < len; i += 8) {
        uint64_t x = test_rand(&s);
        memcpy(v + i, &x, len - i < 8 ? len - i : 8);
    }
}

static uint8_t vbuf[65536 + 8];

static void expect(mmk_heap *h, mmk_ref m, uint32_t id, const struct ent *model)
{
    char k[64];
    size_t kl = key_of(id, k);
    const void *v;
    size_t vl;
    int rc = mmk_map_get(h, m, k, kl, &v, &vl);
    if (!model[id].ver) {
        if (rc != -ENOENT) {
            fprintf(stderr, "key %u: expected absent, got %d\n", id, rc);
            exit(1);
        }
        return;
    }
    if (rc != 0 || vl != model[id].len) {
        fprintf(stderr, "key %u: expected %u bytes (v%u), got rc %d len %zu\n", id,
                model[id].len, model[id].ver, rc, rc ? 0 : vl);
        exit(1);
    }
    val_of(id, model[id].ver, model[id].len, vbuf);
    CHECK(!memcmp(v, vbuf, vl));
}

/* Whole map against the model: count, iteration, structure. */
static void verify_all(mmk_heap *h, mmk_ref m, const struct ent *model)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < nkeys; i++)
        n += model[i].ver != 0;
    CHECK_EQ(mmk_map_count(h, m), n);
    mmk_map_iter it;
    CHECK_OK(mmk_map_iter_init(h, m, &it));
    const void *k, *v;
    size_t kl, vl;
    int rc;
    uint64_t seen = 0;
    while ((rc = mmk_map_iter_next(&it, &k, &kl, &v, &vl)) == 1) {
        uint32_t id = 0;
        if (kl) {
            CHECK(kl < 64);
            char tmp[64];
            memcpy(tmp, k, kl);
            tmp[kl] = 0;
            id = (uint32_t)strtoul(tmp, NULL, 10);
            CHECK(id > 0 && id < nkeys);
        }
        CHECK(model[id].ver && model[id].len == vl);
        val_of(id, model[id].ver, model[id].len, vbuf);
        CHECK(!memcmp(v, vbuf, vl));
        seen++;
    }
    CHECK_EQ(rc, 0);
    CHECK_EQ(seen, n);
    CHECK_OK(mmk_map_check(h, m));
}

int main(int argc, char **argv)
{
    long ops = 1000000;
    uint64_t seed = 0x5eed;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ops") && i + 1 < argc)
            ops = atol(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--keys") && i + 1 < argc)
            nkeys = (uint32_t)atol(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--ops N] [--seed S] [--keys K]\n", argv[0]);
            return 2;
        }
    }
    if (argc == 1)
        ops = test_scaled(ops);
    if (nkeys < 2)
        nkeys = 2;
    snprintf(path, sizeof path, "%s/model.heap", test_tmpdir());
    cur = calloc(nkeys, sizeof *cur);
    com = calloc(nkeys, sizeof *com);
    CHECK(cur && com);
    printf("model: %ld ops, %u keys, seed %#llx\n", ops, nkeys, (unsigned long long)seed);

    mmk_heap *h;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE | MMK_HEAP_NOSYNC, &h));
    mmk_ref m;
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_map_create(h, &m));
    CHECK_OK(mmk_heap_set_root(h, m));
    CHECK_OK(mmk_heap_commit(h));

    uint64_t s = seed | 1;
    uint32_t ver = 0;
    int in_txn = 0;
    long commits = 0, aborts = 0, reopens = 0, views = 0;
    double t0 = now_sec();
    for (long op = 0; op < ops; op++) {
        uint64_t r = test_rand(&s);
        uint32_t id = (uint32_t)((r >> 8) % nkeys);
        unsigned what = (unsigned)(r % 1000);
        char k[64];
        size_t kl = key_of(id, k);
        if (what < 700 && !in_txn && what >= 300) {
            CHECK_OK(mmk_heap_begin(h));
            in_txn = 1;
        }
        if (what < 300) { /* get, inside the transaction or a view or neither */
            expect(h, m, id, cur);
        } else if (what < 560) { /* put */
            uint64_t lr = test_rand(&s);
            uint32_t len = (uint32_t)(lr % 200);
            if (lr % 100 == 0)
                len = (uint32_t)((lr >> 16) % 65536);
            else if (lr % 10 == 1)
                len = 200 + (uint32_t)((lr >> 16) % 3000);
            val_of(id, ++ver, len, vbuf);
            CHECK_OK(mmk_map_put(h, m, k, kl, vbuf, len));
            cur[id].ver = ver;
            cur[id].len = len;
        } else if (what < 700) { /* del */
            int rc = mmk_map_del(h, m, k, kl);
            CHECK_EQ(rc, cur[id].ver ? 0 : -ENOENT);
            cur[id].ver = 0;
        } else if (what < 900) { /* more gets */
            expect(h, m, id, cur);
        } else if (what < 925) { /* commit */
            if (in_txn) {
                CHECK_OK(mmk_heap_commit(h));
                memcpy(com, cur, nkeys * sizeof *cur);
                in_txn = 0;
                commits++;
            }
        } else if (what < 933) { /* abort */
            if (in_txn) {
                CHECK_OK(mmk_heap_abort(h));
                memcpy(cur, com, nkeys * sizeof *cur);
                in_txn = 0;
                aborts++;
                expect(h, m, id, cur);
            }
        } else if (what < 948) { /* a read view */
            if (!in_txn) {
                CHECK_OK(mmk_heap_read_begin(h));
                for (int j = 0; j < 20; j++)
                    expect(h, m, (uint32_t)(test_rand(&s) % nkeys), com);
                mmk_heap_read_end(h);
                views++;
            }
        } else if (what < 950 || op + 1 == ops) { /* reopen, with a full comparison */
            if (in_txn) {
                if (r & 0x10000) {
                    CHECK_OK(mmk_heap_commit(h));
                    memcpy(com, cur, nkeys * sizeof *cur);
                } else {
                    CHECK_OK(mmk_heap_abort(h));
                    memcpy(cur, com, nkeys * sizeof *cur);
                }
                in_txn = 0;
            }
            if (r & 0x20000) { /* close with an open transaction: aborted */
                CHECK_OK(mmk_heap_begin(h));
                CHECK_OK(mmk_map_put(h, m, "lost", 4, "x", 1));
            }
            mmk_heap_close(h);
            CHECK_OK(mmk_heap_open(path, MMK_HEAP_NOSYNC, &h));
            CHECK_EQ(mmk_heap_root(h), m);
            CHECK_OK(mmk_heap_read_begin(h));
            verify_all(h, m, com);
            mmk_heap_read_end(h);
            reopens++;
        } else { /* count, inside the transaction or outside */
            uint64_t n = 0;
            for (uint32_t i = 0; i < nkeys; i++)
                n += cur[i].ver != 0;
            if (what < 952)
                CHECK_EQ(mmk_map_count(h, m), n);
            else
                expect(h, m, id, cur);
        }
    }
    if (in_txn)
        CHECK_OK(mmk_heap_commit(h));
    memcpy(com, cur, nkeys * sizeof *cur);
    verify_all(h, m, com);
    mmk_heap_close(h);
    printf("model: ok in %.1f s: %ld commits, %ld aborts, %ld read views, %ld reopens\n",
           now_sec() - t0, commits, aborts, views, reopens);
    rm_rf(test_tmpdir());
    free(cur);
    free(com);
    return 0;
}
