#!/usr/bin/env bash
# Issue 22's watch comparison at equal write rates (bench/README.md,
# "Watch at equal rates: bench/watch_equal.sh"): a throwaway etcd
# (bench/etcd_lib.sh), then
#
#   modelhub-bench --spawn MODELHUB --etcd URL --etcd-pid PID --rounds 3 \
#     watch --equal-watchers 100,1000 --h2-streams 200 --writes 3000 --rate 200,max
#
# for 100 and then 1,000 watchers on both stores: the closed loop, then the
# writers paced at RATE (default 200) writes/s on both, then at the highest
# rate both sustain (`max`: 90 % of the lower of the rates at which every
# watcher received the closed loop's writes, printed). Each run alternates
# the stores in 3 rounds. Write-ack -> receipt p50, p99, max and missing
# for both, the ratio of the p99s, and per count and rate MET or MISSED
# for "p99 no worse than etcd's, 0 missing". modelhub's watchers share
# HTTP/2 connections, 200 streams each, as etcd's share its gRPC
# connection. About 5 minutes.
#
# RATE sets the fixed rate; WATCH_OPTS replaces the watch options after
# --rate (default "--equal-watchers 100,1000 --h2-streams 200 --writes
# 3000"); ROUNDS_OPTS the rounds (default "--rounds 3"); extra arguments go
# to `watch`; BENCH_OPTS are global options. Builds, binaries and etcd as
# bench/tail.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
needs=(watch --equal-watchers)
# shellcheck source=bench/etcd_lib.sh
. bench/etcd_lib.sh

# shellcheck disable=SC2086
"$bench" --spawn "$modelhub" --etcd "$url" --etcd-pid "$etcd_pid" \
  ${ROUNDS_OPTS---rounds 3} ${BENCH_OPTS:-} \
  watch --rate "${RATE:-200},max" ${WATCH_OPTS---equal-watchers 100,1000 --h2-streams 200 --writes 3000} "$@"
