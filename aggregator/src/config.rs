//! Aggregator configuration: a TOML file (what) plus command-line flags (how).
//!
//! Parsed with `deny_unknown_fields`, then [`AggregatorConfig::validate`]d; every
//! option is documented in `packaging/config/aggregator.toml`.

use augur_core::units;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::storage::{RetentionRule, StoreOptions};

/// Port the aggregator listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7461;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorConfig {
    /// gRPC listen address (agents, augurctl, subscribers).
    pub listen: SocketAddr,
    /// RocksDB data directory.
    pub data_dir: PathBuf,
    /// Name this aggregator gives itself in Welcome messages.
    pub aggregator_id: String,
    pub ingest: IngestConfig,
    pub storage: StorageConfig,
    pub predict: PredictSection,
    /// The closed loop: policies, safety limits, sets, tiers (see `remediate::policy`).
    pub remediation: crate::remediate::policy::RemediationConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictSection {
    /// Model manifest (see models/README.md); empty: no models, nothing is predicted.
    pub models: PathBuf,
    /// ONNX Runtime library; empty: ORT_DYLIB_PATH, then the documented defaults.
    pub onnxruntime_library: PathBuf,
    /// How often every live resource is scored.
    #[serde(with = "units::duration")]
    pub tick: Duration,
    /// Also score a host's resources as soon as its data is stored, not only on the tick…
    pub score_on_arrival: bool,
    /// …after waiting this long for other hosts' batches to share the pass.
    #[serde(with = "units::duration")]
    pub arrival_coalesce: Duration,
    /// An event is raised when the probability reaches this…
    pub raise_threshold: f64,
    /// …and cleared when it falls below this.
    pub clear_threshold: f64,
    /// While raised, an update is sent when the probability moves this much.
    pub update_delta: f64,
    /// Events buffered per subscriber before the oldest are dropped for it.
    pub subscriber_buffer: usize,
    /// How often the manifest and model files are checked for changes.
    #[serde(with = "units::duration")]
    pub reload_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Samples stamped further in the future than this (by the server's clock) are rejected.
    #[serde(with = "units::duration")]
    pub max_future_skew: Duration,
    /// Samples older than this are rejected (default: the raw retention).
    #[serde(with = "units::duration")]
    pub max_past_age: Duration,
    /// Distinct series one host may define.
    pub max_series_per_host: usize,
    /// Largest accepted gRPC message.
    #[serde(with = "units::bytes")]
    pub max_message_bytes: u64,
    /// Largest accepted number of points in one batch.
    pub max_points_per_batch: usize,
    /// Concurrent storage writes (RocksDB groups concurrent writers into one WAL write).
    pub write_concurrency: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Raw samples are kept this long.
    #[serde(with = "units::duration")]
    pub raw_retention: Duration,
    /// One-minute rollups are kept this long.
    #[serde(with = "units::duration")]
    pub rollup_retention: Duration,
    /// Points per sealed, compressed block.
    pub block_points: usize,
    /// Open points older than this are sealed even if the block is not full.
    #[serde(with = "units::duration")]
    pub max_open_age: Duration,
    /// How often blocks are sealed and retention applied.
    #[serde(with = "units::duration")]
    pub maintenance_interval: Duration,
    /// fsync every write: acknowledged samples then survive power loss, not only a crash.
    pub sync_writes: bool,
    /// Per-label retention overrides, first match wins.
    pub retention: Vec<RetentionRuleConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRuleConfig {
    /// Host labels that must all match (e.g. `{ env = "dev" }`).
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Or: resources whose name starts with this (e.g. `"container/"`).
    #[serde(default)]
    pub resource_prefix: Option<String>,
    #[serde(with = "units::duration")]
    pub raw: Duration,
    #[serde(with = "units::duration")]
    pub rollup: Duration,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            data_dir: PathBuf::from("/var/lib/augur-aggregator"),
            aggregator_id: "augur-aggregator".into(),
            ingest: IngestConfig::default(),
            storage: StorageConfig::default(),
            predict: PredictSection::default(),
            remediation: Default::default(),
        }
    }
}

impl Default for PredictSection {
    fn default() -> Self {
        let d = crate::predict::PredictConfig::default();
        PredictSection {
            models: PathBuf::new(),
            onnxruntime_library: PathBuf::new(),
            tick: d.tick,
            score_on_arrival: d.data_coalesce.is_some(),
            arrival_coalesce: d.data_coalesce.unwrap_or(Duration::from_millis(2)),
            raise_threshold: d.raise_threshold,
            clear_threshold: d.clear_threshold,
            update_delta: d.update_delta,
            subscriber_buffer: d.subscriber_buffer,
            reload_interval: Duration::from_secs(2),
        }
    }
}

