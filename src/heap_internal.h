/* Internal layout and state of the persistent heap (src/heap*.c).
 * docs/FORMAT.md describes the on-disk format in words. */
#ifndef MMK_HEAP_INTERNAL_H
#define MMK_HEAP_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <mmkit/heap.h>
#include "internal.h"

#define HP_MAGIC 0x31504145484b4d4dull   /* "MMKHEAP1" little-endian */
#define HP_VERSION 1u
#define HP_BOM 0x01020304u
#define HP_PAGE 4096u
#define HP_SHIFT 12
#define HP_GROUP 32768ull                /* pages per group (128 MiB) */
#define HP_NCSUM 32u                     /* checksum pages per group */
#define HP_NDESC 32u                     /* descriptor pages per group */
#define HP_META (HP_NCSUM + HP_NDESC)
#define HP_NCLASS 24
#define HP_NBIN 32
#define HP_MIN_PAGES 256ull              /* 1 MiB: smallest heap */

#define LOG_MAGIC 0x474f4c504145484dull  /* "MHEAPLOG" */
#define REC_MAGIC 0x43455248u            /* "HREC" */
#define RUN_MAGIC 0x4e55524545524648ull  /* free run head */
#define SLAB_MAGIC 0x42414c53u           /* "SLAB" */

/* Page descriptors (u32, one per page, in the group's descriptor pages):
 * kind in the top 4 bits, a value in the low 28. */
enum {
    D_NONE = 0,       /* body of a run or an object, or never used */
    D_META = 1,       /* header, checksum or descriptor page */
    D_FREE_HEAD = 2,  /* first page of a free run; value = pages */
    D_FREE_TAIL = 3,  /* last page of a free run of >= 2 pages; value = pages */
    D_LARGE = 4,      /* first page of a large object; value = pages */
    D_SLAB = 5,       /* first page of a slab; value = class */
    D_SLAB_BODY = 6,  /* later page of a slab; value = distance to its first page */
};
#define D_KIND(d) ((d) >> 28)
#define D_VAL(d) ((d) & 0x0fffffffu)
#define D_MAKE(k, v) (((uint32_t)(k) << 28) | ((uint32_t)(v) & 0x0fffffffu))

/* Page 0. Little-endian host order (the byte order mark says which). */
struct hp_header {
    uint64_t magic;
    uint32_t version;
    uint32_t bom;
    uint32_t page_size;
    uint16_t ptr_width;
    uint16_t hdr_size;
    uint64_t heap_size;       /* bytes, multiple of the page size */
    uint64_t commit_id;
    uint64_t root;
    uint64_t schema;
    uint64_t map_addr;        /* where the creator mapped it (MMK_HEAP_FIXED) */
    uint64_t heap_uuid;       /* ties the log to this heap */
    uint64_t log_gen;         /* log generation and offset after this commit */
    uint64_t log_off;
    uint64_t used_bytes;
    uint64_t objects;
    uint64_t free_pages;
    uint64_t hiwater;         /* pages >= hiwater were never handed out: zero */
    uint64_t class_head[HP_NCLASS]; /* first slab with free slots, page number */
    uint64_t bin_head[HP_NBIN];     /* free runs of [2^i, 2^(i+1)) pages */
    uint16_t class_empty[HP_NCLASS]; /* empty slabs kept per class (at most 2) */
    uint64_t applying;        /* set (with the old commit's fields) while a commit is
                               * pwritten into the file: seen later, the applier died */
    uint64_t reserved[1];
    uint32_t pad;
    uint32_t crc;             /* CRC32C of this struct with crc = 0 */
};

struct hp_run {               /* at the start of a free run's first page */
    uint64_t magic;
    uint64_t pages;
    uint64_t next, prev;      /* page numbers in the bin list, 0 = none */
};

struct hp_slab {              /* at the start of a slab's first page */
    uint32_t magic;
    uint16_t cls;
    uint16_t nfree;
    uint32_t nobj;
    uint32_t pad;
    uint64_t next, prev;      /* class list of slabs with free slots */
    uint64_t bitmap[4];       /* 1 = slot in use */
};
#define SLAB_HDR 64u

