//! The per-series forecaster: keeps each horizon's chosen model and re-chooses it on a
//! schedule and when its error drifts.
//!
//! A [`SeriesForecaster`] holds, per (horizon, step) it was asked for, the last
//! [`Selection`], when it was made and the newest grid time it saw. A call to
//! [`SeriesForecaster::forecast`]:
//! 1. resamples the history onto the grid (refusing a history whose newest point is older
//!    than the horizon);
//! 2. re-selects when there is no choice yet, when the choice is older than
//!    [`ForecastConfig::reselect_every`], when the history no longer fits the chosen
//!    model, or when the error drifted (if a scheduled or drift re-selection fails and
//!    the old choice still fits the history, it keeps serving and selection is retried
//!    on the next call);
//! 3. forecasts from the newest point with the kept parameters and adds the kept residual
//!    quantiles.
//!
//! Drift: the forecasts the chosen model made (or would have made, had it been asked)
//! from every origin after the selection's newest point are recomputed with the kept
//! parameters, and those whose target has arrived are scored against it. When at least
//! [`ForecastConfig::drift_min_targets`] are known, the mean pinball loss of the newest
//! [`ForecastConfig::drift_window`] of them is compared with the cross-validated loss;
//! above [`ForecastConfig::drift_factor`] times it (plus a hair, so a constant series that
//! starts to move counts), the series is re-selected. Recomputing rather than remembering
//! past forecasts keeps the state small and works however rarely forecasts are requested;
//! only origins after the selection count, so a re-selection is not followed by another
//! for the same, already seen, surprise.

use super::quantile::mean_pinball;
use super::resample::resample;
use super::select::{Selection, select};
use super::{
    Forecast, ForecastConfig, ForecastError, ForecastRequest, Forecaster, Forecasting, Shape, lead_steps,
    normalise_quantiles,
};

/// Most (horizon, step) choices kept per series; asking for more evicts the least
/// recently selected, so a client cycling through horizons cannot grow the state.
pub const MAX_HORIZONS_PER_SERIES: usize = 8;

/// Why a selection was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectReason {
    /// First forecast at this horizon.
    Initial,
    /// The previous choice was older than `reselect_every`.
    Schedule,
    /// The chosen model's recent errors exceeded its cross-validated error by the drift factor.
    Drift,
    /// The history became too short for the chosen model's parameters.
    History,
}

#[derive(Debug, Clone)]
struct HorizonState {
    horizon_ms: i64,
    step_ms: i64,
    selection: Selection,
    selected_at_ms: i64,
    /// Grid time of the newest point the selection saw.
    data_end_ms: i64,
}

/// Forecasting state of one series (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct SeriesForecaster {
    states: Vec<HorizonState>,
}

/// Realised loss of a selection's forecasts since it was made.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Realised {
    mean_pinball: f64,
    count: usize,
}

impl SeriesForecaster {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current choice for `horizon` at `step`, if one was made.
    pub fn selection(&self, horizon: std::time::Duration, step: std::time::Duration) -> Option<&Selection> {
        let (h, s) = (horizon.as_millis() as i64, step.as_millis() as i64);
        self.states.iter().find(|st| st.horizon_ms == h && st.step_ms == s).map(|st| &st.selection)
    }

    /// Whether the choice in `slot` can forecast from `n` points.
    fn fits(&self, fc: &Forecasting, slot: Option<usize>, n: usize) -> bool {
        slot.is_some_and(|i| {
            let sel = &self.states[i].selection;
            model_of(fc, sel).is_some_and(|m| m.min_history(&sel.params, sel.shape) <= n)
        })
    }

    /// Keeps `st`, evicting the least recently selected choice beyond
    /// [`MAX_HORIZONS_PER_SERIES`]; returns its index.
    fn insert(&mut self, st: HorizonState) -> usize {
        if self.states.len() >= MAX_HORIZONS_PER_SERIES
            && let Some((oldest, _)) = self.states.iter().enumerate().min_by_key(|(_, s)| s.selected_at_ms)
        {
            self.states[oldest] = st;
            return oldest;
        }
        self.states.push(st);
        self.states.len() - 1
    }

