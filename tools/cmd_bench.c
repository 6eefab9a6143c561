/* mmk bench: run every benchmark program in bench/ side by side with its
 * peers, collect their Markdown, and draw their PLOT data as SVG files. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mmkit/mmkit.h>
#include "mmk.h"

#define MAX_PLOTS 32
#define MAX_SERIES 8
#define MAX_POINTS 64

struct series {
    char name[48];
    int n;
    double x[MAX_POINTS], y[MAX_POINTS];
};

struct plot {
    char id[48], title[128], xl[64], yl[64];
    int logx, nseries;
    struct series s[MAX_SERIES];
};

static struct plot plots[MAX_PLOTS];
static int nplots;

static struct plot *plot_get(const char *id)
{
    for (int i = 0; i < nplots; i++)
        if (!strcmp(plots[i].id, id))
            return &plots[i];
    if (nplots == MAX_PLOTS)
        return NULL;
    struct plot *p = &plots[nplots++];
    memset(p, 0, sizeof *p);
    snprintf(p->id, sizeof p->id, "%s", id);
    snprintf(p->title, sizeof p->title, "%s", id);
    return p;
}

/* "PLOTMETA id title|x|y|logx" or "PLOT id series x y"; 1 if consumed. */
static int parse_plot_line(const char *line)
{
    char id[48], rest[400];
    if (sscanf(line, "PLOTMETA %47s %399[^\n]", id, rest) == 2) {
        struct plot *p = plot_get(id);
        if (!p)
            return 1;
        char *f[4] = {rest, NULL, NULL, NULL};
        for (int i = 1; i < 4; i++) {
            f[i] = f[i - 1] ? strchr(f[i - 1], '|') : NULL;
            if (f[i])
                *f[i]++ = 0;
        }
        snprintf(p->title, sizeof p->title, "%s", f[0]);
        if (f[1])
            snprintf(p->xl, sizeof p->xl, "%s", f[1]);
        if (f[2])
            snprintf(p->yl, sizeof p->yl, "%s", f[2]);
        p->logx = f[3] && atoi(f[3]);
        return 1;
    }
    char series[48];
    double x, y;
    if (sscanf(line, "PLOT %47s %47s %lf %lf", id, series, &x, &y) == 4) {
        struct plot *p = plot_get(id);
        if (!p)
            return 1;
        struct series *s = NULL;
        for (int i = 0; i < p->nseries; i++)
            if (!strcmp(p->s[i].name, series))
                s = &p->s[i];
        if (!s && p->nseries < MAX_SERIES) {
            s = &p->s[p->nseries++];
            snprintf(s->name, sizeof s->name, "%s", series);
        }
        if (s && s->n < MAX_POINTS) {
            s->x[s->n] = x;
            s->y[s->n] = y;
            s->n++;
        }
        return 1;
    }
    return !strncmp(line, "PLOT", 4);
}

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else
            fputc(*s, f);
    }
}

static double nice_ceil(double v)
{
    if (v <= 0)
        return 1;
    double e = pow(10, floor(log10(v))), m = v / e;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * e;
}

static int write_svg(const struct plot *p, const char *dir)
{
    static const char *colors[MAX_SERIES] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                             "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.svg", dir, p->id);
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    const double W = 640, H = 400, L = 70, R = 160, T = 40, B = 50;
    double xmin = INFINITY, xmax = -INFINITY, ymax = 0;
    for (int i = 0; i < p->nseries; i++)
        for (int j = 0; j < p->s[i].n; j++) {
            double x = p->s[i].x[j];
            if (p->logx && x <= 0)
                continue;
            x = p->logx ? log10(x) : x;
            xmin = fmin(xmin, x);
            xmax = fmax(xmax, x);
            ymax = fmax(ymax, p->s[i].y[j]);
        }
    if (!isfinite(xmin)) {
        xmin = 0;
        xmax = 1;
    }
    if (xmax == xmin)
        xmax = xmin + 1;
    ymax = nice_ceil(ymax * 1.05);
    double pw = W - L - R, ph = H - T - B;
