"""Scenario families of the lab: what each run does, with its parameters drawn from a
seeded random generator.

Pure code (no I/O): `plan()` decides which variant each run of a dataset is, and
`make_run()` turns (dataset seed, run index, variant) into a `RunSpec`: the cgroup
limits, the `labwork` mode and arguments, and the schedule the workload follows (memory,
request rate, fork rate or disk bytes over time). The same seed always gives the same
runs, so a dataset's parameters can be regenerated from its labels file.

Every variant is registered in `VARIANTS` as "family.variant" with a weight (its share of
a dataset) and a sampler. `designed` is what the variant is built to end in; the label
of a run comes from what really happened (labels.py), never from this field.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Callable

MiB = 1 << 20
# Memory limits of leak runs ("several limits").
LEAK_LIMITS_MIB = (64, 96, 128, 192, 256, 384, 512)
# Soak mode (`run.py --soak`): long concurrent runs of the variants that must not be called
# failures, to measure false alarms per workload-day. Their CPU duty is scaled by SOAK_CPU
# (many run at once on a small machine) and page-cache re-reads by SOAK_IO; shares by weight.
SOAK_CPU = 0.1
SOAK_IO = 0.5
SOAK_VARIANTS = {
    "normal.steady": 10,
    "normal.bursty": 9,
    "normal.periodic": 9,
    "mem.sawtooth": 12,
    "mem.plateau": 10,
    "mem.pagecache": 3,
}
# Schedule resolution, seconds. labwork interpolates linearly between points.
SCHEDULE_STEP = 0.25
# Seconds a run's cgroup exists, idle, before its workload starts: the agent discovers
# watched cgroups every second (lab agent config), so the run's first samples are there.
PREROLL = 3.0
# Runs with their own filesystem wait longer: the agent re-reads the mount table every 10 s.
PREROLL_FS = 12.0
# The driver kills a workload this long after it should have stopped by itself.
DEADLINE_GRACE = 10.0


@dataclass
class RunSpec:
    """Everything the driver needs to run one scenario, and everything to record."""

    run_id: str
    index: int
    seed: int
    family: str
    variant: str
    designed: str | None  # "oom", "enospc", "fork_eagain", "slo", "maybe_slo" or None
    params: dict
    mode: str  # labwork mode
    args: dict  # extra labwork key=value arguments (paths filled in by the driver)
    schedule: list  # [(t_s, v1, v2)]
    memory_limit: int  # bytes
    cpu_quota: float | None  # cores (CFS quota / period), None = unlimited
    pids_max: int
    fs_bytes: int | None  # size of the run's own ext4 filesystem, if it needs one
    duration: float  # labwork stops by itself after this many seconds
    deadline: float  # the driver kills it after this many seconds
    preroll: float
    cpu_cost: float  # cores this run may use at most (for the driver's CPU budget)
    slo: dict | None = None  # latency SLO of serve runs (labels.slo_breach arguments)

    def to_json(self) -> dict:
        d = asdict(self)
        del d["schedule"]
        return d


@dataclass
class Variant:
    name: str  # "family.variant"
    weight: float
    sample: Callable[[random.Random, float], dict]
    tags: list = field(default_factory=list)


def run_seed(dataset_seed: int, index: int, variant: str) -> int:
    """A run's own seed: stable across Python versions and platforms."""
    h = hashlib.sha256(f"augur-lab/{dataset_seed}/{index}/{variant}".encode()).digest()
    return int.from_bytes(h[:8], "big") >> 1


def _grid(duration: float, fn: Callable[[float], tuple], step: float = SCHEDULE_STEP) -> list:
    n = int(math.ceil(duration / step))
    out = []
    for i in range(n + 1):
        t = min(i * step, duration)
        v = fn(t)
        out.append((round(t, 3), *v))
    return out


def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


def _startup(t: float, base: float, ramp: float = 2.0) -> float:
    """The base allocation comes up over the first `ramp` seconds."""
    return base * min(1.0, t / ramp)


