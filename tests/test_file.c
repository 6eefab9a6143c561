// mmk-test: timeout=120
/* file.h: open modes and flags, bounds-checked reads and writes, growth
 * inside the reservation (the mapping never moves), resize, sync, advice,
 * the unguarded view, a file truncated by someone else, and the policy
 * (pread for /proc files, both policies give the same bytes). */
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

MMK_TEST_FAULT_OPTIONS

static char dirbuf[600];

static const char *tmp(const char *name)
{
    static char p[700];
    snprintf(p, sizeof p, "%s/%s", dirbuf, name);
    return p;
}

static unsigned char pat(uint64_t off) { return (unsigned char)(off * 131 + (off >> 10) * 17 + 5); }

/* Find our descriptor for `path` in /proc/self/fd: 1 if close-on-exec,
 * 0 if not, -1 if there is none. */
static int fd_of_is_cloexec(const char *path)
{
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    struct dirent *e;
    int res = -1;
    while ((e = readdir(d))) {
        char link[300], target[700];
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = 0;
        if (!strcmp(target, path)) {
            int fl = fcntl(atoi(e->d_name), F_GETFD);
            res = fl >= 0 && (fl & FD_CLOEXEC) ? 1 : 0;
        }
    }
    closedir(d);
    return res;
}

static void test_flags(void)
{
    mmk_file *f = (mmk_file *)1;
    CHECK_EQ(mmk_file_open(tmp("none"), MMK_FILE_RDONLY, &f), -ENOENT);
    CHECK(f == NULL);
    CHECK_EQ(mmk_file_open(tmp("x"), 1u << 20, &f), -EINVAL);
    CHECK_EQ(mmk_file_open(tmp("x"), MMK_FILE_MMAP | MMK_FILE_PREAD, &f), -EINVAL);
    CHECK_EQ(mmk_file_open(tmp("x"), MMK_FILE_EXCL, &f), -EINVAL);
    CHECK_EQ(mmk_file_open(tmp("x"), MMK_FILE_TRUNC, &f), -EINVAL);
    CHECK_EQ(mmk_file_open(NULL, 0, &f), -EINVAL);
    CHECK_EQ(mmk_file_open(dirbuf, 0, &f), -EISDIR);
    CHECK_EQ(mmk_file_open(tmp("x"), 0, NULL), -EINVAL);
    mmk_file_close(NULL);

    /* Created files are 0600 unless asked otherwise, and close-on-exec. */
    umask(022);
    CHECK_OK(mmk_file_open(tmp("created"), MMK_FILE_CREATE, &f));
    struct stat st;
    CHECK(stat(tmp("created"), &st) == 0);
    CHECK_EQ(st.st_mode & 0777, 0600);
    CHECK_EQ(mmk_file_size(f), 0);
    CHECK(fd_of_is_cloexec(tmp("created")) == 1);
    mmk_file_close(f);
    CHECK(fd_of_is_cloexec(tmp("created")) == -1); /* closed */
    CHECK_EQ(mmk_file_open(tmp("created"), MMK_FILE_CREATE | MMK_FILE_EXCL, &f), -EEXIST);
    struct mmk_file_opts o = {.mode = 0640};
    CHECK_OK(mmk_file_open_opts(tmp("mode"), MMK_FILE_CREATE, &o, &f));
    CHECK(stat(tmp("mode"), &st) == 0);
    CHECK_EQ(st.st_mode & 0777, 0640);
    mmk_file_close(f);

    /* Read-only handles refuse writes. */
    CHECK_OK(mmk_file_open(tmp("created"), MMK_FILE_RDONLY, &f));
    CHECK_EQ(mmk_file_write_at(f, "x", 1, 0), -EBADF);
    CHECK_EQ(mmk_file_resize(f, 10), -EBADF);
    mmk_file_close(f);
}

