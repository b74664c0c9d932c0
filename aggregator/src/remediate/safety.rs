//! Safety limits for autonomous action (DESIGN.md, "Safety rules"): an empty or unknown
//! target set means nothing is done; at most N actions in flight fleet-wide and per
//! resource set; a cooldown per resource; automation halts while more than a configured
//! share of the known resources is predicted failing at once.
//!
//! [`SafetyGate`] is pure bookkeeping (no clock, no I/O): the decision engine asks it
//! before anything is sent ([`SafetyGate::begin`] admits and records in one step, so two
//! decisions cannot both take the last slot) and tells it when an action ends.

use std::collections::HashMap;

use super::policy::SafetyConfig;

/// Why an action may not start now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the plan has no targets (an empty target set means do nothing)")]
    EmptyTargets,
    #[error("target {0} is not a declared workload of a connected host")]
    UnknownTarget(String),
    #[error("automation is halted: {failing} of {known} resources are predicted failing")]
    Halted { failing: usize, known: usize },
    #[error("{in_flight} actions in flight fleet-wide (limit {max})")]
    FleetLimit { in_flight: usize, max: usize },
    #[error("{in_flight} actions in flight in resource set {set} (limit {max})")]
    SetLimit { set: String, in_flight: usize, max: usize },
    #[error("{resource} is in cooldown for another {remaining_ms} ms")]
    Cooldown { resource: String, remaining_ms: i64 },
    #[error("an action on {resource} is already in flight")]
    Busy { resource: String },
}

impl Refusal {
    /// A short stable name (for audit records and metrics).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::EmptyTargets => "empty_targets",
            Refusal::UnknownTarget(_) => "unknown_target",
            Refusal::Halted { .. } => "halted",
            Refusal::FleetLimit { .. } => "fleet_limit",
            Refusal::SetLimit { .. } => "set_limit",
            Refusal::Cooldown { .. } => "cooldown",
            Refusal::Busy { .. } => "busy",
        }
    }
}

/// A change of the halt state, to be audited.
#[derive(Debug, Clone, PartialEq)]
pub enum HaltChange {
    Halted { failing: usize, known: usize, share: f64 },
    Resumed { failing: usize, known: usize, share: f64 },
}

#[derive(Debug, Clone)]
struct InFlight {
    resources: Vec<String>,
    set: Option<String>,
}

/// Admission control for actions.
#[derive(Debug)]
pub struct SafetyGate {
    cfg: SafetyConfig,
    in_flight: HashMap<String, InFlight>,
    /// Resource (`host/workload`) → when its last action ended (or started, while in flight).
    last_action_ms: HashMap<String, i64>,
    /// (failing, known) while halted.
    halted: Option<(usize, usize)>,
}

/// The key safety limits use for a (host, workload).
pub fn resource_key(host: &str, workload: &str) -> String {
    format!("{host}/{workload}")
}

impl SafetyGate {
    pub fn new(cfg: SafetyConfig) -> Self {
        SafetyGate { cfg, in_flight: HashMap::new(), last_action_ms: HashMap::new(), halted: None }
    }

    pub fn config(&self) -> &SafetyConfig {
        &self.cfg
    }

    /// Actions in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether automation is halted, with (failing, known) when it is.
    pub fn halted(&self) -> Option<(usize, usize)> {
        self.halted
    }

