//! The action bandit: Thompson sampling over Beta posteriors, one per (failure type,
//! action), learning which remediation works from verified outcomes.
//!
//! Each arm starts from a Beta prior (the knowledge base's first choice gets one
//! pseudo-success, Beta(2, 1), the others Beta(1, 1)); a verified success adds one to α,
//! a verified failure one to β. To choose, every candidate draws θ ~ Beta(α, β) and the
//! largest draw wins, so an action that keeps failing is tried less and less while an
//! untried one still gets its chance. The sampler is a seeded SplitMix64 (deterministic
//! in tests). Posteriors serialize to JSON for the store's model-state area.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::policy::ActionKind;

/// Format version of the persisted posteriors.
pub const FORMAT: u32 = 1;

/// SplitMix64: small, fast, good enough for sampling (not for secrets).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Gamma(shape, 1) by Marsaglia and Tsang (shape < 1 boosted).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = self.uniform();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// Beta(a, b).
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        x / (x + y)
    }
}

/// Verified outcomes of one arm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub successes: u64,
    pub failures: u64,
}

/// One candidate's part in a choice (recorded in the decision's audit record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmScore {
    pub action: ActionKind,
    pub alpha: f64,
    pub beta: f64,
    /// Posterior mean α / (α + β).
    pub mean: f64,
    /// This choice's draw θ ~ Beta(α, β).
    pub sample: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Persisted {
    format: u32,
    /// failure type → action → counts.
    arms: BTreeMap<String, BTreeMap<ActionKind, Counts>>,
}

/// Thompson-sampling bandit over (failure type, action).
#[derive(Debug, Clone)]
pub struct Bandit {
    arms: BTreeMap<String, BTreeMap<ActionKind, Counts>>,
    rng: Rng,
}

/// Why persisted posteriors cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BanditError {
    #[error("bandit state: {0}")]
    Decode(String),
    #[error("bandit state format {found} is not supported (this build reads {FORMAT})")]
    Format { found: u32 },
}

impl Bandit {
    pub fn new(seed: u64) -> Self {
        Bandit { arms: BTreeMap::new(), rng: Rng::seeded(seed) }
    }

    /// Restores posteriors saved by [`Bandit::to_bytes`].
    pub fn from_bytes(bytes: &[u8], seed: u64) -> Result<Self, BanditError> {
        let p: Persisted = serde_json::from_slice(bytes).map_err(|e| BanditError::Decode(e.to_string()))?;
        if p.format != FORMAT {
            return Err(BanditError::Format { found: p.format });
        }
        Ok(Bandit { arms: p.arms, rng: Rng::seeded(seed) })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&Persisted { format: FORMAT, arms: self.arms.clone() }).expect("plain data serializes")
    }

    /// Verified outcomes so far.
    pub fn counts(&self, failure_type: &str, action: ActionKind) -> Counts {
        self.arms.get(failure_type).and_then(|a| a.get(&action)).copied().unwrap_or_default()
    }

    /// Posterior parameters of an arm; `rank` is the action's place in the candidate list.
    pub fn posterior(&self, failure_type: &str, action: ActionKind, rank: usize) -> (f64, f64) {
        let c = self.counts(failure_type, action);
        let prior_alpha = if rank == 0 { 2.0 } else { 1.0 };
        (prior_alpha + c.successes as f64, 1.0 + c.failures as f64)
    }

    /// Draws for every candidate (in preference order) and returns the winner's index with
    /// every candidate's score; `None` for no candidates.
    pub fn choose(&mut self, failure_type: &str, candidates: &[ActionKind]) -> Option<(usize, Vec<ArmScore>)> {
        if candidates.is_empty() {
            return None;
        }
        let scores: Vec<ArmScore> = candidates
            .iter()
            .enumerate()
            .map(|(rank, &action)| {
                let (alpha, beta) = self.posterior(failure_type, action, rank);
                let sample = self.rng.beta(alpha, beta);
                ArmScore { action, alpha, beta, mean: alpha / (alpha + beta), sample }
            })
            .collect();
        let best = scores
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.sample.total_cmp(&b.1.sample).then(b.0.cmp(&a.0)))
            .map(|(i, _)| i)?;
        Some((best, scores))
    }

    /// Records a verified outcome.
    pub fn update(&mut self, failure_type: &str, action: ActionKind, success: bool) {
        let c = self.arms.entry(failure_type.to_owned()).or_default().entry(action).or_default();
        if success {
            c.successes += 1;
        } else {
            c.failures += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_draws_have_the_right_mean() {
        let mut r = Rng::seeded(7);
        for (a, b) in [(1.0, 1.0), (2.0, 1.0), (10.0, 3.0), (0.5, 0.5), (50.0, 50.0)] {
            let n = 20_000;
            let mean = (0..n).map(|_| r.beta(a, b)).sum::<f64>() / n as f64;
            let want = a / (a + b);
            assert!((mean - want).abs() < 0.01, "Beta({a},{b}): mean {mean}, want {want}");
        }
    }

    #[test]
    fn same_seed_same_choices() {
        let cands = [ActionKind::ResizeMemory, ActionKind::Restart, ActionKind::Migrate];
        let picks = |seed| {
            let mut b = Bandit::new(seed);
            (0..50).map(|_| b.choose("memory_exhaustion", &cands).unwrap().0).collect::<Vec<_>>()
        };
        assert_eq!(picks(42), picks(42));
        assert_ne!(picks(42), picks(43), "the seed matters");
    }

    #[test]
    fn learns_the_action_that_works_and_keeps_it_after_a_restart() {
        let cands = [ActionKind::ResizeMemory, ActionKind::Restart];
        let mut b = Bandit::new(1);
        // Simulated world: restart works 90% of the time, resize 20%.
        let mut world = Rng::seeded(99);
        let mut late_restarts = 0;
        for round in 0..400 {
            let (i, scores) = b.choose("memory_exhaustion", &cands).unwrap();
            assert_eq!(scores.len(), 2);
            let p = if cands[i] == ActionKind::Restart { 0.9 } else { 0.2 };
            b.update("memory_exhaustion", cands[i], world.uniform() < p);
            if round >= 300 && cands[i] == ActionKind::Restart {
                late_restarts += 1;
            }
        }
        assert!(late_restarts >= 90, "restart chosen {late_restarts}/100 times once learned");
        // Other failure types are unaffected.
        assert_eq!(b.counts("cpu_saturation", ActionKind::Restart), Counts::default());
        let saved = b.to_bytes();
        let mut back = Bandit::from_bytes(&saved, 5).expect("loads");
        assert_eq!(
            back.counts("memory_exhaustion", ActionKind::Restart),
            b.counts("memory_exhaustion", ActionKind::Restart)
        );
        let restarts = (0..100)
            .filter(|_| cands[back.choose("memory_exhaustion", &cands).unwrap().0] == ActionKind::Restart)
            .count();
        assert!(restarts >= 90, "the restored posteriors still prefer restart ({restarts}/100)");
    }

    #[test]
    fn bad_state_is_refused() {
        assert!(matches!(Bandit::from_bytes(b"{", 0), Err(BanditError::Decode(_))));
        assert!(matches!(Bandit::from_bytes(br#"{"format":9,"arms":{}}"#, 0), Err(BanditError::Format { found: 9 })));
        assert!(Bandit::new(0).choose("x", &[]).is_none());
    }
}
