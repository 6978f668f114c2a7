//! agora-protocol: Agora's types, wire format and pure state machines.
//!
//! This crate decides everything (who bids where, who wins, when a lease
//! expires, how fair shares are computed) and does no IO: time comes in as
//! [`time::Instant`] and randomness as a seeded RNG, so the `agora` node and
//! the `agora-sim` simulator run exactly the same code.
//!
//! - [`resources`], [`constraint`], [`task`]: the resource and task model.
//! - [`wire`] and [`codec`]: every message and how it is framed and encoded.
//! - [`view`] and [`fairness`]: the gossip view of the cluster and DRF.
//! - [`auctioneer`] and [`bidder`]: the two halves of the auction.
//! - [`offers`]: offers for frameworks that choose nodes themselves.
//! - [`service`]: services kept at a count with no leader (being built).
//! - [`host`]: everything one node decides, as one machine that owns the
//!   auctioneer, the bidders homed there and the view (the node and the
//!   simulator both drive it).
//!
//! Each state machine has the same shape: `handle_message(now, from, msg)`,
//! `handle_timeout(now)` and commands in; `poll_timeout()`, `poll_transmit()`
//! and `poll_event()` out. docs/PROTOCOL.md explains why the invariants hold.

pub mod auctioneer;
pub mod bidder;
pub mod cell;
pub mod codec;
pub mod constraint;
pub mod fairness;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod ids;
pub mod listing;
pub mod offers;
pub mod resources;
pub mod service;
pub mod task;
pub mod time;
pub mod view;
pub mod wire;

pub use ids::{BidId, FrameworkId, LeaseId, NodeId, TaskId};
pub use resources::Resources;
pub use time::Instant;

/// A `HashMap` with a fixed hasher (no per-process random seed), for the hot
/// point lookups by id: O(1) instead of a dozen string comparisons in a
/// `BTreeMap`. Its iteration order is arbitrary, so the state machines never
/// let it decide anything: where order matters they sort first.
pub(crate) type FixedHashMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// A small multiply-rotate hasher for ids (short strings and numbers).
///
/// Not resistant to chosen collisions, which is acceptable here: the keys
/// are ids minted by this node's own bidder or sent by authenticated cluster
/// members, and every map it backs is bounded.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHasher(u64);

impl IdHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(Self::K);
    }
}

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        // hashbrown takes its control bits from the top of the hash: mix the
        // low bits (where short keys put their entropy) up into them.
        let z = (self.0 ^ (self.0 >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z ^ (z >> 29)
    }
}

#[cfg(test)]
mod tests {
    use super::IdHasher;
    use std::hash::{BuildHasher, BuildHasherDefault};

    #[test]
    fn id_hashes_are_distinct_and_spread_over_the_top_bits() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let ids: Vec<String> = (0..10_000).map(|i| format!("n{i:05}")).collect();
        let hashes: std::collections::BTreeSet<u64> =
            ids.iter().map(|id| build.hash_one(id.as_str())).collect();
        assert_eq!(hashes.len(), ids.len(), "no two ids share a hash");
        // hashbrown groups by the top 7 bits: each of the 128 values should
        // get close to its 78 ids.
        let mut top = [0u32; 128];
        for h in &hashes {
            top[(h >> 57) as usize] += 1;
        }
        let (lo, hi) = (top.iter().min(), top.iter().max());
        assert!(
            lo >= Some(&40) && hi <= Some(&130),
            "top-bit counts {lo:?}..{hi:?}"
        );
        // Same key, same hash: no per-process seed.
        assert_eq!(build.hash_one("t.1"), build.hash_one("t.1"));
    }
}
