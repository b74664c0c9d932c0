//! The host sampler: procfs and statvfs, resource `host`, names as node_exporter's.
//!
//! Emitted series (counters are cumulative as the kernel reports them):
//!
//! | metric | kind | unit | labels |
//! |---|---|---|---|
//! | `node_cpu_seconds_total` | counter | seconds | `mode` (user, nice, system, idle, iowait, irq, softirq, steal), `cpu` with `per_cpu` |
//! | `node_load1`, `node_load5`, `node_load15` | gauge | count | |
//! | `node_memory_{MemTotal,MemFree,MemAvailable,Buffers,Cached,SwapTotal,SwapFree,Dirty,Writeback}_bytes` | gauge | bytes | |
//! | `node_pressure_{cpu,memory,io}_waiting_seconds_total` (PSI `some` total) | counter | seconds | |
//! | `node_pressure_{cpu,memory,io}_stalled_seconds_total` (PSI `full` total, when present) | counter | seconds | |
//! | `node_pressure_{cpu,memory,io}_{some,full}_avg10_ratio` (PSI avg10 / 100) | gauge | ratio | |
//! | `node_vmstat_{pgfault,pgmajfault,pswpin,pswpout,oom_kill}` | counter | count | |
//! | `node_disk_{reads,writes}_completed_total` | counter | count | `device` |
//! | `node_disk_{read,written}_bytes_total` | counter | bytes | `device` |
//! | `node_disk_{read,write}_time_seconds_total`, `node_disk_io_time_seconds_total`, `node_disk_io_time_weighted_seconds_total` | counter | seconds | `device` |
//! | `node_disk_io_now` | gauge | count | `device` |
//! | `node_filesystem_{size,free,avail}_bytes` | gauge | bytes | `mountpoint`, `device`, `fstype` |
//! | `node_filesystem_files`, `node_filesystem_files_free` | gauge | count | same |
//! | `node_filesystem_readonly` (1 or 0) | gauge | count | same |
//! | `node_network_{receive,transmit}_{bytes,packets,errs,drop}_total` | counter | bytes / packets | `device` |
//! | `node_netstat_Tcp_{ActiveOpens,PassiveOpens,InSegs,OutSegs,RetransSegs,InErrs,OutRsts}`, `node_netstat_Udp_{InErrors,RcvbufErrors}` | counter | count | |
//! | `node_netstat_Tcp_CurrEstab` | gauge | count | |
//!
//! Read latency is `rate(read_time) / rate(reads_completed)`, likewise for writes.
//!
//! Disks: only whole disks (those with a `<sys_root>/block/<name>` entry) unless
//! `disk_partitions` is set, minus `disk_exclude`. Filesystems: mounts of the mount table
//! (`<proc_root>/1/mountinfo`, else `self/mountinfo`, re-read every 10 s) whose type is
//! not excluded, each device once, at its first mount of the filesystem root (other
//! mounts are bind mounts or btrfs subvolumes sharing its space). `statvfs` runs inline
//! every tick, which is
//! why network filesystems are excluded by default: a hung NFS server would stall the tick.
//! Without PSI support (no `<proc_root>/pressure`, or `psi=0`) the pressure series are
//! left out after one warning; that is not counted as an error.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use augur_core::series::HOST_RESOURCE;
use serde::{Deserialize, Serialize};

use super::procfs::{self, CPU_MODES, ParseError};
use super::{ErrorLog, Family, FileReader, Sample, SampleError, Sampler, matches_any, push};

/// The `[host]` section of the agent config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostSamplerConfig {
    /// Where procfs is mounted (`/host/proc` in a container that mounts the host's).
    pub proc_root: PathBuf,
    /// Where sysfs is mounted; used to tell whole disks from partitions.
    pub sys_root: PathBuf,
    /// Prefix put before every mount point for `statvfs` (`/host/root` in the DaemonSet, which
    /// mounts the host's `/` there). Labels keep the host's mount point.
    pub rootfs: PathBuf,
    /// One `node_cpu_seconds_total` per CPU (label `cpu`) instead of the aggregate.
    pub per_cpu: bool,
    /// Filesystem types never reported (pseudo, in-memory, container-image and network
    /// filesystems by default).
    pub fs_exclude_types: Vec<String>,
    /// Network interfaces never reported; `*` matches any run of characters.
    pub net_exclude: Vec<String>,
    /// Block devices never reported; `*` matches any run of characters.
    pub disk_exclude: Vec<String>,
    /// Also report partitions (devices without a `<sys_root>/block/<name>` entry).
    pub disk_partitions: bool,
}

