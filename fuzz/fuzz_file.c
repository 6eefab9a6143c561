/* Fuzz target: mmk_file against a model. The input is a list of 8-byte
 * operations (write_at, read_at, resize, sync, reopen, and changes made
 * behind the handle's back through another descriptor: truncation, to a
 * page multiple or into a page, and pwrite growth) on a fresh file, with
 * either policy. A shadow copy of the file predicts every result: counts,
 * bytes, and when a fault must give -EFAULT (the handle still believes in
 * bytes another descriptor cut off, also inside the last page). Bytes a
 * faulted write may have half-written are marked unknown; bytes past the
 * end of file must never show anything but zeros, also after the file
 * grows again. Any mismatch aborts. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mmkit/mmkit.h>

#define CAP ((size_t)192 << 10)
#define MAX_OPS 48

__attribute__((visibility("default"))) const char *__asan_default_options(void)
{
    return "allow_user_segv_handler=1:handle_segv=0:handle_sigbus=0";
}

static unsigned char shadow[CAP], known[CAP], buf[CAP];
static size_t real; /* the file's true size */

#define FAIL(...)                                                                        \
    do {                                                                                 \
        fprintf(stderr, "fuzz_file: " __VA_ARGS__);                                      \
        fputc('\n', stderr);                                                             \
        abort();                                                                         \
    } while (0)

/* The file grows from `real` to `to`: zeros. */
static void model_extend(size_t to)
{
    memset(shadow + real, 0, to - real);
    memset(known + real, 1, to - real);
    real = to;
}

static void model_write(size_t off, const unsigned char *d, size_t len)
{
    if (off + len > real)
        model_extend(off + len);
    memcpy(shadow + off, d, len);
    memset(known + off, 1, len);
}

static void model_resize(size_t to)
{
    if (to > real)
        model_extend(to);
    else
        real = to;
}

static size_t rup(size_t x, size_t page) { return (x + page - 1) / page * page; }

static void check_bytes(size_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (known[off + i] && buf[i] != shadow[off + i])
            FAIL("byte %zu: read %u, expected %u", off + i, buf[i], shadow[off + i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned policy = data[0] & 1 ? MMK_FILE_PREAD : MMK_FILE_MMAP;
    const size_t page = mmk_page_size();
    char path[256];
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(path, sizeof path, "%s/mmk-fuzz-file-%d", dir, (int)getpid());
    mmk_file *f;
    /* A small reservation: the default 64 GiB costs ASan a lot of shadow
     * work per open and close. */
    const struct mmk_file_opts opts = {.reserve = (uint64_t)4 << 20};
    if (mmk_file_open_opts(path, MMK_FILE_CREATE | MMK_FILE_TRUNC | policy, &opts, &f))
        FAIL("open");
    int fd2 = open(path, O_RDWR | O_CLOEXEC);
    if (fd2 < 0)
        FAIL("open fd2");
    /* Sanitizer builds run the replay with MMK_TEST_SCALE < 1: fewer ops. */
    static size_t max_ops;
    if (!max_ops) {
        const char *sc = getenv("MMK_TEST_SCALE");
        double v = sc ? atof(sc) : 1.0;
        max_ops = v > 0 && v < 1 ? (size_t)(MAX_OPS * v) + 4 : MAX_OPS;
    }
    real = 0;
    data++, size--;
    for (size_t k = 0; k < max_ops && size >= 8; k++, data += 8, size -= 8) {
        size_t off = ((size_t)data[1] | (size_t)data[2] << 8 | (size_t)data[3] << 16) % (CAP / 2);
        size_t len = ((size_t)data[4] | (size_t)data[5] << 8) % (CAP / 4);
        if (data[7] & 1)
            len %= 300; /* many small ones */
        unsigned char seed = data[6];
        size_t cached = (size_t)mmk_file_size(f);
        switch (data[0] % 8) {
        case 0:
        case 1: { /* write_at */
            for (size_t i = 0; i < len; i++)
                buf[i] = (unsigned char)(seed + i * 31);
            ssize_t r = mmk_file_write_at(f, buf, len, off);
            int stale = policy == MMK_FILE_MMAP && len && off + len <= cached && off + len > real;
            if (stale) {
                /* Also inside the last page, where the store itself does
                 * not fault: the handle checks the size after storing. */
                if (r != -EFAULT)
                    FAIL("write_at(%zu, %zu) past a cut: %zd, expected -EFAULT", off, len, r);
                if (off < real) /* the part before the cut may be written */
                    memset(known + off, 0, real - off);
            } else {
                if (r != (ssize_t)len)
                    FAIL("write_at(%zu, %zu): %zd", off, len, r);
                if (len)
                    model_write(off, buf, len);
            }
            break;
        }
        case 2:
        case 3: { /* read_at */
            memset(buf, 0xee, len);
            ssize_t r = mmk_file_read_at(f, buf, len, off);
            int stale = policy == MMK_FILE_MMAP && len && off + len <= cached && off + len > real;
            size_t expect = off >= real ? 0 : (len < real - off ? len : real - off);
            if (stale && off + len <= rup(real, page)) {
                /* The last page's tail beyond the end reads as zeros. */
                if (r != (ssize_t)len)
                    FAIL("read_at(%zu, %zu) in the last page's tail: %zd", off, len, r);
                check_bytes(off, expect);
                for (size_t i = expect; i < len; i++)
                    if (buf[i] != 0)
                        FAIL("tail byte %zu not zero: %u", off + i, buf[i]);
            } else if (stale) {
                if (r != -EFAULT)
                    FAIL("read_at(%zu, %zu) past a cut (known %zu, real %zu): %zd", off, len,
                         cached, real, r);
            } else {
                if (r != (ssize_t)expect)
                    FAIL("read_at(%zu, %zu) (known %zu, real %zu): %zd, expected %zu", off, len,
                         cached, real, r, expect);
                check_bytes(off, expect);
            }
            break;
        }
        case 4: /* resize */
            if (mmk_file_resize(f, off))
                FAIL("resize(%zu)", off);
            model_resize(off);
            if (mmk_file_size(f) != off)
                FAIL("size after resize");
            break;
        case 5: /* someone else truncates (or extends), mostly to a page
                 * multiple, sometimes into the middle of a page */
            if (!(seed & 6))
                off -= off % page;
            if (ftruncate(fd2, (off_t)off))
                FAIL("ftruncate");
            model_resize(off);
            break;
        case 6: /* someone else writes, maybe past the end */
            for (size_t i = 0; i < len; i++)
                buf[i] = (unsigned char)(seed ^ (i * 7));
            if (pwrite(fd2, buf, len, (off_t)off) != (ssize_t)len)
                FAIL("pwrite");
            if (len)
                model_write(off, buf, len);
            break;
        default: /* sync now and then, else reopen */
            if (seed & 1) {
                if (mmk_file_sync(f))
                    FAIL("sync");
            } else {
                mmk_file_close(f);
                if (mmk_file_open_opts(path, MMK_FILE_RDWR | policy, &opts, &f))
                    FAIL("reopen");
                if (mmk_file_size(f) != real)
                    FAIL("size after reopen: %llu, real %zu",
                         (unsigned long long)mmk_file_size(f), real);
            }
        }
    }
    mmk_file_close(f);
    close(fd2);
    unlink(path);
    return 0;
}
