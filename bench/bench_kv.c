/* map.h against LMDB, same process, same disk, same run, medians (3 runs by
 * default, 3 with --quick).
 *
 * Workload (issue 7): N random 16-byte keys with 100-byte values, committed
 * every 1000 puts (durable: each commit synced); then N random gets of those
 * keys in one read view / read transaction; then the files' size; then a
 * cold reopen (the files' pages dropped from the page cache with
 * POSIX_FADV_DONTNEED) plus the first get. The same again with both sides
 * in no-sync mode (MMK_HEAP_NOSYNC, MDB_NOSYNC). N = 1 M, --quick 100 k.
 *   bench_kv [--quick] [--runs N] [--dir DIR] [--keys N]
 * DIR must be on a real disk (default $TMPDIR or /tmp); a tmpfs is refused. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <mmkit/mmkit.h>
#include "bench.h"
#ifdef MMK_HAVE_LMDB
#include <lmdb.h>
#endif

#define KLEN 16
#define VLEN 100
#define BATCH 1000

static uint64_t nkeys;
static char dir[3000];

static inline uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Key i of a run: 16 random-looking bytes; value: 100 bytes from i. */
static inline void key_of(uint64_t seed, uint64_t i, uint8_t *k)
{
    uint64_t a = mix(seed ^ i), b = mix(a ^ 0x5555);
    memcpy(k, &a, 8);
    memcpy(k + 8, &b, 8);
}

static inline void val_of(uint64_t i, uint8_t *v)
{
    for (int j = 0; j < VLEN; j += 8) {
        uint64_t x = mix(i * 131 + (uint64_t)j);
        memcpy(v + j, &x, VLEN - j < 8 ? VLEN - j : 8);
    }
}

struct result {
    double puts, gets; /* per second */
    double gets_many;  /* per second, mmk_map_get_many (mmkit only) */
    double bytes;      /* files on disk, apparent size */
    double reopen;     /* seconds: open + first get, cold */
    double reopen_adv; /* the same with random-access advice (no read-around) */
    double cold[2][2]; /* gets/s after a cold open: [plain, MMK_HEAP_HUGE][first, second pass] */
    int ok;
};

static double file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) ? 0 : (double)st.st_size;
}

/* Flush and drop the file's pages from the page cache. */
static void drop_cache(const char *p)
{
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

static void rm_files(const char *d)
{
    DIR *dd = opendir(d);
    if (!dd)
        return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(dd)))
        if (e->d_name[0] != '.') {
            snprintf(p, sizeof p, "%s/%s", d, e->d_name);
            unlink(p);
        }
    closedir(dd);
}

/* ------------------------------------------------------------ mmkit */

