/* ring.h in one thread: setup and validation, spans across the end,
 * refusals, records, end of stream, timeouts, huge pages, sealing, events. */
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

static size_t page;

static void test_errors(void)
{
    mmk_ring *r = (mmk_ring *)1;
    CHECK_EQ(mmk_ring_create(0, 0, &r), -EINVAL);
    CHECK(r == NULL);
    CHECK_EQ(mmk_ring_create(4096, 0, NULL), -EINVAL);
    CHECK_EQ(mmk_ring_create(4096, 0x100, &r), -EINVAL);
    CHECK(mmk_ring_create(SIZE_MAX, 0, &r) < 0);
    CHECK(mmk_ring_create(SIZE_MAX / 2, 0, &r) < 0);
    CHECK_EQ(mmk_ring_attach(-1, 0, &r), -EBADF);
    CHECK_EQ(mmk_ring_attach(0, 0, NULL), -EINVAL);
    CHECK_EQ(mmk_ring_fd(NULL), -EINVAL);
    CHECK_EQ(mmk_ring_capacity(NULL), 0);
    mmk_ring_destroy(NULL);
    void *s;
    const void *cs;
    CHECK_EQ(mmk_ring_write_begin(NULL, &s), -EINVAL);
    CHECK_EQ(mmk_ring_read_begin(NULL, &cs), -EINVAL);
    CHECK_EQ(mmk_ring_write_commit(NULL, 1), -EINVAL);
    CHECK_EQ(mmk_ring_read_commit(NULL, 1), -EINVAL);
    CHECK_EQ(mmk_ring_wait_readable(NULL, 1, 0), -EINVAL);
    CHECK_EQ(mmk_ring_close_write(NULL), -EINVAL);

    /* Not a ring: an empty memfd, a memfd of garbage, a pipe. */
    int fd;
    CHECK_OK(mmk_shm_create("t", 0, 0, &fd));
    CHECK_EQ(mmk_ring_attach(fd, 0, &r), MMK_EFORMAT);
    CHECK_EQ(ftruncate(fd, (off_t)(4 * page)), 0);
    CHECK_EQ(mmk_ring_attach(fd, 0, &r), MMK_EFORMAT);
    close(fd);
    int p[2];
    CHECK_EQ(pipe(p), 0);
    CHECK(mmk_ring_attach(p[0], 0, &r) < 0);
    close(p[0]);
    close(p[1]);
}

static void test_capacity_and_mirror(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(1, 0, &r));
    CHECK_EQ(mmk_ring_capacity(r), page);
    mmk_ring_destroy(r);
    /* Three pages: not a power of two. */
    CHECK_OK(mmk_ring_create(3 * page - 100, 0, &r));
    size_t cap = mmk_ring_capacity(r);
    CHECK_EQ(cap, 3 * page);
    void *w;
    const void *rd;
    /* Advance to 100 bytes before the end, then write across it. */
    CHECK_EQ(mmk_ring_write_begin(r, &w), (ssize_t)cap);
    CHECK_OK(mmk_ring_write_commit(r, cap - 100));
    CHECK_EQ(mmk_ring_read_begin(r, &rd), (ssize_t)(cap - 100));
    CHECK_OK(mmk_ring_read_commit(r, cap - 100));
    CHECK_EQ(mmk_ring_write_begin(r, &w), 100); /* cached: the producer saw 100 free */
    CHECK_OK(mmk_ring_wait_writable(r, cap, 0));
    CHECK_EQ(mmk_ring_write_begin(r, &w), (ssize_t)cap);
    for (size_t i = 0; i < 300; i++)
        ((unsigned char *)w)[i] = (unsigned char)i;
    CHECK_OK(mmk_ring_write_commit(r, 300));
    CHECK_EQ(mmk_ring_read_begin(r, &rd), 300);
    CHECK(rd == w);
    for (size_t i = 0; i < 300; i++)
        CHECK_EQ(((const unsigned char *)rd)[i], (unsigned char)i);
    /* The mirror: byte 100 of the span is byte 0 of the ring. */
    const unsigned char *start = (const unsigned char *)rd + 100 - cap;
    CHECK_EQ(start[0], 100);
    CHECK_OK(mmk_ring_read_commit(r, 300));
    mmk_ring_destroy(r);
}

