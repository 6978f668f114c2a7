//! The CLI as a client: every request has a timeout (`--timeout`), so a node
//! that hangs (SIGSTOP) gets a one-line error instead of a CLI that never
//! returns, also in the middle of `run --wait`; and `run --count 0` is
//! refused.

mod common;

use common::{ChildGuard, Cluster, Node, exe, exit_by, wait_for};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A stopped agent, resumed (SIGCONT) on drop so that the cluster's own
/// guard can kill it.
struct Stopped(u32);

impl Stopped {
    fn new(node: &Node) -> Stopped {
        let pid = node.pid();
        let ok = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -STOP {pid}");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// Runs the CLI against `node` in the background, stderr to a file.
fn spawn_cli(node: &Node, err: &std::path::Path, args: &[&str]) -> ChildGuard {
    let child = Command::new(exe())
        .arg("--socket")
        .arg(node.socket())
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(err).unwrap())
        .spawn()
        .unwrap();
    ChildGuard(child)
}

#[test]
fn ps_against_a_stopped_node_fails_with_one_line_within_its_timeout() {
    let cluster = Cluster::start(1);
    let node = &cluster.nodes[0];
    let _stopped = Stopped::new(node);
    let err = cluster.root.path().join("ps.stderr");
    let mut ps = spawn_cli(node, &err, &["ps", "--timeout", "2"]);
    let status = exit_by(&mut ps, Duration::from_secs(30), "agora ps --timeout 2");
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the agora node at {} did not answer within 2 s; is it stopped or overloaded?",
            node.socket().display()
        )),
        "{stderr}"
    );
}

#[test]
fn run_wait_reports_a_node_that_stops_answering() {
    let cluster = Cluster::start(1);
    let node = &cluster.nodes[0];
    let err = cluster.root.path().join("run.stderr");
    let mut run = spawn_cli(
        node,
        &err,
        &["--timeout", "2", "run", "--wait", "--", "sleep", "20"],
    );
    let task = wait_for("the task to run", Duration::from_secs(30), || {
        node.ps()?
            .iter()
            .find(|r| r["state"] == "running")
            .and_then(|r| r["id"].as_str().map(str::to_string))
    });
    let stopped = Stopped::new(node);
    let status = exit_by(
        &mut run,
        Duration::from_secs(30),
        "agora run --wait against a stopped node",
    );
    drop(stopped);
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("did not answer within 2 s; is it stopped or overloaded?"),
        "{stderr}"
    );
    // Leave no task behind the agent.
    let kill = node.cli(&["kill", &task]);
    assert!(
        kill.status.success(),
        "{}",
        String::from_utf8_lossy(&kill.stderr)
    );
    wait_for("the task to be killed", Duration::from_secs(30), || {
        node.ps()?
            .iter()
            .any(|r| r["id"] == task.as_str() && r["state"] == "killed")
            .then_some(())
    });
}

#[test]
fn run_refuses_count_zero_and_counts_past_the_task_limit() {
    let cluster = Cluster::start(1);
    let node = &cluster.nodes[0];
    let out = node.cli(&["run", "--count", "0", "--", "true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--count 0 was accepted: {stderr}");
    assert!(stderr.contains("--count"), "{stderr}");
    // Nor more than a framework may have unfinished (it built 4e9 specs).
    let out = node.cli(&["run", "--count", "4000000000", "--", "true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a huge --count was accepted: {stderr}"
    );
    assert!(stderr.contains("--count"), "{stderr}");
    // Nothing reached the node.
    assert_eq!(node.ps().map(|rows| rows.len()), Some(0));
}
