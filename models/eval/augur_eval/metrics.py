"""The metrics of ``../shared/EVALUATION.md`` section 2, on a time axis in minutes.

Every function takes times ``t`` (minutes, increasing), anomaly scores (higher = more
anomalous, computed causally: the score at ``t`` sees data up to ``t`` only) and labelled
segments (:class:`augur_eval.data.Segment`: onset ``start``, inclusive ``end``).

Per-step (early-warning) view
    ``y_t(H) = 1`` iff an onset lies in ``(t, t + H]``; steps inside a segment are excluded.
    AUC-PR of the score against ``y(H)`` for H = 5, 15, 30, 60 min.

Alarm view
    Alarms are the steps with ``score > threshold``, the threshold fixed on the train split
    (:func:`train_alarm_threshold`). Alarm steps closer than 10 min are merged into one alarm,
    timed at its first step (:func:`debounce`). For an event with onset ``t0``:
    warned early with lead >= H if an alarm starts in ``[t0 - 2 h, t0 - H]``; detected late if
    the first alarm in ``[t0 - 2 h, segment end]`` starts inside the segment. An alarm that
    starts in no event's ``[t0 - 2 h, segment end]`` is false.

Literature view
    Point-wise best-F1 over all thresholds, AUC-PR (average precision) and AUC-ROC against the
    point labels, and the composite F1 of Garg et al. (event-wise recall, point-wise precision),
    best over thresholds. Point-adjusted F1 is deliberately absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from .data import Segment

HORIZONS_MIN = (5, 15, 30, 60)
LOOKBACK_MIN = 120.0
DEBOUNCE_MIN = 10.0
MINUTES_PER_DAY = 1440.0


# ------------------------------------------------------------------------------ events, targets


def onset_times(segments: list[Segment]) -> np.ndarray:
    return np.sort(np.array([s.start for s in segments], dtype=np.float64))


def in_segment_mask(t: np.ndarray, segments: list[Segment]) -> np.ndarray:
    mask = np.zeros(len(t), dtype=bool)
    for seg in segments:
        mask |= (t >= seg.start) & (t <= seg.end)
    return mask


def horizon_targets(t: np.ndarray, segments: list[Segment], horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """``(y, keep)``: y[i] = 1 iff an onset lies in (t[i], t[i] + horizon]; keep = not in a segment."""
    t = np.asarray(t, dtype=np.float64)
    onsets = onset_times(segments)
    y = np.zeros(len(t), dtype=np.int8)
    if len(onsets):
        nxt = np.searchsorted(onsets, t, side="right")  # first onset strictly after t
        has = nxt < len(onsets)
        y[has] = (onsets[nxt[has]] <= t[has] + horizon).astype(np.int8)
    return y, ~in_segment_mask(t, segments)


def _auc_pr(y: np.ndarray, score: np.ndarray) -> float:
    if y.sum() == 0 or y.sum() == len(y):
        return math.nan
    return float(average_precision_score(y, score))


def per_step_auc_pr(t: np.ndarray, score: np.ndarray, segments: list[Segment], horizon: float) -> float:
    """AUC-PR of the score against y(H) over the steps outside segments; NaN without positives."""
    y, keep = horizon_targets(t, segments, horizon)
    return _auc_pr(y[keep], np.asarray(score)[keep])


# ---------------------------------------------------------------------------------- alarm view


def debounce(alarm_t: np.ndarray, gap: float = DEBOUNCE_MIN) -> np.ndarray:
    """Merge alarm times closer than ``gap`` into one alarm; return (start, end) rows."""
    alarm_t = np.sort(np.asarray(alarm_t, dtype=np.float64))
    if len(alarm_t) == 0:
        return np.zeros((0, 2))
    breaks = np.flatnonzero(np.diff(alarm_t) >= gap)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(alarm_t) - 1]))
    return np.stack([alarm_t[starts], alarm_t[ends]], axis=1)


def alarms(t: np.ndarray, score: np.ndarray, threshold: float, gap: float = DEBOUNCE_MIN) -> np.ndarray:
    """Start times of the debounced alarms of ``score > threshold``."""
    return debounce(np.asarray(t)[np.asarray(score) > threshold], gap)[:, 0]


def span_days(t: np.ndarray, step_minutes: float) -> float:
    return (float(t[-1] - t[0]) + step_minutes) / MINUTES_PER_DAY


def train_alarm_threshold(
    t: np.ndarray,
    score: np.ndarray,
    step_minutes: float,
    budget_per_day: float = 1.0,
    gap: float = DEBOUNCE_MIN,
) -> float:
    """Lowest threshold whose debounced alarms on the (normal-dominated) train split stay
    within ``budget_per_day``, scanning candidate quantiles downwards from the maximum and
    stopping at the first one over budget. Candidates are train scores at 240 quantile levels
    between 0.8 and 1 - 1e-6 (alarms are ``score > threshold``). Uses no labels.
    """
    score = np.asarray(score, dtype=np.float64)
    days = span_days(t, step_minutes)
    levels = 1.0 - np.logspace(-6, np.log10(0.2), 240)
    candidates = np.unique(np.quantile(score, levels, method="lower"))[::-1]
    best = float(score.max())
    for thr in candidates:
        if thr >= best:
            continue
        if len(alarms(t, score, thr, gap)) / days > budget_per_day:
            break
        best = float(thr)
    return best


@dataclass
class AlarmOutcome:
    early: dict  # horizon -> bool per event (np.ndarray)
    warned: np.ndarray  # an alarm in [t0 - lookback, t0)
    late: np.ndarray  # first alarm in [t0 - lookback, end] lies inside the segment
    lead: np.ndarray  # t0 - earliest alarm in [t0 - lookback, t0), NaN otherwise
    delay: np.ndarray  # first alarm in the segment - t0 for late events, NaN otherwise
    n_false: int
    n_alarms: int


def alarm_outcome(
    alarm_starts: np.ndarray,
    segments: list[Segment],
    horizons=HORIZONS_MIN,
    lookback: float = LOOKBACK_MIN,
) -> AlarmOutcome:
    a = np.sort(np.asarray(alarm_starts, dtype=np.float64))
    n = len(segments)
    early = {h: np.zeros(n, dtype=bool) for h in horizons}
    warned = np.zeros(n, dtype=bool)
    late = np.zeros(n, dtype=bool)
    lead = np.full(n, math.nan)
    delay = np.full(n, math.nan)
    attributed = np.zeros(len(a), dtype=bool)
    for i, seg in enumerate(segments):
        t0 = seg.start
        in_window = (a >= t0 - lookback) & (a <= seg.end)
        attributed |= in_window
        if not in_window.any():
            continue
        before = a[(a >= t0 - lookback) & (a < t0)]
        for h in horizons:
            early[h][i] = bool(((before <= t0 - h)).any())
        if len(before):
            warned[i] = True
            lead[i] = t0 - before.min()
        else:
            late[i] = True
            delay[i] = a[in_window].min() - t0
    return AlarmOutcome(early, warned, late, lead, delay, int((~attributed).sum()), len(a))


def test_budget_threshold(
    t: np.ndarray,
    score: np.ndarray,
    segments: list[Segment],
    step_minutes: float,
    budget_per_day: float = 1.0,
    gap: float = DEBOUNCE_MIN,
) -> float:
    """Lowest threshold whose *false* alarms on test stay within ``budget_per_day`` (scanning
    downwards, stopping at the first candidate over budget). Uses the test labels to tell
    false alarms apart, so it is a comparison at equal false-alarm rate, like best-F1, never
    an operating point.
    """
    score = np.asarray(score, dtype=np.float64)
    days = span_days(t, step_minutes)
    levels = 1.0 - np.logspace(-6, np.log10(0.2), 240)
    candidates = np.unique(np.quantile(score, levels, method="lower"))[::-1]
    best = float(score.max())
    for thr in candidates:
        if thr >= best:
            continue
        out = alarm_outcome(alarms(t, score, thr, gap), segments, horizons=())
        if out.n_false / days > budget_per_day:
            break
        best = float(thr)
    return best


# ----------------------------------------------------------------------------- literature view


def f1_curve(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 for every distinct threshold ``score >= thr`` (descending)."""
    score = np.asarray(score, dtype=np.float64)
    label = np.asarray(label).astype(bool)
    order = np.argsort(-score, kind="mergesort")
    s = score[order]
    tp = np.cumsum(label[order])
    fp = np.cumsum(~label[order])
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # last index of each distinct value
    tp, fp, thr = tp[last].astype(np.float64), fp[last].astype(np.float64), s[last]
    positives = float(label.sum())
    precision = tp / (tp + fp)
    recall = tp / positives if positives else np.zeros_like(tp)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return thr, precision, recall, f1


