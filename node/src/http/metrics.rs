//! Prometheus metrics of one node, encoded by prometheus-client.
//!
//! The agent holds an `Arc<Metrics>` and calls plain methods: counters for
//! what happens (bids, gossip bytes, rejected datagrams) and the auction
//! latency histogram. Gauges that describe state (nodes, resources, tasks,
//! connected frameworks) follow from the [`ApiSnapshot`]; the HTTP module
//! refreshes them from the latest snapshot on every scrape, so the agent does
//! not have to (it may still set them itself when it serves no HTTP).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `agora_nodes` | gauge | `state` = alive, dead |
//! | `agora_resources_total` | gauge | `scope` = cluster, node; `dimension` |
//! | `agora_resources_free` | gauge | `scope` = cluster, node; `dimension` |
//! | `agora_tasks` | gauge | `state` (tasks this node knows) |
//! | `agora_bids_sent_total` | counter | |
//! | `agora_bids_won_total` | counter | |
//! | `agora_bids_rejected_total` | counter | |
//! | `agora_auction_latency_seconds` | histogram | |
//! | `agora_gossip_received_bytes_total` | counter | |
//! | `agora_gossip_sent_bytes_total` | counter | |
//! | `agora_gossip_rejected_datagrams_total` | counter | |
//! | `agora_frameworks_connected` | gauge | |
//! | `agora_peer_messages_total` | counter | `outcome` = sent, received, unroutable, failed |
//! | `agora_peers_other_version` | gauge | |
//! | `agora_socket_connections` | gauge | |
//! | `agora_socket_connections_refused_total` | counter | |
//! | `agora_frames_too_large_total` | counter | `port` = socket, peer, http |
//! | `agora_peer_handshake_failures_total` | counter | |
//! | `agora_http_connections` | gauge | |
//! | `agora_http_connections_refused_total` | counter | |
//! | `agora_http_connections_evicted_total` | counter | |
//! | `agora_http_header_timeouts_total` | counter | |
//! | `agora_http_body_timeouts_total` | counter | |
//! | `agora_gossip_isolated` | gauge | |
//! | `agora_peer_connections` | gauge | |
//! | `agora_peer_connections_closed_total` | counter | `reason` = idle, lru |
//! | `agora_peer_message_retries_total` | counter | |
//! | `agora_peer_messages_dropped_total` | counter | |
//! | `agora_gossip_probes_total` | counter | |
//! | `agora_gossip_join_pushes_total` | counter | |
//! | `agora_gossip_local_health` | gauge | |
//! | `agora_journal_syncs_total` | counter | |
//! | `agora_journal_write_errors_total` | counter | |
//! | `agora_cells_known` | gauge | |
//! | `agora_cells_imported` | gauge | |
//! | `agora_cell_gateway` | gauge | |
//! | `agora_cell_locates_total` | counter | |
//! | `agora_cell_located_total` | counter | |
//! | `agora_cell_messages_unlocated_total` | counter | |
//! | `agora_data_dir_unavailable` | gauge | `reason` = disk_full, data_dir_read_only, data_dir_unwritable: 1 while this node takes no new tasks for that reason |
//!
//! The nine from `agora_socket_connections` to `agora_gossip_isolated`
//! count refusals at the node's edges, and the four after them the peer
//! connection pool (`p2p::pool`), all in [`EDGE`]: they are
//! bumped where the refusal happens (the socket's accept loop, the peer
//! codec, the HTTP server, the gossip relay) and copied into the registry
//! on every [`Metrics::encode`].

use super::ApiSnapshot;
use super::views::ALL_STATES;
use agora_protocol::resources::{Dimension, Resources};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The libp2p layer's running totals, for [`Metrics::set_peer_totals`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerTotals {
    /// Messages handed to libp2p for another node.
    pub sent: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// Messages dropped because no address was known for the destination.
    pub unroutable: u64,
    /// Streams that failed (dial errors, timeouts, bad frames, another version).
    pub failed: u64,
    /// Peers seen speaking another peer-protocol version.
    pub other_version: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    scope: &'static str,
    dimension: &'static str,
}

