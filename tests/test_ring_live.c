// mmk-test: labels=concurrent timeout=120
/* ring.h, peer death: how a waiter learns that the process on the other side
 * died (kill -9, no destroy). Each side holds an OFD lock through an open
 * file description of its own; the waiter asks the kernel whether it is
 * still held (src/ring.c, "liveness"). Covered here: a forked peer (by
 * attach and through the inherited handle), a side handed on to a forked
 * child while the parent lives on, a bystander child that never touches the
 * ring (its inherited descriptors must not keep the dead parent's lock), an
 * unrelated exec'd peer that got the fd over a Unix socket, a peer whose pid
 * in the header is wrong (the lock decides, not the pid), a side nobody has
 * claimed yet (not dead), and the pid fall-back when the peer cannot take a
 * lock (a POSIX shm object it may not reopen). The pid namespace case is in
 * test_ring_pidns.c. */
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

/* Header words of layout version 3 (src/ring.c, struct ring_hdr), read from
 * the object to see which check a side set up; the header follows the data. */
#define H_CONS_PID  400
#define H_PROD_LIVE 412
#define H_CONS_LIVE 416

static uint32_t hdr_word(mmk_ring *r, unsigned off)
{
    uint32_t v = 0;
    CHECK_EQ(pread(mmk_ring_fd(r), &v, 4, (off_t)(mmk_ring_capacity(r) + off)), 4);
    return v;
}

static void fill(mmk_ring *r)
{
    static char buf[1 << 16];
    size_t cap = mmk_ring_capacity(r);
    while (cap) {
        size_t k = cap < sizeof buf ? cap : sizeof buf;
        CHECK_EQ(mmk_ring_write(r, buf, k, 0), (ssize_t)k);
        cap -= k;
    }
}

/* The survivor's wait must end with -ECONNRESET, soon. */
static void expect_reset_writable(mmk_ring *r, const char *what)
{
    double t0 = now_sec();
    int rc = mmk_ring_wait_writable(r, 1, 5000);
    double dt = now_sec() - t0;
    if (rc != -ECONNRESET)
        fprintf(stderr, "%s: wait_writable returned %d after %.2f s\n", what, rc, dt);
    CHECK_EQ(rc, -ECONNRESET);
    CHECK(dt < 2.0);
    printf("%s: -ECONNRESET after %.2f s\n", what, dt);
}

static void expect_reset_readable(mmk_ring *r, const char *what)
{
    double t0 = now_sec();
    int rc = mmk_ring_wait_readable(r, 1, 5000);
    double dt = now_sec() - t0;
    if (rc != -ECONNRESET)
        fprintf(stderr, "%s: wait_readable returned %d after %.2f s\n", what, rc, dt);
    CHECK_EQ(rc, -ECONNRESET);
    CHECK(dt < 2.0);
    printf("%s: -ECONNRESET after %.2f s\n", what, dt);
}

/* A live peer is not declared dead: the wait runs into its timeout. */
static void expect_alive_writable(mmk_ring *r)
{
    CHECK_EQ(mmk_ring_wait_writable(r, 1, 250), -ETIMEDOUT);
}

static void signal_ready(int fd)
{
    if (write(fd, "r", 1) != 1)
        _exit(90);
}

static void wait_ready(int fd)
{
    char c;
    CHECK_EQ(read(fd, &c, 1), 1);
}

static void reap(pid_t pid)
{
    int st;
    CHECK_EQ(waitpid(pid, &st, 0), pid);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

/* ------------------------------------------------------------------ fork */

/* A forked consumer (attached by fd, or through the inherited handle) is
 * killed while the parent waits for space. */
static void test_fork_consumer(int inherited)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(4096, 0, &r));
    int sync[2];
    CHECK_EQ(pipe(sync), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        mmk_ring *c = r;
        if (!inherited && mmk_ring_attach(mmk_ring_fd(r), 0, &c))
            _exit(2);
        const void *s;
        mmk_ring_read_begin(c, &s); /* claims the consumer side */
        signal_ready(sync[1]);
        pause();
        _exit(3);
    }
    wait_ready(sync[0]);
    CHECK(hdr_word(r, H_CONS_LIVE) != 0); /* the child took a lock */
    fill(r);
    expect_alive_writable(r);
    kill(pid, SIGKILL);
    expect_reset_writable(r, inherited ? "fork, inherited handle, consumer killed"
                                       : "fork, attached, consumer killed");
    reap(pid);
    /* Reaped: still dead, and a 1 ms wait is enough to see it (ring.h
     * tells event loops to do that). */
    CHECK_EQ(mmk_ring_wait_writable(r, 1, 1), -ECONNRESET);
    close(sync[0]);
    close(sync[1]);
    mmk_ring_destroy(r);
}

