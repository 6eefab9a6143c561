/* heap.h: open/create, transactions, the redo log, recovery, read views.
 *
 * The file is mapped MAP_PRIVATE inside a large PROT_NONE reservation, so the
 * kernel can never write an uncommitted change back and pointers never move.
 * A commit finds the written (copied-on-write) pages, appends them as one
 * checksummed redo record to "<path>-log", syncs the log (the durable point),
 * then pwrites the pages into the heap file and drops the private copies.
 * The log is reset at checkpoints (heap file synced). See docs/FORMAT.md. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "fault_internal.h"
#include "heap_internal.h"
#include "heap_io.h"

#define IO (mmk__heap_io)
#define LOCK_WRITER 0   /* byte of the heap file: the one writer */
#define LOCK_APPLY 1    /* byte: held exclusively while pages are applied */
#define LOCK_INTENT 2   /* byte: an applier holds it while waiting for views to end,
                         * so a stream of new read views cannot starve it */
#define LOCK_TURN 3     /* byte: a writer holds it while waiting for the writer lock,
                         * so one that re-locks at once queues behind the waiter */
_Static_assert(LOCK_INTENT == LOCK_APPLY + 1, "apply_lock takes both bytes in one call");
#define LOG_CHUNK ((uint64_t)4 << 20)
#define LOG_LIMIT_DEFAULT ((uint64_t)32 << 20)
#define RESERVE_DEFAULT ((size_t)64 << 30)

/* Whole writes: a hook (or a device) may write less than asked; the rest is
 * written again, and no progress is an error. 0 or -errno. */
static ssize_t wr(int fd, const void *buf, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = IO->pwrite(fd, (const char *)buf + done, n - done, off + done);
        if (r < 0)
            return r;
        if (r == 0)
            return -EIO;
        done += (size_t)r;
    }
    return 0;
}

static ssize_t wrv(int fd, const struct iovec *v, int cnt, uint64_t off)
{
    size_t total = 0;
    for (int i = 0; i < cnt; i++)
        total += v[i].iov_len;
    ssize_t r = IO->pwritev(fd, v, cnt, off);
    if (r < 0)
        return r;
    size_t skip = (size_t)r;
    uint64_t o = off + (uint64_t)r;
    for (int i = 0; i < cnt && skip < total; i++) {
        if (skip >= v[i].iov_len) {
            skip -= v[i].iov_len;
            total -= v[i].iov_len;
            continue;
        }
        ssize_t w = wr(fd, (const char *)v[i].iov_base + skip, v[i].iov_len - skip, o);
        if (w < 0)
            return w;
        o += v[i].iov_len - skip;
        total -= v[i].iov_len;
        skip = 0;
    }
    return 0;
}

/* ------------------------------------------------------------ checksums */

static uint32_t zero_crc;

uint32_t mmk__hp_zero_crc(void)
{
    uint32_t z = __atomic_load_n(&zero_crc, __ATOMIC_RELAXED);
    if (!z) {
        static const unsigned char zero[HP_PAGE];
        z = mmk__crc32c(0, zero, sizeof zero);
        __atomic_store_n(&zero_crc, z, __ATOMIC_RELAXED);
    }
    return z;
}

uint32_t mmk__hp_header_crc(const struct hp_header *hd)
{
    struct hp_header c = *hd;
    c.crc = 0;
    return mmk__crc32c(0, &c, sizeof c);
}

static uint32_t loghdr_crc(const struct hp_loghdr *l)
{
    struct hp_loghdr c = *l;
    c.crc = 0;
    return mmk__crc32c(0, &c, sizeof c);
}

static void say(char *why, size_t n, const char *fmt, unsigned long long a,
                unsigned long long b)
{
    if (why && n)
        snprintf(why, n, fmt, a, b);
}

int mmk__hp_header_valid(const struct hp_header *hd, uint64_t file_size, char *why, size_t n)
{
    if (hd->magic != HP_MAGIC) {
        say(why, n, "header: bad magic %#llx%.0llu", (unsigned long long)hd->magic, 0);
        return MMK_EFORMAT;
    }
    if (hd->bom != HP_BOM) {
        say(why, n, "header: byte order mark %#llx (another byte order)%.0llu", hd->bom, 0);
        return MMK_EFORMAT;
    }
    if (hd->version != HP_VERSION || hd->ptr_width != sizeof(void *) * 8 ||
        hd->page_size != HP_PAGE || hd->hdr_size != sizeof *hd) {
        say(why, n, "header: format version %llu / pointer width %llu not supported",
            hd->version, hd->ptr_width);
        return MMK_EFORMAT;
    }
    if (hd->crc != mmk__hp_header_crc(hd)) {
        say(why, n, "header (page 0): checksum mismatch%.0llu%.0llu", 0, 0);
        return MMK_ECORRUPT;
    }
    uint64_t pages = hd->heap_size >> HP_SHIFT;
    if (hd->heap_size & (HP_PAGE - 1) || pages < HP_MIN_PAGES ||
        hd->heap_size > ((uint64_t)1 << 46) || (file_size && hd->heap_size > file_size) ||
        (pages % HP_GROUP && pages % HP_GROUP <= HP_META)) { /* a group's metadata is whole */
        say(why, n, "header: heap size %llu invalid (file size %llu)", hd->heap_size,
            file_size);
        return MMK_ECORRUPT;
    }
    if (hd->root >= hd->heap_size || hd->hiwater > pages || hd->free_pages > pages) {
        say(why, n, "header: root %llu or allocator counters out of range (size %llu)",
            hd->root, hd->heap_size);
        return MMK_ECORRUPT;
    }
    for (int i = 0; i < HP_NCLASS; i++)
        if (hd->class_head[i] >= pages) {
            say(why, n, "header: slab list of class %llu points at page %llu", i,
                hd->class_head[i]);
            return MMK_ECORRUPT;
        }
    for (int i = 0; i < HP_NBIN; i++)
        if (hd->bin_head[i] >= pages) {
            say(why, n, "header: free list %llu points at page %llu", i, hd->bin_head[i]);
            return MMK_ECORRUPT;
        }
    return 0;
}

/* ------------------------------------------------------------ locks */

static int ofd_lock(int fd, short type, off_t byte, int wait)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};
    for (;;) {
        if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0)
            return 0;
        if (errno != EINTR)
            return errno == EAGAIN || errno == EACCES ? -EBUSY : -errno;
    }
}

static void ofd_unlock(int fd, off_t byte)
{
    struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};
    while (fcntl(fd, F_OFD_SETLK, &fl) && errno == EINTR) {
    }
}

/* The applier: announce, wait for open views, keep new ones out. */
static int apply_lock(mmk_heap *h)
{
    /* No view open (the usual case): both bytes in one call. */
    struct flock both = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = LOCK_APPLY, .l_len = 2};
    if (fcntl(h->fd, F_OFD_SETLK, &both) == 0)
        return 0;
    int rc = ofd_lock(h->fd, F_WRLCK, LOCK_INTENT, 1);
    if (rc)
        return rc;
    rc = ofd_lock(h->fd, F_WRLCK, LOCK_APPLY, 1);
    if (rc)
        ofd_unlock(h->fd, LOCK_INTENT);
    return rc;
}

static void apply_unlock(mmk_heap *h)
{
    struct flock both = {.l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = LOCK_APPLY, .l_len = 2};
    if (fcntl(h->fd, F_OFD_SETLK, &both)) {
        ofd_unlock(h->fd, LOCK_APPLY);
        ofd_unlock(h->fd, LOCK_INTENT);
    }
}

/* A read view: pass the intent byte (waits while an applier is queued),
 * then hold the apply byte shared. */
static int view_lock(mmk_heap *h)
{
    int rc = ofd_lock(h->fd, F_RDLCK, LOCK_INTENT, 1);
    if (rc)
        return rc;
    rc = ofd_lock(h->fd, F_RDLCK, LOCK_APPLY, 1);
    ofd_unlock(h->fd, LOCK_INTENT);
    return rc;
}

/* ------------------------------------------------------------ log */

static int boot_id(uint8_t out[16])
{
    int rc = IO->boot_id(out);
    if (rc)
        memset(out, 0, 16);
    return rc;
}

/* Scan the two log header slots for the newest valid one, of the heap
 * `uuid` or, with any_heap, of any heap: 1 found (into *out), 0 none valid,
 * < 0 an I/O error. */
static int log_scan_header(mmk_heap *h, int any_heap, uint64_t uuid, struct hp_loghdr *out)
{
    if (h->logfd < 0)
        return 0;
    unsigned char buf[4096];
    ssize_t n = IO->pread(h->logfd, buf, sizeof buf, 0);
    if (n < 0)
        return (int)n;
    if (n < (ssize_t)(2048 + sizeof *out))
        return 0;
    int found = 0;
    for (int s = 0; s < 2; s++) {
        struct hp_loghdr l;
        memcpy(&l, buf + s * 2048, sizeof l);
        if (l.magic != LOG_MAGIC || l.version != HP_VERSION || l.crc != loghdr_crc(&l) ||
            (!any_heap && l.heap_uuid != uuid))
            continue;
        if (!found || l.gen > out->gen)
            *out = l;
        found = 1;
    }
    return found;
}

