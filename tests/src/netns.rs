//! Network namespaces as hosts, HAProxy and wrk, for end-to-end tests of traffic switching.
//!
//! A [`NetLab`] is one private /24 behind a Linux bridge in the root namespace: the bridge
//! holds `.1` (so processes in the root namespace, such as the aggregator, the test itself
//! and wrk, reach every host), and each [`NetHost`] is a network namespace with a veth pair
//! to the bridge and the next address. Names are unique per lab (a bridge index taken
//! atomically by `ip link add`), so parallel tests never collide. Dropping the lab kills
//! every process left in its namespaces and removes namespaces, veths and the bridge, on
//! panic too; labs left behind by a test process that was SIGKILLed are swept by the next
//! lab created.
//!
//! Processes run in a host with `nsenter --net` (only the network namespace changes, so
//! they keep seeing the machine's cgroup filesystems, unlike `ip netns exec`, which
//! remounts `/sys`).
//!
//! [`Haproxy`] runs a real HAProxy with an admin-level runtime API socket and reads server
//! states and counters from `show stat`; [`Wrk`] runs the real wrk and parses its summary
//! (requests, non-2xx responses, socket errors).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Proc;

/// Marks bridges made by a lab (`/sys/class/net/<bridge>/ifalias`), with the owner's pid.
const ALIAS_PREFIX: &str = "augur-netlab pid=";
/// Lab indices: the bridge `augbr<i>` and the subnet `10.(100 + i / 256).(i % 256).0/24`.
const MAX_LABS: u32 = 4096;

/// Why a lab cannot run here, if it cannot (not root, or a tool missing).
pub fn unavailable() -> Option<String> {
    if !crate::is_root() {
        return Some("needs root for network namespaces".into());
    }
    for tool in ["ip", "nsenter"] {
        if !crate::have(tool) {
            return Some(format!("`{tool}` is not installed (iproute2, util-linux)"));
        }
    }
    None
}

/// Like [`unavailable`], also requiring HAProxy and wrk.
pub fn traffic_unavailable() -> Option<String> {
    unavailable().or_else(|| {
        ["haproxy", "wrk"]
            .into_iter()
            .find(|t| !crate::have(t))
            .map(|t| format!("`{t}` is not installed (scripts/install-deps.sh installs it)"))
    })
}

