//! The join push (sans-IO): who a newly started node gossips with directly,
//! beyond chitchat's own rounds, so that it sees every member alive and
//! every member sees it alive within a few hundred milliseconds instead of
//! the several gossip rounds an epidemic takes (3.2 s at 1 s rounds).
//!
//! During its first [`JOIN_PHASE`] a node:
//!
//! - re-synchronizes with its seeds at [`RESYNC_AT`] after start (a full
//!   push-pull exchange each time: chitchat's SYN carries this node's whole
//!   digest and the seed's SYN-ACK everything this node lacks), so that
//!   nodes joining at the same moment learn of each other through the seed;
//! - greets every member it sees for the first time — at most
//!   [`JOIN_FANOUT`] — with a direct exchange, and greets it again
//!   [`GREET_AGAIN`] later. The member then holds two heartbeats of this
//!   node read in two different polls, which is what its detector needs to
//!   call a newcomer alive (see `detector.rs`), and this node holds the
//!   member's own current heartbeat from its answer.
//!
//! Cost: at most `2 × JOIN_FANOUT + seeds × RESYNC_AT.len()` exchanges per
//! start, each about one digest (47 bytes per member) each way.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long after start the node pushes.
pub const JOIN_PHASE: Duration = Duration::from_secs(3);
/// When after start the node re-synchronizes with its seeds.
pub const RESYNC_AT: [Duration; 5] = [
    Duration::from_millis(50),
    Duration::from_millis(150),
    Duration::from_millis(350),
    Duration::from_millis(750),
    Duration::from_millis(1550),
];
/// The most members one start greets.
pub const JOIN_FANOUT: usize = 64;
/// The delay before the second greeting: more than one driver poll (50 ms),
/// so that at least one poll of the member falls between the two.
pub const GREET_AGAIN: Duration = Duration::from_millis(70);

/// The join push's state.
pub struct Joiner<K> {
    started: Instant,
    resyncs_done: usize,
    /// Members greeted: when first, and whether the second greeting went.
    greeted: HashMap<K, (Instant, bool)>,
}

impl<K: Eq + Hash + Clone> Joiner<K> {
    /// A node that started at `started`.
    pub fn new(started: Instant) -> Self {
        Joiner {
            started,
            resyncs_done: 0,
            greeted: HashMap::new(),
        }
    }

    /// Whether the join phase is still on at `now`.
    pub fn active(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) < JOIN_PHASE
    }

    /// The addresses to gossip with at `now`, given the seeds' addresses and
    /// the members gossip holds (key and address, this node excluded).
    pub fn poll(
        &mut self,
        now: Instant,
        seeds: impl IntoIterator<Item = SocketAddr>,
        members: impl IntoIterator<Item = (K, SocketAddr)>,
    ) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        if !self.active(now) {
            self.greeted = HashMap::new();
            return out;
        }
        let since = now.saturating_duration_since(self.started);
        let due = RESYNC_AT.iter().filter(|at| **at <= since).count();
        if due > self.resyncs_done {
            self.resyncs_done = due;
            out.extend(seeds);
        }
        for (key, addr) in members {
            let room = self.greeted.len() < JOIN_FANOUT;
            match self.greeted.get_mut(&key) {
                None if room => {
                    self.greeted.insert(key, (now, false));
                    out.push(addr);
                }
                Some((first, again @ false))
                    if now.saturating_duration_since(*first) >= GREET_AGAIN =>
                {
                    *again = true;
                    out.push(addr);
                }
                _ => {}
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn seeds_are_resynced_on_schedule_and_members_greeted_twice() {
        let t0 = Instant::now();
        let mut j = Joiner::new(t0);
        let seed = [addr(1)];
        let mut sent: Vec<(Duration, SocketAddr)> = Vec::new();
        let mut members = vec![];
        let mut t = Duration::ZERO;
        while t < JOIN_PHASE + Duration::from_secs(1) {
            if t == Duration::from_millis(400) {
                // A member heard of late (it joined at the same time).
                members.push(("b", addr(3)));
            }
            if t == Duration::from_millis(50) {
                members.push(("a", addr(2)));
            }
            for a in j.poll(t0 + t, seed, members.clone()) {
                sent.push((t, a));
            }
            t += Duration::from_millis(50);
        }
        let to = |a: SocketAddr| -> Vec<u128> {
            sent.iter()
                .filter(|(_, x)| *x == a)
                .map(|(t, _)| t.as_millis())
                .collect()
        };
        assert_eq!(to(addr(1)), vec![50, 150, 350, 750, 1550]);
        assert_eq!(to(addr(2)), vec![50, 150]);
        assert_eq!(to(addr(3)), vec![400, 500]);
        assert!(!j.active(t0 + JOIN_PHASE));
    }

    #[test]
    fn greetings_are_bounded() {
        let t0 = Instant::now();
        let mut j = Joiner::new(t0);
        let members: Vec<(u16, SocketAddr)> = (0..200).map(|i| (i, addr(1000 + i))).collect();
        let first = j.poll(t0, [], members.clone());
        assert_eq!(first.len(), JOIN_FANOUT);
        let second = j.poll(t0 + GREET_AGAIN, [], members);
        assert_eq!(second.len(), JOIN_FANOUT);
        assert_eq!(first, second);
    }
}
