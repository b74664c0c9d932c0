"""Hand-worked cases for augur_eval.metrics (run: python -m unittest discover models/eval)."""

import math
import unittest

import numpy as np

from augur_eval import metrics as M
from augur_eval.data import Segment, label_from_segments, segments_from_labels


class OnsetsAndTargets(unittest.TestCase):
    def test_segments_are_runs_of_ones(self):
        t = np.arange(8, dtype=float) + 100
        label = np.array([0, 1, 1, 0, 0, 1, 0, 1])
        segs = segments_from_labels(t, label)
        self.assertEqual([(s.start, s.end) for s in segs], [(101, 102), (105, 105), (107, 107)])
        np.testing.assert_array_equal(M.onset_times(segs), [101, 105, 107])
        np.testing.assert_array_equal(label_from_segments(t, segs), label)

    def test_no_segments(self):
        self.assertEqual(segments_from_labels(np.arange(3.0), np.zeros(3)), [])

    def test_horizon_targets(self):
        # onset at 5 (segment 5..6); H = 2: y = 1 where 5 in (t, t + 2], i.e. t = 3, 4
        t = np.arange(10, dtype=float)
        y, keep = M.horizon_targets(t, [Segment(5, 6)], 2)
        np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 0, 0, 0, 0, 0])
        np.testing.assert_array_equal(keep, [1, 1, 1, 1, 1, 0, 0, 1, 1, 1])

    def test_horizon_targets_two_onsets_and_gaps(self):
        # irregular times; onsets at 10 and 30, H = 15: t in [-5, 10) or [15, 30)
        t = np.array([0, 5, 9, 10, 12, 14, 15, 20, 29, 30, 31], dtype=float)
        segs = [Segment(10, 12), Segment(30, 30)]
        y, keep = M.horizon_targets(t, segs, 15)
        np.testing.assert_array_equal(y, [1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0])
        np.testing.assert_array_equal(keep, [1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1])

    def test_per_step_auc_pr(self):
        # kept steps 0,1,2,3,4,7,8,9 ; positives 3,4 ; scores rank 4 > 3 > 9 > rest
        t = np.arange(10, dtype=float)
        score = np.array([0, 0, 0, 0.8, 0.9, 5, 5, 0, 0, 0.85])
        # ranking: 4 (pos), 9 (neg), 3 (pos): AP = (1/1 + 2/3) / 2
        self.assertAlmostEqual(M.per_step_auc_pr(t, score, [Segment(5, 6)], 2), (1 + 2 / 3) / 2)

    def test_per_step_auc_pr_without_positives_is_nan(self):
        self.assertTrue(math.isnan(M.per_step_auc_pr(np.arange(5.0), np.arange(5.0), [], 5)))


class AlarmView(unittest.TestCase):
    def test_debounce_merges_closer_than_gap(self):
        ep = M.debounce(np.array([0, 1, 2, 15, 24, 40, 50, 60.5]), 10)
        # 2 -> 15 is 13 apart (new), 15 -> 24 is 9 (merged), 24 -> 40 new,
        # 40 -> 50 is exactly 10: not closer than 10, so new; 50 -> 60.5 new
        np.testing.assert_array_equal(ep, [[0, 2], [15, 24], [40, 40], [50, 50], [60.5, 60.5]])

    def test_debounce_empty(self):
        self.assertEqual(M.debounce(np.array([])).shape, (0, 2))

    def test_alarms_from_scores(self):
        t = np.arange(30, dtype=float)
        score = np.zeros(30)
        score[[3, 4, 5, 12, 25]] = 1
        # 5 -> 12 is 7 min apart: merged; 12 -> 25 is 13: new
        np.testing.assert_array_equal(M.alarms(t, score, 0.5), [3, 25])

    def test_alarm_outcome(self):
        segs = [Segment(200, 210), Segment(500, 505), Segment(1000, 1010)]
        alarm_starts = np.array([50, 150, 203, 400, 700, 870, 1004], dtype=float)
        out = M.alarm_outcome(alarm_starts, segs, horizons=(5, 15, 30, 60))
        # event 1: alarm 150 (lead 50) -> early for H <= 50; 203 is inside, attributed
        # event 2: alarm 400 (lead 100) -> early for every H
        # event 3: 870 is 130 min before (outside 2 h), only 1004 inside -> late, delay 4
        np.testing.assert_array_equal(out.early[5], [True, True, False])
        np.testing.assert_array_equal(out.early[30], [True, True, False])
        np.testing.assert_array_equal(out.early[60], [False, True, False])
        np.testing.assert_array_equal(out.warned, [True, True, False])
        np.testing.assert_array_equal(out.late, [False, False, True])
        np.testing.assert_array_equal(out.lead[:2], [50, 100])
        self.assertTrue(math.isnan(out.lead[2]))
        self.assertEqual(out.delay[2], 4)
        self.assertEqual(out.n_false, 3)  # 50, 700, 870
        self.assertEqual(out.n_alarms, 7)

    def test_alarm_window_edges_are_inclusive(self):
        segs = [Segment(200, 210)]
        out = M.alarm_outcome(np.array([80.0, 185.0]), segs, horizons=(15, 16))
        # 80 = t0 - 120 is inside the look-back; 185 = t0 - 15 counts for H = 15, not 16
        self.assertEqual(out.n_false, 0)
        self.assertTrue(out.early[15][0])
        self.assertTrue(out.early[16][0])  # through the alarm at 80
        self.assertEqual(out.lead[0], 120)
        out = M.alarm_outcome(np.array([185.0]), segs, horizons=(15, 16))
        self.assertTrue(out.early[15][0])
        self.assertFalse(out.early[16][0])

    def test_train_alarm_threshold_respects_budget(self):
        # two days of zeros with three spikes of 5 and one of 10; budget 1/day = 2 alarms:
        # any threshold below 5 gives 4 alarms, 5 gives 1 (scores strictly above alarm)
        t = np.arange(2880, dtype=float)
        score = np.zeros(2880)
        score[[100, 1000, 2000]] = 5
        score[1500] = 10
        self.assertEqual(M.train_alarm_threshold(t, score, 1.0, budget_per_day=1.0), 5.0)
        # budget 2/day allows all 4 spikes: the threshold drops below 5
        self.assertLess(M.train_alarm_threshold(t, score, 1.0, budget_per_day=2.0), 5.0)

    def test_test_budget_threshold_ignores_attributed_alarms(self):
        # one day; an event at 600..620 with high scores, two false spikes of 3 and 4
        t = np.arange(1440, dtype=float)
        score = np.zeros(1440)
        score[600:620] = 9
        score[100] = 3
        score[900] = 4
        thr = M.test_budget_threshold(t, score, [Segment(600, 620)], 1.0, budget_per_day=1.0)
        self.assertEqual(thr, 3.0)  # keeps the spike of 4 (1 false alarm), drops 3

    def test_span_days(self):
        self.assertEqual(M.span_days(np.arange(1440, dtype=float), 1.0), 1.0)


