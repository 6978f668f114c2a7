//! Who owns a service: the eligible live node with the highest rendezvous
//! score for the service's name. Every node that sees the same live set
//! names the same owner, with no election; when the owner dies the next
//! node in score order takes over, and only the services the dead node
//! owned move.
//!
//! **Eligible** (decided by the caller, the host): the live members of its
//! view that belong to its own cell (not imported from another) and are
//! not draining. In a cluster of cells a service lives in one cell, so its
//! owner is chosen among that cell's members (docs/SERVICES.md).

use crate::cell::rendezvous_score;
use crate::ids::NodeId;

/// The owner of `service` among `eligible` nodes (`None`: none).
pub fn owner<'a>(service: &str, eligible: impl IntoIterator<Item = &'a NodeId>) -> Option<NodeId> {
    ranked(service, eligible).into_iter().next()
}

/// The eligible nodes in takeover order: the owner first, then who takes
/// over when it dies, and so on (ties by node id).
pub fn ranked<'a>(service: &str, eligible: impl IntoIterator<Item = &'a NodeId>) -> Vec<NodeId> {
    let key = format!("service/{service}");
    let mut scored: Vec<(u64, &NodeId)> = eligible
        .into_iter()
        .map(|n| (rendezvous_score(&key, n), n))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().map(|(_, n)| n.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        (0..n)
            .map(|i| NodeId::new(format!("n{i}")).unwrap())
            .collect()
    }

    #[test]
    fn every_view_of_the_same_live_set_names_the_same_owner_and_a_death_moves_only_its_services() {
        let all = nodes(20);
        let services: Vec<String> = (0..500).map(|i| format!("svc-{i}")).collect();
        let before: Vec<NodeId> = services.iter().map(|s| owner(s, &all).unwrap()).collect();
        // The order the nodes are listed in does not matter.
        let mut shuffled = all.clone();
        shuffled.reverse();
        for (s, o) in services.iter().zip(&before) {
            assert_eq!(owner(s, &shuffled).as_ref(), Some(o));
        }
        // Owners spread over the nodes.
        let distinct: std::collections::BTreeSet<&NodeId> = before.iter().collect();
        assert!(distinct.len() >= 15, "{} owners", distinct.len());
        // n3 dies: its services go to their second-ranked node; no other
        // service moves.
        let dead = NodeId::new("n3").unwrap();
        let live: Vec<NodeId> = all.iter().filter(|n| **n != dead).cloned().collect();
        for (s, o) in services.iter().zip(&before) {
            let now = owner(s, &live).unwrap();
            if *o == dead {
                assert_eq!(now, ranked(s, &all)[1]);
            } else {
                assert_eq!(&now, o, "{s} moved though its owner lives");
            }
        }
        assert_eq!(owner("x", &[]), None);
    }
}