impl Default for HostSamplerConfig {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        HostSamplerConfig {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
            rootfs: PathBuf::from("/"),
            per_cpu: false,
            fs_exclude_types: strings(&[
                "autofs",
                "binfmt_misc",
                "bpf",
                "cgroup",
                "cgroup2",
                "configfs",
                "debugfs",
                "devpts",
                "devtmpfs",
                "efivarfs",
                "fusectl",
                "hugetlbfs",
                "mqueue",
                "nsfs",
                "overlay",
                "proc",
                "pstore",
                "ramfs",
                "rpc_pipefs",
                "securityfs",
                "selinuxfs",
                "squashfs",
                "erofs",
                "sysfs",
                "tracefs",
                "tmpfs",
                "fuse.lxcfs",
                "fuse.snapfuse",
                "nfs",
                "nfs4",
                "cifs",
                "smb3",
                "ceph",
                "fuse.sshfs",
            ]),
            net_exclude: strings(&["lo", "veth*", "cali*", "lxc*"]),
            disk_exclude: strings(&["loop*", "ram*", "zram*", "fd*", "sr*"]),
            disk_partitions: false,
        }
    }
}

const CPU_SECONDS: Family = Family::counter("node_cpu_seconds_total", "seconds");
const LOAD: [Family; 3] =
    [Family::gauge("node_load1", "count"), Family::gauge("node_load5", "count"), Family::gauge("node_load15", "count")];

/// `/proc/meminfo` fields reported.
const MEMINFO: [(&str, Family); 9] = [
    ("MemTotal", Family::gauge("node_memory_MemTotal_bytes", "bytes")),
    ("MemFree", Family::gauge("node_memory_MemFree_bytes", "bytes")),
    ("MemAvailable", Family::gauge("node_memory_MemAvailable_bytes", "bytes")),
    ("Buffers", Family::gauge("node_memory_Buffers_bytes", "bytes")),
    ("Cached", Family::gauge("node_memory_Cached_bytes", "bytes")),
    ("SwapTotal", Family::gauge("node_memory_SwapTotal_bytes", "bytes")),
    ("SwapFree", Family::gauge("node_memory_SwapFree_bytes", "bytes")),
    ("Dirty", Family::gauge("node_memory_Dirty_bytes", "bytes")),
    ("Writeback", Family::gauge("node_memory_Writeback_bytes", "bytes")),
];

/// `/proc/vmstat` fields reported.
const VMSTAT: [(&str, Family); 5] = [
    ("pgfault", Family::counter("node_vmstat_pgfault", "count")),
    ("pgmajfault", Family::counter("node_vmstat_pgmajfault", "count")),
    ("pswpin", Family::counter("node_vmstat_pswpin", "count")),
    ("pswpout", Family::counter("node_vmstat_pswpout", "count")),
    ("oom_kill", Family::counter("node_vmstat_oom_kill", "count")),
];

/// `/proc/net/snmp` fields reported: section, field, series.
const SNMP: [(&str, &str, Family); 10] = [
    ("Tcp", "ActiveOpens", Family::counter("node_netstat_Tcp_ActiveOpens", "count")),
    ("Tcp", "PassiveOpens", Family::counter("node_netstat_Tcp_PassiveOpens", "count")),
    ("Tcp", "InSegs", Family::counter("node_netstat_Tcp_InSegs", "count")),
    ("Tcp", "OutSegs", Family::counter("node_netstat_Tcp_OutSegs", "count")),
    ("Tcp", "RetransSegs", Family::counter("node_netstat_Tcp_RetransSegs", "count")),
    ("Tcp", "InErrs", Family::counter("node_netstat_Tcp_InErrs", "count")),
    ("Tcp", "OutRsts", Family::counter("node_netstat_Tcp_OutRsts", "count")),
    ("Tcp", "CurrEstab", Family::gauge("node_netstat_Tcp_CurrEstab", "count")),
    ("Udp", "InErrors", Family::counter("node_netstat_Udp_InErrors", "count")),
    ("Udp", "RcvbufErrors", Family::counter("node_netstat_Udp_RcvbufErrors", "count")),
];

/// The series of one PSI file.
struct PsiFamilies {
    file: &'static str,
    /// `some` total.
    waiting: Family,
    /// `full` total.
    stalled: Family,
    /// `some` avg10 / 100.
    some_avg10: Family,
    /// `full` avg10 / 100.
    full_avg10: Family,
}

const PSI: [PsiFamilies; 3] = [
    PsiFamilies {
        file: "cpu",
        waiting: Family::counter("node_pressure_cpu_waiting_seconds_total", "seconds"),
        stalled: Family::counter("node_pressure_cpu_stalled_seconds_total", "seconds"),
        some_avg10: Family::gauge("node_pressure_cpu_some_avg10_ratio", "ratio"),
        full_avg10: Family::gauge("node_pressure_cpu_full_avg10_ratio", "ratio"),
    },
    PsiFamilies {
        file: "memory",
        waiting: Family::counter("node_pressure_memory_waiting_seconds_total", "seconds"),
        stalled: Family::counter("node_pressure_memory_stalled_seconds_total", "seconds"),
        some_avg10: Family::gauge("node_pressure_memory_some_avg10_ratio", "ratio"),
        full_avg10: Family::gauge("node_pressure_memory_full_avg10_ratio", "ratio"),
    },
    PsiFamilies {
        file: "io",
        waiting: Family::counter("node_pressure_io_waiting_seconds_total", "seconds"),
        stalled: Family::counter("node_pressure_io_stalled_seconds_total", "seconds"),
        some_avg10: Family::gauge("node_pressure_io_some_avg10_ratio", "ratio"),
        full_avg10: Family::gauge("node_pressure_io_full_avg10_ratio", "ratio"),
    },
];

