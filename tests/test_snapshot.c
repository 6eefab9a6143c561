// mmk-test: labels=concurrent timeout=300
/* view.h, snapshots: both mechanisms (userfaultfd, mprotect + fault claims),
 * small and huge pages; several snapshots; pages never touched; memory given
 * back on release; a writer thread hammering the region while snapshots are
 * taken and read (each must be a consistent cut); MAP_PRIVATE over a memfd
 * is not a snapshot. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

#define PAGE 4096u
#define MiB ((size_t)1 << 20)

static const char *mode_name(unsigned m)
{
    return m == MMK_REGION_UFFD ? "uffd" : m == MMK_REGION_MPROTECT ? "mprotect" : "?";
}

static void fill(char *p, size_t n, int seed)
{
    for (size_t i = 0; i < n; i += 8)
        *(uint64_t *)(p + i) = (uint64_t)(i * 2654435761u) ^ (uint64_t)seed;
}

static void check_snap(const mmk_snapshot *s, const char *want, size_t n)
{
    char *got = malloc(n);
    CHECK(got);
    CHECK_OK(mmk_snapshot_read(s, 0, got, n));
    for (size_t i = 0; i < n; i += PAGE)
        if (memcmp(got + i, want + i, PAGE)) {
            fprintf(stderr, "snapshot differs at page %zu\n", i / PAGE);
            CHECK(0);
        }
    free(got);
}

static void test_errors(void)
{
    mmk_region *r;
    mmk_snapshot *s;
    CHECK_EQ(mmk_region_create(0, 0, &r), -EINVAL);
    CHECK_EQ(mmk_region_create(4096, 0, NULL), -EINVAL);
    CHECK_EQ(mmk_region_create(4096, 0x100, &r), -EINVAL);
    CHECK_EQ(mmk_snapshot_take(NULL, &s), -EINVAL);
    mmk_region_destroy(NULL);
    mmk_snapshot_release(NULL);
    CHECK_EQ(mmk_snapshot_copied(NULL), 0);
    CHECK_OK(mmk_region_create(4096, MMK_REGION_SMALL, &r));
    CHECK_EQ(mmk_region_size(r), 4096);
    CHECK_EQ(mmk_snapshot_take(r, NULL), -EINVAL);
    CHECK_OK(mmk_snapshot_take(r, &s));
    char b[16];
    CHECK_EQ(mmk_snapshot_read(s, 4090, b, 16), -ERANGE);
    CHECK_EQ(mmk_snapshot_read(NULL, 0, b, 1), -EINVAL);
    CHECK_OK(mmk_snapshot_read(s, 4096, b, 0));
    mmk_snapshot_release(s);
    mmk_region_destroy(r);
    /* Default: huge-page granularity. */
    CHECK_OK(mmk_region_create(4096, 0, &r));
    CHECK_EQ(mmk_region_size(r), 2 * MiB);
    mmk_region_destroy(r);
}

