// mmk-test: timeout=120
/* fault.h: guarded copies, loads and stores turn SIGSEGV/SIGBUS into errors;
 * every other fault reaches the handler that was there before, or kills by
 * the same signal. Chaining cases run in child processes. */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>

#include <mmkit/mmkit.h>
#include "fault_internal.h"
#include "testutil.h"

MMK_TEST_FAULT_OPTIONS

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static size_t page;

/* A file of two pages, mapped, then truncated to one: the second page of
 * the mapping raises SIGBUS. */
static char *truncated_map(int *fd_out)
{
    char path[600];
    snprintf(path, sizeof path, "%s/trunc-XXXXXX", test_tmpdir());
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    CHECK(ftruncate(fd, (off_t)(2 * page)) == 0);
    char *m = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(m != MAP_FAILED);
    memset(m, 0x5a, 2 * page);
    CHECK(ftruncate(fd, (off_t)page) == 0);
    *fd_out = fd;
    return m;
}

static void test_copy_sizes(void)
{
    /* Every size up to 300 and a few large ones, at odd offsets; bytes
     * around the destination stay untouched. */
    size_t cap = 20000;
    unsigned char *src = malloc(cap + 64), *dst = malloc(cap + 128);
    CHECK(src && dst);
    for (size_t i = 0; i < cap + 64; i++)
        src[i] = (unsigned char)(i * 131 + 7);
    size_t sizes[400], ns = 0;
    for (size_t n = 0; n <= 300; n++)
        sizes[ns++] = n;
    size_t big[] = {511, 512, 513, 777, 1023, 1024, 1025, 2047, 3000, 4095, 4096, 4097, 8192, 12345, 20000};
    for (size_t i = 0; i < NELEM(big); i++)
        sizes[ns++] = big[i];
    for (size_t k = 0; k < ns; k++) {
        size_t n = sizes[k];
        for (size_t so = 0; so < 3; so++) {
            memset(dst, 0xee, cap + 128);
            CHECK_EQ(mmk_copy_guarded(dst + 32 + so * 5, src + so * 3, n), 0);
            CHECK(memcmp(dst + 32 + so * 5, src + so * 3, n) == 0);
            for (size_t i = 0; i < 32 + so * 5; i++)
                CHECK(dst[i] == 0xee);
            for (size_t i = 32 + so * 5 + n; i < cap + 128; i++)
                CHECK(dst[i] == 0xee);
            memset(dst, 0xee, cap + 128);
            CHECK_EQ(mmk_store_guarded(dst + 1 + so, src, n), 0);
            CHECK(n == 0 || memcmp(dst + 1 + so, src, n) == 0);
            CHECK(dst[0] == 0xee && dst[1 + so + n] == 0xee);
        }
    }
    free(src);
    free(dst);
}

/* Destination 0..64 and 4032..4095 bytes past the source modulo 4 KiB:
 * 1..63 takes the vector loop instead of rep movsb from 4 KiB on x86-64.
 * Every byte lands, nothing around it is touched, and a source or
 * destination that runs into an unmapped page gives -EFAULT. */
