// mmk-test: timeout=120
/* MMK_RING_UNTRUSTED against a hostile peer: a forked process scribbles
 * random bytes over the whole shared object (header, positions, wake-up
 * words, data) while this side keeps calling every function. Nothing may
 * crash or hang; every answer is valid data or an error (MMK_ECORRUPT once
 * the peer's positions are impossible). */
#include <signal.h>
#include <sys/prctl.h>
#include <sys/mman.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

static volatile unsigned char sink;

static void touch_read(const void *p, size_t n)
{
    const unsigned char *c = p;
    unsigned char x = 0;
    for (size_t i = 0; i < n; i += 512)
        x ^= c[i];
    if (n)
        x ^= c[n - 1];
    sink = x;
}

/* pace: 0 = as fast as possible, else a pause of about pace ns between
 * writes, so the API also runs between acts of sabotage. */
static void scribbler(int fd, size_t objsize, size_t cap, long pace)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
    if (getppid() == 1)
        _exit(0);
    unsigned char *m = mmap(NULL, objsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        _exit(2);
    uint64_t s = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull;
    for (;;) {
        uint64_t r = test_rand(&s);
        /* slow rounds leave the header alone: only data and record headers */
        switch (pace > 5000 ? 3 + r % 2 : r % 6) {
        case 0: /* a random word anywhere */
            m[(r >> 8) % objsize] = (unsigned char)(r >> 40);
            break;
        case 1: { /* a random 64-bit value into a header word */
            size_t off = cap + ((r >> 8) % 96) * 8;
            memcpy(m + off, &s, 8);
            break;
        }
        case 2: /* positions: plausible-but-wrong values */
            *(volatile uint64_t *)(m + cap + 128) += (r >> 8) % (3 * cap);
            *(volatile uint64_t *)(m + cap + 256) -= (r >> 20) % 64;
            break;
        case 3: /* a record header claiming a huge or odd length */
            for (size_t o = (r >> 8) % cap & ~(size_t)7, k = 0; k < 16; k++, o = (o + 8) % cap)
                *(volatile uint64_t *)(m + o) = test_rand(&s);
            break;
        case 4: /* a burst of random bytes over the data */
            for (int k = 0; k < 64; k++)
                m[test_rand(&s) % cap] = (unsigned char)s;
            break;
        default:
            break;
        }
        if (pace) {
            struct timespec ts = {0, pace};
            nanosleep(&ts, NULL);
        }
    }
}

/* One call of the API chosen at random; returns its code. */
static long one_op(mmk_ring *r, size_t cap, uint64_t *s, int bytes_only)
{
    void *w;
    const void *q;
    char buf[600] = {0};
    uint64_t x = test_rand(s);
    unsigned op = (unsigned)(x % 12);
    if (bytes_only && (op == 2 || op == 3 || op >= 9))
        op = 1; /* records and byte spans do not mix */
    switch (op) {
    case 0: {
        ssize_t fr = mmk_ring_write_begin(r, &w);
        if (fr > 0) {
            CHECK((size_t)fr <= cap);
            memset(w, 0x5a, (size_t)fr);
            return mmk_ring_write_commit(r, (size_t)(x >> 8) % ((size_t)fr + 2));
        }
        return fr;
    }
    case 1: {
        ssize_t av = mmk_ring_read_begin(r, &q);
        if (av > 0) {
            CHECK((size_t)av <= cap);
            touch_read(q, (size_t)av);
            return mmk_ring_read_commit(r, (size_t)(x >> 8) % ((size_t)av + 2));
        }
        return av;
    }
    case 2: {
        size_t len = (size_t)(x >> 8) % 900;
        int rc = mmk_ring_rec_reserve(r, len, &w);
        if (rc == 0) {
            memset(w, 0x33, len);
            return mmk_ring_rec_commit(r, len / 2);
        }
        return rc;
    }
    case 3: {
        ssize_t l = mmk_ring_rec_peek(r, &q);
        if (l >= 0) {
            CHECK((size_t)l + 8 <= cap);
            touch_read(q, (size_t)l);
            return mmk_ring_rec_release(r);
        }
        return l;
    }
    case 4:
        return mmk_ring_write(r, buf, (size_t)(x >> 8) % sizeof buf, 0);
    case 5: {
        ssize_t n = mmk_ring_read(r, buf, (size_t)(x >> 8) % sizeof buf + 1, 0);
        CHECK(n < 0 || (size_t)n <= sizeof buf);
        return n;
    }
    case 6:
        return mmk_ring_wait_readable(r, 1 + (size_t)(x >> 8) % cap, (x >> 40) % 64 == 0);
    case 7:
        return mmk_ring_wait_writable(r, 1 + (size_t)(x >> 8) % cap, (x >> 40) % 64 == 0);
    case 8:
        return mmk_ring_poll_prepare(r, x & 256 ? MMK_RING_READABLE : MMK_RING_WRITABLE);
    case 10: { /* batched producer */
        void *ws[8];
        size_t len = (size_t)(x >> 8) % 300;
        ssize_t n = mmk_ring_rec_reserve_n(r, len, 1 + (size_t)(x >> 20) % 8, ws);
        if (n > 0) {
            CHECK(n <= 8 && (size_t)n * mmk_ring_record_space(len) <= cap);
            for (ssize_t i = 0; i < n; i++)
                memset(ws[i], 0x44, len);
            return mmk_ring_rec_commit_n(r, (size_t)(x >> 30) % ((size_t)n + 1));
        }
        return n;
    }
    case 11: { /* batched consumer: every record within what was published */
        struct mmk_ring_rec out[8];
        ssize_t n = mmk_ring_rec_peek_batch(r, out, 1 + (size_t)(x >> 8) % 8);
        if (n > 0) {
            size_t total = 0;
            CHECK(n <= 8);
            for (ssize_t i = 0; i < n; i++) {
                total += mmk_ring_record_space(out[i].len);
                touch_read(out[i].data, out[i].len);
            }
            CHECK(total <= cap);
            return mmk_ring_rec_release_n(r, 1 + (size_t)(x >> 20) % (size_t)n);
        }
        return n;
    }
    default:
        return mmk_ring_rec_discard(r);
    }
}

