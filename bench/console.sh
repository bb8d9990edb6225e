#!/usr/bin/env bash
# Issue 23's console benchmark (bench/README.md, "The console (issue 23)"):
# a fresh modelhub on a temporary database (127.0.0.1, a free port,
# RUST_LOG=warn, MODELHUB_SPARE_SPACE=0, no token: loopback requests are
# anonymous admins), then
#
#   modelhub-bench --server URL --server-pid PID console --seconds 600 [ARGS...]
#
# 10,000 cells in 10 stacks, the console in headless Chromium with stack
# t0's 1,000 rows rendered, a status write every 10 ms for 10 minutes (about
# 11 minutes in all). Arguments go to `console` (e.g. --seconds 60 --json
# /tmp/console.json); --seconds 600 unless one is given. Builds nothing: it
# uses ${CARGO_TARGET_DIR:-target}/release/modelhub and modelhub-bench
# (MODELHUB and BENCH name others). Stops the server by its PID and removes
# the database on exit. Needs curl, python3 and Debian's chromium and
# chromium-driver.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
modelhub=${MODELHUB:-$target/release/modelhub}
bench=${BENCH:-$target/release/modelhub-bench}
for bin in "$modelhub" "$bench"; do
  if [ ! -x "$bin" ]; then
    echo "$bin is missing: cargo build --release -p modelhub -p modelhub-bench" >&2
    exit 2
  fi
done
if ! "$bench" console --help 2>/dev/null | grep -q -- --expanded-stack; then
  echo "$bench has no \`console\` (an older build?)" >&2
  exit 2
fi

args=("$@")
[[ " ${args[*]} " == *" --seconds "* ]] || args=(--seconds 600 "${args[@]}")

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port
# Not bench/lib.sh: it builds into target/ when its binary is missing.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
RUST_LOG=warn MODELHUB_SPARE_SPACE=0 "$modelhub" serve --listen "$addr" --data "$work/hub.redb" \
  >"$work/server.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
up=
for _ in $(seq 100); do
  if curl -fsS "http://$addr/healthz" >/dev/null 2>&1; then
    up=1
    break
  fi
  sleep 0.1
done
if [ -z "$up" ]; then
  echo "modelhub did not answer /healthz on $addr within 10 s; its log:" >&2
  cat "$work/server.log" >&2
  exit 1
fi

echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  nproc: $(nproc)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src ui Cargo.toml 2>/dev/null || echo ' (src/, ui/ or Cargo.toml changed since)')"
echo "modelhub: $modelhub ($("$modelhub" --version)) on $addr (pid $pid), data in $work"
# The console is compiled into the binary: say whether it serves the
# working tree's ui/.
assets=(index.html console.css console.js api.js model.js tree.js object.js)
served=$(for f in "${assets[@]}"; do curl -fsS "http://$addr/ui/$f"; done | sha256sum | cut -c1-12)
tree=$(cd ui && cat "${assets[@]}" | sha256sum | cut -c1-12)
echo "ui: served $served ($([ "$served" = "$tree" ] && echo "the working tree's ui/" || echo "not the working tree's ui/, $tree"))"
echo "browser: $(chromium --version 2>/dev/null | head -1)"
cmd=("$bench" --server "http://$addr" --server-pid "$pid" console "${args[@]}")
echo "command: ${cmd[*]}"
"${cmd[@]}"
