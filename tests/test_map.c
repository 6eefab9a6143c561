// mmk-test: labels=map timeout=300
/* Persistent hash map: hash vectors, basic operations, iteration with
 * deletion, growth one bucket at a time, reuse of freed memory, large
 * values, read views, per-map seeds, and damage reported as MMK_ECORRUPT. */
#include <mmkit/mmkit.h>
#include <sys/stat.h>

#include "testutil.h"

uint64_t mmk__map_siphash(uint64_t k0, uint64_t k1, const void *data, size_t len, int c, int d);

static char path[600];

static mmk_heap *open_heap(unsigned flags)
{
    mmk_heap *h = NULL;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE | MMK_HEAP_NOSYNC | flags, &h));
    return h;
}

static void fresh(void)
{
    unlink(path);
    char log[700];
    snprintf(log, sizeof log, "%s-log", path);
    unlink(log);
}

static int get_str(mmk_heap *h, mmk_ref m, const char *k, const char **v, size_t *vl)
{
    const void *p;
    int rc = mmk_map_get(h, m, k, strlen(k), &p, vl);
    *v = p;
    return rc;
}

static void test_siphash(void)
{
    /* Reference vectors of SipHash-2-4: key 00..0f, message 00..len-1. */
    uint8_t msg[16];
    for (int i = 0; i < 16; i++)
        msg[i] = (uint8_t)i;
    uint64_t k0 = 0x0706050403020100ull, k1 = 0x0f0e0d0c0b0a0908ull;
    CHECK(mmk__map_siphash(k0, k1, msg, 0, 2, 4) == 0x726fdb47dd0e0e31ull);
    CHECK(mmk__map_siphash(k0, k1, msg, 1, 2, 4) == 0x74f839c593dc67fdull);
    CHECK(mmk__map_siphash(k0, k1, msg, 8, 2, 4) == 0x93f5f5799a932462ull);
    CHECK(mmk__map_siphash(k0, k1, msg, 15, 2, 4) == 0xa129ca6149be45e5ull);
}

