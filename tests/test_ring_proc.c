// mmk-test: timeout=300
/* ring.h between processes: a forked child using the inherited handle, a
 * forked child attaching by fd, an unrelated (exec'd) process that receives
 * the fd and an eventfd over a Unix socket (SCM_RIGHTS); 1 GiB (scaled)
 * checked byte for byte; fork semantics; peer death (kill -9) in both
 * directions must end the survivor's wait with -ECONNRESET, not a hang;
 * ping-pong between processes (every message a wake-up), also with a child
 * whose membarrier(2) is blocked by seccomp (the fall-back protocol). */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

#define PERIOD 65521u
static unsigned char *pat;

static void make_pattern(void)
{
    size_t n = PERIOD + (2u << 20);
    pat = malloc(n);
    uint64_t s = 0xfeedface;
    for (size_t i = 0; i < PERIOD; i++)
        pat[i] = (unsigned char)(test_rand(&s) >> 24);
    for (size_t i = PERIOD; i < n; i++)
        pat[i] = pat[i - PERIOD];
}

/* Producer: `total` bytes of the pattern in spans of varying size, blocking
 * when full, then close_write. 0 or an error code. */
static int produce(mmk_ring *r, uint64_t total)
{
    uint64_t pos = 0, seed = 77;
    while (pos < total) {
        void *w;
        ssize_t fr = mmk_ring_write_begin(r, &w);
        if (fr < 0)
            return (int)fr;
        if (fr == 0) {
            int rc = mmk_ring_wait_writable(r, 1, 10000);
            if (rc)
                return rc;
            continue;
        }
        size_t n = 1 + (size_t)(test_rand(&seed) % (uint64_t)fr);
        if (n > total - pos)
            n = (size_t)(total - pos);
        memcpy(w, pat + pos % PERIOD, n);
        int rc = mmk_ring_write_commit(r, n);
        if (rc)
            return rc;
        pos += n;
    }
    return mmk_ring_close_write(r);
}

/* Consumer: check every byte until end of stream; returns bytes or < 0. */
static int64_t consume(mmk_ring *r, int efd)
{
    uint64_t pos = 0;
    for (;;) {
        const void *s;
        ssize_t av = mmk_ring_read_begin(r, &s);
        if (av < 0)
            return av;
        if (av == 0) {
            if (efd >= 0 && mmk_ring_poll_prepare(r, MMK_RING_READABLE) == 0) {
                struct pollfd p = {efd, POLLIN, 0};
                if (poll(&p, 1, 10000) != 1)
                    return -ETIMEDOUT; /* lost wakeup */
                uint64_t c;
                if (read(efd, &c, 8) != 8)
                    return -EIO;
                continue;
            }
            int rc = mmk_ring_wait_readable(r, 1, 10000);
            if (rc == -EPIPE)
                return (int64_t)pos;
            if (rc)
                return rc;
            continue;
        }
        if (memcmp(s, pat + pos % PERIOD, (size_t)av))
            return -EILSEQ;
        int rc = mmk_ring_read_commit(r, (size_t)av);
        if (rc)
            return rc;
        pos += (uint64_t)av;
    }
}

static int exit_code(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st); }

/* A forked child consumes through the handle it inherited (fork semantics:
 * the mapping is shared, the child takes over the consumer side). */
static void test_fork_inherited(uint64_t total)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(1 << 20, 0, &r));
    fflush(NULL);
    double t0 = now_sec();
    pid_t pid = fork();
    if (pid == 0) {
        int64_t got = consume(r, -1);
        _exit(got == (int64_t)total ? 0 : 1);
    }
    CHECK_OK(produce(r, total));
    int st;
    waitpid(pid, &st, 0);
    CHECK_EQ(exit_code(st), 0);
    double dt = now_sec() - t0;
    printf("fork, inherited handle: %.0f MiB in %.2f s (%.2f GB/s)\n", (double)total / 1048576,
           dt, (double)total / dt / 1e9);
    mmk_ring_destroy(r);
}

