/* bench_ring: the magic ring against its peers, side by side in one run.
 *  1. byte stream between two threads, 1 MiB ring, 64 B / 1 KiB / 64 KiB
 *     messages: mmkit ring, pipe(2) with a 1 MiB pipe, a split-copy ring
 *     (the same SPSC ring without the mirror: two memcpy at the end);
 *  2. records of 64 B and 1 KiB, consumed in place, against the split-copy
 *     ring (which copies records that straddle the end) and ck_ring SPSC
 *     passing pointers to pooled buffers;
 *  3. the same byte stream between two processes;
 *  4. blocking waits against spinning.
 * Both sides always do the same work: the producer writes every byte of a
 * message, the consumer copies byte streams out and, for records, reads the
 * first and last word in place. mmkit and the split-copy ring wait the same
 * way (futex with need-wakeup flag) except in the spinning row of 4; ck_ring
 * has no blocking: it spins (pause, then sched_yield). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mmkit/ring.h>
#include "bench.h"
#ifdef MMK_HAVE_CK
#include <ck_ring.h>
#endif

#define RING_BYTES (1u << 20)
static size_t rec_ring = RING_BYTES; /* ring size of the records tables (the straddle table varies it) */
#define MAXMSG     (64u << 10)

static struct bench_opts O;

static inline void relax(unsigned *spins)
{
    if (++*spins < 128) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        *spins = 0;
        sched_yield(); /* 2 vCPUs shared with others: let the peer run */
    }
}

/* ------------------------------------------------------ split-copy ring */

/* The comparison point: the very same ring (positions, cached indices,
 * futex waits), used as if it had no mirror: a message across the physical
 * end is copied in two parts, and the consumer cannot read such a record in
 * place. Only the first mapping is touched. */
struct split {
    mmk_ring *r;
    char *base; /* start of the first mapping */
    size_t cap;
};

static void split_init(struct split *x, mmk_ring *r)
{
    void *w;
    x->r = r;
    x->cap = mmk_ring_capacity(r);
    mmk_ring_write_begin(r, &w); /* a fresh ring starts at offset 0 */
    x->base = w;
}

static void *span_w(struct split *x, size_t n, int block)
{
    void *w;
    unsigned sp = 0;
    while (mmk_ring_write_begin(x->r, &w) < (ssize_t)n) {
        if (block)
            mmk_ring_wait_writable(x->r, n, -1);
        else if (mmk_ring_wait_writable(x->r, n, 0))
            relax(&sp);
    }
    return w;
}

static const void *span_r(struct split *x, size_t n, int block)
{
    const void *q;
    unsigned sp = 0;
    while (mmk_ring_read_begin(x->r, &q) < (ssize_t)n) {
        if (block)
            mmk_ring_wait_readable(x->r, n, -1);
        else if (mmk_ring_wait_readable(x->r, n, 0))
            relax(&sp);
    }
    return q;
}

static void split_put(struct split *x, void *at, const void *src, size_t n)
{
    size_t off = (size_t)((char *)at - x->base), first = x->cap - off < n ? x->cap - off : n;
    memcpy(x->base + off, src, first);
    if (n > first)
        memcpy(x->base, (const char *)src + first, n - first);
}

static void split_get(struct split *x, const void *at, void *dst, size_t n)
{
    size_t off = (size_t)((const char *)at - x->base), first = x->cap - off < n ? x->cap - off : n;
    memcpy(dst, x->base + off, first);
    if (n > first)
        memcpy((char *)dst + first, x->base, n - first);
}

/* ------------------------------------------------------------ streams */

enum impl { RING, RING_SPIN, PIPE, SPLIT };

struct stream {
    enum impl impl;
    size_t msg;
    uint64_t total;
    mmk_ring *r;
    struct split s;
    int pfd[2];
    unsigned char *src;
};

static void ring_put(mmk_ring *r, const unsigned char *src, size_t n, int block)
{
    void *w;
    unsigned sp = 0;
    while (mmk_ring_write_begin(r, &w) < (ssize_t)n) {
        if (block)
            mmk_ring_wait_writable(r, n, -1);
        else if (mmk_ring_wait_writable(r, n, 0))
            relax(&sp);
    }
    memcpy(w, src, n);
    mmk_ring_write_commit(r, n);
}

static void ring_get(mmk_ring *r, unsigned char *dst, size_t n, int block)
{
    const void *q;
    unsigned sp = 0;
    while (mmk_ring_read_begin(r, &q) < (ssize_t)n) {
        if (block)
            mmk_ring_wait_readable(r, n, -1);
        else if (mmk_ring_wait_readable(r, n, 0))
            relax(&sp);
    }
    memcpy(dst, q, n);
    mmk_ring_read_commit(r, n);
}

