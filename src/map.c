/* Persistent hash map inside a heap (mmkit/map.h).
 *
 * Layout (all inside the heap, little-endian like the heap itself):
 *   header     magic, seed, counters, linear-hashing state, checksum
 *   directory  array of segment refs (doubles when full; it is small)
 *   segment    4 KiB = 64 buckets
 *   bucket     64 bytes, one cache line: 7 slots + an overflow node ref
 *   slot       entry ref (low 48 bits) | top 16 bits of the key's hash
 *   entry      one allocation: low 32 bits of the hash, lengths, key,
 *              padding to 8, value. Short form (key < 128 B, value < 16 MiB):
 *              an 8-byte header; long form: 16 bytes. A 16-byte key with a
 *              100-byte value takes 128 bytes, the heap's 128 B size class.
 *
 * Why this shape: a put dirties one random bucket page and the (mostly
 * sequential) page of its new entry; a split rewrites only slots, never
 * entries, so growth adds no random page writes to a commit (commit cost is
 * per dirty page). A get reads one bucket line and one entry: the 16-bit
 * tags skip the others.
 *
 * Linear hashing: buckets 0..n+split-1 exist; a hash picks bucket
 * h & (n-1), or h & (2n-1) when that is below split. Each insert that
 * pushes the load above LOAD entries a bucket splits bucket `split` into
 * itself and n+split, so growth costs one bucket per put.
 *
 * Within a bucket chain the used slots are contiguous from the start
 * (deletion moves the chain's last slot into the hole), so walks stop at the
 * first empty slot and overflow nodes are never empty.
 *
 * Trust: nothing read from the heap is believed. Every ref is checked to lie
 * inside the heap with its whole length (mp), the header carries a
 * checksum, overflow chains are walked with Brent's cycle detection. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <mmkit/map.h>
#include "heap_internal.h" /* mp: the mapping's base and size */
#include "fault_internal.h"
#include "internal.h"

#define MAP_MAGIC 0x31504d414d4b4d4dull /* "MMKMAMP1" */
#define MAP_VERSION 1u
#define SLOTS 7
#define SEG_BYTES 4096u
#define SEG_B (SEG_BYTES / 64u) /* buckets a segment */
#define N0 8u                   /* initial buckets */
#define LOAD 4u                 /* entries a bucket before a split */
#define DIR0 8u                 /* initial directory capacity */
#define MAX_N (1ull << 40)
#define REF_BITS 48
#define REF_MASK ((1ull << REF_BITS) - 1)

struct mhdr {
    uint64_t magic;
    uint32_t version;
    uint32_t hdr_size;
    uint64_t k0, k1;  /* SipHash key: the per-map seed */
    uint64_t count;   /* entries */
    uint64_t mods;    /* changes, for iterators */
    uint64_t n;       /* buckets at the start of this round (power of two) */
    uint64_t split;   /* next bucket to split, < n */
    uint64_t dir;     /* ref of the directory */
    uint64_t dir_cap; /* directory slots */
    uint64_t nseg;    /* segments in use */
    uint64_t over;    /* overflow nodes */
    uint64_t sum;     /* checksum of the fields above */
};

struct mbucket {
    uint64_t slot[SLOTS];
    uint64_t over;
};
_Static_assert(sizeof(struct mbucket) == 64, "a bucket is one cache line");

/* Entry header word 1: bit 31 clear: key length in bits 24..30, value
 * length in bits 0..23; set (and nothing else): u32 klen, u32 vlen follow. */
#define LONG_FORM 0x80000000u
#define SHORT_KMAX 127u
#define SHORT_VMAX 0xffffffu

/* A decoded entry (its header checked in bounds). */
struct ev {
    uint8_t *base;
    uint32_t hlo; /* low 32 bits of the key's hash */
    uint32_t hdr; /* 8 or 16 */
    uint64_t klen, vlen;
};

struct mctx {
    mmk_heap *h;
    struct mhdr *m;
    uint64_t *dir;
    uint64_t nb; /* buckets in use = n + split */
};

/* ------------------------------------------------------------ hashing */

static inline uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

static inline uint64_t le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

#define SIPROUND                                                                         \
    do {                                                                                 \
        v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);                       \
        v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                                           \
        v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                                           \
        v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);                        \
    } while (0)

/* SipHash-c-d (Aumasson and Bernstein). The map uses 1-3; the test checks
 * 2-4 against the published vectors. */
static inline uint64_t siphash(uint64_t k0, uint64_t k1, const void *data, size_t len, int c,
                               int d)
{
    const uint8_t *p = data;
    uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
    size_t full = len & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = le64(p + i);
        v3 ^= m;
        for (int r = 0; r < c; r++)
            SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < (len & 7); i++)
        b |= (uint64_t)p[full + i] << (8 * i);
    v3 ^= b;
    for (int r = 0; r < c; r++)
        SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    for (int r = 0; r < d; r++)
        SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* For the tests: SipHash-c-d with key (k0, k1). */
uint64_t mmk__map_siphash(uint64_t k0, uint64_t k1, const void *data, size_t len, int c, int d);
uint64_t mmk__map_siphash(uint64_t k0, uint64_t k1, const void *data, size_t len, int c, int d)
{
    return siphash(k0, k1, data, len, c, d);
}

/* Tests and fuzz targets set this to make maps (and failures) reproducible;
 * zero means a random seed. */
uint64_t mmk__map_fixed_seed;

static inline uint64_t key_hash(const struct mhdr *m, const void *key, size_t klen)
{
    return siphash(m->k0, m->k1, key, klen, 1, 3);
}

static uint64_t hdr_sum(const struct mhdr *m)
{
    const uint64_t *w = (const uint64_t *)m;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < offsetof(struct mhdr, sum) / 8; i++) {
        x = (x ^ w[i]) * 0xff51afd7ed558ccdull;
        x ^= x >> 29;
    }
    return x ^ (x >> 32);
}

static void hdr_seal(struct mhdr *m)
{
    uint64_t s = hdr_sum(m);
    if (m->sum != s)
        m->sum = s;
}

/* ------------------------------------------------------------ trust */

/* Pointer to len bytes at ref, or NULL when any of them lies outside the
 * heap's mapping (or ref is 0 or misaligned): the same test as
 * mmk_heap_ptr on both ends, inline (a get checks four or five refs). The
 * mapped size is read each time: allocations inside a transaction grow it. */
static inline void *mp(const mmk_heap *h, uint64_t ref, uint64_t len)
{
    uint64_t lim = h->mapped;
    if (!ref || (ref & 7) || ref >= lim || (len > 1 && len - 1 >= lim - ref))
        return NULL;
    return h->base + ref;
}

static inline uint32_t ent_hdr(uint64_t klen, uint64_t vlen)
{
    return klen <= SHORT_KMAX && vlen <= SHORT_VMAX ? 8 : 16;
}