/// Runs a command to completion; a failure carries its stderr.
pub fn run(program: &str, args: &[&str]) -> std::io::Result<String> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> std::io::Result<String> {
    run("ip", args)
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn subnet_of(idx: u32) -> (u8, u8) {
    ((100 + idx / 256) as u8, (idx % 256) as u8)
}

/// A private network of namespace hosts behind a bridge in the root namespace.
pub struct NetLab {
    idx: u32,
    bridge: String,
    hosts: Vec<NetHost>,
}

/// One host of a lab: a network namespace with one address on the lab's subnet.
#[derive(Debug, Clone)]
pub struct NetHost {
    /// The name the test gave it (e.g. `app-a`).
    pub name: String,
    /// The network namespace (`ip netns` name).
    pub netns: String,
    pub ip: Ipv4Addr,
}

impl NetLab {
    /// Creates the bridge and subnet (sweeping labs whose test process is gone).
    pub fn new() -> std::io::Result<NetLab> {
        sweep_stale_labs();
        let me = std::process::id();
        let routes = ip(&["-4", "route", "show"]).unwrap_or_default();
        let start = me.wrapping_mul(7919) % MAX_LABS;
        for k in 0..MAX_LABS {
            let idx = (start + k) % MAX_LABS;
            let (a, b) = subnet_of(idx);
            if routes.contains(&format!("10.{a}.{b}.")) {
                continue;
            }
            let bridge = format!("augbr{idx}");
            // Creating the bridge is the atomic claim of this index.
            if ip(&["link", "add", &bridge, "type", "bridge"]).is_err() {
                continue;
            }
            let lab = NetLab { idx, bridge: bridge.clone(), hosts: Vec::new() };
            std::fs::write(format!("/sys/class/net/{bridge}/ifalias"), format!("{ALIAS_PREFIX}{me}\n"))?;
            ip(&["addr", "add", &format!("10.{a}.{b}.1/24"), "dev", &bridge])?;
            ip(&["link", "set", &bridge, "up"])?;
            return Ok(lab);
        }
        Err(std::io::Error::other("no free lab index (bridge augbr0..4095 all taken?)"))
    }

    /// The root namespace's address on the lab network (the bridge).
    pub fn gateway(&self) -> Ipv4Addr {
        let (a, b) = subnet_of(self.idx);
        Ipv4Addr::new(10, a, b, 1)
    }

    /// Adds a host: a namespace with `lo` up and `eth0` on the lab's subnet.
    pub fn add_host(&mut self, name: &str) -> std::io::Result<NetHost> {
        let n = self.hosts.len() as u32;
        if n >= 250 {
            return Err(std::io::Error::other("a lab holds at most 250 hosts"));
        }
        let (a, b) = subnet_of(self.idx);
        let host_ip = Ipv4Addr::new(10, a, b, (n + 2) as u8);
        let netns = format!("augur{}-{}", self.idx, name);
        let (outer, inner) = (format!("au{}x{n}", self.idx), format!("au{}y{n}", self.idx));
        ip(&["netns", "add", &netns])?;
        self.hosts.push(NetHost { name: name.to_owned(), netns: netns.clone(), ip: host_ip });
        ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
        ip(&["link", "set", &outer, "master", &self.bridge])?;
        ip(&["link", "set", &outer, "up"])?;
        ip(&["link", "set", &inner, "netns", &netns])?;
        let in_ns = |args: &[&str]| {
            let mut a = vec!["-n", netns.as_str()];
            a.extend_from_slice(args);
            ip(&a)
        };
        in_ns(&["link", "set", &inner, "name", "eth0"])?;
        in_ns(&["addr", "add", &format!("{host_ip}/24"), "dev", "eth0"])?;
        in_ns(&["link", "set", "eth0", "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;
        in_ns(&["route", "add", "default", "via", &self.gateway().to_string()])?;
        Ok(self.hosts.last().expect("just pushed").clone())
    }

    pub fn hosts(&self) -> &[NetHost] {
        &self.hosts
    }
}

impl NetHost {
    /// A command that runs `program` in this host's network namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.netns)).arg("--").arg(program);
        c
    }

    /// Spawns `bin args` in this host, output to `<log_dir>/<name>.log`, killed on drop.
    pub fn spawn(&self, name: &str, bin: &Path, args: &[&str], log_dir: &Path) -> Proc {
        let log = std::fs::File::create(log_dir.join(format!("{name}.log"))).expect("create log file");
        let child = self
            .command(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} in {}: {e}", bin.display(), self.netns));
        Proc { child, name: name.to_owned() }
    }

    /// Runs `program args` in this host to completion, returning stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> std::io::Result<String> {
        let mut a = vec![format!("--net=/run/netns/{}", self.netns), "--".into(), program.into()];
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run("nsenter", &a)
    }
}

/// Kills every process in `netns`, then deletes it.
fn remove_netns(netns: &str) {
    for _ in 0..20 {
        let pids = ip(&["netns", "pids", netns]).unwrap_or_default();
        let pids: Vec<i32> = pids.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if pids.is_empty() {
            break;
        }
        for p in pids {
            // SAFETY: kill(2) of a process inside the test's own namespace.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = ip(&["netns", "del", netns]);
}

fn remove_lab(idx: u32) {
    let prefix = format!("augur{idx}-");
    for ns in ip(&["netns", "list"]).unwrap_or_default().lines() {
        let name = ns.split_whitespace().next().unwrap_or("");
        if name.starts_with(&prefix) {
            remove_netns(name);
        }
    }
    // Deleting a namespace deletes its veth ends and so their peers; sweep any stragglers.
    let outer = format!("au{idx}x");
    if let Ok(rd) = std::fs::read_dir("/sys/class/net") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.strip_prefix(&outer).is_some_and(|r| r.chars().all(|c| c.is_ascii_digit())) {
                let _ = ip(&["link", "del", &n]);
            }
        }
    }
    let _ = ip(&["link", "del", &format!("augbr{idx}")]);
}

/// Removes labs whose owning process is gone (a test killed before its Drop ran).
fn sweep_stale_labs() {
    let Ok(rd) = std::fs::read_dir("/sys/class/net") else { return };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(idx) = n.strip_prefix("augbr").and_then(|i| i.parse::<u32>().ok()) else { continue };
        let alias = std::fs::read_to_string(e.path().join("ifalias")).unwrap_or_default();
        let owner = alias.trim().strip_prefix(ALIAS_PREFIX).and_then(|p| p.parse::<i32>().ok());
        if owner.is_some_and(|p| !pid_alive(p)) {
            remove_lab(idx);
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        remove_lab(self.idx);
    }
}

/// One server of an HAProxy backend as configured at start.
#[derive(Debug, Clone)]
pub struct BackendServer {
    pub name: String,
    pub address: String,
    /// Starts in maintenance (no traffic until set `ready`), e.g. a warm standby or a
    /// migration target slot.
    pub disabled: bool,
}

/// A real HAProxy (in a lab host) with an admin-level runtime API socket.
pub struct Haproxy {
    pub proc: Proc,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub backend: String,
    pub frontend: std::net::SocketAddrV4,
}

/// One line of `show stat` for a server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStat {
    pub name: String,
    /// `UP`, `DOWN`, `MAINT`, `DRAIN`, `NOLB`, `UP 1/2`...
    pub status: String,
    pub weight: u32,
    /// Sessions (requests, with `http-server-close`) sent to this server so far.
    pub total_sessions: u64,
    /// Responses by class.
    pub http_2xx: u64,
    pub http_5xx: u64,
    /// Connection errors and failed responses.
    pub errors: u64,
}

