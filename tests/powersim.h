/* A power-loss simulator for the persistent heap, shared by
 * test_powerloss.c and test_heap_iofault.c.
 *
 * It installs hooks into the heap's I/O layer (src/heap_io.h) and models,
 * for each of the two files of one heap (the heap file and "<path>-log"),
 * what a disk may hold after a power cut:
 *   - `disk`: the bytes as of the last completed fdatasync of that file;
 *   - `ops`: every write and size change made since, in order.
 * fdatasync of one file orders nothing on the other: each file has its own
 * list. The directory entries count as durable once fsync_dir completed.
 *
 * An image is built from `disk` plus a chosen subset of `ops`, applied in
 * their original order, each write possibly torn at 512-byte or 4 KiB file
 * offsets (a surviving later write with a lost earlier one models
 * reordering by the device or the page cache's writeback). The real files
 * keep the page cache's view: a process crash leaves exactly them.
 *
 * A failed fdatasync (injected) follows Linux: the pending writes are marked
 * clean whether or not they reached the disk, so each pending chunk is
 * decided once, at random, and is never written again by a later sync.
 *
 * The real fdatasync is never called while recording: the model is the
 * disk. Everything runs in one thread; the hooks are global. */
#ifndef MMK_POWERSIM_H
#define MMK_POWERSIM_H

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "heap_io.h"
#include "testutil.h"

enum { PS_HEAP = 0, PS_LOG = 1, PS_NFILE = 2 };
enum { PS_WRITE = 1, PS_TRUNC = 2 };

struct ps_op {
    int kind;
    uint64_t off, len; /* PS_TRUNC: len is the new size */
    unsigned char *data;
    uint64_t seq;      /* global order across files */
};

struct ps_file {
    char path[PATH_MAX];
    unsigned char *disk;
    uint64_t disk_size, disk_cap;
    int dir_durable;   /* the directory entry survives a power cut */
    struct ps_op *ops;
    size_t nops, cap;
    uint64_t pending_bytes;
};

/* What survives: the pending ops chosen by mode, each torn at `tear`
 * (0 = whole) with chunk survival probability q. */
enum { PS_NONE, PS_ALL, PS_SUBSET, PS_PREFIX };
struct ps_plan {
    int mode;
    double p;       /* PS_SUBSET: survival probability of an op */
    unsigned tear;  /* 0, 512 or 4096 */
    double q;       /* survival probability of a torn chunk */
    uint64_t prefix; /* PS_PREFIX: ops with seq < prefix survive */
    int lose_dir;   /* a file whose directory entry is not durable may vanish */
};

/* An image is the durable bytes (ps_file.disk, cut at `cut`: bytes from
 * there on read as zero) with some pages replaced: the pages the surviving
 * pending writes touched. Pages are 4 KiB. */
struct ps_image {
    uint64_t size[PS_NFILE], cut[PS_NFILE];
    int exists[PS_NFILE];
    int32_t *idx[PS_NFILE];        /* page -> slot in pool, -1 none */
    uint64_t idx_n[PS_NFILE];
    uint64_t *list[PS_NFILE];      /* pages with a slot */
    size_t nlist[PS_NFILE], caplist[PS_NFILE];
    unsigned char *pool[PS_NFILE];
    uint64_t pool_cap[PS_NFILE];   /* bytes */
};

/* Injected faults, consumed by the hooks. A countdown of 1 fails the next
 * matching call; 0 = off. */
struct ps_faults {
    int file;            /* which file's calls count: PS_HEAP, PS_LOG, -1 both */
    long write_in;       /* fail the Nth write (pwrite/pwritev) */
    int write_err;       /* -EIO, -ENOSPC */
    long short_in;       /* the Nth write writes half and returns the short count */
    long sync_in;        /* fail the Nth fdatasync with -EIO */
    long read_in;        /* fail the Nth pread with -EIO */
    long read_every;     /* with read_in: keep failing every read after it */
    long trunc_in;       /* fail the Nth ftruncate with -ENOSPC (growth) */
    int sync_outcome;    /* failed sync: 0 random per chunk, 1 all landed, 2 none landed */
};

