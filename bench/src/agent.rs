//! `augur-bench agent`: what the agent costs on a host, next to Prometheus
//! node_exporter scraped once per second. Creates cgroups with one `sleep` each,
//! starts the real aggregator and agent (watching those cgroups) and node_exporter,
//! and after a warm-up reads both processes' CPU time and resident memory from
//! `/proc`. Checks that the agent really reported the cgroups by asking the
//! aggregator's Query service.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use augur_proto::v1;

use crate::cgroups::{self, BenchCgroups};
use crate::export::query_client;
use crate::procs::{
    ChildGuard, CpuMeter, free_port, interrupted, round, sleep_interruptible, start_aggregator, status_kib, work_dir,
};
use crate::report::Report;

/// Parent cgroup of the bench's groups, and the agent's watch prefix.
pub const CGROUP_PREFIX: &str = "augur-bench";
/// Host id the bench's agent reports under.
const HOST_ID: &str = "augur-bench-host";
/// Where Debian's prometheus-node-exporter package puts the binary.
pub const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const WARMUP: Duration = Duration::from_secs(5);

/// Counters of the once-per-second node_exporter scraper.
#[derive(Default)]
struct ScrapeStats {
    ok: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
}

/// One `GET /metrics` over a plain TCP stream; returns the response size.
fn scrape(addr: SocketAddr) -> anyhow::Result<u64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")?;
    let mut body = Vec::with_capacity(256 << 10);
    s.read_to_end(&mut body)?;
    if !body.starts_with(b"HTTP/1.1 200") && !body.starts_with(b"HTTP/1.0 200") {
        bail!("unexpected response: {}", String::from_utf8_lossy(&body[..body.len().min(80)]));
    }
    Ok(body.len() as u64)
}

/// Scrapes `addr` once per second until `stop` is set.
fn spawn_scraper(addr: SocketAddr, stop: Arc<AtomicBool>, stats: Arc<ScrapeStats>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match scrape(addr) {
                Ok(n) => {
                    stats.ok.fetch_add(1, Ordering::Relaxed);
                    stats.bytes.fetch_add(n, Ordering::Relaxed);
                }
                Err(_) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            next += Duration::from_secs(1);
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
    })
}

fn start_agent(bin_dir: &Path, work: &Path, aggregator: SocketAddr) -> anyhow::Result<ChildGuard> {
    let bin = bin_dir.join("augur-agent");
    if !bin.is_file() {
        bail!("{} not found (build it first)", bin.display());
    }
    let config = work.join("agent.toml");
    fs::write(
        &config,
        format!(
            "host_id = \"{HOST_ID}\"\n\
             state_dir = \"{}\"\n\
             interval = \"1s\"\n\
             [aggregator]\n\
             url = \"http://{aggregator}\"\n\
             [containers]\n\
             watch_prefixes = [\"{CGROUP_PREFIX}\"]\n",
            work.join("agent-state").display()
        ),
    )
    .context("writing agent.toml")?;
    let log = fs::File::create(work.join("agent.log")).context("creating agent.log")?;
    ChildGuard::spawn(
        "augur-agent",
        Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
    )
}

