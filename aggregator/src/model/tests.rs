//! Model seam tests against the real ONNX Runtime and the fixture models in
//! `tests/fixtures/models` (written by `models/tools/make_test_models.py`; Python is not
//! needed to run these).
//!
//! Tests that need the library find it the way the aggregator does ([`OnnxRuntime::load`]
//! with no configured path: `ORT_DYLIB_PATH`, then the venv, then the packaged path). When
//! it is absent they print why and return; `make test` installs it first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::manifest::Manifest;
use super::registry::ExpectedSchemas;
use super::runtime::probe_library;
use super::*;

const TOLERANCE: f32 = 1e-5;

fn fixtures() -> PathBuf {
    augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

/// The runtime, or `None` (with the reason printed) when this machine has no ONNX Runtime.
fn runtime_or_skip(test: &str) -> Option<Arc<OnnxRuntime>> {
    match OnnxRuntime::load(None) {
        Ok(rt) => Some(rt),
        Err(e @ ModelError::RuntimeNotFound { .. }) => {
            eprintln!("SKIP {test}: {e}");
            None
        }
        Err(e) => panic!("ONNX Runtime found but not loadable: {e}"),
    }
}

/// The schema the fixtures were trained on, written out independently of the fixtures.
fn fixture_schema() -> FeatureSchema {
    FeatureSchema {
        version: 1,
        features: [
            "mem_headroom_ratio",
            "mem_slope_5m",
            "mem_psi_some_avg10",
            "cpu_throttled_ratio_30s",
            "pids_headroom_ratio",
        ]
        .map(String::from)
        .to_vec(),
        windows: [("short", "30s"), ("medium", "5m"), ("long", "30m")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        output: OutputSpec {
            tensor: "probabilities".into(),
            columns: vec!["p_normal".into(), "p_failure".into()],
            description: String::new(),
        },
    }
}

fn expect_failure_probability(schema: FeatureSchema) -> ExpectedSchemas {
    [((ModelKind::FailureProbability, "container".to_string()), schema)].into_iter().collect()
}

#[derive(Deserialize)]
struct Expected {
    rows: Vec<Vec<f32>>,
    models: std::collections::BTreeMap<String, ExpectedModel>,
}

#[derive(Deserialize)]
struct ExpectedModel {
    probabilities: Vec<Vec<f32>>,
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).expect("reading expected.json");
    serde_json::from_str(&text).expect("parsing expected.json")
}

fn assert_close(got: &[f32], want: &[Vec<f32>], what: &str) {
    let want: Vec<f32> = want.iter().flatten().copied().collect();
    assert_eq!(got.len(), want.len(), "{what}: output length");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= TOLERANCE, "{what}: value {i} (row {}, column {}): got {g}, want {w}", i / 2, i % 2);
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A manifest with one failure-probability model named `name`, in fixture form.
fn one_model_manifest(name: &str, version: &str, file: &str, sha256: &str, schema: &FeatureSchema) -> String {
    let manifest = Manifest {
        format: 1,
        models: vec![ModelEntry {
            name: name.into(),
            version: version.into(),
            kind: ModelKind::FailureProbability,
            file: file.into(),
            sha256: sha256.into(),
            schema: schema.clone(),
            resource_kind: "container".into(),
            failure_type: "memory_exhaustion".into(),
            horizon_s: 30,
            operating_threshold: None,
            metrics: Default::default(),
        }],
    };
    toml::to_string(&manifest).expect("serialising a manifest")
}

/// A temp dir holding `manifest.toml` with one model `m` backed by a copy of fixture `fixture_file`.
fn temp_model_dir(fixture_file: &str, schema: &FeatureSchema) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = std::fs::read(fixtures().join(fixture_file)).expect("reading fixture model");
    std::fs::write(dir.path().join("model.onnx"), &bytes).expect("writing model");
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(&manifest, one_model_manifest("m", "1", "model.onnx", &sha256_hex(&bytes), schema))
        .expect("writing manifest");
    (dir, manifest)
}

/// Replaces the model `m` by `bytes` (in a new file `file`) and rewrites the manifest, as a
/// deployment would: model file first, manifest last.
fn ship(dir: &Path, version: &str, file: &str, bytes: &[u8]) {
    std::fs::write(dir.join(file), bytes).expect("writing model");
    let text = one_model_manifest("m", version, file, &sha256_hex(bytes), &fixture_schema());
    let tmp = dir.join("manifest.toml.tmp");
    std::fs::write(&tmp, text).expect("writing manifest");
    std::fs::rename(&tmp, dir.join("manifest.toml")).expect("renaming manifest");
}

