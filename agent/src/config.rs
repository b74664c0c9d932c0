//! Agent configuration: a TOML file (what to sample, where to send it) plus flags.
//!
//! Parsed with `deny_unknown_fields`, then [`AgentConfig::validate`]d. Every option is
//! documented in `packaging/config/agent.toml`.

use augur_core::units;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sampler::{ContainerSamplerConfig, HostSamplerConfig};
use crate::workload::WorkloadConfig;

/// Aggregator address used when neither config nor flag names one.
pub const DEFAULT_AGGREGATOR: &str = "http://127.0.0.1:7461";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Host identity; empty means the machine's hostname.
    pub host_id: String,
    /// Labels sent with Hello (e.g. env, zone, tier).
    pub labels: BTreeMap<String, String>,
    /// State directory: spool, series table, status file.
    pub state_dir: PathBuf,
    /// Sampling interval (at least 100ms).
    #[serde(with = "units::duration")]
    pub interval: Duration,
    pub aggregator: UplinkConfig,
    pub spool: SpoolSection,
    pub host: HostSamplerConfig,
    pub containers: ContainerSamplerConfig,
    pub actions: ActionsSection,
    /// CRIU checkpoint/restore of stateful workloads.
    pub criu: crate::actuator::criu::CriuConfig,
    /// Workloads the aggregator may act on (`[[workload]]` tables).
    #[serde(rename = "workload", skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadConfig>,
}

/// `[actions]`: how commands from the aggregator are executed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionsSection {
    /// Commands waiting for the executor; more are refused ("agent busy") and counted.
    pub queue: usize,
    /// Applied commands remembered in the ledger (duplicate detection and undo); the
    /// oldest are forgotten first.
    pub ledger_max_entries: usize,
    /// Time allowed for undoing a change (after a failed health check, or a rollback command).
    #[serde(with = "units::duration")]
    pub undo_timeout: Duration,
    /// The systemctl binary.
    pub systemctl: String,
}

impl Default for ActionsSection {
    fn default() -> Self {
        ActionsSection {
            queue: 16,
            ledger_max_entries: 10_000,
            undo_timeout: Duration::from_secs(30),
            systemctl: "systemctl".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// Aggregator URL, e.g. `http://aggregator.example:7461`.
    pub url: String,
    #[serde(with = "units::duration")]
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles up to `backoff_max`, with jitter.
    #[serde(with = "units::duration")]
    pub backoff_initial: Duration,
    #[serde(with = "units::duration")]
    pub backoff_max: Duration,
    /// Batches sent but not yet acknowledged.
    pub max_in_flight: usize,
    /// Heartbeat interval.
    #[serde(with = "units::duration")]
    pub heartbeat: Duration,
    /// At shutdown, wait this long for the aggregator to acknowledge spooled batches.
    #[serde(with = "units::duration")]
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSection {
    /// Disk space for batches the aggregator has not acknowledged; the oldest go first
    /// when it is full (counted and reported).
    #[serde(with = "units::bytes")]
    pub max_bytes: u64,
    #[serde(with = "units::bytes")]
    pub segment_bytes: u64,
    /// fsync every batch (survives power loss; costs a disk flush per second).
    pub fsync: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            host_id: String::new(),
            labels: BTreeMap::new(),
            state_dir: PathBuf::from("/var/lib/augur-agent"),
            interval: Duration::from_secs(1),
            aggregator: UplinkConfig::default(),
            spool: SpoolSection::default(),
            host: HostSamplerConfig::default(),
            containers: ContainerSamplerConfig::default(),
            actions: ActionsSection::default(),
            criu: Default::default(),
            workloads: Vec::new(),
        }
    }
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            url: DEFAULT_AGGREGATOR.into(),
            connect_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_in_flight: 32,
            heartbeat: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection { max_bytes: 256 << 20, segment_bytes: 4 << 20, fsync: false }
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

impl AgentConfig {
    /// Reads, parses and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: AgentConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: origin.to_owned(), message: e.to_string() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.interval < Duration::from_millis(100) {
            return bad(format!("interval must be at least 100ms (got {})", units::Human(self.interval)));
        }
        if self.interval > Duration::from_secs(3600) {
            return bad(format!("interval must be at most 1h (got {})", units::Human(self.interval)));
        }
        if !self.host_id.is_empty()
            && !self.host_id.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
        {
            return bad(format!("host_id {:?} may only contain [A-Za-z0-9._:-]", self.host_id));
        }
        let u = &self.aggregator.url;
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return bad(format!("aggregator.url {u:?} must start with http:// or https://"));
        }
        if self.aggregator.max_in_flight == 0 {
            return bad("aggregator.max_in_flight must be > 0".into());
        }
        if self.aggregator.backoff_initial.is_zero() || self.aggregator.backoff_max < self.aggregator.backoff_initial {
            return bad("aggregator.backoff_initial must be > 0 and <= backoff_max".into());
        }
        if self.spool.max_bytes < (1 << 20) {
            return bad(format!(
                "spool.max_bytes must be at least 1MiB (got {})",
                units::format_bytes(self.spool.max_bytes)
            ));
        }
        if self.spool.segment_bytes < (64 << 10) || self.spool.segment_bytes > self.spool.max_bytes {
            return bad("spool.segment_bytes must be at least 64KiB and at most spool.max_bytes".into());
        }
        if self.state_dir.as_os_str().is_empty() {
            return bad("state_dir must not be empty".into());
        }
        if self.actions.queue == 0 || self.actions.queue > 4096 {
            return bad(format!("actions.queue must be between 1 and 4096 (got {})", self.actions.queue));
        }
        if self.actions.ledger_max_entries < 16 {
            return bad(format!(
                "actions.ledger_max_entries must be at least 16 (got {})",
                self.actions.ledger_max_entries
            ));
        }
        if self.actions.undo_timeout.is_zero() {
            return bad("actions.undo_timeout must be above 0".into());
        }
        if self.actions.systemctl.is_empty() {
            return bad("actions.systemctl must name the systemctl binary".into());
        }
        self.criu.validate().map_err(ConfigError::Invalid)?;
        crate::workload::validate_workloads(&self.workloads).map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_in_packaging_is_valid() {
        let p = augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR")).join("../packaging/config/agent.toml");
        let cfg = AgentConfig::load(&p).expect("packaged example config must be valid");
        // The example shows every option with its default: keep the two in step.
        assert_eq!(cfg, AgentConfig::default());
    }