fn start_node_exporter(work: &Path) -> anyhow::Result<(ChildGuard, SocketAddr)> {
    if !Path::new(NODE_EXPORTER).is_file() {
        bail!(
            "{NODE_EXPORTER} not found: install the Debian package prometheus-node-exporter \
             (`make deps` does)"
        );
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let log = fs::File::create(work.join("node_exporter.log")).context("creating its log")?;
    let mut guard = ChildGuard::spawn(
        "node_exporter",
        Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while scrape(addr).is_err() {
        guard.check_running()?;
        if Instant::now() > deadline {
            bail!("node_exporter did not answer on {addr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((guard, addr))
}

/// Resources of the bench host whose name starts with `cgroup/<prefix>/`.
async fn cgroups_seen(url: &str) -> anyhow::Result<usize> {
    let mut client = query_client(url).await?;
    let resources = client
        .list_resources(v1::ListResourcesRequest { host_id: HOST_ID.to_owned() })
        .await
        .context("ListResources")?
        .into_inner()
        .resources;
    let prefix = format!("cgroup/{CGROUP_PREFIX}/");
    Ok(resources.iter().filter(|r| r.resource.starts_with(&prefix)).count())
}

fn mean(v: &[u64]) -> f64 {
    if v.is_empty() { f64::NAN } else { v.iter().sum::<u64>() as f64 / v.len() as f64 }
}

/// Runs the agent bench with binaries from `bin_dir`.
pub fn run(bin_dir: &Path, duration: Duration, cgroup_count: usize) -> anyhow::Result<Report> {
    cgroups::require_root()?;
    let hierarchy = cgroups::detect()?;
    eprintln!("agent: cgroup hierarchy {hierarchy:?}");
    // Dropped last (locals drop in reverse order): processes stop before the cgroups go.
    let _cgroups = BenchCgroups::create(&hierarchy, CGROUP_PREFIX, cgroup_count)?;
    eprintln!("agent: created {cgroup_count} cgroups under {CGROUP_PREFIX}/, one sleep in each");
    let work = work_dir("augur-bench-agent-")?;
    let (mut aggregator, agg_addr) = start_aggregator(bin_dir, work.path())?;
    let mut agent = start_agent(bin_dir, work.path(), agg_addr)?;
    let (mut exporter, exporter_addr) = start_node_exporter(work.path())?;
    eprintln!(
        "agent: aggregator {agg_addr} (pid {}), agent pid {}, node_exporter {exporter_addr} (pid {})",
        aggregator.pid(),
        agent.pid(),
        exporter.pid()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(ScrapeStats::default());
    let scraper = spawn_scraper(exporter_addr, stop.clone(), scrapes.clone());
    let result = measure(&mut agent, &mut exporter, duration);
    stop.store(true, Ordering::Relaxed);
    let _ = scraper.join();
    let (agent_cpu, agent_rss, ne_cpu, ne_rss) = result?;
    aggregator.check_running()?;

    let url = format!("http://{agg_addr}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")?;
    let seen = rt.block_on(cgroups_seen(&url))?;
    // Closes the query connection, which would hold off the aggregator's graceful stop.
    drop(rt);
    let (ok, failed) = (scrapes.ok.load(Ordering::Relaxed), scrapes.failed.load(Ordering::Relaxed));
    eprintln!(
        "agent: agent {agent_cpu:.2}% of a core, {agent_rss:.1} MiB; node_exporter {ne_cpu:.2}% \
         of a core, {ne_rss:.1} MiB ({ok} scrapes, {failed} failed, {:.0} KiB each); \
         aggregator saw {seen}/{cgroup_count} cgroups",
        scrapes.bytes.load(Ordering::Relaxed) as f64 / ok.max(1) as f64 / 1024.0
    );
    if seen < cgroup_count {
        eprintln!(
            "agent: WARNING: only {seen} of {cgroup_count} cgroups reached the aggregator \
             (agent log: {})",
            work.path().join("agent.log").display()
        );
    }
    agent.stop(Duration::from_secs(10));
    exporter.stop(Duration::from_secs(5));
    aggregator.stop(Duration::from_secs(10));
    Ok(Report::new("agent")
        .with("cpu_pct_of_core", round(agent_cpu, 2))
        .with("rss_mib", round(agent_rss, 1))
        .with("node_exporter_cpu_pct_of_core", round(ne_cpu, 2))
        .with("node_exporter_rss_mib", round(ne_rss, 1))
        .with("cgroups_seen", seen)
        .with("duration_s", duration.as_secs_f64())
        .with("cgroups", cgroup_count)
        .with("node_exporter_scrapes", ok)
        .with("node_exporter_scrape_failures", failed))
}

/// Warm-up, then CPU % of a core and mean RSS (MiB) of the agent and the exporter.
fn measure(
    agent: &mut ChildGuard,
    exporter: &mut ChildGuard,
    duration: Duration,
) -> anyhow::Result<(f64, f64, f64, f64)> {
    sleep_interruptible(WARMUP)?;
    agent.check_running()?;
    exporter.check_running()?;
    eprintln!("agent: warm-up done, measuring for {} s", duration.as_secs_f64());
    let agent_cpu = CpuMeter::start(agent.pid())?;
    let ne_cpu = CpuMeter::start(exporter.pid())?;
    let (mut agent_rss, mut ne_rss) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < duration {
        if interrupted() {
            bail!("interrupted");
        }
        agent_rss.push(status_kib(agent.pid(), "VmRSS")?);
        ne_rss.push(status_kib(exporter.pid(), "VmRSS")?);
        next += Duration::from_secs(1);
        let end = (start + duration).min(next);
        sleep_interruptible(end.saturating_duration_since(Instant::now()))?;
    }
    agent.check_running()?;
    exporter.check_running()?;
    Ok((agent_cpu.pct_of_core()?, mean(&agent_rss) / 1024.0, ne_cpu.pct_of_core()?, mean(&ne_rss) / 1024.0))
}
