#!/usr/bin/env python3
"""Checks a lab dataset and prints its figures: runs by variant, outcomes against what
each variant was designed to end in, how t_f is known, and whether the recording covers
every run (its cgroup's series from creation to removal, a sample shortly before t_f).

    python3 models/lab/check.py models/lab/data/<name>.labels.jsonl [--recording FILE] [--json]

The recording defaults to the labels file's sibling `<name>.augrec.gz`. Exit status 1 when
a run is not covered or a designed failure is missing its label.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import augrec  # noqa: E402

USAGE_METRIC = "container_memory_usage_bytes"


def load_labels(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(recs: list, rec: augrec.Recording | None, rec_bytes: int | None) -> dict:
    out: dict = {"runs": len(recs)}
    out["runs_by_variant"] = dict(sorted(Counter(f"{r['family']}.{r['variant']}" for r in recs).items()))
    out["runs_by_family"] = dict(sorted(Counter(r["family"] for r in recs).items()))
    out["failures"] = dict(sorted(Counter(r["failure"] or "none" for r in recs).items()))
    matrix: dict = defaultdict(Counter)
    for r in recs:
        matrix[f"{r['family']}.{r['variant']}"][r["failure"] or "none"] += 1
    out["outcome_by_variant"] = {k: dict(v) for k, v in sorted(matrix.items())}
    out["t_f_sources"] = dict(Counter(r["t_f_source"] for r in recs if r["failure"]))
    lags = [r["outcome"]["exit_after_kill_ms"] for r in recs if r["outcome"].get("exit_after_kill_ms") is not None]
    if lags:
        out["oom_exit_after_kmsg_ms"] = {
            "median": round(statistics.median(lags), 1),
            "max": round(max(lags), 1),
        }
    tf = [(r["t_f_ms"] - r["start_ms"]) / 1000 for r in recs if r["failure"]]
    if tf:
        out["t_f_after_start_s"] = {"min": round(min(tf), 1), "median": round(statistics.median(tf), 1), "max": round(max(tf), 1)}
    dur = [(r["removed_ms"] - r["created_ms"]) / 1000 for r in recs if r.get("removed_ms") and r.get("created_ms")]
    if dur:
        out["run_seconds"] = {"min": round(min(dur)), "median": round(statistics.median(dur)), "max": round(max(dur)), "total": round(sum(dur))}
    out["killed_at_deadline"] = sum(1 for r in recs if r["outcome"].get("killed_at_deadline"))
    out["interrupted"] = sum(1 for r in recs if r["outcome"].get("interrupted"))
    missed = [r["run_id"] for r in recs if r["designed"] in ("oom", "enospc", "fork_eagain") and r["failure"] != r["designed"]]
    out["designed_failure_missing"] = missed
    unexpected = [
        f"{r['run_id']}:{r['family']}.{r['variant']}:{r['failure']}"
        for r in recs
        if r["designed"] is None and r["failure"] not in (None, "slo")
    ]
    out["unexpected_failures"] = unexpected
    if rec is None:
        return out
    by_res = rec.by_resource()
    problems, first_lag, gap_before_tf, samples_per_run = [], [], [], []
    for r in recs:
        series = by_res.get(r["resource"], [])
        usage = next((s for s in series if s.metric == USAGE_METRIC), None)
        if usage is None or not usage.timestamps:
            problems.append(f"{r['run_id']}: no {USAGE_METRIC}")
            continue
        samples_per_run.append(sum(len(s.timestamps) for s in series))
        first_lag.append((usage.timestamps[0] - r["created_ms"]) / 1000)
        if usage.timestamps[0] > r["start_ms"]:
            problems.append(f"{r['run_id']}: first sample {(usage.timestamps[0] - r['start_ms']) / 1000:.1f}s after the workload started")
        if r["failure"] == "oom":
            before = [t for t in usage.timestamps if t <= r["t_f_ms"]]
            if not before:
                problems.append(f"{r['run_id']}: no sample before t_f")
            else:
                gap_before_tf.append((r["t_f_ms"] - before[-1]) / 1000)
    out["recording"] = {
        "bytes": rec_bytes,
        "series": len(rec.series),
        "samples": sum(len(s.timestamps) for s in rec.series),
        "resources": len(by_res),
        "host_series": len(by_res.get("host", [])),
        "samples_per_run_median": statistics.median(samples_per_run) if samples_per_run else None,
        "first_sample_after_cgroup_created_s_max": round(max(first_lag), 2) if first_lag else None,
        "oom_last_sample_before_t_f_s_max": round(max(gap_before_tf), 2) if gap_before_tf else None,
        "coverage_problems": problems,
    }
    if rec_bytes:
        out["recording"]["bytes_per_sample"] = round(rec_bytes / max(1, out["recording"]["samples"]), 3)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("labels", type=Path)
    p.add_argument("--recording", type=Path)
    p.add_argument("--json", action="store_true", help="one JSON document instead of text")
    a = p.parse_args(argv)
    recs = load_labels(a.labels)
    path = a.recording
    if path is None:
        name = a.labels.name
        for suffix in (".labels.jsonl", "labels.jsonl"):
            if name.endswith(suffix):
                cand = a.labels.with_name(name[: -len(suffix)] + (".augrec.gz" if suffix.startswith(".") else "dataset.augrec.gz"))
                if cand.exists():
                    path = cand
                break
    rec = augrec.load(path) if path else None
    out = summarize(recs, rec, path.stat().st_size if path else None)
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        for k, v in out.items():
            print(f"{k}: {json.dumps(v)}")
    bad = out["designed_failure_missing"] or (rec is not None and out["recording"]["coverage_problems"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
