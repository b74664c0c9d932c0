//! The command vocabulary: what the aggregator may ask an agent to do.
//!
//! On the wire a command is `augur.v1.Command` (a kind string and a string map of
//! arguments, so an old agent can refuse a kind it does not know). Both sides convert
//! through [`CommandSpec::from_args`] and [`CommandSpec::to_args`], so the argument names
//! live in this one file.
//!
//! | kind      | resource          | arguments                                                    |
//! |-----------|-------------------|--------------------------------------------------------------|
//! | `resize`  | workload          | any of `memory_max`, `memory_high` (bytes), `cpu_max` (cores)|
//! | `restart` | workload          |                                                              |
//! | `start`   | workload          | optional `instance`                                          |
//! | `stop`    | workload          | optional `instance`                                          |
//! | `traffic` | load balancer     | `backend`, `server`, and `state` (ready, drain, maint) or `weight` (0..=256) or `op` (add, del) with `address` (`ip:port`) |
//! | `config`  | workload          | `template`, `version`, `var.<name>` values                   |
//! | `health`  | workload          |                                                              |
//! | `checkpoint` | stateful workload | optional `leave_running` (`true`/`false`, default false): CRIU dump into an image named by the command's id |
//! | `restore` | stateful workload | `image` (a checkpoint's command id), optional `from_host` (images copied from that host) |
//! | `rollback`| (any)             | `command_id` of the command to undo                          |

use std::collections::BTreeMap;

/// Largest memory size a resize may ask for (16 TiB): anything above is a bug upstream.
pub const MAX_MEMORY_BYTES: u64 = 16 << 40;
/// Largest CPU allowance a resize may ask for, in cores.
pub const MAX_CPU_CORES: f64 = 4096.0;

/// Why a command's arguments are refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command kind {0:?}")]
    UnknownKind(String),
    #[error("command {kind}: missing argument {arg:?}")]
    Missing { kind: &'static str, arg: &'static str },
    #[error("command {kind}: argument {arg:?} = {value:?}: {why}")]
    Invalid { kind: &'static str, arg: String, value: String, why: String },
    #[error("command {kind}: unknown argument {arg:?}")]
    Unknown { kind: &'static str, arg: String },
}

/// Traffic state of one load-balancer server (HAProxy's `set server ... state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    Ready,
    Drain,
    Maint,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Ready => "ready",
            ServerState::Drain => "drain",
            ServerState::Maint => "maint",
        }
    }
}

/// What a `traffic` command changes for one server of one backend.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum TrafficChange {
    State { state: ServerState },
    Weight { weight: u32 },
    Add { address: String },
    Del,
}

/// New limits for a workload; `None` leaves a limit as it is.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resize {
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    /// CPU allowance in cores (cgroup v2 `cpu.max` quota / period).
    pub cpu_max: Option<f64>,
}

/// One command, typed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CommandSpec {
    Resize(Resize),
    Restart,
    Start {
        instance: Option<String>,
    },
    Stop {
        instance: Option<String>,
    },
    Traffic {
        backend: String,
        server: String,
        change: TrafficChange,
    },
    Config {
        template: String,
        version: String,
        vars: BTreeMap<String, String>,
    },
    Health,
    Rollback {
        command_id: String,
    },
    /// CRIU dump of the workload's process tree; the image is named by the command's id.
    /// Without `leave_running` the tree is stopped by the dump (undone by restoring it).
    Checkpoint {
        leave_running: bool,
    },
    /// CRIU restore of a checkpoint image (`image` = the checkpoint's command id), from
    /// this host's images or, with `from_host`, from images copied from that host.
    Restore {
        image: String,
        from_host: Option<String>,
    },
}

/// A typed command with its envelope (the fields of `augur.v1.Command`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Envelope {
    pub id: String,
    /// Commands with the same key are applied once (a retried command gets a new id, the same key).
    pub idempotency_key: String,
    pub target_host: String,
    /// The workload (or load balancer) the command acts on, by its declared name.
    pub resource: String,
    /// Unix milliseconds after which the agent refuses to start the command.
    pub deadline_ms: i64,
    pub dry_run: bool,
    pub spec: CommandSpec,
}

fn parse_bytes(kind: &'static str, arg: &str, v: &str) -> Result<u64, CommandError> {
    let n = crate::units::parse_bytes(v).map_err(|e| CommandError::Invalid {
        kind,
        arg: arg.into(),
        value: v.into(),
        why: e.to_string(),
    })?;
    if n == 0 || n > MAX_MEMORY_BYTES {
        return Err(CommandError::Invalid {
            kind,
            arg: arg.into(),
            value: v.into(),
            why: format!("must be between 1 byte and {}", crate::units::format_bytes(MAX_MEMORY_BYTES)),
        });
    }
    Ok(n)
}

