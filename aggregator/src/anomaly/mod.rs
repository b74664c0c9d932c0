//! Per-host anomaly detection, learned online: the shipped detector of
//! `models/eval/DETECTOR.md` (residual-EWMA v1: whitened PCA residual error, smoothed by a
//! 1-minute EWMA), evaluated in `models/eval` on SMD.
//!
//! One [`HostDetector`] per host takes a fixed, ordered list of signals and one vector of
//! their values per sample (1 Hz) through [`HostDetector::observe`]:
//!
//! 1. **Learning** (the warm-up, [`AnomalyConfig::warmup`], 1 h): streaming moments
//!    ([`moments`]); no scores. At its end the residual model is fitted from the moments
//!    ([`detector`]: standardise, covariance, top eigenvectors for 90 % of the variance by
//!    Jacobi ([`pca`]), residual projector, floored residual stds), the learning samples are
//!    scored with it and the alarm threshold τ is calibrated on those scores ([`threshold`]:
//!    the harness rule, ≤ 1 debounced alarm per day, when the warm-up spans a day; otherwise
//!    an exponential-tail extrapolation to the same budget). The learning samples are kept
//!    until then (f32, `samples × signals × 4` bytes: 0.55 MB for 1 h of 38 signals).
//!    An extrapolated τ is provisional: an hour holds too few excursions to place a
//!    once-a-day level reliably (on stationary synthetic data the 1-h τ gave a median of 0
//!    but up to 13 alarms per day; recalibrated, 0–9, mean 1–2.6). After the first full day
//!    of scoring, τ is recalibrated
//!    once with the harness rule on that day's per-minute maximum scores
//!    ([`AnomalyConfig::recalibrate_after_first_day`]; 1440 f32 kept meanwhile), like the
//!    harness's train split; that day's anomalies spend its alarm budget, as train's do.
//! 2. **Scoring**: every sample gets an [`AnomalyScore`]: the error `e`, its EWMA `m` (half-life
//!    in wall time), `m > τ`, and the signals with the largest share of `e` (each signal's
//!    squared whitened residual: what moved against the others).
//!
//! **Missing values.** A non-finite value (NaN, ±inf) is imputed with its signal's mean: the
//! running mean while learning ([`moments`]), the model's mean when scoring (a standardised
//! value of 0). A signal observed in fewer than [`AnomalyConfig::min_coverage`] (90 %) of the
//! learning samples is left out of the model (it never contributes). A sample with no finite
//! value at all is ignored: `observe` returns `None` and no state changes.
//!
//! **Following drift, never learning anomalies.** After the fit the moments keep learning with
//! exponential forgetting ([`AnomalyConfig::baseline_halflife`], 7 days) and the model is
//! refitted from them every [`AnomalyConfig::refit_every`] (1 h); τ keeps its ratio to the
//! model's expected error ([`detector::ResidualModel::expected_error`]). What is learned is
//! gated below the alarm level. A sample is *suspicious* when its score exceeds the learning
//! gate, the 99th percentile of the learning phase's scores
//! ([`AnomalyConfig::learn_gate_quantile`], never above τ); it is not learned. A *suspicious
//! period* is an alarm, or a time when more than half of the recent samples are suspicious
//! (an EWMA of the indicator with the quarantine as half-life, so about 5 min of sustained
//! suspicion). Scored samples wait out a quarantine ([`AnomalyConfig::quarantine`], 5 min);
//! a suspicious period discards what is waiting, and nothing within a quarantine after it is
//! learned: so neither a long anomaly below τ, nor the onset an EWMA is slow to flag, nor the
//! tail after it is learned, while isolated excursions of normal operation cost only their
//! own samples. Measured choices (`tests::online_policy_on_smd` and synthetic streams): gating
//! at τ let long sub-threshold SMD anomalies leak into the baseline (mean best-F1 / AUC-PR
//! 0.43 / 0.39 instead of 0.51 / 0.46); quarantining around every suspicious sample kept
//! SMD's figures but, at 1 Hz, discarded 40–90 % of normal samples and biased the baseline
//! tight (alarms per day creeping up over a week); dropping suspicious samples alone leaked
//! SMD anomalies again (0.47 / 0.43). A change that stays suspicious is therefore never
//! learned; [`HostDetector::relearn`] starts learning afresh (after a planned change), and
//! [`AnomalyConfig::relearn_after`] does so automatically after that long without learning
//! anything (off by default: at 24 h it absorbed SMD machine-1-6's 53-hour anomaly, 0.45 /
//! 0.39; [`HostDetector::blocked_since`] tells how long nothing has been learned).
//!
//! Cost per host: O(d·k) per scored sample plus O(d²) per learned sample (d signals, k
//! components), O(d³) per refit; memory about `d²/2 + d·k` f64 plus the quarantine (f32,
//! 300 × d × 4 bytes at 1 Hz: 46 KB for 38 signals), the learning buffer while learning and
//! 1440 minute maxima during the first day.
//!
//! Layout:
//! - [`host`]: [`HostDetector`], the online state machine (learning, scoring, quarantine,
//!   refit, relearn).
//! - [`moments`]: streaming weighted mean and covariance (Welford, optional forgetting).
//! - [`pca`]: symmetric eigen-decomposition (cyclic Jacobi), components for a variance share.
//! - [`detector`]: the residual model (fit, error, per-signal residuals, folded `W`, `b`) and
//!   the wall-time EWMA.
//! - [`threshold`]: τ from a learning stream (harness rule, tail extrapolation), debouncing.

