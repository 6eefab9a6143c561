// mmk-test: timeout=300
/* Injected I/O faults for the persistent heap, through its I/O layer and
 * the power-loss model of tests/powersim.h:
 *  - write fails with EIO or ENOSPC (after writing part), at every write of
 *    a commit, in the log and in the heap file;
 *  - fdatasync fails once, at every sync of a commit (record, checkpoint of
 *    the heap file, new log header), with the lost data landing on the disk
 *    entirely, not at all, or chunk by chunk (Linux marks the pages clean
 *    either way: they are never written again);
 *  - short writes;
 *  - ftruncate failing with ENOSPC when the heap grows;
 *  - pread fails with EIO during mmk_heap_check, open and recovery;
 *  - the heap file truncated under an open heap.
 * After each fault: the call reports an error or the commit is durable;
 * nothing acknowledged is lost; the handle shows the previous commit or
 * refuses work; power-loss images (new boot) and a process crash (same
 * boot) recover to the allowed commits with mmk_heap_check passing; the
 * next commits and a reopen are clean. Each of these cases once failed
 * (bugs B2-B5, B7 of the heap's I/O-fault review, fixed in 4e3fe59). */
#include <signal.h>
#include <sys/wait.h>

#include <mmkit/mmkit.h>

#include "powersim.h"

#define NB 6
struct st {
    uint64_t k;
    mmk_ref b[NB];
    uint64_t v[NB]; /* the commit that last wrote block i */
};
static const uint64_t sizes[NB] = {104, 3000, 5000, 40000, 130000, 300000};

static char dir[PATH_MAX], path[PATH_MAX + 32], imgpath[PATH_MAX + 32];
static long failures, cases, images, durable_but_error;

static mmk_heap *H, *H2; /* H2: another handle, opened before the fault */
static struct ps_image img;
static uint64_t boot_no = 1000;

#define EXPECT(cond, ...)                                                                \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            failures++;                                                                  \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                         \
            fprintf(stderr, __VA_ARGS__);                                                \
            fprintf(stderr, "\n");                                                       \
        }                                                                                \
    } while (0)

/* Commit number k: every word of the blocks it writes holds k. Commits up
 * to 3 write every block, later ones only block 0, so pages a lost write
 * should have carried are not repaired by later commits. */
static int commit_k(mmk_heap *h, uint64_t k)
{
    int rc = mmk_heap_begin(h);
    if (rc)
        return rc;
    struct st *s = mmk_heap_ptr(h, mmk_heap_root(h));
    if (!s) {
        mmk_ref r;
        CHECK_OK(mmk_heap_alloc(h, sizeof *s, &r));
        CHECK_OK(mmk_heap_set_root(h, r));
        s = mmk_heap_ptr(h, r);
    }
    for (int i = 0; i < NB; i++) {
        if (!s->b[i])
            CHECK_OK(mmk_heap_alloc(h, sizes[i], &s->b[i]));
        if (k > 3 && i > 0)
            continue;
        uint64_t *p = mmk_heap_ptr(h, s->b[i]);
        for (uint64_t j = 0; j < sizes[i] / 8; j++)
            p[j] = k;
        s->v[i] = k;
    }
    s->k = k;
    return mmk_heap_commit(h);
}

/* The commit the heap shows: k, 0 (empty), -1 (a mix), or an error. */
static long state_of(mmk_heap *h)
{
    int rc = mmk_heap_read_begin(h);
    if (rc)
        return rc;
    long k = 0;
    const struct st *s = mmk_heap_ptr(h, mmk_heap_root(h));
    if (s) {
        k = (long)s->k;
        for (int i = 0; i < NB && k >= 0; i++) {
            const uint64_t *p = mmk_heap_ptr(h, s->b[i]);
            if (s->v[i] > s->k || (s->k <= 3 && s->v[i] != s->k))
                k = -1;
            for (uint64_t j = 0; p && k >= 0 && j < sizes[i] / 8; j++)
                if (p[j] != s->v[i])
                    k = -1;
        }
    }
    mmk_heap_read_end(h);
    return k;
}