static void produce(struct stream *st)
{
    for (uint64_t done = 0; done < st->total; done += st->msg) {
        st->src[0] = (unsigned char)done; /* the message changes each time */
        switch (st->impl) {
        case RING:
        case RING_SPIN:
            ring_put(st->r, st->src, st->msg, st->impl == RING);
            break;
        case SPLIT:
            split_put(&st->s, span_w(&st->s, st->msg, 1), st->src, st->msg);
            mmk_ring_write_commit(st->r, st->msg);
            break;
        case PIPE:
            for (size_t k = 0; k < st->msg;) {
                ssize_t n = write(st->pfd[1], st->src + k, st->msg - k);
                if (n <= 0)
                    exit(3);
                k += (size_t)n;
            }
            break;
        }
    }
}

static uint64_t consume(struct stream *st)
{
    static unsigned char dst[MAXMSG];
    uint64_t sum = 0;
    for (uint64_t done = 0; done < st->total; done += st->msg) {
        switch (st->impl) {
        case RING:
        case RING_SPIN:
            ring_get(st->r, dst, st->msg, st->impl == RING);
            break;
        case SPLIT:
            split_get(&st->s, span_r(&st->s, st->msg, 1), dst, st->msg);
            mmk_ring_read_commit(st->r, st->msg);
            break;
        case PIPE:
            for (size_t k = 0; k < st->msg;) {
                ssize_t n = read(st->pfd[0], dst + k, st->msg - k);
                if (n <= 0)
                    exit(3);
                k += (size_t)n;
            }
            break;
        }
        sum += dst[0];
    }
    return sum;
}

static void *producer_thread(void *arg)
{
    produce(arg);
    return NULL;
}

/* One transfer; bytes per second. proc: the consumer is a forked process. */
static double stream_once(enum impl impl, size_t msg, uint64_t total, int proc)
{
    static unsigned char src[MAXMSG];
    struct stream st = {impl, msg, total - total % msg, NULL, {0}, {-1, -1}, src};
    memset(src, 0x5a, sizeof src);
    if (impl != PIPE) {
        if (mmk_ring_create(RING_BYTES, 0, &st.r))
            exit(2);
        if (impl == SPLIT)
            split_init(&st.s, st.r);
    } else {
        if (pipe(st.pfd))
            exit(2);
        fcntl(st.pfd[1], F_SETPIPE_SZ, RING_BYTES);
    }
    double t0 = bench_now();
    if (proc) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            bench_keep(consume(&st));
            _exit(0);
        }
        produce(&st);
        waitpid(pid, NULL, 0);
    } else {
        pthread_t t;
        pthread_create(&t, NULL, producer_thread, &st);
        bench_keep(consume(&st));
        pthread_join(t, NULL);
    }
    double dt = bench_now() - t0;
    mmk_ring_destroy(st.r);
    if (st.pfd[0] >= 0) {
        close(st.pfd[0]);
        close(st.pfd[1]);
    }
    return (double)st.total / dt;
}

static uint64_t stream_total(size_t msg)
{
    uint64_t t = msg >= 1024 ? 1024ull << 20 : 128ull << 20;
    return O.quick ? t / 8 : t;
}

/* Medians of several implementations measured round-robin, so a burst of
 * load from elsewhere on the machine hits them all alike. */
#define PROC 0x100 /* or'ed into an impl: the consumer is another process */

static void median_streams(const int *impls, int k, size_t msg, double *out, double *best)
{
    double v[8][64];
    int n = O.runs < 64 ? O.runs : 64;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++)
            v[j][i] = stream_once((enum impl)(impls[j] & 0xff), msg, stream_total(msg),
                                  !!(impls[j] & PROC));
    if (getenv("BENCH_RAW")) /* every run, in order, on stderr */
        for (int j = 0; j < k; j++) {
            fprintf(stderr, "stream impl %#x msg %zu:", (unsigned)impls[j], msg);
            for (int i = 0; i < n; i++)
                fprintf(stderr, " %.2f", v[j][i] / 1e9);
            fprintf(stderr, "\n");
        }
    for (int j = 0; j < k; j++)
        out[j] = bench_median(v[j], n) / 1e9, best[j] = v[j][n - 1] / 1e9;
}

/* ------------------------------------------------------------ records */

enum rimpl { R_RING, R_SPLIT, R_CK, R_RING_B, R_SPLIT_B, R_RING_BS, R_RING_N, R_SPLIT_N };
#define NRIMPL 8 /* R_RING_BS: batched and spinning like ck_ring */
/* R_RING_N: the batched records API (reserve_n/commit_n, peek_batch/
 * release_n), up to NB records a call; R_SPLIT_N: the split-copy ring doing
 * the same (many records in one span, one commit, one release). */
#define NB 64
#define NB_BYTES (16u << 10) /* and at most this much a call: big batches leave L1 */

