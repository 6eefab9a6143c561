/* mmk_heap_check: full verification of the committed file, read with
 * pread (through the I/O layer), never through the mapping: a short or
 * damaged file is an error return, not a SIGBUS. Checks the header, the
 * checksum of every page, and the allocator (page descriptors, free runs,
 * slabs, free lists, class lists and the header's counters). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "crc32c.h"
#include "heap_internal.h"
#include "heap_io.h"

struct ck {
    mmk_heap *h;
    char *msg;
    size_t len;
    struct hp_header hd;
    uint64_t pages;
    uint32_t *desc;      /* descriptors of the group being walked */
    uint64_t desc_group;
};

__attribute__((format(printf, 2, 3))) static int bad(struct ck *c, const char *fmt, ...)
{
    if (c->msg && c->len && !c->msg[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->msg, c->len, fmt, ap);
        va_end(ap);
    }
    return MMK_ECORRUPT;
}

static int rd(struct ck *c, void *buf, size_t n, uint64_t off)
{
    ssize_t r = mmk__heap_io->pread(c->h->fd, buf, n, off);
    if (r < 0)
        return (int)r;
    if ((size_t)r != n)
        return bad(c, "file ends at %llu, inside the heap (size %llu)",
                   (unsigned long long)(off + (uint64_t)r),
                   (unsigned long long)c->hd.heap_size);
    return 0;
}

/* Checksums of every page of group g. */
static int check_sums(struct ck *c, uint64_t g, unsigned char *buf, uint32_t *tab)
{
    uint64_t lo = g * HP_GROUP, hi = hp_group_end(g) < c->pages ? hp_group_end(g) : c->pages;
    uint64_t ms = hp_meta_start(g);
    uint64_t ncs = (hi - lo + 1023) / 1024;
    int rc = rd(c, tab, ncs * HP_PAGE, ms << HP_SHIFT);
    if (rc)
        return rc;
    uint32_t z = mmk__hp_zero_crc();
    const size_t chunk = 256;
    for (uint64_t p = lo; p < hi; p += chunk) {
        size_t k = hi - p < chunk ? (size_t)(hi - p) : chunk;
        if ((rc = rd(c, buf, k << HP_SHIFT, p << HP_SHIFT)))
            return rc;
        for (size_t i = 0; i < k; i++) {
            uint64_t pg = p + i;
            if (pg == 0)
                continue;
            uint32_t want = tab[pg - lo];
            unsigned char *page = buf + (i << HP_SHIFT);
            uint32_t got;
            if (pg == ms) { /* checksum page 0 holds its own entry */
                uint32_t *self = (uint32_t *)page + (pg % 1024);
                uint32_t keep = *self;
                *self = 0;
                got = mmk__crc32c(0, page, HP_PAGE) ^ z;
                *self = keep;
            } else {
                got = mmk__crc32c(0, page, HP_PAGE) ^ z;
            }
            if (got != want)
                return bad(c, "page %llu (offset %#llx): checksum mismatch (stored %08x, "
                              "computed %08x)",
                           (unsigned long long)pg, (unsigned long long)(pg << HP_SHIFT),
                           want, got);
        }
    }
    return 0;
}

static int desc_of(struct ck *c, uint64_t pg, uint32_t *d)
{
    if (pg >= c->pages)
        return bad(c, "reference to page %llu beyond the heap (%llu pages)",
                   (unsigned long long)pg, (unsigned long long)c->pages);
    uint64_t g = hp_group(pg);
    if (g != c->desc_group) {
        uint64_t lo = g * HP_GROUP;
        uint64_t hi = hp_group_end(g) < c->pages ? hp_group_end(g) : c->pages;
        uint64_t n = (hi - lo + 1023) / 1024;
        int rc = rd(c, c->desc, n * HP_PAGE, (hp_meta_start(g) + HP_NCSUM) << HP_SHIFT);
        if (rc)
            return rc;
        c->desc_group = g;
    }
    *d = c->desc[pg % HP_GROUP];
    return 0;
}

struct walk {
    uint64_t free_pages, used, objects, runs, slabs_with_room[HP_NCLASS], empty[HP_NCLASS];
};

