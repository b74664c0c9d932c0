#!/usr/bin/env python3
"""Scenario lab driver: records a labelled dataset of real workloads in real cgroups
under the real augur agent and aggregator (see README.md).

One aggregator and one agent (watching the lab's cgroup prefix) for the whole session;
runs go concurrently, each in its own cgroup `<prefix>/<run-id>`, within a concurrency,
CPU and memory budget. Every run is bounded in time: its workload stops by itself and
the driver kills it at its deadline. At the end the recorded series are exported with
`augur-bench export` and written next to a labels file. Ctrl-C stops the session and
cleans up (cgroups, processes, mounts); a second Ctrl-C skips the export.

Needs root (cgroups, loop mounts, /dev/kmsg).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cgroups  # noqa: E402
import families  # noqa: E402
import labels  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
# Seconds a run's cgroup stays after its workload ended, so the agent records the final
# counters (oom_kill, pids at max, usage back to zero).
LINGER = 5.0
# Minimum spacing of run starts, seconds.
START_SPACING = 0.4


def now_ms() -> int:
    return int(time.time() * 1000)


def log(msg: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def parse_size(s: str) -> int:
    s = s.strip()
    units = {"KiB": 1 << 10, "MiB": MiB, "GiB": GiB, "K": 1 << 10, "M": MiB, "G": GiB}
    for u, m in sorted(units.items(), key=lambda x: -len(x[0])):
        if s.endswith(u):
            return int(float(s[: -len(u)]) * m)
    return int(s)


def parse_duration(s: str) -> float:
    s = s.strip()
    for u, m in (("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)):
        if s.endswith(u) and s[: -len(u)].replace(".", "", 1).isdigit():
            return float(s[: -len(u)]) * m
    return float(s)


# ---------------------------------------------------------------------------------------


class KmsgWatcher(threading.Thread):
    """Collects the kernel's OOM-kill records for the lab's cgroups from /dev/kmsg."""

    def __init__(self, prefix: str):
        super().__init__(name="kmsg", daemon=True)
        self.prefix = prefix
        self.lock = threading.Lock()
        self.ooms: dict = {}  # run -> [{"t_ms", "pid", "task"}]
        self.stopped = False
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def run(self) -> None:
        while not self.stopped:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if not ready:
                continue
            while True:
                try:
                    raw = os.read(self.fd, 16384)
                except BlockingIOError:
                    break
                except BrokenPipeError:  # records overwritten before we read them
                    continue
                except OSError:
                    break
                self.handle(raw.decode("utf-8", "replace"))

    def handle(self, raw: str) -> None:
        rec = labels.parse_kmsg_record(raw)
        if rec is None:
            return
        oom = labels.parse_oom_kill(rec.message)
        if not oom:
            return
        run = labels.run_of_memcg(oom["task_memcg"], self.prefix)
        if run is None:
            return
        # kmsg stamps CLOCK_MONOTONIC; map it to the wall clock the agent stamps samples with.
        wall_ms = rec.usec / 1000.0 + (time.time() - time.monotonic()) * 1000.0
        with self.lock:
            self.ooms.setdefault(run, []).append(
                {"t_ms": round(wall_ms, 1), "pid": oom["pid"], "task": oom.get("task"), "memcg": oom["task_memcg"]}
            )

    def for_run(self, run: str) -> list:
        with self.lock:
            return list(self.ooms.get(run, []))

    def close(self) -> None:
        self.stopped = True


class Run:
    """One run's live state."""

    def __init__(self, spec: families.RunSpec, root: Path):
        self.spec = spec
        self.dir = root / "runs" / spec.run_id
        self.state = "pending"
        self.proc: subprocess.Popen | None = None
        self.exit_ms: float | None = None
        self.returncode: int | None = None
        self.killed_by_driver = False
        self.interrupted = False
        self.created_ms = self.launch_ms = self.removed_ms = None
        self.go_at = self.deadline_at = self.linger_until = 0.0
        self.mountpoint: Path | None = None
        self.image: Path | None = None
        self.counters: dict = {}
        self.setup_error: str | None = None

    def wait_exit(self) -> None:
        rc = self.proc.wait()
        self.exit_ms = time.time() * 1000.0
        self.returncode = rc


