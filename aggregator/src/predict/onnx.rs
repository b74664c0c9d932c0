//! The [`Scorer`] over the ONNX model registry: failure-probability models of the
//! manifest, each checked against the feature schema the engine produces for its
//! resource kind, hot-reloaded while the aggregator runs.

use std::sync::Arc;

use crate::config::PredictSection;
use crate::features::{self, FeatureConfig, ResourceKind};
use crate::model::{
    ExpectedSchemas, FeatureSchema, ModelError, ModelKind, ModelRegistry, OnnxRuntime, OutputSpec, ReloadWatcher,
};
use crate::predict::{ModelSpec, NoModels, Scorer};

/// The output every failure-probability model gives.
pub const PROBABILITIES_TENSOR: &str = "probabilities";
const FAILURE_COLUMN: &str = "p_failure";

/// The schema a failure-probability model for `kind` must carry.
pub fn failure_schema(kind: ResourceKind, cfg: &FeatureConfig) -> FeatureSchema {
    FeatureSchema {
        version: features::SCHEMA_VERSION,
        features: features::feature_names(kind, cfg),
        windows: features::window_description(cfg),
        output: OutputSpec {
            tensor: PROBABILITIES_TENSOR.into(),
            columns: vec!["p_normal".into(), FAILURE_COLUMN.into()],
            description: String::new(),
        },
    }
}

/// What the aggregator accepts: failure-probability models for every resource kind, and
/// the forecast candidate's quantile model ([`crate::forecast::onnx_quantile`]).
pub fn expected_schemas(cfg: &FeatureConfig) -> ExpectedSchemas {
    let mut out: ExpectedSchemas = ResourceKind::ALL
        .into_iter()
        .map(|k| ((ModelKind::FailureProbability, k.as_str().to_owned()), failure_schema(k, cfg)))
        .collect();
    out.insert(
        (ModelKind::Forecast, crate::forecast::onnx_quantile::RESOURCE_KIND.to_owned()),
        crate::forecast::onnx_quantile::schema(),
    );
    out
}

/// Failure-probability models served from a [`ModelRegistry`].
pub struct OnnxScorer {
    registry: Arc<ModelRegistry>,
}

impl OnnxScorer {
    pub fn new(registry: Arc<ModelRegistry>) -> Self {
        OnnxScorer { registry }
    }
}

impl Scorer for OnnxScorer {
    fn models(&self) -> Vec<ModelSpec> {
        self.registry
            .models_of_kind(ModelKind::FailureProbability)
            .iter()
            .filter_map(|info| {
                Some(ModelSpec {
                    name: info.name.clone(),
                    version: info.version.clone(),
                    resource_kind: ResourceKind::parse(&info.resource_kind)?,
                    failure_type: info.failure_type.clone(),
                    horizon_s: info.horizon_s as i64,
                    operating_threshold: info.operating_threshold,
                    features: info.schema.features.clone(),
                })
            })
            .collect()
    }

    fn score(&self, model: &ModelSpec, rows: &[f32]) -> Result<Vec<f32>, String> {
        let p = self.registry.predict(&model.name, rows).map_err(|e| e.to_string())?;
        let col =
            p.column(FAILURE_COLUMN).ok_or_else(|| format!("model {} has no {FAILURE_COLUMN} output", model.name))?;
        Ok(col.collect())
    }
}

/// The scorer the aggregator runs with, and the watcher that hot-reloads its models.
pub struct ScorerHandle {
    pub scorer: Arc<dyn Scorer>,
    pub registry: Option<Arc<ModelRegistry>>,
    _watcher: Option<ReloadWatcher>,
}

/// Builds the scorer for the `[predict]` config: no models when no manifest is
/// configured; otherwise the ONNX Runtime library must load and the manifest must parse
/// (models it refuses are logged and not served, the rest are).
pub fn scorer_for(cfg: &PredictSection, features: &FeatureConfig) -> Result<ScorerHandle, ModelError> {
    if cfg.models.as_os_str().is_empty() {
        tracing::info!("no model manifest configured (predict.models): features are computed, nothing is predicted");
        return Ok(ScorerHandle { scorer: Arc::new(NoModels), registry: None, _watcher: None });
    }
    let lib = (!cfg.onnxruntime_library.as_os_str().is_empty()).then_some(cfg.onnxruntime_library.as_path());
    let runtime = OnnxRuntime::load(lib)?;
    let registry = Arc::new(ModelRegistry::open(runtime, &cfg.models, expected_schemas(features))?);
    let watcher = registry.watch(cfg.reload_interval).map_err(|e| ModelError::Manifest {
        path: cfg.models.clone(),
        reason: format!("cannot start the reload watcher: {e}"),
    })?;
    Ok(ScorerHandle {
        scorer: Arc::new(OnnxScorer::new(registry.clone())),
        registry: Some(registry),
        _watcher: Some(watcher),
    })
}