/* The current log header of the heap `uuid` (see log_scan_header). */
static int log_read_header(mmk_heap *h, uint64_t uuid, struct hp_loghdr *out)
{
    return log_scan_header(h, 0, uuid, out);
}

/* Start a new log generation whose base is the heap's current commit. The
 * heap file must already be durable at that commit. */
static int log_write_header(mmk_heap *h, uint64_t gen, uint64_t base_commit)
{
    struct hp_loghdr l = {.magic = LOG_MAGIC, .version = HP_VERSION, .gen = gen,
                          .base_commit = base_commit, .heap_uuid = h->hdr->heap_uuid};
    boot_id(l.boot_id);
    l.crc = loghdr_crc(&l);
    ssize_t w = wr(h->logfd, &l, sizeof l, (gen & 1) * 2048);
    if (w < 0)
        return (int)w;
    if (!(h->flags & MMK_HEAP_NOSYNC)) {
        int rc = IO->fdatasync(h->logfd);
        if (rc)
            return rc;
    }
    h->log_gen = gen;
    h->log_base = base_commit;
    return 0;
}

/* Read and validate the record at off: its meta block (header + entries,
 * malloc'd) into *meta and, when data is non-NULL, its data bytes
 * (malloc'd, every entry's checksum verified). 1 valid, 0 not a valid
 * record of generation gen with commit id expect. */
static int rec_read(mmk_heap *h, uint64_t uuid, uint64_t off, uint64_t gen, uint64_t expect,
                    struct hp_rec **meta, unsigned char **data)
{
    *meta = NULL;
    if (data)
        *data = NULL;
    unsigned char first[HP_PAGE];
    ssize_t n = IO->pread(h->logfd, first, HP_PAGE, off);
    if (n < 0)
        return (int)n; /* an unreadable log is an error, not its end */
    if (n < (ssize_t)sizeof(struct hp_rec))
        return 0;
    struct hp_rec r;
    memcpy(&r, first, sizeof r);
    if (r.magic != REC_MAGIC || r.gen != gen || r.commit_id != expect || r.npages == 0 ||
        r.heap_uuid != uuid || r.npages > (1u << 26) ||
        r.meta_len != sizeof r + (uint64_t)r.npages * sizeof(struct hp_ent) ||
        r.len < r.meta_len || r.len > r.meta_len + (uint64_t)r.npages * HP_PAGE + REC_ALIGN ||
        r.heap_size & (HP_PAGE - 1) || r.heap_size < HP_MIN_PAGES * HP_PAGE)
        return 0; /* the usual answer at the log's end: no system call spent */
    uint64_t lsize;
    if (mmk__os_file_size(h->logfd, &lsize) || r.len > lsize || off > lsize - r.len)
        return 0; /* a record never extends past the log's end: bounds what we allocate */
    unsigned char *m = malloc(r.meta_len);
    if (!m)
        return 0;
    if (r.meta_len <= (uint64_t)n)
        memcpy(m, first, r.meta_len);
    else {
        ssize_t g = IO->pread(h->logfd, m, r.meta_len, off);
        if (g != (ssize_t)r.meta_len) {
            free(m);
            return g < 0 ? (int)g : 0;
        }
    }
    struct hp_rec *rm = (struct hp_rec *)m;
    uint32_t want = rm->crc;
    rm->crc = 0;
    uint32_t got = mmk__crc32c(0, m, r.meta_len);
    rm->crc = want;
    const struct hp_ent *e = (const struct hp_ent *)(rm + 1);
    int ok = got == want;
    uint64_t total = 0;
    for (uint32_t i = 0; ok && i < r.npages; i++) {
        if (e[i].page >= r.heap_size >> HP_SHIFT || (i && e[i].page <= e[i - 1].page) ||
            e[i].off > HP_PAGE || e[i].len > HP_PAGE - e[i].off)
            ok = 0;
        total += e[i].len;
    }
    if (!ok || r.meta_len + total > r.len) {
        free(m);
        return 0;
    }
    if (data) {
        unsigned char *d = malloc(total ? total : 1);
        ssize_t g = d ? IO->pread(h->logfd, d, total, off + r.meta_len) : -ENOMEM;
        if (g < 0) {
            free(d);
            free(m);
            return (int)g;
        }
        if (g != (ssize_t)total)
            ok = 0;
        uint64_t pos = 0;
        for (uint32_t i = 0; ok && i < r.npages; pos += e[i].len, i++)
            if (mmk__crc32c(0, d + pos, e[i].len) != e[i].crc)
                ok = 0;
        if (!ok) {
            free(d);
            free(m);
            return 0;
        }
        *data = d;
    }
    *meta = rm;
    return 1;
}

/* Mark the file's header (still the previous commit's) as "commit id being
 * applied": if the applier dies half-way, readers and the next writer see
 * the mark and recover instead of trusting a half-applied file. */
static int mark_applying(mmk_heap *h, uint64_t commit_id, const struct hp_header *file_hdr)
{
    struct hp_header old;
    if (file_hdr) /* the caller holds the file's header: no read */
        old = *file_hdr;
    else if (IO->pread(h->fd, &old, sizeof old, 0) != (ssize_t)sizeof old)
        return 0;
    if (old.magic != HP_MAGIC || old.crc != mmk__hp_header_crc(&old))
        return 0; /* no valid header to mark: recovery replays from the log anyway */
    old.applying = commit_id;
    old.crc = mmk__hp_header_crc(&old);
    ssize_t w = wr(h->fd, &old, sizeof old, 0);
    return w < 0 ? (int)w : 0;
}

/* Apply a validated record to the heap file, page 0 last, so a header that
 * shows the commit means every page of it reached the file. */
static int rec_apply(mmk_heap *h, const struct hp_rec *r, const unsigned char *data)
{
    const struct hp_ent *e = (const struct hp_ent *)(r + 1);
    uint64_t fsize;
    int rs = mmk__os_file_size(h->fd, &fsize);
    if (rs)
        return rs;
    if (fsize < r->heap_size) {
        int rc = IO->ftruncate(h->fd, r->heap_size);
        if (rc)
            return rc;
    }
    uint64_t total = 0;
    for (uint32_t i = 0; i < r->npages; i++)
        total += e[i].len;
    int rc = mark_applying(h, r->commit_id, NULL);
    if (rc)
        return rc;
    for (uint32_t i = r->npages; i-- > 0;) {
        total -= e[i].len;
        if (!e[i].len)
            continue;
        ssize_t w = wr(h->fd, data + total, e[i].len, (e[i].page << HP_SHIFT) + e[i].off);
        if (w < 0)
            return (int)w;
    }
    return 0;
}

/* What recovery a heap needs: 0 none, 1 replay from *off expecting *expect,
 * 2 full replay from the log start. hd may be NULL (invalid header). */
static int recovery_needed(mmk_heap *h, const struct hp_header *hd, const struct hp_loghdr *lh,
                           int log_ok, uint64_t *off, uint64_t *expect)
{
    if (!log_ok)
        return hd ? 0 : -1;
    uint8_t now[16];
    boot_id(now);
    if (!hd || hd->commit_id < lh->base_commit || memcmp(now, lh->boot_id, 16)) {
        *off = HP_PAGE;
        *expect = lh->base_commit + 1;
        return 2;
    }
    if (hd->log_gen == lh->gen && hd->log_off >= HP_PAGE) {
        *off = hd->log_off;
    } else {
        if (hd->commit_id != lh->base_commit) {
            *off = HP_PAGE;
            *expect = lh->base_commit + 1;
            return 2;
        }
        *off = HP_PAGE;
    }
    *expect = hd->commit_id + 1;
    struct hp_rec *m;
    int v = rec_read(h, lh->heap_uuid, *off, lh->gen, *expect, &m, NULL);
    free(m);
    return v < 0 ? v : v ? 1 : 0;
}

/* Replay valid records from off; stops at the first invalid one. */
static int replay(mmk_heap *h, uint64_t uuid, uint64_t gen, uint64_t off, uint64_t expect,
                  uint64_t *applied)
{
    *applied = 0;
    for (;;) {
        struct hp_rec *m;
        unsigned char *img;
        int v = rec_read(h, uuid, off, gen, expect, &m, &img);
        if (v <= 0)
            return v; /* the end of the log, or an I/O error */
        int rc = apply_lock(h);
        if (!rc) {
            rc = rec_apply(h, m, img);
            apply_unlock(h);
        }
        off += m->len;
        free(m);
        free(img);
        if (rc)
            return rc;
        (*applied)++;
        expect++;
    }
}

/* Start a new log generation whose base is the heap's current commit.
 * Writer lock held. Order matters for power loss: (1) point the file's
 * header at the new generation, so other processes see that their cached
 * log state is stale; (2) sync the heap file, making the commit and that
 * header durable; (3) write and sync the new log header. A header torn by a
 * power cut before (2) completes is rebuilt by the replay from the old
 * generation, whose records each carry the header. */
