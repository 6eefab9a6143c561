/* CRC32C: the library's routine (the three-stream hardware path where the
 * CPU has SSE4.2, else the table) against a bit-at-a-time reference, for
 * every length up to three pages and many alignments and seeds, and the
 * standard check value. */
#include "crc32c.h"
#include "testutil.h"

static uint32_t ref(uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
    }
    return ~crc;
}

int main(void)
{
    CHECK_EQ(mmk__crc32c(0, "123456789", 9), 0xe3069283u);
    enum { N = 3 * 4096 + 64 };
    static unsigned char buf[N + 16];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < sizeof buf; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
    size_t checked = 0;
    for (size_t len = 0; len <= N; len += len < 4200 ? 1 : 61)
        for (size_t al = 0; al < 8; al += len % 7 ? 7 : 1) {
            uint32_t seed = (uint32_t)(len * 2654435761u);
            CHECK_EQ(mmk__crc32c(seed, buf + al, len), ref(seed, buf + al, len));
            checked++;
        }
    /* continuation: crc(a||b) == crc(crc(a), b) across the block boundary */
    CHECK_EQ(mmk__crc32c(mmk__crc32c(0, buf, 4000), buf + 4000, 4096),
             mmk__crc32c(0, buf, 8096));
    printf("crc32c: %zu lengths/alignments match the reference (hardware path: %s)\n", checked,
           mmk__crc32c_hw() ? "yes" : "no");
    printf("ok\n");
    return 0;
}
