//! Streaming statistics over time windows, O(1) per sample.
//!
//! A [`Window`] of length `W` is a ring of `B` buckets of width `W / B`; a sample adds
//! to the bucket of its time (rotating out buckets older than `W`), and a query sums the
//! `B` buckets. Each bucket keeps count, sum and sum of squares; for the least-squares
//! slope a sample's time is taken as its bucket's index, so the slope has the
//! resolution of a bucket (2 s for a 30 s window), which is what a trend needs. Buckets
//! also keep their minimum, maximum and largest drawdown (fall from the bucket's running
//! peak, samples in arrival order), so a query also yields the window's peak and its
//! largest drawdown: how far the value fell after a high within the window (a garbage
//! collection or a cache eviction; a leak does not fall).
//! [`Ewma`] is an exponentially weighted mean with a time constant, exact for uneven
//! sample spacing, and [`CounterRate`] turns a cumulative counter into per-second rates.

/// Count, sum, sum of squares, extremes and drawdown of the samples in one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Bucket {
    n: u32,
    sum: f64,
    sum_sq: f64,
    min: f64,
    max: f64,
    /// Largest fall from the running maximum within the bucket.
    drawdown: f64,
    /// Bucket number (time / width) the bucket currently holds.
    index: i64,
}

/// Summary of a window at query time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowStats {
    /// Samples in the window.
    pub count: u32,
    pub mean: f64,
    pub std: f64,
    /// Least-squares slope in units per second (0 with fewer than two occupied buckets).
    pub slope_per_s: f64,
    /// Mean of the newest occupied bucket minus mean of the oldest.
    pub change: f64,
    /// Largest and smallest sample.
    pub max: f64,
    pub min: f64,
}

impl WindowStats {
    /// Stats of an empty window.
    pub const EMPTY: WindowStats = WindowStats {
        count: 0,
        mean: f64::NAN,
        std: f64::NAN,
        slope_per_s: 0.0,
        change: 0.0,
        max: f64::NAN,
        min: f64::NAN,
    };
}

/// A sliding time window of bucketed sums.
#[derive(Debug, Clone)]
pub struct Window {
    width_ms: i64,
    buckets: Box<[Bucket]>,
}

impl Window {
    /// A window of `length_ms` split into `buckets` buckets (at least 2).
    pub fn new(length_ms: i64, buckets: usize) -> Self {
        let buckets = buckets.max(2);
        let width_ms = (length_ms / buckets as i64).max(1);
        Window { width_ms, buckets: vec![Bucket { index: i64::MIN, ..Bucket::default() }; buckets].into_boxed_slice() }
    }

    fn slot(&self, index: i64) -> usize {
        index.rem_euclid(self.buckets.len() as i64) as usize
    }

    /// Adds a sample. Samples older than the window's span behind the newest are ignored.
    pub fn add(&mut self, ts_ms: i64, v: f64) {
        let index = ts_ms.div_euclid(self.width_ms);
        let slot = self.slot(index);
        let b = &mut self.buckets[slot];
        if b.index != index {
            if b.index > index {
                return; // older than the window
            }
            *b = Bucket { n: 0, sum: 0.0, sum_sq: 0.0, min: v, max: v, drawdown: 0.0, index };
        }
        b.n += 1;
        b.sum += v;
        b.sum_sq += v * v;
        b.max = b.max.max(v);
        b.min = b.min.min(v);
        b.drawdown = b.drawdown.max(b.max - v);
    }

    /// Stats over the buckets within the window that ends at `now_ms`.
    pub fn stats(&self, now_ms: i64) -> WindowStats {
        let newest = now_ms.div_euclid(self.width_ms);
        let oldest = newest - self.buckets.len() as i64 + 1;
        let (mut n, mut sum, mut sum_sq) = (0.0f64, 0.0f64, 0.0f64);
        // Regression of bucket means on bucket index, weighted by counts.
        let (mut st, mut stt, mut stv) = (0.0f64, 0.0f64, 0.0f64);
        let mut first: Option<(i64, f64)> = None;
        let mut last: Option<(i64, f64)> = None;
        let (mut max, mut min) = (f64::NEG_INFINITY, f64::INFINITY);
        for b in self.buckets.iter().filter(|b| b.n > 0 && b.index >= oldest && b.index <= newest) {
            max = max.max(b.max);
            min = min.min(b.min);
            let bn = f64::from(b.n);
            let t = (b.index - oldest) as f64;
            n += bn;
            sum += b.sum;
            sum_sq += b.sum_sq;
            st += bn * t;
            stt += bn * t * t;
            stv += t * b.sum;
            let m = b.sum / bn;
            if first.is_none_or(|(i, _)| b.index < i) {
                first = Some((b.index, m));
            }
            if last.is_none_or(|(i, _)| b.index > i) {
                last = Some((b.index, m));
            }
        }
        if n == 0.0 {
            return WindowStats::EMPTY;
        }
        let mean = sum / n;
        let var = (sum_sq / n - mean * mean).max(0.0);
        let denom = n * stt - st * st;
        let slope_per_bucket = if denom > 1e-9 { (n * stv - st * sum) / denom } else { 0.0 };
        let change = match (first, last) {
            (Some((_, a)), Some((_, b))) => b - a,
            _ => 0.0,
        };
        WindowStats {
            count: n as u32,
            mean,
            std: var.sqrt(),
            slope_per_s: slope_per_bucket * 1000.0 / self.width_ms as f64,
            change,
            max,
            min,
        }
    }