static int checkpoint(mmk_heap *h, uint64_t commit_id)
{
    struct hp_header c = *h->hdr;
    c.log_gen = h->log_gen + 1;
    c.log_off = HP_PAGE;
    c.applying = 0;
    c.crc = mmk__hp_header_crc(&c);
    int rc = apply_lock(h);
    if (rc)
        return rc;
    ssize_t w = wr(h->fd, &c, sizeof c, 0);
    apply_unlock(h);
    if (w < 0)
        return (int)w;
    if (!(h->flags & MMK_HEAP_NOSYNC)) {
        rc = IO->fdatasync(h->fd);
        if (rc)
            return rc;
    }
    return log_write_header(h, c.log_gen, commit_id);
}

static int read_file_header(mmk_heap *h, struct hp_header *hd, uint64_t *fsize)
{
    int rs = mmk__os_file_size(h->fd, fsize);
    if (rs)
        return rs;
    ssize_t n = IO->pread(h->fd, hd, sizeof *hd, 0);
    if (n < 0)
        return (int)n;
    if (n < (ssize_t)sizeof *hd) {
        if (n >= 8 && hd->magic == HP_MAGIC)
            return MMK_ECORRUPT;
        return MMK_EFORMAT;
    }
    return 0;
}

/* A heap whose creation was cut short (kill -9 or power loss inside
 * mmk_heap_open with MMK_HEAP_CREATE): creation writes the heap file, syncs
 * it, and only then writes the log header, so such a file is still the
 * smallest size, has no valid log header, and its first page is zero past
 * the header and holds no magic, or an mmkit header that is torn or at
 * commit 0. Nothing was ever committed to it, so MMK_HEAP_CREATE may start
 * it afresh. A file of another format or a damaged heap is left alone; the
 * one blind spot is a foreign file of at most 1 MiB whose first page is zero
 * except within the header's bytes (and with no "<path>-log" beside it). */
static int creation_interrupted(mmk_heap *h, uint64_t fsize)
{
    struct hp_loghdr lh;
    if (fsize > HP_MIN_PAGES * HP_PAGE || log_scan_header(h, 1, 0, &lh) != 0)
        return 0;
    unsigned char page[HP_PAGE];
    ssize_t n = IO->pread(h->fd, page, sizeof page, 0);
    if (n < 0)
        return 0;
    memset(page + n, 0, sizeof page - (size_t)n);
    struct hp_header hd;
    memcpy(&hd, page, sizeof hd);
    if (hd.magic == HP_MAGIC)
        return mmk__hp_header_crc(&hd) != hd.crc || hd.commit_id == 0;
    /* No magic: the header's first sector never landed. Its later sector
     * may have (a write torn at 512 B), but nothing else of page 0 is ever
     * written, so bytes past the header must all be zero. */
    if (hd.magic)
        return 0;
    for (size_t i = sizeof hd; i < sizeof page; i++)
        if (page[i])
            return 0;
    return 1;
}

/* Bring the file to its last durable commit. Writer lock held (or, for a
 * read-only handle, the shared writer lock: then only detection). */
static int recover_locked(mmk_heap *h, int can_write)
{
    struct hp_header hd;
    uint64_t fsize;
    int rc = read_file_header(h, &hd, &fsize);
    if (rc < 0 && rc != MMK_ECORRUPT)
        return rc;
    int hv = rc == 0 ? mmk__hp_header_valid(&hd, fsize, NULL, 0) : rc;
    if (hv == MMK_EFORMAT)
        return MMK_EFORMAT;
    struct hp_loghdr lh;
    /* Without a valid header the uuid is unknown: take the log's word. */
    int log_ok = 0;
    if (hv == 0) {
        log_ok = log_read_header(h, hd.heap_uuid, &lh);
        if (log_ok < 0)
            return log_ok;
    }
    else if (h->logfd >= 0) {
        unsigned char b[4096];
        if (IO->pread(h->logfd, b, sizeof b, 0) == (ssize_t)sizeof b) {
            for (int s = 0; s < 2; s++) {
                struct hp_loghdr l;
                memcpy(&l, b + s * 2048, sizeof l);
                if (l.magic == LOG_MAGIC && l.crc == loghdr_crc(&l) &&
                    (!log_ok || l.gen > lh.gen)) {
                    lh = l;
                    log_ok = 1;
                }
            }
        }
    }
    uint64_t off = 0, expect = 0;
    int need = recovery_needed(h, hv == 0 ? &hd : NULL, &lh, log_ok, &off, &expect);
    if (need == -1 && (hv || !log_ok))
        return hv; /* no log and no header: nothing to go on */
    if (need < 0)
        return need;
    if (log_ok) {
        h->log_gen = lh.gen;
        h->log_base = lh.base_commit;
    } else {
        h->log_gen = 0; /* no usable log: begin starts one */
    }
    if (need == 0)
        return hv == 0 && hd.applying ? MMK_ECORRUPT /* half-applied, record gone */ : hv;
    if (!can_write)
        return -EROFS;
    uint64_t applied;
    rc = replay(h, lh.heap_uuid, lh.gen, off, expect, &applied);
    if (rc)
        return rc;
    rc = read_file_header(h, &hd, &fsize);
    if (rc)
        return rc;
    rc = mmk__hp_header_valid(&hd, fsize, NULL, 0);
    if (rc)
        return rc;
    if (need == 2 && applied) {
        /* After a reboot the page cache is gone: make the replayed state
         * durable and stamp the log with this boot. (With nothing replayed
         * the file is the durable base already; a checkpoint would rewrite
         * the header outside any record.) */
        struct mmk_heap tmp = *h;
        tmp.hdr = &hd;
        rc = checkpoint(&tmp, hd.commit_id);
        h->log_gen = tmp.log_gen;
        h->log_base = tmp.log_base;
    }
    return rc;
}

/* Recover under the writer lock: exclusive for a writable handle, shared
 * for a read-only one (which can only detect, and waits for a writer). */
static int recover_as_writer(mmk_heap *h, int ro)
{
    int rc = ofd_lock(h->fd, ro ? F_RDLCK : F_WRLCK, LOCK_WRITER, 1);
    if (rc)
        return rc;
    rc = recover_locked(h, !ro);
    ofd_unlock(h->fd, LOCK_WRITER);
    return rc;
}

/* ------------------------------------------------------------ mapping */

/* The clean view of a writable handle follows the private mapping. It is
 * only read, by guarded copies (a file cut short gives an error, not
 * SIGBUS); any failure just turns it off (the commit preads instead). */