    /// Forgets every choice, so the next forecasts select afresh.
    pub fn reset(&mut self) {
        self.states.clear();
    }

    /// Quantile forecast of this series `req.horizon` after `now_ms` from `history`
    /// (points in any order, any spacing; see the module docs).
    pub fn forecast(
        &mut self,
        fc: &Forecasting,
        history: &[(i64, f64)],
        now_ms: i64,
        req: &ForecastRequest,
    ) -> Result<Forecast, ForecastError> {
        let cfg = fc.config();
        let qs = normalise_quantiles(&req.quantiles)?;
        let step = req.step();
        let (horizon_ms, step_ms) = (req.horizon.as_millis() as i64, step.as_millis() as i64);
        if step_ms < 1000 || step_ms % 1000 != 0 {
            return Err(ForecastError::BadRequest(format!("step {step:?} is not a whole number of seconds")));
        }
        if horizon_ms < step_ms {
            return Err(ForecastError::BadRequest(format!(
                "horizon {:?} is shorter than the step {step:?}",
                req.horizon
            )));
        }
        let grid = resample(history, step, now_ms, cfg.max_history_points);
        let lead = lead_steps(req.horizon, step_ms);
        let n = grid.len();
        if n == 0 {
            return Err(ForecastError::NotEnoughHistory { have: 0, need: super::select::points_needed(lead) });
        }
        let last_ms = grid.time_of(n - 1);
        let age_ms = now_ms - (last_ms + step_ms);
        if age_ms > horizon_ms {
            return Err(ForecastError::StaleHistory { age_s: age_ms / 1000, horizon_s: req.horizon.as_secs() });
        }
        let y = &grid.values;

        let mut slot = self.states.iter().position(|s| s.horizon_ms == horizon_ms && s.step_ms == step_ms);
        let mut realised = None;
        let mut reason = match slot {
            None => Some(SelectReason::Initial),
            Some(i) => {
                let st = &self.states[i];
                let Some(model) = model_of(fc, &st.selection) else {
                    // Chosen from another candidate list: start over.
                    self.states.remove(i);
                    return self.forecast(fc, history, now_ms, req);
                };
                if now_ms - st.selected_at_ms >= cfg.reselect_every.as_millis() as i64 {
                    Some(SelectReason::Schedule)
                } else if model.min_history(&st.selection.params, st.selection.shape) > n {
                    Some(SelectReason::History)
                } else {
                    realised = realised_loss(model, cfg, st, &grid)?;
                    let scale = y[n - 1].abs();
                    drifted(cfg, &st.selection, realised, scale).then_some(SelectReason::Drift)
                }
            }
        };
        if let Some(why) = reason {
            match select(fc.candidates(), y, Shape { step_ms, lead }, &qs) {
                Ok(selection) => {
                    tracing::debug!(
                        model = selection.model,
                        cv_pinball = selection.cv_pinball,
                        reason = ?why,
                        horizon_s = req.horizon.as_secs(),
                        "forecast model selected"
                    );
                    let st =
                        HorizonState { horizon_ms, step_ms, selection, selected_at_ms: now_ms, data_end_ms: last_ms };
                    match slot {
                        Some(i) => self.states[i] = st,
                        None => slot = Some(self.insert(st)),
                    }
                    realised = None;
                }
                // A choice that still fits this history keeps serving; selection is retried
                // on the next call.
                Err(e) if matches!(why, SelectReason::Schedule | SelectReason::Drift) && self.fits(fc, slot, n) => {
                    tracing::debug!(error = %e, reason = ?why, "forecast re-selection failed; keeping the choice");
                    reason = None;
                }
                Err(e) => return Err(e),
            }
        }
        let i = slot.expect("a choice exists: found, just made, or kept");
        let st = &self.states[i];
        let sel = &st.selection;
        let model = model_of(fc, sel).ok_or(ForecastError::NoCandidate)?;

        let target_ms = now_ms + horizon_ms;
        let lead_now = ((target_ms - last_ms).div_euclid(step_ms)).max(1) as usize;
        let mut point = [0.0];
        model.forecast(y, Shape { step_ms, lead: lead_now }, &sel.params, &[n], &mut point)?;
        if !point[0].is_finite() {
            return Err(ForecastError::Model { model: model.name(), reason: "non-finite forecast".into() });
        }
        let mut values = vec![0.0; qs.len()];
        sel.residuals.quantiles_into(point[0], &qs, req.non_negative, &mut values);
        Ok(Forecast {
            model: sel.model,
            horizon_s: req.horizon.as_secs(),
            step_s: step.as_secs(),
            target_ms,
            lead_steps: lead_now,
            quantiles: qs.into_iter().zip(values).collect(),
            cv_pinball: sel.cv_pinball,
            realised_pinball: realised.map(|r| r.mean_pinball),
            history_points: n,
            filled_points: grid.filled,
            selected_at_ms: st.selected_at_ms,
            reselected: reason,
        })
    }
}