static void test_basic(void)
{
    fresh();
    mmk_heap *h = open_heap(0);
    mmk_ref m;
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_map_create(h, &m));
    CHECK_OK(mmk_heap_set_root(h, m));
    CHECK_EQ(mmk_map_count(h, m), 0);
    const char *v;
    size_t vl;
    CHECK_EQ(get_str(h, m, "a", &v, &vl), -ENOENT);
    CHECK_EQ(mmk_map_del(h, m, "a", 1), -ENOENT);
    CHECK_OK(mmk_map_put(h, m, "a", 1, "alpha", 5));
    CHECK_OK(mmk_map_put(h, m, "", 0, "empty key", 9));
    CHECK_OK(mmk_map_put(h, m, "novalue", 7, NULL, 0));
    CHECK_EQ(mmk_map_count(h, m), 3);
    CHECK_OK(get_str(h, m, "a", &v, &vl));
    CHECK(vl == 5 && !memcmp(v, "alpha", 5));
    CHECK(((uintptr_t)v & 7) == 0);
    CHECK_OK(mmk_map_get(h, m, NULL, 0, (const void **)&v, &vl));
    CHECK(vl == 9 && !memcmp(v, "empty key", 9));
    CHECK_OK(get_str(h, m, "novalue", &v, &vl));
    CHECK_EQ(vl, 0);
    CHECK_OK(mmk_map_get(h, m, "a", 1, NULL, NULL));
    /* Replace with other sizes, then the same size. */
    CHECK_OK(mmk_map_put(h, m, "a", 1, "a much longer value than before", 31));
    CHECK_OK(get_str(h, m, "a", &v, &vl));
    CHECK(vl == 31 && !memcmp(v, "a much longer value than before", 31));
    CHECK_OK(mmk_map_put(h, m, "a", 1, "b", 1));
    CHECK_OK(mmk_map_put(h, m, "a", 1, "c", 1));
    CHECK_OK(get_str(h, m, "a", &v, &vl));
    CHECK(vl == 1 && v[0] == 'c');
    /* A value taken from the map itself. */
    CHECK_OK(mmk_map_put(h, m, "copy", 4, v, vl));
    CHECK_EQ(mmk_map_count(h, m), 4);
    /* Bad arguments. */
    CHECK_EQ(mmk_map_put(h, m, NULL, 3, "x", 1), -EINVAL);
    CHECK_EQ(mmk_map_put(h, m, "k", 1, NULL, 1), -EINVAL);
    CHECK_EQ(mmk_map_put(h, 0, "k", 1, "x", 1), -EINVAL);
    CHECK_EQ(mmk_map_get(NULL, m, "k", 1, NULL, NULL), -EINVAL);
    CHECK_EQ(mmk_map_put(h, m, "k", 1, "x", (size_t)MMK_MAP_MAX_LEN + 1), -E2BIG);
    CHECK_OK(mmk_map_check(h, m));
    CHECK_OK(mmk_heap_commit(h));

    /* Outside a transaction: reads work, changes are refused, no crash
     * (also when the next insert is due to split a bucket). */
    CHECK_OK(get_str(h, m, "a", &v, &vl));
    CHECK(mmk_map_put(h, m, "a", 1, "zz", 2) < 0);
    CHECK(mmk_map_put(h, m, "new", 3, "zz", 2) < 0);
    CHECK(mmk_map_del(h, m, "a", 1) < 0);
    CHECK_EQ(mmk_map_count(h, m), 4);
    CHECK_OK(mmk_heap_begin(h));
    for (int i = 0; i < 200; i++)
        CHECK_OK(mmk_map_put(h, m, &i, sizeof i, "v", 1));
    CHECK_OK(mmk_heap_commit(h));
    for (int i = 1000; i < 1300; i++)
        CHECK(mmk_map_put(h, m, &i, sizeof i, "v", 1) < 0);
    mmk_map_iter oit;
    CHECK_OK(mmk_map_iter_init(h, m, &oit));
    CHECK_EQ(mmk_map_iter_next(&oit, NULL, NULL, NULL, NULL), 1);
    CHECK(mmk_map_iter_del(&oit) < 0);
    mmk_ref m2;
    CHECK(mmk_map_create(h, &m2) < 0);
    CHECK(mmk_map_destroy(h, m) < 0);
    CHECK_OK(mmk_map_check(h, m));
    CHECK_OK(mmk_heap_begin(h));
    for (int i = 0; i < 200; i++)
        CHECK_OK(mmk_map_del(h, m, &i, sizeof i));
    CHECK_OK(mmk_heap_commit(h));
    CHECK_EQ(mmk_map_count(h, m), 4);

    /* Abort undoes. */
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_map_del(h, m, "a", 1));
    CHECK_OK(mmk_map_put(h, m, "b", 1, "beta", 4));
    CHECK_EQ(mmk_map_count(h, m), 4);
    CHECK_OK(mmk_heap_abort(h));
    CHECK_OK(get_str(h, m, "a", &v, &vl));
    CHECK_EQ(get_str(h, m, "b", &v, &vl), -ENOENT);
    mmk_heap_close(h);

    /* Reopen read-only: the map is there, in a read view. */
    mmk_heap *r = NULL;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_RDONLY, &r));
    CHECK_OK(mmk_heap_read_begin(r));
    m = mmk_heap_root(r);
    CHECK_EQ(mmk_map_count(r, m), 4);
    CHECK_OK(get_str(r, m, "a", &v, &vl));
    CHECK(vl == 1 && v[0] == 'c');
    CHECK_OK(mmk_map_check(r, m));
    mmk_heap_read_end(r);
    mmk_heap_close(r);
}

