//! Symmetric eigen-decomposition by the cyclic Jacobi method, and the principal subspace.
//!
//! Jacobi rotations are simple, need no dependency and are accurate (small relative errors
//! in the eigenvalues, orthonormal eigenvectors to rounding). Cost is about 6·d³ flops per
//! sweep and a handful of sweeps: well under a millisecond for the d ≤ ~64 signals of a host
//! in an optimised build, and a detector refits at most every few minutes.

/// Eigenvalues in descending order and the matching eigenvectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Eigen {
    /// Descending.
    pub values: Vec<f64>,
    /// `d × d` row-major; column `c` is the eigenvector of `values[c]` (unit length, arbitrary sign).
    pub vectors: Vec<f64>,
}

/// Sweeps after which the iteration stops even if not converged (it converges in < 15).
const MAX_SWEEPS: usize = 60;
/// Squared off-diagonal Frobenius norm, as a share of the whole, at which it has converged.
const CONVERGED_OFF_SHARE: f64 = 1e-24;

/// Eigen-decomposition of the symmetric `d × d` row-major matrix `a` (only its upper
/// triangle is read), eigenvalues sorted descending.
pub fn symmetric_eigen(a: &[f64], d: usize) -> Eigen {
    assert_eq!(a.len(), d * d, "matrix must be d × d");
    let mut m = vec![0.0; d * d];
    for i in 0..d {
        for j in i..d {
            m[i * d + j] = a[i * d + j];
            m[j * d + i] = a[i * d + j];
        }
    }
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    let frob: f64 = m.iter().map(|x| x * x).sum();
    let mut last_off = f64::INFINITY;
    for _ in 0..MAX_SWEEPS {
        let off: f64 = (0..d).flat_map(|i| ((i + 1)..d).map(move |j| (i, j))).map(|(i, j)| m[i * d + j].powi(2)).sum();
        // Converged when the off-diagonal norm is 1e-12 of the whole (the noise floor of the
        // rotations is ~1e-14 for d = 64), or when a sweep no longer reduces it.
        if off <= CONVERGED_OFF_SHARE * frob || off >= last_off {
            break;
        }
        last_off = off;
        for p in 0..d {
            for q in (p + 1)..d {
                rotate(&mut m, &mut v, d, p, q);
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&x, &y| m[y * d + y].total_cmp(&m[x * d + x]));
    let values = order.iter().map(|&c| m[c * d + c]).collect();
    let mut vectors = vec![0.0; d * d];
    for (new_c, &c) in order.iter().enumerate() {
        for r in 0..d {
            vectors[r * d + new_c] = v[r * d + c];
        }
    }
    Eigen { values, vectors }
}

/// One Jacobi rotation annihilating `m[p][q]` (Numerical Recipes' formulation), applied to
/// `m` (both triangles) and accumulated into the columns of `v`.
fn rotate(m: &mut [f64], v: &mut [f64], d: usize, p: usize, q: usize) {
    let apq = m[p * d + q];
    if apq == 0.0 {
        return;
    }
    let app = m[p * d + p];
    let aqq = m[q * d + q];
    let theta = (aqq - app) / (2.0 * apq);
    // t = tan φ, the smaller root of t² + 2tθ − 1 = 0; 1/(2θ) when θ² would overflow.
    let t =
        if theta.abs() > 1e150 { 0.5 / theta } else { theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt()) };
    let c = 1.0 / (t * t + 1.0).sqrt();
    let s = t * c;
    for k in 0..d {
        if k == p || k == q {
            continue;
        }
        let akp = m[k * d + p];
        let akq = m[k * d + q];
        let nkp = c * akp - s * akq;
        let nkq = s * akp + c * akq;
        m[k * d + p] = nkp;
        m[p * d + k] = nkp;
        m[k * d + q] = nkq;
        m[q * d + k] = nkq;
    }
    m[p * d + p] = app - t * apq;
    m[q * d + q] = aqq + t * apq;
    m[p * d + q] = 0.0;
    m[q * d + p] = 0.0;
    for k in 0..d {
        let vkp = v[k * d + p];
        let vkq = v[k * d + q];
        v[k * d + p] = c * vkp - s * vkq;
        v[k * d + q] = s * vkp + c * vkq;
    }
}

/// Number of leading components whose eigenvalues (negatives counted as 0) reach `share` of
/// their total: the smallest `k` with `λ_1 + … + λ_k ≥ share · Σ λ` (numpy's
/// `searchsorted(cumulative_share, share − 1e-12) + 1`, as in the Python reference); 0 when
/// the total is 0.
pub fn components_for_share(values_desc: &[f64], share: f64) -> usize {
    let clipped: Vec<f64> = values_desc.iter().map(|v| v.max(0.0)).collect();
    let total: f64 = clipped.iter().sum();
    if total <= 0.0 {
        return 0;
    }
    let mut cumulative = 0.0;
    for (i, v) in clipped.iter().enumerate() {
        cumulative += v;
        if cumulative / total >= share - 1e-12 {
            return i + 1;
        }
    }
    clipped.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconstruct(e: &Eigen, d: usize) -> Vec<f64> {
        let mut out = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                out[i * d + j] = (0..d).map(|c| e.vectors[i * d + c] * e.values[c] * e.vectors[j * d + c]).sum();
            }
        }
        out
    }

    #[test]
    fn two_by_two_by_hand() {
        // [[2, 1], [1, 2]]: eigenvalues 3 and 1, eigenvectors (1, 1)/√2 and (1, −1)/√2
        let e = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((e.values[0] - 3.0).abs() < 1e-14 && (e.values[1] - 1.0).abs() < 1e-14);
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert!((e.vectors[0].abs() - h).abs() < 1e-14 && (e.vectors[0] - e.vectors[2]).abs() < 1e-14);
        assert!((e.vectors[1] + e.vectors[3]).abs() < 1e-14);
    }

    #[test]
    fn reconstructs_a_dense_matrix_with_orthonormal_vectors() {
        let d = 40;
        // a deterministic dense symmetric matrix with a spread spectrum, ties and a negative eigenvalue
        let mut a = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                let x = ((i * 31 + j * 17) % 23) as f64 / 23.0 + ((j * 31 + i * 17) % 23) as f64 / 23.0;
                a[i * d + j] = x + if i == j { (i % 7) as f64 - 2.0 } else { 0.0 };
            }
        }
        let e = symmetric_eigen(&a, d);
        let r = reconstruct(&e, d);
        for (x, y) in r.iter().zip(&a) {
            assert!((x - y).abs() < 1e-10, "{x} vs {y}");
        }
        for c1 in 0..d {
            for c2 in 0..d {
                let dot: f64 = (0..d).map(|r| e.vectors[r * d + c1] * e.vectors[r * d + c2]).sum();
                let want = if c1 == c2 { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12, "columns {c1}, {c2}: {dot}");
            }
        }
        assert!(e.values.windows(2).all(|w| w[0] >= w[1]));
        let trace: f64 = (0..d).map(|i| a[i * d + i]).sum();
        assert!((e.values.iter().sum::<f64>() - trace).abs() < 1e-10);
    }

    #[test]
    fn component_count_follows_the_cumulative_share() {
        assert_eq!(components_for_share(&[2.039965, 0.959838, 0.000198], 0.9), 2);
        assert_eq!(components_for_share(&[5.0, 3.0, 2.0], 0.8), 2);
        // exactly on the share counts (within 1e-12)
        assert_eq!(components_for_share(&[9.0, 1.0], 0.9), 1);
        assert_eq!(components_for_share(&[1.0, -1e-17], 0.9), 1);
        assert_eq!(components_for_share(&[0.0, 0.0], 0.9), 0);
        assert_eq!(components_for_share(&[], 0.9), 0);
    }
}
