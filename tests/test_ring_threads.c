// mmk-test: labels=concurrent timeout=300
/* ring.h between two threads: 1 GiB (scaled) of bytes in random spans checked
 * byte for byte, spinning and blocking; a record stream ended by close_write;
 * a consumer sleeping in epoll on the eventfd; ping-pong, where every message
 * needs a wake-up. Streams, records and ping-pong also with MMK_RING_BATCH;
 * batched records (reserve_n/commit_n, peek_batch/release_n). */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/epoll.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

#define PERIOD 65521u /* prime: a slip by any ring or page multiple shows */

static unsigned char *pat; /* PERIOD + capacity bytes of random data */

struct job {
    mmk_ring *r;
    uint64_t total;
    int blocking;
    uint64_t seed;
    int result;
};

static void *producer(void *arg)
{
    struct job *j = arg;
    uint64_t pos = 0, seed = j->seed;
    while (pos < j->total) {
        void *w;
        ssize_t fr = mmk_ring_write_begin(j->r, &w);
        if (fr < 0) {
            j->result = (int)fr;
            return NULL;
        }
        if (fr == 0) {
            if (j->blocking) {
                int rc = mmk_ring_wait_writable(j->r, 1 + test_rand(&seed) % 5000, 10000);
                if (rc) {
                    j->result = rc;
                    return NULL;
                }
            } else {
                sched_yield();
            }
            continue;
        }
        size_t n = 1 + (size_t)(test_rand(&seed) % (uint64_t)fr);
        if (n > j->total - pos)
            n = (size_t)(j->total - pos);
        memcpy(w, pat + pos % PERIOD, n);
        if (mmk_ring_write_commit(j->r, n)) {
            j->result = -1;
            return NULL;
        }
        pos += n;
    }
    j->result = mmk_ring_close_write(j->r);
    return NULL;
}

static int consume(mmk_ring *r, uint64_t total, int blocking, uint64_t seed)
{
    uint64_t pos = 0;
    for (;;) {
        const void *s;
        ssize_t av = mmk_ring_read_begin(r, &s);
        CHECK(av >= 0);
        if (av == 0) {
            if (!blocking) {
                sched_yield();
                if (pos == total)
                    break;
                continue;
            }
            int rc = mmk_ring_wait_readable(r, 1 + test_rand(&seed) % 3000, 10000);
            if (rc == -EPIPE) {
                /* drained to below min: take the rest with min 1 */
                rc = mmk_ring_wait_readable(r, 1, 10000);
                if (rc == -EPIPE)
                    break;
            }
            CHECK_OK(rc);
            continue;
        }
        size_t n = 1 + (size_t)(test_rand(&seed) % (uint64_t)av);
        if (memcmp(s, pat + pos % PERIOD, n)) {
            fprintf(stderr, "stream mismatch near byte %llu\n", (unsigned long long)pos);
            return 1;
        }
        CHECK_OK(mmk_ring_read_commit(r, n));
        pos += n;
        CHECK(pos <= total);
    }
    CHECK_EQ(pos, total);
    return 0;
}

static void stream(size_t cap, uint64_t total, int blocking, unsigned flags)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(cap, flags, &r));
    struct job j = {r, total, blocking, 1234 + (uint64_t)blocking, 0};
    pthread_t t;
    double t0 = now_sec();
    CHECK_EQ(pthread_create(&t, NULL, producer, &j), 0);
    int bad = consume(r, total, blocking, 99);
    pthread_join(t, NULL);
    double dt = now_sec() - t0;
    CHECK_EQ(bad, 0);
    CHECK_OK(j.result);
    printf("%s%s stream, ring %zu: %.0f MiB in %.2f s (%.2f GB/s)\n",
           blocking ? "blocking" : "spinning", flags ? " batched" : "", mmk_ring_capacity(r), (double)total / 1048576, dt,
           (double)total / dt / 1e9);
    mmk_ring_destroy(r);
}

/* ---------------------------------------------------------------- records */

