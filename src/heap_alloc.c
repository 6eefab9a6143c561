/* The allocator inside the heap. Its metadata lives in heap pages (the
 * header's list heads, page descriptors, free-run and slab headers), so
 * every change is part of the transaction that made it.
 *
 * Small sizes (<= 2 KiB) come from slabs of 1-8 pages per size class, with
 * a 256-bit occupancy bitmap; an empty slab goes back to the page allocator
 * unless it is its class's last one. Larger sizes are page runs taken from
 * segregated free lists (bins by power of two), split from the end of a run
 * (so its head and list links stay put) and coalesced with free neighbours
 * when freed. Runs never cross a 128 MiB group (its metadata pages sit at
 * its start). Every pointer read from the heap is bounds-checked: damaged
 * metadata gives MMK_ECORRUPT, a bad ref -EINVAL, never a crash. */
#include <string.h>
#include <unistd.h>

#include "heap_internal.h"

const uint32_t mmk__hp_class_size[HP_NCLASS] = {
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256,
    320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048};
const uint8_t mmk__hp_class_pages[HP_NCLASS] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8};

/* Slots per slab: min(256, (pages * 4096 - 64) / size), precomputed (the
 * division showed in profiles). */
static const uint16_t nobj_tab[HP_NCLASS] = {
    252, 126, 84, 63, 50, 42, 36, 31, 25, 21, 18, 15,
    25, 21, 18, 15, 25, 21, 18, 15, 25, 21, 18, 15};

uint32_t mmk__hp_slab_nobj(int cls) { return nobj_tab[cls]; }

static uint8_t class_lut[2048 / 16 + 1];

static int class_of(size_t size)
{
    if (!class_lut[0]) {
        int c = 0;
        for (size_t i = 0; i <= 2048 / 16; i++) {
            while (mmk__hp_class_size[c] < i * 16)
                c++;
            class_lut[i] = (uint8_t)c;
        }
        class_lut[0] = 1; /* size 0 is never looked up; marks "built" */
    }
    return class_lut[(size + 15) / 16];
}

#define CORRUPT MMK_ECORRUPT

static inline int desc_get(const mmk_heap *h, uint64_t pg, uint32_t *d)
{
    if (pg >= hp_pages(h))
        return CORRUPT;
    *d = *hp_desc_ptr(h, pg);
    return 0;
}

static inline void desc_set(mmk_heap *h, uint64_t pg, uint32_t d)
{
    uint32_t *p = hp_desc_ptr(h, pg);
    if (*p != d) /* a store to an unchanged page would copy it for nothing */
        *p = d;
}

static struct hp_run *run_at(mmk_heap *h, uint64_t pg) { return hp_page(h, pg); }

/* A free run head that the descriptors and its own header agree on. */
static int run_valid(mmk_heap *h, uint64_t pg, uint64_t *pages)
{
    uint32_t d;
    if (pg < hp_first_data(hp_group(pg)) || desc_get(h, pg, &d) || D_KIND(d) != D_FREE_HEAD)
        return CORRUPT;
    struct hp_run *r = run_at(h, pg);
    uint64_t end = hp_group_end(hp_group(pg));
    if (r->magic != RUN_MAGIC || r->pages != D_VAL(d) || !r->pages ||
        pg + r->pages > end || pg + r->pages > hp_pages(h) || r->next >= hp_pages(h) ||
        r->prev >= hp_pages(h))
        return CORRUPT;
    *pages = r->pages;
    return 0;
}

static void bin_remove(mmk_heap *h, uint64_t pg)
{
    struct hp_run *r = run_at(h, pg);
    if (r->prev)
        run_at(h, r->prev)->next = r->next;
    else
        h->hdr->bin_head[hp_bin(r->pages)] = r->next;
    if (r->next)
        run_at(h, r->next)->prev = r->prev;
}

