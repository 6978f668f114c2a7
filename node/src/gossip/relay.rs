//! The sealing relay: a chitchat [`Transport`] whose only network socket
//! carries sealed datagrams.
//!
//! Chitchat 0.13 keeps its envelope encoding crate-private, so a custom
//! transport cannot encode or decode messages itself. This one therefore
//! wraps chitchat's own [`UdpSocket`] (the encoder and decoder), bound on
//! `127.0.0.1`, and moves bytes between it and the public socket through two
//! more loopback sockets, all owned by one [`SealedSocket`] inside chitchat's
//! server task:
//!
//! ```text
//!   send(to, envelope):  chitchat UdpSocket --plaintext--> capture (loopback)
//!                        capture --seal--> public socket --> `to`
//!   recv():              public socket <-- peer P (sealed)
//!                        open --> inject --plaintext--> chitchat UdpSocket
//!                        returned to chitchat as coming from P
//! ```
//!
//! Chitchat keeps addressing peers by their real public addresses
//! (`ChitchatId::gossip_advertise_addr` and the seeds); only this socket
//! touches the network and it sends nothing but sealed datagrams. The
//! capture and inject sockets are `connect`ed to chitchat's socket, so the
//! kernel drops anything another local process sends them, and a datagram
//! that reaches chitchat's socket from anywhere but `inject` is discarded.
//!
//! Inbound datagrams go through chitchat's decoder one at a time: the relay
//! injects one opened datagram and waits (at most [`INJECT_TIMEOUT`]; loopback
//! delivery is immediate) for chitchat's socket to return it, so the peer's
//! address is known without any per-peer state or per-peer sockets (three
//! loopback sockets in all, whatever the cluster size). If chitchat's decoder
//! drops the datagram (a peer with the key but another chitchat format), the
//! wait times out and the datagram counts as malformed.
//!
//! Every recv path is cancel-safe, as chitchat's server loop requires: the
//! pending injection is kept in `self` and resumed by the next call.

use super::seal::{OVERHEAD, OpenError, Sealer};
use anyhow::Context;
use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Largest UDP payload over IPv4 (what chitchat also assumes).
pub const MAX_DATAGRAM: usize = 65_507;

/// Largest chitchat datagram that still fits once sealed.
pub const MAX_PLAINTEXT: usize = MAX_DATAGRAM - OVERHEAD;

/// How long an opened datagram may take to come back out of chitchat's
/// decoder before it is presumed dropped.
pub const INJECT_TIMEOUT: Duration = Duration::from_millis(200);

/// How long to wait for chitchat's encoded datagram on the capture socket.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(1);

/// Minimum time between two warnings about rejected datagrams (the first
/// is logged at once; each later one counts those since the last).
const REJECT_WARN_EVERY: Duration = Duration::from_secs(60);

/// Counters shared between the relay and [`super::Gossip::stats`].
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    pub datagrams_rejected: AtomicU64,
    pub datagrams_malformed: AtomicU64,
    pub send_failures: AtomicU64,
    /// Probes the failure detector sent to silent members.
    pub probes: AtomicU64,
    /// Exchanges the join push started.
    pub join_pushes: AtomicU64,
    /// The detector's local health score now (0: healthy).
    pub local_health: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// A [`Transport`] that hands chitchat one prepared [`SealedSocket`].
pub struct SealedTransport {
    socket: std::sync::Mutex<Option<SealedSocket>>,
}

impl SealedTransport {
    /// Wraps a bound socket; chitchat takes it on `open`.
    pub fn new(socket: SealedSocket) -> Self {
        SealedTransport {
            socket: std::sync::Mutex::new(Some(socket)),
        }
    }
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self
            .socket
            .lock()
            .map_err(|_| anyhow::anyhow!("sealed gossip transport lock poisoned"))?
            .take()
            .context("the sealed gossip socket was already opened")?;
        Ok(Box::new(socket))
    }
}

/// An opened datagram handed to chitchat's decoder, not yet returned.
struct Pending {
    from: SocketAddr,
    len: usize,
    deadline: Instant,
}

/// The public socket plus chitchat's loopback socket and the two loopback
/// sockets that move bytes between them (see the module docs).
pub struct SealedSocket {
    public: tokio::net::UdpSocket,
    public_addr: SocketAddr,
    chitchat: UdpSocket,
    capture: tokio::net::UdpSocket,
    capture_addr: SocketAddr,
    inject: tokio::net::UdpSocket,
    inject_addr: SocketAddr,
    sealer: Sealer,
    counters: Arc<Counters>,
    pending: Option<Pending>,
    buf: Box<[u8]>,
    plain: Vec<u8>,
    sealed: Vec<u8>,
    last_reject_warn: Option<Instant>,
    rejected_since_warn: u64,
}

