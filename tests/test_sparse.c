/* sparse.h: a 1 TiB array with scattered writes uses only the touched pages;
 * release gives memory back (private and shared); residency is honest;
 * zero pages are reclaimed. */
#include <sys/mman.h>
#include <sys/stat.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

#define PAGE 4096u

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static size_t distinct_pages(uint64_t *idx, size_t n, size_t elem)
{
    uint64_t *pg = malloc(n * sizeof *pg);
    CHECK(pg);
    for (size_t i = 0; i < n; i++)
        pg[i] = idx[i] * elem / PAGE;
    qsort(pg, n, sizeof *pg, cmp_u64);
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += !i || pg[i] != pg[i - 1];
    free(pg);
    return d;
}

static void test_errors(void)
{
    mmk_sparse *s;
    size_t b;
    CHECK_EQ(mmk_sparse_create(0, 8, 0, &s), -EINVAL);
    CHECK_EQ(mmk_sparse_create(8, 0, 0, &s), -EINVAL);
    CHECK_EQ(mmk_sparse_create(8, 8, 0x10, &s), -EINVAL);
    CHECK_EQ(mmk_sparse_create(8, 8, 0, NULL), -EINVAL);
    CHECK_EQ(mmk_sparse_create(UINT64_MAX, 16, 0, &s), -ENOMEM);
    mmk_sparse_destroy(NULL);
    CHECK(mmk_sparse_at(NULL, 0) == NULL);
    CHECK_OK(mmk_sparse_create(1000, 8, 0, &s));
    CHECK(mmk_sparse_at(s, 999) != NULL);
    CHECK(mmk_sparse_at(s, 1000) == NULL);
    CHECK_EQ(mmk_sparse_count(s), 1000);
    CHECK_EQ(mmk_sparse_elem_size(s), 8);
    CHECK(mmk_sparse_base(s) == mmk_sparse_at(s, 0));
    CHECK_EQ(mmk_sparse_fd(s), -EINVAL);
    CHECK_EQ(mmk_sparse_release(s, 999, 2), -ERANGE);
    CHECK_EQ(mmk_sparse_release(s, 1001, 0), -ERANGE);
    CHECK_EQ(mmk_sparse_resident(s, 0, 1001, &b), -ERANGE);
    CHECK_EQ(mmk_sparse_resident(s, 0, 1, NULL), -EINVAL);
    CHECK_EQ(mmk_sparse_reclaim_zero(s, 5, 996, &b), -ERANGE);
    CHECK_OK(mmk_sparse_release(s, 0, 0));
    mmk_sparse_destroy(s);
}

