/* The I/O layer: every file write and sync of the heap goes through it.
 * - one fdatasync per durable commit (none with MMK_HEAP_NOSYNC);
 * - a failed log write or sync fails the commit and leaves the previous
 *   commit, in this handle and after reopening (no retry that assumes the
 *   data reached the disk);
 * - a failed apply after the durable point: the commit is reported failed,
 *   the handle refuses further work, and the next open has the commit;
 * - a changed boot id (a reboot: unsynced heap writes may be lost) makes
 *   open replay the whole log, so lost heap pages come back;
 * - a writer killed half-way through applying: other handles' next read
 *   view recovers (read-write) or refuses (read-only), never shows a mix. */
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include <mmkit/mmkit.h>
#include "heap_io.h"
#include "testutil.h"

static int syncs, fail_sync, fail_pwritev, fail_pwrite_after_sync, armed;
static uint8_t boot[16];

static int h_fdatasync(int fd)
{
    syncs++;
    if (fail_sync) {
        fail_sync = 0;
        return -EIO;
    }
    if (fail_pwrite_after_sync)
        armed = 1;
    return mmk__heap_io_default.fdatasync(fd);
}

static ssize_t h_pwritev(int fd, const struct iovec *v, int n, uint64_t off)
{
    if (fail_pwritev) {
        fail_pwritev = 0;
        return -ENOSPC;
    }
    return mmk__heap_io_default.pwritev(fd, v, n, off);
}

static ssize_t h_pwrite(int fd, const void *b, size_t n, uint64_t off)
{
    if (armed) {
        armed = fail_pwrite_after_sync = 0;
        return -EIO;
    }
    return mmk__heap_io_default.pwrite(fd, b, n, off);
}

/* die_after_pwrites > 0: after the log sync, the process kills itself right
 * after that many more pwrites (the first is the "applying" mark). */
static int die_after_pwrites, dying;

static ssize_t k_pwrite(int fd, const void *b, size_t n, uint64_t off)
{
    ssize_t r = mmk__heap_io_default.pwrite(fd, b, n, off);
    if (dying && --die_after_pwrites == 0)
        raise(SIGKILL);
    return r;
}

static int k_fdatasync(int fd)
{
    int rc = mmk__heap_io_default.fdatasync(fd);
    if (die_after_pwrites)
        dying = 1;
    return rc;
}

static const struct mmk__heap_io killer = {.pwrite = k_pwrite, .fdatasync = k_fdatasync};

/* A writer dies half-way through applying a commit that spans two pages:
 * a reader's next view (in another process, handle already open) must
 * recover it and see both pages agree, never one old and one new. */
static void test_died_applying(void)
{
    char p[700];
    snprintf(p, sizeof p, "%s/apply.heap", test_tmpdir());
    mmk_heap *h;
    CHECK_OK(mmk_heap_open(p, MMK_HEAP_CREATE, &h));
    CHECK_OK(mmk_heap_begin(h));
    mmk_ref r;
    CHECK_OK(mmk_heap_alloc(h, 3 * 4096, &r));
    CHECK_OK(mmk_heap_set_root(h, r));
    CHECK_OK(mmk_heap_commit(h));
    mmk_heap *ro;
    CHECK_OK(mmk_heap_open(p, MMK_HEAP_RDONLY, &ro));
    for (int k = 1; k <= 3; k++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            mmk_heap *c;
            if (mmk_heap_open(p, 0, &c))
                _exit(2);
            mmk__heap_io_set_hooks(&killer);
            die_after_pwrites = k; /* die after the mark, 1 page, 2 pages */
            mmk_heap_begin(c);
            uint64_t *w = mmk_heap_ptr(c, mmk_heap_root(c));
            w[0] = w[512] = w[1024] = 100 + (uint64_t)k;
            mmk_heap_commit(c);
            _exit(3);
        }
        int st;
        waitpid(pid, &st, 0);
        CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        /* the read-only reader cannot repair: it waits for a writer or says so */
        int rc = mmk_heap_read_begin(ro);
        CHECK(rc == -EROFS);
        CHECK_OK(mmk_heap_read_begin(h)); /* read-write handle: recovers */
        const uint64_t *w = mmk_heap_ptr(h, mmk_heap_root(h));
        CHECK_EQ(w[0], 100 + k);
        CHECK_EQ(w[512], 100 + k);
        CHECK_EQ(w[1024], 100 + k);
        mmk_heap_read_end(h);
        CHECK_OK(mmk_heap_read_begin(ro));
        w = mmk_heap_ptr(ro, mmk_heap_root(ro));
        CHECK(w[0] == 100 + (uint64_t)k && w[1024] == w[0]);
        mmk_heap_read_end(ro);
        CHECK_OK(mmk_heap_check(h));
    }
    mmk_heap_close(ro);
    mmk_heap_close(h);
    printf("a writer killed after 1, 2 and 3 of its applying writes: views recovered\n");
}

static int h_boot(uint8_t out[16])
{
    memcpy(out, boot, 16);
    return 0;
}

static const struct mmk__heap_io hooks = {
    .fdatasync = h_fdatasync, .pwritev = h_pwritev, .pwrite = h_pwrite, .boot_id = h_boot};

