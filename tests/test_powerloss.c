// mmk-test: timeout=300
/* Simulated power loss for the persistent heap and the map on top of it.
 *
 * A workload of transactions (allocations, frees, multi-page rewrites,
 * growth, root moves, schema changes, map puts and deletes, aborts, reopens,
 * two handles taking turns as the writer, and the creation of the heap)
 * runs with every write and sync of the heap recorded (tests/powersim.h).
 * At every sync point, just before the sync completes, the harness builds
 * what the disk could hold after a power cut (the state at each file's last
 * completed sync plus chosen subsets of the later writes, torn at 512 B or
 * 4 KiB, later ones surviving earlier ones), writes it as fresh files, makes
 * the heap believe it is a new boot and opens it. The recovered heap must
 * pass mmk_heap_check and be exactly the last acknowledged commit or the one
 * in flight: same commit id, same logical content (a model kept per commit),
 * same bytes (a digest of every page of the heap file); once the record of
 * the commit in flight is synced, that commit. At a sample of writes it
 * also checks the process-crash image (the page cache, same boot); some
 * recoveries are interrupted by a failing write and redone; after some, the
 * next commit and a reopen must work. Every fourth seed runs with
 * MMK_HEAP_NOSYNC: process crashes are checked as strictly, power-loss
 * images only classified (no promise there). docs/DURABILITY.md says more.
 *
 * Usage: test_powerloss [--seconds N] [--seed S] [--keep] [--creation]
 *   default: a budget of about 40 s (scaled by MMK_TEST_SCALE).
 *   --keep leaves the first failing image in the temp dir.
 *   --creation (the default, kept for old command lines) also crashes inside
 *   mmk_heap_open(MMK_HEAP_CREATE); --no-creation starts from a durable heap.
 * A second handle takes turns as the writer now and then, as a second
 * process would (it once zero-filled the other's log records). */
#include <mmkit/mmkit.h>

#include "crc32c.h"
#include "heap_internal.h"
#include "powersim.h"

#define NSLOT 24
#define NKEY 192 /* enough keys for the map to split buckets and chain */
#define TAB_MAGIC 0x4c42415452574f50ull

struct slot {
    mmk_ref ref;
    uint64_t size, ver;
};
struct table {
    uint64_t magic, txn;
    struct slot s[NSLOT];
    mmk_ref map;
    uint64_t sum;
};
struct model {
    uint64_t txn, schema;
    uint64_t size[NSLOT], ver[NSLOT];
    uint32_t kver[NKEY];
    int has_map;
};

static char dir[PATH_MAX], path[PATH_MAX + 32], imgpath[PATH_MAX + 32];
static uint64_t seed;
static mmk_heap *H;
static struct model m_ack, m_txn;
static uint64_t ack_cid;
static int in_commit, creating, keep, with_creation = 1;
static int uffd_ok = 1; /* the userfaultfd tracker works here (probed in main) */
static uint64_t log_syncs0; /* successful log syncs before the commit in flight */
static uint32_t *pagecrc;
static uint64_t pagecrc_n, ack_digest, ack_heap_size;
static struct ps_image img;
static uint64_t next_boot = 100;

/* Every acknowledged commit of the current seed (for MMK_HEAP_NOSYNC
 * power-loss images, which may go back further than one commit). */
struct hist {
    struct model m;
    uint64_t digest, size;
};
static struct hist *hist;
static uint64_t nhist;
static int nosync;

static void hist_add(void)
{
    hist = ps_xrealloc(hist, (ack_cid + 1) * sizeof *hist);
    hist[ack_cid] = (struct hist){m_ack, ack_digest, ack_heap_size};
    nhist = ack_cid + 1;
}

struct pend {
    uint64_t digest;
    char what[200];
};
static struct pend pend[1024]; /* in-flight recoveries of one commit, judged when it returns */
static int npend;

static struct {
    long images, power, proc, points, creation, next_ok, fails, commits, aborts, reopens;
    long rec_ack, rec_flight, seeds, syncs, nosync_seeds, points_by[3], interrupted, switches;
    long ns_exact, ns_older, ns_refused, ns_wrong, ns_images;
    uint64_t max_heap;
} st;

/* ------------------------------------------------------------ content */

