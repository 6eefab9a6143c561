#!/usr/bin/env bash
# The mmk tool: help, version, errors, the demo tour, and mmk bench --quick.
set -uo pipefail
build=$1
mmk=$build/tools/mmk
fail() { echo "FAIL: $*"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$mmk" --help | grep "usage: mmk" >/dev/null || fail "--help"
"$mmk" --version | grep -Eq '^mmk [0-9]+\.[0-9]+\.[0-9]+$' || fail "--version"
"$mmk" >/dev/null 2>&1; [ $? -eq 2 ] || fail "no command should exit 2"
"$mmk" frobnicate 2>"$tmp/err"; [ $? -eq 2 ] || fail "unknown command should exit 2"
grep -q "unknown command 'frobnicate'" "$tmp/err" || fail "unknown command message"
"$mmk" demo --bogus 2>/dev/null; [ $? -eq 2 ] || fail "demo with a bad option should exit 2"
"$mmk" demo --help | grep "usage: mmk demo" >/dev/null || fail "demo --help"

# The tour runs, leaves no files behind, prints no escape codes with --no-color.
mkdir "$tmp/t"
start=$(date +%s)
TMPDIR=$tmp/t "$mmk" demo --no-color >"$tmp/demo.out" 2>&1 || { cat "$tmp/demo.out"; fail "demo failed"; }
took=$(( $(date +%s) - start ))
cat "$tmp/demo.out"
[ -z "$(ls -A "$tmp/t")" ] || fail "demo left files behind: $(ls -A "$tmp/t")"
grep -q $'\033' "$tmp/demo.out" && fail "escape codes with --no-color"
grep -q "0 failed" "$tmp/demo.out" || fail "a demo stop failed"
echo "demo took ${took}s"
[ "$took" -le 60 ] || fail "demo took ${took}s"

# Closed stdout: the tool must not hang or crash by signal.
"$mmk" demo --no-color 2>/dev/null | head -c 10 >/dev/null
st=${PIPESTATUS[0]}
[ "$st" -lt 128 ] || [ "$st" -eq 141 ] || fail "demo with closed stdout died with status $st"

# mmk bench --quick: a report and plots (only where bench programs are built).
if [ -d "$build/bench" ] && ls "$build"/bench/bench_* >/dev/null 2>&1; then
  "$mmk" bench --bogus 2>/dev/null; [ $? -eq 2 ] || fail "bench with a bad option should exit 2"
  MMK_BENCH_DIR=$build/bench timeout 300 "$mmk" bench --quick --out "$tmp/bench" || fail "bench --quick"
  n=$(ls "$tmp"/bench/*.svg | wc -l)
  [ "$n" -ge 5 ] || fail "only $n plots"
  for b in "$build"/bench/bench_*; do
    grep -q "^## ${b##*/bench_}" "$tmp/bench/report.md" || fail "report lacks ${b##*/}"
  done
  [ -s "$tmp/bench/report.md" ] || fail "no report"
  ls "$tmp/bench"/*.svg >/dev/null 2>&1 || fail "no svg plots"
  grep -q '<svg' "$tmp"/bench/*.svg || fail "svg content"
  grep -q '^PLOT' "$tmp/bench/report.md" && fail "PLOT lines leaked into the report"
else
  echo "note: bench programs not built in this preset; bench part skipped"
fi
echo "tool: all checks passed"
