//! The container sampler: per-workload CPU, memory, I/O and pids from cgroup v1, v2 or
//! hybrid hierarchies, with cAdvisor's names.
//!
//! Workloads are found by [`discovery`](super::discovery) every `discovery_interval`
//! (not every tick): Docker and containerd containers, Kubernetes pod containers,
//! systemd services, named cgroups and children of watched prefixes. Limits (`spec`
//! series) are re-read at each discovery too; usage is read every tick.
//!
//! Emitted series, one set per workload resource:
//!
//! | metric | kind | unit | source v1 / v2 |
//! |---|---|---|---|
//! | `container_cpu_usage_seconds_total` | counter | seconds | `cpuacct.usage` / `cpu.stat` usage_usec |
//! | `container_cpu_cfs_periods_total` | counter | count | `cpu.stat` nr_periods |
//! | `container_cpu_cfs_throttled_periods_total` | counter | count | `cpu.stat` nr_throttled |
//! | `container_cpu_cfs_throttled_seconds_total` | counter | seconds | `cpu.stat` throttled_time / throttled_usec |
//! | `container_spec_cpu_limit_cores` (omitted when unlimited) | gauge | cores | `cpu.cfs_quota_us / cpu.cfs_period_us` / `cpu.max` |
//! | `container_memory_usage_bytes` | gauge | bytes | `memory.usage_in_bytes` / `memory.current` |
//! | `container_spec_memory_limit_bytes` (omitted when unlimited) | gauge | bytes | `memory.limit_in_bytes` / `memory.max` |
//! | `container_memory_working_set_bytes` | gauge | bytes | usage − (total_)inactive_file |
//! | `container_memory_rss` | gauge | bytes | `memory.stat` total_rss / anon |
//! | `container_memory_cache` | gauge | bytes | `memory.stat` total_cache / file |
//! | `container_memory_failcnt` (v1) | counter | count | `memory.failcnt` |
//! | `container_memory_events_total{event}` | counter | count | `memory.oom_control` oom_kill (event `oom_kill`) / `memory.events` low, high, max, oom, oom_kill |
//! | `container_fs_reads_bytes_total`, `container_fs_writes_bytes_total` | counter | bytes | `blkio.throttle.io_service_bytes[_recursive]` / `io.stat` rbytes, wbytes |
//! | `container_fs_reads_total`, `container_fs_writes_total` | counter | count | `blkio.throttle.io_serviced[_recursive]` / `io.stat` rios, wios |
//! | `container_pids_current` | gauge | count | `pids.current` |
//! | `container_spec_pids_max` (omitted for `max`) | gauge | count | `pids.max` |
//! | `container_pressure_{cpu,memory,io}_waiting_seconds_total` | counter | seconds | — / `*.pressure` some total |
//! | `container_pressure_{cpu,memory,io}_stalled_seconds_total` | counter | seconds | — / `*.pressure` full total |
//!
//! In a hybrid layout each controller is read from the hierarchy it is attached to (the
//! v1 mount when there is one) and PSI from the unified hierarchy where the workload has
//! a cgroup there. A file missing because a controller is not enabled for a cgroup is
//! skipped until the next discovery; a cgroup that vanished since discovery is dropped
//! silently. Neither counts as an error.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cgroupfs::{self, V1_UNLIMITED};
use super::discovery::{self, Found, Layout, Runtimes, SLOTS, Slot, Wanted};
use super::host::psi_unsupported;
use super::procfs::{self, ParseError};
use super::{ErrorLog, Family, FileReader, Sample, Sampler, push};

/// The `[containers]` section of the agent config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerSamplerConfig {
    /// Where the cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// Where procfs is mounted; `<proc_root>/self/mountinfo` says which cgroup
    /// controllers are mounted where.
    pub proc_root: PathBuf,
    /// Discover Docker containers (`docker/<id>`, `docker-<id>.scope`).
    pub docker: bool,
    /// Discover containerd/CRI containers outside Kubernetes (`<namespace>/<id>`,
    /// `cri-containerd-<id>.scope`, `nerdctl-<id>.scope`).
    pub containerd: bool,
    /// Discover Kubernetes pod containers (`kubepods…/pod<uid>/<id>`), named
    /// `pod/<pod-uid>/<container-id-12>`.
    pub kubernetes: bool,
    /// Discover systemd services (`system.slice/<unit>.service`), named
    /// `service/<unit>.service`.
    pub systemd_services: bool,
    /// Explicitly named cgroups, reported as `cgroup/<name>`; these win when discovery
    /// finds the same cgroup under another name.
    pub cgroups: Vec<NamedCgroup>,
    /// Cgroup paths (relative to the hierarchy root) whose direct children are each
    /// reported as `cgroup/<prefix>/<child>`.
    pub watch_prefixes: Vec<String>,
    /// How often the hierarchies are re-scanned for new and vanished workloads and limits
    /// are re-read.
    #[serde(with = "augur_core::units::duration")]
    pub discovery_interval: Duration,
}

impl Default for ContainerSamplerConfig {
    fn default() -> Self {
        ContainerSamplerConfig {
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            proc_root: PathBuf::from("/proc"),
            docker: true,
            containerd: true,
            kubernetes: true,
            systemd_services: true,
            cgroups: Vec::new(),
            watch_prefixes: Vec::new(),
            discovery_interval: Duration::from_secs(5),
        }
    }
}

/// A cgroup sampled under a name of the operator's choosing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamedCgroup {
    /// Resource name suffix: the cgroup is reported as `cgroup/<name>`.
    pub name: String,
    /// Path relative to the hierarchy root, e.g. `augur-demo/web`.
    pub path: String,
}

