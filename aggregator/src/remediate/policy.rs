//! Remediation policy: the `[remediation]` section of the aggregator config (resource sets,
//! host tiers, SLAs, policies, safety limits), its validation, which policy governs a
//! prediction, and the knowledge base of candidate actions per failure type.
//!
//! A policy matches predictions by resource kind, failure type, owner and resource set
//! (each optional; first match wins) and says what may happen: its mode (`off`,
//! `dry_run`, `approve`, `auto`), its starting threshold and the bounds the adaptive
//! threshold stays within, the actions it allows (default: the knowledge base's list for
//! the failure type), and how far a resize may go. Without policies nothing happens.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use augur_core::units;
use serde::{Deserialize, Serialize};

use crate::features::ResourceKind;

/// What a policy lets the decision engine do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Nothing: predictions are not acted on (outcomes are still tracked).
    #[default]
    Off,
    /// Decide and record exactly what would be done; send nothing that changes anything.
    DryRun,
    /// Decide, then wait for an operator to approve or reject (augurctl or REST).
    Approve,
    /// Decide and execute.
    Auto,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::DryRun => "dry_run",
            Mode::Approve => "approve",
            Mode::Auto => "auto",
        }
    }
}

/// A remediation the knowledge base knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Raise the workload's memory limit in place (sized from the predicted growth).
    ResizeMemory,
    /// Raise the workload's CPU allowance in place.
    ResizeCpu,
    /// Restart the workload.
    Restart,
    /// Switch traffic to the set's warm standby, drain the primary, then remediate it.
    PromoteStandby,
    /// Move a stateless workload to a host of a suitable tier.
    Migrate,
    /// Add an instance to the workload's resource set.
    ScaleOut,
}

