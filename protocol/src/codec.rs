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

/// Bytes a [`FrameReader`] offers to read into ([`FrameReader::unfilled`])
/// while it does not yet know how long the next frame is.
pub const READ_CHUNK: usize = 8 * 1024;

/// A buffer larger than this (grown for a big frame) is let go by
/// [`FrameReader::shrink`] once it is empty, so that a connection that once
/// carried a big frame does not keep its memory while idle.
const KEEP: usize = 64 * 1024;

/// The smallest allocation: most messages fit it, so a reader used for one
/// small frame allocates once, not once for the prefix and again for the
/// payload.
const MIN_ALLOC: usize = 256;

/// Splits a byte stream into frames, refusing oversized ones before buffering them.
///
/// It is the one frame reader of the whole system; the node's sockets and
/// peer streams drive it (node/src/framing.rs). Bytes come in either by
/// [`push`](FrameReader::push) (a copy) or, without a copy, by reading
/// straight into [`unfilled`](FrameReader::unfilled) and then calling
/// [`filled`](FrameReader::filled). [`needed`](FrameReader::needed) says
/// how many bytes the next frame still lacks, and
/// [`unfilled_exact`](FrameReader::unfilled_exact) is room for just those,
/// for a reader that must never read past a frame.
///
/// Frames come out as slices of the reader's buffer, without a copy. The
/// buffer is compacted when the free room at its end runs short, not on
/// every frame. A reader that takes every complete frame before it reads
/// more never holds more than one frame and [`READ_CHUNK`] bytes.
///
/// ```
/// use agora_protocol::codec::{FrameReader, frame};
/// let bytes = frame(b"hello", 64).unwrap();
/// let mut reader = FrameReader::new(64);
/// assert_eq!(reader.needed(), Ok(4)); // the length prefix first
/// let room = reader.unfilled();
/// room[..6].copy_from_slice(&bytes[..6]);
/// reader.filled(6);
/// assert_eq!(reader.needed(), Ok(3)); // "llo"
/// reader.push(&bytes[6..]);
/// assert_eq!(reader.next_frame(), Ok(Some(&b"hello"[..])));
/// assert_eq!(reader.next_frame(), Ok(None));
/// ```
#[derive(Debug)]
pub struct FrameReader {
    /// `start..end` is what has not been returned yet, `end..` (zeroed or
    /// old bytes) is room to read into; the capacity past the length is
    /// room not yet zeroed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
}

