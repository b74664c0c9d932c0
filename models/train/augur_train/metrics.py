"""EVALUATION.md section 1 metrics on scenario-lab runs.

Times are Unix milliseconds (the clock of the agent's samples and of the labels);
results are in seconds. A run is scored at the time steps of its feature rows.

* Alarms: rows where the decision probability is at least the operating threshold
  (the aggregator raises at ``p >= threshold``), debounced: alarm rows closer than
  10 min are one alarm (as in section 2).
* A failure at ``t_f`` is *predicted with lead L* if an alarm row lies in
  ``[t_f - 30 min, t_f - L]``; its lead is ``t_f`` minus the first alarm row in
  ``[t_f - 30 min, t_f)``.
* False alarms: the debounced alarms of runs without the failure, per workload-hour
  (hours of those runs' rows) and per workload-day.
* Calibration: Brier score and expected calibration error (10 equal-width bins) of
  P(failure within H) against y_H.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

LEADS_S = (10, 30, 60, 300)
LOOKBACK_S = 1800  # a warning counts if it comes at most 30 min before the failure
DEBOUNCE_S = 600  # alarms closer than 10 min are one alarm
ECE_BINS = 10


def lead_key(lead_s: int) -> str:
    return f"{lead_s // 60}m" if lead_s >= 60 and lead_s % 60 == 0 and lead_s > 60 else f"{lead_s}s"


def debounced_alarms(ts_ms: np.ndarray, alarm: np.ndarray, debounce_s: float = DEBOUNCE_S) -> np.ndarray:
    """Start times (ms) of the alarms: alarm rows merged when closer than ``debounce_s``."""
    t = np.sort(np.asarray(ts_ms, dtype=np.int64)[np.asarray(alarm, dtype=bool)])
    if len(t) == 0:
        return t
    breaks = np.flatnonzero(np.diff(t) >= debounce_s * 1000)
    return t[np.concatenate(([0], breaks + 1))]


@dataclass
class FailureOutcome:
    """How one failing run was warned."""

    predicted: dict  # lead_s -> bool
    lead_s: float  # t_f - first alarm in [t_f - 30 min, t_f); NaN without one


def failure_outcome(ts_ms: np.ndarray, alarm: np.ndarray, t_f_ms: int, leads_s=LEADS_S) -> FailureOutcome:
    ts = np.asarray(ts_ms, dtype=np.int64)
    alarm = np.asarray(alarm, dtype=bool)
    window = (ts >= t_f_ms - LOOKBACK_S * 1000) & (ts < t_f_ms) & alarm
    hits = ts[window]
    predicted = {L: bool(np.any(hits <= t_f_ms - L * 1000)) for L in leads_s}
    lead = (t_f_ms - hits.min()) / 1000.0 if len(hits) else math.nan
    return FailureOutcome(predicted, lead)


@dataclass
class AlarmSummary:
    n_failure_runs: int = 0
    n_normal_runs: int = 0
    predicted: dict = field(default_factory=dict)  # lead_s -> count
    leads_s: list = field(default_factory=list)
    false_alarms: int = 0
    normal_hours: float = 0.0
    false_alarm_runs: list = field(default_factory=list)
    missed_runs: list = field(default_factory=list)  # not predicted 30 s ahead

    def recall(self, lead_s: int) -> float:
        return self.predicted.get(lead_s, 0) / self.n_failure_runs if self.n_failure_runs else math.nan

    @property
    def median_lead_s(self) -> float:
        return float(np.median(self.leads_s)) if self.leads_s else math.nan

    @property
    def false_alarms_per_hour(self) -> float:
        return self.false_alarms / self.normal_hours if self.normal_hours > 0 else math.nan

    @property
    def false_alarms_per_day(self) -> float:
        return 24.0 * self.false_alarms_per_hour

    def row(self, prefix: str = "") -> dict:
        out = {}
        for L in LEADS_S:
            out[f"{prefix}recall_lead{lead_key(L)}"] = self.recall(L)
        out[f"{prefix}median_lead_s"] = self.median_lead_s
        out[f"{prefix}false_alarms"] = self.false_alarms
        out[f"{prefix}false_alarms_per_workload_hour"] = self.false_alarms_per_hour
        out[f"{prefix}false_alarms_per_workload_day"] = self.false_alarms_per_day
        return out


def run_hours(ts_ms: np.ndarray) -> float:
    """Workload time covered by a run's rows: first to last row plus one step (the median
    spacing of the rows; 1 s for a single row)."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    if len(ts) == 0:
        return 0.0
    step = float(np.median(np.diff(ts))) if len(ts) > 1 else 1000.0
    return (float(ts[-1] - ts[0]) + step) / 3_600_000.0


def summarize_alarms(runs, leads_s=LEADS_S) -> AlarmSummary:
    """``runs``: iterable of (key, ts_ms, alarm_bool, t_f_ms or None)."""
    s = AlarmSummary(predicted={L: 0 for L in leads_s})
    for key, ts, alarm, t_f in runs:
        if t_f is not None:
            s.n_failure_runs += 1
            o = failure_outcome(ts, alarm, t_f, leads_s)
            for L in leads_s:
                s.predicted[L] += int(o.predicted[L])
            if not math.isnan(o.lead_s):
                s.leads_s.append(o.lead_s)
            if 30 in o.predicted and not o.predicted[30]:
                s.missed_runs.append(key)
        else:
            s.n_normal_runs += 1
            s.normal_hours += run_hours(ts)
            n = len(debounced_alarms(ts, alarm))
            s.false_alarms += n
            if n:
                s.false_alarm_runs.append(key)
    return s


def brier(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    return float(np.mean((p - y) ** 2)) if len(y) else math.nan


def ece(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: bins of equal width on [0, 1] (p = 1 in the last),
    weighted by their share of rows."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    if len(y) == 0:
        return math.nan
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(y) * abs(y[m].mean() - p[m].mean())
    return float(total)
