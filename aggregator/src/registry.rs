//! Host registry: every host that ever connected, its labels, agent version and
//! capabilities, first and last seen, whether it is connected now, and ingest counters.
//!
//! Records persist through the store (so `augurctl hosts` survives a restart); counters
//! and connection state are live only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::ingest::BatchStats;
use crate::storage::{HostRecord, Store, StoreError};

/// One host as the registry sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostView {
    pub record: HostRecord,
    pub connected: bool,
    pub acked_sequence: u64,
    pub samples_stored: u64,
    pub samples_rejected: u64,
    pub batches_lost: u64,
    pub series: u64,
    /// Workloads the agent declared in its latest Hello (live only).
    pub workloads: Vec<DeclaredWorkload>,
}

/// A workload an agent declared (Hello.workloads): what remediation may act on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeclaredWorkload {
    /// Name commands use as their resource.
    pub name: String,
    /// Resource its samples are reported under (e.g. `cgroup/app`).
    pub resource: String,
    /// Command kinds the agent accepts for it.
    pub allowed_actions: Vec<String>,
    /// `stateless` or `stateful`.
    pub kind: String,
    pub standby: String,
    pub peers: Vec<String>,
    pub health: String,
}

#[derive(Debug)]
struct HostState {
    view: HostView,
    sessions: u32,
    /// Generation of the newest session; older sessions end when it moves.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Default for HostState {
    fn default() -> Self {
        HostState { view: HostView::default(), sessions: 0, generation: tokio::sync::watch::Sender::new(0) }
    }
}

/// A session's claim on its host: it is current while the host's generation equals `generation`.
#[derive(Debug)]
pub struct SessionClaim {
    pub generation: u64,
    pub newest: tokio::sync::watch::Receiver<u64>,
}

/// What an agent says about itself in Hello.
#[derive(Debug, Clone, Default)]
pub struct HelloInfo {
    pub host_id: String,
    pub incarnation: u64,
    pub agent_version: String,
    pub labels: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    pub workloads: Vec<DeclaredWorkload>,
}

/// Shared host registry.
pub struct Registry {
    store: Arc<dyn Store>,
    hosts: Mutex<HashMap<String, HostState>>,
}

impl Registry {
    /// Loads persisted host records.
    pub fn load(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let mut hosts = HashMap::new();
        for rec in store.hosts()? {
            let series = store.series_count(&rec.host_id) as u64;
            let acked = store.agent_progress(&rec.host_id)?.map(|p| p.acked_sequence).unwrap_or(0);
            let view = HostView { record: rec.clone(), acked_sequence: acked, series, ..Default::default() };
            hosts.insert(rec.host_id.clone(), HostState { view, ..Default::default() });
        }
        Ok(Registry { store, hosts: Mutex::new(hosts) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HostState>> {
        // A panic while holding this lock leaves plain counters behind; keep serving.
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a session start and persists the updated host record. The returned claim
    /// tells the session when a newer session of the same host replaced it: one host
    /// has one writer, so sequence deduplication stays exact.
    pub fn connected(&self, hello: &HelloInfo, now_ms: i64, acked: u64) -> Result<SessionClaim, StoreError> {
        let (rec, claim) = {
            let mut hosts = self.lock();
            let st = hosts.entry(hello.host_id.clone()).or_default();
            let r = &mut st.view.record;
            if r.first_seen_ms == 0 {
                r.first_seen_ms = now_ms;
            }
            r.host_id = hello.host_id.clone();
            r.last_seen_ms = now_ms;
            r.labels = hello.labels.clone();
            r.agent_version = hello.agent_version.clone();
            r.capabilities = hello.capabilities.clone();
            r.incarnation = hello.incarnation;
            st.sessions += 1;
            st.view.connected = true;
            st.view.acked_sequence = acked;
            st.view.workloads = hello.workloads.clone();
            let generation = *st.generation.borrow() + 1;
            st.generation.send_replace(generation);
            (r.clone(), SessionClaim { generation, newest: st.generation.subscribe() })
        };
        self.store.put_host(&rec)?;
        Ok(claim)
    }

    /// Counts a processed batch.
    pub fn batch(&self, host_id: &str, stats: &BatchStats, acked: u64, now_ms: i64) {
        let mut hosts = self.lock();
        if let Some(st) = hosts.get_mut(host_id) {
            st.view.samples_stored += stats.accepted;
            st.view.samples_rejected += stats.rejected;
            st.view.batches_lost += stats.lost_batches;
            st.view.series += stats.new_series;
            st.view.acked_sequence = acked;
            st.view.record.last_seen_ms = now_ms;
        }
    }

    /// Marks the host as seen now (heartbeats).
    pub fn seen(&self, host_id: &str, now_ms: i64) {
        if let Some(st) = self.lock().get_mut(host_id) {
            st.view.record.last_seen_ms = now_ms;
        }
    }

    /// Records a session end and persists last-seen.
    pub fn disconnected(&self, host_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let rec = {
            let mut hosts = self.lock();
            let Some(st) = hosts.get_mut(host_id) else {
                return Ok(());
            };
            st.sessions = st.sessions.saturating_sub(1);
            st.view.connected = st.sessions > 0;
            st.view.record.last_seen_ms = now_ms;
            st.view.record.clone()
        };
        self.store.put_host(&rec)
    }

    /// All hosts, sorted by id.
    pub fn list(&self) -> Vec<HostView> {
        let mut v: Vec<HostView> = self.lock().values().map(|s| s.view.clone()).collect();
        v.sort_by(|a, b| a.record.host_id.cmp(&b.record.host_id));
        v
    }

    /// Number of hosts with a live session.
    pub fn connected_count(&self) -> usize {
        self.lock().values().filter(|s| s.view.connected).count()
    }

    /// Capabilities each connected host announced in its Hello (e.g. `criu`): what a
    /// workflow's `RunOptions::host_capabilities` is built from. Disconnected hosts are absent.
    pub fn announced_capabilities(&self) -> BTreeMap<String, Vec<String>> {
        self.lock()
            .values()
            .filter(|s| s.view.connected)
            .map(|s| (s.view.record.host_id.clone(), s.view.record.capabilities.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_capabilities_are_those_of_connected_hosts() {
        let store = Arc::new(crate::storage::memory::MemoryStore::new(crate::storage::StoreOptions::default()));
        let r = Registry::load(store).expect("registry");
        let hello = |h: &str, caps: &[&str]| HelloInfo {
            host_id: h.into(),
            capabilities: caps.iter().map(|c| (*c).into()).collect(),
            ..HelloInfo::default()
        };
        r.connected(&hello("a", &["actions.v1", "criu"]), 1, 0).expect("a");
        r.connected(&hello("b", &["actions.v1"]), 1, 0).expect("b");
        r.connected(&hello("c", &["criu"]), 1, 0).expect("c");
        r.disconnected("c", 2).expect("c leaves");
        let caps = r.announced_capabilities();
        assert_eq!(caps.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(caps["a"], ["actions.v1", "criu"]);
    }
}