/* Over-commit and over-consume are refused and change nothing. */
static void test_refusals(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(page, 0, &r));
    void *w;
    const void *rd;
    CHECK_EQ(mmk_ring_write_begin(r, &w), (ssize_t)page);
    CHECK_EQ(mmk_ring_write_commit(r, page + 1), -EINVAL);
    CHECK_EQ(mmk_ring_read_commit(r, 1), -EINVAL);
    CHECK_OK(mmk_ring_write_commit(r, 10));
    CHECK_EQ(mmk_ring_write_commit(r, page - 9), -EINVAL);
    CHECK_EQ(mmk_ring_read_begin(r, &rd), 10);
    CHECK_EQ(mmk_ring_read_commit(r, 11), -EINVAL);
    CHECK_OK(mmk_ring_read_commit(r, 0));
    CHECK_OK(mmk_ring_read_commit(r, 10));
    CHECK_EQ(mmk_ring_read_begin(r, &rd), 0);
    CHECK_EQ(mmk_ring_write_commit(r, page), -EINVAL); /* only page-10 were offered */
    CHECK_OK(mmk_ring_wait_writable(r, page, 0));
    CHECK_OK(mmk_ring_write_commit(r, page));
    CHECK_EQ(mmk_ring_write_begin(r, &w), 0); /* full */
    CHECK_EQ(mmk_ring_write_commit(r, 1), -EINVAL);
    CHECK_EQ(mmk_ring_wait_writable(r, page + 1, 0), -EINVAL);
    CHECK_EQ(mmk_ring_wait_readable(r, page + 1, 0), -EINVAL);
    mmk_ring_destroy(r);
}

/* Random span sizes, wrapping many times, every byte checked. */
static void test_wrap_random(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(3 * page, 0, &r));
    size_t cap = mmk_ring_capacity(r);
    uint64_t seed = 42, wpos = 0, rpos = 0;
    long iters = test_scaled(200000);
    for (long it = 0; it < iters; it++) {
        void *w;
        ssize_t fr = mmk_ring_write_begin(r, &w);
        CHECK(fr >= 0 && (size_t)fr <= cap - (size_t)(wpos - rpos));
        if (fr == 0)
            CHECK_EQ(wpos - rpos, cap);
        if (fr) {
            size_t n = (size_t)(test_rand(&seed) % (size_t)fr) + 1;
            for (size_t i = 0; i < n; i++)
                ((unsigned char *)w)[i] = (unsigned char)((wpos + i) * 7 + ((wpos + i) >> 11));
            CHECK_OK(mmk_ring_write_commit(r, n));
            wpos += n;
        }
        const void *rd;
        ssize_t av = mmk_ring_read_begin(r, &rd);
        CHECK(av >= 0 && av <= (ssize_t)(wpos - rpos));
        if (av == 0)
            CHECK_EQ(wpos, rpos);
        if (av) {
            size_t n = (size_t)(test_rand(&seed) % (size_t)av) + 1;
            for (size_t i = 0; i < n; i++)
                if (((const unsigned char *)rd)[i] !=
                    (unsigned char)((rpos + i) * 7 + ((rpos + i) >> 11))) {
                    fprintf(stderr, "mismatch at stream byte %llu\n",
                            (unsigned long long)(rpos + i));
                    exit(1);
                }
            CHECK_OK(mmk_ring_read_commit(r, n));
            rpos += n;
        }
    }
    CHECK(wpos > 20 * cap);
    mmk_ring_destroy(r);
}

static void test_records(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(page, 0, &r));
    void *p;
    const void *q;
    CHECK_EQ(mmk_ring_rec_peek(r, &q), -EAGAIN);
    CHECK_EQ(mmk_ring_rec_release(r), -EINVAL);
    CHECK_EQ(mmk_ring_rec_commit(r, 0), -EINVAL);
    CHECK_EQ(mmk_ring_rec_discard(r), -EINVAL);
    CHECK_EQ(mmk_ring_rec_reserve(r, page, &p), -EMSGSIZE);
    CHECK_EQ(mmk_ring_rec_reserve(r, (size_t)1 << 33, &p), -EMSGSIZE);
    CHECK_EQ(mmk_ring_record_space(1), 16);
    CHECK_EQ(mmk_ring_record_space(0), 8);
    /* reserve, shrink at commit, discard */
    CHECK_OK(mmk_ring_rec_reserve(r, 100, &p));
    CHECK_EQ(mmk_ring_rec_reserve(r, 1, &p), -EBUSY);
    memcpy(p, "hello", 5);
    CHECK_EQ(mmk_ring_rec_commit(r, 101), -EINVAL);
    CHECK_OK(mmk_ring_rec_commit(r, 5));
    CHECK_OK(mmk_ring_rec_reserve(r, 50, &p));
    CHECK_OK(mmk_ring_rec_discard(r));
    CHECK_OK(mmk_ring_rec_reserve(r, 0, &p));
    CHECK_OK(mmk_ring_rec_commit(r, 0));
    CHECK_EQ(mmk_ring_rec_peek(r, &q), 5);
    CHECK(!memcmp(q, "hello", 5));
    CHECK_EQ(mmk_ring_rec_peek(r, &q), 5); /* peek again: same record */
    CHECK_OK(mmk_ring_rec_release(r));
    CHECK_EQ(mmk_ring_rec_peek(r, &q), 0);
    CHECK_OK(mmk_ring_rec_release(r));
    CHECK_EQ(mmk_ring_rec_peek(r, &q), -EAGAIN);

    /* Records of random sizes, crossing the end many times, each one in
     * place and contiguous. */
    uint64_t seed = 7, wn = 0, rn = 0;
    int straddled = 0;
    size_t cap = mmk_ring_capacity(r);
    const char *data0 = NULL;
    for (long it = 0; it < test_scaled(100000); it++) {
        size_t len = (size_t)(test_rand(&seed) % 700);
        int rc = mmk_ring_rec_reserve(r, len, &p);
        if (rc == 0) {
            for (size_t i = 0; i < len; i++)
                ((unsigned char *)p)[i] = (unsigned char)(wn + i);
            CHECK_OK(mmk_ring_rec_commit(r, len));
            wn++;
        } else {
            CHECK_EQ(rc, -EAGAIN);
        }
        if (test_rand(&seed) % 3 == 0)
            continue;
        ssize_t l = mmk_ring_rec_peek(r, &q);
        if (l == -EAGAIN)
            continue;
        CHECK(l >= 0);
        if (!data0 || (const char *)q - 8 < data0)
            data0 = (const char *)q - 8;
        if ((const char *)q + l > data0 + cap)
            straddled = 1;
        for (ssize_t i = 0; i < l; i++)
            CHECK_EQ(((const unsigned char *)q)[i], (unsigned char)(rn + (size_t)i));
        CHECK_OK(mmk_ring_rec_release(r));
        rn++;
    }
    CHECK(rn > 1000);
    (void)straddled;
    mmk_ring_destroy(r);
}

