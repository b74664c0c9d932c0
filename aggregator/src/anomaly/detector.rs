//! The residual model of `models/eval/DETECTOR.md` (residual-EWMA v1), fitted from streaming
//! moments, and the wall-time EWMA that smooths its error.
//!
//! Fit (DETECTOR.md steps 1–5) on the signals whose coverage reaches `min_coverage`:
//! standardise with the population std (a std below `min_std` becomes 1), take the
//! covariance `C` of the standardised signals, its top `k` eigenvectors `V_k` covering
//! `variance` of the trace, the residual projector `R = I − V_k V_kᵀ` and the residual std
//! per signal `s_j = max(sqrt((R C R)_jj), residual_floor)`. Signals below the coverage are
//! left out of the model: their residual is always 0.
//!
//! Score (step 7): `z = (x − mean) / std`, `r = (z − V_k (V_kᵀ z)) / s`, `e = Σ r_j²`, in
//! O(d·k); a missing (non-finite) value is imputed with the model's mean (`z_j = 0`). The
//! folded affine form `r = W x − b` of the reference is available as [`ResidualModel::weight`]
//! and [`ResidualModel::bias`].

use super::AnomalyError;
use super::moments::Moments;
use super::pca::{components_for_share, symmetric_eigen};

/// What the fit needs from the configuration (see [`super::AnomalyConfig`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitParams {
    /// Share of the standardised variance the principal subspace keeps (0.9).
    pub variance: f64,
    /// A signal whose std is below this is treated as constant: std 1 (1e-6).
    pub min_std: f64,
    /// Lower bound of each signal's residual std, in standardised units (0.1).
    pub residual_floor: f64,
    /// Minimum share of the moments' weight in which a signal was observed for it to be modelled.
    pub min_coverage: f64,
}

/// A fitted residual model over `dim` signals (some possibly left out).
#[derive(Debug, Clone, PartialEq)]
pub struct ResidualModel {
    dim: usize,
    /// Indices of the modelled signals, increasing.
    active: Vec<usize>,
    /// Per modelled signal.
    mean: Vec<f64>,
    std: Vec<f64>,
    residual_std: Vec<f64>,
    /// `a × k` row-major, `a` = modelled signals.
    components: Vec<f64>,
    k: usize,
    /// All eigenvalues of `C`, descending (not clipped).
    eigenvalues: Vec<f64>,
    /// Σ_j (R C R)_jj / s_j²: the mean of `e` over the window the model was fitted on.
    expected_error: f64,
    /// Weight of the moments it was fitted on (the sample count without forgetting).
    fitted_weight: f64,
}

impl ResidualModel {
    /// Fits the model to `moments` (DETECTOR.md steps 1–5).
    pub fn fit(moments: &Moments, params: &FitParams) -> Result<Self, AnomalyError> {
        let dim = moments.dim();
        if moments.weight() <= 0.0 {
            return Err(AnomalyError::NoUsableSignals { min_coverage: params.min_coverage });
        }
        let active: Vec<usize> =
            (0..dim).filter(|&j| moments.seen(j) && moments.coverage(j) >= params.min_coverage).collect();
        if active.is_empty() {
            return Err(AnomalyError::NoUsableSignals { min_coverage: params.min_coverage });
        }
        let a = active.len();
        let cov = moments.covariance();
        let mean: Vec<f64> = active.iter().map(|&j| moments.mean()[j]).collect();
        let std: Vec<f64> = active
            .iter()
            .map(|&j| {
                let s = cov[j * dim + j].max(0.0).sqrt();
                if s < params.min_std { 1.0 } else { s }
            })
            .collect();
        // C = cov(x) ./ (std stdᵀ) on the modelled signals
        let mut c = vec![0.0; a * a];
        for (p, &i) in active.iter().enumerate() {
            for (q, &j) in active.iter().enumerate() {
                c[p * a + q] = cov[i * dim + j] / (std[p] * std[q]);
            }
        }
        let eig = symmetric_eigen(&c, a);
        let k = components_for_share(&eig.values, params.variance);
        let mut components = vec![0.0; a * k];
        for r in 0..a {
            components[r * k..(r + 1) * k].copy_from_slice(&eig.vectors[r * a..r * a + k]);
        }
        // R = I − V_k V_kᵀ; residual variance diag(R C R)
        let mut resid = vec![0.0; a * a];
        for p in 0..a {
            for q in 0..a {
                let vv: f64 = (0..k).map(|m| components[p * k + m] * components[q * k + m]).sum();
                resid[p * a + q] = if p == q { 1.0 } else { 0.0 } - vv;
            }
        }
        let mut rc = vec![0.0; a * a];
        for p in 0..a {
            for q in 0..a {
                rc[p * a + q] = (0..a).map(|m| resid[p * a + m] * c[m * a + q]).sum();
            }
        }
        let mut residual_std = Vec::with_capacity(a);
        let mut expected_error = 0.0;
        for p in 0..a {
            let var: f64 = (0..a).map(|m| rc[p * a + m] * resid[m * a + p]).sum::<f64>().max(0.0);
            let s = var.sqrt().max(params.residual_floor);
            expected_error += var / (s * s);
            residual_std.push(s);
        }
        Ok(ResidualModel {
            dim,
            active,
            mean,
            std,
            residual_std,
            components,
            k,
            eigenvalues: eig.values,
            expected_error,
            fitted_weight: moments.weight(),
        })
    }

