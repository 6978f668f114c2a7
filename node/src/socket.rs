//! The framework socket: a Unix listener (mode 0600) and, per connection, a
//! reader and a writer that never wait for each other. The reader does the
//! framing, the handshake and the codec and hands decoded
//! [`ClientMessage`]s to the agent's core over a bounded channel; the writer
//! takes what the core answers from the connection's bounded channel into
//! an [`Outbox`] and writes it as fast as the client reads.
//!
//! Frames are a big-endian `u32` length and a payload of at most
//! [`DEFAULT_MAX_FRAME`] bytes (tokio-util's `LengthDelimitedCodec`). The
//! first frame is the handshake (`agora/1 json` or `agora/1 postcard`); the
//! node answers `welcome` in that codec. A bad handshake gets an error in
//! JSON and the connection is closed; a frame that does not decode gets
//! `bad_frame`, an oversized one `frame_too_large`, and that connection (only
//! it) is closed. docs/FRAMEWORK_API.md is the full specification.
//!
//! Backpressure (docs/FRAMEWORK_API.md, "Flow control"): the reader keeps
//! reading whether or not the client reads, so a client that writes from
//! inside its read loop (acks inline) cannot deadlock against the node; it
//! waits only for room in the core's channel, and the core never waits for
//! a client. What a client does not read piles up in its [`Outbox`]: status
//! events are dropped past [`STATUS_DROP_BYTES`] (the core re-sends them
//! until they are acked), an `offers` frame replaces the unsent one, and
//! anything else past [`CLOSE_BYTES`] closes the connection.

use agora_protocol::NodeId;
use agora_protocol::codec::{Codec, DEFAULT_MAX_FRAME, HandshakeError};
use agora_protocol::wire::{
    ClientMessage, ErrorCode, ErrorReply, PROTOCOL_VERSION, ServerMessage, Welcome,
};
use anyhow::Context;
use futures::StreamExt;
use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::bytes::Bytes;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec, LengthDelimitedCodecError};

/// Messages from connection tasks to the core.
#[derive(Debug)]
pub enum ClientCmd {
    /// A client completed the handshake; `tx` carries answers to it.
    Open {
        /// Connection number.
        conn: u64,
        /// Where the core writes to this client.
        tx: mpsc::Sender<ServerMessage>,
    },
    /// A decoded message from a client.
    Message {
        /// Connection number.
        conn: u64,
        /// The message.
        msg: ClientMessage,
    },
    /// The client went away.
    Closed {
        /// Connection number.
        conn: u64,
    },
}

/// Messages the core may have queued to one connection that its writer has
/// not taken yet. The writer takes them at once whether or not the client
/// reads (into its [`Outbox`]), so this fills only when the core produces
/// more than this many messages for one connection in one burst; the core
/// then drops the excess (`Core::reply` uses `try_send`). It is larger than
/// the 10,000 unacknowledged events a framework may have, all of which a
/// reattach sends at once. (Tokio allocates a channel's slots as they are
/// used, 32 at a time.)
pub const CLIENT_QUEUE: usize = 16_384;

/// Unsent bytes in a connection's [`Outbox`] past which a status event that
/// needs an ack (seq > 0) is dropped; it stays unacknowledged, and the core
/// re-sends it every 5 s until it is acked.
pub const STATUS_DROP_BYTES: usize = 4 << 20;

/// Unsent bytes in a connection's [`Outbox`] past which any message other
/// than a droppable status event or an `offers` frame closes the connection:
/// the client has left this much of its answers unread.
pub const CLOSE_BYTES: usize = 16 << 20;

/// How long a fatal error may take to be written, and how long the node
/// reads and discards what the client still sends after one.
const LINGER: Duration = Duration::from_secs(1);

/// After the client closed its side, how long the node keeps writing what
/// it had queued for it.
const EOF_FLUSH: Duration = Duration::from_secs(5);

/// Most connections served at once; more are refused.
pub const MAX_CONNECTIONS: usize = 1024;

/// Largest log chunk sent to a JSON client. JSON writes each byte as up to
/// four characters (`255,`), so the node's 256 KiB cap could make a frame
/// over the 1 MiB limit; 192 KiB stays under it whatever the bytes are.
pub const JSON_MAX_LOG_CHUNK: u32 = 192 * 1024;