/* Everything a snapshot promises, with one mechanism. */
static void test_semantics(unsigned mode, unsigned extra)
{
    const size_t n = 8 * MiB;
    mmk_region *r;
    int rc = mmk_region_create(n, mode | extra, &r);
    if (rc == -ENOTSUP) {
        printf("note: %s snapshots unavailable here\n", mode_name(mode));
        return;
    }
    CHECK_OK(rc);
    CHECK_EQ(mmk_region_mode(r), mode);
    char *b = mmk_region_base(r);
    char *v0 = malloc(n), *v1 = malloc(n);
    CHECK(v0 && v1);
    /* The last 64 pages are left untouched; 8 of them only read. */
    fill(b, n - 64 * PAGE, 1);
    for (size_t i = 0; i < 8; i++)
        CHECK_EQ(((volatile char *)b)[n - (i + 1) * PAGE], 0);
    memcpy(v0, b, n);

    double t0 = now_sec();
    mmk_snapshot *s0, *s1;
    CHECK_OK(mmk_snapshot_take(r, &s0));
    double t1 = now_sec();
    CHECK_EQ(mmk_snapshot_copied(s0), 0);
    /* Write every other page, and the untouched and read-only pages. */
    for (size_t i = 0; i < n; i += 2 * PAGE)
        b[i + 100] ^= 0x55;
    for (size_t i = 0; i < 64; i++)
        b[n - (i + 1) * PAGE + 7] = 9;
    CHECK_EQ(mmk_snapshot_copied(s0), (n / PAGE / 2 + 32) * PAGE);
    check_snap(s0, v0, n);
    memcpy(v1, b, n);

    double t1b = now_sec();
    CHECK_OK(mmk_snapshot_take(r, &s1));
    double t2 = now_sec();
    fill(b, n / 2, 2); /* the first half again */
    check_snap(s1, v1, n);
    check_snap(s0, v0, n);
    /* Unaligned reads across page boundaries. */
    char piece[10000];
    CHECK_OK(mmk_snapshot_read(s1, 3 * PAGE - 77, piece, sizeof piece));
    CHECK(!memcmp(piece, v1 + 3 * PAGE - 77, sizeof piece));

    /* Releasing one leaves the other intact, and frees its copies. */
    long rss0 = rss_bytes();
    mmk_snapshot_release(s0);
    long rss1 = rss_bytes();
    CHECK(rss0 - rss1 >= (long)(n / 2));
    check_snap(s1, v1, n);
    fill(b, n, 3);
    check_snap(s1, v1, n);
    mmk_snapshot_release(s1);
    printf("%s%s: take %.3f ms (first, 8 MiB), %.3f ms (second), release frees %ld KiB\n",
           mode_name(mode), extra ? " small pages" : "", (t1 - t0) * 1e3, (t2 - t1b) * 1e3,
           (rss0 - rss1) >> 10);

    /* Documented pitfall: a system call writing into a protected page fails
     * with EFAULT (only user-mode faults are handled); after one user write
     * the page is writable and the call works. */
    mmk_snapshot *s2;
    CHECK_OK(mmk_snapshot_take(r, &s2));
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    CHECK(write(pfd[1], "xy", 2) == 2);
    errno = 0;
    CHECK(read(pfd[0], b + 5 * PAGE, 1) == -1 && errno == EFAULT);
    b[5 * PAGE] = 0;
    CHECK(read(pfd[0], b + 5 * PAGE, 1) == 1);
    close(pfd[0]);
    close(pfd[1]);
    mmk_snapshot_release(s2);

    /* The limit, then everything released with the region. */
    mmk_snapshot *many[MMK_SNAPSHOT_MAX], *x;
    for (int i = 0; i < MMK_SNAPSHOT_MAX; i++)
        CHECK_OK(mmk_snapshot_take(r, &many[i]));
    CHECK_EQ(mmk_snapshot_take(r, &x), -ENOSPC);
    b[0] = 1;
    for (int i = 0; i < MMK_SNAPSHOT_MAX; i++)
        CHECK_EQ(mmk_snapshot_copied(many[i]), PAGE);
    mmk_snapshot_release(many[3]);
    CHECK_OK(mmk_snapshot_take(r, &x));
    free(v0);
    free(v1);
    mmk_region_destroy(r);
}

/* ---- writer threads hammer the region while snapshots are taken. Writer
 * w of W owns the pages p with p % W == w; its step k stores k into word 0
 * of its (k % M)-th page (M = N / W). A snapshot is correct when it is a
 * consistent cut of each writer's stores: for the largest value V found in
 * a writer's pages, each of them holds the largest k <= V with k % M equal
 * to its index (0 if none), and the rest of every page is untouched. */
#define WRITERS 2

struct hammer {
    uint64_t *base;
    size_t npages;
    atomic_int stop;
    atomic_ulong steps;
};

struct writer_arg {
    struct hammer *h;
    size_t w;
};

static void *writer(void *arg)
{
    struct writer_arg *a = arg;
    struct hammer *h = a->h;
    size_t m = h->npages / WRITERS;
    uint64_t k = 0;
    while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
        for (int i = 0; i < 64; i++) {
            k++;
            size_t page = (k % m) * WRITERS + a->w;
            __atomic_store_n(&h->base[page * (PAGE / 8)], k, __ATOMIC_RELAXED);
        }
        /* Two hammering writers on two CPUs would starve the taker and the
         * fault handler; stay hard but let them run. */
        if (!(k & 1023))
            sched_yield();
    }
    atomic_fetch_add(&h->steps, k);
    return NULL;
}