/* One round: a fresh ring, a fresh scribbler at a given pace, this side
 * calling the API until the time is up. */
static void round_(int k, double seconds, long *ops, long *corrupt, long *other, long *okc)
{
    size_t page = mmk_page_size();
    mmk_ring *r;
    CHECK_OK(mmk_ring_create((size_t)(1 + k % 4) * page, MMK_RING_UNTRUSTED, &r));
    size_t cap = mmk_ring_capacity(r);
    int fd = mmk_ring_fd(r);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        scribbler(fd, cap + page, cap, k % 3 == 0 ? 0 : 1000 * k);
    double until = now_sec() + seconds;
    uint64_t s = 12345 + (uint64_t)k;
    int broken = 0;
    while (now_sec() < until) {
        long rc = one_op(r, cap, &s, k % 3 == 1);
        (*ops)++;
        if (rc == MMK_ECORRUPT) {
            if (!broken)
                (*corrupt)++;
            broken = 1;
        } else if (rc >= 0) {
            (*okc)++;
        } else {
            CHECK(rc == -EAGAIN || rc == -EINVAL || rc == -EPIPE || rc == -ETIMEDOUT ||
                  rc == -ECONNRESET || rc == -EBUSY || rc == -EMSGSIZE);
            CHECK(!broken); /* MMK_ECORRUPT is sticky */
            (*other)++;
        }
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    /* Attaching to the wreck is refused or gives a handle that stays safe. */
    mmk_ring *b;
    int a = mmk_ring_attach(fd, MMK_RING_UNTRUSTED, &b);
    CHECK(a == 0 || a == MMK_ECORRUPT || a == MMK_EFORMAT);
    if (a == 0) {
        for (int i = 0; i < 1000; i++)
            one_op(b, cap, &s, 0);
        mmk_ring_destroy(b);
    }
    mmk_ring_destroy(r);
}

int main(int argc, char **argv)
{
    long ops = 0, corrupt = 0, other = 0, okc = 0;
    int rounds = 12;
    double per = (0.3 + 2.0 * test_scale()) / rounds;
    /* --seconds N: a soak, not for CI */
    if (argc == 3 && !strcmp(argv[1], "--seconds"))
        rounds = (int)(atof(argv[2]) / per) + 1;
    for (int k = 0; k < rounds; k++)
        round_(k, per, &ops, &corrupt, &other, &okc);
    printf("hostile peer: %d rounds, %ld calls (%ld succeeded), %ld rounds ended in MMK_ECORRUPT, %ld other "
           "errors, no crash\n", rounds, ops, okc, corrupt, other);
    CHECK(ops > 1000 && okc > 1000);
    CHECK(corrupt > 0);
    return 0;
}
