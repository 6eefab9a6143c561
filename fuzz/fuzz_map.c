/* Fuzz the map's on-heap structures through a damaged heap.
 *
 * Once: a heap file with a map of a few hundred entries (empty key, values
 * of 0 bytes to 5 KiB, overflow nodes). Per input, inside a write
 * transaction: damage the map's header, directory, segments, overflow nodes
 * and entries as the input says (byte XORs, 8-byte words copied from one
 * place of the map to another, words set to refs of other map objects);
 * then every read entry point must give valid data (inside the heap) or
 * MMK_ECORRUPT / -ENOENT, never crash or loop; optionally puts and deletes
 * run on the damaged map; then the transaction is aborted. Every 8th input
 * commits the damage instead, reopens the file and reads there, then undoes
 * the damage (XOR and copies replayed backwards) and commits again.
 *
 * Input: byte 0 = mode; then 7-byte records:
 *   op%3 == 0: XOR   region, off(2), value
 *   op%3 == 1: COPY  region, off(2) -> region, off(2)   (8-byte words)
 *   op%3 == 2: SETREF region, off(2) := ref of region + 8*k */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mmkit/mmkit.h>

#define NENT 260

struct t_hdr {
    uint64_t magic;
    uint32_t version, hdr_size;
    uint64_t k0, k1, count, mods, n, split, dir, dir_cap, nseg, over, sum;
};

struct region {
    mmk_ref ref;
    uint64_t len;
};

static char path[512];
static mmk_heap *H;
static mmk_ref M;
static struct region reg[1024];
static unsigned nreg, nstruct;

static void die(const char *what, int rc)
{
    fprintf(stderr, "fuzz_map setup: %s: %s\n", what, mmk_strerror(rc));
    abort();
}

static size_t key_of(unsigned i, char *k) { return i == 0 ? 0 : (size_t)snprintf(k, 16, "key%u", i); }
static uint32_t vlen_of(unsigned i) { return i == 7 ? 5000 : (i * 13) % 90; }

static void add(mmk_ref r, uint64_t len)
{
    if (nreg < sizeof reg / sizeof reg[0])
        reg[nreg++] = (struct region){r, len};
}

/* Find the map's objects by walking its (intact) layout. */
static void collect(void)
{
    struct t_hdr *hd = mmk_heap_ptr(H, M);
    nreg = 0;
    add(M, sizeof *hd);
    add(hd->dir, hd->dir_cap * 8);
    uint64_t *dir = mmk_heap_ptr(H, hd->dir);
    for (uint64_t s = 0; s < hd->nseg; s++)
        add(dir[s], 4096);
    uint64_t nb = hd->n + hd->split;
    for (uint64_t b = 0; b < nb; b++) {
        uint64_t *bk = (uint64_t *)mmk_heap_ptr(H, dir[b / 64]) + (b % 64) * 8;
        while (bk[7]) {
            add(bk[7], 64);
            bk = mmk_heap_ptr(H, bk[7]);
        }
    }
    nstruct = nreg;
    mmk_map_iter it;
    const void *k, *v;
    size_t kl, vl;
    mmk_map_iter_init(H, M, &it);
    while (mmk_map_iter_next(&it, &k, &kl, &v, &vl) == 1)
    {
        size_t hdr = kl < 128 && vl < (1u << 24) ? 8 : 16; /* short or long entry header */
        add(mmk_heap_ref(H, k) - hdr, hdr + ((kl + 7) & ~(size_t)7) + vl);
    }
}

static void cleanup(void)
{
    char log[600];
    snprintf(log, sizeof log, "%s-log", path);
    mmk_heap_close(H);
    unlink(path);
    unlink(log);
}

extern uint64_t mmk__map_fixed_seed;

static void setup(void)
{
    const char *fs = getenv("MMK_FUZZ_MAP_SEED");
    mmk__map_fixed_seed = fs ? strtoull(fs, NULL, 0) : 0x6d6d6b6d6170ull;
    const char *t = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/mmk-fuzz-map-%d.heap", t && *t ? t : "/tmp", (int)getpid());
    int rc = mmk_heap_open(path, MMK_HEAP_CREATE | MMK_HEAP_NOSYNC, &H);
    if (rc)
        die("open", rc);
    if ((rc = mmk_heap_begin(H)) || (rc = mmk_map_create(H, &M)) || (rc = mmk_heap_set_root(H, M)))
        die("create", rc);
    static uint8_t val[5000];
    for (unsigned i = 0; i < NENT; i++) {
        char k[16];
        size_t kl = key_of(i, k);
        memset(val, (int)i, sizeof val);
        if ((rc = mmk_map_put(H, M, k, kl, val, vlen_of(i))))
            die("put", rc);
    }
    if ((rc = mmk_heap_commit(H)))
        die("commit", rc);
    mmk__map_fixed_seed = 0;
    collect();
    atexit(cleanup);
}

struct rec {
    uint8_t op, r1, r2;
    uint16_t o1, o2, v;
};

static uint8_t *at(uint8_t r, uint16_t off, unsigned width)
{
    struct region *g = &reg[r % nreg];
    if (g->len < width)
        return NULL;
    uint64_t o = off % (g->len - width + 1);
    if (width == 8)
        o &= ~7ull;
    return (uint8_t *)mmk_heap_ptr(H, g->ref) + o;
}

