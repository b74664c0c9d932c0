//! Linear trend: a least-squares line through the last `W` points, extrapolated.
//!
//! The window is fitted: candidates are ½, 1, 2, 4 and 8 leads long and the longest the
//! fitting history allows (at least [`MIN_WINDOW`] points, and leaving at least eight
//! fitting origins); the one with the smallest mean absolute error at the fitting lead
//! over the fitting origins it can serve wins (a long window is judged on fewer, later
//! origins; on a steady trend it wins, after a change of slope a short one does). Many origins
//! are served from prefix sums of `y` and `i·y` (values centred on their mean to keep the
//! sums well conditioned), so each costs O(1); a few origins are summed directly without
//! allocating.
//!
//! Parameters: `params.0[0]` is the window in points.

use super::{ForecastError, Forecaster, Params, Shape, fit_lead};

/// The shortest window a line is fitted to.
pub const MIN_WINDOW: usize = 4;
/// Windows tried, in leads.
const WINDOW_LEADS: [f64; 5] = [0.5, 1.0, 2.0, 4.0, 8.0];
/// Fewest fitting origins a window is judged on.
const MIN_FIT_ORIGINS: usize = 8;

/// The linear trend forecaster (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct LinearTrend;

/// Prefix sums of `y − c` and `i·(y − c)`.
struct Prefix {
    center: f64,
    sy: Vec<f64>,
    sxy: Vec<f64>,
}

impl Prefix {
    fn new(y: &[f64]) -> Self {
        let center = if y.is_empty() { 0.0 } else { y.iter().sum::<f64>() / y.len() as f64 };
        let mut sy = Vec::with_capacity(y.len() + 1);
        let mut sxy = Vec::with_capacity(y.len() + 1);
        let (mut a, mut b) = (0.0, 0.0);
        sy.push(0.0);
        sxy.push(0.0);
        for (i, &v) in y.iter().enumerate() {
            a += v - center;
            b += i as f64 * (v - center);
            sy.push(a);
            sxy.push(b);
        }
        Self { center, sy, sxy }
    }

    /// The line through `y[o − w..o]` evaluated `lead` steps after `o − 1`.
    fn forecast(&self, o: usize, w: usize, lead: usize) -> f64 {
        let start = o - w;
        let sy = self.sy[o] - self.sy[start];
        // Σ (i − start)·y'
        let sxy = (self.sxy[o] - self.sxy[start]) - start as f64 * sy;
        self.center + line_at(w, sy, sxy, lead)
    }
}

/// Value at `x = w − 1 + lead` of the least-squares line through `(x, y)`, `x = 0..w`, given
/// `Σ y` and `Σ x·y` (of values relative to any centre).
fn line_at(w: usize, sy: f64, sxy: f64, lead: usize) -> f64 {
    let n = w as f64;
    let mx = (n - 1.0) / 2.0;
    let sxx = n * (n * n - 1.0) / 12.0;
    let my = sy / n;
    let slope = (sxy - mx * sy) / sxx;
    my + slope * ((w - 1 + lead) as f64 - mx)
}

/// The line through `y[o − w..o]`, summed directly.
fn direct_forecast(y: &[f64], o: usize, w: usize, lead: usize) -> f64 {
    let window = &y[o - w..o];
    let c = window[0];
    let (mut sy, mut sxy) = (0.0, 0.0);
    for (x, &v) in window.iter().enumerate() {
        sy += v - c;
        sxy += x as f64 * (v - c);
    }
    c + line_at(w, sy, sxy, lead)
}