static inline uint64_t ent_size(uint64_t klen, uint64_t vlen)
{
    return ent_hdr(klen, vlen) + ((klen + 7) & ~7ull) + vlen;
}

static inline const uint8_t *ent_key(const struct ev *e) { return e->base + e->hdr; }

static inline uint8_t *ent_val(const struct ev *e)
{
    return e->base + e->hdr + ((e->klen + 7) & ~7ull);
}

static inline uint64_t slot_of(uint64_t ref, uint64_t hash) { return ref | (hash >> REF_BITS << REF_BITS); }
static inline uint64_t slot_ref(uint64_t s) { return s & REF_MASK; }
static inline bool tag_match(uint64_t s, uint64_t hash) { return (s >> REF_BITS) == (hash >> REF_BITS); }

/* Decode the entry header of a slot, checked in bounds. */
static inline bool ent_head(const struct mctx *c, uint64_t s, struct ev *e)
{
    uint32_t *p = mp(c->h, slot_ref(s), 8);
    if (!p)
        return false;
    e->base = (uint8_t *)p;
    e->hlo = p[0];
    if (!(p[1] & LONG_FORM)) {
        e->hdr = 8;
        e->klen = p[1] >> 24;
        e->vlen = p[1] & SHORT_VMAX;
        return true;
    }
    if (p[1] != LONG_FORM || !mp(c->h, slot_ref(s), 16))
        return false;
    e->hdr = 16;
    e->klen = p[2];
    e->vlen = p[3];
    return true;
}

/* The whole entry is inside the heap. */
static inline bool ent_whole(const struct mctx *c, uint64_t s, const struct ev *e)
{
    return mp(c->h, slot_ref(s), e->hdr + ((e->klen + 7) & ~7ull) + e->vlen) != NULL;
}

/* Bit `bit` (a power of two) of the entry's full hash: stored below 2^32,
 * recomputed from the key above (tables of more than 4 G buckets). 0/1, or
 * MMK_ECORRUPT. */
static int ent_hash_bit(const struct mctx *c, uint64_t s, const struct ev *e, uint64_t bit)
{
    if (bit <= UINT32_MAX)
        return (e->hlo & bit) != 0;
    if (!ent_whole(c, s, e))
        return MMK_ECORRUPT;
    return (key_hash(c->m, ent_key(e), e->klen) & bit) != 0;
}

/* ------------------------------------------------------------ splits */

/* A split reads the hash word of every entry in the bucket it splits (the
 * slot keeps only the top 16 bits, the split needs bit log2(n)). Through
 * the private mapping that costs a page fault an entry in a big map: the
 * heap's trims unmap its clean pages, and splits go where puts did not
 * (about one fault a put in a 1 M-key fill, a quarter of the put's time).
 * Entries never change after they are written (an update allocates a new
 * one), so an entry from before this transaction reads the same in the
 * file: splits read those through the heap's clean view (the file mapped
 * shared, never trimmed). Entries allocated in this transaction are not in
 * the file yet; their pages are noted here, per transaction. */
static void fresh_reset(mmk_heap *h)
{
    if (h->map_fresh_serial == h->txn_serial)
        return;
    h->map_fresh_serial = h->txn_serial;
    h->map_nfresh = h->map_fresh_sorted = 0;
}

/* Note the pages of [r, r + sz). Without memory for the note, splits read
 * everything through the mapping for the rest of the transaction. */
static void fresh_note(mmk_heap *h, uint64_t r, uint64_t sz)
{
    fresh_reset(h);
    if (h->map_nfresh == SIZE_MAX)
        return;
    for (uint64_t pg = r >> HP_SHIFT; pg <= (r + sz - 1) >> HP_SHIFT; pg++) {
        size_t n = h->map_nfresh;
        if (n && h->map_fresh[n - 1] == pg)
            continue;
        if (n == h->map_cap_fresh) {
            size_t cap = n ? 2 * n : 64;
            uint64_t *a = realloc(h->map_fresh, cap * sizeof *a);
            if (!a) {
                h->map_nfresh = SIZE_MAX;
                return;
            }
            h->map_fresh = a;
            h->map_cap_fresh = cap;
        }
        if (h->map_fresh_sorted == n && (!n || h->map_fresh[n - 1] < pg))
            h->map_fresh_sorted = n + 1; /* entries mostly go up the heap */
        h->map_fresh[h->map_nfresh++] = pg;
    }
}

/* A binary search over the sorted prefix, a scan of the rest; the rest is
 * sorted in once it grows past a few dozen pages. */
static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool fresh_has(mmk_heap *h, uint64_t pg)
{
    fresh_reset(h);
    size_t n = h->map_nfresh;
    if (n == SIZE_MAX)
        return true;
    uint64_t *a = h->map_fresh;
    if (n - h->map_fresh_sorted > 32) {
        qsort(a, n, sizeof *a, cmp_u64);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (!k || a[k - 1] != a[i])
                a[k++] = a[i];
        h->map_nfresh = h->map_fresh_sorted = n = k;
    }
    for (size_t i = h->map_fresh_sorted; i < n; i++)
        if (a[i] == pg)
            return true;
    size_t lo = 0, hi = h->map_fresh_sorted;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] == pg)
            return true;
        if (a[mid] < pg)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* Bit `bit` of the hash of the entry in slot s, its header checked as
 * ent_head does: 0/1, or MMK_ECORRUPT. */
static int split_bit(const struct mctx *c, uint64_t s, uint64_t bit)
{
    mmk_heap *h = c->h;
    uint64_t ref = slot_ref(s), w;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (bit <= UINT32_MAX && h->clean && h->in_txn && mp(h, ref, 8) &&
        ref + 8 <= h->clean_mapped && !fresh_has(h, ref >> HP_SHIFT) &&
        mmk__load_u64_guarded(h->clean + ref, &w) == 0 && !((w >> 32) & LONG_FORM))
        return ((uint32_t)w & bit) != 0;
#endif
    (void)w;
    struct ev e;
    if (!ent_head(c, s, &e))
        return MMK_ECORRUPT;
    return ent_hash_bit(c, s, &e, bit);
}

/* Brent's cycle detection over the nodes of one chain: O(1) memory, finds
 * any loop within a few times its length. */
struct walk {
    const void *saved;
    uint64_t power, lam, hops;
};

static inline void walk_init(struct walk *w, const void *head)
{
    w->saved = head;
    w->power = 1;
    w->lam = 0;
    w->hops = 0;
}

static inline int walk_step(struct walk *w, const void *node)
{
    if (node == w->saved)
        return MMK_ECORRUPT;
    w->hops++;
    if (++w->lam == w->power) {
        w->saved = node;
        w->power <<= 1;
        w->lam = 0;
    }
    return 0;
}

