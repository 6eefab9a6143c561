/* The fault layer: SIGSEGV/SIGBUS inside mmkit's own guarded routines become
 * error returns; every other fault goes to the handler installed before ours.
 *
 * x86-64 uses an exception table (src/fault_x86_64.S): the guarded routines
 * are leaf assembly functions with a known PC range, and the handler moves
 * the PC to their error exit, so the happy path costs no more than a copy.
 * Elsewhere a portable fallback arms a thread-local sigjmp_buf per call. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ucontext.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#include <mmkit/fault.h>
#include "fault_internal.h"
#include "internal.h"

#if defined(__x86_64__) && defined(__linux__) && !defined(MMK_FAULT_FORCE_PORTABLE)
#define MMK__FAULT_TABLE 1
#else
#define MMK__FAULT_TABLE 0
#include <setjmp.h>
#endif

#ifndef BUS_MCEERR_AR
#define BUS_MCEERR_AR 4
#endif
#ifndef BUS_MCEERR_AO
#define BUS_MCEERR_AO 5
#endif

/* ------------------------------------------------------------------ state */

static const int fault_sigs[2] = {SIGSEGV, SIGBUS};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned g_refs;             /* under g_lock */
static atomic_int g_pinned;         /* the guarded routines' reference, kept for good */
static atomic_int g_installed;      /* our handler is in place */
static atomic_int g_mode = -1;      /* -1 unknown, 0 off (MMK_FAULT=off), 1 on */
static struct sigaction g_prev[2];  /* what was there before us; read by the handler */
static atomic_uint_fast64_t g_recovered;

/* ------------------------------------------------------------------ claims */

#define MMK__CLAIMS 64

enum { CLAIM_FREE, CLAIM_BUSY, CLAIM_LIVE };

struct claim {
    atomic_int state;
    atomic_int users;   /* handlers inside fn right now */
    uintptr_t lo, hi;
    mmk__fault_fn fn;
    void *ctx;
};
static struct claim g_claims[MMK__CLAIMS];

/* ------------------------------------------------------------------ the guarded routines */

#if MMK__FAULT_TABLE
int mmk__x86_copy(void *dst, const void *src, size_t n);
int mmk__x86_store(void *dst, const void *src, size_t n);
int mmk__x86_load32(const void *src, uint32_t *out);
int mmk__x86_load64(const void *src, uint64_t *out);
int mmk__x86_store32(void *dst, uint32_t v);
int mmk__x86_store64(void *dst, uint64_t v);
int mmk__x86_diff(const void *a, const void *b, size_t n, size_t *range);
void mmk__fault_fixup(void);
void mmk__fault_fixup_avx(void);
unsigned char mmk__x86_avx2; /* read by the copy routine: use the AVX2 loop */
extern const char mmk__fault_text_start[], mmk__fault_text_end[];
#else
/* One armed guard per thread: the range that may fault and where to go. */
struct guard {
    sigjmp_buf env;
    uintptr_t lo, hi;
    volatile sig_atomic_t active;
    volatile int err;
};
/* initial-exec: the handler reads it, and must not be the first to touch it
 * through __tls_get_addr (which may allocate) in a shared library. */
static __thread struct guard t_guard __attribute__((tls_model("initial-exec")));
#endif

static int lazy_pin(void);

/* The happy path pays one relaxed load. The guarded routines hold their own
 * reference (taken once, never dropped): "installed" alone would not do, as
 * another module's reference may be released at any moment. */
static inline int ready(void)
{
    if (mmk__likely(atomic_load_explicit(&g_pinned, memory_order_relaxed)))
        return 0;
    return lazy_pin();
}

static inline int range_ok(const void *p, size_t n)
{
    return (uintptr_t)p <= UINTPTR_MAX - n;
}

#if MMK__FAULT_TABLE

int mmk__copy_guarded(void *dst, const void *src, size_t n)
{
    if (mmk__unlikely(!range_ok(src, n) || !range_ok(dst, n)))
        return -EFAULT;
    ready();
    return mmk__x86_copy(dst, src, n);
}

int mmk__store_guarded(void *dst, const void *src, size_t n)
{
    if (mmk__unlikely(!range_ok(src, n) || !range_ok(dst, n)))
        return -EFAULT;
    ready();
    return mmk__x86_store(dst, src, n);
}

