//! Pure parsers for cgroup v1 and v2 control files (see the kernel's
//! `admin-guide/cgroup-v1/*.rst` and `admin-guide/cgroup-v2.rst`).

use super::procfs::{ParseError, flat_keyed};

/// A v1 `memory.limit_in_bytes` at or above this is "unlimited" (the kernel reports
/// `PAGE_COUNTER_MAX * PAGE_SIZE`, 0x7FFFFFFFFFFFF000 on 4 KiB pages).
pub(crate) const V1_UNLIMITED: u64 = 1 << 62;

/// A file holding one unsigned integer (`memory.usage_in_bytes`, `pids.current`, …).
pub(crate) fn single_u64(text: &str) -> Result<u64, ParseError> {
    text.trim().parse().map_err(|_| ParseError("expected one unsigned integer"))
}

/// A v2 limit file holding an integer or `max` (`memory.max`, `pids.max`); `None` is
/// unlimited.
pub(crate) fn max_or_u64(text: &str) -> Result<Option<u64>, ParseError> {
    match text.trim() {
        "max" => Ok(None),
        t => t.parse().map(Some).map_err(|_| ParseError("expected an integer or \"max\"")),
    }
}

/// v2 `cpu.max` (`"$MAX $PERIOD"`, `$MAX` may be `max`) as a limit in cores; `None` is
/// unlimited.
pub(crate) fn cpu_max_cores(text: &str) -> Result<Option<f64>, ParseError> {
    let mut it = text.split_ascii_whitespace();
    let quota = it.next().ok_or(ParseError("empty cpu.max"))?;
    let period: u64 = it.next().and_then(|p| p.parse().ok()).ok_or(ParseError("cpu.max without a period"))?;
    if quota == "max" {
        return Ok(None);
    }
    let quota: u64 = quota.parse().map_err(|_| ParseError("bad cpu.max quota"))?;
    quota_cores(quota, period).map(Some).ok_or(ParseError("cpu.max period is 0"))
}

/// v1 `cpu.cfs_quota_us` in microseconds; `None` for -1 (unlimited).
pub(crate) fn cfs_quota_us(text: &str) -> Result<Option<u64>, ParseError> {
    let quota: i64 = text.trim().parse().map_err(|_| ParseError("bad cpu.cfs_quota_us"))?;
    Ok(u64::try_from(quota).ok())
}

/// A CFS quota per period as a number of cores; `None` for a zero period, which the
/// kernel never reports.
pub(crate) fn quota_cores(quota_us: u64, period_us: u64) -> Option<f64> {
    (period_us > 0).then(|| quota_us as f64 / period_us as f64)
}

/// Sums of the `Read` and `Write` rows over all devices of a v1
/// `blkio.throttle.io_service_bytes` or `blkio.throttle.io_serviced` file.
pub(crate) fn blkio_read_write(text: &str) -> Result<(u64, u64), ParseError> {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let toks: Vec<&str> = line.split_ascii_whitespace().collect();
        match toks.as_slice() {
            ["Total", v] => {
                v.parse::<u64>().map_err(|_| ParseError("bad blkio total"))?;
            }
            [_dev, op, v] => {
                let v: u64 = v.parse().map_err(|_| ParseError("bad blkio value"))?;
                match *op {
                    "Read" => read = read.saturating_add(v),
                    "Write" => write = write.saturating_add(v),
                    _ => {}
                }
            }
            _ => return Err(ParseError("malformed blkio line")),
        }
    }
    Ok((read, write))
}

/// I/O totals over all devices of a v2 `io.stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct IoTotals {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

/// Parses v2 `io.stat`: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0` per device.
pub(crate) fn io_stat(text: &str) -> Result<IoTotals, ParseError> {
    let mut t = IoTotals::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_ascii_whitespace();
        let dev = it.next().ok_or(ParseError("empty io.stat line"))?;
        if !dev.contains(':') {
            return Err(ParseError("io.stat line without a device"));
        }
        for tok in it {
            let (k, v) = tok.split_once('=').ok_or(ParseError("io.stat field without '='"))?;
            let slot = match k {
                "rbytes" => &mut t.read_bytes,
                "wbytes" => &mut t.write_bytes,
                "rios" => &mut t.reads,
                "wios" => &mut t.writes,
                // dbytes, dios and the io.cost/iolatency debug fields.
                _ => continue,
            };
            let v: u64 = v.parse().map_err(|_| ParseError("bad io.stat value"))?;
            *slot = slot.saturating_add(v);
        }
    }
    Ok(t)
}

