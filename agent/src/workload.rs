//! Declared workloads: what the agent may act on, how to find it, how to check it.
//!
//! A workload is declared in the agent config as a `[[workload]]` table. It names the
//! thing (a cgroup, a systemd unit, a process), says whether it is stateless or stateful,
//! how its health is checked, which command kinds the aggregator may send for it, and
//! the local safety caps no command can exceed. [`validate_workloads`] checks the set;
//! [`declared`] is what the agent announces in Hello.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use augur_core::units;
use serde::{Deserialize, Serialize};

/// Command kinds a workload may allow (`rollback` is always allowed: it undoes what was allowed).
pub const ACTIONS: &[&str] =
    &["resize", "restart", "start", "stop", "traffic", "config", "health", "checkpoint", "restore"];

/// Stateless workloads may be moved and replaced freely; stateful ones keep data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    #[default]
    Stateless,
    Stateful,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Stateless => "stateless",
            WorkloadKind::Stateful => "stateful",
        }
    }
}

/// One `[[workload]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// Name commands use as their resource ([A-Za-z0-9._:@-], at most 128 characters).
    pub name: String,
    #[serde(default)]
    pub kind: WorkloadKind,
    /// Resource its samples are reported under, when the default is not right (the
    /// default: `cgroup/<name>` with `cgroup`, else `service/<unit>` with `unit`, else
    /// `workload/<name>`), e.g. `container/<id12>` for a discovered container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// Cgroup path relative to each hierarchy's root (`apps/web`): resize writes its
    /// control files (cgroup v2 `memory.max`, `memory.high`, `cpu.max`, or the v1 equivalents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// systemd unit (`web.service`, or a template `web@.service` / instance `web@1.service`):
    /// restart/start/stop run `systemctl`, resize runs `systemctl set-property --runtime`
    /// unless `cgroup` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// A pidfile: resize acts on the cgroup the process is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pidfile: Option<PathBuf>,
    /// A process name (`/proc/<pid>/comm`; the oldest match): resize acts on its cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// Command kinds the aggregator may send for this workload.
    #[serde(default)]
    pub allowed_actions: Vec<String>,
    /// Warm standby of this workload (a workload name, possibly on another host).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub standby: String,
    /// Other instances of the same service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// How health is checked after every change (required when any changing action is allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthConfig>,
    /// Commands run for start / stop / restart instead of systemctl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HooksConfig>,
    /// HAProxy runtime API of a load balancer: `traffic` commands go there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub haproxy: Option<HaproxyConfig>,
    /// Config files a `config` command may render.
    #[serde(default, rename = "template", skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<TemplateConfig>,
    /// Local safety caps no command may exceed.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[workload.health]`: exactly one of `http`, `tcp`, `command`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// `http://host:port/path`: healthy on a 2xx answer to GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// `host:port`: healthy when a TCP connection opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// argv run without a shell: healthy on exit status 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Time allowed for one attempt.
    #[serde(default = "default_health_timeout", with = "units::duration")]
    pub timeout: Duration,
    /// Attempts after a change before it counts as unhealthy (a restarted service needs time).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Pause between attempts.
    #[serde(default = "default_interval", with = "units::duration")]
    pub interval: Duration,
}

fn default_health_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_attempts() -> u32 {
    3
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_hook_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_keep() -> usize {
    5
}

/// `[workload.hooks]`: argv arrays, run without a shell. `{{instance}}` in an argument is
/// replaced by the command's `instance` argument (empty when none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Vec<String>>,
    /// A hook still running after this is killed and the command fails.
    #[serde(default = "default_hook_timeout", with = "units::duration")]
    pub timeout: Duration,
}

impl HooksConfig {
    /// The hook for `start`, `stop` or `restart`.
    pub fn get(&self, action: &str) -> Option<&Vec<String>> {
        match action {
            "start" => self.start.as_ref(),
            "stop" => self.stop.as_ref(),
            "restart" => self.restart.as_ref(),
            _ => None,
        }
    }
}

/// `[workload.haproxy]`: the runtime API socket (admin level).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyConfig {
    /// A unix socket path (`/run/haproxy/admin.sock`) or `host:port`.
    pub socket: String,
    /// Time allowed for one runtime API command.
    #[serde(default = "default_health_timeout", with = "units::duration")]
    pub timeout: Duration,
    /// Backends traffic commands may touch; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
}