impl Haproxy {
    /// Writes the config and starts HAProxy in `host`, with frontend `host:port` and one
    /// HTTP backend whose servers are health-checked with `GET /health` every 300 ms
    /// (2 failures mark a server down, 2 successes up).
    ///
    /// Server connections are closed after each response (`http-server-close`), and a
    /// connection that cannot be established is retried on another server (`retries 3`,
    /// `option redispatch`). Responses are never retried, so an application error or a
    /// request cut off mid-response still reaches the client as a failure.
    pub fn start(host: &NetHost, port: u16, backend: &str, servers: &[BackendServer], dir: &Path) -> Haproxy {
        let socket = dir.join("haproxy.sock");
        let config = dir.join("haproxy.cfg");
        let mut cfg = format!(
            "global\n  stats socket {} mode 600 level admin\n  maxconn 4096\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n\
             \x20 timeout check 1s\n  retries 3\n  option redispatch\n  option http-server-close\n\
             frontend fe\n  bind {}:{port}\n  default_backend {backend}\n\
             backend {backend}\n  balance roundrobin\n  option httpchk GET /health\n  http-check expect status 200\n\
             \x20 default-server inter 300ms fall 2 rise 2\n",
            socket.display(),
            host.ip
        );
        for s in servers {
            cfg.push_str(&format!(
                "  server {} {} check{}\n",
                s.name,
                s.address,
                if s.disabled { " disabled" } else { "" }
            ));
        }
        std::fs::write(&config, cfg).expect("write haproxy.cfg");
        let proc =
            host.spawn("haproxy", Path::new("haproxy"), &["-db", "-f", config.to_str().expect("utf-8 path")], dir);
        let h = Haproxy {
            proc,
            socket,
            config,
            backend: backend.to_owned(),
            frontend: std::net::SocketAddrV4::new(host.ip, port),
        };
        crate::wait_for("haproxy runtime API socket", Duration::from_secs(10), || h.runtime("show info").ok());
        h
    }

