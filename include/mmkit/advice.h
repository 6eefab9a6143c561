/* mmkit/advice.h: memory advice that says what the kernel really did.
 *
 * madvise(2) mostly succeeds silently whether or not anything happens: KSM
 * advice is accepted while ksmd is stopped, huge-page advice while THP is
 * off, WILLNEED on anonymous memory does nothing. These helpers apply the
 * advice (mmk_advise from vm.h) and then look: the mapping's flags in
 * /proc/self/smaps (VmFlags), residency (mincore), AnonHugePages, and the
 * KSM counters in /sys/kernel/mm/ksm, and put a plain sentence in the report.
 *
 * Linux; elsewhere the observations read as unknown (-1 / 0) and the notes say
 * so. Thread-safe (they read /proc and /sys; nothing is cached). */
#ifndef MMKIT_ADVICE_H
#define MMKIT_ADVICE_H

#include <mmkit/common.h>
#include <mmkit/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ KSM */

/* State of the kernel's same-page merging daemon. */
#define MMK_KSM_UNAVAILABLE 0 /* no KSM in this kernel (or /sys not readable) */
#define MMK_KSM_STOPPED     1 /* /sys/kernel/mm/ksm/run is 0: advice is recorded, nothing merges */
#define MMK_KSM_RUNNING     2 /* run is 1: ksmd scans mergeable memory */
#define MMK_KSM_UNMERGING   3 /* run is 2: ksmd is splitting merged pages back */

struct mmk_ksm_info {
    int status;                 /* MMK_KSM_* */
    long pages_shared;          /* KSM pages in use (one per distinct content); -1 unknown */
    long pages_sharing;         /* page mappings saved by sharing them; -1 unknown */
    long pages_unshared;        /* scanned, unique, candidates; -1 unknown */
    long full_scans;            /* completed passes over mergeable memory; -1 unknown */
    long process_merging_pages; /* this process's merged pages (/proc/self/ksm_merging_pages); -1 */
    int process_merge_any;      /* PR_GET_MEMORY_MERGE: 1 whole process opted in, 0 not, -1 unknown */
};

/* Read the KSM state and counters. Never fails on a system without KSM
 * (status MMK_KSM_UNAVAILABLE, counters -1). -EINVAL for out NULL. This
 * library never starts ksmd: that is the administrator's decision. */
MMK_API int mmk_ksm_info(struct mmk_ksm_info *out);

/* Opt the whole process in (enable 1) or out (0) of merging
 * (PR_SET_MEMORY_MERGE, Linux 6.4): every current and future private
 * anonymous mapping becomes mergeable. The setting is read back
 * (PR_GET_MEMORY_MERGE) and *out (may be NULL) receives the KSM state.
 * -ENOTSUP on kernels without it, -EPERM when refused, -EIO if the read-back
 * disagrees. */
MMK_API int mmk_ksm_merge_process(int enable, struct mmk_ksm_info *out);

/* ------------------------------------------------------------ ranges */

/* Flags of a mapping, from the VmFlags line of /proc/self/smaps. */
#define MMK_VMA_MERGEABLE  1u  /* mg: KSM may merge it */
#define MMK_VMA_HUGEPAGE   2u  /* hg: MADV_HUGEPAGE */
#define MMK_VMA_NOHUGEPAGE 4u  /* nh */
#define MMK_VMA_RANDOM     8u  /* rr: MADV_RANDOM */
#define MMK_VMA_SEQUENTIAL 16u /* sr: MADV_SEQUENTIAL */
#define MMK_VMA_DONTDUMP   32u /* dd */
#define MMK_VMA_SHARED     64u /* a shared mapping (permissions column 's') */
#define MMK_VMA_WRITE      128u

struct mmk_range_info {
    unsigned flags_all;  /* MMK_VMA_* set on every mapping overlapping the range */
    unsigned flags_any;  /* ... on at least one */
    int mappings;        /* how many mappings overlap the range */
    size_t resident;     /* bytes of the range in memory (mincore: exact, whole pages) */
    size_t anon_huge;    /* AnonHugePages of the overlapping mappings (whole mappings) */
    size_t ksm;          /* "KSM:" merged bytes of the overlapping mappings, 0 if not shown */
};

/* Describe [addr, addr+len) (page-aligned addr). -ENOMEM when part of the
 * range is not mapped, -ENOTSUP without /proc/self/smaps (resident is then
 * still filled). */
MMK_API int mmk_range_info(const void *addr, size_t len, struct mmk_range_info *out);

/* What mmk_advise_report observed. */
struct mmk_advice_report {
    int applied;               /* 1: the kernel accepted the advice */
    int flag;                  /* the mapping flag this advice sets or clears, read back:
                                  1 the flags show the advice took effect on every mapping
                                  of the range (set, or cleared for UNMERGEABLE, NORMAL,
                                  DODUMP), 0 they do not, -1 no such flag or unreadable */
    size_t resident_before, resident_after;   /* mincore over the range */
    size_t anon_huge_before, anon_huge_after; /* see mmk_range_info */
    int ksm_status;            /* MMK_KSM_*, for the KSM advice; else -1 */
    char note[200];            /* one plain sentence: what happened, what it means */
};

/* Apply `advice` (an MMK_ADV_* from vm.h) to [addr, addr+len) like
 * mmk_advise, observe the effect, and fill *out (may not be NULL). Returns
 * mmk_advise's result: 0, or the error (out->applied 0 and a note). */
MMK_API int mmk_advise_report(void *addr, size_t len, int advice, struct mmk_advice_report *out);

#ifdef __cplusplus
}
#endif
#endif
