// mmk-test: labels=concurrent timeout=180
/* Truncation torture: another process truncates and regrows a file while
 * four threads call mmk_file_read_at at random offsets. Faults must become
 * errors (thousands of them), nothing may crash, and every byte returned
 * must be right: byte i of the file is pat(i), so it checks itself.
 *
 * The other process truncates to page multiples and regrows with pwrite of
 * the pattern, so a page is either beyond end of file or holds the pattern.
 * (Truncating in the middle of a page would let a mapping show zeros in the
 * rest of that page until the reader notices the new size: a property of
 * every mmap, documented in docs/guide-file.md.)
 *
 * The truncator sleeps briefly in both states so that, even on a busy
 * two-core machine, readers run while the file is cut short and again while
 * it is whole (and learn its full size, so their next read into a cut
 * faults). The run lasts --seconds (default 3, scaled), longer (up to 12 s)
 * until at least 1000 (scaled) faults were caught.
 *
 * Usage: test_file_torture [--seconds N] [--us TRUNCATED_US WHOLE_US] */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include <mmkit/mmkit.h>
#include "testutil.h"

MMK_TEST_FAULT_OPTIONS

#define READERS 4
#define FULL ((size_t)4 << 20)
#define TAIL ((size_t)256 << 10)

static unsigned char pat(uint64_t off) { return (unsigned char)(off * 131 + (off >> 12) * 17 + 5); }

static mmk_file *file;
static const unsigned char *expect; /* pat(i) for every i, computed once */
static double start, deadline, hard_deadline;
static uint64_t faults0;
static long target;
static atomic_long n_reads, n_bytes, n_faults, n_short, n_other;

static void *reader(void *arg)
{
    uint64_t seed = 0x2545f4914f6cdd1dull + (uint64_t)(uintptr_t)arg * 7919;
    unsigned char *buf = malloc(65536);
    long reads = 0, bytes = 0, faults = 0, shorts = 0;
    /* Run for the time given, longer (up to 3x, at least 12 s in all) until
     * enough faults: sanitizers and a busy machine slow the race down. */
    for (;;) {
        double t = now_sec();
        if (t >= hard_deadline ||
            (t >= deadline && (long)(mmk_fault_count() - faults0) >= target))
            break;
        for (int k = 0; k < 64; k++) {
            size_t len = 1 + test_rand(&seed) % (test_rand(&seed) % 8 ? 512 : 65536);
            /* Half the reads in the last 256 KiB, where most truncations
             * cut, so reads race with them often. */
            uint64_t r = test_rand(&seed);
            uint64_t off = r & 1 ? (r >> 1) % FULL : FULL - 1 - (r >> 1) % TAIL;
            if (k % 4 == 3) /* the last byte: keeps the known size fresh */
                off = FULL - 1, len = 1;
            ssize_t n = mmk_file_read_at(file, buf, len, off);
            reads++;
            if (n == -EFAULT) {
                faults++;
                continue;
            }
            if (n < 0) {
                fprintf(stderr, "read_at(%zu, %llu): %zd (%s)\n", len, (unsigned long long)off, n,
                        mmk_strerror((int)n));
                atomic_fetch_add(&n_other, 1);
                continue;
            }
            CHECK((size_t)n <= len);
            shorts += (size_t)n < len;
            if (memcmp(buf, expect + off, (size_t)n) != 0)
                for (ssize_t i = 0; i < n; i++)
                    if (buf[i] != pat(off + (uint64_t)i)) {
                        fprintf(stderr, "WRONG byte at %llu: %u, expected %u\n",
                                (unsigned long long)(off + (uint64_t)i), buf[i],
                                pat(off + (uint64_t)i));
                        exit(1);
                    }
            bytes += n;
        }
    }
    atomic_fetch_add(&n_reads, reads);
    atomic_fetch_add(&n_bytes, bytes);
    atomic_fetch_add(&n_faults, faults);
    atomic_fetch_add(&n_short, shorts);
    free(buf);
    return NULL;
}

/* The other process: truncate to a random page multiple, pause, regrow. */
static _Atomic long *cycles; /* shared with the truncator */
static int truncated_us = 50, whole_us = 50;

static void truncator(const char *path, const unsigned char *full)
{
    int fd = open(path, O_RDWR);
    if (fd < 0)
        _exit(2);
    uint64_t seed = 88172645463325252ull;
    for (;;) {
        /* Mostly in the tail (fast cycles, many races), now and then
         * anywhere. */
        uint64_t r = test_rand(&seed);
        size_t pages = r % 16 ? 1 + (r >> 8) % (TAIL / 4096) : 1 + (r >> 8) % (FULL / 4096);
        size_t to = FULL - pages * 4096;
        if (ftruncate(fd, (off_t)to))
            _exit(3);
        usleep(truncated_us); /* readers run into the hole meanwhile */
        for (size_t off = to; off < FULL;) {
            ssize_t n = pwrite(fd, full + off, FULL - off, (off_t)off);
            if (n <= 0)
                _exit(4);
            off += (size_t)n;
        }
        atomic_fetch_add(cycles, 1);
        usleep(whole_us); /* whole for a moment: readers learn the full size again */
    }
}

int main(int argc, char **argv)
{
    double seconds = 3 * test_scale();
    if (seconds < 1.5)
        seconds = 1.5;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--us") && i + 2 < argc)
            truncated_us = atoi(argv[i + 1]), whole_us = atoi(argv[i + 2]), i += 2;

    char path[700];
    snprintf(path, sizeof path, "%s/torture", test_tmpdir());
    unsigned char *full = malloc(FULL);
    for (size_t i = 0; i < FULL; i++)
        full[i] = pat(i);
    expect = full;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK(pwrite(fd, full, FULL, 0) == (ssize_t)FULL);
    close(fd);
    CHECK_OK(mmk_file_open(path, MMK_FILE_RDONLY | MMK_FILE_MMAP, &file));

    cycles = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(cycles != MAP_FAILED);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        truncator(path, full);

    faults0 = mmk_fault_count();
    target = test_scaled(1000);
    start = now_sec();
    deadline = start + seconds;
    hard_deadline = start + (3 * seconds > 12 ? 3 * seconds : 12);
    pthread_t t[READERS];
    for (long i = 0; i < READERS; i++)
        CHECK(pthread_create(&t[i], NULL, reader, (void *)i) == 0);
    for (int i = 0; i < READERS; i++)
        pthread_join(t[i], NULL);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL); /* the truncator ran throughout */

    long faults = atomic_load(&n_faults);
    printf("torture: %ld truncate+regrow cycles in %.1f s; %ld reads (%ld short), %.1f MiB verified, %ld faults became -EFAULT "
           "(%llu caught by the handler)\n",
           atomic_load(cycles), now_sec() - start, atomic_load(&n_reads), atomic_load(&n_short),
           (double)atomic_load(&n_bytes) / (1 << 20), faults,
           (unsigned long long)(mmk_fault_count() - faults0));
    CHECK_EQ(atomic_load(&n_other), 0);
    CHECK((long)(mmk_fault_count() - faults0) == faults);
    CHECK(faults >= target);
    mmk_file_close(file);
    free(full);
    rm_rf(test_tmpdir());
    return 0;
}