static uint64_t word(uint64_t s, uint64_t ver, uint64_t j)
{
    return (s << 56) ^ (ver << 24) ^ j ^ (seed * 0x9e3779b97f4a7c15ull);
}

static uint32_t vlen_of(uint32_t k, uint32_t ver)
{
    return 1 + (k * 7 + ver * 13) % 700;
}

static unsigned char vbyte(uint32_t k, uint32_t ver, uint32_t j)
{
    return (unsigned char)(k ^ ver * 31 ^ j);
}

static uint64_t table_sum(const struct table *t)
{
    uint64_t x = t->txn * 0x9e3779b97f4a7c15ull ^ t->map;
    for (int i = 0; i < NSLOT; i++)
        x = x * 31 + t->s[i].ref + t->s[i].size * 7 + t->s[i].ver * 13;
    return x;
}

static uint64_t fold(const uint32_t *crc, uint64_t n)
{
    uint64_t x = 0xcbf29ce484222325ull ^ n;
    for (uint64_t i = 0; i < n; i++)
        x = (x ^ crc[i]) * 0x100000001b3ull;
    return x;
}

static uint32_t page_crc(const unsigned char *p)
{
    return mmk__crc32c(0, p, 4096);
}

/* Page 0 without the fields that change outside commits (a checkpoint
 * points the header at the new log generation; an applier marks it). */
static uint32_t page0_crc(const unsigned char *p)
{
    unsigned char c[4096];
    memcpy(c, p, sizeof c);
    struct hp_header *hd = (struct hp_header *)c;
    hd->log_gen = hd->log_off = hd->applying = 0;
    hd->crc = 0;
    return page_crc(c);
}

/* Digest of an open heap's bytes, read through its mapping in a view. */
static uint64_t heap_digest(mmk_heap *g, uint64_t size)
{
    uint64_t n = size / 4096;
    uint32_t *c = calloc(n ? n : 1, sizeof *c);
    CHECK(c);
    CHECK_OK(mmk_heap_read_begin(g));
    const unsigned char *base = (const unsigned char *)mmk_heap_ptr(g, 4096) - 4096;
    for (uint64_t pg = 0; pg < n; pg++)
        c[pg] = pg ? page_crc(base + pg * 4096) : page0_crc(base);
    mmk_heap_read_end(g);
    uint64_t d = fold(c, n);
    free(c);
    return d;
}

static int heap_fd_real = -1;

static void update_page(uint64_t pg, void *arg)
{
    (void)arg;
    if (pg >= pagecrc_n) {
        uint64_t nn = (pg + 1) * 2;
        pagecrc = ps_xrealloc(pagecrc, nn * sizeof *pagecrc);
        static const unsigned char zero[4096];
        for (uint64_t i = pagecrc_n; i < nn; i++)
            pagecrc[i] = page_crc(zero);
        pagecrc_n = nn;
    }
    unsigned char b[4096];
    ssize_t r = pread(heap_fd_real, b, 4096, (off_t)(pg * 4096));
    if (r < 0)
        r = 0;
    memset(b + r, 0, 4096 - (size_t)r);
    pagecrc[pg] = pg ? page_crc(b) : page0_crc(b);
}

/* The digest of the real heap file as of now (= the acknowledged commit). */
static void update_digest(uint64_t heap_size)
{
    heap_fd_real = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(heap_fd_real >= 0);
    ps_take_touched(update_page, NULL);
    close(heap_fd_real);
    uint64_t n = heap_size / 4096;
    if (n > pagecrc_n)
        update_page(n - 1, NULL); /* extends the table with zero pages */
    ack_digest = fold(pagecrc, n);
    ack_heap_size = heap_size;
}

/* ------------------------------------------------------------ verification */