/* The producer forks a child that never uses the ring and lives on; then
 * the producer is killed. The child's copies of the producer's descriptors
 * must not keep the producer's lock (the fork handler closes them). */
static void test_bystander_child(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(4096, 0, &r));
    int sync[2];
    CHECK_EQ(pipe(sync), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (mmk_ring_write(r, "x", 1, 0) != 1) /* claims the producer side */
            _exit(2);
        pid_t by = fork();
        if (by == 0) {
            alarm(20); /* outlives the producer; the test kills it, else this */
            for (;;)
                pause();
        }
        char msg[16];
        int n = snprintf(msg, sizeof msg, "%d", (int)by);
        if (write(sync[1], msg, (size_t)n + 1) != n + 1)
            _exit(4);
        pause();
        _exit(3);
    }
    char msg[16] = {0};
    CHECK(read(sync[0], msg, sizeof msg) > 0);
    pid_t by = (pid_t)atoi(msg);
    CHECK(by > 0);
    char c;
    CHECK_EQ(mmk_ring_read(r, &c, 1, 5000), 1);
    kill(pid, SIGKILL);
    double t0 = now_sec();
    int rc = mmk_ring_wait_readable(r, 1, 5000);
    double dt = now_sec() - t0;
    int bystander_alive = kill(by, 0) == 0;
    printf("producer killed, its bystander child alive (%s): wait_readable %d after %.2f s\n",
           bystander_alive ? "yes" : "no", rc, dt);
    CHECK(bystander_alive);
    CHECK_EQ(rc, -ECONNRESET);
    CHECK(dt < 2.0);
    reap(pid);
    kill(by, SIGKILL);
    close(sync[0]);
    close(sync[1]);
    mmk_ring_destroy(r);
}

/* The consumer side moves to a forked child (inherited handle) while the
 * parent, which consumed before, lives on; the child is killed. The
 * parent's own, older lock for that side must not make it look alive. */
static void test_side_moves_to_child(void)
{
    mmk_ring *cons, *prod;
    CHECK_OK(mmk_ring_create(4096, 0, &cons));
    CHECK_OK(mmk_ring_attach(mmk_ring_fd(cons), 0, &prod));
    CHECK_EQ(mmk_ring_write(prod, "ab", 2, 0), 2);
    char b[2];
    CHECK_EQ(mmk_ring_read(cons, b, 1, 0), 1); /* the parent consumes first */
    uint32_t before = hdr_word(cons, H_CONS_LIVE);
    CHECK(before != 0);
    int sync[2];
    CHECK_EQ(pipe(sync), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (mmk_ring_read(cons, b, 1, 5000) != 1 || b[0] != 'b')
            _exit(2);
        signal_ready(sync[1]);
        pause();
        _exit(3);
    }
    wait_ready(sync[0]);
    CHECK(hdr_word(cons, H_CONS_LIVE) != before); /* the child's own lock byte */
    fill(prod);
    expect_alive_writable(prod);
    kill(pid, SIGKILL);
    expect_reset_writable(prod, "side handed to a child, child killed, parent alive");
    reap(pid);
    close(sync[0]);
    close(sync[1]);
    mmk_ring_destroy(prod);
    mmk_ring_destroy(cons);
}

/* ------------------------------------------------ SCM_RIGHTS, exec'd peer */

/* The exec'd peer: only the socket crosses exec. Takes the side `role`
 * ('p' producer, 'c' consumer), says so, and waits to be killed. */
static int peer_main(int sock, char role)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd;
    if (test_recv_fds(sock, &fd, 1))
        return 3;
    mmk_ring *r;
    if (mmk_ring_attach(fd, 0, &r))
        return 4;
    close(fd);
    if (role == 'p') {
        if (mmk_ring_write(r, "hi", 2, 0) != 2)
            return 5;
    } else {
        const void *s;
        mmk_ring_read_begin(r, &s);
    }
    if (write(sock, "r", 1) != 1)
        return 6;
    pause();
    return 7;
}

