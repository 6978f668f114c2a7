//! Node-to-node messages over libp2p: TCP, then a private network keyed by
//! the cluster key (pnet), then noise (each node's ed25519 identity) and
//! yamux, carrying request-response streams of protocol `/agora/peer/3`
//! (`agora_protocol::wire::PEER_PROTOCOL_NAME`).
//!
//! Every protocol message is one-way, so each is sent as a request whose
//! response is an empty acknowledgement. A request is one frame (the
//! framing of [`agora_protocol::codec`], read and written by
//! [`crate::framing`]): a big-endian `u32` length, then a postcard-encoded
//! [`PeerEnvelope`] (the sender's node id and the [`PeerMessage`]), at most
//! [`MAX_PEER_FRAME`] bytes. A response is the 4-byte frame of length zero.
//! The writer closes its side after the frame, and the reader reads nothing
//! past it. A frame that is oversized (refused on its prefix, before the
//! payload is read), cut short or does not decode fails that stream with an
//! io error; the codec counts it (libp2p reports no event for a request
//! that fails to read) in [`P2p::refused_requests`] and, when oversized, in
//! `agora_frames_too_large_total{port="peer"}`, and warns at most once a
//! minute; the connection's other streams and the node carry on. Incoming
//! connections that fail their handshake (another cluster key, or not an
//! agora node) are counted (`agora_peer_handshake_failures_total`) and
//! warned about the same way.
//!
//! The pnet key is SHA-256("agora pnet v1" ‖ cluster key), so it differs
//! from the key that seals gossip; a node without the cluster key cannot
//! complete a connection.
//!
//! Peers are found through gossip: each node publishes its p2p multiaddr and
//! peer id, which [`P2p::set_peer`] records (and does not dial). Sending
//! dials that address when no connection is open: a node holds connections
//! to the nodes it talks to (those it bids on, those that bid on it), not
//! to every member, in the bounded pool of [`pool`] (a cap with the least
//! recently used closed first, an idle timeout, a window of streams per
//! peer below yamux's limit, and bounded retries of failed streams). An
//! inbound envelope whose node id is known under a different peer id is
//! dropped.

mod alarm;
pub mod pool;

pub use pool::PoolConfig;

use crate::framing::{read_frame, write_frame};
use crate::http::{EDGE, EdgeCounters, WarnEvery};
use agora_protocol::NodeId;
use agora_protocol::codec::{Codec, FrameReader};
use agora_protocol::wire::{PEER_PROTOCOL_NAME, PeerMessage};
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::core::upgrade;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, Transport, noise, tcp, yamux};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Every peer connection: TCP, the cluster's private network (pnet), noise
/// with the node's identity, then yamux.
fn transport(
    key: &Keypair,
    psk: PreSharedKey,
    mux: yamux::Config,
) -> Result<
    libp2p::core::transport::Boxed<(PeerId, libp2p::core::muxing::StreamMuxerBox)>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    let noise = noise::Config::new(key)?;
    Ok(
        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
            .upgrade(upgrade::Version::V1Lazy)
            .authenticate(noise)
            .multiplex(mux)
            .timeout(Duration::from_secs(10))
            .boxed(),
    )
}

/// Largest peer frame payload (task lists and log chunks are the big ones).
pub const MAX_PEER_FRAME: usize = 4 << 20;

/// What travels in one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEnvelope {
    /// The sending node.
    pub from: NodeId,
    /// The message.
    pub msg: PeerMessage,
    /// The sender's libp2p address, so that a node that has no gossip
    /// about it (one of another cell, that it runs a task for) can answer.
    pub reply_to: Option<String>,
}

/// The request-response codec: length-prefixed postcard, bounded.
///
/// libp2p reports nothing when reading a request fails (its own debug log
/// aside), so the codec counts and warns about what it refuses itself.
#[derive(Clone, Debug, Default)]
pub struct PeerCodec {
    refused: std::sync::Arc<Refused>,
}

/// Inbound requests the codec refused.
#[derive(Debug, Default)]
struct Refused {
    too_large: std::sync::atomic::AtomicU64,
    undecodable: std::sync::atomic::AtomicU64,
}

static REFUSED_WARN: WarnEvery = WarnEvery::new();

