//! The alarm threshold τ, calibrated without labels on a learning stream of smoothed scores.
//!
//! Alarms are the steps with `score > τ`; alarm steps closer than the debounce gap (10 min)
//! are one alarm, timed at its first step.
//!
//! - [`budget_rule_threshold`] is the harness rule (`metrics.train_alarm_threshold` in
//!   `models/eval`, DETECTOR.md "Threshold τ"), ported exactly: candidates are the stream's
//!   scores at 240 quantile levels `1 − 10^u`, `u` evenly spaced in `[−6, log10 0.2]`
//!   (numpy's `quantile(method="lower")`); walk down from the maximum while the debounced
//!   alarms per day stay within the budget; τ is the last candidate within it.
//! - On a stream shorter than a day with a budget of one alarm per day, that rule allows no
//!   alarm at all and returns the stream's maximum, which is a poor estimate of a once-a-day
//!   level (an hour holds 1/24 of the chances). [`calibrate`] then extrapolates instead, by
//!   peaks over threshold with an exponential tail (a generalised Pareto tail of shape 0, as
//!   POT/SPOT): `u` = the stream's `tail_quantile` (0.98) score; the debounced excursions
//!   above `u` occur at `rate_u` per day with mean peak excess `σ`; an exponential tail puts
//!   the rate above `τ` at `rate_u · exp(−(τ − u)/σ)`, so `τ = u + σ · ln(rate_u / budget)`,
//!   never below the stream's maximum (the rule's answer).

/// Milliseconds per day.
pub const DAY_MS: f64 = 86_400_000.0;
/// Number of candidate quantile levels of the harness rule.
const RULE_LEVELS: usize = 240;

/// How τ was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdMethod {
    /// The harness rule on a stream of at least the full-rule span (one day).
    BudgetRule,
    /// Exponential-tail extrapolation on a shorter stream.
    TailExtrapolation,
    /// The harness rule on the per-minute maxima of the first full day of scores, replacing a
    /// provisional tail extrapolation.
    FirstDayRule,
}

/// A calibrated threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    pub threshold: f64,
    pub method: ThresholdMethod,
    /// Days spanned by the calibration stream.
    pub span_days: f64,
}

/// Days spanned by samples at `ts_ms` (increasing): last − first plus one mean step, as the
/// harness counts a host-day (`span_days`).
pub fn span_days(ts_ms: &[i64]) -> f64 {
    match (ts_ms.first(), ts_ms.last()) {
        (Some(&a), Some(&b)) if ts_ms.len() >= 2 => {
            let span = (b - a) as f64;
            (span + span / (ts_ms.len() - 1) as f64) / DAY_MS
        }
        _ => 0.0,
    }
}

/// Debounced episodes of `score > threshold`: alarm steps closer than `debounce_ms` are one
/// episode. Returns each episode's peak score, in time order.
pub fn debounced_peaks(ts_ms: &[i64], scores: &[f64], threshold: f64, debounce_ms: i64) -> Vec<f64> {
    let mut peaks = Vec::new();
    let mut last: Option<i64> = None;
    for (&t, &s) in ts_ms.iter().zip(scores) {
        if s > threshold {
            match (last, peaks.last_mut()) {
                (Some(l), Some(peak)) if t - l < debounce_ms => *peak = f64::max(*peak, s),
                _ => peaks.push(s),
            }
            last = Some(t);
        }
    }
    peaks
}

/// Number of debounced alarms of `score > threshold`.
pub fn debounced_alarms(ts_ms: &[i64], scores: &[f64], threshold: f64, debounce_ms: i64) -> usize {
    let mut count = 0;
    let mut last: Option<i64> = None;
    for (&t, &s) in ts_ms.iter().zip(scores) {
        if s > threshold {
            if last.is_none_or(|l| t - l >= debounce_ms) {
                count += 1;
            }
            last = Some(t);
        }
    }
    count
}

