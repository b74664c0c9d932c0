//! Outcome tracking: what became of each warning and each action.
//!
//! A warning opens when a prediction crosses its policy threshold and lasts for the
//! prediction's horizon. A failure (for `memory_exhaustion`: the resource's OOM-kill
//! counter moved, seen through [`failure_signal`]) inside an open warning confirms it (a
//! true positive); a failure with no open warning is a miss. A warning that expires
//! without a failure is a false positive when nothing was done about it, and "averted"
//! when an action was taken (the action may be why: it teaches the bandit, not the
//! threshold, and counts in neither precision nor recall).
//!
//! Each action is verified at its prediction's horizon (or `outcome.verify_after`, if
//! sooner): it succeeded when no failure of the resource was seen since it started (and,
//! when configured, the workload's health check passes). [`Tracker`] is pure bookkeeping;
//! the decision engine feeds it observations and acts on what it returns.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::policy::ActionKind;
use super::thresholds::{Bounds, Lesson, ThresholdKey};

/// The feature that shows a failure of this type happened (a counter's rate over the
/// shortest window), if augur can observe the failure directly.
pub fn failure_signal(failure_type: &str) -> Option<&'static str> {
    match failure_type {
        "memory_exhaustion" => Some("oom_kill_rate_30s_mean"),
        _ => None,
    }
}

/// Live prediction quality of one failure type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub failure_type: String,
    pub warnings: u64,
    pub true_positives: u64,
    pub false_positives: u64,
    pub misses: u64,
    /// Warnings acted on and followed by no failure.
    pub averted: u64,
    /// TP / (TP + FP); NaN before any settled warning.
    pub precision: f64,
    /// TP / (TP + misses); NaN before any failure.
    pub recall: f64,
    pub actions_verified: u64,
    pub actions_succeeded: u64,
}

impl Quality {
    fn finish(mut self) -> Self {
        let r = |a: u64, b: u64| if a + b == 0 { f64::NAN } else { a as f64 / (a + b) as f64 };
        self.precision = r(self.true_positives, self.false_positives);
        self.recall = r(self.true_positives, self.misses);
        self
    }
}

/// Where a threshold lesson applies.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdRef {
    pub key: ThresholdKey,
    pub bounds: Bounds,
}

#[derive(Debug, Clone)]
struct Warning {
    until_ms: i64,
    acted: bool,
    failed: bool,
    threshold: ThresholdRef,
}

/// An action waiting for verification.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingVerify {
    pub action_id: String,
    pub resource: String,
    pub host: String,
    pub workload: String,
    pub failure_type: String,
    pub action: ActionKind,
    pub started_ms: i64,
    pub verify_at_ms: i64,
    /// Failures of the resource counted when the action started.
    pub failures_at_start: u64,
}

/// A verified action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub action_id: String,
    pub resource: String,
    pub failure_type: String,
    pub action: ActionKind,
    pub failures_since: u64,
    /// `None` when no health check ran.
    pub healthy: Option<bool>,
    pub success: bool,
}

/// Warnings, failures and actions awaiting verification.
#[derive(Debug, Default)]
pub struct Tracker {
    warnings: HashMap<(String, String), Warning>,
    /// (resource, failure type) → failures seen.
    failures: HashMap<(String, String), u64>,
    /// Last value of the failure signal, for edge detection.
    signal_high: HashMap<(String, String), bool>,
    actions: HashMap<String, PendingVerify>,
    quality: BTreeMap<String, Quality>,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    fn q(&mut self, failure_type: &str) -> &mut Quality {
        self.quality
            .entry(failure_type.to_owned())
            .or_insert_with(|| Quality { failure_type: failure_type.to_owned(), ..Quality::default() })
    }

    /// Whether a warning is open for the resource.
    pub fn warned(&self, resource: &str, failure_type: &str) -> bool {
        self.warnings.contains_key(&(resource.to_owned(), failure_type.to_owned()))
    }

    /// A prediction crossed its threshold: opens a warning until `now + horizon` (an open
    /// one is extended).
    pub fn warn(&mut self, resource: &str, failure_type: &str, now_ms: i64, horizon_ms: i64, threshold: ThresholdRef) {
        let key = (resource.to_owned(), failure_type.to_owned());
        let until_ms = now_ms + horizon_ms.max(1000);
        if let Some(w) = self.warnings.get_mut(&key) {
            w.until_ms = w.until_ms.max(until_ms);
            return;
        }
        self.warnings.insert(key, Warning { until_ms, acted: false, failed: false, threshold });
        self.q(failure_type).warnings += 1;
    }

    /// An action was taken on the resource's open warning.
    pub fn acted(&mut self, resource: &str, failure_type: &str) {
        if let Some(w) = self.warnings.get_mut(&(resource.to_owned(), failure_type.to_owned())) {
            w.acted = true;
        }
    }