/* Next node of a chain whose node b is full, or NULL at the end; *rc set to
 * MMK_ECORRUPT for a bad ref, a loop or an empty overflow node. */
static inline struct mbucket *chain_next(const struct mctx *c, struct mbucket *b, struct walk *w,
                                         int *rc)
{
    if (!b->over)
        return NULL;
    struct mbucket *nx = mp(c->h, b->over, sizeof *nx);
    if (!nx || !nx->slot[0] || walk_step(w, nx)) {
        *rc = MMK_ECORRUPT;
        return NULL;
    }
    return nx;
}

/* Load and validate the header (all but its checksum) and the directory. */
static inline int load_head(mmk_heap *h, mmk_ref map, struct mctx *c)
{
    if (!h || !map)
        return -EINVAL;
    struct mhdr *m = mp(h, map, sizeof *m);
    if (!m || m->magic != MAP_MAGIC)
        return MMK_ECORRUPT;
    if (m->version != MAP_VERSION || m->hdr_size != sizeof *m)
        return MMK_EFORMAT;
    uint64_t n = m->n;
    if (n < N0 || n > MAX_N || (n & (n - 1)) || m->split >= n)
        return MMK_ECORRUPT;
    uint64_t nb = n + m->split;
    if (m->nseg != (nb + SEG_B - 1) / SEG_B || m->nseg > m->dir_cap || m->dir_cap > MAX_N / SEG_B * 2)
        return MMK_ECORRUPT;
    uint64_t *dir = mp(h, m->dir, m->dir_cap * 8);
    if (!dir)
        return MMK_ECORRUPT;
    c->h = h;
    c->m = m;
    c->dir = dir;
    c->nb = nb;
    return 0;
}

/* Load and validate the header, its checksum included, and the directory. */
static int load(mmk_heap *h, mmk_ref map, struct mctx *c)
{
    int rc = load_head(h, map, c);
    if (!rc && c->m->sum != hdr_sum(c->m))
        rc = MMK_ECORRUPT;
    return rc;
}

_Static_assert(sizeof(struct mhdr) == MMK__MAP_HDR_WORDS * 8, "the handle keeps a header copy");

/* Two copies of a header hold the same bytes. */
static inline bool hdr_same(const uint64_t *a, const uint64_t *b)
{
#ifdef __SSE2__
    /* Six 16-byte compares and a word: a fifth of the plain loop's
     * instructions (gcc -O2 leaves it a loop). */
    const __m128i *x = (const __m128i *)a, *y = (const __m128i *)b;
    __m128i d = _mm_xor_si128(_mm_loadu_si128(x), _mm_loadu_si128(y));
    for (int i = 1; i < 6; i++)
        d = _mm_or_si128(d, _mm_xor_si128(_mm_loadu_si128(x + i), _mm_loadu_si128(y + i)));
    return _mm_movemask_epi8(_mm_cmpeq_epi8(d, _mm_setzero_si128())) == 0xffff && a[12] == b[12];
#else
    uint64_t d = 0;
    for (int i = 0; i < MMK__MAP_HDR_WORDS; i++)
        d |= a[i] ^ b[i];
    return !d;
#endif
}

/* load() for gets. A header that still holds the bytes it held when it last
 * passed every check, in a mapping of the same size, would pass them again:
 * comparing 104 bytes with the handle's copy costs a fraction of checking
 * and summing them (a fifth fewer instructions a get, a fifth less time on a
 * map in the cache). Any change (this handle's puts, another process's commit, a stray store)
 * fails the compare and takes the full path. */
static inline int load_get(mmk_heap *h, mmk_ref map, struct mctx *c)
{
    if (map && h->map_ck_ref == map && h->map_ck_mapped == h->mapped) {
        const uint64_t *w = (const uint64_t *)(h->base + map);
        if (hdr_same(w, h->map_ck_hdr)) {
            c->h = h;
            c->m = (struct mhdr *)(h->base + map);
            c->dir = (uint64_t *)(h->base + c->m->dir);
            c->nb = c->m->n + c->m->split;
            return 0;
        }
    }
    int rc = load(h, map, c);
    if (!rc) {
        h->map_ck_ref = map;
        h->map_ck_mapped = h->mapped;
        memcpy(h->map_ck_hdr, c->m, sizeof *c->m);
    }
    return rc;
}

static inline struct mbucket *bucket_at(const struct mctx *c, uint64_t b)
{
    struct mbucket *seg = mp(c->h, c->dir[b / SEG_B], SEG_BYTES);
    return seg ? seg + b % SEG_B : NULL;
}

static inline uint64_t bucket_of(const struct mhdr *m, uint64_t hash)
{
    /* No branch: which side of `split` a key falls on is a coin toss. */
    uint64_t b = hash & (m->n - 1), b2 = hash & (2 * m->n - 1);
    return b < m->split ? b2 : b;
}

/* ------------------------------------------------------------ lookup */

struct pos {
    struct mbucket *head; /* the chain's bucket */
    struct mbucket *node; /* found: the node holding the slot; else the tail node */
    int i;                /* found: the slot; else the first free slot (SLOTS: node full) */
    struct ev e;          /* found: the entry */
};

/* 1 found, 0 absent (pos = where an insert goes), or MMK_ECORRUPT. */
static int find(const struct mctx *c, uint64_t hash, const void *key, size_t klen, struct pos *ps)
{
    struct mbucket *b = bucket_at(c, bucket_of(c->m, hash));
    if (!b)
        return MMK_ECORRUPT;
    ps->head = b;
    struct walk w;
    walk_init(&w, b);
    int rc = 0;
    for (;;) {
        for (int i = 0; i < SLOTS; i++) {
            uint64_t s = b->slot[i];
            if (!s) {
                ps->node = b;
                ps->i = i;
                return 0;
            }
            if (!tag_match(s, hash))
                continue;
            struct ev e;
            if (!ent_head(c, s, &e))
                return MMK_ECORRUPT;
            if (e.hlo != (uint32_t)hash || e.klen != klen)
                continue;
            if (!ent_whole(c, s, &e))
                return MMK_ECORRUPT;
            if (klen && memcmp(ent_key(&e), key, klen))
                continue;
            ps->node = b;
            ps->i = i;
            ps->e = e;
            return 1;
        }
        struct mbucket *nx = chain_next(c, b, &w, &rc);
        if (!nx) {
            if (rc)
                return rc;
            ps->node = b;
            ps->i = SLOTS;
            return 0;
        }
        b = nx;
    }
}

static int check_args(mmk_heap *h, mmk_ref map, const void *key, size_t klen)
{
    if (!h || !map || (!key && klen))
        return -EINVAL;
    if (klen > MMK_MAP_MAX_LEN)
        return -E2BIG;
    return 0;
}

