//! Framing and encoding of every message.
//!
//! On every stream (peer connections and the framework socket) a message is
//! one **frame**: a big-endian `u32` length followed by that many payload
//! bytes, never more than the stream's maximum frame size
//! ([`DEFAULT_MAX_FRAME`] unless configured). The payload is the message in
//! one of two [`Codec`]s:
//!
//! - **postcard**: compact and specified; node to node always, and for
//!   frameworks written in Rust;
//! - **JSON** (serde's externally tagged form): for frameworks in any language.
//!
//! On the framework socket the first frame is the handshake, ASCII text
//! `agora/1 json` or `agora/1 postcard`: it names the protocol version and
//! picks the codec for the rest of the connection in both directions.
//!
//! Decoding never panics, whatever the bytes: every failure is a [`CodecError`].
//!
//! ```
//! use agora_protocol::codec::{Codec, FrameReader, frame};
//! use agora_protocol::wire::{ClientMessage, TaskQuery};
//! let msg = ClientMessage::ListTasks(TaskQuery::all(7));
//! let bytes = frame(&Codec::Json.encode(&msg).unwrap(), 1024).unwrap();
//! let mut reader = FrameReader::new(1024);
//! reader.push(&bytes);
//! let payload = reader.next_frame().unwrap().unwrap();
//! assert_eq!(Codec::Json.decode::<ClientMessage>(&payload).unwrap(), msg);
//! ```

use crate::wire::PROTOCOL_VERSION;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

/// Default largest frame payload, in bytes (1 MiB).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Bytes in the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// A payload encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// postcard (binary).
    Postcard,
    /// JSON.
    Json,
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Postcard => "postcard",
            Codec::Json => "json",
        })
    }
}

/// Why bytes could not become a message, or a message bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A frame announced more bytes than allowed.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload is not a valid message in this codec.
    #[error("cannot decode {codec} payload: {detail}")]
    Malformed {
        /// The codec used.
        codec: Codec,
        /// The decoder's words.
        detail: String,
    },
    /// A postcard payload had bytes after the message.
    #[error("postcard payload has {extra} bytes after the message")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Why a handshake frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not of the form `agora/VERSION CODEC`.
    #[error(
        "the first frame must be the handshake 'agora/1 json' or 'agora/1 postcard'; got {got:?}"
    )]
    Malformed {
        /// The start of what arrived.
        got: String,
    },
    /// A version this node does not speak.
    #[error("protocol version {got} is not supported; this node speaks version {PROTOCOL_VERSION}")]
    UnsupportedVersion {
        /// The version asked for.
        got: u32,
    },
    /// A codec this node does not know.
    #[error("unknown codec {got:?}; use json or postcard")]
    UnknownCodec {
        /// The codec asked for.
        got: String,
    },
}

impl Codec {
    /// Encodes a message as a payload (no length prefix).
    ///
    /// # Errors
    /// [`CodecError::Encode`] if serde refuses the value (not expected for
    /// the wire types).
    pub fn encode<T: Serialize>(self, msg: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            Codec::Postcard => {
                postcard::to_stdvec(msg).map_err(|e| CodecError::Encode(e.to_string()))
            }
            Codec::Json => serde_json::to_vec(msg).map_err(|e| CodecError::Encode(e.to_string())),
        }
    }

    /// Decodes a payload (no length prefix).
    ///
    /// # Errors
    /// [`CodecError::Malformed`] or [`CodecError::TrailingBytes`]; never panics.
    pub fn decode<T: DeserializeOwned>(self, payload: &[u8]) -> Result<T, CodecError> {
        match self {
            Codec::Postcard => {
                let (msg, rest) =
                    postcard::take_from_bytes(payload).map_err(|e| CodecError::Malformed {
                        codec: self,
                        detail: e.to_string(),
                    })?;
                if rest.is_empty() {
                    Ok(msg)
                } else {
                    Err(CodecError::TrailingBytes { extra: rest.len() })
                }
            }
            Codec::Json => serde_json::from_slice(payload).map_err(|e| CodecError::Malformed {
                codec: self,
                detail: e.to_string(),
            }),
        }
    }

    /// The handshake frame's payload that selects this codec.
    pub fn handshake(self) -> Vec<u8> {
        format!("agora/{PROTOCOL_VERSION} {self}").into_bytes()
    }

    /// Reads a handshake payload.
    ///
    /// # Errors
    /// [`HandshakeError`] saying what was wrong and what to send instead.
    pub fn from_handshake(payload: &[u8]) -> Result<Codec, HandshakeError> {
        let malformed = || HandshakeError::Malformed {
            got: String::from_utf8_lossy(&payload[..payload.len().min(40)]).into_owned(),
        };
        let text = std::str::from_utf8(payload).map_err(|_| malformed())?;
        let (proto, codec) = text.trim().split_once(' ').ok_or_else(malformed)?;
        let version = proto.strip_prefix("agora/").ok_or_else(malformed)?;
        let version: u32 = version.parse().map_err(|_| malformed())?;
        if version != PROTOCOL_VERSION {
            return Err(HandshakeError::UnsupportedVersion { got: version });
        }
        match codec.trim() {
            "json" => Ok(Codec::Json),
            "postcard" => Ok(Codec::Postcard),
            other => Err(HandshakeError::UnknownCodec {
                got: other.chars().take(40).collect(),
            }),
        }
    }
}