def _soak_duration(drawn: float, soak: float | None) -> float:
    """A soak run lasts the soak's duration; otherwise the variant's own drawn duration
    (drawn either way, so a variant's random stream is the same in both modes)."""
    return float(soak) if soak else drawn


def _soak_cpu(soak: float | None) -> float:
    return SOAK_CPU if soak else 1.0


# ---------------------------------------------------------------------------------------
# Memory leaks: end in a kernel OOM kill by the cgroup limit.


def _leak(rng: random.Random, scale: float, growth: str) -> dict:
    limit = rng.choice(LEAK_LIMITS_MIB) * MiB
    base = rng.uniform(0.05, 0.25) * limit
    t_limit = rng.uniform(90, 420) * scale  # designed time at which usage reaches the limit
    ripple_on = rng.random() < 0.4
    ripple = rng.uniform(0.02, 0.08) * limit if ripple_on else 0.0
    ripple_period = rng.uniform(8, 40)
    duty = rng.uniform(0.005, 0.03)
    params = {
        "growth": growth,
        "limit_bytes": limit,
        "base_bytes": int(base),
        "t_limit_s": _r(t_limit),
        "ripple_bytes": int(ripple),
        "ripple_period_s": _r(ripple_period),
        "cpu_duty": _r(duty, 4),
    }
    span = limit - base
    if growth == "linear":
        g = lambda t: span * t / t_limit  # noqa: E731
    elif growth == "accel":
        p = rng.uniform(1.5, 3.0)
        params["power"] = _r(p)
        g = lambda t: span * (t / t_limit) ** p  # noqa: E731
    elif growth == "step":
        n = rng.randint(4, 12)
        period = t_limit / n
        step = span / (n - 0.5)  # the n-th step overshoots the limit by half a step
        params.update(steps=n, step_period_s=_r(period), step_bytes=int(step))
        g = lambda t: step * math.floor(t / period + 1e-9)  # noqa: E731
    else:
        raise ValueError(growth)
    duration = t_limit + max(30.0 * scale, 0.15 * t_limit)

    def mem(t: float) -> tuple:
        rip = ripple * ((t % ripple_period) / ripple_period) if ripple else 0.0
        return (int(_startup(t, base) + g(t) + rip), duty)

    return dict(
        designed="oom",
        params=params,
        mode="mem",
        schedule=_grid(duration, mem),
        memory_limit=limit,
        duration=duration,
        cpu_cost=duty + 0.01,
    )


def leak_linear(rng, scale):
    return _leak(rng, scale, "linear")


def leak_accel(rng, scale):
    return _leak(rng, scale, "accel")


def leak_step(rng, scale):
    return _leak(rng, scale, "step")


# ---------------------------------------------------------------------------------------
# Memory that must not be called a failure.


