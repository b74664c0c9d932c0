"""Loaders for the real labelled data sets in ``../shared/data`` (never copied into the repo).

Both loaders return :class:`Series` objects on one time axis in minutes, so every metric in
:mod:`augur_eval.metrics` works on real time (horizons, debounce gaps, host-days) rather than
on row counts:

* SMD (Server Machine Dataset): 1 sample per minute, 38 metrics already min-max scaled by the
  authors. ``train.csv.gz`` is the unlabelled train split; ``test.csv.gz`` has ``label``.
  Segments are runs of ``label == 1``; an event's onset is the first 1 of a run.
* NAB realAWSCloudwatch: univariate raw-unit series at 5-minute steps. The first 15 % of each
  series (NAB's probationary period) is the train split, the rest is test. Each timestamp in
  ``labels.json`` is an onset; its segment runs from the onset to the end of the NAB window
  that contains it (the post-onset half of NAB's scoring window), cut short at the next onset.
  A label outside every window (one such case in the file set) gets half the median window
  width of its file.

The data directory is ``$AUGUR_DATA_DIR`` or ``<repo>/../shared/data``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[3]
NAB_PROBATION_FRACTION = 0.15


def data_dir() -> Path:
    """Where the shared data sets live: ``$AUGUR_DATA_DIR`` or ``<repo>/../shared/data``."""
    env = os.environ.get("AUGUR_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@dataclass
class Segment:
    """A labelled anomaly on the test time axis: onset at ``start``, inclusive ``end`` (minutes)."""

    start: float
    end: float


@dataclass
class Series:
    """One host (SMD machine) or one NAB series, split into train and test.

    ``train_x``/``test_x`` are (n, d) float arrays; ``*_t`` are times in minutes, increasing.
    ``test_label`` is the point-wise 0/1 label; ``segments`` the labelled events on test.
    """

    name: str
    columns: list[str]
    train_t: np.ndarray
    train_x: np.ndarray
    test_t: np.ndarray
    test_x: np.ndarray
    test_label: np.ndarray
    segments: list[Segment] = field(default_factory=list)
    step_minutes: float = 1.0
    notes: list[str] = field(default_factory=list)


def segments_from_labels(t: np.ndarray, label: np.ndarray) -> list[Segment]:
    """Runs of consecutive 1s in ``label`` as segments [time of first 1, time of last 1]."""
    label = np.asarray(label).astype(np.int8)
    padded = np.concatenate(([0], label, [0]))
    diff = np.diff(padded)
    starts = np.flatnonzero(diff == 1)
    ends = np.flatnonzero(diff == -1) - 1
    return [Segment(float(t[s]), float(t[e])) for s, e in zip(starts, ends)]


def label_from_segments(t: np.ndarray, segments: list[Segment]) -> np.ndarray:
    """Point-wise 0/1 label: 1 where ``start <= t <= end`` for some segment."""
    label = np.zeros(len(t), dtype=np.int8)
    for seg in segments:
        label[(t >= seg.start) & (t <= seg.end)] = 1
    return label


# ----------------------------------------------------------------------------------------- SMD


def smd_machines(root: Path | None = None) -> list[Path]:
    root = (root or data_dir()) / "smd"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "train.csv.gz").is_file() and (p / "test.csv.gz").is_file())


def load_smd_machine(path: Path) -> Series:
    train = pd.read_csv(path / "train.csv.gz")
    test = pd.read_csv(path / "test.csv.gz")
    columns = [c for c in train.columns if c != "t"]
    if [c for c in test.columns if c not in ("t", "label")] != columns:
        raise ValueError(f"{path}: train and test columns differ")
    test_t = test["t"].to_numpy(dtype=np.float64)
    label = test["label"].to_numpy(dtype=np.int8)
    return Series(
        name=path.name,
        columns=columns,
        train_t=train["t"].to_numpy(dtype=np.float64),
        train_x=train[columns].to_numpy(dtype=np.float64),
        test_t=test_t,
        test_x=test[columns].to_numpy(dtype=np.float64),
        test_label=label,
        segments=segments_from_labels(test_t, label),
        step_minutes=1.0,
    )


def load_smd(root: Path | None = None) -> list[Series]:
    return [load_smd_machine(p) for p in smd_machines(root)]


# ----------------------------------------------------------------------------------------- NAB

NAB_CORPUS = "realAWSCloudwatch"


def nab_files(root: Path | None = None) -> list[str]:
    """Keys of ``labels.json`` for the realAWSCloudwatch series present on disk."""
    root = (root or data_dir()) / "nab"
    labels_path = root / "labels.json"
    if not labels_path.is_file():
        return []
    labels = json.loads(labels_path.read_text())
    return sorted(k for k in labels if k.startswith(NAB_CORPUS + "/") and (root / k).is_file())


def _minutes(ts: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Datetimes as float minutes since the Unix epoch."""
    ns = pd.DatetimeIndex(ts).as_unit("ns").asi8
    return ns.astype(np.float64) / 60e9


