//! The gossip driver: one task that writes this node's published state into
//! chitchat and turns chitchat's cluster state into [`Snapshot`]s.
//!
//! It wakes when [`super::Gossip::publish`] replaces the state (a watch
//! channel, so bursts of publishes coalesce into the latest) and every
//! [`POLL_PERIOD`] to look at chitchat. A poll feeds every member's
//! heartbeat to the failure detector (`detector.rs`, which decides
//! [`Member::alive`], with this tick's lateness for its local health), sends
//! the detector's probes and the join push's exchanges (`join.rs`) through
//! chitchat, then compares a cheap signature (each member's id,
//! `max_version` and liveness); only when that changed does it decode the
//! members whose `max_version` moved and publish a new snapshot, so an idle
//! cluster costs a short lock every poll and no allocation of snapshots.
//! Heartbeats alone do not change the signature.
//!
//! A restarted node appears in chitchat under a new generation of the same
//! node id; the snapshot shows one member per node id. Which one: a node id
//! belongs to the identity key (libp2p peer id) of its oldest incarnation
//! that the failure detector holds alive, and the snapshot shows that
//! identity's newest incarnation (a restart keeps the key, so this is the
//! restarted node, as before). When no incarnation is alive, the newest.
//! So a second agent started with a node id already in use under another
//! key does not take the id over (issue 12): every node keeps routing it
//! to the first. The other incarnations of this node's own id are listed in
//! [`Snapshot::rivals`], with how often their heartbeat advanced, so that
//! the agent can tell a live duplicate from its own previous run (see
//! `crate::identity::DuplicateGuard`).

use super::detector::{Detector, Liveness};
use super::join::Joiner;
use super::state::{self, KEY_LEAVING, KEY_PEER_ID};
use super::{Incarnation, LocalState, Member, Snapshot};
use agora_protocol::ids::NodeId;
use chitchat::{Chitchat, ChitchatHandle, ChitchatId, NodeState};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};
use tracing::{debug, error, info, warn};

/// How often the driver looks at chitchat's state (the failure detector's
/// resolution, and a newcomer's delay to be seen alive once its second
/// heartbeat arrived).
pub const POLL_PERIOD: Duration = Duration::from_millis(50);

/// What the driver remembers of one chitchat member between polls.
struct Cached {
    max_version: u64,
    node_id: Option<NodeId>,
    state: Option<LocalState>,
    /// Its peer id key, even while the rest of its state is incomplete.
    peer_id: Option<String>,
    leaving: bool,
}

/// What the driver follows of another incarnation of its own node id.
struct Rival {
    heartbeat: chitchat::Heartbeat,
    advances: u64,
}

/// The driver's state; [`Driver::run`] is its task.
pub struct Driver {
    chitchat: Arc<Mutex<Chitchat>>,
    handle: Arc<ChitchatHandle>,
    counters: Arc<super::relay::Counters>,
    detector: Detector<ChitchatId>,
    joiner: Joiner<ChitchatId>,
    publish_rx: watch::Receiver<LocalState>,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    cache: HashMap<ChitchatId, Cached>,
    signature: Vec<(ChitchatId, u64, bool)>,
    /// Other incarnations of this node's id, by chitchat id.
    rivals: HashMap<ChitchatId, Rival>,
}

impl Driver {
    /// A driver over a running chitchat.
    pub fn new(
        handle: Arc<ChitchatHandle>,
        interval: Duration,
        publish_rx: watch::Receiver<LocalState>,
        snapshot_tx: watch::Sender<Arc<Snapshot>>,
    ) -> Self {
        Driver {
            chitchat: handle.chitchat(),
            handle,
            counters: Arc::default(),
            detector: Detector::new(interval),
            joiner: Joiner::new(Instant::now()),
            publish_rx,
            snapshot_tx,
            cache: HashMap::new(),
            signature: Vec::new(),
            rivals: HashMap::new(),
        }
    }

    /// Counts probes, join pushes and local health in `counters`.
    pub fn with_counters(mut self, counters: Arc<super::relay::Counters>) -> Self {
        self.counters = counters;
        self
    }

