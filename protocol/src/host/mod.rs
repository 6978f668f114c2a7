//! The host: everything one node decides, as one sans-IO machine.
//!
//! A [`Host`] owns the node's [`Auctioneer`], the [`Bidder`] of every
//! framework homed on the node, the node's [`ClusterView`], what it believes
//! about its peers' liveness, and its generation. It plays the part
//! `quinn_proto::Endpoint` plays for QUIC connections: the node's shell
//! (node/src/agent) feeds it what arrived and carries out what it asks; the
//! simulator (sim/src/auction) creates one per simulated node. So the
//! simulator measures the code that runs in production, and a capability is
//! written once.
//!
//! ```text
//!            handle_peer(now, from, msg)   handle_membership(now, change)
//!            handle_exec(now, status, ..)  handle_timeout(now)
//!            add_framework / submit / kill (commands)
//!                         │
//!   ┌─────────────────────▼──────────────────────────┐
//!   │ Host                                           │
//!   │   Auctioneer ◄── routing ──► Bidder per framework
//!   │        ▲      (bid ranges,        │            │
//!   │        │       task ids)          ▼            │
//!   │   ledger ──► own view entry   ClusterView      │
//!   │   liveness: restart grace, deaths, revivals    │
//!   └──────┬──────────────┬──────────────┬───────────┘
//!     poll_transmit   poll_exec      poll_event    poll_timeout
//!     (to peers)      (launch/kill)  (status, placed, ledger, liveness)
//! ```
//!
//! What the host decides, so that no shell decides it:
//! - **Routing.** Peer messages for the auctioneer go to it; awards and
//!   rejects go to the bidder whose bid they answer, found by the bid id
//!   (each framework numbers its bids from a range of its own, see
//!   [`BID_RANGE`]); confirm answers go to the framework that made the task
//!   id (exact id first, then [`TaskId::is_of`] for ids that were cut);
//!   status updates name their framework. Messages a node sends itself are
//!   looped back inside the host, never through the network.
//! - **Rejects and status updates heal the view once**: the bidder applies
//!   their free vector to the host's one view.
//! - **Generation.** A node passes a generation that grows across restarts
//!   (the node uses its start time in microseconds). The ledger's versions
//!   and bid numbers start from it, so every peer sees a restarted node's
//!   state as newer than anything it remembers: no offsets patched onto
//!   messages by the shell.
//! - **Liveness.** Membership changes come in as [`Change`]s. A peer that the
//!   failure detector does not hold alive but that publishes a newer ledger
//!   (a new generation: an agent restart) is held alive for
//!   [`Config::restart_grace`] so that its re-attached tasks are not
//!   reported lost. A peer declared dead has its tasks reported lost by every
//!   bidder here; if it comes back (it was only paused or cut off), the host
//!   sends it a kill for every task it reported lost there, so that a task
//!   reported lost never keeps running (docs/PROTOCOL.md, "Lost means
//!   stopped").
//! - **Fair-share inputs.** The auctioneer ranks bids by the frameworks'
//!   dominant shares, computed from the view's allocations whenever the
//!   membership changes ([`Config::shares_from_view`]).
//! - **History.** A framework that is removed keeps its ended tasks' rows in a
//!   bounded history ([`Config::keep_history`]), so forgetting a framework
//!   never forgets what happened to its tasks.
//! - **Witnesses.** The tasks a node runs for frameworks homed on it are
//!   known only to it; it sends them to its witness, which lists them as
//!   lost while the node is declared dead ([`witness`]).

mod cells;
mod members;
mod route;
#[cfg(test)]
mod tests;
pub mod witness;
#[cfg(test)]
mod witness_tests;

pub use cells::{MAX_CELLS, MAX_IMPORTED};
pub use members::Change;

use crate::FixedHashMap;
use crate::auctioneer::{self, Auctioneer};
use crate::bidder::{self, Bidder};
use crate::constraint::Attributes;
use crate::ids::{BidId, FrameworkId, NodeId, TaskId};
use crate::resources::{PortSet, Resources};
use crate::task::{TaskSpec, TaskStatus};
use crate::time::Instant;
use crate::view::{ClusterView, NodeInfo};
use crate::wire::{ErrorCode, Kill, MAX_SUBMIT, PeerMessage, TaskRow};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

pub use crate::auctioneer::Transmit;
pub use crate::bidder::Journaled;

/// Bids of one framework are numbered from its own range of this many ids
/// (2^40: a framework would need to send a million bids a second for twelve
/// days to leave it).
pub const BID_RANGE: u64 = 1 << 40;

