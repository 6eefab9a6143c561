/* mmkit/vm.h: pages. Reserve address space without charging memory, commit
 * and decommit inside it, protect, advise, query residency; shared memory
 * objects for mirrors and IPC. Every other module maps memory through here. */
#ifndef MMKIT_VM_H
#define MMKIT_VM_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The base page size (4096 on x86-64). Cached after the first call. */
MMK_API size_t mmk_page_size(void);

/* The alignment of addresses a reservation can start at: the page size on
 * POSIX, 64 KiB on Windows. */
MMK_API size_t mmk_alloc_granularity(void);

/* Reserve `len` bytes of address space (rounded up to the page size) with no
 * access and no memory charged (PROT_NONE, MAP_NORESERVE): a 1 TiB reservation
 * costs nothing. *out receives the start. -EINVAL for len 0 or out NULL,
 * -ENOMEM when the address space is exhausted. */
MMK_API int mmk_reserve(size_t len, void **out);

/* Like mmk_reserve, but the start is aligned to `align` (a power of two,
 * at least the page size), e.g. 2 MiB for huge pages. */
MMK_API int mmk_reserve_aligned(size_t len, size_t align, void **out);

/* Make reserved pages readable and writable (zero-filled on first touch).
 * addr must be page-aligned; len is rounded up to pages. */
MMK_API int mmk_commit(void *addr, size_t len);

/* Return committed pages to the reserved state: contents are discarded, RSS
 * is released at once and access faults again. */
MMK_API int mmk_decommit(void *addr, size_t len);

/* Give a range (reserved, committed or any mapping made by mmkit) back. */
MMK_API int mmk_release(void *addr, size_t len);

/* Access for mmk_protect, combinable. */
#define MMK_PROT_NONE  0u
#define MMK_PROT_READ  1u
#define MMK_PROT_WRITE 2u
#define MMK_PROT_EXEC  4u

/* Change the access of page-aligned [addr, addr+len). */
MMK_API int mmk_protect(void *addr, size_t len, unsigned prot);

/* Portable advice, mapped to madvise(2). A kernel that lacks one gives
 * -ENOTSUP (not -EINVAL), so callers can tell "unsupported" from a bug. */
enum mmk_advice {
    MMK_ADV_NORMAL = 0,
    MMK_ADV_RANDOM,         /* no read-ahead */
    MMK_ADV_SEQUENTIAL,     /* aggressive read-ahead, drop behind */
    MMK_ADV_WILLNEED,       /* start reading in */
    MMK_ADV_DONTNEED,       /* private memory: drop now, reads give zero or the file */
    MMK_ADV_FREE,           /* private anon: drop lazily (RSS falls only under pressure) */
    MMK_ADV_REMOVE,         /* shared memory: free the backing (punch a hole) */
    MMK_ADV_HUGEPAGE,       /* transparent huge pages wanted */
    MMK_ADV_NOHUGEPAGE,
    MMK_ADV_MERGEABLE,      /* KSM may merge identical pages */
    MMK_ADV_UNMERGEABLE,
    MMK_ADV_POPULATE_READ,  /* fault in readable now; errors (EFAULT past EOF) are returned */
    MMK_ADV_POPULATE_WRITE, /* fault in writable now */
    MMK_ADV_DONTDUMP,       /* leave out of core dumps */
    MMK_ADV_DODUMP,
    MMK_ADV_COLD,           /* deactivate */
    MMK_ADV_PAGEOUT,        /* reclaim now */
    MMK_ADV_COUNT_
};

/* Apply `advice` to [addr, addr+len); addr page-aligned. */
MMK_API int mmk_advise(void *addr, size_t len, int advice);

/* Count the bytes of [addr, addr+len) resident in memory (mincore(2)), in
 * whole pages, into *bytes. Pages dropped lazily with MMK_ADV_FREE still
 * count until the kernel reclaims them. -ENOMEM if the range is not mapped. */
MMK_API int mmk_resident(const void *addr, size_t len, size_t *bytes);

/* Huge pages on this machine. */
struct mmk_hugepage_info {
    size_t size;          /* default huge page size, e.g. 2 MiB; 0 if none */
    int    thp;           /* transparent huge pages: 0 never, 1 madvise, 2 always, -1 unknown */
    size_t hugetlb_free;  /* free pages in the default hugetlb pool */
};

/* Fill *out from /sys and /proc. -ENOTSUP where the platform has none. */
MMK_API int mmk_hugepage_info(struct mmk_hugepage_info *out);

/* ------------------------------------------------------------------ shared memory */

/* Backends for shared memory objects, tried in this order. */
#define MMK_SHM_MEMFD   1u  /* memfd_create(MFD_CLOEXEC|MFD_ALLOW_SEALING) */
#define MMK_SHM_POSIX   2u  /* shm_open with a random O_EXCL name, unlinked at once */
#define MMK_SHM_TMPFILE 4u  /* an unlinked temporary file in /dev/shm or $TMPDIR */
#define MMK_SHM_HUGETLB 8u  /* modifier: back with huge pages (memfd MFD_HUGETLB) */

/* Create an anonymous shared memory object of `size` bytes (may be 0) and put
 * its descriptor (close-on-exec) in *fd. `only` restricts the backends tried
 * (a mask of MMK_SHM_MEMFD|POSIX|TMPFILE, 0 for all); the environment variable
 * MMK_SHM_BACKEND=memfd|posix|tmpfile forces one for testing. `name` is a
 * debugging label (may be NULL). Returns the backend used (> 0). */
MMK_API int mmk_shm_create(const char *name, size_t size, unsigned only, int *fd);

/* Seals, for mmk_shm_seal. */
#define MMK_SEAL_SHRINK       1u
#define MMK_SEAL_GROW         2u
#define MMK_SEAL_WRITE        4u
#define MMK_SEAL_FUTURE_WRITE 8u  /* existing writable maps stay; no new ones */
#define MMK_SEAL_SEAL        16u  /* no further seals */

/* Add seals to a shared memory object: -ENOTSUP where the object or the
 * platform has no seals (POSIX shm, tmpfile), -EPERM if already sealed. */
MMK_API int mmk_shm_seal(int fd, unsigned seals);

/* Fix the size: seal SHRINK|GROW|SEAL, so no peer can truncate the object
 * under a mapping (and cause SIGBUS). -ENOTSUP without seals. */
MMK_API int mmk_shm_seal_size(int fd);

/* The seals on fd (MMK_SEAL_* bits) or a negative code. */
MMK_API int mmk_shm_seals(int fd);

#ifdef __cplusplus
}
#endif
#endif
