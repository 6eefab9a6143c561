/* mmkit/map.h: a persistent hash map inside a heap (mmkit/heap.h).
 *
 * Keys and values are byte strings of any length from 0 to MMK_MAP_MAX_LEN
 * (4 GiB - 1) bytes. A get returns a pointer into the heap: no copy. The map
 * keeps no state outside the heap: a map is just its ref (keep it in the
 * heap's root or inside your own structures).
 *
 * Transactions: the map never begins or commits. Every change (put, del,
 * create, destroy, mmk_map_iter_del) must run inside the caller's write
 * transaction (mmk_heap_begin .. mmk_heap_commit) and becomes durable, or is
 * undone, with everything else that transaction changed. Reads (get, count,
 * iteration, check) work inside a write transaction and inside a read view
 * (mmk_heap_read_begin .. mmk_heap_read_end).
 *
 * Pointers from get and iteration stay valid until the read view or the
 * transaction ends, or until the same transaction puts or deletes that key.
 * Values are 8-byte aligned.
 *
 * Growth is incremental (linear hashing): a put splits at most one bucket,
 * so no put stalls when the table grows. Memory of deleted or replaced
 * entries goes back to the heap (mmk_heap_free). The hash is SipHash-1-3
 * keyed with a random seed stored in each map, so keys chosen by an attacker
 * cannot force long chains.
 *
 * Damage: every ref and length read from the heap is checked against the
 * heap's bounds and every chain walk is bounded, so a damaged map makes
 * get, put, del, iteration and mmk_map_check return MMK_ECORRUPT, never
 * crash or loop. (Changing a damaged map may spread the damage inside the
 * heap: abort and run mmk_map_check.)
 *
 * Threads and processes: as the heap: one writer, any number of readers in
 * read views; a handle is used by one thread at a time. */
#ifndef MMKIT_MAP_H
#define MMKIT_MAP_H

#include <mmkit/heap.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MMK_MAP_MAX_LEN 0xffffffffull /* longest key or value, bytes */

/* Create an empty map inside a transaction; *out is its ref. -EINVAL
 * outside a transaction, -ENOMEM, MMK_ECORRUPT (heap allocator damaged). */
MMK_API int      mmk_map_create(mmk_heap *h, mmk_ref *out);
/* Free a map and all its entries, inside a transaction (O(entries) work in
 * one transaction). MMK_ECORRUPT if the map is damaged. */
MMK_API int      mmk_map_destroy(mmk_heap *h, mmk_ref map);
/* Insert or replace key (klen bytes; key may be NULL when klen is 0) with a
 * copy of val. Inside a transaction. 0, -EINVAL (bad arguments or no
 * transaction), -E2BIG (klen or vlen above MMK_MAP_MAX_LEN), -ENOMEM,
 * -EFBIG (entry above mmk_heap_max_alloc()), MMK_ECORRUPT. On an error the
 * map's contents are unchanged. */
MMK_API int      mmk_map_put(mmk_heap *h, mmk_ref map, const void *key, size_t klen,
                             const void *val, size_t vlen);
/* Find key: 0 and *val / *vlen (a pointer into the heap, see above), or
 * -ENOENT, -EINVAL, MMK_ECORRUPT. val and vlen may be NULL (existence test). */
MMK_API int      mmk_map_get(mmk_heap *h, mmk_ref map, const void *key, size_t klen,
                             const void **val, size_t *vlen);
/* Look up n keys at once: keys[i] of klens[i] bytes. A get from a large
 * map is two cache misses one after the other (bucket line, entry); a batch
 * starts those of 16 keys together, so it runs several times faster than
 * n calls of mmk_map_get when the map does not fit in the cache. For each
 * key, rcs[i] = 0 with vals[i] / vlens[i] set as mmk_map_get sets them, or
 * -ENOENT (vals[i] NULL, vlens[i] 0), -EINVAL (NULL key with klens[i] > 0),
 * -E2BIG, MMK_ECORRUPT. vals and vlens may be NULL. Returns the number of
 * keys found, or -EINVAL (NULL h, map or arrays, n > INT_MAX), MMK_EFORMAT,
 * MMK_ECORRUPT (the map's header or directory: no key looked up; rcs not
 * set). Same threads, views and pointer lifetime as mmk_map_get. */
