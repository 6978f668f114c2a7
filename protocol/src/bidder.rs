//! The bidder: places one framework's tasks through auctions on other nodes.
//!
//! A bidder lives on its framework's home node. For each task it:
//!
//! 1. picks candidates from the [`ClusterView`]: nodes that are alive, have
//!    the task's resources free and satisfy its constraints (examining at most
//!    `scan_limit` nodes drawn at random in a large cluster), ranks them by a
//!    score (best fit or spread), and chooses `candidates` of them at random
//!    among the best `best_of` (power-of-d choices, as in Sparrow);
//! 2. sends each a [`Bid`] that may wait at the node for up to `bid_wait`
//!    when the node is full (nodes whose free vector does not fit the task
//!    are still candidates when no node has room: the bid queues there and
//!    the node's fair ranking decides who gets the next free resources);
//!    every bid is answered by an award or a reject, or times out after
//!    `bid_timeout`;
//! 3. confirms the first award (re-sending the confirm until the node answers),
//!    withdraws the task's other bids (a node gives back an award it made
//!    for a withdrawn bid by itself) and releases any other award, such as
//!    one for a bid that had already timed out;
//! 4. when every bid of an attempt lost, retries after an exponential backoff
//!    with jitter, until the task's placement timeout, then gives up with a
//!    reason a person can act on ("no node has 64 GiB mem free; largest free
//!    is 31 GiB on n17").
//!
//! Status updates from the node running a task come back through
//! [`Bidder::handle_message`]; each is acknowledged and, when it moves the task
//! forward, reported as an [`Event::Status`]. When the failure detector
//! declares a node dead ([`Bidder::node_down`]), every task placed there is
//! reported lost; a task later heard of from a node that no longer owns it is
//! killed there.
//!
//! The offer mode ([`Bidder::submit_on`]) bids on one named node only and
//! reports the outcome without retrying elsewhere.

use crate::constraint::{Constraint, Placed, admits_all};
use crate::ids::{BidId, FrameworkId, LeaseId, NodeId, TaskId};
use crate::resources::{Dimension, Resources};
use crate::task::{SpecError, TaskSpec, TaskState, TaskStatus};
use crate::time::{Instant, millis_u32};
use crate::view::{ClusterView, NodeInfo};
use crate::wire::{
    Bid, Confirm, Kill, PeerMessage, RejectReason, Release, StatusAck, StatusUpdate, TaskRow,
    Withdraw,
};
use rand::{Rng, RngExt};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

pub use crate::auctioneer::Transmit;

/// How candidates are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Score {
    /// Prefer the node the task fills most tightly (packs; leaves big holes free).
    BestFit,
    /// Prefer the node with the most free (spreads load).
    Spread,
}

/// Tunables of a bidder.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bids sent per attempt (d in power-of-d choices).
    pub candidates: usize,
    /// Candidates are drawn at random among this many best-scored nodes.
    pub best_of: usize,
    /// At most this many nodes are examined per attempt.
    pub scan_limit: usize,
    /// The ranking.
    pub score: Score,
    /// How long a bid may wait at a full node for room.
    pub bid_wait: Duration,
    /// A bid with no answer after this long counts as lost (keep it above
    /// `bid_wait` plus a round trip).
    pub bid_timeout: Duration,
    /// A confirm with no answer after this long is sent again.
    pub confirm_timeout: Duration,
    /// After this many unanswered confirms the task is reported lost.
    pub confirm_attempts: u32,
    /// First retry delay after an attempt that won nothing.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How long a task may wait for a place (unless its spec says otherwise).
    pub placement_timeout: Duration,
    /// Delay between re-sends of a kill until the task ends.
    pub kill_retry: Duration,
    /// Most tasks not yet ended; more are refused at submit.
    pub max_active_tasks: usize,
    /// Ended tasks kept for listing and reconciliation.
    pub keep_ended: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            candidates: 2,
            best_of: 4,
            scan_limit: 64,
            score: Score::BestFit,
            bid_wait: Duration::from_millis(500),
            // bid_wait plus room for the answer; see the auctioneer's lease_ttl.
            bid_timeout: Duration::from_secs(1),
            confirm_timeout: Duration::from_millis(200),
            confirm_attempts: 20,
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_secs(2),
            placement_timeout: Duration::from_secs(60),
            kill_retry: Duration::from_secs(2),
            max_active_tasks: 100_000,
            keep_ended: 10_000,
        }
    }
}

/// What a bidder reports.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A task's state moved forward; tell the framework.
    Status {
        /// The task's job name.
        name: String,
        /// The new status.
        status: TaskStatus,
    },
    /// A task's lease was confirmed on `node`.
    Placed {
        /// The task.
        task_id: TaskId,
        /// Where.
        node: NodeId,
        /// From submit to confirmation.
        latency: Duration,
        /// Attempts it took (1 = first try).
        attempts: u32,
    },
}

