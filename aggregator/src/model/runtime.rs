//! The ONNX Runtime library: finding it, checking it, and the one environment per process.
//!
//! `ort` is built with `load-dynamic`: nothing links against ONNX Runtime at build time and
//! the shared library is opened when [`OnnxRuntime::load`] runs. Discovery:
//!
//! 1. the path given by the caller (the aggregator's config), if any;
//! 2. otherwise `ORT_DYLIB_PATH`, if set and non-empty;
//! 3. otherwise the documented defaults, first existing file wins:
//!    - the `onnxruntime` wheel in the model pipeline's venv (installed by
//!      `scripts/install-python-deps.sh`):
//!      `${AUGUR_VENV:-$HOME/.cache/augur/venv}/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*`;
//!    - [`PACKAGED_LIBRARY`], where the Debian package installs it.
//!
//! A path named by the config or by `ORT_DYLIB_PATH` is used or refused, never silently
//! replaced by a default. Before `ort` sees a path, the file must exist, `dlopen` and
//! export `OrtGetApiBase`, and report a version `ort` supports: a missing or wrong library
//! is a [`ModelError`] naming every path tried, returned at once, instead of a panic or a
//! hang inside `ort`'s lazy initialisation.
//!
//! ONNX Runtime allows one environment per process, so the runtime is process-wide: the
//! first successful [`OnnxRuntime::load`] wins and later calls share it. Its log messages
//! (warnings and above) are forwarded to `tracing`.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ort::environment::Environment;
use ort::logging::LogLevel;
use tracing::info;

use super::ModelError;

/// Environment variable naming the library (the same one `ort` itself reads).
pub const LIBRARY_ENV: &str = "ORT_DYLIB_PATH";
/// Where the Debian package installs the library.
pub const PACKAGED_LIBRARY: &str = "/usr/lib/augur/libonnxruntime.so";
/// Environment variable naming the model pipeline's venv (as in `scripts/install-python-deps.sh`).
pub const VENV_ENV: &str = "AUGUR_VENV";

/// Where a candidate library path came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibrarySource {
    Config,
    Env,
    Default,
}

/// The loaded ONNX Runtime: the library path, its version, and the process's environment.
pub struct OnnxRuntime {
    library: PathBuf,
    version: String,
    env: Environment,
}

impl std::fmt::Debug for OnnxRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxRuntime").field("library", &self.library).field("version", &self.version).finish()
    }
}

/// The process's runtime once loaded. A mutex (not a `OnceLock`) so that a failed load
/// leaves nothing behind and a later call may try again.
static RUNTIME: Mutex<Option<Arc<OnnxRuntime>>> = Mutex::new(None);

impl OnnxRuntime {
    /// Finds, checks and loads ONNX Runtime (see the module docs for the order), or returns
    /// the runtime this process already loaded. `configured` is the library path from the
    /// config, if any.
    pub fn load(configured: Option<&Path>) -> Result<Arc<OnnxRuntime>, ModelError> {
        let (path, _) = find_library(configured)?;
        let mut slot = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rt) = slot.as_ref() {
            if same_file(&rt.library, &path) {
                return Ok(rt.clone());
            }
            return Err(ModelError::RuntimeConflict { loaded: rt.library.clone(), requested: path });
        }
        let (probe, version) =
            probe_library(&path).map_err(|reason| ModelError::RuntimeLoad { path: path.clone(), reason })?;
        let load_err = |reason: String| ModelError::RuntimeLoad { path: path.clone(), reason };
        let env = ort::init_from(&path)
            .map_err(|e| load_err(e.to_string()))?
            .with_name("augur")
            .with_telemetry(false)
            .with_logger(Arc::new(forward_log))
            .build()
            .map_err(|e| load_err(format!("creating the environment: {e}")))?;
        env.set_log_level(LogLevel::Warning);
        drop(probe);
        info!(library = %path.display(), %version, "ONNX Runtime loaded");
        let rt = Arc::new(OnnxRuntime { library: path, version, env });
        *slot = Some(rt.clone());
        Ok(rt)
    }

    /// The library this runtime was loaded from.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// ONNX Runtime's version string, e.g. `1.32.0`.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub(super) fn environment(&self) -> &Environment {
        &self.env
    }
}