/* Batched records: reserve_n/commit_n and peek_batch/release_n, their
 * refusals, partial commits and releases, mixing with single calls, and a
 * random stream across the end of a 3-page ring checked byte for byte. */
static void test_records_batched(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(3 * page, 0, &r));
    size_t cap = mmk_ring_capacity(r);
    void *w[512];
    struct mmk_ring_rec out[512];
    const void *q;
    CHECK_EQ(mmk_ring_rec_reserve_n(NULL, 8, 1, w), -EINVAL);
    CHECK_EQ(mmk_ring_rec_reserve_n(r, 8, 0, w), -EINVAL);
    CHECK_EQ(mmk_ring_rec_reserve_n(r, 8, 1, NULL), -EINVAL);
    CHECK_EQ(mmk_ring_rec_reserve_n(r, cap, 1, w), -EMSGSIZE);
    CHECK_EQ(mmk_ring_rec_commit_n(r, 1), -EINVAL);
    CHECK_EQ(mmk_ring_rec_commit_n(NULL, 1), -EINVAL);
    CHECK_EQ(mmk_ring_rec_peek_batch(r, out, 4), -EAGAIN);
    CHECK_EQ(mmk_ring_rec_peek_batch(r, out, 0), -EINVAL);
    CHECK_EQ(mmk_ring_rec_peek_batch(r, NULL, 4), -EINVAL);
    CHECK_EQ(mmk_ring_rec_peek_batch(NULL, out, 4), -EINVAL);
    CHECK_EQ(mmk_ring_rec_release_n(r, 1), -EINVAL);
    CHECK_EQ(mmk_ring_rec_release_n(r, 0), -EINVAL);
    CHECK_EQ(mmk_ring_rec_release_n(NULL, 1), -EINVAL);

    /* 4 reserved, 3 published with one commit, records one after another */
    CHECK_EQ(mmk_ring_rec_reserve_n(r, 10, 4, w), 4);
    CHECK_EQ(mmk_ring_rec_reserve(r, 1, &w[8]), -EBUSY);
    CHECK_EQ(mmk_ring_rec_reserve_n(r, 1, 1, &w[8]), -EBUSY);
    CHECK_EQ(mmk_ring_rec_commit(r, 10), -EINVAL); /* several open: commit_n */
    for (int i = 0; i < 4; i++) {
        CHECK_EQ((char *)w[i] - (char *)w[0], (ptrdiff_t)(i * mmk_ring_record_space(10)));
        memset(w[i], 'a' + i, 10);
    }
    CHECK_EQ(mmk_ring_rec_commit_n(r, 5), -EINVAL);
    CHECK_OK(mmk_ring_rec_commit_n(r, 3));
    CHECK_EQ(mmk_ring_rec_commit_n(r, 1), -EINVAL); /* the fourth was dropped */
    /* one single record after them */
    void *p;
    CHECK_OK(mmk_ring_rec_reserve(r, 3, &p));
    memcpy(p, "xyz", 3);
    CHECK_OK(mmk_ring_rec_commit(r, 3));
    CHECK_EQ(mmk_ring_rec_peek_batch(r, out, 2), 2);
    CHECK_EQ(out[0].len, 10);
    CHECK_EQ(((const char *)out[1].data)[9], 'b');
    CHECK_EQ(mmk_ring_rec_peek_batch(r, out, 64), 4); /* peek again: from the start */
    CHECK_EQ(out[3].len, 3);
    CHECK(!memcmp(out[3].data, "xyz", 3));
    CHECK_EQ(mmk_ring_rec_release_n(r, 5), -EINVAL);
    CHECK_OK(mmk_ring_rec_release_n(r, 0)); /* nothing, the peek stays */
    CHECK_OK(mmk_ring_rec_release_n(r, 1)); /* a part: the rest comes again */
    CHECK_EQ(mmk_ring_rec_release_n(r, 1), -EINVAL);
    CHECK_EQ(mmk_ring_rec_peek(r, &q), 10);
    CHECK_EQ(((const char *)q)[0], 'b');
    CHECK_OK(mmk_ring_rec_release(r));
    CHECK_EQ(mmk_ring_rec_peek_batch(r, out, 64), 2);
    CHECK_OK(mmk_ring_rec_release(r)); /* the first of a batch */
    CHECK_EQ(mmk_ring_rec_peek_batch(r, out, 64), 1);
    CHECK(!memcmp(out[0].data, "xyz", 3));
    CHECK_OK(mmk_ring_rec_release_n(r, 1));
    CHECK_EQ(mmk_ring_rec_peek_batch(r, out, 64), -EAGAIN);
    /* commit_n(0) and discard drop a reservation */
    CHECK_EQ(mmk_ring_rec_reserve_n(r, 0, 3, w), 3);
    CHECK_OK(mmk_ring_rec_commit_n(r, 0));
    CHECK_EQ(mmk_ring_rec_reserve_n(r, 0, 3, w), 3);
    CHECK_OK(mmk_ring_rec_discard(r));
    CHECK_EQ(mmk_ring_rec_peek_batch(r, out, 64), -EAGAIN);
    /* as many as fit, then -EAGAIN */
    size_t sp = mmk_ring_record_space(100);
    CHECK_EQ(mmk_ring_rec_reserve_n(r, 100, 512, w), (ssize_t)(cap / sp));
    CHECK_OK(mmk_ring_rec_commit_n(r, cap / sp));
    CHECK_EQ(mmk_ring_rec_reserve_n(r, 100, 4, w), -EAGAIN);
    CHECK_EQ(mmk_ring_rec_peek_batch(r, out, 512), (ssize_t)(cap / sp));
    CHECK_OK(mmk_ring_rec_release_n(r, cap / sp));

    /* A random stream: batches of random sizes on both sides, partial
     * commits and releases, checked byte for byte, across the end. */
    uint64_t seed = 11, wn = 0, rn = 0;
    int straddled = 0;
    for (long it = 0; it < test_scaled(40000); it++) {
        size_t len = (size_t)(test_rand(&seed) % 300), max = 1 + (size_t)(test_rand(&seed) % 40);
        ssize_t n = mmk_ring_rec_reserve_n(r, len, max, w);
        if (n > 0) {
            CHECK((size_t)n <= max);
            size_t k = (size_t)(test_rand(&seed) % ((size_t)n + 1)); /* commit a part */
            for (size_t i = 0; i < k; i++)
                for (size_t b = 0; b < len; b++)
                    ((unsigned char *)w[i])[b] = (unsigned char)(wn + i + b);
            CHECK_OK(mmk_ring_rec_commit_n(r, k));
            wn += k;
        } else {
            CHECK_EQ(n, -EAGAIN);
        }
        max = 1 + (size_t)(test_rand(&seed) % 64);
        n = mmk_ring_rec_peek_batch(r, out, max);
        if (n == -EAGAIN)
            continue;
        CHECK(n > 0 && (size_t)n <= max);
        size_t k = 1 + (size_t)(test_rand(&seed) % (size_t)n); /* release a part */
        for (size_t i = 0; i < k; i++) {
            const unsigned char *d = out[i].data;
            for (size_t b = 0; b < out[i].len; b++)
                CHECK_EQ(d[b], (unsigned char)(rn + i + b));
            if (i && (const char *)out[i].data < (const char *)out[i - 1].data)
                straddled = 1; /* the batch went round the end */
        }
        CHECK_OK(mmk_ring_rec_release_n(r, k));
        rn += k;
    }
    CHECK(rn > 10000);
    CHECK(straddled);
    mmk_ring_destroy(r);
}

