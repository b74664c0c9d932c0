"""Labels y_H(t) around the failure time, and which rows of a run are kept."""

import unittest

import numpy as np

from augur_train import data


def make_run(**kw):
    base = dict(
        key="d/run-0001",
        dataset="d",
        run_id="run-0001",
        family="leak",
        variant="leak.linear",
        resource="lab-vm/cgroup/augur-lab/run-0001",
        created_ms=0,
        start_ms=3_000,
        end_ms=100_000,
        failure="oom",
        failure_times={"oom": 90_000},
        limits={"memory_bytes": 64 << 20},
    )
    base.update(kw)
    return data.Run(**base)


class HorizonLabels(unittest.TestCase):
    def test_positive_iff_failure_within_horizon(self):
        t_f = 100_000
        ts = np.array([40_000, 69_000, 70_000, 70_001, 99_000, 99_999])
        y = data.horizon_labels(ts, t_f, 30)
        # t_f - t: 60 s, 31 s, 30 s (inclusive), 29.999 s, 1 s, 1 ms
        self.assertEqual(y.tolist(), [0, 0, 1, 1, 1, 1])

    def test_at_or_after_failure_is_not_positive(self):
        y = data.horizon_labels(np.array([100_000, 101_000]), 100_000, 30)
        self.assertEqual(y.tolist(), [0, 0])

    def test_horizons_nest(self):
        ts = np.arange(0, 1_000_000, 1000)
        t_f = 900_000
        y30, y120, y600 = (data.horizon_labels(ts, t_f, h) for h in (30, 120, 600))
        self.assertEqual(int(y30.sum()), 30)
        self.assertEqual(int(y120.sum()), 120)
        self.assertEqual(int(y600.sum()), 600)
        self.assertTrue(np.all(y30 <= y120) and np.all(y120 <= y600))

    def test_run_without_failure_is_all_negative(self):
        y = data.horizon_labels(np.arange(0, 10_000, 1000), None, 600)
        self.assertEqual(int(y.sum()), 0)
        self.assertEqual(len(y), 10)


class RunRows(unittest.TestCase):
    def test_rows_cut_at_the_oom_kill(self):
        run = make_run()
        ts = np.arange(-5_000, 130_000, 1000)
        x = np.arange(len(ts), dtype=np.float32)[:, None]
        rr = data.run_rows(run, ts, x, "oom")
        self.assertEqual(rr.t_f, 90_000)
        self.assertEqual(int(rr.ts.min()), 0)  # nothing before the cgroup existed
        self.assertEqual(int(rr.ts.max()), 89_000)  # nothing at or after t_f
        self.assertEqual(len(rr.ts), len(rr.x))
        y = data.horizon_labels(rr.ts, rr.t_f, 30)
        self.assertEqual(int(y.sum()), 30)

    def test_other_failures_are_negatives_kept_to_the_end(self):
        run = make_run(failure="enospc", failure_times={"enospc": 50_000})
        ts = np.arange(0, 130_000, 1000)
        rr = data.run_rows(run, ts, np.zeros((len(ts), 1), np.float32), "oom")
        self.assertIsNone(rr.t_f)
        self.assertEqual(int(rr.ts.max()), 100_000)  # the workload's end
        self.assertEqual(int(data.horizon_labels(rr.ts, rr.t_f, 600).sum()), 0)

    def test_oom_after_an_earlier_failure_still_counts(self):
        run = make_run(failure="slo", failure_times={"slo": 20_000, "oom": 60_000})
        self.assertEqual(run.t_fail("oom"), 60_000)


class LoadRuns(unittest.TestCase):
    def test_labels_file_fields(self):
        import json
        import tempfile
        from pathlib import Path

        rec = {
            "run_id": "run-0024",
            "family": "leak",
            "variant": "step",
            "host": "lab-vm",
            "resource": "cgroup/augur-lab/run-0024",
            "limits": {"memory_bytes": 67108864},
            "params": {},
            "created_ms": 1000,
            "start_ms": 4000,
            "end_ms": 9000,
            "failure": "oom",
            "t_f_ms": 8990,
            "failures": [{"type": "oom", "t_ms": 8990, "source": "kmsg"}],
        }
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "x.labels.jsonl"
            p.write_text(json.dumps(rec) + "\n")
            (Path(d) / "x.augrec.gz").write_bytes(b"")
            [ds] = data._datasets_in(p)
            [run] = data.load_runs(ds)
        self.assertEqual(run.key, "x/run-0024")
        self.assertEqual(run.resource, "lab-vm/cgroup/augur-lab/run-0024")
        self.assertEqual(run.variant, "leak.step")
        self.assertEqual(run.t_fail("oom"), 8990)
        self.assertIsNone(run.t_fail("enospc"))


if __name__ == "__main__":
    unittest.main()
