//! Adaptive decision thresholds, one per (resource kind, failure type, owner).
//!
//! A threshold starts at its policy's `threshold` and moves with observed outcomes: a
//! failure that came without a warning (a miss) lowers it by `outcome.threshold_step`; a
//! warning followed by no failure within its horizon while no action was taken (a false
//! positive) raises it by the same step. It never leaves the policy's
//! `[threshold_min, threshold_max]`. Warnings that were acted on teach nothing here (the
//! action may be why the failure did not come); they feed the bandit instead.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Format version of the persisted thresholds.
pub const FORMAT: u32 = 1;

/// Which threshold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ThresholdKey {
    pub resource_kind: String,
    pub failure_type: String,
    pub owner: String,
}

impl ThresholdKey {
    pub fn new(resource_kind: &str, failure_type: &str, owner: &str) -> Self {
        ThresholdKey { resource_kind: resource_kind.into(), failure_type: failure_type.into(), owner: owner.into() }
    }
}

/// What one outcome says about a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lesson {
    /// A failure came with no warning: warn earlier.
    Miss,
    /// A warning came true (or an action was taken): no change.
    Confirmed,
    /// A warning, no failure within its horizon, no action: warn later.
    FalsePositive,
}

/// One threshold's state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdState {
    pub value: f64,
    pub misses: u64,
    pub false_positives: u64,
    pub confirmed: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Persisted {
    format: u32,
    thresholds: Vec<(ThresholdKey, ThresholdState)>,
}

/// Why persisted thresholds cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ThresholdError {
    #[error("threshold state: {0}")]
    Decode(String),
    #[error("threshold state format {found} is not supported (this build reads {FORMAT})")]
    Format { found: u32 },
}

/// Bounds a policy sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub start: f64,
    pub min: f64,
    pub max: f64,
}

/// All adaptive thresholds.
#[derive(Debug, Clone, Default)]
pub struct Thresholds {
    map: BTreeMap<ThresholdKey, ThresholdState>,
    step: f64,
}

impl Thresholds {
    pub fn new(step: f64) -> Self {
        Thresholds { map: BTreeMap::new(), step }
    }

    pub fn from_bytes(bytes: &[u8], step: f64) -> Result<Self, ThresholdError> {
        let p: Persisted = serde_json::from_slice(bytes).map_err(|e| ThresholdError::Decode(e.to_string()))?;
        if p.format != FORMAT {
            return Err(ThresholdError::Format { found: p.format });
        }
        Ok(Thresholds { map: p.thresholds.into_iter().collect(), step })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let p = Persisted { format: FORMAT, thresholds: self.map.iter().map(|(k, v)| (k.clone(), *v)).collect() };
        serde_json::to_vec(&p).expect("plain data serializes")
    }

    /// The current threshold (the policy's start until outcomes move it), within bounds
    /// (bounds may have changed since it was learned).
    pub fn current(&self, key: &ThresholdKey, b: Bounds) -> f64 {
        self.map.get(key).map_or(b.start, |s| s.value).clamp(b.min, b.max)
    }

    pub fn state(&self, key: &ThresholdKey) -> Option<ThresholdState> {
        self.map.get(key).copied()
    }

    /// Applies an outcome; returns the new threshold.
    pub fn learn(&mut self, key: &ThresholdKey, b: Bounds, lesson: Lesson) -> f64 {
        let start = self.current(key, b);
        let s = self.map.entry(key.clone()).or_insert(ThresholdState {
            value: start,
            misses: 0,
            false_positives: 0,
            confirmed: 0,
        });
        match lesson {
            Lesson::Miss => {
                s.misses += 1;
                s.value -= self.step;
            }
            Lesson::FalsePositive => {
                s.false_positives += 1;
                s.value += self.step;
            }
            Lesson::Confirmed => s.confirmed += 1,
        }
        s.value = s.value.clamp(b.min, b.max);
        s.value
    }

    /// Every threshold learned so far.
    pub fn all(&self) -> impl Iterator<Item = (&ThresholdKey, &ThresholdState)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds { start: 0.8, min: 0.6, max: 0.9 };

    #[test]
    fn misses_lower_false_positives_raise_within_bounds() {
        let mut t = Thresholds::new(0.05);
        let k = ThresholdKey::new("container", "memory_exhaustion", "team-a");
        let other = ThresholdKey::new("container", "memory_exhaustion", "team-b");
        assert_eq!(t.current(&k, B), 0.8);
        let seq = [
            (Lesson::Miss, 0.75),
            (Lesson::Miss, 0.70),
            (Lesson::Confirmed, 0.70),
            (Lesson::FalsePositive, 0.75),
            (Lesson::Miss, 0.70),
            (Lesson::Miss, 0.65),
            (Lesson::Miss, 0.60),
            (Lesson::Miss, 0.60),
        ];
        for (lesson, want) in seq {
            let got = t.learn(&k, B, lesson);
            assert!((got - want).abs() < 1e-9, "{lesson:?}: {got} want {want}");
        }
        for _ in 0..20 {
            t.learn(&k, B, Lesson::FalsePositive);
        }
        assert_eq!(t.current(&k, B), 0.9, "never above the maximum");
        assert_eq!(t.current(&other, B), 0.8, "owners are separate");
        let s = t.state(&k).unwrap();
        assert_eq!((s.misses, s.false_positives, s.confirmed), (6, 21, 1));
        // Narrower bounds in a new config clamp a learned value.
        assert_eq!(t.current(&k, Bounds { start: 0.7, min: 0.6, max: 0.85 }), 0.85);
    }

    #[test]
    fn survives_a_restart_and_refuses_garbage() {
        let mut t = Thresholds::new(0.02);
        let k = ThresholdKey::new("container", "memory_exhaustion", "");
        t.learn(&k, B, Lesson::Miss);
        let back = Thresholds::from_bytes(&t.to_bytes(), 0.02).expect("loads");
        assert!((back.current(&k, B) - 0.78).abs() < 1e-9);
        assert!(Thresholds::from_bytes(b"[]", 0.02).is_err());
        assert!(matches!(
            Thresholds::from_bytes(br#"{"format":2,"thresholds":[]}"#, 0.02),
            Err(ThresholdError::Format { found: 2 })
        ));
    }
}
