//! Forecasts: per series (resource + metric), quantiles of the value a horizon ahead.
//!
//! A caller keeps one [`SeriesForecaster`] per (resource, metric) and one shared
//! [`Forecasting`] (the candidate models and the [`ForecastConfig`]), and calls
//! [`SeriesForecaster::forecast`] with the series' history, the current time and a
//! [`ForecastRequest`] (horizon, quantiles). [`plan_history`] says which step and lookback
//! to read for a horizon (raw samples for short horizons, 1-minute rollups for long ones);
//! the history may be irregular, with gaps and non-finite values: it is averaged onto an
//! epoch-aligned grid first ([`resample`]).
//!
//! Method:
//! - Candidates ([`default_candidates`]) implement [`Forecaster`]: seasonal naive (daily
//!   season when the history allows, else hourly, else the last value), exponential
//!   smoothing (simple, Holt's linear trend, Holt's damped trend) and a linear trend; with
//!   a model registry ([`candidates_with_models`]) also a quantile model in ONNX trained on
//!   recorded series ([`onnx_quantile`]).
//! - Per series and horizon, [`select`] picks one by rolling-origin cross-validation on
//!   pinball loss averaged over the requested quantiles (see `select`).
//! - Quantiles are the chosen model's point forecast plus the empirical quantiles of its
//!   cross-validation residuals at that lead (see `quantile`): monotone in `q`, optionally
//!   floored at 0 for metrics that cannot be negative.
//! - The choice is kept and re-made on a schedule ([`ForecastConfig::reselect_every`]) and
//!   when the error drifts: the chosen model's forecasts made since the selection are
//!   scored as their actuals arrive, and when their recent mean pinball loss exceeds
//!   [`ForecastConfig::drift_factor`] times the cross-validated one the series is
//!   re-selected (see `series`).
//!
//! Cost: a selection is O(n) per parameter setting tried (~80 passes over a few thousand
//! points, about a millisecond); a forecast from the kept choice is one O(n) pass plus
//! resampling. State kept per series and horizon is a few hundred bytes. Everything here
//! is synchronous and CPU-bound: callers run it off the async runtime.
//!
//! Adding a candidate means implementing [`Forecaster`] in a file of this folder and adding
//! it to the candidate list: `forecast` gets every origin at once, so a model can batch
//! them into one inference call (as [`onnx_quantile`] does); its point forecast (e.g. its
//! median) is calibrated into quantiles by its own cross-validation residuals like any
//! other candidate's.
//!
//! Layout:
//! - [`naive`]: seasonal naive.
//! - [`ets`]: exponential smoothing (simple, Holt, damped Holt).
//! - [`trend`]: least-squares linear trend over a fitted window.
//! - [`onnx_quantile`]: the quantile model served through the model registry.
//! - [`quantile`]: pinball loss, residual distributions, quantile forecasts.
//! - [`select`]: rolling-origin cross-validation and the [`Selection`] it yields.
//! - [`resample`]: histories onto a regular grid; step and lookback per horizon.
//! - [`series`]: [`SeriesForecaster`], the per-series choice, schedule and drift tracking.

pub mod ets;
pub mod naive;
pub mod onnx_quantile;
pub mod quantile;
pub mod resample;
pub mod select;
pub mod series;
pub mod trend;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use ets::Ets;
pub use naive::SeasonalNaive;
pub use onnx_quantile::OnnxQuantile;
pub use quantile::{ResidualQuantiles, mean_pinball, pinball};
pub use resample::{Grid, HistoryPlan, counter_rate, plan_history, resample};
pub use select::{CandidateScore, Selection, select};
pub use series::{SelectReason, SeriesForecaster};
pub use trend::LinearTrend;

/// Quantiles served when a request names none.
pub const DEFAULT_QUANTILES: [f64; 3] = [0.1, 0.5, 0.9];
/// Horizons forecast by default: 15 minutes, 1 hour, 24 hours.
pub const DEFAULT_HORIZONS: [Duration; 3] =
    [Duration::from_secs(15 * 60), Duration::from_secs(3600), Duration::from_secs(86_400)];
/// Most quantiles one request may ask for.
pub const MAX_QUANTILES: usize = 99;

/// Why a forecast could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForecastError {
    #[error("not enough history: {have} points at this step, {need} needed")]
    NotEnoughHistory { have: usize, need: usize },
    #[error("history is stale: the newest point is {age_s} s old, longer than the {horizon_s} s horizon")]
    StaleHistory { age_s: i64, horizon_s: u64 },
    #[error("bad forecast request: {0}")]
    BadRequest(String),
    #[error("bad forecast config: {0}")]
    BadConfig(String),
    #[error("no candidate forecaster could forecast this series")]
    NoCandidate,
    #[error("forecaster {model}: {reason}")]
    Model { model: &'static str, reason: String },
}

