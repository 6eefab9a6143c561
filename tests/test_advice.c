/* advice.h: every report matches what /proc and /sys say; KSM is reported
 * honestly whether or not ksmd runs (it is never started here). */
#include <sys/mman.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

#define MiB ((size_t)1 << 20)

static char *anon(size_t len, size_t align)
{
    void *p;
    CHECK_OK(mmk_reserve_aligned(len, align, &p));
    CHECK_OK(mmk_commit(p, len));
    return p;
}

static void test_errors(void)
{
    struct mmk_advice_report rep;
    struct mmk_range_info ri;
    char *p = anon(MiB, 4096);
    CHECK_EQ(mmk_ksm_info(NULL), -EINVAL);
    CHECK_EQ(mmk_advise_report(p, MiB, MMK_ADV_RANDOM, NULL), -EINVAL);
    CHECK_EQ(mmk_advise_report(p, MiB, 999, &rep), -EINVAL);
    CHECK_EQ(rep.applied, 0);
    CHECK(rep.note[0]);
    CHECK_EQ(mmk_advise_report(p + 1, MiB, MMK_ADV_RANDOM, &rep), -EINVAL);
    CHECK_EQ(mmk_range_info(p, MiB, NULL), -EINVAL);
    CHECK_OK(mmk_release(p, MiB));
    CHECK_EQ(mmk_range_info(p, MiB, &ri), -ENOMEM);
}

static void test_ksm(void)
{
    struct mmk_ksm_info k;
    CHECK_OK(mmk_ksm_info(&k));
    long run = -1;
    FILE *f = fopen("/sys/kernel/mm/ksm/run", "re");
    if (f) {
        if (fscanf(f, "%ld", &run) != 1)
            run = -1;
        fclose(f);
    }
    CHECK_EQ(k.status, run == 0 ? MMK_KSM_STOPPED : run == 1 ? MMK_KSM_RUNNING
                       : run == 2 ? MMK_KSM_UNMERGING : MMK_KSM_UNAVAILABLE);
    printf("ksm: status %d, pages_shared %ld, pages_sharing %ld, process merging %ld, merge_any %d\n",
           k.status, k.pages_shared, k.pages_sharing, k.process_merging_pages, k.process_merge_any);

    /* Identical pages, marked mergeable. */
    const size_t len = 4 * MiB;
    char *p = anon(len, 4096);
    memset(p, 0x77, len);
    struct mmk_advice_report rep;
    int rc = mmk_advise_report(p, len, MMK_ADV_MERGEABLE, &rep);
    if (rc == -ENOTSUP) {
        printf("note: KSM not in this kernel: %s\n", rep.note);
        CHECK_EQ(rep.applied, 0);
    } else {
        CHECK_OK(rc);
        CHECK_EQ(rep.applied, 1);
        CHECK_EQ(rep.flag, 1); /* VmFlags mg, read back */
        CHECK_EQ(rep.ksm_status, k.status);
        printf("MERGEABLE: %s\n", rep.note);
        if (k.status == MMK_KSM_STOPPED)
            CHECK(strstr(rep.note, "not running"));
        struct mmk_range_info ri;
        CHECK_OK(mmk_range_info(p, len, &ri));
        CHECK(ri.flags_all & MMK_VMA_MERGEABLE);
        CHECK_EQ(ri.resident, len);
        CHECK_OK(mmk_advise_report(p, len, MMK_ADV_UNMERGEABLE, &rep));
        CHECK_EQ(rep.flag, 1); /* cleared */
        CHECK_OK(mmk_range_info(p, len, &ri));
        CHECK(!(ri.flags_any & MMK_VMA_MERGEABLE));
    }
    CHECK_OK(mmk_release(p, len));

    /* The whole process: every new private anonymous mapping is mergeable. */
    rc = mmk_ksm_merge_process(1, &k);
    if (rc == -ENOTSUP || rc == -EPERM) {
        printf("note: process-wide merging unavailable (%s)\n", mmk_strerror(rc));
        return;
    }
    CHECK_OK(rc);
    CHECK_EQ(k.process_merge_any, 1);
    p = anon(MiB, 4096);
    struct mmk_range_info ri;
    CHECK_OK(mmk_range_info(p, MiB, &ri));
    CHECK(ri.flags_all & MMK_VMA_MERGEABLE);
    CHECK_OK(mmk_ksm_merge_process(0, &k));
    CHECK_EQ(k.process_merge_any, 0);
    CHECK_OK(mmk_release(p, MiB));
}