static void *rec_producer(void *arg)
{
    struct job *j = arg;
    uint64_t seed = j->seed;
    for (uint64_t k = 0; k < j->total; k++) {
        size_t len = (size_t)(test_rand(&seed) % 2000);
        void *p;
        int rc;
        while ((rc = mmk_ring_rec_reserve(j->r, len, &p)) == -EAGAIN) {
            rc = mmk_ring_wait_writable(j->r, mmk_ring_record_space(len), 10000);
            if (rc) {
                j->result = rc;
                return NULL;
            }
        }
        if (rc) {
            j->result = rc;
            return NULL;
        }
        memcpy(p, pat + (k * 31) % PERIOD, len);
        if (k % 97 == 0) { /* sometimes give part of it back */
            len /= 2;
        }
        if (mmk_ring_rec_commit(j->r, len)) {
            j->result = -1;
            return NULL;
        }
    }
    j->result = mmk_ring_close_write(j->r);
    return NULL;
}

static void records(uint64_t count, unsigned flags)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(5 * 4096, flags, &r));
    struct job j = {r, count, 1, 555, 0};
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, rec_producer, &j), 0);
    uint64_t seed = 555, k = 0;
    for (;;) {
        const void *q;
        ssize_t l = mmk_ring_rec_peek(r, &q);
        if (l == -EAGAIN) {
            int rc = mmk_ring_wait_readable(r, 8, 10000);
            if (rc == -EPIPE)
                break;
            CHECK_OK(rc);
            continue;
        }
        CHECK(l >= 0);
        size_t len = (size_t)(test_rand(&seed) % 2000);
        if (k % 97 == 0)
            len /= 2;
        CHECK_EQ((size_t)l, len);
        CHECK(!memcmp(q, pat + (k * 31) % PERIOD, len));
        CHECK_OK(mmk_ring_rec_release(r));
        k++;
    }
    pthread_join(t, NULL);
    CHECK_OK(j.result);
    CHECK_EQ(k, count);
    printf("records%s: %llu checked\n", flags ? " (batched)" : "", (unsigned long long)k);
    mmk_ring_destroy(r);
}

/* Batched records: the producer reserves up to 40 records of one random
 * length at a time and publishes a random part of them with one commit_n
 * (now and then a single record instead); the consumer takes random-sized
 * batches with peek_batch and releases a random part with release_n. Each
 * record carries its sequence number and a slice of the pattern, checked. */
static void *recb_producer(void *arg)
{
    struct job *j = arg;
    uint64_t seed = j->seed, k = 0;
    void *w[40];
    while (k < j->total) {
        size_t len = 8 + (size_t)(test_rand(&seed) % 600), max = 1 + (size_t)(test_rand(&seed) % 40);
        ssize_t n;
        if (max > j->total - k)
            max = (size_t)(j->total - k);
        int single = test_rand(&seed) % 8 == 0;
        while ((n = single ? (mmk_ring_rec_reserve(j->r, len, w) ? -EAGAIN : 1)
                           : mmk_ring_rec_reserve_n(j->r, len, max, w)) == -EAGAIN) {
            int rc = mmk_ring_wait_writable(j->r, mmk_ring_record_space(len), 10000);
            if (rc) {
                j->result = rc;
                return NULL;
            }
        }
        if (n <= 0) {
            j->result = n ? (int)n : -1;
            return NULL;
        }
        size_t c = single ? 1 : (size_t)(test_rand(&seed) % ((size_t)n + 1));
        for (size_t i = 0; i < c; i++) {
            uint64_t seq = k + i;
            memcpy(w[i], &seq, 8);
            memcpy((char *)w[i] + 8, pat + (seq * 31) % PERIOD, len - 8);
        }
        if (single ? mmk_ring_rec_commit(j->r, len) : mmk_ring_rec_commit_n(j->r, c)) {
            j->result = -1;
            return NULL;
        }
        k += c;
    }
    j->result = mmk_ring_close_write(j->r);
    return NULL;
}

