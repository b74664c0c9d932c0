//! Choosing a forecaster per series: rolling-origin cross-validation on pinball loss.
//!
//! For a regular series `y` of `n` points and a lead of `h` steps, the possible origins
//! are `0..=n − h` (an origin `o` forecasts `y[o + h − 1]` from `y[..o]`). The newest half
//! of them, at least [`MIN_CV_ORIGINS`] and leaving at least [`MIN_FIT_POINTS`] before the
//! first, are the evaluation origins; every candidate:
//! 1. fits its parameters once on the points before the first evaluation origin (so
//!    nothing it is judged on was seen while fitting);
//! 2. forecasts from every evaluation origin with those parameters, each forecast reading
//!    only the history before its origin (one pass for all origins, see each model);
//! 3. turns its residuals `actual − forecast` into a [`ResidualQuantiles`], and is scored
//!    by the mean pinball loss, over the origins and the requested quantiles, of
//!    "forecast + residual quantile".
//!
//! The lowest score wins (ties go to the earlier candidate). A candidate that needs more
//! history than the fitting part has, fails, or forecasts something non-finite is left
//! out with a note in its [`CandidateScore`]. The winner keeps its parameters and its
//! residual distribution: later forecasts reuse both until the next selection.
//!
//! Step 3 scores each model's spread with quantiles estimated on the same residuals, so
//! the score is slightly optimistic, equally for every candidate; drift detection (see
//! `series`) compares fresh errors with it using a factor that absorbs this.
//!
//! Cost: one selection is O(n) per candidate parameter setting tried (about 80 filter
//! passes over the fitting part in all) plus sorting the residuals; nothing is allocated
//! per origin.

use super::quantile::ResidualQuantiles;
use super::{ForecastError, Forecaster, Params, Shape};

/// Fewest evaluation origins for a selection.
pub const MIN_CV_ORIGINS: usize = 24;
/// Fewest points before the first evaluation origin (for fitting).
pub const MIN_FIT_POINTS: usize = 24;

/// The points a selection at `lead` needs.
pub fn points_needed(lead: usize) -> usize {
    lead.max(1) - 1 + MIN_FIT_POINTS + MIN_CV_ORIGINS
}

/// Evaluation origins `first..=last` for `n` points at `lead`.
pub fn cv_origins(n: usize, lead: usize) -> Result<std::ops::RangeInclusive<usize>, ForecastError> {
    let lead = lead.max(1);
    let need = points_needed(lead);
    if n < need {
        return Err(ForecastError::NotEnoughHistory { have: n, need });
    }
    let possible = n + 1 - lead; // origins 0..=n − lead
    let cv = (possible / 2).clamp(MIN_CV_ORIGINS, possible - MIN_FIT_POINTS);
    Ok(possible - cv..=n - lead)
}

/// How one candidate did.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateScore {
    pub model: &'static str,
    /// Mean pinball loss over the evaluation origins; `None` when left out.
    pub cv_pinball: Option<f64>,
    /// Why it was left out.
    pub note: Option<String>,
}

/// The outcome of a selection for one series at one lead.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Index of the winner in the candidate list.
    pub candidate: usize,
    pub model: &'static str,
    /// The winner's parameters, fitted before the first evaluation origin.
    pub params: Params,
    pub shape: Shape,
    /// The winner's cross-validated mean pinball loss.
    pub cv_pinball: f64,
    /// The winner's residuals at this lead.
    pub residuals: ResidualQuantiles,
    /// The quantiles the score averages over (ascending).
    pub quantiles: Vec<f64>,
    /// Evaluation origins used.
    pub cv_origins: usize,
    /// Every candidate's score, in candidate order.
    pub scores: Vec<CandidateScore>,
}

impl Selection {
    /// The cross-validated pinball of the candidate called `model`, if it was scored.
    pub fn score_of(&self, model: &str) -> Option<f64> {
        self.scores.iter().find(|s| s.model == model).and_then(|s| s.cv_pinball)
    }
}

