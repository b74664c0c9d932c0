"""Cgroup layout detection and name safety; the recording reader (round trip and the
repository's real recording written by the Rust exporter)."""

import math
import struct
import tempfile
import unittest
from pathlib import Path

import augrec
import cgroups

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
COMBINED_V1 = "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:11 - cgroup cgroup rw,cpu,cpuacct\n"
PURE_V2 = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
REPO = Path(__file__).resolve().parents[2]


class Mountinfo(unittest.TestCase):
    def test_hybrid(self):
        v1, v2 = cgroups.parse_mountinfo(HYBRID)
        self.assertEqual(v1["memory"], "/sys/fs/cgroup/memory")
        self.assertEqual(set(v1), {"cpu", "cpuacct", "memory", "blkio", "pids"})
        self.assertEqual(v2, ["/sys/fs/cgroup/unified"])

    def test_combined_controllers(self):
        v1, _ = cgroups.parse_mountinfo(COMBINED_V1)
        self.assertEqual(v1["cpu"], v1["cpuacct"])

    def test_pure_v2(self):
        v1, v2 = cgroups.parse_mountinfo(PURE_V2)
        self.assertEqual((v1, v2), ({}, ["/sys/fs/cgroup"]))

    def test_layout_mode(self):
        self.assertEqual(cgroups.Layout(v1={"memory": Path("/m")}).mode, "v1")
        self.assertEqual(cgroups.Layout(unified=Path("/u"), unified_controllers={"memory", "cpu", "pids"}).mode, "v2")
        self.assertEqual(cgroups.Layout(unified=Path("/u")).mode, "none")
        with self.assertRaises(RuntimeError):
            cgroups.LabCgroups(cgroups.Layout(), "augur-lab")


class Names(unittest.TestCase):
    def test_bad_names_are_refused(self):
        for bad in ("", "..", "../etc", "a/b", "-x", ".hidden", "a b", "x" * 65):
            with self.assertRaises(ValueError, msg=bad):
                cgroups.check_name(bad)
        self.assertEqual(cgroups.check_name("run-0001"), "run-0001")

    def test_paths_stay_under_the_prefix(self):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            layout = cgroups.Layout(v1={c: root / c for c in cgroups.V1_CONTROLLERS}, unified=root / "unified")
            for p in layout.v1.values():
                p.mkdir()
            layout.unified.mkdir()
            cg = cgroups.LabCgroups(layout, "augur-lab")
            cg.create_prefix(cpu_shares=3072)
            self.assertEqual((root / "cpu/augur-lab/cpu.shares").read_text(), "3072")
            cg.create("run-0001", 64 << 20, 0.25, 32)
            self.assertEqual((root / "memory/augur-lab/run-0001/memory.limit_in_bytes").read_text(), str(64 << 20))
            self.assertEqual((root / "cpu/augur-lab/run-0001/cpu.cfs_quota_us").read_text(), "25000")
            self.assertEqual((root / "pids/augur-lab/run-0001/pids.max").read_text(), "32")
            self.assertTrue((root / "unified/augur-lab/run-0001").is_dir())
            files = cg.procs_files("run-0001")
            self.assertEqual(len(files), 6)
            self.assertTrue(all(str(f).startswith(d) and "/augur-lab/run-0001/" in str(f) for f in files))
            with self.assertRaises(ValueError):
                cg.create("../escape", 1, None, 1)
            with self.assertRaises(ValueError):
                cgroups.LabCgroups(layout, "../x")


def bits(v):
    return struct.unpack("<Q", struct.pack("<d", v))[0]


class Recording(unittest.TestCase):
    def sample(self):
        pts = [(1_700_000_000_000 + i * 1000 + (i % 7), 100.0 + i * 0.37) for i in range(300)]
        odd = [0.0, -0.0, math.nan, math.inf, 1e-310, -3.5]
        pts += [(1_800_000_000_000 + i, v) for i, v in enumerate(odd)]
        return augrec.Recording(
            "h-1",
            1_700_000_000_000,
            1_800_000_000_100,
            [
                augrec.Series("host", "node_cpu_seconds_total", "seconds", "counter", {"mode": "user"},
                              [t for t, _ in pts], [v for _, v in pts]),
                augrec.Series("cgroup/a/b", "g", "", "gauge", {}, [-5], [1.0]),
                augrec.Series("host", "empty", "bytes", "gauge", {}, [], []),
            ],
        )

    def test_round_trip_is_bit_exact(self):
        r = self.sample()
        back = augrec.decode(augrec.encode(r))
        self.assertEqual((back.host_id, back.start_ms, back.end_ms), (r.host_id, r.start_ms, r.end_ms))
        for a, b in zip(r.series, back.series):
            self.assertEqual((a.resource, a.metric, a.unit, a.kind, a.labels), (b.resource, b.metric, b.unit, b.kind, b.labels))
            self.assertEqual(a.timestamps, b.timestamps)
            self.assertEqual([bits(v) for v in a.values], [bits(v) for v in b.values])

    def test_truncated_is_an_error(self):
        enc = augrec.encode(self.sample())
        for cut in (0, 3, 8, 20, len(enc) // 2, len(enc) - 1):
            with self.assertRaises((ValueError, KeyError, IndexError)):
                augrec.decode(enc[:cut])

    def test_reads_the_rust_exporters_file(self):
        path = REPO / "bench/data/agent-recording-30m.augrec.gz"
        if not path.exists():
            self.skipTest(f"{path} not in this checkout")
        rec = augrec.load(path)
        self.assertTrue(rec.series)
        self.assertGreater(sum(len(s.timestamps) for s in rec.series), 10_000)
        for s in rec.series:
            self.assertEqual(s.timestamps, sorted(s.timestamps))
            self.assertEqual(len(s.timestamps), len(s.values))


if __name__ == "__main__":
    unittest.main()
