//! A tiny deterministic cluster for property tests: several auctioneers and
//! bidders joined by a lossy, duplicating, reordering network, a gossip tick
//! that copies each ledger into every bidder's view after a delay, simulated
//! task run times, node deaths, and an invariant check after every event.
//! Nodes may carry attributes, and the check can also watch that no two
//! running tasks of one job share a value of a `unique` key.
//!
//! It is deliberately simpler than agora-sim (which models chitchat); it
//! exists to hammer the state machines with hostile interleavings.

#![allow(dead_code)]

use agora_protocol::auctioneer::{self, Auctioneer};
use agora_protocol::bidder::{self, Bidder};
use agora_protocol::constraint::Attributes;
use agora_protocol::ids::{FrameworkId, NodeId, TaskId};
use agora_protocol::resources::{PortSet, Resources};
use agora_protocol::task::{Command, TaskSpec, TaskState, TaskStatus};
use agora_protocol::time::Instant;
use agora_protocol::view::{ClusterView, NodeInfo};
use agora_protocol::wire::{PeerMessage, Recipient};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How hostile the network is.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Probability a message is lost.
    pub loss: f64,
    /// Probability a message is delivered twice.
    pub dup: f64,
    /// Delivery delay range in microseconds (a wide range reorders).
    pub delay_us: (u64, u64),
}

/// One operation of a scripted run.
#[derive(Clone, Debug)]
pub enum Op {
    /// Bidder `b` submits a task.
    Submit {
        /// Which bidder (modulo count).
        b: usize,
        /// CPU millis.
        cpu: u64,
        /// Memory MiB.
        mem: u64,
        /// Run time in ms.
        run_ms: u64,
    },
    /// Let time pass.
    Wait {
        /// Milliseconds.
        ms: u64,
    },
    /// A non-home node dies (modulo count of mortal nodes).
    Crash {
        /// Which mortal node.
        n: usize,
    },
    /// Bidder `b` kills its `i`-th task (modulo count).
    Kill {
        /// Which bidder.
        b: usize,
        /// Which task.
        i: usize,
    },
}

struct Node {
    auct: Auctioneer,
    alive: bool,
}

struct Home {
    node: NodeId,
    bidder: Bidder<ChaCha8Rng>,
    view: ClusterView,
    submitted: Vec<TaskId>,
}

/// What the harness observed.
#[derive(Default, Debug)]
pub struct Record {
    /// Launch events per task.
    pub launches: BTreeMap<TaskId, u32>,
    /// Terminal states reported to each task's framework.
    pub terminal: BTreeMap<TaskId, Vec<TaskState>>,
    /// Distinct answers produced per (bidder home, bid id).
    pub answers: BTreeMap<(NodeId, u64), BTreeSet<String>>,
    /// Placement latencies.
    pub placed: Vec<Duration>,
    /// Events processed.
    pub events: u64,
}

/// The cluster.
pub struct Harness {
    pub now: Instant,
    rng: ChaCha8Rng,
    net: NetConfig,
    nodes: BTreeMap<NodeId, Node>,
    homes: Vec<Home>,
    mortal: Vec<NodeId>,
    /// (deliver at, seq) → (from, to, msg)
    inflight: BTreeMap<(Instant, u64), (NodeId, NodeId, PeerMessage)>,
    /// (end at, task) → node
    ends: BTreeMap<(Instant, TaskId), NodeId>,
    /// (at, node) → node-down notices for bidders
    downs: BTreeMap<(Instant, NodeId), ()>,
    seq: u64,
    next_gossip: Instant,
    gossip_every: Duration,
    run_times: BTreeMap<TaskId, Duration>,
    instant_shares: bool,
    attrs: BTreeMap<NodeId, Attributes>,
    unique_key: Option<String>,
    pub record: Record,
}

pub fn node_id(i: usize) -> NodeId {
    NodeId::new(format!("n{i}")).unwrap()
}

impl Harness {
    /// `homes` immortal home nodes (one bidder each, weight 1) plus `mortal`
    /// nodes that may crash; every node has `cap`.
    pub fn new(
        seed: u64,
        homes: usize,
        mortal: usize,
        cap: Resources,
        net: NetConfig,
        auct_cfg: auctioneer::Config,
        bid_cfg: bidder::Config,
    ) -> Self {
        Self::with_attrs(seed, homes, mortal, cap, net, auct_cfg, bid_cfg, |_| {
            Attributes::default()
        })
    }

