//! Workflows: multi-step, multi-host action plans executed through the [`Dispatcher`],
//! each step audited, with a per-step timeout, an overall deadline, and rollback of the
//! completed steps in reverse order when any step fails.
//!
//! [`ActionPlan`] is pure data (serde): the decision engine builds it, the Orchestrator API
//! and REST gateway accept it, and [`run`] executes it.
//!
//! | plan        | steps (`▸` marks the commit point, see [`Step::follow_up`])                  |
//! |-------------|------------------------------------------------------------------------------|
//! | `resize`    | resize the workload (the agent checks health and rolls back itself)          |
//! | `restart`   | restart the workload                                                         |
//! | `promote`   | standby health, standby ready (+ weight), drain primary, wait ▸ remedy     |
//! | `migrate`   | start target, its health, add + ready in LB, drain source, wait ▸ source maint, remove, stop |
//! | `scale` up  | per instance: start, health, add to LB, ready                                |
//! | `scale` down| drain each, wait ▸ per instance: maint, remove from LB, stop               |
//! | `blue_green`| health of each green, greens ready, drain blues, wait                        |
//! | `migrate_stateful` | (drain source, wait,) CRIU checkpoint on the source, restore on the target, its health(, target ready ▸ source maint) |
//!
//! [`Dispatcher`]: super::dispatch::Dispatcher

use std::time::{Duration, Instant};

use augur_core::command::{CommandSpec, Envelope, Resize, ServerState, TrafficChange};
use augur_core::time::now_ms;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};

use super::audit::{AuditEntry, AuditError, AuditKind, AuditLog};
use super::dispatch::{CommandOutcome, CommandStatus, DispatchError, Dispatcher};

/// A load-balancer backend: the host whose agent drives HAProxy, the LB workload's declared
/// name on that agent, and the HAProxy backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancer {
    pub host: String,
    pub workload: String,
    pub backend: String,
}

/// One instance of a workload behind a load balancer: the host that runs it, its declared
/// workload name there, and its server name in the LB backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub host: String,
    pub workload: String,
    pub server: String,
}

/// An instance to start or stop (a systemd template instance or exec-hook instance), and how
/// the load balancer knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub host: String,
    pub workload: String,
    /// The instance name passed to `start`/`stop` (`None`: the workload itself).
    #[serde(default)]
    pub instance: Option<String>,
    /// Server name in the LB backend.
    pub server: String,
    /// `ip:port` to add to the LB backend (`None`: the server is already declared in the LB
    /// configuration and is only enabled or disabled).
    #[serde(default)]
    pub address: Option<String>,
}

/// What to do with the primary once traffic is off it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "remedy")]
pub enum Remedy {
    /// Leave it drained (an operator looks at it).
    #[default]
    None,
    Restart,
    Resize(Resize),
}

/// A remediation to carry out. Pure data: validated by [`ActionPlan::validate`], executed by [`run`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum ActionPlan {
    /// Resize a workload in place.
    Resize { host: String, workload: String, resize: Resize },
    /// Restart a workload in place.
    Restart { host: String, workload: String },
    /// Warm-standby promotion: traffic to the standby, drain the primary, then remediate it.
    Promote {
        lb: LoadBalancer,
        primary: Member,
        standby: Member,
        /// Weight to give the standby once ready (`None`: leave its weight).
        #[serde(default)]
        standby_weight: Option<u32>,
        #[serde(default)]
        remedy: Remedy,
    },
    /// Live migration of a stateless workload: start on the target, check health, switch
    /// traffic, stop on the source. A failed target health check rolls back and leaves the
    /// source serving.
    Migrate { workload: String, lb: LoadBalancer, source: Instance, target: Instance },
    /// Horizontal scaling of a resource set: `delta > 0` starts the listed instances and adds
    /// them to the LB; `delta < 0` drains, removes and stops them. `instances.len() == |delta|`.
    Scale { set: String, delta: i32, lb: LoadBalancer, instances: Vec<Instance> },
    /// Blue/green switch: every green member healthy and ready, then every blue member drained.
    BlueGreen { lb: LoadBalancer, blue: Vec<Member>, green: Vec<Member> },
    /// Migration of a stateful workload with CRIU: checkpoint it on `source` (which stops
    /// it), restore that image on `target` (`restore` with `from_host = source`: the
    /// agents' images directory must be shared between the two hosts or the image copied
    /// there; augur does not transfer images), check its health there and, with a load
    /// balancer, switch traffic from `source_server` to `target_server`. A failure before
    /// the switch stops the restored copy and restores the workload on the source. Both
    /// hosts must have announced the `criu` capability ([`RunOptions::host_capabilities`]).
    MigrateStateful {
        workload: String,
        source: String,
        target: String,
        #[serde(default)]
        lb: Option<LoadBalancer>,
        #[serde(default)]
        source_server: String,
        #[serde(default)]
        target_server: String,
    },
}

/// Why a plan is refused before anything is sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("plan {plan}: {field} is empty")]
    Empty { plan: &'static str, field: &'static str },
    #[error("plan {plan}: {why}")]
    Invalid { plan: &'static str, why: String },
}

