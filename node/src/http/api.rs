//! The routes: JSON API handlers, the agent round trip with its timeout,
//! bearer-token checks (mutations always, reads unless public), and the
//! shared state they use.

use super::dashboard;
use super::error::ApiError;
use super::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics};
use super::spec::submit_specs;
use super::views::{
    self, Capacity, ClusterSummary, FrameworkCounts, NodeCounts, NodeView, TaskView, parse_state,
};
use super::{ApiRequest, ApiSnapshot, CommandError, HttpConfig, TaskListing};
use crate::surface::{Command, Reply};
use agora_protocol::ids::TaskId;
use agora_protocol::task::TaskState;
use agora_protocol::wire::{LogStream, MAX_LOG_CHUNK};
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::time::Instant;

/// An answer of the wrong kind (a bug in the agent): a 500 that says so.
fn unexpected(what: &str, reply: &Reply) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("cannot {what}: the agent answered {reply:?}"),
    )
}

/// Default `max_bytes` of a log read.
const DEFAULT_LOG_BYTES: u32 = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: HttpConfig,
    snapshot_rx: watch::Receiver<Arc<ApiSnapshot>>,
    command_tx: mpsc::Sender<ApiRequest>,
    metrics: Arc<Metrics>,
    /// The last cluster-wide task list (or failure) and when it was fetched.
    listing: Mutex<Option<(Instant, ListingResult)>>,
}

type ListingResult = Result<Arc<TaskListing>, ApiError>;

impl AppState {
    /// Bundles the contract's parts.
    pub fn new(
        config: HttpConfig,
        snapshot_rx: watch::Receiver<Arc<ApiSnapshot>>,
        command_tx: mpsc::Sender<ApiRequest>,
        metrics: Arc<Metrics>,
    ) -> Self {
        AppState {
            inner: Arc::new(Inner {
                config,
                snapshot_rx,
                command_tx,
                metrics,
                listing: Mutex::new(None),
            }),
        }
    }

    fn snapshot(&self) -> Arc<ApiSnapshot> {
        self.inner.snapshot_rx.borrow().clone()
    }

    /// Sends a command to the agent and waits for its one reply, all
    /// within the configured timeout; a refusal becomes its status code.
    async fn ask(&self, what: &str, command: Command) -> Result<Reply, ApiError> {
        let limit = self.inner.config.command_timeout;
        let (tx, rx) = oneshot::channel();
        let round_trip = async {
            let request = ApiRequest { command, reply: tx };
            self.inner.command_tx.send(request).await.map_err(|_| {
                ApiError::unavailable(format!("cannot {what}: the agent is shutting down"))
            })?;
            rx.await.map_err(|_| {
                ApiError::unavailable(format!(
                    "cannot {what}: the agent dropped the request; retry"
                ))
            })
        };
        let reply = match tokio::time::timeout(limit, round_trip).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ApiError::unavailable(format!(
                    "cannot {what}: the agent did not answer within {} ms; retry later",
                    limit.as_millis()
                )));
            }
        };
        match reply {
            Reply::Error(e) => Err(CommandError::new(e.code, e.message).into()),
            other => Ok(other),
        }
    }

    /// The cluster-wide task list, shared by requests within the TTL.
    async fn listing(&self) -> Result<Arc<TaskListing>, ApiError> {
        let mut cached = self.inner.listing.lock().await;
        if let Some((at, result)) = cached.as_ref()
            && at.elapsed() < self.inner.config.task_list_ttl
        {
            return result.clone();
        }
        let result = self
            .ask(
                "list the cluster's tasks",
                Command::ListTasks(agora_protocol::wire::TaskQuery::all(0)),
            )
            .await
            .and_then(|r| match r {
                Reply::Tasks(p) => Ok(TaskListing {
                    tasks: p.tasks,
                    unreachable: p.unreachable,
                }),
                other => Err(unexpected("list the cluster's tasks", &other)),
            })
            .map(Arc::new);
        *cached = Some((Instant::now(), result.clone()));
        result
    }

    /// The cluster-wide list, or this node's own tasks if the agent did not
    /// answer; the `&str` says which ("cluster" or "local").
    async fn listing_or_local(&self) -> (Arc<TaskListing>, &'static str) {
        match self.listing().await {
            Ok(l) => (l, "cluster"),
            Err(_) => (
                Arc::new(TaskListing {
                    tasks: self.snapshot().tasks.clone(),
                    unreachable: Vec::new(),
                }),
                "local",
            ),
        }
    }

    async fn forget_listing(&self) {
        *self.inner.listing.lock().await = None;
    }

    /// Checks the bearer token of a mutation.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.inner.config.token else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this node refuses changes over HTTP because it has no API token; start the agent \
                 with --http-token-file FILE and send the file's content as \
                 'Authorization: Bearer TOKEN'",
            ));
        };
        match bearer(headers) {
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this request changes the cluster and needs 'Authorization: Bearer TOKEN' \
                 (the token is in the file given to --http-token-file)",
            )),
            Some(t) if same(t.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(wrong_token()),
        }
    }

    /// Checks the bearer token of a read, unless reads are public.
    fn authorize_read(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.inner.config.public_read {
            return Ok(());
        }
        let Some(expected) = &self.inner.config.token else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this node serves its API only to holders of its token, and it has none: start \
                 the agent with --http-token-file FILE and send the file's content as \
                 'Authorization: Bearer TOKEN' (the dashboard asks for it), or with \
                 --http-public-read to serve reads to anyone who can connect",
            ));
        };
        match bearer(headers) {
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "reading this node's API needs 'Authorization: Bearer TOKEN' (the token is in \
                 the file given to the agent's --http-token-file; the dashboard asks for it, or \
                 open /?token=TOKEN once); an agent started with --http-public-read serves reads \
                 without it",
            )),
            Some(t) if same(t.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(wrong_token()),
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

fn wrong_token() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "wrong bearer token; use the content of the agent's --http-token-file",
    )
}

