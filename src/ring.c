/* ring.h: the magic ring buffer.
 *
 * Address space (one reservation, so no other thread can ever take a hole):
 *
 *   base                base+cap             base+2cap
 *   | data (off 0..cap) | data again (mirror) | header (off cap..cap+H) |
 *
 * The object is [data | header]: the data starts at offset 0 so that with
 * huge pages both the file offset and the address are 2 MiB aligned. Two
 * mmaps: the whole object at base+cap, the data alone at base.
 *
 * Positions are 64-bit byte counts that only grow (they never wrap in
 * practice). Each side keeps its own position and the offset inside the ring
 * privately (offset += n; if >= cap: -= cap: no division, any capacity) and
 * publishes the position with a release store; it caches the other side's
 * position and reloads it only when the cache says there is not enough.
 * Every position read from shared memory is checked (0 <= head - tail <=
 * cap), so a broken or hostile peer can never make a span leave the ring. */
#include <stdatomic.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <mmkit/ring.h>
#include <mmkit/vm.h>
#include "fault_internal.h"
#include "internal.h"

#define RING_MAGIC   0x474e49524b4d4d21ull /* "!MMKRING" little-endian */
#define RING_VERSION 3u /* 2: wake-ups use asymmetric barriers (need_fence);
                          * 3: liveness by OFD locks (prod_live/cons_live) */
#define RING_ENDIAN  0x01020304u
#define LINE         128 /* two cache lines: the adjacent-line prefetcher pairs them */
#define SLICE_NS     100000000ll /* bounded sleeps: a dead peer is seen within this */
#define SPINS        100 /* polls before sleeping: a few microseconds */
#define REC_HDR      8u
#define REC_CHECK    0x52454331u
#define RING_NOINLINE __attribute__((noinline)) /* rare work, kept off the fast paths */

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free to be shared");

/* The shared header. Fixed-width fields only: another process (perhaps
 * another build) reads it. */
struct ring_hdr {
    /* written once by the creator */
    uint64_t magic;
    uint32_t version;
    uint32_t endian;
    uint64_t capacity;
    uint32_t hdr_size;
    uint32_t page_size;
    uint32_t flags;
    /* producer's line: the write position alone */
    _Alignas(LINE) _Atomic uint64_t head;
    /* consumer's line: the read position alone */
    _Alignas(LINE) _Atomic uint64_t tail;
    /* control words, written rarely, read on every call */
    _Alignas(LINE) _Atomic uint32_t closed; /* close_write was called */
    _Atomic uint32_t prod_gone;             /* the producer's handle was destroyed */
    _Atomic uint32_t cons_gone;
    _Atomic int32_t prod_pid;               /* who produces / consumes: the fall-back */
    _Atomic int32_t cons_pid;               /* liveness check (and a hint for people) */
    _Atomic uint32_t need_fence;            /* a sleeper could not issue membarrier: wakers fence */
    _Atomic uint32_t live_next;             /* lock bytes handed out so far */
    _Atomic uint32_t prod_live;             /* the lock byte the producer holds (0: none, */
    _Atomic uint32_t cons_live;             /* check the pid); see "peer death" */
    _Atomic uint32_t prod_pidns;            /* the pid namespace of prod_pid (0: unknown) */
    _Atomic uint32_t cons_pidns;
    /* wake-up words: the data-ready futex (bumped by the producer) and its
     * need-wakeup flag (set by a consumer about to sleep) */
    _Alignas(LINE) _Atomic uint32_t rd_seq;
    _Atomic uint32_t rd_waiting;
    /* the space-free futex and flag, the other way round */
    _Alignas(LINE) _Atomic uint32_t wr_seq;
    _Atomic uint32_t wr_waiting;
};
_Static_assert(sizeof(struct ring_hdr) <= 4096, "header fits a page");
_Static_assert(offsetof(struct ring_hdr, head) == 128, "layout version 3");
_Static_assert(offsetof(struct ring_hdr, tail) == 256, "layout version 3");
_Static_assert(offsetof(struct ring_hdr, closed) == 384, "layout version 3");
_Static_assert(offsetof(struct ring_hdr, cons_pidns) < 512, "layout version 3");
_Static_assert(offsetof(struct ring_hdr, rd_seq) == 512, "layout version 3");
_Static_assert(offsetof(struct ring_hdr, wr_seq) == 640, "layout version 3");

enum { RD = 0, WR = 1 }; /* eventfd / liveness slots: readable, writable */

struct mmk_ring {
    /* producer's private state */
    _Alignas(LINE) uint64_t head; /* authoritative write position */
    uint64_t tail_cache;
    size_t woff;     /* head mod cap */
    unsigned pgen;   /* fork generation in which we claimed the producer side */
    size_t rsv_n;    /* records in the open reservation (0: none) */
    size_t rsv_len;  /* payload bytes reserved for each of them */
    uint64_t pub_head; /* last head published (MMK_RING_BATCH: may lag head) */
    int pplain;        /* no MMK_RING_BATCH, membarrier registered: the short publish */
    /* consumer's private state */
    _Alignas(LINE) uint64_t tail;
    uint64_t head_cache;
    size_t roff;
    unsigned cgen;
    size_t peek_space; /* ring bytes of the records returned by the last peek, 0: none */
    size_t peek_n;     /* how many records that peek returned */
    uint64_t pub_tail;
    int cplain;
    /* cold: set up once */
    _Alignas(LINE) struct ring_hdr *hdr;
    char *data;
    char *base;
    size_t maplen;
    size_t cap;
    int fd;
    unsigned flags;
    int asym;     /* this process is registered for membarrier: wakers need no fence */
    size_t batch; /* MMK_RING_BATCH: publish after this many bytes */
    _Atomic int broken; /* sticky MMK_ECORRUPT */
    _Atomic int efd[2];
    int peer_pid[2], peer_h[2]; /* cached pid-check handles: RD producer, WR consumer */
    _Atomic int live_fd; /* our own open file description, holding our sides' locks */
    mmk_ring *reg_prev, *reg_next; /* all handles of this process, for the fork handler */
};

static inline void mmk__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* ----------------------------------------------------------------- fork */

/* A child must re-announce itself for the sides it uses: bump a generation
 * in the child, compared on each call (a plain load, no getpid).
 *
 * The child also lets go of the liveness locks it inherited. Its copy of a
 * handle's lock descriptor refers to the parent's open file description, so
 * as long as the child kept it, the parent's locks would outlive the parent:
 * a child that never touches the ring (a worker forked for something else)
 * would hide the parent's death. So every handle of the process is listed
 * (reg_head, under reg_lock) and the child closes their lock descriptors;
 * a side it then uses is claimed with a description of its own. */
static _Atomic unsigned fork_gen = 1;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static int asym_ok; /* written once under fork_once; a forked child inherits the registration */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static mmk_ring *reg_head;

static void on_fork_prepare(void) { pthread_mutex_lock(&reg_lock); }
static void on_fork_parent(void) { pthread_mutex_unlock(&reg_lock); }
static void on_fork_child(void)
{
    atomic_fetch_add_explicit(&fork_gen, 1, memory_order_relaxed);
    for (mmk_ring *r = reg_head; r; r = r->reg_next)
        mmk__os_close(atomic_exchange_explicit(&r->live_fd, -1, memory_order_relaxed));
    pthread_mutex_unlock(&reg_lock);
}

static void fork_setup(void)
{
    pthread_atfork(on_fork_prepare, on_fork_parent, on_fork_child);
    asym_ok = mmk__os_membarrier_register() == 0;
}

