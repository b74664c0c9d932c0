"""Labels from real events: pure parsers and the decision of what a run ended in.

Sources, in the order they are trusted for the failure time t_f (wall-clock ms, the
clock the agent stamps its samples with):

- OOM kill: the kernel's `oom-kill:` record in /dev/kmsg naming the run's memcg
  (timestamp in microseconds of CLOCK_MONOTONIC, mapped to wall clock), confirmed by the
  cgroup's own counter (v1 `memory.oom_control` `oom_kill N`, v2 `memory.events`
  `oom_kill N`). Without a kmsg record, the time the driver reaped the SIGKILLed
  workload.
- ENOSPC and fork EAGAIN: the workload's own event, stamped right after the failing
  write() or fork() returned.
- SLO breach: from the workload's per-request latency log (`slo_breach`).
- A workload that exits with an error (not a lab scenario) is an "error" label, so
  a broken run never passes for a normal one.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Iterable

FAILURE_TYPES = ("oom", "enospc", "fork_eagain", "slo", "error")


def parse_flat_keyed(text: str | None) -> dict:
    """`key value` lines (memory.oom_control, memory.events, pids.events, cpu.stat)."""
    out = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def oom_kill_count(oom_control: str | None = None, memory_events: str | None = None) -> int | None:
    """The cgroup's OOM kill counter: v1 memory.oom_control (kernels >= 4.13 have the
    `oom_kill` line) or v2 memory.events. None when neither says."""
    for text in (memory_events, oom_control):
        v = parse_flat_keyed(text).get("oom_kill")
        if v is not None:
            return v
    return None


def parse_int(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def parse_psi_total_us(text: str | None, kind: str = "some") -> int | None:
    """`total=` of the `some` (or `full`) line of a PSI file, in microseconds."""
    for line in (text or "").splitlines():
        if line.startswith(kind + " "):
            m = re.search(r"total=(\d+)", line)
            if m:
                return int(m.group(1))
    return None


@dataclass
class KmsgRecord:
    seq: int
    usec: int  # CLOCK_MONOTONIC microseconds
    message: str


def parse_kmsg_record(raw: str) -> KmsgRecord | None:
    """One /dev/kmsg record: "prio,seq,usec,flags[,...];message\\n[ continuation]"."""
    head, sep, rest = raw.partition(";")
    if not sep:
        return None
    fields = head.split(",")
    if len(fields) < 3:
        return None
    try:
        seq, usec = int(fields[1]), int(fields[2])
    except ValueError:
        return None
    return KmsgRecord(seq, usec, rest.split("\n", 1)[0])


_OOM_RE = {k: re.compile(rf"(?:^|,){k}=([^,]*)") for k in ("oom_memcg", "task_memcg", "task", "pid")}


def parse_oom_kill(message: str) -> dict | None:
    """The kernel's one-line OOM summary:
    `oom-kill:constraint=CONSTRAINT_MEMCG,...,oom_memcg=/p/r,task_memcg=/p/r,task=x,pid=1,uid=0`."""
    if not message.startswith("oom-kill:"):
        return None
    body = message[len("oom-kill:") :]
    out = {}
    for k, rx in _OOM_RE.items():
        m = rx.search(body)
        if m:
            out[k] = m.group(1)
    if "pid" not in out or "task_memcg" not in out:
        return None
    out["pid"] = int(out["pid"])
    return out


def run_of_memcg(memcg: str, prefix: str) -> str | None:
    """"/augur-lab/run-0001" (or a descendant) -> "run-0001"."""
    parts = [p for p in memcg.split("/") if p]
    if len(parts) >= 2 and parts[0] == prefix:
        return parts[1]
    return None


def read_events(text: str) -> list:
    """The workload's JSON-lines events; a torn last line (SIGKILL mid-write) is skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def first_event(events: Iterable[dict], ev: str, **match) -> dict | None:
    for e in events:
        if e.get("ev") == ev and all(e.get(k) == v for k, v in match.items()):
            return e
    return None


def parse_latency_log(text: str) -> list:
    """"completion_wall_ms latency_ms" lines -> [(t_ms, latency_ms)]; a torn line is skipped."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            out.append((float(parts[0]), float(parts[1])))
        except ValueError:
            continue
    return out


def slo_breach(
    latencies: Iterable[tuple],
    slo_ms: float,
    window_ms: float = 30_000,
    max_bad_fraction: float = 0.05,
    min_requests: int = 30,
) -> float | None:
    """When the latency SLO was first breached: the completion time of the first request
    after which more than `max_bad_fraction` of the requests completed in the trailing
    `window_ms` took longer than `slo_ms` (a p95 latency objective over a sliding window,
    30 s in the lab, evaluated at every completion).

    The error budget of a window is never smaller than `max_bad_fraction * min_requests`,
    so the few requests of a run's first seconds cannot breach on one slow request, while
    a server that has stalled (few completions, all slow) still breaches."""
    win: deque = deque()
    bad = 0
    for t, lat in latencies:
        win.append((t, lat))
        if lat > slo_ms:
            bad += 1
        while win and win[0][0] <= t - window_ms:
            _, old = win.popleft()
            if old > slo_ms:
                bad -= 1
        if bad > max_bad_fraction * max(len(win), min_requests):
            return t
    return None


def percentile(values: list, q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(math.ceil(q * len(s))) - 1))
    return s[k]


def decide(observed: dict) -> dict:
    """The label of one run from what was observed.

    `observed` keys (all optional except exit_ms): exit_ms, returncode (negative = signal),
    killed_by_driver, oom_kill (counter), kmsg_oom_ms (kernel time of the OOM kill, wall
    ms), events (workload events), slo_breach_ms.

    Returns {"failure", "t_f_ms", "t_f_source", "failures": [every failure seen, by time]}.
    """
    found = []
    exit_ms = observed.get("exit_ms")
    rc = observed.get("returncode")
    oom = observed.get("oom_kill") or 0
    kmsg = observed.get("kmsg_oom_ms")
    sigkill = rc == -9
    if oom > 0 or kmsg is not None or (sigkill and not observed.get("killed_by_driver")):
        if kmsg is not None:
            found.append(("oom", kmsg, "kmsg"))
        elif exit_ms is not None:
            found.append(("oom", exit_ms, "exit"))
    events = observed.get("events") or []
    e = first_event(events, "enospc")
    if e:
        found.append(("enospc", e["t"], "workload"))
    e = first_event(events, "fork_fail", errno="EAGAIN")
    if e:
        found.append(("fork_eagain", e["t"], "workload"))
    if observed.get("slo_breach_ms") is not None:
        found.append(("slo", observed["slo_breach_ms"], "latency_log"))
    if rc is not None and rc > 0 and exit_ms is not None:
        found.append(("error", exit_ms, "exit"))
    found.sort(key=lambda f: f[1])
    failures = [{"type": k, "t_ms": int(round(t)), "source": s} for k, t, s in found]
    if not failures:
        return {"failure": None, "t_f_ms": None, "t_f_source": None, "failures": []}
    first = failures[0]
    return {"failure": first["type"], "t_f_ms": first["t_ms"], "t_f_source": first["source"], "failures": failures}
