"""Lab datasets, features from the aggregator's own feature engine, rows and labels.

Features come only from ``augur-aggregator features export`` (the code the aggregator
runs live); nothing here computes a feature. A dataset is the lab's
``<name>.augrec.gz`` (every raw series) + ``<name>.labels.jsonl`` (one JSON object per
run) + ``<name>.meta.json``, as written by ``models/lab/run.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[3]
LAB_DATA_DIR = REPO_ROOT / "models" / "lab" / "data"
# Until a dataset is committed under models/lab/data: the lab's smoke session.
SMOKE_DIR = Path(os.environ.get("HOME", "/root")) / ".cache" / "augur" / "lab" / "smoke-1"
STEP_MS = 1000
# The lab failure that a memory-exhaustion model predicts.
LAB_FAILURE = {"memory_exhaustion": "oom"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ datasets


@dataclass
class Dataset:
    name: str
    recording: Path
    labels: Path
    meta: Path | None = None

    def sha256(self) -> str:
        h = hashlib.sha256()
        with open(self.recording, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    def meta_json(self) -> dict:
        if self.meta and self.meta.is_file():
            return json.loads(self.meta.read_text())
        return {}


def _datasets_in(path: Path) -> list[Dataset]:
    path = Path(path)
    if path.is_file() and path.name == "labels.jsonl":  # a lab session's labels
        return [d for d in _datasets_in(path.parent) if d.labels == path]
    if path.is_file() and path.name.endswith(".labels.jsonl"):
        stem = path.name[: -len(".labels.jsonl")]
        rec = path.with_name(stem + ".augrec.gz")
        return [Dataset(stem, rec, path, path.with_name(stem + ".meta.json"))] if rec.is_file() else []
    if not path.is_dir():
        return []
    out = []
    for labels in sorted(path.glob("*.labels.jsonl")):
        out.extend(_datasets_in(labels))
    # A lab session directory: dataset.augrec.gz + labels.jsonl + meta.json.
    if (path / "labels.jsonl").is_file() and (path / "dataset.augrec.gz").is_file():
        meta = path / "meta.json"
        name = json.loads(meta.read_text()).get("name", path.name) if meta.is_file() else path.name
        out.append(Dataset(name, path / "dataset.augrec.gz", path / "labels.jsonl", meta))
    return out


def find_datasets(spec: str | None = None) -> list[Dataset]:
    """The datasets to train and evaluate on.

    ``spec`` (or ``$AUGUR_LAB_DATASETS``): ``os.pathsep``-separated directories or
    ``*.labels.jsonl`` files. Default: every dataset in ``models/lab/data``; when there is
    none yet, the lab's smoke session in ``~/.cache/augur/lab/smoke-1``.
    """
    spec = spec if spec is not None else os.environ.get("AUGUR_LAB_DATASETS")
    if spec:
        out = []
        for part in spec.split(os.pathsep):
            if part.strip():
                found = _datasets_in(Path(part.strip()).expanduser())
                if not found:
                    raise FileNotFoundError(f"no lab dataset at {part}")
                out.extend(found)
        return out
    out = _datasets_in(LAB_DATA_DIR)
    if out:
        return out
    return _datasets_in(SMOKE_DIR)


# ------------------------------------------------------------------------------ aggregator


def aggregator_binary(explicit: str | None = None) -> Path:
    """``--aggregator``, ``$AUGUR_AGGREGATOR``, or the release build in ``$CARGO_TARGET_DIR``
    (default ``~/.cache/augur/target``)."""
    cands = []
    if explicit:
        cands.append(Path(explicit))
    if os.environ.get("AUGUR_AGGREGATOR"):
        cands.append(Path(os.environ["AUGUR_AGGREGATOR"]))
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path(os.environ.get("HOME", "/root")) / ".cache/augur/target")
    cands.append(Path(target) / "release" / "augur-aggregator")
    for c in cands:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise FileNotFoundError(
        "augur-aggregator not found (tried " + ", ".join(map(str, cands)) + "); build it with "
        "`cargo build --release -p augur-aggregator` or set AUGUR_AGGREGATOR"
    )


def feature_schema(binary: Path, kind: str = "container") -> dict:
    """The exact schema JSON every model of ``kind`` must carry."""
    out = subprocess.run([str(binary), "features", "schema", "--kind", kind], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def export_features(binary: Path, recording: Path, kind: str = "container", prefixes=(), out: Path | None = None) -> pd.DataFrame:
    """The feature matrix of a recording, replayed through the aggregator's feature engine
    at 1 s steps: columns ts_ms, resource, <features in schema order> (float32, NaN)."""
    with tempfile.TemporaryDirectory(prefix="augur-features-") as tmp:
        path = Path(out) if out else Path(tmp) / "features.csv"
        cmd = [str(binary), "features", "export", "--recording", str(recording), "--kind", kind, "--step", "1s", "--out", str(path)]
        for p in prefixes:
            cmd += ["--resource-prefix", p]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"features export failed ({res.returncode}): {res.stderr.strip()}")
        header = path.open().readline().strip().split(",")
        dtypes = {c: np.float32 for c in header[2:]}
        dtypes.update(ts_ms=np.int64, resource=str)
        return pd.read_csv(path, dtype=dtypes, na_values=["nan"], keep_default_na=False)


# ------------------------------------------------------------------------------ runs


@dataclass
class Run:
    """One lab run as the models see it."""

    key: str  # "<dataset>/<run_id>": unique across datasets
    dataset: str
    run_id: str
    family: str
    variant: str  # "family.variant"
    resource: str  # "<host>/<resource>": the row name in the feature export
    created_ms: int
    start_ms: int
    end_ms: int
    failure: str | None  # the run's first failure (lab label)
    failure_times: dict  # lab failure type -> t_ms (every failure seen)
    limits: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def t_fail(self, lab_failure: str) -> int | None:
        """When the run failed with ``lab_failure`` (e.g. "oom"), None if it did not."""
        return self.failure_times.get(lab_failure)


def load_runs(ds: Dataset) -> list[Run]:
    runs = []
    for line in ds.labels.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        times = {}
        for f in r.get("failures") or []:
            times.setdefault(f["type"], int(f["t_ms"]))
        if r.get("failure") and r.get("t_f_ms") is not None:
            times.setdefault(r["failure"], int(r["t_f_ms"]))
        created = r.get("created_ms") or r["start_ms"]
        runs.append(
            Run(
                key=f"{ds.name}/{r['run_id']}",
                dataset=ds.name,
                run_id=r["run_id"],
                family=r["family"],
                variant=f"{r['family']}.{r['variant']}",
                resource=f"{r['host']}/{r['resource']}",
                created_ms=int(created),
                start_ms=int(r["start_ms"]),
                end_ms=int(r["end_ms"]),
                failure=r.get("failure"),
                failure_times=times,
                limits=r.get("limits") or {},
                params=r.get("params") or {},
            )
        )
    return runs


@dataclass
class RunRows:
    """A run's feature rows: from its cgroup's creation to the end of its workload, and
    never at or after the failure being predicted (a killed workload stops reporting)."""

    run: Run
    ts: np.ndarray  # int64 ms
    x: np.ndarray  # float32 [rows, features]
    t_f: int | None  # time of the failure predicted, None for negatives


def run_rows(run: Run, ts: np.ndarray, x: np.ndarray, lab_failure: str) -> RunRows:
    t_f = run.t_fail(lab_failure)
    keep = (ts >= run.created_ms) & (ts <= run.end_ms)
    if t_f is not None:
        keep &= ts < t_f
    return RunRows(run, ts[keep], x[keep], t_f)


def horizon_labels(ts_ms: np.ndarray, t_f_ms: int | None, horizon_s: float) -> np.ndarray:
    """y_H(t) = 1 iff the run fails at t_f with 0 < t_f - t <= H (rows at or after t_f
    are dropped before this is called); all 0 for a run that does not fail this way."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    if t_f_ms is None:
        return np.zeros(len(ts), dtype=np.int8)
    d = t_f_ms - ts
    return ((d > 0) & (d <= horizon_s * 1000)).astype(np.int8)


def load_dataset_rows(binary: Path, ds: Dataset, feature_names: list[str], lab_failure: str) -> list[RunRows]:
    """Exports the dataset's container features and cuts them into per-run rows."""
    runs = load_runs(ds)
    prefixes = sorted({r.resource.rsplit("/", 1)[0] + "/" for r in runs})
    df = export_features(binary, ds.recording, "container", prefixes)
    got = list(df.columns[2:])
    if got != list(feature_names):
        raise RuntimeError("the export's columns differ from `features schema` (rebuild the aggregator?)")
    x_all = df[got].to_numpy(dtype=np.float32)
    ts_all = df["ts_ms"].to_numpy(dtype=np.int64)
    groups = df.groupby("resource", sort=False).indices
    out = []
    for run in runs:
        idx = groups.get(run.resource)
        if idx is None:
            log(f"data: {run.key}: no feature rows for {run.resource}; skipped")
            continue
        idx = np.sort(idx)
        rr = run_rows(run, ts_all[idx], x_all[idx], lab_failure)
        if len(rr.ts) == 0:
            log(f"data: {run.key}: no rows between creation and end; skipped")
            continue
        out.append(rr)
    return out
