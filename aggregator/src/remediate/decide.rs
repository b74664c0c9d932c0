//! The decision engine: from prediction events to action plans under policy and safety.
//!
//! [`Remediator::run`] is one task fed by the prediction engine's events (and a sweep of
//! the declared workloads' latest predictions once per tick, so a policy threshold below
//! the engine's own raise threshold is honoured). For each prediction of a declared
//! workload at or above its policy's (adaptive) threshold it:
//!
//! 1. opens a warning for outcome tracking ([`super::outcome`]);
//! 2. updates the fleet's health and halts automation when too much of it is predicted
//!    failing ([`super::safety`], a `halt` audit record; `resume` when it drops);
//! 3. lists candidate actions (the policy's, else the knowledge base's for the failure
//!    type) the workload allows, builds a plan for each (sizing a resize from the
//!    prediction, resizing in place only when the host has headroom, else placing on a
//!    host of a suitable tier), and lets the bandit choose among the feasible ones;
//! 4. records the prediction and the decision (policy, alternatives with scores, why) in
//!    the audit trail under one action id, and then, by the policy's mode: `dry_run`
//!    records the commands the plan would send (agents answer DRY_RUN; nothing changes),
//!    `approve` parks the plan until an operator approves or rejects it, `auto` executes
//!    it once the safety gate admits it.
//!
//! Once per tick it also watches failure signals (misses, confirmations), expires
//! warnings (false positives), verifies actions at their horizon (the bandit learns) and
//! persists what it learned in the store's model-state area.
//!
//! The engine reaches the fleet and the agents through two small seams: [`Fleet`]
//! (declared workloads and host labels; the registry implements it) and [`Executor`]
//! (runs a plan through the workflow engine; health checks). Tests substitute both.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{debug, info, warn};

use augur_core::command::Resize;

use super::audit::{AuditEntry, AuditKind, AuditLog};
use super::bandit::{ArmScore, Bandit, Rng};
use super::outcome::{PendingVerify, Quality, ThresholdRef, Tracker, Verdict, failure_signal};
use super::placement::{self, HostCapacity};
use super::policy::{ActionKind, Mode, PolicyConfig, RemediationConfig, ResourceSetConfig, Subject};
use super::safety::{HaltChange, Refusal, SafetyGate};
use super::thresholds::{Bounds, Lesson, ThresholdKey, Thresholds};
use super::workflow::{ActionPlan, Instance, LoadBalancer, Member, Remedy};
use crate::features::{FeatureEngine, ResourceKind, feature_names};
use crate::predict::{Event, EventState, PredictionEngine};
use crate::storage::Store;

/// Model-state keys of what the decision engine learns.
pub const BANDIT_KEY: &str = "remediate/bandit";
pub const THRESHOLDS_KEY: &str = "remediate/thresholds";

/// A workload an agent declared (Hello.workloads).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadInfo {
    pub host: String,
    /// Name commands use.
    pub name: String,
    /// The resource its samples are reported under (e.g. `cgroup/app`).
    pub resource: String,
    /// Command kinds the agent accepts for it.
    pub allowed_actions: Vec<String>,
    pub stateless: bool,
}

/// A host as the decision engine sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostInfo {
    pub host: String,
    pub connected: bool,
    pub labels: BTreeMap<String, String>,
}

/// Where declared workloads and hosts come from (the registry).
pub trait Fleet: Send + Sync {
    fn hosts(&self) -> Vec<HostInfo>;
    /// Declared workloads of every known host.
    fn workloads(&self) -> Vec<WorkloadInfo>;
}

/// What executing (or dry-running) a plan came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    pub ok: bool,
    pub summary: String,
    /// Commands, their reports, steps (whatever the executor can tell).
    pub detail: serde_json::Value,
}

/// Runs plans (the workflow engine over the dispatcher in production).
pub trait Executor: Send + Sync {
    /// Executes `plan`; with `dry_run`, every command goes out as a dry run (nothing
    /// changes) and the result says exactly what would have been done.
    fn execute(
        &self,
        action_id: String,
        plan: ActionPlan,
        deadline_ms: i64,
        dry_run: bool,
    ) -> BoxFuture<'static, ExecResult>;
    /// The workload's health check now; `None` when it cannot be run.
    fn health(&self, host: String, workload: String, deadline_ms: i64) -> BoxFuture<'static, Option<bool>>;
}

/// The production [`Fleet`]: hosts and the workloads they declared in Hello.
impl Fleet for crate::registry::Registry {
    fn hosts(&self) -> Vec<HostInfo> {
        self.list()
            .into_iter()
            .map(|v| HostInfo { host: v.record.host_id, connected: v.connected, labels: v.record.labels })
            .collect()
    }

    fn workloads(&self) -> Vec<WorkloadInfo> {
        self.list()
            .into_iter()
            .flat_map(|v| {
                let host = v.record.host_id;
                v.workloads.into_iter().map(move |w| WorkloadInfo {
                    host: host.clone(),
                    name: w.name,
                    resource: w.resource,
                    allowed_actions: w.allowed_actions,
                    stateless: w.kind == "stateless",
                })
            })
            .collect()
    }
}

/// The production [`Executor`]: plans run through [`super::workflow::run`] over the
/// dispatcher (each step audited); health checks are `health` commands.
pub struct WorkflowExecutor {
    pub dispatcher: super::dispatch::Dispatcher,
    pub audit: Arc<AuditLog>,
    /// Longest wait for one command's report.
    pub step_timeout: Duration,
}

impl Executor for WorkflowExecutor {
    fn execute(
        &self,
        action_id: String,
        plan: ActionPlan,
        deadline_ms: i64,
        dry_run: bool,
    ) -> BoxFuture<'static, ExecResult> {
        let (dispatcher, audit) = (self.dispatcher.clone(), self.audit.clone());
        let left = Duration::from_millis((deadline_ms - augur_core::time::now_ms()).max(1000) as u64);
        let mut opts = super::workflow::RunOptions::new(action_id);
        opts.dry_run = dry_run;
        opts.deadline = left;
        opts.step_timeout = self.step_timeout.min(left);
        Box::pin(async move {
            match super::workflow::run(&plan, &dispatcher, &audit, &opts).await {
                Ok(report) => ExecResult {
                    ok: report.status.ok(),
                    summary: match &report.error {
                        Some(e) => format!("{}: {e}", report.status.as_str()),
                        None => report.status.as_str().to_owned(),
                    },
                    detail: serde_json::to_value(&report).unwrap_or_default(),
                },
                Err(e) => ExecResult { ok: false, summary: format!("not started: {e}"), detail: json!({}) },
            }
        })
    }

    fn health(&self, host: String, workload: String, deadline_ms: i64) -> BoxFuture<'static, Option<bool>> {
        let dispatcher = self.dispatcher.clone();
        Box::pin(async move {
            use super::dispatch::CommandStatus;
            let id = format!("health-{:x}-{}", augur_core::time::now_ms(), rand_suffix());
            let env = augur_core::command::Envelope {
                id: id.clone(),
                idempotency_key: id,
                target_host: host,
                resource: workload,
                deadline_ms,
                dry_run: false,
                spec: augur_core::command::CommandSpec::Health,
            };
            match dispatcher.execute(env).await {
                Ok(o) => match o.status {
                    CommandStatus::Succeeded => Some(true),
                    CommandStatus::Failed | CommandStatus::RolledBack => Some(false),
                    // No health check declared, or not allowed: unknown, not unhealthy.
                    _ => None,
                },
                Err(_) => None,
            }
        })
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A decision waiting for an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingAction {
    pub action_id: String,
    pub created_ms: i64,
    /// Past this, the plan is moot (the predicted failure's horizon) and it is dropped.
    pub expires_ms: i64,
    pub policy: String,
    pub host: String,
    pub workload: String,
    pub resource: String,
    pub failure_type: String,
    pub probability: f64,
    pub action: ActionKind,
    pub plan: ActionPlan,
    pub set: Option<String>,
    pub horizon_s: i64,
}

/// Why an approval or rejection is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemediateError {
    #[error("no pending action {0:?}")]
    NoSuchPending(String),
    #[error("action {id} refused by safety limits: {refusal}")]
    Refused { id: String, refusal: Refusal },
}

