/* bench_heap: the persistent heap against its peers, side by side.
 *   1. open time as the heap grows from 1 MiB to 4 GiB (flat, < 1 ms);
 *   2. durable one-page transactions/s: mmkit heap vs LMDB one-put
 *      transactions vs PMDK libpmemobj transactions, same directory;
 *   3. small alloc+free inside a transaction vs glibc malloc/free;
 *   4. commit cost vs pages written (PLOT), durable and no-sync;
 *   5. the dirty-tracking methods: one-page commit cost vs heap size.
 * Files go to $MMK_BENCH_DIR, else $TMPDIR or /tmp unless that is a tmpfs
 * (then the current directory): the point is the project's real disk. */
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <mmkit/heap.h>
#include "bench.h"

#ifdef MMK_HAVE_LMDB
#include <lmdb.h>
#endif
#ifdef MMK_HAVE_PMEMOBJ
#include <libpmemobj.h>
#endif

static char dir[512];

static void rmf(const char *name)
{
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    unlink(p);
}

static void pick_dir(void)
{
    const char *d = getenv("MMK_BENCH_DIR");
    if (!d || !*d) {
        d = getenv("TMPDIR");
        if (!d || !*d)
            d = "/tmp";
        struct statfs fs;
        if (statfs(d, &fs) == 0 && fs.f_type == 0x01021994) /* TMPFS_MAGIC */
            d = ".";
    }
    snprintf(dir, sizeof dir, "%s/mmkit-bench-heap-XXXXXX", d);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_heap: %s: %s\n", what, mmk_strerror(rc));
    exit(1);
}

static mmk_heap *make_heap(const char *name, unsigned flags, uint64_t size)
{
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    mmk_heap *h;
    int rc = mmk_heap_open(p, flags | MMK_HEAP_CREATE, &h);
    if (rc)
        die("open", rc);
    struct mmk_heap_stats st;
    mmk_heap_stats(h, &st);
    while (st.size < size) {
        mmk_ref r;
        if ((rc = mmk_heap_begin(h)) || (rc = mmk_heap_alloc(h, mmk_heap_max_alloc(), &r)) ||
            (rc = mmk_heap_commit(h)))
            die("grow", rc);
        mmk_heap_stats(h, &st);
    }
    return h;
}

/* ---------------------------------------------------------------- 1. open */

static void bench_open(struct bench_opts o)
{
    printf("### Open time vs heap size\n\n");
    printf("| heap size | open + close (median) | first read of the root |\n|---|---|---|\n");
    bench_plot_meta("heap_open", "Heap open time vs size", "heap size (MiB)", "open (us)", 1);
    uint64_t sizes[] = {1, 16, 256, 1024, 4096};
    int n = o.quick ? 4 : 5;
    double first = 0, lastv = 0;
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "open%d.heap", i);
        mmk_heap *h = make_heap(name, MMK_HEAP_NOSYNC, sizes[i] << 20);
        mmk_heap_close(h);
        char p[700];
        snprintf(p, sizeof p, "%s/%s", dir, name);
        int reps = o.runs * 20;
        double *v = malloc(sizeof(double) * (size_t)reps), *w = malloc(sizeof(double) * (size_t)reps);
        for (int k = 0; k < reps; k++) {
            double t0 = bench_now();
            int rc = mmk_heap_open(p, 0, &h);
            double t1 = bench_now();
            if (rc)
                die("reopen", rc);
            volatile uint64_t x = mmk_heap_root(h);
            (void)x;
            double t2 = bench_now();
            mmk_heap_close(h);
            double t3 = bench_now();
            v[k] = (t1 - t0) + (t3 - t2);
            w[k] = t2 - t1;
        }
        double med = bench_median(v, reps), medr = bench_median(w, reps);
        if (i == 0)
            first = med;
        lastv = med;
        printf("| %llu MiB | %.1f us | %.2f us |\n", (unsigned long long)sizes[i], med * 1e6,
               medr * 1e6);
        bench_plot("heap_open", "mmkit", (double)sizes[i], med * 1e6);
        free(v);
        free(w);
        rmf(name);
        snprintf(name, sizeof name, "open%d.heap-log", i);
        rmf(name);
    }
    printf("\nLargest / smallest: %.2fx (target: within 2x, under 1 ms).\n\n", lastv / first);
}

/* ---------------------------------------------------------------- 2. durable txns */