/* The permissions of the mapping holding addr in /proc/self/maps, "" if none. */
static const char *maps_perms(const void *addr)
{
    static char perms[8];
    perms[0] = 0;
    FILE *m = fopen("/proc/self/maps", "re");
    CHECK(m != NULL);
    unsigned long lo, hi;
    char pr[8];
    while (fscanf(m, "%lx-%lx %7s%*[^\n]", &lo, &hi, pr) == 3)
        if ((uintptr_t)addr >= lo && (uintptr_t)addr < hi) {
            snprintf(perms, sizeof perms, "%s", pr);
            break;
        }
    fclose(m);
    return perms;
}

static void check_pattern(mmk_file *f, uint64_t off, size_t len)
{
    unsigned char *b = malloc(len + 1);
    ssize_t n = mmk_file_read_at(f, b, len, off);
    CHECK_EQ(n, (ssize_t)len);
    for (size_t i = 0; i < len; i++)
        if (b[i] != pat(off + i)) {
            fprintf(stderr, "byte %llu: %u, expected %u\n", (unsigned long long)(off + i), b[i],
                    pat(off + i));
            exit(1);
        }
    free(b);
}

static void test_rw(unsigned policy)
{
    mmk_file *f;
    CHECK_OK(mmk_file_open(tmp("rw"), MMK_FILE_CREATE | MMK_FILE_TRUNC | policy, &f));
    CHECK_EQ(mmk_file_policy(f), policy);
    void *view0 = NULL;
    uint64_t vs;
    if (policy == MMK_FILE_MMAP)
        CHECK_OK(mmk_file_view(f, &view0, &vs));
    else
        CHECK_EQ(mmk_file_view(f, &view0, &vs), -ENOTSUP);

    /* Grow by appending in odd-sized pieces, past several map steps. */
    size_t total = (size_t)3 << 20, chunk = 7777;
    unsigned char *buf = malloc(chunk);
    for (size_t off = 0; off < total; off += chunk) {
        size_t n = off + chunk > total ? total - off : chunk;
        for (size_t i = 0; i < n; i++)
            buf[i] = pat(off + i);
        CHECK_EQ(mmk_file_write_at(f, buf, n, off), (ssize_t)n);
    }
    CHECK_EQ(mmk_file_size(f), total);
    check_pattern(f, 0, 100);
    check_pattern(f, 4095, 2);
    check_pattern(f, 12345, 65536);
    check_pattern(f, 0, total); /* one large read */

    /* Short at end of file, 0 past it. */
    char b[100];
    CHECK_EQ(mmk_file_read_at(f, b, 100, total - 10), 10);
    CHECK_EQ(mmk_file_read_at(f, b, 100, total), 0);
    CHECK_EQ(mmk_file_read_at(f, b, 100, total + 5000), 0);
    CHECK_EQ(mmk_file_read_at(f, b, 0, 0), 0);
    CHECK_EQ(mmk_file_read_at(f, b, 10, UINT64_MAX - 3), 0);
    CHECK_EQ(mmk_file_write_at(f, b, 10, UINT64_MAX - 3), -EFBIG);

    /* The mapping never moved while the file grew. */
    if (policy == MMK_FILE_MMAP) {
        void *view1;
        CHECK_OK(mmk_file_view(f, &view1, &vs));
        CHECK(view1 == view0 && vs == total);
        CHECK(((unsigned char *)view1)[total - 1] == pat(total - 1));
        /* Shared file mapping at the start, PROT_NONE reservation after. */
        CHECK(!strcmp(maps_perms(view1), "rw-s"));
        CHECK(!strcmp(maps_perms((char *)view1 + ((size_t)1 << 30)), "---p"));
    }

    /* Resize: shrink, then grow (zeros), with reads to match. */
    CHECK_OK(mmk_file_resize(f, 5000));
    CHECK_EQ(mmk_file_size(f), 5000);
    CHECK_EQ(mmk_file_read_at(f, b, 100, 4950), 50);
    CHECK_OK(mmk_file_resize(f, 20000));
    CHECK_EQ(mmk_file_read_at(f, b, 100, 6000), 100);
    for (int i = 0; i < 100; i++)
        CHECK(b[i] == 0);
    check_pattern(f, 0, 5000);
    struct stat st;
    CHECK(stat(tmp("rw"), &st) == 0);
    CHECK_EQ(st.st_size, 20000);
    CHECK(st.st_blocks * 512 >= 20000); /* growth reserved real blocks */

    /* Advice and sync. */
    CHECK_OK(mmk_file_advise(f, 0, 0, MMK_ADV_RANDOM));
    CHECK_OK(mmk_file_advise(f, 0, 4096, MMK_ADV_SEQUENTIAL));
    CHECK_OK(mmk_file_advise(f, 0, 0, MMK_ADV_WILLNEED));
    CHECK_OK(mmk_file_advise(f, 0, 0, MMK_ADV_NORMAL));
    CHECK_EQ(mmk_file_advise(f, 0, 0, MMK_ADV_MERGEABLE), -EINVAL);
    int hp = mmk_file_advise(f, 0, 0, MMK_ADV_HUGEPAGE);
    CHECK(hp == 0 || hp == -ENOTSUP || hp == -EINVAL);
    int pop = mmk_file_advise(f, 0, 0, MMK_ADV_POPULATE_READ);
    CHECK(policy == MMK_FILE_MMAP ? pop == 0 || pop == -ENOTSUP : pop == -ENOTSUP);
    CHECK_OK(mmk_file_write_at(f, "durable", 7, 100));
    CHECK_OK(mmk_file_sync(f));
    mmk_file_close(f);

    /* What was written is what another reader sees. */
    int fd = open(tmp("rw"), O_RDONLY);
    CHECK(fd >= 0);
    CHECK_EQ(pread(fd, b, 7, 100), 7);
    CHECK(memcmp(b, "durable", 7) == 0);
    close(fd);
    free(buf);
}

