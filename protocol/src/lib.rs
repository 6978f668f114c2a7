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
pub mod ids;
pub mod offers;
pub mod resources;
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
pub(crate) type FixedHashMap<K, V> = std::collections::HashMap<
    K,
    V,
    std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>,
>;