/* A forked child attaches by fd and produces; the parent consumes. */
static void test_fork_attach(uint64_t total, unsigned flags)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(777 * 1024, MMK_RING_UNTRUSTED | flags, &r));
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        mmk_ring *c;
        if (mmk_ring_attach(mmk_ring_fd(r), MMK_RING_UNTRUSTED | flags, &c))
            _exit(2);
        int rc = produce(c, total);
        mmk_ring_destroy(c);
        _exit(rc ? 1 : 0);
    }
    int64_t got = consume(r, -1);
    CHECK_EQ(got, (int64_t)total);
    int st;
    waitpid(pid, &st, 0);
    CHECK_EQ(exit_code(st), 0);
    mmk_ring_destroy(r);
}

/* Batched records between processes: a forked child attaches (untrusting)
 * and produces with reserve_n/commit_n, the parent drains with peek_batch/
 * release_n; each record carries its number and a slice of the pattern. */
static void test_records_batched_proc(uint64_t count)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(64 * 1024, MMK_RING_UNTRUSTED, &r));
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        mmk_ring *c;
        if (mmk_ring_attach(mmk_ring_fd(r), MMK_RING_UNTRUSTED, &c))
            _exit(2);
        uint64_t s = 99, k = 0;
        void *w[32];
        while (k < count) {
            size_t len = 8 + (size_t)(test_rand(&s) % 500), max = 1 + (size_t)(test_rand(&s) % 32);
            if (max > count - k)
                max = (size_t)(count - k);
            ssize_t n;
            while ((n = mmk_ring_rec_reserve_n(c, len, max, w)) == -EAGAIN)
                if (mmk_ring_wait_writable(c, mmk_ring_record_space(len), 10000))
                    _exit(3);
            if (n <= 0)
                _exit(4);
            for (ssize_t i = 0; i < n; i++) {
                uint64_t seq = k + (uint64_t)i;
                memcpy(w[i], &seq, 8);
                memcpy((char *)w[i] + 8, pat + seq % PERIOD, len - 8);
            }
            if (mmk_ring_rec_commit_n(c, (size_t)n))
                _exit(5);
            k += (uint64_t)n;
        }
        mmk_ring_close_write(c);
        mmk_ring_destroy(c);
        _exit(0);
    }
    struct mmk_ring_rec out[64];
    uint64_t k = 0;
    int bad = 0;
    for (;;) {
        ssize_t n = mmk_ring_rec_peek_batch(r, out, 64);
        if (n == -EAGAIN) {
            int rc = mmk_ring_wait_readable(r, 8, 10000);
            if (rc == -EPIPE)
                break;
            CHECK_OK(rc);
            continue;
        }
        CHECK(n > 0);
        for (ssize_t i = 0; i < n; i++) {
            uint64_t seq;
            memcpy(&seq, out[i].data, 8);
            bad |= seq != k + (uint64_t)i || out[i].len < 8 ||
                   memcmp((const char *)out[i].data + 8, pat + seq % PERIOD, out[i].len - 8);
        }
        CHECK_OK(mmk_ring_rec_release_n(r, (size_t)n));
        k += (uint64_t)n;
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK_EQ(exit_code(st), 0);
    CHECK_EQ(bad, 0);
    CHECK_EQ(k, count);
    printf("batched records between processes: %llu checked\n", (unsigned long long)k);
    mmk_ring_destroy(r);
}

/* ----------------------------------------------------- SCM_RIGHTS, exec */

/* The exec'd process: nothing inherited but the socket. */
static int scm_child(int sock, uint64_t total)
{
    make_pattern();
    int got[2];
    if (test_recv_fds(sock, got, 2))
        return 3;
    int rfd = got[0], efd = got[1];
    mmk_ring *r;
    if (mmk_ring_attach(rfd, 0, &r))
        return 4;
    close(rfd);
    if (mmk_ring_set_eventfd(r, MMK_RING_READABLE, efd))
        return 5;
    close(efd);
    int rc = produce(r, total);
    mmk_ring_destroy(r);
    return rc ? 6 : 0;
}