/// Tunables of a host.
#[derive(Clone, Debug)]
pub struct Config {
    /// The node's generation: larger than any earlier run of this node's
    /// (the node uses its start time in microseconds; the simulator counts
    /// restarts). Ledger versions and bid numbers start from it.
    pub generation: u64,
    /// The auctioneer's tunables.
    pub auctioneer: auctioneer::Config,
    /// The tunables every bidder here gets.
    pub bidder: bidder::Config,
    /// How long a peer seen restarting (a newer ledger from a member the
    /// failure detector does not hold alive yet) is held alive.
    pub restart_grace: Duration,
    /// Compute the auctioneer's fair shares from the view on every
    /// membership change. The simulator turns this off and sets shares from
    /// its model of the gossiped allocations ([`Host::set_shares`]).
    pub shares_from_view: bool,
    /// Rows of removed frameworks' tasks kept for listing.
    pub keep_history: usize,
    /// Peers declared dead remembered, so that a revival kills what was
    /// reported lost there.
    pub keep_dead: usize,
    /// How long after a restart a restored framework waits for the nodes'
    /// reports of its earlier tasks before a reconcile calls an unreported
    /// one lost ([`Host::reconcile_unknown`]).
    pub restore_window: Duration,
    /// The cell this node belongs to; `None`: one flat cluster, no cells.
    pub cell: Option<crate::cell::CellId>,
    /// Gateways per cell.
    pub gateways: usize,
    /// How often bidders' need to cross cells is judged.
    pub cell_tick: Duration,
    /// A bidder crosses when fewer home members than this can take its
    /// last request ([`crate::cell::should_cross`]).
    pub cross_min_fitting: u32,
    /// ... or when less than this fraction of the home cell is free for it.
    pub spill_below: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            generation: 0,
            auctioneer: auctioneer::Config::default(),
            bidder: bidder::Config::default(),
            // A restarted agent is back within a few seconds; chitchat's
            // detector needs a few heartbeats to hold the new generation
            // alive. 15 s covers both on a loaded machine.
            restart_grace: Duration::from_secs(15),
            shares_from_view: true,
            keep_history: 10_000,
            keep_dead: 4096,
            // Gossip carries the new generation to every member within a few
            // rounds; each answers at once.
            restore_window: Duration::from_secs(10),
            cell: None,
            gateways: 3,
            cell_tick: Duration::from_secs(1),
            cross_min_fitting: 8,
            spill_below: crate::cell::SPILL_FREE_FRACTION,
        }
    }
}

/// Something for the executor: the node's shell carries it out and reports
/// back through [`Host::handle_exec`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exec {
    /// Start this task (its resources are allocated).
    Launch(Launch),
    /// Kill this task: TERM, then KILL after `grace`.
    Kill {
        /// The task.
        task_id: TaskId,
        /// Time between TERM and KILL.
        grace: Duration,
    },
}

/// A task to start, with what the node needs to report its end even after a
/// restart (the node's executor checkpoints it as it is).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Launch {
    /// The task.
    pub task_id: TaskId,
    /// Its framework.
    pub framework: FrameworkId,
    /// The framework's DRF weight.
    pub weight: u32,
    /// The framework's home node.
    pub home: NodeId,
    /// What to run.
    pub spec: TaskSpec,
    /// Ports reserved for it (the node exports them as AGORA_PORTS).
    pub ports: Vec<u16>,
}

/// What the host reports to its shell.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A task of a framework homed here moved forward: tell the framework.
    Status {
        /// The framework.
        framework: FrameworkId,
        /// The task's job name.
        name: String,
        /// The new status.
        status: TaskStatus,
    },
    /// A task of a framework homed here was placed.
    Placed {
        /// The framework.
        framework: FrameworkId,
        /// The task.
        task_id: TaskId,
        /// Where.
        node: NodeId,
        /// From submit to confirmation.
        latency: Duration,
        /// Attempts it took (1 = first try).
        attempts: u32,
    },
    /// This node's ledger changed: publish it (gossip).
    LedgerChanged {
        /// What is free now.
        free: Resources,
        /// Its version.
        version: u64,
    },
    /// A status update for a task run here could not be delivered to its
    /// home node after every retry.
    StatusUndeliverable {
        /// The task.
        task_id: TaskId,
        /// Its home node.
        home: NodeId,
    },
    /// A peer is alive (first seen, or back after being declared dead).
    NodeAlive(NodeId),
    /// A peer was declared dead; its tasks are reported lost.
    NodeDead(NodeId),
    /// A peer declared dead came back: the tasks reported lost there are
    /// being killed.
    NodeRevived {
        /// The peer.
        node: NodeId,
        /// How many kills were sent to it.
        kills: usize,
    },
    /// A bidder here needs another cell's members to bid there: ask one of
    /// that cell's gateways and hand the answer to [`Host::handle_import`]
    /// (and again now and then, while [`Host::imported_cells`] lists it).
    ImportCell(crate::cell::CellId),
    /// No bidder here imports this cell any more; its nodes left the view.
    DropCell(crate::cell::CellId),
}