pub mod detector;
pub mod host;
pub mod moments;
pub mod pca;
pub mod threshold;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

pub use detector::{Ewma, FitParams, ResidualModel};
pub use host::HostDetector;
pub use moments::Moments;
pub use threshold::{Calibration, ThresholdMethod};

/// Errors of the anomaly detectors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnomalyError {
    #[error("anomaly config: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("an anomaly detector needs at least one signal")]
    NoSignals,
    #[error("signal `{0}` is listed twice")]
    DuplicateSignal(String),
    #[error("sample has {got} values, the detector has {expected} signals")]
    WrongLength { expected: usize, got: usize },
    #[error("sample at {ts_ms} ms is not after the previous one at {previous_ms} ms")]
    TimeNotIncreasing { previous_ms: i64, ts_ms: i64 },
    #[error("no signal was observed in at least {min_coverage} of the learning samples")]
    NoUsableSignals { min_coverage: f64 },
}

/// Parameters of a [`HostDetector`]. The defaults are DETECTOR.md's at 1 sample per second.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyConfig {
    /// Share of the standardised variance kept by the principal subspace.
    pub variance: f64,
    /// A signal whose std is below this is treated as constant (std 1).
    pub min_std: f64,
    /// Lower bound of each signal's residual std (standardised units).
    pub residual_floor: f64,
    /// Minimum share of learning samples in which a signal must be observed to be modelled.
    pub min_coverage: f64,
    /// Half-life of the error's EWMA, in wall time (0: no smoothing).
    pub halflife: Duration,
    /// Learning lasts at least this long (wall time from its first sample) ...
    pub warmup: Duration,
    /// ... and at least this many samples ...
    pub min_warmup_samples: usize,
    /// ... but ends at this many samples whatever the span (bounds the learning buffer).
    pub max_warmup_samples: usize,
    /// Alarm budget: debounced alarms per day the learning stream may have above τ.
    pub alarms_per_day: f64,
    /// Alarm steps closer than this are one alarm.
    pub debounce: Duration,
    /// Learning streams at least this long use the harness rule for τ, shorter ones the tail
    /// extrapolation.
    pub full_rule_span: Duration,
    /// Quantile of the learning scores above which the tail is extrapolated.
    pub tail_quantile: f64,
    /// When τ came from the tail extrapolation (a learning phase shorter than the full-rule
    /// span), recalibrate it once with the harness rule on the first full-rule span of scores.
    pub recalibrate_after_first_day: bool,
    /// Refit from the baseline moments this often (`None`: never; the model stays the
    /// learning phase's).
    pub refit_every: Option<Duration>,
    /// Half-life of the baseline moments after the learning phase, in learned samples at
    /// [`AnomalyConfig::sample_interval`] (7 days: on SMD, 24 h gave mean best-F1 / AUC-PR
    /// 0.508 / 0.440, 7 days 0.507 / 0.461, fitting once on train 0.506 / 0.449).
    pub baseline_halflife: Duration,
    /// The nominal sample interval, which turns `baseline_halflife` into a per-sample decay.
    pub sample_interval: Duration,
    /// A scored sample is learned only this long after it arrived, and only if no suspicious
    /// period (an alarm, or sustained scores above the learning gate) began within this long
    /// after it or ended within this long before it. Also the half-life of the suspicion share.
    pub quarantine: Duration,
    /// The learning gate: this quantile of the learning phase's scores (kept in proportion to
    /// the expected error across refits, never above τ); samples above it are not learned.
    /// `None`: τ itself.
    pub learn_gate_quantile: Option<f64>,
    /// Start learning afresh when nothing could be learned for this long because samples kept
    /// scoring above the learning gate (`None`, the default: never).
    pub relearn_after: Option<Duration>,
    /// How many contributing signals an [`AnomalyScore`] lists.
    pub top_signals: usize,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            variance: 0.9,
            min_std: 1e-6,
            residual_floor: 0.1,
            min_coverage: 0.9,
            halflife: Duration::from_secs(60),
            warmup: Duration::from_secs(3600),
            min_warmup_samples: 600,
            max_warmup_samples: 7200,
            alarms_per_day: 1.0,
            debounce: Duration::from_secs(600),
            full_rule_span: Duration::from_secs(86_400),
            tail_quantile: 0.98,
            recalibrate_after_first_day: true,
            refit_every: Some(Duration::from_secs(3600)),
            baseline_halflife: Duration::from_secs(7 * 86_400),
            sample_interval: Duration::from_secs(1),
            quarantine: Duration::from_secs(300),
            learn_gate_quantile: Some(0.99),
            relearn_after: None,
            top_signals: 3,
        }
    }
}

