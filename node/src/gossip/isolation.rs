//! Telling the operator that this node is alone.
//!
//! A node started with another cluster key or cluster id than its seeds
//! sends gossip that they cannot open and hears nothing it can open: it
//! stays a cluster of one and, before this, said nothing about it (issue
//! 12). [`Detector`] decides, from what the node sees, when to say so:
//! the node *expects peers* when it has seeds, or when it receives gossip
//! it cannot open; it is *isolated* when it expects peers and has seen no
//! other live node for [`Detector::alone_after`]. It then reports once and
//! again every [`WARN_EVERY`] while that lasts, with the datagrams sent,
//! received and rejected meanwhile, and once more when a peer appears.
//! The node's side that receives the foreign datagrams warns about them
//! too (`relay.rs`), and `agora_gossip_isolated` is 1 while isolated.
//!
//! The detector is plain data driven by the caller's clock
//! ([`Detector::observe`]); [`watch`] is the task that feeds it.

use super::Snapshot;
use super::relay::Counters;
use crate::http::EDGE;
use agora_protocol::NodeId;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Time between two reports while the node stays isolated.
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// Gossip rounds without another live node after which a node that
/// expects peers reports that it is alone (at least [`MIN_ALONE`]).
pub const ALONE_ROUNDS: u32 = 20;

/// The shortest wait before reporting, whatever the gossip interval.
pub const MIN_ALONE: Duration = Duration::from_secs(5);

/// Running totals of the gossip socket, as [`Counters`] holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams received (whether or not they opened).
    pub received: u64,
    /// Datagrams received that did not open with the cluster key and id.
    pub rejected: u64,
}

impl Totals {
    fn since(self, then: Totals) -> Totals {
        Totals {
            sent: self.sent.saturating_sub(then.sent),
            received: self.received.saturating_sub(then.received),
            rejected: self.rejected.saturating_sub(then.rejected),
        }
    }
}

/// What to tell the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The node is isolated: alone for `alone` while expecting peers;
    /// `traffic` is what the socket did since the last report (or since the
    /// node became alone).
    Isolated {
        /// How long no other node has been alive.
        alone: Duration,
        /// Datagrams since the last report.
        traffic: Totals,
    },
    /// Another node is alive again after an isolation was reported.
    Rejoined {
        /// Other live nodes now.
        others: usize,
    },
}

/// Decides when this node reports being isolated (see the module docs).
#[derive(Debug)]
pub struct Detector {
    has_seeds: bool,
    alone_after: Duration,
    /// When the node last saw no other live node after seeing some (or
    /// started), and the totals then.
    alone_since: Option<(Instant, Totals)>,
    /// When the last isolation report was made, and the totals then.
    reported: Option<(Instant, Totals)>,
}

impl Detector {
    /// A detector for a node with or without seeds that gossips every
    /// `interval`.
    pub fn new(has_seeds: bool, interval: Duration) -> Self {
        Detector {
            has_seeds,
            alone_after: Self::alone_after(interval),
            alone_since: None,
            reported: None,
        }
    }

    /// How long a node that expects peers waits before reporting that it is
    /// alone: [`ALONE_ROUNDS`] gossip rounds, at least [`MIN_ALONE`] (20 s
    /// at the default 1 s interval).
    pub fn alone_after(interval: Duration) -> Duration {
        (interval * ALONE_ROUNDS).max(MIN_ALONE)
    }

    /// Whether an isolation is reported and not yet over.
    pub fn isolated(&self) -> bool {
        self.reported.is_some()
    }

    /// Takes what the node sees at `now`: how many other nodes are alive
    /// and the socket's running totals.
    pub fn observe(&mut self, now: Instant, others_alive: usize, totals: Totals) -> Option<Report> {
        if others_alive > 0 {
            self.alone_since = None;
            return self.reported.take().map(|_| Report::Rejoined {
                others: others_alive,
            });
        }
        let (since, at_start) = *self.alone_since.get_or_insert((now, totals));
        let expects_peers = self.has_seeds || totals.rejected > at_start.rejected;
        let alone = now.saturating_duration_since(since);
        if !expects_peers || alone < self.alone_after {
            return None;
        }
        let then = match self.reported {
            Some((at, _)) if now.saturating_duration_since(at) < WARN_EVERY => return None,
            Some((_, then)) => then,
            None => at_start,
        };
        self.reported = Some((now, totals));
        Some(Report::Isolated {
            alone,
            traffic: totals.since(then),
        })
    }
}

/// What the reports name.
pub struct Context {
    /// This node.
    pub me: NodeId,
    /// Its seeds, less its own address.
    pub seeds: Vec<String>,
    /// Its cluster id.
    pub cluster_id: String,
    /// Its gossip interval (how often to look).
    pub interval: Duration,
}