impl ActionKind {
    pub const ALL: [ActionKind; 6] = [
        ActionKind::ResizeMemory,
        ActionKind::ResizeCpu,
        ActionKind::Restart,
        ActionKind::PromoteStandby,
        ActionKind::Migrate,
        ActionKind::ScaleOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::ResizeMemory => "resize_memory",
            ActionKind::ResizeCpu => "resize_cpu",
            ActionKind::Restart => "restart",
            ActionKind::PromoteStandby => "promote_standby",
            ActionKind::Migrate => "migrate",
            ActionKind::ScaleOut => "scale_out",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The command kinds the acted-on workload must declare as allowed (`allowed_actions`
    /// in the agent's workload config) for this action to be a candidate.
    pub fn required_commands(self) -> &'static [&'static str] {
        match self {
            ActionKind::ResizeMemory | ActionKind::ResizeCpu => &["resize"],
            ActionKind::Restart => &["restart"],
            // The primary is drained by the load balancer's agent; it must allow being
            // remediated afterwards only when a remedy is chosen.
            ActionKind::PromoteStandby => &[],
            ActionKind::Migrate => &["stop"],
            ActionKind::ScaleOut => &[],
        }
    }
}

/// The built-in knowledge base: candidate actions per failure type, most specific first.
/// A policy's `actions` list narrows it; `[remediation.knowledge]` replaces entries.
pub fn default_knowledge() -> BTreeMap<String, Vec<ActionKind>> {
    use ActionKind::*;
    [
        ("memory_exhaustion", vec![ResizeMemory, Restart, PromoteStandby, Migrate]),
        ("cpu_saturation", vec![ResizeCpu, ScaleOut, Migrate]),
        ("cpu_throttling", vec![ResizeCpu, ScaleOut, Migrate]),
        ("disk_full", vec![PromoteStandby, Migrate]),
        ("pids_exhaustion", vec![Restart, PromoteStandby]),
        ("slo_breach", vec![ScaleOut, PromoteStandby, Migrate]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The `[remediation]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemediationConfig {
    pub safety: SafetyConfig,
    pub outcome: OutcomeConfig,
    /// Knowledge-base overrides: failure type → candidate actions, in preference order.
    pub knowledge: BTreeMap<String, Vec<ActionKind>>,
    pub tiers: Vec<TierConfig>,
    pub slas: Vec<SlaConfig>,
    pub sets: Vec<ResourceSetConfig>,
    pub policies: Vec<PolicyConfig>,
    /// Seed of the bandit's sampler; 0: seeded from the clock (tests fix it).
    pub seed: u64,
    /// Decisions waiting for approval; older ones expire at their deadline, and past this
    /// many the oldest is rejected.
    pub max_pending: usize,
}

/// Blast-radius limits; see DESIGN.md, "Safety rules for autonomous action".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafetyConfig {
    /// Actions in flight at once across the fleet.
    pub max_concurrent: usize,
    /// Actions in flight at once within one resource set.
    pub max_concurrent_per_set: usize,
    /// A resource acted on is left alone this long after the action ends.
    #[serde(with = "units::duration")]
    pub cooldown: Duration,
    /// Automation halts while more than this share of the known resources (declared
    /// workloads of connected hosts) are predicted failing at once…
    pub halt_share: f64,
    /// …and at least this many are (one failing workload in a fleet of two is not a halt).
    pub halt_min_failing: usize,
    /// Every action must finish within this; its commands carry the deadline.
    #[serde(with = "units::duration")]
    pub action_deadline: Duration,
}

/// How outcomes are verified and thresholds adapted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutcomeConfig {
    /// An action is verified at its prediction's horizon, or after this if sooner.
    #[serde(with = "units::duration")]
    pub verify_after: Duration,
    /// Run the workload's health check when verifying (the check must pass).
    pub health_check: bool,
    /// How far one miss lowers, and one false positive raises, a threshold.
    pub threshold_step: f64,
}

/// A class of hosts (label `tier` on the agent): price and speed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub name: String,
    /// Cost of one host-hour of this tier (any currency, used for comparison).
    pub cost_per_hour: f64,
    /// Work done per unit of resource relative to `standard` (1.0). Demand is sized as
    /// predicted demand / performance.
    pub performance: f64,
}

/// What a resource set is promised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaConfig {
    pub name: String,
    /// Tiers below this performance factor cannot host the set.
    #[serde(default)]
    pub min_performance: f64,
    /// Tiers the set may use (empty: any).
    #[serde(default)]
    pub tiers: Vec<String>,
}

/// One instance of a resource set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub host: String,
    /// The declared workload's name on that host.
    pub workload: String,
    /// Its server name in the set's load-balancer backend (needed for traffic actions).
    #[serde(default)]
    pub server: Option<String>,
    /// A warm standby (receives traffic only when promoted).
    #[serde(default)]
    pub standby: bool,
}

/// The load balancer in front of a set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbConfig {
    pub host: String,
    pub workload: String,
    pub backend: String,
}

/// One service's instances across hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSetConfig {
    pub name: String,
    /// Owner (team), matched by policies' `owner`.
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub sla: Option<String>,
    /// Stateless instances may be migrated and scaled.
    #[serde(default)]
    pub stateless: bool,
    #[serde(default)]
    pub lb: Option<LbConfig>,
    pub members: Vec<MemberConfig>,
}

/// Which predictions a policy governs and what it allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    /// `container`, `host` or `filesystem`; absent: any.
    #[serde(default)]
    pub resource_kind: Option<String>,
    /// E.g. `memory_exhaustion`; absent: any.
    #[serde(default)]
    pub failure_type: Option<String>,
    /// Owner of the workload's resource set (or the host's `owner` label); absent: any.
    #[serde(default)]
    pub owner: Option<String>,
    /// Resource set name; absent: any.
    #[serde(default)]
    pub set: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    /// Starting decision threshold on P(failure within the model's horizon)…
    pub threshold: f64,
    /// …which adapts to misses and false positives within these bounds (absent: it stays
    /// at `threshold` on that side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_max: Option<f64>,
    /// Allowed actions in preference order (empty: the knowledge base's list).
    #[serde(default)]
    pub actions: Vec<ActionKind>,
    /// A memory resize adds at least this much…
    #[serde(default = "default_memory_step", with = "units::bytes")]
    pub memory_step: u64,
    /// …and at most raises the limit to this.
    #[serde(default = "default_memory_cap", with = "units::bytes")]
    pub memory_cap: u64,
    /// Predicted growth over the horizon is multiplied by this for the new limit.
    #[serde(default = "default_safety_factor")]
    pub safety_factor: f64,
    /// A CPU resize adds at least this many cores…
    #[serde(default = "default_cpu_step")]
    pub cpu_step: f64,
    /// …and at most raises the allowance to this many cores.
    #[serde(default = "default_cpu_cap")]
    pub cpu_cap: f64,
}

impl PolicyConfig {
    /// Lowest the adaptive threshold may go (`threshold` when not configured).
    pub fn threshold_min(&self) -> f64 {
        self.threshold_min.unwrap_or(self.threshold)
    }

    /// Highest the adaptive threshold may go (`threshold` when not configured).
    pub fn threshold_max(&self) -> f64 {
        self.threshold_max.unwrap_or(self.threshold)
    }
}

fn default_memory_step() -> u64 {
    64 << 20
}
fn default_memory_cap() -> u64 {
    8 << 30
}
fn default_safety_factor() -> f64 {
    1.5
}
fn default_cpu_step() -> f64 {
    0.5
}
fn default_cpu_cap() -> f64 {
    8.0
}

impl Default for RemediationConfig {
    fn default() -> Self {
        RemediationConfig {
            safety: SafetyConfig::default(),
            outcome: OutcomeConfig::default(),
            knowledge: BTreeMap::new(),
            tiers: Vec::new(),
            slas: Vec::new(),
            sets: Vec::new(),
            policies: Vec::new(),
            seed: 0,
            max_pending: 100,
        }
    }
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            max_concurrent: 2,
            max_concurrent_per_set: 1,
            cooldown: Duration::from_secs(600),
            halt_share: 0.3,
            halt_min_failing: 2,
            action_deadline: Duration::from_secs(120),
        }
    }
}

impl Default for OutcomeConfig {
    fn default() -> Self {
        OutcomeConfig { verify_after: Duration::from_secs(600), health_check: true, threshold_step: 0.02 }
    }
}

/// Why a `[remediation]` section is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("remediation.{0}")]
pub struct PolicyError(pub String);

fn unique<'a>(what: &str, names: impl IntoIterator<Item = &'a str>) -> Result<BTreeSet<&'a str>, PolicyError> {
    let mut seen = BTreeSet::new();
    for n in names {
        if n.trim().is_empty() {
            return Err(PolicyError(format!("{what}: a name is empty")));
        }
        if !seen.insert(n) {
            return Err(PolicyError(format!("{what}: name {n:?} is used twice")));
        }
    }
    Ok(seen)
}

impl RemediationConfig {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |m: String| Err(PolicyError(m));
        let s = &self.safety;
        if s.max_concurrent == 0 || s.max_concurrent_per_set == 0 {
            return bad("safety.max_concurrent and safety.max_concurrent_per_set must be at least 1".into());
        }
        if s.max_concurrent_per_set > s.max_concurrent {
            return bad(format!(
                "safety.max_concurrent_per_set ({}) must not exceed safety.max_concurrent ({})",
                s.max_concurrent_per_set, s.max_concurrent
            ));
        }
        if !(s.halt_share > 0.0 && s.halt_share <= 1.0) {
            return bad(format!("safety.halt_share must be in (0, 1] (got {})", s.halt_share));
        }
        if s.halt_min_failing == 0 {
            return bad("safety.halt_min_failing must be at least 1".into());
        }
        if s.action_deadline < Duration::from_secs(1) {
            return bad("safety.action_deadline must be at least 1s".into());
        }
        let o = &self.outcome;
        if o.verify_after < Duration::from_secs(1) {
            return bad("outcome.verify_after must be at least 1s".into());
        }
        if !(o.threshold_step > 0.0 && o.threshold_step <= 0.2) {
            return bad(format!("outcome.threshold_step must be in (0, 0.2] (got {})", o.threshold_step));
        }
        if self.max_pending == 0 {
            return bad("max_pending must be at least 1".into());
        }
        for (ft, actions) in &self.knowledge {
            if actions.is_empty() {
                return bad(format!("knowledge.{ft}: list at least one action (or leave the entry out)"));
            }
        }
        let tiers = unique("tiers", self.tiers.iter().map(|t| t.name.as_str()))?;
        for t in &self.tiers {
            if !(t.cost_per_hour.is_finite() && t.cost_per_hour >= 0.0) {
                return bad(format!("tiers.{}: cost_per_hour must be a number >= 0", t.name));
            }
            if !(t.performance.is_finite() && t.performance > 0.0) {
                return bad(format!("tiers.{}: performance must be a number > 0", t.name));
            }
        }
        let slas = unique("slas", self.slas.iter().map(|t| t.name.as_str()))?;
        for sla in &self.slas {
            if let Some(t) = sla.tiers.iter().find(|t| !tiers.contains(t.as_str())) {
                return bad(format!("slas.{}: unknown tier {t:?}", sla.name));
            }
        }
        let sets = unique("sets", self.sets.iter().map(|t| t.name.as_str()))?;
        let mut members = BTreeMap::new();
        for set in &self.sets {
            if set.members.is_empty() {
                return bad(format!("sets.{}: members is empty", set.name));
            }
            if let Some(sla) = &set.sla
                && !slas.contains(sla.as_str())
            {
                return bad(format!("sets.{}: unknown sla {sla:?}", set.name));
            }
            for m in &set.members {
                if m.host.trim().is_empty() || m.workload.trim().is_empty() {
                    return bad(format!("sets.{}: a member has an empty host or workload", set.name));
                }
                if let Some(other) = members.insert((m.host.as_str(), m.workload.as_str()), set.name.as_str()) {
                    return bad(format!(
                        "sets.{}: member {}/{} is already in set {other:?} (a workload belongs to one set)",
                        set.name, m.host, m.workload
                    ));
                }
                if m.standby && (set.lb.is_none() || m.server.is_none()) {
                    return bad(format!(
                        "sets.{}: standby {}/{} needs the set's lb and the member's server",
                        set.name, m.host, m.workload
                    ));
                }
            }
        }
        unique("policies", self.policies.iter().map(|p| p.name.as_str()))?;
        for p in &self.policies {
            let n = &p.name;
            if let Some(k) = &p.resource_kind
                && ResourceKind::parse(k).is_none()
            {
                return bad(format!("policies.{n}: unknown resource_kind {k:?} (container, host or filesystem)"));
            }
            if let Some(set) = &p.set
                && !sets.contains(set.as_str())
            {
                return bad(format!("policies.{n}: unknown set {set:?}"));
            }
            let in01 = |v: f64| v > 0.0 && v < 1.0;
            if !(in01(p.threshold_min()) && in01(p.threshold_max()) && in01(p.threshold)) {
                return bad(format!("policies.{n}: threshold, threshold_min and threshold_max must be in (0, 1)"));
            }
            if !(p.threshold_min() <= p.threshold && p.threshold <= p.threshold_max()) {
                return bad(format!(
                    "policies.{n}: threshold {} must lie within [threshold_min {}, threshold_max {}]",
                    p.threshold,
                    p.threshold_min(),
                    p.threshold_max()
                ));
            }
            if p.memory_step == 0 || p.memory_cap == 0 || p.memory_cap > augur_core::command::MAX_MEMORY_BYTES {
                return bad(format!("policies.{n}: memory_step and memory_cap must be above 0 and at most 16TiB"));
            }
            if !(p.safety_factor.is_finite() && p.safety_factor >= 1.0) {
                return bad(format!("policies.{n}: safety_factor must be at least 1"));
            }
            let cores_ok = |c: f64| c.is_finite() && c > 0.0 && c <= augur_core::command::MAX_CPU_CORES;
            if !(cores_ok(p.cpu_step) && cores_ok(p.cpu_cap)) {
                return bad(format!("policies.{n}: cpu_step and cpu_cap must be above 0 and at most 4096 cores"));
            }
            if p.mode != Mode::Off && p.failure_type.is_some() && self.candidates(p).is_empty() {
                return bad(format!(
                    "policies.{n}: no actions for failure type {:?}: list them in actions or in [remediation.knowledge]",
                    p.failure_type.as_deref().unwrap_or_default()
                ));
            }
        }
        Ok(())
    }

    /// The knowledge base: built-in entries replaced by `[remediation.knowledge]`.
    pub fn knowledge_for(&self, failure_type: &str) -> Vec<ActionKind> {
        self.knowledge
            .get(failure_type)
            .cloned()
            .or_else(|| default_knowledge().remove(failure_type))
            .unwrap_or_default()
    }

    /// A policy's candidate actions before the workload's own allowances: its `actions`,
    /// else the knowledge base's list for its failure type.
    pub fn candidates(&self, p: &PolicyConfig) -> Vec<ActionKind> {
        if !p.actions.is_empty() {
            return p.actions.clone();
        }
        p.failure_type.as_deref().map(|f| self.knowledge_for(f)).unwrap_or_default()
    }

    /// The first policy governing a prediction, if any.
    pub fn policy_for(&self, m: &Subject<'_>) -> Option<&PolicyConfig> {
        self.policies.iter().find(|p| {
            p.resource_kind.as_deref().is_none_or(|k| k == m.resource_kind.as_str())
                && p.failure_type.as_deref().is_none_or(|f| f == m.failure_type)
                && p.owner.as_deref().is_none_or(|o| o == m.owner)
                && p.set.as_deref().is_none_or(|s| Some(s) == m.set)
        })
    }

    /// The resource set holding `host`/`workload`, if any.
    pub fn set_of(&self, host: &str, workload: &str) -> Option<&ResourceSetConfig> {
        self.sets.iter().find(|s| s.members.iter().any(|m| m.host == host && m.workload == workload))
    }

    pub fn tier(&self, name: &str) -> Option<&TierConfig> {
        self.tiers.iter().find(|t| t.name == name)
    }

    pub fn sla(&self, name: &str) -> Option<&SlaConfig> {
        self.slas.iter().find(|t| t.name == name)
    }
}

/// What a prediction is about, for policy matching.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject<'a> {
    pub resource_kind: ResourceKind,
    pub failure_type: &'a str,
    pub owner: &'a str,
    pub set: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_without_bounds_keeps_its_threshold_fixed() {
        let p: PolicyConfig = toml::from_str(
            "name = \"m\"\nfailure_type = \"memory_exhaustion\"\nmode = \"dry_run\"\nthreshold = 0.86\n",
        )
        .expect("a minimal policy parses");
        assert_eq!((p.threshold_min(), p.threshold_max()), (0.86, 0.86));
        let q: PolicyConfig =
            toml::from_str("name = \"m\"\nthreshold = 0.86\nthreshold_min = 0.6\n").expect("one bound parses");
        assert_eq!((q.threshold_min(), q.threshold_max()), (0.6, 0.86));
    }

    fn policy(name: &str) -> PolicyConfig {
        PolicyConfig {
            name: name.into(),
            resource_kind: None,
            failure_type: Some("memory_exhaustion".into()),
            owner: None,
            set: None,
            mode: Mode::Auto,
            threshold: 0.8,
            threshold_min: Some(0.6),
            threshold_max: Some(0.95),
            actions: Vec::new(),
            memory_step: default_memory_step(),
            memory_cap: default_memory_cap(),
            safety_factor: default_safety_factor(),
            cpu_step: default_cpu_step(),
            cpu_cap: default_cpu_cap(),
        }
    }

    #[test]
    fn first_matching_policy_wins_and_absent_fields_match_anything() {
        let mut cfg = RemediationConfig {
            policies: vec![
                PolicyConfig { owner: Some("payments".into()), mode: Mode::Approve, ..policy("payments") },
                PolicyConfig { resource_kind: Some("container".into()), ..policy("containers") },
                PolicyConfig { failure_type: None, mode: Mode::DryRun, ..policy("catch-all") },
            ],
            ..RemediationConfig::default()
        };
        cfg.validate().expect("valid");
        let subj = |owner, ft| Subject { resource_kind: ResourceKind::Container, failure_type: ft, owner, set: None };
        let name = |s: &Subject<'_>| cfg.policy_for(s).map(|p| p.name.clone());
        assert_eq!(name(&subj("payments", "memory_exhaustion")).as_deref(), Some("payments"));
        assert_eq!(name(&subj("search", "memory_exhaustion")).as_deref(), Some("containers"));
        assert_eq!(name(&subj("search", "disk_full")).as_deref(), Some("catch-all"));
        let host =
            Subject { resource_kind: ResourceKind::Host, failure_type: "memory_exhaustion", owner: "", set: None };
        assert_eq!(name(&host).as_deref(), Some("catch-all"));
        cfg.policies.pop();
        let s = subj("search", "disk_full");
        assert_eq!(cfg.policy_for(&s), None, "no policy: nothing happens");
    }

    #[test]
    fn knowledge_base_defaults_and_overrides() {
        let mut cfg = RemediationConfig::default();
        assert_eq!(cfg.knowledge_for("memory_exhaustion")[0], ActionKind::ResizeMemory);
        assert!(cfg.knowledge_for("anomaly").is_empty(), "no automatic action for a bare anomaly");
        cfg.knowledge.insert("memory_exhaustion".into(), vec![ActionKind::Restart]);
        assert_eq!(cfg.knowledge_for("memory_exhaustion"), vec![ActionKind::Restart]);
        let p = PolicyConfig { actions: vec![ActionKind::PromoteStandby], ..policy("p") };
        assert_eq!(cfg.candidates(&p), vec![ActionKind::PromoteStandby], "the policy's list narrows");
    }

    #[test]
    fn invalid_sections_are_refused_with_the_reason() {
        let base = || RemediationConfig {
            tiers: vec![TierConfig { name: "spot".into(), cost_per_hour: 0.1, performance: 0.8 }],
            slas: vec![SlaConfig { name: "gold".into(), min_performance: 1.0, tiers: vec![] }],
            sets: vec![ResourceSetConfig {
                name: "web".into(),
                owner: "team".into(),
                sla: Some("gold".into()),
                stateless: true,
                lb: None,
                members: vec![MemberConfig { host: "a".into(), workload: "web".into(), server: None, standby: false }],
            }],
            policies: vec![policy("p")],
            ..RemediationConfig::default()
        };
        base().validate().expect("the base is valid");
        type Edit = fn(&mut RemediationConfig);
        let cases: &[(Edit, &str)] = &[
            (|c| c.safety.max_concurrent = 0, "must be at least 1"),
            (|c| c.safety.max_concurrent_per_set = 5, "must not exceed safety.max_concurrent"),
            (|c| c.safety.halt_share = 0.0, "halt_share must be in (0, 1]"),
            (|c| c.safety.halt_share = 1.5, "halt_share must be in (0, 1]"),
            (|c| c.policies[0].threshold = 0.5, "must lie within [threshold_min"),
            (|c| c.policies[0].threshold_max = Some(1.0), "must be in (0, 1)"),
            (|c| c.policies[0].resource_kind = Some("vm".into()), "unknown resource_kind"),
            (|c| c.policies[0].set = Some("nope".into()), "unknown set"),
            (|c| c.policies[0].safety_factor = 0.5, "safety_factor"),
            (|c| c.policies.push(policy("p")), "used twice"),
            (|c| c.policies[0].failure_type = Some("anomaly".into()), "no actions for failure type"),
            (|c| c.sets[0].members.clear(), "members is empty"),
            (|c| c.sets[0].sla = Some("silver".into()), "unknown sla"),
            (|c| c.slas[0].tiers = vec!["gpu".into()], "unknown tier"),
            (|c| c.tiers[0].performance = 0.0, "performance must be"),
            (|c| c.sets[0].members[0].standby = true, "needs the set's lb"),
            (
                |c| {
                    let dup = c.sets[0].clone();
                    c.sets.push(ResourceSetConfig { name: "web2".into(), ..dup });
                },
                "already in set",
            ),
            (|c| c.outcome.threshold_step = 0.5, "threshold_step"),
        ];
        for (edit, needle) in cases {
            let mut c = base();
            edit(&mut c);
            let e = c.validate().expect_err(needle).to_string();
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
            assert!(e.starts_with("remediation."), "{e:?} names the section");
        }
    }

    #[test]
    fn the_valid_fixture_parses_into_sets_tiers_and_policies() {
        let dir = augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
        let cfg = crate::config::AggregatorConfig::load(&dir.join("valid-remediation.toml")).expect("valid");
        let r = &cfg.remediation;
        assert_eq!((r.safety.max_concurrent, r.safety.halt_share), (3, 0.25));
        assert_eq!(r.safety.cooldown, Duration::from_secs(300));
        assert_eq!(r.knowledge_for("disk_full"), vec![ActionKind::Migrate]);
        assert_eq!(r.set_of("app2", "web").map(|s| s.name.as_str()), Some("web"));
        let subj = |owner| Subject {
            resource_kind: ResourceKind::Container,
            failure_type: "memory_exhaustion",
            owner,
            set: None,
        };
        assert_eq!(r.policy_for(&subj("storefront")).unwrap().mode, Mode::Approve);
        let p = r.policy_for(&subj("search")).unwrap();
        assert_eq!((p.name.as_str(), p.mode, p.memory_cap), ("containers-memory", Mode::Auto, 2 << 30));
        assert_eq!(r.candidates(p)[0], ActionKind::ResizeMemory, "the knowledge base fills an empty list");
        assert_eq!(RemediationConfig::default().policies.len(), 0, "no policy by default: nothing happens");
    }
}
