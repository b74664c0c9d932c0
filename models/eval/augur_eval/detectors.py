"""Detectors run under the same harness: baselines and candidates.

A detector is fitted on the train split only and then scores train and test as one causal
stream (test continues where train ended, as both splits are consecutive in time): the score
at step i depends on rows <= i only. ``fit_score(train_x, test_x)`` returns
``(train_scores, test_scores)``; the train scores set the alarm threshold.
"""

from __future__ import annotations

import abc

import numpy as np
from scipy.signal import lfilter
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest

SEED = 0


class Detector(abc.ABC):
    name = "detector"

    @abc.abstractmethod
    def fit_score(self, train_x: np.ndarray, test_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores for train and test (see the module docs)."""

    def params(self) -> dict:
        return {}


def standardiser(train_x: np.ndarray, min_std: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Per-metric mean and std on train; a metric constant on train gets std 1 (sklearn's rule)."""
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0)
    std = np.where(std < min_std, 1.0, std)
    return mean, std


def ewma(x: np.ndarray, alpha: float) -> np.ndarray:
    """Causal exponentially weighted mean along axis 0: m_0 = x_0, m_i = m_{i-1} + a (x_i - m_{i-1})."""
    x = np.asarray(x, dtype=np.float64)
    if alpha >= 1.0:
        return x.copy()
    out, _ = lfilter([alpha], [1.0, alpha - 1.0], x, axis=0, zi=(1 - alpha) * x[:1])
    return out


def alpha_for_halflife(halflife_steps: float) -> float:
    return 1.0 - 0.5 ** (1.0 / halflife_steps)


def smoothing_alpha(step_minutes: float, halflife_minutes: float) -> float:
    """EWMA weight of a new sample for a half-life in wall time; 1 (no smoothing) if 0."""
    if halflife_minutes <= 0:
        return 1.0
    return 1.0 - 0.5 ** (step_minutes / halflife_minutes)


def lag_embed(x: np.ndarray, lags: int) -> np.ndarray:
    """(n, d) -> (n, d * lags): row i holds rows i, i-1, ..., i-lags+1 (the first row repeats)."""
    n = len(x)
    idx = np.arange(n)[:, None] - np.arange(lags)[None, :]
    idx = np.clip(idx, 0, None)
    return x[idx].reshape(n, -1)


class RandomScores(Detector):
    name = "random"

    def __init__(self, seed: int = SEED):
        self.seed = seed

    def fit_score(self, train_x, test_x):
        rng = np.random.default_rng(self.seed)
        return rng.random(len(train_x)), rng.random(len(test_x))

    def params(self):
        return {"seed": self.seed}


class PCAError(Detector):
    """Squared reconstruction error of train-standardised rows, components for 90 % variance."""

    name = "pca_error"

    def __init__(self, variance: float = 0.9):
        self.variance = variance

    def fit(self, train_x):
        self.mean_, self.std_ = standardiser(train_x)
        z = (train_x - self.mean_) / self.std_
        self.pca_ = PCA(n_components=self.variance, svd_solver="full", random_state=SEED).fit(z)
        return self

    def residual(self, x):
        z = (x - self.mean_) / self.std_
        zc = z - self.pca_.mean_
        proj = zc @ self.pca_.components_.T @ self.pca_.components_
        return zc - proj

    def fit_score(self, train_x, test_x):
        self.fit(train_x)
        return (self.residual(train_x) ** 2).sum(1), (self.residual(test_x) ** 2).sum(1)

    def params(self):
        return {"variance": self.variance, "components": int(self.pca_.n_components_)}


class IForest(Detector):
    name = "iforest"

    def __init__(self, trees: int = 200, seed: int = SEED):
        self.trees = trees
        self.seed = seed

    def fit_score(self, train_x, test_x):
        model = IsolationForest(n_estimators=self.trees, random_state=self.seed, n_jobs=1).fit(train_x)
        return -model.score_samples(train_x), -model.score_samples(test_x)

    def params(self):
        return {"trees": self.trees, "seed": self.seed}


