//! Turning point forecasts into quantiles, and scoring quantiles.
//!
//! - [`pinball`] is the loss every candidate is judged by: for quantile `q`, actual `y`
//!   and forecast `f`, `q·(y−f)` when `y ≥ f` and `(1−q)·(f−y)` otherwise. Its mean over
//!   a set of quantiles ([`mean_pinball`]) is the selection criterion.
//! - [`ResidualQuantiles`] holds the empirical distribution of a model's cross-validation
//!   residuals (`actual − point forecast`) at one lead. A quantile forecast is the point
//!   forecast plus the residuals' `q`-quantile, so it is monotone in `q` by construction
//!   and calibrated on the model's own out-of-sample errors at that very lead.
//! - To stay small per series the distribution is kept as at most [`SKETCH_KNOTS`] order
//!   statistics (the residual quantiles at `0, 1/100, …, 1`); a requested `q` interpolates
//!   between them exactly as the type-7 estimator interpolates between sorted residuals.

/// Order statistics kept per residual distribution (quantiles at steps of 1 %).
pub const SKETCH_KNOTS: usize = 101;

/// The pinball (quantile) loss of forecast `f` for quantile `q` when `y` happened.
pub fn pinball(y: f64, f: f64, q: f64) -> f64 {
    let d = y - f;
    if d >= 0.0 { q * d } else { (q - 1.0) * d }
}

/// Mean pinball loss of one set of quantile forecasts (`values[i]` for `qs[i]`) for actual `y`.
pub fn mean_pinball(y: f64, qs: &[f64], values: &[f64]) -> f64 {
    debug_assert_eq!(qs.len(), values.len());
    if qs.is_empty() {
        return 0.0;
    }
    qs.iter().zip(values).map(|(&q, &v)| pinball(y, v, q)).sum::<f64>() / qs.len() as f64
}

/// The type-7 (linear interpolation) `q`-quantile of ascending `sorted`; NaN when empty.
pub fn quantile_of_sorted(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            let frac = pos - lo as f64;
            sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        }
    }
}

/// The empirical distribution of a model's residuals at one lead, as a small sketch.
#[derive(Debug, Clone, PartialEq)]
pub struct ResidualQuantiles {
    /// Ascending: all residuals when there are at most [`SKETCH_KNOTS`], else the
    /// residual quantiles at `k / (SKETCH_KNOTS − 1)`.
    knots: Box<[f64]>,
    /// How many residuals the sketch summarises.
    count: usize,
}

impl ResidualQuantiles {
    /// Summarises `residuals` (any order; sorted in place). Non-finite values must have
    /// been removed by the caller.
    pub fn from_residuals(residuals: &mut [f64]) -> Self {
        residuals.sort_unstable_by(f64::total_cmp);
        let count = residuals.len();
        let knots: Box<[f64]> = if count <= SKETCH_KNOTS {
            residuals.into()
        } else {
            (0..SKETCH_KNOTS).map(|k| quantile_of_sorted(residuals, k as f64 / (SKETCH_KNOTS - 1) as f64)).collect()
        };
        Self { knots, count }
    }

    /// The residuals' `q`-quantile (0 when there are none).
    pub fn offset(&self, q: f64) -> f64 {
        if self.knots.is_empty() { 0.0 } else { quantile_of_sorted(&self.knots, q) }
    }

    /// How many residuals were summarised.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Quantile forecasts around `point` for ascending `qs`, written to `out`: monotone
    /// in `q`, floored at 0 when `non_negative`.
    pub fn quantiles_into(&self, point: f64, qs: &[f64], non_negative: bool, out: &mut [f64]) {
        debug_assert_eq!(qs.len(), out.len());
        let mut prev = f64::NEG_INFINITY;
        for (o, &q) in out.iter_mut().zip(qs) {
            let mut v = point + self.offset(q);
            if non_negative {
                v = v.max(0.0);
            }
            // Interpolated knots are monotone already; this only absorbs rounding.
            v = v.max(prev);
            prev = v;
            *o = v;
        }
    }

