/* A counter that survives crashes: run it, kill it (even with kill -9)
 * in the middle, run it again. Each run adds 1000, one durable commit each.
 * usage: example_heap_counter [FILE] */
#include <mmkit/mmkit.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "counter.mmk";
    mmk_heap *h;
    int rc = mmk_heap_open(path, MMK_HEAP_CREATE, &h);
    if (rc) {
        fprintf(stderr, "%s: %s\n", path, mmk_strerror(rc));
        return 1;
    }
    for (int i = 0; i < 1000 && rc == 0; i++) {
        if ((rc = mmk_heap_begin(h)))
            break;
        mmk_ref root = mmk_heap_root(h);
        if (!root) { /* first run: the counter lives at the root */
            if ((rc = mmk_heap_alloc(h, sizeof(uint64_t), &root)) ||
                (rc = mmk_heap_set_root(h, root))) {
                mmk_heap_abort(h);
                break;
            }
        }
        uint64_t *n = mmk_heap_ptr(h, root); /* a plain store, no call per write */
        ++*n;
        rc = mmk_heap_commit(h);
    }
    if (rc == 0 && (rc = mmk_heap_read_begin(h)) == 0) {
        printf("counter = %llu\n", (unsigned long long)*(uint64_t *)mmk_heap_ptr(h, mmk_heap_root(h)));
        mmk_heap_read_end(h);
    }
    if (rc)
        fprintf(stderr, "%s: %s\n", path, mmk_strerror(rc));
    mmk_heap_close(h);
    return rc ? 1 : 0;
}
