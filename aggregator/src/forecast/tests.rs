//! Forecasting scenarios: synthetic series with known answers, then real data: the agent
//! recording in `bench/data` and the NAB AWS CloudWatch series in `../shared/data/nab`
//! (`$AUGUR_DATA_DIR` overrides `../shared/data`; the NAB test skips with a message when
//! the data is absent). Real-data tests print one JSON line per series with what they saw;
//! run with `--no-capture` to read them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

const MIN_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// 2024-01-01T00:00:00Z: grids are epoch-aligned, so start on a day boundary.
const T0: i64 = 1_704_067_200_000;

/// xorshift64*: a tiny deterministic generator for test noise.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn points(start_ms: i64, step_ms: i64, values: &[f64]) -> Vec<(i64, f64)> {
    values.iter().enumerate().map(|(i, &v)| (start_ms + i as i64 * step_ms, v)).collect()
}

fn forecasting() -> Forecasting {
    Forecasting::new(ForecastConfig::default()).expect("default config is valid")
}

fn baseline_only() -> Forecasting {
    Forecasting::with_candidates(ForecastConfig::default(), vec![Box::new(SeasonalNaive)]).expect("valid")
}

/// What held-out forecasts scored.
#[derive(Debug, Default)]
struct HeldOut {
    pinball: f64,
    covered: usize,
    count: usize,
    models: BTreeMap<&'static str, usize>,
}

impl HeldOut {
    fn mean_pinball(&self) -> f64 {
        self.pinball / self.count.max(1) as f64
    }
    fn coverage(&self) -> f64 {
        self.covered as f64 / self.count.max(1) as f64
    }
}

/// Forecasts from every origin time in `origins` with one [`SeriesForecaster`] (so it
/// re-selects on its schedule and on drift), using only the points up to the origin and at
/// most `lookback` of them, and scores each against the actual at the target from the
/// resampled full series. `points` must be ascending.
fn held_out(
    fc: &Forecasting,
    pts: &[(i64, f64)],
    req: &ForecastRequest,
    lookback_ms: i64,
    origins: impl Iterator<Item = i64>,
) -> HeldOut {
    let full = resample(pts, req.step(), i64::MAX, usize::MAX);
    let mut sf = SeriesForecaster::new();
    let mut out = HeldOut::default();
    for now in origins {
        let end = pts.partition_point(|p| p.0 <= now);
        let start = pts.partition_point(|p| p.0 <= now - lookback_ms);
        let f = sf.forecast(fc, &pts[start..end], now, req).expect("forecast");
        let Some(target) = full.index_of(f.target_ms) else { continue };
        let actual = full.values[target];
        let qs: Vec<f64> = f.quantiles.iter().map(|q| q.0).collect();
        let vs: Vec<f64> = f.quantiles.iter().map(|q| q.1).collect();
        assert!(vs.windows(2).all(|w| w[0] <= w[1]), "quantiles not monotone: {:?}", f.quantiles);
        out.pinball += mean_pinball(actual, &qs, &vs);
        out.covered += usize::from(vs[0] <= actual && actual <= vs[vs.len() - 1]);
        out.count += 1;
        *out.models.entry(f.model).or_default() += 1;
    }
    out
}

fn daily_sine(days: i64, step_ms: i64, noise: f64, seed: u64) -> Vec<(i64, f64)> {
    let mut rng = Rng::new(seed);
    let n = (days * DAY_MS / step_ms) as usize;
    let v: Vec<f64> = (0..n)
        .map(|i| {
            let phase = (i as i64 * step_ms) as f64 / DAY_MS as f64 * std::f64::consts::TAU;
            50.0 + 20.0 * phase.sin() + noise * rng.normal()
        })
        .collect();
    points(T0, step_ms, &v)
}