/// Resolves the library path without loading anything: the first existing candidate, or
/// [`ModelError::RuntimeNotFound`] listing every path tried.
pub fn find_library(configured: Option<&Path>) -> Result<(PathBuf, LibrarySource), ModelError> {
    let env_path = std::env::var_os(LIBRARY_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    let candidates: Vec<(PathBuf, LibrarySource)> = match (configured, env_path) {
        (Some(p), _) => vec![(p.to_path_buf(), LibrarySource::Config)],
        (None, Some(p)) => vec![(p, LibrarySource::Env)],
        (None, None) => default_candidates(),
    };
    for (path, source) in &candidates {
        if path.is_file() {
            return Ok((path.clone(), *source));
        }
    }
    let tried = candidates
        .iter()
        .map(|(p, s)| {
            let from = match s {
                LibrarySource::Config => "from the config",
                LibrarySource::Env => "from ORT_DYLIB_PATH",
                LibrarySource::Default => "default",
            };
            format!("{} ({from})", p.display())
        })
        .collect::<Vec<_>>()
        .join(", ");
    Err(ModelError::RuntimeNotFound { tried })
}

/// The documented default locations, in order. Venv matches are listed when they exist;
/// otherwise the glob itself is listed so the error shows where the library was looked for.
fn default_candidates() -> Vec<(PathBuf, LibrarySource)> {
    let mut out = Vec::new();
    let venv = std::env::var_os(VENV_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/augur/venv")));
    if let Some(venv) = venv {
        let found = venv_libraries(&venv);
        if found.is_empty() {
            out.push((
                venv.join("lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*"),
                LibrarySource::Default,
            ));
        }
        out.extend(found.into_iter().map(|p| (p, LibrarySource::Default)));
    }
    out.push((PathBuf::from(PACKAGED_LIBRARY), LibrarySource::Default));
    out
}

/// `<venv>/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*`, sorted.
fn venv_libraries(venv: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(pythons) = std::fs::read_dir(venv.join("lib")) else { return found };
    for py in pythons.flatten() {
        if !py.file_name().as_bytes().starts_with(b"python3") {
            continue;
        }
        let capi = py.path().join("site-packages/onnxruntime/capi");
        let Ok(libs) = std::fs::read_dir(&capi) else { continue };
        found.extend(
            libs.flatten().filter(|l| l.file_name().as_bytes().starts_with(b"libonnxruntime.so")).map(|l| l.path()),
        );
    }
    found.sort();
    found
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A `dlopen` handle, closed on drop.
pub(super) struct DlHandle(*mut libc::c_void);

impl Drop for DlHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful dlopen and is closed once.
        unsafe { libc::dlclose(self.0) };
    }
}

/// Opens `path` with `dlopen`, checks it exports `OrtGetApiBase` and that its version is
/// one `ort` supports; returns the open handle (keep it until `ort` has opened the library
/// too, so the loader maps it once) and the version.
pub(super) fn probe_library(path: &Path) -> Result<(DlHandle, String), String> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| "the path contains a NUL byte".to_string())?;
    // SAFETY: dlopen with a valid C string.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!("dlopen failed: {}", dlerror()));
    }
    let handle = DlHandle(handle);
    // SAFETY: looking up a symbol in a live handle.
    let sym = unsafe { libc::dlsym(handle.0, c"OrtGetApiBase".as_ptr()) };
    if sym.is_null() {
        return Err("not an ONNX Runtime library: it does not export `OrtGetApiBase`".to_string());
    }
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release (it is the
    // stable entry point of the C API); the returned struct and string are static.
    let version = unsafe {
        let get_base: unsafe extern "C" fn() -> *const ort::sys::OrtApiBase = std::mem::transmute(sym);
        let base = get_base();
        if base.is_null() {
            return Err("`OrtGetApiBase` returned null".to_string());
        }
        let v = ((*base).GetVersionString)();
        if v.is_null() {
            return Err("`GetVersionString` returned null".to_string());
        }
        CStr::from_ptr(v).to_string_lossy().into_owned()
    };
    match version.split('.').nth(1).and_then(|m| m.parse::<u32>().ok()) {
        Some(minor) if minor >= ort::MINOR_VERSION => Ok((handle, version)),
        _ => Err(format!(
            "version {version} is too old: this build needs ONNX Runtime 1.{} or newer",
            ort::MINOR_VERSION
        )),
    }
}

fn dlerror() -> String {
    // SAFETY: dlerror returns a thread-local message or null.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null dlerror results are NUL-terminated strings.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// ONNX Runtime's log callback: warnings and errors go to `tracing` (the environment's
/// level is set to warning, so nothing more verbose arrives).
fn forward_log(level: LogLevel, category: &str, id: &str, location: &str, message: &str) {
    match level {
        LogLevel::Verbose | LogLevel::Info => {
            tracing::debug!(category, id, location, "onnxruntime: {message}")
        }
        LogLevel::Warning => tracing::warn!(category, id, location, "onnxruntime: {message}"),
        LogLevel::Error | LogLevel::Fatal => tracing::error!(category, id, location, "onnxruntime: {message}"),
    }
}