/// Every metric of a node, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    nodes: Family<StateLabel, Gauge>,
    resources_total: Family<ResourceLabels, Gauge>,
    resources_free: Family<ResourceLabels, Gauge>,
    tasks: Family<StateLabel, Gauge>,
    /// Bids this node's bidders sent.
    pub bids_sent: Counter,
    /// Bids this node's bidders won (awards received).
    pub bids_won: Counter,
    /// Bids this node's bidders lost (rejects received).
    pub bids_rejected: Counter,
    auction_latency: Histogram,
    gossip_in: Counter,
    gossip_out: Counter,
    rejected_datagrams: Counter,
    frameworks_connected: Gauge,
    peer_messages: Family<OutcomeLabel, Counter>,
    peers_other_version: Gauge,
    edge: EdgeMetrics,
    data_dir_unavailable: Family<ReasonLabel, Gauge>,
    gossip_probes: Counter,
    gossip_join_pushes: Counter,
    gossip_local_health: Gauge,
    cells_known: Gauge,
    cells_imported: Gauge,
    cell_gateway: Gauge,
    cell_locates: Counter,
    cell_located: Counter,
    cell_unlocated: Counter,
    journal_syncs: Counter,
    journal_errors: Counter,
}

/// Running totals of the node's membership and journal, for
/// [`Metrics::set_node_totals`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeTotals {
    /// Direct exchanges the failure detector started with silent members.
    pub gossip_probes: u64,
    /// Direct exchanges the join push started.
    pub gossip_join_pushes: u64,
    /// The failure detector's local health score now (0 to 8).
    pub gossip_local_health: u64,
    /// Syncs of the task journal.
    pub journal_syncs: u64,
    /// Failed writes or syncs of the task journal.
    pub journal_errors: u64,
    /// Nodes of other cells looked for through their gateways.
    pub cell_locates: u64,
    /// Nodes found that way.
    pub cell_located: u64,
    /// Messages dropped because their node was not found.
    pub cell_unlocated: u64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agora");
        let nodes = Family::<StateLabel, Gauge>::default();
        registry.register(
            "nodes",
            "Nodes in this node's gossip view, by failure-detector state",
            nodes.clone(),
        );
        let resources_total = Family::<ResourceLabels, Gauge>::default();
        registry.register(
            "resources_total",
            "Total resources of the alive nodes (scope=cluster) or of this node (scope=node); cpu in millicores, mem and disk in MiB",
            resources_total.clone(),
        );
        let resources_free = Family::<ResourceLabels, Gauge>::default();
        registry.register(
            "resources_free",
            "Free resources of the alive nodes (scope=cluster) or of this node (scope=node); cpu in millicores, mem and disk in MiB",
            resources_free.clone(),
        );
        let tasks = Family::<StateLabel, Gauge>::default();
        registry.register(
            "tasks",
            "Tasks this node knows (homed or running here), by state",
            tasks.clone(),
        );
        let bids_sent = Counter::default();
        registry.register(
            "bids_sent",
            "Bids sent by this node's bidders",
            bids_sent.clone(),
        );
        let bids_won = Counter::default();
        registry.register("bids_won", "Bids that won an award", bids_won.clone());
        let bids_rejected = Counter::default();
        registry.register(
            "bids_rejected",
            "Bids that were rejected",
            bids_rejected.clone(),
        );
        let auction_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "auction_latency_seconds",
            "Time from a task's submit to its award",
            auction_latency.clone(),
        );
        let gossip_in = Counter::default();
        registry.register(
            "gossip_received_bytes",
            "Gossip bytes received (sealed datagrams)",
            gossip_in.clone(),
        );
        let gossip_out = Counter::default();
        registry.register(
            "gossip_sent_bytes",
            "Gossip bytes sent (sealed datagrams)",
            gossip_out.clone(),
        );
        let rejected_datagrams = Counter::default();
        registry.register(
            "gossip_rejected_datagrams",
            "Gossip datagrams dropped because they did not open with the cluster key",
            rejected_datagrams.clone(),
        );
        let frameworks_connected = Gauge::default();
        registry.register(
            "frameworks_connected",
            "Frameworks connected to this node's socket",
            frameworks_connected.clone(),
        );
        let peer_messages = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "peer_messages",
            "Peer-protocol messages (bids, awards, confirms, statuses) by outcome: sent, received, unroutable (no address known yet), failed (stream errors)",
            peer_messages.clone(),
        );
        let peers_other_version = Gauge::default();
        registry.register(
            "peers_other_version",
            "Peers that speak another peer-protocol version (another agora release): messages to them are dropped; upgrade every node to one version",
            peers_other_version.clone(),
        );
        let edge = EdgeMetrics::register(&mut registry);
        let data_dir_unavailable = Family::<ReasonLabel, Gauge>::default();
        registry.register(
            "data_dir_unavailable",
            "1 while this node takes no new tasks because its data dir cannot take them (reason: disk_full, data_dir_read_only, data_dir_unwritable); it advertises nothing free meanwhile and recovers by itself",
            data_dir_unavailable.clone(),
        );
        let gossip_probes = Counter::default();
        registry.register(
            "gossip_probes",
            "Direct exchanges the failure detector started with members that went silent (SWIM-style probes)",
            gossip_probes.clone(),
        );
        let gossip_join_pushes = Counter::default();
        registry.register(
            "gossip_join_pushes",
            "Direct exchanges this node started in its first seconds (seeds re-synced, members greeted)",
            gossip_join_pushes.clone(),
        );
        let gossip_local_health = Gauge::default();
        registry.register(
            "gossip_local_health",
            "The failure detector's local health score: 0 when this node keeps time, up to 8 when it is starved (its timeouts are then up to 9 times longer)",
            gossip_local_health.clone(),
        );
        let cells_known = Gauge::default();
        registry.register(
            "cells_known",
            "Cells this node knows, its own included (0 in a flat cluster; docs/CELLS.md)",
            cells_known.clone(),
        );
        let cells_imported = Gauge::default();
        registry.register(
            "cells_imported",
            "Other cells whose members this node holds in its view for the frameworks homed here",
            cells_imported.clone(),
        );
        let cell_gateway = Gauge::default();
        registry.register(
            "cell_gateway",
            "1 while this node is one of its cell's gateways (in the federation gossip)",
            cell_gateway.clone(),
        );
        let cell_locates = Counter::default();
        registry.register(
            "cell_locates",
            "Nodes of other cells this node looked for through those cells' gateways, to send them a message (a task's home or runner asked about from elsewhere)",
            cell_locates.clone(),
        );
        let cell_located = Counter::default();
        registry.register(
            "cell_located",
            "Nodes of other cells found that way",
            cell_located.clone(),
        );
        let cell_unlocated = Counter::default();
        registry.register(
            "cell_messages_unlocated",
            "Messages dropped because no cell said where their node is within 3 s (it is dead, or its cell's gateways are unreachable)",
            cell_unlocated.clone(),
        );
        let journal_syncs = Counter::default();
        registry.register(
            "journal_syncs",
            "Syncs of the journal of the tasks homed here (DATA_DIR/journal): one per pass that answered a submit",
            journal_syncs.clone(),
        );
        let journal_errors = Counter::default();
        registry.register(
            "journal_write_errors",
            "Failed writes or syncs of the task journal: until it is rewritten, a crash of this agent forgets the tasks submitted since",
            journal_errors.clone(),
        );
        let m = Metrics {
            registry,
            nodes,
            resources_total,
            resources_free,
            tasks,
            bids_sent,
            bids_won,
            bids_rejected,
            auction_latency,
            gossip_in,
            gossip_out,
            rejected_datagrams,
            frameworks_connected,
            peer_messages,
            peers_other_version,
            edge,
            data_dir_unavailable,
            gossip_probes,
            gossip_join_pushes,
            gossip_local_health,
            cells_known,
            cells_imported,
            cell_gateway,
            cell_locates,
            cell_located,
            cell_unlocated,
            journal_syncs,
            journal_errors,
        };
        // Every labelled series exists from the start, at zero.
        m.set_nodes(0, 0);
        m.set_resources("cluster", &Resources::ZERO, &Resources::ZERO);
        m.set_resources("node", &Resources::ZERO, &Resources::ZERO);
        m.set_peer_totals(&PeerTotals::default());
        m.set_data_dir(None);
        for s in ALL_STATES {
            m.tasks
                .get_or_create(&StateLabel { state: s.name() })
                .set(0);
        }
        m
    }

    /// Sets the alive and dead node counts.
    pub fn set_nodes(&self, alive: u64, dead: u64) {
        self.nodes
            .get_or_create(&StateLabel { state: "alive" })
            .set(to_i64(alive));
        self.nodes
            .get_or_create(&StateLabel { state: "dead" })
            .set(to_i64(dead));
    }

    /// Sets total and free resources; `scope` is "cluster" (alive nodes
    /// summed) or "node" (this node).
    pub fn set_resources(&self, scope: &'static str, total: &Resources, free: &Resources) {
        for d in Dimension::ALL {
            let labels = ResourceLabels {
                scope,
                dimension: d.name(),
            };
            self.resources_total
                .get_or_create(&labels)
                .set(to_i64(total.get(d)));
            self.resources_free
                .get_or_create(&labels)
                .set(to_i64(free.get(d)));
        }
    }

    /// Sets the task counts, one per state (states not given are set to 0).
    pub fn set_tasks<'a>(&self, counts: impl IntoIterator<Item = (&'a str, u64)>) {
        let counts: std::collections::BTreeMap<&str, u64> = counts.into_iter().collect();
        for s in ALL_STATES {
            let n = counts.get(s.name()).copied().unwrap_or(0);
            self.tasks
                .get_or_create(&StateLabel { state: s.name() })
                .set(to_i64(n));
        }
    }

    /// Sets the data dir gauge: 1 for `reason` (a
    /// [`crate::executor::DataDirFault`] code), 0 for the others.
    pub fn set_data_dir(&self, reason: Option<&str>) {
        for f in crate::executor::DataDirFault::ALL {
            self.data_dir_unavailable
                .get_or_create(&ReasonLabel { reason: f.code() })
                .set(i64::from(reason == Some(f.code())));
        }
    }

    /// Sets the number of connected frameworks.
    pub fn set_frameworks_connected(&self, n: u64) {
        self.frameworks_connected.set(to_i64(n));
    }

    /// Records one auction: submit to award.
    pub fn observe_auction_latency(&self, d: Duration) {
        self.auction_latency.observe(d.as_secs_f64());
    }

    /// Raises the gossip counters to the gossip layer's running totals
    /// (they only grow: a smaller value, e.g. after a restart of the gossip
    /// layer, is ignored).
    pub fn set_gossip_totals(&self, bytes_in: u64, bytes_out: u64, rejected_datagrams: u64) {
        raise(&self.gossip_in, bytes_in);
        raise(&self.gossip_out, bytes_out);
        raise(&self.rejected_datagrams, rejected_datagrams);
    }

    /// Raises the membership and journal counters to their running totals
    /// (they only grow) and sets the local health gauge.
    pub fn set_node_totals(&self, t: &NodeTotals) {
        raise(&self.gossip_probes, t.gossip_probes);
        raise(&self.gossip_join_pushes, t.gossip_join_pushes);
        self.gossip_local_health.set(to_i64(t.gossip_local_health));
        raise(&self.journal_syncs, t.journal_syncs);
        raise(&self.journal_errors, t.journal_errors);
        raise(&self.cell_locates, t.cell_locates);
        raise(&self.cell_located, t.cell_located);
        raise(&self.cell_unlocated, t.cell_unlocated);
    }

    /// The cells gauges, from the node's cell list.
    pub fn set_cells(&self, list: &agora_protocol::wire::CellList) {
        self.cells_known.set(to_i64(list.cells.len() as u64));
        self.cells_imported.set(to_i64(
            list.cells.iter().filter(|c| c.imported).count() as u64
        ));
        self.cell_gateway.set(i64::from(list.gateway));
    }

    /// Raises the peer-message counters to the libp2p layer's running totals
    /// (they only grow) and sets the count of peers on another version.
    pub fn set_peer_totals(&self, t: &PeerTotals) {
        for (outcome, v) in [
            ("sent", t.sent),
            ("received", t.received),
            ("unroutable", t.unroutable),
            ("failed", t.failed),
        ] {
            raise(
                &self.peer_messages.get_or_create(&OutcomeLabel { outcome }),
                v,
            );
        }
        self.peers_other_version
            .set(i64::try_from(t.other_version).unwrap_or(i64::MAX));
    }

    /// Adds to the gossip counters (for a gossip layer that reports deltas).
    pub fn add_gossip(&self, bytes_in: u64, bytes_out: u64, rejected_datagrams: u64) {
        self.gossip_in.inc_by(bytes_in);
        self.gossip_out.inc_by(bytes_out);
        self.rejected_datagrams.inc_by(rejected_datagrams);
    }

    /// Sets every state gauge from a snapshot: nodes, resources (cluster and
    /// node), tasks this node knows, connected frameworks.
    pub fn update_from_snapshot(&self, snap: &ApiSnapshot) {
        let alive = snap.nodes.iter().filter(|n| n.alive).count() as u64;
        self.set_nodes(alive, snap.nodes.len() as u64 - alive);
        let cap = super::views::Capacity::of(snap);
        self.set_resources("cluster", &cap.total, &cap.free);
        match snap.own_node() {
            Some(own) => self.set_resources("node", &own.total, &own.free),
            None => self.set_resources("node", &Resources::ZERO, &Resources::ZERO),
        }
        self.set_tasks(super::views::count_states(&snap.tasks));
        self.set_frameworks_connected(
            snap.frameworks
                .iter()
                .filter(|f| f.connected == Some(true))
                .count() as u64,
        );
    }

    /// The metrics in the OpenMetrics text format (which Prometheus reads;
    /// serve it with [`crate::http::METRICS_CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        self.edge.update(&EDGE);
        let mut out = String::new();
        // Writing to a String cannot fail.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn raise(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

