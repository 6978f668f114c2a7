//! A framework whose id is longer than a task id can carry: its task ids
//! are cut, and the node must still route its awards to it (issue 11: they
//! were dropped, routed by the id's prefix, and the task never started).

mod common;

use common::json::{frame, json_client, read_frame};
use common::{Cluster, wait_for};
use serde_json::json;
use std::io::Write;
use std::time::Duration;

#[test]
fn a_framework_with_a_long_id_gets_its_tasks_placed() {
    let mut c = Cluster::new();
    let key = c.key.clone();
    // Framework ids are NAME-XXXXXXXX@NODE: with a 112-byte node id and the
    // name "batch" the id is 127 bytes, so its task ids (at most 128 bytes,
    // ".N" included) are cut. The socket path would pass the 108-byte limit of
    // a Unix socket under the node's data dir: give it a short one.
    let node_id = format!("n{}", "x".repeat(111));
    let socket = c.root.path().join("long.sock");
    c.add(&node_id, &key, &["--socket", socket.to_str().unwrap()]);
    let mut s = wait_for("the agent's socket", Duration::from_secs(30), || {
        socket.exists().then(|| json_client(&socket))
    });
    let register = json!({"register": {"name": "batch", "role": "", "weight": 1,
        "failover_timeout_ms": 0, "framework_id": null}});
    s.write_all(&frame(register.to_string().as_bytes()))
        .unwrap();
    let r = read_frame(&mut s).unwrap();
    let fw = r["registered"]["framework_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        fw.len() + 2 > 128,
        "{fw} is long enough to be cut in task ids"
    );
    let submit = json!({"submit": {"request_id": 1, "tasks": [{"name": "t",
        "command": {"argv": ["true"]}, "env": {},
        "resources": {"cpu_millis": 100, "mem_mib": 16, "disk_mib": 0, "gpus": 0, "ports": 0},
        "constraints": [], "priority": 0, "kill_grace_ms": 1000, "placement_timeout_ms": 10000}]}});
    s.write_all(&frame(submit.to_string().as_bytes())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut states = Vec::new();
    while let Some(v) = read_frame(&mut s) {
        if let Some(st) = v["status"]["status"]["state"].as_str() {
            states.push(st.to_string());
            if matches!(st, "finished" | "failed" | "killed" | "lost") {
                break;
            }
        }
    }
    assert_eq!(
        states.last().map(String::as_str),
        Some("finished"),
        "states heard: {states:?}"
    );
}
