"""Platt scaling, and the calibrated ONNX graph equals the Python calibrated model."""

import json
import unittest

import lightgbm
import numpy as np
import onnxruntime as ort

from augur_train import calibrate

SCHEMA = {
    "version": 1,
    "features": ["a", "b", "c", "d"],
    "windows": {"w": "1s"},
    "output": {"tensor": "probabilities", "columns": ["p_normal", "p_failure"], "description": ""},
}


class Platt(unittest.TestCase):
    def test_recovers_known_parameters(self):
        rng = np.random.default_rng(1)
        s = rng.normal(0, 3, 200_000)
        y = (rng.uniform(size=len(s)) < calibrate.sigmoid(0.5 * s - 1.0)).astype(int)
        a, b = calibrate.fit_platt(s, y)
        self.assertAlmostEqual(a, 0.5, delta=0.02)
        self.assertAlmostEqual(b, -1.0, delta=0.03)

    def test_separable_data_stays_finite(self):
        a, b = calibrate.fit_platt(np.array([-2.0, -1.0, 1.0, 2.0]), np.array([0, 0, 1, 1]))
        self.assertTrue(np.isfinite(a) and np.isfinite(b) and a > 0)

    def test_sigmoid_is_stable(self):
        p = calibrate.sigmoid(np.array([-1000.0, 0.0, 1000.0]))
        self.assertEqual(p.tolist(), [0.0, 0.5, 1.0])


class FoldedOnnx(unittest.TestCase):
    def test_onnx_equals_python_calibration(self):
        rng = np.random.default_rng(7)
        x = rng.normal(size=(3000, 4)).astype(np.float32)
        x[rng.uniform(size=x.shape) < 0.1] = np.nan
        y = ((np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) + rng.normal(0, 0.5, len(x))) > 0.8).astype(int)
        clf = lightgbm.LGBMClassifier(n_estimators=30, num_leaves=7, random_state=3, deterministic=True, force_row_wise=True, n_jobs=1, verbose=-1)
        clf.fit(x[:2000], y[:2000])
        a, b = calibrate.fit_platt(clf.predict_proba(x[2000:2500], raw_score=True), y[2000:2500])
        model = calibrate.lightgbm_to_calibrated_onnx(clf, 4, a, b, SCHEMA, "t", "test")
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        probe = np.vstack([x[2500:], np.full((1, 4), np.nan, np.float32)])
        out = sess.run(None, {"features": probe})
        self.assertEqual([o.name for o in sess.get_outputs()], ["probabilities"])
        [probs] = out
        self.assertEqual(probs.shape, (len(probe), 2))
        py = calibrate.apply_platt(clf.predict_proba(probe, raw_score=True), a, b)
        np.testing.assert_allclose(probs[:, 1], py, atol=1e-5)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
        # the calibration changed something (it is not the identity)
        self.assertGreater(np.max(np.abs(py - clf.predict_proba(probe)[:, 1])), 1e-3)
        meta = {p.key: p.value for p in model.metadata_props}
        self.assertEqual(json.loads(meta["augur.feature_schema"]), SCHEMA)
        self.assertEqual(model.graph.input[0].name, "features")
        self.assertLessEqual(max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 15)


if __name__ == "__main__":
    unittest.main()
