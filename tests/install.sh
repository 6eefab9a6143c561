#!/usr/bin/env bash
# Install the build into a temporary prefix, then build an outside program
# against it with pkg-config and with find_package(mmkit), shared and static.
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
P=$tmp/prefix
lib=$(ls -d "$P"/lib* | head -n1)
test -f "$P/include/mmkit/mmkit.h"
test -f "$P/bin/mmk"
ls "$lib"/libmmkit.so.0* >/dev/null
test -f "$lib/libmmkit.a"

# Only mmk_ symbols are exported, all under the version node.
bad=$(nm -D --defined-only "$lib/libmmkit.so" | awk '{print $3}' | grep -v '^mmk_' | grep -v '^MMKIT_' || true)
if [ -n "$bad" ]; then echo "unexpected exports: $bad"; exit 1; fi
# (Output captured first: `producer | grep -q` fails under pipefail when grep
# exits early and the producer dies of SIGPIPE.)
syms=$(nm -D --defined-only "$lib/libmmkit.so")
case "$syms" in *mmk__*) echo "internal symbol exported"; exit 1 ;; esac
dyn=$(objdump -T "$lib/libmmkit.so")
echo "$dyn" | grep 'MMKIT_0.1' | grep 'mmk_version' >/dev/null || { echo "mmk_version not versioned MMKIT_0.1"; exit 1; }

# A sanitizer build's library needs the sanitizer runtime in the consumer too.
san=""
[ -n "${MMK_SANITIZE:-}" ] && san="-fsanitize=$MMK_SANITIZE"
if command -v pkg-config >/dev/null; then
  export PKG_CONFIG_PATH=$lib/pkgconfig
  cc="${CC:-cc} $san"
  $cc -o "$tmp/pc_shared" "$src/tests/install/consumer.c" $(pkg-config --cflags --libs mmkit) -Wl,-rpath,"$lib"
  "$tmp/pc_shared"
  $cc -o "$tmp/pc_static" "$src/tests/install/consumer.c" $(pkg-config --cflags mmkit) "$lib/libmmkit.a" -pthread
  "$tmp/pc_static"
  [ -n "$san" ] || $cc -static-libgcc -o "$tmp/pc_static2" "$src/tests/install/consumer.c" $(pkg-config --static --cflags mmkit) -L"$lib" -Wl,-Bstatic -lmmkit -Wl,-Bdynamic -pthread
  [ -n "$san" ] || "$tmp/pc_static2"
else
  echo "note: pkg-config is not installed; the pkg-config consumers are skipped"
fi

cmake -S "$src/tests/install" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$P" -DCMAKE_C_FLAGS="$san" >/dev/null
cmake --build "$tmp/cm" >/dev/null
LD_LIBRARY_PATH=$lib "$tmp/cm/consumer_shared"
"$tmp/cm/consumer_static"
echo "install: pkg-config and find_package consumers built and ran"