/* Another handle truncates the file: reads past the new end fault, become
 * -EFAULT, and then the reader sees the new size. Growth by the other
 * handle is seen when a read reaches past the known size. */
static void test_truncated_under_reader(void)
{
    mmk_file *w, *r;
    CHECK_OK(mmk_file_open(tmp("trunc"), MMK_FILE_CREATE | MMK_FILE_TRUNC, &w));
    unsigned char *buf = malloc(1 << 20);
    for (size_t i = 0; i < (1 << 20); i++)
        buf[i] = pat(i);
    CHECK_EQ(mmk_file_write_at(w, buf, 1 << 20, 0), 1 << 20);
    CHECK_OK(mmk_file_open(tmp("trunc"), MMK_FILE_RDONLY | MMK_FILE_MMAP, &r));
    CHECK_EQ(mmk_file_size(r), 1 << 20);
    check_pattern(r, 500000, 1000);
    uint64_t faults = mmk_fault_count();
    CHECK_OK(mmk_file_resize(w, 8192));
    char b[64];
    CHECK_EQ(mmk_file_read_at(r, b, 64, 500000), -EFAULT);
    CHECK(mmk_fault_count() == faults + 1);
    CHECK_EQ(mmk_file_size(r), 8192);
    CHECK_EQ(mmk_file_read_at(r, b, 64, 500000), 0);
    CHECK_EQ(mmk_file_read_at(r, b, 64, 8190), 2);
    CHECK_EQ(mmk_file_write_at(w, buf + 8192, (1 << 20) - 8192, 8192), (1 << 20) - 8192);
    check_pattern(r, 500000, 1000); /* grown again: seen */
    CHECK_EQ(mmk_file_size(r), 1 << 20);

    /* A writer whose file shrank under it gets -EFAULT, not SIGBUS. */
    mmk_file *w2;
    CHECK_OK(mmk_file_open(tmp("trunc"), MMK_FILE_RDWR | MMK_FILE_MMAP, &w2));
    CHECK_OK(mmk_file_resize(w, 0));
    CHECK_EQ(mmk_file_write_at(w2, "abc", 3, 100000), -EFAULT);
    mmk_file_close(w2);
    mmk_file_close(r);
    mmk_file_close(w);
    free(buf);
}