/// Paths served to anyone: the dashboard's own files and the API's
/// description, which hold nothing of the cluster.
fn public_path(path: &str) -> bool {
    path == "/" || path == "/api/v1/openapi.json" || path.starts_with("/assets/")
}

/// Compares in time that does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Every route of the module.
pub fn routes(state: AppState) -> axum::Router {
    let limit = state.inner.config.max_body_bytes;
    axum::Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/{file}", get(dashboard::asset))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(dashboard::openapi))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/cells", get(cells))
        .route("/api/v1/nodes/{id}", get(node))
        .route("/api/v1/tasks", get(tasks).post(submit))
        .route("/api/v1/tasks/{id}", get(task).delete(kill))
        .route("/api/v1/tasks/{id}/logs", get(logs))
        .route("/api/v1/frameworks", get(frameworks))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_read,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_host,
        ))
        .with_state(state)
}

/// Refuses reads (GET, HEAD) without the bearer token unless reads are
/// public (`--http-public-read`) or the path is [`public_path`]. Changes
/// (POST, DELETE) check the token in their handlers, always.
async fn check_read(
    State(st): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    if read
        && !public_path(req.uri().path())
        && let Err(e) = st.authorize_read(req.headers())
    {
        return e.into_response();
    }
    next.run(req).await
}

/// Refuses requests whose Host header names a host this node does not
/// answer to (see [`super::host_allowed`]). A request without a Host header
/// (HTTP/1.0) cannot come from a browser page, so it passes.
async fn check_host(
    State(st): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(host) = req.headers().get(axum::http::header::HOST) {
        let text = String::from_utf8_lossy(host.as_bytes());
        if !super::host_allowed(&text, &st.inner.config.allowed_hosts) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "this node does not answer to the host {text:?}: it serves IP addresses, \
                     localhost and the names given with --http-allow-host (a guard against \
                     DNS rebinding); restart the agent with --http-allow-host NAME to allow \
                     a name"
                ),
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {method} {}; /api/v1/openapi.json lists every route",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not accept {method}; /api/v1/openapi.json lists every route",
            uri.path()
        ),
    )
}

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

fn params(q: Params) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))
}

