/* mmk pipe: stdin to stdout through a magic ring, one thread reading and one
 * writing, so a bursty producer and a slow consumer stop stalling each
 * other (like mbuffer). read(2) lands directly in the ring and write(2)
 * leaves from it: no copy in between. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mmkit/ring.h>
#include "mmk.h"

static const char pipe_usage[] =
    "usage: mmk pipe [-s SIZE] [-p] [-q]\n"
    "\n"
    "Copy stdin to stdout through a double-mapped ring buffer, with a reader and\n"
    "a writer thread. Byte-exact.\n"
    "\n"
    "  -s SIZE   ring size (default 4M; suffixes K, M, G; rounded up to pages)\n"
    "  -p        show progress on stderr: bytes, rate, and percent and time left\n"
    "            when the input is a regular file (default when stderr is a terminal)\n"
    "  -q        no progress, even on a terminal\n"
    "\n"
    "Exit status: 0 done, 1 read or write error (e.g. stdout closed), 2 bad usage.\n";

#define CHUNK ((size_t)128 << 10)

struct pipe_state {
    mmk_ring *r;
    int in_err;       /* errno of a failed read, 0 if none */
    size_t chunk;
};

/* stdin -> ring: read(2) straight into the free span. */
static void *reader(void *arg)
{
    struct pipe_state *st = arg;
    for (;;) {
        void *span;
        ssize_t fr = mmk_ring_write_begin(st->r, &span);
        if (fr < 0)
            break; /* the writer gave up (-EPIPE) */
        if (fr == 0) {
            if (mmk_ring_wait_writable(st->r, st->chunk, -1))
                break;
            continue;
        }
        size_t want = (size_t)fr < st->chunk ? (size_t)fr : st->chunk;
        ssize_t n = read(0, span, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n < 0)
                st->in_err = errno;
            break;
        }
        mmk_ring_write_commit(st->r, (size_t)n);
    }
    mmk_ring_close_write(st->r);
    return NULL;
}

struct progress {
    int on, tty;
    uint64_t total; /* 0: unknown */
    double t0, last;
};

static void show(struct progress *p, uint64_t done, int final)
{
    double now = mmk_now();
    if (!p->on || (!final && now - p->last < (p->tty ? 0.25 : 1.0)))
        return;
    p->last = now;
    double el = now - p->t0 > 1e-9 ? now - p->t0 : 1e-9;
    double rate = (double)done / el;
    char b1[32], b2[32], line[160];
    int k = snprintf(line, sizeof line, "%10s  %10s", mmk_fmt_bytes((double)done, b1, sizeof b1),
                     mmk_fmt_rate(rate, b2, sizeof b2));
    if (p->total) {
        double frac = (double)done / (double)p->total;
        if (frac > 1)
            frac = 1;
        if (final) {
            snprintf(line + k, sizeof line - (size_t)k, "  %3.0f%%  in %.1f s", frac * 100, el);
        } else {
            double eta = rate > 0 ? (double)(p->total - (done < p->total ? done : p->total)) / rate : 0;
            snprintf(line + k, sizeof line - (size_t)k, "  %3.0f%%  ETA %d:%02d", frac * 100,
                     (int)eta / 60, (int)eta % 60);
        }
    } else if (final) {
        snprintf(line + k, sizeof line - (size_t)k, "  in %.1f s", el);
    }
    fprintf(stderr, p->tty ? "\r%-60s%s" : "%s%s\n", line, p->tty && final ? "\n" : "");
    fflush(stderr);
}

int mmk_cmd_pipe(int argc, char **argv)
{
    uint64_t size = 4u << 20;
    int prog = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(pipe_usage, stdout);
            return 0;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--progress")) {
            prog = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            prog = 0;
        } else if (!strcmp(a, "-s") || !strcmp(a, "--size")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "mmk pipe: %s needs a size (e.g. 64M)\n", a);
                return 2;
            }
            val = argv[++i];
        } else if (!strncmp(a, "-s", 2)) {
            val = a + 2;
        } else if (!strncmp(a, "--size=", 7)) {
            val = a + 7;
        } else {
            fprintf(stderr, "mmk pipe: unknown option '%s' (try --help)\n", a);
            return 2;
        }
        if (val && (mmk_parse_size(val, &size) || size == 0 || size > ((uint64_t)1 << 40))) {
            fprintf(stderr, "mmk pipe: bad size '%s' (want e.g. 4096, 64K, 16M, 1G)\n", val);
            return 2;
        }
    }
    /* A closed stdout must give an error message and exit 1, not a silent
     * death by SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);

    struct progress p = {0};
    p.tty = isatty(2);
    p.on = prog < 0 ? p.tty : prog;
    struct stat sb;
    if (fstat(0, &sb) == 0 && S_ISREG(sb.st_mode)) {
        off_t cur = lseek(0, 0, SEEK_CUR);
        p.total = (uint64_t)sb.st_size - (uint64_t)(cur > 0 && cur < sb.st_size ? cur : 0);
    }

    struct pipe_state st = {0};
    int rc = mmk_ring_create((size_t)size, 0, &st.r);
    if (rc) {
        fprintf(stderr, "mmk pipe: cannot create a ring of %llu bytes: %s\n",
                (unsigned long long)size, mmk_strerror(rc));
        return 1;
    }
    size_t cap = mmk_ring_capacity(st.r);
    /* Move at most 128 KiB per system call, like cat: what one side just
     * wrote is still in cache when the other copies it out. */
    st.chunk = cap / 4 < CHUNK ? (cap / 4 ? cap / 4 : cap) : CHUNK;
    pthread_t th;
    if (pthread_create(&th, NULL, reader, &st)) {
        fprintf(stderr, "mmk pipe: cannot start the reader thread\n");
        mmk_ring_destroy(st.r);
        return 1;
    }
    p.t0 = p.last = mmk_now();
    uint64_t done = 0;
    int out_err = 0;
    for (;;) {
        const void *span;
        ssize_t av = mmk_ring_read_begin(st.r, &span);
        if (av == 0) {
            int w = mmk_ring_wait_readable(st.r, 1, p.on ? 250 : -1);
            if (w == -EPIPE)
                break;
            show(&p, done, 0);
            continue;
        }
        if (av < 0) {
            out_err = (int)-av;
            break;
        }
        /* Short writes and EINTR: keep going until the span is out. */
        ssize_t n = write(1, span, (size_t)av < st.chunk ? (size_t)av : st.chunk);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) { /* a non-blocking stdout: wait until it drains */
                struct pollfd pf = {1, POLLOUT, 0};
                poll(&pf, 1, 1000);
                continue;
            }
            out_err = errno;
            break;
        }
        mmk_ring_read_commit(st.r, (size_t)n);
        done += (uint64_t)n;
        show(&p, done, 0);
    }
    show(&p, done, 1);
    if (out_err) {
        fprintf(stderr, "mmk pipe: write error after %llu bytes: %s\n", (unsigned long long)done,
                strerror(out_err));
        /* The reader may sit in read(2) on a terminal: do not wait for it. */
        fflush(NULL);
        _exit(1);
    }
    pthread_join(th, NULL);
    mmk_ring_destroy(st.r);
    if (st.in_err) {
        fprintf(stderr, "mmk pipe: read error after %llu bytes: %s\n", (unsigned long long)done,
                strerror(st.in_err));
        return 1;
    }
    return 0;
}
