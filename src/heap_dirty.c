/* Finding the pages a transaction wrote, three ways (MMK_HEAP_DIRTY=scan,
 * pagemap or wp forces one; the default is the first that works here):
 *
 *  scan     PAGEMAP_SCAN ioctl (Linux 6.7+): in a MAP_PRIVATE file mapping a
 *           written page was copied on write and is anonymous, so we ask for
 *           present or swapped pages that are NOT file pages. The kernel
 *           skips empty page tables: cost grows with resident pages.
 *  pagemap  read /proc/self/pagemap (8 bytes a page) and test bit 61 (file
 *           page) of present/swapped pages: cost grows with the heap size.
 *  wp       the mapping stays read-only inside the transaction; the first
 *           write to a page faults, our claim in the fault layer marks it
 *           and makes it writable. Costs a fault per page and splits the
 *           mapping (vm.max_map_count bounds a transaction); system calls
 *           that write into heap memory fail with EFAULT. */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <linux/userfaultfd.h>
#include <time.h>
#include <unistd.h>

#include "fault_internal.h"
#include "heap_internal.h"

/* PAGEMAP_SCAN, declared here when the system headers predate it. */
#ifndef PAGEMAP_SCAN
struct page_region {
    uint64_t start, end, categories;
};
struct pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#endif

#ifndef PM_SCAN_WP_MATCHING
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#define PAGE_IS_WRITTEN (1 << 1)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

#define PM_PRESENT (1ull << 63)
#define PM_SWAPPED (1ull << 62)
#define PM_FILE (1ull << 61)

const char *mmk__hp_dirty_name(const mmk_heap *h)
{
    if (h->dm == DM_WP && h->wp_auto)
        return h->bulk == DM_UFFD   ? "wp_fault+uffd_scan"
               : h->bulk == DM_SCAN ? "wp_fault+pagemap_scan"
                                    : "wp_fault+pagemap";
    return h->dm == DM_SCAN      ? "pagemap_scan"
           : h->dm == DM_PAGEMAP ? "pagemap"
           : h->dm == DM_UFFD    ? "uffd_scan"
                                 : "wp_fault";
}

/* Pages written since they were last write-protected through the
 * userfaultfd (async mode: the kernel only clears a bit on the first write)
 * and not file pages; the same call write-protects them again. A hole
 * counts as written (nothing protects it): only present or swapped pages. */
static int scan_pages(mmk_heap *h, uint64_t start, uint64_t end, uint64_t flags,
                      uint64_t mask);

static int uffd_scan_range(mmk_heap *h, uint64_t start, uint64_t end)
{
    return scan_pages(h, start, end, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                      PAGE_IS_WRITTEN);
}

static int uffd_register(mmk_heap *h, size_t from, size_t to)
{
    if (h->uffd < 0 || to <= from)
        return 0;
    struct uffdio_register r = {.range = {(uint64_t)(uintptr_t)(h->base + from), to - from},
                                .mode = UFFDIO_REGISTER_MODE_WP};
    return ioctl(h->uffd, UFFDIO_REGISTER, &r) ? -errno : 0;
}

/* userfaultfd in write-protect async mode (Linux 6.7+) with PAGEMAP_SCAN;
 * UFFD_USER_MODE_ONLY so that no privilege is needed (async write-protect
 * faults are resolved in the kernel, never delivered, in any mode). */
static int init_uffd(mmk_heap *h)
{
    if (h->pagemap_fd < 0)
        return -ENOTSUP;
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0)
        return -ENOTSUP; /* ENOSYS, EPERM (a seccomp policy), EINVAL (old kernel) */
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC};
    if (ioctl(fd, UFFDIO_API, &api) || !(api.features & UFFD_FEATURE_WP_ASYNC)) {
        close(fd);
        return -ENOTSUP;
    }
    h->uffd = fd;
    int rc = uffd_register(h, 0, h->mapped);
    if (!rc) {
        h->ndirty = 0;
        uint64_t b = (uint64_t)(uintptr_t)h->base;
        rc = uffd_scan_range(h, b, b + HP_PAGE); /* the scan flags work here */
        h->ndirty = 0;
    }
    if (rc) {
        close(fd);
        h->uffd = -1;
        return rc == -EINVAL ? -ENOTSUP : rc;
    }
    h->keep = 1;
    /* Kept copies cost memory beside the page cache: at most a quarter of
     * the mapped heap, 16 MiB at least, before they are all dropped at
     * once. MMK_HEAP_KEEP_MB fixes the limit (0: keep none). */
    const char *e = getenv("MMK_HEAP_KEEP_MB");
    h->keep_max = e ? (size_t)strtoull(e, NULL, 10) << (20 - HP_SHIFT) : SIZE_MAX;
    return 0;
}

