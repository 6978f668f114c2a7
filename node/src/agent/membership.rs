//! How the core follows the cluster: its own entry in the view (from its
//! ledger), coalesced publishing of its state to gossip, and the diff of
//! each gossip snapshot into the view: new and changed nodes, liveness,
//! deaths (every bidder is told, so tasks there are reported lost), and a
//! grace of [`RESTART_GRACE`] for a node seen restarting (a new generation
//! with a newer ledger version that the failure detector does not hold
//! alive yet), so that a quick agent restart does not lose its tasks.

use super::core::{Core, PUBLISH_EVERY, RESTART_GRACE};
use crate::gossip::Snapshot;
use agora_protocol::view::{NodeInfo, Upsert};
use agora_protocol::{Instant, NodeId};
use std::collections::BTreeSet;

impl Core {
    /// This node's own entry in the view, from its ledger.
    pub(super) fn refresh_self(&mut self) {
        let mut info = NodeInfo::new(
            self.me.clone(),
            self.auctioneer.capacity(),
            self.local_state.attrs.clone(),
        );
        info.free = self.auctioneer.free();
        info.version = self.version_offset + self.auctioneer.version();
        info.allocations = self.auctioneer.allocations();
        info.addr = self.gossip_addr.clone();
        self.view.upsert(info);
    }

    pub(super) fn schedule_publish(&mut self, now: Instant) {
        if self.publish_due.is_none() {
            let at = (self.last_publish + PUBLISH_EVERY).max(now);
            self.publish_due = Some(at);
        }
    }

    pub(super) fn publish(&mut self, now: Instant) {
        self.last_publish = now;
        let mut state = self.local_state.clone();
        state.total = self.auctioneer.capacity();
        state.free = self.auctioneer.free();
        state.version = self.version_offset + self.auctioneer.version();
        state.allocations = self.auctioneer.allocations();
        self.gossip.publish(state);
    }

    /// Publishes the ledger now (used on shutdown).
    pub fn publish_now(&mut self) {
        let now = self.clock.now();
        self.publish(now);
    }

    /// Diffs a membership snapshot into the view.
    pub fn on_snapshot(&mut self, snap: &Snapshot) {
        let now = self.clock.now();
        let mut changed = false;
        let mut seen = BTreeSet::new();
        let mut died = Vec::new();
        for m in &snap.members {
            if m.id == self.me {
                continue;
            }
            seen.insert(m.id.clone());
            let Some(st) = &m.state else { continue };
            self.p2p.set_peer(&m.id, &st.peer_id, &st.p2p_addr);
            let prev = self.view.get(&m.id).map(|n| (n.alive, n.version));
            let was_alive = prev.map(|p| p.0);
            // A node that restarted shows up as a new generation that the
            // failure detector does not hold alive yet, publishing a newer
            // ledger version: give it RESTART_GRACE before calling it dead.
            let restarting = !m.alive
                && (self.restarting.contains_key(&m.id)
                    || prev.is_some_and(|(alive, v)| alive && st.version > v));
            if restarting {
                self.restarting
                    .entry(m.id.clone())
                    .or_insert(now + RESTART_GRACE);
            } else {
                self.restarting.remove(&m.id);
            }
            let alive = m.alive || restarting;
            let info = NodeInfo {
                id: m.id.clone(),
                addr: m.gossip_addr.to_string(),
                total: st.total,
                free: st.free,
                version: st.version,
                attrs: st.attrs.clone(),
                alive,
                allocations: st.allocations.clone(),
            };
            if self.view.upsert(info) != Upsert::Stale {
                changed = true;
            }
            if self.view.set_alive(&m.id, alive) {
                changed = true;
            }
            if alive {
                if was_alive != Some(true) {
                    tracing::info!(node = %m.id, "node is alive");
                }
            } else if was_alive == Some(true) {
                died.push(m.id.clone());
            }
        }
        // Restarts that did not come back in time are deaths.
        let expired: Vec<NodeId> = self
            .restarting
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.restarting.remove(&id);
            if self.view.set_alive(&id, false) {
                died.push(id);
            }
        }
        // Members that vanished from gossip are dead too.
        let vanished: Vec<NodeId> = self
            .view
            .iter()
            .filter(|n| n.id != self.me && n.alive && !seen.contains(&n.id))
            .map(|n| n.id.clone())
            .collect();
        for id in vanished {
            self.view.set_alive(&id, false);
            changed = true;
            died.push(id);
        }
        for id in died {
            tracing::warn!(node = %id, "node declared dead; its tasks are lost");
            changed = true;
            for f in self.frameworks.values_mut() {
                f.bidder.node_down(now, &id);
            }
        }
        self.alive = self
            .view
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.id.clone())
            .collect();
        if changed {
            self.auctioneer.set_shares(self.view.fair_shares());
            self.offers_dirty = true;
        }
    }
}
