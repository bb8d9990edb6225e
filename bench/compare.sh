#!/usr/bin/env bash
# The side-by-side run of bench/README.md: a fresh etcd on loopback (temporary
# data dir), a fresh modelhub database, then `modelhub-bench all --big` with
# 5,000 watch writes (closed loop, then paced at 100/s) to watchers on
# HTTP/2, after a watch run with modelhub's watchers on HTTP/1.1. Extra
# arguments go to `all`; global options go in BENCH_OPTS, except the
# closed-loop length and rounds, ROUNDS_OPTS (default "--duration 15
# --rounds 3"; e.g. ROUNDS_OPTS="--duration 4 --rounds 2"). Needs etcd and protoc
# (Debian: apt-get install -y etcd-server etcd-client protobuf-compiler).
# Stops only the etcd it started, and removes its temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

port=${ETCD_PORT:-23790}
peer=$((port + 10))
cargo build --release -p modelhub -p modelhub-bench --features modelhub-bench/etcd

work=$(mktemp -d)
etcd --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "default=http://127.0.0.1:$peer" >"$work/etcd.log" 2>&1 &
etcd_pid=$!
cleanup() {
  kill "$etcd_pid" 2>/dev/null || true
  wait "$etcd_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 50); do
  ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$port" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done

# 1,000 watch connections plus the server's side of them.
ulimit -n 20000 2>/dev/null || true
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  nproc: $(nproc)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "etcd: $(etcd --version | head -1)"
# First the watch with each of modelhub's 1,000 watchers on an HTTP/1.1
# connection of its own (a database of its own), while etcd is fresh too.
# shellcheck disable=SC2086
target/release/modelhub-bench --spawn target/release/modelhub \
  --etcd "http://127.0.0.1:$port" --etcd-pid "$etcd_pid" ${BENCH_OPTS:-} watch --writes 3000 --rate 100
# Then everything, modelhub's watchers sharing HTTP/2 connections (200
# streams each) as etcd's share its gRPC connection; the watch target
# compares the run paced at 100 writes/s. Each closed-loop workload runs
# 15 s per store, in 3 rounds alternating the two (ROUNDS_OPTS= to change).
# shellcheck disable=SC2086
target/release/modelhub-bench --spawn target/release/modelhub --data "$work/modelhub.redb" \
  --etcd "http://127.0.0.1:$port" --etcd-pid "$etcd_pid" ${ROUNDS_OPTS---duration 15 --rounds 3} ${BENCH_OPTS:-} all --big --writes 5000 --rate 100 --h2-streams 200 "$@"
