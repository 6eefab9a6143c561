/* bench_file: the safe mapped file against the system calls it replaces.
 *
 * 1. Random 4 KiB reads from a cached file: mmk_file_read_at (mapping,
 *    guarded copy) against pread(2), and a plain memcpy from the view (what
 *    the bounds check and guard cost), over 8 MiB and over the whole file,
 *    in two states of the page cache: just written in 1 MiB pieces (small
 *    folios: the mapping uses 4 KiB page-table entries, a TLB miss per
 *    random read) and read back from disk (readahead makes large folios, and
 *    2 MiB-aligned ones are mapped with one 2 MiB entry each). The share of
 *    the mapping held by 2 MiB entries is printed (FilePmdMapped).
 * 2. The first random reads after opening (page faults on first touch),
 *    with and without MMK_ADV_POPULATE_READ at open, against pread.
 * 3. Sequential reads in chunks of 64 KiB, 256 KiB and 1 MiB: read(2)
 *    against copying out of the mapping, both from a mapping whose page
 *    tables are already filled ("warm") and from a fresh one (each pass
 *    opens the file again, so every page is a minor fault: what a reader
 *    that maps a file once and reads it once pays). This decides the
 *    mmap-or-read policy for large reads (src/file.c, mmk_file_read_at).
 * 4. Random writes of 64 B and 4 KiB into the cached file: write_at (a
 *    store through the mapping, then a load from the next page to catch a
 *    file cut under it) against pwrite(2).
 * Medians of --runs runs, side by side in one process. */
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <mmkit/mmkit.h>
#include "bench.h"

static char path[512];
static size_t fsize;

static double rand_read_at(mmk_file *f, size_t span, long n, unsigned char *buf)
{
    uint64_t x = 88172645463325252ull;
    size_t pages = span / 4096;
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ssize_t r = mmk_file_read_at(f, buf, 4096, (x % pages) * 4096);
        bench_keep(r);
    }
    return (double)n / (bench_now() - t0);
}

static double rand_memcpy(mmk_file *f, size_t span, long n, unsigned char *buf)
{
    void *data;
    uint64_t size;
    mmk_file_view(f, &data, &size);
    uint64_t x = 88172645463325252ull;
    size_t pages = span / 4096;
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(buf, (char *)data + (x % pages) * 4096, 4096);
        bench_keep(buf);
    }
    return (double)n / (bench_now() - t0);
}

/* Writes of `len` bytes at random page offsets in the first `span` bytes:
 * per second, through write_at (f) or pwrite (fd). */
static double rand_write(mmk_file *f, int fd, size_t span, size_t len, long n,
                         const unsigned char *buf)
{
    uint64_t x = 88172645463325252ull;
    size_t pages = span / 4096;
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t off = (x % pages) * 4096 + (x >> 60) * 8 % (4096 - len + 1);
        ssize_t r = f ? mmk_file_write_at(f, buf, len, off) : pwrite(fd, buf, len, (off_t)off);
        bench_keep(r);
    }
    return (double)n / (bench_now() - t0);
}

/* Random 4 KiB reads right after opening: open (and with `populate`,
 * MMK_ADV_POPULATE_READ over the whole file), n reads, close, all timed;
 * ns per read. fd >= 0: pread on it instead. */
static double fresh_reads(int fd, int populate, long n, unsigned char *buf)
{
    double t0 = bench_now();
    mmk_file *f = NULL;
    if (fd < 0) {
        if (mmk_file_open(path, MMK_FILE_RDONLY | MMK_FILE_MMAP, &f))
            return 0;
        if (populate)
            mmk_file_advise(f, 0, 0, MMK_ADV_POPULATE_READ);
    }
    uint64_t x = 88172645463325252ull ^ (uint64_t)n;
    size_t pages = fsize / 4096;
    for (long i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t off = (x % pages) * 4096;
        ssize_t r = f ? mmk_file_read_at(f, buf, 4096, off) : pread(fd, buf, 4096, (off_t)off);
        bench_keep(r);
    }
    mmk_file_close(f);
    return (bench_now() - t0) / (double)n * 1e9;
}