/* Validate, load the map and find key: 0 (found, at *ps), -ENOENT or an
 * error. Shared by get and del. */
static int lookup(mmk_heap *h, mmk_ref map, const void *key, size_t klen, struct mctx *c,
                  struct pos *ps)
{
    int rc = check_args(h, map, key, klen);
    if (rc || (rc = load(h, map, c)))
        return rc;
    rc = find(c, key_hash(c->m, key, klen), key, klen, ps);
    return rc < 0 ? rc : rc ? 0 : -ENOENT;
}

/* Keys equal (the common 8 to 16 bytes without a call). */
static inline bool key_eq(const uint8_t *a, const uint8_t *b, size_t n)
{
    if (n >= 8 && n <= 16)
        return !((le64(a) ^ le64(b)) | (le64(a + n - 8) ^ le64(b + n - 8)));
    return !n || !memcmp(a, b, n);
}

/* The slots of node b that a walk looks at (those before the first empty
 * one) and whose tag is the hash's, as a bit mask: slot i is bit
 * i << SCAN_SHIFT. *full: no empty slot (the chain may go on). */
#ifdef __SSE2__
#define SCAN_SHIFT 3
static inline uint64_t slot_scan(const struct mbucket *b, uint64_t hash, bool *full)
{
    /* Slot i is bytes 8i..8i+7; its tag the 16-bit word 3 of those. */
    const __m128i *v = (const __m128i *)b;
    __m128i t = _mm_set1_epi16((short)(hash >> REF_BITS)), z = _mm_setzero_si128();
    uint64_t tm = 0, zm = 0;
    for (int k = 0; k < 4; k++) {
        __m128i x = _mm_loadu_si128(v + k);
        tm |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi16(x, t)) << 16 * k;
        zm |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi32(x, z)) << 16 * k;
    }
    const uint64_t top = 0x0080808080808080ull; /* bit 8i+7 of slots 0..6 */
    uint64_t empty = (zm & zm << 4 & top) | 1ull << 63; /* both halves zero */
    uint64_t first = (uint64_t)__builtin_ctzll(empty);
    *full = first == 63;
    return tm & top & ((1ull << first) - 1);
}
#else
#define SCAN_SHIFT 0
static inline uint64_t slot_scan(const struct mbucket *b, uint64_t hash, bool *full)
{
    uint64_t tm = 0, empty = 1ull << SLOTS;
    for (int i = 0; i < SLOTS; i++) {
        uint64_t s = b->slot[i];
        tm |= (uint64_t)(s >> REF_BITS == hash >> REF_BITS) << i;
        empty |= (uint64_t)(s == 0) << i;
    }
    uint64_t first = (uint64_t)__builtin_ctzll(empty);
    *full = first == SLOTS;
    return tm & ((1ull << first) - 1);
}
#endif

/* A get's common case, with no branch that depends on where the key sits:
 * the tags of the chain's first node are matched all at once and the first
 * candidate's entry read at once. A hit then takes the same branches for
 * every key, so the processor predicts them and can start the next get's
 * loads while this one's cache misses (bucket line, entry) are in flight;
 * a branchy slot loop mispredicts on most gets and throws that work away.
 * Same checks in the same order as find(). 1 found (*v, *vl: the value),
 * -ENOENT (the chain ends in this node), 0 undecided (overflow node,
 * long-form entry: run find), MMK_ECORRUPT. */
static inline int find_head(const struct mctx *c, const struct mbucket *b, uint64_t hash,
                            const void *key, size_t klen, const void **v, size_t *vl)
{
    bool full;
    uint64_t hit = slot_scan(b, hash, &full);
    while (hit) {
        uint64_t s = b->slot[__builtin_ctzll(hit) >> SCAN_SHIFT];
        hit &= hit - 1;
        const uint32_t *p = mp(c->h, slot_ref(s), 8);
        if (!p)
            return MMK_ECORRUPT;
        if (p[1] & LONG_FORM)
            return 0;
        if (p[0] != (uint32_t)hash || p[1] >> 24 != klen)
            continue;
        /* As ent_whole: the key, its padding and the value in bounds. */
        uint64_t koff = 8 + ((klen + 7) & ~7ull), vlen = p[1] & SHORT_VMAX;
        if (!mp(c->h, slot_ref(s), koff + vlen))
            return MMK_ECORRUPT;
        if (!key_eq((const uint8_t *)p + 8, key, klen))
            continue;
        *v = (const uint8_t *)p + koff;
        *vl = vlen;
        return 1;
    }
    return full ? 0 : -ENOENT;
}

/* The rest of a get: overflow nodes, long-form entries. Out of line, so
 * that the common path stays small. */
static __attribute__((noinline)) int get_slow(const struct mctx *c, uint64_t hash,
                                              const void *key, size_t klen, const void **v,
                                              size_t *vl)
{
    struct pos ps;
    int rc = find(c, hash, key, klen, &ps);
    if (rc <= 0)
        return rc < 0 ? rc : -ENOENT;
    *v = ent_val(&ps.e);
    *vl = ps.e.vlen;
    return 1;
}

int mmk_map_get(mmk_heap *h, mmk_ref map, const void *key, size_t klen, const void **val,
                size_t *vlen)
{
    struct mctx c;
    int rc = check_args(h, map, key, klen);
    if (rc || (rc = load_get(h, map, &c)))
        return rc;
    uint64_t hash = key_hash(c.m, key, klen);
    struct mbucket *b = bucket_at(&c, bucket_of(c.m, hash));
    if (!b)
        return MMK_ECORRUPT;
    const void *v;
    size_t vl;
    rc = find_head(&c, b, hash, key, klen, &v, &vl);
    if (!rc)
        rc = get_slow(&c, hash, key, klen, &v, &vl);
    if (rc < 0)
        return rc;
    if (val)
        *val = v;
    if (vlen)
        *vlen = vl;
    return 0;
}

/* Keys a batch takes through each stage: enough misses in flight to cover
 * the memory latency, few enough that the lines stay in L1. */
#define GROUP 16

