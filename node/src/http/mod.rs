//! HTTP API, web dashboard and Prometheus metrics (issue 5).
//!
//! Every node serves the whole cluster from its gossip view: a JSON API under
//! `/api/v1`, a dashboard at `/` (plain HTML, CSS and JS embedded in the
//! binary) and `/metrics` in Prometheus text format. docs/HTTP_API.md is the
//! reference for the routes; `/api/v1/openapi.json` describes them too.
//!
//! # The contract with the agent
//!
//! This module never touches gossip, libp2p or the executor. The agent talks
//! to it through three narrow things, and nothing else:
//!
//! 1. A [`tokio::sync::watch`] of [`ApiSnapshot`]: what this node knows right
//!    now (its gossip view of the nodes, the tasks it knows, frameworks,
//!    cells). The agent publishes a fresh `Arc<ApiSnapshot>` whenever its view
//!    changes (or on a timer, e.g. once a second); reads never block it.
//! 2. A bounded [`tokio::sync::mpsc`] of [`ApiRequest`]s for what the
//!    snapshot cannot answer: the cluster-wide task list, one task, a log
//!    chunk, submits and kills. Each is a [`crate::surface::Command`] (the
//!    same type the framework socket's messages become) with a
//!    [`tokio::sync::oneshot`] for its one [`crate::surface::Reply`]; a
//!    command that is not answered within [`HttpConfig::command_timeout`]
//!    becomes a 503 for the HTTP client, and the agent may drop a reply
//!    sender to say "not now" (also a 503).
//! 3. [`Metrics`], shared as `Arc<Metrics>`: the agent bumps counters and the
//!    latency histogram; gauges that follow from the snapshot are refreshed by
//!    this module on every scrape (see [`Metrics::update_from_snapshot`]).
//!
//! # Wiring it into the agent
//!
//! 1. Flags `--http HOST:PORT` and `--http-token-file FILE` (and config keys):
//!    [`HttpConfig::from_flags`]; `--http-public-read` sets
//!    [`HttpConfig::public_read`]. Bind the listener at startup so a busy
//!    port is a clear startup error, then spawn [`serve`] with the agent's
//!    shutdown signal.
//! 2. Create the watch with [`ApiSnapshot::empty`], then publish
//!    [`ApiSnapshot::from_view`] (or a hand-built snapshot) whenever the
//!    gossip view, the task table or the framework table changes, at most a
//!    few times a second.
//! 3. Answer every [`ApiRequest`] in the agent loop without blocking it,
//!    as the agent's core answers the socket's commands
//!    (`crate::agent::command`). Refusals are [`Reply::Error`] with the
//!    socket's error codes; [`CommandError`] carries them to a status code.
//! 4. Count in [`Metrics`]: `bids_sent`/`bids_won`/`bids_rejected`,
//!    [`Metrics::observe_auction_latency`] (submit to award), and
//!    [`Metrics::set_gossip_totals`] from the gossip layer's counters, and
//!    [`Metrics::set_peer_totals`] from the libp2p layer's.
//!
//! ```ignore
//! let (snap_tx, snap_rx) = watch::channel(Arc::new(ApiSnapshot::empty(node_id)));
//! let (cmd_tx, mut cmd_rx) = mpsc::channel(http::COMMAND_QUEUE);
//! let metrics = Arc::new(http::Metrics::new());
//! let listener = TcpListener::bind(config.listen).await?;
//! tokio::spawn(http::serve(listener, config, snap_rx, cmd_tx, metrics.clone(), shutdown));
//! // in the agent's select! loop:
//! Some(ApiRequest { command, reply }) = cmd_rx.recv() => {
//!     let _ = reply.send(answer(command));
//! }
//! ```

mod api;
mod dashboard;
mod error;
mod metrics;
pub mod server;
mod snapshot;
pub(crate) mod spec;
mod views;

pub use error::ApiError;
pub use metrics::{
    CONTENT_TYPE as METRICS_CONTENT_TYPE, EDGE, EdgeCounters, Metrics, NodeTotals, PeerTotals,
    WarnEvery,
};
pub use snapshot::{LocalFramework, framework_rows, node_rows, parse_framework_id, sorted_rows};
pub use spec::{SpecBody, SpecCommand, submit_specs};
pub use views::{NodeView, TaskView};

