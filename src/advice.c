/* advice.h: apply advice, then observe what the kernel did. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <mmkit/advice.h>
#include <mmkit/vm.h>
#include "internal.h"

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif

static long read_num(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    long v = -1;
    if (fscanf(f, "%ld", &v) != 1)
        v = -1;
    fclose(f);
    return v;
}

static long ksm_counter(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "/sys/kernel/mm/ksm/%s", name);
    return read_num(path);
}

MMK_API int mmk_ksm_info(struct mmk_ksm_info *out)
{
    if (!out)
        return -EINVAL;
    long run = ksm_counter("run");
    out->status = run == 0 ? MMK_KSM_STOPPED : run == 1 ? MMK_KSM_RUNNING
                : run == 2 ? MMK_KSM_UNMERGING : MMK_KSM_UNAVAILABLE;
    out->pages_shared = ksm_counter("pages_shared");
    out->pages_sharing = ksm_counter("pages_sharing");
    out->pages_unshared = ksm_counter("pages_unshared");
    out->full_scans = ksm_counter("full_scans");
    out->process_merging_pages = read_num("/proc/self/ksm_merging_pages");
    out->process_merge_any = -1;
#ifdef __linux__
    int r = prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0);
    if (r >= 0)
        out->process_merge_any = r != 0;
#endif
    return 0;
}

MMK_API int mmk_ksm_merge_process(int enable, struct mmk_ksm_info *out)
{
#ifdef __linux__
    if (prctl(PR_SET_MEMORY_MERGE, enable ? 1 : 0, 0, 0, 0)) {
        int e = errno;
        if (out)
            mmk_ksm_info(out);
        return e == EINVAL ? -ENOTSUP : -e;
    }
    int got = prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0);
    if (out)
        mmk_ksm_info(out);
    if (got < 0)
        return -ENOTSUP;
    return (got != 0) == (enable != 0) ? 0 : -EIO;
#else
    (void)enable;
    if (out)
        mmk_ksm_info(out);
    return -ENOTSUP;
#endif
}

/* ------------------------------------------------------------ smaps */

static unsigned vmflags_of(const char *s)
{
    static const struct {
        char name[3];
        unsigned bit;
    } map[] = {{"mg", MMK_VMA_MERGEABLE}, {"hg", MMK_VMA_HUGEPAGE}, {"nh", MMK_VMA_NOHUGEPAGE},
               {"rr", MMK_VMA_RANDOM},    {"sr", MMK_VMA_SEQUENTIAL}, {"dd", MMK_VMA_DONTDUMP}};
    unsigned f = 0;
    while (*s) {
        while (*s == ' ')
            s++;
        if (s[0] && s[1] && (s[2] == ' ' || s[2] == '\n' || !s[2]))
            for (size_t i = 0; i < MMK__ARRAY_LEN(map); i++)
                if (s[0] == map[i].name[0] && s[1] == map[i].name[1])
                    f |= map[i].bit;
        while (*s && *s != ' ')
            s++;
    }
    return f;
}

/* Walk /proc/self/smaps and add up the mappings overlapping [b, e). */
static int smaps_scan(uintptr_t b, uintptr_t e, struct mmk_range_info *out)
{
    FILE *f = fopen("/proc/self/smaps", "re");
    if (!f)
        return -ENOTSUP;
    char line[512];
    int in = 0;
    unsigned flags = 0;
    uintptr_t covered = b; /* mappings come sorted: check there is no hole */
    int hole = 0;
    out->flags_all = ~0u;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && strchr(line, '-') < strchr(line, ' ')) {
            in = lo < e && hi > b;
            if (in) {
                out->mappings++;
                if (lo > covered)
                    hole = 1;
                covered = hi;
                flags = (perms[3] == 's' ? MMK_VMA_SHARED : 0) | (perms[1] == 'w' ? MMK_VMA_WRITE : 0);
            }
            continue;
        }
        if (!in)
            continue;
        unsigned long kb;
        if (sscanf(line, "AnonHugePages: %lu kB", &kb) == 1)
            out->anon_huge += kb << 10;
        else if (sscanf(line, "KSM: %lu kB", &kb) == 1)
            out->ksm += kb << 10;
        else if (!strncmp(line, "VmFlags:", 8)) {
            flags |= vmflags_of(line + 8);
            out->flags_all &= flags;
            out->flags_any |= flags;
        }
    }
    fclose(f);
    if (!out->mappings)
        out->flags_all = 0;
    return hole || covered < e ? -ENOMEM : 0;
}