int mmk_map_get_many(mmk_heap *h, mmk_ref map, size_t n, const void *const keys[],
                     const size_t klens[], const void *vals[], size_t vlens[], int rcs[])
{
    if (!h || !map || n > INT_MAX || (n && (!keys || !klens || !rcs)))
        return -EINVAL;
    struct mctx c;
    int rc = load_get(h, map, &c);
    if (rc)
        return rc;
    int found = 0;
    for (size_t g = 0; g < n; g += GROUP) {
        size_t cnt = n - g < GROUP ? n - g : GROUP;
        uint64_t hash[GROUP];
        const struct mbucket *b[GROUP];
        /* Stage 1: hash every key, start its bucket line. */
        for (size_t i = 0; i < cnt; i++) {
            size_t j = g + i;
            b[i] = NULL;
            hash[i] = 0;
            if (vals)
                vals[j] = NULL;
            if (vlens)
                vlens[j] = 0;
            rcs[j] = !keys[j] && klens[j] ? -EINVAL : klens[j] > MMK_MAP_MAX_LEN ? -E2BIG : 0;
            if (rcs[j])
                continue;
            hash[i] = key_hash(c.m, keys[j], klens[j]);
            b[i] = bucket_at(&c, bucket_of(c.m, hash[i]));
            if (!b[i])
                rcs[j] = MMK_ECORRUPT;
            else
                __builtin_prefetch(b[i]);
        }
        /* Stage 2: start the entry line of each key's first candidate. */
        for (size_t i = 0; i < cnt; i++) {
            if (!b[i])
                continue;
            bool full;
            uint64_t hit = slot_scan(b[i], hash[i], &full);
            if (hit) {
                const void *p =
                    mp(h, slot_ref(b[i]->slot[__builtin_ctzll(hit) >> SCAN_SHIFT]), 8);
                if (p)
                    __builtin_prefetch(p);
            }
        }
        /* Stage 3: the lookups proper, on lines now in the cache. */
        for (size_t i = 0; i < cnt; i++) {
            size_t j = g + i;
            if (!b[i])
                continue;
            const void *v;
            size_t vl;
            rc = find_head(&c, b[i], hash[i], keys[j], klens[j], &v, &vl);
            if (!rc)
                rc = get_slow(&c, hash[i], keys[j], klens[j], &v, &vl);
            rcs[j] = rc < 0 ? rc : 0;
            if (rc == 1) {
                found++;
                if (vals)
                    vals[j] = v;
                if (vlens)
                    vlens[j] = vl;
            }
        }
    }
    return found;
}

uint64_t mmk_map_count(mmk_heap *h, mmk_ref map)
{
    struct mctx c;
    return load(h, map, &c) ? 0 : c.m->count;
}

/* ------------------------------------------------------------ create */

int mmk_map_create(mmk_heap *h, mmk_ref *out)
{
    if (!h || !out)
        return -EINVAL;
    mmk_ref hr = 0, dr = 0, sr = 0;
    int rc = mmk_heap_alloc(h, sizeof(struct mhdr), &hr);
    if (!rc)
        rc = mmk_heap_alloc(h, DIR0 * 8, &dr);
    if (!rc)
        rc = mmk_heap_alloc(h, SEG_BYTES, &sr);
    struct mhdr *m = rc ? NULL : mp(h, hr, sizeof *m);
    uint64_t *dir = rc ? NULL : mp(h, dr, DIR0 * 8);
    if (!rc && (!m || !dir || !mp(h, sr, SEG_BYTES)))
        rc = MMK_ECORRUPT;
    if (rc) {
        if (sr)
            mmk_heap_free(h, sr);
        if (dr)
            mmk_heap_free(h, dr);
        if (hr)
            mmk_heap_free(h, hr);
        return rc;
    }
    uint64_t seed[2] = {mmk__map_fixed_seed, mmk__map_fixed_seed * 0x9e3779b97f4a7c15ull};
    if (!mmk__map_fixed_seed)
        mmk__os_random(seed, sizeof seed);
    m->magic = MAP_MAGIC;
    m->version = MAP_VERSION;
    m->hdr_size = sizeof *m;
    m->k0 = seed[0];
    m->k1 = seed[1];
    m->n = N0;
    m->dir = dr;
    m->dir_cap = DIR0;
    m->nseg = 1;
    dir[0] = sr;
    hdr_seal(m);
    *out = hr;
    return 0;
}

/* ------------------------------------------------------------ growth */

static int new_node(const struct mctx *c, mmk_ref *ref, struct mbucket **node)
{
    int rc = mmk_heap_alloc(c->h, sizeof(struct mbucket), ref);
    if (rc)
        return rc;
    *node = mp(c->h, *ref, sizeof **node);
    if (!*node) {
        mmk_heap_free(c->h, *ref);
        return MMK_ECORRUPT;
    }
    c->m->over++;
    return 0;
}

static int free_node(const struct mctx *c, mmk_ref ref)
{
    c->m->over--;
    int rc = mmk_heap_free(c->h, ref);
    return rc == -EINVAL ? MMK_ECORRUPT : rc;
}

/* Make sure the segment for bucket b exists (b == nb, the next bucket). */
static int ensure_segment(struct mctx *c, uint64_t b)
{
    struct mhdr *m = c->m;
    if (b / SEG_B < m->nseg)
        return 0;
    if (m->nseg == m->dir_cap) {
        /* Double the directory: a copy of nseg refs, tiny next to the
         * entries it indexes (2 k refs for a million entries). */
        uint64_t cap = m->dir_cap * 2;
        mmk_ref nr;
        int rc = mmk_heap_alloc(c->h, cap * 8, &nr);
        if (rc)
            return rc;
        uint64_t *nd = mp(c->h, nr, cap * 8);
        if (!nd) {
            mmk_heap_free(c->h, nr);
            return MMK_ECORRUPT;
        }
        memcpy(nd, c->dir, m->nseg * 8);
        rc = mmk_heap_free(c->h, m->dir);
        if (rc) {
            mmk_heap_free(c->h, nr);
            return rc == -EINVAL ? MMK_ECORRUPT : rc;
        }
        m->dir = nr;
        m->dir_cap = cap;
        c->dir = nd;
    }
    mmk_ref sr;
    int rc = mmk_heap_alloc(c->h, SEG_BYTES, &sr);
    if (rc)
        return rc;
    if (!mp(c->h, sr, SEG_BYTES)) {
        mmk_heap_free(c->h, sr);
        return MMK_ECORRUPT;
    }
    c->dir[m->nseg++] = sr;
    return 0;
}

/* Split bucket `split` into itself and bucket n+split: entries whose hash
 * has bit n set move. Only slots move; entries are not touched. Everything
 * that can fail (validation, allocation) happens before the first write to a
 * live bucket. Returns 1 after a split, 0 when none was due. */