/* Untrusted: a producer position that goes back under a batch the consumer
 * already saw is MMK_ECORRUPT, never a walk past what was published (the
 * length left to walk would underflow; found by fuzz_ring under UBSan). */
static void test_batch_head_back(void)
{
    mmk_ring *r;
    if (mmk_ring_create(page, MMK_RING_UNTRUSTED, &r) == -ENOTSUP) {
        printf("head going back: skipped (no sealed memfd)\n");
        return;
    }
    size_t cap = mmk_ring_capacity(r);
    unsigned char *m = mmap(NULL, cap + page, PROT_READ | PROT_WRITE, MAP_SHARED, mmk_ring_fd(r), 0);
    CHECK(m != MAP_FAILED);
    void *w[3];
    struct mmk_ring_rec out[8];
    CHECK_EQ(mmk_ring_rec_reserve_n(r, 16, 3, w), 3);
    CHECK_OK(mmk_ring_rec_commit_n(r, 3));
    CHECK_EQ(mmk_ring_rec_peek_batch(r, out, 8), 3);
    /* well-formed headers beyond what was published, for a walk to run on */
    for (size_t off = 72; off < 72 + 8 * 24; off += 24) {
        uint64_t h = 16u | (uint64_t)(16u ^ 0x52454331u) << 32;
        memcpy(m + off, &h, 8);
    }
    uint64_t back = 8; /* the producer's word in the header: back below what we saw */
    memcpy(m + cap + 128, &back, 8);
    CHECK_EQ(mmk_ring_rec_peek_batch(r, out, 8), MMK_ECORRUPT);
    CHECK_EQ(mmk_ring_rec_peek_batch(r, out, 8), MMK_ECORRUPT); /* sticky */
    munmap(m, cap + page);
    mmk_ring_destroy(r);

    /* The same with one record: peek, a wait that reloads the position
     * (now back below the record), release, peek again. The release must
     * not leave our position past the producer's, where the next peek would
     * trust a forged header of any length. */
    CHECK_OK(mmk_ring_create(page, MMK_RING_UNTRUSTED, &r));
    m = mmap(NULL, cap + page, PROT_READ | PROT_WRITE, MAP_SHARED, mmk_ring_fd(r), 0);
    CHECK(m != MAP_FAILED);
    void *p1;
    const void *q;
    CHECK_OK(mmk_ring_rec_reserve(r, 16, &p1));
    CHECK_OK(mmk_ring_rec_commit(r, 16));
    CHECK_EQ(mmk_ring_rec_peek(r, &q), 16);
    uint64_t huge = (uint64_t)0x7fffffffu | (uint64_t)(0x7fffffffu ^ 0x52454331u) << 32;
    memcpy(m + 24, &huge, 8); /* a forged record right after ours */
    memcpy(m + cap + 128, &back, 8);
    int rc = mmk_ring_wait_readable(r, 100, 0);
    CHECK(rc == MMK_ECORRUPT || rc == -ETIMEDOUT);
    rc = mmk_ring_rec_release(r);
    ssize_t l = mmk_ring_rec_peek(r, &q);
    CHECK(rc == MMK_ECORRUPT || l == MMK_ECORRUPT || l == -EAGAIN);
    munmap(m, cap + page);
    mmk_ring_destroy(r);
}