class ResidualEwma(Detector):
    """The shipped detector (see ``models/eval/DETECTOR.md``): PCA residual per metric, each
    scaled by its own train residual std, squared and summed, then smoothed by a causal EWMA.

    Everything is a function of the per-host mean vector and covariance matrix, so the Rust
    aggregator can learn it online from streaming moments:

    1. ``z = (x - mean) / std`` (std < 1e-6 -> 1), ``C`` = covariance of ``z`` (= correlation).
    2. ``V`` = top-k eigenvectors of ``C``, k smallest with >= ``variance`` of the trace.
    3. ``r = (I - V V^T) z``; residual std ``s_j = sqrt(diag((I - P) C (I - P)))_j``,
       floored at ``residual_floor``.
    4. ``e_t = sum_j (r_j / s_j)^2``; score ``m_t = m_{t-1} + alpha (e_t - m_{t-1})`` with
       ``alpha = 1 - 0.5 ** (step / halflife)``.
    """

    name = "shipped"

    def __init__(
        self,
        variance: float = 0.9,
        residual_floor: float = 0.1,
        halflife_minutes: float = 1.0,
        step_minutes: float = 1.0,
    ):
        self.variance = variance
        self.residual_floor = residual_floor
        self.halflife_minutes = halflife_minutes
        self.step_minutes = step_minutes

    def fit(self, train_x: np.ndarray) -> "ResidualEwma":
        self.mean_, self.std_ = standardiser(train_x)
        z = (train_x - self.mean_) / self.std_
        cov = np.cov(z, rowvar=False, bias=True)
        cov = np.atleast_2d(cov)
        eigval, eigvec = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1]
        eigval, eigvec = np.clip(eigval[order], 0.0, None), eigvec[:, order]
        if eigval.sum() > 0:
            share = np.cumsum(eigval) / eigval.sum()
            k = min(int(np.searchsorted(share, self.variance - 1e-12) + 1), len(eigval))
        else:  # every metric constant on train: no components, the floor scales everything
            k = 0
        self.components_ = eigvec[:, :k].T  # (k, d)
        d = len(eigval)
        resid_op = np.eye(d) - self.components_.T @ self.components_
        resid_var = np.diag(resid_op @ cov @ resid_op)
        self.residual_std_ = np.maximum(np.sqrt(np.clip(resid_var, 0.0, None)), self.residual_floor)
        # One affine map: r / s = W x - b
        self.weight_ = (resid_op / self.residual_std_[:, None]) / self.std_[None, :]
        self.bias_ = self.weight_ @ self.mean_
        return self

    def step_error(self, x: np.ndarray) -> np.ndarray:
        """Unsmoothed per-step error e_t (what the ONNX export computes)."""
        r = x @ self.weight_.T - self.bias_
        return (r**2).sum(axis=1)

    @property
    def alpha(self) -> float:
        return smoothing_alpha(self.step_minutes, self.halflife_minutes)

    def fit_score(self, train_x, test_x):
        self.fit(train_x)
        score = ewma(self.step_error(np.vstack([train_x, test_x])), self.alpha)
        return score[: len(train_x)], score[len(train_x):]

    def params(self):
        return {
            "variance": self.variance,
            "components": int(self.components_.shape[0]),
            "residual_floor": self.residual_floor,
            "halflife_minutes": self.halflife_minutes,
        }


class Smoothed(Detector):
    """Causal EWMA of another detector's score (a variant, not a baseline)."""

    def __init__(self, inner: Detector, halflife_minutes: float, step_minutes: float = 1.0, name: str | None = None):
        self.inner = inner
        self.halflife_minutes = halflife_minutes
        self.step_minutes = step_minutes
        self.name = name or f"{inner.name}_ewma{halflife_minutes:g}"

    def fit_score(self, train_x, test_x):
        tr, te = self.inner.fit_score(train_x, test_x)
        both = ewma(np.concatenate([tr, te]), smoothing_alpha(self.step_minutes, self.halflife_minutes))
        return both[: len(tr)], both[len(tr):]

    def params(self):
        return {**self.inner.params(), "halflife_minutes": self.halflife_minutes}


class MaxRobustZ(Detector):
    """max_j |x_j - median_j| / max(1.4826 MAD_j, floor), medians and MADs on train (a variant)."""

    name = "max_robust_z"

    def __init__(self, floor: float = 0.05):
        self.floor = floor

    def fit_score(self, train_x, test_x):
        med = np.median(train_x, axis=0)
        scale = np.maximum(1.4826 * np.median(np.abs(train_x - med), axis=0), self.floor)
        return (np.abs(train_x - med) / scale).max(1), (np.abs(test_x - med) / scale).max(1)

    def params(self):
        return {"floor": self.floor}


class GeometricMean(Detector):
    """sqrt(score_a * score_b) of two detectors (a variant: residual error x max robust z)."""

    def __init__(self, a: Detector, b: Detector, name: str):
        self.a, self.b, self.name = a, b, name

    def fit_score(self, train_x, test_x):
        a_tr, a_te = self.a.fit_score(train_x, test_x)
        b_tr, b_te = self.b.fit_score(train_x, test_x)
        return np.sqrt(np.maximum(a_tr * b_tr, 0)), np.sqrt(np.maximum(a_te * b_te, 0))

    def params(self):
        return {"a": self.a.params(), "b": self.b.params()}


class LagEmbedded(Detector):
    """Runs a multivariate detector on a lag embedding (for univariate series such as NAB)."""

    def __init__(self, inner: Detector, lags: int):
        self.inner = inner
        self.lags = lags
        self.name = inner.name

    def fit_score(self, train_x, test_x):
        both = lag_embed(np.vstack([train_x, test_x]), self.lags)
        return self.inner.fit_score(both[: len(train_x)], both[len(train_x):])

    def params(self):
        return {**self.inner.params(), "lags": self.lags}
