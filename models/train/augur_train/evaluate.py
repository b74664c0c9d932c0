"""Scores lab runs with the models and the two baselines; the metric rows of the model
cards and of ``make eval`` (EVALUATION.md section 1).

Baselines, computed from the aggregator's own features (no feature code here):

* static threshold: alarm while memory usage is above 90 % of the limit
  (``mem_util > 0.9``);
* linear extrapolation (Prometheus ``predict_linear`` style): alarm when usage, extrapolated
  along its least-squares slope over the last 5 minutes, reaches the limit within H
  (``mem_tte_s_5m <= H``; the engine's time-to-exhaustion is headroom / 5-min slope).

Both are 0/1, so for the Brier score and ECE their alarm is used as the probability
(0 or 1), as EVALUATION.md asks them to be compared under the same harness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import metrics
from .data import RunRows, horizon_labels

STATIC_UTIL = 0.9
LINEAR_FEATURE = "mem_tte_s_5m"
STATIC_FEATURE = "mem_util"


@dataclass
class Scored:
    """A run's rows with every model's probability and the baselines' inputs."""

    rows: RunRows
    p: dict  # horizon_s -> P(failure within horizon) per row
    util: np.ndarray
    tte5m: np.ndarray

    @property
    def key(self) -> str:
        return self.rows.run.key

    @property
    def ts(self) -> np.ndarray:
        return self.rows.ts

    @property
    def t_f(self):
        return self.rows.t_f


def score_runs(rows: list[RunRows], predict: dict, feature_names: list[str]) -> list[Scored]:
    """``predict``: horizon_s -> function(x float32 [n, F]) -> P(failure) [n]."""
    iu, it = feature_names.index(STATIC_FEATURE), feature_names.index(LINEAR_FEATURE)
    out = []
    for rr in rows:
        p = {h: np.asarray(f(rr.x), dtype=np.float64) for h, f in predict.items()}
        out.append(Scored(rr, p, rr.x[:, iu].astype(np.float64), rr.x[:, it].astype(np.float64)))
    return out


def static_alarm(s: Scored) -> np.ndarray:
    return np.nan_to_num(s.util, nan=0.0) > STATIC_UTIL


def linear_alarm(s: Scored, horizon_s: float) -> np.ndarray:
    return np.nan_to_num(s.tte5m, nan=np.inf) <= horizon_s


def model_alarm(s: Scored, horizon_s: int, threshold: float) -> np.ndarray:
    return s.p[horizon_s] >= threshold


def alarm_summary(scored: list[Scored], alarm_fn) -> metrics.AlarmSummary:
    return metrics.summarize_alarms((s.key, s.ts, alarm_fn(s), s.t_f) for s in scored)


