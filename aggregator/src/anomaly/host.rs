//! [`HostDetector`]: one host's online detector: learning, scoring, quarantine, refit and
//! relearning (the policy is described in the [module docs](super)).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use tracing::debug;

use super::detector::{Ewma, FitParams, ResidualModel};
use super::moments::Moments;
use super::threshold::{self, Calibration};
use super::{AnomalyConfig, AnomalyError, AnomalyScore, Contribution, Phase};

/// The online detector of one host over a fixed, ordered list of signals.
#[derive(Debug, Clone)]
pub struct HostDetector {
    spec: Spec,
    /// Learning-phase moments, then the baseline moments (with forgetting).
    moments: Moments,
    ewma: Ewma,
    last_ts: Option<i64>,
    state: State,
    relearns: u64,
    /// Scratch: per-signal scaled residuals of the current sample.
    residuals: Vec<f64>,
}

#[derive(Debug, Clone)]
enum State {
    Learning(Learning),
    Scoring(Box<Scoring>),
}

/// The learning samples, kept to score them once the model is fitted.
#[derive(Debug, Clone, Default)]
struct Learning {
    ts: Vec<i64>,
    /// `ts.len() × d`, row-major, NaN where missing.
    rows: Vec<f32>,
}

#[derive(Debug, Clone)]
struct Scoring {
    model: ResidualModel,
    threshold: f64,
    calibration: Calibration,
    /// τ / expected error at calibration; keeps τ in proportion across refits.
    threshold_per_expected_error: f64,
    /// Samples scoring above this are not learned (nor their quarantine neighbours).
    learn_gate: f64,
    gate_per_expected_error: f64,
    fitted_at_ms: i64,
    refits: u64,
    learned_since_fit: u64,
    /// Samples waiting out the quarantine: times, and `d` values each (f32, NaN where missing).
    pending_ts: VecDeque<i64>,
    pending: VecDeque<f32>,
    /// The first day's per-minute maximum scores over the expected error, while a provisional
    /// τ awaits recalibration.
    first_day: Option<MinuteMaxima>,
    /// The last anomalous sample.
    last_alarm_ms: Option<i64>,
    /// Share of recent samples above the learning gate (EWMA, the quarantine as half-life).
    suspicion: Ewma,
    /// The last sample of a suspicious period (an alarm, or suspicion above one half).
    last_blocked_ms: Option<i64>,
    /// Since when nothing could be learned because of suspicious samples.
    blocked_since_ms: Option<i64>,
}

/// Per-minute maxima of a score since `start_ms`: (minute start, maximum), in time order.
#[derive(Debug, Clone)]
struct MinuteMaxima {
    start_ms: i64,
    minute_ts: Vec<i64>,
    maxima: Vec<f64>,
}

impl MinuteMaxima {
    fn new(start_ms: i64) -> Self {
        MinuteMaxima { start_ms, minute_ts: Vec::with_capacity(1440), maxima: Vec::with_capacity(1440) }
    }