    /// Runs until the publishing side ([`super::Gossip`]) is dropped.
    ///
    /// `terminated` resolves when chitchat's server task ends; an error
    /// there (its socket failed) is logged, since membership then stops
    /// changing.
    pub async fn run(
        mut self,
        terminated: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let mut tick = tokio::time::interval(POLL_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut terminated = Some(Box::pin(terminated));
        loop {
            tokio::select! {
                result = async { terminated.as_mut()?.as_mut().await.err() }, if terminated.is_some() => {
                    terminated = None;
                    if let Some(err) = result {
                        error!(
                            err = %format!("{err:#}"),
                            "gossip stopped: this node no longer exchanges membership"
                        );
                    }
                }
                changed = self.publish_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let state = self.publish_rx.borrow_and_update().clone();
                    write_local_state(&self.chitchat, &state).await;
                    self.refresh(None).await;
                }
                due = tick.tick() => self.refresh(Some(due.into_std())).await,
            }
        }
    }

    /// Publishes a new snapshot if chitchat's membership or any member's
    /// state changed since the last call.
    ///
    /// `due` is when this poll was due (a tick), to measure its lateness for
    /// the detector's local health; `None` for a refresh out of turn.
    pub async fn refresh(&mut self, due: Option<Instant>) {
        let chitchat = self.chitchat.clone();
        let mut sends: Vec<SocketAddr> = Vec::new();
        let result = {
            let chitchat = chitchat.lock().await;
            let me = chitchat.self_chitchat_id().clone();
            let now = Instant::now();
            for (id, ns) in chitchat.node_states() {
                if *id != me {
                    self.detector
                        .handle_heartbeat(id, u64::from(ns.heartbeat()), now);
                }
            }
            if let Some(due) = due {
                self.detector.handle_tick(due, now);
            }
            for id in self.detector.poll_probes(now) {
                debug!(member = %id.node_id, "probing a silent member");
                self.counters.probes.fetch_add(1, Ordering::Relaxed);
                sends.push(id.gossip_advertise_addr);
            }
            let health = u64::from(self.detector.local_health());
            if self.counters.local_health.swap(health, Ordering::Relaxed) != health {
                debug!(local_health = health, "gossip: local health changed");
            }
            if self.joiner.active(now) {
                let seeds: Vec<SocketAddr> = chitchat
                    .seed_nodes()
                    .into_iter()
                    .filter(|a| *a != me.gossip_advertise_addr)
                    .collect();
                let others = chitchat
                    .node_states()
                    .keys()
                    .filter(|id| id.node_id != me.node_id)
                    .map(|id| (id.clone(), id.gossip_advertise_addr));
                let pushes = self.joiner.poll(now, seeds, others);
                self.counters
                    .join_pushes
                    .fetch_add(pushes.len() as u64, Ordering::Relaxed);
                sends.extend(pushes);
            }
            let detector = &self.detector;
            let alive_of = |id: &ChitchatId| *id == me || detector.is_alive(id);
            // Other incarnations of this node's id: their heartbeats count
            // (normally there are none, so heartbeats cost nothing here).
            let mut rivals_moved = false;
            for (id, ns) in chitchat.node_states() {
                if id.node_id != me.node_id || *id == me {
                    continue;
                }
                let beat = ns.heartbeat();
                let r = self.rivals.entry(id.clone()).or_insert_with(|| {
                    rivals_moved = true;
                    Rival {
                        heartbeat: beat,
                        advances: 0,
                    }
                });
                if beat > r.heartbeat {
                    r.heartbeat = beat;
                    r.advances += 1;
                    rivals_moved = true;
                }
            }
            let signature: Vec<(ChitchatId, u64, bool)> = chitchat
                .node_states()
                .iter()
                .map(|(id, ns)| (id.clone(), ns.max_version(), alive_of(id)))
                .collect();
            if signature == self.signature && !rivals_moved {
                None
            } else {
                Some(self.members_of(&chitchat, signature))
            }
        };
        for addr in sends {
            if let Err(err) = self.handle.gossip(addr) {
                debug!(%addr, %err, "could not start a gossip exchange");
            }
        }
        let Some((members, rivals)) = result else {
            return;
        };
        let mut snapshot = one_incarnation_per_node(members);
        snapshot.rivals = rivals;
        let snapshot = Arc::new(snapshot);
        self.snapshot_tx.send_if_modified(|current| {
            if **current == *snapshot {
                false
            } else {
                debug!(members = snapshot.members.len(), "gossip snapshot changed");
                *current = snapshot;
                true
            }
        });
    }