struct recs {
    enum rimpl impl;
    size_t len;
    uint64_t count;
    mmk_ring *r;
    struct split s;
    uint64_t straddled; /* split-copy consumer: records copied out */
#ifdef MMK_HAVE_CK
    ck_ring_t q, freeq;
    ck_ring_buffer_t *qb, *freeb;
    char *pool;
#endif
};

#define CK_SLOTS 16384u /* room for as many buffers in flight as the 1 MiB ring holds records */

static void rec_produce(struct recs *x)
{
    static _Alignas(64) unsigned char stage[2048];
    for (uint64_t k = 0; k < x->count; k++) {
        unsigned sp = 0;
        switch (x->impl) {
        case R_RING:
        case R_RING_B:
        case R_RING_BS: {
            void *p;
            while (mmk_ring_rec_reserve(x->r, x->len, &p) == -EAGAIN) {
                if (x->impl != R_RING_BS)
                    mmk_ring_wait_writable(x->r, mmk_ring_record_space(x->len), -1);
                else if (mmk_ring_wait_writable(x->r, mmk_ring_record_space(x->len), 0))
                    relax(&sp);
            }
            memset(p, (int)k, x->len); /* the producer writes the message in place */
            mmk_ring_rec_commit(x->r, x->len);
            break;
        }
        case R_SPLIT:
        case R_SPLIT_B: {
            /* In place when the record fits before the end; a record that
             * would straddle is built aside and copied in two parts. */
            size_t sp8 = 8 + ((x->len + 7) & ~(size_t)7);
            char *h = span_w(&x->s, sp8, 1);
            size_t off = (size_t)(h - x->s.base);
            if (off + 8 + x->len <= x->s.cap) {
                memcpy(h, &x->len, 8);
                memset(h + 8, (int)k, x->len);
            } else {
                memset(stage + 8, (int)k, x->len);
                memcpy(stage, &x->len, 8);
                split_put(&x->s, h, stage, 8 + x->len);
            }
            mmk_ring_write_commit(x->r, sp8);
            break;
        }
        case R_RING_N: {
            void *w[NB];
            size_t want = x->count - k < NB ? (size_t)(x->count - k) : NB;
            if (want > NB_BYTES / mmk_ring_record_space(x->len))
                want = NB_BYTES / mmk_ring_record_space(x->len);
            ssize_t n;
            while ((n = mmk_ring_rec_reserve_n(x->r, x->len, want, w)) == -EAGAIN)
                mmk_ring_wait_writable(x->r, mmk_ring_record_space(x->len), -1);
            for (ssize_t i = 0; i < n; i++)
                memset(w[i], (int)(k + (uint64_t)i), x->len);
            mmk_ring_rec_commit_n(x->r, (size_t)n);
            k += (uint64_t)n - 1;
            break;
        }
        case R_SPLIT_N: {
            size_t sp8 = 8 + ((x->len + 7) & ~(size_t)7);
            size_t n = x->count - k < NB ? (size_t)(x->count - k) : NB;
            if (n > NB_BYTES / sp8)
                n = NB_BYTES / sp8;
            void *w;
            ssize_t fr;
            while ((fr = mmk_ring_write_begin(x->r, &w)) < (ssize_t)sp8)
                mmk_ring_wait_writable(x->r, sp8, -1);
            if (n > (size_t)fr / sp8)
                n = (size_t)fr / sp8;
            size_t off = (size_t)((char *)w - x->s.base);
            for (size_t i = 0; i < n; i++, off = off + sp8 >= x->s.cap ? off + sp8 - x->s.cap : off + sp8) {
                char *h = x->s.base + off;
                if (off + 8 + x->len <= x->s.cap) {
                    memcpy(h, &x->len, 8);
                    memset(h + 8, (int)(k + i), x->len);
                } else {
                    memset(stage + 8, (int)(k + i), x->len);
                    memcpy(stage, &x->len, 8);
                    split_put(&x->s, h, stage, 8 + x->len);
                }
            }
            mmk_ring_write_commit(x->r, n * sp8);
            k += n - 1;
            break;
        }
        case R_CK: {
#ifdef MMK_HAVE_CK
            void *buf;
            while (!ck_ring_dequeue_spsc(&x->freeq, x->freeb, &buf))
                relax(&sp);
            memset(buf, (int)k, x->len);
            while (!ck_ring_enqueue_spsc(&x->q, x->qb, buf))
                relax(&sp);
#endif
            break;
        }
        }
    }
    if (x->r)
        mmk_ring_write_flush(x->r); /* MMK_RING_BATCH: publish the tail end */
}