static char path[600];

static uint64_t *counter(mmk_heap *h) { return mmk_heap_ptr(h, mmk_heap_root(h)); }

static int bump(mmk_heap *h, uint64_t v)
{
    CHECK_OK(mmk_heap_begin(h));
    *counter(h) = v;
    return mmk_heap_commit(h);
}

int main(void)
{
    snprintf(path, sizeof path, "%s/io.heap", test_tmpdir());
    memset(boot, 1, 16);
    mmk__heap_io_set_hooks(&hooks);
    mmk_heap *h;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE, &h));
    CHECK_OK(mmk_heap_begin(h));
    mmk_ref r;
    CHECK_OK(mmk_heap_alloc(h, 8, &r));
    CHECK_OK(mmk_heap_set_root(h, r));
    CHECK_OK(mmk_heap_commit(h));

    /* one sync per commit */
    int s0 = syncs;
    for (uint64_t i = 1; i <= 20; i++)
        CHECK_OK(bump(h, i));
    CHECK_EQ(syncs - s0, 20);
    printf("20 durable commits: %d fdatasync calls\n", syncs - s0);

    /* failed sync: not durable, undone */
    fail_sync = 1;
    CHECK_EQ(bump(h, 999), -EIO);
    CHECK_EQ(*counter(h), 20);
    /* failed record write (disk full) */
    fail_pwritev = 1;
    CHECK_EQ(bump(h, 998), -ENOSPC);
    CHECK_EQ(*counter(h), 20);
    CHECK_OK(bump(h, 21));
    mmk_heap_close(h);
    CHECK_OK(mmk_heap_open(path, 0, &h));
    CHECK_EQ(*counter(h), 21);
    CHECK_OK(mmk_heap_check(h));

    /* failed apply after the durable point */
    fail_pwrite_after_sync = 1;
    CHECK(bump(h, 22) < 0);
    CHECK_EQ(mmk_heap_begin(h), -EIO); /* the handle is done */
    mmk_heap_close(h);
    CHECK_OK(mmk_heap_open(path, 0, &h));
    CHECK_EQ(*counter(h), 22); /* recovered from the log */
    CHECK_OK(mmk_heap_check(h));

    /* NOSYNC: no syncs at all */
    mmk_heap_close(h);
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_NOSYNC, &h));
    s0 = syncs;
    for (uint64_t i = 23; i <= 30; i++)
        CHECK_OK(bump(h, i));
    CHECK_EQ(syncs, s0);
    mmk_heap_close(h);

    /* A "reboot" that lost the heap file's unsynced pages: the counter's
     * page goes back to zero on disk; open replays the log from its base. */
    CHECK_OK(mmk_heap_open(path, 0, &h));
    CHECK_OK(bump(h, 31));
    uint64_t off = mmk_heap_root(h);
    mmk_heap_close(h);
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    static const char zero[4096];
    CHECK(pwrite(fd, zero, 4096, (off_t)(off & ~4095ull)) == 4096);
    close(fd);
    memset(boot, 2, 16);
    CHECK_OK(mmk_heap_open(path, 0, &h));
    CHECK_EQ(*counter(h), 31);
    CHECK_OK(mmk_heap_check(h));
    mmk_heap_close(h);
    /* and after that recovery a checkpoint made the file durable: the same
     * loss again is not repaired from the log, but open sees no torn state */
    CHECK_OK(mmk_heap_open(path, 0, &h));
    CHECK_EQ(*counter(h), 31);
    mmk_heap_close(h);

    /* Two handles (as two processes would): A checkpoints (a new log
     * generation), then B commits. B's record must belong to the new
     * generation, or a reboot that lost the heap page would lose B's commit. */
    setenv("MMK_HEAP_LOG_LIMIT", "8192", 1);
    mmk_heap *a, *b;
    CHECK_OK(mmk_heap_open(path, 0, &a));
    unsetenv("MMK_HEAP_LOG_LIMIT");
    CHECK_OK(mmk_heap_open(path, 0, &b));
    CHECK_OK(bump(b, 40)); /* B's cache is warm */
    struct mmk_heap_stats st;
    for (uint64_t i = 41; i < 60; i++)
        CHECK_OK(bump(a, i));
    CHECK_OK(mmk_heap_stats(a, &st));
    CHECK(st.log_bytes < 8192 + 4096); /* A checkpointed */
    off = mmk_heap_root(b);
    static char before[4096]; /* the page as the checkpoint made it durable */
    fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    CHECK(pread(fd, before, 4096, (off_t)(off & ~4095ull)) == 4096);
    CHECK_OK(bump(b, 77));
    mmk_heap_close(a);
    mmk_heap_close(b);
    CHECK(pwrite(fd, before, 4096, (off_t)(off & ~4095ull)) == 4096); /* B's write lost */
    close(fd);
    memset(boot, 3, 16);
    CHECK_OK(mmk_heap_open(path, 0, &h));
    CHECK_EQ(*counter(h), 77);
    CHECK_OK(mmk_heap_check(h));
    mmk_heap_close(h);

    mmk__heap_io_set_hooks(NULL);
    test_died_applying();
    rm_rf(test_tmpdir());
    printf("ok\n");
    return 0;
}