// ---------------------------------------------------------------------------
// Limits at the node's edges (issue 12). One process runs one agent, so the
// places that refuse input (the socket's accept loop, the peer codec, the
// HTTP server, the gossip relay) count into one process-wide set of atomics
// that need no wiring through the agent; `encode` copies them in.
// ---------------------------------------------------------------------------

/// Refusals and limits at the node's edges, counted where they happen.
#[derive(Debug)]
pub struct EdgeCounters {
    /// Framework-socket connections open now.
    pub socket_open: AtomicU64,
    /// Socket connections refused because `socket::MAX_CONNECTIONS` were open.
    pub socket_refused: AtomicU64,
    /// Frames over the maximum on the framework socket.
    pub socket_frames_too_large: AtomicU64,
    /// Peer-protocol frames over `p2p::MAX_PEER_FRAME`.
    pub peer_frames_too_large: AtomicU64,
    /// Incoming peer connections that failed before carrying a message
    /// (another cluster key, or not an agora node).
    pub peer_handshake_failures: AtomicU64,
    /// HTTP connections open now.
    pub http_open: AtomicU64,
    /// HTTP connections answered 503 because every slot was taken by
    /// clients that had sent a request.
    pub http_refused: AtomicU64,
    /// HTTP connections closed to make room for a new one because they had
    /// not sent a whole request yet.
    pub http_evicted: AtomicU64,
    /// HTTP connections closed because a request head did not arrive in time.
    pub http_header_timeouts: AtomicU64,
    /// HTTP request heads over hyper's limit (answered 431).
    pub http_heads_too_large: AtomicU64,
    /// HTTP requests whose body did not arrive in time (answered 408).
    pub http_body_timeouts: AtomicU64,
    /// 1 while gossip is isolated: the node expects peers (it has seeds or
    /// receives gossip it cannot open) but sees no other live node.
    pub gossip_isolated: AtomicU64,
    /// Peer (libp2p) connections open now (`p2p::pool`).
    pub peer_connections_open: AtomicU64,
    /// Peer connections closed after the idle timeout.
    pub peer_connections_closed_idle: AtomicU64,
    /// Peer connections closed to stay within `--peer-connections`.
    pub peer_connections_closed_lru: AtomicU64,
    /// Peer messages sent again after their stream failed.
    pub peer_message_retries: AtomicU64,
    /// Peer messages given up on (retries exhausted, not retryable, or the
    /// queues full).
    pub peer_messages_dropped: AtomicU64,
}

