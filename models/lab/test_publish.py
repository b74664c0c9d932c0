"""publish.py: machine paths out of labels and recordings, points unchanged."""

import gzip
import json
import tempfile
import unittest
from pathlib import Path

import augrec
import publish

ROOT = str(Path.home() / ".cache/augur/lab/soak-x")  # a session directory of this machine


def recording():
    return augrec.Recording(
        "lab-vm",
        1000,
        5000,
        [
            augrec.Series("host", "node_filesystem_avail_bytes", "bytes", "gauge", {"mountpoint": f"{ROOT}/mnt/run-0003", "device": "/dev/loop3"}, [1000, 2000, 3000], [1.5, 2.0, float("nan")]),
            augrec.Series("cgroup/augur-lab/run-0003", "container_memory_usage_bytes", "bytes", "gauge", {}, [1000, 2000], [10.0, 11.0]),
        ],
    )


class Publish(unittest.TestCase):
    def test_rewrites_session_paths_only(self):
        labels = [{"run_id": "run-0003", "mountpoint": f"{ROOT}/mnt/run-0003"}, {"run_id": "run-0004", "mountpoint": None}]
        roots = publish.session_roots(labels)
        self.assertEqual(roots, {ROOT})
        new = publish.rewrite_recording(recording(), roots)
        self.assertEqual(new.series[0].labels, {"mountpoint": "/lab/mnt/run-0003", "device": "/dev/loop3"})
        self.assertEqual(new.series[0].timestamps, [1000, 2000, 3000])
        self.assertEqual(publish.rewrite(json.dumps(labels[0]), roots), json.dumps({"run_id": "run-0003", "mountpoint": "/lab/mnt/run-0003"}))
        self.assertTrue(publish.machine_paths(f"x {ROOT} y"))
        self.assertFalse(publish.machine_paths("/lab/mnt/run-0003"))

    def test_end_to_end(self):
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "src", Path(tmp) / "dst"
            src.mkdir()
            with gzip.open(src / "d.augrec.gz", "wb") as f:
                f.write(augrec.encode(recording()))
            (src / "d.labels.jsonl").write_text(json.dumps({"run_id": "run-0003", "mountpoint": f"{ROOT}/mnt/run-0003"}) + "\n")
            (src / "d.meta.json").write_text(json.dumps({"name": "d"}))
            self.assertEqual(publish.main([str(src / "d.labels.jsonl"), "--to", str(dst)]), 0)
            rec = augrec.load(dst / "d.augrec.gz")
            self.assertEqual(rec.series[0].labels["mountpoint"], "/lab/mnt/run-0003")
            self.assertEqual(rec.series[1].values, [10.0, 11.0])
            self.assertNotIn(str(Path.home()), (dst / "d.labels.jsonl").read_text())


if __name__ == "__main__":
    unittest.main()