static uint64_t rec_consume(struct recs *x)
{
    static _Alignas(64) unsigned char stage[2048];
    uint64_t sum = 0;
    for (uint64_t k = 0; k < x->count; k++) {
        unsigned sp = 0;
        const unsigned char *p = NULL;
        switch (x->impl) {
        case R_RING:
        case R_RING_B:
        case R_RING_BS: {
            const void *q;
            ssize_t l;
            while ((l = mmk_ring_rec_peek(x->r, &q)) == -EAGAIN) {
                if (x->impl != R_RING_BS)
                    mmk_ring_wait_readable(x->r, 8, -1);
                else if (mmk_ring_wait_readable(x->r, 8, 0))
                    relax(&sp);
            }
            p = q;
            sum += p[0] + p[x->len - 1];
            mmk_ring_rec_release(x->r);
            break;
        }
        case R_SPLIT:
        case R_SPLIT_B: {
            const char *h = span_r(&x->s, 8, 1);
            size_t len;
            memcpy(&len, h, 8); /* 8-aligned: a header never straddles */
            size_t sp8 = 8 + ((len + 7) & ~(size_t)7);
            h = span_r(&x->s, sp8, 1);
            size_t off = (size_t)(h - x->s.base);
            if (off + 8 + len <= x->s.cap) {
                p = (const unsigned char *)h + 8;
            } else if (off + 8 == x->s.cap) { /* the payload starts at the beginning */
                p = (const unsigned char *)x->s.base;
            } else { /* straddles the end: copy it out */
                split_get(&x->s, h + 8, stage, len);
                p = stage;
                x->straddled++;
            }
            sum += p[0] + p[len - 1];
            mmk_ring_read_commit(x->r, sp8);
            break;
        }
        case R_RING_N: {
            struct mmk_ring_rec out[NB];
            ssize_t n;
            size_t want = NB_BYTES / mmk_ring_record_space(x->len) < NB ? NB_BYTES / mmk_ring_record_space(x->len) : NB;
            while ((n = mmk_ring_rec_peek_batch(x->r, out, want)) == -EAGAIN)
                mmk_ring_wait_readable(x->r, 8, -1);
            for (ssize_t i = 0; i < n; i++) {
                p = out[i].data;
                sum += p[0] + p[out[i].len - 1];
            }
            mmk_ring_rec_release_n(x->r, (size_t)n);
            k += (uint64_t)n - 1;
            break;
        }
        case R_SPLIT_N: {
            const void *q;
            ssize_t av;
            while ((av = mmk_ring_read_begin(x->r, &q)) < 8)
                mmk_ring_wait_readable(x->r, 8, -1);
            size_t off = (size_t)((const char *)q - x->s.base), used = 0, n = 0;
            size_t want = NB_BYTES / (8 + ((x->len + 7) & ~(size_t)7)) < NB ? NB_BYTES / (8 + ((x->len + 7) & ~(size_t)7)) : NB;
            while (n < want && (size_t)av - used >= 8) { /* whole records only are committed */
                const char *h = x->s.base + off;
                size_t len;
                memcpy(&len, h, 8);
                size_t sp8 = 8 + ((len + 7) & ~(size_t)7);
                if (off + 8 + len <= x->s.cap)
                    p = (const unsigned char *)h + 8;
                else if (off + 8 == x->s.cap)
                    p = (const unsigned char *)x->s.base;
                else {
                    split_get(&x->s, h + 8, stage, len);
                    p = stage;
                    x->straddled++;
                }
                sum += p[0] + p[len - 1];
                used += sp8;
                n++;
                off = off + sp8 >= x->s.cap ? off + sp8 - x->s.cap : off + sp8;
            }
            mmk_ring_read_commit(x->r, used);
            k += n - 1;
            break;
        }
        case R_CK: {
#ifdef MMK_HAVE_CK
            void *buf;
            while (!ck_ring_dequeue_spsc(&x->q, x->qb, &buf))
                relax(&sp);
            p = buf;
            sum += p[0] + p[x->len - 1];
            while (!ck_ring_enqueue_spsc(&x->freeq, x->freeb, buf))
                relax(&sp);
#endif
            break;
        }
        }
    }
    if (x->r)
        mmk_ring_read_flush(x->r); /* MMK_RING_BATCH: give back the tail end */
    return sum;
}

static void *rec_producer_thread(void *arg)
{
    rec_produce(arg);
    return NULL;
}

