#!/bin/bash
# mmk kv: happy paths and error paths (exit codes, messages on stderr,
# damaged and foreign files, closed stdout). Args: build dir, source dir.
set -u
B=$1
MMK=$B/tools/mmk
[ -x "$MMK" ] || { echo "SKIP: $MMK not built"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/mmk-kv-test-XXXXXX")
trap 'rm -rf "$T"' EXIT
F=$T/store.heap
fail() { echo "FAIL: $*"; exit 1; }

# expect CODE CMD...: run, compare the exit code, keep stdout/stderr.
expect() {
    local want=$1; shift
    "$@" >"$T/out" 2>"$T/err"
    local got=$?
    [ "$got" = "$want" ] || { echo "stdout:"; cat "$T/out"; echo "stderr:"; cat "$T/err";
                              fail "'$*' exited $got, expected $want"; }
}

# help
expect 0 "$MMK" kv --help
grep -q "kv put FILE KEY VALUE" "$T/out" || fail "kv --help lacks put"
for c in put get del list check; do
    expect 0 "$MMK" kv $c --help
    grep -q "usage: mmk kv $c" "$T/out" || fail "kv $c --help"
done
expect 2 "$MMK" kv
expect 2 "$MMK" kv frobnicate "$F"
grep -q "unknown command" "$T/err" || fail "unknown command message"
expect 2 "$MMK" kv put "$F" onlykey
grep -q "expected FILE KEY VALUE" "$T/err" || fail "missing argument message"
expect 2 "$MMK" kv get "$F" a b

# missing file: get/del/list fail with a message, exit 2; put creates it
expect 2 "$MMK" kv get "$T/missing.heap" k
grep -qi "no such file" "$T/err" || fail "missing file message"
expect 2 "$MMK" kv del "$T/missing.heap" k
expect 2 "$MMK" kv list "$T/missing.heap"
[ -e "$T/missing.heap" ] && fail "a read created the file"

expect 0 "$MMK" kv put "$F" hello world
expect 0 "$MMK" kv get "$F" hello
[ "$(cat "$T/out")" = "world" ] || fail "get hello printed '$(cat "$T/out")'"
expect 0 "$MMK" kv put "$F" hello "new value with spaces"
expect 0 "$MMK" kv get "$F" hello
[ "$(cat "$T/out")" = "new value with spaces" ] || fail "replace"
expect 0 "$MMK" kv put "$F" "" "empty key"
expect 0 "$MMK" kv put "$F" novalue ""
expect 0 "$MMK" kv get "$F" novalue
[ "$(cat "$T/out")" = "" ] || fail "empty value"
expect 0 "$MMK" kv get "$F" ""
[ "$(cat "$T/out")" = "empty key" ] || fail "empty key"
expect 1 "$MMK" kv get "$F" absent
grep -q "no key 'absent'" "$T/err" || fail "absent key message"
[ -s "$T/out" ] && fail "absent key printed something"

for i in $(seq 1 200); do echo "k$i"; done >"$T/keys"
for i in $(seq 1 200); do "$MMK" kv put "$F" "k$i" "v$i" || fail "put k$i"; done
expect 0 "$MMK" kv list "$F"
[ "$(wc -l <"$T/out")" = 203 ] || fail "list gave $(wc -l <"$T/out") lines, expected 203"
grep -qx hello "$T/out" && grep -qx k137 "$T/out" || fail "list lacks keys"
expect 0 "$MMK" kv get "$F" k137
[ "$(cat "$T/out")" = v137 ] || fail "get k137"
expect 0 "$MMK" kv del "$F" k137
expect 1 "$MMK" kv del "$F" k137
expect 1 "$MMK" kv get "$F" k137
expect 0 "$MMK" kv check "$F"
grep -q "202 keys" "$T/out" || fail "check count: $(cat "$T/out")"

# closed stdout: an error, not a silent success
if "$MMK" kv list "$F" >&- 2>"$T/err"; then fail "list to a closed stdout succeeded"; fi
grep -q "standard output" "$T/err" || fail "closed stdout message: $(cat "$T/err")"

# foreign files: exit 2 with a message, nothing changed
printf 'just some text\n' >"$T/text"
cp "$T/text" "$T/text.orig"
expect 2 "$MMK" kv get "$T/text" k
[ -s "$T/err" ] || fail "foreign file: no message"
expect 2 "$MMK" kv put "$T/text" k v
cmp -s "$T/text" "$T/text.orig" || fail "put changed a foreign file"
head -c 3000000 /dev/urandom >"$T/random"
expect 2 "$MMK" kv list "$T/random"
expect 2 "$MMK" kv get "$T" k # a directory

# a heap whose root is not a map: a heap made by a program, root = an object
cat >"$T/rootobj.c" <<'EOF'
#include <mmkit/mmkit.h>
#include <string.h>
int main(int argc, char **argv) {
    mmk_heap *h; mmk_ref r;
    if (argc < 2 || mmk_heap_open(argv[1], MMK_HEAP_CREATE, &h) || mmk_heap_begin(h)) return 1;
    if (mmk_heap_alloc(h, 256, &r)) return 1;
    memset(mmk_heap_ptr(h, r), 0x5a, 256);
    if (mmk_heap_set_root(h, r) || mmk_heap_commit(h)) return 1;
    mmk_heap_close(h);
    return 0;
}
EOF
if cc -std=gnu11 -I"$2/include" "$T/rootobj.c" "$B/libmmkit.a" -lpthread -o "$T/rootobj" 2>/dev/null; then
    "$T/rootobj" "$T/other.heap" || fail "could not make a heap with a non-map root"
    expect 2 "$MMK" kv get "$T/other.heap" k
    grep -q "not a map" "$T/err" || fail "non-map root message: $(cat "$T/err")"
    expect 2 "$MMK" kv put "$T/other.heap" k v
    expect 2 "$MMK" kv list "$T/other.heap"
    expect 1 "$MMK" kv check "$T/other.heap"
else
    echo "note: no C compiler for the non-map-root case"
fi

# a damaged heap file: flip bytes in the middle, every command fails cleanly
cp "$F" "$T/bad.heap"
cp "$F-log" "$T/bad.heap-log" 2>/dev/null
size=$(stat -c %s "$T/bad.heap")
for off in 8 100 $((size / 2)) $((size - 100)); do
    printf '\xff\xfe\xfd\xfc' | dd of="$T/bad.heap" bs=1 seek=$off conv=notrunc status=none
done
run_bad() { # CMD ARGS...: kv CMD on the damaged file
    local c=$1; shift
    "$MMK" kv "$c" "$T/bad.heap" "$@" >/dev/null 2>"$T/err"
    local rc=$?
    [ $rc -ge 128 ] && fail "damaged heap: kv $c died of a signal"
    [ $rc -le 2 ] || fail "damaged heap: kv $c exited $rc"
    [ $rc = 0 ] || [ -s "$T/err" ] || fail "damaged heap: kv $c failed without a message"
}
run_bad get k1
run_bad list
run_bad del k1
run_bad put k1 x
run_bad check

echo "kv.sh: ok"