/// Why a command was refused, for the framework or operator that sent it.
/// State is unchanged in every case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    /// The wire code to answer with.
    pub code: ErrorCode,
    /// What was wrong and what to do, for a person.
    pub message: String,
}

impl Refused {
    /// A refusal with a code and a message for a person.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refused {
            code,
            message: message.into(),
        }
    }
}

/// Which nodes a task listing asks ([`Host::list_targets`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListTargets {
    /// Live nodes to ask.
    pub ask: Vec<NodeId>,
    /// Nodes declared dead whose rows may be missing.
    pub dead: Vec<NodeId>,
}

/// How a kill was carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KillSent {
    /// The task's framework is homed here: its bidder kills it (at once if
    /// not yet placed, else by asking its node until it ends).
    Homed,
    /// The task's framework is not homed here: every live node (this one
    /// included) was asked; the one running it kills it and tells the
    /// task's home node.
    Asked(usize),
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bids sent by this node's bidders.
    pub bids_sent: u64,
    /// Awards routed to a bidder here.
    pub awards: u64,
    /// Rejects routed to a bidder here.
    pub rejects: u64,
    /// Answers for no bidder here (an award is released at once).
    pub unroutable: u64,
    /// Status updates for a framework not homed here (acknowledged, and the
    /// task killed if it still runs).
    pub orphan_status: u64,
}

struct Homed<R> {
    bidder: Bidder<R>,
    /// The first bid id of its range.
    bids_from: u64,
}

/// Everything one node decides. See the module documentation.
pub struct Host<R> {
    me: NodeId,
    addr: String,
    attrs: Attributes,
    config: Config,
    auctioneer: Auctioneer,
    view: ClusterView,
    frameworks: BTreeMap<FrameworkId, Homed<R>>,
    /// First bid id of each homed framework's range → the framework.
    bid_ranges: BTreeMap<u64, FrameworkId>,
    next_range: u64,
    /// Framework id text → framework, for routing by task id.
    by_name: FixedHashMap<Box<str>, FrameworkId>,
    /// Peers seen restarting, held alive until then.
    restarting: BTreeMap<NodeId, Instant>,
    /// Peers declared dead (bounded, oldest first).
    dead: VecDeque<NodeId>,
    /// Rows of removed frameworks' tasks (bounded, oldest first).
    history: VecDeque<TaskRow>,
    /// Sending this node's own tasks to its witness.
    witness_out: witness::Sending,
    /// Own tasks of the nodes this node witnesses.
    witnessed: witness::Received,
    local: VecDeque<PeerMessage>,
    transmits: VecDeque<Transmit>,
    exec: VecDeque<Exec>,
    events: VecDeque<Event>,
    stats: Stats,
    /// Cells: aggregates, imports (see `cells.rs`).
    cells: cells::Cells,
}

impl<R: Rng> Host<R> {
    /// The host of node `me` with `capacity`, `ports` and `attrs`, gossiping
    /// from `addr` (shown in the view; informational).
    pub fn new(
        me: NodeId,
        capacity: Resources,
        ports: PortSet,
        attrs: Attributes,
        addr: String,
        config: Config,
    ) -> Self {
        let mut auctioneer = Auctioneer::new(
            me.clone(),
            capacity,
            ports,
            attrs.clone(),
            config.auctioneer.clone(),
        );
        auctioneer.raise_version(config.generation);
        // The version raise is the first ledger event; it is drained (and
        // the own view entry written) by the first pump.
        let mut host = Host {
            me,
            addr,
            attrs,
            auctioneer,
            view: ClusterView::new(),
            frameworks: BTreeMap::new(),
            bid_ranges: BTreeMap::new(),
            next_range: config.generation.max(1),
            by_name: FixedHashMap::default(),
            restarting: BTreeMap::new(),
            dead: VecDeque::new(),
            history: VecDeque::new(),
            witness_out: witness::Sending::new(config.generation),
            witnessed: witness::Received::default(),
            local: VecDeque::new(),
            transmits: VecDeque::new(),
            exec: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            cells: cells::Cells::new(config.cell.is_some()),
            config,
        };
        host.refresh_self();
        host
    }

    // ------------------------------------------------------------ accessors

    /// This node.
    pub fn node_id(&self) -> &NodeId {
        &self.me
    }

    /// The generation this host was started with.
    pub fn generation(&self) -> u64 {
        self.config.generation
    }

