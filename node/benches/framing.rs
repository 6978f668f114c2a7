//! Framing throughput, old against new (issue 11, item 5): the framework
//! socket's frames through tokio-util's `LengthDelimitedCodec` (what the
//! node used before) and through `agora_node::framing::FramedReader`, over
//! a Unix socket pair; and peer frames through p2p's old `read_exact`
//! reader (copied here) and through `agora_node::framing::read_frame`, from
//! memory. Each round runs every path once, old and new alternately; the
//! medians of 5 rounds and the ratio new/old are printed (below 1 is
//! faster). Not a test: nothing asserts on time.
//!
//! Run: `cargo bench -p agora-node --bench framing`
//! (SMALL=200000 BIG=200 ROUNDS=5 PATHS=socket,peer are the defaults;
//! under `cargo test --benches` it runs one small round as a check).

use agora_node::framing::{FramedReader, read_frame};
use agora_protocol::codec::{DEFAULT_MAX_FRAME, FrameReader, frame};
use futures::{AsyncRead, AsyncReadExt, StreamExt};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

/// Payload of a small frame: about a JSON ack or a status event.
const SMALL_PAYLOAD: usize = 100;
const MAX_PEER_FRAME: usize = 4 << 20;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `count` frames of `size` bytes, as one stream.
fn stream(count: usize, size: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let one = frame(&payload, usize::MAX >> 1).unwrap();
    one.repeat(count)
}

fn old_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_length(4)
        .max_frame_length(DEFAULT_MAX_FRAME)
        .new_codec()
}

/// Writes `bytes` into one end of a socket pair while `read` splits the
/// other end; returns the time and what `read` counted.
async fn over_socket<F, Fut>(bytes: &'static [u8], read: F) -> (Duration, usize)
where
    F: FnOnce(tokio::net::unix::OwnedReadHalf) -> Fut,
    Fut: Future<Output = usize>,
{
    let (a, b) = UnixStream::pair().unwrap();
    let (rd, _keep) = b.into_split();
    let (_, mut wr) = a.into_split();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        wr.write_all(bytes).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let n = read(rd).await;
    writer.await.unwrap();
    (start.elapsed(), n)
}

async fn socket_old(bytes: &'static [u8]) -> (Duration, usize) {
    over_socket(bytes, |rd| async move {
        let mut frames = FramedRead::new(rd, old_codec());
        let mut n = 0;
        while let Some(f) = frames.next().await {
            let f = f.unwrap();
            n += black_box(f.len()) + usize::from(f.first().copied().unwrap_or(0) > 0);
        }
        n
    })
    .await
}

async fn socket_new(bytes: &'static [u8]) -> (Duration, usize) {
    over_socket(bytes, |rd| async move {
        let mut frames = FramedReader::new(rd, DEFAULT_MAX_FRAME);
        let mut n = 0;
        while let Some(f) = frames.next().await.unwrap() {
            n += black_box(f.len()) + usize::from(f.first().copied().unwrap_or(0) > 0);
        }
        n
    })
    .await
}

/// p2p.rs's reader before this change, verbatim but for the error text.
async fn old_peer_read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_PEER_FRAME {
        return Err(std::io::Error::other("too large"));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn peer_old(bytes: &[u8], count: usize) -> (Duration, usize) {
    let mut io = futures::io::Cursor::new(bytes);
    let start = Instant::now();
    let mut n = 0;
    for _ in 0..count {
        let f = old_peer_read_frame(&mut io).await.unwrap();
        n += black_box(f.len()) + usize::from(f.first().copied().unwrap_or(0) > 0);
    }
    (start.elapsed(), n)
}

async fn peer_new(bytes: &[u8], count: usize) -> (Duration, usize) {
    let mut io = futures::io::Cursor::new(bytes);
    let start = Instant::now();
    let mut n = 0;
    for _ in 0..count {
        // A fresh reader per frame, as PeerCodec does (one frame a stream).
        let mut frames = FrameReader::new(MAX_PEER_FRAME);
        let f = read_frame(&mut io, &mut frames).await.unwrap().unwrap();
        n += black_box(f.len()) + usize::from(f.first().copied().unwrap_or(0) > 0);
    }
    (start.elapsed(), n)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not,
    // and then one quick round only checks that every path works.
    let benching = std::env::args().any(|a| a == "--bench");
    let (small, big, rounds) = if benching {
        (env("SMALL", 200_000), env("BIG", 200), env("ROUNDS", 5))
    } else {
        (1_000, 2, 1)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let workloads: [(&str, usize, usize, &'static [u8]); 2] = [
        // Built once and leaked: the socket writer task needs 'static bytes.
        (
            "small",
            small,
            SMALL_PAYLOAD,
            stream(small, SMALL_PAYLOAD).leak(),
        ),
        (
            "1 MiB",
            big,
            DEFAULT_MAX_FRAME,
            stream(big, DEFAULT_MAX_FRAME).leak(),
        ),
    ];
    if !benching {
        println!("a check of every path, not a measurement (run cargo bench for one)");
    }
    println!("{rounds} rounds; medians; ratio = new / old (below 1 is faster)");
    for (name, count, size, bytes) in workloads {
        let mb = bytes.len() as f64 / (1 << 20) as f64;
        let paths = std::env::var("PATHS").unwrap_or_else(|_| "socket,peer".into());
        for path in paths.split(',') {
            let (mut old, mut new) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                // Alternate which goes first, so neither always runs warm.
                for first_old in [round % 2 == 0, round % 2 != 0] {
                    let (t, n) = rt.block_on(async {
                        match (path, first_old) {
                            ("socket", true) => socket_old(bytes).await,
                            ("socket", false) => socket_new(bytes).await,
                            ("peer", true) => peer_old(bytes, count).await,
                            ("peer", false) => peer_new(bytes, count).await,
                            _ => panic!("PATHS holds socket and peer, not {path:?}"),
                        }
                    });
                    assert!(n >= count * size, "{path} {name}: read {n}");
                    if first_old { old.push(t) } else { new.push(t) }
                }
            }
            let (o, n) = (median(old), median(new));
            println!(
                "{path:>6} {count:>7} x {name:<6}: old {:>8.1} ms ({:>7.0} MiB/s, {:>9.0} frames/s)  new {:>8.1} ms ({:>7.0} MiB/s, {:>9.0} frames/s)  ratio {:.3}",
                o.as_secs_f64() * 1e3,
                mb / o.as_secs_f64(),
                count as f64 / o.as_secs_f64(),
                n.as_secs_f64() * 1e3,
                mb / n.as_secs_f64(),
                count as f64 / n.as_secs_f64(),
                n.as_secs_f64() / o.as_secs_f64(),
            );
        }
    }
}