static double heap_txns(mmk_heap *h, mmk_ref r, double secs)
{
    long n = 0;
    double t0 = bench_now(), t;
    do {
        if (mmk_heap_begin(h))
            exit(1);
        uint64_t *p = mmk_heap_ptr(h, r);
        p[0]++;
        if (mmk_heap_commit(h))
            exit(1);
        n++;
    } while ((t = bench_now()) - t0 < secs);
    return (double)n / (t - t0);
}

#ifdef MMK_HAVE_LMDB
struct lm {
    MDB_env *env;
    MDB_dbi dbi;
};

static void lm_open(struct lm *l)
{
    char p[700];
    snprintf(p, sizeof p, "%s/lmdb", dir);
    mkdir(p, 0700);
    if (mdb_env_create(&l->env) || mdb_env_set_mapsize(l->env, (size_t)1 << 30) ||
        mdb_env_open(l->env, p, 0, 0600)) {
        fprintf(stderr, "lmdb open failed\n");
        exit(1);
    }
    MDB_txn *t;
    mdb_txn_begin(l->env, NULL, 0, &t);
    mdb_dbi_open(t, NULL, 0, &l->dbi);
    mdb_txn_commit(t);
}

static double lmdb_txns(struct lm *l, double secs)
{
    long n = 0;
    char val[100];
    memset(val, 'v', sizeof val);
    double t0 = bench_now(), t;
    do {
        MDB_txn *txn;
        uint64_t key = (uint64_t)n % 1000;
        MDB_val k = {sizeof key, &key}, v = {sizeof val, val};
        if (mdb_txn_begin(l->env, NULL, 0, &txn) || mdb_put(txn, l->dbi, &k, &v, 0) ||
            mdb_txn_commit(txn))
            exit(1);
        n++;
    } while ((t = bench_now()) - t0 < secs);
    return (double)n / (t - t0);
}
#endif

#ifdef MMK_HAVE_PMEMOBJ
static double pmem_txns(PMEMobjpool *pop, double secs)
{
    PMEMoid root = pmemobj_root(pop, 64);
    uint64_t *p = pmemobj_direct(root);
    long n = 0;
    double t0 = bench_now(), t;
    do {
        int failed = 0;
        TX_BEGIN(pop) {
            pmemobj_tx_add_range(root, 0, 8);
            p[0]++;
        }
        TX_ONABORT { failed = 1; }
        TX_END
        if (failed)
            exit(1);
        n++;
    } while ((t = bench_now()) - t0 < secs);
    return (double)n / (t - t0);
}
#endif

static void bench_durable(struct bench_opts o)
{
    printf("### Durable one-page transactions per second (same disk, same run)\n\n");
    /* Short slices, alternated many times: the disk's sync latency drifts
     * by several times within a minute on a shared machine, and every
     * system must see the same drift. */
    double secs = o.quick ? 0.1 : 0.2;
    mmk_heap *h = make_heap("txn.heap", 0, 0);
    mmk_ref r;
    if (mmk_heap_begin(h) || mmk_heap_alloc(h, 64, &r) || mmk_heap_commit(h))
        exit(1);
    double vh[64], vl[64], vp[64];
    int runs = o.runs * 6 > 64 ? 64 : o.runs * 6;
#ifdef MMK_HAVE_LMDB
    struct lm l;
    lm_open(&l);
#endif
#ifdef MMK_HAVE_PMEMOBJ
    char pp[700];
    snprintf(pp, sizeof pp, "%s/pmem.pool", dir);
    PMEMobjpool *pop = pmemobj_create(pp, "bench", PMEMOBJ_MIN_POOL * 4, 0600);
    if (!pop) {
        fprintf(stderr, "pmemobj_create: %s\n", pmemobj_errormsg());
        exit(1);
    }
#endif
    for (int i = 0; i < runs; i++) { /* interleaved: the same disk weather for all */
        vh[i] = heap_txns(h, r, secs);
#ifdef MMK_HAVE_LMDB
        vl[i] = lmdb_txns(&l, secs);
#endif
#ifdef MMK_HAVE_PMEMOBJ
        vp[i] = pmem_txns(pop, secs);
#endif
    }
    struct mmk_heap_stats st;
    mmk_heap_stats(h, &st);
    double mh = bench_median(vh, runs);
    printf("| system | transactions/s (median of %d alternated %.1f s slices) | ratio mmkit/peer |\n"
           "|---|---|---|\n",
           runs, secs);
    printf("| mmkit heap (1 word, %llu pages, %llu-byte record, 1 fdatasync) | %.0f | |\n",
           (unsigned long long)st.last_pages, (unsigned long long)st.last_log_bytes, mh);
#ifdef MMK_HAVE_LMDB
    double ml = bench_median(vl, runs);
    printf("| LMDB one-put transaction (default sync) | %.0f | %.2fx (target >= 1.5x) |\n", ml,
           mh / ml);
    mdb_env_close(l.env);
#else
    printf("\nskipped: LMDB not installed (apt-get install liblmdb-dev)\n");
#endif
#ifdef MMK_HAVE_PMEMOBJ
    double mp = bench_median(vp, runs);
    printf("| PMDK libpmemobj transaction (one 8-byte range) | %.0f | %.2fx (target >= 5x) |\n",
           mp, mh / mp);
    pmemobj_close(pop);
    unlink(pp);
#else
    printf("\nskipped: PMDK not installed (apt-get install libpmemobj-dev)\n");
#endif
    mmk_heap_close(h);
    rmf("txn.heap");
    rmf("txn.heap-log");
    printf("\n");
}