static void test_scm_rights(const char *self, uint64_t total)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(256 * 1024, 0, &r));
    int efd = mmk_ring_eventfd(r, MMK_RING_READABLE);
    CHECK(efd >= 0);
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* An unrelated program image: only the socket crosses exec. */
        char fdarg[16], tot[32];
        int s = dup(sv[1]); /* without close-on-exec */
        snprintf(fdarg, sizeof fdarg, "%d", s);
        snprintf(tot, sizeof tot, "%llu", (unsigned long long)total);
        execl(self, self, "--scm-child", fdarg, tot, (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    CHECK_OK(test_send_fds(sv[0], (int[]){mmk_ring_fd(r), efd}, 2));
    /* Sleep in poll on the eventfd: the other process signals it. */
    int64_t got = consume(r, efd);
    CHECK_EQ(got, (int64_t)total);
    int st;
    waitpid(pid, &st, 0);
    CHECK_EQ(exit_code(st), 0);
    close(sv[0]);
    printf("SCM_RIGHTS + exec + eventfd: %llu bytes ok\n", (unsigned long long)total);
    mmk_ring_destroy(r);
}

/* ------------------------------------------------------------ peer death */

static void test_producer_killed(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(4096, 0, &r));
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        mmk_ring *c;
        if (mmk_ring_attach(mmk_ring_fd(r), 0, &c))
            _exit(2);
        mmk_ring_write(c, "last words", 10, -1);
        usleep(200000);
        kill(getpid(), SIGKILL); /* no destroy, no close_write */
        _exit(3);
    }
    char buf[16];
    CHECK_EQ(mmk_ring_read(r, buf, sizeof buf, 10000), 10); /* what it wrote still arrives */
    double t0 = now_sec();
    int rc = mmk_ring_wait_readable(r, 1, -1);
    double dt = now_sec() - t0;
    CHECK_EQ(rc, -ECONNRESET);
    CHECK(dt < 5.0);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    /* After reaping too (the pid is gone, not a zombie). */
    CHECK_EQ(mmk_ring_wait_readable(r, 1, -1), -ECONNRESET);
    printf("producer killed: reader woke with -ECONNRESET after %.2f s\n", dt);
    mmk_ring_destroy(r);
}

static void test_consumer_killed(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(4096, 0, &r));
    int sync[2];
    CHECK_EQ(pipe(sync), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        mmk_ring *c;
        if (mmk_ring_attach(mmk_ring_fd(r), 0, &c))
            _exit(2);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
        const void *s;
        mmk_ring_read_begin(c, &s); /* claims the consumer side */
        if (write(sync[1], "k", 1) != 1)
            _exit(4);
        pause(); /* the parent kills us */
        _exit(3);
    }
    char k;
    CHECK_EQ(read(sync[0], &k, 1), 1);
    static char buf[4096];
    CHECK_EQ(mmk_ring_write(r, buf, sizeof buf, 0), (ssize_t)sizeof buf);
    kill(pid, SIGKILL);
    double t0 = now_sec();
    CHECK_EQ(mmk_ring_wait_writable(r, 1, 20000), -ECONNRESET);
    CHECK(now_sec() - t0 < 5.0);
    CHECK_EQ(mmk_ring_write(r, buf, 1, 20000), -ECONNRESET);
    int st;
    waitpid(pid, &st, 0);
    close(sync[0]);
    close(sync[1]);
    mmk_ring_destroy(r);
}

/* Fork semantics: the child's destroy of an inherited handle marks only the
 * sides the child used; the parent's producer side is unaffected until the
 * child (the consumer) leaves, then writes get -EPIPE. */
