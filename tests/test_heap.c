/* heap.h basics: create, transactions, allocator, root, schema, reopen,
 * abort undoes every byte, bad arguments, bad refs, stats, check, forked
 * handle, read-only, stray writes fault, typed refs. */
#include <fcntl.h>
#include <setjmp.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

static char path[600];

struct node {
    uint64_t value;
    mmk_ref next;
};
struct leaf {
    uint32_t x;
};
MMK_REF_TYPE(node_ref, struct node);
MMK_REF_TYPE(leaf_ref, struct leaf);

static void test_create_commit_reopen(void)
{
    mmk_heap *h = NULL;
    CHECK_EQ(mmk_heap_open(path, 0, &h), -ENOENT);
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_CREATE, &h));
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK_EQ(mmk_heap_root(h), 0);
    CHECK_EQ(mmk_heap_schema(h), 0);
    CHECK_OK(mmk_heap_check(h));
    mmk_ref r;
    CHECK_EQ(mmk_heap_alloc(h, 16, &r), -EINVAL); /* outside a transaction */
    CHECK_OK(mmk_heap_begin(h));
    CHECK_EQ(mmk_heap_begin(h), -EBUSY);
    CHECK_EQ(mmk_heap_alloc(h, 0, &r), -EINVAL);
    node_ref head = {0};
    for (int i = 0; i < 100; i++) {
        node_ref n;
        CHECK_OK(MMK_ALLOC(h, n));
        struct node *p = MMK_PTR(h, n);
        CHECK(p && p->value == 0 && p->next == 0);
        CHECK_EQ((uintptr_t)p % 16, 0);
        p->value = (uint64_t)i;
        p->next = head.r;
        head = n;
    }
    CHECK_OK(mmk_heap_set_root(h, head.r));
    CHECK_OK(mmk_heap_set_schema(h, 7));
    mmk_ref big;
    CHECK_OK(mmk_heap_alloc(h, 3 << 20, &big));
    unsigned char *b = mmk_heap_ptr(h, big);
    CHECK(b && ((uintptr_t)b & 4095) == 0);
    for (size_t i = 0; i < (3u << 20); i += 4096)
        CHECK(b[i] == 0);
    memset(b, 0x5a, 3 << 20);
    CHECK_OK(mmk_heap_commit(h));
    CHECK_EQ(mmk_heap_ref(h, b), big);
    CHECK_EQ(mmk_heap_ref(h, &r), 0);
    struct mmk_heap_stats s;
    CHECK_OK(mmk_heap_stats(h, &s));
    CHECK_EQ(s.commit_id, 1);
    CHECK_EQ(s.objects, 101);
    CHECK(s.used >= 100 * 16 + (3u << 20));
    printf("dirty tracking: %s, size %llu, used %llu, free %llu\n", s.dirty_method,
           (unsigned long long)s.size, (unsigned long long)s.used, (unsigned long long)s.free);
    CHECK_OK(mmk_heap_check(h));
    mmk_heap_close(h);

    CHECK_OK(mmk_heap_open(path, 0, &h));
    CHECK_EQ(mmk_heap_schema(h), 7);
    node_ref n = {.r = mmk_heap_root(h)};
    for (int i = 99; i >= 0; i--) {
        struct node *p = MMK_PTR(h, n);
        CHECK(p);
        CHECK_EQ(p->value, i);
        n.r = p->next;
    }
    CHECK_EQ(n.r, 0);
    b = mmk_heap_ptr(h, big);
    for (size_t i = 0; i < (3u << 20); i += 999)
        CHECK_EQ(b[i], 0x5a);
    CHECK_OK(mmk_heap_check(h));
    mmk_heap_close(h);
}

