//! Tests of the online detector: the DETECTOR.md worked example (conformance), agreement
//! with the Python harness on real SMD data, and the online policy (missing values,
//! quarantine, refit, relearning) on synthetic streams.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::threshold::ThresholdMethod;
use super::*;

const MIN_MS: i64 = 60_000;

fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
    assert!((got - want).abs() <= tol, "{what}: got {got}, want {want} (tolerance {tol})");
}

// ------------------------------------------------------------------------- DETECTOR.md example

/// DETECTOR.md "Worked example (for a conformance test)", every number to the 6 decimals given.
#[test]
fn conformance_with_the_detector_md_worked_example() {
    let cfg = AnomalyConfig {
        warmup: Duration::from_secs(7 * 60),
        min_warmup_samples: 8,
        max_warmup_samples: 8,
        refit_every: None,
        ..AnomalyConfig::default()
    };
    let mut det = HostDetector::new(cfg, ["a", "b", "c"]).expect("valid");
    let learning = [
        [1.0, 2.0, 0.5],
        [2.0, 4.1, 0.4],
        [3.0, 5.9, 0.6],
        [4.0, 8.2, 0.5],
        [5.0, 9.9, 0.5],
        [6.0, 12.1, 0.4],
        [7.0, 13.8, 0.6],
        [8.0, 16.1, 0.5],
    ];
    for (i, x) in learning.iter().enumerate() {
        assert!(matches!(det.phase(), Phase::Learning { samples, .. } if samples == i));
        assert_eq!(det.observe(i as i64 * MIN_MS, x).expect("observe"), None);
    }
    assert!(matches!(det.phase(), Phase::Scoring { refits: 0, .. }));
    let model = det.model().expect("fitted");
    let tol = 1e-6;
    for (j, (mean, std)) in [(4.5, 2.291288), (9.0125, 4.570678), (0.5, 0.070711)].into_iter().enumerate() {
        let (m, s, resid) = model.signal_scale(j).expect("modelled");
        assert_close(m, mean, tol, "mean");
        assert_close(s, std, tol, "std");
        assert_eq!(resid, 0.1, "residual std floored");
    }
    for (got, want) in model.eigenvalues().iter().zip([2.039965, 0.959838, 0.000198]) {
        assert_close(*got, want, tol, "eigenvalue");
    }
    assert_eq!(model.components(), 2);
    let w_want = [[2.187886, -1.093721, -1.369643], [-2.181762, 1.090660, 1.365809], [-0.042268, 0.021130, 0.026460]];
    let w = model.weight();
    for i in 0..3 {
        for j in 0..3 {
            assert_close(w[i * 3 + j], w_want[i][j], tol, &format!("W[{i}][{j}]"));
        }
    }
    for (got, want) in model.bias().iter().zip([-0.696494, 0.694544, 0.013456]) {
        assert_close(*got, want, tol, "b");
    }
    // three samples 60 s apart after the learning period (whose last score is m = 0.018484)
    let tests = [[4.5, 9.0, 0.5], [4.5, 3.0, 0.5], [4.5, 9.0, 0.5]];
    let e_want = [0.000373, 86.261853, 0.000373];
    let m_want = [0.009429, 43.135641, 21.568007];
    for (i, x) in tests.iter().enumerate() {
        let s = det.observe((8 + i as i64) * MIN_MS, x).expect("observe").expect("scored");
        assert_close(s.raw, e_want[i], tol * e_want[i].max(1.0), "e");
        assert_close(s.smoothed, m_want[i], tol * m_want[i].max(1.0), "m");
    }
    // 8 minutes of learning: τ by tail extrapolation, never below the learning maximum (0.042581)
    let cal = det.calibration().expect("calibrated");
    assert_eq!(cal.method, ThresholdMethod::TailExtrapolation);
    assert!(cal.threshold >= 0.042580, "{cal:?}");
}