impl PredictSection {
    /// Engine settings from this section.
    pub fn engine_config(&self) -> crate::predict::PredictConfig {
        crate::predict::PredictConfig {
            tick: self.tick,
            raise_threshold: self.raise_threshold,
            clear_threshold: self.clear_threshold,
            update_delta: self.update_delta,
            subscriber_buffer: self.subscriber_buffer,
            data_coalesce: self.score_on_arrival.then_some(self.arrival_coalesce),
            ..crate::predict::PredictConfig::default()
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_future_skew: Duration::from_secs(300),
            max_past_age: Duration::from_secs(14 * 86_400),
            max_series_per_host: 100_000,
            max_message_bytes: 16 << 20,
            max_points_per_batch: 200_000,
            write_concurrency: 4,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        let d = StoreOptions::default();
        StorageConfig {
            raw_retention: d.raw_retention,
            rollup_retention: d.rollup_retention,
            block_points: d.block_points,
            max_open_age: d.max_open_age,
            maintenance_interval: Duration::from_secs(30),
            sync_writes: d.sync_writes,
            retention: Vec::new(),
        }
    }
}

/// Why a config is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl AggregatorConfig {
    /// Reads, parses and validates a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: AggregatorConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: origin.to_owned(), message: e.to_string() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir must not be empty".into());
        }
        let i = &self.ingest;
        if i.max_message_bytes < 4096 || i.max_message_bytes > (1 << 30) {
            return bad(format!(
                "ingest.max_message_bytes must be between 4KiB and 1GiB (got {})",
                units::format_bytes(i.max_message_bytes)
            ));
        }
        if i.max_series_per_host == 0 || i.max_points_per_batch == 0 {
            return bad("ingest.max_series_per_host and ingest.max_points_per_batch must be > 0".into());
        }
        if i.write_concurrency == 0 || i.write_concurrency > 256 {
            return bad(format!("ingest.write_concurrency must be 1..=256 (got {})", i.write_concurrency));
        }
        let s = &self.storage;
        if s.block_points < 16 || s.block_points > 1_000_000 {
            return bad(format!("storage.block_points must be 16..=1000000 (got {})", s.block_points));
        }
        if s.raw_retention < Duration::from_secs(60) {
            return bad("storage.raw_retention must be at least 1m".into());
        }
        if s.rollup_retention < s.raw_retention {
            return bad("storage.rollup_retention must not be shorter than storage.raw_retention".into());
        }
        if s.maintenance_interval < Duration::from_secs(1) {
            return bad("storage.maintenance_interval must be at least 1s".into());
        }
        let p = &self.predict;
        if p.tick < Duration::from_millis(100) {
            return bad("predict.tick must be at least 100ms".into());
        }
        if p.arrival_coalesce > Duration::from_millis(100) {
            return bad(format!(
                "predict.arrival_coalesce must be at most 100ms (got {}): it delays every early pass",
                humantime::format_duration(p.arrival_coalesce)
            ));
        }
        if !(0.0..=1.0).contains(&p.raise_threshold) || !(0.0..=1.0).contains(&p.clear_threshold) {
            return bad("predict.raise_threshold and predict.clear_threshold must be in [0, 1]".into());
        }
        if p.clear_threshold > p.raise_threshold {
            return bad(format!(
                "predict.clear_threshold ({}) must not exceed predict.raise_threshold ({}): no hysteresis otherwise",
                p.clear_threshold, p.raise_threshold
            ));
        }
        if p.subscriber_buffer == 0 || p.subscriber_buffer > 1 << 20 {
            return bad(format!("predict.subscriber_buffer must be 1..=1048576 (got {})", p.subscriber_buffer));
        }
        self.remediation.validate().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        for (n, r) in s.retention.iter().enumerate() {
            if r.match_labels.is_empty() && r.resource_prefix.is_none() {
                return bad(format!(
                    "storage.retention[{n}] needs match_labels or resource_prefix (an empty rule would match everything)"
                ));
            }
            if r.rollup < r.raw {
                return bad(format!("storage.retention[{n}]: rollup must not be shorter than raw"));
            }
        }
        Ok(())
    }

    /// Storage options derived from this config.
    pub fn store_options(&self) -> StoreOptions {
        let s = &self.storage;
        StoreOptions {
            block_points: s.block_points,
            max_open_age: s.max_open_age,
            raw_retention: s.raw_retention,
            rollup_retention: s.rollup_retention,
            retention_rules: s
                .retention
                .iter()
                .map(|r| RetentionRule {
                    match_host_labels: r.match_labels.clone(),
                    resource_prefix: r.resource_prefix.clone(),
                    raw: r.raw,
                    rollup: r.rollup,
                })
                .collect(),
            sync_writes: s.sync_writes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config").join(name)
    }

    #[test]
    fn example_config_in_packaging_is_valid() {
        let p = augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR")).join("../packaging/config/aggregator.toml");
        let cfg = AggregatorConfig::load(&p).expect("packaged example config must be valid");
        // The example shows every option with its default: keep the two in step.
        assert_eq!(cfg, AggregatorConfig::default());
    }

    #[test]
    fn empty_config_gives_defaults() {
        assert_eq!(AggregatorConfig::parse("", "empty").unwrap(), AggregatorConfig::default());
    }

    #[test]
    fn invalid_fixtures_fail_with_expected_message() {
        let dir = augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
        let seen = augur_core::testing::check_invalid_config_fixtures(&dir, AggregatorConfig::load);
        assert!(seen >= 4, "expected at least 4 invalid fixtures, found {seen}");
    }

    #[test]
    fn scoring_on_arrival_can_be_turned_off_or_coalesced_longer() {
        let off = AggregatorConfig::parse("[predict]\nscore_on_arrival = false\n", "off").unwrap();
        assert_eq!(off.predict.engine_config().data_coalesce, None);
        let on = AggregatorConfig::parse("[predict]\narrival_coalesce = \"5ms\"\n", "on").unwrap();
        assert_eq!(on.predict.engine_config().data_coalesce, Some(Duration::from_millis(5)));
    }

    #[test]
    fn valid_fixture_parses_rules() {
        let cfg = AggregatorConfig::load(&fixture("valid-retention.toml")).unwrap();
        let opts = cfg.store_options();
        assert_eq!(opts.retention_rules.len(), 2);
        assert_eq!(opts.retention_rules[0].raw, Duration::from_secs(2 * 86_400));
        assert_eq!(opts.block_points, 600);
    }
}