/* KiB of file mappings held by 2 MiB page-table entries in this process. */
static long pmd_mapped_kib(void)
{
    FILE *m = fopen("/proc/self/smaps_rollup", "re");
    char line[256];
    long v = -1;
    while (m && fgets(line, sizeof line, m))
        if (!strncmp(line, "FilePmdMapped:", 14))
            v = atol(line + 14);
    if (m)
        fclose(m);
    return v;
}

static double rand_pread(int fd, size_t span, long n, unsigned char *buf)
{
    uint64_t x = 88172645463325252ull;
    size_t pages = span / 4096;
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ssize_t r = pread(fd, buf, 4096, (off_t)((x % pages) * 4096));
        bench_keep(r);
    }
    return (double)n / (bench_now() - t0);
}

/* GB/s reading the whole file in `chunk` pieces with read(2). */
static double seq_read(size_t chunk, unsigned char *buf)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    double t0 = bench_now();
    size_t total = 0;
    ssize_t n;
    while ((n = read(fd, buf, chunk)) > 0)
        total += (size_t)n;
    double dt = bench_now() - t0;
    close(fd);
    return (double)total / dt / 1e9;
}

/* GB/s copying the whole file out of the mapping in `chunk` pieces. With
 * fresh, the file is opened (and mapped) inside the timed region. */
static double seq_map(mmk_file *warm, size_t chunk, unsigned char *buf)
{
    double t0 = bench_now();
    mmk_file *f = warm;
    if (!f && mmk_file_open(path, MMK_FILE_RDONLY | MMK_FILE_MMAP, &f))
        return 0;
    void *data;
    uint64_t size;
    mmk_file_view(f, &data, &size);
    for (size_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        int rc = mmk_copy_guarded(buf, (char *)data + off, n);
        bench_keep(rc);
    }
    if (!warm)
        mmk_file_close(f);
    return (double)size / (bench_now() - t0) / 1e9;
}