static void test_iter(void)
{
    fresh();
    mmk_heap *h = open_heap(0);
    mmk_ref m;
    enum { N = 3000 };
    static unsigned char seen[N];
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_map_create(h, &m));
    for (unsigned i = 0; i < N; i++) {
        char k[16];
        int kl = snprintf(k, sizeof k, "k%u", i);
        CHECK_OK(mmk_map_put(h, m, k, (size_t)kl, &i, sizeof i));
    }
    mmk_map_iter it;
    const void *k, *v;
    size_t kl, vl;
    int rc;
    unsigned got = 0;
    CHECK_OK(mmk_map_iter_init(h, m, &it));
    while ((rc = mmk_map_iter_next(&it, &k, &kl, &v, &vl)) == 1) {
        unsigned i;
        CHECK_EQ(vl, sizeof i);
        memcpy(&i, v, sizeof i);
        char e[16];
        int el = snprintf(e, sizeof e, "k%u", i);
        CHECK(i < N && !seen[i] && kl == (size_t)el && !memcmp(k, e, kl));
        seen[i] = 1;
        got++;
    }
    CHECK_EQ(rc, 0);
    CHECK_EQ(got, N);

    /* Delete the odd ones while iterating: every entry is still visited once. */
    memset(seen, 0, sizeof seen);
    got = 0;
    CHECK_OK(mmk_map_iter_init(h, m, &it));
    CHECK_EQ(mmk_map_iter_del(&it), -EINVAL);
    while ((rc = mmk_map_iter_next(&it, NULL, NULL, &v, NULL)) == 1) {
        unsigned i;
        memcpy(&i, v, sizeof i);
        CHECK(!seen[i]);
        seen[i] = 1;
        got++;
        if (i & 1) {
            CHECK_OK(mmk_map_iter_del(&it));
            CHECK_EQ(mmk_map_iter_del(&it), -EINVAL);
        }
    }
    CHECK_EQ(rc, 0);
    CHECK_EQ(got, N);
    CHECK_EQ(mmk_map_count(h, m), N / 2);
    CHECK_OK(mmk_map_check(h, m));
    for (unsigned i = 0; i < N; i++) {
        char kk[16];
        int l = snprintf(kk, sizeof kk, "k%u", i);
        CHECK_EQ(mmk_map_get(h, m, kk, (size_t)l, NULL, NULL), (i & 1) ? -ENOENT : 0);
    }
    /* A change during iteration is reported. */
    CHECK_OK(mmk_map_iter_init(h, m, &it));
    CHECK_EQ(mmk_map_iter_next(&it, NULL, NULL, NULL, NULL), 1);
    CHECK_OK(mmk_map_put(h, m, "x", 1, "y", 1));
    CHECK_EQ(mmk_map_iter_next(&it, NULL, NULL, NULL, NULL), -EAGAIN);
    /* Delete everything by iteration. */
    CHECK_OK(mmk_map_iter_init(h, m, &it));
    while ((rc = mmk_map_iter_next(&it, NULL, NULL, NULL, NULL)) == 1)
        CHECK_OK(mmk_map_iter_del(&it));
    CHECK_EQ(rc, 0);
    CHECK_EQ(mmk_map_count(h, m), 0);
    struct mmk_map_stats st;
    CHECK_OK(mmk_map_stats(h, m, &st));
    CHECK_EQ(st.overflow, 0);
    CHECK_OK(mmk_heap_commit(h));
    mmk_heap_close(h);
}

/* The table grows one bucket per put at most, and stays balanced. */
static void test_growth(void)
{
    fresh();
    mmk_heap *h = open_heap(0);
    mmk_ref m;
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_map_create(h, &m));
    struct mmk_map_stats st, prev;
    CHECK_OK(mmk_map_stats(h, m, &prev));
    long small = test_scaled(3000);
    for (long i = 0; i < small; i++) {
        uint64_t k = (uint64_t)i * 0x9e3779b97f4a7c15ull;
        CHECK_OK(mmk_map_put(h, m, &k, sizeof k, &i, sizeof i));
        CHECK_OK(mmk_map_stats(h, m, &st));
        CHECK(st.buckets <= prev.buckets + 1);
        prev = st;
    }
    CHECK_OK(mmk_heap_commit(h));
    /* Many entries: the worst put stays far from a whole-table rehash. */
    long n = test_scaled(400000);
    double worst = 0, t0 = now_sec();
    long done = small;
    while (done < n) {
        CHECK_OK(mmk_heap_begin(h));
        for (int j = 0; j < 5000 && done < n; j++, done++) {
            uint64_t k = (uint64_t)done * 0x9e3779b97f4a7c15ull;
            double a = now_sec();
            CHECK_OK(mmk_map_put(h, m, &k, sizeof k, &done, sizeof done));
            double d = now_sec() - a;
            if (d > worst)
                worst = d;
        }
        CHECK_OK(mmk_heap_commit(h));
    }
    double total = now_sec() - t0;
    CHECK_OK(mmk_map_stats(h, m, &st));
    CHECK_EQ(st.count, n);
    printf("growth: %ld puts, %.0f ns avg (with commits), worst put %.1f us, %llu buckets, "
           "%llu overflow nodes, longest chain %llu\n",
           n - small, total / (double)(n - small) * 1e9, worst * 1e6,
           (unsigned long long)st.buckets, (unsigned long long)st.overflow,
           (unsigned long long)st.longest);
    CHECK(st.buckets >= (uint64_t)n / 5);
    CHECK(st.overflow < st.buckets / 3);
    CHECK(st.longest <= 40);
    CHECK_OK(mmk_map_check(h, m));

    /* Freed memory is reused: delete all, insert as many again, the heap
     * does not grow by much. */
    struct mmk_heap_stats hs0, hs1;
    CHECK_OK(mmk_heap_stats(h, &hs0));
    for (int round = 0; round < 2; round++) {
        CHECK_OK(mmk_heap_begin(h));
        for (long i = 0; i < n; i++) {
            uint64_t k = (uint64_t)i * 0x9e3779b97f4a7c15ull;
            if (round == 0)
                CHECK_OK(mmk_map_del(h, m, &k, sizeof k));
            else
                CHECK_OK(mmk_map_put(h, m, &k, sizeof k, &i, sizeof i));
        }
        CHECK_OK(mmk_heap_commit(h));
    }
    CHECK_OK(mmk_heap_stats(h, &hs1));
    printf("reuse: heap %llu -> %llu bytes, used %llu -> %llu\n",
           (unsigned long long)hs0.size, (unsigned long long)hs1.size,
           (unsigned long long)hs0.used, (unsigned long long)hs1.used);
    CHECK(hs1.size <= hs0.size + hs0.size / 10 + (1 << 20));
    CHECK_OK(mmk_map_check(h, m));
    mmk_heap_close(h);
}

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t s = seed | 1;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t x = test_rand(&s);
        memcpy(p + i, &x, n - i < 8 ? n - i : 8);
    }
}

