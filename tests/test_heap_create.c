/* Creating a heap over what a crash inside mmk_heap_open(MMK_HEAP_CREATE)
 * leaves behind starts afresh; anything else at the path is never clobbered.
 * (The power-loss harness crashes creation at every write; this checks the
 * boundaries of what counts as "creation cut short".) */
#include <fcntl.h>
#include <sys/stat.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

static char path[600], logpath[610];

static void write_file(const char *p, const void *buf, size_t n, off_t size)
{
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK(write(fd, buf, n) == (ssize_t)n);
    if (size)
        CHECK(ftruncate(fd, size) == 0);
    close(fd);
}

static void reset(void)
{
    unlink(path);
    unlink(logpath);
}

int main(void)
{
    snprintf(path, sizeof path, "%s/h.mmk", test_tmpdir());
    snprintf(logpath, sizeof logpath, "%s-log", path);
    mmk_heap *h;

    /* A foreign small file: MMK_EFORMAT, and its bytes untouched. */
    reset();
    static const char text[] = "not a heap, just somebody's notes\n";
    write_file(path, text, sizeof text - 1, 0);
    CHECK_EQ(mmk_heap_open(path, MMK_HEAP_CREATE, &h), MMK_EFORMAT);
    char back[64] = {0};
    int fd = open(path, O_RDONLY);
    CHECK(read(fd, back, sizeof back) == (ssize_t)sizeof text - 1);
    close(fd);
    CHECK(memcmp(back, text, sizeof text - 1) == 0);

    /* A file of zeros with no log (creation cut before any page landed):
     * created afresh with CREATE, refused without. */
    reset();
    static char zeros[4096];
    write_file(path, zeros, sizeof zeros, 1 << 20);
    CHECK(mmk_heap_open(path, 0, &h) < 0);
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE, &h));
    CHECK_OK(mmk_heap_check(h));
    mmk_heap_close(h);

    /* A torn header (magic present, checksum wrong), no log: afresh. */
    reset();
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE, &h));
    mmk_heap_close(h);
    unlink(logpath);
    fd = open(path, O_RDWR);
    CHECK(pwrite(fd, zeros, 512, 512) == 512); /* the second sector never landed */
    close(fd);
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE, &h));
    CHECK_OK(mmk_heap_check(h));
    mmk_heap_close(h);

    /* A torn header the other way round (first sector lost, second landed). */
    reset();
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE, &h));
    mmk_heap_close(h);
    unlink(logpath);
    fd = open(path, O_RDWR);
    CHECK(pwrite(fd, zeros, 512, 0) == 512);
    close(fd);
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE, &h));
    CHECK_OK(mmk_heap_check(h));
    mmk_heap_close(h);

    /* A foreign file starting with zeros, with data further into its first
     * page than a header reaches: untouched. */
    reset();
    static char blob[8192];
    memset(blob + 2000, 'x', 100);
    write_file(path, blob, sizeof blob, 0);
    CHECK_EQ(mmk_heap_open(path, MMK_HEAP_CREATE, &h), MMK_EFORMAT);
    fd = open(path, O_RDONLY);
    CHECK(pread(fd, back, 1, 2000) == 1 && back[0] == 'x');
    close(fd);

    /* A heap with a commit is never recreated, with or without its log. */
    reset();
    mmk_ref r;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE, &h));
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_heap_alloc(h, 64, &r));
    strcpy(mmk_heap_ptr(h, r), "kept");
    CHECK_OK(mmk_heap_set_root(h, r));
    CHECK_OK(mmk_heap_commit(h));
    mmk_heap_close(h);
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE, &h));
    CHECK(mmk_heap_root(h) == r && strcmp(mmk_heap_ptr(h, mmk_heap_root(h)), "kept") == 0);
    mmk_heap_close(h);

    rm_rf(test_tmpdir());
    printf("heap_create: all checks passed\n");
    return 0;
}
