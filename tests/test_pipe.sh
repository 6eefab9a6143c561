#!/usr/bin/env bash
# mmk pipe: byte-exact on hundreds of MiB of random data (scaled by
# MMK_TEST_SCALE), file and pipe input, tiny and default rings, progress,
# bad usage, closed stdout (exit 1 with a message, no SIGPIPE death).
set -u
BUILD=${1:-build}
MMK=$BUILD/tools/mmk
[ -x "$MMK" ] || { echo "SKIP: $MMK not built"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/mmk-pipe-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

scale=${MMK_TEST_SCALE:-1}
mib=$(awk -v s="$scale" 'BEGIN { m = int(200 * s); if (m < 8) m = 8; print m }')
head -c $((mib << 20)) /dev/urandom > "$T/in" || fail "cannot make input"
want=$(md5sum < "$T/in" | cut -d' ' -f1)

# --help and bad usage
"$MMK" pipe --help | grep -q "usage: mmk pipe" || fail "--help"
for bad in "-s foo" "-s 0" "-s 12Q" "-s" "--bogus" "-s -5"; do
    # shellcheck disable=SC2086
    "$MMK" pipe $bad < /dev/null > /dev/null 2> "$T/err"
    rc=$?
    [ $rc -eq 2 ] || fail "'mmk pipe $bad' exit $rc, want 2"
    grep -q "mmk pipe:" "$T/err" || fail "'mmk pipe $bad' gave no message"
done

# byte-exact: regular file in, default ring
t0=$(date +%s.%N)
got=$("$MMK" pipe -q < "$T/in" | md5sum | cut -d' ' -f1)
t1=$(date +%s.%N)
[ "$got" = "$want" ] || fail "file input: checksum differs"
echo "mmk pipe: $mib MiB byte-exact in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s"

# pipe in, pipe out, a 3-page ring (wraps all the time)
got=$(cat "$T/in" | "$MMK" pipe -s 12K -q | md5sum | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "pipe input, 12K ring: checksum differs"

# odd ring size, output to a file
"$MMK" pipe -s 100001 -q < "$T/in" > "$T/out" || fail "exit status"
cmp -s "$T/in" "$T/out" || fail "100001-byte ring: output differs"

# empty input
"$MMK" pipe -q < /dev/null > "$T/out" || fail "empty input"
[ ! -s "$T/out" ] || fail "empty input gave output"

# progress: percent and a rate when the size is known
"$MMK" pipe -p < "$T/in" > /dev/null 2> "$T/err" || fail "-p exit"
grep -q "100%" "$T/err" || fail "-p: no percent in: $(cat "$T/err")"
grep -q "/s" "$T/err" || fail "-p: no rate"

# closed stdout: head stops reading; mmk must exit 1 with a message
"$MMK" pipe -q < "$T/in" 2> "$T/err" | head -c 1000 > /dev/null
rc=${PIPESTATUS[0]}
[ "$rc" -eq 1 ] || fail "closed stdout: exit $rc, want 1 (141 = killed by SIGPIPE)"
grep -q "write error" "$T/err" || fail "closed stdout: no message"

# stdout not open at all
"$MMK" pipe -q < "$T/in" >&- 2> "$T/err"
rc=$?
[ "$rc" -eq 1 ] || fail "stdout closed: exit $rc"
echo "test_pipe: ok"
