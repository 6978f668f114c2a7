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
//!
//! # How it fits together
//!
//! - chitchat 0.13 (scuttlebutt anti-entropy and a phi-accrual failure
//!   detector) runs the membership. Each node is a `ChitchatId` of its node
//!   id, a *generation* (milliseconds since the Unix epoch at start, so a
//!   restarted node is a new member and its old incarnation dies away) and
//!   its advertised gossip address.
//! - `state.rs` spells [`LocalState`] as a few short chitchat keys (a few
//!   hundred bytes per node) and reads peers' keys defensively.
//! - `relay.rs` is the only socket on the network: chitchat itself talks to
//!   loopback and every datagram is sealed (`seal.rs`, XChaCha20-Poly1305
//!   with the cluster key) on the way out and opened on the way in; a
//!   datagram that fails to open is dropped and counted.
//! - `view.rs` is the driver task: it applies [`Gossip::publish`], feeds
//!   chitchat's heartbeats to the failure detector, sends the detector's
//!   probes and the join push, and turns chitchat's state into
//!   [`Snapshot`]s on a watch channel.
//! - `detector.rs` decides [`Member::alive`] (sans-IO): joining until a
//!   member's heartbeat advances, suspect and probed directly after a
//!   silence of 4 mean heartbeat gaps (2 to 8 gossip intervals, at least
//!   1 s), dead one interval (at least 0.5 s) later; every threshold grows with this node's own *local
//!   health* (Lifeguard) when its ticks run late.
//! - `join.rs` is the join push (sans-IO): a starting node re-synchronizes
//!   with its seeds five times in its first 1.6 s and greets each member it
//!   learns of (at most 64) twice, directly.
//!
//! docs/MEMBERSHIP.md explains the whole and has the measurements.
//!
//! # Timing defaults
//!
//! With the default [`DEFAULT_INTERVAL`] of 500 ms, each node gossips with
//! up to three peers twice a second. A member that stops abruptly is seen
//! dead by every survivor in 2 to 3 s at 16 to 32 nodes on loopback (3 to 6
//! intervals: the silence above, plus the time its last heartbeat takes to
//! reach everyone), well within the 30 s that lost-task reporting promises.
//! A node started with `--seeds` is seen alive by every member, and sees
//! them, within about 0.2 s of starting. A node that leaves gracefully
//! ([`Gossip::leave`]) is reported not alive within a round trip (0.15 s
//! measured). Chitchat's own phi-accrual detector (see
//! [`failure_detector_config`]) still runs: it picks chitchat's gossip peers
//! and garbage-collects dead members; it no longer decides `alive`. Dead
//! members stay in snapshots (not alive) for [`DEAD_MEMBER_RETENTION`], then
//! chitchat forgets them.
//!
//! # Limits
//!
//! Chitchat sends its full digest in every round inside one UDP datagram; the
//! seal adds 41 bytes, so the largest chitchat datagram that can be sent is
//! 65,466 bytes ([`relay::MAX_PLAINTEXT`]); a larger one is dropped with a
//! warning and counted in [`GossipStats::send_failures`]. This caps one cell
//! at roughly a thousand members.

use agora_protocol::constraint::Attributes;
use agora_protocol::fairness::FrameworkUsage;
use agora_protocol::ids::{FrameworkId, NodeId};
use agora_protocol::resources::Resources;
use anyhow::{Context, bail};
use chitchat::transport::Transport;
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion,
    spawn_chitchat,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

mod detector;
pub mod isolation;
mod join;
mod key;
pub mod relay;
pub mod seal;
pub mod state;
mod view;

#[cfg(test)]
mod tests;

pub use key::ClusterKey;

/// Default gossip round interval (see the module docs for why).
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);

/// Default cluster id (nodes with another id ignore each other).
pub const DEFAULT_CLUSTER_ID: &str = "agora";

/// How long a dead member stays in snapshots (as not alive) before chitchat
/// garbage-collects it. Chitchat stops gossiping about it after half of this.
pub const DEAD_MEMBER_RETENTION: Duration = Duration::from_secs(15 * 60);

/// How long tombstoned keys are kept before garbage collection.
const TOMBSTONE_RETENTION: Duration = Duration::from_secs(60 * 60);

