//! The invariants checked after every event, and a deliberate fault to prove
//! the checker works.
//!
//! - **No overcommit**: a node's auctioneer never holds more than its
//!   capacity, and the tasks its (simulated) executor actually runs never add
//!   up to more than its capacity. The second check is independent of the
//!   protocol's own ledger: it is what the machine would really suffer.
//! - **One answer per bid**: for every bidder, bids sent = bids awarded +
//!   rejected + timed out + still outstanding; an answer counted twice or a
//!   bid forgotten breaks the equation.
//! - **No lost task unreported**: a task that was running on a node when it
//!   crashed must reach a terminal state at its framework within
//!   [`LOST_REPORT_BOUND`] (failure detection plus retries).

use crate::engine::{Micros, SEC};
use agora_protocol::bidder::Bidder;
use agora_protocol::{NodeId, Resources, TaskId};
use std::collections::HashMap;
use std::fmt;

/// Longest a lost task may stay unreported.
pub const LOST_REPORT_BOUND: Micros = 120 * SEC;

/// A broken invariant: what, where, and how to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The run's seed.
    pub seed: u64,
    /// Simulated time of the event.
    pub time: Micros,
    /// Index of the event (events processed so far).
    pub event: u64,
    /// What broke.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant violated at event #{} (t = {:.6} s), seed {}: {}; re-run with --seed {} to reproduce",
            self.event,
            self.time as f64 / SEC as f64,
            self.seed,
            self.what,
            self.seed
        )
    }
}

impl std::error::Error for Violation {}

fn violation(what: String) -> Violation {
    Violation {
        seed: 0,
        time: 0,
        event: 0,
        what,
    }
}

/// A test-only fault: at `at`, node `node`'s executor ledger gains `extra`
/// as if a task had been started behind the auctioneer's back.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// When.
    pub at: Micros,
    /// Which node.
    pub node: u32,
    /// The phantom allocation.
    pub extra: Resources,
}

/// Checks one node's ledgers against its capacity.
///
/// # Errors
/// A [`Violation`] naming the node and the dimension that overflowed.
pub fn check_node(
    id: &NodeId,
    capacity: &Resources,
    auction_used: &Resources,
    executor_used: &Resources,
) -> Result<(), Violation> {
    if !auction_used.fits_in(capacity) {
        return Err(violation(format!(
            "overcommit: node {id} has awarded {auction_used:?}, more than its capacity {capacity:?}"
        )));
    }
    if !executor_used.fits_in(capacity) {
        return Err(violation(format!(
            "overcommit: node {id} runs tasks holding {executor_used:?}, more than its capacity {capacity:?}"
        )));
    }
    Ok(())
}

/// Checks that every bid a bidder sent is accounted for exactly once.
///
/// # Errors
/// A [`Violation`] with the bidder's counters.
pub fn check_bidder<R: rand::Rng>(b: &Bidder<R>) -> Result<(), Violation> {
    let s = b.stats();
    let ended = s.bids_awarded + s.bids_rejected + s.bids_timed_out;
    if ended + b.outstanding_bids() as u64 != s.bids_sent {
        return Err(violation(format!(
            "bid accounting: framework {} sent {} bids but {} were answered or timed out and {} are open",
            b.framework(),
            s.bids_sent,
            ended,
            b.outstanding_bids()
        )));
    }
    Ok(())
}

/// Checks that no task lost with a crashed node stayed unreported too long.
///
/// # Errors
/// A [`Violation`] naming the oldest such task.
pub fn check_lost(lost: &HashMap<TaskId, Micros>, now: Micros) -> Result<(), Violation> {
    let oldest = lost
        .iter()
        .filter(|(_, t)| now.saturating_sub(**t) > LOST_REPORT_BOUND)
        .min_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)));
    match oldest {
        Some((task, t)) => Err(violation(format!(
            "task {task} was lost with its node at {:.3} s and its framework was never told",
            *t as f64 / SEC as f64
        ))),
        None => Ok(()),
    }
}
