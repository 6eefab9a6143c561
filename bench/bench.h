/* Shared helpers for the benchmarks in bench/.
 *
 * Every benchmark program:
 *   - accepts --quick (finish within ~10 s) and --runs N (default 5, quick 3);
 *   - runs mmkit and its peers side by side in the same process and run,
 *     repeats each measurement, and reports the median and the ratio;
 *   - prints Markdown (a "### title" and a table) on stdout;
 *   - prints plot data as lines "PLOT <id> <series> <x> <y>" and, once per
 *     plot, "PLOTMETA <id> <title>|<x label>|<y label>|<logx 0/1>", which
 *     `mmk bench` turns into SVG files and strips from the report.
 *   - says "skipped: <peer> not installed (apt-get install <pkg>)" for a
 *     missing peer. */
#ifndef MMK_BENCH_H
#define MMK_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct bench_opts {
    int quick;
    int runs;
};

static inline struct bench_opts bench_parse(int argc, char **argv)
{
    struct bench_opts o = {0, 5};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            o.quick = 1;
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            o.runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: %s [--quick] [--runs N]\n", argv[0]);
            exit(0);
        }
    }
    if (o.quick && o.runs == 5)
        o.runs = 3;
    if (o.runs < 1)
        o.runs = 1;
    return o;
}

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int bench_cmp_(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of n values (sorts v in place). */
static inline double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static inline void bench_plot_meta(const char *id, const char *title, const char *xl,
                                   const char *yl, int logx)
{
    printf("PLOTMETA %s %s|%s|%s|%d\n", id, title, xl, yl, logx);
}

static inline void bench_plot(const char *id, const char *series, double x, double y)
{
    printf("PLOT %s %s %.6g %.6g\n", id, series, x, y);
}

/* Keep the compiler from optimising a value away. */
#define bench_keep(x) __asm__ volatile("" : : "r"(x) : "memory")

#endif