static void map_clean(mmk_heap *h)
{
    if (h->flags & MMK_HEAP_RDONLY || h->clean_mapped == h->mapped)
        return;
    if (!h->clean && !h->clean_mapped) {
        void *r = mmap(NULL, h->reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        h->clean = r == MAP_FAILED ? NULL : r;
        h->clean_mapped = r == MAP_FAILED ? SIZE_MAX : 0;
    }
    if (!h->clean)
        return;
    void *p = mmap(h->clean + h->clean_mapped, h->mapped - h->clean_mapped, PROT_READ,
                   MAP_SHARED | MAP_FIXED, h->fd, (off_t)h->clean_mapped);
    if (p == MAP_FAILED) {
        munmap(h->clean, h->reserve);
        h->clean = NULL;
        h->clean_mapped = SIZE_MAX;
        return;
    }
    h->clean_mapped = h->mapped;
}

static int map_file(mmk_heap *h, size_t upto, int writable)
{
    if (upto <= h->mapped)
        return 0;
    if (upto > h->reserve)
        return -ENOMEM;
    int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    void *p = mmap(h->base + h->mapped, upto - h->mapped, prot, MAP_PRIVATE | MAP_FIXED, h->fd,
                   (off_t)h->mapped);
    if (p == MAP_FAILED)
        return -errno;
    /* Objects are reached through pointers, not in file order: read-around
     * (up to read_ahead_kb, 8 MiB on some disks) would make each cold fault
     * read megabytes. mmk_advise() on a range undoes it for a scan. Asked
     * for huge pages, the kernel reads (and maps) 2 MiB folios instead, even
     * for a random fault: the read-mostly trade (see heap.h). */
    madvise(p, upto - h->mapped, h->flags & MMK_HEAP_HUGE ? MADV_HUGEPAGE : MADV_RANDOM);
    size_t before = h->mapped;
    h->mapped = upto;
    mmk__hp_dirty_map_grown(h, before); /* a failure only ends the kept copies */
    map_clean(h);
    return 0;
}

/* Map what other processes grew; the file must hold it. */
/* Also refuses a file cut shorter than the heap (by another program): the
 * mapping would raise SIGBUS in library code. fsize: the file's size if the
 * caller just read it, else UINT64_MAX. */
static int catch_up(mmk_heap *h, int writable, uint64_t fsize)
{
    uint64_t size = __atomic_load_n(&h->hdr->heap_size, __ATOMIC_ACQUIRE);
    if (fsize == UINT64_MAX) {
        int rs = mmk__os_file_size(h->fd, &fsize);
        if (rs)
            return rs;
    }
    if (fsize < size)
        return MMK_ECORRUPT;
    if (size > h->reserve)
        return -ENOMEM; /* grown past this handle's reservation: reopen */
    if (size <= h->mapped)
        return 0;
    return map_file(h, size, writable);
}

/* A copy of the header as this handle maps it, read with a guarded copy
 * after checking the file's size: a file cut short by another program
 * gives MMK_ECORRUPT (or -EIO for an unreadable page), not SIGBUS.
 * *fsize (may be NULL) gets the file's size. */
static int snap_header(mmk_heap *h, struct hp_header *out, uint64_t *fsize)
{
    uint64_t size;
    int rc = mmk__os_file_size(h->fd, &size);
    if (rc)
        return rc;
    if (size < HP_PAGE)
        return MMK_ECORRUPT;
    rc = mmk__copy_guarded(out, h->hdr, sizeof *out);
    if (rc)
        return rc == -EIO ? -EIO : MMK_ECORRUPT;
    if (size < out->heap_size)
        return MMK_ECORRUPT;
    if (fsize)
        *fsize = size;
    return 0;
}

/* Grow inside a transaction so that a run of `need` contiguous pages fits
 * (runs never cross a group: a request that does not fit in the rest of
 * the current group goes to the next one). Grows by at least half. */
int mmk__hp_grow(mmk_heap *h, uint64_t need)
{
    struct hp_header *hd = h->hdr;
    uint64_t old = hd->heap_size >> HP_SHIFT;
    uint64_t g = hp_group(old);
    uint64_t start = old < hp_first_data(g) ? hp_first_data(g) : old;
    uint64_t min_end = need <= hp_group_end(g) - start ? start + need
                                                        : hp_group_end(g) + HP_META + need;
    uint64_t add = old / 2, gib = (uint64_t)1 << (30 - HP_SHIFT);
    if (add > gib)
        add = gib;
    if (add < 256)
        add = 256;
    uint64_t neu = old + add > min_end ? old + add : min_end;
    if (neu % HP_GROUP && neu % HP_GROUP < HP_META + 256)
        neu += HP_META + 256 - neu % HP_GROUP; /* never end inside a group's metadata */
    if ((neu << HP_SHIFT) > h->reserve) {
        neu = h->reserve >> HP_SHIFT;
        if (neu < min_end)
            return -ENOMEM;
    }
    uint64_t fsize;
    int rs = mmk__os_file_size(h->fd, &fsize);
    if (rs)
        return rs;
    if (fsize < (neu << HP_SHIFT)) {
        int rc = IO->ftruncate(h->fd, neu << HP_SHIFT);
        if (rc)
            return rc == -EFBIG ? -ENOMEM : rc;
    }
    int rc = map_file(h, neu << HP_SHIFT, hp_all_rw(h));
    if (rc)
        return rc;
    /* New groups start with their metadata pages. */
    for (uint64_t gi = hp_group(old); gi * HP_GROUP < neu; gi++) {
        uint64_t m = hp_meta_start(gi);
        for (uint64_t p = m > old ? m : old; p < m + HP_META && p < neu; p++)
            *hp_desc_ptr(h, p) = D_MAKE(D_META, 0);
    }
    hd->heap_size = neu << HP_SHIFT;
    for (uint64_t p = old; p < neu;) {
        uint64_t gp = hp_group(p);
        uint64_t first = p < hp_first_data(gp) ? hp_first_data(gp) : p;
        uint64_t end = hp_group_end(gp) < neu ? hp_group_end(gp) : neu;
        if (first < end) {
            rc = mmk__hp_alloc_init(h, first, end);
            if (rc)
                return rc;
        }
        p = end;
    }
    return 0;
}

/* ------------------------------------------------------------ create */

static int create_new(mmk_heap *h)
{
    size_t size = HP_MIN_PAGES * HP_PAGE;
    void *img = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (img == MAP_FAILED)
        return -errno;
    mmk_heap tmp = *h;
    tmp.base = img;
    tmp.hdr = img;
    tmp.mapped = size;
    struct hp_header *hd = img;
    hd->magic = HP_MAGIC;
    hd->version = HP_VERSION;
    hd->bom = HP_BOM;
    hd->page_size = HP_PAGE;
    hd->ptr_width = sizeof(void *) * 8;
    hd->hdr_size = sizeof *hd;
    hd->heap_size = size;
    hd->map_addr = (uint64_t)(uintptr_t)h->base;
    mmk__os_random(&hd->heap_uuid, sizeof hd->heap_uuid);
    hd->log_gen = 1;
    hd->log_off = HP_PAGE;
    hd->hiwater = hp_first_data(0);
    for (uint64_t p = 0; p < hp_first_data(0); p++)
        *hp_desc_ptr(&tmp, p) = D_MAKE(D_META, 0);
    int rc = mmk__hp_alloc_init(&tmp, hp_first_data(0), HP_MIN_PAGES);
    /* Checksums: data pages first, then the checksum page itself (all of a
     * 1 MiB heap is covered by checksum page 1). */
    uint32_t z = mmk__hp_zero_crc();
    for (uint64_t p = 1 + HP_NCSUM; !rc && p < HP_MIN_PAGES; p++)
        *hp_csum_ptr(&tmp, p) = mmk__crc32c(0, hp_page(&tmp, p), HP_PAGE) ^ z;
    uint32_t *self = hp_csum_ptr(&tmp, 1);
    *self = 0;
    *self = mmk__crc32c(0, hp_page(&tmp, 1), HP_PAGE) ^ z;
    hd->crc = mmk__hp_header_crc(hd);
    if (!rc)
        rc = IO->ftruncate(h->fd, size);
    static const unsigned char zero[HP_PAGE];
    for (uint64_t p = 0; !rc && p < HP_MIN_PAGES; p++) {
        if (!memcmp(hp_page(&tmp, p), zero, HP_PAGE))
            continue; /* stays a hole */
        ssize_t w = wr(h->fd, hp_page(&tmp, p), HP_PAGE, p << HP_SHIFT);
        if (w < 0)
            rc = (int)w;
    }
    if (!rc && !(h->flags & MMK_HEAP_NOSYNC))
        rc = IO->fdatasync(h->fd);
    if (!rc) {
        rc = IO->ftruncate(h->logfd, 0);
        h->log_end_alloc = 0;
    }
    if (!rc) {
        struct mmk_heap t2 = *h;
        t2.hdr = hd;
        rc = log_write_header(&t2, 1, 0);
        h->log_gen = t2.log_gen;
        h->log_base = t2.log_base;
    }
    if (!rc && !(h->flags & MMK_HEAP_NOSYNC))
        rc = IO->fsync_dir(h->path);
    munmap(img, size);
    return rc;
}

/* ------------------------------------------------------------ open/close */

unsigned long mmk__hp_forks;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_child(void)
{
    __atomic_add_fetch(&mmk__hp_forks, 1, __ATOMIC_RELAXED);
}

static void atfork_register(void)
{
    pthread_atfork(NULL, NULL, atfork_child);
}

static size_t reserve_size(uint64_t heap_size)
{
    size_t r = RESERVE_DEFAULT;
    const char *e = getenv("MMK_HEAP_RESERVE");
    if (e && *e) {
        unsigned long long v = strtoull(e, NULL, 0);
        if (v >= HP_MIN_PAGES * HP_PAGE)
            r = (size_t)v;
    }
    if (heap_size * 4 > r)
        r = (size_t)heap_size * 4;
    return mmk__align_up(r, (size_t)1 << 21);
}

static int reserve(mmk_heap *h, uint64_t heap_size, uint64_t fixed_at)
{
    size_t r = reserve_size(heap_size);
    for (;;) {
        int fl = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
        void *want = NULL;
        if (fixed_at) {
            fl |= MAP_FIXED_NOREPLACE;
            want = (void *)(uintptr_t)fixed_at;
        }
        void *p = mmap(want, r, PROT_NONE, fl, -1, 0);
        if (p != MAP_FAILED) {
            if (fixed_at && p != want) { /* kernel without NOREPLACE: a hint only */
                munmap(p, r);
                return -EADDRINUSE;
            }
            h->base = p;
            h->reserve = r;
            return 0;
        }
        if (fixed_at)
            return errno == EEXIST ? -EADDRINUSE : -errno;
        if (errno != ENOMEM || r / 2 < heap_size || r <= ((size_t)1 << 30))
            return -ENOMEM;
        r /= 2; /* capped by the address space */
    }
}

static void heap_free(mmk_heap *h)
{
    if (!h)
        return;
    mmk__hp_dirty_fini(h);
    if (h->base)
        munmap(h->base, h->reserve);
    if (h->clean)
        munmap(h->clean, h->reserve);
    if (h->fd >= 0)
        close(h->fd);
    if (h->logfd >= 0)
        close(h->logfd);
    free(h->path);
    free(h->logpath);
    free(h->dirty);
    free(h->map_fresh);
    free(h->scratch);
    free(h->iov);
    free(h->orig);
    free(h->written);
    free(h->shadow_pg);
    free(h->shadow_buf);
    free(h);
}

MMK_API int mmk_heap_open(const char *path, unsigned flags, mmk_heap **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!path || !*path || (flags & ~(MMK_HEAP_CREATE | MMK_HEAP_RDONLY | MMK_HEAP_NOSYNC |
                                      MMK_HEAP_FIXED | MMK_HEAP_HUGE)) ||
        ((flags & MMK_HEAP_CREATE) && (flags & MMK_HEAP_RDONLY)))
        return -EINVAL;
    if (mmk__pagesz() != HP_PAGE)
        return MMK_EFORMAT; /* this build's format uses 4 KiB pages */
    mmk_heap *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->fd = h->logfd = h->pagemap_fd = h->uffd = h->self_pidfd = -1;
    h->wp_claim = -1;
    h->flags = flags;
    h->pid = getpid();
    pthread_once(&atfork_once, atfork_register);
    h->forks = __atomic_load_n(&mmk__hp_forks, __ATOMIC_RELAXED);
    h->log_limit = LOG_LIMIT_DEFAULT;
    const char *ll = getenv("MMK_HEAP_LOG_LIMIT");
    if (ll && *ll)
        h->log_limit = strtoull(ll, NULL, 0);
    size_t pl = strlen(path);
    h->path = strdup(path);
    h->logpath = malloc(pl + 5);
    h->orig = malloc(ORIG_PAGES * HP_PAGE);
    int rc = -ENOMEM;
    if (!h->path || !h->logpath || !h->orig)
        goto fail;
    memcpy(h->logpath, path, pl);
    memcpy(h->logpath + pl, "-log", 5);
    int ro = !!(flags & MMK_HEAP_RDONLY);
    h->fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC |
                           (flags & MMK_HEAP_CREATE ? O_CREAT : 0), 0600);
    if (h->fd < 0) {
        rc = -errno;
        goto fail;
    }
    h->logfd = open(h->logpath, (ro ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC, 0600);
    if (h->logfd < 0 && (!ro || errno != ENOENT)) {
        rc = -errno;
        goto fail;
    }
    struct stat st;
    if (fstat(h->fd, &st)) {
        rc = -errno;
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        goto fail;
    }
    int create = (flags & MMK_HEAP_CREATE) && !ro;
    if (st.st_size == 0 || (create && creation_interrupted(h, (uint64_t)st.st_size))) {
        if (!create) {
            rc = MMK_EFORMAT;
            goto fail;
        }
        rc = ofd_lock(h->fd, F_WRLCK, LOCK_WRITER, 1);
        if (rc)
            goto fail;
        /* Look again under the lock: another process may have just made it. */
        if (fstat(h->fd, &st))
            rc = -errno;
        else if (st.st_size == 0 || creation_interrupted(h, (uint64_t)st.st_size)) {
            rc = st.st_size ? IO->ftruncate(h->fd, 0) : 0;
            if (!rc)
                rc = reserve(h, HP_MIN_PAGES * HP_PAGE, 0);
            if (!rc)
                rc = create_new(h);
        }
        ofd_unlock(h->fd, LOCK_WRITER);
        if (rc)
            goto fail;
    }
    if (h->logfd >= 0) {
        if (fstat(h->logfd, &st)) {
            rc = -errno;
            goto fail;
        }
        h->log_end_alloc = (uint64_t)st.st_size;
    }

    /* Recovery: detect without the lock (cheap), recover under it. */
    rc = recover_locked(h, 0);
    if (rc == -EROFS)
        rc = recover_as_writer(h, ro);
    if (rc)
        goto fail;

    struct hp_header hd;
    uint64_t fsize;
    rc = read_file_header(h, &hd, &fsize);
    if (!rc)
        rc = mmk__hp_header_valid(&hd, fsize, NULL, 0);
    if (rc)
        goto fail;
    if (h->base) { /* reserved while creating */
        munmap(h->base, h->reserve);
        h->base = NULL;
    }
    rc = reserve(h, hd.heap_size, flags & MMK_HEAP_FIXED ? hd.map_addr : 0);
    if (rc)
        goto fail;
    h->hdr = (struct hp_header *)h->base;
    rc = map_file(h, hd.heap_size, 0);
    if (rc)
        goto fail;
    rc = mmk__hp_dirty_init(h);
    if (rc)
        goto fail;
    *out = h;
    return 0;
fail:
    heap_free(h);
    return rc;
}

