//! Resize through cgroup control files, v2 (`memory.max`, `memory.high`, `cpu.max`) or v1
//! (`memory.limit_in_bytes`, `memory.soft_limit_in_bytes`, `cpu.cfs_quota_us` over
//! `cpu.cfs_period_us`; with swap accounting, `memory.memsw.limit_in_bytes` moves along
//! with the memory limit, keeping the swap allowance).
//!
//! Plans read the current values (kept for undo and reported as `previous.<arg>`) and
//! refuse what local safety forbids: a memory limit above the workload's cap, or below
//! current usage plus the margin (lowering a limit under usage makes the kernel reclaim
//! hard or OOM-kill the workload: we never cause that). The same guard is checked again
//! at write time, and an undo that would go below usage is skipped rather than written.

use std::fs;
use std::path::{Path, PathBuf};

use augur_core::command::Resize;
use augur_core::units::format_bytes;

use super::{MemoryGuard, Plan, Step, StepError};
use crate::workload::{LimitsConfig, WorkloadConfig};

/// v1 reports "no limit" as a huge number; anything at or above this is unlimited.
const V1_UNLIMITED: u64 = 1 << 62;
/// CFS period used when a cgroup does not say.
const DEFAULT_PERIOD_US: u64 = 100_000;

/// The control-file directories of one workload.
#[derive(Debug, Clone, PartialEq)]
pub enum CgroupTarget {
    /// A cgroup v2 directory.
    V2 { dir: PathBuf },
    /// cgroup v1 memory and cpu controller directories (either may be absent).
    V1 { memory: Option<PathBuf>, cpu: Option<PathBuf> },
}

/// Cgroup paths of a process, per hierarchy, from `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcCgroups {
    pub v1_memory: Option<String>,
    pub v1_cpu: Option<String>,
    pub v2: Option<String>,
}

/// Parses `/proc/<pid>/cgroup` (`hierarchy-id:controllers:path` lines).
pub fn parse_proc_cgroup(text: &str) -> ProcCgroups {
    let mut p = ProcCgroups::default();
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else { continue };
        let rel = path.trim_start_matches('/').to_owned();
        if ctrls.is_empty() {
            p.v2 = Some(rel);
        } else {
            for c in ctrls.split(',') {
                match c {
                    "memory" => p.v1_memory = Some(rel.clone()),
                    "cpu" => p.v1_cpu = Some(rel.clone()),
                    _ => {}
                }
            }
        }
    }
    p
}

fn unified_root(root: &Path) -> Option<PathBuf> {
    [root.to_path_buf(), root.join("unified")].into_iter().find(|r| r.join("cgroup.controllers").is_file())
}

fn v1_dir(root: &Path, ctrl_dirs: &[&str], rel: &str, file: &str) -> Option<PathBuf> {
    ctrl_dirs.iter().map(|c| root.join(c).join(rel)).find(|d| d.join(file).is_file())
}

/// Finds a workload's control files under `root`: v2 when the unified hierarchy has its
/// memory or cpu files, else v1.
pub fn locate(root: &Path, paths: &ProcCgroups) -> Result<CgroupTarget, String> {
    if let (Some(u), Some(rel)) = (unified_root(root), &paths.v2) {
        let dir = u.join(rel);
        if dir.join("memory.max").is_file() || dir.join("cpu.max").is_file() {
            return Ok(CgroupTarget::V2 { dir });
        }
    }
    let memory = paths.v1_memory.as_deref().and_then(|r| v1_dir(root, &["memory"], r, "memory.limit_in_bytes"));
    let cpu = paths.v1_cpu.as_deref().and_then(|r| v1_dir(root, &["cpu", "cpu,cpuacct"], r, "cpu.cfs_quota_us"));
    if memory.is_some() || cpu.is_some() {
        return Ok(CgroupTarget::V1 { memory, cpu });
    }
    Err(format!(
        "no cgroup control files found under {} for {}",
        root.display(),
        paths.v2.as_deref().or(paths.v1_memory.as_deref()).unwrap_or("?")
    ))
}