    /// The node's auctioneer (its ledger).
    pub fn auctioneer(&self) -> &Auctioneer {
        &self.auctioneer
    }

    /// The cluster as this node sees it.
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// The view, for a driver that models gossip it does not feed through
    /// [`Host::handle_membership`] (the simulator's cross-cell imports).
    pub fn view_mut(&mut self) -> &mut ClusterView {
        &mut self.view
    }

    /// The bidder of a framework homed here.
    pub fn bidder(&self, framework: &FrameworkId) -> Option<&Bidder<R>> {
        self.frameworks.get(framework).map(|h| &h.bidder)
    }

    /// Every bidder here, in framework id order.
    pub fn bidders(&self) -> impl Iterator<Item = &Bidder<R>> {
        self.frameworks.values().map(|h| &h.bidder)
    }

    /// True when `framework` is homed here.
    pub fn is_homed(&self, framework: &FrameworkId) -> bool {
        self.frameworks.contains_key(framework)
    }

    /// Live peers other than this node, in id order.
    pub fn live_peers(&self) -> Vec<NodeId> {
        self.view
            .iter()
            .filter(|n| n.alive && n.id != self.me)
            .map(|n| n.id.clone())
            .collect()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Every task this node knows: what it runs, what its frameworks placed,
    /// the history of frameworks it no longer holds, and, as lost, the own
    /// tasks of each node it witnesses that the view holds dead
    /// ([`witness`]).
    pub fn task_rows(&self) -> Vec<TaskRow> {
        let mut rows = self.auctioneer.task_rows();
        for h in self.frameworks.values() {
            rows.extend(h.bidder.task_rows());
        }
        rows.extend(self.history.iter().cloned());
        for (node, witnessed) in self.witnessed.iter() {
            if self.view.get(node).is_none_or(|n| n.alive) {
                continue;
            }
            let reason = format!(
                "node {node}, where it ran for a framework homed there, is declared dead; \
                 its witness {} last heard of it",
                self.me
            );
            rows.extend(witnessed.iter().map(|r| TaskRow {
                state: crate::task::TaskState::Lost,
                reason: Some(reason.clone()),
                ..r.clone()
            }));
        }
        rows
    }

    /// The node this node sends its own tasks to, as its view stands.
    pub fn witness(&self) -> Option<NodeId> {
        witness::choose(
            &self.me,
            self.view.iter().filter(|n| n.alive).map(|n| &n.id),
        )
    }

    /// Keeps the row of a task that ended on this node before the node
    /// restarted (its executor remembers it), so that listings still show
    /// it. Bounded by [`Config::keep_history`] together with removed
    /// frameworks' rows; a row already known is not added twice.
    pub fn remember_ended(&mut self, row: TaskRow) {
        if self.history.iter().any(|r| r.task_id == row.task_id) {
            return;
        }
        if self.history.len() >= self.config.keep_history {
            self.history.pop_front();
        }
        self.history.push_back(row);
    }

    /// The status of a task of a framework homed here.
    pub fn status_of(&self, task_id: &TaskId) -> Option<(String, TaskStatus)> {
        let fw = self.framework_of_task(task_id)?;
        self.frameworks.get(&fw)?.bidder.status_of(task_id)
    }

    // ------------------------------------------------------------ commands

    /// Homes a framework here: it gets a bidder drawing on `rng` and a range
    /// of bid ids of its own.
    ///
    /// # Errors
    /// The id is already homed here, or this run of the node has handed out
    /// every bid range (restart the node: its next generation starts anew).
    pub fn add_framework(&mut self, id: FrameworkId, weight: u32, rng: R) -> Result<(), Refused> {
        if self.frameworks.contains_key(&id) {
            return Err(Refused::new(
                ErrorCode::InvalidSpec,
                format!("framework {id} is already registered on this node"),
            ));
        }
        let from = self.next_range;
        let Some(next) = from.checked_add(BID_RANGE) else {
            return Err(Refused::new(
                ErrorCode::Busy,
                "this node has registered as many frameworks as one run can number; restart the agent",
            ));
        };
        self.next_range = next;
        let mut bidder = Bidder::new(
            self.me.clone(),
            id.clone(),
            weight,
            self.config.bidder.clone(),
            rng,
        );
        bidder.number_bids_from(from);
        self.bid_ranges.insert(from, id.clone());
        self.by_name.insert(Box::from(id.as_str()), id.clone());
        self.frameworks.insert(
            id,
            Homed {
                bidder,
                bids_from: from,
            },
        );
        self.refresh_self();
        Ok(())
    }

    /// Homes again a framework that was homed here before the node
    /// restarted (the node keeps the list on disk): as
    /// [`Host::add_framework`], and its bidder numbers new tasks from this
    /// run's generation and adopts the earlier run's tasks as their nodes
    /// report them ([`Bidder::restored`]), so the framework, when it
    /// reattaches, hears how they end.
    ///
    /// `journaled` are the framework's tasks as the node's journal kept
    /// them ([`Host::journal`]): see [`Bidder::restore_tasks`] (those not
    /// placed are placed again once the restore window has passed and no
    /// node reported them; none is reported lost for want of a record).
    ///
    /// # Errors
    /// As [`Host::add_framework`].
    pub fn restore_framework(
        &mut self,
        now: Instant,
        id: FrameworkId,
        weight: u32,
        rng: R,
        journaled: Vec<Journaled>,
    ) -> Result<(), Refused> {
        self.add_framework(id.clone(), weight, rng)?;
        let floor = self.config.generation.max(1);
        let until = now + self.config.restore_window;
        if let Some(h) = self.frameworks.get_mut(&id) {
            h.bidder.restored(floor, until);
            h.bidder.restore_tasks(now, journaled);
        }
        self.pump(now);
        Ok(())
    }

    /// What the node must keep on disk so that a restart knows framework
    /// `fw`'s tasks again ([`Host::restore_framework`]); `None` for a
    /// framework not homed here.
    pub fn journal(&self, fw: &FrameworkId) -> Option<Vec<Journaled>> {
        self.frameworks.get(fw).map(|h| h.bidder.journal())
    }

    /// After the node re-attached its tasks at start (its executor's
    /// [`Host::adopt`]), tells the restored frameworks homed here about the
    /// ones that are theirs, as a peer does when it sees this node restart.
    pub fn after_recovery(&mut self, now: Instant) {
        // Every home hears what this node re-attached, not only this one:
        // a home that placed such a task elsewhere meanwhile (its confirm
        // went unanswered while this node was down), or reported it lost,
        // answers with a kill, so it does not run on twice.
        self.auctioneer.restarted(now);
        self.pump(now);
    }

    /// A reconcile of `task_id` that framework `fw`'s bidder does not know:
    /// if it is a task of the run before the restart and the restore window
    /// has passed, no node reported it (it was never placed, or ran on a node
    /// that is gone), so it is reported lost now, once, and that status is
    /// returned. `Err(until)`: still within the window (ask again then).
    /// `Ok(None)`: not such a task.
    ///
    /// # Errors
    /// The window has not passed yet: the time it ends.
    pub fn reconcile_unknown(
        &mut self,
        now: Instant,
        fw: &FrameworkId,
        task_id: &TaskId,
    ) -> Result<Option<TaskStatus>, Instant> {
        let Some(h) = self.frameworks.get_mut(fw) else {
            return Ok(None);
        };
        let r = h.bidder.lost_in_restart(now, task_id);
        self.pump(now);
        r
    }

    /// Removes a framework homed here. Its tasks' rows stay in the history
    /// (bounded by [`Config::keep_history`]); answers still on their way to
    /// its bidder are treated as unroutable (awards are released).
    pub fn remove_framework(&mut self, id: &FrameworkId) -> bool {
        let Some(h) = self.frameworks.remove(id) else {
            return false;
        };
        self.cells.forget_framework(id);
        self.bid_ranges.remove(&h.bids_from);
        self.by_name.remove(id.as_str());
        for row in h.bidder.task_rows() {
            if self.history.len() >= self.config.keep_history {
                self.history.pop_front();
            }
            self.history.push_back(row);
        }
        true
    }

    /// Submits tasks of a framework homed here, all or none: each spec is
    /// validated and the framework's limit of unfinished tasks checked first.
    ///
    /// # Errors
    /// An empty or oversized batch, an invalid spec (named by its index), an
    /// unknown framework, or too many unfinished tasks.
    pub fn submit(
        &mut self,
        now: Instant,
        framework: &FrameworkId,
        specs: Vec<TaskSpec>,
    ) -> Result<Vec<TaskId>, Refused> {
        if specs.is_empty() {
            return Err(Refused::new(
                ErrorCode::InvalidSpec,
                "a submit needs at least one task",
            ));
        }
        if specs.len() > MAX_SUBMIT {
            return Err(Refused::new(
                ErrorCode::InvalidSpec,
                format!(
                    "{} tasks in one submit; the limit is {MAX_SUBMIT}",
                    specs.len()
                ),
            ));
        }
        for (i, t) in specs.iter().enumerate() {
            t.validate()
                .map_err(|e| Refused::new(ErrorCode::InvalidSpec, format!("task {i}: {e}")))?;
        }
        let limit = self.config.bidder.max_active_tasks;
        let h = self.homed_mut(framework)?;
        let active = h.bidder.active_tasks();
        if active + specs.len() > limit {
            return Err(Refused::new(
                ErrorCode::Busy,
                format!(
                    "{active} tasks are already waiting or running (limit {limit}); wait for some to end"
                ),
            ));
        }
        let mut ids = Vec::with_capacity(specs.len());
        let last = specs.last().map(|s| s.resources);
        for spec in specs {
            match h.bidder.submit(now, spec) {
                Ok(id) => ids.push(id),
                // Validated and counted above: cannot happen, but never panic.
                Err(e) => return Err(Refused::new(ErrorCode::Internal, e.to_string())),
            }
        }
        if let Some(r) = last
            && self.config.cell.is_some()
        {
            self.cells.note_request(framework, r);
        }
        self.pump(now);
        Ok(ids)
    }

    /// Offer mode: a task of a framework homed here, bid on one named node.
    ///
    /// # Errors
    /// An invalid spec, a node unknown or dead in the view, an unknown
    /// framework, or too many unfinished tasks.
    pub fn submit_on(
        &mut self,
        now: Instant,
        framework: &FrameworkId,
        spec: TaskSpec,
        node: NodeId,
    ) -> Result<TaskId, Refused> {
        spec.validate()
            .map_err(|e| Refused::new(ErrorCode::InvalidSpec, e.to_string()))?;
        if !self.view.get(&node).is_some_and(|n| n.alive) {
            return Err(Refused::new(
                ErrorCode::UnknownNode,
                format!("node {node} is unknown or dead in this node's view"),
            ));
        }
        let h = self.homed_mut(framework)?;
        let id = h
            .bidder
            .submit_on(now, spec, node)
            .map_err(|e| Refused::new(ErrorCode::Busy, e.to_string()))?;
        self.pump(now);
        Ok(id)
    }

    /// Kills a task. `caller` is the framework asking, or None for an
    /// operator (who may kill any task); a framework kills only its own.
    ///
    /// # Errors
    /// Not a task id of any framework the caller may kill, or the task has
    /// already ended.
    pub fn kill(
        &mut self,
        now: Instant,
        caller: Option<&FrameworkId>,
        task_id: &TaskId,
    ) -> Result<KillSent, Refused> {
        if let Some(caller) = caller
            && !task_id.is_of(caller)
        {
            return Err(Refused::new(
                ErrorCode::UnknownTask,
                format!(
                    "task {task_id} belongs to framework {}, not to {caller}: a framework kills \
                     only its own tasks (a connection registered with role \"{}\", as the agora \
                     CLI is, may kill any)",
                    task_id.framework_part(),
                    crate::wire::OPERATOR_ROLE
                ),
            ));
        }
        if let Some(fw) = self.framework_of_task(task_id) {
            let h = self.homed_mut(&fw)?;
            return match h.bidder.kill(now, task_id) {
                Ok(()) => {
                    self.pump(now);
                    Ok(KillSent::Homed)
                }
                Err(bidder::Error::AlreadyEnded(_)) => Err(Refused::new(
                    ErrorCode::UnknownTask,
                    format!("task {task_id} has already ended"),
                )),
                Err(e) => Err(Refused::new(ErrorCode::UnknownTask, e.to_string())),
            };
        }
        if self.history.iter().any(|r| r.task_id == *task_id) {
            return Err(Refused::new(
                ErrorCode::UnknownTask,
                format!("task {task_id} has already ended"),
            ));
        }
        // Homed elsewhere and where it runs unknown: ask every live node;
        // the one running it kills it and tells the task's home node.
        let mut targets = self.live_peers();
        targets.push(self.me.clone());
        let n = targets.len();
        for to in targets {
            self.send(
                to,
                PeerMessage::Kill(Kill {
                    task_id: task_id.clone(),
                }),
            );
        }
        self.pump(now);
        Ok(KillSent::Asked(n))
    }

    /// Kills a task homed on another node that a listing showed running on
    /// `node`: only that node is asked (it kills the task and tells the
    /// task's home). Same permission rule as [`Host::kill`]; a task homed
    /// here goes through [`Host::kill`].
    ///
    /// # Errors
    /// As [`Host::kill`].
    pub fn kill_on(
        &mut self,
        now: Instant,
        caller: Option<&FrameworkId>,
        task_id: &TaskId,
        node: &NodeId,
    ) -> Result<KillSent, Refused> {
        if self.framework_of_task(task_id).is_some() || caller.is_some_and(|c| !task_id.is_of(c)) {
            return self.kill(now, caller, task_id);
        }
        self.send(
            node.clone(),
            PeerMessage::Kill(Kill {
                task_id: task_id.clone(),
            }),
        );
        self.pump(now);
        Ok(KillSent::Asked(1))
    }

    /// The nodes to ask for a task listing, besides this node's own rows:
    /// a task's or a framework's rows are all on its home node (its bidder
    /// keeps them, wherever the tasks run), so a query naming one whose
    /// home is alive asks only that home (or nobody, when it is this node),
    /// and so does one whose home, in cells, is in no view here (another
    /// cell's node); any other query, or one whose home is dead or not named in the id,
    /// asks every live node. Dead nodes are returned apart: their rows are
    /// missing from any answer.
    pub fn list_targets(&self, q: &crate::wire::TaskQuery) -> ListTargets {
        let home = q
            .task_id
            .as_ref()
            .and_then(TaskId::home)
            .or_else(|| q.framework.as_ref().and_then(FrameworkId::home));
        let dead = |n: &NodeId| self.view.get(n).is_some_and(|i| !i.alive);
        match home {
            Some(h) if h == self.me => ListTargets::default(),
            Some(h) if self.view.get(&h).is_some_and(|i| i.alive) => ListTargets {
                ask: vec![h],
                dead: Vec::new(),
            },
            // In cells, a home this node has no gossip about is in another
            // cell: ask it there (the driver finds it through that cell's
            // gateways); this cell's nodes would not know more than it.
            Some(h) if self.config.cell.is_some() && self.view.get(&h).is_none() => ListTargets {
                ask: vec![h],
                dead: Vec::new(),
            },
            _ => ListTargets {
                ask: self.live_peers(),
                dead: self
                    .view
                    .iter()
                    .filter(|n| dead(&n.id))
                    .map(|n| n.id.clone())
                    .collect(),
            },
        }
    }

    /// Stops awarding (shutdown): held bids are rejected, new ones refused.
    pub fn drain(&mut self, now: Instant) {
        self.auctioneer.drain();
        self.pump(now);
    }

    /// Stops (`Some(why)`) or resumes (`None`) taking new tasks on this
    /// node, for a reason its shell measured (see
    /// [`Auctioneer::set_unavailable`]).
    pub fn set_unavailable(&mut self, now: Instant, why: Option<String>) {
        self.auctioneer.set_unavailable(now, why);
        self.pump(now);
    }

    /// Sets the auctioneer's fair shares (when [`Config::shares_from_view`]
    /// is off).
    pub fn set_shares(&mut self, shares: crate::fairness::FairShares) {
        self.auctioneer.set_shares(shares);
    }

    // ------------------------------------------------------------ executor

    /// A task's state changed on this node. `launch` is what it was started
    /// from, if the shell still has it: a terminal status for a task the
    /// ledger no longer holds (it ended while the agent was down, or was
    /// never adopted) is then still reported to its home node.
    pub fn handle_exec(&mut self, now: Instant, status: TaskStatus, launch: Option<&Launch>) {
        // Own tasks hold an allocation here until they end (a lookup, not
        // a parse of the id: this runs for every task event).
        let own = match launch {
            Some(l) => l.home == self.me,
            None => self.auctioneer.home_of(&status.task_id) == Some(&self.me),
        };
        if own {
            self.witness_out.touch();
        }
        let Some(l) = launch else {
            let _ = self.auctioneer.task_status(now, status);
            self.pump(now);
            return;
        };
        let terminal = status.state.is_terminal();
        match self.auctioneer.task_status(now, status.clone()) {
            Ok(()) => {}
            Err(auctioneer::Error::UnknownTask(_)) if terminal => {
                self.auctioneer.report_ended(
                    now,
                    l.home.clone(),
                    l.framework.clone(),
                    &l.spec,
                    status,
                );
            }
            Err(_) => {}
        }
        self.pump(now);
    }

    /// Re-adopts a task found running after a restart. It is counted even
    /// when it does not fit (see [`Auctioneer::adopt`]): check
    /// [`Auctioneer::overcommitted`] once every task is adopted.
    ///
    /// # Errors
    /// The task already holds an allocation here (nothing changes).
    pub fn adopt(&mut self, now: Instant, launch: &Launch) -> Result<(), auctioneer::Error> {
        if launch.home == self.me {
            self.witness_out.touch();
        }
        let r = self.auctioneer.adopt(
            launch.task_id.clone(),
            launch.framework.clone(),
            launch.weight,
            launch.home.clone(),
            &launch.spec,
            launch.ports.clone(),
            crate::task::TaskState::Running,
        );
        self.pump(now);
        r
    }

    // ------------------------------------------------------------ polling

    /// The next instant [`Host::handle_timeout`] must be called at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.auctioneer.poll_timeout();
        for h in self.frameworks.values() {
            t = min_opt(t, h.bidder.poll_timeout());
        }
        t = min_opt(t, self.witness_out.poll_timeout());
        t = min_opt(t, self.cells.poll_timeout());
        min_opt(t, self.restarting.values().min().copied())
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.auctioneer.poll_timeout().is_some_and(|t| t <= now) {
            self.auctioneer.handle_timeout(now);
        }
        for h in self.frameworks.values_mut() {
            if h.bidder.poll_timeout().is_some_and(|t| t <= now) {
                h.bidder.handle_timeout(now, &mut self.view);
            }
        }
        self.expire_restarts(now);
        self.cells_tick(now);
        self.pump(now);
        if self.witness_out.is_due(now) {
            self.send_witness(now);
            self.pump(now);
        }
    }

