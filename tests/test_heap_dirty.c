/* Each dirty-tracking path (MMK_HEAP_DIRTY=scan|pagemap|wp|uffd, and the
 * default: wp switching to a bulk scan in big transactions) finds exactly
 * the written pages: a transaction writes a known scattered set of pages
 * (single bytes, runs, the last page, pages in a region grown during the
 * transaction, a syscall writing into heap memory for scan/pagemap), a
 * handle using another path reopens and sees every byte; pages only read
 * are not logged (the commit's page count says so). */
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

static const char *methods[] = {"scan", "pagemap", "wp", "uffd", "auto"};
static const char *names[] = {"pagemap_scan", "pagemap", "wp_fault", "uffd_scan",
                              "wp_fault+uffd_scan"};
#define NFORCED 4 /* methods[0..3] can be forced */
#define AUTO 4

static uint64_t last_pages(mmk_heap *h)
{
    struct mmk_heap_stats st;
    CHECK_OK(mmk_heap_stats(h, &st));
    return st.last_pages;
}

static void run(int m, const char *dir)
{
    char path[700];
    snprintf(path, sizeof path, "%s/dirty-%s.heap", dir, methods[m]);
    if (m == AUTO)
        unsetenv("MMK_HEAP_DIRTY"); /* the default */
    else
        setenv("MMK_HEAP_DIRTY", methods[m], 1);
    mmk_heap *h;
    int rc = mmk_heap_open(path, MMK_HEAP_CREATE | MMK_HEAP_NOSYNC, &h);
    if (rc == -ENOTSUP || rc == -ENOTTY) {
        printf("%s: not available here (%s)\n", methods[m], mmk_strerror(rc));
        return;
    }
    CHECK_OK(rc);
    struct mmk_heap_stats st;
    CHECK_OK(mmk_heap_stats(h, &st));
    if (strcmp(st.dirty_method, names[m])) {
        printf("%s: runs as %s here\n", methods[m], st.dirty_method);
        CHECK(m == AUTO);
    }
    /* one big object to write into */
    mmk_ref big;
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_heap_alloc(h, 512 * 4096, &big));
    CHECK_OK(mmk_heap_set_root(h, big));
    CHECK_OK(mmk_heap_commit(h));
    unsigned char *b = mmk_heap_ptr(h, big);

    /* read everything (no page may be logged for reads), write 37 pages */
    CHECK_OK(mmk_heap_begin(h));
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += b[i * 4096 + 7];
    CHECK_EQ(sum, 0);
    int written = 0;
    for (int i = 0; i < 512; i += 17, written++)
        b[i * 4096 + (i % 4096)] = (unsigned char)(i + 1);
    memset(b + 100 * 4096 + 5, 0xee, 3 * 4096); /* a run over 4 pages */
    written += 4 - 1;                            /* page 102 is among the 17-steps */
    b[512 * 4096 - 1] = 0x77;                    /* the last page */
    written++;
    if (m < 2 || m == 3) { /* the kernel writing into heap memory counts as a write */
        int fd = open("/dev/zero", O_RDONLY);
        CHECK(fd >= 0);
        b[300 * 4096] = 1;
        CHECK(read(fd, b + 301 * 4096 + 10, 100) == 100);
        close(fd);
        written += 2;
    }
    CHECK_OK(mmk_heap_commit(h));
    uint64_t logged = last_pages(h);
    /* data pages + header + checksum page */
    printf("%s: wrote %d pages, the commit logged %llu pages\n", methods[m], written,
           (unsigned long long)logged);
    CHECK_EQ(logged, (uint64_t)written + 2); /* exact: no page missed, none extra */

    /* a big transaction: 255 scattered pages plus a 300-page run (the
     * default switches from write faults to the bulk scan on the way) */
    CHECK_OK(mmk_heap_begin(h));
    for (int i = 1; i < 511; i += 2)
        b[i * 4096 + 9] = i >= 100 && i <= 103 ? 0xee : 0xab; /* same as before there */
    mmk_ref run;
    CHECK_OK(mmk_heap_alloc(h, 300 * 4096, &run));
    unsigned char *rp = mmk_heap_ptr(h, run);
    for (int i = 0; i < 300; i++)
        rp[i * 4096] = 1;
    CHECK_OK(mmk_heap_commit(h));
    /* 253 + 300 data pages (two of the 255 keep their bytes) and the allocator's and checksums' pages: the
     * same count whatever the method */
    static uint64_t big_pages;
    printf("%s: big transaction: %llu pages committed\n", methods[m],
           (unsigned long long)last_pages(h));
    CHECK(last_pages(h) >= 253 + 300 + 3);
    if (!big_pages)
        big_pages = last_pages(h);
    CHECK_EQ(last_pages(h), big_pages);

    /* growth inside a transaction: pages of the new region are found too */
    CHECK_OK(mmk_heap_begin(h));
    mmk_ref r2;
    CHECK_OK(mmk_heap_alloc(h, 40 << 20, &r2));
    unsigned char *p2 = mmk_heap_ptr(h, r2);
    p2[0] = 0x42;
    p2[(40 << 20) - 1] = 0x43;
    uint64_t *rootp = mmk_heap_ptr(h, big);
    rootp[1] = r2;
    CHECK_OK(mmk_heap_commit(h));
    mmk_heap_close(h);

    /* reopen with another method: every byte is there */
    setenv("MMK_HEAP_DIRTY", methods[(m + 1) % NFORCED], 1);
    CHECK_OK(mmk_heap_open(path, 0, &h));
    b = mmk_heap_ptr(h, mmk_heap_root(h));
    for (int i = 0; i < 512; i += 17)
        if (i < 100 || i > 103)
            CHECK_EQ(b[i * 4096 + (i % 4096)], (unsigned char)(i + 1));
    for (int i = 5; i < 3 * 4096 + 5; i++)
        CHECK_EQ(b[100 * 4096 + i], 0xee);
    CHECK_EQ(b[512 * 4096 - 1], 0x77);
    if (m < 2 || m == 3)
        CHECK_EQ(b[300 * 4096], 1);
    for (int i = 1; i < 511; i += 2)
        CHECK_EQ(b[i * 4096 + 9], i >= 100 && i <= 103 ? 0xee : 0xab);
    p2 = mmk_heap_ptr(h, ((uint64_t *)b)[1]);
    CHECK(p2 && p2[0] == 0x42 && p2[(40 << 20) - 1] == 0x43);
    CHECK_OK(mmk_heap_check(h));
    mmk_heap_close(h);
}

