//! The Orchestrator: remediation that operators and programs ask for, over gRPC
//! (`augur.v1.Orchestrator`) and the REST/JSON gateway ([`crate::rest`]).
//!
//! [`Orchestration`] holds the operations on domain types (serde, so the REST gateway
//! takes and returns them as JSON with the proto's field names); [`OrchestratorService`]
//! at the end of this file is the thin tonic adapter.
//!
//! Requests are checked before anything is sent: a malformed request is
//! [`OrchestrateError::BadRequest`] naming the field; an unknown host, workload, resource
//! set or action id is [`OrchestrateError::NotFound`]; every (host, workload) a plan
//! touches must be a declared workload of a connected host (an empty or unknown target set
//! means nothing is done). A resource with an operator action in flight refuses a second
//! one. Operator requests are not held to the automation's concurrency limits, cooldowns
//! and halt (those bound what augur does on its own; approvals of pending decisions do go
//! through them). Plans run through the decision engine's [`Executor`] (the workflow engine over the
//! dispatcher): every step has a deadline, a health check and a rollback, and a dry run
//! sends every command as a dry run, so agents report exactly what they would do and
//! change nothing. Each request is recorded in the audit trail (a `decision` record naming
//! the operator's request, then the workflow's records, then an `outcome`).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use augur_core::command::CommandSpec;
use augur_core::time::now_ms;
use augur_proto::v1;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic::{Request, Response, Status};

use crate::features::{FeatureEngine, ResourceKind, feature_names};
use crate::predict::PredictionEngine;
use crate::remediate::audit::{AuditEntry, AuditKind, AuditLog, AuditQuery, AuditRecord};
use crate::remediate::decide::{ExecResult, Executor, Fleet, PendingAction, RemediateError, Remediator};
use crate::remediate::placement::{self, HostCapacity};
use crate::remediate::policy::{ActionKind, MemberConfig, RemediationConfig, ResourceSetConfig};
use crate::remediate::workflow::{self, RunOptions, StepAction, StepRecord, WorkflowReport, WorkflowStatus};
use crate::remediate::workflow::{ActionPlan, Instance, LoadBalancer, Member, Remedy};
use crate::server::ForecastState;
use crate::storage::Store;

/// Demand metric of scaling recommendations (a counter: its rate is CPU cores in use).
pub const SCALE_METRIC: &str = "container_cpu_usage_seconds_total";
/// How far ahead scaling recommendations look.
pub const SCALE_HORIZON: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// The forecast quantile demand is sized from.
pub const SCALE_QUANTILE: f64 = 0.9;
/// Share of an instance's CPU capacity the set is sized to use at the forecast demand.
pub const SCALE_TARGET_UTILIZATION: f64 = 0.7;

/// Why an orchestration request fails.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrchestrateError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// Refused by a safety limit or state (busy, halted, not pending any more).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

type Result<T> = std::result::Result<T, OrchestrateError>;

fn bad(s: impl Into<String>) -> OrchestrateError {
    OrchestrateError::BadRequest(s.into())
}

/// `POST /orchestrate_migration`, `OrchestrateMigration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrateRequest {
    pub workload: String,
    pub source_host: String,
    /// Empty: chosen among the set's other members.
    pub target_host: String,
    pub dry_run: bool,
    pub reason: String,
}

/// `POST /autonomous_remediate`, `Remediate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemediateRequest {
    pub host: String,
    pub workload: String,
    /// An [`ActionKind`] name; empty: the knowledge base's first applicable candidate for
    /// `failure_type`.
    pub action: String,
    pub failure_type: String,
    pub args: BTreeMap<String, String>,
    /// An explicit plan instead of host/workload/action.
    pub plan: Option<ActionPlan>,
    pub dry_run: bool,
    pub reason: String,
}

/// `POST /predictive_scale`, `PredictiveScale`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScaleRequest {
    pub set: String,
    /// 0: the recommendation's delta.
    pub delta: i32,
    pub dry_run: bool,
    pub reason: String,
}

/// `GET /remediation_events`, `ListRemediationEvents`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsQuery {
    /// `host` or `host/workload`.
    pub resource: String,
    pub action_id: String,
    pub kinds: Vec<String>,
    pub since_ms: i64,
    pub limit: u32,
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    Succeeded,
    RolledBack,
    Failed,
    DryRun,
    PendingApproval,
    /// Approved; it runs in the background (follow it in the audit trail by its id).
    Started,
    NothingToDo,
    /// The change is in place, but a follow-up step (stopping the drained source,
    /// remediating the drained primary) failed.
    FollowUpFailed,
}

impl ActionStatus {
    fn to_wire(self) -> v1::ActionStatus {
        match self {
            ActionStatus::Succeeded => v1::ActionStatus::Succeeded,
            ActionStatus::RolledBack => v1::ActionStatus::RolledBack,
            ActionStatus::Failed => v1::ActionStatus::Failed,
            ActionStatus::DryRun => v1::ActionStatus::DryRun,
            ActionStatus::PendingApproval => v1::ActionStatus::PendingApproval,
            ActionStatus::Started => v1::ActionStatus::Started,
            ActionStatus::NothingToDo => v1::ActionStatus::NothingToDo,
            ActionStatus::FollowUpFailed => v1::ActionStatus::FollowUpFailed,
        }
    }
}

/// One command of a plan as sent, with its outcome (as far as the executor tells).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepReport {
    pub step: String,
    pub host: String,
    pub resource: String,
    pub command_id: String,
    pub kind: String,
    pub args: BTreeMap<String, String>,
    pub status: String,
    pub message: String,
    /// What the agent reported (`previous.<arg>` values, what a dry run would do...).
    pub details: BTreeMap<String, String>,
    pub started_ms: i64,
    pub finished_ms: i64,
}

/// What an orchestration request came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionReport {
    pub action_id: String,
    pub status: ActionStatus,
    pub plan: Option<ActionPlan>,
    pub steps: Vec<StepReport>,
    pub message: String,
    /// Everything the executor reported (commands, reports, steps), as it reported it.
    pub detail: serde_json::Value,
}

/// A recommended size for a resource set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingRecommendation {
    pub set: String,
    pub current: i32,
    pub recommended: i32,
    pub delta: i32,
    pub metric: String,
    pub horizon_s: i64,
    pub quantile: f64,
    pub predicted_demand: f64,
    pub capacity_per_instance: f64,
    pub reason: String,
}

/// Result of a hash-chain check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditVerdict {
    pub ok: bool,
    pub records: u64,
    pub first_bad_seq: u64,
    pub message: String,
}