    /// Sends one command to the runtime API and returns the answer.
    pub fn runtime(&self, cmd: &str) -> std::io::Result<String> {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("{cmd}\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// The backend's servers from `show stat`.
    pub fn servers(&self) -> std::io::Result<BTreeMap<String, ServerStat>> {
        let csv = self.runtime("show stat")?;
        Ok(parse_show_stat(&csv, &self.backend))
    }

    /// The frontend URL, e.g. `http://10.100.3.4:8080/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.frontend)
    }
}

/// Parses `show stat` CSV (header line `# pxname,svname,...`) for `backend`'s servers.
pub fn parse_show_stat(csv: &str, backend: &str) -> BTreeMap<String, ServerStat> {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else { return BTreeMap::new() };
    let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (px, sv, st, w, stot, h2, h5, econ, eresp) = (
        col("pxname"),
        col("svname"),
        col("status"),
        col("weight"),
        col("stot"),
        col("hrsp_2xx"),
        col("hrsp_5xx"),
        col("econ"),
        col("eresp"),
    );
    let mut out = BTreeMap::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        let get = |i: Option<usize>| i.and_then(|i| f.get(i)).copied().unwrap_or("");
        let num = |i: Option<usize>| get(i).parse::<u64>().unwrap_or(0);
        let name = get(sv);
        if get(px) != backend || name.is_empty() || name == "BACKEND" || name == "FRONTEND" {
            continue;
        }
        out.insert(
            name.to_owned(),
            ServerStat {
                name: name.to_owned(),
                status: get(st).to_owned(),
                weight: num(w) as u32,
                total_sessions: num(stot),
                http_2xx: num(h2),
                http_5xx: num(h5),
                errors: num(econ) + num(eresp),
            },
        );
    }
    out
}

/// How wrk loads the target.
#[derive(Debug, Clone)]
pub struct WrkOptions {
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
    /// Pause of each connection between requests (a wrk Lua `delay()`), to leave CPU for
    /// the system under test on a small machine; 0 for full speed.
    pub delay_ms: u32,
    /// Per-request timeout (whole seconds, wrk's resolution); a slower answer counts as a
    /// socket error (timeout).
    pub timeout: Duration,
}

impl Default for WrkOptions {
    fn default() -> Self {
        WrkOptions {
            threads: 1,
            connections: 8,
            duration: Duration::from_secs(10),
            delay_ms: 5,
            timeout: Duration::from_secs(2),
        }
    }
}

/// What wrk reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkReport {
    pub requests: u64,
    pub non_2xx_3xx: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    pub requests_per_sec: f64,
    /// The full output, for failure messages.
    pub raw: String,
}

impl WrkReport {
    /// Requests that failed: non-2xx/3xx responses plus socket errors of any kind.
    pub fn failed(&self) -> u64 {
        self.non_2xx_3xx + self.connect_errors + self.read_errors + self.write_errors + self.timeouts
    }
}

/// Parses wrk's summary. Missing lines mean zero (wrk prints error lines only when nonzero),
/// but the request count line must be there.
pub fn parse_wrk(out: &str) -> Result<WrkReport, String> {
    let mut r = WrkReport { raw: out.to_owned(), ..Default::default() };
    let mut saw_requests = false;
    for line in out.lines().map(str::trim) {
        if let Some((n, rest)) = line.split_once(" requests in ") {
            let _ = rest;
            r.requests = n.trim().parse().map_err(|_| format!("bad request count in {line:?}"))?;
            saw_requests = true;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            for part in rest.split(',') {
                let mut it = part.split_whitespace();
                let (Some(k), Some(v)) = (it.next(), it.next()) else { continue };
                let v: u64 = v.parse().map_err(|_| format!("bad socket error count in {line:?}"))?;
                match k {
                    "connect" => r.connect_errors = v,
                    "read" => r.read_errors = v,
                    "write" => r.write_errors = v,
                    "timeout" => r.timeouts = v,
                    _ => return Err(format!("unknown socket error kind {k:?} in {line:?}")),
                }
            }
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx_3xx = rest.trim().parse().map_err(|_| format!("bad non-2xx count in {line:?}"))?;
        } else if let Some(rest) = line.strip_prefix("Requests/sec:") {
            r.requests_per_sec = rest.trim().parse().unwrap_or(0.0);
        }
    }
    if !saw_requests {
        return Err(format!("no `N requests in` line in wrk output:\n{out}"));
    }
    Ok(r)
}

/// A running wrk.
pub struct Wrk {
    proc: Proc,
    out: PathBuf,
}