/// One candidate action as considered (recorded in the decision).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    pub action: ActionKind,
    pub feasible: bool,
    pub why: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<ArmScore>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<ActionPlan>,
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RemediationStats {
    pub decisions: u64,
    pub started: u64,
    pub refused: u64,
    pub dry_runs: u64,
    /// Decisions parked for approval (all so far; [`Remediator::pending`] lists the open ones).
    pub pending: u64,
    pub halts: u64,
    pub verified: u64,
    pub persist_errors: u64,
    pub audit_errors: u64,
    pub halted: bool,
    pub in_flight: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum Decided {
    /// Acted on (started, parked, or dry-run recorded) at this time.
    Done(i64),
    /// Refused by the safety gate for this reason (retried silently each tick).
    Refused(&'static str),
}

struct State {
    gate: SafetyGate,
    bandit: Bandit,
    thresholds: Thresholds,
    tracker: Tracker,
    pending: BTreeMap<String, PendingAction>,
    decided: HashMap<(String, String), Decided>,
    rng: Rng,
    seq: u64,
    stats: RemediationStats,
    halt_checked_ms: Option<i64>,
}

/// Hosts and declared workloads at one moment.
struct Snapshot {
    hosts: HashMap<String, HostInfo>,
    /// By feature resource name (`host/resource`).
    workloads: HashMap<String, WorkloadInfo>,
}

impl Snapshot {
    fn connected(&self, host: &str) -> bool {
        self.hosts.get(host).is_some_and(|h| h.connected)
    }
}

/// A target is known when it is a declared workload of a connected host.
fn known_check(snap: &Snapshot) -> impl Fn(&str, &str) -> bool + use<> {
    let declared: std::collections::HashSet<(String, String)> =
        snap.workloads.values().filter(|w| snap.connected(&w.host)).map(|w| (w.host.clone(), w.name.clone())).collect();
    move |h: &str, w: &str| declared.contains(&(h.to_owned(), w.to_owned()))
}

/// The decision engine.
pub struct Remediator {
    cfg: RemediationConfig,
    features: Arc<FeatureEngine>,
    predictions: Arc<PredictionEngine>,
    fleet: Arc<dyn Fleet>,
    exec: Arc<dyn Executor>,
    audit: Arc<AuditLog>,
    store: Arc<dyn Store>,
    state: Mutex<State>,
}

/// What [`Remediator::consider`] concluded for one prediction (tests and logs).
#[derive(Debug, Clone, PartialEq)]
pub enum Considered {
    /// Below threshold, not a workload, no policy, policy off, or already handled.
    Nothing(&'static str),
    DryRun(String),
    Pending(String),
    Started(String),
    Refused(String, &'static str),
    NoFeasibleAction(String),
}

fn feature(names: &[String], row: &[f32], name: &str) -> f64 {
    names.iter().position(|n| n == name).and_then(|i| row.get(i)).map_or(f64::NAN, |v| f64::from(*v))
}

fn finite_or(v: f64, d: f64) -> f64 {
    if v.is_finite() { v } else { d }
}

impl Remediator {
    /// A decision engine; restores learned posteriors and thresholds from the store.
    pub fn new(
        cfg: RemediationConfig,
        features: Arc<FeatureEngine>,
        predictions: Arc<PredictionEngine>,
        fleet: Arc<dyn Fleet>,
        exec: Arc<dyn Executor>,
        audit: Arc<AuditLog>,
        store: Arc<dyn Store>,
    ) -> Arc<Self> {
        let seed = if cfg.seed != 0 { cfg.seed } else { augur_core::time::now_ms() as u64 ^ 0x5eed };
        let bandit = match store.model_state_get(BANDIT_KEY) {
            Ok(Some(b)) => Bandit::from_bytes(&b, seed).unwrap_or_else(|e| {
                warn!(error = %e, "stored bandit state unreadable; starting from the priors");
                Bandit::new(seed)
            }),
            Ok(None) => Bandit::new(seed),
            Err(e) => {
                warn!(error = %e, "reading the bandit state failed; starting from the priors");
                Bandit::new(seed)
            }
        };
        let step = cfg.outcome.threshold_step;
        let thresholds = match store.model_state_get(THRESHOLDS_KEY) {
            Ok(Some(b)) => Thresholds::from_bytes(&b, step).unwrap_or_else(|e| {
                warn!(error = %e, "stored thresholds unreadable; starting from the policies");
                Thresholds::new(step)
            }),
            _ => Thresholds::new(step),
        };
        let state = State {
            gate: SafetyGate::new(cfg.safety.clone()),
            bandit,
            thresholds,
            tracker: Tracker::new(),
            pending: BTreeMap::new(),
            decided: HashMap::new(),
            rng: Rng::seeded(seed.rotate_left(17)),
            seq: 0,
            stats: RemediationStats::default(),
            halt_checked_ms: None,
        };
        Arc::new(Remediator { cfg, features, predictions, fleet, exec, audit, store, state: Mutex::new(state) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves until `stop` turns true: events as they come, a sweep once per `tick`.
    pub async fn run(self: Arc<Self>, tick: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut sub = self.predictions.subscribe(false);
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(policies = self.cfg.policies.len(), "remediation decision loop started");
        loop {
            tokio::select! {
                ev = sub.next() => match ev {
                    Some((ev, dropped)) => {
                        if dropped > 0 {
                            warn!(dropped, "decision loop fell behind the prediction events; the sweep catches up");
                        }
                        let now = augur_core::time::now_ms();
                        let got = self.clone().consider(&ev, now);
                        log_considered(&ev, &got);
                    }
                    None => break,
                },
                _ = ticker.tick() => self.clone().tick(augur_core::time::now_ms()),
                r = stop.changed() => if r.is_err() || *stop.borrow() { break },
            }
        }
        info!("remediation decision loop stopped");
    }

    fn append(
        &self,
        st: &mut State,
        action_id: &str,
        kind: AuditKind,
        host: &str,
        resource: &str,
        detail: serde_json::Value,
    ) {
        let e = AuditEntry { action_id: action_id.into(), kind, host: host.into(), resource: resource.into(), detail };
        if let Err(e) = self.audit.append(e) {
            st.stats.audit_errors += 1;
            warn!(error = %e, action_id, "audit append failed");
        }
    }

    fn new_id(st: &mut State, now_ms: i64) -> String {
        st.seq += 1;
        format!("act-{now_ms:x}-{:04x}-{}", st.rng.next_u64() & 0xffff, st.seq)
    }

    /// The fleet as it is now (one pass over the registry).
    fn snapshot(&self) -> Snapshot {
        let hosts: HashMap<String, HostInfo> = self.fleet.hosts().into_iter().map(|h| (h.host.clone(), h)).collect();
        let workloads = self.fleet.workloads().into_iter().map(|w| (format!("{}/{}", w.host, w.resource), w)).collect();
        Snapshot { hosts, workloads }
    }

    /// Owner and set of a workload: the set's owner, else the host's `owner` label.
    fn owner_and_set(
        &self,
        snap: &Snapshot,
        host: &str,
        workload: Option<&str>,
    ) -> (String, Option<&ResourceSetConfig>) {
        let set = workload.and_then(|w| self.cfg.set_of(host, w));
        let owner = match set {
            Some(s) if !s.owner.is_empty() => s.owner.clone(),
            _ => snap.hosts.get(host).and_then(|h| h.labels.get("owner").cloned()).unwrap_or_default(),
        };
        (owner, set)
    }

    fn threshold_ref(&self, p: &PolicyConfig, kind: ResourceKind, failure_type: &str, owner: &str) -> ThresholdRef {
        ThresholdRef {
            key: ThresholdKey::new(kind.as_str(), failure_type, owner),
            bounds: Bounds { start: p.threshold, min: p.threshold_min(), max: p.threshold_max() },
        }
    }

    /// One prediction: warn, decide, act by mode. Public for tests and the API's
    /// "remediate now" path.
    pub fn consider(self: Arc<Self>, ev: &Event, now_ms: i64) -> Considered {
        let snap = self.snapshot();
        self.consider_in(&snap, ev, now_ms)
    }

    fn consider_in(self: Arc<Self>, snap: &Snapshot, ev: &Event, now_ms: i64) -> Considered {
        if matches!(ev.state, EventState::Cleared) || ev.probability.is_nan() {
            return Considered::Nothing("cleared");
        }
        let workload = snap.workloads.get(&ev.resource).cloned();
        let (owner, set) = self.owner_and_set(snap, &ev.host_id, workload.as_ref().map(|w| w.name.as_str()));
        let subject = Subject {
            resource_kind: ev.resource_kind,
            failure_type: &ev.failure_type,
            owner: &owner,
            set: set.map(|s| s.name.as_str()),
        };
        let Some(policy) = self.cfg.policy_for(&subject) else {
            return Considered::Nothing("no policy");
        };
        let tref = self.threshold_ref(policy, ev.resource_kind, &ev.failure_type, &owner);
        let mut st = self.lock();
        let threshold = st.thresholds.current(&tref.key, tref.bounds);
        if ev.probability < threshold {
            return Considered::Nothing("below threshold");
        }
        st.tracker.warn(&ev.resource, &ev.failure_type, now_ms, ev.horizon_s * 1000, tref.clone());
        let Some(w) = workload else {
            return Considered::Nothing("not a declared workload");
        };
        if policy.mode == Mode::Off {
            return Considered::Nothing("policy off");
        }
        let key = (ev.resource.clone(), ev.failure_type.clone());
        let prior = st.decided.get(&key).cloned();
        if matches!(prior, Some(Decided::Done(_))) {
            return Considered::Nothing("already decided for this warning");
        }
        // The fleet's health first: a decision never starts while too much is failing.
        self.refresh_halt(&mut st, snap, now_ms, false);

        let (alternatives, chosen) = self.alternatives(&mut st, snap, ev, &w, policy, set, now_ms);
        let action_id = Self::new_id(&mut st, now_ms);
        let known = known_check(snap);
        let Some(idx) = chosen else {
            if prior.is_none() {
                st.stats.decisions += 1;
                self.audit_prediction(&mut st, &action_id, ev, threshold);
                self.append(
                    &mut st,
                    &action_id,
                    AuditKind::Decision,
                    &w.host,
                    &w.name,
                    json!({
                        "policy": policy.name, "mode": policy.mode.as_str(), "failure_type": ev.failure_type,
                        "chosen": null, "alternatives": alternatives,
                        "why": "no candidate action is both allowed and feasible",
                    }),
                );
                st.decided.insert(key, Decided::Refused("no_feasible_action"));
            }
            return Considered::NoFeasibleAction(action_id);
        };
        let alt = &alternatives[idx];
        let plan = alt.plan.clone().expect("feasible alternatives carry a plan");
        let targets = plan.targets();
        let set_name = set.map(|s| s.name.clone());
        let deadline_ms = now_ms + self.cfg.safety.action_deadline.as_millis() as i64;
        let why = format!(
            "P({}) = {:.3} within {} s >= threshold {:.3} (policy {}); {} chosen by Thompson sampling (draw {:.3}) among {} feasible of {} candidates: {}",
            ev.failure_type,
            ev.probability,
            ev.horizon_s,
            threshold,
            policy.name,
            alt.action.as_str(),
            alt.score.as_ref().map_or(f64::NAN, |s| s.sample),
            alternatives.iter().filter(|a| a.feasible).count(),
            alternatives.len(),
            alt.why
        );
        let mut decision = json!({
            "policy": policy.name, "mode": policy.mode.as_str(), "failure_type": ev.failure_type,
            "probability": ev.probability, "threshold": threshold, "horizon_s": ev.horizon_s,
            "chosen": alt.action, "plan": plan, "alternatives": alternatives, "why": why,
            "set": set_name, "deadline_ms": deadline_ms,
        });

        match policy.mode {
            Mode::Off => unreachable!("handled above"),
            Mode::DryRun => {
                let admit = st.gate.admit(&targets, set_name.as_deref(), &known, now_ms);
                decision["dry_run"] = json!(true);
                decision["safety"] = json!(admit.as_ref().map_or_else(|r| r.to_string(), |_| "admitted".into()));
                st.stats.decisions += 1;
                st.stats.dry_runs += 1;
                self.audit_prediction(&mut st, &action_id, ev, threshold);
                self.append(&mut st, &action_id, AuditKind::Decision, &w.host, &w.name, decision);
                st.decided.insert(key, Decided::Done(now_ms));
                drop(st);
                // Agents answer with exactly what they would do; nothing changes.
                let me = self.clone();
                let (id, host, name) = (action_id.clone(), w.host.clone(), w.name.clone());
                tokio_spawn(async move {
                    let r = me.exec.execute(id.clone(), plan, deadline_ms, true).await;
                    let mut st = me.lock();
                    me.append(
                        &mut st,
                        &id,
                        AuditKind::Outcome,
                        &host,
                        &name,
                        json!({
                            "phase": "dry_run", "ok": r.ok, "summary": r.summary, "detail": r.detail,
                        }),
                    );
                });
                Considered::DryRun(action_id)
            }
            Mode::Approve => {
                st.stats.decisions += 1;
                st.stats.pending += 1;
                decision["pending"] = json!(true);
                self.audit_prediction(&mut st, &action_id, ev, threshold);
                self.append(&mut st, &action_id, AuditKind::Decision, &w.host, &w.name, decision);
                let p = PendingAction {
                    action_id: action_id.clone(),
                    created_ms: now_ms,
                    expires_ms: now_ms + (ev.horizon_s * 1000).max(60_000),
                    policy: policy.name.clone(),
                    host: w.host.clone(),
                    workload: w.name.clone(),
                    resource: ev.resource.clone(),
                    failure_type: ev.failure_type.clone(),
                    probability: ev.probability,
                    action: alt.action,
                    plan,
                    set: set_name,
                    horizon_s: ev.horizon_s,
                };
                st.pending.insert(action_id.clone(), p);
                while st.pending.len() > self.cfg.max_pending {
                    let oldest = st.pending.values().min_by_key(|p| p.created_ms).map(|p| p.action_id.clone());
                    if let Some(o) = oldest.and_then(|o| st.pending.remove(&o)) {
                        self.append(
                            &mut st,
                            &o.action_id,
                            AuditKind::Approval,
                            &o.host,
                            &o.workload,
                            json!({
                                "approved": false, "by": "augur", "why": "too many pending actions (max_pending)",
                            }),
                        );
                    }
                }
                st.decided.insert(key, Decided::Done(now_ms));
                Considered::Pending(action_id)
            }
            Mode::Auto => match st.gate.begin(&action_id, &targets, set_name.as_deref(), &known, now_ms) {
                Err(refusal) => {
                    let code = refusal.code();
                    if prior != Some(Decided::Refused(code)) {
                        st.stats.decisions += 1;
                        st.stats.refused += 1;
                        decision["safety"] = json!(refusal.to_string());
                        decision["started"] = json!(false);
                        self.audit_prediction(&mut st, &action_id, ev, threshold);
                        self.append(&mut st, &action_id, AuditKind::Decision, &w.host, &w.name, decision);
                    }
                    st.decided.insert(key, Decided::Refused(code));
                    Considered::Refused(action_id, code)
                }
                Ok(()) => {
                    st.stats.decisions += 1;
                    st.stats.started += 1;
                    decision["safety"] = json!("admitted");
                    decision["started"] = json!(true);
                    self.audit_prediction(&mut st, &action_id, ev, threshold);
                    self.append(&mut st, &action_id, AuditKind::Decision, &w.host, &w.name, decision);
                    st.decided.insert(key, Decided::Done(now_ms));
                    st.tracker.acted(&ev.resource, &ev.failure_type);
                    drop(st);
                    let verify = VerifyPlan {
                        resource: ev.resource.clone(),
                        failure_type: ev.failure_type.clone(),
                        action: alt.action,
                        horizon_s: ev.horizon_s,
                    };
                    self.spawn_execution(Execution {
                        action_id: action_id.clone(),
                        host: w.host.clone(),
                        workload: w.name.clone(),
                        plan,
                        started_ms: now_ms,
                        deadline_ms,
                        verify,
                    });
                    Considered::Started(action_id)
                }
            },
        }
    }

    fn audit_prediction(&self, st: &mut State, action_id: &str, ev: &Event, threshold: f64) {
        // Events are explained when the engine raises or updates them; a prediction acted on
        // below the engine's raise threshold (a plain tick) is explained now.
        let fresh;
        let contributions = if ev.top_features.is_empty() {
            fresh = self.predictions.explain_now(&ev.resource, &ev.failure_type, ev.time_ms);
            &fresh
        } else {
            &ev.top_features
        };
        let top: Vec<serde_json::Value> = contributions
            .iter()
            .map(|c| json!({"name": c.name, "value": c.value, "contribution": c.contribution}))
            .collect();
        self.append(
            st,
            action_id,
            AuditKind::Prediction,
            &ev.host_id,
            &ev.resource,
            json!({
                "event_id": ev.id, "time_ms": ev.time_ms, "resource": ev.resource,
                "resource_kind": ev.resource_kind.as_str(), "failure_type": ev.failure_type,
                "probability": ev.probability, "threshold": threshold, "horizon_s": ev.horizon_s,
                "probability_by_horizon_s": ev.probability_by_horizon_s,
                "expected_time_to_failure_s": ev.expected_time_to_failure_s,
                "model_name": ev.model_name, "model_version": ev.model_version,
                "top_features": top, "summary": ev.summary,
                "explained_at_raise": !ev.top_features.is_empty(),
            }),
        );
    }

    fn spawn_execution(self: Arc<Self>, x: Execution) {
        let Execution { action_id, host, workload, plan, started_ms, deadline_ms, verify } = x;
        tokio_spawn(async move {
            info!(action_id, host, workload, plan = plan.kind(), "executing remediation");
            let t0 = std::time::Instant::now();
            let r = self.exec.execute(action_id.clone(), plan, deadline_ms, false).await;
            // The clock of the decision (tests drive it), advanced by the time execution took.
            let now = started_ms + t0.elapsed().as_millis() as i64;
            let mut st = self.lock();
            st.gate.end(&action_id, now);
            self.append(
                &mut st,
                &action_id,
                AuditKind::Outcome,
                &host,
                &workload,
                json!({
                    "phase": "executed", "ok": r.ok, "summary": r.summary, "detail": r.detail,
                }),
            );
            if r.ok {
                let wait_s = (verify.horizon_s.max(1) as u64).min(self.cfg.outcome.verify_after.as_secs().max(1));
                st.tracker.track_action(PendingVerify {
                    action_id: action_id.clone(),
                    resource: verify.resource,
                    host,
                    workload,
                    failure_type: verify.failure_type,
                    action: verify.action,
                    started_ms,
                    verify_at_ms: started_ms + wait_s as i64 * 1000,
                    failures_at_start: 0,
                });
            } else {
                // An action that could not be carried out did not work.
                st.bandit.update(&verify.failure_type, verify.action, false);
                self.persist_bandit(&mut st);
            }
        });
    }

    /// Candidate actions with their feasibility and plans; the bandit's choice.
    #[allow(clippy::too_many_arguments)]
    fn alternatives(
        &self,
        st: &mut State,
        snap: &Snapshot,
        ev: &Event,
        w: &WorkloadInfo,
        policy: &PolicyConfig,
        set: Option<&ResourceSetConfig>,
        now_ms: i64,
    ) -> (Vec<Alternative>, Option<usize>) {
        let mut alts: Vec<Alternative> = Vec::new();
        for action in self.cfg.candidates(policy) {
            let missing: Vec<&str> = action
                .required_commands()
                .iter()
                .copied()
                .filter(|c| !w.allowed_actions.iter().any(|a| a == c))
                .collect();
            let (plan, why) = if !missing.is_empty() {
                (None, format!("workload {} does not allow {}", w.name, missing.join(", ")))
            } else {
                match self.plan_for(snap, action, ev, w, policy, set, now_ms) {
                    Ok((plan, why)) => (Some(plan), why),
                    Err(why) => (None, why),
                }
            };
            let plan = plan.filter(|p| p.validate().is_ok());
            alts.push(Alternative { action, feasible: plan.is_some(), why, score: None, plan });
        }
        let feasible: Vec<usize> = (0..alts.len()).filter(|&i| alts[i].feasible).collect();
        let kinds: Vec<ActionKind> = feasible.iter().map(|&i| alts[i].action).collect();
        let chosen = st.bandit.choose(&ev.failure_type, &kinds).map(|(best, scores)| {
            for (&i, s) in feasible.iter().zip(scores) {
                alts[i].score = Some(s);
            }
            feasible[best]
        });
        (alts, chosen)
    }

    /// The plan for one action, or why it is not feasible.
    #[allow(clippy::too_many_arguments)]
    fn plan_for(
        &self,
        snap: &Snapshot,
        action: ActionKind,
        ev: &Event,
        w: &WorkloadInfo,
        policy: &PolicyConfig,
        set: Option<&ResourceSetConfig>,
        now_ms: i64,
    ) -> Result<(ActionPlan, String), String> {
        let (kind, row) = self
            .features
            .resource(&ev.resource, now_ms)
            .ok_or_else(|| format!("no current features for {}", ev.resource))?;
        let names = feature_names(kind, self.features.config());
        let f = |n: &str| feature(&names, &row, n);
        let host_cap = self.host_capacity(snap, &w.host, now_ms);
        match action {
            ActionKind::ResizeMemory => {
                let limit = f("mem_limit_last");
                if !(limit.is_finite() && limit > 0.0 && limit < 1e18) {
                    return Err("the workload has no memory limit to raise".into());
                }
                let slope = finite_or(f("mem_usage_30s_slope"), 0.0).max(finite_or(f("mem_usage_5m_slope"), 0.0));
                let growth = slope * ev.horizon_s as f64 * policy.safety_factor;
                let add = growth.max(policy.memory_step as f64);
                let new = ((limit + add).min(policy.memory_cap as f64)) as u64;
                let new = new / 4096 * 4096;
                if (new as f64) <= limit {
                    return Err(format!(
                        "the limit {} is at the policy cap {}",
                        augur_core::units::format_bytes(limit as u64),
                        augur_core::units::format_bytes(policy.memory_cap)
                    ));
                }
                let extra = new as f64 - limit;
                if !placement::fits_in_place(extra, &host_cap) {
                    return Err(format!(
                        "host {} lacks headroom for {} more (available {})",
                        w.host,
                        augur_core::units::format_bytes(extra as u64),
                        if host_cap.mem_available.is_finite() {
                            augur_core::units::format_bytes(host_cap.mem_available as u64)
                        } else {
                            "unknown".into()
                        }
                    ));
                }
                Ok((
                    ActionPlan::Resize {
                        host: w.host.clone(),
                        workload: w.name.clone(),
                        resize: Resize { memory_max: Some(new), ..Resize::default() },
                    },
                    format!(
                        "memory_max {} -> {} (growth {:.2} MiB/s x {} s x {} = {}, step {}, cap {}); host has headroom",
                        augur_core::units::format_bytes(limit as u64),
                        augur_core::units::format_bytes(new),
                        slope / 1_048_576.0,
                        ev.horizon_s,
                        policy.safety_factor,
                        augur_core::units::format_bytes(growth.max(0.0) as u64),
                        augur_core::units::format_bytes(policy.memory_step),
                        augur_core::units::format_bytes(policy.memory_cap),
                    ),
                ))
            }
            ActionKind::ResizeCpu => {
                let limit = f("cpu_limit_last");
                if !(limit.is_finite() && limit > 0.0) {
                    return Err("the workload has no CPU limit to raise".into());
                }
                let demand = finite_or(f("cpu_cores_30s_mean"), 0.0) * policy.safety_factor;
                let new = (limit + policy.cpu_step).max(demand).min(policy.cpu_cap);
                let new = (new * 100.0).round() / 100.0;
                if new <= limit {
                    return Err(format!("the CPU allowance {limit} is at the policy cap {}", policy.cpu_cap));
                }
                Ok((
                    ActionPlan::Resize {
                        host: w.host.clone(),
                        workload: w.name.clone(),
                        resize: Resize { cpu_max: Some(new), ..Resize::default() },
                    },
                    format!(
                        "cpu_max {limit} -> {new} cores (demand {demand:.2}, step {}, cap {})",
                        policy.cpu_step, policy.cpu_cap
                    ),
                ))
            }
            ActionKind::Restart => Ok((
                ActionPlan::Restart { host: w.host.clone(), workload: w.name.clone() },
                "restart releases what the workload holds".into(),
            )),
            ActionKind::PromoteStandby => {
                let (set, lb, primary_server) = behind_load_balancer(set, w)?;
                let standby = set
                    .members
                    .iter()
                    .find(|m| m.standby && !(m.host == w.host && m.workload == w.name))
                    .ok_or_else(|| format!("set {} has no warm standby", set.name))?;
                let remedy =
                    if w.allowed_actions.iter().any(|a| a == "restart") { Remedy::Restart } else { Remedy::None };
                Ok((
                    ActionPlan::Promote {
                        lb: LoadBalancer {
                            host: lb.host.clone(),
                            workload: lb.workload.clone(),
                            backend: lb.backend.clone(),
                        },
                        primary: Member { host: w.host.clone(), workload: w.name.clone(), server: primary_server },
                        standby: Member {
                            host: standby.host.clone(),
                            workload: standby.workload.clone(),
                            server: standby.server.clone().expect("validated: standbys have a server"),
                        },
                        standby_weight: None,
                        remedy,
                    },
                    format!("standby {}/{} takes the traffic", standby.host, standby.workload),
                ))
            }
            ActionKind::Migrate => {
                let (set, lb, source_server) = behind_load_balancer(set, w)?;
                if !set.stateless || !w.stateless {
                    return Err("only stateless workloads migrate".into());
                }
                // Predicted demand: the memory it will use over the horizon.
                let usage = f("mem_usage_last");
                let slope = finite_or(f("mem_usage_30s_slope"), 0.0).max(0.0);
                let demand = usage + slope * ev.horizon_s as f64 * policy.safety_factor;
                if !demand.is_finite() {
                    return Err("no memory usage to size the placement".into());
                }
                let spare: Vec<&super::policy::MemberConfig> =
                    set.members.iter().filter(|m| m.host != w.host && m.server.is_some() && !m.standby).collect();
                let hosts: Vec<HostCapacity> =
                    spare.iter().map(|m| self.host_capacity(snap, &m.host, now_ms)).collect();
                let sla = set.sla.as_deref().and_then(|s| self.cfg.sla(s));
                let p = placement::place(demand, &w.host, &self.cfg.tiers, sla, &hosts)
                    .ok_or_else(|| "no connected host of an eligible tier has room".to_string())?;
                let target = spare.iter().find(|m| m.host == p.host).expect("placed on a listed host");
                Ok((
                    ActionPlan::Migrate {
                        workload: w.name.clone(),
                        lb: LoadBalancer {
                            host: lb.host.clone(),
                            workload: lb.workload.clone(),
                            backend: lb.backend.clone(),
                        },
                        source: Instance {
                            host: w.host.clone(),
                            workload: w.name.clone(),
                            instance: None,
                            server: source_server,
                            address: None,
                        },
                        target: Instance {
                            host: target.host.clone(),
                            workload: target.workload.clone(),
                            instance: None,
                            server: target.server.clone().expect("filtered on server"),
                            address: None,
                        },
                    },
                    format!(
                        "to {} (tier {}, {:.2}/h; demand {} sized {})",
                        p.host,
                        p.tier,
                        p.cost_per_hour,
                        augur_core::units::format_bytes(demand as u64),
                        augur_core::units::format_bytes(p.sized as u64)
                    ),
                ))
            }
            ActionKind::ScaleOut => Err("scale-out is decided by PredictiveScale, not per prediction".into()),
        }
    }

    fn host_capacity(&self, snap: &Snapshot, host: &str, now_ms: i64) -> HostCapacity {
        let hi = snap.hosts.get(host);
        let (avail, total) = match self.features.resource(host, now_ms) {
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

    /// Declared workloads of connected hosts with their predictions at or above their
    /// threshold: (known, failing resources).
    fn fleet_health(&self, st: &State, snap: &Snapshot) -> (usize, Vec<String>) {
        let mut known = 0;
        let mut failing = Vec::new();
        for (resource, w) in snap.workloads.iter().filter(|(_, w)| snap.connected(&w.host)) {
            known += 1;
            let resource = resource.clone();
            let (owner, set) = self.owner_and_set(snap, &w.host, Some(&w.name));
            let bad = self.predictions.latest(&resource).iter().any(|ev| {
                let subject = Subject {
                    resource_kind: ev.resource_kind,
                    failure_type: &ev.failure_type,
                    owner: &owner,
                    set: set.map(|s| s.name.as_str()),
                };
                let threshold = match self.cfg.policy_for(&subject) {
                    Some(p) => {
                        let t = self.threshold_ref(p, ev.resource_kind, &ev.failure_type, &owner);
                        st.thresholds.current(&t.key, t.bounds)
                    }
                    None => 0.5,
                };
                ev.probability >= threshold
            });
            if bad {
                failing.push(resource);
            }
        }
        (known, failing)
    }

    /// Re-counts the failing share of the fleet (at most every 250 ms unless `force`d, so
    /// a burst of events costs one pass) and records a halt or resume.
    fn refresh_halt(&self, st: &mut State, snap: &Snapshot, now_ms: i64, force: bool) {
        if !force && st.halt_checked_ms.is_some_and(|t| now_ms >= t && now_ms - t < 250) {
            return;
        }
        st.halt_checked_ms = Some(now_ms);
        let (known, mut failing) = self.fleet_health(st, snap);
        failing.sort();
        let change = st.gate.observe_fleet(failing.len(), known);
        st.stats.halted = st.gate.halted().is_some();
        let Some(change) = change else { return };
        let (state, failing_n, known, share) = match change {
            HaltChange::Halted { failing, known, share } => {
                st.stats.halts += 1;
                warn!(failing, known, share, "automation halted: too much of the fleet is predicted failing");
                ("halted", failing, known, share)
            }
            HaltChange::Resumed { failing, known, share } => {
                info!(failing, known, share, "automation resumed");
                ("resumed", failing, known, share)
            }
        };
        let id = format!("halt-{now_ms:x}-{}", st.stats.halts);
        self.append(
            st,
            &id,
            AuditKind::Halt,
            "",
            "",
            json!({
                "state": state, "failing": failing_n, "known": known, "share": share,
                "halt_share": self.cfg.safety.halt_share, "halt_min_failing": self.cfg.safety.halt_min_failing,
                "failing_resources": failing, "in_flight": st.gate.in_flight(),
            }),
        );
    }

    /// Once per tick: the sweep, failure signals, warning expiry, verification, halt state.
    pub fn tick(self: Arc<Self>, now_ms: i64) {
        // Predictions below the engine's raise threshold may still cross a policy's.
        let snap = self.snapshot();
        for resource in snap.workloads.keys() {
            for ev in self.predictions.latest(resource) {
                let got = self.clone().consider_in(&snap, &ev, now_ms);
                log_considered(&ev, &got);
            }
        }
        let mut st = self.lock();
        // Failures: misses and confirmations.
        let mut lessons: Vec<(ThresholdRef, Lesson)> = Vec::new();
        for (resource, w) in &snap.workloads {
            let resource = resource.clone();
            let Some((kind, row)) = self.features.resource(&resource, now_ms) else { continue };
            let names = feature_names(kind, self.features.config());
            let (owner, set) = self.owner_and_set(&snap, &w.host, Some(&w.name));
            for ft in ["memory_exhaustion"] {
                let Some(sig) = failure_signal(ft) else { continue };
                let v = feature(&names, &row, sig);
                let subject =
                    Subject { resource_kind: kind, failure_type: ft, owner: &owner, set: set.map(|s| s.name.as_str()) };
                let tref = self.cfg.policy_for(&subject).map(|p| self.threshold_ref(p, kind, ft, &owner));
                if let Some(l) = st.tracker.observe_signal(&resource, ft, v, now_ms, tref) {
                    if l.1 == Lesson::Miss {
                        info!(resource, failure_type = ft, "failure without a warning (miss)");
                    }
                    lessons.push(l);
                }
            }
        }
        lessons.extend(st.tracker.expire(now_ms));
        // Decisions of closed warnings may be made again.
        let State { tracker, decided, .. } = &mut *st;
        decided.retain(|(r, f), _| tracker.warned(r, f));
        if !lessons.is_empty() {
            for (t, l) in lessons {
                let v = st.thresholds.learn(&t.key, t.bounds, l);
                debug!(key = ?t.key, lesson = ?l, threshold = v, "threshold adapted");
            }
            self.persist_thresholds(&mut st);
        }
        // Expired approvals.
        let expired: Vec<PendingAction> = {
            let ids: Vec<String> =
                st.pending.values().filter(|p| now_ms >= p.expires_ms).map(|p| p.action_id.clone()).collect();
            ids.iter().filter_map(|id| st.pending.remove(id)).collect()
        };
        for p in expired {
            self.append(
                &mut st,
                &p.action_id,
                AuditKind::Approval,
                &p.host,
                &p.workload,
                json!({
                    "approved": false, "by": "augur", "why": "not approved before the predicted failure's horizon",
                }),
            );
        }
        self.refresh_halt(&mut st, &snap, now_ms, true);
        st.stats.in_flight = st.gate.in_flight() as u64;
        let due = st.tracker.due(now_ms);
        drop(st);
        for p in due {
            let me = self.clone();
            tokio_spawn(async move { me.verify(p).await });
        }
    }

    async fn verify(self: Arc<Self>, p: PendingVerify) {
        let healthy = if self.cfg.outcome.health_check {
            let deadline = augur_core::time::now_ms() + self.cfg.safety.action_deadline.as_millis() as i64;
            self.exec.health(p.host.clone(), p.workload.clone(), deadline).await
        } else {
            None
        };
        let mut st = self.lock();
        let v: Verdict = st.tracker.verdict(&p, healthy);
        st.bandit.update(&v.failure_type, v.action, v.success);
        st.stats.verified += 1;
        self.persist_bandit(&mut st);
        let counts = st.bandit.counts(&v.failure_type, v.action);
        info!(action_id = v.action_id, success = v.success, "remediation verified");
        self.append(
            &mut st,
            &p.action_id,
            AuditKind::Outcome,
            &p.host,
            &p.workload,
            json!({
                "phase": "verified", "success": v.success, "failures_since": v.failures_since,
                "healthy": v.healthy, "failure_type": v.failure_type, "action": v.action,
                "verify_at_ms": p.verify_at_ms, "started_ms": p.started_ms,
                "bandit": {"successes": counts.successes, "failures": counts.failures},
            }),
        );
    }

    fn persist_bandit(&self, st: &mut State) {
        if let Err(e) = self.store.model_state_put(BANDIT_KEY, &st.bandit.to_bytes()) {
            st.stats.persist_errors += 1;
            warn!(error = %e, "saving the bandit state failed");
        }
    }

    fn persist_thresholds(&self, st: &mut State) {
        if let Err(e) = self.store.model_state_put(THRESHOLDS_KEY, &st.thresholds.to_bytes()) {
            st.stats.persist_errors += 1;
            warn!(error = %e, "saving the thresholds failed");
        }
    }

    /// Decisions waiting for an operator, oldest first.
    pub fn pending(&self) -> Vec<PendingAction> {
        let mut v: Vec<PendingAction> = self.lock().pending.values().cloned().collect();
        v.sort_by_key(|p| p.created_ms);
        v
    }

    /// An operator approves a pending action: it starts now if the safety gate admits it
    /// (a refusal leaves it pending and says why).
    pub fn approve(self: &Arc<Self>, action_id: &str, by: &str) -> Result<PendingAction, RemediateError> {
        let now = augur_core::time::now_ms();
        let snap = self.snapshot();
        let known = known_check(&snap);
        let mut st = self.lock();
        let p = st.pending.get(action_id).cloned().ok_or_else(|| RemediateError::NoSuchPending(action_id.into()))?;
        self.refresh_halt(&mut st, &snap, now, true);
        if let Err(refusal) = st.gate.begin(action_id, &p.plan.targets(), p.set.as_deref(), &known, now) {
            self.append(
                &mut st,
                action_id,
                AuditKind::Approval,
                &p.host,
                &p.workload,
                json!({
                    "approved": true, "by": by, "started": false, "safety": refusal.to_string(),
                }),
            );
            return Err(RemediateError::Refused { id: action_id.into(), refusal });
        }
        st.pending.remove(action_id);
        st.stats.started += 1;
        st.tracker.acted(&p.resource, &p.failure_type);
        self.append(
            &mut st,
            action_id,
            AuditKind::Approval,
            &p.host,
            &p.workload,
            json!({
                "approved": true, "by": by, "started": true,
            }),
        );
        drop(st);
        let deadline_ms = now + self.cfg.safety.action_deadline.as_millis() as i64;
        let verify = VerifyPlan {
            resource: p.resource.clone(),
            failure_type: p.failure_type.clone(),
            action: p.action,
            horizon_s: p.horizon_s,
        };
        self.clone().spawn_execution(Execution {
            action_id: action_id.into(),
            host: p.host.clone(),
            workload: p.workload.clone(),
            plan: p.plan.clone(),
            started_ms: now,
            deadline_ms,
            verify,
        });
        Ok(p)
    }

    /// An operator rejects a pending action.
    pub fn reject(&self, action_id: &str, by: &str, why: &str) -> Result<PendingAction, RemediateError> {
        let mut st = self.lock();
        let p = st.pending.remove(action_id).ok_or_else(|| RemediateError::NoSuchPending(action_id.into()))?;
        self.append(
            &mut st,
            action_id,
            AuditKind::Approval,
            &p.host,
            &p.workload,
            json!({
                "approved": false, "by": by, "why": why,
            }),
        );
        Ok(p)
    }

    /// Live precision and recall per failure type.
    pub fn quality(&self) -> Vec<Quality> {
        self.lock().tracker.quality()
    }

    pub fn stats(&self) -> RemediationStats {
        let st = self.lock();
        let mut s = st.stats.clone();
        s.in_flight = st.gate.in_flight() as u64;
        s.halted = st.gate.halted().is_some();
        s
    }

    /// Learned thresholds: (key, value) for every threshold moved so far.
    pub fn thresholds(&self) -> Vec<(ThresholdKey, f64)> {
        self.lock().thresholds.all().map(|(k, s)| (k.clone(), s.value)).collect()
    }

    /// Prometheus text for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        super::outcome::render_metrics(&self.quality(), out);
        let s = self.stats();
        for (name, help, v) in [
            ("augur_remediation_decisions_total", "Decisions recorded", s.decisions),
            ("augur_remediation_started_total", "Actions started", s.started),
            ("augur_remediation_refused_total", "Decisions refused by safety limits", s.refused),
            ("augur_remediation_dry_runs_total", "Dry-run decisions recorded", s.dry_runs),
            ("augur_remediation_halts_total", "Automation halts", s.halts),
            ("augur_remediation_in_flight", "Actions in flight", s.in_flight),
            ("augur_remediation_halted", "1 while automation is halted", u64::from(s.halted)),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
    }
}

/// An admitted action to execute.
struct Execution {
    action_id: String,
    host: String,
    workload: String,
    plan: ActionPlan,
    /// Decision time (verification is scheduled from it).
    started_ms: i64,
    deadline_ms: i64,
    verify: VerifyPlan,
}

#[derive(Debug, Clone)]
struct VerifyPlan {
    resource: String,
    failure_type: String,
    action: ActionKind,
    horizon_s: i64,
}

fn log_considered(ev: &Event, got: &Considered) {
    match got {
        Considered::Nothing(why) => {
            tracing::trace!(resource = %ev.resource, failure_type = %ev.failure_type, p = ev.probability, why, "prediction considered")
        }
        Considered::Refused(id, code) => {
            debug!(resource = %ev.resource, failure_type = %ev.failure_type, p = ev.probability, action_id = %id, code, "action refused")
        }
        other => {
            info!(resource = %ev.resource, failure_type = %ev.failure_type, p = ev.probability, decision = ?other, "decision")
        }
    }
}

/// Spawns on the current runtime (the decision loop always runs inside one).
fn tokio_spawn(f: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(f);
}

/// The resource set of `w`, its load balancer, and `w`'s server name in it: what traffic
/// plans (promotion, migration) need.
fn behind_load_balancer<'a>(
    set: Option<&'a ResourceSetConfig>,
    w: &WorkloadInfo,
) -> Result<(&'a ResourceSetConfig, &'a super::policy::LbConfig, String), String> {
    let set = set.ok_or("the workload is in no resource set")?;
    let lb = set.lb.as_ref().ok_or_else(|| format!("set {} has no load balancer", set.name))?;
    let me = set
        .members
        .iter()
        .find(|m| m.host == w.host && m.workload == w.name)
        .ok_or_else(|| format!("{}/{} is not a member of set {}", w.host, w.name, set.name))?;
    let server = me.server.clone().ok_or_else(|| format!("{}/{} has no server name", w.host, w.name))?;
    Ok((set, lb, server))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureConfig;
    use crate::predict::{ModelSpec, PredictConfig, Scorer};
    use crate::remediate::audit::AuditQuery;
    use crate::remediate::policy::{MemberConfig, PolicyConfig, SafetyConfig};
    use crate::storage::memory::MemoryStore;
    use crate::storage::{SeriesMeta, StoreOptions};
    use augur_core::{MetricKind, SeriesKey};

    const MIB: f64 = 1_048_576.0;
    const FT: &str = "memory_exhaustion";

    /// P(memory exhaustion within 120 s) = memory utilisation.
    struct UtilScorer;

    impl Scorer for UtilScorer {
        fn models(&self) -> Vec<ModelSpec> {
            vec![ModelSpec {
                name: "util".into(),
                version: "7".into(),
                resource_kind: ResourceKind::Container,
                failure_type: FT.into(),
                horizon_s: 120,
                operating_threshold: None,
                features: vec!["mem_util".into()],
            }]
        }
        fn score(&self, _m: &ModelSpec, rows: &[f32]) -> Result<Vec<f32>, String> {
            Ok(rows.iter().map(|u| if u.is_nan() { 0.0 } else { *u }).collect())
        }
    }

    #[derive(Default)]
    struct FakeFleet {
        hosts: Mutex<Vec<HostInfo>>,
        workloads: Mutex<Vec<WorkloadInfo>>,
    }

    impl Fleet for FakeFleet {
        fn hosts(&self) -> Vec<HostInfo> {
            self.hosts.lock().unwrap().clone()
        }
        fn workloads(&self) -> Vec<WorkloadInfo> {
            self.workloads.lock().unwrap().clone()
        }
    }

    /// Records plans; completes them when `hold` is false, else waits until released.
    #[derive(Default)]
    struct FakeExec {
        runs: Mutex<Vec<(String, ActionPlan, bool)>>,
        hold: tokio::sync::Notify,
        holding: std::sync::atomic::AtomicBool,
        healthy: Mutex<Option<bool>>,
    }

    impl Executor for Arc<FakeExec> {
        fn execute(
            &self,
            id: String,
            plan: ActionPlan,
            _deadline: i64,
            dry_run: bool,
        ) -> BoxFuture<'static, ExecResult> {
            self.runs.lock().unwrap().push((id, plan, dry_run));
            let me = self.clone();
            Box::pin(async move {
                if me.holding.load(std::sync::atomic::Ordering::Acquire) {
                    me.hold.notified().await;
                }
                ExecResult { ok: true, summary: if dry_run { "dry run" } else { "done" }.into(), detail: json!({}) }
            })
        }
        fn health(&self, _h: String, _w: String, _d: i64) -> BoxFuture<'static, Option<bool>> {
            let h = *self.healthy.lock().unwrap();
            Box::pin(async move { h })
        }
    }

    struct World {
        fe: Arc<FeatureEngine>,
        pe: Arc<PredictionEngine>,
        fleet: Arc<FakeFleet>,
        exec: Arc<FakeExec>,
        audit: Arc<AuditLog>,
        store: Arc<dyn Store>,
        metas: Mutex<Vec<SeriesMeta>>,
    }

    impl World {
        fn new() -> World {
            let fe = Arc::new(FeatureEngine::new(FeatureConfig::default()));
            let pe = PredictionEngine::new(PredictConfig::default(), fe.clone(), Arc::new(UtilScorer));
            let store: Arc<dyn Store> = Arc::new(MemoryStore::new(StoreOptions::default()));
            let audit = Arc::new(AuditLog::open(store.clone()).expect("audit log"));
            World {
                fe,
                pe,
                fleet: Arc::default(),
                exec: Arc::new(FakeExec { healthy: Mutex::new(Some(true)), ..FakeExec::default() }),
                audit,
                store,
                metas: Mutex::new(Vec::new()),
            }
        }

        fn host(&self, host: &str, labels: &[(&str, &str)]) {
            self.fleet.hosts.lock().unwrap().push(HostInfo {
                host: host.into(),
                connected: true,
                labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            });
        }

        fn workload(&self, host: &str, name: &str, allowed: &[&str]) {
            self.fleet.workloads.lock().unwrap().push(WorkloadInfo {
                host: host.into(),
                name: name.into(),
                resource: format!("cgroup/{name}"),
                allowed_actions: allowed.iter().map(|a| (*a).into()).collect(),
                stateless: true,
            });
        }

        fn remediator(&self, cfg: RemediationConfig) -> Arc<Remediator> {
            Remediator::new(
                cfg,
                self.fe.clone(),
                self.pe.clone(),
                self.fleet.clone(),
                Arc::new(self.exec.clone()),
                self.audit.clone(),
                self.store.clone(),
            )
        }

        #[allow(clippy::too_many_arguments)]
        fn put(
            &self,
            host: &str,
            resource: &str,
            metric: &str,
            kind: MetricKind,
            labels: &[(&str, &str)],
            ts: i64,
            v: f64,
        ) {
            let meta = SeriesMeta {
                host_id: host.into(),
                key: SeriesKey {
                    resource: resource.into(),
                    metric: metric.into(),
                    unit: String::new(),
                    kind,
                    labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
                },
            };
            let mut metas = self.metas.lock().unwrap();
            let id = match metas.iter().position(|m| *m == meta) {
                Some(i) => i as u64 + 1,
                None => {
                    metas.push(meta);
                    metas.len() as u64
                }
            };
            let all = metas.clone();
            self.fe.observe(&[(id, ts, v)], &|i| all.get(i as usize - 1).cloned());
        }

        /// A host with `avail` of 16 GiB free, one sample.
        fn host_memory(&self, host: &str, ts: i64, avail: f64) {
            self.put(host, "host", "node_memory_MemAvailable_bytes", MetricKind::Gauge, &[], ts, avail);
            self.put(host, "host", "node_memory_MemTotal_bytes", MetricKind::Gauge, &[], ts, 16.0 * 1024.0 * MIB);
        }

        /// A container sample: usage (MiB) of a 256 MiB limit, and its OOM-kill counter.
        fn container(&self, host: &str, name: &str, ts: i64, usage_mib: f64, oom_kills: f64) {
            let r = format!("cgroup/{name}");
            self.put(host, &r, "container_memory_usage_bytes", MetricKind::Gauge, &[], ts, usage_mib * MIB);
            self.put(host, &r, "container_spec_memory_limit_bytes", MetricKind::Gauge, &[], ts, 256.0 * MIB);
            self.put(
                host,
                &r,
                "container_memory_events_total",
                MetricKind::Counter,
                &[("event", "oom_kill")],
                ts,
                oom_kills,
            );
        }

        fn audit_kinds(&self, action_id: &str) -> Vec<AuditKind> {
            let q = AuditQuery { action_id: Some(action_id.into()), ..AuditQuery::default() };
            self.audit.query(&q).unwrap().into_iter().map(|r| r.kind).collect()
        }

        fn records(&self, kind: AuditKind) -> Vec<crate::remediate::audit::AuditRecord> {
            self.audit.query(&AuditQuery { kind: Some(kind), ..AuditQuery::default() }).unwrap()
        }
    }

    fn policy(mode: Mode) -> PolicyConfig {
        PolicyConfig {
            name: "oom".into(),
            resource_kind: Some("container".into()),
            failure_type: Some(FT.into()),
            owner: None,
            set: None,
            mode,
            threshold: 0.8,
            threshold_min: Some(0.6),
            threshold_max: Some(0.95),
            actions: vec![ActionKind::ResizeMemory],
            memory_step: 32 << 20,
            memory_cap: 1 << 30,
            safety_factor: 1.5,
            cpu_step: 0.5,
            cpu_cap: 4.0,
        }
    }

    fn config(mode: Mode) -> RemediationConfig {
        RemediationConfig {
            policies: vec![policy(mode)],
            seed: 11,
            safety: SafetyConfig { cooldown: Duration::from_secs(60), ..SafetyConfig::default() },
            ..RemediationConfig::default()
        }
    }

    /// Feeds a 1 MiB/s leak from `from` MiB for `secs` seconds, ticking the prediction
    /// engine; returns the last timestamp and the events of the last tick.
    fn leak(w: &World, names: &[&str], t0: i64, from: f64, secs: i64) -> (i64, Vec<Arc<Event>>) {
        let mut evs = Vec::new();
        let mut ts = t0;
        for s in 0..secs {
            ts = t0 + s * 1000;
            for n in names {
                w.container("h1", n, ts, from + s as f64, 0.0);
            }
            w.host_memory("h1", ts, 8.0 * 1024.0 * MIB);
            evs = w.pe.tick(ts);
        }
        (ts, evs)
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn auto_resizes_in_place_sized_from_the_growth_and_audits_prediction_decision_outcome() {
        let w = World::new();
        w.host("h1", &[]);
        w.workload("h1", "app", &["resize", "restart"]);
        let r = w.remediator(config(Mode::Auto));
        let mut sub = w.pe.subscribe(false);
        // 180 -> 230 MiB of 256 at 1 MiB/s: P = util crosses 0.8 at 205 MiB.
        let (ts, _) = leak(&w, &["app"], 1_000_000, 180.0, 50);
        let mut last = None;
        while let Ok(Some((ev, _))) = tokio::time::timeout(Duration::from_millis(1), sub.next()).await {
            last = Some(ev);
        }
        let ev = (*last.expect("tick events")).clone();
        assert!(ev.probability >= 0.8, "{}", ev.probability);
        let got = r.clone().consider(&ev, ts);
        let Considered::Started(id) = got else { panic!("{got:?}") };
        settle().await;
        let runs = w.exec.runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 1);
        let ActionPlan::Resize { host, workload, resize } = &runs[0].1 else { panic!("{:?}", runs[0].1) };
        assert_eq!((host.as_str(), workload.as_str(), runs[0].2), ("h1", "app", false));
        // Growth 1 MiB/s x 120 s x 1.5 = 180 MiB above the 256 MiB limit.
        let new = resize.memory_max.unwrap() as f64 / MIB;
        assert!((new - 436.0).abs() < 2.0, "new limit {new} MiB");
        // Repeated predictions of the same warning decide nothing more.
        assert_eq!(r.clone().consider(&ev, ts + 1000), Considered::Nothing("already decided for this warning"));
        assert_eq!(w.audit_kinds(&id), vec![AuditKind::Prediction, AuditKind::Decision, AuditKind::Outcome]);
        let d = &w.records(AuditKind::Decision)[0].detail;
        assert_eq!(d["policy"], "oom");
        assert_eq!(d["chosen"], "resize_memory");
        assert!(d["why"].as_str().unwrap().contains("Thompson"), "{d}");
        let p = &w.records(AuditKind::Prediction)[0].detail;
        assert_eq!((p["model_name"].as_str(), p["model_version"].as_str()), (Some("util"), Some("7")));
        assert!(!p["top_features"].as_array().unwrap().is_empty());
        // Verified at the horizon (120 s): no OOM kill since, healthy: a success.
        r.clone().tick(ts + 60_000);
        settle().await;
        assert_eq!(w.audit_kinds(&id).len(), 3, "not yet due");
        r.clone().tick(ts + 121_000);
        settle().await;
        let kinds = w.audit_kinds(&id);
        assert_eq!(kinds.last(), Some(&AuditKind::Outcome));
        let v = w.records(AuditKind::Outcome).last().unwrap().detail.clone();
        assert_eq!((v["phase"].as_str(), v["success"].as_bool()), (Some("verified"), Some(true)), "{v}");
        // The bandit learned and the store holds it.
        let saved = w.store.model_state_get(BANDIT_KEY).unwrap().expect("persisted");
        let b = Bandit::from_bytes(&saved, 1).unwrap();
        assert_eq!(b.counts(FT, ActionKind::ResizeMemory).successes, 1);
        assert!(w.audit.verify().unwrap().ok());
    }

    #[tokio::test]
    async fn modes_off_dry_run_and_approve() {
        for mode in [Mode::Off, Mode::DryRun, Mode::Approve] {
            let w = World::new();
            w.host("h1", &[]);
            w.workload("h1", "app", &["resize"]);
            let r = w.remediator(config(mode));
            let (ts, _) = leak(&w, &["app"], 1_000_000, 200.0, 40);
            let ev = w.pe.latest("h1/cgroup/app")[0].clone();
            let got = r.clone().consider(&ev, ts);
            settle().await;
            let runs = w.exec.runs.lock().unwrap().clone();
            match mode {
                Mode::Off => {
                    assert_eq!(got, Considered::Nothing("policy off"));
                    assert!(runs.is_empty());
                    assert!(w.records(AuditKind::Decision).is_empty());
                }
                Mode::DryRun => {
                    let Considered::DryRun(id) = got else { panic!("{got:?}") };
                    assert_eq!(runs.len(), 1);
                    assert!(runs[0].2, "every command of a dry run goes out as a dry run");
                    let d = &w.records(AuditKind::Decision)[0].detail;
                    assert_eq!(d["dry_run"], true);
                    assert_eq!(d["plan"]["action"], "resize", "the exact plan is recorded: {d}");
                    assert_eq!(
                        w.audit_kinds(&id),
                        vec![AuditKind::Prediction, AuditKind::Decision, AuditKind::Outcome]
                    );
                    assert_eq!(r.stats().in_flight, 0, "a dry run takes no slot");
                }
                Mode::Approve => {
                    let Considered::Pending(id) = got else { panic!("{got:?}") };
                    assert!(runs.is_empty(), "nothing runs before approval");
                    assert_eq!(r.pending().len(), 1);
                    assert_eq!(r.approve("nope", "ops"), Err(RemediateError::NoSuchPending("nope".into())));
                    let p = r.approve(&id, "ops").expect("approved");
                    assert_eq!(p.action, ActionKind::ResizeMemory);
                    settle().await;
                    assert_eq!(w.exec.runs.lock().unwrap().len(), 1);
                    assert!(r.pending().is_empty());
                    let a = &w.records(AuditKind::Approval)[0].detail;
                    assert_eq!((a["approved"].as_bool(), a["by"].as_str()), (Some(true), Some("ops")));
                }
                Mode::Auto => unreachable!(),
            }
        }
    }

    #[tokio::test]
    async fn rejected_and_expired_approvals_run_nothing() {
        let w = World::new();
        w.host("h1", &[]);
        w.workload("h1", "a", &["resize"]);
        w.workload("h1", "b", &["resize"]);
        let r = w.remediator(config(Mode::Approve));
        let (ts, _) = leak(&w, &["a", "b"], 1_000_000, 200.0, 40);
        let Considered::Pending(a) = r.clone().consider(&w.pe.latest("h1/cgroup/a")[0], ts) else { panic!() };
        let Considered::Pending(_) = r.clone().consider(&w.pe.latest("h1/cgroup/b")[0], ts) else { panic!() };
        r.reject(&a, "ops", "not now").expect("rejected");
        assert_eq!(r.pending().len(), 1);
        r.clone().tick(ts + 121_000);
        settle().await;
        assert!(r.pending().is_empty(), "expired at the horizon");
        assert!(w.exec.runs.lock().unwrap().is_empty());
        assert_eq!(w.records(AuditKind::Approval).len(), 2);
    }

    #[tokio::test]
    async fn unknown_or_disconnected_targets_get_nothing() {
        let w = World::new();
        w.host("h1", &[]);
        w.workload("h1", "app", &["resize"]);
        let r = w.remediator(config(Mode::Auto));
        let (ts, _) = leak(&w, &["app", "undeclared"], 1_000_000, 200.0, 40);
        let got = r.clone().consider(&w.pe.latest("h1/cgroup/undeclared")[0], ts);
        assert_eq!(got, Considered::Nothing("not a declared workload"));
        w.fleet.hosts.lock().unwrap()[0].connected = false;
        let got = r.clone().consider(&w.pe.latest("h1/cgroup/app")[0], ts);
        assert!(matches!(got, Considered::Refused(_, "unknown_target")), "{got:?}");
        // A workload that allows nothing the policy wants: no feasible action.
        w.fleet.hosts.lock().unwrap()[0].connected = true;
        w.fleet.workloads.lock().unwrap()[0].allowed_actions = vec!["restart".into()];
        let r = w.remediator(config(Mode::Auto));
        let got = r.clone().consider(&w.pe.latest("h1/cgroup/app")[0], ts);
        assert!(matches!(got, Considered::NoFeasibleAction(_)), "{got:?}");
        settle().await;
        assert!(w.exec.runs.lock().unwrap().is_empty());
        let d = w.records(AuditKind::Decision).last().unwrap().detail.clone();
        assert!(d["alternatives"][0]["why"].as_str().unwrap().contains("does not allow resize"), "{d}");
    }

    #[tokio::test]
    async fn concurrency_cap_then_halt_when_too_much_is_failing() {
        let w = World::new();
        w.host("h1", &[]);
        for n in ["a", "b", "c", "d", "e", "f"] {
            w.workload("h1", n, &["resize"]);
        }
        let mut cfg = config(Mode::Auto);
        cfg.safety = SafetyConfig {
            max_concurrent: 1,
            max_concurrent_per_set: 1,
            halt_share: 0.4,
            halt_min_failing: 2,
            ..SafetyConfig::default()
        };
        let r = w.remediator(cfg);
        w.exec.holding.store(true, std::sync::atomic::Ordering::Release);
        // Two of six leak: 33% is not above 40%; one action runs, the second waits for a slot.
        let (ts, _) = leak(&w, &["a", "b"], 1_000_000, 200.0, 40);
        for n in ["c", "d", "e", "f"] {
            w.container("h1", n, ts, 10.0, 0.0);
        }
        w.pe.tick(ts);
        assert!(matches!(r.clone().consider(&w.pe.latest("h1/cgroup/a")[0], ts), Considered::Started(_)));
        let got = r.clone().consider(&w.pe.latest("h1/cgroup/b")[0], ts);
        assert!(matches!(got, Considered::Refused(_, "fleet_limit")), "{got:?}");
        assert!(w.records(AuditKind::Halt).is_empty());
        // A third leaks too: 50% > 40%: halt, recorded once, nothing more starts.
        settle().await;
        w.exec.holding.store(false, std::sync::atomic::Ordering::Release);
        w.exec.hold.notify_waiters();
        settle().await;
        assert_eq!(r.stats().in_flight, 0);
        let (ts, _) = leak(&w, &["a", "b", "c"], ts + 1000, 210.0, 5);
        for n in ["d", "e", "f"] {
            w.container("h1", n, ts, 10.0, 0.0);
        }
        w.pe.tick(ts);
        let got = r.clone().consider(&w.pe.latest("h1/cgroup/c")[0], ts);
        assert!(matches!(got, Considered::Refused(_, "halted")), "{got:?}");
        let got = r.clone().consider(&w.pe.latest("h1/cgroup/b")[0], ts);
        assert!(matches!(got, Considered::Refused(_, "halted")), "{got:?}");
        let halts = w.records(AuditKind::Halt);
        assert_eq!(halts.len(), 1);
        assert_eq!(halts[0].detail["state"], "halted");
        assert_eq!((halts[0].detail["failing"].as_u64(), halts[0].detail["known"].as_u64()), (Some(3), Some(6)));
        assert_eq!(w.exec.runs.lock().unwrap().len(), 1, "one action in all");
        // The leaks end: automation resumes (recorded).
        let ts = ts + 1000;
        for n in ["a", "b", "c", "d", "e", "f"] {
            w.container("h1", n, ts, 10.0, 0.0);
        }
        w.pe.tick(ts);
        r.clone().tick(ts);
        let halts = w.records(AuditKind::Halt);
        assert_eq!(halts.len(), 2);
        assert_eq!(halts[1].detail["state"], "resumed");
    }

    #[tokio::test]
    async fn no_host_headroom_falls_back_to_restart() {
        let w = World::new();
        w.host("h1", &[]);
        w.workload("h1", "app", &["resize", "restart"]);
        let mut cfg = config(Mode::Auto);
        cfg.policies[0].actions = vec![ActionKind::ResizeMemory, ActionKind::Restart];
        let r = w.remediator(cfg);
        let (ts, _) = leak(&w, &["app"], 1_000_000, 200.0, 40);
        w.host_memory("h1", ts, 1200.0 * MIB); // 1.2 GiB free of 16: under the 10% reserve
        let Considered::Started(_) = r.clone().consider(&w.pe.latest("h1/cgroup/app")[0], ts) else { panic!() };
        settle().await;
        assert!(matches!(w.exec.runs.lock().unwrap()[0].1, ActionPlan::Restart { .. }));
        let d = &w.records(AuditKind::Decision)[0].detail;
        assert_eq!(d["alternatives"][0]["feasible"], false);
        assert!(d["alternatives"][0]["why"].as_str().unwrap().contains("lacks headroom"), "{d}");
    }

    #[tokio::test]
    async fn thresholds_rise_after_false_positives_and_fall_after_misses() {
        let w = World::new();
        w.host("h1", &[("owner", "team-a")]);
        w.workload("h1", "app", &["resize"]);
        let mut cfg = config(Mode::Auto);
        cfg.policies[0].mode = Mode::Off; // warnings, but no action: they can be false positives
        cfg.outcome.threshold_step = 0.05;
        let r = w.remediator(cfg.clone());
        let key = ThresholdKey::new("container", FT, "team-a");
        let (ts, _) = leak(&w, &["app"], 1_000_000, 200.0, 40);
        r.clone().tick(ts);
        for s in 1..=125 {
            w.container("h1", "app", ts + s * 1000, 20.0, 0.0);
            w.host_memory("h1", ts + s * 1000, 8.0 * 1024.0 * MIB);
            w.pe.tick(ts + s * 1000);
            r.clone().tick(ts + s * 1000);
        }
        let near = |got: Vec<(ThresholdKey, f64)>, want: f64| {
            got.len() == 1 && got[0].0 == key && (got[0].1 - want).abs() < 1e-9
        };
        assert!(near(r.thresholds(), 0.85), "a false positive raised it: {:?}", r.thresholds());
        let q = r.quality();
        assert_eq!((q[0].warnings, q[0].false_positives), (1, 1));
        // An OOM kill with no warning: a miss lowers it.
        let t2 = ts + 126_000;
        for s in 0..3 {
            w.container("h1", "app", t2 + s * 1000, 20.0, s.min(1) as f64);
            w.host_memory("h1", t2 + s * 1000, 8.0 * 1024.0 * MIB);
            w.pe.tick(t2 + s * 1000);
            r.clone().tick(t2 + s * 1000);
        }
        assert!(near(r.thresholds(), 0.80), "a miss lowered it: {:?}", r.thresholds());
        assert_eq!(r.quality()[0].misses, 1);
        // Learned thresholds survive a restart.
        let r2 = w.remediator(cfg);
        assert!(near(r2.thresholds(), 0.80), "{:?}", r2.thresholds());
        let mut m = String::new();
        r2.render_metrics(&mut m);
        assert!(m.contains("augur_remediation_halted 0"), "{m}");
    }

    #[tokio::test]
    async fn promote_and_migrate_plans_come_from_the_resource_set() {
        let w = World::new();
        w.host("h1", &[("tier", "standard")]);
        w.host("h2", &[("tier", "standard")]);
        w.host("h3", &[("tier", "spot")]);
        w.workload("h1", "app", &["resize", "restart", "stop", "start"]);
        let mut cfg = config(Mode::Auto);
        cfg.policies[0].actions = vec![ActionKind::PromoteStandby, ActionKind::Migrate];
        cfg.tiers = vec![
            super::super::policy::TierConfig { name: "spot".into(), cost_per_hour: 0.03, performance: 0.7 },
            super::super::policy::TierConfig { name: "standard".into(), cost_per_hour: 0.1, performance: 1.0 },
        ];
        cfg.slas = vec![super::super::policy::SlaConfig { name: "gold".into(), min_performance: 1.0, tiers: vec![] }];
        let m = |h: &str, s: &str, standby| MemberConfig {
            host: h.into(),
            workload: "app".into(),
            server: Some(s.into()),
            standby,
        };
        cfg.sets = vec![ResourceSetConfig {
            name: "web".into(),
            owner: "team-a".into(),
            sla: Some("gold".into()),
            stateless: true,
            lb: Some(super::super::policy::LbConfig {
                host: "lb".into(),
                workload: "haproxy".into(),
                backend: "app".into(),
            }),
            members: vec![m("h1", "s1", false), m("h2", "s2", true), m("h3", "s3", false)],
        }];
        cfg.validate().expect("valid");
        let (ts, _) = leak(&w, &["app"], 1_000_000, 200.0, 40);
        for h in ["h2", "h3"] {
            w.host_memory(h, ts, 8.0 * 1024.0 * MIB);
        }
        let r = w.remediator(cfg);
        let mut st = r.lock();
        let ev = w.pe.latest("h1/cgroup/app")[0].clone();
        let snap = r.snapshot();
        let wl = snap.workloads[&ev.resource].clone();
        let set = r.cfg.set_of("h1", "app");
        let (alts, chosen) = r.alternatives(&mut st, &snap, &ev, &wl, &r.cfg.policies[0], set, ts);
        assert!(chosen.is_some());
        let promote = alts[0].plan.as_ref().expect("promote is feasible");
        let ActionPlan::Promote { standby, remedy, .. } = promote else { panic!("{promote:?}") };
        assert_eq!((standby.host.as_str(), standby.server.as_str()), ("h2", "s2"));
        assert_eq!(*remedy, Remedy::Restart);
        // The spot host is cheaper but below the SLA's performance, and the standby is
        // not a migration target: nowhere to go.
        assert!(!alts[1].feasible, "{:?}", alts[1]);
        assert!(alts[1].why.contains("no connected host"), "{}", alts[1].why);
    }

    /// Floats in audit details (probabilities, scores) must read back exactly, or the hash
    /// chain would not verify after a restart (serde_json's `float_roundtrip`).
    #[tokio::test]
    async fn decision_records_with_floats_verify_after_reopening_the_store() {
        use crate::storage::rocks::RocksStore;
        let dir = tempfile::tempdir().unwrap();
        let w = World::new();
        w.host("h1", &[]);
        w.workload("h1", "app", &["resize"]);
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path(), StoreOptions::default()).unwrap());
        let audit = Arc::new(AuditLog::open(store.clone()).unwrap());
        let r = Remediator::new(
            config(Mode::DryRun),
            w.fe.clone(),
            w.pe.clone(),
            w.fleet.clone(),
            Arc::new(w.exec.clone()),
            audit,
            store,
        );
        let (ts, _) = leak(&w, &["app"], 1_000_000, 200.0, 40);
        let mut ev = (*w.pe.latest("h1/cgroup/app")[0]).clone();
        // Values serde_json's default parser reads back one ulp off.
        ev.probability = 0.9941414234139935;
        ev.probability_by_horizon_s.insert(30, 0.11290774160688077);
        assert!(matches!(r.clone().consider(&ev, ts), Considered::DryRun(_)));
        settle().await;
        drop(r);
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path(), StoreOptions::default()).unwrap());
        let log = AuditLog::open(store).unwrap();
        let report = log.verify().unwrap();
        assert!(report.ok() && report.records >= 2, "{report:?}");
    }

    #[tokio::test]
    async fn a_prediction_acted_on_below_the_raise_threshold_is_explained_in_the_audit() {
        let w = World::new();
        w.host("h1", &[]);
        w.workload("h1", "app", &["resize"]);
        let r = w.remediator(config(Mode::DryRun));
        let (ts, _) = leak(&w, &["app"], 1_000_000, 200.0, 40);
        // A plain tick (no explanation), as the sweep sees it between raised events.
        let mut ev = (*w.pe.latest("h1/cgroup/app")[0]).clone();
        ev.state = EventState::Tick;
        ev.top_features.clear();
        assert!(matches!(r.clone().consider(&ev, ts), Considered::DryRun(_)));
        let p = w.records(AuditKind::Prediction)[0].detail.clone();
        assert_eq!(p["explained_at_raise"], false);
        assert_eq!(p["top_features"][0]["name"], "mem_util", "{p}");
        assert!(p["top_features"][0]["contribution"].as_f64().unwrap() > 0.0, "{p}");
    }
}