static void records_batched(uint64_t count, unsigned flags)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(5 * 4096, flags, &r));
    struct job j = {r, count, 1, 777, 0};
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, recb_producer, &j), 0);
    uint64_t seed = 4242, k = 0, batches = 0;
    struct mmk_ring_rec out[64];
    for (;;) {
        size_t max = 1 + (size_t)(test_rand(&seed) % 64);
        ssize_t n = mmk_ring_rec_peek_batch(r, out, max);
        if (n == -EAGAIN) {
            int rc = mmk_ring_wait_readable(r, 8, 10000);
            if (rc == -EPIPE)
                break;
            CHECK_OK(rc);
            continue;
        }
        CHECK(n > 0 && (size_t)n <= max);
        size_t c = 1 + (size_t)(test_rand(&seed) % (size_t)n);
        for (size_t i = 0; i < c; i++) {
            uint64_t seq;
            CHECK(out[i].len >= 8);
            memcpy(&seq, out[i].data, 8);
            CHECK_EQ(seq, k + i);
            CHECK(!memcmp((const char *)out[i].data + 8, pat + (seq * 31) % PERIOD, out[i].len - 8));
        }
        CHECK_OK(mmk_ring_rec_release_n(r, c));
        k += c;
        batches++;
    }
    pthread_join(t, NULL);
    CHECK_OK(j.result);
    CHECK_EQ(k, count);
    printf("batched records%s: %llu checked in %llu batches\n", flags ? " (MMK_RING_BATCH)" : "",
           (unsigned long long)k, (unsigned long long)batches);
    mmk_ring_destroy(r);
}

/* ----------------------------------------------------------------- epoll */

static void *chunk_writer(void *arg)
{
    struct job *j = arg;
    uint64_t pos = 0;
    while (pos < j->total) {
        size_t n = 10000;
        if (n > j->total - pos)
            n = (size_t)(j->total - pos);
        ssize_t w = mmk_ring_write(j->r, pat + pos % PERIOD, n, 10000);
        if (w <= 0) {
            j->result = (int)w;
            return NULL;
        }
        pos += (uint64_t)w;
    }
    j->result = mmk_ring_close_write(j->r);
    return NULL;
}

static void epoll_consumer(uint64_t total)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(64 * 1024, 0, &r));
    int efd = mmk_ring_eventfd(r, MMK_RING_READABLE);
    CHECK(efd >= 0);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    CHECK_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev), 0);
    struct job j = {r, total, 1, 0, 0};
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, chunk_writer, &j), 0);
    uint64_t pos = 0, sleeps = 0;
    static unsigned char buf[20000];
    for (;;) {
        ssize_t n = mmk_ring_read(r, buf, sizeof buf, 0);
        if (n == -EPIPE)
            break;
        if (n == -ETIMEDOUT) {
            if (mmk_ring_poll_prepare(r, MMK_RING_READABLE) == 0) {
                struct epoll_event got;
                int k = epoll_wait(ep, &got, 1, 10000);
                CHECK_EQ(k, 1); /* a lost wakeup would time out here */
                uint64_t c;
                CHECK_EQ(read(efd, &c, 8), 8);
                sleeps++;
            }
            continue;
        }
        CHECK(n > 0);
        CHECK(!memcmp(buf, pat + pos % PERIOD, (size_t)n) || !"epoll stream mismatch");
        pos += (uint64_t)n;
    }
    pthread_join(t, NULL);
    CHECK_OK(j.result);
    CHECK_EQ(pos, total);
    printf("epoll: %llu bytes, %llu sleeps\n", (unsigned long long)pos,
           (unsigned long long)sleeps);
    close(ep);
    mmk_ring_destroy(r);
}

/* ------------------------------------------------------------ ping-pong */

/* Every message needs a wakeup: the peer is asleep (or about to be) each
 * time. A lost wakeup shows as a wait that lasts a whole 100 ms slice (the
 * liveness poll then rescues it): count those. */
struct pp {
    mmk_ring *in, *out;
    long n, slow;
    int err;
    int batch; /* MMK_RING_BATCH: flush after each write, as documented */
};

