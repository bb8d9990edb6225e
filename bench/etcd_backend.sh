#!/usr/bin/env bash
# Issue 20's benchmark (bench/README.md, "modelhub on etcd"): modelhub on
# etcd, as one replica and as two replicas serving one prefix (the clients,
# watchers and writers dealt out between them), against raw etcd, all in
# the same run and on one local etcd: a single member on free 127.0.0.1
# ports, its data in a temporary directory, started with
# `--quota-backend-bytes 8589934592 --auto-compaction-retention 0`.
# `modelhub-bench etcd-backend` then runs creates at 1 and 64 clients, GETs
# from 16 clients, the watch fan-out paced at 100 writes/s and lists of
# 10,000 cells, in rounds that rotate the three stores, and judges the
# issue's targets (at most 1.5x raw etcd).
#
# Each modelhub target has a prefix of its own (/bench-1, /bench-2), so
# that the idle one follows no writes. The modelhub figures' server CPU
# includes etcd's (the work of a request is in both).
#
# Extra arguments go to `etcd-backend` (e.g. --repeat 9 --cells 2000); its
# watch options in WATCH_OPTS (default "--watchers 1000 --etcd-watchers
# 1000 --h2-streams 200 --writes 1500 --rate 100"); global options in
# BENCH_OPTS; the closed loops' length and rounds in ROUNDS_OPTS (default
# "--duration 10 --rounds 3"); REPLICAS (default 1,2);
# MODELHUB and BENCH name other binaries; NO_BUILD=1 skips the build;
# ETCD_PORT and ETCD_PEER_PORT fix the ports. Needs etcd and protoc
# (Debian: apt-get install -y etcd-server etcd-client protobuf-compiler).
# Stops only the etcd it started (by its PID; the modelhub replicas are
# the bench's, stopped by it), and removes its temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release -p modelhub -p modelhub-bench --features modelhub-bench/etcd
fi
# etcd's own compaction off: the bench's stores compact as they would.
etcd_extra=(--auto-compaction-retention 0)
# shellcheck source=bench/etcd_lib.sh
. bench/etcd_lib.sh
# shellcheck disable=SC2086
"$bench" --spawn "$modelhub" \
  --spawn-args "--store etcd --etcd-endpoints $url --etcd-prefix /bench-{n}" \
  --replicas "${REPLICAS:-1,2}" \
  --etcd "$url" --etcd-pid "$etcd_pid" \
  ${ROUNDS_OPTS---duration 10 --rounds 3} ${BENCH_OPTS:-} \
  etcd-backend ${WATCH_OPTS---watchers 1000 --etcd-watchers 1000 --h2-streams 200 --writes 1500 --rate 100} "$@"
ETCDCTL_API=3 etcdctl --endpoints "$url" endpoint status -w table || true
