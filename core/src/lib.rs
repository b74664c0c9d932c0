//! Domain types shared by the augur agent, aggregator and augurctl.
//!
//! Layout:
//! - [`command`]: the command vocabulary (kinds and arguments) agent and aggregator share.
//! - [`series`]: series identity (resource, metric, unit, labels) and metric kinds.
//! - [`units`]: human-readable sizes (`256MiB`) and durations (`30s`) for config files.
//! - [`time`]: wall-clock helpers in Unix milliseconds, the unit used on the wire.
//! - [`testing`]: fixture helpers for the workspace's tests.
//!
//! Nothing here does I/O; both sides depend on it, so it stays small.

pub mod command;
pub mod series;
pub mod testing;
pub mod time;
pub mod units;

pub use series::{MetricKind, SeriesKey};