#[test]
fn daily_sine_is_forecast_seasonally_with_calibrated_quantiles() {
    let step = 5 * MIN_MS;
    let pts = daily_sine(10, step, 2.0, 7);
    let train_end = T0 + 7 * DAY_MS;
    let train: Vec<(i64, f64)> = pts.iter().copied().filter(|p| p.0 < train_end).collect();
    for horizon in [Duration::from_secs(3600), Duration::from_secs(86_400)] {
        let sel = select_from_history(&train, Duration::from_millis(step as u64), horizon, &DEFAULT_QUANTILES)
            .expect("select");
        assert!(
            matches!(sel.model, "seasonal_naive" | "ses" | "holt" | "holt_damped"),
            "{horizon:?}: {} won: {:?}",
            sel.model,
            sel.scores
        );
        let trend = sel.score_of("linear_trend").expect("linear trend scored");
        assert!(sel.cv_pinball < trend, "{horizon:?}: {} {} vs linear {trend}", sel.model, sel.cv_pinball);

        // Held out: hourly origins whose targets fall in the last three days.
        let mut req = ForecastRequest::new(horizon);
        req.step = Some(Duration::from_millis(step as u64));
        let h = horizon.as_millis() as i64;
        let origins = (0..).map(|k| train_end - h + k * HOUR_MS).take_while(|&t| t + h < T0 + 10 * DAY_MS);
        let r = held_out(&forecasting(), &pts, &req, 14 * DAY_MS, origins);
        assert!(r.count >= 60, "{r:?}");
        let cov = r.coverage();
        assert!((0.6..=0.95).contains(&cov), "{horizon:?}: p10-p90 covered {cov:.2} of {} ({r:?})", r.count);
        println!(
            "daily sine {horizon:?}: selected {} (cv {:.3}, linear {:.3}); held-out pinball {:.3} coverage {cov:.2}",
            sel.model,
            sel.cv_pinball,
            trend,
            r.mean_pinball()
        );
    }
}

#[test]
fn linear_ramp_is_extrapolated_by_a_trend_model() {
    // A day of a ramp at 1/min with noise, on the 1-minute grid a 1 h horizon plans (the
    // plan reads three days; one is plenty here).
    let mut rng = Rng::new(11);
    let step = MIN_MS;
    let n = 1440;
    let v: Vec<f64> = (0..n).map(|i| 100.0 + i as f64 + 2.0 * rng.normal()).collect();
    let pts = points(T0, step, &v);
    let now = T0 + (n as i64 - 1) * step;
    let fc = forecasting();
    let mut sf = SeriesForecaster::new();
    let req = ForecastRequest::new(Duration::from_secs(3600));
    assert_eq!(req.step(), Duration::from_secs(60));
    let f = sf.forecast(&fc, &pts, now, &req).expect("forecast");
    let sel = sf.selection(req.horizon, req.step()).expect("selected");
    assert!(matches!(f.model, "linear_trend" | "holt" | "holt_damped"), "{f:?}\n{:?}", sel.scores);
    let naive = sel.score_of("seasonal_naive").expect("scored");
    assert!(f.cv_pinball < 0.9 * naive, "{} {} vs seasonal naive {naive}", f.model, f.cv_pinball);
    assert_eq!(f.reselected, Some(SelectReason::Initial));
    assert_eq!(f.lead_steps, 60);
    let truth = 100.0 + (n - 1 + 60) as f64;
    let p50 = f.quantiles[1].1;
    assert!((p50 - truth).abs() <= 0.01 * truth, "p50 {p50} vs {truth}: {f:?}");
    // …and within 10 % of the rise over the horizon, which a level-only model misses.
    assert!((p50 - truth).abs() <= 0.1 * 60.0, "p50 {p50} vs {truth}");
    assert!(f.quantiles[0].1 < p50 && p50 < f.quantiles[2].1, "{f:?}");
    println!("ramp: {} p50 {p50:.2} vs {truth} (scores {:?})", f.model, sel.scores);
    // The same choice serves the next request without re-selecting.
    let f2 = sf.forecast(&fc, &pts, now + 1000, &req).expect("forecast");
    assert_eq!((f2.reselected, f2.model, f2.selected_at_ms), (None, f.model, now));
}

