/* Error strings and version: one table for the library's own codes; errno
 * values are described by the C library's static table. */
#include <string.h>

#include <mmkit/common.h>
#include "internal.h"

MMK_API const char *mmk_strerror(int code)
{
    if (code == 0)
        return "success";
#define X(name, value, text) \
    if (code == (value))     \
        return text;
    MMK_ERRNO_MAP(X)
#undef X
    if (code < 0 && code > -4096) {
        /* strerrordesc_np is static and thread-safe (glibc 2.32+). */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
        const char *s = strerrordesc_np(-code);
        if (s)
            return s;
#else
        switch (-code) {
        case EINVAL: return "invalid argument";
        case ENOMEM: return "out of memory";
        case ENOENT: return "no such file or directory";
        case EFAULT: return "bad address";
        case EIO: return "input/output error";
        case ENOSPC: return "no space left on device";
        case ENOTSUP: return "operation not supported";
        case ETIMEDOUT: return "timed out";
        case EPIPE: return "broken pipe";
        default: break;
        }
#endif
    }
    return "unknown error";
}

MMK_API const char *mmk_version(void) { return MMK_VERSION_STRING; }
