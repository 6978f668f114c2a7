//! Helpers shared by the fixed-seed unit tests (auction_units.rs,
//! placement_units.rs): ids, instants, a bidder on node `home`, and what a
//! bidder sent or reported.

#![allow(dead_code)]

use agora_protocol::bidder::{self, Bidder, Event, Transmit};
use agora_protocol::ids::{FrameworkId, NodeId};
use agora_protocol::time::Instant;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub fn n(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

pub fn fw(s: &str) -> FrameworkId {
    FrameworkId::new(s).unwrap()
}

pub fn ms(v: u64) -> Instant {
    Instant::from_millis(v)
}

/// The bidder of framework `f@home` on node `home`, seeded with 7.
pub fn bidder_with(config: bidder::Config) -> Bidder<ChaCha8Rng> {
    Bidder::new(
        n("home"),
        fw("f@home"),
        1,
        config,
        ChaCha8Rng::seed_from_u64(7),
    )
}

/// Everything the bidder has to send.
pub fn sent(b: &mut Bidder<ChaCha8Rng>) -> Vec<Transmit> {
    std::iter::from_fn(|| b.poll_transmit()).collect()
}

/// Everything the bidder has to report.
pub fn events(b: &mut Bidder<ChaCha8Rng>) -> Vec<Event> {
    std::iter::from_fn(|| b.poll_event()).collect()
}
