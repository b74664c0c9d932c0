"""Cgroups of lab runs, on cgroup v1, v2 or hybrid hierarchies.

Every path this module writes or removes is `<hierarchy>/<prefix>/<run>` (or the prefix
itself), with names checked against a strict pattern, so the lab never touches a
cgroup outside its prefix.

- v1 (or hybrid: v1 controllers plus a controller-less v2 mount at `unified`): the run
  gets a cgroup in the memory, cpu, cpuacct, pids and blkio hierarchies, and one in the
  v2 hierarchy too when it is mounted, which gives per-cgroup PSI (memory.pressure,
  cpu.pressure, io.pressure exist in every v2 cgroup, controllers or not) and
  cgroup.kill.
- v2 with controllers: one cgroup, with +memory +cpu +pids +io enabled from the root
  down to the prefix.

`parse_mountinfo` is pure and tested on fixtures.
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "blkio")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CFS_PERIOD_US = 100_000


@dataclass
class Layout:
    """Where the hierarchies are mounted."""

    v1: dict = field(default_factory=dict)  # controller -> mount point (Path)
    unified: Path | None = None  # the cgroup2 mount
    unified_controllers: set = field(default_factory=set)  # controllers available there

    @property
    def mode(self) -> str:
        if "memory" in self.v1:
            return "v1"
        if self.unified is not None and {"memory", "cpu", "pids"} <= self.unified_controllers:
            return "v2"
        return "none"


def parse_mountinfo(text: str) -> tuple[dict, list]:
    """(v1 controller -> mount point, [cgroup2 mount points]) from /proc/self/mountinfo."""
    v1, v2 = {}, []
    for line in text.splitlines():
        parts = line.split()
        if " - " not in line or len(parts) < 10:
            continue
        sep = parts.index("-")
        fstype, opts = parts[sep + 1], parts[sep + 3] if len(parts) > sep + 3 else ""
        mount = parts[4]
        if fstype == "cgroup":
            for o in opts.split(","):
                if o in V1_CONTROLLERS and o not in v1:
                    v1[o] = mount
        elif fstype == "cgroup2":
            v2.append(mount)
    return v1, v2


def detect_layout(proc: Path = Path("/proc")) -> Layout:
    v1, v2 = parse_mountinfo((proc / "self/mountinfo").read_text())
    layout = Layout(v1={k: Path(v) for k, v in v1.items()})
    if v2:
        layout.unified = Path(v2[0])
        try:
            layout.unified_controllers = set((layout.unified / "cgroup.controllers").read_text().split())
        except OSError:
            pass
    return layout


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"refusing cgroup name {name!r}: only [A-Za-z0-9._-], not starting with . or -")
    return name


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


class LabCgroups:
    """The lab's prefix and its runs' cgroups."""

    def __init__(self, layout: Layout, prefix: str):
        self.layout = layout
        self.prefix = check_name(prefix)
        if layout.mode == "none":
            raise RuntimeError(
                "no writable cgroup hierarchy with the memory controller (v1 memory, or v2 with "
                "memory, cpu and pids controllers)"
            )

    # -- paths ------------------------------------------------------------------------
    def _dirs(self, run: str | None) -> dict:
        """Label -> directory of the prefix (run None) or of a run, in every hierarchy."""
        rel = self.prefix if run is None else f"{self.prefix}/{check_name(run)}"
        out = {}
        if self.layout.mode == "v1":
            for c, m in self.layout.v1.items():
                out[c] = m / rel
        if self.layout.unified is not None:
            out["unified"] = self.layout.unified / rel
        return out

    def dir(self, run: str, which: str) -> Path | None:
        return self._dirs(run).get(which)

    def procs_files(self, run: str) -> list:
        return [d / "cgroup.procs" for d in self._dirs(run).values()]

    # -- lifecycle --------------------------------------------------------------------
    def create_prefix(self, cpu_shares: int | None = None) -> None:
        """Creates the prefix. `cpu_shares` (v1 cpu.shares scale, 1024 = one default
        process or cgroup) is the weight of the whole lab against the rest of the machine
        when the CPUs are contended; on v2 it becomes cpu.weight (100 = default)."""
        if self.layout.mode == "v2":
            root = self.layout.unified
            ctrl = " ".join(f"+{c}" for c in ("memory", "cpu", "pids", "io") if c in self.layout.unified_controllers)
            _write(root / "cgroup.subtree_control", ctrl)
            (root / self.prefix).mkdir(exist_ok=True)
            _write(root / self.prefix / "cgroup.subtree_control", ctrl)
            if cpu_shares:
                _write(root / self.prefix / "cpu.weight", str(max(1, min(10000, cpu_shares * 100 // 1024))))
            return
        dirs = self._dirs(None)
        for d in dirs.values():
            d.mkdir(exist_ok=True)
        if cpu_shares and "cpu" in dirs:
            _write(dirs["cpu"] / "cpu.shares", str(max(2, cpu_shares)))

    def create(self, run: str, memory_limit: int, cpu_quota: float | None, pids_max: int) -> None:
        dirs = self._dirs(run)
        for d in dirs.values():
            d.mkdir(exist_ok=False)
        if self.layout.mode == "v1":
            _write(dirs["memory"] / "memory.limit_in_bytes", str(memory_limit))
            if "cpu" in dirs:
                _write(dirs["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
                quota = -1 if cpu_quota is None else max(1000, int(cpu_quota * CFS_PERIOD_US))
                _write(dirs["cpu"] / "cpu.cfs_quota_us", str(quota))
            if "pids" in dirs:
                _write(dirs["pids"] / "pids.max", str(pids_max))
        else:
            d = dirs["unified"]
            _write(d / "memory.max", str(memory_limit))
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0")
            quota = "max" if cpu_quota is None else str(max(1000, int(cpu_quota * CFS_PERIOD_US)))
            _write(d / "cpu.max", f"{quota} {CFS_PERIOD_US}")
            _write(d / "pids.max", str(pids_max))

    def pids(self, run: str) -> list:
        out = set()
        for d in self._dirs(run).values():
            text = _read(d / "cgroup.procs")
            if text:
                out.update(int(x) for x in text.split())
        return sorted(out)

    def kill(self, run: str) -> None:
        """SIGKILL to every process of the run's cgroup (all of them started by the lab)."""
        u = self._dirs(run).get("unified")
        if u is not None and (u / "cgroup.kill").exists():
            try:
                _write(u / "cgroup.kill", "1")
            except OSError:
                pass
        for pid in self.pids(run):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self, run: str | None, timeout: float = 5.0) -> bool:
        """Kills what is left and removes the cgroup (a run's, or with run None the prefix
        and every run under it). True when everything is gone."""
        if run is None:
            names = set()
            for d in self._dirs(None).values():
                if d.is_dir():
                    names.update(p.name for p in d.iterdir() if p.is_dir() and NAME_RE.match(p.name))
            ok = all([self.remove(n, timeout) for n in sorted(names)])
            dirs = list(self._dirs(None).values())
        else:
            ok = True
            dirs = list(self._dirs(run).values())
            if self.pids(run):
                self.kill(run)
        end = time.monotonic() + timeout
        for d in dirs:
            while d.is_dir():
                try:
                    d.rmdir()
                except OSError:
                    if time.monotonic() > end:
                        ok = False
                        break
                    if run is not None:
                        self.kill(run)
                    time.sleep(0.05)
        return ok

    # -- counters ---------------------------------------------------------------------
    def read(self, run: str, which: str, name: str) -> str | None:
        d = self._dirs(run).get(which)
        return None if d is None else _read(d / name)

    def counters(self, run: str) -> dict:
        """Raw text of the files the labels are read from (missing files are None)."""
        if self.layout.mode == "v1":
            return {
                "memory.oom_control": self.read(run, "memory", "memory.oom_control"),
                "memory.failcnt": self.read(run, "memory", "memory.failcnt"),
                "memory.max_usage_in_bytes": self.read(run, "memory", "memory.max_usage_in_bytes"),
                "pids.events": self.read(run, "pids", "pids.events"),
                "cpu.stat": self.read(run, "cpu", "cpu.stat"),
                "memory.pressure": self.read(run, "unified", "memory.pressure"),
            }
        return {
            "memory.events": self.read(run, "unified", "memory.events"),
            "memory.peak": self.read(run, "unified", "memory.peak"),
            "pids.events": self.read(run, "unified", "pids.events"),
            "cpu.stat": self.read(run, "unified", "cpu.stat"),
            "memory.pressure": self.read(run, "unified", "memory.pressure"),
        }