// ------------------------------------------------------------------------------- SMD vs Python

/// The shipped detector's figures from the Python harness (`models/eval`): per machine,
/// `(name, components, τ on train, best-F1, AUC-PR)`, printed at full precision from
/// `ResidualEwma().fit_score`, `metrics.train_alarm_threshold`, `metrics.best_f1` and
/// `metrics.auc_pr` (`run_eval.py --evals smd --per-host` prints the same to 4 decimals:
/// 0.8821 / 0.8753 and 0.3679 / 0.3209).
const SMD_PYTHON: [(&str, usize, f64, f64, f64); 2] = [
    ("machine-1-6", 13, 790.3791439750166, 0.8820543445804718, 0.8752847104418767),
    ("machine-3-3", 11, 400.7306284928385, 0.3678714859437751, 0.32088358904766945),
];

fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AUGUR_DATA_DIR") {
        return PathBuf::from(dir);
    }
    // the run-time manifest dir, so clones sharing a target dir find their own data
    let manifest =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
    manifest.join("../../shared/data")
}

/// A gzip CSV with header `t,<metrics...>[,label]`: (times, rows, labels).
fn read_smd_csv(path: &Path) -> (Vec<f64>, Vec<Vec<f64>>, Vec<bool>) {
    let file = std::fs::File::open(path).expect("open SMD file");
    let mut lines = BufReader::new(flate2::read::GzDecoder::new(file)).lines();
    let header = lines.next().expect("header").expect("read header");
    let cols: Vec<&str> = header.split(',').collect();
    assert_eq!(cols[0], "t");
    let has_label = cols.last() == Some(&"label");
    let metrics = cols.len() - 1 - usize::from(has_label);
    let (mut t, mut rows, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for line in lines {
        let line = line.expect("read line");
        let mut fields = line.split(',').map(|f| f.parse::<f64>().expect("number"));
        t.push(fields.next().expect("t"));
        rows.push(fields.by_ref().take(metrics).collect::<Vec<_>>());
        if has_label {
            labels.push(fields.next().expect("label") == 1.0);
        }
    }
    (t, rows, labels)
}

/// Point-wise best F1 over all thresholds `score >= thr` (ties grouped), as `metrics.best_f1`.
fn best_f1(score: &[f64], label: &[bool]) -> f64 {
    let (tp, fp, positives) = pr_steps(score, label);
    tp.iter()
        .zip(&fp)
        .map(|(&tp, &fp)| {
            let (p, r) = (tp / (tp + fp), tp / positives);
            if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 }
        })
        .fold(0.0, f64::max)
}

/// Average precision (sklearn's `average_precision_score`): Σ (R_i − R_{i−1}) P_i.
fn average_precision(score: &[f64], label: &[bool]) -> f64 {
    let (tp, fp, positives) = pr_steps(score, label);
    let mut prev_recall = 0.0;
    let mut ap = 0.0;
    for (&tp, &fp) in tp.iter().zip(&fp) {
        let recall = tp / positives;
        ap += (recall - prev_recall) * tp / (tp + fp);
        prev_recall = recall;
    }
    ap
}

/// Cumulative true and false positives at each distinct score, descending.
fn pr_steps(score: &[f64], label: &[bool]) -> (Vec<f64>, Vec<f64>, f64) {
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
    let (mut tp, mut fp) = (Vec::new(), Vec::new());
    let (mut t, mut f) = (0.0, 0.0);
    for (i, &j) in order.iter().enumerate() {
        if label[j] {
            t += 1.0
        } else {
            f += 1.0
        }
        if i + 1 == order.len() || score[order[i + 1]] != score[j] {
            tp.push(t);
            fp.push(f);
        }
    }
    (tp, fp, label.iter().filter(|&&l| l).count() as f64)
}

struct SmdRun {
    components: usize,
    threshold: f64,
    test_scores: Vec<f64>,
    labels: Vec<bool>,
    relearns: u64,
}

