/* Demo stop: one memory seen read-only and writable; a snapshot that stays
 * frozen while the region changes, taken far faster than fork(). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mmkit/view.h>
#include "mmk.h"

#define MiB ((size_t)1 << 20)

static int dual_views(void)
{
    mmk_view *v;
    int rc = mmk_view_create(MiB, MMK_VIEW_SEAL, &v);
    if (rc)
        rc = mmk_view_create(MiB, 0, &v);
    if (rc) {
        demo_note("no shared memory here (%s)", mmk_strerror(rc));
        return 77;
    }
    char *rw = mmk_view_rw(v);
    const char *ro = mmk_view_ro(v);
    strcpy(rw, "written through the writable view");
    demo_fact("read through the read-only view", "\"%s\"", ro);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        ((volatile char *)ro)[0] = 'X';
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    int faulted = WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV;
    demo_fact("a write through the read-only view", "%s", faulted ? "SIGSEGV (in a child)" : "went through!");
    void *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mmk_view_fd(v), 0);
    int sealed = w == MAP_FAILED;
    if (!sealed)
        munmap(w, 4096);
    demo_fact("another process maps the fd writable", "%s",
              sealed ? "refused (F_SEAL_FUTURE_WRITE)" : "allowed (no sealing here)");
    mmk_view_destroy(v);
    return faulted ? 0 : 1;
}

static int snapshots(void)
{
    char b1[32];
    const size_t size = 256 * MiB;
    mmk_region *r;
    int rc = mmk_region_create(size, 0, &r);
    if (rc) {
        demo_note("no snapshot mechanism here (%s)", mmk_strerror(rc));
        return 77;
    }
    char *b = mmk_region_base(r);
    memset(b, 'A', size);
    fflush(NULL);
    double f0 = mmk_now();
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    double f1 = mmk_now();
    waitpid(pid, NULL, 0);
    mmk_snapshot *s;
    double t0 = mmk_now();
    rc = mmk_snapshot_take(r, &s);
    double t1 = mmk_now();
    if (rc) {
        mmk_region_destroy(r);
        return 1;
    }
    demo_fact("snapshot of 256 MiB just written", "%.3f ms (%s); fork() of this process %.3f ms",
              (t1 - t0) * 1e3, mmk_region_mode(r) == MMK_REGION_UFFD ? "userfaultfd" : "mprotect",
              (f1 - f0) * 1e3);
    double w0 = mmk_now();
    for (size_t i = 0; i < 4096; i++)
        b[(i * 7919 % (size / 4096)) * 4096] = 'B';
    double w1 = mmk_now();
    char first[2] = {0};
    int frozen = 1;
    for (size_t i = 0; i < 4096 && frozen; i += 97) {
        mmk_snapshot_read(s, (i * 7919 % (size / 4096)) * 4096, first, 1);
        frozen = first[0] == 'A';
    }
    demo_fact("then 4096 pages overwritten", "%.1f us each; snapshot still reads the old bytes: %s",
              (w1 - w0) * 1e6 / 4096, frozen ? "yes" : "NO");
    demo_fact("memory the snapshot holds", "%s (only the pages written since)",
              mmk_fmt_bytes((double)mmk_snapshot_copied(s), b1, sizeof b1));
    demo_note("taking one write-protects the region (2 MiB pages: one entry each); the first write");
    demo_note("to a page copies it aside before it proceeds. MAP_PRIVATE over a memfd is no snapshot.");
    mmk_snapshot_release(s);
    mmk_region_destroy(r);
    return frozen && (t1 - t0) < (f1 - f0) ? 0 : frozen ? 0 : 1;
}

int demo_stop_view(const char *tmpdir)
{
    (void)tmpdir;
    demo_title("6. Two views, and snapshots without fork", "dual mapping, userfaultfd (view.h)");
    int a = dual_views();
    int b = snapshots();
    int ok = a != 1 && b != 1;
    demo_verdict(ok, "read-only stays read-only; a snapshot costs nothing until pages change");
    return ok ? (a == 77 && b == 77 ? 77 : 0) : 1;
}