static struct result run_mmk(uint64_t seed, int nosync, int curve)
{
    struct result r = {0};
    char path[3100], log[3200];
    snprintf(path, sizeof path, "%s/kv.heap", dir);
    snprintf(log, sizeof log, "%s-log", path);
    rm_files(dir);
    unsigned fl = nosync ? MMK_HEAP_NOSYNC : 0;
    mmk_heap *h;
    if (mmk_heap_open(path, MMK_HEAP_CREATE | fl, &h))
        return r;
    uint8_t k[KLEN], v[VLEN];
    mmk_ref m = 0;
    int rc = 0;
    double t0 = bench_now(), tc = t0;
    for (uint64_t i = 0; i < nkeys && !rc; i++) {
        if (i % BATCH == 0) {
            if (i)
                rc = mmk_heap_commit(h);
            if (!rc)
                rc = mmk_heap_begin(h);
            if (!rc && !m && !(rc = mmk_map_create(h, &m)))
                rc = mmk_heap_set_root(h, m);
        }
        key_of(seed, i, k);
        val_of(i, v);
        if (!rc)
            rc = mmk_map_put(h, m, k, KLEN, v, VLEN);
        if (curve && (i + 1) % (nkeys / 10) == 0) {
            double t = bench_now();
            bench_plot("kv_put_curve", nosync ? "mmkit-nosync" : "mmkit", (double)(i + 1) / 1e3,
                       (double)(nkeys / 10) / (t - tc) / 1e3);
            tc = t;
        }
    }
    if (!rc)
        rc = mmk_heap_commit(h);
    r.puts = (double)nkeys / (bench_now() - t0);
    if (rc) {
        fprintf(stderr, "mmkit put: %s\n", mmk_strerror(rc));
        mmk_heap_close(h);
        return r;
    }
    uint64_t hits = 0, x = seed;
    if (mmk_heap_read_begin(h) == 0) {
        t0 = bench_now();
        for (uint64_t i = 0; i < nkeys; i++) {
            x = mix(x);
            key_of(seed, x % nkeys, k);
            const void *pv;
            size_t vl;
            if (mmk_map_get(h, m, k, KLEN, &pv, &vl) == 0) {
                hits++;
                bench_keep(pv);
            }
        }
        r.gets = (double)nkeys / (bench_now() - t0);
        /* The same lookups through the batched call, MANY keys a call. */
        enum { MANY = 64 };
        static uint8_t kb[MANY][KLEN];
        const void *kp[MANY], *vp[MANY];
        size_t kl[MANY], vls[MANY];
        int rcs[MANY];
        for (int j = 0; j < MANY; j++) {
            kp[j] = kb[j];
            kl[j] = KLEN;
        }
        uint64_t many_hits = 0;
        x = seed;
        t0 = bench_now();
        for (uint64_t i = 0; i < nkeys; i += MANY) {
            size_t n = nkeys - i < MANY ? (size_t)(nkeys - i) : MANY;
            for (size_t j = 0; j < n; j++) {
                x = mix(x);
                key_of(seed, x % nkeys, kb[j]);
            }
            int got = mmk_map_get_many(h, m, n, kp, kl, vp, vls, rcs);
            if (got > 0)
                many_hits += (uint64_t)got;
            bench_keep(vp[0]);
        }
        r.gets_many = (double)nkeys / (bench_now() - t0);
        hits = many_hits == nkeys ? hits : 0;
        mmk_heap_read_end(h);
    }
    mmk_heap_close(h);
    r.bytes = file_size(path) + file_size(log);
    drop_cache(path);
    drop_cache(log);
    key_of(seed, nkeys / 3, k);
    t0 = bench_now();
    const void *pv = NULL;
    size_t vl = 0;
    rc = mmk_heap_open(path, MMK_HEAP_RDONLY | fl, &h);
    if (!rc)
        rc = mmk_heap_read_begin(h);
    if (!rc)
        rc = mmk_map_get(h, mmk_heap_root(h), k, KLEN, &pv, &vl);
    r.reopen = bench_now() - t0;
    val_of(nkeys / 3, v);
    r.ok = !rc && hits == nkeys && vl == VLEN && !memcmp(pv, v, VLEN);
    if (!rc)
        mmk_heap_read_end(h);
    mmk_heap_close(h);
    /* Again, telling the kernel the heap is read at random: a fault then
     * reads its page, not read_ahead_kb around it. */
    drop_cache(path);
    drop_cache(log);
    size_t len = (size_t)file_size(path);
    t0 = bench_now();
    rc = mmk_heap_open(path, MMK_HEAP_RDONLY | fl, &h);
    if (!rc)
        rc = mmk_advise((char *)mmk_heap_ptr(h, 4096) - 4096, len, MMK_ADV_RANDOM);
    if (!rc)
        rc = mmk_heap_read_begin(h);
    if (!rc)
        rc = mmk_map_get(h, mmk_heap_root(h), k, KLEN, &pv, &vl);
    r.reopen_adv = bench_now() - t0;
    r.ok = r.ok && !rc && vl == VLEN && !memcmp(pv, v, VLEN);
    if (!rc)
        mmk_heap_read_end(h);
    mmk_heap_close(h);
    /* Read-mostly: all the gets again from a cold cache (the first pass
     * warms it, the second runs warm), plain mapping against MMK_HEAP_HUGE. */
    for (int hg = 0; hg < 2 && r.ok; hg++) {
        drop_cache(path);
        drop_cache(log);
        rc = mmk_heap_open(path, MMK_HEAP_RDONLY | fl | (hg ? MMK_HEAP_HUGE : 0), &h);
        if (!rc && !(rc = mmk_heap_read_begin(h))) {
            mmk_ref root = mmk_heap_root(h);
            for (int pass = 0; pass < 2; pass++) {
                uint64_t y = seed, found = 0;
                t0 = bench_now();
                for (uint64_t i = 0; i < nkeys; i++) {
                    y = mix(y);
                    key_of(seed, y % nkeys, k);
                    found += mmk_map_get(h, root, k, KLEN, &pv, &vl) == 0;
                }
                r.cold[hg][pass] = (double)nkeys / (bench_now() - t0);
                r.ok = r.ok && found == nkeys;
            }
            mmk_heap_read_end(h);
        }
        r.ok = r.ok && !rc;
        mmk_heap_close(h);
    }
    rm_files(dir);
    return r;
}

