// mmk-test: timeout=60
/* A full disk gives -ENOSPC, not SIGBUS: growing a mapped file reserves its
 * blocks with fallocate first. Runs on a 1 MiB tmpfs mounted in a private
 * mount namespace (needs CAP_SYS_ADMIN; skipped with the reason otherwise).
 * For contrast, a plain mapping grown with ftruncate on the same full file
 * system dies of SIGBUS on the first store (in a child). */
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

__attribute__((visibility("default"))) const char *__asan_default_options(void)
{
    return "allow_user_segv_handler=1:handle_segv=0:handle_sigbus=0";
}
__attribute__((visibility("default"))) const char *__tsan_default_options(void)
{
    return "handle_segv=0:handle_sigbus=0";
}

static char mnt[600];

static void fill_until_full(unsigned policy)
{
    char path[700];
    snprintf(path, sizeof path, "%s/full-%u", mnt, policy);
    mmk_file *f;
    CHECK_OK(mmk_file_open(path, MMK_FILE_CREATE | MMK_FILE_TRUNC | policy, &f));
    CHECK_EQ(mmk_file_policy(f), policy);
    static unsigned char chunk[16384];
    uint64_t off = 0;
    ssize_t rc;
    for (;;) {
        memset(chunk, (int)(off / sizeof chunk) + 1, sizeof chunk);
        rc = mmk_file_write_at(f, chunk, sizeof chunk, off);
        if (rc < 0)
            break;
        CHECK_EQ(rc, (ssize_t)sizeof chunk);
        off += sizeof chunk;
        CHECK(off < (4u << 20)); /* the 1 MiB limit must bite */
    }
    CHECK_EQ(rc, -ENOSPC);
    /* Nothing half-done: the size is what was written, and it reads back. */
    CHECK_EQ(mmk_file_size(f), off);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    CHECK_EQ(st.st_size, (off_t)off);
    for (uint64_t o = 0; o < off; o += sizeof chunk) {
        CHECK_EQ(mmk_file_read_at(f, chunk, sizeof chunk, o), (ssize_t)sizeof chunk);
        CHECK(chunk[0] == (unsigned char)(o / sizeof chunk + 1) &&
              chunk[sizeof chunk - 1] == chunk[0]);
    }
    CHECK_EQ(mmk_file_resize(f, off + (1u << 20)), -ENOSPC);
    CHECK_EQ(mmk_file_size(f), off);
    /* Writes inside the file still work; so does shrinking, which frees room. */
    CHECK_EQ(mmk_file_write_at(f, "ok", 2, 0), 2);
    CHECK_OK(mmk_file_resize(f, off / 2));
    CHECK_EQ(mmk_file_write_at(f, chunk, sizeof chunk, off / 2), (ssize_t)sizeof chunk);
    CHECK_OK(mmk_file_sync(f));
    printf("%s: -ENOSPC after %llu KiB, file intact\n",
           policy == MMK_FILE_MMAP ? "mmap" : "pread", (unsigned long long)off / 1024);
    mmk_file_close(f);
    unlink(path);
}

/* What mmkit prevents: ftruncate to grow, then store through the mapping. */
static void plain_mapping(void *arg)
{
    (void)arg;
    char path[700];
    snprintf(path, sizeof path, "%s/plain", mnt);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    size_t len = 4u << 20;
    if (fd < 0 || ftruncate(fd, (off_t)len))
        _exit(2);
    unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        _exit(2);
    for (size_t i = 0; i < len; i += 4096)
        m[i] = 1; /* SIGBUS once the file system is full */
    _exit(0);
}

int main(void)
{
    snprintf(mnt, sizeof mnt, "%s", test_tmpdir());
    if (unshare(CLONE_NEWNS) != 0) {
        printf("SKIP: cannot make a private mount namespace (%s): needs CAP_SYS_ADMIN\n",
               strerror(errno));
        rm_rf(mnt);
        return 77;
    }
    /* Keep our mounts out of the parent namespace. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", mnt, "tmpfs", 0, "size=1m,mode=0700") != 0) {
        printf("SKIP: cannot mount a 1 MiB tmpfs (%s)\n", strerror(errno));
        rm_rf(mnt);
        return 77;
    }
    fill_until_full(MMK_FILE_MMAP);
    fill_until_full(MMK_FILE_PREAD);
    int st = run_child(plain_mapping, NULL);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS);
    printf("a plain mapping grown with ftruncate: killed by SIGBUS, as expected\n");
    umount2(mnt, MNT_DETACH);
    rm_rf(mnt);
    return 0;
}
