//! The bounded pool of peer connections and the bounded, retried queue of
//! outbound peer messages: the bookkeeping, with no sockets and no clock
//! of its own (every method that needs the time takes `now`), so that the
//! [`super::P2p`] shell only applies what it decides to the swarm.
//!
//! - Connections are opened on demand (the first message for a node dials
//!   it) and closed after [`PoolConfig::idle_timeout`] without a stream
//!   (libp2p's keep-alive does that; [`Pool::closed`] counts it).
//! - At most [`PoolConfig::max_connections`] are open: a connection
//!   established beyond the cap, inbound or outbound, makes the pool close
//!   the least recently used other one, preferring one with no message in
//!   flight ([`Pool::established`]). A message in flight on a connection
//!   closed that way fails with `ConnectionClosed` and is retried.
//! - At most [`MAX_IN_FLIGHT_PER_PEER`] messages are in flight (one yamux
//!   stream each) to one peer; the rest wait in that peer's queue, so a
//!   burst never runs into yamux's stream limit ([`MAX_STREAMS`], which
//!   also leaves room for the streams the peer opens towards us). The
//!   queues hold at most [`MAX_QUEUED`] messages in all; a message beyond
//!   is dropped and counted.
//! - A message whose stream failed for a reason that can pass (an io
//!   error such as a refused stream, a closed connection, a failed dial)
//!   is sent again after a backoff ([`RETRY_BACKOFF`]), at most
//!   [`MAX_RETRIES`] times; then it is dropped and counted. A timeout or a
//!   peer on another protocol version is not retried (the protocol's own
//!   timers take over).

use super::PeerEnvelope;
use agora_protocol::NodeId;
use libp2p::PeerId;
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::ConnectionId;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Default [`PoolConfig::max_connections`]. The home node of a busy
/// framework talks to every node it bids on and hears back from each: at
/// 100 agents on one machine a cap of 64 made that node close connections
/// still in use and open them again (cluster.sh, 1,000 tasks). 256 keeps
/// such a node's connections up to a few hundred nodes, while a node that
/// talks to few keeps few (connections open on demand and close when
/// idle); past that the cap bounds sockets and memory.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default [`PoolConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages in flight to one peer at once (one stream each).
pub const MAX_IN_FLIGHT_PER_PEER: usize = 128;
/// yamux's stream limit per connection (its default is 512; a peer's
/// inbound streams count too, and more than the limit ends the connection).
pub const MAX_STREAMS: usize = 1024;
/// Messages waiting in all queues (to be sent, or to be retried).
pub const MAX_QUEUED: usize = 16_384;
/// Times one message is sent again after its stream failed.
pub const MAX_RETRIES: u32 = 4;
/// Wait before the first retry; each next one waits three times longer
/// (0.1, 0.3, 0.9, 2.7 s).
pub const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Limits of the connection pool (`--peer-connections`,
/// `--peer-idle-timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Connections open at most (at least 1).
    pub max_connections: usize,
    /// A connection with no stream for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// The pool's counters (shown on /metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Connections closed after the idle timeout.
    pub closed_idle: u64,
    /// Connections closed to stay within the cap.
    pub closed_lru: u64,
    /// Messages sent again after their stream failed.
    pub retries: u64,
    /// Messages given up on: retries exhausted, not retryable, or no room
    /// in the queues.
    pub dropped: u64,
}

