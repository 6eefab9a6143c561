/* CRC32C (Castagnoli), internal. Uses the SSE4.2 crc32 instruction when the
 * CPU has it (detected once at run time), else a table. */
#ifndef MMK_CRC32C_H
#define MMK_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: crc32c(crc32c(0, a), b) == crc32c(0, a||b). Thread-safe. */
uint32_t mmk__crc32c(uint32_t crc, const void *buf, size_t len);

/* 1 when the hardware path is in use (for reports). */
int mmk__crc32c_hw(void);

#endif