/* Regression (fuzz_file, fuzz/corpus/file/tail-regrow): another process cuts
 * the file to the middle of a page; a write through the stale handle lands
 * in the rest of that page, which does not fault. It must give -EFAULT and
 * leave nothing there: on tmpfs the kernel does not zero that tail when the
 * file grows again (ftruncate, fallocate or pwrite, by anyone), so the bytes
 * would come back as file data. Run in `dir` (tmpfs where we have it). */
static void test_stale_tail_write(const char *dir)
{
    char path[700];
    snprintf(path, sizeof path, "%s/mmk-test-tail-%d", dir, (int)getpid());
    mmk_file *w;
    CHECK_OK(mmk_file_open(path, MMK_FILE_CREATE | MMK_FILE_TRUNC | MMK_FILE_MMAP, &w));
    unsigned char *buf = malloc(32768);
    memset(buf, 0xA5, 32768);
    CHECK_EQ(mmk_file_write_at(w, buf, 30000, 0), 30000);
    /* The check after each store costs no fault while the file is whole. */
    uint64_t faults = mmk_fault_count();
    for (uint64_t o = 0; o + 5000 <= 30000; o += 1000)
        CHECK_EQ(mmk_file_write_at(w, buf, 5000, o), 5000);
    CHECK_EQ(mmk_fault_count(), faults);
    int fd2 = open(path, O_RDWR | O_CLOEXEC);
    CHECK(fd2 >= 0);
    CHECK(ftruncate(fd2, 8192) == 0);
    CHECK_EQ(pwrite(fd2, buf, 100, 8192), 100); /* the end is now 8292 */

    /* Wholly inside the last page's tail, then from inside the file across
     * the tail into a lost page: both are refused. */
    CHECK_EQ(mmk_file_write_at(w, buf, 50, 8300), -EFAULT);
    CHECK_EQ(mmk_file_size(w), 8292);
    CHECK_EQ(mmk_file_write_at(w, buf, 100, 8292), 100); /* growth: fine */
    CHECK(ftruncate(fd2, 8292) == 0);
    CHECK_EQ(mmk_file_size(w), 8392); /* stale again */
    CHECK_EQ(mmk_file_write_at(w, buf, 100, 8250), -EFAULT);
    CHECK_EQ(mmk_file_size(w), 8292);
    CHECK_OK(mmk_file_resize(w, 20000));
    CHECK(ftruncate(fd2, 8292) == 0);
    CHECK_EQ(mmk_file_write_at(w, buf, 8000, 8144), -EFAULT);

    /* Grow again, from outside and through the handle: zeros past 8292. */
    CHECK(ftruncate(fd2, 12000) == 0);
    CHECK_EQ(pwrite(fd2, "z", 1, 13000), 1);
    CHECK_OK(mmk_file_resize(w, 16384));
    unsigned char *rb = malloc(16384);
    CHECK_EQ(pread(fd2, rb, 16384, 0), 16384);
    for (size_t i = 8292; i < 16384; i++)
        if (i != 13000 && rb[i] != 0) {
            fprintf(stderr, "byte %zu past the cut reads %u\n", i, rb[i]);
            CHECK(rb[i] == 0);
        }
    memset(rb, 0xee, 16384);
    CHECK_EQ(mmk_file_read_at(w, rb, 8092, 8292), 8092);
    for (size_t i = 0; i < 8092; i++)
        CHECK(rb[i] == (i == 13000 - 8292 ? 'z' : 0));
    close(fd2);
    mmk_file_close(w);
    unlink(path);
    free(rb);
    free(buf);
}

/* MMK_ADV_POPULATE_READ maps the file's pages at once: reading them all
 * afterwards takes no page fault. */