/* ------------------------------------------------------------ LMDB */

#ifdef MMK_HAVE_LMDB
static int lmdb_open(unsigned flags, MDB_env **env)
{
    int rc = mdb_env_create(env);
    if (!rc)
        rc = mdb_env_set_mapsize(*env, (size_t)16 << 30);
    if (!rc)
        rc = mdb_env_open(*env, dir, flags, 0600);
    if (rc) {
        mdb_env_close(*env);
        *env = NULL;
    }
    return rc;
}

static struct result run_lmdb(uint64_t seed, int nosync, int curve)
{
    struct result r = {0};
    rm_files(dir);
    MDB_env *env;
    unsigned fl = nosync ? MDB_NOSYNC : 0;
    if (lmdb_open(fl, &env))
        return r;
    MDB_txn *txn = NULL;
    MDB_dbi dbi = 0;
    uint8_t k[KLEN], v[VLEN];
    int rc = 0;
    double t0 = bench_now(), tc = t0;
    for (uint64_t i = 0; i < nkeys && !rc; i++) {
        if (i % BATCH == 0) {
            if (txn)
                rc = mdb_txn_commit(txn);
            txn = NULL;
            if (!rc)
                rc = mdb_txn_begin(env, NULL, 0, &txn);
            if (!rc && i == 0)
                rc = mdb_dbi_open(txn, NULL, 0, &dbi);
        }
        key_of(seed, i, k);
        val_of(i, v);
        MDB_val mk = {KLEN, k}, mv = {VLEN, v};
        if (!rc)
            rc = mdb_put(txn, dbi, &mk, &mv, 0);
        if (curve && (i + 1) % (nkeys / 10) == 0) {
            double t = bench_now();
            bench_plot("kv_put_curve", nosync ? "LMDB-nosync" : "LMDB", (double)(i + 1) / 1e3,
                       (double)(nkeys / 10) / (t - tc) / 1e3);
            tc = t;
        }
    }
    if (!rc && txn)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    r.puts = (double)nkeys / (bench_now() - t0);
    if (rc) {
        fprintf(stderr, "lmdb put: %s\n", mdb_strerror(rc));
        mdb_env_close(env);
        return r;
    }
    if (nosync)
        mdb_env_sync(env, 1);
    uint64_t hits = 0, x = seed;
    if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0) {
        t0 = bench_now();
        for (uint64_t i = 0; i < nkeys; i++) {
            x = mix(x);
            key_of(seed, x % nkeys, k);
            MDB_val mk = {KLEN, k}, mv;
            if (mdb_get(txn, dbi, &mk, &mv) == 0) {
                hits++;
                bench_keep(mv.mv_data);
            }
        }
        r.gets = (double)nkeys / (bench_now() - t0);
        mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    char data[3100], lock[3100];
    snprintf(data, sizeof data, "%s/data.mdb", dir);
    snprintf(lock, sizeof lock, "%s/lock.mdb", dir);
    r.bytes = file_size(data) + file_size(lock);
    drop_cache(data);
    drop_cache(lock);
    key_of(seed, nkeys / 3, k);
    MDB_val mk = {KLEN, k}, mv = {0, NULL};
    t0 = bench_now();
    rc = lmdb_open(fl | MDB_RDONLY, &env);
    if (!rc)
        rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (!rc) {
        rc = mdb_dbi_open(txn, NULL, 0, &dbi);
        if (!rc)
            rc = mdb_get(txn, dbi, &mk, &mv);
    }
    r.reopen = bench_now() - t0;
    val_of(nkeys / 3, v);
    r.ok = !rc && hits == nkeys && mv.mv_size == VLEN && !memcmp(mv.mv_data, v, VLEN);
    if (env) {
        if (txn)
            mdb_txn_abort(txn);
        mdb_env_close(env);
    }
    /* Again with MDB_NORDAHEAD (LMDB's MADV_RANDOM). */
    drop_cache(data);
    drop_cache(lock);
    txn = NULL;
    mv.mv_size = 0;
    t0 = bench_now();
    rc = lmdb_open(fl | MDB_RDONLY | MDB_NORDAHEAD, &env);
    if (!rc)
        rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (!rc) {
        rc = mdb_dbi_open(txn, NULL, 0, &dbi);
        if (!rc)
            rc = mdb_get(txn, dbi, &mk, &mv);
    }
    r.reopen_adv = bench_now() - t0;
    r.ok = r.ok && !rc && mv.mv_size == VLEN && !memcmp(mv.mv_data, v, VLEN);
    if (env) {
        if (txn)
            mdb_txn_abort(txn);
        mdb_env_close(env);
    }
    /* Read-mostly: all the gets from a cold cache, twice (default flags). */
    drop_cache(data);
    drop_cache(lock);
    txn = NULL;
    rc = lmdb_open(fl | MDB_RDONLY, &env);
    if (!rc)
        rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (!rc)
        rc = mdb_dbi_open(txn, NULL, 0, &dbi);
    for (int pass = 0; pass < 2 && !rc; pass++) {
        uint64_t y = seed, found = 0;
        t0 = bench_now();
        for (uint64_t i = 0; i < nkeys; i++) {
            y = mix(y);
            key_of(seed, y % nkeys, k);
            MDB_val gk = {KLEN, k}, gv;
            found += mdb_get(txn, dbi, &gk, &gv) == 0;
        }
        r.cold[0][pass] = (double)nkeys / (bench_now() - t0);
        r.ok = r.ok && found == nkeys;
    }
    r.ok = r.ok && !rc;
    if (env) {
        if (txn)
            mdb_txn_abort(txn);
        mdb_env_close(env);
    }
    rm_files(dir);
    return r;
}
#endif

