/* view.h, snapshots: write-protect the region; the first write to a page
 * copies it into every live snapshot that lacks it, then un-protects it.
 *
 * Invariant: while a page is protected, every live snapshot either holds a
 * copy of it or the page is unchanged since that snapshot was taken. Fault
 * handling keeps it (copy to all that lack it, then un-protect) and take
 * keeps it (protect every page that was un-protected since the last take:
 * the `dirty` bitmap). Take and fault handling exclude each other, so a
 * writer stopped on a fault cannot slip a write past a take in progress:
 * the snapshot is a consistent cut of each writer's stores.
 *
 * Two mechanisms:
 *  - uffd: userfaultfd (UFFD_USER_MODE_ONLY) in write-protect mode; a handler
 *    thread receives each fault; mutual exclusion with take by a mutex.
 *  - mprotect: PROT_READ, and a fault-layer claim whose handler runs in the
 *    faulting thread (signal context: no locks; a Dekker pair of atomics
 *    `taking`/`inflight` excludes take instead). */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#endif

#include <mmkit/fault.h>
#include <mmkit/view.h>
#include <mmkit/vm.h>
#include "fault_internal.h"
#include "internal.h"

#define HUGE_ALIGN ((size_t)2 << 20)

struct mmk_snapshot {
    mmk_region *r;
    char *store;              /* region-sized, lazily committed: copies at their offsets */
    _Atomic uint64_t *saved;  /* one bit a page: copy present in store */
    atomic_size_t copied;
    int slot;
};

struct mmk_region {
    char *base;
    size_t size, npages, words, page;
    unsigned mode;
    _Atomic(mmk_snapshot *) slots[MMK_SNAPSHOT_MAX];
    _Atomic uint64_t *dirty;  /* pages un-protected since the last take */
    int protected_once;
    pthread_mutex_t take_mu;  /* serialises take and release */
    /* uffd */
    int uffd, stop[2];
    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock;     /* handler thread vs take/release */
    /* mprotect */
    int claim;
    atomic_int taking, inflight;
};

/* ------------------------------------------------------------ page copies */

/* Reads of region pages race, by design, with writers that the protocol
 * then detects (see read_page); keep ThreadSanitizer from reporting them. */
#if defined(__SANITIZE_THREAD__)
#define MMK__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MMK__TSAN 1
#endif
#endif
#ifdef MMK__TSAN
__attribute__((no_sanitize("thread"))) static void copy_page(void *dst, const void *src, size_t n)
{
    if (!(((uintptr_t)dst | (uintptr_t)src | n) & 7)) {
        volatile uint64_t *d = dst;
        const volatile uint64_t *s = src;
        for (size_t i = 0; i < n / 8; i++)
            d[i] = s[i];
        return;
    }
    volatile unsigned char *d = dst; /* any offset and length (partial reads) */
    const volatile unsigned char *s = src;
    for (size_t i = 0; i < n; i++)
        d[i] = s[i];
}
#else
static void copy_page(void *dst, const void *src, size_t n) { mmk__copy(dst, src, n); }
#endif

static inline int bit_get(_Atomic uint64_t *bm, size_t i)
{
    return (atomic_load_explicit(&bm[i / 64], memory_order_acquire) >> (i % 64)) & 1;
}

static inline void bit_set(_Atomic uint64_t *bm, size_t i)
{
    atomic_fetch_or_explicit(&bm[i / 64], (uint64_t)1 << (i % 64), memory_order_release);
}

/* Save page i into every live snapshot that lacks it. Async-signal-safe. */
static void save_page(mmk_region *r, size_t i)
{
    const char *src = r->base + i * r->page;
    for (int k = 0; k < MMK_SNAPSHOT_MAX; k++) {
        mmk_snapshot *s = atomic_load_explicit(&r->slots[k], memory_order_acquire);
        if (!s || bit_get(s->saved, i))
            continue;
        copy_page(s->store + i * r->page, src, r->page);
        bit_set(s->saved, i);
        atomic_fetch_add_explicit(&s->copied, r->page, memory_order_relaxed);
    }
}

