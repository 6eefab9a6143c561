/* vm.h: every function, its error paths, and what it costs in memory. */
#include <fcntl.h>
#include <setjmp.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

static void test_errors(void)
{
    void *p = NULL;
    size_t n;
    CHECK(mmk_page_size() >= 4096 && (mmk_page_size() & (mmk_page_size() - 1)) == 0);
    CHECK(mmk_alloc_granularity() >= mmk_page_size());
    CHECK_EQ(mmk_reserve(0, &p), -EINVAL);
    CHECK_EQ(mmk_reserve(4096, NULL), -EINVAL);
    CHECK_EQ(mmk_reserve_aligned(4096, 3000, &p), -EINVAL);
    CHECK(mmk_reserve(SIZE_MAX, &p) < 0);
    CHECK(mmk_reserve((size_t)1 << 62, &p) == -ENOMEM);
    CHECK_EQ(mmk_commit(NULL, 4096), -EINVAL);
    CHECK_EQ(mmk_commit((void *)1, 4096), -EINVAL);
    CHECK_EQ(mmk_decommit(NULL, 4096), -EINVAL);
    CHECK_EQ(mmk_release(NULL, 4096), -EINVAL);
    CHECK_EQ(mmk_protect(NULL, 4096, MMK_PROT_READ), -EINVAL);
    CHECK_EQ(mmk_advise(NULL, 4096, MMK_ADV_WILLNEED), -EINVAL);
    CHECK_EQ(mmk_resident(NULL, 4096, &n), -EINVAL);

    CHECK_OK(mmk_reserve(4 * 4096, &p));
    CHECK_EQ(mmk_commit(p, 0), -EINVAL);
    CHECK_EQ(mmk_protect(p, 4096, 0x100), -EINVAL);
    CHECK_EQ(mmk_advise(p, 4096, -1), -EINVAL);
    CHECK_EQ(mmk_advise(p, 4096, MMK_ADV_COUNT_), -EINVAL);
    CHECK_EQ(mmk_resident(p, 4096, NULL), -EINVAL);
    CHECK_EQ(mmk_commit((char *)p + 1, 4096), -EINVAL);
    CHECK_OK(mmk_release(p, 4 * 4096));
    /* A released range is no longer mapped: residency says so. */
    CHECK_EQ(mmk_resident(p, 4096, &n), -ENOMEM);
    struct mmk_hugepage_info hi;
    CHECK_EQ(mmk_hugepage_info(NULL), -EINVAL);
    int rc = mmk_hugepage_info(&hi);
    CHECK(rc == 0 || rc == -ENOTSUP);
    printf("huge pages: size %zu thp %d hugetlb free %zu\n", hi.size, hi.thp, hi.hugetlb_free);
}

static void test_aligned(void)
{
    void *p;
    size_t al = (size_t)2 << 20;
    for (int i = 0; i < 8; i++) {
        CHECK_OK(mmk_reserve_aligned(3 * al + 4096, al, &p));
        CHECK(((uintptr_t)p & (al - 1)) == 0);
        CHECK_OK(mmk_commit(p, 4096));
        *(volatile char *)p = 1;
        CHECK_OK(mmk_release(p, 3 * al + 4096));
    }
}

static void test_tib_costs_nothing(void)
{
    const size_t tib = (size_t)1 << 40;
    long r0 = rss_bytes();
    void *p;
    int rc = mmk_reserve(tib, &p);
    if (rc == -ENOMEM) {
        printf("note: 1 TiB reservation refused (address space limit); trying 64 GiB\n");
        CHECK_OK(mmk_reserve((size_t)64 << 30, &p));
        mmk_release(p, (size_t)64 << 30);
        return;
    }
    CHECK_OK(rc);
    long r1 = rss_bytes();
    CHECK(r1 - r0 < (1 << 20));
    size_t res = 123;
    CHECK_OK(mmk_resident(p, (size_t)1 << 30, &res));
    CHECK_EQ(res, 0);
    /* Commit and touch scattered pages: only those become resident. */
    char *b = p;
    for (int i = 0; i < 16; i++) {
        char *q = b + (size_t)i * ((size_t)1 << 36);
        CHECK_OK(mmk_commit(q, 4096));
        q[0] = (char)i;
    }
    long r2 = rss_bytes();
    CHECK(r2 - r0 < (4 << 20));
    CHECK_OK(mmk_resident(b, 4096, &res));
    CHECK_EQ(res, 4096);
    CHECK_OK(mmk_release(p, tib));
}

