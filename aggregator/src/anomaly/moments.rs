//! Streaming first and second moments of a vector signal: weighted Welford with optional
//! exponential forgetting.
//!
//! With `decay = 1` every update is plain Welford and [`Moments::mean`] and
//! [`Moments::covariance`] equal the batch mean and population covariance (divide by `n`)
//! of the samples, to rounding. With `decay < 1` the old weight is multiplied by `decay`
//! before each sample is added (West 1979, weighted incremental update), so the moments are
//! those of an exponentially weighted window of about `1 / (1 − decay)` samples.
//!
//! Missing values: a non-finite value (NaN, ±inf) is imputed with the running mean of its
//! signal just before that sample, so the moments are exactly the batch moments of the
//! imputed sequence. An imputed value neither moves its mean nor adds deviation at that
//! step, so a signal's variance and covariances shrink roughly by its coverage (the weight
//! share of samples where it was observed, [`Moments::coverage`]). Before a signal's first
//! observation its running mean is undefined: its deviations are all zero, and the first
//! observed value becomes its mean, exactly as if every earlier sample had been imputed with
//! that value.

/// Streaming weighted mean, co-moment matrix and per-signal coverage of `dim` signals.
#[derive(Debug, Clone)]
pub struct Moments {
    dim: usize,
    /// Σ of sample weights (the sample count without forgetting).
    weight: f64,
    mean: Vec<f64>,
    /// Upper triangle (row-major, `i <= j`) of Σ w (x − mean)(x − mean)ᵀ.
    comoment: Vec<f64>,
    /// Σ of the weights of the samples in which each signal was observed.
    observed: Vec<f64>,
    seen: Vec<bool>,
    samples: u64,
    /// Scratch: the current sample's deviations from the old mean.
    delta: Vec<f64>,
}

impl Moments {
    /// Empty moments of `dim` signals.
    pub fn new(dim: usize) -> Self {
        Moments {
            dim,
            weight: 0.0,
            mean: vec![0.0; dim],
            comoment: vec![0.0; dim * (dim + 1) / 2],
            observed: vec![0.0; dim],
            seen: vec![false; dim],
            samples: 0,
            delta: vec![0.0; dim],
        }
    }

    /// Number of signals.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Samples added so far (unweighted count).
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Σ of the sample weights: the sample count without forgetting, the effective window
    /// length with it.
    pub fn weight(&self) -> f64 {
        self.weight
    }

    /// Running (weighted) mean per signal; 0 for a signal never observed.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Whether signal `j` has been observed at least once.
    pub fn seen(&self, j: usize) -> bool {
        self.seen[j]
    }

    /// Share of the total weight carried by samples in which signal `j` was observed
    /// (0 before any sample).
    pub fn coverage(&self, j: usize) -> f64 {
        if self.weight > 0.0 { self.observed[j] / self.weight } else { 0.0 }
    }

    /// Adds one sample `x` (`dim` values; non-finite values are imputed, see the module docs)
    /// after multiplying the weight of everything before by `decay` (1 = no forgetting).
    /// Returns how many values were imputed.
    pub fn update(&mut self, x: &[f64], decay: f64) -> usize {
        debug_assert_eq!(x.len(), self.dim, "sample length");
        debug_assert!(decay > 0.0 && decay <= 1.0, "decay in (0, 1]");
        let old_weight = self.weight * decay;
        self.weight = old_weight + 1.0;
        self.samples += 1;
        let mut imputed = 0;
        for (j, &v) in x.iter().enumerate() {
            self.observed[j] *= decay;
            if v.is_finite() {
                if !self.seen[j] {
                    self.seen[j] = true;
                    self.mean[j] = v;
                }
                self.observed[j] += 1.0;
                self.delta[j] = v - self.mean[j];
            } else {
                imputed += 1;
                self.delta[j] = 0.0;
            }
        }
        // mean' = mean + δ / W';  C' = decay·C + δ (x − mean')ᵀ = decay·C + (W_old / W') δ δᵀ.
        let inv = 1.0 / self.weight;
        let scale = old_weight * inv;
        let mut idx = 0;
        for i in 0..self.dim {
            let di = self.delta[i] * scale;
            for j in i..self.dim {
                self.comoment[idx] = decay * self.comoment[idx] + di * self.delta[j];
                idx += 1;
            }
        }
        for j in 0..self.dim {
            self.mean[j] += self.delta[j] * inv;
        }
        imputed
    }

