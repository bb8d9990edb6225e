#!/usr/bin/env bash
# Performance guard: the headline workloads on a baseline and on the
# working tree (or on two settings), in alternating rounds on fresh
# databases; per figure, the median of the rounds' current/baseline.
#
#   bench/guard.sh [options] [BASELINE]          working tree vs a commit
#   bench/guard.sh [options] --a CMD --b CMD     two settings (A is the baseline)
#
# BASELINE is a commit (default HEAD; e.g. main~1). Its `modelhub` is
# built once (release) from `git archive` into $GUARD_CACHE/<commit>
# (default ${CARGO_TARGET_DIR:-target}/guard; baselines share one target
# dir there) and reused. The working tree is built with `cargo build
# --release -p modelhub -p modelhub-bench`; its modelhub-bench drives both
# sides. Copies of the binaries are run, so a rebuild during the run
# changes nothing.
#
# CMD starts a server and gets `serve --listen 127.0.0.1:0 --data DB`
# and the side's --a-serve/--b-serve flags appended; it must exec the
# server (`env X=1 BIN` or `taskset -c 1 BIN`, not a pipeline), as its PID
# is the one measured and stopped. The word @current stands for the
# working tree's fresh build, the default of an omitted --a or --b:
#   bench/guard.sh --b "env MODELHUB_CACHE_MB=32 @current"
#   bench/guard.sh --a-serve "--workers 1" --b-serve "--workers 2"
# --a-bench/--b-bench add global modelhub-bench flags to one side's runs,
# e.g. the cost of authentication (issue 22): side B's load generator
# creates an admin token on each fresh server and sends it on every
# request, side A's stays anonymous (MODELHUB_BENCH_TOKEN is unset for the
# runs: a fresh server knows no given token):
#   bench/guard.sh --a @current --b @current --b-bench --auth \
#     --workloads create1,create64,get16
#
# Options (environment variable, default):
#   --rounds N         alternating rounds (GUARD_ROUNDS, 5)
#   --threshold PCT    largest loss allowed per figure (GUARD_THRESHOLD, 5)
#   --duration S       seconds per create/status/get run (GUARD_DURATION, 5)
#   --watch-writes N   writes per watch run, closed loop then paced
#                      (GUARD_WATCH_WRITES, 1000)
#   --watch-rate R     writes/s of the paced watch run (GUARD_WATCH_RATE, 100)
#   --workloads LIST   comma-separated subset of create1,create64,status64,
#                      get16,list,watch (GUARD_WORKLOADS, all)
#   --a-serve FLAGS / --b-serve FLAGS   extra `serve` flags of side A / B
#   --a-bench FLAGS / --b-bench FLAGS   extra global modelhub-bench flags of
#                      side A / B's runs (e.g. --auth); alone, like the
#                      serve flags, they compare two settings of the
#                      working tree
#   --out FILE         keep the figures (tab-separated; `modelhub-bench
#                      guard-report FILE` prints the table again)
# A quick smoke: bench/guard.sh --rounds 1 --duration 2 --watch-writes 200
#
# Every run gets a fresh server on a fresh database; in each round every
# workload runs on both sides back to back, the side going first swapping
# from one round to the next. The table gives, per figure, each side's
# median [min-max] over the rounds, current/baseline of the medians, the
# paired ratio (the median of each round's current/baseline: the two runs
# of a round share the machine's phase), and the server's CPU per request
# (list: per list; watch: per delivered event). A figure is a REGRESSION
# when the paired ratio is worse than the threshold (lower throughput,
# higher latency; a better figure passes), or, for errors and missing events,
# when it is not 0. Exit status: 0 all PASS, 1 a regression or a failed
# run, 2 a usage or build error. A full default run takes about 7 minutes
# (some 80 s per round on 2 cores) plus the baseline's first build (about
# 5 minutes) and the working tree's.

set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."
root=$PWD

usage() {
  sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
  exit "$1"
}
die() {
  echo "guard: $*" >&2
  exit 2
}

rounds=${GUARD_ROUNDS:-5}
threshold=${GUARD_THRESHOLD:-5}
duration=${GUARD_DURATION:-5}
watch_writes=${GUARD_WATCH_WRITES:-1000}
watch_rate=${GUARD_WATCH_RATE:-100}
workloads=${GUARD_WORKLOADS:-create1,create64,status64,get16,list,watch}
out=${GUARD_OUT:-}
cmd_a='' cmd_b='' serve_a='' serve_b='' bench_a='' bench_b='' baseline='' settings=''
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage 0 ;;
    --rounds | --threshold | --duration | --watch-writes | --watch-rate | --workloads | \
      --a | --b | --a-serve | --b-serve | --a-bench | --b-bench | --out)
      [ $# -ge 2 ] || die "$1 needs a value"
      case $1 in
        --rounds) rounds=$2 ;;
        --threshold) threshold=$2 ;;
        --duration) duration=$2 ;;
        --watch-writes) watch_writes=$2 ;;
        --watch-rate) watch_rate=$2 ;;
        --workloads) workloads=$2 ;;
        --a) cmd_a=$2 settings=1 ;;
        --b) cmd_b=$2 settings=1 ;;
        --a-serve) serve_a=$2 ;;
        --b-serve) serve_b=$2 ;;
        --a-bench) bench_a=$2 ;;
        --b-bench) bench_b=$2 ;;
        --out) out=$2 ;;
      esac
      shift 2
      ;;
    -*) die "unknown option $1 (--help for usage)" ;;
    *)
      [ -z "$baseline" ] || die "one BASELINE only"
      baseline=$1
      shift
      ;;
  esac
