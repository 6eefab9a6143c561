/* mmkit/map.h: a persistent hash map inside a heap. */
#ifndef MMKIT_MAP_H
#define MMKIT_MAP_H

#include <mmkit/heap.h>

#ifdef __cplusplus
extern "C" {
#endif

MMK_API int      mmk_map_create(mmk_heap *h, mmk_ref *out);
MMK_API int      mmk_map_put(mmk_heap *h, mmk_ref map, const void *key, size_t klen, const void *val, size_t vlen);
MMK_API int      mmk_map_get(mmk_heap *h, mmk_ref map, const void *key, size_t klen, const void **val, size_t *vlen);
MMK_API int      mmk_map_del(mmk_heap *h, mmk_ref map, const void *key, size_t klen);
MMK_API uint64_t mmk_map_count(mmk_heap *h, mmk_ref map);

#ifdef __cplusplus
}
#endif
#endif