/// Caps what a request may ask for so that its answer fits one frame in the
/// connection's codec.
fn fit_to_codec(codec: Codec, msg: ClientMessage) -> ClientMessage {
    match (codec, msg) {
        (Codec::Json, ClientMessage::ReadLog(mut r)) => {
            r.max_bytes = r.max_bytes.min(JSON_MAX_LOG_CHUNK);
            ClientMessage::ReadLog(r)
        }
        (_, msg) => msg,
    }
}

/// The framing every socket connection uses.
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_length(4)
        .max_frame_length(DEFAULT_MAX_FRAME)
        .new_codec()
}

/// Binds the socket (replacing a stale one) with mode 0600.
///
/// # Errors
/// The path cannot be bound or its mode set; a live agent already owns it.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "socket {} is in use by a running agent; stop it or give another --socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        crate::config::ensure_dir(dir)?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set mode 0600 on {}", path.display()))?;
    Ok(listener)
}

/// Accepts connections forever, one task each (at most [`MAX_CONNECTIONS`]).
pub async fn serve(listener: UnixListener, node_id: NodeId, core: mpsc::Sender<ClientCmd>) {
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut next_conn = 1u64;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!("too many socket connections; refusing one");
            continue;
        };
        let conn = next_conn;
        next_conn += 1;
        let (node_id, core) = (node_id.clone(), core.clone());
        tokio::spawn(async move {
            connection(stream, conn, node_id, core).await;
            drop(permit);
        });
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error(ErrorReply {
        code,
        message: message.into(),
        request_id: None,
    })
}

/// `payload` with its big-endian `u32` length in front.
fn prefixed(payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(4 + payload.len());
    // A payload is at most DEFAULT_MAX_FRAME (1 MiB) bytes: it fits a u32.
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// A message as one whole frame (length prefix and payload). An answer too
/// large for one frame becomes an `internal` error; a message that does not
/// encode is logged and skipped (None).
fn encode_frame(codec: Codec, msg: &ServerMessage) -> Option<Bytes> {
    match codec.encode(msg) {
        Ok(bytes) if bytes.len() <= DEFAULT_MAX_FRAME => Some(prefixed(&bytes)),
        Ok(bytes) => {
            tracing::warn!(
                len = bytes.len(),
                "answer too large for one frame; sending an error instead"
            );
            let e = error(
                ErrorCode::Internal,
                "the answer exceeded the maximum frame size",
            );
            codec.encode(&e).ok().map(|b| prefixed(&b))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode an answer");
            None
        }
    }
}

/// What the node has not yet written to one client, and the rule for a
/// client that does not read (docs/FRAMEWORK_API.md, "Flow control"):
///
/// - a status event with seq > 0 is dropped when the unsent bytes would pass
///   [`STATUS_DROP_BYTES`] (the core re-sends it until it is acked);
/// - an `offers` frame replaces the unsent one (it is a whole snapshot) and
///   goes out before the rest;
/// - anything else (answers, errors, seq-0 reconcile events) is queued
///   until the unsent bytes would pass [`CLOSE_BYTES`]; then the connection
///   is closed ([`Push::Overflow`]).
#[derive(Debug)]
pub struct Outbox {
    codec: Codec,
    queue: VecDeque<Bytes>,
    offers: Option<Bytes>,
    bytes: usize,
    /// Status events dropped so far.
    pub dropped: u64,
}

/// What [`Outbox::push`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued to be written.
    Queued,
    /// A status event that needs an ack was dropped; the core re-sends it.
    Dropped,
    /// The message does not encode; nothing was queued (logged).
    Skipped,
    /// The client has left too much unread: close the connection.
    Overflow,
}

impl Outbox {
    /// An empty outbox for a connection speaking `codec`.
    pub fn new(codec: Codec) -> Outbox {
        Outbox {
            codec,
            queue: VecDeque::new(),
            offers: None,
            bytes: 0,
            dropped: 0,
        }
    }

    /// Bytes queued and not yet handed out by [`Outbox::pop`].
    pub fn unsent_bytes(&self) -> usize {
        self.bytes
    }

