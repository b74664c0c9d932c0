//! The model registry: every model of the manifest, loaded, checked, and served by name.
//!
//! [`ModelRegistry::open`] reads the manifest and loads each model: the file must hash to
//! the manifest's sha256, ONNX Runtime must accept it, and the schema in its metadata, the
//! manifest's and the one the aggregator expects for its kind must be equal. A model that
//! fails is not served (its error is in [`ModelRegistry::status`]); the others are.
//! [`check`] is the strict variant for `validate`: the first refusal is an error.
//!
//! [`ModelRegistry::predict`] runs a batch, row-major `n_rows x n_features`, and returns
//! the rows' outputs with the exact model version that produced them. It is synchronous and
//! CPU-bound: call it from the prediction thread, never from an async worker.
//!
//! Hot reload: [`ModelRegistry::reload_if_changed`] looks at the manifest's and every model
//! file's identity (size, mtime, ctime, inode) and reloads what changed; [`ModelRegistry::watch`]
//! calls it every few seconds on a thread of its own. A new version is loaded and checked
//! completely before it replaces the old one in a single map update, so `predict` sees the
//! old or the new model, never a mix. If the replacement (or an edited manifest) is refused,
//! the error is logged and counted and the previous version keeps serving; the refused input
//! is not retried until it changes again. To ship a model: write the new `.onnx` file under
//! a new name or by rename, then update the manifest (its sha256 is what admits the file).

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};
use tracing::{error, info, warn};

use super::ModelError;
use super::manifest::{Manifest, ModelEntry, ModelKind};
use super::runtime::OnnxRuntime;
use super::schema::{FeatureSchema, SCHEMA_METADATA_KEY};
use super::session::{OnnxSession, open_session};

/// The feature schema the aggregator produces for each model kind it uses, and for each
/// resource kind (`container`, `host`, … ; empty for models that have none).
pub type ExpectedSchemas = BTreeMap<(ModelKind, String), FeatureSchema>;

/// What is known about a served model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub kind: ModelKind,
    pub path: PathBuf,
    pub sha256: String,
    pub schema: FeatureSchema,
    /// From the manifest entry (see [`super::ModelEntry`]).
    pub resource_kind: String,
    pub failure_type: String,
    pub horizon_s: u64,
    pub operating_threshold: Option<f64>,
    pub loaded_at: SystemTime,
}

/// Outputs of one batch: row-major `n_rows x model.schema.output.columns.len()`.
#[derive(Debug, Clone)]
pub struct Predictions {
    /// The model (and version) that produced these outputs.
    pub model: Arc<ModelInfo>,
    pub values: Vec<f32>,
}

impl Predictions {
    /// Output columns per row.
    pub fn width(&self) -> usize {
        self.model.schema.output.columns.len()
    }

    pub fn n_rows(&self) -> usize {
        self.values.len() / self.width().max(1)
    }

    /// The outputs of row `i`. Panics if `i >= self.n_rows()`.
    pub fn row(&self, i: usize) -> &[f32] {
        let w = self.width();
        &self.values[i * w..(i + 1) * w]
    }

    /// Output column `name` (e.g. `p_failure`) for every row, or `None` if the model has no such column.
    pub fn column(&self, name: &str) -> Option<impl Iterator<Item = f32> + '_> {
        let c = self.model.schema.output_column(name)?;
        Some(self.values.chunks_exact(self.width()).map(move |row| row[c]))
    }
}

/// One manifest entry as the registry sees it.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub name: String,
    /// The version being served, if any.
    pub serving: Option<Arc<ModelInfo>>,
    /// Why the manifest's current version of this model is not the one serving.
    pub error: Option<String>,
}

/// Counters for metrics. Startup and reload are counted apart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistryStats {
    /// Models loaded by [`ModelRegistry::open`].
    pub loads_total: u64,
    /// Models refused by [`ModelRegistry::open`].
    pub load_failures_total: u64,
    /// Models loaded (new or replaced) by hot reload.
    pub reloads_total: u64,
    /// Model files or manifests refused by hot reload (the previous models kept serving).
    pub reload_failures_total: u64,
    /// Batches run, rows in them, and batches that failed.
    pub inference_runs_total: u64,
    pub inference_rows_total: u64,
    pub inference_failures_total: u64,
    /// Models currently served.
    pub models_serving: usize,
    /// The most recent refusal or failure, with when it happened.
    pub last_error: Option<(SystemTime, String)>,
}

/// What one [`ModelRegistry::reload_if_changed`] did.
#[derive(Debug, Default)]
pub struct ReloadSummary {
    /// Models loaded (new or replaced).
    pub loaded: Vec<String>,
    /// Models no longer in the manifest, no longer served.
    pub removed: Vec<String>,
    /// Refusals; whatever was serving before keeps serving.
    pub refused: Vec<ModelError>,
}

