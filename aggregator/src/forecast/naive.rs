//! Seasonal naive: the forecast is the last value seen at the same phase of the season.
//!
//! The season is daily when the fitting history holds at least one day, else hourly when
//! it holds an hour, else there is none and the forecast is the last value (plain naive).
//! For a lead longer than the season the value from as many seasons back as needed is used
//! (`y[o + h − 1 − k·m]`, `k = ⌈h/m⌉`), so a forecast only ever reads history before its
//! origin. Parameters: `params.0[0]` is the season in steps (0 for none).
//!
//! It is the baseline every other candidate must beat, and the usual winner for strongly
//! periodic series at long leads.

use super::{ForecastError, Forecaster, Params, Shape};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// The seasonal naive forecaster (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct SeasonalNaive;

impl SeasonalNaive {
    /// The season in steps for `fit_len` points of history at `step_ms`.
    pub fn season_for(fit_len: usize, step_ms: i64) -> usize {
        for period_ms in [DAY_MS, HOUR_MS] {
            let m = (period_ms / step_ms.max(1)) as usize;
            if m >= 2 && period_ms % step_ms.max(1) == 0 && fit_len >= m {
                return m;
            }
        }
        0
    }

    fn season(params: &Params) -> usize {
        params.0[0] as usize
    }
}

impl Forecaster for SeasonalNaive {
    fn name(&self) -> &'static str {
        "seasonal_naive"
    }

    fn fit(&self, y: &[f64], shape: Shape) -> Result<Params, ForecastError> {
        Ok(Params([Self::season_for(y.len(), shape.step_ms) as f64, 0.0, 0.0, 0.0]))
    }

    fn min_history(&self, params: &Params, _shape: Shape) -> usize {
        Self::season(params).max(1)
    }

    fn forecast(
        &self,
        y: &[f64],
        shape: Shape,
        params: &Params,
        origins: &[usize],
        out: &mut [f64],
    ) -> Result<(), ForecastError> {
        let m = Self::season(params);
        let h = shape.lead.max(1);
        for (o, &origin) in out.iter_mut().zip(origins) {
            debug_assert!(origin >= self.min_history(params, shape) && origin <= y.len());
            *o = if m == 0 {
                y[origin - 1]
            } else {
                let k = h.div_ceil(m);
                y[origin + h - 1 - k * m]
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn season_follows_history_length() {
        let step = 300_000; // 5 min: 288 per day, 12 per hour
        assert_eq!(SeasonalNaive::season_for(288 * 3, step), 288);
        assert_eq!(SeasonalNaive::season_for(287, step), 12);
        assert_eq!(SeasonalNaive::season_for(11, step), 0);
        // 7 s does not divide an hour: no season.
        assert_eq!(SeasonalNaive::season_for(100_000, 7_000), 0);
    }

    #[test]
    fn repeats_the_previous_season() {
        let y: Vec<f64> = (0..12).map(|i| (i % 4) as f64).collect(); // season 4 with 1-h steps
        let p = Params([4.0, 0.0, 0.0, 0.0]);
        let mut out = [0.0; 3];
        // Lead 1 from origin 8 → y[8 − 4] = 0; lead 6 → k = 2, y[8 + 5 − 8] = 1.
        SeasonalNaive.forecast(&y, Shape { step_ms: 3_600_000, lead: 1 }, &p, &[8, 9, 10], &mut out).expect("ok");
        assert_eq!(out, [0.0, 1.0, 2.0]);
        SeasonalNaive.forecast(&y, Shape { step_ms: 3_600_000, lead: 6 }, &p, &[8, 9, 10], &mut out).expect("ok");
        assert_eq!(out, [1.0, 2.0, 3.0]);
        let none = Params::default();
        SeasonalNaive.forecast(&y, Shape { step_ms: 3_600_000, lead: 6 }, &none, &[8, 9, 10], &mut out).expect("ok");
        assert_eq!(out, [3.0, 0.0, 1.0]);
    }
}
