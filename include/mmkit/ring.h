/* mmkit/ring.h: the magic (double-mapped) ring buffer.
 *
 * One shared memory object holds the data area and a header page. The data
 * area is mapped twice, back to back, inside one reservation, so every span
 * of up to `capacity` bytes starting anywhere in the ring is contiguous in
 * memory: no split copies at the end, and a record never straddles.
 *
 * Roles: one producer and one consumer at a time. A handle may act as
 * either or both (two threads sharing one handle: one writes, one reads).
 * The other side may be in another process: pass mmk_ring_fd() (fork, or a
 * Unix socket with SCM_RIGHTS) and call mmk_ring_attach() there.
 *
 * fork: the mapping is shared with a forked child, which may take over one
 * side (producer or consumer) through the inherited handle or attach by fd;
 * each side must be used by one process at a time. A trusted handle re-reads
 * a side's position from the header the first time it uses it in a new
 * process; with MMK_RING_UNTRUSTED a side stays with its handle. A forked
 * child closes its copies of the handles' liveness-lock descriptors at once
 * (pthread_atfork), so a child that never touches the ring does not keep a
 * dead parent looking alive; a side it uses gets a lock of its own. A child
 * made with a raw clone(2) or vfork(2) without exec runs no fork handlers
 * and keeps the parent's locks alive while it lives.
 *
 * Peer death (a peer killed with SIGKILL, or crashed: no destroy, no
 * close_write) ends a wait with -ECONNRESET instead of a hang. How it is seen:
 *   - The first time a process uses a side (producer or consumer) through a
 *     handle, it reopens the object through /proc/self/fd (an open file
 *     description of its own: a descriptor inherited over fork or received
 *     with SCM_RIGHTS shares the sender's) and takes an OFD read lock
 *     (F_OFD_SETLK) on one byte far beyond the data, a byte no earlier claim
 *     used; the header names that byte for the side. The kernel drops the
 *     lock when that description's last descriptor closes: destroy, exit,
 *     any fatal signal.
 *   - A waiter (wait_readable / wait_writable, and the copying helpers when
 *     they wait) sleeps in slices of at most 100 ms and after each asks the
 *     kernel (F_OFD_GETLK) whether the byte of the other side is still
 *     locked. Unlocked: the peer is dead. No pids are involved, so this
 *     works between pid namespaces (containers sharing the fd over a Unix
 *     socket). Only waiters check: the data path makes no system call.
 *   - Fall-back, when a side could not take a lock (no /proc mounted, no
 *     read permission on the object under the peer's uid, no OFD locks):
 *     the pid that side stored, checked with a pidfd (else kill(pid, 0)),
 *     and only when it was stored from the waiter's own pid namespace; a
 *     pid from another namespace is ignored, so there a dead peer is not
 *     seen and the wait ends at its timeout.
 *   - A side nobody has used yet is not dead (not started). A side follows
 *     the last process that claimed it: handed to a forked child, the
 *     child's death counts, not the parent's.
 *   - A hostile peer (MMK_RING_UNTRUSTED or not) can always make itself
 *     look alive or dead: lock any byte and name it, name a byte nobody
 *     holds, or take no lock and name any pid. It cannot release a lock
 *     another description holds. The guarantee is only that an honest
 *     peer's death is seen; what a hostile peer writes there can make us ask
 *     the kernel about a lock byte or a pid, nothing else.
 * Each handle that used a side holds one more descriptor (the lock's).
 * See docs/guide-ring.md for the guarantees in full.
 *
 * Return values follow the library: >= 0 success, -errno or MMK_E* codes.
 * Codes used by the ring:
 *   -EINVAL      bad argument, or committing/consuming more than was offered
 *   -EPIPE       the stream is closed (close_write, or the other side
 *                destroyed its handle) and nothing more will come
 *   -ECONNRESET  the peer process died (kill -9) while we waited
 *   -ETIMEDOUT   a wait timed out
 *   MMK_EFORMAT  attach: not a ring, or an incompatible layout
 *   MMK_ECORRUPT MMK_RING_UNTRUSTED: the peer wrote an impossible position or
 *                record header; the handle stays broken (every later call
 *                returns MMK_ECORRUPT) */
#ifndef MMKIT_RING_H
#define MMKIT_RING_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Flags for mmk_ring_create / mmk_ring_attach. */
#define MMK_RING_UNTRUSTED 0x1u /* the peer may be hostile: validate everything it writes */
#define MMK_RING_HUGE      0x2u /* create: back with 2 MiB pages (hugetlb, else THP advice);
                                 * capacity rounds up to 2 MiB. mmk_ring_flags tells what we got */