/// Puts the length prefix in front of a payload.
///
/// # Errors
/// [`CodecError::FrameTooLarge`] when the payload exceeds `max`.
pub fn frame(payload: &[u8], max: usize) -> Result<Vec<u8>, CodecError> {
    if payload.len() > max || u32::try_from(payload.len()).is_err() {
        return Err(CodecError::FrameTooLarge {
            len: payload.len(),
            max,
        });
    }
    let mut out = Vec::with_capacity(LENGTH_PREFIX + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Splits a byte stream into frames, refusing oversized ones before buffering them.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    max: usize,
}

impl FrameReader {
    /// A reader that accepts payloads of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameReader {
            buf: Vec::new(),
            max,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame's payload, `None` if more bytes are needed.
    ///
    /// # Errors
    /// [`CodecError::FrameTooLarge`] as soon as a prefix announces more than
    /// the maximum; the stream cannot be resynchronised after that.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, CodecError> {
        let Some(prefix) = self.buf.get(..LENGTH_PREFIX) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; LENGTH_PREFIX];
        len_bytes.copy_from_slice(prefix);
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > self.max {
            return Err(CodecError::FrameTooLarge { len, max: self.max });
        }
        if self.buf.len() < LENGTH_PREFIX + len {
            return Ok(None);
        }
        let payload = self.buf[LENGTH_PREFIX..LENGTH_PREFIX + len].to_vec();
        self.buf.drain(..LENGTH_PREFIX + len);
        Ok(Some(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_picks_codec_and_checks_version() {
        assert_eq!(Codec::from_handshake(b"agora/1 json"), Ok(Codec::Json));
        assert_eq!(
            Codec::from_handshake(&Codec::Postcard.handshake()),
            Ok(Codec::Postcard)
        );
        assert_eq!(
            Codec::from_handshake(b"agora/2 json"),
            Err(HandshakeError::UnsupportedVersion { got: 2 })
        );
        assert!(matches!(
            Codec::from_handshake(b"agora/1 xml"),
            Err(HandshakeError::UnknownCodec { .. })
        ));
        assert!(matches!(
            Codec::from_handshake(b"\xff\x00garbage"),
            Err(HandshakeError::Malformed { .. })
        ));
    }

    #[test]
    fn frames_split_and_oversize_is_refused() {
        let mut r = FrameReader::new(8);
        let a = frame(b"abc", 8).unwrap();
        let b = frame(b"", 8).unwrap();
        let mut all = a.clone();
        all.extend_from_slice(&b);
        r.push(&all[..2]);
        assert_eq!(r.next_frame(), Ok(None));
        r.push(&all[2..]);
        assert_eq!(r.next_frame(), Ok(Some(b"abc".to_vec())));
        assert_eq!(r.next_frame(), Ok(Some(Vec::new())));
        assert_eq!(r.next_frame(), Ok(None));
        assert!(frame(&[0; 9], 8).is_err());
        r.push(&1000u32.to_be_bytes());
        assert_eq!(
            r.next_frame(),
            Err(CodecError::FrameTooLarge { len: 1000, max: 8 })
        );
    }
}
