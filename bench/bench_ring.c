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
    for (int j = 0; j < k; j++)
        out[j] = bench_median(v[j], n) / 1e9, best[j] = v[j][n - 1] / 1e9;
}

/* ------------------------------------------------------------ records */

enum rimpl { R_RING, R_SPLIT, R_CK, R_RING_B, R_SPLIT_B, R_RING_BS };
#define NRIMPL 6 /* R_RING_BS: batched and spinning like ck_ring */

struct recs {
    enum rimpl impl;
    size_t len;
    uint64_t count;
    mmk_ring *r;
    struct split s;
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
            }
            sum += p[0] + p[len - 1];
            mmk_ring_read_commit(x->r, sp8);
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
    return sum;
}

static void *rec_producer_thread(void *arg)
{
    rec_produce(arg);
    return NULL;
}

/* Records per second for one run. */
static double rec_once(enum rimpl impl, size_t len, uint64_t count)
{
    struct recs x = {impl, len, count, NULL, {0}};
    if (impl != R_CK) {
        int batch = impl == R_RING_B || impl == R_SPLIT_B || impl == R_RING_BS;
        if (mmk_ring_create(RING_BYTES, batch ? MMK_RING_BATCH : 0, &x.r))
            exit(2);
        if (impl == R_SPLIT || impl == R_SPLIT_B)
            split_init(&x.s, x.r);
    } else {
#ifdef MMK_HAVE_CK
        /* As many buffers in flight as the byte rings hold messages, at most
         * the slot count. */
        unsigned nb = (unsigned)(RING_BYTES / (len + 8));
        if (nb > CK_SLOTS - 1)
            nb = CK_SLOTS - 1;
        x.qb = calloc(CK_SLOTS, sizeof *x.qb);
        x.freeb = calloc(CK_SLOTS, sizeof *x.freeb);
        x.pool = aligned_alloc(64, (size_t)nb * ((len + 63) & ~(size_t)63));
        ck_ring_init(&x.q, CK_SLOTS);
        ck_ring_init(&x.freeq, CK_SLOTS);
        for (unsigned i = 0; i < nb; i++)
            ck_ring_enqueue_spsc(&x.freeq, x.freeb, x.pool + (size_t)i * ((len + 63) & ~(size_t)63));
#else
        return 0;
#endif
    }
    pthread_t t;
    double t0 = bench_now();
    pthread_create(&t, NULL, rec_producer_thread, &x);
    bench_keep(rec_consume(&x));
    pthread_join(t, NULL);
    double dt = bench_now() - t0;
    mmk_ring_destroy(x.r);
#ifdef MMK_HAVE_CK
    free(x.qb);
    free(x.freeb);
    free(x.pool);
#endif
    return (double)count / dt;
}

static void median_recs(const enum rimpl *impls, int k, size_t len, double *out, double *best)
{
    double v[NRIMPL][64];
    int n = O.runs < 64 ? O.runs : 64;
    uint64_t count = len <= 64 ? 8000000 : 2000000;
    if (O.quick)
        count /= 8;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++)
            v[j][i] = rec_once(impls[j], len, count);
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
 * consumes them, over and over; no other core, so no cache-line transfers
 * and little noise from the machine. Nanoseconds per record (both sides). */
static double path_once(enum rimpl impl, size_t len)
{
    const long n = O.quick ? 2000000 : 10000000, batch = 1000;
    uint64_t sum = 0;
    double t0 = 0;
    if (impl == R_CK) {
#ifdef MMK_HAVE_CK
        ck_ring_t q, f;
        ck_ring_buffer_t *qb = calloc(CK_SLOTS, sizeof *qb), *fb = calloc(CK_SLOTS, sizeof *fb);
        size_t sz = (len + 63) & ~(size_t)63;
        char *pool = aligned_alloc(64, (size_t)batch * sz);
        ck_ring_init(&q, CK_SLOTS);
        ck_ring_init(&f, CK_SLOTS);
        for (long i = 0; i < batch; i++)
            ck_ring_enqueue_spsc(&f, fb, pool + (size_t)i * sz);
        t0 = bench_now();
        for (long k = 0; k < n; k += batch) {
            for (long i = 0; i < batch; i++) {
                void *b = NULL;
                ck_ring_dequeue_spsc(&f, fb, &b);
                memset(b, (int)i, len);
                ck_ring_enqueue_spsc(&q, qb, b);
            }
            for (long i = 0; i < batch; i++) {
                void *b = NULL;
                ck_ring_dequeue_spsc(&q, qb, &b);
                sum += ((unsigned char *)b)[0] + ((unsigned char *)b)[len - 1];
                ck_ring_enqueue_spsc(&f, fb, b);
            }
        }
        double dt = bench_now() - t0;
        free(qb);
        free(fb);
        free(pool);
        bench_keep(sum);
        return dt / (double)n * 1e9;
#else
        return 0;
#endif
    }
    mmk_ring *r;
    if (mmk_ring_create(RING_BYTES, impl == R_RING_B ? MMK_RING_BATCH : 0, &r))
        exit(2);
    t0 = bench_now();
    for (long k = 0; k < n; k += batch) {
        for (long i = 0; i < batch; i++) {
            void *p;
            if (mmk_ring_rec_reserve(r, len, &p))
                exit(3);
            memset(p, (int)i, len);
            mmk_ring_rec_commit(r, len);
        }
        mmk_ring_write_flush(r);
        for (long i = 0; i < batch; i++) {
            const void *q;
            if (mmk_ring_rec_peek(r, &q) != (ssize_t)len)
                exit(3);
            sum += ((const unsigned char *)q)[0] + ((const unsigned char *)q)[len - 1];
            mmk_ring_rec_release(r);
        }
    }
    double dt = bench_now() - t0;
    mmk_ring_destroy(r);
    bench_keep(sum);
    return dt / (double)n * 1e9;
}