/// `[[workload.template]]`: a config file rendered from a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// Name a `config` command uses.
    pub name: String,
    /// Template text with `{{var}}` placeholders (`{{version}}` is the command's version).
    pub source: PathBuf,
    /// File written (atomically: temp file, fsync, rename).
    pub destination: PathBuf,
    /// argv run after the write (e.g. `["systemctl", "reload", "app"]`); a failure restores
    /// the previous file and runs it again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reload: Vec<String>,
    /// Time allowed for the reload command.
    #[serde(default = "default_hook_timeout", with = "units::duration")]
    pub reload_timeout: Duration,
    /// Previous versions of the destination kept in the state directory for rollback.
    #[serde(default = "default_keep")]
    pub keep: usize,
}

/// `[workload.limits]`: caps checked before any change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest memory.max / memory.high a resize may set; 0 means no cap.
    #[serde(with = "units::bytes")]
    pub memory_max: u64,
    /// A resize may not set a memory limit below current usage plus this margin (it would
    /// make the kernel reclaim hard or OOM-kill the workload).
    #[serde(with = "units::bytes")]
    pub memory_margin: u64,
    /// Largest CPU allowance in cores a resize may set; 0 means no cap.
    pub cpu_max: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { memory_max: 0, memory_margin: 16 << 20, cpu_max: 0.0 }
    }
}

/// What a health check looks at, parsed from [`HealthConfig`].
#[derive(Debug, Clone, PartialEq)]
pub enum HealthProbe {
    /// GET `path` from `addr` (`host:port`), sending `host` as the Host header.
    Http {
        addr: String,
        host: String,
        path: String,
    },
    Tcp {
        addr: String,
    },
    Command {
        argv: Vec<String>,
    },
}

impl HealthConfig {
    /// The probe this check runs (valid after [`validate_workloads`]).
    pub fn probe(&self) -> Result<HealthProbe, String> {
        match (&self.http, &self.tcp, &self.command) {
            (Some(url), None, None) => {
                let rest = url
                    .strip_prefix("http://")
                    .ok_or_else(|| format!("health.http {url:?} must start with http:// (https is not supported)"))?;
                let (authority, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, "/"),
                };
                if authority.is_empty() {
                    return Err(format!("health.http {url:?} has no host"));
                }
                let addr = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                    && !authority.ends_with(']')
                {
                    authority.to_owned()
                } else {
                    format!("{authority}:80")
                };
                Ok(HealthProbe::Http { addr, host: authority.to_owned(), path: path.to_owned() })
            }
            (None, Some(addr), None) => {
                if addr.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
                    return Err(format!("health.tcp {addr:?} must be host:port"));
                }
                Ok(HealthProbe::Tcp { addr: addr.clone() })
            }
            (None, None, Some(argv)) => {
                if argv.is_empty() || argv[0].is_empty() {
                    return Err("health.command must be a non-empty argv array".into());
                }
                Ok(HealthProbe::Command { argv: argv.clone() })
            }
            _ => Err("health needs exactly one of http, tcp or command".into()),
        }
    }

    /// This check for one instance: `{{instance}}` in the URL, address or arguments
    /// becomes `instance` (a start of `web@8082` checks `http://127.0.0.1:{{instance}}/`
    /// as port 8082). Without an instance, a check that needs one is an error.
    pub fn for_instance(&self, instance: Option<&str>) -> Result<HealthConfig, String> {
        const P: &str = "{{instance}}";
        let uses = self.http.as_ref().is_some_and(|u| u.contains(P))
            || self.tcp.as_ref().is_some_and(|a| a.contains(P))
            || self.command.as_ref().is_some_and(|c| c.iter().any(|a| a.contains(P)));
        if !uses {
            return Ok(self.clone());
        }
        let i = instance.ok_or("the health check names {{instance}} but the command has no instance")?;
        let mut h = self.clone();
        h.http = h.http.map(|u| u.replace(P, i));
        h.tcp = h.tcp.map(|a| a.replace(P, i));
        h.command = h.command.map(|c| c.into_iter().map(|a| a.replace(P, i)).collect());
        Ok(h)
    }

    /// `http`, `tcp` or `command`.
    pub fn kind(&self) -> &'static str {
        if self.http.is_some() {
            "http"
        } else if self.tcp.is_some() {
            "tcp"
        } else {
            "command"
        }
    }
}