static void test_close_and_copy(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(page, 0, &r));
    char buf[8192];
    memset(buf, 'x', sizeof buf);
    CHECK_EQ(mmk_ring_write(r, "abcdef", 6, 0), 6);
    /* More than fits without waiting: a partial write, then a timeout. */
    CHECK_EQ(mmk_ring_write(r, buf, sizeof buf, 0), (ssize_t)(page - 6));
    CHECK_EQ(mmk_ring_write(r, buf, 1, 0), -ETIMEDOUT);
    CHECK_EQ(mmk_ring_read(r, buf, 3, 0), 3);
    CHECK(!memcmp(buf, "abc", 3));
    CHECK_OK(mmk_ring_close_write(r));
    CHECK_OK(mmk_ring_close_write(r));
    void *w;
    CHECK_EQ(mmk_ring_write_begin(r, &w), -EPIPE);
    CHECK_EQ(mmk_ring_write(r, "z", 1, 100), -EPIPE);
    CHECK_EQ(mmk_ring_wait_writable(r, 1, 100), -EPIPE);
    /* The reader drains, then gets -EPIPE without waiting. */
    CHECK_OK(mmk_ring_wait_readable(r, 1, -1));
    CHECK_EQ(mmk_ring_wait_readable(r, page, 1000), -EPIPE);
    size_t got = 0;
    ssize_t n;
    while ((n = mmk_ring_read(r, buf, 1000, -1)) > 0)
        got += (size_t)n;
    CHECK_EQ(n, -EPIPE);
    CHECK_EQ(got, page - 3);
    CHECK_EQ(mmk_ring_wait_readable(r, 1, -1), -EPIPE);
    mmk_ring_destroy(r);
}

