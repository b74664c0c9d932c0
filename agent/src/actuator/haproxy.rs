//! Traffic switching through the HAProxy runtime API (admin-level stats socket, unix path
//! or `host:port`), one command per connection (HAProxy answers and closes).
//!
//! Supported on HAProxy 2.6: `set server B/S state ready|drain|maint`, `set server B/S
//! weight N`, `add server B/S ADDR weight N` (a new server starts in maintenance, so it is
//! then set ready), `del server B/S` (only servers in maintenance: the plan sets maint
//! first). The previous state, weight and address come from `show servers state B` and
//! drive the undo. The runtime API answers an empty line on success and a message on
//! error (except `add`/`del`, which confirm).

use std::collections::BTreeMap;
use std::time::Duration;

use augur_core::command::{ServerState, TrafficChange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Plan, Step};
use crate::workload::HaproxyConfig;

/// Answers that mean success although they are not empty.
const CONFIRMATIONS: &[&str] = &["New server registered.", "Server deleted."];

/// Sends one command and returns HAProxy's answer; `Err` on I/O failure, timeout, or an
/// answer that is an error message.
pub async fn run_command(socket: &str, command: &str, timeout: Duration) -> Result<String, String> {
    let answer = tokio::time::timeout(timeout, exchange(socket, command))
        .await
        .map_err(|_| format!("haproxy {socket}: no answer to {command:?} within {timeout:?}"))??;
    let t = answer.trim();
    if command.starts_with("show ") || t.is_empty() || CONFIRMATIONS.contains(&t) {
        Ok(answer)
    } else {
        Err(format!("haproxy refused {command:?}: {t}"))
    }
}

async fn exchange(socket: &str, command: &str) -> Result<String, String> {
    let line = format!("{command}\n");
    let mut buf = Vec::new();
    let io = |e: std::io::Error| format!("haproxy {socket}: {e}");
    if socket.starts_with('/') {
        let mut s = tokio::net::UnixStream::connect(socket).await.map_err(io)?;
        s.write_all(line.as_bytes()).await.map_err(io)?;
        s.read_to_end(&mut buf).await.map_err(io)?;
    } else {
        let mut s = tokio::net::TcpStream::connect(socket).await.map_err(io)?;
        s.write_all(line.as_bytes()).await.map_err(io)?;
        s.read_to_end(&mut buf).await.map_err(io)?;
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// One server row of `show servers state`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerRow {
    pub name: String,
    /// `ip:port`.
    pub address: String,
    pub state: ServerState,
    /// The weight set by configuration or `set server weight` (`srv_uweight`).
    pub weight: u32,
}

/// Parses `show servers state` (version line, `# ` header naming the columns, rows).
pub fn parse_servers_state(text: &str) -> Result<BTreeMap<String, ServerRow>, String> {
    let mut cols: Vec<&str> = Vec::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            cols = h.split_whitespace().collect();
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if cols.is_empty() || f.len() < cols.len().min(19) {
            continue;
        }
        let col = |n: &str| cols.iter().position(|c| *c == n).and_then(|i| f.get(i).copied());
        let (Some(name), Some(addr), Some(admin), Some(w)) =
            (col("srv_name"), col("srv_addr"), col("srv_admin_state"), col("srv_uweight"))
        else {
            return Err(format!("unexpected servers state row {line:?}"));
        };
        let admin: u32 = admin.parse().map_err(|_| format!("bad srv_admin_state in {line:?}"))?;
        // SRV_ADMF_FMAINT = 0x01, SRV_ADMF_FDRAIN = 0x08 (forced by the runtime API / config).
        let state = if admin & 0x01 != 0 {
            ServerState::Maint
        } else if admin & 0x08 != 0 {
            ServerState::Drain
        } else {
            ServerState::Ready
        };
        let port = col("srv_port").unwrap_or("0");
        let address = if addr.contains(':') { format!("[{addr}]:{port}") } else { format!("{addr}:{port}") };
        out.insert(
            name.to_owned(),
            ServerRow {
                name: name.to_owned(),
                address,
                state,
                weight: w.parse().map_err(|_| format!("bad srv_uweight in {line:?}"))?,
            },
        );
    }
    if cols.is_empty() {
        return Err(format!("unexpected answer to show servers state: {:?}", text.trim()));
    }
    Ok(out)
}