/// Why a command was refused. State is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The spec broke a rule.
    #[error("invalid task: {0}")]
    Spec(#[from] SpecError),
    /// Too many tasks are in flight.
    #[error("{0} tasks are already waiting or running; wait for some to end")]
    TooManyTasks(usize),
    /// No such task.
    #[error("no task {0}")]
    UnknownTask(TaskId),
    /// The task has already ended.
    #[error("task {0} has already ended")]
    AlreadyEnded(TaskId),
    /// A bidder does not handle this kind of message.
    #[error("a bidder does not handle {0} messages")]
    Unexpected(&'static str),
}

/// Counters: every bid sent ends exactly once as awarded, rejected or timed out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bids sent.
    pub bids_sent: u64,
    /// Bids answered with an award.
    pub bids_awarded: u64,
    /// Bids answered with a reject.
    pub bids_rejected: u64,
    /// Bids that timed out (or whose node died).
    pub bids_timed_out: u64,
    /// Answers that came after their bid had ended (ignored or released).
    pub late_answers: u64,
    /// Awards released because the task was already placed or ended (an
    /// award for a bid that was withdrawn is given back by its node and is
    /// not counted here).
    pub releases: u64,
    /// Tasks placed.
    pub placed: u64,
    /// Tasks given up on.
    pub gave_up: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Waiting,
    Bidding {
        open: BTreeSet<BidId>,
    },
    Confirming {
        node: NodeId,
        lease: LeaseId,
        attempts: u32,
    },
    Placed {
        node: NodeId,
    },
    Ended,
}

#[derive(Debug)]
struct Task {
    spec: TaskSpec,
    state: TaskState,
    phase: Phase,
    submitted: Instant,
    deadline: Instant,
    next_try: Instant,
    attempts: u32,
    pinned: Option<NodeId>,
    last_reject: Option<String>,
    kill_requested: bool,
    node: Option<NodeId>,
    exit_code: Option<i32>,
    reason: Option<String>,
    /// When its pending `ConfirmResend` timer fires, if one is set.
    confirm_timer: Option<Instant>,
}

#[derive(Debug)]
struct OutBid {
    task_id: TaskId,
    node: NodeId,
    /// A `Withdraw` was sent: the node gives back an award it made for this
    /// bid by itself, so no `Release` is needed.
    withdrawn: bool,
    /// When its `BidTimeout` timer fires (removed once the bid is answered).
    expires: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Retry(TaskId),
    BidTimeout(BidId),
    ConfirmResend(TaskId),
    KillResend(TaskId),
}

