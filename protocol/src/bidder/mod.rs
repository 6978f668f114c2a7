//! The bidder: places one framework's tasks through auctions on other nodes.
//!
//! A bidder lives on its framework's home node. For each task it:
//!
//! 1. picks candidates from the [`ClusterView`]: nodes that are alive, big
//!    enough in total and satisfy its constraints (examining at most
//!    `scan_limit` nodes drawn at random in a large cluster), ranks them by a
//!    score (best fit or spread), and chooses `candidates` of them at random
//!    among the best `best_of` (power-of-d choices, as in Sparrow); in a
//!    burst (`burst_tasks` tasks due at once, as `agora run --count 2000`
//!    makes) only `candidates_with_room` (one) of those with room, when the
//!    best has room. A node's room is the view's free vector less what this
//!    bidder's own unanswered bids there ask for. A task
//!    with a `spread` constraint first picks the attribute value its job uses
//!    least (its tasks placed there plus those with bids out there; ties at
//!    random) and bids only on nodes with that value, so that each of its
//!    tasks counts against exactly one value while its bids are out;
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
//!    is 31 GiB on n17", "hostname:unique: every one of the 3 live nodes
//!    already has a task of job web, running or being placed"). A task that
//!    no node of the view could ever hold, by its total resources or by the
//!    constraints a node's own attributes decide, fails once it has been so
//!    for `never_fit_grace` after its submit, without waiting for its
//!    placement timeout.
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

mod lifecycle;
mod place;
mod reasons;
mod restore;

pub use reasons::explain;
use reasons::{describe_reject, never_fits};
pub use restore::Journaled;

use crate::constraint::{Attributes, Constraint, Placed, admits_all};
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
    /// Bids sent per attempt when no candidate has room for the task in the
    /// view: the bids queue at full nodes, and the first to free room wins
    /// (d in power-of-d choices).
    pub candidates: usize,
    /// In a burst (see `burst_tasks`), bids sent per attempt when the
    /// best-ranked candidate has room for the task in the view, after what
    /// this bidder's own unanswered bids ask of each node; they go to
    /// candidates with room only. At most `candidates`. One: a burst of
    /// tasks then costs about one bid per task instead of `candidates`
    /// (docs/PROTOCOL.md, "A burst of tasks").
    pub candidates_with_room: usize,
    /// At least this many tasks due for a placement attempt at the same
    /// instant (one submit of many tasks, many submits at one instant, or
    /// many retries at once) are a burst, and so are those tasks' retries.
    /// Outside one, every attempt sends `candidates` bids: the extra bid is
    /// cheap insurance against a lost message (a lone lost bid costs a
    /// `bid_timeout`) and a stale view. In a burst it would multiply the
    /// load on every node by `candidates`, and the bidder's own accounting
    /// of its live bids keeps its view close to the truth.
    pub burst_tasks: usize,
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
    /// A confirm with no answer after this long is sent again; each re-send
    /// waits twice as long as the one before, up to `confirm_backoff_max`.
    pub confirm_timeout: Duration,
    /// The longest wait between two confirm re-sends.
    pub confirm_backoff_max: Duration,
    /// After this many unanswered confirms the task is reported lost.
    pub confirm_attempts: u32,
    /// First retry delay after an attempt that won nothing.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How long a task may wait for a place (unless its spec says otherwise).
    pub placement_timeout: Duration,
    /// A task that no live node of the view could ever hold (too big for
    /// every node's total, or constraints no node's attributes meet) fails
    /// when this long has passed since its submit and it still cannot: long
    /// enough for a view that is still filling (a node that has just started
    /// hears of the others within a gossip round or two) to learn of a node
    /// that fits. Zero fails such a task at its first attempt.
    pub never_fit_grace: Duration,
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
            candidates_with_room: 1,
            burst_tasks: 16,
            best_of: 4,
            scan_limit: 64,
            score: Score::BestFit,
            bid_wait: Duration::from_millis(500),
            // bid_wait plus room for the answer; see the auctioneer's lease_ttl.
            bid_timeout: Duration::from_secs(1),
            // 0.2, 0.4, 0.8, 1.6, then 2 s: about 19 s before giving up on
            // a node that gossips alive but does not answer (a dead one is
            // declared dead by the failure detector sooner). Every 200 ms
            // for 4 s gave up on loaded nodes that did answer later (36 of
            // 2,000 tasks reported lost on 50 agents), and sent 20 confirms.
            confirm_timeout: Duration::from_millis(200),
            confirm_backoff_max: Duration::from_secs(2),
            confirm_attempts: 12,
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_secs(2),
            placement_timeout: Duration::from_secs(60),
            // Two gossip rounds at the node's default 1 s interval.
            never_fit_grace: Duration::from_secs(2),
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
    /// Tasks of the run before a restart adopted from their nodes' reports
    /// ([`Bidder::restored`]).
    pub adopted: u64,
    /// Tasks of the run before a restart that no node reported, reported
    /// lost at a reconcile or at the end of the restore window.
    pub lost_in_restart: u64,
    /// Unfinished tasks of the run before taken back from the home's
    /// journal ([`Bidder::restore_tasks`]).
    pub restored: u64,
    /// Restored tasks that no node reported and that were placed again.
    pub replaced_after_restart: u64,
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
    /// A task of the run before its home restarted, back from the home's
    /// journal: waiting for a node to report it (see `restore.rs`).
    Restoring {
        placed_on: Option<NodeId>,
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
    /// The nodes the task counts on in its job's tally (its live bids, or
    /// its lease or placement), with the attributes each had when the bid
    /// went out. Nodes without attributes are not listed: they count for
    /// nothing in the tally.
    holds: Vec<(NodeId, Attributes)>,
    /// Its first attempt was part of a burst: so are its retries (a burst
    /// whose bids time out at a swamped node comes back all at once, but
    /// with jittered backoffs, not at one instant).
    burst: bool,
}