static void probe_cpu(void);

/* No handler needed (the source cannot fault), so none is installed: a
 * ring or a map used alone keeps the process's signal handlers as they are.
 * The copy only needs to know whether it may use AVX2. */
void mmk__copy_big(void *dst, const void *src, size_t n)
{
    probe_cpu();
    if (mmk__x86_copy(dst, src, n))
        memcpy(dst, src, n); /* recovered by a handler: fault as memcpy would */
}

int mmk__load_u32_guarded(const void *src, uint32_t *out)
{
    ready();
    return mmk__x86_load32(src, out);
}

int mmk__load_u64_guarded(const void *src, uint64_t *out)
{
    ready();
    return mmk__x86_load64(src, out);
}

int mmk__store_u32_guarded(void *dst, uint32_t v)
{
    ready();
    return mmk__x86_store32(dst, v);
}

int mmk__store_u64_guarded(void *dst, uint64_t v)
{
    ready();
    return mmk__x86_store64(dst, v);
}

int mmk__diff_guarded(const void *a, const void *b, size_t n, size_t range[2])
{
    if (mmk__unlikely(!range_ok(a, n) || !range_ok(b, n) || (n & 15)))
        return -EFAULT;
    ready();
    return mmk__x86_diff(a, b, n, range);
}

#else /* portable: sigsetjmp per call (savemask 0: no system call) */

#define GUARDED(lo_, n_, body)                                                           \
    do {                                                                                 \
        ready();                                                                         \
        struct guard *g = &t_guard;                                                      \
        if (sigsetjmp(g->env, 0)) {                                                      \
            g->active = 0;                                                               \
            return g->err;                                                               \
        }                                                                                \
        g->lo = (uintptr_t)(lo_);                                                        \
        g->hi = (uintptr_t)(lo_) + (n_);                                                 \
        g->active = 1;                                                                   \
        atomic_signal_fence(memory_order_seq_cst);                                       \
        body;                                                                            \
        atomic_signal_fence(memory_order_seq_cst);                                       \
        g->active = 0;                                                                   \
        return 0;                                                                        \
    } while (0)

/* Byte copies through volatile pointers: memcpy may be inlined and
 * reordered around the guard, and an aligned word must stay one access. */
static void copy_bytes(void *dst, const void *src, size_t n)
{
    memcpy(dst, src, n);
    atomic_signal_fence(memory_order_seq_cst);
}

int mmk__copy_guarded(void *dst, const void *src, size_t n)
{
    if (!range_ok(src, n) || !range_ok(dst, n))
        return -EFAULT;
    if (!n)
        return 0;
    GUARDED(src, n, copy_bytes(dst, src, n));
}

int mmk__store_guarded(void *dst, const void *src, size_t n)
{
    if (!range_ok(src, n) || !range_ok(dst, n))
        return -EFAULT;
    if (!n)
        return 0;
    GUARDED(dst, n, copy_bytes(dst, src, n));
}

void mmk__copy_big(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }

int mmk__load_u32_guarded(const void *src, uint32_t *out)
{
    uint32_t v;
    GUARDED(src, 4, (v = *(const volatile uint32_t *)src, *out = v));
}

int mmk__load_u64_guarded(const void *src, uint64_t *out)
{
    uint64_t v;
    GUARDED(src, 8, (v = *(const volatile uint64_t *)src, *out = v));
}

int mmk__store_u32_guarded(void *dst, uint32_t v)
{
    GUARDED(dst, 4, *(volatile uint32_t *)dst = v);
}

int mmk__store_u64_guarded(void *dst, uint64_t v)
{
    GUARDED(dst, 8, *(volatile uint64_t *)dst = v);
}

static void diff_words(const void *a, const void *b, size_t n, size_t range[2])
{
    const uint64_t *x = a;
    const volatile uint64_t *y = b;
    size_t lo = 0, hi = n / 8;
    while (lo < hi && x[lo] == y[lo])
        lo++;
    while (hi > lo && x[hi - 1] == y[hi - 1])
        hi--;
    range[0] = lo < hi ? lo * 8 : n;
    range[1] = lo < hi ? hi * 8 : n;
}

