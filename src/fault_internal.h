/* Internal interface of the fault layer (src/fault.c), for the other modules.
 * Declared here first so ring, file, view and heap can code against it while
 * fault.c is being built. */
#ifndef MMK_FAULT_INTERNAL_H
#define MMK_FAULT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Install the process-wide SIGBUS/SIGSEGV handler (once; reference-counted;
 * thread-safe). 0 or -errno. Modules acquire it when they create an object
 * that needs it and release it when the object goes. */
int mmk__fault_acquire(void);
void mmk__fault_release(void);

/* Guarded accesses to memory that a file or a peer controls: 0, or -EFAULT
 * (no backing page) / -EIO (hardware or I/O error). Cheap on the happy path
 * (exception table, no setjmp). They work whether or not the caller has
 * acquired the handler (they acquire it lazily). */
int mmk__copy_guarded(void *dst, const void *src, size_t n);  /* src may fault */
int mmk__store_guarded(void *dst, const void *src, size_t n); /* dst may fault */
int mmk__load_u32_guarded(const void *src, uint32_t *out);
int mmk__load_u64_guarded(const void *src, uint64_t *out);
int mmk__store_u32_guarded(void *dst, uint32_t v);             /* dst may fault */
int mmk__store_u64_guarded(void *dst, uint64_t v);
/* Compare a with b (b may fault), n a multiple of 16: range[0] gets the
 * offset of the first 8-byte word that differs and range[1] the end of the
 * last one (both n when equal). 0, -EFAULT or -EIO. */
int mmk__diff_guarded(const void *a, const void *b, size_t n, size_t range[2]);

/* memcpy for buffers that cannot fault, taking the fault layer's copy where
 * glibc's is slow: from 4 KiB with dst 1..63 bytes past src modulo 4 KiB,
 * glibc's rep movsb runs ~20x slower on AMD Zen, and a malloc'd buffer sits
 * 16 bytes into its page (docs/guide-fault.md). */
void mmk__copy_big(void *dst, const void *src, size_t n);
static inline void mmk__copy(void *dst, const void *src, size_t n)
{
    if (n >= 4096 && (((uintptr_t)dst - (uintptr_t)src - 1) & 4095) < 63)
        mmk__copy_big(dst, src, n);
    else
        memcpy(dst, src, n);
}

/* The error a fault of this signal and si_code becomes: -EIO for
 * BUS_MCEERR_AR/AO and BUS_OBJERR, else -EFAULT. */
int mmk__fault_error(int sig, int si_code);

/* Range claims. A fault (SIGSEGV or SIGBUS) whose address lies in a claimed
 * range calls fn(ctx, addr, sig, si_code, is_write) in signal context: fn
 * must be async-signal-safe. It returns 1 when it fixed the cause (e.g.
 * copied a page aside and made it writable): the faulting instruction is
 * retried. It returns 0 to let the fault go on as if unclaimed (a guarded
 * routine then gets its error; otherwise the previous handler runs).
 * is_write is 1 for a write fault, 0 for a read, -1 when unknown.
 * Returns a claim id >= 0, or -ENOSPC when the table is full. */
typedef int (*mmk__fault_fn)(void *ctx, void *addr, int sig, int si_code, int is_write);
int mmk__fault_claim(void *addr, size_t len, mmk__fault_fn fn, void *ctx);
/* Ends a claim. When it returns no handler is inside fn any more, so ctx
 * may be freed. Must not be called from fn itself. */
void mmk__fault_unclaim(int id);

#endif