/* 1 TiB of uint64_t; scattered writes; only those pages are charged. */
static void test_tib(void)
{
    const uint64_t count = ((uint64_t)1 << 40) / 8;
    mmk_sparse *s;
    long r0 = rss_bytes();
    int rc = mmk_sparse_create(count, 8, 0, &s);
    if (rc == -ENOMEM)
        skip("1 TiB of address space refused here");
    CHECK_OK(rc);
    size_t res;
    CHECK_OK(mmk_sparse_resident(s, 0, count, &res));
    CHECK_EQ(res, 0);

    size_t n = (size_t)test_scaled(4000);
    uint64_t *idx = malloc(n * sizeof *idx), seed = 7;
    CHECK(idx);
    double t0 = now_sec();
    for (size_t i = 0; i < n; i++) {
        idx[i] = test_rand(&seed) % count;
        *(uint64_t *)mmk_sparse_at(s, idx[i]) = idx[i] ^ 0xabcdef;
    }
    double t1 = now_sec();
    for (size_t i = 0; i < n; i++)
        CHECK(*(uint64_t *)mmk_sparse_at(s, idx[i]) == (idx[i] ^ 0xabcdef));
    size_t pages = distinct_pages(idx, n, 8);
    long r1 = rss_bytes();
    double t2 = now_sec();
    CHECK_OK(mmk_sparse_resident(s, 0, count, &res));
    double t3 = now_sec();
    printf("1 TiB array: %zu scattered writes (%.2f us each), %zu pages, resident %zu KiB, "
           "RSS +%ld KiB, residency scan %.1f ms\n",
           n, (t1 - t0) * 1e6 / (double)n, pages, res >> 10, (r1 - r0) >> 10, (t3 - t2) * 1e3);
    CHECK_EQ(res, pages * PAGE);
    CHECK(r1 - r0 < (long)(pages * PAGE) + (4 << 20));

    /* Reading untouched elements maps the zero page: it costs nothing and,
     * where the kernel can tell (PAGEMAP_SCAN), is not counted. */
    uint64_t sum = 0;
    for (size_t i = 0; i < 200; i++)
        sum += *(volatile uint64_t *)mmk_sparse_at(s, (test_rand(&seed) % count) | 1);
    (void)sum;
    size_t res2;
    CHECK_OK(mmk_sparse_resident(s, 0, count, &res2));
    if (res2 == res)
        printf("zero-page reads not counted (PAGEMAP_SCAN)\n");
    else
        printf("note: zero-page reads counted (%zu KiB more): kernel without PAGEMAP_SCAN\n",
               (res2 - res) >> 10);

    /* Release everything: RSS falls, elements read zero. */
    long r2 = rss_bytes();
    CHECK_OK(mmk_sparse_release(s, 0, count));
    long r3 = rss_bytes();
    CHECK_OK(mmk_sparse_resident(s, 0, count, &res));
    CHECK_EQ(res, 0);
    CHECK(r2 - r3 >= (long)(pages * PAGE * 9 / 10));
    for (size_t i = 0; i < n; i += 17)
        CHECK(*(uint64_t *)mmk_sparse_at(s, idx[i]) == 0);
    free(idx);
    mmk_sparse_destroy(s);
}

static void test_partial_release(void)
{
    mmk_sparse *s;
    const size_t elem = 1000;
    CHECK_OK(mmk_sparse_create(100000, elem, 0, &s));
    for (uint64_t i = 0; i < 100; i++)
        memset(mmk_sparse_at(s, i), (int)(i + 1), elem);
    /* Elements 5..40 cross page boundaries at both ends. */
    CHECK_OK(mmk_sparse_release(s, 5, 36));
    for (uint64_t i = 0; i < 100; i++) {
        unsigned char *p = mmk_sparse_at(s, i);
        int want = (i >= 5 && i < 41) ? 0 : (int)(i + 1);
        for (size_t k = 0; k < elem; k += 97)
            CHECK_EQ(p[k], want);
        CHECK_EQ(p[elem - 1], want);
    }
    /* A tiny range inside one page. */
    CHECK_OK(mmk_sparse_release(s, 50, 1));
    CHECK_EQ(*(unsigned char *)mmk_sparse_at(s, 49), 50);
    CHECK_EQ(*(unsigned char *)mmk_sparse_at(s, 50), 0);
    CHECK_EQ(*(unsigned char *)mmk_sparse_at(s, 51), 52);
    /* Releasing untouched memory creates no pages. */
    size_t res0, res1;
    CHECK_OK(mmk_sparse_resident(s, 0, 100000, &res0));
    CHECK_OK(mmk_sparse_release(s, 5000, 3));
    CHECK_OK(mmk_sparse_resident(s, 0, 100000, &res1));
    CHECK_EQ(res0, res1);
    mmk_sparse_destroy(s);
}

