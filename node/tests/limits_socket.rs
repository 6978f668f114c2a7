//! The framework socket's connection limit (issue 12: 1,100 connections
//! reset the CLI's): the CLI works while 1,000 idle connections are held;
//! past the documented 1,024 a new connection is told `busy`, naming the
//! limit, before it is closed, and counted; closing some lets clients in
//! again.

mod common;
mod limits_support;
mod prom;

use common::json::{closed, connect, error_code, frame, json_client, read_frame};
use common::wait_for;
use limits_support::{metric, one_node, raise_open_files};
use std::io::Write;
use std::time::Duration;

/// The node's documented limit (`agora_node::socket::MAX_CONNECTIONS`).
const LIMIT: usize = 1024;

#[test]
fn the_cli_works_beside_1000_idle_connections_and_those_past_the_limit_are_told_busy() {
    assert_eq!(agora_node::socket::MAX_CONNECTIONS, LIMIT);
    if !raise_open_files(4096) {
        return;
    }
    let (c, http) = one_node(&[]);
    let node = &c.nodes[0];
    let sock = node.socket();

    let mut held: Vec<_> = (0..1000).map(|_| json_client(&sock)).collect();
    let out = node.cli(&["nodes", "--json"]);
    assert!(
        out.status.success(),
        "the CLI beside 1,000 idle connections: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = node.cli(&["run", "--wait", "--", "true"]);
    assert!(
        out.status.success(),
        "a task run beside 1,000 idle connections: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 100 more: the node takes them up to its limit and tells the rest.
    let mut busy = 0;
    for _ in 0..100 {
        let mut s = connect(&sock);
        s.write_all(&frame(b"agora/1 json")).unwrap();
        let first = read_frame(&mut s).expect("an answer to the handshake, not a reset");
        if first.get("welcome").is_some() {
            held.push(s);
            continue;
        }
        assert_eq!(error_code(&first), "busy", "{first}");
        let message = first["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("at most 1024 socket connections"),
            "{message}"
        );
        assert!(closed(&mut s));
        busy += 1;
    }
    assert!(held.len() <= LIMIT, "{} connections served", held.len());
    assert!(busy >= 1100 - LIMIT, "only {busy} told busy");

    // The CLI, now past the limit, says so in one line.
    let out = node.cli(&["nodes"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused the handshake") && err.contains("at most 1024 socket connections"),
        "{err}"
    );
    let refused = metric(&http, "agora_socket_connections_refused_total", &[]);
    assert!(
        refused >= (busy + 1) as f64,
        "{refused} counted, {busy} + 1 refused"
    );
    assert!(metric(&http, "agora_socket_connections", &[]) >= held.len() as f64);

    // Closing some lets clients in again.
    held.truncate(900);
    wait_for(
        "the CLI to be served again",
        Duration::from_secs(30),
        || node.nodes(),
    );
    drop(held);
}
