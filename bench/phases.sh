#!/usr/bin/env bash
# Where a create at 1 client spends its time on modelhub on etcd (issue
# 20's latency target), taken apart by a packet capture on loopback
# instead of by the load generator's end-to-end figure, which moves by
# +-10 % from run to run with etcd's own latency. For each create the
# server answered, three phases that add up to the server's time:
# "before" (its request reached the server -> the transaction's first
# frame left for etcd), "etcd" (-> etcd's answer came back: etcd's work,
# the loopback, and the rest of the transaction's frames, which the
# client sends after the first), "after" (-> the answer left: the watch
# event, the feed, the render). The capture itself slows every phase a
# little; compare configurations within one run.
#
#   bench/phases.sh [SERVE_ARGS ...]
#
# Each argument is one configuration: extra `serve` arguments, "" for
# none (the default: one configuration, ""). Configurations run in turn,
# PHASES_ROUNDS times (default 2), each on a fresh prefix of one throwaway
# etcd (bench/etcd_lib.sh): 2 s of creates to warm up, then PHASES_COUNT
# creates (default 2,000) from one client, captured. Prints how many
# creates the capture matched and what tcpdump dropped, the phases'
# medians, the server time's p50/p90/p99, and the phases' medians over
# the slowest 1 %. Servers listen on 127.0.0.1 and are stopped by their
# PID. MODELHUB and BENCH name the binaries (default
# ${CARGO_TARGET_DIR:-target}/release/); nothing is built. Needs root
# (tcpdump), etcd, etcdctl, curl and python3.
#
#   sudo PHASES_ROUNDS=3 bench/phases.sh "" "--workers 1"
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in tcpdump python3 etcd etcdctl curl; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (tcpdump: apt-get install -y tcpdump)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "tcpdump needs root: run as root (sudo)" >&2; exit 2; }
[ $# -gt 0 ] || set -- ""
rounds=${PHASES_ROUNDS:-2}
count=${PHASES_COUNT:-2000}
# shellcheck source=bench/etcd_lib.sh
. bench/etcd_lib.sh
# shellcheck source=bench/ready.sh
. bench/ready.sh
for bin in "$modelhub" "$bench"; do
  [ -x "$bin" ] || { echo "$bin is missing: build it (cargo build --release -p modelhub -p modelhub-bench) or set MODELHUB and BENCH" >&2; exit 2; }
done
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
  python3 - "$1" "$2" "$etcd_port" "$count" <<'EOF'
import re, statistics, sys
text, port, etcd, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = []
for line in open(text):
    m = re.match(r'(\S+) IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+): .*length (\d+)', line)
    if not m or m[4] == '0':
        continue
    t, src, dst = float(m[1]), int(m[2]), int(m[3])
    who = 'answer' if src == port else 'request' if dst == port else 'to-etcd' if dst == etcd else 'from-etcd'
    rows.append((t, who, int(m[4])))
phases = []
found = unanswered = unmatched = 0
for i, (t, who, n) in enumerate(rows):
    # A create's request carries its 1.5 KB body; smaller ones are other requests.
    if who != 'request' or n < 1000:
        continue
    found += 1
    j, seen = i + 1, []
    while j < len(rows) and rows[j][1] not in ('answer', 'request'):
        seen.append(rows[j])
        j += 1
    # Without its answer before the next request packet (one the capture
    # missed, or a request sent in two segments), a window would span two
    # creates: left out.
    if j == len(rows) or rows[j][1] != 'answer':
        unanswered += 1
        continue
    # The transaction's first frame (HEADERS, 33 bytes or more), not a
    # window update or ping acknowledgement (13 and 17 bytes).
    out = [r for r in seen if r[1] == 'to-etcd' and r[2] >= 33]
    # etcd's answer: the first frame back after it that is not a ping or
    # window update.
    back = [r for r in seen if r[1] == 'from-etcd' and out and r[0] > out[0][0] and r[2] >= 60]
    if not out or not back:
        unmatched += 1
        continue
    end = rows[j][0]
    phases.append(((end - t) * 1e6, (out[0][0] - t) * 1e6,
                   (back[0][0] - out[0][0]) * 1e6, (end - back[0][0]) * 1e6))
if len(phases) < 100:
    sys.exit(f'  only {len(phases)} of {count} creates matched in the capture'
             f' ({unanswered} without an answer before the next request, {unmatched} without'
             ' a transaction frame or etcd\'s answer)')
med = lambda k, xs: statistics.median(x[k] for x in xs)
phases.sort()
n = len(phases)
pct = lambda q: phases[round((n - 1) * q)][0]
slow = phases[n - max(1, n // 100):]
print(f'  {n} of {count} creates matched ({found} in the capture; {unanswered} without an answer before the next request,'
      f' {unmatched} without a transaction frame or etcd\'s answer)')
print(f'  server {med(0, phases):.0f} us; before {med(1, phases):.0f}, etcd {med(2, phases):.0f}, after {med(3, phases):.0f} (medians)')
print(f'  server p50 {pct(.5):.0f}  p90 {pct(.9):.0f}  p99 {pct(.99):.0f} us;'
      f' the slowest 1 % ({len(slow)}): before {med(1, slow):.0f}, etcd {med(2, slow):.0f}, after {med(3, slow):.0f} us (medians)')
EOF
}

for round in $(seq "$rounds"); do
  i=0
  for args in "$@"; do
    i=$((i + 1))
    addr=127.0.0.1:$(free_port)
    # shellcheck disable=SC2086 # the configuration's arguments, split
    "$modelhub" serve --store etcd --etcd-endpoints "$url" --etcd-prefix "/phases-$round-$i" \
      --listen "$addr" $args >"$work/server.log" 2>&1 &
    pid=$!
    ready "$addr" 100 0.1 "$work/server.log" "$pid"
    "$bench" --server "http://$addr" --duration 2 create --clients 1 >"$work/bench.log" 2>&1 ||
      { echo "the warm-up failed:" >&2; cat "$work/bench.log" >&2; exit 1; }
    tcpdump -i lo -n -s 128 -w "$work/cap.pcap" "tcp port ${addr##*:} or tcp port $etcd_port" \
      2>"$work/tcpdump.log" &
    cap=$!
    # tcpdump says when it is capturing.
    for _ in $(seq 100); do
      grep -q 'listening on' "$work/tcpdump.log" && break
      kill -0 "$cap" 2>/dev/null || break
      sleep 0.1
    done
    grep -q 'listening on' "$work/tcpdump.log" ||
      { echo "tcpdump did not start:" >&2; cat "$work/tcpdump.log" >&2; exit 1; }
    sleep 0.2
    echo "== round $round, serve ${args:-(no extra arguments)}"
    "$bench" --server "http://$addr" --count "$count" create --clients 1 >"$work/bench.log" 2>&1 ||
      { echo "the bench failed:" >&2; cat "$work/bench.log" >&2; exit 1; }
    grep -E '^ +modelhub +[0-9]' "$work/bench.log" || true
    sleep 0.5
    stop_all
    grep -E 'dropped by kernel' "$work/tcpdump.log" | sed 's/^/  tcpdump: /' || true
    tcpdump -r "$work/cap.pcap" -n -tt 2>"$work/tcpdump.log" >"$work/cap.txt" ||
      { echo "reading the capture failed:" >&2; cat "$work/tcpdump.log" >&2; exit 1; }
    # A capture that cannot be taken apart says why; the other
    # configurations still run.
    parse "$work/cap.txt" "${addr##*:}" || true
  done
done
