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
    if let Some(Cmd::Validate) = cli.cmd {
        println!("config OK");
        return ExitCode::SUCCESS;
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
