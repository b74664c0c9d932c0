//! Pure parsers for the `/proc` files the host sampler reads. They borrow from the text
//! they are given and allocate nothing, so the sampler can reuse one read buffer.
//!
//! Parsers that see one record per line return an iterator of `Result`s, so a malformed
//! or truncated line costs that line only; the caller counts the error once per file.

use std::borrow::Cow;

/// What was wrong with a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ParseError(pub(crate) &'static str);

fn num<T: std::str::FromStr>(tok: Option<&str>, what: &'static str) -> Result<T, ParseError> {
    tok.ok_or(ParseError(what))?.parse().map_err(|_| ParseError(what))
}

/// CPU modes of a `/proc/stat` cpu line, in the kernel's column order.
pub(crate) const CPU_MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];

/// One `cpu` or `cpuN` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuLine<'a> {
    /// `None` for the aggregate `cpu` line, `Some("3")` for `cpu3`.
    pub cpu: Option<&'a str>,
    /// Clock ticks (USER_HZ) per mode of [`CPU_MODES`]; `user` includes guest time.
    pub ticks: [u64; 8],
}

/// The cpu lines at the top of `/proc/stat`.
pub(crate) fn stat_cpu_lines(text: &str) -> impl Iterator<Item = Result<CpuLine<'_>, ParseError>> {
    text.lines().take_while(|l| l.starts_with("cpu")).map(|line| {
        let mut it = line.split_ascii_whitespace();
        let label = it.next().ok_or(ParseError("empty cpu line"))?;
        let cpu = match &label[3..] {
            "" => None,
            n if n.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(ParseError("bad cpu label")),
        };
        let mut ticks = [0u64; 8];
        let mut n = 0;
        for (slot, tok) in ticks.iter_mut().zip(it) {
            *slot = tok.parse().map_err(|_| ParseError("bad cpu tick count"))?;
            n += 1;
        }
        // Kernels since 2.6 have at least user, nice, system, idle and iowait.
        if n < 5 {
            return Err(ParseError("truncated cpu line"));
        }
        Ok(CpuLine { cpu, ticks })
    })
}

/// The 1, 5 and 15 minute load averages of `/proc/loadavg`.
pub(crate) fn loadavg(text: &str) -> Result<[f64; 3], ParseError> {
    let mut it = text.split_ascii_whitespace();
    let a = num(it.next(), "bad load average")?;
    let b = num(it.next(), "bad load average")?;
    let c = num(it.next(), "bad load average")?;
    // The runnable/total field follows; without it the file was cut short.
    if !it.next().is_some_and(|t| t.contains('/')) {
        return Err(ParseError("truncated loadavg"));
    }
    Ok([a, b, c])
}

/// `Name: value [kB]` lines of `/proc/meminfo`, values in bytes (kB are KiB).
pub(crate) fn meminfo(text: &str) -> impl Iterator<Item = Result<(&str, u64), ParseError>> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|line| {
        let (name, rest) = line.split_once(':').ok_or(ParseError("meminfo line without ':'"))?;
        let mut it = rest.split_ascii_whitespace();
        let v: u64 = num(it.next(), "bad meminfo value")?;
        match it.next() {
            None => Ok((name, v)),
            Some("kB") => Ok((name, v.saturating_mul(1024))),
            Some(_) => Err(ParseError("unknown meminfo unit")),
        }
    })
}

/// `key value` lines (`/proc/vmstat`, cgroup `memory.stat`, `cpu.stat`, `memory.events`,
/// `memory.oom_control`).
pub(crate) fn flat_keyed(text: &str) -> impl Iterator<Item = Result<(&str, u64), ParseError>> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|line| {
        let mut it = line.split_ascii_whitespace();
        let key = it.next().ok_or(ParseError("empty line"))?;
        let v = num(it.next(), "key without a numeric value")?;
        Ok((key, v))
    })
}

/// One line of a PSI file.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct PsiLine {
    /// Share of the last 10 s in percent (0..=100).
    pub avg10: f64,
    /// Stall time since boot in microseconds.
    pub total_us: u64,
}

/// A PSI file (`/proc/pressure/*`, cgroup v2 `*.pressure`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Pressure {
    /// Some tasks stalled.
    pub some: Option<PsiLine>,
    /// All non-idle tasks stalled (absent for system-wide cpu on older kernels).
    pub full: Option<PsiLine>,
}

