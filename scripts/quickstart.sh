#!/usr/bin/env bash
# kvferry's quick start: builds kvferry, starts a local source and a local target (redis-server,
# on free loopback ports, in a temporary directory), fills the source with sample data (every
# type, TTLs, a big list and hash, two databases), then runs the main job as an operator would:
# export -> check -> import -> verify, ending with "0 differences". Then `kvferry migrate` does
# the same in one step. Everything it starts, it stops; everything it writes is in the temporary
# directory, removed at the end (KEEP=1 keeps it).
#
#   scripts/quickstart.sh           # release build (what the README says)
#   scripts/quickstart.sh --debug   # debug build (what scripts/test.sh runs)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
[[ "${1:-}" == "--debug" ]] && profile=debug

need() { command -v "$1" >/dev/null 2>&1; }
if ! need redis-server || ! need redis-cli; then
    if [[ $(id -u) == 0 ]] && need apt-get; then
        echo "== installing redis-server (apt-get)"
        apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    else
        echo "quickstart: needs redis-server and redis-cli: install them (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis), then run this again" >&2
        exit 2
    fi
fi
need cargo || { echo "quickstart: needs Rust's cargo: see https://rustup.rs" >&2; exit 2; }

echo "== building kvferry ($profile)"
if [[ $profile == release ]]; then cargo build --release --locked -q; else cargo build --locked -q; fi
kvferry="${CARGO_TARGET_DIR:-$PWD/target}/$profile/kvferry"

work=$(mktemp -d "${TMPDIR:-/tmp}/kvferry-quickstart.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ "${KEEP:-}" == 1 ]]; then echo "kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 20000))
}
start() { # name port
    mkdir -p "$work/$1"
    redis-server --port "$2" --bind 127.0.0.1 --save '' --appendonly no --dir "$work/$1" \
        --logfile "$work/$1/redis.log" &
    pids+=($!)
    for _ in $(seq 1 100); do
        redis-cli -p "$2" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "quickstart: redis-server on port $2 did not start; see $work/$1/redis.log" >&2
    exit 2
}
src_port=$(free_port); start source "$src_port"
dst_port=$(free_port); start target "$dst_port"
dst2_port=$(free_port); start target2 "$dst2_port"
src="redis://127.0.0.1:$src_port" dst="redis://127.0.0.1:$dst_port" dst2="redis://127.0.0.1:$dst2_port"
echo "== source $src, targets $dst and $dst2 (redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'))"

echo "== filling the source with sample data"
# RESP for redis-cli --pipe: 20,000 strings (a tenth with a TTL), 2,000 hashes, 1,000 lists,
# sets and sorted sets, 200 streams, one 100,000-element list, one 50,000-field hash, and
# 500 keys in database 2.
awk 'function cmd(n, a,   i, s) { s = "*" n "\r\n"; for (i = 1; i <= n; i++) s = s "$" length(a[i]) "\r\n" a[i] "\r\n"; printf "%s", s }
BEGIN {
    srand(42)
    for (i = 0; i < 20000; i++) { a[1]="SET"; a[2]="user:" i ":name"; a[3]="name-" int(rand()*1e9); cmd(3, a)
        if (i % 10 == 0) { a[1]="PEXPIRE"; a[2]="user:" i ":name"; a[3]=3600000 + i; cmd(3, a) } }
    for (i = 0; i < 2000; i++) { a[1]="HSET"; a[2]="profile:" i; a[3]="email"; a[4]="u" i "@example.com"; a[5]="visits"; a[6]=int(rand()*1000); cmd(6, a) }
    for (i = 0; i < 1000; i++) {
        a[1]="RPUSH"; a[2]="queue:" i; for (j = 0; j < 10; j++) a[3+j]="job-" i "-" j; cmd(12, a)
        a[1]="SADD"; a[2]="tags:" i; for (j = 0; j < 5; j++) a[3+j]="t" int(rand()*50); cmd(7, a)
        a[1]="ZADD"; a[2]="scores:" i; for (j = 0; j < 5; j++) { a[3+2*j]=rand()*100; a[4+2*j]="p" j } cmd(12, a) }
    for (i = 0; i < 200; i++) for (j = 0; j < 5; j++) { a[1]="XADD"; a[2]="events:" i; a[3]="*"; a[4]="n"; a[5]=j; cmd(5, a) }
    for (i = 0; i < 100000; i += 1000) { a[1]="RPUSH"; a[2]="big:list"; for (j = 0; j < 1000; j++) a[3+j]="item-" (i+j); cmd(1002, a) }
    for (i = 0; i < 50000; i += 500) { a[1]="HSET"; a[2]="big:hash"; for (j = 0; j < 500; j++) { a[3+2*j]="f" (i+j); a[4+2*j]="v" (i+j) } cmd(1002, a) }
    a[1]="SELECT"; a[2]="2"; cmd(2, a)
    for (i = 0; i < 500; i++) { a[1]="SET"; a[2]="session:" i; a[3]="s" i; cmd(3, a) }
}' | redis-cli -p "$src_port" --pipe >/dev/null
echo "source: db0 $(redis-cli -p "$src_port" -n 0 dbsize) keys, db2 $(redis-cli -p "$src_port" -n 2 dbsize) keys"

run() { echo; echo "\$ kvferry $*" | sed "s|$work|\$WORK|g"; "$kvferry" "$@"; }
snap="$work/snapshot"
run export --source "$src" --out "$snap" --progress plain
run check "$snap"
run inspect "$snap"
run import "$snap" --target "$dst" --db-map 0=0,2=2 --progress plain
run verify "$snap" --target "$dst" --db-map 0=0,2=2 --progress none | tee "$work/verify.txt"
grep -q ", 0 differences" "$work/verify.txt"

echo
echo "== the same in one step, with no files: kvferry migrate"
run migrate --source "$src" --target "$dst2" --db-map 0=0,2=2 --state "$work/migrate-state" --progress plain | tee "$work/migrate.txt"
grep -q ", 0 differences" "$work/migrate.txt"

echo
echo "quickstart: done. Both targets hold exactly what the source holds (0 differences)."