static int verify_model(mmk_heap *g, const struct model *m, char *why, size_t n)
{
    int rc = mmk_heap_read_begin(g);
    if (rc) {
        snprintf(why, n, "read_begin: %s", mmk_strerror(rc));
        return 1;
    }
    int bad = 1;
    mmk_ref root = mmk_heap_root(g);
    if (mmk_heap_schema(g) != m->schema) {
        snprintf(why, n, "schema %llu, expected %llu", (unsigned long long)mmk_heap_schema(g),
                 (unsigned long long)m->schema);
        goto out;
    }
    if (m->txn == 0) {
        bad = root != 0;
        if (bad)
            snprintf(why, n, "root set before any commit");
        goto out;
    }
    const struct table *t = mmk_heap_ptr(g, root);
    if (!t || t->magic != TAB_MAGIC || t->txn != m->txn || t->sum != table_sum(t)) {
        snprintf(why, n, "table: txn %llu expected %llu (or bad magic/sum)",
                 t ? (unsigned long long)t->txn : 0ull, (unsigned long long)m->txn);
        goto out;
    }
    for (int s = 0; s < NSLOT; s++) {
        if (t->s[s].size != m->size[s] || (m->size[s] && t->s[s].ver != m->ver[s])) {
            snprintf(why, n, "slot %d: size %llu ver %llu, expected %llu / %llu", s,
                     (unsigned long long)t->s[s].size, (unsigned long long)t->s[s].ver,
                     (unsigned long long)m->size[s], (unsigned long long)m->ver[s]);
            goto out;
        }
        if (!m->size[s])
            continue;
        const uint64_t *p = mmk_heap_ptr(g, t->s[s].ref);
        if (!p || !mmk_heap_ptr(g, t->s[s].ref + m->size[s] - 1)) {
            snprintf(why, n, "slot %d: ref %#llx out of the heap", s,
                     (unsigned long long)t->s[s].ref);
            goto out;
        }
        for (uint64_t j = 0; j < m->size[s] / 8; j++)
            if (p[j] != word((uint64_t)s, m->ver[s], j)) {
                snprintf(why, n, "slot %d ver %llu: word %llu differs", s,
                         (unsigned long long)m->ver[s], (unsigned long long)j);
                goto out;
            }
    }
    if (m->has_map != (t->map != 0)) {
        snprintf(why, n, "map ref %#llx, model has_map %d", (unsigned long long)t->map,
                 m->has_map);
        goto out;
    }
    if (m->has_map) {
        uint64_t want = 0;
        for (uint32_t k = 0; k < NKEY; k++) {
            char key[16];
            int kl = snprintf(key, sizeof key, "key-%u", k);
            const void *v;
            size_t vl;
            rc = mmk_map_get(g, t->map, key, (size_t)kl, &v, &vl);
            if (!m->kver[k]) {
                if (rc != -ENOENT) {
                    snprintf(why, n, "map: deleted key %u: get %d", k, rc);
                    goto out;
                }
                continue;
            }
            want++;
            if (rc || vl != vlen_of(k, m->kver[k])) {
                snprintf(why, n, "map: key %u ver %u: get %d len %zu", k, m->kver[k], rc,
                         rc ? (size_t)0 : vl);
                goto out;
            }
            for (uint32_t j = 0; j < vl; j++)
                if (((const unsigned char *)v)[j] != vbyte(k, m->kver[k], j)) {
                    snprintf(why, n, "map: key %u ver %u: byte %u differs", k, m->kver[k], j);
                    goto out;
                }
        }
        if (mmk_map_count(g, t->map) != want) {
            snprintf(why, n, "map: count %llu expected %llu",
                     (unsigned long long)mmk_map_count(g, t->map), (unsigned long long)want);
            goto out;
        }
        char msg[160];
        rc = mmk_map_check_report(g, t->map, msg, sizeof msg);
        if (rc) {
            snprintf(why, n, "mmk_map_check: %s", msg);
            goto out;
        }
    }
    bad = 0;
out:
    mmk_heap_read_end(g);
    return bad;
}

static void fail(const char *kind, const char *plan, const char *why)
{
    st.fails++;
    fprintf(stderr,
            "FAIL [seed %llu, sync %llu, write %llu, %s, %s]: %s (acked commit %llu%s)\n",
            (unsigned long long)seed, (unsigned long long)PS.nsyncs,
            (unsigned long long)PS.nwrites, kind, plan, why, (unsigned long long)ack_cid,
            in_commit ? ", one in flight" : "");
    if (keep && st.fails == 1) {
        char cmd[3 * PATH_MAX];
        snprintf(cmd, sizeof cmd, "cp --sparse=always '%s' '%s.fail' && cp --sparse=always '%s-log' '%s.fail-log'",
                 imgpath, imgpath, imgpath, imgpath);
        if (system(cmd) == 0)
            fprintf(stderr, "kept: %s.fail and %s.fail-log\n", imgpath, imgpath);
    }
}