impl WorkloadConfig {
    /// A workload with only a name, for building configs in code.
    pub fn named(name: &str) -> Self {
        WorkloadConfig {
            name: name.into(),
            kind: WorkloadKind::Stateless,
            resource: String::new(),
            cgroup: None,
            unit: None,
            pidfile: None,
            process: None,
            allowed_actions: Vec::new(),
            standby: String::new(),
            peers: Vec::new(),
            health: None,
            hooks: None,
            haproxy: None,
            templates: Vec::new(),
            limits: LimitsConfig::default(),
        }
    }

    /// Whether `action` is in `allowed_actions`.
    pub fn allows(&self, action: &str) -> bool {
        self.allowed_actions.iter().any(|a| a == action)
    }

    /// The resource its samples are reported under.
    pub fn resource(&self) -> String {
        if !self.resource.is_empty() {
            self.resource.clone()
        } else if self.cgroup.is_some() {
            format!("cgroup/{}", self.name)
        } else if let Some(u) = &self.unit {
            format!("service/{u}")
        } else {
            format!("workload/{}", self.name)
        }
    }

    /// The template named `name`.
    pub fn template(&self, name: &str) -> Option<&TemplateConfig> {
        self.templates.iter().find(|t| t.name == name)
    }

    fn validate(&self) -> Result<(), String> {
        let w = &self.name;
        if !valid_name(w) {
            return Err(format!("workload name {w:?} must be 1 to 128 characters of [A-Za-z0-9._:@-]"));
        }
        let err = |m: String| Err(format!("workload {w:?}: {m}"));
        let mut seen = BTreeSet::new();
        for a in &self.allowed_actions {
            if !ACTIONS.contains(&a.as_str()) {
                return err(format!("unknown action {a:?} in allowed_actions (known: {})", ACTIONS.join(", ")));
            }
            if !seen.insert(a) {
                return err(format!("action {a:?} listed twice in allowed_actions"));
            }
        }
        if let Some(c) = &self.cgroup {
            let p = std::path::Path::new(c);
            if c.is_empty() || p.is_absolute() || p.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return err(format!(
                    "cgroup {c:?} must be a relative path below the hierarchy root (like \"apps/web\"), without ..",
                ));
            }
        }
        if let Some(u) = &self.unit
            && (!valid_name(u) || !u.contains('.'))
        {
            return err(format!("unit {u:?} must be a unit name like web.service or web@.service"));
        }
        if let Some(p) = &self.process
            && (p.is_empty() || p.len() > 15 || p.contains('/'))
        {
            return err(format!("process {p:?} must be a process name (comm, at most 15 characters)"));
        }
        if let Some(p) = &self.pidfile
            && !p.is_absolute()
        {
            return err(format!("pidfile {} must be an absolute path", p.display()));
        }
        let locatable =
            self.cgroup.is_some() || self.unit.is_some() || self.pidfile.is_some() || self.process.is_some();
        if self.allows("resize") && !locatable {
            return err("allows resize but names no cgroup, unit, pidfile or process".into());
        }
        for a in ["restart", "start", "stop"] {
            if self.allows(a) && self.unit.is_none() && self.hooks.as_ref().and_then(|h| h.get(a)).is_none() {
                return err(format!("allows {a} but has neither a unit nor a hooks.{a} command"));
            }
        }
        if self.allows("traffic") && self.haproxy.is_none() {
            return err("allows traffic but has no [workload.haproxy] socket".into());
        }
        for a in ["checkpoint", "restore"] {
            if self.allows(a) && self.kind != WorkloadKind::Stateful {
                return err(format!("allows {a} but is not kind = \"stateful\" (CRIU is for stateful workloads)"));
            }
            if self.allows(a) && self.pidfile.is_none() && self.process.is_none() && self.cgroup.is_none() {
                return err(format!("allows {a} but names no pidfile, process or cgroup to find its process tree"));
            }
        }
        if self.allows("config") && self.templates.is_empty() {
            return err("allows config but has no [[workload.template]]".into());
        }
        let mutating = self.allowed_actions.iter().any(|a| a != "health");
        match &self.health {
            None if mutating || self.allows("health") => {
                return err("every action needs a health check: add [workload.health] with http, tcp or command".into());
            }
            None => {}
            Some(h) => {
                // Checked with a stand-in instance; the real one comes with each command.
                let sample = h.for_instance(Some("1")).map_err(|m| format!("workload {w:?}: {m}"))?;
                sample.probe().map_err(|m| format!("workload {w:?}: {m}"))?;
                if h.timeout.is_zero() || h.attempts == 0 {
                    return err("health.timeout and health.attempts must be above 0".into());
                }
            }
        }
        if let Some(h) = &self.hooks {
            for (n, argv) in [("start", &h.start), ("stop", &h.stop), ("restart", &h.restart)] {
                if argv.as_ref().is_some_and(|a| a.is_empty() || a[0].is_empty()) {
                    return err(format!("hooks.{n} must be a non-empty argv array"));
                }
            }
            if h.timeout.is_zero() {
                return err("hooks.timeout must be above 0".into());
            }
        }
        if let Some(hp) = &self.haproxy {
            let unix = hp.socket.starts_with('/');
            let tcp = hp.socket.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !unix && !tcp {
                return err(format!(
                    "haproxy.socket {:?} must be an absolute unix socket path or host:port",
                    hp.socket
                ));
            }
            if hp.timeout.is_zero() {
                return err("haproxy.timeout must be above 0".into());
            }
        }
        let mut names = BTreeSet::new();
        for t in &self.templates {
            if !valid_name(&t.name) {
                return err(format!("template name {:?} must be 1 to 128 characters of [A-Za-z0-9._:@-]", t.name));
            }
            if !names.insert(&t.name) {
                return err(format!("template {:?} declared twice", t.name));
            }
            if !t.source.is_absolute() || !t.destination.is_absolute() {
                return err(format!("template {:?}: source and destination must be absolute paths", t.name));
            }
            if t.reload.first().is_some_and(|a| a.is_empty()) {
                return err(format!("template {:?}: reload must be an argv array", t.name));
            }
            if t.keep == 0 {
                return err(format!("template {:?}: keep must be at least 1 (the previous version)", t.name));
            }
        }
        let l = &self.limits;
        if !l.cpu_max.is_finite() || l.cpu_max < 0.0 {
            return err(format!("limits.cpu_max {} must be a number of cores >= 0", l.cpu_max));
        }
        Ok(())
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'))
}

