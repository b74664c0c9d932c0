//! The ledger of applied commands: which ids and idempotency keys were executed, with
//! what outcome, and what undoes each. It survives agent restarts and stays bounded.
//!
//! Storage: `<state_dir>/ledger.jsonl`, one JSON [`Entry`] per line, appended and fsynced
//! before the command's effect starts (state `applying`) and again when it ends. On open
//! the last line per entry wins; an entry still `applying` (the agent stopped mid-way) is
//! closed as FAILED with "effect unknown", keeping its undo so an operator can roll it
//! back. A torn last line (crash during a write) is skipped and counted. The file is
//! rewritten (temp file, fsync, rename) when it holds twice as many lines as entries.
//! At most `max_entries` are kept; the oldest are forgotten first (a command redelivered
//! after that many newer ones would run again).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::actuator::{Status, UndoStep};

/// Why the ledger cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("ledger {path}: cannot encode entry: {source}")]
    Encode { path: String, source: serde_json::Error },
}

/// Whether a command is still being applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    Applying,
    Done,
}

/// One executed command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Ledger order (oldest first).
    pub seq: u64,
    pub command_id: String,
    pub idempotency_key: String,
    pub kind: String,
    pub resource: String,
    pub state: EntryState,
    pub status: Status,
    pub message: String,
    #[serde(default)]
    pub details: BTreeMap<String, String>,
    pub time_ms: i64,
    /// Steps that undo the command, in order; empty when there is nothing to undo.
    #[serde(default)]
    pub undo: Vec<UndoStep>,
    /// Id of the command that undid this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone_by: Option<String>,
    /// Other command ids answered as duplicates of this one (same idempotency key); a
    /// rollback may name any of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// The persistent ledger.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: File,
    entries: BTreeMap<u64, Entry>,
    by_id: HashMap<String, u64>,
    by_key: HashMap<String, u64>,
    next_seq: u64,
    max_entries: usize,
    lines: usize,
    torn_lines: usize,
}