static int drop_txn(mmk_heap *h, int collected);

MMK_API void mmk_heap_close(mmk_heap *h)
{
    if (!h)
        return;
    if (!hp_forked(h)) {
        if (h->in_txn)
            mmk_heap_abort(h);
        if (h->in_read)
            mmk_heap_read_end(h);
    }
    heap_free(h);
}

/* ------------------------------------------------------------ transactions */

static int usable(const mmk_heap *h)
{
    if (!h)
        return -EINVAL;
    if (hp_forked(h))
        return -ECHILD;
    if (h->broken)
        return h->broken;
    return 0;
}

static int protect_all(mmk_heap *h, int writable)
{
    return mprotect(h->base, h->mapped, PROT_READ | (writable ? PROT_WRITE : 0)) ? -errno : 0;
}

MMK_API int mmk_heap_begin(mmk_heap *h)
{
    int rc = usable(h);
    if (rc)
        return rc;
    if (h->flags & MMK_HEAP_RDONLY)
        return -EROFS;
    if (h->in_txn || h->in_read)
        return -EBUSY;
    /* Take turns: queue on the turn byte, then wait for the writer lock
     * holding it, so the writer that just committed cannot barge back in
     * ahead of one that was waiting. */
    struct flock turn = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = LOCK_TURN, .l_len = 1};
    struct flock wl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = LOCK_WRITER, .l_len = 1};
    if (fcntl(h->fd, F_OFD_GETLK, &turn) == 0 && turn.l_type == F_UNLCK &&
        fcntl(h->fd, F_OFD_SETLK, &wl) == 0) {
        /* nobody queued and the lock free: two calls instead of three */
    } else {
        rc = ofd_lock(h->fd, F_WRLCK, LOCK_TURN, 1);
        if (rc)
            return rc;
        rc = ofd_lock(h->fd, F_WRLCK, LOCK_WRITER, 1);
        ofd_unlock(h->fd, LOCK_TURN);
        if (rc)
            return rc;
    }
    /* A writer killed after its log sync left a commit to apply. */
    struct hp_header cur, *hd = &cur;
    uint64_t fsize;
    rc = snap_header(h, &cur, &fsize);
    if (rc)
        goto unlock;
    struct hp_loghdr lh;
    int log_ok = 1;
    if (hd->log_gen != h->log_gen || !h->log_gen) {
        /* another process started a log generation: take its word */
        log_ok = log_read_header(h, hd->heap_uuid, &lh);
        if (log_ok < 0) {
            rc = log_ok;
            goto unlock;
        }
        h->log_gen = log_ok ? lh.gen : 0;
        h->log_base = log_ok ? lh.base_commit : 0;
    } else
        lh = (struct hp_loghdr){.gen = h->log_gen, .base_commit = h->log_base};
    int need = 0;
    uint64_t off, expect;
    if (log_ok) {
        /* boot id: unchanged while this process lives; skip the compare */
        if (hd->commit_id < lh.base_commit)
            need = 2;
        else if (hd->log_gen == lh.gen || hd->commit_id == lh.base_commit) {
            off = hd->log_gen == lh.gen ? hd->log_off : HP_PAGE;
            expect = hd->commit_id + 1;
            struct hp_rec *m;
            need = rec_read(h, hd->heap_uuid, off, lh.gen, expect, &m, NULL);
            free(m);
            if (need < 0) {
                rc = need;
                goto unlock;
            }
        } else
            need = 2;
    }
    if (need || !log_ok || hd->applying || hd->crc != mmk__hp_header_crc(hd)) {
        rc = recover_locked(h, 1);
        if (!rc)
            rc = snap_header(h, &cur, &fsize);
        if (rc)
            goto unlock;
    }
    if (!h->log_gen) {
        h->log_gen = hd->log_gen; /* a new generation above any the heap saw */
        rc = checkpoint(h, hd->commit_id);
        if (rc)
            goto unlock;
    }
    rc = catch_up(h, 0, fsize);
    if (rc)
        goto unlock;
    h->txn_start_size = hd->heap_size;
    mmk__hp_dirty_resume(h);
    mmk__hp_dirty_settle(h, hd->commit_id);
    rc = mmk__hp_dirty_begin(h);
    if (!rc && hp_all_rw(h))
        rc = protect_all(h, 1);
    if (rc) {
        protect_all(h, 0);
        goto unlock;
    }
    h->in_txn = 1;
    h->txn_serial++;
    return 0;
unlock:
    ofd_unlock(h->fd, LOCK_WRITER);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void sort_dedup(mmk_heap *h)
{
    qsort(h->dirty, h->ndirty, sizeof *h->dirty, cmp_u64);
    size_t k = 0;
    for (size_t i = 0; i < h->ndirty; i++)
        if (!k || h->dirty[i] != h->dirty[k - 1])
            h->dirty[k++] = h->dirty[i];
    h->ndirty = k;
}