    /// Number of input signals (modelled or not).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Indices of the modelled signals (coverage reached `min_coverage`), increasing.
    pub fn active(&self) -> &[usize] {
        &self.active
    }

    /// Number of principal components `k`.
    pub fn components(&self) -> usize {
        self.k
    }

    /// Eigenvalues of the standardised covariance of the modelled signals, descending.
    pub fn eigenvalues(&self) -> &[f64] {
        &self.eigenvalues
    }

    /// Mean of `e` over the fitted window (Σ_j (R C R)_jj / s_j²): about the number of
    /// modelled signals whose residual std is above the floor.
    pub fn expected_error(&self) -> f64 {
        self.expected_error
    }

    /// Weight of the moments the model was fitted on (their sample count without forgetting).
    pub fn fitted_weight(&self) -> f64 {
        self.fitted_weight
    }

    /// `(mean, std, residual std)` of input signal `j`; `None` if it is not modelled.
    pub fn signal_scale(&self, j: usize) -> Option<(f64, f64, f64)> {
        let p = self.active.binary_search(&j).ok()?;
        Some((self.mean[p], self.std[p], self.residual_std[p]))
    }

    /// The error `e = Σ_j r_j²` of sample `x` (`dim` values; non-finite values are imputed
    /// with the model's mean). Writes each signal's scaled residual `r_j` into `residuals`
    /// (0 for signals not modelled) and returns `(e, number of imputed modelled values)`.
    pub fn residuals(&self, x: &[f64], residuals: &mut [f64]) -> (f64, usize) {
        debug_assert_eq!(x.len(), self.dim);
        debug_assert_eq!(residuals.len(), self.dim);
        residuals.fill(0.0);
        let k = self.k;
        let mut imputed = 0;
        // z into the residual slots of the modelled signals, then y = V_kᵀ z
        let mut y = vec![0.0; k];
        for (p, &j) in self.active.iter().enumerate() {
            let z = if x[j].is_finite() {
                (x[j] - self.mean[p]) / self.std[p]
            } else {
                imputed += 1;
                0.0
            };
            residuals[j] = z;
            let row = &self.components[p * k..(p + 1) * k];
            for (ym, vm) in y.iter_mut().zip(row) {
                *ym += vm * z;
            }
        }
        let mut e = 0.0;
        for (p, &j) in self.active.iter().enumerate() {
            let row = &self.components[p * k..(p + 1) * k];
            let proj: f64 = row.iter().zip(&y).map(|(v, y)| v * y).sum();
            let r = (residuals[j] - proj) / self.residual_std[p];
            residuals[j] = r;
            e += r * r;
        }
        (e, imputed)
    }

    /// The error `e` of sample `x` (see [`ResidualModel::residuals`]).
    pub fn error(&self, x: &[f64]) -> f64 {
        let mut r = vec![0.0; self.dim];
        self.residuals(x, &mut r).0
    }

    /// The folded map `W = diag(1/s) · R · diag(1/std)` (DETECTOR.md step 6), `dim × dim`
    /// row-major, zero rows and columns for signals not modelled.
    pub fn weight(&self) -> Vec<f64> {
        let (d, a, k) = (self.dim, self.active.len(), self.k);
        let mut w = vec![0.0; d * d];
        for p in 0..a {
            for q in 0..a {
                let vv: f64 = (0..k).map(|m| self.components[p * k + m] * self.components[q * k + m]).sum();
                let r = if p == q { 1.0 } else { 0.0 } - vv;
                w[self.active[p] * d + self.active[q]] = r / (self.residual_std[p] * self.std[q]);
            }
        }
        w
    }