void mmk__hp_dirty_drop_kept(mmk_heap *h)
{
    if (!h->nkept)
        return;
    madvise(h->base, h->mapped, MADV_DONTNEED);
    h->nkept = 0;
    h->view_dropped += h->mapped >> HP_SHIFT;
}

/* MADV_DONTNEED over many ranges: one process_madvise (Linux 6.13+ takes
 * any advice for the caller itself), else one madvise a range. */
int mmk__hp_test_no_process_madvise;

static int drop_ranges(mmk_heap *h, struct iovec *v, int n)
{
    if (h->self_pidfd == -1) {
        int fd = mmk__hp_test_no_process_madvise ? -1 : (int)syscall(SYS_pidfd_open, getpid(), 0);
        h->self_pidfd = fd >= 0 ? fd : -2;
    }
    if (h->self_pidfd >= 0) {
        size_t want = 0;
        for (int i = 0; i < n; i++)
            want += v[i].iov_len;
        long r = syscall(SYS_process_madvise, h->self_pidfd, v, (size_t)n, MADV_DONTNEED, 0u);
        if (r == (long)want)
            return 0;
        if (r < 0 && errno != EINTR && errno != EAGAIN) { /* refused here: do not ask again */
            close(h->self_pidfd);
            h->self_pidfd = -2;
        }
    }
    for (int i = 0; i < n; i++) /* again from the start: dropping twice is harmless */
        if (madvise(v[i].iov_base, v[i].iov_len, MADV_DONTNEED))
            return -errno;
    return 0;
}

int mmk__hp_dirty_drop_clean(mmk_heap *h)
{
    if (h->pagemap_fd < 0)
        return -ENOTSUP;
    enum { NV = 256 };
    struct page_region vec[NV];
    struct iovec iov[NV];
    /* Page 0 stays: every begin reads the header. */
    uint64_t start = (uint64_t)(uintptr_t)h->base + HP_PAGE;
    uint64_t end = (uint64_t)(uintptr_t)h->base + h->mapped;
    size_t kept = 0;
    while (start < end) {
        struct pm_scan_arg a = {.size = sizeof a, .start = start, .end = end,
                                .vec = (uint64_t)(uintptr_t)vec, .vec_len = NV,
                                .category_mask = PAGE_IS_PRESENT,
                                .return_mask = PAGE_IS_FILE};
        long n = ioctl(h->pagemap_fd, PAGEMAP_SCAN, &a);
        if (n < 0)
            return -errno;
        int ni = 0;
        for (long i = 0; i < n; i++) {
            if (vec[i].categories & PAGE_IS_FILE) {
                iov[ni++] = (struct iovec){(void *)(uintptr_t)vec[i].start,
                                           vec[i].end - vec[i].start};
                h->view_dropped += (vec[i].end - vec[i].start) >> HP_SHIFT;
            } else {
                kept += (vec[i].end - vec[i].start) >> HP_SHIFT;
            }
        }
        if (ni) {
            int rc = drop_ranges(h, iov, ni);
            if (rc)
                return rc;
        }
        if (a.walk_end <= start)
            return -EIO;
        start = a.walk_end;
    }
    h->nkept = kept;
    return 0;
}