    #[test]
    fn empty_config_gives_defaults() {
        assert_eq!(AgentConfig::parse("", "empty").unwrap(), AgentConfig::default());
    }

    #[test]
    fn invalid_fixtures_fail_with_expected_message() {
        let dir = augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
        let seen = augur_core::testing::check_invalid_config_fixtures(&dir, AgentConfig::load);
        assert!(seen >= 4, "expected at least 4 invalid fixtures, found {seen}");
    }

    #[test]
    fn configs_with_workloads_round_trip_through_toml() {
        // Tests and tools may build a config in code and write it out for the binary.
        let p = augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/config/valid-workloads.toml");
        let cfg = AgentConfig::load(&p).expect("valid");
        let text = toml::to_string(&cfg).expect("serialize");
        assert_eq!(AgentConfig::parse(&text, "round trip").expect("parse back"), cfg);
    }

    #[test]
    fn workload_fixture_is_valid_and_complete() {
        let p = augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/config/valid-workloads.toml");
        let cfg = AgentConfig::load(&p).expect("valid-workloads.toml must be valid");
        let names: Vec<&str> = cfg.workloads.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["web", "db", "lb"]);
        let web = &cfg.workloads[0];
        assert_eq!(web.limits.memory_max, 2 << 30);
        assert_eq!(web.health.as_ref().map(|h| h.kind()), Some("http"));
        assert_eq!(cfg.workloads[2].templates[0].keep, 3);
        assert!(cfg.workloads[1].allows("checkpoint") && cfg.criu.tcp_established);
        // The same text with the packaged example's workload section uncommented is valid too.
        let example = std::fs::read_to_string(
            augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR")).join("../packaging/config/agent.toml"),
        )
        .expect("packaged example");
        let start = example.find("# [[workload]]").expect("the example documents [[workload]]");
        let uncommented: String = example[start..]
            .lines()
            .filter(|l| !l.starts_with("##"))
            .map(|l| l.strip_prefix("# ").or_else(|| l.strip_prefix('#')).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let cfg = AgentConfig::parse(&uncommented, "example workload").expect("the documented workload is valid");
        assert_eq!(cfg.workloads.len(), 1);
    }
}
