//! The dispatcher: sends commands to the agent of exactly one host and waits for the
//! agent's final report.
//!
//! Each agent session registers with [`Dispatcher::register`] and gets an [`AgentLink`]: a
//! bounded queue of outbound commands that the session task merges into its stream, and
//! the way back for the agent's `CommandReport`s ([`Dispatcher::report`]). Dropping the
//! link unregisters the session (unless a newer session of the host replaced it already).
//!
//! [`Dispatcher::execute`] sends one command to its `target_host` only: a host without a
//! session is [`DispatchError::NotConnected`] at once (never a broadcast, never "all"). The
//! command is tracked by id until its final report (SUCCEEDED, FAILED, ROLLED_BACK, REFUSED,
//! DUPLICATE, DRY_RUN); ACCEPTED is only noted. Without a final report by the command's
//! deadline plus [`DispatcherConfig::report_grace`] (the time an agent that started just
//! before the deadline has to finish), the result is [`DispatchError::DeadlineExceeded`].
//! If the host's session ends and the host reconnects before then, the command is sent once
//! more with the same id and idempotency key (the agent's ledger applies it at most once).
//! Reports for unknown ids, repeated reports and reports from another host are counted and
//! ignored.
//!
//! The queue per session is bounded; a full queue refuses the command
//! ([`DispatchError::QueueFull`], counted) rather than waiting.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use augur_core::command::Envelope;
use augur_core::time::now_ms;
use augur_proto::v1;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Finished command ids remembered to tell a repeated report from an unknown one.
const RECENT_DONE: usize = 4096;

/// Final status of a command, as reported by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Succeeded,
    /// Failed, and nothing changed (or it was undone).
    Failed,
    /// Applied, its health check failed, undone.
    RolledBack,
    /// Not executed: another host, unknown workload, action not allowed, bad args, deadline passed.
    Refused,
    /// Already applied under this id or idempotency key; `details` repeat the original outcome.
    Duplicate,
    /// Dry run: `details` say what would have been done; nothing changed.
    DryRun,
}