def nab_segments(onsets: list[float], windows: list[tuple[float, float]]) -> list[Segment]:
    """Onset of each label to the end of its NAB window, cut short at the next onset.

    A label inside no window gets half the median window width (its file's windows).
    """
    onsets = sorted(onsets)
    widths = [b - a for a, b in windows]
    fallback = float(np.median(widths)) / 2 if widths else 0.0
    segments = []
    for i, t0 in enumerate(onsets):
        containing = [b for a, b in windows if a <= t0 <= b]
        end = max(containing) if containing else t0 + fallback
        if i + 1 < len(onsets):
            end = min(end, onsets[i + 1] - 1e-6)
        segments.append(Segment(t0, end))
    return segments


def load_nab_series(key: str, root: Path | None = None) -> Series:
    root = (root or data_dir()) / "nab"
    labels = json.loads((root / "labels.json").read_text())[key]
    windows = json.loads((root / "windows.json").read_text()).get(key, [])
    df = pd.read_csv(root / key, parse_dates=["timestamp"])
    notes = []
    df = df.sort_values("timestamp", kind="stable")
    dup = int(df["timestamp"].duplicated().sum())
    if dup:
        df = df.drop_duplicates("timestamp", keep="first")
        notes.append(f"dropped {dup} rows with duplicate timestamps")
    t = _minutes(df["timestamp"])
    x = df["value"].to_numpy(dtype=np.float64)[:, None]
    n_train = int(np.floor(NAB_PROBATION_FRACTION * len(df)))
    onsets = [float(v) for v in _minutes(pd.to_datetime(labels))] if labels else []
    wins = [(float(a), float(b)) for a, b in zip(_minutes(pd.to_datetime([w[0] for w in windows])),
                                                  _minutes(pd.to_datetime([w[1] for w in windows])))] if windows else []
    # An onset between two samples is moved to the next sample (the first step that shows it).
    test_t = t[n_train:]
    snapped = []
    for t0 in onsets:
        j = np.searchsorted(test_t, t0 - 1e-9)
        if j >= len(test_t):
            notes.append(f"label {t0} after the last sample, ignored")
            continue
        if t0 < test_t[0]:
            notes.append("label in the probationary (train) period, ignored")
            continue
        snapped.append(float(test_t[j]))
    segments = nab_segments(snapped, wins)
    return Series(
        name=key.split("/", 1)[1].removesuffix(".csv"),
        columns=["value"],
        train_t=t[:n_train],
        train_x=x[:n_train],
        test_t=test_t,
        test_x=x[n_train:],
        test_label=label_from_segments(test_t, segments),
        segments=segments,
        step_minutes=5.0,
        notes=notes,
    )


def load_nab(root: Path | None = None) -> list[Series]:
    return [load_nab_series(k, root) for k in nab_files(root)]