done
[ -z "$out" ] || [[ $out = /* ]] || out=$caller/$out
[ -n "$baseline" ] && [ -n "$settings" ] && die "give a BASELINE commit or --a/--b, not both"
# Serve or bench flags alone compare two settings of the working tree.
[ -z "$baseline" ] && { [ -n "$serve_a" ] || [ -n "$serve_b" ] || [ -n "$bench_a" ] ||
  [ -n "$bench_b" ]; } && settings=1
[ -n "$settings" ] || baseline=${baseline:-HEAD}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds: a positive whole number"
[[ $watch_writes =~ ^[1-9][0-9]*$ ]] || die "--watch-writes: a positive whole number"
for n in "$threshold" "$duration" "$watch_rate"; do
  [[ $n =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "not a number: $n"
done

# The workloads: name and modelhub-bench arguments (after the globals).
declare -A args=(
  [create1]="create --clients 1"
  [create64]="create --clients 64"
  [status64]="status --clients 64"
  [get16]="get --clients 16"
  [list]="list --cells 10000 --repeat 20"
  [watch]="watch --watchers 1000 --h2-streams 200 --writes $watch_writes --rate $watch_rate"
)
IFS=, read -r -a chosen <<<"$workloads"
for w in "${chosen[@]}"; do
  [ -n "${args[$w]+set}" ] || die "unknown workload $w (known: create1,create64,status64,get16,list,watch)"
done

target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir = /* ]] || target_dir=$root/$target_dir
cache=${GUARD_CACHE:-$target_dir/guard}
[[ $cache = /* ]] || cache=$root/$cache

work=$(mktemp -d "${TMPDIR:-/tmp}/modelhub-guard.XXXXXX")
server_pid='' bench_pid=''
# Whether a process is running (not gone, not a zombie awaiting `wait`).
alive() {
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}
# Stops a process by PID: SIGTERM (the server closes its database), then
# SIGKILL after 60 s.
stop_pid() {
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 600); do
    alive "$1" || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
stop_server() {
  [ -z "$server_pid" ] || stop_pid "$server_pid"
  server_pid=
}
# shellcheck disable=SC2317 # run by the trap
cleanup() {
  [ -z "$bench_pid" ] || stop_pid "$bench_pid"
  bench_pid=
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Watch connections; harmless if lower limits apply.
ulimit -n 20000 2>/dev/null || true

echo "== guard: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== building the working tree: cargo build --release -p modelhub -p modelhub-bench"
cargo build --release -p modelhub -p modelhub-bench || die "the working tree does not build"
cp "$target_dir/release/modelhub" "$work/modelhub-current"
cp "$target_dir/release/modelhub-bench" "$work/modelhub-bench"
bench=$work/modelhub-bench
head=$(git rev-parse --short=12 HEAD)
dirty=
[ -z "$(git status --porcelain --untracked-files=no)" ] || dirty=" with uncommitted changes"

if [ -n "$settings" ]; then
  names=(A B)
  cmd_a=${cmd_a:-@current}
  cmd_b=${cmd_b:-@current}
  echo "== A: $cmd_a serve ... $serve_a${bench_a:+  (load generator: modelhub-bench $bench_a ...)}"
  echo "== B: $cmd_b serve ... $serve_b${bench_b:+  (load generator: modelhub-bench $bench_b ...)}"
  echo "   (@current: the working tree at $head$dirty)"
else
  names=(baseline current)
  sha=$(git rev-parse --verify --quiet "$baseline^{commit}") || die "not a commit: $baseline"
  dir=$cache/${sha:0:12}
  if [ -x "$dir/modelhub" ]; then
    echo "== baseline $baseline (${sha:0:12}): reusing $dir/modelhub"
  else
    echo "== building baseline $baseline (${sha:0:12}) in $dir (once; target dir $cache/target)"
    mkdir -p "$cache"
    (
      flock 9
      if [ ! -x "$dir/modelhub" ]; then
        rm -rf "$dir/src"
        mkdir -p "$dir/src"
        git archive "$sha" | tar -x -C "$dir/src"
        (cd "$dir/src" && CARGO_TARGET_DIR=$cache/target cargo build --release -p modelhub --bin modelhub)
        cp "$cache/target/release/modelhub" "$dir/modelhub.tmp"
        mv "$dir/modelhub.tmp" "$dir/modelhub"
      fi
    ) 9>"$cache/build.lock" || die "baseline $baseline does not build"
  fi
  cp "$dir/modelhub" "$work/modelhub-baseline"
  cmd_a=$work/modelhub-baseline
  cmd_b=@current
  echo "== baseline: $baseline = ${sha:0:12} $(git log -1 --format=%s "$sha")${serve_a:+; serve ... $serve_a}${bench_a:+  (load generator: modelhub-bench $bench_a ...)}"
  echo "== current:  the working tree at $head$dirty${serve_b:+; serve ... $serve_b}${bench_b:+  (load generator: modelhub-bench $bench_b ...)}"
fi
cmd_a=${cmd_a//@current/$work/modelhub-current}
cmd_b=${cmd_b//@current/$work/modelhub-current}

figures=${out:-$work/figures.tsv}
: >"$figures"
failed_runs=0

# Starts side $1's server on a fresh database; sets server_pid and url.
start_server() {
  local cmd=$cmd_a extra=$serve_a
  [ "$1" = b ] && cmd=$cmd_b extra=$serve_b
  rm -rf "$work/db"
  mkdir "$work/db"
  # shellcheck disable=SC2086 # the command and flags are split into words on purpose
  RUST_LOG=warn $cmd serve --listen 127.0.0.1:0 --data "$work/db/guard.redb" $extra \
    >"$work/server.log" 2>&1 &
  server_pid=$!
  url=
  for _ in $(seq 300); do
    url=$(sed -n 's/^modelhub listening on //p' "$work/server.log" | head -1)
    [ -n "$url" ] && return 0
    alive "$server_pid" || break
    sleep 0.1
  done
  echo "FAILED: the server did not start ($cmd serve ... $extra):"
  tail -5 "$work/server.log" | sed 's/^/    /'
  stop_server
  return 1
}

# One run: side $1, round $2, workload $3; its figures go to $figures.
run() {
  local side=$1 round=$2 w=$3 name=${names[0]} flags=$bench_a
  [ "$side" = b ] && name=${names[1]} flags=$bench_b
  printf '  %-9s %-8s ' "$w" "$name"
  if ! start_server "$side"; then
    failed_runs=$((failed_runs + 1))
    return
  fi
  rm -f "$work/run.tsv"
  local t0=$SECONDS
  # shellcheck disable=SC2086 # the side's flags and the workload's arguments are words
  env -u MODELHUB_BENCH_TOKEN "$bench" $flags --server "$url" --server-pid "$server_pid" \
    --figures "$work/run.tsv" --duration "$duration" ${args[$w]} >"$work/bench.log" 2>&1 &
  bench_pid=$!
  if wait "$bench_pid" && [ -s "$work/run.tsv" ]; then
    awk -F'\t' -v s="$side" -v r="$round" '{ print s "\t" r "\t" $0 }' "$work/run.tsv" >>"$figures"
    # One line: the figures, each group of them (a workload, a watch
    # mode) followed by the server's CPU per operation.
    awk -F'\t' -v t=$((SECONDS - t0)) '
      function fig(v) { return v >= 1000 ? sprintf("%.0f", v) : sprintf("%.3g", v) }
      function cpu(c) { return c == "-" ? "?" : fig(c + 0) }
      NR == FNR { if (!($1 in n)) { n[$1] = 1; keys++ } next }
      FNR > 1 && ($1 != w || $5 != c) { printf "; server CPU %s us/op | ", cpu(c); sep = "" }
      ($1 != w) && keys > 1 { printf "%s: ", $1 }
      { printf "%s%s %s", sep, $2, fig($3); sep = ", "; w = $1; c = $5 }
      END { printf "; server CPU %s us/op  (%d s)\n", cpu(c), t }' "$work/run.tsv" "$work/run.tsv"
  else
    echo "FAILED (modelhub-bench ${flags:+$flags }${args[$w]}):"
    tail -5 "$work/bench.log" | sed 's/^/    /'
    failed_runs=$((failed_runs + 1))
  fi
  bench_pid=
  stop_server
}

echo "== $rounds rounds of: ${chosen[*]}; create/status/get ${duration} s per run," \
  "watch $watch_writes writes (closed loop, then paced at $watch_rate/s); threshold $threshold %"
started=$SECONDS
for round in $(seq "$rounds"); do
  echo "== round $round/$rounds"
  order=(a b)
  [ $((round % 2)) -eq 0 ] && order=(b a)
  for w in "${chosen[@]}"; do
    for side in "${order[@]}"; do
      run "$side" "$round" "$w"
    done
  done
  spent=$((SECONDS - started))
  left=$((spent * (rounds - round) / round))
  [ "$round" -eq "$rounds" ] ||
    echo "   ${spent} s so far; about $((left / 60)) min $((left % 60)) s to go"
done

echo "== guard: ${names[1]} against ${names[0]}, paired medians of $rounds rounds, threshold $threshold %" \
  "(in $((SECONDS - started)) s)"
status=0
"$bench" guard-report --threshold "$threshold" --a-name "${names[0]}" --b-name "${names[1]}" \
  "$figures" || status=$?
[ -z "$out" ] || echo "(figures in $out)"
if [ "$failed_runs" -gt 0 ]; then
  echo "guard: $failed_runs run(s) failed (see above)"
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