    /// The failure signal's current value for a resource (NaN: unknown). A rise from zero
    /// is one failure; returns the threshold lesson it teaches, if any.
    pub fn observe_signal(
        &mut self,
        resource: &str,
        failure_type: &str,
        value: f64,
        now_ms: i64,
        threshold_if_missed: Option<ThresholdRef>,
    ) -> Option<(ThresholdRef, Lesson)> {
        if value.is_nan() {
            return None;
        }
        let key = (resource.to_owned(), failure_type.to_owned());
        let high = value > 0.0;
        let was = self.signal_high.insert(key.clone(), high).unwrap_or(false);
        if !high || was {
            return None;
        }
        self.failure(resource, failure_type, now_ms, threshold_if_missed)
    }

    /// A failure of the resource happened at `now_ms`.
    pub fn failure(
        &mut self,
        resource: &str,
        failure_type: &str,
        now_ms: i64,
        threshold_if_missed: Option<ThresholdRef>,
    ) -> Option<(ThresholdRef, Lesson)> {
        let key = (resource.to_owned(), failure_type.to_owned());
        *self.failures.entry(key.clone()).or_default() += 1;
        match self.warnings.get_mut(&key) {
            Some(w) if now_ms <= w.until_ms => {
                if !w.failed {
                    w.failed = true;
                    let t = w.threshold.clone();
                    self.q(failure_type).true_positives += 1;
                    return Some((t, Lesson::Confirmed));
                }
                None
            }
            _ => {
                self.q(failure_type).misses += 1;
                threshold_if_missed.map(|t| (t, Lesson::Miss))
            }
        }
    }

    /// Failures of a resource seen so far.
    pub fn failures(&self, resource: &str, failure_type: &str) -> u64 {
        self.failures.get(&(resource.to_owned(), failure_type.to_owned())).copied().unwrap_or(0)
    }

    /// Closes warnings whose horizon passed; returns the threshold lessons (false
    /// positives).
    pub fn expire(&mut self, now_ms: i64) -> Vec<(ThresholdRef, Lesson)> {
        let done: Vec<(String, String)> =
            self.warnings.iter().filter(|(_, w)| now_ms > w.until_ms).map(|(k, _)| k.clone()).collect();
        let mut lessons = Vec::new();
        for key in done {
            let w = self.warnings.remove(&key).expect("listed above");
            if w.failed {
                continue;
            }
            if w.acted {
                self.q(&key.1).averted += 1;
            } else {
                self.q(&key.1).false_positives += 1;
                lessons.push((w.threshold, Lesson::FalsePositive));
            }
        }
        lessons
    }

    /// Schedules an action's verification.
    pub fn track_action(&mut self, mut p: PendingVerify) {
        p.failures_at_start = self.failures(&p.resource, &p.failure_type);
        self.actions.insert(p.action_id.clone(), p);
    }

    /// Actions whose verification is due, removed from the schedule.
    pub fn due(&mut self, now_ms: i64) -> Vec<PendingVerify> {
        let ids: Vec<String> =
            self.actions.values().filter(|p| now_ms >= p.verify_at_ms).map(|p| p.action_id.clone()).collect();
        let mut out: Vec<PendingVerify> = ids.iter().filter_map(|id| self.actions.remove(id)).collect();
        out.sort_by_key(|p| p.verify_at_ms);
        out
    }

    /// Actions still awaiting verification.
    pub fn awaiting(&self) -> usize {
        self.actions.len()
    }

    /// The verdict on a due action, given its health check result (`None`: not checked).
    pub fn verdict(&mut self, p: &PendingVerify, healthy: Option<bool>) -> Verdict {
        let failures_since = self.failures(&p.resource, &p.failure_type).saturating_sub(p.failures_at_start);
        let success = failures_since == 0 && healthy != Some(false);
        let q = self.q(&p.failure_type);
        q.actions_verified += 1;
        if success {
            q.actions_succeeded += 1;
        }
        Verdict {
            action_id: p.action_id.clone(),
            resource: p.resource.clone(),
            failure_type: p.failure_type.clone(),
            action: p.action,
            failures_since,
            healthy,
            success,
        }
    }

    /// Precision and recall per failure type.
    pub fn quality(&self) -> Vec<Quality> {
        self.quality.values().cloned().map(Quality::finish).collect()
    }
}

