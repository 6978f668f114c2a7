//! Frames on the node's byte streams: the async side of
//! [`agora_protocol::codec`]'s one framing (a big-endian `u32` length, then
//! that many payload bytes). The framework socket, the socket client and
//! the peer codec all read and write frames through here, so there is one
//! framing in the whole system and its rules (the limit is checked on the
//! prefix, before any payload is buffered) live in the protocol crate.
//!
//! - [`FramedReader`] splits a tokio stream (the framework socket, on both
//!   sides) into frames. It reads as much as the stream has, so many small
//!   frames cost one read, and its [`next`](FramedReader::next) is
//!   cancel-safe: use it inside `select!`.
//! - [`read_frame`] reads one frame from a futures stream (a libp2p
//!   request-response stream) and never reads a byte past it.
//! - [`write_frame`] writes one frame to a futures stream. The socket's
//!   writers put [`frame`]'s bytes in their own queues instead.
//!
//! ```no_run
//! # async fn example(stream: tokio::net::UnixStream) -> Result<(), agora_node::framing::ReadError> {
//! use agora_node::framing::FramedReader;
//! use agora_protocol::codec::DEFAULT_MAX_FRAME;
//! let mut frames = FramedReader::new(stream, DEFAULT_MAX_FRAME);
//! while let Some(payload) = frames.next().await? {
//!     println!("a frame of {} bytes", payload.len());
//! }
//! # Ok(()) }
//! ```

use agora_protocol::codec::{CodecError, FrameReader, frame};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A prefix announced more than the maximum. Nothing of that frame was
    /// buffered, and the stream cannot be read further.
    #[error(transparent)]
    Frame(#[from] CodecError),
    /// The stream ended in the middle of a frame.
    #[error("the stream ended {buffered} bytes into a frame")]
    Truncated {
        /// Bytes of the unfinished frame that had arrived.
        buffered: usize,
    },
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> io::Error {
        match e {
            ReadError::Io(e) => e,
            ReadError::Frame(e) => io::Error::new(io::ErrorKind::InvalidData, e),
            e @ ReadError::Truncated { .. } => io::Error::new(io::ErrorKind::UnexpectedEof, e),
        }
    }
}