/// Runs the online detector over train then test of one SMD machine (1 sample per minute):
/// with `batch`, learning is exactly the train split and there are no refits (the harness's
/// fit-on-train, score-train-and-test-as-one-stream); otherwise the default online policy.
fn run_smd(dir: &Path, batch: bool) -> SmdRun {
    let (train_t, train, _) = read_smd_csv(&dir.join("train.csv.gz"));
    let (test_t, test, labels) = read_smd_csv(&dir.join("test.csv.gz"));
    let names: Vec<String> = (0..train[0].len()).map(|j| format!("m{j}")).collect();
    let last_train = *train_t.last().expect("train rows");
    let train_span = Duration::from_secs((last_train - train_t[0]) as u64 * 60);
    let cfg = if batch {
        AnomalyConfig {
            warmup: train_span,
            min_warmup_samples: train.len(),
            max_warmup_samples: train.len(),
            refit_every: None,
            relearn_after: None,
            sample_interval: Duration::from_secs(60),
            ..AnomalyConfig::default()
        }
    } else {
        AnomalyConfig {
            warmup: train_span,
            min_warmup_samples: train.len(),
            max_warmup_samples: train.len(),
            sample_interval: Duration::from_secs(60),
            ..AnomalyConfig::default()
        }
    };
    let mut det = HostDetector::new(cfg, names).expect("valid");
    for (t, x) in train_t.iter().zip(&train) {
        assert_eq!(det.observe(*t as i64 * MIN_MS, x).expect("observe"), None);
    }
    let components = det.model().expect("fitted on train").components();
    let threshold = det.threshold().expect("calibrated");
    // test continues where train ended (its `t` restarts at 0)
    let test_scores = test_t
        .iter()
        .zip(&test)
        .map(|(t, x)| {
            let ts = (last_train + 1.0 + t) as i64 * MIN_MS;
            // in batch mode every test sample is scored; online, a relearning phase scores 0
            let score = det.observe(ts, x).expect("observe");
            assert!(score.is_some() || !batch, "batch mode scores every test sample");
            score.map_or(0.0, |s| s.smoothed)
        })
        .collect();
    SmdRun { components, threshold, test_scores, labels, relearns: det.relearns() }
}

/// The Rust detector in batch mode reproduces the Python harness's shipped detector on SMD.
///
/// Both compute the same model in f64 (Welford vs numpy's two-pass moments, Jacobi vs
/// LAPACK), so test scores agree to ~1e-9 relative and the point-wise metrics, which depend
/// only on the order of the scores, agree to ~1e-6; τ agrees to ~1e-6 relative (the learning
/// samples are replayed from f32). The tolerance of 1e-3 leaves room for platform
/// differences in LAPACK without letting a real divergence (a different subspace, a
/// different EWMA) pass: those move best-F1 and AUC-PR by 0.01 or more (DETECTOR.md's
/// variants table). Two of the five machines (about 2 s each in the dev profile): the best
/// and one of the hardest.
#[test]
fn batch_mode_matches_the_python_harness_on_smd() {
    let root = data_dir().join("smd");
    if !root.is_dir() {
        eprintln!("skipping: no SMD data in {} (set AUGUR_DATA_DIR)", root.display());
        return;
    }
    for (machine, components, tau, f1, ap) in SMD_PYTHON {
        let dir = root.join(machine);
        if !dir.join("train.csv.gz").is_file() {
            eprintln!("skipping {machine}: not in {}", root.display());
            continue;
        }
        let started = Instant::now();
        let run = run_smd(&dir, true);
        let (rust_f1, rust_ap) =
            (best_f1(&run.test_scores, &run.labels), average_precision(&run.test_scores, &run.labels));
        eprintln!(
            "{machine}: rust best-F1 {rust_f1:.6} AUC-PR {rust_ap:.6} τ {:.4} k {} | python {f1:.6} {ap:.6} τ {tau:.4} k {components} ({:.1} s)",
            run.threshold,
            run.components,
            started.elapsed().as_secs_f64()
        );
        assert_eq!(run.components, components, "{machine}: components");
        assert_close(run.threshold, tau, 1e-3 * tau, &format!("{machine}: τ"));
        assert_close(rust_f1, f1, 1e-3, &format!("{machine}: best-F1"));
        assert_close(rust_ap, ap, 1e-3, &format!("{machine}: AUC-PR"));
    }
}