int main(int argc, char **argv)
{
    struct bench_opts o = bench_parse(argc, argv);
    fsize = (size_t)(o.quick ? 32 : 128) << 20;
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/mmk-bench-file-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        return 1;
    }
    unsigned char *buf = malloc(1 << 20);
    for (size_t i = 0; i < (1 << 20); i++)
        buf[i] = (unsigned char)(i * 7);
    for (size_t off = 0; off < fsize; off += 1 << 20)
        if (pwrite(fd, buf, 1 << 20, (off_t)off) != 1 << 20)
            return 1;
    fsync(fd);

    int runs = o.runs > 32 ? 32 : o.runs;
    long nrand = o.quick ? 100000 : 400000;
    printf("### Random 4 KiB reads from a cached file (median of %d runs)\n\n", runs);
    printf("| page cache | span read | read_at (mapping, guarded) | memcpy from the view | pread(2) "
           "| read_at / pread |\n");
    printf("|---|---:|---:|---:|---:|---:|\n");
    mmk_file *f = NULL;
    for (int state = 0; state < 2; state++) {
        if (state == 1) {
            /* Drop the file's (clean, unmapped) pages and read it back
             * once, as a file that was cached by reading it gets. */
            mmk_file_close(f);
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            seq_read(1 << 20, buf);
        }
        if (mmk_file_open(path, MMK_FILE_RDONLY | MMK_FILE_MMAP, &f))
            return 1;
        /* Warm the page cache and the mapping's page tables. */
        seq_read(1 << 20, buf);
        seq_map(f, 1 << 20, buf);
        char what[96];
        snprintf(what, sizeof what, "%s, %ld of %zu MiB in 2 MiB entries",
                 state ? "read from disk" : "written in 1 MiB pieces", pmd_mapped_kib() >> 10,
                 fsize >> 20);
        /* A span that fits in the CPU's caches, and one that does not (then
         * both sides wait for memory, and the mapping for TLB misses too). */
        size_t spans[] = {(size_t)8 << 20, fsize};
        for (int sp = 0; sp < 2; sp++) {
            double a[32], b[32], c[32];
            for (int r = 0; r < runs; r++) {
                a[r] = rand_read_at(f, spans[sp], nrand, buf);
                c[r] = rand_memcpy(f, spans[sp], nrand, buf);
                b[r] = rand_pread(fd, spans[sp], nrand, buf);
            }
            double ma = bench_median(a, runs), mb = bench_median(b, runs);
            double mc = bench_median(c, runs);
            printf("| %s | %zu MiB | %.0f ns (%.2f M/s) | %.0f ns | %.0f ns (%.2f M/s) | %.2fx |\n",
                   sp ? "" : what, spans[sp] >> 20, 1e9 / ma, ma / 1e6, 1e9 / mc, 1e9 / mb,
                   mb / 1e6, ma / mb);
        }
    }
    printf("\n");

    printf("### First random 4 KiB reads after opening, file read from disk (ns per read, "
           "open and populate included, median of %d runs)\n\n",
           runs);
    printf("| reads | read_at | populate, then read_at | pread(2) | read_at / pread | "
           "populated / pread |\n");
    printf("|---:|---:|---:|---:|---:|---:|\n");
    static const long nfresh[] = {2000, 20000, 200000};
    for (size_t k = 0; k < 3; k++) {
        long n = o.quick ? nfresh[k] / 4 : nfresh[k];
        double a[32], b[32], c[32];
        for (int r = 0; r < runs; r++) {
            a[r] = fresh_reads(-1, 0, n, buf);
            b[r] = fresh_reads(-1, 1, n, buf);
            c[r] = fresh_reads(fd, 0, n, buf);
        }
        double ma = bench_median(a, runs), mb = bench_median(b, runs), mc = bench_median(c, runs);
        printf("| %ld | %.0f | %.0f | %.0f | %.2fx | %.2fx |\n", n, ma, mb, mc, mc / ma, mc / mb);
    }
    printf("\n");

    static const size_t chunks[] = {64 << 10, 256 << 10, 1 << 20};
    printf("### Sequential reads of the whole cached file, read from disk (GB/s, median of %d "
           "runs)\n\n",
           runs);
    printf("| chunk | read(2) | mapping, warm | mapping, fresh | warm / read | fresh / read |\n");
    printf("|---:|---:|---:|---:|---:|---:|\n");
    bench_plot_meta("file_seq", "Sequential reads of a cached file", "chunk bytes", "GB/s", 1);
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        double x[32], y[32], z[32];
        for (int r = 0; r < runs; r++) {
            x[r] = seq_read(chunks[c], buf);
            y[r] = seq_map(f, chunks[c], buf);
            z[r] = seq_map(NULL, chunks[c], buf);
        }
        double mx = bench_median(x, runs), my = bench_median(y, runs), mz = bench_median(z, runs);
        printf("| %zu KiB | %.2f | %.2f | %.2f | %.2f | %.2f |\n", chunks[c] >> 10, mx, my, mz,
               my / mx, mz / mx);
        bench_plot("file_seq", "read(2)", (double)chunks[c], mx);
        bench_plot("file_seq", "mapping-warm", (double)chunks[c], my);
        bench_plot("file_seq", "mapping-fresh", (double)chunks[c], mz);
    }
    mmk_file_close(f);

    printf("\n### Random writes into the cached file, 8 MiB span (median of %d runs)\n\n", runs);
    printf("| size | write_at (mapping, checked) | pwrite(2) | write_at / pwrite |\n");
    printf("|---:|---:|---:|---:|\n");
    if (mmk_file_open(path, MMK_FILE_RDWR | MMK_FILE_MMAP, &f))
        return 1;
    static const size_t wsizes[] = {64, 4096};
    for (size_t w = 0; w < 2; w++) {
        double a[32], b[32];
        for (int r = 0; r < runs; r++) {
            a[r] = rand_write(f, -1, (size_t)8 << 20, wsizes[w], nrand / 2, buf);
            b[r] = rand_write(NULL, fd, (size_t)8 << 20, wsizes[w], nrand / 2, buf);
        }
        double ma = bench_median(a, runs), mb = bench_median(b, runs);
        printf("| %zu B | %.0f ns | %.0f ns | %.2fx |\n", wsizes[w], 1e9 / ma, 1e9 / mb, ma / mb);
    }
    mmk_file_close(f);
    close(fd);
    unlink(path);
    free(buf);
    return 0;
}
