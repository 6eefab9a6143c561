/* arena.h: growth without moving, alignment, rewind giving memory back,
 * exhaustion, the guard region, ASan poisoning. */
#include <signal.h>
#include <sys/wait.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_ASAN 1
#endif
#endif
#ifdef HAVE_ASAN
#include <sanitizer/asan_interface.h>
#endif

#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)

static int count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "re");
    int n = 0, ch;
    CHECK(f);
    while ((ch = fgetc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

static void test_errors(void)
{
    mmk_arena *a = NULL;
    CHECK_EQ(mmk_arena_create(0, 0, &a), -EINVAL);
    CHECK_EQ(mmk_arena_create(4096, 0, NULL), -EINVAL);
    CHECK_EQ(mmk_arena_create(4096, 0x80, &a), -EINVAL);
    CHECK(mmk_arena_create((size_t)1 << 62, 0, &a) < 0);
    mmk_arena_destroy(NULL);
    CHECK(mmk_arena_alloc(NULL, 16, 8) == NULL);
    CHECK_EQ(mmk_arena_mark(NULL), 0);
    mmk_arena_rewind(NULL, 0);
    mmk_arena_reset(NULL);
    struct mmk_arena_stats st;
    CHECK_EQ(mmk_arena_stats(NULL, &st), -EINVAL);

    CHECK_OK(mmk_arena_create(MiB, 0, &a));
    CHECK(mmk_arena_alloc(a, 16, 3) == NULL);
    CHECK(mmk_arena_alloc(a, 16, 24) == NULL);
    CHECK(mmk_arena_alloc_inline(a, 16, 12) == NULL);
    CHECK(mmk_arena_alloc(a, SIZE_MAX, 8) == NULL);
    CHECK(mmk_arena_alloc(a, SIZE_MAX - 4096, 1) == NULL);
    CHECK(mmk_arena_alloc(a, 1, (size_t)1 << 63) == NULL);
    CHECK_EQ(mmk_arena_mark(a), 0); /* failed calls consumed nothing */
    CHECK_EQ(mmk_arena_stats(a, NULL), -EINVAL);
    mmk_arena_destroy(a);
}

static void test_alignment(void)
{
    mmk_arena *a;
    CHECK_OK(mmk_arena_create(64 * MiB, 0, &a));
    char *prev_end = NULL;
    uint64_t seed = 42;
    for (int i = 0; i < 20000; i++) {
        size_t align = (size_t)1 << (test_rand(&seed) % 13);
        size_t size = test_rand(&seed) % 200;
        char *p = (i & 1) ? mmk_arena_alloc(a, size, align) : mmk_arena_alloc_inline(a, size, align);
        CHECK(p);
        CHECK(((uintptr_t)p & (align - 1)) == 0);
        CHECK(mmk_arena_contains(a, p));
        if (prev_end)
            CHECK(p >= prev_end); /* no overlap, monotonic */
        memset(p, i & 0xff, size);
        prev_end = p + size;
    }
    /* align 0 means the default (16). */
    void *d = mmk_arena_alloc(a, 1, 0);
    CHECK(d && ((uintptr_t)d & 15) == 0);
    /* size 0 gives a pointer, consumes nothing beyond alignment. */
    size_t m = mmk_arena_mark(a);
    CHECK(mmk_arena_alloc(a, 0, 1) != NULL);
    CHECK_EQ(mmk_arena_mark(a), m);
    mmk_arena_destroy(a);
}

static void test_mark_rewind(void)
{
    mmk_arena *a;
    CHECK_OK(mmk_arena_create(16 * MiB, 0, &a));
    char *x = mmk_arena_alloc(a, 100, 8);
    CHECK(x);
    size_t m = mmk_arena_mark(a);
    char *y = mmk_arena_alloc(a, 1000, 64);
    CHECK(y && y > x);
    mmk_arena_rewind(a, m + 1000000); /* beyond the position: ignored */
    CHECK(mmk_arena_mark(a) > m);
    mmk_arena_rewind(a, m);
    CHECK_EQ(mmk_arena_mark(a), m);
    char *z = mmk_arena_alloc(a, 1000, 64);
    CHECK(z == y); /* the same memory is handed out again */
    struct mmk_arena_stats st;
    CHECK_OK(mmk_arena_stats(a, &st));
    CHECK_EQ(st.reserved, 16 * MiB);
    CHECK(st.used == mmk_arena_mark(a));
    CHECK(st.peak >= st.used);
    CHECK(st.committed >= st.used);
    mmk_arena_reset(a);
    CHECK_EQ(mmk_arena_mark(a), 0);
    CHECK(mmk_arena_alloc(a, 8, 8) == (void *)x);
    mmk_arena_destroy(a);
}

/* Grow to several GiB: pointers never move, the committed range stays a
 * handful of mappings (max_map_count), commits take O(log n) steps. */
static void test_growth(void)
{
    size_t total = (size_t)test_scaled(8) * GiB;
    mmk_arena *a;
    int rc = mmk_arena_create(64 * GiB, 0, &a);
    if (rc == -ENOMEM) {
        printf("note: 64 GiB reservation refused; growth test skipped\n");
        return;
    }
    CHECK_OK(rc);
    int maps0 = count_maps();
    char *first = NULL;
    size_t n = total / MiB;
    for (size_t i = 0; i < n; i++) {
        char *p = mmk_arena_alloc_inline(a, MiB, 4096);
        CHECK(p);
        if (!first)
            first = p;
        CHECK(p == first + i * MiB);
        p[0] = (char)i; /* touch one page a MiB */
    }
    for (size_t i = 0; i < n; i += 97)
        CHECK_EQ(first[i * MiB], (char)i);
    int maps1 = count_maps();
    struct mmk_arena_stats st;
    CHECK_OK(mmk_arena_stats(a, &st));
    printf("grew to %zu MiB: %llu commit steps, mappings %d -> %d\n", st.used / MiB,
           (unsigned long long)st.commits, maps0, maps1);
    CHECK(st.used == total);
    CHECK(st.commits < 64);
    CHECK(maps1 - maps0 < 8);
    mmk_arena_destroy(a);
}

/* Rewind and reset give the pages beyond the keep size back at once. */
static void test_rss_falls(void)
{
    size_t big = (size_t)test_scaled(256) * MiB;
    mmk_arena *a;
    CHECK_OK(mmk_arena_create(GiB, 0, &a));
    size_t m0 = mmk_arena_mark(a);
    long r0 = rss_bytes();
    char *p = mmk_arena_alloc(a, big, 64);
    CHECK(p);
    memset(p, 0x5a, big);
    long r1 = rss_bytes();
    mmk_arena_rewind(a, m0);
    long r2 = rss_bytes();
    printf("RSS: before %ld MiB, after touching %zu MiB %ld MiB, after rewind %ld MiB\n",
           r0 >> 20, big / MiB, r1 >> 20, r2 >> 20);
    CHECK(r1 - r0 >= (long)(big * 9 / 10));
    CHECK(r1 - r2 >= (long)(big * 9 / 10));
    struct mmk_arena_stats st;
    CHECK_OK(mmk_arena_stats(a, &st));
    CHECK(st.committed <= MMK_ARENA_DEFAULT_KEEP);
    CHECK(st.decommits >= 1);
    CHECK(st.peak >= big);

    /* A larger keep: that much stays committed and resident. */
    mmk_arena_set_keep(a, 8 * MiB);
    p = mmk_arena_alloc(a, 32 * MiB, 64);
    CHECK(p);
    memset(p, 1, 32 * MiB);
    mmk_arena_reset(a);
    CHECK_OK(mmk_arena_stats(a, &st));
    CHECK_EQ(st.committed, 8 * MiB);
    size_t res = 0;
    CHECK_OK(mmk_resident(p, 8 * MiB, &res));
    CHECK_EQ(res, 8 * MiB);
    /* Kept memory is reused with its old contents (no zeroing). */
    char *q = mmk_arena_alloc(a, 16, 1);
    CHECK(q == p && q[0] == 1);
    mmk_arena_destroy(a);
}

static void test_exhaustion(void)
{
    mmk_arena *a;
    CHECK_OK(mmk_arena_create(MiB, 0, &a));
    size_t got = 0;
    while (mmk_arena_alloc(a, 1000, 8))
        got += 1000;
    CHECK(got <= MiB && got > MiB - 2000);
    CHECK(mmk_arena_alloc(a, 1000, 8) == NULL);
    CHECK(mmk_arena_alloc_inline(a, 1000, 8) == NULL);
    /* What is left still fits. */
    size_t left = MiB - mmk_arena_mark(a);
    if (left)
        CHECK(mmk_arena_alloc(a, left, 1) != NULL);
    CHECK(mmk_arena_alloc(a, 1, 1) == NULL);
    mmk_arena_reset(a);
    CHECK(mmk_arena_alloc(a, MiB, 4096) != NULL);
    mmk_arena_destroy(a);
}

static void overrun_guard(void *arg)
{
    (void)arg;
    mmk_arena *a;
    if (mmk_arena_create(64 * 1024, MMK_ARENA_GUARD, &a))
        _exit(3);
    char *p = mmk_arena_alloc(a, 64 * 1024, 1);
    if (!p)
        _exit(4);
    memset(p, 1, 64 * 1024);
    ((volatile char *)p)[64 * 1024 + 100] = 1; /* one step past the end */
    _exit(0);
}

static void overrun_commit(void *arg)
{
    (void)arg;
    mmk_arena *a;
    if (mmk_arena_create(64 * MiB, 0, &a))
        _exit(3);
    char *p = mmk_arena_alloc(a, 100, 1);
    struct mmk_arena_stats st;
    mmk_arena_stats(a, &st);
    ((volatile char *)p)[st.committed + 10] = 1; /* past the committed part */
    _exit(0);
}

static void test_guard(void)
{
    int st = run_child(overrun_guard, NULL);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
    st = run_child(overrun_commit, NULL);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
}

static void test_hugepage_flag(void)
{
    mmk_arena *a;
    CHECK_OK(mmk_arena_create(64 * MiB, MMK_ARENA_HUGEPAGE, &a));
    char *p = mmk_arena_alloc(a, 3 * MiB, 64);
    CHECK(p && ((uintptr_t)p & (2 * MiB - 1)) == 0);
    memset(p, 1, 3 * MiB);
    struct mmk_arena_stats st;
    CHECK_OK(mmk_arena_stats(a, &st));
    CHECK(st.committed % (2 * MiB) == 0);
    mmk_arena_destroy(a);
}

static void test_asan_poison(void)
{
#ifdef HAVE_ASAN
    mmk_arena *a;
    CHECK_OK(mmk_arena_create(MiB, 0, &a));
    char *p = mmk_arena_alloc_inline(a, 24, 8);
    CHECK(p);
    CHECK(!__asan_address_is_poisoned(p));
    CHECK(!__asan_address_is_poisoned(p + 23));
    CHECK(__asan_address_is_poisoned(p + 24));
    CHECK(__asan_address_is_poisoned(p + 4096));
    size_t m = mmk_arena_mark(a);
    char *q = mmk_arena_alloc(a, 64, 8);
    mmk_arena_rewind(a, m);
    CHECK(__asan_address_is_poisoned(q));
    mmk_arena_destroy(a);
    printf("asan poisoning verified\n");
#endif
}

int main(void)
{
    test_errors();
    test_alignment();
    test_mark_rewind();
    test_exhaustion();
    test_rss_falls();
    test_growth();
    test_guard();
    test_hugepage_flag();
    test_asan_poison();
    printf("arena: ok\n");
    return 0;
}