static void bin_insert(mmk_heap *h, uint64_t pg, uint64_t pages)
{
    struct hp_run *r = run_at(h, pg);
    int b = hp_bin(pages);
    uint64_t head = h->hdr->bin_head[b];
    *r = (struct hp_run){.magic = RUN_MAGIC, .pages = pages, .next = head, .prev = 0};
    if (head)
        run_at(h, head)->prev = pg;
    h->hdr->bin_head[b] = pg;
}

static void mark_free(mmk_heap *h, uint64_t pg, uint64_t n)
{
    desc_set(h, pg, D_MAKE(D_FREE_HEAD, n));
    if (n > 1)
        desc_set(h, pg + n - 1, D_MAKE(D_FREE_TAIL, n));
}

/* Neighbours' list links must be valid before they are followed. */
static int links_valid(mmk_heap *h, uint64_t pg)
{
    struct hp_run *r = run_at(h, pg);
    uint64_t x;
    if (r->prev && (run_valid(h, r->prev, &x) || run_at(h, r->prev)->next != pg))
        return CORRUPT;
    if (r->next && (run_valid(h, r->next, &x) || run_at(h, r->next)->prev != pg))
        return CORRUPT;
    if (!r->prev && h->hdr->bin_head[hp_bin(r->pages)] != pg)
        return CORRUPT;
    return 0;
}

/* Return pages [pg, pg+n) to the free lists, merging with free neighbours
 * in the same group. */
static int free_pages(mmk_heap *h, uint64_t pg, uint64_t n)
{
    uint64_t g = hp_group(pg), lo = hp_first_data(g);
    uint64_t hi = hp_group_end(g) < hp_pages(h) ? hp_group_end(g) : hp_pages(h);
    if (pg < lo || pg + n > hi)
        return CORRUPT;
    uint64_t start = pg, total = n, x;
    uint32_t d;
    int rc;
    desc_set(h, pg, 0); /* the object's head becomes free space (or interior) */
    if (pg > lo) {
        if ((rc = desc_get(h, pg - 1, &d)))
            return rc;
        uint64_t left = 0;
        if (D_KIND(d) == D_FREE_TAIL)
            left = D_VAL(d);
        else if (D_KIND(d) == D_FREE_HEAD && D_VAL(d) == 1)
            left = 1;
        if (left) {
            if (left > pg - lo || run_valid(h, pg - left, &x) || x != left ||
                links_valid(h, pg - left))
                return CORRUPT;
            bin_remove(h, pg - left);
            if (left > 1)
                desc_set(h, pg - 1, 0);
            start = pg - left;
            total += left;
        }
    }
    if (pg + n < hi) {
        if ((rc = desc_get(h, pg + n, &d)))
            return rc;
        if (D_KIND(d) == D_FREE_HEAD) {
            if (run_valid(h, pg + n, &x) || links_valid(h, pg + n))
                return CORRUPT;
            bin_remove(h, pg + n);
            desc_set(h, pg + n, 0);
            total += x;
        }
    }
    mark_free(h, start, total);
    bin_insert(h, start, total);
    h->hdr->free_pages += n;
    return 0;
}

int mmk__hp_alloc_init(mmk_heap *h, uint64_t first, uint64_t end)
{
    return free_pages(h, first, end - first);
}

static int page_is_zero(const void *p)
{
    const uint64_t *w = p;
    for (size_t i = 0; i < HP_PAGE / 8; i += 4)
        if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
            return 0;
    return 1;
}

