//! Shared by the HTTP tests: a test server on a real loopback listener, a
//! small HTTP/1.1 client (hyper), a realistic cluster snapshot, and a
//! stand-in for the agent.
//!
//! The stand-in ([`FakeAgent`]) answers the real [`ApiCommand`]s from a small
//! task table, in place of the agent until the HTTP module is wired into it
//! (the agent is being written on the `nodecore` branch). Everything else is
//! real: the router, `serve`, TCP on 127.0.0.1:0, HTTP/1.1.

#![allow(dead_code)]

pub mod browser;

use agora_node::http::{
    self, ApiCommand, ApiSnapshot, CellRow, CommandError, FrameworkRow, HttpConfig, Metrics,
    TaskListing,
};
use agora_protocol::constraint::Attributes;
use agora_protocol::ids::{FrameworkId, NodeId, TaskId};
use agora_protocol::resources::Resources;
use agora_protocol::task::TaskState;
use agora_protocol::wire::{ErrorCode, LogChunk, LogStream, NodeRow, TaskRow};
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
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

    pub async fn get(&self, path: &str) -> Resp {
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
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
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

// ---------------------------------------------------------------- fixture

pub fn node_id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

pub fn fw_id(s: &str) -> FrameworkId {
    FrameworkId::new(s).unwrap()
}

pub fn task_id(s: &str) -> TaskId {
    TaskId::new(s).unwrap()
}

/// The five nodes of the fixture: id, zone, cpus (millicores), mem (MiB).
pub const NODES: [(&str, &str, u64, u64); 5] = [
    ("node-a", "eu-1", 8000, 16384),
    ("node-b", "eu-1", 8000, 16384),
    ("node-c", "eu-2", 16000, 65536),
    ("node-d", "eu-2", 4000, 8192),
    ("node-e", "us-1", 8000, 32768),
];

/// A fixture task: id, name, framework, state, node index, cpus, mem.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    TaskState,
    Option<usize>,
    u64,
    u64,
);

/// Tasks of the fixture.
fn task_table() -> Vec<TaskRow> {
    let rows: [Row; 20] = [
        (
            "batch.1",
            "etl",
            "batch",
            TaskState::Running,
            Some(0),
            2000,
            4096,
        ),
        (
            "batch.2",
            "etl",
            "batch",
            TaskState::Running,
            Some(1),
            2000,
            4096,
        ),
        (
            "batch.3",
            "etl",
            "batch",
            TaskState::Running,
            Some(2),
            2000,
            4096,
        ),
        (
            "batch.4",
            "etl",
            "batch",
            TaskState::Running,
            Some(3),
            2000,
            4096,
        ),
        (
            "batch.5",
            "etl",
            "batch",
            TaskState::Finished,
            Some(4),
            2000,
            4096,
        ),
        (
            "batch.6",
            "etl",
            "batch",
            TaskState::Finished,
            Some(0),
            2000,
            4096,
        ),
        (
            "batch.7",
            "etl",
            "batch",
            TaskState::Failed,
            Some(1),
            2000,
            4096,
        ),
        (
            "batch.8",
            "report",
            "batch",
            TaskState::Staging,
            None,
            4000,
            8192,
        ),
        (
            "web.1",
            "frontend",
            "web",
            TaskState::Running,
            Some(2),
            1000,
            1024,
        ),
        (
            "web.2",
            "frontend",
            "web",
            TaskState::Running,
            Some(4),
            1000,
            1024,
        ),
        (
            "web.3",
            "frontend",
            "web",
            TaskState::Running,
            Some(0),
            1000,
            1024,
        ),
        (
            "web.4",
            "api",
            "web",
            TaskState::Running,
            Some(2),
            2000,
            2048,
        ),
        (
            "web.5",
            "api",
            "web",
            TaskState::Starting,
            Some(3),
            1500,
            2048,
        ),
        ("web.6", "cache", "web", TaskState::Lost, Some(4), 500, 8192),
        (
            "ml.1",
            "train",
            "ml",
            TaskState::Running,
            Some(2),
            8000,
            32768,
        ),
        (
            "ml.2",
            "train",
            "ml",
            TaskState::Running,
            Some(4),
            4000,
            16384,
        ),
        (
            "ml.3",
            "eval",
            "ml",
            TaskState::Finished,
            Some(1),
            1000,
            2048,
        ),
        ("ml.4", "eval", "ml", TaskState::Killed, Some(3), 1000, 2048),
        ("http.1", "sh", "http", TaskState::Running, Some(1), 100, 0),
        (
            "http.2",
            "sleep",
            "http",
            TaskState::Finished,
            Some(0),
            100,
            0,
        ),
    ];
    rows.iter()
        .map(|(id, name, fw, state, node, cpu, mem)| TaskRow {
            task_id: task_id(id),
            name: (*name).into(),
            framework: fw_id(fw),
            state: *state,
            node: node.map(|i| node_id(NODES[i].0)),
            exit_code: match state {
                TaskState::Finished => Some(0),
                TaskState::Failed => Some(2),
                TaskState::Killed => Some(143),
                _ => None,
            },
            resources: Resources::cpu_mem(*cpu, *mem),
            reason: match state {
                TaskState::Failed => Some("exited with status 2".into()),
                TaskState::Lost => Some("node-e stopped answering".into()),
                _ => None,
            },
        })
        .collect()
}

