/* Two threads and a magic ring: the producer writes variable-length
 * records straight into the ring, the consumer reads them in place; no
 * record is ever split at the end of the buffer. */
#include <mmkit/mmkit.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static void *producer(void *arg)
{
    mmk_ring *r = arg;
    for (int i = 0; i < 100000; i++) {
        char msg[64];
        int len = snprintf(msg, sizeof msg, "record %d", i);
        void *rec;
        while (mmk_ring_rec_reserve(r, (size_t)len, &rec) == -EAGAIN)
            mmk_ring_wait_writable(r, mmk_ring_record_space((size_t)len), 1000);
        memcpy(rec, msg, (size_t)len);
        mmk_ring_rec_commit(r, (size_t)len);
    }
    mmk_ring_close_write(r); /* the consumer drains, then sees -EPIPE */
    return NULL;
}

int main(void)
{
    mmk_ring *r;
    int rc = mmk_ring_create(64 << 10, 0, &r);
    if (rc) {
        fprintf(stderr, "ring: %s\n", mmk_strerror(rc));
        return 1;
    }
    pthread_t t;
    pthread_create(&t, NULL, producer, r);
    long n = 0, bytes = 0;
    for (;;) {
        const void *rec;
        ssize_t len = mmk_ring_rec_peek(r, &rec);
        if (len >= 0) { /* a record (0 bytes is a valid, empty one) */
            n++;
            bytes += len;
            mmk_ring_rec_release(r);
        } else if (len == -EAGAIN) {
            if (mmk_ring_wait_readable(r, 1, 1000) == -EPIPE)
                break;
        } else {
            fprintf(stderr, "peek: %s\n", mmk_strerror((int)len));
            break;
        }
    }
    pthread_join(t, NULL);
    printf("%ld records, %ld bytes, none split\n", n, bytes);
    mmk_ring_destroy(r);
    return n == 100000 ? 0 : 1;
}