impl Wrk {
    /// Starts wrk against `url` from the root namespace; output to `<dir>/<name>.log`.
    pub fn start(name: &str, url: &str, opts: &WrkOptions, dir: &Path) -> Wrk {
        let script = dir.join(format!("{name}.lua"));
        std::fs::write(&script, format!("function delay()\n  return {}\nend\n", opts.delay_ms)).expect("wrk script");
        let args = [
            "-t".to_string(),
            opts.threads.to_string(),
            "-c".into(),
            opts.connections.to_string(),
            "-d".into(),
            format!("{}s", opts.duration.as_secs().max(1)),
            "--timeout".into(),
            format!("{}s", opts.timeout.as_secs().max(1)),
            "-s".into(),
            script.to_str().expect("utf-8 path").into(),
            url.into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn(name, Path::new("wrk"), &args, dir);
        Wrk { proc, out: dir.join(format!("{name}.log")) }
    }

    /// True while wrk runs.
    pub fn running(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }

    /// Stops wrk early (SIGINT: it prints its summary) and parses its report.
    pub fn stop(self) -> Result<WrkReport, String> {
        self.proc.signal(libc::SIGINT);
        self.wait(Duration::from_secs(10))
    }

    /// Waits for wrk to finish (at most `timeout`) and parses its report.
    pub fn wait(mut self, timeout: Duration) -> Result<WrkReport, String> {
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            if let Some(st) = self.proc.child.try_wait().map_err(|e| e.to_string())? {
                break st;
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("wrk still running after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = std::fs::read_to_string(&self.out).map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("wrk exited with {status}:\n{out}"));
        }
        parse_wrk(&out)
    }
}

/// A free TCP port on `ip` (bound then released).
pub fn free_port_on(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0)).expect("bind port 0").local_addr().expect("local addr").port()
}

/// The real aggregator in the root namespace, listening on the lab's gateway address so
/// agents in every namespace host reach it. `extra_toml` is appended to its config (e.g.
/// `[predict]` and `[remediation]` sections). Returns the process and its URL.
pub fn start_aggregator(lab: &NetLab, dir: &Path, extra_toml: &str) -> (Proc, String) {
    let port = free_port_on(lab.gateway());
    let listen = format!("{}:{port}", lab.gateway());
    let cfg = dir.join("aggregator.toml");
    std::fs::write(
        &cfg,
        format!("listen = \"{listen}\"\ndata_dir = \"{}\"\n{extra_toml}", dir.join("aggregator-data").display()),
    )
    .expect("write aggregator config");
    let ready = dir.join("aggregator.ready");
    let p = Proc::spawn(
        "aggregator",
        &crate::bin("augur-aggregator"),
        &["--config", cfg.to_str().expect("utf-8 path"), "--ready-file", ready.to_str().expect("utf-8 path")],
        dir,
    );
    crate::wait_for("aggregator ready", Duration::from_secs(30), || ready.exists().then_some(()));
    (p, format!("http://{listen}"))
}

/// The real agent in `host` (host id = the host's name), connected to `url`, with container
/// discovery off and `extra_toml` appended (its `[[workload]]` tables). Log: `agent-<name>.log`.
pub fn start_agent(host: &NetHost, url: &str, dir: &Path, extra_toml: &str) -> Proc {
    let state = dir.join(format!("agent-{}-state", host.name));
    let cfg = dir.join(format!("agent-{}.toml", host.name));
    std::fs::write(
        &cfg,
        format!(
            "host_id = \"{}\"\nstate_dir = \"{}\"\ninterval = \"1s\"\n[aggregator]\nurl = \"{url}\"\n\
             backoff_initial = \"200ms\"\nbackoff_max = \"2s\"\n[containers]\ndocker = false\ncontainerd = false\n\
             kubernetes = false\nsystemd_services = false\n{extra_toml}",
            host.name,
            state.display()
        ),
    )
    .expect("write agent config");
    host.spawn(
        &format!("agent-{}", host.name),
        &crate::bin("augur-agent"),
        &["--config", cfg.to_str().expect("utf-8")],
        dir,
    )
}