impl SealedSocket {
    /// Binds the public socket on `listen` and the loopback sockets.
    ///
    /// # Errors
    /// The address is in use or not local, with the address in the message.
    pub async fn bind(
        listen: SocketAddr,
        sealer: Sealer,
        counters: Arc<Counters>,
    ) -> anyhow::Result<SealedSocket> {
        let public = tokio::net::UdpSocket::bind(listen).await.with_context(|| {
            format!("cannot bind the gossip socket on {listen}/udp (is another agent using it?)")
        })?;
        let public_addr = public
            .local_addr()
            .context("cannot read the gossip socket's address")?;
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let chitchat = UdpSocket::open(loopback)
            .await
            .context("cannot bind chitchat's loopback socket")?;
        let chitchat_addr = chitchat.local_addr()?;
        let capture = connected_loopback(chitchat_addr).await?;
        let inject = connected_loopback(chitchat_addr).await?;
        Ok(SealedSocket {
            public,
            public_addr,
            chitchat,
            capture_addr: capture.local_addr()?,
            capture,
            inject_addr: inject.local_addr()?,
            inject,
            sealer,
            counters,
            pending: None,
            buf: vec![0u8; 65_536].into_boxed_slice(),
            plain: Vec::with_capacity(MAX_DATAGRAM),
            sealed: Vec::with_capacity(MAX_DATAGRAM),
            last_reject_warn: None,
            rejected_since_warn: 0,
        })
    }

    /// The bound public address (with the real port when `listen` said 0).
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    fn note_rejected(&mut self, from: SocketAddr, err: OpenError) {
        bump(&self.counters.datagrams_rejected, 1);
        self.rejected_since_warn += 1;
        debug!(%from, %err, "dropped a gossip datagram that failed to open");
        let now = Instant::now();
        if self
            .last_reject_warn
            .is_none_or(|at| now.duration_since(at) >= REJECT_WARN_EVERY)
        {
            warn!(
                %from,
                %err,
                rejected = self.rejected_since_warn,
                "received {} gossip datagrams that fail to open with the cluster key and \
                 cluster id of this node (the last from {from}); they are dropped. A node with another \
                 key or cluster id, a node of another cell (a seed in another cell: harmless, \
                 cells do not gossip with each other), or a program that is not agora, is \
                 sending here: check that every node has the same --cluster-key-file \
                 contents and --cluster-id",
                self.rejected_since_warn
            );
            self.last_reject_warn = Some(now);
            self.rejected_since_warn = 0;
        }
    }
}

async fn connected_loopback(peer: SocketAddr) -> anyhow::Result<tokio::net::UdpSocket> {
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("cannot bind a loopback socket for the gossip relay")?;
    socket
        .connect(peer)
        .await
        .context("cannot connect the gossip relay's loopback socket")?;
    Ok(socket)
}