static void reg_add(mmk_ring *r)
{
    pthread_mutex_lock(&reg_lock);
    r->reg_prev = NULL;
    r->reg_next = reg_head;
    if (reg_head)
        reg_head->reg_prev = r;
    reg_head = r;
    pthread_mutex_unlock(&reg_lock);
}

static void reg_remove(mmk_ring *r)
{
    pthread_mutex_lock(&reg_lock);
    if (r->reg_prev)
        r->reg_prev->reg_next = r->reg_next;
    else if (reg_head == r)
        reg_head = r->reg_next;
    if (r->reg_next)
        r->reg_next->reg_prev = r->reg_prev;
    pthread_mutex_unlock(&reg_lock);
}

static inline unsigned gen_now(void) { return atomic_load_explicit(&fork_gen, memory_order_relaxed); }

static int corrupt(mmk_ring *r)
{
    atomic_store_explicit(&r->broken, MMK_ECORRUPT, memory_order_relaxed);
    return MMK_ECORRUPT;
}

static inline size_t off_add(const mmk_ring *r, size_t off, size_t n)
{
    off += n;
    return off >= r->cap ? off - r->cap : off;
}

/* ----------------------------------------------------------- liveness
 *
 * How a waiter learns that the process on the other side died (kill -9,
 * a crash: no destroy, no close_write).
 *
 * Locks. A process that claims a side takes an OFD read lock on one byte of
 * the shared object, far beyond its data (LIVE_BASE + e), through an open
 * file description of its own (the handle's live_fd, from reopening
 * /proc/self/fd/N: descriptors inherited or passed over a socket share the
 * sender's description, and with it its locks). e comes from a counter in
 * the header, so every claim gets a byte nobody else uses, and is published
 * in prod_live / cons_live after the lock is taken. The kernel drops the
 * lock when the last descriptor of that description closes, which includes
 * process death by any signal; it knows nothing of pids, so this works
 * between pid namespaces, and a peer cannot point it at another process. A
 * waiter asks with F_OFD_GETLK through the ring's shared descriptor (r->fd,
 * on which nobody locks), once per sleep slice: lock gone = peer dead.
 * Because each claim has its own byte, a stale lock of a process that handed
 * its side on (to a forked child) or kept a handle after stopping does not
 * matter: only the byte the last claimer published is asked about.
 *
 * Fall-back: the pid. When a side could not take a lock (no /proc, no read
 * permission on the object, no OFD locks), it publishes e = 0 and a waiter
 * checks the pid stored next to it (a pidfd, else kill(pid, 0)), but only if
 * the pid belongs to the waiter's own pid namespace: a pid from another
 * namespace names an unrelated process here, so across namespaces a dead
 * peer without a lock is not detected (the wait ends at its timeout).
 *
 * Neither is proof against a hostile peer: it can take or drop locks on any
 * byte and publish any e or pid, so it can always look alive or dead. What
 * holds is that an honest peer's death is seen, and that what a hostile one
 * writes only makes us ask the kernel about a lock byte or a pid. */
#define LIVE_BASE ((uint64_t)1 << 62) /* lock bytes: beyond any object, below OFF_T_MAX */
#define LIVE_TRIES 8 /* bytes tried when another description write-locked ours */

/* This handle's own open file description, opened on first need; -errno.
 * It is never mapped: a mapping holds a reference to its description and
 * would keep the lock after the descriptor is closed. */
static int live_desc(mmk_ring *r)
{
    int fd = atomic_load_explicit(&r->live_fd, memory_order_acquire);
    if (fd >= 0)
        return fd;
    /* Under reg_lock, so a fork never copies a descriptor the child's
     * handler does not know about. */
    pthread_mutex_lock(&reg_lock);
    fd = atomic_load_explicit(&r->live_fd, memory_order_relaxed);
    if (fd < 0) {
        fd = mmk__os_reopen_private(r->fd);
        if (fd >= 0)
            atomic_store_explicit(&r->live_fd, fd, memory_order_release);
    }
    pthread_mutex_unlock(&reg_lock);
    return fd;
}

/* Take a liveness lock for a side: its byte number e (> 0), or 0 when no
 * lock could be had (the pid fall-back). */
static uint32_t live_take(mmk_ring *r)
{
    int fd = live_desc(r);
    if (fd < 0)
        return 0;
    for (int i = 0; i < LIVE_TRIES; i++) {
        uint32_t e = atomic_fetch_add_explicit(&r->hdr->live_next, 1, memory_order_relaxed) + 1;
        if (!e)
            continue;
        int rc = mmk__os_ofd_rdlock(fd, LIVE_BASE + e);
        if (rc == 0)
            return e;
        if (rc != -EAGAIN)
            return 0;
    }
    return 0;
}

/* Announce this process on a side: lock first, then publish the byte, so a
 * waiter never asks about a byte whose lock is not taken yet. */
static void announce(mmk_ring *r, _Atomic uint32_t *live, _Atomic int32_t *pid,
                     _Atomic uint32_t *pidns)
{
    uint32_t e = live_take(r);
    atomic_store_explicit(pidns, mmk__os_pidns_id(), memory_order_relaxed);
    atomic_store_explicit(pid, mmk__os_getpid(), memory_order_relaxed);
    atomic_store_explicit(live, e, memory_order_release);
}

/* First use of a side in this process: announce ourselves (above); a
 * trusting handle also picks the position up from shared memory, so a side
 * can move to a forked child or another handle. An untrusting one keeps its
 * private position (set at create/attach): there a side stays with one
 * handle. */
static void claim_producer(mmk_ring *r)
{
    struct ring_hdr *h = r->hdr;
    if (!(r->flags & MMK_RING_UNTRUSTED)) {
        r->head = r->pub_head = atomic_load_explicit(&h->head, memory_order_relaxed);
        r->woff = (size_t)(r->head % r->cap);
        r->tail_cache = atomic_load_explicit(&h->tail, memory_order_acquire);
    }
    announce(r, &h->prod_live, &h->prod_pid, &h->prod_pidns);
    atomic_store_explicit(&h->prod_gone, 0, memory_order_relaxed);
    r->pgen = gen_now();
}

static void claim_consumer(mmk_ring *r)
{
    struct ring_hdr *h = r->hdr;
    if (!(r->flags & MMK_RING_UNTRUSTED)) {
        r->tail = r->pub_tail = atomic_load_explicit(&h->tail, memory_order_relaxed);
        r->roff = (size_t)(r->tail % r->cap);
        r->head_cache = atomic_load_explicit(&h->head, memory_order_acquire);
        r->peek_space = r->peek_n = 0;
    }
    announce(r, &h->cons_live, &h->cons_pid, &h->cons_pidns);
    atomic_store_explicit(&h->cons_gone, 0, memory_order_relaxed);
    r->cgen = gen_now();
}

/* Common entry checks; returns 0 or the sticky error. */
static inline int enter_producer(mmk_ring *r)
{
    if (mmk__unlikely(r->pgen != gen_now()))
        claim_producer(r);
    return atomic_load_explicit(&r->broken, memory_order_relaxed);
}

static inline int enter_consumer(mmk_ring *r)
{
    if (mmk__unlikely(r->cgen != gen_now()))
        claim_consumer(r);
    return atomic_load_explicit(&r->broken, memory_order_relaxed);
}

/* ---------------------------------------------------------------- wakeup */