    /// Population covariance (co-moment / weight), a full `dim × dim` row-major matrix; all
    /// zeros before any sample.
    pub fn covariance(&self) -> Vec<f64> {
        let d = self.dim;
        let mut out = vec![0.0; d * d];
        if self.weight <= 0.0 {
            return out;
        }
        let inv = 1.0 / self.weight;
        let mut idx = 0;
        for i in 0..d {
            for j in i..d {
                let c = self.comoment[idx] * inv;
                out[i * d + j] = c;
                out[j * d + i] = c;
                idx += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(rows: &[Vec<f64>], weights: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let d = rows[0].len();
        let w: f64 = weights.iter().sum();
        let mut mean = vec![0.0; d];
        for (r, wi) in rows.iter().zip(weights) {
            for j in 0..d {
                mean[j] += wi * r[j] / w;
            }
        }
        let mut cov = vec![0.0; d * d];
        for (r, wi) in rows.iter().zip(weights) {
            for i in 0..d {
                for j in 0..d {
                    cov[i * d + j] += wi * (r[i] - mean[i]) * (r[j] - mean[j]) / w;
                }
            }
        }
        (mean, cov)
    }

    fn rows() -> Vec<Vec<f64>> {
        (0..50)
            .map(|i| {
                let t = i as f64;
                vec![1e6 + (t * 0.7).sin() * 10.0, t * 0.1 + (t * 1.3).cos(), ((i * 37) % 11) as f64]
            })
            .collect()
    }

    fn assert_close(a: &[f64], b: &[f64], tol: f64) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn without_forgetting_equals_batch_population_moments() {
        let rows = rows();
        let mut m = Moments::new(3);
        for r in &rows {
            m.update(r, 1.0);
        }
        let (mean, cov) = batch(&rows, &vec![1.0; rows.len()]);
        assert_eq!(m.weight(), 50.0);
        assert_close(m.mean(), &mean, 1e-12);
        assert_close(&m.covariance(), &cov, 1e-9);
        assert_eq!(m.coverage(0), 1.0);
    }

    #[test]
    fn forgetting_equals_exponentially_weighted_batch_moments() {
        let rows = rows();
        let decay: f64 = 0.9;
        let mut m = Moments::new(3);
        for r in &rows {
            m.update(r, decay);
        }
        let n = rows.len();
        let weights: Vec<f64> = (0..n).map(|i| decay.powi((n - 1 - i) as i32)).collect();
        let (mean, cov) = batch(&rows, &weights);
        assert!((m.weight() - weights.iter().sum::<f64>()).abs() < 1e-9);
        assert_close(m.mean(), &mean, 1e-12);
        assert_close(&m.covariance(), &cov, 1e-9);
    }

    #[test]
    fn missing_values_are_imputed_with_the_running_mean() {
        let mut m = Moments::new(2);
        // signal 1 is unseen for two samples: its first value becomes its mean retroactively
        assert_eq!(m.update(&[1.0, f64::NAN], 1.0), 1);
        m.update(&[2.0, f64::INFINITY], 1.0);
        m.update(&[3.0, 10.0], 1.0);
        m.update(&[4.0, 14.0], 1.0);
        m.update(&[5.0, f64::NAN], 1.0);
        // signal 1 as imputed: 10, 10 (its first value), 10, 14, 11 (the running mean then)
        assert!((m.mean()[1] - 11.0).abs() < 1e-12);
        assert!((m.coverage(1) - 0.4).abs() < 1e-12);
        let cov = m.covariance();
        // population variance of [10, 10, 10, 14, 11] = (1 + 1 + 1 + 9 + 0) / 5
        assert!((cov[3] - 12.0 / 5.0).abs() < 1e-12, "{}", cov[3]);
        // covariance with signal 0 ([1..5], mean 3): Σ (x0 − 3)(x1 − 11) / 5 = (2 + 1 + 0 + 3 + 0) / 5
        assert!((cov[1] - 6.0 / 5.0).abs() < 1e-12, "{}", cov[1]);
        assert!(m.seen(1));
    }
}
