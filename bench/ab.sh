#!/usr/bin/env bash
# A/B of two server builds or settings on the same workload, in alternating
# pairs on fresh databases, so that the machine's slow and fast phases fall
# on both (the experiments of bench/README.md ran this way).
#
#   bench/ab.sh "A command" "B command" [pairs] [bench arguments...]
#
# Each command starts a server and gets `serve --listen ADDR --data DB`
# appended, e.g. "target/release/modelhub" or
# "env MODELHUB_CACHE_MB=32 /tmp/other/modelhub". Bench arguments default
# to "--duration 6 create --clients 64". Prints one line per run: the
# modelhub lines of `modelhub-bench`, which include the server's CPU per
# request. ADDR is 127.0.0.1:${AB_PORT:-18081}; DB is a fresh file under a
# temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
a=$1
b=$2
pairs=${3:-3}
shift $(($# < 3 ? $# : 3))
bench_args=("$@")
[ ${#bench_args[@]} -gt 0 ] || bench_args=(--duration 6 create --clients 64)

addr=127.0.0.1:${AB_PORT:-18081}
# shellcheck source=bench/lib.sh
. bench/lib.sh

for i in $(seq "$pairs"); do
  for side in A B; do
    cmd=$a
    [ "$side" = B ] && cmd=$b
    rm -f "$work"/db*
    # shellcheck disable=SC2086 # the command is split into words on purpose
    $cmd serve --listen "$addr" --data "$work/db" >"$work/server.log" 2>&1 &
    pid=$!
    ready "$addr" 50 0.1 "$work/server.log" "$pid"
    line=$("$bench" --server "http://$addr" --server-pid "$pid" "${bench_args[@]}" 2>&1 |
      grep '^  modelhub' | tr -s ' ' | tr '\n' ' ')
    echo "pair $i $side: $line"
    stop
  done
done
