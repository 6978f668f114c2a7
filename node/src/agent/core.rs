//! The core of a running node: the node's [`Host`] (everything the node
//! decides: auctioneer, bidders, view, liveness) and the IO it drives — the
//! libp2p swarm, the executor, gossip — plus the framework sessions, the
//! cross-node queries and the HTTP side, all owned by one task (see
//! [`super::run_loop`]).
//!
//! After every input the core drains the host ([`Core::drain`]): transmits
//! go to libp2p, executor commands to the executor, events to frameworks,
//! metrics and gossip. The core decides nothing the simulator would need to
//! predict: routing, bid numbering, restarts and liveness are the host's.
//! Following gossip is in [`super::membership`], messages from other nodes
//! in `peers`, socket clients in `clients`, cross-node questions in
//! [`super::queries`], the HTTP API's commands and snapshots in [`super::api`].

use super::frameworks::Framework;
use super::queries::Queries;
use crate::executor::{ExecEvent, Executor, Recovered};
use crate::gossip::{Gossip, LocalState};
use crate::p2p::P2p;
use agora_protocol::host::{self, Host};
use agora_protocol::wire::{ServerMessage, TaskRow};
use agora_protocol::{FrameworkId, Instant, NodeId};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tokio::sync::mpsc;

/// Converts between tokio's clock and the protocol's microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: tokio::time::Instant,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        Clock {
            start: tokio::time::Instant::now(),
        }
    }

    /// Now, for the protocol.
    pub fn now(&self) -> Instant {
        let micros = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        Instant::from_micros(micros)
    }

    /// A protocol instant as a tokio instant (far future for MAX).
    pub fn to_tokio(&self, t: Instant) -> tokio::time::Instant {
        let capped = t.as_micros().min(86_400_000_000 * 365);
        self.start + Duration::from_micros(capped)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// One socket connection as the core sees it.
#[derive(Debug)]
pub struct Conn {
    /// Where answers go.
    pub tx: mpsc::Sender<ServerMessage>,
    /// The framework it registered, if any.
    pub framework: Option<FrameworkId>,
    /// Subscribed to offers.
    pub offers: bool,
    /// When it was last sent offers.
    pub offers_sent: Option<Instant>,
    /// The view changed since it was last sent offers.
    pub offers_stale: bool,
}

/// Periodic work interval.
pub const TICK: Duration = Duration::from_millis(250);
/// Most task rows sent to a peer in one `TaskList`.
pub const MAX_PEER_ROWS: usize = 10_000;
/// Least time between two gossip publishes.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(50);

/// The node's state. See the module documentation.
pub struct Core {
    pub(super) me: NodeId,
    pub(super) clock: Clock,
    /// Everything the node decides.
    pub(super) host: Host<ChaCha8Rng>,
    /// The sessions of the frameworks homed here (their bidders are the
    /// host's).
    pub(super) frameworks: BTreeMap<FrameworkId, Framework>,
    pub(super) conns: BTreeMap<u64, Conn>,
    pub(super) p2p: P2p,
    pub(super) executor: Executor,
    pub(super) gossip: Gossip,
    pub(super) queries: Queries,
    /// The published state, minus the ledger fields.
    pub(super) local_state: LocalState,
    pub(super) publish_due: Option<Instant>,
    pub(super) last_publish: Instant,
    pub(super) next_tick: Instant,
    /// The view changed since subscribers were last marked stale.
    pub(super) offers_dirty: bool,
    /// Placement latencies (bounded ring) for logs and metrics.
    pub(super) latencies: VecDeque<Duration>,
    /// Host counters already added to the metrics.
    pub(super) counted: host::Stats,
    /// The HTTP API's side, when `--http` is on.
    pub(super) http: Option<super::api::HttpSide>,
}

impl Core {
    /// Assembles a core.
    pub fn new(
        clock: Clock,
        host: Host<ChaCha8Rng>,
        p2p: P2p,
        executor: Executor,
        gossip: Gossip,
        local_state: LocalState,
    ) -> Self {
        let now = clock.now();
        Core {
            me: host.node_id().clone(),
            clock,
            host,
            frameworks: BTreeMap::new(),
            conns: BTreeMap::new(),
            p2p,
            executor,
            gossip,
            queries: Queries::default(),
            local_state,
            publish_due: None,
            last_publish: now,
            next_tick: now + TICK,
            offers_dirty: true,
            latencies: VecDeque::new(),
            counted: host::Stats::default(),
            http: None,
        }
    }

    /// The next instant the loop must wake at.
    pub fn poll_timeout(&self) -> Instant {
        [
            self.host.poll_timeout(),
            self.publish_due,
            self.api_deadline(),
        ]
        .into_iter()
        .flatten()
        .fold(self.next_tick, Instant::min)
    }

    /// Runs every due timer.
    pub fn on_timeout(&mut self) {
        let now = self.clock.now();
        if self.host.poll_timeout().is_some_and(|t| t <= now) {
            self.host.handle_timeout(now);
        }
        if self.publish_due.is_some_and(|t| t <= now) {
            self.publish_due = None;
            self.publish(now);
        }
        self.maybe_publish_api(now);
        if self.next_tick <= now {
            self.next_tick = now + TICK;
            self.tick(now);
        }
    }

    /// Every task this node knows: what it runs, what its frameworks placed,
    /// and the history of frameworks it no longer holds.
    pub(super) fn local_rows(&self) -> Vec<TaskRow> {
        self.host.task_rows()
    }

    // ------------------------------------------------------------ executor

    /// Re-adopts recovered tasks, reports those that ended while down, and
    /// keeps the rows of tasks that ended before the restart (the executor's
    /// history, until its garbage collector removes them).
    pub fn recover(&mut self, recovered: Vec<Recovered>) {
        let now = self.clock.now();
        for e in self.executor.history() {
            self.host.remember_ended(TaskRow {
                task_id: e.request.task_id,
                name: e.request.spec.name,
                framework: e.request.framework,
                state: e.status.state,
                node: Some(self.me.clone()),
                exit_code: e.status.exit_code,
                resources: e.request.spec.resources,
                reason: e.status.reason,
            });
        }
        for r in recovered {
            match r {
                Recovered::Running(req) => {
                    tracing::info!(task = %req.task_id, "re-attached to a running task");
                    if let Err(e) = self.host.adopt(now, &req) {
                        tracing::warn!(task = %req.task_id, error = %e, "re-attached task does not fit the ledger; it runs on uncounted");
                    }
                }
                Recovered::Ended(req, status) => {
                    tracing::info!(task = %req.task_id, state = %status.state, "task ended while the agent was down");
                    self.host.handle_exec(now, status, Some(&req));
                }
            }
        }
    }

    /// A task's state changed on this node.
    pub fn on_exec(&mut self, ev: ExecEvent) {
        let now = self.clock.now();
        let ExecEvent::Status { request, status } = ev;
        self.host.handle_exec(now, status, Some(&request));
    }

    // ------------------------------------------------------------ draining

    /// Carries out everything the host asked for.
    pub async fn drain(&mut self) {
        let now = self.clock.now();
        let mut moved = false;
        while let Some(t) = self.host.poll_transmit() {
            moved = true;
            self.p2p.send(&t.to, t.msg);
        }
        while let Some(e) = self.host.poll_exec() {
            moved = true;
            match e {
                host::Exec::Launch(l) => {
                    tracing::debug!(task = %l.task_id, "launching");
                    self.executor.launch(l);
                }
                host::Exec::Kill { task_id, grace } => {
                    tracing::debug!(task = %task_id, "killing");
                    self.executor.kill(&task_id, grace);
                }
            }
        }
        while let Some(ev) = self.host.poll_event() {
            moved = true;
            self.on_host_event(now, ev);
        }
        self.count_host_stats();
        if moved {
            self.api_dirty();
        }
    }

    fn on_host_event(&mut self, now: Instant, ev: host::Event) {
        match ev {
            host::Event::Status {
                framework,
                name,
                status,
            } => {
                if self.http.as_ref().is_some_and(|h| h.framework == framework) {
                    // The internal http framework has no connection to
                    // tell: its tasks are read from the host.
                    return;
                }
                let Some(f) = self.frameworks.get_mut(&framework) else {
                    return;
                };
                let event = f.push_status(now, name, status);
                if let Some(conn) = f.conn {
                    self.reply(conn, ServerMessage::Status(event));
                }
            }
            host::Event::Placed {
                task_id,
                node,
                latency,
                attempts,
                ..
            } => {
                tracing::debug!(task = %task_id, %node, ?latency, attempts, "placed");
                // The bidder counted the award in the view: offers change.
                self.offers_dirty = true;
                if self.latencies.len() >= 10_000 {
                    self.latencies.pop_front();
                }
                self.latencies.push_back(latency);
                if let Some(m) = self.metrics() {
                    m.observe_auction_latency(latency);
                }
            }
            host::Event::LedgerChanged { .. } => {
                self.offers_dirty = true;
                self.schedule_publish(now);
            }
            host::Event::StatusUndeliverable { task_id, home } => {
                tracing::warn!(task = %task_id, %home, "gave up delivering a status update to the task's home node");
            }
            host::Event::NodeAlive(node) => {
                self.offers_dirty = true;
                tracing::info!(%node, "node is alive");
            }
            host::Event::NodeDead(node) => {
                self.offers_dirty = true;
                tracing::warn!(%node, "node declared dead; its tasks are lost");
            }
            host::Event::NodeRevived { node, kills } => {
                self.offers_dirty = true;
                tracing::warn!(%node, kills, "node declared dead is back; killing the tasks reported lost there");
            }
        }
    }

    /// Adds what the host counted since the last drain to the metrics.
    fn count_host_stats(&mut self) {
        let s = self.host.stats();
        let c = self.counted;
        if let Some(m) = self.metrics() {
            m.bids_sent.inc_by(s.bids_sent - c.bids_sent);
            m.bids_won.inc_by(s.awards - c.awards);
            m.bids_rejected.inc_by(s.rejects - c.rejects);
        }
        self.counted = s;
    }

    /// Queues an answer to a connection (dropped with a log line when its
    /// queue is full: status events are re-sent later anyway).
    ///
    /// A status event (re-sent until acknowledged) or an offers frame (the
    /// next one replaces it) may be dropped; any other answer may not: a
    /// client whose queue is too full to take one does not read its answers,
    /// and its connection is closed, as the socket closes one that leaves
    /// 16 MiB unread (docs/FRAMEWORK_API.md, "Flow control").
    pub(super) fn reply(&mut self, conn: u64, msg: ServerMessage) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let droppable = matches!(&msg, ServerMessage::Status(e) if e.seq > 0)
            || matches!(msg, ServerMessage::Offers(_));
        match c.tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) if !droppable => {
                tracing::warn!(
                    conn,
                    "socket client left its answers unread (its queue is full); closing that connection"
                );
                self.drop_conn(conn);
            }
            Err(e) => {
                tracing::debug!(conn, error = %e, "client queue full or closed; message dropped");
            }
        }
    }

    /// Forgets a connection (closing it, when the core holds the last
    /// sender); a framework attached to it keeps its tasks for its failover
    /// timeout.
    pub(super) fn drop_conn(&mut self, conn: u64) {
        if let Some(c) = self.conns.remove(&conn)
            && let Some(fw) = c.framework
            && let Some(f) = self.frameworks.get_mut(&fw)
            && f.conn == Some(conn)
        {
            tracing::info!(framework = %fw, "framework disconnected; its tasks keep running for its failover timeout");
            f.conn = None;
            f.disconnected_at = Some(self.clock.now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_round_trips() {
        let c = Clock::new();
        let t = Instant::from_millis(1500);
        assert_eq!(
            c.to_tokio(t) - c.to_tokio(Instant::ZERO),
            Duration::from_millis(1500)
        );
        assert!(c.to_tokio(Instant::MAX) > c.to_tokio(t));
    }
}
