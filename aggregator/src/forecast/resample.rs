//! Histories onto a regular grid, and which step and source a horizon should use.
//!
//! Forecasters need evenly spaced points. [`resample`] averages the points of an
//! irregular history (raw 1 s samples, 1-minute rollup averages, anything) into buckets
//! of one step aligned to the Unix epoch, so a daily season lines up with the clock:
//! - a bucket's value is the mean of the finite points whose timestamp falls in it
//!   (NaN and ±inf are skipped and counted);
//! - empty buckets between two filled ones (gaps) are filled by linear interpolation and
//!   counted, so the caller can judge the data; leading empty buckets are dropped;
//! - points after `until_ms` (clock skew) are ignored, and only the newest `max_points`
//!   buckets are kept, so memory stays bounded whatever the input.
//!
//! The input need not be sorted. [`counter_rate`] turns a counter's points into per-second
//! rates first (resets give no rate), the way the feature engine does.
//!
//! [`plan_history`] says, per horizon, the step to resample to, how much history to read
//! and whether 1-minute rollups suffice: forecasts up to 30 minutes ahead use raw data at
//! 10 s for 6 h; up to 6 h ahead, rollups at 1 min for 3 days; beyond, rollups averaged
//! to 5 min for 14 days (enough to see two weeks of daily seasons in ~4,000 points).

use std::time::Duration;

/// Points at one regular step, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Start of the first bucket, milliseconds since the epoch (a multiple of `step_ms`).
    pub start_ms: i64,
    pub step_ms: i64,
    /// Bucket means; every value is finite.
    pub values: Vec<f64>,
    /// Buckets that had no point and were interpolated.
    pub filled: usize,
    /// Input points skipped because their value was not finite.
    pub skipped: usize,
}

impl Grid {
    /// Start of bucket `i`.
    pub fn time_of(&self, i: usize) -> i64 {
        self.start_ms + i as i64 * self.step_ms
    }

