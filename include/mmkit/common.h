/* mmkit: conventions shared by every module: export macro, error codes,
 * version. Every function returning int or ssize_t returns >= 0 on success
 * and a negative code on failure: -errno, or one of the MMK_E* codes below. */
#ifndef MMKIT_COMMON_H
#define MMKIT_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  if defined(MMK_BUILDING)
#    define MMK_API __declspec(dllexport)
#  else
#    define MMK_API
#  endif
#else
#  define MMK_API __attribute__((visibility("default")))
#endif

#define MMK_VERSION_MAJOR 0
#define MMK_VERSION_MINOR 1
#define MMK_VERSION_PATCH 0

/* Library error codes. All are below -40000 so they never collide with a
 * negated errno value. X-macro: name, value, description. */
#define MMK_ERRNO_MAP(X)                                                              \
    X(ECORRUPT, -40001, "stored or shared data failed validation (checksum, bounds, peer index)") \
    X(EFORMAT,  -40002, "incompatible format: version, byte order, pointer width or page size")

#define MMK_ECORRUPT (-40001)
#define MMK_EFORMAT  (-40002)

/* A static string describing `code`: a negated errno, an MMK_E* code, or 0.
 * Never NULL; unknown codes get a generic text. Thread-safe. */
MMK_API const char *mmk_strerror(int code);

/* The library's version as "MAJOR.MINOR.PATCH". */
MMK_API const char *mmk_version(void);

#ifdef __cplusplus
}
#endif
#endif
