//! Health checks: HTTP GET expecting a 2xx status, a TCP connect, or a command exiting 0,
//! each attempt bounded by the check's timeout, attempts spaced by its interval, and the
//! whole bounded by the command's deadline.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::exec::Runner;
use crate::workload::{HealthConfig, HealthProbe};

/// What a check does, for reports.
pub fn describe(h: &HealthConfig) -> String {
    match h.probe() {
        Ok(HealthProbe::Http { addr, path, .. }) => format!("GET http://{addr}{path} expecting 2xx"),
        Ok(HealthProbe::Tcp { addr }) => format!("TCP connect to {addr}"),
        Ok(HealthProbe::Command { argv }) => format!("run {} expecting exit 0", super::shell_words(&argv)),
        Err(e) => e,
    }
}

/// One attempt.
pub async fn probe_once(p: &HealthProbe, runner: &dyn Runner, timeout: Duration) -> Result<String, String> {
    match p {
        HealthProbe::Tcp { addr } => match tokio::time::timeout(timeout, TcpStream::connect(addr.as_str())).await {
            Ok(Ok(_)) => Ok(format!("connected to {addr}")),
            Ok(Err(e)) => Err(format!("connect {addr}: {e}")),
            Err(_) => Err(format!("connect {addr}: no answer within {timeout:?}")),
        },
        HealthProbe::Http { addr, host, path } => {
            match tokio::time::timeout(timeout, http_status(addr, host, path)).await {
                Ok(Ok(code)) if (200..300).contains(&code) => Ok(format!("GET {path} answered {code}")),
                Ok(Ok(code)) => Err(format!("GET http://{addr}{path} answered {code}")),
                Ok(Err(e)) => Err(format!("GET http://{addr}{path}: {e}")),
                Err(_) => Err(format!("GET http://{addr}{path}: no answer within {timeout:?}")),
            }
        }
        HealthProbe::Command { argv } => {
            let out = runner.run(argv, timeout).await?;
            match out.code {
                Some(0) => Ok(format!("{} exited 0", argv[0])),
                c => Err(format!(
                    "{} exited with {}{}",
                    argv[0],
                    c.map_or("a signal".into(), |c| c.to_string()),
                    if out.stderr.is_empty() { String::new() } else { format!(": {}", out.stderr) }
                )),
            }
        }
    }
}

async fn http_status(addr: &str, host: &str, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: augur-agent\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|c| c.parse::<u16>().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("not an HTTP answer: {line:?}")),
    }
}

/// Runs the check until it passes, its attempts are used up, or `deadline` comes.
pub async fn check(h: &HealthConfig, runner: &dyn Runner, deadline: Instant) -> Result<String, String> {
    let probe = h.probe()?;
    let mut last = String::from("no attempt fitted before the deadline");
    for attempt in 1..=h.attempts {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{last} (deadline reached after {} attempt(s))", attempt - 1));
        }
        match probe_once(&probe, runner, h.timeout.min(left)).await {
            Ok(m) => return Ok(m),
            Err(e) => last = e,
        }
        if attempt < h.attempts {
            let pause = h.interval.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
    }
    Err(format!("{last} ({} attempt(s))", h.attempts))
}
