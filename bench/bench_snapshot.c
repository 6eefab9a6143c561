/* Point-in-time snapshots: mmkit regions (userfaultfd and mprotect, 2 MiB
 * and 4 KiB pages) against fork() of a process that has touched the same
 * memory (what Redis BGSAVE does), side by side; then the cost of the first
 * write to a page after a snapshot, against the copy-on-write fault a parent
 * pays after fork(). */
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mmkit/mmkit.h>
#include "bench.h"

#define MiB ((size_t)1 << 20)
#define PAGE 4096u

static size_t fw_size = 256 * MiB; /* region for the first-write figures */

struct variant {
    const char *name;
    unsigned flags;
};

static const struct variant variants[] = {
    {"uffd, 2 MiB pages", MMK_REGION_UFFD},
    {"uffd, 4 KiB pages", MMK_REGION_UFFD | MMK_REGION_SMALL},
    {"mprotect, 2 MiB pages", MMK_REGION_MPROTECT},
    {"mprotect, 4 KiB pages", MMK_REGION_MPROTECT | MMK_REGION_SMALL},
};
#define NV (sizeof variants / sizeof variants[0])

/* Take a snapshot of a freshly populated region; seconds, or -1. */
static double take_once(size_t size, unsigned flags, double *second)
{
    mmk_region *r;
    if (mmk_region_create(size, flags, &r))
        return -1;
    char *b = mmk_region_base(r);
    memset(b, 0x5a, size);
    mmk_snapshot *s, *s2;
    double t0 = bench_now();
    int rc = mmk_snapshot_take(r, &s);
    double t1 = bench_now();
    if (second && !rc) {
        /* 1000 scattered pages written, then the next snapshot. */
        for (size_t i = 0; i < 1000; i++)
            b[(i * 7919 % (size / PAGE)) * PAGE] = 1;
        double t2 = bench_now();
        if (mmk_snapshot_take(r, &s2) == 0) {
            *second = bench_now() - t2;
            mmk_snapshot_release(s2);
        }
    }
    if (!rc)
        mmk_snapshot_release(s);
    mmk_region_destroy(r);
    return rc ? -1 : t1 - t0;
}

/* fork() of a process that touched `size` bytes: time until fork returns in
 * the parent (the snapshot exists then); the child exits at once. */
static double fork_once(size_t size, int huge)
{
    char *p = mmap(NULL, size + 2 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    char *a = (char *)(((uintptr_t)p + 2 * MiB - 1) & ~(uintptr_t)(2 * MiB - 1));
    madvise(a, size, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    memset(a, 0x5a, size);
    fflush(NULL);
    double t0 = bench_now();
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    double t1 = bench_now();
    waitpid(pid, NULL, 0);
    munmap(p, size + 2 * MiB);
    return pid < 0 ? -1 : t1 - t0;
}

/* Median first-write cost (ns) to n scattered pages after a snapshot. */
static double first_write_snapshot(unsigned flags, size_t n)
{
    size_t size = fw_size;
    mmk_region *r;
    if (mmk_region_create(size, flags, &r))
        return -1;
    volatile char *b = mmk_region_base(r);
    memset((char *)b, 1, size);
    mmk_snapshot *s;
    mmk_snapshot_take(r, &s);
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++)
        b[(i * 7919 % (size / PAGE)) * PAGE] = 2;
    double t = bench_now() - t0;
    mmk_snapshot_release(s);
    mmk_region_destroy(r);
    return t * 1e9 / (double)n;
}

/* The parent's copy-on-write fault after fork(), with the child alive. */
static double first_write_fork(size_t n)
{
    size_t size = fw_size;
    volatile char *b = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED)
        return -1;
    madvise((char *)b, size, MADV_NOHUGEPAGE);
    memset((char *)b, 1, size);
    int pfd[2];
    if (pipe(pfd))
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        char c;
        close(pfd[1]);
        while (read(pfd[0], &c, 1) < 0)
            ;
        _exit(0);
    }
    close(pfd[0]);
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++)
        b[(i * 7919 % (size / PAGE)) * PAGE] = 2;
    double t = bench_now() - t0;
    close(pfd[1]);
    waitpid(pid, NULL, 0);
    munmap((char *)b, size);
    return t * 1e9 / (double)n;
}

/* Plain first write to a page never touched (a zero-fill fault): the floor. */
static double first_write_plain(size_t n)
{
    size_t size = fw_size;
    volatile char *b = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED)
        return -1;
    madvise((char *)b, size, MADV_NOHUGEPAGE);
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++)
        b[(i * 7919 % (size / PAGE)) * PAGE] = 2;
    double t = bench_now() - t0;
    munmap((char *)b, size);
    return t * 1e9 / (double)n;
}

