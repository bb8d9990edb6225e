# shellcheck shell=bash
# Shared by bench/tail.sh, bench/watch_equal.sh, bench/etcd_backend.sh and
# bench/phases.sh
# (sourced, from the repository root): the binaries (MODELHUB and BENCH
# name others; both default to ${CARGO_TARGET_DIR:-target}/release/),
# built with etcd support when the sourcing script sets `needs` to the
# subcommand and an option of it that the bench must know, and one is
# missing or the bench is older; then a throwaway etcd: a single member on
# free 127.0.0.1 ports (ETCD_PORT and ETCD_PEER_PORT fix them), its data in
# a temporary directory, `--quota-backend-bytes 8589934592` and the
# arguments in the array `etcd_extra`, if set. Prints the run's header.
# Sets $modelhub, $bench, $url, $etcd_pid and $work (the directory); on
# exit stops that etcd by its PID and removes the directory.
target=${CARGO_TARGET_DIR:-target}
modelhub=${MODELHUB:-$target/release/modelhub}
bench=${BENCH:-$target/release/modelhub-bench}
if [ "${needs+set}" = set ]; then
  knows() {
    local help
    [ -x "$modelhub" ] && [ -x "$bench" ] &&
      help=$("$bench" "${needs[0]}" --help 2>/dev/null) && [[ $help == *"${needs[1]}"* ]]
  }
  if ! knows; then
    cargo build --release -p modelhub -p modelhub-bench --features modelhub-bench/etcd
    if ! knows; then
      echo "$bench has no \`${needs[*]}\` (an older build?)" >&2
      exit 1
    fi
  fi
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=${ETCD_PORT:-$(free_port)}
peer=${ETCD_PEER_PORT:-$(free_port)}
while [ "$peer" = "$port" ]; do peer=$(free_port); done
url="http://127.0.0.1:$port"

work=$(mktemp -d)
# shellcheck disable=SC2154 # etcd_extra: set by the sourcing script, or not
etcd --name bench --data-dir "$work/etcd" \
  --listen-client-urls "$url" --advertise-client-urls "$url" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "bench=http://127.0.0.1:$peer" \
  --quota-backend-bytes 8589934592 ${etcd_extra[@]+"${etcd_extra[@]}"} >"$work/etcd.log" 2>&1 &
etcd_pid=$!
cleanup() {
  kill "$etcd_pid" 2>/dev/null || true
  wait "$etcd_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
healthy=
for _ in $(seq 50); do
  if ETCDCTL_API=3 etcdctl --endpoints "$url" endpoint health >/dev/null 2>&1; then
    healthy=1
    break
  fi
  sleep 0.2
done
if [ -z "$healthy" ]; then
  echo "etcd did not become healthy on $url; its log:" >&2
  cat "$work/etcd.log" >&2
  exit 1
fi

# Many watch streams plus the servers' side of them.
ulimit -n 20000 2>/dev/null || true
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  nproc: $(nproc)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (src/ changed since)')"
echo "modelhub: $modelhub ($("$modelhub" --version))"
echo "etcd: $(etcd --version | head -1) on $url (pid $etcd_pid), data in $work ($(df -h --output=avail "$work" | tail -1 | xargs) free)"