static void test_fork_roles(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(4096, 0, &r));
    CHECK_EQ(mmk_ring_write(r, "before", 6, 0), 6);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        char b[16];
        ssize_t n = mmk_ring_read(r, b, 6, 5000);
        if (n != 6 || memcmp(b, "before", 6))
            _exit(1);
        n = mmk_ring_read(r, b, 5, 5000);
        if (n != 5 || memcmp(b, "after", 5))
            _exit(2);
        mmk_ring_destroy(r);
        _exit(0);
    }
    CHECK_EQ(mmk_ring_write(r, "after", 5, 0), 5);
    int st;
    waitpid(pid, &st, 0);
    CHECK_EQ(exit_code(st), 0);
    CHECK_EQ(mmk_ring_write(r, "x", 1, 1000), -EPIPE);
    mmk_ring_destroy(r);
}

/* ------------------------------------------------------- ping-pong */

/* Make membarrier(2) fail with ENOSYS in this process, as a container's
 * seccomp profile may. 0, or -1 where seccomp is unavailable. */
static int block_membarrier(void)
{
#if defined(__NR_membarrier) && defined(SECCOMP_MODE_FILTER)
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof f / sizeof f[0]), f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
        return -1;
    return syscall(__NR_membarrier, 0, 0, 0) == -1 && errno == ENOSYS ? 0 : -1;
#else
    return -1;
#endif
}

/* Every message needs a wake-up in the other process. A lost one shows as a
 * wait of a whole 100 ms slice; count those (the echoing child exits with
 * its count). With `seccomp` the child cannot issue membarrier: it must fall
 * back (need_fence in the header, 1 ms slices) and still lose nothing. */
static void test_pingpong_proc(int seccomp)
{
    mmk_ring *a, *b;
    CHECK_OK(mmk_ring_create(4096, 0, &a));
    CHECK_OK(mmk_ring_create(4096, 0, &b));
    long n = test_scaled(5000);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (seccomp && block_membarrier())
            _exit(77);
        int slow = 0;
        for (long i = 0; i < n; i++) {
            double t0 = now_sec();
            char c;
            if (mmk_ring_read(a, &c, 1, 10000) != 1 || c != (char)i)
                _exit(99);
            if (now_sec() - t0 > 0.09)
                slow++;
            if (mmk_ring_write(b, &c, 1, 10000) != 1)
                _exit(98);
        }
        _exit(slow > 50 ? 50 : slow);
    }
    long slow = 0;
    double t0 = now_sec();
    for (long i = 0; i < n; i++) {
        char c = (char)i;
        CHECK_EQ(mmk_ring_write(a, &c, 1, 10000), 1);
        double w0 = now_sec();
        CHECK_EQ(mmk_ring_read(b, &c, 1, 10000), 1);
        if (now_sec() - w0 > 0.09)
            slow++;
        CHECK_EQ(c, (char)i);
    }
    int st;
    waitpid(pid, &st, 0);
    int code = exit_code(st);
    if (code == 77) {
        printf("ping-pong between processes, membarrier blocked: skipped (no seccomp)\n");
    } else {
        CHECK(code <= 50);
        printf("ping-pong between processes%s: %ld round trips, %.1f us each, %ld waits took a "
               "whole slice\n", seccomp ? ", membarrier blocked in the child" : "", n,
               (now_sec() - t0) / (double)n * 1e6, slow + code);
        CHECK(slow + code <= 3 + n / 1000);
    }
    mmk_ring_destroy(a);
    mmk_ring_destroy(b);
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--scm-child"))
        return scm_child(atoi(argv[2]), strtoull(argv[3], NULL, 10));
    make_pattern();
    uint64_t gib = (uint64_t)test_scaled(1 << 30);
    test_fork_inherited(gib);
    test_fork_attach(gib / 4, 0);
    test_fork_attach(gib / 8, MMK_RING_BATCH);
    test_records_batched_proc((uint64_t)test_scaled(500000));
    test_pingpong_proc(0);
    test_pingpong_proc(1);
    test_scm_rights("/proc/self/exe", gib / 8);
    test_producer_killed();
    test_consumer_killed();
    test_fork_roles();
    printf("ring_proc: ok\n");
    return 0;
}
