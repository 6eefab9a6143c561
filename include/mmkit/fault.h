/* mmkit/fault.h: faults on mapped memory become error returns. */
#ifndef MMKIT_FAULT_H
#define MMKIT_FAULT_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Copy n bytes from src to dst. 0, or -EFAULT (src has no backing page:
 * beyond end of file, unmapped) / -EIO (hardware or I/O error) if reading
 * src faulted; dst then holds an unspecified prefix. */
MMK_API int mmk_copy_guarded(void *dst, const void *src, size_t n);

#ifdef __cplusplus
}
#endif
#endif
