//! How the core follows the cluster: each gossip snapshot becomes the list
//! of members the host diffs into its view (liveness, restarts and deaths
//! are the host's to judge), and this node's ledger is published to gossip,
//! coalesced to at most one publish every [`PUBLISH_EVERY`].

use super::core::{Core, PUBLISH_EVERY};
use crate::gossip::Snapshot;
use agora_protocol::Instant;
use agora_protocol::view::NodeInfo;

impl Core {
    pub(super) fn schedule_publish(&mut self, now: Instant) {
        if self.publish_due.is_none() {
            let at = (self.last_publish + PUBLISH_EVERY).max(now);
            self.publish_due = Some(at);
        }
    }

    pub(super) fn publish(&mut self, now: Instant) {
        self.last_publish = now;
        let a = self.host.auctioneer();
        let mut state = self.local_state.clone();
        state.total = a.capacity();
        state.free = a.free();
        state.version = a.version();
        state.allocations = a.allocations();
        self.gossip.publish(state);
    }

    /// Publishes the ledger now (used on shutdown).
    pub fn publish_now(&mut self) {
        let now = self.clock.now();
        self.publish(now);
    }

    /// Hands a membership snapshot to the host (and peers' addresses to
    /// libp2p).
    pub fn on_snapshot(&mut self, snap: &Snapshot) {
        let now = self.clock.now();
        let mut members = Vec::with_capacity(snap.members.len());
        for m in &snap.members {
            if m.id == self.me {
                continue;
            }
            let Some(st) = &m.state else { continue };
            self.p2p.set_peer(&m.id, &st.peer_id, &st.p2p_addr);
            members.push(NodeInfo {
                id: m.id.clone(),
                addr: m.gossip_addr.to_string(),
                total: st.total,
                free: st.free,
                version: st.version,
                attrs: st.attrs.clone(),
                alive: m.alive,
                allocations: st.allocations.clone(),
            });
        }
        if self.host.handle_members(now, members) {
            self.offers_dirty = true;
        }
    }
}
