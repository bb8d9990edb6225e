#!/usr/bin/env bash
# Where a slow second of the tail bench came from: one modelhub server
# (127.0.0.1, stopped by its PID; a fresh database in a scratch directory),
# `modelhub-bench --duration D tail --runs 1` against it (creates, then
# status writes, 64 clients; no etcd), and its /metrics read every half
# second. Prints the bench's five slowest seconds per workload, then every
# half second in which a checkpoint, a write batch or a log sync took over
# 10 ms, by how long (from the histograms' buckets), at its time from the
# start.
#
#   bench/stalls.sh MODELHUB_BIN [DURATION] [OUTDIR]
#
# DURATION: seconds per workload (default 60). OUTDIR (default: a scratch
# directory, removed) keeps bench.log, series.tsv (the bench's seconds)
# and metrics.txt. The status run starts after the creates' DURATION and
# the status cells' set-up (under a second), so its second N is near
# DURATION + N. Needs curl, python3 and a release build of modelhub-bench.
# shellcheck source=bench/lib.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
bin=$1
duration=${2:-60}
. bench/lib.sh
out=${3:-$work}
mkdir -p "$out"
addr=127.0.0.1:${STALLS_PORT:-18085}
RUST_LOG=warn "$bin" serve --listen "$addr" --data "$work/hub.redb" >"$out/server.log" 2>&1 &
pid=$!
ready "$addr" 100 0.1 "$out/server.log" "$pid"
probe() {
  while kill -0 "$pid" 2>/dev/null; do
    echo "T $(date +%s.%N)"
    curl -s --max-time 1 "http://$addr/metrics" |
      grep -E '^modelhub_(checkpoint_duration|write_commit_duration|log_sync_duration)_seconds_(bucket|count)' || true
    sleep 0.5
  done
}
probe >"$out/metrics.txt" 2>/dev/null &
prober=$!
date +%s.%N >"$out/start"
"$bench" --server "http://$addr" --server-pid "$pid" --duration "$duration" tail --runs 1 \
  --series "$out/series.tsv" >"$out/bench.log" 2>&1
stop
wait "$prober" 2>/dev/null || true
grep -E '^== tail|slowest seconds' "$out/bench.log"
python3 - "$out" <<'PY'
import re
import sys

out = sys.argv[1]
snaps, cur = [], None
for line in open(f"{out}/metrics.txt"):
    line = line.strip()
    if line.startswith("T "):
        cur = {"t": float(line[2:])}
        snaps.append(cur)
        continue
    m = re.match(r'(\S+?)(?:\{le="([^"]+)"\})? (\S+)$', line)
    if m and cur is not None:
        cur[(m.group(1), m.group(2))] = float(m.group(3))
start = float(open(f"{out}/start").read())
names = {
    "checkpoint": "modelhub_checkpoint_duration_seconds",
    "batch": "modelhub_write_commit_duration_seconds",
    "log sync": "modelhub_log_sync_duration_seconds",
}
print("half seconds with a checkpoint, batch or log sync over 10 ms (time from the start):")
for a, b in zip(snaps, snaps[1:]):
    parts = []
    for what, n in names.items():
        count = (n + "_count", None)
        if count not in a or count not in b:
            continue
        total = b[count] - a[count]
        over = {
            le: total - (b.get((n + "_bucket", le), 0) - a.get((n + "_bucket", le), 0))
            for le in ("0.01", "0.025", "0.05", "0.1")
        }
        if over["0.01"] > 0:
            parts.append(
                f"{what}: {int(over['0.01'])} of {int(total)} over 10 ms"
                f" ({int(over['0.025'])} over 25, {int(over['0.05'])} over 50,"
                f" {int(over['0.1'])} over 100)"
            )
    if parts:
        print(f"  {b['t'] - start:7.1f} s  " + "; ".join(parts))
PY
