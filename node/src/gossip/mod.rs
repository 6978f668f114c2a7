//! Gossip: membership, failure detection and each node's small public state,
//! over chitchat, sealed on the wire with the cluster key.
//!
//! INTERFACE CONTRACT (agreed between the gossip and node-core work; the
//! gossip work fills in the bodies and may add items, but keeps these
//! signatures):
//!
//! ```ignore
//! let (gossip, mut snapshots) = Gossip::start(config, local_state).await?;
//! gossip.publish(new_local_state);          // cheap; coalesced
//! snapshots.changed().await; let snap = snapshots.borrow().clone();
//! gossip.stats();                           // counters for metrics
//! gossip.leave().await;                     // graceful shutdown
//! ```

use agora_protocol::constraint::Attributes;
use agora_protocol::fairness::FrameworkUsage;
use agora_protocol::ids::{FrameworkId, NodeId};
use agora_protocol::resources::Resources;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The 32-byte secret shared by every node of a cluster (base64 in files).
#[derive(Clone)]
pub struct ClusterKey(pub [u8; 32]);

impl ClusterKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        todo!("gossip work")
    }
    /// Standard base64 of the 32 bytes.
    pub fn to_base64(&self) -> String {
        todo!("gossip work")
    }
    /// Parses base64 text (surrounding whitespace ignored).
    ///
    /// # Errors
    /// A message saying what is wrong and how to make a key (`agora keygen`).
    pub fn from_base64(_text: &str) -> anyhow::Result<Self> {
        todo!("gossip work")
    }
    /// Reads a key file written by `agora keygen > FILE`.
    ///
    /// # Errors
    /// Unreadable file or bad content, with the path in the message.
    pub fn load(_path: &Path) -> anyhow::Result<Self> {
        todo!("gossip work")
    }
}

/// How to run gossip.
#[derive(Clone)]
pub struct GossipConfig {
    /// This node.
    pub node_id: NodeId,
    /// The public UDP address to bind (`--listen`).
    pub listen: SocketAddr,
    /// The address peers should use to reach us (defaults to `listen`).
    pub advertise: SocketAddr,
    /// Seed addresses `HOST:PORT`.
    pub seeds: Vec<String>,
    /// The cluster key.
    pub key: ClusterKey,
    /// Gossip round interval.
    pub interval: Duration,
    /// Cluster name (nodes with another name ignore each other).
    pub cluster_id: String,
}

/// What this node publishes (kept well under 1 KiB).
#[derive(Clone, Debug, PartialEq)]
pub struct LocalState {
    /// libp2p multiaddr peers dial, e.g. `/ip4/127.0.0.1/tcp/7001`.
    pub p2p_addr: String,
    /// libp2p peer id (base58).
    pub peer_id: String,
    /// Total resources.
    pub total: Resources,
    /// Free resources, as of `version`.
    pub free: Resources,
    /// The auctioneer's ledger version.
    pub version: u64,
    /// Attributes.
    pub attrs: Attributes,
    /// Per-framework allocation totals on this node.
    pub allocations: BTreeMap<FrameworkId, FrameworkUsage>,
}

/// One node as gossip knows it (including this node itself).
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// The node's id.
    pub id: NodeId,
    /// Its gossip address.
    pub gossip_addr: SocketAddr,
    /// Whether chitchat's failure detector holds it alive.
    pub alive: bool,
    /// Its published state (None until its keys have arrived).
    pub state: Option<LocalState>,
}

/// The whole membership at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Every member ever seen and not yet garbage-collected, in id order.
    pub members: Vec<Member>,
}

/// Counters for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Sealed bytes received from the network.
    pub bytes_in: u64,
    /// Sealed bytes sent to the network.
    pub bytes_out: u64,
    /// Datagrams dropped because they failed to open with the cluster key.
    pub datagrams_rejected: u64,
}

/// A running gossip instance.
pub struct Gossip {
    _private: (),
}

impl Gossip {
    /// Starts gossip: binds the public socket, starts chitchat behind the
    /// sealing relay, and returns a watch of membership snapshots.
    ///
    /// # Errors
    /// Address in use, bad seeds, and similar, with the address in the message.
    pub async fn start(
        _config: GossipConfig,
        _initial: LocalState,
    ) -> anyhow::Result<(Gossip, tokio::sync::watch::Receiver<Arc<Snapshot>>)> {
        todo!("gossip work")
    }

    /// Replaces what this node publishes.
    pub fn publish(&self, _state: LocalState) {
        todo!("gossip work")
    }

    /// Counters.
    pub fn stats(&self) -> GossipStats {
        todo!("gossip work")
    }

    /// Leaves the cluster gracefully and stops.
    pub async fn leave(self) {
        todo!("gossip work")
    }
}