static int split_one(struct mctx *c)
{
    struct mhdr *m = c->m;
    if (m->count + 1 <= LOAD * c->nb || 2 * m->n > MAX_N)
        return 0;
    uint64_t nbi = c->nb;
    int rc = ensure_segment(c, nbi);
    if (rc)
        return rc;
    struct mbucket *src = bucket_at(c, m->split), *dst = bucket_at(c, nbi);
    if (!src || !dst)
        return MMK_ECORRUPT;
    for (int i = 0; i < SLOTS; i++)
        if (dst->slot[i])
            return MMK_ECORRUPT; /* a bucket not yet in use holds data */
    if (dst->over)
        return MMK_ECORRUPT;

    /* Pass 1: validate, count movers. */
    uint64_t movers = 0;
    struct walk w;
    walk_init(&w, src);
    for (struct mbucket *b = src; b;) {
        for (int i = 0; i < SLOTS && b->slot[i]; i++) {
            int bit = split_bit(c, b->slot[i], m->n);
            if (bit < 0)
                return bit;
            movers += (uint64_t)bit;
        }
        if (!b->slot[SLOTS - 1])
            break;
        b = chain_next(c, b, &w, &rc);
        if (rc)
            return rc;
    }
    /* Overflow nodes the new bucket needs, linked before any slot moves. */
    struct mbucket *t = dst;
    for (uint64_t k = SLOTS; k < movers; k += SLOTS) {
        mmk_ref r;
        struct mbucket *nn;
        if ((rc = new_node(c, &r, &nn))) {
            for (mmk_ref f = dst->over; f;) {
                struct mbucket *fb = mp(c->h, f, sizeof *fb);
                mmk_ref nx = fb ? fb->over : 0;
                free_node(c, f);
                f = nx;
            }
            dst->over = 0;
            return rc;
        }
        t->over = r;
        t = nn;
    }

    /* Pass 2: stayers are compacted in place (the write cursor never passes
     * the read cursor), movers appended to the new bucket. */
    struct mbucket *wn = src, *dn = dst;
    int wi = 0, di = 0;
    uint64_t read_nodes = 1, write_node = 0;
    walk_init(&w, src);
    for (struct mbucket *b = src; b;) {
        for (int i = 0; i < SLOTS && b->slot[i]; i++) {
            uint64_t s = b->slot[i];
            if (split_bit(c, s, m->n) > 0) { /* the same answer as in pass 1 */
                if (di == SLOTS) {
                    /* NULL only if the file changed under the writer lock
                     * between the passes (another process writing it). */
                    if (!(dn = mp(c->h, dn->over, sizeof *dn)))
                        return MMK_ECORRUPT;
                    di = 0;
                }
                dn->slot[di++] = s;
            } else {
                if (wi == SLOTS) {
                    if (!(wn = mp(c->h, wn->over, sizeof *wn)))
                        return MMK_ECORRUPT;
                    wi = 0;
                    write_node++;
                }
                wn->slot[wi++] = s;
            }
        }
        if (!b->slot[SLOTS - 1])
            break;
        if ((b = chain_next(c, b, &w, &rc)))
            read_nodes++;
    }
    /* Clear the rest of the source chain and free the nodes after the last
     * one written up to the last one read (all their slots moved). A link
     * past the chain's end (damage) is left alone: check reports it. */
    for (int i = wi; i < SLOTS; i++)
        if (wn->slot[i])
            wn->slot[i] = 0;
    uint64_t nfree = read_nodes - 1 - write_node;
    mmk_ref f = nfree ? wn->over : 0;
    if (f)
        wn->over = 0;
    while (nfree--) {
        struct mbucket *fb = mp(c->h, f, sizeof *fb);
        mmk_ref nx = fb->over;
        if ((rc = free_node(c, f)))
            return rc;
        f = nx;
    }
    if (++m->split == m->n) {
        m->n *= 2;
        m->split = 0;
    }
    c->nb++;
    return 1;
}

/* ------------------------------------------------------------ put / del */

static int alloc_entry(const struct mctx *c, uint64_t hash, const void *key, size_t klen,
                       const void *val, size_t vlen, mmk_ref *out)
{
    uint64_t sz = ent_size(klen, vlen);
    if (sz > mmk_heap_max_alloc())
        return -EFBIG;
    if (sz > REF_MASK)
        return -E2BIG;
    mmk_ref r;
    int rc = mmk_heap_alloc(c->h, (size_t)sz, &r);
    if (rc)
        return rc;
    uint32_t *p = mp(c->h, r, sz);
    if (!p || r > REF_MASK) {
        mmk_heap_free(c->h, r);
        return r > REF_MASK ? -EFBIG : MMK_ECORRUPT;
    }
    fresh_note(c->h, r, sz);
    struct ev e = {(uint8_t *)p, (uint32_t)hash, ent_hdr(klen, vlen), klen, vlen};
    p[0] = (uint32_t)hash;
    if (e.hdr == 8) {
        p[1] = (uint32_t)klen << 24 | (uint32_t)vlen;
    } else {
        p[1] = LONG_FORM;
        p[2] = (uint32_t)klen;
        p[3] = (uint32_t)vlen;
    }
    if (klen)
        memcpy(e.base + e.hdr, key, klen);
    if (vlen)
        mmk__copy(ent_val(&e), val, vlen);
    *out = r;
    return 0;
}

static int put_locked(struct mctx *c, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct mhdr *m = c->m;
    uint64_t hash = key_hash(m, key, klen);
    struct pos ps;
    int rc = find(c, hash, key, klen, &ps);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        /* Always a new entry, never an overwrite in place: the first write
         * is then the heap's (which refuses outside a transaction, where the
         * mapping is read-only), and val may point into the old entry. */
        mmk_ref nr, old = slot_ref(ps.node->slot[ps.i]);
        if ((rc = alloc_entry(c, hash, key, klen, val, vlen, &nr)))
            return rc;
        if ((rc = mmk_heap_free(c->h, old))) {
            mmk_heap_free(c->h, nr);
            return rc == -EINVAL ? MMK_ECORRUPT : rc;
        }
        ps.node->slot[ps.i] = slot_of(nr, hash);
        m->mods++;
        return 0;
    }
    /* The entry first: outside a transaction the heap refuses it before
     * the map has written anything (the mapping is read-only then). */
    mmk_ref noderef = 0, er;
    if ((rc = alloc_entry(c, hash, key, klen, val, vlen, &er)))
        return rc;
    rc = split_one(c);
    if (rc == 1 && (rc = find(c, hash, key, klen, &ps)) == 1)
        rc = MMK_ECORRUPT;
    if (rc < 0) {
        mmk_heap_free(c->h, er);
        return rc;
    }
    struct mbucket *node = ps.node;
    int i = ps.i;
    if (i == SLOTS) {
        if ((rc = new_node(c, &noderef, &node))) {
            mmk_heap_free(c->h, er);
            return rc;
        }
        i = 0;
    }
    if (noderef)
        ps.node->over = noderef;
    node->slot[i] = slot_of(er, hash);
    m->count++;
    m->mods++;
    return 0;
}

int mmk_map_put(mmk_heap *h, mmk_ref map, const void *key, size_t klen, const void *val,
                size_t vlen)
{
    int rc = check_args(h, map, key, klen);
    if (rc)
        return rc;
    if (!val && vlen)
        return -EINVAL;
    if (vlen > MMK_MAP_MAX_LEN)
        return -E2BIG;
    struct mctx c;
    if ((rc = load(h, map, &c)))
        return rc;
    rc = put_locked(&c, key, klen, val, vlen);
    hdr_seal(c.m);
    return rc;
}