/// Prometheus text for the live quality figures (appended to `/metrics`).
pub fn render_metrics(quality: &[Quality], out: &mut String) {
    use std::fmt::Write as _;
    type Gauge = (&'static str, &'static str, fn(&Quality) -> f64);
    let gauges: [Gauge; 7] = [
        ("augur_prediction_precision", "Live precision of warnings (TP / (TP + FP)) per failure type", |q| q.precision),
        ("augur_prediction_recall", "Live recall (TP / (TP + misses)) per failure type", |q| q.recall),
        ("augur_prediction_warnings_total", "Warnings raised above the policy threshold", |q| q.warnings as f64),
        ("augur_prediction_misses_total", "Failures that came without a warning", |q| q.misses as f64),
        ("augur_prediction_false_positives_total", "Warnings not followed by a failure, no action taken", |q| {
            q.false_positives as f64
        }),
        ("augur_remediation_verified_total", "Actions verified at their horizon", |q| q.actions_verified as f64),
        ("augur_remediation_succeeded_total", "Actions verified successful", |q| q.actions_succeeded as f64),
    ];
    for (name, help, get) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for q in quality {
            let v = get(q);
            let v = if v.is_nan() { "NaN".to_owned() } else { format!("{v}") };
            let _ = writeln!(out, "{name}{{failure_type=\"{}\"}} {v}", q.failure_type);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tref() -> ThresholdRef {
        ThresholdRef {
            key: ThresholdKey::new("container", "memory_exhaustion", ""),
            bounds: Bounds { start: 0.8, min: 0.5, max: 0.9 },
        }
    }

    const FT: &str = "memory_exhaustion";

    #[test]
    fn warnings_become_true_positives_false_positives_misses_or_averted() {
        let mut t = Tracker::new();
        // a: warned, then OOM-killed within the horizon: TP.
        t.warn("h/a", FT, 0, 120_000, tref());
        assert!(t.observe_signal("h/a", FT, 0.0, 1_000, Some(tref())).is_none());
        let l = t.observe_signal("h/a", FT, 0.03, 60_000, Some(tref())).unwrap();
        assert_eq!(l.1, Lesson::Confirmed);
        assert!(t.observe_signal("h/a", FT, 0.03, 61_000, Some(tref())).is_none(), "one kill, one failure");
        // b: warned, nothing happened, nothing done: FP.
        t.warn("h/b", FT, 0, 120_000, tref());
        // c: warned, acted, nothing happened: averted.
        t.warn("h/c", FT, 0, 120_000, tref());
        t.acted("h/c", FT);
        // d: killed without warning: miss.
        let l = t.failure("h/d", FT, 5_000, Some(tref())).unwrap();
        assert_eq!(l.1, Lesson::Miss);
        assert!(t.expire(100_000).is_empty(), "horizons not over yet");
        let lessons = t.expire(121_000);
        assert_eq!(lessons.len(), 1);
        assert_eq!(lessons[0].1, Lesson::FalsePositive);
        // A kill after the horizon is a miss, not a late confirmation.
        t.signal_high.clear();
        assert_eq!(t.observe_signal("h/a", FT, 0.5, 200_000, Some(tref())).unwrap().1, Lesson::Miss);
        let q = &t.quality()[0];
        assert_eq!((q.warnings, q.true_positives, q.false_positives, q.averted, q.misses), (3, 1, 1, 1, 2));
        assert!((q.precision - 0.5).abs() < 1e-9);
        assert!((q.recall - 1.0 / 3.0).abs() < 1e-9);
        let mut m = String::new();
        render_metrics(&t.quality(), &mut m);
        assert!(m.contains("augur_prediction_precision{failure_type=\"memory_exhaustion\"} 0.5"), "{m}");
    }

    #[test]
    fn actions_are_verified_at_their_time_against_failures_since_they_started() {
        let mut t = Tracker::new();
        t.failure("h/a", FT, 0, None);
        let pv = |id: &str, res: &str, at| PendingVerify {
            action_id: id.into(),
            resource: res.into(),
            host: "h".into(),
            workload: "w".into(),
            failure_type: FT.into(),
            action: ActionKind::ResizeMemory,
            started_ms: 1_000,
            verify_at_ms: at,
            failures_at_start: 0,
        };
        t.track_action(pv("ok", "h/a", 60_000));
        t.track_action(pv("bad", "h/b", 30_000));
        t.track_action(pv("sick", "h/c", 30_000));
        t.failure("h/b", FT, 10_000, None);
        assert!(t.due(29_999).is_empty());
        let due = t.due(30_000);
        assert_eq!(due.len(), 2);
        for p in &due {
            let v = t.verdict(p, if p.action_id == "sick" { Some(false) } else { None });
            assert!(!v.success, "{v:?}");
        }
        let ok = t.due(60_000);
        let v = t.verdict(&ok[0], Some(true));
        assert!(v.success, "the failure before the action does not count: {v:?}");
        assert_eq!(t.awaiting(), 0);
        let q = &t.quality()[0];
        assert_eq!((q.actions_verified, q.actions_succeeded), (3, 1));
    }
}