/// The default online policy (hourly refits on forgetting moments behind the learning gate
/// and quarantine), learning on SMD's test splits unlabelled as in production. Not a harness
/// figure (the harness fits once on train); printed for comparison with the batch run. On the
/// five machines: online mean best-F1 0.507 / AUC-PR 0.461, batch 0.506 / 0.449. The
/// assertion (means within 0.03 of batch) catches a policy that leaks anomalies into the
/// baseline: gating at τ gave 0.428 / 0.388, relearning after 24 h 0.449 / 0.392.
#[test]
fn online_policy_on_smd() {
    let root = data_dir().join("smd");
    if !root.is_dir() {
        eprintln!("skipping: no SMD data in {} (set AUGUR_DATA_DIR)", root.display());
        return;
    }
    let mut machines: Vec<PathBuf> =
        std::fs::read_dir(&root).expect("read data dir").map(|e| e.expect("entry").path()).collect();
    machines.sort();
    let mut sums = [0.0; 4];
    for dir in &machines {
        let batch = run_smd(dir, true);
        let online = run_smd(dir, false);
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let (bf, ba) =
            (best_f1(&batch.test_scores, &batch.labels), average_precision(&batch.test_scores, &batch.labels));
        let (of, oa) =
            (best_f1(&online.test_scores, &online.labels), average_precision(&online.test_scores, &online.labels));
        eprintln!(
            "{name}: batch best-F1 {bf:.4} AUC-PR {ba:.4} | online {of:.4} {oa:.4} ({} relearns)",
            online.relearns
        );
        for (sum, v) in sums.iter_mut().zip([bf, ba, of, oa]) {
            *sum += v / machines.len() as f64;
        }
    }
    let [bf, ba, of, oa] = sums;
    eprintln!("mean: batch best-F1 {bf:.4} AUC-PR {ba:.4} | online {of:.4} {oa:.4}");
    assert!(of > bf - 0.03 && oa > ba - 0.03, "the online policy lost signal against fitting once");
}

// ------------------------------------------------------------------------- online behaviour

/// xorshift64* and Box–Muller: deterministic normal noise without a dependency.
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Four signals driven by two latent factors plus noise: cpu and load move together, as do
/// memory and swap. `cpu_shift` moves cpu alone (std ≈ 10), off the pattern: a level shift of
/// every signal along the factors would be a move inside the principal subspace, which a
/// residual detector does not see by design.
fn host_sample(noise: &mut Noise, cpu_shift: f64) -> [f64; 4] {
    let a = noise.normal();
    let b = noise.normal();
    [
        50.0 + cpu_shift + 10.0 * a + noise.normal(),
        5.0 + 1.0 * a + 0.1 * noise.normal(),
        1000.0 + 100.0 * b + 10.0 * noise.normal(),
        200.0 + 20.0 * b + 2.0 * noise.normal(),
    ]
}

const SIGNALS: [&str; 4] = ["cpu", "load", "mem", "swap"];

fn test_config() -> AnomalyConfig {
    AnomalyConfig { warmup: Duration::from_secs(1800), min_warmup_samples: 600, ..AnomalyConfig::default() }
}