static void test_reclaim_zero(int flags)
{
    mmk_sparse *s;
    const uint64_t pages = 256;
    CHECK_OK(mmk_sparse_create(pages * PAGE / 8, 8, flags, &s));
    char *b = mmk_sparse_base(s);
    for (uint64_t i = 0; i < pages; i++)
        b[i * PAGE + (i * 8) % PAGE] = 1;
    /* Zero every other page again, but leave one bit in page 2. */
    for (uint64_t i = 0; i < pages; i += 2)
        b[i * PAGE + (i * 8) % PAGE] = 0;
    b[2 * PAGE + PAGE - 1] = 1;
    size_t res, freed = 0;
    CHECK_OK(mmk_sparse_resident(s, 0, pages * PAGE / 8, &res));
    CHECK_EQ(res, pages * PAGE);
    CHECK_OK(mmk_sparse_reclaim_zero(s, 0, pages * PAGE / 8, &freed));
    CHECK_EQ(freed, (pages / 2 - 1) * PAGE);
    CHECK_OK(mmk_sparse_resident(s, 0, pages * PAGE / 8, &res));
    CHECK_EQ(res, (pages / 2 + 1) * PAGE);
    for (uint64_t i = 1; i < pages; i += 2)
        CHECK_EQ(b[i * PAGE + (i * 8) % PAGE], 1);
    CHECK_EQ(b[2 * PAGE + PAGE - 1], 1);
    /* A second pass finds nothing more. */
    CHECK_OK(mmk_sparse_reclaim_zero(s, 0, pages * PAGE / 8, &freed));
    CHECK_EQ(freed, 0);
    mmk_sparse_destroy(s);
}

/* Shared: another mapping of the fd sees the elements; release punches a hole. */
static void test_shared(void)
{
    const uint64_t count = ((uint64_t)64 << 30) / 16;
    mmk_sparse *s;
    int rc = mmk_sparse_create(count, 16, MMK_SPARSE_SHARED, &s);
    if (rc == -ENOMEM || rc == -EFBIG || rc == -ENOSPC) {
        printf("note: 64 GiB shared array refused (%s)\n", mmk_strerror(rc));
        return;
    }
    CHECK_OK(rc);
    int fd = mmk_sparse_fd(s);
    CHECK(fd >= 0);
    const uint64_t step = (count / 1000) & ~(uint64_t)255; /* page-aligned elements */
    for (uint64_t i = 0; i < 1000; i++)
        *(uint64_t *)mmk_sparse_at(s, i * step) = i + 1;
    /* A second, independent mapping (as another process would make). */
    size_t win = 1 << 20;
    uint64_t *peer = mmap(NULL, win, PROT_READ, MAP_SHARED, fd, (off_t)(500 * step * 16) & ~(off_t)(PAGE - 1));
    CHECK(peer != MAP_FAILED);
    size_t within = (500 * step * 16) % PAGE / 8;
    CHECK_EQ(peer[within], 501);
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    long blocks0 = (long)st.st_blocks;
    size_t res;
    CHECK_OK(mmk_sparse_resident(s, 0, 600 * step, &res));
    CHECK_EQ(res, 600 * PAGE);
    CHECK_OK(mmk_sparse_release(s, 0, 600 * step));
    CHECK_OK(mmk_sparse_resident(s, 0, 600 * step, &res));
    CHECK_EQ(res, 0);
    CHECK(fstat(fd, &st) == 0);
    printf("shared: file blocks %ld -> %ld after punching 600 pages\n", blocks0, (long)st.st_blocks);
    CHECK(blocks0 - (long)st.st_blocks >= 600 * 8);
    /* The hole is visible to the other mapping (reading it there allocates a
     * fresh zero page in the file: shared memory has no zero page). */
    CHECK_EQ(peer[within], 0);
    CHECK_EQ(*(uint64_t *)mmk_sparse_at(s, 700 * step), 701);
    munmap(peer, win);
    mmk_sparse_destroy(s);
}

int main(void)
{
    test_errors();
    test_partial_release();
    test_reclaim_zero(0);
    test_reclaim_zero(MMK_SPARSE_SHARED);
    test_shared();
    test_tib();
    printf("sparse: ok\n");
    return 0;
}
