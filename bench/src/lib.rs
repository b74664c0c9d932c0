//! augur benchmarks. They measure and print; none is a timed test.
//!
//! Every bench prints progress to stderr and one JSON object as the last line of
//! stdout (see `main.rs`), so scripts can keep results with `tail -n1`.
//!
//! Layout:
//! - [`ingest`]: aggregator ingest throughput and ack latency (real aggregator binary,
//!   load from a separate [`loadgen`] process).
//! - [`loadgen`]: simulated agents streaming batches over `Telemetry.Connect`.
//! - [`storage`]: bytes per sample of a real recording written into `RocksStore`.
//! - [`predict`]: feature updates and ONNX inference for many resources per tick.
//! - [`seal`]: steady-state sealing throughput of `RocksStore` (maintenance).
//! - [`export`]: makes such a recording from a running aggregator.
//! - [`recording`]: the recording file format (gzip, lossless).
//! - [`react`]: closed-loop reaction time, threshold-crossing sample to the agent's command.
//! - [`agent`]: agent CPU and memory next to node_exporter, with cgroups to watch.
//! - [`cgroups`]: creating and removing the agent bench's cgroups.
//! - [`report`]: the ordered JSON result line.
//! - [`procs`]: starting binaries, stopping them for sure, reading `/proc`.

pub mod agent;
pub mod cgroups;
pub mod export;
pub mod ingest;
pub mod loadgen;
pub mod predict;
pub mod procs;
pub mod react;
/// The recording format lives with the aggregator (its feature export reads it too).
pub use augur_aggregator::recording;
pub mod report;
pub mod seal;
pub mod storage;
