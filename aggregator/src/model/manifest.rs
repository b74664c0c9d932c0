//! The model manifest: which ONNX files the aggregator serves and what each one is.
//!
//! A TOML file (format documented in `models/README.md`, section "Manifest"), parsed with
//! `deny_unknown_fields` and then validated. Model files are named relative to the
//! manifest's directory and may not leave it.
//!
//! ```toml
//! format = 1
//!
//! [[model]]
//! name = "memory-exhaustion-30s"
//! version = "2026.11.1"
//! kind = "failure_probability"
//! file = "memory-exhaustion-30s.onnx"
//! sha256 = "…64 lowercase hex digits…"
//! resource_kind = "container"
//! failure_type = "memory_exhaustion"
//! horizon_s = 30
//!
//! [model.schema]
//! version = 1
//! features = ["mem_headroom_ratio", "mem_slope_5m"]
//! windows = { short = "30s", long = "30m" }
//!
//! [model.schema.output]
//! tensor = "probabilities"
//! columns = ["p_normal", "p_failure"]
//! ```

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use super::ModelError;
use super::schema::FeatureSchema;

/// The manifest format this aggregator reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// A parsed and validated manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must be [`MANIFEST_FORMAT`].
    pub format: u32,
    #[serde(default, rename = "model")]
    pub models: Vec<ModelEntry>,
}

/// One model of the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Unique within the manifest; what callers ask [`super::ModelRegistry::predict`] for.
    pub name: String,
    /// Recorded with every prediction (and so in the audit trail).
    pub version: String,
    pub kind: ModelKind,
    /// The `.onnx` file, relative to the manifest's directory.
    pub file: PathBuf,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    pub schema: FeatureSchema,
    /// What the model scores: `container`, `host` or `filesystem` (the feature schema
    /// expected depends on it). Required for failure-probability models.
    #[serde(default)]
    pub resource_kind: String,
    /// For failure-probability models: the failure predicted, e.g. `memory_exhaustion`.
    #[serde(default)]
    pub failure_type: String,
    /// For failure-probability models: P(failure within this many seconds).
    #[serde(default)]
    pub horizon_s: u64,
    /// For failure-probability models: marks the model whose probability raises events
    /// for its failure type, at this threshold (chosen on validation data by the training
    /// pipeline; see the model card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_threshold: Option<f64>,
    /// Evaluation figures (e.g. from the model card); informational.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// What a model predicts; the aggregator expects one [`FeatureSchema`] per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Probability that a resource fails within a horizon.
    FailureProbability,
    /// Quantiles of a metric at a horizon.
    Forecast,
    /// Anomaly score of a resource's current behaviour.
    Anomaly,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::FailureProbability => "failure_probability",
            ModelKind::Forecast => "forecast",
            ModelKind::Anomaly => "anomaly",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Manifest {
    /// Reads, parses and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, ModelError> {
        let err = |reason: String| ModelError::Manifest { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Manifest::parse(&text).map_err(err)
    }

    /// Parses and validates manifest text.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        m.validate()?;
        Ok(m)
    }

    /// Checks what parsing cannot: format, unique names, file paths, hashes, schemas.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != MANIFEST_FORMAT {
            return Err(format!(
                "format {} is not supported (this aggregator reads format {MANIFEST_FORMAT})",
                self.format
            ));
        }
        let mut names = HashSet::new();
        for m in &self.models {
            m.validate()?;
            if !names.insert(m.name.as_str()) {
                return Err(format!("model `{}` appears twice", m.name));
            }
        }
        Ok(())
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.name == name)
    }
}

impl ModelEntry {
    /// Where the model file is, given the manifest's directory.
    pub fn path_in(&self, manifest_dir: &Path) -> PathBuf {
        manifest_dir.join(&self.file)
    }

    fn validate(&self) -> Result<(), String> {
        if self.kind == ModelKind::FailureProbability
            && (self.resource_kind.is_empty() || self.failure_type.is_empty() || self.horizon_s == 0)
        {
            return Err(format!(
                "model `{}`: failure_probability models need resource_kind, failure_type and horizon_s",
                self.name
            ));
        }
        if let Some(t) = self.operating_threshold
            && !(t > 0.0 && t < 1.0)
        {
            return Err(format!("model `{}`: operating_threshold {t} is not in (0, 1)", self.name));
        }
        let valid_name =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name(&self.name) {
            return Err(format!("model name `{}` must be non-empty ASCII letters, digits, `-`, `_` or `.`", self.name));
        }
        let ctx = |reason: String| format!("model `{}`: {reason}", self.name);
        if self.version.trim().is_empty() {
            return Err(ctx("version is empty".into()));
        }
        let inside = !self.file.as_os_str().is_empty()
            && self.file.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(ctx(format!(
                "file `{}` must be a relative path inside the manifest's directory",
                self.file.display()
            )));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(ctx(format!("sha256 `{}` is not 64 lowercase hex digits", self.sha256)));
        }
        self.schema.validate().map_err(|e| ctx(format!("schema: {e}")))
    }
}