/// Operations behind the Orchestrator service and the REST gateway.
pub struct Orchestration {
    cfg: RemediationConfig,
    fleet: Arc<dyn Fleet>,
    exec: Arc<dyn Executor>,
    remediator: Arc<Remediator>,
    audit: Arc<AuditLog>,
    predictions: Arc<PredictionEngine>,
    features: Arc<FeatureEngine>,
    store: Arc<dyn Store>,
    forecasts: Arc<ForecastState>,
    /// `host/workload` of operator actions in flight.
    busy: Mutex<HashSet<String>>,
    /// Serving members (`host/workload`, in the order they joined) of the resource sets a
    /// scale action has resized; a set not in here serves its configured non-standby members.
    serving: Mutex<BTreeMap<String, Vec<String>>>,
    seq: AtomicU64,
}

/// Frees the busy marks of an action when it ends (or its future is dropped).
struct BusyGuard<'a> {
    busy: &'a Mutex<HashSet<String>>,
    keys: Vec<String>,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let mut b = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        for k in &self.keys {
            b.remove(k);
        }
    }
}

/// `host/workload`: a member's key in [`Orchestration::serving`].
fn member_key(host: &str, workload: &str) -> String {
    format!("{host}/{workload}")
}

/// The members `set` is configured to serve with: those with a server that are not standbys.
fn configured_serving(set: &ResourceSetConfig) -> Vec<String> {
    set.members.iter().filter(|m| m.server.is_some() && !m.standby).map(|m| member_key(&m.host, &m.workload)).collect()
}

fn feature(names: &[String], row: &[f32], name: &str) -> f64 {
    names.iter().position(|n| n == name).and_then(|i| row.get(i)).map_or(f64::NAN, |v| f64::from(*v))
}

fn lb_of(set: &ResourceSetConfig) -> Result<LoadBalancer> {
    let lb = set.lb.as_ref().ok_or_else(|| bad(format!("resource set {} has no load balancer", set.name)))?;
    Ok(LoadBalancer { host: lb.host.clone(), workload: lb.workload.clone(), backend: lb.backend.clone() })
}