impl ActionPlan {
    /// The plan's kind, as in its serde tag.
    pub fn kind(&self) -> &'static str {
        match self {
            ActionPlan::Resize { .. } => "resize",
            ActionPlan::Restart { .. } => "restart",
            ActionPlan::Promote { .. } => "promote",
            ActionPlan::Migrate { .. } => "migrate",
            ActionPlan::Scale { .. } => "scale",
            ActionPlan::BlueGreen { .. } => "blue_green",
            ActionPlan::MigrateStateful { .. } => "migrate_stateful",
        }
    }

    /// Every (host, workload) the plan sends a command to, the load balancer included, in
    /// first-use order without repeats. Safety limits (concurrency, cooldown) key on these.
    pub fn targets(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut push = |h: &str, w: &str| {
            if !out.iter().any(|(a, b)| a == h && b == w) {
                out.push((h.to_owned(), w.to_owned()));
            }
        };
        match self {
            ActionPlan::Resize { host, workload, .. } | ActionPlan::Restart { host, workload } => push(host, workload),
            ActionPlan::Promote { lb, primary, standby, .. } => {
                push(&primary.host, &primary.workload);
                push(&standby.host, &standby.workload);
                push(&lb.host, &lb.workload);
            }
            ActionPlan::Migrate { lb, source, target, .. } => {
                push(&source.host, &source.workload);
                push(&target.host, &target.workload);
                push(&lb.host, &lb.workload);
            }
            ActionPlan::Scale { lb, instances, .. } => {
                for i in instances {
                    push(&i.host, &i.workload);
                }
                push(&lb.host, &lb.workload);
            }
            ActionPlan::BlueGreen { lb, blue, green } => {
                for m in blue.iter().chain(green) {
                    push(&m.host, &m.workload);
                }
                push(&lb.host, &lb.workload);
            }
            ActionPlan::MigrateStateful { workload, source, target, lb, .. } => {
                push(source, workload);
                push(target, workload);
                if let Some(lb) = lb {
                    push(&lb.host, &lb.workload);
                }
            }
        }
        out
    }

    /// Capabilities the plan needs, per host (a `migrate_stateful` needs `criu` on both ends).
    pub fn required_capabilities(&self) -> Vec<(String, &'static str)> {
        match self {
            ActionPlan::MigrateStateful { source, target, .. } => {
                vec![(source.clone(), "criu"), (target.clone(), "criu")]
            }
            _ => Vec::new(),
        }
    }

    /// Refuses the plan when a host it needs a capability on did not announce it (`announced`:
    /// each host's Hello capabilities; a host missing from it announced nothing).
    pub fn check_capabilities(
        &self,
        announced: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Result<(), PlanError> {
        for (host, cap) in self.required_capabilities() {
            if !announced.get(&host).is_some_and(|caps| caps.iter().any(|c| c == cap)) {
                return Err(PlanError::Invalid {
                    plan: self.kind(),
                    why: format!(
                        "host {host:?} did not announce the {cap:?} capability (its agent's `criu check` fails, \
                         no workload there allows checkpoint/restore, or it is not connected)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Checks the plan is complete and consistent. Nothing is sent for an invalid plan; an
    /// empty target set is an error, never "all".
    pub fn validate(&self) -> Result<(), PlanError> {
        let plan = self.kind();
        let nonempty = |field: &'static str, v: &str| {
            if v.trim().is_empty() { Err(PlanError::Empty { plan, field }) } else { Ok(()) }
        };
        let invalid = |why: String| PlanError::Invalid { plan, why };
        let lb_ok = |lb: &LoadBalancer| -> Result<(), PlanError> {
            nonempty("lb.host", &lb.host)?;
            nonempty("lb.workload", &lb.workload)?;
            nonempty("lb.backend", &lb.backend)
        };
        let member_ok = |m: &Member| -> Result<(), PlanError> {
            nonempty("host", &m.host)?;
            nonempty("workload", &m.workload)?;
            nonempty("server", &m.server)
        };
        let instance_ok = |i: &Instance| -> Result<(), PlanError> {
            nonempty("host", &i.host)?;
            nonempty("workload", &i.workload)?;
            nonempty("server", &i.server)?;
            if let Some(a) = &i.address
                && a.parse::<std::net::SocketAddr>().is_err()
            {
                return Err(invalid(format!("address {a:?} of server {} is not ip:port", i.server)));
            }
            Ok(())
        };
        match self {
            ActionPlan::Resize { host, workload, resize } => {
                nonempty("host", host)?;
                nonempty("workload", workload)?;
                if *resize == Resize::default() {
                    return Err(invalid("resize changes nothing (no memory_max, memory_high or cpu_max)".into()));
                }
                Ok(())
            }
            ActionPlan::Restart { host, workload } => {
                nonempty("host", host)?;
                nonempty("workload", workload)
            }
            ActionPlan::Promote { lb, primary, standby, standby_weight, remedy } => {
                lb_ok(lb)?;
                member_ok(primary)?;
                member_ok(standby)?;
                if primary.server == standby.server {
                    return Err(invalid(format!("primary and standby are the same server {:?}", primary.server)));
                }
                if let Some(w) = standby_weight
                    && *w > 256
                {
                    return Err(invalid(format!("standby_weight {w} is above 256")));
                }
                if let Remedy::Resize(r) = remedy
                    && *r == Resize::default()
                {
                    return Err(invalid("the primary's resize changes nothing".into()));
                }
                Ok(())
            }
            ActionPlan::Migrate { workload, lb, source, target } => {
                nonempty("workload", workload)?;
                lb_ok(lb)?;
                instance_ok(source)?;
                instance_ok(target)?;
                if source.host == target.host && source.instance == target.instance {
                    return Err(invalid(format!("source and target are the same instance on {}", source.host)));
                }
                if source.server == target.server {
                    return Err(invalid(format!("source and target are the same LB server {:?}", source.server)));
                }
                Ok(())
            }
            ActionPlan::Scale { set, delta, lb, instances } => {
                nonempty("set", set)?;
                lb_ok(lb)?;
                if *delta == 0 || instances.is_empty() {
                    return Err(PlanError::Empty { plan, field: "instances" });
                }
                if instances.len() != delta.unsigned_abs() as usize {
                    return Err(invalid(format!("delta {delta} but {} instances listed", instances.len())));
                }
                for i in instances {
                    instance_ok(i)?;
                }
                Ok(())
            }
            ActionPlan::BlueGreen { lb, blue, green } => {
                lb_ok(lb)?;
                if blue.is_empty() {
                    return Err(PlanError::Empty { plan, field: "blue" });
                }
                if green.is_empty() {
                    return Err(PlanError::Empty { plan, field: "green" });
                }
                for m in blue.iter().chain(green) {
                    member_ok(m)?;
                }
                if let Some(m) = blue.iter().find(|b| green.iter().any(|g| g.server == b.server)) {
                    return Err(invalid(format!("server {:?} is both blue and green", m.server)));
                }
                Ok(())
            }
            ActionPlan::MigrateStateful { workload, source, target, lb, source_server, target_server } => {
                nonempty("workload", workload)?;
                nonempty("source", source)?;
                nonempty("target", target)?;
                if source == target {
                    return Err(invalid(format!("source and target are the same host {source:?}")));
                }
                match lb {
                    Some(lb) => {
                        lb_ok(lb)?;
                        nonempty("source_server", source_server)?;
                        nonempty("target_server", target_server)?;
                        if source_server == target_server {
                            return Err(invalid(format!("source and target are the same LB server {source_server:?}")));
                        }
                    }
                    None if !source_server.is_empty() || !target_server.is_empty() => {
                        return Err(invalid("source_server/target_server given without an lb".into()));
                    }
                    None => {}
                }
                Ok(())
            }
        }
    }
}

/// How a completed step is undone when a later step fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "undo")]
pub enum Undo {
    /// Nothing to undo (a health check), or it cannot be undone (a restart).
    None,
    /// `rollback {command_id}`: the agent's ledger restores what the command changed.
    Rollback,
    /// The inverse command (stop after start, `op=del` after `op=add`).
    Command { spec: CommandSpec },
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum StepAction {
    /// One command to one host's agent.
    Command { host: String, resource: String, spec: CommandSpec, undo: Undo },
    /// Wait for connections to drain (skipped in a dry run).
    Wait { millis: u64 },
}

/// One step of a compiled plan (see [`steps`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub action: StepAction,
    /// The plan's change is in place before this step: if it fails, earlier steps are kept
    /// (undoing a finished promotion would send traffic back to the failing primary).
    pub follow_up: bool,
}

/// How [`run`] executes a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Ties every audit record and command of this run together; 1 to 96 characters of
    /// `[A-Za-z0-9._:@-]` (command ids are derived from it).
    pub action_id: String,
    /// Send every command with `dry_run` set: agents report what they would do, nothing changes.
    pub dry_run: bool,
    /// Longest wait for one command's final report (also its deadline at the agent).
    pub step_timeout: Duration,
    /// Longest time for the whole plan; rollback steps get `step_timeout` each beyond it.
    pub deadline: Duration,
    /// How long a drained server is given before it is stopped or remediated.
    pub drain_wait: Duration,
    /// Each host's Hello capabilities (from the registry). A plan needing a capability
    /// ([`ActionPlan::required_capabilities`]) on a host not listed with it is refused.
    pub host_capabilities: std::collections::BTreeMap<String, Vec<String>>,
}

impl RunOptions {
    /// Defaults: 30 s per step, 5 min overall, 2 s drain wait, not a dry run.
    pub fn new(action_id: impl Into<String>) -> Self {
        RunOptions {
            action_id: action_id.into(),
            dry_run: false,
            step_timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
            drain_wait: Duration::from_secs(2),
            host_capabilities: Default::default(),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    Succeeded,
    /// A dry run in which every agent said what it would do.
    DryRun,
    /// A step failed before anything had changed (or during a dry run): nothing to undo.
    Failed,
    /// A step failed; every completed step was undone in reverse order.
    RolledBack,
    /// A step failed and undoing an earlier step failed too: an operator must look.
    RollbackFailed,
    /// The change is in place but a follow-up step (remediating a drained primary, stopping
    /// a drained source) failed.
    FollowUpFailed,
}

impl WorkflowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Succeeded => "succeeded",
            WorkflowStatus::DryRun => "dry_run",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::RolledBack => "rolled_back",
            WorkflowStatus::RollbackFailed => "rollback_failed",
            WorkflowStatus::FollowUpFailed => "follow_up_failed",
        }
    }

    /// Whether the plan's change is in place (or, for a dry run, would be).
    pub fn ok(self) -> bool {
        matches!(self, WorkflowStatus::Succeeded | WorkflowStatus::DryRun)
    }
}

/// What happened to one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Done,
    /// The agent reported what it would do.
    DryRun,
    Waited,
    Failed,
    /// Not reached (an earlier step failed).
    Skipped,
    /// Done, then undone by the rollback.
    Undone,
    /// Done, and undoing it failed.
    UndoFailed,
}

/// The command that undid (or tried to undo) a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UndoRecord {
    pub command_id: String,
    pub kind: String,
    pub ok: bool,
    pub outcome: Option<CommandOutcome>,
    pub error: Option<String>,
}

/// One step's record in a [`WorkflowReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub index: usize,
    pub name: String,
    pub host: String,
    pub resource: String,
    pub command_id: Option<String>,
    pub kind: Option<String>,
    pub status: StepStatus,
    pub outcome: Option<CommandOutcome>,
    pub error: Option<String>,
    pub undo: Option<UndoRecord>,
    /// When the step started and ended (Unix ms; 0 when not reached).
    #[serde(default)]
    pub started_ms: i64,
    #[serde(default)]
    pub finished_ms: i64,
}

/// The result of [`run`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowReport {
    pub action_id: String,
    pub plan: String,
    pub dry_run: bool,
    pub status: WorkflowStatus,
    pub steps: Vec<StepRecord>,
    /// Why the run did not succeed.
    pub error: Option<String>,
    pub elapsed_ms: u64,
}

/// Why [`run`] refused to start (nothing was sent).
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("run options: {0}")]
    Options(String),
    #[error("the audit trail refused the workflow's first record, so nothing was sent: {0}")]
    Audit(#[from] AuditError),
}

fn check_action_id(id: &str) -> Result<(), WorkflowError> {
    let ok = !id.is_empty()
        && id.len() <= 96
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'));
    if ok {
        Ok(())
    } else {
        Err(WorkflowError::Options(format!("action id {id:?} must be 1 to 96 characters of [A-Za-z0-9._:@-]")))
    }
}

/// Collects steps; `commit` marks where the plan's change is in place.
struct Builder {
    out: Vec<Step>,
    follow_up: bool,
    drain_ms: u64,
}

impl Builder {
    fn cmd(&mut self, name: String, host: &str, resource: &str, spec: CommandSpec, undo: Undo) {
        let action = StepAction::Command { host: host.to_owned(), resource: resource.to_owned(), spec, undo };
        self.out.push(Step { name, action, follow_up: self.follow_up });
    }

    /// A `traffic` command to the load balancer's agent.
    fn lb(&mut self, name: String, lb: &LoadBalancer, server: &str, change: TrafficChange, undo: Undo) {
        let spec = CommandSpec::Traffic { backend: lb.backend.clone(), server: server.to_owned(), change };
        self.cmd(name, &lb.host, &lb.workload, spec, undo);
    }

    fn state(&mut self, name: String, lb: &LoadBalancer, server: &str, state: ServerState, undo: Undo) {
        self.lb(name, lb, server, TrafficChange::State { state }, undo);
    }

    /// Adds `server` at `address` (undone by removing it).
    fn add(&mut self, lb: &LoadBalancer, server: &str, address: &str) {
        let del =
            CommandSpec::Traffic { backend: lb.backend.clone(), server: server.to_owned(), change: TrafficChange::Del };
        let add = TrafficChange::Add { address: address.to_owned() };
        self.lb(format!("add server {server}"), lb, server, add, Undo::Command { spec: del });
    }

    fn start(&mut self, host: &str, workload: &str, instance: &Option<String>, label: &str) {
        let stop = CommandSpec::Stop { instance: instance.clone() };
        let spec = CommandSpec::Start { instance: instance.clone() };
        self.cmd(format!("start {label} on {host}"), host, workload, spec, Undo::Command { spec: stop });
    }