    fn add(&mut self, ts_ms: i64, value: f64) {
        let minute = self.start_ms + (ts_ms - self.start_ms).div_euclid(60_000) * 60_000;
        match (self.minute_ts.last(), self.maxima.last_mut()) {
            (Some(&last), Some(max)) if last == minute => *max = max.max(value),
            _ => {
                self.minute_ts.push(minute);
                self.maxima.push(value);
            }
        }
    }
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl HostDetector {
    /// A detector in the learning phase for `signals` (the order of every sample's values).
    pub fn new<S: Into<Arc<str>>>(
        cfg: AnomalyConfig,
        signals: impl IntoIterator<Item = S>,
    ) -> Result<Self, AnomalyError> {
        cfg.validate()?;
        let signals: Vec<Arc<str>> = signals.into_iter().map(Into::into).collect();
        if signals.is_empty() {
            return Err(AnomalyError::NoSignals);
        }
        let mut names = HashSet::new();
        for s in &signals {
            if !names.insert(s.clone()) {
                return Err(AnomalyError::DuplicateSignal(s.to_string()));
            }
        }
        let d = signals.len();
        let baseline_decay = 0.5f64.powf(cfg.sample_interval.as_secs_f64() / cfg.baseline_halflife.as_secs_f64());
        Ok(HostDetector {
            ewma: Ewma::new(cfg.halflife.as_secs_f64() * 1000.0),
            spec: Spec { fit: cfg.fit_params(), cfg, signals, baseline_decay },
            moments: Moments::new(d),
            last_ts: None,
            state: State::Learning(Learning::default()),
            relearns: 0,
            residuals: vec![0.0; d],
        })
    }

    /// The signals, in sample order.
    pub fn signals(&self) -> &[Arc<str>] {
        &self.spec.signals
    }

    pub fn config(&self) -> &AnomalyConfig {
        &self.spec.cfg
    }

    pub fn phase(&self) -> Phase {
        match &self.state {
            State::Learning(l) => Phase::Learning {
                samples: l.ts.len(),
                span_ms: l.ts.last().zip(l.ts.first()).map_or(0, |(b, a)| b - a),
            },
            State::Scoring(s) => Phase::Scoring { fitted_at_ms: s.fitted_at_ms, refits: s.refits },
        }
    }

    /// The model in force (`None` while learning).
    pub fn model(&self) -> Option<&ResidualModel> {
        match &self.state {
            State::Scoring(s) => Some(&s.model),
            State::Learning(_) => None,
        }
    }

    /// τ in force (`None` while learning).
    pub fn threshold(&self) -> Option<f64> {
        match &self.state {
            State::Scoring(s) => Some(s.threshold),
            State::Learning(_) => None,
        }
    }

    /// How τ was calibrated: at the end of the learning phase, or after the first day of
    /// scores (`None` while learning).
    pub fn calibration(&self) -> Option<Calibration> {
        match &self.state {
            State::Scoring(s) => Some(s.calibration),
            State::Learning(_) => None,
        }
    }

    /// The moments the model is (re)fitted from.
    pub fn baseline(&self) -> &Moments {
        &self.moments
    }

    /// Since when nothing has been learned because samples kept scoring above the learning
    /// gate (`None` while learning or when the last sample that could be learned was).
    pub fn blocked_since(&self) -> Option<i64> {
        match &self.state {
            State::Scoring(s) => s.blocked_since_ms,
            State::Learning(_) => None,
        }
    }

    /// The learning gate in force (`None` while learning).
    pub fn learn_gate(&self) -> Option<f64> {
        match &self.state {
            State::Scoring(s) => Some(s.learn_gate),
            State::Learning(_) => None,
        }
    }

    /// How many times learning restarted (automatically or by [`HostDetector::relearn`]).
    pub fn relearns(&self) -> u64 {
        self.relearns
    }

    /// Drops the model and the baseline and starts a new learning phase (e.g. after a planned
    /// change of the host's workload).
    pub fn relearn(&mut self) {
        self.moments = Moments::new(self.spec.signals.len());
        self.ewma.reset();
        self.state = State::Learning(Learning::default());
        self.relearns += 1;
    }

    /// Takes the sample `x` (one value per signal, NaN where missing) at `ts_ms`, which must
    /// be after the previous sample's. `None` while learning and for a sample without any
    /// finite value (which changes nothing).
    pub fn observe(&mut self, ts_ms: i64, x: &[f64]) -> Result<Option<AnomalyScore>, AnomalyError> {
        if x.len() != self.spec.signals.len() {
            return Err(AnomalyError::WrongLength { expected: self.spec.signals.len(), got: x.len() });
        }
        if !x.iter().any(|v| v.is_finite()) {
            return Ok(None);
        }
        if let Some(previous_ms) = self.last_ts
            && ts_ms <= previous_ms
        {
            return Err(AnomalyError::TimeNotIncreasing { previous_ms, ts_ms });
        }
        self.last_ts = Some(ts_ms);
        match &mut self.state {
            State::Learning(learning) => {
                self.moments.update(x, 1.0);
                learning.ts.push(ts_ms);
                learning.rows.extend(x.iter().map(|&v| v as f32));
                let n = learning.ts.len();
                let span = ts_ms - learning.ts[0];
                let cfg = &self.spec.cfg;
                if n >= cfg.max_warmup_samples || (n >= cfg.min_warmup_samples && span >= ms(cfg.warmup)) {
                    self.finish_learning(ts_ms);
                }
                Ok(None)
            }
            State::Scoring(s) => {
                let (score, relearn) =
                    s.observe(&self.spec, &mut self.moments, &mut self.ewma, &mut self.residuals, ts_ms, x);
                if relearn {
                    debug!(signals = x.len(), "suspicious for too long to learn anything; learning a new normal");
                    self.relearn();
                }
                Ok(Some(score))
            }
        }
    }

    /// Fits the model on the learning moments, scores the learning samples and calibrates τ.
    fn finish_learning(&mut self, now_ms: i64) {
        let State::Learning(learning) = std::mem::replace(&mut self.state, State::Learning(Learning::default())) else {
            return;
        };
        let model = match ResidualModel::fit(&self.moments, &self.spec.fit) {
            Ok(m) => m,
            Err(e) => {
                debug!(error = %e, samples = learning.ts.len(), "anomaly model not fitted; learning again");
                self.relearn();
                return;
            }
        };
        let d = self.spec.signals.len();
        self.ewma.reset();
        let mut row = vec![0.0; d];
        let scores: Vec<f64> = learning
            .ts
            .iter()
            .zip(learning.rows.chunks_exact(d))
            .map(|(&ts, values)| {
                for (r, &v) in row.iter_mut().zip(values) {
                    *r = f64::from(v);
                }
                let (e, _) = model.residuals(&row, &mut self.residuals);
                self.ewma.update(ts, e)
            })
            .collect();
        let cfg = &self.spec.cfg;
        let calibration = threshold::calibrate(
            &learning.ts,
            &scores,
            cfg.alarms_per_day,
            ms(cfg.debounce),
            ms(cfg.full_rule_span) as f64 / threshold::DAY_MS,
            cfg.tail_quantile,
        );
        let expected = model.expected_error();
        let learn_gate = match cfg.learn_gate_quantile {
            Some(q) => {
                let mut sorted = scores.clone();
                sorted.sort_by(f64::total_cmp);
                threshold::quantile_lower(&sorted, q).min(calibration.threshold)
            }
            None => calibration.threshold,
        };
        debug!(
            signals = d,
            modelled = model.active().len(),
            components = model.components(),
            expected_error = expected,
            threshold = calibration.threshold,
            method = ?calibration.method,
            samples = learning.ts.len(),
            "anomaly model fitted"
        );
        self.state = State::Scoring(Box::new(Scoring {
            threshold: calibration.threshold,
            threshold_per_expected_error: if expected > 0.0 { calibration.threshold / expected } else { f64::NAN },
            learn_gate,
            gate_per_expected_error: if expected > 0.0 { learn_gate / expected } else { f64::NAN },
            calibration,
            model,
            fitted_at_ms: now_ms,
            refits: 0,
            learned_since_fit: 0,
            pending_ts: VecDeque::new(),
            pending: VecDeque::new(),
            first_day: (cfg.recalibrate_after_first_day
                && calibration.method == threshold::ThresholdMethod::TailExtrapolation
                && expected > 0.0)
                .then(|| MinuteMaxima::new(now_ms)),
            last_alarm_ms: None,
            suspicion: Ewma::new(ms(cfg.quarantine) as f64),
            last_blocked_ms: None,
            blocked_since_ms: None,
        }));
    }
}

/// What a detector's parts need to know of it: fixed at construction.
#[derive(Debug, Clone)]
struct Spec {
    cfg: AnomalyConfig,
    fit: FitParams,
    signals: Vec<Arc<str>>,
    /// Per-sample decay of the baseline moments after the learning phase.
    baseline_decay: f64,
}

impl Scoring {
    /// Scores one sample, learns what leaves the quarantine clean and refits when due.
    /// Returns the score and whether the detector must start learning afresh.
    fn observe(
        &mut self,
        spec: &Spec,
        moments: &mut Moments,
        ewma: &mut Ewma,
        residuals: &mut [f64],
        ts_ms: i64,
        x: &[f64],
    ) -> (AnomalyScore, bool) {
        let cfg = &spec.cfg;
        let d = spec.signals.len();
        let quarantine = ms(cfg.quarantine);
        let (raw, imputed) = self.model.residuals(x, residuals);
        let smoothed = ewma.update(ts_ms, raw);
        let threshold = self.threshold;
        let is_anomalous = smoothed > threshold;
        let alarm_start = is_anomalous && self.last_alarm_ms.is_none_or(|l| ts_ms - l >= ms(cfg.debounce));
        let top_signals = top_contributions(residuals, raw, &spec.signals, cfg.top_signals);

        if is_anomalous {
            self.last_alarm_ms = Some(ts_ms);
        }
        self.recalibrate_after_first_day(cfg, ts_ms, smoothed);
        // Quarantine. A sample above the learning gate is suspicious and not learned. A
        // *suspicious period* is an alarm, or a time when the share of suspicious samples
        // (EWMA with the quarantine as half-life) exceeds one half: it discards everything
        // waiting (the onset it took to recognise it), and a waiting sample is learned only
        // once it is older than the quarantine and more than a quarantine after the last
        // suspicious period.
        let suspicious = smoothed > self.learn_gate;
        let share = self.suspicion.update(ts_ms, if suspicious { 1.0 } else { 0.0 });
        if is_anomalous || share > 0.5 {
            self.last_blocked_ms = Some(ts_ms);
            self.pending_ts.clear();
            self.pending.clear();
        }
        if suspicious {
            self.blocked_since_ms.get_or_insert(ts_ms);
        } else {
            self.pending_ts.push_back(ts_ms);
            self.pending.extend(x.iter().map(|&v| v as f32));
        }
        let mut row = vec![0.0; d];
        while let Some(&t) = self.pending_ts.front()
            && t <= ts_ms - quarantine
        {
            self.pending_ts.pop_front();
            for r in row.iter_mut() {
                *r = self.pending.pop_front().map_or(f64::NAN, f64::from);
            }
            if self.last_blocked_ms.is_none_or(|l| t - l > quarantine) {
                moments.update(&row, spec.baseline_decay);
                self.learned_since_fit += 1;
                self.blocked_since_ms = None;
            }
        }

        let relearn =
            cfg.relearn_after.zip(self.blocked_since_ms).is_some_and(|(after, since)| ts_ms - since >= ms(after));
        if let Some(every) = cfg.refit_every
            && !relearn
            && self.learned_since_fit > 0
            && ts_ms - self.fitted_at_ms >= ms(every)
        {
            self.refit(spec, moments, ts_ms);
        }
        (AnomalyScore { ts_ms, raw, smoothed, threshold, is_anomalous, alarm_start, top_signals, imputed }, relearn)
    }