static void test_timeouts(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(page, 0, &r));
    double t0 = now_sec();
    CHECK_EQ(mmk_ring_wait_readable(r, 1, 0), -ETIMEDOUT);
    CHECK_EQ(mmk_ring_wait_readable(r, 1, 120), -ETIMEDOUT);
    double dt = now_sec() - t0;
    CHECK(dt >= 0.11 && dt < 2.0);
    CHECK_OK(mmk_ring_wait_writable(r, page, 0));
    CHECK_EQ(mmk_ring_write(r, "abc", 3, 0), 3);
    CHECK_OK(mmk_ring_wait_readable(r, 3, 0));
    t0 = now_sec();
    CHECK_EQ(mmk_ring_wait_readable(r, 4, 50), -ETIMEDOUT);
    CHECK_EQ(mmk_ring_wait_writable(r, page, 50), -ETIMEDOUT);
    CHECK(now_sec() - t0 >= 0.09);
    mmk_ring_destroy(r);
}

static void test_huge(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(100, MMK_RING_HUGE, &r));
    unsigned f = mmk_ring_flags(r);
    size_t cap = mmk_ring_capacity(r);
    CHECK(cap % ((size_t)2 << 20) == 0);
    printf("huge ring: capacity %zu, %s\n", cap,
           (f & MMK_RING_HUGE) ? "hugetlb pages" :
           (f & MMK_RING_HUGE_THP) ? "fell back to THP advice" : "fell back to base pages");
    CHECK(!((f & MMK_RING_HUGE) && (f & MMK_RING_HUGE_THP)));
    CHECK_EQ(mmk_ring_write(r, "huge", 4, 0), 4);
    /* A second handle on it (attach derives the layout from the fd). */
    mmk_ring *b;
    CHECK_OK(mmk_ring_attach(mmk_ring_fd(r), 0, &b));
    CHECK_EQ(mmk_ring_capacity(b), cap);
    char buf[8];
    CHECK_EQ(mmk_ring_read(b, buf, sizeof buf, 0), 4);
    CHECK(!memcmp(buf, "huge", 4));
    mmk_ring_destroy(b);
    mmk_ring_destroy(r);
}

static void test_seal_and_untrusted_backends(void)
{
    mmk_ring *r, *b;
    CHECK_OK(mmk_ring_create(page, MMK_RING_UNTRUSTED, &r));
    CHECK_EQ(mmk_ring_flags(r), MMK_RING_UNTRUSTED);
    int fd = mmk_ring_fd(r);
    int s = mmk_shm_seals(fd);
    CHECK(s >= 0 && (s & MMK_SEAL_SHRINK) && (s & MMK_SEAL_GROW));
    CHECK(ftruncate(fd, 0) != 0); /* a peer cannot truncate it */
    CHECK_OK(mmk_ring_attach(fd, MMK_RING_UNTRUSTED, &b));
    mmk_ring_destroy(b);
    mmk_ring_destroy(r);

    /* Backends without seals: fine for a trusted peer, refused otherwise. */
    setenv("MMK_SHM_BACKEND", "posix", 1);
    CHECK_EQ(mmk_ring_create(page, MMK_RING_UNTRUSTED, &r), -ENOTSUP);
    CHECK_OK(mmk_ring_create(page, 0, &r));
    CHECK_EQ(mmk_ring_attach(mmk_ring_fd(r), MMK_RING_UNTRUSTED, &b), -ENOTSUP);
    CHECK_OK(mmk_ring_attach(mmk_ring_fd(r), 0, &b));
    mmk_ring_destroy(b);
    mmk_ring_destroy(r);
    setenv("MMK_SHM_BACKEND", "tmpfile", 1);
    CHECK_OK(mmk_ring_create(page, 0, &r));
    CHECK_EQ(mmk_ring_write(r, "t", 1, 0), 1);
    mmk_ring_destroy(r);
    unsetenv("MMK_SHM_BACKEND");
}