const CPU_USAGE_SECONDS: Family = Family::counter("container_cpu_usage_seconds_total", "seconds");
const CPU_CFS_PERIODS: Family = Family::counter("container_cpu_cfs_periods_total", "count");
const CPU_CFS_THROTTLED_PERIODS: Family = Family::counter("container_cpu_cfs_throttled_periods_total", "count");
const CPU_CFS_THROTTLED_SECONDS: Family = Family::counter("container_cpu_cfs_throttled_seconds_total", "seconds");
const MEMORY_USAGE_BYTES: Family = Family::gauge("container_memory_usage_bytes", "bytes");
const MEMORY_WORKING_SET_BYTES: Family = Family::gauge("container_memory_working_set_bytes", "bytes");
const MEMORY_RSS: Family = Family::gauge("container_memory_rss", "bytes");
const MEMORY_CACHE: Family = Family::gauge("container_memory_cache", "bytes");
const MEMORY_FAILCNT: Family = Family::counter("container_memory_failcnt", "count");
const MEMORY_EVENTS: Family = Family::counter("container_memory_events_total", "count");
const FS_READS_BYTES: Family = Family::counter("container_fs_reads_bytes_total", "bytes");
const FS_WRITES_BYTES: Family = Family::counter("container_fs_writes_bytes_total", "bytes");
const FS_READS: Family = Family::counter("container_fs_reads_total", "count");
const FS_WRITES: Family = Family::counter("container_fs_writes_total", "count");
const PIDS_CURRENT: Family = Family::gauge("container_pids_current", "count");
const SPEC_CPU_LIMIT_CORES: Family = Family::gauge("container_spec_cpu_limit_cores", "cores");
const SPEC_MEMORY_LIMIT_BYTES: Family = Family::gauge("container_spec_memory_limit_bytes", "bytes");
const SPEC_PIDS_MAX: Family = Family::gauge("container_spec_pids_max", "count");
const PSI_CPU_WAITING: Family = Family::counter("container_pressure_cpu_waiting_seconds_total", "seconds");
const PSI_CPU_STALLED: Family = Family::counter("container_pressure_cpu_stalled_seconds_total", "seconds");
const PSI_MEMORY_WAITING: Family = Family::counter("container_pressure_memory_waiting_seconds_total", "seconds");
const PSI_MEMORY_STALLED: Family = Family::counter("container_pressure_memory_stalled_seconds_total", "seconds");
const PSI_IO_WAITING: Family = Family::counter("container_pressure_io_waiting_seconds_total", "seconds");
const PSI_IO_STALLED: Family = Family::counter("container_pressure_io_stalled_seconds_total", "seconds");

/// The control files read, each from one slot's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CgFile {
    V1CpuacctUsage,
    V1CpuStat,
    V1CfsQuota,
    V1CfsPeriod,
    V1MemUsage,
    V1MemLimit,
    V1MemStat,
    V1MemFailcnt,
    V1OomControl,
    V1BlkioBytes,
    V1BlkioOps,
    V1PidsCurrent,
    V1PidsMax,
    V2CpuStat,
    V2CpuMax,
    V2MemCurrent,
    V2MemMax,
    V2MemStat,
    V2MemEvents,
    V2IoStat,
    V2PidsCurrent,
    V2PidsMax,
    V2CpuPressure,
    V2MemPressure,
    V2IoPressure,
}

impl CgFile {
    fn slot(self) -> Slot {
        use CgFile::*;
        match self {
            V1CpuacctUsage => Slot::Cpuacct,
            V1CpuStat | V1CfsQuota | V1CfsPeriod => Slot::Cpu,
            V1MemUsage | V1MemLimit | V1MemStat | V1MemFailcnt | V1OomControl => Slot::Memory,
            V1BlkioBytes | V1BlkioOps => Slot::Blkio,
            V1PidsCurrent | V1PidsMax => Slot::Pids,
            _ => Slot::Unified,
        }
    }

    fn file_name(self, blkio_recursive: bool) -> &'static str {
        use CgFile::*;
        match self {
            V1CpuacctUsage => "cpuacct.usage",
            V1CpuStat | V2CpuStat => "cpu.stat",
            V1CfsQuota => "cpu.cfs_quota_us",
            V1CfsPeriod => "cpu.cfs_period_us",
            V1MemUsage => "memory.usage_in_bytes",
            V1MemLimit => "memory.limit_in_bytes",
            V1MemStat | V2MemStat => "memory.stat",
            V1MemFailcnt => "memory.failcnt",
            V1OomControl => "memory.oom_control",
            V1BlkioBytes if blkio_recursive => "blkio.throttle.io_service_bytes_recursive",
            V1BlkioBytes => "blkio.throttle.io_service_bytes",
            V1BlkioOps if blkio_recursive => "blkio.throttle.io_serviced_recursive",
            V1BlkioOps => "blkio.throttle.io_serviced",
            V1PidsCurrent | V2PidsCurrent => "pids.current",
            V1PidsMax | V2PidsMax => "pids.max",
            V2CpuMax => "cpu.max",
            V2MemCurrent => "memory.current",
            V2MemMax => "memory.max",
            V2MemEvents => "memory.events",
            V2IoStat => "io.stat",
            V2CpuPressure => "cpu.pressure",
            V2MemPressure => "memory.pressure",
            V2IoPressure => "io.pressure",
        }
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }

    fn is_psi(self) -> bool {
        matches!(self, CgFile::V2CpuPressure | CgFile::V2MemPressure | CgFile::V2IoPressure)
    }
}

/// Limits, re-read at each discovery.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Spec {
    cpu_limit_cores: Option<f64>,
    memory_limit_bytes: Option<u64>,
    pids_max: Option<u64>,
}

/// One discovered workload.
#[derive(Debug)]
struct Target {
    resource: String,
    /// The workload's directory in each hierarchy it has a cgroup in.
    dirs: [Option<PathBuf>; SLOTS],
    /// Files found missing (controller not enabled here); skipped until rediscovery.
    absent: u32,
    /// The cgroup was removed since discovery; skipped until rediscovery.
    vanished: bool,
    spec: Spec,
}

impl Target {
    fn new(found: Found, layout: &Layout) -> Self {
        let dirs = layout.roots.each_ref().map(|root| {
            let dir = root.as_ref()?.join(&found.rel);
            dir.is_dir().then_some(dir)
        });
        Target { resource: found.resource, dirs, absent: 0, vanished: false, spec: Spec::default() }
    }

    fn dir(&self, slot: Slot) -> Option<&std::path::Path> {
        self.dirs[slot as usize].as_deref()
    }

    /// Whether the cgroup still exists in any hierarchy it was found in.
    fn exists(&self) -> bool {
        self.dirs.iter().flatten().any(|d| d.is_dir())
    }
}

