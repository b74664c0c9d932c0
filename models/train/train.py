#!/usr/bin/env python3
"""`make models`: trains, calibrates, evaluates and exports the container
memory-exhaustion models from scenario-lab runs.

    $HOME/.cache/augur/venv/bin/python models/train/train.py [--aggregator BIN] [--datasets DIRS]

1. Features: every lab dataset (``models/lab/data/*.labels.jsonl`` + ``.augrec.gz``; until
   one is there, the lab's smoke session) is replayed through ``augur-aggregator features
   export --kind container`` at 1 s steps; the schema comes from ``features schema``.
2. Rows and labels: a run's rows from its cgroup's creation to the end of its workload,
   cut before an OOM kill; y_H(t) = 1 iff the run is OOM-killed at t_f with
   0 < t_f - t <= H; every other run (other failures included) is a negative.
3. Split by run (``augur_train.split``): held-out families, then train / val / test.
4. One LightGBM classifier per horizon (30 s, 2 min, 10 min), Platt-calibrated on the
   validation runs, exported to ONNX with the calibration folded in; the ONNX output is
   checked against the Python calibrated output.
5. Operating point (decision horizon and threshold) chosen on validation only.
6. Writes ``models/<name>.onnx``, ``models/manifest.toml``, ``models/cards/<name>.{md,json}``
   and ``models/cards/lab-split.json`` (what ``make eval`` re-scores).

Deterministic: fixed seeds, single-threaded deterministic LightGBM.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import lightgbm
import numpy as np
import onnx
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from augur_train import calibrate, data, evaluate, metrics, split  # noqa: E402

MODELS_DIR = data.REPO_ROOT / "models"
SEED = 20261123
FAILURE_TYPE = "memory_exhaustion"
LAB_FAILURE = data.LAB_FAILURE[FAILURE_TYPE]
HORIZONS = (30, 120, 600)
MODEL_VERSION = "2026.11.1"
# |ONNX - Python| allowed on held-out rows: the ONNX tree ensemble compares in float32, so a
# value within float32 rounding of a split threshold can take the other branch (seen: 3.4e-4
# on one row of the 10-min model); anything larger is a conversion error.
ONNX_TOLERANCE = 1e-3

# Scale-free inputs only: utilisation against the limit, time to exhaustion, memory
# pressure (PSI) and limit-hit (failcnt) rates. Absolute bytes, the limit itself and the
# CPU / pids signals are left out on purpose: lab limits are 64-512 MiB, real ones are
# anything, and a model keyed on "a small limit" or "no CPU quota" would learn the lab's
# design rather than memory exhaustion. The ONNX input is still the full schema (the
# aggregator feeds every feature); unused columns are constant in training, so no tree
# splits on them.
USED_FEATURE_PREFIXES = (
    "mem_util",
    "mem_ws_util",
    "mem_tte_s_",
    "psi_mem_waiting_",
    "mem_fail_rate_",
    # schema 2: peak and drawdown of usage against the limit, acceleration, accelerating TTE
    "mem_peak_util_",
    "mem_drawdown_util_",
    "mem_accel_util",
    "mem_tte_accel_s",
)
# Windows no lab run warms up: lab runs last minutes, so a 30-min window only ever holds
# a run's whole (short) history, and its slope is 0 (time to exhaustion "never") until the
# window's second 2-min bucket starts, at a moment set by bucket alignment. A model fed
# these would learn "young container, so safe"; live containers have them warmed up.
UNUSED_WINDOWS = ("_30m",)
# What the feature engine reports for a container without a memory limit: every
# limit-derived feature is NaN. A share of training rows is repeated that way with
# label 0 (no limit, no OOM kill by the limit), so missing never reads as "exhausted".
LIMIT_DERIVED = (
    "mem_util",
    "mem_ws_util",
    "mem_headroom_bytes",
    "mem_tte_s_30s",
    "mem_tte_s_5m",
    "mem_tte_s_30m",
    "mem_limit_last",
    "mem_peak_util_30s",
    "mem_peak_util_5m",
    "mem_peak_util_30m",
    "mem_drawdown_util_30s",
    "mem_drawdown_util_5m",
    "mem_drawdown_util_30m",
    "mem_accel_util",
    "mem_tte_accel_s",
)
UNLIMITED_SHARE = 0.1

LGBM_PARAMS = dict(
    objective="binary",
    n_estimators=60,
    num_leaves=15,
    learning_rate=0.1,
    min_child_samples=100,  # rows of one run are strongly correlated: leaves span many runs
    subsample=0.8,
    subsample_freq=1,
    colsample_bytree=1.0,
    reg_lambda=1.0,
    deterministic=True,
    force_row_wise=True,
    n_jobs=1,
    verbose=-1,
)


def log(msg: str) -> None:
    print(f"[models {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def model_name(h: int) -> str:
    return f"memory-exhaustion-{h}s" if h < 60 else f"memory-exhaustion-{h // 60}m"


def horizon_text(h: int) -> str:
    return f"{h} s" if h < 60 else f"{h // 60} min"


def monotone_direction(name: str) -> int:
    """Domain knowledge as monotone constraints: P(OOM) never falls as usage gets closer to
    the limit, as the time to exhaustion gets shorter (linear or accelerating), as memory
    pressure and limit hits rise (levels only; slopes and spreads are unconstrained) or as
    usage accelerates, and never rises with the drawdown after a recent high."""
    if name in ("mem_util", "mem_ws_util"):
        return 1
    if name.startswith("mem_tte_s_") or name == "mem_tte_accel_s":
        return -1
    # schema 2: faster-growing usage never lowers P; a larger fall after a recent high
    # (a collection, an eviction: not a leak) never raises it
    if name == "mem_accel_util":
        return 1
    if name.startswith("mem_drawdown_util_"):
        return -1
    if name.startswith(("psi_mem_waiting_", "mem_fail_rate_")) and name.endswith(("_last", "_ewma", "_mean")):
        return 1
    return 0


def used_columns(names: list[str]) -> list[int]:
    cols = [i for i, n in enumerate(names) if n.startswith(USED_FEATURE_PREFIXES) and not any(w in n for w in UNUSED_WINDOWS)]
    missing = [p for p in USED_FEATURE_PREFIXES if not any(names[i].startswith(p) for i in cols)]
    if missing:
        raise RuntimeError(f"the feature schema lacks {missing}")
    return cols


def training_matrix(rows: list[data.RunRows], h: int, names: list[str], rng: np.random.Generator):
    x = np.concatenate([r.x for r in rows])
    y = np.concatenate([data.horizon_labels(r.ts, r.t_f, h) for r in rows])
    # rows without a memory limit: limit-derived features NaN, label 0
    n_aug = int(UNLIMITED_SHARE * len(x))
    pick = np.sort(rng.choice(len(x), size=n_aug, replace=False))
    xa = x[pick].copy()
    for n in LIMIT_DERIVED:
        if n in names:
            xa[:, names.index(n)] = np.nan
    x = np.concatenate([x, xa])
    y = np.concatenate([y, np.zeros(n_aug, dtype=y.dtype)])
    return mask_unused(x, names), y


def mask_unused(x: np.ndarray, names: list[str]) -> np.ndarray:
    keep = np.zeros(len(names), dtype=bool)
    keep[used_columns(names)] = True
    x = x.copy()
    x[:, ~keep] = 0.0
    return x


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def sha256(b: bytes) -> str:
    return sha256_bytes(b)


def toml_str(s: str) -> str:
    return json.dumps(s)


def toml_float(v: float) -> str:
    r = repr(float(round(v, 6)))
    return r if ("." in r or "e" in r) else r + ".0"


def write_atomic(path: Path, content: bytes | str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(content, str):
        tmp.write_text(content)
    else:
        tmp.write_bytes(content)
    tmp.replace(path)


def manifest_text(entries: list[dict], schema: dict) -> str:
    windows = ", ".join(f"{toml_str(k)} = {toml_str(v)}" for k, v in sorted(schema["windows"].items()))
    lines = [
        "# Shipped models, written by `make models` (models/train/train.py); format in models/README.md.",
        "# Model cards: models/cards/<name>.md and .json.",
        "format = 1",
    ]
    for e in entries:
        lines += [
            "",
            "[[model]]",
            f"name = {toml_str(e['name'])}",
            f"version = {toml_str(e['version'])}",
            'kind = "failure_probability"',
            f"file = {toml_str(e['file'])}",
            f"sha256 = {toml_str(e['sha256'])}",
            'resource_kind = "container"',
            f"failure_type = {toml_str(FAILURE_TYPE)}",
            f"horizon_s = {e['horizon_s']}",
        ]
        if e.get("operating_threshold") is not None:
            lines.append(f"operating_threshold = {toml_float(e['operating_threshold'])}")
        m = {k: v for k, v in e["metrics"].items() if v is not None and math.isfinite(v)}
        lines.append("metrics = { " + ", ".join(f"{k} = {toml_float(v)}" for k, v in sorted(m.items())) + " }")
        lines += [
            "",
            "[model.schema]",
            f"version = {schema['version']}",
            "features = [" + ", ".join(toml_str(f) for f in schema["features"]) + "]",
            "windows = { " + windows + " }",
            "",
            "[model.schema.output]",
            f"tensor = {toml_str(schema['output']['tensor'])}",
            "columns = [" + ", ".join(toml_str(c) for c in schema["output"]["columns"]) + "]",
            f"description = {toml_str(e['description'])}",
        ]
    return "\n".join(lines) + "\n"


def other_entries(manifest: Path) -> str:
    """The manifest's entries of other kinds (e.g. the forecast model, written by
    models/forecast/train.py), kept as they are when the failure models are rewritten."""
    if not manifest.is_file():
        return ""
    _, *blocks = manifest.read_text().split("\n[[model]]\n")
    keep = [b for b in blocks if 'kind = "failure_probability"' not in b.split("[model.schema]", 1)[0]]
    return "".join("\n[[model]]\n" + b.rstrip("\n") + "\n" for b in keep)


def onnx_predict(model_bytes: bytes):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])

    def predict(x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0)
        return sess.run(["probabilities"], {"features": np.ascontiguousarray(x, dtype=np.float32)})[0][:, 1]

    return predict


def fmt(v, nd=3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def card_markdown(card: dict) -> str:
    m = card["model"]
    h = m["horizon_s"]
    lines = [
        f"# Model card: {m['name']} ({m['version']})",
        "",
        f"P(container memory exhaustion within {horizon_text(h)}): the probability that the kernel OOM-kills "
        f"the container by its cgroup memory limit within the next {horizon_text(h)}.",
        "",
        "## Model",
        f"- LightGBM binary classifier, {m['trees']} trees x at most {m['num_leaves']} leaves, Platt scaling "
        f"(a = {m['calibration']['a']:.4f}, b = {m['calibration']['b']:.4f}) fitted on the validation runs and "
        "folded into the ONNX graph.",
        f"- File `{m['file']}` ({m['bytes']} bytes, sha256 `{m['sha256']}`), ONNX opset 15 + ai.onnx.ml 1; input "
        f"`features` float [n, {m['n_features']}] (NaN = missing), output `probabilities` [n, 2] = [p_normal, p_failure].",
        f"- Feature schema version {m['schema_version']} (`augur-aggregator features schema --kind container`), in the "
        "ONNX metadata `augur.feature_schema` and in the manifest.",
        f"- Inputs actually used ({len(m['features_used'])} of {m['n_features']}): " + ", ".join(f"`{f}`" for f in m["features_used"]) + ".",
        "  Absolute byte counts, the limit itself and CPU / pids signals are deliberately unused (lab limits are "
        "64-512 MiB; a model keyed on them would learn the lab's design, not memory exhaustion).",
        "- Monotone constraints (domain knowledge): P never falls as usage approaches the limit (`mem_util`, "
        "`mem_ws_util` up), as time to exhaustion shortens (`mem_tte_s_*`, `mem_tte_accel_s` down), as memory pressure "
        "and limit hits rise (levels of `psi_mem_waiting_*`, `mem_fail_rate_*` up) or as usage accelerates "
        "(`mem_accel_util` up); P never rises with the fall after a recent high (`mem_drawdown_util_*` down).",
        f"- Most important features (split gain): " + ", ".join(f"`{k}` {v:.0%}" for k, v in m["importance"][:6]) + ".",
        "- A container without a memory limit (every limit-derived feature NaN) was taught as label 0: "
        f"it scores {fmt(m['p_unlimited_row'], 4)} on such a row, {fmt(m['p_all_nan_row'], 4)} on an all-NaN row.",
        "",
        "## Data",
        f"- Datasets: " + ", ".join(f"`{d['name']}` ({d['runs']} runs, sha256 {d['sha256'][:12]}…)" for d in card["datasets"]) + ".",
        "- Features: the aggregator's own feature engine (`augur-aggregator features export --kind container --step 1s`).",
        "- Labels: y_H(t) = 1 iff the run is OOM-killed (lab label `oom`, time from the kernel's kmsg record) at t_f with "
        f"0 < t_f - t <= H; rows at or after t_f are dropped; runs of every other outcome are negatives.",
        f"- Split by run: {card['split']['rule']}",
        "",
        "| split | runs | OOM runs | other runs | rows | positive rows |",
        "|---|---|---|---|---|---|",
    ]
    for s, c in card["split"]["counts"].items():
        lines.append(f"| {s} | {c['runs']} | {c['failure_runs']} | {c['normal_runs']} | {c['rows']} | {c[f'positive_rows_h{h}s']} |")
    lines += [
        "",
        f"## Calibration of P(failure within {horizon_text(h)}) on held-out runs",
        "Baselines are 0/1 alarms used as probabilities: static = usage > 90 % of the limit; linear = usage extrapolated "
        f"along its 5-min least-squares slope reaches the limit within {horizon_text(h)}.",
        "",
        "| split | Brier | ECE | Brier static | ECE static | Brier linear | ECE linear |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in ("test", "heldout", "soak", "val"):
        c = card["calibration"].get(s)
        if c:
            lines.append(
                f"| {s} | {fmt(c['brier'], 4)} | {fmt(c['ece'], 4)} | {fmt(c['brier_static'], 4)} | {fmt(c['ece_static'], 4)} | "
                f"{fmt(c['brier_linear'], 4)} | {fmt(c['ece_linear'], 4)} |"
            )
    op = card["operating_point"]
    lines += ["", "## Alarms (EVALUATION.md section 1)"]
    if card["deciding"]:
        lines += [
            f"This model raises the memory-exhaustion events: `operating_threshold = {op['threshold']:.4f}` in the manifest. "
            "Chosen on the validation runs only: the thresholds with at most 1 false alarm per workload-day on runs "
            "without an OOM kill, the highest recall at 30 s lead among them, and the middle (in log-odds) of that "
            f"interval [{op['feasible_low']:.4f}, {op['feasible_high']:.4f}]; across horizons the highest recall, then the widest interval. "
            "Only horizons longer than the 30 s lead may decide: P(failure within 30 s) is 0 by definition 30 s ahead, so "
            "warning that early with it means alarming far below its own base rate (a few seconds of timing noise decide).",
            "",
            "| horizon | may decide | threshold | feasible interval | val recall@30 s | val false alarms / day |",
            "|---|---|---|---|---|---|",
        ]
        for c in op["candidates"]:
            lines.append(
                f"| {horizon_text(c['horizon_s'])} | {'yes' if c['eligible'] else 'no'} | {c['threshold']:.4f} | "
                f"[{c['feasible_low']:.4f}, {c['feasible_high']:.4f}] | {fmt(c['val_recall_lead30s'])} | {fmt(c['val_false_alarms_per_day'], 2)} |"
            )
    else:
        lines.append(
            f"Events for memory exhaustion are raised by `{op['model']}` (horizon {horizon_text(op['horizon_s'])}, threshold "
            f"{op['threshold']:.4f}); this model's probability is reported alongside. The alarm metrics of the shipped set:"
        )
    lines += [
        "",
        "A failure counts as predicted with lead L if an alarm falls in [t_f - 30 min, t_f - L]; false alarms are "
        "debounced alarms (10 min) on runs without an OOM kill, per workload-day of those runs.",
        "",
        "| split | detector | recall@10 s | recall@30 s | recall@60 s | recall@5 min | median lead s | false alarms | per workload-day | Brier (decision H) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in card["alarm_rows"]:
        lines.append(
            f"| {r['split']} | {r['detector']} | {fmt(r.get('recall_lead10s'))} | {fmt(r.get('recall_lead30s'))} | {fmt(r.get('recall_lead60s'))} | "
            f"{fmt(r.get('recall_lead5m'))} | {fmt(r.get('median_lead_s'), 1)} | {r.get('false_alarms')} | "
            f"{fmt(r.get('false_alarms_per_workload_day'), 2)} | {fmt(r.get('brier'), 4)} |"
        )
    lines += ["", "## Limits", *[f"- {n}" for n in card["notes"]], ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aggregator", help="augur-aggregator binary (default: $AUGUR_AGGREGATOR or the release build)")
    ap.add_argument("--datasets", help="lab datasets (dirs or *.labels.jsonl, ':'-separated; default models/lab/data)")
    ap.add_argument("--out", type=Path, default=MODELS_DIR, help="where the .onnx files and manifest.toml go")
    args = ap.parse_args(argv)
    started = time.perf_counter()

    binary = data.aggregator_binary(args.aggregator)
    schema = data.feature_schema(binary, "container")
    names = schema["features"]
    datasets = data.find_datasets(args.datasets)
    if not datasets:
        log("no lab dataset found (models/lab/data or ~/.cache/augur/lab/smoke-1); record one with `make lab`")
        return 1
    if all(d.labels.parent != data.LAB_DATA_DIR for d in datasets) and not args.datasets:
        log(f"WARNING: no dataset in {data.LAB_DATA_DIR}; training on the smoke session {data.SMOKE_DIR}")
    rows: list[data.RunRows] = []
    ds_info = []
    for ds in datasets:
        t0 = time.perf_counter()
        rr = data.load_dataset_rows(binary, ds, names, LAB_FAILURE)
        log(f"dataset {ds.name}: {len(rr)} runs, {sum(len(r.ts) for r in rr)} rows ({time.perf_counter() - t0:.1f} s)")
        rows.extend(rr)
        try:
            rel = str(ds.labels.relative_to(data.REPO_ROOT))
        except ValueError:
            rel = str(ds.labels)
        ds_info.append({"name": ds.name, "labels": rel, "sha256": ds.sha256(), "runs": len(rr)})

    runs = [r.run for r in rows]
    assign = split.assign_splits(runs, SEED)
    by = {s: [r for r in rows if assign[r.run.key] == s] for s in split.SPLITS}
    counts = {
        s: {
            "runs": len(v),
            "failure_runs": sum(r.t_f is not None for r in v),
            "normal_runs": sum(r.t_f is None for r in v),
            "rows": int(sum(len(r.ts) for r in v)),
            **{f"positive_rows_h{h}s": int(sum(data.horizon_labels(r.ts, r.t_f, h).sum() for r in v)) for h in HORIZONS},
        }
        for s, v in by.items()
    }
    log("split: " + ", ".join(f"{s} {c['runs']} runs ({c['failure_runs']} OOM)" for s, c in counts.items()))
    for s in ("train", "val"):
        if counts[s]["failure_runs"] == 0 or counts[s]["normal_runs"] == 0:
            raise SystemExit(f"the {s} split needs runs with and without an OOM kill: {counts[s]}")

    data_sha = sha256_bytes("".join(sorted(d["sha256"] for d in ds_info)).encode())
    used = used_columns(names)
    rng = np.random.default_rng(SEED)
    probe_unlimited = np.full((1, len(names)), np.nan, dtype=np.float32)
    # an unlimited container under pressure-free, steady use: real values except the limit-derived ones
    ref = np.concatenate([r.x for r in by["val"]])
    probe_unlimited[0] = np.nanmedian(np.where(np.isfinite(ref), ref, np.nan), axis=0)
    for n in LIMIT_DERIVED:
        if n in names:
            probe_unlimited[0, names.index(n)] = np.nan
    probe_nan = np.full((1, len(names)), np.nan, dtype=np.float32)

    models = {}
    for h in HORIZONS:
        t0 = time.perf_counter()
        x, y = training_matrix(by["train"], h, names, rng)
        clf = lightgbm.LGBMClassifier(**LGBM_PARAMS, monotone_constraints=[monotone_direction(n) for n in names], random_state=SEED + h)
        clf.fit(x, y)
        xv = mask_unused(np.concatenate([r.x for r in by["val"]]), names)
        yv = np.concatenate([data.horizon_labels(r.ts, r.t_f, h) for r in by["val"]])
        a, b = calibrate.fit_platt(clf.predict_proba(xv, raw_score=True), yv)
        name = model_name(h)
        desc = f"P(memory exhaustion within {horizon_text(h)})"
        onnx_schema = json.loads(json.dumps(schema))
        onnx_schema["output"]["description"] = desc
        doc = f"augur {name}: {desc} for a container; models/train/train.py, card models/cards/{name}.md"
        model = calibrate.lightgbm_to_calibrated_onnx(clf, len(names), a, b, onnx_schema, name.replace("-", "_"), doc)
        blob = model.SerializeToString()
        predict = onnx_predict(blob)
        # the exported graph must equal the Python calibrated model on held-out rows
        xc = np.concatenate([r.x for r in by["test"] + by["heldout"]] + [probe_unlimited, probe_nan])
        py = calibrate.apply_platt(clf.predict_proba(xc, raw_score=True), a, b)
        ox = predict(xc)
        diff = float(np.max(np.abs(py - ox))) if len(xc) else 0.0
        if not diff <= ONNX_TOLERANCE:
            raise SystemExit(f"{name}: ONNX output differs from the Python calibrated output by {diff:.2e}")
        gains = clf.booster_.feature_importance(importance_type="gain")
        imp = sorted(((names[i], float(gains[i] / gains.sum())) for i in range(len(names)) if gains[i] > 0), key=lambda kv: -kv[1])
        models[h] = {
            "name": name,
            "clf": clf,
            "a": a,
            "b": b,
            "blob": blob,
            "predict": predict,
            "onnx_max_abs_diff": diff,
            "importance": imp,
            "p_unlimited_row": float(predict(probe_unlimited)[0]),
            "p_all_nan_row": float(predict(probe_nan)[0]),
            "description": desc,
        }
        log(
            f"{name}: {len(x)} train rows ({int(y.sum())} positive), Platt a={a:.3f} b={b:.3f}, "
            f"ONNX {len(blob)} bytes, max |ONNX - Python| {diff:.1e} ({time.perf_counter() - t0:.1f} s)"
        )

    # the version names what was shipped: the data and the three exported graphs
    version = f"{MODEL_VERSION}+{sha256((data_sha + ''.join(sha256_bytes(m['blob']) for m in models.values())).encode())[:8]}"
    predictors = {h: m["predict"] for h, m in models.items()}
    scored = {s: evaluate.score_runs(by[s], predictors, names) for s in ("val", "test", "heldout", "soak")}
    op = evaluate.choose_operating_point(scored["val"], HORIZONS)
    log(f"operating point (validation): {model_name(op.horizon_s)} at p >= {op.threshold:.4f} (val recall@30s {op.val_recall_lead30s:.3f})")
    tuned = evaluate.tune_baselines(scored["val"])
    log(
        f"baselines tuned on validation: static usage > {tuned['static_util']:.4f} (val recall@30s {tuned['static_val_recall_lead30s']:.3f}), "
        f"linear within {tuned['linear_horizon_s']:.1f} s (val recall@30s {tuned['linear_val_recall_lead30s']:.3f})"
    )
    model_names = {h: model_name(h) for h in HORIZONS}
    alarm_rows = []
    for s in ("test", "heldout", "soak", "val"):
        if scored[s]:
            alarm_rows.extend(evaluate.split_rows(s, scored[s], op, HORIZONS, model_names, tuned))
        if s == "soak":
            alarm_rows.extend(evaluate.per_dataset_rows(s, scored[s], op, HORIZONS, model_names, tuned))
    cal = {h: {s: evaluate.calibration(scored[s], h) for s in ("val", "test", "heldout", "soak") if scored[s]} for h in HORIZONS}

    # ---- write artifacts
    args.out.mkdir(parents=True, exist_ok=True)
    cards_dir = args.out / "cards"
    cards_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    test_row = next((r for r in alarm_rows if r["split"] == evaluate.SPLIT_LABEL["test"] and r["detector"] == "shipped"), {})
    held_row = next((r for r in alarm_rows if r["split"] == evaluate.SPLIT_LABEL["heldout"] and r["detector"] == "shipped"), {})
    soak_row = next((r for r in alarm_rows if r["split"] == evaluate.SPLIT_LABEL["soak"] and r["detector"] == "shipped"), {})
    meta = datasets[0].meta_json() if datasets else {}
    longest_s = max((r.ts[-1] - r.ts[0]) / 1000 for r in rows)
    soak_hours = sum(metrics.run_hours(r.ts) for r in by["soak"])
    notes = [
        (
            f"False alarms per workload-day are judged on the soak split: {counts['soak']['runs']} soak runs "
            f"({soak_hours:.1f} workload-hours) of normal and must-not-alarm workloads (steady, bursty, periodic, GC "
            "sawtooth, cache plateau, page cache) lasting 33 min each, never trained or calibrated on (per session in the "
            "rows `soak_runs/<session>`; models/lab/README.md says which session's figure served development). The other lab "
            "runs last minutes: their normal runs add up to a few workload-hours per split, so one false alarm there "
            "is 10-30 per workload-day; the counts are given next to every rate."
            if counts["soak"]["runs"]
            else "Lab runs last minutes: the normal runs of a split add up to a few workload-hours, so one false alarm "
            "is 10-30 per workload-day and zero false alarms cannot show a rate below 1 per day; the counts are given "
            "next to every rate (no soak dataset: `make lab-soak` records one)."
        ),
        "Every lab run that OOMs here is shorter than 10 min, so y_10min is 1 on every row of a run that OOMs and 0 on every other: "
        "the 10-min model learns which runs are leaks (the lab's scenario mix, e.g. 'young container whose memory "
        "rose'), not how far away a failure is. It is calibrated on the lab's mix and does not raise events.",
        "30-min-window features are unused: only soak runs (none of which fails) warm a 30-min window (its slope is 0, "
        "time to exhaustion 'never', until the window's second 2-min bucket starts), so a model would learn 'young, so "
        "safe'.",
        "A GC-like sawtooth on its first rise (to up to 85 % of the limit, fast) looks like a fast leak at the same "
        "usage: no feature of the engine tells them apart, so a leak that fills its limit in about 2 min from empty "
        "is warned less than 30 s ahead at this false-alarm budget; slower leaks get more lead.",
        "At this false-alarm budget both baselines, tuned on validation, warn nothing 30 s ahead: page cache "
        "(mem.pagecache) keeps usage at the limit with a time to exhaustion near 0 and no OOM.",
        "Accelerating leaks are a held-out family: no training run accelerates, so the acceleration features of schema "
        "2 (`mem_accel_util`, `mem_tte_accel_s`) are learnt only from linear and stepwise leaks and normal runs, "
        "through their monotone constraints; the held-out figures show how far that carries.",
        "The lab's leaks are synthetic (linear, accelerating and stepwise growth of touched anonymous memory); "
        "real leaks with allocator or GC behaviour may look different.",
        f"Runs last at most {longest_s:.0f} s. Recorded on cgroup {meta.get('cgroup_mode', '?')} (kernel {meta.get('kernel', '?')}), PSI per cgroup "
        f"{'available' if meta.get('psi_per_cgroup') else 'unavailable'}.",
    ]
    longest_oom_s = max(((r.ts[-1] - r.ts[0]) / 1000 for r in rows if r.t_f is not None), default=0.0)
    if longest_oom_s >= max(HORIZONS):
        notes = [n for n in notes if not n.startswith("Every lab run that OOMs here is shorter than 10 min")]
    if all(d["labels"].startswith("/") for d in ds_info):
        notes.insert(0, "Trained on the lab's smoke session only (too few runs for meaningful figures); retrain with `make models` once the full dataset is in models/lab/data.")
    split_doc = {
        "seed": SEED,
        "rule": (
            "held-out families = every leak.accel run, every leak run with a 512 MiB limit and every normal.periodic run "
            "(never trained or calibrated on); the other runs per variant 50 % train / 25 % val (calibration and operating "
            "point) / 25 % test, by a seeded hash of the run id. Soak runs (33-min normal workloads, `run.py --soak`): "
            "per session and variant 75 % to the soak split (false alarms per workload-day; never trained or calibrated on), the rest "
            "half train, half val; soak runs of held-out variants all to the soak split."
        ),
        "counts": counts,
    }
    for h in HORIZONS:
        m = models[h]
        fname = f"{m['name']}.onnx"
        write_atomic(args.out / fname, m["blob"])
        sha = sha256_bytes(m["blob"])
        deciding = h == op.horizon_s
        mets = {
            "brier_test": cal[h].get("test", {}).get("brier"),
            "ece_test": cal[h].get("test", {}).get("ece"),
            "brier_static_test": cal[h].get("test", {}).get("brier_static"),
            "brier_linear_test": cal[h].get("test", {}).get("brier_linear"),
            "brier_heldout": cal[h].get("heldout", {}).get("brier"),
        }
        if deciding:
            mets.update(
                recall_lead30s_test=test_row.get("recall_lead30s"),
                false_alarms_per_workload_day_test=test_row.get("false_alarms_per_workload_day"),
                median_lead_s_test=test_row.get("median_lead_s"),
                recall_lead30s_heldout=held_row.get("recall_lead30s"),
                false_alarms_per_workload_day_soak=soak_row.get("false_alarms_per_workload_day"),
            )
        entries.append(
            {
                "name": m["name"],
                "version": version,
                "file": fname,
                "sha256": sha,
                "horizon_s": h,
                "operating_threshold": op.threshold if deciding else None,
                "metrics": {k: v for k, v in mets.items() if isinstance(v, (int, float))},
                "description": m["description"],
            }
        )
        card = {
            "model": {
                "name": m["name"],
                "version": version,
                "file": fname,
                "sha256": sha,
                "bytes": len(m["blob"]),
                "kind": "failure_probability",
                "resource_kind": "container",
                "failure_type": FAILURE_TYPE,
                "horizon_s": h,
                "trees": int(m["clf"].booster_.num_trees()),
                "num_leaves": LGBM_PARAMS["num_leaves"],
                "lightgbm_params": {k: v for k, v in LGBM_PARAMS.items()},
                "seed": SEED + h,
                "calibration": {"method": "platt", "a": m["a"], "b": m["b"], "fitted_on": "val"},
                "onnx_max_abs_diff_vs_python": m["onnx_max_abs_diff"],
                "schema_version": schema["version"],
                "n_features": len(names),
                "features_used": [names[i] for i in used],
                "monotone_constraints": {names[i]: monotone_direction(names[i]) for i in used if monotone_direction(names[i])},
                "importance": m["importance"],
                "p_unlimited_row": m["p_unlimited_row"],
                "p_all_nan_row": m["p_all_nan_row"],
                "unlimited_augmentation_share": UNLIMITED_SHARE,
            },
            "datasets": ds_info,
            "split": split_doc,
            "deciding": deciding,
            "operating_point": {
                "model": model_name(op.horizon_s),
                "horizon_s": op.horizon_s,
                "threshold": op.threshold,
                "feasible_low": op.feasible_low,
                "feasible_high": op.feasible_high,
                "val_recall_lead30s": op.val_recall_lead30s,
                "val_false_alarms_per_day": op.val_false_alarms_per_day,
                "candidates": op.candidates,
            },
            "baselines_tuned_on_val": tuned,
            "calibration": cal[h],
            "alarm_rows": alarm_rows,
            "notes": notes,
        }
        write_atomic(cards_dir / f"{m['name']}.json", json.dumps(_clean(card), indent=1, default=_json_default) + "\n")
        write_atomic(cards_dir / f"{m['name']}.md", card_markdown(card))
    write_atomic(args.out / "manifest.toml", manifest_text(entries, schema) + other_entries(args.out / "manifest.toml"))
    write_atomic(
        cards_dir / "lab-split.json",
        json.dumps(
            {
                "about": "Written by models/train/train.py; read by models/lab/eval_lab.py (`make eval`).",
                "failure_type": FAILURE_TYPE,
                "lab_failure": LAB_FAILURE,
                "horizons_s": list(HORIZONS),
                "models": {str(h): model_name(h) for h in HORIZONS},
                "operating_point": {"horizon_s": op.horizon_s, "threshold": op.threshold},
                "baselines_tuned_on_val": tuned,
                "datasets": ds_info,
                "seed": SEED,
                "rule": split_doc["rule"],
                "heldout_reasons": {r.key: split.heldout_reason(r) for r in runs if split.heldout_reason(r)},
                "splits": dict(sorted(assign.items())),
            },
            indent=1,
        )
        + "\n",
    )
    for r in alarm_rows:
        print(json.dumps({"models": "lab", **{k: _round(v) for k, v in r.items()}}), flush=True)
    log(f"wrote {len(entries)} models, manifest and cards in {time.perf_counter() - started:.1f} s")
    return 0


def _round(v):
    if isinstance(v, float):
        return None if math.isnan(v) or math.isinf(v) else round(v, 4)
    return v


def _clean(o):
    """JSON-safe: NaN and infinities become null."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (float, np.floating)):
        o = float(o)
        return None if math.isnan(o) or math.isinf(o) else o
    return o


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(type(o))


if __name__ == "__main__":
    sys.exit(main())
