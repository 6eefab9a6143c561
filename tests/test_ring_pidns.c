// mmk-test: timeout=120
/* ring.h, peer death across pid namespaces, as between two containers that
 * share a ring over a Unix socket: the consumer runs in a new pid namespace
 * (unshare(CLONE_NEWPID), then fork: it is pid 1 there) in a freshly exec'd
 * program that receives the ring's fd with SCM_RIGHTS. The pid it stores in
 * the header means nothing here (pid 1 is our init, alive), so a pid-based
 * check never sees it die; the lock-based one must. Then the same with a
 * consumer that cannot take a lock (another uid, a POSIX shm object of mode
 * 0600): the pid fall-back must not trust a pid from another namespace, so
 * the wait is not cut short while the peer lives, and (documented limit)
 * its death is not seen either. Needs root or CAP_SYS_ADMIN: skips (77)
 * where unshare is refused. */
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

#define H_CONS_PID  400 /* layout version 3 (src/ring.c, struct ring_hdr) */
#define H_CONS_LIVE 416

static uint32_t hdr_word(mmk_ring *r, unsigned off)
{
    uint32_t v = 0;
    CHECK_EQ(pread(mmk_ring_fd(r), &v, 4, (off_t)(mmk_ring_capacity(r) + off)), 4);
    return v;
}

static void fill(mmk_ring *r)
{
    static char buf[4096];
    for (size_t left = mmk_ring_capacity(r); left; left -= sizeof buf)
        CHECK_EQ(mmk_ring_write(r, buf, sizeof buf, 0), (ssize_t)sizeof buf);
}

/* The exec'd peer: only the socket crosses exec. Takes the side `role`
 * ('p' producer, 'c' consumer, 'u' consumer under uid 65534), says so, and
 * waits to be killed. */
static int peer_main(int sock, char role)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (role == 'u' && (setgid(65534) || setuid(65534)))
        return 2;
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

/* Start a consumer in a new pid namespace; its pid (in ours) or 0 when the
 * sandbox refuses, with the reason in why. */
static pid_t spawn_in_pidns(int sock_peer, char role, char *why, size_t whylen, pid_t *mid)
{
    int rep[2];
    CHECK_EQ(pipe(rep), 0);
    fflush(NULL);
    pid_t m = fork();
    if (m == 0) {
        close(rep[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char msg[64];
        if (unshare(CLONE_NEWPID)) {
            int n = snprintf(msg, sizeof msg, "unshare(CLONE_NEWPID): %s", strerror(errno));
            if (write(rep[1], msg, (size_t)n + 1) < 0)
                _exit(3);
            _exit(77);
        }
        pid_t g = fork();
        if (g == 0) {
            char arg[16], r[2] = {role, 0};
            snprintf(arg, sizeof arg, "%d", dup(sock_peer)); /* without close-on-exec */
            execl("/proc/self/exe", "test_ring_pidns", "--peer", arg, r, (char *)NULL);
            _exit(127);
        }
        int n = snprintf(msg, sizeof msg, "%d", (int)g);
        if (g < 0 || write(rep[1], msg, (size_t)n + 1) < 0)
            _exit(4);
        int st;
        waitpid(g, &st, 0);
        _exit(0);
    }
    close(rep[1]);
    char msg[64] = {0};
    CHECK(read(rep[0], msg, sizeof msg - 1) > 0);
    close(rep[0]);
    *mid = m;
    if (msg[0] < '0' || msg[0] > '9') {
        snprintf(why, whylen, "%s", msg);
        waitpid(m, NULL, 0);
        return 0;
    }
    return (pid_t)atoi(msg);
}

/* 1 when the test ran, 0 when the sandbox refused (why says so). */
static int run(char role, char *why, size_t whylen)
{
    int fallback = role == 'u';
    mmk_ring *r;
    if (fallback)
        setenv("MMK_SHM_BACKEND", "posix", 1);
    int rc = mmk_ring_create(4096, 0, &r);
    unsetenv("MMK_SHM_BACKEND");
    if (rc) {
        snprintf(why, whylen, "no POSIX shm (%d)", rc);
        return 0;
    }
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    pid_t mid, pid = spawn_in_pidns(sv[1], role, why, whylen, &mid);
    close(sv[1]);
    if (!pid) {
        close(sv[0]);
        mmk_ring_destroy(r);
        return 0;
    }
    CHECK_OK(test_send_fds(sv[0], (int[]){mmk_ring_fd(r)}, 1));
    char c;
    CHECK_EQ(read(sv[0], &c, 1), 1);
    uint32_t hpid = hdr_word(r, H_CONS_PID), live = hdr_word(r, H_CONS_LIVE);
    printf("%s: consumer is pid %d here, wrote pid %u in the header, lock byte %u\n",
           fallback ? "pid namespace, no lock" : "pid namespace", (int)pid, hpid, live);
    CHECK(hpid != (uint32_t)pid);
    CHECK(fallback ? live == 0 : live != 0);
    fill(r);
    CHECK_EQ(mmk_ring_wait_writable(r, 1, 300), -ETIMEDOUT); /* alive: no false death */
    kill(pid, SIGKILL);
    double t0 = now_sec();
    rc = mmk_ring_wait_writable(r, 1, fallback ? 500 : 5000);
    double dt = now_sec() - t0;
    printf("  consumer killed: wait_writable %d after %.2f s\n", rc, dt);
    if (fallback) {
        CHECK_EQ(rc, -ETIMEDOUT); /* the documented limit: no lock, foreign pid */
    } else {
        CHECK_EQ(rc, -ECONNRESET);
        CHECK(dt < 2.0);
    }
    int st;
    CHECK_EQ(waitpid(mid, &st, 0), mid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(sv[0]);
    mmk_ring_destroy(r);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--peer"))
        return peer_main(atoi(argv[2]), argv[3][0]);
    char why[128] = "";
    if (!run('c', why, sizeof why)) {
        printf("ring_pidns: skipped: %s\n", why);
        return 77;
    }
    if (geteuid() != 0)
        printf("pid namespace, no lock: skipped (not root: cannot run the peer as another uid)\n");
    else if (!run('u', why, sizeof why))
        printf("pid namespace, no lock: skipped: %s\n", why);
    printf("ring_pidns: ok\n");
    return 0;
}