/// Whether an error means the file or its cgroup is not there (rather than unreadable).
fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
}

/// What one tick's reads share.
struct Ctx<'a> {
    layout: &'a Layout,
    reader: &'a mut FileReader,
    errors: &'a mut ErrorLog,
    psi_available: &'a mut bool,
}

impl Ctx<'_> {
    /// Reads one control file of `t`. `None` when it does not apply (no such hierarchy,
    /// controller not enabled, cgroup vanished, PSI off) or failed (counted).
    fn read(&mut self, t: &mut Target, file: CgFile) -> Option<&str> {
        if t.vanished || t.absent & file.bit() != 0 || (file.is_psi() && !*self.psi_available) {
            return None;
        }
        let dir = t.dir(file.slot())?;
        let err = match self.reader.read_in(dir, file.file_name(self.layout.blkio_recursive)) {
            Ok(_) => return Some(self.reader.text()),
            Err(e) => e,
        };
        if is_missing(&err) {
            if t.exists() {
                tracing::debug!(resource = %t.resource, path = %self.reader.path().display(), "cgroup file absent; skipped until rediscovery");
                t.absent |= file.bit();
            } else {
                tracing::debug!(resource = %t.resource, "cgroup vanished since discovery");
                t.vanished = true;
            }
        } else if file.is_psi() && psi_unsupported(&err) {
            *self.psi_available = false;
            tracing::warn!(error = %err, "cgroup PSI not available; container pressure metrics disabled");
        } else {
            let e = self.reader.read_error(err);
            self.errors.record(e);
        }
        None
    }

    fn parse_failed(&mut self, e: ParseError) {
        let err = self.reader.parse_error(e.0);
        self.errors.record(err);
    }

    /// Reads one control file and parses it; `None` when not read or not parsed (a parse
    /// failure is counted).
    fn read_parsed<T>(
        &mut self,
        t: &mut Target,
        file: CgFile,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Option<T> {
        let text = self.read(t, file)?;
        match parse(text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.parse_failed(e);
                None
            }
        }
    }

    /// Reads a file holding one number.
    fn read_u64(&mut self, t: &mut Target, file: CgFile) -> Option<u64> {
        self.read_parsed(t, file, cgroupfs::single_u64)
    }

    /// Reads a flat keyed file and looks up `keys`.
    fn read_keyed<const N: usize>(
        &mut self,
        t: &mut Target,
        file: CgFile,
        keys: [&str; N],
    ) -> Option<[Option<u64>; N]> {
        self.read_parsed(t, file, |text| cgroupfs::keyed_values(text, keys))
    }

    /// Re-reads the workload's limits; unlimited ones are `None`.
    fn read_spec(&mut self, t: &mut Target) {
        let l = self.layout;
        let cpu = if l.root(Slot::Cpu).is_some() {
            self.read_parsed(t, CgFile::V1CfsQuota, cgroupfs::cfs_quota_us).flatten().and_then(|quota| {
                let period = self.read_u64(t, CgFile::V1CfsPeriod)?;
                cgroupfs::quota_cores(quota, period)
            })
        } else {
            self.read_parsed(t, CgFile::V2CpuMax, cgroupfs::cpu_max_cores).flatten()
        };
        let memory = if l.root(Slot::Memory).is_some() {
            self.read_u64(t, CgFile::V1MemLimit).filter(|&v| v < V1_UNLIMITED)
        } else {
            self.read_parsed(t, CgFile::V2MemMax, cgroupfs::max_or_u64).flatten()
        };
        let pids_file = if l.root(Slot::Pids).is_some() { CgFile::V1PidsMax } else { CgFile::V2PidsMax };
        let pids = self.read_parsed(t, pids_file, cgroupfs::max_or_u64).flatten();
        t.spec = Spec { cpu_limit_cores: cpu, memory_limit_bytes: memory, pids_max: pids };
    }

    fn sample_cpu(&mut self, t: &mut Target, out: &mut Vec<Sample>) {
        // (usage seconds, periods, throttled periods, throttled seconds)
        let (mut usage, mut throttle) = (None, None);
        if self.layout.root(Slot::Cpuacct).is_some() {
            usage = self.read_u64(t, CgFile::V1CpuacctUsage).map(|ns| ns as f64 / 1e9);
        }
        if self.layout.root(Slot::Cpu).is_some() {
            if let Some([Some(p), Some(n), Some(ns)]) =
                self.read_keyed(t, CgFile::V1CpuStat, ["nr_periods", "nr_throttled", "throttled_time"])
            {
                throttle = Some((p, n, ns as f64 / 1e9));
            }
        } else if let Some([u, p, n, us]) =
            self.read_keyed(t, CgFile::V2CpuStat, ["usage_usec", "nr_periods", "nr_throttled", "throttled_usec"])
        {
            if usage.is_none() {
                usage = u.map(|us| us as f64 / 1e6);
            }
            if let (Some(p), Some(n), Some(us)) = (p, n, us) {
                throttle = Some((p, n, us as f64 / 1e6));
            }
        }
        let r = t.resource.as_str();
        if let Some(u) = usage {
            push(out, r, &CPU_USAGE_SECONDS, &[], u);
        }
        if let Some((periods, throttled, secs)) = throttle {
            push(out, r, &CPU_CFS_PERIODS, &[], periods as f64);
            push(out, r, &CPU_CFS_THROTTLED_PERIODS, &[], throttled as f64);
            push(out, r, &CPU_CFS_THROTTLED_SECONDS, &[], secs);
        }
    }

    fn sample_memory(&mut self, t: &mut Target, out: &mut Vec<Sample>) {
        struct Mem {
            usage: Option<u64>,
            inactive_file: Option<u64>,
            rss: Option<u64>,
            cache: Option<u64>,
            failcnt: Option<u64>,
        }
        let mut events: [(&str, Option<u64>); 5] =
            [("low", None), ("high", None), ("max", None), ("oom", None), ("oom_kill", None)];
        let m = if self.layout.root(Slot::Memory).is_some() {
            let usage = self.read_u64(t, CgFile::V1MemUsage);
            let stat = self.read_keyed(
                t,
                CgFile::V1MemStat,
                ["total_inactive_file", "total_rss", "total_cache", "inactive_file", "rss", "cache"],
            );
            // Hierarchical totals when the kernel has them (it always has since 2.6.30).
            let [ti, tr, tc, i, r, c] = stat.unwrap_or_default();
            let failcnt = self.read_u64(t, CgFile::V1MemFailcnt);
            if let Some([oom_kill]) = self.read_keyed(t, CgFile::V1OomControl, ["oom_kill"]) {
                events[4].1 = oom_kill;
            }
            Mem { usage, inactive_file: ti.or(i), rss: tr.or(r), cache: tc.or(c), failcnt }
        } else {
            let usage = self.read_u64(t, CgFile::V2MemCurrent);
            let [i, anon, file] =
                self.read_keyed(t, CgFile::V2MemStat, ["inactive_file", "anon", "file"]).unwrap_or_default();
            if let Some(v) = self.read_keyed(t, CgFile::V2MemEvents, ["low", "high", "max", "oom", "oom_kill"]) {
                for (slot, v) in events.iter_mut().zip(v) {
                    slot.1 = v;
                }
            }
            Mem { usage, inactive_file: i, rss: anon, cache: file, failcnt: None }
        };
        let r = t.resource.as_str();
        if let Some(u) = m.usage {
            push(out, r, &MEMORY_USAGE_BYTES, &[], u as f64);
            if let Some(i) = m.inactive_file {
                let ws = cgroupfs::working_set(u, i) as f64;
                push(out, r, &MEMORY_WORKING_SET_BYTES, &[], ws);
            }
        }
        if let Some(v) = m.rss {
            push(out, r, &MEMORY_RSS, &[], v as f64);
        }
        if let Some(v) = m.cache {
            push(out, r, &MEMORY_CACHE, &[], v as f64);
        }
        if let Some(v) = m.failcnt {
            push(out, r, &MEMORY_FAILCNT, &[], v as f64);
        }
        for (event, v) in events {
            if let Some(v) = v {
                push(out, r, &MEMORY_EVENTS, &[("event", event)], v as f64);
            }
        }
    }

    fn sample_io(&mut self, t: &mut Target, out: &mut Vec<Sample>) {
        let (mut bytes, mut ops) = (None, None);
        if self.layout.root(Slot::Blkio).is_some() {
            bytes = self.read_parsed(t, CgFile::V1BlkioBytes, cgroupfs::blkio_read_write);
            ops = self.read_parsed(t, CgFile::V1BlkioOps, cgroupfs::blkio_read_write);
        } else if let Some(io) = self.read_parsed(t, CgFile::V2IoStat, cgroupfs::io_stat) {
            bytes = Some((io.read_bytes, io.write_bytes));
            ops = Some((io.reads, io.writes));
        }
        let r = t.resource.as_str();
        if let Some((rd, wr)) = bytes {
            push(out, r, &FS_READS_BYTES, &[], rd as f64);
            push(out, r, &FS_WRITES_BYTES, &[], wr as f64);
        }
        if let Some((rd, wr)) = ops {
            push(out, r, &FS_READS, &[], rd as f64);
            push(out, r, &FS_WRITES, &[], wr as f64);
        }
    }

    fn sample_pids(&mut self, t: &mut Target, out: &mut Vec<Sample>) {
        let file = if self.layout.root(Slot::Pids).is_some() { CgFile::V1PidsCurrent } else { CgFile::V2PidsCurrent };
        if let Some(v) = self.read_u64(t, file) {
            push(out, &t.resource, &PIDS_CURRENT, &[], v as f64);
        }
    }

    fn sample_pressure(&mut self, t: &mut Target, out: &mut Vec<Sample>) {
        const PSI: [(CgFile, Family, Family); 3] = [
            (CgFile::V2CpuPressure, PSI_CPU_WAITING, PSI_CPU_STALLED),
            (CgFile::V2MemPressure, PSI_MEMORY_WAITING, PSI_MEMORY_STALLED),
            (CgFile::V2IoPressure, PSI_IO_WAITING, PSI_IO_STALLED),
        ];
        for (file, waiting, stalled) in PSI {
            let Some(p) = self.read_parsed(t, file, procfs::pressure) else {
                continue;
            };
            if let Some(some) = p.some {
                push(out, &t.resource, &waiting, &[], some.total_us as f64 / 1e6);
            }
            if let Some(full) = p.full {
                push(out, &t.resource, &stalled, &[], full.total_us as f64 / 1e6);
            }
        }
    }

    fn sample_spec(t: &Target, out: &mut Vec<Sample>) {
        let r = t.resource.as_str();
        if let Some(c) = t.spec.cpu_limit_cores {
            push(out, r, &SPEC_CPU_LIMIT_CORES, &[], c);
        }
        if let Some(m) = t.spec.memory_limit_bytes {
            push(out, r, &SPEC_MEMORY_LIMIT_BYTES, &[], m as f64);
        }
        if let Some(p) = t.spec.pids_max {
            push(out, r, &SPEC_PIDS_MAX, &[], p as f64);
        }
    }

    fn sample_target(&mut self, t: &mut Target, out: &mut Vec<Sample>) {
        let start = out.len();
        self.sample_cpu(t, out);
        self.sample_memory(t, out);
        self.sample_io(t, out);
        self.sample_pids(t, out);
        self.sample_pressure(t, out);
        if t.vanished {
            // Removed mid-tick: a partial set of samples would look like a drop to zero.
            out.truncate(start);
            return;
        }
        Self::sample_spec(t, out);
    }
}