/* Delete the entry in slot i of node (chain starting at head): validate the
 * chain, free the entry, then move the chain's last slot into the hole and
 * free an overflow node left empty (*freed says which, or NULL). Nothing
 * changes when validation or the free fails. */
static int del_at(const struct mctx *c, struct pos *ps, struct mbucket **freed)
{
    /* (The heap's -EINVAL from free means "no transaction" or "not an
     * allocation": passed on as is; inside a transaction it is damage.) */
    struct mbucket *t = ps->head, *pt = NULL;
    struct walk w;
    walk_init(&w, t);
    int rc = 0;
    while (t->slot[SLOTS - 1]) {
        struct mbucket *nx = chain_next(c, t, &w, &rc);
        if (rc)
            return rc;
        if (!nx)
            break;
        pt = t;
        t = nx;
    }
    if (!c->m->count)
        return MMK_ECORRUPT;
    if ((rc = mmk_heap_free(c->h, slot_ref(ps->node->slot[ps->i]))))
        return rc;
    c->m->count--;
    c->m->mods++;
    int j = SLOTS - 1;
    while (j > 0 && !t->slot[j])
        j--;
    ps->node->slot[ps->i] = t->slot[j];
    t->slot[j] = 0;
    *freed = NULL;
    if (j == 0 && pt) {
        mmk_ref r = pt->over;
        pt->over = 0;
        *freed = t;
        return free_node(c, r);
    }
    return 0;
}

int mmk_map_del(mmk_heap *h, mmk_ref map, const void *key, size_t klen)
{
    struct mctx c;
    struct pos ps;
    int rc = lookup(h, map, key, klen, &c, &ps);
    if (rc)
        return rc;
    struct mbucket *freed;
    rc = del_at(&c, &ps, &freed);
    hdr_seal(c.m);
    return rc;
}

/* ------------------------------------------------------------ iteration */

int mmk_map_iter_init(mmk_heap *h, mmk_ref map, mmk_map_iter *it)
{
    if (!it)
        return -EINVAL;
    memset(it, 0, sizeof *it);
    struct mctx c;
    int rc = load(h, map, &c);
    if (rc)
        return rc;
    it->h = h;
    it->map = map;
    it->mods = c.m->mods;
    return 0;
}

int mmk_map_iter_next(mmk_map_iter *it, const void **key, size_t *klen, const void **val,
                      size_t *vlen)
{
    if (!it || !it->h)
        return -EINVAL;
    struct mctx c;
    int rc = load(it->h, it->map, &c);
    if (rc)
        return rc;
    if (c.m->mods != it->mods)
        return -EAGAIN;
    while (it->bucket < c.nb) {
        struct mbucket *b = it->node ? mp(c.h, it->node, sizeof *b) : bucket_at(&c, it->bucket);
        if (!b)
            return MMK_ECORRUPT;
        if (it->slot < SLOTS && b->slot[it->slot]) {
            uint64_t s = b->slot[it->slot];
            struct ev e;
            if (!ent_head(&c, s, &e) || !ent_whole(&c, s, &e) || it->seen >= c.m->count)
                return MMK_ECORRUPT;
            it->last_bucket = it->bucket;
            it->last_node = it->node;
            it->last_slot = it->slot;
            it->has_last = 1;
            it->slot++;
            it->seen++;
            if (key)
                *key = ent_key(&e);
            if (klen)
                *klen = e.klen;
            if (val)
                *val = ent_val(&e);
            if (vlen)
                *vlen = e.vlen;
            return 1;
        }
        if (it->slot == SLOTS && b->over) {
            /* Every node of a chain is full before the next, so a loop keeps
             * returning entries and trips the count bound above; hops are
             * bounded too in case the nodes are damaged to look empty. */
            if (++it->hops > c.m->count / SLOTS + 1)
                return MMK_ECORRUPT;
            it->node = b->over;
            it->slot = 0;
            continue;
        }
        it->bucket++;
        it->node = 0;
        it->slot = 0;
        it->hops = 0;
    }
    if (it->seen != c.m->count)
        return MMK_ECORRUPT;
    return 0;
}

int mmk_map_iter_del(mmk_map_iter *it)
{
    if (!it || !it->h || !it->has_last)
        return -EINVAL;
    struct mctx c;
    int rc = load(it->h, it->map, &c);
    if (rc)
        return rc;
    if (c.m->mods != it->mods)
        return -EAGAIN;
    if (it->last_bucket >= c.nb || !c.m->count)
        return MMK_ECORRUPT;
    struct pos ps;
    ps.head = bucket_at(&c, it->last_bucket);
    ps.node = it->last_node ? mp(c.h, it->last_node, sizeof *ps.node) : ps.head;
    ps.i = (int)it->last_slot;
    if (!ps.head || !ps.node || it->last_slot >= SLOTS || !ps.node->slot[ps.i])
        return MMK_ECORRUPT;
    struct mbucket *freed = NULL;
    rc = del_at(&c, &ps, &freed);
    hdr_seal(c.m);
    if (rc)
        return rc;
    /* The chain's last entry moved into the hole: look at the hole again.
     * If the hole's node was freed, it was the chain's last: move on. */
    it->mods = c.m->mods;
    it->has_last = 0;
    it->seen--;
    if (freed == ps.node) {
        it->bucket = it->last_bucket + 1;
        it->node = 0;
        it->slot = 0;
        it->hops = 0;
    } else {
        it->bucket = it->last_bucket;
        it->node = it->last_node;
        it->slot = it->last_slot;
    }
    return 0;
}

/* ------------------------------------------------------------ check */

#define FAIL(...)                                                                        \
    do {                                                                                 \
        if (msg && len)                                                                  \
            snprintf(msg, len, __VA_ARGS__);                                             \
        return MMK_ECORRUPT;                                                             \
    } while (0)

