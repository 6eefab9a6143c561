/* Platform layer for Linux (and, where the calls exist, other POSIX systems). */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/mman.h>
#include <sys/random.h>
#endif

#include <mmkit/vm.h>
#include "os.h"

#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

size_t mmk__os_page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

size_t mmk__os_alloc_granularity(void) { return mmk__os_page_size(); }

static int prot_of(unsigned p)
{
    int r = PROT_NONE;
    if (p & MMK_PROT_READ)
        r |= PROT_READ;
    if (p & MMK_PROT_WRITE)
        r |= PROT_WRITE;
    if (p & MMK_PROT_EXEC)
        r |= PROT_EXEC;
    return r;
}

int mmk__os_reserve(size_t len, size_t align, void **out)
{
    size_t page = mmk__os_page_size();
    size_t extra = align > page ? align : 0;
    if (len + extra < len)
        return -ENOMEM;
    void *p = mmap(NULL, len + extra, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    if (extra) {
        /* Over-reserve, then trim both ends to the alignment. */
        uintptr_t s = (uintptr_t)p, a = (s + align - 1) & ~(uintptr_t)(align - 1);
        if (a > s)
            munmap(p, a - s);
        size_t tail = (s + len + extra) - (a + len);
        if (tail)
            munmap((void *)(a + len), tail);
        p = (void *)a;
    }
    *out = p;
    return 0;
}

int mmk__os_commit(void *addr, size_t len)
{
    /* mprotect keeps MAP_NORESERVE, so committing charges nothing until
     * pages are touched; one call per step, not per page (max_map_count). */
    return mprotect(addr, len, PROT_READ | PROT_WRITE) ? -errno : 0;
}

int mmk__os_decommit(void *addr, size_t len)
{
    /* Replacing the range with a fresh PROT_NONE mapping frees the pages at
     * once (RSS falls) and lets the kernel merge it back with its neighbours. */
    void *p = mmap(addr, len, PROT_NONE,
                   MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? -errno : 0;
}

int mmk__os_release(void *addr, size_t len) { return munmap(addr, len) ? -errno : 0; }

int mmk__os_protect(void *addr, size_t len, unsigned p)
{
    return mprotect(addr, len, prot_of(p)) ? -errno : 0;
}

static const int advice_map[MMK_ADV_COUNT_] = {
    [MMK_ADV_NORMAL] = MADV_NORMAL,
    [MMK_ADV_RANDOM] = MADV_RANDOM,
    [MMK_ADV_SEQUENTIAL] = MADV_SEQUENTIAL,
    [MMK_ADV_WILLNEED] = MADV_WILLNEED,
    [MMK_ADV_DONTNEED] = MADV_DONTNEED,
#ifdef MADV_FREE
    [MMK_ADV_FREE] = MADV_FREE,
#else
    [MMK_ADV_FREE] = -1,
#endif
#ifdef MADV_REMOVE
    [MMK_ADV_REMOVE] = MADV_REMOVE,
#else
    [MMK_ADV_REMOVE] = -1,
#endif
#ifdef MADV_HUGEPAGE
    [MMK_ADV_HUGEPAGE] = MADV_HUGEPAGE,
    [MMK_ADV_NOHUGEPAGE] = MADV_NOHUGEPAGE,
#else
    [MMK_ADV_HUGEPAGE] = -1,
    [MMK_ADV_NOHUGEPAGE] = -1,
#endif
#ifdef MADV_MERGEABLE
    [MMK_ADV_MERGEABLE] = MADV_MERGEABLE,
    [MMK_ADV_UNMERGEABLE] = MADV_UNMERGEABLE,
#else
    [MMK_ADV_MERGEABLE] = -1,
    [MMK_ADV_UNMERGEABLE] = -1,
#endif
    /* Values from the kernel ABI, so older libc headers still get them. */
    [MMK_ADV_POPULATE_READ] = 22,
    [MMK_ADV_POPULATE_WRITE] = 23,
#ifdef MADV_DONTDUMP
    [MMK_ADV_DONTDUMP] = MADV_DONTDUMP,
    [MMK_ADV_DODUMP] = MADV_DODUMP,
#else
    [MMK_ADV_DONTDUMP] = -1,
    [MMK_ADV_DODUMP] = -1,
#endif
    [MMK_ADV_COLD] = 20,
    [MMK_ADV_PAGEOUT] = 21,
};

int mmk__os_advise(void *addr, size_t len, int advice)
{
    int a = advice_map[advice];
    if (a < 0)
        return -ENOTSUP;
    if (madvise(addr, len, a) == 0)
        return 0;
    int e = errno;
    /* An old kernel answers EINVAL to advice it does not know: report that
     * as unsupported. Probe with a valid one-page call to tell it from a
     * genuinely bad range. */
    if (e == EINVAL) {
        void *p = mmap(NULL, mmk__os_page_size(), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) {
            int ok = madvise(p, mmk__os_page_size(), a) == 0 || errno != EINVAL;
            munmap(p, mmk__os_page_size());
            if (!ok)
                return -ENOTSUP;
        }
    }
    return -e;
}

int mmk__os_resident(const void *addr, size_t len, size_t *bytes)
{
    size_t page = mmk__os_page_size(), pages = len / page, total = 0;
    unsigned char vec[4096];
    const char *p = addr;
    while (pages) {
        size_t n = pages < sizeof vec ? pages : sizeof vec;
        if (mincore((void *)p, n * page, vec))
            return -errno;
        for (size_t i = 0; i < n; i++)
            total += vec[i] & 1;
        p += n * page;
        pages -= n;
    }
    *bytes = total * page;
    return 0;
}

int mmk__os_map_fd(void *fixed, size_t len, unsigned p, int shared, int fd, uint64_t off,
                   void **out)
{
    int flags = (shared ? MAP_SHARED : MAP_PRIVATE) | (fixed ? MAP_FIXED : 0);
    void *m = mmap(fixed, len, prot_of(p), flags, fd, (off_t)off);
    if (m == MAP_FAILED)
        return -errno;
    *out = m;
    return 0;
}

void mmk__os_random(void *buf, size_t len)
{
    unsigned char *b = buf;
#ifdef __linux__
    while (len) {
        ssize_t n = getrandom(b, len, GRND_NONBLOCK);
        if (n <= 0)
            break;
        b += n;
        len -= (size_t)n;
    }
#endif
    if (!len)
        return;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        while (len) {
            ssize_t n = read(fd, b, len);
            if (n <= 0)
                break;
            b += n;
            len -= (size_t)n;
        }
        close(fd);
    }
    if (!len)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)getpid() ^
                 (uint64_t)(uintptr_t)buf;
    while (len--) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b++ = (unsigned char)x;
    }
}

