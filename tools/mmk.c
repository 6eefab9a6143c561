/* mmk: the command-line face of mmkit. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mmkit/mmkit.h>
#include "mmk.h"

int mmk_color;

static const char usage[] =
    "usage: mmk COMMAND [ARGS]\n"
    "\n"
    "  demo [--no-color]             a live tour of every technique, with measured figures\n"
    "  pipe [-s SIZE] [-p]           stdin to stdout through a magic ring (reader + writer thread)\n"
    "  heap info FILE                format, sizes, commit count, free space of a heap file\n"
    "  heap check FILE               verify a heap: exit 0 intact, 1 corrupt, 2 other error\n"
    "  kv put FILE KEY VALUE         a persistent map at the heap's root (created on first put)\n"
    "  kv get FILE KEY               print the value; exit 1 when the key is absent\n"
    "  kv del FILE KEY               delete a key; exit 1 when absent\n"
    "  kv list FILE                  one line a key\n"
    "  kv check FILE                 verify the heap and the map: exit 0 intact, 1 corrupt\n"
    "  bench [--quick] [--out DIR]   side-by-side benchmarks: Markdown report and SVG plots\n"
    "\n"
    "  mmk --version | mmk COMMAND --help\n";

double mmk_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

long mmk_rss_bytes(void)
{
    long size = 0, res = -1;
    FILE *f = fopen("/proc/self/statm", "re");
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &res) != 2)
            res = -1;
        fclose(f);
    }
    return res < 0 ? -1 : res * sysconf(_SC_PAGESIZE);
}

int mmk_parse_size(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return -EINVAL;
    unsigned shift = 0;
    switch (*end) {
    case 0: break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: return -EINVAL;
    }
    if (*end == 'i' && shift)
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return -EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

const char *mmk_fmt_bytes(double b, char *buf, size_t n)
{
    static const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
    return buf;
}

const char *mmk_fmt_rate(double bps, char *buf, size_t n)
{
    static const char *u[] = {"B/s", "kB/s", "MB/s", "GB/s", "TB/s"};
    int i = 0;
    while (bps >= 1000 && i < 4) {
        bps /= 1000;
        i++;
    }
    snprintf(buf, n, "%.1f %s", bps, u[i]);
    return buf;
}

struct cmd {
    const char *name;
    int (*fn)(int, char **);
};

int main(int argc, char **argv)
{
    static const struct cmd cmds[] = {
        {"demo", mmk_cmd_demo}, {"pipe", mmk_cmd_pipe}, {"heap", mmk_cmd_heap},
        {"kv", mmk_cmd_kv},     {"bench", mmk_cmd_bench},
    };
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("mmk %s\n", mmk_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) {
            if (!cmds[i].fn) {
                fprintf(stderr, "mmk: '%s' is not part of this build\n", argv[1]);
                return 2;
            }
            return cmds[i].fn(argc - 1, argv + 1);
        }
    fprintf(stderr, "mmk: unknown command '%s'\n\n%s", argv[1], usage);
    return 2;
}
