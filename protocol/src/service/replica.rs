//! Spreading service specs between nodes (sans-IO): a node's [`Replica`]
//! takes writes, publishes its store's summary, and exchanges entries with
//! peers whose summaries differ until every live node holds the same set.
//!
//! - **A write** ([`Replica::write`]) is stamped with this node's hybrid
//!   logical clock, applied here, and pushed at once to up to
//!   [`PUSH_FANOUT`] live peers; the others learn it by anti-entropy.
//! - **Anti-entropy**: the driver hands the replica the summary every live
//!   peer publishes (in gossip) with [`Replica::handle_summaries`]. Every
//!   [`SYNC_EVERY`] the replica picks one peer whose summary differs from
//!   its own (in turn, so that no peer is starved) and sends it its digest
//!   ([`SyncMessage::Sync`]); the peer answers with the entries it holds
//!   newer and its own digest ([`SyncMessage::Reply`]); this node applies
//!   them and sends back what it holds newer ([`SyncMessage::Push`]). One
//!   exchange makes two nodes equal; at most one is open at a time, and one
//!   not answered within [`SYNC_TIMEOUT`] is given up.
//! - Every message carries at most [`MAX_ENTRIES`] entries; the rest follow
//!   in the next exchange (the summaries still differ).
//! - Tombstones are collected as [`super::store::TOMBSTONE_TTL`] passes.

use super::spec::ServiceSpec;
use super::store::{Applied, Digest, Entry, Store, Summary};
use super::version::{Hlc, Version};
use crate::ids::NodeId;
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How often a node starts an exchange with a peer that differs.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How long an exchange may wait for its answer.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// Live peers a write is pushed to at once.
pub const PUSH_FANOUT: usize = 8;
/// Most entries in one message.
pub const MAX_ENTRIES: usize = 256;
/// Most messages waiting to be sent.
pub const MAX_OUT: usize = 1024;

/// What replicas say to each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMessage {
    /// Here is my digest: send me what you hold newer, and yours.
    Sync(Digest),
    /// The entries I hold newer than your digest, and my digest.
    Reply {
        /// Entries.
        entries: Vec<Entry>,
        /// The answering node's digest.
        digest: Digest,
    },
    /// Entries for you (a write, or what I hold newer than your digest).
    Push(Vec<Entry>),
}

/// Why a write was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The spec is invalid (the message names the field).
    #[error("{0}")]
    Invalid(String),
    /// There is no such service (a removal or an update of a missing one).
    #[error("there is no service {0:?}; `agora service ls` lists them")]
    Unknown(String),
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Exchanges started.
    pub syncs: u64,
    /// Exchanges given up unanswered.
    pub sync_timeouts: u64,
    /// Entries taken from peers.
    pub entries_taken: u64,
    /// Entries refused (invalid, or the store full).
    pub entries_refused: u64,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
}

/// One node's replica of the service specs.
#[derive(Debug)]
pub struct Replica {
    me: NodeId,
    store: Store,
    hlc: Hlc,
    peers: BTreeMap<NodeId, Summary>,
    open: Option<(NodeId, Instant)>,
    next_sync: Instant,
    turn: usize,
    out: VecDeque<(NodeId, SyncMessage)>,
    /// Counters.
    pub stats: ReplicaStats,
}

impl Replica {
    /// An empty replica on node `me`, started at `now`.
    pub fn new(me: NodeId, now: Instant) -> Self {
        Replica {
            me,
            store: Store::new(),
            hlc: Hlc::default(),
            peers: BTreeMap::new(),
            open: None,
            next_sync: now,
            turn: 0,
            out: VecDeque::new(),
            stats: ReplicaStats::default(),
        }
    }

    /// The specs held.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The summary to publish in gossip.
    pub fn summary(&self) -> Summary {
        self.store.summary()
    }

    /// Creates or replaces a service (`Some(spec)`) or removes one
    /// (`None`), at this node's wall clock `wall_ms`. Returns the entry
    /// written.
    pub fn write(
        &mut self,
        now: Instant,
        wall_ms: u64,
        name: &str,
        spec: Option<ServiceSpec>,
    ) -> Result<Entry, WriteError> {
        match &spec {
            Some(s) => {
                s.validate()
                    .map_err(|e| WriteError::Invalid(e.to_string()))?;
                if s.name != name {
                    return Err(WriteError::Invalid(format!(
                        "name: the spec is named {:?}, not {name:?}",
                        s.name
                    )));
                }
            }
            None => {
                if self.store.get(name).is_none_or(|e| e.spec.is_none()) {
                    return Err(WriteError::Unknown(name.to_string()));
                }
            }
        }
        let entry = Entry {
            name: name.to_string(),
            version: Version {
                stamp: self.hlc.stamp(wall_ms),
                writer: self.me.clone(),
            },
            spec,
        };
        if let Applied::Refused(why) = self.store.apply(now, entry.clone()) {
            return Err(WriteError::Invalid(why));
        }
        let peers: Vec<NodeId> = self.peers.keys().cloned().collect();
        let n = peers.len();
        for i in 0..n.min(PUSH_FANOUT) {
            let to = peers[(self.turn + i) % n].clone();
            self.send(to, SyncMessage::Push(vec![entry.clone()]));
        }
        self.turn = self.turn.wrapping_add(PUSH_FANOUT);
        Ok(entry)
    }