def mem_sawtooth(rng, scale, soak=None):
    """GC-like: the heap grows to a peak, a collection drops it back to the base."""
    limit = rng.choice(LEAK_LIMITS_MIB[2:]) * MiB
    base = rng.uniform(0.1, 0.3) * limit
    peak = rng.uniform(0.5, 0.85) * limit
    period = rng.uniform(10, 90) * max(scale, 0.5)
    jitter = rng.uniform(0.0, 0.1)
    rise = rng.uniform(0.7, 1.0)  # share of the period spent growing; then holds until GC
    duration = _soak_duration(rng.uniform(150, 360) * scale, soak)
    n_cycles = int(duration / period) + 2
    peaks = [peak * (1.0 - jitter * rng.random()) for _ in range(n_cycles)]
    duty = rng.uniform(0.01, 0.04) * _soak_cpu(soak)

    def mem(t):
        k = int(t // period)
        phase = (t - k * period) / period
        top = peaks[min(k, n_cycles - 1)]
        return (int(_startup(t, base) + (top - base) * min(1.0, phase / rise)), duty)

    return dict(
        designed=None,
        params={
            "limit_bytes": limit,
            "base_bytes": int(base),
            "peak_bytes": int(peak),
            "period_s": _r(period),
            "jitter": _r(jitter),
            "rise": _r(rise),
            "cpu_duty": _r(duty, 4),
        },
        mode="mem",
        schedule=_grid(duration, mem),
        memory_limit=limit,
        duration=duration,
        cpu_cost=duty + 0.01 if soak else 0.05,
    )


def mem_plateau(rng, scale, soak=None):
    """A cache that grows, then plateaus below the limit (with a little churn)."""
    limit = rng.choice(LEAK_LIMITS_MIB[1:]) * MiB
    base = rng.uniform(0.05, 0.15) * limit
    plateau = rng.uniform(0.5, 0.85) * limit
    shape = rng.choice(["exp", "ramp"])
    tau = rng.uniform(15, 90) * scale
    churn = rng.uniform(0.0, 0.03) * limit
    churn_period = rng.uniform(5, 20)
    duration = _soak_duration(rng.uniform(150, 360) * scale, soak)
    duty = rng.uniform(0.01, 0.04) * _soak_cpu(soak)

    def mem(t):
        if shape == "exp":
            f = 1.0 - math.exp(-t / tau)
        else:
            f = min(1.0, t / (2.0 * tau))
        c = churn * 0.5 * (1.0 - math.cos(2 * math.pi * t / churn_period))
        return (int(_startup(t, base) + (plateau - base) * f + c), duty)

    return dict(
        designed=None,
        params={
            "limit_bytes": limit,
            "base_bytes": int(base),
            "plateau_bytes": int(plateau),
            "shape": shape,
            "tau_s": _r(tau),
            "churn_bytes": int(churn),
            "churn_period_s": _r(churn_period),
            "cpu_duty": _r(duty, 4),
        },
        mode="mem",
        schedule=_grid(duration, mem),
        memory_limit=limit,
        duration=duration,
        cpu_cost=duty + 0.01 if soak else 0.05,
    )


def mem_pagecache(rng, scale, soak=None):
    """A file larger than the memory limit, written then read again and again: page cache
    fills the cgroup to its limit and is reclaimed. Usage near 100% of the limit, no OOM."""
    limit = rng.choice((96, 128, 192, 256)) * MiB
    size = rng.uniform(1.2, 2.0) * limit
    wrate = rng.uniform(8, 24) * MiB
    rrate = rng.uniform(8, 32) * MiB * (SOAK_IO if soak else 1.0)
    base = rng.uniform(8, 24) * MiB
    duration = _soak_duration(rng.uniform(120, 300) * scale, soak)
    return dict(
        designed=None,
        params={
            "limit_bytes": limit,
            "file_bytes": int(size),
            "write_rate_bps": int(wrate),
            "read_rate_bps": int(rrate),
            "base_bytes": int(base),
        },
        mode="cache",
        args={"size": int(size), "wrate": int(wrate), "rrate": int(rrate), "base": int(base)},
        schedule=[(0.0, 0.0, 0.0)],
        memory_limit=limit,
        fs_bytes=int(size) + 48 * MiB,
        duration=duration,
        cpu_cost=0.05,
    )


# ---------------------------------------------------------------------------------------
# CPU under a CFS quota, with a latency SLO measured by the workload.


def _serve(rng, scale, kind):
    quota = rng.uniform(0.08, 0.25)
    work_ms = rng.uniform(2, 8)
    capacity = quota * 1000.0 / work_ms  # requests/s the quota can serve
    slo_ms = rng.choice((120, 200, 300))
    base = rng.uniform(8, 32) * MiB
    duration = rng.uniform(100, 240) * scale
    params = {
        "kind": kind,
        "cpu_quota_cores": _r(quota),
        "work_ms": _r(work_ms),
        "capacity_rps": _r(capacity),
        "slo_ms": slo_ms,
        "base_bytes": int(base),
    }
    hog_start, hog_duty, bursts = None, 0.0, []
    if kind == "ok":
        rho0 = rho1 = rng.uniform(0.15, 0.45)
        designed = None
    elif kind == "ramp":
        rho0, rho1 = rng.uniform(0.2, 0.5), rng.uniform(1.1, 1.6)
        designed = "slo"
    elif kind == "hog":
        rho0 = rho1 = rng.uniform(0.3, 0.55)
        hog_start = rng.uniform(0.3, 0.6) * duration
        hog_duty = rng.uniform(0.6, 1.0)
        params.update(hog_start_s=_r(hog_start), hog_duty=_r(hog_duty))
        designed = "slo"
    elif kind == "burst":
        rho0 = rho1 = rng.uniform(0.2, 0.45)
        t = rng.uniform(15, 45) * scale
        while t < duration - 5:
            length = rng.uniform(2, 12)
            bursts.append((_r(t), _r(length), _r(rng.uniform(1.2, 3.0))))
            t += length + rng.uniform(20, 60) * scale
        params["bursts"] = bursts  # (start_s, length_s, load)
        designed = "maybe_slo"
    else:
        raise ValueError(kind)
    params.update(load_start=_r(rho0), load_end=_r(rho1))

    def rate(t):
        rho = rho0 + (rho1 - rho0) * t / duration
        for start, length, load in bursts:
            if start <= t < start + length:
                rho = load
        hog = hog_duty if hog_start is not None and t >= hog_start else 0.0
        return (_r(rho * capacity, 4), hog)

    # Bursts and the hog switch on within one schedule step.
    schedule = _grid(duration, rate, step=0.5 if not bursts and hog_start is None else 0.1)
    return dict(
        designed=designed,
        params=params,
        mode="serve",
        args={"work_ms": _r(work_ms, 4), "base": int(base)},
        schedule=schedule,
        memory_limit=256 * MiB,
        cpu_quota=quota,
        duration=duration,
        cpu_cost=quota,
        # The budget floor: half the requests a 30 s window holds at the starting load.
        slo={
            "slo_ms": slo_ms,
            "window_ms": 30_000,
            "max_bad_fraction": 0.05,
            "min_requests": max(30, int(0.5 * 30 * rho0 * capacity)),
        },
    )


def cpu_ok(rng, scale):
    return _serve(rng, scale, "ok")


def cpu_ramp(rng, scale):
    return _serve(rng, scale, "ramp")


def cpu_hog(rng, scale):
    return _serve(rng, scale, "hog")


def cpu_burst(rng, scale):
    return _serve(rng, scale, "burst")


# ---------------------------------------------------------------------------------------
# Fork pressure against pids.max.

PIDS_MAX_CHOICES = (32, 48, 64, 96, 128, 192, 256)


def fork_leak(rng, scale):
    """Children that never exit: the pid count climbs to pids.max and fork() fails."""
    pids_max = rng.choice(PIDS_MAX_CHOICES)
    t_fail = rng.uniform(60, 240) * scale
    shape = rng.choice(["linear", "accel"])
    r = pids_max / t_fail
    duration = t_fail * 1.15 + 20 * scale

    def rate(t):
        if shape == "linear":
            return (_r(r, 5), 0)
        return (_r(r * (0.4 + 1.2 * min(t / t_fail, 1.5)), 5), 0)

    return dict(
        designed="fork_eagain",
        params={"pids_max": pids_max, "t_limit_s": _r(t_fail), "shape": shape, "fork_rate": _r(r, 4)},
        mode="fork",
        args={"life": -1},
        schedule=_grid(duration, rate, step=1.0),
        memory_limit=512 * MiB,
        pids_max=pids_max,
        duration=duration,
        cpu_cost=0.05,
    )


def fork_ok(rng, scale):
    """Short-lived children: a population well under pids.max (Little's law)."""
    pids_max = rng.choice(PIDS_MAX_CHOICES)
    life = rng.uniform(2, 20)
    pop = rng.uniform(0.2, 0.45) * pids_max
    swing = rng.uniform(0.0, 0.3)
    swing_period = rng.uniform(30, 120) * scale
    duration = rng.uniform(120, 300) * scale

    def rate(t):
        return (_r(pop / life * (1 + swing * math.sin(2 * math.pi * t / swing_period)), 5), 0)

    return dict(
        designed=None,
        params={
            "pids_max": pids_max,
            "child_life_s": _r(life),
            "population": _r(pop),
            "swing": _r(swing),
            "swing_period_s": _r(swing_period),
        },
        mode="fork",
        args={"life": _r(life)},
        schedule=_grid(duration, rate, step=1.0),
        memory_limit=512 * MiB,
        pids_max=pids_max,
        duration=duration,
        cpu_cost=0.05,
    )


# ---------------------------------------------------------------------------------------
# Disk: a size-limited ext4 filesystem of the run's own.

FS_CHOICES_MIB = (64, 96, 128, 192, 256)


def disk_fill(rng, scale):
    """Files grow until the filesystem is full: write() fails with ENOSPC."""
    fs = rng.choice(FS_CHOICES_MIB) * MiB
    initial = rng.uniform(0.05, 0.4) * fs
    t_full = rng.uniform(60, 240) * scale
    shape = rng.choice(["linear", "accel", "steps"])
    p = rng.uniform(1.5, 2.5)
    n_steps = rng.randint(4, 10)
    span = fs - initial
    duration = t_full * 1.1 + 20 * scale

    def target(t):
        x = t / t_full
        if shape == "linear":
            g = x
        elif shape == "accel":
            g = x**p
        else:
            g = math.floor(x * n_steps + 1e-9) / (n_steps - 0.5)
        return (int(_startup(t, initial, ramp=5.0) + span * g * 1.02), 0)

    params = {"fs_bytes": fs, "initial_bytes": int(initial), "t_full_s": _r(t_full), "shape": shape}
    if shape == "accel":
        params["power"] = _r(p)
    if shape == "steps":
        params["steps"] = n_steps
    return dict(
        designed="enospc",
        params=params,
        mode="disk",
        args={"max_rate": 64 * MiB},
        schedule=_grid(duration, target, step=0.5),
        memory_limit=512 * MiB,
        fs_bytes=fs,
        duration=duration,
        cpu_cost=0.05,
    )


def disk_rotate(rng, scale):
    """Logs that grow and are rotated away: the filesystem fills and empties, never full."""
    fs = rng.choice(FS_CHOICES_MIB) * MiB
    high = rng.uniform(0.5, 0.85) * fs
    low = rng.uniform(0.1, 0.3) * fs
    cycle = rng.uniform(20, 90) * scale
    duration = rng.uniform(150, 300) * scale

    def target(t):
        phase = (t % cycle) / cycle
        return (int(low + (high - low) * phase), 0)

    return dict(
        designed=None,
        params={"fs_bytes": fs, "high_bytes": int(high), "low_bytes": int(low), "cycle_s": _r(cycle)},
        mode="disk",
        args={"max_rate": 64 * MiB},
        schedule=_grid(duration, target, step=0.5),
        memory_limit=512 * MiB,
        fs_bytes=fs,
        duration=duration,
        cpu_cost=0.05,
    )


# ---------------------------------------------------------------------------------------
# Normal workloads.


def normal_steady(rng, scale, soak=None):
    limit = rng.choice((256, 512)) * MiB
    level = rng.uniform(16, 128) * MiB
    wobble = rng.uniform(0.0, 0.03) * level
    duty = rng.uniform(0.01, 0.05) * _soak_cpu(soak)
    quota = rng.choice([None, _r(rng.uniform(0.2, 1.0))])
    duration = _soak_duration(rng.uniform(150, 400) * scale, soak)

    def mem(t):
        return (int(_startup(t, level) + wobble * math.sin(t / 7.0)), duty)

    return dict(
        designed=None,
        params={
            "limit_bytes": limit,
            "level_bytes": int(level),
            "wobble_bytes": int(wobble),
            "cpu_duty": _r(duty, 4),
            "cpu_quota_cores": quota,
        },
        mode="mem",
        schedule=_grid(duration, mem, step=1.0),
        memory_limit=limit,
        cpu_quota=quota,
        duration=duration,
        cpu_cost=duty,
    )


def normal_bursty(rng, scale, soak=None):
    limit = rng.choice((256, 384, 512)) * MiB
    base = rng.uniform(16, 64) * MiB
    quota = rng.uniform(0.1, 0.25)
    busy = rng.uniform(0.2, 0.6) * _soak_cpu(soak)
    mean_gap = rng.uniform(15, 60) * scale
    duration = _soak_duration(rng.uniform(150, 400) * scale, soak)
    bursts = []
    t = rng.expovariate(1.0 / mean_gap)
    while t < duration:
        length = rng.uniform(3, 20)
        bursts.append((_r(t), _r(length), int(rng.uniform(0.1, 0.45) * limit)))
        t += length + rng.expovariate(1.0 / mean_gap)

    def mem(t):
        m, d = _startup(t, base), 0.02 * _soak_cpu(soak)
        for start, length, size in bursts:
            if start <= t < start + length:
                m, d = m + size, busy
        return (int(m), d)

    return dict(
        designed=None,
        params={
            "limit_bytes": limit,
            "base_bytes": int(base),
            "cpu_quota_cores": _r(quota),
            "burst_duty": _r(busy),
            "mean_gap_s": _r(mean_gap),
            "bursts": bursts,  # (start_s, length_s, bytes)
        },
        mode="mem",
        schedule=_grid(duration, mem, step=0.25),
        memory_limit=limit,
        cpu_quota=quota,
        duration=duration,
        cpu_cost=min(quota, busy),
    )


def normal_periodic(rng, scale, soak=None):
    limit = rng.choice((256, 384, 512)) * MiB
    base = rng.uniform(16, 64) * MiB
    amp = rng.uniform(0.2, 0.6) * limit
    period = rng.uniform(30, 120) * scale
    duty_amp = rng.uniform(0.05, 0.15) * _soak_cpu(soak)
    duty0 = 0.02 * _soak_cpu(soak)
    duration = _soak_duration(rng.uniform(150, 400) * scale, soak)

    def mem(t):
        w = 0.5 - 0.5 * math.cos(2 * math.pi * t / period)
        return (int(_startup(t, base) + amp * w), _r(duty0 + duty_amp * w, 4))

    return dict(
        designed=None,
        params={
            "limit_bytes": limit,
            "base_bytes": int(base),
            "amplitude_bytes": int(amp),
            "period_s": _r(period),
            "cpu_duty_amplitude": _r(duty_amp),
        },
        mode="mem",
        schedule=_grid(duration, mem, step=0.5),
        memory_limit=limit,
        duration=duration,
        cpu_cost=duty0 + duty_amp,
    )


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("leak.linear", 12, leak_linear),
        Variant("leak.accel", 8, leak_accel),
        Variant("leak.step", 8, leak_step),
        Variant("mem.sawtooth", 7, mem_sawtooth),
        Variant("mem.plateau", 6, mem_plateau),
        Variant("mem.pagecache", 4, mem_pagecache),
        Variant("cpu.ok", 4, cpu_ok),
        Variant("cpu.ramp", 6, cpu_ramp),
        Variant("cpu.hog", 5, cpu_hog),
        Variant("cpu.burst", 5, cpu_burst),
        Variant("fork.leak", 5, fork_leak),
        Variant("fork.ok", 3, fork_ok),
        Variant("disk.fill", 5, disk_fill),
        Variant("disk.rotate", 3, disk_rotate),
        Variant("normal.steady", 6, normal_steady),
        Variant("normal.bursty", 6, normal_bursty),
        Variant("normal.periodic", 5, normal_periodic),
    ]
}