/// Learns for 30 min at 1 Hz and returns the detector (now scoring) and the next timestamp.
fn learned(cfg: AnomalyConfig, noise: &mut Noise) -> (HostDetector, i64) {
    let mut det = HostDetector::new(cfg, SIGNALS).expect("valid");
    let mut ts = 0;
    while det.model().is_none() {
        assert_eq!(det.observe(ts, &host_sample(noise, 0.0)).expect("observe"), None);
        ts += 1000;
    }
    assert_eq!(ts, 1_801_000, "learning ends at the first sample 30 min after the first");
    (det, ts)
}

#[test]
fn flags_a_broken_correlation_and_names_the_signal() {
    let mut noise = Noise(7);
    let (mut det, mut ts) = learned(test_config(), &mut noise);
    let cal = det.calibration().expect("calibrated");
    assert_eq!(cal.method, ThresholdMethod::TailExtrapolation);
    // an hour of normal operation: no alarm
    for _ in 0..3600 {
        let s = det.observe(ts, &host_sample(&mut noise, 0.0)).expect("observe").expect("scored");
        assert!(!s.is_anomalous, "false alarm at {ts}: {s:?}");
        ts += 1000;
    }
    // load decouples from cpu, within its usual range (no single-signal outlier)
    let mut first_alarm = None;
    let mut starts = 0;
    for i in 0..600 {
        let mut x = host_sample(&mut noise, 0.0);
        x[1] = 5.0 - (x[0] - 50.0) / 10.0;
        let s = det.observe(ts, &x).expect("observe").expect("scored");
        starts += usize::from(s.alarm_start);
        if s.is_anomalous && first_alarm.is_none() {
            first_alarm = Some(i);
            assert!(s.alarm_start);
            let names: Vec<&str> = s.top_signals.iter().map(|c| &*c.signal).collect();
            assert!(names[..2].contains(&"load") && names[..2].contains(&"cpu"), "{:?}", s.top_signals);
            let total: f64 = s.top_signals.iter().map(|c| c.share).sum();
            assert!(total <= 1.0 + 1e-12 && s.top_signals[0].share >= s.top_signals[1].share);
        }
        ts += 1000;
    }
    let first = first_alarm.expect("the broken correlation is flagged");
    assert!(first < 120, "flagged after {first} s");
    assert_eq!(starts, 1, "one debounced alarm");
}

#[test]
fn missing_values_are_imputed_and_unobserved_signals_left_out() {
    let mut noise = Noise(11);
    let mut det = HostDetector::new(test_config(), ["cpu", "load", "mem", "swap", "gpu"]).expect("valid");
    let mut ts = 0;
    let mut i = 0;
    while det.model().is_none() {
        let mut x = host_sample(&mut noise, 0.0).to_vec();
        x.push(f64::NAN); // gpu never reported
        if i % 50 == 0 {
            x[2] = f64::NAN; // mem missing 2 % of the time
        }
        det.observe(ts, &x).expect("observe");
        ts += 1000;
        i += 1;
    }
    let model = det.model().expect("fitted");
    assert_eq!(model.active(), &[0, 1, 2, 3]);
    assert!(model.signal_scale(4).is_none());
    // a missing modelled value is imputed; the unmodelled signal never contributes
    let mut x = host_sample(&mut noise, 0.0).to_vec();
    x[3] = f64::NAN;
    x.push(1e12);
    let s = det.observe(ts, &x).expect("observe").expect("scored");
    assert_eq!(s.imputed, 1);
    assert!(s.top_signals.iter().all(|c| &*c.signal != "gpu"));
    // a sample with nothing in it changes nothing, not even the clock
    assert_eq!(det.observe(ts + 1000, &[f64::NAN; 5]).expect("observe"), None);
    assert!(det.observe(ts + 1000, &[50.0, 5.0, 1000.0, 200.0, f64::NAN]).expect("observe").is_some());
    assert_eq!(
        det.observe(ts + 1000, &[1.0; 5]),
        Err(AnomalyError::TimeNotIncreasing { previous_ms: ts + 1000, ts_ms: ts + 1000 })
    );
    assert_eq!(det.observe(ts + 2000, &[1.0; 4]), Err(AnomalyError::WrongLength { expected: 5, got: 4 }));
}