/* Apply record i (forward) or undo it (back). */
static void apply(const struct rec *rc, int back, uint64_t *saved)
{
    if (rc->op % 3 == 0) {
        uint8_t *p = at(rc->r1, rc->o1, 1);
        if (p)
            *p ^= (uint8_t)rc->v;
        return;
    }
    uint8_t *dst = at(rc->r1, rc->o1, 8);
    if (!dst)
        return;
    if (back) {
        memcpy(dst, saved, 8);
        return;
    }
    memcpy(saved, dst, 8);
    uint64_t w;
    if (rc->op % 3 == 1) {
        uint8_t *src = at(rc->r2, rc->o2, 8);
        if (!src)
            return;
        memcpy(&w, src, 8);
    } else {
        struct region *g = &reg[rc->r2 % nreg];
        w = g->ref + 8 * (uint64_t)(rc->o2 % 16);
        if (rc->v & 1) /* keep the slot's tag bits */
            w |= *(uint64_t *)dst & ~((1ull << 48) - 1);
    }
    memcpy(dst, &w, 8);
}

static void in_heap(const void *p, size_t n)
{
    if (!n)
        return;
    if (!mmk_heap_ref(H, p) || !mmk_heap_ref(H, (const char *)p + n - 1))
        abort(); /* a pointer outside the heap */
}

static void reads(void)
{
    for (unsigned i = 0; i < NENT + 20; i++) {
        char k[16];
        size_t kl = key_of(i, k);
        const void *v;
        size_t vl;
        int rc = mmk_map_get(H, M, k, kl, &v, &vl);
        if (rc == 0)
            in_heap(v, vl);
        else if (rc != -ENOENT && rc != MMK_ECORRUPT && rc != MMK_EFORMAT)
            abort();
    }
    /* the batched get agrees with the single one, key by key */
    enum { NB = NENT + 20 };
    char kb[NB][16];
    const void *keys[NB], *vals[NB];
    size_t kls[NB], vls[NB];
    int rcs[NB];
    for (unsigned i = 0; i < NB; i++) {
        kls[i] = key_of(i, kb[i]);
        keys[i] = kb[i];
    }
    int found = mmk_map_get_many(H, M, NB, keys, kls, vals, vls, rcs);
    if (found >= 0) {
        int nf = 0;
        for (unsigned i = 0; i < NB; i++) {
            const void *v1;
            size_t vl1;
            int r1 = mmk_map_get(H, M, keys[i], kls[i], &v1, &vl1);
            if (r1 != rcs[i] || (r1 == 0 && (v1 != vals[i] || vl1 != vls[i])))
                abort(); /* batched and single gets disagree */
            nf += rcs[i] == 0;
        }
        if (nf != found)
            abort();
    } else if (found != MMK_ECORRUPT && found != MMK_EFORMAT) {
        abort();
    }
    mmk_map_iter it;
    int rc = mmk_map_iter_init(H, M, &it);
    unsigned long steps = 0;
    const void *k, *v;
    size_t kl, vl;
    if (rc == 0)
        while ((rc = mmk_map_iter_next(&it, &k, &kl, &v, &vl)) == 1) {
            in_heap(k, kl);
            in_heap(v, vl);
            if (++steps > 1000000)
                abort(); /* unbounded iteration */
        }
    if (rc != 0 && rc != MMK_ECORRUPT && rc != MMK_EFORMAT)
        abort();
    char msg[256];
    rc = mmk_map_check_report(H, M, msg, sizeof msg);
    if (rc != 0 && rc != MMK_ECORRUPT && rc != MMK_EFORMAT)
        abort();
    (void)mmk_map_count(H, M);
}

static void writes(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i + 1 < n && i < 64; i += 2) {
        char k[16];
        size_t kl = key_of(d[i] % (NENT + 10), k);
        static const uint8_t val[40] = "a value for a damaged map";
        int rc = (d[i + 1] & 3) ? mmk_map_put(H, M, k, kl, val, d[i + 1] % 40)
                                : mmk_map_del(H, M, k, kl);
        if (rc != 0 && rc != -ENOENT && rc != MMK_ECORRUPT && rc != MMK_EFORMAT &&
            rc != -EINVAL)
            abort();
    }
    mmk_map_iter it;
    if (mmk_map_iter_init(H, M, &it) == 0)
        for (int j = 0; j < 50 && mmk_map_iter_next(&it, NULL, NULL, NULL, NULL) == 1; j++)
            if (j % 7 == 3 && mmk_map_iter_del(&it))
                break;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!H)
        setup();
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    static struct rec recs[256];
    static uint64_t saved[256];
    size_t nrec = 0;
    for (size_t i = 1; i + 7 <= size && nrec < 256; i += 7) {
        const uint8_t *b = data + i;
        recs[nrec++] = (struct rec){b[0], b[1], b[4], (uint16_t)(b[2] | b[3] << 8),
                                    (uint16_t)(b[5] | b[6] << 8), b[5]};
    }
    if (mmk_heap_begin(H))
        abort();
    for (size_t i = 0; i < nrec; i++)
        apply(&recs[i], 0, &saved[i]);
    if ((mode & 7) == 7) {
        /* Through the file: commit the damage, reopen, read, repair. */
        if (mmk_heap_commit(H))
            abort();
        mmk_heap_close(H);
        H = NULL;
        if (mmk_heap_open(path, MMK_HEAP_NOSYNC, &H) || mmk_heap_root(H) != M)
            abort();
        reads();
        if (mmk_heap_begin(H))
            abort();
        for (size_t i = nrec; i-- > 0;)
            apply(&recs[i], 1, &saved[i]);
        if (mmk_heap_commit(H) || mmk_map_check(H, M))
            abort();
        return 0;
    }
    reads();
    if (mode & 8)
        writes(data, size);
    if (mmk_heap_abort(H))
        abort();
    return 0;
}