/// Parses `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and the `full` line.
pub(crate) fn pressure(text: &str) -> Result<Pressure, ParseError> {
    let mut p = Pressure::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_ascii_whitespace();
        let which = it.next().ok_or(ParseError("empty line"))?;
        let mut avg10 = None;
        let mut total = None;
        for tok in it {
            let (k, v) = tok.split_once('=').ok_or(ParseError("PSI field without '='"))?;
            match k {
                "avg10" => avg10 = Some(v.parse::<f64>().map_err(|_| ParseError("bad PSI avg10"))?),
                "total" => total = Some(v.parse::<u64>().map_err(|_| ParseError("bad PSI total"))?),
                _ => {}
            }
        }
        let (Some(avg10), Some(total_us)) = (avg10, total) else {
            return Err(ParseError("truncated PSI line"));
        };
        let parsed = Some(PsiLine { avg10, total_us });
        match which {
            "some" => p.some = parsed,
            "full" => p.full = parsed,
            _ => return Err(ParseError("PSI line is neither some nor full")),
        }
    }
    if p.some.is_none() {
        return Err(ParseError("no PSI some line"));
    }
    Ok(p)
}

/// One device line of `/proc/diskstats` (fields as in the kernel's iostats.rst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskLine<'a> {
    pub name: &'a str,
    pub reads_completed: u64,
    pub sectors_read: u64,
    pub read_ms: u64,
    pub writes_completed: u64,
    pub sectors_written: u64,
    pub write_ms: u64,
    pub in_progress: u64,
    pub io_ms: u64,
    pub weighted_io_ms: u64,
}

/// Device lines of `/proc/diskstats`. Sectors are always 512 bytes there.
pub(crate) fn diskstats(text: &str) -> impl Iterator<Item = Result<DiskLine<'_>, ParseError>> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|line| {
        let mut it = line.split_ascii_whitespace();
        let _major = it.next();
        let _minor = it.next();
        let name = it.next().ok_or(ParseError("diskstats line without a name"))?;
        let mut f = [0u64; 11];
        for slot in f.iter_mut() {
            *slot = num(it.next(), "truncated diskstats line")?;
        }
        Ok(DiskLine {
            name,
            reads_completed: f[0],
            sectors_read: f[2],
            read_ms: f[3],
            writes_completed: f[4],
            sectors_written: f[6],
            write_ms: f[7],
            in_progress: f[8],
            io_ms: f[9],
            weighted_io_ms: f[10],
        })
    })
}

/// One interface of `/proc/net/dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NetDevLine<'a> {
    pub name: &'a str,
    /// bytes, packets, errs, drop, fifo, frame, compressed, multicast
    pub rx: [u64; 8],
    /// bytes, packets, errs, drop, fifo, colls, carrier, compressed
    pub tx: [u64; 8],
}

/// Interface lines of `/proc/net/dev` (the two header lines are skipped).
pub(crate) fn net_dev(text: &str) -> impl Iterator<Item = Result<NetDevLine<'_>, ParseError>> {
    text.lines().skip(2).filter(|l| !l.trim().is_empty()).map(|line| {
        let (name, rest) = line.split_once(':').ok_or(ParseError("net/dev line without ':'"))?;
        let mut it = rest.split_ascii_whitespace();
        let mut rx = [0u64; 8];
        let mut tx = [0u64; 8];
        for slot in rx.iter_mut().chain(tx.iter_mut()) {
            *slot = num(it.next(), "truncated net/dev line")?;
        }
        Ok(NetDevLine { name: name.trim(), rx, tx })
    })
}

/// Calls `f(section, field, value)` for every field of `/proc/net/snmp` (and the
/// same-format `/proc/net/netstat`): pairs of `Tcp: Name1 Name2` / `Tcp: 1 2` lines.
/// Fields of well-formed sections are reported even when a later section is malformed.
pub(crate) fn snmp(text: &str, mut f: impl FnMut(&str, &str, i64)) -> Result<(), ParseError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    while let Some(header) = lines.next() {
        let values = lines.next().ok_or(ParseError("snmp header without values"))?;
        let (sec_h, names) = header.split_once(':').ok_or(ParseError("snmp line without ':'"))?;
        let (sec_v, vals) = values.split_once(':').ok_or(ParseError("snmp line without ':'"))?;
        if sec_h != sec_v {
            return Err(ParseError("snmp header and value lines disagree"));
        }
        let names: Vec<&str> = names.split_ascii_whitespace().collect();
        let mut parsed = Vec::with_capacity(names.len());
        for v in vals.split_ascii_whitespace() {
            parsed.push(v.parse::<i64>().map_err(|_| ParseError("bad snmp value"))?);
        }
        if parsed.len() != names.len() {
            return Err(ParseError("snmp value count differs from header"));
        }
        for (n, v) in names.into_iter().zip(parsed) {
            f(sec_h, n, v);
        }
    }
    Ok(())
}

/// One line of `/proc/<pid>/mountinfo` (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount<'a> {
    /// `major:minor` of the mounted device.
    pub major_minor: &'a str,
    /// Directory of the filesystem that forms the root of this mount (`/` unless a bind
    /// mount of a subdirectory).
    pub root: Cow<'a, str>,
    pub mount_point: Cow<'a, str>,
    pub fstype: &'a str,
    pub source: Cow<'a, str>,
    /// Per-superblock options; for cgroup v1 they name the controllers.
    pub super_options: &'a str,
}