impl EdgeCounters {
    const fn new() -> Self {
        EdgeCounters {
            socket_open: AtomicU64::new(0),
            socket_refused: AtomicU64::new(0),
            socket_frames_too_large: AtomicU64::new(0),
            peer_frames_too_large: AtomicU64::new(0),
            peer_handshake_failures: AtomicU64::new(0),
            http_open: AtomicU64::new(0),
            http_refused: AtomicU64::new(0),
            http_evicted: AtomicU64::new(0),
            http_header_timeouts: AtomicU64::new(0),
            http_heads_too_large: AtomicU64::new(0),
            http_body_timeouts: AtomicU64::new(0),
            gossip_isolated: AtomicU64::new(0),
            peer_connections_open: AtomicU64::new(0),
            peer_connections_closed_idle: AtomicU64::new(0),
            peer_connections_closed_lru: AtomicU64::new(0),
            peer_message_retries: AtomicU64::new(0),
            peer_messages_dropped: AtomicU64::new(0),
        }
    }

    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one from a gauge (never below zero).
    pub fn drop_one(gauge: &AtomicU64) {
        let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }
}

/// The node's edge counters (see [`EdgeCounters`]).
pub static EDGE: EdgeCounters = EdgeCounters::new();

/// A warning logged at most once a minute, with how many times it
/// happened since it was last logged (the first one is logged at once).
pub struct WarnEvery {
    last: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl WarnEvery {
    /// Minimum time between two warnings.
    pub const PERIOD: Duration = Duration::from_secs(60);

    /// A limiter that has warned of nothing yet.
    pub const fn new() -> Self {
        WarnEvery {
            last: std::sync::Mutex::new((None, 0)),
        }
    }

    /// Counts one occurrence; returns how many to report when a warning
    /// is due.
    pub fn note(&self) -> Option<u64> {
        let mut last = self.last.lock().ok()?;
        last.1 += 1;
        if last.0.is_some_and(|t| t.elapsed() < Self::PERIOD) {
            return None;
        }
        let n = last.1;
        *last = (Some(std::time::Instant::now()), 0);
        Some(n)
    }
}

impl Default for WarnEvery {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabel {
    port: &'static str,
}

/// The registered side of [`EdgeCounters`].
struct EdgeMetrics {
    socket_open: Gauge,
    socket_refused: Counter,
    frames_too_large: Family<PortLabel, Counter>,
    peer_handshake_failures: Counter,
    http_open: Gauge,
    http_refused: Counter,
    http_evicted: Counter,
    http_header_timeouts: Counter,
    http_body_timeouts: Counter,
    gossip_isolated: Gauge,
    peer_connections_open: Gauge,
    peer_connections_closed: Family<ReasonLabel, Counter>,
    peer_message_retries: Counter,
    peer_messages_dropped: Counter,
}

impl EdgeMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = EdgeMetrics {
            socket_open: Gauge::default(),
            socket_refused: Counter::default(),
            frames_too_large: Family::default(),
            peer_handshake_failures: Counter::default(),
            http_open: Gauge::default(),
            http_refused: Counter::default(),
            http_evicted: Counter::default(),
            http_header_timeouts: Counter::default(),
            http_body_timeouts: Counter::default(),
            gossip_isolated: Gauge::default(),
            peer_connections_open: Gauge::default(),
            peer_connections_closed: Family::default(),
            peer_message_retries: Counter::default(),
            peer_messages_dropped: Counter::default(),
        };
        registry.register(
            "socket_connections",
            "Framework-socket connections open now (at most 1024)",
            m.socket_open.clone(),
        );
        registry.register(
            "socket_connections_refused",
            "Framework-socket connections refused with a busy error because 1024 were open",
            m.socket_refused.clone(),
        );
        registry.register(
            "frames_too_large",
            "Input refused for its size: frames over the maximum on the socket (1 MiB) and the peer protocol (4 MiB), HTTP request heads over the limit (431)",
            m.frames_too_large.clone(),
        );
        registry.register(
            "peer_handshake_failures",
            "Incoming node-to-node connections that failed their handshake (another cluster key, or not an agora node)",
            m.peer_handshake_failures.clone(),
        );
        registry.register(
            "http_connections",
            "HTTP connections open now",
            m.http_open.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections answered 503 because every connection slot held a client that had sent a request",
            m.http_refused.clone(),
        );
        registry.register(
            "http_connections_evicted",
            "HTTP connections closed to make room for a new one because they had not sent a whole request yet",
            m.http_evicted.clone(),
        );
        registry.register(
            "http_header_timeouts",
            "HTTP connections closed because a request head did not arrive within the header timeout",
            m.http_header_timeouts.clone(),
        );
        registry.register(
            "http_body_timeouts",
            "HTTP requests answered 408 and closed because their body did not arrive within the body timeout",
            m.http_body_timeouts.clone(),
        );
        registry.register(
            "gossip_isolated",
            "1 while this node expects peers (it has seeds, or receives gossip it cannot open) but sees no other live node",
            m.gossip_isolated.clone(),
        );
        registry.register(
            "peer_connections",
            "Node-to-node (libp2p) connections open now, at most --peer-connections (those being closed for the cap not counted)",
            m.peer_connections_open.clone(),
        );
        registry.register(
            "peer_connections_closed",
            "Node-to-node connections closed by the pool: reason = idle (no stream for --peer-idle-timeout), lru (the least recently used, to stay within --peer-connections)",
            m.peer_connections_closed.clone(),
        );
        registry.register(
            "peer_message_retries",
            "Node-to-node messages sent again after their stream failed (refused, closed connection, failed dial)",
            m.peer_message_retries.clone(),
        );
        registry.register(
            "peer_messages_dropped",
            "Node-to-node messages given up on: retries exhausted, a failure not worth retrying (timeout, another version), or the send queues full",
            m.peer_messages_dropped.clone(),
        );
        for reason in ["idle", "lru"] {
            let _ = m
                .peer_connections_closed
                .get_or_create(&ReasonLabel { reason });
        }
        for port in ["socket", "peer", "http"] {
            let _ = m.frames_too_large.get_or_create(&PortLabel { port });
        }
        m
    }

