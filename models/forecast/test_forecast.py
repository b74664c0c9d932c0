"""The quantile forecaster's inputs, resampling and manifest handling (pure parts)."""

import tempfile
import unittest
from pathlib import Path

import numpy as np

import quantile as qf
import train


class Inputs(unittest.TestCase):
    def test_scale_free(self):
        y = np.sin(np.arange(40) / 3.0) * 5 + np.arange(40) * 0.2
        a = qf.features(y, 30, 6)
        b = qf.features(1000.0 * y + 500.0, 30, 6)  # units and offset do not matter
        self.assertEqual(len(a), len(qf.FEATURES))
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
        self.assertAlmostEqual(float(a[-1]), np.log(6), places=6)

    def test_flat_series_has_a_usable_scale(self):
        y = np.full(30, 5.0)
        level, scale = qf.level_scale(y, 30)
        self.assertEqual(level, 5.0)
        self.assertGreater(scale, 0)
        self.assertTrue(np.all(qf.features(y, 30, 1)[:-1] == 0))

    def test_needs_lags(self):
        with self.assertRaises(ValueError):
            qf.features(np.zeros(100), qf.LAGS - 1, 1)


class Series(unittest.TestCase):
    def test_counter_rate_skips_resets(self):
        self.assertEqual(train.counter_rate([0, 1000, 2000, 4000], [10.0, 12.0, 1.0, 5.0]), ([1000, 4000], [2.0, 2.0]))

    def test_grid_means_and_interpolates_gaps(self):
        ts = [10_000, 15_000, 40_000]
        g = train.grid(ts, [1.0, 3.0, 8.0])
        np.testing.assert_allclose(g, [2.0, 4.0, 6.0, 8.0])

    def test_split_is_deterministic_by_series(self):
        keys = [f"k{i}" for i in range(500)]
        a = [train.is_test(k) for k in keys]
        self.assertEqual(a, [train.is_test(k) for k in keys])
        self.assertTrue(0.1 < sum(a) / len(a) < 0.3)


class Manifest(unittest.TestCase):
    def test_replaces_its_entry_and_keeps_others(self):
        with tempfile.TemporaryDirectory() as tmp:
            m = Path(tmp) / "manifest.toml"
            m.write_text('format = 1\n\n[[model]]\nname = "memory-exhaustion-2m"\nkind = "failure_probability"\n\n'
                         '[[model]]\nname = "forecast-quantile"\nkind = "forecast"\nversion = "old"\n')
            out = train.manifest_with(m, '[[model]]\nname = "forecast-quantile"\nkind = "forecast"\nversion = "new"\n')
            self.assertEqual(out.count("[[model]]"), 2)
            self.assertIn('name = "memory-exhaustion-2m"', out)
            self.assertIn('version = "new"', out)
            self.assertNotIn('version = "old"', out)


if __name__ == "__main__":
    unittest.main()