    /// Encodes `msg` and queues it, or drops it, by the rule above.
    pub fn push(&mut self, msg: &ServerMessage) -> Push {
        let Some(frame) = encode_frame(self.codec, msg) else {
            return Push::Skipped;
        };
        let limit = match msg {
            ServerMessage::Offers(_) => {
                if let Some(old) = self.offers.take() {
                    self.bytes -= old.len();
                }
                self.bytes += frame.len();
                self.offers = Some(frame);
                return Push::Queued;
            }
            ServerMessage::Status(ev) if ev.seq > 0 => STATUS_DROP_BYTES,
            _ => CLOSE_BYTES,
        };
        if self.bytes + frame.len() > limit {
            if limit == CLOSE_BYTES {
                return Push::Overflow;
            }
            self.dropped += 1;
            return Push::Dropped;
        }
        self.bytes += frame.len();
        self.queue.push_back(frame);
        Push::Queued
    }

    /// The next whole frame to write, if any.
    pub fn pop(&mut self) -> Option<Bytes> {
        let frame = self.offers.take().or_else(|| self.queue.pop_front())?;
        self.bytes -= frame.len();
        Some(frame)
    }
}

/// Sends a fatal error on a connection that has not started its writer,
/// then reads and discards what the client is still sending (bounded,
/// briefly) so that it sees the error before the close.
async fn fail(
    frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    mut wr: OwnedWriteHalf,
    codec: Codec,
    msg: ServerMessage,
) {
    let _ = tokio::time::timeout(LINGER, async {
        if let Some(frame) = encode_frame(codec, &msg) {
            wr.write_all(&frame).await?;
        }
        wr.shutdown().await
    })
    .await;
    drain(frames.into_inner()).await;
}

/// Reads and discards at most four frames' worth of bytes for at most
/// [`LINGER`], or until the client closes.
async fn drain(mut rd: OwnedReadHalf) {
    let mut sink = [0u8; 8192];
    let mut budget: usize = 4 * DEFAULT_MAX_FRAME;
    let _ = tokio::time::timeout(LINGER, async {
        while budget > 0 {
            match rd.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => budget = budget.saturating_sub(n),
            }
        }
    })
    .await;
}

fn is_too_large(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>())
}

async fn connection(stream: UnixStream, conn: u64, node_id: NodeId, core: mpsc::Sender<ClientCmd>) {
    let (rd, mut wr) = stream.into_split();
    let mut frames = FramedRead::new(rd, frame_codec());
    let first = match tokio::time::timeout(Duration::from_secs(30), frames.next()).await {
        Ok(Some(Ok(f))) => f,
        Ok(Some(Err(e))) if is_too_large(&e) => {
            tracing::warn!(conn, "socket client sent an oversized handshake; closing");
            let msg = error(
                ErrorCode::FrameTooLarge,
                format!("frame exceeds the maximum of {DEFAULT_MAX_FRAME} bytes"),
            );
            return fail(frames, wr, Codec::Json, msg).await;
        }
        Ok(_) => return,
        Err(_) => {
            tracing::debug!(conn, "socket client sent no handshake in 30 s; closing");
            return;
        }
    };
    let codec = match Codec::from_handshake(&first) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(conn, error = %e, "bad handshake on the socket; closing");
            let code = match e {
                HandshakeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
                _ => ErrorCode::BadHandshake,
            };
            return fail(frames, wr, Codec::Json, error(code, e.to_string())).await;
        }
    };
    let welcome = ServerMessage::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        node_id,
    });
    let Some(frame) = encode_frame(codec, &welcome) else {
        return;
    };
    if wr.write_all(&frame).await.is_err() {
        return;
    }
    let (tx, rx) = mpsc::channel::<ServerMessage>(CLIENT_QUEUE);
    if core.send(ClientCmd::Open { conn, tx }).await.is_err() {
        return;
    }
    // Held until the end: dropping it tells the writer to stop at once.
    let (fatal_tx, fatal_rx) = oneshot::channel();
    let mut writer = tokio::spawn(write_loop(wr, codec, conn, rx, fatal_rx));
    let end = read_loop(&mut frames, codec, conn, &core, &mut writer).await;
    if let ReadEnd::Fatal(msg) = &end {
        // Before `Closed`: the core then drops the connection's sender,
        // and the writer must see the error no later than that.
        let _ = fatal_tx.send(msg.clone());
    }
    let _ = core.send(ClientCmd::Closed { conn }).await;
    match end {
        ReadEnd::Fatal(_) => {
            drain(frames.into_inner()).await;
            if tokio::time::timeout(LINGER, &mut writer).await.is_err() {
                writer.abort();
            }
        }
        ReadEnd::Eof => {
            // The core drops this connection's sender on `Closed`: the
            // writer writes what it still holds, then ends.
            if tokio::time::timeout(EOF_FLUSH, &mut writer).await.is_err() {
                writer.abort();
            }
        }
        ReadEnd::WriterDone => {}
    }
}

