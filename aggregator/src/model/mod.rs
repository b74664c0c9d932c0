//! Models: the ONNX Runtime seam. No `ort::` type appears outside this folder.
//!
//! - [`runtime`]: finds `libonnxruntime.so` (config path, `ORT_DYLIB_PATH`, documented
//!   defaults), checks it before handing it to `ort`, and holds the one process-wide
//!   ONNX Runtime environment ([`OnnxRuntime`]).
//! - [`schema`]: the feature schema a model was trained on ([`FeatureSchema`]) and how two
//!   schemas are compared.
//! - [`manifest`]: `models/manifest.toml` (format in `models/README.md`, "Manifest"):
//!   per model its name, version, kind, file, sha256 and feature schema.
//! - [`registry`]: loads and validates every model of a manifest, serves batched
//!   predictions ([`ModelRegistry::predict`]) and hot-reloads changed files, keeping the
//!   models it has when a replacement is refused.
//! - `session` (private): one ONNX Runtime session and its input/output binding.
//!
//! A model is refused, with a [`ModelError`] naming it and the difference, when its file
//! does not hash to the manifest's sha256, when ONNX Runtime cannot load it, or when the
//! feature schema in its ONNX metadata (`augur.feature_schema`), the manifest's and the
//! one the aggregator expects for its kind are not all equal.
//!
//! Everything here is synchronous and CPU-bound: callers run it on a dedicated thread or
//! with `spawn_blocking`, never on an async worker.

pub mod manifest;
pub mod registry;
pub mod runtime;
pub mod schema;
mod session;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use manifest::{Manifest, ModelEntry, ModelKind};
pub use registry::{
    ExpectedSchemas, ModelInfo, ModelRegistry, ModelStatus, Predictions, RegistryStats, ReloadSummary, ReloadWatcher,
    check,
};
pub use runtime::OnnxRuntime;
pub use schema::{FeatureSchema, OutputSpec};

/// Errors at the model boundary. Every variant names what it is about (model, file or
/// library) so the message alone tells an operator what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "no ONNX Runtime library found (tried: {tried}); run scripts/install-python-deps.sh, or set the library path \
         in the config or in ORT_DYLIB_PATH"
    )]
    RuntimeNotFound { tried: String },
    #[error("cannot load the ONNX Runtime library {path}: {reason}")]
    RuntimeLoad { path: PathBuf, reason: String },
    #[error("ONNX Runtime is already loaded from {loaded} in this process; cannot switch to {requested}")]
    RuntimeConflict { loaded: PathBuf, requested: PathBuf },
    #[error("model manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("model `{model}`: cannot read {path}: {source}")]
    ModelFile {
        model: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model `{model}`: {path} has sha256 {found}, the manifest says {expected}")]
    Checksum { model: String, path: PathBuf, expected: String, found: String },
    #[error("model `{model}`: ONNX Runtime refused {path}: {reason}")]
    InvalidModel { model: String, path: PathBuf, reason: String },
    #[error("model `{model}`: feature schema mismatch: {what}: {difference}")]
    SchemaMismatch { model: String, what: String, difference: String },
    #[error("model `{model}`: the aggregator has no use for `{kind}` models (it expects: {expected})")]
    UnexpectedKind { model: String, kind: ModelKind, expected: String },
    #[error("no model named `{name}` in the manifest")]
    UnknownModel { name: String },
    #[error("model `{name}` is not loaded: {reason}")]
    Unavailable { name: String, reason: String },
    #[error("model `{model}`: bad input: {reason}")]
    BadInput { model: String, reason: String },
    #[error("model `{model}`: inference failed: {reason}")]
    Inference { model: String, reason: String },
}
