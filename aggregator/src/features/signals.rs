//! Which stored series feed the feature engine, and as what.
//!
//! A resource kind has a fixed list of signals (memory usage, CPU rate, …). A series is
//! routed to one signal of one feature resource by its metric name and labels; counters
//! become per-second rates. Filesystems are resources of their own, one per mount
//! point, named `<host>/fs:<mountpoint>`.

use augur_core::series::HOST_RESOURCE;
use augur_core::{MetricKind, SeriesKey};

/// What a feature resource is; each kind has its own signals, features and models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// A cgroup: container, pod, systemd service or named cgroup.
    Container,
    /// The host itself.
    Host,
    /// One mounted filesystem of a host.
    Filesystem,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 3] = [ResourceKind::Container, ResourceKind::Host, ResourceKind::Filesystem];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Container => "container",
            ResourceKind::Host => "host",
            ResourceKind::Filesystem => "filesystem",
        }
    }

    /// Parses [`ResourceKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Signal definitions of this kind, indexed by signal number.
    pub fn signals(self) -> &'static [SignalDef] {
        match self {
            ResourceKind::Container => &CONTAINER,
            ResourceKind::Host => &HOST,
            ResourceKind::Filesystem => &FILESYSTEM,
        }
    }
}

/// One input of a resource kind.
#[derive(Debug, Clone, Copy)]
pub struct SignalDef {
    /// Feature-name stem, e.g. `mem_usage`.
    pub name: &'static str,
    /// Kept in time windows (level, slope, variability); otherwise only the last value.
    pub windowed: bool,
}

const fn w(name: &'static str) -> SignalDef {
    SignalDef { name, windowed: true }
}
const fn last(name: &'static str) -> SignalDef {
    SignalDef { name, windowed: false }
}

// Container signals.
pub const C_MEM_USAGE: usize = 0;
pub const C_MEM_WS: usize = 1;
pub const C_MEM_LIMIT: usize = 2;
pub const C_CPU: usize = 3;
pub const C_CPU_LIMIT: usize = 4;
pub const C_PERIODS: usize = 5;
pub const C_THROTTLED: usize = 6;
pub const C_PIDS: usize = 7;
pub const C_PIDS_MAX: usize = 8;
pub const C_PSI_MEM: usize = 9;
pub const C_PSI_CPU: usize = 10;
pub const C_MEM_FAIL: usize = 11;
pub const C_OOM_KILL: usize = 12;
const CONTAINER: [SignalDef; 13] = [
    w("mem_usage"),
    w("mem_ws"),
    last("mem_limit"),
    w("cpu_cores"),
    last("cpu_limit"),
    w("cfs_periods_rate"),
    w("cfs_throttled_rate"),
    w("pids"),
    last("pids_max"),
    w("psi_mem_waiting"),
    w("psi_cpu_waiting"),
    w("mem_fail_rate"),
    w("oom_kill_rate"),
];

// Host signals.
pub const H_MEM_AVAIL: usize = 0;
pub const H_MEM_TOTAL: usize = 1;
pub const H_SWAP_FREE: usize = 2;
pub const H_SWAP_TOTAL: usize = 3;
pub const H_LOAD1: usize = 4;
pub const H_PSI_CPU: usize = 5;
pub const H_PSI_MEM: usize = 6;
pub const H_PSI_IO: usize = 7;
pub const H_MAJFAULT: usize = 8;
pub const H_OOM_KILL: usize = 9;
pub const H_RETRANS: usize = 10;
const HOST: [SignalDef; 11] = [
    w("mem_avail"),
    last("mem_total"),
    w("swap_free"),
    last("swap_total"),
    w("load1"),
    w("psi_cpu_waiting"),
    w("psi_mem_waiting"),
    w("psi_io_waiting"),
    w("majfault_rate"),
    w("oom_kill_rate"),
    w("tcp_retrans_rate"),
];

// Filesystem signals.
pub const F_SIZE: usize = 0;
pub const F_AVAIL: usize = 1;
pub const F_FILES: usize = 2;
pub const F_FILES_FREE: usize = 3;
const FILESYSTEM: [SignalDef; 4] = [last("fs_size"), w("fs_avail"), last("fs_files"), w("fs_files_free")];

/// Where one series goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub kind: ResourceKind,
    /// Feature resource name: `<host>` for the host, `<host>/<resource>` for containers,
    /// `<host>/fs:<mountpoint>` for filesystems.
    pub resource: String,
    pub signal: usize,
    /// A cumulative counter, turned into a per-second rate.
    pub counter: bool,
}