static void test_large(void)
{
    fresh();
    mmk_heap *h = open_heap(0);
    mmk_ref m;
    size_t sizes[] = {(size_t)1 << 20, ((size_t)16 << 20) + 3, (size_t)40 << 20};
    size_t big = sizes[2];
    uint8_t *buf = malloc(big), *key = malloc(1 << 20);
    CHECK(buf && key);
    fill(key, 1 << 20, 7);
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_map_create(h, &m));
    CHECK_OK(mmk_heap_set_root(h, m));
    for (int i = 0; i < 3; i++) {
        fill(buf, sizes[i], (uint64_t)i + 100);
        char k[8] = {'b', 'i', 'g', (char)('0' + i)};
        CHECK_OK(mmk_map_put(h, m, k, 4, buf, sizes[i]));
    }
    /* A 1 MiB key. */
    CHECK_OK(mmk_map_put(h, m, key, 1 << 20, "v", 1));
    CHECK_OK(mmk_heap_commit(h));
    mmk_heap_close(h);
    h = open_heap(0);
    m = mmk_heap_root(h);
    CHECK_OK(mmk_heap_read_begin(h));
    for (int i = 0; i < 3; i++) {
        fill(buf, sizes[i], (uint64_t)i + 100);
        char k[8] = {'b', 'i', 'g', (char)('0' + i)};
        const void *v;
        size_t vl;
        CHECK_OK(mmk_map_get(h, m, k, 4, &v, &vl));
        CHECK(vl == sizes[i] && !memcmp(v, buf, vl));
    }
    const void *v;
    size_t vl;
    CHECK_OK(mmk_map_get(h, m, key, 1 << 20, &v, &vl));
    CHECK(vl == 1);
    key[12345] ^= 1;
    CHECK_EQ(mmk_map_get(h, m, key, 1 << 20, &v, &vl), -ENOENT);
    key[12345] ^= 1;
    CHECK_OK(mmk_map_check(h, m));
    mmk_heap_read_end(h);
    /* Replace the biggest with a small value, delete the others: space is reused. */
    struct mmk_heap_stats s0, s1;
    CHECK_OK(mmk_heap_stats(h, &s0));
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_map_put(h, m, "big2", 4, "small", 5));
    CHECK_OK(mmk_map_del(h, m, "big0", 4));
    CHECK_OK(mmk_map_del(h, m, key, 1 << 20));
    CHECK_OK(mmk_heap_commit(h));
    CHECK_OK(mmk_heap_begin(h));
    fill(buf, big, 5);
    CHECK_OK(mmk_map_put(h, m, "again", 5, buf, big));
    CHECK_OK(mmk_heap_commit(h));
    CHECK_OK(mmk_heap_stats(h, &s1));
    CHECK(s1.size <= s0.size + (4 << 20));
    CHECK_OK(mmk_map_get(h, m, "again", 5, &v, &vl));
    CHECK(vl == big && !memcmp(v, buf, big));
    CHECK_EQ(mmk_map_count(h, m), 3);
    CHECK_OK(mmk_map_check(h, m));
    mmk_heap_close(h);
    free(buf);
    free(key);
}

/* Two maps get different seeds: the same keys land in other buckets. */
static void test_seed(void)
{
    fresh();
    mmk_heap *h = open_heap(0);
    mmk_ref a, b;
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_map_create(h, &a));
    CHECK_OK(mmk_map_create(h, &b));
    for (int i = 0; i < 200; i++) {
        CHECK_OK(mmk_map_put(h, a, &i, sizeof i, NULL, 0));
        CHECK_OK(mmk_map_put(h, b, &i, sizeof i, NULL, 0));
    }
    mmk_map_iter ia, ib;
    CHECK_OK(mmk_map_iter_init(h, a, &ia));
    CHECK_OK(mmk_map_iter_init(h, b, &ib));
    int same = 0;
    for (int i = 0; i < 200; i++) {
        const void *ka, *kb;
        CHECK_EQ(mmk_map_iter_next(&ia, &ka, NULL, NULL, NULL), 1);
        CHECK_EQ(mmk_map_iter_next(&ib, &kb, NULL, NULL, NULL), 1);
        same += !memcmp(ka, kb, sizeof(int));
    }
    CHECK(same < 100);
    CHECK_OK(mmk_map_destroy(h, b));
    CHECK_EQ(mmk_map_get(h, b, "x", 1, NULL, NULL), MMK_ECORRUPT);
    CHECK_OK(mmk_map_check(h, a));
    CHECK_OK(mmk_heap_commit(h));
    mmk_heap_close(h);
}