#[test]
fn a_step_change_is_noticed_as_drift_and_reselected() {
    let mut rng = Rng::new(3);
    let step = 10_000;
    let jump_at = T0 + 8 * HOUR_MS;
    // Level 50 (noise 1) for 8 h, then 80.
    let v: Vec<f64> = (0..(10 * HOUR_MS / step))
        .map(|i| {
            let t = T0 + i * step;
            if t < jump_at { 50.0 } else { 80.0 }
        } + rng.normal())
        .collect();
    let pts = points(T0, step, &v);
    let cfg = ForecastConfig { reselect_every: Duration::from_secs(86_400), ..ForecastConfig::default() };
    let fc = Forecasting::new(cfg).expect("valid");
    let req = ForecastRequest::new(Duration::from_secs(900));
    let mut sf = SeriesForecaster::new();
    let mut drift_at = None;
    let mut drifts = 0;
    let mut last = None;
    // A forecast every minute from 6 h on, each seeing the last 6 h.
    for now in (T0 + 6 * HOUR_MS..T0 + 10 * HOUR_MS).step_by(MIN_MS as usize) {
        let end = pts.partition_point(|p| p.0 <= now);
        let start = pts.partition_point(|p| p.0 <= now - 6 * HOUR_MS);
        let f = sf.forecast(&fc, &pts[start..end], now, &req).expect("forecast");
        match f.reselected {
            Some(SelectReason::Initial) => assert_eq!(now, T0 + 6 * HOUR_MS),
            Some(SelectReason::Drift) => {
                // The point at `jump_at` is already in the history at `now == jump_at`.
                assert!(now >= jump_at, "drift before the jump at +{} min: {f:?}", (now - T0) / MIN_MS);
                drift_at.get_or_insert(now);
                drifts += 1;
            }
            Some(other) => panic!("unexpected re-selection {other:?}"),
            None => {}
        }
        last = Some(f);
    }
    let drift_at = drift_at.expect("the jump was never noticed");
    assert!(drift_at - jump_at <= 5 * MIN_MS, "noticed {} s after the jump", (drift_at - jump_at) / 1000);
    // Two hours later the forecast sits at the new level.
    let f = last.expect("forecasts were made");
    let p50 = f.quantiles[1].1;
    assert!((p50 - 80.0).abs() < 2.0, "{f:?}");
    println!(
        "step change noticed {} s after the jump; {drifts} drift re-selections; final model {} p50 {p50:.2}",
        (drift_at - jump_at) / 1000,
        f.model
    );
}

#[test]
fn gaps_and_bad_values_are_resampled_away() {
    // 1 s raw points with a 5-minute hole and NaNs, as a short-horizon caller passes them.
    let mut pts = Vec::new();
    for s in 0..(3 * 3600) {
        if (3600..3900).contains(&s) {
            continue;
        }
        let v = if s % 97 == 0 { f64::NAN } else { 10.0 + (s % 60) as f64 / 60.0 };
        pts.push((T0 + s * 1000, v));
    }
    let now = T0 + 3 * HOUR_MS;
    let f = SeriesForecaster::new()
        .forecast(&forecasting(), &pts, now, &ForecastRequest::new(Duration::from_secs(900)))
        .expect("forecast");
    assert_eq!(f.step_s, 10);
    assert_eq!(f.history_points, 3 * 360);
    assert_eq!(f.filled_points, 30);
    assert!(f.quantiles.iter().all(|q| q.1.is_finite() && (9.0..12.0).contains(&q.1)), "{f:?}");
}

#[test]
fn too_little_history_is_a_clear_error() {
    let pts = points(T0, 10_000, &[1.0; 40]);
    let now = T0 + 400_000;
    let err = SeriesForecaster::new()
        .forecast(&forecasting(), &pts, now, &ForecastRequest::new(Duration::from_secs(900)))
        .expect_err("40 points cannot support a 90-step lead");
    assert_eq!(err, ForecastError::NotEnoughHistory { have: 40, need: 137 });
    assert!(err.to_string().contains("137 needed"), "{err}");
    let none =
        SeriesForecaster::new().forecast(&forecasting(), &[], now, &ForecastRequest::new(Duration::from_secs(900)));
    assert!(matches!(none, Err(ForecastError::NotEnoughHistory { have: 0, .. })), "{none:?}");
}