fn parse_cores(kind: &'static str, arg: &str, v: &str) -> Result<f64, CommandError> {
    let bad = |why: &str| CommandError::Invalid { kind, arg: arg.into(), value: v.into(), why: why.into() };
    let c: f64 = v.trim().parse().map_err(|_| bad("not a number of cores"))?;
    if !c.is_finite() || c <= 0.0 || c > MAX_CPU_CORES {
        return Err(bad("must be a number of cores above 0 and at most 4096"));
    }
    Ok(c)
}

fn check_name(kind: &'static str, arg: &str, v: &str) -> Result<String, CommandError> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(CommandError::Invalid {
            kind,
            arg: arg.into(),
            value: v.into(),
            why: "must be 1 to 128 characters of [A-Za-z0-9._:@-]".into(),
        })
    }
}

impl CommandSpec {
    /// The wire kind string.
    pub fn kind(&self) -> &'static str {
        match self {
            CommandSpec::Resize(_) => "resize",
            CommandSpec::Restart => "restart",
            CommandSpec::Start { .. } => "start",
            CommandSpec::Stop { .. } => "stop",
            CommandSpec::Traffic { .. } => "traffic",
            CommandSpec::Config { .. } => "config",
            CommandSpec::Health => "health",
            CommandSpec::Rollback { .. } => "rollback",
            CommandSpec::Checkpoint { .. } => "checkpoint",
            CommandSpec::Restore { .. } => "restore",
        }
    }

    /// Whether the command changes something (everything but `health`).
    pub fn mutates(&self) -> bool {
        !matches!(self, CommandSpec::Health)
    }

    /// The wire arguments.
    pub fn to_args(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        match self {
            CommandSpec::Resize(r) => {
                if let Some(v) = r.memory_max {
                    a.insert("memory_max".into(), v.to_string());
                }
                if let Some(v) = r.memory_high {
                    a.insert("memory_high".into(), v.to_string());
                }
                if let Some(v) = r.cpu_max {
                    a.insert("cpu_max".into(), v.to_string());
                }
            }
            CommandSpec::Restart | CommandSpec::Health => {}
            CommandSpec::Start { instance } | CommandSpec::Stop { instance } => {
                if let Some(i) = instance {
                    a.insert("instance".into(), i.clone());
                }
            }
            CommandSpec::Traffic { backend, server, change } => {
                a.insert("backend".into(), backend.clone());
                a.insert("server".into(), server.clone());
                match change {
                    TrafficChange::State { state } => {
                        a.insert("state".into(), state.as_str().into());
                    }
                    TrafficChange::Weight { weight } => {
                        a.insert("weight".into(), weight.to_string());
                    }
                    TrafficChange::Add { address } => {
                        a.insert("op".into(), "add".into());
                        a.insert("address".into(), address.clone());
                    }
                    TrafficChange::Del => {
                        a.insert("op".into(), "del".into());
                    }
                }
            }
            CommandSpec::Config { template, version, vars } => {
                a.insert("template".into(), template.clone());
                a.insert("version".into(), version.clone());
                for (k, v) in vars {
                    a.insert(format!("var.{k}"), v.clone());
                }
            }
            CommandSpec::Rollback { command_id } => {
                a.insert("command_id".into(), command_id.clone());
            }
            CommandSpec::Checkpoint { leave_running } => {
                a.insert("leave_running".into(), leave_running.to_string());
            }
            CommandSpec::Restore { image, from_host } => {
                a.insert("image".into(), image.clone());
                if let Some(h) = from_host {
                    a.insert("from_host".into(), h.clone());
                }
            }
        }
        a
    }

    /// Parses wire arguments; unknown kinds and arguments are refused, never ignored.
    pub fn from_args<'a, I>(kind: &str, args: I) -> Result<CommandSpec, CommandError>
    where
        I: IntoIterator<Item = (&'a String, &'a String)>,
    {
        let args: BTreeMap<&str, &str> = args.into_iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let only = |k: &'static str, allowed: &[&str]| -> Result<(), CommandError> {
            match args.keys().find(|a| !(allowed.contains(a) || k == "config" && a.starts_with("var."))) {
                Some(a) => Err(CommandError::Unknown { kind: k, arg: (*a).into() }),
                None => Ok(()),
            }
        };
        let need = |k: &'static str, a: &'static str| -> Result<&str, CommandError> {
            args.get(a).copied().ok_or(CommandError::Missing { kind: k, arg: a })
        };
        match kind {
            "resize" => {
                only("resize", &["memory_max", "memory_high", "cpu_max"])?;
                let r = Resize {
                    memory_max: args.get("memory_max").map(|v| parse_bytes("resize", "memory_max", v)).transpose()?,
                    memory_high: args
                        .get("memory_high")
                        .map(|v| parse_bytes("resize", "memory_high", v))
                        .transpose()?,
                    cpu_max: args.get("cpu_max").map(|v| parse_cores("resize", "cpu_max", v)).transpose()?,
                };
                if r == Resize::default() {
                    return Err(CommandError::Missing { kind: "resize", arg: "memory_max, memory_high or cpu_max" });
                }
                Ok(CommandSpec::Resize(r))
            }
            "restart" => only("restart", &[]).map(|_| CommandSpec::Restart),
            "health" => only("health", &[]).map(|_| CommandSpec::Health),
            "start" | "stop" => {
                let k = if kind == "start" { "start" } else { "stop" };
                only(k, &["instance"])?;
                let instance = args.get("instance").map(|v| check_name(k, "instance", v)).transpose()?;
                Ok(if k == "start" { CommandSpec::Start { instance } } else { CommandSpec::Stop { instance } })
            }
            "traffic" => {
                only("traffic", &["backend", "server", "state", "weight", "op", "address"])?;
                let backend = check_name("traffic", "backend", need("traffic", "backend")?)?;
                let server = check_name("traffic", "server", need("traffic", "server")?)?;
                let invalid = |arg: &str, value: &str, why: &str| CommandError::Invalid {
                    kind: "traffic",
                    arg: arg.into(),
                    value: value.into(),
                    why: why.into(),
                };
                let picked = ["state", "weight", "op"].iter().filter(|a| args.contains_key(*a)).count();
                if picked != 1 {
                    return Err(invalid("state|weight|op", "", "exactly one of state, weight or op is needed"));
                }
                let change = if let Some(s) = args.get("state") {
                    let state = match *s {
                        "ready" => ServerState::Ready,
                        "drain" => ServerState::Drain,
                        "maint" => ServerState::Maint,
                        _ => return Err(invalid("state", s, "must be ready, drain or maint")),
                    };
                    TrafficChange::State { state }
                } else if let Some(w) = args.get("weight") {
                    let weight: u32 = w.parse().map_err(|_| invalid("weight", w, "must be an integer 0..=256"))?;
                    if weight > 256 {
                        return Err(invalid("weight", w, "must be an integer 0..=256"));
                    }
                    TrafficChange::Weight { weight }
                } else {
                    let op = need("traffic", "op")?;
                    match op {
                        "add" => {
                            let address = need("traffic", "address")?;
                            if address.parse::<std::net::SocketAddr>().is_err() {
                                return Err(invalid("address", address, "must be ip:port"));
                            }
                            TrafficChange::Add { address: address.into() }
                        }
                        "del" => TrafficChange::Del,
                        _ => return Err(invalid("op", op, "must be add or del")),
                    }
                };
                if args.contains_key("address") && !matches!(change, TrafficChange::Add { .. }) {
                    return Err(CommandError::Unknown { kind: "traffic", arg: "address".into() });
                }
                Ok(CommandSpec::Traffic { backend, server, change })
            }
            "config" => {
                only("config", &["template", "version"])?;
                let template = check_name("config", "template", need("config", "template")?)?;
                let version = check_name("config", "version", need("config", "version")?)?;
                let mut vars = BTreeMap::new();
                for (k, v) in &args {
                    if let Some(name) = k.strip_prefix("var.") {
                        vars.insert(check_name("config", k, name)?, (*v).to_owned());
                    }
                }
                Ok(CommandSpec::Config { template, version, vars })
            }
            "rollback" => {
                only("rollback", &["command_id"])?;
                let command_id = check_name("rollback", "command_id", need("rollback", "command_id")?)?;
                Ok(CommandSpec::Rollback { command_id })
            }
            "checkpoint" => {
                only("checkpoint", &["leave_running"])?;
                let leave_running = match args.get("leave_running").copied() {
                    None | Some("false") => false,
                    Some("true") => true,
                    Some(v) => {
                        return Err(CommandError::Invalid {
                            kind: "checkpoint",
                            arg: "leave_running".into(),
                            value: v.into(),
                            why: "must be true or false".into(),
                        });
                    }
                };
                Ok(CommandSpec::Checkpoint { leave_running })
            }
            "restore" => {
                only("restore", &["image", "from_host"])?;
                let image = check_name("restore", "image", need("restore", "image")?)?;
                if image.starts_with('.') {
                    return Err(CommandError::Invalid {
                        kind: "restore",
                        arg: "image".into(),
                        value: image,
                        why: "must not start with a dot".into(),
                    });
                }
                let from_host = args.get("from_host").map(|v| check_name("restore", "from_host", v)).transpose()?;
                if from_host.as_deref().is_some_and(|h| h.starts_with('.')) {
                    return Err(CommandError::Invalid {
                        kind: "restore",
                        arg: "from_host".into(),
                        value: from_host.unwrap_or_default(),
                        why: "must not start with a dot".into(),
                    });
                }
                Ok(CommandSpec::Restore { image, from_host })
            }
            other => Err(CommandError::UnknownKind(other.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn every_kind_round_trips_through_wire_args() {
        let specs = vec![
            CommandSpec::Resize(Resize { memory_max: Some(512 << 20), memory_high: None, cpu_max: Some(1.5) }),
            CommandSpec::Restart,
            CommandSpec::Start { instance: Some("web@2".into()) },
            CommandSpec::Stop { instance: None },
            CommandSpec::Traffic {
                backend: "app".into(),
                server: "a".into(),
                change: TrafficChange::State { state: ServerState::Drain },
            },
            CommandSpec::Traffic {
                backend: "app".into(),
                server: "b".into(),
                change: TrafficChange::Weight { weight: 7 },
            },
            CommandSpec::Traffic {
                backend: "app".into(),
                server: "c".into(),
                change: TrafficChange::Add { address: "10.0.0.2:8080".into() },
            },
            CommandSpec::Traffic { backend: "app".into(), server: "c".into(), change: TrafficChange::Del },
            CommandSpec::Config {
                template: "app.conf".into(),
                version: "v3".into(),
                vars: [("workers".to_string(), "8".to_string())].into(),
            },
            CommandSpec::Health,
            CommandSpec::Rollback { command_id: "c-17".into() },
            CommandSpec::Checkpoint { leave_running: false },
            CommandSpec::Checkpoint { leave_running: true },
            CommandSpec::Restore { image: "c-18".into(), from_host: None },
            CommandSpec::Restore { image: "c-18".into(), from_host: Some("app-1".into()) },
        ];
        for s in specs {
            let back = CommandSpec::from_args(s.kind(), &s.to_args()).expect("round trip");
            assert_eq!(back, s);
        }
    }

    #[test]
    fn bad_arguments_are_refused_with_the_argument_named() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            ("resize", &[], "memory_max, memory_high or cpu_max"),
            ("resize", &[("memory_max", "0")], "memory_max"),
            ("resize", &[("memory_max", "99999TiB")], "memory_max"),
            ("resize", &[("cpu_max", "NaN")], "cpu_max"),
            ("resize", &[("cpu_max", "-1")], "cpu_max"),
            ("resize", &[("memory_max", "1GiB"), ("swap", "1")], "swap"),
            ("traffic", &[("backend", "app"), ("server", "a")], "exactly one"),
            ("traffic", &[("backend", "app"), ("server", "a"), ("state", "up")], "ready, drain or maint"),
            ("traffic", &[("backend", "app"), ("server", "a"), ("weight", "300")], "0..=256"),
            ("traffic", &[("backend", "app"), ("server", "a"), ("op", "add"), ("address", "x")], "ip:port"),
            ("traffic", &[("backend", "a b"), ("server", "a"), ("state", "ready")], "backend"),
            ("config", &[("template", "../etc/passwd"), ("version", "1")], "template"),
            ("rollback", &[], "command_id"),
            ("reboot", &[], "unknown command kind"),
            ("checkpoint", &[("leave_running", "yes")], "true or false"),
            ("checkpoint", &[("dir", "/tmp")], "unknown argument \"dir\""),
            ("restore", &[], "image"),
            ("restore", &[("image", "../../etc")], "image"),
            ("restore", &[("image", "..")], "dot"),
            ("restore", &[("image", "c1"), ("from_host", "a/b")], "from_host"),
            ("restore", &[("image", "c1"), ("from_host", "..")], "dot"),
        ];
        for (kind, kv, needle) in cases {
            let e = CommandSpec::from_args(kind, &args(kv)).expect_err(kind).to_string();
            assert!(e.contains(needle), "{kind} {kv:?}: {e:?} should mention {needle:?}");
        }
    }

    #[test]
    fn a_checkpoint_stops_the_workload_unless_told_to_leave_it_running() {
        let none = BTreeMap::new();
        assert_eq!(CommandSpec::from_args("checkpoint", &none), Ok(CommandSpec::Checkpoint { leave_running: false }));
        let s = CommandSpec::from_args("checkpoint", &args(&[("leave_running", "true")])).expect("valid");
        assert_eq!(s, CommandSpec::Checkpoint { leave_running: true });
        assert!(s.mutates());
    }

    #[test]
    fn human_sizes_are_accepted_for_memory() {
        let s = CommandSpec::from_args("resize", &args(&[("memory_max", "1GiB")])).expect("valid");
        assert_eq!(s, CommandSpec::Resize(Resize { memory_max: Some(1 << 30), ..Resize::default() }));
    }
}