static void test_populate(void)
{
    const size_t size = (size_t)4 << 20;
    int fd = open(tmp("pop"), O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    unsigned char *buf = malloc(size);
    for (size_t i = 0; i < size; i++)
        buf[i] = pat(i);
    CHECK_EQ(pwrite(fd, buf, size, 0), (ssize_t)size);
    close(fd);
    mmk_file *f;
    CHECK_OK(mmk_file_open(tmp("pop"), MMK_FILE_RDONLY | MMK_FILE_MMAP, &f));
    int rc = mmk_file_advise(f, 0, 0, MMK_ADV_POPULATE_READ);
    if (rc == -ENOTSUP) {
        printf("populate: not supported by this kernel (before 5.14), not checked\n");
    } else {
        CHECK_OK(rc);
        struct rusage ru0, ru1;
        getrusage(RUSAGE_SELF, &ru0);
        for (size_t off = 0; off < size; off += 4096)
            CHECK_EQ(mmk_file_read_at(f, buf, 4096, off), 4096);
        getrusage(RUSAGE_SELF, &ru1);
        CHECK(ru1.ru_minflt - ru0.ru_minflt + ru1.ru_majflt - ru0.ru_majflt <= 2);
        CHECK(buf[100] == pat(size - 4096 + 100));
    }
    mmk_file_close(f);
    free(buf);
}

static void test_policy(void)
{
    mmk_file *f;
    /* A size-0 file from /proc is read, not mapped, and has content. */
    CHECK_OK(mmk_file_open("/proc/self/status", MMK_FILE_RDONLY, &f));
    CHECK_EQ(mmk_file_policy(f), MMK_FILE_PREAD);
    char b[256];
    ssize_t n = mmk_file_read_at(f, b, sizeof b - 1, 0);
    CHECK(n > 10);
    b[n] = 0;
    CHECK(strstr(b, "Name:") != NULL);
    mmk_file_close(f);

    /* An ordinary file on a local file system is mapped. */
    int fd = open(tmp("plain"), O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && write(fd, "hello", 5) == 5);
    close(fd);
    CHECK_OK(mmk_file_open(tmp("plain"), MMK_FILE_RDONLY, &f));
    CHECK_EQ(mmk_file_policy(f), MMK_FILE_MMAP);
    CHECK_EQ(mmk_file_read_at(f, b, 10, 0), 5);
    mmk_file_close(f);
    setenv("MMK_FILE_POLICY", "pread", 1);
    CHECK_OK(mmk_file_open(tmp("plain"), MMK_FILE_RDONLY, &f));
    CHECK_EQ(mmk_file_policy(f), MMK_FILE_PREAD);
    CHECK_EQ(mmk_file_read_at(f, b, 10, 0), 5);
    mmk_file_close(f);
    unsetenv("MMK_FILE_POLICY");
}

static void test_reserve_limit(void)
{
    mmk_file *f;
    struct mmk_file_opts o = {.reserve = 1 << 20};
    CHECK_OK(mmk_file_open_opts(tmp("small"), MMK_FILE_CREATE | MMK_FILE_MMAP, &o, &f));
    CHECK_EQ(mmk_file_write_at(f, "x", 1, (1 << 20) - 1), 1);
    CHECK_EQ(mmk_file_write_at(f, "x", 1, 1 << 20), -EFBIG);
    CHECK_EQ(mmk_file_resize(f, (1 << 20) + 1), -EFBIG);
    CHECK_EQ(mmk_file_size(f), 1 << 20);
    mmk_file_close(f);
}

int main(void)
{
    snprintf(dirbuf, sizeof dirbuf, "%s", test_tmpdir());
    test_flags();
    test_rw(MMK_FILE_MMAP);
    test_rw(MMK_FILE_PREAD);
    test_truncated_under_reader();
    test_stale_tail_write(dirbuf);
    if (access("/dev/shm", W_OK) == 0)
        test_stale_tail_write("/dev/shm");
    test_populate();
    test_policy();
    test_reserve_limit();
    rm_rf(dirbuf);
    printf("file: ok\n");
    return 0;
}