/* Kept copies (the default where userfaultfd write-protect works): after a
 * commit the private copies stay; the next transactions must log only what
 * they write, an abort must restore the file's bytes, a commit by another
 * handle must be seen by this one's next view and transaction, and a stray
 * write between transactions must still fault. */
static uint8_t page_byte(mmk_heap *h, mmk_ref obj, int pg)
{
    return ((uint8_t *)mmk_heap_ptr(h, obj))[pg * 4096 + 11];
}

/* In a child: a store between transactions, which must die by SIGSEGV. */
static void stray_write(void *addr)
{
    *(volatile uint8_t *)addr = 5;
}

static void kept_copies(const char *dir)
{
    char path[700];
    snprintf(path, sizeof path, "%s/kept.heap", dir);
    unsetenv("MMK_HEAP_DIRTY");
    mmk_heap *a, *b;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE | MMK_HEAP_NOSYNC, &a));
    struct mmk_heap_stats st;
    CHECK_OK(mmk_heap_stats(a, &st));
    printf("kept copies: handle A tracks with %s\n", st.dirty_method);
    mmk_ref obj;
    CHECK_OK(mmk_heap_begin(a));
    CHECK_OK(mmk_heap_alloc(a, 64 * 4096, &obj));
    CHECK_OK(mmk_heap_set_root(a, obj));
    uint8_t *p = mmk_heap_ptr(a, obj);
    for (int i = 0; i < 64; i++)
        p[i * 4096 + 11] = 1;
    CHECK_OK(mmk_heap_commit(a));
    /* small transactions after a big one (the default starts all-writable
     * then) and after small ones (write faults): exact page counts */
    for (int round = 0; round < 4; round++) {
        CHECK_OK(mmk_heap_begin(a));
        for (int i = 0; i < 64; i++)
            CHECK_EQ(p[i * 4096 + 11], round ? 2 : 1);
        p[(5 + round) * 4096 + 11] = 2;
        if (round == 0)
            for (int i = 0; i < 64; i++)
                p[i * 4096 + 11] = 2;
        CHECK_OK(mmk_heap_commit(a));
        CHECK_EQ(last_pages(a), round == 0 ? 64u + 2 : 3u);
    }
    /* abort restores kept and unkept pages alike */
    CHECK_OK(mmk_heap_begin(a));
    for (int i = 0; i < 64; i += 3)
        p[i * 4096 + 11] = 9;
    CHECK_OK(mmk_heap_abort(a));
    CHECK_OK(mmk_heap_read_begin(a));
    for (int i = 0; i < 64; i++)
        CHECK_EQ(page_byte(a, obj, i), 2);
    mmk_heap_read_end(a);
    /* another handle commits: A's next view and transaction see it */
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_NOSYNC, &b));
    CHECK_OK(mmk_heap_begin(b));
    uint8_t *q = mmk_heap_ptr(b, obj);
    for (int i = 0; i < 64; i += 2)
        q[i * 4096 + 11] = 7;
    CHECK_OK(mmk_heap_commit(b));
    CHECK_OK(mmk_heap_check(a)); /* reads the file, not A's copies of the older commit */
    CHECK_OK(mmk_heap_read_begin(a));
    for (int i = 0; i < 64; i++)
        CHECK_EQ(page_byte(a, obj, i), i % 2 ? 2 : 7);
    mmk_heap_read_end(a);
    CHECK_OK(mmk_heap_begin(b));
    q[1 * 4096 + 11] = 6;
    CHECK_OK(mmk_heap_commit(b));
    CHECK_OK(mmk_heap_begin(a));
    CHECK_EQ(page_byte(a, obj, 1), 6);
    p[3 * 4096 + 11] = 8;
    CHECK_OK(mmk_heap_commit(a));
    CHECK_EQ(last_pages(a), 3u);
    CHECK_OK(mmk_heap_read_begin(b));
    CHECK_EQ(page_byte(b, obj, 3), 8);
    CHECK_EQ(page_byte(b, obj, 1), 6);
    mmk_heap_read_end(b);
    mmk_heap_close(b);
    /* a stray write into a kept page between transactions faults */
    int ws = run_child(stray_write, p + 3 * 4096 + 11);
    CHECK(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGSEGV);
    CHECK_EQ(page_byte(a, obj, 3), 8);
    CHECK_OK(mmk_heap_check(a));
    mmk_heap_close(a);
}