/// The cgroup of a declared workload (its `cgroup`, or that of its pidfile or process).
pub fn locate_workload(root: &Path, proc_root: &Path, w: &WorkloadConfig) -> Result<CgroupTarget, String> {
    let paths = if let Some(c) = &w.cgroup {
        ProcCgroups { v1_memory: Some(c.clone()), v1_cpu: Some(c.clone()), v2: Some(c.clone()) }
    } else {
        let pid = if let Some(pf) = &w.pidfile {
            let t = fs::read_to_string(pf).map_err(|e| format!("cannot read pidfile {}: {e}", pf.display()))?;
            t.trim().parse::<u32>().map_err(|_| format!("pidfile {} does not hold a pid", pf.display()))?
        } else if let Some(name) = &w.process {
            find_process(proc_root, name).ok_or_else(|| format!("no running process named {name:?}"))?
        } else {
            return Err("workload names no cgroup, pidfile or process".into());
        };
        let f = proc_root.join(pid.to_string()).join("cgroup");
        let t = fs::read_to_string(&f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        parse_proc_cgroup(&t)
    };
    locate(root, &paths)
}

/// The oldest process whose `comm` is `name` (lowest start time).
pub(super) fn find_process(proc_root: &Path, name: &str) -> Option<u32> {
    let mut best: Option<(u64, u32)> = None;
    for e in fs::read_dir(proc_root).ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(comm) = fs::read_to_string(e.path().join("comm")) else { continue };
        if comm.trim_end() != name {
            continue;
        }
        let start = fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(19).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(u64::MAX);
        if best.is_none_or(|(s, _)| start < s) {
            best = Some((start, pid));
        }
    }
    best.map(|(_, p)| p)
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map(|s| s.trim().to_owned()).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_u64(path: &Path) -> Result<u64, String> {
    let t = read(path)?;
    t.parse().map_err(|_| format!("{} holds {t:?}, not a number", path.display()))
}

/// Checks a memory value against the usage file; `value` may be `max` or `-1` (unlimited).
fn check_guard(value: &str, g: &MemoryGuard) -> Result<(), String> {
    let Ok(v) = value.trim().parse::<u64>() else { return Ok(()) };
    let usage = read_u64(&g.usage)?;
    let floor = usage.saturating_add(g.margin);
    if v < floor {
        return Err(format!(
            "{} is below current usage {} + margin {} (would force reclaim or an OOM kill)",
            format_bytes(v),
            format_bytes(usage),
            format_bytes(g.margin)
        ));
    }
    Ok(())
}

/// Writes `value` to a control file, refusing a guarded memory value below usage + margin.
pub fn write_guarded(path: &Path, value: &str, guard: Option<&MemoryGuard>) -> Result<(), StepError> {
    if let Some(g) = guard {
        check_guard(value, g).map_err(StepError::Guard)?;
    }
    // Control files exist already: never create one (a typo must fail, not make a file).
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| StepError::Failed(format!("cannot open {}: {e}", path.display())))?;
    std::io::Write::write_all(&mut f, value.as_bytes())
        .map_err(|e| StepError::Failed(format!("writing {value:?} to {}: {e}", path.display())))
}

fn check_cap(arg: &str, v: u64, limits: &LimitsConfig) -> Result<(), String> {
    if limits.memory_max > 0 && v > limits.memory_max {
        return Err(format!(
            "{arg} {} is above this workload's cap limits.memory_max {}",
            format_bytes(v),
            format_bytes(limits.memory_max)
        ));
    }
    Ok(())
}

fn cpu_cap(cores: f64, limits: &LimitsConfig) -> Result<(), String> {
    if limits.cpu_max > 0.0 && cores > limits.cpu_max {
        return Err(format!("cpu_max {cores} cores is above this workload's cap limits.cpu_max {}", limits.cpu_max));
    }
    Ok(())
}

/// A memory step: the new value, guarded, with an undo back to `previous` (also guarded).
fn memory_step(
    plan: &mut Plan,
    arg: &str,
    file: PathBuf,
    usage: &Path,
    value: u64,
    limits: &LimitsConfig,
) -> Result<(), String> {
    check_cap(arg, value, limits)?;
    let previous = read(&file)?;
    let guard = MemoryGuard { usage: usage.to_path_buf(), margin: limits.memory_margin };
    check_guard(&value.to_string(), &guard).map_err(|m| format!("refusing {arg}: {m}"))?;
    plan.details.insert(format!("previous.{arg}"), previous.clone());
    plan.push(
        Step::Write { path: file.clone(), value: value.to_string(), memory_guard: Some(guard.clone()) },
        vec![Step::Write { path: file, value: previous, memory_guard: Some(guard) }],
    );
    Ok(())
}

