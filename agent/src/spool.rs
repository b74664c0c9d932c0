//! Bounded on-disk spool of metric batches awaiting acknowledgement by the aggregator.
//!
//! Every batch is appended here before it is sent, replayed in order after a reconnect and
//! deleted only once the aggregator has acknowledged it as durably stored. The spool is
//! bounded by [`SpoolConfig::max_bytes`]: when full, whole oldest segments are evicted (even
//! unacknowledged ones) and the loss is counted in [`SpoolStats`].
//!
//! # On-disk layout
//!
//! All files live in one directory:
//!
//! - `<first seq, 20 digits zero padded>.seg`: a segment, a sequence of records
//!   `[len u32 LE][crc32 u32 LE of seq bytes + payload][seq u64 LE][payload]`.
//!   Sequence numbers inside a segment are contiguous and start at the number in the name;
//!   gaps between segments are where segments were evicted.
//! - `meta`: magic `AUGSPL01` (format version 1), incarnation, acknowledged floor, next-sequence floor and a
//!   crc32, replaced atomically (write `meta.tmp`, fsync, rename).
//! - `lock`: held with `flock` while a [`Spool`] is open, so two agents never share a spool.
//!
//! # Durability
//!
//! Each append is handed to the OS with one `write` before [`Spool::append`] returns, so a
//! killed agent loses nothing; it is fsynced only with [`SpoolConfig::fsync`]. On open every
//! segment is scanned: a torn or corrupt tail of the newest segment is truncated away and a
//! corrupt record elsewhere ends the reading of its segment. Both are counted in
//! [`SpoolStats::corrupt_records`] (one per damaged region); opening never panics on damage.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

/// Bytes of a record header: length, crc32 and sequence number.
const HEADER_LEN: u64 = 16;
/// Extension of segment files.
const SEGMENT_EXT: &str = "seg";
/// Name of the metadata file.
const META_FILE: &str = "meta";
/// Name of the temporary file the metadata is written to before it is renamed.
const META_TMP_FILE: &str = "meta.tmp";
/// Name of the lock file.
const LOCK_FILE: &str = "lock";
/// First bytes of the metadata file; the trailing digits are the format version.
const META_MAGIC: [u8; 8] = *b"AUGSPL01";
/// Length of the metadata file: magic, incarnation, acked floor, seq floor, crc32.
const META_LEN: usize = 8 + 8 + 8 + 8 + 4;
/// Read buffer used when scanning segments.
const READ_BUF_BYTES: usize = 64 * 1024;

/// Sizing and durability of a [`Spool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Upper bound of the bytes of all segments; the oldest segments are evicted beyond it.
    pub max_bytes: u64,
    /// A segment is closed and a new one started once it would grow beyond this size.
    pub segment_bytes: u64,
    /// fsync every append (and directory changes); without it a crash of the host, not of
    /// the agent, may lose the most recent appends.
    pub fsync: bool,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self { max_bytes: 256 * 1024 * 1024, segment_bytes: 4 * 1024 * 1024, fsync: false }
    }
}

/// Counters and gauges of a [`Spool`]; the counters start at zero when the spool is opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of all segment files on disk.
    pub bytes: u64,
    /// Unacknowledged records held.
    pub records: u64,
    /// Sequence of the oldest unacknowledged record held, 0 if none.
    pub oldest_seq: u64,
    /// Sequence of the newest unacknowledged record held, 0 if none.
    pub newest_seq: u64,
    /// Every record with a sequence up to this one is acknowledged.
    pub acked_seq: u64,
    /// Unacknowledged records evicted because the spool was full.
    pub dropped_records: u64,
    /// On-disk bytes of the segments evicted because the spool was full.
    pub dropped_bytes: u64,
    /// Damaged regions found (torn tails, crc or sequence mismatches); each ends the
    /// reading of its segment.
    pub corrupt_records: u64,
}

/// Failure of a spool operation.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// An I/O operation on a spool file failed.
    #[error("spool: cannot {op} {}", path.display())]
    Io {
        /// What was being done, e.g. "write segment".
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another process holds the spool directory.
    #[error("spool: {} is in use by another process", path.display())]
    Locked {
        /// The spool directory.
        path: PathBuf,
    },
    /// A payload does not fit the u32 length field of a record.
    #[error("spool: payload of {len} bytes exceeds the record limit of 4 GiB")]
    PayloadTooLarge {
        /// Length of the rejected payload.
        len: usize,
    },
}

/// Builds a closure mapping an I/O error to [`SpoolError::Io`].
fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpoolError {
    move |source| SpoolError::Io { op, path: path.to_path_buf(), source }
}

/// In-memory index entry of one segment file.
#[derive(Debug, Clone)]
struct Segment {
    /// Sequence of the first record, also the file name.
    first_seq: u64,
    /// Sequence of the last record (records are contiguous: `first_seq..=last_seq`).
    last_seq: u64,
    /// Number of records.
    records: u64,
    /// Bytes of valid records from the start of the file; reading stops here.
    valid_len: u64,
    /// Bytes of the file on disk (more than `valid_len` after damage).
    file_len: u64,
    /// No further appends go to this segment (it is damaged or a write to it failed).
    sealed: bool,
}

impl Segment {
    /// Records of this segment with a sequence above `acked`.
    fn unacked(&self, acked: u64) -> u64 {
        let from = self.first_seq.max(acked.saturating_add(1));
        if self.last_seq >= from { self.last_seq - from + 1 } else { 0 }
    }
}

/// Read position just after the last record returned by [`Spool::read_after`].
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// Segment the position is in.
    segment_first_seq: u64,
    /// Byte offset inside that segment.
    offset: u64,
    /// Sequence of the record at `offset`, if the segment holds it.
    seq: u64,
}

/// Contents of the metadata file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    incarnation: u64,
    acked_seq: u64,
    next_seq_floor: u64,
}