/* After recovery: one more commit on the recovered heap and a clean reopen. */
static int next_commit_ok(mmk_heap **gp, char *why, size_t n)
{
    mmk_heap *g = *gp;
    int rc = mmk_heap_begin(g);
    mmk_ref r = 0;
    if (!rc)
        rc = mmk_heap_alloc(g, 5000, &r);
    if (!rc) {
        memset(mmk_heap_ptr(g, r), 0x77, 5000);
        rc = mmk_heap_commit(g);
    }
    if (rc) {
        snprintf(why, n, "next commit after recovery: %s", mmk_strerror(rc));
        return 1;
    }
    mmk_heap_close(g);
    *gp = NULL;
    rc = mmk_heap_open(imgpath, 0, gp);
    if (!rc)
        rc = mmk_heap_check(*gp);
    if (rc) {
        snprintf(why, n, "reopen after the next commit: %s", mmk_strerror(rc));
        return 1;
    }
    const unsigned char *p = mmk_heap_ptr(*gp, r);
    if (!p || p[0] != 0x77 || p[4999] != 0x77) {
        snprintf(why, n, "the next commit's object is not there after reopen");
        return 1;
    }
    return 0;
}

/* Open the image at imgpath and judge it. power: a new boot. */
static void judge(const char *kind, const char *plan, int power)
{
    ps_write_image(&img, imgpath);
    PS.recording = 0;
    uint64_t boot = PS.boot_no;
    if (power)
        ps_set_boot(next_boot++);
    st.images++;
    if (power)
        st.power++;
    else
        st.proc++;
    char why[300] = "";
    mmk_heap *g = NULL;
    if (power && !creating && test_rand(&PS.rng) % 8 == 0) {
        /* a crash inside recovery (a write of it fails: the process stops
         * there), then recovery again */
        PS.img_fail_in = 1 + (long)(test_rand(&PS.rng) % 6);
        int r0 = mmk_heap_open(imgpath, 0, &g);
        st.interrupted += PS.img_fail_in == 0 && r0 != 0;
        PS.img_fail_in = 0;
        PS.img_fail_now = 0;
        mmk_heap_close(g);
        g = NULL;
    }
    int rc = mmk_heap_open(imgpath, creating ? MMK_HEAP_CREATE : 0, &g);
    if (rc) {
        snprintf(why, sizeof why, "open: %s", mmk_strerror(rc));
        goto bad;
    }
    char msg[200];
    rc = mmk_heap_check_report(g, msg, sizeof msg);
    if (rc) {
        snprintf(why, sizeof why, "mmk_heap_check: %s", msg);
        goto bad;
    }
    struct mmk_heap_stats hs;
    CHECK_OK(mmk_heap_stats(g, &hs));
    if (creating) {
        st.creation++;
        if (hs.commit_id != 0) {
            snprintf(why, sizeof why, "a heap being created recovered commit %llu",
                     (unsigned long long)hs.commit_id);
            goto bad;
        }
    } else if (hs.commit_id == ack_cid) {
        /* stricter than the API: once the record's log sync completed, the
         * commit in flight is durable and recovery must not drop it */
        if (in_commit && !nosync && PS.syncs_ok[PS_LOG] > log_syncs0) {
            snprintf(why, sizeof why, "commit %llu in flight was durable (its log sync completed) "
                     "and was dropped", (unsigned long long)ack_cid + 1);
            goto bad;
        }
        st.rec_ack++;
        if (verify_model(g, &m_ack, why, sizeof why))
            goto bad;
        uint64_t d = heap_digest(g, hs.size);
        if (hs.size != ack_heap_size || d != ack_digest) {
            snprintf(why, sizeof why, "bytes differ from acknowledged commit %llu (size %llu/%llu)",
                     (unsigned long long)ack_cid, (unsigned long long)hs.size,
                     (unsigned long long)ack_heap_size);
            goto bad;
        }
    } else if (in_commit && hs.commit_id == ack_cid + 1) {
        st.rec_flight++;
        if (verify_model(g, &m_txn, why, sizeof why))
            goto bad;
        CHECK(npend < (int)(sizeof pend / sizeof pend[0]));
        pend[npend].digest = heap_digest(g, hs.size);
        snprintf(pend[npend].what, sizeof pend[npend].what, "[sync %llu, %s, %s]",
                 (unsigned long long)PS.nsyncs, kind, plan);
        npend++;
    } else {
        snprintf(why, sizeof why, "recovered commit %llu", (unsigned long long)hs.commit_id);
        goto bad;
    }
    if (st.images % 5 == 0) {
        if (next_commit_ok(&g, why, sizeof why))
            goto bad;
        st.next_ok++;
    }
    mmk_heap_close(g);
    ps_set_boot(boot);
    PS.recording = 1;
    return;
bad:
    mmk_heap_close(g);
    fail(kind, plan, why);
    ps_set_boot(boot);
    PS.recording = 1;
}