#define MMK_RING_HUGE_THP  0x4u /* mmk_ring_flags only: hugetlb failed, THP was advised instead */
#define MMK_RING_BATCH     0x8u /* create/attach: this handle publishes commits and releases
                                 * lazily, in batches (see mmk_ring_write_flush) */

typedef struct mmk_ring mmk_ring;

/* Create a ring of at least min_capacity bytes (rounded up to the page size;
 * any page multiple works, not only powers of two). The object is a sealed
 * memfd where possible (a peer cannot truncate it), else POSIX shm or an
 * unlinked tmpfile. With MMK_RING_UNTRUSTED an object that cannot be sealed
 * is refused with -ENOTSUP. Errors: -EINVAL (0 capacity, unknown flags,
 * out NULL), -ENOMEM, -ENOTSUP (no double mapping possible), -errno. */
MMK_API int     mmk_ring_create(size_t min_capacity, unsigned flags, mmk_ring **out);

/* Map an existing ring from its descriptor (dup'ed: the caller keeps fd).
 * The header is validated: MMK_EFORMAT when fd is not a ring of this layout
 * version and page size. With MMK_RING_UNTRUSTED the object must be sealed
 * against shrinking (-ENOTSUP otherwise) and the positions found in it are
 * checked (MMK_ECORRUPT). */
MMK_API int     mmk_ring_attach(int fd, unsigned flags, mmk_ring **out);

/* The descriptor of the shared object (close-on-exec; owned by the ring). */
MMK_API int     mmk_ring_fd(const mmk_ring *r);

/* Capacity in bytes: >= min_capacity, a page multiple. */
MMK_API size_t  mmk_ring_capacity(const mmk_ring *r);

/* Effective flags: MMK_RING_UNTRUSTED as asked; MMK_RING_HUGE only when the
 * ring really sits on hugetlb pages; MMK_RING_HUGE_THP when it fell back to
 * THP advice (the kernel may or may not honour it); neither when huge pages
 * were not asked for or nothing worked. */
MMK_API unsigned mmk_ring_flags(const mmk_ring *r);

/* Unmap and free the handle (NULL is fine). The sides this handle used are
 * marked gone: a peer waiting for them gets -EPIPE (not -ECONNRESET: gone is
 * marked before the handle's liveness locks are dropped). The peer's mapping
 * stays valid; the memory is freed when the last process lets go. */
MMK_API void    mmk_ring_destroy(mmk_ring *r);

/* ------------------------------------------------------------ byte spans */

/* Producer: *span receives the start of the free space; returns its length
 * (contiguous, up to the capacity), 0 when the ring is full, -EPIPE after
 * close_write or once the consumer is gone. Lock-free, no system call. The
 * consumer's position is cached and reloaded only when the cache shows the
 * ring full, so the length may be less than what is free right now (never
 * more); after mmk_ring_wait_writable(r, n, ...) it is at least n. */
MMK_API ssize_t mmk_ring_write_begin(mmk_ring *r, void **span);

/* Producer: publish the first n bytes of the span (n may be 0). -EINVAL if n
 * is more than the free space. Wakes a sleeping consumer (a system call only
 * when it is asleep). */
MMK_API int     mmk_ring_write_commit(mmk_ring *r, size_t n);

/* Consumer: *span receives the readable bytes; returns their count
 * (contiguous), 0 when empty (also at end of stream: see wait_readable).
 * Cached like write_begin: after mmk_ring_wait_readable(r, n, ...) at least n. */
MMK_API ssize_t mmk_ring_read_begin(mmk_ring *r, const void **span);

/* Consumer: release n bytes (-EINVAL if more than are readable). */
MMK_API int     mmk_ring_read_commit(mmk_ring *r, size_t n);

/* Batching (MMK_RING_BATCH on this handle). Without the flag every commit
 * and release is visible to the peer at once. With it, a producer's commits
 * (write_commit, rec_commit, mmk_ring_write) and a consumer's releases
 * (read_commit, rec_release, mmk_ring_read) stay private until one of:
 *   - capacity/16 bytes are pending on that side;
 *   - the peer is asleep in a wait (then the next commit or release);
 *   - this side finds the ring full (producer) or empty (consumer), or
 *     waits (wait_writable / wait_readable / poll_prepare);
 *   - mmk_ring_write_flush / mmk_ring_read_flush, close_write, destroy.
 * So a producer that keeps writing, or stops by waiting or closing, never
 * strands data; one that commits and then goes quiet must flush. Before a
 * side moves to a forked child, flush it. Saves the cross-core traffic of
 * publishing every record; how much that is worth varies from machine to
 * machine (docs/BENCHMARKS.md); for many small records the batched record
 * calls (mmk_ring_rec_reserve_n, mmk_ring_rec_peek_batch) save more. The flushes are
 * no-ops without pending data; 0, -EINVAL, MMK_ECORRUPT. Thread-safety: the
 * producer's (consumer's) thread only, like the calls they complete. */