fn flat_rows(e: &Expected) -> Vec<f32> {
    e.rows.iter().flatten().copied().collect()
}

#[test]
fn model_manifest_fixture_parses_and_invalid_manifests_say_why() {
    let m = Manifest::load(&fixtures().join("manifest.toml")).expect("fixture manifest is valid");
    assert_eq!(m.models.len(), 2);
    for entry in &m.models {
        assert_eq!(fixture_schema().first_difference(&entry.schema), None, "{}", entry.name);
    }
    let good = one_model_manifest("m", "1", "m.onnx", &"a".repeat(64), &fixture_schema());
    Manifest::parse(&good).expect("generated manifest is valid");
    let cases = [
        (good.replace(&"a".repeat(64), "abc"), "is not 64 lowercase hex digits"),
        (good.replace("m.onnx", "../m.onnx"), "must be a relative path inside the manifest's directory"),
        (good.replace("m.onnx", "/models/m.onnx"), "must be a relative path inside the manifest's directory"),
        (good.replace("format = 1", "format = 2"), "format 2 is not supported"),
        (good.replace("failure_probability", "crystal_ball"), "unknown variant `crystal_ball`"),
        (format!("surprise = 1\n{good}"), "unknown field `surprise`"),
        (good.replace("\"cpu_throttled_ratio_30s\"", "\"mem_slope_5m\""), "feature `mem_slope_5m` appears twice"),
        (format!("{good}\n{}", good.replace("format = 1", "")), "model `m` appears twice"),
    ];
    for (text, want) in cases {
        let err = Manifest::parse(&text).expect_err(want);
        assert!(err.contains(want), "error {err:?} does not contain {want:?}");
    }
}

#[test]
fn model_schema_difference_names_the_first_differing_feature_or_version() {
    let want = fixture_schema();
    assert_eq!(want.first_difference(&want.clone()), None);
    let mut described = want.clone();
    described.output.description = "only words differ".into();
    assert_eq!(want.first_difference(&described), None, "the description is not compared");

    let mut swapped = want.clone();
    swapped.features.swap(2, 3);
    assert_eq!(
        want.first_difference(&swapped).as_deref(),
        Some(
            "feature 2: expected `mem_psi_some_avg10`, found `cpu_throttled_ratio_30s` (5 features expected, 5 found)"
        )
    );
    let mut shorter = want.clone();
    shorter.features.pop();
    assert_eq!(
        want.first_difference(&shorter).as_deref(),
        Some("feature 4: expected `pids_headroom_ratio`, found nothing (5 features expected, 4 found)")
    );
    let mut newer = want.clone();
    newer.version = 2;
    assert_eq!(want.first_difference(&newer).as_deref(), Some("schema version: expected 1, found 2"));
    let mut window = want.clone();
    window.windows.insert("long".into(), "1h".into());
    assert_eq!(want.first_difference(&window).as_deref(), Some("window `long`: expected `30m`, found `1h`"));
}

#[test]
fn model_runtime_missing_library_fails_fast_naming_the_path() {
    let missing = Path::new("/nonexistent/augur/libonnxruntime.so");
    let started = Instant::now();
    let err = OnnxRuntime::load(Some(missing)).expect_err("a missing library must not load");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    let msg = err.to_string();
    assert!(matches!(err, ModelError::RuntimeNotFound { .. }), "{msg}");
    assert!(msg.contains("/nonexistent/augur/libonnxruntime.so (from the config)"), "{msg}");
    assert!(msg.contains("scripts/install-python-deps.sh"), "{msg}");
}

#[test]
fn model_runtime_file_that_is_not_onnxruntime_is_refused_before_ort_sees_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"not a shared library").expect("writing fake library");
    let err = probe_library(&fake).err().expect("a text file is not a library");
    assert!(err.contains("dlopen failed"), "{err}");
    // The C library loads but is not ONNX Runtime.
    let libc_path = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    if libc_path.exists() {
        let err = probe_library(libc_path).err().expect("libc is not ONNX Runtime");
        assert!(err.contains("does not export `OrtGetApiBase`"), "{err}");
    }
}