    /// As [`Harness::new`], node `n{i}` advertising `attrs(i)`.
    #[allow(clippy::too_many_arguments)]
    pub fn with_attrs(
        seed: u64,
        homes: usize,
        mortal: usize,
        cap: Resources,
        net: NetConfig,
        auct_cfg: auctioneer::Config,
        bid_cfg: bidder::Config,
        attrs: impl Fn(usize) -> Attributes,
    ) -> Self {
        let attrs: BTreeMap<NodeId, Attributes> = (0..homes + mortal)
            .map(|i| (node_id(i), attrs(i)))
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut nodes = BTreeMap::new();
        for i in 0..homes + mortal {
            let id = node_id(i);
            nodes.insert(
                id.clone(),
                Node {
                    auct: Auctioneer::new(
                        id.clone(),
                        cap,
                        PortSet::default(),
                        attrs.get(&id).cloned().unwrap_or_default(),
                        auct_cfg.clone(),
                    ),
                    alive: true,
                },
            );
        }
        let mut view = ClusterView::new();
        for id in nodes.keys() {
            let a = attrs.get(id).cloned().unwrap_or_default();
            view.upsert(NodeInfo::new(id.clone(), cap, a));
        }
        let homes = (0..homes)
            .map(|i| {
                let fw = FrameworkId::new(format!("fw{i}@n{i}")).unwrap();
                let bidder_rng = ChaCha8Rng::seed_from_u64(rng.random());
                Home {
                    node: node_id(i),
                    bidder: Bidder::new(node_id(i), fw, 1, bid_cfg.clone(), bidder_rng),
                    view: view.clone(),
                    submitted: Vec::new(),
                }
            })
            .collect::<Vec<_>>();
        let mortal = (homes.len()..homes.len() + mortal).map(node_id).collect();
        Harness {
            now: Instant::ZERO,
            rng,
            net,
            nodes,
            homes,
            mortal,
            inflight: BTreeMap::new(),
            ends: BTreeMap::new(),
            downs: BTreeMap::new(),
            seq: 0,
            next_gossip: Instant::ZERO,
            gossip_every: Duration::from_millis(100),
            run_times: BTreeMap::new(),
            instant_shares: false,
            attrs,
            unique_key: None,
            record: Record::default(),
        }
    }

    /// Gives every auctioneer the true cluster-wide shares before each of
    /// its decisions, instead of gossip-delayed ones (to test the ranking
    /// itself, independent of gossip lag).
    pub fn set_instant_shares(&mut self, on: bool) {
        self.instant_shares = on;
    }

    fn refresh_shares(&mut self) {
        if !self.instant_shares {
            return;
        }
        let mut total = Resources::ZERO;
        let mut usage: BTreeMap<FrameworkId, agora_protocol::fairness::FrameworkUsage> =
            BTreeMap::new();
        for n in self.nodes.values().filter(|n| n.alive) {
            total = total.saturating_add(&n.auct.capacity());
            for (fw, u) in n.auct.allocations() {
                let e = usage
                    .entry(fw)
                    .or_insert(agora_protocol::fairness::FrameworkUsage {
                        resources: Resources::ZERO,
                        weight: u.weight,
                    });
                e.resources = e.resources.saturating_add(&u.resources);
            }
        }
        let shares = agora_protocol::fairness::FairShares::new(total, usage);
        for n in self.nodes.values_mut() {
            n.auct.set_shares(shares.clone());
        }
    }

    /// From now on, every check also asserts that no two running tasks of
    /// one job (framework and name) are on nodes with the same value of
    /// attribute `key`.
    pub fn watch_unique(&mut self, key: &str) {
        self.unique_key = Some(key.to_string());
    }

    /// The value of attribute `key` on `node`.
    pub fn attr(&self, node: &NodeId, key: &str) -> Option<&str> {
        self.attrs.get(node).and_then(|a| a.get(key))
    }

