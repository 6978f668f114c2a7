//! The framework socket: a Unix listener (mode 0600) and, per connection, a
//! reader and a writer that never wait for each other. The reader does the
//! framing, the handshake and the codec and hands decoded
//! [`ClientMessage`]s to the agent's core over a bounded channel; the writer
//! takes what the core answers from the connection's bounded channel into
//! an [`Outbox`] and writes it as fast as the client reads.
//!
//! Frames are a big-endian `u32` length and a payload of at most
//! [`DEFAULT_MAX_FRAME`] bytes, read by [`crate::framing::FramedReader`]
//! and written as [`agora_protocol::codec::frame`] makes them. The
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

use crate::framing::{FramedReader, ReadError};
use crate::http::{EDGE, EdgeCounters};
use agora_protocol::NodeId;
use agora_protocol::codec::{Codec, DEFAULT_MAX_FRAME, HandshakeError};
use agora_protocol::wire::{
    ClientMessage, ErrorCode, ErrorReply, PROTOCOL_VERSION, ServerMessage, Welcome,
};
use anyhow::Context;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::bytes::Bytes;

mod outbox;
mod peer;

use outbox::encode_frame;
pub use outbox::{Outbox, Push};
pub use peer::{OperatorPolicy, Peer, share_with_group};

/// Messages from connection tasks to the core.
#[derive(Debug)]
pub enum ClientCmd {
    /// A client completed the handshake; `tx` carries answers to it.
    Open {
        /// Connection number.
        conn: u64,
        /// Where the core writes to this client.
        tx: mpsc::Sender<ServerMessage>,
        /// Who the client is (SO_PEERCRED) and whether it may act as the
        /// operator.
        peer: Peer,
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

/// Most connections served at once (docs/FRAMEWORK_API.md, "Limits").
/// A connection beyond it reads the client's handshake, answers `error`
/// `busy` (in the client's codec) naming the limit, and is closed; it is
/// counted in `agora_socket_connections_refused_total`.
pub const MAX_CONNECTIONS: usize = 1024;

/// Connections beyond [`MAX_CONNECTIONS`] that are being told so at once;
/// past this many (a flood) a new one is closed without an answer (and
/// still counted).
const MAX_REFUSING: usize = 64;

/// How long a refused connection may take to send its handshake.
const REFUSE_HANDSHAKE: Duration = Duration::from_secs(1);

/// Open files the agent wants: every socket and HTTP connection it serves
/// at once, and room for its own files, peers and task supervisors.
const WANTED_OPEN_FILES: u64 = 8192;

/// Largest log chunk sent to a JSON client. JSON writes each byte as up to
/// four characters (`255,`), so the node's 256 KiB cap could make a frame
/// over the 1 MiB limit; 192 KiB stays under it whatever the bytes are.
pub const JSON_MAX_LOG_CHUNK: u32 = 192 * 1024;

/// Decodes one request frame of a connection in `codec`, capped by
/// [`fit_to_codec`]: what the reader hands the core.
///
/// # Errors
/// The payload is not a [`ClientMessage`] in `codec` (the connection then
/// gets `bad_frame` and is closed).
pub(crate) fn decode_request(
    codec: Codec,
    payload: &[u8],
) -> Result<ClientMessage, agora_protocol::codec::CodecError> {
    codec
        .decode::<ClientMessage>(payload)
        .map(|msg| fit_to_codec(codec, msg))
}

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

/// Accepts connections forever, one task each (at most [`MAX_CONNECTIONS`];
/// see there for what a connection beyond it gets); `policy` says which
/// peers may act as the operator.
pub async fn serve(
    listener: UnixListener,
    node_id: NodeId,
    core: mpsc::Sender<ClientCmd>,
    policy: OperatorPolicy,
) {
    let policy = std::sync::Arc::new(policy);
    raise_open_files_limit();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let refusing = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING));
    let mut next_conn = 1u64;
    let mut last_refusal_log: Option<tokio::time::Instant> = None;
    let mut refused_since_log = 0u64;
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
            EdgeCounters::bump(&EDGE.socket_refused);
            refused_since_log += 1;
            if last_refusal_log.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY) {
                tracing::warn!(
                    refused = refused_since_log,
                    limit = MAX_CONNECTIONS,
                    "socket connections refused: {MAX_CONNECTIONS} are open (the limit); \
                     each refused client is told `busy`. Look for a framework that opens \
                     connections without closing them"
                );
                last_refusal_log = Some(tokio::time::Instant::now());
                refused_since_log = 0;
            }
            if let Ok(slot) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(slot);
                });
            }
            continue;
        };
        let conn = next_conn;
        next_conn += 1;
        let (node_id, core, policy) = (node_id.clone(), core.clone(), policy.clone());
        EDGE.socket_open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            connection(stream, conn, node_id, core, &policy).await;
            EdgeCounters::drop_one(&EDGE.socket_open);
            drop(permit);
        });
    }
}