    /// The summaries the live peers publish now (this node excluded; a
    /// peer missing here is gone).
    pub fn handle_summaries(&mut self, peers: impl IntoIterator<Item = (NodeId, Summary)>) {
        self.peers = peers.into_iter().filter(|(n, _)| *n != self.me).collect();
        if self
            .open
            .as_ref()
            .is_some_and(|(p, _)| !self.peers.contains_key(p))
        {
            self.open = None;
        }
    }

    /// When [`Replica::handle_tick`] has work next.
    pub fn poll_timeout(&self) -> Instant {
        match &self.open {
            Some((_, deadline)) => self.next_sync.min(*deadline),
            None => self.next_sync,
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, SyncMessage)> {
        self.out.pop_front()
    }

    /// Timers: gives up an exchange past its deadline, starts the next one,
    /// collects old tombstones.
    pub fn handle_tick(&mut self, now: Instant) {
        if let Some((_, deadline)) = &self.open
            && now >= *deadline
        {
            self.open = None;
            self.stats.sync_timeouts += 1;
        }
        if now < self.next_sync {
            return;
        }
        self.next_sync = now + SYNC_EVERY;
        self.store.collect(now);
        if self.open.is_some() {
            return;
        }
        let mine = self.store.summary();
        let differ: Vec<&NodeId> = self
            .peers
            .iter()
            .filter(|(_, s)| **s != mine)
            .map(|(n, _)| n)
            .collect();
        if differ.is_empty() {
            return;
        }
        let to = differ[self.turn % differ.len()].clone();
        self.turn = self.turn.wrapping_add(1);
        self.stats.syncs += 1;
        self.open = Some((to.clone(), now + SYNC_TIMEOUT));
        let digest = self.store.digest();
        self.send(to, SyncMessage::Sync(digest));
    }

    /// A message from a peer; `wall_ms` is this node's clock.
    pub fn handle_message(&mut self, now: Instant, wall_ms: u64, from: NodeId, msg: SyncMessage) {
        match msg {
            SyncMessage::Sync(theirs) => {
                let entries = self.newer_than(&theirs);
                let digest = self.store.digest();
                self.send(from, SyncMessage::Reply { entries, digest });
            }
            SyncMessage::Reply { entries, digest } => {
                if self.open.as_ref().is_some_and(|(p, _)| *p == from) {
                    self.open = None;
                }
                self.take(now, wall_ms, entries);
                let back = self.newer_than(&digest);
                if !back.is_empty() {
                    self.send(from, SyncMessage::Push(back));
                }
            }
            SyncMessage::Push(entries) => self.take(now, wall_ms, entries),
        }
    }

    fn newer_than(&self, theirs: &Digest) -> Vec<Entry> {
        let mut v = self.store.newer_than(theirs);
        v.truncate(MAX_ENTRIES);
        v
    }

    fn take(&mut self, now: Instant, wall_ms: u64, entries: Vec<Entry>) {
        for e in entries.into_iter().take(MAX_ENTRIES) {
            self.hlc.observe(e.version.stamp, wall_ms);
            match self.store.apply(now, e) {
                Applied::Taken => self.stats.entries_taken += 1,
                Applied::Stale => {}
                Applied::Refused(_) => self.stats.entries_refused += 1,
            }
        }
    }

    fn send(&mut self, to: NodeId, msg: SyncMessage) {
        if self.out.len() >= MAX_OUT {
            self.stats.dropped += 1;
            return;
        }
        self.out.push_back((to, msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;
    use crate::task::Command;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn spec(name: &str, instances: u32) -> ServiceSpec {
        let mut s = ServiceSpec::new(
            name,
            Command::Shell("sleep 1000".into()),
            Resources::cpu_mem(100, 16),
        );
        s.instances = instances;
        s
    }

    /// Replicas on a virtual clock whose messages are delivered each step
    /// (except to or from the nodes in `cut`), and whose summaries are
    /// "gossiped" every step.
    struct Net {
        now: Instant,
        nodes: BTreeMap<NodeId, Replica>,
        cut: Vec<NodeId>,
        messages: u64,
    }

    impl Net {
        fn new(n: usize) -> Self {
            let nodes = (0..n)
                .map(|i| {
                    let me = id(&format!("n{i}"));
                    (me.clone(), Replica::new(me, Instant::ZERO))
                })
                .collect();
            Net {
                now: Instant::ZERO,
                nodes,
                cut: Vec::new(),
                messages: 0,
            }
        }

        fn wall(&self) -> u64 {
            1_700_000_000_000 + (self.now - Instant::ZERO).as_millis() as u64
        }

        fn r(&mut self, n: &str) -> &mut Replica {
            self.nodes.get_mut(&id(n)).unwrap()
        }

        fn step(&mut self) {
            self.now = self.now + Duration::from_millis(100);
            let (now, wall) = (self.now, self.wall());
            let live: Vec<NodeId> = self
                .nodes
                .keys()
                .filter(|n| !self.cut.contains(n))
                .cloned()
                .collect();
            let summaries: Vec<(NodeId, Summary)> = live
                .iter()
                .map(|n| (n.clone(), self.nodes[n].summary()))
                .collect();
            for (n, r) in &mut self.nodes {
                if self.cut.contains(n) {
                    r.handle_summaries(Vec::new());
                } else {
                    r.handle_summaries(summaries.clone());
                }
                r.handle_tick(now);
            }
            for _ in 0..10 {
                let mut sent = Vec::new();
                for (n, r) in &mut self.nodes {
                    while let Some((to, m)) = r.poll_transmit() {
                        sent.push((n.clone(), to, m));
                    }
                }
                if sent.is_empty() {
                    break;
                }
                for (from, to, m) in sent {
                    if self.cut.contains(&from) || self.cut.contains(&to) {
                        continue;
                    }
                    self.messages += 1;
                    if let Some(r) = self.nodes.get_mut(&to) {
                        r.handle_message(now, wall, from, m);
                    }
                }
            }
        }

        fn converged(&self) -> bool {
            let mut s = self.nodes.values().map(Replica::summary);
            let first = s.next().unwrap();
            s.all(|x| x == first)
        }
    }

    #[test]
    fn a_write_reaches_every_node_and_removals_win() {
        let mut net = Net::new(20);
        net.step();
        let (now, wall) = (net.now, net.wall());
        net.r("n3")
            .write(now, wall, "web", Some(spec("web", 3)))
            .unwrap();
        let mut steps = 0;
        while !net.converged() {
            net.step();
            steps += 1;
            assert!(steps < 50, "not converged after {steps} steps");
        }
        for r in net.nodes.values() {
            assert_eq!(
                r.store()
                    .get("web")
                    .unwrap()
                    .spec
                    .as_ref()
                    .unwrap()
                    .instances,
                3
            );
        }
        // Removed elsewhere: the tombstone wins everywhere.
        let (now, wall) = (net.now, net.wall());
        net.r("n17").write(now, wall, "web", None).unwrap();
        while !net.converged() {
            net.step();
        }
        assert!(
            net.nodes
                .values()
                .all(|r| r.store().services().next().is_none())
        );
        // Removing what does not exist, or writing a bad spec, is refused.
        let (now, wall) = (net.now, net.wall());
        assert!(matches!(
            net.r("n1").write(now, wall, "web", None),
            Err(WriteError::Unknown(_))
        ));
        let mut bad = spec("api", 1);
        bad.instances = 1_000_000;
        assert!(
            matches!(net.r("n1").write(now, wall, "api", Some(bad)), Err(WriteError::Invalid(m)) if m.contains("instances"))
        );
    }

    #[test]
    fn two_sides_of_a_partition_write_and_converge_on_the_later_writes_after_the_heal() {
        let mut net = Net::new(6);
        net.step();
        net.cut = vec![id("n4"), id("n5")];
        let (now, wall) = (net.now, net.wall());
        net.r("n0")
            .write(now, wall, "web", Some(spec("web", 2)))
            .unwrap();
        net.r("n4")
            .write(now, wall, "db", Some(spec("db", 1)))
            .unwrap();
        for _ in 0..10 {
            net.step();
        }
        // The later write of "web" is on the cut-off side.
        let (now, wall) = (net.now, net.wall());
        net.r("n5")
            .write(now, wall, "web", Some(spec("web", 7)))
            .unwrap();
        for _ in 0..10 {
            net.step();
        }
        assert!(!net.converged());
        net.cut.clear();
        let mut steps = 0;
        while !net.converged() {
            net.step();
            steps += 1;
            assert!(steps < 50);
        }
        for r in net.nodes.values() {
            let names: Vec<(&str, u32)> = r
                .store()
                .services()
                .map(|(_, s)| (s.name.as_str(), s.instances))
                .collect();
            assert_eq!(names, [("db", 1), ("web", 7)]);
        }
        // Once equal, the replicas stop exchanging.
        let before = net.messages;
        for _ in 0..20 {
            net.step();
        }
        assert_eq!(net.messages, before, "nothing sent between equal replicas");
    }

    #[test]
    fn an_exchange_with_a_silent_peer_is_given_up() {
        let mut r = Replica::new(id("a"), Instant::ZERO);
        r.write(Instant::ZERO, 1, "web", Some(spec("web", 1)))
            .unwrap();
        r.handle_summaries(vec![(id("b"), Summary::default())]);
        while r.poll_transmit().is_some() {}
        r.handle_tick(Instant::ZERO);
        assert!(matches!(r.poll_transmit(), Some((_, SyncMessage::Sync(_)))));
        // No answer: no second exchange until the first times out.
        r.handle_tick(Instant::ZERO + SYNC_EVERY);
        assert!(r.poll_transmit().is_none());
        r.handle_tick(Instant::ZERO + SYNC_TIMEOUT);
        assert_eq!(r.stats.sync_timeouts, 1);
        assert!(matches!(r.poll_transmit(), Some((_, SyncMessage::Sync(_)))));
    }
}