/// The grid a forecaster works on: its step, and how many steps ahead to forecast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub step_ms: i64,
    /// Steps ahead: an origin `o` forecasts `y[o + lead − 1]` (1 = the next point).
    pub lead: usize,
}

/// A candidate's fitted parameters (meaning per model, see each model's docs). Fixed size
/// so that keeping a choice per series allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Params(pub [f64; 4]);

/// A candidate forecasting model. Implementations hold configuration only; fitted
/// parameters come back from [`fit`](Forecaster::fit) and go into
/// [`forecast`](Forecaster::forecast), so one instance serves every series.
pub trait Forecaster: Send + Sync {
    /// A short stable name (`seasonal_naive`, `holt`, …), reported with each forecast.
    fn name(&self) -> &'static str;

    /// Fits parameters on `y` (all of it may be used) for forecasts `shape.lead` ahead.
    fn fit(&self, y: &[f64], shape: Shape) -> Result<Params, ForecastError>;

    /// The fewest points a forecast with `params` needs before its origin.
    fn min_history(&self, params: &Params, shape: Shape) -> usize;

    /// Point forecasts of `y[o + shape.lead − 1]` for every origin `o` in `origins`
    /// (ascending, each in `min_history..=y.len()`), into `out` (same length). The
    /// forecast from `o` must read only `y[..o]`.
    fn forecast(
        &self,
        y: &[f64],
        shape: Shape,
        params: &Params,
        origins: &[usize],
        out: &mut [f64],
    ) -> Result<(), ForecastError>;
}

/// The built-in candidates, in tie-breaking order.
pub fn default_candidates() -> Vec<Box<dyn Forecaster>> {
    vec![
        Box::new(SeasonalNaive),
        Box::new(Ets::SIMPLE),
        Box::new(Ets::HOLT),
        Box::new(Ets::DAMPED),
        Box::new(LinearTrend),
    ]
}

/// The built-in candidates, then (with a model registry) the ONNX quantile model, which
/// competes whenever the registry serves a `forecast` model (see [`onnx_quantile`]).
pub fn candidates_with_models(
    models: Option<&std::sync::Arc<crate::model::ModelRegistry>>,
) -> Vec<Box<dyn Forecaster>> {
    let mut c = default_candidates();
    if let Some(registry) = models {
        c.push(Box::new(OnnxQuantile::from_registry(registry.clone())));
    }
    c
}

/// When to re-select and how much history to use.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastConfig {
    /// A series' choice is re-made when it is older than this.
    pub reselect_every: Duration,
    /// Re-select when the recent realised pinball loss exceeds this many times the
    /// cross-validated one.
    pub drift_factor: f64,
    /// Realised forecasts needed before drift is judged.
    pub drift_min_targets: usize,
    /// Drift is judged on at most this many of the newest realised forecasts.
    pub drift_window: usize,
    /// Most grid points used (older history is ignored).
    pub max_history_points: usize,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            reselect_every: Duration::from_secs(3600),
            drift_factor: 2.0,
            drift_min_targets: 12,
            drift_window: 36,
            max_history_points: 20_000,
        }
    }
}

impl ForecastConfig {
    pub fn validate(&self) -> Result<(), ForecastError> {
        let bad = |s: &str| Err(ForecastError::BadConfig(s.into()));
        if !(self.drift_factor.is_finite() && self.drift_factor > 1.0) {
            return bad("drift_factor must be a number above 1");
        }
        if self.drift_min_targets == 0 || self.drift_window < self.drift_min_targets {
            return bad("drift_min_targets must be at least 1 and at most drift_window");
        }
        if self.max_history_points < select::points_needed(1) {
            return bad("max_history_points is too small to select any model");
        }
        Ok(())
    }
}

/// The candidates and configuration shared by every [`SeriesForecaster`].
pub struct Forecasting {
    config: ForecastConfig,
    candidates: Vec<Box<dyn Forecaster>>,
}

impl std::fmt::Debug for Forecasting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.candidates.iter().map(|c| c.name()).collect();
        f.debug_struct("Forecasting").field("config", &self.config).field("candidates", &names).finish()
    }
}

impl Forecasting {
    /// The built-in candidates under `config`.
    pub fn new(config: ForecastConfig) -> Result<Self, ForecastError> {
        Self::with_candidates(config, default_candidates())
    }