#[test]
fn stale_history_and_bad_requests_are_refused() {
    let pts = points(T0, 10_000, &[1.0; 1000]);
    let fc = forecasting();
    let mut sf = SeriesForecaster::new();
    let late = T0 + 10_000_000 + 2 * HOUR_MS;
    let r = sf.forecast(&fc, &pts, late, &ForecastRequest::new(Duration::from_secs(900)));
    assert!(matches!(r, Err(ForecastError::StaleHistory { .. })), "{r:?}");
    let now = T0 + 10_000_000;
    for (quantiles, what) in [(vec![], "none"), (vec![0.0, 0.5], "0"), (vec![0.5, 1.5], "1.5"), (vec![f64::NAN], "NaN")]
    {
        let req = ForecastRequest { quantiles, ..ForecastRequest::new(Duration::from_secs(900)) };
        let r = sf.forecast(&fc, &pts, now, &req);
        assert!(matches!(r, Err(ForecastError::BadRequest(_))), "{what}: {r:?}");
    }
    let req = ForecastRequest { step: Some(Duration::from_secs(600)), ..ForecastRequest::new(Duration::from_secs(60)) };
    assert!(matches!(sf.forecast(&fc, &pts, now, &req), Err(ForecastError::BadRequest(_))));
    let bad = ForecastConfig { drift_factor: 0.5, ..ForecastConfig::default() };
    assert!(matches!(Forecasting::new(bad), Err(ForecastError::BadConfig(_))));
    assert!(matches!(
        Forecasting::with_candidates(ForecastConfig::default(), vec![]),
        Err(ForecastError::BadConfig(_))
    ));
}

#[test]
fn constant_series_gives_a_point_and_more_quantiles_on_request() {
    let pts = points(T0, 10_000, &[3.25; 2000]);
    let now = T0 + 2000 * 10_000;
    let req = ForecastRequest {
        quantiles: vec![0.9, 0.5, 0.1, 0.05, 0.95, 0.5],
        ..ForecastRequest::new(Duration::from_secs(900))
    };
    let f = SeriesForecaster::new().forecast(&forecasting(), &pts, now, &req).expect("forecast");
    let qs: Vec<f64> = f.quantiles.iter().map(|q| q.0).collect();
    assert_eq!(qs, vec![0.05, 0.1, 0.5, 0.9, 0.95]);
    assert!(f.quantiles.iter().all(|q| q.1 == 3.25), "{f:?}");
    assert_eq!(f.cv_pinball, 0.0);
}

#[test]
fn non_negative_metrics_are_floored_at_zero() {
    // Mostly idle with bursts: residual quantiles reach below zero.
    let mut rng = Rng::new(5);
    let v: Vec<f64> = (0..3000).map(|_| if rng.uniform() < 0.2 { 5.0 * rng.uniform() } else { 0.0 }).collect();
    let pts = points(T0, 10_000, &v);
    let now = T0 + 3000 * 10_000;
    let fc = forecasting();
    let mut req = ForecastRequest::new(Duration::from_secs(900));
    req.quantiles = vec![0.01, 0.1, 0.5, 0.9, 0.99];
    req.non_negative = true;
    let f = SeriesForecaster::new().forecast(&fc, &pts, now, &req).expect("forecast");
    assert!(f.quantiles.iter().all(|q| q.1 >= 0.0), "{f:?}");
    assert!(f.quantiles.windows(2).all(|w| w[0].1 <= w[1].1), "{f:?}");
    req.non_negative = false;
    let raw = SeriesForecaster::new().forecast(&fc, &pts, now, &req).expect("forecast");
    assert!(raw.quantiles[0].1 < 0.0, "the floor should have mattered: {raw:?}");
}

