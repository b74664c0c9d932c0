"""Label extraction: cgroup counter files, kernel OOM records, workload events, SLO
breaches and the decision of what a run ended in."""

import unittest

import labels

V1_OOM_CONTROL = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"
V1_OOM_CONTROL_OLD_KERNEL = "oom_kill_disable 0\nunder_oom 0\n"
V2_MEMORY_EVENTS = "low 0\nhigh 0\nmax 57\noom 2\noom_kill 2\noom_group_kill 0\n"
# Real records from this lab's kernel (6.18), as read from /dev/kmsg.
KMSG_OOM = (
    "6,425,12311339077,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
    "oom_memcg=/augur-lab/t1,task_memcg=/augur-lab/t1,task=labwork,pid=23768,uid=0\n"
)
KMSG_KILLED = (
    "3,426,12311339104,-;Memory cgroup out of memory: Killed process 23768 (labwork) total-vm:180048kB, "
    "anon-rss:65408kB, file-rss:1944kB, shmem-rss:0kB, UID:0 pgtables:176kB oom_score_adj:0\n"
)
KMSG_WITH_CONTINUATION = "6,194,289492,-;acpi PNP0A08:00: _OSC: OS supports\n SUBSYSTEM=acpi\n DEVICE=+acpi:PNP0A08:00\n"


class CounterFiles(unittest.TestCase):
    def test_v1_oom_control(self):
        self.assertEqual(labels.oom_kill_count(oom_control=V1_OOM_CONTROL), 1)
        self.assertEqual(labels.parse_flat_keyed(V1_OOM_CONTROL)["under_oom"], 0)

    def test_v1_oom_control_without_counter(self):
        self.assertIsNone(labels.oom_kill_count(oom_control=V1_OOM_CONTROL_OLD_KERNEL))

    def test_v2_memory_events(self):
        self.assertEqual(labels.oom_kill_count(memory_events=V2_MEMORY_EVENTS), 2)
        self.assertEqual(labels.parse_flat_keyed(V2_MEMORY_EVENTS)["max"], 57)

    def test_missing_files(self):
        self.assertIsNone(labels.oom_kill_count(None, None))
        self.assertEqual(labels.parse_flat_keyed(None), {})
        self.assertIsNone(labels.parse_int(None))
        self.assertIsNone(labels.parse_int("max\n"))
        self.assertEqual(labels.parse_int("268435456\n"), 268435456)

    def test_pids_events_and_cpu_stat(self):
        self.assertEqual(labels.parse_flat_keyed("max 12\n")["max"], 12)
        stat = labels.parse_flat_keyed("nr_periods 1437\nnr_throttled 686\nthrottled_time 8264552114\n")
        self.assertEqual(stat["nr_throttled"], 686)

    def test_psi_total(self):
        psi = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1270\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=970\n"
        self.assertEqual(labels.parse_psi_total_us(psi), 1270)
        self.assertEqual(labels.parse_psi_total_us(psi, "full"), 970)
        self.assertIsNone(labels.parse_psi_total_us(""))


