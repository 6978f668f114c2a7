//! Offer mode: the gossip view presented to a framework as resource offers.
//!
//! A framework that wants to choose nodes itself (as Mesos frameworks do)
//! subscribes to offers: one per live node with something free, taken from
//! its home node's [`ClusterView`]. It then bids on a node it chose
//! ([`crate::bidder::Bidder::submit_on`]); the node's auctioneer decides as
//! for any other bid, so an offer is information, never a reservation.

use crate::view::ClusterView;
use crate::wire::Offer;

/// One offer per live node with anything free, in node id order, at most `max`.
pub fn from_view(view: &ClusterView, max: usize) -> Vec<Offer> {
    view.iter()
        .filter(|n| n.alive && (n.free.cpu_millis > 0 || n.free.mem_mib > 0))
        .take(max)
        .map(|n| Offer {
            node: n.id.clone(),
            free: n.free,
            total: n.total,
            attrs: n.attrs.clone(),
            version: n.version,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constraint::Attributes;
    use crate::ids::NodeId;
    use crate::resources::Resources;
    use crate::view::NodeInfo;

    #[test]
    fn offers_skip_dead_and_full_nodes() {
        let mut v = ClusterView::new();
        for (id, free, alive) in [("a", 1000, true), ("b", 0, true), ("c", 500, false)] {
            let mut n = NodeInfo::new(
                NodeId::new(id).unwrap(),
                Resources::cpu_mem(1000, 0),
                Attributes::default(),
            );
            n.free = Resources::cpu_mem(free, 0);
            n.alive = alive;
            v.upsert(n);
        }
        let offers = from_view(&v, 10);
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].node.as_str(), "a");
        assert!(from_view(&v, 0).is_empty());
    }
}
