//! `augur-agent`: thin binary over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use augur_agent::config::AgentConfig;
use clap::{Parser, Subcommand};

/// Exit code for a bad config or bad flags (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(name = "augur-agent", version, about = "augur agent: host and container metrics to the aggregator")]
struct Cli {
    /// TOML config file (see packaging/config/agent.toml).
    #[arg(long, short, global = true, env = "AUGUR_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Aggregator URL, overriding the config (e.g. http://127.0.0.1:7461).
    #[arg(long)]
    aggregator: Option<String>,
    /// State directory, overriding the config.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Host id, overriding the config.
    #[arg(long)]
    host_id: Option<String>,
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

fn load(cli: &Cli) -> Result<AgentConfig, String> {
    let mut cfg = match &cli.config {
        Some(p) => AgentConfig::load(p).map_err(|e| e.to_string())?,
        None => AgentConfig::default(),
    };
    if let Some(a) = &cli.aggregator {
        cfg.aggregator.url = a.clone();
    }
    if let Some(d) = &cli.state_dir {
        cfg.state_dir = d.clone();
    }
    if let Some(h) = &cli.host_id {
        cfg.host_id = h.clone();
    }
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("augur-agent: {e}");
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
    // The agent is small: one worker thread for the uplink, samplers on their own thread.
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("augur-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(augur_agent::run(cfg, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("augur-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
}