class LiteratureView(unittest.TestCase):
    def test_best_f1(self):
        score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
        label = np.array([1, 0, 1, 1, 0, 0])
        # >= 0.6: TP 3, FP 1 -> P 3/4, R 1, F1 6/7 (the best; >= 0.7 gives 2/3)
        best = M.best_f1(score, label)
        self.assertAlmostEqual(best["f1"], 6 / 7)
        self.assertAlmostEqual(best["precision"], 0.75)
        self.assertAlmostEqual(best["recall"], 1.0)
        self.assertEqual(best["threshold"], 0.6)

    def test_best_f1_with_ties(self):
        best = M.best_f1(np.array([0.5, 0.5, 0.1]), np.array([1, 0, 0]))
        self.assertAlmostEqual(best["f1"], 2 / 3)  # P 1/2, R 1 at the tied threshold

    def test_f1_curve_matches_sklearn(self):
        from sklearn.metrics import precision_recall_curve

        rng = np.random.default_rng(1)
        score = rng.integers(0, 20, 300).astype(float)
        label = (rng.random(300) < 0.2).astype(int)
        thr, p, r, _ = M.f1_curve(score, label)
        sp, sr, st = precision_recall_curve(label, score)
        ours = dict(zip(thr, zip(p, r)))
        for pi, ri, ti in zip(sp[:-1], sr[:-1], st):
            self.assertAlmostEqual(ours[ti][0], pi)
            self.assertAlmostEqual(ours[ti][1], ri)

    def test_point_f1_at_threshold(self):
        # > 0.65: predicted 0.9, 0.8, 0.7 -> TP 2, FP 1, FN 1 -> F1 = 4 / 6
        self.assertAlmostEqual(M.point_f1(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 1]), 0.65), 2 / 3)

    def test_auc_pr_and_roc(self):
        score = np.array([0.9, 0.8, 0.7])
        label = np.array([1, 0, 1])
        self.assertAlmostEqual(M.auc_pr(score, label), (1 + 2 / 3) / 2)
        self.assertAlmostEqual(M.auc_roc(score, label), 0.5)  # pairs (0.9>0.8) yes, (0.7>0.8) no
        self.assertTrue(math.isnan(M.auc_roc(score, np.zeros(3))))

    def test_composite_f1(self):
        t = np.arange(10, dtype=float)
        segs = [Segment(2, 3), Segment(7, 7)]
        label = label_from_segments(t, segs)
        score = np.zeros(10)
        score[2], score[3], score[5], score[7] = 0.9, 0.1, 0.5, 0.3
        # >= 0.1: points 2, 3, 7 (TP) and 5 (FP): P 3/4; both events found: ER 1
        # F1 = 2 * 0.75 / 1.75 = 6/7; every other threshold is lower
        comp = M.composite_f1(t, score, label, segs)
        self.assertAlmostEqual(comp["f1"], 6 / 7)
        self.assertAlmostEqual(comp["event_recall"], 1.0)
        self.assertAlmostEqual(comp["precision"], 0.75)

    def test_composite_f1_finds_event_by_one_point(self):
        # a long event found by one high point: event recall 1 with precision 1
        t = np.arange(20, dtype=float)
        segs = [Segment(5, 14)]
        label = label_from_segments(t, segs)
        score = np.zeros(20)
        score[9] = 1.0
        comp = M.composite_f1(t, score, label, segs)
        self.assertAlmostEqual(comp["f1"], 1.0)
        # whereas point-wise: the one point gives F1 2(1)(0.1)/1.1 = 0.18, calling all 20
        # points anomalous gives P 1/2, R 1, F1 2/3 -- the best point-wise F1
        self.assertAlmostEqual(M.best_f1(score, label)["f1"], 2 / 3)
        self.assertAlmostEqual(M.point_f1(score, label, 0.5), 2 * 0.1 / 1.1)


if __name__ == "__main__":
    unittest.main()