/// Samples every discovered workload cgroup. See the module docs for the series.
#[derive(Debug)]
pub struct CgroupSampler {
    cfg: ContainerSamplerConfig,
    /// `(name, cleaned relative path)` of the named cgroups.
    named: Vec<(String, String)>,
    /// Cleaned watched prefixes.
    watch_prefixes: Vec<String>,
    mountinfo: PathBuf,
    layout: Layout,
    targets: Vec<Target>,
    last_discovery: Option<Instant>,
    reader: FileReader,
    errors: ErrorLog,
    psi_available: bool,
    /// Whether "no cgroup hierarchy" was already logged.
    warned_no_layout: bool,
}

impl CgroupSampler {
    /// A sampler reading below the config's roots. Touches no file until the first tick.
    pub fn new(cfg: &ContainerSamplerConfig) -> Self {
        let mut named = Vec::new();
        for c in &cfg.cgroups {
            match discovery::clean_rel(&c.path) {
                Some(rel) => named.push((c.name.clone(), rel)),
                None => {
                    tracing::warn!(name = %c.name, path = %c.path, "named cgroup path is empty or leaves the hierarchy; ignored")
                }
            }
        }
        let watch_prefixes = cfg
            .watch_prefixes
            .iter()
            .filter_map(|p| {
                let clean = discovery::clean_rel(p);
                if clean.is_none() {
                    tracing::warn!(prefix = %p, "watched cgroup prefix is empty or leaves the hierarchy; ignored");
                }
                clean
            })
            .collect();
        CgroupSampler {
            named,
            watch_prefixes,
            mountinfo: cfg.proc_root.join("self/mountinfo"),
            cfg: cfg.clone(),
            layout: Layout::default(),
            targets: Vec::new(),
            last_discovery: None,
            reader: FileReader::default(),
            errors: ErrorLog::new("cgroup"),
            psi_available: true,
            warned_no_layout: false,
        }
    }