/* A fresh heap holding commits 1..base, then recorded from here on. */
static void setup(int base, const char *log_limit)
{
    mmk_heap_close(H);
    mmk_heap_close(H2);
    H = H2 = NULL;
    ps_fini();
    setenv("MMK_HEAP_LOG_LIMIT", log_limit, 1);
    char lp[PATH_MAX + 40];
    snprintf(lp, sizeof lp, "%s-log", path);
    unlink(path);
    unlink(lp);
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE, &H));
    for (int k = 1; k <= base; k++)
        CHECK_OK(commit_k(H, (uint64_t)k));
    mmk_heap_close(H);
    ps_init(path, (uint64_t)cases + 1);
    CHECK_OK(mmk_heap_open(path, 0, &H));
    CHECK_OK(mmk_heap_open(path, 0, &H2));
    cases++;
}

/* Open an image (power: new boot) and return the commit it shows, or an
 * error (negative, < -1); -1 for a mixed state; checks mmk_heap_check. */
static long open_image(int power, const char *what)
{
    ps_write_image(&img, imgpath);
    int rec = PS.recording;
    uint64_t boot = PS.boot_no;
    PS.recording = 0;
    if (power)
        ps_set_boot(boot_no++);
    images++;
    mmk_heap *g = NULL;
    long k = mmk_heap_open(imgpath, 0, &g);
    if (!k) {
        char msg[200];
        int rc = mmk_heap_check_report(g, msg, sizeof msg);
        if (rc == -EIO && PS.hit)
            k = rc; /* an injected read fault reached the check: an honest error */
        else {
            EXPECT(rc == 0, "%s: mmk_heap_check after recovery: %s", what, msg);
            k = state_of(g);
        }
    }
    mmk_heap_close(g);
    ps_set_boot(boot);
    PS.recording = rec;
    return k;
}

/* Power-loss images now (several plans) and the process crash: each must
 * recover to a commit in [lo, hi]. */
static void images_now(long lo, long hi, const char *what)
{
    struct ps_plan plans[] = {
        {.mode = PS_NONE},
        {.mode = PS_ALL},
        {.mode = PS_SUBSET, .p = 0.5},
        {.mode = PS_SUBSET, .p = 0.5, .tear = 512, .q = 0.5},
        {.mode = PS_SUBSET, .p = 0.8, .tear = 4096, .q = 0.5},
    };
    char name[120];
    for (size_t i = 0; i < sizeof plans / sizeof plans[0]; i++) {
        if (test_scale() < 1 && (i == 1 || i == 2))
            continue; /* sanitizer builds: no "all" and no whole-write subset */
        ps_build(&img, &plans[i]);
        long k = open_image(1, what);
        EXPECT(k >= lo && k <= hi, "%s: power loss (%s): recovered %ld, allowed %ld..%ld", what,
               ps_plan_name(&plans[i], name, sizeof name), k, lo, hi);
    }
    ps_build_real(&img);
    long k = open_image(0, what);
    EXPECT(k >= lo && k <= hi, "%s: process crash: recovered %ld, allowed %ld..%ld", what, k, lo,
           hi);
}

/* After a fault in commit 3 (base 2): what the handle, the disk and the
 * next commits must show. rc: commit's result; durable: the record's log
 * sync had completed when the fault hit. */