    /// The members and rivals of a changed `signature` (and the caches
    /// brought up to date with it).
    fn members_of(
        &mut self,
        chitchat: &Chitchat,
        signature: Vec<(ChitchatId, u64, bool)>,
    ) -> (Vec<Candidate>, Vec<Incarnation>) {
        {
            let mut members = Vec::with_capacity(signature.len());
            let mut rivals = Vec::new();
            for (id, max_version, alive) in &signature {
                let Some(ns) = chitchat.node_states().get(id) else {
                    continue;
                };
                let cached = self.decode_cached(id, *max_version, ns);
                let Some(node_id) = cached.node_id.clone() else {
                    continue;
                };
                let alive = *alive && !cached.leaving;
                let peer_id = cached.peer_id.clone();
                let state = cached.state.clone();
                if let Some(r) = self.rivals.get(id) {
                    rivals.push(Incarnation {
                        gossip_addr: id.gossip_advertise_addr,
                        generation: id.generation_id,
                        peer_id: peer_id.clone(),
                        alive,
                        heartbeat_advances: r.advances,
                    });
                }
                members.push((
                    (id.generation_id, id.gossip_advertise_addr),
                    peer_id,
                    Member {
                        id: node_id,
                        gossip_addr: id.gossip_advertise_addr,
                        alive,
                        state,
                        generation: id.generation_id,
                    },
                ));
            }
            let present: HashSet<&ChitchatId> = signature.iter().map(|(id, _, _)| id).collect();
            self.cache.retain(|id, _| present.contains(id));
            self.rivals.retain(|id, _| present.contains(id));
            self.detector.retain(|id| present.contains(id));
            for (id, _, alive) in &signature {
                let was = self.signature.iter().find(|(o, _, _)| o == id).map(|s| s.2);
                if was == Some(true) && !alive && self.detector.liveness(id) == Some(Liveness::Dead)
                {
                    let timeout = self.detector.suspicion_timeout(id).unwrap_or_default();
                    info!(
                        member = %id.node_id,
                        suspect_after_ms = timeout.as_millis() as u64,
                        local_health = self.detector.local_health(),
                        "gossip: member silent past its timeout and probes; holding it dead"
                    );
                }
            }
            self.signature = signature;
            (members, rivals)
        }
    }

    fn decode_cached(&mut self, id: &ChitchatId, max_version: u64, ns: &NodeState) -> &Cached {
        let stale = self
            .cache
            .get(id)
            .is_none_or(|c| c.max_version != max_version);
        if stale {
            let cached = decode_member(id, max_version, ns);
            self.cache.insert(id.clone(), cached);
        }
        // Inserted just above when absent.
        &self.cache[id]
    }
}

/// Decodes one member, logging (once per version) what is wrong with it.
fn decode_member(id: &ChitchatId, max_version: u64, ns: &NodeState) -> Cached {
    let node_id = match NodeId::new(&*id.node_id) {
        Ok(node_id) => Some(node_id),
        Err(err) => {
            warn!(member = ?id, %err, "gossip member has an invalid node id; ignoring it");
            None
        }
    };
    let state = match state::decode(|key| ns.get(key)) {
        Ok(state) => Some(state),
        // Keys can arrive over several gossip rounds: not worth a warning.
        Err(err @ state::DecodeError::Missing(_)) => {
            debug!(member = ?id, %err, "gossip member's state is incomplete so far");
            None
        }
        Err(err) => {
            warn!(member = ?id, %err, "gossip member published a state this node cannot read");
            None
        }
    };
    Cached {
        max_version,
        node_id,
        state,
        peer_id: ns.get(KEY_PEER_ID).map(str::to_string),
        leaving: ns.get(KEY_LEAVING).is_some(),
    }
}

/// The key incarnations of one node id are ordered by: generation, then
/// address (two agents started in the same millisecond).
type Age = (u64, std::net::SocketAddr);

/// One incarnation before the choice of one per node id: its age, its
/// identity (peer id) and the member it would show as.
type Candidate = (Age, Option<String>, Member);

