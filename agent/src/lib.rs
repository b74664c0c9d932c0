//! augur-agent: samples host and container metrics every second and streams them to the
//! aggregator without losing data while the aggregator is away.
//!
//! Layout:
//! - [`config`]: TOML config (what) and its validation.
//! - [`sampler`]: host (procfs) and container (cgroup v1/v2) samplers; pure parsers.
//! - [`series_table`]: stable small references for series, persisted beside the spool.
//! - [`spool`]: bounded on-disk spool of batches not yet acknowledged.
//! - [`uplink`]: the gRPC stream to the aggregator (the only tonic code).
//! - [`tick`]: the sampling loop that turns samples into spooled batches.
//! - [`workload`]: declared workloads (what commands may act on, health checks, caps).
//! - [`actuator`]: the command executor and its actuators (cgroup, systemd, exec hooks,
//!   HAProxy, config templates, health checks).
//! - [`ledger`]: persistent ledger of applied commands (duplicates, undo).
//!
//! [`run`] wires them together until shutdown.

pub mod actuator;
pub mod config;
pub mod ledger;
pub mod sampler;
pub mod series_table;
pub mod spool;
pub mod tick;
pub mod uplink;
pub mod workload;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::sync::Notify;
use tracing::info;

use crate::config::AgentConfig;
use crate::series_table::SeriesTable;
use crate::spool::{Spool, SpoolConfig};
use crate::uplink::{AgentStats, Identity, UplinkShared};

/// The host id to use: configured, else the hostname.
pub fn resolve_host_id(cfg: &AgentConfig) -> anyhow::Result<String> {
    if !cfg.host_id.is_empty() {
        return Ok(cfg.host_id.clone());
    }
    let name = sysinfo::System::host_name().context("cannot read the hostname; set host_id in the config")?;
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') { c } else { '-' })
        .collect();
    anyhow::ensure!(!clean.is_empty(), "empty hostname; set host_id in the config");
    Ok(clean)
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(cfg: AgentConfig, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let host_id = resolve_host_id(&cfg)?;
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("creating state directory {}", cfg.state_dir.display()))?;
    let spool = Spool::open(
        &cfg.state_dir.join("spool"),
        SpoolConfig { max_bytes: cfg.spool.max_bytes, segment_bytes: cfg.spool.segment_bytes, fsync: cfg.spool.fsync },
    )
    .context("opening the spool")?;
    let pending = spool.stats().records;
    let table =
        SeriesTable::open(&cfg.state_dir.join("series.tbl"), pending == 0).context("opening the series table")?;
    let incarnation = spool.incarnation();
    info!(host = %host_id, incarnation, pending_batches = pending, next_seq = spool.next_seq(), "agent starting");

    let spool = Arc::new(Mutex::new(spool));
    let table = Arc::new(Mutex::new(table));
    let stats = Arc::new(AgentStats::default());
    let new_data = Arc::new(Notify::new());

    let mut cfg = cfg;
    workload::sample_workload_cgroups(&mut cfg.workloads, &mut cfg.containers.cgroups);
    let mut labels = cfg.labels.clone();
    if let Ok(v) = sysinfo::System::kernel_version() {
        labels.entry("kernel".into()).or_insert(v);
    }
    labels.entry("arch".into()).or_insert_with(|| std::env::consts::ARCH.to_owned());
    let mut capabilities: Vec<String> = vec!["metrics.host".into(), "metrics.cgroup".into(), "actions.v1".into()];
    // `criu check` runs once, only when some workload may be checkpointed or restored;
    // the capability is announced only when it passes.
    let criu_probe = if cfg.workloads.iter().any(|w| w.allows("checkpoint") || w.allows("restore")) {
        let p = actuator::criu::probe(&actuator::ProcessRunner, &cfg.criu).await;
        if p.usable {
            capabilities.push("criu".into());
            info!(check = %p.message, "criu usable: checkpoint and restore enabled");
        } else {
            tracing::warn!(reason = %p.message, "criu not usable: checkpoint and restore commands will be refused");
        }
        Some(p)
    } else {
        None
    };
    let identity = Identity {
        host_id: host_id.clone(),
        incarnation,
        labels,
        capabilities,
        workloads: workload::declared(&cfg.workloads),
    };
    let executor = actuator::Executor::open(
        actuator::ExecutorConfig::of_agent(&cfg, &host_id),
        &cfg.workloads,
        Arc::new(actuator::ProcessRunner),
    )
    .context("opening the command ledger")?
    .with_criu(cfg.criu.clone(), criu_probe);
    info!(workloads = cfg.workloads.len(), ledger_entries = executor.ledger().len(), "command executor ready");
    let actions = actuator::spawn(executor).context("starting the command executor")?;

    let ticker = tick::Ticker::start(
        &cfg,
        tick::TickShared {
            spool: spool.clone(),
            table: table.clone(),
            new_data: new_data.clone(),
            stats: stats.clone(),
        },
    )
    .context("starting the sampler thread")?;

    let stop_uplink = Arc::new(Notify::new());
    let uplink = tokio::spawn(uplink::run(
        cfg.aggregator.clone(),
        identity,
        UplinkShared { spool: spool.clone(), table, new_data, stats: stats.clone(), actions },
        stop_uplink.clone(),
    ));
    shutdown.await;
    info!("agent stopping");
    ticker.stop();
    // Give the uplink a moment to deliver what is spooled; anything left stays in the
    // spool and is sent by the next run.
    let last = spool.lock().unwrap_or_else(|e| e.into_inner()).next_seq().saturating_sub(1);
    let drain = tokio::time::Instant::now() + cfg.aggregator.drain_timeout;
    while stats.connected.load(Ordering::Relaxed)
        && stats.acked_sequence.load(Ordering::Relaxed) < last
        && tokio::time::Instant::now() < drain
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop_uplink.notify_one();
    let _ = uplink.await;
    let acked = stats.acked_sequence.load(Ordering::Relaxed);
    if let Err(e) = spool.lock().unwrap_or_else(|e| e.into_inner()).ack(acked) {
        tracing::warn!(error = %e, "cannot release acknowledged batches from the spool");
    }
    tick::write_status(&cfg.state_dir, &host_id, incarnation, &stats, &spool);
    info!(
        samples = stats.samples_produced.load(Ordering::Relaxed),
        batches = stats.batches_produced.load(Ordering::Relaxed),
        acked = stats.acked_sequence.load(Ordering::Relaxed),
        "agent stopped"
    );
    Ok(())
}