fn path_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(s)| s)
        .map_err(|e| ApiError::bad_request(format!("bad path: {e}")))
}

fn task_id(text: &str) -> Result<TaskId, ApiError> {
    TaskId::new(text).map_err(|e| ApiError::bad_request(format!("bad task id: {e}")))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn metrics(State(st): State<AppState>) -> Response {
    st.inner.metrics.update_from_snapshot(&st.snapshot());
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        st.inner.metrics.encode(),
    )
        .into_response()
}

async fn cluster(State(st): State<AppState>) -> Json<ClusterSummary> {
    let snap = st.snapshot();
    let (listing, scope) = st.listing_or_local().await;
    let alive = snap.nodes.iter().filter(|n| n.alive).count() as u64;
    let total = snap.nodes.len() as u64;
    let capacity = Capacity::of(&snap);
    Json(ClusterSummary {
        node_id: snap.node_id.to_string(),
        produced_at_ms: unix_ms(snap.produced_at),
        nodes: NodeCounts {
            alive,
            dead: total - alive,
            total,
        },
        resources: capacity,
        utilization: capacity.utilization(),
        tasks: views::count_states(&listing.tasks),
        tasks_scope: scope,
        unreachable: listing
            .unreachable
            .iter()
            .map(ToString::to_string)
            .collect(),
        frameworks: FrameworkCounts {
            total: snap.frameworks.len() as u64,
            connected: snap
                .frameworks
                .iter()
                .filter(|f| f.connected == Some(true))
                .count() as u64,
        },
        cells: snap.cells.clone(),
    })
}

async fn cells(State(st): State<AppState>) -> Json<serde_json::Value> {
    let snap = st.snapshot();
    let (cell, gateway) = match &snap.cell {
        Some((name, gw)) => (Some(name.clone()), *gw),
        None => (None, false),
    };
    Json(json!({
        "node_id": snap.node_id.as_str(),
        "cell": cell,
        "gateway": gateway,
        "cells": snap.cells,
    }))
}

async fn nodes(State(st): State<AppState>, q: Params) -> Result<Json<serde_json::Value>, ApiError> {
    let q = params(q)?;
    match q.get("all").map(String::as_str) {
        None | Some("false") => Ok(Json(view_nodes(&st))),
        Some("true") => all_nodes(&st).await.map(Json),
        Some(other) => Err(ApiError::bad_request(format!(
            "all={other:?}: use all=true (every cell's members, asked of their gateways) or all=false"
        ))),
    }
}

/// `GET /api/v1/nodes?all=true`: every cell's members, each row with its
/// `cell`; cells whose gateways did not answer in `unanswered_cells`.
async fn all_nodes(st: &AppState) -> Result<serde_json::Value, ApiError> {
    let reply = st
        .ask(
            "list every cell's nodes",
            Command::ListAllNodes(agora_protocol::wire::ListTasks { request_id: 0 }),
        )
        .await?;
    let Reply::CellNodes(list) = reply else {
        return Err(ApiError::unavailable(
            "cannot list every cell's nodes: the agent answered something else; retry".to_string(),
        ));
    };
    let snap = st.snapshot();
    let me = snap.node_id.as_str();
    let mut rows = Vec::new();
    let mut unanswered = Vec::new();
    for c in &list.cells {
        if c.error.is_some() {
            unanswered.extend(c.cell.clone());
        }
        for n in &c.nodes {
            let mut v = serde_json::to_value(NodeView::new(n, me)).unwrap_or_default();
            v["cell"] = json!(c.cell);
            rows.push(v);
        }
    }
    Ok(json!({ "node_id": me, "nodes": rows, "unanswered_cells": unanswered }))
}

fn view_nodes(st: &AppState) -> serde_json::Value {
    let snap = st.snapshot();
    let mut rows: Vec<NodeView> = snap
        .nodes
        .iter()
        .map(|n| NodeView::new(n, snap.node_id.as_str()))
        .collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    json!({ "node_id": snap.node_id.as_str(), "nodes": rows })
}