#[test]
fn model_fixtures_predict_what_onnxruntime_python_recorded() {
    let Some(rt) = runtime_or_skip("model_fixtures_predict_what_onnxruntime_python_recorded") else { return };
    let registry =
        ModelRegistry::open(rt, &fixtures().join("manifest.toml"), expect_failure_probability(fixture_schema()))
            .expect("opening the fixture manifest");
    let e = expected();
    let rows = flat_rows(&e);
    for name in ["test-logreg", "test-lgbm"] {
        let want = &e.models[name].probabilities;
        let batch = registry.predict(name, &rows).expect("predicting a batch");
        assert_eq!(batch.model.name, name);
        assert_eq!(batch.model.version, "1.0.0");
        assert_eq!(batch.n_rows(), e.rows.len());
        assert_close(&batch.values, want, name);
        let p_failure: Vec<f32> = batch.column("p_failure").expect("p_failure column").collect();
        assert_eq!(p_failure, (0..batch.n_rows()).map(|i| batch.row(i)[1]).collect::<Vec<_>>());
        // One row at a time gives the same numbers as the batch.
        for (i, row) in e.rows.iter().enumerate() {
            let single = registry.predict(name, row).expect("predicting one row");
            assert_close(&single.values, &want[i..=i], &format!("{name} row {i} alone"));
        }
    }
    let empty = registry.predict("test-lgbm", &[]).expect("an empty batch is fine");
    assert_eq!(empty.n_rows(), 0);

    let err = registry.predict("test-lgbm", &rows[..7]).expect_err("7 values are not whole rows");
    assert!(err.to_string().contains("7 values is not a whole number of 5-feature rows"), "{err}");
    let err = registry.predict("no-such-model", &rows).expect_err("unknown model");
    assert!(matches!(err, ModelError::UnknownModel { .. }), "{err}");

    let stats = registry.stats();
    assert_eq!((stats.loads_total, stats.load_failures_total, stats.models_serving), (2, 0, 2));
    let single_rows = 2 * e.rows.len() as u64;
    assert_eq!(stats.inference_rows_total, 2 * e.rows.len() as u64 + single_rows);
    assert_eq!(stats.last_error, None);
    assert_eq!(registry.models_of_kind(ModelKind::FailureProbability).len(), 2);
    assert!(registry.models_of_kind(ModelKind::Forecast).is_empty());
}