impl PeerCodec {
    /// Counts a refused inbound request and warns (at most once a minute).
    fn refuse(&self, e: &io::Error, too_large: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if too_large {
            self.refused.too_large.fetch_add(1, Relaxed);
            EdgeCounters::bump(&EDGE.peer_frames_too_large);
        } else {
            self.refused.undecodable.fetch_add(1, Relaxed);
        }
        if let Some(n) = REFUSED_WARN.note() {
            tracing::warn!(
                error = %e,
                refused = n,
                "refused {n} peer requests that were too large or did not decode (the last: {e}); \
                 that stream was closed, the connection and the node carry on"
            );
        }
    }
}

/// Reads the stream's one frame and hands its payload to `decode`
/// straight from the reader's buffer.
async fn read_peer_frame<T, R>(
    io: &mut T,
    decode: impl FnOnce(&[u8]) -> io::Result<R>,
) -> io::Result<R>
where
    T: AsyncRead + Unpin + Send,
{
    let mut frames = FrameReader::new(MAX_PEER_FRAME);
    match read_frame(io, &mut frames).await? {
        Some(payload) => decode(payload),
        None => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the stream before sending a frame",
        )),
    }
}

/// Writes the stream's one frame and closes the writing side.
async fn write_peer_frame<T>(io: &mut T, payload: &[u8]) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    write_frame(io, payload, MAX_PEER_FRAME).await?;
    io.close().await
}

impl request_response::Codec for PeerCodec {
    type Protocol = StreamProtocol;
    type Request = PeerEnvelope;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<PeerEnvelope>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut frames = FrameReader::new(MAX_PEER_FRAME);
        let read = match read_frame(io, &mut frames).await {
            Ok(Some(payload)) => Codec::Postcard
                .decode(payload)
                .map_err(|e| (io::Error::new(io::ErrorKind::InvalidData, e), false)),
            Ok(None) => Err((
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the stream before sending a frame",
                ),
                false,
            )),
            Err(e @ crate::framing::ReadError::Frame(_)) => Err((e.into(), true)),
            Err(e) => Err((e.into(), false)),
        };
        read.map_err(|(e, too_large)| {
            self.refuse(&e, too_large);
            e
        })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_peer_frame(io, |payload| {
            if payload.is_empty() {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a peer acknowledgement must be empty",
                ))
            }
        })
        .await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: PeerEnvelope,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let payload = Codec::Postcard
            .encode(&req)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        write_peer_frame(io, &payload).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_peer_frame(io, &[]).await
    }
}

/// The pnet key derived from the cluster key.
pub fn pnet_key(cluster_key: &[u8; 32]) -> PreSharedKey {
    let mut h = Sha256::new();
    h.update(b"agora pnet v1");
    h.update(cluster_key);
    PreSharedKey::new(h.finalize().into())
}

/// A multiaddr for a TCP socket address.
pub fn tcp_multiaddr(addr: SocketAddr) -> Multiaddr {
    let mut m = Multiaddr::empty();
    match addr.ip() {
        std::net::IpAddr::V4(ip) => m.push(libp2p::multiaddr::Protocol::Ip4(ip)),
        std::net::IpAddr::V6(ip) => m.push(libp2p::multiaddr::Protocol::Ip6(ip)),
    }
    m.push(libp2p::multiaddr::Protocol::Tcp(addr.port()));
    m
}

/// Where and how the peer layer runs: its listen address and its pool's
/// limits (`--p2p-listen`, `--peer-connections`, `--peer-idle-timeout`).
/// Displays as the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenConfig {
    /// The TCP address to listen on.
    pub addr: SocketAddr,
    /// The connection pool's limits.
    pub pool: PoolConfig,
}

impl std::fmt::Display for ListenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// The swarm's behaviour: the request-response protocol, and the alarm
/// that runs the pool's retries.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
pub struct Behaviour {
    rr: request_response::Behaviour<PeerCodec>,
    alarm: alarm::Alarm,
}

/// What the swarm reports to [`P2p::on_event`].
pub type Event = SwarmEvent<BehaviourEvent>;

/// Counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct P2pStats {
    /// Messages sent to other nodes.
    pub sent: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// Messages dropped: no address known for the destination.
    pub unroutable: u64,
    /// Streams that failed (dial errors, timeouts, bad frames); a message
    /// retried after a failure counts once per failed stream.
    pub failures: u64,
    /// Peers seen speaking another peer-protocol version (each warned of once).
    pub other_version: u64,
}