/// numpy `quantile(sorted, q, method="lower")` of an ascending, non-empty slice.
pub fn quantile_lower(sorted: &[f64], q: f64) -> f64 {
    let idx = ((sorted.len() - 1) as f64 * q).floor() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The harness rule (`metrics.train_alarm_threshold`): the lowest candidate threshold whose
/// debounced alarms on the stream stay within `budget_per_day`. The stream's maximum when it
/// is empty of candidates or when no lower candidate is within budget; NaN for an empty stream.
pub fn budget_rule_threshold(ts_ms: &[i64], scores: &[f64], budget_per_day: f64, debounce_ms: i64) -> f64 {
    if scores.is_empty() {
        return f64::NAN;
    }
    let days = span_days(ts_ms);
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    // np.logspace(-6, log10(0.2), 240): 10^(linspace), last point exactly the stop
    let (start, stop) = (-6.0, 0.2f64.log10());
    let step = (stop - start) / (RULE_LEVELS - 1) as f64;
    let mut candidates: Vec<f64> = (0..RULE_LEVELS)
        .map(|i| {
            let u = if i == RULE_LEVELS - 1 { stop } else { start + i as f64 * step };
            quantile_lower(&sorted, 1.0 - 10f64.powf(u))
        })
        .collect();
    candidates.sort_by(|a, b| b.total_cmp(a));
    candidates.dedup();
    let mut best = sorted[sorted.len() - 1];
    for thr in candidates {
        if thr >= best {
            continue;
        }
        if debounced_alarms(ts_ms, scores, thr, debounce_ms) as f64 / days > budget_per_day {
            break;
        }
        best = thr;
    }
    best
}

/// τ for the stream: the harness rule when it spans at least `full_rule_days`, otherwise
/// the exponential-tail extrapolation from `tail_quantile` (see the module docs), never
/// below the rule's answer. NaN threshold for an empty stream.
pub fn calibrate(
    ts_ms: &[i64],
    scores: &[f64],
    budget_per_day: f64,
    debounce_ms: i64,
    full_rule_days: f64,
    tail_quantile: f64,
) -> Calibration {
    let span = span_days(ts_ms);
    let rule = budget_rule_threshold(ts_ms, scores, budget_per_day, debounce_ms);
    let by_rule = Calibration { threshold: rule, method: ThresholdMethod::BudgetRule, span_days: span };
    if span >= full_rule_days || scores.is_empty() || span <= 0.0 {
        return by_rule;
    }
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    let u = quantile_lower(&sorted, tail_quantile);
    let peaks = debounced_peaks(ts_ms, scores, u, debounce_ms);
    if peaks.is_empty() {
        return by_rule;
    }
    let rate = peaks.len() as f64 / span;
    let sigma = peaks.iter().map(|p| p - u).sum::<f64>() / peaks.len() as f64;
    let tail = if rate > budget_per_day { u + sigma * (rate / budget_per_day).ln() } else { u };
    Calibration { threshold: tail.max(rule), method: ThresholdMethod::TailExtrapolation, span_days: span }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    /// The case checked against the Python harness: 3 days at 1 sample/min, a sawtooth
    /// below 1 and 8 spikes (two of them 5 min apart: one alarm).
    fn synthetic(n: usize) -> (Vec<i64>, Vec<f64>) {
        let ts: Vec<i64> = (0..n as i64).map(|i| i * MIN).collect();
        let mut s: Vec<f64> = (0..n).map(|i| ((i * 7919) % 1000) as f64 / 1000.0).collect();
        for (k, p) in [100, 700, 1500, 1505, 2600, 3000, 3900, 4100].into_iter().enumerate() {
            if p < n {
                s[p] += 2.0 + k as f64 * 0.5;
            }
        }
        (ts, s)
    }

    #[test]
    fn budget_rule_matches_the_python_harness() {
        // values from models/eval: metrics.train_alarm_threshold(t, s, 1.0[, budget_per_day])
        let (ts, s) = synthetic(4320);
        assert_eq!(budget_rule_threshold(&ts, &s, 1.0, 10 * MIN), 4.4);
        assert_eq!(budget_rule_threshold(&ts, &s, 0.5, 10 * MIN), 5.1);
        let (ts, s) = synthetic(600);
        assert_eq!(budget_rule_threshold(&ts[..600], &s[..600], 1.0, 10 * MIN), 2.9);
        assert!(budget_rule_threshold(&[], &[], 1.0, MIN).is_nan());
        assert_eq!(budget_rule_threshold(&[0], &[3.0], 1.0, MIN), 3.0);
    }

    #[test]
    fn debouncing_merges_alarm_steps_closer_than_the_gap() {
        let ts = [0, MIN, 5 * MIN, 15 * MIN, 16 * MIN, 40 * MIN];
        let s = [2.0, 0.0, 3.0, 2.5, 4.0, 1.0];
        assert_eq!(debounced_alarms(&ts, &s, 1.5, 10 * MIN), 2);
        assert_eq!(debounced_peaks(&ts, &s, 1.5, 10 * MIN), vec![3.0, 4.0]);
        assert_eq!(debounced_alarms(&ts, &s, 0.5, 10 * MIN), 3);
        // last − first plus one mean step: 3 samples a minute apart span 3 minutes
        assert_eq!(span_days(&[0, MIN, 2 * MIN]), 3.0 * MIN as f64 / DAY_MS);
        assert_eq!(span_days(&[5]), 0.0);
    }

    #[test]
    fn short_streams_extrapolate_an_exponential_tail() {
        // half a day at 1/min: zeros and 20 isolated spikes 1..=20, 30 min apart
        let n = 720;
        let ts: Vec<i64> = (0..n).map(|i| i * MIN).collect();
        let mut s = vec![0.0; n as usize];
        for k in 0..20 {
            s[10 + 30 * k] = (k + 1) as f64;
        }
        let c = calibrate(&ts, &s, 1.0, 10 * MIN, 1.0, 0.98);
        // u = sorted[floor(719 · 0.98)] = sorted[704] = 5; peaks 6..=20: 15 in half a day
        // (30/day), mean excess 8 → τ = 5 + 8 ln 30
        assert_eq!(c.method, ThresholdMethod::TailExtrapolation);
        assert!((c.span_days - 0.5).abs() < 1e-12);
        assert!((c.threshold - (5.0 + 8.0 * 30f64.ln())).abs() < 1e-9, "{}", c.threshold);
        // a flat stream has no tail: the rule's answer (its maximum)
        let flat = calibrate(&ts, &vec![2.0; n as usize], 1.0, 10 * MIN, 1.0, 0.98);
        assert_eq!(flat.threshold, 2.0);
        // a full day or more: the harness rule
        let (ts, s) = synthetic(4320);
        let c = calibrate(&ts, &s, 1.0, 10 * MIN, 1.0, 0.98);
        assert_eq!((c.threshold, c.method), (4.4, ThresholdMethod::BudgetRule));
    }
}