/// Checks every workload and that names are unique.
pub fn validate_workloads(ws: &[WorkloadConfig]) -> Result<(), String> {
    let mut names = BTreeMap::new();
    for w in ws {
        w.validate()?;
        if names.insert(w.name.as_str(), ()).is_some() {
            return Err(format!("workload {:?} declared twice", w.name));
        }
    }
    Ok(())
}

/// Makes every workload with a cgroup sampled under the resource Hello announces for it:
/// a cgroup already named in `[[containers.cgroups]]` keeps its name (the workload's
/// resource becomes `cgroup/<that name>`); otherwise it is added as `cgroup/<workload>`.
/// Workloads with an explicit `resource` are left as they are.
pub fn sample_workload_cgroups(ws: &mut [WorkloadConfig], named: &mut Vec<crate::sampler::NamedCgroup>) {
    for w in ws.iter_mut().filter(|w| w.resource.is_empty()) {
        let Some(path) = w.cgroup.clone() else { continue };
        if let Some(n) = named.iter().find(|n| n.path.trim_matches('/') == path.trim_matches('/')) {
            w.resource = format!("cgroup/{}", n.name);
        } else if named.iter().any(|n| n.name == w.name) {
            // The name is taken by another cgroup: sample this one under a distinct name.
            let name = format!("workload-{}", w.name);
            w.resource = format!("cgroup/{name}");
            named.push(crate::sampler::NamedCgroup { name, path });
        } else {
            named.push(crate::sampler::NamedCgroup { name: w.name.clone(), path });
        }
    }
}

