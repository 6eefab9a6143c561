/* Tiny test helpers: CHECK macros that report file:line and exit 1, skip
 * with a reason (exit 77), a scale factor for slow builds, RSS readings,
 * and running a function in a child process. */
#ifndef MMK_TESTUTIL_H
#define MMK_TESTUTIL_H

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

/* Compare two integers and show both on failure. */
#define CHECK_EQ(a, b)                                                                   \
    do {                                                                                 \
        long long a_ = (long long)(a), b_ = (long long)(b);                              \
        if (a_ != b_) {                                                                  \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, %s == %lld\n", __FILE__, \
                    __LINE__, #a, a_, #b, b_);                                           \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

/* An mmkit call that must succeed (return >= 0). */
#define CHECK_OK(expr)                                                                   \
    do {                                                                                 \
        long long r_ = (long long)(expr);                                                \
        if (r_ < 0) {                                                                    \
            fprintf(stderr, "%s:%d: %s failed: %lld (%s)\n", __FILE__, __LINE__, #expr, r_, \
                    mmk_strerror((int)r_));                                              \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

static inline void skip(const char *why)
{
    printf("SKIP: %s\n", why);
    exit(77);
}

/* MMK_TEST_SCALE (default 1) shrinks iteration counts and durations under
 * sanitizers. */
static inline double test_scale(void)
{
    const char *s = getenv("MMK_TEST_SCALE");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

static inline long test_scaled(long n)
{
    long v = (long)((double)n * test_scale());
    return v > 0 ? v : 1;
}

static inline double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Resident set size in bytes from /proc/self/statm. */
static inline long rss_bytes(void)
{
    long size, res;
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &size, &res) != 2)
        res = -1;
    fclose(f);
    return res < 0 ? -1 : res * sysconf(_SC_PAGESIZE);
}

/* Run fn(arg) in a child; return its wait status. */
static inline int run_child(void (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return st;
}

static inline uint64_t test_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* A private temporary directory for the test's files (removed by the caller
 * with rm_rf or left for inspection on failure). */
static inline const char *test_tmpdir(void)
{
    static char dir[512];
    if (!dir[0]) {
        const char *b = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/mmkit-test-XXXXXX", b && *b ? b : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            exit(1);
        }
    }
    return dir;
}

static inline void rm_rf(const char *path)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", path);
}


/* Under a sanitizer, mmkit's SIGSEGV/SIGBUS handler must be the one that
 * runs (docs/guide-fault.md); the environment can still add options. Tests
 * that fault on purpose put MMK_TEST_FAULT_OPTIONS at file scope. */
#define MMK_TEST_FAULT_OPTIONS                                                                 \
    const char *__asan_default_options(void);                                                  \
    __attribute__((visibility("default"))) const char *__asan_default_options(void)            \
    {                                                                                          \
        return "allow_user_segv_handler=1:handle_segv=0:handle_sigbus=0";                      \
    }                                                                                          \
    const char *__tsan_default_options(void);                                                  \
    __attribute__((visibility("default"))) const char *__tsan_default_options(void)            \
    {                                                                                          \
        return "handle_segv=0:handle_sigbus=0";                                                \
    }

/* Pass n (at most 4) descriptors over a Unix socket with SCM_RIGHTS, one
 * byte of payload: 0 or -errno. */
static inline int test_send_fds(int sock, const int *fds, int n)
{
    char byte = 'f';
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(4 * sizeof(int))];
    } u;
    if (n < 1 || n > 4)
        return -EINVAL;
    memset(&u, 0, sizeof u);
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                       .msg_controllen = CMSG_SPACE((size_t)n * sizeof(int))};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN((size_t)n * sizeof(int));
    memcpy(CMSG_DATA(c), fds, (size_t)n * sizeof(int));
    return sendmsg(sock, &m, 0) == 1 ? 0 : -errno;
}

/* Receive exactly n descriptors sent by test_send_fds: 0, or -1. */
static inline int test_recv_fds(int sock, int *fds, int n)
{
    char byte;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(4 * sizeof(int))];
    } u;
    if (n < 1 || n > 4)
        return -1;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                       .msg_controllen = sizeof u.buf};
    if (recvmsg(sock, &m, 0) != 1)
        return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN((size_t)n * sizeof(int)))
        return -1;
    memcpy(fds, CMSG_DATA(c), (size_t)n * sizeof(int));
    return 0;
}

#endif