    /// Re-detects the hierarchies, re-lists the workloads and re-reads their limits.
    fn discover(&mut self) {
        let mountinfo = match self.reader.read(&self.mountinfo) {
            Ok(text) => Some(text),
            Err(e) => {
                let err = self.reader.read_error(e);
                self.errors.record(err);
                None
            }
        };
        let layout = discovery::detect_layout(mountinfo, &self.cfg.cgroup_root);
        if layout != self.layout {
            tracing::info!(
                layout = layout.describe(),
                cgroup_root = %self.cfg.cgroup_root.display(),
                "cgroup hierarchies found"
            );
        }
        if layout.primary().is_none() && !self.warned_no_layout {
            self.warned_no_layout = true;
            tracing::warn!(cgroup_root = %self.cfg.cgroup_root.display(), "no cgroup hierarchy found; no container metrics");
        }
        self.layout = layout;
        let wanted = Wanted {
            named: &self.named,
            watch_prefixes: &self.watch_prefixes,
            runtimes: Runtimes {
                docker: self.cfg.docker,
                containerd: self.cfg.containerd,
                kubernetes: self.cfg.kubernetes,
                systemd_services: self.cfg.systemd_services,
            },
        };
        let found = discovery::find(&self.layout, &wanted, &mut self.errors);
        let before = self.targets.len();
        self.targets = found.into_iter().map(|f| Target::new(f, &self.layout)).collect();
        let mut cx = Ctx {
            layout: &self.layout,
            reader: &mut self.reader,
            errors: &mut self.errors,
            psi_available: &mut self.psi_available,
        };
        for t in self.targets.iter_mut() {
            cx.read_spec(t);
        }
        tracing::debug!(before, after = self.targets.len(), "cgroup discovery done");
    }
}

impl Sampler for CgroupSampler {
    fn name(&self) -> &'static str {
        "cgroup"
    }

    fn sample(&mut self, out: &mut Vec<Sample>) {
        let due = self.last_discovery.is_none_or(|t| t.elapsed() >= self.cfg.discovery_interval);
        if due {
            self.discover();
            self.last_discovery = Some(Instant::now());
        }
        let mut cx = Ctx {
            layout: &self.layout,
            reader: &mut self.reader,
            errors: &mut self.errors,
            psi_available: &mut self.psi_available,
        };
        for t in self.targets.iter_mut() {
            cx.sample_target(t, out);
        }
    }

    fn errors(&self) -> u64 {
        self.errors.count()
    }
}

#[cfg(test)]
mod tests {
    use augur_core::MetricKind::Counter;
    use std::collections::BTreeSet;
    use std::fs;
    use std::path::Path;

    use super::super::fixture;
    use super::super::testutil::{assert_well_formed, count, value};
    use super::*;

    const ID_A: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const DOCKER_A: &str = "container/3f4e5d6c7b8a";

    fn config_for(root: &Path) -> ContainerSamplerConfig {
        ContainerSamplerConfig {
            cgroup_root: root.join("sys/fs/cgroup"),
            proc_root: root.join("proc"),
            cgroups: vec![NamedCgroup { name: "demo-web".into(), path: "augur-demo/web".into() }],
            watch_prefixes: vec!["batch".into()],
            ..ContainerSamplerConfig::default()
        }
    }

    fn tick(s: &mut CgroupSampler) -> Vec<Sample> {
        let mut out = Vec::new();
        s.sample(&mut out);
        assert_well_formed(&out);
        out
    }

    fn resources(out: &[Sample]) -> BTreeSet<&str> {
        out.iter().map(|s| s.key.resource.as_str()).collect()
    }

    fn copy_tree(from: &Path, to: &Path) {
        fs::create_dir_all(to).expect("create dir");
        for e in fs::read_dir(from).expect("read fixture dir") {
            let e = e.expect("dir entry");
            let dest = to.join(e.file_name());
            if e.file_type().expect("file type").is_dir() {
                copy_tree(&e.path(), &dest);
            } else {
                fs::copy(e.path(), dest).expect("copy fixture file");
            }
        }
    }