static void test_scm_producer(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(4096, 0, &r));
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        char arg[16];
        snprintf(arg, sizeof arg, "%d", dup(sv[1])); /* without close-on-exec */
        execl("/proc/self/exe", "test_ring_live", "--peer", arg, "p", (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    CHECK_OK(test_send_fds(sv[0], (int[]){mmk_ring_fd(r)}, 1));
    wait_ready(sv[0]);
    CHECK(hdr_word(r, H_PROD_LIVE) != 0);
    char b[2];
    CHECK_EQ(mmk_ring_read(r, b, 2, 5000), 2);
    CHECK_EQ(mmk_ring_wait_readable(r, 1, 250), -ETIMEDOUT); /* alive */
    kill(pid, SIGKILL);
    expect_reset_readable(r, "SCM_RIGHTS to an exec'd producer, killed");
    reap(pid);
    close(sv[0]);
    mmk_ring_destroy(r);
}

/* ------------------------------------------------- the lock, not the pid */

/* The consumer's pid in the header is overwritten with the pid of a process
 * that is gone (what a confused or hostile writer could do). The consumer
 * holds its lock, so it is alive; once killed it is dead whatever the pid
 * says. A pid-based check gets the first answer wrong. */
static void test_pid_is_not_trusted(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(4096, 0, &r));
    pid_t gone = fork();
    if (gone == 0)
        _exit(0);
    CHECK_EQ(waitpid(gone, NULL, 0), gone);
    int sync[2];
    CHECK_EQ(pipe(sync), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        mmk_ring *c;
        if (mmk_ring_attach(mmk_ring_fd(r), 0, &c))
            _exit(2);
        const void *s;
        mmk_ring_read_begin(c, &s);
        signal_ready(sync[1]);
        pause();
        _exit(3);
    }
    wait_ready(sync[0]);
    int32_t fake = (int32_t)gone;
    CHECK_EQ(pwrite(mmk_ring_fd(r), &fake, 4, (off_t)(mmk_ring_capacity(r) + H_CONS_PID)), 4);
    fill(r);
    expect_alive_writable(r);
    kill(pid, SIGKILL);
    expect_reset_writable(r, "pid in the header wrong, consumer killed");
    reap(pid);
    close(sync[0]);
    close(sync[1]);
    mmk_ring_destroy(r);
}

/* Nobody ever took the consumer side: not dead, not started. */
static void test_not_started(void)
{
    mmk_ring *r;
    CHECK_OK(mmk_ring_create(4096, 0, &r));
    fill(r);
    CHECK_EQ(mmk_ring_wait_writable(r, 1, 300), -ETIMEDOUT);
    mmk_ring *p;
    CHECK_OK(mmk_ring_create(4096, 0, &p));
    CHECK_EQ(mmk_ring_wait_readable(p, 1, 300), -ETIMEDOUT);
    mmk_ring_destroy(p);
    mmk_ring_destroy(r);
}

/* ----------------------------------------------------- the pid fall-back */

/* A POSIX shm object (mode 0600, ours) and a consumer under another uid:
 * it can map the descriptor it inherited but not reopen the object, so it
 * takes no lock and the waiter falls back to its pid. Needs root (to change
 * uid) and a shm backend. */
static void test_pid_fallback(void)
{
    if (geteuid() != 0) {
        printf("pid fall-back: skipped (not root: cannot run the peer as another uid)\n");
        return;
    }
    setenv("MMK_SHM_BACKEND", "posix", 1);
    mmk_ring *r;
    int rc = mmk_ring_create(4096, 0, &r);
    unsetenv("MMK_SHM_BACKEND");
    if (rc) {
        printf("pid fall-back: skipped (no POSIX shm: %d)\n", rc);
        return;
    }
    int sync[2];
    CHECK_EQ(pipe(sync), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (setgid(65534) || setuid(65534))
            _exit(2);
        mmk_ring *c;
        if (mmk_ring_attach(mmk_ring_fd(r), 0, &c))
            _exit(4);
        const void *s;
        mmk_ring_read_begin(c, &s);
        signal_ready(sync[1]);
        pause();
        _exit(3);
    }
    wait_ready(sync[0]);
    CHECK_EQ(hdr_word(r, H_CONS_LIVE), 0); /* no lock: the pid is what we have */
    CHECK_EQ(hdr_word(r, H_CONS_PID), (uint32_t)pid);
    fill(r);
    expect_alive_writable(r);
    kill(pid, SIGKILL);
    expect_reset_writable(r, "pid fall-back (peer could not reopen), consumer killed");
    reap(pid);
    close(sync[0]);
    close(sync[1]);
    mmk_ring_destroy(r);
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--peer"))
        return peer_main(atoi(argv[2]), argv[3][0]);
    test_not_started();
    test_fork_consumer(0);
    test_fork_consumer(1);
    test_side_moves_to_child();
    test_bystander_child();
    test_scm_producer();
    test_pid_is_not_trusted();
    test_pid_fallback();
    printf("ring_live: ok\n");
    return 0;
}