    fn update(&self, c: &EdgeCounters) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.socket_open.set(to_i64(load(&c.socket_open)));
        raise(&self.socket_refused, load(&c.socket_refused));
        for (port, v) in [
            ("socket", load(&c.socket_frames_too_large)),
            ("peer", load(&c.peer_frames_too_large)),
            ("http", load(&c.http_heads_too_large)),
        ] {
            raise(&self.frames_too_large.get_or_create(&PortLabel { port }), v);
        }
        raise(
            &self.peer_handshake_failures,
            load(&c.peer_handshake_failures),
        );
        self.http_open.set(to_i64(load(&c.http_open)));
        raise(&self.http_refused, load(&c.http_refused));
        raise(&self.http_evicted, load(&c.http_evicted));
        raise(&self.http_header_timeouts, load(&c.http_header_timeouts));
        raise(&self.http_body_timeouts, load(&c.http_body_timeouts));
        self.gossip_isolated.set(to_i64(load(&c.gossip_isolated)));
        self.peer_connections_open
            .set(to_i64(load(&c.peer_connections_open)));
        for (reason, v) in [
            ("idle", load(&c.peer_connections_closed_idle)),
            ("lru", load(&c.peer_connections_closed_lru)),
        ] {
            raise(
                &self
                    .peer_connections_closed
                    .get_or_create(&ReasonLabel { reason }),
                v,
            );
        }
        raise(&self.peer_message_retries, load(&c.peer_message_retries));
        raise(&self.peer_messages_dropped, load(&c.peer_messages_dropped));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_follow_running_totals() {
        let m = Metrics::new();
        m.set_gossip_totals(100, 50, 1);
        m.set_gossip_totals(150, 40, 3);
        assert_eq!(m.gossip_in.get(), 150);
        assert_eq!(m.gossip_out.get(), 50);
        assert_eq!(m.rejected_datagrams.get(), 3);
        m.bids_sent.inc();
        let text = m.encode();
        assert!(text.contains("agora_bids_sent_total 1"), "{text}");
        assert!(
            text.contains("agora_gossip_received_bytes_total 150"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn membership_and_journal_totals_are_exported() {
        let m = Metrics::new();
        let mut t = NodeTotals {
            gossip_probes: 4,
            gossip_join_pushes: 9,
            gossip_local_health: 3,
            journal_syncs: 12,
            journal_errors: 1,
            cell_locates: 3,
            cell_located: 2,
            cell_unlocated: 5,
        };
        m.set_node_totals(&t);
        t.gossip_local_health = 0;
        t.journal_syncs = 10; // a smaller total is ignored
        m.set_node_totals(&t);
        let text = m.encode();
        for line in [
            "agora_gossip_probes_total 4",
            "agora_gossip_join_pushes_total 9",
            "agora_gossip_local_health 0",
            "agora_journal_syncs_total 12",
            "agora_journal_write_errors_total 1",
            "agora_cell_locates_total 3",
            "agora_cell_located_total 2",
            "agora_cell_messages_unlocated_total 5",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