/// The libp2p side of a node.
pub struct P2p {
    me: NodeId,
    /// The swarm; poll it with `select_next_some` and pass events to
    /// [`P2p::on_event`].
    pub swarm: Swarm<Behaviour>,
    peers: BTreeMap<NodeId, (PeerId, Multiaddr)>,
    nodes: BTreeMap<PeerId, NodeId>,
    /// Peers already reported as speaking another protocol version.
    mismatched: std::collections::BTreeSet<PeerId>,
    /// Counters.
    pub stats: P2pStats,
    /// When incoming handshake failures were last warned about, and how
    /// many failed since.
    handshake_warned: Option<std::time::Instant>,
    handshake_failures_since_warn: u64,
    /// A clone of the behaviour's codec, for its counts.
    codec: PeerCodec,
    /// Connections, queues and retries.
    pool: pool::Pool,
    /// This node's libp2p address, sent in every envelope.
    reply_to: Option<String>,
    /// Messages for nodes known only by address (a seed of another cell
    /// asked for the directory), sent once their connection is up.
    bootstraps: Vec<(Multiaddr, PeerMessage)>,
}

/// Most messages waiting for a connection to an address (bootstraps).
const MAX_BOOTSTRAPS: usize = 16;

/// The most nodes learned from envelopes (`reply_to`) rather than gossip.
pub const MAX_LEARNED_PEERS: usize = 16_384;

/// Minimum time between two warnings about failed incoming handshakes.
const HANDSHAKE_WARN_EVERY: Duration = Duration::from_secs(60);

impl P2p {
    /// Builds the swarm and starts listening on `listen`.
    ///
    /// # Errors
    /// Transport setup or a listen address that cannot be bound.
    pub fn start(
        me: NodeId,
        keypair: Keypair,
        cluster_key: &[u8; 32],
        listen: ListenConfig,
    ) -> anyhow::Result<Self> {
        Self::start_speaking(me, keypair, cluster_key, listen, PEER_PROTOCOL_NAME)
    }

    /// [`P2p::start`] with another peer-protocol name: tests use it to play
    /// a node of another release.
    fn start_speaking(
        me: NodeId,
        keypair: Keypair,
        cluster_key: &[u8; 32],
        listen: ListenConfig,
        protocol_name: &'static str,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let ListenConfig { addr: listen, pool } = listen;
        let mut yamux_config = yamux::Config::default();
        yamux_config.set_max_num_streams(pool::MAX_STREAMS);
        let psk = pnet_key(cluster_key);
        let protocol = StreamProtocol::new(protocol_name);
        let codec = PeerCodec::default();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|key| transport(key, psk, yamux_config))
            .context("cannot set up the libp2p transport")?
            .with_behaviour(|_| Behaviour {
                rr: request_response::Behaviour::with_codec(
                    codec.clone(),
                    [(protocol, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(10))
                        .with_max_concurrent_streams(pool::MAX_STREAMS),
                ),
                alarm: alarm::Alarm::default(),
            })
            .context("cannot set up the libp2p behaviour")?
            .with_swarm_config(|c| c.with_idle_connection_timeout(pool.idle_timeout))
            .build();
        swarm
            .listen_on(tcp_multiaddr(listen))
            .with_context(|| format!("cannot listen for peers on {listen} (TCP)"))?;
        Ok(P2p {
            me,
            swarm,
            peers: BTreeMap::new(),
            nodes: BTreeMap::new(),
            mismatched: std::collections::BTreeSet::new(),
            stats: P2pStats::default(),
            handshake_warned: None,
            handshake_failures_since_warn: 0,
            codec,
            pool: pool::Pool::new(pool),
            reply_to: None,
            bootstraps: Vec::new(),
        })
    }

    /// The pool's counters.
    pub fn pool_counts(&self) -> pool::PoolCounts {
        self.pool.counts
    }

    /// Connections open now (not counting those being closed for the cap).
    pub fn open_connections(&self) -> usize {
        self.pool.open()
    }

    /// Copies the pool's figures into the process's edge counters, which
    /// `/metrics` shows.
    fn publish_pool(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = self.pool.counts;
        EDGE.peer_connections_open
            .store(self.pool.open() as u64, Relaxed);
        EDGE.peer_connections_closed_idle
            .store(c.closed_idle, Relaxed);
        EDGE.peer_connections_closed_lru
            .store(c.closed_lru, Relaxed);
        EDGE.peer_message_retries.store(c.retries, Relaxed);
        EDGE.peer_messages_dropped.store(c.dropped, Relaxed);
    }

