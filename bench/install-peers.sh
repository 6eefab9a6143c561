#!/usr/bin/env bash
# Install the peers the benchmarks compare against (Debian/Ubuntu), then
# re-run cmake so bench/ picks them up.
set -euo pipefail
sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
$sudo_ apt-get update
DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y liblmdb-dev libck-dev libpmemobj-dev pkg-config
