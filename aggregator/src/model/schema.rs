//! Feature schemas: what a model reads and what it writes.
//!
//! A [`FeatureSchema`] is written three times and must agree every time: in the ONNX
//! file's metadata (key [`SCHEMA_METADATA_KEY`], as JSON), in the manifest (TOML), and in
//! the aggregator, which knows the schema its feature engine produces for each model kind.
//! Equality covers everything but the free-text output description.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// ONNX `metadata_props` key holding the model's [`FeatureSchema`] as JSON.
pub const SCHEMA_METADATA_KEY: &str = "augur.feature_schema";

/// The contract between the feature engine and a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSchema {
    /// Bumped whenever the meaning of a feature changes without its name changing.
    pub version: u32,
    /// Feature names in input column order: row-major input rows have exactly these columns.
    pub features: Vec<String>,
    /// Window configuration the features were computed with (free-form, e.g. `short = "30s"`).
    #[serde(default)]
    pub windows: BTreeMap<String, String>,
    pub output: OutputSpec,
}

/// The model output the aggregator reads.
#[derive(Debug, Clone, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Name of the ONNX output tensor, shaped `[n_rows, columns.len()]`.
    pub tensor: String,
    /// Meaning of each output column, e.g. `["p_normal", "p_failure"]` or `["p10", "p50", "p90"]`.
    pub columns: Vec<String>,
    /// For people; not compared.
    #[serde(default)]
    pub description: String,
}

impl PartialEq for OutputSpec {
    fn eq(&self, other: &Self) -> bool {
        self.tensor == other.tensor && self.columns == other.columns
    }
}

impl FeatureSchema {
    /// Number of input columns.
    pub fn n_features(&self) -> usize {
        self.features.len()
    }

    /// Index of output column `name`.
    pub fn output_column(&self, name: &str) -> Option<usize> {
        self.output.columns.iter().position(|c| c == name)
    }

    /// Checks the schema is usable: some features, no duplicate or empty names.
    pub fn validate(&self) -> Result<(), String> {
        check_names("feature", &self.features)?;
        if self.output.tensor.is_empty() {
            return Err("output.tensor is empty".into());
        }
        check_names("output column", &self.output.columns)
    }

    /// The first difference between `self` (what is expected) and `found`, for an error
    /// message; `None` when they are equal.
    pub fn first_difference(&self, found: &FeatureSchema) -> Option<String> {
        if self.version != found.version {
            return Some(format!("schema version: expected {}, found {}", self.version, found.version));
        }
        if let Some(d) = first_list_difference("feature", &self.features, &found.features) {
            return Some(d);
        }
        if self.windows != found.windows {
            let keys: std::collections::BTreeSet<&String> = self.windows.keys().chain(found.windows.keys()).collect();
            for k in keys {
                let (e, f) = (self.windows.get(k), found.windows.get(k));
                if e != f {
                    return Some(format!("window `{k}`: expected {}, found {}", show(e), show(f)));
                }
            }
        }
        if self.output.tensor != found.output.tensor {
            return Some(format!("output tensor: expected `{}`, found `{}`", self.output.tensor, found.output.tensor));
        }
        first_list_difference("output column", &self.output.columns, &found.output.columns)
    }
}

fn show(v: Option<&String>) -> String {
    v.map_or_else(|| "nothing".to_string(), |v| format!("`{v}`"))
}

fn first_list_difference(what: &str, expected: &[String], found: &[String]) -> Option<String> {
    let n = expected.len().max(found.len());
    (0..n).find_map(|i| {
        let (e, f) = (expected.get(i), found.get(i));
        (e != f).then(|| {
            format!(
                "{what} {i}: expected {}, found {} ({} {what}s expected, {} found)",
                show(e),
                show(f),
                expected.len(),
                found.len()
            )
        })
    })
}

fn check_names(what: &str, names: &[String]) -> Result<(), String> {
    if names.is_empty() {
        return Err(format!("no {what}s"));
    }
    let mut seen = HashSet::new();
    for (i, n) in names.iter().enumerate() {
        if n.trim().is_empty() {
            return Err(format!("{what} {i} has an empty name"));
        }
        if !seen.insert(n.as_str()) {
            return Err(format!("{what} `{n}` appears twice"));
        }
    }
    Ok(())
}