/* Log header: two slots (offsets 0 and 2048 of the log's page 0); the
 * valid one with the higher generation is current. */
struct hp_loghdr {
    uint64_t magic;
    uint32_t version;
    uint32_t pad;
    uint64_t gen;
    uint64_t base_commit;     /* the heap file holds this commit durably */
    uint64_t heap_uuid;
    uint8_t boot_id[16];      /* boot that wrote the checkpoint */
    uint32_t pad2;
    uint32_t crc;
};

/* A redo record, at a 4096-byte aligned log offset: this header, npages
 * entries (struct hp_ent, ascending pages, page 0 first), then each entry's
 * bytes back to back, zero padding to 4096. crc covers header + entries;
 * each entry has the CRC32C of its bytes. */
struct hp_rec {
    uint32_t magic;
    uint32_t npages;
    uint64_t commit_id;
    uint64_t gen;
    uint64_t heap_size;
    uint64_t len;             /* total bytes: meta block + data + padding */
    uint64_t heap_uuid;
    uint32_t meta_len;
    uint32_t crc;
};

struct hp_ent {
    uint64_t page;
    uint32_t off, len;        /* the changed bytes of the page */
    uint32_t crc;
    uint32_t pad;
};
#define REC_ALIGN 4096u      /* a small record is one block; never shares one */
#define ORIG_PAGES 64         /* pages compared per pread */

enum hp_dirty_method { DM_SCAN = 0, DM_PAGEMAP = 1, DM_WP = 2, DM_UFFD = 3 };
/* Faults before a transaction goes all-writable: from the mapped size (see
 * mmk__hp_dirty_begin), but each page made writable alone may split the
 * mapping in three, and the kernel allows vm.max_map_count mappings a
 * process (65530 by default) for all its users: never more than a quarter
 * of that limit, at most WP_SWITCH_MAX. */
#define WP_SWITCH_MAX 16384
#define WP_SWITCH_MIN 8
/* What a page found by a write-protect fault costs more than one found by
 * the bulk scan: the signal, the mprotect splitting the mapping and the one
 * merging it back (measured on the development VM: 6-10 us). */
#define WP_FAULT_NS 8000u

/* Words in a map's header (map.c checks it). */
#define MMK__MAP_HDR_WORDS 13

