//! Recordings: real agent data exported from an aggregator, replayed by the storage
//! bench, the feature export and the model pipeline's scenario lab. One gzip file,
//! lossless.
//!
//! Layout of the decompressed stream (varint = unsigned LEB128, zigzag = signed as
//! zigzag varint, str = varint length + UTF-8 bytes):
//! ```text
//! magic "AUGREC\0" | version u8 (= VERSION)
//! host_id str | start_ms zigzag | end_ms zigzag | series_count varint
//! per series:
//!   resource str | metric str | unit str | kind u8 (0 gauge, 1 counter)
//!   label_count varint | (name str, value str) * label_count
//!   point_count varint
//!   timestamps: first zigzag, then first delta zigzag, then delta-of-deltas zigzag
//!   values: each f64's bits XOR the previous value's bits (the first XOR 0), written
//!           as 8 byte planes (most significant byte of every point first)
//! ```
//! Timestamps 1 s apart have a delta-of-delta of 0 (one byte), and a slowly moving
//! value shares its sign, exponent and high mantissa bits with the previous one, so the
//! high byte planes are runs of zeros that gzip squeezes to almost nothing. Values
//! come back bit-exact (`-0.0`, NaN payloads and all).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use augur_core::{MetricKind, SeriesKey};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

/// Why a recording could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("decoding {path}: {reason}")]
    Decode { path: std::path::PathBuf, reason: String },
    #[error("{0}")]
    Format(String),
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(RecordingError::Format(format!($($fmt)+)));
        }
    };
}
macro_rules! bail {
    ($($fmt:tt)+) => {
        return Err(RecordingError::Format(format!($($fmt)+)))
    };
}

const MAGIC: &[u8; 7] = b"AUGREC\0";
/// Version of the layout above.
pub const VERSION: u8 = 1;

/// A host's series over a time range.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub host_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub series: Vec<RecordedSeries>,
}

/// One series and its points, ascending by timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedSeries {
    pub key: SeriesKey,
    pub points: Vec<(i64, f64)>,
}

impl Recording {
    /// Total points over all series.
    pub fn samples(&self) -> usize {
        self.series.iter().map(|s| s.points.len()).sum()
    }

