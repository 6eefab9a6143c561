/* Internal helpers shared by the modules. Nothing here is public API:
 * functions are named mmk__* and hidden by the default visibility. */
#ifndef MMK_INTERNAL_H
#define MMK_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mmkit/common.h>
#include "os/os.h"

#define mmk__likely(x)   __builtin_expect(!!(x), 1)
#define mmk__unlikely(x) __builtin_expect(!!(x), 0)
#define MMK__ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MMK__CACHELINE 64

static inline bool mmk__is_pow2(size_t x) { return x && !(x & (x - 1)); }

/* Round up to a multiple of `a` (a power of two); 0 on overflow. */
static inline size_t mmk__align_up(size_t x, size_t a)
{
    if (x > SIZE_MAX - (a - 1))
        return 0;
    return (x + a - 1) & ~(a - 1);
}

static inline size_t mmk__align_down(size_t x, size_t a) { return x & ~(a - 1); }

static inline bool mmk__is_aligned(const void *p, size_t a)
{
    return ((uintptr_t)p & (a - 1)) == 0;
}

/* Page size, cached (mmk_page_size without the call overhead). */
extern size_t mmk__page;
static inline size_t mmk__pagesz(void)
{
    return mmk__page ? mmk__page : (mmk__page = mmk__os_page_size());
}

#endif
