#!/usr/bin/env bash
# `make demo`: an aggregator (RocksDB in a local data dir), an agent on this host and two
# small workloads in their own cgroups; shows the live data until Ctrl-C, then cleans up.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/cgroup.sh"

demo_dir=${AUGUR_DEMO_DIR:-$HOME/.cache/augur/demo}
prefix=augur-demo
port=${AUGUR_DEMO_PORT:-7461}
url=http://127.0.0.1:$port
pids=()

cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  cg_destroy "$prefix"
}

if [ "${1:-}" = "--cleanup-only" ]; then cleanup; exit 0; fi
bin=${1:?usage: demo.sh BIN_DIR}
trap 'cleanup; echo; echo "demo stopped; data kept in $demo_dir"' EXIT
trap 'exit 0' INT TERM

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: the workloads need their own cgroups, which needs root; run as root" >&2
  exit 1
fi
if [ -z "$(cg_v2_mount)" ] && [ -z "$(cg_v1_mount memory)" ]; then
  echo "demo: no writable cgroup hierarchy with the memory controller found" >&2
  exit 1
fi

mkdir -p "$demo_dir"
cg_destroy "$prefix"
cat > "$demo_dir/agent.toml" <<TOML
host_id = "$(hostname | tr -c 'A-Za-z0-9._:\n-' '-')"
state_dir = "$demo_dir/agent"
interval = "1s"
[labels]
env = "demo"
[aggregator]
url = "$url"
[containers]
watch_prefixes = ["$prefix"]
TOML

echo "starting aggregator on $url (data in $demo_dir/aggregator)"
"$bin/augur-aggregator" --listen "127.0.0.1:$port" --data-dir "$demo_dir/aggregator" \
  > "$demo_dir/aggregator.log" 2>&1 &
pids+=($!)
echo "starting agent"
"$bin/augur-agent" --config "$demo_dir/agent.toml" > "$demo_dir/agent.log" 2>&1 &
pids+=($!)

# Workload 1: "web", a CPU-bursty process under a quarter-core CFS quota.
cg_create "$prefix/web" $((256 << 20)) 25000 64
# (timeout exits 124 by design; `|| true` keeps set -e from ending the loop)
( while :; do timeout 2 sh -c 'while :; do :; done' || true; sleep 3; done ) &
web=$!; pids+=($web); cg_add "$prefix/web" "$web"

# Workload 2: "cache", memory that grows to ~120 MiB then is freed (a sawtooth),
# under a 256 MiB limit.
cg_create "$prefix/cache" $((256 << 20)) max 64
python3 -c '
import time
while True:
    blocks = []
    for _ in range(60):
        blocks.append(bytearray(2 << 20))
        time.sleep(0.5)
    blocks = None
    time.sleep(5)
' &
cache=$!; pids+=($cache); cg_add "$prefix/cache" "$cache"

host=$(awk -F'"' '/^host_id/ {print $2}' "$demo_dir/agent.toml")
ctl() { "$bin/augurctl" --aggregator "$url" "$@"; }
for _ in $(seq 1 30); do ctl hosts >/dev/null 2>&1 && break; sleep 1; done
while :; do
  out=$(
    echo "augur demo: live data from $url (Ctrl-C to stop; logs in $demo_dir)"
    echo
    ctl hosts 2>&1
    echo
    ctl resources "$host" 2>&1
    echo
    for w in web cache; do
      ctl latest "$host/cgroup/$prefix/$w" 2>&1 | grep -E '^RESOURCE|container_cpu_usage_seconds_total|container_memory_usage_bytes|container_cpu_cfs_throttled_periods_total|container_pids_current' || true
    done
    echo
    ctl latest "$host" 2>&1 | grep -E '^RESOURCE|node_load1 |node_memory_MemAvailable_bytes|node_pressure_memory' || true
  )
  clear 2>/dev/null || true
  echo "$out"
  sleep 2
done
