"""Split by run: no run in two splits, held-out families never in train/val, deterministic."""

import unittest
from collections import Counter

from augur_train import data, split

VARIANTS = ["leak.linear", "leak.step", "leak.accel", "mem.sawtooth", "normal.steady", "normal.periodic", "cpu.ok"]


def runs(n_per_variant=9, datasets=("a", "b")):
    out = []
    i = 0
    for ds in datasets:
        for v in VARIANTS:
            for k in range(n_per_variant):
                limit = (64, 128, 512)[k % 3] << 20
                out.append(
                    data.Run(
                        key=f"{ds}/run-{i:04d}",
                        dataset=ds,
                        run_id=f"run-{i:04d}",
                        family=v.split(".")[0],
                        variant=v,
                        resource=f"h/cgroup/augur-lab/run-{i:04d}",
                        created_ms=0,
                        start_ms=0,
                        end_ms=1,
                        failure="oom" if v.startswith("leak") else None,
                        failure_times={"oom": 1} if v.startswith("leak") else {},
                        limits={"memory_bytes": limit},
                    )
                )
                i += 1
    return out


class Split(unittest.TestCase):
    def test_every_run_in_exactly_one_split(self):
        rs = runs()
        a = split.assign_splits(rs)
        self.assertEqual(set(a), {r.key for r in rs})
        self.assertTrue(set(a.values()) <= set(split.SPLITS))
        # rows follow their run: a row-level split built from run keys cannot leak
        rows = [(r.key, t) for r in rs for t in range(5)]
        per_run = {}
        for key, _ in rows:
            per_run.setdefault(key, set()).add(a[key])
        self.assertTrue(all(len(s) == 1 for s in per_run.values()))

    def test_heldout_families(self):
        rs = runs()
        a = split.assign_splits(rs)
        for r in rs:
            reason = split.heldout_reason(r)
            if r.variant in ("leak.accel", "normal.periodic") or (r.family == "leak" and r.limits["memory_bytes"] == 512 << 20):
                self.assertIsNotNone(reason, r)
                self.assertEqual(a[r.key], "heldout")
            else:
                self.assertIsNone(reason)
                self.assertNotEqual(a[r.key], "heldout")
        # a 512 MiB limit is held out for leaks only
        self.assertTrue(any(a[r.key] == "train" and r.limits["memory_bytes"] == 512 << 20 for r in rs if r.family != "leak"))
        self.assertFalse(any(a[r.key] in ("train", "val") and r.family == "leak" and r.limits["memory_bytes"] == 512 << 20 for r in rs))

    def test_stratified_and_deterministic(self):
        rs = runs()
        a = split.assign_splits(rs)
        self.assertEqual(a, split.assign_splits(list(reversed(rs))))
        c = Counter((r.variant, a[r.key]) for r in rs)
        for v in ("leak.linear", "mem.sawtooth", "cpu.ok"):
            self.assertGreater(c[(v, "train")], 0)
            self.assertGreater(c[(v, "val")], 0)
            self.assertGreater(c[(v, "test")], 0)
        self.assertNotEqual(a, split.assign_splits(rs, seed=1))

    def test_soak_runs(self):
        rs = runs()
        soak = []
        for i, v in enumerate(["normal.steady"] * 12 + ["mem.sawtooth"] * 8 + ["normal.periodic"] * 5):
            soak.append(
                data.Run(
                    key=f"soak/run-{i:04d}",
                    dataset="soak",
                    run_id=f"run-{i:04d}",
                    family=v.split(".")[0],
                    variant=v,
                    resource=f"h/cgroup/augur-lab/run-{i:04d}",
                    created_ms=0,
                    start_ms=0,
                    end_ms=1,
                    failure=None,
                    failure_times={},
                    limits={"memory_bytes": 256 << 20},
                    params={"soak_s": 1980.0},
                )
            )
        a = split.assign_splits(rs + soak)
        without = split.assign_splits(rs)
        # soak runs do not move the other runs
        self.assertEqual({k: a[k] for k in without}, without)
        c = Counter((r.variant, a[r.key]) for r in soak)
        self.assertEqual(c[("normal.steady", "soak")], 9)
        self.assertEqual((c[("normal.steady", "train")], c[("normal.steady", "val")]), (2, 1))
        self.assertEqual(c[("mem.sawtooth", "soak")], 6)
        self.assertEqual((c[("mem.sawtooth", "train")], c[("mem.sawtooth", "val")]), (1, 1))
        # a held-out variant is never trained on, soak or not
        self.assertEqual(c[("normal.periodic", "soak")], 5)
        self.assertFalse(any(a[r.key] in ("test", "heldout") for r in soak))
        self.assertTrue(split.is_soak(soak[0]))
        # a second soak session never moves the first one's runs
        later = [
            data.Run(
                key=f"soak2/{r.run_id}", dataset="soak2", run_id=r.run_id, family=r.family, variant=r.variant,
                resource=r.resource, created_ms=0, start_ms=0, end_ms=1, failure=None, failure_times={},
                limits=r.limits, params=r.params,
            )
            for r in soak
        ]
        b = split.assign_splits(rs + soak + later)
        self.assertEqual({k: b[k] for k in a}, a)
        self.assertFalse(split.is_soak(rs[0]))

    def test_split_counts(self):
        self.assertEqual(split.split_counts(0), (0, 0, 0))
        self.assertEqual(split.split_counts(1), (1, 0, 0))
        self.assertEqual(split.split_counts(2), (1, 1, 0))
        self.assertEqual(split.split_counts(3), (1, 1, 1))
        self.assertEqual(split.split_counts(4), (2, 1, 1))
        self.assertEqual(split.split_counts(20), (10, 5, 5))
        for n in range(60):
            self.assertEqual(sum(split.split_counts(n)), n)


if __name__ == "__main__":
    unittest.main()