/* Check the cut; fill cut[w] (or compare with it when `same`). */
static void verify_cut(const mmk_snapshot *s, size_t npages, uint64_t *cut, int same)
{
    uint64_t *img = malloc(npages * PAGE);
    CHECK(img);
    CHECK_OK(mmk_snapshot_read(s, 0, img, npages * PAGE));
    size_t m = npages / WRITERS;
    for (size_t w = 0; w < WRITERS; w++) {
        uint64_t v = 0;
        for (size_t j = 0; j < m; j++)
            if (img[(j * WRITERS + w) * (PAGE / 8)] > v)
                v = img[(j * WRITERS + w) * (PAGE / 8)];
        if (same)
            CHECK_EQ(v, cut[w]); /* an old snapshot must not have moved */
        cut[w] = v;
        for (size_t j = 0; j < m; j++) {
            uint64_t vm = v % m, want;
            if (vm >= j)
                want = v - (vm - j);
            else
                want = v >= (vm + m - j) ? v - (vm + m - j) : 0;
            uint64_t got = img[(j * WRITERS + w) * (PAGE / 8)];
            if (got != want) {
                fprintf(stderr, "writer %zu page %zu: %llu, want %llu (cut at %llu)\n", w, j,
                        (unsigned long long)got, (unsigned long long)want, (unsigned long long)v);
                CHECK(0);
            }
        }
    }
    for (size_t p = 0; p < npages; p++)
        for (size_t w = 1; w < PAGE / 8; w++)
            if (img[p * (PAGE / 8) + w] != (p << 16 | w))
                CHECK(0);
    free(img);
}

static void test_concurrent(unsigned mode, unsigned extra, long rounds)
{
    const size_t npages = (size_t)test_scaled(2048) & ~(size_t)(WRITERS - 1);
    mmk_region *r;
    int rc = mmk_region_create(npages * PAGE, mode | extra, &r);
    if (rc == -ENOTSUP)
        return;
    CHECK_OK(rc);
    struct hammer h = {.base = mmk_region_base(r), .npages = npages};
    for (size_t p = 0; p < npages; p++)
        for (size_t w = 1; w < PAGE / 8; w++)
            h.base[p * (PAGE / 8) + w] = p << 16 | w;
    pthread_t th[WRITERS];
    struct writer_arg wa[WRITERS];
    for (size_t w = 0; w < WRITERS; w++) {
        wa[w] = (struct writer_arg){&h, w};
        CHECK(pthread_create(&th[w], NULL, writer, &wa[w]) == 0);
    }
    enum { KEEP = 3 };
    mmk_snapshot *live[KEEP] = {0};
    uint64_t cut[KEEP][WRITERS] = {{0}};
    uint64_t seed = 99;
    for (long i = 0; i < rounds; i++) {
        struct timespec ts = {0, (long)(test_rand(&seed) % 2000000)};
        nanosleep(&ts, NULL);
        int k = (int)(i % KEEP);
        if (live[k]) {
            verify_cut(live[k], npages, cut[k], 1); /* still the same after more writes */
            mmk_snapshot_release(live[k]);
        }
        CHECK_OK(mmk_snapshot_take(r, &live[k]));
        verify_cut(live[k], npages, cut[k], 0);
    }
    atomic_store(&h.stop, 1);
    for (size_t w = 0; w < WRITERS; w++)
        pthread_join(th[w], NULL);
    for (int k = 0; k < KEEP; k++) {
        if (live[k])
            verify_cut(live[k], npages, cut[k], 1);
        mmk_snapshot_release(live[k]);
    }
    printf("%s%s concurrent: %ld snapshots consistent while %d writers made %lu stores\n",
           mode_name(mode), extra ? " small" : "", rounds, WRITERS,
           (unsigned long)atomic_load(&h.steps));
    mmk_region_destroy(r);
}

