//! Exponential smoothing: simple (level only), Holt's linear trend and Holt's damped trend.
//!
//! State after `y[..t]`: level `l` and trend `b`. Each new point updates
//! `l' = α·y + (1−α)·(l + φ·b)` and `b' = β·(l' − l) + (1−β)·φ·b`; the forecast `h` steps
//! ahead is `l + (φ + φ² + … + φʰ)·b` (`h·b` when `φ = 1`, and `b = 0` for simple
//! smoothing). The state starts from the first [`INIT_POINTS`] points: simple smoothing
//! starts at the first value and smooths the rest; the trend methods start from the
//! least-squares line through them (level = the line at the last of them, trend = its
//! slope), so a steady trend is known from the start instead of being learnt from a
//! noisy first difference. No forecast is made from fewer points.
//!
//! Fitting picks `α`, `β` and `φ` from small grids by coordinate descent (two rounds),
//! minimising the mean absolute error of forecasts at the fitting lead (the requested
//! lead, capped to a third of the fitting history) over the last two thirds of the fitting
//! history: multi-step fitting keeps long-lead trends honest, where one-step fitting tends
//! to pick trends that run away. The damping grid scales with the lead (`φ = 1 − 1/τ` for
//! a trend memory `τ` of a quarter, one and four leads), so the same candidates work at
//! 10-second and 5-minute steps. One filter pass costs O(n) and yields the forecast at
//! every origin, so cross-validation over all origins costs the same as one forecast.
//!
//! Parameters: `params.0 = [α, β, φ, 0]`.

use super::{ForecastError, Forecaster, Params, Shape, fit_lead};

/// Points used to initialise the level and trend; forecasts need at least this history.
pub const INIT_POINTS: usize = 24;

const ALPHAS: [f64; 9] = [0.01, 0.03, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9, 1.0];
const BETAS: [f64; 5] = [0.001, 0.01, 0.05, 0.15, 0.4];
/// Trend memories, in leads, for the damping grid.
const TREND_MEMORY_LEADS: [f64; 3] = [0.25, 1.0, 4.0];

/// Which trend the smoothing carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trend {
    /// Simple exponential smoothing (level only).
    None,
    /// Holt's linear trend (`φ = 1`).
    Linear,
    /// Holt's damped trend (`φ < 1`).
    Damped,
}

/// An exponential smoothing forecaster (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Ets {
    pub trend: Trend,
}

impl Ets {
    pub const SIMPLE: Ets = Ets { trend: Trend::None };
    pub const HOLT: Ets = Ets { trend: Trend::Linear };
    pub const DAMPED: Ets = Ets { trend: Trend::Damped };
}

#[derive(Debug, Clone, Copy)]
struct Coefs {
    alpha: f64,
    beta: f64,
    phi: f64,
}

/// Runs the filter over `y[..upto]`, calling `emit(t, forecast)` with the forecast `lead`
/// steps ahead from every origin `t` in `first..=upto` (the state after `y[..t]`).
fn filter(y: &[f64], trend: Trend, c: Coefs, lead: usize, first: usize, upto: usize, mut emit: impl FnMut(usize, f64)) {
    let init = INIT_POINTS.min(y.len());
    if init == 0 {
        return;
    }
    // State after y[..start]: the first value, or the line through the first `init`.
    let (mut level, mut slope, start) = if trend == Trend::None {
        (y[0], 0.0, 1)
    } else {
        let b = ols_slope(&y[..init]);
        let mean = y[..init].iter().sum::<f64>() / init as f64;
        (mean + b * (init - 1) as f64 / 2.0, b, init)
    };
    let (beta, phi) = if trend == Trend::None { (0.0, 1.0) } else { (c.beta, c.phi) };
    let damp_sum =
        if phi >= 1.0 { lead as f64 } else { phi * (1.0 - phi.powi(lead.min(i32::MAX as usize) as i32)) / (1.0 - phi) };
    let alpha = c.alpha;
    for t in start..=upto.min(y.len()) {
        if t >= first {
            emit(t, level + damp_sum * slope);
        }
        if t == y.len() {
            break;
        }
        let prev = level;
        level = alpha * y[t] + (1.0 - alpha) * (level + phi * slope);
        slope = beta * (level - prev) + (1.0 - beta) * phi * slope;
    }
}

/// Least-squares slope of `y` against its index (0 for fewer than two points).
fn ols_slope(y: &[f64]) -> f64 {
    let n = y.len() as f64;
    if y.len() < 2 {
        return 0.0;
    }
    let mx = (n - 1.0) / 2.0;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, &v) in y.iter().enumerate() {
        let dx = i as f64 - mx;
        sxy += dx * (v - my);
        sxx += dx * dx;
    }
    sxy / sxx
}

impl Ets {
    /// Mean absolute error of `lead`-step forecasts over the last two thirds of `y`.
    fn fit_error(&self, y: &[f64], c: Coefs, lead: usize) -> f64 {
        let first = (y.len() / 3).max(INIT_POINTS);
        let last = y.len().saturating_sub(lead); // origin whose target is y[len − 1]
        if last < first {
            return f64::INFINITY;
        }
        let (mut sum, mut n) = (0.0, 0usize);
        filter(y, self.trend, c, lead, first, last, |t, f| {
            sum += (y[t + lead - 1] - f).abs();
            n += 1;
        });
        if n == 0 || !sum.is_finite() { f64::INFINITY } else { sum / n as f64 }
    }
}

