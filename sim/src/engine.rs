//! The discrete-event core: a virtual clock, an event queue ordered by time
//! then by insertion sequence (so equal times never depend on heap internals),
//! and the trace hash that fingerprints a run.
//!
//! Every simulator run (auction and baselines alike) pops events from one
//! [`Queue`] in `(time, seq)` order and folds what it did into a
//! [`TraceHash`]; the same seed therefore gives the same hash.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Simulated time in microseconds.
pub type Micros = u64;

/// Microseconds in one second.
pub const SEC: Micros = 1_000_000;

struct Entry<E> {
    at: Micros,
    seq: u64,
    ev: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse to pop the earliest first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A time-ordered event queue with deterministic tie-breaking.
pub struct Queue<E> {
    heap: BinaryHeap<Entry<E>>,
    seq: u64,
    now: Micros,
    popped: u64,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue {
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
            popped: 0,
        }
    }
}

impl<E> Queue<E> {
    /// An empty queue at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `ev` at `at` (never earlier than now).
    pub fn push(&mut self, at: Micros, ev: E) {
        self.seq += 1;
        self.heap.push(Entry {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        });
    }

    /// The earliest event, advancing the clock to its time.
    pub fn pop(&mut self) -> Option<(Micros, E)> {
        let e = self.heap.pop()?;
        self.now = e.at;
        self.popped += 1;
        Some((e.at, e.ev))
    }

    /// Time of the earliest event.
    pub fn peek_time(&self) -> Option<Micros> {
        self.heap.peek().map(|e| e.at)
    }

    /// The current virtual time.
    pub fn now(&self) -> Micros {
        self.now
    }

    /// Events popped so far.
    pub fn popped(&self) -> u64 {
        self.popped
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// A 64-bit running fingerprint of what a run did (not cryptographic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceHash(u64);

impl Default for TraceHash {
    fn default() -> Self {
        TraceHash(0x9e37_79b9_7f4a_7c15)
    }
}

impl TraceHash {
    /// Folds one value in.
    pub fn mix(&mut self, x: u64) {
        self.0 = splitmix(self.0 ^ x.wrapping_mul(0xff51_afd7_ed55_8ccd));
    }

    /// Folds bytes in.
    pub fn mix_bytes(&mut self, b: &[u8]) {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &c in b {
            h ^= u64::from(c);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.mix(h);
    }

    /// The fingerprint.
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// The splitmix64 finalizer: a cheap, well-mixed, deterministic hash of a u64.
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_times_pop_in_insertion_order() {
        let mut q = Queue::new();
        q.push(5, "b");
        q.push(3, "a");
        q.push(5, "c");
        assert_eq!(q.pop(), Some((3, "a")));
        assert_eq!(q.pop(), Some((5, "b")));
        assert_eq!(q.pop(), Some((5, "c")));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn hash_depends_on_order() {
        let (mut a, mut b) = (TraceHash::default(), TraceHash::default());
        a.mix(1);
        a.mix(2);
        b.mix(2);
        b.mix(1);
        assert_ne!(a, b);
    }
}
