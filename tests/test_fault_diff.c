/* The guarded page compare the heap's commit uses (mmk__diff_guarded):
 * against a plain reference for every single-word and two-word difference
 * in a page and for random ones, equal pages, sizes from 16 bytes, and a
 * compared buffer that faults (unmapped and PROT_NONE): -EFAULT, never a
 * crash. */
#include <string.h>
#include <sys/mman.h>

#include <mmkit/mmkit.h>
#include "fault_internal.h"
#include "testutil.h"

static void ref(const uint64_t *a, const uint64_t *b, size_t n, size_t r[2])
{
    size_t lo = 0, hi = n / 8;
    while (lo < hi && a[lo] == b[lo])
        lo++;
    while (hi > lo && a[hi - 1] == b[hi - 1])
        hi--;
    r[0] = lo < hi ? lo * 8 : n;
    r[1] = lo < hi ? hi * 8 : n;
}

static void check(const void *a, const void *b, size_t n)
{
    size_t got[2] = {99, 99}, want[2];
    ref(a, b, n, want);
    CHECK_EQ(mmk__diff_guarded(a, b, n, got), 0);
    CHECK_EQ(got[0], want[0]);
    CHECK_EQ(got[1], want[1]);
}

int main(void)
{
    enum { P = 4096 };
    uint64_t *a = aligned_alloc(64, P), *b = aligned_alloc(64, P);
    CHECK(a && b);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < P / 8; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        a[i] = b[i] = x;
    }
    check(a, b, P); /* equal */
    for (size_t n = 16; n <= P; n += 16)
        check(a, b, n);
    for (size_t i = 0; i < P / 8; i++) { /* one word, each byte position in turn */
        ((unsigned char *)&b[i])[i % 8] ^= 0x40;
        check(a, b, P);
        check(a, b, (i * 8 + 16) & ~(size_t)15);
        b[i] = a[i];
    }
    for (size_t i = 0; i < P / 8; i += 3) /* two words */
        for (size_t j = i; j < P / 8; j += 37) {
            b[i] ^= 1;
            b[j] ^= 1ull << 63;
            check(a, b, P);
            b[i] = a[i];
            b[j] = a[j];
        }
    for (int r = 0; r < 2000; r++) { /* random sets of changes */
        int k = 1 + r % 9;
        for (int t = 0; t < k; t++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            ((unsigned char *)b)[x % P] ^= (unsigned char)(1 + (x >> 32) % 255);
        }
        check(a, b, P);
        memcpy(b, a, P);
    }
    /* a compared page that faults: the heap's clean view after someone cut
     * the file short looks like this */
    unsigned char *m = mmap(NULL, 3 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED);
    memcpy(m, a, P);
    CHECK_OK(mprotect(m + P, P, PROT_NONE));
    CHECK_OK(munmap(m + 2 * P, P));
    size_t rg[2];
    check(a, m, P);                                      /* readable: fine */
    CHECK_EQ(mmk__diff_guarded(a, m + P, P, rg), -EFAULT); /* PROT_NONE */
    CHECK_EQ(mmk__diff_guarded(a, m + 2 * P, P, rg), -EFAULT); /* unmapped */
    CHECK_EQ(mmk__diff_guarded(a, m + P / 2, P, rg), -EFAULT); /* equal, then faults */
    CHECK_EQ(mmk__diff_guarded(a, m, 24, rg), -EFAULT);   /* not a multiple of 16 */
    munmap(m, 2 * P);
    free(a);
    free(b);
    printf("ok\n");
    return 0;
}