/// Lines of a mountinfo file.
pub(crate) fn mountinfo(text: &str) -> impl Iterator<Item = Result<Mount<'_>, ParseError>> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|line| {
        let mut it = line.split(' ');
        let _id = it.next();
        let _parent = it.next();
        let major_minor = it.next().ok_or(ParseError("truncated mountinfo line"))?;
        let root = it.next().ok_or(ParseError("truncated mountinfo line"))?;
        let mount_point = it.next().ok_or(ParseError("truncated mountinfo line"))?;
        // Mount options, then optional fields up to the "-" separator.
        it.next().ok_or(ParseError("truncated mountinfo line"))?;
        if !it.by_ref().any(|t| t == "-") {
            return Err(ParseError("mountinfo line without '-' separator"));
        }
        let fstype = it.next().ok_or(ParseError("truncated mountinfo line"))?;
        let source = it.next().ok_or(ParseError("truncated mountinfo line"))?;
        let super_options = it.next().ok_or(ParseError("truncated mountinfo line"))?;
        Ok(Mount {
            major_minor,
            root: unescape_octal(root),
            mount_point: unescape_octal(mount_point),
            fstype,
            source: unescape_octal(source),
            super_options,
        })
    })
}

/// Undoes the kernel's `\ooo` escaping of space, tab, newline and backslash in mount
/// fields; borrows when there is nothing to undo.
pub(crate) fn unescape_octal(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_lines_parse_aggregate_and_per_cpu() {
        let text = "cpu  62040 0 7479 942907 377 0 58 119 0 0\n\
                    cpu0 30823 0 3447 471938 77 0 9 54 0 0\n\
                    cpu1 31217 1 4031 470969 299 0 49 65 0 0\n\
                    intr 413581 0 0\nctxt 510459\n";
        let lines: Vec<_> = stat_cpu_lines(text).collect::<Result<_, _>>().expect("valid");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].cpu, None);
        assert_eq!(lines[0].ticks, [62040, 0, 7479, 942907, 377, 0, 58, 119]);
        assert_eq!(lines[2].cpu, Some("1"));
        assert_eq!(lines[2].ticks[1], 1);
    }

    #[test]
    fn stat_cpu_lines_report_truncation_per_line() {
        let text = "cpu  1 2 3 4 5 6 7 8\ncpu0 1 2 3";
        let lines: Vec<_> = stat_cpu_lines(text).collect();
        assert!(lines[0].is_ok());
        assert_eq!(lines[1], Err(ParseError("truncated cpu line")));
        let bad: Vec<_> = stat_cpu_lines("cpu0 1 x 3 4 5").collect();
        assert!(bad[0].is_err());
        let label: Vec<_> = stat_cpu_lines("cpufoo 1 2 3 4 5").collect();
        assert!(label[0].is_err());
    }

    #[test]
    fn loadavg_parses_and_rejects_truncation() {
        assert_eq!(loadavg("2.03 1.43 0.65 3/99 8198\n"), Ok([2.03, 1.43, 0.65]));
        assert!(loadavg("2.03 1.43").is_err());
        assert!(loadavg("2.03 1.43 0.6").is_err());
        assert!(loadavg("a b c 1/2 3").is_err());
        assert!(loadavg("").is_err());
    }

    #[test]
    fn meminfo_converts_kib_to_bytes() {
        let text = "MemTotal:       24684092 kB\nHugePages_Total:       0\nDirty:";
        let v: Vec<_> = meminfo(text).collect();
        assert_eq!(v[0], Ok(("MemTotal", 24684092 * 1024)));
        assert_eq!(v[1], Ok(("HugePages_Total", 0)));
        assert!(v[2].is_err());
    }

    #[test]
    fn flat_keyed_parses_vmstat_and_memory_stat() {
        let v: Vec<_> = flat_keyed("pgfault 13346327\npgmajfault 1451\noom_kill 0\n").collect();
        assert_eq!(v, vec![Ok(("pgfault", 13346327)), Ok(("pgmajfault", 1451)), Ok(("oom_kill", 0))]);
        let bad: Vec<_> = flat_keyed("cache\nrss 12").collect();
        assert!(bad[0].is_err());
        assert_eq!(bad[1], Ok(("rss", 12)));
    }

    #[test]
    fn pressure_parses_some_and_full() {
        let p = pressure(
            "some avg10=3.42 avg60=3.03 avg300=2.58 total=20371890\n\
             full avg10=0.10 avg60=0.00 avg300=0.00 total=7\n",
        )
        .expect("valid");
        assert_eq!(p.some, Some(PsiLine { avg10: 3.42, total_us: 20371890 }));
        assert_eq!(p.full, Some(PsiLine { avg10: 0.10, total_us: 7 }));
        let only_some = pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").expect("valid");
        assert_eq!(only_some.full, None);
        assert!(pressure("some avg10=0.00 avg60=0.0").is_err());
        assert!(pressure("").is_err());
        assert!(pressure("some avg10=x avg60=0.00 avg300=0.00 total=0").is_err());
    }

    #[test]
    fn diskstats_parses_kernel_4_and_5_formats() {
        let text = " 254       0 vda 36193 9415 3470746 14405 11180 23796 3000768 6438 0 5964 21273 4580 52 363600 367 1324 61\n\
                    8 0 sda 1 2 3 4 5 6 7 8 9 10 11\n\
                    8 1 sda1 1 2 3\n";
        let v: Vec<_> = diskstats(text).collect();
        let vda = v[0].expect("valid");
        assert_eq!(vda.name, "vda");
        assert_eq!(vda.reads_completed, 36193);
        assert_eq!(vda.sectors_read, 3470746);
        assert_eq!(vda.read_ms, 14405);
        assert_eq!(vda.writes_completed, 11180);
        assert_eq!(vda.sectors_written, 3000768);
        assert_eq!(vda.write_ms, 6438);
        assert_eq!(vda.in_progress, 0);
        assert_eq!(vda.io_ms, 5964);
        assert_eq!(vda.weighted_io_ms, 21273);
        assert_eq!(v[1].expect("valid").weighted_io_ms, 11);
        assert!(v[2].is_err());
    }

    #[test]
    fn net_dev_skips_headers_and_handles_glued_numbers() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0\n  \
                    eth0:143186592    5090    1    2    0     0          0         0   335811    2767    3    4    0     0       0          0\n  \
                    eth1: 1 2 3\n";
        let v: Vec<_> = net_dev(text).collect();
        assert_eq!(v.len(), 3);
        let eth0 = v[1].expect("valid");
        assert_eq!(eth0.name, "eth0");
        assert_eq!(eth0.rx[..4], [143186592, 5090, 1, 2]);
        assert_eq!(eth0.tx[..4], [335811, 2767, 3, 4]);
        assert!(v[2].is_err());
    }

    #[test]
    fn snmp_zips_headers_with_values() {
        let text = "Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\n\
                    Tcp: 1 200 120000 -1 59 2 0 39 4 4999 2721 17 0 47 0\n\
                    Udp: InDatagrams NoPorts\nUdp: 115 0\n";
        let mut got = Vec::new();
        snmp(text, |s, n, v| got.push((s.to_owned(), n.to_owned(), v))).expect("valid");
        assert!(got.contains(&("Tcp".into(), "RetransSegs".into(), 17)));
        assert!(got.contains(&("Tcp".into(), "MaxConn".into(), -1)));
        assert!(got.contains(&("Udp".into(), "InDatagrams".into(), 115)));
        let mut n = 0;
        assert!(snmp("Tcp: A B\nTcp: 1 2\nUdp: A B\nUdp: 1\n", |_, _, _| n += 1).is_err());
        assert_eq!(n, 2, "fields before the malformed section are reported");
        assert!(snmp("Tcp: A B\n", |_, _, _| {}).is_err());
    }

    #[test]
    fn mountinfo_parses_optional_fields_and_escapes() {
        let text = "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard\n\
                    32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                    90 27 8:1 /data/sub /mnt/my\\040disk rw master:2 shared:3 - xfs /dev/sdb1 rw\n\
                    91 27 8:1 / /broken rw\n";
        let v: Vec<_> = mountinfo(text).collect();
        let root = v[0].as_ref().expect("valid");
        assert_eq!(root.major_minor, "254:0");
        assert_eq!(root.mount_point, "/");
        assert_eq!(root.fstype, "ext4");
        assert_eq!(root.source, "/dev/vda");
        let cg = v[1].as_ref().expect("valid");
        assert_eq!(cg.fstype, "cgroup");
        assert_eq!(cg.super_options, "rw,cpu,cpuacct");
        let bind = v[2].as_ref().expect("valid");
        assert_eq!(bind.root, "/data/sub");
        assert_eq!(bind.mount_point, "/mnt/my disk");
        assert_eq!(bind.fstype, "xfs");
        assert!(v[3].is_err());
    }

    #[test]
    fn unescape_octal_handles_edge_cases() {
        assert!(matches!(unescape_octal("/plain"), Cow::Borrowed("/plain")));
        assert_eq!(unescape_octal("a\\134b"), "a\\b");
        assert_eq!(unescape_octal("tab\\011"), "tab\t");
        assert_eq!(unescape_octal("end\\04"), "end\\04");
    }
}
