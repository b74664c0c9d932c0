//! One ONNX Runtime session: created from a model's bytes, bound to its feature schema
//! (one `f32` input `[n, n_features]`, the named `f32` output `[n, n_columns]`), run in
//! batches.
//!
//! Sessions use one intra-op and one inter-op thread with spinning disabled: inference
//! runs on the caller's thread and an idle runtime costs no CPU. Errors are plain strings
//! here; [`super::registry`] wraps them with the model's name and file.

use std::sync::{Mutex, PoisonError};

use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::OnnxRuntime;
use super::schema::{FeatureSchema, SCHEMA_METADATA_KEY};

/// A session bound to a schema.
pub(super) struct OnnxSession {
    /// `Session::run` needs `&mut`; callers use one inference thread, so this is uncontended.
    session: Mutex<Session>,
    output: String,
    n_features: usize,
    n_columns: usize,
}

impl std::fmt::Debug for OnnxSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxSession")
            .field("output", &self.output)
            .field("n_features", &self.n_features)
            .field("n_columns", &self.n_columns)
            .finish_non_exhaustive()
    }
}

/// Creates a session from the model's bytes. Returns it with the schema JSON found in the
/// model's metadata (`None` when the key is absent); the caller compares schemas before
/// calling [`OnnxSession::bind`].
pub(super) fn open_session(runtime: &OnnxRuntime, bytes: &[u8]) -> Result<(Session, Option<String>), String> {
    let session = Session::builder(runtime.environment())
        .and_then(|b| {
            b.with_intra_threads(1)?
                .with_inter_threads(1)?
                .with_intra_op_spinning(false)?
                .with_inter_op_spinning(false)?
                .commit_from_memory(bytes)
        })
        .map_err(|e| e.to_string())?;
    let schema_json = session.metadata().map_err(|e| format!("reading metadata: {e}"))?.custom(SCHEMA_METADATA_KEY);
    Ok((session, schema_json))
}

impl OnnxSession {
    /// Checks the session's input and output against `schema`, then runs one all-zero row
    /// through it so a model that loads but cannot run is refused now, not at the next tick.
    pub(super) fn bind(session: Session, schema: &FeatureSchema) -> Result<OnnxSession, String> {
        let n_features = schema.n_features();
        let n_columns = schema.output.columns.len();
        let inputs = session.inputs();
        if inputs.len() != 1 {
            let names: Vec<&str> = inputs.iter().map(|i| i.name()).collect();
            return Err(format!("expected one input, found {}: {names:?}", inputs.len()));
        }
        check_matrix(&format!("input `{}`", inputs[0].name()), inputs[0].dtype(), n_features, "features")?;
        let Some(output) = session.outputs().iter().find(|o| o.name() == schema.output.tensor) else {
            let names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
            return Err(format!("no output tensor `{}` (outputs: {names:?})", schema.output.tensor));
        };
        check_matrix(&format!("output `{}`", output.name()), output.dtype(), n_columns, "columns")?;
        let bound =
            OnnxSession { session: Mutex::new(session), output: schema.output.tensor.clone(), n_features, n_columns };
        bound.run(&vec![0.0; n_features]).map_err(|e| format!("test inference on a zero row: {e}"))?;
        Ok(bound)
    }

    /// Runs `rows` (row-major, `n_rows x n_features`) and returns the output, row-major
    /// `n_rows x n_columns`.
    pub(super) fn run(&self, rows: &[f32]) -> Result<Vec<f32>, String> {
        if !rows.len().is_multiple_of(self.n_features) {
            return Err(format!("{} values is not a whole number of {}-feature rows", rows.len(), self.n_features));
        }
        let n_rows = rows.len() / self.n_features;
        if n_rows == 0 {
            return Ok(Vec::new());
        }
        let input = TensorRef::from_array_view(([n_rows, self.n_features], rows)).map_err(|e| e.to_string())?;
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let outputs = session.run(ort::inputs![input]).map_err(|e| e.to_string())?;
        let value = outputs.get(&self.output).ok_or_else(|| format!("no output `{}` in the results", self.output))?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| format!("output `{}`: {e}", self.output))?;
        if **shape != [n_rows as i64, self.n_columns as i64] {
            return Err(format!(
                "output `{}` has shape {:?}, expected [{n_rows}, {}]",
                self.output, &**shape, self.n_columns
            ));
        }
        Ok(data.to_vec())
    }
}

/// Checks an input or output is an `f32` matrix whose second dimension is `width` (or dynamic).
fn check_matrix(what: &str, dtype: &ValueType, width: usize, unit: &str) -> Result<(), String> {
    let ValueType::Tensor { ty, shape, .. } = dtype else {
        return Err(format!("{what} is {dtype}, expected a float tensor (export classifiers with zipmap disabled)"));
    };
    if *ty != TensorElementType::Float32 {
        return Err(format!("{what} has element type {ty}, expected float32"));
    }
    match **shape {
        [_, w] if w < 0 || w as usize == width => Ok(()),
        [_, w] => Err(format!("{what} has {w} {unit}, the schema has {width}")),
        ref s => Err(format!("{what} has shape {s:?}, expected [rows, {width}]")),
    }
}
