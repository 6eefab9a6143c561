/* Platform layer: waiting on shared words, process liveness, eventfd.
 * Used by the ring for cross-process blocking. */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/eventfd.h>
#endif

#include "os.h"

int mmk__os_futex_wait(uint32_t *addr, uint32_t val, int64_t timeout_ns)
{
#ifdef __linux__
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tp = &ts;
    }
    /* No FUTEX_PRIVATE_FLAG: the word lives in memory shared between
     * processes, so the kernel must key the wait on the page, not the mm. */
    if (syscall(SYS_futex, addr, FUTEX_WAIT, val, tp, NULL, 0) == 0)
        return 0;
    return -errno;
#else
    (void)addr;
    (void)val;
    struct timespec ts = {0, timeout_ns < 0 || timeout_ns > 1000000 ? 1000000 : (long)timeout_ns};
    nanosleep(&ts, NULL);
    return 0;
#endif
}

void mmk__os_futex_wake(uint32_t *addr)
{
#ifdef __linux__
    syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#else
    (void)addr;
#endif
}

uint64_t mmk__os_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int mmk__os_getpid(void) { return (int)getpid(); }

#if defined(__linux__) && defined(SYS_membarrier)
#include <linux/membarrier.h>
static int membarrier_cmd(int cmd)
{
    return syscall(SYS_membarrier, cmd, 0, 0) == 0 ? 0 : -errno;
}
#endif

int mmk__os_membarrier_register(void)
{
#if defined(__linux__) && defined(SYS_membarrier)
    int q = (int)syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (q < 0)
        return -errno;
    if (!(q & MEMBARRIER_CMD_GLOBAL_EXPEDITED))
        return -ENOSYS;
    return membarrier_cmd(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED);
#else
    return -ENOSYS;
#endif
}

int mmk__os_membarrier(void)
{
#if defined(__linux__) && defined(SYS_membarrier)
    return membarrier_cmd(MEMBARRIER_CMD_GLOBAL_EXPEDITED);
#else
    return -ENOSYS;
#endif
}

int mmk__os_pid_open(int pid)
{
#if defined(__linux__) && defined(SYS_pidfd_open)
    long fd = syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
        fcntl((int)fd, F_SETFD, FD_CLOEXEC);
        return (int)fd;
    }
    if (errno == ESRCH)
        return -ESRCH;
#else
    (void)pid;
#endif
    return -1; /* no pidfd: probe with kill */
}

int mmk__os_pid_exited(int handle, int pid)
{
    if (handle >= 0) {
        /* A pidfd turns readable when the process exits, also while it is
         * a zombie nobody has reaped (kill(pid, 0) would still succeed). */
        struct pollfd p = {handle, POLLIN, 0};
        int n = poll(&p, 1, 0);
        return n > 0 && (p.revents & (POLLIN | POLLHUP));
    }
    return kill(pid, 0) != 0 && errno == ESRCH;
}

void mmk__os_pid_close(int handle)
{
    if (handle >= 0)
        close(handle);
}

int mmk__os_event_create(void)
{
#ifdef __linux__
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd >= 0 ? fd : -errno;
#else
    return -ENOTSUP;
#endif
}

void mmk__os_event_signal(int fd)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is saturated: it is readable anyway. */
    if (write(fd, &one, sizeof one) < 0)
        return;
}

int mmk__os_dup(int fd)
{
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    return d >= 0 ? d : -errno;
}

void mmk__os_close(int fd)
{
    if (fd >= 0)
        close(fd);
}

int mmk__os_fd_size(int fd, uint64_t *size, size_t *blksize)
{
    struct stat st;
    if (fstat(fd, &st))
        return -errno;
    *size = st.st_size > 0 ? (uint64_t)st.st_size : 0;
    *blksize = st.st_blksize > 0 ? (size_t)st.st_blksize : 0;
    return 0;
}

int mmk__os_file_size(int fd, uint64_t *size)
{
    /* lseek reads i_size only; our I/O is all pread/pwrite, so the offset it
     * moves is never used. */
    off_t end = lseek(fd, 0, SEEK_END);
    if (end >= 0) {
        *size = (uint64_t)end;
        return 0;
    }
    struct stat st; /* no SEEK_END here (procfs, some devices): what stat says */
    if (fstat(fd, &st))
        return -errno;
    *size = st.st_size > 0 ? (uint64_t)st.st_size : 0;
    return 0;
}