impl AnomalyConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), AnomalyError> {
        fn bad(field: &'static str, reason: impl Into<String>) -> Result<(), AnomalyError> {
            Err(AnomalyError::InvalidConfig { field, reason: reason.into() })
        }
        if !(self.variance > 0.0 && self.variance <= 1.0) {
            return bad("variance", format!("{} is not in (0, 1]", self.variance));
        }
        if !(self.min_std > 0.0 && self.min_std.is_finite()) {
            return bad("min_std", "must be positive");
        }
        if !(self.residual_floor > 0.0 && self.residual_floor.is_finite()) {
            return bad("residual_floor", "must be positive");
        }
        if !(self.min_coverage > 0.0 && self.min_coverage <= 1.0) {
            return bad("min_coverage", format!("{} is not in (0, 1]", self.min_coverage));
        }
        if self.min_warmup_samples < 2 {
            return bad("min_warmup_samples", "must be at least 2");
        }
        if self.max_warmup_samples < self.min_warmup_samples {
            return bad("max_warmup_samples", "must be at least min_warmup_samples");
        }
        if !(self.alarms_per_day > 0.0 && self.alarms_per_day.is_finite()) {
            return bad("alarms_per_day", "must be positive");
        }
        if !(self.tail_quantile > 0.0 && self.tail_quantile < 1.0) {
            return bad("tail_quantile", format!("{} is not in (0, 1)", self.tail_quantile));
        }
        if self.learn_gate_quantile.is_some_and(|q| !(q > 0.0 && q <= 1.0)) {
            return bad("learn_gate_quantile", "must be in (0, 1] (or absent)");
        }
        if self.refit_every.is_some_and(|d| d.is_zero()) {
            return bad("refit_every", "must be positive (or absent)");
        }
        if self.baseline_halflife.is_zero() || self.sample_interval.is_zero() {
            return bad("baseline_halflife", "baseline_halflife and sample_interval must be positive");
        }
        if self.relearn_after.is_some_and(|d| d <= self.quarantine) {
            return bad("relearn_after", "must be longer than the quarantine (or absent)");
        }
        Ok(())
    }

    /// The parameters of the fit.
    pub fn fit_params(&self) -> FitParams {
        FitParams {
            variance: self.variance,
            min_std: self.min_std,
            residual_floor: self.residual_floor,
            min_coverage: self.min_coverage,
        }
    }
}

/// Where a detector is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    /// Accumulating the warm-up: `samples` so far over `span_ms` of wall time.
    Learning { samples: usize, span_ms: i64 },
    /// Scoring with a model fitted at `fitted_at_ms` (`refits` refits since the learning phase).
    Scoring { fitted_at_ms: i64, refits: u64 },
}

/// One signal's share of a sample's error.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    /// The signal's name, as given to [`HostDetector::new`].
    pub signal: Arc<str>,
    /// Its squared whitened residual over the error `e` (0..=1; the shares of all signals sum to 1).
    pub share: f64,
}

/// The score of one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyScore {
    pub ts_ms: i64,
    /// The error `e_t` of this sample alone.
    pub raw: f64,
    /// The EWMA `m_t` of the error: the score compared with the threshold.
    pub smoothed: f64,
    /// τ in force.
    pub threshold: f64,
    /// `smoothed > threshold`.
    pub is_anomalous: bool,
    /// The first anomalous step of a debounced alarm (no anomalous step within the debounce
    /// gap before it): the alarms τ was calibrated to budget.
    pub alarm_start: bool,
    /// The largest contributors to `raw`, largest first, at most
    /// [`AnomalyConfig::top_signals`]; empty when `raw` is 0.
    pub top_signals: Vec<Contribution>,
    /// How many modelled signals were missing and imputed with their mean.
    pub imputed: usize,
}
