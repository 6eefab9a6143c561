/* The platform layer. Modules above it never test for the OS: everything
 * that differs between Linux, the BSDs, macOS and Windows lives behind these
 * functions (today: src/os/linux.c, which is also plain POSIX where it can
 * be). All return 0 / a count, or -errno. Arguments are already validated by
 * the caller (vm.c): page-aligned addresses, non-zero lengths. */
#ifndef MMK_OS_H
#define MMK_OS_H

#include <stddef.h>
#include <stdint.h>

size_t mmk__os_page_size(void);
size_t mmk__os_alloc_granularity(void);

/* PROT_NONE, not charged; aligned to `align` (>= page size, power of two). */
int mmk__os_reserve(size_t len, size_t align, void **out);
int mmk__os_commit(void *addr, size_t len);
int mmk__os_decommit(void *addr, size_t len);
int mmk__os_release(void *addr, size_t len);
int mmk__os_protect(void *addr, size_t len, unsigned mmk_prot);
int mmk__os_advise(void *addr, size_t len, int mmk_advice);
int mmk__os_resident(const void *addr, size_t len, size_t *bytes);

/* Map `len` bytes of fd at file offset `off`. With `fixed` non-NULL the
 * mapping replaces whatever is at fixed (it must lie in a reservation the
 * caller owns: MAP_FIXED over our own PROT_NONE range is race-free).
 * shared: MAP_SHARED, else MAP_PRIVATE. */
int mmk__os_map_fd(void *fixed, size_t len, unsigned mmk_prot, int shared, int fd,
                   uint64_t off, void **out);

/* Shared memory objects: `backend` is exactly one MMK_SHM_* bit (possibly
 * with MMK_SHM_HUGETLB). */
int mmk__os_shm_create(unsigned backend, const char *name, size_t size, int *fd);
int mmk__os_shm_seal(int fd, unsigned mmk_seals);
int mmk__os_shm_seals(int fd);

int mmk__os_hugepage_info(size_t *size, int *thp, size_t *hugetlb_free);

/* Fill buf with unpredictable bytes (getrandom, else /dev/urandom, else a
 * mix of time, pid and address). Never fails. */
void mmk__os_random(void *buf, size_t len);

#endif