    /// The bucket holding `ts_ms`, if it is on the grid.
    pub fn index_of(&self, ts_ms: i64) -> Option<usize> {
        let i = (ts_ms - self.start_ms).div_euclid(self.step_ms);
        (0..self.values.len() as i64).contains(&i).then_some(i as usize)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Averages `points` into epoch-aligned buckets of `step` (see the module docs).
pub fn resample(points: &[(i64, f64)], step: Duration, until_ms: i64, max_points: usize) -> Grid {
    let step_ms = (step.as_millis() as i64).max(1);
    let mut skipped = 0;
    let mut last_bucket: Option<i64> = None;
    let mut first_bucket = i64::MAX;
    for &(ts, v) in points {
        if ts > until_ms {
            continue;
        }
        if !v.is_finite() {
            skipped += 1;
            continue;
        }
        let b = ts.div_euclid(step_ms);
        last_bucket = Some(last_bucket.map_or(b, |l| l.max(b)));
        first_bucket = first_bucket.min(b);
    }
    let Some(last_bucket) = last_bucket else {
        return Grid { start_ms: 0, step_ms, values: Vec::new(), filled: 0, skipped };
    };
    let keep = i64::try_from(max_points).unwrap_or(i64::MAX).max(1);
    let first_bucket = first_bucket.max(last_bucket.saturating_sub(keep - 1));
    let n = (last_bucket - first_bucket + 1) as usize;
    let mut sums = vec![0.0; n];
    let mut counts = vec![0u32; n];
    // Means relative to the first kept value, so large values add up without losing bits.
    let mut center = None;
    for &(ts, v) in points {
        let b = ts.div_euclid(step_ms);
        if ts > until_ms || !v.is_finite() || b < first_bucket {
            continue;
        }
        let c = *center.get_or_insert(v);
        let i = (b - first_bucket) as usize;
        sums[i] += v - c;
        counts[i] += 1;
    }
    let c = center.unwrap_or(0.0);
    let mut prev: Option<usize> = None;
    let mut filled = 0;
    for i in 0..n {
        if counts[i] == 0 {
            continue;
        }
        sums[i] = c + sums[i] / f64::from(counts[i]);
        if let Some(p) = prev
            && i > p + 1
        {
            let (a, b) = (sums[p], sums[i]);
            let span = (i - p) as f64;
            for (k, slot) in sums[p + 1..i].iter_mut().enumerate() {
                *slot = a + (b - a) * (k + 1) as f64 / span;
            }
            filled += i - p - 1;
        }
        prev = Some(i);
    }
    // Leading buckets cut by `max_points` may be empty: drop them.
    let lead_empty = counts.iter().take_while(|&&c| c == 0).count();
    sums.drain(..lead_empty);
    Grid { start_ms: (first_bucket + lead_empty as i64) * step_ms, step_ms, values: sums, filled, skipped }
}

/// Per-second rates of a counter, stamped at the later point of each pair. A decrease
/// (reset) or a non-advancing timestamp gives no rate; non-finite values are skipped.
/// `points` must be ascending by time.
pub fn counter_rate(points: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut out = Vec::with_capacity(points.len().saturating_sub(1));
    let mut prev: Option<(i64, f64)> = None;
    for &(ts, v) in points {
        if !v.is_finite() {
            continue;
        }
        if let Some((t0, v0)) = prev
            && ts > t0
            && v >= v0
        {
            out.push((ts, (v - v0) * 1000.0 / (ts - t0) as f64));
        }
        if prev.is_none_or(|(t0, _)| ts > t0) {
            prev = Some((ts, v));
        }
    }
    out
}

/// Where a forecast for one horizon should take its history from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPlan {
    /// The grid step to resample to.
    pub step: Duration,
    /// How far back to read.
    pub lookback: Duration,
    /// Whether 1-minute rollup averages are fine grained enough (else raw samples).
    pub use_rollups: bool,
}

/// The step, lookback and source for forecasting `horizon` ahead (see the module docs).
pub fn plan_history(horizon: Duration) -> HistoryPlan {
    const MIN: u64 = 60;
    const HOUR: u64 = 3600;
    const DAY: u64 = 86_400;
    let s = Duration::from_secs;
    if horizon <= s(30 * MIN) {
        HistoryPlan { step: s(10), lookback: s(6 * HOUR), use_rollups: false }
    } else if horizon <= s(6 * HOUR) {
        HistoryPlan { step: s(MIN), lookback: s(3 * DAY), use_rollups: true }
    } else {
        HistoryPlan { step: s(5 * MIN), lookback: s(14 * DAY), use_rollups: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S10: Duration = Duration::from_secs(10);

    #[test]
    fn averages_buckets_and_interpolates_gaps() {
        // 1 s points for buckets [1000 s, 1010 s) and [1040 s, 1050 s), nothing between,
        // a NaN and an inf in the first, one point in the future.
        let mut pts: Vec<(i64, f64)> = (1_000..1_010).map(|s| (s * 1000, 10.0)).collect();
        pts.push((1_003_500, f64::NAN));
        pts.push((1_004_500, f64::INFINITY));
        pts.extend((1_040..1_050).map(|s| (s * 1000, 50.0)));
        pts.push((9_999_000, 1e9));
        let g = resample(&pts, S10, 2_000_000, 10_000);
        assert_eq!(g.start_ms, 1_000_000);
        assert_eq!(g.values, vec![10.0, 20.0, 30.0, 40.0, 50.0]);
        assert_eq!(g.filled, 3);
        assert_eq!(g.skipped, 2);
        assert_eq!(g.index_of(1_039_999), Some(3));
        assert_eq!(g.index_of(1_050_000), None);
        assert_eq!(g.time_of(4), 1_040_000);
    }

    #[test]
    fn irregular_unsorted_points_land_in_their_buckets() {
        let pts = [(25_000, 4.0), (3_000, 1.0), (7_000, 3.0), (12_000, 6.0)];
        let g = resample(&pts, S10, i64::MAX, 100);
        assert_eq!(g.start_ms, 0);
        assert_eq!(g.values, vec![2.0, 6.0, 4.0]);
        assert_eq!(g.filled, 0);
    }

    #[test]
    fn keeps_only_the_newest_buckets() {
        let pts: Vec<(i64, f64)> = (0..100).map(|i| (i * 10_000, i as f64)).collect();
        assert_eq!(resample(&pts, S10, i64::MAX, usize::MAX).len(), 100);
        let g = resample(&pts, S10, i64::MAX, 10);
        assert_eq!(g.len(), 10);
        assert_eq!(g.values[0], 90.0);
        assert_eq!(g.start_ms, 900_000);
        // A cut that lands in a gap drops the empty leading buckets.
        let sparse = [(0, 1.0), (95_000, 2.0), (99_000, 4.0)];
        let g = resample(&sparse, S10, i64::MAX, 2);
        assert_eq!((g.start_ms, g.values.clone()), (90_000, vec![3.0]));
    }

    #[test]
    fn nothing_usable_is_an_empty_grid() {
        let g = resample(&[(0, f64::NAN)], S10, i64::MAX, 100);
        assert!(g.is_empty());
        assert_eq!(g.skipped, 1);
        assert!(resample(&[], S10, i64::MAX, 100).is_empty());
    }

    #[test]
    fn counter_rates_skip_resets() {
        let pts = [(0, 10.0), (1000, 12.0), (2000, 1.0), (4000, 5.0), (4000, 6.0), (5000, f64::NAN)];
        assert_eq!(counter_rate(&pts), vec![(1000, 2.0), (4000, 2.0)]);
    }

    #[test]
    fn plans_by_horizon() {
        assert_eq!(plan_history(Duration::from_secs(900)).step, S10);
        assert!(!plan_history(Duration::from_secs(900)).use_rollups);
        assert_eq!(plan_history(Duration::from_secs(3600)).step, Duration::from_secs(60));
        assert_eq!(plan_history(Duration::from_secs(86_400)).step, Duration::from_secs(300));
        assert!(plan_history(Duration::from_secs(86_400)).use_rollups);
    }
}