/* pagemap flags of one page of this process: bit 63 present, 61 file. */
static uint64_t pm_flags(const void *addr)
{
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    uint64_t e = 0;
    CHECK(pread(fd, &e, 8, (off_t)((uintptr_t)addr / 4096 * 8)) == 8);
    close(fd);
    return e;
}

/* At the kept-copies limit (here 1 MiB = 256 pages, with the same 100 pages
 * written every round and 1024 read) the handle counts its kept pages
 * exactly and drops only the pages it read: the written ones stay its own
 * (present, not file pages) and every byte stays right. Dropping them all,
 * as a bound that counts a page kept again twice would, fails here. */
extern int mmk__hp_test_no_process_madvise; /* src/heap_internal.h */

static void keep_limit(const char *dir)
{
    char path[700];
    snprintf(path, sizeof path, "%s/keeplim.heap-log", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/keeplim.heap", dir);
    unlink(path);
    setenv("MMK_HEAP_DIRTY", "uffd", 1);
    setenv("MMK_HEAP_KEEP_MB", "1", 1);
    mmk_heap *h;
    int rc = mmk_heap_open(path, MMK_HEAP_CREATE | MMK_HEAP_NOSYNC, &h);
    unsetenv("MMK_HEAP_KEEP_MB");
    unsetenv("MMK_HEAP_DIRTY");
    if (rc == -ENOTSUP) {
        printf("keep limit: skipped (no userfaultfd write-protect here)\n");
        return;
    }
    CHECK_OK(rc);
    mmk_ref obj;
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_heap_alloc(h, 1024 * 4096, &obj));
    CHECK_OK(mmk_heap_set_root(h, obj));
    CHECK_OK(mmk_heap_commit(h));
    uint8_t *p = mmk_heap_ptr(h, obj);
    int dropped = 0;
    for (int round = 1; round <= 8; round++) {
        CHECK_OK(mmk_heap_begin(h));
        unsigned sum = 0;
        for (int i = 0; i < 1024; i++)
            sum += p[i * 4096 + 7];
        CHECK_EQ(sum, (round - 1) * 100u);
        for (int i = 0; i < 100; i++)
            p[(i * 7 % 1024) * 4096 + 7] = (uint8_t)round;
        CHECK_OK(mmk_heap_commit(h));
        for (int i = 0; i < 100; i++) {
            uint64_t f = pm_flags(p + (i * 7 % 1024) * 4096);
            CHECK((f >> 63) & 1);   /* still mapped: kept */
            CHECK(!((f >> 61) & 1)); /* its own copy, not the page cache */
        }
        uint64_t f = pm_flags(p + 1 * 4096); /* read, never written */
        if (!((f >> 63) & 1))
            dropped++;
    }
    printf("keep limit (%s): read pages dropped after %d of 8 rounds\n",
           mmk__hp_test_no_process_madvise ? "madvise" : "process_madvise", dropped);
    CHECK(dropped > 0);
    CHECK_OK(mmk_heap_check(h));
    mmk_heap_close(h);
}