static void wake(mmk_ring *r, _Atomic uint32_t *seq, _Atomic uint32_t *waiting, int slot)
{
    /* Clear the flag first so a burst of commits makes one system call. */
    if (!atomic_exchange_explicit(waiting, 0, memory_order_seq_cst))
        return;
    atomic_fetch_add_explicit(seq, 1, memory_order_seq_cst);
    mmk__os_futex_wake((uint32_t *)seq);
    int e = atomic_load_explicit(&r->efd[slot], memory_order_relaxed);
    if (e >= 0)
        mmk__os_event_signal(e);
}

/* Wake-ups without a fence on the hot path.
 *
 * The need-wakeup handshake is a store-buffering pattern. The waker (the side
 * that commits) stores its position, then loads the sleeper's flag; the
 * sleeper stores its flag, then loads the position. If each side's load could
 * pass its own store, both could miss the other: the sleeper sleeps on a
 * position that has moved and nobody wakes it. Ordering a store before a
 * later load needs a full (StoreLoad) barrier, an xchg or mfence on x86,
 * and paying it on every commit is what kept this ring at half of ck_ring.
 *
 * So the barrier is made asymmetric: the sleeper, which is about to make a
 * system call anyway, pays for both sides. Every process that uses a ring
 * registers once for membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED); the sleeper
 * does
 *     store flag = 1;  membarrier();  load position (seq_cst)
 * and the waker, in a registered process, does
 *     store position (release);  compiler barrier;  load flag (relaxed).
 * Proof that no wake-up is lost. membarrier() returns only after every CPU
 * running a thread of a registered process has executed a full barrier, at
 * some point B of that thread's program order (a thread that was not running
 * passes a context switch, itself a full barrier). Take the waker's point B.
 * If the waker's position store comes before B, it is visible to every CPU
 * once membarrier() returns, so the sleeper's later load sees it and the
 * sleeper does not sleep. If it comes after B, the waker's flag load comes
 * after B too (program order, kept by the compiler barrier), and B is
 * ordered after the sleeper's flag store (membarrier begins with a full
 * barrier on the caller): the waker sees the flag and wakes. Either way
 * somebody sees the other. This is the argument of liburcu and of the
 * kernel's own membarrier documentation.
 *
 * The waker skips the fence only when its own process is registered (the
 * sleeper's barrier reaches it) and no sleeper has set need_fence. A
 * sleeper whose membarrier() fails (no such system call, or a seccomp
 * filter) sets need_fence, so wakers fence from then on, and itself sleeps
 * in short slices (SHORT_SLICE_NS) and re-checks, so a wake-up missed in
 * the instant before a waker sees need_fence costs at most one slice.
 * (poll_prepare has no slices: there the caller's poll timeout is the bound,
 * as ring.h says.) Without registration (another OS) every waker fences. */
#define SHORT_SLICE_NS 1000000ll

static inline int waker_must_fence(const mmk_ring *r)
{
    return !r->asym || atomic_load_explicit(&r->hdr->need_fence, memory_order_relaxed);
}

/* Publish the producer's position and wake a sleeping consumer. */
static inline void publish_head(mmk_ring *r)
{
    struct ring_hdr *h = r->hdr;
    uint32_t w;
    r->pub_head = r->head;
    if (mmk__unlikely(waker_must_fence(r))) {
        atomic_store_explicit(&h->head, r->head, memory_order_seq_cst);
        w = atomic_load_explicit(&h->rd_waiting, memory_order_seq_cst);
    } else {
        atomic_store_explicit(&h->head, r->head, memory_order_release);
        atomic_signal_fence(memory_order_seq_cst);
        w = atomic_load_explicit(&h->rd_waiting, memory_order_relaxed);
    }
    if (w)
        wake(r, &h->rd_seq, &h->rd_waiting, RD);
}

static inline void publish_tail(mmk_ring *r)
{
    struct ring_hdr *h = r->hdr;
    uint32_t w;
    r->pub_tail = r->tail;
    if (mmk__unlikely(waker_must_fence(r))) {
        atomic_store_explicit(&h->tail, r->tail, memory_order_seq_cst);
        w = atomic_load_explicit(&h->wr_waiting, memory_order_seq_cst);
    } else {
        atomic_store_explicit(&h->tail, r->tail, memory_order_release);
        atomic_signal_fence(memory_order_seq_cst);
        w = atomic_load_explicit(&h->wr_waiting, memory_order_relaxed);
    }
    if (w)
        wake(r, &h->wr_seq, &h->wr_waiting, WR);
}

static RING_NOINLINE void publish_head_any(mmk_ring *r) { publish_head(r); }
static RING_NOINLINE void publish_tail_any(mmk_ring *r) { publish_tail(r); }

/* After a commit or release. The usual cases inline: publish at once
 * without a fence (publish_head without its tests), or hold back under
 * MMK_RING_BATCH; publishing with a fence, or a batch's publication, out of
 * line. MMK_RING_BATCH publishes lazily: once `batch` bytes are pending, or
 * at once when the peer sleeps (a relaxed peek at its flag; a stale 0 only
 * delays publication to the next of the points listed in ring.h: pending
 * bytes are also published whenever this side finds the ring full/empty,
 * waits, flushes, closes or is destroyed). */
static inline void commit_head(mmk_ring *r)
{
    struct ring_hdr *h = r->hdr;
    if (mmk__likely(r->pplain && !atomic_load_explicit(&h->need_fence, memory_order_relaxed))) {
        uint64_t hd = r->head;
        r->pub_head = hd;
        atomic_store_explicit(&h->head, hd, memory_order_release);
        atomic_signal_fence(memory_order_seq_cst);
        if (mmk__unlikely(atomic_load_explicit(&h->rd_waiting, memory_order_relaxed)))
            wake(r, &h->rd_seq, &h->rd_waiting, RD);
        return;
    }
    if ((r->flags & MMK_RING_BATCH) && r->head - r->pub_head < r->batch &&
        !atomic_load_explicit(&h->rd_waiting, memory_order_relaxed))
        return;
    publish_head_any(r);
}

static inline void commit_tail(mmk_ring *r)
{
    struct ring_hdr *h = r->hdr;
    if (mmk__likely(r->cplain && !atomic_load_explicit(&h->need_fence, memory_order_relaxed))) {
        uint64_t tl = r->tail;
        r->pub_tail = tl;
        atomic_store_explicit(&h->tail, tl, memory_order_release);
        atomic_signal_fence(memory_order_seq_cst);
        if (mmk__unlikely(atomic_load_explicit(&h->wr_waiting, memory_order_relaxed)))
            wake(r, &h->wr_seq, &h->wr_waiting, WR);
        return;
    }
    if ((r->flags & MMK_RING_BATCH) && r->tail - r->pub_tail < r->batch &&
        !atomic_load_explicit(&h->wr_waiting, memory_order_relaxed))
        return;
    publish_tail_any(r);
}

/* The sleeper's half: called after raising a need-wakeup flag and before
 * re-checking the position. Returns the longest safe sleep. */
static int64_t sleeper_fence(mmk_ring *r)
{
    if (mmk__os_membarrier() == 0)
        return SLICE_NS;
    if (!atomic_load_explicit(&r->hdr->need_fence, memory_order_relaxed))
        atomic_store_explicit(&r->hdr->need_fence, 1, memory_order_seq_cst);
    return SHORT_SLICE_NS;
}

/* ------------------------------------------------------------- positions */

