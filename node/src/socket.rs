//! The framework socket: a Unix listener (mode 0600) and one task per
//! connection that does framing, the handshake and the codec, and hands
//! decoded [`ClientMessage`]s to the agent's core over a bounded channel.
//!
//! Frames are a big-endian `u32` length and a payload of at most
//! [`DEFAULT_MAX_FRAME`] bytes (tokio-util's `LengthDelimitedCodec`). The
//! first frame is the handshake (`agora/1 json` or `agora/1 postcard`); the
//! node answers `welcome` in that codec. A bad handshake gets an error in
//! JSON and the connection is closed; a frame that does not decode gets
//! `bad_frame`, an oversized one `frame_too_large`, and that connection (only
//! it) is closed. docs/FRAMEWORK_API.md is the full specification.

use agora_protocol::NodeId;
use agora_protocol::codec::{Codec, DEFAULT_MAX_FRAME, HandshakeError};
use agora_protocol::wire::{
    ClientMessage, ErrorCode, ErrorReply, PROTOCOL_VERSION, ServerMessage, Welcome,
};
use anyhow::Context;
use futures::{SinkExt, StreamExt};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodec, LengthDelimitedCodecError};

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

/// Messages queued to one client before it is considered too slow and cut off.
pub const CLIENT_QUEUE: usize = 4096;

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

async fn send(
    framed: &mut Framed<UnixStream, LengthDelimitedCodec>,
    codec: Codec,
    msg: &ServerMessage,
) -> bool {
    match codec.encode(msg) {
        Ok(bytes) if bytes.len() <= DEFAULT_MAX_FRAME => {
            framed.send(Bytes::from(bytes)).await.is_ok()
        }
        Ok(bytes) => {
            tracing::warn!(
                len = bytes.len(),
                "answer too large for one frame; sending an error instead"
            );
            let e = error(
                ErrorCode::Internal,
                "the answer exceeded the maximum frame size",
            );
            match codec.encode(&e) {
                Ok(b) => framed.send(Bytes::from(b)).await.is_ok(),
                Err(_) => false,
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode an answer");
            true
        }
    }
}

/// Sends a fatal error, then reads and discards what the client is still
/// sending (bounded, briefly) so that it sees the error before the close.
async fn fail(
    mut framed: Framed<UnixStream, LengthDelimitedCodec>,
    codec: Codec,
    msg: ServerMessage,
) {
    let _ = send(&mut framed, codec, &msg).await;
    let mut stream = framed.into_inner();
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 8192];
    let mut budget: usize = 4 * DEFAULT_MAX_FRAME;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while budget > 0 {
            match stream.read(&mut sink).await {
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
    let mut framed = Framed::new(stream, frame_codec());
    let first = match tokio::time::timeout(Duration::from_secs(30), framed.next()).await {
        Ok(Some(Ok(f))) => f,
        Ok(Some(Err(e))) if is_too_large(&e) => {
            tracing::warn!(conn, "socket client sent an oversized handshake; closing");
            let msg = error(
                ErrorCode::FrameTooLarge,
                format!("frame exceeds the maximum of {DEFAULT_MAX_FRAME} bytes"),
            );
            return fail(framed, Codec::Json, msg).await;
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
            return fail(framed, Codec::Json, error(code, e.to_string())).await;
        }
    };
    let welcome = ServerMessage::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        node_id,
    });
    if !send(&mut framed, codec, &welcome).await {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<ServerMessage>(CLIENT_QUEUE);
    if core.send(ClientCmd::Open { conn, tx }).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            frame = framed.next() => match frame {
                None => break,
                Some(Ok(payload)) => match codec.decode::<ClientMessage>(&payload) {
                    Ok(msg) => {
                        let msg = fit_to_codec(codec, msg);
                        if core.send(ClientCmd::Message { conn, msg }).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(conn, error = %e, "undecodable frame on the socket; closing that connection");
                        let _ = core.send(ClientCmd::Closed { conn }).await;
                        return fail(framed, codec, error(ErrorCode::BadFrame, e.to_string())).await;
                    }
                },
                Some(Err(e)) if is_too_large(&e) => {
                    tracing::warn!(conn, "oversized frame on the socket; closing that connection");
                    let _ = core.send(ClientCmd::Closed { conn }).await;
                    let msg = error(
                        ErrorCode::FrameTooLarge,
                        format!("frame exceeds the maximum of {DEFAULT_MAX_FRAME} bytes"),
                    );
                    return fail(framed, codec, msg).await;
                }
                Some(Err(e)) => {
                    tracing::debug!(conn, error = %e, "socket read failed");
                    break;
                }
            },
            out = rx.recv() => match out {
                Some(msg) => {
                    if !send(&mut framed, codec, &msg).await {
                        break;
                    }
                }
                // The core dropped us (too slow, or shutting down).
                None => break,
            },
        }
    }
    let _ = core.send(ClientCmd::Closed { conn }).await;
}
