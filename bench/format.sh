#!/usr/bin/env bash
# Benchmark of the snapshot format (BENCHMARKS.md, "Snapshot format"):
#  1. generates the standard mixed dataset (examples/bench_format.rs, fixed seed) and writes it as
#     a snapshot, pinned to one core, timing the writer and the reader;
#  2. loads the same data into a private redis-server with redis-cli --pipe, runs SAVE, and
#     compares the RDB file's size with the snapshot's.
# Usage: bench/format.sh [KEYS] [LEVEL]   (defaults: 1000000 keys, kvferry's default level)
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${1:-1000000}
level=${2:-}
. bench/lib.sh
port=$(free_port)

cargo build --release --quiet --example bench_format
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $(date -u +%F)"
echo "== snapshot write and read, one core (taskset -c 0)"
taskset -c 0 target/release/examples/bench_format --out "$work/snap" --resp "$work/data.resp" --keys "$keys" ${level:+--level "$level"} | tee "$work/out.txt"
snap=$(sed -n 's/^snapshot_bytes=//p' "$work/out.txt")

echo "== the same data in redis-server $(redis-server --version | grep -o 'v=[0-9.]*')"
start_redis "$port"
redis-cli -p "$port" --pipe < "$work/data.resp" | tail -1
redis-cli -p "$port" save >/dev/null
rdb=$(stat -c %s "$work/r$port/dump.rdb")
python3 - "$snap" "$rdb" <<'PY'
import sys
snap, rdb = map(int, sys.argv[1:])
print(f"RDB {rdb/1e6:.1f} MB, snapshot {snap/1e6:.1f} MB: snapshot / RDB = {snap/rdb:.2f} (target <= 0.50)")
PY