/* Attach validates the header: bad magic, version or capacity. */
static void test_attach_validation(void)
{
    mmk_ring *r, *b;
    CHECK_OK(mmk_ring_create(2 * page, 0, &r));
    int fd = mmk_ring_fd(r);
    size_t cap = mmk_ring_capacity(r);
    uint64_t v, old;
    CHECK_EQ(pread(fd, &old, 8, (off_t)cap), 8);
    v = old ^ 1;
    CHECK_EQ(pwrite(fd, &v, 8, (off_t)cap), 8);
    CHECK_EQ(mmk_ring_attach(fd, 0, &b), MMK_EFORMAT);
    CHECK_EQ(pwrite(fd, &old, 8, (off_t)cap), 8);
    uint32_t ver = 99, oldver;
    CHECK_EQ(pread(fd, &oldver, 4, (off_t)cap + 8), 4);
    CHECK_EQ(pwrite(fd, &ver, 4, (off_t)cap + 8), 4);
    CHECK_EQ(mmk_ring_attach(fd, 0, &b), MMK_EFORMAT);
    CHECK_EQ(pwrite(fd, &oldver, 4, (off_t)cap + 8), 4);
    uint64_t badcap = cap + page;
    CHECK_EQ(pwrite(fd, &badcap, 8, (off_t)cap + 16), 8);
    CHECK_EQ(mmk_ring_attach(fd, 0, &b), MMK_EFORMAT);
    CHECK_EQ(pwrite(fd, &cap, 8, (off_t)cap + 16), 8);
    CHECK_OK(mmk_ring_attach(fd, 0, &b));
    mmk_ring_destroy(b);
    /* Positions that cannot be: head more than capacity ahead of tail. */
    uint64_t head = 5 * cap;
    CHECK_EQ(pwrite(fd, &head, 8, (off_t)cap + 128), 8);
    CHECK_EQ(mmk_ring_attach(fd, MMK_RING_UNTRUSTED, &b), MMK_ECORRUPT);
    mmk_ring_destroy(r);
}

/* The peer destroys its handle while we are attached: our mapping stays,
 * we drain what it wrote and then learn it is gone. */
static void test_destroy_with_peer(void)
{
    mmk_ring *a, *b;
    CHECK_OK(mmk_ring_create(page, 0, &a));
    CHECK_OK(mmk_ring_attach(mmk_ring_fd(a), 0, &b));
    CHECK_EQ(mmk_ring_write(a, "bye", 3, 0), 3);
    mmk_ring_destroy(a);
    char buf[4];
    CHECK_EQ(mmk_ring_read(b, buf, 4, 1000), 3);
    CHECK(!memcmp(buf, "bye", 3));
    CHECK_EQ(mmk_ring_wait_readable(b, 1, 1000), -EPIPE);
    mmk_ring_destroy(b);

    /* The other way: the consumer leaves, the producer gets -EPIPE. */
    CHECK_OK(mmk_ring_create(page, 0, &a));
    CHECK_OK(mmk_ring_attach(mmk_ring_fd(a), 0, &b));
    CHECK_EQ(mmk_ring_write(a, "x", 1, 0), 1);
    CHECK_EQ(mmk_ring_read(b, buf, 1, 0), 1);
    mmk_ring_destroy(b);
    CHECK_EQ(mmk_ring_write(a, "y", 1, 1000), -EPIPE);
    CHECK_EQ(mmk_ring_wait_writable(a, 1, 1000), -EPIPE);
    mmk_ring_destroy(a);
}

static void test_eventfd(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(page, 0, &r));
    CHECK_EQ(mmk_ring_eventfd(r, 3), -EINVAL);
    int e = mmk_ring_eventfd(r, MMK_RING_READABLE);
    CHECK(e >= 0);
    CHECK_EQ(mmk_ring_eventfd(r, MMK_RING_READABLE), e);
    struct pollfd p = {e, POLLIN, 0};
    CHECK_EQ(mmk_ring_poll_prepare(r, MMK_RING_READABLE), 0);
    CHECK_EQ(poll(&p, 1, 0), 0);
    CHECK_EQ(mmk_ring_write(r, "e", 1, 0), 1);
    CHECK_EQ(poll(&p, 1, 0), 1);
    uint64_t cnt;
    CHECK_EQ(read(e, &cnt, 8), 8);
    CHECK_EQ(mmk_ring_poll_prepare(r, MMK_RING_READABLE), 1); /* data: don't sleep */
    /* Without prepare, no signal: the hot path makes no system call. */
    char c;
    CHECK_EQ(mmk_ring_read(r, &c, 1, 0), 1);
    CHECK_EQ(mmk_ring_write(r, "f", 1, 0), 1);
    CHECK_EQ(poll(&p, 1, 0), 0);
    int w = mmk_ring_eventfd(r, MMK_RING_WRITABLE);
    CHECK(w >= 0 && w != e);
    CHECK_EQ(mmk_ring_poll_prepare(r, MMK_RING_WRITABLE), 1);
    mmk_ring_destroy(r);
}

/* MMK_RING_BATCH: commits and releases stay private until a batch fills,
 * the ring looks full/empty, a flush, close_write or destroy. The peer here
 * is a second, unbatched handle on the same object. */