/* MMK_HEAP_NOSYNC promises nothing after a power loss: classify what an
 * image recovers to, without failing. */
static void survey(const char *plan)
{
    ps_write_image(&img, imgpath);
    PS.recording = 0;
    uint64_t boot = PS.boot_no;
    ps_set_boot(next_boot++);
    st.ns_images++;
    char why[300];
    mmk_heap *g = NULL;
    struct mmk_heap_stats hs;
    int rc = mmk_heap_open(imgpath, 0, &g);
    if (!rc)
        rc = mmk_heap_check(g);
    if (!rc)
        rc = mmk_heap_stats(g, &hs);
    if (rc)
        st.ns_refused++;
    else if (hs.commit_id == ack_cid + 1 && in_commit && !verify_model(g, &m_txn, why, sizeof why))
        st.ns_exact++;
    else if (hs.commit_id < nhist && !verify_model(g, &hist[hs.commit_id].m, why, sizeof why) &&
             heap_digest(g, hs.size) == hist[hs.commit_id].digest)
        hs.commit_id == ack_cid ? st.ns_exact++ : st.ns_older++;
    else {
        st.ns_wrong++;
        if (st.ns_wrong <= 3)
            printf("  NOSYNC power loss (%s) opened commit %llu (acked %llu) with other "
                   "content, mmk_heap_check passing\n",
                   plan, (unsigned long long)hs.commit_id, (unsigned long long)ack_cid);
    }
    mmk_heap_close(g);
    ps_set_boot(boot);
    PS.recording = 1;
}

#define IMAGES_PER_POINT 6

static double deadline;

static void at_sync(int file)
{
    if (now_sec() > deadline)
        return; /* the budget is spent: let the workload finish */
    st.points++;
    st.points_by[file + 1]++;
    char name[120];
    struct ps_plan plans[6] = {
        {.mode = PS_NONE},
        {.mode = PS_ALL},
        {.mode = PS_SUBSET, .p = 0.5},
        {.mode = PS_SUBSET, .p = 0.3 + 0.6 * ps_chance(0.5), .tear = 512, .q = 0.5},
        {.mode = PS_SUBSET, .p = 0.7, .tear = 4096, .q = 0.3 + 0.5 * ps_chance(0.5)},
        {.mode = PS_PREFIX},
    };
    uint64_t first = ps_first_pending_seq();
    plans[5].prefix = first + (PS.seq > first ? test_rand(&PS.rng) % (PS.seq - first + 1) : 0);
    int n = ps_pending_ops() ? IMAGES_PER_POINT : 1;
    for (int i = 0; i < n && i < 6; i++) {
        plans[i].lose_dir = creating;
            ps_build(&img, &plans[i]);
        judge("power", ps_plan_name(&plans[i], name, sizeof name), 1);
    }
    /* the process-crash image at the same point (same boot, page cache:
     * every write so far; checked against the real files now and then) */
    if (st.points % 50 == 1) {
        int f;
        uint64_t pg = ps_selfcheck(&img, &f);
        if (pg) {
            fprintf(stderr, "simulator: model differs from file %d at page %llu\n", f,
                    (unsigned long long)pg - 1);
            exit(1);
        }
    }
    struct ps_plan all = {.mode = PS_ALL};
    ps_build(&img, &all);
    judge("process", "page cache", 0);
}

#define WRITE_SAMPLE 6 /* one process-crash image every N writes (random) */

