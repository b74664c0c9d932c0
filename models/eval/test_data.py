"""NAB segment rules, and sanity checks on the real data when ../shared/data is present."""

import unittest

import numpy as np

from augur_eval import data, detectors, metrics


class NabSegments(unittest.TestCase):
    def test_segment_ends_at_window_end_or_next_onset(self):
        segs = data.nab_segments([100.0, 150.0], [(50.0, 200.0)])
        self.assertEqual(segs[0].start, 100.0)
        self.assertAlmostEqual(segs[0].end, 150.0, places=4)
        self.assertLess(segs[0].end, 150.0)
        self.assertEqual((segs[1].start, segs[1].end), (150.0, 200.0))

    def test_label_outside_windows_gets_half_median_width(self):
        segs = data.nab_segments([10.0, 500.0], [(400.0, 600.0), (700.0, 740.0)])
        self.assertEqual((segs[0].start, segs[0].end), (10.0, 70.0))  # median width 120 / 2
        self.assertEqual((segs[1].start, segs[1].end), (500.0, 600.0))


def smd_present():
    return bool(data.smd_machines())


def nab_present():
    return bool(data.nab_files())


@unittest.skipUnless(smd_present(), f"SMD not found under {data.data_dir() / 'smd'} (set AUGUR_DATA_DIR)")
class SmdSanity(unittest.TestCase):
    """EVALUATION.md: PCA-90% error gives mean best-F1 about 0.46 and AUC-PR about 0.39."""

    def test_pca_error_matches_published_sanity_numbers(self):
        hosts = data.load_smd()
        if len(hosts) != 5:
            self.skipTest("the sanity numbers are for the five machines in ../shared/data/smd")
        f1, ap = [], []
        for s in hosts:
            self.assertEqual(s.train_x.shape[1], 38)
            self.assertGreater(len(s.segments), 0)
            _, score = detectors.PCAError(0.9).fit_score(s.train_x, s.test_x)
            f1.append(metrics.best_f1(score, s.test_label)["f1"])
            ap.append(metrics.auc_pr(score, s.test_label))
        self.assertAlmostEqual(np.mean(f1), 0.46, delta=0.01)
        self.assertAlmostEqual(np.mean(ap), 0.39, delta=0.01)


@unittest.skipUnless(nab_present(), f"NAB not found under {data.data_dir() / 'nab'} (set AUGUR_DATA_DIR)")
class NabLoading(unittest.TestCase):
    def test_series_split_and_events(self):
        hosts = data.load_nab()
        self.assertEqual(len(hosts), 17)
        events = 0
        for s in hosts:
            self.assertEqual(len(s.train_x), int(0.15 * (len(s.train_x) + len(s.test_x))))
            self.assertTrue(np.all(np.diff(s.test_t) > 0))
            for seg in s.segments:
                self.assertIn(seg.start, s.test_t)  # onsets are sample times
                self.assertGreaterEqual(seg.end, seg.start)
            events += len(s.segments)
        self.assertEqual(events, 31)


if __name__ == "__main__":
    unittest.main()