static double med(double *v, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        if (v[i] >= 0)
            v[k++] = v[i];
    return k ? bench_median(v, k) : -1;
}

int main(int argc, char **argv)
{
    struct bench_opts o = bench_parse(argc, argv);
    int runs = o.runs > 16 ? 16 : o.runs;
    size_t sizes[] = {64 * MiB, 256 * MiB, 1024 * MiB}, quick_sizes[] = {32 * MiB, 128 * MiB};
    int nsizes = 3;
    if (o.quick) {
        memcpy(sizes, quick_sizes, sizeof quick_sizes);
        nsizes = 2;
        fw_size = 64 * MiB;
    }

    printf("### snapshot: taking a point-in-time copy of a populated region (median of %d)\n\n", runs);
    printf("Region fully written before the snapshot. fork(): time until fork() returns in a parent "
           "that has touched the same amount (the child exits at once). \"next\": a second "
           "snapshot after 1000 scattered pages were written.\n\n");
    printf("| size | method | take | next | fork() 4 KiB pages / take |\n|---|---|---|---|---|\n");
    bench_plot_meta("snapshot_take", "Snapshot of a populated region vs fork()", "region (MiB)",
                    "ms (log)", 1);
    for (int si = 0; si < nsizes; si++) {
        size_t size = sizes[si];
        double f4[16], f2[16], tv[NV][16], nx[NV][16];
        for (int r = 0; r < runs; r++) {
            f4[r] = fork_once(size, 0);
            f2[r] = fork_once(size, 1);
            for (size_t v = 0; v < NV; v++) {
                nx[v][r] = -1;
                tv[v][r] = take_once(size, variants[v].flags, &nx[v][r]);
            }
        }
        double mf4 = med(f4, runs), mf2 = med(f2, runs);
        printf("| %zu MiB | fork(), 4 KiB pages | %.3f ms | | 1x |\n", size / MiB, mf4 * 1e3);
        printf("| %zu MiB | fork(), 2 MiB pages | %.3f ms | | %.1fx |\n", size / MiB, mf2 * 1e3,
               mf4 / mf2);
        bench_plot("snapshot_take", "fork-4k", (double)(size / MiB), mf4 * 1e3);
        bench_plot("snapshot_take", "fork-2m", (double)(size / MiB), mf2 * 1e3);
        for (size_t v = 0; v < NV; v++) {
            double mt = med(tv[v], runs), mn = med(nx[v], runs);
            if (mt < 0) {
                printf("| %zu MiB | %s | unavailable here | | |\n", size / MiB, variants[v].name);
                continue;
            }
            printf("| %zu MiB | %s | %.3f ms | %.3f ms | %.1fx |\n", size / MiB, variants[v].name,
                   mt * 1e3, mn * 1e3, mf4 / mt);
            char series[64];
            snprintf(series, sizeof series, "%s%s",
                     variants[v].flags & MMK_REGION_UFFD ? "uffd" : "mprotect",
                     variants[v].flags & MMK_REGION_SMALL ? "-4k" : "-2m");
            bench_plot("snapshot_take", series, (double)(size / MiB), mt * 1e3);
        }
    }

    size_t n = o.quick ? 2000 : 8000;
    printf("\n### snapshot: first write to a page after the snapshot (ns per page, median of %d)\n\n",
           runs);
    printf("%zu scattered pages of a %zu MiB region, each written once. The copy-on-write fault "
           "of a parent after fork() and a plain zero-fill fault for scale.\n\n", n, fw_size / MiB);
    printf("| method | first write | vs fork() COW |\n|---|---|---|\n");
    double fw[16], pl[16];
    for (int r = 0; r < runs; r++) {
        fw[r] = first_write_fork(n);
        pl[r] = first_write_plain(n);
    }
    double mfw = med(fw, runs), mpl = med(pl, runs);
    printf("| fork() copy-on-write (parent) | %.0f ns | 1x |\n", mfw);
    printf("| zero-fill fault, no snapshot | %.0f ns | %.2fx |\n", mpl, mpl / mfw);
    for (size_t v = 0; v < NV; v++) {
        double t[16];
        for (int r = 0; r < runs; r++)
            t[r] = first_write_snapshot(variants[v].flags, n);
        double m = med(t, runs);
        if (m < 0)
            printf("| %s | unavailable here | |\n", variants[v].name);
        else
            printf("| %s | %.0f ns | %.2fx |\n", variants[v].name, m, m / mfw);
    }
    printf("\n");
    return 0;
}