/// Why a connection's reader stopped.
enum ReadEnd {
    /// The client closed its side, the read failed, or the core is gone.
    Eof,
    /// The client broke the framing or the codec: send this and close.
    Fatal(ServerMessage),
    /// The writer ended (the client is gone or left too much unread).
    WriterDone,
}

/// Reads frames and hands them to the core until the client closes, breaks
/// the protocol, or the writer ends. It never waits for the writer, so it
/// keeps reading while the client leaves the node's frames unread; it waits
/// only for room in the core's channel, and the core never waits for a
/// client.
async fn read_loop(
    frames: &mut FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    codec: Codec,
    conn: u64,
    core: &mpsc::Sender<ClientCmd>,
    writer: &mut JoinHandle<()>,
) -> ReadEnd {
    loop {
        let frame = tokio::select! {
            frame = frames.next() => frame,
            _ = &mut *writer => return ReadEnd::WriterDone,
        };
        match frame {
            None => return ReadEnd::Eof,
            Some(Ok(payload)) => match codec.decode::<ClientMessage>(&payload) {
                Ok(msg) => {
                    let msg = fit_to_codec(codec, msg);
                    if core.send(ClientCmd::Message { conn, msg }).await.is_err() {
                        return ReadEnd::Eof;
                    }
                }
                Err(e) => {
                    tracing::warn!(conn, error = %e, "undecodable frame on the socket; closing that connection");
                    return ReadEnd::Fatal(error(ErrorCode::BadFrame, e.to_string()));
                }
            },
            Some(Err(e)) if is_too_large(&e) => {
                tracing::warn!(
                    conn,
                    "oversized frame on the socket; closing that connection"
                );
                return ReadEnd::Fatal(error(
                    ErrorCode::FrameTooLarge,
                    format!("frame exceeds the maximum of {DEFAULT_MAX_FRAME} bytes"),
                ));
            }
            Some(Err(e)) => {
                tracing::debug!(conn, error = %e, "socket read failed");
                return ReadEnd::Eof;
            }
        }
    }
}

/// Why a connection's writer stopped.
enum WriteEnd {
    /// A write failed: the client is gone.
    Broken,
    /// The client left more than [`CLOSE_BYTES`] of answers unread.
    Overflow,
    /// The core dropped the connection's sender and everything was written.
    Done,
    /// The reader found a fatal error: write it and close.
    Fatal(ServerMessage),
    /// The reader is gone.
    ReaderGone,
}