struct ps {
    struct ps_file f[PS_NFILE];
    int recording;
    uint64_t seq;
    uint64_t rng;
    uint8_t boot[16];
    uint64_t boot_no;
    /* called just before a sync of file `file` completes (file = -1: the
     * directory), and after every recorded write */
    void (*at_sync)(int file);
    void (*at_write)(int file);
    struct ps_faults fault;
    long img_fail_in;    /* fail the Nth write to an image file (a crash inside recovery) */
    int img_fail_now;
    /* counters */
    uint64_t nwrites, nsyncs, nfailed_syncs, ndirsyncs;
    uint64_t syncs_ok[PS_NFILE];
    /* the last injected fault: file, and successful log syncs before it */
    int hit, hit_file;
    uint64_t hit_log_syncs;
    uint64_t *touched;   /* bitmap of heap-file pages written since ps_take_touched */
    uint64_t touched_bits;
};

static struct ps PS;

/* The image files last written (ps_write_image). `stale` marks the pages
 * that may differ from the durable bytes of the recorded file: pages the
 * last image replaced, pages a recovery wrote, pages a sync changed in the
 * model. The next image rewrites only those and its own replaced pages. */
struct ps_target {
    char base[PATH_MAX];
    char path[PS_NFILE][PATH_MAX + 8];
    int exists[PS_NFILE];
    uint64_t *stale[PS_NFILE];
    uint64_t stale_bits[PS_NFILE];
};
static struct ps_target PT;

static inline void ps_set_boot(uint64_t no)
{
    PS.boot_no = no;
    memset(PS.boot, 0, sizeof PS.boot);
    memcpy(PS.boot, &no, sizeof no);
    PS.boot[15] = 0x5a;
}

/* 0/1: a recorded file; 2/3: an image file; -1: other. */
static inline int ps_fd_kind(int fd)
{
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return -1;
    target[n] = 0;
    for (int i = 0; i < PS_NFILE; i++) {
        if (!strcmp(target, PS.f[i].path))
            return i;
        if (PT.base[0] && !strcmp(target, PT.path[i]))
            return PS_NFILE + i;
    }
    return -1;
}

static inline void ps_mark_stale(int i, uint64_t off, uint64_t len)
{
    if (!len)
        return;
    uint64_t last = (off + len - 1) >> 12;
    if (last >= PT.stale_bits[i]) {
        uint64_t nb = (last + 1) * 2 + 4096;
        PT.stale[i] = realloc(PT.stale[i], nb / 8 + 8);
        if (!PT.stale[i])
            exit(1);
        memset((char *)PT.stale[i] + PT.stale_bits[i] / 8, 0, nb / 8 + 8 - PT.stale_bits[i] / 8);
        PT.stale_bits[i] = nb;
    }
    for (uint64_t pg = off >> 12; pg <= last; pg++)
        PT.stale[i][pg / 64] |= 1ull << (pg % 64);
}

/* The recorded file fd belongs to (0/1), or -1 (an image write is noted). */
static inline int ps_file_of_w(int fd, uint64_t off, uint64_t len)
{
    int k = ps_fd_kind(fd);
    if (k >= PS_NFILE) {
        ps_mark_stale(k - PS_NFILE, off, len);
        if (PS.img_fail_in > 0 && --PS.img_fail_in == 0)
            PS.img_fail_now = 1;
        return -1;
    }
    return PS.recording ? k : -1;
}

static inline int ps_file_of(int fd)
{
    int k = PS.recording ? ps_fd_kind(fd) : -1;
    return k < PS_NFILE ? k : -1;
}

static inline void *ps_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "powersim: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return q;
}

static inline void ps_reserve(unsigned char **buf, uint64_t *cap, uint64_t need)
{
    if (need <= *cap)
        return;
    uint64_t c = *cap ? *cap : (1 << 20);
    while (c < need)
        c *= 2;
    *buf = ps_xrealloc(*buf, c);
    memset(*buf + *cap, 0, c - *cap);
    *cap = c;
}