impl Context {
    /// The warning for an isolation report.
    pub fn message(&self, alone: Duration, traffic: Totals) -> String {
        let mut text = format!(
            "this node is alone: no other node has been alive in its gossip view for {} s; \
             meanwhile it sent {} gossip datagrams and received {}, of which {} did not open \
             with its cluster key and cluster id {:?}. ",
            alone.as_secs(),
            traffic.sent,
            traffic.received,
            traffic.rejected,
            self.cluster_id
        );
        if !self.seeds.is_empty() {
            text.push_str(&format!(
                "Check that its seeds ({}) run `agora agent` and are reachable over UDP, and ",
                self.seeds.join(", ")
            ));
        } else {
            text.push_str(
                "Nodes with another key or cluster id are trying to gossip with it: check ",
            );
        }
        text.push_str(
            "that every node has the same --cluster-key-file contents and the same --cluster-id",
        );
        text
    }
}

/// Feeds a [`Detector`] every gossip round from the snapshots and the
/// socket's counters, logs its reports and sets `agora_gossip_isolated`.
pub async fn watch(
    ctx: Context,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    counters: Arc<Counters>,
) {
    let mut detector = Detector::new(!ctx.seeds.is_empty(), ctx.interval);
    let mut tick = tokio::time::interval(ctx.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let others = snapshots
            .borrow_and_update()
            .alive()
            .filter(|m| m.id != ctx.me)
            .count();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let totals = Totals {
            sent: load(&counters.datagrams_out),
            received: load(&counters.datagrams_in),
            rejected: load(&counters.datagrams_rejected),
        };
        match detector.observe(Instant::now(), others, totals) {
            Some(Report::Isolated { alone, traffic }) => tracing::warn!(
                alone_s = alone.as_secs(),
                sent = traffic.sent,
                received = traffic.received,
                rejected = traffic.rejected,
                seeds = ?ctx.seeds,
                cluster_id = %ctx.cluster_id,
                "{}",
                ctx.message(alone, traffic)
            ),
            Some(Report::Rejoined { others }) => tracing::info!(
                others,
                "this node is no longer alone: {others} other nodes are alive in its gossip view"
            ),
            None => {}
        }
        EDGE.gossip_isolated
            .store(u64::from(detector.isolated()), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(sent: u64, received: u64, rejected: u64) -> Totals {
        Totals {
            sent,
            received,
            rejected,
        }
    }

    #[test]
    fn a_seeded_node_that_stays_alone_reports_after_the_wait_then_once_a_minute() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut d = Detector::new(true, Duration::from_secs(1));
        assert_eq!(
            Detector::alone_after(Duration::from_secs(1)),
            Duration::from_secs(20)
        );
        assert_eq!(d.observe(at(0), 0, totals(0, 0, 0)), None);
        assert_eq!(d.observe(at(19), 0, totals(50, 0, 0)), None);
        assert_eq!(
            d.observe(at(20), 0, totals(60, 3, 3)),
            Some(Report::Isolated {
                alone: Duration::from_secs(20),
                traffic: totals(60, 3, 3)
            })
        );
        assert!(d.isolated());
        for s in 21..80 {
            assert_eq!(d.observe(at(s), 0, totals(60 + s, 3, 3)), None, "{s}");
        }
        // A minute later: what happened in that minute.
        assert_eq!(
            d.observe(at(80), 0, totals(140, 5, 5)),
            Some(Report::Isolated {
                alone: Duration::from_secs(80),
                traffic: totals(80, 2, 2)
            })
        );
        assert_eq!(
            d.observe(at(81), 2, totals(141, 9, 5)),
            Some(Report::Rejoined { others: 2 })
        );
        assert!(!d.isolated());
        assert_eq!(d.observe(at(82), 2, totals(142, 10, 5)), None);
        // Alone again: the wait starts over.
        assert_eq!(d.observe(at(90), 0, totals(150, 10, 5)), None);
        assert_eq!(d.observe(at(109), 0, totals(150, 10, 5)), None);
        assert!(matches!(
            d.observe(at(110), 0, totals(150, 10, 5)),
            Some(Report::Isolated { .. })
        ));
    }

    #[test]
    fn a_node_without_seeds_reports_only_when_it_receives_gossip_it_cannot_open() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_millis(s * 200);
        let mut d = Detector::new(false, Duration::from_millis(200));
        // The first node of a cluster, alone and quiet, is not isolated.
        for i in 0..1000 {
            assert_eq!(d.observe(at(i), 0, totals(0, 0, 0)), None);
        }
        // Someone with another key gossips to it.
        let r = d.observe(at(1000), 0, totals(0, 4, 4));
        assert_eq!(
            r,
            Some(Report::Isolated {
                alone: Duration::from_secs(200),
                traffic: totals(0, 4, 4)
            })
        );
        // A node that was never reported isolated has nothing to say on rejoining.
        let mut quiet = Detector::new(false, Duration::from_millis(200));
        assert_eq!(quiet.observe(at(0), 0, totals(0, 0, 0)), None);
        assert_eq!(quiet.observe(at(100), 1, totals(0, 0, 0)), None);
    }
}