/* ------------------------------------------------------------- shared memory */

static int shm_memfd(const char *name, unsigned huge, int *out)
{
#if defined(__linux__) && defined(MFD_CLOEXEC)
    unsigned fl = MFD_CLOEXEC | MFD_ALLOW_SEALING;
    if (huge) {
#ifdef MFD_HUGETLB
        fl = MFD_CLOEXEC | MFD_HUGETLB; /* hugetlbfs supports seals since 4.16 */
        fl |= MFD_ALLOW_SEALING;
#else
        return -ENOTSUP;
#endif
    }
    int fd = memfd_create(name ? name : "mmkit", fl);
    if (fd < 0 && huge && errno == EINVAL)
        fd = memfd_create(name ? name : "mmkit", fl & ~MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    *out = fd;
    return 0;
#else
    (void)name;
    (void)huge;
    (void)out;
    return -ENOTSUP;
#endif
}

static int shm_posix(int *out)
{
    for (int tries = 0; tries < 16; tries++) {
        unsigned char r[12];
        char nm[40];
        mmk__os_random(r, sizeof r);
        int k = snprintf(nm, sizeof nm, "/mmkit-");
        for (size_t i = 0; i < sizeof r; i++)
            k += snprintf(nm + k, sizeof nm - (size_t)k, "%02x", r[i]);
        int fd = shm_open(nm, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            shm_unlink(nm); /* nobody else can open it by name from now on */
            *out = fd;
            return 0;
        }
        if (errno != EEXIST)
            return -errno;
    }
    return -EEXIST;
}

static int shm_tmpfile(int *out)
{
    const char *dirs[3] = {"/dev/shm", getenv("TMPDIR"), "/tmp"};
    int err = -ENOENT;
    for (int i = 0; i < 3; i++) {
        if (!dirs[i] || !*dirs[i])
            continue;
#ifdef O_TMPFILE
        int fd = open(dirs[i], O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0) {
            *out = fd;
            return 0;
        }
#endif
        char path[4096];
        snprintf(path, sizeof path, "%s/mmkit-XXXXXX", dirs[i]);
        fd = mkostemp(path, O_CLOEXEC);
        if (fd >= 0) {
            unlink(path);
            *out = fd;
            return 0;
        }
        err = -errno;
    }
    return err;
}

int mmk__os_shm_create(unsigned backend, const char *name, size_t size, int *out)
{
    unsigned huge = backend & MMK_SHM_HUGETLB;
    int fd = -1, rc;
    switch (backend & ~MMK_SHM_HUGETLB) {
    case MMK_SHM_MEMFD:
        rc = shm_memfd(name, huge, &fd);
        break;
    case MMK_SHM_POSIX:
        rc = huge ? -ENOTSUP : shm_posix(&fd);
        break;
    case MMK_SHM_TMPFILE:
        rc = huge ? -ENOTSUP : shm_tmpfile(&fd);
        break;
    default:
        return -EINVAL;
    }
    if (rc)
        return rc;
    if (size && ftruncate(fd, (off_t)size)) {
        rc = -errno;
        close(fd);
        return rc;
    }
    *out = fd;
    return 0;
}

int mmk__os_shm_seal(int fd, unsigned s)
{
#ifdef F_ADD_SEALS
    int f = 0;
    if (s & MMK_SEAL_SHRINK)
        f |= F_SEAL_SHRINK;
    if (s & MMK_SEAL_GROW)
        f |= F_SEAL_GROW;
    if (s & MMK_SEAL_WRITE)
        f |= F_SEAL_WRITE;
#ifdef F_SEAL_FUTURE_WRITE
    if (s & MMK_SEAL_FUTURE_WRITE)
        f |= F_SEAL_FUTURE_WRITE;
#else
    if (s & MMK_SEAL_FUTURE_WRITE)
        return -ENOTSUP;
#endif
    if (s & MMK_SEAL_SEAL)
        f |= F_SEAL_SEAL;
    if (fcntl(fd, F_ADD_SEALS, f) == 0)
        return 0;
    int e = errno;
    /* EINVAL: the file system has no seals (a tmpfile on disk). A tmpfs file
     * not made by memfd_create(MFD_ALLOW_SEALING) carries F_SEAL_SEAL alone
     * from birth: it cannot be sealed either. */
    if (e == EINVAL || (e == EPERM && fcntl(fd, F_GET_SEALS) == F_SEAL_SEAL))
        return -ENOTSUP;
    return -e;
#else
    (void)fd;
    (void)s;
    return -ENOTSUP;
#endif
}

int mmk__os_shm_seals(int fd)
{
#ifdef F_GET_SEALS
    int f = fcntl(fd, F_GET_SEALS);
    if (f < 0)
        return errno == EINVAL ? -ENOTSUP : -errno;
    unsigned r = 0;
    if (f & F_SEAL_SHRINK)
        r |= MMK_SEAL_SHRINK;
    if (f & F_SEAL_GROW)
        r |= MMK_SEAL_GROW;
    if (f & F_SEAL_WRITE)
        r |= MMK_SEAL_WRITE;
#ifdef F_SEAL_FUTURE_WRITE
    if (f & F_SEAL_FUTURE_WRITE)
        r |= MMK_SEAL_FUTURE_WRITE;
#endif
    if (f & F_SEAL_SEAL)
        r |= MMK_SEAL_SEAL;
    return (int)r;
#else
    (void)fd;
    return -ENOTSUP;
#endif
}

static long read_long(const char *path, const char *key)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, f)) {
        if (!key) {
            v = strtol(line, NULL, 10);
            break;
        }
        size_t k = strlen(key);
        if (!strncmp(line, key, k)) {
            v = strtol(line + k, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

int mmk__os_hugepage_info(size_t *size, int *thp, size_t *free_pages)
{
    long pmd = read_long("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", NULL);
    long kb = read_long("/proc/meminfo", "Hugepagesize:");
    long fr = read_long("/proc/meminfo", "HugePages_Free:");
    *size = pmd > 0 ? (size_t)pmd : kb > 0 ? (size_t)kb * 1024 : 0;
    *free_pages = fr > 0 ? (size_t)fr : 0;
    *thp = -1;
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
    if (f) {
        char line[128];
        if (fgets(line, sizeof line, f)) {
            if (strstr(line, "[always]"))
                *thp = 2;
            else if (strstr(line, "[madvise]"))
                *thp = 1;
            else if (strstr(line, "[never]"))
                *thp = 0;
        }
        fclose(f);
    }
    return *size ? 0 : -ENOTSUP;
}