    #[test]
    fn v1_fixture_reports_every_workload_kind() {
        let mut s = CgroupSampler::new(&config_for(&fixture("cgroup-v1")));
        let out = tick(&mut s);
        let pod = format!("pod/{UID}/a1b2c3d4e5f6");
        let want: BTreeSet<&str> = [
            DOCKER_A,
            "container/c0ffee00c0ff",
            pod.as_str(),
            "service/nginx.service",
            "cgroup/demo-web",
            "cgroup/batch/job-1",
            "cgroup/batch/job-2",
        ]
        .into();
        assert_eq!(resources(&out), want);
        // The broken container: empty cpuacct.usage and a truncated memory.stat.
        assert_eq!(s.errors(), 2);

        let v = |m: &str| value(&out, DOCKER_A, m, &[]);
        assert_eq!(v("container_cpu_usage_seconds_total"), Some(123.456789012));
        assert_eq!(v("container_cpu_cfs_periods_total"), Some(5000.0));
        assert_eq!(v("container_cpu_cfs_throttled_periods_total"), Some(250.0));
        assert_eq!(v("container_cpu_cfs_throttled_seconds_total"), Some(12.5));
        assert_eq!(v("container_spec_cpu_limit_cores"), Some(1.5));
        assert_eq!(v("container_memory_usage_bytes"), Some(167772160.0));
        assert_eq!(v("container_spec_memory_limit_bytes"), Some(536870912.0));
        assert_eq!(v("container_memory_working_set_bytes"), Some(167772160.0 - 41943040.0));
        assert_eq!(v("container_memory_rss"), Some(52428800.0));
        assert_eq!(v("container_memory_cache"), Some(104857600.0));
        assert_eq!(v("container_memory_failcnt"), Some(7.0));
        assert_eq!(value(&out, DOCKER_A, "container_memory_events_total", &[("event", "oom_kill")]), Some(2.0));
        assert_eq!(count(&out, DOCKER_A, "container_memory_events_total"), 1, "v1 has only oom_kill");
        assert_eq!(v("container_fs_reads_bytes_total"), Some(4097000.0));
        assert_eq!(v("container_fs_writes_bytes_total"), Some(8192000.0));
        assert_eq!(v("container_fs_reads_total"), Some(1100.0));
        assert_eq!(v("container_fs_writes_total"), Some(200.0));
        assert_eq!(v("container_pids_current"), Some(12.0));
        assert_eq!(v("container_spec_pids_max"), Some(100.0));
        let usage =
            out.iter().find(|x| x.key.resource == DOCKER_A && x.key.metric == "container_cpu_usage_seconds_total");
        assert_eq!(usage.map(|x| x.key.kind), Some(Counter));

        // Unlimited limits are omitted.
        for m in ["container_spec_cpu_limit_cores", "container_spec_memory_limit_bytes", "container_spec_pids_max"] {
            assert_eq!(value(&out, &pod, m, &[]), None, "{m}");
        }
        assert_eq!(value(&out, &pod, "container_memory_working_set_bytes", &[]), Some(20971520.0 - 524288.0));
        // No blkio cgroup for the service: no fs series and no error.
        assert_eq!(count(&out, "service/nginx.service", "container_fs_reads_bytes_total"), 0);
        assert_eq!(value(&out, "service/nginx.service", "container_spec_pids_max", &[]), Some(4915.0));
        assert_eq!(value(&out, "cgroup/demo-web", "container_spec_cpu_limit_cores", &[]), Some(0.5));
        assert_eq!(value(&out, "cgroup/batch/job-2", "container_memory_usage_bytes", &[]), Some(8192.0));
        // The broken container still reports what could be read.
        let broken = "container/c0ffee00c0ff";
        assert_eq!(value(&out, broken, "container_cpu_usage_seconds_total", &[]), None);
        assert_eq!(value(&out, broken, "container_memory_rss", &[]), None);
        assert_eq!(value(&out, broken, "container_memory_usage_bytes", &[]), Some(4096.0));
        assert_eq!(value(&out, broken, "container_pids_current", &[]), Some(1.0));
        // v1 has no PSI.
        assert_eq!(count(&out, DOCKER_A, "container_pressure_cpu_waiting_seconds_total"), 0);
    }

    #[test]
    fn v2_fixture_reports_every_workload_kind() {
        let mut s = CgroupSampler::new(&config_for(&fixture("cgroup-v2")));
        let out = tick(&mut s);
        let pod = format!("pod/{UID}/a1b2c3d4e5f6");
        let want: BTreeSet<&str> =
            [DOCKER_A, pod.as_str(), "service/sshd.service", "service/broken.service", "cgroup/demo-web"].into();
        assert_eq!(resources(&out), want);
        // broken.service: malformed memory.events and io.stat.
        assert_eq!(s.errors(), 2);

        let v = |m: &str| value(&out, DOCKER_A, m, &[]);
        assert_eq!(v("container_cpu_usage_seconds_total"), Some(987.654321));
        assert_eq!(v("container_cpu_cfs_periods_total"), Some(1000.0));
        assert_eq!(v("container_cpu_cfs_throttled_periods_total"), Some(40.0));
        assert_eq!(v("container_cpu_cfs_throttled_seconds_total"), Some(2.5));
        assert_eq!(v("container_spec_cpu_limit_cores"), Some(2.0));
        assert_eq!(v("container_memory_usage_bytes"), Some(268435456.0));
        assert_eq!(v("container_spec_memory_limit_bytes"), Some(1073741824.0));
        assert_eq!(v("container_memory_working_set_bytes"), Some(268435456.0 - 67108864.0));
        assert_eq!(v("container_memory_rss"), Some(134217728.0));
        assert_eq!(v("container_memory_cache"), Some(117440512.0));
        assert_eq!(v("container_memory_failcnt"), None, "v2 has no failcnt");
        for (event, n) in [("low", 0.0), ("high", 5.0), ("max", 3.0), ("oom", 1.0), ("oom_kill", 1.0)] {
            assert_eq!(value(&out, DOCKER_A, "container_memory_events_total", &[("event", event)]), Some(n), "{event}");
        }
        assert_eq!(v("container_fs_reads_bytes_total"), Some(1048576.0 + 4096.0));
        assert_eq!(v("container_fs_writes_bytes_total"), Some(2097152.0));
        assert_eq!(v("container_fs_reads_total"), Some(257.0));
        assert_eq!(v("container_fs_writes_total"), Some(512.0));
        assert_eq!(v("container_pids_current"), Some(20.0));
        assert_eq!(v("container_spec_pids_max"), Some(200.0));
        assert_eq!(v("container_pressure_cpu_waiting_seconds_total"), Some(1.5));
        assert_eq!(v("container_pressure_cpu_stalled_seconds_total"), Some(0.5));
        assert_eq!(v("container_pressure_memory_waiting_seconds_total"), Some(2.5));
        assert_eq!(v("container_pressure_memory_stalled_seconds_total"), Some(1.0));
        assert_eq!(v("container_pressure_io_waiting_seconds_total"), Some(0.3));
        assert_eq!(v("container_pressure_io_stalled_seconds_total"), Some(0.1));

        for m in ["container_spec_cpu_limit_cores", "container_spec_memory_limit_bytes", "container_spec_pids_max"] {
            assert_eq!(value(&out, &pod, m, &[]), None, "{m}");
        }
        // cpu and io controllers not enabled for sshd: usage only, and no error.
        let sshd = "service/sshd.service";
        assert_eq!(value(&out, sshd, "container_cpu_usage_seconds_total", &[]), Some(3.0));
        assert_eq!(count(&out, sshd, "container_cpu_cfs_periods_total"), 0);
        assert_eq!(count(&out, sshd, "container_spec_cpu_limit_cores"), 0);
        assert_eq!(count(&out, sshd, "container_fs_reads_total"), 0);
        assert_eq!(value(&out, sshd, "container_memory_working_set_bytes", &[]), Some(6291456.0 - 1048576.0));
        // The broken service keeps its other series.
        let broken = "service/broken.service";
        assert_eq!(count(&out, broken, "container_memory_events_total"), 0);
        assert_eq!(count(&out, broken, "container_fs_reads_total"), 0);
        assert_eq!(value(&out, broken, "container_memory_usage_bytes", &[]), Some(4096.0));

        // Files found absent are not retried every tick, and errors recur per tick.
        let again = tick(&mut s);
        assert_eq!(again.len(), out.len());
        assert_eq!(s.errors(), 4);
    }