static void after_fault(int rc, int durable, const char *what)
{
    long lo = 2, hi = 2;
    if (rc == 0)
        lo = hi = 3;            /* claimed: must be there */
    else if (durable)
        hi = 3, durable_but_error++; /* reported an error after the durable point */
    /* a handle opened before the fault, as a reader in another process */
    long k2 = state_of(H2);
    EXPECT(k2 == -EIO || k2 == MMK_ECORRUPT || (k2 >= lo && k2 <= hi),
           "%s: another handle's read view shows %ld", what, k2);
    if (rc) {
        /* the handle shows the previous commit or refuses work */
        long k = state_of(H);
        EXPECT(k == -EIO || k == 2 || (durable && k == 3),
               "%s: handle after the failed commit shows %ld", what, k);
    }
    images_now(lo, hi, what);
    /* the next commits (reopen first if the handle refuses) */
    int r = commit_k(H, 4);
    if (r == -EIO) {
        mmk_heap_close(H);
        CHECK_OK(mmk_heap_open(path, 0, &H));
        long k = state_of(H);
        EXPECT(k >= lo && k <= hi, "%s: reopen after the fault shows %ld", what, k);
        r = commit_k(H, 4);
    }
    EXPECT(r == 0, "%s: next commit: %s", what, mmk_strerror(r));
    if (r)
        return;
    images_now(4, 4, what);
    for (uint64_t k = 5; k <= 8; k++) /* through checkpoints */
        CHECK_OK(commit_k(H, k));
    images_now(8, 8, what);
    mmk_heap_close(H);
    CHECK_OK(mmk_heap_open(path, 0, &H));
    EXPECT(state_of(H) == 8, "%s: reopen after 8 commits shows %ld", what, state_of(H));
    EXPECT(mmk_heap_check(H) == 0, "%s: check after reopen", what);
}

static void write_faults(void)
{
    static const int errs[] = {-EIO, -ENOSPC};
    for (int e = 0; e < 2; e++)
        for (int file = 0; file < 2 * PS_NFILE; file++)
            for (long n = 1;; n++) {
                /* file >= 2: checkpoint at every commit */
                setup(2, file >= PS_NFILE ? "1" : "33554432");
                PS.fault = (struct ps_faults){.file = file % PS_NFILE, .write_in = n,
                                              .write_err = errs[e]};
                uint64_t syncs0 = PS.syncs_ok[PS_LOG];
                int rc = commit_k(H, 3);
                int hit = PS.hit;
                PS.fault = (struct ps_faults){0};
                if (!hit)
                    break;
                char what[96];
                snprintf(what, sizeof what, "%s on write %ld of the %s%s", mmk_strerror(errs[e]), n,
                         file % PS_NFILE == PS_LOG ? "log" : "heap file",
                         file >= PS_NFILE ? " (checkpointing)" : "");
                int durable = PS.hit_log_syncs > syncs0;
                EXPECT(rc != 0 || durable, "%s: commit claimed success", what);
                after_fault(rc, durable, what);
            }
}

static void sync_faults(void)
{
    for (int outcome = 0; outcome < 3; outcome++)
        for (long n = 1;; n++) {
            setup(2, "1"); /* every commit checkpoints: record, heap file, log header */
            PS.fault = (struct ps_faults){.file = -1, .sync_in = n, .sync_outcome = outcome};
            uint64_t syncs0 = PS.syncs_ok[PS_LOG];
            int rc = commit_k(H, 3);
            int hit = PS.hit, file = PS.hit_file;
            PS.fault = (struct ps_faults){0};
            if (!hit)
                break;
            char what[120];
            static const char *how[] = {"chunks landed at random", "all landed", "nothing landed"};
            snprintf(what, sizeof what, "fdatasync %ld (%s) failed, %s", n,
                     file == PS_LOG ? "log" : "heap file", how[outcome]);
            int durable = PS.hit_log_syncs > syncs0;
            if (file == PS_LOG && !durable)
                EXPECT(rc != 0, "%s: commit claimed success", what);
            after_fault(rc, durable, what);
        }
}