static void test_abort_undoes(void)
{
    mmk_heap *h;
    CHECK_OK(mmk_heap_open(path, 0, &h));
    mmk_ref root = mmk_heap_root(h);
    struct mmk_heap_stats s0, s1;
    CHECK_OK(mmk_heap_stats(h, &s0));
    /* Snapshot the whole heap, scribble everywhere, allocate, abort. */
    size_t size = s0.size;
    unsigned char *copy = malloc(size);
    memcpy(copy, mmk_heap_ptr(h, 0 + 1) - 1, size);
    CHECK_OK(mmk_heap_begin(h));
    unsigned char *base = (unsigned char *)mmk_heap_ptr(h, 1) - 1;
    mmk_ref r;
    for (int i = 0; i < 50; i++)
        CHECK_OK(mmk_heap_alloc(h, 100 + i * 300, &r));
    CHECK_OK(mmk_heap_alloc(h, 64 << 20, &r)); /* forces growth */
    CHECK_OK(mmk_heap_set_root(h, 0));
    for (size_t i = 65 * 4096; i < size; i += 4096 + 8)
        base[i] ^= 0xff;
    CHECK_OK(mmk_heap_abort(h));
    CHECK_EQ(mmk_heap_root(h), root);
    CHECK(memcmp(copy, base, size) == 0);
    CHECK_OK(mmk_heap_stats(h, &s1));
    CHECK_EQ(s1.size, s0.size);
    CHECK_EQ(s1.used, s0.used);
    CHECK_EQ(s1.commit_id, s0.commit_id);
    CHECK_OK(mmk_heap_check(h));
    /* An empty transaction commits nothing. */
    CHECK_OK(mmk_heap_begin(h));
    CHECK_OK(mmk_heap_commit(h));
    CHECK_OK(mmk_heap_stats(h, &s1));
    CHECK_EQ(s1.commit_id, s0.commit_id);
    free(copy);
    mmk_heap_close(h);
}

static void test_free_and_bad_refs(void)
{
    mmk_heap *h;
    CHECK_OK(mmk_heap_open(path, 0, &h));
    struct mmk_heap_stats s0, s1;
    CHECK_OK(mmk_heap_stats(h, &s0));
    CHECK_OK(mmk_heap_begin(h));
    mmk_ref refs[300];
    for (int i = 0; i < 300; i++)
        CHECK_OK(mmk_heap_alloc(h, (size_t)(1 + (i * 37) % 9000), &refs[i]));
    CHECK_EQ(mmk_heap_free(h, 0), -EINVAL);
    CHECK_EQ(mmk_heap_free(h, refs[0] + 1), -EINVAL);
    CHECK_EQ(mmk_heap_free(h, 8), -EINVAL);              /* header */
    CHECK_EQ(mmk_heap_free(h, (mmk_ref)1 << 50), -EINVAL);
    for (int i = 0; i < 300; i++)
        CHECK_OK(mmk_heap_free(h, refs[i]));
    CHECK_EQ(mmk_heap_free(h, refs[5]), -EINVAL);        /* double free */
    CHECK_EQ(mmk_heap_free(h, refs[299]), -EINVAL);
    CHECK_OK(mmk_heap_commit(h));
    CHECK_OK(mmk_heap_stats(h, &s1));
    CHECK_EQ(s1.used, s0.used);
    CHECK_EQ(s1.objects, s0.objects);
    s0 = s1; /* the size after the first round */
    CHECK_OK(mmk_heap_check(h));
    /* Reuse: the same allocations again fit without growing. */
    CHECK_OK(mmk_heap_begin(h));
    for (int i = 0; i < 300; i++)
        CHECK_OK(mmk_heap_alloc(h, (size_t)(1 + (i * 37) % 9000), &refs[i]));
    CHECK_OK(mmk_heap_commit(h));
    CHECK_OK(mmk_heap_stats(h, &s1));
    CHECK_EQ(s1.size, s0.size);
    CHECK_OK(mmk_heap_check(h));
    CHECK_EQ(mmk_heap_alloc(h, (size_t)1 << 40, &refs[0]), -EINVAL);
    CHECK_OK(mmk_heap_begin(h));
    CHECK_EQ(mmk_heap_alloc(h, mmk_heap_max_alloc() + 1, &refs[0]), -EFBIG);
    CHECK_OK(mmk_heap_abort(h));
    mmk_heap_close(h);
}

static void child_uses_parent(void *arg)
{
    mmk_heap *h = arg;
    _exit(mmk_heap_begin(h) == -ECHILD && mmk_heap_read_begin(h) == -ECHILD ? 0 : 1);
}

static void child_stray_write(void *arg)
{
    mmk_heap *h = arg;
    volatile unsigned char *p = mmk_heap_ptr(h, mmk_heap_root(h));
    p[0] = 1; /* between transactions: must fault */
    _exit(0);
}

static void test_processes_and_protection(void)
{
    mmk_heap *h;
    CHECK_OK(mmk_heap_open(path, 0, &h));
    int st = run_child(child_uses_parent, h);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    st = run_child(child_stray_write, h);
#ifdef MMK_SANITIZE_BUILD
    CHECK(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) != 0)); /* sanitizer reports it */