impl ReloadSummary {
    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty() && self.removed.is_empty() && self.refused.is_empty()
    }
}

/// Loaded models by name, hot-reloaded from a manifest.
pub struct ModelRegistry {
    runtime: Arc<OnnxRuntime>,
    manifest_path: PathBuf,
    expected: ExpectedSchemas,
    /// What `predict` reads; replaced entry by entry.
    table: RwLock<BTreeMap<String, Slot>>,
    /// What reload compares against; held for a whole reload, so reloads never overlap.
    watch: Mutex<WatchState>,
    counters: Counters,
}

impl std::fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRegistry").field("manifest", &self.manifest_path).finish_non_exhaustive()
    }
}

struct LoadedModel {
    info: Arc<ModelInfo>,
    session: OnnxSession,
}

#[derive(Default)]
struct Slot {
    serving: Option<Arc<LoadedModel>>,
    error: Option<String>,
}

/// File identity: any rewrite, replacement or rename changes at least one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

struct WatchState {
    manifest_stamp: Option<FileStamp>,
    /// The last manifest that parsed and validated.
    manifest: Manifest,
    /// Per model, the entry and file identity last tried (loaded or refused): not retried
    /// until one of them changes.
    tried: HashMap<String, (ModelEntry, Option<FileStamp>)>,
}

#[derive(Default)]
struct Counters {
    loads: AtomicU64,
    load_failures: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    runs: AtomicU64,
    rows: AtomicU64,
    run_failures: AtomicU64,
    last_error: Mutex<Option<(SystemTime, String)>>,
}

impl Counters {
    fn error(&self, counter: &AtomicU64, e: &ModelError) {
        counter.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some((SystemTime::now(), e.to_string()));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Startup,
    Reload,
}

impl ModelRegistry {
    /// Reads the manifest at `manifest_path` and loads every model in it. Fails only when
    /// the manifest itself cannot be read or is invalid; refused models are logged, counted
    /// and reported by [`ModelRegistry::status`], and the rest are served.
    pub fn open(
        runtime: Arc<OnnxRuntime>,
        manifest_path: &Path,
        expected: ExpectedSchemas,
    ) -> Result<ModelRegistry, ModelError> {
        let manifest_stamp = FileStamp::of(manifest_path);
        let manifest = Manifest::load(manifest_path)?;
        let registry = ModelRegistry {
            runtime,
            manifest_path: manifest_path.to_path_buf(),
            expected,
            table: RwLock::new(BTreeMap::new()),
            watch: Mutex::new(WatchState { manifest_stamp, manifest, tried: HashMap::new() }),
            counters: Counters::default(),
        };
        let mut watch = registry.watch.lock().unwrap_or_else(PoisonError::into_inner);
        let summary = registry.sync_models(&mut watch, Phase::Startup);
        drop(watch);
        info!(
            manifest = %registry.manifest_path.display(),
            serving = summary.loaded.len(),
            refused = summary.refused.len(),
            "model registry open"
        );
        Ok(registry)
    }

    /// Runs `rows` (row-major, `n_rows x n_features` of the model's schema) through model
    /// `name`. An empty batch returns no rows without running the model.
    pub fn predict(&self, name: &str, rows: &[f32]) -> Result<Predictions, ModelError> {
        let model = self.serving(name)?;
        let n_features = model.info.schema.n_features();
        if !rows.len().is_multiple_of(n_features) {
            return Err(ModelError::BadInput {
                model: name.to_string(),
                reason: format!("{} values is not a whole number of {n_features}-feature rows", rows.len()),
            });
        }
        match model.session.run(rows) {
            Ok(values) => {
                self.counters.runs.fetch_add(1, Ordering::Relaxed);
                self.counters.rows.fetch_add((rows.len() / n_features) as u64, Ordering::Relaxed);
                Ok(Predictions { model: model.info.clone(), values })
            }
            Err(reason) => {
                let e = ModelError::Inference { model: name.to_string(), reason };
                self.counters.error(&self.counters.run_failures, &e);
                Err(e)
            }
        }
    }

    /// The served version of model `name`.
    pub fn model(&self, name: &str) -> Option<Arc<ModelInfo>> {
        self.serving(name).ok().map(|m| m.info.clone())
    }

    /// Served models of `kind`, by name.
    pub fn models_of_kind(&self, kind: ModelKind) -> Vec<Arc<ModelInfo>> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        table
            .values()
            .filter_map(|s| s.serving.as_ref())
            .filter(|m| m.info.kind == kind)
            .map(|m| m.info.clone())
            .collect()
    }

