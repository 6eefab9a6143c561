/* MMK_HEAP_HUGE: the mapping asks for huge pages (VmFlags hg, not rr; the
 * plain open the reverse), and everything the heap promises still holds
 * when the file's pages sit in the page cache as 2 MiB folios, mapped whole
 * where the kernel can: each dirty-tracking path finds exactly the written
 * pages, abort restores them, a stray write between transactions faults,
 * and another handle reads every committed byte. */
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

#define MB (1u << 20)
#define OBJ (12 * MB) /* six 2 MiB regions */
#define NPG (OBJ / 4096)

static const char *methods[] = {"scan", "pagemap", "wp", "uffd", NULL};

/* The VmFlags line of the mapping holding p, in buf; 0 or -1. */
static int vm_flags(const void *p, char *buf, size_t len)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[512];
    int in = 0, rc = -1;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            in = a >= lo && a < hi;
        else if (in && !strncmp(line, "VmFlags:", 8)) {
            snprintf(buf, len, "%s", line + 8);
            rc = 0;
            break;
        }
    }
    fclose(f);
    return rc;
}

static int has_flag(const char *flags, const char *f)
{
    char pad[600];
    snprintf(pad, sizeof pad, " %s ", flags);
    pad[strcspn(pad, "\n")] = ' ';
    char want[8];
    snprintf(want, sizeof want, " %s ", f);
    return strstr(pad, want) != NULL;
}

static long file_pmd_kb(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    long kb = -1;
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "FilePmdMapped: %ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static void drop_cache(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    CHECK_OK(fdatasync(fd));
    CHECK_OK(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED));
    close(fd);
}

static unsigned char expect_byte(uint64_t page, uint64_t gen) { return (unsigned char)(page * 7 + gen + 1); }

static void stray(void *p) { *(volatile unsigned char *)p = 1; }

static uint64_t last_pages(mmk_heap *h)
{
    struct mmk_heap_stats st;
    CHECK_OK(mmk_heap_stats(h, &st));
    return st.last_pages;
}

