//! agora-sim: a deterministic discrete-event simulator that drives
//! agora-protocol's auctioneer and bidder, unchanged, at up to 10,000 nodes.
//!
//! - [`engine`]: virtual clock, event queue, trace hash.
//! - [`network`]: latency, loss, partitions; [`failures`]: crashes on a schedule.
//! - [`gossip`]: the chitchat 0.13 model (cells and federation).
//! - [`workload`]: short, mixed, fair and CSV workloads.
//! - [`auction`]: the auction run; [`baselines`]: central DRF, random, Sparrow.
//! - [`invariants`]: what is checked after every event.
//! - [`metrics`], [`plots`], [`cli`]: measuring, drawing and the command line.

pub mod auction;
pub mod baselines;
pub mod cli;
pub mod engine;
pub mod failures;
pub mod gossip;
pub mod invariants;
pub mod metrics;
pub mod network;
pub mod plots;
pub mod workload;