#[test]
fn model_with_schema_other_than_the_aggregator_expects_is_refused() {
    let Some(rt) = runtime_or_skip("model_with_schema_other_than_the_aggregator_expects_is_refused") else { return };
    let mut aggregator_schema = fixture_schema();
    aggregator_schema.features.swap(2, 3);
    let manifest = fixtures().join("manifest.toml");
    let expected = expect_failure_probability(aggregator_schema);

    let err = registry::check(&rt, &manifest, &expected).expect_err("schema mismatch must refuse");
    let msg = err.to_string();
    assert!(matches!(err, ModelError::SchemaMismatch { .. }), "{msg}");
    assert_eq!(
        msg,
        "model `test-logreg`: feature schema mismatch: the manifest's schema is not what the aggregator expects \
         for failure_probability models: feature 2: expected `cpu_throttled_ratio_30s`, found `mem_psi_some_avg10` \
         (5 features expected, 5 found)"
    );

    // The registry opens, serves nothing it cannot use, and says why.
    let registry = ModelRegistry::open(rt.clone(), &manifest, expected).expect("the manifest itself is fine");
    let err = registry.predict("test-lgbm", &[0.0; 5]).expect_err("refused model must not serve");
    assert!(matches!(err, ModelError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("feature 2: expected `cpu_throttled_ratio_30s`"), "{err}");
    let stats = registry.stats();
    assert_eq!((stats.loads_total, stats.load_failures_total, stats.models_serving), (0, 2, 0));
    assert!(stats.last_error.expect("last error recorded").1.contains("feature schema mismatch"));

    // A kind the aggregator has no schema for is refused too.
    let forecasts_only = [((ModelKind::Forecast, String::new()), fixture_schema())].into_iter().collect();
    let err = registry::check(&rt, &manifest, &forecasts_only).expect_err("unexpected kind");
    assert!(err.to_string().contains("has no use for `failure_probability` models (it expects: forecast)"), "{err}");
}

#[test]
fn model_whose_onnx_metadata_differs_from_the_manifest_is_refused() {
    let Some(rt) = runtime_or_skip("model_whose_onnx_metadata_differs_from_the_manifest_is_refused") else { return };
    // Manifest and aggregator agree on a schema; the file was trained on another one.
    let mut renamed = fixture_schema();
    renamed.features[0] = "mem_available_ratio".into();
    let (_dir, manifest) = temp_model_dir("logreg.onnx", &renamed);
    let err = registry::check(&rt, &manifest, &expect_failure_probability(renamed)).expect_err("must refuse");
    let msg = err.to_string();
    assert!(matches!(err, ModelError::SchemaMismatch { .. }), "{msg}");
    assert!(msg.starts_with("model `m`: feature schema mismatch: the schema in "), "{msg}");
    assert!(
        msg.ends_with(
            "model.onnx is not the manifest's: feature 0: expected `mem_available_ratio`, found `mem_headroom_ratio` \
             (5 features expected, 5 found)"
        ),
        "{msg}"
    );

    let mut newer = fixture_schema();
    newer.version = 2;
    let (_dir, manifest) = temp_model_dir("lgbm.onnx", &newer);
    let err = registry::check(&rt, &manifest, &expect_failure_probability(newer)).expect_err("must refuse");
    assert!(err.to_string().ends_with("is not the manifest's: schema version: expected 2, found 1"), "{err}");
}

#[test]
fn model_file_that_is_corrupt_is_refused() {
    let Some(rt) = runtime_or_skip("model_file_that_is_corrupt_is_refused") else { return };
    let (dir, manifest) = temp_model_dir("lgbm.onnx", &fixture_schema());
    // Hash matches (the manifest was written for these bytes) but the bytes are not a model:
    // garbage, and a model cut in half.
    let whole = std::fs::read(fixtures().join("lgbm.onnx")).expect("reading fixture");
    for bytes in [b"this is not an ONNX model".to_vec(), whole[..whole.len() / 2].to_vec()] {
        ship(dir.path(), "2", "model.onnx", &bytes);
        let err = registry::check(&rt, &manifest, &expect_failure_probability(fixture_schema())).expect_err("corrupt");
        let msg = err.to_string();
        assert!(matches!(err, ModelError::InvalidModel { .. }), "{msg}");
        assert!(msg.starts_with("model `m`: ONNX Runtime refused "), "{msg}");
        assert!(msg.contains("model.onnx"), "{msg}");
    }
}

#[test]
fn model_file_with_wrong_sha256_is_refused() {
    let Some(rt) = runtime_or_skip("model_file_with_wrong_sha256_is_refused") else { return };
    let (dir, manifest) = temp_model_dir("logreg.onnx", &fixture_schema());
    let mut bytes = std::fs::read(dir.path().join("model.onnx")).expect("reading model");
    let want = sha256_hex(&bytes);
    bytes.push(0);
    std::fs::write(dir.path().join("model.onnx"), &bytes).expect("writing model");
    let err = registry::check(&rt, &manifest, &expect_failure_probability(fixture_schema())).expect_err("sha mismatch");
    let msg = err.to_string();
    assert!(matches!(err, ModelError::Checksum { .. }), "{msg}");
    assert!(msg.contains(&format!("has sha256 {}, the manifest says {want}", sha256_hex(&bytes))), "{msg}");

    std::fs::remove_file(dir.path().join("model.onnx")).expect("removing model");
    let err = registry::check(&rt, &manifest, &expect_failure_probability(fixture_schema())).expect_err("missing");
    assert!(err.to_string().contains("cannot read") && err.to_string().contains("model.onnx"), "{err}");
}

#[test]
fn model_hot_reload_swaps_in_new_versions_and_keeps_serving_through_bad_ones() {
    let Some(rt) = runtime_or_skip("model_hot_reload_swaps_in_new_versions_and_keeps_serving_through_bad_ones") else {
        return;
    };
    let e = expected();
    let rows = flat_rows(&e);
    let (dir, manifest) = temp_model_dir("logreg.onnx", &fixture_schema());
    let dir = dir.path();
    let registry = ModelRegistry::open(rt, &manifest, expect_failure_probability(fixture_schema())).expect("open");
    let serves = |version: &str, fixture: &str| {
        let p = registry.predict("m", &rows).expect("m must serve");
        assert_eq!(p.model.version, version);
        assert_close(&p.values, &e.models[fixture].probabilities, &format!("m version {version}"));
    };
    serves("1", "test-logreg");
    assert!(registry.reload_if_changed().is_empty(), "nothing changed yet");

    // A new version: swapped in.
    let lgbm = std::fs::read(fixtures().join("lgbm.onnx")).expect("reading fixture");
    ship(dir, "2", "model-v2.onnx", &lgbm);
    let summary = registry.reload_if_changed();
    assert_eq!(summary.loaded, ["m"], "{summary:?}");
    serves("2", "test-lgbm");

    // A corrupt version 3: refused, version 2 keeps serving, and it is not retried.
    ship(dir, "3", "model-v3.onnx", b"\x08\x07garbage that is not a protobuf model");
    let summary = registry.reload_if_changed();
    assert!(summary.loaded.is_empty(), "{summary:?}");
    assert_eq!(summary.refused.len(), 1, "{summary:?}");
    assert!(matches!(summary.refused[0], ModelError::InvalidModel { .. }), "{summary:?}");
    serves("2", "test-lgbm");
    assert!(registry.reload_if_changed().is_empty(), "a refused input is not retried until it changes");
    let status = registry.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].serving.as_ref().map(|m| m.version.as_str()), Some("2"));
    assert!(status[0].error.as_deref().unwrap_or_default().contains("ONNX Runtime refused"), "{status:?}");

    // An edited manifest that does not parse: refused, version 2 keeps serving.
    std::fs::write(dir.join("manifest.toml"), "format = 1\n[[model]]\nname = \"m\"\n").expect("writing manifest");
    let summary = registry.reload_if_changed();
    assert!(matches!(summary.refused.as_slice(), [ModelError::Manifest { .. }]), "{summary:?}");
    serves("2", "test-lgbm");

    // Version 4 is good again.
    let logreg = std::fs::read(fixtures().join("logreg.onnx")).expect("reading fixture");
    ship(dir, "4", "model-v4.onnx", &logreg);
    assert_eq!(registry.reload_if_changed().loaded, ["m"]);
    serves("4", "test-logreg");
    assert_eq!(registry.status()[0].error, None);

    // The served file overwritten in place with other bytes: sha mismatch, version 4 keeps serving.
    std::fs::write(dir.join("model-v4.onnx"), &lgbm).expect("overwriting model");
    let summary = registry.reload_if_changed();
    assert!(matches!(summary.refused.as_slice(), [ModelError::Checksum { .. }]), "{summary:?}");
    serves("4", "test-logreg");

    let stats = registry.stats();
    assert_eq!(stats.loads_total, 1);
    assert_eq!(stats.reloads_total, 2);
    assert_eq!(stats.reload_failures_total, 3);
    assert_eq!(stats.models_serving, 1);
    assert!(stats.last_error.expect("last error").1.contains("sha256"));

    // Dropped from the manifest: no longer served.
    std::fs::write(dir.join("manifest.toml"), "format = 1\n").expect("writing manifest");
    assert_eq!(registry.reload_if_changed().removed, ["m"]);
    assert!(matches!(registry.predict("m", &rows), Err(ModelError::UnknownModel { .. })));
}