static int walk_group(struct ck *c, uint64_t g, struct walk *w)
{
    uint64_t lo = hp_first_data(g);
    uint64_t hi = hp_group_end(g) < c->pages ? hp_group_end(g) : c->pages;
    uint32_t d;
    int rc;
    for (uint64_t p = hp_meta_start(g); p < lo && p < hi; p++) {
        if ((rc = desc_of(c, p, &d)))
            return rc;
        if (D_KIND(d) != D_META)
            return bad(c, "page %llu: metadata page not marked as such (descriptor %#x)",
                       (unsigned long long)p, d);
    }
    for (uint64_t p = lo; p < hi;) {
        if ((rc = desc_of(c, p, &d)))
            return rc;
        uint64_t n = D_VAL(d);
        switch (D_KIND(d)) {
        case D_FREE_HEAD: {
            struct hp_run r;
            if (!n || n > hi - p)
                return bad(c, "page %llu: free run of %llu pages overruns its group",
                           (unsigned long long)p, (unsigned long long)n);
            if ((rc = rd(c, &r, sizeof r, p << HP_SHIFT)))
                return rc;
            if (r.magic != RUN_MAGIC || r.pages != n)
                return bad(c, "page %llu: free run header damaged", (unsigned long long)p);
            if (n > 1) {
                if ((rc = desc_of(c, p + n - 1, &d)))
                    return rc;
                if (d != D_MAKE(D_FREE_TAIL, n))
                    return bad(c, "page %llu: free run tail descriptor wrong",
                               (unsigned long long)(p + n - 1));
            }
            w->free_pages += n;
            w->runs++;
            p += n;
            break;
        }
        case D_LARGE:
            if (!n || n > hi - p)
                return bad(c, "page %llu: object of %llu pages overruns its group",
                           (unsigned long long)p, (unsigned long long)n);
            w->used += n << HP_SHIFT;
            w->objects++;
            p += n;
            break;
        case D_SLAB: {
            if (n >= HP_NCLASS)
                return bad(c, "page %llu: slab of unknown class %llu", (unsigned long long)p,
                           (unsigned long long)n);
            int cls = (int)n;
            uint64_t np = mmk__hp_class_pages[cls];
            if (np > hi - p)
                return bad(c, "page %llu: slab overruns its group", (unsigned long long)p);
            struct hp_slab s;
            if ((rc = rd(c, &s, sizeof s, p << HP_SHIFT)))
                return rc;
            uint32_t nobj = mmk__hp_slab_nobj(cls), inuse = 0;
            if (s.magic != SLAB_MAGIC || s.cls != cls || s.nobj != nobj)
                return bad(c, "page %llu: slab header damaged", (unsigned long long)p);
            for (int k = 0; k < 4; k++) {
                uint64_t bits = s.bitmap[k];
                uint64_t valid = nobj >= (uint32_t)(k + 1) * 64 ? ~0ull
                                 : nobj <= (uint32_t)k * 64    ? 0
                                                                : (1ull << (nobj % 64)) - 1;
                if (bits & ~valid)
                    return bad(c, "page %llu: slab bitmap marks slots beyond its end",
                               (unsigned long long)p);
                inuse += (uint32_t)__builtin_popcountll(bits);
            }
            if (s.nfree != nobj - inuse)
                return bad(c, "page %llu: slab free count %u, bitmap says %u",
                           (unsigned long long)p, s.nfree, nobj - inuse);
            for (uint64_t k = 1; k < np; k++) {
                if ((rc = desc_of(c, p + k, &d)))
                    return rc;
                if (d != D_MAKE(D_SLAB_BODY, k))
                    return bad(c, "page %llu: slab body descriptor wrong",
                               (unsigned long long)(p + k));
            }
            if (s.nfree)
                w->slabs_with_room[cls]++;
            if (s.nfree == nobj)
                w->empty[cls]++;
            w->used += (uint64_t)inuse * mmk__hp_class_size[cls];
            w->objects += inuse;
            p += np;
            break;
        }
        default:
            return bad(c, "page %llu: descriptor %#x is neither free, object nor slab",
                       (unsigned long long)p, d);
        }
    }
    return 0;
}