/// The bidder of one framework. See the module documentation.
#[derive(Debug)]
pub struct Bidder<R> {
    home: NodeId,
    framework: FrameworkId,
    weight: u32,
    config: Config,
    rng: R,
    next_seq: u64,
    next_bid: u64,
    tasks: crate::FixedHashMap<TaskId, Task>,
    active: usize,
    ended: VecDeque<TaskId>,
    bids: BTreeMap<BidId, OutBid>,
    timers: BTreeSet<(Instant, Timer)>,
    /// job name → node → open bids and held placements (for unique/spread).
    job_nodes: crate::FixedHashMap<String, crate::FixedHashMap<NodeId, u32>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl<R: Rng> Bidder<R> {
    /// A bidder for `framework` (of DRF `weight`) on node `home`, drawing its
    /// random choices from `rng` (seed it for repeatable runs).
    pub fn new(home: NodeId, framework: FrameworkId, weight: u32, config: Config, rng: R) -> Self {
        Bidder {
            home,
            framework,
            weight: weight.max(1),
            config,
            rng,
            next_seq: 1,
            next_bid: 1,
            tasks: crate::FixedHashMap::default(),
            active: 0,
            ended: VecDeque::new(),
            bids: BTreeMap::new(),
            timers: BTreeSet::new(),
            job_nodes: crate::FixedHashMap::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The node this bidder lives on.
    pub fn home(&self) -> &NodeId {
        &self.home
    }

    /// The framework this bidder places tasks for.
    pub fn framework(&self) -> &FrameworkId {
        &self.framework
    }

    /// The framework's DRF weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Bids sent and not yet answered or timed out.
    pub fn outstanding_bids(&self) -> usize {
        self.bids.len()
    }

    /// Tasks not yet ended.
    pub fn active_tasks(&self) -> usize {
        self.active
    }

    /// Submits a task for placement anywhere it fits.
    ///
    /// # Errors
    /// [`Error::Spec`] for an invalid spec, [`Error::TooManyTasks`] when the
    /// bidder already tracks `max_active_tasks` unfinished tasks.
    pub fn submit(&mut self, now: Instant, spec: TaskSpec) -> Result<TaskId, Error> {
        self.add_task(now, spec, None)
    }

    /// Offer mode: bids for a task on one named node only. A reject or a
    /// timeout fails the task with the node's reason; nothing is retried
    /// elsewhere.
    ///
    /// # Errors
    /// As [`Bidder::submit`].
    pub fn submit_on(
        &mut self,
        now: Instant,
        spec: TaskSpec,
        node: NodeId,
    ) -> Result<TaskId, Error> {
        self.add_task(now, spec, Some(node))
    }

    fn add_task(
        &mut self,
        now: Instant,
        spec: TaskSpec,
        pinned: Option<NodeId>,
    ) -> Result<TaskId, Error> {
        spec.validate()?;
        if self.active >= self.config.max_active_tasks {
            return Err(Error::TooManyTasks(self.active));
        }
        let task_id = TaskId::for_framework(&self.framework, self.next_seq);
        self.next_seq += 1;
        let timeout = if spec.placement_timeout_ms > 0 {
            Duration::from_millis(u64::from(spec.placement_timeout_ms))
        } else {
            self.config.placement_timeout
        };
        self.tasks.insert(
            task_id.clone(),
            Task {
                spec,
                state: TaskState::Staging,
                phase: Phase::Waiting,
                submitted: now,
                deadline: now + timeout,
                next_try: now,
                attempts: 0,
                pinned,
                last_reject: None,
                kill_requested: false,
                node: None,
                exit_code: None,
                reason: None,
                confirm_timer: None,
            },
        );
        self.active += 1;
        self.timers.insert((now, Timer::Retry(task_id.clone())));
        Ok(task_id)
    }

    /// Kills a task: at once if it is not placed yet, otherwise by asking its
    /// node (re-sent until the task ends).
    ///
    /// # Errors
    /// [`Error::UnknownTask`] or [`Error::AlreadyEnded`].
    pub fn kill(&mut self, now: Instant, task_id: &TaskId) -> Result<(), Error> {
        let task = self
            .tasks
            .get_mut(task_id)
            .ok_or_else(|| Error::UnknownTask(task_id.clone()))?;
        if task.state.is_terminal() {
            return Err(Error::AlreadyEnded(task_id.clone()));
        }
        match task.phase.clone() {
            Phase::Waiting | Phase::Bidding { .. } => {
                self.end(
                    task_id,
                    TaskState::Killed,
                    None,
                    Some("killed before it was placed".into()),
                );
            }
            Phase::Confirming { node, .. } | Phase::Placed { node } => {
                task.kill_requested = true;
                self.transmits.push_back(Transmit {
                    to: node,
                    msg: PeerMessage::Kill(Kill {
                        task_id: task_id.clone(),
                    }),
                });
                self.timers.insert((
                    now + self.config.kill_retry,
                    Timer::KillResend(task_id.clone()),
                ));
            }
            Phase::Ended => {}
        }
        Ok(())
    }

    /// The failure detector declared `node` dead: its tasks are lost and
    /// bids to it have timed out.
    pub fn node_down(&mut self, now: Instant, node: &NodeId) {
        let dead_bids: Vec<BidId> = self
            .bids
            .iter()
            .filter(|(_, b)| b.node == *node)
            .map(|(id, _)| *id)
            .collect();
        for bid in dead_bids {
            self.bid_timed_out(now, bid);
        }
        let mut lost: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| match &t.phase {
                Phase::Confirming { node: n, .. } | Phase::Placed { node: n } => n == node,
                _ => false,
            })
            .map(|(id, _)| id.clone())
            .collect();
        // Id order, so the events come out the same whatever the map's layout.
        lost.sort_unstable();
        for task_id in lost {
            self.end(
                &task_id,
                TaskState::Lost,
                None,
                Some(format!(
                    "node {node} was declared dead by the failure detector"
                )),
            );
        }
    }

    /// The current status of a task (reconciliation).
    pub fn status_of(&self, task_id: &TaskId) -> Option<(String, TaskStatus)> {
        self.tasks
            .get(task_id)
            .map(|t| (t.spec.name.clone(), Self::status(task_id, t)))
    }

    /// Every task tracked (active and recently ended), in id order.
    pub fn task_rows(&self) -> Vec<TaskRow> {
        let mut rows: Vec<TaskRow> = self
            .tasks
            .iter()
            .map(|(id, t)| TaskRow {
                task_id: id.clone(),
                name: t.spec.name.clone(),
                framework: self.framework.clone(),
                state: t.state,
                node: t.node.clone(),
                exit_code: t.exit_code,
                resources: t.spec.resources,
                reason: t.reason.clone(),
            })
            .collect();
        rows.sort_unstable_by(|a, b| a.task_id.cmp(&b.task_id));
        rows
    }

    /// The next instant `handle_timeout` must be called at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Runs every timer due at `now`: placement attempts, bid timeouts,
    /// confirm and kill re-sends, give-ups.
    pub fn handle_timeout(&mut self, now: Instant, view: &mut ClusterView) {
        while let Some((t, _)) = self.timers.first() {
            if *t > now {
                break;
            }
            let Some((_, timer)) = self.timers.pop_first() else {
                break;
            };
            match timer {
                Timer::Retry(task_id) => self.try_place(now, &task_id, view),
                Timer::BidTimeout(bid) => self.bid_timed_out(now, bid),
                Timer::ConfirmResend(task_id) => self.resend_confirm(now, &task_id),
                Timer::KillResend(task_id) => self.resend_kill(now, &task_id),
            }
        }
    }

    /// Handles a message from node `from`: awards, rejects, confirm answers
    /// and status updates. Rejects refresh `view` with the node's free vector.
    ///
    /// # Errors
    /// [`Error::Unexpected`] for messages a bidder does not take.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: PeerMessage,
        view: &mut ClusterView,
    ) -> Result<(), Error> {
        match msg {
            PeerMessage::Award(a) => {
                let task_id = a.task_id.clone();
                let (won, withdrawn) = match self.bids.get(&a.bid_id) {
                    Some(b) if b.node == from && b.task_id == task_id => {
                        let withdrawn = b.withdrawn;
                        self.take_bid(a.bid_id);
                        self.stats.bids_awarded += 1;
                        self.job_sub(&task_id, &from);
                        let won = self.take_award(now, &task_id, a.bid_id, &from, a.lease_id);
                        (won, withdrawn)
                    }
                    _ => {
                        self.stats.late_answers += 1;
                        (false, false)
                    }
                };
                // The node gives a withdrawn bid's lease back when the
                // withdrawal arrives; if that was lost, the lease expires.
                if !won && !withdrawn {
                    self.stats.releases += 1;
                    self.transmits.push_back(Transmit {
                        to: from,
                        msg: PeerMessage::Release(Release {
                            lease_id: a.lease_id,
                            task_id,
                        }),
                    });
                }
                Ok(())
            }
            PeerMessage::Reject(r) => {
                view.apply_free(&from, r.free, r.free_version);
                match self.bids.get(&r.bid_id) {
                    Some(b) if b.node == from && b.task_id == r.task_id => {
                        self.take_bid(r.bid_id);
                        self.stats.bids_rejected += 1;
                        self.job_sub(&r.task_id, &from);
                        let why =
                            describe_reject(&from, &r.reason, &r.free, self.tasks.get(&r.task_id));
                        self.bid_lost(now, &r.task_id, r.bid_id, why);
                    }
                    _ => self.stats.late_answers += 1,
                }
                Ok(())
            }
            PeerMessage::Confirmed(c) => {
                let ok = matches!(
                    self.tasks.get(&c.task_id).map(|t| &t.phase),
                    Some(Phase::Confirming { node, lease, .. }) if *node == from && *lease == c.lease_id
                );
                if ok {
                    self.placed(now, &c.task_id, &from);
                }
                Ok(())
            }
            PeerMessage::ConfirmRefused(c) => {
                let ok = matches!(
                    self.tasks.get(&c.task_id).map(|t| &t.phase),
                    Some(Phase::Confirming { node, lease, .. }) if *node == from && *lease == c.lease_id
                );
                if ok {
                    self.cancel_confirm_timer(&c.task_id);
                    self.job_sub(&c.task_id, &from);
                    if let Some(t) = self.tasks.get_mut(&c.task_id) {
                        t.last_reject =
                            Some(format!("node {from} refused the confirm: {}", c.reason));
                    }
                    self.retry_later(now, &c.task_id, Duration::ZERO);
                }
                Ok(())
            }
            PeerMessage::Status(u) => {
                view.apply_free(&from, u.free, u.free_version);
                self.on_status(now, from, u);
                Ok(())
            }
            other => Err(Error::Unexpected(other.kind())),
        }
    }

    // ------------------------------------------------------------ internals

    fn status(task_id: &TaskId, t: &Task) -> TaskStatus {
        TaskStatus {
            task_id: task_id.clone(),
            state: t.state,
            node: t.node.clone(),
            exit_code: t.exit_code,
            signal: None,
            reason: t.reason.clone(),
        }
    }

    fn job_add(&mut self, task_id: &TaskId, node: &NodeId) {
        if let Some(t) = self.tasks.get(task_id) {
            let nodes = match self.job_nodes.get_mut(&t.spec.name) {
                Some(nodes) => nodes,
                None => self.job_nodes.entry(t.spec.name.clone()).or_default(),
            };
            *nodes.entry(node.clone()).or_insert(0) += 1;
        }
    }

    fn job_sub(&mut self, task_id: &TaskId, node: &NodeId) {
        let Some(t) = self.tasks.get(task_id) else {
            return;
        };
        if let Some(nodes) = self.job_nodes.get_mut(&t.spec.name) {
            if let Some(c) = nodes.get_mut(node) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    nodes.remove(node);
                }
            }
            if nodes.is_empty() {
                self.job_nodes.remove(&t.spec.name);
            }
        }
    }

    fn placed_values(&self, name: &str, constraints: &[Constraint], view: &ClusterView) -> Placed {
        let mut placed = Placed::new();
        let keys: Vec<&str> = constraints
            .iter()
            .filter(|c| matches!(c, Constraint::Unique { .. } | Constraint::Spread { .. }))
            .map(Constraint::key)
            .collect();
        if keys.is_empty() {
            return placed;
        }
        for (node, count) in self.job_nodes.get(name).into_iter().flatten() {
            let Some(info) = view.get(node) else { continue };
            for key in &keys {
                if let Some(v) = info.attrs.get(key) {
                    *placed
                        .entry((*key).to_string())
                        .or_default()
                        .entry(v.to_string())
                        .or_insert(0) += count;
                }
            }
        }
        placed
    }

    fn try_place(&mut self, now: Instant, task_id: &TaskId, view: &mut ClusterView) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        if task.phase != Phase::Waiting || task.next_try > now {
            return;
        }
        if now >= task.deadline {
            let reason = explain(
                &task.spec,
                task.last_reject.as_deref(),
                view,
                task.deadline - task.submitted,
            );
            self.stats.gave_up += 1;
            self.end(task_id, TaskState::Failed, None, Some(reason));
            return;
        }
        let spec = task.spec.clone();
        let pinned = task.pinned.clone();
        let chosen: Vec<NodeId> = match &pinned {
            Some(node) => match view.get(node) {
                Some(info) if info.alive => vec![node.clone()],
                _ => {
                    self.end(
                        task_id,
                        TaskState::Failed,
                        None,
                        Some(format!("node {node} is not alive in this node's view")),
                    );
                    return;
                }
            },
            None => self.choose(&spec, view),
        };
        if chosen.is_empty() {
            if let Some(t) = self.tasks.get_mut(task_id) {
                t.last_reject = None;
            }
            let delay = self.backoff(task_id);
            self.retry_later(now, task_id, delay);
            return;
        }
        let mut open = BTreeSet::new();
        for node in chosen {
            let bid_id = BidId(self.next_bid);
            self.next_bid += 1;
            self.stats.bids_sent += 1;
            let expires = now + self.config.bid_timeout;
            self.bids.insert(
                bid_id,
                OutBid {
                    task_id: task_id.clone(),
                    node: node.clone(),
                    withdrawn: false,
                    expires,
                },
            );
            self.job_add(task_id, &node);
            open.insert(bid_id);
            view.note_award(&node, &spec.resources);
            self.timers.insert((expires, Timer::BidTimeout(bid_id)));
            self.transmits.push_back(Transmit {
                to: node,
                msg: PeerMessage::Bid(Bid {
                    bid_id,
                    task_id: task_id.clone(),
                    framework: self.framework.clone(),
                    weight: self.weight,
                    spec: Box::new(spec.clone()),
                    price: 0,
                    wait_ms: millis_u32(self.config.bid_wait),
                }),
            });
        }
        if let Some(t) = self.tasks.get_mut(task_id) {
            t.attempts += 1;
            t.phase = Phase::Bidding { open };
        }
    }

    /// Candidates: alive, fitting, admitted; ranked; `candidates` drawn from the best few.
    fn choose(&mut self, spec: &TaskSpec, view: &ClusterView) -> Vec<NodeId> {
        let placed = self.placed_values(&spec.name, &spec.constraints, view);
        let sample = view.sample(&mut self.rng, self.config.scan_limit);
        // The last key is random: nodes that tie (every full node, or many
        // identical empty ones) are drawn evenly instead of lowest id first,
        // which would herd every bidder onto the same few nodes.
        let mut scored: Vec<(bool, u32, f64, u64, &NodeInfo)> = sample
            .into_iter()
            .filter(|n| n.alive && spec.resources.fits_in(&n.total))
            .filter(|n| admits_all(&spec.constraints, &n.attrs, &placed))
            .map(|n| {
                let full = !spec.resources.fits_in(&n.free);
                let penalty: u32 = spec
                    .constraints
                    .iter()
                    .map(|c| c.spread_penalty(&n.attrs, &placed))
                    .sum();
                let left = n
                    .free
                    .saturating_sub(&spec.resources)
                    .dominant_share(&n.total);
                // A full node's fit says nothing about when it will have
                // room: full nodes only differ by the random key.
                let score = match (full, self.config.score) {
                    (true, _) => 0.0,
                    (false, Score::BestFit) => left,
                    (false, Score::Spread) => -left,
                };
                (full, penalty, score, 0, n)
            })
            .collect();
        for s in &mut scored {
            s.3 = self.rng.next_u64();
        }
        // Nodes with room now first; among full ones, a bid waits for room.
        scored.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.1.cmp(&b.1))
                .then(a.2.total_cmp(&b.2))
                .then(a.3.cmp(&b.3))
        });
        scored.truncate(self.config.best_of.max(self.config.candidates));
        let mut out = Vec::new();
        while out.len() < self.config.candidates && !scored.is_empty() {
            let i = self.rng.random_range(0..scored.len());
            out.push(scored.swap_remove(i).4.id.clone());
        }
        out
    }

    fn backoff(&mut self, task_id: &TaskId) -> Duration {
        let attempts = self.tasks.get(task_id).map_or(0, |t| t.attempts);
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << attempts.min(16))
            .min(self.config.backoff_max);
        // jitter in [50%, 100%)
        let micros = u64::try_from(exp.as_micros()).unwrap_or(u64::MAX);
        let low = micros / 2;
        Duration::from_micros(low + self.rng.random_range(0..=micros - low))
    }

    fn retry_later(&mut self, now: Instant, task_id: &TaskId, delay: Duration) {
        if let Some(t) = self.tasks.get_mut(task_id) {
            t.phase = Phase::Waiting;
            t.state = TaskState::Staging;
            t.node = None;
            let at = (now + delay).min(t.deadline);
            t.next_try = at;
            self.timers.insert((at, Timer::Retry(task_id.clone())));
        }
    }

    /// Asks the nodes holding these bids to drop them.
    fn withdraw(&mut self, bids: &[BidId]) {
        for bid in bids {
            if let Some(b) = self.bids.get_mut(bid) {
                b.withdrawn = true;
                self.transmits.push_back(Transmit {
                    to: b.node.clone(),
                    msg: PeerMessage::Withdraw(Withdraw {
                        bid_id: *bid,
                        task_id: b.task_id.clone(),
                    }),
                });
            }
        }
    }

    /// Forgets an outstanding bid and its timeout timer, so an answered bid
    /// does not wake the bidder a `bid_timeout` later for nothing.
    fn take_bid(&mut self, bid: BidId) -> Option<OutBid> {
        let b = self.bids.remove(&bid)?;
        self.timers.remove(&(b.expires, Timer::BidTimeout(bid)));
        Some(b)
    }

    /// Sets the task's confirm re-send timer, replacing any earlier one.
    fn set_confirm_timer(&mut self, at: Instant, task_id: &TaskId) {
        self.cancel_confirm_timer(task_id);
        if let Some(t) = self.tasks.get_mut(task_id) {
            t.confirm_timer = Some(at);
            self.timers
                .insert((at, Timer::ConfirmResend(task_id.clone())));
        }
    }

    /// Drops the task's confirm re-send timer once the confirm is answered.
    fn cancel_confirm_timer(&mut self, task_id: &TaskId) {
        if let Some(at) = self
            .tasks
            .get_mut(task_id)
            .and_then(|t| t.confirm_timer.take())
        {
            self.timers
                .remove(&(at, Timer::ConfirmResend(task_id.clone())));
        }
    }

    fn bid_timed_out(&mut self, now: Instant, bid: BidId) {
        let Some(b) = self.take_bid(bid) else {
            return;
        };
        self.stats.bids_timed_out += 1;
        self.job_sub(&b.task_id, &b.node);
        let why = format!("node {} did not answer a bid in time", b.node);
        self.bid_lost(now, &b.task_id, bid, why);
    }

    /// A bid of this task ended without an award.
    fn bid_lost(&mut self, now: Instant, task_id: &TaskId, bid: BidId, why: String) {
        let Some(t) = self.tasks.get_mut(task_id) else {
            return;
        };
        let Phase::Bidding { open } = &mut t.phase else {
            return;
        };
        open.remove(&bid);
        t.last_reject = Some(why.clone());
        if !open.is_empty() {
            return;
        }
        if t.pinned.is_some() {
            self.end(task_id, TaskState::Failed, None, Some(why));
            return;
        }
        let delay = self.backoff(task_id);
        self.retry_later(now, task_id, delay);
    }

    /// An award arrived for a live bid. Returns true if the task takes it.
    fn take_award(
        &mut self,
        now: Instant,
        task_id: &TaskId,
        bid: BidId,
        node: &NodeId,
        lease: LeaseId,
    ) -> bool {
        let Some(t) = self.tasks.get_mut(task_id) else {
            return false;
        };
        let Phase::Bidding { open } = &t.phase else {
            return false;
        };
        if !open.contains(&bid) {
            return false;
        }
        let others: Vec<BidId> = open.iter().copied().filter(|b| *b != bid).collect();
        t.phase = Phase::Confirming {
            node: node.clone(),
            lease,
            attempts: 1,
        };
        t.node = Some(node.clone());
        self.withdraw(&others);
        self.job_add(task_id, node);
        self.transmits.push_back(Transmit {
            to: node.clone(),
            msg: PeerMessage::Confirm(Confirm {
                lease_id: lease,
                task_id: task_id.clone(),
            }),
        });
        self.set_confirm_timer(now + self.config.confirm_timeout, task_id);
        true
    }

    fn resend_confirm(&mut self, now: Instant, task_id: &TaskId) {
        let Some(t) = self.tasks.get_mut(task_id) else {
            return;
        };
        t.confirm_timer = None; // this is it firing
        let Phase::Confirming {
            node,
            lease,
            attempts,
        } = &mut t.phase
        else {
            return;
        };
        if *attempts >= self.config.confirm_attempts {
            let why = format!("node {node} did not answer {attempts} confirms");
            self.end(task_id, TaskState::Lost, None, Some(why));
            return;
        }
        *attempts += 1;
        let (node, lease) = (node.clone(), *lease);
        self.transmits.push_back(Transmit {
            to: node,
            msg: PeerMessage::Confirm(Confirm {
                lease_id: lease,
                task_id: task_id.clone(),
            }),
        });
        self.set_confirm_timer(now + self.config.confirm_timeout, task_id);
    }

    fn resend_kill(&mut self, now: Instant, task_id: &TaskId) {
        let Some(t) = self.tasks.get(task_id) else {
            return;
        };
        if !t.kill_requested || t.state.is_terminal() {
            return;
        }
        let (Phase::Confirming { node, .. } | Phase::Placed { node }) = &t.phase else {
            return;
        };
        self.transmits.push_back(Transmit {
            to: node.clone(),
            msg: PeerMessage::Kill(Kill {
                task_id: task_id.clone(),
            }),
        });
        self.timers.insert((
            now + self.config.kill_retry,
            Timer::KillResend(task_id.clone()),
        ));
    }

    fn placed(&mut self, now: Instant, task_id: &TaskId, node: &NodeId) {
        self.cancel_confirm_timer(task_id);
        let Some(t) = self.tasks.get_mut(task_id) else {
            return;
        };
        t.phase = Phase::Placed { node: node.clone() };
        let latency = now - t.submitted;
        let attempts = t.attempts;
        self.stats.placed += 1;
        self.events.push_back(Event::Placed {
            task_id: task_id.clone(),
            node: node.clone(),
            latency,
            attempts,
        });
        if t.state == TaskState::Staging {
            t.state = TaskState::Starting;
            let status = Self::status(task_id, t);
            let name = t.spec.name.clone();
            self.events.push_back(Event::Status { name, status });
        }
    }

    fn on_status(&mut self, now: Instant, from: NodeId, u: StatusUpdate) {
        let task_id = u.status.task_id.clone();
        self.transmits.push_back(Transmit {
            to: from.clone(),
            msg: PeerMessage::StatusAck(StatusAck {
                task_id: task_id.clone(),
                seq: u.seq,
            }),
        });
        let Some(t) = self.tasks.get(&task_id) else {
            return;
        };
        let owner = match &t.phase {
            Phase::Confirming { node, .. } | Phase::Placed { node } => Some(node.clone()),
            _ => None,
        };
        if owner.as_ref() != Some(&from) {
            // A node that does not (or no longer) own the task reports it: if
            // it still runs there, it must not.
            if !u.status.state.is_terminal() {
                self.transmits.push_back(Transmit {
                    to: from,
                    msg: PeerMessage::Kill(Kill { task_id }),
                });
            }
            return;
        }
        if matches!(t.phase, Phase::Confirming { .. }) {
            // The Confirmed answer was lost; the status proves the launch.
            self.placed(now, &task_id, &from);
        }
        let Some(t) = self.tasks.get(&task_id) else {
            return;
        };
        if !t.state.can_transition_to(u.status.state) {
            return; // a duplicate or reordered update
        }
        if u.status.state.is_terminal() {
            let reason = u.status.reason.clone();
            if let Some(t) = self.tasks.get_mut(&task_id) {
                t.exit_code = u.status.exit_code;
            }
            self.end(&task_id, u.status.state, u.status.signal, reason);
        } else if let Some(t) = self.tasks.get_mut(&task_id) {
            t.state = u.status.state;
            let status = Self::status(&task_id, t);
            let name = t.spec.name.clone();
            self.events.push_back(Event::Status { name, status });
        }
    }

    /// Moves a task to a terminal state, once, and reports it.
    fn end(
        &mut self,
        task_id: &TaskId,
        state: TaskState,
        signal: Option<i32>,
        reason: Option<String>,
    ) {
        let Some(t) = self.tasks.get(task_id) else {
            return;
        };
        if t.state.is_terminal() {
            return;
        }
        self.cancel_confirm_timer(task_id);
        let Some(t) = self.tasks.get(task_id) else {
            return;
        };
        match t.phase.clone() {
            Phase::Confirming { node, .. } | Phase::Placed { node } => {
                self.job_sub(task_id, &node);
            }
            Phase::Bidding { open } => {
                let open: Vec<BidId> = open.into_iter().collect();
                self.withdraw(&open);
            }
            Phase::Waiting | Phase::Ended => {}
        }
        let Some(t) = self.tasks.get_mut(task_id) else {
            return;
        };
        t.state = state;
        t.phase = Phase::Ended;
        t.reason = reason;
        let mut status = Self::status(task_id, t);
        status.signal = signal;
        let name = t.spec.name.clone();
        self.active = self.active.saturating_sub(1);
        self.events.push_back(Event::Status { name, status });
        self.ended.push_back(task_id.clone());
        while self.ended.len() > self.config.keep_ended {
            if let Some(old) = self.ended.pop_front() {
                self.tasks.remove(&old);
            }
        }
    }
}