void mmk__hp_dirty_keep(mmk_heap *h, const uint64_t *pages, size_t n, int trim)
{
    if (!h->keep || (!n && !trim))
        return;
    size_t limit = h->keep_max;
    if (limit == SIZE_MAX) {
        limit = (h->mapped >> HP_SHIFT) / 4;
        if (limit < 4096)
            limit = 4096;
    }
    int err = 0;
    if (!hp_all_rw(h)) /* pages found by faults: not write-protected by a scan */
        for (size_t i = 0; i < n && !err;) {
            size_t j = i + 1;
            while (j < n && pages[j] == pages[j - 1] + 1)
                j++;
            struct uffdio_writeprotect w = {
                .range = {(uint64_t)(uintptr_t)hp_page(h, pages[i]), (j - i) << HP_SHIFT},
                .mode = UFFDIO_WRITEPROTECT_MODE_WP};
            err = ioctl(h->uffd, UFFDIO_WRITEPROTECT, &w);
            i = j;
        }
    h->nkept += n;
    /* Asked to (a costly walk), or at the limit, where nkept (which counts a
     * page kept again twice) must be made exact: drop the pages only read
     * and count the kept ones. Over the limit still, or failed: drop all. */
    if (!err && (trim || h->nkept > limit) && mmk__hp_dirty_drop_clean(h))
        err = 1;
    if (err || h->nkept > limit) { /* unprotected copies would look written: drop */
        h->nkept = 1;
        mmk__hp_dirty_drop_kept(h);
    }
}

/* Present or swapped pages that are not file pages (copied on write) and,
 * with `mask`, in those categories too, added to h->dirty. */
static int scan_pages(mmk_heap *h, uint64_t start, uint64_t end, uint64_t flags,
                      uint64_t mask)
{
    struct page_region vec[256];
    while (start < end) {
        struct pm_scan_arg a = {
            .size = sizeof a, .flags = flags, .start = start, .end = end,
            .vec = (uint64_t)(uintptr_t)vec, .vec_len = 256,
            .category_inverted = PAGE_IS_FILE, .category_mask = PAGE_IS_FILE | mask,
            .category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            .return_mask = PAGE_IS_FILE | PAGE_IS_PRESENT | PAGE_IS_SWAPPED};
        long n = ioctl(h->pagemap_fd, PAGEMAP_SCAN, &a);
        if (n < 0)
            return -errno;
        for (long i = 0; i < n; i++)
            for (uint64_t p = vec[i].start; p < vec[i].end; p += HP_PAGE) {
                int rc = mmk__hp_dirty_add(h, (p - (uint64_t)(uintptr_t)h->base) >> HP_SHIFT);
                if (rc)
                    return rc;
            }
        if (a.walk_end <= start)
            return -EIO;
        start = a.walk_end;
    }
    return 0;
}

static int scan_range(mmk_heap *h, uint64_t start, uint64_t end)
{
    return scan_pages(h, start, end, 0, 0);
}

static int pagemap_range(mmk_heap *h, uint64_t start, uint64_t end)
{
    uint64_t ent[4096];
    uint64_t first = start / HP_PAGE, last = end / HP_PAGE;
    while (first < last) {
        size_t k = last - first < 4096 ? (size_t)(last - first) : 4096;
        ssize_t r = pread(h->pagemap_fd, ent, k * 8, (off_t)(first * 8));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0 || r % 8)
            return -EIO;
        k = (size_t)r / 8;
        for (size_t i = 0; i < k; i++)
            if ((ent[i] & (PM_PRESENT | PM_SWAPPED)) && !(ent[i] & PM_FILE)) {
                int rc = mmk__hp_dirty_add(
                    h, ((first + i) * HP_PAGE - (uint64_t)(uintptr_t)h->base) >> HP_SHIFT);
                if (rc)
                    return rc;
            }
        first += k;
    }
    return 0;
}

/* Signal context: mark the page, make it writable, retry the store. After
 * WP_SWITCH faults in one transaction (auto mode), or when the kernel runs
 * out of mappings (vm.max_map_count), make the whole mapping writable once:
 * the written pages are then found by the bulk method at commit. */