/// A message waiting, or in flight.
#[derive(Clone, Debug)]
pub struct Queued {
    /// The destination node.
    pub to: NodeId,
    /// Its peer id when the message was queued.
    pub peer: PeerId,
    /// What to send.
    pub envelope: PeerEnvelope,
    /// Sends so far that failed.
    pub failures: u32,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Pool {
    cfg: PoolConfig,
    /// Established connections.
    conns: BTreeMap<ConnectionId, PeerId>,
    /// Those the pool asked to close for the cap.
    closing: BTreeSet<ConnectionId>,
    /// When each peer was last used (a logical clock), for peers with a
    /// connection, a queue or a message in flight.
    last_used: HashMap<PeerId, u64>,
    tick: u64,
    in_flight: HashMap<PeerId, usize>,
    queues: HashMap<PeerId, VecDeque<Queued>>,
    /// Messages in `queues` and `retries`.
    queued: usize,
    retries: BTreeMap<(Instant, u64), Queued>,
    retry_seq: u64,
    outstanding: HashMap<OutboundRequestId, Queued>,
    /// Counters.
    pub counts: PoolCounts,
}

impl Pool {
    /// An empty pool.
    pub fn new(cfg: PoolConfig) -> Self {
        Pool {
            cfg: PoolConfig {
                max_connections: cfg.max_connections.max(1),
                ..cfg
            },
            conns: BTreeMap::new(),
            closing: BTreeSet::new(),
            last_used: HashMap::new(),
            tick: 0,
            in_flight: HashMap::new(),
            queues: HashMap::new(),
            queued: 0,
            retries: BTreeMap::new(),
            retry_seq: 0,
            outstanding: HashMap::new(),
            counts: PoolCounts::default(),
        }
    }

    /// The limits.
    pub fn config(&self) -> PoolConfig {
        self.cfg
    }

    /// Connections open, not counting those being closed for the cap.
    pub fn open(&self) -> usize {
        self.conns.len() - self.closing.len()
    }

    /// Messages waiting (to be sent or retried).
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Notes that `peer` was just used (a message to or from it).
    pub fn touch(&mut self, peer: PeerId) {
        self.tick += 1;
        self.last_used.insert(peer, self.tick);
    }

    /// Queues a message; false (and counted as dropped) when the queues
    /// are full.
    pub fn enqueue(&mut self, q: Queued) -> bool {
        if self.queued >= MAX_QUEUED {
            self.counts.dropped += 1;
            return false;
        }
        self.touch(q.peer);
        self.queued += 1;
        self.queues.entry(q.peer).or_default().push_back(q);
        true
    }

    /// The next message for `peer` when it has room in flight.
    pub fn next_ready(&mut self, peer: &PeerId) -> Option<Queued> {
        if self.in_flight.get(peer).copied().unwrap_or(0) >= MAX_IN_FLIGHT_PER_PEER {
            return None;
        }
        let queue = self.queues.get_mut(peer)?;
        let q = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(peer);
        }
        if q.is_some() {
            self.queued -= 1;
        }
        q
    }

    /// Records that `q` went out as request `id`.
    pub fn sent(&mut self, id: OutboundRequestId, q: Queued) {
        *self.in_flight.entry(q.peer).or_default() += 1;
        self.outstanding.insert(id, q);
    }

    /// Request `id` was answered: returns its peer (to send its next).
    pub fn answered(&mut self, id: OutboundRequestId) -> Option<PeerId> {
        let q = self.outstanding.remove(&id)?;
        self.land(&q.peer);
        Some(q.peer)
    }

    /// Request `id` failed: schedules a retry when `retryable` and retries
    /// are left (true), else drops it (false). Returns its peer, if the
    /// request was known.
    pub fn failed(
        &mut self,
        id: OutboundRequestId,
        retryable: bool,
        now: Instant,
    ) -> Option<(PeerId, bool)> {
        let mut q = self.outstanding.remove(&id)?;
        let peer = q.peer;
        self.land(&peer);
        if !retryable || q.failures >= MAX_RETRIES || self.queued >= MAX_QUEUED {
            self.counts.dropped += 1;
            return Some((peer, false));
        }
        let wait = RETRY_BACKOFF * 3u32.pow(q.failures);
        q.failures += 1;
        self.counts.retries += 1;
        self.retry_seq += 1;
        self.queued += 1;
        self.retries.insert((now + wait, self.retry_seq), q);
        Some((peer, true))
    }

