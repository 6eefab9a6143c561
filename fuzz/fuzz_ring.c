/* Fuzz target: the input is a hostile peer. Each step either writes bytes
 * the input chooses into the shared object (header words, positions,
 * wake-up words, record headers, data) or makes this side call the API
 * (untrusted mode). Invariants: no crash, no span longer than the capacity,
 * every byte of every span touchable, errors only from the documented set,
 * MMK_ECORRUPT sticky. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mmkit/mmkit.h>

struct in {
    const uint8_t *p;
    size_t n;
};

static uint64_t take(struct in *in, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; i++) {
        v <<= 8;
        if (in->n) {
            v |= *in->p++;
            in->n--;
        }
    }
    return v;
}

static volatile uint8_t sink;

static void touch(const void *p, size_t n)
{
    const uint8_t *c = p;
    uint8_t x = 0;
    for (size_t i = 0; i < n; i += 256)
        x ^= c[i];
    if (n)
        x ^= c[n - 1];
    sink = x;
}

static void check_code(long rc, int *broken)
{
    if (rc >= 0)
        return;
    if (rc == MMK_ECORRUPT) {
        *broken = 1;
        return;
    }
    if (*broken)
        abort(); /* MMK_ECORRUPT must be sticky */
    if (rc != -EAGAIN && rc != -EINVAL && rc != -EPIPE && rc != -ETIMEDOUT &&
        rc != -ECONNRESET && rc != -EBUSY && rc != -EMSGSIZE)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in in = {data, size};
    size_t page = mmk_page_size();
    mmk_ring *r;
    if (mmk_ring_create((1 + take(&in, 1) % 3) * page, MMK_RING_UNTRUSTED, &r))
        return 0;
    size_t cap = mmk_ring_capacity(r), objsize = cap + page;
    uint8_t *m = mmap(NULL, objsize, PROT_READ | PROT_WRITE, MAP_SHARED, mmk_ring_fd(r), 0);
    if (m == MAP_FAILED) {
        mmk_ring_destroy(r);
        return 0;
    }
    int broken = 0;
    char buf[512] = {0};
    for (int steps = 0; in.n && steps < 1024; steps++) {
        unsigned op = (unsigned)take(&in, 1);
        void *w;
        const void *q;
        long rc = 0;
        switch (op % 18) {
        case 0: { /* peer: a 64-bit value into a header word */
            size_t off = cap + (take(&in, 1) % 96) * 8;
            uint64_t v = take(&in, 8);
            memcpy(m + off, &v, 8);
            break;
        }
        case 1: { /* peer: move a position by a small signed amount */
            size_t off = cap + (take(&in, 1) & 1 ? 128 : 256);
            int64_t d = (int64_t)(int16_t)take(&in, 2);
            uint64_t v;
            memcpy(&v, m + off, 8);
            v += (uint64_t)d;
            memcpy(m + off, &v, 8);
            break;
        }
        case 2: { /* peer: a record header somewhere in the data */
            size_t off = (size_t)(take(&in, 2) * 8) % cap;
            uint64_t v = take(&in, 8);
            memcpy(m + off, &v, 8);
            break;
        }
        case 3: { /* peer: a well-formed record header of a chosen length */
            size_t off = (size_t)(take(&in, 2) * 8) % cap;
            uint32_t len = (uint32_t)take(&in, 4);
            uint64_t v = (uint64_t)len | (uint64_t)(len ^ 0x52454331u) << 32;
            memcpy(m + off, &v, 8);
            break;
        }
        case 4: { /* peer: raw bytes into the data */
            size_t off = (size_t)take(&in, 2) % cap, n = (size_t)take(&in, 1);
            for (size_t i = 0; i < n && in.n; i++)
                m[(off + i) % cap] = (uint8_t)take(&in, 1);
            break;
        }
        case 5: {
            ssize_t fr = mmk_ring_write_begin(r, &w);
            if (fr > 0) {
                if ((size_t)fr > cap)
                    abort();
                memset(w, 0xab, (size_t)fr);
                rc = mmk_ring_write_commit(r, (size_t)take(&in, 2) % ((size_t)fr + 2));
            } else {
                rc = fr;
            }
            break;
        }
        case 6: {
            ssize_t av = mmk_ring_read_begin(r, &q);
            if (av > 0) {
                if ((size_t)av > cap)
                    abort();
                touch(q, (size_t)av);
                rc = mmk_ring_read_commit(r, (size_t)take(&in, 2) % ((size_t)av + 2));
            } else {
                rc = av;
            }
            break;
        }
        case 7: {
            size_t len = (size_t)take(&in, 2) % (cap + 16);
            rc = mmk_ring_rec_reserve(r, len, &w);
            if (rc == 0) {
                memset(w, 0xcd, len);
                rc = take(&in, 1) & 1 ? mmk_ring_rec_discard(r)
                                      : mmk_ring_rec_commit(r, len - len / 3);
            }
            break;
        }
        case 8: {
            ssize_t l = mmk_ring_rec_peek(r, &q);
            if (l >= 0) {
                if ((size_t)l + 8 > cap)
                    abort();
                touch(q, (size_t)l);
                rc = mmk_ring_rec_release(r);
            } else {
                rc = l;
            }
            break;
        }
        case 9:
            rc = mmk_ring_write(r, buf, (size_t)take(&in, 2) % sizeof buf, 0);
            break;
        case 10: {
            ssize_t n = mmk_ring_read(r, buf, 1 + (size_t)take(&in, 2) % sizeof buf, 0);
            if (n > (ssize_t)sizeof buf)
                abort();
            rc = n;
            break;
        }
        case 11:
            rc = mmk_ring_wait_readable(r, 1 + (size_t)take(&in, 2) % cap, 0);
            break;
        case 12:
            rc = mmk_ring_wait_writable(r, 1 + (size_t)take(&in, 2) % cap, 0);
            break;
        case 13:
            rc = mmk_ring_poll_prepare(r, take(&in, 1) & 1 ? MMK_RING_READABLE
                                                           : MMK_RING_WRITABLE);
            break;
        case 14: { /* a second untrusting handle on what the peer left */
            mmk_ring *b;
            int a = mmk_ring_attach(mmk_ring_fd(r), MMK_RING_UNTRUSTED, &b);
            if (a == 0) {
                if (mmk_ring_read_begin(b, &q) > (ssize_t)cap)
                    abort();
                mmk_ring_destroy(b);
            } else if (a != MMK_ECORRUPT && a != MMK_EFORMAT) {
                abort();
            }
            break;
        }
        case 15: { /* batched producer: reserve many, publish a part */
            void *ws[16];
            size_t len = (size_t)take(&in, 2) % (cap + 16);
            ssize_t n = mmk_ring_rec_reserve_n(r, len, 1 + (size_t)take(&in, 1) % 16, ws);
            if (n > 0) {
                if ((size_t)n > 16 || (size_t)n * mmk_ring_record_space(len) > cap)
                    abort();
                for (ssize_t i = 0; i < n; i++)
                    memset(ws[i], 0xef, len);
                rc = mmk_ring_rec_commit_n(r, (size_t)take(&in, 1) % ((size_t)n + 2));
            } else {
                rc = n;
            }
            break;
        }
        case 16: { /* batched consumer: peek many, release a part */
            struct mmk_ring_rec out[16];
            ssize_t n = mmk_ring_rec_peek_batch(r, out, 1 + (size_t)take(&in, 1) % 16);
            if (n > 0) {
                size_t total = 0;
                if (n > 16)
                    abort();
                for (ssize_t i = 0; i < n; i++) {
                    total += mmk_ring_record_space(out[i].len);
                    touch(out[i].data, out[i].len);
                }
                if (total > cap)
                    abort();
                rc = mmk_ring_rec_release_n(r, (size_t)take(&in, 1) % ((size_t)n + 2));
            } else {
                rc = n;
            }
            break;
        }
        default:
            rc = mmk_ring_close_write(r);
            break;
        }
        check_code(rc, &broken);
    }
    munmap(m, objsize);
    mmk_ring_destroy(r);
    return 0;
}
