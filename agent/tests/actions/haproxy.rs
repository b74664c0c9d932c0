//! Traffic switching against a real HAProxy started on a temporary runtime API socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use augur_agent::actuator::{Status, haproxy};
use augur_agent::workload::{HaproxyConfig, WorkloadConfig};
use augur_core::command::ServerState;

use crate::{cmd, executor, health_command, skip};

struct Haproxy {
    child: Child,
    socket: PathBuf,
    /// The same runtime API on TCP (`127.0.0.1:port`).
    tcp: String,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_haproxy(test: &str, dir: &Path) -> Option<Haproxy> {
    let socket = dir.join("admin.sock");
    let cfg = dir.join("haproxy.cfg");
    // A free port for the TCP runtime API (bound, then released for HAProxy).
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    std::fs::write(
        &cfg,
        format!(
            "global\n  stats socket {} mode 600 level admin\n  stats socket ipv4@{tcp} level admin\n\ndefaults\n  mode http\n  timeout connect 1s\n  \
             timeout client 5s\n  timeout server 5s\n\nbackend app\n  balance roundrobin\n  \
             server a 127.0.0.1:18081\n  server b 127.0.0.1:18082 weight 5\n",
            socket.display()
        ),
    )
    .expect("haproxy config");
    let child = match Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            skip(test, &format!("haproxy is not installed ({e}); scripts/install-deps.sh installs it"));
            return None;
        }
    };
    let h = Haproxy { child, socket, tcp };
    let start = Instant::now();
    while !h.socket.exists() {
        if start.elapsed() > Duration::from_secs(10) {
            panic!("haproxy did not open its runtime API socket {}", h.socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(h)
}

fn lb(name: &str, socket: &Path, health: &[&str]) -> WorkloadConfig {
    let mut w = WorkloadConfig::named(name);
    w.allowed_actions = vec!["traffic".into()];
    w.health = Some(health_command(health));
    w.haproxy = Some(HaproxyConfig {
        socket: socket.display().to_string(),
        timeout: Duration::from_secs(2),
        backends: vec!["app".into()],
    });
    w
}

async fn servers(h: &Haproxy) -> std::collections::BTreeMap<String, haproxy::ServerRow> {
    let hp =
        HaproxyConfig { socket: h.socket.display().to_string(), timeout: Duration::from_secs(2), backends: vec![] };
    haproxy::servers(&hp, "app").await.expect("show servers state")
}

#[tokio::test]
async fn haproxy_state_weight_add_del_dry_run_and_undo_on_a_real_haproxy() {
    let test = "haproxy_state_weight_add_del_dry_run_and_undo_on_a_real_haproxy";
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(h) = start_haproxy(test, dir.path()) else { return };
    let state = tempfile::tempdir().expect("tempdir");
    let ws = [lb("lb", &h.socket, &["true"]), lb("lb-bad", &h.socket, &["false"])];
    let mut ex = executor(state.path(), Path::new("/nonexistent"), &ws);

    let o = ex.execute(&cmd("c1", "lb", "traffic", &[("backend", "app"), ("server", "a"), ("state", "drain")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(o.details["previous.state"], "ready");
    assert_eq!(servers(&h).await["a"].state, ServerState::Drain);

    let o = ex.execute(&cmd("c2", "lb", "traffic", &[("backend", "app"), ("server", "b"), ("weight", "7")])).await;
    assert_eq!((o.status, o.details["previous.weight"].as_str()), (Status::Succeeded, "5"), "{o:?}");
    assert_eq!(servers(&h).await["b"].weight, 7);

    let add = [("backend", "app"), ("server", "c"), ("op", "add"), ("address", "127.0.0.1:18083")];
    let o = ex.execute(&cmd("c3", "lb", "traffic", &add)).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    let c = &servers(&h).await["c"];
    assert_eq!((c.address.as_str(), c.state), ("127.0.0.1:18083", ServerState::Ready));

    let o = ex.execute(&cmd("c4", "lb", "traffic", &[("backend", "app"), ("server", "c"), ("op", "del")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert!(!servers(&h).await.contains_key("c"), "c was deleted");
    let o = ex.execute(&cmd("r4", "lb", "rollback", &[("command_id", "c4")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    let c = &servers(&h).await["c"];
    assert_eq!((c.address.as_str(), c.state, c.weight), ("127.0.0.1:18083", ServerState::Ready, 1), "undo re-adds c");

    let before = servers(&h).await;
    let mut dry = cmd("c5", "lb", "traffic", &[("backend", "app"), ("server", "a"), ("state", "maint")]);
    dry.dry_run = true;
    let o = ex.execute(&dry).await;
    assert_eq!(o.status, Status::DryRun, "{o:?}");
    assert_eq!(o.details["would.1"], format!("haproxy {}: set server app/a state maint", h.socket.display()));
    assert_eq!(o.details["would.1.undo.1"], format!("haproxy {}: set server app/a state drain", h.socket.display()));
    assert_eq!(servers(&h).await, before, "dry run changed haproxy");

    // The load balancer's health check fails after the change: it is undone.
    let o =
        ex.execute(&cmd("c6", "lb-bad", "traffic", &[("backend", "app"), ("server", "b"), ("state", "maint")])).await;
    assert_eq!(o.status, Status::RolledBack, "{o:?}");
    assert_eq!(servers(&h).await["b"].state, ServerState::Ready);

    for (id, args, needle) in [
        ("c7", vec![("backend", "app"), ("server", "zz"), ("state", "drain")], "has no server \"zz\""),
        ("c8", vec![("backend", "other"), ("server", "a"), ("state", "drain")], "not one this load balancer"),
        ("c9", add.to_vec(), "already has a server \"c\""),
    ] {
        let o = ex.execute(&cmd(id, "lb", "traffic", &args)).await;
        assert_eq!(o.status, Status::Refused, "{id}: {o:?}");
        assert!(o.message.contains(needle), "{id}: {o:?}");
    }

    let o = ex.execute(&cmd("r1", "lb", "rollback", &[("command_id", "c1")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(servers(&h).await["a"].state, ServerState::Ready);
    assert_eq!(servers(&h).await["b"].weight, 7, "only c1 was undone");
}

#[tokio::test]
async fn haproxy_unknown_backend_is_reported_by_the_runtime_api() {
    let test = "haproxy_unknown_backend_is_reported_by_the_runtime_api";
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(h) = start_haproxy(test, dir.path()) else { return };
    // Over TCP this time.
    let hp = HaproxyConfig { socket: h.tcp.clone(), timeout: Duration::from_secs(2), backends: vec![] };
    assert_eq!(haproxy::servers(&hp, "app").await.expect("show over tcp")["b"].weight, 5);
    let e = haproxy::servers(&hp, "nope").await.expect_err("no such backend");
    assert!(e.contains("no backend \"nope\""), "{e}");
    let e = haproxy::run_command(&hp.socket, "set server app/a state sideways", hp.timeout).await.expect_err("bad");
    assert!(e.contains("expects"), "{e}");
}