/* Take n pages (n <= a group's data pages); zeroed. */
static int alloc_pages(mmk_heap *h, uint64_t n, uint64_t *out)
{
    struct hp_header *hd = h->hdr;
    for (int attempt = 0; attempt < 2; attempt++) {
        uint64_t found = 0, len = 0;
        for (int b = hp_bin(n); b < HP_NBIN && !found; b++) {
            uint64_t cur = hd->bin_head[b], steps = 0;
            int limit = b == hp_bin(n) ? 64 : 1;
            while (cur && steps < (uint64_t)limit) {
                uint64_t pages;
                if (run_valid(h, cur, &pages) || hp_bin(pages) != b)
                    return CORRUPT;
                if (pages >= n) {
                    found = cur;
                    len = pages;
                    break;
                }
                cur = run_at(h, cur)->next;
                steps++;
            }
        }
        if (!found) {
            if (attempt)
                return -ENOMEM;
            int rc = mmk__hp_grow(h, n);
            if (rc)
                return rc;
            continue;
        }
        if (links_valid(h, found))
            return CORRUPT;
        uint64_t res;
        if (len == n) {
            bin_remove(h, found);
            desc_set(h, found, 0);
            if (n > 1)
                desc_set(h, found + n - 1, 0);
            res = found;
        } else {
            uint64_t remain = len - n;
            res = found + remain;
            if (hp_bin(remain) != hp_bin(len)) {
                bin_remove(h, found);
                bin_insert(h, found, remain);
            } else {
                run_at(h, found)->pages = remain;
            }
            desc_set(h, found + len - 1, 0);
            mark_free(h, found, remain);
        }
        hd->free_pages -= n;
        /* Pages never handed out are zero already, except a run header. */
        for (uint64_t p = res; p < res + n; p++)
            if ((p < hd->hiwater || p == found) && !page_is_zero(hp_page(h, p)))
                memset(hp_page(h, p), 0, HP_PAGE);
        if (res + n > hd->hiwater)
            hd->hiwater = res + n;
        *out = res;
        return 0;
    }
    return -ENOMEM;
}

static struct hp_slab *slab_at(mmk_heap *h, uint64_t pg) { return hp_page(h, pg); }

static int slab_valid(mmk_heap *h, uint64_t pg, int cls)
{
    uint32_t d;
    if (!pg || desc_get(h, pg, &d) || D_KIND(d) != D_SLAB || (int)D_VAL(d) != cls)
        return CORRUPT;
    struct hp_slab *s = slab_at(h, pg);
    if (s->magic != SLAB_MAGIC || s->cls != cls || s->nobj != mmk__hp_slab_nobj(cls) ||
        s->nfree > s->nobj || s->next >= hp_pages(h) || s->prev >= hp_pages(h) ||
        pg + mmk__hp_class_pages[cls] > hp_pages(h))
        return CORRUPT;
    return 0;
}

static void class_remove(mmk_heap *h, uint64_t pg)
{
    struct hp_slab *s = slab_at(h, pg);
    if (s->prev)
        slab_at(h, s->prev)->next = s->next;
    else
        h->hdr->class_head[s->cls] = s->next;
    if (s->next)
        slab_at(h, s->next)->prev = s->prev;
    s->next = s->prev = 0;
}

static void class_push(mmk_heap *h, uint64_t pg)
{
    struct hp_slab *s = slab_at(h, pg);
    uint64_t head = h->hdr->class_head[s->cls];
    s->prev = 0;
    s->next = head;
    if (head)
        slab_at(h, head)->prev = pg;
    h->hdr->class_head[s->cls] = pg;
}

static int class_links_valid(mmk_heap *h, uint64_t pg)
{
    struct hp_slab *s = slab_at(h, pg);
    if (s->prev && (slab_valid(h, s->prev, s->cls) || slab_at(h, s->prev)->next != pg))
        return CORRUPT;
    if (s->next && (slab_valid(h, s->next, s->cls) || slab_at(h, s->next)->prev != pg))
        return CORRUPT;
    if (!s->prev && h->hdr->class_head[s->cls] != pg)
        return CORRUPT;
    return 0;
}