static int in_sorted(const uint64_t *a, size_t n, uint64_t pg);
static int is_csum_page(uint64_t pg);

/* Throw the private copies away: the mapping reads the file again. */
static void discard_pages(mmk_heap *h, int collected)
{
    if (!collected) {
        madvise(h->base, h->mapped, MADV_DONTNEED);
        return;
    }
    for (size_t i = 0; i < h->ndirty;) {
        size_t j = i + 1;
        while (j < h->ndirty && h->dirty[j] == h->dirty[j - 1] + 1)
            j++;
        if (h->dirty[i] < (h->mapped >> HP_SHIFT))
            madvise(hp_page(h, h->dirty[i]), (j - i) << HP_SHIFT, MADV_DONTNEED);
        i = j;
    }
}

/* Read-only again. With write-protect tracking only the pages in h->dirty
 * were made writable: one mprotect per run of them (the kernel merges the
 * mapping back), never a walk over the whole mapping's page tables. */
static int protect_back(mmk_heap *h, int collected)
{
    if (!collected || hp_all_rw(h) || h->wp_unlisted) {
        uint64_t t0 = mmk__hp_now_ns();
        int rc = protect_all(h, 0);
        if (collected)
            mmk__hp_dirty_bulk_done(h, mmk__hp_now_ns() - t0);
        return rc;
    }
    int rc = 0;
    uint64_t mp = h->mapped >> HP_SHIFT;
    for (size_t i = 0; i < h->ndirty;) {
        size_t j = i + 1;
        while (j < h->ndirty && h->dirty[j] == h->dirty[j - 1] + 1)
            j++;
        if (h->dirty[i] < mp) {
            uint64_t end = h->dirty[j - 1] + 1 < mp ? h->dirty[j - 1] + 1 : mp;
            if (mprotect(hp_page(h, h->dirty[i]), (end - h->dirty[i]) << HP_SHIFT, PROT_READ))
                rc = -errno;
        }
        i = j;
    }
    return rc ? protect_all(h, 0) : 0;
}

/* End the transaction without committing (abort, or a failed commit). */
static int drop_txn(mmk_heap *h, int collected)
{
    int rc = protect_back(h, collected);
    discard_pages(h, collected);
    mmk__hp_dirty_end(h);
    h->in_txn = 0;
    ofd_unlock(h->fd, LOCK_WRITER);
    return rc;
}

/* End a committed transaction. With kept copies, the pages the transaction
 * wrote (h->written) stay as they are, equal to the file now; the header
 * and checksum pages the commit stored into are dropped all the same, so
 * that the header this handle maps is the file's (it is how a commit by
 * another process is noticed). */
static int end_committed(mmk_heap *h)
{
    int rc = protect_back(h, 1);
    int costly = mmk__hp_dirty_walk_costly(h, h->nwritten);
    if (costly && !h->keep) {
        /* every page this handle maps goes: see there */
        madvise(h->base, h->mapped, MADV_DONTNEED);
        h->nkept = 0;
    } else if (!h->keep) {
        discard_pages(h, 1);
    } else {
        size_t nk = 0, nd = 0;
        for (size_t i = 0; i < h->nwritten; i++)
            if (h->written[i] != 0 && !is_csum_page(h->written[i]))
                h->written[nk++] = h->written[i];
        for (size_t i = 0; i < h->ndirty; i++)
            if (in_sorted(h->written, nk, h->dirty[i]) < 0)
                h->dirty[nd++] = h->dirty[i];
        h->ndirty = nd;
        discard_pages(h, 1);
        /* A costly walk: the pages only read go, the kept copies (what
         * transactions write again) stay. Dropping the copies too made every
         * kept page a refault and a copy-on-write again. */
        mmk__hp_dirty_keep(h, h->written, nk, costly);
        h->kept_commit = h->hdr->commit_id;
    }
    mmk__hp_dirty_end(h);
    h->in_txn = 0;
    ofd_unlock(h->fd, LOCK_WRITER);
    return rc;
}

MMK_API int mmk_heap_abort(mmk_heap *h)
{
    if (!h)
        return -EINVAL;
    if (hp_forked(h))
        return -ECHILD;
    if (!h->in_txn)
        return -EINVAL;
    int rc = mmk__hp_dirty_collect(h);
    if (!rc)
        h->prev_written = h->ndirty;
    return drop_txn(h, rc == 0) ? -EIO : 0;
}

static int ensure_cap(mmk_heap *h, size_t n)
{
    if (n <= h->cap_dirty)
        return 0;
    size_t c = h->cap_dirty ? h->cap_dirty : 256;
    while (c < n)
        c *= 2;
    uint64_t *d = realloc(h->dirty, c * sizeof *d);
    if (!d)
        return -ENOMEM;
    h->dirty = d;
    h->cap_dirty = c;
    return 0;
}

int mmk__hp_dirty_add(mmk_heap *h, uint64_t pg)
{
    int rc = ensure_cap(h, h->ndirty + 1);
    if (rc)
        return rc;
    h->dirty[h->ndirty++] = pg;
    return 0;
}

static int is_csum_page(uint64_t pg)
{
    uint64_t m = hp_meta_start(hp_group(pg));
    return pg >= m && pg < m + HP_NCSUM;
}

/* Extend the log with zeros so record writes overwrite allocated blocks
 * (an fdatasync then has no size or extent change to journal). */
static int log_reserve(mmk_heap *h, uint64_t end)
{
    /* Another writer (a process or another handle) may have extended or
     * truncated the log since this handle last looked: trust the file, not a
     * cached size, or the zero fill below would erase its records. The caller
     * holds the writer lock, so the size cannot change under us. */
    int rs = mmk__os_file_size(h->logfd, &h->log_end_alloc);
    if (rs)
        return rs;
    if (end <= h->log_end_alloc)
        return 0;
    uint64_t to = (end + LOG_CHUNK - 1) / LOG_CHUNK * LOG_CHUNK;
    static const unsigned char zero[1 << 16];
    for (uint64_t o = h->log_end_alloc; o < to; o += sizeof zero) {
        ssize_t w = wr(h->logfd, zero, sizeof zero, o);
        if (w < 0)
            return (int)w;
    }
    h->log_end_alloc = to;
    return 0;
}

/* Grow a page-number array to hold n. */
static int grow_u64(uint64_t **a, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < n)
        c *= 2;
    uint64_t *d = realloc(*a, c * sizeof *d);
    if (!d)
        return -ENOMEM;
    *a = d;
    *cap = c;
    return 0;
}

static int in_sorted(const uint64_t *a, size_t n, uint64_t pg)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (a[mid] == pg)
            return (int)mid;
        if (a[mid] < pg)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Where the commit reads and stores page pg: its shadow copy, or the
 * mapping (a page the transaction wrote, or any page when all-writable). */
static unsigned char *commit_page(const mmk_heap *h, uint64_t pg)
{
    int i = h->nshadow ? in_sorted(h->shadow_pg, h->nshadow, pg) : -1;
    return i >= 0 ? h->shadow_buf + ((size_t)i << (HP_SHIFT + 1)) : (unsigned char *)hp_page(h, pg);
}

/* The file's bytes of a shadowed page, or NULL. */
static const unsigned char *shadow_orig(const mmk_heap *h, uint64_t pg)
{
    int i = h->nshadow ? in_sorted(h->shadow_pg, h->nshadow, pg) : -1;
    return i >= 0 ? h->shadow_buf + ((size_t)i << (HP_SHIFT + 1)) + HP_PAGE : NULL;
}

static uint32_t *commit_csum_slot(const mmk_heap *h, uint64_t pg)
{
    return (uint32_t *)commit_page(h, hp_csum_page(pg)) + (pg % 1024);
}

/* With write-protect tracking, metadata pages the transaction did not write
 * are read-only in the mapping and still show the file (page cache): build
 * them in copies instead of making them writable. That saves, per page, an
 * mprotect splitting the mapping, a copy on write, the mprotect merging it
 * back and the MADV_DONTNEED; once the commit pwrites them, the mapping
 * shows the new contents through the page cache. */
static int make_shadows(mmk_heap *h)
{
    h->nshadow = 0;
    if (hp_all_rw(h))
        return 0;
    size_t ns = 0;
    for (size_t i = 0; i < h->ndirty; i++) {
        uint64_t p = h->dirty[i];
        if ((p == 0 || is_csum_page(p)) && in_sorted(h->written, h->nwritten, p) < 0)
            ns++;
    }
    if (!ns)
        return 0;
    size_t cap = h->cap_shadow;
    int rc = grow_u64(&h->shadow_pg, &h->cap_shadow, ns);
    if (rc)
        return rc;
    if (cap != h->cap_shadow || !h->shadow_buf) {
        unsigned char *buf = realloc(h->shadow_buf, h->cap_shadow << (HP_SHIFT + 1));
        if (!buf)
            return -ENOMEM;
        h->shadow_buf = buf;
    }
    /* Two pages each: the copy the commit changes, and the file's bytes
     * (the delta's and mark_applying's reference, without a pread). */
    for (size_t i = 0; i < h->ndirty; i++) {
        uint64_t p = h->dirty[i];
        if ((p == 0 || is_csum_page(p)) && in_sorted(h->written, h->nwritten, p) < 0) {
            unsigned char *b = h->shadow_buf + (h->nshadow << (HP_SHIFT + 1));
            memcpy(b, hp_page(h, p), HP_PAGE);
            memcpy(b + HP_PAGE, b, HP_PAGE);
            h->shadow_pg[h->nshadow++] = p;
        }
    }
    return 0;
}