/* ------------------------------------------------------------ uffd path */

#ifdef __linux__
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#define MMK__UFFD_FEATURE_WP_UNPOPULATED (1ull << 13)

static int uffd_wp(mmk_region *r, uintptr_t a, size_t len, int protect)
{
    struct uffdio_writeprotect wp = {
        .range = {.start = a, .len = len},
        .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0, /* un-protect also wakes */
    };
    while (ioctl(r->uffd, UFFDIO_WRITEPROTECT, &wp)) {
        if (errno != EAGAIN)
            return -errno;
    }
    return 0;
}

static void uffd_fault(mmk_region *r, uintptr_t addr)
{
    if (addr < (uintptr_t)r->base || addr >= (uintptr_t)r->base + r->size)
        return;
    size_t i = (addr - (uintptr_t)r->base) / r->page;
    pthread_mutex_lock(&r->lock);
    save_page(r, i);
    bit_set(r->dirty, i);
    uffd_wp(r, (uintptr_t)r->base + i * r->page, r->page, 0);
    pthread_mutex_unlock(&r->lock);
}

static void *uffd_thread(void *arg)
{
    mmk_region *r = arg;
    struct pollfd pf[2] = {{.fd = r->uffd, .events = POLLIN}, {.fd = r->stop[0], .events = POLLIN}};
    for (;;) {
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pf[1].revents)
            break;
        struct uffd_msg msg[16];
        ssize_t n = read(r->uffd, msg, sizeof msg);
        if (n < 0)
            continue; /* EAGAIN, EINTR: a writer may be waiting, never give up */
        for (size_t k = 0; k < (size_t)n / sizeof msg[0]; k++)
            if (msg[k].event == UFFD_EVENT_PAGEFAULT)
                uffd_fault(r, (uintptr_t)msg[k].arg.pagefault.address);
    }
    return NULL;
}

static int uffd_setup(mmk_region *r)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0)
        return errno == ENOSYS || errno == EPERM || errno == EINVAL ? -ENOTSUP : -errno;
    r->uffd = fd;
    /* Without WP_UNPOPULATED (6.4) a page never touched before a take would
     * not be protected, and a snapshot would see its later contents. */
    struct uffdio_api api = {.api = UFFD_API,
                             .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP |
                                         MMK__UFFD_FEATURE_WP_UNPOPULATED};
    if (ioctl(fd, UFFDIO_API, &api))
        return -ENOTSUP;
    struct uffdio_register reg = {.range = {.start = (uintptr_t)r->base, .len = r->size},
                                  .mode = UFFDIO_REGISTER_MODE_WP};
    if (ioctl(fd, UFFDIO_REGISTER, &reg))
        return errno == EINVAL ? -ENOTSUP : -errno;
    if (!(reg.ioctls & ((uint64_t)1 << _UFFDIO_WRITEPROTECT)))
        return -ENOTSUP;
    if (pipe2(r->stop, O_CLOEXEC))
        return -errno;
    /* The handler thread must not receive our users' signals. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&r->thread, NULL, uffd_thread, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc)
        return -rc;
    r->thread_started = 1;
    return 0;
}

static void uffd_teardown(mmk_region *r)
{
    if (r->thread_started) {
        char c = 1;
        while (write(r->stop[1], &c, 1) < 0 && errno == EINTR)
            ;
        pthread_join(r->thread, NULL);
        r->thread_started = 0;
    }
    for (int i = 0; i < 2; i++)
        if (r->stop[i] >= 0)
            close(r->stop[i]);
    if (r->uffd >= 0)
        close(r->uffd); /* unregisters the range and drops the protection */
}
#else
static int uffd_wp(mmk_region *r, uintptr_t a, size_t len, int protect)
{
    (void)r, (void)a, (void)len, (void)protect;
    return -ENOTSUP;
}
static int uffd_setup(mmk_region *r)
{
    (void)r;
    return -ENOTSUP;
}
static void uffd_teardown(mmk_region *r) { (void)r; }
#endif

/* ------------------------------------------------------------ mprotect path */

