"""Runs every detector on every host of a data set and emits one JSON object per line.

Layout of one evaluation (``smd``, ``nab``, and the hook for ``lab``):

* each detector is fitted on a host's train split and scores train and test causally;
* the alarm threshold is fixed on the train scores (:func:`metrics.train_alarm_threshold`,
  at most 1 debounced alarm per day on train) before any test label is read;
* :func:`evaluate_host` computes the per-step, alarm and literature views of
  ``../shared/EVALUATION.md`` section 2 for one host;
* :func:`mean_row` averages hosts (NaN-skipping) into the ``"machine": "mean"`` line; medians of
  lead and delay pool the events of all hosts, counts are summed.

Human-readable messages (skips, notes) go to stderr so stdout stays JSON lines.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
from typing import Callable

import numpy as np

from . import data, detectors, metrics

Emit = Callable[[dict], None]
NAB_LAGS = 12  # 1 h of 5-minute steps: the univariate NAB series are scored on lag windows
BUDGET_PER_DAY = 1.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def json_line(row: dict) -> str:
    def clean(v):
        if isinstance(v, float):
            return None if math.isnan(v) or math.isinf(v) else round(v, 4)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (np.floating,)):
            return clean(float(v))
        return v

    return json.dumps({k: clean(v) for k, v in row.items() if not k.startswith("_")})


def emit_stdout(row: dict) -> None:
    print(json_line(row), flush=True)


def _median(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.median(values)) if values else math.nan


def evaluate_host(series: data.Series, train_score: np.ndarray, test_score: np.ndarray) -> dict:
    """All section-2 metrics for one host (keys starting with ``_`` are kept for pooling)."""
    t, label, segs = series.test_t, series.test_label, series.segments
    row: dict = {"n_events": len(segs), "test_days": metrics.span_days(t, series.step_minutes)}

    # literature view (test labels; the comparison with published numbers)
    has_labels = 0 < label.sum() < len(label)
    bf = metrics.best_f1(test_score, label) if has_labels else {"f1": math.nan, "precision": math.nan, "recall": math.nan}
    row["best_f1"] = bf["f1"]
    row["best_f1_precision"] = bf["precision"]
    row["best_f1_recall"] = bf["recall"]
    row["auc_pr"] = metrics.auc_pr(test_score, label)
    row["auc_roc"] = metrics.auc_roc(test_score, label)
    comp = metrics.composite_f1(t, test_score, label, segs)
    row["composite_f1"] = comp["f1"]
    row["composite_event_recall"] = comp["event_recall"]
    row["composite_precision"] = comp["precision"]

    # per-step early-warning view
    for h in metrics.HORIZONS_MIN:
        row[f"step_auc_pr_h{h}"] = metrics.per_step_auc_pr(t, test_score, segs, h)

    # alarm view: operating threshold fixed on train ...
    thr = metrics.train_alarm_threshold(series.train_t, train_score, series.step_minutes, BUDGET_PER_DAY)
    row["f1_at_train_threshold"] = metrics.point_f1(test_score, label, thr) if has_labels else math.nan
    out = _alarm_rows(row, "", t, test_score, thr, segs)
    row["alarms"] = out.n_alarms
    row["false_alarms"] = out.n_false
    # ... and, for comparing detectors at an equal false-alarm rate, the threshold giving at
    # most 1 false alarm per host-day on test (uses test labels, like best-F1)
    thr_test = metrics.test_budget_threshold(t, test_score, segs, series.step_minutes, BUDGET_PER_DAY)
    _alarm_rows(row, "at1fa_", t, test_score, thr_test, segs)
    return row


def _alarm_rows(row: dict, prefix: str, t, test_score, threshold: float, segs) -> metrics.AlarmOutcome:
    out = metrics.alarm_outcome(metrics.alarms(t, test_score, threshold), segs)
    n = max(len(segs), 1)
    row[prefix + "false_alarms_per_day"] = out.n_false / row["test_days"]
    for h in metrics.HORIZONS_MIN:
        row[f"{prefix}ew_recall_h{h}"] = float(out.early[h].sum() / n) if segs else math.nan
    row[prefix + "detected_recall"] = float((out.warned | out.late).sum() / n) if segs else math.nan
    row[prefix + "late_recall"] = float(out.late.sum() / n) if segs else math.nan
    row[prefix + "median_lead_min"] = _median(out.lead)
    row[prefix + "median_delay_min"] = _median(out.delay)
    row[f"_{prefix}leads"] = [float(v) for v in out.lead if not math.isnan(v)]
    row[f"_{prefix}delays"] = [float(v) for v in out.delay if not math.isnan(v)]
    return out


SUMMED = {"n_events", "test_days", "alarms", "false_alarms"}
POOLED_MEDIANS = {
    "median_lead_min": "_leads",
    "median_delay_min": "_delays",
    "at1fa_median_lead_min": "_at1fa_leads",
    "at1fa_median_delay_min": "_at1fa_delays",
}


def mean_row(rows: list[dict]) -> dict:
    """Mean over hosts of every rate (NaN-skipping), sums of counts, pooled medians."""
    out: dict = {"n_hosts": len(rows)}
    for key in rows[0]:
        if key.startswith("_"):
            continue
        if key in SUMMED:
            out[key] = float(sum(r[key] for r in rows))
        elif key in POOLED_MEDIANS:
            out[key] = _median([v for r in rows for v in r[POOLED_MEDIANS[key]]])
        else:
            vals = [r[key] for r in rows if not (isinstance(r[key], float) and math.isnan(r[key]))]
            out[key] = float(np.mean(vals)) if vals else math.nan
    for k in ("n_events", "alarms", "false_alarms"):
        out[k] = int(out[k])
    return out


def run_detectors(
    eval_name: str,
    hosts: list[data.Series],
    make_detectors: Callable[[data.Series], list[detectors.Detector]],
    emit: Emit,
    per_host: bool = False,
) -> dict[str, dict]:
    """Evaluates every detector on every host; emits one mean line per detector, and one line
    per host too if ``per_host``."""
    results: dict[str, list[dict]] = {}
    params: dict[str, list[dict]] = {}
    for series in hosts:
        for det in make_detectors(series):
            started = time.perf_counter()
            train_score, test_score = det.fit_score(series.train_x, series.test_x)
            row = evaluate_host(series, train_score, test_score)
            row["seconds"] = time.perf_counter() - started
            results.setdefault(det.name, []).append(row)
            params.setdefault(det.name, []).append(det.params())
            if per_host:
                emit({"eval": eval_name, "detector": det.name, "machine": series.name, **row, "params": det.params()})
    means = {}
    for name, rows in results.items():
        m = mean_row(rows)
        means[name] = m
        emit({"eval": eval_name, "detector": name, "machine": "mean", **m, "params": _common_params(params[name])})
    return means


def _common_params(all_params: list[dict]) -> dict:
    """Parameters equal on every host, as given; those that vary (e.g. components) as a list."""
    out = {}
    for key in all_params[0]:
        vals = [p[key] for p in all_params]
        out[key] = vals[0] if all(v == vals[0] for v in vals) else vals
    return out


# ------------------------------------------------------------------------------- evaluations


def smd_detectors(series: data.Series) -> list[detectors.Detector]:
    return [
        detectors.RandomScores(),
        detectors.PCAError(0.9),
        detectors.IForest(200),
        detectors.ResidualEwma(step_minutes=series.step_minutes),
    ]


def smd_variants(series: data.Series) -> list[detectors.Detector]:
    """Variants tried while designing the shipped detector (``run_eval.py --variants``)."""
    step = series.step_minutes
    out: list[detectors.Detector] = [
        detectors.Smoothed(detectors.PCAError(0.9), 1.0, step),
        detectors.Smoothed(detectors.PCAError(0.9), 5.0, step),
        detectors.MaxRobustZ(0.05),
        detectors.Smoothed(detectors.MaxRobustZ(0.05), 5.0, step),
    ]
    for hl in (0.0, 2.0, 5.0, 10.0):
        det = detectors.ResidualEwma(halflife_minutes=hl, step_minutes=step)
        det.name = f"shipped_hl{hl:g}"
        out.append(det)
    for var in (0.8, 0.95):
        det = detectors.ResidualEwma(variance=var, step_minutes=step)
        det.name = f"shipped_var{var:g}"
        out.append(det)
    out.append(
        detectors.GeometricMean(
            detectors.ResidualEwma(step_minutes=step), detectors.MaxRobustZ(0.05), "shipped_x_max_robust_z"
        )
    )
    return out


def nab_detectors(series: data.Series) -> list[detectors.Detector]:
    return [
        detectors.RandomScores(),
        detectors.LagEmbedded(detectors.PCAError(0.9), NAB_LAGS),
        detectors.LagEmbedded(detectors.IForest(200), NAB_LAGS),
        detectors.LagEmbedded(detectors.ResidualEwma(step_minutes=series.step_minutes), NAB_LAGS),
    ]


def run_smd(emit: Emit, per_host: bool = False, variants: bool = False) -> dict | None:
    root = data.data_dir()
    hosts = data.load_smd(root)
    if not hosts:
        log(f"eval smd: skipped, no SMD machines under {root / 'smd'} (set AUGUR_DATA_DIR)")
        return None
    log(f"eval smd: {len(hosts)} machines from {root / 'smd'}")
    means = run_detectors("smd", hosts, smd_detectors, emit, per_host)
    if variants:
        means.update(run_detectors("smd", hosts, smd_variants, emit, per_host))
    return means


def run_nab(emit: Emit, per_host: bool = False, variants: bool = False) -> dict | None:
    root = data.data_dir()
    hosts = data.load_nab(root)
    if not hosts:
        log(f"eval nab: skipped, no NAB realAWSCloudwatch series under {root / 'nab'} (set AUGUR_DATA_DIR)")
        return None
    log(
        f"eval nab: {len(hosts)} series from {root / 'nab'}; train = first "
        f"{data.NAB_PROBATION_FRACTION:.0%} of each series (NAB probationary period); "
        f"models score {NAB_LAGS}-step (1 h) lag windows"
    )
    for s in hosts:
        for note in s.notes:
            log(f"eval nab: {s.name}: {note}")
    return run_detectors("nab", hosts, nab_detectors, emit, per_host)


LAB_HOOK = data.REPO_ROOT / "models" / "lab" / "eval_lab.py"


def run_lab(emit: Emit, per_host: bool = False, variants: bool = False) -> dict | None:
    """Hook for EVALUATION.md section 1 (scenario-lab runs), owned by ``models/lab``.

    If ``models/lab/eval_lab.py`` exists and defines ``run(emit)``, it is called with an
    ``emit`` that prints ``{"eval": "lab", ...}`` lines; until then this prints a skip note.
    """
    if not LAB_HOOK.is_file():
        log(f"eval lab: skipped, {LAB_HOOK.relative_to(data.REPO_ROOT)} does not exist yet")
        return None
    spec = importlib.util.spec_from_file_location("augur_eval_lab", LAB_HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run(lambda row: emit({"eval": "lab", **row}))


EVALS: dict[str, Callable[..., dict | None]] = {"smd": run_smd, "nab": run_nab, "lab": run_lab}