    fn health(&mut self, host: &str, workload: &str, label: &str) {
        self.cmd(format!("health of {label} on {host}"), host, workload, CommandSpec::Health, Undo::None);
    }

    fn wait(&mut self) {
        let action = StepAction::Wait { millis: self.drain_ms };
        self.out.push(Step { name: "wait for drain".into(), action, follow_up: self.follow_up });
    }

    fn commit(&mut self) {
        self.follow_up = true;
    }
}

/// Compiles a plan into its steps, in execution order. Pure: the same plan and options
/// always give the same steps (a dry run shows exactly these).
pub fn steps(plan: &ActionPlan, opts: &RunOptions) -> Vec<Step> {
    use ServerState::{Drain, Maint, Ready};
    let mut b = Builder { out: Vec::new(), follow_up: false, drain_ms: opts.drain_wait.as_millis() as u64 };
    match plan {
        ActionPlan::Resize { host, workload, resize } => {
            b.cmd(format!("resize {workload}"), host, workload, CommandSpec::Resize(resize.clone()), Undo::Rollback);
        }
        ActionPlan::Restart { host, workload } => {
            b.cmd(format!("restart {workload}"), host, workload, CommandSpec::Restart, Undo::None);
        }
        ActionPlan::Promote { lb, primary, standby, standby_weight, remedy } => {
            let (p, s) = (&primary.server, &standby.server);
            b.health(&standby.host, &standby.workload, &format!("standby {s}"));
            b.state(format!("standby {s} ready"), lb, s, Ready, Undo::Rollback);
            if let Some(w) = *standby_weight {
                b.lb(format!("standby {s} weight {w}"), lb, s, TrafficChange::Weight { weight: w }, Undo::Rollback);
            }
            b.state(format!("drain primary {p}"), lb, p, Drain, Undo::Rollback);
            b.wait();
            b.commit();
            let (h, w) = (&primary.host, &primary.workload);
            match remedy {
                Remedy::None => {}
                Remedy::Restart => b.cmd(format!("restart primary {w}"), h, w, CommandSpec::Restart, Undo::None),
                Remedy::Resize(r) => {
                    b.cmd(format!("resize primary {w}"), h, w, CommandSpec::Resize(r.clone()), Undo::Rollback)
                }
            }
        }
        ActionPlan::Migrate { workload: _, lb, source, target } => {
            let (src, dst) = (&source.server, &target.server);
            b.start(&target.host, &target.workload, &target.instance, &target.workload);
            b.health(&target.host, &target.workload, &target.workload);
            if let Some(a) = &target.address {
                b.add(lb, dst, a);
            }
            b.state(format!("server {dst} ready"), lb, dst, Ready, Undo::Rollback);
            b.state(format!("drain server {src}"), lb, src, Drain, Undo::Rollback);
            b.wait();
            b.commit();
            b.state(format!("server {src} to maintenance"), lb, src, Maint, Undo::None);
            if source.address.is_some() {
                b.lb(format!("remove server {src}"), lb, src, TrafficChange::Del, Undo::None);
            }
            let stop = CommandSpec::Stop { instance: source.instance.clone() };
            b.cmd(
                format!("stop {} on {}", source.workload, source.host),
                &source.host,
                &source.workload,
                stop,
                Undo::None,
            );
        }
        ActionPlan::Scale { delta, lb, instances, .. } if *delta > 0 => {
            for i in instances {
                b.start(&i.host, &i.workload, &i.instance, &i.server);
                b.health(&i.host, &i.workload, &i.server);
                if let Some(a) = &i.address {
                    b.add(lb, &i.server, a);
                }
                b.state(format!("server {} ready", i.server), lb, &i.server, Ready, Undo::Rollback);
            }
        }
        ActionPlan::Scale { lb, instances, .. } => {
            for i in instances {
                b.state(format!("drain server {}", i.server), lb, &i.server, Drain, Undo::Rollback);
            }
            b.wait();
            b.commit();
            for i in instances {
                b.state(format!("server {} to maintenance", i.server), lb, &i.server, Maint, Undo::None);
                if i.address.is_some() {
                    b.lb(format!("remove server {}", i.server), lb, &i.server, TrafficChange::Del, Undo::None);
                }
                let stop = CommandSpec::Stop { instance: i.instance.clone() };
                b.cmd(format!("stop {} on {}", i.server, i.host), &i.host, &i.workload, stop, Undo::None);
            }
        }
        ActionPlan::BlueGreen { lb, blue, green } => {
            for g in green {
                b.health(&g.host, &g.workload, &format!("green {}", g.server));
            }
            for g in green {
                b.state(format!("green {} ready", g.server), lb, &g.server, Ready, Undo::Rollback);
            }
            for x in blue {
                b.state(format!("drain blue {}", x.server), lb, &x.server, Drain, Undo::Rollback);
            }
            b.wait();
        }
        ActionPlan::MigrateStateful { workload: w, source, target, lb, source_server, target_server } => {
            if let Some(lb) = lb {
                b.state(format!("drain server {source_server}"), lb, source_server, Drain, Undo::Rollback);
                b.wait();
            }
            // The image is named by the checkpoint's command id.
            let image = command_id(opts, 's', b.out.len());
            let checkpoint = CommandSpec::Checkpoint { leave_running: false };
            b.cmd(format!("checkpoint {w} on {source}"), source, w, checkpoint, Undo::Rollback);
            let restore = CommandSpec::Restore { image, from_host: Some(source.clone()) };
            b.cmd(format!("restore {w} on {target}"), target, w, restore, Undo::Rollback);
            b.health(target, w, w);
            if let Some(lb) = lb {
                b.state(format!("server {target_server} ready"), lb, target_server, Ready, Undo::Rollback);
                b.commit();
                b.state(format!("server {source_server} to maintenance"), lb, source_server, Maint, Undo::None);
            }
        }
    }
    b.out
}

fn command_id(opts: &RunOptions, tag: char, index: usize) -> String {
    let mode = if opts.dry_run { "d" } else { "" };
    format!("{}-{mode}{tag}{index}", opts.action_id)
}

fn envelope(
    opts: &RunOptions,
    id: String,
    host: &str,
    resource: &str,
    spec: CommandSpec,
    timeout: Duration,
) -> Envelope {
    Envelope {
        idempotency_key: id.clone(),
        id,
        target_host: host.to_owned(),
        resource: resource.to_owned(),
        deadline_ms: now_ms() + timeout.as_millis() as i64,
        dry_run: opts.dry_run,
        spec,
    }
}

/// The planned commands as the first audit record shows them (ids, hosts, kinds, arguments).
fn planned(opts: &RunOptions, steps: &[Step]) -> serde_json::Value {
    let list: Vec<serde_json::Value> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| match &s.action {
            StepAction::Command { host, resource, spec, undo } => json!({
                "step": i, "name": s.name, "id": command_id(opts, 's', i),
                "target_host": host, "resource": resource, "kind": spec.kind(), "args": spec.to_args(),
                "dry_run": opts.dry_run, "undo": undo, "follow_up": s.follow_up,
            }),
            StepAction::Wait { millis } => {
                json!({"step": i, "name": s.name, "wait_ms": millis, "skipped": opts.dry_run})
            }
        })
        .collect();
    serde_json::Value::Array(list)
}

/// Result of sending one command: the outcome, or an error and whether the command may
/// have been applied anyway (no final report in time).
struct Sent {
    outcome: Option<CommandOutcome>,
    error: Option<String>,
    maybe_applied: bool,
}

async fn send(dispatcher: &Dispatcher, env: Envelope, timeout: Duration) -> Sent {
    match tokio::time::timeout(timeout, dispatcher.execute(env)).await {
        Ok(Ok(o)) => Sent { outcome: Some(o), error: None, maybe_applied: false },
        Ok(Err(e @ DispatchError::DeadlineExceeded { .. })) => {
            Sent { outcome: None, error: Some(e.to_string()), maybe_applied: true }
        }
        Ok(Err(e)) => Sent { outcome: None, error: Some(e.to_string()), maybe_applied: false },
        Err(_) => Sent {
            outcome: None,
            error: Some(format!("no final report within the step timeout of {timeout:?}")),
            maybe_applied: true,
        },
    }
}

/// A step succeeded: the agent applied it (or had applied it already, successfully); in a
/// dry run, the agent said what it would do.
fn step_ok(o: &CommandOutcome, dry_run: bool) -> bool {
    o.succeeded() || (dry_run && o.status == CommandStatus::DryRun)
}

struct Recorder<'a> {
    audit: &'a AuditLog,
    action_id: &'a str,
}

impl Recorder<'_> {
    fn record(&self, kind: AuditKind, host: &str, resource: &str, detail: serde_json::Value) -> Result<(), AuditError> {
        self.audit
            .append(AuditEntry {
                action_id: self.action_id.to_owned(),
                kind,
                host: host.to_owned(),
                resource: resource.to_owned(),
                detail,
            })
            .map(|_| ())
    }

    /// For records after a command was sent: a failure is logged, not fatal (the command's
    /// effect must still be tracked and undone).
    fn record_or_warn(&self, kind: AuditKind, host: &str, resource: &str, detail: serde_json::Value) {
        if let Err(e) = self.record(kind, host, resource, detail) {
            warn!(action = %self.action_id, error = %e, "could not append to the audit trail");
        }
    }
}