struct mmk_heap {
    int fd, logfd;
    unsigned flags;
    pid_t pid;
    unsigned long forks;      /* mmk__hp_forks at open: differs in a forked child */
    char *path;
    char *logpath;
    unsigned char *base;      /* reservation start = heap offset 0 */
    size_t reserve;           /* bytes reserved */
    size_t mapped;            /* bytes of the file mapped at base */
    int in_txn, in_read;
    uint64_t txn_serial;      /* begins so far: tells one transaction from the next */
    /* map.c: pages that hold entries the map allocated in transaction
     * map_fresh_serial (not in the file yet): a split reads other entries'
     * hash words through the clean view (see map.c, split_bit). */
    uint64_t *map_fresh;
    size_t map_nfresh, map_cap_fresh, map_fresh_sorted; /* a sorted prefix */
    uint64_t map_fresh_serial;
    /* map.c: the header of the map last read, as it was when it passed every
     * check (its checksum included), and the mapped size then. A get whose
     * header still holds these bytes skips the checks (see map.c, load_get). */
    uint64_t map_ck_ref;
    size_t map_ck_mapped;
    uint64_t map_ck_hdr[MMK__MAP_HDR_WORDS];
    struct hp_header *hdr;    /* = base */
    uint64_t log_gen, log_base, log_end_alloc; /* cached log header; zeroed log bytes */
    uint64_t log_limit;       /* checkpoint above this */
    uint64_t txn_start_size;  /* heap size at begin */
    int broken;               /* an I/O failure left the handle unusable: -EIO */
    uint64_t last_pages, last_log_bytes; /* of this handle's last commit */
    /* dirty tracking */
    int dm;                   /* enum hp_dirty_method */
    int pagemap_fd;
    uint64_t *wp_bits;        /* DM_WP: one bit a page of the reservation */
    size_t wp_bits_len;
    int wp_claim;
    int wp_auto;              /* switch to `bulk` after WP_SWITCH faults in a transaction */
    int bulk;                 /* DM_SCAN or DM_PAGEMAP: finds pages written while all-RW */
    int wp_faults;            /* this transaction (signal handler; atomic) */
    int wp_all;               /* the whole mapping was made writable (atomic) */
    int wp_limit;             /* most faults a transaction may take (see WP_SWITCH_MAX) */
    int wp_switch;            /* this transaction: faults before going all-writable */
    int wp_unlisted;          /* a page made writable is not in h->dirty: reprotect all */
    uint64_t bulk_ns;         /* going all-writable for a transaction: the scan and the two
                               * mprotects over the mapping, measured (0: not yet) */
    uint64_t bulk_txn_ns;     /* this transaction's share, being measured */
    size_t prev_written;      /* pages the previous transaction wrote */
    /* Kept copies (DM_UFFD as the method or the bulk method): after a commit
     * the private copies of the written pages are kept (they equal the file)
     * instead of dropped, write-protected through a userfaultfd in async
     * mode so the next scan tells pages written since (no fault reaches us).
     * Saves the MADV_DONTNEED, the refault and the next copy-on-write. */
    int uffd;                 /* -1 when unused */
    int keep;
    size_t nkept;             /* pages kept (an upper bound; exact after drop_clean) */
    int self_pidfd;           /* for process_madvise; -1 unopened, -2 unavailable */
    size_t keep_max;          /* drop them all above this */
    uint64_t kept_commit;     /* the commit they show */
    int keep_lost;            /* registering a grown range failed: fall back */
    size_t view_dropped;      /* pages unmapped since the last read view */
    int uffd_paused;          /* closed for a read view: 1 the bulk method, 2 the method */
    /* commit scratch */
    uint64_t *dirty;          /* sorted page numbers */
    size_t ndirty, cap_dirty;
    void *scratch;            /* meta block buffer */
    size_t scratch_cap;
    struct iovec *iov;        /* record vectors */
    size_t iov_cap;
    unsigned char *orig;      /* ORIG_PAGES pages of the file, for deltas */
    unsigned char *clean;     /* writable handles: the file mapped shared, read-only, in a
                               * reservation of its own: the delta's reference without a
                               * pread (NULL: not available, pread) */
    size_t clean_mapped;
    /* Metadata pages a write-protected transaction did not write (the
     * header, checksum pages) are built in these copies and written from
     * them: no mprotect, fault or private copy for them (see commit). */
    uint64_t *written;        /* the transaction's own pages, sorted */
    size_t nwritten, cap_written;
    uint64_t *shadow_pg;      /* sorted page numbers */
    unsigned char *shadow_buf; /* one page each, same order */
    size_t nshadow, cap_shadow;
};

/* heap.c */
extern unsigned long mmk__hp_forks; /* bumped in every forked child (pthread_atfork) */
/* A forked child must not use its parent's handle: no system call needed. */
static inline int hp_forked(const struct mmk_heap *h)
{
    return h->forks != __atomic_load_n(&mmk__hp_forks, __ATOMIC_RELAXED);
}
/* Is the whole mapping writable during the transaction? */
static inline int hp_all_rw(const struct mmk_heap *h);
static inline uint64_t hp_pages(const mmk_heap *h) { return h->hdr->heap_size >> HP_SHIFT; }
static inline void *hp_page(const mmk_heap *h, uint64_t pg) { return h->base + (pg << HP_SHIFT); }
uint32_t mmk__hp_zero_crc(void);
uint32_t mmk__hp_header_crc(const struct hp_header *hd);
/* Validate a header read from a file: 0, MMK_EFORMAT or MMK_ECORRUPT. */
int mmk__hp_header_valid(const struct hp_header *hd, uint64_t file_size, char *why, size_t n);
int mmk__hp_grow(mmk_heap *h, uint64_t min_new_pages);

static inline int hp_all_rw(const struct mmk_heap *h)
{
    return h->dm != DM_WP || __atomic_load_n(&h->wp_all, __ATOMIC_RELAXED);
}

