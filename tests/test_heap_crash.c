// mmk-test: timeout=300
/* The crash loop. A child commits transactions that rewrite every block it
 * owns (tens of KiB to a few MiB, with allocations and frees), every byte
 * stamped with the commit number, and reports each commit after it returns
 * through a pipe. The parent kill -9s it at a random moment, then opens the
 * heap, runs mmk_heap_check and verifies that the state is exactly the last
 * reported commit or the one in flight: one commit number everywhere.
 * Usage: test_heap_crash [--seconds N] (default: a count scaled for CI). */
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

#define MAXB 32

struct state {
    uint64_t commit_no;
    uint64_t nblocks;
    mmk_ref block[MAXB];
    uint64_t size[MAXB];
    uint64_t check; /* commit_no ^ nblocks ^ sizes: catches a torn state page */
};

static char path[600];

static uint64_t word_of(uint64_t k, uint64_t i) { return (k << 8) | i; }

static uint64_t state_sum(const struct state *s)
{
    uint64_t x = s->commit_no * 0x9e3779b97f4a7c15ull ^ s->nblocks;
    for (uint64_t i = 0; i < s->nblocks && i < MAXB; i++)
        x = x * 31 + s->size[i] + s->block[i];
    return x;
}

static void fill(mmk_heap *h, mmk_ref r, uint64_t size, uint64_t w)
{
    uint64_t *p = mmk_heap_ptr(h, r);
    for (uint64_t j = 0; j < size / 8; j++)
        p[j] = w;
}

static uint64_t rand_size(uint64_t *rng)
{
    uint64_t r = test_rand(rng);
    switch (r % 4) {
    case 0: return 8 + (r >> 8) % 2048;            /* small: slabs */
    case 1: return 4096 + (r >> 8) % 60000;        /* pages */
    case 2: return 8 + (r >> 8) % 300;
    default: return 16 * 1024 + (r >> 8) % (240 * 1024); /* up to 256 KiB */
    }
}

static void child(int wfd, uint64_t seed, int nosync)
{
    mmk_heap *h;
    if (mmk_heap_open(path, nosync ? MMK_HEAP_NOSYNC : 0, &h))
        _exit(3);
    uint64_t rng = seed | 1;
    for (;;) {
        if (mmk_heap_begin(h))
            _exit(4);
        struct state *s = mmk_heap_ptr(h, mmk_heap_root(h));
        if (!s) {
            mmk_ref r;
            if (mmk_heap_alloc(h, sizeof *s, &r) || mmk_heap_set_root(h, r))
                _exit(5);
            s = mmk_heap_ptr(h, r);
        }
        uint64_t k = s->commit_no + 1;
        /* free a few, allocate a few */
        for (int f = (int)(test_rand(&rng) % 3); f > 0 && s->nblocks; f--) {
            uint64_t i = test_rand(&rng) % s->nblocks;
            if (mmk_heap_free(h, s->block[i]))
                _exit(6);
            s->nblocks--;
            s->block[i] = s->block[s->nblocks];
            s->size[i] = s->size[s->nblocks];
        }
        for (int a = (int)(test_rand(&rng) % 4); a > 0 && s->nblocks < MAXB; a--) {
            uint64_t sz = rand_size(&rng) & ~7ull;
            if (mmk_heap_alloc(h, sz, &s->block[s->nblocks]))
                _exit(7);
            s->size[s->nblocks++] = sz;
        }
        s->commit_no = k;
        for (uint64_t i = 0; i < s->nblocks; i++)
            fill(h, s->block[i], s->size[i], word_of(k, i));
        s->check = state_sum(s);
        int rc = mmk_heap_commit(h);
        if (rc)
            _exit(8);
        if (write(wfd, &k, sizeof k) != sizeof k)
            _exit(9);
        /* sometimes abort a transaction half-way: must leave no trace */
        if (test_rand(&rng) % 8 == 0) {
            if (mmk_heap_begin(h))
                _exit(10);
            s = mmk_heap_ptr(h, mmk_heap_root(h));
            s->commit_no = 0xdead;
            for (uint64_t i = 0; i < s->nblocks; i++)
                fill(h, s->block[i], s->size[i], 0xbad);
            mmk_ref r;
            mmk_heap_alloc(h, 5000, &r);
            mmk_heap_abort(h);
        }
    }
}

