//! Framework sessions on a real agent, through the raw JSON socket: what a
//! framework is told and what the node keeps about its tasks (issue 11).
//!
//! - a burst of terminal events larger than any queue is never lost;
//! - an empty submit is refused;
//! - a framework forgotten after its failover timeout keeps its tasks' rows;
//! - a full framework table never evicts the HTTP API's own framework;
//! - offers are paced at one frame per second from the subscribe answer on.

mod common;

use common::http::request;
use common::json::{error_code, frame, json_client, read_frame};
use common::{Cluster, wait_for};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn send(s: &mut UnixStream, v: &Value) {
    s.write_all(&frame(v.to_string().as_bytes())).unwrap();
}

fn register(s: &mut UnixStream, name: &str, failover_ms: u32) -> String {
    send(
        s,
        &json!({"register": {"name": name, "role": "", "weight": 1,
            "failover_timeout_ms": failover_ms, "framework_id": null}}),
    );
    let r = read_frame(s).expect("an answer to register");
    r["registered"]["framework_id"]
        .as_str()
        .unwrap_or_else(|| panic!("not registered: {r}"))
        .to_string()
}

fn spec(name: &str, cpu_millis: u64, argv: &[&str], placement_timeout_ms: u32) -> Value {
    json!({"name": name, "command": {"argv": argv}, "env": {},
        "resources": {"cpu_millis": cpu_millis, "mem_mib": 16, "disk_mib": 0, "gpus": 0, "ports": 0},
        "constraints": [], "priority": 0, "kill_grace_ms": 1000,
        "placement_timeout_ms": placement_timeout_ms})
}

/// Reads answers until one carries `request_id` (status events and offers
/// may come first).
fn answer(s: &mut UnixStream, request_id: u64) -> Value {
    loop {
        let v = read_frame(s).expect("an answer");
        let rid = v
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|b| b["request_id"].as_u64());
        if rid == Some(request_id) {
            return v;
        }
    }
}

