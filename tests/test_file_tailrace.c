// mmk-test: labels=concurrent timeout=120
/* Stale last-page tail, under real races: another process cuts the file
 * into the middle of a page while a thread keeps writing through a handle
 * that still believes in the old size. Stores past the new end inside its
 * last page do not fault; write_at must take them back (docs/guide-file.md,
 * "Writing while someone else truncates"). On tmpfs the kernel shows such
 * bytes as file data when the file grows again, so the other process, with
 * the writer parked between two calls, regrows the file and checks that
 * everything past the cut reads as zeros.
 *
 * The writer only writes inside the size its handle knows (write_at never
 * grows the file here), so no byte past a cut is legitimately written: any
 * non-zero byte there is a leftover. Runs on /dev/shm (tmpfs) when it can,
 * else in the test directory (ext4 zeroes on growth: a weaker check).
 *
 * Usage: test_file_tailrace [--seconds N] */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

MMK_TEST_FAULT_OPTIONS

#define FULL ((size_t)1 << 20)
#define TAIL ((size_t)64 << 10)
#define HANDLES 8

static unsigned char pat(uint64_t off) { return (unsigned char)(off * 131 + (off >> 12) * 17 + 5); }

/* Shared between the writer (this process) and the cutter (a child). */
struct shared {
    atomic_int pause_req; /* cutter: writer, stop between two calls */
    atomic_int parked;    /* writer: stopped */
    atomic_int stop;
    atomic_long cycles;
    atomic_long leftovers; /* non-zero bytes found past a cut */
    atomic_long first_bad; /* offset of the first one */
};
static struct shared *sh;

static void cutter(const char *path, const unsigned char *full)
{
    int fd = open(path, O_RDWR);
    if (fd < 0)
        _exit(2);
    unsigned char *b = malloc(TAIL + 4096);
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    while (!atomic_load(&sh->stop)) {
        /* Cut into the middle of a page near the end, let the writer race
         * with it for a moment, then park it. */
        size_t cut = FULL - 1 - test_rand(&seed) % TAIL;
        if (ftruncate(fd, (off_t)cut))
            _exit(3);
        usleep(100 + test_rand(&seed) % 400);
        atomic_store(&sh->pause_req, 1);
        while (!atomic_load(&sh->parked) && !atomic_load(&sh->stop))
            usleep(20);
        /* Regrow (tmpfs would expose a leftover now) and look. */
        if (ftruncate(fd, (off_t)FULL))
            _exit(4);
        size_t n = FULL - cut;
        if (pread(fd, b, n, (off_t)cut) != (ssize_t)n)
            _exit(5);
        for (size_t i = 0; i < n; i++)
            if (b[i]) {
                if (atomic_fetch_add(&sh->leftovers, 1) == 0)
                    atomic_store(&sh->first_bad, (long)(cut + i));
            }
        /* Whole again, as the writer expects it. */
        if (pwrite(fd, full + cut, n, (off_t)cut) != (ssize_t)n)
            _exit(6);
        atomic_fetch_add(&sh->cycles, 1);
        atomic_store(&sh->pause_req, 0);
        while (atomic_load(&sh->parked) && !atomic_load(&sh->stop))
            usleep(20);
    }
    _exit(0);
}

int main(int argc, char **argv)
{
    double seconds = 2 * test_scale();
    if (seconds < 1)
        seconds = 1;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);

    char path[700];
    const char *where = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : test_tmpdir();
    snprintf(path, sizeof path, "%s/mmk-tailrace-%d", where, (int)getpid());
    unsigned char *full = malloc(FULL);
    for (size_t i = 0; i < FULL; i++)
        full[i] = pat(i);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK(pwrite(fd, full, FULL, 0) == (ssize_t)FULL);
    close(fd);
    /* Several handles: each learns of a cut only by running into it, so
     * each cut meets several stale first writes. */
    mmk_file *h[HANDLES];
    for (int i = 0; i < HANDLES; i++)
        CHECK_OK(mmk_file_open(path, MMK_FILE_RDWR | MMK_FILE_MMAP, &h[i]));

    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sh != MAP_FAILED);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        cutter(path, full);

    uint64_t seed = 0x2545F4914F6CDD1Dull;
    long writes = 0, refused = 0, other = 0;
    unsigned char one;
    double end = now_sec() + seconds;
    while (now_sec() < end) {
        if (atomic_load(&sh->pause_req)) {
            atomic_store(&sh->parked, 1);
            while (atomic_load(&sh->pause_req))
                usleep(20);
            atomic_store(&sh->parked, 0);
            for (int i = 0; i < HANDLES; i++) /* learn the size again */
                (void)mmk_file_read_at(h[i], &one, 1, FULL - 1);
        }
        /* Inside the size the handle knows, mostly near the end. */
        uint64_t r = test_rand(&seed);
        mmk_file *f = h[(r >> 32) % HANDLES];
        uint64_t known = mmk_file_size(f);
        size_t len = 1 + (r >> 40) % (r & 2 ? 64 : 6000);
        if (len > known)
            continue;
        uint64_t off = r & 1 ? (r >> 2) % (known - len + 1)
                             : known - len - (r >> 2) % (len < TAIL ? TAIL - len : 1);
        if (off + len > known)
            off = known - len;
        ssize_t n = mmk_file_write_at(f, full + off, len, off);
        writes++;
        if (n == -EFAULT)
            refused++;
        else if (n != (ssize_t)len)
            other++, fprintf(stderr, "write_at(%zu, %zu): %zd\n", (size_t)off, len, n);
    }
    atomic_store(&sh->stop, 1);
    int st;
    waitpid(pid, &st, 0);
    printf("tailrace on %s: %ld cut+regrow cycles, %ld writes, %ld refused with -EFAULT, "
           "%ld leftover bytes past a cut\n",
           where, atomic_load(&sh->cycles), writes, refused, atomic_load(&sh->leftovers));
    if (atomic_load(&sh->leftovers))
        fprintf(stderr, "first leftover at byte %ld\n", atomic_load(&sh->first_bad));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_EQ(other, 0);
    CHECK_EQ(atomic_load(&sh->leftovers), 0);
    CHECK(atomic_load(&sh->cycles) > 0 && refused > 0); /* the race did happen */
    for (int i = 0; i < HANDLES; i++)
        mmk_file_close(h[i]);
    unlink(path);
    free(full);
    rm_rf(test_tmpdir());
    return 0;
}