/// A realistic cluster: 5 nodes (one dead: node-d), 20 tasks, 4 frameworks.
pub fn cluster_snapshot() -> (ApiSnapshot, Vec<TaskRow>) {
    let tasks = task_table();
    let nodes: Vec<NodeRow> = NODES
        .iter()
        .enumerate()
        .map(|(i, (id, zone, cpu, mem))| {
            let used = tasks
                .iter()
                .filter(|t| {
                    t.node.as_ref().map(NodeId::as_str) == Some(*id) && !t.state.is_terminal()
                })
                .fold(Resources::ZERO, |acc, t| acc.saturating_add(&t.resources));
            let total = Resources {
                cpu_millis: *cpu,
                mem_mib: *mem,
                disk_mib: 102_400,
                gpus: u32::from(*id == "node-c"),
                ports: 1000,
            };
            let mut attrs = Attributes::default();
            attrs.insert("os", "linux");
            attrs.insert("arch", "x86_64");
            attrs.insert("zone", *zone);
            attrs.insert("hostname", format!("{id}.example.internal"));
            attrs.insert("rack", format!("r{}", i % 2 + 1));
            NodeRow {
                id: node_id(id),
                addr: format!("10.0.0.{}:7400", i + 11),
                alive: *id != "node-d",
                total,
                free: total.saturating_sub(&used),
                attrs,
            }
        })
        .collect();
    let frameworks = vec![
        fw("batch", "batch", 1, "node-a", 0.25, 4, true),
        fw("web", "web", 2, "node-b", 0.15, 4, true),
        fw("ml", "ml", 1, "node-c", 0.333, 2, true),
        fw("http", "http", 1, "node-a", 0.002, 1, false),
    ];
    let snapshot = ApiSnapshot {
        node_id: node_id("node-a"),
        nodes,
        // This node's own tasks: those homed or running on node-a.
        tasks: tasks
            .iter()
            .filter(|t| {
                t.node.as_ref().map(NodeId::as_str) == Some("node-a")
                    || t.framework.as_str() == "batch"
                    || t.framework.as_str() == "http"
            })
            .cloned()
            .collect(),
        frameworks,
        cells: vec![CellRow {
            id: "cell-0".into(),
            members: 5,
        }],
        produced_at: SystemTime::now(),
    };
    (snapshot, tasks)
}

fn fw(
    id: &str,
    name: &str,
    weight: u32,
    home: &str,
    share: f64,
    active: u32,
    connected: bool,
) -> FrameworkRow {
    FrameworkRow {
        id: fw_id(id),
        name: name.into(),
        weight,
        home_node: node_id(home),
        dominant_share: share,
        allocated: Resources::cpu_mem((share * 44_000.0) as u64, (share * 131_072.0) as u64),
        active_tasks: active,
        connected,
    }
}

// ---------------------------------------------------------------- stand-in agent

/// Answers [`ApiCommand`]s from a task table (in place of the real agent).
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
        FakeAgent {
            tasks,
            logs,
            unreachable: Vec::new(),
            next_seq: 100,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<ApiCommand>) {
        while let Some(cmd) = rx.recv().await {
            self.answer(cmd);
        }
    }

    fn answer(&mut self, cmd: ApiCommand) {
        match cmd {
            ApiCommand::ListTasks { reply } => {
                let _ = reply.send(TaskListing {
                    tasks: self.tasks.clone(),
                    unreachable: self.unreachable.clone(),
                });
            }
            ApiCommand::GetTask { id, reply } => {
                let _ = reply.send(self.tasks.iter().find(|t| t.task_id == id).cloned());
            }
            ApiCommand::ReadLog {
                task_id,
                stream,
                offset,
                max_bytes,
                reply,
            } => {
                let name = match stream {
                    LogStream::Stdout => "stdout",
                    LogStream::Stderr => "stderr",
                };
                let answer = match self.logs.get(&(task_id.to_string(), name)) {
                    None => Err(CommandError::new(
                        ErrorCode::UnknownTask,
                        format!("no node ran a task {task_id}"),
                    )),
                    Some(data) => {
                        let start = (offset as usize).min(data.len());
                        let end = (start + max_bytes as usize).min(data.len());
                        Ok(LogChunk {
                            request_id: 0,
                            task_id,
                            data: data[start..end].to_vec(),
                            next_offset: end as u64,
                            eof: end == data.len(),
                            error: None,
                        })
                    }
                };
                let _ = reply.send(answer);
            }
            ApiCommand::Submit { specs, reply } => {
                let fw = fw_id("http");
                let mut ids = Vec::new();
                for spec in specs {
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
                let _ = reply.send(Ok(ids));
            }
            ApiCommand::Kill { task_id, reply } => {
                let answer = match self.tasks.iter_mut().find(|t| t.task_id == task_id) {
                    Some(t) => {
                        t.state = TaskState::Killed;
                        Ok(())
                    }
                    None => Err(CommandError::new(
                        ErrorCode::UnknownTask,
                        format!("no node knows a task {task_id}"),
                    )),
                };
                let _ = reply.send(answer);
            }
        }
    }
}