/// The feature resource, signal and treatment of a series, or `None` if untracked.
pub fn route(host: &str, key: &SeriesKey) -> Option<Route> {
    let counter = key.kind == MetricKind::Counter;
    let label = |name: &str| key.labels.get(name).map(String::as_str);
    let mk = |kind, resource: String, signal| Some(Route { kind, resource, signal, counter });
    if key.resource == HOST_RESOURCE {
        let host_signal = match key.metric.as_str() {
            "node_memory_MemAvailable_bytes" => Some(H_MEM_AVAIL),
            "node_memory_MemTotal_bytes" => Some(H_MEM_TOTAL),
            "node_memory_SwapFree_bytes" => Some(H_SWAP_FREE),
            "node_memory_SwapTotal_bytes" => Some(H_SWAP_TOTAL),
            "node_load1" => Some(H_LOAD1),
            "node_pressure_cpu_waiting_seconds_total" => Some(H_PSI_CPU),
            "node_pressure_memory_waiting_seconds_total" => Some(H_PSI_MEM),
            "node_pressure_io_waiting_seconds_total" => Some(H_PSI_IO),
            "node_vmstat_pgmajfault" => Some(H_MAJFAULT),
            "node_vmstat_oom_kill" => Some(H_OOM_KILL),
            "node_netstat_Tcp_RetransSegs" => Some(H_RETRANS),
            _ => None,
        };
        if let Some(s) = host_signal {
            return mk(ResourceKind::Host, host.to_owned(), s);
        }
        let fs_signal = match key.metric.as_str() {
            "node_filesystem_size_bytes" => F_SIZE,
            "node_filesystem_avail_bytes" => F_AVAIL,
            "node_filesystem_files" => F_FILES,
            "node_filesystem_files_free" => F_FILES_FREE,
            _ => return None,
        };
        let mount = label("mountpoint")?;
        return mk(ResourceKind::Filesystem, format!("{host}/fs:{mount}"), fs_signal);
    }
    let signal = match (key.metric.as_str(), label("event")) {
        ("container_memory_usage_bytes", _) => C_MEM_USAGE,
        ("container_memory_working_set_bytes", _) => C_MEM_WS,
        ("container_spec_memory_limit_bytes", _) => C_MEM_LIMIT,
        ("container_cpu_usage_seconds_total", _) => C_CPU,
        ("container_spec_cpu_limit_cores", _) => C_CPU_LIMIT,
        ("container_cpu_cfs_periods_total", _) => C_PERIODS,
        ("container_cpu_cfs_throttled_periods_total", _) => C_THROTTLED,
        ("container_pids_current", _) => C_PIDS,
        ("container_spec_pids_max", _) => C_PIDS_MAX,
        ("container_pressure_memory_waiting_seconds_total", _) => C_PSI_MEM,
        ("container_pressure_cpu_waiting_seconds_total", _) => C_PSI_CPU,
        // v1 counts hits of the limit in failcnt; v2 in memory.events `max`.
        ("container_memory_failcnt", _) | ("container_memory_events_total", Some("max")) => C_MEM_FAIL,
        ("container_memory_events_total", Some("oom_kill")) => C_OOM_KILL,
        _ => return None,
    };
    mk(ResourceKind::Container, format!("{host}/{}", key.resource), signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(resource: &str, metric: &str, kind: MetricKind, labels: &[(&str, &str)]) -> SeriesKey {
        SeriesKey {
            resource: resource.into(),
            metric: metric.into(),
            unit: String::new(),
            kind,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn series_route_to_their_resource_and_signal() {
        let r = route("h1", &key("cgroup/lab/a", "container_memory_usage_bytes", MetricKind::Gauge, &[])).unwrap();
        assert_eq!(
            (r.kind, r.resource.as_str(), r.signal, r.counter),
            (ResourceKind::Container, "h1/cgroup/lab/a", C_MEM_USAGE, false)
        );
        let r =
            route("h1", &key("cgroup/lab/a", "container_cpu_usage_seconds_total", MetricKind::Counter, &[])).unwrap();
        assert!(r.counter);
        let r = route("h1", &key("host", "node_memory_MemAvailable_bytes", MetricKind::Gauge, &[])).unwrap();
        assert_eq!((r.kind, r.resource.as_str()), (ResourceKind::Host, "h1"));
        let fs = key(
            "host",
            "node_filesystem_avail_bytes",
            MetricKind::Gauge,
            &[("mountpoint", "/mnt/x"), ("device", "loop0")],
        );
        let r = route("h1", &fs).unwrap();
        assert_eq!((r.kind, r.resource.as_str(), r.signal), (ResourceKind::Filesystem, "h1/fs:/mnt/x", F_AVAIL));
    }

    #[test]
    fn memory_events_route_by_event_label_and_others_are_untracked() {
        let ev = |e| key("pod/a/b/c", "container_memory_events_total", MetricKind::Counter, &[("event", e)]);
        assert_eq!(route("h", &ev("oom_kill")).unwrap().signal, C_OOM_KILL);
        assert_eq!(route("h", &ev("max")).unwrap().signal, C_MEM_FAIL);
        assert_eq!(route("h", &ev("low")), None);
        assert_eq!(route("h", &key("host", "node_cpu_seconds_total", MetricKind::Counter, &[])), None);
        // A filesystem series without its mount point cannot be placed.
        assert_eq!(route("h", &key("host", "node_filesystem_avail_bytes", MetricKind::Gauge, &[])), None);
    }
}