static void test_decommit_rss(void)
{
    const size_t len = (size_t)128 << 20;
    void *p;
    CHECK_OK(mmk_reserve(len, &p));
    CHECK_OK(mmk_commit(p, len));
    long r0 = rss_bytes();
    memset(p, 0x5a, len);
    long r1 = rss_bytes();
    CHECK(r1 - r0 > (long)(len * 9 / 10));
    size_t res;
    CHECK_OK(mmk_resident(p, len, &res));
    CHECK(res > len * 9 / 10);
    CHECK_OK(mmk_decommit(p, len));
    long r2 = rss_bytes();
    printf("rss: +%ld MiB after touch, +%ld MiB after decommit\n", (r1 - r0) >> 20, (r2 - r0) >> 20);
    CHECK(r2 - r0 < (long)(len / 16));
    CHECK_OK(mmk_resident(p, len, &res));
    CHECK_EQ(res, 0);
    /* Recommit gives zero pages. */
    CHECK_OK(mmk_commit(p, len));
    CHECK(((volatile char *)p)[12345] == 0);
    CHECK_OK(mmk_release(p, len));
}

static sigjmp_buf jb;
static void on_segv(int sig) { siglongjmp(jb, sig); }

/* Returns the signal raised by touching p (0 if none). */
static int touch(volatile char *p, int write)
{
    struct sigaction sa = {0}, o1, o2;
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, &o1);
    sigaction(SIGBUS, &sa, &o2);
    int sig = sigsetjmp(jb, 1);
    if (!sig) {
        if (write)
            *p = 1;
        else
            (void)*p;
    }
    sigaction(SIGSEGV, &o1, NULL);
    sigaction(SIGBUS, &o2, NULL);
    return sig;
}

static void test_protect(void)
{
    void *p;
    size_t pg = mmk_page_size();
    CHECK_OK(mmk_reserve(4 * pg, &p));
    char *b = p;
    CHECK_EQ(touch(b, 0), SIGSEGV); /* reserved: no access */
    CHECK_OK(mmk_commit(b, pg));
    CHECK_EQ(touch(b, 1), 0);
    CHECK_OK(mmk_protect(b, pg, MMK_PROT_READ));
    CHECK_EQ(touch(b, 0), 0);
    CHECK_EQ(touch(b, 1), SIGSEGV);
    CHECK_OK(mmk_protect(b, pg, MMK_PROT_READ | MMK_PROT_WRITE));
    CHECK_EQ(touch(b, 1), 0);
    CHECK_OK(mmk_decommit(b, pg));
    CHECK_EQ(touch(b, 0), SIGSEGV);
    CHECK_OK(mmk_release(p, 4 * pg));
}

