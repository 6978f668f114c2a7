//! The cluster view: what one node believes about every node, filled from
//! gossip (or, in the simulator, from the gossip model).
//!
//! Each node's free vector carries a version that its auctioneer bumps on
//! every ledger change. Newer versions replace older ones; an older or equal
//! version never overwrites what is known, so reordered gossip cannot move the
//! view backwards. A [`crate::wire::Reject`] carries the node's free vector
//! and version straight from its ledger and is applied by the same rule, so a
//! bidder's view heals at once. Between updates, the bidder subtracts what it
//! was just awarded ([`ClusterView::note_award`]) without bumping the version,
//! so the next real update always wins.

use crate::constraint::Attributes;
use crate::fairness::{FairShares, FrameworkUsage};
use crate::ids::{FrameworkId, NodeId};
use crate::resources::Resources;
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the view holds about one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node.
    pub id: NodeId,
    /// Its gossip address (informational).
    pub addr: String,
    /// What it has in all.
    pub total: Resources,
    /// What it has free, as of `version`.
    pub free: Resources,
    /// Version of `free`.
    pub version: u64,
    /// Its attributes.
    pub attrs: Attributes,
    /// Whether the failure detector holds it alive.
    pub alive: bool,
    /// What each framework holds there.
    pub allocations: BTreeMap<FrameworkId, FrameworkUsage>,
    /// Its incarnation: larger after each restart (the node gives gossip's
    /// generation; 0 where unknown, as in the simulator).
    #[serde(default)]
    pub generation: u64,
}

impl NodeInfo {
    /// A live node with everything free.
    pub fn new(id: NodeId, total: Resources, attrs: Attributes) -> Self {
        NodeInfo {
            id,
            addr: String::new(),
            total,
            free: total,
            version: 0,
            attrs,
            alive: true,
            allocations: BTreeMap::new(),
            generation: 0,
        }
    }
}

/// What [`ClusterView::upsert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsert {
    /// A node not seen before.
    Inserted,
    /// A newer version replaced the old one.
    Updated,
    /// The information was not newer and was ignored.
    Stale,
}

/// Node id → [`NodeInfo`], with deterministic iteration and random sampling.
///
/// Nodes live in a dense vector (in insertion order, a removal moving the last
/// node into the gap), found by id through a hash index; a `BTreeMap` of ids
/// gives iteration in id order. Lookups by id and random draws therefore cost
/// no string comparisons.
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    slots: Vec<NodeInfo>,
    by_id: crate::FixedHashMap<NodeId, usize>,
    ordered: BTreeMap<NodeId, usize>,
}