/// The servers of `backend` now.
pub async fn servers(hp: &HaproxyConfig, backend: &str) -> Result<BTreeMap<String, ServerRow>, String> {
    let answer = run_command(&hp.socket, &format!("show servers state {backend}"), hp.timeout).await?;
    if answer.trim_start().starts_with("Can't find backend") {
        return Err(format!("haproxy has no backend {backend:?}"));
    }
    parse_servers_state(&answer)
}

/// Plan of one traffic change.
pub async fn plan_traffic(
    hp: &HaproxyConfig,
    backend: &str,
    server: &str,
    change: &TrafficChange,
) -> Result<Plan, String> {
    if !hp.backends.is_empty() && !hp.backends.iter().any(|b| b == backend) {
        return Err(format!("backend {backend:?} is not one this load balancer lets augur change"));
    }
    let rows = servers(hp, backend).await?;
    let row = rows.get(server);
    let ms = hp.timeout.as_millis() as u64;
    let sv = format!("{backend}/{server}");
    let cmd = |c: String| Step::Haproxy { socket: hp.socket.clone(), command: c, timeout_ms: ms };
    let mut plan = Plan { health_check: true, ..Plan::default() };
    if let Some(r) = row {
        plan.details.insert("previous.state".into(), r.state.as_str().into());
        plan.details.insert("previous.weight".into(), r.weight.to_string());
        plan.details.insert("previous.address".into(), r.address.clone());
    }
    let need = || row.ok_or_else(|| format!("haproxy backend {backend:?} has no server {server:?}"));
    match change {
        TrafficChange::State { state } => {
            let r = need()?;
            plan.push(
                cmd(format!("set server {sv} state {}", state.as_str())),
                vec![cmd(format!("set server {sv} state {}", r.state.as_str()))],
            );
        }
        TrafficChange::Weight { weight } => {
            let r = need()?;
            plan.push(
                cmd(format!("set server {sv} weight {weight}")),
                vec![cmd(format!("set server {sv} weight {}", r.weight))],
            );
        }
        TrafficChange::Add { address } => {
            if row.is_some() {
                return Err(format!("haproxy backend {backend:?} already has a server {server:?}"));
            }
            plan.push(
                cmd(format!("add server {sv} {address}")),
                vec![cmd(format!("set server {sv} state maint")), cmd(format!("del server {sv}"))],
            );
            plan.push(cmd(format!("set server {sv} state ready")), Vec::new());
        }
        TrafficChange::Del => {
            let r = need()?;
            plan.push(
                cmd(format!("set server {sv} state maint")),
                vec![cmd(format!("set server {sv} state {}", r.state.as_str()))],
            );
            plan.push(
                cmd(format!("del server {sv}")),
                vec![
                    cmd(format!("add server {sv} {} weight {}", r.address, r.weight)),
                    cmd(format!("set server {sv} state {}", r.state.as_str())),
                ],
            );
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 app 1 a 127.0.0.1 2 8 7 1 0 1 0 2 0 0 0 0 - 18081 - 0 0 - - 0\n3 app 2 b 127.0.0.1 2 0 5 5 1 1 0 2 0 0 0 0 - 18082 - 0 0 - - 0\n3 app 3 c 127.0.0.1 0 1 1 1 0 1 0 0 0 0 0 0 - 18083 - 0 0 - - 0\n\n";

    #[test]
    fn servers_state_gives_state_weight_and_address() {
        let rows = parse_servers_state(STATE).expect("parse");
        assert_eq!(
            rows["a"],
            ServerRow { name: "a".into(), address: "127.0.0.1:18081".into(), state: ServerState::Drain, weight: 7 }
        );
        assert_eq!(rows["b"].state, ServerState::Ready);
        assert_eq!(rows["c"].state, ServerState::Maint);
        assert!(parse_servers_state("Can't find backend.\n").is_err());
    }
}