/* ---- damage: each kind of broken structure gives MMK_ECORRUPT. */

/* The map's layout, as documented in src/map.c. */
struct t_hdr {
    uint64_t magic;
    uint32_t version, hdr_size;
    uint64_t k0, k1, count, mods, n, split, dir, dir_cap, nseg, over, sum;
};

static uint64_t *first_bucket_with(mmk_heap *h, mmk_ref m, int min_slots)
{
    struct t_hdr *hd = mmk_heap_ptr(h, m);
    uint64_t *dir = mmk_heap_ptr(h, hd->dir);
    for (uint64_t s = 0; s < hd->nseg; s++) {
        uint64_t *seg = mmk_heap_ptr(h, dir[s]);
        for (int b = 0; b < 64; b++)
            if (seg[b * 8 + min_slots - 1])
                return seg + b * 8;
    }
    return NULL;
}


/* mmk_map_get_many over keys 0..n-1 (ints) and some absent ones agrees with
 * mmk_map_get key by key (a damaged map: the same errors). */
static void check_many(mmk_heap *h, mmk_ref m, int n)
{
    enum { MAXK = 1100 };
    static int ks[MAXK];
    static const void *keys[MAXK], *vals[MAXK];
    static size_t klens[MAXK], vlens[MAXK];
    static int rcs[MAXK];
    size_t cnt = 0;
    for (int i = -37; i < n + 60 && cnt < MAXK; i += 1 + (i & 1)) {
        ks[cnt] = i;
        keys[cnt] = &ks[cnt];
        klens[cnt] = sizeof(int);
        cnt++;
    }
    int rc = mmk_map_get_many(h, m, cnt, keys, klens, vals, vlens, rcs);
    int found = 0;
    for (size_t i = 0; i < cnt; i++) {
        const void *v;
        size_t vl;
        int r1 = mmk_map_get(h, m, keys[i], klens[i], &v, &vl);
        if (rc < 0) {
            CHECK_EQ(r1, rc);
            continue;
        }
        CHECK_EQ(rcs[i], r1);
        if (r1 == 0) {
            CHECK(vals[i] == v && vlens[i] == vl);
            found++;
        } else {
            CHECK(vals[i] == NULL && vlens[i] == 0);
        }
    }
    if (rc >= 0)
        CHECK_EQ(rc, found);
}

/* Every read entry point must fail cleanly (or return valid data); with a
 * damaged header (hdr), every get must say so. */
static void expect_corrupt(mmk_heap *h, mmk_ref m, int n, int hdr)
{
    CHECK_EQ(mmk_map_check(h, m), MMK_ECORRUPT);
    char msg[200];
    CHECK_EQ(mmk_map_check_report(h, m, msg, sizeof msg), MMK_ECORRUPT);
    CHECK(msg[0]);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        const void *v;
        size_t vl;
        int rc = mmk_map_get(h, m, &i, sizeof i, &v, &vl);
        CHECK(rc == 0 || rc == -ENOENT || rc == MMK_ECORRUPT);
        if (hdr)
            CHECK_EQ(rc, MMK_ECORRUPT);
        if (rc == 0)
            CHECK(vl == sizeof i && !memcmp(v, &i, sizeof i));
        bad += rc != 0;
    }
    check_many(h, m, n);
    mmk_map_iter it;
    int rc = mmk_map_iter_init(h, m, &it);
    long steps = 0;
    if (rc == 0)
        while ((rc = mmk_map_iter_next(&it, NULL, NULL, NULL, NULL)) == 1)
            CHECK(++steps <= n + 1);
    if (rc != 0 && rc != MMK_ECORRUPT) {
        fprintf(stderr, "iteration of a damaged map gave %d (%s)\n", rc, mmk_strerror(rc));
        exit(1);
    }
    CHECK(bad > 0 || rc == MMK_ECORRUPT);
}