#[test]
fn state_per_series_is_bounded_across_horizons() {
    let pts = points(T0, 10_000, &[1.0; 3000]);
    let now = T0 + 3000 * 10_000;
    let (fc, mut sf) = (forecasting(), SeriesForecaster::new());
    for minutes in 1..=20u64 {
        let req = ForecastRequest::new(Duration::from_secs(60 * minutes));
        sf.forecast(&fc, &pts, now + minutes as i64, &req).expect("forecast");
    }
    let kept = (1..=20u64)
        .filter(|m| sf.selection(Duration::from_secs(60 * m), Duration::from_secs(10)).is_some())
        .collect::<Vec<_>>();
    assert_eq!(
        kept,
        (13..=20).collect::<Vec<_>>(),
        "the most recently selected {} are kept",
        series::MAX_HORIZONS_PER_SERIES
    );
}

#[test]
fn a_failed_scheduled_reselection_keeps_a_choice_that_still_fits() {
    let mut rng = Rng::new(21);
    let v: Vec<f64> = (0..2000).map(|_| 10.0 + rng.normal()).collect();
    let pts = points(T0, 10_000, &v);
    let now = T0 + 2000 * 10_000;
    let req = ForecastRequest::new(Duration::from_secs(900));
    // Two hours later (a re-selection is due) only 100 points are passed: too few to
    // select at a 90-step lead (137 needed).
    let later = now + 2 * HOUR_MS;
    let short = points(later - 100 * 10_000, 10_000, &v[1900..]);
    let only =
        |c: Box<dyn Forecaster>| Forecasting::with_candidates(ForecastConfig::default(), vec![c]).expect("valid");

    // Simple smoothing needs 24 points: it keeps serving.
    let (fc, mut sf) = (only(Box::new(Ets::SIMPLE)), SeriesForecaster::new());
    sf.forecast(&fc, &pts, now, &req).expect("forecast");
    let f = sf.forecast(&fc, &short, later, &req).expect("the kept choice serves");
    assert_eq!((f.model, f.reselected, f.selected_at_ms), ("ses", None, now));

    // Asked through another candidate list, the series starts over instead of misreading
    // the kept choice.
    let other = only(Box::new(SeasonalNaive));
    let f = sf.forecast(&other, &pts, now + 1000, &req).expect("forecast");
    assert_eq!((f.model, f.reselected), ("seasonal_naive", Some(SelectReason::Initial)));

    // A linear trend fitted to a window longer than 100 points cannot: the error shows.
    let (fc, mut sf) = (only(Box::new(LinearTrend)), SeriesForecaster::new());
    sf.forecast(&fc, &pts, now, &req).expect("forecast");
    let window = sf.selection(req.horizon, req.step()).expect("selected").params.0[0];
    assert!(window > 100.0, "window {window}");
    let err = sf.forecast(&fc, &short, later, &req).expect_err("too short");
    assert!(matches!(err, ForecastError::NotEnoughHistory { have: 100, need: 137 }), "{err:?}");
}

/// A forecaster that knows the future: shows the candidate list is open (an ONNX-backed
/// model plugs in the same way) and that selection prefers the better model.
struct Oracle(Vec<f64>);

impl Forecaster for Oracle {
    fn name(&self) -> &'static str {
        "oracle"
    }
    fn fit(&self, _y: &[f64], _shape: Shape) -> Result<Params, ForecastError> {
        Ok(Params::default())
    }
    fn min_history(&self, _params: &Params, _shape: Shape) -> usize {
        1
    }
    fn forecast(
        &self,
        _y: &[f64],
        s: Shape,
        _p: &Params,
        origins: &[usize],
        out: &mut [f64],
    ) -> Result<(), ForecastError> {
        for (o, &origin) in out.iter_mut().zip(origins) {
            *o = *self
                .0
                .get(origin + s.lead - 1)
                .ok_or(ForecastError::Model { model: "oracle", reason: "beyond".into() })?;
        }
        Ok(())
    }
}

#[test]
fn an_added_candidate_competes_and_wins_when_better() {
    let mut rng = Rng::new(9);
    let y: Vec<f64> = (0..1000).map(|_| rng.normal()).collect();
    let mut candidates = default_candidates();
    candidates.push(Box::new(Oracle(y.clone())));
    let sel = select(&candidates, &y, Shape { step_ms: 10_000, lead: 30 }, &DEFAULT_QUANTILES).expect("select");
    assert_eq!((sel.model, sel.candidate, sel.cv_pinball), ("oracle", 5, 0.0));
    assert_eq!(sel.scores.len(), 6);
    assert!(sel.scores.iter().all(|s| s.cv_pinball.is_some()), "{:?}", sel.scores);
}