impl Meta {
    fn encode(&self) -> [u8; META_LEN] {
        let mut buf = [0u8; META_LEN];
        buf[0..8].copy_from_slice(&META_MAGIC);
        buf[8..16].copy_from_slice(&self.incarnation.to_le_bytes());
        buf[16..24].copy_from_slice(&self.acked_seq.to_le_bytes());
        buf[24..32].copy_from_slice(&self.next_seq_floor.to_le_bytes());
        let crc = crc32fast::hash(&buf[..32]);
        buf[32..36].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Decodes a metadata file; `None` if it is not one or is damaged.
    fn decode(buf: &[u8]) -> Option<Meta> {
        if buf.len() != META_LEN || buf[0..8] != META_MAGIC {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("slice of 8 bytes"));
        let crc = u32::from_le_bytes(buf[32..36].try_into().expect("slice of 4 bytes"));
        if crc32fast::hash(&buf[..32]) != crc {
            return None;
        }
        let meta = Meta { incarnation: u64_at(8), acked_seq: u64_at(16), next_seq_floor: u64_at(24) };
        (meta.incarnation != 0).then_some(meta)
    }
}

/// Why reading a segment stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// Fewer bytes than a header, or than the header's length, remain.
    Torn,
    /// The crc32 does not match.
    BadCrc,
    /// The sequence is not the expected next one.
    BadSeq,
}

/// One step of a [`RecordReader`].
enum Step {
    /// A complete record with a valid crc; `payload` only if it was asked for.
    Record { seq: u64, payload: Option<Vec<u8>> },
    /// The end of the readable bytes.
    End,
    /// A damaged record; the reader position is undefined afterwards.
    Damaged(Damage),
}

/// Sequential reader of the records of a segment file up to a byte limit.
struct RecordReader {
    inner: BufReader<File>,
    pos: u64,
    end: u64,
}

impl RecordReader {
    /// Opens `path` positioned at `pos`; reads stop at `end`.
    fn open(path: &Path, pos: u64, end: u64) -> io::Result<RecordReader> {
        let mut file = File::open(path)?;
        if pos > 0 {
            file.seek(SeekFrom::Start(pos))?;
        }
        Ok(RecordReader { inner: BufReader::with_capacity(READ_BUF_BYTES, file), pos, end })
    }

    /// Reads the next record, keeping its payload only if `keep_payload`.
    fn next(&mut self, keep_payload: bool) -> io::Result<Step> {
        match self.read_record(keep_payload) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Step::Damaged(Damage::Torn)),
            other => other,
        }
    }

    fn read_record(&mut self, keep_payload: bool) -> io::Result<Step> {
        let remaining = self.end.saturating_sub(self.pos);
        if remaining == 0 {
            return Ok(Step::End);
        }
        if remaining < HEADER_LEN {
            return Ok(Step::Damaged(Damage::Torn));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        self.inner.read_exact(&mut header)?;
        let len = u32::from_le_bytes(header[0..4].try_into().expect("slice of 4 bytes"));
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("slice of 4 bytes"));
        let seq = u64::from_le_bytes(header[8..16].try_into().expect("slice of 8 bytes"));
        let len = u64::from(len);
        if remaining - HEADER_LEN < len {
            return Ok(Step::Damaged(Damage::Torn));
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[8..16]);
        let payload = if keep_payload {
            let len = usize::try_from(len).expect("a u32 length fits in usize");
            let mut payload = vec![0u8; len];
            self.inner.read_exact(&mut payload)?;
            hasher.update(&payload);
            Some(payload)
        } else {
            let mut left = len;
            let mut chunk = [0u8; 8192];
            while left > 0 {
                let n = usize::try_from(left.min(chunk.len() as u64)).expect("bounded by the chunk size");
                self.inner.read_exact(&mut chunk[..n])?;
                hasher.update(&chunk[..n]);
                left -= n as u64;
            }
            None
        };
        if hasher.finalize() != crc {
            return Ok(Step::Damaged(Damage::BadCrc));
        }
        self.pos += HEADER_LEN + len;
        Ok(Step::Record { seq, payload })
    }
}

/// Result of scanning a segment file from its start.
struct Scan {
    records: u64,
    last_seq: u64,
    valid_len: u64,
    file_len: u64,
    damage: Option<Damage>,
}

/// Scans the segment at `path` whose records must be `first_seq, first_seq + 1, …` and below
/// `seq_limit`; stops at the first record that is not.
fn scan_segment(path: &Path, first_seq: u64, seq_limit: u64) -> io::Result<Scan> {
    let file_len = fs::metadata(path)?.len();
    let mut reader = RecordReader::open(path, 0, file_len)?;
    let mut scan = Scan { records: 0, last_seq: first_seq.saturating_sub(1), valid_len: 0, file_len, damage: None };
    loop {
        match reader.next(false)? {
            Step::End => break,
            Step::Damaged(damage) => {
                scan.damage = Some(damage);
                break;
            }
            Step::Record { seq, .. } => {
                if seq != first_seq + scan.records || seq >= seq_limit {
                    scan.damage = Some(Damage::BadSeq);
                    break;
                }
                scan.records += 1;
                scan.last_seq = seq;
                scan.valid_len = reader.pos;
            }
        }
    }
    Ok(scan)
}

/// Path of the segment in `dir` whose first record is `first_seq`.
fn segment_file(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.{SEGMENT_EXT}"))
}

/// Parses a segment file name into its first sequence.
fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// fsyncs a directory so that creations, renames and removals in it are durable.
fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))
}

/// Takes an exclusive, non-blocking `flock` on `path`.
fn lock_file(path: &Path, dir: &Path) -> Result<File, SpoolError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("open lock file", path))?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(file);
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::WouldBlock {
        Err(SpoolError::Locked { path: dir.to_path_buf() })
    } else {
        Err(io_err("lock", path)(err))
    }
}

/// A bounded, crash-safe, append-only spool of opaque records with acknowledgement.
///
/// Not internally synchronised: one owner (the uplink task) appends, reads and acks.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    cfg: SpoolConfig,
    incarnation: u64,
    next_seq: u64,
    acked_seq: u64,
    /// Segments in ascending sequence order.
    segments: VecDeque<Segment>,
    /// Handle on the newest segment while appending to it.
    writer: Option<File>,
    cursor: Option<Cursor>,
    /// Sum of `file_len` over `segments`.
    bytes: u64,
    dropped_records: u64,
    dropped_bytes: u64,
    corrupt_records: u64,
    /// Reused buffer holding the record being appended.
    scratch: Vec<u8>,
    /// Held for the lifetime of the spool; closing it releases the lock.
    _lock: File,
}

