#!/usr/bin/env bash
# Issue 22's tail latency (bench/README.md, "Tail latency: bench/tail.sh"):
# a throwaway etcd (bench/etcd_lib.sh: free 127.0.0.1 ports, a temporary
# data directory, stopped by its PID at the end), then
#
#   modelhub-bench --spawn MODELHUB --etcd URL --etcd-pid PID tail
#
# creates, then status writes, from 64 clients, 3 runs of 60 s per store,
# the stores alternating; each modelhub run on a fresh server and database,
# etcd's created cells deleted, compacted and defragmented before each of
# its runs. Per run: ops/s, p50, p99, p99.9, max, errors and every second's
# requests, p99 and max; then the medians over the runs and the targets.
# About 13 minutes; the databases need a few GB free under $TMPDIR.
#
# Extra arguments go to `tail` (e.g. --series /tmp/tail.tsv, --runs 5);
# global options in BENCH_OPTS (e.g. "--duration 90"). Builds nothing when
# the binaries exist and the bench knows `tail` (else `cargo build
# --release -p modelhub -p modelhub-bench --features modelhub-bench/etcd`);
# MODELHUB and BENCH name other binaries, CARGO_TARGET_DIR is honoured. Needs etcd and etcdctl
# (Debian: apt-get install -y etcd-server etcd-client; protobuf-compiler to
# build).
set -euo pipefail
cd "$(dirname "$0")/.."
needs=(tail --series)
# shellcheck source=bench/etcd_lib.sh
. bench/etcd_lib.sh

# shellcheck disable=SC2086
"$bench" --spawn "$modelhub" --etcd "$url" --etcd-pid "$etcd_pid" ${BENCH_OPTS:-} tail "$@"
