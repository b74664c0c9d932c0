//! Series table: gives every series the agent samples a small reference number.
//!
//! Batches in the spool refer to series by these numbers, so the table is persisted
//! beside the spool (an append-only file of length-prefixed, checksummed `SeriesDef`
//! records) and survives agent restarts. When the spool holds nothing unacknowledged at
//! startup the table starts afresh, which keeps it bounded by what is in flight.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use augur_core::SeriesKey;
use augur_proto::{convert, v1};
use prost::Message;

/// Series table errors carry the file and the operation.
#[derive(Debug, thiserror::Error)]
pub enum SeriesTableError {
    #[error("series table {path}: {op}: {source}")]
    Io { path: PathBuf, op: &'static str, source: io::Error },
    #[error("series table is full ({0} series)")]
    Full(usize),
}

/// Most series one agent keeps references for.
pub const MAX_SERIES: usize = 1_000_000;

/// In-memory index plus the append-only file behind it.
pub struct SeriesTable {
    path: PathBuf,
    file: File,
    by_key: HashMap<SeriesKey, u32>,
    defs: Vec<v1::SeriesDef>,
    /// Records dropped at load because they were torn or corrupt.
    pub corrupt_records: u64,
}

impl SeriesTable {
    /// Opens `path`; with `fresh` the old table is discarded.
    pub fn open(path: &Path, fresh: bool) -> Result<Self, SeriesTableError> {
        let io_err = |op| move |source| SeriesTableError::Io { path: path.to_owned(), op, source };
        let mut defs = Vec::new();
        let mut corrupt = 0;
        let mut valid_len = 0u64;
        if !fresh && path.exists() {
            let mut buf = Vec::new();
            File::open(path).and_then(|mut f| f.read_to_end(&mut buf)).map_err(io_err("read"))?;
            let mut pos = 0usize;
            while pos + 8 <= buf.len() {
                let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().expect("4 bytes")) as usize;
                let crc = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().expect("4 bytes"));
                let Some(body) = buf.get(pos + 8..pos + 8 + len) else {
                    break;
                };
                if crc32fast::hash(body) != crc {
                    break;
                }
                match v1::SeriesDef::decode(body) {
                    Ok(d) if d.r#ref as usize == defs.len() => defs.push(d),
                    _ => break,
                }
                pos += 8 + len;
            }
            valid_len = pos as u64;
            if pos < buf.len() {
                corrupt = 1;
            }
        }
        let file = OpenOptions::new().create(true).write(true).truncate(fresh).open(path).map_err(io_err("open"))?;
        // Cut a torn tail so new records follow the last good one.
        file.set_len(valid_len).map_err(io_err("truncate"))?;
        let mut file = file;
        use std::io::Seek;
        file.seek(io::SeekFrom::End(0)).map_err(io_err("seek"))?;
        let by_key = defs.iter().map(|d| (convert::key_of_def(d), d.r#ref)).collect();
        Ok(SeriesTable { path: path.to_owned(), file, by_key, defs, corrupt_records: corrupt })
    }

    /// The reference of `key`, adding (and persisting) it when new.
    pub fn intern(&mut self, key: &SeriesKey) -> Result<u32, SeriesTableError> {
        if let Some(&r) = self.by_key.get(key) {
            return Ok(r);
        }
        if self.defs.len() >= MAX_SERIES {
            return Err(SeriesTableError::Full(self.defs.len()));
        }
        let r = self.defs.len() as u32;
        let def = convert::def_of(r, key);
        let body = def.encode_to_vec();
        let mut rec = Vec::with_capacity(body.len() + 8);
        rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        rec.extend_from_slice(&body);
        self.file.write_all(&rec).map_err(|source| SeriesTableError::Io {
            path: self.path.clone(),
            op: "append",
            source,
        })?;
        self.by_key.insert(key.clone(), r);
        self.defs.push(def);
        Ok(r)
    }

    /// The definition behind a reference.
    pub fn def(&self, r: u32) -> Option<&v1::SeriesDef> {
        self.defs.get(r as usize)
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_core::MetricKind;

    fn key(m: &str) -> SeriesKey {
        SeriesKey::new("host", m, "bytes", MetricKind::Gauge).with_label("device", "sda")
    }

    #[test]
    fn refs_survive_reopen_and_fresh_resets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("series.tbl");
        {
            let mut t = SeriesTable::open(&p, false).unwrap();
            assert_eq!(t.intern(&key("a")).unwrap(), 0);
            assert_eq!(t.intern(&key("b")).unwrap(), 1);
            assert_eq!(t.intern(&key("a")).unwrap(), 0);
        }
        let mut t = SeriesTable::open(&p, false).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.intern(&key("b")).unwrap(), 1);
        assert_eq!(t.def(1).unwrap().metric, "b");
        assert_eq!(t.def(1).unwrap().labels.get("device").map(String::as_str), Some("sda"));
        assert_eq!(t.intern(&key("c")).unwrap(), 2);
        drop(t);
        let t = SeriesTable::open(&p, true).unwrap();
        assert!(t.is_empty());
    }

    #[test]
    fn torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("series.tbl");
        {
            let mut t = SeriesTable::open(&p, false).unwrap();
            t.intern(&key("a")).unwrap();
            t.intern(&key("b")).unwrap();
        }
        let len = std::fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 3).unwrap();
        drop(f);
        let mut t = SeriesTable::open(&p, false).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.corrupt_records, 1);
        assert_eq!(t.intern(&key("b")).unwrap(), 1);
        drop(t);
        let t = SeriesTable::open(&p, false).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.corrupt_records, 0);
    }
}
