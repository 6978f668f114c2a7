//! The gossip driver: one task that writes this node's published state into
//! chitchat and turns chitchat's cluster state into [`Snapshot`]s.
//!
//! It wakes when [`super::Gossip::publish`] replaces the state (a watch
//! channel, so bursts of publishes coalesce into the latest) and every
//! [`POLL_PERIOD`] to look at chitchat. A poll first compares a cheap
//! signature (each member's id, `max_version` and liveness); only when that
//! changed does it decode the members whose `max_version` moved and publish
//! a new snapshot, so an idle cluster costs a short lock every poll and no
//! allocation of snapshots. Heartbeats alone do not change the signature.
//!
//! A restarted node appears in chitchat under a new generation of the same
//! node id; the snapshot shows one member per node id, the newest
//! generation.

use super::state::{self, KEY_LEAVING};
use super::{LocalState, Member, Snapshot};
use agora_protocol::ids::NodeId;
use chitchat::{Chitchat, ChitchatId, NodeState};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, watch};
use tracing::{debug, error, warn};

/// How often the driver looks at chitchat's state.
pub const POLL_PERIOD: Duration = Duration::from_millis(150);

/// What the driver remembers of one chitchat member between polls.
struct Cached {
    max_version: u64,
    node_id: Option<NodeId>,
    state: Option<LocalState>,
    leaving: bool,
}

/// The driver's state; [`Driver::run`] is its task.
pub struct Driver {
    chitchat: Arc<Mutex<Chitchat>>,
    publish_rx: watch::Receiver<LocalState>,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    cache: HashMap<ChitchatId, Cached>,
    signature: Vec<(ChitchatId, u64, bool)>,
}

impl Driver {
    /// A driver over a running chitchat.
    pub fn new(
        chitchat: Arc<Mutex<Chitchat>>,
        publish_rx: watch::Receiver<LocalState>,
        snapshot_tx: watch::Sender<Arc<Snapshot>>,
    ) -> Self {
        Driver {
            chitchat,
            publish_rx,
            snapshot_tx,
            cache: HashMap::new(),
            signature: Vec::new(),
        }
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
                    self.refresh().await;
                }
                _ = tick.tick() => self.refresh().await,
            }
        }
    }

    /// Publishes a new snapshot if chitchat's membership or any member's
    /// state changed since the last call.
    pub async fn refresh(&mut self) {
        let chitchat = self.chitchat.clone();
        let members = {
            let chitchat = chitchat.lock().await;
            let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
            let signature: Vec<(ChitchatId, u64, bool)> = chitchat
                .node_states()
                .iter()
                .map(|(id, ns)| (id.clone(), ns.max_version(), live.contains(id)))
                .collect();
            if signature == self.signature {
                return;
            }
            let mut members = Vec::with_capacity(signature.len());
            for (id, max_version, alive) in &signature {
                let Some(ns) = chitchat.node_states().get(id) else {
                    continue;
                };
                let cached = self.decode_cached(id, *max_version, ns);
                let Some(node_id) = cached.node_id.clone() else {
                    continue;
                };
                members.push((
                    id.generation_id,
                    Member {
                        id: node_id,
                        gossip_addr: id.gossip_advertise_addr,
                        alive: *alive && !cached.leaving,
                        state: cached.state.clone(),
                        generation: id.generation_id,
                    },
                ));
            }
            let present: HashSet<&ChitchatId> = signature.iter().map(|(id, _, _)| id).collect();
            self.cache.retain(|id, _| present.contains(id));
            self.signature = signature;
            members
        };
        let snapshot = Arc::new(newest_generation_per_node(members));
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
        leaving: ns.get(KEY_LEAVING).is_some(),
    }
}

/// One member per node id (the newest generation), in id order.
fn newest_generation_per_node(members: Vec<(u64, Member)>) -> Snapshot {
    let mut by_id: BTreeMap<NodeId, (u64, Member)> = BTreeMap::new();
    for (generation, member) in members {
        match by_id.get(&member.id) {
            Some((kept, _)) if *kept >= generation => {}
            _ => {
                by_id.insert(member.id.clone(), (generation, member));
            }
        }
    }
    Snapshot {
        members: by_id.into_values().map(|(_, m)| m).collect(),
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

    #[test]
    fn newest_generation_wins_and_order_is_by_id() {
        let snap = newest_generation_per_node(vec![
            (5, member("b", false)),
            (7, member("b", true)),
            (6, member("b", false)),
            (1, member("a", true)),
        ]);
        let got: Vec<(&str, bool)> = snap
            .members
            .iter()
            .map(|m| (m.id.as_str(), m.alive))
            .collect();
        assert_eq!(got, vec![("a", true), ("b", true)]);
    }
}