@dataclass
class OperatingPoint:
    horizon_s: int
    threshold: float
    # what the choice saw on validation
    val_recall_lead30s: float = math.nan
    val_false_alarms_per_day: float = math.nan
    feasible_low: float = math.nan
    feasible_high: float = math.nan
    candidates: list = field(default_factory=list)


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def _expit(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def feasible_interval(val: list[Scored], score, budget_per_day: float = 1.0, lead_s: int = 30, rounding: int = 5) -> dict:
    """For an alarm ``score(run) >= thr`` (``score`` gives a run's per-row scores, higher =
    more alarming), on validation runs: the lowest threshold whose debounced false alarms
    on runs without the failure stay within ``budget_per_day`` per workload-day (``low``),
    the recall at ``lead_s`` there, and the highest threshold keeping that recall
    (``high``)."""
    normal = [s for s in val if s.t_f is None]
    failing = [s for s in val if s.t_f is not None]
    hours = sum(metrics.run_hours(s.ts) for s in normal)
    allowed = math.floor(budget_per_day * hours / 24.0 + 1e-9)
    nscore = [np.asarray(score(s), dtype=np.float64) for s in normal]
    # the score each failing run reaches within [t_f - 30 min, t_f - lead]
    reach = []
    for s in failing:
        m = (s.ts >= s.t_f - metrics.LOOKBACK_S * 1000) & (s.ts <= s.t_f - lead_s * 1000)
        v = np.asarray(score(s), dtype=np.float64)[m]
        reach.append(float(v.max()) if m.any() else -np.inf)
    # candidate thresholds: every normal run's maximum exactly, the rest of its scores
    # rounded (false alarms only change where the threshold crosses a normal score)
    levels = {float(v.max()) for v in nscore if len(v)}
    for v in nscore:
        levels |= {float(x) for x in np.unique(np.round(v[np.isfinite(v)], rounding))}
    levels = sorted(levels)

    def false_alarms(thr: float) -> int:
        return sum(len(metrics.debounced_alarms(s.ts, v >= thr)) for s, v in zip(normal, nscore))

    low = -np.inf
    for lv in reversed(levels):  # descending: false alarms grow as the threshold drops
        if false_alarms(lv) > allowed:
            low = math.nextafter(lv, math.inf)
            break
    k = sum(r >= low for r in reach)
    high = sorted(reach, reverse=True)[k - 1] if k > 0 else low
    return {
        "low": low,
        "high": max(high, low),
        "recall": k / len(reach) if reach else math.nan,
        "normal_hours": hours,
        "allowed_false_alarms": allowed,
        "false_alarms": false_alarms,
    }


def choose_operating_point(val: list[Scored], horizons, budget_per_day: float = 1.0, lead_s: int = 30) -> OperatingPoint:
    """On validation runs only: for every model horizon, the thresholds whose false alarms
    on runs without the failure stay within ``budget_per_day`` per workload-day; among them
    the ones with the highest recall at ``lead_s``; the threshold is the middle (in log-odds)
    of that interval, so it sits as far as the validation data allow from both a lost
    detection and an extra false alarm. Across horizons: highest recall, then widest
    interval (in log-odds).

    Only horizons longer than ``lead_s`` may decide: P(failure within 30 s) is 0 by
    definition at a 30 s lead, so warning 30 s ahead with it means alarming at a
    probability far below its own base rate, where a few seconds of timing noise decide
    (and the event would say "7 % chance"). Such horizons are still listed as candidates,
    marked ``eligible: False``."""
    if not any(h > lead_s for h in horizons):
        raise ValueError(f"no horizon longer than the {lead_s} s lead to decide with")
    best = None
    cands = []
    for h in horizons:
        f = feasible_interval(val, lambda s: s.p[h], budget_per_day, lead_s)
        lo = min(max(f["low"], 1e-6), 1 - 1e-6)
        hi = min(max(f["high"], lo), 1 - 1e-6)
        thr = _expit((_logit(lo) + _logit(hi)) / 2)
        width = _logit(hi) - _logit(lo)
        hours = f["normal_hours"]
        fa_day = f["false_alarms"](thr) / (hours / 24.0) if hours > 0 else math.nan
        cand = {
            "horizon_s": h,
            "threshold": thr,
            "feasible_low": lo,
            "feasible_high": hi,
            "logit_width": width,
            "val_recall_lead30s": f["recall"],
            "val_false_alarms_per_day": fa_day,
            "eligible": h > lead_s,
        }
        cands.append(cand)
        if not cand["eligible"]:
            continue
        if best is None or (cand["val_recall_lead30s"], width) > (best["val_recall_lead30s"], best["logit_width"]):
            best = cand
    return OperatingPoint(
        horizon_s=best["horizon_s"],
        threshold=best["threshold"],
        val_recall_lead30s=best["val_recall_lead30s"],
        val_false_alarms_per_day=best["val_false_alarms_per_day"],
        feasible_low=best["feasible_low"],
        feasible_high=best["feasible_high"],
        candidates=cands,
    )


def tune_baselines(val: list[Scored], budget_per_day: float = 1.0, lead_s: int = 30) -> dict:
    """The baselines at the shipped model's alarm budget, tuned on validation runs by the
    same rule (highest recall at ``lead_s`` within ``budget_per_day``, middle of the
    feasible interval): the usage fraction of the static threshold, and the horizon H of
    the linear extrapolation (alarm when the 5-min trend reaches the limit within H)."""
    st = feasible_interval(val, lambda s: np.nan_to_num(s.util, nan=0.0), budget_per_day, lead_s)
    lo, hi = st["low"], st["high"]
    util = (lo + hi) / 2 if math.isfinite(lo) and math.isfinite(hi) else (hi if math.isfinite(hi) else 1.0)
    # linear: score -tte (alarm when tte <= H); the middle in log(H)
    li = feasible_interval(val, lambda s: -np.nan_to_num(s.tte5m, nan=np.inf), budget_per_day, lead_s, rounding=2)
    h_hi, h_lo = -li["low"], -li["high"]  # largest feasible H, smallest H keeping the recall
    h_hi = h_hi if math.isfinite(h_hi) else 86_400.0
    h_lo = max(h_lo, 1e-3) if math.isfinite(h_lo) else h_hi
    h = math.sqrt(max(h_lo, 1e-3) * max(h_hi, 1e-3))
    return {
        "static_util": float(util),
        "static_val_recall_lead30s": st["recall"],
        "static_feasible": [float(lo), float(hi)],
        "linear_horizon_s": float(h),
        "linear_val_recall_lead30s": li["recall"],
        "linear_feasible_horizon_s": [float(h_lo), float(h_hi)],
    }


def calibration(scored: list[Scored], horizon_s: int) -> dict:
    """Brier and ECE of P(failure within H) for the model and both baselines."""
    if not scored:
        return {}
    y = np.concatenate([horizon_labels(s.ts, s.t_f, horizon_s) for s in scored])
    p = np.concatenate([s.p[horizon_s] for s in scored])
    st = np.concatenate([static_alarm(s) for s in scored]).astype(np.float64)
    li = np.concatenate([linear_alarm(s, horizon_s) for s in scored]).astype(np.float64)
    return {
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "brier": metrics.brier(y, p),
        "ece": metrics.ece(y, p),
        "brier_static": metrics.brier(y, st),
        "ece_static": metrics.ece(y, st),
        "brier_linear": metrics.brier(y, li),
        "ece_linear": metrics.ece(y, li),
    }


def _h(h: int) -> str:
    return f"{h // 60}m" if h >= 60 else f"{h}s"


# How the splits are named in the metric rows.
SPLIT_LABEL = {"test": "heldout_runs", "heldout": "heldout_families", "soak": "soak_runs", "val": "validation", "train": "train"}


def per_dataset_rows(split: str, scored: list[Scored], op: OperatingPoint, horizons, model_names: dict, tuned: dict | None = None) -> list[dict]:
    """``split_rows`` per dataset (split label ``<label>/<dataset>``) when the split spans
    more than one dataset (e.g. two soak sessions), else nothing."""
    names = sorted({s.rows.run.dataset for s in scored})
    if len(names) < 2:
        return []
    out = []
    for name in names:
        part = [s for s in scored if s.rows.run.dataset == name]
        for row in split_rows(split, part, op, horizons, model_names, tuned):
            row["split"] = f"{row['split']}/{name}"
            out.append(row)
    return out


def split_rows(split: str, scored: list[Scored], op: OperatingPoint, horizons, model_names: dict, tuned: dict | None = None) -> list[dict]:
    """The ``{"eval": "lab", ...}`` rows of one split: the shipped models (alarms from the
    deciding model at its operating threshold), the static threshold and the linear
    extrapolation (at the deciding model's horizon)."""
    n_fail = sum(s.t_f is not None for s in scored)
    n_norm = len(scored) - n_fail
    hours = sum(metrics.run_hours(s.ts) for s in scored if s.t_f is None)
    cal = {h: calibration(scored, h) for h in horizons}
    common = {
        "split": SPLIT_LABEL.get(split, split),
        "runs": len(scored),
        "failure_runs": n_fail,
        "normal_runs": n_norm,
        "normal_workload_hours": hours,
    }
    shipped = alarm_summary(scored, lambda s: model_alarm(s, op.horizon_s, op.threshold))
    static = alarm_summary(scored, static_alarm)
    linear = alarm_summary(scored, lambda s: linear_alarm(s, op.horizon_s))
    d = cal[op.horizon_s]
    row = {
        "detector": "shipped",
        "model": model_names[op.horizon_s],
        **common,
        "decision_horizon_s": op.horizon_s,
        "threshold": op.threshold,
        **shipped.row(),
        "brier": d.get("brier"),
        "ece": d.get("ece"),
        "brier_static": d.get("brier_static"),
        "brier_linear": d.get("brier_linear"),
        "ece_static": d.get("ece_static"),
        "ece_linear": d.get("ece_linear"),
        "recall_lead30s_static": static.recall(30),
        "recall_lead30s_linear": linear.recall(30),
        "false_alarms_per_workload_day_static": static.false_alarms_per_day,
        "false_alarms_per_workload_day_linear": linear.false_alarms_per_day,
    }
    for h in horizons:
        for k in ("brier", "ece", "brier_static", "brier_linear"):
            row[f"{k}_h{_h(h)}"] = cal[h].get(k)
    if n_fail:
        row["meets_recall_lead30s_90pct"] = bool(shipped.recall(30) >= 0.9)
    if hours > 0:
        row["meets_false_alarms_1_per_day"] = bool(shipped.false_alarms_per_day <= 1.0)
    if d:
        row["meets_brier_better_than_baselines"] = bool(d["brier"] < d["brier_static"] and d["brier"] < d["brier_linear"])
    row["missed_lead30s"] = shipped.missed_runs
    row["false_alarm_runs"] = shipped.false_alarm_runs
    out = [row]
    for name, summ, key in (("static_threshold", static, "brier_static"), ("linear_extrapolation", linear, "brier_linear")):
        b = {
            "detector": name,
            **common,
            "rule": "mem_util > 0.9" if name == "static_threshold" else f"mem_tte_s_5m <= {op.horizon_s}",
            **summ.row(),
            "brier": d.get(key),
            "ece": d.get(key.replace("brier", "ece")),
        }
        for h in horizons:
            b[f"brier_h{_h(h)}"] = cal[h].get(key)
            b[f"ece_h{_h(h)}"] = cal[h].get(key.replace("brier", "ece"))
        b["missed_lead30s"] = summ.missed_runs
        b["false_alarm_runs"] = summ.false_alarm_runs
        out.append(b)
    if tuned:
        # the same baselines with their parameter tuned on validation at the model's budget
        u, hl = tuned["static_util"], tuned["linear_horizon_s"]
        for name, fn, rule in (
            ("static_threshold_valtuned", lambda s: np.nan_to_num(s.util, nan=0.0) > u, f"mem_util > {u:.4f}"),
            ("linear_extrapolation_valtuned", lambda s: linear_alarm(s, hl), f"mem_tte_s_5m <= {hl:.3g}"),
        ):
            summ = alarm_summary(scored, fn)
            out.append(
                {
                    "detector": name,
                    **common,
                    "rule": rule + " (chosen on validation: best recall at 30 s lead within 1 false alarm per workload-day)",
                    **summ.row(),
                    "missed_lead30s": summ.missed_runs,
                    "false_alarm_runs": summ.false_alarm_runs,
                }
            )
    return out