impl Ledger {
    /// Opens (or creates) the ledger at `path`.
    pub fn open(path: &Path, max_entries: usize) -> Result<Ledger, LedgerError> {
        let io = |source| LedgerError::Io { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut entries: BTreeMap<u64, Entry> = BTreeMap::new();
        let mut lines = 0;
        let mut torn_lines = 0;
        match File::open(path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    let line = line.map_err(io)?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    lines += 1;
                    match serde_json::from_str::<Entry>(&line) {
                        Ok(e) => {
                            entries.insert(e.seq, e);
                        }
                        Err(e) => {
                            torn_lines += 1;
                            tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable ledger line");
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        let next_seq = entries.keys().next_back().map_or(1, |s| s + 1);
        let mut l = Ledger {
            path: path.to_owned(),
            file,
            entries: BTreeMap::new(),
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            next_seq,
            max_entries: max_entries.max(1),
            lines,
            torn_lines,
        };
        let mut interrupted = Vec::new();
        for (_, mut e) in entries {
            if e.state == EntryState::Applying {
                e.state = EntryState::Done;
                e.status = Status::Failed;
                e.message = "the agent stopped while applying this command; its effect is unknown".into();
                interrupted.push(e.clone());
            }
            l.index(e);
        }
        for e in interrupted {
            l.append(&e)?;
        }
        l.trim();
        if l.torn_lines > 0 || l.lines > 2 * l.entries.len() + 64 {
            l.compact()?;
        }
        Ok(l)
    }

    fn index(&mut self, e: Entry) {
        for a in &e.aliases {
            self.by_id.insert(a.clone(), e.seq);
        }
        self.by_id.insert(e.command_id.clone(), e.seq);
        self.by_key.insert(e.idempotency_key.clone(), e.seq);
        self.entries.insert(e.seq, e);
    }

    fn trim(&mut self) {
        while self.entries.len() > self.max_entries {
            let Some((_, old)) = self.entries.pop_first() else { break };
            for id in old.aliases.iter().chain([&old.command_id]) {
                if self.by_id.get(id) == Some(&old.seq) {
                    self.by_id.remove(id);
                }
            }
            if self.by_key.get(&old.idempotency_key) == Some(&old.seq) {
                self.by_key.remove(&old.idempotency_key);
            }
        }
    }

    fn append(&mut self, e: &Entry) -> Result<(), LedgerError> {
        let io = |source| LedgerError::Io { path: self.path.display().to_string(), source };
        let mut line = serde_json::to_vec(e)
            .map_err(|source| LedgerError::Encode { path: self.path.display().to_string(), source })?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.lines += 1;
        Ok(())
    }

    /// Rewrites the file with one line per entry (temp file, fsync, rename).
    fn compact(&mut self) -> Result<(), LedgerError> {
        let io = |source| LedgerError::Io { path: self.path.display().to_string(), source };
        let tmp = self.path.with_extension("jsonl.tmp");
        {
            let mut f = File::create(&tmp).map_err(io)?;
            for e in self.entries.values() {
                let mut line = serde_json::to_vec(e)
                    .map_err(|source| LedgerError::Encode { path: self.path.display().to_string(), source })?;
                line.push(b'\n');
                f.write_all(&line).map_err(io)?;
            }
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path).map_err(io)?;
        self.lines = self.entries.len();
        self.torn_lines = 0;
        Ok(())
    }

    /// The entry recorded under this command id or idempotency key, if any.
    pub fn find(&self, command_id: &str, idempotency_key: &str) -> Option<&Entry> {
        self.by_id.get(command_id).or_else(|| self.by_key.get(idempotency_key)).and_then(|s| self.entries.get(s))
    }

    /// The entry of a command id.
    pub fn get(&self, command_id: &str) -> Option<&Entry> {
        self.by_id.get(command_id).and_then(|s| self.entries.get(s))
    }

    /// Records that a command starts applying (durably, before any effect); returns its seq.
    pub fn begin(
        &mut self,
        command_id: &str,
        idempotency_key: &str,
        kind: &str,
        resource: &str,
        time_ms: i64,
    ) -> Result<u64, LedgerError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let e = Entry {
            seq,
            command_id: command_id.into(),
            idempotency_key: idempotency_key.into(),
            kind: kind.into(),
            resource: resource.into(),
            state: EntryState::Applying,
            status: Status::Failed,
            message: "applying".into(),
            details: BTreeMap::new(),
            time_ms,
            undo: Vec::new(),
            undone_by: None,
            aliases: Vec::new(),
        };
        self.append(&e)?;
        self.index(e);
        self.trim();
        self.maybe_compact()?;
        Ok(seq)
    }

    /// Records what undoes an entry still being applied (before the effect it undoes starts).
    pub fn set_undo(&mut self, seq: u64, undo: &[UndoStep]) -> Result<(), LedgerError> {
        let Some(e) = self.entries.get_mut(&seq) else { return Ok(()) };
        e.undo = undo.to_vec();
        let e = e.clone();
        self.append(&e)
    }

    /// Records the outcome of an entry.
    pub fn finish(
        &mut self,
        seq: u64,
        status: Status,
        message: &str,
        details: &BTreeMap<String, String>,
        undo: Vec<UndoStep>,
    ) -> Result<(), LedgerError> {
        let Some(e) = self.entries.get_mut(&seq) else { return Ok(()) };
        e.state = EntryState::Done;
        e.status = status;
        e.message = message.into();
        e.details = details.clone();
        e.undo = undo;
        let e = e.clone();
        self.append(&e)?;
        self.maybe_compact()
    }

    /// Records `alias` as another id of the entry `command_id` (a duplicate under a new id).
    pub fn add_alias(&mut self, command_id: &str, alias: &str) -> Result<(), LedgerError> {
        let Some(seq) = self.by_id.get(command_id).copied() else { return Ok(()) };
        if self.by_id.contains_key(alias) {
            return Ok(());
        }
        let Some(e) = self.entries.get_mut(&seq) else { return Ok(()) };
        e.aliases.push(alias.into());
        let e = e.clone();
        self.by_id.insert(alias.into(), seq);
        self.append(&e)?;
        self.maybe_compact()
    }

    /// Records that `by` undid `command_id`.
    pub fn mark_undone(&mut self, command_id: &str, by: &str) -> Result<(), LedgerError> {
        let Some(seq) = self.by_id.get(command_id).copied() else { return Ok(()) };
        let Some(e) = self.entries.get_mut(&seq) else { return Ok(()) };
        e.undone_by = Some(by.into());
        let e = e.clone();
        self.append(&e)?;
        self.maybe_compact()
    }

    fn maybe_compact(&mut self) -> Result<(), LedgerError> {
        if self.lines > 2 * self.entries.len() + 64 { self.compact() } else { Ok(()) }
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Lines in the file that could not be read at open.
    pub fn torn_lines(&self) -> usize {
        self.torn_lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(l: &mut Ledger, id: &str, key: &str) -> u64 {
        let seq = l.begin(id, key, "resize", "web", 1).expect("begin");
        let undo =
            vec![UndoStep::Write { path: PathBuf::from("/x/memory.max"), value: "max".into(), memory_guard: None }];
        l.finish(seq, Status::Succeeded, "ok", &BTreeMap::from([("a".into(), "1".into())]), undo).expect("finish");
        seq
    }

    #[test]
    fn entries_survive_reopen_by_id_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("ledger.jsonl");
        {
            let mut l = Ledger::open(&p, 100).expect("open");
            done(&mut l, "c1", "k1");
            l.mark_undone("c1", "c9").expect("undone");
            l.add_alias("c1", "c1-retry").expect("alias");
        }
        let l = Ledger::open(&p, 100).expect("reopen");
        let e = l.find("other", "k1").expect("found by key");
        assert_eq!(e.aliases, ["c1-retry"]);
        assert_eq!((e.command_id.as_str(), e.status, e.undone_by.as_deref()), ("c1", Status::Succeeded, Some("c9")));
        assert_eq!(e.undo.len(), 1);
        assert!(l.find("c1", "").is_some());
        assert_eq!(l.get("c1-retry").map(|e| e.command_id.as_str()), Some("c1"));
        assert!(l.find("c2", "k2").is_none());
    }

    #[test]
    fn an_interrupted_command_reads_back_as_failed_with_its_undo() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("ledger.jsonl");
        {
            let mut l = Ledger::open(&p, 100).expect("open");
            let seq = l.begin("c1", "k1", "resize", "web", 1).expect("begin");
            let undo = [UndoStep::Write { path: PathBuf::from("/x"), value: "1".into(), memory_guard: None }];
            l.set_undo(seq, &undo).expect("undo");
            // The agent dies here.
        }
        let mut f = OpenOptions::new().append(true).open(&p).expect("append");
        f.write_all(b"{\"seq\": 2, \"comm").expect("torn write");
        drop(f);
        let l = Ledger::open(&p, 100).expect("reopen");
        let e = l.get("c1").expect("kept");
        assert_eq!((e.state, e.status), (EntryState::Done, Status::Failed));
        assert!(e.message.contains("effect is unknown"));
        assert_eq!(e.undo.len(), 1);
        assert_eq!(l.torn_lines(), 0, "a torn line is dropped by the compaction at open");
        let text = std::fs::read_to_string(&p).expect("read");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn the_ledger_is_bounded_and_compacts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("ledger.jsonl");
        let mut l = Ledger::open(&p, 20).expect("open");
        for i in 0..200 {
            done(&mut l, &format!("c{i}"), &format!("k{i}"));
        }
        assert_eq!(l.len(), 20);
        assert!(l.get("c0").is_none() && l.get("c199").is_some() && l.get("c180").is_some());
        let lines = std::fs::read_to_string(&p).expect("read").lines().count();
        assert!(lines <= 2 * 20 + 64 + 1, "file holds {lines} lines");
        drop(l);
        let l = Ledger::open(&p, 20).expect("reopen");
        assert_eq!(l.len(), 20);
        assert!(l.find("x", "k199").is_some());
    }
}