/* layout helpers */
static inline uint64_t hp_meta_start(uint64_t g) { return g ? g * HP_GROUP : 1; }
static inline uint64_t hp_group(uint64_t pg) { return pg / HP_GROUP; }
static inline bool hp_is_meta(uint64_t pg)
{
    uint64_t g = hp_group(pg), m = hp_meta_start(g);
    return pg == 0 || (pg >= m && pg < m + HP_META);
}
static inline uint64_t hp_first_data(uint64_t g) { return hp_meta_start(g) + HP_META; }
static inline uint64_t hp_group_end(uint64_t g) { return (g + 1) * HP_GROUP; }
static inline uint64_t hp_csum_page(uint64_t pg)
{
    return hp_meta_start(hp_group(pg)) + (pg % HP_GROUP) / 1024;
}
static inline uint64_t hp_desc_page(uint64_t pg)
{
    return hp_meta_start(hp_group(pg)) + HP_NCSUM + (pg % HP_GROUP) / 1024;
}
static inline uint32_t *hp_desc_ptr(const mmk_heap *h, uint64_t pg)
{
    return (uint32_t *)hp_page(h, hp_desc_page(pg)) + (pg % 1024);
}
static inline uint32_t *hp_csum_ptr(const mmk_heap *h, uint64_t pg)
{
    return (uint32_t *)hp_page(h, hp_csum_page(pg)) + (pg % 1024);
}

/* heap_alloc.c */
int mmk__hp_alloc_init(mmk_heap *h, uint64_t first, uint64_t end); /* add pages as free */
int mmk__hp_stats(mmk_heap *h, struct mmk_heap_stats *st);
extern const uint32_t mmk__hp_class_size[HP_NCLASS];
extern const uint8_t mmk__hp_class_pages[HP_NCLASS];
uint32_t mmk__hp_slab_nobj(int cls);
static inline int hp_bin(uint64_t pages) { return 63 - __builtin_clzll(pages); }

/* heap_dirty.c */
int mmk__hp_dirty_init(mmk_heap *h);
void mmk__hp_dirty_fini(mmk_heap *h);
int mmk__hp_dirty_begin(mmk_heap *h);          /* called with the mapping RW (or RO for WP) */
int mmk__hp_dirty_collect(mmk_heap *h);        /* fills h->dirty / h->ndirty sorted */
void mmk__hp_dirty_end(mmk_heap *h);
int mmk__hp_dirty_add(mmk_heap *h, uint64_t pg);
int mmk__hp_dirty_map_grown(mmk_heap *h, size_t old_mapped); /* new range mapped */
/* Tests: registering a grown range with the userfaultfd fails (-ENOMEM);
 * partial drops use madvise a range, as where process_madvise is refused. */
extern int mmk__hp_test_fail_register;
extern int mmk__hp_test_no_process_madvise;
/* After a commit: write-protect (userfaultfd) the pages to keep; with trim
 * (the walk was costly) also unmap the pages only read. */
void mmk__hp_dirty_keep(mmk_heap *h, const uint64_t *pages, size_t n, int trim);
/* Drop every kept copy (the mapping reads the file again). */
void mmk__hp_dirty_drop_kept(mmk_heap *h);
/* Unmap the pages the handle only read (file pages), keep the kept copies,
 * and count those exactly (h->nkept). 0, or -errno: then drop them all. */
int mmk__hp_dirty_drop_clean(mmk_heap *h);
/* Between transactions: kept copies of another commit than `commit` (one
 * by another process, or a recovery) are dropped; a tracker that failed is
 * turned off. */
void mmk__hp_dirty_settle(mmk_heap *h, uint64_t commit);
/* A read view on a writable handle after commits unmapped many pages:
 * close the userfaultfd for the view, so that faults map pages around them
 * again; the next transaction opens a new one (resume). */
void mmk__hp_dirty_pause(mmk_heap *h);
void mmk__hp_dirty_resume(mmk_heap *h);
const char *mmk__hp_dirty_name(const mmk_heap *h);
void mmk__hp_dirty_bulk_done(mmk_heap *h, uint64_t protect_ns);
int mmk__hp_dirty_walk_costly(const mmk_heap *h, size_t written);
uint64_t mmk__hp_now_ns(void);

/* heap_check.c */
int mmk__hp_check(mmk_heap *h, char *msg, size_t len);

#endif
