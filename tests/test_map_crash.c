// mmk-test: labels=map;crash timeout=300
/* Crash loop: a child applies map updates in transactions and reports every
 * acknowledged commit through a pipe; the parent kills it with SIGKILL at a
 * random moment, reopens the heap, checks the map and compares it with the
 * model: it must equal the state after the last acknowledged commit or after
 * the one in flight, never anything else.
 *   test_map_crash [--rounds N] [--seed S] [--sync] */
#include <fcntl.h>
#include <poll.h>
#include <mmkit/mmkit.h>

#include "testutil.h"

#define NKEYS 3000
static char path[600];
static int sync_mode;

struct ent {
    uint64_t ver; /* commit that wrote it, 0 = absent */
    uint32_t len;
};
static struct ent model[NKEYS];

static void val_of(uint32_t id, uint64_t ver, uint32_t len, uint8_t *v)
{
    uint64_t s = ((uint64_t)id * 0x100000001b3ull ^ ver) * 0x9e3779b97f4a7c15ull | 1;
    for (uint32_t i = 0; i < len; i += 8) {
        uint64_t x = test_rand(&s);
        memcpy(v + i, &x, len - i < 8 ? len - i : 8);
    }
}

/* The operations of commit n, the same in child and parent: apply(n, fn). */
struct op {
    uint32_t id, len;
    int del;
};

static int ops_of(uint64_t n, struct op *o)
{
    uint64_t s = n * 0xd1342543de82ef95ull | 1;
    int cnt = 1 + (int)(test_rand(&s) % 60);
    for (int i = 0; i < cnt; i++) {
        uint64_t r = test_rand(&s);
        o[i].id = (uint32_t)(r % NKEYS);
        o[i].del = (r >> 20) % 4 == 0;
        o[i].len = (uint32_t)((r >> 32) % 400);
        if ((r >> 48) % 64 == 0)
            o[i].len = 4000 + (uint32_t)((r >> 50) % 20000);
    }
    return cnt;
}

static size_t key_of(uint32_t id, char *k) { return (size_t)snprintf(k, 16, "key%u", id); }

static uint8_t vbuf[32768];

static void child(int wfd)
{
    mmk_heap *h;
    if (mmk_heap_open(path, sync_mode ? 0 : MMK_HEAP_NOSYNC, &h))
        _exit(3);
    mmk_ref m = mmk_heap_root(h);
    const void *v;
    size_t vl;
    uint64_t n;
    if (mmk_map_get(h, m, "__n", 3, &v, &vl) || vl != 8)
        _exit(4);
    memcpy(&n, v, 8);
    struct op o[64];
    for (;;) {
        n++;
        if (mmk_heap_begin(h))
            _exit(5);
        int cnt = ops_of(n, o);
        for (int i = 0; i < cnt; i++) {
            char k[16];
            size_t kl = key_of(o[i].id, k);
            if (o[i].del) {
                int rc = mmk_map_del(h, m, k, kl);
                if (rc && rc != -ENOENT)
                    _exit(6);
            } else {
                val_of(o[i].id, n, o[i].len, vbuf);
                if (mmk_map_put(h, m, k, kl, vbuf, o[i].len))
                    _exit(7);
            }
        }
        if (mmk_map_put(h, m, "__n", 3, &n, 8) || mmk_heap_commit(h))
            _exit(8);
        if (write(wfd, &n, 8) != 8)
            _exit(9);
    }
}

static void advance(uint64_t n)
{
    struct op o[64];
    int cnt = ops_of(n, o);
    for (int i = 0; i < cnt; i++) {
        if (o[i].del) {
            model[o[i].id].ver = 0;
        } else {
            model[o[i].id].ver = n;
            model[o[i].id].len = o[i].len;
        }
    }
}

static void verify(mmk_heap *h, mmk_ref m)
{
    CHECK_OK(mmk_map_check(h, m));
    uint64_t cnt = 1; /* __n */
    for (uint32_t id = 0; id < NKEYS; id++) {
        char k[16];
        size_t kl = key_of(id, k);
        const void *v;
        size_t vl;
        int rc = mmk_map_get(h, m, k, kl, &v, &vl);
        if (!model[id].ver) {
            CHECK_EQ(rc, -ENOENT);
            continue;
        }
        cnt++;
        CHECK_OK(rc);
        CHECK_EQ(vl, model[id].len);
        val_of(id, model[id].ver, model[id].len, vbuf);
        CHECK(!memcmp(v, vbuf, vl));
    }
    CHECK_EQ(mmk_map_count(h, m), cnt);
}

int main(int argc, char **argv)
{
    long rounds = 40;
    uint64_t seed = 0xc4a54;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atol(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--sync"))
            sync_mode = 1;
        else {
            fprintf(stderr, "usage: %s [--rounds N] [--seed S] [--sync]\n", argv[0]);
            return 2;
        }
    }
    if (argc == 1)
        rounds = test_scaled(rounds);
    snprintf(path, sizeof path, "%s/crash.heap", test_tmpdir());
    mmk_heap *h;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE, &h));
    mmk_ref m;
    uint64_t n = 0;
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_map_create(h, &m));
    CHECK_OK(mmk_heap_set_root(h, m));
    CHECK_OK(mmk_map_put(h, m, "__n", 3, &n, 8));
    CHECK_OK(mmk_heap_commit(h));
    mmk_heap_close(h);

    uint64_t s = seed | 1, inflight_hits = 0;
    double t0 = now_sec();
    for (long round = 0; round < rounds; round++) {
        int p[2];
        CHECK(pipe(p) == 0);
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            child(p[1]);
        }
        close(p[1]);
        /* Let it run 2..150 ms, reading acknowledgements. */
        double until = now_sec() + (double)(2 + test_rand(&s) % 148) / 1000;
        uint64_t acked = n, a;
        while (now_sec() < until) {
            struct pollfd pf = {p[0], POLLIN, 0};
            if (poll(&pf, 1, 1) > 0) {
                if (read(p[0], &a, 8) != 8)
                    break;
                acked = a;
            }
        }
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        while (read(p[0], &a, 8) == 8) /* acknowledged before the kill */
            acked = a;
        close(p[0]);
        if (!WIFSIGNALED(st)) {
            fprintf(stderr, "round %ld: the child ended on its own (status %#x)\n", round, st);
            return 1;
        }
        CHECK_OK(mmk_heap_open(path, 0, &h));
        m = mmk_heap_root(h);
        const void *v;
        size_t vl;
        uint64_t got;
        CHECK_OK(mmk_map_get(h, m, "__n", 3, &v, &vl));
        CHECK_EQ(vl, 8);
        memcpy(&got, v, 8);
        if (got != acked && got != acked + 1) {
            fprintf(stderr, "round %ld: heap holds commit %llu, last acknowledged %llu\n", round,
                    (unsigned long long)got, (unsigned long long)acked);
            return 1;
        }
        inflight_hits += got == acked + 1;
        while (n < got)
            advance(++n);
        verify(h, m);
        mmk_heap_close(h);
    }
    printf("crash: %ld kills, %llu commits survived (%llu found the in-flight commit "
           "applied), %.1f s\n",
           rounds, (unsigned long long)n, (unsigned long long)inflight_hits, now_sec() - t0);
    CHECK(n > (uint64_t)rounds); /* the child did real work */
    rm_rf(test_tmpdir());
    return 0;
}