static void test_damage(void)
{
    enum { N = 400 };
    for (int kind = 0; kind < 9; kind++) {
        fresh();
        mmk_heap *h = open_heap(0);
        mmk_ref m;
        CHECK_OK(mmk_heap_begin(h));
        CHECK_OK(mmk_map_create(h, &m));
        for (int i = 0; i < N; i++)
            CHECK_OK(mmk_map_put(h, m, &i, sizeof i, &i, sizeof i));
        /* Squeeze a long chain: not possible through the API with the seeded
         * hash, so damage works on whatever chains exist. */
        /* A get first: the handle then keeps a copy of the header as it
         * passed its checks, and damage must still be seen through it. */
        int zero = 0;
        CHECK_OK(mmk_map_get(h, m, &zero, sizeof zero, NULL, NULL));
        struct t_hdr *hd = mmk_heap_ptr(h, m);
        uint64_t *b = first_bucket_with(h, m, 2);
        CHECK(b);
        const uint64_t mask = (1ull << 48) - 1;
        struct mmk_heap_stats hs;
        CHECK_OK(mmk_heap_stats(h, &hs));
        switch (kind) {
        case 0: hd->count += 1; break;                         /* checksum */
        case 1: b[1] = (b[1] & ~mask) | (hs.size + 4096); break; /* ref past the end */
        case 2: b[0] = (b[0] & ~mask) | ((b[0] & mask) + 3); break; /* misaligned */
        case 3: { /* entry length beyond the heap */
            uint32_t *e = mmk_heap_ptr(h, b[0] & mask);
            e[1] |= 0x00fffff0u; /* short form: value length in the low 24 bits */
            break;
        }
        case 4: { /* a loop: the bucket's overflow points to itself */
            for (int i = 0; i < 7; i++)
                if (!b[i])
                    b[i] = b[0];
            b[7] = mmk_heap_ref(h, b);
            break;
        }
        case 5: b[1] = b[0]; break;                 /* same entry twice */
        case 6: { /* stored hash changed */
            uint32_t *e = mmk_heap_ptr(h, b[0] & mask);
            e[0] ^= 1;
            break;
        }
        case 7: b[0] = 0; break;                   /* a hole */
        case 8: hd->magic ^= 1; break;             /* not a map */
        }
        expect_corrupt(h, m, N, kind == 0 || kind == 8);
        /* Changing a damaged map fails cleanly too. */
        int k = 5;
        int rc = mmk_map_put(h, m, &k, sizeof k, "zz", 2);
        if (rc != 0 && rc != MMK_ECORRUPT) {
            fprintf(stderr, "damage kind %d: put gave %d (%s)\n", kind, rc, mmk_strerror(rc));
            exit(1);
        }
        CHECK_OK(mmk_heap_abort(h));
        mmk_heap_close(h);
    }
}

/* ---- the get's fast path (tags of a bucket's first node matched at once):
 * keys whose tag is 0 (as an empty slot's), keys sharing a bucket and a tag,
 * a full first node with the key in an overflow node, every key length up
 * to 40 against keys one byte off. */
static uint64_t h13(const struct t_hdr *hd, uint64_t k)
{
    return mmk__map_siphash(hd->k0, hd->k1, &k, sizeof k, 1, 3);
}

