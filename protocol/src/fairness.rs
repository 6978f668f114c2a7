//! Decentralized fairness: weighted dominant resource fairness (DRF) from
//! gossiped allocations.
//!
//! Every node gossips how much each framework holds on it. Summed over the
//! cluster, that gives each framework's usage; its **dominant share** is the
//! largest fraction of the cluster's total it holds in any dimension, divided
//! by its weight. An auctioneer facing more bids than it can award favours the
//! framework with the lowest weighted dominant share, and charges each award
//! to that framework before ranking the next bid (progressive filling), which
//! is what a central DRF allocator does one decision at a time.

use crate::ids::FrameworkId;
use crate::resources::Resources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one framework holds (on one node, or summed over the cluster).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameworkUsage {
    /// Resources held.
    pub resources: Resources,
    /// The framework's DRF weight (at least 1).
    pub weight: u32,
}

/// The cluster's total and every framework's usage: the input to ranking bids.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FairShares {
    total: Resources,
    usage: BTreeMap<FrameworkId, FrameworkUsage>,
}

impl FairShares {
    /// Shares over a cluster of `total` resources with the given usage.
    pub fn new(total: Resources, usage: BTreeMap<FrameworkId, FrameworkUsage>) -> Self {
        FairShares { total, usage }
    }

    /// The cluster's total.
    pub fn total(&self) -> &Resources {
        &self.total
    }

    /// What a framework holds, as far as these shares know.
    pub fn usage(&self, framework: &FrameworkId) -> Resources {
        self.usage
            .get(framework)
            .map(|u| u.resources)
            .unwrap_or_default()
    }

    /// The framework's weighted dominant share. `weight` is used when the
    /// framework holds nothing yet (its weight then comes from its bid).
    pub fn share(&self, framework: &FrameworkId, weight: u32) -> f64 {
        let (res, w) = match self.usage.get(framework) {
            Some(u) => (u.resources, u.weight.max(1)),
            None => (Resources::ZERO, weight.max(1)),
        };
        res.dominant_share(&self.total) / f64::from(w)
    }

    /// Charges `resources` to a framework (progressive filling within one
    /// decision round).
    pub fn charge(&mut self, framework: &FrameworkId, weight: u32, resources: &Resources) {
        let entry = self
            .usage
            .entry(framework.clone())
            .or_insert(FrameworkUsage {
                resources: Resources::ZERO,
                weight: weight.max(1),
            });
        entry.resources = entry.resources.saturating_add(resources);
    }

    /// Every framework's weighted dominant share, by id.
    pub fn all_shares(&self) -> BTreeMap<FrameworkId, f64> {
        self.usage
            .keys()
            .map(|f| (f.clone(), self.share(f, 1)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw(s: &str) -> FrameworkId {
        FrameworkId::new(s).unwrap()
    }

    #[test]
    fn weighted_dominant_share() {
        let mut usage = BTreeMap::new();
        usage.insert(
            fw("a"),
            FrameworkUsage {
                resources: Resources::cpu_mem(3000, 1000),
                weight: 1,
            },
        );
        usage.insert(
            fw("b"),
            FrameworkUsage {
                resources: Resources::cpu_mem(1000, 4000),
                weight: 2,
            },
        );
        let mut s = FairShares::new(Resources::cpu_mem(10_000, 10_000), usage);
        assert!((s.share(&fw("a"), 1) - 0.3).abs() < 1e-9);
        assert!((s.share(&fw("b"), 1) - 0.2).abs() < 1e-9, "0.4 / weight 2");
        assert_eq!(s.share(&fw("new"), 3), 0.0);
        s.charge(&fw("b"), 2, &Resources::cpu_mem(0, 4000));
        assert!((s.share(&fw("b"), 1) - 0.4).abs() < 1e-9);
    }
}