static void test_advise(void)
{
    size_t pg = mmk_page_size(), len = 64 * pg;
    void *p;
    CHECK_OK(mmk_reserve(len, &p));
    CHECK_OK(mmk_commit(p, len));
    static const int ok_everywhere[] = {MMK_ADV_NORMAL, MMK_ADV_RANDOM, MMK_ADV_SEQUENTIAL,
                                        MMK_ADV_WILLNEED, MMK_ADV_DONTNEED};
    for (size_t i = 0; i < sizeof ok_everywhere / sizeof ok_everywhere[0]; i++)
        CHECK_OK(mmk_advise(p, len, ok_everywhere[i]));
    for (int a = 0; a < MMK_ADV_COUNT_; a++) {
        int rc = mmk_advise(p, len, a);
        /* Every advice either works or says "unsupported"/"not allowed here". */
        CHECK(rc == 0 || rc == -ENOTSUP || rc == -EINVAL || rc == -EPERM);
        if (a == MMK_ADV_REMOVE)
            CHECK(rc != 0); /* private anonymous memory cannot be removed */
    }
    /* POPULATE_WRITE makes the pages resident. */
    size_t res;
    CHECK_OK(mmk_advise(p, len, MMK_ADV_DONTNEED));
    int rc = mmk_advise(p, len, MMK_ADV_POPULATE_WRITE);
    if (rc == 0) {
        CHECK_OK(mmk_resident(p, len, &res));
        CHECK_EQ(res, len);
    } else {
        CHECK_EQ(rc, -ENOTSUP);
    }
    /* DONTNEED drops them again. */
    CHECK_OK(mmk_advise(p, len, MMK_ADV_DONTNEED));
    CHECK_OK(mmk_resident(p, len, &res));
    CHECK_EQ(res, 0);
    CHECK_OK(mmk_release(p, len));

    /* POPULATE_READ past the end of a file reports -EFAULT instead of SIGBUS. */
    int fd;
    CHECK_OK(mmk_shm_create("adv", pg, MMK_SHM_MEMFD, &fd));
    char *m = mmap(NULL, 4 * pg, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(m != MAP_FAILED);
    CHECK_OK(mmk_advise(m, pg, MMK_ADV_POPULATE_READ) == -ENOTSUP ? 0 : mmk_advise(m, pg, MMK_ADV_POPULATE_READ));
    rc = mmk_advise(m + pg, pg, MMK_ADV_POPULATE_READ);
    CHECK(rc == -EFAULT || rc == -ENOTSUP);
    munmap(m, 4 * pg);
    close(fd);
}

static void check_shm(unsigned backend)
{
    int fd = -1;
    size_t pg = mmk_page_size();
    int rc = mmk_shm_create("t", 3 * pg, backend, &fd);
    if (rc < 0) {
        printf("backend %u unavailable: %s\n", backend, mmk_strerror(rc));
        CHECK(backend != MMK_SHM_MEMFD); /* memfd must work on Linux */
        return;
    }
    CHECK_EQ(rc, (int)backend);
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    CHECK_EQ(st.st_size, 3 * pg);
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    CHECK(st.st_nlink == 0); /* anonymous: no name left behind */
    /* Two maps of it show the same memory. */
    char *a = mmap(NULL, 3 * pg, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *b = mmap(NULL, 3 * pg, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(a != MAP_FAILED && b != MAP_FAILED);
    a[pg + 7] = 42;
    CHECK_EQ(b[pg + 7], 42);
    rc = mmk_shm_seal_size(fd);
    if (backend == MMK_SHM_MEMFD) {
        CHECK_OK(rc);
        CHECK(ftruncate(fd, pg) != 0 && errno == EPERM);
        CHECK(ftruncate(fd, 10 * pg) != 0 && errno == EPERM);
        int s = mmk_shm_seals(fd);
        CHECK(s >= 0 && (s & MMK_SEAL_SHRINK) && (s & MMK_SEAL_GROW) && (s & MMK_SEAL_SEAL));
        CHECK_EQ(mmk_shm_seal(fd, MMK_SEAL_WRITE), -EPERM); /* sealed seals */
    } else {
        CHECK_EQ(rc, -ENOTSUP);
    }
    munmap(a, 3 * pg);
    munmap(b, 3 * pg);
    close(fd);
}

static void test_shm(void)
{
    int fd;
    CHECK_EQ(mmk_shm_create("x", 4096, 0, NULL), -EINVAL);
    CHECK_EQ(mmk_shm_create("x", 4096, 0x40, &fd), -EINVAL);
    CHECK_EQ(mmk_shm_seal(-1, MMK_SEAL_GROW), -EINVAL);
    CHECK_EQ(mmk_shm_seal(0, 0), -EINVAL);
    CHECK_EQ(mmk_shm_seals(-1), -EBADF);
    check_shm(MMK_SHM_MEMFD);
    check_shm(MMK_SHM_POSIX);
    check_shm(MMK_SHM_TMPFILE);
    /* Default order picks memfd. */
    int rc = mmk_shm_create(NULL, 0, 0, &fd);
    CHECK_EQ(rc, MMK_SHM_MEMFD);
    close(fd);
    /* The environment forces a backend. */
    setenv("MMK_SHM_BACKEND", "tmpfile", 1);
    rc = mmk_shm_create(NULL, 4096, 0, &fd);
    CHECK_EQ(rc, MMK_SHM_TMPFILE);
    close(fd);
    setenv("MMK_SHM_BACKEND", "posix", 1);
    rc = mmk_shm_create(NULL, 4096, 0, &fd);
    CHECK(rc == MMK_SHM_POSIX || rc == -ENOENT || rc == -EACCES);
    if (rc > 0)
        close(fd);
    unsetenv("MMK_SHM_BACKEND");
}

static void test_strerror(void)
{
    CHECK(strcmp(mmk_strerror(0), "success") == 0);
    CHECK(strstr(mmk_strerror(MMK_ECORRUPT), "validation") != NULL);
    CHECK(strstr(mmk_strerror(MMK_EFORMAT), "format") != NULL);
    CHECK(mmk_strerror(-ENOENT)[0] != 0);
    CHECK(strcmp(mmk_strerror(-ENOENT), mmk_strerror(-EINVAL)) != 0);
    CHECK(strcmp(mmk_strerror(12345), "unknown error") == 0);
    CHECK(strcmp(mmk_strerror(-99999), "unknown error") == 0);
    CHECK(MMK_ECORRUPT < -40000 && MMK_EFORMAT < -40000);
    CHECK(strcmp(mmk_version(), "0.1.0") == 0);
}

int main(void)
{
    test_strerror();
    test_errors();
    test_aligned();
    test_tib_costs_nothing();
    test_decommit_rss();
    test_protect();
    test_advise();
    test_shm();
    printf("vm: all checks passed\n");
    return 0;
}
