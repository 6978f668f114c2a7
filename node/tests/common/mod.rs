//! Harness for multi-process cluster tests: starts real `agora agent`
//! processes (the binary cargo built for this package, CARGO_BIN_EXE_agora)
//! on loopback with probed free ports, in a temporary directory, and kills
//! every one of them on drop, together with the task supervisors they
//! started (which run in their own sessions so that they outlive an agent),
//! before the directory is removed: a test leaves no process and no file
//! behind. Readiness is polled with deadlines, never assumed after a sleep.
//!
//! These tests live in node/tests/ (not in the agora-tests package) because
//! cargo sets CARGO_BIN_EXE_agora only for tests of the package that
//! defines the binary.

#![allow(dead_code)]

pub mod http;
pub mod json;
pub mod netns;

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
    env: Vec<(String, String)>,
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
            .envs(self.env.iter().map(|(k, v)| (k, v)))
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
    // As the README says to keep it (the agent warns about a wider mode).
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
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
        self.add_with_env(id, key, extra, &[])
    }

    /// [`Cluster::add`] with variables added to the agent's environment.
    pub fn add_with_env(
        &mut self,
        id: &str,
        key: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> usize {
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
        // A default given again in `extra` replaces the default (clap
        // refuses a flag given twice).
        let mut rest = extra.iter();
        while let Some(flag) = rest.next() {
            let replaces = ["--cpus", "--mem", "--gossip-interval-ms"].contains(flag);
            match args.iter().position(|a| a == flag) {
                Some(i) if replaces => {
                    if let Some(v) = rest.next() {
                        args[i + 1] = v.to_string();
                    }
                }
                _ => args.push(flag.to_string()),
            }
        }
        let mut node = Node {
            id: id.into(),
            dir,
            port,
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
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

impl Drop for Cluster {
    fn drop(&mut self) {
        // The agents first (each Node kills and reaps its process), then what
        // they left running, then (after this) the directory.
        self.nodes.clear();
        kill_supervisors_under(self.root.path());
        // TempDir's own drop ignores errors; say what stayed behind.
        if let Err(e) = std::fs::remove_dir_all(self.root.path()) {
            eprintln!("warning: cannot remove {}: {e}", self.root.path().display());
        }
    }
}

/// Kills every task supervisor whose sandbox is under `root` (found by its
/// command line, `agora __supervise ROOT/...`) and every process of its
/// session (the task and the task's children), and waits until all of them
/// are gone (zombies count as gone), so that nothing outlives a test or
/// writes into its directory while it is removed. Call it after the agents
/// are dead, or an agent may start another supervisor meanwhile.
pub fn kill_supervisors_under(root: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    // A killed supervisor's command line reads empty, so its session is
    // remembered: its task still carries it.
    let mut sessions = std::collections::BTreeSet::new();
    loop {
        let procs = processes();
        for p in &procs {
            if p.supervises_under(root) {
                sessions.insert(p.pid);
            }
        }
        let left: Vec<i32> = procs
            .iter()
            .filter(|p| p.state != 'Z' && sessions.contains(&p.session))
            .map(|p| p.pid)
            .collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            eprintln!(
                "warning: processes of task supervisors under {} still alive after 10 s: {left:?}",
                root.display()
            );
            return;
        }
        for pid in left {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One entry of /proc.
struct Proc {
    pid: i32,
    state: char,
    session: i32,
    cmdline: Vec<String>,
}

impl Proc {
    /// Whether this is `agora __supervise SANDBOX` with SANDBOX under `root`.
    fn supervises_under(&self, root: &Path) -> bool {
        self.cmdline.get(1).is_some_and(|a| a == "__supervise")
            && self
                .cmdline
                .get(2)
                .is_some_and(|sandbox| Path::new(sandbox).starts_with(root))
    }
}

/// Every process this user can see (those that vanish meanwhile are skipped).
fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid pgrp session ...; comm may hold spaces.
            let mut rest = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
            let state = rest.next()?.chars().next()?;
            let session = rest.nth(2)?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some(Proc {
                pid,
                state,
                session,
                cmdline,
            })
        })
        .collect()
}

/// A child process killed and reaped on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for the child to exit by `deadline`; a hang fails the test with
/// `what` instead of stalling it.
pub fn exit_by(child: &mut ChildGuard, deadline: Duration, what: &str) -> std::process::ExitStatus {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < end,
            "{what}: still running after {deadline:?} (hung or deadlocked?)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A loopback address with a free TCP port (probed; bind it right after).
pub fn free_tcp_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// Resumes a stopped (SIGSTOP) process when dropped, even when an assertion
/// fails, so that the cluster's guard can stop it.
pub struct Resume(pub u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

impl Node {
    /// Sets flag `flag` (e.g. `--cpus`) to `value` for the next
    /// [`Node::start`]: replaces its value, or appends the flag.
    pub fn set_arg(&mut self, flag: &str, value: &str) {
        match self.args.iter().position(|a| a == flag) {
            Some(i) if i + 1 < self.args.len() => self.args[i + 1] = value.to_string(),
            _ => self.args.extend([flag.to_string(), value.to_string()]),
        }
    }
}
