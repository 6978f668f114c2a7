//! The auctioneer: the one authoritative ledger of a node's resources.
//!
//! Every node runs one. It alone decides who gets its resources, so nothing
//! can be double-booked and no consensus is needed. Its ledger holds the
//! node's capacity, the **leases** it granted (awards not yet confirmed, each
//! with an expiry) and the **allocations** of tasks it launched. Free is
//! always `capacity − leases − allocations`, and an award is made only when it
//! fits inside free, so the node can never be overcommitted.
//!
//! Bids are answered at once while there is no contention (everything asked
//! for fits). When the bids on hand ask for more than is free, the auctioneer
//! collects bids for a short window and then ranks them: priority class
//! (higher first), weighted dominant share of the framework (lower first,
//! charged as awards are made), price (higher first), arrival (earlier first).
//! It awards greedily what fits. A bid that does not fit is **held** for as
//! long as its bidder said it would wait (`Bid::wait_ms`, capped by
//! [`Config::max_hold`]) and ranked again whenever resources free up, so
//! freed capacity goes to the framework with the lowest share among those
//! waiting; when its wait is over it is rejected, with the node's current
//! free vector.
//!
//! The auctioneer also launches confirmed tasks (as [`Event::Launch`] for the
//! node's executor), and sends each task's status updates to its home node
//! until they are acknowledged.
//!
//! Shape: `handle_message` / `handle_timeout` / commands in, `poll_timeout` /
//! `poll_transmit` / `poll_event` out. No clock, no IO.

mod book;
mod launch;
#[cfg(test)]
mod tests;

use crate::constraint::{Attributes, Constraint, Placed};
use crate::fairness::{FairShares, FrameworkUsage};
use crate::ids::{BidId, FrameworkId, LeaseId, NodeId, TaskId};
use crate::resources::{PortSet, Resources};
use crate::task::{IllegalTransition, TaskSpec, TaskState, TaskStatus};
use crate::time::{Instant, millis_u32};
use crate::wire::{
    Award, Bid, Confirm, ConfirmRefused, Confirmed, Kill, PeerMessage, Reject, RejectReason,
    Release, StatusAck, StatusUpdate, TaskRow, Withdraw,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Tunables of an auctioneer.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long to collect competing bids once there is contention.
    pub window: Duration,
    /// How long an award stays reserved without a confirm.
    pub lease_ttl: Duration,
    /// Longest time a bid that does not fit is held waiting for room.
    pub max_hold: Duration,
    /// Most undecided bids held at once; more are rejected as busy.
    pub max_pending_bids: usize,
    /// Most answers remembered to re-send for duplicated bids.
    pub answer_cache: usize,
    /// First delay before re-sending an unacknowledged status update.
    pub status_retry: Duration,
    /// Longest delay between re-sends.
    pub status_retry_max: Duration,
    /// Re-sends of one update before it is dropped as undeliverable.
    pub status_max_attempts: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window: Duration::from_millis(5),
            // Leases and retries are sized by the simulator under message
            // loss (docs/SIMULATOR.md, "Timers under message loss"): a lost
            // award or withdrawal holds its lease for the whole TTL, and at
            // 5% loss a 3 s TTL tied up enough of the cluster to collapse it.
            // 1 s did a little better there than 2 s, but a node whose CPU
            // is saturated can take longer than that to answer a confirm.
            lease_ttl: Duration::from_secs(2),
            max_hold: Duration::from_secs(2),
            max_pending_bids: 4096,
            answer_cache: 8192,
            status_retry: Duration::from_millis(200),
            status_retry_max: Duration::from_secs(10),
            status_max_attempts: 2000,
        }
    }
}

/// A message to send to another node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The destination.
    pub to: NodeId,
    /// The message.
    pub msg: PeerMessage,
}

