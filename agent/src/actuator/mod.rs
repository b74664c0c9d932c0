//! Actuators and the command executor: what the agent does with an `augur.v1.Command`.
//!
//! The executor runs on its own thread behind a bounded queue (a full queue refuses the
//! command with "agent busy", counted). For each command it, in order:
//! 1. refuses a command for another host, with bad arguments, without a deadline or past
//!    it, for an unknown workload or an action the workload does not allow (REFUSED);
//! 2. answers DUPLICATE, repeating the original outcome, when the id or idempotency key is
//!    in the [`Ledger`] (which survives restarts);
//! 3. builds a [`Plan`]: concrete [`Step`]s (file writes, argv runs, HAProxy runtime
//!    commands), each with the steps that undo it, from the current state (read-only);
//!    local safety checks (caps, never below current memory usage) refuse here;
//! 4. for dry-run reports the plan (DRY_RUN) and changes nothing;
//! 5. otherwise records the command in the ledger, runs the steps under the deadline,
//!    runs the workload's health check, and reports SUCCEEDED, or undoes what was done and
//!    reports FAILED (a step failed) or ROLLED_BACK (the health check failed).
//!
//! Families: [`cgroup`] (resize through cgroup v1/v2 files), [`systemd`] (units),
//! [`exec`] (argv runner and hooks), [`haproxy`] (runtime API), [`template`] (config
//! files), [`health`] (HTTP, TCP and command checks), [`criu`] (checkpoint/restore of
//! stateful workloads, refused where `criu check` fails).

pub mod cgroup;
pub mod criu;
pub mod exec;
pub mod haproxy;
pub mod health;
pub mod systemd;
pub mod template;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_core::command::{CommandSpec, Envelope};
use augur_core::time::now_ms;
use augur_proto::v1;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::ledger::{Ledger, LedgerError};
use crate::workload::WorkloadConfig;
pub use exec::{ProcessRunner, RunOutput, Runner};

/// Outcome of a command (the wire `CommandStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Succeeded,
    Failed,
    RolledBack,
    Refused,
    Duplicate,
    DryRun,
}

impl Status {
    pub fn wire(self) -> v1::CommandStatus {
        match self {
            Status::Succeeded => v1::CommandStatus::Succeeded,
            Status::Failed => v1::CommandStatus::Failed,
            Status::RolledBack => v1::CommandStatus::RolledBack,
            Status::Refused => v1::CommandStatus::Refused,
            Status::Duplicate => v1::CommandStatus::Duplicate,
            Status::DryRun => v1::CommandStatus::DryRun,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::RolledBack => "rolled_back",
            Status::Refused => "refused",
            Status::Duplicate => "duplicate",
            Status::DryRun => "dry_run",
        }
    }
}

/// A memory limit write is refused when the value is below current usage plus `margin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryGuard {
    /// File holding current usage (`memory.current`, `memory.usage_in_bytes`).
    pub usage: PathBuf,
    pub margin: u64,
}

/// One concrete change. Steps are also what the ledger keeps to undo a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Write a control file (cgroup), refusing a memory value below usage + margin.
    Write {
        path: PathBuf,
        value: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memory_guard: Option<MemoryGuard>,
    },
    /// Run an argv without a shell; exit status 0 is success.
    Run { argv: Vec<String>, timeout_ms: u64 },
    /// `systemctl set-property --runtime UNIT K=V...`; with a margin, memory properties
    /// below the unit's current usage plus the margin are refused.
    SystemdSet {
        systemctl: String,
        unit: String,
        props: Vec<(String, String)>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memory_margin: Option<u64>,
    },
    /// One HAProxy runtime API command.
    Haproxy { socket: String, command: String, timeout_ms: u64 },
    /// Replace a file atomically, first copying the current one to `backup`.
    WriteFile { path: PathBuf, content: String, backup: Option<PathBuf> },
    /// Put a file back from `backup` (atomically), or remove it when there was none.
    RestoreFile { path: PathBuf, backup: Option<PathBuf> },
    /// A CRIU dump, restore, or their undo.
    Criu(criu::CriuStep),
}

/// What undoes a command (kept in the ledger).
pub type UndoStep = Step;

