#!/usr/bin/env bash
# Benchmark of `kvferry export` (BENCHMARKS.md, "Export"). For each case it starts a private
# redis-server, loads a dataset made by examples/gen_dataset.rs (fixed seed) with redis-cli
# --pipe, and then, three times each, alternating:
#   - times `redis-cli --pipe` sending one read command per key (GET, HGETALL, LRANGE 0 -1,
#     SMEMBERS, ZRANGE 0 -1 WITHSCORES, XRANGE - +) and draining the replies: the server's read
#     limit for the same data. Big keys are read in windows of 1000 (LRANGE, ZRANGE, XRANGE
#     ranges; HSCAN/SSCAN chains), as a reader with bounded memory must, and because redis-cli
#     --pipe takes time quadratic in one reply's size (an HGETALL of 1M fields ran 14 minutes);
#   - times `kvferry export` of the same database, with /usr/bin/time for its peak RSS.
# It prints the medians and the ratio export / read limit.
#
# Usage: bench/export.sh CASE
#   quick    50k mixed keys + collections of 50k members (a smoke run, ~1 minute)
#   mid      200k mixed keys + collections of 200k members
#   mixed    the standard dataset: 1M mixed keys, 25% with TTLs, + hash/list/set/zset of 1M
#            members and a stream of 200k entries
#   memory   one 2 GB hash (2M fields of 1 KiB) + 100k mixed keys: peak RSS of the export
#   scaling  100k, 1M and 10M mixed keys (or SCALES="..."): time per key
# RUNS=N sets the runs per measurement (default 3; the medians are printed). SKIP_READS=1 skips
# the redis-cli baseline (its time grows faster than linearly with the dataset: one read run of
# the 1M-key mixed dataset took over 5 minutes of redis-cli CPU, against 2.2 s for 50k keys).
set -euo pipefail
cd "$(dirname "$0")/.."
case_=${1:?usage: bench/export.sh quick|mixed|memory|scaling}
. bench/lib.sh
port=$(free_port)

cargo build --release --quiet --example gen_dataset --bin kvferry
gen=target/release/examples/gen_dataset
kvferry=target/release/kvferry
machine

# run_case NAME GEN_ARGS...: loads the dataset, measures, prints a result line.
run_case() {
  local name=$1; shift
  stop_server "$port"
  rm -rf "$work/r$port"
  start_redis "$port"
  "$gen" load "$@" | redis-cli -p "$port" --pipe >/dev/null
  "$gen" reads "$@" > "$work/reads.resp"
  # Big hashes and sets: the HSCAN/SSCAN commands a cursor chain sends, cursors taken from the
  # server (they are fixed for a fixed table).
  local key verb cursor
  for key in big:hash big:set huge:hash; do
    case $(redis-cli -p "$port" type "$key") in
      hash) verb=HSCAN ;; set) verb=SSCAN ;; *) continue ;;
    esac
    cursor=0
    while :; do
      printf '*5\r\n$5\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$5\r\nCOUNT\r\n$4\r\n1000\r\n' \
        "$verb" "${#key}" "$key" "${#cursor}" "$cursor" >> "$work/reads.resp"
      cursor=$(redis-cli -p "$port" --raw "$verb" "$key" "$cursor" COUNT 1000 | sed -n 1p)
      if [ "$cursor" = 0 ]; then break; fi
    done
  done
  local keys mem
  keys=$(redis-cli -p "$port" dbsize)
  mem=$(redis-cli -p "$port" info memory | sed -n 's/^used_memory_human:\(.*\)\r$/\1/p')
  local reads=() exports=() rss=() rcpu=() ecpu=() bytes=0
  for ((i = 0; i < ${RUNS:-3}; i++)); do
    local t0 c0
    c0=$(server_cpu "$port"); t0=$(date +%s.%N)
    [ -n "${SKIP_READS:-}" ] || redis-cli -p "$port" --pipe < "$work/reads.resp" >/dev/null
    reads+=("$(elapsed "$t0")"); rcpu+=("$(echo "$(server_cpu "$port") - $c0" | bc)")
    rm -rf "$work/snap"
    c0=$(server_cpu "$port"); t0=$(date +%s.%N)
    /usr/bin/time -f '%M' -o "$work/rss" "$kvferry" export --source "redis://127.0.0.1:$port" --db 0 \
      --out "$work/snap" --progress none >/dev/null
    exports+=("$(elapsed "$t0")"); ecpu+=("$(echo "$(server_cpu "$port") - $c0" | bc)")
    rss+=("$(cat "$work/rss")")
    bytes=$(du -sb "$work/snap" | cut -f1)
  done
  local r e m rc ec
  r=$(printf '%s\n' "${reads[@]}" | median)
  e=$(printf '%s\n' "${exports[@]}" | median)
  rc=$(printf '%s\n' "${rcpu[@]}" | median)
  ec=$(printf '%s\n' "${ecpu[@]}" | median)
  m=$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)
  python3 - "$name" "$keys" "$mem" "$r" "$e" "$m" "$bytes" "$rc" "$ec" "${reads[*]}" "${exports[*]}" <<'PY'
import sys
name, keys, mem, r, e, rss, size, rc, ec, rs, es = sys.argv[1:]
keys, r, e, rss, size, rc, ec = int(keys), float(r), float(e), int(rss), int(size), float(rc), float(ec)
print(f"{name}: {keys} keys ({mem.strip()} in redis); redis-cli --pipe reads {r:.2f} s, export {e:.2f} s "
      f"(ratio {e / r:.2f}); server CPU: reads {rc:.2f} s, export {ec:.2f} s; {e / keys * 1e6:.2f} us/key; "
      f"peak RSS {rss / 1024:.0f} MiB; snapshot {size / 1e6:.1f} MB   [runs: reads {rs}; export {es}]")
PY
}

case "$case_" in
  quick) run_case quick --keys 50000 --big 50000 ;;
  mid) run_case mid --keys 200000 --big 200000 ;;
  mixed) run_case mixed --keys 1000000 --big 1000000 ;;
  memory) run_case memory --keys 100000 --hash-bytes 2147483648 ;;
  scaling)
    for n in ${SCALES:-100000 1000000 10000000}; do run_case "scaling-$n" --keys "$n"; done ;;
  *) echo "unknown case $case_" >&2; exit 2 ;;
esac