extern int mmk__hp_test_fail_register; /* src/heap_internal.h */

/* Create the heap at path with the dirty-tracking method (NULL: the
 * default) and, if keep_mb, that keep limit; NULL (and a line saying why)
 * where it does not track with the userfaultfd. */
static mmk_heap *open_uffd(const char *path, const char *method, const char *keep_mb,
                           const char *what)
{
    if (method)
        setenv("MMK_HEAP_DIRTY", method, 1);
    else
        unsetenv("MMK_HEAP_DIRTY");
    if (keep_mb)
        setenv("MMK_HEAP_KEEP_MB", keep_mb, 1);
    mmk_heap *h;
    int rc = mmk_heap_open(path, MMK_HEAP_CREATE | MMK_HEAP_NOSYNC, &h);
    unsetenv("MMK_HEAP_KEEP_MB");
    unsetenv("MMK_HEAP_DIRTY");
    if (rc == -ENOTSUP) {
        printf("%s (%s): skipped (no userfaultfd write-protect here)\n", what,
               method ? method : "auto");
        return NULL;
    }
    CHECK_OK(rc);
    struct mmk_heap_stats st;
    CHECK_OK(mmk_heap_stats(h, &st));
    if (!strstr(st.dirty_method, "uffd")) {
        printf("%s (%s): skipped, tracking is %s here\n", what, method ? method : "auto",
               st.dirty_method);
        mmk_heap_close(h);
        return NULL;
    }
    return h;
}

/* Registering a grown range with the userfaultfd fails in the middle of a
 * transaction (injected): that commit must still log every written page
 * (kept copies from before included: their bytes equal the file), the
 * handle must then leave kept copies for the plain scan, log exact page
 * counts again, keep every byte, and still fault on stray writes. */
