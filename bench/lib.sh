# shellcheck shell=bash
# Shared by bench/ab.sh, bench/instructions.sh, bench/stalls.sh and
# bench/recovery.sh (sourced, from the repository root): the load
# generator, a scratch directory, a server PID that `stop` ends and that
# is ended, with the directory removed, on exit, and `ready` (from
# bench/ready.sh).
bench=${CARGO_TARGET_DIR:-target}/release/modelhub-bench
[ -x "$bench" ] || cargo build --release -p modelhub-bench
work=$(mktemp -d)
pid=
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
  fi
}
trap 'stop; rm -rf "$work"' EXIT

# shellcheck source=bench/ready.sh
. bench/ready.sh