#else
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
#endif
    mmk_heap_close(h);

    mmk_heap *ro;
    CHECK_OK(mmk_heap_open(path, MMK_HEAP_RDONLY, &ro));
    CHECK_EQ(mmk_heap_begin(ro), -EROFS);
    CHECK_OK(mmk_heap_read_begin(ro));
    CHECK_EQ(mmk_heap_read_begin(ro), -EBUSY);
    CHECK(mmk_heap_root(ro) != 0);
    mmk_heap_read_end(ro);
    CHECK_OK(mmk_heap_check(ro));
    mmk_heap_close(ro);
    mmk_heap_close(NULL);
    CHECK_EQ(mmk_heap_open(path, MMK_HEAP_CREATE | MMK_HEAP_RDONLY, &ro), -EINVAL);
    CHECK_EQ(mmk_heap_open(path, 0x100, &ro), -EINVAL);
    CHECK_EQ(mmk_heap_open(NULL, 0, &ro), -EINVAL);
}

static void test_fixed(void)
{
    mmk_heap *a, *b;
    CHECK_OK(mmk_heap_open(path, 0, &a));
    /* The creator's address is taken by a itself only if a was mapped
     * there; either way a second FIXED open in this process collides. */
    int rc = mmk_heap_open(path, MMK_HEAP_FIXED, &b);
    if (rc == 0) {
        mmk_heap *c;
        CHECK_EQ(mmk_heap_open(path, MMK_HEAP_FIXED, &c), -EADDRINUSE);
        mmk_heap_close(b);
    } else {
        CHECK_EQ(rc, -EADDRINUSE);
    }
    mmk_heap_close(a);
}

static void test_foreign_files(void)
{
    char p2[700];
    snprintf(p2, sizeof p2, "%s/foreign", test_tmpdir());
    int fd = open(p2, O_CREAT | O_RDWR, 0600);
    CHECK(fd >= 0);
    static char junk[1 << 20];
    memset(junk, 'x', sizeof junk);
    CHECK(write(fd, junk, sizeof junk) == (ssize_t)sizeof junk);
    close(fd);
    mmk_heap *h;
    CHECK_EQ(mmk_heap_open(p2, 0, &h), MMK_EFORMAT);
    /* A copy of a real heap with one flipped bit in the header. */
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, p2);
    CHECK(system(cmd) == 0);
    fd = open(p2, O_RDWR);
    unsigned char c;
    CHECK(pread(fd, &c, 1, 40) == 1);
    c ^= 1;
    CHECK(pwrite(fd, &c, 1, 40) == 1);
    close(fd);
    CHECK_EQ(mmk_heap_open(p2, 0, &h), MMK_ECORRUPT);
    /* A flipped bit in a data page: opens, check reports it. */
    snprintf(cmd, sizeof cmd, "cp '%s' '%s' && rm -f '%s-log'", path, p2, p2);
    CHECK(system(cmd) == 0);
    CHECK_OK(mmk_heap_open(p2, 0, &h));
    mmk_ref root = mmk_heap_root(h);
    fd = open(p2, O_RDWR);
    CHECK(pread(fd, &c, 1, (off_t)root) == 1);
    c ^= 0x10;
    CHECK(pwrite(fd, &c, 1, (off_t)root) == 1);
    close(fd);
    char msg[256];
    CHECK_EQ(mmk_heap_check_report(h, msg, sizeof msg), MMK_ECORRUPT);
    printf("damaged copy: %s\n", msg);
    CHECK(strstr(msg, "checksum"));
    /* Cut short while open (another program truncates it): errors, no
     * SIGBUS from library code. */
    struct mmk_heap_stats st;
    CHECK_OK(mmk_heap_stats(h, &st));
    CHECK(truncate(p2, (off_t)(st.size / 2)) == 0);
    CHECK_EQ(mmk_heap_begin(h), MMK_ECORRUPT);
    CHECK_EQ(mmk_heap_read_begin(h), MMK_ECORRUPT);
    CHECK_EQ(mmk_heap_check_report(h, msg, sizeof msg), MMK_ECORRUPT);
    printf("truncated: %s\n", msg);
    mmk_heap_close(h);
    CHECK_EQ(mmk_heap_open(p2, 0, &h), MMK_ECORRUPT);
}

int main(void)
{
    snprintf(path, sizeof path, "%s/heap", test_tmpdir());
    _Static_assert(sizeof(node_ref) == sizeof(mmk_ref), "typed ref is one word");
    _Static_assert(__builtin_types_compatible_p(__typeof__(((node_ref *)0)->mmk_type_),
                                                struct node *),
                   "typed ref carries its type");
    _Static_assert(!__builtin_types_compatible_p(node_ref, leaf_ref), "distinct ref types");
    test_create_commit_reopen();
    test_abort_undoes();
    test_free_and_bad_refs();
    test_processes_and_protection();
    test_fixed();
    test_foreign_files();
    rm_rf(test_tmpdir());
    printf("ok\n");
    return 0;
}