def select_variants(patterns: list[str] | None) -> list[str]:
    """Variant names matching any of `patterns` ("leak" = the family, "leak.step" = one)."""
    if not patterns:
        return list(VARIANTS)
    out = []
    for name in VARIANTS:
        fam = name.split(".")[0]
        if any(p == name or p == fam for p in patterns):
            out.append(name)
    unknown = [p for p in patterns if not any(p == n or p == n.split(".")[0] for n in VARIANTS)]
    if unknown:
        raise ValueError(f"unknown families or variants: {', '.join(unknown)}")
    return out


def plan(n: int, seed: int, variants: list[str] | None = None) -> list[str]:
    """The variant of each of `n` runs: shares by weight (largest remainder, at least one
    of each variant when n allows), in an order shuffled by `seed`."""
    names = variants or list(VARIANTS)
    weights = [VARIANTS[v].weight for v in names]
    total = sum(weights)
    if n >= len(names):
        counts = [1] * len(names)
        rest = n - len(names)
    else:
        counts = [0] * len(names)
        rest = n
    quotas = [rest * w / total for w in weights]
    counts = [c + int(q) for c, q in zip(counts, quotas)]
    left = n - sum(counts)
    order = sorted(range(len(names)), key=lambda i: (-(quotas[i] - int(quotas[i])), i))
    for i in order[:left]:
        counts[i] += 1
    out = [name for name, c in zip(names, counts) for _ in range(c)]
    random.Random(f"augur-lab/plan/{seed}").shuffle(out)
    return out


