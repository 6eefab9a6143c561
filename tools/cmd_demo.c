/* mmk demo: one stop a technique, each with a measured figure. */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mmkit/mmkit.h>
#include "mmk.h"

#define C_BOLD  "\033[1m"
#define C_DIM   "\033[2m"
#define C_GREEN "\033[32m"
#define C_RED   "\033[31m"
#define C_CYAN  "\033[36m"
#define C_OFF   "\033[0m"

static const char *c(const char *code) { return mmk_color ? code : ""; }

void demo_title(const char *title, const char *subtitle)
{
    printf("\n%s%s%s%s  %s%s%s\n", c(C_BOLD), c(C_CYAN), title, c(C_OFF), c(C_DIM),
           subtitle ? subtitle : "", c(C_OFF));
}

void demo_fact(const char *label, const char *fmt, ...)
{
    char val[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(val, sizeof val, fmt, ap);
    va_end(ap);
    int n = (int)strlen(label);
    printf("  %s %s", label, c(C_DIM));
    for (int i = n; i < 44; i++)
        putchar('.');
    printf("%s %s%s%s\n", c(C_OFF), c(C_BOLD), val, c(C_OFF));
}

void demo_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("  %s", c(C_DIM));
    vprintf(fmt, ap);
    printf("%s\n", c(C_OFF));
    va_end(ap);
}

void demo_verdict(int ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("  %s%s%s ", c(ok ? C_GREEN : C_RED), ok ? "ok" : "FAILED", c(C_OFF));
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

int mmk_cmd_demo(int argc, char **argv)
{
    int color = isatty(1) && !getenv("NO_COLOR");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-color"))
            color = 0;
        else if (!strcmp(argv[i], "--color"))
            color = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            puts("usage: mmk demo [--no-color]\n\n"
                 "A live tour of mmkit: each technique runs here and now and prints a measured\n"
                 "figure and what it means. Leaves no files behind. Exit 0 when every stop\n"
                 "worked (stops the machine cannot do are skipped with the reason).");
            return 0;
        } else {
            fprintf(stderr, "mmk demo: unknown option '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    mmk_color = color;
    setvbuf(stdout, NULL, _IOLBF, 0);

    char tmpl[] = "/tmp/mmk-demo-XXXXXX";
    const char *base = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/mmk-demo-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        if (!mkdtemp(tmpl)) {
            perror("mmk demo: cannot create a temporary directory");
            return 2;
        }
        snprintf(dir, sizeof dir, "%s", tmpl);
    }

    printf("%smmkit %s%s: page-mapping techniques, live on this machine (page size %zu)\n",
           c(C_BOLD), mmk_version(), c(C_OFF), mmk_page_size());
    struct {
        demo_stop_fn fn;
    } stops[] = {{demo_stop_vm},    {demo_stop_ring},  {demo_stop_file}, {demo_stop_arena},
                 {demo_stop_sparse}, {demo_stop_view}, {demo_stop_heap}, {demo_stop_kv}};
    int failed = 0, ran = 0, skipped = 0;
    double t0 = mmk_now();
    for (size_t i = 0; i < sizeof stops / sizeof stops[0]; i++) {
        if (!stops[i].fn)
            continue;
        int rc = stops[i].fn(dir);
        ran++;
        if (rc == 77)
            skipped++;
        else if (rc)
            failed++;
    }
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    printf("\n%d stops, %d skipped, %d failed, in %.1f s\n", ran, skipped, failed, mmk_now() - t0);
    return failed ? 1 : 0;
}
