# shellcheck shell=bash
# Sourced (from the repository root) by bench/lib.sh and bench/phases.sh:
# `ready ADDR TRIES PAUSE LOG [PID]` waits for the server on ADDR to answer
# /readyz, TRIES tries PAUSE s apart, giving up early once PID (if given)
# has exited; if it never answers, prints the end of its log LOG and exits.
ready() {
  local addr=$1 tries=$2 pause=$3 log=$4 pid=${5:-}
  for _ in $(seq "$tries"); do
    curl -fsS "http://$addr/readyz" >/dev/null 2>&1 && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      break
    fi
    sleep "$pause"
  done
  echo "the server on $addr did not become ready; the end of $log:" >&2
  tail -n 20 "$log" >&2
  exit 1
}
