"""Aggregation and output of the harness, and one host evaluated end to end on toy data."""

import json
import math
import unittest

import numpy as np

from augur_eval import harness
from augur_eval.data import Segment, Series, label_from_segments


def toy_series(segments):
    t_train = np.arange(2880, dtype=float)
    t_test = np.arange(2880, 5760, dtype=float)
    return Series(
        name="toy",
        columns=["a"],
        train_t=t_train,
        train_x=np.zeros((2880, 1)),
        test_t=t_test,
        test_x=np.zeros((2880, 1)),
        test_label=label_from_segments(t_test, segments),
        segments=segments,
    )


class Aggregation(unittest.TestCase):
    def test_mean_row(self):
        rows = [
            {"n_events": 2, "best_f1": 0.5, "auc_roc": math.nan, "median_lead_min": 10.0, "_leads": [10.0],
             "alarms": 3, "false_alarms": 1, "test_days": 1.0},
            {"n_events": 1, "best_f1": 0.7, "auc_roc": 0.8, "median_lead_min": 25.0, "_leads": [20.0, 30.0],
             "alarms": 2, "false_alarms": 2, "test_days": 2.0},
        ]
        m = harness.mean_row(rows)
        self.assertEqual(m["n_hosts"], 2)
        self.assertEqual(m["n_events"], 3)  # summed
        self.assertEqual(m["test_days"], 3.0)
        self.assertAlmostEqual(m["best_f1"], 0.6)  # mean
        self.assertAlmostEqual(m["auc_roc"], 0.8)  # NaN host skipped
        self.assertEqual(m["median_lead_min"], 20.0)  # median of pooled 10, 20, 30
        self.assertNotIn("_leads", m)

    def test_json_line(self):
        line = harness.json_line({"eval": "smd", "x": math.nan, "y": 0.123456, "n": np.int64(3), "_private": 1})
        self.assertEqual(json.loads(line), {"eval": "smd", "x": None, "y": 0.1235, "n": 3})


class EvaluateHost(unittest.TestCase):
    def test_perfect_detector(self):
        seg = Segment(4000, 4009)
        series = toy_series([seg])
        train_score = np.zeros(2880)
        test_score = np.zeros(2880)
        test_score[4000 - 2880: 4010 - 2880] = 1.0
        row = harness.evaluate_host(series, train_score, test_score)
        self.assertEqual(row["best_f1"], 1.0)
        self.assertEqual(row["auc_pr"], 1.0)
        self.assertEqual(row["composite_f1"], 1.0)
        self.assertEqual(row["f1_at_train_threshold"], 1.0)  # threshold 0 from the flat train scores
        self.assertEqual(row["false_alarms"], 0)
        self.assertEqual(row["detected_recall"], 1.0)
        self.assertEqual(row["late_recall"], 1.0)
        self.assertEqual(row["median_delay_min"], 0.0)
        self.assertEqual(row["ew_recall_h5"], 0.0)
        self.assertEqual(row["test_days"], 2.0)

    def test_host_without_events(self):
        series = toy_series([])
        rng = np.random.default_rng(0)
        row = harness.evaluate_host(series, rng.random(2880), rng.random(2880))
        self.assertTrue(math.isnan(row["best_f1"]))
        self.assertTrue(math.isnan(row["ew_recall_h15"]))
        self.assertEqual(row["alarms"], row["false_alarms"])
        self.assertLessEqual(row["at1fa_false_alarms_per_day"], 1.0)


if __name__ == "__main__":
    unittest.main()
