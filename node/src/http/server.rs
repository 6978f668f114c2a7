//! The HTTP server's accept loop: how many connections it serves, how long
//! a client may take to send a request head, and who gives way when every
//! connection slot is taken (issue 12: 1,000 slowloris clients, which send
//! their headers a byte at a time, were held 75 s and more).
//!
//! - At most [`MAX_CONNECTIONS`] connections are served at once.
//! - A request head (request line and headers) must arrive whole within
//!   [`HEADER_READ_TIMEOUT`] of the connection's start or of the end of the
//!   previous response (hyper's `header_read_timeout`); otherwise the
//!   connection is closed. That also closes keep-alive connections idle for
//!   that long.
//! - When all slots are taken, a new connection takes the slot of the
//!   oldest connection that has not yet sent a whole request (it is closed),
//!   so stalled or slow clients cannot keep well-behaved ones out. Only
//!   when every slot holds a client that has sent a request is the new one
//!   answered `503` with `Retry-After: 1` and closed.
//! - A head larger than hyper's limit (about 400 KiB) is answered `431`.
//! - A request body must arrive whole within [`BODY_READ_TIMEOUT`] of the
//!   handler starting to read it; otherwise the request is answered `408`
//!   and the connection closed.
//!
//! Each of these is counted ([`crate::http::EDGE`], shown on `/metrics`)
//! and warned about at most once a minute.

use super::metrics::{EDGE, EdgeCounters, WarnEvery};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};

/// Most HTTP connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long a client may take to send a whole request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a whole request body, once its head
/// arrived (answered 408 and closed past it: a client that declares a body
/// and stalls would otherwise hold its connection slot for good).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections being answered 503 at once; past this many (a flood) a
/// new one is closed unanswered.
const MAX_PENDING: usize = 64;

/// How long a new connection waits for the slot of the connection closed
/// to make room for it.
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// Connections that have not yet sent a whole request head, in accept
/// order, each with the sender that closes it.
#[derive(Default)]
struct Unproven(Mutex<BTreeMap<u64, oneshot::Sender<()>>>);

impl Unproven {
    fn insert(&self, id: u64, close: oneshot::Sender<()>) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(id, close);
        }
    }

    fn remove(&self, id: u64) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&id);
        }
    }

    /// Closes the oldest; false when there is none.
    fn evict_oldest(&self) -> bool {
        let oldest = self.0.lock().ok().and_then(|mut m| m.pop_first());
        match oldest {
            Some((_, close)) => {
                let _ = close.send(());
                true
            }
            None => false,
        }
    }
}

static FULL_WARN: WarnEvery = WarnEvery::new();
static SLOW_WARN: WarnEvery = WarnEvery::new();

/// Serves `app` on `listener` until `shutdown` completes, then lets the
/// connections finish their requests (the caller bounds that wait).
pub async fn run(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    let unproven = Arc::new(Unproven::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next_id = 0u64;
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        next_id += 1;
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            id: next_id,
            app: app.clone(),
            unproven: unproven.clone(),
            stop: stop_rx.clone(),
        };
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            tokio::spawn(conn.serve(stream, slot));
            continue;
        }
        // Full: close the oldest connection that has sent no request and
        // take its slot (it frees it at once; the wait is a bound, and
        // waiting here, in the accept loop, keeps a flood from piling up).
        if unproven.evict_oldest() {
            EdgeCounters::bump(&EDGE.http_evicted);
            if let Ok(Ok(slot)) =
                tokio::time::timeout(EVICT_WAIT, slots.clone().acquire_owned()).await
            {
                tokio::spawn(conn.serve(stream, slot));
                continue;
            }
        }
        EdgeCounters::bump(&EDGE.http_refused);
        if let Some(n) = FULL_WARN.note() {
            tracing::warn!(
                refused = n,
                limit = MAX_CONNECTIONS,
                "HTTP connections refused with 503: all {MAX_CONNECTIONS} connection slots \
                 hold clients that have sent requests"
            );
        }
        if let Ok(answering) = pending.clone().try_acquire_owned() {
            tokio::spawn(async move {
                too_busy(stream).await;
                drop(answering);
            });
        }
    }
    let _ = stop_tx.send(true);
    // Every connection gives its slot back when it ends.
    let _ = slots.acquire_many(MAX_CONNECTIONS as u32).await;
}

/// Answers 503 on a connection there is no room for, then closes it
/// (reading what the client sent meanwhile, briefly, so that the close
/// does not reset the connection before the client has read the answer).
async fn too_busy(mut stream: TcpStream) {
    let body = format!(
        "{{\"error\":\"this node serves at most {MAX_CONNECTIONS} HTTP connections at once and all \
         are busy; retry in a second\"}}"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut budget = 64 * 1024usize;
        while budget > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => budget = budget.saturating_sub(n),
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// One accepted connection.
struct Conn {
    id: u64,
    app: axum::Router,
    unproven: Arc<Unproven>,
    stop: watch::Receiver<bool>,
}

impl Conn {
    async fn serve(mut self, stream: TcpStream, slot: OwnedSemaphorePermit) {
        EDGE.http_open.fetch_add(1, Ordering::Relaxed);
        let (close_tx, mut close_rx) = oneshot::channel();
        self.unproven.insert(self.id, close_tx);
        let proven = Arc::new(AtomicBool::new(false));
        let service = {
            let (app, unproven, proven, id) = (
                self.app.clone(),
                self.unproven.clone(),
                proven.clone(),
                self.id,
            );
            hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                if !proven.swap(true, Ordering::Relaxed) {
                    unproven.remove(id);
                }
                let mut app = app.clone();
                async move {
                    tower_service::Service::call(&mut app, req.map(axum::body::Body::new)).await
                }
            })
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let mut conn = std::pin::pin!(conn);
        let mut close_open = true;
        let mut stopping = *self.stop.borrow();
        if stopping {
            conn.as_mut().graceful_shutdown();
        }
        let result = loop {
            tokio::select! {
                r = conn.as_mut() => break Some(r),
                closed = &mut close_rx, if close_open => match closed {
                    // Closed to make room for a newer connection.
                    Ok(()) => break None,
                    // Its first request arrived: it is no longer a candidate.
                    Err(_) => close_open = false,
                },
                changed = self.stop.changed(), if !stopping => {
                    stopping = true;
                    if changed.is_ok() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        };
        self.unproven.remove(self.id);
        match result {
            Some(Err(e)) if e.is_timeout() && !proven.load(Ordering::Relaxed) => {
                EdgeCounters::bump(&EDGE.http_header_timeouts);
                if let Some(n) = SLOW_WARN.note() {
                    tracing::warn!(
                        closed = n,
                        timeout_s = HEADER_READ_TIMEOUT.as_secs(),
                        "closed HTTP connections that sent no whole request within the header \
                         timeout (stalled or deliberately slow clients)"
                    );
                }
            }
            Some(Err(e)) if e.is_parse_too_large() => {
                EdgeCounters::bump(&EDGE.http_heads_too_large);
                tracing::debug!("HTTP request head too large; answered 431");
            }
            Some(Err(e)) => tracing::debug!(error = %e, "HTTP connection ended with an error"),
            Some(Ok(())) => {}
            None => tracing::debug!(
                conn = self.id,
                "closed an HTTP connection that had sent no request, to make room"
            ),
        }
        EdgeCounters::drop_one(&EDGE.http_open);
        drop(slot);
    }
}