static void test_fast_path(void)
{
    fresh();
    mmk_heap *h = open_heap(0);
    mmk_ref m;
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_map_create(h, &m));
    const struct t_hdr *hd = mmk_heap_ptr(h, m);
    CHECK_EQ(hd->n, 8u); /* a fresh map: 8 buckets, no split below 32 entries */
    /* Keys (8-byte integers) by what their hash does in an 8-bucket map. */
    uint64_t zero[3], nz = 0;      /* tag 0 */
    uint64_t pair[2] = {0, 0};     /* bucket 3, the same tag */
    uint64_t b3[12], nb3 = 0;      /* bucket 3, tags unlike the pair's and not 0 */
    static uint64_t first_of_tag[65536];
    memset(first_of_tag, 0xff, sizeof first_of_tag);
    for (uint64_t k = 0; k < (1ull << 26) && (nz < 3 || !pair[1] || nb3 < 12); k++) {
        uint64_t x = h13(hd, k), tag = x >> 48;
        if (!tag && nz < 3)
            zero[nz++] = k;
        if ((x & 7) != 3 || !tag)
            continue;
        if (!pair[1] && first_of_tag[tag] != UINT64_MAX) {
            pair[0] = first_of_tag[tag];
            pair[1] = k;
        } else if (first_of_tag[tag] == UINT64_MAX) {
            first_of_tag[tag] = k;
        }
        if (nb3 < 12 && k > 0 && k != pair[0] && k != pair[1])
            b3[nb3++] = k;
    }
    CHECK(nz == 3 && pair[1] && nb3 == 12);
    uint64_t ptag = h13(hd, pair[0]) >> 48;
    nb3 = 0;
    for (int i = 0; i < 12; i++) /* drop pair-tag look-alikes */
        if (h13(hd, b3[i]) >> 48 != ptag && b3[i] != pair[0] && b3[i] != pair[1])
            b3[nb3++] = b3[i];
    CHECK(nb3 >= 9);

    /* Bucket 3: pair[0] first, then 6 others (the first node is full), then
     * pair[1] and two more in the overflow node. */
    CHECK_OK(mmk_map_put(h, m, &pair[0], 8, &pair[0], 8));
    for (int i = 0; i < 6; i++)
        CHECK_OK(mmk_map_put(h, m, &b3[i], 8, &b3[i], 8));
    CHECK_OK(mmk_map_put(h, m, &pair[1], 8, &pair[1], 8));
    CHECK_OK(mmk_map_put(h, m, &b3[6], 8, &b3[6], 8));
    CHECK_OK(mmk_map_put(h, m, &b3[7], 8, &b3[7], 8));
    /* Tag 0: two present, one absent. */
    CHECK_OK(mmk_map_put(h, m, &zero[0], 8, &zero[0], 8));
    CHECK_OK(mmk_map_put(h, m, &zero[1], 8, &zero[1], 8));
    CHECK_EQ(hd->n, 8u);
    CHECK_EQ(hd->split, 0u);
    struct mmk_map_stats st;
    CHECK_OK(mmk_map_stats(h, m, &st));
    CHECK(st.overflow >= 1);
    CHECK_OK(mmk_map_check(h, m));
    const uint64_t present[] = {pair[0], pair[1], b3[0], b3[5], b3[6], b3[7], zero[0], zero[1]};
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < sizeof present / sizeof present[0]; i++) {
            const void *v;
            size_t vl;
            CHECK_OK(mmk_map_get(h, m, &present[i], 8, &v, &vl));
            CHECK(vl == 8 && !memcmp(v, &present[i], 8));
            CHECK_OK(mmk_map_get(h, m, &present[i], 8, NULL, NULL));
        }
        /* Absent: tag 0 (would match an empty slot), the full bucket's. */
        CHECK_EQ(mmk_map_get(h, m, &zero[2], 8, NULL, NULL), -ENOENT);
        CHECK_EQ(mmk_map_get(h, m, &b3[8], 8, NULL, NULL), -ENOENT);
        /* The same from a read view of the commit. */
        if (round == 0) {
            CHECK_OK(mmk_heap_commit(h));
            CHECK_OK(mmk_heap_read_begin(h));
        }
    }
    mmk_heap_read_end(h);

    /* Key lengths 0..40: a key one byte off (or one byte shorter or
     * longer) is another key. */
    CHECK_OK(mmk_heap_begin(h));
    mmk_ref m2;
    CHECK_OK(mmk_map_create(h, &m2));
    uint8_t key[41], probe[41];
    for (int len = 0; len <= 40; len += 2) {
        for (int i = 0; i < len; i++)
            key[i] = (uint8_t)(len * 7 + i);
        CHECK_OK(mmk_map_put(h, m2, key, (size_t)len, &len, sizeof len));
    }
    for (int len = 0; len <= 40; len += 2) {
        for (int i = 0; i <= len; i++)
            key[i] = (uint8_t)(len * 7 + i);
        const void *v;
        size_t vl;
        CHECK_OK(mmk_map_get(h, m2, key, (size_t)len, &v, &vl));
        CHECK(vl == sizeof len && !memcmp(v, &len, sizeof len));
        CHECK_EQ(mmk_map_get(h, m2, key, (size_t)len + 1, NULL, NULL), -ENOENT);
        for (int j = 0; j < len; j++) {
            memcpy(probe, key, (size_t)len);
            probe[j] ^= 0x40;
            CHECK_EQ(mmk_map_get(h, m2, probe, (size_t)len, NULL, NULL), -ENOENT);
        }
    }
    CHECK_OK(mmk_map_check(h, m2));
    /* Hashes of keys one byte off differ, so the lines above never compare
     * keys: change the stored key instead (its hash stays), one byte at a
     * time; the key asked for is then not in the map. */
    mmk_map_iter it;
    const void *k;
    size_t kl;
    int rc, seen = 0;
    CHECK_OK(mmk_map_iter_init(h, m2, &it));
    while ((rc = mmk_map_iter_next(&it, &k, &kl, NULL, NULL)) == 1) {
        uint8_t *stored = (uint8_t *)k;
        memcpy(probe, stored, kl);
        for (size_t j = 0; j < kl; j++) {
            stored[j] ^= 0x40;
            CHECK_EQ(mmk_map_get(h, m2, probe, kl, NULL, NULL), -ENOENT);
            stored[j] ^= 0x40;
            CHECK_OK(mmk_map_get(h, m2, probe, kl, NULL, NULL));
        }
        seen++;
    }
    CHECK_EQ(rc, 0);
    CHECK_EQ(seen, 21);
    CHECK_OK(mmk_map_check(h, m2));
    CHECK_OK(mmk_heap_commit(h));
    mmk_heap_close(h);
}