static void keep_lost(const char *dir, const char *method)
{
    char path[700];
    snprintf(path, sizeof path, "%s/lost.heap", dir);
    unlink(path);
    mmk_heap *h = open_uffd(path, method, NULL, "keep lost");
    if (!h)
        return;
    struct mmk_heap_stats st;
    mmk_ref a, b;
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_heap_alloc(h, 32 * 4096, &a));
    CHECK_OK(mmk_heap_set_root(h, a));
    uint8_t *p = mmk_heap_ptr(h, a);
    for (int i = 0; i < 32; i++)
        p[i * 4096 + 5] = 1;
    CHECK_OK(mmk_heap_commit(h));
    CHECK_OK(mmk_heap_stats(h, &st));
    uint64_t size0 = st.size;
    /* grow while registering fails; write old and new pages */
    mmk__hp_test_fail_register = 1;
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_heap_alloc(h, 8 << 20, &b));
    mmk__hp_test_fail_register = 0;
    CHECK_OK(mmk_heap_stats(h, &st));
    CHECK(st.size > size0);
    uint8_t *q = mmk_heap_ptr(h, b);
    p = mmk_heap_ptr(h, a);
    for (int i = 0; i < 32; i += 2)
        p[i * 4096 + 5] = 2;
    for (int i = 0; i < 2048; i += 16)
        q[i * 4096 + 9] = 3;
    ((mmk_ref *)p)[8] = b; /* the root object remembers the big one */
    CHECK_OK(mmk_heap_commit(h));
    CHECK(last_pages(h) >= 16 + 128);
    /* after: exact counts with the fallback */
    for (int round = 0; round < 3; round++) {
        CHECK_OK(mmk_heap_begin(h));
        p[3 * 4096 + 5] = (uint8_t)(10 + round);
        q[100 * 4096 + 9] = (uint8_t)(20 + round);
        CHECK_OK(mmk_heap_commit(h));
        /* two data pages, the header and their checksum page(s): copies
         * kept from before the failure must not count as written */
        CHECK(last_pages(h) >= 3 && last_pages(h) <= 5);
    }
    CHECK_OK(mmk_heap_stats(h, &st));
    printf("keep lost (%s): tracking is now %s\n", method ? method : "auto", st.dirty_method);
    CHECK(!strstr(st.dirty_method, "uffd"));
    CHECK_OK(mmk_heap_check(h));
    mmk_heap *o;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_NOSYNC | MMK_HEAP_RDONLY, &o));
    CHECK_OK(mmk_heap_read_begin(o));
    const uint8_t *op = mmk_heap_ptr(o, a), *oq = mmk_heap_ptr(o, b);
    for (int i = 0; i < 32; i++)
        CHECK_EQ(op[i * 4096 + 5], i == 3 ? 12 : i % 2 ? 1 : 2);
    for (int i = 0; i < 2048; i += 16)
        CHECK_EQ(oq[i * 4096 + 9], i == 100 ? 22 : 3);
    CHECK_EQ(oq[100 * 4096 + 9], 22);
    mmk_heap_read_end(o);
    mmk_heap_close(o);
    int ws = run_child(stray_write, q + 5 * 4096);
    CHECK(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGSEGV);
    mmk_heap_close(h);
}

/* A read view after commits that unmapped many pages (here: every page,
 * past a 1 MiB keep limit, in rounds that write a third of 2048 pages; the
 * bar is 4096 pages since the last view): the view closes the userfaultfd, so
 * its faults map pages around them (far fewer faults than pages); the next
 * transaction opens a new one, logs only what it writes and keeps every
 * byte, the mapping still faults on stray writes. */