use crate::surface::{Command, Reply};
use agora_protocol::ids::{FrameworkId, NodeId};
use agora_protocol::resources::Resources;
use agora_protocol::wire::{ErrorCode, NodeRow, TaskRow};
use anyhow::Context;
use serde::Serialize;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};

/// The default HTTP port (`--http` defaults to `127.0.0.1:DEFAULT_PORT`).
pub const DEFAULT_PORT: u16 = 7480;

/// A good capacity for the [`ApiRequest`] channel the agent creates.
pub const COMMAND_QUEUE: usize = 64;

/// What this node knows, published by the agent through a `watch` channel.
#[derive(Clone, Debug)]
pub struct ApiSnapshot {
    /// The node serving this API.
    pub node_id: NodeId,
    /// The cluster from this node's gossip view (itself included), alive and dead.
    pub nodes: Vec<NodeRow>,
    /// The tasks this node knows without asking anyone: those of frameworks
    /// homed here and those running here. The cluster-wide list comes from
    /// a [`Command::ListTasks`] request.
    pub tasks: Vec<TaskRow>,
    /// Frameworks this node knows (those homed here, and others it learned of
    /// through gossip).
    pub frameworks: Vec<FrameworkRow>,
    /// The cells of the cluster; a small cluster is one cell.
    pub cells: Vec<CellRow>,
    /// This node's cell and whether it is one of its gateways (`None`: a
    /// flat cluster).
    pub cell: Option<(String, bool)>,
    /// When the agent produced this snapshot.
    pub produced_at: SystemTime,
}

impl ApiSnapshot {
    /// A snapshot of a node that knows nothing yet (the value to create the
    /// watch channel with before gossip has run).
    pub fn empty(node_id: NodeId) -> Self {
        ApiSnapshot {
            node_id,
            nodes: Vec::new(),
            tasks: Vec::new(),
            frameworks: Vec::new(),
            cells: Vec::new(),
            cell: None,
            produced_at: SystemTime::now(),
        }
    }

    /// This node's own row, if the gossip view has it.
    pub fn own_node(&self) -> Option<&NodeRow> {
        self.nodes.iter().find(|n| n.id == self.node_id)
    }
}

/// One framework as the dashboard and `/api/v1/frameworks` show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FrameworkRow {
    /// Its id.
    pub id: FrameworkId,
    /// Its human name ("batch", "cli", "http").
    pub name: String,
    /// Its DRF weight (at least 1).
    pub weight: u32,
    /// The node it is homed on (where its bidder runs), when known.
    pub home_node: Option<NodeId>,
    /// Its weighted dominant share of the cluster, 0.0 to 1.0.
    pub dominant_share: f64,
    /// What its tasks hold now.
    pub allocated: Resources,
    /// How many of its tasks are not terminal.
    pub active_tasks: u32,
    /// Whether it is connected to this node's socket now; `None` for a
    /// framework homed on another node (its connection is not gossiped).
    pub connected: Option<bool>,
}

/// One cell: a gossip cluster small enough to gossip comfortably.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CellRow {
    /// The cell's id (its name; the cluster id in a flat cluster).
    pub id: String,
    /// How many nodes it has (alive or not).
    pub members: u32,
    /// How many are alive.
    pub alive: u32,
    /// Whether it is this node's cell.
    pub home: bool,
    /// Whether this node imported its members (a framework homed here bids
    /// there).
    pub imported: bool,
    /// Its gateways (none in a flat cluster).
    pub gateways: Vec<String>,
    /// Its live members' CPUs, in cores.
    pub cpus_total: f64,
    /// Of which free.
    pub cpus_free: f64,
    /// Its live members' memory, MiB.
    pub mem_total_mib: u64,
    /// Of which free.
    pub mem_free_mib: u64,
}

