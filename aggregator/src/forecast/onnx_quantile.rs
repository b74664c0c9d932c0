//! A candidate served by ONNX Runtime: a quantile model trained in `models/forecast`
//! (`make models`) on real recorded series, loaded through the model registry
//! ([`crate::model`]) like every model, competing in the rolling-origin selection like
//! the built-in candidates.
//!
//! Inputs (mirroring `models/forecast/quantile.py`; a shared fixture checks both): for an
//! origin `o` and a lead `h`, `level = y[o − 1]`, `scale` = mean absolute step of the last
//! [`LAGS`] points plus `1e-6 (|level| + 1)`, features `lag_k = (y[o − k] − level) / scale`
//! for k = 2..=[`LAGS`] and `log_lead = ln h`. The model outputs quantiles of the scaled
//! change; its median `q0.5` makes the point forecast `level + scale · q0.5`, and, like
//! every candidate's, the served quantiles come from its own cross-validation residuals.
//! All origins of a selection go to the model as one batch.
//!
//! Nothing is fitted per series ([`Forecaster::fit`] returns empty parameters). The model
//! is looked up in the registry at every call, so a hot-reloaded model is used at once; a
//! registry without a forecast model, or one that refused it, makes this candidate fail
//! with a note, and the selection goes on without it.

use std::sync::Arc;

use super::{ForecastError, Forecaster, Params, Shape};
use crate::model::{FeatureSchema, ModelKind, ModelRegistry, OutputSpec};

/// Points of history the model reads before an origin.
pub const LAGS: usize = 24;
/// The manifest's `resource_kind` of a series forecaster.
pub const RESOURCE_KIND: &str = "series";
/// Version of the input definition above.
pub const SCHEMA_VERSION: u32 = 1;
const OUTPUT_TENSOR: &str = "quantiles";
const MEDIAN_COLUMN: &str = "q0.5";
/// The name reported with forecasts.
pub const NAME: &str = "onnx_quantile";

/// The schema a forecast model must carry.
pub fn schema() -> FeatureSchema {
    let mut features: Vec<String> = (2..=LAGS).map(|k| format!("lag_{k}")).collect();
    features.push("log_lead".into());
    FeatureSchema {
        version: SCHEMA_VERSION,
        features,
        windows: [("lags".to_string(), LAGS.to_string())].into_iter().collect(),
        output: OutputSpec {
            tensor: OUTPUT_TENSOR.into(),
            columns: vec!["q0.1".into(), MEDIAN_COLUMN.into(), "q0.9".into()],
            description: String::new(),
        },
    }
}

/// Appends the model's input row for origin `o` (at least [`LAGS`]) and `lead` to `row`;
/// returns `(level, scale)` to turn the model's output back into the series' units.
pub fn input_row(y: &[f64], o: usize, lead: usize, row: &mut Vec<f32>) -> (f64, f64) {
    let w = &y[o - LAGS..o];
    let level = w[LAGS - 1];
    let steps: f64 = w.windows(2).map(|p| (p[1] - p[0]).abs()).sum();
    let scale = steps / (LAGS - 1) as f64 + 1e-6 * (level.abs() + 1.0);
    for k in 2..=LAGS {
        row.push(((y[o - k] - level) / scale) as f32);
    }
    row.push((lead.max(1) as f64).ln() as f32);
    (level, scale)
}

/// Where the model's medians come from: the registry in the aggregator, anything in tests.
pub trait QuantileSource: Send + Sync {
    /// The median column for `rows` (row-major, [`schema`]'s width).
    fn medians(&self, rows: &[f32]) -> Result<Vec<f32>, String>;
}

/// The first `forecast` model of resource kind [`RESOURCE_KIND`] the registry serves.
pub struct RegistrySource(pub Arc<ModelRegistry>);