MMK_API int mmk_range_info(const void *addr, size_t len, struct mmk_range_info *out)
{
    if (!out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    int rc = mmk_resident(addr, len, &out->resident);
    if (rc)
        return rc;
    uintptr_t b = (uintptr_t)addr, e = b + mmk__align_up(len, mmk__pagesz());
    return smaps_scan(b, e, out);
}

/* ------------------------------------------------------------ reports */

static unsigned flag_of(int advice, int *sets)
{
    *sets = 1;
    switch (advice) {
    case MMK_ADV_MERGEABLE: return MMK_VMA_MERGEABLE;
    case MMK_ADV_UNMERGEABLE: *sets = 0; return MMK_VMA_MERGEABLE;
    case MMK_ADV_HUGEPAGE: return MMK_VMA_HUGEPAGE;
    case MMK_ADV_NOHUGEPAGE: return MMK_VMA_NOHUGEPAGE;
    case MMK_ADV_RANDOM: return MMK_VMA_RANDOM;
    case MMK_ADV_SEQUENTIAL: return MMK_VMA_SEQUENTIAL;
    case MMK_ADV_NORMAL: *sets = 0; return MMK_VMA_RANDOM | MMK_VMA_SEQUENTIAL;
    case MMK_ADV_DONTDUMP: return MMK_VMA_DONTDUMP;
    case MMK_ADV_DODUMP: *sets = 0; return MMK_VMA_DONTDUMP;
    default: return 0;
    }
}

#define NOTE(...) snprintf(out->note, sizeof out->note, __VA_ARGS__)

static void ksm_note(struct mmk_advice_report *out)
{
    struct mmk_ksm_info k;
    mmk_ksm_info(&k);
    out->ksm_status = k.status;
    switch (k.status) {
    case MMK_KSM_STOPPED:
        NOTE("marked mergeable (VmFlags mg), but ksmd is not running (/sys/kernel/mm/ksm/run "
             "is 0): nothing will be merged until an administrator starts it");
        break;
    case MMK_KSM_RUNNING:
        NOTE("marked mergeable; ksmd is running: identical pages merge over its next scans "
             "(watch pages_sharing and /proc/self/ksm_merging_pages, now %ld)",
             k.process_merging_pages);
        break;
    case MMK_KSM_UNMERGING:
        NOTE("marked mergeable, but ksmd is unmerging everything (run is 2): no merging");
        break;
    default:
        NOTE("marked mergeable, but KSM state is unknown (no /sys/kernel/mm/ksm)");
    }
}

static void describe(int advice, const struct mmk_range_info *after, int thp,
                     struct mmk_advice_report *out)
{
    char b1[32], b2[32];
    snprintf(b1, sizeof b1, "%zu KiB", out->resident_before >> 10);
    snprintf(b2, sizeof b2, "%zu KiB", out->resident_after >> 10);
    int shared = !!(after->flags_any & MMK_VMA_SHARED);
    switch (advice) {
    case MMK_ADV_MERGEABLE:
        ksm_note(out);
        break;
    case MMK_ADV_UNMERGEABLE:
        NOTE("no longer mergeable; merged pages were split back into private copies");
        break;
    case MMK_ADV_HUGEPAGE:
        if (thp == 0)
            NOTE("recorded (VmFlags hg) but transparent huge pages are disabled system-wide: "
                 "no huge pages");
        else
            NOTE("eligible for huge pages (VmFlags hg): new faults in 2 MiB-aligned extents get "
                 "them when memory allows; pages already there wait for khugepaged. "
                 "AnonHugePages now %zu KiB",
                 out->anon_huge_after >> 10);
        break;
    case MMK_ADV_RANDOM:
    case MMK_ADV_SEQUENTIAL:
        NOTE("%s read-ahead for file pages (VmFlags %s); no effect on anonymous memory",
             advice == MMK_ADV_RANDOM ? "no" : "aggressive",
             advice == MMK_ADV_RANDOM ? "rr" : "sr");
        break;
    case MMK_ADV_WILLNEED:
        NOTE("resident %s -> %s; read-in is asynchronous for files and does nothing for "
             "anonymous memory that is not swapped out", b1, b2);
        break;
    case MMK_ADV_DONTNEED:
        if (shared)
            NOTE("resident %s -> %s, but on shared memory DONTNEED only unmaps: the pages stay "
                 "allocated (use MMK_ADV_REMOVE to free them)", b1, b2);
        else
            NOTE("resident %s -> %s: freed at once; reads now give zero (or the file)", b1, b2);
        break;
    case MMK_ADV_FREE:
        NOTE("resident %s -> %s: pages are freed only under memory pressure, and count as "
             "resident until then; use DONTNEED to give memory back now", b1, b2);
        break;
    case MMK_ADV_REMOVE:
        NOTE("resident %s -> %s: the backing was punched out and is freed", b1, b2);
        break;
    case MMK_ADV_POPULATE_READ:
    case MMK_ADV_POPULATE_WRITE:
        NOTE("resident %s -> %s: faulted in now", b1, b2);
        break;
    case MMK_ADV_PAGEOUT:
    case MMK_ADV_COLD:
        NOTE("resident %s -> %s: reclaim is best effort (no swap: anonymous pages stay)", b1, b2);
        break;
    default:
        NOTE("applied; resident %s -> %s", b1, b2);
    }
}

MMK_API int mmk_advise_report(void *addr, size_t len, int advice, struct mmk_advice_report *out)
{
    if (!out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    out->flag = -1;
    out->ksm_status = -1;
    struct mmk_range_info before, after;
    int have = mmk_range_info(addr, len, &before) == 0;
    int rc = mmk_advise(addr, len, advice);
    if (rc) {
        NOTE("refused: %s%s", mmk_strerror(rc),
             rc == -ENOTSUP ? " (this kernel does not support this advice)" : "");
        return rc;
    }
    out->applied = 1;
    int have_after = mmk_range_info(addr, len, &after) == 0;
    if (have) {
        out->resident_before = before.resident;
        out->anon_huge_before = before.anon_huge;
    }
    if (have_after) {
        out->resident_after = after.resident;
        out->anon_huge_after = after.anon_huge;
        int sets;
        unsigned fl = flag_of(advice, &sets);
        if (fl)
            out->flag = sets ? (after.flags_all & fl) == fl : !(after.flags_any & fl);
    } else {
        memset(&after, 0, sizeof after);
        size_t r = 0;
        if (mmk_resident(addr, len, &r) == 0)
            out->resident_after = r;
    }
    struct mmk_hugepage_info hi;
    int thp = mmk_hugepage_info(&hi) == 0 ? hi.thp : -1;
    describe(advice, &after, thp, out);
    return 0;
}
