/* mmkit/heap.h: the crash-safe persistent heap in a mapped file. */
#ifndef MMKIT_HEAP_H
#define MMKIT_HEAP_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MMK_HEAP_CREATE 0x1u
#define MMK_HEAP_RDONLY 0x2u
#define MMK_HEAP_NOSYNC 0x4u

typedef struct mmk_heap mmk_heap;
typedef uint64_t mmk_ref; /* offset inside the heap; 0 is the null ref */

MMK_API int     mmk_heap_open(const char *path, unsigned flags, mmk_heap **out);
MMK_API void    mmk_heap_close(mmk_heap *h);
MMK_API int     mmk_heap_begin(mmk_heap *h);
MMK_API int     mmk_heap_commit(mmk_heap *h);
MMK_API int     mmk_heap_abort(mmk_heap *h);
MMK_API int     mmk_heap_alloc(mmk_heap *h, size_t size, mmk_ref *out);
MMK_API int     mmk_heap_free(mmk_heap *h, mmk_ref ref);
MMK_API void   *mmk_heap_ptr(const mmk_heap *h, mmk_ref ref);
MMK_API mmk_ref mmk_heap_ref(const mmk_heap *h, const void *ptr);
MMK_API mmk_ref mmk_heap_root(const mmk_heap *h);
MMK_API int     mmk_heap_set_root(mmk_heap *h, mmk_ref ref);
MMK_API int     mmk_heap_read_begin(mmk_heap *h);
MMK_API void    mmk_heap_read_end(mmk_heap *h);
MMK_API int     mmk_heap_check(mmk_heap *h);

#ifdef __cplusplus
}
#endif
#endif
