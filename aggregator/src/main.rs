//! `augur-aggregator`: thin binary over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use augur_aggregator::config::AggregatorConfig;
use clap::{Parser, Subcommand};

/// Exit code for a bad config or bad flags (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(name = "augur-aggregator", version, about = "augur aggregator: ingest, storage and queries")]
struct Cli {
    /// TOML config file (see packaging/config/aggregator.toml).
    #[arg(long, short, global = true, env = "AUGUR_AGGREGATOR_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overriding the config (default 0.0.0.0:7461).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory, overriding the config.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write the bound address to this file once listening.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check the config and exit (0 valid, 64 invalid).
    Validate,
    /// Feature engine tools.
    #[command(subcommand)]
    Features(FeaturesCmd),
}

#[derive(Subcommand)]
enum FeaturesCmd {
    /// Print the feature schema a failure-probability model for KIND must carry (JSON, as
    /// in the model's `augur.feature_schema` metadata).
    Schema {
        /// Resource kind: container, host or filesystem.
        #[arg(long, default_value = "container")]
        kind: String,
    },
    /// Write the feature matrix of chosen resources over a time range as CSV, computed by
    /// replaying raw data through the aggregator's own feature engine. Reads recordings
    /// (`--recording`, repeatable) or else the store in the data directory (which must
    /// not be in use by a running aggregator).
    Export {
        /// Recording file(s) (`.augrec.gz`) to replay instead of the store.
        #[arg(long)]
        recording: Vec<PathBuf>,
        /// Resource kind: container, host or filesystem.
        #[arg(long, default_value = "container")]
        kind: String,
        /// Keep resources whose name starts with this (repeatable; default all).
        #[arg(long)]
        resource_prefix: Vec<String>,
        /// First row time, Unix ms (default: the data's start).
        #[arg(long)]
        from_ms: Option<i64>,
        /// End of rows, Unix ms, exclusive (default: the data's end).
        #[arg(long)]
        to_ms: Option<i64>,
        /// Time between rows.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        step: std::time::Duration,
        /// Output CSV file (`-` for stdout).
        #[arg(long, default_value = "-")]
        out: PathBuf,
    },
}

fn load(cli: &Cli) -> Result<AggregatorConfig, String> {
    let mut cfg = match &cli.config {
        Some(p) => AggregatorConfig::load(p).map_err(|e| e.to_string())?,
        None => AggregatorConfig::default(),
    };
    if let Some(l) = cli.listen {
        cfg.listen = l;
    }
    if let Some(d) = &cli.data_dir {
        cfg.data_dir = d.clone();
    }
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("augur-aggregator: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match &cli.cmd {
        Some(Cmd::Validate) => {
            println!("config OK");
            return ExitCode::SUCCESS;
        }
        Some(Cmd::Features(FeaturesCmd::Schema { kind })) => {
            let Some(kind) = augur_aggregator::features::ResourceKind::parse(kind) else {
                eprintln!("augur-aggregator: unknown kind {kind:?} (container, host or filesystem)");
                return ExitCode::from(EXIT_CONFIG);
            };
            let cfg = augur_aggregator::features::FeatureConfig::default();
            let schema = augur_aggregator::predict::onnx::failure_schema(kind, &cfg);
            return match serde_json::to_string_pretty(&schema) {
                Ok(s) => {
                    use std::io::Write as _;
                    // A closed pipe (`| head`) is not an error worth a panic.
                    let _ = writeln!(std::io::stdout(), "{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("augur-aggregator: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Cmd::Features(FeaturesCmd::Export { recording, kind, resource_prefix, from_ms, to_ms, step, out })) => {
            let Some(kind) = augur_aggregator::features::ResourceKind::parse(kind) else {
                eprintln!("augur-aggregator: unknown kind {kind:?} (container, host or filesystem)");
                return ExitCode::from(EXIT_CONFIG);
            };
            let opts = augur_aggregator::features::export::ExportOptions {
                kind,
                resource_prefixes: resource_prefix.clone(),
                from_ms: *from_ms,
                to_ms: *to_ms,
                step_ms: step.as_millis() as i64,
            };
            return match features_export(&cfg, recording, &opts, out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("augur-aggregator: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_json {
        fmt.json().init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("augur-aggregator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ready_file = cli.ready_file.clone();
    let res = rt.block_on(augur_aggregator::run(cfg, shutdown_signal(), move |addr| {
        if let Some(p) = ready_file
            && let Err(e) = std::fs::write(&p, addr.to_string())
        {
            tracing::warn!(path = %p.display(), error = %e, "cannot write ready file");
        }
    }));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("augur-aggregator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `features export`: replays recordings or the store through the feature engine.
fn features_export(
    cfg: &AggregatorConfig,
    recordings: &[PathBuf],
    opts: &augur_aggregator::features::export::ExportOptions,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use augur_aggregator::features::{FeatureConfig, export};
    let mut data = Vec::new();
    if recordings.is_empty() {
        let store = augur_aggregator::storage::rocks::RocksStore::open(&cfg.data_dir, cfg.store_options())
            .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;
        data = export::from_store(&store, opts.from_ms.unwrap_or(i64::MIN), opts.to_ms.unwrap_or(i64::MAX))?;
    } else {
        for p in recordings {
            let rec = augur_aggregator::recording::Recording::load(p)?;
            data.extend(export::from_recording(rec));
        }
    }
    let mut w: Box<dyn std::io::Write> = if out.as_os_str() == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        let f = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        Box::new(std::io::BufWriter::new(f))
    };
    let stats = export::export(&data, &FeatureConfig::default(), opts, &mut *w)?;
    w.flush().context("writing the output")?;
    eprintln!(
        "features export: {} rows x {} features from {} series ({} points replayed)",
        stats.rows,
        stats.columns,
        data.len(),
        stats.points_replayed
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