    /// Checks whether an action on `targets` (host, workload) in resource set `set` may
    /// start at `now_ms`; `known` says whether a target is a declared workload of a
    /// connected host.
    pub fn admit(
        &self,
        targets: &[(String, String)],
        set: Option<&str>,
        known: &dyn Fn(&str, &str) -> bool,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        if targets.is_empty() {
            return Err(Refusal::EmptyTargets);
        }
        if let Some((h, w)) = targets.iter().find(|(h, w)| h.trim().is_empty() || w.trim().is_empty() || !known(h, w)) {
            return Err(Refusal::UnknownTarget(resource_key(h, w)));
        }
        if let Some((failing, known)) = self.halted {
            return Err(Refusal::Halted { failing, known });
        }
        if self.in_flight.len() >= self.cfg.max_concurrent {
            return Err(Refusal::FleetLimit { in_flight: self.in_flight.len(), max: self.cfg.max_concurrent });
        }
        if let Some(set) = set {
            let n = self.in_flight.values().filter(|f| f.set.as_deref() == Some(set)).count();
            if n >= self.cfg.max_concurrent_per_set {
                return Err(Refusal::SetLimit {
                    set: set.to_owned(),
                    in_flight: n,
                    max: self.cfg.max_concurrent_per_set,
                });
            }
        }
        let cooldown_ms = self.cfg.cooldown.as_millis() as i64;
        for (h, w) in targets {
            let key = resource_key(h, w);
            if self.in_flight.values().any(|f| f.resources.contains(&key)) {
                return Err(Refusal::Busy { resource: key });
            }
            if let Some(last) = self.last_action_ms.get(&key) {
                let remaining_ms = last + cooldown_ms - now_ms;
                if remaining_ms > 0 {
                    return Err(Refusal::Cooldown { resource: key, remaining_ms });
                }
            }
        }
        Ok(())
    }

    /// [`admit`](Self::admit) and, if admitted, record the action as in flight.
    pub fn begin(
        &mut self,
        action_id: &str,
        targets: &[(String, String)],
        set: Option<&str>,
        known: &dyn Fn(&str, &str) -> bool,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        self.admit(targets, set, known, now_ms)?;
        let resources: Vec<String> = targets.iter().map(|(h, w)| resource_key(h, w)).collect();
        for r in &resources {
            self.last_action_ms.insert(r.clone(), now_ms);
        }
        self.in_flight.insert(action_id.to_owned(), InFlight { resources, set: set.map(str::to_owned) });
        Ok(())
    }

    /// The action ended (whatever its outcome): its slot frees and its resources' cooldown
    /// runs from now.
    pub fn end(&mut self, action_id: &str, now_ms: i64) {
        if let Some(f) = self.in_flight.remove(action_id) {
            for r in f.resources {
                self.last_action_ms.insert(r, now_ms);
            }
        }
    }