static int check_lists(struct ck *c, const struct walk *w)
{
    uint64_t seen = 0;
    int rc;
    for (int b = 0; b < HP_NBIN; b++) {
        uint64_t prev = 0;
        for (uint64_t cur = c->hd.bin_head[b]; cur;) {
            uint32_t d;
            struct hp_run r;
            if (++seen > w->runs)
                return bad(c, "free list %d: more entries than free runs (a cycle?)", b);
            if ((rc = desc_of(c, cur, &d)))
                return rc;
            if (D_KIND(d) != D_FREE_HEAD || hp_bin(D_VAL(d)) != b)
                return bad(c, "free list %d: page %llu is not a free run of that size", b,
                           (unsigned long long)cur);
            if ((rc = rd(c, &r, sizeof r, cur << HP_SHIFT)))
                return rc;
            if (r.prev != prev)
                return bad(c, "free list %d: page %llu has a wrong back link", b,
                           (unsigned long long)cur);
            prev = cur;
            cur = r.next;
        }
    }
    if (seen != w->runs)
        return bad(c, "free lists hold %llu runs, the pages show %llu",
                   (unsigned long long)seen, (unsigned long long)w->runs);
    for (int cls = 0; cls < HP_NCLASS; cls++) {
        uint64_t prev = 0, n = 0;
        for (uint64_t cur = c->hd.class_head[cls]; cur;) {
            uint32_t d;
            struct hp_slab s;
            if (++n > w->slabs_with_room[cls])
                return bad(c, "slab list of class %d: too many entries (a cycle?)", cls);
            if ((rc = desc_of(c, cur, &d)))
                return rc;
            if (d != D_MAKE(D_SLAB, cls))
                return bad(c, "slab list of class %d: page %llu is not such a slab", cls,
                           (unsigned long long)cur);
            if ((rc = rd(c, &s, sizeof s, cur << HP_SHIFT)))
                return rc;
            if (s.prev != prev || !s.nfree)
                return bad(c, "slab list of class %d: page %llu badly linked or full", cls,
                           (unsigned long long)cur);
            prev = cur;
            cur = s.next;
        }
        if (w->empty[cls] != c->hd.class_empty[cls])
            return bad(c, "class %d: header counts %u empty slabs, the pages show %llu", cls,
                       c->hd.class_empty[cls], (unsigned long long)w->empty[cls]);
        if (n != w->slabs_with_room[cls])
            return bad(c, "slab list of class %d: %llu entries, %llu slabs have room", cls,
                       (unsigned long long)n, (unsigned long long)w->slabs_with_room[cls]);
    }
    return 0;
}

int mmk__hp_check(mmk_heap *h, char *msg, size_t len)
{
    struct ck c = {.h = h, .msg = msg, .len = len, .desc_group = UINT64_MAX};
    struct stat st;
    if (fstat(h->fd, &st))
        return -errno;
    int rc = rd(&c, &c.hd, sizeof c.hd, 0);
    if (rc)
        return rc;
    char why[160];
    rc = mmk__hp_header_valid(&c.hd, (uint64_t)st.st_size, why, sizeof why);
    if (rc)
        return bad(&c, "%s", why);
    c.pages = c.hd.heap_size >> HP_SHIFT;
    unsigned char *buf = malloc(256 << HP_SHIFT);
    uint32_t *tab = malloc(HP_NCSUM * HP_PAGE);
    c.desc = malloc(HP_NDESC * HP_PAGE);
    struct walk w = {0};
    rc = buf && tab && c.desc ? 0 : -ENOMEM;
    uint64_t groups = (c.pages + HP_GROUP - 1) / HP_GROUP;
    for (uint64_t g = 0; !rc && g < groups; g++)
        rc = check_sums(&c, g, buf, tab);
    for (uint64_t g = 0; !rc && g < groups; g++)
        rc = walk_group(&c, g, &w);
    if (!rc)
        rc = check_lists(&c, &w);
    if (!rc && w.free_pages != c.hd.free_pages)
        rc = bad(&c, "header counts %llu free pages, the pages show %llu",
                 (unsigned long long)c.hd.free_pages, (unsigned long long)w.free_pages);
    if (!rc && (w.used != c.hd.used_bytes || w.objects != c.hd.objects))
        rc = bad(&c, "header counts %llu objects / %llu bytes, the pages show %llu / %llu",
                 (unsigned long long)c.hd.objects, (unsigned long long)c.hd.used_bytes,
                 (unsigned long long)w.objects, (unsigned long long)w.used);
    free(buf);
    free(tab);
    free(c.desc);
    return rc;
}