    /// Largest fall from an earlier high within the window that ends at `now_ms` (0 when
    /// it never fell, NaN when empty): buckets in time order, samples within a bucket in
    /// arrival order. A separate query (one more pass over the buckets) so that signals
    /// whose drawdown is not a feature do not pay for it.
    pub fn drawdown(&self, now_ms: i64) -> f64 {
        let newest = now_ms.div_euclid(self.width_ms);
        let len = self.buckets.len();
        let oldest = newest - len as i64 + 1;
        let start = self.slot(oldest);
        let (mut peak, mut drawdown, mut any) = (f64::NEG_INFINITY, 0.0f64, false);
        for k in 0..len {
            let b = &self.buckets[(start + k) % len];
            if b.n == 0 || b.index != oldest + k as i64 {
                continue;
            }
            any = true;
            drawdown = drawdown.max(b.drawdown).max(peak - b.min);
            peak = peak.max(b.max);
        }
        if any { drawdown } else { f64::NAN }
    }
}

/// Exponentially weighted moving average with time constant `tau`.
#[derive(Debug, Clone, Copy)]
pub struct Ewma {
    tau_ms: f64,
    value: f64,
    last_ms: Option<i64>,
}

impl Ewma {
    /// An empty average with time constant `tau_ms`.
    pub fn new(tau_ms: i64) -> Self {
        Ewma { tau_ms: tau_ms.max(1) as f64, value: f64::NAN, last_ms: None }
    }

    /// Adds a sample; out-of-order samples count as simultaneous with the newest.
    pub fn add(&mut self, ts_ms: i64, v: f64) {
        match self.last_ms {
            None => {
                self.value = v;
                self.last_ms = Some(ts_ms);
            }
            Some(last) => {
                let dt = (ts_ms - last).max(0) as f64;
                let alpha = 1.0 - (-dt / self.tau_ms).exp();
                self.value += alpha * (v - self.value);
                self.last_ms = Some(last.max(ts_ms));
            }
        }
    }

    /// The average (NaN before the first sample).
    pub fn value(&self) -> f64 {
        self.value
    }
}

/// Turns a cumulative counter into per-second rates; a decrease is a reset.
#[derive(Debug, Clone, Copy, Default)]
pub struct CounterRate {
    last: Option<(i64, f64)>,
}