/// The steps of a resize of `target`.
pub fn plan_resize(target: &CgroupTarget, r: &Resize, limits: &LimitsConfig) -> Result<Plan, String> {
    let mut plan = Plan { health_check: true, ..Plan::default() };
    match target {
        CgroupTarget::V2 { dir } => {
            plan.details.insert("cgroup".into(), dir.display().to_string());
            let usage = dir.join("memory.current");
            if let Some(v) = r.memory_max {
                memory_step(&mut plan, "memory_max", dir.join("memory.max"), &usage, v, limits)?;
            }
            if let Some(v) = r.memory_high {
                memory_step(&mut plan, "memory_high", dir.join("memory.high"), &usage, v, limits)?;
            }
            if let Some(c) = r.cpu_max {
                cpu_cap(c, limits)?;
                let file = dir.join("cpu.max");
                let previous = read(&file)?;
                let period = previous
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse::<u64>().ok())
                    .filter(|p| *p > 0)
                    .unwrap_or(DEFAULT_PERIOD_US);
                let quota = quota_us(c, period);
                let cores = match previous.split_whitespace().next() {
                    Some(q) if q != "max" => q.parse::<f64>().map(|q| (q / period as f64).to_string()).ok(),
                    _ => None,
                };
                plan.details.insert("previous.cpu_max".into(), cores.unwrap_or_else(|| "max".into()));
                plan.push(
                    Step::Write { path: file.clone(), value: format!("{quota} {period}"), memory_guard: None },
                    vec![Step::Write { path: file, value: previous, memory_guard: None }],
                );
            }
        }
        CgroupTarget::V1 { memory, cpu } => {
            if r.memory_max.is_some() || r.memory_high.is_some() {
                let dir = memory.as_ref().ok_or("the v1 memory controller does not hold this workload")?;
                plan.details.insert("cgroup.memory".into(), dir.display().to_string());
                let usage = dir.join("memory.usage_in_bytes");
                if let Some(v) = r.memory_max {
                    let limit = dir.join("memory.limit_in_bytes");
                    // With swap accounting the kernel wants memory.limit_in_bytes <=
                    // memory.memsw.limit_in_bytes: move memsw along, keeping the swap
                    // allowance, first when raising and last when lowering.
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    let memsw_prev =
                        read(&memsw).ok().and_then(|t| t.parse::<u64>().ok()).filter(|m| *m < V1_UNLIMITED);
                    match memsw_prev {
                        Some(sw) => {
                            let old = read_u64(&limit)?;
                            let new_sw = v.saturating_add(sw.saturating_sub(old));
                            let guard = MemoryGuard {
                                usage: dir.join("memory.memsw.usage_in_bytes"),
                                margin: limits.memory_margin,
                            };
                            let sw_step = (
                                Step::Write {
                                    path: memsw.clone(),
                                    value: new_sw.to_string(),
                                    memory_guard: Some(guard.clone()),
                                },
                                vec![Step::Write { path: memsw, value: sw.to_string(), memory_guard: Some(guard) }],
                            );
                            plan.details.insert("previous.memsw_limit".into(), sw.to_string());
                            if v > old {
                                plan.steps.push(sw_step);
                                memory_step(&mut plan, "memory_max", limit, &usage, v, limits)?;
                            } else {
                                memory_step(&mut plan, "memory_max", limit, &usage, v, limits)?;
                                plan.steps.push(sw_step);
                            }
                        }
                        None => memory_step(&mut plan, "memory_max", limit, &usage, v, limits)?,
                    }
                }
                if let Some(v) = r.memory_high {
                    memory_step(&mut plan, "memory_high", dir.join("memory.soft_limit_in_bytes"), &usage, v, limits)?;
                }
                for k in ["previous.memory_max", "previous.memory_high"] {
                    if let Some(p) = plan.details.get_mut(k)
                        && p.parse::<u64>().is_ok_and(|n| n >= V1_UNLIMITED)
                    {
                        *p = "max".into();
                    }
                }
            }
            if let Some(c) = r.cpu_max {
                cpu_cap(c, limits)?;
                let dir = cpu.as_ref().ok_or("the v1 cpu controller does not hold this workload")?;
                plan.details.insert("cgroup.cpu".into(), dir.display().to_string());
                let file = dir.join("cpu.cfs_quota_us");
                let previous = read(&file)?;
                let period = read_u64(&dir.join("cpu.cfs_period_us")).unwrap_or(DEFAULT_PERIOD_US).max(1);
                plan.details.insert(
                    "previous.cpu_max".into(),
                    match previous.parse::<i64>() {
                        Ok(q) if q > 0 => format!("{}", q as f64 / period as f64),
                        _ => "max".into(),
                    },
                );
                plan.push(
                    Step::Write { path: file.clone(), value: quota_us(c, period).to_string(), memory_guard: None },
                    vec![Step::Write { path: file, value: previous, memory_guard: None }],
                );
            }
        }
    }
    Ok(plan)
}

/// CFS quota for `cores` over `period_us` (at least the kernel's 1 ms minimum).
fn quota_us(cores: f64, period_us: u64) -> u64 {
    ((cores * period_us as f64).round() as u64).max(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_lines_give_per_hierarchy_paths() {
        let p = parse_proc_cgroup("12:memory:/apps/web\n4:cpu,cpuacct:/apps/web-cpu\n0::/system.slice/x.service\n");
        assert_eq!(p.v1_memory.as_deref(), Some("apps/web"));
        assert_eq!(p.v1_cpu.as_deref(), Some("apps/web-cpu"));
        assert_eq!(p.v2.as_deref(), Some("system.slice/x.service"));
    }

    #[test]
    fn quotas_round_and_respect_the_kernel_minimum() {
        assert_eq!(quota_us(1.5, 100_000), 150_000);
        assert_eq!(quota_us(0.001, 100_000), 1000);
    }
}