    #[test]
    fn hybrid_fixture_reads_v1_controllers_and_unified_psi() {
        let mut s = CgroupSampler::new(&config_for(&fixture("cgroup-hybrid")));
        let out = tick(&mut s);
        assert_eq!(resources(&out), [DOCKER_A, "service/postgresql.service"].into());
        assert_eq!(s.errors(), 0);
        let pg = "service/postgresql.service";
        let v = |m: &str| value(&out, pg, m, &[]);
        assert_eq!(v("container_cpu_usage_seconds_total"), Some(77.0));
        assert_eq!(v("container_cpu_cfs_throttled_seconds_total"), Some(1.5));
        assert_eq!(v("container_spec_cpu_limit_cores"), Some(2.0));
        assert_eq!(v("container_memory_working_set_bytes"), Some(536870912.0 - 134217728.0));
        assert_eq!(v("container_fs_reads_bytes_total"), Some(11000.0), "non-recursive blkio files");
        assert_eq!(v("container_pressure_cpu_waiting_seconds_total"), Some(4.0));
        assert_eq!(v("container_pressure_io_stalled_seconds_total"), Some(2.0));
        // Docker with the cgroupfs driver has no unified cgroup: no PSI, no error.
        assert_eq!(count(&out, DOCKER_A, "container_pressure_cpu_waiting_seconds_total"), 0);
        assert_eq!(value(&out, DOCKER_A, "container_fs_writes_bytes_total", &[]), Some(4096.0));
    }

    #[test]
    fn named_cgroup_wins_over_discovery() {
        let mut cfg = config_for(&fixture("cgroup-v1"));
        cfg.cgroups.push(NamedCgroup { name: "db".into(), path: format!("/docker/{ID_A}/") });
        let mut s = CgroupSampler::new(&cfg);
        let out = tick(&mut s);
        let res = resources(&out);
        assert!(res.contains("cgroup/db"));
        assert!(!res.contains(DOCKER_A));
        assert_eq!(value(&out, "cgroup/db", "container_pids_current", &[]), Some(12.0));
    }

    #[test]
    fn disabled_runtimes_are_not_discovered() {
        let cfg = ContainerSamplerConfig {
            docker: false,
            containerd: false,
            kubernetes: false,
            systemd_services: false,
            ..config_for(&fixture("cgroup-v1"))
        };
        let mut s = CgroupSampler::new(&cfg);
        let out = tick(&mut s);
        assert_eq!(resources(&out), ["cgroup/demo-web", "cgroup/batch/job-1", "cgroup/batch/job-2"].into());
        let only_docker = ContainerSamplerConfig { docker: true, cgroups: vec![], watch_prefixes: vec![], ..cfg };
        let out = tick(&mut CgroupSampler::new(&only_docker));
        assert_eq!(resources(&out), [DOCKER_A, "container/c0ffee00c0ff"].into());
    }

    #[test]
    fn vanished_cgroup_is_dropped_without_errors() {
        let tmp = tempfile::tempdir().expect("tempdir");
        copy_tree(&fixture("cgroup-v2"), tmp.path());
        let cfg = ContainerSamplerConfig { discovery_interval: Duration::from_secs(3600), ..config_for(tmp.path()) };
        let mut s = CgroupSampler::new(&cfg);
        let out = tick(&mut s);
        assert!(resources(&out).contains(DOCKER_A));
        let errors = s.errors();

        // Removed after discovery: no samples (not even partial ones), no error.
        let dir = tmp.path().join(format!("sys/fs/cgroup/system.slice/docker-{ID_A}.scope"));
        fs::remove_dir_all(&dir).expect("remove cgroup");
        let out = tick(&mut s);
        assert!(!resources(&out).contains(DOCKER_A));
        assert!(resources(&out).contains("service/sshd.service"));
        assert_eq!(s.errors(), errors * 2, "only the broken service's errors recur");
        let out = tick(&mut s);
        assert_eq!(count(&out, DOCKER_A, "container_memory_usage_bytes"), 0);
        assert_eq!(s.errors(), errors * 3);
    }

    #[test]
    fn new_cgroup_appears_at_next_discovery() {
        let tmp = tempfile::tempdir().expect("tempdir");
        copy_tree(&fixture("cgroup-v2"), tmp.path());
        let cfg = ContainerSamplerConfig { discovery_interval: Duration::ZERO, ..config_for(tmp.path()) };
        let mut s = CgroupSampler::new(&cfg);
        let out = tick(&mut s);
        let new_id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert!(!resources(&out).contains("container/0123456789ab"));

        let root = tmp.path().join("sys/fs/cgroup/system.slice");
        copy_tree(&root.join(format!("docker-{ID_A}.scope")), &root.join(format!("docker-{new_id}.scope")));
        let out = tick(&mut s);
        assert_eq!(value(&out, "container/0123456789ab", "container_pids_current", &[]), Some(20.0));

        fs::remove_dir_all(root.join(format!("docker-{new_id}.scope"))).expect("remove cgroup");
        let errors = s.errors();
        let out = tick(&mut s);
        assert!(!resources(&out).contains("container/0123456789ab"));
        assert_eq!(s.errors(), errors + 2, "only the broken service's errors");
    }