static void test_copy_distances(void)
{
    void *r;
    CHECK_OK(mmk_reserve(16 * page, &r));
    unsigned char *src = r, *dst = (unsigned char *)r + 8 * page;
    CHECK_OK(mmk_commit(r, 7 * page));
    CHECK_OK(mmk_commit(dst, 7 * page));
    for (size_t i = 0; i < 7 * page; i++)
        src[i] = (unsigned char)(i * 37 + 11);
    size_t ds[] = {0, 1, 8, 15, 16, 17, 32, 48, 62, 63, 64, 65, 4032, 4080, 4095};
    size_t ns[] = {65, 100, 127, 128, 129, 255, 256, 257, 1000, 4095, 4096, 4097, 8000, 20000};
    for (size_t a = 0; a < NELEM(ds); a++)
        for (size_t b = 0; b < NELEM(ns); b++) {
            size_t n = ns[b];
            unsigned char *s = src + 3, *d = dst + 3 + ds[a];
            memset(dst, 0xee, 7 * page);
            CHECK_EQ(mmk_copy_guarded(d, s, n), 0);
            CHECK(memcmp(d, s, n) == 0);
            CHECK(d[-1] == 0xee && d[n] == 0xee);
            memset(dst, 0xee, 7 * page);
            CHECK_EQ(mmk_store_guarded(d, s, n), 0);
            CHECK(memcmp(d, s, n) == 0);
            CHECK(d[-1] == 0xee && d[n] == 0xee);
            memset(dst, 0xee, 7 * page);
            mmk__copy(d, s, n); /* the unguarded copy rings and maps use */
            CHECK(memcmp(d, s, n) == 0);
            CHECK(d[-1] == 0xee && d[n] == 0xee);
            /* The source's last 10 bytes lie in the unmapped page. */
            unsigned char *fs = src + 7 * page - (n - 10);
            unsigned char *fd = dst + ((uintptr_t)fs % page + ds[a]) % page;
            CHECK_EQ(mmk_copy_guarded(fd, fs, n), -EFAULT);
            /* The destination's last 10 bytes lie past the committed pages. */
            unsigned char *sd = dst + 7 * page - (n - 10);
            CHECK_EQ(mmk_store_guarded(sd, src + ((uintptr_t)sd - ds[a]) % page, n), -EFAULT);
        }
    CHECK_OK(mmk_release(r, 16 * page));
}

static void test_unmapped(void)
{
    void *r;
    CHECK_OK(mmk_reserve(4 * page, &r));
    char *p = r;
    CHECK_OK(mmk_commit(p, page));
    memset(p, 1, page);
    char buf[8192];
    uint64_t before = mmk_fault_count();
    CHECK_EQ(mmk_copy_guarded(buf, p + page, 64), -EFAULT);
    /* Crossing from a good page into a PROT_NONE one, every copy path. */
    size_t ns[] = {2, 7, 15, 31, 63, 100, 200, 1000, 3000, 6000};
    for (size_t i = 0; i < NELEM(ns); i++)
        CHECK_EQ(mmk_copy_guarded(buf, p + page - ns[i] / 2, ns[i]), -EFAULT);
    CHECK_EQ(mmk_store_guarded(p + page - 10, buf, 20), -EFAULT);
    uint32_t v32 = 7;
    uint64_t v64 = 7;
    CHECK_EQ(mmk_load_u32_guarded(p + page, &v32), -EFAULT);
    CHECK_EQ(v32, 7);
    CHECK_EQ(mmk_load_u64_guarded(p + page + 8, &v64), -EFAULT);
    CHECK_EQ(v64, 7);
    CHECK_EQ(mmk_store_u32_guarded(p + 2 * page, 1), -EFAULT);
    CHECK_EQ(mmk_store_u64_guarded(p + 3 * page, 1), -EFAULT);
    CHECK_EQ(mmk_copy_guarded(buf, NULL, 16), -EFAULT);
    CHECK(mmk_fault_count() - before == 2 + NELEM(ns) + 5);
    /* The happy paths still work after faults. */
    CHECK_OK(mmk_store_u64_guarded(p + 8, 0x1122334455667788ull));
    CHECK_OK(mmk_load_u64_guarded(p + 8, &v64));
    CHECK(v64 == 0x1122334455667788ull);
    CHECK_OK(mmk_store_u32_guarded(p + 16, 0xdeadbeef));
    CHECK_OK(mmk_load_u32_guarded(p + 16, &v32));
    CHECK(v32 == 0xdeadbeef);
    /* Overflowing ranges are refused before touching memory. */
    CHECK_EQ(mmk_copy_guarded(buf, (void *)(UINTPTR_MAX - 4), 16), -EFAULT);
    CHECK_OK(mmk_release(r, 4 * page));
}