static int new_slab(mmk_heap *h, int cls, uint64_t *out)
{
    uint64_t np = mmk__hp_class_pages[cls], pg;
    int rc = alloc_pages(h, np, &pg);
    if (rc)
        return rc;
    desc_set(h, pg, D_MAKE(D_SLAB, cls));
    for (uint64_t k = 1; k < np; k++)
        desc_set(h, pg + k, D_MAKE(D_SLAB_BODY, k));
    struct hp_slab *s = slab_at(h, pg);
    *s = (struct hp_slab){.magic = SLAB_MAGIC, .cls = (uint16_t)cls,
                          .nfree = (uint16_t)mmk__hp_slab_nobj(cls),
                          .nobj = mmk__hp_slab_nobj(cls)};
    class_push(h, pg);
    h->hdr->class_empty[cls]++;
    *out = pg;
    return 0;
}

MMK_API size_t mmk_heap_max_alloc(void)
{
    return (size_t)(HP_GROUP - HP_META - 1) * HP_PAGE;
}

MMK_API int mmk_heap_alloc(mmk_heap *h, size_t size, mmk_ref *out)
{
    if (!h || !out || !size || !h->in_txn)
        return -EINVAL;
    *out = 0;
    if (hp_forked(h))
        return -ECHILD;
    struct hp_header *hd = h->hdr;
    if (size > 2048) {
        if (size > mmk_heap_max_alloc())
            return -EFBIG;
        uint64_t n = (size + HP_PAGE - 1) >> HP_SHIFT, pg;
        int rc = alloc_pages(h, n, &pg);
        if (rc)
            return rc;
        desc_set(h, pg, D_MAKE(D_LARGE, n));
        hd->used_bytes += n << HP_SHIFT;
        hd->objects++;
        *out = pg << HP_SHIFT;
        return 0;
    }
    int cls = class_of(size);
    uint64_t pg = hd->class_head[cls];
    int rc;
    if (!pg) {
        if ((rc = new_slab(h, cls, &pg)))
            return rc;
    } else if (slab_valid(h, pg, cls) || slab_at(h, pg)->prev) {
        return CORRUPT;
    }
    struct hp_slab *s = slab_at(h, pg);
    if (!s->nfree)
        return CORRUPT;
    if (s->nfree == s->nobj) { /* an empty slab gets its first object */
        if (!hd->class_empty[cls])
            return CORRUPT;
        hd->class_empty[cls]--;
    }
    uint32_t slot = 256;
    for (int w = 0; w < 4 && slot == 256; w++)
        if (~s->bitmap[w])
            slot = (uint32_t)(w * 64 + __builtin_ctzll(~s->bitmap[w]));
    if (slot >= s->nobj)
        return CORRUPT; /* nfree said there was room */
    if (s->nfree == 1 && s->next && slab_valid(h, s->next, cls))
        return CORRUPT;
    s->bitmap[slot / 64] |= 1ull << (slot % 64);
    if (--s->nfree == 0)
        class_remove(h, pg);
    uint32_t csize = mmk__hp_class_size[cls];
    uint64_t off = (pg << HP_SHIFT) + SLAB_HDR + (uint64_t)slot * csize;
    memset(h->base + off, 0, csize);
    hd->used_bytes += csize;
    hd->objects++;
    *out = off;
    return 0;
}

