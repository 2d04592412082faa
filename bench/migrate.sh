#!/usr/bin/env bash
# Benchmark of `kvferry migrate` against `export` + `import` of the same data (BENCHMARKS.md,
# "Migrate"). It starts a private source redis-server, loads a dataset made by
# examples/gen_dataset.rs (fixed seed), and then, RUNS times each, in alternating order, into a
# newly started (empty) target redis-server:
#   - times `kvferry export` into a snapshot, then `kvferry import` of it (the two summed);
#   - times `kvferry migrate --no-verify` (records streamed from source to target, no files);
#   - times `kvferry migrate` (with its verify, which reads the source again).
# Each run checks that the target holds every key. It prints the medians and the ratio
# migrate / (export + import), with the servers' CPU seconds.
#
# Usage: bench/migrate.sh CASE
#   quick    50k mixed keys + collections of 50k members (a smoke run)
#   mid      200k mixed keys + collections of 200k members
# Options (environment): RUNS=N runs per measurement (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
case_=${1:?usage: bench/migrate.sh quick|mid}
. bench/lib.sh
src=$(free_port); dst=$(free_port)

cargo build --release --quiet --example gen_dataset --bin kvferry
gen=target/release/examples/gen_dataset
kvferry=target/release/kvferry
machine

empty_target() { stop_server "$dst"; start_redis "$dst"; }
check_target() {
  test "$(redis-cli -p "$dst" dbsize)" -eq "$(redis-cli -p "$src" dbsize)" ||
    { echo "the target holds $(redis-cli -p "$dst" dbsize) keys, the source $(redis-cli -p "$src" dbsize)" >&2; exit 1; }
}

run_case() {
  local name=$1; shift
  start_redis "$src"
  "$gen" load "$@" | redis-cli -p "$src" --pipe >/dev/null
  local keys; keys=$(redis-cli -p "$src" dbsize)
  local files=() streams=() verified=() fcpu=() mcpu=()
  files_run() {
    local t0 s0 d0
    empty_target; rm -rf "$work/snap" "$work/state"
    s0=$(server_cpu "$src"); d0=$(server_cpu "$dst"); t0=$(date +%s.%N)
    "$kvferry" export --source "redis://127.0.0.1:$src" --db 0 --out "$work/snap" --progress none >/dev/null
    "$kvferry" import "$work/snap" --target "redis://127.0.0.1:$dst" --state "$work/state" --progress none >/dev/null
    files+=("$(elapsed "$t0")")
    fcpu+=("$(echo "$(server_cpu "$src") - $s0 + $(server_cpu "$dst") - $d0" | bc)")
    check_target
  }
  stream_run() {
    local t0 s0 d0
    empty_target; rm -rf "$work/state"
    s0=$(server_cpu "$src"); d0=$(server_cpu "$dst"); t0=$(date +%s.%N)
    "$kvferry" migrate --source "redis://127.0.0.1:$src" --db 0 --target "redis://127.0.0.1:$dst" \
      --state "$work/state" --no-verify --progress none >/dev/null
    streams+=("$(elapsed "$t0")")
    mcpu+=("$(echo "$(server_cpu "$src") - $s0 + $(server_cpu "$dst") - $d0" | bc)")
    check_target
  }
  verified_run() {
    local t0
    empty_target; rm -rf "$work/state"
    t0=$(date +%s.%N)
    "$kvferry" migrate --source "redis://127.0.0.1:$src" --db 0 --target "redis://127.0.0.1:$dst" \
      --state "$work/state" --progress none >/dev/null
    verified+=("$(elapsed "$t0")")
  }
  for ((i = 0; i < ${RUNS:-3}; i++)); do
    if ((i % 2 == 0)); then files_run; stream_run; verified_run; else verified_run; stream_run; files_run; fi
  done
  local f m v fc mc
  f=$(printf '%s\n' "${files[@]}" | median)
  m=$(printf '%s\n' "${streams[@]}" | median)
  v=$(printf '%s\n' "${verified[@]}" | median)
  fc=$(printf '%s\n' "${fcpu[@]}" | median)
  mc=$(printf '%s\n' "${mcpu[@]}" | median)
  python3 - "$name" "$keys" "$f" "$m" "$v" "$fc" "$mc" "${files[*]}" "${streams[*]}" "${verified[*]}" <<'PY'
import sys
name, keys, f, m, v, fc, mc, fs, ms, vs = sys.argv[1:]
keys, f, m, v, fc, mc = int(keys), float(f), float(m), float(v), float(fc), float(mc)
print(f"{name}: {keys} keys; export + import {f:.2f} s, migrate --no-verify {m:.2f} s "
      f"(ratio {m / f:.2f}), migrate with its verify {v:.2f} s; servers' CPU: files {fc:.2f} s, "
      f"migrate {mc:.2f} s   [runs: files {fs}; migrate {ms}; with verify {vs}]")
PY
}

case "$case_" in
  quick) run_case quick --keys 50000 --big 50000 ;;
  mid) run_case mid --keys 200000 --big 200000 ;;
  *) echo "unknown case $case_" >&2; exit 2 ;;
esac