/// The chitchat failure detector settings used for a gossip `interval`.
///
/// - `phi_threshold` 8 (chitchat's default): dead after 8 mean heartbeat
///   intervals of silence;
/// - `initial_interval` = `interval`: the prior mean heartbeat interval
///   (weight 5) a new member starts with; chitchat's default of 5 s would
///   make detection take up to 40 s during a member's first minutes;
/// - `max_interval` = max(10 s, 10 × interval): longer gaps are not samples;
/// - `sampling_window_size` 1000 (chitchat's default);
/// - `dead_node_grace_period` = [`DEAD_MEMBER_RETENTION`].
pub fn failure_detector_config(interval: Duration) -> FailureDetectorConfig {
    FailureDetectorConfig {
        phi_threshold: 8.0,
        sampling_window_size: 1_000,
        max_interval: (interval * 10).max(Duration::from_secs(10)),
        initial_interval: interval,
        dead_node_grace_period: DEAD_MEMBER_RETENTION,
    }
}

/// How to run gossip.
#[derive(Clone, Debug)]
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
    /// Gossip round interval ([`DEFAULT_INTERVAL`] unless tests need faster).
    pub interval: Duration,
    /// Cluster name (nodes with another name ignore each other).
    pub cluster_id: String,
}

impl GossipConfig {
    /// A configuration with the defaults: advertise = `listen`, no seeds,
    /// [`DEFAULT_INTERVAL`] and [`DEFAULT_CLUSTER_ID`].
    pub fn new(node_id: NodeId, listen: SocketAddr, key: ClusterKey) -> Self {
        GossipConfig {
            node_id,
            listen,
            advertise: listen,
            seeds: Vec::new(),
            key,
            interval: DEFAULT_INTERVAL,
            cluster_id: DEFAULT_CLUSTER_ID.to_string(),
        }
    }
}

/// What this node publishes (kept well under 1 KiB).
#[derive(Clone, Debug, Default, PartialEq)]
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
    /// The node's cell, when the cluster runs in cells.
    pub cell: Option<String>,
    /// In its cell's gossip: the federation gossip address, while this
    /// node is one of the cell's gateways.
    pub federation: Option<String>,
    /// In the federation's gossip: the aggregate of the gateway's cell.
    pub aggregate: Option<agora_protocol::cell::CellAggregate>,
}

impl LocalState {
    /// Bytes of chitchat keys and values this state publishes (chitchat adds
    /// a few bytes of framing per key).
    pub fn published_len(&self) -> usize {
        state::encoded_len(self)
    }
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
    /// Its chitchat generation (milliseconds since the epoch at its start):
    /// a restart shows as a larger one.
    pub generation: u64,
}

impl Member {
    /// The member as the protocol's cluster view holds it, once its state
    /// has arrived (`None` before).
    pub fn to_node_info(&self) -> Option<agora_protocol::view::NodeInfo> {
        let state = self.state.as_ref()?;
        Some(agora_protocol::view::NodeInfo {
            id: self.id.clone(),
            addr: self.gossip_addr.to_string(),
            total: state.total,
            free: state.free,
            version: state.version,
            attrs: state.attrs.clone(),
            alive: self.alive,
            allocations: state.allocations.clone(),
            generation: self.generation,
        })
    }
}

/// Another incarnation of this node's own id in gossip: this node's previous
/// run, or another agent started with the same `--node-id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incarnation {
    /// Its gossip address.
    pub gossip_addr: SocketAddr,
    /// Its chitchat generation (start time, Unix milliseconds).
    pub generation: u64,
    /// Its libp2p peer id (its identity key), once known.
    pub peer_id: Option<String>,
    /// Whether the failure detector holds it alive (and it is not leaving).
    pub alive: bool,
    /// How many times its heartbeat was seen to advance since this node
    /// first heard of it: a previous run that has stopped does not advance
    /// (more than gossip catching up), a running agent does.
    pub heartbeat_advances: u64,
}

/// The whole membership at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Every member ever seen and not yet garbage-collected, in id order:
    /// one per node id (see `view.rs` for which incarnation).
    pub members: Vec<Member>,
    /// The other incarnations of this node's own id.
    pub rivals: Vec<Incarnation>,
}

impl Snapshot {
    /// The member with this id, if gossip knows it.
    pub fn get(&self, id: &NodeId) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.id.cmp(id))
            .ok()
            .map(|i| &self.members[i])
    }

    /// The members the failure detector holds alive.
    pub fn alive(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.alive)
    }
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
    /// Datagrams received from the network (sealed or not).
    pub datagrams_in: u64,
    /// Sealed datagrams sent to the network.
    pub datagrams_out: u64,
    /// Datagrams that opened with the key but chitchat could not decode.
    pub datagrams_malformed: u64,
    /// Datagrams that could not be sent (unreachable peer, too large).
    pub send_failures: u64,
    /// Direct exchanges the failure detector started with silent members.
    pub probes: u64,
    /// Direct exchanges the join push started (seeds re-synced, members
    /// greeted) in this node's first seconds.
    pub join_pushes: u64,
    /// The failure detector's local health score now: 0 when this node keeps
    /// time, up to 8 when it is starved (every timeout is then 9 times longer).
    pub local_health: u64,
}

