#!/usr/bin/env bash
# Benchmark of `kvferry import` and `kvferry verify` (BENCHMARKS.md, "Import" and "Verify"). For
# each case it starts a private redis-server, loads a dataset made by examples/gen_dataset.rs
# (fixed seed), exports it once, writes the import's commands as RESP (`kvferry import --resp`),
# and then, RUNS times each, in alternating order, on a newly started (empty) target server:
#   - times `redis-cli --pipe` sending those commands: the baseline of the issue;
#   - times `kvferry import` of the snapshot (its check of every file before writing included),
#     with /usr/bin/time for its peak RSS;
#   - times `kvferry verify` of the snapshot against what was imported (it must find nothing).
# It prints the medians, the ratio import / redis-cli, and the server CPU of each.
#
# Usage: bench/import.sh CASE
#   quick    50k mixed keys + collections of 50k members (a smoke run)
#   mid      200k mixed keys + collections of 200k members
#   mixed    the standard dataset: 1M mixed keys, 25% with TTLs, + hash/list/set/zset of 1M
#            members and a stream of 200k entries
#   memory   one 2 GB hash (2M fields of 1 KiB) + 100k mixed keys: peak RSS of the import
# Options (environment):
#   RUNS=N                      runs per measurement (default 3)
#   EXTRA="--connections 8"     options passed to every import
#   PIN=1                       the target server on core 0, the clients on the other cores
#   KVROCKS=/path/to/kvrocks    the target is Kvrocks (multi-threaded), started with an empty
#                               data directory before each run; otherwise a redis-server,
#                               likewise started anew before each run
set -euo pipefail
cd "$(dirname "$0")/.."
case_=${1:?usage: bench/import.sh quick|mid|mixed|memory}
. bench/lib.sh
src=$(free_port); dst=$(free_port)

cargo build --release --quiet --example gen_dataset --bin kvferry
gen=target/release/examples/gen_dataset
kvferry=target/release/kvferry
machine
pin_server=(); pin_client=()
if [ -n "${PIN:-}" ] && [ "$(nproc)" -ge 2 ]; then pin_server=(taskset -c 0); pin_client=(taskset -c "1-$(($(nproc) - 1))"); fi
if [ -n "${KVROCKS:-}" ]; then
  echo "== target: Kvrocks $("$KVROCKS" --version 2>&1 | head -1)"
fi

# An empty target: a new server process before every run, so that no run inherits the memory
# state of the one before (runs on a server emptied with FLUSHALL grew slower one after another).
empty_target() {
  stop_server "$dst"
  if [ -n "${KVROCKS:-}" ]; then
    start_kvrocks "$KVROCKS" "$dst" "${pin_server[@]}"
  else
    start_redis "$dst" "${pin_server[@]}"
  fi
}

