/* mmkit/arena.h: growable arenas over reserved address space. */
#ifndef MMKIT_ARENA_H
#define MMKIT_ARENA_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mmk_arena mmk_arena;
MMK_API int    mmk_arena_create(size_t reserve, unsigned flags, mmk_arena **out);
MMK_API void   mmk_arena_destroy(mmk_arena *a);
MMK_API void  *mmk_arena_alloc(mmk_arena *a, size_t size, size_t align);
MMK_API size_t mmk_arena_mark(const mmk_arena *a);
MMK_API void   mmk_arena_rewind(mmk_arena *a, size_t mark);

#ifdef __cplusplus
}
#endif
#endif