static int wp_fault(void *ctx, void *addr, int sig, int si_code, int is_write)
{
    (void)si_code;
    mmk_heap *h = ctx;
    uintptr_t a = (uintptr_t)addr, b = (uintptr_t)h->base;
    size_t mapped = __atomic_load_n(&h->mapped, __ATOMIC_RELAXED);
    if (sig != SIGSEGV || !is_write || !__atomic_load_n(&h->in_txn, __ATOMIC_RELAXED) ||
        a < b || a >= b + mapped)
        return 0;
    uint64_t pg = (a - b) >> HP_SHIFT;
    int n = __atomic_add_fetch(&h->wp_faults, 1, __ATOMIC_RELAXED);
    if (!(h->wp_auto && n > h->wp_switch) &&
        mprotect((void *)(b + (pg << HP_SHIFT)), HP_PAGE, PROT_READ | PROT_WRITE) == 0) {
        __atomic_fetch_or(&h->wp_bits[pg / 64], 1ull << (pg % 64), __ATOMIC_RELAXED);
        return 1;
    }
    if (!h->wp_auto)
        return 0;
    if (mprotect((void *)b, mapped, PROT_READ | PROT_WRITE))
        return 0;
    __atomic_store_n(&h->wp_all, 1, __ATOMIC_RELAXED);
    return 1;
}

static int probe_scan(mmk_heap *h)
{
    h->ndirty = 0;
    int rc = scan_range(h, (uint64_t)(uintptr_t)h->base,
                        (uint64_t)(uintptr_t)h->base + HP_PAGE);
    h->ndirty = 0;
    return rc;
}

/* A quarter of vm.max_map_count, clamped to [WP_SWITCH_MIN, WP_SWITCH_MAX]. */
static int wp_switch_limit(void)
{
    long lim = 65530;
    int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char b[32];
        ssize_t r = read(fd, b, sizeof b - 1);
        if (r > 0) {
            b[r] = 0;
            lim = strtol(b, NULL, 10);
        }
        close(fd);
    }
    lim /= 4 * 2; /* a page made writable alone adds up to two mappings */
    return lim < WP_SWITCH_MIN ? WP_SWITCH_MIN : lim > WP_SWITCH_MAX ? WP_SWITCH_MAX : (int)lim;
}