/* 0 ok; prints and returns 1 on a violation. */
static int verify(uint64_t acked, uint64_t *seen, double *check_ms)
{
    mmk_heap *h;
    int rc = mmk_heap_open(path, 0, &h);
    if (rc) {
        fprintf(stderr, "open after kill: %s\n", mmk_strerror(rc));
        return 1;
    }
    double t0 = now_sec();
    char msg[256];
    rc = mmk_heap_check_report(h, msg, sizeof msg);
    *check_ms += (now_sec() - t0) * 1e3;
    if (rc) {
        fprintf(stderr, "check after kill (acked %llu): %s\n", (unsigned long long)acked, msg);
        return 1;
    }
    CHECK_OK(mmk_heap_read_begin(h));
    const struct state *s = mmk_heap_ptr(h, mmk_heap_root(h));
    uint64_t k = s ? s->commit_no : 0;
    if (k != acked && k != acked + 1) {
        fprintf(stderr, "state is commit %llu, last acknowledged %llu\n",
                (unsigned long long)k, (unsigned long long)acked);
        return 1;
    }
    if (s && s->check != state_sum(s)) {
        fprintf(stderr, "state header torn at commit %llu\n", (unsigned long long)k);
        return 1;
    }
    for (uint64_t i = 0; s && i < s->nblocks; i++) {
        const uint64_t *p = mmk_heap_ptr(h, s->block[i]);
        for (uint64_t j = 0; j < s->size[i] / 8; j++)
            if (p[j] != word_of(k, i)) {
                fprintf(stderr, "block %llu word %llu holds %#llx, commit %llu expected\n",
                        (unsigned long long)i, (unsigned long long)j,
                        (unsigned long long)p[j], (unsigned long long)k);
                return 1;
            }
    }
    mmk_heap_read_end(h);
    *seen = k;
    mmk_heap_close(h);
    return 0;
}

int main(int argc, char **argv)
{
    double seconds = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
    long rounds = seconds > 0 ? 1L << 40 : test_scaled(300);
    snprintf(path, sizeof path, "%s/crash.heap", test_tmpdir());
    setenv("MMK_HEAP_LOG_LIMIT", "2097152", 1); /* checkpoint often */
    mmk_heap *h;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE, &h));
    mmk_heap_close(h);
    uint64_t acked = 0, rng = (uint64_t)time(NULL) * 2654435761u | 1;
    printf("seed %llu\n", (unsigned long long)rng);
    long kills = 0, inflight = 0, commits = 0;
    double t_end = now_sec() + seconds, check_ms = 0;
    for (long round = 0; round < rounds && (seconds <= 0 || now_sec() < t_end); round++) {
        int fds[2];
        CHECK(pipe(fds) == 0);
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            child(fds[1], test_rand(&rng), round % 3 != 0); /* 1 in 3 durable */
        }
        close(fds[1]);
        /* let it run 0-25 ms (sometimes through open only) */
        usleep((useconds_t)(test_rand(&rng) % 40000));
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
            fprintf(stderr, "child ended on its own: status %#x\n", st);
            return 1;
        }
        uint64_t k;
        while (read(fds[0], &k, sizeof k) == sizeof k) {
            CHECK(k == acked + 1);
            acked = k;
            commits++;
        }
        close(fds[0]);
        kills++;
        uint64_t seen;
        if (verify(acked, &seen, &check_ms)) {
            fprintf(stderr, "round %ld: FAILED (heap kept in %s)\n", round, path);
            return 1;
        }
        if (seen == acked + 1) {
            inflight++;
            acked = seen; /* the in-flight commit was completed by recovery */
        }
    }
    printf("%ld kills, %ld acknowledged commits, %ld in-flight commits completed by "
           "recovery, mean check %.2f ms: every state was one whole commit\n",
           kills, commits, inflight, check_ms / (double)kills);
    rm_rf(test_tmpdir());
    return 0;
}