impl Step {
    /// One line saying exactly what the step does.
    pub fn describe(&self) -> String {
        match self {
            Step::Write { path, value, .. } => format!("write {value:?} to {}", path.display()),
            Step::Run { argv, timeout_ms } => format!("run {} (timeout {timeout_ms}ms)", shell_words(argv)),
            Step::SystemdSet { systemctl, unit, props, .. } => {
                shell_words(&systemd::set_property_argv(systemctl, unit, props))
            }
            Step::Haproxy { socket, command, .. } => format!("haproxy {socket}: {command}"),
            Step::WriteFile { path, content, backup } => format!(
                "write {} bytes to {} atomically{}",
                content.len(),
                path.display(),
                backup.as_ref().map(|b| format!(" (previous kept in {})", b.display())).unwrap_or_default()
            ),
            Step::RestoreFile { path, backup: Some(b) } => {
                format!("restore {} from {}", path.display(), b.display())
            }
            Step::RestoreFile { path, backup: None } => format!("remove {} (it did not exist before)", path.display()),
            Step::Criu(c) => c.describe(),
        }
    }
}

/// An argv as a shell would show it (for humans; nothing runs through a shell).
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '=' | '@' | ':' | '%' | ',')
                })
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The steps a command would take, each with what undoes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<(Step, Vec<Step>)>,
    /// Reported with the outcome (e.g. `previous.memory_max`).
    pub details: BTreeMap<String, String>,
    /// Whether the workload's health check runs after the steps.
    pub health_check: bool,
}

impl Plan {
    fn push(&mut self, step: Step, undo: Vec<Step>) {
        self.steps.push((step, undo));
    }
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq)]
pub enum StepError {
    /// A memory guard refused the value (usage grew since the plan, or an undo would OOM).
    Guard(String),
    Failed(String),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Guard(m) | StepError::Failed(m) => f.write_str(m),
        }
    }
}

/// Outcome of one command.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: Status,
    pub message: String,
    pub details: BTreeMap<String, String>,
}

impl Outcome {
    fn new(status: Status, message: impl Into<String>) -> Self {
        Outcome { status, message: message.into(), details: BTreeMap::new() }
    }

    fn refused(message: impl Into<String>) -> Self {
        Self::new(Status::Refused, message)
    }

