"""Re-scores the shipped models (``models/manifest.toml`` and its ONNX files) on the lab
runs ``make models`` held out (``models/cards/lab-split.json``), for ``make eval``.

Nothing is trained here: the ONNX files are run as shipped (checked against their
sha256), features are re-exported by the aggregator, and the operating point is the
manifest's ``operating_threshold``.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import data, evaluate, split

MODELS_DIR = data.REPO_ROOT / "models"


class Unavailable(Exception):
    """Something the evaluation needs is not there (a note, not a failure)."""


def _session(path: Path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def predict(x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0)
        return sess.run(["probabilities"], {"features": np.ascontiguousarray(x, dtype=np.float32)})[0][:, 1]

    return predict


def load(models_dir: Path = MODELS_DIR, aggregator: str | None = None, splits=("test", "heldout", "soak")):
    """(rows per split, scored runs per split, operating point, model names, split file)."""
    split_path = models_dir / "cards" / "lab-split.json"
    manifest_path = models_dir / "manifest.toml"
    if not split_path.is_file() or not manifest_path.is_file():
        raise Unavailable(f"{split_path.relative_to(data.REPO_ROOT) if split_path.is_relative_to(data.REPO_ROOT) else split_path} or manifest.toml missing: run `make models`")
    info = json.loads(split_path.read_text())
    manifest = tomllib.loads(manifest_path.read_text())
    failure_type = info["failure_type"]
    entries = [
        m
        for m in manifest.get("model", [])
        if m.get("kind") == "failure_probability" and m.get("failure_type") == failure_type and m.get("resource_kind") == "container"
    ]
    if not entries:
        raise Unavailable(f"no container {failure_type} model in {manifest_path}")
    predictors, names = {}, {}
    op = None
    for m in entries:
        path = manifest_path.parent / m["file"]
        blob = path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != m["sha256"]:
            raise RuntimeError(f"{path}: sha256 differs from the manifest")
        h = int(m["horizon_s"])
        predictors[h] = _session(path)
        names[h] = m["name"]
        if m.get("operating_threshold") is not None:
            op = evaluate.OperatingPoint(horizon_s=h, threshold=float(m["operating_threshold"]))
    if op is None:
        raise Unavailable("no model in the manifest has an operating_threshold")

    binary = data.aggregator_binary(aggregator)
    schema = data.feature_schema(binary, "container")
    feature_names = schema["features"]
    for m in entries:
        got = {k: m["schema"][k] for k in ("version", "features", "windows")}
        want = {k: schema[k] for k in ("version", "features", "windows")}
        if got != want:
            raise RuntimeError(f"model {m['name']}: its schema differs from this aggregator's (`features schema`); re-run `make models`")

    assign = info["splits"]
    rows = {s: [] for s in splits}
    for d in info["datasets"]:
        labels = Path(d["labels"])
        labels = labels if labels.is_absolute() else data.REPO_ROOT / labels
        found = data._datasets_in(labels)
        if not found:
            raise Unavailable(f"dataset {d['name']} not found at {labels}")
        ds = found[0]
        if ds.sha256() != d["sha256"]:
            raise RuntimeError(f"dataset {d['name']}: recording differs from the one the models were trained on")
        for rr in data.load_dataset_rows(binary, ds, feature_names, info["lab_failure"]):
            s = assign.get(rr.run.key)
            if s in rows:
                rows[s].append(rr)
    # Soak sessions recorded after the models were trained (so not in the split file): the
    # runs the split rule puts in "soak" (the rule never trains on them), scored the same way.
    if "soak" in rows:
        known = {d["name"] for d in info["datasets"]}
        for ds in data.find_datasets():
            if ds.name in known:
                continue
            runs = data.load_runs(ds)
            if not any(split.is_soak(r) for r in runs):
                continue
            soak_assign = split.assign_splits(runs, info.get("seed", split.SEED))
            for rr in data.load_dataset_rows(binary, ds, feature_names, info["lab_failure"]):
                if soak_assign.get(rr.run.key) == "soak":
                    rows["soak"].append(rr)
    scored = {s: evaluate.score_runs(v, predictors, feature_names) for s, v in rows.items()}
    return rows, scored, op, names, info


def metric_rows(models_dir: Path = MODELS_DIR, aggregator: str | None = None) -> list[dict]:
    """The ``{"eval": "lab", ...}`` rows (without the "eval" key): held-out runs and held-out
    families, the shipped models and both baselines."""
    rows, scored, op, names, info = load(models_dir, aggregator)
    horizons = sorted(names)
    out = []
    for s in ("test", "heldout", "soak"):
        if scored.get(s):
            out.extend(evaluate.split_rows(s, scored[s], op, horizons, names, info.get("baselines_tuned_on_val")))
        if s == "soak" and scored.get(s):
            out.extend(evaluate.per_dataset_rows(s, scored[s], op, horizons, names, info.get("baselines_tuned_on_val")))
    return out
