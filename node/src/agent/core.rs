//! The core of a running node: one value that owns the auctioneer, the
//! cluster view, every framework's bidder, the libp2p swarm and the
//! executor, driven by one task (see [`super::run_loop`]).
//!
//! After every input the core drains every machine ([`Core::drain`]):
//! transmits go to libp2p (or straight back in when addressed to this node),
//! auctioneer events launch and kill tasks, bidder events become status
//! events for frameworks. Versions of this node's free vector leave the node
//! offset by the agent's start time in microseconds, so that a restarted
//! agent's ledger (which counts from 1 again) is still newer than anything
//! its peers remember. Messages from other nodes are dispatched in `peers`,
//! following gossip is in [`super::membership`], socket clients in
//! `clients`, cross-node questions in [`super::queries`], the HTTP API's
//! commands and snapshots in [`super::api`].

use super::frameworks::Framework;
use super::queries::Queries;
use crate::executor::{ExecEvent, Executor, LaunchRequest, Recovered};
use crate::gossip::{Gossip, LocalState, Snapshot};
use crate::p2p::P2p;
use agora_protocol::auctioneer::{self, Auctioneer};
use agora_protocol::bidder;
use agora_protocol::task::TaskState;
use agora_protocol::view::ClusterView;
use agora_protocol::wire::{PeerMessage, ServerMessage, TaskRow};
use agora_protocol::{BidId, FrameworkId, Instant, NodeId, TaskId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
}

/// Periodic work interval.
pub const TICK: Duration = Duration::from_millis(250);
/// Bids remembered for translating answers (older answers are dropped;
/// the bid has long timed out).
pub const MAX_BIDS_MAPPED: usize = 200_000;
/// Most task rows sent to a peer in one `TaskList`.
pub const MAX_PEER_ROWS: usize = 10_000;
/// How long a node seen restarting may take to be held alive again.
pub const RESTART_GRACE: Duration = Duration::from_secs(15);
/// Least time between two gossip publishes.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(50);

/// The node's state. See the module documentation.
pub struct Core {
    pub(super) me: NodeId,
    pub(super) clock: Clock,
    pub(super) auctioneer: Auctioneer,
    pub(super) view: ClusterView,
    pub(super) frameworks: BTreeMap<FrameworkId, Framework>,
    pub(super) conns: BTreeMap<u64, Conn>,
    pub(super) p2p: P2p,
    pub(super) executor: Executor,
    pub(super) gossip: Gossip,
    pub(super) queries: Queries,
    /// Messages this node sent to itself.
    pub(super) local: VecDeque<(NodeId, PeerMessage)>,
    /// Added to every free-vector version that leaves this node.
    pub(super) version_offset: u64,
    /// This node's gossip address, as published.
    pub(super) gossip_addr: String,
    /// The published state, minus the ledger fields.
    pub(super) local_state: LocalState,
    pub(super) publish_due: Option<Instant>,
    pub(super) last_publish: Instant,
    pub(super) next_tick: Instant,
    /// The view changed since offers were last sent.
    pub(super) offers_dirty: bool,
    pub(super) last_offers: Instant,
    /// Placement latencies (bounded ring) for logs and metrics.
    pub(super) latencies: VecDeque<Duration>,
    /// Live members at the last snapshot.
    pub(super) alive: BTreeSet<NodeId>,
    /// Wire bid id → (framework, the bidder's own bid id).
    pub(super) bids: BTreeMap<BidId, (FrameworkId, BidId)>,
    /// (framework, bidder's bid id) → wire bid id.
    pub(super) bids_back: BTreeMap<(FrameworkId, BidId), BidId>,
    pub(super) bids_order: VecDeque<BidId>,
    pub(super) next_bid: u64,
    /// Nodes seen restarting, held alive until this deadline.
    pub(super) restarting: BTreeMap<NodeId, Instant>,
    /// The last snapshot (re-examined on ticks for restart deadlines).
    pub(super) last_snapshot: Option<std::sync::Arc<Snapshot>>,
    /// The HTTP API's side, when `--http` is on.
    pub(super) http: Option<super::api::HttpSide>,
}