/// Rolling-origin selection among `candidates` for `y` (finite, regular at
/// `shape.step_ms`) at `shape.lead`, scored on `quantiles` (see the module docs).
pub fn select(
    candidates: &[Box<dyn Forecaster>],
    y: &[f64],
    shape: Shape,
    quantiles: &[f64],
) -> Result<Selection, ForecastError> {
    let shape = Shape { lead: shape.lead.max(1), ..shape };
    if let Some(i) = y.iter().position(|v| !v.is_finite()) {
        return Err(ForecastError::BadRequest(format!("history value {i} is not finite")));
    }
    let qs = super::normalise_quantiles(quantiles)?;
    let range = cv_origins(y.len(), shape.lead)?;
    let first = *range.start();
    let origins: Vec<usize> = range.collect();
    let mut forecasts = vec![0.0; origins.len()];
    let mut residuals = vec![0.0; origins.len()];
    let mut scores = Vec::with_capacity(candidates.len());
    let mut best: Option<(usize, Params, f64, ResidualQuantiles)> = None;
    for (idx, c) in candidates.iter().enumerate() {
        let scored = score_candidate(c.as_ref(), y, shape, first, &origins, &qs, &mut forecasts, &mut residuals);
        match scored {
            Ok((params, pinball, sketch)) => {
                scores.push(CandidateScore { model: c.name(), cv_pinball: Some(pinball), note: None });
                if best.as_ref().is_none_or(|b| pinball < b.2) {
                    best = Some((idx, params, pinball, sketch));
                }
            }
            Err(note) => {
                tracing::trace!(model = c.name(), %note, "forecast candidate left out");
                scores.push(CandidateScore { model: c.name(), cv_pinball: None, note: Some(note) });
            }
        }
    }
    let (candidate, params, cv_pinball, residuals) = best.ok_or(ForecastError::NoCandidate)?;
    Ok(Selection {
        candidate,
        model: candidates[candidate].name(),
        params,
        shape,
        cv_pinball,
        residuals,
        quantiles: qs,
        cv_origins: origins.len(),
        scores,
    })
}

/// Fits, forecasts and scores one candidate; `Err` says why it is left out.
#[allow(clippy::too_many_arguments)]
fn score_candidate(
    c: &dyn Forecaster,
    y: &[f64],
    shape: Shape,
    first: usize,
    origins: &[usize],
    qs: &[f64],
    forecasts: &mut [f64],
    residuals: &mut [f64],
) -> Result<(Params, f64, ResidualQuantiles), String> {
    let params = c.fit(&y[..first], shape).map_err(|e| e.to_string())?;
    let need = c.min_history(&params, shape);
    if need > first {
        return Err(format!("needs {need} points before an origin, the fitting part has {first}"));
    }
    c.forecast(y, shape, &params, origins, forecasts).map_err(|e| e.to_string())?;
    for ((r, &f), &o) in residuals.iter_mut().zip(forecasts.iter()).zip(origins) {
        if !f.is_finite() {
            return Err(format!("non-finite forecast from origin {o}"));
        }
        *r = y[o + shape.lead - 1] - f;
    }
    // The sketch sorts its input; score on the same residuals (order does not matter).
    let sketch = ResidualQuantiles::from_residuals(residuals);
    let pinball = sketch.mean_pinball_of(residuals, qs);
    if !pinball.is_finite() {
        return Err("non-finite pinball loss".into());
    }
    Ok((params, pinball, sketch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::default_candidates;

    #[test]
    fn origins_leave_room_for_fitting() {
        assert!(matches!(cv_origins(10, 1), Err(ForecastError::NotEnoughHistory { have: 10, need: 48 })));
        let r = cv_origins(48, 1).expect("just enough");
        assert_eq!((*r.start(), *r.end()), (24, 47));
        let r = cv_origins(1000, 100).expect("plenty");
        // 901 possible origins, the newest 450 evaluated.
        assert_eq!((*r.start(), *r.end()), (451, 900));
    }

    #[test]
    fn not_enough_history_is_an_error_not_a_panic() {
        let y = vec![1.0; 30];
        let r = select(&default_candidates(), &y, Shape { step_ms: 10_000, lead: 90 }, &[0.1, 0.5, 0.9]);
        assert_eq!(r.expect_err("too short"), ForecastError::NotEnoughHistory { have: 30, need: 137 });
    }

    #[test]
    fn constant_series_has_zero_loss_and_no_spread() {
        let y = vec![7.5; 500];
        let s =
            select(&default_candidates(), &y, Shape { step_ms: 10_000, lead: 30 }, &[0.1, 0.5, 0.9]).expect("select");
        assert_eq!(s.cv_pinball, 0.0);
        assert_eq!(s.residuals.offset(0.1), 0.0);
        assert_eq!(s.residuals.offset(0.9), 0.0);
    }

    #[test]
    fn non_finite_history_is_refused() {
        let mut y = vec![1.0; 100];
        y[3] = f64::NAN;
        let r = select(&default_candidates(), &y, Shape { step_ms: 10_000, lead: 1 }, &[0.5]);
        assert!(matches!(r, Err(ForecastError::BadRequest(_))), "{r:?}");
    }
}