static void at_write(int file)
{
    (void)file;
    if (test_rand(&PS.rng) % WRITE_SAMPLE || now_sec() > deadline)
        return;
    struct ps_plan all = {.mode = PS_ALL};
    ps_build(&img, &all);
    judge("process", "page cache at a write", 0);
    if (nosync) {
        /* writeback in order up to a point, or any subset */
        uint64_t first = ps_first_pending_seq();
        struct ps_plan pl = {.mode = PS_PREFIX};
        pl.prefix = first + (PS.seq > first ? test_rand(&PS.rng) % (PS.seq - first + 1) : 0);
        ps_build(&img, &pl);
        survey("ordered writeback");
        pl = (struct ps_plan){.mode = PS_SUBSET, .p = 0.9, .tear = 4096, .q = 0.9};
        ps_build(&img, &pl);
        survey("subset");
    }
}

/* ------------------------------------------------------------ workload */

static uint64_t rand_size(uint64_t *rng)
{
    uint64_t r = test_rand(rng);
    switch (r % 20) {
    case 0: return 64 * 1024 + (r >> 8) % (448 * 1024);         /* large, multi-page */
    case 1: return r % 4 == 0 ? (1u << 20) + (r >> 8) % (3u << 19) : 20000; /* growth */
    default:
        return r % 2 ? 16 + (r >> 8) % 2032 : 4096 + (r >> 8) % 60000;
    }
}

static void fill_slot(struct table *t, int s, uint64_t ver)
{
    uint64_t *p = mmk_heap_ptr(H, t->s[s].ref);
    CHECK(p);
    for (uint64_t j = 0; j < t->s[s].size / 8; j++)
        p[j] = word((uint64_t)s, ver, j);
    t->s[s].ver = ver;
}

static void put_key(struct table *t, uint32_t k, uint32_t ver)
{
    char key[16];
    int kl = snprintf(key, sizeof key, "key-%u", k);
    unsigned char v[800];
    uint32_t vl = vlen_of(k, ver);
    for (uint32_t j = 0; j < vl; j++)
        v[j] = vbyte(k, ver, j);
    CHECK_OK(mmk_map_put(H, t->map, key, (size_t)kl, v, vl));
}

static void one_txn(uint64_t *rng)
{
    CHECK_OK(mmk_heap_begin(H));
    m_txn = m_ack;
    m_txn.txn++;
    struct table *t = mmk_heap_ptr(H, mmk_heap_root(H));
    if (!t) {
        mmk_ref r;
        CHECK_OK(mmk_heap_alloc(H, sizeof *t, &r));
        CHECK_OK(mmk_heap_set_root(H, r));
        t = mmk_heap_ptr(H, r);
        t->magic = TAB_MAGIC;
    }
    int nops = 1 + (int)(test_rand(rng) % 5);
    for (int o = 0; o < nops; o++) {
        int s = (int)(test_rand(rng) % NSLOT);
        uint64_t r = test_rand(rng) % 10;
        if (t->s[s].size && r >= 4) {
            CHECK_OK(mmk_heap_free(H, t->s[s].ref));
            t->s[s] = (struct slot){0};
            m_txn.size[s] = 0;
            if (r < 7)
                continue;
        }
        if (!t->s[s].size) {
            uint64_t sz = rand_size(rng) & ~7ull;
            CHECK_OK(mmk_heap_alloc(H, sz, &t->s[s].ref));
            t->s[s].size = sz;
            m_txn.size[s] = sz;
        }
        m_txn.ver[s]++;
        fill_slot(t, s, m_txn.ver[s]);
    }
    if (test_rand(rng) % 3 == 0) {
        if (!t->map) {
            CHECK_OK(mmk_map_create(H, &t->map));
            m_txn.has_map = 1;
        }
        for (int i = (int)(test_rand(rng) % 10); i >= 0; i--) {
            uint32_t k = (uint32_t)(test_rand(rng) % NKEY);
            m_txn.kver[k]++;
            put_key(t, k, m_txn.kver[k]);
        }
        if (test_rand(rng) % 3 == 0) {
            uint32_t k = (uint32_t)(test_rand(rng) % NKEY);
            char key[16];
            int kl = snprintf(key, sizeof key, "key-%u", k);
            int rc = mmk_map_del(H, t->map, key, (size_t)kl);
            CHECK_EQ(rc, m_txn.kver[k] ? 0 : -ENOENT);
            m_txn.kver[k] = 0;
        }
    }
    if (test_rand(rng) % 20 == 0) {
        m_txn.schema = m_txn.txn;
        CHECK_OK(mmk_heap_set_schema(H, m_txn.schema));
    }
    if (test_rand(rng) % 25 == 0) { /* move the root */
        mmk_ref r;
        CHECK_OK(mmk_heap_alloc(H, sizeof *t, &r));
        struct table *nt = mmk_heap_ptr(H, r);
        *nt = *t;
        CHECK_OK(mmk_heap_free(H, mmk_heap_ref(H, t)));
        CHECK_OK(mmk_heap_set_root(H, r));
        t = nt;
    }
    t->txn = m_txn.txn;
    t->sum = table_sum(t);
    if (test_rand(rng) % 15 == 0) {
        CHECK_OK(mmk_heap_abort(H));
        st.aborts++;
        const struct table *a = mmk_heap_ptr(H, mmk_heap_root(H));
        CHECK(m_ack.txn == 0 ? a == NULL : a && a->txn == m_ack.txn);
        return;
    }
    in_commit = 1;
    log_syncs0 = PS.syncs_ok[PS_LOG];
    CHECK_OK(mmk_heap_commit(H));
    in_commit = 0;
    struct mmk_heap_stats hs;
    CHECK_OK(mmk_heap_stats(H, &hs));
    CHECK_EQ(hs.commit_id, ack_cid + 1);
    ack_cid = hs.commit_id;
    m_ack = m_txn;
    update_digest(hs.size);
    hist_add();
    if (hs.size > st.max_heap)
        st.max_heap = hs.size;
    for (int i = 0; i < npend; i++)
        if (pend[i].digest != ack_digest) {
            char why[300];
            snprintf(why, sizeof why, "image %s recovered commit %llu with other bytes",
                     pend[i].what, (unsigned long long)ack_cid);
            fail("power", "in flight", why);
        }
    npend = 0;
    st.commits++;
}