    /// Inbound requests refused as oversized, and as cut short or
    /// undecodable (libp2p reports neither as an event).
    pub fn refused_requests(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.codec.refused.too_large.load(Relaxed),
            self.codec.refused.undecodable.load(Relaxed),
        )
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// The address this node tells in every envelope (its advertised
    /// libp2p address).
    pub fn set_reply_to(&mut self, addr: &str) {
        self.reply_to = Some(addr.to_string());
    }

    /// Sends `msg` to whoever listens at `addr`, a node known only by its
    /// address (its peer id and node id are learned when the connection is
    /// up; its answer comes back through this node's `reply_to`). Best
    /// effort: at most [`MAX_BOOTSTRAPS`] wait, the oldest make room.
    pub fn bootstrap(&mut self, addr: Multiaddr, msg: PeerMessage) {
        use libp2p::swarm::dial_opts::DialOpts;
        if self.bootstraps.len() >= MAX_BOOTSTRAPS {
            self.bootstraps.remove(0);
        }
        let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
        match self.swarm.dial(opts) {
            Ok(()) => self.bootstraps.push((addr, msg)),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "cannot dial an address to ask for the directory")
            }
        }
    }

    /// Whether this node knows where `node` is reached.
    pub fn knows(&self, node: &NodeId) -> bool {
        self.peers.contains_key(node)
    }

    /// Records where a node is reachable (from its gossiped state).
    pub fn set_peer(&mut self, node: &NodeId, peer_id: &str, addr: &str) {
        let (Ok(peer), Ok(addr)) = (peer_id.parse::<PeerId>(), addr.parse::<Multiaddr>()) else {
            tracing::debug!(%node, peer_id, addr, "ignoring unparsable p2p address in gossip");
            return;
        };
        if self
            .peers
            .get(node)
            .is_some_and(|(p, a)| *p == peer && *a == addr)
        {
            return;
        }
        if let Some((old, _)) = self.peers.insert(node.clone(), (peer, addr.clone())) {
            self.nodes.remove(&old);
        }
        self.nodes.insert(peer, node.clone());
        // No dial: the first message to the node opens a connection.
    }

    /// Sends a message to another node (best effort; the protocol retries):
    /// queued behind that peer's window of streams, sent over the pool's
    /// connection to it (dialled when there is none), and retried a few
    /// times if its stream fails.
    pub fn send(&mut self, to: &NodeId, msg: PeerMessage) {
        let Some((peer, _)) = self.peers.get(to) else {
            self.stats.unroutable += 1;
            tracing::debug!(%to, kind = msg.kind(), "no p2p address known yet; message dropped");
            return;
        };
        self.stats.sent += 1;
        let q = pool::Queued {
            to: to.clone(),
            peer: *peer,
            envelope: PeerEnvelope {
                from: self.me.clone(),
                msg,
                reply_to: self.reply_to.clone(),
            },
            failures: 0,
        };
        let peer = q.peer;
        if !self.pool.enqueue(q) {
            Self::warn_dropped(to, "the peer queues are full");
        }
        self.pump(peer);
        self.publish_pool();
    }

    fn warn_dropped(to: &NodeId, why: &str) {
        static DROPPED_WARN: WarnEvery = WarnEvery::new();
        if let Some(n) = DROPPED_WARN.note() {
            tracing::warn!(
                %to,
                dropped = n,
                "dropped {n} peer messages (the last to {to}: {why}); the protocol's own \
                 retries take over"
            );
        }
    }

    /// Sends what `peer`'s window has room for.
    fn pump(&mut self, peer: PeerId) {
        while let Some(q) = self.pool.next_ready(&peer) {
            let addr = match self.peers.get(&q.to) {
                Some((p, addr)) if *p == q.peer => addr.clone(),
                _ => {
                    // The node left, or came back under another identity.
                    self.pool.counts.dropped += 1;
                    continue;
                }
            };
            let id = self.swarm.behaviour_mut().rr.send_request_with_addresses(
                &peer,
                q.envelope.clone(),
                vec![addr],
            );
            self.pool.sent(id, q);
        }
    }

    /// Moves due retries back into their queues and sends them; sets the
    /// alarm for the next.
    fn run_retries(&mut self) {
        for peer in self.pool.due(std::time::Instant::now()) {
            self.pump(peer);
        }
        let next = self.pool.next_deadline();
        self.swarm.behaviour_mut().alarm.set(next);
    }

    /// Handles one swarm event; returns an inbound message to dispatch.
    pub fn on_event(&mut self, event: Event) -> Option<(NodeId, PeerMessage)> {
        let got = self.handle_event(event);
        self.publish_pool();
        got
    }

    fn handle_event(&mut self, event: Event) -> Option<(NodeId, PeerMessage)> {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Alarm(())) => {
                self.run_retries();
                None
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                for victim in self.pool.established(connection_id, peer_id) {
                    self.swarm.close_connection(victim);
                }
                if endpoint.is_dialer() {
                    let addr = endpoint.get_remote_address().clone();
                    if let Some(i) = self.bootstraps.iter().position(|(a, _)| *a == addr) {
                        let (_, msg) = self.bootstraps.remove(i);
                        self.stats.sent += 1;
                        let envelope = PeerEnvelope {
                            from: self.me.clone(),
                            msg,
                            reply_to: self.reply_to.clone(),
                        };
                        let _ = self.swarm.behaviour_mut().rr.send_request_with_addresses(
                            &peer_id,
                            envelope,
                            vec![addr],
                        );
                    }
                }
                None
            }
            SwarmEvent::ConnectionClosed {
                connection_id,
                num_established,
                cause,
                ..
            } => {
                let idle = matches!(
                    cause,
                    Some(libp2p::swarm::ConnectionError::KeepAliveTimeout)
                );
                self.pool.closed(connection_id, idle, num_established);
                None
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(request_response::Event::Message {
                message: request_response::Message::Response { request_id, .. },
                ..
            })) => {
                if let Some(peer) = self.pool.answered(request_id) {
                    self.pump(peer);
                }
                None
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            })) => {
                self.pool.touch(peer);
                let _ = self.swarm.behaviour_mut().rr.send_response(channel, ());
                if let Some(known) = self.peers.get(&request.from)
                    && known.0 != peer
                {
                    tracing::warn!(claimed = %request.from, %peer, "peer claims a node id gossiped under another peer id; message dropped");
                    return None;
                }
                if !self.peers.contains_key(&request.from)
                    && self.peers.len() < MAX_LEARNED_PEERS
                    && let Some(addr) = request
                        .reply_to
                        .as_deref()
                        .and_then(|a| a.parse::<Multiaddr>().ok())
                {
                    // A node outside this node's gossip (another cell): its
                    // answers go back to where it says it listens.
                    self.peers.insert(request.from.clone(), (peer, addr));
                }
                self.nodes
                    .entry(peer)
                    .or_insert_with(|| request.from.clone());
                self.stats.received += 1;
                Some((request.from, request.msg))
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(
                request_response::Event::InboundFailure { peer, error, .. },
            )) => {
                self.stats.failures += 1;
                tracing::warn!(%peer, %error, "inbound peer stream failed and was closed");
                None
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(
                request_response::Event::OutboundFailure {
                    peer,
                    error,
                    request_id,
                    ..
                },
            )) => {
                self.stats.failures += 1;
                let node = self.nodes.get(&peer).map(|n| n.to_string());
                // What can pass is retried: a refused or broken stream, a
                // connection closed under it (for the cap, or by the peer),
                // a failed dial. A timeout has waited long enough already,
                // and another version will not change.
                let retryable = matches!(
                    error,
                    request_response::OutboundFailure::Io(_)
                        | request_response::OutboundFailure::ConnectionClosed
                        | request_response::OutboundFailure::DialFailure
                );
                let now = std::time::Instant::now();
                if let Some((_, retried)) = self.pool.failed(request_id, retryable, now) {
                    if retried {
                        let next = self.pool.next_deadline();
                        self.swarm.behaviour_mut().alarm.set(next);
                    } else if let Some(n) = self.nodes.get(&peer).cloned() {
                        Self::warn_dropped(&n, &error.to_string());
                    }
                    self.pump(peer);
                }
                if matches!(
                    error,
                    request_response::OutboundFailure::UnsupportedProtocols
                ) && self.mismatched.len() < 10_000
                    && self.mismatched.insert(peer)
                {
                    self.stats.other_version = self.mismatched.len() as u64;
                    tracing::warn!(
                        %peer, ?node,
                        "peer does not speak {PEER_PROTOCOL_NAME}: it runs another agora version; \
                         messages to it are dropped until every node runs the same version"
                    );
                } else {
                    tracing::debug!(%peer, ?node, %error, "outbound peer message failed");
                }
                None
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening for peers");
                None
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                EdgeCounters::bump(&EDGE.peer_handshake_failures);
                self.handshake_failures_since_warn += 1;
                let now = std::time::Instant::now();
                if self
                    .handshake_warned
                    .is_none_or(|t| now.duration_since(t) >= HANDSHAKE_WARN_EVERY)
                {
                    tracing::warn!(
                        from = %send_back_addr,
                        %error,
                        failed = self.handshake_failures_since_warn,
                        "{} incoming node-to-node connections failed their handshake (the last \
                         from {send_back_addr}): a node with another cluster key, or a program \
                         that is not agora, is connecting; check that every node has the same \
                         --cluster-key-file contents",
                        self.handshake_failures_since_warn
                    );
                    self.handshake_warned = Some(now);
                    self.handshake_failures_since_warn = 0;
                }
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::TaskId;
    use agora_protocol::wire::StatusAck;
    use futures::StreamExt;

    fn node(name: &str, protocol: &'static str) -> P2p {
        P2p::start_speaking(
            NodeId::new(name).expect("valid id"),
            Keypair::generate_ed25519(),
            &[7; 32],
            ListenConfig {
                addr: "127.0.0.1:0".parse().expect("loopback"),
                pool: PoolConfig::default(),
            },
            protocol,
        )
        .expect("p2p starts on loopback")
    }

    async fn listen_addr(p: &mut P2p) -> Multiaddr {
        let wait = async {
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = p.swarm.select_next_some().await
                {
                    return address;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("a listen address within 10 s")
    }

    fn ack(seq: u64) -> PeerMessage {
        PeerMessage::StatusAck(StatusAck {
            task_id: TaskId::new("fw.1").expect("valid id"),
            seq,
        })
    }

    /// An in-memory stream that hands out at most one byte per read and
    /// is not ready every other poll, like a slow peer.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        ready: bool,
    }

    impl Trickle {
        fn new(bytes: Vec<u8>) -> Trickle {
            Trickle {
                bytes,
                at: 0,
                ready: false,
            }
        }
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.ready = !self.ready;
            if !self.ready {
                cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            let n = buf.len().min(1).min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    fn protocol() -> StreamProtocol {
        StreamProtocol::new(PEER_PROTOCOL_NAME)
    }

    /// An envelope whose postcard encoding is exactly `len` bytes.
    fn envelope_of(len: usize) -> PeerEnvelope {
        let chunk = |n: usize| PeerEnvelope {
            from: NodeId::new("a").unwrap(),
            msg: PeerMessage::LogChunk(agora_protocol::wire::LogChunk {
                request_id: 1,
                task_id: TaskId::new("fw.1").unwrap(),
                data: vec![b'x'; n],
                next_offset: 0,
                eof: true,
                error: None,
            }),
            reply_to: None,
        };
        let mut n = len;
        loop {
            let size = Codec::Postcard.encode(&chunk(n)).unwrap().len();
            if size == len {
                return chunk(n);
            }
            n = n + len - size;
        }
    }

    async fn written(env: PeerEnvelope) -> io::Result<Vec<u8>> {
        let mut io = futures::io::Cursor::new(Vec::new());
        request_response::Codec::write_request(
            &mut PeerCodec::default(),
            &protocol(),
            &mut io,
            env,
        )
        .await?;
        Ok(io.into_inner())
    }

    #[tokio::test]
    async fn peer_frames_are_a_length_and_postcard_and_read_back_a_byte_at_a_time() {
        let env = PeerEnvelope {
            from: NodeId::new("a").unwrap(),
            msg: ack(3),
            reply_to: None,
        };
        let bytes = written(env.clone()).await.unwrap();
        let payload = Codec::Postcard.encode(&env).unwrap();
        assert_eq!(bytes[..4], (payload.len() as u32).to_be_bytes());
        assert_eq!(bytes[4..], payload[..]);
        let mut io = Trickle::new([bytes.clone(), b"after".to_vec()].concat());
        let got =
            request_response::Codec::read_request(&mut PeerCodec::default(), &protocol(), &mut io)
                .await
                .unwrap();
        assert_eq!(got, env);
        assert_eq!(io.at, bytes.len(), "read past the frame");
        // The acknowledgement is the empty frame; anything else is refused.
        let mut ack = futures::io::Cursor::new(Vec::new());
        request_response::Codec::write_response(
            &mut PeerCodec::default(),
            &protocol(),
            &mut ack,
            (),
        )
        .await
        .unwrap();
        assert_eq!(ack.get_ref()[..], [0, 0, 0, 0]);
        let mut not_empty = futures::io::Cursor::new(vec![0, 0, 0, 1, 0]);
        let e = request_response::Codec::read_response(
            &mut PeerCodec::default(),
            &protocol(),
            &mut not_empty,
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_peer_frame_of_exactly_the_maximum_passes_and_one_byte_more_is_an_io_error() {
        let env = envelope_of(MAX_PEER_FRAME);
        let bytes = written(env.clone()).await.unwrap();
        assert_eq!(bytes.len(), 4 + MAX_PEER_FRAME);
        let mut io = futures::io::Cursor::new(bytes);
        let got =
            request_response::Codec::read_request(&mut PeerCodec::default(), &protocol(), &mut io)
                .await
                .unwrap();
        assert_eq!(got, env);

        // Writing one byte more is refused, and nothing is written.
        let e = written(envelope_of(MAX_PEER_FRAME + 1)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);

        // Reading one: refused on the prefix, before any payload is read.
        let mut bytes = ((MAX_PEER_FRAME + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 1024]);
        let mut io = futures::io::Cursor::new(bytes);
        let e =
            request_response::Codec::read_request(&mut PeerCodec::default(), &protocol(), &mut io)
                .await
                .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("exceeds the maximum"), "{e}");
        assert_eq!(io.position(), 4);
    }

    #[tokio::test]
    async fn a_cut_or_missing_peer_frame_is_an_unexpected_eof() {
        for bytes in [vec![], vec![0, 0], vec![0, 0, 0, 9, 1, 2, 3]] {
            let mut io = futures::io::Cursor::new(bytes.clone());
            let e = request_response::Codec::read_request(
                &mut PeerCodec::default(),
                &protocol(),
                &mut io,
            )
            .await
            .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{bytes:?}");
        }
    }

    #[tokio::test]
    async fn a_peer_on_another_version_is_counted_once_while_same_version_peers_get_messages() {
        let mut a = node("a", PEER_PROTOCOL_NAME);
        let mut b = node("b", PEER_PROTOCOL_NAME);
        let mut old = node("old", "/agora/peer/1");
        let (b_addr, old_addr) = (listen_addr(&mut b).await, listen_addr(&mut old).await);
        let (b_id, old_id) = (NodeId::new("b").unwrap(), NodeId::new("old").unwrap());
        a.set_peer(&b_id, &b.peer_id().to_base58(), &b_addr.to_string());
        a.set_peer(&old_id, &old.peer_id().to_base58(), &old_addr.to_string());
        for seq in 1..=3 {
            a.send(&old_id, ack(seq));
        }
        a.send(&b_id, ack(9));
        let mut got = Vec::new();
        let run = async {
            while got.is_empty() || a.stats.failures < 3 {
                tokio::select! {
                    ev = a.swarm.select_next_some() => { a.on_event(ev); }
                    ev = b.swarm.select_next_some() => {
                        if let Some(m) = b.on_event(ev) { got.push(m); }
                    }
                    ev = old.swarm.select_next_some() => {
                        assert!(old.on_event(ev).is_none(), "the old version took a message");
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("b's message and three failures within 30 s");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.as_str(), "a");
        assert!(matches!(&got[0].1, PeerMessage::StatusAck(s) if s.seq == 9));
        // Three messages failed on the version, but the peer is reported once.
        assert_eq!(a.stats.other_version, 1);
        assert_eq!((a.stats.sent, a.stats.failures), (4, 3));
    }

    /// 2,000 messages sent at once to one peer: four times yamux's default
    /// stream limit, twice the limit the pool sizes. Before the pool each
    /// became a stream at once; past the limit they failed ("maximum
    /// number of streams reached") or the peer ended the connection.
    #[tokio::test]
    async fn a_burst_past_the_stream_limit_all_arrives() {
        const BURST: u64 = 2_000;
        let mut a = node("a", PEER_PROTOCOL_NAME);
        let mut b = node("b", PEER_PROTOCOL_NAME);
        let b_addr = listen_addr(&mut b).await;
        let b_id = NodeId::new("b").unwrap();
        a.set_peer(&b_id, &b.peer_id().to_base58(), &b_addr.to_string());
        for seq in 0..BURST {
            a.send(&b_id, ack(seq));
        }
        let mut got = std::collections::BTreeSet::new();
        let run = async {
            while (got.len() as u64) < BURST {
                tokio::select! {
                    ev = a.swarm.select_next_some() => { a.on_event(ev); }
                    ev = b.swarm.select_next_some() => {
                        if let Some((_, PeerMessage::StatusAck(s))) = b.on_event(ev) {
                            got.insert(s.seq);
                        }
                    }
                }
            }
        };
        let done = tokio::time::timeout(Duration::from_secs(60), run).await;
        assert!(
            done.is_ok(),
            "{} of {BURST} arrived; a: {:?}, pool {:?}",
            got.len(),
            a.stats,
            a.pool_counts()
        );
        assert_eq!(a.pool_counts().dropped, 0);
    }

    /// A codec that writes its request's bytes as they are, with no frame
    /// and no limit: a peer (with the key) that breaks the framing.
    #[derive(Clone, Default)]
    struct RawCodec;

    impl request_response::Codec for RawCodec {
        type Protocol = StreamProtocol;
        type Request = Vec<u8>;
        type Response = ();

        async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<Vec<u8>>
        where
            T: AsyncRead + Unpin + Send,
        {
            Err(io::Error::other("this peer only sends"))
        }

        async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
        where
            T: AsyncRead + Unpin + Send,
        {
            let mut ack = [0u8; 4];
            futures::AsyncReadExt::read_exact(io, &mut ack).await
        }

        async fn write_request<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            req: Vec<u8>,
        ) -> io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            io.write_all(&req).await?;
            io.close().await
        }

        async fn write_response<T>(
            &mut self,
            _: &StreamProtocol,
            _: &mut T,
            _: (),
        ) -> io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            Ok(())
        }
    }

    /// A swarm with the same transport and key as [`node`] but [`RawCodec`].
    fn raw_peer() -> Swarm<request_response::Behaviour<RawCodec>> {
        let psk = pnet_key(&[7; 32]);
        libp2p::SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
            .with_tokio()
            .with_other_transport(|key| transport(key, psk, yamux::Config::default()))
            .expect("transport")
            .with_behaviour(|_| {
                request_response::Behaviour::with_codec(
                    RawCodec,
                    [(protocol(), ProtocolSupport::Full)],
                    request_response::Config::default(),
                )
            })
            .expect("behaviour")
            .build()
    }

    #[tokio::test]
    async fn an_oversized_peer_frame_fails_its_stream_is_counted_and_the_node_carries_on() {
        let mut b = node("b", PEER_PROTOCOL_NAME);
        let b_addr = listen_addr(&mut b).await;
        let b_peer = b.peer_id();
        let before = EDGE
            .peer_frames_too_large
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut raw = raw_peer();
        raw.add_peer_address(b_peer, b_addr.clone());
        // A prefix announcing 64 MiB, then the start of a payload.
        let mut bytes = (64u32 << 20).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 4096]);
        raw.behaviour_mut().send_request(&b_peer, bytes);
        // A node that keeps to the limit still gets through afterwards.
        let mut a = node("a", PEER_PROTOCOL_NAME);
        let b_id = NodeId::new("b").unwrap();
        let mut got = Vec::new();
        let mut sent = false;
        let run = async {
            while got.is_empty() {
                tokio::select! {
                    _ = raw.select_next_some() => {}
                    ev = a.swarm.select_next_some() => { a.on_event(ev); }
                    ev = b.swarm.select_next_some() => {
                        if let Some(m) = b.on_event(ev) { got.push(m); }
                        if b.refused_requests().0 > 0 && !sent {
                            sent = true;
                            a.set_peer(&b_id, &b_peer.to_base58(), &b_addr.to_string());
                            a.send(&b_id, ack(11));
                        }
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("the bad stream's failure and then a's message within 30 s");
        assert!(matches!(&got[0].1, PeerMessage::StatusAck(s) if s.seq == 11));
        assert_eq!(b.refused_requests(), (1, 0));
        let after = EDGE
            .peer_frames_too_large
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            after > before,
            "the oversized frame was not counted for /metrics"
        );
    }
}
