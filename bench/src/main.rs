//! `augur-bench`: thin binary over the library; one subcommand per bench.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use augur_bench::{agent, export, ingest, loadgen, predict, procs, react, seal, storage};
use clap::{Parser, Subcommand};

/// The recording committed with the sources, used by `storage` by default.
const DEFAULT_RECORDING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/agent-recording-30m.augrec.gz");

#[derive(Parser)]
#[command(
    name = "augur-bench",
    version,
    about = "augur benchmarks: progress on stderr, one JSON result as the last line of stdout"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Aggregator ingest throughput and ack latency under many simulated agents.
    Ingest {
        /// Directory holding the augur-aggregator binary.
        #[arg(long)]
        bin_dir: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Load generator for `ingest` (runs in its own process; not for direct use).
    #[command(hide = true)]
    Loadgen {
        /// Aggregator URL, e.g. http://127.0.0.1:7461.
        #[arg(long)]
        url: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Export a host's recent raw data from a running aggregator into a recording.
    Export {
        /// Aggregator URL.
        #[arg(long, default_value = "http://127.0.0.1:7461")]
        aggregator: String,
        /// Host id whose series are exported.
        #[arg(long)]
        host: String,
        /// How far back to export.
        #[arg(long, default_value = "40m", value_parser = humantime::parse_duration)]
        since: Duration,
        /// Output file (gzip).
        #[arg(long)]
        out: PathBuf,
    },
    /// Bytes per sample of a recording written into RocksStore, sealed and compacted.
    Storage {
        /// Recording to replay.
        #[arg(long, default_value = DEFAULT_RECORDING)]
        recording: PathBuf,
    },
    /// Feature updates and failure-probability inference for many resources per tick.
    Predict {
        /// Model manifest to serve (the shipped models by default).
        #[arg(long, default_value = "models/manifest.toml")]
        models: PathBuf,
        /// Container resources, 12 series each.
        #[arg(long, default_value_t = 10_000)]
        resources: usize,
        /// Unmeasured simulated seconds first (fills the windows).
        #[arg(long, default_value_t = 30)]
        warmup: usize,
        /// Measured ticks.
        #[arg(long, default_value_t = 60)]
        ticks: usize,
    },
    /// Steady-state sealing throughput of the store's maintenance.
    Seal {
        /// Series written at 1 Hz.
        #[arg(long, default_value_t = 20_000)]
        series: usize,
        /// Minutes of data time simulated.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// Points per sealed block.
        #[arg(long, default_value_t = 600)]
        block_points: usize,
        /// Simulated time between maintenance passes.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        maintain_every: Duration,
    },
    /// Agent CPU and memory watching cgroups, next to node_exporter (needs root).
    Agent {
        /// Directory holding augur-aggregator and augur-agent.
        #[arg(long)]
        bin_dir: PathBuf,
        /// Measured time, after a 5 s warm-up.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Cgroups to create for the agent to watch.
        #[arg(long, default_value_t = 50)]
        cgroups: usize,
    },
    /// Closed-loop reaction time: threshold-crossing sample to the agent's command.
    React {
        /// Directory holding the augur-aggregator binary.
        #[arg(long)]
        bin_dir: PathBuf,
        /// Model manifest the aggregator serves (the shipped models by default).
        #[arg(long, default_value = "models/manifest.toml")]
        models: PathBuf,
        /// Threshold crossings to measure, one fresh workload each.
        #[arg(long, default_value_t = 240)]
        trials: usize,
        /// Simulated hosts (one stream each) the workloads are spread over.
        #[arg(long, default_value_t = 4)]
        hosts: usize,
        /// Longest wait for one trial's command.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Simulated agents, one stream each.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Series per agent (one point each per batch).
    #[arg(long, default_value_t = 100)]
    series: usize,
    /// Measured time, after the warm-up.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Not measured: time before the measured window.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Unacknowledged batches per agent.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// HTTP/2 connections the streams share round-robin (0 = one per agent).
    #[arg(long, default_value_t = 16)]
    connections: usize,
}

impl LoadArgs {
    fn config(&self, url: String) -> loadgen::LoadConfig {
        loadgen::LoadConfig {
            url,
            agents: self.agents,
            series: self.series,
            duration: self.duration,
            warmup: self.warmup,
            window: self.window,
            connections: self.connections,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    procs::catch_interrupts();
    let result = match cli.cmd {
        Cmd::Ingest { bin_dir, load } => ingest::run(&bin_dir, &load.config(String::new())),
        Cmd::Loadgen { url, load } => loadgen::run(load.config(url)),
        Cmd::Export { aggregator, host, since, out } => export::run(&aggregator, &host, since, &out),
        Cmd::Storage { recording } => storage::run(&recording),
        Cmd::Predict { models, resources, warmup, ticks } => predict::run(&models, resources, warmup, ticks),
        Cmd::Seal { series, minutes, block_points, maintain_every } => {
            seal::run(&seal::SealConfig { series, minutes, block_points, maintain_every })
        }
        Cmd::Agent { bin_dir, duration, cgroups } => agent::run(&bin_dir, duration, cgroups),
        Cmd::React { bin_dir, models, trials, hosts, timeout } => {
            react::run(&react::ReactConfig { bin_dir, models, trials, hosts, timeout })
        }
    };
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("augur-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
