/* mmkit/fault.h: faults on mapped memory become error returns.
 *
 * A mapped file that is truncated under you, a disk that fails, or a peer
 * that shrinks a shared memory object raises SIGBUS or SIGSEGV on the next
 * access, and by default that kills the process. The guarded routines below
 * turn such a fault into an error return instead:
 *   -EFAULT  no backing page: beyond end of file, unmapped, no access;
 *   -EIO     hardware or I/O error on the page (SIGBUS BUS_MCEERR_AR/AO,
 *            BUS_OBJERR).
 *
 * How: a process-wide SIGSEGV/SIGBUS handler (installed on first use, with
 * SA_ONSTACK so a thread's alternate signal stack is used) recognises faults
 * raised inside these routines and makes them return the error. On x86-64
 * this is an exception table: the happy path is a plain copy, no setjmp.
 * Other architectures arm a thread-local sigjmp_buf per call (a few ns).
 * Every fault that is not ours - a NULL dereference, a fault in your own
 * mapping, a signal sent with kill - goes to the handler that was installed
 * before mmkit's, exactly as if mmkit were not there; with no such handler
 * the process dies by the same signal, with the same core dump.
 *
 * Only the guarded operand is protected: a fault on the other one (your own
 * buffer) is a bug in the caller and is not swallowed.
 *
 * Environment: MMK_FAULT=off never installs the handler; the guarded
 * routines then behave like plain memcpy/loads/stores and a fault kills the
 * process. See docs/guide-fault.md for ASan, valgrind and gdb.
 *
 * All functions are thread-safe; the guarded accesses are async-signal-safe
 * once the handler is installed (call mmk_fault_install first if you use
 * them from a signal handler). */
#ifndef MMKIT_FAULT_H
#define MMKIT_FAULT_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Copy n bytes from src to dst. 0, or -EFAULT (src has no backing page:
 * beyond end of file, unmapped) / -EIO (hardware or I/O error) if reading
 * src faulted; dst then holds an unspecified prefix. The buffers must not
 * overlap. A fault on dst is not caught. */
MMK_API int mmk_copy_guarded(void *dst, const void *src, size_t n);

/* Copy n bytes from src to dst where dst may fault (a store into a mapped
 * file or shared memory that can shrink). 0, -EFAULT or -EIO as above; dst
 * then holds an unspecified prefix of src. A fault on src is not caught. */
MMK_API int mmk_store_guarded(void *dst, const void *src, size_t n);

/* Guarded fixed-size loads and stores for memory a peer or a file controls
 * (indices, headers). 0, -EFAULT or -EIO; *out is untouched on error. An
 * aligned access is one instruction on x86-64, so it is single-copy atomic
 * (relaxed ordering: add your own fences). */
MMK_API int mmk_load_u32_guarded(const void *src, uint32_t *out);
MMK_API int mmk_load_u64_guarded(const void *src, uint64_t *out);
MMK_API int mmk_store_u32_guarded(void *dst, uint32_t v);
MMK_API int mmk_store_u64_guarded(void *dst, uint64_t v);

/* Install the process-wide handler now (the guarded routines otherwise
 * install it on first use and keep it for the life of the process).
 * Reference-counted: each successful call is undone by one
 * mmk_fault_uninstall; when the count reaches 0 the previous handlers are
 * restored, unless someone replaced ours meanwhile. If someone did replace
 * it, mmk_fault_install puts ours back on top, chaining to theirs. Handlers
 * installed before ours receive every fault that is not ours; handlers
 * installed after ours see faults first and must chain to the previous
 * handler for ours to work. 0 or -errno. */
MMK_API int mmk_fault_install(void);
MMK_API void mmk_fault_uninstall(void);

/* 1 when faults are caught, 0 when MMK_FAULT=off disabled the layer. */
MMK_API int mmk_fault_enabled(void);

/* How many faults the guarded routines have turned into errors since the
 * process started (all threads). For statistics and tests. */
MMK_API uint64_t mmk_fault_count(void);

#ifdef __cplusplus
}
#endif
#endif