    /// Every manifest entry: what serves and what was refused.
    pub fn status(&self) -> Vec<ModelStatus> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        table
            .iter()
            .map(|(name, s)| ModelStatus {
                name: name.clone(),
                serving: s.serving.as_ref().map(|m| m.info.clone()),
                error: s.error.clone(),
            })
            .collect()
    }

    pub fn stats(&self) -> RegistryStats {
        let c = &self.counters;
        let models_serving =
            self.table.read().unwrap_or_else(PoisonError::into_inner).values().filter(|s| s.serving.is_some()).count();
        RegistryStats {
            loads_total: c.loads.load(Ordering::Relaxed),
            load_failures_total: c.load_failures.load(Ordering::Relaxed),
            reloads_total: c.reloads.load(Ordering::Relaxed),
            reload_failures_total: c.reload_failures.load(Ordering::Relaxed),
            inference_runs_total: c.runs.load(Ordering::Relaxed),
            inference_rows_total: c.rows.load(Ordering::Relaxed),
            inference_failures_total: c.run_failures.load(Ordering::Relaxed),
            models_serving,
            last_error: c.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }

    pub fn manifest_path(&self) -> &Path {
        &self.manifest_path
    }

    pub fn runtime(&self) -> &OnnxRuntime {
        &self.runtime
    }

    /// Reloads whatever changed since the last look: the manifest, and every model whose
    /// entry or file changed. Refusals keep the previous version serving.
    pub fn reload_if_changed(&self) -> ReloadSummary {
        let mut watch = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = FileStamp::of(&self.manifest_path);
        if stamp != watch.manifest_stamp {
            watch.manifest_stamp = stamp;
            match Manifest::load(&self.manifest_path) {
                Ok(m) => watch.manifest = m,
                Err(e) => {
                    error!(error = %e, "model manifest refused; still serving the models already loaded");
                    self.counters.error(&self.counters.reload_failures, &e);
                    return ReloadSummary { refused: vec![e], ..ReloadSummary::default() };
                }
            }
        }
        self.sync_models(&mut watch, Phase::Reload)
    }

    /// Polls for changes every `every` on a thread of its own until the returned watcher is
    /// dropped (or the registry is).
    pub fn watch(self: &Arc<Self>, every: Duration) -> std::io::Result<ReloadWatcher> {
        let (stop, stopped) = mpsc::channel::<()>();
        let registry: Weak<ModelRegistry> = Arc::downgrade(self);
        let thread = std::thread::Builder::new().name("augur-model-reload".into()).spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let Some(registry) = registry.upgrade() else { break };
                registry.reload_if_changed();
            }
        })?;
        Ok(ReloadWatcher { stop: Some(stop), thread: Some(thread) })
    }

    fn serving(&self, name: &str) -> Result<Arc<LoadedModel>, ModelError> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        match table.get(name) {
            None => Err(ModelError::UnknownModel { name: name.to_string() }),
            Some(Slot { serving: Some(m), .. }) => Ok(m.clone()),
            Some(Slot { serving: None, error }) => Err(ModelError::Unavailable {
                name: name.to_string(),
                reason: error.clone().unwrap_or_else(|| "not loaded yet".into()),
            }),
        }
    }

    /// Brings the table in line with `watch.manifest`: loads entries whose entry or file
    /// changed since last tried, drops entries no longer listed.
    fn sync_models(&self, watch: &mut WatchState, phase: Phase) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        let dir = manifest_dir(&self.manifest_path);
        let entries = watch.manifest.models.clone();
        for entry in &entries {
            let path = entry.path_in(&dir);
            let tried = (entry.clone(), FileStamp::of(&path));
            if watch.tried.get(&entry.name) == Some(&tried) {
                continue;
            }
            watch.tried.insert(entry.name.clone(), tried);
            let result = load_model(&self.runtime, &dir, entry, &self.expected);
            let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
            let slot = table.entry(entry.name.clone()).or_default();
            match result {
                Ok(model) => {
                    let m = &model.info;
                    let replaced = slot.serving.as_ref().map(|old| old.info.version.clone());
                    info!(model = %m.name, version = %m.version, sha256 = %m.sha256, replaced = ?replaced, "model loaded");
                    slot.serving = Some(Arc::new(model));
                    slot.error = None;
                    let counter = if phase == Phase::Startup { &self.counters.loads } else { &self.counters.reloads };
                    counter.fetch_add(1, Ordering::Relaxed);
                    summary.loaded.push(entry.name.clone());
                }
                Err(e) => {
                    match slot.serving.as_ref() {
                        Some(old) => error!(
                            model = %entry.name, error = %e, serving = %old.info.version,
                            "model refused; still serving the previous version"
                        ),
                        None => error!(model = %entry.name, error = %e, "model refused; not served"),
                    }
                    slot.error = Some(e.to_string());
                    let counter = if phase == Phase::Startup {
                        &self.counters.load_failures
                    } else {
                        &self.counters.reload_failures
                    };
                    self.counters.error(counter, &e);
                    summary.refused.push(e);
                }
            }
        }
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<String> = table.keys().filter(|n| watch.manifest.get(n).is_none()).cloned().collect();
        for name in gone {
            table.remove(&name);
            watch.tried.remove(&name);
            warn!(model = %name, "model no longer in the manifest; not served");
            summary.removed.push(name);
        }
        summary
    }
}

