/* mmk heap info|check FILE: describe and verify a persistent heap file. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mmkit/mmkit.h>
#include "heap_internal.h"
#include "mmk.h"

static const char heap_usage[] =
    "usage: mmk heap info FILE    format, sizes, commit count, free space\n"
    "       mmk heap check FILE   full verification: header, the checksum of every\n"
    "                             page, the allocator's structures\n"
    "\n"
    "FILE is an mmkit heap (its redo log is FILE-log). A commit interrupted by a\n"
    "crash is recovered first (that needs write access; otherwise exit 2).\n"
    "Exit status: 0 intact, 1 corrupt or not a heap (what and where on stderr),\n"
    "2 any other error.\n";

/* Why a file fails to open as a heap, from its header. */
static void explain(const char *file)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct hp_header hd;
    struct stat st;
    char why[200] = "";
    ssize_t n = pread(fd, &hd, sizeof hd, 0);
    if (fstat(fd, &st) == 0 && n == (ssize_t)sizeof hd)
        mmk__hp_header_valid(&hd, (uint64_t)st.st_size, why, sizeof why);
    else
        snprintf(why, sizeof why, "file too short for a heap header (%lld bytes)",
                 (long long)st.st_size);
    close(fd);
    if (why[0])
        fprintf(stderr, "mmk heap: %s: %s\n", file, why);
}

static int open_heap(const char *file, mmk_heap **h)
{
    int rc = mmk_heap_open(file, MMK_HEAP_RDONLY, h);
    if (rc == -EROFS) {
        /* a crashed commit waits in the log: recover it */
        rc = mmk_heap_open(file, 0, h);
        if (rc == 0)
            fprintf(stderr, "mmk heap: %s: recovered a commit interrupted by a crash\n", file);
    }
    if (rc == 0)
        return 0;
    if (rc == MMK_ECORRUPT || rc == MMK_EFORMAT) {
        fprintf(stderr, "mmk heap: %s: %s\n", file,
                rc == MMK_EFORMAT ? "not an mmkit heap, or one of an incompatible format"
                                  : "damaged");
        explain(file);
        return 1;
    }
    fprintf(stderr, "mmk heap: %s: %s\n", file, mmk_strerror(rc));
    return 2;
}

static int info(const char *file)
{
    mmk_heap *h;
    int rc = open_heap(file, &h);
    if (rc)
        return rc;
    struct mmk_heap_stats s;
    rc = mmk_heap_read_begin(h);
    if (rc == 0)
        rc = mmk_heap_stats(h, &s);
    if (rc) {
        fprintf(stderr, "mmk heap: %s: %s\n", file, mmk_strerror(rc));
        mmk_heap_close(h);
        return rc == MMK_ECORRUPT ? 1 : 2;
    }
    const struct hp_header *hd = mmk_heap_ptr(h, 1) ? (const void *)((char *)mmk_heap_ptr(h, 1) - 1)
                                                    : NULL;
    struct stat st;
    stat(file, &st);
    char b1[32], b2[32], b3[32], b4[32];
    printf("file            %s\n", file);
    printf("format          mmkit heap v%u, %u-byte pages, %u-bit pointers, %s-endian\n",
           hd ? hd->version : 0, hd ? hd->page_size : 0, hd ? hd->ptr_width : 0,
           hd && hd->bom == HP_BOM ? "little" : "?");
    printf("size            %s (%s on disk)\n", mmk_fmt_bytes((double)s.size, b1, sizeof b1),
           mmk_fmt_bytes((double)st.st_blocks * 512, b2, sizeof b2));
    printf("commits         %llu\n", (unsigned long long)s.commit_id);
    printf("root            %#llx\n", (unsigned long long)mmk_heap_root(h));
    printf("schema          %llu\n", (unsigned long long)mmk_heap_schema(h));
    printf("objects         %llu, %s used\n", (unsigned long long)s.objects,
           mmk_fmt_bytes((double)s.used, b1, sizeof b1));
    printf("free            %s in page runs (largest %s), %s in slabs\n",
           mmk_fmt_bytes((double)s.free, b2, sizeof b2),
           mmk_fmt_bytes((double)s.largest_free, b3, sizeof b3),
           mmk_fmt_bytes((double)s.slab_free, b4, sizeof b4));
    printf("metadata        %s (header, checksums, page descriptors)\n",
           mmk_fmt_bytes((double)s.meta, b1, sizeof b1));
    printf("redo log        %s since the last checkpoint\n",
           mmk_fmt_bytes((double)s.log_bytes, b1, sizeof b1));
    if (hd)
        printf("created at      %#llx (MMK_HEAP_FIXED maps there)\n",
               (unsigned long long)hd->map_addr);
    mmk_heap_read_end(h);
    mmk_heap_close(h);
    return 0;
}

static int check(const char *file)
{
    mmk_heap *h;
    int rc = open_heap(file, &h);
    if (rc)
        return rc;
    char msg[256];
    double t0 = mmk_now();
    rc = mmk_heap_check_report(h, msg, sizeof msg);
    double dt = mmk_now() - t0;
    struct mmk_heap_stats s;
    mmk_heap_stats(h, &s);
    mmk_heap_close(h);
    if (rc == MMK_ECORRUPT) {
        fprintf(stderr, "mmk heap: %s: CORRUPT: %s\n", file, msg);
        return 1;
    }
    if (rc) {
        fprintf(stderr, "mmk heap: %s: %s\n", file, mmk_strerror(rc));
        return 2;
    }
    char b[32];
    printf("%s: intact (%s, %llu pages checksummed, commit %llu) in %.1f ms\n", file,
           mmk_fmt_bytes((double)s.size, b, sizeof b), (unsigned long long)(s.size / 4096),
           (unsigned long long)s.commit_id, dt * 1e3);
    return 0;
}

int mmk_cmd_heap(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(heap_usage, stdout);
        return 0;
    }
    if (argc == 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
        fputs(heap_usage, stdout);
        return 0;
    }
    if (argc != 3) {
        fputs(heap_usage, stderr);
        return 2;
    }
    if (!strcmp(argv[1], "info"))
        return info(argv[2]);
    if (!strcmp(argv[1], "check"))
        return check(argv[2]);
    fprintf(stderr, "mmk heap: unknown subcommand '%s'\n%s", argv[1], heap_usage);
    return 2;
}