static void test_truncated_file(void)
{
    int fd;
    char *m = truncated_map(&fd);
    char buf[4096];
    CHECK_EQ(mmk_copy_guarded(buf, m, page), 0);
    CHECK(buf[0] == 0x5a && buf[page - 1] == 0x5a);
    CHECK_EQ(mmk_copy_guarded(buf, m + page, 100), -EFAULT);      /* SIGBUS, BUS_ADRERR */
    CHECK_EQ(mmk_copy_guarded(buf, m + page - 50, 100), -EFAULT);
    CHECK_EQ(mmk_store_guarded(m + page, buf, 8), -EFAULT);
    uint64_t v;
    CHECK_EQ(mmk_load_u64_guarded(m + page, &v), -EFAULT);
    munmap(m, 2 * page);
    close(fd);
}

static void test_error_codes(void)
{
    CHECK_EQ(mmk__fault_error(SIGSEGV, SEGV_MAPERR), -EFAULT);
    CHECK_EQ(mmk__fault_error(SIGSEGV, SEGV_ACCERR), -EFAULT);
    CHECK_EQ(mmk__fault_error(SIGBUS, BUS_ADRERR), -EFAULT);
    CHECK_EQ(mmk__fault_error(SIGBUS, BUS_OBJERR), -EIO);
    CHECK_EQ(mmk__fault_error(SIGBUS, BUS_MCEERR_AR), -EIO);
    CHECK_EQ(mmk__fault_error(SIGBUS, BUS_MCEERR_AO), -EIO);
}

/* ---- -EIO. A real machine check cannot be summoned, so a tracer rewrites
 * a genuine fault inside a guarded copy: the child's copy from a PROT_NONE
 * page stops with SIGSEGV, the parent (ptrace) turns the siginfo into SIGBUS
 * with the si_code under test and the same address, and the kernel delivers
 * that to mmkit's handler with the PC still in the guarded routine. */
static void eio_child(int code)
{
    CHECK(ptrace(PTRACE_TRACEME, 0, NULL, NULL) == 0);
    raise(SIGSTOP);
    char *p = mmap(NULL, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char buf[64];
    int rc = mmk_copy_guarded(buf, p + 8, 32);
    uint64_t v;
    int rc2 = mmk_load_u64_guarded(p, &v);
    _exit(rc == -EIO && rc2 == -EIO ? 0 : 10 + (rc == -EFAULT));
    (void)code;
}

static void test_eio(int code)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        eio_child(code);
    int st, rewrites = 0;
    CHECK(waitpid(pid, &st, 0) == pid);
    if (!WIFSTOPPED(st)) {
        printf("note: ptrace unavailable here (status 0x%x): -EIO path tested by code map only\n", st);
        return;
    }
    ptrace(PTRACE_CONT, pid, NULL, NULL);
    for (;;) {
        CHECK(waitpid(pid, &st, 0) == pid);
        if (!WIFSTOPPED(st))
            break;
        int sig = WSTOPSIG(st);
        if (sig == SIGSEGV) {
            siginfo_t si;
            CHECK(ptrace(PTRACE_GETSIGINFO, pid, NULL, &si) == 0);
            si.si_signo = SIGBUS;
            si.si_code = code;
            si.si_addr_lsb = 12;
            CHECK(ptrace(PTRACE_SETSIGINFO, pid, NULL, &si) == 0);
            sig = SIGBUS;
            rewrites++;
        }
        ptrace(PTRACE_CONT, pid, NULL, (void *)(uintptr_t)sig);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "-EIO for si_code %d: child status 0x%x\n", code, st);
        exit(1);
    }
    CHECK_EQ(rewrites, 2);
}

/* ---- chaining, each case in a child */

static volatile sig_atomic_t got_sig, got_code;
static void *volatile got_addr;
static sigjmp_buf jb;

