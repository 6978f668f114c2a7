//! How the host follows membership: the view's entries, liveness with a
//! grace for restarting peers, deaths (every bidder here reports the tasks it
//! had there lost) and revivals (a peer declared dead that comes back is
//! sent a kill for each of those tasks, so a task reported lost never keeps
//! running).
//!
//! The node feeds whole gossip snapshots ([`Host::handle_members`]); the
//! simulator feeds what its gossip model says each observer learned
//! ([`Change::Free`], [`Change::Alive`]) and a crashed node's return
//! ([`Change::Reborn`]).

use super::{Event, Host};
use crate::ids::NodeId;
use crate::resources::Resources;
use crate::time::Instant;
use crate::view::{NodeInfo, Upsert};
use crate::wire::{Kill, PeerMessage};
use rand::Rng;
use std::collections::BTreeSet;

/// One thing learned about a peer.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A member's published state; `alive` is the failure detector's verdict.
    Member(NodeInfo),
    /// A member's free vector at `version` (and nothing else).
    Free {
        /// The member.
        node: NodeId,
        /// What it has free.
        free: Resources,
        /// The version of that.
        version: u64,
    },
    /// The failure detector's verdict on a member changed.
    Alive {
        /// The member.
        node: NodeId,
        /// Its verdict.
        alive: bool,
    },
    /// The member left gossip (or vanished from it).
    Gone(NodeId),
    /// The member came back from a crash as a new generation whose tasks did
    /// not survive: if it was still held alive, its tasks are reported lost
    /// now; its entry is replaced by `info`.
    Reborn(NodeInfo),
}

impl<R: Rng> Host<R> {
    /// Applies one membership change.
    pub fn handle_membership(&mut self, now: Instant, change: Change) {
        let changed = match change {
            Change::Member(info) => self.member(now, info),
            Change::Free {
                node,
                free,
                version,
            } => {
                self.view.apply_free(&node, free, version);
                false
            }
            Change::Alive { node, alive } => self.set_alive(now, &node, alive),
            Change::Gone(node) => self.set_alive(now, &node, false),
            Change::Reborn(info) => {
                let id = info.id.clone();
                if id != self.me {
                    if self.view.get(&id).is_some_and(|n| n.alive) {
                        self.died(now, &id);
                    }
                    self.restarting.remove(&id);
                    self.dead.retain(|d| *d != id);
                    self.witnessed.forget(&id);
                    self.witness_out.touch_membership();
                    self.view.remove(&id);
                    self.view.upsert(info);
                }
                true
            }
        };
        if changed {
            self.update_shares();
        }
        self.after_membership();
        self.pump(now);
    }

    /// Applies a whole membership snapshot: every member's state, and every
    /// peer of the view missing from it is gone. True when the view changed.
    pub fn handle_members(&mut self, now: Instant, members: Vec<NodeInfo>) -> bool {
        let mut changed = false;
        let mut seen = BTreeSet::new();
        for info in members {
            seen.insert(info.id.clone());
            changed |= self.member(now, info);
        }
        let vanished: Vec<NodeId> = self
            .view
            .iter()
            .filter(|n| {
                n.id != self.me
                    && n.alive
                    && !seen.contains(&n.id)
                    && !self.cells.is_imported(&n.id)
            })
            .map(|n| n.id.clone())
            .collect();
        for id in vanished {
            changed |= self.set_alive(now, &id, false);
        }
        if changed {
            self.update_shares();
        }
        self.after_membership();
        self.pump(now);
        changed
    }

    /// One member's state. True when the view changed.
    fn member(&mut self, now: Instant, info: NodeInfo) -> bool {
        if info.id == self.me {
            return false;
        }
        let id = info.id.clone();
        let prev = self.view.get(&id).map(|n| (n.alive, n.version));
        let restarted = self
            .view
            .get(&id)
            .is_some_and(|n| n.generation != 0 && info.generation > n.generation);
        // A node that restarted shows up as a new generation that the
        // failure detector does not hold alive yet, publishing a newer
        // ledger version: give it the grace before calling it dead.
        let restarting = !info.alive
            && (self.restarting.contains_key(&id)
                || prev.is_some_and(|(alive, v)| alive && info.version > v));
        if restarting {
            let until = now + self.config.restart_grace;
            self.restarting.entry(id.clone()).or_insert(until);
        } else {
            self.restarting.remove(&id);
        }
        let alive = info.alive || restarting;
        // The upsert may take liveness along with a same-or-newer version:
        // judge the transition against what was known before it.
        let mut changed = self.view.upsert(NodeInfo { alive, ..info }) != Upsert::Stale;
        self.view.set_alive(&id, alive);
        if restarted {
            // Its frameworks come back (the node keeps them on disk) with
            // bidders that know nothing: tell them what runs here.
            self.auctioneer.home_restarted(now, &id);
        }
        match prev {
            None if alive => {
                self.witness_out.touch_membership();
                self.events.push_back(Event::NodeAlive(id));
                changed = true;
            }
            Some((was, _)) if was != alive => {
                if alive {
                    self.revived(&id);
                } else {
                    self.died(now, &id);
                }
                changed = true;
            }
            _ => {}
        }
        changed
    }

    /// Sets a peer's liveness; reports a death or a revival. True when it
    /// changed.
    pub(super) fn set_alive(&mut self, now: Instant, node: &NodeId, alive: bool) -> bool {
        if *node == self.me || !self.view.set_alive(node, alive) {
            return false;
        }
        if alive {
            self.revived(node);
        } else {
            self.died(now, node);
        }
        true
    }

    fn died(&mut self, now: Instant, node: &NodeId) {
        self.witness_out.touch_membership();
        self.restarting.remove(node);
        self.events.push_back(Event::NodeDead(node.clone()));
        for h in self.frameworks.values_mut() {
            h.bidder.node_down(now, node);
        }
        // What runs here for frameworks homed there ends too: the home
        // reports those tasks lost, and lost means stopped.
        self.auctioneer.home_died(node);
        self.remember_dead(node);
    }

    fn revived(&mut self, node: &NodeId) {
        self.witness_out.touch_membership();
        let was_dead = self.dead.contains(node);
        if !was_dead {
            self.events.push_back(Event::NodeAlive(node.clone()));
            return;
        }
        self.dead.retain(|d| d != node);
        let lost = self.lost_on(node);
        let kills = lost.len();
        for task_id in lost {
            self.send(node.clone(), PeerMessage::Kill(Kill { task_id }));
        }
        self.events.push_back(Event::NodeRevived {
            node: node.clone(),
            kills,
        });
    }

    /// Restarts that did not come back in time are deaths.
    pub(super) fn expire_restarts(&mut self, now: Instant) {
        let expired: Vec<NodeId> = self
            .restarting
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| id.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        for id in expired {
            self.restarting.remove(&id);
            self.set_alive(now, &id, false);
        }
        self.update_shares();
    }

    /// The witness may have moved (the timer decides, at most once per
    /// [`super::witness::PACE`]); nodes that left the view are no longer
    /// witnessed.
    fn after_membership(&mut self) {
        if !self.witnessed.is_empty() {
            let view = &self.view;
            self.witnessed.retain(|n| view.get(n).is_some());
        }
    }

    pub(super) fn update_shares(&mut self) {
        if self.config.shares_from_view {
            self.auctioneer.set_shares(self.view.fair_shares());
        }
    }
}