impl CellRow {
    /// The row of a cell as [`agora_protocol::wire::CellRow`] tells it.
    pub fn of(c: &agora_protocol::wire::CellRow) -> Self {
        let a = &c.aggregate;
        CellRow {
            id: c.name.clone(),
            members: a.members,
            alive: a.alive,
            home: c.home,
            imported: c.imported,
            gateways: c.gateways.iter().map(ToString::to_string).collect(),
            cpus_total: a.total.cpu_millis as f64 / 1000.0,
            cpus_free: a.free.cpu_millis as f64 / 1000.0,
            mem_total_mib: a.total.mem_mib,
            mem_free_mib: a.free.mem_mib,
        }
    }
}

/// An error the agent reports for a command, mapped to an HTTP status:
/// `invalid_spec` → 400, `unknown_task`/`unknown_node`/`unknown_framework` →
/// 404, `forbidden` → 403, `busy` → 503, anything else → 500.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    /// A stable code (the same codes as the framework socket).
    pub code: ErrorCode,
    /// What was wrong and what to do, for a person.
    pub message: String,
}

impl CommandError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CommandError {
            code,
            message: message.into(),
        }
    }
}

/// The cluster-wide task list, as merged by the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskListing {
    /// Every task known to any node that answered, one row per task.
    pub tasks: Vec<TaskRow>,
    /// Live nodes that did not answer in time (their tasks may be missing).
    pub unreachable: Vec<NodeId>,
}

/// A request the agent answers: a command of the node's one command
/// surface and where its reply goes.
#[derive(Debug)]
pub struct ApiRequest {
    /// What to do.
    pub command: Command,
    /// Where the one reply goes.
    pub reply: oneshot::Sender<Reply>,
}

/// How to serve HTTP.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Where to listen (`--http HOST:PORT`; default `127.0.0.1:7480`).
    pub listen: SocketAddr,
    /// The bearer token the API needs (`--http-token-file`): for POST and
    /// DELETE always, for reads unless [`HttpConfig::public_read`]. With
    /// none, POST and DELETE are refused with 403, and so are reads unless
    /// they are public.
    pub token: Option<String>,
    /// Serve reads (GET) without the token (`--http-public-read`). The
    /// dashboard's own files (`/`, `/assets/...`) and
    /// `/api/v1/openapi.json` are always public: they hold nothing of the
    /// cluster.
    pub public_read: bool,
    /// How long to wait for the agent to answer a command before a 503.
    pub command_timeout: Duration,
    /// Largest request body accepted (413 past it).
    pub max_body_bytes: usize,
    /// How long a cluster-wide task list is reused (the dashboard polls
    /// every second; concurrent requests share one `ListTasks`).
    pub task_list_ttl: Duration,
    /// Host names accepted in the Host header besides IP addresses and
    /// `localhost` (`--http-allow-host`), lower case. See [`host_allowed`].
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            token: None,
            public_read: false,
            command_timeout: Duration::from_secs(5),
            max_body_bytes: 1024 * 1024,
            task_list_ttl: Duration::from_millis(900),
            allowed_hosts: Vec::new(),
        }
    }
}

impl HttpConfig {
    /// The configuration from the agent's flags: `--http HOST:PORT` (the
    /// default when `None`), `--http-token-file FILE` and
    /// `--http-allow-host NAME,...`.
    ///
    /// # Errors
    /// The token file cannot be read or holds no usable token.
    pub fn from_flags(
        listen: Option<SocketAddr>,
        token_file: Option<&Path>,
        allow_hosts: &[String],
    ) -> anyhow::Result<Self> {
        let mut config = HttpConfig::default();
        if let Some(listen) = listen {
            config.listen = listen;
        }
        if let Some(path) = token_file {
            config.token = Some(load_token(path)?);
        }
        for name in allow_hosts {
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            {
                anyhow::bail!(
                    "--http-allow-host {name:?} is not a host name; use letters, digits, dots \
                     and dashes without a port, e.g. node1.example.com"
                );
            }
            config.allowed_hosts.push(name);
        }
        Ok(config)
    }
}