    /// Mean over `residuals` of the mean pinball loss (over `qs`) of the quantile forecasts
    /// this sketch gives, i.e. the score of "point forecast + residual quantile".
    pub fn mean_pinball_of(&self, residuals: &[f64], qs: &[f64]) -> f64 {
        if residuals.is_empty() || qs.is_empty() {
            return f64::NAN;
        }
        let mut total = 0.0;
        for &q in qs {
            let off = self.offset(q);
            // pinball(y, f + off, q) = pinball(r, off, q) with r = y − f.
            total += residuals.iter().map(|&r| pinball(r, off, q)).sum::<f64>();
        }
        total / (residuals.len() * qs.len()) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinball_loss_table() {
        // (actual, forecast, q, loss)
        let table = [
            (10.0, 8.0, 0.5, 1.0),
            (8.0, 10.0, 0.5, 1.0),
            (10.0, 8.0, 0.9, 1.8),
            (8.0, 10.0, 0.9, 0.2),
            (10.0, 8.0, 0.1, 0.2),
            (8.0, 10.0, 0.1, 1.8),
            (5.0, 5.0, 0.3, 0.0),
            (-1.0, 1.0, 0.25, 1.5),
            (0.0, 0.0, 0.99, 0.0),
        ];
        for (y, f, q, want) in table {
            let got = pinball(y, f, q);
            assert!((got - want).abs() < 1e-12, "pinball({y}, {f}, {q}) = {got}, want {want}");
        }
        let got = mean_pinball(10.0, &[0.1, 0.5, 0.9], &[8.0, 10.0, 12.0]);
        assert!((got - (0.2 + 0.0 + 0.2) / 3.0).abs() < 1e-12, "{got}");
    }

    #[test]
    fn type7_quantiles_interpolate() {
        let s = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile_of_sorted(&s, 0.0), 1.0);
        assert_eq!(quantile_of_sorted(&s, 0.5), 3.0);
        assert_eq!(quantile_of_sorted(&s, 1.0), 5.0);
        assert!((quantile_of_sorted(&s, 0.1) - 1.4).abs() < 1e-12);
        assert!(quantile_of_sorted(&[], 0.5).is_nan());
        assert_eq!(quantile_of_sorted(&[7.0], 0.9), 7.0);
    }

    #[test]
    fn sketch_matches_exact_quantiles_and_is_monotone() {
        let mut r: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 1000) as f64 / 10.0 - 50.0).collect();
        let mut exact = r.clone();
        exact.sort_unstable_by(f64::total_cmp);
        let sketch = ResidualQuantiles::from_residuals(&mut r);
        assert_eq!(sketch.count(), 1000);
        for q in [0.01, 0.1, 0.25, 0.5, 0.9, 0.975] {
            let want = quantile_of_sorted(&exact, q);
            assert!((sketch.offset(q) - want).abs() < 0.11, "q {q}: {} vs {want}", sketch.offset(q));
        }
        let qs = [0.05, 0.1, 0.5, 0.9, 0.95];
        let mut out = [0.0; 5];
        sketch.quantiles_into(10.0, &qs, false, &mut out);
        assert!(out.windows(2).all(|w| w[0] <= w[1]), "{out:?}");
        sketch.quantiles_into(10.0, &qs, true, &mut out);
        assert!(out.iter().all(|&v| v >= 0.0), "{out:?}");
        assert!(out.windows(2).all(|w| w[0] <= w[1]), "{out:?}");
    }

    #[test]
    fn no_residuals_means_no_spread() {
        let sketch = ResidualQuantiles::from_residuals(&mut []);
        let mut out = [0.0; 3];
        sketch.quantiles_into(4.0, &[0.1, 0.5, 0.9], false, &mut out);
        assert_eq!(out, [4.0; 3]);
    }
}