def best_f1(score: np.ndarray, label: np.ndarray) -> dict:
    """Point-wise best F1 over all thresholds (the literature comparison; uses test labels)."""
    thr, p, r, f1 = f1_curve(score, label)
    i = int(np.argmax(f1))
    return {"f1": float(f1[i]), "precision": float(p[i]), "recall": float(r[i]), "threshold": float(thr[i])}


def point_f1(score: np.ndarray, label: np.ndarray, threshold: float) -> float:
    """Point-wise F1 of ``score > threshold``."""
    pred = np.asarray(score) > threshold
    label = np.asarray(label).astype(bool)
    tp = float((pred & label).sum())
    if tp == 0:
        return 0.0
    return 2 * tp / (pred.sum() + label.sum())


def auc_pr(score: np.ndarray, label: np.ndarray) -> float:
    return _auc_pr(np.asarray(label), np.asarray(score))


def auc_roc(score: np.ndarray, label: np.ndarray) -> float:
    label = np.asarray(label)
    if label.sum() == 0 or label.sum() == len(label):
        return math.nan
    return float(roc_auc_score(label, score))


def segment_max_scores(t: np.ndarray, score: np.ndarray, segments: list[Segment]) -> np.ndarray:
    out = np.full(len(segments), -np.inf)
    for i, seg in enumerate(segments):
        inside = (t >= seg.start) & (t <= seg.end)
        if inside.any():
            out[i] = np.max(score[inside])
    return out


def composite_f1(t: np.ndarray, score: np.ndarray, label: np.ndarray, segments: list[Segment]) -> dict:
    """Best over thresholds of F1(event-wise recall, point-wise precision) (Garg et al. 2021).

    An event counts as found at threshold ``thr`` when any of its points has ``score >= thr``.
    """
    if not segments:
        return {"f1": math.nan, "event_recall": math.nan, "precision": math.nan}
    thr, p, _, _ = f1_curve(score, label)
    seg_max = np.sort(segment_max_scores(np.asarray(t), np.asarray(score), segments))
    # events found at thr = number of segment maxima >= thr
    found = len(seg_max) - np.searchsorted(seg_max, thr, side="left")
    er = found / len(seg_max)
    denom = p + er
    f1 = np.divide(2 * p * er, denom, out=np.zeros_like(denom), where=denom > 0)
    i = int(np.argmax(f1))
    return {"f1": float(f1[i]), "event_recall": float(er[i]), "precision": float(p[i])}