impl CounterRate {
    /// The rate since the previous sample, if there is one and time moved forward.
    pub fn add(&mut self, ts_ms: i64, v: f64) -> Option<f64> {
        let prev = self.last;
        match prev {
            Some((t, _)) if ts_ms <= t => return None, // replayed or out of order: ignore
            _ => self.last = Some((ts_ms, v)),
        }
        let (t0, v0) = prev?;
        if v < v0 {
            return None; // counter reset: no rate for this step
        }
        Some((v - v0) * 1000.0 / (ts_ms - t0) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn linear_series_has_its_slope_mean_and_change() {
        let mut w = Window::new(30_000, 15);
        // v = 10 + 2 t (t in seconds), one sample per second for 30 s.
        for s in 0..30 {
            w.add(s * 1000, 10.0 + 2.0 * s as f64);
        }
        let st = w.stats(29_000);
        assert_eq!(st.count, 30);
        assert!(close(st.slope_per_s, 2.0), "slope {}", st.slope_per_s);
        assert!(close(st.mean, 10.0 + 2.0 * 14.5), "mean {}", st.mean);
        // Buckets of 2 s: oldest mean 11 (t 0,1), newest 67 (t 28,29).
        assert!(close(st.change, 56.0), "change {}", st.change);
    }

    #[test]
    fn extremes_and_drawdown() {
        let mut w = Window::new(30_000, 15);
        // Rises 0..20 over 20 s, falls to 5 (a collection), rises again to 12.
        for s in 0..20 {
            w.add(s * 1000, s as f64);
        }
        w.add(20_000, 5.0);
        for s in 21..28 {
            w.add(s * 1000, 5.0 + (s - 20) as f64);
        }
        let st = w.stats(27_000);
        assert!(close(st.max, 19.0) && close(st.min, 0.0), "{st:?}");
        assert!(close(w.drawdown(27_000), 14.0), "drawdown {}", w.drawdown(27_000));
        // A fall within one bucket counts too (1 s apart, 2 s buckets).
        let mut v = Window::new(30_000, 15);
        v.add(0, 10.0);
        v.add(1_000, 4.0);
        assert!(close(v.drawdown(1_000), 6.0));
        // A monotone rise has no drawdown, whatever the bucket order in the ring.
        let mut m = Window::new(30_000, 15);
        for s in 0..100 {
            m.add(s * 1000, s as f64);
        }
        let st = m.stats(99_000);
        assert_eq!(m.drawdown(99_000), 0.0);
        assert!(close(st.max, 99.0) && close(st.min, 70.0), "{st:?}");
        // The fall leaves the window with its high: the drawdown is gone.
        let mut g = Window::new(10_000, 5);
        g.add(0, 50.0);
        g.add(2_000, 10.0);
        assert!(close(g.drawdown(2_000), 40.0));
        for s in 3..20 {
            g.add(s * 1000, 10.0 + s as f64);
        }
        assert_eq!(g.drawdown(19_000), 0.0);
        assert!(w.drawdown(1_000_000).is_nan(), "empty window");
    }

    #[test]
    fn old_buckets_leave_the_window() {
        let mut w = Window::new(10_000, 10);
        for s in 0..10 {
            w.add(s * 1000, 100.0);
        }
        for s in 10..20 {
            w.add(s * 1000, 0.0);
        }
        let st = w.stats(19_000);
        assert_eq!(st.count, 10);
        assert!(close(st.mean, 0.0));
        assert!(close(st.std, 0.0));
        // Nothing new for longer than the window: empty.
        assert_eq!(w.stats(40_000).count, 0);
        assert!(w.stats(40_000).mean.is_nan());
    }

    #[test]
    fn std_matches_population_std_and_stale_samples_are_ignored() {
        let mut w = Window::new(60_000, 6);
        let vals = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        for (i, v) in vals.iter().enumerate() {
            w.add(100_000 + i as i64 * 10_000, *v);
        }
        w.add(1_000, 1e9); // far older than the window: not counted
        let st = w.stats(150_000);
        assert_eq!(st.count, 6);
        let mean = 3.5;
        let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 6.0;
        assert!(close(st.mean, mean));
        assert!(close(st.std, var.sqrt()));
        assert!(close(st.slope_per_s, 0.1), "slope {}", st.slope_per_s);
    }

    #[test]
    fn flat_or_single_bucket_series_has_zero_slope() {
        let mut w = Window::new(30_000, 15);
        w.add(0, 5.0);
        assert_eq!(w.stats(0).slope_per_s, 0.0);
        for s in 0..30 {
            w.add(s * 1000, 5.0);
        }
        assert!(close(w.stats(29_000).slope_per_s, 0.0));
    }

    #[test]
    fn ewma_converges_with_the_time_constant() {
        let mut e = Ewma::new(10_000);
        assert!(e.value().is_nan());
        e.add(0, 0.0);
        e.add(10_000, 1.0);
        assert!(close(e.value(), 1.0 - (-1.0f64).exp()));
        // The same elapsed time in many small steps gives the same weight to a constant input.
        let mut f = Ewma::new(10_000);
        f.add(0, 0.0);
        for s in 1..=10 {
            f.add(s * 1000, 1.0);
        }
        assert!(close(f.value(), e.value()));
    }

    #[test]
    fn counter_rate_handles_resets_and_replays() {
        let mut c = CounterRate::default();
        assert_eq!(c.add(0, 100.0), None);
        assert_eq!(c.add(2_000, 110.0), Some(5.0));
        assert_eq!(c.add(2_000, 110.0), None, "same timestamp again");
        assert_eq!(c.add(3_000, 4.0), None, "reset");
        assert_eq!(c.add(4_000, 6.0), Some(2.0));
    }
}