/* One seed: create the heap under the recorder, run txns transactions. */
static void run_seed(uint64_t s, long txns)
{
    seed = s;
    st.seeds++;
    snprintf(path, sizeof path, "%s/h%llu.heap", dir, (unsigned long long)s);
    snprintf(imgpath, sizeof imgpath, "%s/img.heap", dir);
    static const char *limits[] = {"16384", "131072", "1048576", "33554432"};
    setenv("MMK_HEAP_LOG_LIMIT", limits[(st.seeds - 1) % 4], 1);
    /* each way of finding the written pages in turn (a page missed there
     * is a commit lost here) */
    static const char *dirty[] = {"", "wp", "pagemap", "uffd"};
    if (!uffd_ok)
        dirty[3] = ""; /* not on this kernel: the default again */
    if (*dirty[(st.seeds - 1) % 4])
        setenv("MMK_HEAP_DIRTY", dirty[(st.seeds - 1) % 4], 1);
    else
        unsetenv("MMK_HEAP_DIRTY");
    memset(&m_ack, 0, sizeof m_ack);
    ack_cid = 0;
    npend = 0;
    free(pagecrc);
    pagecrc = NULL;
    pagecrc_n = 0;
    if (with_creation) { /* record from before the file exists */
        ps_init(path, s);
        PS.at_sync = at_sync;
        PS.at_write = at_write;
        creating = 1;
    }
    nosync = st.seeds % 4 == 3; /* the third seed of four */
    st.nosync_seeds += nosync;
    unsigned fl = nosync ? MMK_HEAP_NOSYNC : 0;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE | fl, &H));
    creating = 0;
    if (!with_creation) { /* the created heap is durable: start from it */
        ps_init(path, s);
        PS.at_sync = at_sync;
        PS.at_write = at_write;
    }
    heap_fd_real = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(heap_fd_real >= 0);
    for (uint64_t pg = 0; pg < 256; pg++)
        update_page(pg, NULL);
    close(heap_fd_real);
    update_digest(1 << 20);
    hist_add();
    uint64_t rng = s * 0x2545f4914f6cdd1dull | 1;
    /* a second handle takes turns as the writer (as a second process
     * would: its own mapping and cached log state) */
    mmk_heap *other;
    CHECK_OK(mmk_heap_open(path, fl, &other));
    for (long i = 0; i < (nosync ? txns / 2 : txns) && now_sec() < deadline && st.fails < 5; i++) {
        one_txn(&rng);
        uint64_t r = test_rand(&rng);
        if (r % 40 == 0) { /* reopen (same boot): nothing to recover */
            mmk_heap_close(H);
            CHECK_OK(mmk_heap_open(path, fl, &H));
            st.reopens++;
        } else if (r % 8 == 1) { /* the other handle becomes the writer */
            mmk_heap *t = H;
            H = other;
            other = t;
            st.switches++;
        }
    }
    mmk_heap_close(other);
    mmk_heap_close(H);
    H = NULL;
    st.syncs += (long)PS.nsyncs;
    ps_fini();
    unlink(path);
    char lp[PATH_MAX + 40];
    snprintf(lp, sizeof lp, "%s-log", path);
    unlink(lp);
}

