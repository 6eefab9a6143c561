// mmk-test: timeout=300
/* Random alloc/free/write/commit/abort/reopen soak against an in-memory
 * model: after every commit, abort and reopen, every live object holds
 * exactly what the model says, the root and schema agree, the allocator
 * counters match, and (often) mmk_heap_check passes. After freeing all, the
 * free space is whole again (fragmentation is bounded).
 * Usage: test_heap_soak [--seconds N] (default: an operation count). */
#include <mmkit/mmkit.h>
#include "testutil.h"

#define MAXOBJ 1000

struct obj {
    mmk_ref ref;
    uint32_t size;
    uint32_t seed; /* contents: bytes of a xorshift stream from seed */
};

struct model {
    struct obj o[MAXOBJ];
    int n;
    mmk_ref root;
    uint64_t schema;
};

static struct model cur, committed;
static char path[600];

/* Contents: 64-bit words derived from seed and position (a tail of
 * size % 8 bytes from the same word). */
static void paint(unsigned char *p, uint32_t size, uint32_t seed)
{
    uint64_t k = (uint64_t)seed * 0x9e3779b97f4a7c15ull;
    uint32_t i = 0;
    for (; i + 8 <= size; i += 8) {
        uint64_t w = k + i;
        memcpy(p + i, &w, 8);
    }
    uint64_t w = k + i;
    memcpy(p + i, &w, size - i);
}

static int same(const unsigned char *p, uint32_t size, uint32_t seed)
{
    uint64_t k = (uint64_t)seed * 0x9e3779b97f4a7c15ull;
    uint32_t i = 0;
    for (; i + 8 <= size; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w != k + i)
            return 0;
    }
    uint64_t w = k + i;
    return memcmp(p + i, &w, size - i) == 0;
}

static void verify(mmk_heap *h, const struct model *m)
{
    CHECK_EQ(mmk_heap_root(h), m->root);
    CHECK_EQ(mmk_heap_schema(h), m->schema);
    uint64_t bytes = 0;
    for (int i = 0; i < m->n; i++) {
        const unsigned char *p = mmk_heap_ptr(h, m->o[i].ref);
        CHECK(p);
        if (!same(p, m->o[i].size, m->o[i].seed)) {
            fprintf(stderr, "object %d (ref %#llx, %u bytes) differs\n", i,
                    (unsigned long long)m->o[i].ref, m->o[i].size);
            exit(1);
        }
        bytes += m->o[i].size;
    }
    struct mmk_heap_stats st;
    CHECK_OK(mmk_heap_stats(h, &st));
    CHECK_EQ(st.objects, m->n);
    CHECK(st.used >= bytes);
}

static uint32_t rand_size(uint64_t *r)
{
    uint64_t x = test_rand(r);
    switch (x % 8) {
    case 0: return (uint32_t)(1 + (x >> 8) % 200000);
    case 1: case 2: return (uint32_t)(1 + (x >> 8) % 4096);
    default: return (uint32_t)(1 + (x >> 8) % 256);
    }
}