/* ---- mmk_map_get_many: batches of any size, present and absent keys,
 * bad keys, optional outputs, a read view, a map-level error. */
static void test_get_many(void)
{
    fresh();
    mmk_heap *h = open_heap(0);
    mmk_ref m;
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_map_create(h, &m));
    enum { N = 3000 };
    for (int i = 0; i < N; i++) { /* a long-form entry now and then */
        size_t kl = i % 500 == 7 ? 200 : sizeof i;
        uint8_t kb[200] = {0};
        memcpy(kb, &i, sizeof i);
        CHECK_OK(mmk_map_put(h, m, kb, kl, &i, sizeof i));
    }
    CHECK_EQ(mmk_map_get_many(h, m, 0, NULL, NULL, NULL, NULL, NULL), 0);
    CHECK_EQ(mmk_map_get_many(NULL, m, 1, NULL, NULL, NULL, NULL, NULL), -EINVAL);
    CHECK_EQ(mmk_map_get_many(h, 0, 0, NULL, NULL, NULL, NULL, NULL), -EINVAL);
    const void *k1[1] = {"x"};
    size_t kl1[1] = {1};
    int rc1[1];
    CHECK_EQ(mmk_map_get_many(h, m, 1, NULL, kl1, NULL, NULL, rc1), -EINVAL);
    CHECK_EQ(mmk_map_get_many(h, m, 1, k1, kl1, NULL, NULL, NULL), -EINVAL);
    CHECK_EQ(mmk_map_get_many(h, m + 8, 1, k1, kl1, NULL, NULL, rc1), MMK_ECORRUPT);
    for (int view = 0; view < 2; view++) {
        check_many(h, m, N);
        /* Odd sizes (a group of 16 and a part), bad keys in the middle. */
        static int ks[40];
        static uint8_t lk[40][200];
        const void *keys[40], *vals[40];
        size_t klens[40], vlens[40];
        int rcs[40];
        for (size_t cnt = 1; cnt <= 40; cnt += 13) {
            int want = 0;
            for (size_t i = 0; i < cnt; i++) {
                ks[i] = (int)(i * 211 % (2 * N)) - 100;
                memset(lk[i], 0, sizeof lk[i]);
                memcpy(lk[i], &ks[i], sizeof ks[i]);
                int lng = ks[i] >= 0 && ks[i] % 500 == 7;
                keys[i] = lk[i];
                klens[i] = lng ? 200 : sizeof(int);
                want += ks[i] >= 0 && ks[i] < N;
            }
            if (cnt > 5) {
                keys[3] = NULL; /* -EINVAL for this key only */
                want -= ks[3] >= 0 && ks[3] < N;
                klens[4] = (size_t)MMK_MAP_MAX_LEN + 1; /* -E2BIG */
                want -= ks[4] >= 0 && ks[4] < N;
            }
            CHECK_EQ(mmk_map_get_many(h, m, cnt, keys, klens, vals, vlens, rcs), want);
            for (size_t i = 0; i < cnt; i++) {
                if (cnt > 5 && i == 3) {
                    CHECK_EQ(rcs[i], -EINVAL);
                } else if (cnt > 5 && i == 4) {
                    CHECK_EQ(rcs[i], -E2BIG);
                } else if (ks[i] >= 0 && ks[i] < N) {
                    CHECK_EQ(rcs[i], 0);
                    CHECK(vlens[i] == sizeof(int) && !memcmp(vals[i], &ks[i], sizeof(int)));
                } else {
                    CHECK_EQ(rcs[i], -ENOENT);
                    CHECK(vals[i] == NULL && vlens[i] == 0);
                }
            }
            /* Existence only. */
            CHECK_EQ(mmk_map_get_many(h, m, cnt, keys, klens, NULL, NULL, rcs), want);
        }
        if (view == 0) {
            CHECK_OK(mmk_heap_commit(h));
            CHECK_OK(mmk_heap_read_begin(h));
        }
    }
    mmk_heap_read_end(h);
    mmk_heap_close(h);
}

int main(void)
{
    snprintf(path, sizeof path, "%s/map.heap", test_tmpdir());
    test_siphash();
    test_basic();
    test_iter();
    test_seed();
    test_damage();
    test_fast_path();
    test_get_many();
    test_large();
    test_growth();
    rm_rf(test_tmpdir());
    puts("map: ok");
    return 0;
}