static void prev_siginfo(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    got_sig = sig;
    got_code = si->si_code;
    got_addr = si->si_addr;
    siglongjmp(jb, 1);
}

static void prev_plain(int sig)
{
    got_sig = sig;
    siglongjmp(jb, 1);
}

static int *volatile null_ptr;
/* A genuine NULL dereference, not UBSan's report of one. */
__attribute__((no_sanitize("undefined"), noinline)) static int null_deref(void)
{
    return *(volatile int *)null_ptr;
}

static void child_prev_siginfo(void *arg)
{
    (void)arg;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = prev_siginfo;
    sa.sa_flags = SA_SIGINFO;
    CHECK(sigaction(SIGSEGV, &sa, NULL) == 0);
    CHECK_OK(mmk_fault_install());
    char buf[16];
    CHECK_EQ(mmk_copy_guarded(buf, NULL, 8), -EFAULT); /* ours: not passed on */
    CHECK(got_sig == 0);
    if (!sigsetjmp(jb, 1)) {
        null_deref();
        _exit(3);
    }
    CHECK(got_sig == SIGSEGV && got_code == SEGV_MAPERR && got_addr == NULL);
    /* A SIGSEGV sent with kill() is not a fault: it is passed on too. */
    got_sig = 0;
    if (!sigsetjmp(jb, 1)) {
        kill(getpid(), SIGSEGV);
        _exit(4);
    }
    CHECK(got_sig == SIGSEGV && got_code == SI_USER);
    _exit(42);
}

/* Install/uninstall pairs restore the previous handler, unless someone
 * replaced ours meanwhile; a guarded routine keeps its own reference. */
static void child_uninstall(void *arg)
{
    (void)arg;
    struct sigaction sa, cur;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = prev_siginfo;
    sa.sa_flags = SA_SIGINFO;
    CHECK(sigaction(SIGBUS, &sa, NULL) == 0);
    CHECK_OK(mmk_fault_install());
    CHECK_OK(mmk_fault_install());
    mmk_fault_uninstall();
    sigaction(SIGBUS, NULL, &cur);
    CHECK(cur.sa_sigaction != prev_siginfo); /* still ours: one reference left */
    mmk_fault_uninstall();
    sigaction(SIGBUS, NULL, &cur);
    CHECK(cur.sa_sigaction == prev_siginfo);
    mmk_fault_uninstall(); /* unbalanced: ignored */

    CHECK_OK(mmk_fault_install());
    signal(SIGSEGV, SIG_IGN); /* someone replaces ours */
    mmk_fault_uninstall();
    sigaction(SIGSEGV, NULL, &cur);
    CHECK(cur.sa_handler == SIG_IGN); /* theirs is kept */
    signal(SIGSEGV, SIG_DFL);

    char buf[8];
    CHECK_EQ(mmk_copy_guarded(buf, NULL, 8), -EFAULT);
    CHECK_OK(mmk_fault_install());
    mmk_fault_uninstall();
    CHECK_EQ(mmk_copy_guarded(buf, NULL, 8), -EFAULT); /* still caught */
    _exit(42);
}

static void child_prev_plain(void *arg)
{
    (void)arg;
    signal(SIGSEGV, prev_plain);
    CHECK_OK(mmk_fault_install());
    if (!sigsetjmp(jb, 1)) {
        null_deref();
        _exit(3);
    }
    CHECK(got_sig == SIGSEGV);
    _exit(42);
}

static void child_null_default(void *arg)
{
    (void)arg;
    CHECK_OK(mmk_fault_install());
    char buf[8];
    CHECK_EQ(mmk_copy_guarded(buf, NULL, 8), -EFAULT);
    null_deref();
    _exit(3);
}

static void child_null_ignored(void *arg)
{
    (void)arg;
    signal(SIGSEGV, SIG_IGN);
    CHECK_OK(mmk_fault_install());
    null_deref(); /* the kernel never lets a fault be ignored */
    _exit(3);
}

