//! Shared by the HTTP tests: a test server on a real loopback listener, a
//! small HTTP/1.1 client (hyper), a realistic cluster snapshot, and a
//! stand-in for the agent.
//!
//! The stand-in ([`FakeAgent`]) answers the real [`ApiRequest`]s from a small
//! task table, so that the router's edge cases (timeouts, odd logs, a large
//! fixture cluster) can be tested without a cluster; the real agent is
//! tested over a 3-node cluster in http_cluster.rs. Everything else is real:
//! the router, `serve`, TCP on 127.0.0.1:0, HTTP/1.1.

#![allow(dead_code)]

pub mod browser;
mod fixture;

use fixture::fw_id;
pub use fixture::{NODES, cluster_snapshot};

use agora_node::http::{self, ApiRequest, ApiSnapshot, HttpConfig, Metrics};
use agora_node::surface::{Command, Reply};
use agora_protocol::ids::{NodeId, TaskId};
use agora_protocol::task::TaskState;
use agora_protocol::wire::{ErrorCode, LogChunk, LogStream, Submitted, TaskPage, TaskRow};
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How the stand-in agent behaves.
pub enum Agent {
    /// Answers every command from its task table.
    Fake(FakeAgent),
    /// Takes commands and never answers (the HTTP side must time out).
    Silent,
}

/// A running server and the handles a test drives it with.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The config's bearer token, which [`TestServer::get`] sends.
    pub token: Option<String>,
    pub snapshot_tx: watch::Sender<Arc<ApiSnapshot>>,
    pub metrics: Arc<Metrics>,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    agent: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Binds 127.0.0.1:0 and serves with `config` (its `listen` is ignored).
    pub async fn start(config: HttpConfig, snapshot: ApiSnapshot, agent: Agent) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = config.token.clone();
        let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(snapshot));
        let (command_tx, command_rx) = mpsc::channel(http::COMMAND_QUEUE);
        let metrics = Arc::new(Metrics::new());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(http::serve(
            listener,
            config,
            snapshot_rx,
            command_tx,
            metrics.clone(),
            async move {
                let _ = stop_rx.await;
            },
        ));
        let agent = match agent {
            Agent::Fake(fake) => tokio::spawn(fake.run(command_rx)),
            Agent::Silent => tokio::spawn(async move {
                let mut rx = command_rx;
                let mut held = Vec::new();
                while let Some(cmd) = rx.recv().await {
                    held.push(cmd); // keep the reply senders alive, never answer
                }
            }),
        };
        TestServer {
            addr,
            token,
            snapshot_tx,
            metrics,
            shutdown: Some(stop_tx),
            server,
            agent,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET with the config's bearer token, if it has one (reads need it
    /// unless the config's `public_read`).
    pub async fn get(&self, path: &str) -> Resp {
        match &self.token {
            Some(t) => {
                let auth = format!("Bearer {t}");
                request(self.addr, "GET", path, &[("authorization", &auth)], None).await
            }
            None => request(self.addr, "GET", path, &[], None).await,
        }
    }

    /// GET without any token.
    pub async fn get_anonymous(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, &[], None).await
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        request(
            self.addr,
            method,
            path,
            headers,
            body.map(|b| b.as_bytes().to_vec()),
        )
        .await
    }

    /// Stops the server gracefully and checks it ended without error.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(10), &mut self.server)
            .await
            .expect("server stops after shutdown")
            .unwrap();
        result.unwrap();
        self.agent.abort();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.abort();
        self.agent.abort();
    }
}

/// An HTTP answer.
pub struct Resp {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// The `error` of a JSON error body.
    pub fn error(&self) -> String {
        let v = self.json();
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no \"error\" in {v}"))
            .to_string()
    }
}

/// One HTTP/1.1 request over a fresh TCP connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Resp {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("host", addr.to_string());
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

// ---------------------------------------------------------------- stand-in agent

/// Answers [`ApiRequest`]s from a task table (in place of the real agent).
pub struct FakeAgent {
    pub tasks: Vec<TaskRow>,
    pub logs: BTreeMap<(String, &'static str), Vec<u8>>,
    pub unreachable: Vec<NodeId>,
    next_seq: u64,
}

impl FakeAgent {
    pub fn new(tasks: Vec<TaskRow>) -> Self {
        let mut logs = BTreeMap::new();
        for t in &tasks {
            if t.node.is_some() {
                let node = t.node.as_ref().map(NodeId::as_str).unwrap_or("");
                logs.insert(
                    (t.task_id.to_string(), "stdout"),
                    format!(
                        "{} starting on {node}\nprocessing batch 1/3\nprocessing batch 2/3\n",
                        t.task_id
                    )
                    .into_bytes(),
                );
                logs.insert(
                    (t.task_id.to_string(), "stderr"),
                    b"warning: cache cold\n".to_vec(),
                );
            }
        }
        logs.insert(
            ("ml.1".to_string(), "stdout"),
            "température: 20°C\n".as_bytes().to_vec(),
        );
        FakeAgent {
            tasks,
            logs,
            unreachable: Vec::new(),
            next_seq: 100,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<ApiRequest>) {
        while let Some(req) = rx.recv().await {
            let reply = self.answer(req.command);
            let _ = req.reply.send(reply);
        }
    }

    fn answer(&mut self, cmd: Command) -> Reply {
        match cmd {
            Command::ListTasks(q) => Reply::Tasks(TaskPage {
                request_id: q.request_id,
                matched: self.tasks.len() as u64,
                tasks: self.tasks.clone(),
                unreachable: self.unreachable.clone(),
            }),
            Command::GetTask(id) => {
                Reply::Task(self.tasks.iter().find(|t| t.task_id == id).cloned())
            }
            Command::ReadLog(r) => {
                let name = match r.stream {
                    LogStream::Stdout => "stdout",
                    LogStream::Stderr => "stderr",
                };
                match self.logs.get(&(r.task_id.to_string(), name)) {
                    None => Reply::error(
                        ErrorCode::UnknownTask,
                        format!("no node ran a task {}", r.task_id),
                        None,
                    ),
                    Some(data) => {
                        let start = (r.offset as usize).min(data.len());
                        let end = (start + r.max_bytes as usize).min(data.len());
                        Reply::Log(LogChunk {
                            request_id: 0,
                            task_id: r.task_id,
                            data: data[start..end].to_vec(),
                            next_offset: end as u64,
                            eof: end == data.len(),
                            error: None,
                        })
                    }
                }
            }
            Command::Submit(s) => {
                let fw = fw_id("http");
                let mut ids = Vec::new();
                for spec in s.tasks {
                    self.next_seq += 1;
                    let id = TaskId::for_framework(&fw, self.next_seq);
                    self.tasks.push(TaskRow {
                        task_id: id.clone(),
                        name: spec.name.clone(),
                        framework: fw.clone(),
                        state: TaskState::Staging,
                        node: None,
                        exit_code: None,
                        resources: spec.resources,
                        reason: None,
                    });
                    ids.push(id);
                }
                Reply::Submitted(Submitted {
                    request_id: s.request_id,
                    task_ids: ids,
                })
            }
            Command::Kill(k) => match self.tasks.iter_mut().find(|t| t.task_id == k.task_id) {
                Some(t) => {
                    t.state = TaskState::Killed;
                    Reply::KillSent(k.task_id)
                }
                None => Reply::error(
                    ErrorCode::UnknownTask,
                    format!("no node knows a task {}", k.task_id),
                    None,
                ),
            },
            other => Reply::error(
                ErrorCode::InvalidSpec,
                format!("{other:?} is not an HTTP command"),
                None,
            ),
        }
    }
}