    /// Records the first day's scores (over the expected error, so refits do not matter) and,
    /// once a full day is there, recalibrates τ with the harness rule on their per-minute maxima.
    fn recalibrate_after_first_day(&mut self, cfg: &AnomalyConfig, ts_ms: i64, smoothed: f64) {
        let Some(day) = &mut self.first_day else { return };
        let expected = self.model.expected_error();
        if expected > 0.0 {
            day.add(ts_ms, smoothed / expected);
        }
        let span_ms = ms(cfg.full_rule_span);
        if ts_ms - day.start_ms < span_ms {
            return;
        }
        let relative =
            threshold::budget_rule_threshold(&day.minute_ts, &day.maxima, cfg.alarms_per_day, ms(cfg.debounce));
        if relative.is_finite() && expected > 0.0 {
            self.threshold_per_expected_error = relative;
            self.threshold = relative * expected;
            self.learn_gate = self.learn_gate.min(self.threshold);
            self.calibration = Calibration {
                threshold: self.threshold,
                method: threshold::ThresholdMethod::FirstDayRule,
                span_days: threshold::span_days(&day.minute_ts),
            };
            debug!(threshold = self.threshold, "anomaly threshold recalibrated on the first day of scores");
        }
        self.first_day = None;
    }

    /// Refits from the baseline moments; τ and the learning gate keep their ratios to the
    /// expected error.
    fn refit(&mut self, spec: &Spec, moments: &Moments, ts_ms: i64) {
        match ResidualModel::fit(moments, &spec.fit) {
            Ok(model) => {
                let expected = model.expected_error();
                if self.threshold_per_expected_error.is_finite() && expected > 0.0 {
                    self.threshold = self.threshold_per_expected_error * expected;
                    self.learn_gate = (self.gate_per_expected_error * expected).min(self.threshold);
                }
                self.model = model;
                self.refits += 1;
            }
            Err(e) => debug!(error = %e, "anomaly model refit failed; keeping the previous model"),
        }
        self.fitted_at_ms = ts_ms;
        self.learned_since_fit = 0;
    }
}

/// The `n` signals with the largest squared residuals, as shares of `e`.
fn top_contributions(residuals: &[f64], e: f64, signals: &[Arc<str>], n: usize) -> Vec<Contribution> {
    if e.is_nan() || e <= 0.0 || n == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..residuals.len()).filter(|&j| residuals[j] != 0.0).collect();
    let by_size = |a: &usize, b: &usize| (residuals[*b] * residuals[*b]).total_cmp(&(residuals[*a] * residuals[*a]));
    if order.len() > n {
        order.select_nth_unstable_by(n - 1, by_size);
        order.truncate(n);
    }
    order.sort_by(by_size);
    order
        .into_iter()
        .map(|j| Contribution { signal: signals[j].clone(), share: residuals[j] * residuals[j] / e })
        .collect()
}
