//! Helpers for tests in the workspace crates (fixture paths, config fixture checks).
//!
//! Not behind `cfg(test)` because other crates' tests use them; nothing here runs in the
//! services.

use std::path::{Path, PathBuf};

/// The source directory of the crate under test.
///
/// Prefers `CARGO_MANIFEST_DIR` at run time (cargo and nextest set it) over the path baked
/// in at compile time: clones that share one target directory share compiled test
/// binaries, so the baked path may name another checkout.
pub fn crate_dir(compiled: &str) -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(compiled))
}

/// Loads every `invalid-*.toml` in `dir` with `load` and checks the error names the problem.
///
/// Each fixture's first line is `# expect: <substring of the error>`. Returns how many
/// fixtures were checked, so callers can assert the set is not accidentally empty.
pub fn check_invalid_config_fixtures<T, E: std::fmt::Display>(
    dir: &Path,
    load: impl Fn(&Path) -> Result<T, E>,
) -> usize {
    let mut seen = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap_or_default().to_string_lossy().to_string();
        if !name.starts_with("invalid-") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {name}: {e}"));
        let first = text.lines().next().unwrap_or_default();
        let expect = first
            .strip_prefix("# expect:")
            .unwrap_or_else(|| panic!("{name}: first line must be `# expect: <text>`"))
            .trim();
        let err = match load(&path) {
            Ok(_) => panic!("{name}: loaded without error"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expect), "{name}: error {err:?} does not contain {expect:?}");
        seen += 1;
    }
    seen
}