impl Orchestration {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: RemediationConfig,
        fleet: Arc<dyn Fleet>,
        exec: Arc<dyn Executor>,
        remediator: Arc<Remediator>,
        audit: Arc<AuditLog>,
        predictions: Arc<PredictionEngine>,
        features: Arc<FeatureEngine>,
        store: Arc<dyn Store>,
        forecasts: Arc<ForecastState>,
    ) -> Self {
        let o = Orchestration {
            cfg,
            fleet,
            exec,
            remediator,
            audit,
            predictions,
            features,
            store,
            forecasts,
            busy: Mutex::new(HashSet::new()),
            serving: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
        };
        o.restore_membership();
        o
    }

    /// Who serves survives a restart: the operator plans whose change is in place are
    /// replayed from the audit trail (their decision records hold the plan, their outcome
    /// records the status), oldest first. An unreadable trail leaves the configured view.
    fn restore_membership(&self) {
        const MAX: usize = 100_000;
        let read =
            |kind| self.audit.query(&AuditQuery { kind: Some(kind), limit: MAX, newest: true, ..Default::default() });
        let (outcomes, decisions) = match (read(AuditKind::Outcome), read(AuditKind::Decision)) {
            (Ok(o), Ok(d)) => (o, d),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "audit trail unreadable: resource sets start from their configured members");
                return;
            }
        };
        let by_operator = |r: &AuditRecord| r.detail["by"] == "operator";
        let plans: BTreeMap<&str, ActionPlan> = decisions
            .iter()
            .filter(|r| by_operator(r) && r.detail["dry_run"] == false)
            .filter_map(|r| Some((r.action_id.as_str(), serde_json::from_value(r.detail["plan"].clone()).ok()?)))
            .collect();
        let mut replayed = 0;
        for r in outcomes.iter().filter(|r| by_operator(r) && r.detail["phase"] == "executed") {
            let in_place = matches!(r.detail["status"].as_str(), Some("succeeded" | "follow_up_failed"));
            if let (true, Some(plan)) = (in_place, plans.get(r.action_id.as_str())) {
                self.note_membership(plan);
                replayed += 1;
            }
        }
        if replayed > 0 {
            tracing::info!(replayed, "resource set membership restored from the audit trail");
        }
    }

    fn new_id(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        format!("op-{:x}-{n}", now_ms())
    }

    /// Checks `host` is connected and declares `workload`.
    fn require_workload(&self, host: &str, workload: &str) -> Result<()> {
        if host.trim().is_empty() {
            return Err(bad("host is required"));
        }
        if workload.trim().is_empty() {
            return Err(bad("workload is required"));
        }
        let hosts = self.fleet.hosts();
        match hosts.iter().find(|h| h.host == host) {
            None => return Err(OrchestrateError::NotFound(format!("unknown host {host:?}"))),
            Some(h) if !h.connected => {
                return Err(OrchestrateError::NotFound(format!("host {host:?} has no connected agent")));
            }
            Some(_) => {}
        }
        if !self.fleet.workloads().iter().any(|w| w.host == host && w.name == workload) {
            return Err(OrchestrateError::NotFound(format!("host {host:?} declares no workload {workload:?}")));
        }
        Ok(())
    }

    fn set_of(&self, host: &str, workload: &str) -> Result<&ResourceSetConfig> {
        self.cfg
            .set_of(host, workload)
            .ok_or_else(|| OrchestrateError::NotFound(format!("{host}/{workload} is a member of no resource set")))
    }

    fn member_server(set: &ResourceSetConfig, host: &str, workload: &str) -> Result<String> {
        set.members
            .iter()
            .find(|m| m.host == host && m.workload == workload)
            .and_then(|m| m.server.clone())
            .ok_or_else(|| bad(format!("{host}/{workload} has no server name in resource set {}", set.name)))
    }

    /// `POST /autonomous_remediate`.
    pub async fn remediate(&self, req: RemediateRequest) -> Result<ActionReport> {
        let plan = match req.plan.clone() {
            Some(p) => {
                if !req.host.is_empty() || !req.workload.is_empty() || !req.action.is_empty() {
                    return Err(bad("give either plan or host/workload/action, not both"));
                }
                p
            }
            None => {
                self.require_workload(&req.host, &req.workload)?;
                let action = if !req.action.is_empty() {
                    ActionKind::parse(&req.action).ok_or_else(|| {
                        let names: Vec<&str> = ActionKind::ALL.iter().map(|a| a.as_str()).collect();
                        bad(format!("unknown action {:?}; one of {}", req.action, names.join(", ")))
                    })?
                } else if req.failure_type.is_empty() {
                    return Err(bad("give an action, a failure_type (the knowledge base picks the action) or a plan"));
                } else {
                    self.first_candidate(&req)?
                };
                self.plan_for(action, &req.host, &req.workload, &req.args)?
            }
        };
        let detail = json!({"request": "remediate", "action": req.action, "failure_type": req.failure_type,
                            "args": req.args});
        self.execute(plan, req.dry_run, &req.reason, detail).await
    }

    /// The knowledge base's first candidate for the failure type that applies here.
    fn first_candidate(&self, req: &RemediateRequest) -> Result<ActionKind> {
        let candidates = self.cfg.knowledge_for(&req.failure_type);
        if candidates.is_empty() {
            return Err(bad(format!("the knowledge base has no actions for failure type {:?}", req.failure_type)));
        }
        let mut why = Vec::new();
        for a in candidates {
            match self.plan_for(a, &req.host, &req.workload, &req.args) {
                Ok(_) => return Ok(a),
                Err(e) => why.push(format!("{}: {e}", a.as_str())),
            }
        }
        let msg = format!(
            "no candidate action for {} applies to {}/{}: {}",
            req.failure_type,
            req.host,
            req.workload,
            why.join("; ")
        );
        // Arguments no candidate takes are the caller's mistake; otherwise the workload or
        // its set does not allow any.
        Err(if req.args.is_empty() { OrchestrateError::Refused(msg) } else { bad(msg) })
    }

    fn allowed(&self, host: &str, workload: &str, command: &str) -> bool {
        self.fleet
            .workloads()
            .iter()
            .any(|w| w.host == host && w.name == workload && w.allowed_actions.iter().any(|a| a == command))
    }

    /// The plan for an operator's explicit action on (host, workload).
    fn plan_for(
        &self,
        action: ActionKind,
        host: &str,
        workload: &str,
        args: &BTreeMap<String, String>,
    ) -> Result<ActionPlan> {
        for c in action.required_commands() {
            if !self.allowed(host, workload, c) {
                return Err(OrchestrateError::Refused(format!(
                    "{host}/{workload} does not allow `{c}` (allowed_actions in its agent config)"
                )));
            }
        }
        let only = |allowed: &[&str]| -> Result<()> {
            match args.keys().find(|k| !allowed.contains(&k.as_str())) {
                Some(k) => Err(bad(format!("action {} takes no argument {k:?}", action.as_str()))),
                None => Ok(()),
            }
        };
        let (h, w) = (host.to_owned(), workload.to_owned());
        match action {
            ActionKind::ResizeMemory | ActionKind::ResizeCpu => {
                let keys: &[&str] =
                    if action == ActionKind::ResizeMemory { &["memory_max", "memory_high"] } else { &["cpu_max"] };
                only(keys)?;
                if args.is_empty() {
                    return Err(bad(format!("action {} needs {}", action.as_str(), keys.join(" or "))));
                }
                let resize = match CommandSpec::from_args("resize", args).map_err(|e| bad(e.to_string()))? {
                    CommandSpec::Resize(r) => r,
                    _ => unreachable!("resize arguments parse to a resize"),
                };
                Ok(ActionPlan::Resize { host: h, workload: w, resize })
            }
            ActionKind::Restart => {
                only(&[])?;
                Ok(ActionPlan::Restart { host: h, workload: w })
            }
            ActionKind::PromoteStandby => {
                only(&["remedy", "memory_max", "cpu_max", "standby_weight"])?;
                let set = self.set_of(host, workload)?;
                let lb = lb_of(set)?;
                let primary =
                    Member { host: h.clone(), workload: w.clone(), server: Self::member_server(set, host, workload)? };
                let sb =
                    set.members.iter().find(|m| m.standby && !(m.host == host && m.workload == workload)).ok_or_else(
                        || OrchestrateError::Refused(format!("resource set {} has no warm standby", set.name)),
                    )?;
                let standby = Member {
                    host: sb.host.clone(),
                    workload: sb.workload.clone(),
                    server: sb
                        .server
                        .clone()
                        .ok_or_else(|| bad(format!("standby {}/{} has no server", sb.host, sb.workload)))?,
                };
                let sizes = args.contains_key("memory_max") || args.contains_key("cpu_max");
                if sizes && args.get("remedy").map(String::as_str) != Some("resize") {
                    return Err(bad("memory_max and cpu_max size the primary's remedy: give remedy=resize with them"));
                }
                let remedy = match args.get("remedy").map(String::as_str) {
                    None | Some("none") => Remedy::None,
                    Some("restart") => Remedy::Restart,
                    Some("resize") => {
                        let mut a = args.clone();
                        a.retain(|k, _| k == "memory_max" || k == "cpu_max");
                        match CommandSpec::from_args("resize", &a).map_err(|e| bad(e.to_string()))? {
                            CommandSpec::Resize(r) => Remedy::Resize(r),
                            _ => unreachable!("resize arguments parse to a resize"),
                        }
                    }
                    Some(o) => return Err(bad(format!("remedy {o:?} must be none, restart or resize"))),
                };
                let standby_weight = args
                    .get("standby_weight")
                    .map(|v| v.parse::<u32>().map_err(|_| bad(format!("standby_weight {v:?} is not 0..=256"))))
                    .transpose()?;
                Ok(ActionPlan::Promote { lb, primary, standby, standby_weight, remedy })
            }
            ActionKind::Migrate => {
                only(&["target_host"])?;
                let target = args.get("target_host").cloned().unwrap_or_default();
                self.migration_plan(workload, host, &target)
            }
            ActionKind::ScaleOut => {
                Err(bad("scale_out acts on a resource set: use PredictiveScale (POST /predictive_scale)"))
            }
        }
    }

    /// The host's memory capacity as placement sees it.
    fn host_capacity(&self, host: &str) -> HostCapacity {
        let hi = self.fleet.hosts().into_iter().find(|h| h.host == host);
        let (avail, total) = match self.features.resource(host, now_ms()) {
            Some((kind @ ResourceKind::Host, row)) => {
                let names = feature_names(kind, self.features.config());
                (feature(&names, &row, "mem_avail_last"), feature(&names, &row, "mem_total_last"))
            }
            _ => (f64::NAN, f64::NAN),
        };
        HostCapacity {
            host: host.to_owned(),
            tier: hi.as_ref().and_then(|h| h.labels.get("tier").cloned()),
            mem_available: avail,
            mem_total: total,
            connected: hi.is_some_and(|h| h.connected),
        }
    }

    fn migration_plan(&self, workload: &str, source_host: &str, target_host: &str) -> Result<ActionPlan> {
        let set = self.set_of(source_host, workload)?;
        if !set.stateless {
            return Err(OrchestrateError::Refused(format!(
                "resource set {} is not stateless; only stateless workloads migrate live",
                set.name
            )));
        }
        if self.fleet.workloads().iter().any(|w| w.host == source_host && w.name == workload && !w.stateless) {
            return Err(OrchestrateError::Refused(format!("{source_host}/{workload} is declared stateful")));
        }
        let lb = lb_of(set)?;
        let source_server = Self::member_server(set, source_host, workload)?;
        let target = if !target_host.is_empty() {
            if target_host == source_host {
                return Err(bad("target_host is the source host"));
            }
            if !self.fleet.hosts().iter().any(|h| h.host == target_host) {
                return Err(OrchestrateError::NotFound(format!("unknown host {target_host:?}")));
            }
            set.members.iter().find(|m| m.host == target_host && m.server.is_some()).ok_or_else(|| {
                bad(format!("host {target_host:?} has no member with a server in resource set {}", set.name))
            })?
        } else {
            let spare: Vec<_> =
                set.members.iter().filter(|m| m.host != source_host && m.server.is_some() && !m.standby).collect();
            if spare.is_empty() {
                return Err(OrchestrateError::Refused(format!(
                    "resource set {} has no other member to migrate to",
                    set.name
                )));
            }
            let hosts: Vec<HostCapacity> = spare.iter().map(|m| self.host_capacity(&m.host)).collect();
            let demand = self
                .features
                .resource(&format!("{source_host}/{}", self.workload_resource(source_host, workload)), now_ms())
                .map(|(kind, row)| feature(&feature_names(kind, self.features.config()), &row, "mem_usage_last"))
                .unwrap_or(f64::NAN);
            let sla = set.sla.as_deref().and_then(|s| self.cfg.sla(s));
            let placed = if demand.is_finite() && !self.cfg.tiers.is_empty() {
                placement::place(demand, source_host, &self.cfg.tiers, sla, &hosts).map(|p| p.host)
            } else {
                // No tiers or no demand figure: the first connected spare member.
                hosts.iter().find(|h| h.connected).map(|h| h.host.clone())
            };
            let host = placed.ok_or_else(|| {
                OrchestrateError::Refused(format!("no connected member host of set {} can take {workload}", set.name))
            })?;
            spare.into_iter().find(|m| m.host == host).expect("placed on a listed member")
        };
        let target_server = target.server.clone().expect("members chosen have a server");
        let plan = ActionPlan::Migrate {
            workload: workload.to_owned(),
            lb,
            source: Instance {
                host: source_host.to_owned(),
                workload: workload.to_owned(),
                instance: None,
                server: source_server,
                address: None,
            },
            target: Instance {
                host: target.host.clone(),
                workload: target.workload.clone(),
                instance: None,
                server: target_server,
                address: None,
            },
        };
        plan.validate().map_err(|e| bad(e.to_string()))?;
        Ok(plan)
    }

    fn workload_resource(&self, host: &str, workload: &str) -> String {
        self.fleet
            .workloads()
            .into_iter()
            .find(|w| w.host == host && w.name == workload)
            .map(|w| w.resource)
            .unwrap_or_default()
    }

    /// `POST /orchestrate_migration`.
    pub async fn migrate(&self, req: MigrateRequest) -> Result<ActionReport> {
        self.require_workload(&req.source_host, &req.workload)?;
        let plan = self.migration_plan(&req.workload, &req.source_host, &req.target_host)?;
        let detail = json!({"request": "orchestrate_migration", "target_host": req.target_host});
        self.execute(plan, req.dry_run, &req.reason, detail).await
    }

    /// `POST /predictive_scale`.
    pub async fn scale(&self, req: ScaleRequest) -> Result<ActionReport> {
        if req.set.trim().is_empty() {
            return Err(bad("set is required"));
        }
        let set = self
            .cfg
            .sets
            .iter()
            .find(|s| s.name == req.set)
            .ok_or_else(|| OrchestrateError::NotFound(format!("unknown resource set {:?}", req.set)))?;
        let lb = lb_of(set)?;
        let (delta, rec) = if req.delta != 0 {
            (req.delta, None)
        } else {
            let rec = self.recommend(set).await?;
            if rec.delta == 0 {
                return Ok(ActionReport {
                    action_id: String::new(),
                    status: ActionStatus::NothingToDo,
                    plan: None,
                    steps: vec![],
                    message: format!("set {} stays at {} instance(s): {}", set.name, rec.current, rec.reason),
                    detail: json!({"recommendation": rec}),
                });
            }
            (rec.delta, Some(rec))
        };
        let plan = self.scale_plan(set, delta, lb)?;
        let detail = json!({"request": "predictive_scale", "delta": delta, "recommendation": rec});
        self.execute(plan, req.dry_run, &req.reason, detail).await
    }

    /// Records who serves after a plan changed it: a scale adds or removes its instances, a
    /// migration or standby promotion puts the target (standby) in the source's (primary's)
    /// place, in every set that has both as members. Called once the change is in place
    /// (the plan succeeded, or only a follow-up step after its commit point failed); a
    /// rolled-back or failed plan left the sets as they were.
    fn note_membership(&self, plan: &ActionPlan) {
        let key = |host: &str, workload: &str| member_key(host, workload);
        let (sets, out, inn): (Vec<&ResourceSetConfig>, Vec<String>, Vec<String>) = match plan {
            ActionPlan::Scale { set, delta, instances, .. } => {
                let keys: Vec<String> = instances.iter().map(|i| key(&i.host, &i.workload)).collect();
                let sets = self.cfg.sets.iter().filter(|s| s.name == *set).collect();
                if *delta > 0 { (sets, vec![], keys) } else { (sets, keys, vec![]) }
            }
            ActionPlan::Migrate { source, target, .. } => (
                self.sets_with(&[source, target]),
                vec![key(&source.host, &source.workload)],
                vec![key(&target.host, &target.workload)],
            ),
            ActionPlan::Promote { primary, standby, .. } => {
                let (p, s) = (key(&primary.host, &primary.workload), key(&standby.host, &standby.workload));
                let sets = self
                    .cfg
                    .sets
                    .iter()
                    .filter(|x| {
                        let has = |k: &String| x.members.iter().any(|m| key(&m.host, &m.workload) == *k);
                        has(&p) && has(&s)
                    })
                    .collect();
                (sets, vec![p], vec![s])
            }
            _ => return,
        };
        let mut serving = self.serving.lock().unwrap_or_else(PoisonError::into_inner);
        for set in sets {
            let now = serving.entry(set.name.clone()).or_insert_with(|| configured_serving(set));
            now.retain(|k| !out.contains(k) && !inn.contains(k));
            now.extend(inn.iter().cloned());
        }
    }

    /// The resource sets that have every one of `instances` as a member.
    fn sets_with(&self, instances: &[&Instance]) -> Vec<&ResourceSetConfig> {
        self.cfg
            .sets
            .iter()
            .filter(|s| {
                instances.iter().all(|i| s.members.iter().any(|m| m.host == i.host && m.workload == i.workload))
            })
            .collect()
    }

    /// The members of `set` serving now: after a scale action, those it left in the
    /// rotation (in the order they joined); before any, the configured non-standby members.
    fn serving_members(&self, set: &ResourceSetConfig) -> Vec<MemberConfig> {
        let serving = self.serving.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(keys) = serving.get(&set.name) else {
            return set.members.iter().filter(|m| m.server.is_some() && !m.standby).cloned().collect();
        };
        keys.iter()
            .filter_map(|k| set.members.iter().find(|m| member_key(&m.host, &m.workload) == *k))
            .cloned()
            .collect()
    }

    /// Scale plans: up takes the members with a load-balancer server that do not serve now
    /// (members an earlier scale-in removed first, then the declared standbys, in
    /// configuration order); down removes the serving members that joined last, never the
    /// set's last instance.
    fn scale_plan(&self, set: &ResourceSetConfig, delta: i32, lb: LoadBalancer) -> Result<ActionPlan> {
        let n = delta.unsigned_abs() as usize;
        let serving = self.serving_members(set);
        let pool: Vec<MemberConfig> = if delta > 0 {
            let spare = |m: &&MemberConfig| {
                m.server.is_some() && !serving.iter().any(|s| s.host == m.host && s.workload == m.workload)
            };
            let (standby, other): (Vec<_>, Vec<_>) = set.members.iter().filter(spare).partition(|m| m.standby);
            other.into_iter().chain(standby).take(n).cloned().collect()
        } else {
            if serving.len() <= n {
                return Err(OrchestrateError::Refused(format!(
                    "resource set {} serves with {} instance(s): removing {n} would leave none",
                    set.name,
                    serving.len()
                )));
            }
            serving.iter().rev().take(n).cloned().collect()
        };
        if pool.len() < n {
            return Err(OrchestrateError::Refused(format!(
                "resource set {} has {} spare member(s) (a load-balancer server, not serving), {n} needed",
                set.name,
                pool.len(),
            )));
        }
        let instances = pool
            .into_iter()
            .map(|m| Instance {
                host: m.host.clone(),
                workload: m.workload.clone(),
                instance: None,
                server: m.server.expect("filtered on server"),
                address: None,
            })
            .collect();
        let plan = ActionPlan::Scale { set: set.name.clone(), delta, lb, instances };
        plan.validate().map_err(|e| bad(e.to_string()))?;
        Ok(plan)
    }

    /// Runs (or dry-runs) a plan whose every target is a declared workload of a connected host.
    async fn execute(
        &self,
        plan: ActionPlan,
        dry_run: bool,
        reason: &str,
        request: serde_json::Value,
    ) -> Result<ActionReport> {
        plan.validate().map_err(|e| bad(e.to_string()))?;
        let targets = plan.targets();
        if targets.is_empty() {
            return Err(bad("the plan has no targets"));
        }
        for (h, w) in &targets {
            self.require_workload(h, w)?;
        }
        let keys: Vec<String> = targets.iter().map(|(h, w)| format!("{h}/{w}")).collect();
        let _guard = if dry_run {
            None
        } else {
            let mut b = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(k) = keys.iter().find(|k| b.contains(*k)) {
                return Err(OrchestrateError::Refused(format!("an operator action on {k} is already in flight")));
            }
            b.extend(keys.iter().cloned());
            Some(BusyGuard { busy: &self.busy, keys })
        };
        let action_id = self.new_id();
        let (host, resource) = targets[0].clone();
        let deadline_ms = now_ms() + self.cfg.safety.action_deadline.as_millis() as i64;
        self.append(AuditEntry {
            action_id: action_id.clone(),
            kind: AuditKind::Decision,
            host: host.clone(),
            resource: resource.clone(),
            detail: json!({"by": "operator", "request": request, "reason": reason, "plan": plan,
                           "dry_run": dry_run, "deadline_ms": deadline_ms}),
        })
        .await?;
        let r = self.exec.execute(action_id.clone(), plan.clone(), deadline_ms, dry_run).await;
        let report = report_of(action_id.clone(), plan.clone(), dry_run, r);
        if !dry_run && matches!(report.status, ActionStatus::Succeeded | ActionStatus::FollowUpFailed) {
            self.note_membership(&plan);
        }
        self.append(AuditEntry {
            action_id,
            kind: AuditKind::Outcome,
            host,
            resource,
            detail: json!({"phase": "executed", "by": "operator", "status": report.status, "message": report.message}),
        })
        .await?;
        Ok(report)
    }

    async fn append(&self, e: AuditEntry) -> Result<AuditRecord> {
        let audit = self.audit.clone();
        tokio::task::spawn_blocking(move || audit.append(e))
            .await
            .map_err(|e| OrchestrateError::Internal(e.to_string()))?
            .map_err(|e| OrchestrateError::Unavailable(format!("audit trail: {e}")))
    }

    /// `GET /pending_actions`.
    pub fn pending(&self) -> Result<Vec<PendingAction>> {
        Ok(self.remediator.pending())
    }

    /// `POST /pending_actions/{id}/approve`: the action starts in the background.
    pub fn approve(&self, action_id: &str, by: &str, comment: &str) -> Result<ActionReport> {
        if action_id.is_empty() {
            return Err(bad("action_id is required"));
        }
        let by = if by.is_empty() { "unknown" } else { by };
        // The approval record names the operator; a comment travels with the name.
        let by = if comment.is_empty() { by.to_owned() } else { format!("{by} ({comment})") };
        let p = self.remediator.approve(action_id, &by).map_err(remediate_error)?;
        Ok(ActionReport {
            action_id: p.action_id,
            status: ActionStatus::Started,
            plan: Some(p.plan),
            steps: vec![],
            message: "approved; running (follow it with the audit trail)".into(),
            detail: serde_json::Value::Null,
        })
    }

    /// `POST /pending_actions/{id}/reject`.
    pub fn reject(&self, action_id: &str, by: &str, why: &str) -> Result<PendingAction> {
        if action_id.is_empty() {
            return Err(bad("action_id is required"));
        }
        self.remediator.reject(action_id, if by.is_empty() { "unknown" } else { by }, why).map_err(remediate_error)
    }

    /// `GET /scaling_recommendations`: for each resource set with a load balancer (or the
    /// named one), the instance count its forecast demand needs.
    ///
    /// Demand is CPU: the rate of `container_cpu_usage_seconds_total` of every serving
    /// member's workload resource (the members serving now, after any scale actions),
    /// forecast [`SCALE_HORIZON`] ahead at quantile [`SCALE_QUANTILE`], summed. A member
    /// without a forecast yet (an instance just added has too little history) is left out
    /// and named in the reason. One instance's capacity is its CPU limit (the feature
    /// engine's `cpu_limit_last`) times its host tier's performance factor; the set is sized
    /// so each instance runs at most [`SCALE_TARGET_UTILIZATION`] of that, between one
    /// instance and the members that have a server in the load balancer. Without a forecast
    /// for any member or a CPU limit, the recommendation keeps the current size and says why.
    pub async fn recommendations(&self, set: &str) -> Result<Vec<ScalingRecommendation>> {
        if !set.is_empty() && !self.cfg.sets.iter().any(|s| s.name == set) {
            return Err(OrchestrateError::NotFound(format!("unknown resource set {set:?}")));
        }
        let sets: Vec<ResourceSetConfig> =
            self.cfg.sets.iter().filter(|s| (set.is_empty() && s.lb.is_some()) || s.name == set).cloned().collect();
        let mut out = Vec::new();
        for s in sets {
            out.push(self.recommend(&s).await?);
        }
        Ok(out)
    }

    async fn recommend(&self, set: &ResourceSetConfig) -> Result<ScalingRecommendation> {
        let serving = self.serving_members(set);
        let slots = set.members.iter().filter(|m| m.server.is_some()).count() as i32;
        let current = serving.len() as i32;
        let mut rec = ScalingRecommendation {
            set: set.name.clone(),
            current,
            recommended: current,
            delta: 0,
            metric: SCALE_METRIC.to_owned(),
            horizon_s: SCALE_HORIZON.as_secs() as i64,
            quantile: SCALE_QUANTILE,
            predicted_demand: f64::NAN,
            capacity_per_instance: f64::NAN,
            reason: String::new(),
        };
        let mut demand = 0.0;
        let mut capacity = Vec::new();
        // Members without a forecast (an instance started moments ago has too little
        // history) are left out of the demand: the others' history still carries the load
        // it took over. Without any forecast the size stays.
        let (mut forecast, mut missing) = (0, Vec::new());
        for m in &serving {
            let resource = self.workload_resource(&m.host, &m.workload);
            if resource.is_empty() {
                rec.reason = format!("{}/{} is not a declared workload of a connected host", m.host, m.workload);
                return Ok(rec);
            }
            match self.forecast_rate(&m.host, &resource, SCALE_METRIC, SCALE_HORIZON, SCALE_QUANTILE).await {
                Ok(v) => {
                    demand += v.max(0.0);
                    forecast += 1;
                }
                Err(why) => {
                    missing.push(format!("{}/{resource}: {why}", m.host));
                    continue;
                }
            }
            let limit = self
                .features
                .resource(&format!("{}/{resource}", m.host), now_ms())
                .map(|(kind, row)| feature(&feature_names(kind, self.features.config()), &row, "cpu_limit_last"))
                .unwrap_or(f64::NAN);
            let perf =
                self.host_capacity(&m.host).tier.and_then(|t| self.cfg.tier(&t).map(|t| t.performance)).unwrap_or(1.0);
            if limit.is_finite() && limit > 0.0 {
                capacity.push(limit * perf);
            }
        }
        if forecast == 0 {
            rec.reason = format!("no demand forecast for {}", missing.join("; "));
            return Ok(rec);
        }
        rec.predicted_demand = demand;
        if capacity.is_empty() {
            rec.reason = "no serving member has a CPU limit to size instances by".into();
            return Ok(rec);
        }
        let per = capacity.iter().sum::<f64>() / capacity.len() as f64;
        rec.capacity_per_instance = per;
        let need = (demand / (per * SCALE_TARGET_UTILIZATION)).ceil() as i32;
        rec.recommended = need.clamp(1, slots.max(1));
        rec.delta = rec.recommended - current;
        rec.reason = format!(
            "p{:.0} CPU demand in {} min {demand:.2} cores / ({per:.2} cores per instance x {:.0}% target) = {need}{}",
            SCALE_QUANTILE * 100.0,
            SCALE_HORIZON.as_secs() / 60,
            SCALE_TARGET_UTILIZATION * 100.0,
            if need != rec.recommended { format!(", bounded to 1..={slots} member slots") } else { String::new() }
        );
        if !missing.is_empty() {
            rec.reason.push_str(&format!(" (left out, no forecast yet: {})", missing.join("; ")));
        }
        Ok(rec)
    }

    /// The `quantile` forecast of a counter's per-second rate (or a gauge) `horizon` ahead.
    async fn forecast_rate(
        &self,
        host: &str,
        resource: &str,
        metric: &str,
        horizon: std::time::Duration,
        quantile: f64,
    ) -> std::result::Result<f64, String> {
        let (store, fc) = (self.store.clone(), self.forecasts.clone());
        let (host, resource, metric) = (host.to_owned(), resource.to_owned(), metric.to_owned());
        tokio::task::spawn_blocking(move || {
            let found: Vec<_> = store
                .list_series(Some(&host))
                .into_iter()
                .filter(|(_, m)| m.key.resource == resource && m.key.metric == metric)
                .collect();
            let [(id, meta)] = found.as_slice() else {
                return Err(format!("{} series {metric} (one expected)", found.len()));
            };
            let now = now_ms();
            let plan = crate::forecast::plan_history(horizon);
            let from = now - plan.lookback.as_millis() as i64;
            let counter = meta.key.kind == augur_core::MetricKind::Counter;
            let mut history = store.read_range(*id, from, now + 1).map_err(|e| e.to_string())?;
            if counter {
                history = crate::forecast::counter_rate(&history);
            }
            let mut req = crate::forecast::ForecastRequest::new(horizon);
            req.quantiles = vec![quantile];
            req.non_negative = true;
            let mut state = fc.series.lock().unwrap_or_else(PoisonError::into_inner);
            if state.len() >= crate::server::ForecastState::MAX_SERIES && !state.contains_key(id) {
                state.clear();
            }
            let f = state
                .entry(*id)
                .or_default()
                .forecast(&fc.forecasting, &history, now, &req)
                .map_err(|e| e.to_string())?;
            f.quantiles.first().map(|q| q.1).ok_or_else(|| "no quantile".to_owned())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// `GET /remediation_events`.
    pub async fn events(&self, q: EventsQuery) -> Result<Vec<AuditRecord>> {
        let mut kinds = Vec::new();
        for k in &q.kinds {
            kinds.push(k.parse::<AuditKind>().map_err(|e| bad(e.to_string()))?);
        }
        if q.since_ms < 0 {
            return Err(bad("since_ms must not be negative"));
        }
        let (host, resource) = match q.resource.split_once('/') {
            Some((h, r)) => (Some(h.to_owned()), Some(r.to_owned())),
            None if q.resource.is_empty() => (None, None),
            None => (Some(q.resource.clone()), None),
        };
        let limit = if q.limit == 0 { 1000 } else { q.limit.min(100_000) as usize };
        let base = AuditQuery {
            action_id: (!q.action_id.is_empty()).then(|| q.action_id.clone()),
            host,
            resource,
            since_ms: (q.since_ms > 0).then_some(q.since_ms),
            limit,
            newest: true,
            ..Default::default()
        };
        let audit = self.audit.clone();
        tokio::task::spawn_blocking(move || {
            if kinds.is_empty() {
                return audit.query(&base);
            }
            let mut all = Vec::new();
            for k in kinds {
                all.extend(audit.query(&AuditQuery { kind: Some(k), ..base.clone() })?);
            }
            all.sort_by_key(|r| r.seq);
            let skip = all.len().saturating_sub(limit);
            Ok(all.split_off(skip))
        })
        .await
        .map_err(|e| OrchestrateError::Internal(e.to_string()))?
        .map_err(|e| match e {
            crate::remediate::audit::AuditError::BadQuery(m) => bad(m),
            other => OrchestrateError::Unavailable(format!("audit trail: {other}")),
        })
    }

    /// Checks the audit trail's hash chain.
    pub async fn verify(&self) -> Result<AuditVerdict> {
        let audit = self.audit.clone();
        let r = tokio::task::spawn_blocking(move || audit.verify())
            .await
            .map_err(|e| OrchestrateError::Internal(e.to_string()))?;
        Ok(match r {
            Ok(rep) => AuditVerdict {
                ok: rep.ok(),
                records: rep.records,
                first_bad_seq: rep.broken.as_ref().map_or(0, |b| b.seq),
                message: rep.broken.map_or_else(String::new, |b| b.reason),
            },
            Err(crate::remediate::audit::AuditError::Corrupt { seq, reason }) => {
                AuditVerdict { ok: false, records: seq.saturating_sub(1), first_bad_seq: seq, message: reason }
            }
            Err(e) => return Err(OrchestrateError::Unavailable(format!("audit trail: {e}"))),
        })
    }

    /// The newest predictions of a resource (`GET /predict_failure`).
    pub fn predict_failure(&self, resource: &str) -> Result<Vec<Arc<crate::predict::Event>>> {
        if resource.is_empty() {
            return Err(bad("resource is required (e.g. `host/cgroup/web`)"));
        }
        let found = self.predictions.latest(resource);
        if found.is_empty() && self.features.resource(resource, now_ms()).is_none() {
            return Err(OrchestrateError::NotFound(format!(
                "no live resource {resource:?}: names are `<host>`, `<host>/<resource>` or `<host>/fs:<mount>`"
            )));
        }
        Ok(found)
    }
}

fn remediate_error(e: RemediateError) -> OrchestrateError {
    match e {
        RemediateError::NoSuchPending(_) => OrchestrateError::NotFound(e.to_string()),
        RemediateError::Refused { .. } => OrchestrateError::Refused(e.to_string()),
    }
}

/// One workflow step as the API shows it; `args` are the command's wire arguments.
fn step_report(s: &StepRecord, args: BTreeMap<String, String>) -> StepReport {
    let status = match &s.outcome {
        Some(o) => o.status.as_str().to_owned(),
        None => serde_json::to_value(s.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
    };
    let mut message = match (&s.outcome, &s.error) {
        (Some(o), _) if !o.message.is_empty() => o.message.clone(),
        (_, Some(e)) => e.clone(),
        _ => String::new(),
    };
    if let Some(u) = &s.undo {
        let how = if u.ok { "undone" } else { "undo FAILED" };
        message = format!("{message} [{how} by {} {}]", u.kind, u.command_id).trim().to_owned();
    }
    StepReport {
        step: s.name.clone(),
        host: s.host.clone(),
        resource: s.resource.clone(),
        command_id: s.command_id.clone().unwrap_or_default(),
        kind: s.kind.clone().unwrap_or_default(),
        args,
        status,
        message,
        details: s.outcome.as_ref().map(|o| o.details.clone()).unwrap_or_default(),
        started_ms: s.started_ms,
        finished_ms: s.finished_ms,
    }
}

/// The API's report of an executor result (the workflow's report when it is one).
fn report_of(action_id: String, plan: ActionPlan, dry_run: bool, r: ExecResult) -> ActionReport {
    let wf = serde_json::from_value::<WorkflowReport>(r.detail.clone()).ok();
    let status = match wf.as_ref().map(|w| w.status) {
        Some(WorkflowStatus::Succeeded) => ActionStatus::Succeeded,
        Some(WorkflowStatus::DryRun) => ActionStatus::DryRun,
        Some(WorkflowStatus::RolledBack) => ActionStatus::RolledBack,
        Some(WorkflowStatus::FollowUpFailed) => ActionStatus::FollowUpFailed,
        Some(WorkflowStatus::Failed | WorkflowStatus::RollbackFailed) => ActionStatus::Failed,
        None if r.ok && dry_run => ActionStatus::DryRun,
        None if r.ok => ActionStatus::Succeeded,
        None => ActionStatus::Failed,
    };
    // The compiled plan gives each step's command arguments (the report has their outcomes).
    let compiled = workflow::steps(&plan, &RunOptions::new(action_id.clone()));
    let args_of = |i: usize| match compiled.get(i).map(|s| &s.action) {
        Some(StepAction::Command { spec, .. }) => spec.to_args(),
        _ => BTreeMap::new(),
    };
    let steps =
        wf.as_ref().map(|w| w.steps.iter().map(|s| step_report(s, args_of(s.index))).collect()).unwrap_or_default();
    ActionReport { action_id, status, plan: Some(plan), steps, message: r.summary, detail: r.detail }
}

// ---------------------------------------------------------------------------------------
// The tonic adapter.

use v1::orchestrator_server::{Orchestrator, OrchestratorServer};

/// `augur.v1.Orchestrator` over an [`Orchestration`].
pub struct OrchestratorService {
    inner: Arc<Orchestration>,
}

/// The tonic service for `o`.
pub fn service(o: Arc<Orchestration>) -> OrchestratorServer<OrchestratorService> {
    OrchestratorServer::new(OrchestratorService { inner: o })
}

fn status(e: OrchestrateError) -> Status {
    crate::server::status_of(&e)
}

fn to_json(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn wire_report(r: ActionReport) -> v1::ActionResult {
    v1::ActionResult {
        action_id: r.action_id,
        status: r.status.to_wire() as i32,
        plan_json: r.plan.as_ref().map(to_json).unwrap_or_default(),
        steps: r
            .steps
            .into_iter()
            .map(|s| v1::StepResult {
                step: s.step,
                host: s.host,
                resource: s.resource,
                command_id: s.command_id,
                kind: s.kind,
                args: s.args.into_iter().collect(),
                status: s.status,
                message: s.message,
                details: s.details.into_iter().collect(),
                started_ms: s.started_ms,
                finished_ms: s.finished_ms,
            })
            .collect(),
        message: r.message,
        detail_json: if r.detail.is_null() { String::new() } else { r.detail.to_string() },
    }
}

fn wire_pending(p: &PendingAction) -> v1::PendingAction {
    v1::PendingAction {
        action_id: p.action_id.clone(),
        created_ms: p.created_ms,
        deadline_ms: p.expires_ms,
        policy: p.policy.clone(),
        host: p.host.clone(),
        resource: p.workload.clone(),
        failure_type: p.failure_type.clone(),
        probability: p.probability,
        plan_json: to_json(&p.plan),
        reason: format!("{} chosen for {} (p = {:.3})", p.action.as_str(), p.failure_type, p.probability),
    }
}

fn wire_record(r: AuditRecord) -> v1::AuditRecord {
    v1::AuditRecord {
        seq: r.seq,
        time_ms: r.time_ms,
        action_id: r.action_id,
        kind: r.kind.as_str().to_owned(),
        host: r.host,
        resource: r.resource,
        detail_json: r.detail.to_string(),
        hash: r.hash,
        prev_hash: r.prev_hash,
    }
}

#[tonic::async_trait]
impl Orchestrator for OrchestratorService {
    async fn orchestrate_migration(
        &self,
        req: Request<v1::OrchestrateMigrationRequest>,
    ) -> std::result::Result<Response<v1::ActionResult>, Status> {
        let r = req.into_inner();
        let q = MigrateRequest {
            workload: r.workload,
            source_host: r.source_host,
            target_host: r.target_host,
            dry_run: r.dry_run,
            reason: r.reason,
        };
        Ok(Response::new(wire_report(self.inner.migrate(q).await.map_err(status)?)))
    }

    async fn remediate(
        &self,
        req: Request<v1::RemediateRequest>,
    ) -> std::result::Result<Response<v1::ActionResult>, Status> {
        let r = req.into_inner();
        let plan = if r.plan_json.is_empty() {
            None
        } else {
            Some(
                serde_json::from_str::<ActionPlan>(&r.plan_json)
                    .map_err(|e| Status::invalid_argument(format!("plan_json is not an ActionPlan: {e}")))?,
            )
        };
        let q = RemediateRequest {
            host: r.host,
            workload: r.workload,
            action: r.action,
            failure_type: r.failure_type,
            args: r.args.into_iter().collect(),
            plan,
            dry_run: r.dry_run,
            reason: r.reason,
        };
        Ok(Response::new(wire_report(self.inner.remediate(q).await.map_err(status)?)))
    }

    async fn predictive_scale(
        &self,
        req: Request<v1::PredictiveScaleRequest>,
    ) -> std::result::Result<Response<v1::ActionResult>, Status> {
        let r = req.into_inner();
        let q = ScaleRequest { set: r.set, delta: r.delta, dry_run: r.dry_run, reason: r.reason };
        Ok(Response::new(wire_report(self.inner.scale(q).await.map_err(status)?)))
    }

    async fn scaling_recommendations(
        &self,
        req: Request<v1::ScalingRecommendationsRequest>,
    ) -> std::result::Result<Response<v1::ScalingRecommendationsResponse>, Status> {
        let recs = self.inner.recommendations(&req.into_inner().set).await.map_err(status)?;
        Ok(Response::new(v1::ScalingRecommendationsResponse {
            recommendations: recs
                .into_iter()
                .map(|r| v1::ScalingRecommendation {
                    set: r.set,
                    current: r.current,
                    recommended: r.recommended,
                    delta: r.delta,
                    metric: r.metric,
                    horizon_s: r.horizon_s,
                    quantile: r.quantile,
                    predicted_demand: r.predicted_demand,
                    capacity_per_instance: r.capacity_per_instance,
                    reason: r.reason,
                })
                .collect(),
        }))
    }

    async fn list_remediation_events(
        &self,
        req: Request<v1::ListRemediationEventsRequest>,
    ) -> std::result::Result<Response<v1::ListRemediationEventsResponse>, Status> {
        let r = req.into_inner();
        let q = EventsQuery {
            resource: r.resource,
            action_id: r.action_id,
            kinds: r.kinds,
            since_ms: r.since_ms,
            limit: r.limit,
        };
        let records = self.inner.events(q).await.map_err(status)?;
        Ok(Response::new(v1::ListRemediationEventsResponse { records: records.into_iter().map(wire_record).collect() }))
    }

    async fn list_pending(
        &self,
        _req: Request<v1::ListPendingRequest>,
    ) -> std::result::Result<Response<v1::ListPendingResponse>, Status> {
        let p = self.inner.pending().map_err(status)?;
        Ok(Response::new(v1::ListPendingResponse { pending: p.iter().map(wire_pending).collect() }))
    }

    async fn approve(
        &self,
        req: Request<v1::ApproveRequest>,
    ) -> std::result::Result<Response<v1::ActionResult>, Status> {
        let r = req.into_inner();
        Ok(Response::new(wire_report(self.inner.approve(&r.action_id, &r.operator, &r.comment).map_err(status)?)))
    }

    async fn reject(
        &self,
        req: Request<v1::RejectRequest>,
    ) -> std::result::Result<Response<v1::RejectResponse>, Status> {
        let r = req.into_inner();
        let p = self.inner.reject(&r.action_id, &r.operator, &r.reason).map_err(status)?;
        Ok(Response::new(v1::RejectResponse { action_id: p.action_id }))
    }

    async fn verify_audit(
        &self,
        _req: Request<v1::VerifyAuditRequest>,
    ) -> std::result::Result<Response<v1::VerifyAuditResponse>, Status> {
        let v = self.inner.verify().await.map_err(status)?;
        Ok(Response::new(v1::VerifyAuditResponse {
            ok: v.ok,
            records: v.records,
            first_bad_seq: v.first_bad_seq,
            message: v.message,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow(status: WorkflowStatus) -> serde_json::Value {
        json!({"action_id": "x", "plan": "restart", "dry_run": false, "status": status, "error": null,
               "elapsed_ms": 5, "steps": [{"index": 0, "name": "restart w", "host": "a", "resource": "w",
               "command_id": "x-0", "kind": "restart", "status": "failed", "error": null, "undo": null,
               "outcome": {"status": "rolled_back", "message": "health check failed", "details": {}, "time_ms": 7}}]})
    }

    #[test]
    fn workflow_reports_map_to_statuses_and_steps() {
        let plan = ActionPlan::Restart { host: "a".into(), workload: "w".into() };
        let r = |ok, detail| ExecResult { ok, summary: "s".into(), detail };
        let cases = [
            (WorkflowStatus::Succeeded, ActionStatus::Succeeded),
            (WorkflowStatus::DryRun, ActionStatus::DryRun),
            (WorkflowStatus::RolledBack, ActionStatus::RolledBack),
            (WorkflowStatus::RollbackFailed, ActionStatus::Failed),
            (WorkflowStatus::Failed, ActionStatus::Failed),
            (WorkflowStatus::FollowUpFailed, ActionStatus::FollowUpFailed),
        ];
        for (wf, want) in cases {
            let rep = report_of("x".into(), plan.clone(), false, r(wf.ok(), workflow(wf)));
            assert_eq!(rep.status, want, "{wf:?}");
            assert_eq!(rep.steps.len(), 1);
            assert_eq!(
                (rep.steps[0].step.as_str(), rep.steps[0].status.as_str(), rep.steps[0].message.as_str()),
                ("restart w", "rolled_back", "health check failed")
            );
        }
        // A result that is not a workflow report: by its ok flag.
        assert_eq!(report_of("x".into(), plan.clone(), true, r(true, json!(null))).status, ActionStatus::DryRun);
        assert_eq!(report_of("x".into(), plan, false, r(false, json!(null))).status, ActionStatus::Failed);
    }
}