/* Free bytes for the producer, reloading the consumer's position when the
 * cached one shows fewer than `need`. < 0 on corruption. */
static inline ssize_t prod_free(mmk_ring *r, size_t need)
{
    size_t fr = r->cap - (size_t)(r->head - r->tail_cache);
    if (fr >= need)
        return (ssize_t)fr;
    if (r->pub_head != r->head)
        publish_head(r); /* the consumer may be waiting for what we hold back */
    uint64_t t = atomic_load_explicit(&r->hdr->tail, memory_order_acquire);
    if (mmk__unlikely(r->head - t > r->cap))
        return corrupt(r);
    r->tail_cache = t;
    return (ssize_t)(r->cap - (size_t)(r->head - t));
}

static inline ssize_t cons_avail(mmk_ring *r, size_t need)
{
    size_t av = (size_t)(r->head_cache - r->tail);
    if (av >= need)
        return (ssize_t)av;
    if (r->pub_tail != r->tail)
        publish_tail(r);
    uint64_t hd = atomic_load_explicit(&r->hdr->head, memory_order_acquire);
    /* Never past our position by more than the ring, and never back: a
     * record we peeked (and will release) lies below the cached value. */
    if (mmk__unlikely(hd - r->tail > r->cap || (int64_t)(hd - r->head_cache) < 0))
        return corrupt(r);
    r->head_cache = hd;
    return (ssize_t)(hd - r->tail);
}

static inline int write_closed(const mmk_ring *r)
{
    return atomic_load_explicit(&r->hdr->closed, memory_order_acquire) ||
           atomic_load_explicit(&r->hdr->cons_gone, memory_order_acquire);
}

static inline int read_closed(const mmk_ring *r)
{
    return atomic_load_explicit(&r->hdr->closed, memory_order_acquire) ||
           atomic_load_explicit(&r->hdr->prod_gone, memory_order_acquire);
}

/* --------------------------------------------------------------- mapping */

static void unmap(mmk_ring *r)
{
    if (r->base)
        mmk_release(r->base, r->maplen);
    r->base = NULL;
}

/* Reserve 2*cap + hsize, then put the object at base+cap and its data part
 * again at base: both MAP_FIXED inside our own reservation. */
static int map_ring(mmk_ring *r, size_t cap, size_t hsize, size_t align)
{
    void *base;
    size_t len = 2 * cap + hsize;
    int rc = align ? mmk_reserve_aligned(len, align, &base) : mmk_reserve(len, &base);
    if (rc)
        return rc;
    void *m;
    const unsigned rw = MMK_PROT_READ | MMK_PROT_WRITE;
    rc = mmk__os_map_fd((char *)base + cap, cap + hsize, rw, 1, r->fd, 0, &m);
    if (!rc)
        rc = mmk__os_map_fd(base, cap, rw, 1, r->fd, 0, &m);
    if (rc) {
        mmk_release(base, len);
        return rc;
    }
    r->base = base;
    r->maplen = len;
    r->data = base;
    r->cap = cap;
    r->batch = cap / 16;
    r->hdr = (struct ring_hdr *)((char *)base + 2 * cap);
    return 0;
}

static mmk_ring *ring_alloc(void)
{
    size_t sz = mmk__align_up(sizeof(struct mmk_ring), LINE);
    mmk_ring *r = aligned_alloc(LINE, sz);
    if (!r)
        return NULL;
    memset(r, 0, sz);
    r->fd = -1;
    atomic_init(&r->broken, 0);
    for (int i = 0; i < 2; i++) {
        atomic_init(&r->efd[i], -1);
        r->peer_pid[i] = 0;
        r->peer_h[i] = -1;
    }
    atomic_init(&r->live_fd, -1);
    pthread_once(&fork_once, fork_setup);
    r->asym = asym_ok;
    reg_add(r);
    return r;
}

static void ring_free(mmk_ring *r)
{
    reg_remove(r);
    unmap(r);
    mmk__os_close(r->fd);
    mmk__os_close(atomic_load(&r->live_fd)); /* drops our liveness locks */
    for (int i = 0; i < 2; i++) {
        mmk__os_close(atomic_load(&r->efd[i]));
        mmk__os_pid_close(r->peer_h[i]);
    }
    free(r);
}

/* Try hugetlb for a huge ring: 2 MiB header, capacity a multiple of 2 MiB.
 * Any failure (no pool: mmap says ENOMEM) falls back to the caller. */
static int create_hugetlb(mmk_ring *r, size_t cap, size_t hp)
{
    int fd;
    int rc = mmk_shm_create("mmkit-ring", cap + hp, MMK_SHM_MEMFD | MMK_SHM_HUGETLB, &fd);
    if (rc < 0)
        return rc;
    r->fd = fd;
    rc = mmk_shm_seal_size(fd);
    if (rc && rc != -ENOTSUP)
        goto fail;
    if (rc && (r->flags & MMK_RING_UNTRUSTED))
        goto fail;
    rc = map_ring(r, cap, hp, hp);
    if (rc)
        goto fail;
    return (int)hp;
fail:
    mmk__os_close(fd);
    r->fd = -1;
    return rc;
}

MMK_API int mmk_ring_create(size_t min_capacity, unsigned flags, mmk_ring **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!min_capacity || (flags & ~(MMK_RING_UNTRUSTED | MMK_RING_HUGE | MMK_RING_BATCH)))
        return -EINVAL;
    size_t page = mmk__pagesz(), unit = page, hp = 0;
    if (flags & MMK_RING_HUGE) {
        struct mmk_hugepage_info hi;
        hp = mmk_hugepage_info(&hi) == 0 && mmk__is_pow2(hi.size) ? hi.size : (size_t)2 << 20;
        unit = hp;
    }
    size_t cap = mmk__align_up(min_capacity, unit);
    if (!cap || cap > (SIZE_MAX / 4))
        return -ENOMEM;
    mmk_ring *r = ring_alloc();
    if (!r)
        return -ENOMEM;
    r->flags = flags & (MMK_RING_UNTRUSTED | MMK_RING_BATCH);
    r->pplain = r->cplain = r->asym && !(flags & MMK_RING_BATCH);
    size_t hsize = page;
    int rc = -1;
    if (hp && create_hugetlb(r, cap, hp) > 0) {
        hsize = hp;
        r->flags |= MMK_RING_HUGE;
    } else {
        int fd;
        rc = mmk_shm_create("mmkit-ring", cap + hsize, 0, &fd);
        if (rc < 0)
            goto fail;
        r->fd = fd;
        /* Sealed against resizing, a peer cannot truncate the object under
         * our mapping (SIGBUS). Without seals (POSIX shm, tmpfile) only a
         * trusted peer is acceptable. */
        rc = mmk_shm_seal_size(fd);
        if (rc == -ENOTSUP && !(flags & MMK_RING_UNTRUSTED))
            rc = 0;
        if (rc)
            goto fail;
        rc = map_ring(r, cap, hsize, hp);
        if (rc)
            goto fail;
        if (hp && mmk_advise(r->base, 2 * cap, MMK_ADV_HUGEPAGE) == 0)
            r->flags |= MMK_RING_HUGE_THP;
    }
    struct ring_hdr *h = r->hdr;
    h->version = RING_VERSION;
    h->endian = RING_ENDIAN;
    h->capacity = cap;
    h->hdr_size = (uint32_t)hsize;
    h->page_size = (uint32_t)page;
    h->flags = r->flags & MMK_RING_HUGE;
    atomic_store_explicit((_Atomic uint64_t *)&h->magic, RING_MAGIC, memory_order_release);
    *out = r;
    return 0;