/* Random operations against a model that copies the whole region at each
 * take: writes of random spans, takes, releases, reads at random offsets. */
static void test_model(unsigned mode, unsigned extra)
{
    const size_t npages = 96, n = npages * PAGE;
    mmk_region *r;
    int rc = mmk_region_create(n, mode | extra, &r);
    if (rc == -ENOTSUP)
        return;
    CHECK_OK(rc);
    char *b = mmk_region_base(r);
    enum { SLOTS = 5 };
    mmk_snapshot *snap[SLOTS] = {0};
    char *model[SLOTS] = {0};
    char *buf = malloc(n);
    CHECK(buf);
    uint64_t seed = 2024 + mode + extra;
    long ops = test_scaled(3000);
    for (long op = 0; op < ops; op++) {
        int k = (int)(test_rand(&seed) % SLOTS);
        switch (test_rand(&seed) % 4) {
        case 0: /* take or retake */
            mmk_snapshot_release(snap[k]);
            free(model[k]);
            CHECK_OK(mmk_snapshot_take(r, &snap[k]));
            model[k] = malloc(n);
            CHECK(model[k]);
            memcpy(model[k], b, n);
            break;
        case 1: /* release */
            mmk_snapshot_release(snap[k]);
            free(model[k]);
            snap[k] = NULL;
            model[k] = NULL;
            break;
        case 2: { /* read a random span and compare */
            if (!snap[k])
                break;
            size_t off = test_rand(&seed) % n, len = test_rand(&seed) % (n - off + 1);
            CHECK_OK(mmk_snapshot_read(snap[k], off, buf, len));
            CHECK(!memcmp(buf, model[k] + off, len));
            break;
        }
        default: { /* write a random span */
            size_t off = test_rand(&seed) % n, len = test_rand(&seed) % 3 * PAGE / 2 + 1;
            if (len > n - off)
                len = n - off;
            memset(b + off, (int)(op & 0xff), len);
        }
        }
    }
    for (int k = 0; k < SLOTS; k++) {
        if (snap[k]) {
            CHECK_OK(mmk_snapshot_read(snap[k], 0, buf, n));
            CHECK(!memcmp(buf, model[k], n));
        }
        mmk_snapshot_release(snap[k]);
        free(model[k]);
    }
    free(buf);
    mmk_region_destroy(r);
}

/* mprotect mode: each page made writable splits the mapping. Write every
 * other page until far past vm.max_map_count: the handler must widen instead
 * of failing (which would crash), and the snapshot must stay right. */
static void test_map_count_limit(void)
{
    long maxc = 0;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "re");
    if (f) {
        if (fscanf(f, "%ld", &maxc) != 1)
            maxc = 0;
        fclose(f);
    }
    if (maxc <= 0 || maxc > 200000 || test_scale() < 1) {
        printf("note: map-count limit test skipped (max_map_count %ld, scale %.2f)\n", maxc,
               test_scale());
        return;
    }
    size_t writes = (size_t)maxc / 2 + 4096, npages = 2 * writes + 2;
    mmk_region *r;
    int rc = mmk_region_create(npages * PAGE, MMK_REGION_MPROTECT | MMK_REGION_SMALL, &r);
    if (rc == -ENOTSUP)
        return;
    CHECK_OK(rc);
    char *b = mmk_region_base(r);
    mmk_snapshot *s;
    CHECK_OK(mmk_snapshot_take(r, &s));
    double t0 = now_sec();
    for (size_t i = 0; i < writes; i++)
        b[(2 * i + 1) * PAGE] = 1;
    double t1 = now_sec();
    for (size_t i = 0; i < writes; i += 101)
        CHECK_EQ(b[(2 * i + 1) * PAGE], 1);
    char z[PAGE], zero[PAGE] = {0};
    for (size_t i = 0; i < npages; i += 37) {
        CHECK_OK(mmk_snapshot_read(s, i * PAGE, z, PAGE));
        CHECK(!memcmp(z, zero, PAGE));
    }
    printf("map-count limit: %zu alternate pages written (%.1f us each), snapshot holds %zu MiB\n",
           writes, (t1 - t0) * 1e6 / (double)writes, mmk_snapshot_copied(s) >> 20);
    mmk_snapshot_release(s);
    mmk_region_destroy(r);
}

