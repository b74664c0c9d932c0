//! `augur-bench ingest`: aggregator ingest throughput. Starts the real
//! `augur-aggregator` binary on a temporary data directory, runs the load generator
//! ([`crate::loadgen`]) as a second process of this binary, reads the CPU both
//! processes used over the measured window, and the aggregator's memory at the end.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::loadgen::LoadConfig;
use crate::procs::{
    ChildGuard, CpuMeter, current_exe, interrupted, mib, round, start_aggregator, status_kib, thread_cpu_pct,
    thread_cpu_ticks, work_dir,
};
use crate::report::Report;

/// Runs the ingest bench with the aggregator from `bin_dir`.
pub fn run(bin_dir: &Path, load: &LoadConfig) -> anyhow::Result<Report> {
    let work = work_dir("augur-bench-ingest-")?;
    let (mut aggregator, addr) = start_aggregator(bin_dir, work.path())?;
    eprintln!("ingest: aggregator pid {} listening on {addr}", aggregator.pid());
    let url = format!("http://{addr}");
    let mut cmd = Command::new(current_exe()?);
    cmd.arg("loadgen")
        .arg("--url")
        .arg(&url)
        .arg("--agents")
        .arg(load.agents.to_string())
        .arg("--series")
        .arg(load.series.to_string())
        .arg("--duration")
        .arg(format!("{}ms", load.duration.as_millis()))
        .arg("--warmup")
        .arg(format!("{}ms", load.warmup.as_millis()))
        .arg("--window")
        .arg(load.window.to_string())
        .arg("--connections")
        .arg(load.connections.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut loadgen = ChildGuard::spawn("augur-bench loadgen", &mut cmd)?;
    let stdout = loadgen.child_mut().stdout.take().context("loadgen stdout was not captured")?;
    let (line_tx, line_rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut meters: Option<(CpuMeter, CpuMeter)> = None;
    let mut cpu: Option<(f64, f64)> = None;
    let mut last_line = None;
    let mut threads_before = None;
    // Generous: connecting a thousand agents takes a while on a busy machine.
    let deadline = Instant::now() + load.warmup + load.duration + Duration::from_secs(300);
    loop {
        if interrupted() {
            bail!("interrupted");
        }
        if Instant::now() > deadline {
            bail!("the load generator did not finish in time");
        }
        let line = match line_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                aggregator.check_running()?;
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match line.trim() {
            "MEASURE_START" => {
                meters = Some((CpuMeter::start(aggregator.pid())?, CpuMeter::start(loadgen.pid())?));
                threads_before = Some((thread_cpu_ticks(aggregator.pid()), Instant::now()));
            }
            "MEASURE_END" => {
                if let Some((a, l)) = &meters {
                    cpu = Some((a.pct_of_core()?, l.pct_of_core()?));
                }
                if let Some((before, at)) = &threads_before {
                    let pct = thread_cpu_pct(before, &thread_cpu_ticks(aggregator.pid()), at.elapsed());
                    let text: Vec<String> = pct.iter().map(|(n, p)| format!("{n} {p:.0}%")).collect();
                    eprintln!("ingest: aggregator CPU by thread name (% of a core): {}", text.join(", "));
                }
            }
            _ => last_line = Some(line),
        }
    }
    let _ = reader.join();
    aggregator.check_running()?;
    let hwm_kib = status_kib(aggregator.pid(), "VmHWM")?;
    let rss_kib = status_kib(aggregator.pid(), "VmRSS")?;
    loadgen.stop(Duration::from_secs(10));
    // After a run the aggregator may take a while to stop (blocking work in flight);
    // say how long, it is worth knowing.
    let stopping = Instant::now();
    aggregator.stop(Duration::from_secs(60));
    eprintln!("ingest: the aggregator took {:.1} s to stop after SIGTERM", stopping.elapsed().as_secs_f64());

    let text = last_line.context("the load generator printed no result")?;
    let lg: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("load generator result {text:?}"))?;
    let (agg_cpu, lg_cpu) = cpu.unwrap_or((f64::NAN, f64::NAN));
    eprintln!(
        "ingest: over the measured window the aggregator used {agg_cpu:.0}% of a core and the \
         load generator {lg_cpu:.0}% ({} cores online); aggregator VmHWM {:.1} MiB, VmRSS {:.1} MiB",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        hwm_kib as f64 / 1024.0,
        rss_kib as f64 / 1024.0
    );
    eprintln!("ingest: load generator said {lg}");
    let field = |k: &str| lg.get(k).cloned().unwrap_or(serde_json::Value::Null);
    Ok(Report::new("ingest")
        .with("samples_per_sec", field("samples_per_sec"))
        .with("ack_p50_ms", field("ack_p50_ms"))
        .with("ack_p99_ms", field("ack_p99_ms"))
        .with("aggregator_rss_mib", round(mib(rss_kib as f64 * 1024.0), 1))
        .with("agents", load.agents)
        .with("series_per_agent", load.series)
        .with("duration_s", load.duration.as_secs_f64())
        .with("aggregator_hwm_mib", round(mib(hwm_kib as f64 * 1024.0), 1))
        .with("aggregator_cpu_pct_of_core", round(agg_cpu, 1))
        .with("loadgen_cpu_pct_of_core", round(lg_cpu, 1))
        .with("window", load.window)
        .with("connections", field("connections"))
        .with("rejected_samples", field("rejected_samples"))
        .with("agents_failed", field("agents_failed")))
}