fail:
    ring_free(r);
    return rc;
}

/* Validate a header copy against what fstat says. */
static int check_header(const struct ring_hdr *h, uint64_t size, size_t hsize, size_t page)
{
    if (h->magic != RING_MAGIC || h->endian != RING_ENDIAN || h->version != RING_VERSION)
        return MMK_EFORMAT;
    if (h->page_size != page || h->hdr_size != hsize || h->capacity + hsize != size ||
        !h->capacity || h->capacity % page)
        return MMK_EFORMAT;
    return 0;
}

MMK_API int mmk_ring_attach(int fd, unsigned flags, mmk_ring **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (fd < 0)
        return -EBADF;
    if (flags & ~(MMK_RING_UNTRUSTED | MMK_RING_BATCH))
        return -EINVAL;
    uint64_t size;
    size_t blk, page = mmk__pagesz();
    int rc = mmk__os_fd_size(fd, &size, &blk);
    if (rc)
        return rc;
    /* The header is one block at the end: a page, or a huge page on
     * hugetlbfs (whose block size is the huge page size). */
    size_t hsize = mmk__is_pow2(blk) && blk > page && blk <= ((size_t)1 << 30) ? blk : page;
    if (size < (uint64_t)hsize + page || size > SIZE_MAX / 4 || (size - hsize) % page)
        return MMK_EFORMAT;
    if (flags & MMK_RING_UNTRUSTED) {
        int s = mmk_shm_seals(fd);
        if (s < 0 || !(s & MMK_SEAL_SHRINK))
            return -ENOTSUP;
    }
    /* Look at the header alone before mapping the whole. */
    void *hm;
    rc = mmk__os_map_fd(NULL, hsize, MMK_PROT_READ, 1, fd, size - hsize, &hm);
    if (rc)
        return rc == -EINVAL || rc == -ENODEV || rc == -EACCES ? MMK_EFORMAT : rc;
    struct ring_hdr copy;
    memcpy(&copy, hm, offsetof(struct ring_hdr, head));
    mmk__os_release(hm, hsize);
    rc = check_header(&copy, size, hsize, page);
    if (rc)
        return rc;

    mmk_ring *r = ring_alloc();
    if (!r)
        return -ENOMEM;
    r->flags = flags;
    r->pplain = r->cplain = r->asym && !(flags & MMK_RING_BATCH);
    r->fd = mmk__os_dup(fd);
    if (r->fd < 0) {
        rc = r->fd;
        goto fail;
    }
    size_t cap = (size_t)(size - hsize);
    rc = map_ring(r, cap, hsize, hsize > page ? hsize : 0);
    if (rc)
        goto fail;
    if (copy.flags & MMK_RING_HUGE)
        r->flags |= MMK_RING_HUGE;
    struct ring_hdr *h = r->hdr;
    uint64_t hd = atomic_load_explicit(&h->head, memory_order_acquire);
    uint64_t tl = atomic_load_explicit(&h->tail, memory_order_acquire);
    if (hd - tl > cap) {
        rc = MMK_ECORRUPT;
        goto fail;
    }
    r->head = r->head_cache = r->pub_head = hd;
    r->tail = r->tail_cache = r->pub_tail = tl;
    r->woff = (size_t)(hd % cap);
    r->roff = (size_t)(tl % cap);
    *out = r;
    return 0;
fail:
    ring_free(r);
    return rc;
}

MMK_API int mmk_ring_fd(const mmk_ring *r) { return r ? r->fd : -EINVAL; }

MMK_API size_t mmk_ring_capacity(const mmk_ring *r) { return r ? r->cap : 0; }

MMK_API unsigned mmk_ring_flags(const mmk_ring *r) { return r ? r->flags : 0; }

MMK_API void mmk_ring_destroy(mmk_ring *r)
{
    if (!r)
        return;
    struct ring_hdr *h = r->hdr;
    unsigned g = gen_now();
    /* Tell a peer waiting on a side we used that nobody is coming. */
    if (r->pgen == g && r->pub_head != r->head && !r->broken)
        publish_head(r);
    if (r->cgen == g && r->pub_tail != r->tail && !r->broken)
        publish_tail(r);
    if (r->pgen == g) {
        atomic_store_explicit(&h->prod_gone, 1, memory_order_seq_cst);
        atomic_store_explicit(&h->rd_waiting, 1, memory_order_relaxed);
        wake(r, &h->rd_seq, &h->rd_waiting, RD);
    }
    if (r->cgen == g) {
        atomic_store_explicit(&h->cons_gone, 1, memory_order_seq_cst);
        atomic_store_explicit(&h->wr_waiting, 1, memory_order_relaxed);
        wake(r, &h->wr_seq, &h->wr_waiting, WR);
    }
    ring_free(r);
}

/* ------------------------------------------------------------ byte spans */

MMK_API ssize_t mmk_ring_write_begin(mmk_ring *r, void **span)
{
    if (mmk__unlikely(!r || !span))
        return -EINVAL;
    int rc = enter_producer(r);
    if (mmk__unlikely(rc))
        return rc;
    if (mmk__unlikely(write_closed(r)))
        return -EPIPE;
    ssize_t fr = prod_free(r, 1);
    *span = r->data + r->woff;
    return fr;
}

MMK_API int mmk_ring_write_commit(mmk_ring *r, size_t n)
{
    if (mmk__unlikely(!r))
        return -EINVAL;
    int rc = enter_producer(r);
    if (mmk__unlikely(rc))
        return rc;
    if (mmk__unlikely(n > r->cap - (size_t)(r->head - r->tail_cache)))
        return -EINVAL;
    if (!n)
        return 0;
    r->head += n;
    r->woff = off_add(r, r->woff, n);
    commit_head(r);
    return 0;
}

MMK_API ssize_t mmk_ring_read_begin(mmk_ring *r, const void **span)
{
    if (mmk__unlikely(!r || !span))
        return -EINVAL;
    int rc = enter_consumer(r);
    if (mmk__unlikely(rc))
        return rc;
    ssize_t av = cons_avail(r, 1);
    *span = r->data + r->roff;
    return av;
}

MMK_API int mmk_ring_read_commit(mmk_ring *r, size_t n)
{
    if (mmk__unlikely(!r))
        return -EINVAL;
    int rc = enter_consumer(r);
    if (mmk__unlikely(rc))
        return rc;
    if (mmk__unlikely(n > (size_t)(r->head_cache - r->tail) || r->peek_space))
        return -EINVAL;
    if (!n)
        return 0;
    r->tail += n;
    r->roff = off_add(r, r->roff, n);
    commit_tail(r);
    return 0;
}

MMK_API int mmk_ring_write_flush(mmk_ring *r)
{
    if (!r)
        return -EINVAL;
    int rc = enter_producer(r);
    if (rc)
        return rc;
    if (r->pub_head != r->head)
        publish_head(r);
    return 0;
}

MMK_API int mmk_ring_read_flush(mmk_ring *r)
{
    if (!r)
        return -EINVAL;
    int rc = enter_consumer(r);
    if (rc)
        return rc;
    if (r->pub_tail != r->tail)
        publish_tail(r);
    return 0;
}

/* --------------------------------------------------------------- waiting */

static int64_t remaining_ns(uint64_t deadline)
{
    uint64_t now = mmk__os_now_ns();
    return now >= deadline ? 0 : (int64_t)(deadline - now);
}