/// A running gossip instance.
///
/// Dropping it stops gossip abruptly (as a crash would: peers' failure
/// detectors notice); [`Gossip::leave`] stops it gracefully.
pub struct Gossip {
    handle: Option<Arc<ChitchatHandle>>,
    publish_tx: watch::Sender<LocalState>,
    counters: Arc<relay::Counters>,
    driver: JoinHandle<()>,
    isolation: JoinHandle<()>,
    node_id: NodeId,
    generation: u64,
    gossip_addr: SocketAddr,
    advertise: SocketAddr,
    interval: Duration,
}

impl Gossip {
    /// Starts gossip: binds the public socket, starts chitchat behind the
    /// sealing relay, and returns a watch of membership snapshots.
    ///
    /// `listen` may have port 0 (tests): the bound port is then also the
    /// advertised one, see [`Gossip::gossip_addr`]. The first snapshot
    /// already holds this node.
    ///
    /// # Errors
    /// Address in use, bad seeds, and similar, with the address in the message.
    pub async fn start(
        config: GossipConfig,
        initial: LocalState,
    ) -> anyhow::Result<(Gossip, watch::Receiver<Arc<Snapshot>>)> {
        if config.interval.is_zero() {
            bail!("the gossip interval must be longer than zero");
        }
        for seed in &config.seeds {
            check_seed(seed)?;
        }
        let counters = Arc::new(relay::Counters::default());
        let sealer = seal::Sealer::new(&config.key, &config.cluster_id);
        let socket = relay::SealedSocket::bind(config.listen, sealer, counters.clone()).await?;
        let gossip_addr = socket.public_addr();
        let advertise = advertise_addr(config.advertise, gossip_addr)?;
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let chitchat_id = ChitchatId::new(config.node_id.as_str(), generation, advertise);
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.interval,
            listen_addr: gossip_addr,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: failure_detector_config(config.interval),
            marked_for_deletion_grace_period: TOMBSTONE_RETENTION,
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        };
        let initial_kvs = state::encode(&initial)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let transport = relay::SealedTransport::new(socket);
        let handle = spawn_chitchat(chitchat_config, initial_kvs, &transport as &dyn Transport)
            .await
            .with_context(|| format!("cannot start gossip on {gossip_addr}"))?;
        let handle = Arc::new(handle);
        let (publish_tx, publish_rx) = watch::channel(initial);
        let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
        let mut driver =
            view::Driver::new(handle.clone(), config.interval, publish_rx, snapshot_tx)
                .with_counters(counters.clone());
        driver.refresh(None).await;
        let driver = tokio::spawn(driver.run(handle.termination_watcher()));
        // A node listed among its own seeds (one seed list for every node)
        // does not expect peers because of that entry.
        let other_seeds = config
            .seeds
            .iter()
            .filter(|s| {
                s.parse::<SocketAddr>()
                    .map_or(true, |a| a != advertise && a != gossip_addr)
            })
            .cloned()
            .collect();
        let isolation = tokio::spawn(isolation::watch(
            isolation::Context {
                me: config.node_id.clone(),
                seeds: other_seeds,
                cluster_id: config.cluster_id.clone(),
                interval: config.interval,
            },
            snapshot_rx.clone(),
            counters.clone(),
        ));
        info!(
            node = %config.node_id,
            %gossip_addr,
            %advertise,
            generation,
            seeds = ?config.seeds,
            interval_ms = config.interval.as_millis() as u64,
            "gossip started (sealed with the cluster key)"
        );
        Ok((
            Gossip {
                handle: Some(handle),
                publish_tx,
                counters,
                driver,
                isolation,
                node_id: config.node_id,
                generation,
                gossip_addr,
                advertise,
                interval: config.interval,
            },
            snapshot_rx,
        ))
    }

    /// Starts one direct exchange with `addr` (a member this node has not
    /// heard of through gossip: a cell's member found through the
    /// directory). Best effort.
    pub fn gossip_with(&self, addr: SocketAddr) {
        if let Some(h) = &self.handle
            && let Err(err) = h.gossip(addr)
        {
            debug!(%addr, %err, "could not start a direct gossip exchange");
        }
    }

    /// Replaces what this node publishes. Never blocks: the driver task
    /// writes the latest state into chitchat, and only changed keys travel.
    pub fn publish(&self, state: LocalState) {
        self.publish_tx.send_replace(state);
    }

    /// Counters.
    pub fn stats(&self) -> GossipStats {
        let c = &self.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        GossipStats {
            bytes_in: load(&c.bytes_in),
            bytes_out: load(&c.bytes_out),
            datagrams_rejected: load(&c.datagrams_rejected),
            datagrams_in: load(&c.datagrams_in),
            datagrams_out: load(&c.datagrams_out),
            datagrams_malformed: load(&c.datagrams_malformed),
            send_failures: load(&c.send_failures),
            probes: load(&c.probes),
            join_pushes: load(&c.join_pushes),
            local_health: load(&c.local_health),
        }
    }

    /// This incarnation's chitchat generation: milliseconds since the Unix
    /// epoch when gossip started. It grows across restarts, so it can seed
    /// counters that must never go backwards when the node restarts (such as
    /// the ledger version peers compare, see `agora_protocol::view`).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The bound gossip socket (the real port when `listen` had port 0).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// The address peers gossip to (what other nodes list as our address,
    /// and what to pass as a seed to join through this node).
    pub fn advertise_addr(&self) -> SocketAddr {
        self.advertise
    }

    /// Leaves the cluster gracefully and stops.
    ///
    /// Publishes a "leaving" mark (peers stop counting this node alive as
    /// soon as it reaches them), pushes it to the live peers at once, waits
    /// about two gossip rounds (at most 2 s) for it to spread, then stops
    /// chitchat.
    pub async fn leave(mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        let chitchat = handle.chitchat();
        view::mark_leaving(&chitchat).await;
        let peers: Vec<SocketAddr> = {
            let chitchat = chitchat.lock().await;
            let me = chitchat.self_chitchat_id().clone();
            chitchat
                .live_nodes()
                .filter(|id| **id != me)
                .map(|id| id.gossip_advertise_addr)
                .take(LEAVE_FANOUT)
                .collect()
        };
        for peer in &peers {
            if let Err(err) = handle.gossip(*peer) {
                debug!(%peer, %err, "could not push the leave mark to a peer");
            }
        }
        let linger = (self.interval * 2).clamp(Duration::from_millis(200), Duration::from_secs(2));
        tokio::time::sleep(linger).await;
        self.driver.abort();
        self.isolation.abort();
        let stopped = match handle.initiate_shutdown() {
            Ok(()) => handle.termination_watcher().await,
            Err(err) => Err(err),
        };
        if let Err(err) = stopped {
            warn!(err = %format!("{err:#}"), "gossip stopped with an error");
        }
        info!(node = %self.node_id, peers_told = peers.len(), "left the gossip cluster");
    }
}