fn describe_reject(
    node: &NodeId,
    reason: &RejectReason,
    free: &Resources,
    task: Option<&Task>,
) -> String {
    match reason {
        RejectReason::Insufficient(dims) => {
            let asked = task.map(|t| t.spec.resources).unwrap_or_default();
            let parts: Vec<String> = dims
                .iter()
                .map(|d| {
                    format!(
                        "{} free of {} asked",
                        d.format(free.get(*d)),
                        d.format(asked.get(*d))
                    )
                })
                .collect();
            if parts.is_empty() {
                format!("node {node} had too little free")
            } else {
                format!("node {node} has {}", parts.join(", "))
            }
        }
        RejectReason::Outbid => {
            format!("node {node} gave its free resources to higher-ranked bids")
        }
        RejectReason::Constraints => format!("node {node} does not satisfy the task's constraints"),
        RejectReason::Busy => format!("node {node} is busy with other bids"),
        RejectReason::InvalidSpec(why) => format!("node {node} refused the task: {why}"),
        RejectReason::Draining => format!("node {node} is leaving the cluster"),
        RejectReason::Withdrawn => format!("the bid on node {node} was withdrawn"),
    }
}

/// Why a task could not be placed, in words a person can act on.
pub fn explain(
    spec: &TaskSpec,
    last: Option<&str>,
    view: &ClusterView,
    waited: Duration,
) -> String {
    let asked = spec.resources;
    let alive: Vec<&NodeInfo> = view.iter().filter(|n| n.alive).collect();
    let secs = waited.as_secs_f64();
    if alive.is_empty() {
        return format!("no node is alive in this node's view (waited {secs:.0}s)");
    }
    let none = Placed::new();
    let matching: Vec<&NodeInfo> = alive
        .iter()
        .copied()
        .filter(|n| admits_all(&spec.constraints, &n.attrs, &none))
        .collect();
    if matching.is_empty() {
        let cs: Vec<String> = spec.constraints.iter().map(ToString::to_string).collect();
        return format!(
            "no alive node matches the constraints {} ({} nodes alive)",
            cs.join(", "),
            alive.len()
        );
    }
    for d in Dimension::ALL {
        let want = asked.get(d);
        if want == 0 {
            continue;
        }
        if let Some(big) = matching
            .iter()
            .max_by_key(|n| (n.total.get(d), std::cmp::Reverse(&n.id)))
            && big.total.get(d) < want
        {
            return format!(
                "no node has {} in all; the largest has {} ({})",
                d.format(want),
                d.format(big.total.get(d)),
                big.id
            );
        }
        if let Some(best) = matching
            .iter()
            .max_by_key(|n| (n.free.get(d), std::cmp::Reverse(&n.id)))
            && best.free.get(d) < want
        {
            return format!(
                "no node has {} free; largest free is {} on {} (waited {secs:.0}s)",
                d.format(want),
                d.format(best.free.get(d)),
                best.id
            );
        }
    }
    let mut msg = format!(
        "no node had {asked} free at once while it was tried for {secs:.0}s ({} nodes match)",
        matching.len()
    );
    if let Some(last) = last {
        msg.push_str("; last answer: ");
        msg.push_str(last);
    }
    msg
}