impl Core {
    /// Assembles a core.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: NodeId,
        clock: Clock,
        auctioneer: Auctioneer,
        p2p: P2p,
        executor: Executor,
        gossip: Gossip,
        local_state: LocalState,
        version_offset: u64,
        gossip_addr: String,
    ) -> Self {
        let now = clock.now();
        let mut core = Core {
            me,
            clock,
            auctioneer,
            view: ClusterView::new(),
            frameworks: BTreeMap::new(),
            conns: BTreeMap::new(),
            p2p,
            executor,
            gossip,
            queries: Queries::default(),
            local: VecDeque::new(),
            version_offset,
            gossip_addr,
            local_state,
            publish_due: None,
            last_publish: now,
            next_tick: now + TICK,
            offers_dirty: true,
            last_offers: Instant::ZERO,
            latencies: VecDeque::new(),
            alive: BTreeSet::new(),
            restarting: BTreeMap::new(),
            last_snapshot: None,
            bids: BTreeMap::new(),
            bids_back: BTreeMap::new(),
            bids_order: VecDeque::new(),
            next_bid: version_offset.max(1),
            http: None,
        };
        core.refresh_self();
        core
    }

    /// The next instant the loop must wake at.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.next_tick;
        for x in [
            self.auctioneer.poll_timeout(),
            self.publish_due,
            self.api_deadline(),
        ]
        .into_iter()
        .flatten()
        {
            t = t.min(x);
        }
        for f in self.frameworks.values() {
            if let Some(x) = f.bidder.poll_timeout() {
                t = t.min(x);
            }
        }
        t
    }

    /// Runs every due timer.
    pub fn on_timeout(&mut self) {
        let now = self.clock.now();
        if self.auctioneer.poll_timeout().is_some_and(|t| t <= now) {
            self.auctioneer.handle_timeout(now);
        }
        for f in self.frameworks.values_mut() {
            if f.bidder.poll_timeout().is_some_and(|t| t <= now) {
                f.bidder.handle_timeout(now, &mut self.view);
            }
        }
        if self.publish_due.is_some_and(|t| t <= now) {
            self.publish_due = None;
            self.publish(now);
        }
        self.maybe_publish_api(now);
        if self.next_tick <= now {
            self.next_tick = now + TICK;
            self.tick(now);
            if !self.restarting.is_empty()
                && let Some(snap) = self.last_snapshot.clone()
            {
                self.on_snapshot(&snap);
            }
        }
    }

    /// Live nodes other than this one.
    pub(super) fn live_peers(&self) -> Vec<NodeId> {
        self.alive
            .iter()
            .filter(|n| **n != self.me)
            .cloned()
            .collect()
    }

    // ------------------------------------------------------------ peers

    /// Sends a message (to this node itself through the local queue).
    pub(super) fn send(&mut self, to: NodeId, mut msg: PeerMessage) {
        match &mut msg {
            PeerMessage::Reject(r) => {
                r.free_version = r.free_version.saturating_add(self.version_offset);
            }
            PeerMessage::Status(u) => {
                u.free_version = u.free_version.saturating_add(self.version_offset);
            }
            _ => {}
        }
        if to == self.me {
            self.local.push_back((self.me.clone(), msg));
        } else {
            self.p2p.send(&to, msg);
        }
    }

    /// Every task this node knows: what it runs and what its frameworks placed.
    pub(super) fn local_rows(&self) -> Vec<TaskRow> {
        let mut rows = self.auctioneer.task_rows();
        for f in self.frameworks.values() {
            rows.extend(f.bidder.task_rows());
        }
        rows
    }

    // ------------------------------------------------------------ executor

    /// Re-adopts recovered tasks and reports those that ended while down.
    pub fn recover(&mut self, recovered: Vec<Recovered>) {
        let now = self.clock.now();
        for r in recovered {
            match r {
                Recovered::Running(req) => {
                    tracing::info!(task = %req.task_id, "re-attached to a running task");
                    if let Err(e) = self.auctioneer.adopt(
                        req.task_id.clone(),
                        req.framework.clone(),
                        req.weight,
                        req.home.clone(),
                        &req.spec,
                        req.ports.clone(),
                        TaskState::Running,
                    ) {
                        tracing::warn!(task = %req.task_id, error = %e, "re-attached task does not fit the ledger; it runs on uncounted");
                    }
                }
                Recovered::Ended(req, status) => {
                    tracing::info!(task = %req.task_id, state = %status.state, "task ended while the agent was down");
                    self.auctioneer
                        .report_ended(now, req.home, req.framework, &req.spec, status);
                }
            }
        }
        self.refresh_self();
    }

    /// A task's state changed on this node.
    pub fn on_exec(&mut self, ev: ExecEvent) {
        let now = self.clock.now();
        let ExecEvent::Status { request, status } = ev;
        let terminal = status.state.is_terminal();
        match self.auctioneer.task_status(now, status.clone()) {
            Ok(()) => {}
            Err(auctioneer::Error::UnknownTask(_)) if terminal => {
                self.auctioneer.report_ended(
                    now,
                    request.home.clone(),
                    request.framework.clone(),
                    &request.spec,
                    status,
                );
            }
            Err(e) => {
                tracing::debug!(task = %request.task_id, error = %e, "executor status not applied");
            }
        }
    }

    // ------------------------------------------------------------ draining

    /// Drains every machine until nothing moves.
    pub async fn drain(&mut self) {
        let now = self.clock.now();
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(t) = self.auctioneer.poll_transmit() {
                moved = true;
                self.send(t.to, t.msg);
            }
            while let Some(ev) = self.auctioneer.poll_event() {
                moved = true;
                self.on_auction_event(now, ev);
            }
            let ids: Vec<FrameworkId> = self.frameworks.keys().cloned().collect();
            for id in ids {
                while let Some(f) = self.frameworks.get_mut(&id) {
                    if let Some(t) = f.bidder.poll_transmit() {
                        moved = true;
                        if let Some(msg) = self.bid_out(&id, t.msg) {
                            self.send(t.to, msg);
                        }
                    } else if let Some(ev) = f.bidder.poll_event() {
                        moved = true;
                        self.on_bidder_event(now, &id, ev);
                    } else {
                        break;
                    }
                }
            }
            while let Some((from, msg)) = self.local.pop_front() {
                moved = true;
                Box::pin(self.on_peer(from, msg)).await;
            }
            if !moved {
                return;
            }
            self.api_dirty();
        }
        tracing::warn!("machines still busy after 10000 drain rounds; continuing later");
    }

    fn on_auction_event(&mut self, now: Instant, ev: auctioneer::Event) {
        match ev {
            auctioneer::Event::Launch {
                task_id,
                framework,
                home,
                spec,
                ports,
            } => {
                let weight = self
                    .auctioneer
                    .allocations()
                    .get(&framework)
                    .map_or(1, |u| u.weight);
                tracing::debug!(task = %task_id, "launching");
                self.executor.launch(LaunchRequest {
                    task_id,
                    framework,
                    weight,
                    home,
                    spec,
                    ports,
                });
            }
            auctioneer::Event::Kill { task_id, grace } => {
                tracing::debug!(task = %task_id, "killing");
                self.executor.kill(&task_id, grace);
            }
            auctioneer::Event::LedgerChanged { .. } => {
                self.refresh_self();
                self.offers_dirty = true;
                self.schedule_publish(now);
            }
            auctioneer::Event::StatusUndeliverable { task_id, home } => {
                tracing::warn!(task = %task_id, %home, "gave up delivering a status update to the task's home node");
            }
        }
    }

    fn on_bidder_event(&mut self, now: Instant, fw: &FrameworkId, ev: bidder::Event) {
        match ev {
            bidder::Event::Status { name, status } => {
                if self.http.as_ref().is_some_and(|h| h.framework == *fw) {
                    // The internal http framework has no connection to
                    // tell: its tasks are read from the bidder.
                    return;
                }
                let Some(f) = self.frameworks.get_mut(fw) else {
                    return;
                };
                let event = f.push_status(now, name, status);
                if let Some(conn) = f.conn {
                    self.reply(conn, ServerMessage::Status(event));
                }
            }
            bidder::Event::Placed {
                task_id,
                node,
                latency,
                attempts,
            } => {
                tracing::debug!(task = %task_id, %node, ?latency, attempts, "placed");
                if self.latencies.len() >= 10_000 {
                    self.latencies.pop_front();
                }
                self.latencies.push_back(latency);
                if let Some(m) = self.metrics() {
                    m.observe_auction_latency(latency);
                }
            }
        }
    }

    /// Queues an answer to a connection (dropped with a log line when its
    /// queue is full: status events are re-sent later anyway).
    pub(super) fn reply(&mut self, conn: u64, msg: ServerMessage) {
        if let Some(c) = self.conns.get(&conn)
            && let Err(e) = c.tx.try_send(msg)
        {
            tracing::debug!(conn, error = %e, "client queue full or closed; message dropped");
        }
    }
}

/// The framework a task belongs to (task ids are `FRAMEWORK.SEQ`).
pub fn framework_of(task: &TaskId) -> Option<FrameworkId> {
    let (fw, seq) = task.as_str().rsplit_once('.')?;
    seq.parse::<u64>().ok()?;
    FrameworkId::new(fw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_name_their_framework() {
        let t = TaskId::new("cli-0a1b2c3d@node.eu-1.42").unwrap();
        assert_eq!(framework_of(&t).unwrap().as_str(), "cli-0a1b2c3d@node.eu-1");
        assert!(framework_of(&TaskId::new("nodot").unwrap()).is_none());
        assert!(framework_of(&TaskId::new("a.b").unwrap()).is_none());
    }

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