impl CommandStatus {
    pub const ALL: [CommandStatus; 6] = [
        CommandStatus::Succeeded,
        CommandStatus::Failed,
        CommandStatus::RolledBack,
        CommandStatus::Refused,
        CommandStatus::Duplicate,
        CommandStatus::DryRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Succeeded => "succeeded",
            CommandStatus::Failed => "failed",
            CommandStatus::RolledBack => "rolled_back",
            CommandStatus::Refused => "refused",
            CommandStatus::Duplicate => "duplicate",
            CommandStatus::DryRun => "dry_run",
        }
    }

    /// The final status of a wire status (`None` for ACCEPTED, UNSPECIFIED and unknown values).
    pub fn from_wire(status: i32) -> Option<CommandStatus> {
        match v1::CommandStatus::try_from(status).ok()? {
            v1::CommandStatus::Succeeded => Some(CommandStatus::Succeeded),
            v1::CommandStatus::Failed => Some(CommandStatus::Failed),
            v1::CommandStatus::RolledBack => Some(CommandStatus::RolledBack),
            v1::CommandStatus::Refused => Some(CommandStatus::Refused),
            v1::CommandStatus::Duplicate => Some(CommandStatus::Duplicate),
            v1::CommandStatus::DryRun => Some(CommandStatus::DryRun),
            v1::CommandStatus::Accepted | v1::CommandStatus::Unspecified => None,
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> v1::CommandStatus {
        match self {
            CommandStatus::Succeeded => v1::CommandStatus::Succeeded,
            CommandStatus::Failed => v1::CommandStatus::Failed,
            CommandStatus::RolledBack => v1::CommandStatus::RolledBack,
            CommandStatus::Refused => v1::CommandStatus::Refused,
            CommandStatus::Duplicate => v1::CommandStatus::Duplicate,
            CommandStatus::DryRun => v1::CommandStatus::DryRun,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// An agent's final answer to a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandOutcome {
    pub status: CommandStatus,
    pub message: String,
    /// What the agent reports (`previous.<arg>` values, what a dry run would do...).
    pub details: BTreeMap<String, String>,
    /// The agent's clock when it reported, Unix milliseconds.
    pub time_ms: i64,
}

impl CommandOutcome {
    /// Whether the command's change is in place: SUCCEEDED, or DUPLICATE of an execution
    /// that succeeded (`original.status`, absent from agents that do not say) and was not
    /// undone since (`original.undone_by`).
    pub fn succeeded(&self) -> bool {
        match self.status {
            CommandStatus::Succeeded => true,
            CommandStatus::Duplicate => {
                matches!(self.details.get("original.status").map(String::as_str), None | Some("succeeded"))
                    && !self.details.contains_key("original.undone_by")
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DispatchError {
    #[error("host {host:?} has no connected agent")]
    NotConnected { host: String },
    #[error("command {id}: no final report from {host} by its deadline (the agent accepted it: {accepted})")]
    DeadlineExceeded { id: String, host: String, accepted: bool },
    #[error("command {id}: the deadline passed before it was sent")]
    DeadlinePassed { id: String },
    #[error("command {id} is already in flight")]
    DuplicateId { id: String },
    #[error("command queue of host {host:?} is full")]
    QueueFull { host: String },
    #[error("command has no {0}")]
    Incomplete(&'static str),
}

/// Tuning of the [`Dispatcher`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DispatcherConfig {
    /// Outbound commands queued per agent session.
    pub queue: usize,
    /// How long after a command's deadline a final report is still awaited.
    pub report_grace: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig { queue: 64, report_grace: Duration::from_secs(5) }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct DispatchStats {
    pub sent: AtomicU64,
    /// Re-sent after the host reconnected.
    pub resent: AtomicU64,
    pub accepted: AtomicU64,
    /// Final outcomes, indexed like [`CommandStatus::ALL`].
    pub outcomes: [AtomicU64; 6],
    pub deadline_exceeded: AtomicU64,
    pub not_connected: AtomicU64,
    pub queue_full: AtomicU64,
    /// Reports for a command that already had its final report.
    pub reports_repeated: AtomicU64,
    /// Reports for ids never sent (or forgotten long ago).
    pub reports_unknown: AtomicU64,
    /// Reports from a host the command was not sent to.
    pub reports_foreign: AtomicU64,
}

impl DispatchStats {
    /// Final outcomes so far of one status.
    pub fn outcome(&self, s: CommandStatus) -> u64 {
        self.outcomes[s.index()].load(Ordering::Relaxed)
    }
}

struct SessionSlot {
    session: u64,
    tx: mpsc::Sender<v1::Command>,
}

struct Inflight {
    host: String,
    command: v1::Command,
    session: u64,
    resent: bool,
    accepted: bool,
    done: Option<oneshot::Sender<CommandOutcome>>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, SessionSlot>,
    inflight: HashMap<String, Inflight>,
    recent_done: VecDeque<String>,
    recent_done_set: HashSet<String>,
}

impl State {
    fn remember_done(&mut self, id: String) {
        if self.recent_done_set.insert(id.clone()) {
            self.recent_done.push_back(id);
            if self.recent_done.len() > RECENT_DONE
                && let Some(old) = self.recent_done.pop_front()
            {
                self.recent_done_set.remove(&old);
            }
        }
    }
}

struct Inner {
    config: DispatcherConfig,
    state: Mutex<State>,
    next_session: AtomicU64,
    stats: DispatchStats,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Routes commands to agent sessions and reports back to the waiting callers. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

/// One agent session's end of the dispatcher: the commands to send, in order. Dropping it
/// unregisters the session.
pub struct AgentLink {
    host: String,
    session: u64,
    rx: mpsc::Receiver<v1::Command>,
    inner: Arc<Inner>,
}

impl AgentLink {
    /// The next command for this agent; `None` once a newer session of the host replaced this one.
    pub async fn recv(&mut self) -> Option<v1::Command> {
        self.rx.recv().await
    }

    pub fn host(&self) -> &str {
        &self.host
    }
}

impl Drop for AgentLink {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        if st.sessions.get(&self.host).is_some_and(|s| s.session == self.session) {
            st.sessions.remove(&self.host);
            debug!(host = %self.host, "agent session unregistered from the dispatcher");
        }
    }
}

/// Removes a command's in-flight entry when its caller stops waiting (finished, timed out
/// or cancelled).
struct InflightGuard<'a> {
    inner: &'a Inner,
    id: String,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        if st.inflight.remove(&self.id).is_some() {
            st.remember_done(self.id.clone());
        }
    }
}

impl Default for Dispatcher {
    fn default() -> Self {
        Dispatcher::new(DispatcherConfig::default())
    }
}

impl Dispatcher {
    pub fn new(config: DispatcherConfig) -> Self {
        Dispatcher {
            inner: Arc::new(Inner {
                config: DispatcherConfig { queue: config.queue.max(1), ..config },
                state: Mutex::new(State::default()),
                next_session: AtomicU64::new(1),
                stats: DispatchStats::default(),
            }),
        }
    }

    pub fn stats(&self) -> &DispatchStats {
        &self.inner.stats
    }

    /// Registers an agent session of `host`, replacing any older one, and re-sends (once,
    /// same id) the commands in flight to `host` that an earlier session received.
    pub fn register(&self, host: &str) -> AgentLink {
        let session = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.inner.config.queue);
        let mut st = self.inner.lock();
        let now = now_ms();
        let mut resend: Vec<v1::Command> = Vec::new();
        for f in st.inflight.values_mut() {
            if f.host == host && !f.resent && f.session != session && f.command.deadline_ms > now {
                f.resent = true;
                f.session = session;
                resend.push(f.command.clone());
            }
        }
        for c in resend {
            match tx.try_send(c) {
                Ok(()) => {
                    self.inner.stats.resent.fetch_add(1, Ordering::Relaxed);
                    info!(%host, "re-sent an unfinished command after the agent reconnected");
                }
                Err(_) => {
                    self.inner.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                    warn!(%host, "command queue full while re-sending after a reconnect");
                }
            }
        }
        st.sessions.insert(host.to_owned(), SessionSlot { session, tx });
        AgentLink { host: host.to_owned(), session, rx, inner: self.inner.clone() }
    }

    /// Whether `host` has a registered session now.
    pub fn is_connected(&self, host: &str) -> bool {
        self.inner.lock().sessions.contains_key(host)
    }

    /// Hosts with a registered session, sorted.
    pub fn connected_hosts(&self) -> Vec<String> {
        let mut h: Vec<String> = self.inner.lock().sessions.keys().cloned().collect();
        h.sort();
        h
    }

    /// Commands waiting for their final report.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().inflight.len()
    }

    /// Appends the dispatcher's counters to a Prometheus text page.
    pub fn render_metrics(&self, out: &mut String) {
        use crate::http::metric;
        let s = &self.inner.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        metric(out, "augur_commands_sent_total", "counter", "Commands sent to agents.", &[("", n(&s.sent))]);
        metric(
            out,
            "augur_commands_resent_total",
            "counter",
            "Unfinished commands sent again (same id) after their host reconnected.",
            &[("", n(&s.resent))],
        );
        metric(out, "augur_commands_accepted_total", "counter", "Commands agents accepted.", &[("", n(&s.accepted))]);
        let labels: Vec<String> = CommandStatus::ALL.iter().map(|st| format!("status=\"{}\"", st.as_str())).collect();
        let by_status: Vec<(&str, f64)> =
            CommandStatus::ALL.iter().zip(&labels).map(|(st, l)| (l.as_str(), n(&s.outcomes[st.index()]))).collect();
        metric(out, "augur_command_outcomes_total", "counter", "Final command reports by status.", &by_status);
        metric(
            out,
            "augur_commands_failed_to_send_total",
            "counter",
            "Commands not sent or not answered, by reason.",
            &[
                ("reason=\"not_connected\"", n(&s.not_connected)),
                ("reason=\"queue_full\"", n(&s.queue_full)),
                ("reason=\"deadline_exceeded\"", n(&s.deadline_exceeded)),
            ],
        );
        metric(
            out,
            "augur_command_reports_ignored_total",
            "counter",
            "Command reports ignored, by reason.",
            &[
                ("reason=\"repeated\"", n(&s.reports_repeated)),
                ("reason=\"unknown\"", n(&s.reports_unknown)),
                ("reason=\"foreign_host\"", n(&s.reports_foreign)),
            ],
        );
        metric(
            out,
            "augur_commands_in_flight",
            "gauge",
            "Commands awaiting a final report.",
            &[("", self.in_flight() as f64)],
        );
    }

    /// Handles a `CommandReport` that arrived on `host`'s session.
    pub fn report(&self, host: &str, r: &v1::CommandReport) {
        let stats = &self.inner.stats;
        let mut st = self.inner.lock();
        let Some(f) = st.inflight.get_mut(&r.command_id) else {
            let repeated = st.recent_done_set.contains(&r.command_id);
            drop(st);
            if repeated {
                stats.reports_repeated.fetch_add(1, Ordering::Relaxed);
                debug!(%host, command = %r.command_id, status = r.status, "repeated report ignored");
            } else {
                stats.reports_unknown.fetch_add(1, Ordering::Relaxed);
                debug!(%host, command = %r.command_id, status = r.status, "report for an unknown command ignored");
            }
            return;
        };
        if f.host != host {
            stats.reports_foreign.fetch_add(1, Ordering::Relaxed);
            let target = &f.host;
            warn!(%host, command = %r.command_id, %target, "report from a host the command was not sent to ignored");
            return;
        }
        let Some(status) = CommandStatus::from_wire(r.status) else {
            if r.status == v1::CommandStatus::Accepted as i32 {
                if !f.accepted {
                    f.accepted = true;
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                stats.reports_unknown.fetch_add(1, Ordering::Relaxed);
                debug!(%host, command = %r.command_id, status = r.status, "report with no final status ignored");
            }
            return;
        };
        let Some(done) = f.done.take() else {
            stats.reports_repeated.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let id = r.command_id.clone();
        st.inflight.remove(&id);
        st.remember_done(id);
        drop(st);
        stats.outcomes[status.index()].fetch_add(1, Ordering::Relaxed);
        info!(%host, command = %r.command_id, status = status.as_str(), message = %r.message, "command finished");
        let outcome = CommandOutcome {
            status,
            message: r.message.clone(),
            details: r.details.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            time_ms: r.time_ms,
        };
        // The caller may have stopped waiting; the outcome is counted either way.
        let _ = done.send(outcome);
    }

    /// Sends `cmd` to the agent of `cmd.target_host` and waits for its final report.
    pub async fn execute(&self, cmd: Envelope) -> Result<CommandOutcome, DispatchError> {
        if cmd.target_host.is_empty() {
            return Err(DispatchError::Incomplete("target host"));
        }
        if cmd.id.is_empty() {
            return Err(DispatchError::Incomplete("id"));
        }
        let now = now_ms();
        if cmd.deadline_ms <= now {
            return Err(DispatchError::DeadlinePassed { id: cmd.id });
        }
        let wire = augur_proto::convert::command_of(&cmd);
        let (done_tx, done_rx) = oneshot::channel();
        let stats = &self.inner.stats;
        {
            let mut st = self.inner.lock();
            if st.inflight.contains_key(&cmd.id) {
                return Err(DispatchError::DuplicateId { id: cmd.id });
            }
            let Some(slot) = st.sessions.get(&cmd.target_host) else {
                stats.not_connected.fetch_add(1, Ordering::Relaxed);
                return Err(DispatchError::NotConnected { host: cmd.target_host });
            };
            let session = slot.session;
            match slot.tx.try_send(wire.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    stats.queue_full.fetch_add(1, Ordering::Relaxed);
                    return Err(DispatchError::QueueFull { host: cmd.target_host });
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    stats.not_connected.fetch_add(1, Ordering::Relaxed);
                    return Err(DispatchError::NotConnected { host: cmd.target_host });
                }
            }
            st.inflight.insert(
                cmd.id.clone(),
                Inflight {
                    host: cmd.target_host.clone(),
                    command: wire,
                    session,
                    resent: false,
                    accepted: false,
                    done: Some(done_tx),
                },
            );
        }
        stats.sent.fetch_add(1, Ordering::Relaxed);
        let (host, kind) = (&cmd.target_host, cmd.spec.kind());
        debug!(%host, command = %cmd.id, kind, dry_run = cmd.dry_run, "command sent");
        let _guard = InflightGuard { inner: &self.inner, id: cmd.id.clone() };
        let wait = Duration::from_millis((cmd.deadline_ms - now).max(0) as u64) + self.inner.config.report_grace;
        match tokio::time::timeout(wait, done_rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            // The sender is dropped only with the in-flight entry, which only we remove.
            Ok(Err(_)) | Err(_) => {
                let accepted = self.inner.lock().inflight.get(&cmd.id).is_some_and(|f| f.accepted);
                stats.deadline_exceeded.fetch_add(1, Ordering::Relaxed);
                warn!(host = %cmd.target_host, command = %cmd.id, accepted, "no final report by the deadline");
                Err(DispatchError::DeadlineExceeded { id: cmd.id, host: cmd.target_host, accepted })
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use augur_core::command::CommandSpec;

    pub(crate) fn envelope(id: &str, host: &str, deadline_in_ms: i64) -> Envelope {
        Envelope {
            id: id.into(),
            idempotency_key: id.into(),
            target_host: host.into(),
            resource: "web".into(),
            deadline_ms: now_ms() + deadline_in_ms,
            dry_run: false,
            spec: CommandSpec::Restart,
        }
    }

    pub(crate) fn report(id: &str, status: v1::CommandStatus, msg: &str) -> v1::CommandReport {
        v1::CommandReport {
            command_id: id.into(),
            status: status as i32,
            message: msg.into(),
            time_ms: now_ms(),
            details: [("previous.memory_max".to_string(), "1024".to_string())].into(),
        }
    }

    fn quick() -> Dispatcher {
        Dispatcher::new(DispatcherConfig { queue: 2, report_grace: Duration::from_millis(0) })
    }

    #[tokio::test]
    async fn a_command_goes_to_its_host_only_and_resolves_on_the_final_report() {
        let d = quick();
        let mut a = d.register("a");
        let mut b = d.register("b");
        let run = tokio::spawn({
            let d = d.clone();
            async move { d.execute(envelope("c1", "a", 5_000)).await }
        });
        let got = a.recv().await.expect("a gets the command");
        assert_eq!((got.id.as_str(), got.target_host.as_str(), got.kind.as_str()), ("c1", "a", "restart"));
        assert!(tokio::time::timeout(Duration::from_millis(50), b.recv()).await.is_err(), "b must get nothing");
        d.report("a", &report("c1", v1::CommandStatus::Accepted, "started"));
        tokio::task::yield_now().await;
        assert!(!run.is_finished(), "ACCEPTED is not final");
        d.report("b", &report("c1", v1::CommandStatus::Succeeded, "not mine"));
        d.report("a", &report("c1", v1::CommandStatus::Succeeded, "restarted"));
        let out = run.await.expect("join").expect("outcome");
        assert_eq!((out.status, out.message.as_str()), (CommandStatus::Succeeded, "restarted"));
        assert_eq!(out.details.get("previous.memory_max").map(String::as_str), Some("1024"));
        d.report("a", &report("c1", v1::CommandStatus::Failed, "again"));
        d.report("a", &report("c-never", v1::CommandStatus::Succeeded, "?"));
        let s = d.stats();
        assert_eq!(s.sent.load(Ordering::Relaxed), 1);
        assert_eq!(s.accepted.load(Ordering::Relaxed), 1);
        assert_eq!(s.outcome(CommandStatus::Succeeded), 1);
        assert_eq!(s.outcome(CommandStatus::Failed), 0);
        assert_eq!(s.reports_foreign.load(Ordering::Relaxed), 1);
        assert_eq!(s.reports_repeated.load(Ordering::Relaxed), 1);
        assert_eq!(s.reports_unknown.load(Ordering::Relaxed), 1);
        assert_eq!(d.in_flight(), 0);
    }

    #[tokio::test]
    async fn unknown_disconnected_or_empty_targets_are_refused_without_sending() {
        let d = quick();
        let mut a = d.register("a");
        assert_eq!(d.execute(envelope("c1", "zz", 1000)).await, Err(DispatchError::NotConnected { host: "zz".into() }));
        assert_eq!(d.execute(envelope("c2", "", 1000)).await, Err(DispatchError::Incomplete("target host")));
        assert_eq!(d.execute(envelope("c3", "a", -1)).await, Err(DispatchError::DeadlinePassed { id: "c3".into() }));
        drop(a);
        assert!(!d.is_connected("a"));
        assert_eq!(d.execute(envelope("c4", "a", 1000)).await, Err(DispatchError::NotConnected { host: "a".into() }));
        a = d.register("a");
        assert!(tokio::time::timeout(Duration::from_millis(20), a.recv()).await.is_err(), "nothing was queued");
        assert_eq!(d.stats().sent.load(Ordering::Relaxed), 0);
        assert_eq!(d.stats().not_connected.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn no_final_report_is_deadline_exceeded_and_says_whether_it_was_accepted() {
        let d = quick();
        let mut a = d.register("a");
        let run = tokio::spawn({
            let d = d.clone();
            async move { d.execute(envelope("c1", "a", 150)).await }
        });
        a.recv().await.expect("sent");
        d.report("a", &report("c1", v1::CommandStatus::Accepted, ""));
        let r = run.await.expect("join");
        assert_eq!(r, Err(DispatchError::DeadlineExceeded { id: "c1".into(), host: "a".into(), accepted: true }));
        // A late final report is counted as repeated, not delivered.
        d.report("a", &report("c1", v1::CommandStatus::Succeeded, "late"));
        assert_eq!(d.stats().reports_repeated.load(Ordering::Relaxed), 1);
        assert_eq!(d.stats().outcome(CommandStatus::Succeeded), 0);
        assert_eq!(d.stats().deadline_exceeded.load(Ordering::Relaxed), 1);
        assert_eq!(d.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_reconnecting_host_gets_the_command_again_once_with_the_same_id() {
        let d = quick();
        let mut a1 = d.register("a");
        let run = tokio::spawn({
            let d = d.clone();
            async move { d.execute(envelope("c1", "a", 5_000)).await }
        });
        let first = a1.recv().await.expect("sent");
        drop(a1); // the session ends before the agent reports
        let mut a2 = d.register("a");
        let again = a2.recv().await.expect("re-sent");
        assert_eq!(again, first);
        drop(a2);
        let mut a3 = d.register("a");
        assert!(tokio::time::timeout(Duration::from_millis(30), a3.recv()).await.is_err(), "re-sent only once");
        d.report("a", &report("c1", v1::CommandStatus::Duplicate, "already applied"));
        let out = run.await.expect("join").expect("outcome");
        assert_eq!(out.status, CommandStatus::Duplicate);
        assert_eq!(d.stats().resent.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_replaced_session_does_not_unregister_its_successor() {
        let d = quick();
        let old = d.register("a");
        let mut new = d.register("a");
        drop(old);
        assert!(d.is_connected("a"));
        let run = tokio::spawn({
            let d = d.clone();
            async move { d.execute(envelope("c1", "a", 5_000)).await }
        });
        assert_eq!(new.recv().await.expect("new session gets it").id, "c1");
        d.report("a", &report("c1", v1::CommandStatus::DryRun, "would restart"));
        assert_eq!(run.await.expect("join").expect("outcome").status, CommandStatus::DryRun);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_an_id_in_flight_is_refused() {
        let d = quick(); // queue of 2
        let _a = d.register("a");
        let mut waits = Vec::new();
        for id in ["c1", "c2"] {
            let d = d.clone();
            waits.push(tokio::spawn(async move { d.execute(envelope(id, "a", 100)).await }));
        }
        while d.in_flight() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(d.execute(envelope("c3", "a", 100)).await, Err(DispatchError::QueueFull { host: "a".into() }));
        assert_eq!(d.execute(envelope("c1", "a", 100)).await, Err(DispatchError::DuplicateId { id: "c1".into() }));
        assert_eq!(d.stats().queue_full.load(Ordering::Relaxed), 1);
        for w in waits {
            assert!(matches!(w.await.expect("join"), Err(DispatchError::DeadlineExceeded { accepted: false, .. })));
        }
    }

    #[tokio::test]
    async fn a_cancelled_caller_leaves_nothing_in_flight() {
        let d = quick();
        let mut a = d.register("a");
        let run = tokio::spawn({
            let d = d.clone();
            async move { d.execute(envelope("c1", "a", 5_000)).await }
        });
        a.recv().await.expect("sent");
        run.abort();
        let _ = run.await;
        assert_eq!(d.in_flight(), 0);
        d.report("a", &report("c1", v1::CommandStatus::Succeeded, ""));
        assert_eq!(d.stats().reports_repeated.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_duplicate_succeeded_only_if_the_original_did_and_was_not_undone() {
        let o = |status, details: &[(&str, &str)]| CommandOutcome {
            status,
            message: String::new(),
            details: details.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            time_ms: 0,
        };
        assert!(o(CommandStatus::Succeeded, &[]).succeeded());
        assert!(o(CommandStatus::Duplicate, &[]).succeeded());
        assert!(o(CommandStatus::Duplicate, &[("original.status", "succeeded")]).succeeded());
        assert!(!o(CommandStatus::Duplicate, &[("original.status", "failed")]).succeeded());
        assert!(!o(CommandStatus::Duplicate, &[("original.status", "rolled_back")]).succeeded());
        assert!(
            !o(CommandStatus::Duplicate, &[("original.status", "succeeded"), ("original.undone_by", "u1")]).succeeded()
        );
        for s in [CommandStatus::Failed, CommandStatus::RolledBack, CommandStatus::Refused, CommandStatus::DryRun] {
            assert!(!o(s, &[]).succeeded(), "{s:?}");
        }
    }

    #[test]
    fn wire_statuses_map_both_ways() {
        for s in CommandStatus::ALL {
            assert_eq!(CommandStatus::from_wire(s.to_wire() as i32), Some(s));
            assert_eq!(CommandStatus::ALL[s.index()], s);
        }
        assert_eq!(CommandStatus::from_wire(v1::CommandStatus::Accepted as i32), None);
        assert_eq!(CommandStatus::from_wire(0), None);
        assert_eq!(CommandStatus::from_wire(99), None);
    }
}