    fn land(&mut self, peer: &PeerId) {
        if let Some(n) = self.in_flight.get_mut(peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(peer);
            }
        }
    }

    /// When the earliest retry is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.retries.keys().next().map(|(t, _)| *t)
    }

    /// Moves the retries due at `now` to the front of their peers' queues;
    /// returns those peers.
    pub fn due(&mut self, now: Instant) -> BTreeSet<PeerId> {
        let mut peers = BTreeSet::new();
        while let Some(entry) = self.retries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let q = entry.remove();
            peers.insert(q.peer);
            self.queues.entry(q.peer).or_default().push_front(q);
        }
        peers
    }

    /// A connection was established; returns the connections to close to
    /// stay within the cap (counted as closed for the cap).
    pub fn established(&mut self, conn: ConnectionId, peer: PeerId) -> Vec<ConnectionId> {
        self.conns.insert(conn, peer);
        if !self.last_used.contains_key(&peer) {
            self.touch(peer);
        }
        let mut close = Vec::new();
        while self.open() > self.cfg.max_connections {
            let victim = self
                .conns
                .iter()
                .filter(|(c, _)| **c != conn && !self.closing.contains(c))
                .min_by_key(|(_, p)| {
                    (
                        self.in_flight.contains_key(p),
                        self.last_used.get(p).copied().unwrap_or(0),
                    )
                })
                .map(|(c, _)| *c);
            let Some(victim) = victim else { break };
            self.closing.insert(victim);
            self.counts.closed_lru += 1;
            close.push(victim);
        }
        close
    }

    /// A connection closed; `idle` when its keep-alive timeout expired.
    /// `remaining` is how many connections to its peer are left.
    pub fn closed(&mut self, conn: ConnectionId, idle: bool, remaining: u32) {
        let Some(peer) = self.conns.remove(&conn) else {
            return;
        };
        if !self.closing.remove(&conn) && idle {
            self.counts.closed_idle += 1;
        }
        if remaining == 0 && !self.in_flight.contains_key(&peer) && !self.queues.contains_key(&peer)
        {
            self.last_used.remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::TaskId;
    use agora_protocol::wire::{PeerMessage, StatusAck};

    fn queued(peer: PeerId) -> Queued {
        Queued {
            to: NodeId::new("n").unwrap(),
            peer,
            envelope: PeerEnvelope {
                from: NodeId::new("me").unwrap(),
                msg: PeerMessage::StatusAck(StatusAck {
                    task_id: TaskId::new("fw.1").unwrap(),
                    seq: 1,
                }),
                reply_to: None,
            },
            failures: 0,
        }
    }

    fn conn(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    #[test]
    fn a_connection_past_the_cap_closes_the_least_recently_used_idle_one() {
        let mut pool = Pool::new(PoolConfig {
            max_connections: 2,
            ..PoolConfig::default()
        });
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        assert!(pool.established(conn(1), a).is_empty());
        assert!(pool.established(conn(2), b).is_empty());
        pool.touch(a); // b is now the least recently used
        assert_eq!(pool.established(conn(3), c), vec![conn(2)]);
        assert_eq!(pool.open(), 2);
        pool.closed(conn(2), false, 0);
        assert_eq!(pool.open(), 2);
        assert_eq!(pool.counts.closed_lru, 1);
        assert_eq!(pool.counts.closed_idle, 0);
        pool.closed(conn(1), true, 0);
        assert_eq!((pool.open(), pool.counts.closed_idle), (1, 1));
    }

    #[test]
    fn the_queue_is_bounded_and_counts_what_it_drops() {
        let mut pool = Pool::new(PoolConfig::default());
        let p = PeerId::random();
        for _ in 0..MAX_QUEUED {
            assert!(pool.enqueue(queued(p)));
        }
        assert!(!pool.enqueue(queued(p)));
        assert_eq!(pool.counts.dropped, 1);
        assert_eq!(pool.queued(), MAX_QUEUED);
        // Nothing is in flight yet, so the window lets the first ones out.
        assert!(pool.next_ready(&p).is_some());
        assert_eq!(pool.queued(), MAX_QUEUED - 1);
    }
}