/// One member per node id, in id order: the newest incarnation of the
/// identity (peer id) whose oldest live incarnation is the oldest; the
/// newest incarnation when none is alive (see the module docs).
fn one_incarnation_per_node(members: Vec<(Age, Option<String>, Member)>) -> Snapshot {
    let mut by_id: BTreeMap<NodeId, Vec<(Age, Option<String>, Member)>> = BTreeMap::new();
    for m in members {
        by_id.entry(m.2.id.clone()).or_default().push(m);
    }
    let chosen = by_id.into_values().filter_map(|mut incs| {
        let owner = incs
            .iter()
            .filter(|(_, peer, m)| m.alive && peer.is_some())
            .min_by_key(|(age, _, _)| *age)
            .and_then(|(_, peer, _)| peer.clone());
        if let Some(owner) = owner {
            incs.retain(|(_, peer, _)| peer.as_deref() == Some(owner.as_str()));
        }
        incs.into_iter()
            .max_by_key(|(age, _, _)| *age)
            .map(|(_, _, m)| m)
    });
    Snapshot {
        members: chosen.collect(),
        rivals: Vec::new(),
    }
}

/// Writes `state`'s keys into this node's chitchat state (unchanged values
/// are not rewritten, so they cost no gossip).
pub async fn write_local_state(chitchat: &Mutex<Chitchat>, state: &LocalState) {
    let mut chitchat = chitchat.lock().await;
    let node_state = chitchat.self_node_state();
    for (key, value) in state::encode(state) {
        node_state.set(key, value);
    }
}

/// Marks this node as leaving, so peers stop counting it alive at once.
pub async fn mark_leaving(chitchat: &Mutex<Chitchat>) {
    chitchat
        .lock()
        .await
        .self_node_state()
        .set(KEY_LEAVING, "1");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, alive: bool) -> Member {
        Member {
            id: NodeId::new(id).unwrap(),
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            alive,
            state: None,
            generation: 0,
        }
    }

    fn inc(generation: u64, peer: &str, m: Member) -> (Age, Option<String>, Member) {
        (
            (generation, "127.0.0.1:1".parse().unwrap()),
            Some(peer.to_string()),
            m,
        )
    }

    fn chosen(snap: &Snapshot) -> Vec<(&str, bool)> {
        snap.members
            .iter()
            .map(|m| (m.id.as_str(), m.alive))
            .collect()
    }

    #[test]
    fn a_restarted_node_shows_its_newest_generation_and_order_is_by_id() {
        let snap = one_incarnation_per_node(vec![
            inc(5, "p", member("b", false)),
            inc(7, "p", member("b", true)),
            inc(6, "p", member("b", false)),
            inc(1, "q", member("a", true)),
        ]);
        assert_eq!(chosen(&snap), vec![("a", true), ("b", true)]);
        // The old run still held alive by the failure detector changes nothing.
        let snap = one_incarnation_per_node(vec![
            inc(5, "p", member("b", true)),
            inc(7, "p", member("b", true)),
        ]);
        assert_eq!(snap.members.len(), 1);
        // A node that left (not alive) is seen leaving at once.
        let snap = one_incarnation_per_node(vec![
            inc(5, "p", member("b", true)),
            inc(7, "p", member("b", false)),
        ]);
        assert_eq!(chosen(&snap), vec![("b", false)]);
    }

    #[test]
    fn a_node_id_stays_with_the_identity_that_held_it_first() {
        let mut first = member("b", true);
        first.gossip_addr = "127.0.0.1:100".parse().unwrap();
        let mut second = member("b", true);
        second.gossip_addr = "127.0.0.1:200".parse().unwrap();
        let addr = |s: &Snapshot| s.members[0].gossip_addr.port();
        // Both alive: the first keeps the id, the newer generation is not shown.
        let snap = one_incarnation_per_node(vec![
            inc(5, "p", first.clone()),
            inc(7, "q", second.clone()),
        ]);
        assert_eq!(addr(&snap), 100);
        // The impostor left (or died): still the first.
        let mut gone = second.clone();
        gone.alive = false;
        let snap = one_incarnation_per_node(vec![inc(5, "p", first.clone()), inc(7, "q", gone)]);
        assert_eq!((addr(&snap), snap.members[0].alive), (100, true));
        // The first is dead (a replacement machine with a new key): the new one.
        let mut dead = first;
        dead.alive = false;
        let snap = one_incarnation_per_node(vec![inc(5, "p", dead), inc(7, "q", second)]);
        assert_eq!((addr(&snap), snap.members[0].alive), (200, true));
    }
}