#[test]
fn anomalous_periods_are_never_learned() {
    /// 20 min normal, 20 min of cpu shifted by 3 std, 40 min normal; returns the detector,
    /// the scored times, the anomalous times and the samples learned after the fit.
    fn run(gate: Option<f64>) -> (HostDetector, Vec<i64>, Vec<i64>, u64) {
        let mut noise = Noise(13);
        let cfg =
            AnomalyConfig { refit_every: Some(Duration::from_secs(60)), learn_gate_quantile: gate, ..test_config() };
        let (mut det, mut ts) = learned(cfg, &mut noise);
        let learned_at_fit = det.baseline().samples();
        let (mut scored, mut alarm_steps) = (Vec::new(), Vec::new());
        for i in 0..4800 {
            let shift = if (1200..2400).contains(&i) { 30.0 } else { 0.0 };
            let s = det.observe(ts, &host_sample(&mut noise, shift)).expect("observe").expect("scored");
            if s.is_anomalous {
                alarm_steps.push(ts);
            }
            scored.push(ts);
            ts += 1000;
        }
        // the shift was never learned: it is still anomalous
        let s = det.observe(ts, &host_sample(&mut noise, 30.0)).expect("observe").expect("scored");
        assert!(s.raw > 10.0 * det.model().expect("model").expected_error(), "{s:?}");
        assert!(matches!(det.phase(), Phase::Scoring { refits, .. } if refits > 15));
        let learned = det.baseline().samples() - learned_at_fit;
        (det, scored, alarm_steps, learned)
    }
    let quarantine_ms = 300_000;
    // gate = τ: the suspicious period is the alarm, extended until the share of suspicious
    // samples (half-life: the quarantine) falls below one half, one quarantine after the last
    // alarm; learned are exactly the samples older than the quarantine and more than a
    // quarantine away from that period
    let (_, scored, alarm_steps, learned) = run(None);
    let (first, last) = (alarm_steps[0], *alarm_steps.last().expect("alarms"));
    assert!(first >= scored[1200] && first < scored[1200] + 120_000, "flagged at {first}");
    let now = *scored.last().expect("scored");
    let learnable = |zone_end: i64| {
        scored.iter().filter(|&&t| t <= now - quarantine_ms && !(t >= first - quarantine_ms && t <= zone_end)).count()
            as u64
    };
    let (at_most, at_least) = (learnable(last + quarantine_ms), learnable(last + 2 * quarantine_ms + 1000));
    assert!((at_least..=at_most).contains(&learned), "{learned} not in {at_least}..={at_most}");
    // the default gate (99th percentile of the learning scores) also leaves out the samples
    // above it, about 1 % of normal operation
    let (det, _, _, gated) = run(Some(0.99));
    assert!(det.learn_gate().expect("gate") < det.threshold().expect("τ"));
    assert!(gated <= at_most && gated as f64 > 0.8 * at_least as f64, "{gated} of {at_least}..={at_most}");
}

#[test]
fn refits_follow_slow_drift() {
    // cpu drifts by 0.6 std over 12 h, off the pattern (the baseline's mean lags it by ~0.04 std)
    let run = |refit: Option<Duration>| {
        let mut noise = Noise(17);
        let cfg = AnomalyConfig {
            refit_every: refit,
            baseline_halflife: Duration::from_secs(1800),
            relearn_after: None,
            ..test_config()
        };
        let (mut det, mut ts) = learned(cfg, &mut noise);
        let mut alarm_seconds = 0;
        for i in 0..12 * 3600 {
            let s = det.observe(ts, &host_sample(&mut noise, 6.0 * i as f64 / 43_200.0)).expect("observe");
            alarm_seconds += usize::from(s.expect("scored").is_anomalous);
            ts += 1000;
        }
        alarm_seconds
    };
    let (fixed, refitted) = (run(None), run(Some(Duration::from_secs(600))));
    assert!(fixed > 3 * 3600, "a fixed model flags the drift for hours: {fixed} s");
    assert!(refitted < 60, "refits follow it: {refitted} s");
}