class Lab:
    def __init__(self, args):
        self.args = args
        self.out: Path = args.out
        self.prefix = args.prefix
        self.bin = args.bin_dir
        self.stop = False
        self.hard_stop = False
        self.procs: dict = {}  # name -> Popen (aggregator, agent)
        self.runs: list = []
        self.active: list = []
        self.done: list = []
        self.kmsg: KmsgWatcher | None = None
        self.cg: cgroups.LabCgroups | None = None
        self.host_id = args.host_id or ("lab-" + "".join(c if c.isalnum() or c in "-._" else "-" for c in socket.gethostname()))
        self.url = None
        self.labels_path = self.out / "labels.jsonl"

    # -- setup ------------------------------------------------------------------------
    def preflight(self) -> None:
        if os.geteuid() != 0:
            sys.exit("lab: needs root (cgroups, loop mounts, /dev/kmsg)")
        for b in ("augur-aggregator", "augur-agent", "augur-bench"):
            if not (self.bin / b).exists():
                sys.exit(f"lab: {self.bin / b} not found; build with `cargo build --release --bins` or pass --bin-dir")
        if not shutil.which("gcc"):
            sys.exit("lab: gcc not found (labwork.c is compiled at run time)")
        layout = cgroups.detect_layout()
        self.cg = cgroups.LabCgroups(layout, self.prefix)
        self.layout = layout
        need_fs = any(r.spec.fs_bytes for r in self.runs)
        if need_fs:
            for tool in ("mkfs.ext4", "mount", "umount"):
                if not shutil.which(tool):
                    sys.exit(f"lab: {tool} not found (disk and page-cache runs need a loop-mounted ext4)")

    def compile_workload(self) -> Path:
        out = self.out / "bin" / "labwork"
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-Wextra", "-pthread", "-o", str(out), str(HERE / "labwork.c"), "-lm"],
            check=True,
        )
        return out

    def start_services(self) -> None:
        ready = self.out / "aggregator.addr"
        ready.unlink(missing_ok=True)
        agg_log = open(self.out / "aggregator.log", "wb")
        self.procs["aggregator"] = subprocess.Popen(
            [
                str(self.bin / "augur-aggregator"),
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(self.out / "aggregator"),
                "--ready-file",
                str(ready),
            ],
            stdin=subprocess.DEVNULL,
            stdout=agg_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.save_pids()
        for _ in range(300):
            if ready.exists() and ready.read_text().strip():
                break
            if self.procs["aggregator"].poll() is not None:
                sys.exit(f"lab: aggregator exited; see {self.out / 'aggregator.log'}")
            time.sleep(0.1)
        else:
            sys.exit("lab: aggregator did not become ready in 30 s")
        addr = ready.read_text().strip()
        self.url = addr if addr.startswith("http") else f"http://{addr}"
        cfg = self.out / "agent.toml"
        cfg.write_text(
            f"""# Written by models/lab/run.py for one lab session.
host_id = "{self.host_id}"
state_dir = "{self.out / 'agent'}"
interval = "1s"
[labels]
env = "lab"
[aggregator]
url = "{self.url}"
[containers]
docker = false
containerd = false
kubernetes = false
systemd_services = false
watch_prefixes = ["{self.prefix}"]
discovery_interval = "1s"
"""
        )
        self.procs["agent"] = subprocess.Popen(
            [str(self.bin / "augur-agent"), "--config", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=open(self.out / "agent.log", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.save_pids()
        ctl = self.bin / "augurctl"
        for _ in range(60):
            if self.procs["agent"].poll() is not None:
                sys.exit(f"lab: agent exited; see {self.out / 'agent.log'}")
            if ctl.exists():
                r = subprocess.run([str(ctl), "--aggregator", self.url, "hosts"], capture_output=True, text=True)
                if self.host_id in r.stdout:
                    break
            else:
                time.sleep(3)
                break
            time.sleep(0.5)
        log(f"aggregator {self.url} (data {self.out / 'aggregator'}), agent host {self.host_id}")

    def save_pids(self) -> None:
        pids = {k: {"pid": p.pid, "exe": p.args[0]} for k, p in self.procs.items()}
        (self.out / "pids.json").write_text(json.dumps(pids))

    # -- one run ----------------------------------------------------------------------
    def begin(self, run: Run) -> None:
        s = run.spec
        run.dir.mkdir(parents=True, exist_ok=True)
        (run.dir / "schedule.txt").write_text(families.schedule_text(s))
        (run.dir / "spec.json").write_text(json.dumps(s.to_json(), indent=1))
        self.cg.create(s.run_id, s.memory_limit, s.cpu_quota, s.pids_max)
        run.created_ms = now_ms()
        if s.fs_bytes:
            try:
                run.image = self.out / "img" / f"{s.run_id}.img"
                run.image.parent.mkdir(parents=True, exist_ok=True)
                with open(run.image, "wb") as f:
                    f.truncate(s.fs_bytes)
                subprocess.run(
                    ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(run.image)],
                    check=True,
                    capture_output=True,
                )
                run.mountpoint = self.out / "mnt" / s.run_id
                run.mountpoint.mkdir(parents=True, exist_ok=True)
                subprocess.run(["mount", "-o", "loop", str(run.image), str(run.mountpoint)], check=True, capture_output=True)
            except (subprocess.CalledProcessError, OSError) as e:
                err = getattr(e, "stderr", b"") or b""
                run.setup_error = f"filesystem: {e} {err.decode(errors='replace').strip()}"
        run.go_at = time.monotonic() + s.preroll
        run.state = "preroll"

    def launch(self, run: Run) -> None:
        s = run.spec
        argv = [
            str(self.labwork),
            s.mode,
            f"duration={s.duration}",
            f"schedule={run.dir / 'schedule.txt'}",
            f"events={run.dir / 'events.jsonl'}",
            f"join={','.join(str(p) for p in self.cg.procs_files(s.run_id))}",
            f"seed={s.seed % (1 << 31)}",
        ]
        argv += [f"{k}={v}" for k, v in s.args.items()]
        if s.mode == "serve":
            argv.append(f"lat={run.dir / 'latency.log'}")
        if s.mode == "disk":
            argv.append(f"dir={run.mountpoint}")
        if s.mode == "cache":
            argv.append(f"file={run.mountpoint / 'cache.bin'}")
        (run.dir / "argv.json").write_text(json.dumps(argv))
        run.launch_ms = now_ms()
        run.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=open(run.dir / "stdout.log", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=run.wait_exit, name=f"wait-{s.run_id}", daemon=True).start()
        run.deadline_at = time.monotonic() + s.deadline
        run.state = "running"

    def advance(self, run: Run, now: float) -> None:
        if run.state == "preroll":
            if run.setup_error:
                log(f"{run.spec.run_id} setup failed: {run.setup_error}")
                self.finish(run)
            elif self.stop:
                run.interrupted = True
                self.finish(run)
            elif now >= run.go_at:
                self.launch(run)
        elif run.state == "running":
            if run.exit_ms is not None:
                run.counters = self.cg.counters(run.spec.run_id)
                if self.cg.pids(run.spec.run_id):  # children of a fork run, if any
                    self.cg.kill(run.spec.run_id)
                run.linger_until = now + LINGER
                run.state = "linger"
            elif now >= run.deadline_at or self.stop:
                if self.stop:
                    run.interrupted = True
                if not run.killed_by_driver:
                    run.killed_by_driver = True
                    self.cg.kill(run.spec.run_id)
                elif now >= run.deadline_at + 5:
                    self.cg.kill(run.spec.run_id)
        elif run.state == "linger":
            if now >= run.linger_until or self.stop:
                self.finish(run)

    def finish(self, run: Run) -> None:
        s = run.spec
        final = self.cg.counters(s.run_id)
        for k, v in final.items():
            if v is not None:
                run.counters[k] = v
        self.cg.remove(s.run_id)
        run.removed_ms = now_ms()
        self.release_fs(run)
        record = self.label(run)
        with open(self.labels_path, "a") as f:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
        run.state = "done"
        self.active.remove(run)
        self.done.append(run)
        fail = record["failure"] or ("interrupted" if run.interrupted else "none")
        lead = ""
        if record["t_f_ms"] and record["start_ms"]:
            lead = f" at +{(record['t_f_ms'] - record['start_ms']) / 1000:.1f}s ({record['t_f_source']})"
        log(f"{s.run_id} {s.family}.{s.variant} done: {fail}{lead}; {len(self.done)}/{len(self.runs)} done")

    def release_fs(self, run: Run) -> None:
        if run.mountpoint is not None and os.path.ismount(run.mountpoint):
            for attempt in range(20):
                r = subprocess.run(["umount", str(run.mountpoint)], capture_output=True)
                if r.returncode == 0:
                    break
                time.sleep(0.1)
            else:
                subprocess.run(["umount", "-l", str(run.mountpoint)], capture_output=True)
        if run.mountpoint is not None:
            try:
                run.mountpoint.rmdir()
            except OSError:
                pass
        if run.image is not None:
            run.image.unlink(missing_ok=True)

    def label(self, run: Run) -> dict:
        s = run.spec
        ev_path = run.dir / "events.jsonl"
        events = labels.read_events(ev_path.read_text()) if ev_path.exists() else []
        start = labels.first_event(events, "start")
        oom_records = self.kmsg.for_run(s.run_id) if self.kmsg else []
        c = run.counters
        oom_count = labels.oom_kill_count(c.get("memory.oom_control"), c.get("memory.events"))
        observed = {
            "exit_ms": run.exit_ms,
            "returncode": run.returncode,
            "killed_by_driver": run.killed_by_driver,
            "oom_kill": oom_count,
            "kmsg_oom_ms": oom_records[0]["t_ms"] if oom_records else None,
            "events": events,
        }
        outcome = {
            "exit": None
            if run.returncode is None
            else (f"signal {-run.returncode}" if run.returncode < 0 else f"code {run.returncode}"),
            "exit_ms": None if run.exit_ms is None else int(run.exit_ms),
            "killed_at_deadline": run.killed_by_driver and not run.interrupted,
            "interrupted": run.interrupted,
            "setup_error": run.setup_error,
            "oom_kill": oom_count,
            "kmsg_oom": oom_records,
            "memory_failcnt": labels.parse_int(c.get("memory.failcnt")),
            "memory_max_usage_bytes": labels.parse_int(c.get("memory.max_usage_in_bytes") or c.get("memory.peak")),
            "pids_events_max": labels.parse_flat_keyed(c.get("pids.events")).get("max"),
            "cpu": {k: v for k, v in labels.parse_flat_keyed(c.get("cpu.stat")).items() if k in ("nr_periods", "nr_throttled", "throttled_time", "throttled_usec", "usage_usec")},
            "memory_pressure_some_us": labels.parse_psi_total_us(c.get("memory.pressure")),
        }
        hb = [e for e in events if e.get("ev") == "hb"]
        if hb:
            outcome["last_heartbeat"] = hb[-1]
        if s.mode == "serve":
            lat_path = run.dir / "latency.log"
            lat = labels.parse_latency_log(lat_path.read_text()) if lat_path.exists() else []
            observed["slo_breach_ms"] = labels.slo_breach(lat, **s.slo) if lat else None
            vals = [v for _, v in lat]
            outcome["requests"] = len(vals)
            outcome["latency_p50_ms"] = labels.percentile(vals, 0.5)
            outcome["latency_p99_ms"] = labels.percentile(vals, 0.99)
            outcome["latency_max_ms"] = max(vals) if vals else None
            end = labels.first_event(events, "end")
            if end:
                outcome["requests_queued_at_end"] = end.get("queued")
        decision = labels.decide(observed)
        if decision["failure"] == "oom" and observed["kmsg_oom_ms"] is not None and run.exit_ms is not None:
            outcome["exit_after_kill_ms"] = round(run.exit_ms - observed["kmsg_oom_ms"], 1)
        spec = s.to_json()
        return {
            "run_id": s.run_id,
            "index": s.index,
            "family": s.family,
            "variant": s.variant,
            "seed": s.seed,
            "designed": s.designed,
            "host": self.host_id,
            "resource": f"cgroup/{self.prefix}/{s.run_id}",
            "cgroup": f"{self.prefix}/{s.run_id}",
            "mountpoint": str(run.mountpoint) if run.mountpoint else None,
            "limits": {
                "memory_bytes": s.memory_limit,
                "cpu_quota_cores": s.cpu_quota,
                "pids_max": s.pids_max,
                "fs_bytes": s.fs_bytes,
            },
            "params": spec["params"],
            "slo": s.slo,
            "created_ms": run.created_ms,
            "start_ms": int(start["t"]) if start else run.launch_ms,
            "end_ms": None if run.exit_ms is None else int(run.exit_ms),
            "removed_ms": run.removed_ms,
            "failure": decision["failure"],
            "t_f_ms": decision["t_f_ms"],
            "t_f_source": decision["t_f_source"],
            "failures": decision["failures"],
            "outcome": outcome,
        }

    # -- scheduling -------------------------------------------------------------------
    def admissible(self, run: Run, now: float) -> bool:
        s = run.spec
        a = self.args
        if not self.active:
            return True
        if len(self.active) >= a.concurrency:
            return False
        if sum(r.spec.cpu_cost for r in self.active) + s.cpu_cost > a.cpu_budget:
            return False
        if sum(r.spec.memory_limit for r in self.active) + s.memory_limit > a.mem_budget:
            return False
        if mem_available() - s.memory_limit < a.min_free:
            return False
        return True

    def fits_wall(self, run: Run, now: float) -> bool:
        return now + run.spec.preroll + run.spec.deadline + LINGER <= self.t0 + self.args.max_wall

    def pick(self, pending: list, now: float) -> Run | None:
        # The CPU budget is what bounds a session, so CPU-heavy runs go first whenever the
        # budget has room (light runs fill in around them and never pile up at the end);
        # the tail goes longest-first, so the session does not end on one long run.
        tail = len(pending) <= 2 * self.args.concurrency
        window = sorted(pending, key=lambda r: -r.spec.deadline) if tail else pending[: self.args.concurrency * 2]
        heavy_first = sorted(window, key=lambda r: r.spec.cpu_cost <= 0.06)  # stable: keeps plan order
        for run in heavy_first:
            if self.admissible(run, now):
                return run
        return None

    def schedule(self) -> None:
        pending = list(self.runs)
        last_start = 0.0
        last_status = time.monotonic()
        while (pending or self.active) and not self.hard_stop:
            now = time.monotonic()
            for run in list(self.active):
                self.advance(run, now)
            if self.stop:
                for run in pending:
                    run.state = "skipped"
                pending = []
            elif pending and now - last_start >= START_SPACING:
                for run in [r for r in pending if not self.fits_wall(r, now)]:
                    log(f"{run.spec.run_id} skipped: would not finish within --max-wall")
                    run.state = "skipped"
                    pending.remove(run)
                run = self.pick(pending, now) if pending else None
                if run is not None:
                    pending.remove(run)
                    self.active.append(run)
                    try:
                        self.begin(run)
                    except OSError as e:  # finish() labels it and removes what exists
                        run.setup_error = f"cgroup: {e}"
                        run.state = "preroll"
                    last_start = now
            for name, p in self.procs.items():
                if p.poll() is not None and not self.stop:
                    log(f"error: {name} exited with {p.returncode}; stopping (see {self.out / (name + '.log')})")
                    self.stop = True
            if now - last_status >= 60:
                last_status = now
                cpu = sum(r.spec.cpu_cost for r in self.active)
                mem = sum(r.spec.memory_limit for r in self.active) / GiB
                log(
                    f"status: {len(self.done)} done, {len(self.active)} active (cpu budget {cpu:.2f}, "
                    f"limits {mem:.1f} GiB), {len(pending)} pending, {(now - self.t0) / 60:.1f} min"
                )
            time.sleep(0.1)

    # -- teardown ---------------------------------------------------------------------
    def cleanup_runs(self) -> None:
        for run in list(self.active):
            try:
                self.cg.kill(run.spec.run_id)
            except Exception:
                pass
        if self.cg is not None:
            if not self.cg.remove(None):
                log(f"warning: some cgroups under {self.prefix} could not be removed")
        for run in self.runs:
            self.release_fs(run)
        unmount_under(self.out / "mnt")

    def stop_services(self) -> None:
        for name in ("agent", "aggregator"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        (self.out / "pids.json").unlink(missing_ok=True)

    def export(self) -> Path | None:
        rec = self.out / "dataset.augrec.gz"
        since = int(time.time() - self.t0_wall) + 120
        r = subprocess.run(
            [
                str(self.bin / "augur-bench"),
                "export",
                "--aggregator",
                self.url,
                "--host",
                self.host_id,
                "--since",
                f"{since}s",
                "--out",
                str(rec),
            ],
            capture_output=True,
            text=True,
        )
        (self.out / "export.log").write_text(r.stderr + r.stdout)
        if r.returncode != 0:
            log(f"export failed: {r.stderr.strip()}")
            return None
        log(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "exported")
        return rec

    # -- main ---------------------------------------------------------------------------
    def main(self) -> int:
        a = self.args
        if a.soak:
            names = families.soak_plan(a.runs, a.seed)
            self.runs = [Run(families.make_soak_run(a.seed, i, v, a.soak), self.out) for i, v in enumerate(names)]
        else:
            variants = families.select_variants(a.families)
            names = families.plan(a.runs, a.seed, variants)
            self.runs = [Run(families.make_run(a.seed, i, v, a.scale), self.out) for i, v in enumerate(names)]
        self.preflight()
        self.out.mkdir(parents=True, exist_ok=True)
        if self.labels_path.exists():
            sys.exit(f"lab: {self.labels_path} exists; use a new --out")
        self.labwork = self.compile_workload()
        with open(self.out / "plan.jsonl", "w") as f:
            for r in self.runs:
                f.write(json.dumps(r.spec.to_json(), separators=(",", ":")) + "\n")
        counts = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        log(f"{len(self.runs)} runs planned (seed {a.seed}, scale {a.scale}): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        started_ms = now_ms()
        exported = None
        try:
            self.cg.remove(None)  # leftovers of an earlier session under the same prefix
            self.cg.create_prefix(self.args.cpu_shares)
            try:
                self.kmsg = KmsgWatcher(self.prefix)
                self.kmsg.start()
            except OSError as e:
                log(f"warning: /dev/kmsg unavailable ({e}); OOM times fall back to the workload's exit")
            self.start_services()
            self.schedule()
            self.cleanup_runs()
            if not self.hard_stop and self.done:
                time.sleep(3)  # the agent's last batches
                exported = self.export()
        finally:
            self.cleanup_runs()
            self.stop_services()
            if self.kmsg:
                self.kmsg.close()
        ended_ms = now_ms()
        meta = self.write_meta(started_ms, ended_ms, exported)
        if exported and a.dataset_dir and not self.stop:
            self.publish(exported, meta)
        return 0 if exported else 1

    def write_meta(self, started_ms: int, ended_ms: int, exported: Path | None) -> dict:
        recs = [json.loads(line) for line in self.labels_path.read_text().splitlines()] if self.labels_path.exists() else []
        by_variant, by_failure = {}, {}
        for r in recs:
            k = f"{r['family']}.{r['variant']}"
            by_variant[k] = by_variant.get(k, 0) + 1
            f = r["failure"] or "none"
            by_failure[f] = by_failure.get(f, 0) + 1
        meta = {
            "name": self.args.name,
            "seed": self.args.seed,
            "scale": self.args.scale,
            "mode": "soak" if self.args.soak else "lab",
            "soak_s": self.args.soak,
            "workload_hours": round(sum((r["end_ms"] or r["removed_ms"]) - r["start_ms"] for r in recs if r["start_ms"]) / 3.6e6, 2),
            "runs_planned": len(self.runs),
            "runs_recorded": len(recs),
            "runs_by_variant": by_variant,
            "failures": by_failure,
            "host": self.host_id,
            "prefix": self.prefix,
            "started_ms": started_ms,
            "ended_ms": ended_ms,
            "wall_s": round((ended_ms - started_ms) / 1000, 1),
            "concurrency": self.args.concurrency,
            "cpu_budget": self.args.cpu_budget,
            "cpu_shares": self.args.cpu_shares,
            "kernel": platform.release(),
            "cgroup_mode": self.layout.mode,
            "psi_per_cgroup": self.layout.unified is not None,
            "cpus": os.cpu_count(),
            "interrupted": self.stop,
            "recording": exported.name if exported else None,
            "recording_bytes": exported.stat().st_size if exported else None,
        }
        (self.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        log(
            f"{len(recs)} runs recorded in {meta['wall_s'] / 60:.1f} min; failures "
            + ", ".join(f"{k} {v}" for k, v in sorted(by_failure.items()))
            + (f"; recording {meta['recording_bytes']} bytes" if exported else "")
        )
        return meta

    def publish(self, exported: Path, meta: dict) -> None:
        d: Path = self.args.dataset_dir
        d.mkdir(parents=True, exist_ok=True)
        name = self.args.name
        shutil.copyfile(exported, d / f"{name}.augrec.gz")
        shutil.copyfile(self.labels_path, d / f"{name}.labels.jsonl")
        meta = dict(meta, recording=f"{name}.augrec.gz", labels=f"{name}.labels.jsonl")
        (d / f"{name}.meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        log(f"dataset written to {d}/{name}.{{augrec.gz,labels.jsonl,meta.json}}")


def unmount_under(root: Path) -> None:
    """Unmounts every mount point below `root` (the lab's own loop mounts)."""
    root = root.resolve()
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if mp.startswith(str(root) + "/"):
            mounts.append(mp)
    for mp in sorted(mounts, key=len, reverse=True):
        if subprocess.run(["umount", mp], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", mp], capture_output=True)


def cleanup_only(args) -> int:
    """Removes what a crashed session left: its cgroups, mounts, images and services."""
    cg = cgroups.LabCgroups(cgroups.detect_layout(), args.prefix)
    ok = cg.remove(None)
    base = args.out.parent if args.out else default_root()
    for pids_file in base.glob("*/pids.json"):
        for name, p in json.loads(pids_file.read_text()).items():
            try:
                exe = os.readlink(f"/proc/{p['pid']}/exe")
            except OSError:
                continue
            if os.path.basename(exe).split(" ")[0] == os.path.basename(p["exe"]):
                os.kill(p["pid"], signal.SIGTERM)
                log(f"stopped leftover {name} (pid {p['pid']})")
        pids_file.unlink()
    for mnt in base.glob("*/mnt"):
        unmount_under(mnt)
    for img in base.glob("*/img/*.img"):
        img.unlink()
    log("cleanup done" + ("" if ok else " (some cgroups could not be removed)"))
    return 0 if ok else 1


def default_root() -> Path:
    return Path.home() / ".cache/augur/lab"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, help="runs to record (default 220; 64 with --soak)")
    p.add_argument(
        "--soak",
        type=parse_duration,
        help="soak mode: --runs long runs (all at once unless --concurrency says otherwise) of the "
        "variants that must not be called failures (steady, bursty, periodic, GC sawtooth, cache "
        "plateau, page cache) at varied sizes and limits, light on CPU, each lasting this long "
        "(e.g. 33m); measures false alarms per workload-day. Default name soak-<UTC date and time>",
    )
    p.add_argument("--seed", type=int, default=1, help="dataset seed: run variants and parameters")
    p.add_argument("--families", nargs="*", help="only these families or family.variant names")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every time parameter (0.5 = runs half as long)")
    p.add_argument("--concurrency", type=int, help="runs at once (default 24; --runs with --soak)")
    p.add_argument("--cpu-budget", type=float, default=1.5, help="sum of the concurrent runs' CPU ceilings (quota or duty), cores (default 1.5)")
    p.add_argument(
        "--cpu-shares",
        type=int,
        default=3072,
        help="weight of the whole lab against other processes when the CPUs are busy (v1 cpu.shares "
        "scale, 1024 = one process; default 3072). Runs stay capped by their quotas and --cpu-budget.",
    )
    p.add_argument(
        "--mem-budget",
        type=parse_size,
        help="sum of concurrent runs' memory limits (default 8GiB; 32GiB with --soak, whose runs use "
        "a fraction of their limits; --min-free still applies)",
    )
    p.add_argument("--min-free", type=parse_size, default=4 * GiB, help="MemAvailable kept free when starting a run (default 4GiB)")
    p.add_argument("--max-wall", type=parse_duration, default=55 * 60, help="runs that would end later are skipped (default 55m)")
    p.add_argument("--prefix", default="augur-lab", help="cgroup prefix (default augur-lab)")
    p.add_argument("--out", type=Path, help="session directory (default ~/.cache/augur/lab/<name>)")
    p.add_argument("--name", help="dataset name (default lab-<UTC date and time>)")
    p.add_argument("--dataset-dir", type=Path, help="also write <name>.{augrec.gz,labels.jsonl,meta.json} here")
    p.add_argument("--bin-dir", type=Path, default=Path.home() / ".cache/augur/target/release")
    p.add_argument("--host-id", help="agent host id (default lab-<hostname>)")
    p.add_argument("--cleanup-only", action="store_true", help="remove what a crashed session left, then exit")
    a = p.parse_args(argv)
    if a.runs is None:
        a.runs = 64 if a.soak else 220
    if a.concurrency is None:
        a.concurrency = a.runs if a.soak else 24
    if a.mem_budget is None:
        a.mem_budget = 32 * GiB if a.soak else 8 * GiB
    if a.soak is not None and a.soak <= 0:
        p.error("--soak must be a positive duration")
    if not a.name:
        kind = "soak-" if a.soak else "lab-"
        a.name = kind + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M")
    if a.out is None:
        a.out = default_root() / a.name
    a.out = a.out.resolve()
    return a


def lock_prefix(prefix: str):
    """One session per cgroup prefix on this machine: a second one would remove the first
    one's cgroups. The lock is released when the process ends, however it ends."""
    path = Path("/run") / f"augur-lab-{cgroups.check_name(prefix)}.lock"
    f = open(path, "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"lab: another lab session is running with prefix {prefix!r} ({path} is locked)")
    return f


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("lab: needs root (cgroups, loop mounts, /dev/kmsg)")
    _lock = lock_prefix(args.prefix)  # noqa: F841  held until exit
    if args.cleanup_only:
        return cleanup_only(args)
    lab = Lab(args)

    def on_signal(signum, frame):
        if lab.stop:
            lab.hard_stop = True
            log("second interrupt: cleaning up without export")
        else:
            lab.stop = True
            log("interrupt: stopping runs and cleaning up (again to skip the export)")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return lab.main()


if __name__ == "__main__":
    sys.exit(main())