/* Apply one op (or one chunk [lo, hi) of a write) to a byte image. */
static inline void ps_apply(unsigned char **buf, uint64_t *size, uint64_t *cap, const struct ps_op *o,
                     uint64_t lo, uint64_t hi)
{
    if (o->kind == PS_TRUNC) {
        ps_reserve(buf, cap, o->len);
        if (o->len > *size)
            memset(*buf + *size, 0, o->len - *size);
        *size = o->len;
        return;
    }
    ps_reserve(buf, cap, hi);
    if (hi > *size) {
        /* bytes between the old end and the write read as zeros */
        if (lo > *size)
            memset(*buf + *size, 0, lo - *size);
        *size = hi;
    }
    memcpy(*buf + lo, o->data + (lo - o->off), hi - lo);
}

static inline void ps_record(int i, int kind, uint64_t off, const void *data, uint64_t len)
{
    struct ps_file *f = &PS.f[i];
    if (f->nops == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 256;
        f->ops = ps_xrealloc(f->ops, f->cap * sizeof *f->ops);
    }
    struct ps_op *o = &f->ops[f->nops++];
    *o = (struct ps_op){.kind = kind, .off = off, .len = len, .seq = PS.seq++};
    if (kind == PS_WRITE) {
        o->data = ps_xrealloc(NULL, len);
        memcpy(o->data, data, len);
        f->pending_bytes += len;
        if (i == PS_HEAP) {
            for (uint64_t pg = off >> 12; pg <= (off + len - 1) >> 12; pg++) {
                if (pg >= PS.touched_bits) {
                    uint64_t nb = (pg + 1) * 2 + 4096;
                    PS.touched = ps_xrealloc(PS.touched, nb / 8 + 8);
                    memset((char *)PS.touched + PS.touched_bits / 8, 0,
                           nb / 8 + 8 - PS.touched_bits / 8);
                    PS.touched_bits = nb;
                }
                PS.touched[pg / 64] |= 1ull << (pg % 64);
            }
        }
    }
}

static inline void ps_drop_ops(struct ps_file *f)
{
    for (size_t k = 0; k < f->nops; k++)
        free(f->ops[k].data);
    f->nops = 0;
    f->pending_bytes = 0;
}

/* A completed sync: every pending op reached the disk. */
static inline void ps_sync_done(int i)
{
    struct ps_file *f = &PS.f[i];
    for (size_t k = 0; k < f->nops; k++) {
        const struct ps_op *o = &f->ops[k];
        ps_mark_stale(i, o->kind == PS_TRUNC ? o->len : o->off, o->kind == PS_TRUNC ? 1 : o->len);
        ps_apply(&f->disk, &f->disk_size, &f->disk_cap, o, o->off, o->off + o->len);
    }
    ps_drop_ops(f);
}

/* A failed sync: each pending 512-byte chunk landed or not, decided now
 * and never retried (the pages are clean in the page cache). */
static inline void ps_sync_failed(int i)
{
    struct ps_file *f = &PS.f[i];
    for (size_t k = 0; k < f->nops; k++) {
        const struct ps_op *o = &f->ops[k];
        if (o->kind == PS_TRUNC) {
            if (PS.fault.sync_outcome != 2 && (PS.fault.sync_outcome == 1 || test_rand(&PS.rng) & 1))
                ps_apply(&f->disk, &f->disk_size, &f->disk_cap, o, 0, 0);
            continue;
        }
        ps_mark_stale(i, o->off, o->len);
        for (uint64_t lo = o->off; lo < o->off + o->len;) {
            uint64_t hi = (lo / 512 + 1) * 512;
            if (hi > o->off + o->len)
                hi = o->off + o->len;
            int land = PS.fault.sync_outcome == 1 ||
                       (PS.fault.sync_outcome == 0 && (test_rand(&PS.rng) & 1));
            if (land)
                ps_apply(&f->disk, &f->disk_size, &f->disk_cap, o, lo, hi);
            lo = hi;
        }
    }
    ps_drop_ops(f);
}

