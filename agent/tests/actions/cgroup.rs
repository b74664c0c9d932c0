//! Resize through cgroup files: real v1 memory and cpu cgroups, v2 on fixture directories.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use augur_agent::actuator::Status;
use augur_agent::workload::{LimitsConfig, WorkloadConfig};

use crate::{cmd, executor, health_command, read, skip};

const V1_ROOT: &str = "/sys/fs/cgroup";

/// A real v1 cgroup in the memory and cpu controllers, removed (with its processes) on drop.
struct TestCgroup {
    name: String,
    dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl TestCgroup {
    fn create(test: &str, tag: &str) -> Option<TestCgroup> {
        let name = format!("augur-test-{}-{tag}", std::process::id());
        let mut cg = TestCgroup { name: name.clone(), dirs: Vec::new(), children: Vec::new() };
        for ctrl in ["memory", "cpu"] {
            let root = Path::new(V1_ROOT).join(ctrl);
            if !root.join("tasks").is_file() {
                skip(test, &format!("no cgroup v1 {ctrl} controller at {}", root.display()));
                return None;
            }
            let dir = root.join(&name);
            if let Err(e) = std::fs::create_dir(&dir) {
                skip(test, &format!("cannot create {}: {e} (needs root)", dir.display()));
                return None;
            }
            cg.dirs.push(dir);
        }
        Some(cg)
    }

    fn memory(&self, file: &str) -> PathBuf {
        Path::new(V1_ROOT).join("memory").join(&self.name).join(file)
    }

    fn cpu(&self, file: &str) -> PathBuf {
        Path::new(V1_ROOT).join("cpu").join(&self.name).join(file)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.dirs {
            for _ in 0..100 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn workload(name: &str, cgroup: &str) -> WorkloadConfig {
    let mut w = WorkloadConfig::named(name);
    w.cgroup = Some(cgroup.into());
    w.allowed_actions = vec!["resize".into()];
    w.health = Some(health_command(&["true"]));
    w
}

#[tokio::test]
async fn v1_resize_dry_run_and_rollback_on_a_real_memory_and_cpu_cgroup() {
    let test = "v1_resize_dry_run_and_rollback_on_a_real_memory_and_cpu_cgroup";
    let Some(cg) = TestCgroup::create(test, "resize") else { return };
    std::fs::write(cg.memory("memory.limit_in_bytes"), "268435456").expect("set initial limit");
    let quota_before = read(&cg.cpu("cpu.cfs_quota_us"));
    let state = tempfile::tempdir().expect("tempdir");
    let mut ex = executor(state.path(), Path::new(V1_ROOT), &[workload("web", &cg.name)]);

    let mut dry = cmd("c0", "web", "resize", &[("memory_max", "512MiB"), ("cpu_max", "0.5")]);
    dry.dry_run = true;
    let o = ex.execute(&dry).await;
    assert_eq!(o.status, Status::DryRun, "{o:?}");
    assert!(o.details["would.1"].contains("memory.limit_in_bytes"), "{o:?}");
    assert!(o.details["would.2"].contains("\"50000\""), "{o:?}");
    assert_eq!(read(&cg.memory("memory.limit_in_bytes")), "268435456", "dry run changed the memory limit");
    assert_eq!(read(&cg.cpu("cpu.cfs_quota_us")), quota_before, "dry run changed the cpu quota");
    assert!(ex.ledger().is_empty(), "a dry run is not recorded");

    let o = ex.execute(&cmd("c1", "web", "resize", &[("memory_max", "512MiB"), ("cpu_max", "0.5")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(read(&cg.memory("memory.limit_in_bytes")), "536870912");
    assert_eq!(read(&cg.cpu("cpu.cfs_quota_us")), "50000");
    assert_eq!(o.details["previous.memory_max"], "268435456");
    assert_eq!(o.details["previous.cpu_max"], if quota_before == "-1" { "max" } else { &quota_before });

    let o = ex.execute(&cmd("r1", "", "rollback", &[("command_id", "c1")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(read(&cg.memory("memory.limit_in_bytes")), "268435456", "rollback restores the memory limit");
    assert_eq!(read(&cg.cpu("cpu.cfs_quota_us")), quota_before, "rollback restores the cpu quota");
    let o = ex.execute(&cmd("r2", "", "rollback", &[("command_id", "c1")])).await;
    assert_eq!(o.status, Status::Refused, "{o:?}");
    assert!(o.message.contains("already undone"), "{o:?}");
}

#[tokio::test]
async fn v1_resize_below_usage_is_refused_and_the_workload_keeps_running() {
    let test = "v1_resize_below_usage_is_refused_and_the_workload_keeps_running";
    let Some(mut cg) = TestCgroup::create(test, "usage") else { return };
    std::fs::write(cg.memory("memory.limit_in_bytes"), "536870912").expect("set initial limit");
    // A real process in the cgroup holding 96 MiB of touched memory.
    let procs = cg.memory("cgroup.procs");
    let script = format!(
        "echo $$ > {} && exec python3 -c 'import time; b = b\"x\" * (96 << 20); time.sleep(120)'",
        procs.display()
    );
    let child = match Command::new("sh").args(["-c", &script]).stdin(Stdio::null()).spawn() {
        Ok(c) => c,
        Err(e) => return skip(test, &format!("cannot start sh: {e}")),
    };
    let pid = child.id();
    cg.children.push(child);
    let start = Instant::now();
    let usage = loop {
        let u: u64 = read(&cg.memory("memory.usage_in_bytes")).parse().expect("usage");
        if u >= 96 << 20 {
            break u;
        }
        if start.elapsed() > Duration::from_secs(20) {
            return skip(test, &format!("the python3 workload did not reach 96 MiB (usage {u})"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let state = tempfile::tempdir().expect("tempdir");
    let pidfile = state.path().join("web.pid");
    std::fs::write(&pidfile, pid.to_string()).expect("pidfile");
    let mut by_pid = WorkloadConfig::named("web-pid");
    by_pid.pidfile = Some(pidfile);
    by_pid.allowed_actions = vec!["resize".into()];
    by_pid.health = Some(health_command(&["true"]));
    let mut ex = executor(state.path(), Path::new(V1_ROOT), &[workload("web", &cg.name), by_pid]);

    let o = ex.execute(&cmd("c1", "web", "resize", &[("memory_max", "64MiB")])).await;
    assert_eq!(o.status, Status::Refused, "{o:?}");
    assert!(o.message.contains("below current usage"), "{o:?}");
    // Above usage but within the 16 MiB margin: refused too.
    let o = ex.execute(&cmd("c2", "web", "resize", &[("memory_max", &(usage + (4 << 20)).to_string())])).await;
    assert_eq!(o.status, Status::Refused, "{o:?}");
    assert_eq!(read(&cg.memory("memory.limit_in_bytes")), "536870912", "a refused resize changed the limit");
    assert!(cg.children[0].try_wait().expect("wait").is_none(), "the workload must still run");
    assert!(ex.ledger().is_empty(), "refusals are not recorded as applied");

    // The same cgroup found through the process's pidfile: raising works.
    let o = ex.execute(&cmd("c3", "web-pid", "resize", &[("memory_max", "768MiB")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(read(&cg.memory("memory.limit_in_bytes")), (768u64 << 20).to_string());
    assert_eq!(o.details["cgroup.memory"], cg.memory("").display().to_string().trim_end_matches('/'));
}

/// A cgroup v2 fixture: `<root>/unified` with `apps/web` control files.
fn v2_fixture(root: &Path, memory_max: &str, usage: u64) -> PathBuf {
    let u = root.join("unified");
    let dir = u.join("apps/web");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(u.join("cgroup.controllers"), "cpu memory pids\n").expect("controllers");
    std::fs::write(dir.join("memory.max"), format!("{memory_max}\n")).expect("memory.max");
    std::fs::write(dir.join("memory.high"), "max\n").expect("memory.high");
    std::fs::write(dir.join("cpu.max"), "max 100000\n").expect("cpu.max");
    std::fs::write(dir.join("memory.current"), format!("{usage}\n")).expect("memory.current");
    dir
}

fn snapshot(dir: &Path) -> Vec<(String, String)> {
    ["memory.max", "memory.high", "cpu.max"].iter().map(|f| (f.to_string(), read(&dir.join(f)))).collect()
}

#[tokio::test]
async fn v2_resize_writes_files_and_rollback_after_an_agent_restart_restores_them() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let dir = v2_fixture(root.path(), "max", 100 << 20);
    let before = snapshot(&dir);
    let args = [("memory_max", "512MiB"), ("memory_high", "400MiB"), ("cpu_max", "1.5")];
    {
        let mut ex = executor(state.path(), root.path(), &[workload("web", "apps/web")]);
        let o = ex.execute(&cmd("c1", "web", "resize", &args)).await;
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        assert_eq!(read(&dir.join("memory.max")), "536870912");
        assert_eq!(read(&dir.join("memory.high")), "419430400");
        assert_eq!(read(&dir.join("cpu.max")), "150000 100000");
        assert_eq!((o.details["previous.memory_max"].as_str(), o.details["previous.cpu_max"].as_str()), ("max", "max"));
    }
    // A new agent process (same state dir) still knows how to undo c1.
    let mut ex = executor(state.path(), root.path(), &[workload("web", "apps/web")]);
    let o = ex.execute(&cmd("r1", "web", "rollback", &[("command_id", "c1")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(snapshot(&dir), before);
}

#[tokio::test]
async fn v2_resize_refusals_leave_files_unchanged() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let dir = v2_fixture(root.path(), "209715200", 100 << 20);
    let before = snapshot(&dir);
    let mut w = workload("web", "apps/web");
    w.limits = LimitsConfig { memory_max: 1 << 30, memory_margin: 16 << 20, cpu_max: 2.0 };
    let mut ex = executor(state.path(), root.path(), &[w]);
    for (id, args, needle) in [
        ("c1", [("memory_max", "50MiB")], "below current usage"),
        ("c2", [("memory_high", "110MiB")], "below current usage"),
        ("c3", [("memory_max", "2GiB")], "limits.memory_max"),
        ("c4", [("cpu_max", "3")], "limits.cpu_max"),
    ] {
        let o = ex.execute(&cmd(id, "web", "resize", &args)).await;
        assert_eq!(o.status, Status::Refused, "{id}: {o:?}");
        assert!(o.message.contains(needle), "{id}: {o:?} should mention {needle}");
    }
    assert_eq!(snapshot(&dir), before);
}

#[tokio::test]
async fn v2_failed_health_check_rolls_the_resize_back() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let dir = v2_fixture(root.path(), "max", 100 << 20);
    let before = snapshot(&dir);
    let mut w = workload("web", "apps/web");
    w.health = Some(health_command(&["sh", "-c", "echo unhealthy >&2; exit 3"]));
    let mut ex = executor(state.path(), root.path(), &[w]);
    let o = ex.execute(&cmd("c1", "web", "resize", &[("memory_max", "1GiB"), ("cpu_max", "2")])).await;
    assert_eq!(o.status, Status::RolledBack, "{o:?}");
    assert!(o.message.contains("unhealthy") && o.message.contains("undone"), "{o:?}");
    assert_eq!(snapshot(&dir), before);
    // Nothing is left to undo.
    let o = ex.execute(&cmd("r1", "web", "rollback", &[("command_id", "c1")])).await;
    assert_eq!(o.status, Status::Refused, "{o:?}");
}

#[tokio::test]
async fn v2_undo_never_sets_a_limit_below_current_usage() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let dir = v2_fixture(root.path(), "209715200", 100 << 20);
    let mut ex = executor(state.path(), root.path(), &[workload("web", "apps/web")]);
    let o = ex.execute(&cmd("c1", "web", "resize", &[("memory_max", "512MiB")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    // The workload grew past the old limit: going back would OOM-kill it.
    std::fs::write(dir.join("memory.current"), format!("{}\n", 300u64 << 20)).expect("usage grows");
    let o = ex.execute(&cmd("r1", "web", "rollback", &[("command_id", "c1")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert!(o.message.contains("undone except"), "{o:?}");
    assert!(o.details.get("undo.1.skipped").is_some_and(|m| m.contains("below current usage")), "{o:?}");
    assert_eq!(read(&dir.join("memory.max")), "536870912", "the raised limit stays");
}

#[tokio::test]
async fn an_incomplete_undo_is_reported_failed_and_can_be_retried_by_a_rollback() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let dir = v2_fixture(root.path(), "max", 100 << 20);
    let cpu_max = dir.join("cpu.max");
    // The health check fails and takes cpu.max away, so the undo cannot write it back.
    let mut w = workload("web", "apps/web");
    let hidden = dir.join("cpu.max.hidden");
    w.health = Some(health_command(&[
        "sh",
        "-c",
        // Only the first time (the rollback runs the check again).
        "[ -e \"$2\" ] && exit 0; touch \"$2\"; mv \"$0\" \"$1\"; exit 1",
        &cpu_max.display().to_string(),
        &hidden.display().to_string(),
        &state.path().join("health-ran").display().to_string(),
    ]));
    let mut ex = executor(state.path(), root.path(), &[w]);
    let o = ex.execute(&cmd("c1", "web", "resize", &[("memory_max", "1GiB"), ("cpu_max", "2")])).await;
    assert_eq!(o.status, Status::Failed, "{o:?}");
    assert!(o.message.contains("UNDO INCOMPLETE"), "{o:?}");
    assert_eq!(read(&dir.join("memory.max")), "max", "the part that could be undone was");
    // The file is back: a rollback finishes the undo from the ledger.
    std::fs::rename(&hidden, &cpu_max).expect("put cpu.max back");
    let o = ex.execute(&cmd("r1", "other", "rollback", &[("command_id", "c1")])).await;
    assert_eq!(o.status, Status::Refused, "a rollback names the same workload: {o:?}");
    let o = ex.execute(&cmd("r2", "web", "rollback", &[("command_id", "c1")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(read(&cpu_max), "max 100000");
    assert_eq!(read(&dir.join("memory.max")), "max");
}

#[tokio::test]
async fn v1_resize_finds_the_cgroup_of_a_named_process() {
    let test = "v1_resize_finds_the_cgroup_of_a_named_process";
    let Some(mut cg) = TestCgroup::create(test, "byname") else { return };
    std::fs::write(cg.memory("memory.limit_in_bytes"), "268435456").expect("set initial limit");
    // A process with a name no other process has, started inside the cgroup.
    let bin_dir = tempfile::tempdir().expect("tempdir");
    let comm = format!("augsl{}", std::process::id() % 1_000_000);
    let bin = bin_dir.path().join(&comm);
    std::fs::copy("/bin/sleep", &bin).expect("copy sleep");
    let script = format!("echo $$ > {} && exec {} 60", cg.memory("cgroup.procs").display(), bin.display());
    cg.children.push(Command::new("sh").args(["-c", &script]).stdin(Stdio::null()).spawn().expect("start"));
    let start = Instant::now();
    while read(&cg.memory("cgroup.procs")).is_empty()
        || !std::fs::read_dir("/proc")
            .expect("proc")
            .flatten()
            .any(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == comm))
    {
        assert!(start.elapsed() < Duration::from_secs(10), "the named process did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let state = tempfile::tempdir().expect("tempdir");
    let mut w = WorkloadConfig::named("sleeper");
    w.process = Some(comm.clone());
    w.allowed_actions = vec!["resize".into()];
    w.health = Some(health_command(&["true"]));
    let mut ex = executor(state.path(), Path::new(V1_ROOT), &[w]);
    let o = ex.execute(&cmd("c1", "sleeper", "resize", &[("memory_max", "300MiB")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(read(&cg.memory("memory.limit_in_bytes")), (300u64 << 20).to_string());
}

#[tokio::test]
async fn v1_resize_keeps_the_swap_allowance_of_memsw_limits() {
    let test = "v1_resize_keeps_the_swap_allowance_of_memsw_limits";
    let Some(cg) = TestCgroup::create(test, "memsw") else { return };
    let memsw = cg.memory("memory.memsw.limit_in_bytes");
    if !memsw.exists() {
        return skip(test, "no swap accounting (memory.memsw.limit_in_bytes)");
    }
    // memsw must stay >= the memory limit: set the limit first, then memsw.
    std::fs::write(cg.memory("memory.limit_in_bytes"), "268435456").expect("limit");
    std::fs::write(&memsw, (256u64 << 20).to_string()).expect("memsw");
    let state = tempfile::tempdir().expect("tempdir");
    let mut ex = executor(state.path(), Path::new(V1_ROOT), &[workload("web", &cg.name)]);
    let o = ex.execute(&cmd("c1", "web", "resize", &[("memory_max", "512MiB")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(read(&cg.memory("memory.limit_in_bytes")), (512u64 << 20).to_string());
    assert_eq!(read(&memsw), (512u64 << 20).to_string(), "memsw follows with the same swap allowance (0)");
    let o = ex.execute(&cmd("c2", "web", "resize", &[("memory_max", "384MiB")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(read(&memsw), (384u64 << 20).to_string());
    for id in ["c2", "c1"] {
        let o = ex.execute(&cmd(&format!("undo-{id}"), "web", "rollback", &[("command_id", id)])).await;
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
    }
    assert_eq!(read(&cg.memory("memory.limit_in_bytes")), "268435456");
    assert_eq!(read(&memsw), "268435456");
}