#[derive(Debug)]
struct OutBid {
    task_id: TaskId,
    node: NodeId,
    /// What the bid asks for: counted in `Bidder::asked` while the bid is
    /// live (sent, not withdrawn, not answered).
    resources: Resources,
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
    /// The restore window ended (see `restore.rs`).
    RestoreEnd,
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
    /// node → what this bidder's live bids there ask for in all: the view's
    /// free vector of a node does not count them until the node has
    /// answered (a gossiped or rejected free vector is the node's ledger,
    /// which holds awards, not bids on their way or waiting), so choosing
    /// subtracts them. Only nodes with live bids have an entry.
    asked: BTreeMap<NodeId, Resources>,
    /// Placement attempts due in the `handle_timeout` call running now.
    due_now: usize,
    /// The instant of the latest placement attempt, and how many were made
    /// at that instant (across calls: a framework that submits its tasks
    /// one by one at one instant also makes a burst).
    attempts_at: (Instant, usize),
    timers: BTreeSet<(Instant, Timer)>,
    /// job name → attribute key → value → tasks of the job that hold a node
    /// with that value (see `Task::holds`): what `unique` and `spread` read.
    jobs: crate::FixedHashMap<String, Placed>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    /// Set on a bidder restored after its node restarted: tasks numbered
    /// below this were made by the run before, and a status update for one
    /// of them that this bidder does not know adopts it.
    restored_below: Option<u64>,
    /// Until when nodes' reports of the earlier run's tasks are awaited.
    restored_until: Instant,
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
            asked: BTreeMap::new(),
            due_now: 0,
            attempts_at: (Instant::ZERO, 0),
            timers: BTreeSet::new(),
            jobs: crate::FixedHashMap::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            restored_below: None,
            restored_until: Instant::ZERO,
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

    /// Numbers this bidder's bids from `first` on (from 1 by default). An
    /// auctioneer tells bids apart by sending node and bid id, so bidders
    /// that share a node must draw from disjoint ranges: the node's
    /// [`crate::host::Host`] gives each framework its own.
    pub fn number_bids_from(&mut self, first: u64) {
        self.next_bid = first.max(1);
    }

    /// Marks this bidder as the same framework's after its node restarted:
    /// its task numbers start at `floor` (the node's new generation, larger
    /// than any number the run before handed out), and a status update for
    /// a task numbered below it that this bidder does not know adopts the
    /// task, so its framework hears how its earlier tasks end.
    pub fn restored(&mut self, floor: u64, until: Instant) {
        self.next_seq = self.next_seq.max(floor);
        self.restored_below = Some(floor);
        self.restored_until = until;
    }

