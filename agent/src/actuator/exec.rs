//! Running programs: the [`Runner`] seam (real processes, or a recorder in unit tests),
//! and start / stop / restart plans through exec hooks or systemd units.
//!
//! Programs run from an argv without a shell, with stdin closed, in their own process
//! group; one still running at its timeout is killed with its whole group.

use std::time::Duration;

use futures::future::BoxFuture;

use super::{Plan, Step, systemd};
use crate::workload::WorkloadConfig;

/// Output kept from a program (each stream truncated to 4 KiB).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOutput {
    /// Exit status; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs an argv with a timeout.
pub trait Runner: Send + Sync {
    /// `Err` when the program cannot start or overruns `timeout` (then it is killed).
    fn run<'a>(&'a self, argv: &'a [String], timeout: Duration) -> BoxFuture<'a, Result<RunOutput, String>>;
}

/// Runs real processes.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessRunner;

const KEEP: usize = 4096;

fn keep(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(KEEP)]).trim_end().to_owned();
    if b.len() > KEEP { format!("{s}…") } else { s }
}

impl Runner for ProcessRunner {
    fn run<'a>(&'a self, argv: &'a [String], timeout: Duration) -> BoxFuture<'a, Result<RunOutput, String>> {
        Box::pin(async move {
            let (prog, args) = argv.split_first().ok_or("empty argv")?;
            let child = tokio::process::Command::new(prog)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start {prog}: {e}"))?;
            let pid = child.id();
            match tokio::time::timeout(timeout, child.wait_with_output()).await {
                Ok(Ok(out)) => {
                    Ok(RunOutput { code: out.status.code(), stdout: keep(&out.stdout), stderr: keep(&out.stderr) })
                }
                Ok(Err(e)) => Err(format!("waiting for {prog}: {e}")),
                Err(_) => {
                    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                        // SAFETY: kill(2) on the process group we created; no memory is touched.
                        unsafe {
                            libc::kill(-pid, libc::SIGKILL);
                        }
                    }
                    Err(format!("{prog} still running after {timeout:?}: killed"))
                }
            }
        })
    }
}

/// Runs `argv` and requires exit status 0.
pub async fn run_checked(runner: &dyn Runner, argv: &[String], timeout: Duration) -> Result<RunOutput, String> {
    let out = runner.run(argv, timeout).await?;
    match out.code {
        Some(0) => Ok(out),
        code => Err(format!(
            "{} exited with {}{}",
            super::shell_words(argv),
            code.map_or("a signal".to_owned(), |c| format!("status {c}")),
            if out.stderr.is_empty() { String::new() } else { format!(": {}", out.stderr) }
        )),
    }
}

/// A hook argv with `{{instance}}` replaced.
pub fn hook_argv(argv: &[String], instance: Option<&str>) -> Vec<String> {
    argv.iter().map(|a| a.replace("{{instance}}", instance.unwrap_or(""))).collect()
}

fn action_step(systemctl: &str, w: &WorkloadConfig, action: &str, instance: Option<&str>) -> Result<Step, String> {
    if let Some(h) = &w.hooks
        && let Some(argv) = h.get(action)
    {
        return Ok(Step::Run { argv: hook_argv(argv, instance), timeout_ms: h.timeout.as_millis() as u64 });
    }
    let unit = w.unit.as_deref().ok_or_else(|| format!("workload has neither a unit nor a hooks.{action}"))?;
    let unit = systemd::instance_unit(unit, instance)?;
    Ok(Step::Run { argv: systemd::lifecycle_argv(systemctl, action, &unit), timeout_ms: 90_000 })
}

/// Plan of `restart`, `start` or `stop` (hooks win over the unit). `start` and `stop`
/// undo each other; a restart has no undo. A stop skips the health check (the workload
/// is meant to be down).
pub fn plan_lifecycle(
    systemctl: &str,
    w: &WorkloadConfig,
    action: &str,
    instance: Option<&str>,
) -> Result<Plan, String> {
    let step = action_step(systemctl, w, action, instance)?;
    let undo = match action {
        "start" => vec![action_step(systemctl, w, "stop", instance)?],
        "stop" => match action_step(systemctl, w, "start", instance) {
            Ok(s) => vec![s],
            Err(_) => Vec::new(),
        },
        _ => Vec::new(),
    };
    let mut plan = Plan { health_check: action != "stop", ..Plan::default() };
    if let Some(i) = instance {
        plan.details.insert("instance".into(), i.into());
    }
    plan.push(step, undo);
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_substitute_the_instance_and_win_over_the_unit() {
        let mut w = WorkloadConfig::named("web");
        w.unit = Some("web@.service".into());
        w.hooks = Some(crate::workload::HooksConfig {
            start: Some(vec!["/usr/local/bin/start-web".into(), "--port={{instance}}".into()]),
            stop: None,
            restart: None,
            timeout: Duration::from_secs(5),
        });
        let p = plan_lifecycle("systemctl", &w, "start", Some("8081")).expect("plan");
        assert_eq!(
            p.steps[0].0,
            Step::Run { argv: vec!["/usr/local/bin/start-web".into(), "--port=8081".into()], timeout_ms: 5000 }
        );
        // The undo of start is a stop, which has no hook: systemctl on the instance unit.
        assert_eq!(
            p.steps[0].1,
            vec![Step::Run {
                argv: vec!["systemctl".into(), "stop".into(), "web@8081.service".into()],
                timeout_ms: 90_000
            }]
        );
        let r = plan_lifecycle("systemctl", &w, "restart", Some("2")).expect("plan");
        assert!(r.steps[0].1.is_empty() && r.health_check);
        let s = plan_lifecycle("systemctl", &w, "stop", Some("2")).expect("plan");
        assert!(!s.health_check);
    }
}