/* Before the transaction ends: shadowed pages were never made writable nor
 * copied, so protect_back and discard_pages must leave them alone. */
static void drop_shadows(mmk_heap *h)
{
    if (!h->nshadow)
        return;
    size_t k = 0;
    for (size_t i = 0; i < h->ndirty; i++)
        if (in_sorted(h->shadow_pg, h->nshadow, h->dirty[i]) < 0)
            h->dirty[k++] = h->dirty[i];
    h->ndirty = k;
    h->nshadow = 0;
}

/* The record entry of page dirty[q] from its changed bytes [lo, hi) (as
 * mmk__diff_guarded gives them): nearly all of it logs the whole page. A
 * data page's checksum (data = 1) goes into its table slot here; a checksum
 * page's slot was filled bottom-up before, except a group's checksum page 0,
 * which holds its own entry. */
static void set_delta(mmk_heap *h, struct hp_ent *e, size_t q, const size_t rg[2], int data,
                      uint32_t z)
{
    size_t lo = rg[0], hi = rg[1];
    if (hi - lo > HP_PAGE - 512)
        lo = 0, hi = HP_PAGE;
    uint64_t pg = h->dirty[q];
    const unsigned char *a = commit_page(h, pg);
    e[q] = (struct hp_ent){.page = pg, .off = (uint32_t)lo, .len = (uint32_t)(hi - lo)};
    int self = pg == hp_meta_start(hp_group(pg));
    uint32_t full = data ? mmk__crc32c(0, a, HP_PAGE) : self ? 0 : *commit_csum_slot(h, pg) ^ z;
    if (data)
        *commit_csum_slot(h, pg) = full ^ z;
    e[q].crc = e[q].len == HP_PAGE && !self ? full : mmk__crc32c(0, a + lo, e[q].len);
}

/* Entries for dirty[i] (and, when it is read from the file, its neighbours
 * of the same kind up to *j on return): compared with the file's bytes,
 * from the page's shadow, else the clean view (a guarded compare: no copy,
 * no system call), else one pread for a run of neighbours. */
static int page_deltas(mmk_heap *h, struct hp_ent *e, size_t i, size_t *j, int data, uint32_t z)
{
    size_t n = h->ndirty, rg[2];
    uint64_t p = h->dirty[i];
    const unsigned char *so = shadow_orig(h, p);
    *j = i + 1;
    if (so || (h->clean && (p + 1) << HP_SHIFT <= h->clean_mapped)) {
        if (mmk__diff_guarded(commit_page(h, p), so ? so : h->clean + (p << HP_SHIFT), HP_PAGE,
                              rg) == 0) {
            set_delta(h, e, i, rg, data, z);
            return 0;
        }
        if (so) /* our own buffer cannot fault */
            return -EFAULT;
    }
    size_t k = i + 1;
    while (k < n && k - i < ORIG_PAGES && h->dirty[k] == h->dirty[k - 1] + 1 &&
           !!is_csum_page(h->dirty[k]) == !data && !shadow_orig(h, h->dirty[k]))
        k++;
    ssize_t got = IO->pread(h->fd, h->orig, (k - i) << HP_SHIFT, p << HP_SHIFT);
    if (got < 0)
        return (int)got;
    if ((size_t)got < ((k - i) << HP_SHIFT)) /* beyond the end: zeros */
        memset(h->orig + got, 0, ((k - i) << HP_SHIFT) - (size_t)got);
    for (size_t q = i; q < k; q++) {
        if (mmk__diff_guarded(commit_page(h, h->dirty[q]), h->orig + ((q - i) << HP_SHIFT),
                              HP_PAGE, rg))
            return -EFAULT;
        set_delta(h, e, q, rg, data, z);
    }
    *j = k;
    return 0;
}

MMK_API int mmk_heap_commit(mmk_heap *h)
{
    int rc = usable(h);
    if (rc)
        return rc;
    if (!h->in_txn)
        return -EINVAL;
    struct hp_header *hd, cur;
    h->nshadow = 0;
    rc = snap_header(h, &cur, NULL); /* the file may have been cut short meanwhile */
    if (!rc)
        rc = mmk__hp_dirty_collect(h);
    if (rc) {
        drop_txn(h, 0);
        return rc;
    }
    if (h->ndirty == 0) { /* nothing written: nothing to commit */
        h->prev_written = 0;
        drop_txn(h, 1);
        return 0;
    }
    /* Pages beyond the heap (written after a failed growth) are not ours. */
    uint64_t npg = hp_pages(h);
    size_t k = 0;
    for (size_t i = 0; i < h->ndirty; i++)
        if (h->dirty[i] < npg)
            h->dirty[k++] = h->dirty[i];
    if (k < h->ndirty)
        h->wp_unlisted = 1; /* writable pages left out of the list */
    h->ndirty = k;
    sort_dedup(h);
    /* Remember which pages the transaction wrote (writable in the mapping). */
    size_t ndata = h->ndirty;
    h->prev_written = ndata;
    rc = grow_u64(&h->written, &h->cap_written, ndata);
    if (!rc) {
        memcpy(h->written, h->dirty, ndata * sizeof *h->dirty);
        h->nwritten = ndata;
    }
    uint32_t z = mmk__hp_zero_crc();
    if (!rc)
        rc = mmk__hp_dirty_add(h, 0);
    for (size_t i = 0; !rc && i < ndata; i++) {
        uint64_t p = h->dirty[i];
        if (p == 0 || is_csum_page(p))
            continue;
        rc = mmk__hp_dirty_add(h, hp_csum_page(p));
    }
    if (!rc) {
        sort_dedup(h);
        /* Second-level: checksum pages >= 1 of a group are covered by its
         * checksum page 0. */
        size_t n0 = h->ndirty;
        for (size_t i = 0; !rc && i < n0; i++)
            if (is_csum_page(h->dirty[i]))
                rc = mmk__hp_dirty_add(h, hp_meta_start(hp_group(h->dirty[i])));
        sort_dedup(h);
    }
    if (!rc)
        rc = make_shadows(h);
    size_t n = h->ndirty;
    size_t meta_len = sizeof(struct hp_rec) + n * sizeof(struct hp_ent);
    if (!rc && h->scratch_cap < meta_len) {
        void *sc = realloc(h->scratch, meta_len);
        if (!sc)
            rc = -ENOMEM;
        else {
            h->scratch = sc;
            h->scratch_cap = meta_len;
        }
    }
    if (!rc && h->iov_cap < n + 3) {
        struct iovec *v = realloc(h->iov, (n + 3) * sizeof *v);
        if (!v)
            rc = -ENOMEM;
        else {
            h->iov = v;
            h->iov_cap = n + 3;
        }
    }
    if (rc) {
        drop_shadows(h);
        drop_txn(h, 1);
        return rc;
    }
    hd = (struct hp_header *)commit_page(h, 0);
    /* The record logs only the changed byte range of each page (compared
     * with the file, which holds the last commit): a one-word change logs
     * a few bytes, so a small commit is one disk block. Checksums go
     * bottom-up: data pages, then checksum pages >= 1, then each group's
     * checksum page 0 (which holds its own entry); header last. A data
     * page is compared and checksummed in one go, while it is in cache. */
    struct hp_rec *r = h->scratch;
    struct hp_ent *e = (struct hp_ent *)(r + 1);
    e[0] = (struct hp_ent){.page = 0, .off = 0, .len = sizeof *hd};
    for (size_t i = 1; i < n && !rc;) {
        if (is_csum_page(h->dirty[i])) {
            i++;
            continue;
        }
        size_t j = i + 1;
        rc = page_deltas(h, e, i, &j, 1, z);
        i = j;
    }
    for (int pass = 1; pass < 3 && !rc; pass++) {
        for (size_t i = 0; i < n; i++) {
            uint64_t p = h->dirty[i];
            if (p == 0 || !is_csum_page(p))
                continue;
            int c0 = p == hp_meta_start(hp_group(p));
            if ((pass == 1 && c0) || (pass == 2 && !c0))
                continue;
            uint32_t *slot = commit_csum_slot(h, p);
            if (pass == 2)
                *slot = 0;
            *slot = mmk__crc32c(0, commit_page(h, p), HP_PAGE) ^ z;
        }
    }
    for (size_t i = 1; i < n && !rc; i++) {
        if (!is_csum_page(h->dirty[i]))
            continue;
        size_t j = i + 1;
        rc = page_deltas(h, e, i, &j, 0, z);
        i = j - 1;
    }
    /* the changed bytes, in page order; whole neighbouring pages in one vector */
    struct iovec *vec = h->iov;
    int cnt = 2; /* [0] meta block, [1] the header's bytes */
    uint64_t dlen = sizeof *hd;
    for (size_t q = 1; q < n && !rc; q++) {
        dlen += e[q].len;
        if (!e[q].len)
            continue;
        const unsigned char *a = commit_page(h, h->dirty[q]) + e[q].off;
        struct iovec *last = &vec[cnt - 1];
        if (cnt > 2 && (const unsigned char *)last->iov_base + last->iov_len == a)
            last->iov_len += e[q].len;
        else
            vec[cnt++] = (struct iovec){(void *)a, e[q].len};
    }
    if (rc) {
        drop_shadows(h);
        drop_txn(h, 1);
        return rc;
    }
    uint64_t off = hd->log_gen == h->log_gen && hd->log_off >= HP_PAGE ? hd->log_off : HP_PAGE;
    uint64_t len = mmk__align_up(meta_len + dlen, REC_ALIGN);
    hd->commit_id++;
    hd->applying = 0;
    hd->log_gen = h->log_gen;
    hd->log_off = off + len;
    hd->crc = mmk__hp_header_crc(hd);
    e[0].crc = mmk__crc32c(0, hd, sizeof *hd);
    *r = (struct hp_rec){.magic = REC_MAGIC, .npages = (uint32_t)n, .commit_id = hd->commit_id,
                         .gen = h->log_gen, .heap_size = hd->heap_size, .len = len,
                         .heap_uuid = hd->heap_uuid, .meta_len = (uint32_t)meta_len};
    r->crc = mmk__crc32c(0, h->scratch, meta_len);
    vec[0] = (struct iovec){h->scratch, meta_len};
    vec[1] = (struct iovec){hd, sizeof *hd};
    static const unsigned char pad[REC_ALIGN];
    if (len > meta_len + dlen)
        vec[cnt++] = (struct iovec){(void *)pad, len - meta_len - dlen};

    h->last_pages = n;
    h->last_log_bytes = len;
    /* 1. the record, 2. its sync: the commit is durable from here. */
    rc = log_reserve(h, off + len);
    if (!rc) {
        ssize_t w = wrv(h->logfd, vec, cnt, off);
        if (w < 0)
            rc = (int)w;
    }
    if (!rc && !(h->flags & MMK_HEAP_NOSYNC))
        rc = IO->fdatasync(h->logfd);
    if (rc) {
        /* Not durable, and after a failed sync nothing can be assumed about
         * what reached the disk: erase the record's header durably so no
         * recovery ever replays it, then undo. If even that fails, this
         * handle stops (-EIO). */
        static const unsigned char zero[sizeof(struct hp_rec)];
        if (wr(h->logfd, zero, sizeof zero, off) < 0 ||
            (!(h->flags & MMK_HEAP_NOSYNC) && IO->fdatasync(h->logfd)))
            h->broken = -EIO;
        drop_shadows(h);
        drop_txn(h, 1);
        return rc;
    }
    /* 3. apply to the file while readers are held off. Only each page's
     * changed range is written (the rest already equals the file: that was
     * the delta's reference), so a one-slot change to a random page copies
     * 64 bytes into the page cache, not 4 KiB. Whole pages that are
     * neighbours in the file and in memory go in one pwrite. */
    rc = apply_lock(h);
    if (!rc) {
        rc = mark_applying(h, hd->commit_id, (const struct hp_header *)shadow_orig(h, 0));
        for (size_t i = 0; i < n && !rc;) {
            if (h->dirty[i] == 0 || !e[i].len) { /* the header goes last */
                i++;
                continue;
            }
            const unsigned char *src = commit_page(h, h->dirty[i]) + e[i].off;
            size_t run = e[i].len, j = i + 1;
            while (j < n && e[j - 1].off + e[j - 1].len == HP_PAGE && e[j].off == 0 &&
                   e[j].len && h->dirty[j] == h->dirty[j - 1] + 1 &&
                   commit_page(h, h->dirty[j]) == src + run) {
                run += e[j].len;
                j++;
            }
            ssize_t w = wr(h->fd, src, run, (h->dirty[i] << HP_SHIFT) + e[i].off);
            if (w < 0)
                rc = (int)w;
            i = j;
        }
        if (!rc) {
            ssize_t w = wr(h->fd, hd, HP_PAGE, 0);
            if (w < 0)
                rc = (int)w;
        }
        apply_unlock(h);
    }
    drop_shadows(h);
    if (rc) {
        h->broken = -EIO; /* durable in the log; the next open applies it */
        drop_txn(h, 1);
        return rc;
    }
    if (h->hdr->log_off > h->log_limit)
        checkpoint(h, h->hdr->commit_id); /* a failure leaves the log longer: harmless */
    end_committed(h);
    return 0;
}