fn list_tasks(node: &common::Node) -> Vec<Value> {
    let mut s = json_client(&node.socket());
    send(&mut s, &json!({"list_tasks": {"request_id": 7}}));
    let v = answer(&mut s, 7);
    v["tasks"]["tasks"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_burst_of_terminal_events_reaches_the_framework_whole() {
    // 30,000 tasks that can never be placed fail at about the same time,
    // while the framework reads nothing, then reads without acknowledging.
    // The old queue kept 10,000 unacknowledged events and dropped terminal
    // ones past that, and re-sent by seq so that the newest were starved:
    // the fate of the rest could never be learned.
    let c = Cluster::start(1);
    let mut s = json_client(&c.nodes[0].socket());
    register(&mut s, "burst", 60_000);
    let total = 30_000;
    let mut ids = BTreeSet::new();
    // Batches of 2,000 keep each frame under the 1 MiB limit.
    for rid in 1..=(total / 2_000) as u64 {
        let n = 2_000;
        let tasks: Vec<Value> = (0..n)
            .map(|_| spec("huge", 1_000_000, &["true"], 500))
            .collect();
        send(
            &mut s,
            &json!({"submit": {"request_id": rid, "tasks": tasks}}),
        );
        let a = answer(&mut s, rid);
        let got = a["submitted"]["task_ids"]
            .as_array()
            .unwrap_or_else(|| panic!("submit refused: {a}"));
        ids.extend(got.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    assert_eq!(ids.len(), total);
    // Read nothing until they have all failed: the node's queues take the
    // whole burst.
    wait_for("the tasks to fail", Duration::from_secs(60), || {
        let rows = list_tasks(&c.nodes[0]);
        let mine: Vec<&Value> = rows
            .iter()
            .filter(|r| r["task_id"].as_str().is_some_and(|t| ids.contains(t)))
            .collect();
        (!mine.is_empty() && mine.iter().all(|r| r["state"] == "failed")).then_some(())
    });
    let mut ended = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    while ended.len() < total && Instant::now() < deadline {
        let Some(v) = read_frame(&mut s) else {
            continue;
        };
        if let Some(st) = v.get("status") {
            let state = st["status"]["state"].as_str().unwrap_or_default();
            if matches!(state, "failed" | "finished" | "killed" | "lost")
                && let Some(id) = st["status"]["task_id"].as_str()
            {
                ended.insert(id.to_string());
            }
        }
    }
    assert_eq!(
        ended.len(),
        total,
        "terminal events heard for {} of {total} tasks",
        ended.len()
    );
    assert!(ended.is_subset(&ids));
}

#[test]
fn an_empty_submit_is_refused() {
    let c = Cluster::start(1);
    let mut s = json_client(&c.nodes[0].socket());
    register(&mut s, "empty", 0);
    send(&mut s, &json!({"submit": {"request_id": 3, "tasks": []}}));
    let a = answer(&mut s, 3);
    assert_eq!(error_code(&a), "invalid_spec", "{a}");
}

#[test]
fn a_framework_forgotten_after_failover_keeps_its_tasks_rows() {
    let c = Cluster::start(1);
    let node = &c.nodes[0];
    let id = {
        let mut s = json_client(&node.socket());
        register(&mut s, "brief", 300);
        send(
            &mut s,
            &json!({"submit": {"request_id": 1, "tasks": [spec("nap", 100, &["sleep", "300"], 0)]}}),
        );
        let a = answer(&mut s, 1);
        let id = a["submitted"]["task_ids"][0].as_str().unwrap().to_string();
        wait_for("the task to run", Duration::from_secs(30), || {
            let rows = list_tasks(node);
            rows.iter()
                .any(|r| r["task_id"] == id.as_str() && r["state"] == "running")
                .then_some(())
        });
        id
        // The connection closes here: the failover timeout starts.
    };
    wait_for(
        "the framework to be failed over and forgotten",
        Duration::from_secs(30),
        || node.log().contains("framework forgotten").then_some(()),
    );
    let rows = list_tasks(node);
    let row = rows
        .iter()
        .find(|r| r["task_id"] == id.as_str())
        .unwrap_or_else(|| panic!("task {id} vanished from list_tasks: {rows:?}"));
    assert_eq!(row["state"], "killed", "{row}");
}

#[test]
fn a_full_framework_table_never_evicts_the_http_framework() {
    let mut c = Cluster::new();
    let key = c.key.clone();
    let token_file = c.root.path().join("http-token");
    std::fs::write(&token_file, "token-0123456789abcdef\n").unwrap();
    let addr = common::free_tcp_addr();
    c.add(
        "n1",
        &key,
        &[
            "--http",
            &addr,
            "--http-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    c.wait_formed(1);
    let node = &c.nodes[0];
    // 256 frameworks that register and go away fill the table.
    for i in 0..256 {
        let mut s = json_client(&node.socket());
        register(&mut s, &format!("f{i}"), 0);
    }
    // The next registrations push out idle ones, never the node's own.
    for i in 0..4 {
        let mut s = json_client(&node.socket());
        register(&mut s, &format!("g{i}"), 0);
    }
    let auth = ("Authorization", "Bearer token-0123456789abcdef");
    let body = r#"{"cpus": 0.1, "mem": 16, "command": ["true"]}"#;
    let r = request(&addr, "POST", "/api/v1/tasks", &[auth], Some(body)).unwrap();
    assert!(
        (200..300).contains(&r.status),
        "HTTP submit after a full table: {} {}",
        r.status,
        r.text()
    );
}

#[test]
fn offers_come_at_most_once_a_second_from_the_subscribe_on() {
    let c = Cluster::start(1);
    let mut s = json_client(&c.nodes[0].socket());
    register(&mut s, "offers", 0);
    send(&mut s, &json!("subscribe_offers"));
    let first = read_frame(&mut s).expect("the first offers frame");
    assert!(first.get("offers").is_some(), "{first}");
    let t0 = Instant::now();
    // The framework's own placement changes the view at once.
    send(
        &mut s,
        &json!({"submit": {"request_id": 1, "tasks": [spec("p", 500, &["sleep", "30"], 0)]}}),
    );
    let second = loop {
        let v = read_frame(&mut s).expect("a second offers frame after the placement");
        if v.get("offers").is_some() {
            break t0.elapsed();
        }
    };
    assert!(
        second >= Duration::from_millis(950),
        "a second offers frame {second:?} after the first"
    );
}