/// The selection's model in `fc`, unless `fc` is not the candidate list it was made from.
fn model_of<'a>(fc: &'a Forecasting, sel: &Selection) -> Option<&'a dyn Forecaster> {
    fc.candidates().get(sel.candidate).map(|c| c.as_ref()).filter(|c| c.name() == sel.model)
}

/// Whether `realised` errors are far enough above the cross-validated ones to re-select.
/// `scale` is the series' magnitude (its newest value).
fn drifted(cfg: &ForecastConfig, sel: &Selection, realised: Option<Realised>, scale: f64) -> bool {
    let Some(r) = realised else { return false };
    if r.count < cfg.drift_min_targets {
        return false;
    }
    // A hair above zero, relative to the series' magnitude, so a series that was constant
    // (CV loss 0) and starts to move counts as drift, but rounding noise does not.
    let hair = 1e-9 * (1.0 + scale);
    r.mean_pinball > cfg.drift_factor * sel.cv_pinball + hair
}

/// Scores the selection's forecasts from origins after its newest point whose targets are
/// in `grid` (the newest `drift_window` of them); `None` when there are none.
fn realised_loss(
    model: &dyn Forecaster,
    cfg: &ForecastConfig,
    st: &HorizonState,
    grid: &super::Grid,
) -> Result<Option<Realised>, ForecastError> {
    let sel = &st.selection;
    let n = grid.len();
    let lead = sel.shape.lead;
    if n < lead {
        return Ok(None);
    }
    // First origin whose history includes the selection's newest point.
    let first_after = match grid.index_of(st.data_end_ms) {
        Some(e) => e + 1,
        None if st.data_end_ms < grid.start_ms => 0,
        None => return Ok(None),
    };
    let last = n - lead; // newest origin whose target is known
    let window = cfg.drift_window;
    let first = first_after.max(model.min_history(&sel.params, sel.shape)).max((last + 1).saturating_sub(window));
    if first > last {
        return Ok(None);
    }
    let origins: Vec<usize> = (first..=last).collect();
    let mut points = vec![0.0; origins.len()];
    model.forecast(&grid.values, sel.shape, &sel.params, &origins, &mut points)?;
    let offsets: Vec<f64> = sel.quantiles.iter().map(|&q| sel.residuals.offset(q)).collect();
    let mut values = vec![0.0; offsets.len()];
    let mut total = 0.0;
    for (&o, &p) in origins.iter().zip(&points) {
        for (v, off) in values.iter_mut().zip(&offsets) {
            *v = p + off;
        }
        total += mean_pinball(grid.values[o + lead - 1], &sel.quantiles, &values);
    }
    Ok(Some(Realised { mean_pinball: total / origins.len() as f64, count: origins.len() }))
}
