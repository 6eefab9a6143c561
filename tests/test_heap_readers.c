// mmk-test: labels=concurrent timeout=300
/* Readers in other processes check an invariant spanning many pages while a
 * writer commits: every block holds the commit number in every word, and
 * the blocks (allocated over time, so the heap grows while readers are
 * attached) are listed in the root. A reader inside read_begin/read_end must
 * never see two commit numbers. A second writer process contends for the
 * writer lock; commits from both must serialise. */
#include <signal.h>
#include <sys/wait.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

#define MAXB 64

struct state {
    uint64_t k;
    uint64_t n;
    mmk_ref block[MAXB];
    uint64_t size[MAXB];
};

static char path[600];

static void writer(double secs, uint64_t seed, int id)
{
    mmk_heap *h;
    if (mmk_heap_open(path, MMK_HEAP_NOSYNC, &h))
        _exit(3);
    uint64_t rng = seed | 1;
    long commits = 0;
    double end = now_sec() + secs;
    while (now_sec() < end) {
        if (mmk_heap_begin(h))
            _exit(4);
        struct state *s = mmk_heap_ptr(h, mmk_heap_root(h));
        uint64_t k = s->k + 1;
        if (s->n < MAXB && test_rand(&rng) % 4 == 0) {
            uint64_t sz = 4096 * (1 + test_rand(&rng) % 64);
            if (test_rand(&rng) % 16 == 0)
                sz = (uint64_t)(8 + test_rand(&rng) % 24) << 20; /* grows the heap */
            if (mmk_heap_alloc(h, sz, &s->block[s->n]))
                _exit(5);
            s->size[s->n++] = sz;
        }
        for (uint64_t i = 0; i < s->n; i++) {
            uint64_t *p = mmk_heap_ptr(h, s->block[i]);
            /* big blocks: stamp one word a page (still many pages) */
            uint64_t step = s->size[i] > (1 << 20) ? 512 : 1;
            for (uint64_t j = 0; j < s->size[i] / 8; j += step)
                p[j] = k;
        }
        s->k = k;
        if (mmk_heap_commit(h))
            _exit(6);
        commits++;
        (void)id;
    }
    mmk_heap_close(h);
    printf("writer %d: %ld commits\n", id, commits);
    fflush(stdout);
    _exit(commits > 0 ? 0 : 8); /* writers take turns: none starves */
}

static void reader(double secs, int id)
{
    mmk_heap *h;
    if (mmk_heap_open(path, MMK_HEAP_RDONLY, &h))
        _exit(3);
    long views = 0, pages = 0;
    uint64_t last = 0, maxsize = 0;
    double end = now_sec() + secs;
    while (now_sec() < end) {
        if (mmk_heap_read_begin(h))
            _exit(4);
        const struct state *s = mmk_heap_ptr(h, mmk_heap_root(h));
        uint64_t k = s->k;
        if (k < last) {
            fprintf(stderr, "reader %d: commit went back from %llu to %llu\n", id,
                    (unsigned long long)last, (unsigned long long)k);
            _exit(1);
        }
        last = k;
        for (uint64_t i = 0; i < s->n; i++) {
            const uint64_t *p = mmk_heap_ptr(h, s->block[i]);
            if (!p)
                _exit(6);
            uint64_t step = s->size[i] > (1 << 20) ? 512 : 1;
            for (uint64_t j = 0; j < s->size[i] / 8; j += step) {
                if (p[j] != k) {
                    fprintf(stderr, "reader %d: torn view: block %llu word %llu = %llu, "
                                    "commit %llu\n",
                            id, (unsigned long long)i, (unsigned long long)j,
                            (unsigned long long)p[j], (unsigned long long)k);
                    _exit(1);
                }
            }
            pages += (long)(s->size[i] / 4096);
        }
        struct mmk_heap_stats st;
        mmk_heap_stats(h, &st);
        if (st.size > maxsize)
            maxsize = st.size;
        mmk_heap_read_end(h);
        views++;
    }
    if (mmk_heap_check(h))
        _exit(7);
    mmk_heap_close(h);
    printf("reader %d: %ld consistent views, %ld pages checked, saw the heap grow to %llu MiB\n",
           id, views, pages, (unsigned long long)(maxsize >> 20));
    fflush(stdout);
    _exit(0);
}

int main(void)
{
    snprintf(path, sizeof path, "%s/readers.heap", test_tmpdir());
    mmk_heap *h;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE, &h));
    CHECK_OK(mmk_heap_begin(h));
    mmk_ref r;
    CHECK_OK(mmk_heap_alloc(h, sizeof(struct state), &r));
    CHECK_OK(mmk_heap_set_root(h, r));
    CHECK_OK(mmk_heap_commit(h));
    mmk_heap_close(h);

    double secs = 3.0 * test_scale();
    if (secs < 1)
        secs = 1;
    pid_t pids[4];
    int n = 0;
    fflush(NULL);
    for (int i = 0; i < 2; i++) {
        pid_t p = fork();
        if (p == 0)
            writer(secs, 12345 + (uint64_t)i, i);
        pids[n++] = p;
    }
    for (int i = 0; i < 2; i++) {
        pid_t p = fork();
        if (p == 0)
            reader(secs, i);
        pids[n++] = p;
    }
    int fail = 0;
    for (int i = 0; i < n; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "process %d failed: status %#x\n", i, st);
            fail = 1;
        }
    }
    CHECK(!fail);
    CHECK_OK(mmk_heap_open(path, 0, &h));
    char msg[256];
    int rc = mmk_heap_check_report(h, msg, sizeof msg);
    if (rc)
        fprintf(stderr, "%s\n", msg);
    CHECK_OK(rc);
    mmk_heap_close(h);
    rm_rf(test_tmpdir());
    printf("ok\n");
    return 0;
}
