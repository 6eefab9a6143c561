/* mmkit/heap.h: the crash-safe persistent heap in a mapped file.
 *
 * A heap is one file (plus a sidecar redo log "<path>-log") mapped at a stable
 * address. Between mmk_heap_begin and mmk_heap_commit the program changes
 * heap memory with plain stores through mmk_heap_ptr pointers; commit finds
 * the written pages itself, makes them durable with one log sync and applies
 * them to the file. A crash at any moment leaves the last committed state (or
 * the one whose commit was in flight), never a mix. The mapping is read-only
 * between transactions, so a stray write faults instead of corrupting data.
 *
 * Threads: a handle is used by one thread at a time (mmk_heap_ptr, _ref and
 * _root are safe from any thread). Processes: any number may open the same
 * file; one writer at a time (begin waits), readers see the last commit
 * inside read_begin/read_end. A handle used in a forked child fails with
 * -ECHILD: open the heap again in the child.
 * See docs/guide-heap.md and docs/FORMAT.md. */
#ifndef MMKIT_HEAP_H
#define MMKIT_HEAP_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MMK_HEAP_CREATE 0x1u /* create the file (0600) when missing */
#define MMK_HEAP_RDONLY 0x2u /* read-only: begin fails with -EROFS */
#define MMK_HEAP_NOSYNC 0x4u /* no fdatasync: survives a process crash, not power loss */
#define MMK_HEAP_FIXED  0x8u /* map at the address recorded in the file, else -EADDRINUSE */
/* Read-mostly heaps: map with MADV_HUGEPAGE instead of MADV_RANDOM. A cold
 * fault then reads a 2 MiB folio instead of one page, so warming a heap takes
 * a few hundred reads instead of one per page, and random reads of a warm
 * heap miss the TLB less (about 20% faster gets here). The cost falls on
 * writers to the same file: on ext4 every small pwrite into a 2 MiB folio
 * walks all its blocks, so commits take longer (about 1.5x the CPU per page
 * written). A wish: without transparent huge pages nothing changes. */
#define MMK_HEAP_HUGE   0x10u

typedef struct mmk_heap mmk_heap;
typedef uint64_t mmk_ref; /* offset inside the heap; 0 is the null ref */

/* Open (and with MMK_HEAP_CREATE create) the heap at path; recovers a commit
 * interrupted by a crash. Errors: -errno (-ENOENT, -EACCES, -ENOMEM when no
 * address space can be reserved, -EROFS when a RDONLY open finds a crashed
 * commit to recover), -EADDRINUSE (FIXED), MMK_EFORMAT (another format,
 * byte order, pointer width or page size), MMK_ECORRUPT (damaged). */
MMK_API int     mmk_heap_open(const char *path, unsigned flags, mmk_heap **out);
/* Close; an open write transaction is aborted. NULL is ignored. */
MMK_API void    mmk_heap_close(mmk_heap *h);
/* Start the write transaction: waits for the writer lock (any process),
 * picks up growth and recovers a crashed writer's commit. -EROFS, -EBUSY
 * (already in a transaction or a read view), -ECHILD (forked handle). */
MMK_API int     mmk_heap_begin(mmk_heap *h);
/* Commit atomically; durable when it returns 0 unless MMK_HEAP_NOSYNC. On
 * an error before the log sync the transaction is rolled back (as abort);
 * -EIO after a failed sync means the commit is not durable and is undone.
 * An error writing the heap file after the log sync (the durable point)
 * also returns -EIO although the commit is durable and shows at the next
 * open: treat any error from commit as "outcome unknown", as with a lost
 * reply from a database (docs/DURABILITY.md). Never half a commit. */
MMK_API int     mmk_heap_commit(mmk_heap *h);
/* Undo every byte written since begin and release the writer lock. */
MMK_API int     mmk_heap_abort(mmk_heap *h);
/* Allocate size bytes (16-byte aligned; page-aligned above 2 KiB), zeroed,
 * inside a transaction. -EINVAL (size 0 or no transaction), -ENOMEM (the
 * reservation or the disk is full), -EFBIG (above mmk_heap_max_alloc()),
 * MMK_ECORRUPT (allocator metadata damaged). */
MMK_API int     mmk_heap_alloc(mmk_heap *h, size_t size, mmk_ref *out);
/* Free a ref from mmk_heap_alloc, inside a transaction. A ref that is not
 * a live allocation gives -EINVAL (or MMK_ECORRUPT), never a crash. */