    /// The wire report of this outcome for `command_id`.
    pub fn report(&self, command_id: &str) -> v1::CommandReport {
        v1::CommandReport {
            command_id: command_id.into(),
            status: self.status.wire() as i32,
            message: self.message.clone(),
            time_ms: now_ms(),
            details: self.details.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

/// Why the executor cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot start the executor thread: {0}")]
    Start(std::io::Error),
}

/// Where the executor finds things and how it behaves.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    pub host_id: String,
    /// The ledger and config backups live here.
    pub state_dir: PathBuf,
    /// Where cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// Where procfs is mounted (to find the cgroup of a pidfile or process workload).
    pub proc_root: PathBuf,
    pub systemctl: String,
    pub undo_timeout: Duration,
    pub ledger_max_entries: usize,
    pub queue: usize,
}

impl ExecutorConfig {
    /// The executor settings of an agent config.
    pub fn of_agent(cfg: &crate::config::AgentConfig, host_id: &str) -> Self {
        ExecutorConfig {
            host_id: host_id.into(),
            state_dir: cfg.state_dir.clone(),
            cgroup_root: cfg.containers.cgroup_root.clone(),
            proc_root: cfg.containers.proc_root.clone(),
            systemctl: cfg.actions.systemctl.clone(),
            undo_timeout: cfg.actions.undo_timeout,
            ledger_max_entries: cfg.actions.ledger_max_entries,
            queue: cfg.actions.queue,
        }
    }
}

/// Executes commands one at a time.
pub struct Executor {
    cfg: ExecutorConfig,
    workloads: BTreeMap<String, WorkloadConfig>,
    ledger: Ledger,
    runner: Arc<dyn Runner>,
    criu: criu::CriuConfig,
    /// `criu check`'s verdict, asked once (at agent start, or at the first CRIU command).
    criu_probe: Option<criu::Probe>,
}

fn err_details(d: &mut BTreeMap<String, String>, plan: &Plan) {
    for (k, v) in &plan.details {
        d.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

impl Executor {
    /// Opens the ledger in `cfg.state_dir`.
    pub fn open(
        cfg: ExecutorConfig,
        workloads: &[WorkloadConfig],
        runner: Arc<dyn Runner>,
    ) -> Result<Executor, ExecutorError> {
        let ledger = Ledger::open(&cfg.state_dir.join("ledger.jsonl"), cfg.ledger_max_entries)?;
        Ok(Executor {
            workloads: workloads.iter().map(|w| (w.name.clone(), w.clone())).collect(),
            cfg,
            ledger,
            runner,
            criu: criu::CriuConfig::default(),
            criu_probe: None,
        })
    }

    /// Sets the CRIU settings and, when already known, `criu check`'s verdict (else it is
    /// asked at the first checkpoint or restore and kept).
    pub fn with_criu(mut self, cfg: criu::CriuConfig, probe: Option<criu::Probe>) -> Self {
        self.criu = cfg;
        self.criu_probe = probe;
        self
    }

    /// `criu check`'s verdict, asked once.
    pub async fn criu_probe(&mut self) -> criu::Probe {
        if let Some(p) = &self.criu_probe {
            return p.clone();
        }
        let p = criu::probe(&*self.runner, &self.criu).await;
        if !p.usable {
            warn!(reason = %p.message, "criu is not usable: checkpoint and restore commands are refused");
        }
        self.criu_probe = Some(p.clone());
        p
    }

    /// The ledger (for tests and status).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Executes one wire command and says how it went.
    pub async fn execute(&mut self, cmd: &v1::Command) -> Outcome {
        let out = self.handle(cmd).await;
        match out.status {
            Status::Refused | Status::Duplicate | Status::DryRun => {
                info!(command = %cmd.id, kind = %cmd.kind, status = out.status.as_str(), message = %out.message, "command not applied")
            }
            _ => {
                info!(command = %cmd.id, kind = %cmd.kind, resource = %cmd.resource, status = out.status.as_str(), message = %out.message, "command done")
            }
        }
        out
    }

    async fn handle(&mut self, cmd: &v1::Command) -> Outcome {
        if cmd.target_host != self.cfg.host_id {
            return Outcome::refused(format!(
                "command is for host {:?}; this is host {:?}: nothing done",
                cmd.target_host, self.cfg.host_id
            ));
        }
        let env = match augur_proto::convert::envelope_of(cmd) {
            Ok(e) => e,
            Err(e) => return Outcome::refused(format!("bad command: {e}")),
        };
        if let Some(orig) = self.ledger.find(&env.id, &env.idempotency_key) {
            let mut out = Outcome::new(
                Status::Duplicate,
                format!("already executed as command {} ({}): {}", orig.command_id, orig.status.as_str(), orig.message),
            );
            out.details = orig.details.clone();
            out.details.insert("original.command_id".into(), orig.command_id.clone());
            out.details.insert("original.status".into(), orig.status.as_str().into());
            out.details.insert("original.message".into(), orig.message.clone());
            if let Some(by) = &orig.undone_by {
                out.details.insert("original.undone_by".into(), by.clone());
            }
            // A retry under a new id: a rollback may name either id.
            if orig.command_id != env.id {
                let orig_id = orig.command_id.clone();
                if let Err(e) = self.ledger.add_alias(&orig_id, &env.id) {
                    warn!(command = %env.id, error = %e, "cannot record a duplicate's id in the ledger");
                }
            }
            return out;
        }
        let now = now_ms();
        if env.deadline_ms <= 0 {
            return Outcome::refused("command has no deadline: nothing done");
        }
        if now >= env.deadline_ms {
            return Outcome::refused(format!("deadline passed {} ms ago: nothing done", now - env.deadline_ms));
        }
        let deadline = Instant::now() + Duration::from_millis((env.deadline_ms - now) as u64);
        if let CommandSpec::Rollback { command_id } = &env.spec {
            return self.rollback(&env, command_id).await;
        }
        let Some(w) = self.workloads.get(&env.resource).cloned() else {
            return Outcome::refused(format!("unknown workload {:?} on this host", env.resource));
        };
        let kind = env.spec.kind();
        if !w.allows(kind) {
            return Outcome::refused(format!(
                "workload {:?} does not allow {kind} (allowed: {})",
                w.name,
                w.allowed_actions.join(", ")
            ));
        }
        if let CommandSpec::Health = env.spec {
            return self.health_command(&env, &w, deadline).await;
        }
        if matches!(env.spec, CommandSpec::Checkpoint { .. } | CommandSpec::Restore { .. }) {
            let p = match tokio::time::timeout_at(deadline, self.criu_probe()).await {
                Ok(p) => p,
                Err(_) => return Outcome::refused("deadline reached while running `criu check`: nothing done"),
            };
            if !p.usable {
                return Outcome::refused(format!("criu is not usable on this host: {}; nothing done", p.message));
            }
        }
        let plan = match tokio::time::timeout_at(deadline, self.plan(&w, &env)).await {
            Ok(Ok(p)) => p,
            Ok(Err(why)) => return Outcome::refused(why),
            Err(_) => return Outcome::refused("deadline reached while reading the current state: nothing done"),
        };
        if env.dry_run {
            let mut out = Outcome::new(
                Status::DryRun,
                format!("dry run: {} step(s) would run; nothing changed", plan.steps.len()),
            );
            describe_plan(&plan, &mut out.details);
            if plan.health_check
                && let Some(h) = &w.health
            {
                let instance = match &env.spec {
                    CommandSpec::Start { instance } | CommandSpec::Stop { instance } => instance.as_deref(),
                    _ => None,
                };
                let h = h.for_instance(instance).unwrap_or_else(|_| h.clone());
                out.details.insert("would.health".into(), health::describe(&h));
            }
            return out;
        }
        self.apply(&env, &w, plan, deadline).await
    }

    async fn plan(&self, w: &WorkloadConfig, env: &Envelope) -> Result<Plan, String> {
        match &env.spec {
            CommandSpec::Resize(r) => {
                if w.cgroup.is_none()
                    && w.pidfile.is_none()
                    && w.process.is_none()
                    && let Some(unit) = &w.unit
                {
                    return systemd::plan_resize(&*self.runner, &self.cfg.systemctl, unit, r, &w.limits).await;
                }
                let target = cgroup::locate_workload(&self.cfg.cgroup_root, &self.cfg.proc_root, w)?;
                cgroup::plan_resize(&target, r, &w.limits)
            }
            CommandSpec::Restart => exec::plan_lifecycle(&self.cfg.systemctl, w, "restart", None),
            CommandSpec::Start { instance } => {
                exec::plan_lifecycle(&self.cfg.systemctl, w, "start", instance.as_deref())
            }
            CommandSpec::Stop { instance } => exec::plan_lifecycle(&self.cfg.systemctl, w, "stop", instance.as_deref()),
            CommandSpec::Traffic { backend, server, change } => {
                let hp = w.haproxy.as_ref().ok_or("workload has no haproxy socket")?;
                haproxy::plan_traffic(hp, backend, server, change).await
            }
            CommandSpec::Config { template, version, vars } => {
                template::plan_config(&self.cfg.state_dir, w, template, version, vars, &env.id)
            }
            CommandSpec::Checkpoint { leave_running } => criu::plan_checkpoint(
                &self.criu,
                &self.criu.images_root(&self.cfg.state_dir),
                &self.cfg.host_id,
                (&self.cfg.cgroup_root, &self.cfg.proc_root),
                w,
                &env.id,
                *leave_running,
            ),
            CommandSpec::Restore { image, from_host } => criu::plan_restore(
                &self.criu,
                &self.criu.images_root(&self.cfg.state_dir),
                &self.cfg.host_id,
                (&self.cfg.cgroup_root, &self.cfg.proc_root),
                w,
                image,
                from_host.as_deref(),
                env.dry_run,
            ),
            CommandSpec::Health | CommandSpec::Rollback { .. } => Err("not a planned command".into()),
        }
    }

    async fn health_command(&mut self, env: &Envelope, w: &WorkloadConfig, deadline: Instant) -> Outcome {
        let Some(h) = &w.health else {
            return Outcome::refused(format!("workload {:?} has no health check", w.name));
        };
        let h = &match h.for_instance(None) {
            Ok(h) => h,
            Err(m) => return Outcome::refused(m),
        };
        if env.dry_run {
            let mut out = Outcome::new(Status::DryRun, "dry run: the health check would run; nothing changed");
            out.details.insert("would.health".into(), health::describe(h));
            return out;
        }
        let mut out = match health::check(h, &*self.runner, deadline).await {
            Ok(m) => Outcome::new(Status::Succeeded, format!("healthy: {m}")),
            Err(m) => Outcome::new(Status::Failed, format!("unhealthy: {m}")),
        };
        out.details.insert("health".into(), health::describe(h));
        // Recorded so a redelivered health command repeats its answer.
        match self.ledger.begin(&env.id, &env.idempotency_key, env.spec.kind(), &env.resource, now_ms()) {
            Ok(seq) => {
                if let Err(e) = self.ledger.finish(seq, out.status, &out.message, &out.details, Vec::new()) {
                    warn!(error = %e, "cannot record a health command in the ledger");
                }
            }
            Err(e) => warn!(error = %e, "cannot record a health command in the ledger"),
        }
        out
    }

    async fn apply(&mut self, env: &Envelope, w: &WorkloadConfig, plan: Plan, deadline: Instant) -> Outcome {
        let seq = match self.ledger.begin(&env.id, &env.idempotency_key, env.spec.kind(), &env.resource, now_ms()) {
            Ok(s) => s,
            Err(e) => return Outcome::new(Status::Failed, format!("ledger unavailable, nothing done: {e}")),
        };
        // Everything that could need undoing, in undo order, before anything changes.
        let all_undo: Vec<Step> = plan.steps.iter().rev().flat_map(|(_, u)| u.iter().cloned()).collect();
        if let Err(e) = self.ledger.set_undo(seq, &all_undo) {
            let out = Outcome::new(Status::Failed, format!("ledger unavailable, nothing done: {e}"));
            let _ = self.ledger.finish(seq, out.status, &out.message, &out.details, Vec::new());
            return out;
        }
        let mut undo: Vec<Step> = Vec::new();
        let mut details = BTreeMap::new();
        let mut failure = None;
        for (i, (step, step_undo)) in plan.steps.iter().enumerate() {
            details.insert(format!("step.{}", i + 1), step.describe());
            if Instant::now() >= deadline {
                failure = Some(format!("deadline reached before step {}", i + 1));
                break;
            }
            match self.run_step(step, deadline).await {
                Ok(()) => {
                    let mut u = step_undo.clone();
                    u.append(&mut undo);
                    undo = u;
                }
                Err(e) => {
                    failure = Some(format!("step {} ({}) failed: {e}", i + 1, step.describe()));
                    break;
                }
            }
        }
        err_details(&mut details, &plan);
        // What stays in the ledger for a later rollback: everything, unless the command
        // failed and was undone completely (or changed nothing).
        let mut keep_undo = true;
        let mut out = if let Some(why) = failure {
            let (undone, complete) = self.undo(&undo, &mut details).await;
            keep_undo = !complete;
            Outcome::new(
                Status::Failed,
                if undo.is_empty() { format!("{why}; nothing was changed") } else { format!("{why}; {undone}") },
            )
        } else if plan.health_check {
            let instance = match &env.spec {
                CommandSpec::Start { instance } | CommandSpec::Stop { instance } => instance.as_deref(),
                _ => None,
            };
            match w.health.as_ref().map(|h| h.for_instance(instance)) {
                Some(Err(m)) => {
                    let (undone, complete) = self.undo(&undo, &mut details).await;
                    keep_undo = !complete;
                    Outcome::new(Status::Failed, format!("cannot check health: {m}; {undone}"))
                }
                Some(Ok(h)) => match health::check(&h, &*self.runner, deadline).await {
                    Ok(m) => {
                        details.insert("health".into(), m);
                        Outcome::new(Status::Succeeded, "applied; health check passed")
                    }
                    Err(m) => {
                        details.insert("health".into(), m.clone());
                        if undo.is_empty() {
                            Outcome::new(Status::Failed, format!("health check failed: {m}; this action has no undo"))
                        } else {
                            let (undone, complete) = self.undo(&undo, &mut details).await;
                            keep_undo = !complete;
                            Outcome::new(
                                if complete { Status::RolledBack } else { Status::Failed },
                                format!("health check failed: {m}; {undone}"),
                            )
                        }
                    }
                },
                None => Outcome::new(Status::Succeeded, "applied (no health check declared)"),
            }
        } else {
            Outcome::new(Status::Succeeded, "applied")
        };
        if !keep_undo {
            undo.clear();
        }
        out.details = details;
        if out.status == Status::Succeeded
            && let CommandSpec::Config { template, .. } = &env.spec
            && let Some(t) = w.template(template)
        {
            template::prune_backups(&self.cfg.state_dir, &w.name, t);
        }
        if let Err(e) = self.ledger.finish(seq, out.status, &out.message, &out.details, undo) {
            warn!(command = %env.id, error = %e, "cannot record the outcome in the ledger");
            out.details.insert("ledger_error".into(), e.to_string());
        }
        out
    }

    /// Runs undo steps in order under `undo_timeout`; a guarded memory write that would go
    /// below usage is skipped (never OOM the workload to undo). Says what happened.
    async fn undo(&self, steps: &[Step], details: &mut BTreeMap<String, String>) -> (String, bool) {
        let deadline = Instant::now() + self.cfg.undo_timeout;
        let mut failed = Vec::new();
        let mut skipped = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            details.insert(format!("undo.{}", i + 1), s.describe());
            match self.run_step(s, deadline).await {
                Ok(()) => {}
                Err(StepError::Guard(m)) => {
                    details.insert(format!("undo.{}.skipped", i + 1), m.clone());
                    skipped.push(m);
                }
                Err(StepError::Failed(m)) => {
                    details.insert(format!("undo.{}.error", i + 1), m.clone());
                    failed.push(m);
                }
            }
        }
        match (failed.is_empty(), skipped.is_empty()) {
            (true, true) => ("undone".into(), true),
            (true, false) => (format!("undone except: {}", skipped.join("; ")), true),
            (false, _) => (format!("UNDO INCOMPLETE: {}", failed.join("; ")), false),
        }
    }

    async fn run_step(&self, step: &Step, deadline: Instant) -> Result<(), StepError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StepError::Failed("deadline reached".into()));
        }
        let within = |ms: u64| Duration::from_millis(ms).min(left);
        match step {
            Step::Write { path, value, memory_guard } => {
                let (p, v, g) = (path.clone(), value.clone(), memory_guard.clone());
                blocking(left, move || cgroup::write_guarded(&p, &v, g.as_ref())).await
            }
            Step::Run { argv, timeout_ms } => {
                exec::run_checked(&*self.runner, argv, within(*timeout_ms)).await.map(|_| ()).map_err(StepError::Failed)
            }
            Step::SystemdSet { systemctl, unit, props, memory_margin } => {
                systemd::set_property(&*self.runner, systemctl, unit, props, *memory_margin, left).await
            }
            Step::Haproxy { socket, command, timeout_ms } => {
                haproxy::run_command(socket, command, within(*timeout_ms)).await.map(|_| ()).map_err(StepError::Failed)
            }
            Step::WriteFile { path, content, backup } => {
                let (p, c, b) = (path.clone(), content.clone(), backup.clone());
                blocking(left, move || template::write_with_backup(&p, c.as_bytes(), b.as_deref())).await
            }
            Step::RestoreFile { path, backup } => {
                let (p, b) = (path.clone(), backup.clone());
                blocking(left, move || template::restore(&p, b.as_deref())).await
            }
            Step::Criu(c) => criu::run_step(&*self.runner, &self.cfg.proc_root, c, left).await,
        }
    }

    async fn rollback(&mut self, env: &Envelope, target: &str) -> Outcome {
        let Some(orig) = self.ledger.get(target).cloned() else {
            return Outcome::refused(format!("command {target:?} is not in the ledger: nothing to undo"));
        };
        if !env.resource.is_empty() && env.resource != orig.resource {
            return Outcome::refused(format!(
                "command {target:?} acted on {:?}, not on {:?}: nothing done",
                orig.resource, env.resource
            ));
        }
        if !env.resource.is_empty() && env.resource != orig.resource {
            return Outcome::refused(format!(
                "command {target:?} acted on {:?}, not on {:?}: nothing done",
                orig.resource, env.resource
            ));
        }
        if let Some(by) = &orig.undone_by {
            return Outcome::refused(format!("command {target:?} was already undone by {by:?}"));
        }
        if orig.undo.is_empty() {
            return Outcome::refused(format!(
                "command {target:?} ({}, {}) left nothing to undo",
                orig.kind,
                orig.status.as_str()
            ));
        }
        if env.dry_run {
            let mut out = Outcome::new(
                Status::DryRun,
                format!("dry run: {} undo step(s) would run; nothing changed", orig.undo.len()),
            );
            for (i, s) in orig.undo.iter().enumerate() {
                out.details.insert(format!("would.{}", i + 1), s.describe());
            }
            return out;
        }
        let seq = match self.ledger.begin(&env.id, &env.idempotency_key, "rollback", &orig.resource, now_ms()) {
            Ok(s) => s,
            Err(e) => return Outcome::new(Status::Failed, format!("ledger unavailable, nothing done: {e}")),
        };
        let mut details = BTreeMap::new();
        details.insert("rolled_back".into(), target.into());
        let (undone, ok) = self.undo(&orig.undo, &mut details).await;
        let mut out = Outcome::new(
            if ok { Status::Succeeded } else { Status::Failed },
            format!("command {target} ({}): {undone}", orig.kind),
        );
        if ok {
            if let Some(h) = self.workloads.get(&orig.resource).and_then(|w| w.health.clone()) {
                let deadline = Instant::now() + self.cfg.undo_timeout;
                let r = health::check(&h, &*self.runner, deadline).await;
                details.insert(
                    "health".into(),
                    match r {
                        Ok(m) => format!("healthy: {m}"),
                        Err(m) => format!("unhealthy: {m}"),
                    },
                );
            }
            if let Err(e) = self.ledger.mark_undone(target, &env.id) {
                warn!(error = %e, "cannot mark a command undone in the ledger");
            }
        }
        out.details = details;
        if let Err(e) = self.ledger.finish(seq, out.status, &out.message, &out.details, Vec::new()) {
            warn!(command = %env.id, error = %e, "cannot record the outcome in the ledger");
        }
        out
    }
}

