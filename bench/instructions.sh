#!/usr/bin/env bash
# Instructions per request of two server builds, counted by callgrind
# (user space only; the kernel's share is not counted), to settle what a
# noisy latency figure of bench/guard.sh cannot. Reads repeat within
# 0.1 % from run to run; writes within a few percent, since group commit
# batches them by timing; so run it when nothing else does, and compare
# several pairs.
#
#   bench/instructions.sh A_BIN B_BIN [workload] [pairs]
#
# workload: create, status, get or list (default create); pairs: how many
# A, B runs (default 2). Each run starts the server under valgrind on a
# fresh database on 127.0.0.1, warms it up with 500 requests from 16
# clients, then counts 3,000 more, and stops the server by its PID. list:
# 3,000 creates, one list of their stack (cached from then on), then 40
# more lists counted. Needs valgrind, curl and a release build of
# modelhub-bench.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
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
  ready "$addr" 600 0.2 "$work/server.log" "$pid"
  local calls=3000
  if [ "$workload" = list ]; then
    local cells=http://$addr/api/v1beta1/realms/bench/spaces/s/stacks/t/cells
    calls=40
    "$bench" --server "http://$addr" --count 3000 create --clients 16 >/dev/null 2>&1
    curl -fsS "$cells" -o /dev/null
    callgrind_control -i on "$pid" >/dev/null 2>&1
    for _ in $(seq "$calls"); do curl -fsS "$cells" -o /dev/null; done
  else
    "$bench" --server "http://$addr" --count 500 "$workload" --clients 16 >/dev/null 2>&1
    callgrind_control -i on "$pid" >/dev/null 2>&1
    "$bench" --server "http://$addr" --count "$calls" "$workload" --clients 16 >/dev/null 2>&1
  fi
  callgrind_control -i off "$pid" >/dev/null 2>&1
  stop
  callgrind_annotate "$out" 2>/dev/null |
    awk -v calls="$calls" '/PROGRAM TOTALS/ && !n { gsub(",", "", $1); print int($1 / calls); n = 1 }'
}

for i in $(seq "$pairs"); do
  ia=$(count "$a")
  ib=$(count "$b")
  echo "pair $i $workload: A $ia, B $ib instructions per request, B/A $(awk -v a="$ia" -v b="$ib" 'BEGIN { printf "%.4f", b / a }')"
done
