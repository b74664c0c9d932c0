# cgroup helpers for scripts (bash). Works on cgroup v1 (one hierarchy per controller)
# and on cgroup v2 with controllers (unified). Sourced by demo.sh and lab scripts.

# Prints the mount point of a v1 controller, or nothing.
cg_v1_mount() {
  awk -v c="$1" '$9 == "cgroup" { n = split($NF, o, ","); for (i = 1; i <= n; i++) if (o[i] == c) print $5 }' /proc/self/mountinfo | head -n1
}

# Prints the v2 mount point that has controllers enabled, or nothing.
cg_v2_mount() {
  local m
  for m in $(awk '$9 == "cgroup2" { print $5 }' /proc/self/mountinfo); do
    if [ -s "$m/cgroup.controllers" ]; then echo "$m"; return; fi
  done
}

# cg_create REL MEM_LIMIT_BYTES CPU_QUOTA_US(per 100ms, or "max") PIDS_MAX
cg_create() {
  local rel=$1 mem=$2 cpu=$3 pids=$4 v2 m
  v2=$(cg_v2_mount)
  if [ -n "$v2" ]; then
    local parent=$v2 part
    for part in $(echo "$rel" | tr '/' ' '); do
      echo "+memory +cpu +pids +io" > "$parent/cgroup.subtree_control" 2>/dev/null || true
      parent="$parent/$part"; mkdir -p "$parent"
    done
    echo "$mem" > "$v2/$rel/memory.max"
    echo "$cpu 100000" > "$v2/$rel/cpu.max"
    echo "$pids" > "$v2/$rel/pids.max"
    return
  fi
  for c in memory cpu cpuacct pids blkio; do
    m=$(cg_v1_mount "$c"); [ -n "$m" ] && mkdir -p "$m/$rel"
  done
  m=$(cg_v1_mount memory); echo "$mem" > "$m/$rel/memory.limit_in_bytes"
  m=$(cg_v1_mount cpu); echo 100000 > "$m/$rel/cpu.cfs_period_us"
  if [ "$cpu" = max ]; then echo -1 > "$m/$rel/cpu.cfs_quota_us"; else echo "$cpu" > "$m/$rel/cpu.cfs_quota_us"; fi
  m=$(cg_v1_mount pids); echo "$pids" > "$m/$rel/pids.max"
}

# cg_add REL PID: moves PID into the cgroup (every hierarchy).
cg_add() {
  local rel=$1 pid=$2 v2 m
  v2=$(cg_v2_mount)
  if [ -n "$v2" ]; then echo "$pid" > "$v2/$rel/cgroup.procs"; return; fi
  for c in memory cpu cpuacct pids blkio; do
    m=$(cg_v1_mount "$c"); [ -n "$m" ] && [ -d "$m/$rel" ] && echo "$pid" > "$m/$rel/cgroup.procs"
  done
}

# cg_destroy REL: kills what is left inside and removes the cgroup (deepest first).
cg_destroy() {
  local rel=$1 d
  for d in $(cg_v2_mount) $(for c in memory cpu cpuacct pids blkio; do cg_v1_mount "$c"; done | sort -u); do
    [ -d "$d/$rel" ] || continue
    if [ -f "$d/$rel/cgroup.procs" ]; then
      xargs -r kill -9 < "$d/$rel/cgroup.procs" 2>/dev/null || true
    fi
    find "$d/$rel" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}
