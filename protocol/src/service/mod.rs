//! Services: long-running tasks kept at a count, with no leader
//! (docs/SERVICES.md). Being built (issue 15): this module holds the
//! decisions, which the node and the simulator will both drive.
//!
//! - [`spec`]: what a service is, and the checks a spec passes.
//! - [`version`]: hybrid-logical-clock versions; the larger wins.
//! - [`store`]: the replicated spec set (last writer wins, tombstones,
//!   anti-entropy summaries and digests).
//! - [`replica`]: spreading specs between nodes (writes pushed, then
//!   anti-entropy between nodes whose summaries differ).
//! - [`owner`]: which node owns a service (rendezvous over the eligible
//!   live nodes) and who takes over.
//! - [`plan`]: what the owner does next, from what it observes: replace,
//!   scale, roll out a new version, back off a crashing one.

pub mod owner;
pub mod plan;
pub mod replica;
pub mod spec;
pub mod store;
pub mod version;

pub use owner::{owner, ranked};
pub use plan::{Instance, Phase, Plan, Restarts, Status, StopReason, plan};
pub use replica::{Replica, SyncMessage, WriteError};
pub use spec::{Backoff, HealthCheck, Probe, ServiceSpec, SpecError, UpgradeStrategy};
pub use store::{Applied, Digest, Entry, Store, Summary};
pub use version::{Hlc, Stamp, Version};