/* ---------------------------------------------------------------- 3. alloc */

static void bench_alloc(struct bench_opts o)
{
    printf("### Small alloc + free inside one transaction vs malloc/free\n\n");
    mmk_heap *h = make_heap("alloc.heap", MMK_HEAP_NOSYNC, 0);
    enum { N = 1000 };
    long rounds = o.quick ? 200 : 1000;
    double vh[32], vm[32];
    int runs = o.runs > 32 ? 32 : o.runs;
    static mmk_ref refs[N];
    static void *ptrs[N];
    uint32_t sizes[N];
    uint64_t s = 88172645463325252ull;
    for (int i = 0; i < N; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        sizes[i] = (uint32_t)(16 + s % 241);
    }
    for (int run = 0; run < runs; run++) {
        if (mmk_heap_begin(h))
            exit(1);
        double t0 = bench_now();
        for (long k = 0; k < rounds; k++) {
            for (int i = 0; i < N; i++)
                if (mmk_heap_alloc(h, sizes[i], &refs[i]))
                    exit(1);
            for (int i = 0; i < N; i++)
                mmk_heap_free(h, refs[i]);
        }
        double t1 = bench_now();
        mmk_heap_abort(h);
        vh[run] = (double)(rounds * N) / (t1 - t0);
        t0 = bench_now();
        for (long k = 0; k < rounds; k++) {
            for (int i = 0; i < N; i++) {
                ptrs[i] = malloc(sizes[i]);
                memset(ptrs[i], 0, sizes[i]); /* the heap hands out zeroed memory */
            }
            for (int i = 0; i < N; i++)
                free(ptrs[i]);
        }
        t1 = bench_now();
        vm[run] = (double)(rounds * N) / (t1 - t0);
    }
    double mh = bench_median(vh, runs), mm = bench_median(vm, runs);
    printf("| | alloc+free pairs/s (16-256 B, 1000 live) | ratio |\n|---|---|---|\n");
    printf("| mmkit heap (in a transaction) | %.2f M | %.2fx (target >= 0.5x) |\n", mh / 1e6,
           mh / mm);
    printf("| glibc malloc + memset + free | %.2f M | |\n\n", mm / 1e6);
    mmk_heap_close(h);
    rmf("alloc.heap");
    rmf("alloc.heap-log");
}

/* ---------------------------------------------------------------- 4. commit cost */

static double commit_cost(mmk_heap *h, mmk_ref r, int pages, int whole, int reps)
{
    double *v = malloc(sizeof(double) * (size_t)reps);
    for (int k = 0; k < reps; k++) {
        if (mmk_heap_begin(h))
            exit(1);
        unsigned char *p = mmk_heap_ptr(h, r);
        double t0 = bench_now();
        for (int i = 0; i < pages; i++) {
            if (whole)
                memset(p + (size_t)i * 4096, k + 1, 4096);
            else
                p[(size_t)i * 4096 + 64] = (unsigned char)(k + 1);
        }
        if (mmk_heap_commit(h))
            exit(1);
        v[k] = bench_now() - t0;
    }
    double m = bench_median(v, reps);
    free(v);
    return m;
}