impl FrameReader {
    /// A reader that accepts payloads of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max,
        }
    }

    /// The largest payload this reader accepts.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Appends bytes read from the stream.
    #[inline]
    pub fn push(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Bytes buffered and not yet returned.
    #[inline]
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// How many more bytes the next frame needs: 0 when
    /// [`next_frame`](FrameReader::next_frame) will return it. Until the
    /// length prefix is complete, this is what the prefix lacks.
    ///
    /// # Errors
    /// [`CodecError::FrameTooLarge`] when the buffered prefix announces
    /// more than the maximum.
    #[inline]
    pub fn needed(&self) -> Result<usize, CodecError> {
        let have = self.buffered();
        match self.announced() {
            None => Ok(LENGTH_PREFIX - have),
            Some(len) if len > self.max => Err(CodecError::FrameTooLarge { len, max: self.max }),
            Some(len) => Ok((LENGTH_PREFIX + len).saturating_sub(have)),
        }
    }

    /// The next complete frame's payload, `None` if more bytes are needed.
    /// The slice borrows the reader's buffer: it is valid until the reader
    /// is next changed.
    ///
    /// # Errors
    /// [`CodecError::FrameTooLarge`] as soon as a prefix announces more than
    /// the maximum; the stream cannot be resynchronised after that.
    #[inline]
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, CodecError> {
        if self.needed()? > 0 {
            return Ok(None);
        }
        let len = self.announced().unwrap_or_default();
        let at = self.start + LENGTH_PREFIX;
        self.start = at + len;
        Ok(Some(&self.buf[at..at + len]))
    }

    /// Room at the end of the buffer to read stream bytes into, then report
    /// with [`filled`](FrameReader::filled). It holds what the next frame
    /// [`needed`](FrameReader::needed), at least [`READ_CHUNK`] bytes, but
    /// no more than the frame's bytes already buffered: a big frame's
    /// buffer doubles as its bytes arrive, so a prefix alone (a client that
    /// announces 1 MiB and sends nothing more) costs [`READ_CHUNK`], not
    /// the frame it announces. A read of many small frames needs one call.
    #[inline]
    pub fn unfilled(&mut self) -> &mut [u8] {
        // A prefix over the maximum is the caller's to see in `needed`;
        // here it only must not size the buffer.
        let needed = self.growth(self.needed().unwrap_or(0));
        self.reserve(needed.max(READ_CHUNK));
        &mut self.buf[self.end..]
    }

    /// How much of `needed` to make room for now: at most as much again as
    /// is buffered (and at least [`READ_CHUNK`]).
    #[inline]
    fn growth(&self, needed: usize) -> usize {
        needed.min(self.buffered().max(READ_CHUNK))
    }

    /// Room for exactly the bytes the next frame still
    /// [`needed`](FrameReader::needed) (empty when a frame is complete or
    /// the prefix is over the maximum): a reader that fills it never reads
    /// past the frame, and a reader used for one frame allocates only what
    /// that frame needs, at once. Unlike [`unfilled`](FrameReader::unfilled)
    /// it takes a prefix at its word: it serves peers, who passed the
    /// cluster key and noise before their first byte reaches it (growing
    /// as bytes arrive made a fresh reader's 1 MiB frame 6 times slower).
    #[inline]
    pub fn unfilled_exact(&mut self) -> &mut [u8] {
        let needed = self.needed().unwrap_or(0);
        self.reserve(needed);
        &mut self.buf[self.end..self.end + needed]
    }

    /// Records that the first `n` bytes of [`unfilled`](FrameReader::unfilled)
    /// or [`unfilled_exact`](FrameReader::unfilled_exact) now hold stream
    /// bytes.
    ///
    /// # Panics
    /// If `n` is larger than the room at the end of the buffer.
    #[inline]
    pub fn filled(&mut self, n: usize) {
        assert!(
            n <= self.buf.len() - self.end,
            "filled({n}) with only {} bytes of room",
            self.buf.len() - self.end
        );
        self.end += n;
    }

    /// Lets go of a buffer grown past 64 KiB for a big frame, if nothing
    /// is buffered. A stream reader calls it when the stream has nothing
    /// more to read for now: an idle connection then holds little memory,
    /// while back-to-back big frames reuse one buffer.
    pub fn shrink(&mut self) {
        if self.start == self.end && self.buf.capacity() > KEEP {
            *self = FrameReader::new(self.max);
        }
    }

    /// The length the buffered prefix announces, if it is complete.
    #[inline]
    fn announced(&self) -> Option<usize> {
        if self.buffered() < LENGTH_PREFIX {
            return None;
        }
        let mut len_bytes = [0u8; LENGTH_PREFIX];
        len_bytes.copy_from_slice(&self.buf[self.start..self.start + LENGTH_PREFIX]);
        Some(u32::from_be_bytes(len_bytes) as usize)
    }

    /// Makes room for `want` more bytes at the end: in place if there is
    /// room, else by moving the unread bytes to the front, else by growing
    /// to exactly what is needed.
    #[inline]
    fn reserve(&mut self, want: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end < want {
            self.make_room(want);
        }
    }

    /// [`FrameReader::reserve`]'s slow part: compact, then grow if that
    /// was not enough.
    fn make_room(&mut self, want: usize) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let len = self.end + want;
        if self.buf.len() < len {
            if self.buf.capacity() < len {
                // Allocate (at least MIN_ALLOC) and zero only what is
                // asked for: a reader used for one small frame then
                // allocates once and zeroes the frame's bytes only.
                let mut bigger = Vec::with_capacity(len.max(MIN_ALLOC));
                bigger.extend_from_slice(&self.buf[..self.end]);
                self.buf = bigger;
            }
            self.buf.resize(len, 0);
        }
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
        assert_eq!(r.next_frame(), Ok(Some(&b"abc"[..])));
        assert_eq!(r.next_frame(), Ok(Some(&b""[..])));
        assert_eq!(r.next_frame(), Ok(None));
        assert!(frame(&[0; 9], 8).is_err());
        r.push(&1000u32.to_be_bytes());
        assert_eq!(
            r.next_frame(),
            Err(CodecError::FrameTooLarge { len: 1000, max: 8 })
        );
        assert_eq!(
            r.needed(),
            Err(CodecError::FrameTooLarge { len: 1000, max: 8 })
        );
    }

    #[test]
    fn a_frame_fed_one_byte_at_a_time_comes_out_once() {
        let bytes = frame(b"split into many tiny writes", 64).unwrap();
        let mut r = FrameReader::new(64);
        for (i, b) in bytes.iter().enumerate() {
            assert_eq!(r.next_frame(), Ok(None), "after {i} bytes");
            let want = if i < LENGTH_PREFIX {
                LENGTH_PREFIX - i
            } else {
                bytes.len() - i
            };
            assert_eq!(r.needed(), Ok(want), "after {i} bytes");
            r.unfilled()[0] = *b;
            r.filled(1);
        }
        assert_eq!(r.needed(), Ok(0));
        assert_eq!(
            r.next_frame(),
            Ok(Some(&b"split into many tiny writes"[..]))
        );
        assert_eq!(r.next_frame(), Ok(None));
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn a_frame_of_exactly_the_maximum_is_accepted() {
        let max = 3 * READ_CHUNK + 5;
        let payload: Vec<u8> = (0..max).map(|i| i as u8).collect();
        let bytes = frame(&payload, max).unwrap();
        let mut r = FrameReader::new(max);
        r.push(&bytes);
        assert_eq!(r.next_frame(), Ok(Some(&payload[..])));
        r.push(&((max + 1) as u32).to_be_bytes());
        assert_eq!(
            r.next_frame(),
            Err(CodecError::FrameTooLarge { len: max + 1, max })
        );
    }

    /// Reads `stream` into `r` as a socket would: into `unfilled`, at
    /// most `chunk` bytes a time, taking every complete frame after each
    /// read; returns the payloads and the largest buffer seen.
    fn read_all(r: &mut FrameReader, stream: &[u8], chunk: usize) -> (Vec<Vec<u8>>, usize) {
        let (mut out, mut at, mut largest) = (Vec::new(), 0, 0);
        while at < stream.len() {
            let room = r.unfilled();
            let n = room.len().min(chunk).min(stream.len() - at);
            room[..n].copy_from_slice(&stream[at..at + n]);
            r.filled(n);
            at += n;
            largest = largest.max(r.buf.capacity());
            while let Some(f) = r.next_frame().unwrap() {
                out.push(f.to_vec());
            }
        }
        (out, largest)
    }

    #[test]
    fn reading_into_the_buffer_compacts_and_stays_within_a_frame_and_a_chunk() {
        let max = 100_000;
        let payloads: Vec<Vec<u8>> = [0, 1, 7, max, 3, READ_CHUNK, max - 1, 2, max]
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![i as u8; n])
            .collect();
        let stream: Vec<u8> = payloads
            .iter()
            .flat_map(|p| frame(p, max).unwrap())
            .collect();
        for chunk in [1, 3, 4096, READ_CHUNK + 1, 65_537, usize::MAX] {
            let mut r = FrameReader::new(max);
            let (got, largest) = read_all(&mut r, &stream, chunk);
            assert_eq!(got, payloads, "chunk {chunk}");
            assert!(
                largest <= LENGTH_PREFIX + max + READ_CHUNK,
                "chunk {chunk}: buffer of {largest} bytes"
            );
            assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn a_big_buffer_is_reused_and_let_go_by_shrink_once_empty() {
        let big = frame(&vec![1; 1 << 20], 1 << 20).unwrap();
        let mut r = FrameReader::new(1 << 20);
        r.push(&big);
        assert!(r.buf.capacity() > KEEP);
        r.push(&big[..100]);
        // Not empty: shrink keeps what is buffered.
        r.shrink();
        assert_eq!(r.next_frame().unwrap().map(<[u8]>::len), Some(1 << 20));
        r.shrink();
        assert!(r.buf.capacity() > KEEP);
        r.push(&big[100..]);
        assert_eq!(r.next_frame().unwrap().map(<[u8]>::len), Some(1 << 20));
        // The next frame reuses the buffer ...
        assert!(r.unfilled().len() >= 1 << 20);
        // ... until the reader is shrunk while empty.
        r.shrink();
        assert_eq!(r.buf.capacity(), 0);
        assert_eq!(r.unfilled().len(), READ_CHUNK);
        assert!(r.buf.capacity() <= KEEP);
    }

    #[test]
    fn unfilled_offers_what_the_announced_frame_needs() {
        let mut r = FrameReader::new(1 << 20);
        r.push(&(200_000u32).to_be_bytes());
        r.push(&[9; 10]);
        assert_eq!(r.needed(), Ok(200_000 - 10));
        // Issue 12: the buffer grows as the frame's bytes arrive, not on the
        // word of its prefix (500 clients that each sent a prefix of 1 MiB
        // took an agent from 18 MB to 520 MB).
        assert_eq!(r.unfilled().len(), READ_CHUNK);
        assert!(r.buf.capacity() < 2 * READ_CHUNK);
        let mut got = 14;
        while r.needed() != Ok(0) {
            let room = r.unfilled();
            assert!(
                room.len() <= (got.max(READ_CHUNK)) + READ_CHUNK,
                "{}",
                room.len()
            );
            let n = room.len().min(200_004 - got);
            room[..n].fill(9);
            r.filled(n);
            got += n;
        }
        assert_eq!(r.next_frame().unwrap().map(<[u8]>::len), Some(200_000));
        // A prefix over the maximum does not make the buffer grow.
        let mut r = FrameReader::new(16);
        r.push(&u32::MAX.to_be_bytes());
        assert_eq!(r.unfilled().len(), READ_CHUNK);
        assert!(r.needed().is_err());
    }

    #[test]
    fn unfilled_exact_is_what_the_frame_still_needs() {
        let bytes = frame(&[5; 300], 1024).unwrap();
        let mut r = FrameReader::new(1024);
        let mut at = 0;
        while r.needed() != Ok(0) {
            let room = r.unfilled_exact();
            assert_eq!(
                room.len(),
                if at < LENGTH_PREFIX { 4 - at } else { 304 - at }
            );
            let n = room.len().min(7);
            room[..n].copy_from_slice(&bytes[at..at + n]);
            r.filled(n);
            at += n;
        }
        assert_eq!(r.buf.len(), 304, "only the frame's bytes were zeroed");
        assert_eq!(r.buf.capacity(), MIN_ALLOC.max(304), "allocated once");
        assert!(r.unfilled_exact().is_empty());
        assert_eq!(r.next_frame(), Ok(Some(&[5; 300][..])));
        let mut r = FrameReader::new(16);
        r.push(&17u32.to_be_bytes());
        assert!(r.unfilled_exact().is_empty());
    }

    #[test]
    #[should_panic(expected = "filled")]
    fn filling_more_than_the_room_panics() {
        let mut r = FrameReader::new(16);
        let room = r.unfilled().len();
        r.filled(room + 1);
    }
}