int main(int argc, char **argv)
{
    double seconds = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
    long ops = seconds > 0 ? 1L << 40 : test_scaled(25000);
    snprintf(path, sizeof path, "%s/soak.heap", test_tmpdir());
    setenv("MMK_HEAP_LOG_LIMIT", "4194304", 1);
    mmk_heap *h;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE | MMK_HEAP_NOSYNC, &h));
    uint64_t rng = 0x1234567 + (uint64_t)time(NULL);
    printf("seed %llu\n", (unsigned long long)rng);
    long commits = 0, aborts = 0, reopens = 0, checks = 0, allocs = 0, frees = 0;
    int in_txn = 0;
    double end = now_sec() + seconds;
    for (long op = 0; op < ops && (seconds <= 0 || now_sec() < end); op++) {
        if (!in_txn) {
            CHECK_OK(mmk_heap_begin(h));
            in_txn = 1;
        }
        uint64_t x = test_rand(&rng) % 1000;
        if (x < 450 && cur.n < MAXOBJ) {
            struct obj o = {.size = rand_size(&rng), .seed = (uint32_t)test_rand(&rng)};
            CHECK_OK(mmk_heap_alloc(h, o.size, &o.ref));
            unsigned char *p = mmk_heap_ptr(h, o.ref);
            for (uint32_t i = 0; i < o.size; i += 97)
                CHECK(p[i] == 0);
            paint(p, o.size, o.seed);
            cur.o[cur.n++] = o;
            allocs++;
        } else if (x < 800 && cur.n) {
            int i = (int)(test_rand(&rng) % (uint64_t)cur.n);
            CHECK_OK(mmk_heap_free(h, cur.o[i].ref));
            CHECK(mmk_heap_free(h, cur.o[i].ref) < 0);
            cur.o[i] = cur.o[--cur.n];
            frees++;
        } else if (x < 900 && cur.n) {
            int i = (int)(test_rand(&rng) % (uint64_t)cur.n);
            cur.o[i].seed = (uint32_t)test_rand(&rng);
            paint(mmk_heap_ptr(h, cur.o[i].ref), cur.o[i].size, cur.o[i].seed);
        } else if (x < 910) {
            cur.root = cur.n ? cur.o[0].ref : 0;
            cur.schema = test_rand(&rng) % 100;
            CHECK_OK(mmk_heap_set_root(h, cur.root));
            CHECK_OK(mmk_heap_set_schema(h, cur.schema));
        } else if (x < 960) {
            CHECK_OK(mmk_heap_commit(h));
            in_txn = 0;
            committed = cur;
            commits++;
            if (commits % 8 == 0)
                verify(h, &cur);
        } else if (x < 985) {
            CHECK_OK(mmk_heap_abort(h));
            in_txn = 0;
            cur = committed;
            aborts++;
            verify(h, &cur);
        } else if (x < 995) {
            if (in_txn)
                CHECK_OK(mmk_heap_commit(h));
            in_txn = 0;
            committed = cur;
            mmk_heap_close(h);
            CHECK_OK(mmk_heap_open(path, MMK_HEAP_NOSYNC, &h));
            reopens++;
            verify(h, &cur);
        } else {
            if (in_txn)
                CHECK_OK(mmk_heap_commit(h));
            in_txn = 0;
            committed = cur;
            char msg[256];
            int rc = mmk_heap_check_report(h, msg, sizeof msg);
            if (rc)
                fprintf(stderr, "check: %s\n", msg);
            CHECK_OK(rc);
            checks++;
        }
    }
    if (in_txn)
        CHECK_OK(mmk_heap_commit(h));
    verify(h, &cur);
    /* Free everything: all pages but two slabs per class go back to runs. */
    CHECK_OK(mmk_heap_begin(h));
    for (int i = 0; i < cur.n; i++)
        CHECK_OK(mmk_heap_free(h, cur.o[i].ref));
    CHECK_OK(mmk_heap_commit(h));
    struct mmk_heap_stats st;
    CHECK_OK(mmk_heap_stats(h, &st));
    CHECK_EQ(st.objects, 0);
    CHECK_EQ(st.used, 0);
    uint64_t slabs = st.size - st.meta - st.free;
    printf("%ld allocs, %ld frees, %ld commits, %ld aborts, %ld reopens, %ld checks; "
           "heap %llu KiB, after freeing all: %llu KiB free, %llu KiB in kept slabs\n",
           allocs, frees, commits, aborts, reopens, checks, (unsigned long long)(st.size >> 10),
           (unsigned long long)(st.free >> 10), (unsigned long long)(slabs >> 10));
    CHECK(slabs <= 2 * 24 * 8 * 4096); /* at most two empty slabs per class */
    CHECK_OK(mmk_heap_check(h));
    mmk_heap_close(h);
    rm_rf(test_tmpdir());
    printf("ok\n");
    return 0;
}