static void bench_commit_cost(struct bench_opts o)
{
    printf("### Commit cost vs pages written\n\n");
    bench_plot_meta("heap_commit", "Heap commit cost vs pages written", "pages written",
                    "commit (us)", 1);
    int maxp = o.quick ? 1024 : 4096;
    mmk_heap *hd = make_heap("cost.heap", 0, 0), *hn = make_heap("costn.heap", MMK_HEAP_NOSYNC, 0);
    mmk_ref rd, rn;
    if (mmk_heap_begin(hd) || mmk_heap_alloc(hd, (size_t)maxp * 4096, &rd) || mmk_heap_commit(hd))
        exit(1);
    if (mmk_heap_begin(hn) || mmk_heap_alloc(hn, (size_t)maxp * 4096, &rn) || mmk_heap_commit(hn))
        exit(1);
    printf("| pages | durable, whole pages | durable, one byte a page | no-sync, whole pages | "
           "no-sync, one byte a page |\n|---|---|---|---|---|\n");
    for (int p = 1; p <= maxp; p *= 4) {
        int reps = o.quick ? 5 : (p >= 1024 ? 7 : 15);
        double a = commit_cost(hd, rd, p, 1, reps), b = commit_cost(hd, rd, p, 0, reps);
        double c = commit_cost(hn, rn, p, 1, reps), d = commit_cost(hn, rn, p, 0, reps);
        printf("| %d | %.0f us | %.0f us | %.0f us | %.0f us |\n", p, a * 1e6, b * 1e6, c * 1e6,
               d * 1e6);
        bench_plot("heap_commit", "durable-whole-pages", p, a * 1e6);
        bench_plot("heap_commit", "durable-one-byte-a-page", p, b * 1e6);
        bench_plot("heap_commit", "nosync-whole-pages", p, c * 1e6);
        bench_plot("heap_commit", "nosync-one-byte-a-page", p, d * 1e6);
    }
    printf("\n");
    mmk_heap_close(hd);
    mmk_heap_close(hn);
    rmf("cost.heap");
    rmf("cost.heap-log");
    rmf("costn.heap");
    rmf("costn.heap-log");
}

/* ---------------------------------------------------------------- 5. dirty tracking */

static void bench_dirty(struct bench_opts o)
{
    printf("### Dirty tracking: one-page no-sync commit vs heap size (MMK_HEAP_DIRTY)\n\n");
    printf("| heap size (resident) | pagemap_scan | pagemap (bit 61) | wp_fault |\n|---|---|---|---|\n");
    static const char *m[] = {"scan", "pagemap", "wp"};
    uint64_t sizes[] = {16, 256, 2048};
    int n = o.quick ? 2 : 3;
    for (int i = 0; i < n; i++) {
        double v[3];
        for (int k = 0; k < 3; k++) {
            setenv("MMK_HEAP_DIRTY", m[k], 1);
            mmk_heap *h = make_heap("dirty.heap", MMK_HEAP_NOSYNC, sizes[i] << 20);
            mmk_ref r;
            if (mmk_heap_begin(h) || mmk_heap_alloc(h, 64, &r) || mmk_heap_commit(h))
                exit(1);
            /* make every page resident (read): the scan walks what is mapped */
            struct mmk_heap_stats st;
            mmk_heap_stats(h, &st);
            volatile unsigned char sink = 0;
            unsigned char *b = (unsigned char *)mmk_heap_ptr(h, 4096) - 4096;
            for (uint64_t off = 0; off < st.size; off += 4096)
                sink ^= b[off];
            (void)sink;
            v[k] = commit_cost(h, r, 1, 0, o.quick ? 9 : 31);
            mmk_heap_close(h);
            rmf("dirty.heap");
            rmf("dirty.heap-log");
        }
        printf("| %llu MiB | %.1f us | %.1f us | %.1f us |\n", (unsigned long long)sizes[i],
               v[0] * 1e6, v[1] * 1e6, v[2] * 1e6);
    }
    unsetenv("MMK_HEAP_DIRTY");
    printf("\n");
}

int main(int argc, char **argv)
{
    struct bench_opts o = bench_parse(argc, argv);
    pick_dir();
    printf("Files in %s (the project disk). On a shared machine "
           "figures are noisy: compare within a run.\n\n", dir);
    bench_open(o);
    bench_durable(o);
    bench_alloc(o);
    bench_commit_cost(o);
    bench_dirty(o);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return 0;
}
