//! Harness for multi-process cluster tests: starts real `agora agent`
//! processes (the binary cargo built for this package, CARGO_BIN_EXE_agora)
//! on loopback with probed free ports, in a temporary directory, and kills
//! every one of them on drop. Readiness is polled with deadlines, never
//! assumed after a sleep.
//!
//! These tests live in node/tests/ (not in the agora-tests package) because
//! cargo sets CARGO_BIN_EXE_agora only for tests of the package that
//! defines the binary.

#![allow(dead_code)]

pub mod http;
pub mod json;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The agora binary under test.
pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_agora")
}

/// A gossip port whose PORT+1 is free for libp2p too.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if port < 65535 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair found");
}

/// Polls `f` every 100 ms until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One agent process.
pub struct Node {
    /// Its node id.
    pub id: String,
    /// Its data dir.
    pub dir: PathBuf,
    /// Gossip port.
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl Node {
    /// The node's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("agora.sock")
    }

    /// Gossip address.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the process.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .unwrap();
        let child = Command::new(exe())
            .args(&self.args)
            .env("RUST_LOG", "info,agora_node=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal and waits for the process to exit; returns its status.
    pub fn signal_and_wait(&mut self, sig: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let ok = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        child.wait().unwrap()
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    /// Runs a CLI command against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(exe())
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap()
    }

    /// `nodes --json` from this node, if it answers.
    pub fn nodes(&self) -> Option<Vec<serde_json::Value>> {
        let out = self.cli(&["nodes", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `ps --json` from this node, if it answers.
    pub fn ps(&self) -> Option<Vec<serde_json::Value>> {
        let out = self.cli(&["ps", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Ids of the nodes this node holds alive.
    pub fn alive(&self) -> Vec<String> {
        self.nodes()
            .unwrap_or_default()
            .iter()
            .filter(|n| n["alive"] == true)
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A set of nodes sharing a key, in one temporary directory.
pub struct Cluster {
    /// The nodes (dropped, hence killed, before the directory).
    pub nodes: Vec<Node>,
    /// The cluster key file.
    pub key: PathBuf,
    /// The temporary directory.
    pub root: tempfile::TempDir,
}

/// Writes a fresh key with `agora keygen`.
pub fn keygen(path: &Path) {
    let out = Command::new(exe()).arg("keygen").output().unwrap();
    assert!(out.status.success());
    std::fs::write(path, &out.stdout).unwrap();
}

impl Cluster {
    /// An empty cluster with a fresh key.
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let key = root.path().join("cluster.key");
        keygen(&key);
        Cluster {
            nodes: Vec::new(),
            key,
            root,
        }
    }

    /// Adds and starts a node seeded with the first node; `extra` flags
    /// are appended (e.g. `--attr role=x`).
    pub fn add(&mut self, id: &str, key: &Path, extra: &[&str]) -> usize {
        let port = free_port();
        let dir = self.root.path().join(id);
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--cluster-key-file".into(),
            key.display().to_string(),
            "--node-id".into(),
            id.into(),
            "--cpus".into(),
            "2".into(),
            "--mem".into(),
            "2048".into(),
            "--gossip-interval-ms".into(),
            "200".into(),
            "--no-cgroups".into(),
        ];
        if let Some(first) = self.nodes.first() {
            args.push("--seeds".into());
            args.push(first.addr());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut node = Node {
            id: id.into(),
            dir,
            port,
            args,
            child: None,
        };
        node.start();
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Starts `n` nodes n1..nN with the cluster key and waits until every
    /// node sees all of them alive.
    pub fn start(n: usize) -> Self {
        let mut c = Cluster::new();
        let key = c.key.clone();
        for i in 1..=n {
            c.add(&format!("n{i}"), &key, &[]);
        }
        c.wait_formed(n);
        c
    }

    /// Waits until every node sees `n` nodes alive.
    pub fn wait_formed(&self, n: usize) {
        for node in &self.nodes {
            wait_for(
                &format!("{} to see {n} live nodes", node.id),
                Duration::from_secs(60),
                || (node.alive().len() == n).then_some(()),
            );
        }
    }
}