#define PX(x) (L + ((p->logx ? log10(x) : (x)) - xmin) / (xmax - xmin) * pw)
#define PY(y) (T + ph - (y) / ymax * ph)
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"22\" font-size=\"15\" font-weight=\"bold\">", L);
    xml_text(f, p->title);
    fprintf(f, "</text>\n");
    for (int k = 0; k <= 5; k++) {
        double y = ymax * k / 5;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L,
                PY(y), L + pw, PY(y));
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n", L - 6,
                PY(y) + 4, y);
    }
    /* x ticks at the data points of the first series (benchmarks use few, chosen sizes). */
    if (p->nseries)
        for (int j = 0; j < p->s[0].n; j++) {
            double x = p->s[0].x[j];
            if (p->logx && x <= 0)
                continue;
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.6g</text>\n", PX(x),
                    T + ph + 16, x);
        }
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L,
            T + ph, L + pw, T + ph);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, T,
            L, T + ph);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">", L + pw / 2, H - 10);
    xml_text(f, p->xl);
    fprintf(f, "</text>\n<text transform=\"translate(16,%.0f) rotate(-90)\" "
               "text-anchor=\"middle\">", T + ph / 2);
    xml_text(f, p->yl);
    fprintf(f, "</text>\n");
    for (int i = 0; i < p->nseries; i++) {
        const struct series *s = &p->s[i];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colors[i]);
        for (int j = 0; j < s->n; j++)
            if (!p->logx || s->x[j] > 0)
                fprintf(f, "%.1f,%.1f ", PX(s->x[j]), PY(s->y[j]));
        fprintf(f, "\"/>\n");
        for (int j = 0; j < s->n; j++)
            if (!p->logx || s->x[j] > 0)
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                        PX(s->x[j]), PY(s->y[j]), colors[i]);
        fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"12\" fill=\"%s\"/>\n",
                L + pw + 14, T + 8 + i * 20.0, colors[i]);
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">", L + pw + 32, T + 18 + i * 20.0);
        xml_text(f, s->name);
        fprintf(f, "</text>\n");
    }
#undef PX
#undef PY
    fprintf(f, "</svg>\n");
    return fclose(f) ? -errno : 0;
}

/* The directory holding bench_* programs: $MMK_BENCH_DIR, else next to this
 * executable in a build tree (../bench) or an install (../libexec/mmkit). */
static int find_bench_dir(char *out, size_t n)
{
    const char *e = getenv("MMK_BENCH_DIR");
    if (e && *e) {
        snprintf(out, n, "%s", e);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k <= 0)
        return -ENOENT;
    exe[k] = 0;
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = 0;
    static const char *rel[] = {"../bench", "../libexec/mmkit", "../lib/mmkit"};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        char cand[PATH_MAX + 32];
        snprintf(cand, sizeof cand, "%s/%s", exe, rel[i]);
        DIR *d = opendir(cand);
        if (d) {
            closedir(d);
            snprintf(out, n, "%s", cand);
            return 0;
        }
    }
    return -ENOENT;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Run one program, feeding its stdout line by line to the report; kill it
 * after `limit` seconds. Returns its exit status or -ETIMEDOUT. */
static int run_one(const char *path, int quick, double limit, FILE *report)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC))
        return -errno;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -errno;
    }
    if (pid == 0) {
        dup2(pfd[1], 1);
        char *argv[] = {(char *)path, quick ? "--quick" : NULL, NULL};
        execv(path, argv);
        _exit(127);
    }
    close(pfd[1]);
    FILE *in = fdopen(pfd[0], "r");
    double t0 = mmk_now();
    int timed_out = 0;
    char line[1024];
    struct pollfd pf = {pfd[0], POLLIN, 0};
    size_t have = 0;
    for (;;) {
        double left = limit - (mmk_now() - t0);
        if (left <= 0) {
            kill(pid, SIGKILL);
            timed_out = 1;
            break;
        }
        int pr = poll(&pf, 1, (int)(left * 1000) + 1);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        /* Read what is there; hand complete lines on. */
        ssize_t r = read(pfd[0], line + have, sizeof line - 1 - have);
        if (r <= 0)
            break;
        have += (size_t)r;
        line[have] = 0;
        char *s = line, *nl;
        while ((nl = strchr(s, '\n'))) {
            *nl = 0;
            if (!parse_plot_line(s))
                fprintf(report, "%s\n", s);
            s = nl + 1;
        }
        have = strlen(s);
        memmove(line, s, have + 1);
        if (have == sizeof line - 1) {
            fprintf(report, "%s\n", line);
            have = 0;
        }
    }
    if (have && !parse_plot_line(line))
        fprintf(report, "%s\n", line);
    fclose(in);
    int st = 0;
    waitpid(pid, &st, 0);
    if (timed_out)
        return -ETIMEDOUT;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void describe_machine(FILE *f)
{
    struct utsname u;
    uname(&u);
    char model[256] = "unknown";
    FILE *c = fopen("/proc/cpuinfo", "re");
    if (c) {
        char line[512];
        while (fgets(line, sizeof line, c))
            if (!strncmp(line, "model name", 10)) {
                char *v = strchr(line, ':');
                if (v) {
                    snprintf(model, sizeof model, "%s", v + 2);
                    model[strcspn(model, "\n")] = 0;
                }
                break;
            }
        fclose(c);
    }
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    fprintf(f, "Machine: %s, %ld CPUs, %.0f GiB RAM, %s %s %s. Date: %s. mmkit %s.\n\n", model,
            sysconf(_SC_NPROCESSORS_ONLN), (double)pages * (double)psz / (1 << 30), u.sysname,
            u.release, u.machine, date, mmk_version());
}

