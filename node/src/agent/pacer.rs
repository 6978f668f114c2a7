//! Coalescing of repeated publications: the node's ledger to gossip (at
//! most one publish every 50 ms however fast it changes) and the HTTP API's
//! snapshot (at most every 200 ms when something changed, and every 2 s
//! regardless, for the counters and ages it shows). A sans-IO machine: the
//! core marks changes and asks whether a publication is due; the driver
//! publishes.

use agora_protocol::Instant;
use std::time::Duration;

/// When to publish something that changes.
#[derive(Clone, Debug)]
pub struct Pacer {
    /// Least time between two publications.
    every: Duration,
    /// Publish at least this often even when nothing changed.
    refresh: Option<Duration>,
    dirty: bool,
    /// The last publication (None: none yet, the first is due at once).
    last: Option<Instant>,
}

impl Pacer {
    /// A pacer whose first publication is due at once.
    pub fn new(every: Duration, refresh: Option<Duration>) -> Pacer {
        Pacer {
            every,
            refresh,
            dirty: true,
            last: None,
        }
    }

    /// Something to publish changed.
    pub fn mark(&mut self) {
        self.dirty = true;
    }

    /// When the next publication is due, if one will be.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let Some(last) = self.last else {
            return Some(Instant::ZERO);
        };
        if self.dirty {
            return Some(last + self.every);
        }
        self.refresh.map(|r| last + r)
    }

    /// True when a publication is due at `now`; it is then counted as
    /// done (the caller publishes).
    pub fn take_due(&mut self, now: Instant) -> bool {
        if self.poll_timeout().is_some_and(|t| t <= now) {
            self.dirty = false;
            self.last = Some(now);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    #[test]
    fn changes_are_coalesced_to_one_publication_per_interval() {
        let mut p = Pacer::new(Duration::from_millis(50), None);
        assert!(p.take_due(ms(0)), "the first is due at once");
        assert_eq!(p.poll_timeout(), None, "nothing changed, no refresh");
        for t in [1, 10, 20, 49] {
            p.mark();
            assert!(!p.take_due(ms(t)), "at {t} ms: too soon");
        }
        assert_eq!(p.poll_timeout(), Some(ms(50)));
        assert!(p.take_due(ms(50)));
        assert!(!p.take_due(ms(200)), "nothing changed since");
        p.mark();
        assert!(p.take_due(ms(200)), "long after the last one: at once");
    }

    #[test]
    fn a_refreshed_publication_comes_even_without_changes() {
        let mut p = Pacer::new(Duration::from_millis(200), Some(Duration::from_secs(2)));
        assert!(p.take_due(ms(0)));
        assert_eq!(p.poll_timeout(), Some(ms(2000)));
        assert!(!p.take_due(ms(1999)));
        assert!(p.take_due(ms(2000)));
        p.mark();
        assert_eq!(p.poll_timeout(), Some(ms(2200)));
    }
}