class Kmsg(unittest.TestCase):
    def test_record(self):
        rec = labels.parse_kmsg_record(KMSG_OOM)
        self.assertEqual((rec.seq, rec.usec), (425, 12311339077))
        self.assertTrue(rec.message.startswith("oom-kill:"))

    def test_continuation_lines_dropped(self):
        rec = labels.parse_kmsg_record(KMSG_WITH_CONTINUATION)
        self.assertEqual(rec.message, "acpi PNP0A08:00: _OSC: OS supports")

    def test_garbage(self):
        self.assertIsNone(labels.parse_kmsg_record("no separator"))
        self.assertIsNone(labels.parse_kmsg_record("6,x,y,-;msg"))

    def test_oom_kill_line(self):
        oom = labels.parse_oom_kill(labels.parse_kmsg_record(KMSG_OOM).message)
        self.assertEqual(oom["pid"], 23768)
        self.assertEqual(oom["task_memcg"], "/augur-lab/t1")
        self.assertEqual(oom["oom_memcg"], "/augur-lab/t1")
        self.assertEqual(oom["task"], "labwork")

    def test_global_oom_and_multi_node_mems(self):
        msg = (
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0-1,"
            "global_oom,task_memcg=/augur-lab/run-0042,task=labwork,pid=7,uid=0"
        )
        oom = labels.parse_oom_kill(msg)
        self.assertEqual((oom["pid"], oom["task_memcg"]), (7, "/augur-lab/run-0042"))
        self.assertNotIn("oom_memcg", oom)

    def test_other_messages_are_not_oom_kills(self):
        self.assertIsNone(labels.parse_oom_kill(labels.parse_kmsg_record(KMSG_KILLED).message))
        self.assertIsNone(labels.parse_oom_kill("labwork invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL)"))

    def test_run_of_memcg(self):
        self.assertEqual(labels.run_of_memcg("/augur-lab/run-0001", "augur-lab"), "run-0001")
        self.assertEqual(labels.run_of_memcg("/augur-lab/run-0001/child", "augur-lab"), "run-0001")
        self.assertIsNone(labels.run_of_memcg("/augur-lab", "augur-lab"))
        self.assertIsNone(labels.run_of_memcg("/system.slice/x.service", "augur-lab"))
        self.assertIsNone(labels.run_of_memcg("/other/augur-lab/run-1", "augur-lab"))


class WorkloadLogs(unittest.TestCase):
    def test_events_with_torn_last_line(self):
        text = '{"t":1,"ev":"start","pid":3}\n{"t":2,"ev":"enospc","first":true}\n{"t":3,"ev":"h'
        ev = labels.read_events(text)
        self.assertEqual([e["ev"] for e in ev], ["start", "enospc"])
        self.assertEqual(labels.first_event(ev, "enospc")["t"], 2)
        self.assertIsNone(labels.first_event(ev, "fork_fail"))

    def test_first_event_matches_fields(self):
        ev = [
            {"t": 5, "ev": "fork_fail", "errno": "ENOMEM"},
            {"t": 9, "ev": "fork_fail", "errno": "EAGAIN"},
        ]
        self.assertEqual(labels.first_event(ev, "fork_fail", errno="EAGAIN")["t"], 9)

    def test_latency_log(self):
        self.assertEqual(labels.parse_latency_log("100 5.5\n200 7\nbad\n300"), [(100.0, 5.5), (200.0, 7.0)])


class SloBreach(unittest.TestCase):
    def test_fast_requests_never_breach(self):
        lat = [(i * 100.0, 10.0) for i in range(1000)]
        self.assertIsNone(labels.slo_breach(lat, slo_ms=100, window_ms=10_000, min_requests=20))

    def test_sustained_slowness_breaches_when_the_share_passes_the_budget(self):
        lat = [(i * 100.0, 10.0) for i in range(200)]  # 20 s fast, 10 per second
        lat += [(20_000 + i * 100.0, 500.0) for i in range(100)]
        # window 10 s = 100 requests; breach when > 5 of them are slow: the 6th slow one.
        t = labels.slo_breach(lat, slo_ms=100, window_ms=10_000, max_bad_fraction=0.05, min_requests=20)
        self.assertEqual(t, 20_000 + 5 * 100.0)

    def test_a_blip_within_budget_is_not_a_breach(self):
        lat = [(i * 100.0, 10.0) for i in range(600)]
        for i in (100, 101, 102):
            lat[i] = (lat[i][0], 900.0)
        self.assertIsNone(labels.slo_breach(lat, slo_ms=100, window_ms=30_000, min_requests=30))

    def test_slow_requests_leave_the_window(self):
        # One request per second; one slow request in a 30 s window is 3.3% (within a 5%
        # budget), two are 6.7%. Slow ones at 0 s and 35 s never share a window.
        lat = [(i * 1000.0, 900.0 if i in (0, 35) else 1.0) for i in range(100)]
        self.assertIsNone(labels.slo_breach(lat, slo_ms=100, window_ms=30_000, min_requests=20))
        lat = [(i * 1000.0, 900.0 if i in (0, 25) else 1.0) for i in range(100)]
        self.assertEqual(labels.slo_breach(lat, slo_ms=100, window_ms=30_000, min_requests=20), 25_000.0)

    def test_budget_has_a_floor_for_sparse_windows(self):
        # 3 slow among the first 40 requests is 7.5%, but the budget floor is 5% of 100.
        lat = [(i * 100.0, 900.0 if i in (5, 20, 30) else 1.0) for i in range(40)]
        self.assertIsNone(labels.slo_breach(lat, slo_ms=100, window_ms=30_000, min_requests=100))
        # A stalled server: few completions, all slow, breaches on the 6th (> 5% of 100).
        lat = [(i * 1000.0, 5000.0) for i in range(10)]
        self.assertEqual(labels.slo_breach(lat, slo_ms=100, window_ms=30_000, min_requests=100), 5000.0)

    def test_percentile(self):
        self.assertIsNone(labels.percentile([], 0.5))
        self.assertEqual(labels.percentile(list(range(1, 101)), 0.99), 99)
        self.assertEqual(labels.percentile([3, 1, 2], 0.5), 2)