impl Forecaster for Ets {
    fn name(&self) -> &'static str {
        match self.trend {
            Trend::None => "ses",
            Trend::Linear => "holt",
            Trend::Damped => "holt_damped",
        }
    }

    fn fit(&self, y: &[f64], shape: Shape) -> Result<Params, ForecastError> {
        let lead = fit_lead(y.len(), shape.lead);
        let lead_steps = shape.lead.max(1) as f64;
        let damped = TREND_MEMORY_LEADS.map(|k| 1.0 - 1.0 / (k * lead_steps).max(2.0));
        let phis: &[f64] = if self.trend == Trend::Damped { &damped } else { &[1.0] };
        let mut best = Coefs { alpha: 0.2, beta: 0.01, phi: phis[phis.len() / 2] };
        let mut best_err = self.fit_error(y, best, lead);
        let rounds = if self.trend == Trend::None { 1 } else { 2 };
        for _ in 0..rounds {
            for &alpha in &ALPHAS {
                let c = Coefs { alpha, ..best };
                let e = self.fit_error(y, c, lead);
                if e < best_err {
                    (best, best_err) = (c, e);
                }
            }
            if self.trend == Trend::None {
                continue;
            }
            for &beta in &BETAS {
                let c = Coefs { beta, ..best };
                let e = self.fit_error(y, c, lead);
                if e < best_err {
                    (best, best_err) = (c, e);
                }
            }
            for &phi in phis {
                let c = Coefs { phi, ..best };
                let e = self.fit_error(y, c, lead);
                if e < best_err {
                    (best, best_err) = (c, e);
                }
            }
        }
        Ok(Params([best.alpha, best.beta, best.phi, 0.0]))
    }

    fn min_history(&self, _params: &Params, _shape: Shape) -> usize {
        INIT_POINTS
    }

    fn forecast(
        &self,
        y: &[f64],
        shape: Shape,
        params: &Params,
        origins: &[usize],
        out: &mut [f64],
    ) -> Result<(), ForecastError> {
        let [alpha, beta, phi, _] = params.0;
        let Some(&last) = origins.last() else { return Ok(()) };
        debug_assert!(origins.windows(2).all(|w| w[0] <= w[1]), "origins ascending");
        let mut next = 0;
        filter(y, self.trend, Coefs { alpha, beta, phi }, shape.lead.max(1), origins[0], last, |t, f| {
            while next < origins.len() && origins[next] == t {
                out[next] = f;
                next += 1;
            }
        });
        if next < origins.len() {
            return Err(ForecastError::Model {
                model: self.name(),
                reason: format!("origin {} is outside 1..={}", origins[next], y.len()),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape { step_ms: 10_000, lead: 5 };

    #[test]
    fn holt_extrapolates_a_clean_line_exactly() {
        let y: Vec<f64> = (0..200).map(|i| 3.0 + 0.5 * i as f64).collect();
        let p = Ets::HOLT.fit(&y, SHAPE).expect("fit");
        let mut out = [0.0; 2];
        Ets::HOLT.forecast(&y, SHAPE, &p, &[100, 200], &mut out).expect("forecast");
        // Origin 100 forecasts y[104]; origin 200 forecasts y[204].
        assert!((out[0] - 55.0).abs() < 1e-6, "{out:?}");
        assert!((out[1] - 105.0).abs() < 1e-6, "{out:?}");
    }

    #[test]
    fn simple_smoothing_of_a_constant_is_the_constant() {
        let y = vec![42.0; 50];
        let p = Ets::SIMPLE.fit(&y, SHAPE).expect("fit");
        let mut out = [0.0; 3];
        Ets::SIMPLE.forecast(&y, SHAPE, &p, &[10, 20, 50], &mut out).expect("forecast");
        assert_eq!(out, [42.0; 3]);
    }

    #[test]
    fn damped_trend_flattens() {
        let y: Vec<f64> = (0..300).map(|i| i as f64).collect();
        let p = Params([0.5, 0.1, 0.9, 0.0]);
        let long = Shape { step_ms: 10_000, lead: 1000 };
        let mut out = [0.0];
        Ets::DAMPED.forecast(&y, long, &p, &[300], &mut out).expect("forecast");
        // Level 299 + slope 1 · 0.9/(1−0.9) = 9 more at most.
        assert!(out[0] > 299.0 && out[0] < 309.0, "{out:?}");
    }

    #[test]
    fn origins_past_the_end_are_an_error() {
        let y = vec![1.0; 20];
        let mut out = [0.0];
        let err = Ets::SIMPLE.forecast(&y, SHAPE, &Params([0.5, 0.0, 1.0, 0.0]), &[21], &mut out);
        assert!(matches!(err, Err(ForecastError::Model { .. })), "{err:?}");
    }
}