    /// Bidder `b` submits `spec` now (its tasks run for `run_ms` once
    /// launched). None if the bidder refused it.
    pub fn submit_spec(&mut self, b: usize, spec: TaskSpec, run_ms: u64) -> Option<TaskId> {
        let b = b % self.homes.len();
        let now = self.now;
        let id = self.homes[b].bidder.submit(now, spec).ok()?;
        self.run_times
            .insert(id.clone(), Duration::from_millis(run_ms));
        self.homes[b].submitted.push(id.clone());
        self.pump_all();
        Some(id)
    }

    /// Ends every running task of bidder `b` now, all at the same instant.
    pub fn finish_all(&mut self, b: usize) {
        let mine: BTreeSet<TaskId> = self.homes[b].submitted.iter().cloned().collect();
        let due: Vec<(Instant, TaskId)> = self
            .ends
            .keys()
            .filter(|(_, t)| mine.contains(t))
            .cloned()
            .collect();
        for key in due {
            if let Some(node) = self.ends.remove(&key) {
                self.ends.insert((self.now, key.1), node);
            }
        }
        let now = self.now;
        self.run_until(now);
    }

    /// Tasks of bidder `b` that are starting or running.
    pub fn running_tasks(&self, b: usize) -> usize {
        self.homes[b]
            .bidder
            .task_rows()
            .iter()
            .filter(|r| matches!(r.state, TaskState::Starting | TaskState::Running))
            .count()
    }

    pub fn bidder(&self, b: usize) -> &Bidder<ChaCha8Rng> {
        &self.homes[b].bidder
    }

    pub fn bidders(&self) -> usize {
        self.homes.len()
    }

    pub fn auctioneers(&self) -> impl Iterator<Item = (&NodeId, &Auctioneer, bool)> {
        self.nodes.iter().map(|(id, n)| (id, &n.auct, n.alive))
    }

    pub fn submitted(&self, b: usize) -> &[TaskId] {
        &self.homes[b].submitted
    }

