//! Metric samplers: each tick they read the kernel's view of the host and its cgroups and
//! append [`Sample`]s in base units (seconds, bytes) with Prometheus-style names.
//!
//! Layout:
//! - [`host`]: [`HostSampler`], procfs and statvfs (CPU, load, memory, PSI, vmstat, disks,
//!   filesystems, network, TCP).
//! - [`cgroup`]: [`CgroupSampler`], per-container CPU, memory, I/O and pids from cgroup v1,
//!   v2 or hybrid hierarchies.
//! - `procfs`: pure parsers for `/proc` files.
//! - `cgroupfs`: pure parsers for cgroup v1/v2 control files.
//! - `discovery`: finds the cgroup hierarchies and names the containers, pods, services
//!   and named cgroups in them.
//!
//! Every sampler takes its filesystem roots from its config, so the whole pipeline runs on
//! fixture trees (`agent/tests/fixtures/`) as well as on the real `/proc` and
//! `/sys/fs/cgroup`. A failed read or parse never aborts a tick: it is counted
//! ([`Sampler::errors`]), logged at WARN the first time a cause is seen and at DEBUG after.

pub mod cgroup;
mod cgroupfs;
mod discovery;
pub mod host;
mod procfs;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use augur_core::{MetricKind, SeriesKey};

pub use cgroup::{CgroupSampler, ContainerSamplerConfig, NamedCgroup};
pub use host::{HostSampler, HostSamplerConfig};

/// One value of one series, taken at the current tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Which series the value belongs to.
    pub key: SeriesKey,
    /// The value in the series' base unit.
    pub value: f64,
}

/// A source of samples, called once per tick on the sampler thread.
pub trait Sampler: Send {
    /// Short stable name for logs and status (`host`, `cgroup`).
    fn name(&self) -> &'static str;
    /// Appends this tick's samples. Never panics, never aborts the tick on a failed read:
    /// failures are counted (see errors()) and logged once per distinct cause
    /// (tracing::warn), then at debug.
    fn sample(&mut self, out: &mut Vec<Sample>);
    /// Failed reads and parses since the sampler was created.
    fn errors(&self) -> u64;
}

/// Why one source could not be sampled this tick.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A file was read but its content is not in the expected format.
    #[error("cannot parse {path}: {what}")]
    Parse {
        /// The file concerned.
        path: PathBuf,
        /// What was wrong with it.
        what: &'static str,
    },
    /// `statvfs` failed on a mount point.
    #[error("statvfs {path} failed: {source}")]
    Statvfs {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A directory of a cgroup hierarchy could not be listed.
    #[error("cannot list {path}: {source}")]
    ListDir {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

impl SampleError {
    /// What makes two errors "the same cause" for log deduplication: the path and the kind
    /// of failure, not the exact message.
    fn cause_key(&self) -> String {
        match self {
            SampleError::Read { path, source }
            | SampleError::Statvfs { path, source }
            | SampleError::ListDir { path, source } => {
                format!("{}:{:?}", path.display(), source.kind())
            }
            SampleError::Parse { path, what } => format!("{}:{what}", path.display()),
        }
    }
}

/// Distinct causes remembered for log deduplication; past this every error logs at DEBUG,
/// so a host with a churn of failing cgroups cannot grow the set without bound.
const MAX_REMEMBERED_CAUSES: usize = 1024;

/// Counts a sampler's errors and logs each distinct cause once at WARN, then at DEBUG.
#[derive(Debug)]
pub(crate) struct ErrorLog {
    sampler: &'static str,
    count: u64,
    seen: HashSet<String>,
}

impl ErrorLog {
    pub(crate) fn new(sampler: &'static str) -> Self {
        ErrorLog { sampler, count: 0, seen: HashSet::new() }
    }

    /// Counts one failure and logs it.
    pub(crate) fn record(&mut self, err: SampleError) {
        self.count += 1;
        let key = err.cause_key();
        if self.seen.len() < MAX_REMEMBERED_CAUSES && self.seen.insert(key) {
            tracing::warn!(
                sampler = self.sampler,
                error = %err,
                "sampling failed; repeats of this cause are logged at debug"
            );
        } else {
            tracing::debug!(sampler = self.sampler, error = %err, "sampling failed");
        }
    }

    /// Failures counted so far.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }
}

/// Upper bound of one file read; kernel files we read are far smaller (a mount table of
/// a busy Kubernetes node is a few hundred KiB).
const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads small kernel files into one reused buffer, remembering the last path for errors.
#[derive(Debug, Default)]
pub(crate) struct FileReader {
    path: PathBuf,
    buf: Vec<u8>,
}

impl FileReader {
    /// Reads `dir/file` (or `dir` alone when `file` is empty) into the buffer.
    ///
    /// Uses plain `read` calls: `File::read_to_string` would add an `fstat` and an `lseek`
    /// per file to size its buffer, which is useless for procfs and cgroupfs files (they
    /// report size 0 or 4096) and costs more than the read itself.
    pub(crate) fn read_in(&mut self, dir: &Path, file: &str) -> io::Result<&str> {
        self.path.as_mut_os_string().clear();
        self.path.push(dir);
        if !file.is_empty() {
            self.path.push(file);
        }
        self.buf.clear();
        let f = File::open(&self.path)?;
        f.take(MAX_FILE_BYTES).read_to_end(&mut self.buf)?;
        std::str::from_utf8(&self.buf).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
    }

    /// Reads the file at `path` into the buffer.
    pub(crate) fn read(&mut self, path: &Path) -> io::Result<&str> {
        self.read_in(path, "")
    }

    /// Content of the last successful read.
    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(&self.buf).unwrap_or_default()
    }

    /// Path of the last read, successful or not.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A read error for the last path.
    pub(crate) fn read_error(&self, source: io::Error) -> SampleError {
        SampleError::Read { path: self.path.clone(), source }
    }

    /// A parse error for the last path.
    pub(crate) fn parse_error(&self, what: &'static str) -> SampleError {
        SampleError::Parse { path: self.path.clone(), what }
    }
}

/// Name, unit and kind of one metric; each sampler declares its metrics as constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Family {
    /// Prometheus-style metric name.
    pub metric: &'static str,
    /// Base unit (`seconds`, `bytes`, `count`, …).
    pub unit: &'static str,
    pub kind: MetricKind,
}