static void run(const char *method, const char *dir)
{
    char path[700];
    snprintf(path, sizeof path, "%s/huge-%s.heap", dir, method ? method : "auto");
    if (method)
        setenv("MMK_HEAP_DIRTY", method, 1);
    else
        unsetenv("MMK_HEAP_DIRTY");
    mmk_heap *h;
    int rc = mmk_heap_open(path, MMK_HEAP_CREATE | MMK_HEAP_NOSYNC | MMK_HEAP_HUGE, &h);
    if (rc == -ENOTSUP || rc == -ENOTTY) {
        printf("%s: not available here (%s)\n", method, mmk_strerror(rc));
        return;
    }
    CHECK_OK(rc);
    mmk_ref obj;
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_heap_alloc(h, OBJ, &obj));
    CHECK_OK(mmk_heap_set_root(h, obj));
    unsigned char *b = mmk_heap_ptr(h, obj);
    for (uint64_t i = 0; i < NPG; i++)
        b[i * 4096 + i % 4000] = expect_byte(i, 0);
    CHECK_OK(mmk_heap_commit(h));
    mmk_heap_close(h);

    /* Cold again: the faults below read whole folios (2 MiB with THP). */
    drop_cache(path);
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_NOSYNC | MMK_HEAP_HUGE, &h));
    b = mmk_heap_ptr(h, mmk_heap_root(h));
    CHECK(b != NULL);
    char fl[600];
    CHECK_OK(vm_flags(b, fl, sizeof fl));
    CHECK(has_flag(fl, "hg"));
    CHECK(!has_flag(fl, "rr"));
    unsigned sum = 0;
    for (uint64_t i = 0; i < NPG; i++)
        sum += b[i * 4096 + i % 4000] == expect_byte(i, 0);
    CHECK_EQ(sum, NPG);
    printf("%s: FilePmdMapped after reading %u MiB cold: %ld kB\n", method ? method : "auto",
           OBJ / MB, file_pmd_kb());

    /* gen[i]: the generation of page i's marker byte */
    static uint8_t gen[NPG];
    memset(gen, 0, sizeof gen);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int t = 0; t < 6; t++) {
        /* a few scattered pages, then (t odd) enough to make the default
         * switch to the bulk scan */
        int want = t & 1 ? 700 : 29, written = 0;
        static uint8_t hit[NPG];
        memset(hit, 0, sizeof hit);
        CHECK_OK(mmk_heap_begin(h));
        while (written < want) {
            uint64_t i = test_rand(&seed) % NPG;
            if (hit[i])
                continue;
            hit[i] = 1;
            written++;
            b[i * 4096 + i % 4000] = expect_byte(i, ++gen[i]);
        }
        CHECK_OK(mmk_heap_commit(h));
        /* Exactly the written pages, the header and the checksum pages of
         * theirs (1024 entries a page; page 0 of the table covers the
         * others: docs/FORMAT.md): nothing missed, nothing extra. */
        int ck[8] = {0}, want_log = written + 1;
        for (uint64_t i = 0; i < NPG; i++)
            if (hit[i])
                ck[((obj >> 12) + i) / 1024] = 1;
        for (int k = 1; k < 8; k++)
            ck[0] |= ck[k];
        for (int k = 0; k < 8; k++)
            want_log += ck[k];
        CHECK_EQ(last_pages(h), (uint64_t)want_log);

        /* an aborted transaction leaves no trace */
        CHECK_OK(mmk_heap_begin(h));
        for (int k = 0; k < 50; k++) {
            uint64_t i = test_rand(&seed) % NPG;
            b[i * 4096 + i % 4000] ^= 0xff;
        }
        CHECK_OK(mmk_heap_abort(h));
        for (uint64_t i = 0; i < NPG; i++)
            if (b[i * 4096 + i % 4000] != expect_byte(i, gen[i])) {
                printf("page %llu: %u, want %u\n", (unsigned long long)i, b[i * 4096 + i % 4000],
                       expect_byte(i, gen[i]));
                CHECK(0);
            }
    }
    /* between transactions the mapping is read-only, huge or not */
    int st = run_child(stray, b + 5 * MB + 123);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);

    /* another handle, plain mapping, sees every committed byte */
    mmk_heap *r;
    unsetenv("MMK_HEAP_DIRTY");
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_RDONLY, &r));
    CHECK_OK(mmk_heap_read_begin(r));
    unsigned char *rb = mmk_heap_ptr(r, mmk_heap_root(r));
    CHECK_OK(vm_flags(rb, fl, sizeof fl));
    CHECK(has_flag(fl, "rr"));
    CHECK(!has_flag(fl, "hg"));
    for (uint64_t i = 0; i < NPG; i++)
        CHECK_EQ(rb[i * 4096 + i % 4000], expect_byte(i, gen[i]));
    mmk_heap_read_end(r);
    CHECK_OK(mmk_heap_check(r));
    mmk_heap_close(r);
    CHECK_OK(mmk_heap_check(h));
    mmk_heap_close(h);
}

int main(void)
{
    /* Is MADV_HUGEPAGE there at all (CONFIG_TRANSPARENT_HUGEPAGE)? */
    void *p = mmap(NULL, 4 * MB, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    int thp = madvise(p, 4 * MB, MADV_HUGEPAGE) == 0;
    munmap(p, 4 * MB);
    if (!thp) {
        printf("skip: this kernel has no transparent huge pages (MADV_HUGEPAGE: %s)\n",
               strerror(errno));
        return 77;
    }
    const char *dir = test_tmpdir();
    for (size_t m = 0; m < sizeof methods / sizeof *methods; m++)
        run(methods[m], dir);
    rm_rf(dir);
    printf("ok\n");
    return 0;
}
