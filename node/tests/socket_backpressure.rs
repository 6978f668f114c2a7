//! The framework socket reads and writes independently: a client that
//! writes without reading (or acks from inside its read loop) cannot
//! deadlock against the node, and a client that leaves too much unread is
//! disconnected instead of growing the node's memory (docs/FRAMEWORK_API.md,
//! "Flow control").
//!
//! Before the fix the node's connection task stopped reading while it
//! waited to write, so `agora run --count 5000 --cpus 100
//! --placement-timeout 3 --wait` (5000 unplaceable tasks whose failures
//! arrive at once, each acked inline) hung forever at 1/5000, and the raw
//! client below blocked in `write` after a few hundred KiB.

mod common;

use common::json::{frame, json_client, read_frame};
use common::{ChildGuard, Cluster, exe, exit_by, wait_for};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A JSON connection registered as a framework.
fn registered(sock: &std::path::Path) -> UnixStream {
    let mut s = json_client(sock);
    s.write_all(&frame(
        br#"{"register":{"name":"raw","role":"","weight":1,"failover_timeout_ms":0,"framework_id":null}}"#,
    ))
    .unwrap();
    let answer = read_frame(&mut s).expect("an answer to register");
    assert!(answer.get("registered").is_some(), "{answer}");
    s
}

#[test]
fn run_wait_with_thousands_of_failures_at_once_finishes() {
    let cluster = Cluster::start(1);
    let node = &cluster.nodes[0];
    let err_path = cluster.root.path().join("run.stderr");
    let child = Command::new(exe())
        .arg("--socket")
        .arg(node.socket())
        .args([
            "run",
            "--count",
            "5000",
            "--cpus",
            "100",
            "--placement-timeout",
            "3",
            "--wait",
            "--",
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let status = exit_by(
        &mut child,
        Duration::from_secs(60),
        "agora run --count 5000 --cpus 100 --wait",
    );
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("5000 tasks: 0 finished, 5000 did not finish ok"),
        "{stderr}"
    );
    // The progress line shows the elapsed time.
    let last = stderr
        .split(['\r', '\n'])
        .rfind(|l| l.contains(" ended, "))
        .unwrap();
    assert!(
        last.starts_with("5000/5000 ended, 0 running, 5000 not finished ok, "),
        "{last:?}"
    );
    let secs = last
        .trim_end()
        .rsplit(", ")
        .next()
        .and_then(|t| t.strip_suffix(" s"))
        .and_then(|t| t.parse::<f64>().ok());
    assert!(secs.is_some_and(|s| s > 0.0), "{last:?}");
}

#[test]
fn a_client_that_writes_without_reading_is_still_read() {
    let cluster = Cluster::start(1);
    let sock = cluster.nodes[0].socket();
    let mut s = registered(&sock);
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    // 3000 requests whose answers (about 300 bytes each) overflow the
    // socket buffers, and between them 15,000 acks (no answer) of about
    // 160 bytes: some 3 MB written before anything is read.
    let fake = format!("raw-00000000@n1.{}", "9".repeat(100));
    let ack = frame(format!(r#"{{"ack":{{"task_id":"{fake}","seq":1}}}}"#).as_bytes());
    let mut written = 0usize;
    for i in 1..=3000u32 {
        let mut batch = frame(format!(r#"{{"list_nodes":{{"request_id":{i}}}}}"#).as_bytes());
        for _ in 0..5 {
            batch.extend_from_slice(&ack);
        }
        s.write_all(&batch).unwrap_or_else(|e| {
            panic!(
                "the node stopped reading after {written} bytes while its answers went unread: {e}"
            )
        });
        written += batch.len();
    }
    // Now read: every answer is there, in order.
    for i in 1..=3000u64 {
        let answer = read_frame(&mut s).unwrap_or_else(|| panic!("answer {i} missing"));
        assert_eq!(answer["nodes"]["request_id"], i, "{answer}");
    }
    // And the connection still works.
    s.write_all(&frame(br#"{"list_nodes":{"request_id":9999}}"#))
        .unwrap();
    assert_eq!(read_frame(&mut s).unwrap()["nodes"]["request_id"], 9999);
}

#[test]
fn a_client_that_never_reads_is_disconnected_and_others_are_served() {
    let cluster = Cluster::start(1);
    let node = &cluster.nodes[0];
    let mut s = registered(&node.socket());
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    // 80,000 answers of about 300 bytes: past the node's 16 MiB bound on
    // unread answers. The node closes the connection; writing then fails.
    let mut closed = false;
    for i in 1..=80_000u32 {
        let req = frame(format!(r#"{{"list_nodes":{{"request_id":{i}}}}}"#).as_bytes());
        match s.write_all(&req) {
            Ok(()) => {}
            Err(e) => {
                assert_ne!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock,
                    "the node stopped reading after {i} requests"
                );
                closed = true;
                break;
            }
        }
    }
    if !closed {
        // Everything was written; the node must close once it has answered.
        let mut n = 0;
        while read_frame(&mut s).is_some() {
            n += 1;
            assert!(
                n < 80_000,
                "all 80,000 answers were kept for a client that did not read"
            );
        }
    }
    wait_for(
        "the node to log the disconnect",
        Duration::from_secs(20),
        || node.log().contains("answers unread").then_some(()),
    );
    // The node serves everyone else as before.
    assert!(node.nodes().is_some_and(|n| n.len() == 1));
}