static void test_flags(void)
{
    const size_t len = 2 * MiB;
    char *p = anon(len, 4096);
    struct mmk_advice_report rep;
    CHECK_OK(mmk_advise_report(p, len, MMK_ADV_RANDOM, &rep));
    CHECK_EQ(rep.flag, 1);
    CHECK(strstr(rep.note, "rr"));
    CHECK_OK(mmk_advise_report(p, len, MMK_ADV_SEQUENTIAL, &rep));
    CHECK_EQ(rep.flag, 1);
    struct mmk_range_info ri;
    CHECK_OK(mmk_range_info(p, len, &ri));
    CHECK(ri.flags_all & MMK_VMA_SEQUENTIAL);
    CHECK(!(ri.flags_any & MMK_VMA_RANDOM));
    CHECK_OK(mmk_advise_report(p, len, MMK_ADV_NORMAL, &rep));
    CHECK_EQ(rep.flag, 1);
    CHECK_OK(mmk_advise_report(p, len, MMK_ADV_DONTDUMP, &rep));
    CHECK_EQ(rep.flag, 1);
    /* Only part of a mapping: the kernel splits it, the flag is on the part. */
    CHECK_OK(mmk_advise_report(p, 4096, MMK_ADV_RANDOM, &rep));
    CHECK_EQ(rep.flag, 1);
    CHECK_OK(mmk_range_info(p, len, &ri));
    CHECK(ri.mappings >= 2);
    CHECK(ri.flags_any & MMK_VMA_RANDOM);
    CHECK(!(ri.flags_all & MMK_VMA_RANDOM));
    CHECK_OK(mmk_release(p, len));
}

static void test_residency(void)
{
    const size_t len = 8 * MiB;
    char *p = anon(len, 4096);
    struct mmk_advice_report rep;
    CHECK_OK(mmk_advise_report(p, len, MMK_ADV_POPULATE_WRITE, &rep));
    CHECK_EQ(rep.resident_before, 0);
    CHECK_EQ(rep.resident_after, len);
    CHECK_OK(mmk_advise_report(p, len, MMK_ADV_WILLNEED, &rep));
    CHECK(strstr(rep.note, "anonymous"));
    CHECK_OK(mmk_advise_report(p, len / 2, MMK_ADV_FREE, &rep));
    CHECK(strstr(rep.note, "pressure"));
    printf("FREE: %s\n", rep.note);
    CHECK_OK(mmk_advise_report(p, len, MMK_ADV_DONTNEED, &rep));
    CHECK_EQ(rep.resident_before, len);
    CHECK_EQ(rep.resident_after, 0);
    printf("DONTNEED: %s\n", rep.note);
    CHECK_OK(mmk_release(p, len));

    /* Shared memory: DONTNEED frees nothing; REMOVE does. */
    int fd;
    CHECK(mmk_shm_create("adv", len, 0, &fd) > 0);
    char *s = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(s != MAP_FAILED);
    memset(s, 1, len);
    CHECK_OK(mmk_advise_report(s, len, MMK_ADV_DONTNEED, &rep));
    CHECK(strstr(rep.note, "REMOVE"));
    CHECK_EQ(rep.resident_after, len); /* mincore sees the page cache: still there */
    int rc = mmk_advise_report(s, len, MMK_ADV_REMOVE, &rep);
    if (rc != -ENOTSUP) {
        CHECK_OK(rc);
        CHECK_EQ(rep.resident_after, 0);
    }
    munmap(s, len);
    close(fd);
}

static void test_hugepage(void)
{
    const size_t len = 8 * MiB;
    char *p = anon(len, 2 * MiB);
    struct mmk_hugepage_info hi;
    int thp = mmk_hugepage_info(&hi) == 0 ? hi.thp : -1;
    struct mmk_advice_report rep;
    int rc = mmk_advise_report(p, len, MMK_ADV_HUGEPAGE, &rep);
    if (rc == -ENOTSUP) {
        printf("note: no THP advice here\n");
        return;
    }
    CHECK_OK(rc);
    CHECK_EQ(rep.flag, 1);
    memset(p, 1, len);
    struct mmk_range_info ri;
    CHECK_OK(mmk_range_info(p, len, &ri));
    printf("HUGEPAGE (thp mode %d): %s; after touching: AnonHugePages %zu KiB\n", thp, rep.note,
           ri.anon_huge >> 10);
    if (thp == 0)
        CHECK(strstr(rep.note, "disabled"));
    if (thp > 0 && ri.anon_huge == 0)
        printf("note: no huge page was available (fragmented memory?)\n");
    CHECK_OK(mmk_advise_report(p, len, MMK_ADV_NOHUGEPAGE, &rep));
    CHECK_EQ(rep.flag, 1);
    CHECK_OK(mmk_release(p, len));
}

int main(void)
{
    test_errors();
    test_flags();
    test_residency();
    test_hugepage();
    test_ksm();
    printf("advice: ok\n");
    return 0;
}