int main(int argc, char **argv)
{
    double seconds = 0;
    uint64_t seed0 = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed0 = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--keep"))
            keep = 1;
        else if (!strcmp(argv[i], "--creation"))
            with_creation = 1;
        else if (!strcmp(argv[i], "--no-creation"))
            with_creation = 0;
        else if (!strcmp(argv[i], "--known-bugs")) {
            /* accepted for old command lines: writer switching is always on */
        }
    }
    int soak = seconds > 0;
    if (!soak)
        seconds = 40.0 * test_scale();
    /* images live in memory-backed storage when there is one: the disk
     * is simulated, and the budget goes to checking, not to writing */
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    char tmpl[PATH_MAX];
    snprintf(tmpl, sizeof tmpl, "%s/mmkit-power-XXXXXX", base);
    CHECK(mkdtemp(tmpl));
    CHECK(realpath(tmpl, dir));
    {   /* is the userfaultfd tracker available here? */
        char probe[PATH_MAX + 16];
        snprintf(probe, sizeof probe, "%s/probe.heap", dir);
        setenv("MMK_HEAP_DIRTY", "uffd", 1);
        mmk_heap *ph;
        int prc = mmk_heap_open(probe, MMK_HEAP_CREATE | MMK_HEAP_NOSYNC, &ph);
        uffd_ok = prc == 0;
        if (prc == 0)
            mmk_heap_close(ph);
        else
            printf("userfaultfd tracking not available here (%s): not simulated\n",
                   mmk_strerror(prc));
        unsetenv("MMK_HEAP_DIRTY");
    }
    setenv("MMK_HEAP_RESERVE", "268435456", 1); /* many heaps open in turn */
    if (!seed0)
        seed0 = (uint64_t)time(NULL);
    printf("seed %llu, budget %.0f s\n", (unsigned long long)seed0, seconds);
    double t0 = now_sec();
    deadline = t0 + seconds;
    long txns = 120;
    for (uint64_t s = seed0; now_sec() < deadline && st.fails < 5; s++)
        run_seed(s, txns);
    double el = now_sec() - t0;
    printf("seeds %ld (dirty tracking: default, wp, pagemap in turn), commits %ld (aborts %ld, "
           "reopens %ld, writer handle switches %ld), largest heap %llu KiB\n",
           st.seeds, st.commits, st.aborts, st.reopens, st.switches,
           (unsigned long long)(st.max_heap >> 10));
    printf("sync points %ld (%ld syncs recorded), crash images checked %ld: power loss %ld, "
           "process crash %ld, during creation %ld\n",
           st.points, st.syncs, st.images, st.power, st.proc, st.creation);
    printf("sync points by file: log %ld, heap file %ld, directory %ld\n", st.points_by[2],
           st.points_by[1], st.points_by[0]);
    printf("MMK_HEAP_NOSYNC seeds %ld (process crash images checked as above); power-loss "
           "survey of %ld images: exact %ld, an older commit intact %ld, refused "
           "(open/check error) %ld, other content with check passing %ld\n",
           st.nosync_seeds, st.ns_images, st.ns_exact, st.ns_older, st.ns_refused, st.ns_wrong);
    printf("recovered to the acknowledged commit %ld, to the one in flight %ld; recoveries "
           "interrupted and redone %ld; next commit + reopen verified %ld; failures %ld; %.1f s\n",
           st.rec_ack, st.rec_flight, st.interrupted, st.next_ok, st.fails, el);
    if (!st.fails || !keep)
        rm_rf(dir);
    return st.fails ? 1 : 0;
}