async fn node(
    State(st): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = path_id(id)?;
    let snap = st.snapshot();
    let row = snap
        .nodes
        .iter()
        .find(|n| n.id.as_str() == id)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no node {id:?} in this node's gossip view; GET /api/v1/nodes lists them"
            ))
        })?;
    let (listing, scope) = st.listing_or_local().await;
    let tasks: Vec<TaskView> = listing
        .tasks
        .iter()
        .filter(|t| t.node.as_ref() == Some(&row.id))
        .map(TaskView::from)
        .collect();
    let mut body = serde_json::to_value(NodeView::new(row, snap.node_id.as_str()))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Some(obj) = body.as_object_mut() {
        obj.insert("tasks".into(), json!(tasks));
        obj.insert("tasks_scope".into(), json!(scope));
    }
    Ok(Json(body))
}

async fn tasks(State(st): State<AppState>, q: Params) -> Result<Json<serde_json::Value>, ApiError> {
    let q = params(q)?;
    let states: Option<Vec<TaskState>> = match q.get("state").filter(|s| !s.is_empty()) {
        None => None,
        Some(list) => Some(
            list.split(',')
                .map(|s| {
                    parse_state(s.trim()).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "state {s:?} is not a task state; use one or more (comma-separated) of \
                             staging, starting, running, finished, failed, killed, lost"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let framework = q.get("framework").filter(|s| !s.is_empty());
    let node = q.get("node").filter(|s| !s.is_empty());
    let listing = st.listing().await?;
    let rows: Vec<TaskView> = listing
        .tasks
        .iter()
        .filter(|t| states.as_ref().is_none_or(|s| s.contains(&t.state)))
        .filter(|t| framework.is_none_or(|f| t.framework.as_str() == f))
        .filter(|t| node.is_none_or(|n| t.node.as_ref().is_some_and(|x| x.as_str() == n)))
        .map(TaskView::from)
        .collect();
    let unreachable: Vec<String> = listing
        .unreachable
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(Json(json!({ "tasks": rows, "unreachable": unreachable })))
}

async fn task(
    State(st): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TaskView>, ApiError> {
    let id = task_id(&path_id(id)?)?;
    let row = st
        .ask("look up the task", Command::GetTask(id.clone()))
        .await
        .and_then(|r| match r {
            Reply::Task(row) => Ok(row),
            other => Err(unexpected("look up the task", &other)),
        })?
        .ok_or_else(|| ApiError::not_found(format!("no node knows a task {id}")))?;
    Ok(Json(TaskView::from(&row)))
}

async fn logs(
    State(st): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    q: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = task_id(&path_id(id)?)?;
    let q = params(q)?;
    let stream = match q.get("stream").map(String::as_str) {
        None | Some("") | Some("stdout") => LogStream::Stdout,
        Some("stderr") => LogStream::Stderr,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "stream {other:?} is not stdout or stderr"
            )));
        }
    };
    let number = |key: &str, default: u64| -> Result<u64, ApiError> {
        match q.get(key).filter(|s| !s.is_empty()) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                ApiError::bad_request(format!("{key} {v:?} is not a non-negative whole number"))
            }),
        }
    };
    let offset = number("offset", 0)?;
    let max_bytes = number("max_bytes", u64::from(DEFAULT_LOG_BYTES))?
        .clamp(1, u64::from(MAX_LOG_CHUNK)) as u32;
    let text_wanted = match q.get("format").map(String::as_str) {
        Some("text") => true,
        Some("json") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format {other:?} is not json or text"
            )));
        }
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.starts_with("text/plain")),
    };
    let chunk = st
        .ask(
            "read the task's log",
            Command::ReadLog(agora_protocol::wire::ReadLog {
                request_id: 0,
                task_id: id.clone(),
                stream,
                offset,
                max_bytes,
            }),
        )
        .await
        .and_then(|r| match r {
            // No data and a reason: the task or its log is unknown.
            Reply::Log(c) if c.data.is_empty() && c.error.is_some() => Err(CommandError::new(
                agora_protocol::wire::ErrorCode::UnknownTask,
                c.error.unwrap_or_default(),
            )
            .into()),
            Reply::Log(c) => Ok(c),
            other => Err(unexpected("read the task's log", &other)),
        })?;
    if let Some(err) = chunk.error {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the {stream:?} log of {id} failed: {err}"),
        ));
    }
    // Stop before a character cut in two at the end of the chunk, so the next
    // read (from next_offset) starts on a character boundary.
    let mut data = chunk.data;
    let mut next_offset = chunk.next_offset;
    let mut eof = chunk.eof;
    if let Err(e) = std::str::from_utf8(&data)
        && e.error_len().is_none()
    {
        let cut = data.len() - e.valid_up_to();
        data.truncate(e.valid_up_to());
        next_offset = next_offset.saturating_sub(cut as u64);
        eof = false;
    }
    let stream_name = match stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
    };
    if text_wanted {
        let mut resp = (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            Body::from(data),
        )
            .into_response();
        let h = resp.headers_mut();
        h.insert("x-agora-offset", HeaderValue::from(offset));
        h.insert("x-agora-next-offset", HeaderValue::from(next_offset));
        h.insert(
            "x-agora-eof",
            HeaderValue::from_static(if eof { "true" } else { "false" }),
        );
        return Ok(resp);
    }
    Ok(Json(json!({
        "task_id": id.as_str(),
        "stream": stream_name,
        "offset": offset,
        "next_offset": next_offset,
        "eof": eof,
        "data": String::from_utf8_lossy(&data),
    }))
    .into_response())
}

