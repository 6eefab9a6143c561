/* Fuzz the heap's open, check and allocator on damaged files. The input
 * either patches a valid heap (a template with slabs, large objects and
 * free runs, built once) at chosen offsets, or replaces its first bytes
 * (header and metadata pages). Whatever the file holds, open/check/alloc/
 * free/abort must return errors, never crash, hang or leak. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mmkit/heap.h>

static unsigned char *tmpl;
static size_t tmpl_len;
static char path[256], logpath[300];

/* Overwrite in place: truncating and rewriting would make ext4 flush
 * (auto_da_alloc) and slow every input down. */
static void put_file(const char *p, const void *buf, size_t n)
{
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        abort();
    if (n && pwrite(fd, buf, n, 0) != (ssize_t)n)
        abort();
    if (ftruncate(fd, (off_t)n))
        abort();
    close(fd);
}

static void build_template(void)
{
    char dir[] = "/tmp/mmkit-fuzz-heap-XXXXXX";
    if (!mkdtemp(dir))
        abort();
    snprintf(path, sizeof path, "%s/h", dir);
    snprintf(logpath, sizeof logpath, "%s/h-log", dir);
    mmk_heap *h;
    if (mmk_heap_open(path, MMK_HEAP_CREATE | MMK_HEAP_NOSYNC, &h))
        abort();
    mmk_ref r[64];
    if (mmk_heap_begin(h))
        abort();
    for (int i = 0; i < 64; i++)
        if (mmk_heap_alloc(h, (size_t)(16 + i * 131 % 9000), &r[i]))
            abort();
    for (int i = 0; i < 64; i += 3)
        mmk_heap_free(h, r[i]);
    mmk_heap_set_root(h, r[1]);
    if (mmk_heap_commit(h))
        abort();
    mmk_heap_close(h);
    FILE *f = fopen(path, "rb");
    if (!f)
        abort();
    fseek(f, 0, SEEK_END);
    tmpl_len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    tmpl = malloc(tmpl_len);
    if (!tmpl || fread(tmpl, 1, tmpl_len, f) != tmpl_len)
        abort();
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tmpl)
        build_template();
    unsigned char *img = malloc(tmpl_len);
    if (!img)
        return 0;
    memcpy(img, tmpl, tmpl_len);
    size_t len = tmpl_len;
    if (size && (data[0] & 1)) {
        /* raw: the input replaces the start; bit 1 also truncates there */
        size_t n = size - 1 < len ? size - 1 : len;
        memcpy(img, data + 1, n);
        if (data[0] & 2)
            len = n;
    } else if (size) {
        /* patches: u32 offset (pages and bytes), u8 length, bytes */
        size_t i = 1;
        while (i + 5 <= size) {
            uint32_t off;
            memcpy(&off, data + i, 4);
            size_t n = data[i + 4];
            i += 5;
            if (n > size - i)
                n = size - i;
            off %= (uint32_t)len;
            if (n > len - off)
                n = len - off;
            memcpy(img + off, data + i, n);
            i += n;
        }
    }
    put_file(path, img, len);
    free(img);
    unlink(logpath);
    mmk_heap *h;
    if (mmk_heap_open(path, (size && data[0] & 4) ? MMK_HEAP_RDONLY : MMK_HEAP_NOSYNC, &h) == 0) {
        char msg[256];
        mmk_heap_check_report(h, msg, sizeof msg);
        struct mmk_heap_stats st;
        mmk_heap_stats(h, &st);
        if (mmk_heap_begin(h) == 0) {
            mmk_ref r = 0;
            static const size_t sizes[] = {16, 100, 2000, 5000, 70000};
            for (int i = 0; i < 5; i++)
                if (mmk_heap_alloc(h, sizes[i], &r) == 0)
                    mmk_heap_free(h, r);
            mmk_heap_free(h, mmk_heap_root(h));
            uint64_t guess = 0;
            if (size >= 9)
                memcpy(&guess, data + 1, 8);
            mmk_heap_free(h, guess % (st.size + 1));
            mmk_heap_abort(h);
        }
        mmk_heap_close(h);
    }
    return 0;
}