/// How many live peers [`Gossip::leave`] tells directly (the rest hear it
/// through gossip).
const LEAVE_FANOUT: usize = 32;

impl Drop for Gossip {
    fn drop(&mut self) {
        self.driver.abort();
        self.isolation.abort();
        if let Some(handle) = self.handle.take() {
            // Stops chitchat's server task without any goodbye, as a crash would.
            handle.abort();
        }
    }
}

/// Checks that a seed looks like `HOST:PORT` (chitchat resolves names).
fn check_seed(seed: &str) -> anyhow::Result<()> {
    if seed.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = seed.rsplit_once(':') else {
        bail!("seed {seed:?}: expected HOST:PORT, e.g. 10.0.0.5:7000");
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        bail!("seed {seed:?}: expected HOST:PORT with a port from 1 to 65535");
    }
    Ok(())
}

/// The address to advertise: `configured`, with the bound port when it says
/// port 0, and never an unspecified IP (peers could not reach it).
fn advertise_addr(configured: SocketAddr, bound: SocketAddr) -> anyhow::Result<SocketAddr> {
    let mut advertise = configured;
    if advertise.port() == 0 {
        advertise.set_port(bound.port());
    }
    if advertise.ip().is_unspecified() {
        if bound.ip().is_unspecified() {
            bail!(
                "the gossip address to advertise is {advertise}, which peers cannot reach; \
                 set an advertise address (this machine's address that other nodes can reach)"
            );
        }
        advertise.set_ip(bound.ip());
    }
    Ok(advertise)
}