    #[test]
    fn missing_cgroup_root_yields_nothing_and_no_errors() {
        let cfg = ContainerSamplerConfig {
            cgroup_root: "/nonexistent/cgroup".into(),
            proc_root: fixture("cgroup-v1/proc"),
            ..ContainerSamplerConfig::default()
        };
        let mut s = CgroupSampler::new(&cfg);
        assert!(tick(&mut s).is_empty());
        assert_eq!(s.errors(), 0);
        // An unreadable mount table is counted.
        let cfg = ContainerSamplerConfig { proc_root: "/nonexistent/proc".into(), ..cfg };
        let mut s = CgroupSampler::new(&cfg);
        assert!(tick(&mut s).is_empty());
        assert_eq!(s.errors(), 1);
    }

    #[test]
    fn config_parses_from_toml() {
        let cfg: ContainerSamplerConfig = toml::from_str(
            r#"
            cgroup_root = "/host/sys/fs/cgroup"
            docker = false
            watch_prefixes = ["augur-demo"]
            discovery_interval = "10s"
            [[cgroups]]
            name = "web"
            path = "augur-demo/web"
            "#,
        )
        .expect("valid");
        assert_eq!(cfg.cgroup_root, PathBuf::from("/host/sys/fs/cgroup"));
        assert_eq!(cfg.proc_root, PathBuf::from("/proc"));
        assert!(!cfg.docker && cfg.kubernetes);
        assert_eq!(cfg.discovery_interval, Duration::from_secs(10));
        assert_eq!(cfg.cgroups, vec![NamedCgroup { name: "web".into(), path: "augur-demo/web".into() }]);
        let back: ContainerSamplerConfig = toml::from_str(&toml::to_string(&cfg).expect("serialises")).expect("parses");
        assert_eq!(back, cfg);
        assert!(toml::from_str::<ContainerSamplerConfig>("dockerd = true").is_err());
        assert!(toml::from_str::<ContainerSamplerConfig>("[[cgroups]]\nname = \"x\"\n").is_err(), "path is required");
    }

    /// Kills the test's child and removes its cgroups, also when an assertion failed.
    struct RealCgroup {
        dirs: Vec<PathBuf>,
        child: Option<std::process::Child>,
    }

    impl Drop for RealCgroup {
        fn drop(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            for d in self.dirs.iter().rev() {
                // The kernel may need a moment to release the cgroup of a just-reaped task.
                for _ in 0..50 {
                    match fs::remove_dir(d) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => std::thread::sleep(Duration::from_millis(20)),
                        _ => break,
                    }
                }
            }
        }
    }

    /// Runs against this machine's cgroup v1 hierarchies; needs root.
    #[test]
    fn real_v1_named_cgroup_is_sampled() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping real_v1_named_cgroup_is_sampled: needs root");
            return;
        }
        let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
            eprintln!("skipping real_v1_named_cgroup_is_sampled: no /proc/self/mountinfo");
            return;
        };
        let layout = discovery::detect_layout(Some(&mountinfo), Path::new("/sys/fs/cgroup"));
        if layout.root(Slot::Memory).is_none() || layout.root(Slot::Pids).is_none() {
            eprintln!(
                "skipping real_v1_named_cgroup_is_sampled: no v1 memory and pids hierarchies ({})",
                layout.describe()
            );
            return;
        }
        let name = format!("augur-sampler-test-{}", std::process::id());
        let mut guard = RealCgroup { dirs: Vec::new(), child: None };
        for slot in [Slot::Memory, Slot::Cpu, Slot::Cpuacct, Slot::Pids] {
            let Some(root) = layout.root(slot) else {
                continue;
            };
            let dir = root.join(&name);
            if guard.dirs.contains(&dir) {
                continue; // comma-combined mount, e.g. cpu,cpuacct
            }
            if let Err(e) = fs::create_dir(&dir) {
                eprintln!("skipping real_v1_named_cgroup_is_sampled: cannot create {}: {e}", dir.display());
                return;
            }
            guard.dirs.push(dir);
        }
        // The child writes its own pid to cgroup.procs, then execs sleep: memory already
        // charged stays with the old cgroup when a task moves (v1 charge moving is gone
        // from recent kernels), so joining before exec makes the new image's pages count.
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"for d; do echo $$ > "$d/cgroup.procs" || exit 1; done; exec sleep 30"#)
            .arg("sh")
            .args(&guard.dirs)
            .spawn()
            .expect("spawn sh");
        let pid = child.id();
        guard.child = Some(child);

        let cfg = ContainerSamplerConfig {
            docker: false,
            containerd: false,
            kubernetes: false,
            systemd_services: false,
            cgroups: vec![NamedCgroup { name: name.clone(), path: name.clone() }],
            discovery_interval: Duration::ZERO,
            ..ContainerSamplerConfig::default()
        };
        let mut s = CgroupSampler::new(&cfg);
        let resource = format!("cgroup/{name}");
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut memory, mut pids) = (None, None);
        while Instant::now() < deadline {
            let out = tick(&mut s);
            memory = value(&out, &resource, "container_memory_usage_bytes", &[]);
            pids = value(&out, &resource, "container_pids_current", &[]);
            if memory.is_some_and(|m| m >= 1.0) && pids.is_some_and(|p| p >= 1.0) {
                let usage = value(&out, &resource, "container_cpu_usage_seconds_total", &[]);
                assert!(usage.is_some(), "cpu usage of the child (pid {pid}) is reported");
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(memory.is_some_and(|m| m >= 1.0), "memory usage {memory:?} for pid {pid}");
        assert!(pids.is_some_and(|p| p >= 1.0), "pids {pids:?} for pid {pid}");
        assert_eq!(s.errors(), 0);
    }
}