    /// The next message for another node.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing for the executor.
    pub fn poll_exec(&mut self) -> Option<Exec> {
        self.exec.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ------------------------------------------------------------ internal

    fn homed_mut(&mut self, framework: &FrameworkId) -> Result<&mut Homed<R>, Refused> {
        self.frameworks.get_mut(framework).ok_or_else(|| {
            Refused::new(
                ErrorCode::UnknownFramework,
                format!("framework {framework} is not registered on this node"),
            )
        })
    }

    /// The framework homed here that made this task id, if any.
    fn framework_of_task(&self, task_id: &TaskId) -> Option<FrameworkId> {
        if let Some(fw) = self.by_name.get(task_id.framework_part()) {
            return Some(fw.clone());
        }
        // A long framework id is cut in its task ids: ask each framework.
        self.frameworks.keys().find(|fw| task_id.is_of(fw)).cloned()
    }

    /// The framework whose bid range holds `bid`.
    fn framework_of_bid(&self, bid: BidId) -> Option<&FrameworkId> {
        let (from, fw) = self.bid_ranges.range(..=bid.0).next_back()?;
        (bid.0 - from < BID_RANGE).then_some(fw)
    }

    /// This node's own entry in the view, from its ledger. Allocations are
    /// read only where the view computes fair shares (building them costs a
    /// map per ledger change).
    ///
    /// Without fair shares from the view (the simulator), a host with no
    /// framework homed never reads its view, and skips this altogether;
    /// [`Host::add_framework`] brings the entry up to date.
    fn refresh_self(&mut self) {
        if !self.config.shares_from_view {
            if self.frameworks.is_empty() {
                return;
            }
            let (free, version) = (self.auctioneer.free(), self.auctioneer.version());
            if self.view.apply_free(&self.me, free, version) {
                return;
            }
        }
        let mut info = NodeInfo::new(
            self.me.clone(),
            self.auctioneer.capacity(),
            self.attrs.clone(),
        );
        info.free = self.auctioneer.free();
        info.version = self.auctioneer.version();
        info.allocations = self.auctioneer.allocations();
        info.addr = self.addr.clone();
        self.view.upsert(info);
    }

    fn remember_dead(&mut self, node: &NodeId) {
        if self.dead.contains(node) {
            return;
        }
        if self.dead.len() >= self.config.keep_dead {
            self.dead.pop_front();
        }
        self.dead.push_back(node.clone());
    }

    /// The tasks this node runs for frameworks homed on it (their
    /// allocation names this node as home), for its witness.
    fn own_rows(&self) -> Vec<TaskRow> {
        witness::cut(
            self.auctioneer
                .task_rows()
                .into_iter()
                .filter(|r| !r.state.is_terminal())
                .filter(|r| self.auctioneer.home_of(&r.task_id) == Some(&self.me))
                .collect(),
        )
    }

    /// The witness timer fired: send the own tasks if they or the witness
    /// changed, or for the refresh. The witness is chosen only when there
    /// is something to tell.
    fn send_witness(&mut self, now: Instant) {
        let rows = self.own_rows();
        let to = if rows.is_empty() && self.witness_out.quiet_when_empty() {
            None
        } else {
            self.witness()
        };
        for (to, msg) in self.witness_out.fire(now, rows, to) {
            if self.view.get(&to).is_some_and(|n| n.alive) {
                self.send(to, PeerMessage::Witness(msg));
            }
        }
    }

    /// Ids of tasks of frameworks here that were reported lost on `node`.
    fn lost_on(&self, node: &NodeId) -> BTreeSet<TaskId> {
        self.frameworks
            .values()
            .flat_map(|h| h.bidder.task_rows())
            .filter(|r| r.state == crate::task::TaskState::Lost && r.node.as_ref() == Some(node))
            .map(|r| r.task_id)
            .collect()
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
