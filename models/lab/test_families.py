"""Parameter sampling: determinism from the seed, shares of the plan, and schedules that
do what each variant promises (leaks cross their limit, normal memory stays under it)."""

import json
import unittest

import families

MiB = 1 << 20


def values(spec, col=1):
    return [row[col] for row in spec.schedule]


class Determinism(unittest.TestCase):
    def test_run_seed_is_stable(self):
        # sha256-based: the same on every Python version and platform.
        self.assertEqual(families.run_seed(1, 0, "leak.linear"), 4219053979994677921)
        self.assertEqual(families.run_seed(42, 7, "cpu.hog"), 5943010880140779010)

    def test_same_seed_same_runs(self):
        for v in families.VARIANTS:
            a = families.make_run(7, 3, v, 0.8)
            b = families.make_run(7, 3, v, 0.8)
            self.assertEqual(json.dumps(a.to_json(), sort_keys=True), json.dumps(b.to_json(), sort_keys=True), v)
            self.assertEqual(a.schedule, b.schedule, v)

    def test_other_seed_or_index_other_parameters(self):
        for v in families.VARIANTS:
            a = families.make_run(7, 3, v).params
            self.assertNotEqual(a, families.make_run(8, 3, v).params, v)
            self.assertNotEqual(a, families.make_run(7, 4, v).params, v)

    def test_plan_is_deterministic_and_shuffled_by_seed(self):
        self.assertEqual(families.plan(50, 3), families.plan(50, 3))
        self.assertNotEqual(families.plan(50, 3), families.plan(50, 4))
        self.assertEqual(sorted(families.plan(50, 3)), sorted(families.plan(50, 4)))


class Plan(unittest.TestCase):
    def test_every_variant_when_runs_allow(self):
        p = families.plan(len(families.VARIANTS), 1)
        self.assertEqual(sorted(p), sorted(families.VARIANTS))

    def test_shares_follow_weights(self):
        n = 1000
        p = families.plan(n, 1)
        self.assertEqual(len(p), n)
        total = sum(v.weight for v in families.VARIANTS.values())
        for name, v in families.VARIANTS.items():
            self.assertAlmostEqual(p.count(name), n * v.weight / total, delta=len(families.VARIANTS))

    def test_few_runs(self):
        self.assertEqual(len(families.plan(3, 1)), 3)
        self.assertEqual(families.plan(0, 1), [])

    def test_select_variants(self):
        self.assertEqual(families.select_variants(["leak"]), ["leak.linear", "leak.accel", "leak.step"])
        self.assertEqual(families.select_variants(["cpu.hog", "disk"]), ["cpu.hog", "disk.fill", "disk.rotate"])
        self.assertEqual(families.select_variants(None), list(families.VARIANTS))
        with self.assertRaises(ValueError):
            families.select_variants(["nope"])