/// Executes `plan`: every step audited under `opts.action_id`, each command bounded by the
/// step timeout and the overall deadline; on a failure before the change is in place, the
/// completed steps are undone in reverse order (a step that got no report in time is undone
/// too, as it may have been applied). Errors only when nothing was sent.
pub async fn run(
    plan: &ActionPlan,
    dispatcher: &Dispatcher,
    audit: &AuditLog,
    opts: &RunOptions,
) -> Result<WorkflowReport, WorkflowError> {
    plan.validate()?;
    plan.check_capabilities(&opts.host_capabilities)?;
    check_action_id(&opts.action_id)?;
    if opts.step_timeout.is_zero() || opts.deadline.is_zero() {
        return Err(WorkflowError::Options("step timeout and deadline must be above zero".into()));
    }
    let started = Instant::now();
    let steps = steps(plan, opts);
    let rec = Recorder { audit, action_id: &opts.action_id };
    let (first_host, first_resource) = plan.targets().into_iter().next().unwrap_or_default();
    rec.record(
        AuditKind::Workflow,
        &first_host,
        &first_resource,
        json!({"event": "started", "plan": plan, "dry_run": opts.dry_run, "steps": planned(opts, &steps)}),
    )?;
    let n = steps.len();
    info!(action = %opts.action_id, plan = plan.kind(), dry_run = opts.dry_run, steps = n, "workflow started");

    let mut records: Vec<StepRecord> = Vec::with_capacity(steps.len());
    // Steps to undo on failure, in execution order.
    let mut undo_stack: Vec<usize> = Vec::new();
    // (index of the failed step, why, whether it may have been applied).
    let mut failure: Option<(usize, String)> = None;
    for (i, step) in steps.iter().enumerate() {
        let remaining = opts.deadline.saturating_sub(started.elapsed());
        let (host, resource) = match &step.action {
            StepAction::Command { host, resource, .. } => (host.clone(), resource.clone()),
            StepAction::Wait { .. } => (String::new(), String::new()),
        };
        let mut r = StepRecord {
            index: i,
            name: step.name.clone(),
            host: host.clone(),
            resource: resource.clone(),
            command_id: None,
            kind: None,
            status: StepStatus::Failed,
            outcome: None,
            error: None,
            undo: None,
            started_ms: now_ms(),
            finished_ms: 0,
        };
        if remaining.is_zero() {
            r.error = Some(format!("the workflow deadline of {:?} passed", opts.deadline));
            failure = Some((i, r.error.clone().unwrap_or_default()));
            r.finished_ms = now_ms();
            records.push(r);
            break;
        }
        match &step.action {
            StepAction::Wait { millis } => {
                let want = Duration::from_millis(*millis);
                if opts.dry_run {
                    r.status = StepStatus::Skipped;
                } else if want > remaining {
                    tokio::time::sleep(remaining).await;
                    r.error = Some(format!("the workflow deadline of {:?} passed while draining", opts.deadline));
                } else {
                    tokio::time::sleep(want).await;
                    r.status = StepStatus::Waited;
                }
                rec.record_or_warn(
                    AuditKind::WorkflowStep,
                    "",
                    "",
                    json!({
                        "event": if r.status == StepStatus::Failed { "failed" } else { "waited" },
                        "step": i, "name": step.name, "wait_ms": millis, "dry_run": opts.dry_run, "error": r.error,
                    }),
                );
                if r.status == StepStatus::Failed {
                    failure = Some((i, r.error.clone().unwrap_or_default()));
                    r.finished_ms = now_ms();
                    records.push(r);
                    break;
                }
            }
            StepAction::Command { host, resource, spec, undo } => {
                let id = command_id(opts, 's', i);
                let timeout = opts.step_timeout.min(remaining);
                let env = envelope(opts, id.clone(), host, resource, spec.clone(), timeout);
                r.command_id = Some(id.clone());
                r.kind = Some(spec.kind().to_owned());
                if let Err(e) = rec.record(
                    AuditKind::Command,
                    host,
                    resource,
                    json!({"event": "sent", "step": i, "name": step.name, "command": env}),
                ) {
                    r.error = Some(format!("not sent: the audit trail failed: {e}"));
                    failure = Some((i, r.error.clone().unwrap_or_default()));
                    r.finished_ms = now_ms();
                    records.push(r);
                    break;
                }
                let sent = send(dispatcher, env, timeout).await;
                let ok = sent.outcome.as_ref().is_some_and(|o| step_ok(o, opts.dry_run));
                r.status = match (&sent.outcome, ok) {
                    (Some(o), true) if o.status == CommandStatus::DryRun => StepStatus::DryRun,
                    (_, true) => StepStatus::Done,
                    (_, false) => StepStatus::Failed,
                };
                r.error = match (&sent.error, &sent.outcome) {
                    (Some(e), _) => Some(e.clone()),
                    (None, Some(o)) if !ok => Some(format!("{}: {}", o.status.as_str(), o.message)),
                    _ => None,
                };
                r.outcome = sent.outcome.clone();
                rec.record_or_warn(
                    AuditKind::WorkflowStep,
                    host,
                    resource,
                    json!({
                        "event": if ok { "done" } else { "failed" }, "step": i, "name": step.name,
                        "command_id": id, "outcome": sent.outcome, "error": r.error,
                    }),
                );
                let undoable = !matches!(undo, Undo::None) && !opts.dry_run;
                if undoable && (ok || sent.maybe_applied) {
                    undo_stack.push(i);
                }
                if !ok {
                    failure = Some((i, format!("step {i} ({}): {}", step.name, r.error.clone().unwrap_or_default())));
                    r.finished_ms = now_ms();
                    records.push(r);
                    break;
                }
            }
        }
        r.finished_ms = now_ms();
        records.push(r);
    }
    for (i, step) in steps.iter().enumerate().skip(records.len()) {
        let (host, resource) = match &step.action {
            StepAction::Command { host, resource, .. } => (host.clone(), resource.clone()),
            StepAction::Wait { .. } => (String::new(), String::new()),
        };
        records.push(StepRecord {
            index: i,
            name: step.name.clone(),
            host,
            resource,
            command_id: None,
            kind: None,
            status: StepStatus::Skipped,
            outcome: None,
            error: None,
            undo: None,
            started_ms: 0,
            finished_ms: 0,
        });
    }

    let status = match &failure {
        None if opts.dry_run => WorkflowStatus::DryRun,
        None => WorkflowStatus::Succeeded,
        Some((i, _)) if steps[*i].follow_up => WorkflowStatus::FollowUpFailed,
        Some(_) if undo_stack.is_empty() => WorkflowStatus::Failed,
        Some((failed, _)) => {
            let mut all_undone = true;
            for &i in undo_stack.iter().rev() {
                let StepAction::Command { host, resource, spec, undo } = &steps[i].action else { continue };
                let undo_spec = match undo {
                    Undo::None => continue,
                    Undo::Rollback => CommandSpec::Rollback { command_id: command_id(opts, 's', i) },
                    Undo::Command { spec } => spec.clone(),
                };
                let id = command_id(opts, 'u', i);
                let env = envelope(opts, id.clone(), host, resource, undo_spec.clone(), opts.step_timeout);
                rec.record_or_warn(
                    AuditKind::Command,
                    host,
                    resource,
                    json!({
                        "event": "undo_sent", "step": i, "name": steps[i].name, "undoes": spec.kind(), "command": env,
                    }),
                );
                let sent = send(dispatcher, env, opts.step_timeout).await;
                let ok = sent.outcome.as_ref().is_some_and(|o| step_ok(o, false));
                let error = match (&sent.error, &sent.outcome) {
                    (Some(e), _) => Some(e.clone()),
                    (None, Some(o)) if !ok => Some(format!("{}: {}", o.status.as_str(), o.message)),
                    _ => None,
                };
                rec.record_or_warn(
                    AuditKind::WorkflowStep,
                    host,
                    resource,
                    json!({
                        "event": if ok { "undone" } else { "undo_failed" }, "step": i, "name": steps[i].name,
                        "command_id": id, "outcome": sent.outcome, "error": error,
                    }),
                );
                // The failed step itself may never have been applied: undoing it is best effort.
                if !ok && i != *failed {
                    all_undone = false;
                }
                let r = &mut records[i];
                if i != *failed {
                    r.status = if ok { StepStatus::Undone } else { StepStatus::UndoFailed };
                }
                r.undo = Some(UndoRecord {
                    command_id: id,
                    kind: undo_spec.kind().to_owned(),
                    ok,
                    outcome: sent.outcome,
                    error,
                });
            }
            let only_failed_step = undo_stack.iter().all(|i| i == failed);
            match (all_undone, only_failed_step) {
                (false, _) => WorkflowStatus::RollbackFailed,
                (true, true) => WorkflowStatus::Failed,
                (true, false) => WorkflowStatus::RolledBack,
            }
        }
    };
    let error = failure.map(|(_, why)| why);
    let report = WorkflowReport {
        action_id: opts.action_id.clone(),
        plan: plan.kind().to_owned(),
        dry_run: opts.dry_run,
        status,
        steps: records,
        error: error.clone(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    rec.record_or_warn(
        AuditKind::Workflow,
        &first_host,
        &first_resource,
        json!({"event": "finished", "status": status, "error": error, "elapsed_ms": report.elapsed_ms}),
    );
    if status.ok() {
        info!(action = %opts.action_id, status = status.as_str(), "workflow finished");
    } else {
        warn!(action = %opts.action_id, status = status.as_str(), error = ?report.error, "workflow did not succeed");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb() -> LoadBalancer {
        LoadBalancer { host: "lb".into(), workload: "haproxy".into(), backend: "app".into() }
    }

    #[test]
    fn plans_round_trip_through_json_with_an_action_tag() {
        let p = ActionPlan::Promote {
            lb: lb(),
            primary: Member { host: "a".into(), workload: "web".into(), server: "a".into() },
            standby: Member { host: "b".into(), workload: "web".into(), server: "b".into() },
            standby_weight: Some(100),
            remedy: Remedy::Resize(Resize { memory_max: Some(1 << 30), ..Resize::default() }),
        };
        let j = serde_json::to_value(&p).expect("serializes");
        assert_eq!(j["action"], "promote");
        assert_eq!(j["remedy"]["remedy"], "resize");
        let back: ActionPlan = serde_json::from_value(j).expect("deserializes");
        assert_eq!(back, p);
        assert_eq!(
            p.targets(),
            vec![("a".into(), "web".into()), ("b".into(), "web".into()), ("lb".into(), "haproxy".into())]
        );
        let m: ActionPlan = serde_json::from_value(serde_json::json!(
            {"action": "migrate_stateful", "workload": "db", "source": "a", "target": "b"}
        ))
        .expect("lb and servers are optional");
        assert_eq!(m.targets(), vec![("a".into(), "db".into()), ("b".into(), "db".into())]);
        assert_eq!(m.required_capabilities(), vec![("a".into(), "criu"), ("b".into(), "criu")]);
        assert!(p.required_capabilities().is_empty());
    }

    #[test]
    fn incomplete_or_inconsistent_plans_are_refused() {
        let inst = |host: &str, server: &str| Instance {
            host: host.into(),
            workload: "web".into(),
            instance: None,
            server: server.into(),
            address: None,
        };
        let cases: Vec<(ActionPlan, &str)> = vec![
            (ActionPlan::Restart { host: "".into(), workload: "web".into() }, "host is empty"),
            (
                ActionPlan::Resize { host: "a".into(), workload: "web".into(), resize: Resize::default() },
                "changes nothing",
            ),
            (ActionPlan::Scale { set: "web".into(), delta: 0, lb: lb(), instances: vec![] }, "instances is empty"),
            (ActionPlan::Scale { set: "web".into(), delta: 2, lb: lb(), instances: vec![inst("a", "a")] }, "delta 2"),
            (ActionPlan::BlueGreen { lb: lb(), blue: vec![], green: vec![] }, "blue is empty"),
            (
                ActionPlan::Migrate {
                    workload: "web".into(),
                    lb: lb(),
                    source: inst("a", "s"),
                    target: Instance { address: Some("nope".into()), ..inst("b", "t") },
                },
                "not ip:port",
            ),
            (
                ActionPlan::Migrate {
                    workload: "web".into(),
                    lb: lb(),
                    source: inst("a", "s"),
                    target: inst("b", "s"),
                },
                "same LB server",
            ),
        ];
        for (p, needle) in cases {
            let e = p.validate().expect_err(needle).to_string();
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
        }
    }

    // ---- execution against fake agents -------------------------------------------------

    use crate::remediate::audit::AuditQuery;
    use crate::remediate::dispatch::DispatcherConfig;
    use crate::storage::StoreOptions;
    use crate::storage::memory::MemoryStore;
    use augur_proto::v1;
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    use std::sync::{Arc, Mutex};

    /// What the fake agents manage: running instances per host, one load balancer's servers,
    /// limits, restarts.
    #[derive(Debug, Clone, Default, PartialEq)]
    struct State {
        running: BTreeSet<(String, String)>,
        /// server -> (state, weight, address)
        servers: BTreeMap<String, (ServerState, u32, Option<String>)>,
        limits: BTreeMap<(String, String), Resize>,
        restarts: BTreeMap<(String, String), u32>,
    }

    enum UndoOp {
        Running(String, String, bool),
        Server(String, Option<(ServerState, u32, Option<String>)>),
        Limits(String, String, Resize),
    }

    enum Reply {
        Fail(&'static str),
        Silent,
    }

    type Rule = Box<dyn Fn(&str, &v1::Command) -> Option<Reply> + Send>;

    #[derive(Default)]
    struct World {
        state: State,
        ledger: HashMap<String, UndoOp>,
        /// Final status of every command executed, by id (the agent's ledger).
        results: HashMap<String, String>,
        /// Every command received: (host, command).
        log: Vec<(String, v1::Command)>,
        unhealthy: BTreeSet<(String, String)>,
        rules: Vec<Rule>,
    }

    impl World {
        /// Applies a command as an agent would, returning (status, message).
        /// Like an agent: a command id seen before gets DUPLICATE with the original status.
        fn apply(&mut self, host: &str, c: &v1::Command) -> (v1::CommandStatus, String, HashMap<String, String>) {
            use v1::CommandStatus as S;
            if let Some(orig) = self.results.get(&c.id).filter(|_| c.target_host == host) {
                self.log.push((host.to_owned(), c.clone()));
                let details = HashMap::from([("original.status".to_string(), orig.clone())]);
                return (S::Duplicate, "already executed".into(), details);
            }
            let (status, message) = self.apply_once(host, c);
            if let Some(st) = CommandStatus::from_wire(status as i32).filter(|s| *s != CommandStatus::Refused)
                && !c.dry_run
            {
                self.results.insert(c.id.clone(), st.as_str().to_owned());
            }
            (status, message, HashMap::new())
        }

        fn apply_once(&mut self, host: &str, c: &v1::Command) -> (v1::CommandStatus, String) {
            use v1::CommandStatus as S;
            self.log.push((host.to_owned(), c.clone()));
            if c.target_host != host {
                return (S::Refused, "not my host".into());
            }
            for rule in &self.rules {
                match rule(host, c) {
                    Some(Reply::Fail(why)) => return (S::Failed, why.into()),
                    Some(Reply::Silent) => return (S::Unspecified, String::new()),
                    None => {}
                }
            }
            let spec = match augur_proto::convert::envelope_of(c) {
                Ok(e) => e.spec,
                Err(e) => return (S::Refused, e.to_string()),
            };
            if c.dry_run {
                return (S::DryRun, format!("would {} {}", c.kind, c.resource));
            }
            let st = &mut self.state;
            let undo = match spec {
                CommandSpec::Health => {
                    return if self.unhealthy.contains(&(host.to_owned(), c.resource.clone())) {
                        (S::Failed, "unhealthy".into())
                    } else {
                        (S::Succeeded, "healthy".into())
                    };
                }
                CommandSpec::Start { instance } | CommandSpec::Stop { instance } => {
                    let key = (host.to_owned(), instance.unwrap_or_else(|| c.resource.clone()));
                    let was = st.running.contains(&key);
                    if c.kind == "start" {
                        st.running.insert(key.clone());
                    } else {
                        st.running.remove(&key);
                    }
                    UndoOp::Running(key.0, key.1, was)
                }
                // The workload stops at its checkpoint (unless left running) and runs after a restore.
                CommandSpec::Checkpoint { leave_running } => {
                    let key = (host.to_owned(), c.resource.clone());
                    let was = st.running.contains(&key);
                    if !was {
                        return (S::Failed, "not running".into());
                    }
                    if !leave_running {
                        st.running.remove(&key);
                    }
                    UndoOp::Running(key.0, key.1, was)
                }
                CommandSpec::Restore { .. } => {
                    let key = (host.to_owned(), c.resource.clone());
                    let was = st.running.contains(&key);
                    if was {
                        return (S::Refused, "already running".into());
                    }
                    st.running.insert(key.clone());
                    UndoOp::Running(key.0, key.1, was)
                }
                CommandSpec::Restart => {
                    *st.restarts.entry((host.to_owned(), c.resource.clone())).or_default() += 1;
                    return (S::Succeeded, "restarted".into());
                }
                CommandSpec::Resize(r) => {
                    let key = (host.to_owned(), c.resource.clone());
                    let prev = st.limits.insert(key.clone(), r).unwrap_or_default();
                    UndoOp::Limits(key.0, key.1, prev)
                }
                CommandSpec::Traffic { server, change, .. } => {
                    let prev = st.servers.get(&server).cloned();
                    match (change, prev.clone()) {
                        (TrafficChange::Add { address }, None) => {
                            st.servers.insert(server.clone(), (ServerState::Maint, 1, Some(address)));
                        }
                        (TrafficChange::Add { .. }, Some(_)) => return (S::Failed, "server exists".into()),
                        (_, None) => return (S::Failed, "no such server".into()),
                        (TrafficChange::Del, Some(p)) if p.0 != ServerState::Maint => {
                            return (S::Failed, "server must be in maintenance to be removed".into());
                        }
                        (TrafficChange::Del, Some(_)) => {
                            st.servers.remove(&server);
                        }
                        (TrafficChange::State { state }, Some(p)) => {
                            st.servers.insert(server.clone(), (state, p.1, p.2));
                        }
                        (TrafficChange::Weight { weight }, Some(p)) => {
                            st.servers.insert(server.clone(), (p.0, weight, p.2));
                        }
                    }
                    UndoOp::Server(server, prev)
                }
                CommandSpec::Rollback { command_id } => {
                    let Some(op) = self.ledger.remove(&command_id) else {
                        return (S::Failed, format!("nothing to undo for {command_id}"));
                    };
                    match op {
                        UndoOp::Running(h, k, was) => {
                            if was {
                                st.running.insert((h, k));
                            } else {
                                st.running.remove(&(h, k));
                            }
                        }
                        UndoOp::Server(name, prev) => match prev {
                            Some(p) => {
                                st.servers.insert(name, p);
                            }
                            None => {
                                st.servers.remove(&name);
                            }
                        },
                        UndoOp::Limits(h, w, r) => {
                            st.limits.insert((h, w), r);
                        }
                    }
                    return (S::Succeeded, "rolled back".into());
                }
                CommandSpec::Config { .. } => return (S::Refused, "no templates here".into()),
            };
            self.ledger.insert(c.id.clone(), undo);
            (S::Succeeded, "done".into())
        }

        /// Kinds and servers/resources of the commands received, in order, as short strings.
        fn sent(&self) -> Vec<String> {
            self.log
                .iter()
                .map(|(h, c)| {
                    let what = c.args.get("server").cloned().unwrap_or_else(|| c.resource.clone());
                    let arg = ["state", "weight", "op", "command_id"]
                        .iter()
                        .find_map(|k| c.args.get(*k).map(|v| format!(" {v}")))
                        .unwrap_or_default();
                    format!("{h}:{} {what}{arg}", c.kind)
                })
                .collect()
        }
    }

    struct Lab {
        dispatcher: Dispatcher,
        audit: AuditLog,
        world: Arc<Mutex<World>>,
        agents: Vec<tokio::task::JoinHandle<()>>,
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            for a in &self.agents {
                a.abort();
            }
        }
    }

    /// Fake agents on `hosts` sharing one world; each reports ACCEPTED, then the outcome.
    fn lab(hosts: &[&str], state: State) -> Lab {
        let dispatcher = Dispatcher::new(DispatcherConfig { queue: 16, report_grace: Duration::from_millis(0) });
        let world = Arc::new(Mutex::new(World { state, ..Default::default() }));
        let agents = hosts
            .iter()
            .map(|h| {
                let mut link = dispatcher.register(h);
                let (d, w, host) = (dispatcher.clone(), world.clone(), h.to_string());
                tokio::spawn(async move {
                    while let Some(c) = link.recv().await {
                        let (status, message, details) = w.lock().expect("world").apply(&host, &c);
                        if status == v1::CommandStatus::Unspecified {
                            continue; // silent: never reports
                        }
                        let report = |status: v1::CommandStatus, message: String| v1::CommandReport {
                            command_id: c.id.clone(),
                            status: status as i32,
                            message,
                            time_ms: now_ms(),
                            details: details.clone(),
                        };
                        d.report(&host, &report(v1::CommandStatus::Accepted, String::new()));
                        d.report(&host, &report(status, message));
                    }
                })
            })
            .collect();
        let audit = AuditLog::open(Arc::new(MemoryStore::new(StoreOptions::default()))).expect("audit");
        Lab { dispatcher, audit, world, agents }
    }

    fn opts(id: &str) -> RunOptions {
        RunOptions {
            action_id: id.into(),
            dry_run: false,
            step_timeout: Duration::from_millis(300),
            deadline: Duration::from_secs(10),
            drain_wait: Duration::from_millis(20),
            host_capabilities: BTreeMap::new(),
        }
    }

    fn member(host: &str, server: &str) -> Member {
        Member { host: host.into(), workload: "web".into(), server: server.into() }
    }

    fn inst(host: &str, server: &str, address: Option<&str>) -> Instance {
        Instance {
            host: host.into(),
            workload: "web".into(),
            instance: Some(format!("web@{server}")),
            server: server.into(),
            address: address.map(Into::into),
        }
    }

    fn servers(kv: &[(&str, ServerState, u32)]) -> BTreeMap<String, (ServerState, u32, Option<String>)> {
        kv.iter().map(|(s, st, w)| ((*s).to_owned(), (*st, *w, None))).collect()
    }

    fn promote(remedy: Remedy) -> ActionPlan {
        ActionPlan::Promote {
            lb: lb(),
            primary: member("a", "a"),
            standby: member("b", "b"),
            standby_weight: Some(100),
            remedy,
        }
    }

    fn promote_state() -> State {
        State { servers: servers(&[("a", ServerState::Ready, 1), ("b", ServerState::Maint, 1)]), ..Default::default() }
    }

    fn statuses(r: &WorkflowReport) -> Vec<StepStatus> {
        r.steps.iter().map(|s| s.status).collect()
    }

    fn fail_on(host: &'static str, kind: &'static str, arg: Option<(&'static str, &'static str)>) -> Rule {
        Box::new(move |h, c| {
            let hit =
                h == host && c.kind == kind && arg.is_none_or(|(k, v)| c.args.get(k).map(String::as_str) == Some(v));
            hit.then_some(Reply::Fail("scripted failure"))
        })
    }

    #[tokio::test]
    async fn promotion_moves_traffic_to_the_standby_then_restarts_the_primary() {
        let lab = lab(&["a", "b", "lb"], promote_state());
        let r = run(&promote(Remedy::Restart), &lab.dispatcher, &lab.audit, &opts("act-1")).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
        let w = lab.world.lock().expect("world");
        assert_eq!(
            w.sent(),
            vec!["b:health web", "lb:traffic b ready", "lb:traffic b 100", "lb:traffic a drain", "a:restart web",]
        );
        assert_eq!(w.state.servers["b"], (ServerState::Ready, 100, None));
        assert_eq!(w.state.servers["a"].0, ServerState::Drain);
        assert_eq!(w.state.restarts[&("a".to_string(), "web".to_string())], 1);
        // Every step is in the audit trail under the action id, which verifies.
        let recs = lab.audit.query(&AuditQuery { action_id: Some("act-1".into()), ..Default::default() }).expect("q");
        let events: Vec<String> = recs.iter().map(|r| r.detail["event"].as_str().unwrap_or("?").to_owned()).collect();
        assert_eq!(events.first().map(String::as_str), Some("started"));
        assert_eq!(events.last().map(String::as_str), Some("finished"));
        assert_eq!(events.iter().filter(|e| *e == "sent").count(), 5);
        assert_eq!(events.iter().filter(|e| *e == "done").count(), 5);
        assert_eq!(events.iter().filter(|e| *e == "waited").count(), 1);
        let sent = recs.iter().find(|r| r.detail["event"] == "sent" && r.host == "a").expect("restart audited");
        assert_eq!(sent.detail["command"]["spec"]["kind"], "restart");
        assert_eq!(sent.detail["command"]["target_host"], "a");
        assert!(lab.audit.verify().expect("verify").ok());
        // Commands sent are 'command' records; their results are 'workflow_step' records.
        let kinds: Vec<AuditKind> = recs.iter().filter(|r| r.detail["event"] == "sent").map(|r| r.kind).collect();
        assert_eq!(kinds, vec![AuditKind::Command; 5]);
        let wait = &r.steps[4];
        assert_eq!(wait.status, StepStatus::Waited);
        assert!(wait.finished_ms - wait.started_ms >= 20, "{wait:?}");
        assert!(r.steps.windows(2).all(|w| w[0].finished_ms <= w[1].started_ms));
    }

    #[tokio::test]
    async fn an_unhealthy_standby_stops_the_promotion_before_any_traffic_change() {
        let lab = lab(&["a", "b", "lb"], promote_state());
        lab.world.lock().expect("world").unhealthy.insert(("b".into(), "web".into()));
        let r = run(&promote(Remedy::Restart), &lab.dispatcher, &lab.audit, &opts("act-2")).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::Failed);
        assert!(r.error.as_deref().unwrap_or("").contains("unhealthy"), "{:?}", r.error);
        let w = lab.world.lock().expect("world");
        assert_eq!(w.sent(), vec!["b:health web"]);
        assert_eq!(w.state, promote_state());
        assert_eq!(statuses(&r)[1..].iter().filter(|s| **s != StepStatus::Skipped).count(), 0);
    }

    #[tokio::test]
    async fn a_failed_drain_rolls_the_standby_back_in_reverse_order() {
        let lab = lab(&["a", "b", "lb"], promote_state());
        lab.world.lock().expect("world").rules.push(fail_on("lb", "traffic", Some(("state", "drain"))));
        let r = run(&promote(Remedy::Restart), &lab.dispatcher, &lab.audit, &opts("act-3")).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::RolledBack, "{r:?}");
        let w = lab.world.lock().expect("world");
        assert_eq!(
            w.sent(),
            vec![
                "b:health web",
                "lb:traffic b ready",
                "lb:traffic b 100",
                "lb:traffic a drain",
                "lb:rollback haproxy act-3-s2",
                "lb:rollback haproxy act-3-s1",
            ]
        );
        assert_eq!(w.state, promote_state(), "everything as before");
        assert_eq!(
            statuses(&r),
            vec![
                StepStatus::Done,
                StepStatus::Undone,
                StepStatus::Undone,
                StepStatus::Failed,
                StepStatus::Skipped,
                StepStatus::Skipped
            ]
        );
        let undone = lab
            .audit
            .query(&AuditQuery {
                action_id: Some("act-3".into()),
                kind: Some(AuditKind::WorkflowStep),
                ..Default::default()
            })
            .expect("q")
            .iter()
            .filter(|r| r.detail["event"] == "undone")
            .count();
        assert_eq!(undone, 2);
    }

    #[tokio::test]
    async fn a_failed_remedy_after_the_switch_keeps_traffic_on_the_standby() {
        let lab = lab(&["a", "b", "lb"], promote_state());
        lab.world.lock().expect("world").rules.push(fail_on("a", "resize", None));
        let plan = promote(Remedy::Resize(Resize { memory_max: Some(1 << 30), ..Resize::default() }));
        let r = run(&plan, &lab.dispatcher, &lab.audit, &opts("act-4")).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::FollowUpFailed);
        let w = lab.world.lock().expect("world");
        assert_eq!(w.state.servers["b"].0, ServerState::Ready);
        assert_eq!(w.state.servers["a"].0, ServerState::Drain);
        assert!(!w.sent().iter().any(|s| s.contains("rollback")));
    }

    fn migrate_plan(with_addresses: bool) -> ActionPlan {
        let (sa, ta) = if with_addresses { (Some("10.0.0.1:80"), Some("10.0.0.2:80")) } else { (None, None) };
        ActionPlan::Migrate { workload: "web".into(), lb: lb(), source: inst("a", "a", sa), target: inst("b", "b", ta) }
    }

    fn migrate_state() -> State {
        let mut s = State::default();
        s.running.insert(("a".into(), "web@a".into()));
        s.servers.insert("a".into(), (ServerState::Ready, 1, Some("10.0.0.1:80".into())));
        s
    }

    #[tokio::test]
    async fn migration_starts_checks_switches_and_stops_the_source() {
        let lab = lab(&["a", "b", "lb"], migrate_state());
        let r = run(&migrate_plan(true), &lab.dispatcher, &lab.audit, &opts("mig-1")).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
        let w = lab.world.lock().expect("world");
        assert_eq!(
            w.sent(),
            vec![
                "b:start web",
                "b:health web",
                "lb:traffic b add",
                "lb:traffic b ready",
                "lb:traffic a drain",
                "lb:traffic a maint",
                "lb:traffic a del",
                "a:stop web",
            ]
        );
        assert_eq!(w.state.running, BTreeSet::from([("b".to_string(), "web@b".to_string())]));
        assert_eq!(w.state.servers.keys().collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(w.state.servers["b"], (ServerState::Ready, 1, Some("10.0.0.2:80".into())));
    }

    #[tokio::test]
    async fn a_failed_target_health_check_stops_the_target_and_leaves_the_source_serving() {
        let lab = lab(&["a", "b", "lb"], migrate_state());
        lab.world.lock().expect("world").unhealthy.insert(("b".into(), "web".into()));
        let r = run(&migrate_plan(true), &lab.dispatcher, &lab.audit, &opts("mig-2")).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::RolledBack);
        let w = lab.world.lock().expect("world");
        assert_eq!(w.sent(), vec!["b:start web", "b:health web", "b:stop web"]);
        assert_eq!(w.state, migrate_state(), "source still running and ready, target gone");
        assert_eq!(r.steps[0].undo.as_ref().map(|u| (u.kind.as_str(), u.ok)), Some(("stop", true)));
    }

    #[tokio::test]
    async fn a_failure_after_the_lb_add_removes_the_target_from_the_lb_and_stops_it() {
        let lab = lab(&["a", "b", "lb"], migrate_state());
        lab.world.lock().expect("world").rules.push(fail_on("lb", "traffic", Some(("state", "drain"))));
        let r = run(&migrate_plan(true), &lab.dispatcher, &lab.audit, &opts("mig-3")).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::RolledBack);
        let w = lab.world.lock().expect("world");
        assert_eq!(
            w.sent()[5..],
            ["lb:rollback haproxy mig-3-s3", "lb:traffic b del", "b:stop web"].map(String::from),
            "undo in reverse order: ready, add, start"
        );
        assert_eq!(w.state, migrate_state());
    }

    #[tokio::test]
    async fn a_silent_agent_times_out_the_step_and_its_possible_effect_is_undone_too() {
        let lab = lab(&["a", "b", "lb"], migrate_state());
        // The LB never answers 'ready'; the rollback of it is answered.
        lab.world.lock().expect("world").rules.push(Box::new(|h, c| {
            (h == "lb" && c.args.get("state").map(String::as_str) == Some("ready")).then_some(Reply::Silent)
        }));
        let started = Instant::now();
        let r = run(&migrate_plan(false), &lab.dispatcher, &lab.audit, &opts("mig-4")).await.expect("runs");
        assert!(started.elapsed() >= Duration::from_millis(300), "waited for the step timeout");
        assert_eq!(r.status, WorkflowStatus::RolledBack, "{r:?}");
        assert!(
            r.steps[2].error.as_deref().unwrap_or("").contains("deadline")
                || r.steps[2].error.as_deref().unwrap_or("").contains("timeout")
        );
        let w = lab.world.lock().expect("world");
        // The silent step got a rollback (best effort: it was never applied, so the agent
        // has nothing to undo), then the start was undone.
        assert_eq!(w.sent()[3..], ["lb:rollback haproxy mig-4-s2", "b:stop web"].map(String::from));
        assert!(!w.state.running.contains(&("b".to_string(), "web@b".to_string())));
        assert_eq!(r.steps[2].undo.as_ref().map(|u| u.ok), Some(false));
    }

    #[tokio::test]
    async fn an_unreachable_host_fails_the_step_and_earlier_steps_are_undone() {
        let lab = lab(&["a", "b"], migrate_state()); // no agent on the LB host
        let r = run(&migrate_plan(false), &lab.dispatcher, &lab.audit, &opts("mig-5")).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::RolledBack);
        assert!(r.steps[2].error.as_deref().unwrap_or("").contains("no connected agent"), "{:?}", r.steps[2]);
        assert_eq!(lab.world.lock().expect("world").sent(), vec!["b:start web", "b:health web", "b:stop web"]);
    }

    #[tokio::test]
    async fn a_failed_undo_is_reported_as_rollback_failed() {
        let lab = lab(&["a", "b", "lb"], promote_state());
        {
            let mut w = lab.world.lock().expect("world");
            w.rules.push(fail_on("lb", "traffic", Some(("state", "drain"))));
            w.rules.push(fail_on("lb", "rollback", Some(("command_id", "act-5-s1"))));
        }
        let r = run(&promote(Remedy::None), &lab.dispatcher, &lab.audit, &opts("act-5")).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::RollbackFailed);
        assert_eq!(
            &statuses(&r)[..4],
            &[StepStatus::Done, StepStatus::UndoFailed, StepStatus::Undone, StepStatus::Failed]
        );
        let failed = lab
            .audit
            .query(&AuditQuery { action_id: Some("act-5".into()), ..Default::default() })
            .expect("q")
            .into_iter()
            .filter(|r| r.detail["event"] == "undo_failed")
            .count();
        assert_eq!(failed, 1);
    }

    #[tokio::test]
    async fn scaling_up_and_down_adds_and_removes_instances_and_lb_entries() {
        let lab = lab(&["a", "b", "c", "lb"], migrate_state());
        let up = ActionPlan::Scale {
            set: "web".into(),
            delta: 2,
            lb: lb(),
            instances: vec![inst("b", "b", Some("10.0.0.2:80")), inst("c", "c", Some("10.0.0.3:80"))],
        };
        let r = run(&up, &lab.dispatcher, &lab.audit, &opts("up-1")).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::Succeeded);
        {
            let w = lab.world.lock().expect("world");
            assert_eq!(w.state.running.len(), 3);
            assert!(w.state.servers.values().all(|s| s.0 == ServerState::Ready));
            assert_eq!(w.state.servers.len(), 3);
        }
        let down = ActionPlan::Scale {
            set: "web".into(),
            delta: -2,
            lb: lb(),
            instances: vec![inst("b", "b", Some("10.0.0.2:80")), inst("c", "c", Some("10.0.0.3:80"))],
        };
        let r = run(&down, &lab.dispatcher, &lab.audit, &opts("down-1")).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
        assert_eq!(lab.world.lock().expect("world").state, migrate_state());
    }

    #[tokio::test]
    async fn a_scale_up_whose_second_instance_is_unhealthy_removes_the_first_too() {
        let lab = lab(&["a", "b", "c", "lb"], migrate_state());
        lab.world.lock().expect("world").unhealthy.insert(("c".into(), "web".into()));
        let up = ActionPlan::Scale {
            set: "web".into(),
            delta: 2,
            lb: lb(),
            instances: vec![inst("b", "b", Some("10.0.0.2:80")), inst("c", "c", Some("10.0.0.3:80"))],
        };
        let r = run(&up, &lab.dispatcher, &lab.audit, &opts("up-2")).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::RolledBack);
        let w = lab.world.lock().expect("world");
        assert_eq!(
            w.sent()[6..],
            ["c:stop web", "lb:rollback haproxy up-2-s3", "lb:traffic b del", "b:stop web"].map(String::from)
        );
        assert_eq!(w.state, migrate_state());
    }

    #[tokio::test]
    async fn blue_green_switches_and_rolls_back_the_greens_when_a_blue_will_not_drain() {
        let state = State {
            servers: servers(&[
                ("blue1", ServerState::Ready, 1),
                ("blue2", ServerState::Ready, 1),
                ("green1", ServerState::Maint, 1),
            ]),
            ..Default::default()
        };
        let plan = ActionPlan::BlueGreen {
            lb: lb(),
            blue: vec![member("a", "blue1"), member("a", "blue2")],
            green: vec![member("b", "green1")],
        };
        let lab1 = lab(&["a", "b", "lb"], state.clone());
        let r = run(&plan, &lab1.dispatcher, &lab1.audit, &opts("bg-1")).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::Succeeded);
        let s = lab1.world.lock().expect("world").state.clone();
        assert_eq!(
            s.servers.values().map(|v| v.0).collect::<Vec<_>>(),
            vec![ServerState::Drain, ServerState::Drain, ServerState::Ready]
        );

        let lab2 = lab(&["a", "b", "lb"], state.clone());
        lab2.world.lock().expect("world").rules.push(fail_on("lb", "traffic", Some(("server", "blue2"))));
        let r = run(&plan, &lab2.dispatcher, &lab2.audit, &opts("bg-2")).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::RolledBack);
        assert_eq!(lab2.world.lock().expect("world").state, state);
    }

    #[tokio::test]
    async fn a_dry_run_sends_every_command_marked_dry_and_changes_nothing() {
        let lab = lab(&["a", "b", "lb"], migrate_state());
        let o = RunOptions { dry_run: true, drain_wait: Duration::from_secs(3600), ..opts("dry-1") };
        let r = run(&migrate_plan(true), &lab.dispatcher, &lab.audit, &o).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::DryRun, "{r:?}");
        let w = lab.world.lock().expect("world");
        assert_eq!(w.state, migrate_state());
        assert_eq!(w.log.len(), 8);
        assert!(
            w.log.iter().all(|(_, c)| c.dry_run && c.id.starts_with("dry-1-d")),
            "dry-run ids differ from real ones"
        );
        assert!(r.steps.iter().any(|s| s.status == StepStatus::Skipped && s.name == "wait for drain"));
        // The first audit record lists exactly the commands that were sent.
        let first = &lab
            .audit
            .query(&AuditQuery { action_id: Some("dry-1".into()), limit: 1, ..Default::default() })
            .expect("q")[0];
        let planned: Vec<(String, String)> = first.detail["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter_map(|s| Some((s["id"].as_str()?.to_owned(), s["kind"].as_str()?.to_owned())))
            .collect();
        let sent: Vec<(String, String)> = w.log.iter().map(|(_, c)| (c.id.clone(), c.kind.clone())).collect();
        assert_eq!(planned, sent);
        assert_eq!(first.detail["dry_run"], true);
    }

    #[tokio::test]
    async fn a_dry_run_refused_by_an_agent_fails_without_undo() {
        let lab = lab(&["a", "b", "lb"], migrate_state());
        lab.world.lock().expect("world").rules.push(fail_on("lb", "traffic", None));
        let o = RunOptions { dry_run: true, ..opts("dry-2") };
        let r = run(&migrate_plan(true), &lab.dispatcher, &lab.audit, &o).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::Failed);
        assert!(!lab.world.lock().expect("world").sent().iter().any(|s| s.contains("rollback") || s.contains("stop")));
    }

    #[tokio::test]
    async fn the_overall_deadline_stops_a_long_drain_and_rolls_back() {
        let lab = lab(&["a", "b", "lb"], promote_state());
        let o =
            RunOptions { deadline: Duration::from_millis(200), drain_wait: Duration::from_secs(60), ..opts("dl-1") };
        let started = Instant::now();
        let r = run(&promote(Remedy::Restart), &lab.dispatcher, &lab.audit, &o).await.expect("runs");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(r.status, WorkflowStatus::RolledBack, "{r:?}");
        assert!(r.error.as_deref().unwrap_or("").contains("deadline"));
        assert_eq!(lab.world.lock().expect("world").state, promote_state());
    }

    #[tokio::test]
    async fn invalid_plans_and_options_send_nothing() {
        let lab = lab(&["a", "b", "lb"], promote_state());
        let bad_plan = ActionPlan::Restart { host: "".into(), workload: "web".into() };
        assert!(matches!(run(&bad_plan, &lab.dispatcher, &lab.audit, &opts("x")).await, Err(WorkflowError::Plan(_))));
        let plan = promote(Remedy::None);
        for id in ["", "has space", &"x".repeat(97)] {
            assert!(matches!(run(&plan, &lab.dispatcher, &lab.audit, &opts(id)).await, Err(WorkflowError::Options(_))));
        }
        let o = RunOptions { step_timeout: Duration::ZERO, ..opts("x") };
        assert!(matches!(run(&plan, &lab.dispatcher, &lab.audit, &o).await, Err(WorkflowError::Options(_))));
        assert!(lab.world.lock().expect("world").log.is_empty());
        assert_eq!(lab.audit.head_seq(), 0);
    }

    #[tokio::test]
    async fn resize_and_restart_are_single_commands_and_a_repeated_run_is_a_duplicate() {
        let lab = lab(&["a"], State::default());
        let plan = ActionPlan::Resize {
            host: "a".into(),
            workload: "web".into(),
            resize: Resize { memory_max: Some(2 << 30), ..Resize::default() },
        };
        let r = run(&plan, &lab.dispatcher, &lab.audit, &opts("rs-1")).await.expect("runs");
        assert_eq!(r.status, WorkflowStatus::Succeeded);
        // The same action id again: the agent's ledger says DUPLICATE, which is success.
        let r = run(&plan, &lab.dispatcher, &lab.audit, &opts("rs-1")).await.expect("runs");
        assert_eq!(
            (r.status, r.steps[0].outcome.as_ref().map(|o| o.status)),
            (WorkflowStatus::Succeeded, Some(CommandStatus::Duplicate))
        );
        // A repeated run whose original step failed is a failure, not a success.
        lab.world.lock().expect("world").rules.push(fail_on("a", "restart", None));
        let restart = ActionPlan::Restart { host: "a".into(), workload: "web".into() };
        assert_eq!(
            run(&restart, &lab.dispatcher, &lab.audit, &opts("rs-2")).await.expect("runs").status,
            WorkflowStatus::Failed
        );
        lab.world.lock().expect("world").rules.clear();
        let again = run(&restart, &lab.dispatcher, &lab.audit, &opts("rs-2")).await.expect("runs");
        assert_eq!(again.steps[0].outcome.as_ref().map(|o| o.status), Some(CommandStatus::Duplicate));
        assert_eq!(again.status, WorkflowStatus::Failed, "the original restart failed");
        assert_eq!(
            run(&restart, &lab.dispatcher, &lab.audit, &opts("rs-3")).await.expect("runs").status,
            WorkflowStatus::Succeeded
        );
        let w = lab.world.lock().expect("world");
        assert_eq!(w.sent(), vec!["a:resize web", "a:resize web", "a:restart web", "a:restart web", "a:restart web"]);
        assert_eq!(w.state.restarts[&("a".to_string(), "web".to_string())], 1, "restarted once");
        assert_eq!(w.state.limits[&("a".to_string(), "web".to_string())].memory_max, Some(2 << 30));
    }

    fn stateful_plan(with_lb: bool) -> ActionPlan {
        ActionPlan::MigrateStateful {
            workload: "db".into(),
            source: "a".into(),
            target: "b".into(),
            lb: with_lb.then(lb),
            source_server: if with_lb { "a".into() } else { String::new() },
            target_server: if with_lb { "b".into() } else { String::new() },
        }
    }

    fn stateful_state() -> State {
        let mut s = State::default();
        s.running.insert(("a".into(), "db".into()));
        s.servers.insert("a".into(), (ServerState::Ready, 1, None));
        s.servers.insert("b".into(), (ServerState::Maint, 1, None));
        s
    }

    fn criu_opts(id: &str, hosts: &[&str]) -> RunOptions {
        let caps = hosts.iter().map(|h| (h.to_string(), vec!["actions.v1".to_string(), "criu".into()])).collect();
        RunOptions { host_capabilities: caps, ..opts(id) }
    }

    #[tokio::test]
    async fn a_stateful_migration_checkpoints_restores_checks_and_switches() {
        let lab = lab(&["a", "b", "lb"], stateful_state());
        let r = run(&stateful_plan(true), &lab.dispatcher, &lab.audit, &criu_opts("sm-1", &["a", "b"]))
            .await
            .expect("runs");
        assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
        let w = lab.world.lock().expect("world");
        assert_eq!(
            w.sent(),
            vec![
                "lb:traffic a drain",
                "a:checkpoint db",
                "b:restore db",
                "b:health db",
                "lb:traffic b ready",
                "lb:traffic a maint"
            ]
        );
        // The restore names the checkpoint's command id as its image, from the source host.
        let (_, restore) = &w.log[2];
        assert_eq!(restore.args.get("image").map(String::as_str), Some(w.log[1].1.id.as_str()));
        assert_eq!(w.log[1].1.id, "sm-1-s2");
        assert_eq!(restore.args.get("from_host").map(String::as_str), Some("a"));
        assert_eq!(w.state.running, BTreeSet::from([("b".to_string(), "db".to_string())]));
        assert_eq!(w.state.servers["b"].0, ServerState::Ready);
        assert_eq!(w.state.servers["a"].0, ServerState::Maint);
    }

    #[tokio::test]
    async fn an_unhealthy_restored_copy_is_stopped_and_the_workload_restored_on_the_source() {
        let lab = lab(&["a", "b", "lb"], stateful_state());
        lab.world.lock().expect("world").unhealthy.insert(("b".into(), "db".into()));
        let r = run(&stateful_plan(true), &lab.dispatcher, &lab.audit, &criu_opts("sm-2", &["a", "b"]))
            .await
            .expect("runs");
        assert_eq!(r.status, WorkflowStatus::RolledBack, "{r:?}");
        let w = lab.world.lock().expect("world");
        assert_eq!(
            w.sent(),
            vec![
                "lb:traffic a drain",
                "a:checkpoint db",
                "b:restore db",
                "b:health db",
                "b:rollback db sm-2-s3",
                "a:rollback db sm-2-s2",
                "lb:rollback haproxy sm-2-s0",
            ]
        );
        assert_eq!(w.state, stateful_state(), "running on the source again, serving, nothing on the target");
    }

    #[tokio::test]
    async fn a_stateful_migration_needs_criu_announced_on_both_hosts_and_sends_nothing_otherwise() {
        let lab = lab(&["a", "b"], stateful_state());
        for hosts in [&[][..], &["a"][..], &["b"][..]] {
            let e = run(&stateful_plan(false), &lab.dispatcher, &lab.audit, &criu_opts("sm-3", hosts))
                .await
                .expect_err("refused");
            assert!(e.to_string().contains("did not announce the \"criu\" capability"), "{hosts:?}: {e}");
        }
        assert!(lab.world.lock().expect("world").log.is_empty());
        assert_eq!(lab.audit.head_seq(), 0);
        // Without an LB: checkpoint, restore, health.
        let r = run(&stateful_plan(false), &lab.dispatcher, &lab.audit, &criu_opts("sm-4", &["a", "b"]))
            .await
            .expect("runs");
        assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
        assert_eq!(lab.world.lock().expect("world").sent(), vec!["a:checkpoint db", "b:restore db", "b:health db"]);
        let bad = ActionPlan::MigrateStateful {
            workload: "db".into(),
            source: "a".into(),
            target: "a".into(),
            lb: None,
            source_server: String::new(),
            target_server: String::new(),
        };
        assert!(bad.validate().expect_err("same host").to_string().contains("same host"));
        let ActionPlan::MigrateStateful { workload, source, target, .. } = stateful_plan(false) else { unreachable!() };
        let servers_without_lb = ActionPlan::MigrateStateful {
            workload,
            source,
            target,
            lb: None,
            source_server: "a".into(),
            target_server: String::new(),
        };
        assert!(servers_without_lb.validate().expect_err("servers").to_string().contains("without an lb"));
    }
}