    /// Chosen candidates (at least one) under `config`.
    pub fn with_candidates(
        config: ForecastConfig,
        candidates: Vec<Box<dyn Forecaster>>,
    ) -> Result<Self, ForecastError> {
        config.validate()?;
        if candidates.is_empty() {
            return Err(ForecastError::BadConfig("no candidate forecasters".into()));
        }
        Ok(Self { config, candidates })
    }

    pub fn config(&self) -> &ForecastConfig {
        &self.config
    }

    pub fn candidates(&self) -> &[Box<dyn Forecaster>] {
        &self.candidates
    }
}

/// What to forecast.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastRequest {
    /// How far ahead of `now`.
    pub horizon: Duration,
    /// Which quantiles, each in (0, 1); served ascending without duplicates.
    pub quantiles: Vec<f64>,
    /// Grid step; `None` takes [`plan_history`]'s for the horizon.
    pub step: Option<Duration>,
    /// Floor the quantiles at 0 (bytes, cores, rates).
    pub non_negative: bool,
}

impl ForecastRequest {
    /// The default quantiles at `horizon`, planned step, no floor.
    pub fn new(horizon: Duration) -> Self {
        Self { horizon, quantiles: DEFAULT_QUANTILES.to_vec(), step: None, non_negative: false }
    }

    /// The grid step this request uses.
    pub fn step(&self) -> Duration {
        self.step.unwrap_or_else(|| plan_history(self.horizon).step)
    }
}

/// A forecast for one series at one horizon.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// The chosen candidate.
    pub model: &'static str,
    pub horizon_s: u64,
    pub step_s: u64,
    /// The time the quantiles are for (`now + horizon`), and how many steps after the
    /// newest point that is.
    pub target_ms: i64,
    pub lead_steps: usize,
    /// `(q, value)`, ascending in `q` and monotone in value.
    pub quantiles: Vec<(f64, f64)>,
    /// The chosen model's cross-validated mean pinball loss (over the quantiles it was
    /// selected on).
    pub cv_pinball: f64,
    /// Mean pinball loss of its forecasts since the selection whose actuals are known
    /// (the newest [`ForecastConfig::drift_window`]), when there are any.
    pub realised_pinball: Option<f64>,
    /// Grid points the forecast saw, and how many of them were interpolated over gaps.
    pub history_points: usize,
    pub filled_points: usize,
    /// When the model was chosen, and why the choice was (re)made by this call, if it was.
    pub selected_at_ms: i64,
    pub reselected: Option<SelectReason>,
}

/// Checks requested quantiles and returns them ascending without duplicates.
pub fn normalise_quantiles(qs: &[f64]) -> Result<Vec<f64>, ForecastError> {
    if qs.is_empty() {
        return Err(ForecastError::BadRequest("no quantiles requested".into()));
    }
    if qs.len() > MAX_QUANTILES {
        return Err(ForecastError::BadRequest(format!("{} quantiles requested, at most {MAX_QUANTILES}", qs.len())));
    }
    if let Some(q) = qs.iter().find(|q| !(**q > 0.0 && **q < 1.0)) {
        return Err(ForecastError::BadRequest(format!("quantile {q} is not strictly between 0 and 1")));
    }
    let mut v = qs.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    v.dedup();
    Ok(v)
}

/// The lead models fit their parameters at: the requested one, capped to a third of the
/// fitting history so that enough fitting origins remain.
pub(crate) fn fit_lead(fit_len: usize, lead: usize) -> usize {
    lead.clamp(1, (fit_len / 3).max(1))
}

/// Selects among the built-in candidates for an irregular `history` resampled to `step`,
/// at `horizon`: [`select`] for callers and tests that hold points rather than a grid.
pub fn select_from_history(
    history: &[(i64, f64)],
    step: Duration,
    horizon: Duration,
    quantiles: &[f64],
) -> Result<Selection, ForecastError> {
    let grid = resample(history, step, i64::MAX, ForecastConfig::default().max_history_points);
    let shape = Shape { step_ms: grid.step_ms, lead: lead_steps(horizon, grid.step_ms) };
    select(&default_candidates(), &grid.values, shape, quantiles)
}

/// Whole steps in `horizon` (at least 1), rounding up.
pub(crate) fn lead_steps(horizon: Duration, step_ms: i64) -> usize {
    let (h, s) = (horizon.as_millis() as u64, step_ms.max(1) as u64);
    h.div_ceil(s).max(1) as usize
}