run_case() {
  local name=$1; shift
  start_redis "$src"
  "$gen" load "$@" | redis-cli -p "$src" --pipe >/dev/null
  "$kvferry" export --source "redis://127.0.0.1:$src" --db 0 --out "$work/snap" --progress none >/dev/null
  stop_server "$src"
  "$kvferry" import "$work/snap" --resp "$work/cmds.resp" --progress none >/dev/null
  local keys resp_mb
  keys=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['totals']['keys'])" "$work/snap/MANIFEST.json")
  resp_mb=$(du -m "$work/cmds.resp" | cut -f1)
  local pipes=() imports=() rss=() pcpu=() icpu=() verifies=() vrss=()
  # One measurement of redis-cli --pipe on an empty target.
  pipe_run() {
    local t0 c0
    empty_target
    c0=$(server_cpu "$dst"); t0=$(date +%s.%N)
    "${pin_client[@]}" redis-cli -p "$dst" --pipe < "$work/cmds.resp" >/dev/null
    pipes+=("$(elapsed "$t0")"); pcpu+=("$(echo "$(server_cpu "$dst") - $c0" | bc)")
  }
  # One measurement of kvferry import on an empty target, then of verify against it.
  import_run() {
    local t0 c0
    empty_target
    rm -rf "$work/state"
    c0=$(server_cpu "$dst"); t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    "${pin_client[@]}" /usr/bin/time -f '%M' -o "$work/rss" "$kvferry" import "$work/snap" --target "redis://127.0.0.1:$dst" \
      --state "$work/state" --progress none ${EXTRA:-} >/dev/null
    imports+=("$(elapsed "$t0")"); icpu+=("$(echo "$(server_cpu "$dst") - $c0" | bc)")
    rss+=("$(cat "$work/rss")")
    # Kvrocks' DBSIZE is a cached count; there verify alone checks what was written.
    if [ -z "${KVROCKS:-}" ]; then
      test "$(redis-cli -p "$dst" dbsize)" -eq "$keys" || { echo "import wrote $(redis-cli -p "$dst" dbsize) keys, not $keys" >&2; exit 1; }
    fi
    # verify of the same snapshot against what was just imported (issue 5: no longer than the
    # import); it must find nothing (exit 0, or this script stops).
    t0=$(date +%s.%N)
    "${pin_client[@]}" /usr/bin/time -f '%M' -o "$work/vrss" "$kvferry" verify "$work/snap" \
      --target "redis://127.0.0.1:$dst" --progress none >/dev/null
    verifies+=("$(elapsed "$t0")"); vrss+=("$(cat "$work/vrss")")
  }
  # The order alternates, so that a drift of the machine over a set favours neither.
  for ((i = 0; i < ${RUNS:-3}; i++)); do
    if ((i % 2 == 0)); then pipe_run; import_run; else import_run; pipe_run; fi
  done
  stop_server "$dst"
  rm -rf "$work/snap"
  local p m r pc ic v vr
  p=$(printf '%s\n' "${pipes[@]}" | median)
  m=$(printf '%s\n' "${imports[@]}" | median)
  pc=$(printf '%s\n' "${pcpu[@]}" | median)
  ic=$(printf '%s\n' "${icpu[@]}" | median)
  r=$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)
  v=$(printf '%s\n' "${verifies[@]}" | median)
  vr=$(printf '%s\n' "${vrss[@]}" | sort -n | tail -1)
  python3 - "$name" "$keys" "$resp_mb" "$p" "$m" "$r" "$pc" "$ic" "${pipes[*]}" "${imports[*]}" "${EXTRA:-}" "${PIN:-}" "$v" "$vr" "${KVROCKS:+Kvrocks}" <<'PY'
import sys
name, keys, mb, p, m, rss, pc, ic, ps, ms, extra, pin, v, vr, kv = sys.argv[1:]
v, vr = float(v), int(vr)
keys, p, m, rss, pc, ic = int(keys), float(p), float(m), int(rss), float(pc), float(ic)
print(f"{name}{' into ' + kv if kv else ''}{' ' + extra if extra else ''}{' (pinned)' if pin else ''}: {keys} keys, {mb} MB of RESP; "
      f"redis-cli --pipe {p:.2f} s, import {m:.2f} s (ratio {m / p:.2f}); server CPU: pipe {pc:.2f} s, import {ic:.2f} s; "
      f"{m / keys * 1e6:.2f} us/key; peak RSS {rss / 1024:.0f} MiB; verify {v:.2f} s (verify / import {v / m:.2f}, "
      f"peak RSS {vr / 1024:.0f} MiB)   [runs: pipe {ps}; import {ms}]")
PY
}

case "$case_" in
  quick) run_case quick --keys 50000 --big 50000 ;;
  mid) run_case mid --keys 200000 --big 200000 ;;
  mixed) run_case mixed --keys 1000000 --big 1000000 ;;
  memory) run_case memory --keys 100000 --hash-bytes 2147483648 ;;
  *) echo "unknown case $case_" >&2; exit 2 ;;
esac