/* The environment variable forces a mechanism when no flag does. */
static void test_env_mode(void)
{
    mmk_region *r;
    setenv("MMK_SNAPSHOT_MODE", "mprotect", 1);
    int rc = mmk_region_create(4096, MMK_REGION_SMALL, &r);
    if (rc != -ENOTSUP) {
        CHECK_OK(rc);
        CHECK_EQ(mmk_region_mode(r), MMK_REGION_MPROTECT);
        mmk_region_destroy(r);
    }
    setenv("MMK_SNAPSHOT_MODE", "uffd", 1);
    rc = mmk_region_create(4096, MMK_REGION_SMALL, &r);
    if (rc != -ENOTSUP) {
        CHECK_OK(rc);
        CHECK_EQ(mmk_region_mode(r), MMK_REGION_UFFD);
        mmk_region_destroy(r);
    }
    /* A flag wins over the variable. */
    rc = mmk_region_create(4096, MMK_REGION_SMALL | MMK_REGION_MPROTECT, &r);
    if (rc != -ENOTSUP) {
        CHECK_OK(rc);
        CHECK_EQ(mmk_region_mode(r), MMK_REGION_MPROTECT);
        mmk_region_destroy(r);
    }
    unsetenv("MMK_SNAPSHOT_MODE");
}

/* MAP_PRIVATE over a memory file is not a snapshot: pages not yet written
 * through the private map keep showing writes made through a shared map. */
static void test_map_private_is_not_a_snapshot(void)
{
    int fd;
    CHECK(mmk_shm_create("t", 2 * PAGE, 0, &fd) > 0);
    char *shared = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(shared != MAP_FAILED);
    shared[0] = 'a';
    shared[PAGE] = 'a';
    char *priv = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    CHECK(priv != MAP_FAILED);
    priv[PAGE + 1] = 'p'; /* page 1 now has a private copy */
    shared[0] = 'b';
    shared[PAGE] = 'b';
    CHECK_EQ(priv[0], 'b');    /* the "snapshot" moved: not point-in-time */
    CHECK_EQ(priv[PAGE], 'a'); /* only copied pages stay */
    munmap(priv, 2 * PAGE);
    munmap(shared, 2 * PAGE);
    close(fd);
}

/* --seconds N: a soak of the concurrent test, both mechanisms (not in CI). */
static int soak(double seconds)
{
    double end = now_sec() + seconds;
    long n = 0;
    while (now_sec() < end) {
        test_concurrent(MMK_REGION_UFFD, n & 1 ? MMK_REGION_SMALL : 0, 200);
        test_concurrent(MMK_REGION_MPROTECT, n & 1 ? MMK_REGION_SMALL : 0, 200);
        n++;
    }
    printf("soak: %ld passes, ok\n", n);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--seconds"))
        return soak(atof(argv[2]));
    test_map_private_is_not_a_snapshot();
    const unsigned modes[2] = {MMK_REGION_UFFD, MMK_REGION_MPROTECT};
    int any = 0;
    for (int m = 0; m < 2; m++) {
        mmk_region *r;
        int rc = mmk_region_create(4096, modes[m], &r);
        if (rc == -ENOTSUP) {
            printf("SKIP part: %s snapshots unavailable here\n", mode_name(modes[m]));
            continue;
        }
        CHECK_OK(rc);
        mmk_region_destroy(r);
        any++;
        test_semantics(modes[m], 0);
        test_semantics(modes[m], MMK_REGION_SMALL);
        test_model(modes[m], 0);
        test_model(modes[m], MMK_REGION_SMALL);
        test_concurrent(modes[m], 0, test_scaled(60));
        test_concurrent(modes[m], MMK_REGION_SMALL, test_scaled(60));
    }
    if (!any)
        skip("neither userfaultfd nor the fault layer is available");
    test_errors();
    test_env_mode();
    test_map_count_limit();
    printf("snapshot: ok\n");
    return 0;
}