/// Something for the node's shell to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Start this task (its resources are now allocated).
    Launch {
        /// The task.
        task_id: TaskId,
        /// Its framework.
        framework: FrameworkId,
        /// The framework's DRF weight (from its bid).
        weight: u32,
        /// The node its framework lives on.
        home: NodeId,
        /// What to run.
        spec: TaskSpec,
        /// Ports reserved for it.
        ports: Vec<u16>,
    },
    /// Kill this task: TERM, then KILL after `grace`.
    Kill {
        /// The task.
        task_id: TaskId,
        /// Time between TERM and KILL.
        grace: Duration,
    },
    /// The free vector changed (gossip it).
    LedgerChanged {
        /// What is free now.
        free: Resources,
        /// Its version.
        version: u64,
    },
    /// A status update could not be delivered after every retry.
    StatusUndeliverable {
        /// The task.
        task_id: TaskId,
        /// Its home node.
        home: NodeId,
    },
}

/// Why a message or command was refused. State is unchanged in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An auctioneer does not handle this kind of message.
    #[error("an auctioneer does not handle {0} messages")]
    Unexpected(&'static str),
    /// The message names a task this node does not run.
    #[error("task {0} is not running on this node")]
    UnknownTask(TaskId),
    /// A status change that the task life cycle forbids.
    #[error(transparent)]
    Transition(#[from] IllegalTransition),
    /// Adopting a task that already holds an allocation here (recovery
    /// after restart, the same task twice).
    #[error("task {0} already holds an allocation on this node")]
    AlreadyHeld(TaskId),
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bids received (duplicates excluded).
    pub bids: u64,
    /// Awards granted.
    pub awards: u64,
    /// Rejects sent.
    pub rejects: u64,
    /// Leases that expired unconfirmed.
    pub leases_expired: u64,
    /// Leases released by their bidder.
    pub leases_released: u64,
    /// Leases confirmed (tasks launched).
    pub launches: u64,
    /// Windows closed under contention.
    pub contended_windows: u64,
    /// Bids withdrawn by their bidder while held.
    pub withdrawn: u64,
    /// Leases given back because their bidder withdrew the bid after it
    /// was awarded (the bidder took another node's award).
    pub leases_withdrawn: u64,
    /// Tasks killed here because their home node was declared dead.
    pub orphans_killed: u64,
    /// Held bids dropped because their bidder's node was declared dead.
    pub bids_dropped_home_dead: u64,
}

type BidKey = (NodeId, TaskId, BidId);

#[derive(Debug)]
struct PendingBid {
    from: NodeId,
    bid: Bid,
    arrival: u64,
    hold_until: Instant,
}

#[derive(Debug)]
struct Lease {
    from: NodeId,
    bid_id: BidId,
    task_id: TaskId,
    framework: FrameworkId,
    weight: u32,
    spec: Box<TaskSpec>,
    ports: Vec<u16>,
    expires: Instant,
}

#[derive(Debug)]
struct Allocation {
    framework: FrameworkId,
    weight: u32,
    home: NodeId,
    name: String,
    resources: Resources,
    ports: Vec<u16>,
    state: TaskState,
    kill_grace: Duration,
    /// Why the node itself is killing it (given to the status that ends it).
    kill_reason: Option<String>,
}

#[derive(Debug)]
struct Outgoing {
    home: NodeId,
    update: StatusUpdate,
    name: String,
    resources: Resources,
    next_retry: Instant,
    backoff: Duration,
    attempts: u32,
}

/// The auctioneer of one node. See the module documentation.
#[derive(Debug)]
pub struct Auctioneer {
    me: NodeId,
    config: Config,
    attrs: Attributes,
    capacity: Resources,
    ports: PortSet,
    used: Resources,
    version: u64,
    draining: bool,
    /// Why the node takes no new tasks for now, as its shell measured it
    /// (its data dir's disk is full, read-only): see
    /// [`Auctioneer::set_unavailable`].
    unavailable: Option<String>,
    book: Vec<PendingBid>,
    /// Earliest `hold_until` in the book, refreshed after every input.
    hold_min: Option<Instant>,
    window_closes: Option<Instant>,
    arrivals: u64,
    leases: crate::FixedHashMap<LeaseId, Lease>,
    expiries: BTreeSet<(Instant, LeaseId)>,
    next_lease: u64,
    running: crate::FixedHashMap<TaskId, Allocation>,
    confirmed: crate::FixedHashMap<LeaseId, (NodeId, TaskId)>,
    confirmed_order: VecDeque<LeaseId>,
    status_seq: u64,
    outbox: crate::FixedHashMap<TaskId, Outgoing>,
    retries: BTreeSet<(Instant, TaskId)>,
    /// Answers by (bidder node, task, bid id): several bidders (frameworks)
    /// on one node number their bids independently, and their task ids differ.
    answered: crate::FixedHashMap<BidKey, PeerMessage>,
    answered_order: VecDeque<BidKey>,
    shares: FairShares,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Auctioneer {
    /// An auctioneer for node `me` with the given capacity, ports and attributes.
    ///
    /// `capacity.ports` is ignored: the port count is that of `ports`.
    pub fn new(
        me: NodeId,
        capacity: Resources,
        ports: PortSet,
        attrs: Attributes,
        config: Config,
    ) -> Self {
        let capacity = Resources {
            ports: ports.count(),
            ..capacity
        };
        Auctioneer {
            me,
            config,
            attrs,
            capacity,
            ports,
            used: Resources::ZERO,
            version: 1,
            draining: false,
            unavailable: None,
            book: Vec::new(),
            hold_min: None,
            window_closes: None,
            arrivals: 0,
            leases: crate::FixedHashMap::default(),
            expiries: BTreeSet::new(),
            next_lease: 1,
            running: crate::FixedHashMap::default(),
            confirmed: crate::FixedHashMap::default(),
            confirmed_order: VecDeque::new(),
            status_seq: 0,
            outbox: crate::FixedHashMap::default(),
            retries: BTreeSet::new(),
            answered: crate::FixedHashMap::default(),
            answered_order: VecDeque::new(),
            shares: FairShares::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.me
    }

    /// What the node has in all.
    pub fn capacity(&self) -> Resources {
        self.capacity
    }

    /// What is leased or allocated.
    pub fn used(&self) -> Resources {
        self.used
    }

    /// What is free: capacity minus leases and allocations; nothing at all
    /// while the node is [unavailable](Auctioneer::set_unavailable) or
    /// holds more than its capacity in any dimension (see
    /// [`Auctioneer::overcommitted`]).
    pub fn free(&self) -> Resources {
        if self.unavailable.is_some() || !self.used.fits_in(&self.capacity) {
            return Resources::ZERO;
        }
        self.capacity.saturating_sub(&self.used)
    }

    /// By how much what the node holds exceeds its capacity, when it does
    /// in any dimension: tasks re-adopted after a restart with a smaller
    /// capacity ([`Auctioneer::adopt`]), or a capacity lowered under its
    /// allocations ([`Auctioneer::set_capacity`]). The node awards nothing
    /// until enough of them end.
    pub fn overcommitted(&self) -> Option<Resources> {
        let over = self.used.saturating_sub(&self.capacity);
        (over != Resources::ZERO).then_some(over)
    }

    /// Why the node takes no new tasks for now, if it does not.
    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// Stops (`Some(why)`) or resumes (`None`) taking new tasks, for a
    /// reason the node's shell measured and the protocol cannot see (its
    /// data dir's disk is full or read-only: a task launched now would
    /// fail). While unavailable the node advertises nothing free, rejects
    /// every bid at once (held bids too, when it becomes unavailable) and
    /// refuses confirms of the leases it granted before (the bidder bids
    /// elsewhere); the tasks it runs are not touched and their statuses
    /// flow as before. Each change bumps the ledger version, so views take
    /// the new free vector.
    pub fn set_unavailable(&mut self, now: Instant, why: Option<String>) {
        let changed = self.unavailable.is_some() != why.is_some();
        self.unavailable = why;
        if !changed {
            // At most the reason changed: the ledger did not.
            return;
        }
        self.bump();
        if self.unavailable.is_some() {
            self.window_closes = None;
            for p in std::mem::take(&mut self.book) {
                let reason = self.no_room_reason(&p.bid.spec.resources);
                self.reject(p.from, &p.bid, reason);
            }
        } else {
            self.decide(now);
        }
        self.refresh_hold_min();
    }

    /// The ledger version; it grows on every change of `free`.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Raises the ledger version to at least `floor`. A restarted node calls
    /// this with something larger than any version it published before (for
    /// example its start time in milliseconds), because views ignore free
    /// vectors whose version is not newer than the one they hold.
    pub fn raise_version(&mut self, floor: u64) {
        if floor > self.version {
            self.version = floor;
            self.events.push_back(Event::LedgerChanged {
                free: self.free(),
                version: self.version,
            });
        }
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Leases outstanding.
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// Tasks holding an allocation here.
    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// The home node of a task holding an allocation here.
    pub fn home_of(&self, task_id: &TaskId) -> Option<&NodeId> {
        self.running.get(task_id).map(|a| &a.home)
    }

    /// Status updates not yet acknowledged.
    pub fn unacked_count(&self) -> usize {
        self.outbox.len()
    }

    /// What each framework holds here (leases and allocations), for gossip.
    pub fn allocations(&self) -> BTreeMap<FrameworkId, FrameworkUsage> {
        let mut out: BTreeMap<FrameworkId, FrameworkUsage> = BTreeMap::new();
        let mut add = |fw: &FrameworkId, weight: u32, r: &Resources| {
            let e = out.entry(fw.clone()).or_insert(FrameworkUsage {
                resources: Resources::ZERO,
                weight,
            });
            e.resources = e.resources.saturating_add(r);
        };
        for l in self.leases.values() {
            add(&l.framework, l.weight, &l.spec.resources);
        }
        for a in self.running.values() {
            add(&a.framework, a.weight, &a.resources);
        }
        out
    }

    /// The tasks this node runs, for `ListTasks`.
    pub fn task_rows(&self) -> Vec<TaskRow> {
        let mut rows: Vec<TaskRow> = self
            .running
            .iter()
            .map(|(id, a)| TaskRow {
                task_id: id.clone(),
                name: a.name.clone(),
                framework: a.framework.clone(),
                state: a.state,
                node: Some(self.me.clone()),
                exit_code: None,
                resources: a.resources,
                reason: None,
            })
            .chain(
                self.outbox
                    .iter()
                    .filter(|(id, _)| !self.running.contains_key(*id))
                    .map(|(id, o)| TaskRow {
                        task_id: id.clone(),
                        name: o.name.clone(),
                        framework: o.update.framework.clone(),
                        state: o.update.status.state,
                        node: Some(self.me.clone()),
                        exit_code: o.update.status.exit_code,
                        resources: o.resources,
                        reason: o.update.status.reason.clone(),
                    }),
            )
            .collect();
        rows.sort_by(|x, y| x.task_id.cmp(&y.task_id));
        rows
    }

    /// Replaces the fair shares used to rank bids (from gossip).
    pub fn set_shares(&mut self, shares: FairShares) {
        self.shares = shares;
    }

    /// Stops awarding: every later bid is rejected as draining.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Bids held waiting for room.
    pub fn held_count(&self) -> usize {
        self.book.len()
    }

    /// The next instant `handle_timeout` must be called at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.window_closes,
            self.hold_min,
            self.expiries.first().map(|(t, _)| *t),
            self.retries.first().map(|(t, _)| *t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the shell.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Handles a message from node `from`.
    ///
    /// # Errors
    /// [`Error`] for messages an auctioneer does not take or that name an
    /// unknown task; nothing changes then.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: PeerMessage,
    ) -> Result<(), Error> {
        let result = self.dispatch(now, from, msg);
        self.refresh_hold_min();
        result
    }

    fn refresh_hold_min(&mut self) {
        self.hold_min = self.book.iter().map(|p| p.hold_until).min();
    }

    fn dispatch(&mut self, now: Instant, from: NodeId, msg: PeerMessage) -> Result<(), Error> {
        match msg {
            PeerMessage::Bid(bid) => {
                self.on_bid(now, from, bid);
                Ok(())
            }
            PeerMessage::Confirm(c) => {
                self.on_confirm(now, from, c);
                Ok(())
            }
            PeerMessage::Release(r) => {
                self.on_release(now, from, r);
                Ok(())
            }
            PeerMessage::Withdraw(w) => {
                self.on_withdraw(now, from, w);
                Ok(())
            }
            PeerMessage::StatusAck(ack) => {
                self.on_status_ack(&from, ack);
                Ok(())
            }
            PeerMessage::Kill(k) => self.on_kill(k),
            other => Err(Error::Unexpected(other.kind())),
        }
    }

    /// Closes a due window, expires leases and held bids, and re-sends
    /// status updates.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.window_closes.is_some_and(|t| t <= now) {
            self.window_closes = None;
            self.close_window(now);
        }
        if self.book.iter().any(|p| p.hold_until <= now) {
            let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.book)
                .into_iter()
                .partition(|p| p.hold_until <= now);
            self.book = kept;
            for p in expired {
                let reason = self.no_room_reason(&p.bid.spec.resources);
                self.reject(p.from, &p.bid, reason);
            }
        }
        while let Some(&(t, lease_id)) = self.expiries.first() {
            if t > now {
                break;
            }
            self.expiries.pop_first();
            if let Some(lease) = self.leases.remove(&lease_id) {
                self.stats.leases_expired += 1;
                self.give_back(now, &lease.spec.resources, lease.ports);
            }
        }
        // A re-sent update carries the free vector of now.
        let (free, version) = (self.free(), self.version);
        while let Some((t, task_id)) = self.retries.first().cloned() {
            if t > now {
                break;
            }
            self.retries.pop_first();
            let Some(out) = self.outbox.get_mut(&task_id) else {
                continue;
            };
            out.attempts += 1;
            if out.attempts > self.config.status_max_attempts {
                let home = out.home.clone();
                self.outbox.remove(&task_id);
                self.events
                    .push_back(Event::StatusUndeliverable { task_id, home });
                continue;
            }
            out.backoff = (out.backoff * 2).min(self.config.status_retry_max);
            out.next_retry = now + out.backoff;
            (out.update.free, out.update.free_version) = (free, version);
            self.retries.insert((out.next_retry, task_id));
            self.transmits.push_back(Transmit {
                to: out.home.clone(),
                msg: PeerMessage::Status(out.update.clone()),
            });
        }
        self.refresh_hold_min();
    }

    /// Changes the node's capacity (e.g. the host's memory changed). Existing
    /// leases and allocations are kept even if they no longer fit; new awards
    /// wait until they do.
    pub fn set_capacity(&mut self, capacity: Resources) {
        self.capacity = Resources {
            ports: self.capacity.ports,
            ..capacity
        };
        self.bump();
    }

    // ------------------------------------------------------------ internals

    fn bump(&mut self) {
        self.version += 1;
        self.events.push_back(Event::LedgerChanged {
            free: self.free(),
            version: self.version,
        });
    }

    fn charge(&mut self, r: &Resources) {
        self.used = self.used.saturating_add(r);
        self.bump();
    }

    /// Frees resources and gives held bids a chance at them.
    fn give_back(&mut self, now: Instant, r: &Resources, ports: Vec<u16>) {
        self.used = self.used.saturating_sub(r);
        for p in ports {
            self.ports.insert(p);
        }
        self.bump();
        self.decide(now);
    }
}