    /// Whether `task_id` is numbered by the run before a restart.
    fn of_earlier_run(&self, task_id: &TaskId) -> bool {
        self.restored_below.is_some_and(|floor| {
            task_id.is_of(&self.framework)
                && task_id
                    .as_str()
                    .rsplit_once('.')
                    .and_then(|(_, n)| n.parse::<u64>().ok())
                    .is_some_and(|n| n < floor)
        })
    }

    /// See [`crate::host::Host::reconcile_unknown`].
    ///
    /// # Errors
    /// The restore window has not passed yet: when it does.
    pub fn lost_in_restart(
        &mut self,
        now: Instant,
        task_id: &TaskId,
    ) -> Result<Option<TaskStatus>, Instant> {
        if !self.of_earlier_run(task_id) || self.tasks.contains_key(task_id) {
            return Ok(None);
        }
        if now < self.restored_until {
            return Err(self.restored_until);
        }
        let home = self.home.clone();
        self.adopt_reported(now, &home, task_id);
        if let Some(t) = self.tasks.get_mut(task_id) {
            t.node = None;
            t.phase = Phase::Waiting;
        }
        self.end(
            task_id,
            TaskState::Lost,
            None,
            Some(format!(
                "its home node {home} restarted and no node reported running it: it was never \
                 placed, or its node is gone"
            )),
        );
        self.stats.lost_in_restart += 1;
        Ok(self.tasks.get(task_id).map(|t| Self::status(task_id, t)))
    }

    /// Adopts a task of the run before, reported by `node`, if this bidder
    /// was restored and the task is one of that run's; true if it did.
    pub(super) fn adopt_reported(&mut self, now: Instant, node: &NodeId, task_id: &TaskId) -> bool {
        if !self.of_earlier_run(task_id) || self.tasks.contains_key(task_id) {
            return false;
        }
        let spec = TaskSpec::new(
            String::new(),
            crate::task::Command::Argv(Vec::new()),
            crate::resources::Resources::ZERO,
        );
        self.tasks.insert(
            task_id.clone(),
            Task {
                spec,
                state: TaskState::Staging,
                phase: Phase::Placed { node: node.clone() },
                submitted: now,
                deadline: now,
                next_try: now,
                attempts: 0,
                pinned: None,
                last_reject: None,
                kill_requested: false,
                node: Some(node.clone()),
                exit_code: None,
                reason: None,
                confirm_timer: None,
                holds: Vec::new(),
                burst: false,
            },
        );
        self.active += 1;
        self.stats.adopted += 1;
        true
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
        let timeout = self.timeout_of(&spec);
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
                holds: Vec::new(),
                burst: false,
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
            Phase::Waiting | Phase::Bidding { .. } | Phase::Restoring { placed_on: None } => {
                self.end(
                    task_id,
                    TaskState::Killed,
                    None,
                    Some("killed before it was placed".into()),
                );
            }
            Phase::Confirming { node, .. }
            | Phase::Placed { node }
            | Phase::Restoring {
                placed_on: Some(node),
            } => {
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
                Phase::Confirming { node: n, .. }
                | Phase::Placed { node: n }
                | Phase::Restoring { placed_on: Some(n) } => n == node,
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
        let due = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .filter(|(_, timer)| matches!(timer, Timer::Retry(_)))
            .count();
        self.due_now = due;
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
                Timer::RestoreEnd => self.restore_window_ended(now),
            }
        }
        self.due_now = 0;
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
                        let (withdrawn, asked) = (b.withdrawn, b.resources);
                        self.take_bid(a.bid_id);
                        self.stats.bids_awarded += 1;
                        // A winning bid's hold on its node becomes the
                        // placement's; a losing one's goes (a withdrawn
                        // bid's went when it was withdrawn).
                        let won = self.take_award(now, &task_id, a.bid_id, &from, a.lease_id);
                        if won {
                            // The lease is in the node's ledger now, but
                            // perhaps not yet in the free vector the view
                            // holds: count it there until the next update.
                            view.note_award(&from, &asked);
                        } else if !withdrawn {
                            self.unhold(&task_id, &from);
                        }
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
                        if !b.withdrawn {
                            self.unhold(&r.task_id, &from);
                        }
                        self.take_bid(r.bid_id);
                        self.stats.bids_rejected += 1;
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
                    self.unhold(&c.task_id, &from);
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
}
