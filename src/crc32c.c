/* CRC32C: hardware instruction on x86-64 with SSE4.2, slicing-by-8 table
 * otherwise. The choice is made once, on first use. */
#include <string.h>

#include "crc32c.h"

static uint32_t table[8][256];
static int table_ready;

static void make_table(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
    __atomic_store_n(&table_ready, 1, __ATOMIC_RELEASE);
}

static uint32_t crc_sw(uint32_t crc, const unsigned char *p, size_t n)
{
    if (!__atomic_load_n(&table_ready, __ATOMIC_ACQUIRE))
        make_table(); /* idempotent: racing threads compute the same table */
    while (n && ((uintptr_t)p & 7)) {
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
              table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^
              table[2][(w >> 40) & 0xff] ^ table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
    return crc;
}

#if defined(__x86_64__)
/* The crc32 instruction takes 3 cycles but can start one a cycle: three
 * independent streams over neighbouring blocks, joined by shifting the
 * first two states over the blocks after them (a GF(2) matrix: appending
 * BLK zero bytes to a raw CRC state is linear), run about 2.5x faster than
 * one chain. A 4 KiB page is three blocks and 64 bytes. */
#define BLK 1344u
static uint32_t shift_blk[32]; /* state -> state after BLK zero bytes */
static int shift_ready;

static uint32_t gf2_times(const uint32_t *mat, uint32_t vec)
{
    uint32_t s = 0;
    for (int i = 0; i < 32; i++) /* no branch on the data: it is random */
        s ^= mat[i] & (0u - ((vec >> i) & 1));
    return s;
}

static void gf2_mul(uint32_t *out, const uint32_t *a, const uint32_t *b) /* a after b */
{
    uint32_t t[32];
    for (int i = 0; i < 32; i++)
        t[i] = gf2_times(a, b[i]);
    memcpy(out, t, sizeof t);
}

static void make_shift(void)
{
    uint32_t op[32], r[32];
    op[0] = 0x82f63b78u; /* one zero bit, reflected */
    for (int i = 1; i < 32; i++)
        op[i] = 1u << (i - 1);
    for (int k = 0; k < 3; k++) /* 2, 4, 8 bits: one byte */
        gf2_mul(op, op, op);
    for (int i = 0; i < 32; i++)
        r[i] = 1u << i;
    for (uint32_t n = BLK; n; n >>= 1) {
        if (n & 1)
            gf2_mul(r, op, r);
        gf2_mul(op, op, op);
    }
    memcpy(shift_blk, r, sizeof r);
    __atomic_store_n(&shift_ready, 1, __ATOMIC_RELEASE);
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p,
                                                         size_t n)
{
    uint64_t c = crc;
    while (n && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        n--;
    }
    if (n >= 3 * BLK && !__atomic_load_n(&shift_ready, __ATOMIC_ACQUIRE))
        make_shift(); /* idempotent: racing threads compute the same matrix */
    while (n >= 3 * BLK) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < BLK; i += 8) {
            uint64_t a, b, d;
            memcpy(&a, p + i, 8);
            memcpy(&b, p + BLK + i, 8);
            memcpy(&d, p + 2 * BLK + i, 8);
            c = __builtin_ia32_crc32di(c, a);
            c1 = __builtin_ia32_crc32di(c1, b);
            c2 = __builtin_ia32_crc32di(c2, d);
        }
        c = gf2_times(shift_blk, (uint32_t)c) ^ (uint32_t)c1;
        c = gf2_times(shift_blk, (uint32_t)c) ^ (uint32_t)c2;
        p += 3 * BLK;
        n -= 3 * BLK;
    }
    while (n >= 32) {
        uint64_t a, b, d, e;
        memcpy(&a, p, 8);
        memcpy(&b, p + 8, 8);
        memcpy(&d, p + 16, 8);
        memcpy(&e, p + 24, 8);
        c = __builtin_ia32_crc32di(c, a);
        c = __builtin_ia32_crc32di(c, b);
        c = __builtin_ia32_crc32di(c, d);
        c = __builtin_ia32_crc32di(c, e);
        p += 32;
        n -= 32;
    }
    while (n >= 8) {
        uint64_t a;
        memcpy(&a, p, 8);
        c = __builtin_ia32_crc32di(c, a);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return (uint32_t)c;
}
#endif

static int use_hw = -1;

int mmk__crc32c_hw(void)
{
    int v = __atomic_load_n(&use_hw, __ATOMIC_RELAXED);
    if (v < 0) {
#if defined(__x86_64__)
        __builtin_cpu_init();
        v = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#else
        v = 0;
#endif
        __atomic_store_n(&use_hw, v, __ATOMIC_RELAXED);
    }
    return v;
}

uint32_t mmk__crc32c(uint32_t crc, const void *buf, size_t len)
{
    crc = ~crc;
#if defined(__x86_64__)
    if (mmk__crc32c_hw())
        return ~crc_hw(crc, buf, len);
#endif
    return ~crc_sw(crc, buf, len);
}