MMK_API int mmk_heap_free(mmk_heap *h, mmk_ref ref)
{
    if (!h || !h->in_txn)
        return -EINVAL;
    if (hp_forked(h))
        return -ECHILD;
    struct hp_header *hd = h->hdr;
    if (!ref || ref >= hd->heap_size)
        return -EINVAL;
    uint64_t pg = ref >> HP_SHIFT;
    uint32_t d;
    int rc = desc_get(h, pg, &d);
    if (rc)
        return rc;
    if (hp_is_meta(pg))
        return -EINVAL;
    if (D_KIND(d) == D_LARGE) {
        uint64_t n = D_VAL(d);
        if (ref & (HP_PAGE - 1))
            return -EINVAL;
        if (!n || pg + n > hp_group_end(hp_group(pg)) || pg + n > hp_pages(h))
            return CORRUPT;
        if ((rc = free_pages(h, pg, n)))
            return rc;
        hd->used_bytes -= n << HP_SHIFT;
        hd->objects--;
        return 0;
    }
    uint64_t head = pg;
    if (D_KIND(d) == D_SLAB_BODY) {
        if (D_VAL(d) >= 8 || D_VAL(d) > pg)
            return CORRUPT;
        head = pg - D_VAL(d);
        if ((rc = desc_get(h, head, &d)))
            return rc;
        if (D_KIND(d) != D_SLAB)
            return CORRUPT;
    }
    if (D_KIND(d) != D_SLAB)
        return -EINVAL;
    int cls = (int)D_VAL(d);
    if (cls >= HP_NCLASS || slab_valid(h, head, cls))
        return CORRUPT;
    struct hp_slab *s = slab_at(h, head);
    uint32_t csize = mmk__hp_class_size[cls];
    uint64_t rel = ref - (head << HP_SHIFT);
    if (rel < SLAB_HDR || (rel - SLAB_HDR) % csize)
        return -EINVAL;
    uint64_t slot = (rel - SLAB_HDR) / csize;
    if (slot >= s->nobj || !(s->bitmap[slot / 64] & (1ull << (slot % 64))))
        return -EINVAL; /* not allocated: a double free or a made-up ref */
    int was_full = s->nfree == 0;
    if (was_full && hd->class_head[cls] && slab_valid(h, hd->class_head[cls], cls))
        return CORRUPT;
    if (!was_full && s->nfree + 1u == s->nobj && hd->class_empty[cls] >= 2 &&
        class_links_valid(h, head))
        return CORRUPT;
    s->bitmap[slot / 64] &= ~(1ull << (slot % 64));
    hd->used_bytes -= csize;
    hd->objects--;
    if (s->nfree++ == 0)
        class_push(h, head);
    if (s->nfree == s->nobj) {
        /* Empty: keep up to two per class (no churn when a workload frees
         * and allocates again), give the pages of any more back. */
        if (hd->class_empty[cls] < 2) {
            hd->class_empty[cls]++;
            return 0;
        }
        class_remove(h, head);
        uint64_t np = mmk__hp_class_pages[cls];
        for (uint64_t k = 0; k < np; k++)
            desc_set(h, head + k, 0);
        memset(s, 0, sizeof *s);
        return free_pages(h, head, np);
    }
    return 0;
}

int mmk__hp_stats(mmk_heap *h, struct mmk_heap_stats *st)
{
    struct hp_header *hd = h->hdr;
    uint64_t pages = hp_pages(h);
    st->size = hd->heap_size;
    st->used = hd->used_bytes;
    st->free = hd->free_pages << HP_SHIFT;
    st->objects = hd->objects;
    st->commit_id = hd->commit_id;
    uint64_t groups = (pages + HP_GROUP - 1) / HP_GROUP;
    st->meta = (1 + groups * HP_META) << HP_SHIFT;
    for (int b = HP_NBIN - 1; b >= 0; b--) {
        uint64_t cur = hd->bin_head[b], best = 0, steps = 0;
        while (cur && steps++ < 64) {
            uint64_t n;
            if (run_valid(h, cur, &n))
                return CORRUPT;
            if (n > best)
                best = n;
            cur = run_at(h, cur)->next;
        }
        if (best) {
            st->largest_free = best << HP_SHIFT;
            break;
        }
    }
    for (int c = 0; c < HP_NCLASS; c++) {
        uint64_t cur = hd->class_head[c], steps = 0;
        while (cur && steps++ < 100000) {
            if (slab_valid(h, cur, c))
                return CORRUPT;
            st->slab_free += (uint64_t)slab_at(h, cur)->nfree * mmk__hp_class_size[c];
            cur = slab_at(h, cur)->next;
        }
    }
    return 0;
}