// ---- real data ----

fn crate_dir() -> PathBuf {
    augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR"))
}

fn data_dir() -> PathBuf {
    std::env::var_os("AUGUR_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| crate_dir().join("../../shared/data"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) to milliseconds since the epoch.
fn parse_nab_time(s: &str) -> Option<i64> {
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let days = days_from_civil(n(0..4)?, n(5..7)?, n(8..10)?);
    Some(((days * 24 + n(11..13)?) * 60 + n(14..16)?) * 60_000 + n(17..19)? * 1000)
}

fn load_nab(path: &std::path::Path) -> Vec<(i64, f64)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut pts: Vec<(i64, f64)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (t, v) = l.split_once(',')?;
            Some((parse_nab_time(t.trim())?, v.trim().parse().ok()?))
        })
        .collect();
    pts.sort_by_key(|p| p.0);
    pts
}

#[test]
fn nab_time_parses() {
    assert_eq!(parse_nab_time("1970-01-01 00:00:00"), Some(0));
    assert_eq!(parse_nab_time("2024-01-01 00:00:00"), Some(T0));
    assert_eq!(parse_nab_time("2014-02-14 14:30:00"), Some(1_392_388_200_000));
    assert_eq!(parse_nab_time("garbage"), None);
}

/// Rolling-origin selection on every NAB CPU series, judged on a held-out tail against
/// the seasonal-naive baseline.
///
/// Per series (5-minute steps, ~14 days) and horizon (1 h, 24 h): hourly origins whose
/// targets fall in the last three days; at each origin a [`SeriesForecaster`] sees only
/// the history up to it (selecting on its first call and re-selecting hourly and on
/// drift), and so does a baseline limited to seasonal naive (daily season). Both are
/// scored by the mean pinball loss over p10/p50/p90 against the actual at the target.
#[test]
fn nab_cpu_selection_is_no_worse_than_seasonal_naive() {
    let dir = data_dir().join("nab/realAWSCloudwatch");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("SKIP nab_cpu_selection_is_no_worse_than_seasonal_naive: no {} (set AUGUR_DATA_DIR)", dir.display());
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains("cpu_utilization")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no CPU series in {}", dir.display());
    let (fc, base) = (forecasting(), baseline_only());
    let step = Duration::from_secs(300);
    for horizon in [Duration::from_secs(3600), Duration::from_secs(86_400)] {
        let (mut ratio_sum, mut sel_cov, mut base_cov, mut n) = (0.0, 0.0, 0.0, 0.0);
        let mut wins: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut worse = Vec::new();
        for path in &files {
            let pts = load_nab(path);
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?").to_string();
            let end = pts.last().expect("non-empty series").0;
            let h = horizon.as_millis() as i64;
            let tail_start = end - 3 * DAY_MS;
            let origins = || (0..).map(move |k| tail_start - h + k * HOUR_MS).take_while(move |&t| t + h <= end);
            let req = ForecastRequest { step: Some(step), non_negative: true, ..ForecastRequest::new(horizon) };
            let chosen = held_out(&fc, &pts, &req, 14 * DAY_MS, origins());
            let baseline = held_out(&base, &pts, &req, 14 * DAY_MS, origins());
            let ratio = chosen.mean_pinball() / baseline.mean_pinball().max(1e-12);
            println!(
                "{{\"series\":\"{name}\",\"horizon_s\":{},\"origins\":{},\"pinball\":{:.4},\"pinball_seasonal_naive\":{:.4},\"ratio\":{ratio:.3},\"coverage_p10_p90\":{:.3},\"coverage_seasonal_naive\":{:.3},\"models\":{:?}}}",
                horizon.as_secs(),
                chosen.count,
                chosen.mean_pinball(),
                baseline.mean_pinball(),
                chosen.coverage(),
                baseline.coverage(),
                chosen.models
            );
            if ratio > 1.0 {
                worse.push(format!("{name}: {ratio:.3}"));
            }
            ratio_sum += ratio;
            sel_cov += chosen.coverage();
            base_cov += baseline.coverage();
            n += 1.0;
            for (m, c) in chosen.models {
                *wins.entry(m).or_default() += c;
            }
        }
        let mean_ratio = ratio_sum / n;
        println!(
            "{{\"summary\":\"nab_cpu\",\"horizon_s\":{},\"series\":{n},\"mean_pinball_ratio_vs_seasonal_naive\":{mean_ratio:.3},\"mean_coverage\":{:.3},\"mean_coverage_seasonal_naive\":{:.3},\"forecasts_by_model\":{wins:?},\"worse_than_baseline\":{worse:?}}}",
            horizon.as_secs(),
            sel_cov / n,
            base_cov / n
        );
        assert!(mean_ratio <= 1.0, "{horizon:?}: selected models lose to seasonal naive on average ({mean_ratio:.3})");
    }
}

