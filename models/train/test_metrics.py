"""Lead-time recall, false alarms, Brier/ECE and the operating-point choice on hand-made cases."""

import math
import unittest

import numpy as np

from augur_train import data, evaluate, metrics

S = 1000  # ms


def ts(start_s, end_s):
    return np.arange(start_s * S, end_s * S, S, dtype=np.int64)


class FailureOutcome(unittest.TestCase):
    def test_alarm_40s_before(self):
        t = ts(0, 100)
        t_f = 100 * S
        alarm = t >= 60 * S  # first alarm 40 s before the failure
        o = metrics.failure_outcome(t, alarm, t_f)
        self.assertEqual(o.predicted, {10: True, 30: True, 60: False, 300: False})
        self.assertEqual(o.lead_s, 40.0)

    def test_lead_boundaries_are_inclusive(self):
        t = ts(0, 100)
        alarm = t == 70 * S  # exactly t_f - 30 s
        o = metrics.failure_outcome(t, alarm, 100 * S)
        self.assertTrue(o.predicted[30])
        self.assertFalse(o.predicted[60])
        self.assertEqual(o.lead_s, 30.0)

    def test_alarm_older_than_30_min_does_not_count(self):
        t = ts(0, 4000)
        t_f = 4000 * S
        alarm = t < 100 * S  # an hour before
        o = metrics.failure_outcome(t, alarm, t_f)
        self.assertFalse(any(o.predicted.values()))
        self.assertTrue(math.isnan(o.lead_s))
        # ... but one inside the window does, and the lead is from the window's first alarm
        alarm2 = alarm | (t >= t_f - 1800 * S)
        o2 = metrics.failure_outcome(t, alarm2, t_f)
        self.assertTrue(o2.predicted[300])
        self.assertEqual(o2.lead_s, 1800.0)

    def test_too_late(self):
        t = ts(0, 100)
        o = metrics.failure_outcome(t, t >= 95 * S, 100 * S)
        self.assertEqual(o.predicted, {10: False, 30: False, 60: False, 300: False})
        self.assertEqual(o.lead_s, 5.0)