static void test_batch(void)
{
    mmk_ring *p, *c;
    CHECK_OK(mmk_ring_create(16 * page, MMK_RING_BATCH, &p));
    size_t cap = mmk_ring_capacity(p);
    CHECK_OK(mmk_ring_attach(mmk_ring_fd(p), 0, &c));
    void *w;
    const void *q;
    CHECK(mmk_ring_write_begin(p, &w) == (ssize_t)cap);
    memset(w, 7, 100);
    CHECK_OK(mmk_ring_write_commit(p, 100));
    CHECK_EQ(mmk_ring_read_begin(c, &q), 0); /* held back */
    CHECK_EQ(mmk_ring_wait_readable(c, 1, 0), -ETIMEDOUT);
    CHECK_OK(mmk_ring_write_flush(p));
    CHECK_EQ(mmk_ring_read_begin(c, &q), 100);
    CHECK_OK(mmk_ring_write_flush(p)); /* nothing pending: a no-op */
    /* A full batch (capacity/16) publishes by itself. */
    CHECK_OK(mmk_ring_write_commit(p, cap / 16 - 1));
    CHECK_EQ(mmk_ring_wait_readable(c, 101, 0), -ETIMEDOUT); /* (read_begin may answer from its cache) */
    CHECK_OK(mmk_ring_write_commit(p, 1));
    CHECK_OK(mmk_ring_wait_readable(c, 100 + cap / 16, 0));
    /* Finding the ring full publishes what is pending. */
    ssize_t fr;
    while ((fr = mmk_ring_write_begin(p, &w)) > 0)
        CHECK_OK(mmk_ring_write_commit(p, fr < 10 ? (size_t)fr : 10));
    CHECK_EQ(fr, 0);
    CHECK_OK(mmk_ring_wait_readable(c, cap, 0));
    mmk_ring_destroy(c);

    /* The consumer side: a batched handle releasing to an unbatched one. */
    CHECK_OK(mmk_ring_attach(mmk_ring_fd(p), MMK_RING_BATCH, &c));
    CHECK_EQ(mmk_ring_read_begin(c, &q), (ssize_t)cap);
    CHECK_OK(mmk_ring_read_commit(c, 100));
    mmk_ring_destroy(p);
    CHECK_OK(mmk_ring_attach(mmk_ring_fd(c), 0, &p)); /* a fresh producer handle */
    CHECK_EQ(mmk_ring_write_begin(p, &w), 0);          /* the release is held back */
    CHECK_OK(mmk_ring_read_flush(c));
    CHECK_EQ(mmk_ring_write_begin(p, &w), 100);
    CHECK_OK(mmk_ring_read_commit(c, 100));
    CHECK_EQ(mmk_ring_wait_writable(p, 101, 0), -ETIMEDOUT); /* held back again */
    /* Draining to empty publishes: the consumer then waits for data. */
    ssize_t av;
    while ((av = mmk_ring_read_begin(c, &q)) > 0)
        CHECK_OK(mmk_ring_read_commit(c, (size_t)av));
    CHECK_EQ(av, 0);
    CHECK_OK(mmk_ring_wait_writable(p, cap, 0));
    mmk_ring_destroy(c);
    mmk_ring_destroy(p);

    /* close_write and destroy publish the last, unflushed commits. */
    CHECK_OK(mmk_ring_create(16 * page, MMK_RING_BATCH, &p));
    CHECK_OK(mmk_ring_attach(mmk_ring_fd(p), 0, &c));
    void *rec;
    CHECK_OK(mmk_ring_rec_reserve(p, 5, &rec));
    memcpy(rec, "hello", 5);
    CHECK_OK(mmk_ring_rec_commit(p, 5));
    CHECK_EQ(mmk_ring_rec_peek(c, &q), -EAGAIN);
    CHECK_OK(mmk_ring_close_write(p));
    CHECK_EQ(mmk_ring_rec_peek(c, &q), 5);
    CHECK(!memcmp(q, "hello", 5));
    CHECK_OK(mmk_ring_rec_release(c));
    CHECK_EQ(mmk_ring_wait_readable(c, 1, 0), -EPIPE);
    mmk_ring_destroy(c);
    CHECK_OK(mmk_ring_attach(mmk_ring_fd(p), 0, &c));
    mmk_ring_destroy(p);
    CHECK_EQ(mmk_ring_wait_readable(c, 1, 0), -EPIPE);
    mmk_ring_destroy(c);
    CHECK_EQ(mmk_ring_write_flush(NULL), -EINVAL);
    CHECK_EQ(mmk_ring_read_flush(NULL), -EINVAL);
}

int main(void)
{
    page = mmk_page_size();
    test_errors();
    test_capacity_and_mirror();
    test_refusals();
    test_wrap_random();
    test_records();
    test_records_batched();
    test_batch_head_back();
    test_close_and_copy();
    test_timeouts();
    test_huge();
    test_seal_and_untrusted_backends();
    test_attach_validation();
    test_destroy_with_peer();
    test_eventfd();
    test_batch();
    printf("ring: ok\n");
    return 0;
}