const DISK_READS: Family = Family::counter("node_disk_reads_completed_total", "count");
const DISK_WRITES: Family = Family::counter("node_disk_writes_completed_total", "count");
const DISK_READ_BYTES: Family = Family::counter("node_disk_read_bytes_total", "bytes");
const DISK_WRITTEN_BYTES: Family = Family::counter("node_disk_written_bytes_total", "bytes");
const DISK_READ_TIME: Family = Family::counter("node_disk_read_time_seconds_total", "seconds");
const DISK_WRITE_TIME: Family = Family::counter("node_disk_write_time_seconds_total", "seconds");
const DISK_IO_TIME: Family = Family::counter("node_disk_io_time_seconds_total", "seconds");
const DISK_IO_WEIGHTED: Family = Family::counter("node_disk_io_time_weighted_seconds_total", "seconds");
const DISK_IO_NOW: Family = Family::gauge("node_disk_io_now", "count");

const FS_SIZE: Family = Family::gauge("node_filesystem_size_bytes", "bytes");
const FS_FREE: Family = Family::gauge("node_filesystem_free_bytes", "bytes");
const FS_AVAIL: Family = Family::gauge("node_filesystem_avail_bytes", "bytes");
const FS_FILES: Family = Family::gauge("node_filesystem_files", "count");
const FS_FILES_FREE: Family = Family::gauge("node_filesystem_files_free", "count");
const FS_READONLY: Family = Family::gauge("node_filesystem_readonly", "count");

/// `/proc/net/dev` receive columns reported (bytes, packets, errs, drop).
const NET_RX: [Family; 4] = [
    Family::counter("node_network_receive_bytes_total", "bytes"),
    Family::counter("node_network_receive_packets_total", "packets"),
    Family::counter("node_network_receive_errs_total", "packets"),
    Family::counter("node_network_receive_drop_total", "packets"),
];
/// `/proc/net/dev` transmit columns reported (bytes, packets, errs, drop).
const NET_TX: [Family; 4] = [
    Family::counter("node_network_transmit_bytes_total", "bytes"),
    Family::counter("node_network_transmit_packets_total", "packets"),
    Family::counter("node_network_transmit_errs_total", "packets"),
    Family::counter("node_network_transmit_drop_total", "packets"),
];

/// Bytes per sector in `/proc/diskstats`, whatever the device's real sector size.
const DISKSTATS_SECTOR_BYTES: f64 = 512.0;

/// Remembered whole-disk decisions beyond which the cache is reset (device churn).
const MAX_DISK_CACHE: usize = 4096;

/// How often the mount table is re-read; `statvfs` runs every tick on the mounts found.
/// (A busy Kubernetes node's mount table is hundreds of KiB, too costly to parse at 1 Hz.)
const MOUNT_TABLE_REFRESH: Duration = Duration::from_secs(10);

/// A filesystem reported by the host sampler.
#[derive(Debug)]
struct FsMount {
    mount_point: String,
    device: String,
    fstype: String,
}

/// Paths read every tick, built once.
#[derive(Debug)]
struct HostPaths {
    stat: PathBuf,
    loadavg: PathBuf,
    meminfo: PathBuf,
    pressure: [PathBuf; 3],
    vmstat: PathBuf,
    diskstats: PathBuf,
    net_dev: PathBuf,
    net_snmp: PathBuf,
    /// `1/mountinfo` (the host's mount namespace even when the agent runs in its own),
    /// then `self/mountinfo`.
    mountinfo: [PathBuf; 2],
}

/// Samples host-wide metrics from procfs and statvfs. See the module docs for the list.
#[derive(Debug)]
pub struct HostSampler {
    cfg: HostSamplerConfig,
    paths: HostPaths,
    reader: FileReader,
    errors: ErrorLog,
    /// USER_HZ, the unit of `/proc/stat`.
    ticks_per_second: f64,
    /// Cleared when the kernel has no PSI.
    psi_available: bool,
    /// Which of `paths.mountinfo` to read; moves to the next one when unreadable.
    mountinfo_choice: usize,
    /// Device name → whether it is reported (exclusions and whole-disk test applied).
    disk_wanted: HashMap<String, bool>,
    /// Filesystems to report, from the last read of the mount table.
    mounts: Vec<FsMount>,
    mounts_read_at: Option<Instant>,
    /// Scratch for the `statvfs` path.
    statvfs_path: Vec<u8>,
}