/// Stops the reload thread of [`ModelRegistry::watch`] when dropped (after a reload in
/// progress finishes).
pub struct ReloadWatcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ReloadWatcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Loads every model of the manifest at `manifest_path` and returns their descriptions, or
/// the first refusal: what `augur-aggregator validate` runs.
pub fn check(
    runtime: &OnnxRuntime,
    manifest_path: &Path,
    expected: &ExpectedSchemas,
) -> Result<Vec<ModelInfo>, ModelError> {
    let manifest = Manifest::load(manifest_path)?;
    let dir = manifest_dir(manifest_path);
    manifest.models.iter().map(|e| load_model(runtime, &dir, e, expected).map(|m| (*m.info).clone())).collect()
}

fn manifest_dir(manifest_path: &Path) -> PathBuf {
    match manifest_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Loads and checks one model: the manifest's schema against the expected one, the file's
/// hash, ONNX Runtime's verdict, the schema in the file's metadata, and the input/output
/// shapes.
fn load_model(
    runtime: &OnnxRuntime,
    dir: &Path,
    entry: &ModelEntry,
    expected: &ExpectedSchemas,
) -> Result<LoadedModel, ModelError> {
    let model = || entry.name.clone();
    let Some(want) = expected.get(&(entry.kind, entry.resource_kind.clone())) else {
        let kinds: Vec<String> =
            expected.keys().map(|(k, r)| if r.is_empty() { k.to_string() } else { format!("{k} for {r}") }).collect();
        let expected = if kinds.is_empty() { "no models at all".to_string() } else { kinds.join(", ") };
        return Err(ModelError::UnexpectedKind { model: model(), kind: entry.kind, expected });
    };
    if let Some(difference) = want.first_difference(&entry.schema) {
        return Err(ModelError::SchemaMismatch {
            model: model(),
            what: format!("the manifest's schema is not what the aggregator expects for {} models", entry.kind),
            difference,
        });
    }
    let path = entry.path_in(dir);
    let bytes =
        std::fs::read(&path).map_err(|source| ModelError::ModelFile { model: model(), path: path.clone(), source })?;
    let found = hex(&Sha256::digest(&bytes));
    if found != entry.sha256 {
        return Err(ModelError::Checksum { model: model(), path, expected: entry.sha256.clone(), found });
    }
    let invalid = |reason: String| ModelError::InvalidModel { model: model(), path: path.clone(), reason };
    let (session, metadata) = open_session(runtime, &bytes).map_err(invalid)?;
    let Some(json) = metadata else {
        return Err(ModelError::SchemaMismatch {
            model: model(),
            what: format!("{} has no `{SCHEMA_METADATA_KEY}` metadata", path.display()),
            difference: "re-export it with the feature schema in metadata_props".into(),
        });
    };
    let in_file: FeatureSchema = serde_json::from_str(&json).map_err(|e| ModelError::SchemaMismatch {
        model: model(),
        what: format!("`{SCHEMA_METADATA_KEY}` in {} is not a valid schema", path.display()),
        difference: e.to_string(),
    })?;
    if let Some(difference) = entry.schema.first_difference(&in_file) {
        return Err(ModelError::SchemaMismatch {
            model: model(),
            what: format!("the schema in {} is not the manifest's", path.display()),
            difference,
        });
    }
    let session = OnnxSession::bind(session, &entry.schema).map_err(invalid)?;
    let info = ModelInfo {
        name: entry.name.clone(),
        version: entry.version.clone(),
        kind: entry.kind,
        path,
        sha256: found,
        schema: entry.schema.clone(),
        resource_kind: entry.resource_kind.clone(),
        failure_type: entry.failure_type.clone(),
        horizon_s: entry.horizon_s,
        operating_threshold: entry.operating_threshold,
        loaded_at: SystemTime::now(),
    };
    Ok(LoadedModel { info: Arc::new(info), session })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