class FalseAlarms(unittest.TestCase):
    def test_debounce_merges_alarms_closer_than_10_min(self):
        t = ts(0, 3600)
        alarm = np.zeros(len(t), bool)
        alarm[[10, 20, 500, 1200, 1300, 2000]] = True
        # 10, 20, 500 -> one; 1200, 1300 (700 s after 500) -> a new one; 2000 (700 s after 1300) -> new
        starts = metrics.debounced_alarms(t, alarm)
        self.assertEqual((starts // S).tolist(), [10, 1200, 2000])

    def test_rates_per_workload_hour_and_day(self):
        t = ts(0, 1800)  # half an hour each
        runs = [
            ("a", t, t == 100 * S, None),  # one false alarm
            ("b", t, np.zeros(len(t), bool), None),
            ("c", t, t >= 1700 * S, 1800 * S),  # predicted, lead 100 s
            ("d", t, np.zeros(len(t), bool), 1800 * S),  # missed
        ]
        s = metrics.summarize_alarms(runs)
        self.assertEqual((s.n_failure_runs, s.n_normal_runs), (2, 2))
        self.assertAlmostEqual(s.normal_hours, 1.0)
        self.assertEqual(s.false_alarms, 1)
        self.assertAlmostEqual(s.false_alarms_per_hour, 1.0)
        self.assertAlmostEqual(s.false_alarms_per_day, 24.0)
        self.assertEqual(s.recall(30), 0.5)
        self.assertEqual(s.median_lead_s, 100.0)
        self.assertEqual(s.missed_runs, ["d"])
        self.assertEqual(s.false_alarm_runs, ["a"])
        row = s.row()
        self.assertEqual(row["recall_lead5m"], 0.0)
        self.assertEqual(row["recall_lead60s"], 0.5)


class Calibration(unittest.TestCase):
    def test_brier(self):
        self.assertAlmostEqual(metrics.brier([0, 1, 1, 0], [0.0, 1.0, 0.5, 0.5]), 0.125)

    def test_ece(self):
        y = np.array([0, 0, 1, 1, 1])
        p = np.array([0.05, 0.05, 0.95, 0.95, 1.0])
        # bin 0: mean y 0 vs mean p 0.05 (2/5); bin 9: mean y 1 vs mean p 0.9667 (3/5)
        self.assertAlmostEqual(metrics.ece(y, p), 0.4 * 0.05 + 0.6 * (1 - (0.95 + 0.95 + 1.0) / 3))
        self.assertEqual(metrics.ece(np.array([1, 0]), np.array([1.0, 0.0])), 0.0)


def scored(key, t, p, t_f):
    run = data.Run(key, "d", key, "x", "x.y", key, 0, 0, int(t[-1]), None, {})
    rr = data.RunRows(run, t, np.zeros((len(t), 1), np.float32), t_f)
    p = np.asarray(p, float)
    return evaluate.Scored(rr, {30: p, 120: p}, np.zeros(len(t)), np.full(len(t), 86400.0))


class OperatingPoint(unittest.TestCase):
    def test_threshold_between_the_normal_maximum_and_the_detections(self):
        # 24 h of normal runs so that one false alarm is allowed ... then none (1 hour)
        t = ts(0, 600)
        normal = [scored("n1", t, np.full(len(t), 0.2), None), scored("n2", t, np.where(t == 300 * S, 0.6, 0.1), None)]
        fail = [
            scored("f1", t, np.where(t >= 500 * S, 0.9, 0.1), 600 * S),  # reaches 0.9 by t_f - 30 s
            scored("f2", t, np.where(t >= 590 * S, 0.95, 0.7), 600 * S),  # 0.7 early, 0.95 too late
        ]
        op = evaluate.choose_operating_point(normal + fail, [120])
        # no false alarm allowed: threshold above 0.6; both runs reach >= 0.7 by t_f - 30 s
        self.assertEqual(op.val_recall_lead30s, 1.0)
        self.assertGreater(op.feasible_low, 0.6)
        self.assertAlmostEqual(op.feasible_high, 0.7)
        self.assertGreater(op.threshold, 0.6)
        self.assertLessEqual(op.threshold, 0.7)
        self.assertEqual(op.val_false_alarms_per_day, 0.0)

    def test_only_horizons_longer_than_the_lead_decide(self):
        t = ts(0, 600)
        runs = [scored("n", t, np.full(len(t), 0.2), None), scored("f", t, np.where(t >= 500 * S, 0.9, 0.1), 600 * S)]
        op = evaluate.choose_operating_point(runs, [30, 120])
        self.assertEqual(op.horizon_s, 120)
        self.assertEqual([c["eligible"] for c in op.candidates], [False, True])
        with self.assertRaises(ValueError):
            evaluate.choose_operating_point(runs, [30])

    def test_budget_allows_false_alarms_on_a_long_normal_history(self):
        t = np.arange(0, 48 * 3600 * S, 60 * S, dtype=np.int64)  # 48 h at one row a minute
        p = np.full(len(t), 0.1)
        p[100] = 0.8  # one false alarm in two days: within 1 per day
        normal = [scored("n", t, p, None)]
        ft = ts(0, 600)
        fail = [scored("f", ft, np.where(ft >= 500 * S, 0.5, 0.1), 600 * S)]
        for s in normal:
            s.rows = data.RunRows(s.rows.run, t, np.zeros((len(t), 1), np.float32), None)
        op = evaluate.choose_operating_point(normal + fail, [120])
        self.assertEqual(op.val_recall_lead30s, 1.0)
        self.assertLessEqual(op.threshold, 0.5)


class PerDataset(unittest.TestCase):
    def test_rows_per_dataset_only_when_a_split_spans_several(self):
        t = ts(0, 600)
        a = scored("a/n1", t, np.where(t == 300 * S, 0.9, 0.1), None)
        b = scored("b/n1", t, np.full(len(t), 0.1), None)
        b.rows.run.dataset = "b"
        a.rows.run.dataset = "a"
        op = evaluate.OperatingPoint(horizon_s=120, threshold=0.5)
        rows = evaluate.per_dataset_rows("soak", [a, b], op, [30, 120], {30: "m30", 120: "m2"})
        shipped = {r["split"]: r for r in rows if r["detector"] == "shipped"}
        self.assertEqual(set(shipped), {"soak_runs/a", "soak_runs/b"})
        self.assertEqual(shipped["soak_runs/a"]["false_alarms"], 1)
        self.assertEqual(shipped["soak_runs/b"]["false_alarms"], 0)
        self.assertEqual(evaluate.per_dataset_rows("soak", [a], op, [30, 120], {30: "m30", 120: "m2"}), [])


if __name__ == "__main__":
    unittest.main()