fn describe_plan(plan: &Plan, d: &mut BTreeMap<String, String>) {
    for (i, (s, undo)) in plan.steps.iter().enumerate() {
        d.insert(format!("would.{}", i + 1), s.describe());
        if let Step::WriteFile { content, .. } = s {
            const MAX: usize = 16 << 10;
            let shown = if content.len() > MAX {
                let mut end = MAX;
                while !content.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}…[{} more bytes]", &content[..end], content.len() - end)
            } else {
                content.clone()
            };
            d.insert(format!("would.{}.content", i + 1), shown);
        }
        for (j, u) in undo.iter().enumerate() {
            d.insert(format!("would.{}.undo.{}", i + 1, j + 1), u.describe());
        }
    }
    err_details(d, plan);
}

/// Runs blocking file work off the async workers, bounded by `left`.
async fn blocking(left: Duration, f: impl FnOnce() -> Result<(), StepError> + Send + 'static) -> Result<(), StepError> {
    match tokio::time::timeout(left, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(StepError::Failed(format!("file operation panicked: {e}"))),
        Err(_) => Err(StepError::Failed("deadline reached during a file operation".into())),
    }
}

/// Reports waiting to be delivered to the aggregator.
///
/// A report stays here until the aggregator has processed it, which the uplink learns
/// from the echo of a heartbeat sent after it (the aggregator handles a stream's messages
/// in order). Reports of a session that ended are sent again on the next; the aggregator
/// deduplicates by command id. Bounded: when full the oldest go first (counted).
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<OutboxInner>,
    notify: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct OutboxInner {
    next: u64,
    items: VecDeque<(u64, v1::CommandReport)>,
    dropped: u64,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Outbox { inner: Mutex::new(OutboxInner { next: 1, ..Default::default() }), notify: Notify::new(), capacity }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a report for delivery.
    pub fn push(&self, r: v1::CommandReport) {
        {
            let mut g = self.lock();
            let seq = g.next;
            g.next += 1;
            g.items.push_back((seq, r));
            while g.items.len() > self.capacity {
                g.items.pop_front();
                g.dropped += 1;
            }
        }
        self.notify.notify_one();
    }

    /// Reports queued after `seq`, oldest first.
    pub fn after(&self, seq: u64) -> Vec<(u64, v1::CommandReport)> {
        self.lock().items.iter().filter(|(s, _)| *s > seq).cloned().collect()
    }

    /// Forgets reports up to `seq` (the aggregator has them).
    pub fn delivered(&self, seq: u64) {
        let mut g = self.lock();
        while g.items.front().is_some_and(|(s, _)| *s <= seq) {
            g.items.pop_front();
        }
    }

    /// Reports not yet known to be delivered.
    pub fn pending(&self) -> usize {
        self.lock().items.len()
    }

    /// Reports dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Resolves when a report is pushed.
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

/// Where the uplink hands commands to the executor and finds reports.
#[derive(Debug, Clone)]
pub struct ExecutorHandle {
    tx: mpsc::Sender<v1::Command>,
    pub outbox: Arc<Outbox>,
    busy: Arc<AtomicU64>,
}

impl ExecutorHandle {
    /// Queues a command; a full queue refuses it at once ("agent busy").
    pub fn submit(&self, cmd: v1::Command) {
        match self.tx.try_send(cmd) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                self.busy.fetch_add(1, Ordering::Relaxed);
                warn!(command = %cmd.id, "command queue full: refused");
                self.outbox
                    .push(Outcome::refused("agent busy: the command queue is full; nothing done").report(&cmd.id));
            }
            Err(mpsc::error::TrySendError::Closed(cmd)) => {
                self.outbox.push(Outcome::refused("agent stopping: nothing done").report(&cmd.id));
            }
        }
    }

    /// Commands refused because the queue was full.
    pub fn busy_refusals(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }
}