class Schedules(unittest.TestCase):
    SEEDS = range(25)

    def runs(self, variant, scale=1.0):
        return [families.make_run(s, 0, variant, scale) for s in self.SEEDS]

    def test_common_shape(self):
        for v in families.VARIANTS:
            for r in self.runs(v):
                ts = [row[0] for row in r.schedule]
                self.assertEqual(ts, sorted(ts), v)
                self.assertLessEqual(ts[-1], r.duration + 1e-6, v)
                self.assertGreater(r.deadline, r.duration, v)
                self.assertTrue(all(row[1] >= 0 for row in r.schedule), v)
                self.assertGreater(r.cpu_cost, 0, v)
                self.assertLessEqual(r.cpu_cost, 0.5, v)
                if r.cpu_quota is not None:
                    self.assertLessEqual(r.cpu_cost, r.cpu_quota + 1e-3, v)

    def test_leaks_cross_their_limit_before_they_stop(self):
        for v in ("leak.linear", "leak.accel", "leak.step"):
            for r in self.runs(v):
                mem = values(r)
                self.assertGreater(max(mem), r.memory_limit, v)
                t_cross = next(row[0] for row in r.schedule if row[1] >= r.memory_limit)
                self.assertLess(t_cross, r.duration - 5, v)
                self.assertLess(mem[0], 0.3 * r.memory_limit, v)
                self.assertEqual(r.designed, "oom")

    def test_normal_memory_stays_under_the_limit(self):
        for v in ("mem.sawtooth", "mem.plateau", "normal.steady", "normal.bursty", "normal.periodic"):
            for r in self.runs(v):
                self.assertLess(max(values(r)), 0.9 * r.memory_limit, v)
                self.assertIsNone(r.designed, v)

    def test_sawtooth_drops(self):
        for r in self.runs("mem.sawtooth"):
            mem = values(r)
            drops = sum(1 for a, b in zip(mem, mem[1:]) if b < a - 0.1 * r.memory_limit)
            self.assertGreaterEqual(drops, 1)

    def test_cpu_load(self):
        for r in self.runs("cpu.ok"):
            cap = r.params["capacity_rps"]
            self.assertLess(max(values(r)), 0.5 * cap)
            self.assertEqual(max(values(r, 2)), 0)
        for r in self.runs("cpu.ramp"):
            self.assertGreater(values(r)[-1], 1.05 * r.params["capacity_rps"])
        for r in self.runs("cpu.hog"):
            hog = values(r, 2)
            self.assertEqual(hog[0], 0)
            self.assertGreater(hog[-1], 0.5)
        for v in ("cpu.ok", "cpu.ramp", "cpu.hog", "cpu.burst"):
            for r in self.runs(v):
                self.assertIsNotNone(r.cpu_quota)
                self.assertEqual(r.slo["window_ms"], 30_000)

    def test_fork_leak_reaches_pids_max(self):
        for r in self.runs("fork.leak"):
            step = r.schedule[1][0] - r.schedule[0][0]
            forks = sum(row[1] * step for row in r.schedule)
            self.assertGreater(forks, r.pids_max)
            self.assertEqual(r.args["life"], -1)
        for r in self.runs("fork.ok"):
            self.assertLess(r.params["population"] * (1 + r.params["swing"]), 0.6 * r.pids_max)

    def test_disk(self):
        for r in self.runs("disk.fill"):
            self.assertGreater(max(values(r)), r.fs_bytes)
            self.assertEqual(r.preroll, families.PREROLL_FS)
        for r in self.runs("disk.rotate"):
            self.assertLess(max(values(r)), 0.9 * r.fs_bytes)
        for r in self.runs("mem.pagecache"):
            self.assertGreater(r.args["size"], r.memory_limit)
            self.assertGreater(r.fs_bytes, r.args["size"])

    def test_scale_shortens_runs(self):
        for v in families.VARIANTS:
            full = families.make_run(3, 1, v, 1.0)
            half = families.make_run(3, 1, v, 0.5)
            self.assertLess(half.duration, full.duration, v)

    def test_schedule_text(self):
        r = families.make_run(1, 0, "leak.linear")
        lines = families.schedule_text(r).splitlines()
        self.assertEqual(len(lines), len(r.schedule))
        t, a, b = lines[-1].split()
        self.assertAlmostEqual(float(a), r.schedule[-1][1], delta=1)
        self.assertAlmostEqual(float(t), r.schedule[-1][0])


class Soak(unittest.TestCase):
    def test_plan_shares_and_determinism(self):
        p = families.soak_plan(64, 1)
        self.assertEqual(len(p), 64)
        self.assertEqual(p, families.soak_plan(64, 1))
        self.assertNotEqual(p, families.soak_plan(64, 2))
        self.assertEqual(set(p), set(families.SOAK_VARIANTS))
        total = sum(families.SOAK_VARIANTS.values())
        for v, w in families.SOAK_VARIANTS.items():
            self.assertAlmostEqual(p.count(v), 64 * w / total, delta=1)

    def test_soak_runs_are_long_light_and_never_fail_by_design(self):
        runs = [families.make_soak_run(1, i, v, 1980.0) for i, v in enumerate(families.soak_plan(64, 1))]
        for r in runs:
            self.assertEqual(r.duration, 1980.0, r.variant)
            self.assertIsNone(r.designed)
            self.assertEqual(r.params["soak_s"], 1980.0)
            if r.mode == "mem":
                self.assertEqual(r.schedule[-1][0], 1980.0)
                self.assertLess(max(v for _, v, _ in r.schedule), r.memory_limit, r.variant)
                self.assertLessEqual(max(d for _, _, d in r.schedule), 0.6 * families.SOAK_CPU + 1e-9, r.variant)
        # light on CPU: 64 at once fit the default 1.5-core budget
        self.assertLess(sum(r.cpu_cost for r in runs), 1.5)

    def test_same_draws_as_the_normal_run(self):
        # soak changes duration and CPU only: the variant's size and limit come from the same stream
        for v in families.SOAK_VARIANTS:
            a = families.make_run(3, 5, v)
            b = families.make_soak_run(3, 5, v, 1200.0)
            self.assertEqual(a.memory_limit, b.memory_limit, v)
            self.assertNotIn("soak_s", a.params)

    def test_rejects_failure_variants_and_bad_durations(self):
        with self.assertRaises(ValueError):
            families.make_soak_run(1, 0, "leak.linear", 600.0)
        with self.assertRaises(ValueError):
            families.make_soak_run(1, 0, "normal.steady", 0)


if __name__ == "__main__":
    unittest.main()