static void short_writes(void)
{
    for (int file = 0; file < 2 * PS_NFILE; file++)
        for (long n = 1;; n++) {
            setup(2, file >= PS_NFILE ? "1" : "33554432");
            PS.fault = (struct ps_faults){.file = file % PS_NFILE, .short_in = n};
            uint64_t syncs0 = PS.syncs_ok[PS_LOG];
            int rc = commit_k(H, 3);
            int hit = PS.hit;
            PS.fault = (struct ps_faults){0};
            if (!hit)
                break;
            char what[96];
            snprintf(what, sizeof what, "short write %ld of the %s%s (commit: %s)", n,
                     file % PS_NFILE == PS_LOG ? "log" : "heap file",
                     file >= PS_NFILE ? " (checkpointing)" : "", mmk_strerror(rc));
            after_fault(rc, PS.hit_log_syncs > syncs0, what);
        }
}

/* Growth fails (ftruncate: ENOSPC): the allocation fails, the transaction
 * goes on and commits what it did; nothing else changes. */
static void growth_fault(void)
{
    setup(2, "33554432");
    CHECK_OK(mmk_heap_begin(H));
    PS.fault = (struct ps_faults){.file = PS_HEAP, .trunc_in = 1};
    mmk_ref big = 0;
    int rc = mmk_heap_alloc(H, 8u << 20, &big);
    int hit = PS.hit;
    PS.fault = (struct ps_faults){0};
    EXPECT(hit && rc < 0, "growth with ftruncate failing: alloc %s (fault hit %d)",
           mmk_strerror(rc), hit);
    CHECK_OK(mmk_heap_abort(H));
    CHECK_OK(commit_k(H, 3));
    images_now(3, 3, "after a failed growth");
    mmk_heap_close(H);
    CHECK_OK(mmk_heap_open(path, 0, &H));
    EXPECT(state_of(H) == 3 && mmk_heap_check(H) == 0, "reopen after a failed growth");
    /* the same growth without the fault */
    CHECK_OK(mmk_heap_begin(H));
    EXPECT(mmk_heap_alloc(H, 8u << 20, &big) == 0, "growth after the fault");
    memset(mmk_heap_ptr(H, big), 0x5c, 8u << 20);
    CHECK_OK(mmk_heap_commit(H));
    images_now(3, 3, "after growth");
}

static void read_faults(void)
{
    /* mmk_heap_check: an unreadable page is an error, never success */
    setup(2, "33554432");
    for (long n = 1; n <= 40; n++) {
        PS.fault = (struct ps_faults){.file = PS_HEAP, .read_in = n};
        int rc = mmk_heap_check(H);
        int hit = PS.hit;
        PS.fault = (struct ps_faults){0};
        if (!hit)
            break;
        EXPECT(rc == -EIO || rc == MMK_ECORRUPT, "check with read %ld failing: %d", n, rc);
        PS.hit = 0;
    }
    EXPECT(mmk_heap_check(H) == 0, "check after the read faults");

    /* open and recovery: commits 3..5 are only in the log (heap-file
     * writes lost): any failed read makes open fail, never open an older
     * commit */
    for (uint64_t k = 3; k <= 5; k++)
        CHECK_OK(commit_k(H, k));
    struct ps_plan none = {.mode = PS_NONE};
    ps_build(&img, &none);
    /* every read failing: open fails */
    PS.fault = (struct ps_faults){.file = -1, .read_every = 1};
    long k = open_image(1, "recovery with every read failing");
    PS.fault = (struct ps_faults){0};
    EXPECT(k == -EIO, "recovery with every read failing: %ld", k);
    ps_build(&img, &none);
    /* one read failing anywhere: an error or the right commit, never an
     * older one (a read error is not the end of the log) */
    for (long n = 1;; n++) {
        PS.fault = (struct ps_faults){.file = -1, .read_in = n};
        PS.hit = 0;
        long got = open_image(1, "recovery with a read failing");
        int hit = PS.hit;
        PS.fault = (struct ps_faults){0};
        if (!hit)
            break;
        EXPECT(got == 5 || got == -EIO || got == MMK_ECORRUPT,
               "recovery with read %ld failing (file %d): %ld (%s), commit 5 acknowledged", n,
               PS.hit_file, got, got < -1 ? mmk_strerror((int)got) : "state");
        ps_build(&img, &none); /* the failed open may have written */
    }
    k = open_image(1, "recovery");
    EXPECT(k == 5, "recovery without faults: %ld", k);
}