static int init_wp(mmk_heap *h)
{
    h->wp_limit = wp_switch_limit();
    size_t words = (h->reserve >> HP_SHIFT) / 64 + 1;
    h->wp_bits_len = mmk__align_up(words * 8, HP_PAGE);
    void *m = mmap(NULL, h->wp_bits_len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return -errno;
    h->wp_bits = m;
    int rc = mmk__fault_acquire();
    if (rc)
        return rc;
    h->wp_claim = mmk__fault_claim(h->base, h->reserve, wp_fault, h);
    if (h->wp_claim < 0) {
        mmk__fault_release();
        return h->wp_claim;
    }
    return 0;
}

/* Default: write-protect faults (cost grows with the pages written, not
 * with the heap: see docs/BENCHMARKS.md), going all-writable with
 * PAGEMAP_SCAN (else pagemap) for big transactions. */
int mmk__hp_dirty_init(mmk_heap *h)
{
    const char *e = getenv("MMK_HEAP_DIRTY");
    int want = -1; /* auto */
    if (e && !strcmp(e, "scan"))
        want = DM_SCAN;
    else if (e && !strcmp(e, "pagemap"))
        want = DM_PAGEMAP;
    else if (e && !strcmp(e, "wp"))
        want = DM_WP;
    else if (e && !strcmp(e, "uffd"))
        want = DM_UFFD;
    h->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    int scan_ok = h->pagemap_fd >= 0 && probe_scan(h) == 0;
    if (want == DM_SCAN || want == DM_PAGEMAP) {
        if (h->pagemap_fd < 0)
            return -errno;
        if (want == DM_SCAN && !scan_ok)
            return -ENOTSUP;
        h->dm = want;
        return 0;
    }
    int ro = !!(h->flags & MMK_HEAP_RDONLY);
    if (want == DM_UFFD) { /* all-writable in every transaction, kept copies */
        if (h->pagemap_fd < 0)
            return -errno;
        h->dm = DM_UFFD;
        return ro ? 0 : init_uffd(h);
    }
    h->dm = DM_WP;
    h->bulk = scan_ok ? DM_SCAN : DM_PAGEMAP;
    h->wp_auto = want < 0 && h->pagemap_fd >= 0;
    if (h->wp_auto && scan_ok && !ro && init_uffd(h) == 0)
        h->bulk = DM_UFFD;
    int rc = init_wp(h);
    if (rc && want < 0 && h->pagemap_fd >= 0) { /* no fault layer: the bulk method alone */
        h->dm = h->bulk;
        h->wp_auto = 0;
        return 0;
    }
    return rc;
}

void mmk__hp_dirty_fini(mmk_heap *h)
{
    if (h->wp_claim >= 0) {
        mmk__fault_unclaim(h->wp_claim);
        mmk__fault_release();
        h->wp_claim = -1;
    }
    if (h->wp_bits)
        munmap(h->wp_bits, h->wp_bits_len);
    h->wp_bits = NULL;
    if (h->pagemap_fd >= 0)
        close(h->pagemap_fd);
    h->pagemap_fd = -1;
    if (h->uffd >= 0)
        close(h->uffd);
    h->uffd = -1;
    h->keep = 0;
    if (h->self_pidfd >= 0)
        close(h->self_pidfd);
    h->self_pidfd = -1;
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

int mmk__hp_dirty_begin(mmk_heap *h)
{
    h->ndirty = 0;
    __atomic_store_n(&h->wp_faults, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&h->wp_all, 0, __ATOMIC_RELAXED);
    h->wp_unlisted = 0;
    h->bulk_txn_ns = 0;
    if (h->dm != DM_WP || !h->wp_auto)
        return 0;
    /* Going all-writable costs a walk over the mapping's resident page
     * tables (two mprotects and the scan: ~0.2 us a resident page here); a
     * write fault costs WP_FAULT_NS more than a page the scan finds. Switch
     * where the two meet, using the last measured walk (or 0.2 us a mapped
     * page before the first), and before the mapping count nears its limit.
     * A transaction after one that wrote more than that starts all-writable:
     * transactions of one program tend to look alike. */
    uint64_t bulk = h->bulk_ns ? h->bulk_ns : (h->mapped >> HP_SHIFT) * 200;
    uint64_t sw = bulk / WP_FAULT_NS;
    h->wp_switch = sw < WP_SWITCH_MIN ? WP_SWITCH_MIN : sw > (uint64_t)h->wp_limit ? h->wp_limit
                                                                                    : (int)sw;
    if (h->prev_written > (size_t)h->wp_switch)
        __atomic_store_n(&h->wp_all, 1, __ATOMIC_RELAXED);
    return 0;
}

/* The caller times the final mprotect of an all-writable transaction. */
void mmk__hp_dirty_bulk_done(mmk_heap *h, uint64_t protect_ns)
{
    if (!h->bulk_txn_ns)
        return;
    uint64_t t = h->bulk_txn_ns + 2 * protect_ns; /* the mprotect to writable costs the same */
    h->bulk_txn_ns = t;
    h->bulk_ns = h->bulk_ns ? (3 * h->bulk_ns + t) / 4 : t;
}

/* After an all-writable commit of `written` pages: did walking the mapping
 * cost more than half what write faults on them would have? The walk grows
 * with the pages this handle has resident (every page it ever read stays
 * mapped), not with the transaction; then the caller unmaps them all, so
 * the next walks see only what is touched again (a refault each, ~1 us).
 * Half the fault cost as the bar: a walk grows transaction by transaction
 * while the refaults after a drop are paid once (tried 2, 4 and 8 us on
 * the 1 M-key map fill: the same within this machine's noise). */
int mmk__hp_dirty_walk_costly(const mmk_heap *h, size_t written)
{
    return h->bulk_txn_ns > (uint64_t)written * (WP_FAULT_NS / 2) + 100000;
}

/* Commits whose walks grew costly unmap the pages the handle only read
 * (drop_clean), or everything (drop_kept), and a read view after them
 * faults those back: while the mapping is registered with the userfaultfd
 * the kernel maps one page a fault (none around it), ~1-3 us each here. So
 * a read view that follows the unmapping of many pages (4096 at least and a
 * quarter of the mapping, counted since the last view) closes the
 * userfaultfd, as when registering fails (the kept copies go too: without
 * it they would look written), and its faults map up to 16 pages again:
 * the 1 M gets right after a 1 M-key map fill took 31.5 k faults, 2.3 k
 * this way. The next transaction opens a new one (~20 us; kept copies start
 * again from none), so the bar keeps handles that take turns between
 * transactions and short views from paying that each time. */
void mmk__hp_dirty_pause(mmk_heap *h)
{
    size_t dropped = h->view_dropped, pages = h->mapped >> HP_SHIFT;
    h->view_dropped = 0;
    if (h->uffd < 0 || h->keep_lost || h->uffd_paused || dropped < 4096 || dropped < pages / 4)
        return;
    h->nkept = 1;
    mmk__hp_dirty_drop_kept(h);
    h->view_dropped = 0;
    close(h->uffd);
    h->uffd = -1;
    h->keep = 0;
    h->uffd_paused = h->dm == DM_UFFD ? 2 : 1;
    if (h->bulk == DM_UFFD)
        h->bulk = DM_SCAN;
    if (h->dm == DM_UFFD)
        h->dm = DM_SCAN;
}

/* Before a transaction: a new userfaultfd over the whole mapping. Nothing
 * is kept (pause dropped it all, and nothing writes between), so every
 * private page from here on is this transaction's. If it fails, the handle
 * stays with the plain scan, as after a failed registration. */
void mmk__hp_dirty_resume(mmk_heap *h)
{
    int was = h->uffd_paused;
    if (!was)
        return;
    h->uffd_paused = 0;
    if (init_uffd(h))
        return;
    if (was == 2)
        h->dm = DM_UFFD;
    else
        h->bulk = DM_UFFD;
}

uint64_t mmk__hp_now_ns(void)
{
    return now_ns();
}

int mmk__hp_test_fail_register;

/* New pages are mapped like the rest (read-only for wp); the userfaultfd
 * must learn of the new range. */
int mmk__hp_dirty_map_grown(mmk_heap *h, size_t old_mapped)
{
    int rc = mmk__hp_test_fail_register && h->uffd >= 0 ? -ENOMEM
                                                        : uffd_register(h, old_mapped, h->mapped);
    if (rc)
        h->keep_lost = 1; /* collect scans for private pages instead (kept ones too) */
    return rc;
}

void mmk__hp_dirty_settle(mmk_heap *h, uint64_t commit)
{
    if (h->keep_lost && h->uffd >= 0) {
        h->nkept = 1;
        mmk__hp_dirty_drop_kept(h);
        close(h->uffd); /* unregisters the whole mapping */
        h->uffd = -1;
        h->keep = 0;
        if (h->bulk == DM_UFFD)
            h->bulk = DM_SCAN;
        if (h->dm == DM_UFFD)
            h->dm = DM_SCAN;
    }
    if (h->nkept && commit != h->kept_commit)
        mmk__hp_dirty_drop_kept(h);
}

int mmk__hp_dirty_collect(mmk_heap *h)
{
    h->ndirty = 0;
    uint64_t b = (uint64_t)(uintptr_t)h->base;
    int rc = 0;
    if (h->dm == DM_WP) {
        size_t words = ((h->mapped >> HP_SHIFT) + 63) / 64;
        for (size_t w = 0; w < words; w++) {
            uint64_t x = h->wp_bits[w];
            if (!x)
                continue;
            h->wp_bits[w] = 0;
            while (x && !rc) {
                rc = mmk__hp_dirty_add(h, w * 64 + (uint64_t)__builtin_ctzll(x));
                x &= x - 1;
            }
        }
        if (rc || !__atomic_load_n(&h->wp_all, __ATOMIC_RELAXED))
            return rc;
    }
    int m = h->dm == DM_WP ? h->bulk : h->dm;
    uint64_t t0 = now_ns();
    if (m == DM_UFFD && h->keep_lost)
        m = DM_SCAN; /* a range is not registered: every private page counts */
    rc = m == DM_UFFD  ? uffd_scan_range(h, b, b + h->mapped)
         : m == DM_SCAN ? scan_range(h, b, b + h->mapped)
                        : pagemap_range(h, b, b + h->mapped);
    h->bulk_txn_ns = now_ns() - t0 + 1;
    return rc;
}

void mmk__hp_dirty_end(mmk_heap *h)
{
    __atomic_store_n(&h->wp_all, 0, __ATOMIC_RELAXED);
}
