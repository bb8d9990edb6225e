#!/usr/bin/env bash
# Recovery time after an unclean stop, on a large database: loads
# OBJECTS small objects (default 1,000,000, with `modelhub-bench list --big`),
# then ROUNDS times: starts the server with a long checkpoint interval,
# writes for 3 s (so that the log holds records to replay), kills it with
# SIGKILL, and times the restart to the "listening" line and to /readyz;
# a clean restart of the same database is the anchor in the same run.
#
#   bench/recovery.sh [SERVER_BINARY] [ROUNDS]
#
# Run from the repository root on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
server=${1:-target/release/modelhub}
rounds=${2:-3}
objects=${OBJECTS:-1000000}
[ -x "$server" ] || cargo build --release
source bench/lib.sh
data=$work/big.redb

echo "== loading $objects objects into $data"
"$bench" --spawn "$server" --data "$data" list --cells 100 --repeat 1 --big --big-objects "$objects" \
  | grep -E "load|loaded" || true
ls -l "$data" "$data.wal" | awk '{print $5, $9}'

# Starts the server on $data with extra arguments; sets pid and addr, and
# sets listen and ready: the milliseconds to "listening" and to /readyz
# answering 200.
start() {
  local log=$work/server.log t0 t1 t2
  t0=$(date +%s%N)
  RUST_LOG=${RUST_LOG:-info} "$server" serve --listen 127.0.0.1:0 --data "$data" --min-free-space 0 "$@" \
    >"$work/stdout" 2>"$log" &
  pid=$!
  for _ in $(seq 1 6000); do
    grep -q "listening on" "$work/stdout" 2>/dev/null && break
    sleep 0.005
  done
  t1=$(date +%s%N)
  addr=$(sed -n 's/.*listening on http:\/\///p' "$work/stdout")
  for _ in $(seq 1 6000); do
    curl -fsS "http://$addr/readyz" >/dev/null 2>&1 && break
    sleep 0.005
  done
  t2=$(date +%s%N)
  listen=$(( (t1 - t0) / 1000000 ))
  ready=$(( (t2 - t0) / 1000000 ))
}

for round in $(seq 1 "$rounds"); do
  start --checkpoint-interval 60m
  "$bench" --server "http://$addr" --duration 3 create --clients 16 >/dev/null
  logged=$(stat -c %s "$data.wal")
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true; pid=
  start
  replayed=$(grep -o 'replayed=[0-9]*' "$work/server.log" | head -1 || true)
  echo "round $round: after kill -9 ($replayed, log file $logged bytes): listening ${listen} ms, ready ${ready} ms"
  grep -iE "repair|counting|spare|store opened" "$work/server.log" | sed 's/^/    server: /' | cut -c1-200 || true
  stop
  start
  echo "round $round: after a clean stop (anchor): listening ${listen} ms, ready ${ready} ms"
  stop
done