/* The heap file truncated under an open heap: each call that touches the
 * missing pages returns an error, never dies of SIGBUS. */
static void truncation(void)
{
    static const char *ops[] = {"mmk_heap_check", "mmk_heap_read_begin", "mmk_heap_begin",
                                "commit", "mmk_heap_open"};
    static const uint64_t to[] = {0, 4096, 512 * 1024};
    for (size_t t = 0; t < 3; t++)
        for (size_t o = 0; o < 5; o++) {
            setup(2, "33554432");
            mmk_heap_close(H);
            mmk_heap_close(H2);
            H = H2 = NULL;
            ps_fini();
            fflush(NULL);
            pid_t pid = fork();
            CHECK(pid >= 0);
            if (pid == 0) {
                mmk_heap *h;
                if (mmk_heap_open(path, 0, &h))
                    _exit(3);
                if (truncate(path, (off_t)to[t]))
                    _exit(4);
                int rc = 0;
                switch (o) {
                case 0: rc = mmk_heap_check(h); break;
                case 1:
                    rc = mmk_heap_read_begin(h);
                    if (!rc)
                        mmk_heap_read_end(h);
                    break;
                case 2:
                    rc = mmk_heap_begin(h);
                    if (!rc)
                        mmk_heap_abort(h);
                    break;
                case 3: rc = commit_k(h, 3); break;
                case 4: {
                    mmk_heap *g;
                    rc = mmk_heap_open(path, 0, &g);
                    mmk_heap_close(g);
                    break;
                }
                }
                _exit(rc == 0 ? 0 : rc == -EIO ? 10 : rc == MMK_ECORRUPT ? 11 : rc == MMK_EFORMAT ? 12 : 13);
            }
            int stt;
            waitpid(pid, &stt, 0);
            int crashed = WIFSIGNALED(stt);
            int code = WIFEXITED(stt) ? WEXITSTATUS(stt) : -1;
            printf("  truncated to %llu: %-20s %s\n", (unsigned long long)to[t], ops[o],
                   crashed ? "died of a signal" : code == 0 ? "returned 0" : code == 10 ? "-EIO"
                   : code == 11 ? "MMK_ECORRUPT" : code == 12 ? "MMK_EFORMAT" : "other error");
            int ok = !crashed && (code >= 10 || (code == 0 && o != 0 && o != 4));
            EXPECT(ok, "heap file truncated to %llu: %s: status %#x", (unsigned long long)to[t],
                   ops[o], stt);
        }
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    char tmpl[PATH_MAX];
    snprintf(tmpl, sizeof tmpl, "%s/mmkit-iofault-XXXXXX", base);
    CHECK(mkdtemp(tmpl));
    CHECK(realpath(tmpl, dir));
    snprintf(path, sizeof path, "%s/f.heap", dir);
    snprintf(imgpath, sizeof imgpath, "%s/img.heap", dir);
    setenv("MMK_HEAP_RESERVE", "268435456", 1);
    double t0 = now_sec();
    write_faults();
    printf("write faults: %ld cases, %ld images, %ld failures\n", cases, images, failures);
    sync_faults();
    printf("+ sync faults: %ld cases, %ld images, %ld failures\n", cases, images, failures);
    short_writes();
    growth_fault();
    printf("+ short writes, failed growth: %ld cases, %ld images, %ld failures\n", cases, images, failures);
    read_faults();
    printf("+ read faults: %ld cases, %ld images, %ld failures\n", cases, images, failures);
    truncation();
    mmk_heap_close(H);
    mmk_heap_close(H2);
    ps_fini();
    printf("total: %ld fault cases, %ld crash images, %ld commits that failed after the durable "
           "point, %ld failures, %.1f s\n",
           cases, images, durable_but_error, failures, now_sec() - t0);
    rm_rf(dir);
    return failures ? 1 : 0;
}