static inline int ps_fault_hit(long *countdown, int file)
{
    if (*countdown <= 0 || --*countdown)
        return 0;
    PS.hit++;
    PS.hit_file = file;
    PS.hit_log_syncs = PS.syncs_ok[PS_LOG];
    return 1;
}

static inline int ps_counts(int i)
{
    return i >= 0 && (PS.fault.file < 0 || PS.fault.file == i);
}

/* ------------------------------------------------------------ hooks */

static inline ssize_t ps_pwrite(int fd, const void *buf, size_t n, uint64_t off)
{
    int i = ps_file_of_w(fd, off, n);
    if (PS.img_fail_now) {
        PS.img_fail_now = 0;
        return -EIO;
    }
    if (i < 0)
        return mmk__heap_io_default.pwrite(fd, buf, n, off);
    if (ps_counts(i) && ps_fault_hit(&PS.fault.write_in, i)) {
        /* as the default loop reports it: part written, then the error */
        size_t part = n / 2 & ~(size_t)4095;
        if (part && mmk__heap_io_default.pwrite(fd, buf, part, off) == (ssize_t)part)
            ps_record(i, PS_WRITE, off, buf, part);
        return PS.fault.write_err;
    }
    if (ps_counts(i) && n > 1 && ps_fault_hit(&PS.fault.short_in, i))
        n /= 2;
    ssize_t r = mmk__heap_io_default.pwrite(fd, buf, n, off);
    if (r > 0) {
        ps_record(i, PS_WRITE, off, buf, (uint64_t)r);
        PS.nwrites++;
        if (PS.at_write)
            PS.at_write(i);
    }
    return r;
}

static inline ssize_t ps_pwritev(int fd, const struct iovec *iov, int cnt, uint64_t off)
{
    size_t all = 0;
    for (int k = 0; k < cnt; k++)
        all += iov[k].iov_len;
    int i = ps_file_of_w(fd, off, all);
    if (PS.img_fail_now) {
        PS.img_fail_now = 0;
        return -EIO;
    }
    if (i < 0)
        return mmk__heap_io_default.pwritev(fd, iov, cnt, off);
    if (ps_counts(i) && ps_fault_hit(&PS.fault.write_in, i)) {
        size_t part = iov[0].iov_len / 2 & ~(size_t)4095;
        if (part && mmk__heap_io_default.pwrite(fd, iov[0].iov_base, part, off) == (ssize_t)part)
            ps_record(i, PS_WRITE, off, iov[0].iov_base, part);
        return PS.fault.write_err;
    }
    size_t total = 0;
    for (int k = 0; k < cnt; k++)
        total += iov[k].iov_len;
    unsigned char *flat = ps_xrealloc(NULL, total);
    size_t at = 0;
    for (int k = 0; k < cnt; k++) {
        memcpy(flat + at, iov[k].iov_base, iov[k].iov_len);
        at += iov[k].iov_len;
    }
    if (ps_counts(i) && total > 1 && ps_fault_hit(&PS.fault.short_in, i))
        total /= 2;
    ssize_t r = mmk__heap_io_default.pwrite(fd, flat, total, off);
    if (r > 0) {
        ps_record(i, PS_WRITE, off, flat, (uint64_t)r);
        PS.nwrites++;
        if (PS.at_write)
            PS.at_write(i);
    }
    free(flat);
    return r;
}

static inline ssize_t ps_pread(int fd, void *buf, size_t n, uint64_t off)
{
    if (PS.fault.read_in > 0 || PS.fault.read_every) {
        /* read faults hit the recorded files and the image files alike */
        int k = ps_fd_kind(fd), i = k >= PS_NFILE ? k - PS_NFILE : k;
        if (ps_counts(i)) {
            if (PS.fault.read_every && PS.fault.read_in <= 0)
                return -EIO;
            if (ps_fault_hit(&PS.fault.read_in, i))
                return -EIO;
        }
    }
    return mmk__heap_io_default.pread(fd, buf, n, off);
}