/* Save page i and make it writable. A single-page mprotect splits the
 * mapping; when the kernel is out of mappings (vm.max_map_count) the whole
 * protected run around the page is made writable instead: it merges with its
 * writable neighbours rather than splitting (rare, and it copies the run). */
static int unprotect_page(mmk_region *r, size_t i)
{
    size_t b = i, e = i + 1;
    for (int widened = 0; widened < 2; widened++) {
        for (size_t j = b; j < e; j++)
            save_page(r, j);
        if (mmk_protect(r->base + b * r->page, (e - b) * r->page,
                        MMK_PROT_READ | MMK_PROT_WRITE) == 0) {
            for (size_t j = b; j < e; j++)
                bit_set(r->dirty, j);
            return 1;
        }
        while (b > 0 && !bit_get(r->dirty, b - 1))
            b--;
        while (e < r->npages && !bit_get(r->dirty, e))
            e++;
    }
    return 0;
}

static int on_write_fault(void *ctx, void *addr, int sig, int si_code, int is_write)
{
    mmk_region *r = ctx;
    (void)si_code;
    if (sig != SIGSEGV || is_write == 0)
        return 0;
    /* Enter unless a take or release is in progress (then wait for it):
     * increment first, check second; take does the opposite. */
    for (;;) {
        atomic_fetch_add(&r->inflight, 1);
        if (!atomic_load(&r->taking))
            break;
        atomic_fetch_sub(&r->inflight, 1);
        while (atomic_load(&r->taking))
            sched_yield();
    }
    size_t i = ((uintptr_t)addr - (uintptr_t)r->base) / r->page;
    int ok = unprotect_page(r, i);
    atomic_fetch_sub(&r->inflight, 1);
    return ok;
}

static void exclude_handlers(mmk_region *r)
{
    atomic_store(&r->taking, 1);
    while (atomic_load(&r->inflight))
        sched_yield();
}

/* ------------------------------------------------------------ common */

static int protect(mmk_region *r, size_t first, size_t n)
{
    uintptr_t a = (uintptr_t)r->base + first * r->page;
    if (r->mode == MMK_REGION_UFFD)
        return uffd_wp(r, a, n * r->page, 1);
    return mmk_protect((void *)a, n * r->page, MMK_PROT_READ);
}

/* Call fn(r, b, e) for each run [b, e) of dirty pages; stops on an error. */
static int dirty_runs(mmk_region *r, int (*fn)(mmk_region *, size_t, size_t, void *), void *ctx)
{
    for (size_t i = 0; i < r->npages;) {
        if (!(i % 64) && !atomic_load_explicit(&r->dirty[i / 64], memory_order_relaxed)) {
            i += 64;
            continue;
        }
        if (!bit_get(r->dirty, i)) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < r->npages && bit_get(r->dirty, j))
            j++;
        int rc = fn(r, i, j, ctx);
        if (rc)
            return rc;
        i = j;
    }
    return 0;
}

struct span {
    size_t runs, lo, hi;
};

static int count_run(mmk_region *r, size_t b, size_t e, void *ctx)
{
    (void)r;
    struct span *sp = ctx;
    if (!sp->runs++)
        sp->lo = b;
    sp->hi = e;
    return 0;
}

static int protect_run(mmk_region *r, size_t b, size_t e, void *ctx)
{
    (void)ctx;
    return protect(r, b, e - b);
}

/* Protect every page un-protected since the last take (all, the first
 * time). A call costs about 2 us (a TLB shootdown), each page table entry
 * walked about 25 ns: one call per run of written pages, unless the runs are
 * so many that one call over their whole span is cheaper. */
static int protect_dirty(mmk_region *r)
{
    int rc;
    if (!r->protected_once) {
        rc = protect(r, 0, r->npages);
    } else {
        struct span sp = {0, 0, 0};
        dirty_runs(r, count_run, &sp);
        if (sp.runs * 2000 > (sp.hi - sp.lo) * 25)
            rc = protect(r, sp.lo, sp.hi - sp.lo);
        else
            rc = dirty_runs(r, protect_run, NULL);
    }
    if (rc)
        return rc;
    r->protected_once = 1;
    for (size_t w = 0; w < r->words; w++)
        atomic_store_explicit(&r->dirty[w], 0, memory_order_relaxed);
    return 0;
}