MMK_API int     mmk_ring_write_flush(mmk_ring *r);
MMK_API int     mmk_ring_read_flush(mmk_ring *r);

/* Copying helpers. mmk_ring_write copies all n bytes, waiting for space as
 * needed up to timeout_ms in total (-1: forever; 0: no waiting); returns the
 * bytes written (< n only on timeout or end of stream after a partial
 * write), or -ETIMEDOUT / -EPIPE / -ECONNRESET when none. -EINVAL for n 0
 * with buf NULL. mmk_ring_read copies between 1 and n bytes, like read(2),
 * waiting up to timeout_ms for the first; -EPIPE at end of stream. */
MMK_API ssize_t mmk_ring_write(mmk_ring *r, const void *buf, size_t n, int timeout_ms);
MMK_API ssize_t mmk_ring_read(mmk_ring *r, void *buf, size_t n, int timeout_ms);

/* --------------------------------------------------------------- waiting */

/* Block until at least min_bytes (1 if 0) are readable. timeout_ms < 0 waits
 * forever, 0 polls. 0, -ETIMEDOUT, -EPIPE (stream closed and fewer than
 * min_bytes left: drain them first with a smaller min_bytes), -ECONNRESET
 * (the producer's process died; see "Peer death" above), -EINVAL
 * (min_bytes > capacity). Sleeps on a futex in the shared header, so it
 * works across processes; a dead peer is noticed within about 100 ms. A
 * timeout of 0 only polls and never reports -ECONNRESET. */
MMK_API int     mmk_ring_wait_readable(mmk_ring *r, size_t min_bytes, int timeout_ms);

/* Block until at least min_bytes are free. Same codes; -EPIPE when the
 * consumer destroyed its handle or after our own close_write. */
MMK_API int     mmk_ring_wait_writable(mmk_ring *r, size_t min_bytes, int timeout_ms);

/* End of stream: the consumer drains what was written, then gets -EPIPE.
 * Later writes get -EPIPE. Idempotent. */
MMK_API int     mmk_ring_close_write(mmk_ring *r);

/* ---------------------------------------------------- poll/epoll support */

#define MMK_RING_READABLE 1u /* the eventfd the producer signals when data arrives */
#define MMK_RING_WRITABLE 2u /* the eventfd the consumer signals when space frees */

/* The eventfd (non-blocking, close-on-exec, owned by the ring) signalled for
 * direction `which`, created on first call. Readable in poll/epoll after a
 * signal; read it to reset. A peer in another process signals it only when
 * it holds the same eventfd: send it along with the ring's fd and install it
 * there with mmk_ring_set_eventfd (a forked child inherits it). -EINVAL. */
MMK_API int     mmk_ring_eventfd(mmk_ring *r, unsigned which);

/* Install an eventfd received from the peer (dup'ed; replaces ours). */
MMK_API int     mmk_ring_set_eventfd(mmk_ring *r, unsigned which, int efd);

/* Before sleeping in poll/epoll on the eventfd of `which`: returns 1 when the
 * ring is already ready (readable: data or end of stream; writable: space),
 * so do not sleep; 0 when it is not and the peer has been asked to signal the
 * eventfd. Without this call the peer does not signal (need-wakeup flag).
 * One corner: if this process cannot issue membarrier(2) (a seccomp filter)
 * while the peer's process can, a commit racing with the first such call
 * may go unsignalled; give poll/epoll a timeout there (wait_readable and
 * wait_writable are not affected: they re-check every millisecond). The
 * eventfd says nothing about peer death: an event loop that must notice a
 * killed peer calls wait_readable / wait_writable with a short timeout
 * (1 ms will do: the check runs whenever a sleep ends by timeout) when its
 * poll times out. */
MMK_API int     mmk_ring_poll_prepare(mmk_ring *r, unsigned which);

/* --------------------------------------------------------------- records */

/* Variable-length records with an 8-byte header, each contiguous thanks to
 * the mirror, aligned to 8 bytes. Do not mix records and byte spans on one
 * ring. One reservation at a time (single producer). */