/* ------------------------------------------------------------ accessors */

MMK_API void *mmk_heap_ptr(const mmk_heap *h, mmk_ref ref)
{
    if (!h || !ref || ref >= h->mapped)
        return NULL;
    return h->base + ref;
}

MMK_API mmk_ref mmk_heap_ref(const mmk_heap *h, const void *ptr)
{
    if (!h || !ptr)
        return 0;
    uintptr_t p = (uintptr_t)ptr, b = (uintptr_t)h->base;
    if (p <= b || p >= b + h->mapped)
        return 0;
    return p - b;
}

MMK_API mmk_ref mmk_heap_root(const mmk_heap *h)
{
    return h ? __atomic_load_n(&h->hdr->root, __ATOMIC_ACQUIRE) : 0;
}

MMK_API int mmk_heap_set_root(mmk_heap *h, mmk_ref ref)
{
    if (!h || !h->in_txn || ref >= h->hdr->heap_size)
        return -EINVAL;
    h->hdr->root = ref;
    return 0;
}

MMK_API uint64_t mmk_heap_schema(const mmk_heap *h)
{
    return h ? h->hdr->schema : 0;
}

MMK_API int mmk_heap_set_schema(mmk_heap *h, uint64_t version)
{
    if (!h || !h->in_txn)
        return -EINVAL;
    h->hdr->schema = version;
    return 0;
}

MMK_API int mmk_heap_read_begin(mmk_heap *h)
{
    int rc = usable(h);
    if (rc)
        return rc;
    if (h->in_txn || h->in_read)
        return -EBUSY;
    rc = view_lock(h);
    if (rc)
        return rc;
    struct hp_header cur;
    uint64_t fsize;
    rc = snap_header(h, &cur, &fsize);
    if (rc) {
        ofd_unlock(h->fd, LOCK_APPLY);
        return rc;
    }
    if (cur.applying || cur.crc != mmk__hp_header_crc(&cur)) {
        /* A writer died while applying: the file is half one commit, half
         * the next. Recover under the writer lock (a read-only handle waits
         * for a writer to do it). */
        ofd_unlock(h->fd, LOCK_APPLY);
        rc = recover_as_writer(h, !!(h->flags & MMK_HEAP_RDONLY));
        if (rc)
            return rc;
        rc = view_lock(h);
        if (rc)
            return rc;
        fsize = UINT64_MAX; /* recovery may have grown it */
    }
    rc = catch_up(h, 0, fsize);
    if (rc) {
        ofd_unlock(h->fd, LOCK_APPLY);
        return rc;
    }
    mmk__hp_dirty_settle(h, h->hdr->commit_id);
    if (!(h->flags & MMK_HEAP_RDONLY))
        mmk__hp_dirty_pause(h);
    h->in_read = 1;
    return 0;
}

MMK_API void mmk_heap_read_end(mmk_heap *h)
{
    if (!h || !h->in_read || hp_forked(h))
        return;
    h->in_read = 0;
    ofd_unlock(h->fd, LOCK_APPLY);
}

MMK_API int mmk_heap_check(mmk_heap *h)
{
    return mmk_heap_check_report(h, NULL, 0);
}

MMK_API int mmk_heap_check_report(mmk_heap *h, char *msg, size_t len)
{
    int rc = usable(h);
    if (rc)
        return rc;
    if (msg && len)
        msg[0] = 0;
    /* Hold off appliers so the file is one commit throughout; inside our
     * own transaction the writer lock already does. */
    if (!h->in_txn && !h->in_read) {
        rc = view_lock(h);
        if (rc)
            return rc;
    }
    rc = mmk__hp_check(h, msg, len);
    if (!h->in_txn && !h->in_read)
        ofd_unlock(h->fd, LOCK_APPLY);
    return rc;
}

MMK_API int mmk_heap_stats(mmk_heap *h, struct mmk_heap_stats *out)
{
    if (!h || !out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    int rc = mmk__hp_stats(h, out);
    uint64_t off = h->hdr->log_gen == h->log_gen ? h->hdr->log_off : HP_PAGE;
    out->log_bytes = off > HP_PAGE ? off - HP_PAGE : 0;
    out->reserved = h->reserve;
    out->last_pages = h->last_pages;
    out->last_log_bytes = h->last_log_bytes;
    out->dirty_method = mmk__hp_dirty_name(h);
    return rc;
}