impl ClusterView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot_mut(&mut self, node: &NodeId) -> Option<&mut NodeInfo> {
        let i = *self.by_id.get(node)?;
        self.slots.get_mut(i)
    }

    /// Adds or refreshes a node. Free resources and allocations are replaced
    /// only by a strictly newer version; attributes, address, total and
    /// liveness are taken from the newest or equal version.
    pub fn upsert(&mut self, info: NodeInfo) -> Upsert {
        match self.slot_mut(&info.id) {
            None => {
                let i = self.slots.len();
                self.by_id.insert(info.id.clone(), i);
                self.ordered.insert(info.id.clone(), i);
                self.slots.push(info);
                Upsert::Inserted
            }
            Some(known) if info.version > known.version => {
                *known = info;
                Upsert::Updated
            }
            Some(known) if info.version == known.version => {
                known.attrs = info.attrs;
                known.addr = info.addr;
                known.total = info.total;
                known.alive = info.alive;
                Upsert::Stale
            }
            Some(_) => Upsert::Stale,
        }
    }

    /// Applies the free vector carried by a reject, straight from the node's
    /// ledger. It replaces what is known when its version is the same or
    /// newer (the same version also undoes local [`ClusterView::note_award`]
    /// guesses). Returns true if it was applied.
    pub fn apply_free(&mut self, node: &NodeId, free: Resources, version: u64) -> bool {
        match self.slot_mut(node) {
            Some(known) if version >= known.version => {
                known.free = free;
                known.version = version;
                true
            }
            _ => false,
        }
    }

    /// Subtracts an award from a node's free vector until its next update.
    pub fn note_award(&mut self, node: &NodeId, resources: &Resources) {
        if let Some(known) = self.slot_mut(node) {
            known.free = known.free.saturating_sub(resources);
        }
    }

    /// Marks a node alive or dead. Returns true if that changed anything.
    pub fn set_alive(&mut self, node: &NodeId, alive: bool) -> bool {
        match self.slot_mut(node) {
            Some(known) if known.alive != alive => {
                known.alive = alive;
                true
            }
            _ => false,
        }
    }

    /// Forgets a node.
    pub fn remove(&mut self, node: &NodeId) -> Option<NodeInfo> {
        let i = self.by_id.remove(node)?;
        self.ordered.remove(node);
        let removed = self.slots.swap_remove(i);
        if let Some(moved) = self.slots.get(i) {
            self.by_id.insert(moved.id.clone(), i);
            self.ordered.insert(moved.id.clone(), i);
        }
        Some(removed)
    }

    /// One node.
    pub fn get(&self, node: &NodeId) -> Option<&NodeInfo> {
        self.slots.get(*self.by_id.get(node)?)
    }

    /// Every node, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &NodeInfo> {
        self.ordered.values().filter_map(|&i| self.slots.get(i))
    }

    /// Number of nodes known (alive or not).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no node is known.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Number of nodes held alive.
    pub fn alive_count(&self) -> usize {
        self.slots.iter().filter(|n| n.alive).count()
    }

    /// Up to `n` distinct nodes drawn at random (all of them, in id order, if
    /// the view has at most `n`). Dead nodes are included; callers filter.
    pub fn sample<R: Rng>(&self, rng: &mut R, n: usize) -> Vec<&NodeInfo> {
        if self.slots.len() <= n {
            return self.iter().collect();
        }
        let mut picked: Vec<usize> = Vec::with_capacity(n);
        let mut out = Vec::with_capacity(n);
        // Rejection sampling: n is much smaller than the view here.
        let mut tries = 0;
        while out.len() < n && tries < n * 8 {
            tries += 1;
            let i = rng.random_range(0..self.slots.len());
            if !picked.contains(&i) {
                picked.push(i);
                out.push(&self.slots[i]);
            }
        }
        out
    }

    /// Sum of the totals of live nodes.
    pub fn cluster_total(&self) -> Resources {
        self.iter()
            .filter(|n| n.alive)
            .fold(Resources::ZERO, |acc, n| acc.saturating_add(&n.total))
    }

    /// Sum of the free vectors of live nodes.
    pub fn cluster_free(&self) -> Resources {
        self.iter()
            .filter(|n| n.alive)
            .fold(Resources::ZERO, |acc, n| acc.saturating_add(&n.free))
    }

    /// Fair shares from the allocations gossiped by live nodes.
    pub fn fair_shares(&self) -> FairShares {
        let mut usage: BTreeMap<FrameworkId, FrameworkUsage> = BTreeMap::new();
        for node in self.iter().filter(|n| n.alive) {
            for (fw, u) in &node.allocations {
                let e = usage.entry(fw.clone()).or_insert(FrameworkUsage {
                    resources: Resources::ZERO,
                    weight: u.weight.max(1),
                });
                e.resources = e.resources.saturating_add(&u.resources);
            }
        }
        FairShares::new(self.cluster_total(), usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn node(id: &str, version: u64, free_cpu: u64) -> NodeInfo {
        let mut n = NodeInfo::new(
            NodeId::new(id).unwrap(),
            Resources::cpu_mem(4000, 4096),
            Attributes::default(),
        );
        n.version = version;
        n.free = Resources::cpu_mem(free_cpu, 4096);
        n
    }

    #[test]
    fn newer_versions_win_and_stale_ones_are_ignored() {
        let mut v = ClusterView::new();
        assert_eq!(v.upsert(node("a", 5, 1000)), Upsert::Inserted);
        assert_eq!(v.upsert(node("a", 4, 4000)), Upsert::Stale);
        assert_eq!(
            v.get(&NodeId::new("a").unwrap()).unwrap().free.cpu_millis,
            1000
        );
        assert_eq!(v.upsert(node("a", 6, 2000)), Upsert::Updated);
        let a = NodeId::new("a").unwrap();
        assert!(
            !v.apply_free(&a, Resources::ZERO, 5),
            "older version is ignored"
        );
        assert!(v.apply_free(&a, Resources::cpu_mem(3000, 0), 7));
        v.note_award(&a, &Resources::cpu_mem(500, 0));
        assert_eq!(v.get(&a).unwrap().free.cpu_millis, 2500);
        assert_eq!(v.get(&a).unwrap().version, 7);
        assert!(v.set_alive(&a, false));
        assert_eq!(v.alive_count(), 0);
        assert_eq!(v.cluster_total(), Resources::ZERO);
    }

    #[test]
    fn sampling_is_seeded_and_distinct() {
        let mut v = ClusterView::new();
        for i in 0..100 {
            v.upsert(node(&format!("n{i}"), 1, 1000));
        }
        let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let a: Vec<_> = v.sample(&mut r1, 10).iter().map(|n| n.id.clone()).collect();
        let b: Vec<_> = v.sample(&mut r2, 10).iter().map(|n| n.id.clone()).collect();
        assert_eq!(a, b);
        let set: std::collections::BTreeSet<_> = a.iter().collect();
        assert_eq!(set.len(), 10);
        v.remove(&NodeId::new("n3").unwrap());
        assert_eq!(v.sample(&mut r1, 1000).len(), 99);
    }
}