/* ------------------------------------------------------------ report */

static double med(struct result *rs, int n, size_t off)
{
    double v[64];
    for (int i = 0; i < n; i++)
        v[i] = *(double *)((char *)&rs[i] + off);
    return bench_median(v, n);
}

#define MAXRUNS 32

int main(int argc, char **argv)
{
    struct bench_opts o = bench_parse(argc, argv);
    int runs_given = 0;
    for (int i = 1; i < argc; i++)
        runs_given |= !strcmp(argv[i], "--runs");
    if (!runs_given && !o.quick)
        o.runs = 3; /* a full run of 1 M durable puts takes minutes a side */
    if (o.runs > MAXRUNS)
        o.runs = MAXRUNS;
    nkeys = o.quick ? 100000 : 1000000;
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    char want[2900] = "";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            snprintf(want, sizeof want, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--keys") && i + 1 < argc)
            nkeys = strtoull(argv[++i], NULL, 10);
    }
    if (nkeys < 10000)
        nkeys = 10000;
    snprintf(dir, sizeof dir, "%s/bench-kv-XXXXXX", want[0] ? want : base);
    if (!mkdtemp(dir)) {
        fprintf(stderr, "bench_kv: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    struct statfs sf;
    if (statfs(dir, &sf) == 0 && sf.f_type == 0x01021994) {
        fprintf(stderr, "bench_kv: %s is on tmpfs; use --dir on a disk\n", dir);
        rmdir(dir);
        return 1;
    }

    printf("### map vs LMDB: %llu random 16-byte keys, 100-byte values, commit every %d puts "
           "(median of %d runs)\n\n",
           (unsigned long long)nkeys, BATCH, o.runs);
#ifndef MMK_HAVE_LMDB
    printf("skipped: LMDB not installed (apt-get install liblmdb-dev)\n");
#endif
    bench_plot_meta("kv_put_curve", "puts while the store grows (first run)", "keys (k)",
                    "k puts/s", 0);
    static struct result a[2][MAXRUNS], b[2][MAXRUNS];
    int bad = 0;
    for (int mode = 0; mode < 2; mode++)
        for (int run = 0; run < o.runs; run++) {
            uint64_t seed = mix((uint64_t)run * 7919 + (uint64_t)mode + 1);
            /* Alternate who goes first: the disk and the page cache warm up. */
            for (int side = 0; side < 2; side++) {
                int mmk_turn = (side + run) % 2 == 0;
                if (mmk_turn) {
                    a[mode][run] = run_mmk(seed, mode, run == 0);
                    bad |= !a[mode][run].ok;
                } else {
#ifdef MMK_HAVE_LMDB
                    b[mode][run] = run_lmdb(seed, mode, run == 0);
                    bad |= !b[mode][run].ok;
#endif
                }
            }
        }
    rmdir(dir);

    static const char *names[2] = {"durable (synced commits)", "no-sync"};
    printf("| mode | measure | mmkit | LMDB | mmkit / LMDB | target |\n");
    printf("|---|---|---:|---:|---:|---|\n");
    for (int mode = 0; mode < 2; mode++) {
        int n = o.runs;
        double ap = med(a[mode], n, offsetof(struct result, puts));
        double ag = med(a[mode], n, offsetof(struct result, gets));
        double ab = med(a[mode], n, offsetof(struct result, bytes));
        double ar = med(a[mode], n, offsetof(struct result, reopen));
        double bp = med(b[mode], n, offsetof(struct result, puts));
        double bg = med(b[mode], n, offsetof(struct result, gets));
        double bb = med(b[mode], n, offsetof(struct result, bytes));
        double br = med(b[mode], n, offsetof(struct result, reopen));
        double ara = med(a[mode], n, offsetof(struct result, reopen_adv));
        double bra = med(b[mode], n, offsetof(struct result, reopen_adv));
        printf("| %s | puts/s | %.0f k | %.0f k | %.2fx | %s |\n", names[mode], ap / 1e3,
               bp / 1e3, bp > 0 ? ap / bp : 0, mode ? "" : ">= 2x");
        printf("| %s | random gets/s | %.2f M | %.2f M | %.2fx | %s |\n", names[mode], ag / 1e6,
               bg / 1e6, bg > 0 ? ag / bg : 0, mode ? "" : ">= 3x");
        double agm = med(a[mode], n, offsetof(struct result, gets_many));
        printf("| %s | random gets/s, batched (mmk_map_get_many, 64 a call) | %.2f M | %.2f M "
               "(single) | %.2fx | |\n",
               names[mode], agm / 1e6, bg / 1e6, bg > 0 ? agm / bg : 0);
        printf("| %s | files (MiB) | %.1f | %.1f | %.2fx | %s |\n", names[mode], ab / 1048576,
               bb / 1048576, bb > 0 ? ab / bb : 0, mode ? "" : "<= 1.5x");
        printf("| %s | cold reopen + first get (ms) | %.2f | %.2f | %.2fx | %s |\n", names[mode],
               ar * 1e3, br * 1e3, br > 0 ? ar / br : 0, mode ? "" : "<= 1x");
        printf("| %s | the same, random-access advice (ms) | %.2f | %.2f | %.2fx | |\n",
               names[mode], ara * 1e3, bra * 1e3, bra > 0 ? ara / bra : 0);
    }
    printf("\nRead-mostly: the same random gets right after a cold read-only open, first pass "
           "(warming the cache) and second pass; mmkit with its plain mapping (MADV_RANDOM: a "
           "fault reads one page) and with MMK_HEAP_HUGE (2 MiB folios), LMDB with its default "
           "flags (read-ahead on); gets/s (medians):\n\n");
    printf("| mode | pass | mmkit plain | mmkit MMK_HEAP_HUGE | LMDB | plain / LMDB | huge / LMDB "
           "|\n|---|---|---:|---:|---:|---:|---:|\n");
    for (int mode = 0; mode < 2; mode++)
        for (int pass = 0; pass < 2; pass++) {
            double c[3], v[MAXRUNS];
            for (int hg = 0; hg < 3; hg++) {
                for (int i = 0; i < o.runs; i++)
                    v[i] = hg < 2 ? a[mode][i].cold[hg][pass] : b[mode][i].cold[0][pass];
                c[hg] = bench_median(v, o.runs);
            }
            printf("| %s | %s | %.2f M | %.2f M | %.2f M | %.2fx | %.2fx |\n", names[mode],
                   pass ? "second (warm)" : "first (cold)", c[0] / 1e6, c[1] / 1e6, c[2] / 1e6,
                   c[2] > 0 ? c[0] / c[2] : 0, c[2] > 0 ? c[1] / c[2] : 0);
        }
    printf("\nRatios: throughput mmkit over LMDB (above 1: mmkit faster); size and reopen time "
           "mmkit over LMDB (below 1: mmkit smaller/faster). Files: mmkit = heap + redo log, "
           "LMDB = data.mdb + lock.mdb (default LMDB flags, no MDB_WRITEMAP). Cold = pages "
           "dropped with POSIX_FADV_DONTNEED after closing; random-access advice = "
           "mmk_advise(MMK_ADV_RANDOM) on the heap mapping after open vs LMDB's MDB_NORDAHEAD: "
           "a cold fault then reads its page instead of read_ahead_kb around it. "
           "Directory %s (not tmpfs).\n",
           want[0] ? want : base);
    if (bad)
        printf("\nWARNING: a run failed or read back wrong data (see stderr).\n");
    return bad ? 1 : 0;
}