MMK_API int      mmk_map_get_many(mmk_heap *h, mmk_ref map, size_t n, const void *const keys[],
                                  const size_t klens[], const void *vals[], size_t vlens[],
                                  int rcs[]);
/* Delete key, inside a transaction: 0, -ENOENT, -EINVAL, MMK_ECORRUPT. */
MMK_API int      mmk_map_del(mmk_heap *h, mmk_ref map, const void *key, size_t klen);
/* Number of entries; 0 also when the map is damaged (mmk_map_check tells). */
MMK_API uint64_t mmk_map_count(mmk_heap *h, mmk_ref map);

/* Iteration in no particular order. The iterator is a plain struct on the
 * caller's stack; nothing to free.
 *   mmk_map_iter it; const void *k, *v; size_t kl, vl; int rc;
 *   mmk_map_iter_init(h, map, &it);
 *   while ((rc = mmk_map_iter_next(&it, &k, &kl, &v, &vl)) == 1) ...
 * Put or del on the map during an iteration make the next call return
 * -EAGAIN; to delete while iterating use mmk_map_iter_del. */
typedef struct mmk_map_iter {
    mmk_heap *h;
    mmk_ref map;
    uint64_t mods;      /* the map's change counter at init */
    uint64_t bucket;    /* current bucket */
    mmk_ref node;       /* current overflow node, 0 = the bucket itself */
    uint64_t slot;      /* next slot to look at in the node */
    uint64_t seen;      /* entries returned */
    uint64_t hops;      /* overflow hops in the current bucket */
    mmk_ref last_node;  /* position of the last entry returned */
    uint64_t last_bucket, last_slot;
    int has_last;
} mmk_map_iter;

/* Start an iteration: 0, -EINVAL, MMK_ECORRUPT. */
MMK_API int mmk_map_iter_init(mmk_heap *h, mmk_ref map, mmk_map_iter *it);
/* Next entry: 1 (key, value and lengths set; any out-pointer may be NULL),
 * 0 at the end, -EAGAIN (the map changed), MMK_ECORRUPT. */
MMK_API int mmk_map_iter_next(mmk_map_iter *it, const void **key, size_t *klen,
                              const void **val, size_t *vlen);
/* Delete the entry the last mmk_map_iter_next returned, inside a
 * transaction; the iteration continues with the remaining entries. 0,
 * -EINVAL (nothing to delete), -EAGAIN, MMK_ECORRUPT. */
MMK_API int mmk_map_iter_del(mmk_map_iter *it);

/* Full verification of a map: header, directory, every bucket and entry
 * (bounds, hash, placement, duplicates, count). 0 or MMK_ECORRUPT. */
MMK_API int mmk_map_check(mmk_heap *h, mmk_ref map);
/* Like mmk_map_check and writes what failed and where into msg (may be NULL). */
MMK_API int mmk_map_check_report(mmk_heap *h, mmk_ref map, char *msg, size_t len);

struct mmk_map_stats {
    uint64_t count;        /* entries */
    uint64_t buckets;      /* buckets in use (grows one split at a time) */
    uint64_t overflow;     /* overflow nodes */
    uint64_t segments;     /* bucket segments */
    uint64_t longest;      /* most entries in one bucket */
    uint64_t key_bytes, value_bytes;
};
/* Walk the whole map and fill *out (O(entries)). 0 or MMK_ECORRUPT. */
MMK_API int mmk_map_stats(mmk_heap *h, mmk_ref map, struct mmk_map_stats *out);

#ifdef __cplusplus
}
#endif
#endif