#[test]
fn a_provisional_threshold_is_recalibrated_after_the_first_day() {
    for recalibrate in [true, false] {
        let mut noise = Noise(23);
        let cfg = AnomalyConfig { recalibrate_after_first_day: recalibrate, ..test_config() };
        let (mut det, mut ts) = learned(cfg, &mut noise);
        let fitted_at = ts - 1000;
        let provisional = det.calibration().expect("calibrated");
        assert_eq!(provisional.method, ThresholdMethod::TailExtrapolation);
        while ts < fitted_at + 86_400_000 + 1000 {
            det.observe(ts, &host_sample(&mut noise, 0.0)).expect("observe");
            ts += 1000;
        }
        let now = det.calibration().expect("calibrated");
        if recalibrate {
            assert_eq!(now.method, ThresholdMethod::FirstDayRule);
            assert!((now.span_days - 1.0).abs() < 0.01, "{now:?}");
            assert!(
                now.threshold != provisional.threshold && now.threshold > det.model().expect("model").expected_error()
            );
            // refits since then keep τ in proportion to the expected error
            let tau = det.threshold().expect("τ");
            assert!((tau / now.threshold - 1.0).abs() < 0.05, "{tau} vs {now:?}");
            assert!(det.learn_gate().expect("gate") <= now.threshold);
        } else {
            assert_eq!(now, provisional);
        }
    }
}

#[test]
fn a_lasting_change_is_relearned() {
    let mut noise = Noise(19);
    let cfg = AnomalyConfig { relearn_after: Some(Duration::from_secs(3600)), ..test_config() };
    let (mut det, mut ts) = learned(cfg, &mut noise);
    let mut relearned_at = None;
    for i in 0..3 * 3600 {
        let s = det.observe(ts, &host_sample(&mut noise, 50.0)).expect("observe");
        if s.is_none() && relearned_at.is_none() {
            relearned_at = Some(i);
        }
        ts += 1000;
    }
    let at = relearned_at.expect("relearned");
    assert!((3600..3800).contains(&at), "relearned after {at} s");
    assert_eq!(det.relearns(), 1);
    let s = det.observe(ts, &host_sample(&mut noise, 50.0)).expect("observe").expect("scoring the new normal");
    assert!(!s.is_anomalous);
    det.relearn();
    assert!(matches!(det.phase(), Phase::Learning { samples: 0, .. }));
}

#[test]
fn bad_configs_and_signal_lists_are_refused() {
    let bad = |cfg: AnomalyConfig| HostDetector::new(cfg, ["a"]).expect_err("refused");
    assert!(matches!(
        bad(AnomalyConfig { variance: 1.5, ..Default::default() }),
        AnomalyError::InvalidConfig { field: "variance", .. }
    ));
    assert!(matches!(
        bad(AnomalyConfig { min_warmup_samples: 1, ..Default::default() }),
        AnomalyError::InvalidConfig { field: "min_warmup_samples", .. }
    ));
    assert!(matches!(
        bad(AnomalyConfig { relearn_after: Some(Duration::from_secs(60)), ..Default::default() }),
        AnomalyError::InvalidConfig { field: "relearn_after", .. }
    ));
    let none: [&str; 0] = [];
    assert_eq!(HostDetector::new(AnomalyConfig::default(), none).expect_err("refused"), AnomalyError::NoSignals);
    assert_eq!(
        HostDetector::new(AnomalyConfig::default(), ["a", "b", "a"]).expect_err("refused"),
        AnomalyError::DuplicateSignal("a".into())
    );
}