/// Errors after which the socket still works (as chitchat's own UDP
/// transport treats them).
fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::OutOfMemory
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.public_addr)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        // Discard anything stale on the capture socket (there should be
        // nothing: every send below reads back what it wrote).
        while self.capture.try_recv(&mut self.buf).is_ok() {}
        self.chitchat.send(self.capture_addr, envelope).await?;
        let len = loop {
            match tokio::time::timeout(CAPTURE_TIMEOUT, self.capture.recv(&mut self.buf)).await {
                Ok(Ok(len)) => break len,
                Ok(Err(err)) if is_transient(&err) => continue,
                Ok(Err(err)) => {
                    return Err(err).context("gossip relay: cannot read chitchat's datagram");
                }
                Err(_) => {
                    warn!(%to, "gossip relay: chitchat's datagram did not arrive on loopback");
                    bump(&self.counters.send_failures, 1);
                    return Ok(SendOutcome { num_bytes_sent: 0 });
                }
            }
        };
        if len > MAX_PLAINTEXT {
            warn!(
                %to,
                len,
                max = MAX_PLAINTEXT,
                "gossip datagram too large to seal into one UDP datagram; dropped \
                 (the cell has too many members for one chitchat cluster)"
            );
            bump(&self.counters.send_failures, 1);
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        if let Err(err) = self.sealer.seal(&self.buf[..len], &mut self.sealed) {
            warn!(%to, %err, "gossip relay: cannot seal a datagram");
            bump(&self.counters.send_failures, 1);
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        match self.public.send_to(&self.sealed, to).await {
            Ok(sent) => {
                bump(&self.counters.bytes_out, sent as u64);
                bump(&self.counters.datagrams_out, 1);
                Ok(SendOutcome {
                    num_bytes_sent: sent,
                })
            }
            Err(err) => {
                // One unreachable peer must not stop gossip with the others.
                debug!(%to, %err, "gossip relay: send failed");
                bump(&self.counters.send_failures, 1);
                Ok(SendOutcome { num_bytes_sent: 0 })
            }
        }
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some(pending) = &self.pending {
                let deadline = pending.deadline;
                match tokio::time::timeout_at(deadline, self.chitchat.recv()).await {
                    Ok(Ok(outcome)) => {
                        if outcome.from_addr != self.inject_addr {
                            debug!(
                                from = %outcome.from_addr,
                                "discarding a datagram sent to chitchat's loopback socket \
                                 by another local process"
                            );
                            continue;
                        }
                        let Some(pending) = self.pending.take() else {
                            continue;
                        };
                        if outcome.num_bytes_received != pending.len {
                            debug!("chitchat returned a datagram out of order; discarding it");
                            continue;
                        }
                        return Ok(RecvOutcome {
                            from_addr: pending.from,
                            envelope: outcome.envelope,
                            num_bytes_received: outcome.num_bytes_received,
                        });
                    }
                    Ok(Err(err)) => return Err(err),
                    Err(_elapsed) => {
                        if let Some(pending) = self.pending.take() {
                            warn!(
                                from = %pending.from,
                                "a gossip datagram opened with the cluster key but chitchat \
                                 could not decode it (another agora version?); dropped"
                            );
                        }
                        bump(&self.counters.datagrams_malformed, 1);
                        continue;
                    }
                }
            }
            let (len, from) = match self.public.recv_from(&mut self.buf).await {
                Ok(got) => got,
                Err(err) if is_transient(&err) => {
                    debug!(%err, "transient gossip recv error");
                    continue;
                }
                Err(err) => return Err(err).context("gossip socket recv failed"),
            };
            bump(&self.counters.bytes_in, len as u64);
            bump(&self.counters.datagrams_in, 1);
            if let Err(err) = self.sealer.open(&self.buf[..len], &mut self.plain) {
                self.note_rejected(from, err);
                continue;
            }
            match self.inject.send(&self.plain).await {
                Ok(_) => {
                    self.pending = Some(Pending {
                        from,
                        len: self.plain.len(),
                        deadline: Instant::now() + INJECT_TIMEOUT,
                    });
                }
                Err(err) => {
                    debug!(%err, "gossip relay: cannot hand a datagram to chitchat");
                    bump(&self.counters.datagrams_malformed, 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::ClusterKey;

    #[tokio::test]
    async fn garbage_on_the_public_socket_is_counted_and_dropped() {
        let counters = Arc::new(Counters::default());
        let sealer = Sealer::new(&ClusterKey([3; 32]), "c");
        let mut socket =
            SealedSocket::bind("127.0.0.1:0".parse().unwrap(), sealer, counters.clone())
                .await
                .unwrap();
        let addr = socket.public_addr();
        let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for payload in [&b""[..], b"x", &[0u8; 100][..], &[1u8; 2000][..]] {
            sender.send_to(payload, addr).await.unwrap();
        }
        // recv never returns garbage; it keeps waiting.
        let waited = tokio::time::timeout(Duration::from_millis(300), socket.recv()).await;
        assert!(waited.is_err());
        assert_eq!(counters.datagrams_rejected.load(Ordering::Relaxed), 4);
        assert_eq!(counters.datagrams_in.load(Ordering::Relaxed), 4);
        assert_eq!(counters.bytes_in.load(Ordering::Relaxed), 2101);
    }

    #[tokio::test]
    async fn sealed_but_undecodable_datagrams_are_dropped() {
        let counters = Arc::new(Counters::default());
        let key = ClusterKey([4; 32]);
        let mut socket = SealedSocket::bind(
            "127.0.0.1:0".parse().unwrap(),
            Sealer::new(&key, "c"),
            counters.clone(),
        )
        .await
        .unwrap();
        let addr = socket.public_addr();
        let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut sealed = Vec::new();
        Sealer::new(&key, "c")
            .seal(b"not chitchat", &mut sealed)
            .unwrap();
        sender.send_to(&sealed, addr).await.unwrap();
        let waited = tokio::time::timeout(INJECT_TIMEOUT * 3, socket.recv()).await;
        assert!(waited.is_err());
        assert_eq!(counters.datagrams_rejected.load(Ordering::Relaxed), 0);
        assert_eq!(counters.datagrams_malformed.load(Ordering::Relaxed), 1);
    }
}