static void child_bus_unowned(void *arg)
{
    (void)arg;
    CHECK_OK(mmk_fault_install());
    int fd;
    char *m = truncated_map(&fd);
    char buf[8];
    CHECK_EQ(mmk_copy_guarded(buf, m + page, 8), -EFAULT);
    (void)*(volatile char *)(m + page); /* a plain access: not ours */
    _exit(3);
}

static void child_sent_default(void *arg)
{
    (void)arg;
    CHECK_OK(mmk_fault_install());
    kill(getpid(), SIGBUS); /* sent, not a fault: re-sent, default action */
    _exit(3);
}

static volatile sig_atomic_t resethand_calls;
static void prev_once(int sig)
{
    (void)sig;
    resethand_calls++;
    siglongjmp(jb, 1);
}

/* SA_RESETHAND: the previous handler runs once, then the default applies. */
static void child_resethand(void *arg)
{
    (void)arg;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = prev_once;
    sa.sa_flags = SA_RESETHAND | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    CHECK_OK(mmk_fault_install());
    if (!sigsetjmp(jb, 1))
        null_deref();
    CHECK(resethand_calls == 1);
    char buf[8];
    CHECK_EQ(mmk_copy_guarded(buf, NULL, 8), -EFAULT); /* ours still caught */
    null_deref(); /* now the default: dies */
    _exit(3);
}

static void child_dst_fault(void *arg)
{
    (void)arg;
    char src[64] = {0};
    /* The destination is the caller's own memory: a bug, not swallowed. */
    mmk_copy_guarded((void *)16, src, sizeof src);
    _exit(3);
}

static void child_off(void *arg)
{
    (void)arg;
    setenv("MMK_FAULT", "off", 1);
    CHECK(mmk_fault_enabled() == 0);
    CHECK_OK(mmk_fault_install());
    char buf[8] = {0};
    CHECK_EQ(mmk_copy_guarded(buf, buf + 1, 4), 0);
    mmk_copy_guarded(buf, NULL, 8);
    _exit(3);
}

static void expect_signal(void (*fn)(void *), int sig, const char *what)
{
    int st = run_child(fn, NULL);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != sig) {
        fprintf(stderr, "%s: expected death by signal %d, got status 0x%x\n", what, sig, st);
        exit(1);
    }
}

static void expect_exit(void (*fn)(void *), int code, const char *what)
{
    int st = run_child(fn, NULL);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != code) {
        fprintf(stderr, "%s: expected exit %d, got status 0x%x\n", what, code, st);
        exit(1);
    }
}

/* ---- range claims */

static atomic_int claim_calls, claim_write;
static void *volatile claim_stack;

static int fix_by_mprotect(void *ctx, void *addr, int sig, int code, int is_write)
{
    (void)sig, (void)code;
    int local;
    claim_stack = &local;
    atomic_fetch_add(&claim_calls, 1);
    atomic_store(&claim_write, is_write);
    char *base = ctx;
    (void)addr;
    return mprotect(base, page, PROT_READ | PROT_WRITE) == 0;
}

static int refuse(void *ctx, void *addr, int sig, int code, int is_write)
{
    (void)ctx, (void)addr, (void)sig, (void)code, (void)is_write;
    atomic_fetch_add(&claim_calls, 1);
    return 0;
}

