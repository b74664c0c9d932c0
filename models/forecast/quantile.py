"""The ONNX quantile forecaster's inputs: one definition, mirrored by the aggregator
(`aggregator/src/forecast/onnx_quantile.rs`), checked against it by a shared fixture.

From a regular series ``y`` (oldest first), an origin ``o`` (forecasting from ``y[:o]``)
and a lead ``h`` (steps ahead: the target is ``y[o + h - 1]``):

- ``level = y[o - 1]`` (the last value),
- ``scale = mean |y[o-k] - y[o-k-1]|`` over the last ``LAGS`` points, plus
  ``1e-6 (|level| + 1)`` so a flat series has a usable scale,
- features ``lag_k = (y[o - k] - level) / scale`` for k = 2..LAGS and ``log_lead = ln h``,
- outputs: quantiles of ``(y[o + h - 1] - level) / scale`` (``QUANTILES``); the forecast is
  ``level + scale * output``.

Scale-free on purpose: one model serves bytes, cores and packets per second alike.
"""

from __future__ import annotations

import math

import numpy as np

LAGS = 24
QUANTILES = (0.1, 0.5, 0.9)
SCHEMA_VERSION = 1
FEATURES = [f"lag_{k}" for k in range(2, LAGS + 1)] + ["log_lead"]
OUTPUT_TENSOR = "quantiles"
OUTPUT_COLUMNS = [f"q{q:g}" for q in QUANTILES]
TARGET_CLIP = 50.0


def level_scale(y: np.ndarray, o: int) -> tuple[float, float]:
    w = np.asarray(y[o - LAGS : o], dtype=np.float64)
    level = float(w[-1])
    scale = float(np.mean(np.abs(np.diff(w)))) + 1e-6 * (abs(level) + 1.0)
    return level, scale


def features(y: np.ndarray, o: int, lead: int) -> np.ndarray:
    """The model's input row for origin ``o`` (needs ``o >= LAGS``) and lead ``lead``."""
    if o < LAGS:
        raise ValueError(f"origin {o} needs {LAGS} points before it")
    level, scale = level_scale(y, o)
    lags = [(y[o - k] - level) / scale for k in range(2, LAGS + 1)]
    return np.asarray(lags + [math.log(max(lead, 1))], dtype=np.float32)


def schema(description: str) -> dict:
    return {
        "version": SCHEMA_VERSION,
        "features": FEATURES,
        "windows": {"lags": str(LAGS)},
        "output": {"tensor": OUTPUT_TENSOR, "columns": OUTPUT_COLUMNS, "description": description},
    }