/* Producer: reserve room for a record of len bytes; *rec points at its
 * payload. 0, -EAGAIN (not enough room now: wait_writable for
 * mmk_ring_record_space(len)), -EMSGSIZE (can never fit), -EPIPE, -EBUSY
 * (a reservation is already open), -EINVAL (byte spans were mixed in, so the
 * position is not 8-aligned). */
MMK_API int     mmk_ring_rec_reserve(mmk_ring *r, size_t len, void **rec);

/* Producer: publish the open reservation with its final length len (<= the
 * reserved length; -EINVAL otherwise, without a reservation, or when the
 * reservation came from mmk_ring_rec_reserve_n with more than one record). */
MMK_API int     mmk_ring_rec_commit(mmk_ring *r, size_t len);

/* Producer: drop the open reservation; nothing is published. */
MMK_API int     mmk_ring_rec_discard(mmk_ring *r);

/* Consumer: the next record, in place: *rec points at its payload; returns
 * its length (0 is a valid empty record), -EAGAIN when none is ready,
 * MMK_ECORRUPT when the header is impossible, -EINVAL after byte spans were
 * mixed in. The payload stays valid until
 * mmk_ring_rec_release. In untrusted mode the length is validated but the
 * payload may still change under you: copy it before trusting it. */
MMK_API ssize_t mmk_ring_rec_peek(mmk_ring *r, const void **rec);

/* Consumer: release the record returned by the last peek (the first one
 * after a peek_batch). -EINVAL if none. */
MMK_API int     mmk_ring_rec_release(mmk_ring *r);

/* Ring bytes taken by a record of len bytes (header and alignment), for
 * mmk_ring_wait_writable. */
MMK_API size_t  mmk_ring_record_space(size_t len);

/* ------------------------------------------------------- records, batched
 *
 * The same records, many per call: the consumer takes every record that is
 * ready with one load of the producer's position and gives them back with
 * one store; the producer reserves several records and publishes them with
 * one store. Per record, what is left is the header and the payload. This
 * is what makes small records cheap between two cores (docs/BENCHMARKS.md,
 * ring): each published position is a cache line that moves to the other
 * core. Records from batched and single calls mix freely on one ring. */

/* One record returned by mmk_ring_rec_peek_batch: its payload, in place. */
struct mmk_ring_rec {
    const void *data;
    size_t len;
};

/* Producer: reserve up to max records of len bytes each (as many as fit
 * now, at least 1); recs[i] receives the payload of the i-th, one after the
 * other in ring order, each contiguous. Returns the count. The consumer's
 * position is reloaded at most once, when the cached one shows less room
 * than max records. -EAGAIN (not even one fits now: wait_writable for
 * mmk_ring_record_space(len)), -EMSGSIZE, -EPIPE, -EBUSY (a reservation is
 * open), -EINVAL (max 0, NULL, byte spans mixed in). Producer thread only. */
MMK_API ssize_t mmk_ring_rec_reserve_n(mmk_ring *r, size_t len, size_t max, void **recs);

/* Producer: publish the first n records of the open reservation (each of
 * the reserved length) with one position store (on a MMK_RING_BATCH handle,
 * when that flag's rules say); the rest of the reservation is dropped (n 0
 * drops it all). Writes the record headers, so call it right after filling
 * the payloads. -EINVAL when n exceeds the reservation or none is open.
 * mmk_ring_rec_discard drops it too. */
MMK_API int     mmk_ring_rec_commit_n(mmk_ring *r, size_t n);

/* Consumer: up to max ready records, in place, into out[0..]; returns how
 * many (>= 1), -EAGAIN when none is ready, MMK_ECORRUPT for an impossible
 * header, -EINVAL (max 0, NULL, byte spans mixed in). Uses the cached
 * position of the producer first and reloads it at most once, so one call
 * drains what is published. The payloads stay valid until released; a new
 * peek (batched or not) starts again at the first unreleased record. In
 * untrusted mode, as for mmk_ring_rec_peek, copy a payload before trusting
 * it. Consumer thread only. */
MMK_API ssize_t mmk_ring_rec_peek_batch(mmk_ring *r, struct mmk_ring_rec *out, size_t max);

/* Consumer: release the first n records returned by the last peek (batched
 * or not; n up to that count) with one position store (MMK_RING_BATCH: when
 * that flag's rules say). The others stay in
 * the ring and come first in the next peek. -EINVAL when n is more than was
 * peeked (or nothing was peeked); n 0 does nothing. Releasing all is O(1);
 * a part walks the n headers again (and, untrusted, re-checks them). */
MMK_API int     mmk_ring_rec_release_n(mmk_ring *r, size_t n);

#ifdef __cplusplus
}
#endif
#endif