static void test_claims(void)
{
    char *p = mmap(NULL, 2 * page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    int id = mmk__fault_claim(p, page, fix_by_mprotect, p);
    CHECK(id >= 0);
    CHECK_EQ((int)*(volatile char *)p, 0); /* readable: no fault */
    CHECK_EQ(atomic_load(&claim_calls), 0);
    *(volatile char *)(p + 10) = 9; /* write fault, fixed, retried */
    CHECK_EQ(atomic_load(&claim_calls), 1);
#if defined(__x86_64__)
    CHECK_EQ(atomic_load(&claim_write), 1);
#endif
    CHECK(p[10] == 9);
    /* A read fault says so too. */
    CHECK_OK(mprotect(p, page, PROT_NONE));
    CHECK_EQ((int)*(volatile char *)(p + 10), 9);
    CHECK_EQ(atomic_load(&claim_calls), 2);
#if defined(__x86_64__)
    CHECK_EQ(atomic_load(&claim_write), 0);
#endif
    mmk__fault_unclaim(id);
    mmk__fault_unclaim(id); /* a second unclaim is harmless */

    /* A claim that declines: a guarded routine gets its error. */
    CHECK_OK(mprotect(p, 2 * page, PROT_NONE));
    id = mmk__fault_claim(p, 2 * page, refuse, NULL);
    CHECK(id >= 0);
    char buf[8];
    CHECK_EQ(mmk_copy_guarded(buf, p + page, 8), -EFAULT);
    CHECK_EQ(atomic_load(&claim_calls), 3);
    mmk__fault_unclaim(id);

    /* The table is finite and says so. */
    int ids[80], n = 0;
    for (; n < 80; n++) {
        ids[n] = mmk__fault_claim(p, page, refuse, NULL);
        if (ids[n] < 0)
            break;
    }
    CHECK(n < 80 && ids[n] == -ENOSPC);
    while (n--)
        mmk__fault_unclaim(ids[n]);
    CHECK_EQ(mmk__fault_claim(p, 0, refuse, NULL), -EINVAL);
    munmap(p, 2 * page);
}

/* The handler runs on the thread's alternate stack when it has one. */
static void *altstack_thread(void *arg)
{
    (void)arg;
    size_t sz = 64 * 1024;
    char *stk = malloc(sz);
    stack_t ss = {.ss_sp = stk, .ss_size = sz, .ss_flags = 0};
    CHECK(sigaltstack(&ss, NULL) == 0);
    char *p = mmap(NULL, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int id = mmk__fault_claim(p, page, fix_by_mprotect, p);
    CHECK(id >= 0);
    *(volatile char *)p = 1;
    CHECK((char *)claim_stack >= stk && (char *)claim_stack < stk + sz);
    mmk__fault_unclaim(id);
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, NULL);
    free(stk);
    munmap(p, page);
    return NULL;
}

static void test_altstack(void)
{
    pthread_t t;
    pthread_create(&t, NULL, altstack_thread, NULL);
    pthread_join(t, NULL);
}

int main(void)
{
    page = mmk_page_size();
    /* Children first, so each installs mmkit's handler over its own. */
    expect_exit(child_prev_siginfo, 42, "previous SA_SIGINFO handler gets a NULL dereference");
    expect_exit(child_uninstall, 42, "install/uninstall restore the previous handler");
    expect_exit(child_prev_plain, 42, "previous sa_handler gets a NULL dereference");
    expect_signal(child_null_default, SIGSEGV, "NULL dereference with no handler");
    expect_signal(child_null_ignored, SIGSEGV, "NULL dereference with SIGSEGV ignored");
    expect_signal(child_bus_unowned, SIGBUS, "SIGBUS on a mapping mmkit does not own");
    expect_signal(child_sent_default, SIGBUS, "a SIGBUS sent with kill, no handler");
    expect_signal(child_resethand, SIGSEGV, "SA_RESETHAND previous handler, then default");
    expect_signal(child_dst_fault, SIGSEGV, "a fault on the unguarded operand");
    expect_signal(child_off, SIGSEGV, "MMK_FAULT=off");
    test_eio(BUS_MCEERR_AR);
    test_eio(BUS_OBJERR);

    test_error_codes();
    test_copy_sizes();
    test_copy_distances();
    test_unmapped();
    test_truncated_file();
    test_claims();
    test_altstack();
    rm_rf(test_tmpdir());
    printf("fault: ok (%llu faults became errors)\n", (unsigned long long)mmk_fault_count());
    return 0;
}