static unsigned wanted_mode(unsigned flags)
{
    unsigned m = flags & (MMK_REGION_UFFD | MMK_REGION_MPROTECT);
    if (m)
        return m;
    const char *e = getenv("MMK_SNAPSHOT_MODE");
    if (e && !strcmp(e, "uffd"))
        return MMK_REGION_UFFD;
    if (e && !strcmp(e, "mprotect"))
        return MMK_REGION_MPROTECT;
    return MMK_REGION_UFFD | MMK_REGION_MPROTECT;
}

MMK_API void mmk_region_destroy(mmk_region *r)
{
    if (!r)
        return;
    for (int k = 0; k < MMK_SNAPSHOT_MAX; k++)
        mmk_snapshot_release(atomic_load(&r->slots[k]));
    if (r->mode == MMK_REGION_MPROTECT && r->claim >= 0)
        mmk__fault_unclaim(r->claim);
    uffd_teardown(r);
    if (r->base)
        mmk_release(r->base, r->size);
    free(r->dirty);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->take_mu);
    free(r);
}

static int try_mode(mmk_region *r, unsigned mode)
{
    r->mode = mode;
    if (mode == MMK_REGION_UFFD) {
        int rc = uffd_setup(r);
        if (rc) {
            uffd_teardown(r);
            r->uffd = r->stop[0] = r->stop[1] = -1;
        }
        return rc;
    }
    if (!mmk_fault_enabled()) /* MMK_FAULT=off: no handler would catch the writes */
        return -ENOTSUP;
    int id = mmk__fault_claim(r->base, r->size, on_write_fault, r);
    if (id < 0)
        return id;
    r->claim = id;
    return 0;
}

MMK_API int mmk_region_create(size_t size, unsigned flags, mmk_region **out)
{
    const unsigned known = MMK_REGION_UFFD | MMK_REGION_MPROTECT | MMK_REGION_SMALL;
    if (!out || !size || (flags & ~known))
        return -EINVAL;
    mmk_region *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->page = mmk__pagesz();
    r->uffd = r->stop[0] = r->stop[1] = r->claim = -1;
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->take_mu, NULL);
    int huge = !(flags & MMK_REGION_SMALL);
    r->size = mmk__align_up(size, huge ? HUGE_ALIGN : r->page);
    int rc = r->size ? 0 : -ENOMEM;
    void *p = NULL;
    if (!rc)
        rc = mmk_reserve_aligned(r->size, huge ? HUGE_ALIGN : r->page, &p);
    if (rc) {
        mmk_region_destroy(r);
        return rc;
    }
    r->base = p;
    r->npages = r->size / r->page;
    r->words = (r->npages + 63) / 64;
    r->dirty = calloc(r->words, sizeof *r->dirty);
    rc = r->dirty ? mmk_commit(p, r->size) : -ENOMEM;
    if (!rc)
        (void)mmk_advise(p, r->size, huge ? MMK_ADV_HUGEPAGE : MMK_ADV_NOHUGEPAGE);
    if (!rc) {
        unsigned want = wanted_mode(flags);
        rc = -ENOTSUP;
        if (want & MMK_REGION_UFFD)
            rc = try_mode(r, MMK_REGION_UFFD);
        if (rc && (want & MMK_REGION_MPROTECT))
            rc = try_mode(r, MMK_REGION_MPROTECT);
    }
    if (rc) {
        mmk_region_destroy(r);
        return rc;
    }
    *out = r;
    return 0;
}

MMK_API void *mmk_region_base(const mmk_region *r) { return r ? r->base : NULL; }
MMK_API size_t mmk_region_size(const mmk_region *r) { return r ? r->size : 0; }
MMK_API unsigned mmk_region_mode(const mmk_region *r) { return r ? r->mode : 0; }

static void snap_free(mmk_snapshot *s)
{
    if (s->store)
        mmk_release(s->store, s->r->size);
    free(s->saved);
    free(s);
}