/// Minimum time between two warnings about refused connections.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Tells a connection beyond [`MAX_CONNECTIONS`] that the node is full:
/// reads its handshake (briefly) to answer in its codec, then `busy`.
async fn refuse(stream: UnixStream) {
    let (rd, wr) = stream.into_split();
    let mut frames = FramedReader::new(rd, 256);
    let codec = match tokio::time::timeout(REFUSE_HANDSHAKE, frames.next()).await {
        Ok(Ok(Some(f))) => Codec::from_handshake(f).unwrap_or(Codec::Json),
        _ => Codec::Json,
    };
    let msg = error(
        ErrorCode::Busy,
        format!(
            "the node serves at most {MAX_CONNECTIONS} socket connections at once and all are \
             in use; retry later, and close connections you no longer need"
        ),
    );
    fail(frames, wr, codec, msg).await;
}

/// Raises the soft limit on open files towards [`WANTED_OPEN_FILES`] (as
/// far as the hard limit allows), so that the connection limits of the
/// socket and the HTTP server are reached before the process runs out of
/// descriptors; warns when the hard limit is lower.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    if soft >= WANTED_OPEN_FILES {
        return;
    }
    let hard = current.maximum.unwrap_or(u64::MAX);
    let wanted = WANTED_OPEN_FILES.min(hard);
    if wanted > soft {
        let raised = rustix::process::Rlimit {
            current: Some(wanted),
            maximum: current.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, soft, "cannot raise the open-files limit");
            return;
        }
        tracing::debug!(from = soft, to = wanted, "raised the open-files limit");
    }
    if wanted < WANTED_OPEN_FILES {
        tracing::warn!(
            limit = wanted,
            wanted = WANTED_OPEN_FILES,
            "the open-files limit is below what the connection limits need: under many \
             connections, accepting fails instead of answering `busy` / 503; raise it \
             (LimitNOFILE= in the systemd unit, or ulimit -n)"
        );
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error(ErrorReply {
        code,
        message: message.into(),
        request_id: None,
    })
}

/// Sends a fatal error on a connection that has not started its writer,
/// then reads and discards what the client is still sending (bounded,
/// briefly) so that it sees the error before the close.
async fn fail(
    frames: FramedReader<OwnedReadHalf>,
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

async fn connection(
    stream: UnixStream,
    conn: u64,
    node_id: NodeId,
    core: mpsc::Sender<ClientCmd>,
    policy: &OperatorPolicy,
) {
    let peer = policy.identify(&stream).await;
    let (rd, mut wr) = stream.into_split();
    let mut frames = FramedReader::new(rd, DEFAULT_MAX_FRAME);
    let handshake = match tokio::time::timeout(Duration::from_secs(30), frames.next()).await {
        Ok(Ok(Some(f))) => Codec::from_handshake(f),
        Ok(Err(ReadError::Frame(_))) => {
            EdgeCounters::bump(&EDGE.socket_frames_too_large);
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
    let codec = match handshake {
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
    if core.send(ClientCmd::Open { conn, tx, peer }).await.is_err() {
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
    frames: &mut FramedReader<OwnedReadHalf>,
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
            Ok(None) => return ReadEnd::Eof,
            Ok(Some(payload)) => match decode_request(codec, payload) {
                Ok(msg) => {
                    if core.send(ClientCmd::Message { conn, msg }).await.is_err() {
                        return ReadEnd::Eof;
                    }
                }
                Err(e) => {
                    tracing::warn!(conn, error = %e, "undecodable frame on the socket; closing that connection");
                    return ReadEnd::Fatal(error(ErrorCode::BadFrame, e.to_string()));
                }
            },
            Err(ReadError::Frame(_)) => {
                EdgeCounters::bump(&EDGE.socket_frames_too_large);
                tracing::warn!(
                    conn,
                    "oversized frame on the socket; closing that connection"
                );
                return ReadEnd::Fatal(error(
                    ErrorCode::FrameTooLarge,
                    format!("frame exceeds the maximum of {DEFAULT_MAX_FRAME} bytes"),
                ));
            }
            Err(e) => {
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