static void *pp_side(void *arg)
{
    struct pp *p = arg;
    for (long i = 0; i < p->n; i++) {
        double t0 = now_sec();
        int rc = mmk_ring_wait_readable(p->in, 1, 10000);
        if (now_sec() - t0 > 0.09)
            p->slow++;
        char c;
        if (rc || mmk_ring_read(p->in, &c, 1, 0) != 1 || c != (char)i) {
            p->err = 1;
            return NULL;
        }
        if (mmk_ring_write(p->out, &c, 1, 10000) != 1 || (p->batch && mmk_ring_write_flush(p->out))) {
            p->err = 2;
            return NULL;
        }
    }
    return NULL;
}

static void pingpong(long n, unsigned flags)
{
    mmk_ring *a, *b;
    CHECK_OK(mmk_ring_create(4096, flags, &a));
    CHECK_OK(mmk_ring_create(4096, flags, &b));
    struct pp echo = {a, b, n, 0, 0, flags != 0};
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, pp_side, &echo), 0);
    long slow = 0;
    double t0 = now_sec();
    for (long i = 0; i < n; i++) {
        char c = (char)i;
        CHECK_EQ(mmk_ring_write(a, &c, 1, 10000), 1);
        if (flags)
            CHECK_OK(mmk_ring_write_flush(a));
        double w0 = now_sec();
        CHECK_OK(mmk_ring_wait_readable(b, 1, 10000));
        if (now_sec() - w0 > 0.09)
            slow++;
        CHECK_EQ(mmk_ring_read(b, &c, 1, 0), 1);
        CHECK_EQ(c, (char)i);
    }
    pthread_join(t, NULL);
    CHECK_EQ(echo.err, 0);
    double dt = now_sec() - t0;
    printf("ping-pong%s: %ld round trips, %.1f us each, %ld waits took a whole slice\n",
           flags ? " (batched)" : "", n,
           dt / (double)n * 1e6, slow + echo.slow);
    /* A systematic lost wakeup would make most of them slow; a loaded
     * machine may stall a thread now and then. */
    CHECK(slow + echo.slow <= 3 + n / 1000);
    mmk_ring_destroy(a);
    mmk_ring_destroy(b);
}

int main(int argc, char **argv)
{
    /* --seconds N: repeat everything for N seconds (a soak, not for CI) */
    double soak = argc == 3 && !strcmp(argv[1], "--seconds") ? atof(argv[2]) : 0;
    double t_end = now_sec() + soak;
    pat = malloc(PERIOD + (4u << 20));
    uint64_t s = 0x1234567;
    for (size_t i = 0; i < PERIOD + (4u << 20); i++)
        pat[i] = (unsigned char)(test_rand(&s) >> 24);
    for (size_t i = PERIOD; i < PERIOD + (4u << 20); i++)
        pat[i] = pat[i % PERIOD];
    uint64_t gib = (uint64_t)test_scaled(1 << 30);
    do {
        stream(300000, gib, 0, 0);       /* 74 pages: not a power of two */
        stream(3 * 4096, gib / 8, 1, 0); /* tiny ring, blocking waits all the time */
        stream(1 << 20, gib / 2, 1, 0);
        stream(3 * 4096, gib / 8, 1, MMK_RING_BATCH);
        stream(1 << 20, gib / 4, 1, MMK_RING_BATCH);
        records((uint64_t)test_scaled(300000), 0);
        records((uint64_t)test_scaled(300000), MMK_RING_BATCH);
        records_batched((uint64_t)test_scaled(300000), 0);
        records_batched((uint64_t)test_scaled(300000), MMK_RING_BATCH);
        epoll_consumer((uint64_t)test_scaled(64 << 20));
        pingpong(test_scaled(20000), 0);
        pingpong(test_scaled(10000), MMK_RING_BATCH);
    } while (now_sec() < t_end);
    free(pat);
    printf("ring_threads: ok\n");
    return 0;
}