static void view_pause(const char *dir, const char *method)
{
    char path[700];
    snprintf(path, sizeof path, "%s/pause.heap-log", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/pause.heap", dir);
    unlink(path);
    mmk_heap *h = open_uffd(path, method, "1", "view pause");
    if (!h)
        return;
    struct mmk_heap_stats st;
    enum { PAGES = 2048 };
    mmk_ref obj;
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_heap_alloc(h, PAGES * 4096, &obj));
    CHECK_OK(mmk_heap_set_root(h, obj));
    CHECK_OK(mmk_heap_commit(h));
    uint8_t *p = mmk_heap_ptr(h, obj);
    for (int round = 1; round <= 3; round++) {
        CHECK_OK(mmk_heap_begin(h));
        for (int i = 0; i < PAGES; i += 3)
            p[i * 4096 + 9] = (uint8_t)round;
        CHECK_OK(mmk_heap_commit(h));
    }
    /* a small one: its pages are kept copies when the view starts */
    CHECK_OK(mmk_heap_begin(h));
    for (int i = 0; i < 20; i++)
        p[(i * 97 % PAGES) * 4096 + 11] = 1;
    CHECK_OK(mmk_heap_commit(h));
    struct rusage r0, r1;
    CHECK_OK(mmk_heap_read_begin(h));
    CHECK_OK(mmk_heap_stats(h, &st));
    CHECK(!strstr(st.dirty_method, "uffd")); /* closed for the view */
    getrusage(RUSAGE_SELF, &r0);
    unsigned sum = 0;
    for (int i = 0; i < PAGES; i++)
        sum += p[i * 4096 + 9];
    getrusage(RUSAGE_SELF, &r1);
    mmk_heap_read_end(h);
    CHECK_EQ(sum, 3u * ((PAGES + 2) / 3));
    long faults = r1.ru_minflt - r0.ru_minflt;
    printf("view pause (%s): %ld faults to read %d pages\n", method ? method : "auto", faults,
           PAGES);
    CHECK(faults < PAGES / 2);
    /* open again for the next transaction: exact page counts, every byte */
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_heap_stats(h, &st));
    CHECK(strstr(st.dirty_method, "uffd"));
    for (int i = 1; i < PAGES; i += 41)
        p[i * 4096 + 9] = 7;
    CHECK_OK(mmk_heap_commit(h));
    CHECK(last_pages(h) >= 50 && last_pages(h) <= 50 + 4);
    CHECK_OK(mmk_heap_begin(h));
    for (int i = 0; i < PAGES; i += 2)
        p[i * 4096 + 10] = 5;
    CHECK_OK(mmk_heap_commit(h));
    CHECK(last_pages(h) >= PAGES / 2 && last_pages(h) <= PAGES / 2 + 4);
    CHECK_OK(mmk_heap_check(h));
    mmk_heap *o;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_NOSYNC | MMK_HEAP_RDONLY, &o));
    CHECK_OK(mmk_heap_read_begin(o));
    const uint8_t *op = mmk_heap_ptr(o, obj);
    for (int i = 0; i < PAGES; i++) {
        CHECK_EQ(op[i * 4096 + 9], i % 41 == 1 ? 7 : i % 3 == 0 ? 3 : 0);
        CHECK_EQ(op[i * 4096 + 10], i % 2 == 0 ? 5 : 0);
        CHECK_EQ(op[i * 4096 + 11], i % 97 == 0 && i / 97 < 20 ? 1 : 0);
    }
    mmk_heap_read_end(o);
    mmk_heap_close(o);
    int ws = run_child(stray_write, p + 5 * 4096);
    CHECK(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGSEGV);
    /* a small transaction and a view: below the bar, nothing closes */
    CHECK_OK(mmk_heap_begin(h));
    p[3 * 4096] = 1;
    CHECK_OK(mmk_heap_commit(h));
    CHECK_OK(mmk_heap_read_begin(h));
    CHECK_OK(mmk_heap_stats(h, &st));
    CHECK(strstr(st.dirty_method, "uffd"));
    mmk_heap_read_end(h);
    mmk_heap_close(h);
}

int main(void)
{
    const char *dir = test_tmpdir();
    for (int m = 0; m <= AUTO; m++)
        run(m, dir);
    kept_copies(dir);
    keep_limit(dir);
    mmk__hp_test_no_process_madvise = 1; /* the fallback: one madvise a range */
    keep_limit(dir);
    mmk__hp_test_no_process_madvise = 0;
    keep_lost(dir, NULL);
    keep_lost(dir, "uffd");
    view_pause(dir, NULL);
    view_pause(dir, "uffd");
    unsetenv("MMK_HEAP_DIRTY");
    rm_rf(dir);
    printf("ok\n");
    return 0;
}