impl HostSampler {
    /// A sampler reading below the config's roots. Touches no file until the first tick.
    pub fn new(cfg: &HostSamplerConfig) -> Self {
        let p = |rel: &str| cfg.proc_root.join(rel);
        // SAFETY: sysconf only reads a process-wide constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        HostSampler {
            paths: HostPaths {
                stat: p("stat"),
                loadavg: p("loadavg"),
                meminfo: p("meminfo"),
                pressure: PSI.map(|n| p("pressure").join(n.file)),
                vmstat: p("vmstat"),
                diskstats: p("diskstats"),
                net_dev: p("net/dev"),
                net_snmp: p("net/snmp"),
                mountinfo: [p("1/mountinfo"), p("self/mountinfo")],
            },
            cfg: cfg.clone(),
            reader: FileReader::default(),
            errors: ErrorLog::new("host"),
            ticks_per_second: if hz > 0 { hz as f64 } else { 100.0 },
            psi_available: true,
            mountinfo_choice: 0,
            disk_wanted: HashMap::new(),
            mounts: Vec::new(),
            mounts_read_at: None,
            statvfs_path: Vec::new(),
        }
    }

    /// Reads `path` into the buffer; a failure is counted and `None` returned.
    fn read(&mut self, which: fn(&HostPaths) -> &PathBuf) -> Option<&str> {
        match self.reader.read(which(&self.paths)) {
            Ok(_) => Some(self.reader.text()),
            Err(e) => {
                let err = self.reader.read_error(e);
                self.errors.record(err);
                None
            }
        }
    }

    fn parse_failed(&mut self, e: ParseError) {
        let err = self.reader.parse_error(e.0);
        self.errors.record(err);
    }

    fn sample_cpu(&mut self, out: &mut Vec<Sample>) {
        let per_cpu = self.cfg.per_cpu;
        let hz = self.ticks_per_second;
        let Some(text) = self.read(|p| &p.stat) else {
            return;
        };
        let mut failed = None;
        let mut any = false;
        for line in procfs::stat_cpu_lines(text) {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    failed = Some(e);
                    continue;
                }
            };
            any = true;
            let cpu = match (per_cpu, line.cpu) {
                (false, None) => None,
                (true, Some(cpu)) => Some(cpu),
                _ => continue,
            };
            for (mode, t) in CPU_MODES.iter().zip(line.ticks) {
                let labels = [("cpu", cpu.unwrap_or_default()), ("mode", *mode)];
                let labels = if cpu.is_some() { &labels[..] } else { &labels[1..] };
                push(out, HOST_RESOURCE, &CPU_SECONDS, labels, t as f64 / hz);
            }
        }
        if !any && failed.is_none() {
            failed = Some(ParseError("no cpu lines"));
        }
        if let Some(e) = failed {
            self.parse_failed(e);
        }
    }

    fn sample_load(&mut self, out: &mut Vec<Sample>) {
        let Some(text) = self.read(|p| &p.loadavg) else {
            return;
        };
        match procfs::loadavg(text) {
            Ok(loads) => {
                for (family, v) in LOAD.iter().zip(loads) {
                    push(out, HOST_RESOURCE, family, &[], v);
                }
            }
            Err(e) => self.parse_failed(e),
        }
    }

    fn sample_memory(&mut self, out: &mut Vec<Sample>) {
        let Some(text) = self.read(|p| &p.meminfo) else {
            return;
        };
        let mut failed = None;
        for kv in procfs::meminfo(text) {
            match kv {
                Ok((k, v)) => {
                    if let Some((_, family)) = MEMINFO.iter().find(|(f, _)| *f == k) {
                        push(out, HOST_RESOURCE, family, &[], v as f64);
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            self.parse_failed(e);
        }
    }

    fn sample_pressure(&mut self, out: &mut Vec<Sample>) {
        for (i, names) in PSI.iter().enumerate() {
            if !self.psi_available {
                return;
            }
            let text = match self.reader.read(&self.paths.pressure[i]) {
                Ok(t) => t,
                Err(e) if psi_unsupported(&e) => {
                    self.psi_available = false;
                    tracing::warn!(
                        path = %self.reader.path().display(),
                        error = %e,
                        "PSI not available (kernel without CONFIG_PSI or booted with psi=0); host pressure metrics disabled"
                    );
                    return;
                }
                Err(e) => {
                    let err = self.reader.read_error(e);
                    self.errors.record(err);
                    continue;
                }
            };
            match procfs::pressure(text) {
                Ok(p) => push_pressure(out, HOST_RESOURCE, names, &p),
                Err(e) => self.parse_failed(e),
            }
        }
    }

    fn sample_vmstat(&mut self, out: &mut Vec<Sample>) {
        let Some(text) = self.read(|p| &p.vmstat) else {
            return;
        };
        let mut failed = None;
        for kv in procfs::flat_keyed(text) {
            match kv {
                Ok((k, v)) => {
                    if let Some((_, family)) = VMSTAT.iter().find(|(f, _)| *f == k) {
                        push(out, HOST_RESOURCE, family, &[], v as f64);
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            self.parse_failed(e);
        }
    }

    fn sample_disks(&mut self, out: &mut Vec<Sample>) {
        if let Err(e) = self.reader.read(&self.paths.diskstats) {
            let err = self.reader.read_error(e);
            self.errors.record(err);
            return;
        }
        if self.disk_wanted.len() > MAX_DISK_CACHE {
            self.disk_wanted.clear();
        }
        let mut failed = None;
        for d in procfs::diskstats(self.reader.text()) {
            let d = match d {
                Ok(d) => d,
                Err(e) => {
                    failed = Some(e);
                    continue;
                }
            };
            let wanted = match self.disk_wanted.get(d.name) {
                Some(&w) => w,
                None => {
                    let w = disk_wanted(&self.cfg, d.name);
                    self.disk_wanted.insert(d.name.to_owned(), w);
                    w
                }
            };
            if !wanted {
                continue;
            }
            let l = [("device", d.name)];
            let ms = |v: u64| v as f64 / 1000.0;
            let sectors = |v: u64| v as f64 * DISKSTATS_SECTOR_BYTES;
            let series = [
                (&DISK_READS, d.reads_completed as f64),
                (&DISK_WRITES, d.writes_completed as f64),
                (&DISK_READ_BYTES, sectors(d.sectors_read)),
                (&DISK_WRITTEN_BYTES, sectors(d.sectors_written)),
                (&DISK_READ_TIME, ms(d.read_ms)),
                (&DISK_WRITE_TIME, ms(d.write_ms)),
                (&DISK_IO_TIME, ms(d.io_ms)),
                (&DISK_IO_WEIGHTED, ms(d.weighted_io_ms)),
                (&DISK_IO_NOW, d.in_progress as f64),
            ];
            for (family, v) in series {
                push(out, HOST_RESOURCE, family, &l, v);
            }
        }
        if let Some(e) = failed {
            self.parse_failed(e);
        }
    }

    /// Re-reads the mount table and picks the filesystems to report.
    fn refresh_mounts(&mut self) {
        self.mounts.clear();
        let text = loop {
            let idx = self.mountinfo_choice;
            match self.reader.read(&self.paths.mountinfo[idx]) {
                Ok(_) => break self.reader.text(),
                Err(e) if idx + 1 < self.paths.mountinfo.len() => {
                    let path = self.paths.mountinfo[idx].display();
                    tracing::debug!(error = %e, %path, "trying the next mount table");
                    self.mountinfo_choice += 1;
                }
                Err(e) => {
                    let err = self.reader.read_error(e);
                    self.errors.record(err);
                    return;
                }
            }
        };
        let mut failed = None;
        let mut chosen: Vec<procfs::Mount<'_>> = Vec::new();
        for m in procfs::mountinfo(text) {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    failed = Some(e);
                    continue;
                }
            };
            if self.cfg.fs_exclude_types.iter().any(|t| t == m.fstype) {
                continue;
            }
            // One series per device, at its first mount of the filesystem's root; other
            // mounts of it are bind mounts (kubelet volumes, container files) or btrfs
            // subvolumes sharing its space.
            match chosen.iter_mut().find(|c| c.major_minor == m.major_minor) {
                Some(c) if c.root != "/" && m.root == "/" => *c = m,
                Some(_) => {}
                None => chosen.push(m),
            }
        }
        self.mounts.extend(chosen.into_iter().map(|m| FsMount {
            mount_point: m.mount_point.into_owned(),
            device: m.source.into_owned(),
            fstype: m.fstype.to_owned(),
        }));
        if let Some(e) = failed {
            self.parse_failed(e);
        }
    }

    fn sample_filesystems(&mut self, out: &mut Vec<Sample>) {
        if self.mounts_read_at.is_none_or(|t| t.elapsed() >= MOUNT_TABLE_REFRESH) {
            self.refresh_mounts();
            self.mounts_read_at = Some(Instant::now());
        }
        for m in &self.mounts {
            let st = match statvfs(&self.cfg.rootfs, &m.mount_point, &mut self.statvfs_path) {
                Ok(st) => st,
                Err(source) => {
                    let path = PathBuf::from(std::ffi::OsStr::from_bytes(&self.statvfs_path));
                    self.errors.record(SampleError::Statvfs { path, source });
                    continue;
                }
            };
            let l =
                [("device", m.device.as_str()), ("fstype", m.fstype.as_str()), ("mountpoint", m.mount_point.as_str())];
            let frsize = st.f_frsize as f64;
            let ro = if st.f_flag & libc::ST_RDONLY != 0 { 1.0 } else { 0.0 };
            let series = [
                (&FS_SIZE, st.f_blocks as f64 * frsize),
                (&FS_FREE, st.f_bfree as f64 * frsize),
                (&FS_AVAIL, st.f_bavail as f64 * frsize),
                (&FS_FILES, st.f_files as f64),
                (&FS_FILES_FREE, st.f_ffree as f64),
                (&FS_READONLY, ro),
            ];
            for (family, v) in series {
                push(out, HOST_RESOURCE, family, &l, v);
            }
        }
    }

    fn sample_network(&mut self, out: &mut Vec<Sample>) {
        if let Err(e) = self.reader.read(&self.paths.net_dev) {
            let err = self.reader.read_error(e);
            self.errors.record(err);
            return;
        }
        let mut failed = None;
        for dev in procfs::net_dev(self.reader.text()) {
            let dev = match dev {
                Ok(d) => d,
                Err(e) => {
                    failed = Some(e);
                    continue;
                }
            };
            if matches_any(&self.cfg.net_exclude, dev.name) {
                continue;
            }
            let l = [("device", dev.name)];
            for (family, v) in NET_RX.iter().zip(dev.rx) {
                push(out, HOST_RESOURCE, family, &l, v as f64);
            }
            for (family, v) in NET_TX.iter().zip(dev.tx) {
                push(out, HOST_RESOURCE, family, &l, v as f64);
            }
        }
        if let Some(e) = failed {
            self.parse_failed(e);
        }
    }

    fn sample_snmp(&mut self, out: &mut Vec<Sample>) {
        let Some(text) = self.read(|p| &p.net_snmp) else {
            return;
        };
        let res = procfs::snmp(text, |sec, field, v| {
            if let Some((_, _, family)) = SNMP.iter().find(|(s, f, _)| *s == sec && *f == field) {
                push(out, HOST_RESOURCE, family, &[], v as f64);
            }
        });
        if let Err(e) = res {
            self.parse_failed(e);
        }
    }
}

/// Whether a PSI read failed because the kernel has no PSI (rather than transiently).
pub(crate) fn psi_unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || e.kind() == io::ErrorKind::Unsupported
        || e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// Appends the PSI series of one resource.
fn push_pressure(out: &mut Vec<Sample>, resource: &str, f: &PsiFamilies, p: &procfs::Pressure) {
    if let Some(some) = p.some {
        push(out, resource, &f.waiting, &[], some.total_us as f64 / 1e6);
        push(out, resource, &f.some_avg10, &[], some.avg10 / 100.0);
    }
    if let Some(full) = p.full {
        push(out, resource, &f.stalled, &[], full.total_us as f64 / 1e6);
        push(out, resource, &f.full_avg10, &[], full.avg10 / 100.0);
    }
}

/// Whether a block device is reported: not excluded and, unless partitions are wanted,
/// a whole disk (listed in `<sys_root>/block`; `/` in names is `!` there). When
/// `<sys_root>/block` does not exist every device counts as a whole disk.
fn disk_wanted(cfg: &HostSamplerConfig, name: &str) -> bool {
    if matches_any(&cfg.disk_exclude, name) {
        return false;
    }
    if cfg.disk_partitions {
        return true;
    }
    let block = cfg.sys_root.join("block");
    !block.is_dir() || block.join(name.replace('/', "!")).exists()
}

/// `statvfs(rootfs + mount_point)`; the path used is left in `scratch`.
fn statvfs(rootfs: &Path, mount_point: &str, scratch: &mut Vec<u8>) -> io::Result<libc::statvfs> {
    scratch.clear();
    let prefix = rootfs.as_os_str().as_bytes();
    scratch.extend_from_slice(prefix.strip_suffix(b"/").unwrap_or(prefix));
    if !mount_point.starts_with('/') {
        scratch.push(b'/');
    }
    scratch.extend_from_slice(mount_point.as_bytes());
    let c = CString::new(scratch.as_slice()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc == 0 { Ok(st) } else { Err(io::Error::last_os_error()) }
}

impl Sampler for HostSampler {
    fn name(&self) -> &'static str {
        "host"
    }

    fn sample(&mut self, out: &mut Vec<Sample>) {
        self.sample_cpu(out);
        self.sample_load(out);
        self.sample_memory(out);
        self.sample_pressure(out);
        self.sample_vmstat(out);
        self.sample_disks(out);
        self.sample_filesystems(out);
        self.sample_network(out);
        self.sample_snmp(out);
    }

    fn errors(&self) -> u64 {
        self.errors.count()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::super::testutil::{assert_well_formed, count, value};
    use super::*;
    use augur_core::MetricKind::Gauge;

    fn fixture_config(tree: &str) -> HostSamplerConfig {
        HostSamplerConfig {
            proc_root: fixture(&format!("{tree}/proc")),
            sys_root: fixture(&format!("{tree}/sys")),
            rootfs: fixture(&format!("{tree}/rootfs")),
            ..HostSamplerConfig::default()
        }
    }

    fn tick(s: &mut HostSampler) -> Vec<Sample> {
        let mut out = Vec::new();
        s.sample(&mut out);
        assert_well_formed(&out);
        out
    }

    const H: &str = HOST_RESOURCE;

    #[test]
    fn fixture_host_emits_every_family() {
        let mut s = HostSampler::new(&fixture_config("host-basic"));
        s.ticks_per_second = 100.0;
        let out = tick(&mut s);
        assert_eq!(s.errors(), 0, "{out:#?}");

        assert_eq!(value(&out, H, "node_cpu_seconds_total", &[("mode", "user")]), Some(620.40));
        assert_eq!(value(&out, H, "node_cpu_seconds_total", &[("mode", "steal")]), Some(1.19));
        assert_eq!(count(&out, H, "node_cpu_seconds_total"), 8);
        assert_eq!(value(&out, H, "node_load15", &[]), Some(0.65));
        assert_eq!(value(&out, H, "node_memory_MemAvailable_bytes", &[]), Some(22323328.0 * 1024.0));
        assert_eq!(value(&out, H, "node_memory_Dirty_bytes", &[]), Some(6588.0 * 1024.0));
        assert_eq!(value(&out, H, "node_memory_Active_bytes", &[]), None);

        assert_eq!(value(&out, H, "node_pressure_cpu_waiting_seconds_total", &[]), Some(20.37189));
        assert_eq!(value(&out, H, "node_pressure_memory_stalled_seconds_total", &[]), Some(2.824349));
        assert_eq!(value(&out, H, "node_pressure_memory_some_avg10_ratio", &[]), Some(0.0125));
        assert_eq!(value(&out, H, "node_pressure_io_full_avg10_ratio", &[]), Some(0.005));
        assert_eq!(value(&out, H, "node_pressure_cpu_stalled_seconds_total", &[]), None, "no cpu full line");

        assert_eq!(value(&out, H, "node_vmstat_pgmajfault", &[]), Some(1451.0));
        assert_eq!(value(&out, H, "node_vmstat_oom_kill", &[]), Some(3.0));

        let vda = [("device", "vda")];
        assert_eq!(value(&out, H, "node_disk_reads_completed_total", &vda), Some(36193.0));
        assert_eq!(value(&out, H, "node_disk_read_bytes_total", &vda), Some(3470746.0 * 512.0));
        assert_eq!(value(&out, H, "node_disk_written_bytes_total", &vda), Some(3000768.0 * 512.0));
        assert_eq!(value(&out, H, "node_disk_read_time_seconds_total", &vda), Some(14.405));
        assert_eq!(value(&out, H, "node_disk_write_time_seconds_total", &vda), Some(6.438));
        assert_eq!(value(&out, H, "node_disk_io_time_seconds_total", &vda), Some(5.964));
        assert_eq!(value(&out, H, "node_disk_io_time_weighted_seconds_total", &vda), Some(21.273));
        assert_eq!(value(&out, H, "node_disk_io_now", &[("device", "nvme0n1")]), Some(2.0));
        for excluded in ["loop0", "nvme0n1p1", "zram0", "ram0"] {
            assert_eq!(value(&out, H, "node_disk_reads_completed_total", &[("device", excluded)]), None, "{excluded}");
        }
        assert!(value(&out, H, "node_disk_reads_completed_total", &[("device", "dm-0")]).is_some());

        let eth0 = [("device", "eth0")];
        assert_eq!(value(&out, H, "node_network_receive_bytes_total", &eth0), Some(143186592.0));
        assert_eq!(value(&out, H, "node_network_receive_errs_total", &eth0), Some(1.0));
        assert_eq!(value(&out, H, "node_network_transmit_drop_total", &eth0), Some(4.0));
        assert!(value(&out, H, "node_network_receive_bytes_total", &[("device", "docker0")]).is_some());
        for excluded in ["lo", "veth9a8b7c6"] {
            assert_eq!(value(&out, H, "node_network_receive_bytes_total", &[("device", excluded)]), None);
        }
        assert_eq!(value(&out, H, "node_netstat_Tcp_RetransSegs", &[]), Some(17.0));
        assert_eq!(value(&out, H, "node_netstat_Tcp_CurrEstab", &[]), Some(4.0));
        let estab = out.iter().find(|s| s.key.metric == "node_netstat_Tcp_CurrEstab").expect("emitted");
        assert_eq!(estab.key.kind, Gauge);
    }

    #[test]
    fn fixture_filesystems_skip_pseudo_bind_and_duplicate_mounts() {
        let mut s = HostSampler::new(&fixture_config("host-basic"));
        let out = tick(&mut s);
        assert_eq!(s.errors(), 0);
        let mounts: Vec<(&str, &str, &str)> = out
            .iter()
            .filter(|x| x.key.metric == "node_filesystem_size_bytes")
            .map(|x| {
                (x.key.labels["mountpoint"].as_str(), x.key.labels["device"].as_str(), x.key.labels["fstype"].as_str())
            })
            .collect();
        assert_eq!(
            mounts,
            vec![("/", "/dev/vda", "ext4"), ("/data", "/dev/nvme0n1p1", "xfs"), ("/boot/efi", "/dev/vdb1", "vfat")]
        );
        let root = [("device", "/dev/vda"), ("fstype", "ext4"), ("mountpoint", "/")];
        assert!(value(&out, H, "node_filesystem_size_bytes", &root).is_some_and(|v| v > 0.0));
        let avail = value(&out, H, "node_filesystem_avail_bytes", &root).expect("emitted");
        let free = value(&out, H, "node_filesystem_free_bytes", &root).expect("emitted");
        assert!(avail <= free);
        assert!(value(&out, H, "node_filesystem_files", &root).is_some_and(|v| v > 0.0));
        assert!(value(&out, H, "node_filesystem_files_free", &root).is_some());
        assert!(value(&out, H, "node_filesystem_readonly", &root).is_some());
    }

    #[test]
    fn per_cpu_reports_each_cpu_and_not_the_aggregate() {
        let cfg = HostSamplerConfig { per_cpu: true, ..fixture_config("host-basic") };
        let mut s = HostSampler::new(&cfg);
        s.ticks_per_second = 100.0;
        let out = tick(&mut s);
        assert_eq!(count(&out, H, "node_cpu_seconds_total"), 16);
        assert_eq!(value(&out, H, "node_cpu_seconds_total", &[("cpu", "1"), ("mode", "idle")]), Some(4709.69));
        assert_eq!(value(&out, H, "node_cpu_seconds_total", &[("mode", "idle")]), None);
    }

    #[test]
    fn partitions_and_custom_excludes_are_configurable() {
        let cfg = HostSamplerConfig {
            disk_partitions: true,
            disk_exclude: vec!["dm-*".into()],
            net_exclude: vec![],
            ..fixture_config("host-basic")
        };
        let mut s = HostSampler::new(&cfg);
        let out = tick(&mut s);
        assert!(value(&out, H, "node_disk_reads_completed_total", &[("device", "nvme0n1p1")]).is_some());
        assert!(value(&out, H, "node_disk_reads_completed_total", &[("device", "loop0")]).is_some());
        assert_eq!(value(&out, H, "node_disk_reads_completed_total", &[("device", "dm-0")]), None);
        assert!(value(&out, H, "node_network_receive_bytes_total", &[("device", "lo")]).is_some());
    }

    #[test]
    fn broken_files_are_counted_and_the_rest_still_emitted() {
        // host-broken: truncated stat line, malformed loadavg, meminfo cut mid-line,
        // no pressure directory, vmstat with a bad line, a short diskstats line, a short
        // net/dev line, snmp with a missing value line, mountinfo with a missing mount.
        let mut s = HostSampler::new(&fixture_config("host-broken"));
        s.ticks_per_second = 100.0;
        let out = tick(&mut s);
        // stat, loadavg, meminfo, vmstat, diskstats, net/dev, snmp, statvfs of /gone.
        assert_eq!(s.errors(), 8, "{out:#?}");
        // Good lines of partly broken files are still reported.
        assert!(value(&out, H, "node_cpu_seconds_total", &[("mode", "user")]).is_some());
        assert!(value(&out, H, "node_load1", &[]).is_none());
        assert!(value(&out, H, "node_memory_MemTotal_bytes", &[]).is_some());
        assert!(value(&out, H, "node_memory_Dirty_bytes", &[]).is_none());
        assert!(value(&out, H, "node_vmstat_oom_kill", &[]).is_some());
        assert!(value(&out, H, "node_disk_reads_completed_total", &[("device", "vda")]).is_some());
        assert!(value(&out, H, "node_network_receive_bytes_total", &[("device", "eth0")]).is_some());
        assert!(value(&out, H, "node_netstat_Tcp_RetransSegs", &[]).is_some());
        assert_eq!(count(&out, H, "node_filesystem_size_bytes"), 1);
        // No PSI: disabled once, not an error, not retried.
        assert!(!s.psi_available);
        assert_eq!(count(&out, H, "node_pressure_cpu_waiting_seconds_total"), 0);

        let again = tick(&mut s);
        assert_eq!(s.errors(), 16, "each tick counts its failures again");
        assert_eq!(again.len(), out.len());
    }

    #[test]
    fn missing_proc_root_counts_errors_without_panicking() {
        let cfg = HostSamplerConfig {
            proc_root: PathBuf::from("/nonexistent/proc"),
            sys_root: PathBuf::from("/nonexistent/sys"),
            ..HostSamplerConfig::default()
        };
        let mut s = HostSampler::new(&cfg);
        let out = tick(&mut s);
        assert!(out.is_empty());
        // stat, loadavg, meminfo, vmstat, diskstats, mountinfo, net/dev, net/snmp.
        assert_eq!(s.errors(), 8);
    }

    #[test]
    fn config_round_trips_through_toml() {
        let cfg: HostSamplerConfig =
            toml::from_str("proc_root = \"/host/proc\"\nrootfs = \"/host\"\nper_cpu = true\nnet_exclude = [\"lo\"]\n")
                .expect("valid");
        assert_eq!(cfg.proc_root, PathBuf::from("/host/proc"));
        assert_eq!(cfg.sys_root, PathBuf::from("/sys"));
        assert!(cfg.per_cpu);
        assert_eq!(cfg.net_exclude, vec!["lo".to_owned()]);
        let back: HostSamplerConfig = toml::from_str(&toml::to_string(&cfg).expect("serialises")).expect("parses");
        assert_eq!(back, cfg);
        assert!(toml::from_str::<HostSamplerConfig>("proc = \"/x\"").is_err(), "unknown fields are refused");
    }

    /// Runs against this machine's /proc.
    #[test]
    fn real_proc_reports_memory_and_cpu() {
        if !Path::new("/proc/meminfo").exists() {
            eprintln!("skipping: no /proc on this system");
            return;
        }
        let mut s = HostSampler::new(&HostSamplerConfig::default());
        let out = tick(&mut s);
        let avail = value(&out, H, "node_memory_MemAvailable_bytes", &[]).expect("MemAvailable reported");
        assert!(avail > 0.0);
        let user = value(&out, H, "node_cpu_seconds_total", &[("mode", "user")]).expect("cpu reported");
        assert!(user > 0.0);
        assert!(count(&out, H, "node_filesystem_size_bytes") >= 1, "the root filesystem at least");
        eprintln!("real /proc: {} samples, {} errors", out.len(), s.errors());
    }
}