/// Whether a request's Host header may be served: an IP address (v4, or v6
/// in brackets), `localhost`, or one of `allowed` (lower case), with or
/// without a port.
///
/// This is the defence against DNS rebinding: a page on `evil.example` that
/// re-points its own name at 127.0.0.1 still sends `Host: evil.example`, so
/// it cannot read the dashboard or the API from a browser on this machine.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    if let Some(rest) = host.strip_prefix('[') {
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || allowed.contains(&name)
}

/// Reads a bearer token from a file (`--http-token-file`): the file's text
/// with surrounding whitespace removed.
///
/// # Errors
/// The file cannot be read, is empty, or holds characters other than
/// printable ASCII without spaces.
pub fn load_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the HTTP token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        anyhow::bail!(
            "the HTTP token file {} is empty; write a secret into it, e.g. `agora keygen > {}`",
            path.display(),
            path.display()
        );
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        anyhow::bail!(
            "the HTTP token in {} has spaces or non-ASCII characters; use printable ASCII only",
            path.display()
        );
    }
    Ok(token.to_string())
}

/// The router with every route, for [`serve`] and for tests.
pub fn router(
    config: HttpConfig,
    snapshot_rx: watch::Receiver<Arc<ApiSnapshot>>,
    command_tx: mpsc::Sender<ApiRequest>,
    metrics: Arc<Metrics>,
) -> axum::Router {
    let state = api::AppState::new(config, snapshot_rx, command_tx, metrics);
    api::routes(state)
}

/// Serves the API, dashboard and metrics on `listener` until `shutdown`
/// completes, then finishes the requests in flight. Connections are
/// limited and slow clients cut off as [`server`] describes.
///
/// # Errors
/// The listener has no local address.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: HttpConfig,
    snapshot_rx: watch::Receiver<Arc<ApiSnapshot>>,
    command_tx: mpsc::Sender<ApiRequest>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("the HTTP listener has no local address")?;
    match (&config.token, config.public_read) {
        (None, false) => tracing::warn!(
            %addr,
            "HTTP API closed: no --http-token-file and no --http-public-read, so only the \
             dashboard's static files are served; every API read and change is refused"
        ),
        (None, true) => tracing::info!(
            %addr,
            "HTTP API read-only and public (--http-public-read): no --http-token-file, so POST \
             and DELETE are refused"
        ),
        (Some(_), true) => tracing::info!(
            %addr,
            "HTTP API reads are public (--http-public-read); POST and DELETE need the token"
        ),
        (Some(_), false) => {}
    }
    tracing::info!(%addr, "serving the HTTP API, dashboard and /metrics");
    let app = router(config, snapshot_rx, command_tx, metrics);
    server::run(listener, app, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_trimmed_and_checked() {
        let dir = std::env::temp_dir().join(format!("agora-http-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "  abc123==\n").unwrap();
        let config = HttpConfig::from_flags(None, Some(&good), &[]).unwrap();
        assert_eq!(config.token.as_deref(), Some("abc123=="));
        assert_eq!(
            config.listen,
            SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT))
        );
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = load_token(&empty).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        let spaced = dir.join("spaced");
        std::fs::write(&spaced, "two words").unwrap();
        assert!(load_token(&spaced).is_err());
        let e = format!("{:#}", load_token(&dir.join("missing")).unwrap_err());
        assert!(e.contains("cannot read the HTTP token file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_headers_are_checked_against_ips_localhost_and_the_allowed_names() {
        let allowed = vec!["node1.example.com".to_string()];
        for ok in [
            "127.0.0.1:7480",
            "10.1.2.3",
            "[::1]:7480",
            "localhost:7480",
            "LOCALHOST",
            "node1.example.com:7480",
            "Node1.Example.Com.",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7480",
            "node1.example.com.evil.example",
            "localhost.evil.example",
            "[not-an-ip]:80",
            "",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
        assert!(!host_allowed("node1.example.com", &[]));
        let e = HttpConfig::from_flags(None, None, &["bad host:80".into()]).unwrap_err();
        assert!(e.to_string().contains("is not a host name"), "{e}");
        let c = HttpConfig::from_flags(None, None, &["Node1.Example.COM.".into()]).unwrap();
        assert_eq!(c.allowed_hosts, ["node1.example.com"]);
    }
}
