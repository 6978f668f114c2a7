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
    /// Adopting a task that does not fit (recovery after restart).
    #[error("task {0} does not fit in what is free")]
    DoesNotFit(TaskId),
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
    spec: TaskSpec,
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

    /// What is free: capacity minus leases and allocations.
    pub fn free(&self) -> Resources {
        self.capacity.saturating_sub(&self.used)
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

    /// Reports a task's new state from the executor (running, or how it ended).
    /// Terminal states free the task's resources. The update is sent to the
    /// task's home node and re-sent until acknowledged.
    ///
    /// # Errors
    /// [`Error::UnknownTask`] if the task holds no allocation here;
    /// [`Error::Transition`] if the life cycle forbids the change.
    pub fn task_status(&mut self, now: Instant, status: TaskStatus) -> Result<(), Error> {
        let task_id = status.task_id.clone();
        let alloc = self
            .running
            .get_mut(&task_id)
            .ok_or_else(|| Error::UnknownTask(task_id.clone()))?;
        alloc.state = alloc.state.transition(status.state)?;
        let (home, framework, name, resources) = (
            alloc.home.clone(),
            alloc.framework.clone(),
            alloc.name.clone(),
            alloc.resources,
        );
        if status.state.is_terminal()
            && let Some(a) = self.running.remove(&task_id)
        {
            self.give_back(now, &a.resources, a.ports);
        }
        self.send_status(now, home, framework, name, resources, status);
        self.refresh_hold_min();
        Ok(())
    }

    /// Re-adopts a task that was running before the node restarted (recovery).
    ///
    /// # Errors
    /// [`Error::DoesNotFit`] if its resources are no longer free.
    #[allow(clippy::too_many_arguments)]
    pub fn adopt(
        &mut self,
        task_id: TaskId,
        framework: FrameworkId,
        weight: u32,
        home: NodeId,
        spec: &TaskSpec,
        ports: Vec<u16>,
        state: TaskState,
    ) -> Result<(), Error> {
        if !spec.resources.fits_in(&self.free()) {
            return Err(Error::DoesNotFit(task_id));
        }
        for p in &ports {
            // Ports outside the configured set are kept as they are.
            let _ = self.ports.take_specific(*p);
        }
        self.charge(&spec.resources);
        self.running.insert(
            task_id,
            Allocation {
                framework,
                weight,
                home,
                name: spec.name.clone(),
                resources: spec.resources,
                ports,
                state,
                kill_grace: Duration::from_millis(u64::from(spec.kill_grace_ms)),
            },
        );
        Ok(())
    }

    /// Reports a task that ended while the node was down (recovery): its
    /// status is sent to its home node like any other.
    pub fn report_ended(
        &mut self,
        now: Instant,
        home: NodeId,
        framework: FrameworkId,
        spec: &TaskSpec,
        status: TaskStatus,
    ) {
        self.send_status(
            now,
            home,
            framework,
            spec.name.clone(),
            spec.resources,
            status,
        );
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

    /// Awards at once when the whole book fits; otherwise makes sure a
    /// window is open to rank it.
    fn decide(&mut self, now: Instant) {
        if self.book.is_empty() || self.window_closes.is_some() {
            return;
        }
        let demand = self.book.iter().try_fold(Resources::ZERO, |acc, p| {
            acc.checked_add(&p.bid.spec.resources)
        });
        let uncontended = demand.is_some_and(|d| d.fits_in(&self.free()));
        if uncontended {
            let book = std::mem::take(&mut self.book);
            for p in book {
                self.award(now, p);
            }
        } else if self.config.window.is_zero() {
            self.close_window(now);
        } else {
            self.window_closes = Some(now + self.config.window);
        }
    }

    fn no_room_reason(&self, asked: &Resources) -> RejectReason {
        if asked.fits_in(&self.free()) {
            RejectReason::Outbid
        } else {
            RejectReason::Insufficient(asked.shortfall(&self.free()))
        }
    }

    fn remember(&mut self, from: NodeId, bid: &Bid, answer: PeerMessage) {
        self.remember_key((from, bid.task_id.clone(), bid.bid_id), answer);
    }

    fn remember_key(&mut self, key: BidKey, answer: PeerMessage) {
        if self.answered.insert(key.clone(), answer).is_none() {
            self.answered_order.push_back(key);
        }
        while self.answered_order.len() > self.config.answer_cache {
            if let Some(old) = self.answered_order.pop_front() {
                self.answered.remove(&old);
            }
        }
    }

    fn reject(&mut self, from: NodeId, bid: &Bid, reason: RejectReason) {
        self.stats.rejects += 1;
        let msg = PeerMessage::Reject(Reject {
            bid_id: bid.bid_id,
            task_id: bid.task_id.clone(),
            reason,
            free: self.free(),
            free_version: self.version,
        });
        self.remember(from.clone(), bid, msg.clone());
        self.transmits.push_back(Transmit { to: from, msg });
    }

    fn admits(&self, constraints: &[Constraint]) -> bool {
        // unique and spread depend on the bidder's placements; the node checks
        // what it can know alone.
        let nothing = Placed::default();
        constraints.iter().all(|c| match c {
            Constraint::Unique { .. } | Constraint::Spread { .. } => {
                self.attrs.get(c.key()).is_some()
            }
            _ => c.admits(&self.attrs, &nothing),
        })
    }

    fn on_bid(&mut self, now: Instant, from: NodeId, bid: Bid) {
        let key = (from.clone(), bid.task_id.clone(), bid.bid_id);
        if let Some(answer) = self.answered.get(&key) {
            let msg = answer.clone();
            self.transmits.push_back(Transmit { to: from, msg });
            return;
        }
        if self
            .book
            .iter()
            .any(|p| p.from == from && p.bid.bid_id == bid.bid_id && p.bid.task_id == bid.task_id)
        {
            return; // a duplicate of a bid still being decided
        }
        self.stats.bids += 1;
        if let Err(e) = bid.spec.validate() {
            return self.reject(from, &bid, RejectReason::InvalidSpec(e.to_string()));
        }
        if self.draining {
            return self.reject(from, &bid, RejectReason::Draining);
        }
        if !self.admits(&bid.spec.constraints) {
            return self.reject(from, &bid, RejectReason::Constraints);
        }
        let short = bid.spec.resources.shortfall(&self.capacity);
        if !short.is_empty() {
            return self.reject(from, &bid, RejectReason::Insufficient(short));
        }
        if self.book.len() >= self.config.max_pending_bids {
            return self.reject(from, &bid, RejectReason::Busy);
        }
        self.arrivals += 1;
        // Every bid stays at least until the window it joins closes.
        let wait = Duration::from_millis(u64::from(bid.wait_ms))
            .min(self.config.max_hold)
            .max(self.config.window);
        self.book.push(PendingBid {
            from,
            bid,
            arrival: self.arrivals,
            hold_until: now + wait,
        });
        self.decide(now);
    }

    fn award(&mut self, now: Instant, p: PendingBid) {
        let Some(ports) = self.ports.take(p.bid.spec.resources.ports) else {
            // cannot happen: ports are counted in `free`; reject defensively
            return self.reject(p.from, &p.bid, RejectReason::Insufficient(vec![]));
        };
        let lease_id = LeaseId(self.next_lease);
        self.next_lease += 1;
        let expires = now + self.config.lease_ttl;
        self.charge(&p.bid.spec.resources);
        self.stats.awards += 1;
        let msg = PeerMessage::Award(Award {
            bid_id: p.bid.bid_id,
            task_id: p.bid.task_id.clone(),
            lease_id,
            lease_ms: millis_u32(self.config.lease_ttl),
            ports: ports.clone(),
        });
        self.remember(p.from.clone(), &p.bid, msg.clone());
        self.transmits.push_back(Transmit {
            to: p.from.clone(),
            msg,
        });
        self.expiries.insert((expires, lease_id));
        self.leases.insert(
            lease_id,
            Lease {
                from: p.from,
                bid_id: p.bid.bid_id,
                task_id: p.bid.task_id,
                framework: p.bid.framework,
                weight: p.bid.weight.max(1),
                spec: *p.bid.spec,
                ports,
                expires,
            },
        );
    }

    /// Ranks the bids on hand and awards greedily what fits.
    fn close_window(&mut self, now: Instant) {
        self.stats.contended_windows += 1;
        let mut shares = self.shares.clone();
        // One lane per framework, best bid first. A framework's share is the
        // same for all its bids, so (priority, price, arrival) orders a lane,
        // and the best bid overall is the best of the lanes' heads under the
        // full key. Only the lane just charged changes its share: each award
        // costs one pass over the lanes, not over the whole book.
        let mut by_framework: BTreeMap<FrameworkId, Vec<PendingBid>> = BTreeMap::new();
        for p in std::mem::take(&mut self.book) {
            by_framework
                .entry(p.bid.framework.clone())
                .or_default()
                .push(p);
        }
        let mut lanes: Vec<(f64, VecDeque<PendingBid>)> = by_framework
            .into_iter()
            .map(|(fw, mut bids)| {
                bids.sort_by(|x, y| {
                    y.bid
                        .spec
                        .priority
                        .cmp(&x.bid.spec.priority)
                        .then_with(|| y.bid.price.cmp(&x.bid.price))
                        .then_with(|| x.arrival.cmp(&y.arrival))
                });
                let weight = bids.first().map_or(1, |p| p.bid.weight);
                (shares.share(&fw, weight), VecDeque::from(bids))
            })
            .collect();
        loop {
            let best = lanes
                .iter()
                .enumerate()
                .filter_map(|(i, (share, lane))| lane.front().map(|p| (i, *share, p)))
                .min_by(|(_, sx, x), (_, sy, y)| {
                    y.bid
                        .spec
                        .priority
                        .cmp(&x.bid.spec.priority)
                        .then_with(|| sx.total_cmp(sy))
                        .then_with(|| y.bid.price.cmp(&x.bid.price))
                        .then_with(|| x.arrival.cmp(&y.arrival))
                })
                .map(|(i, _, _)| i);
            let Some(i) = best else { break };
            let Some(p) = lanes[i].1.pop_front() else {
                break;
            };
            if p.bid.spec.resources.fits_in(&self.free()) {
                shares.charge(&p.bid.framework, p.bid.weight, &p.bid.spec.resources);
                lanes[i].0 = shares.share(&p.bid.framework, p.bid.weight);
                self.award(now, p);
            } else if p.hold_until > now {
                self.book.push(p);
            } else {
                let reason = self.no_room_reason(&p.bid.spec.resources);
                self.reject(p.from.clone(), &p.bid, reason);
            }
        }
        // held bids keep their arrival order
        self.book.sort_by_key(|p| p.arrival);
    }

    /// A withdrawal cancels the bid whatever state it is in, so the bidder
    /// never has to release an award it no longer wants:
    /// - held in the book: answered with a `Withdrawn` reject;
    /// - awarded and not yet confirmed: the lease is given back at once (the
    ///   award already answered the bid);
    /// - not seen yet (the withdrawal overtook its bid): remembered as a
    ///   `Withdrawn` reject in the answer cache, which is what the bid gets
    ///   when it arrives;
    /// - rejected, or confirmed: nothing to do.
    fn on_withdraw(&mut self, now: Instant, from: NodeId, w: Withdraw) {
        if let Some(i) = self
            .book
            .iter()
            .position(|p| p.from == from && p.bid.bid_id == w.bid_id && p.bid.task_id == w.task_id)
        {
            let p = self.book.remove(i);
            self.stats.withdrawn += 1;
            self.reject(p.from, &p.bid, RejectReason::Withdrawn);
            return;
        }
        let key = (from, w.task_id, w.bid_id);
        let lease_id = self
            .leases
            .iter()
            .find(|(_, l)| l.from == key.0 && l.bid_id == key.2 && l.task_id == key.1)
            .map(|(id, _)| *id);
        if let Some(lease_id) = lease_id
            && let Some(lease) = self.leases.remove(&lease_id)
        {
            self.expiries.remove(&(lease.expires, lease_id));
            self.stats.leases_withdrawn += 1;
            // The award stays the bid's one answer: a duplicate of the bid
            // gets it again, and the bidder, which no longer knows the bid,
            // releases it (a no-op here).
            self.give_back(now, &lease.spec.resources, lease.ports);
            return;
        }
        if !self.answered.contains_key(&key) {
            let answer = self.withdrawn_answer(&key);
            self.remember_key(key, answer);
        }
    }

    fn withdrawn_answer(&self, key: &BidKey) -> PeerMessage {
        PeerMessage::Reject(Reject {
            bid_id: key.2,
            task_id: key.1.clone(),
            reason: RejectReason::Withdrawn,
            free: self.free(),
            free_version: self.version,
        })
    }

    fn on_confirm(&mut self, now: Instant, from: NodeId, c: Confirm) {
        if let Some((owner, task)) = self.confirmed.get(&c.lease_id)
            && *owner == from
            && *task == c.task_id
        {
            self.transmits.push_back(Transmit {
                to: from,
                msg: PeerMessage::Confirmed(Confirmed {
                    lease_id: c.lease_id,
                    task_id: c.task_id,
                }),
            });
            return;
        }
        let valid = self
            .leases
            .get(&c.lease_id)
            .is_some_and(|l| l.from == from && l.task_id == c.task_id && now < l.expires);
        if !valid {
            self.transmits.push_back(Transmit {
                to: from,
                msg: PeerMessage::ConfirmRefused(ConfirmRefused {
                    lease_id: c.lease_id,
                    task_id: c.task_id,
                    reason: "the lease expired or is unknown; bid again".into(),
                }),
            });
            return;
        }
        let Some(lease) = self.leases.remove(&c.lease_id) else {
            return;
        };
        self.expiries.remove(&(lease.expires, c.lease_id));
        self.stats.launches += 1;
        self.confirmed
            .insert(c.lease_id, (from.clone(), lease.task_id.clone()));
        self.confirmed_order.push_back(c.lease_id);
        while self.confirmed_order.len() > self.config.answer_cache {
            if let Some(old) = self.confirmed_order.pop_front() {
                self.confirmed.remove(&old);
            }
        }
        self.running.insert(
            lease.task_id.clone(),
            Allocation {
                framework: lease.framework.clone(),
                weight: lease.weight,
                home: from.clone(),
                name: lease.spec.name.clone(),
                resources: lease.spec.resources,
                ports: lease.ports.clone(),
                state: TaskState::Starting,
                kill_grace: Duration::from_millis(u64::from(lease.spec.kill_grace_ms)),
            },
        );
        self.transmits.push_back(Transmit {
            to: from.clone(),
            msg: PeerMessage::Confirmed(Confirmed {
                lease_id: c.lease_id,
                task_id: lease.task_id.clone(),
            }),
        });
        self.events.push_back(Event::Launch {
            task_id: lease.task_id,
            framework: lease.framework,
            home: from,
            spec: lease.spec,
            ports: lease.ports,
        });
    }

    fn on_release(&mut self, now: Instant, from: NodeId, r: Release) {
        let owned = self
            .leases
            .get(&r.lease_id)
            .is_some_and(|l| l.from == from && l.task_id == r.task_id);
        if owned && let Some(lease) = self.leases.remove(&r.lease_id) {
            self.expiries.remove(&(lease.expires, r.lease_id));
            self.stats.leases_released += 1;
            self.give_back(now, &lease.spec.resources, lease.ports);
        }
    }

    fn on_status_ack(&mut self, from: &NodeId, ack: StatusAck) {
        let done = self
            .outbox
            .get(&ack.task_id)
            .is_some_and(|o| o.home == *from && o.update.seq <= ack.seq);
        if done && let Some(o) = self.outbox.remove(&ack.task_id) {
            self.retries.remove(&(o.next_retry, ack.task_id));
        }
    }

    fn on_kill(&mut self, k: Kill) -> Result<(), Error> {
        let alloc = self
            .running
            .get(&k.task_id)
            .ok_or_else(|| Error::UnknownTask(k.task_id.clone()))?;
        self.events.push_back(Event::Kill {
            task_id: k.task_id,
            grace: alloc.kill_grace,
        });
        Ok(())
    }

    fn send_status(
        &mut self,
        now: Instant,
        home: NodeId,
        framework: FrameworkId,
        name: String,
        resources: Resources,
        status: TaskStatus,
    ) {
        self.status_seq += 1;
        let task_id = status.task_id.clone();
        let update = StatusUpdate {
            seq: self.status_seq,
            framework,
            status,
            free: self.free(),
            free_version: self.version,
        };
        if let Some(old) = self.outbox.remove(&task_id) {
            self.retries.remove(&(old.next_retry, task_id.clone()));
        }
        let next_retry = now + self.config.status_retry;
        self.retries.insert((next_retry, task_id.clone()));
        self.transmits.push_back(Transmit {
            to: home.clone(),
            msg: PeerMessage::Status(update.clone()),
        });
        self.outbox.insert(
            task_id,
            Outgoing {
                home,
                update,
                name,
                resources,
                next_retry,
                backoff: self.config.status_retry,
                attempts: 0,
            },
        );
    }
}