static inline int ps_fdatasync(int fd)
{
    int i = ps_file_of(fd);
    if (i < 0)
        return mmk__heap_io_default.fdatasync(fd);
    PS.nsyncs++;
    if (PS.at_sync)
        PS.at_sync(i);
    if (ps_counts(i) && ps_fault_hit(&PS.fault.sync_in, i)) {
        PS.nfailed_syncs++;
        ps_sync_failed(i);
        return -EIO;
    }
    ps_sync_done(i);
    PS.syncs_ok[i]++;
    return 0;
}

static inline int ps_fsync_dir(const char *path)
{
    if (!PS.recording)
        return mmk__heap_io_default.fsync_dir(path);
    PS.ndirsyncs++;
    if (PS.at_sync)
        PS.at_sync(-1);
    for (int i = 0; i < PS_NFILE; i++)
        if (access(PS.f[i].path, F_OK) == 0)
            PS.f[i].dir_durable = 1;
    return 0;
}

static inline int ps_ftruncate(int fd, uint64_t size)
{
    int i = ps_file_of(fd);
    if (ps_counts(i) && ps_fault_hit(&PS.fault.trunc_in, i))
        return -ENOSPC;
    int rc = mmk__heap_io_default.ftruncate(fd, size);
    if (i >= 0 && rc == 0)
        ps_record(i, PS_TRUNC, 0, NULL, size);
    return rc;
}

static inline int ps_fallocate(int fd, int mode, uint64_t off, uint64_t len)
{
    int i = ps_file_of_w(fd, off, len);
    int rc = mmk__heap_io_default.fallocate(fd, mode, off, len);
    if (i >= 0 && rc == 0 && mode == 0) {
        struct stat st;
        if (fstat(fd, &st) == 0)
            ps_record(i, PS_TRUNC, 0, NULL, (uint64_t)st.st_size);
    }
    return rc;
}

static inline int ps_boot_id(uint8_t out[16])
{
    memcpy(out, PS.boot, 16);
    return 0;
}

static const struct mmk__heap_io ps_hooks = {
    .pread = ps_pread, .pwrite = ps_pwrite, .pwritev = ps_pwritev,
    .fdatasync = ps_fdatasync, .fsync_dir = ps_fsync_dir, .ftruncate = ps_ftruncate,
    .fallocate = ps_fallocate, .boot_id = ps_boot_id,
};

/* ------------------------------------------------------------ setup */

/* Start recording the heap at path (which need not exist yet: a file that
 * does not exist has no durable directory entry). Files that exist are
 * taken as durable as they are now. */
