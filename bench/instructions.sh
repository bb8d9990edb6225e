#!/usr/bin/env bash
# Instructions per request of two server builds, counted by callgrind:
# within a fraction of a percent from run to run on a quiet machine, so it
# settles what a noisy latency figure of bench/guard.sh cannot (user space
# only; the kernel's share is not counted). Group commit makes the count
# depend a little on timing (a busy machine batches differently), so run
# it when nothing else does, and compare pairs.
#
#   bench/instructions.sh A_BIN B_BIN [workload] [pairs]
#
# workload: create, status or get (default create); pairs: how many A, B
# runs (default 2). Each run starts the server under valgrind on a fresh
# database on 127.0.0.1, warms it up with 500 requests from 16 clients,
# then counts 3,000 more, and stops the server by its PID. Needs valgrind
# and a release build of modelhub-bench.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
[ $# -ge 2 ] || usage
read -r a b workload pairs <<<"$1 $2 ${3:-create} ${4:-2}"
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
# shellcheck source=bench/lib.sh
. bench/lib.sh

count() {
  local bin=$1 out=$work/callgrind.out addr
  rm -rf "$work/db" "$out"
  mkdir "$work/db"
  addr=127.0.0.1:$((20000 + RANDOM % 10000))
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
    "$bin" serve --listen "$addr" --data "$work/db/i.redb" >"$work/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    curl -fsS "http://$addr/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  "$bench" --server "http://$addr" --count 500 "$workload" --clients 16 >/dev/null 2>&1
  callgrind_control -i on "$pid" >/dev/null 2>&1
  "$bench" --server "http://$addr" --count 3000 "$workload" --clients 16 >/dev/null 2>&1
  callgrind_control -i off "$pid" >/dev/null 2>&1
  stop
  callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n { gsub(",", "", $1); print int($1 / 3000); n = 1 }'
}

for i in $(seq "$pairs"); do
  ia=$(count "$a")
  ib=$(count "$b")
  echo "pair $i $workload: A $ia, B $ib instructions per request, B/A $(awk -v a="$ia" -v b="$ib" 'BEGIN { printf "%.4f", b / a }')"
done