async fn frameworks(State(st): State<AppState>) -> Json<serde_json::Value> {
    let snap = st.snapshot();
    let mut rows = snap.frameworks.clone();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    Json(json!({ "frameworks": rows }))
}

async fn submit(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    st.authorize(&headers)?;
    let bytes = read_body(&headers, body, st.inner.config.max_body_bytes).await?;
    let specs = submit_specs(&bytes).map_err(ApiError::bad_request)?;
    let ids = st
        .ask(
            "submit the tasks",
            Command::Submit(agora_protocol::wire::Submit {
                request_id: 0,
                tasks: specs,
            }),
        )
        .await
        .and_then(|r| match r {
            Reply::Submitted(s) => Ok(s.task_ids),
            other => Err(unexpected("submit the tasks", &other)),
        })?;
    st.forget_listing().await;
    let ids: Vec<&str> = ids.iter().map(TaskId::as_str).collect();
    Ok((StatusCode::ACCEPTED, Json(json!({ "task_ids": ids }))).into_response())
}

/// Reads a request body of at most `limit` bytes. A larger body is a 413;
/// up to four times the limit is read and dropped first, so that the client,
/// still sending, gets the answer rather than a reset connection. A body
/// that does not arrive whole within [`super::server::BODY_READ_TIMEOUT`]
/// is a 408 (the connection closes: the rest is never read).
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let limit_s = super::server::BODY_READ_TIMEOUT.as_secs();
    match tokio::time::timeout(
        super::server::BODY_READ_TIMEOUT,
        read_body_whole(headers, body, limit),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => {
            super::metrics::EdgeCounters::bump(&super::EDGE.http_body_timeouts);
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {limit_s} s; send the whole body at once"
                ),
            ))
        }
    }
}

async fn read_body_whole(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {limit} bytes, this node's limit; send a \
                 smaller one (split a large submit into several)"
            ),
        )
    };
    let drain_limit = limit.saturating_mul(4);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > drain_limit as u64) {
        return Err(too_large());
    }
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen <= limit {
                buf.extend_from_slice(&data);
            } else if seen > drain_limit {
                break;
            }
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(buf)
}

async fn kill(
    State(st): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    st.authorize(&headers)?;
    let id = task_id(&path_id(id)?)?;
    st.ask(
        "kill the task",
        Command::Kill(agora_protocol::wire::Kill {
            task_id: id.clone(),
        }),
    )
    .await
    .and_then(|r| match r {
        Reply::KillSent(_) => Ok(()),
        other => Err(unexpected("kill the task", &other)),
    })?;
    st.forget_listing().await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "task_id": id.as_str(), "kill": "requested" })),
    )
        .into_response())
}
