#!/usr/bin/env bash
# Where a create at 1 client spends its time on modelhub on etcd (issue
# 20's latency target), taken apart by a packet capture on loopback
# instead of by the load generator's end-to-end figure, which moves by
# +-10 % from run to run with etcd's own latency. For each create the
# server answered: "before" (its request reached the server -> the first
# frame of its transaction left for etcd), "etcd" (-> etcd's answer came
# back), "after" (etcd's last frame before the answer -> the answer left).
# "before" and "after" are modelhub's own share.
#
#   bench/phases.sh [SERVE_ARGS ...]
#
# Each argument is one configuration: extra `serve` arguments, "" for
# none (the default: one configuration, ""). Configurations run in turn,
# PHASES_ROUNDS times (default 2), each on a fresh prefix of one throwaway
# etcd (bench/etcd_lib.sh): 2 s of creates to warm up, then
# PHASES_COUNT creates (default 2,000) from one client, captured. Prints
# the medians of the phases, the server time's p50/p90/p99, and the
# phases' medians over the slowest 1 %. Needs tcpdump (root) and python3.
#
#   sudo bench/phases.sh "" "--workers 1"
set -euo pipefail
cd "$(dirname "$0")/.."

command -v tcpdump >/dev/null || { echo "tcpdump is not installed (apt-get install -y tcpdump)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is not installed" >&2; exit 2; }
[ $# -gt 0 ] || set -- ""
rounds=${PHASES_ROUNDS:-2}
count=${PHASES_COUNT:-2000}
# shellcheck source=bench/etcd_lib.sh
. bench/etcd_lib.sh
etcd_port=${url##*:}

pid=
cap=
stop_all() {
  local p
  for p in "$cap" "$pid"; do
    if [ -n "$p" ]; then
      kill "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
  cap=
  pid=
}
trap 'stop_all; cleanup' EXIT

parse() {
  python3 - "$1" "$2" "$etcd_port" <<'EOF'
import re, statistics, sys
text, port, etcd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = []
for line in open(text):
    m = re.match(r'(\S+) IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+): .*length (\d+)', line)
    if not m or m[4] == '0':
        continue
    t, src, dst = float(m[1]), int(m[2]), int(m[3])
    who = 'answer' if src == port else 'request' if dst == port else 'to-etcd' if dst == etcd else 'from-etcd'
    rows.append((t, who, int(m[4])))
phases = []
for i, (t, who, n) in enumerate(rows):
    # A create's request carries its 1.5 KB body; smaller ones are other requests.
    if who != 'request' or n < 1000:
        continue
    j, seen = i + 1, []
    while j < len(rows) and rows[j][1] != 'answer':
        seen.append(rows[j])
        j += 1
    out = [r for r in seen if r[1] == 'to-etcd']
    back = [r for r in seen if r[1] == 'from-etcd']
    if j == len(rows) or not out or not back:
        continue
    # etcd's answer: the first frame back that is not a ping or window update.
    answer = [r for r in back if r[0] > out[0][0] and r[2] >= 60]
    if not answer:
        continue
    end = rows[j][0]
    phases.append(((end - t) * 1e6, (out[0][0] - t) * 1e6,
                   (answer[0][0] - out[0][0]) * 1e6, (end - back[-1][0]) * 1e6))
if len(phases) < 100:
    sys.exit(f'only {len(phases)} creates matched in the capture')
med = lambda k, xs: statistics.median(x[k] for x in xs)
phases.sort()
n = len(phases)
slow = phases[n - max(1, n // 100):]
print(f'  {n} creates: server {med(0, phases):.0f} us = before {med(1, phases):.0f} + etcd {med(2, phases):.0f} + after {med(3, phases):.0f} (medians)')
print(f'  server p50 {phases[n // 2][0]:.0f}  p90 {phases[int(n * .9)][0]:.0f}  p99 {phases[int(n * .99)][0]:.0f} us;'
      f' the slowest 1 %: before {med(1, slow):.0f}, etcd {med(2, slow):.0f}, after {med(3, slow):.0f} us (medians)')
EOF
}

for round in $(seq "$rounds"); do
  i=0
  for args in "$@"; do
    i=$((i + 1))
    addr=127.0.0.1:$((20000 + RANDOM % 10000))
    # shellcheck disable=SC2086 # the configuration's arguments, split
    "$modelhub" serve --store etcd --etcd-endpoints "$url" --etcd-prefix "/phases-$round-$i" \
      --listen "$addr" $args >"$work/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
      curl -fsS "http://$addr/readyz" >/dev/null 2>&1 && break
      sleep 0.1
    done
    curl -fsS "http://$addr/readyz" >/dev/null || { tail -n 20 "$work/server.log" >&2; exit 1; }
    "$bench" --server "http://$addr" --duration 2 create --clients 1 >/dev/null 2>&1
    tcpdump -i lo -n -s 128 -w "$work/cap.pcap" "tcp port ${addr##*:} or tcp port $etcd_port" >/dev/null 2>&1 &
    cap=$!
    sleep 1
    echo "== round $round, serve ${args:-(no extra arguments)}"
    "$bench" --server "http://$addr" --count "$count" create --clients 1 2>/dev/null | grep -E '^ +modelhub +[0-9]'
    sleep 0.5
    stop_all
    tcpdump -r "$work/cap.pcap" -n -tt 2>/dev/null >"$work/cap.txt"
    parse "$work/cap.txt" "${addr##*:}"
  done
done