    /// Applies one scripted operation, then runs events until the op's time.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Submit {
                b,
                cpu,
                mem,
                run_ms,
            } => {
                let b = b % self.homes.len();
                let mut spec = TaskSpec::new(
                    "job",
                    Command::Shell("true".into()),
                    Resources::cpu_mem(*cpu, *mem),
                );
                spec.placement_timeout_ms = 3_000;
                let now = self.now;
                if let Ok(id) = self.homes[b].bidder.submit(now, spec) {
                    self.run_times
                        .insert(id.clone(), Duration::from_millis(*run_ms));
                    self.homes[b].submitted.push(id);
                }
                self.pump_all();
            }
            Op::Wait { ms } => {
                let until = self.now + Duration::from_millis(*ms);
                self.run_until(until);
            }
            Op::Crash { n } => {
                if self.mortal.is_empty() {
                    return;
                }
                let id = self.mortal[n % self.mortal.len()].clone();
                if let Some(node) = self.nodes.get_mut(&id)
                    && node.alive
                {
                    node.alive = false;
                    // The failure detector notices after a while.
                    self.downs
                        .insert((self.now + Duration::from_millis(800), id), ());
                }
            }
            Op::Kill { b, i } => {
                let b = b % self.homes.len();
                let home = &mut self.homes[b];
                if home.submitted.is_empty() {
                    return;
                }
                let id = home.submitted[i % home.submitted.len()].clone();
                let _ = home.bidder.kill(self.now, &id);
                self.pump_all();
            }
        }
    }

    /// Runs until every bidder has no active task and every lease is gone,
    /// or `limit` passes.
    pub fn settle(&mut self, limit: Duration) {
        let end = self.now + limit;
        while self.now < end {
            let quiet = self
                .homes
                .iter()
                .all(|h| h.bidder.active_tasks() == 0 && h.bidder.outstanding_bids() == 0)
                && self.nodes.values().all(|n| {
                    !n.alive || (n.auct.lease_count() == 0 && n.auct.unacked_count() == 0)
                });
            if quiet {
                return;
            }
            let step = self.now + Duration::from_millis(50);
            self.run_until(step);
        }
    }

    fn next_event_time(&self) -> Option<Instant> {
        let mut t = vec![Some(self.next_gossip)];
        t.push(self.inflight.keys().next().map(|k| k.0));
        t.push(self.ends.keys().next().map(|k| k.0));
        t.push(self.downs.keys().next().map(|k| k.0));
        for n in self.nodes.values().filter(|n| n.alive) {
            t.push(n.auct.poll_timeout());
        }
        for h in &self.homes {
            t.push(h.bidder.poll_timeout());
        }
        t.into_iter().flatten().min()
    }

    /// Processes every event due up to `until`, then sets the clock to it.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(t) = self.next_event_time() {
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            self.step();
            self.record.events += 1;
            self.check();
        }
        self.now = self.now.max(until);
    }

    fn step(&mut self) {
        let now = self.now;
        if self.next_gossip <= now {
            self.gossip();
            self.next_gossip = now + self.gossip_every;
        }
        while let Some((&(t, ref node), _)) = self.downs.first_key_value() {
            if t > now {
                break;
            }
            let node = node.clone();
            self.downs.pop_first();
            for h in &mut self.homes {
                h.view.set_alive(&node, false);
                h.bidder.node_down(now, &node);
            }
        }
        while let Some((&(t, ref task), _)) = self.ends.first_key_value() {
            if t > now {
                break;
            }
            let task = task.clone();
            let Some(node) = self.ends.remove(&(t, task.clone())) else {
                break;
            };
            self.refresh_shares();
            if let Some(n) = self.nodes.get_mut(&node)
                && n.alive
            {
                let _ = n.auct.task_status(
                    now,
                    TaskStatus::new(task, TaskState::Finished, Some(node.clone())),
                );
            }
        }
        while let Some((&(t, s), _)) = self.inflight.first_key_value() {
            if t > now {
                break;
            }
            let Some((from, to, msg)) = self.inflight.remove(&(t, s)) else {
                break;
            };
            self.refresh_shares();
            self.deliver(from, to, msg);
        }
        let ids: Vec<NodeId> = self.nodes.keys().cloned().collect();
        for id in ids {
            let due = self
                .nodes
                .get(&id)
                .is_some_and(|n| n.alive && n.auct.poll_timeout().is_some_and(|t| t <= now));
            if due {
                self.refresh_shares();
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.auct.handle_timeout(now);
                }
                // later nodes must see this node's awards
                self.pump_all();
            }
        }
        for h in &mut self.homes {
            if h.bidder.poll_timeout().is_some_and(|t| t <= now) {
                h.bidder.handle_timeout(now, &mut h.view);
            }
        }
        self.pump_all();
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, msg: PeerMessage) {
        let now = self.now;
        if !self.nodes.get(&to).is_some_and(|n| n.alive) {
            return;
        }
        if msg.recipient() == Recipient::Auctioneer {
            if let Some(n) = self.nodes.get_mut(&to) {
                // Unknown kills are expected after races; they change nothing.
                let _ = n.auct.handle_message(now, from, msg);
            }
        } else if let Some(h) = self.homes.iter_mut().find(|h| h.node == to) {
            let r = h.bidder.handle_message(now, from, msg, &mut h.view);
            assert!(r.is_ok(), "bidder refused a message: {r:?}");
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: PeerMessage) {
        if let PeerMessage::Award(a) = &msg {
            self.record
                .answers
                .entry((to.clone(), a.bid_id.0))
                .or_default()
                .insert(format!("award {}", a.lease_id));
        }
        if let PeerMessage::Reject(r) = &msg {
            self.record
                .answers
                .entry((to.clone(), r.bid_id.0))
                .or_default()
                .insert(format!("reject {:?} v{}", r.reason, r.free_version));
        }
        if self.rng.random_bool(self.net.loss) {
            return;
        }
        let copies = if self.rng.random_bool(self.net.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let d = self
                .rng
                .random_range(self.net.delay_us.0..=self.net.delay_us.1);
            self.seq += 1;
            self.inflight.insert(
                (self.now + Duration::from_micros(d), self.seq),
                (from.clone(), to.clone(), msg.clone()),
            );
        }
    }

    fn pump_all(&mut self) {
        let now = self.now;
        let mut out = Vec::new();
        let ids: Vec<NodeId> = self.nodes.keys().cloned().collect();
        for id in ids {
            let Some(n) = self.nodes.get_mut(&id) else {
                continue;
            };
            if !n.alive {
                continue;
            }
            while let Some(t) = n.auct.poll_transmit() {
                out.push((id.clone(), t.to, t.msg));
            }
            while let Some(ev) = n.auct.poll_event() {
                if let auctioneer::Event::Launch { task_id, .. } = ev {
                    *self.record.launches.entry(task_id.clone()).or_insert(0) += 1;
                    let run = self
                        .run_times
                        .get(&task_id)
                        .copied()
                        .unwrap_or(Duration::from_millis(100));
                    let _ = n.auct.task_status(
                        now,
                        TaskStatus::new(task_id.clone(), TaskState::Running, Some(id.clone())),
                    );
                    self.ends.insert((now + run, task_id), id.clone());
                    while let Some(t) = n.auct.poll_transmit() {
                        out.push((id.clone(), t.to, t.msg));
                    }
                }
            }
        }
        for h in &mut self.homes {
            while let Some(t) = h.bidder.poll_transmit() {
                out.push((h.node.clone(), t.to, t.msg));
            }
            while let Some(ev) = h.bidder.poll_event() {
                match ev {
                    bidder::Event::Status { status, .. } if status.state.is_terminal() => {
                        self.record
                            .terminal
                            .entry(status.task_id)
                            .or_default()
                            .push(status.state);
                    }
                    bidder::Event::Placed { latency, .. } => self.record.placed.push(latency),
                    _ => {}
                }
            }
        }
        for (from, to, msg) in out {
            self.send(from, to, msg);
        }
    }

    fn gossip(&mut self) {
        let infos: Vec<NodeInfo> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.alive)
            .map(|(id, n)| {
                let attrs = self.attrs.get(id).cloned().unwrap_or_default();
                let mut info = NodeInfo::new(id.clone(), n.auct.capacity(), attrs);
                info.free = n.auct.free();
                info.version = n.auct.version();
                info.allocations = n.auct.allocations();
                info
            })
            .collect();
        for h in &mut self.homes {
            for info in &infos {
                h.view.upsert(info.clone());
            }
        }
        let shares = self.homes[0].view.fair_shares();
        for n in self.nodes.values_mut() {
            n.auct.set_shares(shares.clone());
        }
    }

    /// The invariants that must hold after every event.
    pub fn check(&self) {
        for (id, n) in &self.nodes {
            assert!(
                n.auct.used().fits_in(&n.auct.capacity()),
                "overcommit on {id}: used {} of {}",
                n.auct.used(),
                n.auct.capacity()
            );
        }
        for (key, answers) in &self.record.answers {
            assert!(
                answers.len() <= 1,
                "bid {key:?} got several answers: {answers:?}"
            );
        }
        for (task, count) in &self.record.launches {
            assert!(*count <= 1, "task {task} launched {count} times");
        }
        for (task, states) in &self.record.terminal {
            assert_eq!(
                states.len(),
                1,
                "task {task} ended more than once: {states:?}"
            );
        }
        if let Some(key) = &self.unique_key {
            let mut seen: BTreeMap<(FrameworkId, String, String), TaskId> = BTreeMap::new();
            for (id, n) in self.nodes.iter().filter(|(_, n)| n.alive) {
                let Some(value) = self.attrs.get(id).and_then(|a| a.get(key)) else {
                    continue;
                };
                for row in n.auct.task_rows() {
                    if row.state.is_terminal() {
                        continue;
                    }
                    let job = (row.framework.clone(), row.name.clone(), value.to_string());
                    if let Some(other) = seen.insert(job, row.task_id.clone()) {
                        panic!(
                            "tasks {other} and {} of job {} both run on {key}={value}",
                            row.task_id, row.name
                        );
                    }
                }
            }
        }
        for h in &self.homes {
            let s = h.bidder.stats();
            assert_eq!(
                s.bids_sent,
                s.bids_awarded
                    + s.bids_rejected
                    + s.bids_timed_out
                    + h.bidder.outstanding_bids() as u64,
                "bid accounting of {}",
                h.node
            );
        }
    }

    /// Running allocations per live node, as the harness saw them launched.
    pub fn node_state(&self, id: &NodeId) -> Option<(Resources, Resources)> {
        self.nodes
            .get(id)
            .map(|n| (n.auct.used(), n.auct.capacity()))
    }
}