impl Spool {
    /// Opens or creates the spool in `dir` (created if missing) and recovers after a crash:
    /// a torn or corrupt tail of the newest segment is truncated away, a corrupt record
    /// elsewhere ends that segment's reading; both are counted. Fails with
    /// [`SpoolError::Locked`] if another process has the spool open.
    pub fn open(dir: &Path, cfg: SpoolConfig) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let lock = lock_file(&dir.join(LOCK_FILE), dir)?;
        let tmp = dir.join(META_TMP_FILE);
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove", &tmp)(e));
            }
            _ => {}
        }

        let meta_path = dir.join(META_FILE);
        let meta = match fs::read(&meta_path) {
            Ok(buf) => {
                let meta = Meta::decode(&buf);
                if meta.is_none() {
                    warn!(path = %meta_path.display(), "spool metadata is damaged; starting a new incarnation");
                }
                meta
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("read", &meta_path)(e)),
        };

        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("list directory", dir))? {
            let entry = entry.map_err(io_err("list directory", dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(first_seq) = parse_segment_name(name) {
                names.push(first_seq);
            } else if name.ends_with(SEGMENT_EXT) {
                warn!(file = name, "ignoring badly named spool segment");
            }
        }
        names.sort_unstable();

        let mut spool = Spool {
            dir: dir.to_path_buf(),
            cfg,
            incarnation: 0,
            next_seq: 1,
            acked_seq: meta.map_or(0, |m| m.acked_seq),
            segments: VecDeque::with_capacity(names.len()),
            writer: None,
            cursor: None,
            bytes: 0,
            dropped_records: 0,
            dropped_bytes: 0,
            corrupt_records: 0,
            scratch: Vec::new(),
            _lock: lock,
        };
        for (i, &first_seq) in names.iter().enumerate() {
            let newest = i + 1 == names.len();
            let seq_limit = names.get(i + 1).copied().unwrap_or(u64::MAX);
            spool.recover_segment(first_seq, seq_limit, newest)?;
        }

        let newest_seq = spool.segments.back().map_or(0, |s| s.last_seq);
        spool.next_seq =
            [meta.map_or(1, |m| m.next_seq_floor), newest_seq.saturating_add(1), spool.acked_seq.saturating_add(1)]
                .into_iter()
                .max()
                .expect("array is not empty");
        spool.incarnation = match meta {
            Some(m) => m.incarnation,
            None => {
                if !spool.segments.is_empty() {
                    warn!(dir = %dir.display(), "spool segments without metadata; replaying them under a new incarnation");
                }
                spool.write_meta_with(new_incarnation())?
            }
        };
        let stats = spool.stats();
        info!(
            dir = %dir.display(),
            incarnation = spool.incarnation,
            next_seq = spool.next_seq,
            records = stats.records,
            bytes = stats.bytes,
            corrupt = stats.corrupt_records,
            "spool opened"
        );
        Ok(spool)
    }

    /// Scans one segment at open, repairs or drops it and adds it to the index.
    fn recover_segment(&mut self, first_seq: u64, seq_limit: u64, newest: bool) -> Result<(), SpoolError> {
        let path = self.segment_path(first_seq);
        let scan = scan_segment(&path, first_seq, seq_limit).map_err(io_err("scan", &path))?;
        let mut file_len = scan.file_len;
        let mut sealed = false;
        if let Some(damage) = scan.damage {
            self.corrupt_records += 1;
            warn!(
                path = %path.display(),
                ?damage,
                valid_bytes = scan.valid_len,
                file_bytes = scan.file_len,
                "damaged spool segment; records after the damage are lost"
            );
            if newest && scan.records > 0 {
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(scan.valid_len))
                    .map_err(io_err("truncate", &path))?;
                file_len = scan.valid_len;
            } else {
                sealed = true;
            }
        }
        if scan.records == 0 || scan.last_seq <= self.acked_seq {
            return fs::remove_file(&path).map_err(io_err("remove", &path));
        }
        self.bytes += file_len;
        self.segments.push_back(Segment {
            first_seq,
            last_seq: scan.last_seq,
            records: scan.records,
            valid_len: scan.valid_len,
            file_len,
            sealed,
        });
        Ok(())
    }

    /// Random nonzero identifier created with the spool directory and kept for its lifetime.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The sequence the next append will get: 1 for a new incarnation, then strictly
    /// increasing, also across reopen and after every segment was deleted.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends one record and returns its sequence. If the spool would exceed
    /// [`SpoolConfig::max_bytes`], whole oldest segments are evicted first (even unacked
    /// ones) and counted as dropped. A payload larger than `max_bytes` or `segment_bytes` is
    /// still accepted, alone in its segment. The record is handed to the OS (and fsynced with
    /// [`SpoolConfig::fsync`]) before this returns.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, SpoolError> {
        let len = u32::try_from(payload.len()).map_err(|_| SpoolError::PayloadTooLarge { len: payload.len() })?;
        let record_len = HEADER_LEN + u64::from(len);
        self.evict_for(record_len)?;

        let seq = self.next_seq;
        let starts_segment = match self.segments.back() {
            None => true,
            Some(s) => s.sealed || s.last_seq + 1 != seq || s.file_len + record_len > self.cfg.segment_bytes,
        };
        if starts_segment {
            self.start_segment(seq)?;
        } else if self.writer.is_none() {
            self.reopen_writer()?;
        }

        self.scratch.clear();
        self.scratch.extend_from_slice(&len.to_le_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&seq.to_le_bytes());
        hasher.update(payload);
        self.scratch.extend_from_slice(&hasher.finalize().to_le_bytes());
        self.scratch.extend_from_slice(&seq.to_le_bytes());
        self.scratch.extend_from_slice(payload);

        let segment = self.segments.back_mut().expect("a segment was just ensured");
        let writer = self.writer.as_mut().expect("a writer was just ensured");
        let mut result = writer.write_all(&self.scratch);
        if result.is_ok() && self.cfg.fsync {
            result = writer.sync_data();
        }
        self.scratch.clear();
        if self.scratch.capacity() > READ_BUF_BYTES {
            self.scratch = Vec::new();
        }
        if let Err(source) = result {
            let path = segment_file(&self.dir, segment.first_seq);
            // Cut off a partial record so that the segment stays readable, and append to a
            // fresh segment next time.
            let old_len = segment.file_len;
            let grown = match writer.set_len(old_len) {
                Ok(()) => 0,
                Err(_) => record_len,
            };
            segment.file_len += grown;
            segment.sealed = true;
            self.bytes += grown;
            self.writer = None;
            if segment.records == 0 {
                self.remove_newest_segment();
            }
            return Err(io_err("write segment", &path)(source));
        }
        segment.last_seq = seq;
        segment.records += 1;
        segment.valid_len += record_len;
        segment.file_len += record_len;
        self.bytes += record_len;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Drops the newest segment, which holds no record, after a failed first write.
    fn remove_newest_segment(&mut self) {
        if let Some(segment) = self.segments.pop_back() {
            self.bytes -= segment.file_len;
            let path = self.segment_path(segment.first_seq);
            if let Err(e) = fs::remove_file(&path) {
                warn!(path = %path.display(), error = %e, "cannot remove empty spool segment");
            }
        }
    }

    /// Creates a new segment whose first record will be `first_seq` and opens it for writing.
    fn start_segment(&mut self, first_seq: u64) -> Result<(), SpoolError> {
        self.writer = None;
        let path = self.segment_path(first_seq);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err("create segment", &path))?;
        if self.cfg.fsync {
            sync_dir(&self.dir)?;
        }
        self.segments.push_back(Segment {
            first_seq,
            last_seq: first_seq - 1,
            records: 0,
            valid_len: 0,
            file_len: 0,
            sealed: false,
        });
        self.writer = Some(file);
        Ok(())
    }

    /// Opens the newest segment for appending at the end of its valid records.
    fn reopen_writer(&mut self) -> Result<(), SpoolError> {
        let segment = self.segments.back().expect("caller checked a segment exists");
        let path = self.segment_path(segment.first_seq);
        let mut file = OpenOptions::new().write(true).open(&path).map_err(io_err("open segment", &path))?;
        file.seek(SeekFrom::Start(segment.valid_len)).map_err(io_err("seek segment", &path))?;
        self.writer = Some(file);
        Ok(())
    }

    /// Evicts whole oldest segments until a record of `record_len` bytes fits in `max_bytes`.
    fn evict_for(&mut self, record_len: u64) -> Result<(), SpoolError> {
        let mut evicted = 0u64;
        let mut evicted_records = 0u64;
        while self.bytes + record_len > self.cfg.max_bytes && !self.segments.is_empty() {
            if self.segments.len() == 1 {
                // The newest sequence is about to leave the disk: keep it in the metadata.
                self.write_meta()?;
            }
            let oldest = self.segments.front().expect("checked non-empty");
            let records = oldest.unacked(self.acked_seq);
            let bytes = oldest.file_len;
            self.remove_oldest_segment()?;
            self.dropped_records += records;
            self.dropped_bytes += bytes;
            evicted += 1;
            evicted_records += records;
        }
        if evicted > 0 {
            warn!(
                segments = evicted,
                records = evicted_records,
                dropped_records_total = self.dropped_records,
                "spool full; evicted oldest unacknowledged records"
            );
        }
        Ok(())
    }

    /// Deletes the oldest segment's file and removes it from the index.
    fn remove_oldest_segment(&mut self) -> Result<(), SpoolError> {
        let oldest = self.segments.front().expect("caller checked non-empty");
        let path = self.segment_path(oldest.first_seq);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove segment", &path)(e));
            }
            _ => {}
        }
        let oldest = self.segments.pop_front().expect("checked non-empty");
        self.bytes -= oldest.file_len;
        if self.segments.is_empty() {
            self.writer = None;
        }
        if self.cursor.is_some_and(|c| c.segment_first_seq == oldest.first_seq) {
            self.cursor = None;
        }
        Ok(())
    }

    /// Acknowledges every record with a sequence up to `seq`: they are never returned again
    /// and fully acknowledged segments are deleted. The floor is persisted before deleting.
    /// Acks below the current floor are ignored, acks beyond the newest sequence clamped.
    pub fn ack(&mut self, seq: u64) -> Result<(), SpoolError> {
        let seq = seq.min(self.next_seq - 1);
        if seq <= self.acked_seq {
            return Ok(());
        }
        self.acked_seq = seq;
        self.write_meta()?;
        while self.segments.front().is_some_and(|s| s.last_seq <= self.acked_seq) {
            self.remove_oldest_segment()?;
        }
        if self.cfg.fsync {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Returns up to `max_records` records, in ascending order, with a sequence above both
    /// `after_seq` and the acknowledged floor. Stops before exceeding `max_bytes` of payload,
    /// but returns at least one record if there is any. Sequences have gaps where records
    /// were evicted. Continues from where the previous call stopped without rescanning.
    pub fn read_after(
        &mut self,
        after_seq: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let mut out = Vec::new();
        let mut payload_bytes = 0usize;
        let mut wanted = after_seq.max(self.acked_seq).saturating_add(1);
        let mut index = self.segments.partition_point(|s| s.last_seq < wanted);
        while index < self.segments.len() && out.len() < max_records {
            let segment = self.segments[index].clone();
            let (mut offset, mut seq) = match self.cursor {
                Some(c)
                    if c.segment_first_seq == segment.first_seq && c.seq <= wanted && c.offset <= segment.valid_len =>
                {
                    (c.offset, c.seq)
                }
                _ => (0, segment.first_seq),
            };
            let path = self.segment_path(segment.first_seq);
            let mut reader =
                RecordReader::open(&path, offset, segment.valid_len).map_err(io_err("open segment", &path))?;
            let mut full = false;
            while out.len() < max_records {
                let keep = seq >= wanted;
                let step = reader.next(keep).map_err(io_err("read segment", &path))?;
                match step {
                    Step::End => break,
                    Step::Record { seq: got, payload: _ } if got != seq => {
                        self.damaged_while_reading(index, offset, seq, Damage::BadSeq)?;
                        break;
                    }
                    Step::Record { payload, .. } => {
                        if let Some(payload) = payload {
                            if !out.is_empty() && payload_bytes + payload.len() > max_bytes {
                                full = true;
                                break;
                            }
                            payload_bytes += payload.len();
                            out.push((seq, payload));
                            wanted = seq + 1;
                            self.cursor =
                                Some(Cursor { segment_first_seq: segment.first_seq, offset: reader.pos, seq: seq + 1 });
                        }
                        offset = reader.pos;
                        seq += 1;
                    }
                    Step::Damaged(damage) => {
                        self.damaged_while_reading(index, offset, seq, damage)?;
                        break;
                    }
                }
            }
            if full {
                break;
            }
            // The segment may have been dropped from the index after damage.
            if self.segments.get(index).is_some_and(|s| s.first_seq == segment.first_seq) {
                index += 1;
            }
        }
        Ok(out)
    }

    /// Handles a record found damaged by a read at `offset` of segment `index`, where the
    /// record `seq` was expected: counts it, shortens the segment's index entry to the
    /// records before it (all verified when they were read or scanned) and seals the segment.
    fn damaged_while_reading(&mut self, index: usize, offset: u64, seq: u64, damage: Damage) -> Result<(), SpoolError> {
        self.corrupt_records += 1;
        self.cursor = None;
        let newest = index + 1 == self.segments.len();
        if newest {
            // The newest sequence on disk goes down: keep next_seq in the metadata.
            self.writer = None;
            self.write_meta()?;
        }
        let path = self.segment_path(self.segments[index].first_seq);
        warn!(
            path = %path.display(),
            ?damage,
            offset,
            seq,
            "damaged spool record; records after it in this segment are lost"
        );
        let segment = &mut self.segments[index];
        segment.sealed = true;
        if seq <= segment.first_seq {
            let segment = self.segments.remove(index).expect("index is in range");
            self.bytes -= segment.file_len;
            fs::remove_file(&path).map_err(io_err("remove segment", &path))?;
        } else {
            segment.valid_len = offset;
            segment.last_seq = seq - 1;
            segment.records = seq - segment.first_seq;
        }
        Ok(())
    }

    /// Counters and gauges of the spool.
    pub fn stats(&self) -> SpoolStats {
        let records = self.segments.iter().map(|s| s.unacked(self.acked_seq)).sum();
        let oldest_seq = self
            .segments
            .iter()
            .find(|s| s.unacked(self.acked_seq) > 0)
            .map_or(0, |s| s.first_seq.max(self.acked_seq + 1));
        let newest_seq = self.segments.back().filter(|s| s.unacked(self.acked_seq) > 0).map_or(0, |s| s.last_seq);
        SpoolStats {
            bytes: self.bytes,
            records,
            oldest_seq,
            newest_seq,
            acked_seq: self.acked_seq,
            dropped_records: self.dropped_records,
            dropped_bytes: self.dropped_bytes,
            corrupt_records: self.corrupt_records,
        }
    }

    fn segment_path(&self, first_seq: u64) -> PathBuf {
        segment_file(&self.dir, first_seq)
    }

    /// Persists the acked floor and the next sequence.
    fn write_meta(&self) -> Result<u64, SpoolError> {
        self.write_meta_with(self.incarnation)
    }

    /// Atomically replaces the metadata file (tmp, fsync, rename) and returns `incarnation`.
    fn write_meta_with(&self, incarnation: u64) -> Result<u64, SpoolError> {
        let meta = Meta { incarnation, acked_seq: self.acked_seq, next_seq_floor: self.next_seq };
        let tmp = self.dir.join(META_TMP_FILE);
        let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        file.write_all(&meta.encode()).and_then(|()| file.sync_all()).map_err(io_err("write", &tmp))?;
        drop(file);
        let path = self.dir.join(META_FILE);
        fs::rename(&tmp, &path).map_err(io_err("rename to", &path))?;
        if self.cfg.fsync {
            sync_dir(&self.dir)?;
        }
        Ok(incarnation)
    }
}

/// A random nonzero incarnation.
fn new_incarnation() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Payload of 100 bytes: a record of 116 bytes, so a 500-byte segment holds four.
    const PAYLOAD_LEN: usize = 100;
    const RECORD_LEN: u64 = HEADER_LEN + PAYLOAD_LEN as u64;

    fn config(max_bytes: u64, segment_bytes: u64) -> SpoolConfig {
        SpoolConfig { max_bytes, segment_bytes, fsync: false }
    }

    /// Four records per segment, no eviction.
    fn small_segments() -> SpoolConfig {
        config(1 << 30, 500)
    }

    fn payload(tag: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (tag.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8).collect()
    }

    fn append_n(spool: &mut Spool, n: u64) -> Vec<u64> {
        (0..n)
            .map(|_| {
                let tag = spool.next_seq();
                spool.append(&payload(tag, PAYLOAD_LEN)).expect("append")
            })
            .collect()
    }

    fn read_all(spool: &mut Spool) -> Vec<(u64, Vec<u8>)> {
        spool.read_after(0, usize::MAX, usize::MAX).expect("read_after")
    }

    fn seqs(records: &[(u64, Vec<u8>)]) -> Vec<u64> {
        records.iter().map(|(seq, _)| *seq).collect()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == SEGMENT_EXT))
            .collect();
        files.sort();
        files
    }

    fn flip_byte(path: &Path, offset: u64) {
        let mut bytes = fs::read(path).expect("read segment");
        bytes[usize::try_from(offset).expect("small offset")] ^= 0x5a;
        fs::write(path, bytes).expect("write segment");
    }

    #[test]
    fn append_then_read_returns_records_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), SpoolConfig::default()).expect("open");
        assert_eq!(spool.next_seq(), 1);
        let mut expected = Vec::new();
        for i in 0..100u64 {
            let data = payload(i, (i as usize * 7) % 300);
            let seq = spool.append(&data).expect("append");
            assert_eq!(seq, i + 1);
            expected.push((seq, data));
        }
        assert_eq!(read_all(&mut spool), expected);

        let mut after = 0;
        let mut chunked = Vec::new();
        loop {
            let batch = spool.read_after(after, 7, usize::MAX).expect("read");
            let Some(last) = batch.last() else { break };
            assert!(batch.len() <= 7);
            after = last.0;
            chunked.extend(batch);
        }
        assert_eq!(chunked, expected);
        let stats = spool.stats();
        assert_eq!(stats.records, 100);
        assert_eq!((stats.oldest_seq, stats.newest_seq), (1, 100));
    }

    #[test]
    fn reads_continue_while_appends_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), small_segments()).expect("open");
        let mut after = 0;
        let mut read = Vec::new();
        for round in 1..=10u64 {
            append_n(&mut spool, round);
            let batch = spool.read_after(after, 3, usize::MAX).expect("read");
            after = batch.last().map_or(after, |r| r.0);
            read.extend(seqs(&batch));
        }
        loop {
            let batch = spool.read_after(after, 3, usize::MAX).expect("read");
            let Some(last) = batch.last() else { break };
            after = last.0;
            read.extend(seqs(&batch));
        }
        assert_eq!(read, (1..=55).collect::<Vec<_>>());
    }

    #[test]
    fn read_limits_records_and_bytes_but_returns_at_least_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), small_segments()).expect("open");
        append_n(&mut spool, 10);
        assert_eq!(seqs(&spool.read_after(0, 3, usize::MAX).expect("read")), [1, 2, 3]);
        assert_eq!(seqs(&spool.read_after(2, 100, 250).expect("read")), [3, 4]);
        assert_eq!(seqs(&spool.read_after(4, 100, 10).expect("read")), [5]);
        assert_eq!(seqs(&spool.read_after(9, 100, 0).expect("read")), [10]);
        assert!(spool.read_after(10, 100, 1000).expect("read").is_empty());
        assert!(spool.read_after(500, 100, 1000).expect("read").is_empty());
        assert!(spool.read_after(0, 0, 1000).expect("read").is_empty());
    }

    #[test]
    fn reopen_keeps_records_next_seq_and_incarnation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (records, incarnation) = {
            let mut spool = Spool::open(dir.path(), small_segments()).expect("open");
            append_n(&mut spool, 20);
            (read_all(&mut spool), spool.incarnation())
        };
        assert_ne!(incarnation, 0);
        assert_eq!(segment_files(dir.path()).len(), 5);

        let mut spool = Spool::open(dir.path(), small_segments()).expect("reopen");
        assert_eq!(spool.incarnation(), incarnation);
        assert_eq!(spool.next_seq(), 21);
        assert_eq!(read_all(&mut spool), records);
        assert_eq!(spool.stats().corrupt_records, 0);
        assert_eq!(append_n(&mut spool, 1), [21]);

        let other = tempfile::tempdir().expect("tempdir");
        let fresh = Spool::open(&other.path().join("nested/spool"), small_segments()).expect("open new dir");
        assert_ne!(fresh.incarnation(), incarnation);
        assert_eq!(fresh.next_seq(), 1);
    }

    #[test]
    fn second_open_of_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _spool = Spool::open(dir.path(), small_segments()).expect("open");
        let err = Spool::open(dir.path(), small_segments()).expect_err("second open");
        assert!(matches!(err, SpoolError::Locked { .. }), "{err:?}");
    }

    #[test]
    fn ack_deletes_acked_segments_and_persists_the_floor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), small_segments()).expect("open");
        append_n(&mut spool, 20);
        assert_eq!(spool.stats().bytes, 20 * RECORD_LEN);

        spool.ack(6).expect("ack");
        assert_eq!(segment_files(dir.path()).len(), 4, "segment 1..=4 deleted");
        assert_eq!(seqs(&read_all(&mut spool)), (7..=20).collect::<Vec<_>>());
        let stats = spool.stats();
        assert_eq!((stats.acked_seq, stats.records), (6, 14));
        assert_eq!((stats.oldest_seq, stats.newest_seq), (7, 20));
        assert_eq!(stats.bytes, 16 * RECORD_LEN);
        drop(spool);

        let mut spool = Spool::open(dir.path(), small_segments()).expect("reopen");
        assert_eq!(seqs(&read_all(&mut spool)), (7..=20).collect::<Vec<_>>());
        assert_eq!(spool.stats().acked_seq, 6);
        assert_eq!(spool.next_seq(), 21);
        assert_eq!(append_n(&mut spool, 1), [21]);
    }

    #[test]
    fn acks_below_the_floor_are_ignored_and_beyond_the_newest_clamped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), small_segments()).expect("open");
        spool.ack(10).expect("ack on empty spool");
        assert_eq!(spool.stats().acked_seq, 0);
        append_n(&mut spool, 5);
        spool.ack(3).expect("ack");
        spool.ack(2).expect("lower ack");
        assert_eq!(spool.stats().acked_seq, 3);
        assert_eq!(seqs(&spool.read_after(1, 10, usize::MAX).expect("read")), [4, 5]);
        spool.ack(1000).expect("ack beyond newest");
        assert_eq!(spool.stats().acked_seq, 5);
        assert_eq!(append_n(&mut spool, 1), [6]);
        assert_eq!(seqs(&read_all(&mut spool)), [6]);
    }

    #[test]
    fn next_seq_keeps_increasing_after_every_segment_is_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(300, 200);
        {
            let mut spool = Spool::open(dir.path(), cfg).expect("open");
            append_n(&mut spool, 5);
            spool.ack(5).expect("ack");
            assert!(segment_files(dir.path()).is_empty());
            assert_eq!(spool.next_seq(), 6);
        }
        {
            let mut spool = Spool::open(dir.path(), cfg).expect("reopen after acks");
            assert_eq!(spool.next_seq(), 6);
            assert!(read_all(&mut spool).is_empty());
            // Each oversized payload evicts everything before it, newest sequence included.
            assert_eq!(spool.append(&payload(6, 1000)).expect("append"), 6);
            assert_eq!(spool.append(&payload(7, 1000)).expect("append"), 7);
            assert_eq!(spool.stats().dropped_records, 1);
        }
        let mut spool = Spool::open(dir.path(), cfg).expect("reopen after eviction");
        assert_eq!(spool.next_seq(), 8);
        spool.ack(7).expect("ack");
        drop(spool);
        let spool = Spool::open(dir.path(), cfg).expect("reopen");
        assert_eq!(spool.next_seq(), 8);
    }

    #[test]
    fn eviction_drops_oldest_segments_first_and_counts_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(2000, 500);
        let mut spool = Spool::open(dir.path(), cfg).expect("open");
        append_n(&mut spool, 40);
        let stats = spool.stats();
        assert!(stats.bytes <= cfg.max_bytes, "{stats:?}");
        let held = seqs(&read_all(&mut spool));
        assert_eq!(held.last(), Some(&40));
        assert_eq!(held, (held[0]..=40).collect::<Vec<_>>(), "a contiguous suffix");
        assert_eq!(held[0] % 4, 1, "whole segments were evicted");
        assert_eq!(stats.dropped_records + stats.records, 40);
        assert_eq!(stats.dropped_records, held[0] - 1);
        assert_eq!(stats.dropped_bytes, stats.dropped_records * RECORD_LEN);
        assert_eq!(stats.oldest_seq, held[0]);

        // Acked records of an evicted segment are not counted as dropped.
        let first = held[0];
        spool.ack(first + 1).expect("ack");
        let before = spool.stats().dropped_records;
        append_n(&mut spool, 4);
        assert_eq!(spool.stats().dropped_records, before + 2);
    }

    #[test]
    fn oversized_payload_is_accepted_alone_in_its_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), config(1000, 300)).expect("open");
        append_n(&mut spool, 2);
        let big = payload(3, 5000);
        assert_eq!(spool.append(&big).expect("append"), 3);
        assert_eq!(spool.stats().dropped_records, 2);
        assert_eq!(read_all(&mut spool), [(3, big)]);
        assert_eq!(segment_files(dir.path()).len(), 1);
        append_n(&mut spool, 1);
        assert_eq!(seqs(&read_all(&mut spool)), [4]);
        assert_eq!(spool.stats().dropped_records, 3);
    }

    #[test]
    fn read_after_crosses_segment_boundaries_and_gaps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), config(2000, 500)).expect("open");
        append_n(&mut spool, 12);
        assert_eq!(seqs(&spool.read_after(2, 5, usize::MAX).expect("read")), [3, 4, 5, 6, 7]);
        assert_eq!(seqs(&spool.read_after(7, 2, usize::MAX).expect("read")), [8, 9]);
        // Evict segments 1..=4 and 5..=8 while the reader is in the middle of them.
        append_n(&mut spool, 12);
        assert_eq!(spool.stats().dropped_records, 8);
        assert_eq!(seqs(&spool.read_after(9, 3, usize::MAX).expect("read")), [10, 11, 12]);
        assert_eq!(seqs(&spool.read_after(3, 100, usize::MAX).expect("read")), (9..=24).collect::<Vec<_>>());
        // A read from inside the evicted range resumes after the gap.
        assert_eq!(seqs(&spool.read_after(5, 2, usize::MAX).expect("read")), [9, 10]);
        assert_eq!(seqs(&spool.read_after(14, 2, usize::MAX).expect("read")), [15, 16]);
        assert_eq!(seqs(&spool.read_after(11, 1, usize::MAX).expect("read")), [12]);
        assert_eq!(seqs(&spool.read_after(12, 1, usize::MAX).expect("read")), [13]);
    }

    #[test]
    fn torn_tail_is_truncated_and_appends_continue() {
        for cut in [5u64, RECORD_LEN - 3] {
            let dir = tempfile::tempdir().expect("tempdir");
            let records = {
                let mut spool = Spool::open(dir.path(), SpoolConfig::default()).expect("open");
                append_n(&mut spool, 10);
                read_all(&mut spool)
            };
            let path = segment_files(dir.path()).pop().expect("a segment");
            let file = OpenOptions::new().write(true).open(&path).expect("open");
            file.set_len(10 * RECORD_LEN - cut).expect("truncate");
            drop(file);

            let mut spool = Spool::open(dir.path(), SpoolConfig::default()).expect("reopen");
            assert_eq!(spool.stats().corrupt_records, 1, "cut {cut}");
            assert_eq!(read_all(&mut spool), records[..9]);
            assert_eq!(fs::metadata(&path).expect("stat").len(), 9 * RECORD_LEN);
            assert_eq!(spool.append(b"after").expect("append"), 10);
            drop(spool);

            let mut spool = Spool::open(dir.path(), SpoolConfig::default()).expect("reopen");
            assert_eq!(spool.stats().corrupt_records, 0);
            let all = read_all(&mut spool);
            assert_eq!(all[..9], records[..9]);
            assert_eq!(all[9], (10, b"after".to_vec()));
        }
    }

    #[test]
    fn garbage_after_the_tail_is_truncated_and_appends_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = {
            let mut spool = Spool::open(dir.path(), SpoolConfig::default()).expect("open");
            append_n(&mut spool, 5);
            read_all(&mut spool)
        };
        let path = segment_files(dir.path()).pop().expect("a segment");
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&payload(99, 37)).expect("append garbage");
        drop(file);

        let mut spool = Spool::open(dir.path(), SpoolConfig::default()).expect("reopen");
        assert_eq!(spool.stats().corrupt_records, 1);
        assert_eq!(read_all(&mut spool), records);
        assert_eq!(spool.stats().bytes, 5 * RECORD_LEN);
        assert_eq!(append_n(&mut spool, 1), [6]);
        drop(spool);

        let mut spool = Spool::open(dir.path(), SpoolConfig::default()).expect("reopen");
        assert_eq!(spool.stats().corrupt_records, 0);
        assert_eq!(seqs(&read_all(&mut spool)), [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn corrupt_record_in_an_older_segment_ends_its_reading_and_is_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut spool = Spool::open(dir.path(), small_segments()).expect("open");
            append_n(&mut spool, 12);
        }
        let files = segment_files(dir.path());
        // A payload byte of record 2, in segment 1..=4.
        flip_byte(&files[0], RECORD_LEN + HEADER_LEN + 10);

        let mut spool = Spool::open(dir.path(), small_segments()).expect("reopen");
        let stats = spool.stats();
        assert_eq!(stats.corrupt_records, 1);
        assert_eq!(stats.records, 9);
        assert_eq!(stats.bytes, 12 * RECORD_LEN, "damaged bytes stay until deleted");
        assert_eq!(seqs(&read_all(&mut spool)), [1, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(spool.next_seq(), 13);
        spool.ack(12).expect("ack");
        assert!(segment_files(dir.path()).is_empty());
    }

    #[test]
    fn corrupt_record_in_the_middle_of_the_newest_segment_is_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut spool = Spool::open(dir.path(), small_segments()).expect("open");
            append_n(&mut spool, 7);
        }
        let files = segment_files(dir.path());
        // The crc of record 6, in segment 5..=8.
        flip_byte(&files[1], RECORD_LEN + 5);
        let mut spool = Spool::open(dir.path(), small_segments()).expect("reopen");
        assert_eq!(spool.stats().corrupt_records, 1);
        assert_eq!(seqs(&read_all(&mut spool)), [1, 2, 3, 4, 5]);
        assert_eq!(append_n(&mut spool, 1), [6]);
    }

    #[test]
    fn corrupt_record_found_while_reading_is_counted_and_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), small_segments()).expect("open");
        append_n(&mut spool, 12);
        assert_eq!(seqs(&spool.read_after(0, 3, usize::MAX).expect("read")), [1, 2, 3]);
        let files = segment_files(dir.path());
        // The sequence field of record 7, in segment 5..=8.
        flip_byte(&files[1], 2 * RECORD_LEN + 9);

        assert_eq!(seqs(&spool.read_after(3, 100, usize::MAX).expect("read")), [4, 5, 6, 9, 10, 11, 12]);
        let stats = spool.stats();
        assert_eq!((stats.corrupt_records, stats.records), (1, 10));
        assert_eq!(seqs(&read_all(&mut spool)), [1, 2, 3, 4, 5, 6, 9, 10, 11, 12]);
        assert_eq!(spool.stats().corrupt_records, 1, "counted once");

        // Damage in the segment being appended to seals it.
        flip_byte(&files[2], 2 * RECORD_LEN + HEADER_LEN + 1);
        assert_eq!(seqs(&spool.read_after(6, 100, usize::MAX).expect("read")), [9, 10]);
        assert_eq!(spool.stats().corrupt_records, 2);
        assert_eq!(append_n(&mut spool, 1), [13]);
        drop(spool);
        let mut spool = Spool::open(dir.path(), small_segments()).expect("reopen");
        assert_eq!(spool.stats().corrupt_records, 2, "both damaged segments");
        assert_eq!(seqs(&read_all(&mut spool)), [1, 2, 3, 4, 5, 6, 9, 10, 13]);
        assert_eq!(spool.next_seq(), 14);
    }

    #[test]
    fn damaged_metadata_starts_a_new_incarnation_and_keeps_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let incarnation = {
            let mut spool = Spool::open(dir.path(), small_segments()).expect("open");
            append_n(&mut spool, 6);
            spool.incarnation()
        };
        fs::write(dir.path().join(META_FILE), b"junk").expect("damage meta");
        let mut spool = Spool::open(dir.path(), small_segments()).expect("reopen");
        assert_ne!(spool.incarnation(), incarnation);
        assert_eq!(spool.next_seq(), 7);
        assert_eq!(seqs(&read_all(&mut spool)), [1, 2, 3, 4, 5, 6]);
    }

    /// xorshift64*: a small deterministic PRNG for the model test.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// What the spool should hold: unacked records, oldest first.
    #[derive(Default)]
    struct Model {
        records: VecDeque<(u64, Vec<u8>)>,
        next_seq: u64,
        acked: u64,
        dropped_since_open: u64,
    }

    impl Model {
        fn read_after(&self, after: u64, max_records: usize, max_bytes: usize) -> Vec<u64> {
            let mut out = Vec::new();
            let mut bytes = 0;
            for (seq, data) in self.records.iter().filter(|(s, _)| *s > after) {
                if out.len() == max_records || (!out.is_empty() && bytes + data.len() > max_bytes) {
                    break;
                }
                bytes += data.len();
                out.push(*seq);
            }
            out
        }
    }

    fn check_everything(spool: &mut Spool, model: &Model, cfg: SpoolConfig) {
        let all = read_all(spool);
        assert!(all.iter().eq(model.records.iter()), "contents differ");
        let stats = spool.stats();
        assert_eq!(stats.records, model.records.len() as u64);
        assert_eq!(stats.oldest_seq, model.records.front().map_or(0, |r| r.0));
        assert_eq!(stats.newest_seq, model.records.back().map_or(0, |r| r.0));
        assert_eq!(stats.acked_seq, model.acked);
        assert_eq!(stats.dropped_records, model.dropped_since_open);
        assert_eq!(stats.corrupt_records, 0);
        assert!(stats.bytes <= cfg.max_bytes, "{stats:?}");
        assert_eq!(spool.next_seq(), model.next_seq);
    }

    #[test]
    fn random_operations_match_an_in_memory_model() {
        let cfg = config(3000, 400);
        let (mut evictions, mut reopens, mut records_read, mut acks) = (0, 0, 0, 0);
        for seed in 1..=25u64 {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut spool = Spool::open(dir.path(), cfg).expect("open");
            let incarnation = spool.incarnation();
            let mut model = Model { next_seq: 1, ..Model::default() };
            // Where a simulated uplink has read up to.
            let mut consumer = 0u64;
            for _ in 0..600 {
                match rng.below(100) {
                    0..=49 => {
                        let len = usize::try_from(rng.below(200)).expect("small");
                        let data = payload(rng.next(), len);
                        let seq = spool.append(&data).expect("append");
                        assert_eq!(seq, model.next_seq, "seed {seed}");
                        model.next_seq += 1;
                        model.records.push_back((seq, data));
                        let stats = spool.stats();
                        let mut evicted = 0;
                        while model.records.front().is_some_and(|r| r.0 < stats.oldest_seq) {
                            model.records.pop_front();
                            evicted += 1;
                        }
                        model.dropped_since_open += evicted;
                        evictions += evicted;
                        assert_eq!(stats.dropped_records, model.dropped_since_open);
                        assert_eq!(stats.oldest_seq, model.records[0].0);
                    }
                    50..=69 => {
                        let max_records = usize::try_from(rng.below(10)).expect("small");
                        let max_bytes = usize::try_from(rng.below(600)).expect("small");
                        let got = spool.read_after(consumer, max_records, max_bytes).expect("read");
                        let expected = model.read_after(consumer, max_records, max_bytes);
                        assert_eq!(seqs(&got), expected, "seed {seed}");
                        for (seq, data) in &got {
                            let held = model.records.iter().find(|r| r.0 == *seq);
                            assert_eq!(held.map(|r| &r.1), Some(data));
                        }
                        consumer = got.last().map_or(consumer, |r| r.0);
                        records_read += got.len();
                    }
                    70..=84 => {
                        let upto = consumer + 3;
                        let seq = rng.below(upto + 1);
                        spool.ack(seq).expect("ack");
                        let clamped = seq.min(model.next_seq - 1);
                        acks += u64::from(clamped > model.acked);
                        model.acked = model.acked.max(clamped);
                        while model.records.front().is_some_and(|r| r.0 <= model.acked) {
                            model.records.pop_front();
                        }
                    }
                    85..=89 => consumer = rng.below(consumer + 1),
                    90..=94 => {
                        drop(spool);
                        spool = Spool::open(dir.path(), cfg).expect("reopen");
                        assert_eq!(spool.incarnation(), incarnation);
                        model.dropped_since_open = 0;
                        reopens += 1;
                        check_everything(&mut spool, &model, cfg);
                    }
                    _ => check_everything(&mut spool, &model, cfg),
                }
            }
            check_everything(&mut spool, &model, cfg);
        }
        // The operation mix must reach every interesting path.
        assert!(evictions > 100, "{evictions} evictions");
        assert!(reopens > 100, "{reopens} reopens");
        assert!(records_read > 1000, "{records_read} records read");
        assert!(acks > 300, "{acks} acks");
    }
}
