//! Node-to-node messages over libp2p: TCP, then a private network keyed by
//! the cluster key (pnet), then noise (each node's ed25519 identity) and
//! yamux, carrying request-response streams of protocol `/agora/peer/3`
//! (`agora_protocol::wire::PEER_PROTOCOL_NAME`).
//!
//! Every protocol message is one-way, so each is sent as a request whose
//! response is an empty acknowledgement. A request is one frame: a
//! big-endian `u32` length, then a postcard-encoded [`PeerEnvelope`] (the
//! sender's node id and the [`PeerMessage`]), at most [`MAX_PEER_FRAME`]
//! bytes. A response is the 4-byte frame of length zero. A frame that is
//! oversized or does not decode fails that stream with a logged reason; the
//! connection's other streams and the node carry on.
//!
//! The pnet key is SHA-256("agora pnet v1" ‖ cluster key), so it differs
//! from the key that seals gossip; a node without the cluster key cannot
//! complete a connection.
//!
//! Peers are found through gossip: each node publishes its p2p multiaddr and
//! peer id, which [`P2p::set_peer`] records; sending dials that address when
//! no connection is open. An inbound envelope whose node id is known under a
//! different peer id is dropped.

use agora_protocol::NodeId;
use agora_protocol::codec::Codec;
use agora_protocol::wire::{PEER_PROTOCOL_NAME, PeerMessage};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::core::upgrade;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, Transport, noise, tcp, yamux};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Largest peer frame payload (task lists and log chunks are the big ones).
pub const MAX_PEER_FRAME: usize = 4 << 20;

/// What travels in one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEnvelope {
    /// The sending node.
    pub from: NodeId,
    /// The message.
    pub msg: PeerMessage,
}

/// The request-response codec: length-prefixed postcard, bounded.
#[derive(Clone, Debug, Default)]
pub struct PeerCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_PEER_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer frame of {len} bytes exceeds the maximum of {MAX_PEER_FRAME}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_PEER_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "peer message of {} bytes exceeds the maximum of {MAX_PEER_FRAME}",
                payload.len()
            ),
        ));
    }
    io.write_all(&(payload.len() as u32).to_be_bytes()).await?;
    io.write_all(payload).await?;
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
        let payload = read_frame(io).await?;
        Codec::Postcard
            .decode(&payload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let payload = read_frame(io).await?;
        if payload.is_empty() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a peer acknowledgement must be empty",
            ))
        }
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
        write_frame(io, &payload).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &[]).await
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

type Behaviour = request_response::Behaviour<PeerCodec>;

/// Counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct P2pStats {
    /// Messages sent to other nodes.
    pub sent: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// Messages dropped: no address known for the destination.
    pub unroutable: u64,
    /// Streams that failed (dial errors, timeouts, bad frames).
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
}

impl P2p {
    /// Builds the swarm and starts listening on `listen`.
    ///
    /// # Errors
    /// Transport setup or a listen address that cannot be bound.
    pub fn start(
        me: NodeId,
        keypair: Keypair,
        cluster_key: &[u8; 32],
        listen: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::start_speaking(me, keypair, cluster_key, listen, PEER_PROTOCOL_NAME)
    }

    /// [`P2p::start`] with another peer-protocol name: tests use it to play
    /// a node of another release.
    fn start_speaking(
        me: NodeId,
        keypair: Keypair,
        cluster_key: &[u8; 32],
        listen: SocketAddr,
        protocol_name: &'static str,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let psk = pnet_key(cluster_key);
        let protocol = StreamProtocol::new(protocol_name);
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|key| {
                let noise = noise::Config::new(key)?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                        .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                        .upgrade(upgrade::Version::V1Lazy)
                        .authenticate(noise)
                        .multiplex(yamux::Config::default())
                        .timeout(Duration::from_secs(10))
                        .boxed(),
                )
            })
            .context("cannot set up the libp2p transport")?
            .with_behaviour(|_| {
                request_response::Behaviour::with_codec(
                    PeerCodec,
                    [(protocol, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(10))
                        .with_max_concurrent_streams(512),
                )
            })
            .context("cannot set up the libp2p behaviour")?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
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
        })
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
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
        self.swarm.add_peer_address(peer, addr.clone());
        // Connect ahead of the first auction (the handshakes cost more than
        // a bid); a failure here is retried by the first real send.
        if !self.swarm.is_connected(&peer) {
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(vec![addr])
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%node, error = %e, "early dial failed");
            }
        }
    }

    /// Sends a message to another node (best effort; the protocol retries).
    pub fn send(&mut self, to: &NodeId, msg: PeerMessage) {
        let Some((peer, addr)) = self.peers.get(to) else {
            self.stats.unroutable += 1;
            tracing::debug!(%to, kind = msg.kind(), "no p2p address known yet; message dropped");
            return;
        };
        self.stats.sent += 1;
        let envelope = PeerEnvelope {
            from: self.me.clone(),
            msg,
        };
        let (peer, addr) = (*peer, addr.clone());
        self.swarm
            .behaviour_mut()
            .send_request_with_addresses(&peer, envelope, vec![addr]);
    }

    /// Handles one swarm event; returns an inbound message to dispatch.
    pub fn on_event(
        &mut self,
        event: SwarmEvent<request_response::Event<PeerEnvelope, ()>>,
    ) -> Option<(NodeId, PeerMessage)> {
        match event {
            SwarmEvent::Behaviour(request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            }) => {
                let _ = self.swarm.behaviour_mut().send_response(channel, ());
                if let Some(known) = self.peers.get(&request.from)
                    && known.0 != peer
                {
                    tracing::warn!(claimed = %request.from, %peer, "peer claims a node id gossiped under another peer id; message dropped");
                    return None;
                }
                self.nodes
                    .entry(peer)
                    .or_insert_with(|| request.from.clone());
                self.stats.received += 1;
                Some((request.from, request.msg))
            }
            SwarmEvent::Behaviour(request_response::Event::InboundFailure {
                peer, error, ..
            }) => {
                self.stats.failures += 1;
                tracing::warn!(%peer, %error, "inbound peer stream failed and was closed");
                None
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                peer, error, ..
            }) => {
                self.stats.failures += 1;
                let node = self.nodes.get(&peer).map(|n| n.to_string());
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
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!(%error, "incoming peer connection failed (wrong cluster key?)");
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
            "127.0.0.1:0".parse().expect("loopback"),
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
}