/// One instance of the test application on a lab host, controlled by a generated script
/// (`<dir>/app-<name>.sh start|stop|restart`) that the agent's exec hooks run: `start`
/// launches `augur-test-app` in the background (in `cgroup_dirs`, when given, so its
/// memory is charged there) unless it already runs; `stop` sends SIGTERM (the app finishes
/// the requests in flight) and waits for it to exit.
pub struct AppInstance {
    pub host: NetHost,
    pub port: u16,
    pub script: PathBuf,
    /// While this file exists the app fails its health check (503 on /health).
    pub fail_health_file: PathBuf,
    pub pidfile: PathBuf,
}

impl AppInstance {
    /// Writes the control script; does not start the app.
    pub fn new(host: &NetHost, port: u16, app_bin: &Path, dir: &Path, cgroup_dirs: &[PathBuf]) -> AppInstance {
        let name = &host.name;
        let script = dir.join(format!("app-{name}.sh"));
        let pidfile = dir.join(format!("app-{name}.pid"));
        let fail_health_file = dir.join(format!("app-{name}.unhealthy"));
        let log = dir.join(format!("app-{name}.log"));
        let enter: String = cgroup_dirs.iter().map(|d| format!("echo $$ > {}/cgroup.procs; ", d.display())).collect();
        let text = format!(
            r#"#!/bin/sh
# Generated by augur-tests: start/stop/restart the test app on {name}.
pidfile={pidfile}
running() {{ [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }}
start() {{
  running && return 0
  sh -c '{enter}exec "$0" "$@"' {app} --listen {ip}:{port} --name {name} --fail-health-file {fail} >>{log} 2>&1 </dev/null &
  echo $! > "$pidfile"
}}
stop() {{
  running || {{ rm -f "$pidfile"; return 0; }}
  pid=$(cat "$pidfile"); kill -TERM "$pid"; i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL "$pid" 2>/dev/null; rm -f "$pidfile"; return 0
}}
case "$1" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  *) echo "usage: $0 start|stop|restart" >&2; exit 64 ;;
esac
"#,
            pidfile = pidfile.display(),
            app = app_bin.display(),
            ip = host.ip,
            fail = fail_health_file.display(),
            log = log.display(),
        );
        std::fs::write(&script, text).expect("write app control script");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
        AppInstance { host: host.clone(), port, script, fail_health_file, pidfile }
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host.ip, self.port)
    }

    fn ctl(&self, verb: &str) {
        self.host.run(self.script.to_str().expect("utf-8 path"), &[verb]).unwrap_or_else(|e| panic!("{verb}: {e}"));
    }

    /// Starts the app (as the agent's start hook would) and waits until it answers /health.
    pub fn start(&self) {
        self.ctl("start");
        crate::wait_for("app answering", Duration::from_secs(10), || self.get("/health").ok());
    }

    /// Stops the app.
    pub fn stop(&self) {
        self.ctl("stop");
    }

    /// Whether the app process is alive.
    pub fn running(&self) -> bool {
        std::fs::read_to_string(&self.pidfile).ok().and_then(|p| p.trim().parse::<i32>().ok()).is_some_and(pid_alive)
    }

    /// `GET path` on the app from the root namespace; the body on 2xx.
    pub fn get(&self, path: &str) -> std::io::Result<String> {
        http_request(&self.address(), "GET", path)
    }

    /// `POST path` on the app; the body on 2xx.
    pub fn post(&self, path: &str) -> std::io::Result<String> {
        http_request(&self.address(), "POST", path)
    }

    /// The `[[workload]]` table an agent declares for this app: start/stop/restart through
    /// the script, HTTP health check on /health, `allowed` command kinds, and `extra` lines
    /// (e.g. `cgroup = "..."`).
    pub fn workload_toml(&self, name: &str, allowed: &[&str], extra: &str) -> String {
        let s = self.script.display();
        let allowed: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "[[workload]]\nname = \"{name}\"\nkind = \"stateless\"\nallowed_actions = [{}]\n{extra}\n\
             [workload.health]\nhttp = \"http://{}/health\"\ntimeout = \"1s\"\nattempts = 3\ninterval = \"300ms\"\n\
             [workload.hooks]\nstart = [\"{s}\", \"start\"]\nstop = [\"{s}\", \"stop\"]\nrestart = [\"{s}\", \"restart\"]\n\
             timeout = \"20s\"\n",
            allowed.join(", "),
            self.address()
        )
    }
}

