"""Detector behaviour on synthetic data, and the ONNX export of the shipped detector."""

import tempfile
import unittest
from pathlib import Path

import numpy as np

from augur_eval import detectors as D


def correlated(n, rng):
    """Three metrics: a, 2a (+ small noise) and independent noise b."""
    a = rng.normal(size=n)
    return np.column_stack([a, 2 * a + 0.05 * rng.normal(size=n), rng.normal(size=n)])


class Helpers(unittest.TestCase):
    def test_ewma(self):
        np.testing.assert_allclose(D.ewma(np.array([0.0, 1, 1, 1]), 0.5), [0, 0.5, 0.75, 0.875])
        np.testing.assert_allclose(D.ewma(np.array([[2.0, 0], [4, 2]]), 0.5), [[2, 0], [3, 1]])
        np.testing.assert_allclose(D.ewma(np.array([3.0, 1]), 1.0), [3, 1])

    def test_smoothing_alpha(self):
        # after one half-life a step input has moved halfway
        self.assertAlmostEqual(D.smoothing_alpha(1.0, 1.0), 0.5)
        self.assertAlmostEqual((1 - D.smoothing_alpha(1 / 60, 1.0)) ** 60, 0.5)
        self.assertEqual(D.smoothing_alpha(1.0, 0.0), 1.0)

    def test_lag_embed(self):
        np.testing.assert_array_equal(D.lag_embed(np.array([[1.0], [2], [3]]), 2), [[1, 1], [2, 1], [3, 2]])

    def test_standardiser_constant_metric_gets_unit_std(self):
        mean, std = D.standardiser(np.array([[1.0, 5], [3, 5]]))
        np.testing.assert_array_equal(mean, [2, 5])
        np.testing.assert_array_equal(std, [1, 1])


class ShippedDetector(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(0)
        self.train = correlated(4000, rng)
        self.test = correlated(200, rng)

    def test_residual_std_matches_train_residuals(self):
        det = D.ResidualEwma(variance=0.6, residual_floor=1e-9).fit(self.train)
        z = (self.train - det.mean_) / det.std_
        resid = z - z @ det.components_.T @ det.components_
        np.testing.assert_allclose(det.residual_std_, resid.std(axis=0), rtol=1e-9)
        # every metric's scaled residual has unit variance on train: mean error = d
        self.assertAlmostEqual(det.step_error(self.train).mean(), 3.0, places=6)

    def test_broken_correlation_scores_high(self):
        # eigenvalues of the correlation matrix are about 2, 1 and 0: 90 % needs two
        det = D.ResidualEwma(variance=0.9, halflife_minutes=0)
        test = self.test.copy()
        test[100, 1] = -2 * test[100, 0]  # second metric no longer follows the first
        _, score = det.fit_score(self.train, test)
        self.assertEqual(int(np.argmax(score)), 100)
        self.assertEqual(det.params()["components"], 2)

    def test_score_is_causal(self):
        det = D.ResidualEwma(halflife_minutes=3)
        _, a = det.fit_score(self.train, self.test)
        changed = self.test.copy()
        changed[150:] += 10
        _, b = det.fit_score(self.train, changed)
        np.testing.assert_array_equal(a[:150], b[:150])
        self.assertTrue((b[150:] > a[150:]).all())

    def test_same_as_pca_error_when_unscaled_and_unsmoothed(self):
        # with residual std forced to 1 the per-step error is PCA's squared reconstruction error
        det = D.ResidualEwma(halflife_minutes=0).fit(self.train)
        det.residual_std_ = np.ones(3)
        det.weight_ = (np.eye(3) - det.components_.T @ det.components_) / det.std_[None, :]
        det.bias_ = det.weight_ @ det.mean_
        pca = D.PCAError(0.9)
        _, want = pca.fit_score(self.train, self.test)
        np.testing.assert_allclose(det.step_error(self.test), want, rtol=1e-6)

    def test_onnx_export_matches_numpy(self):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            self.skipTest("onnxruntime not installed (run scripts/install-python-deps.sh)")
        import onnx

        from augur_eval import onnx_export

        det = D.ResidualEwma(variance=0.6).fit(self.train)
        model = onnx_export.to_onnx(det, {"train_alarm_threshold": 1.5})
        self.assertLess(onnx_export.check_with_onnxruntime(model, det, self.test), 1e-5)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.onnx"
            onnx.save(model, path)
            meta = {p.key: p.value for p in onnx.load(path).metadata_props}
        self.assertEqual(meta["halflife_seconds"], "60.0")
        self.assertEqual(meta["train_alarm_threshold"], "1.5")


class Baselines(unittest.TestCase):
    def test_random_is_seeded(self):
        a = D.RandomScores(3).fit_score(np.zeros((5, 2)), np.zeros((4, 2)))
        b = D.RandomScores(3).fit_score(np.zeros((5, 2)), np.zeros((4, 2)))
        np.testing.assert_array_equal(a[1], b[1])

    def test_iforest_ranks_outlier_first(self):
        rng = np.random.default_rng(0)
        train = rng.normal(size=(500, 2))
        test = rng.normal(size=(50, 2))
        test[7] = [8, -8]
        _, score = D.IForest(50).fit_score(train, test)
        self.assertEqual(int(np.argmax(score)), 7)

    def test_lag_embedded_pca_flags_a_jump(self):
        t = np.arange(600)
        series = np.sin(2 * np.pi * t / 48)[:, None]
        train, test = series[:400], series[400:].copy()
        test[100] += 3
        _, score = D.LagEmbedded(D.PCAError(0.9), 12).fit_score(train, test)
        # the jump stays in the 12-step window for steps 100..111, and never before
        self.assertIn(int(np.argmax(score)), range(100, 112))
        self.assertLess(score[:100].max(), score[100:112].min())


if __name__ == "__main__":
    unittest.main()
