/* mmkit/ring.h: the magic (double-mapped) ring buffer. */
#ifndef MMKIT_RING_H
#define MMKIT_RING_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MMK_RING_UNTRUSTED 0x1u /* the peer may be hostile: validate everything it writes */

typedef struct mmk_ring mmk_ring;
MMK_API int     mmk_ring_create(size_t min_capacity, unsigned flags, mmk_ring **out);
MMK_API int     mmk_ring_attach(int fd, unsigned flags, mmk_ring **out);
MMK_API int     mmk_ring_fd(const mmk_ring *r);
MMK_API size_t  mmk_ring_capacity(const mmk_ring *r);
MMK_API void    mmk_ring_destroy(mmk_ring *r);
MMK_API ssize_t mmk_ring_write_begin(mmk_ring *r, void **span);
MMK_API int     mmk_ring_write_commit(mmk_ring *r, size_t n);
MMK_API ssize_t mmk_ring_read_begin(mmk_ring *r, const void **span);
MMK_API int     mmk_ring_read_commit(mmk_ring *r, size_t n);
MMK_API int     mmk_ring_wait_readable(mmk_ring *r, size_t min_bytes, int timeout_ms);
MMK_API int     mmk_ring_wait_writable(mmk_ring *r, size_t min_bytes, int timeout_ms);
MMK_API int     mmk_ring_close_write(mmk_ring *r);

#ifdef __cplusplus
}
#endif
#endif