/* Enter/leave the section that excludes fault handling. */
static void exclusive_begin(mmk_region *r)
{
    if (r->mode == MMK_REGION_UFFD)
        pthread_mutex_lock(&r->lock);
    else
        exclude_handlers(r);
}

static void exclusive_end(mmk_region *r)
{
    if (r->mode == MMK_REGION_UFFD)
        pthread_mutex_unlock(&r->lock);
    else
        atomic_store(&r->taking, 0);
}

MMK_API int mmk_snapshot_take(mmk_region *r, mmk_snapshot **out)
{
    if (!r || !out)
        return -EINVAL;
    mmk_snapshot *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->r = r;
    s->saved = calloc(r->words, sizeof *s->saved);
    void *p = NULL;
    int rc = s->saved ? mmk_reserve(r->size, &p) : -ENOMEM;
    if (!rc) {
        s->store = p;
        rc = mmk_commit(p, r->size);
    }
    if (!rc) /* copies are 4 KiB: a huge page there would waste 2 MiB each */
        (void)mmk_advise(p, r->size, MMK_ADV_NOHUGEPAGE);
    if (rc) {
        snap_free(s);
        return rc;
    }
    pthread_mutex_lock(&r->take_mu);
    int slot = -1;
    for (int k = 0; k < MMK_SNAPSHOT_MAX && slot < 0; k++)
        if (!atomic_load(&r->slots[k]))
            slot = k;
    if (slot < 0) {
        pthread_mutex_unlock(&r->take_mu);
        snap_free(s);
        return -ENOSPC;
    }
    s->slot = slot;
    exclusive_begin(r);
    atomic_store_explicit(&r->slots[slot], s, memory_order_release);
    rc = protect_dirty(r);
    if (rc)
        atomic_store(&r->slots[slot], NULL);
    exclusive_end(r);
    pthread_mutex_unlock(&r->take_mu);
    if (rc) {
        snap_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* Page i of the snapshot into dst: the saved copy, or the region page if no
 * write has touched it since the take. A write may complete right after we
 * read the region page; its handler saved the page first, so re-check the
 * bit after reading (a seqlock-style read) and take the copy if it is set. */
static void read_page(const mmk_snapshot *s, size_t i, size_t in, void *dst, size_t n)
{
    const mmk_region *r = s->r;
    if (!bit_get(s->saved, i)) {
        copy_page(dst, r->base + i * r->page + in, n);
        /* A read-don't-modify-write: orders the copy before the re-check
         * (a fence would do, but ThreadSanitizer does not model fences). */
        uint64_t w = atomic_fetch_or_explicit(&s->saved[i / 64], 0, memory_order_acq_rel);
        if (!((w >> (i % 64)) & 1))
            return;
    }
    mmk__copy(dst, s->store + i * r->page + in, n);
}

MMK_API int mmk_snapshot_read(const mmk_snapshot *s, size_t off, void *buf, size_t len)
{
    if (!s || (!buf && len))
        return -EINVAL;
    const mmk_region *r = s->r;
    if (off > r->size || len > r->size - off)
        return -ERANGE;
    char *d = buf;
    while (len) {
        size_t i = off / r->page, in = off % r->page;
        size_t n = r->page - in < len ? r->page - in : len;
        read_page(s, i, in, d, n);
        d += n;
        off += n;
        len -= n;
    }
    return 0;
}

MMK_API size_t mmk_snapshot_copied(const mmk_snapshot *s)
{
    return s ? atomic_load_explicit(&((mmk_snapshot *)s)->copied, memory_order_relaxed) : 0;
}

MMK_API void mmk_snapshot_release(mmk_snapshot *s)
{
    if (!s)
        return;
    mmk_region *r = s->r;
    pthread_mutex_lock(&r->take_mu);
    exclusive_begin(r); /* no handler is copying into it once we are in */
    atomic_store(&r->slots[s->slot], NULL);
    exclusive_end(r);
    pthread_mutex_unlock(&r->take_mu);
    snap_free(s);
}