int mmk__diff_guarded(const void *a, const void *b, size_t n, size_t range[2])
{
    if (!range_ok(a, n) || !range_ok(b, n) || (n & 15))
        return -EFAULT;
    if (!n) {
        range[0] = range[1] = 0;
        return 0;
    }
    GUARDED(b, n, diff_words(a, b, n, range));
}

#endif

MMK_API int mmk_copy_guarded(void *dst, const void *src, size_t n)
{
    return mmk__copy_guarded(dst, src, n);
}

MMK_API int mmk_store_guarded(void *dst, const void *src, size_t n)
{
    return mmk__store_guarded(dst, src, n);
}

MMK_API int mmk_load_u32_guarded(const void *src, uint32_t *out)
{
    return mmk__load_u32_guarded(src, out);
}

MMK_API int mmk_load_u64_guarded(const void *src, uint64_t *out)
{
    return mmk__load_u64_guarded(src, out);
}

MMK_API int mmk_store_u32_guarded(void *dst, uint32_t v)
{
    return mmk__store_u32_guarded(dst, v);
}

MMK_API int mmk_store_u64_guarded(void *dst, uint64_t v)
{
    return mmk__store_u64_guarded(dst, v);
}

MMK_API uint64_t mmk_fault_count(void)
{
    return atomic_load_explicit(&g_recovered, memory_order_relaxed);
}

/* ------------------------------------------------------------------ the handler */

/* The error a fault turns into: hardware or I/O trouble is -EIO, a missing
 * page (past end of file, unmapped, no access) is -EFAULT. */
int mmk__fault_error(int sig, int si_code)
{
    if (sig == SIGBUS && (si_code == BUS_MCEERR_AR || si_code == BUS_MCEERR_AO ||
                          si_code == BUS_OBJERR))
        return -EIO;
    return -EFAULT;
}

/* A fault the kernel raised on the current instruction: returning from the
 * handler executes it again. kill()/sigqueue() senders have si_code <= 0;
 * BUS_MCEERR_AO reports a poisoned page somewhere, not at the PC. */
static int is_sync(const siginfo_t *si)
{
    return si->si_code > 0 && !(si->si_signo == SIGBUS && si->si_code == BUS_MCEERR_AO);
}

/* Does a fault at addr touch [lo, hi)? Machine-check reports name a whole
 * poisoned block (2^si_addr_lsb bytes), so compare blocks there. */
static int hits(const siginfo_t *si, uintptr_t addr, uintptr_t lo, uintptr_t hi)
{
    if (si->si_signo == SIGBUS &&
        (si->si_code == BUS_MCEERR_AR || si->si_code == BUS_MCEERR_AO)) {
        unsigned lsb = si->si_addr_lsb > 0 && si->si_addr_lsb < 48 ? (unsigned)si->si_addr_lsb : 12;
        uintptr_t mask = ((uintptr_t)1 << lsb) - 1;
        return (addr & ~mask) < hi && (addr | mask) >= lo;
    }
    return addr >= lo && addr < hi;
}

static int sig_index(int sig) { return sig == SIGBUS; }

static void set_default(int sig)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
}

/* Hand a fault that is not ours to whatever was installed before us, as the
 * kernel would have delivered it. */
static void chain(int sig, siginfo_t *si, void *uctx)
{
    struct sigaction *prev = &g_prev[sig_index(sig)];
    int flags = prev->sa_flags;
    void (*h)(int) = prev->sa_handler;
    void (*sa)(int, siginfo_t *, void *) = prev->sa_sigaction;

    if (!(flags & SA_SIGINFO) && (h == SIG_DFL || h == SIG_IGN)) {
        /* The kernel never lets a synchronous fault be ignored: it resets the
         * action and kills. Restoring the default and returning re-executes
         * the instruction, which then kills by this same signal, with the
         * core dump pointing at the faulting instruction. */
        if (h == SIG_IGN && !is_sync(si))
            return;
        set_default(sig);
        if (!is_sync(si)) {
            /* Sent by someone (kill, sigqueue): re-send it to ourselves. */
            sigset_t s;
            sigemptyset(&s);
            sigaddset(&s, sig);
            pthread_sigmask(SIG_UNBLOCK, &s, NULL);
            raise(sig);
        }
        return;
    }

    /* A real handler: run it under the mask the kernel would have set. */
    sigset_t m = ((ucontext_t *)uctx)->uc_sigmask;
    sigorset(&m, &m, &prev->sa_mask);
    if (!(flags & SA_NODEFER))
        sigaddset(&m, sig);
    if (flags & SA_RESETHAND) {
        prev->sa_flags = 0;
        prev->sa_handler = SIG_DFL;
    }
    pthread_sigmask(SIG_SETMASK, &m, NULL);
    if (flags & SA_SIGINFO)
        sa(sig, si, uctx);
    else
        h(sig);
}