class Decide(unittest.TestCase):
    def test_normal_run(self):
        d = labels.decide({"exit_ms": 1000.0, "returncode": 0, "oom_kill": 0, "events": []})
        self.assertEqual(d, {"failure": None, "t_f_ms": None, "t_f_source": None, "failures": []})

    def test_oom_time_from_kmsg(self):
        d = labels.decide({"exit_ms": 5030.0, "returncode": -9, "oom_kill": 1, "kmsg_oom_ms": 5000.4})
        self.assertEqual((d["failure"], d["t_f_ms"], d["t_f_source"]), ("oom", 5000, "kmsg"))

    def test_oom_time_falls_back_to_exit(self):
        d = labels.decide({"exit_ms": 5030.0, "returncode": -9, "oom_kill": 1})
        self.assertEqual((d["failure"], d["t_f_ms"], d["t_f_source"]), ("oom", 5030, "exit"))

    def test_unexplained_sigkill_counts_as_oom(self):
        d = labels.decide({"exit_ms": 7.0, "returncode": -9, "oom_kill": None})
        self.assertEqual(d["failure"], "oom")

    def test_deadline_kill_is_not_a_failure(self):
        d = labels.decide({"exit_ms": 9000.0, "returncode": -9, "killed_by_driver": True, "oom_kill": 0})
        self.assertIsNone(d["failure"])

    def test_workload_events(self):
        ev = [{"t": 10, "ev": "start"}, {"t": 400, "ev": "enospc", "first": True}]
        d = labels.decide({"exit_ms": 900.0, "returncode": 0, "events": ev})
        self.assertEqual((d["failure"], d["t_f_ms"], d["t_f_source"]), ("enospc", 400, "workload"))
        ev = [{"t": 10, "ev": "start"}, {"t": 300, "ev": "fork_fail", "errno": "EAGAIN", "first": True}]
        d = labels.decide({"exit_ms": 900.0, "returncode": 0, "events": ev})
        self.assertEqual((d["failure"], d["t_f_ms"]), ("fork_eagain", 300))

    def test_earliest_failure_wins_and_all_are_listed(self):
        ev = [{"t": 700, "ev": "fork_fail", "errno": "EAGAIN"}]
        d = labels.decide(
            {"exit_ms": 1000.0, "returncode": -9, "oom_kill": 1, "kmsg_oom_ms": 990.0, "events": ev, "slo_breach_ms": 650.0}
        )
        self.assertEqual(d["failure"], "slo")
        self.assertEqual([f["type"] for f in d["failures"]], ["slo", "fork_eagain", "oom"])

    def test_workload_error_is_labelled(self):
        d = labels.decide({"exit_ms": 50.0, "returncode": 2, "events": []})
        self.assertEqual(d["failure"], "error")


if __name__ == "__main__":
    unittest.main()
