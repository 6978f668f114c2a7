//! Every operator connection (the `agora` CLI) shares the node's one
//! operator framework (issue 11: each `agora run` registered a framework of
//! its own, a node holds at most 256, and the 257th was refused "busy"
//! while the others' tasks ran). Each connection still hears about the
//! tasks it submitted, and only those.

mod common;

use common::Cluster;
use common::json::{frame, json_client, read_frame};
use std::io::Write;
use std::os::unix::net::UnixStream;

fn send(s: &mut UnixStream, v: serde_json::Value) {
    s.write_all(&frame(v.to_string().as_bytes())).unwrap();
}

fn register_operator(s: &mut UnixStream) -> String {
    send(
        s,
        serde_json::json!({"register": {"name": "cli", "role": "operator", "weight": 1,
            "failover_timeout_ms": 1000, "framework_id": null}}),
    );
    let r = read_frame(s).expect("an answer to register");
    r["registered"]["framework_id"]
        .as_str()
        .unwrap_or_else(|| panic!("not registered: {r}"))
        .to_string()
}

/// Submits one task and returns its id.
fn submit(s: &mut UnixStream, rid: u64, argv: &[&str]) -> String {
    send(
        s,
        serde_json::json!({"submit": {"request_id": rid, "tasks": [{"name": "job",
            "command": {"argv": argv}, "env": {}, "resources": {"cpu_millis": 100, "mem_mib": 16,
            "disk_mib": 0, "gpus": 0, "ports": 0}, "constraints": [], "priority": 0,
            "kill_grace_ms": 1000, "placement_timeout_ms": 0}]}}),
    );
    loop {
        let r = read_frame(s).expect("an answer to submit");
        if let Some(ids) = r["submitted"]["task_ids"].as_array() {
            return ids[0].as_str().unwrap().to_string();
        }
        assert!(r.get("error").is_none(), "{r}");
    }
}

#[test]
fn operator_connections_share_one_framework_and_hear_only_their_tasks() {
    let cluster = Cluster::start(1);
    let node = &cluster.nodes[0];
    let mut conns: Vec<UnixStream> = (0..300).map(|_| json_client(&node.socket())).collect();
    let ids: Vec<String> = conns.iter_mut().map(register_operator).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "all 300 operator connections share one framework"
    );
    let (a, rest) = conns.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut rest[0]);
    let ta = submit(a, 1, &["sleep", "0.2"]);
    let tb = submit(b, 2, &["true"]);
    for (s, mine, other) in [(a, &ta, &tb), (b, &tb, &ta)] {
        loop {
            let r = read_frame(s).expect("status events");
            let Some(st) = r.get("status") else { continue };
            let task = st["status"]["task_id"].as_str().unwrap();
            assert_ne!(task, other.as_str(), "heard of another connection's task");
            assert_eq!(task, mine.as_str());
            let seq = st["seq"].as_u64().unwrap();
            send(s, serde_json::json!({"ack": {"task_id": task, "seq": seq}}));
            if st["status"]["state"] == "finished" {
                break;
            }
        }
    }
}
