/* Fuzz the heap's open, recovery, check and allocator on damaged files.
 * The input either patches a valid heap (a template with slabs, large
 * objects and free runs, built once) at chosen offsets, or replaces its
 * first bytes (header and metadata pages), or (bit 3) patches the redo log
 * holding a commit still to replay (bit 4: as after a reboot, so the whole
 * log is replayed); bit 5 opens with MMK_HEAP_HUGE. Whatever the file holds, open/check/alloc/
 * free/abort must return errors, never crash, hang or leak. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mmkit/heap.h>
#include "heap_io.h"

static unsigned char *tmpl, *tmpl_log;
static size_t tmpl_len, tmpl_log_len;
static int new_boot;

/* Boot id hook: bit 4 of the input says "the machine rebooted", which makes
 * open replay the whole log from its base. */
static int fuzz_boot(uint8_t out[16])
{
    int rc = mmk__heap_io_default.boot_id(out);
    if (new_boot)
        out[0] ^= 0xff;
    return rc;
}
static const struct mmk__heap_io fuzz_io = {.boot_id = fuzz_boot};
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

static unsigned char *slurp(const char *p, size_t *len)
{
    FILE *f = fopen(p, "rb");
    if (!f)
        abort();
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*len ? *len : 1);
    if (!b || fread(b, 1, *len, f) != *len)
        abort();
    fclose(f);
    return b;
}

/* The template: the heap file after commit 1 and the log after commit 2,
 * so opening it replays commit 2 from the log (the recovery path). */
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
    tmpl = slurp(path, &tmpl_len);
    if (mmk_heap_begin(h))
        abort();
    for (int i = 0; i < 64; i += 3)
        if (mmk_heap_alloc(h, (size_t)(100 + i * 977 % 20000), &r[i]))
            abort();
    for (int i = 1; i < 64; i += 3)
        mmk_heap_free(h, r[i]);
    if (mmk_heap_commit(h))
        abort();
    mmk_heap_close(h);
    tmpl_log = slurp(logpath, &tmpl_log_len);
    while (tmpl_log_len && !tmpl_log[tmpl_log_len - 1]) /* drop the zeroed tail */
        tmpl_log_len--;
    tmpl_log_len = (tmpl_log_len + 4095) / 4096 * 4096; /* records are 4 KiB-aligned */
    mmk__heap_io_set_hooks(&fuzz_io);
}

static void patch(unsigned char *img, size_t len, const uint8_t *data, size_t size)
{
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
    } else if (size && !(data[0] & 8)) {
        /* patches: u32 offset (pages and bytes), u8 length, bytes */
        patch(img, len, data, size);
    }
    put_file(path, img, len);
    free(img);
    new_boot = size && (data[0] & 16);
    if (size && (data[0] & 8)) {
        /* the log is the target: the same patches on the template log */
        unsigned char *lg = malloc(tmpl_log_len);
        if (!lg)
            return 0;
        memcpy(lg, tmpl_log, tmpl_log_len);
        patch(lg, tmpl_log_len, data, size);
        put_file(logpath, lg, tmpl_log_len);
        free(lg);
    } else {
        unlink(logpath);
    }
    mmk_heap *h;
    unsigned oflags = (size && data[0] & 4) ? MMK_HEAP_RDONLY : MMK_HEAP_NOSYNC;
    if (size && (data[0] & 32))
        oflags |= MMK_HEAP_HUGE; /* the same checks over a huge-page mapping */
    int orc = mmk_heap_open(path, oflags, &h);
    if (size == 1 && (data[0] & ~48) == 8 && orc != 0)
        abort(); /* the untouched template must recover */
    if (orc == 0) {
        char msg[256];
        int crc = mmk_heap_check_report(h, msg, sizeof msg);
        struct mmk_heap_stats st;
        mmk_heap_stats(h, &st);
        if (size == 1 && (data[0] & ~48) == 8 && (crc != 0 || st.commit_id != 2))
            abort(); /* ... to commit 2, intact */
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