/* Has the process on the other side of `slot` died? RD: the producer. See
 * "liveness" above: the lock if the side took one, else the pid, if it is
 * one of our namespace. A side nobody claimed yet is not dead. */
static int peer_dead(mmk_ring *r, int slot)
{
    struct ring_hdr *h = r->hdr;
    uint32_t e = atomic_load_explicit(slot == RD ? &h->prod_live : &h->cons_live,
                                      memory_order_acquire);
    if (e) {
        int held = mmk__os_ofd_held(r->fd, LIVE_BASE + e);
        if (held >= 0)
            return !held;
    }
    int pid = atomic_load_explicit(slot == RD ? &h->prod_pid : &h->cons_pid,
                                   memory_order_relaxed);
    if (pid <= 0)
        return 0;
    if (atomic_load_explicit(slot == RD ? &h->prod_pidns : &h->cons_pidns,
                             memory_order_relaxed) != mmk__os_pidns_id())
        return 0; /* another namespace's pid: it would name an unrelated process */
    if (pid == mmk__os_getpid())
        return 0;
    if (pid != r->peer_pid[slot]) {
        mmk__os_pid_close(r->peer_h[slot]);
        r->peer_h[slot] = mmk__os_pid_open(pid);
        r->peer_pid[slot] = pid;
        if (r->peer_h[slot] == -ESRCH) {
            r->peer_h[slot] = -1;
            return 1;
        }
    }
    return mmk__os_pid_exited(r->peer_h[slot], pid);
}

/* After a sleeper raised its need-wakeup flag (a seq_cst store), it must look
 * at the peer's position with a seq_cst load, not an acquire one: only then
 * does either it see the new position or the peer see the flag (a plain
 * MOV on x86, but it matters on weaker CPUs). The value goes into the cache
 * if it is plausible; ready() judges it. */
static void sc_refresh(mmk_ring *r, int slot)
{
    if (slot == RD) {
        uint64_t hd = atomic_load_explicit(&r->hdr->head, memory_order_seq_cst);
        if (hd - r->tail <= r->cap && (int64_t)(hd - r->head_cache) >= 0)
            r->head_cache = hd;
    } else {
        uint64_t t = atomic_load_explicit(&r->hdr->tail, memory_order_seq_cst);
        if (r->head - t <= r->cap)
            r->tail_cache = t;
    }
}

/* ready(r, min) > 0 when the condition holds, 0 when not, < 0 on error. */
typedef int (*ready_fn)(mmk_ring *r, size_t min);

static int ready_read(mmk_ring *r, size_t min)
{
    ssize_t av = cons_avail(r, min);
    if (av < 0)
        return (int)av;
    if ((size_t)av >= min)
        return 1;
    if (read_closed(r)) {
        /* closed is stored after the last head: look once more */
        av = cons_avail(r, min);
        return av < 0 ? (int)av : (size_t)av >= min ? 1 : -EPIPE;
    }
    return 0;
}

static int ready_write(mmk_ring *r, size_t min)
{
    if (write_closed(r))
        return -EPIPE;
    ssize_t fr = prod_free(r, min);
    if (fr < 0)
        return (int)fr;
    return (size_t)fr >= min;
}

static int wait_for(mmk_ring *r, size_t min, int timeout_ms, int slot)
{
    struct ring_hdr *h = r->hdr;
    _Atomic uint32_t *seq = slot == RD ? &h->rd_seq : &h->wr_seq;
    _Atomic uint32_t *waiting = slot == RD ? &h->rd_waiting : &h->wr_waiting;
    ready_fn ready = slot == RD ? ready_read : ready_write;
    if (timeout_ms != 0) {
        /* Spin a moment first: when the peer is busy the condition often
         * comes true within a microsecond or two, and a sleep would cost a
         * system call on both sides. */
        for (int i = 0; i < SPINS; i++) {
            int rc = ready(r, min);
            if (rc)
                return rc > 0 ? 0 : rc;
            mmk__cpu_relax();
        }
    }
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX
                                       : mmk__os_now_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        int rc = ready(r, min);
        if (rc)
            return rc > 0 ? 0 : rc;
        int64_t left = timeout_ms < 0 ? SLICE_NS : remaining_ns(deadline);
        if (!left)
            return -ETIMEDOUT;
        uint32_t s = atomic_load_explicit(seq, memory_order_seq_cst);
        atomic_store_explicit(waiting, 1, memory_order_seq_cst);
        int64_t slice = sleeper_fence(r);
        sc_refresh(r, slot);
        rc = ready(r, min);
        if (rc) {
            atomic_store_explicit(waiting, 0, memory_order_relaxed);
            return rc > 0 ? 0 : rc;
        }
        rc = mmk__os_futex_wait((uint32_t *)seq, s, left < slice ? left : slice);
        if (rc == -ETIMEDOUT && peer_dead(r, slot)) {
            rc = ready(r, min);
            return rc > 0 ? 0 : rc < 0 ? rc : -ECONNRESET;
        }
        if (atomic_load_explicit(&r->broken, memory_order_relaxed))
            return MMK_ECORRUPT;
    }
}

MMK_API int mmk_ring_wait_readable(mmk_ring *r, size_t min_bytes, int timeout_ms)
{
    if (!r)
        return -EINVAL;
    int rc = enter_consumer(r);
    if (rc)
        return rc;
    if (!min_bytes)
        min_bytes = 1;
    if (min_bytes > r->cap)
        return -EINVAL;
    return wait_for(r, min_bytes, timeout_ms, RD);
}

MMK_API int mmk_ring_wait_writable(mmk_ring *r, size_t min_bytes, int timeout_ms)
{
    if (!r)
        return -EINVAL;
    int rc = enter_producer(r);
    if (rc)
        return rc;
    if (!min_bytes)
        min_bytes = 1;
    if (min_bytes > r->cap)
        return -EINVAL;
    return wait_for(r, min_bytes, timeout_ms, WR);
}

MMK_API int mmk_ring_close_write(mmk_ring *r)
{
    if (!r)
        return -EINVAL;
    struct ring_hdr *h = r->hdr;
    if (r->pgen == gen_now() && r->pub_head != r->head)
        publish_head(r); /* closed must follow the last head */
    atomic_store_explicit(&h->closed, 1, memory_order_seq_cst);
    atomic_store_explicit(&h->rd_waiting, 1, memory_order_seq_cst);
    wake(r, &h->rd_seq, &h->rd_waiting, RD);
    return 0;
}

/* --------------------------------------------------------- copy helpers */

static int ms_left(int timeout_ms, uint64_t deadline)
{
    if (timeout_ms < 0)
        return -1;
    int64_t ns = remaining_ns(deadline);
    return (int)((ns + 999999) / 1000000);
}

MMK_API ssize_t mmk_ring_write(mmk_ring *r, const void *buf, size_t n, int timeout_ms)
{
    if (!r || (!buf && n))
        return -EINVAL;
    uint64_t deadline = mmk__os_now_ns() + (timeout_ms > 0 ? (uint64_t)timeout_ms * 1000000u : 0);
    size_t done = 0;
    while (done < n) {
        int rc = enter_producer(r);
        if (rc)
            return done ? (ssize_t)done : rc;
        if (write_closed(r))
            return done ? (ssize_t)done : -EPIPE;
        ssize_t fr = prod_free(r, n - done < r->cap ? n - done : r->cap);
        if (fr < 0)
            return done ? (ssize_t)done : fr;
        if (fr == 0) {
            size_t want = n - done < r->cap / 4 ? n - done : r->cap / 4;
            rc = mmk_ring_wait_writable(r, want ? want : 1, ms_left(timeout_ms, deadline));
            if (rc)
                return done ? (ssize_t)done : rc;
            continue;
        }
        size_t k = (size_t)fr < n - done ? (size_t)fr : n - done;
        mmk__copy(r->data + r->woff, (const char *)buf + done, k);
        r->head += k;
        r->woff = off_add(r, r->woff, k);
        commit_head(r);
        done += k;
    }
    return (ssize_t)done;
}