/* Set up x for impl; 0, or -1 when the peer is not built in. */
static int recs_setup(struct recs *x, enum rimpl impl, size_t len, uint64_t count)
{
    *x = (struct recs){impl, len, count, NULL, {0}};
    if (impl != R_CK) {
        int batch = impl == R_RING_B || impl == R_SPLIT_B || impl == R_RING_BS;
        if (mmk_ring_create(rec_ring, batch ? MMK_RING_BATCH : 0, &x->r))
            exit(2);
        if (impl == R_SPLIT || impl == R_SPLIT_B || impl == R_SPLIT_N)
            split_init(&x->s, x->r);
        return 0;
    }
#ifdef MMK_HAVE_CK
    /* As many buffers in flight as the byte rings hold messages, at most
     * the slot count. */
    unsigned nb = (unsigned)(rec_ring / (len + 8));
    if (nb > CK_SLOTS - 1)
        nb = CK_SLOTS - 1;
    x->qb = calloc(CK_SLOTS, sizeof *x->qb);
    x->freeb = calloc(CK_SLOTS, sizeof *x->freeb);
    x->pool = aligned_alloc(64, (size_t)nb * ((len + 63) & ~(size_t)63));
    ck_ring_init(&x->q, CK_SLOTS);
    ck_ring_init(&x->freeq, CK_SLOTS);
    for (unsigned i = 0; i < nb; i++)
        ck_ring_enqueue_spsc(&x->freeq, x->freeb, x->pool + (size_t)i * ((len + 63) & ~(size_t)63));
    return 0;
#else
    return -1;
#endif
}

static void recs_free(struct recs *x)
{
    mmk_ring_destroy(x->r);
#ifdef MMK_HAVE_CK
    free(x->qb);
    free(x->freeb);
    free(x->pool);
#endif
}

/* Records per second for one run. */
static double rec_once(enum rimpl impl, size_t len, uint64_t count)
{
    struct recs x;
    if (recs_setup(&x, impl, len, count))
        return 0;
    pthread_t t;
    double t0 = bench_now();
    pthread_create(&t, NULL, rec_producer_thread, &x);
    bench_keep(rec_consume(&x));
    pthread_join(t, NULL);
    double dt = bench_now() - t0;
    recs_free(&x);
    return (double)count / dt;
}

static void median_recs(const enum rimpl *impls, int k, size_t len, double *out, double *best)
{
    double v[NRIMPL][64];
    int n = O.runs < 64 ? O.runs : 64;
    uint64_t count = len <= 64 ? 8000000 : 2000000;
    if (O.quick)
        count /= 8;
    /* BENCH_RIMPLS=a,b,...: measure only these enum rimpl values (A/B tests) */
    const char *only = getenv("BENCH_RIMPLS");
    for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++) {
            char tag[8];
            snprintf(tag, sizeof tag, "%d", (int)impls[j]);
            int skip = 0;
            if (only) {
                skip = 1;
                for (const char *c = only; *c; c += strcspn(c, ",") + (c[strcspn(c, ",")] ? 1 : 0))
                    if (!strncmp(c, tag, strlen(tag)) && (c[strlen(tag)] == ',' || !c[strlen(tag)]))
                        skip = 0;
            }
            v[j][i] = skip ? 0 : rec_once(impls[j], len, count);
        }
    for (int j = 0; j < k; j++)
        out[j] = bench_median(v[j], n) / 1e6, best[j] = v[j][n - 1] / 1e6;
    if (getenv("BENCH_RAW")) /* every run, sorted: how spread the figures are */
        for (int j = 0; j < k; j++) {
            fprintf(stderr, "records %zu B impl %d:", len, (int)impls[j]);
            for (int i = 0; i < n; i++)
                fprintf(stderr, " %.1f", v[j][i] / 1e6);
            fprintf(stderr, "\n");
        }
}

/* ------------------------------------------------ one thread, both sides */

/* The instruction path alone: one thread produces 1000 records, then
 * consumes them, over and over, with the very code of the two-thread runs
 * (no wait is ever needed); no other core, so no cache-line transfers and
 * little noise from the machine. Nanoseconds per record (both sides). */
static double path_once(enum rimpl impl, size_t len, uint64_t *straddled)
{
    const long n = O.quick ? 2000000 : 10000000;
    long batch = (long)(rec_ring / mmk_ring_record_space(len)) - 1; /* what always fits */
    if (batch > 1000)
        batch = 1000;
    struct recs x;
    if (recs_setup(&x, impl, len, (uint64_t)batch))
        return 0;
    uint64_t sum = 0;
    double t0 = bench_now();
    for (long k = 0; k < n; k += batch) {
        rec_produce(&x);
        sum += rec_consume(&x);
    }
    double dt = bench_now() - t0;
    *straddled = x.straddled;
    recs_free(&x);
    bench_keep(sum);
    return dt / (double)n * 1e9;
}