static inline void ps_init(const char *path, uint64_t seed)
{
    for (int i = 0; i < PS_NFILE; i++) {
        ps_drop_ops(&PS.f[i]);
        free(PS.f[i].ops);
        free(PS.f[i].disk);
    }
    free(PS.touched);
    memset(&PS, 0, sizeof PS);
    PS.rng = seed * 0x9e3779b97f4a7c15ull | 1;
    snprintf(PS.f[PS_HEAP].path, PATH_MAX, "%s", path);
    snprintf(PS.f[PS_LOG].path, PATH_MAX, "%s-log", path);
    for (int i = 0; i < PS_NFILE; i++) {
        struct ps_file *f = &PS.f[i];
        int fd = open(f->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        f->dir_durable = 1;
        struct stat st;
        CHECK(fstat(fd, &st) == 0);
        f->disk_size = (uint64_t)st.st_size;
        ps_reserve(&f->disk, &f->disk_cap, f->disk_size);
        CHECK(pread(fd, f->disk, f->disk_size, 0) == (ssize_t)f->disk_size);
        close(fd);
    }
    PT.base[0] = 0; /* the next image starts from fresh files */
    ps_set_boot(1);
    mmk__heap_io_set_hooks(&ps_hooks);
    PS.recording = 1;
}

static inline void ps_fini(void)
{
    mmk__heap_io_set_hooks(NULL);
    PS.recording = 0;
}

/* ------------------------------------------------------------ images */

static inline uint64_t ps_pending_ops(void)
{
    return PS.f[0].nops + PS.f[1].nops;
}

static inline uint64_t ps_first_pending_seq(void)
{
    uint64_t s = PS.seq;
    for (int i = 0; i < PS_NFILE; i++)
        if (PS.f[i].nops && PS.f[i].ops[0].seq < s)
            s = PS.f[i].ops[0].seq;
    return s;
}

static inline int ps_chance(double p)
{
    return (double)(test_rand(&PS.rng) >> 11) * (1.0 / 9007199254740992.0) < p;
}

/* Page pg of file i as the image holds it without replacement. */
static inline void ps_base_page(const struct ps_image *img, int i, uint64_t pg, unsigned char *out)
{
    const struct ps_file *f = &PS.f[i];
    uint64_t lo = pg << 12, end = f->disk_size < img->cut[i] ? f->disk_size : img->cut[i];
    uint64_t n = lo < end ? (end - lo < 4096 ? end - lo : 4096) : 0;
    if (n)
        memcpy(out, f->disk + lo, n);
    memset(out + n, 0, 4096 - n);
}

static inline void ps_img_reset(struct ps_image *img, int i)
{
    for (size_t k = 0; k < img->nlist[i]; k++)
        img->idx[i][img->list[i][k]] = -1;
    img->nlist[i] = 0;
}

/* The replaced page pg of file i, made from the base page on first use. */
static inline unsigned char *ps_img_page(struct ps_image *img, int i, uint64_t pg)
{
    if (pg >= img->idx_n[i]) {
        uint64_t n = (pg + 1) * 2 + 1024;
        img->idx[i] = ps_xrealloc(img->idx[i], n * sizeof(int32_t));
        for (uint64_t k = img->idx_n[i]; k < n; k++)
            img->idx[i][k] = -1;
        img->idx_n[i] = n;
    }
    if (img->idx[i][pg] >= 0)
        return img->pool[i] + ((uint64_t)img->idx[i][pg] << 12);
    size_t slot = img->nlist[i];
    if (slot == img->caplist[i]) {
        img->caplist[i] = img->caplist[i] ? img->caplist[i] * 2 : 256;
        img->list[i] = ps_xrealloc(img->list[i], img->caplist[i] * sizeof(uint64_t));
    }
    if (((uint64_t)slot + 1) << 12 > img->pool_cap[i]) {
        img->pool_cap[i] = img->pool_cap[i] ? img->pool_cap[i] * 2 : (1 << 20);
        img->pool[i] = ps_xrealloc(img->pool[i], img->pool_cap[i]);
    }
    img->list[i][slot] = pg;
    img->nlist[i]++;
    img->idx[i][pg] = (int32_t)slot;
    unsigned char *p = img->pool[i] + ((uint64_t)slot << 12);
    ps_base_page(img, i, pg, p);
    return p;
}

/* Bytes [lo, hi) of op o reach the image. */
static inline void ps_img_apply(struct ps_image *img, int i, const struct ps_op *o, uint64_t lo,
                                uint64_t hi)
{
    if (o->kind == PS_TRUNC) {
        if (o->len < img->size[i]) { /* shrink: what lies beyond reads as zero */
            for (size_t k = 0; k < img->nlist[i]; k++) {
                uint64_t pg = img->list[i][k], plo = pg << 12;
                unsigned char *p = img->pool[i] + ((uint64_t)img->idx[i][pg] << 12);
                if (plo >= o->len)
                    memset(p, 0, 4096);
                else if (plo + 4096 > o->len)
                    memset(p + (o->len - plo), 0, 4096 - (o->len - plo));
            }
            if (o->len < img->cut[i])
                img->cut[i] = o->len;
        }
        img->size[i] = o->len;
        return;
    }
    for (uint64_t a = lo; a < hi;) {
        uint64_t pg = a >> 12, e = ((pg + 1) << 12) < hi ? (pg + 1) << 12 : hi;
        memcpy(ps_img_page(img, i, pg) + (a & 4095), o->data + (a - o->off), e - a);
        a = e;
    }
    if (hi > img->size[i])
        img->size[i] = hi;
}

/* The disk after a power cut, per plan. */
static inline void ps_build(struct ps_image *img, const struct ps_plan *pl)
{
    for (int i = 0; i < PS_NFILE; i++) {
        struct ps_file *f = &PS.f[i];
        ps_img_reset(img, i);
        img->size[i] = img->cut[i] = f->disk_size;
        img->exists[i] = f->dir_durable || !pl->lose_dir || ps_chance(0.5);
        if (!img->exists[i]) {
            img->size[i] = 0;
            continue;
        }
        for (size_t k = 0; k < f->nops; k++) {
            const struct ps_op *o = &f->ops[k];
            int keep = pl->mode == PS_ALL || (pl->mode == PS_SUBSET && ps_chance(pl->p)) ||
                       (pl->mode == PS_PREFIX && o->seq < pl->prefix);
            if (!keep)
                continue;
            if (o->kind == PS_TRUNC || !pl->tear) {
                ps_img_apply(img, i, o, o->off, o->off + o->len);
                continue;
            }
            for (uint64_t lo = o->off; lo < o->off + o->len;) {
                uint64_t hi = (lo / pl->tear + 1) * pl->tear;
                if (hi > o->off + o->len)
                    hi = o->off + o->len;
                if (ps_chance(pl->q))
                    ps_img_apply(img, i, o, lo, hi);
                lo = hi;
            }
        }
    }
}

/* The page cache's view: the real files as they are now (a process crash;
 * differs from plan PS_ALL only after a failed sync). */
static inline void ps_build_real(struct ps_image *img)
{
    for (int i = 0; i < PS_NFILE; i++) {
        ps_img_reset(img, i);
        int fd = open(PS.f[i].path, O_RDONLY | O_CLOEXEC);
        img->exists[i] = fd >= 0;
        img->size[i] = img->cut[i] = 0;
        if (fd < 0)
            continue;
        struct stat st;
        CHECK(fstat(fd, &st) == 0);
        img->size[i] = (uint64_t)st.st_size;
        for (uint64_t pg = 0; pg << 12 < img->size[i]; pg++) {
            unsigned char *p = ps_img_page(img, i, pg);
            ssize_t n = pread(fd, p, 4096, (off_t)(pg << 12));
            CHECK(n >= 0);
            memset(p + n, 0, 4096 - (size_t)n);
        }
        close(fd);
    }
}

static inline int ps_is_stale(int i, uint64_t pg)
{
    return pg < PT.stale_bits[i] && (PT.stale[i][pg / 64] >> (pg % 64) & 1);
}

/* Write an image as the files `path` and `path-log`, rewriting only the
 * pages that may differ from what the files hold. */
static inline void ps_write_image(struct ps_image *img, const char *path)
{
    if (strcmp(PT.base, path)) {
        snprintf(PT.base, sizeof PT.base, "%s", path);
        for (int i = 0; i < PS_NFILE; i++) {
            snprintf(PT.path[i], sizeof PT.path[i], "%s%s", path, i == PS_LOG ? "-log" : "");
            PT.exists[i] = 0;
        }
    }
    static const unsigned char zero[4096];
    unsigned char page[4096];
    for (int i = 0; i < PS_NFILE; i++) {
        if (!img->exists[i]) {
            unlink(PT.path[i]);
            PT.exists[i] = 0;
            continue;
        }
        int fd = -1;
        if (PT.exists[i])
            fd = open(PT.path[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            unlink(PT.path[i]);
            fd = open(PT.path[i], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        }
        CHECK(fd >= 0);
        struct stat st;
        CHECK(fstat(fd, &st) == 0);
        uint64_t actual = (uint64_t)st.st_size, ns = img->size[i];
        if (actual != ns)
            CHECK(ftruncate(fd, (off_t)ns) == 0);
        uint64_t npg = (ns + 4095) >> 12;
        uint64_t dlim = PS.f[i].disk_size < ns ? PS.f[i].disk_size : ns;
        for (uint64_t pg = 0; pg < npg; pg++) {
            int replaced = pg < img->idx_n[i] && img->idx[i][pg] >= 0;
            int fresh = (pg << 12) + 4096 > actual; /* beyond the old end: zeros now */
            int cutoff = (pg << 12) + 4096 > img->cut[i] && (pg << 12) < dlim;
            if (!replaced && !fresh && !cutoff && !ps_is_stale(i, pg))
                continue;
            const unsigned char *want = page;
            if (replaced)
                want = img->pool[i] + ((uint64_t)img->idx[i][pg] << 12);
            else
                ps_base_page(img, i, pg, page);
            uint64_t len = ns - (pg << 12) < 4096 ? ns - (pg << 12) : 4096;
            if (fresh && (pg << 12) >= actual && !memcmp(want, zero, len))
                continue;
            CHECK(pwrite(fd, want, len, (off_t)(pg << 12)) == (ssize_t)len);
        }
        close(fd);
        PT.exists[i] = 1;
        if (PT.stale[i])
            memset(PT.stale[i], 0, PT.stale_bits[i] / 8 + 8);
        /* what this image wrote that the durable bytes do not hold */
        for (size_t k = 0; k < img->nlist[i]; k++)
            ps_mark_stale(i, img->list[i][k] << 12, 4096);
        if (img->cut[i] < dlim)
            ps_mark_stale(i, img->cut[i], dlim - img->cut[i]);
    }
}

/* Self-test of the recorder: with every pending op applied, the model must
 * equal the real files (true while no sync failed). 0 or the first
 * differing page + 1 (file in *which). */
static inline uint64_t ps_selfcheck(struct ps_image *img, int *which)
{
    struct ps_plan all = {.mode = PS_ALL};
    ps_build(img, &all);
    unsigned char want[4096], got[4096];
    for (int i = 0; i < PS_NFILE; i++) {
        *which = i;
        int fd = open(PS.f[i].path, O_RDONLY | O_CLOEXEC);
        CHECK(fd >= 0);
        struct stat st;
        CHECK(fstat(fd, &st) == 0);
        if ((uint64_t)st.st_size != img->size[i]) {
            close(fd);
            return 1;
        }
        for (uint64_t pg = 0; pg << 12 < img->size[i]; pg++) {
            const unsigned char *w = want;
            if (pg < img->idx_n[i] && img->idx[i][pg] >= 0)
                w = img->pool[i] + ((uint64_t)img->idx[i][pg] << 12);
            else
                ps_base_page(img, i, pg, want);
            ssize_t n = pread(fd, got, 4096, (off_t)(pg << 12));
            CHECK(n >= 0);
            if (memcmp(w, got, (size_t)n)) {
                close(fd);
                return pg + 1;
            }
        }
        close(fd);
    }
    return 0;
}

static inline void ps_image_free(struct ps_image *img)
{
    for (int i = 0; i < PS_NFILE; i++) {
        free(img->idx[i]);
        free(img->list[i]);
        free(img->pool[i]);
    }
    memset(img, 0, sizeof *img);
}

static inline void ps_take_touched(void (*fn)(uint64_t pg, void *arg), void *arg)
{
    for (uint64_t w = 0; w < PS.touched_bits / 64; w++) {
        uint64_t b = PS.touched[w];
        while (b) {
            int k = __builtin_ctzll(b);
            b &= b - 1;
            fn(w * 64 + (uint64_t)k, arg);
        }
        PS.touched[w] = 0;
    }
}

static inline const char *ps_plan_name(const struct ps_plan *pl, char *buf, size_t n)
{
    static const char *m[] = {"none", "all", "subset", "prefix"};
    snprintf(buf, n, "%s p=%.2f tear=%u q=%.2f prefix=%llu%s", m[pl->mode], pl->p, pl->tear,
             pl->q, (unsigned long long)pl->prefix, pl->lose_dir ? " lose-dir" : "");
    return buf;
}

#endif
