//! Helpers for augur's end-to-end tests: locating and running the real binaries,
//! scratch directories, and skipping with a printed reason where a test's
//! requirements (root, cgroups, tools) are missing.

use std::path::PathBuf;

/// Directory holding the workspace's built binaries (the test binary's profile).
pub fn bin_dir() -> PathBuf {
    // target/<profile>/deps/e2e-xxxx -> target/<profile>
    let exe = std::env::current_exe().expect("test binary path is known");
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary, with a clear panic if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: build the workspace binaries first (`cargo build --workspace --bins`, which `make test` does)",
        p.display()
    );
    p
}

/// The workspace root (for packaging files, configs and scripts).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Prints why a test is skipped (visible with nextest's output) and returns true.
pub fn skip(test: &str, why: &str) -> bool {
    eprintln!("SKIP {test}: {why}");
    true
}

/// True if `cmd` is on PATH.
pub fn have(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