/* Offer the fault to a claimed range. 1 when its owner fixed the cause. */
static int try_claims(int sig, siginfo_t *si, uintptr_t addr, int is_write)
{
    for (int i = 0; i < MMK__CLAIMS; i++) {
        struct claim *c = &g_claims[i];
        if (atomic_load_explicit(&c->state, memory_order_acquire) != CLAIM_LIVE)
            continue;
        atomic_fetch_add(&c->users, 1);
        int r = 0;
        if (atomic_load(&c->state) == CLAIM_LIVE && addr >= c->lo && addr < c->hi)
            r = c->fn(c->ctx, (void *)addr, sig, si->si_code, is_write);
        atomic_fetch_sub(&c->users, 1);
        if (r)
            return 1;
    }
    return 0;
}

static void on_fault(int sig, siginfo_t *si, void *uctx)
{
    int saved_errno = errno;
    if (si->si_code > 0) {
        uintptr_t addr = (uintptr_t)si->si_addr;
        int is_write = -1;
#if defined(__x86_64__) && defined(__linux__)
        greg_t *gr = ((ucontext_t *)uctx)->uc_mcontext.gregs;
        if (gr[REG_TRAPNO] == 14) /* page fault: error code bit 1 = write */
            is_write = (gr[REG_ERR] & 2) != 0;
#endif
        if (try_claims(sig, si, addr, is_write))
            goto out;
#if MMK__FAULT_TABLE
        uintptr_t pc = (uintptr_t)gr[REG_RIP];
        if (pc >= (uintptr_t)mmk__fault_text_start && pc < (uintptr_t)mmk__fault_text_end &&
            hits(si, addr, (uintptr_t)gr[REG_R8], (uintptr_t)gr[REG_R9])) {
            gr[REG_RAX] = mmk__fault_error(sig, si->si_code);
            gr[REG_RIP] = (greg_t)(uintptr_t)(__atomic_load_n(&mmk__x86_avx2, __ATOMIC_RELAXED)
                                                  ? mmk__fault_fixup_avx
                                                  : mmk__fault_fixup);
            atomic_fetch_add_explicit(&g_recovered, 1, memory_order_relaxed);
            goto out;
        }
#else
        struct guard *g = &t_guard;
        if (g->active && hits(si, addr, g->lo, g->hi)) {
            g->active = 0;
            g->err = mmk__fault_error(sig, si->si_code);
            atomic_fetch_add_explicit(&g_recovered, 1, memory_order_relaxed);
            errno = saved_errno;
            siglongjmp(g->env, 1); /* SA_NODEFER: the signal is not left blocked */
        }
#endif
    }
    chain(sig, si, uctx);
out:
    errno = saved_errno;
}

/* ------------------------------------------------------------------ install, release */

static int mode_from_env(void)
{
    int m = atomic_load(&g_mode);
    if (m < 0) {
        const char *e = getenv("MMK_FAULT");
        m = !(e && (!strcasecmp(e, "off") || !strcmp(e, "0") || !strcasecmp(e, "no") ||
                    !strcasecmp(e, "false")));
        atomic_store(&g_mode, m);
    }
    return m;
}

static int is_ours(int sig);

#if MMK__FAULT_TABLE
/* Whether the copy routine may use AVX2: set once, before the first install
 * or the first unguarded big copy, whichever comes first. Atomic because
 * the handler or a copy in another thread may read it meanwhile (racing
 * probes store the same value). */
static void probe_cpu(void)
{
    static int probed;
    if (mmk__likely(__atomic_load_n(&probed, __ATOMIC_ACQUIRE)))
        return;
    __builtin_cpu_init();
    __atomic_store_n(&mmk__x86_avx2, __builtin_cpu_supports("avx2") ? 1 : 0, __ATOMIC_RELAXED);
    __atomic_store_n(&probed, 1, __ATOMIC_RELEASE);
}
#endif