MMK_API int     mmk_heap_free(mmk_heap *h, mmk_ref ref);
/* Address of ref (NULL for 0 or out of range). Stable while the heap is open. */
MMK_API void   *mmk_heap_ptr(const mmk_heap *h, mmk_ref ref);
/* Ref of a pointer into the heap (0 when ptr is outside it). */
MMK_API mmk_ref mmk_heap_ref(const mmk_heap *h, const void *ptr);
/* The root ref (0 until set). */
MMK_API mmk_ref mmk_heap_root(const mmk_heap *h);
/* Set the root, inside a transaction. -EINVAL outside one or for a ref
 * outside the heap. */
MMK_API int     mmk_heap_set_root(mmk_heap *h, mmk_ref ref);
/* A read view of the last commit: waits while a writer applies a commit to
 * the file (microseconds to milliseconds), maps growth. While the view is
 * open, writers in other processes can log commits but wait before applying
 * them. -EBUSY inside a transaction or a view, -ECHILD. */
MMK_API int     mmk_heap_read_begin(mmk_heap *h);
MMK_API void    mmk_heap_read_end(mmk_heap *h);
/* Full verification of the committed file: header, checksum of every page,
 * allocator structures. 0 or MMK_ECORRUPT (details: mmk_heap_check_report). */
MMK_API int     mmk_heap_check(mmk_heap *h);
/* Like mmk_heap_check and writes what failed and where into msg (NUL
 * terminated, may be NULL). */
MMK_API int     mmk_heap_check_report(mmk_heap *h, char *msg, size_t len);

/* The user's schema version (0 in a new heap), for migrations; set it
 * inside a transaction. */
MMK_API uint64_t mmk_heap_schema(const mmk_heap *h);
MMK_API int      mmk_heap_set_schema(mmk_heap *h, uint64_t version);

struct mmk_heap_stats {
    uint64_t size;            /* heap bytes (file size in use) */
    uint64_t used;            /* bytes handed out (rounded to size class/pages) */
    uint64_t free;            /* bytes in free page runs */
    uint64_t largest_free;    /* largest free run, bytes */
    uint64_t meta;            /* header, checksum and descriptor pages, bytes */
    uint64_t slab_free;       /* free slots inside slabs, bytes */
    uint64_t objects;         /* live allocations */
    uint64_t commit_id;       /* commits since creation */
    uint64_t log_bytes;       /* redo log bytes since the last checkpoint */
    uint64_t last_pages;      /* pages written by this handle's last commit (with metadata) */
    uint64_t last_log_bytes;  /* bytes its redo record took (changed bytes only) */
    uint64_t reserved;        /* address space reserved for growth */
    const char *dirty_method; /* "wp_fault+uffd_scan" (the default where userfaultfd
                               * write-protect works), "wp_fault+pagemap_scan",
                               * "wp_fault+pagemap", "uffd_scan", "pagemap_scan",
                               * "pagemap" or "wp_fault" (docs/guide-heap.md) */
};
/* Figures of the last commit (or the open transaction). Cheap; 0/-EINVAL. */
MMK_API int mmk_heap_stats(mmk_heap *h, struct mmk_heap_stats *out);
/* Largest size mmk_heap_alloc accepts. */
MMK_API size_t mmk_heap_max_alloc(void);

/* Typed refs: MMK_REF_TYPE(node_ref, struct node) declares a ref type that
 * only holds refs to struct node. Assigning a node_ref to another ref type,
 * or its pointer to another pointer type, fails to compile.
 *   node_ref n; MMK_ALLOC(h, n);  MMK_PTR(h, n)->next = ...;  */
#define MMK_REF_TYPE(name, T) typedef union name { mmk_ref r; T *mmk_type_; } name
#define MMK_PTR(h, tref) ((__typeof__((tref).mmk_type_))mmk_heap_ptr((h), (tref).r))
#define MMK_ALLOC(h, tref) mmk_heap_alloc((h), sizeof *(tref).mmk_type_, &(tref).r)
/* Set tref from a pointer; the assignment to mmk_type_ type-checks p. */
#define MMK_REF_OF(h, tref, p) ((tref).mmk_type_ = (p), (tref).r = mmk_heap_ref((h), (tref).mmk_type_))

#ifdef __cplusplus
}
#endif
#endif
