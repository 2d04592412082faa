#!/usr/bin/env bash
# Benchmark of `kvferry import` (BENCHMARKS.md, "Import"). For each case it starts two private
# redis-servers, loads a dataset made by examples/gen_dataset.rs (fixed seed) into the first,
# exports it once, writes the import's commands as RESP (`kvferry import --resp`), and then,
# RUNS times each, alternating, on the emptied second server:
#   - times `redis-cli --pipe` sending those commands: the baseline of the issue;
#   - times `kvferry import` of the snapshot (its check of every file before writing included),
#     with /usr/bin/time for its peak RSS;
#   - times `kvferry verify` of the snapshot against what was imported (it must find nothing).
# It prints the medians and the ratio import / redis-cli, and the server CPU of each.
#
# Usage: bench/import.sh CASE
#   quick    50k mixed keys + collections of 50k members (a smoke run)
#   mid      200k mixed keys + collections of 200k members
#   mixed    the standard dataset: 1M mixed keys, 25% with TTLs, + hash/list/set/zset of 1M
#            members and a stream of 200k entries
#   memory   one 2 GB hash (2M fields of 1 KiB) + 100k mixed keys: peak RSS of the import
# RUNS=N sets the runs per measurement (default 3). EXTRA="--connections 8" passes options to
# every import. PIN=1 puts the target server on core 0 and the clients on the other cores.
set -euo pipefail
cd "$(dirname "$0")/.."
case_=${1:?usage: bench/import.sh quick|mid|mixed|memory}
command -v redis-server >/dev/null || { apt-get update -q && apt-get install -y -q redis-server; }
work=$(mktemp -d /tmp/kvferry-bench.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
src=$(free_port); dst=$(free_port)
stop() { redis-cli -p "$src" shutdown nosave >/dev/null 2>&1 || true; redis-cli -p "$dst" shutdown nosave >/dev/null 2>&1 || true; }
trap 'stop; rm -rf "$work"' EXIT

cargo build --release --quiet --example gen_dataset --bin kvferry
gen=target/release/examples/gen_dataset
kvferry=target/release/kvferry
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; redis-server $(redis-server --version | grep -o 'v=[0-9.]*'); $(date -u +%F)"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
server_cpu() { redis-cli -p "$1" info cpu | awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {printf "%.3f", s}'; }
# With PIN=1 (and 2+ cores), the target server runs on core 0 and the clients (redis-cli,
# kvferry) on the others, so that they do not take CPU from each other.
pin_server=(); pin_client=()
if [ -n "${PIN:-}" ] && [ "$(nproc)" -ge 2 ]; then pin_server=(taskset -c 0); pin_client=(taskset -c "1-$(($(nproc) - 1))"); fi
start() {
  mkdir -p "$work/r$1"
  "${pin_server[@]}" redis-server --port "$1" --bind 127.0.0.1 --dir "$work/r$1" --save '' --appendonly no \
    --daemonize yes --logfile "$work/r$1/log"
  for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

run_case() {
  local name=$1; shift
  stop
  start "$src"; start "$dst"
  "$gen" load "$@" | redis-cli -p "$src" --pipe >/dev/null
  "$kvferry" export --source "redis://127.0.0.1:$src" --db 0 --out "$work/snap" --progress none >/dev/null
  redis-cli -p "$src" shutdown nosave >/dev/null 2>&1 || true
  "$kvferry" import "$work/snap" --resp "$work/cmds.resp" --progress none >/dev/null
  local keys resp_mb
  keys=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['totals']['keys'])" "$work/snap/MANIFEST.json")
  resp_mb=$(du -m "$work/cmds.resp" | cut -f1)
  local pipes=() imports=() rss=() pcpu=() icpu=() verifies=() vrss=()
  for ((i = 0; i < ${RUNS:-3}; i++)); do
    local t0 t1 c0 c1
    redis-cli -p "$dst" flushall >/dev/null
    c0=$(server_cpu "$dst"); t0=$(date +%s.%N)
    "${pin_client[@]}" redis-cli -p "$dst" --pipe < "$work/cmds.resp" >/dev/null
    t1=$(date +%s.%N); c1=$(server_cpu "$dst")
    pipes+=("$(echo "$t1 - $t0" | bc)"); pcpu+=("$(echo "$c1 - $c0" | bc)")
    redis-cli -p "$dst" flushall >/dev/null
    rm -rf "$work/state"
    c0=$(server_cpu "$dst"); t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    "${pin_client[@]}" /usr/bin/time -f '%M' -o "$work/rss" "$kvferry" import "$work/snap" --target "redis://127.0.0.1:$dst" \
      --state "$work/state" --progress none ${EXTRA:-} >/dev/null
    t1=$(date +%s.%N); c1=$(server_cpu "$dst")
    imports+=("$(echo "$t1 - $t0" | bc)"); icpu+=("$(echo "$c1 - $c0" | bc)")
    rss+=("$(cat "$work/rss")")
    test "$(redis-cli -p "$dst" dbsize)" -eq "$keys" || { echo "import wrote $(redis-cli -p "$dst" dbsize) keys, not $keys" >&2; exit 1; }
    # verify of the same snapshot against what was just imported (issue 5: no longer than the
    # import); it must find nothing.
    t0=$(date +%s.%N)
    "${pin_client[@]}" /usr/bin/time -f '%M' -o "$work/vrss" "$kvferry" verify "$work/snap" \
      --target "redis://127.0.0.1:$dst" --progress none >/dev/null
    t1=$(date +%s.%N)
    verifies+=("$(echo "$t1 - $t0" | bc)"); vrss+=("$(cat "$work/vrss")")
  done
  local p m r pc ic
  p=$(printf '%s\n' "${pipes[@]}" | median)
  m=$(printf '%s\n' "${imports[@]}" | median)
  pc=$(printf '%s\n' "${pcpu[@]}" | median)
  ic=$(printf '%s\n' "${icpu[@]}" | median)
  r=$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)
  local v vr
  v=$(printf '%s\n' "${verifies[@]}" | median)
  vr=$(printf '%s\n' "${vrss[@]}" | sort -n | tail -1)
  python3 - "$name" "$keys" "$resp_mb" "$p" "$m" "$r" "$pc" "$ic" "${pipes[*]}" "${imports[*]}" "${EXTRA:-}" "${PIN:-}" "$v" "$vr" <<'PY'
import sys
name, keys, mb, p, m, rss, pc, ic, ps, ms, extra, pin, v, vr = sys.argv[1:]
v, vr = float(v), int(vr)
keys, p, m, rss, pc, ic = int(keys), float(p), float(m), int(rss), float(pc), float(ic)
print(f"{name}{' ' + extra if extra else ''}{' (pinned)' if pin else ''}: {keys} keys, {mb} MB of RESP; redis-cli --pipe {p:.2f} s, import {m:.2f} s "
      f"(ratio {m / p:.2f}); server CPU: pipe {pc:.2f} s, import {ic:.2f} s; {m / keys * 1e6:.2f} us/key; "
      f"peak RSS {rss / 1024:.0f} MiB; verify {v:.2f} s (verify / import {v / m:.2f}, peak RSS {vr / 1024:.0f} MiB)   [runs: pipe {ps}; import {ms}]")
PY
}

case "$case_" in
  quick) run_case quick --keys 50000 --big 50000 ;;
  mid) run_case mid --keys 200000 --big 200000 ;;
  mixed) run_case mixed --keys 1000000 --big 1000000 ;;
  memory) run_case memory --keys 100000 --hash-bytes 2147483648 ;;
  *) echo "unknown case $case_" >&2; exit 2 ;;
esac