def make_run(dataset_seed: int, index: int, variant: str, scale: float = 1.0, soak: float | None = None) -> RunSpec:
    """The run `index` of a dataset: parameters drawn from the run's own seed."""
    seed = run_seed(dataset_seed, index, variant)
    rng = random.Random(seed)
    d = VARIANTS[variant].sample(rng, scale, soak=soak) if soak else VARIANTS[variant].sample(rng, scale)
    if soak:
        d["params"] = dict(d["params"], soak_s=_r(soak))
    family, var = variant.split(".")
    fs = d.get("fs_bytes")
    duration = d["duration"]
    return RunSpec(
        run_id=f"run-{index:04d}",
        index=index,
        seed=seed,
        family=family,
        variant=var,
        designed=d["designed"],
        params=d["params"],
        mode=d["mode"],
        args=d.get("args", {}),
        schedule=d["schedule"],
        memory_limit=int(d["memory_limit"]),
        cpu_quota=d.get("cpu_quota"),
        pids_max=int(d.get("pids_max", 64)),
        fs_bytes=fs,
        duration=_r(duration),
        deadline=_r(duration + DEADLINE_GRACE),
        preroll=PREROLL_FS if fs else PREROLL,
        cpu_cost=_r(d["cpu_cost"]),
        slo=d.get("slo"),
    )