static void path_table(void)
{
    static const enum rimpl im[3] = {R_RING, R_RING_B, R_CK};
    double v[3][64], o[3];
    int n = O.runs < 64 ? O.runs : 64;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 3; j++)
            v[j][i] = path_once(im[j], 64);
    for (int j = 0; j < 3; j++)
        o[j] = bench_median(v[j], n);
    printf("\n### ring: one thread doing both sides, 64 B records (ns per record, median of %d)\n\n", n);
    printf("| mmkit records, each | mmkit records, batched | ck_ring SPSC + pool | mmkit/ck |\n"
           "|---|---|---|---|\n| %.1f | %.1f | %.1f | %.2fx the time |\n", o[0], o[1], o[2],
           o[2] > 0 ? o[0] / o[2] : 0);
}

/* ---------------------------------------------------------------- main */

/* Beside the ratio of medians, the ratio of the best runs (the least
 * disturbed by the rest of the machine). On a shared machine a spinning
 * peer's median can collapse while its best does not: a target counts as
 * met only when both ratios reach it. */
static void verdict(const char *what, double ratio, double best, double target)
{
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
    double rr[2] = {0}, rs[2] = {0}, rc[2] = {0}, rb[2] = {0}, rsb[2] = {0};
    double rrB[2] = {0}, rsB[2] = {0}, rcB[2] = {0}, rbB[2] = {0}, rsbB[2] = {0};
    double rbs[2] = {0}, rbsB[2] = {0};
    printf("\n### ring: records consumed in place between two threads (M records/s, median of %d)\n\n", O.runs);
    printf("Publishing: *each* makes every commit and release visible at once; *batched* is\n"
           "MMK_RING_BATCH (published every capacity/16 bytes, when full/empty, before a wait).\n"
           "The split-copy ring is the same ring with the same flag.\n\n");
#ifndef MMK_HAVE_CK
    printf("skipped: ck_ring not installed (apt-get install libck-dev)\n\n");
#endif
    printf("| record | mmkit, each | split-copy, each | mmkit, batched | split-copy, batched "
           "| mmkit, batched, spinning | ck_ring SPSC + pool (spins) "
           "| mmkit/split each | mmkit/split batched | mmkit/ck each | mmkit batched/ck | mmkit spinning/ck |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    bench_plot_meta("ring_records", "Records between two threads, read in place",
                    "record size (bytes)", "M records/s", 1);
    for (int i = 0; i < 2 && want(argc, argv, "records"); i++) {
#ifdef MMK_HAVE_CK
        static const enum rimpl im[NRIMPL] = {R_RING, R_SPLIT, R_RING_B, R_SPLIT_B, R_RING_BS, R_CK};
        int k = NRIMPL;
#else
        static const enum rimpl im[NRIMPL] = {R_RING, R_SPLIT, R_RING_B, R_SPLIT_B, R_RING_BS};
        int k = NRIMPL - 1;
#endif
        double o[NRIMPL] = {0}, b[NRIMPL] = {0};
        median_recs(im, k, rlen[i], o, b);
        rr[i] = o[0], rs[i] = o[1], rb[i] = o[2], rsb[i] = o[3], rbs[i] = o[4], rc[i] = o[5];
        rrB[i] = b[0], rsB[i] = b[1], rbB[i] = b[2], rsbB[i] = b[3], rbsB[i] = b[4], rcB[i] = b[5];
        bench_plot("ring_records", "mmkit", (double)rlen[i], rr[i]);
        bench_plot("ring_records", "mmkit-batched", (double)rlen[i], rb[i]);
        bench_plot("ring_records", "split-copy", (double)rlen[i], rs[i]);
        if (rc[i] > 0)
            bench_plot("ring_records", "ck_ring", (double)rlen[i], rc[i]);
        printf("| %zu B | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2fx | %.2fx | %.2fx | %.2fx | %.2fx |\n",
               rlen[i], rr[i], rs[i], rb[i], rsb[i], rbs[i], rc[i], rr[i] / rs[i], rb[i] / rsb[i],
               rc[i] > 0 ? rr[i] / rc[i] : 0, rc[i] > 0 ? rb[i] / rc[i] : 0,
               rc[i] > 0 ? rbs[i] / rc[i] : 0);
    }

    if (want(argc, argv, "path"))
        path_table();

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
    verdict("records in place vs split-copy, 1 KiB, each", rr[1] / rs[1], rrB[1] / rsB[1], 1.5);
    verdict("records in place vs split-copy, 1 KiB, batched", rb[1] / rsb[1], rbB[1] / rsbB[1], 1.5);
#ifdef MMK_HAVE_CK
    verdict("records vs ck_ring, 64 B (records/s), each", rr[0] / rc[0], rrB[0] / rcB[0], 3.0);
    verdict("records vs ck_ring, 64 B (records/s), batched", rb[0] / rc[0], rbB[0] / rcB[0], 3.0);
    verdict("records vs ck_ring, 64 B (records/s), batched, spinning", rbs[0] / rc[0], rbsB[0] / rcB[0], 3.0);
#endif
    verdict("processes vs threads, 64 KiB (within 10%)", ringp[2] / ringt[2], ringpB[2] / ringtB[2], 0.9);
    verdict("blocking vs spinning, 64 KiB", ring[2] / blk[2], ringB[2] / blkB[2], 0.7);
    verdict("blocking vs spinning, 1 KiB", ring[1] / blk[1], ringB[1] / blkB[1], 0.7);
    return 0;
}