    /// The uncompressed encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        put_str(&mut out, &self.host_id);
        put_zigzag(&mut out, self.start_ms);
        put_zigzag(&mut out, self.end_ms);
        put_varint(&mut out, self.series.len() as u64);
        for s in &self.series {
            put_str(&mut out, &s.key.resource);
            put_str(&mut out, &s.key.metric);
            put_str(&mut out, &s.key.unit);
            out.push(match s.key.kind {
                MetricKind::Gauge => 0,
                MetricKind::Counter => 1,
            });
            put_varint(&mut out, s.key.labels.len() as u64);
            for (k, v) in &s.key.labels {
                put_str(&mut out, k);
                put_str(&mut out, v);
            }
            put_varint(&mut out, s.points.len() as u64);
            let (mut prev_ts, mut prev_delta) = (0i64, 0i64);
            for (i, &(ts, _)) in s.points.iter().enumerate() {
                match i {
                    0 => put_zigzag(&mut out, ts),
                    1 => {
                        prev_delta = ts.wrapping_sub(prev_ts);
                        put_zigzag(&mut out, prev_delta);
                    }
                    _ => {
                        let delta = ts.wrapping_sub(prev_ts);
                        put_zigzag(&mut out, delta.wrapping_sub(prev_delta));
                        prev_delta = delta;
                    }
                }
                prev_ts = ts;
            }
            let mut xors = Vec::with_capacity(s.points.len());
            let mut prev = 0u64;
            for &(_, v) in &s.points {
                xors.push(v.to_bits() ^ prev);
                prev = v.to_bits();
            }
            for plane in (0..8).rev() {
                out.extend(xors.iter().map(|x| (x >> (plane * 8)) as u8));
            }
        }
        out
    }

    /// Parses the uncompressed encoding, checking every length.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordingError> {
        let mut r = Reader { b: bytes, pos: 0 };
        ensure!(r.take(MAGIC.len())? == MAGIC, "not an augur recording");
        let version = r.byte()?;
        ensure!(version == VERSION, "recording version {version}; this build reads {VERSION}");
        let host_id = r.str()?;
        let start_ms = r.zigzag()?;
        let end_ms = r.zigzag()?;
        let n_series = r.len()?;
        let mut series = Vec::with_capacity(n_series.min(1 << 16));
        for _ in 0..n_series {
            let resource = r.str()?;
            let metric = r.str()?;
            let unit = r.str()?;
            let kind = match r.byte()? {
                0 => MetricKind::Gauge,
                1 => MetricKind::Counter,
                k => bail!("unknown metric kind {k}"),
            };
            let mut labels = BTreeMap::new();
            for _ in 0..r.len()? {
                let k = r.str()?;
                let v = r.str()?;
                labels.insert(k, v);
            }
            let n = r.len()?;
            ensure!(n <= r.remaining() / 8, "point count {n} exceeds the data");
            let mut ts = Vec::with_capacity(n);
            let (mut prev_ts, mut prev_delta) = (0i64, 0i64);
            for i in 0..n {
                let z = r.zigzag()?;
                let t = match i {
                    0 => z,
                    1 => {
                        prev_delta = z;
                        prev_ts.wrapping_add(z)
                    }
                    _ => {
                        prev_delta = prev_delta.wrapping_add(z);
                        prev_ts.wrapping_add(prev_delta)
                    }
                };
                ts.push(t);
                prev_ts = t;
            }
            let mut xors = vec![0u64; n];
            for plane in (0..8).rev() {
                for (x, b) in xors.iter_mut().zip(r.take(n)?) {
                    *x |= u64::from(*b) << (plane * 8);
                }
            }
            let mut prev = 0u64;
            let points = ts
                .into_iter()
                .zip(xors)
                .map(|(t, x)| {
                    prev ^= x;
                    (t, f64::from_bits(prev))
                })
                .collect();
            series.push(RecordedSeries { key: SeriesKey { resource, metric, unit, kind, labels }, points });
        }
        ensure!(r.remaining() == 0, "{} trailing bytes", r.remaining());
        Ok(Recording { host_id, start_ms, end_ms, series })
    }

    /// Writes the gzip-compressed encoding to `path`; returns the file size.
    pub fn save(&self, path: &Path) -> Result<u64, RecordingError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| io("creating", dir, source))?;
        }
        let file = File::create(path).map_err(|source| io("creating", path, source))?;
        let mut gz = GzEncoder::new(BufWriter::new(file), Compression::best());
        gz.write_all(&self.encode()).map_err(|source| io("writing", path, source))?;
        gz.finish().and_then(|mut f| f.flush()).map_err(|source| io("writing", path, source))?;
        Ok(std::fs::metadata(path).map_err(|source| io("reading", path, source))?.len())
    }

    /// Reads a file written by [`Recording::save`].
    pub fn load(path: &Path) -> Result<Self, RecordingError> {
        let file = File::open(path).map_err(|source| io("opening", path, source))?;
        let mut bytes = Vec::new();
        GzDecoder::new(file).read_to_end(&mut bytes).map_err(|source| io("decompressing", path, source))?;
        Self::decode(&bytes).map_err(|e| RecordingError::Decode { path: path.to_owned(), reason: e.to_string() })
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn io(what: &'static str, path: &Path, source: std::io::Error) -> RecordingError {
    RecordingError::Io { what, path: path.to_owned(), source }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordingError> {
        ensure!(n <= self.remaining(), "truncated recording");
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, RecordingError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, RecordingError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("varint longer than 64 bits")
    }

    fn zigzag(&mut self) -> Result<i64, RecordingError> {
        let u = self.varint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A count that must fit what is left of the input.
    fn len(&mut self) -> Result<usize, RecordingError> {
        let n = self.varint()?;
        ensure!(n <= self.remaining() as u64, "length {n} exceeds the remaining {} bytes", self.remaining());
        Ok(n as usize)
    }

    fn str(&mut self) -> Result<String, RecordingError> {
        let n = self.len()?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| RecordingError::Format("string is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Recording {
        let key =
            SeriesKey::new("host", "node_cpu_seconds_total", "seconds", MetricKind::Counter).with_label("mode", "user");
        let odd = [0.0, -0.0, f64::NAN, f64::INFINITY, 1e-310, -3.5, f64::MAX];
        let mut points: Vec<(i64, f64)> =
            (0..500).map(|i| (1_700_000_000_000 + i * 1000 + (i % 7), 100.0 + i as f64 * 0.37)).collect();
        points.extend(odd.iter().enumerate().map(|(i, &v)| (1_800_000_000_000 + i as i64, v)));
        Recording {
            host_id: "h-1".into(),
            start_ms: 1_700_000_000_000,
            end_ms: 1_800_000_000_100,
            series: vec![
                RecordedSeries { key, points },
                RecordedSeries {
                    key: SeriesKey::new("cgroup/a/b", "g", "", MetricKind::Gauge),
                    points: vec![(-5, 1.0)],
                },
                RecordedSeries { key: SeriesKey::new("host", "empty", "bytes", MetricKind::Gauge), points: vec![] },
            ],
        }
    }

    fn bits(r: &Recording) -> Vec<Vec<(i64, u64)>> {
        r.series.iter().map(|s| s.points.iter().map(|&(t, v)| (t, v.to_bits())).collect()).collect()
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let r = sample();
        let back = Recording::decode(&r.encode()).expect("decode");
        assert_eq!(bits(&back), bits(&r));
        assert_eq!(back.host_id, r.host_id);
        assert_eq!(
            back.series.iter().map(|s| &s.key).collect::<Vec<_>>(),
            r.series.iter().map(|s| &s.key).collect::<Vec<_>>()
        );
        assert_eq!((back.start_ms, back.end_ms), (r.start_ms, r.end_ms));
    }

    #[test]
    fn file_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.augrec.gz");
        let r = sample();
        assert!(r.save(&path).expect("save") > 0);
        assert_eq!(bits(&Recording::load(&path).expect("load")), bits(&r));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let enc = sample().encode();
        for cut in [0, 3, 8, 20, enc.len() / 2, enc.len() - 1] {
            assert!(Recording::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = enc.clone();
        bad[7] = 99;
        assert!(Recording::decode(&bad).is_err());
    }
}
