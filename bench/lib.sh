# Shared by the bench/*.sh scripts (sourced, not run): private servers on free loopback ports,
# their CPU time, medians, and the machine line every result starts with.
# shellcheck shell=bash

command -v redis-server >/dev/null || { apt-get update -q && apt-get install -y -q redis-server; }
work=$(mktemp -d /tmp/kvferry-bench.XXXXXX)
servers=()
# Stops every server started with start_redis/start_kvrocks and removes the work directory.
cleanup() {
  local p
  for p in "${servers[@]}"; do stop_server "$p"; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
machine() {
  echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; redis-server $(redis-server --version | grep -o 'v=[0-9.]*'); $(date -u +%F)"
}
wait_ping() {
  for _ in $(seq 300); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "the server on port $1 did not start: see $work/r$1/log" >&2
  return 1
}

# start_redis PORT [PREFIX...]: a private redis-server without persistence, e.g. PREFIX = taskset -c 0.
start_redis() {
  local port=$1; shift
  mkdir -p "$work/r$port"
  "$@" redis-server --port "$port" --bind 127.0.0.1 --dir "$work/r$port" --save '' --appendonly no \
    --daemonize yes --logfile "$work/r$port/log"
  wait_ping "$port"
  servers+=("$port")
}

# start_kvrocks BINARY PORT [PREFIX...]: a private Kvrocks with an empty data directory.
start_kvrocks() {
  local bin=$1 port=$2; shift 2
  rm -rf "$work/r$port" && mkdir -p "$work/r$port"
  printf 'bind 127.0.0.1\nport %s\ndir %s\nlog-dir %s\n' "$port" "$work/r$port/data" "$work/r$port" > "$work/r$port/kvrocks.conf"
  "$@" "$bin" -c "$work/r$port/kvrocks.conf" > "$work/r$port/log" 2>&1 &
  echo $! > "$work/r$port/pid"
  wait_ping "$port"
  servers+=("$port")
}

# stop_server PORT: SHUTDOWN (Redis), or the process started by start_kvrocks.
stop_server() {
  local pid
  if [ -f "$work/r$1/pid" ]; then
    pid=$(cat "$work/r$1/pid"); rm -f "$work/r$1/pid"
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  else
    redis-cli -p "$1" shutdown nosave >/dev/null 2>&1 || true
  fi
}

# server_cpu PORT: CPU seconds (user + system) the server's process has used, from /proc (Redis
# and Kvrocks alike: INFO server gives its process_id).
server_cpu() {
  local pid
  pid=$(redis-cli -p "$1" info server | tr -d '\r' | sed -n 's/^process_id://p')
  # Fields 14 and 15 of stat, counted after the command name, which may hold spaces.
  sed 's/.*) //' "/proc/$pid/stat" | awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($12 + $13) / hz}'
}

# elapsed T0: seconds since T0 (from date +%s.%N).
elapsed() { echo "$(date +%s.%N) - $1" | bc; }
