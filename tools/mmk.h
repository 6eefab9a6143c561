/* Shared declarations of the mmk tool. Each command lives in its own file
 * (cmd_*.c); each stop of the demo tour in demo_*.c. */
#ifndef MMK_TOOL_H
#define MMK_TOOL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Commands: return the process exit code. argv[0] is the command name. */
int mmk_cmd_demo(int argc, char **argv);
/* Weak: a command exists once its cmd_*.c file is in the build. */
int mmk_cmd_pipe(int argc, char **argv) __attribute__((weak));
int mmk_cmd_heap(int argc, char **argv) __attribute__((weak));
int mmk_cmd_kv(int argc, char **argv) __attribute__((weak));
int mmk_cmd_bench(int argc, char **argv) __attribute__((weak));

/* ---- demo tour. A stop prints with the helpers below and returns 0 (ok),
 * 77 (skipped: print why) or 1 (failed). Stops are weak symbols so a stop
 * exists as soon as its demo_*.c file does. */
typedef int (*demo_stop_fn)(const char *tmpdir);
int demo_stop_vm(const char *tmpdir) __attribute__((weak));
int demo_stop_ring(const char *tmpdir) __attribute__((weak));
int demo_stop_file(const char *tmpdir) __attribute__((weak));
int demo_stop_arena(const char *tmpdir) __attribute__((weak));
int demo_stop_sparse(const char *tmpdir) __attribute__((weak));
int demo_stop_view(const char *tmpdir) __attribute__((weak));
int demo_stop_heap(const char *tmpdir) __attribute__((weak));
int demo_stop_kv(const char *tmpdir) __attribute__((weak));

void demo_title(const char *title, const char *subtitle);
/* One aligned line: "  label ........ value". */
void demo_fact(const char *label, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An explanatory sentence, dimmed on a terminal. */
void demo_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A verdict line: ok (green) or not (red). */
void demo_verdict(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Helpers shared by commands. */
double mmk_now(void);                                /* monotonic seconds */
long mmk_rss_bytes(void);                            /* resident set size, -1 if unknown */
int mmk_parse_size(const char *s, uint64_t *out);    /* "64K", "1M", "2G", bytes */
const char *mmk_fmt_bytes(double b, char *buf, size_t n);  /* "1.5 MiB" */
const char *mmk_fmt_rate(double bps, char *buf, size_t n); /* "3.2 GB/s" */
extern int mmk_color;                                /* colour output on */

#endif