static int install_locked(void)
{
    if (!mode_from_env()) {
        g_refs++;
        return 0;
    }
    if (g_refs++ > 0 && is_ours(SIGSEGV) && is_ours(SIGBUS))
        return 0;
    /* First install, or someone replaced our handler since: (re)install,
     * chaining to whatever is there now. */
    mmk__pagesz();
#if MMK__FAULT_TABLE
    probe_cpu();
#endif
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 2; i++) {
        /* Record the previous action before ours can run; then swap, and
         * keep what the swap returned in case it changed in between. */
        struct sigaction old;
        if (is_ours(fault_sigs[i]))
            continue;
        if (sigaction(fault_sigs[i], NULL, &g_prev[i]) ||
            sigaction(fault_sigs[i], &sa, &old)) {
            int e = -errno;
            if (i == 1)
                sigaction(SIGSEGV, &g_prev[0], NULL);
            g_refs--;
            return e;
        }
        g_prev[i] = old;
    }
    atomic_store_explicit(&g_installed, 1, memory_order_release);
    return 0;
}

static int is_ours(int sig)
{
    struct sigaction cur;
    return sigaction(sig, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
           cur.sa_sigaction == on_fault;
}

static void release_locked(void)
{
    if (!g_refs || --g_refs || !atomic_load(&g_installed))
        return;
    /* Put the previous handler back only where ours is still the one in
     * place: someone who installed after us keeps theirs. */
    for (int i = 0; i < 2; i++)
        if (is_ours(fault_sigs[i]))
            sigaction(fault_sigs[i], &g_prev[i], NULL);
    atomic_store(&g_installed, 0);
}

int mmk__fault_acquire(void)
{
    pthread_mutex_lock(&g_lock);
    int rc = install_locked();
    pthread_mutex_unlock(&g_lock);
    return rc;
}

void mmk__fault_release(void)
{
    pthread_mutex_lock(&g_lock);
    release_locked();
    pthread_mutex_unlock(&g_lock);
}

static int lazy_pin(void)
{
    if (atomic_load_explicit(&g_mode, memory_order_relaxed) == 0)
        return 0;
    pthread_mutex_lock(&g_lock);
    int rc = 0;
    if (!atomic_load(&g_pinned)) {
        rc = install_locked();
        if (rc == 0)
            atomic_store(&g_pinned, 1);
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

MMK_API int mmk_fault_install(void) { return mmk__fault_acquire(); }

MMK_API void mmk_fault_uninstall(void) { mmk__fault_release(); }

MMK_API int mmk_fault_enabled(void) { return mode_from_env(); }

/* ------------------------------------------------------------------ claims */

int mmk__fault_claim(void *addr, size_t len, mmk__fault_fn fn, void *ctx)
{
    if (!fn || !len || !range_ok(addr, len))
        return -EINVAL;
    int rc = mmk__fault_acquire();
    if (rc)
        return rc;
    for (int i = 0; i < MMK__CLAIMS; i++) {
        struct claim *c = &g_claims[i];
        int expect = CLAIM_FREE;
        if (!atomic_compare_exchange_strong(&c->state, &expect, CLAIM_BUSY))
            continue;
        c->lo = (uintptr_t)addr;
        c->hi = (uintptr_t)addr + len;
        c->fn = fn;
        c->ctx = ctx;
        atomic_store_explicit(&c->state, CLAIM_LIVE, memory_order_release);
        return i;
    }
    mmk__fault_release();
    return -ENOSPC;
}

void mmk__fault_unclaim(int id)
{
    if (id < 0 || id >= MMK__CLAIMS)
        return;
    struct claim *c = &g_claims[id];
    int expect = CLAIM_LIVE;
    if (!atomic_compare_exchange_strong(&c->state, &expect, CLAIM_BUSY))
        return;
    /* A handler on another thread may be inside fn: wait until it leaves,
     * so the caller may free ctx as soon as we return. */
    while (atomic_load(&c->users))
        sched_yield();
    atomic_store(&c->state, CLAIM_FREE);
    mmk__fault_release();
}