/// Takes the core's messages into an [`Outbox`] as soon as they come and
/// writes them as fast as the client reads. Each write is one cancel-safe
/// `write` call, so taking messages never waits for the client.
async fn write_loop(
    mut wr: OwnedWriteHalf,
    codec: Codec,
    conn: u64,
    mut rx: mpsc::Receiver<ServerMessage>,
    mut fatal: oneshot::Receiver<ServerMessage>,
) {
    let mut out = Outbox::new(codec);
    // The unwritten rest of the frame being written.
    let mut current: Option<Bytes> = None;
    let mut core_open = true;
    let end = loop {
        if current.is_none() {
            current = out.pop();
        }
        if current.is_none() && !core_open {
            // A fatal error is sent before the core lets go of us.
            break match fatal.try_recv() {
                Ok(msg) => WriteEnd::Fatal(msg),
                Err(_) => WriteEnd::Done,
            };
        }
        let rest = current.clone();
        tokio::select! {
            biased;
            f = &mut fatal => break match f {
                Ok(msg) => WriteEnd::Fatal(msg),
                Err(_) => WriteEnd::ReaderGone,
            },
            m = rx.recv(), if core_open => match m {
                Some(msg) => match out.push(&msg) {
                    Push::Overflow => break WriteEnd::Overflow,
                    Push::Dropped if out.dropped == 1 => tracing::info!(
                        conn,
                        unsent = out.unsent_bytes(),
                        "socket client is not reading; dropping its status events (re-sent until acked)"
                    ),
                    Push::Dropped | Push::Queued | Push::Skipped => {}
                },
                None => core_open = false,
            },
            w = wr.write(rest.as_deref().unwrap_or_default()), if rest.is_some() => match w {
                Ok(n) if n > 0 => {
                    if let Some(c) = current.take()
                        && n < c.len()
                    {
                        current = Some(c.slice(n..));
                    }
                }
                _ => break WriteEnd::Broken,
            },
        }
    };
    match end {
        WriteEnd::Fatal(msg) => {
            // End the frame under way first, so that the error starts at
            // a frame boundary; then close this direction.
            let _ = tokio::time::timeout(LINGER, async {
                if let Some(rest) = current {
                    wr.write_all(&rest).await?;
                }
                if let Some(frame) = encode_frame(codec, &msg) {
                    wr.write_all(&frame).await?;
                }
                wr.shutdown().await
            })
            .await;
        }
        WriteEnd::Overflow => tracing::warn!(
            conn,
            unsent = out.unsent_bytes(),
            "socket client left over {CLOSE_BYTES} bytes of answers unread; closing that connection"
        ),
        WriteEnd::Broken | WriteEnd::Done | WriteEnd::ReaderGone => {}
    }
    if out.dropped > 0 {
        tracing::info!(
            conn,
            dropped = out.dropped,
            "status events were dropped for a client that did not read; they are re-sent until acked"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::task::{TaskState, TaskStatus};
    use agora_protocol::wire::{StatusEvent, Submitted};
    use agora_protocol::{FrameworkId, TaskId};

    fn status(seq: u64) -> ServerMessage {
        let task_id = TaskId::new(format!("fw-00000000@n1.{seq}")).unwrap();
        ServerMessage::Status(StatusEvent {
            seq,
            name: "job".into(),
            status: TaskStatus::new(task_id, TaskState::Failed, None),
        })
    }

    fn answer(request_id: u64) -> ServerMessage {
        let fw = FrameworkId::new("fw-00000000@n1").unwrap();
        let task_ids = (0..100)
            .map(|i| TaskId::new(format!("{fw}.{i}")).unwrap())
            .collect();
        ServerMessage::Submitted(Submitted {
            request_id,
            task_ids,
        })
    }

    /// Pushes `msg` until the outbox stops taking it; returns how many it took.
    fn fill(out: &mut Outbox, msg: &ServerMessage, want: Push) -> usize {
        let mut n = 0;
        loop {
            let p = out.push(msg);
            if p != Push::Queued {
                assert_eq!(p, want);
                return n;
            }
            n += 1;
        }
    }

    #[test]
    fn statuses_are_dropped_past_their_bound_and_answers_still_fit() {
        let mut out = Outbox::new(Codec::Postcard);
        let n = fill(&mut out, &status(1), Push::Dropped);
        assert!(n > 1000, "{n}");
        assert!(out.unsent_bytes() <= STATUS_DROP_BYTES);
        assert_eq!(out.dropped, 1);
        // Seq-0 events (reconcile answers) and answers are not dropped.
        assert_eq!(out.push(&status(0)), Push::Queued);
        assert_eq!(out.push(&answer(1)), Push::Queued);
        // Writing makes room for statuses again.
        while out.unsent_bytes() > STATUS_DROP_BYTES / 2 {
            assert!(out.pop().is_some());
        }
        assert_eq!(out.push(&status(2)), Push::Queued);
    }

    #[test]
    fn answers_left_unread_past_the_bound_close_the_connection() {
        let mut out = Outbox::new(Codec::Json);
        fill(&mut out, &answer(1), Push::Overflow);
        assert!(out.unsent_bytes() <= CLOSE_BYTES);
        assert!(out.unsent_bytes() > CLOSE_BYTES - 64 * 1024);
    }

    #[test]
    fn an_offers_frame_replaces_the_unsent_one_and_goes_first() {
        let mut out = Outbox::new(Codec::Json);
        assert_eq!(out.push(&answer(1)), Push::Queued);
        assert_eq!(out.push(&ServerMessage::Offers(Vec::new())), Push::Queued);
        assert_eq!(out.push(&ServerMessage::Offers(Vec::new())), Push::Queued);
        let first = out.pop().unwrap();
        assert_eq!(&first[4..], br#"{"offers":[]}"#);
        let second = out.pop().unwrap();
        assert!(second[4..].starts_with(br#"{"submitted""#));
        assert!(out.pop().is_none());
        assert_eq!(out.unsent_bytes(), 0);
    }

    #[test]
    fn frames_carry_their_length() {
        let mut out = Outbox::new(Codec::Json);
        out.push(&ServerMessage::Offers(Vec::new()));
        let f = out.pop().unwrap();
        assert_eq!(
            u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize,
            f.len() - 4
        );
    }
}