impl Family {
    /// A cumulative counter.
    pub(crate) const fn counter(metric: &'static str, unit: &'static str) -> Self {
        Family { metric, unit, kind: MetricKind::Counter }
    }

    /// A gauge.
    pub(crate) const fn gauge(metric: &'static str, unit: &'static str) -> Self {
        Family { metric, unit, kind: MetricKind::Gauge }
    }
}

/// Appends one sample of `family` for `resource`.
pub(crate) fn push(out: &mut Vec<Sample>, resource: &str, family: &Family, labels: &[(&str, &str)], value: f64) {
    let mut map = BTreeMap::new();
    for (k, v) in labels {
        map.insert((*k).to_owned(), (*v).to_owned());
    }
    let key = SeriesKey {
        resource: resource.to_owned(),
        metric: family.metric.to_owned(),
        unit: family.unit.to_owned(),
        kind: family.kind,
        labels: map,
    };
    out.push(Sample { key, value });
}

/// Whether `name` matches a glob `pattern` where `*` stands for any run of characters
/// (`veth*`, `loop*`, `*-dev`); every other character matches itself.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // Position of the last `*` seen and the name position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether `name` matches any of `patterns` (see [`glob_match`]).
pub(crate) fn matches_any(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, name))
}

/// Root of the fixture trees used by the tests of every sampler module.
#[cfg(test)]
pub(crate) fn fixture(rel: &str) -> PathBuf {
    augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// Test helpers for finding samples in a tick's output.
#[cfg(test)]
pub(crate) mod testutil {
    use super::Sample;

    /// The value of the sample with this resource, metric and labels, if emitted.
    pub(crate) fn value(out: &[Sample], resource: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<f64> = out
            .iter()
            .filter(|s| {
                s.key.resource == resource
                    && s.key.metric == metric
                    && s.key.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.key.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        assert!(found.len() <= 1, "duplicate series {resource}:{metric}{labels:?}");
        found.first().copied()
    }

    /// Number of samples of this resource and metric, any labels.
    pub(crate) fn count(out: &[Sample], resource: &str, metric: &str) -> usize {
        out.iter().filter(|s| s.key.resource == resource && s.key.metric == metric).count()
    }

    /// Every series key must be valid and unique within a tick.
    pub(crate) fn assert_well_formed(out: &[Sample]) {
        let mut seen = std::collections::HashSet::new();
        for s in out {
            s.key.validate().unwrap_or_else(|e| panic!("{}: {e}", s.key));
            assert!(seen.insert(s.key.clone()), "duplicate series {}", s.key);
            assert!(s.value.is_finite(), "{} = {}", s.key, s.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_prefixes_suffixes_and_exact_names() {
        assert!(glob_match("lo", "lo"));
        assert!(!glob_match("lo", "lo0"));
        assert!(glob_match("veth*", "veth1a2b"));
        assert!(glob_match("veth*", "veth"));
        assert!(!glob_match("veth*", "eth0"));
        assert!(glob_match("*-dev", "sda-dev"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("", "x"));
    }

    #[test]
    fn error_log_counts_every_error_but_remembers_causes_once() {
        let mut log = ErrorLog::new("test");
        for _ in 0..3 {
            log.record(SampleError::Parse { path: PathBuf::from("/proc/stat"), what: "bad" });
        }
        log.record(SampleError::Parse { path: PathBuf::from("/proc/loadavg"), what: "bad" });
        assert_eq!(log.count(), 4);
        assert_eq!(log.seen.len(), 2);
    }
}