/// Looks up keys of a flat keyed file (`memory.stat`, `cpu.stat`, `memory.events`) in one
/// pass: `out[i]` receives the value of `keys[i]`. Any malformed line is an error.
pub(crate) fn keyed_values<const N: usize>(text: &str, keys: [&str; N]) -> Result<[Option<u64>; N], ParseError> {
    let mut out = [None; N];
    for kv in flat_keyed(text) {
        let (k, v) = kv?;
        if let Some(i) = keys.iter().position(|&want| want == k) {
            out[i] = Some(v);
        }
    }
    Ok(out)
}

/// The cAdvisor working set: usage minus inactive file pages, never below zero.
pub(crate) fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_max_and_numbers() {
        assert_eq!(single_u64("4096\n"), Ok(4096));
        assert!(single_u64("").is_err());
        assert!(single_u64("12 34").is_err());
        assert_eq!(max_or_u64("max\n"), Ok(None));
        assert_eq!(max_or_u64("268435456\n"), Ok(Some(268435456)));
        assert!(max_or_u64("lots").is_err());
    }

    #[test]
    fn cpu_limits_in_cores() {
        assert_eq!(cpu_max_cores("max 100000\n"), Ok(None));
        assert_eq!(cpu_max_cores("150000 100000\n"), Ok(Some(1.5)));
        assert!(cpu_max_cores("150000").is_err());
        assert!(cpu_max_cores("x 100000").is_err());
        assert!(cpu_max_cores("1 0").is_err());
        assert_eq!(cfs_quota_us("-1\n"), Ok(None));
        assert_eq!(cfs_quota_us("50000\n"), Ok(Some(50000)));
        assert!(cfs_quota_us("").is_err());
        assert_eq!(quota_cores(50000, 100000), Some(0.5));
        assert_eq!(quota_cores(50000, 0), None);
    }

    #[test]
    fn blkio_sums_read_and_write_over_devices() {
        let text = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\n\
                    8:16 Read 1\n8:16 Write 2\n8:16 Total 3\nTotal 12291\n";
        assert_eq!(blkio_read_write(text), Ok((4097, 8194)));
        assert_eq!(blkio_read_write("Total 0\n"), Ok((0, 0)));
        assert!(blkio_read_write("8:0 Read\n").is_err());
        assert!(blkio_read_write("8:0 Read x\n").is_err());
    }

    #[test]
    fn io_stat_sums_devices() {
        let text = "8:0 rbytes=1024 wbytes=2048 rios=1 wios=2 dbytes=0 dios=0\n\
                    253:0 rbytes=1 wbytes=1 rios=1 wios=1 dbytes=0 dios=0 cost.vrate=100.00\n";
        assert_eq!(io_stat(text), Ok(IoTotals { read_bytes: 1025, write_bytes: 2049, reads: 2, writes: 3 }));
        assert_eq!(io_stat(""), Ok(IoTotals::default()));
        assert!(io_stat("8:0 rbytes=\n").is_err());
        assert!(io_stat("rbytes=1\n").is_err());
    }

    #[test]
    fn keyed_values_finds_keys_in_one_pass() {
        let text = "usage_usec 705607058\nuser_usec 628671519\nnr_periods 10\nnr_throttled 2\nthrottled_usec 5000\n";
        let v = keyed_values(text, ["usage_usec", "nr_throttled", "missing"]).expect("valid");
        assert_eq!(v, [Some(705607058), Some(2), None]);
        assert!(keyed_values("usage_usec\n", ["usage_usec"]).is_err());
    }

    #[test]
    fn working_set_never_negative() {
        assert_eq!(working_set(100, 30), 70);
        assert_eq!(working_set(10, 30), 0);
    }
}