/// Starts the executor on its own thread (with a small single-threaded runtime), so a
/// ledger fsync, a slow control-file write or a /proc scan never stalls the uplink. It
/// finishes the command in hand and ends when every handle is dropped.
pub fn spawn(mut exec: Executor) -> Result<ExecutorHandle, ExecutorError> {
    let (tx, mut rx) = mpsc::channel::<v1::Command>(exec.cfg.queue.max(1));
    let outbox = Arc::new(Outbox::new(1024));
    let out = outbox.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ExecutorError::Start)?;
    std::thread::Builder::new()
        .name("augur-actions".into())
        .spawn(move || {
            rt.block_on(async move {
                while let Some(cmd) = rx.recv().await {
                    let o = exec.execute(&cmd).await;
                    out.push(o.report(&cmd.id));
                }
            })
        })
        .map_err(ExecutorError::Start)?;
    Ok(ExecutorHandle { tx, outbox, busy: Arc::new(AtomicU64::new(0)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_round_trips_through_the_ledger_encoding() {
        let steps = vec![
            Step::Write {
                path: "/sys/fs/cgroup/x/memory.max".into(),
                value: "max".into(),
                memory_guard: Some(MemoryGuard { usage: "/sys/fs/cgroup/x/memory.current".into(), margin: 1 << 20 }),
            },
            Step::Run { argv: vec!["systemctl".into(), "start".into(), "web@1.service".into()], timeout_ms: 5 },
            Step::SystemdSet {
                systemctl: "systemctl".into(),
                unit: "db.service".into(),
                props: vec![("MemoryMax".into(), "infinity".into()), ("CPUQuota".into(), String::new())],
                memory_margin: Some(7),
            },
            Step::Haproxy {
                socket: "/run/haproxy.sock".into(),
                command: "set server a/b state drain".into(),
                timeout_ms: 9,
            },
            Step::WriteFile { path: "/etc/app.conf".into(), content: "x = 1\n".into(), backup: None },
            Step::RestoreFile { path: "/etc/app.conf".into(), backup: Some("/var/lib/b".into()) },
            Step::Criu(criu::CriuStep::Dump {
                argv: vec!["criu".into(), "dump".into()],
                tmp: "/i/.c1.tmp".into(),
                dir: "/i/c1".into(),
                timeout_ms: 3,
            }),
            Step::Criu(criu::CriuStep::StopTree { pidfile: "/i/c1/restored.pid".into(), timeout_ms: 4 }),
        ];
        let text = serde_json::to_string(&steps).expect("encode");
        let back: Vec<Step> = serde_json::from_str(&text).expect("decode");
        assert_eq!(back, steps);
    }

    #[test]
    fn steps_describe_themselves_as_shell_would_show_them() {
        let s = Step::Run { argv: vec!["sh".into(), "-c".into(), "echo 'hi' > f".into()], timeout_ms: 1000 };
        assert_eq!(s.describe(), "run sh -c 'echo '\\''hi'\\'' > f' (timeout 1000ms)");
        let s = Step::SystemdSet {
            systemctl: "systemctl".into(),
            unit: "db.service".into(),
            props: vec![("CPUQuota".into(), "150%".into())],
            memory_margin: None,
        };
        assert_eq!(s.describe(), "systemctl set-property --runtime db.service CPUQuota=150%");
    }

    fn report(id: &str) -> v1::CommandReport {
        Outcome::new(Status::Succeeded, "ok").report(id)
    }

    #[test]
    fn the_outbox_keeps_reports_until_delivered_and_drops_the_oldest_when_full() {
        let o = Outbox::new(3);
        for i in 0..4 {
            o.push(report(&format!("c{i}")));
        }
        assert_eq!(o.dropped(), 1);
        let ids: Vec<(u64, String)> = o.after(0).into_iter().map(|(s, r)| (s, r.command_id)).collect();
        assert_eq!(ids, [(2, "c1".to_string()), (3, "c2".into()), (4, "c3".into())]);
        assert_eq!(o.after(3).len(), 1);
        o.delivered(3);
        assert_eq!(o.pending(), 1);
        assert_eq!(o.after(0)[0].1.command_id, "c3");
    }
}
