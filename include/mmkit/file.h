/* mmkit/file.h: the safe mapped file. */
#ifndef MMKIT_FILE_H
#define MMKIT_FILE_H

#include <mmkit/common.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MMK_FILE_RDONLY 0u
#define MMK_FILE_RDWR   1u
#define MMK_FILE_CREATE 2u

typedef struct mmk_file mmk_file;
MMK_API int      mmk_file_open(const char *path, unsigned flags, mmk_file **out);
MMK_API void     mmk_file_close(mmk_file *f);
MMK_API uint64_t mmk_file_size(const mmk_file *f);
MMK_API ssize_t  mmk_file_read_at(mmk_file *f, void *buf, size_t len, uint64_t off);
MMK_API ssize_t  mmk_file_write_at(mmk_file *f, const void *buf, size_t len, uint64_t off);
MMK_API int      mmk_file_resize(mmk_file *f, uint64_t size);
MMK_API int      mmk_file_sync(mmk_file *f);

#ifdef __cplusplus
}
#endif
#endif
