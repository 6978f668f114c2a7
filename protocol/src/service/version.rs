//! Spec versions: a hybrid logical clock stamp and the writer's node id.
//!
//! Every write of a service spec (create, update, scale, remove) is stamped
//! by the node that takes it with [`Hlc::stamp`]: the larger of its wall
//! clock (milliseconds, given by the driver: this crate reads no clock) and
//! one past every stamp it has seen, so a write made after a node has seen
//! another version always orders after it, even when the two nodes' clocks
//! disagree. Two writes with the same stamp are ordered by the writer's node
//! id. The larger [`Version`] wins (last writer wins), the same on every
//! node, whatever the order versions arrive in.

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// A stamp: milliseconds since the Unix epoch in the high 48 bits, a
/// counter for writes within one millisecond in the low 16.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp(pub u64);

impl Stamp {
    /// The stamp's wall-clock part, ms since the epoch.
    pub fn millis(self) -> u64 {
        self.0 >> 16
    }

    fn from_millis(ms: u64) -> Stamp {
        Stamp(ms.min((1 << 48) - 1) << 16)
    }
}

/// A hybrid logical clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hlc {
    last: Stamp,
}

/// How far ahead of this node's wall clock a seen stamp may be and still
/// move the clock: a stamp further ahead (a peer whose clock is wrong by
/// more than a day) is ordered as usual but does not drag every later
/// write of this node into the future.
pub const MAX_AHEAD_MS: u64 = 24 * 3600 * 1000;

impl Hlc {
    /// A stamp for a write now (`wall_ms`: this node's clock).
    pub fn stamp(&mut self, wall_ms: u64) -> Stamp {
        let wall = Stamp::from_millis(wall_ms);
        self.last = if wall > self.last {
            wall
        } else {
            Stamp(self.last.0.saturating_add(1))
        };
        self.last
    }

    /// A stamp seen in another node's version.
    pub fn observe(&mut self, seen: Stamp, wall_ms: u64) {
        if seen.millis() <= wall_ms.saturating_add(MAX_AHEAD_MS) && seen > self.last {
            self.last = seen;
        }
    }
}

/// A spec's version: who wrote it when.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version {
    /// When.
    pub stamp: Stamp,
    /// Who.
    pub writer: NodeId,
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.stamp
            .cmp(&other.stamp)
            .then_with(|| self.writer.cmp(&other.writer))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}@{}",
            self.stamp.millis(),
            self.stamp.0 & 0xffff,
            self.writer
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_after_seeing_another_orders_after_it_whatever_the_clocks() {
        let mut a = Hlc::default();
        let mut b = Hlc::default();
        // b's clock is 10 s behind a's.
        let s1 = a.stamp(100_000);
        b.observe(s1, 90_000);
        let s2 = b.stamp(90_000);
        assert!(s2 > s1, "b's write follows the one it saw");
        // Two writes in one millisecond are ordered too.
        let s3 = b.stamp(90_000);
        assert!(s3 > s2);
        // The wall clock wins again once it passes.
        let s4 = b.stamp(200_000);
        assert_eq!(s4.millis(), 200_000);
        // A stamp from a clock a week ahead does not move this clock.
        let far = Stamp::from_millis(200_000 + 7 * 24 * 3600 * 1000);
        b.observe(far, 200_000);
        assert_eq!(b.stamp(200_001).millis(), 200_001);
    }

    #[test]
    fn versions_order_by_stamp_then_writer() {
        let v = |s: u64, w: &str| Version {
            stamp: Stamp(s),
            writer: NodeId::new(w).unwrap(),
        };
        assert!(v(2, "a") > v(1, "z"));
        assert!(v(1, "b") > v(1, "a"));
        assert_eq!(v(1, "a").max(v(1, "b")), v(1, "b"));
    }
}