/* Walk every bucket; verify everything; fill st. */
static int scan(mmk_heap *h, mmk_ref map, struct mmk_map_stats *st, char *msg, size_t len)
{
    struct mctx c;
    int rc = load(h, map, &c);
    if (rc) {
        if (msg && len)
            snprintf(msg, len, "map header at ref %llu: %s", (unsigned long long)map,
                     rc == MMK_ECORRUPT ? "damaged (bad magic, checksum, counters or directory)"
                                        : mmk_strerror(rc));
        return rc;
    }
    struct mhdr *m = c.m;
    memset(st, 0, sizeof *st);
    st->buckets = c.nb;
    st->segments = m->nseg;
    for (uint64_t s = 0; s < m->nseg; s++) {
        if (!mp(h, c.dir[s], SEG_BYTES))
            FAIL("segment %llu: ref %llu outside the heap", (unsigned long long)s,
                 (unsigned long long)c.dir[s]);
        for (uint64_t t = 0; t < s; t++)
            if (c.dir[t] == c.dir[s])
                FAIL("segments %llu and %llu share ref %llu", (unsigned long long)t,
                     (unsigned long long)s, (unsigned long long)c.dir[s]);
    }
    /* Buckets past the last in use must be empty: splits rely on it. */
    for (uint64_t b = c.nb; b < m->nseg * SEG_B; b++) {
        const uint64_t *w = (const uint64_t *)bucket_at(&c, b);
        for (int i = 0; i <= SLOTS; i++)
            if (w[i])
                FAIL("bucket %llu is not in use yet but holds data", (unsigned long long)b);
    }
    for (uint64_t b = 0; b < c.nb; b++) {
        struct mbucket *head = bucket_at(&c, b), *nd = head;
        struct walk w;
        walk_init(&w, head);
        uint64_t inchain = 0;
        for (;;) {
            int i = 0;
            for (; i < SLOTS && nd->slot[i]; i++) {
                uint64_t s = nd->slot[i];
                struct ev e;
                if (!ent_head(&c, s, &e) || !ent_whole(&c, s, &e))
                    FAIL("bucket %llu: entry ref %llu (or its length) outside the heap",
                         (unsigned long long)b, (unsigned long long)slot_ref(s));
                uint64_t hash = key_hash(m, ent_key(&e), e.klen);
                if ((uint32_t)hash != e.hlo)
                    FAIL("bucket %llu: entry %llu: stored hash does not match its key",
                         (unsigned long long)b, (unsigned long long)slot_ref(s));
                if (e.hdr != ent_hdr(e.klen, e.vlen))
                    FAIL("bucket %llu: entry %llu: long header for short lengths",
                         (unsigned long long)b, (unsigned long long)slot_ref(s));
                if (!tag_match(s, hash) || bucket_of(m, hash) != b)
                    FAIL("bucket %llu: entry %llu is in the wrong bucket or slot tag",
                         (unsigned long long)b, (unsigned long long)slot_ref(s));
                if (++st->count > m->count)
                    FAIL("more entries than the count (%llu)", (unsigned long long)m->count);
                st->key_bytes += e.klen;
                st->value_bytes += e.vlen;
                inchain++;
            }
            for (int k = i; k < SLOTS; k++)
                if (nd->slot[k])
                    FAIL("bucket %llu: hole before slot %d", (unsigned long long)b, k);
            if (i < SLOTS) {
                if (nd->over)
                    FAIL("bucket %llu: overflow link from a node that is not full",
                         (unsigned long long)b);
                break;
            }
            if (!nd->over)
                break;
            struct mbucket *nx = mp(h, nd->over, sizeof *nx);
            if (!nx)
                FAIL("bucket %llu: overflow ref %llu outside the heap", (unsigned long long)b,
                     (unsigned long long)nd->over);
            if (!nx->slot[0])
                FAIL("bucket %llu: empty overflow node", (unsigned long long)b);
            if (walk_step(&w, nx))
                FAIL("bucket %llu: overflow chain loops", (unsigned long long)b);
            st->overflow++;
            nd = nx;
        }
        if (inchain > st->longest)
            st->longest = inchain;
        /* Duplicate keys: pairwise among equal hashes (chains are short). */
        if (inchain > 1 && inchain <= 4096) {
            struct walk w1;
            walk_init(&w1, head);
            struct mbucket *n1 = head;
            for (uint64_t x = 0; x < inchain; x++) {
                if (x && x % SLOTS == 0)
                    n1 = mp(h, n1->over, sizeof *n1);
                uint64_t s1 = n1->slot[x % SLOTS];
                struct ev e1;
                ent_head(&c, s1, &e1);
                struct mbucket *n2 = n1;
                for (uint64_t y = x + 1; y < inchain; y++) {
                    if (y % SLOTS == 0)
                        n2 = mp(h, n2->over, sizeof *n2);
                    uint64_t s2 = n2->slot[y % SLOTS];
                    struct ev e2;
                    ent_head(&c, s2, &e2);
                    if (s1 == s2 || (e1.hlo == e2.hlo && e1.klen == e2.klen &&
                                     !memcmp(ent_key(&e1), ent_key(&e2), e1.klen)))
                        FAIL("bucket %llu: key stored twice", (unsigned long long)b);
                }
            }
        }
    }
    if (st->count != m->count)
        FAIL("count says %llu entries, the buckets hold %llu", (unsigned long long)m->count,
             (unsigned long long)st->count);
    if (st->overflow != m->over)
        FAIL("header says %llu overflow nodes, the chains have %llu",
             (unsigned long long)m->over, (unsigned long long)st->overflow);
    if (msg && len)
        msg[0] = 0;
    return 0;
}

int mmk_map_check_report(mmk_heap *h, mmk_ref map, char *msg, size_t len)
{
    struct mmk_map_stats st;
    return scan(h, map, &st, msg, len);
}

int mmk_map_check(mmk_heap *h, mmk_ref map) { return mmk_map_check_report(h, map, NULL, 0); }

int mmk_map_stats(mmk_heap *h, mmk_ref map, struct mmk_map_stats *out)
{
    if (!out)
        return -EINVAL;
    return scan(h, map, out, NULL, 0);
}

/* ------------------------------------------------------------ destroy */

int mmk_map_destroy(mmk_heap *h, mmk_ref map)
{
    struct mctx c;
    int rc = load(h, map, &c);
    if (rc)
        return rc;
    /* Verify first so a damaged map is refused before anything is freed. */
    if ((rc = mmk_map_check(h, map)))
        return rc;
    for (uint64_t b = 0; b < c.nb; b++) {
        struct mbucket *nd = bucket_at(&c, b);
        bool head = true;
        while (nd) {
            for (int i = 0; i < SLOTS && nd->slot[i]; i++)
                if ((rc = mmk_heap_free(h, slot_ref(nd->slot[i]))))
                    return rc;
            mmk_ref nx = nd->over;
            if (!head) {
                mmk_ref self = mmk_heap_ref(h, nd);
                if ((rc = mmk_heap_free(h, self)))
                    return rc;
            }
            head = false;
            nd = nx ? mp(h, nx, sizeof *nd) : NULL;
        }
    }
    for (uint64_t s = 0; s < c.m->nseg; s++)
        if ((rc = mmk_heap_free(h, c.dir[s])))
            return rc;
    mmk_ref dir = c.m->dir;
    c.m->magic = 0; /* a stale ref to it now reads as "not a map" */
    if ((rc = mmk_heap_free(h, dir)) || (rc = mmk_heap_free(h, map)))
        return rc;
    return 0;
}