    /// Updates the halt state from how many of the `known` resources are predicted
    /// failing; returns the change, if any.
    pub fn observe_fleet(&mut self, failing: usize, known: usize) -> Option<HaltChange> {
        let share = if known == 0 { 0.0 } else { failing as f64 / known as f64 };
        let unhealthy = known > 0 && failing >= self.cfg.halt_min_failing && share > self.cfg.halt_share;
        match (self.halted.is_some(), unhealthy) {
            (false, true) => {
                self.halted = Some((failing, known));
                Some(HaltChange::Halted { failing, known, share })
            }
            (true, false) => {
                self.halted = None;
                Some(HaltChange::Resumed { failing, known, share })
            }
            (true, true) => {
                self.halted = Some((failing, known));
                None
            }
            (false, false) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> SafetyConfig {
        SafetyConfig {
            max_concurrent: 3,
            max_concurrent_per_set: 2,
            cooldown: Duration::from_secs(60),
            halt_share: 0.3,
            halt_min_failing: 2,
            action_deadline: Duration::from_secs(30),
        }
    }

    fn t(h: &str, w: &str) -> Vec<(String, String)> {
        vec![(h.into(), w.into())]
    }

    fn all(_: &str, _: &str) -> bool {
        true
    }

    #[test]
    fn table_of_refusals() {
        let known = |h: &str, _: &str| h != "ghost";
        let mut g = SafetyGate::new(cfg());
        g.begin("a1", &t("h1", "web"), Some("web"), &known, 0).unwrap();
        g.begin("a2", &t("h2", "web"), Some("web"), &known, 0).unwrap();
        type Case<'a> = (Vec<(String, String)>, Option<&'a str>, i64, Result<(), &'a str>);
        let cases: Vec<Case<'_>> = vec![
            (vec![], None, 0, Err("empty_targets")),
            (t("", "web"), None, 0, Err("unknown_target")),
            (t("ghost", "web"), None, 0, Err("unknown_target")),
            (t("h3", "web"), Some("web"), 0, Err("set_limit")),
            (t("h1", "web"), None, 0, Err("busy")),
            (t("h3", "db"), Some("db"), 0, Ok(())),
        ];
        for (targets, set, now, want) in cases {
            let got = g.admit(&targets, set, &known, now).map_err(|r| r.code());
            assert_eq!(got, want, "{targets:?} in {set:?}");
        }
        g.begin("a3", &t("h3", "db"), Some("db"), &known, 0).unwrap();
        assert_eq!(g.admit(&t("h4", "x"), None, &known, 0).unwrap_err().code(), "fleet_limit");
        g.end("a1", 10_000);
        assert_eq!(g.in_flight(), 2);
        let e = g.admit(&t("h1", "web"), Some("web"), &known, 30_000).unwrap_err();
        assert_eq!(e, Refusal::Cooldown { resource: "h1/web".into(), remaining_ms: 40_000 });
        g.admit(&t("h1", "web"), Some("web"), &known, 70_000).expect("cooldown over, a slot is free");
    }

    #[test]
    fn halt_above_the_share_with_enough_failing_and_resume_below() {
        let mut g = SafetyGate::new(cfg());
        assert_eq!(g.observe_fleet(1, 2), None, "one failing resource is not a halt, even at 50%");
        assert_eq!(g.observe_fleet(3, 10), None, "30% is not more than 30%");
        assert_eq!(g.observe_fleet(0, 0), None, "an empty fleet is not unhealthy");
        assert!(matches!(g.observe_fleet(4, 10), Some(HaltChange::Halted { failing: 4, known: 10, .. })));
        assert_eq!(g.observe_fleet(5, 10), None, "still halted: no new event");
        assert_eq!(g.admit(&t("h", "w"), None, &all, 0).unwrap_err(), Refusal::Halted { failing: 5, known: 10 });
        assert!(matches!(g.observe_fleet(2, 10), Some(HaltChange::Resumed { .. })));
        g.admit(&t("h", "w"), None, &all, 0).expect("resumed");
    }

    /// Property: whatever the sequence of begins, ends and time steps, the fleet-wide and
    /// per-set limits hold, no resource is acted on twice at once, and no action starts on a
    /// resource within its cooldown.
    #[test]
    fn limits_hold_under_random_sequences() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for _round in 0..200 {
            let c = cfg();
            let mut g = SafetyGate::new(c.clone());
            let mut live: Vec<(String, String, String)> = Vec::new(); // (id, resource, set)
            let mut ended_at: HashMap<String, i64> = HashMap::new();
            let mut now = 0i64;
            for step in 0..60 {
                now += next(20_000) as i64;
                if next(3) == 0 && !live.is_empty() {
                    let (id, r, _) = live.remove(next(live.len() as u64) as usize);
                    g.end(&id, now);
                    ended_at.insert(r, now);
                    continue;
                }
                let host = format!("h{}", next(6));
                let set = format!("s{}", next(2));
                let id = format!("a{step}");
                let r = resource_key(&host, "w");
                if g.begin(&id, &[(host, "w".into())], Some(&set), &all, now).is_ok() {
                    assert!(!live.iter().any(|(_, lr, _)| *lr == r), "two actions on {r} at once");
                    if let Some(e) = ended_at.get(&r) {
                        assert!(now - e >= c.cooldown.as_millis() as i64, "{r} acted on within its cooldown");
                    }
                    live.push((id, r, set));
                }
                assert!(live.len() <= c.max_concurrent);
                for s in ["s0", "s1"] {
                    assert!(live.iter().filter(|(_, _, ls)| ls == s).count() <= c.max_concurrent_per_set);
                }
                assert_eq!(g.in_flight(), live.len());
            }
        }
    }
}