#[test]
fn model_reload_watcher_picks_up_a_new_version() {
    let Some(rt) = runtime_or_skip("model_reload_watcher_picks_up_a_new_version") else { return };
    let (dir, manifest) = temp_model_dir("logreg.onnx", &fixture_schema());
    let registry =
        Arc::new(ModelRegistry::open(rt, &manifest, expect_failure_probability(fixture_schema())).expect("open"));
    let watcher = registry.watch(Duration::from_millis(20)).expect("starting the watcher");
    let lgbm = std::fs::read(fixtures().join("lgbm.onnx")).expect("reading fixture");
    ship(dir.path(), "2", "model-v2.onnx", &lgbm);
    let deadline = Instant::now() + Duration::from_secs(20);
    while registry.model("m").map(|m| m.version.clone()).as_deref() != Some("2") {
        assert!(Instant::now() < deadline, "the watcher did not load version 2");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(watcher);
    assert_eq!(registry.stats().reloads_total, 1);
}

#[test]
fn model_manifest_example_in_models_readme_parses() {
    let readme = augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR")).join("../models/README.md");
    let text = std::fs::read_to_string(&readme).expect("reading models/README.md");
    let (_, after) = text.split_once("## Manifest").expect("a Manifest section");
    let (_, block) = after.split_once("```toml\n").expect("a toml example");
    let (example, _) = block.split_once("```").expect("a closed toml example");
    let m = Manifest::parse(&example.replace('…', &"0".repeat(64))).expect("the README example must be valid");
    assert_eq!(m.models[0].kind, ModelKind::FailureProbability);
    assert_eq!(m.models[0].schema.output.columns, ["p_normal", "p_failure"]);
}