    /// The folded offset `b = W · mean`, so that `r = W x − b`.
    pub fn bias(&self) -> Vec<f64> {
        let d = self.dim;
        let w = self.weight();
        let mut full_mean = vec![0.0; d];
        for (p, &j) in self.active.iter().enumerate() {
            full_mean[j] = self.mean[p];
        }
        (0..d).map(|i| (0..d).map(|j| w[i * d + j] * full_mean[j]).sum()).collect()
    }
}

/// Exponentially weighted mean with a half-life in wall time (DETECTOR.md step 8):
/// `m_1 = e_1`, `m_t = m_{t−1} + α (e_t − m_{t−1})`, `α = 1 − 0.5^(Δt / half-life)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ewma {
    halflife_ms: f64,
    last: Option<(i64, f64)>,
}

impl Ewma {
    /// A half-life of 0 means no smoothing (`m_t = e_t`).
    pub fn new(halflife_ms: f64) -> Self {
        Ewma { halflife_ms, last: None }
    }

    /// Adds `value` at `ts_ms` (after the previous update) and returns the smoothed value.
    pub fn update(&mut self, ts_ms: i64, value: f64) -> f64 {
        let m = match self.last {
            None => value,
            Some((t0, m0)) => {
                let alpha = if self.halflife_ms <= 0.0 {
                    1.0
                } else {
                    1.0 - 0.5f64.powf((ts_ms - t0) as f64 / self.halflife_ms)
                };
                m0 + alpha * (value - m0)
            }
        };
        self.last = Some((ts_ms, m));
        m
    }

    /// The last smoothed value.
    pub fn value(&self) -> Option<f64> {
        self.last.map(|(_, m)| m)
    }

    /// Forgets the history.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> FitParams {
        FitParams { variance: 0.9, min_std: 1e-6, residual_floor: 0.1, min_coverage: 0.9 }
    }

    #[test]
    fn factored_and_folded_forms_agree() {
        let mut m = Moments::new(4);
        for i in 0..200 {
            let t = i as f64;
            m.update(&[t.sin(), 2.0 * t.sin() + 0.3 * (t * 0.37).cos(), (t * 0.11).cos() * 5.0, 7.0], 1.0);
        }
        let model = ResidualModel::fit(&m, &params()).expect("fits");
        let (w, b) = (model.weight(), model.bias());
        let x = [0.5, -1.0, 3.0, 7.5];
        let mut r = [0.0; 4];
        let (e, imputed) = model.residuals(&x, &mut r);
        assert_eq!(imputed, 0);
        for i in 0..4 {
            let folded: f64 = (0..4).map(|j| w[i * 4 + j] * x[j]).sum::<f64>() - b[i];
            assert!((folded - r[i]).abs() < 1e-9 * (1.0 + r[i].abs()), "{folded} vs {}", r[i]);
        }
        assert!((e - r.iter().map(|v| v * v).sum::<f64>()).abs() < 1e-12);
        // the constant signal has std 1 and the floor as residual std
        assert_eq!(model.signal_scale(3).map(|s| (s.1, s.2)), Some((1.0, 0.1)));
    }

    #[test]
    fn signals_below_the_coverage_are_left_out() {
        let mut m = Moments::new(3);
        for i in 0..100 {
            let t = i as f64;
            let sparse = if i % 3 == 0 { t } else { f64::NAN };
            m.update(&[t.sin(), t.cos(), sparse], 1.0);
        }
        let model = ResidualModel::fit(&m, &params()).expect("fits");
        assert_eq!(model.active(), &[0, 1]);
        let mut r = [9.0; 3];
        model.residuals(&[0.0, 0.0, 1e9], &mut r);
        assert_eq!(r[2], 0.0);
        assert_eq!(model.weight()[2 * 3 + 2], 0.0);
        let mut none = Moments::new(1);
        none.update(&[f64::NAN], 1.0);
        assert!(matches!(ResidualModel::fit(&none, &params()), Err(AnomalyError::NoUsableSignals { .. })));
    }

    #[test]
    fn ewma_uses_wall_time() {
        let mut s = Ewma::new(60_000.0);
        assert_eq!(s.update(0, 4.0), 4.0);
        assert_eq!(s.update(60_000, 0.0), 2.0); // one half-life: α = 0.5
        let m = s.update(61_000, 3.0); // 1 s: α = 1 − 0.5^(1/60) ≈ 0.011486
        assert!((m - (2.0 + 0.011486)).abs() < 1e-6, "{m}");
        let m = s.update(181_000, 10.0 + m); // two half-lives: α = 0.75
        assert!((m - (2.011486 + 0.75 * 10.0)).abs() < 1e-6, "{m}");
        let mut raw = Ewma::new(0.0);
        raw.update(0, 1.0);
        assert_eq!(raw.update(1, 5.0), 5.0);
    }
}