static void path_table(void)
{
    /* BENCH_PATH_ONE=impl:len runs one configuration once, for counting
     * instructions under valgrind --tool=callgrind (path_once inclusive). */
    const char *one = getenv("BENCH_PATH_ONE");
    if (one) {
        uint64_t st = 0;
        int impl = atoi(one);
        const char *c = strchr(one, ':');
        size_t len = c ? (size_t)atol(c + 1) : 64;
        printf("impl %d, %zu B: %.1f ns per record\n", impl, len, path_once((enum rimpl)impl, len, &st));
        return;
    }
    static const enum rimpl im[] = {R_RING, R_SPLIT, R_RING_B, R_RING_N, R_SPLIT_N, R_CK};
    enum { K = sizeof im / sizeof im[0] };
    static const size_t lens[2] = {64, 1024};
    int n = O.runs < 64 ? O.runs : 64;
    printf("\n### ring: one thread doing both sides (ns per record, fastest of %d)\n\n"
           "Produce 1000 records, consume them, repeat: the code of the two-thread runs without\n"
           "the second core. The fastest run is the least disturbed by the rest of the machine.\n"
           "*straddling*: records the split-copy ring had to copy.\n\n", n);
    printf("| record | mmkit, each | split-copy, each | mmkit, MMK_RING_BATCH | mmkit, batch API "
           "| split-copy, batch API | ck_ring SPSC + pool | straddling | split/mmkit each "
           "| split/mmkit batch API | mmkit each/ck | mmkit batch API/ck |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int l = 0; l < 2; l++) {
        double v[K][64], o[K];
        uint64_t st = 0, cnt = O.quick ? 2000000 : 10000000;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < K; j++) {
                uint64_t s1 = 0;
                v[j][i] = path_once(im[j], lens[l], &s1);
                if (im[j] == R_SPLIT)
                    st = s1;
            }
        for (int j = 0; j < K; j++) {
            bench_median(v[j], n); /* sorts */
            o[j] = v[j][0];
        }
        printf("| %zu B | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | 1 in %.0f | %.2fx | %.2fx "
               "| %.2fx the time | %.2fx the time |\n",
               lens[l], o[0], o[1], o[2], o[3], o[4], o[5], st ? (double)cnt / (double)st : 0.0,
               o[1] / o[0], o[4] / o[3], o[5] > 0 ? o[0] / o[5] : 0, o[5] > 0 ? o[3] / o[5] : 0);
    }
}

/* Where the mirror pays: 1 KiB records in rings of shrinking size, one
 * thread (the instruction and copy cost alone). A record straddles the end
 * about once per pass round the ring, so the share of records the
 * split-copy ring must copy is about record/ring. */
static void straddle_table(void)
{
    static const size_t rings[] = {1u << 20, 64u << 10, 16u << 10, 8u << 10};
    const size_t len = 1024;
    int n = O.runs < 64 ? O.runs : 64;
    printf("\n### ring: 1 KiB records read in place against the ring size, one thread (ns per record, fastest of %d)\n\n", n);
    printf("| ring | straddling (split-copy copies) | mmkit, each | split-copy, each | split/mmkit "
           "| mmkit, batch API | split-copy, batch API | split/mmkit batch API |\n"
           "|---|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof rings / sizeof rings[0]; i++) {
        static const enum rimpl im[4] = {R_RING, R_SPLIT, R_RING_N, R_SPLIT_N};
        double v[4][64], o[4];
        uint64_t st = 0, cnt = O.quick ? 2000000 : 10000000;
        rec_ring = rings[i];
        for (int r = 0; r < n; r++)
            for (int j = 0; j < 4; j++) {
                uint64_t s1 = 0;
                v[j][r] = path_once(im[j], len, &s1);
                if (im[j] == R_SPLIT)
                    st = s1;
            }
        for (int j = 0; j < 4; j++) {
            bench_median(v[j], n); /* sorts */
            o[j] = v[j][0];
        }
        printf("| %zu KiB | 1 in %.0f | %.1f | %.1f | %.2fx | %.1f | %.1f | %.2fx |\n", rings[i] >> 10,
               st ? (double)cnt / (double)st : 0.0, o[0], o[1], o[1] / o[0], o[2], o[3], o[3] / o[2]);
    }
    rec_ring = RING_BYTES;
}

/* ---------------------------------------------------------------- main */

/* Beside the ratio of medians, the ratio of the best runs (the least
 * disturbed by the rest of the machine). On a shared machine a spinning
 * peer's median can collapse while its best does not: a target counts as
 * met only when both ratios reach it. */
static void verdict(const char *what, double ratio, double best, double target)
{
    if (isnan(ratio) || isnan(best)) { /* that table did not run (--only) */
        printf("| %s | - | - | %.2fx | not measured in this run |\n", what, target);
        return;
    }
    int m = ratio >= target, b = best >= target;
    printf("| %s | %.2fx | %.2fx | %.2fx | %s |\n", what, ratio, best, target,
           m && b ? "met" : m || b ? "unclear: median and best disagree" : "NOT met");
}

static int want(int argc, char **argv, const char *part)
{
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--only"))
            return !strcmp(argv[i + 1], part);
    return 1;
}