impl Forecaster for LinearTrend {
    fn name(&self) -> &'static str {
        "linear_trend"
    }

    fn fit(&self, y: &[f64], shape: Shape) -> Result<Params, ForecastError> {
        let n = y.len();
        let lead = fit_lead(n, shape.lead);
        // Each window is judged on the origins `w..=n − lead`; keep at least a few.
        let max_window = n.saturating_sub(lead + MIN_FIT_ORIGINS - 1);
        if max_window < MIN_WINDOW {
            // Too little history to choose: half of what there is.
            let w = (n.saturating_sub(lead) / 2).max(MIN_WINDOW).min(n);
            return Ok(Params([w as f64, 0.0, 0.0, 0.0]));
        }
        let mut windows = [0usize; WINDOW_LEADS.len() + 1];
        let mut count = 0;
        let from_leads = WINDOW_LEADS.map(|k| ((k * shape.lead.max(1) as f64).round() as usize).max(MIN_WINDOW));
        for w in from_leads.into_iter().chain([max_window]) {
            if w <= max_window && !windows[..count].contains(&w) {
                windows[count] = w;
                count += 1;
            }
        }
        let last = n - lead; // origin whose target is y[n − 1]
        let prefix = Prefix::new(y);
        let mut best = (windows[0], f64::INFINITY);
        for &w in &windows[..count] {
            let mut err = 0.0;
            for o in w..=last {
                err += (y[o + lead - 1] - prefix.forecast(o, w, lead)).abs();
            }
            let mae = err / (last + 1 - w) as f64;
            if mae < best.1 {
                best = (w, mae);
            }
        }
        Ok(Params([best.0 as f64, 0.0, 0.0, 0.0]))
    }

    fn min_history(&self, params: &Params, _shape: Shape) -> usize {
        (params.0[0] as usize).max(MIN_WINDOW)
    }

    fn forecast(
        &self,
        y: &[f64],
        shape: Shape,
        params: &Params,
        origins: &[usize],
        out: &mut [f64],
    ) -> Result<(), ForecastError> {
        let w = self.min_history(params, shape);
        if let Some(&bad) = origins.iter().find(|&&o| o < w || o > y.len()) {
            return Err(ForecastError::Model {
                model: self.name(),
                reason: format!("origin {bad} is outside {w}..={}", y.len()),
            });
        }
        let lead = shape.lead.max(1);
        if origins.len().saturating_mul(w) <= 4 * y.len() {
            for (o, &origin) in out.iter_mut().zip(origins) {
                *o = direct_forecast(y, origin, w, lead);
            }
        } else {
            let prefix = Prefix::new(y);
            for (o, &origin) in out.iter_mut().zip(origins) {
                *o = prefix.forecast(origin, w, lead);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extrapolates_a_line_by_both_paths() {
        let y: Vec<f64> = (0..100).map(|i| 1e9 + 250.0 * i as f64).collect();
        let shape = Shape { step_ms: 60_000, lead: 10 };
        let p = Params([20.0, 0.0, 0.0, 0.0]);
        let prefix = Prefix::new(&y);
        for o in [20, 57, 100] {
            let want = 1e9 + 250.0 * (o + 9) as f64;
            let a = direct_forecast(&y, o, 20, 10);
            let b = prefix.forecast(o, 20, 10);
            assert!((a - want).abs() < 1e-3 && (b - want).abs() < 1e-3, "origin {o}: {a} {b} vs {want}");
        }
        let mut out = [0.0];
        LinearTrend.forecast(&y, shape, &p, &[100], &mut out).expect("forecast");
        assert!((out[0] - (1e9 + 250.0 * 109.0)).abs() < 1e-3);
        let fitted = LinearTrend.fit(&y, shape).expect("fit");
        assert!(fitted.0[0] as usize >= MIN_WINDOW);
    }

    #[test]
    fn prefers_a_short_window_after_a_kink() {
        // Flat, then rising: a short window sees the new slope.
        let y: Vec<f64> = (0..400).map(|i| if i < 200 { 10.0 } else { 10.0 + (i - 200) as f64 }).collect();
        let shape = Shape { step_ms: 60_000, lead: 10 };
        let p = LinearTrend.fit(&y, shape).expect("fit");
        assert_eq!(p.0[0], 5.0, "{p:?}");
    }

    #[test]
    fn origins_before_the_window_are_an_error() {
        let y = vec![1.0; 30];
        let mut out = [0.0];
        let shape = Shape { step_ms: 1000, lead: 1 };
        let r = LinearTrend.forecast(&y, shape, &Params([10.0, 0.0, 0.0, 0.0]), &[5], &mut out);
        assert!(matches!(r, Err(ForecastError::Model { .. })), "{r:?}");
    }
}
