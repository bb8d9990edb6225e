# shellcheck shell=bash
# Shared by bench/ab.sh, bench/instructions.sh, bench/stalls.sh and
# bench/recovery.sh (sourced, from the repository root): the load
# generator, a scratch directory, a server PID that `stop` ends and that
# is ended, with the directory removed, on exit, and `ready`.
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

# Waits for the server on $1 to answer /readyz, $2 tries $3 s apart; if it
# never does, prints the end of its log $4 and exits.
ready() {
  local addr=$1 tries=$2 pause=$3 log=$4
  for _ in $(seq "$tries"); do
    curl -fsS "http://$addr/readyz" >/dev/null 2>&1 && return 0
    sleep "$pause"
  done
  echo "the server on $addr did not become ready; the end of $log:" >&2
  tail -n 20 "$log" >&2
  exit 1
}