int mmk_cmd_bench(int argc, char **argv)
{
    int quick = 0;
    const char *out = "mmk-bench-report", *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            puts("usage: mmk bench [--quick] [--out DIR] [--only NAME]\n\n"
                 "Runs every benchmark program (bench_*) side by side with its peers (pipe(2),\n"
                 "a split-copy ring, ck_ring, pread/read, malloc, fork, LMDB, PMDK): medians of\n"
                 "several runs and ratios. Writes DIR/report.md and DIR/*.svg (default DIR:\n"
                 "mmk-bench-report). --quick finishes within about a minute. Peers that are\n"
                 "not installed are skipped with the package that adds them\n"
                 "(bench/install-peers.sh installs them all on Debian).\n"
                 "MMK_BENCH_DIR overrides where the bench_* programs are looked for.");
            return 0;
        } else {
            fprintf(stderr, "mmk bench: unknown argument '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    char dir[PATH_MAX];
    if (find_bench_dir(dir, sizeof dir)) {
        fprintf(stderr, "mmk bench: cannot find the bench_* programs (set MMK_BENCH_DIR)\n");
        return 2;
    }
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "mmk bench: %s: %s\n", dir, strerror(errno));
        return 2;
    }
    char *names[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 64) {
        if (strncmp(e->d_name, "bench_", 6) || strchr(e->d_name, '.'))
            continue;
        if (only && !strstr(e->d_name, only))
            continue;
        char p[PATH_MAX + 300];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (access(p, X_OK) == 0)
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (!n) {
        fprintf(stderr, "mmk bench: no bench_* programs in %s\n", dir);
        return 2;
    }
    qsort(names, (size_t)n, sizeof names[0], cmp_str);
    if (mkdir(out, 0755) && errno != EEXIST) {
        fprintf(stderr, "mmk bench: cannot create %s: %s\n", out, strerror(errno));
        return 2;
    }
    char rpath[PATH_MAX];
    snprintf(rpath, sizeof rpath, "%s/report.md", out);
    FILE *report = fopen(rpath, "w");
    if (!report) {
        fprintf(stderr, "mmk bench: cannot write %s: %s\n", rpath, strerror(errno));
        return 2;
    }
    fprintf(report, "# mmkit benchmarks%s\n\n", quick ? " (quick)" : "");
    describe_machine(report);
    fprintf(report, "Command: `mmk bench%s --out %s`. Each figure is the median of several "
                    "runs; compare ratios within this report, not absolute numbers across "
                    "machines.\n\n", quick ? " --quick" : "", out);
    int failed = 0;
    double limit = quick ? 40 : 900, t0 = mmk_now();
    for (int i = 0; i < n; i++) {
        char p[PATH_MAX + 300];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        fprintf(stderr, "mmk bench: %-20s ", names[i]);
        double t = mmk_now();
        fprintf(report, "## %s\n\n", names[i] + 6);
        fflush(report);
        int rc = run_one(p, quick, limit, report);
        fprintf(report, "\n");
        if (rc) {
            failed++;
            fprintf(report, "_%s %s_\n\n", names[i],
                    rc == -ETIMEDOUT ? "timed out" : "failed");
        }
        fprintf(stderr, "%s (%.1f s)\n", rc == 0 ? "ok" : rc == -ETIMEDOUT ? "timed out" : "FAILED",
                mmk_now() - t);
        free(names[i]);
    }
    if (nplots) {
        fprintf(report, "## Plots\n\n");
        for (int i = 0; i < nplots; i++) {
            if (write_svg(&plots[i], out) == 0)
                fprintf(report, "![%s](%s.svg)\n\n", plots[i].title, plots[i].id);
        }
    }
    fclose(report);
    fprintf(stderr, "mmk bench: wrote %s and %d plot%s in %.0f s\n", rpath, nplots,
            nplots == 1 ? "" : "s", mmk_now() - t0);
    return failed ? 1 : 0;
}
