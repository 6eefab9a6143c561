/* view.h, dual views: same memory at two addresses, writes through the
 * read-only one fault (in a child), sealing keeps a handed-out fd read-only. */
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

#define MiB ((size_t)1 << 20)

static void test_errors(void)
{
    mmk_view *v;
    CHECK_EQ(mmk_view_create(0, 0, &v), -EINVAL);
    CHECK_EQ(mmk_view_create(4096, 0, NULL), -EINVAL);
    CHECK_EQ(mmk_view_create(4096, 0x40, &v), -EINVAL);
    CHECK_EQ(mmk_view_attach(-1, 4096, &v), -EINVAL);
    mmk_view_destroy(NULL);
    CHECK(mmk_view_rw(NULL) == NULL && mmk_view_ro(NULL) == NULL);
    CHECK_EQ(mmk_view_fd(NULL), -EINVAL);
    CHECK_OK(mmk_view_create(100, 0, &v));
    CHECK_EQ(mmk_view_size(v), 4096);
    /* Attaching more than the object holds would fault on reads: refused. */
    CHECK_EQ(mmk_view_attach(mmk_view_fd(v), 8192, &(mmk_view *){0}), -EINVAL);
    mmk_view_destroy(v);
}

static void test_same_memory(void)
{
    mmk_view *v;
    CHECK_OK(mmk_view_create(MiB, 0, &v));
    char *rw = mmk_view_rw(v);
    const char *ro = mmk_view_ro(v);
    CHECK(rw && ro && rw != ro);
    for (size_t i = 0; i < MiB; i += 4096)
        rw[i] = (char)(i >> 12);
    for (size_t i = 0; i < MiB; i += 4096)
        CHECK_EQ(ro[i], (char)(i >> 12));
    /* Unsealed: anyone holding the fd may map it writable. */
    void *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mmk_view_fd(v), 0);
    CHECK(w != MAP_FAILED);
    munmap(w, 4096);
    mmk_view_destroy(v);
}

static void write_ro(void *arg)
{
    mmk_view *v = arg;
    ((volatile char *)mmk_view_ro(v))[123] = 1;
    _exit(0);
}

static void test_ro_faults(void)
{
    mmk_view *v;
    CHECK_OK(mmk_view_create(MiB, 0, &v));
    int st = run_child(write_ro, v);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
    CHECK_EQ(((const char *)mmk_view_ro(v))[123], 0);
    mmk_view_destroy(v);
}

struct peer {
    int fd;
    int phase;
};

/* Another process, given only the fd: it can read, it cannot make a
 * writable mapping, its view's writes fault. */
static void sealed_peer(void *arg)
{
    struct peer *p = arg;
    void *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd, 0);
    if (w != MAP_FAILED || errno != EPERM)
        _exit(10);
    if (write(p->fd, "x", 1) != -1)
        _exit(11);
    mmk_view *v;
    if (mmk_view_attach(p->fd, 0, &v))
        _exit(12);
    if (mmk_view_rw(v) != NULL || ((const char *)mmk_view_ro(v))[5] != 42)
        _exit(13);
    /* The read-only mapping cannot be upgraded either. */
    if (mprotect((void *)mmk_view_ro(v), 4096, PROT_READ | PROT_WRITE) == 0)
        _exit(14);
    if (p->phase == 1)
        ((volatile char *)mmk_view_ro(v))[5] = 1; /* must fault */
    mmk_view_destroy(v);
    _exit(0);
}

static void test_sealed(void)
{
    mmk_view *v;
    int rc = mmk_view_create(MiB, MMK_VIEW_SEAL, &v);
    if (rc == -ENOTSUP) {
        printf("note: sealing unsupported here; sealed tests skipped\n");
        return;
    }
    CHECK_OK(rc);
    char *rw = mmk_view_rw(v);
    rw[5] = 42; /* our writable view keeps working after the seal */
    CHECK(mmk_shm_seals(mmk_view_fd(v)) & MMK_SEAL_FUTURE_WRITE);
    void *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mmk_view_fd(v), 0);
    CHECK(w == MAP_FAILED && errno == EPERM);
    CHECK(mprotect((void *)mmk_view_ro(v), 4096, PROT_READ | PROT_WRITE) != 0);
    struct peer p = {mmk_view_fd(v), 0};
    int st = run_child(sealed_peer, &p);
    CHECK(WIFEXITED(st));
    CHECK_EQ(WEXITSTATUS(st), 0);
    p.phase = 1;
    st = run_child(sealed_peer, &p);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
    /* The size is sealed too: no peer can truncate it under our maps. */
    CHECK(ftruncate(mmk_view_fd(v), 4096) != 0);
    CHECK_EQ(((const char *)mmk_view_ro(v))[5], 42);
    mmk_view_destroy(v);
}

int main(void)
{
    test_errors();
    test_same_memory();
    test_ro_faults();
    test_sealed();
    printf("view: ok\n");
    return 0;
}