impl QuantileSource for RegistrySource {
    fn medians(&self, rows: &[f32]) -> Result<Vec<f32>, String> {
        let models = self.0.models_of_kind(ModelKind::Forecast);
        let info = models
            .iter()
            .find(|m| m.resource_kind == RESOURCE_KIND)
            .ok_or_else(|| "no forecast model is loaded".to_string())?;
        let p = self.0.predict(&info.name, rows).map_err(|e| e.to_string())?;
        let col =
            p.column(MEDIAN_COLUMN).ok_or_else(|| format!("model {} has no {MEDIAN_COLUMN} output", info.name))?;
        Ok(col.collect())
    }
}

/// The ONNX quantile forecaster (see the module docs).
pub struct OnnxQuantile {
    source: Arc<dyn QuantileSource>,
}

impl OnnxQuantile {
    pub fn new(source: Arc<dyn QuantileSource>) -> Self {
        OnnxQuantile { source }
    }

    /// Served from `registry`'s forecast model.
    pub fn from_registry(registry: Arc<ModelRegistry>) -> Self {
        Self::new(Arc::new(RegistrySource(registry)))
    }
}

impl Forecaster for OnnxQuantile {
    fn name(&self) -> &'static str {
        NAME
    }

    fn fit(&self, _y: &[f64], _shape: Shape) -> Result<Params, ForecastError> {
        Ok(Params::default())
    }

    fn min_history(&self, _params: &Params, _shape: Shape) -> usize {
        LAGS
    }

    fn forecast(
        &self,
        y: &[f64],
        shape: Shape,
        _params: &Params,
        origins: &[usize],
        out: &mut [f64],
    ) -> Result<(), ForecastError> {
        let err = |reason: String| ForecastError::Model { model: NAME, reason };
        if out.len() != origins.len() {
            return Err(err(format!("{} outputs for {} origins", out.len(), origins.len())));
        }
        if let Some(&o) = origins.iter().find(|&&o| o < LAGS || o > y.len()) {
            return Err(err(format!("origin {o} is outside {LAGS}..={}", y.len())));
        }
        let width = schema().features.len();
        let mut rows = Vec::with_capacity(origins.len() * width);
        let mut back = Vec::with_capacity(origins.len());
        for &o in origins {
            back.push(input_row(y, o, shape.lead, &mut rows));
        }
        let medians = self.source.medians(&rows).map_err(err)?;
        if medians.len() != origins.len() {
            return Err(err(format!("{} medians for {} rows", medians.len(), origins.len())));
        }
        for ((f, (level, scale)), z) in out.iter_mut().zip(back).zip(medians) {
            *f = level + scale * f64::from(z);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::{default_candidates, select};
    use crate::model::{ExpectedSchemas, OnnxRuntime};

    fn fixtures() -> std::path::PathBuf {
        augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/forecast")
    }

    /// The Python definition (`models/forecast/quantile.py`) wrote these rows.
    #[test]
    fn inputs_match_the_training_code() {
        let text = std::fs::read_to_string(fixtures().join("inputs.json")).expect("fixture inputs.json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
        let y: Vec<f64> = v["y"].as_array().expect("y").iter().map(|x| x.as_f64().expect("number")).collect();
        let cases = v["cases"].as_array().expect("cases");
        assert!(!cases.is_empty());
        for c in cases {
            let (o, lead) =
                (c["origin"].as_u64().expect("origin") as usize, c["lead"].as_u64().expect("lead") as usize);
            let mut row = Vec::new();
            let (level, scale) = input_row(&y, o, lead, &mut row);
            assert!((level - c["level"].as_f64().expect("level")).abs() < 1e-9);
            assert!((scale / c["scale"].as_f64().expect("scale") - 1.0).abs() < 1e-9);
            let want: Vec<f64> =
                c["features"].as_array().expect("features").iter().map(|x| x.as_f64().expect("f")).collect();
            assert_eq!(row.len(), want.len());
            for (i, (a, b)) in row.iter().zip(&want).enumerate() {
                assert!((f64::from(*a) - b).abs() <= 1e-5 * (1.0 + b.abs()), "origin {o} feature {i}: {a} vs {b}");
            }
        }
        assert_eq!(schema().features.len(), v["cases"][0]["features"].as_array().expect("f").len());
    }

    /// A source that fails: the selection goes on without this candidate.
    struct Broken;
    impl QuantileSource for Broken {
        fn medians(&self, _rows: &[f32]) -> Result<Vec<f32>, String> {
            Err("no forecast model is loaded".into())
        }
    }

    #[test]
    fn a_missing_model_leaves_the_candidate_out() {
        let mut c = default_candidates();
        c.push(Box::new(OnnxQuantile::new(Arc::new(Broken))));
        let y: Vec<f64> = (0..200).map(|i| i as f64).collect();
        let s = select(&c, &y, Shape { step_ms: 10_000, lead: 1 }, &[0.1, 0.5, 0.9]).expect("others still select");
        assert_ne!(s.model, NAME);
        let note = s.scores.iter().find(|x| x.model == NAME).and_then(|x| x.note.clone()).expect("a note");
        assert!(note.contains("no forecast model"), "{note}");
    }

    /// The real registry with the fixture model (trained by models/tools/make_forecast_test_model.py
    /// on alternating series: it continues an alternation, which no built-in candidate can).
    fn registry(test: &str) -> Option<Arc<ModelRegistry>> {
        let rt = match OnnxRuntime::load(None) {
            Ok(rt) => rt,
            Err(e @ crate::model::ModelError::RuntimeNotFound { .. }) => {
                eprintln!("SKIP {test}: {e}");
                return None;
            }
            Err(e) => panic!("ONNX Runtime found but not loadable: {e}"),
        };
        let mut expected = ExpectedSchemas::new();
        expected.insert((ModelKind::Forecast, RESOURCE_KIND.to_string()), schema());
        let reg = ModelRegistry::open(rt, &fixtures().join("manifest.toml"), expected).expect("fixture manifest");
        assert_eq!(reg.models_of_kind(ModelKind::Forecast).len(), 1, "fixture model loads: {:?}", reg.status());
        Some(Arc::new(reg))
    }

    fn candidates(reg: &Arc<ModelRegistry>) -> Vec<Box<dyn Forecaster>> {
        let mut c = default_candidates();
        c.push(Box::new(OnnxQuantile::from_registry(reg.clone())));
        c
    }

    #[test]
    fn selected_where_it_wins_and_not_where_it_loses() {
        let Some(reg) = registry("selected_where_it_wins_and_not_where_it_loses") else { return };
        let shape = Shape { step_ms: 10_000, lead: 1 };
        let qs = [0.1, 0.5, 0.9];
        // Alternating around a level with a little noise: the last value is as wrong as can
        // be, smoothing and trends forecast the middle; the model continues the alternation.
        let mut state = 7u64;
        let mut noise = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.2
        };
        let alt: Vec<f64> = (0..300).map(|i| 50.0 + if i % 2 == 0 { 5.0 } else { -5.0 } + noise()).collect();
        let s = select(&candidates(&reg), &alt, shape, &qs).expect("select");
        assert_eq!(s.model, NAME, "scores {:?}", s.scores);
        let others =
            s.scores.iter().filter(|x| x.model != NAME).filter_map(|x| x.cv_pinball).fold(f64::INFINITY, f64::min);
        assert!(s.cv_pinball < 0.5 * others, "model {} vs best other {others}", s.cv_pinball);
        // A clean linear trend: the line is exact, the model (never trained on one) is not.
        let line: Vec<f64> = (0..300).map(|i| 10.0 + 0.5 * i as f64).collect();
        let s = select(&candidates(&reg), &line, shape, &qs).expect("select");
        assert_ne!(s.model, NAME, "scores {:?}", s.scores);
        assert!(s.score_of(NAME).is_some(), "it competed: {:?}", s.scores);
    }
}