MMK_API ssize_t mmk_ring_read(mmk_ring *r, void *buf, size_t n, int timeout_ms)
{
    if (!r || (!buf && n))
        return -EINVAL;
    if (!n)
        return 0;
    int rc = mmk_ring_wait_readable(r, 1, timeout_ms);
    if (rc)
        return rc;
    ssize_t av = cons_avail(r, n);
    if (av < 0)
        return av;
    size_t k = (size_t)av < n ? (size_t)av : n;
    mmk__copy(buf, r->data + r->roff, k);
    r->tail += k;
    r->roff = off_add(r, r->roff, k);
    commit_tail(r);
    return (ssize_t)k;
}

/* ---------------------------------------------------------------- events */

MMK_API int mmk_ring_eventfd(mmk_ring *r, unsigned which)
{
    if (!r || (which != MMK_RING_READABLE && which != MMK_RING_WRITABLE))
        return -EINVAL;
    int slot = which == MMK_RING_READABLE ? RD : WR;
    int e = atomic_load(&r->efd[slot]);
    if (e >= 0)
        return e;
    e = mmk__os_event_create();
    if (e < 0)
        return e;
    int expect = -1;
    if (!atomic_compare_exchange_strong(&r->efd[slot], &expect, e)) {
        mmk__os_close(e);
        return expect;
    }
    return e;
}

MMK_API int mmk_ring_set_eventfd(mmk_ring *r, unsigned which, int efd)
{
    if (!r || efd < 0 || (which != MMK_RING_READABLE && which != MMK_RING_WRITABLE))
        return -EINVAL;
    int d = mmk__os_dup(efd);
    if (d < 0)
        return d;
    int old = atomic_exchange(&r->efd[which == MMK_RING_READABLE ? RD : WR], d);
    mmk__os_close(old);
    return 0;
}

MMK_API int mmk_ring_poll_prepare(mmk_ring *r, unsigned which)
{
    if (!r || (which != MMK_RING_READABLE && which != MMK_RING_WRITABLE))
        return -EINVAL;
    int rd = which == MMK_RING_READABLE;
    int rc = rd ? enter_consumer(r) : enter_producer(r);
    if (rc)
        return rc;
    ready_fn ready = rd ? ready_read : ready_write;
    rc = ready(r, 1);
    if (rc)
        return rc < 0 && rc != -EPIPE ? rc : 1;
    atomic_store_explicit(rd ? &r->hdr->rd_waiting : &r->hdr->wr_waiting, 1,
                          memory_order_seq_cst);
    sleeper_fence(r);
    sc_refresh(r, rd ? RD : WR);
    rc = ready(r, 1);
    return rc ? (rc < 0 && rc != -EPIPE ? rc : 1) : 0;
}

/* --------------------------------------------------------------- records */

/* Each public record call has a short fast path for the usual case (this
 * process owns the side, no sticky error, records aligned, the cached
 * position of the peer is enough) and hands everything else to one general
 * out-of-line function, which returns the right error or does the rare work
 * (claiming a side after fork, reloading the peer's position). Keeping the
 * rare work out of line is what lets the fast path run without saving
 * registers. */

static inline size_t rec_space(size_t len) { return REC_HDR + ((len + 7) & ~(size_t)7); }

/* Header: the length, and length ^ REC_CHECK, as one 64-bit word. */
static inline uint64_t rec_header(size_t len)
{
    return (uint64_t)len | (uint64_t)(len ^ REC_CHECK) << 32;
}

static inline int prod_fast(const mmk_ring *r)
{
    return r->pgen == gen_now() && !atomic_load_explicit(&r->broken, memory_order_relaxed);
}

static inline int cons_fast(const mmk_ring *r)
{
    return r->cgen == gen_now() && !atomic_load_explicit(&r->broken, memory_order_relaxed);
}

MMK_API size_t mmk_ring_record_space(size_t len)
{
    return len > UINT32_MAX ? SIZE_MAX : rec_space(len);
}

/* Reserve up to max records of len bytes (max >= 1), reloading the
 * consumer's position at most once. The count, or a negative code. */
static RING_NOINLINE ssize_t reserve_any(mmk_ring *r, size_t len, size_t max, void **recs)
{
    int rc = enter_producer(r);
    if (rc)
        return rc;
    if (r->rsv_n)
        return -EBUSY;
    if (r->woff & 7)
        return -EINVAL; /* byte spans were mixed in: records need 8-byte alignment */
    if (len > UINT32_MAX || rec_space(len) > r->cap)
        return -EMSGSIZE;
    if (write_closed(r))
        return -EPIPE;
    size_t sp = rec_space(len), fit = r->cap / sp;
    if (max > fit)
        max = fit;
    ssize_t fr = prod_free(r, max * sp);
    if (fr < 0)
        return fr;
    size_t n = (size_t)fr / sp;
    if (!n)
        return -EAGAIN;
    if (n > max)
        n = max;
    /* n * sp <= cap: with the mirror every record is one piece. The headers
     * are written by commit_n, after the caller filled the payloads: the
     * lines are in this core's cache then. Writing them here first costs a
     * miss on each line before any payload is written (measured: 30-40%
     * fewer records/s between two threads at 64 bytes). */
    char *p = r->data + r->woff + REC_HDR;
    for (size_t i = 0; i < n; i++, p += sp)
        recs[i] = p;
    r->rsv_n = n;
    r->rsv_len = len;
    return (ssize_t)n;
}

MMK_API int mmk_ring_rec_reserve(mmk_ring *r, size_t len, void **rec)
{
    if (mmk__unlikely(!r || !rec))
        return -EINVAL;
    size_t sp = rec_space(len);
    if (mmk__likely(prod_fast(r) && !r->rsv_n && !(r->woff & 7) && len <= UINT32_MAX &&
                    r->cap - (size_t)(r->head - r->tail_cache) >= sp && !write_closed(r))) {
        r->rsv_n = 1;
        r->rsv_len = len;
        *rec = r->data + r->woff + REC_HDR;
        return 0;
    }
    ssize_t n = reserve_any(r, len, 1, rec);
    return n < 0 ? (int)n : 0;
}

MMK_API ssize_t mmk_ring_rec_reserve_n(mmk_ring *r, size_t len, size_t max, void **recs)
{
    if (!r || !recs || !max)
        return -EINVAL;
    return reserve_any(r, len, max, recs);
}

/* Publish n records of the open reservation, each len bytes long, whose
 * headers are written. */
static inline void commit_recs(mmk_ring *r, size_t n, size_t len)
{
    size_t sp = rec_space(len);
    r->rsv_n = 0;
    r->head += n * sp;
    r->woff = off_add(r, r->woff, n * sp);
    commit_head(r);
}