/// The agent recording: 30 minutes of 1 s data. Horizon 5 minutes on the 10 s grid, too
/// short a history for any season, so the baseline is the last value. Forecasts every
/// 10 s whose targets fall in the last 10 minutes; judged on the mean loss ratio over the
/// three series (host memory alone has a level shift in that tail that nothing foresees).
#[test]
fn agent_recording_selection_is_no_worse_than_naive_on_average() {
    let path = crate_dir().join("../bench/data/agent-recording-30m.augrec.gz");
    let rec = crate::recording::Recording::load(&path).expect("the recording is part of the repository");
    let pick = |resource: &str, metric: &str| {
        rec.series
            .iter()
            .find(|s| s.key.resource == resource && s.key.metric == metric)
            .unwrap_or_else(|| panic!("{resource} {metric} not in the recording"))
    };
    let cases = [
        ("host", "node_memory_MemAvailable_bytes", false),
        ("cgroup/augur-demo/cache", "container_memory_usage_bytes", false),
        ("cgroup/augur-demo/cache", "container_cpu_usage_seconds_total", true),
    ];
    let (fc, base) = (forecasting(), baseline_only());
    let mut ratios = Vec::new();
    let horizon = Duration::from_secs(300);
    let req =
        ForecastRequest { step: Some(Duration::from_secs(10)), non_negative: true, ..ForecastRequest::new(horizon) };
    for (resource, metric, counter) in cases {
        let s = pick(resource, metric);
        let pts = if counter { counter_rate(&s.points) } else { s.points.clone() };
        let end = pts.last().expect("points").0;
        let origins =
            || (0..).map(move |k| end - 600_000 - 300_000 + k * 10_000).take_while(move |&t| t + 300_000 <= end);
        let chosen = held_out(&fc, &pts, &req, HOUR_MS, origins());
        let baseline = held_out(&base, &pts, &req, HOUR_MS, origins());
        println!(
            "{{\"series\":\"{resource} {metric}{}\",\"horizon_s\":300,\"origins\":{},\"pinball\":{:.6e},\"pinball_naive\":{:.6e},\"ratio\":{:.3},\"coverage_p10_p90\":{:.3},\"coverage_naive\":{:.3},\"models\":{:?}}}",
            if counter { " (rate)" } else { "" },
            chosen.count,
            chosen.mean_pinball(),
            baseline.mean_pinball(),
            chosen.mean_pinball() / baseline.mean_pinball().max(1e-300),
            chosen.coverage(),
            baseline.coverage(),
            chosen.models
        );
        assert!(chosen.count >= 50, "{chosen:?}");
        assert!(chosen.mean_pinball().is_finite());
        ratios.push(chosen.mean_pinball() / baseline.mean_pinball().max(1e-300));
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    println!("{{\"summary\":\"agent_recording\",\"mean_pinball_ratio_vs_naive\":{mean:.3}}}");
    assert!(mean <= 1.0, "selected models lose to the last value on average: {ratios:?}");
}