def soak_plan(n: int, seed: int) -> list[str]:
    """The variant of each of `n` soak runs: SOAK_VARIANTS shares, shuffled by `seed`."""
    names = list(SOAK_VARIANTS)
    total = sum(SOAK_VARIANTS.values())
    quotas = [n * SOAK_VARIANTS[v] / total for v in names]
    counts = [int(q) for q in quotas]
    order = sorted(range(len(names)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    out = [name for name, c in zip(names, counts) for _ in range(c)]
    random.Random(f"augur-lab/soak-plan/{seed}").shuffle(out)
    return out


def make_soak_run(dataset_seed: int, index: int, variant: str, soak_s: float) -> RunSpec:
    """Run `index` of a soak session: the variant's parameters (own seed, scale 1) with the
    soak's duration and light CPU. `params["soak_s"]` marks it as a soak run."""
    if variant not in SOAK_VARIANTS:
        raise ValueError(f"{variant} is not a soak variant ({', '.join(SOAK_VARIANTS)})")
    if soak_s <= 0:
        raise ValueError("soak duration must be positive")
    return make_run(dataset_seed, index, variant, 1.0, soak=soak_s)


def schedule_text(spec: RunSpec) -> str:
    """The schedule file labwork reads: "t v1 v2" per line."""
    return "".join(f"{t:g} {a:.12g} {b:.6g}\n" for t, a, b in spec.schedule)