int main(int argc, char **argv)
{
    O = bench_parse(argc, argv); /* and --only streams|records|path|procs: one table */
    static const size_t sizes[] = {64, 1024, 65536};
    double ring[3] = {0}, pip[3] = {0}, split[3] = {0}, ringp[3] = {0}, pipp[3] = {0}, blk[3] = {0}, ringt[3] = {0};
    double ringB[3] = {0}, pipB[3] = {0}, blkB[3] = {0}, ringpB[3] = {0}, ringtB[3] = {0};

    printf("### ring: byte stream between two threads, 1 MiB ring (GB/s, median of %d)\n\n", O.runs);
    printf("| message | mmkit ring | pipe(2) 1 MiB | split-copy ring | ring/pipe | ring/split |\n");
    printf("|---|---|---|---|---|---|\n");
    bench_plot_meta("ring_stream", "Byte stream between two threads, 1 MiB ring",
                    "message size (bytes)", "GB/s", 1);
    for (int i = 0; i < 3 && want(argc, argv, "streams"); i++) {
        static const int im[4] = {RING, PIPE, SPLIT, RING_SPIN};
        double o[4], b[4];
        median_streams(im, 4, sizes[i], o, b);
        ring[i] = o[0], pip[i] = o[1], split[i] = o[2], blk[i] = o[3];
        ringB[i] = b[0], pipB[i] = b[1], blkB[i] = b[3];
        printf("| %zu B | %.2f | %.2f | %.2f | %.2fx | %.2fx |\n", sizes[i], ring[i], pip[i],
               split[i], ring[i] / pip[i], ring[i] / split[i]);
        bench_plot("ring_stream", "mmkit", (double)sizes[i], ring[i]);
        bench_plot("ring_stream", "pipe", (double)sizes[i], pip[i]);
        bench_plot("ring_stream", "split-copy", (double)sizes[i], split[i]);
    }

    static const size_t rlen[] = {64, 1024};
    /* rm/rB[impl][size]: median and best-run M records/s, indexed by enum rimpl */
    double rm[NRIMPL][2] = {{0}}, rB[NRIMPL][2] = {{0}};
    printf("\n### ring: records consumed in place between two threads (M records/s, median of %d)\n\n", O.runs);
    printf("Publishing: *each* makes every commit and release visible at once; *MMK_RING_BATCH*\n"
           "publishes every capacity/16 bytes (and when full/empty, before a wait); *batch API* is\n"
           "mmk_ring_rec_reserve_n/commit_n and peek_batch/release_n, up to %d records or %u KiB a\n"
           "call, one position store per call. The split-copy ring is the same ring, used the same way.\n\n", NB, NB_BYTES >> 10);
#ifndef MMK_HAVE_CK
    printf("skipped: ck_ring not installed (apt-get install libck-dev)\n\n");
#endif
    printf("| record | mmkit, each | split-copy, each | mmkit, MMK_RING_BATCH | split-copy, MMK_RING_BATCH "
           "| mmkit, MMK_RING_BATCH, spinning | mmkit, batch API | split-copy, batch API "
           "| ck_ring SPSC + pool (spins) |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    bench_plot_meta("ring_records", "Records between two threads, read in place",
                    "record size (bytes)", "M records/s", 1);
    for (int i = 0; i < 2 && want(argc, argv, "records"); i++) {
        static const enum rimpl im[NRIMPL] = {R_RING, R_SPLIT, R_RING_B, R_SPLIT_B, R_RING_BS,
                                              R_RING_N, R_SPLIT_N, R_CK};
#ifdef MMK_HAVE_CK
        int k = NRIMPL;
#else
        int k = NRIMPL - 1;
#endif
        double o[NRIMPL] = {0}, b[NRIMPL] = {0};
        median_recs(im, k, rlen[i], o, b);
        for (int j = 0; j < k; j++)
            rm[im[j]][i] = o[j], rB[im[j]][i] = b[j];
        bench_plot("ring_records", "mmkit", (double)rlen[i], rm[R_RING][i]);
        bench_plot("ring_records", "mmkit-batched", (double)rlen[i], rm[R_RING_B][i]);
        bench_plot("ring_records", "mmkit-batch-api", (double)rlen[i], rm[R_RING_N][i]);
        bench_plot("ring_records", "split-copy", (double)rlen[i], rm[R_SPLIT][i]);
        if (rm[R_CK][i] > 0)
            bench_plot("ring_records", "ck_ring", (double)rlen[i], rm[R_CK][i]);
        printf("| %zu B | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", rlen[i],
               rm[R_RING][i], rm[R_SPLIT][i], rm[R_RING_B][i], rm[R_SPLIT_B][i], rm[R_RING_BS][i],
               rm[R_RING_N][i], rm[R_SPLIT_N][i], rm[R_CK][i]);
    }
    printf("\nRatios of the medians above:\n\n"
           "| record | mmkit/split each | mmkit/split MMK_RING_BATCH | mmkit/split batch API "
           "| mmkit each/ck | mmkit MMK_RING_BATCH/ck | mmkit spinning/ck | mmkit batch API/ck |\n"
           "|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < 2 && want(argc, argv, "records"); i++) {
        double ck = rm[R_CK][i] > 0 ? rm[R_CK][i] : NAN;
        printf("| %zu B | %.2fx | %.2fx | %.2fx | %.2fx | %.2fx | %.2fx | %.2fx |\n", rlen[i],
               rm[R_RING][i] / rm[R_SPLIT][i], rm[R_RING_B][i] / rm[R_SPLIT_B][i],
               rm[R_RING_N][i] / rm[R_SPLIT_N][i], rm[R_RING][i] / ck, rm[R_RING_B][i] / ck,
               rm[R_RING_BS][i] / ck, rm[R_RING_N][i] / ck);
    }

    if (want(argc, argv, "path"))
        path_table();
    if (want(argc, argv, "straddle"))
        straddle_table();

    printf("\n### ring: the same byte stream between two processes (GB/s, median of %d)\n\n", O.runs);
    printf("| message | mmkit ring | pipe(2) | ring, threads (same rounds) | ring processes/threads | ring/pipe |\n|---|---|---|---|---|---|\n");
    for (int i = 1; i < 3 && want(argc, argv, "procs"); i++) {
        /* threads again, round-robin with processes, for a fair ratio */
        static const int im[3] = {RING | PROC, PIPE | PROC, RING};
        double o[3], b[3];
        median_streams(im, 3, sizes[i], o, b);
        ringp[i] = o[0], pipp[i] = o[1], ringt[i] = o[2];
        ringpB[i] = b[0], ringtB[i] = b[2];
        printf("| %zu B | %.2f | %.2f | %.2f | %.2f | %.2fx |\n", sizes[i], ringp[i], pipp[i],
               ringt[i], ringp[i] / ringt[i], ringp[i] / pipp[i]);
    }

    printf("\n### ring: blocking waits (futex, need-wakeup flag) against spinning (GB/s, median of %d)\n\n", O.runs);
    printf("| message | spinning | blocking | blocking/spinning |\n|---|---|---|---|\n");
    for (int i = 0; i < 3 && want(argc, argv, "streams"); i++) {
        printf("| %zu B | %.2f | %.2f | %.2f |\n", sizes[i], blk[i], ring[i], ring[i] / blk[i]);
    }

    printf("\n### ring: targets (median of %d; best: ratio of the fastest runs)\n\n"
           "| target | median | best | wanted | |\n|---|---|---|---|---|\n", O.runs);
    verdict("ring vs pipe(2), 64 KiB writes", ring[2] / pip[2], ringB[2] / pipB[2], 4.0);
    verdict("records in place vs split-copy, 1 KiB, each", rm[R_RING][1] / rm[R_SPLIT][1],
            rB[R_RING][1] / rB[R_SPLIT][1], 1.5);
    verdict("records in place vs split-copy, 1 KiB, MMK_RING_BATCH", rm[R_RING_B][1] / rm[R_SPLIT_B][1],
            rB[R_RING_B][1] / rB[R_SPLIT_B][1], 1.5);
    verdict("records in place vs split-copy, 1 KiB, batch API", rm[R_RING_N][1] / rm[R_SPLIT_N][1],
            rB[R_RING_N][1] / rB[R_SPLIT_N][1], 1.5);
#ifdef MMK_HAVE_CK
    verdict("records vs ck_ring, 64 B (records/s), each", rm[R_RING][0] / rm[R_CK][0],
            rB[R_RING][0] / rB[R_CK][0], 3.0);
    verdict("records vs ck_ring, 64 B (records/s), MMK_RING_BATCH", rm[R_RING_B][0] / rm[R_CK][0],
            rB[R_RING_B][0] / rB[R_CK][0], 3.0);
    verdict("records vs ck_ring, 64 B (records/s), MMK_RING_BATCH, spinning",
            rm[R_RING_BS][0] / rm[R_CK][0], rB[R_RING_BS][0] / rB[R_CK][0], 3.0);
    verdict("records vs ck_ring, 64 B (records/s), batch API", rm[R_RING_N][0] / rm[R_CK][0],
            rB[R_RING_N][0] / rB[R_CK][0], 3.0);
#endif
    verdict("processes vs threads, 64 KiB (within 10%)", ringp[2] / ringt[2], ringpB[2] / ringtB[2], 0.9);
    verdict("blocking vs spinning, 64 KiB", ring[2] / blk[2], ringB[2] / blkB[2], 0.7);
    verdict("blocking vs spinning, 1 KiB", ring[1] / blk[1], ringB[1] / blkB[1], 0.7);
    return 0;
}
