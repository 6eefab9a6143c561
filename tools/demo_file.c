/* Demo stop: a file truncated while it is being read. A plain mapping dies
 * of SIGBUS; mmk_file_read_at turns each such fault into -EFAULT and the
 * program carries on, with every byte it returned correct. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mmkit/mmkit.h>
#include "mmk.h"

#define DEMO_SIZE ((size_t)8 << 20)

static unsigned char pat(uint64_t off) { return (unsigned char)(off * 131 + (off >> 12) * 17 + 5); }

/* The other process: cut the file short at a random page, wait, put the
 * bytes back, wait, again; until killed. */
static void truncator(const char *path, const unsigned char *full)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        _exit(2);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (;;) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t to = DEMO_SIZE - (1 + x % 512) * 4096;
        if (ftruncate(fd, (off_t)to))
            _exit(3);
        usleep(100);
        if (pwrite(fd, full + to, DEMO_SIZE - to, (off_t)to) != (ssize_t)(DEMO_SIZE - to))
            _exit(4);
        usleep(100);
    }
}

/* What most programs do: map the file and read it. */
static int plain_reader_dies(const char *path)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(path, O_RDWR | O_CLOEXEC);
        unsigned char *m = mmap(NULL, DEMO_SIZE, PROT_READ, MAP_SHARED, fd, 0);
        if (fd < 0 || m == MAP_FAILED || ftruncate(fd, 4096))
            _exit(2);
        volatile unsigned char sink = m[DEMO_SIZE / 2]; /* past the new end */
        (void)sink;
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) ? WTERMSIG(st) : 0;
}

int demo_stop_file(const char *tmpdir)
{
    char path[4096];
    demo_title("3. A file truncated while it is being read", "guarded reads (file.h, fault.h)");
    snprintf(path, sizeof path, "%s/demo-file", tmpdir);
    unsigned char *full = malloc(DEMO_SIZE), *buf = malloc(65536);
    if (!full || !buf) {
        free(full);
        free(buf);
        return 1;
    }
    for (size_t i = 0; i < DEMO_SIZE; i++)
        full[i] = pat(i);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int ok = fd >= 0 && pwrite(fd, full, DEMO_SIZE, 0) == (ssize_t)DEMO_SIZE;
    if (fd >= 0)
        close(fd);
    if (!ok) {
        demo_note("cannot write %s", path);
        free(full);
        free(buf);
        return 1;
    }

    int sig = plain_reader_dies(path);
    demo_fact("a plain mmap reader, file cut short", "%s", sig ? strsignal(sig) : "survived?");
    /* It cut the file to one page: restore it. */
    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
        ok = pwrite(fd, full, DEMO_SIZE, 0) == (ssize_t)DEMO_SIZE;
        close(fd);
    }

    mmk_file *f;
    int rc = mmk_file_open(path, MMK_FILE_RDONLY | MMK_FILE_MMAP, &f);
    if (rc) {
        demo_note("mmk_file_open: %s", mmk_strerror(rc));
        free(full);
        free(buf);
        return 1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        truncator(path, full);

    long reads = 0, faults = 0, shorts = 0, wrong = 0;
    double bytes = 0, t_ok = 0, t_fault = 0;
    uint64_t x = 88172645463325252ull;
    double end = mmk_now() + 1.0;
    while (mmk_now() < end) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        /* Most reads near the end, where the cuts are. */
        uint64_t off = x & 1 ? (x >> 1) % DEMO_SIZE : DEMO_SIZE - 1 - (x >> 1) % (2u << 20);
        size_t len = 1 + (x >> 40) % 4096;
        if (reads % 4 == 3)
            off = DEMO_SIZE - 1, len = 1; /* notice the file has grown back */
        double t0 = mmk_now();
        ssize_t n = mmk_file_read_at(f, buf, len, off);
        double dt = mmk_now() - t0;
        reads++;
        if (n == -EFAULT) {
            faults++;
            t_fault += dt;
            continue;
        }
        t_ok += dt;
        if (n < 0)
            continue;
        shorts += (size_t)n < len;
        wrong += memcmp(buf, full + off, (size_t)n) != 0;
        bytes += (double)n;
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    mmk_file_close(f);

    char b1[32];
    demo_fact("read_at for 1 s as the file is cut, regrown", "%ld reads, %s checked", reads,
              mmk_fmt_bytes(bytes, b1, sizeof b1));
    demo_fact("faults that became -EFAULT", "%ld (the process carried on)", faults);
    demo_fact("reads stopped short at the new end", "%ld", shorts);
    if (faults)
        demo_fact("a read that faulted (signal, fstat)", "%.1f us (a normal read: %.2f us)",
                  t_fault / (double)faults * 1e6, t_ok / (double)(reads - faults) * 1e6);
    demo_fact("wrong bytes returned", "%ld", wrong);
    demo_note("A SIGBUS inside mmkit's copy routine moves its program counter to an error exit");
    demo_note("(an exception table, as in the kernel): no setjmp on the happy path.");
    int good = sig == SIGBUS && wrong == 0 && reads > 0 && ok;
    demo_verdict(good, "a truncated file gives errors, not a dead process");
    free(full);
    free(buf);
    return good ? 0 : 1;
}
