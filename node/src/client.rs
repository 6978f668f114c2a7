//! A framework-socket client: connect, handshake (postcard), then send
//! [`ClientMessage`]s and receive [`ServerMessage`]s. The CLI commands, the
//! demo and the tests use it; it is also the smallest example of a Rust
//! framework.
//!
//! Reading and writing are independent: [`Client::send`] and
//! [`Client::try_send`] queue a frame for a writer task (at most
//! [`SEND_QUEUE`] frames), so a caller that acks from inside its read loop
//! never stops reading because the node is slow to read its acks.
//!
//! Every wait that expects the node to answer has a limit, the client's
//! `timeout` ([`DEFAULT_TIMEOUT`] unless given): connecting and the
//! handshake ([`Client::connect_with_timeout`]), room in the send queue
//! ([`Client::send`]) and an answer ([`Client::recv_by`]). Past it the error
//! is one line: "the agora node at PATH did not answer within 10 s; is it
//! stopped or overloaded?". [`Client::recv`] and [`Client::recv_within`]
//! wait for events, which may legitimately not come for a long time.

use crate::framing::FramedReader;
use agora_protocol::NodeId;
use agora_protocol::codec::{Codec, DEFAULT_MAX_FRAME};
use agora_protocol::wire::{ClientMessage, ServerMessage};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::bytes::Bytes;

/// How long a client waits for the node to answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames queued for the writer task.
pub const SEND_QUEUE: usize = 1024;

/// A connection to a node's framework socket.
pub struct Client {
    frames: FramedReader<OwnedReadHalf>,
    out: mpsc::Sender<Bytes>,
    writer: tokio::task::JoinHandle<()>,
    codec: Codec,
    path: PathBuf,
    timeout: Duration,
    /// The node answering.
    pub node_id: NodeId,
}

/// `payload` as one frame. The node takes at most [`DEFAULT_MAX_FRAME`]
/// payload bytes and answers a longer frame with `frame_too_large` and a
/// close; such a frame is still sent, so that what the user sees is the
/// node's refusal.
fn frame(payload: &[u8]) -> anyhow::Result<Bytes> {
    let f = agora_protocol::codec::frame(payload, u32::MAX as usize)
        .context("a message too large for one frame")?;
    Ok(Bytes::from(f))
}

/// Writes queued frames until the queue closes or a write fails.
async fn write_loop(mut wr: tokio::net::unix::OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(f) = rx.recv().await {
        if wr.write_all(&f).await.is_err() {
            return;
        }
    }
}

impl Client {
    /// Connects and completes the handshake, waiting at most
    /// [`DEFAULT_TIMEOUT`] for the node.
    ///
    /// # Errors
    /// The socket is missing or refuses, the node does not answer in time,
    /// or its answer is not a welcome.
    pub async fn connect(path: &Path) -> anyhow::Result<Client> {
        Client::connect_with_timeout(path, DEFAULT_TIMEOUT).await
    }

    /// Connects and completes the handshake within `timeout`, which also
    /// bounds every later request ([`Client::send`], [`Client::recv_by`]).
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect_with_timeout(path: &Path, timeout: Duration) -> anyhow::Result<Client> {
        let deadline = Instant::now() + timeout;
        let connecting = tokio::time::timeout_at(deadline, UnixStream::connect(path));
        let stream = match connecting.await {
            Ok(s) => s.with_context(|| {
                format!(
                    "cannot connect to the agora node at {} (is `agora agent` running? give --socket or set AGORA_SOCKET)",
                    path.display()
                )
            })?,
            Err(_) => bail!(no_answer(path, timeout)),
        };
        let (rd, wr) = stream.into_split();
        let (out, rx) = mpsc::channel(SEND_QUEUE);
        let writer = tokio::spawn(write_loop(wr, rx));
        let codec = Codec::Postcard;
        let mut client = Client {
            frames: FramedReader::new(rd, DEFAULT_MAX_FRAME),
            out,
            writer,
            codec,
            path: path.to_path_buf(),
            timeout,
            node_id: NodeId::new("unknown").context("node id")?,
        };
        client.send_frame(frame(&codec.handshake())?).await?;
        match client.recv_by(deadline).await? {
            ServerMessage::Welcome(w) => client.node_id = w.node_id,
            ServerMessage::Error(e) => bail!("the node refused the handshake: {}", e.message),
            other => bail!("unexpected first answer from the node: {other:?}"),
        }
        Ok(client)
    }

    /// Writes what is still queued (acks, typically), waiting at most the
    /// timeout, and closes the connection. Dropping a client instead may
    /// leave queued frames unwritten when the runtime stops.
    pub async fn close(self) {
        let Client { out, writer, .. } = self;
        drop(out);
        let _ = tokio::time::timeout(self.timeout, writer).await;
    }

    /// How long this client waits for an answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// When an answer to a request sent now is due.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// The one-line error for a node that did not answer in time.
    pub fn no_answer(&self) -> anyhow::Error {
        anyhow::anyhow!(no_answer(&self.path, self.timeout))
    }

    async fn send_frame(&mut self, f: Bytes) -> anyhow::Result<()> {
        match tokio::time::timeout(self.timeout, self.out.send(f)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => bail!("the node closed the connection"),
            Err(_) => Err(self.no_answer()),
        }
    }

    /// Queues one message; waits (at most the timeout) only while
    /// [`SEND_QUEUE`] frames are already queued.
    ///
    /// # Errors
    /// The connection broke, or the node read nothing for the timeout.
    pub async fn send(&mut self, msg: &ClientMessage) -> anyhow::Result<()> {
        let bytes = self.codec.encode(msg).context("cannot encode a message")?;
        self.send_frame(frame(&bytes)?).await
    }

    /// Queues one message without waiting; false when the queue is full
    /// (nothing was queued). Acks use it: an event not acked is re-sent.
    ///
    /// # Errors
    /// The connection broke.
    pub fn try_send(&mut self, msg: &ClientMessage) -> anyhow::Result<bool> {
        let bytes = self.codec.encode(msg).context("cannot encode a message")?;
        match self.out.try_send(frame(&bytes)?) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => bail!("the node closed the connection"),
        }
    }

    /// Receives one message, however long it takes.
    ///
    /// # Errors
    /// The connection closed or sent something undecodable.
    pub async fn recv(&mut self) -> anyhow::Result<ServerMessage> {
        match self.frames.next().await {
            Ok(Some(payload)) => self
                .codec
                .decode(payload)
                .context("the node sent an undecodable message"),
            Err(e) => Err(e).context("reading from the node failed"),
            Ok(None) => bail!("the node closed the connection"),
        }
    }

    /// Receives one message that must arrive by `deadline` (from
    /// [`Client::deadline`]).
    ///
    /// # Errors
    /// As [`Client::recv`], and the one-line "did not answer" error.
    pub async fn recv_by(&mut self, deadline: Instant) -> anyhow::Result<ServerMessage> {
        match tokio::time::timeout_at(deadline, self.recv()).await {
            Ok(r) => r,
            Err(_) => Err(self.no_answer()),
        }
    }

    /// Receives one message if one arrives within `wait`.
    ///
    /// # Errors
    /// As [`Client::recv`].
    pub async fn recv_within(&mut self, wait: Duration) -> anyhow::Result<Option<ServerMessage>> {
        match tokio::time::timeout(wait, self.recv()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }
}

fn no_answer(path: &Path, timeout: Duration) -> String {
    format!(
        "the agora node at {} did not answer within {} s; is it stopped or overloaded? (--timeout sets the limit)",
        path.display(),
        crate::cli::seconds(timeout)
    )
}