/// Reads into `frames` until it holds a whole frame (true) or the stream
/// ends at a frame boundary (false). With `exact`, each read asks only for
/// what the frame still needs, so nothing past it is read.
///
/// Cancel-safe as long as `read` is: a poll either keeps the bytes it read
/// in `frames` or reads none.
async fn fill(
    frames: &mut FrameReader,
    exact: bool,
    mut read: impl FnMut(&mut Context<'_>, &mut [u8]) -> Poll<io::Result<usize>>,
) -> Result<bool, ReadError> {
    poll_fn(|cx| {
        loop {
            let needed = frames.needed()?;
            if needed == 0 {
                return Poll::Ready(Ok(true));
            }
            let room = if exact {
                frames.unfilled_exact()
            } else {
                frames.unfilled()
            };
            let n = match read(cx, room) {
                Poll::Pending => {
                    // Nothing to read for now: an idle stream keeps no
                    // big buffer.
                    frames.shrink();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Ready(Ok(n)) => n,
            };
            if n == 0 {
                return Poll::Ready(match frames.buffered() {
                    0 => Ok(false),
                    buffered => Err(ReadError::Truncated { buffered }),
                });
            }
            frames.filled(n);
        }
    })
    .await
}

/// A tokio stream split into frames of at most a given size.
#[derive(Debug)]
pub struct FramedReader<R> {
    io: R,
    frames: FrameReader,
}

impl<R: tokio::io::AsyncRead + Unpin> FramedReader<R> {
    /// Frames of at most `max` payload bytes read from `io`.
    pub fn new(io: R, max: usize) -> Self {
        FramedReader {
            io,
            frames: FrameReader::new(max),
        }
    }

    /// The next frame's payload, or `None` when the stream ended cleanly
    /// (between frames). The slice is valid until the next call.
    ///
    /// Cancel-safe: dropped before it completes, it loses no bytes; a
    /// later call goes on where it stopped.
    ///
    /// # Errors
    /// [`ReadError::Frame`] for a prefix over the maximum (stop reading:
    /// the stream cannot be resynchronised), [`ReadError::Truncated`] when
    /// the stream ends inside a frame, and the stream's own errors.
    pub async fn next(&mut self) -> Result<Option<&[u8]>, ReadError> {
        let io = &mut self.io;
        let whole = fill(&mut self.frames, false, |cx, room| {
            let mut buf = tokio::io::ReadBuf::new(room);
            match Pin::new(&mut *io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await?;
        if !whole {
            return Ok(None);
        }
        Ok(self.frames.next_frame()?)
    }

    /// The stream, and what was read of it past the last frame is lost.
    pub fn into_inner(self) -> R {
        self.io
    }
}

/// Reads one frame of at most `frames.max()` bytes from a futures stream,
/// reading nothing past it; `None` when the stream ended before a frame
/// began. Pass a fresh `FrameReader` per frame or reuse one.
///
/// # Errors
/// As [`FramedReader::next`].
pub async fn read_frame<'f, R>(
    io: &mut R,
    frames: &'f mut FrameReader,
) -> Result<Option<&'f [u8]>, ReadError>
where
    R: futures::AsyncRead + Unpin,
{
    let whole = fill(frames, true, |cx, room| {
        Pin::new(&mut *io).poll_read(cx, room)
    })
    .await?;
    if !whole {
        return Ok(None);
    }
    Ok(frames.next_frame()?)
}

/// Writes `payload` as one frame of at most `max` bytes to a futures stream.
///
/// # Errors
/// [`io::ErrorKind::InvalidInput`] for a payload over `max` (nothing is
/// written), and the stream's own errors.
pub async fn write_frame<W>(io: &mut W, payload: &[u8], max: usize) -> io::Result<()>
where
    W: futures::AsyncWrite + Unpin,
{
    use futures::AsyncWriteExt;
    let bytes = frame(payload, max).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    io.write_all(&bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::codec::LENGTH_PREFIX;
    use tokio::io::AsyncWriteExt;

    fn framed(payloads: &[&[u8]], max: usize) -> Vec<u8> {
        payloads
            .iter()
            .flat_map(|p| frame(p, max).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn frames_written_a_byte_at_a_time_come_out_whole() {
        let (mut tx, rx) = tokio::io::duplex(1);
        let bytes = framed(&[b"one", b"", b"three"], 16);
        let writer = tokio::spawn(async move {
            for b in bytes {
                tx.write_all(&[b]).await.unwrap();
            }
        });
        let mut frames = FramedReader::new(rx, 16);
        let mut got = Vec::new();
        while let Some(f) = frames.next().await.unwrap() {
            got.push(f.to_vec());
        }
        writer.await.unwrap();
        assert_eq!(got, [&b"one"[..], b"", b"three"]);
    }

    #[tokio::test]
    async fn next_is_cancel_safe() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut frames = FramedReader::new(rx, 16);
        let bytes = framed(&[b"abcdef"], 16);
        for b in &bytes {
            tx.write_all(&[*b]).await.unwrap();
            // Each call reads what is there, then is cancelled waiting.
            let r = tokio::time::timeout(std::time::Duration::from_millis(1), frames.next()).await;
            if let Ok(f) = r {
                assert_eq!(f.unwrap(), Some(&b"abcdef"[..]));
                return;
            }
        }
        panic!("the frame never came out");
    }

    #[tokio::test]
    async fn an_oversized_prefix_and_a_cut_frame_are_errors() {
        let (mut tx, rx) = tokio::io::duplex(64);
        tx.write_all(&17u32.to_be_bytes()).await.unwrap();
        let mut frames = FramedReader::new(rx, 16);
        assert!(matches!(
            frames.next().await,
            Err(ReadError::Frame(CodecError::FrameTooLarge {
                len: 17,
                max: 16
            }))
        ));
        let (mut tx, rx) = tokio::io::duplex(64);
        tx.write_all(&framed(&[b"0123456789"], 16)[..7])
            .await
            .unwrap();
        drop(tx);
        let mut frames = FramedReader::new(rx, 16);
        assert!(matches!(
            frames.next().await,
            Err(ReadError::Truncated { buffered: 7 })
        ));
    }

    #[tokio::test]
    async fn read_frame_reads_nothing_past_the_frame() {
        let bytes = framed(&[b"first", b"second"], 16);
        let mut io = futures::io::Cursor::new(bytes.clone());
        let mut frames = FrameReader::new(16);
        let got = read_frame(&mut io, &mut frames).await.unwrap();
        assert_eq!(got, Some(&b"first"[..]));
        assert_eq!(io.position() as usize, LENGTH_PREFIX + 5);
        let mut frames = FrameReader::new(16);
        let got = read_frame(&mut io, &mut frames).await.unwrap();
        assert_eq!(got, Some(&b"second"[..]));
        assert_eq!(io.position() as usize, bytes.len());
        assert!(read_frame(&mut io, &mut frames).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn write_frame_refuses_an_oversized_payload_and_writes_nothing() {
        let mut io = futures::io::Cursor::new(Vec::new());
        let e = write_frame(&mut io, &[0; 17], 16).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(io.get_ref().is_empty());
        write_frame(&mut io, &[7; 16], 16).await.unwrap();
        assert_eq!(io.get_ref()[..LENGTH_PREFIX], 16u32.to_be_bytes());
    }
}
