#!/usr/bin/env python3
"""Copies a recorded lab dataset into the repository (`models/lab/data/`) with the
machine's paths taken out: the session directory in mount points (labels and the
recording's `node_filesystem_*{mountpoint=...}` series) becomes `/lab`, so a committed
dataset names no directory of the machine it was recorded on.

    python3 models/lab/publish.py ~/.cache/augur/lab/datasets/<name>.labels.jsonl [--to models/lab/data]

The recording is decoded, relabelled and re-encoded (`augrec.py`), then decoded again
and compared series by series with the original (same points, only the labels changed).
Refuses to write when a machine path would remain.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import augrec  # noqa: E402

PUBLIC_ROOT = "/lab"


def session_roots(labels: list[dict]) -> set[str]:
    """The session directories the runs' mount points live in (`<root>/mnt/<run>`)."""
    roots = set()
    for r in labels:
        mp = r.get("mountpoint")
        if mp and "/mnt/" in mp:
            roots.add(mp.rsplit("/mnt/", 1)[0])
    return roots


def rewrite(text: str, roots: set[str]) -> str:
    for root in sorted(roots, key=len, reverse=True):
        text = text.replace(root + "/", PUBLIC_ROOT + "/")
    return text


def rewrite_recording(rec: augrec.Recording, roots: set[str]) -> augrec.Recording:
    series = [
        augrec.Series(s.resource, s.metric, s.unit, s.kind, {k: rewrite(v, roots) for k, v in s.labels.items()}, s.timestamps, s.values)
        for s in rec.series
    ]
    return augrec.Recording(rec.host_id, rec.start_ms, rec.end_ms, series)


def machine_paths(text: str) -> list[str]:
    """This machine's home and checkout directories, where they occur in `text`."""
    here = [os.environ.get("HOME", ""), str(Path.home()), str(HERE.parents[1])]
    return sorted({p for p in here if len(p) > 1 and p in text})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labels", type=Path, help="<name>.labels.jsonl beside <name>.augrec.gz and <name>.meta.json")
    ap.add_argument("--to", type=Path, default=HERE / "data", help="destination directory (default models/lab/data)")
    a = ap.parse_args(argv)
    if not a.labels.name.endswith(".labels.jsonl"):
        sys.exit("publish: expected <name>.labels.jsonl")
    name = a.labels.name[: -len(".labels.jsonl")]
    src_rec = a.labels.with_name(name + ".augrec.gz")
    src_meta = a.labels.with_name(name + ".meta.json")
    label_lines = [json.loads(line) for line in a.labels.read_text().splitlines() if line.strip()]
    roots = session_roots(label_lines)
    labels_out = "".join(json.dumps(json.loads(rewrite(json.dumps(r, separators=(",", ":")), roots)), separators=(",", ":")) + "\n" for r in label_lines)
    meta_out = rewrite(src_meta.read_text(), roots) if src_meta.is_file() else None
    rec = augrec.load(src_rec)
    new = rewrite_recording(rec, roots)
    blob = augrec.encode(new)
    back = augrec.decode(blob)
    for s0, s1 in zip(rec.series, back.series):
        if (s0.resource, s0.metric, s0.timestamps) != (s1.resource, s1.metric, s1.timestamps) or any(
            x != y and not (x != x and y != y) for x, y in zip(s0.values, s1.values)
        ):
            sys.exit(f"publish: re-encoded series {s0.resource} {s0.metric} differs from the original")
    label_text = "".join(f"{k}={v}" for s in back.series for k, v in s.labels.items())
    left = machine_paths(labels_out) + machine_paths(label_text) + machine_paths(meta_out or "")
    if left:
        sys.exit(f"publish: machine paths would remain: {sorted(set(left))}")
    a.to.mkdir(parents=True, exist_ok=True)
    with open(a.to / f"{name}.augrec.gz", "wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as f:
        f.write(blob)
    (a.to / f"{name}.labels.jsonl").write_text(labels_out)
    if meta_out is not None:
        (a.to / f"{name}.meta.json").write_text(meta_out)
    n = sum(len(s.timestamps) for s in back.series)
    print(
        f"publish: {name}: {len(label_lines)} runs, {len(back.series)} series, {n} samples, "
        f"{(a.to / f'{name}.augrec.gz').stat().st_size} bytes -> {a.to} (paths under {sorted(roots)} -> {PUBLIC_ROOT})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
