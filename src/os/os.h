/* The platform layer. Modules above it never test for the OS: everything
 * that differs between Linux, the BSDs, macOS and Windows lives behind these
 * functions (today: src/os/linux.c, which is also plain POSIX where it can
 * be). All return 0 / a count, or -errno. Arguments are already validated by
 * the caller (vm.c): page-aligned addresses, non-zero lengths. */
#ifndef MMK_OS_H
#define MMK_OS_H

#include <stddef.h>
#include <stdint.h>

size_t mmk__os_page_size(void);
size_t mmk__os_alloc_granularity(void);

/* PROT_NONE, not charged; aligned to `align` (>= page size, power of two). */
int mmk__os_reserve(size_t len, size_t align, void **out);
int mmk__os_commit(void *addr, size_t len);
int mmk__os_decommit(void *addr, size_t len);
int mmk__os_release(void *addr, size_t len);
int mmk__os_protect(void *addr, size_t len, unsigned mmk_prot);
int mmk__os_advise(void *addr, size_t len, int mmk_advice);
int mmk__os_resident(const void *addr, size_t len, size_t *bytes);

/* Map `len` bytes of fd at file offset `off`. With `fixed` non-NULL the
 * mapping replaces whatever is at fixed (it must lie in a reservation the
 * caller owns: MAP_FIXED over our own PROT_NONE range is race-free).
 * shared: MAP_SHARED, else MAP_PRIVATE. */
int mmk__os_map_fd(void *fixed, size_t len, unsigned mmk_prot, int shared, int fd,
                   uint64_t off, void **out);

/* Shared memory objects: `backend` is exactly one MMK_SHM_* bit (possibly
 * with MMK_SHM_HUGETLB). */
int mmk__os_shm_create(unsigned backend, const char *name, size_t size, int *fd);
int mmk__os_shm_seal(int fd, unsigned mmk_seals);
int mmk__os_shm_seals(int fd);

int mmk__os_hugepage_info(size_t *size, int *thp, size_t *hugetlb_free);

/* Fill buf with unpredictable bytes (getrandom, else /dev/urandom, else a
 * mix of time, pid and address). Never fails. */
void mmk__os_random(void *buf, size_t len);

/* Waiting and process liveness (src/os/linux_wait.c), for the ring.
 * futex_wait sleeps while *addr == val, at most timeout_ns (< 0: forever),
 * on a word that may be shared between processes: 0 (woken or spurious),
 * -EAGAIN (*addr != val), -ETIMEDOUT, -EINTR. futex_wake wakes all. */
int mmk__os_futex_wait(uint32_t *addr, uint32_t val, int64_t timeout_ns);
void mmk__os_futex_wake(uint32_t *addr);
uint64_t mmk__os_now_ns(void); /* monotonic */
/* Asymmetric barriers (membarrier(2)): register this process once, so that a
 * barrier issued by any process runs a full memory barrier on every CPU
 * currently running one of this process's threads; 0 or -errno (-ENOSYS
 * where the OS has none). membarrier issues it: 0 or -errno. */
int mmk__os_membarrier_register(void);
int mmk__os_membarrier(void);
int mmk__os_getpid(void);
/* A handle on process pid (a pidfd where the kernel has them; -1 means
 * "probe with kill(pid, 0)"). */
int mmk__os_pid_open(int pid);
int mmk__os_pid_exited(int handle, int pid); /* 1 when the process is gone */
void mmk__os_pid_close(int handle);
/* Liveness locks (src/os/linux_live.c), for the ring. reopen_private: a new
 * open file description of the object behind fd (read-only, close-on-exec;
 * -errno where /proc is missing or permission is refused). ofd_rdlock: a
 * non-blocking shared OFD lock on byte off (0, -EAGAIN when another
 * description holds a write lock there, -errno; -ENOTSUP without OFD
 * locks). ofd_held: 1 when a description other than fd's holds any lock on
 * byte off, 0 when none, -errno. pidns_id: this process's pid namespace
 * (an inode number), 0 when unknown. */
int mmk__os_reopen_private(int fd);
int mmk__os_ofd_rdlock(int fd, uint64_t off);
int mmk__os_ofd_held(int fd, uint64_t off);
uint32_t mmk__os_pidns_id(void);
/* eventfd (non-blocking, close-on-exec): create (fd or -errno), signal. */
int mmk__os_event_create(void);
void mmk__os_event_signal(int fd);
int mmk__os_dup(int fd); /* close-on-exec duplicate, or -errno */
void mmk__os_close(int fd);
/* Size of the object behind fd and its block size (the huge page size on
 * hugetlbfs). */
int mmk__os_fd_size(int fd, uint64_t *size, size_t *blksize);
/* The size of a regular file without asking for its timestamps. On Linux
 * 6.13+ a stat marks ctime as queried, and the next write then stamps (and
 * dirties) the inode: on ext4 without a journal every fdatasync of any file
 * whose inode shares that inode-table block pays one more write. */
int mmk__os_file_size(int fd, uint64_t *size);

#endif