MMK_API int mmk_ring_rec_commit(mmk_ring *r, size_t len)
{
    if (mmk__unlikely(!r))
        return -EINVAL;
    int rc = atomic_load_explicit(&r->broken, memory_order_relaxed);
    if (mmk__unlikely(rc))
        return rc;
    if (mmk__unlikely(r->rsv_n != 1 || len > r->rsv_len))
        return -EINVAL;
    *(uint64_t *)(void *)(r->data + r->woff) = rec_header(len); /* the final length */
    commit_recs(r, 1, len);
    return 0;
}

MMK_API int mmk_ring_rec_commit_n(mmk_ring *r, size_t n)
{
    if (!r)
        return -EINVAL;
    int rc = atomic_load_explicit(&r->broken, memory_order_relaxed);
    if (rc)
        return rc;
    if (!r->rsv_n || n > r->rsv_n)
        return -EINVAL;
    if (!n) {
        r->rsv_n = 0;
        return 0;
    }
    size_t sp = rec_space(r->rsv_len);
    uint64_t hw = rec_header(r->rsv_len);
    char *p = r->data + r->woff;
    for (size_t i = 0; i < n; i++, p += sp)
        *(uint64_t *)(void *)p = hw;
    commit_recs(r, n, r->rsv_len);
    return 0;
}

MMK_API int mmk_ring_rec_discard(mmk_ring *r)
{
    if (!r)
        return -EINVAL;
    int rc = atomic_load_explicit(&r->broken, memory_order_relaxed);
    if (rc)
        return rc;
    if (!r->rsv_n)
        return -EINVAL;
    r->rsv_n = 0;
    return 0;
}

/* Read and judge the header at ring offset off with `av` bytes published
 * from there: the record's ring bytes, or 0 when the header is impossible.
 * One volatile load: a hostile peer may rewrite the header meanwhile, and we
 * must judge and use the same value. */
static inline size_t rec_at(const mmk_ring *r, size_t off, size_t av, uint32_t *len)
{
    uint64_t w = *(volatile const uint64_t *)(const void *)(r->data + off);
    uint32_t l = (uint32_t)w, chk = (uint32_t)(w >> 32);
    size_t sp = rec_space(l);
    *len = l;
    /* The producer publishes whole records only, so a header inside what
     * was published whose record reaches beyond it is corrupt. */
    return mmk__likely(chk == (l ^ REC_CHECK) && sp <= av) ? sp : 0;
}

static RING_NOINLINE ssize_t peek_any(mmk_ring *r, const void **rec)
{
    int rc = enter_consumer(r);
    if (rc)
        return rc;
    if (r->roff & 7)
        return -EINVAL; /* byte spans were mixed in */
    ssize_t av = cons_avail(r, REC_HDR);
    if (av < 0)
        return av;
    if ((size_t)av < REC_HDR)
        return -EAGAIN;
    uint32_t len;
    size_t sp = rec_at(r, r->roff, (size_t)av, &len);
    if (!sp)
        return corrupt(r);
    r->peek_space = sp;
    r->peek_n = 1;
    *rec = r->data + r->roff + REC_HDR;
    return (ssize_t)len;
}

MMK_API ssize_t mmk_ring_rec_peek(mmk_ring *r, const void **rec)
{
    if (mmk__unlikely(!r || !rec))
        return -EINVAL;
    size_t av = (size_t)(r->head_cache - r->tail);
    if (mmk__likely(cons_fast(r) && !(r->roff & 7) && av >= REC_HDR)) {
        uint32_t len;
        size_t sp = rec_at(r, r->roff, av, &len);
        if (mmk__likely(sp)) {
            r->peek_space = sp;
            r->peek_n = 1;
            *rec = r->data + r->roff + REC_HDR;
            return (ssize_t)len;
        }
    }
    return peek_any(r, rec);
}

/* Judge and list the records from ring offset off, within `left`
 * published bytes, into out[0..max). Returns the count; *used receives
 * their ring bytes; *bad is set at an impossible header. The walk runs
 * straight through the mirror (off + left <= 2 * cap), so there is no
 * wrap-around to handle and every record comes out as one piece. */
static size_t walk_recs(const char *data, size_t off, size_t left, struct mmk_ring_rec *out,
                        size_t max, size_t *used, int *bad)
{
    const char *start = data + off, *p = start, *end = start + left;
    size_t n = 0;
    while (n < max && (size_t)(end - p) >= REC_HDR) {
        uint64_t w = *(volatile const uint64_t *)(const void *)p;
        uint32_t len = (uint32_t)w;
        size_t sp = rec_space(len);
        if (mmk__unlikely((uint32_t)(w >> 32) != (len ^ REC_CHECK) || sp > (size_t)(end - p))) {
            *bad = 1;
            break;
        }
        out[n].data = p + REC_HDR;
        out[n].len = len;
        n++;
        p += sp;
    }
    *used = (size_t)(p - start);
    return n;
}

MMK_API ssize_t mmk_ring_rec_peek_batch(mmk_ring *r, struct mmk_ring_rec *out, size_t max)
{
    if (!r || !out || !max)
        return -EINVAL;
    int rc = enter_consumer(r), bad = 0;
    if (rc)
        return rc;
    if (r->roff & 7)
        return -EINVAL;
    size_t used, more;
    size_t n = walk_recs(r->data, r->roff, (size_t)(r->head_cache - r->tail), out, max, &used, &bad);
    if (!bad && n < max) {
        /* The cache ran dry: one acquire load of the producer's position
         * for everything published since. */
        ssize_t av = cons_avail(r, used + REC_HDR);
        if (av < 0)
            return av;
        if (mmk__unlikely((size_t)av < used))
            return corrupt(r); /* the producer's position went back (found by fuzz_ring) */
        n += walk_recs(r->data, off_add(r, r->roff, used), (size_t)av - used, out + n, max - n,
                       &more, &bad);
        used += more;
    }
    if (mmk__unlikely(bad))
        return corrupt(r);
    r->peek_space = used;
    r->peek_n = n;
    return n ? (ssize_t)n : -EAGAIN;
}

/* Give back `sp` ring bytes of peeked records. */
static inline void release_bytes(mmk_ring *r, size_t sp)
{
    r->tail += sp;
    r->roff = off_add(r, r->roff, sp);
    r->peek_space = r->peek_n = 0;
    commit_tail(r);
}

MMK_API int mmk_ring_rec_release_n(mmk_ring *r, size_t n)
{
    if (!r)
        return -EINVAL;
    int rc = atomic_load_explicit(&r->broken, memory_order_relaxed);
    if (rc)
        return rc;
    if (n > r->peek_n || (!n && !r->peek_n))
        return -EINVAL;
    if (!n)
        return 0;
    size_t sp = r->peek_space;
    if (n < r->peek_n) {
        /* Part of a batch: walk the headers again. They were judged by the
         * peek; a hostile peer may have changed them since, so judge them
         * again against what the peek covered. */
        size_t off = r->roff;
        sp = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t len;
            size_t s = rec_at(r, off, r->peek_space - sp, &len);
            if (!s)
                return corrupt(r);
            sp += s;
            off = off_add(r, off, s);
        }
    }
    release_bytes(r, sp);
    return 0;
}

MMK_API int mmk_ring_rec_release(mmk_ring *r)
{
    if (mmk__unlikely(!r))
        return -EINVAL;
    if (mmk__likely(r->peek_n == 1 && !atomic_load_explicit(&r->broken, memory_order_relaxed))) {
        release_bytes(r, r->peek_space);
        return 0;
    }
    return mmk_ring_rec_release_n(r, 1);
}