/// The `[[workload]]` table of an HAProxy load balancer driven through its runtime socket.
pub fn haproxy_workload_toml(name: &str, hap: &Haproxy) -> String {
    format!(
        "[[workload]]\nname = \"{name}\"\nkind = \"stateless\"\nallowed_actions = [\"traffic\"]\n\
         [workload.health]\ntcp = \"{}\"\n[workload.haproxy]\nsocket = \"{}\"\nbackends = [\"{}\"]\n",
        hap.frontend,
        hap.socket.display(),
        hap.backend
    )
}

/// A minimal HTTP/1.1 request (connection closed after); the body on a 2xx answer.
pub fn http_request(addr: &str, method: &str, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('2') {
        Ok(body.to_owned())
    } else {
        Err(std::io::Error::other(format!("{method} {path}: {}", head.lines().next().unwrap_or(""))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OK: &str = "Running 5s test @ http://10.100.1.4:8080/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   680.84us  302.11us   5.37ms   78.40%
    Req/Sec     6.36k   401.38     6.90k    82.00%
  31677 requests in 5.00s, 3.32MB read
Requests/sec:   6334.59
Transfer/sec:    679.52KB
";

    const WRK_ERRORS: &str = "Running 5s test @ http://10.100.1.4:8080/
  1 threads and 8 connections
  12 requests in 5.00s, 3.32MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec:      2.40
";

    #[test]
    fn wrk_summary_without_errors_parses_to_zero_failures() {
        let r = parse_wrk(WRK_OK).expect("parses");
        assert_eq!(r.requests, 31677);
        assert_eq!(r.failed(), 0);
        assert!((r.requests_per_sec - 6334.59).abs() < 1e-9);
    }

    #[test]
    fn wrk_errors_are_all_counted_as_failures() {
        let r = parse_wrk(WRK_ERRORS).expect("parses");
        assert_eq!(r.requests, 12);
        assert_eq!((r.connect_errors, r.read_errors, r.write_errors, r.timeouts, r.non_2xx_3xx), (1, 2, 3, 4, 5));
        assert_eq!(r.failed(), 15);
    }

    #[test]
    fn wrk_output_without_a_request_count_is_an_error() {
        assert!(parse_wrk("unable to connect to 10.0.0.1:80 Connection refused\n").is_err());
        assert!(parse_wrk("  x requests in 5.00s, 1MB read\n").is_err());
    }

    #[test]
    fn show_stat_rows_of_one_backend_are_read_by_column_name() {
        let csv = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,
fe,FRONTEND,,,0,2,4096,10,,,,,,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,1,,,,0,10,0,0,0,
app,a,0,0,0,1,,7,,,,,,0,0,0,0,UP,1,1,0,0,0,5,0,,1,3,1,,7,,2,0,,1,L7OK,200,0,0,7,0,0,0,
app,b,0,0,0,1,,3,,,,,,1,1,0,0,MAINT,1,1,0,0,0,5,0,,1,3,2,,3,,2,0,,1,L7OK,200,0,0,2,0,0,1,
app,BACKEND,0,0,0,2,410,10,,,,,,0,0,0,0,UP,1,1,0,,0,5,0,,1,3,0,,10,,1,0,,1,,,,0,9,0,0,1,
other,a,0,0,0,1,,99,,,,,,0,0,0,0,DOWN,1,1,0,0,0,5,0,,1,3,1,,7,,2,0,,1,L7OK,200,0,0,7,0,0,0,
";
        let s = parse_show_stat(csv, "app");
        assert_eq!(s.len(), 2);
        assert_eq!(s["a"].status, "UP");
        assert_eq!((s["a"].total_sessions, s["a"].http_2xx, s["a"].errors), (7, 7, 0));
        assert_eq!(s["b"].status, "MAINT");
        assert_eq!((s["b"].http_5xx, s["b"].errors), (1, 2));
    }
}