/// What Hello announces for each workload.
pub fn declared(ws: &[WorkloadConfig]) -> Vec<augur_proto::v1::DeclaredWorkload> {
    ws.iter()
        .map(|w| augur_proto::v1::DeclaredWorkload {
            name: w.name.clone(),
            resource: w.resource(),
            allowed_actions: w.allowed_actions.clone(),
            kind: w.kind.as_str().into(),
            standby: w.standby.clone(),
            peers: w.peers.clone(),
            health: w.health.as_ref().map(|h| h.kind().to_owned()).unwrap_or_default(),
            templates: w.templates.iter().map(|t| t.name.clone()).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health_cmd() -> HealthConfig {
        HealthConfig {
            http: None,
            tcp: None,
            command: Some(vec!["true".into()]),
            timeout: Duration::from_secs(1),
            attempts: 1,
            interval: Duration::from_millis(10),
        }
    }

    #[test]
    fn http_probes_parse_host_port_and_path() {
        let mut h = health_cmd();
        h.command = None;
        h.http = Some("http://127.0.0.1:8080/healthz".into());
        assert_eq!(
            h.probe().expect("valid"),
            HealthProbe::Http { addr: "127.0.0.1:8080".into(), host: "127.0.0.1:8080".into(), path: "/healthz".into() }
        );
        h.http = Some("http://localhost".into());
        assert_eq!(
            h.probe().expect("valid"),
            HealthProbe::Http { addr: "localhost:80".into(), host: "localhost".into(), path: "/".into() }
        );
        h.http = Some("https://x/".into());
        assert!(h.probe().expect_err("https").contains("https is not supported"));
        h.http = Some("http://127.0.0.1:{{instance}}/ready".into());
        assert_eq!(
            h.for_instance(Some("8082")).expect("instance").probe().expect("valid"),
            HealthProbe::Http { addr: "127.0.0.1:8082".into(), host: "127.0.0.1:8082".into(), path: "/ready".into() }
        );
        assert!(h.for_instance(None).is_err());
    }

    #[test]
    fn workloads_need_the_means_for_their_actions() {
        let mut w = WorkloadConfig::named("web");
        w.allowed_actions = vec!["resize".into()];
        w.health = Some(health_cmd());
        assert!(validate_workloads(std::slice::from_ref(&w)).expect_err("no cgroup").contains("names no cgroup"));
        w.cgroup = Some("apps/web".into());
        validate_workloads(std::slice::from_ref(&w)).expect("valid");
        w.cgroup = Some("../etc".into());
        assert!(validate_workloads(std::slice::from_ref(&w)).expect_err("dotdot").contains("relative path"));
        w.cgroup = Some("apps/web".into());
        w.health = None;
        assert!(validate_workloads(std::slice::from_ref(&w)).expect_err("no health").contains("health check"));
        w.health = Some(health_cmd());
        w.allowed_actions.push("reboot".into());
        assert!(validate_workloads(std::slice::from_ref(&w)).expect_err("unknown").contains("unknown action"));
        w.allowed_actions = vec!["traffic".into()];
        assert!(validate_workloads(std::slice::from_ref(&w)).expect_err("no haproxy").contains("haproxy"));
        w.allowed_actions = vec!["restart".into()];
        assert!(validate_workloads(std::slice::from_ref(&w)).expect_err("no unit").contains("hooks.restart"));
        w.allowed_actions = vec!["health".into()];
        assert!(validate_workloads(&[w.clone(), w]).expect_err("twice").contains("declared twice"));
    }

    #[test]
    fn workload_cgroups_are_sampled_under_the_resource_hello_announces() {
        let mut a = WorkloadConfig::named("web");
        a.cgroup = Some("apps/web".into());
        let mut b = WorkloadConfig::named("db");
        b.cgroup = Some("apps/db".into());
        let mut c = WorkloadConfig::named("api");
        c.cgroup = Some("apps/api".into());
        c.resource = "container/0123456789ab".into();
        let mut ws = vec![a, b, c];
        let mut named = vec![crate::sampler::NamedCgroup { name: "database".into(), path: "/apps/db".into() }];
        sample_workload_cgroups(&mut ws, &mut named);
        let resources: Vec<String> = ws.iter().map(WorkloadConfig::resource).collect();
        assert_eq!(resources, ["cgroup/web", "cgroup/database", "container/0123456789ab"]);
        let names: Vec<&str> = named.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["database", "web"]);
    }

    #[test]
    fn declared_workloads_carry_resource_kind_and_health() {
        let mut w = WorkloadConfig::named("web");
        w.cgroup = Some("apps/web".into());
        w.allowed_actions = vec!["resize".into()];
        w.health = Some(health_cmd());
        w.standby = "web-b".into();
        let d = declared(&[w]);
        assert_eq!(d[0].resource, "cgroup/web");
        assert_eq!(
            (d[0].kind.as_str(), d[0].health.as_str(), d[0].standby.as_str()),
            ("stateless", "command", "web-b")
        );
    }
}
