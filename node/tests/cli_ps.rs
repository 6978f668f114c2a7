//! `agora ps` on more tasks than one answer holds (issue 11: it stopped
//! silently at 2,000 rows sorted as text, with no way to narrow the list):
//! rows come in task order, a cut list says so, and filters narrow it.

mod common;

use common::json::{frame, json_client, read_frame};
use common::{Cluster, wait_for};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

fn spec(name: &str) -> Value {
    json!({"name": name, "command": {"argv": ["true"]}, "env": {},
        "resources": {"cpu_millis": 10, "mem_mib": 1, "disk_mib": 0, "gpus": 0, "ports": 0},
        "constraints": [], "priority": 0, "kill_grace_ms": 1000, "placement_timeout_ms": 0})
}

/// How many tasks `ps` says matched (from its note on stderr, else the rows).
fn matched(node: &common::Node, args: &[&str]) -> (usize, Vec<Value>, String) {
    let mut all = vec!["ps", "--json"];
    all.extend_from_slice(args);
    let out = node.cli(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let n = err
        .split_whitespace()
        .skip_while(|w| *w != "of")
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or(rows.len());
    (n, rows, err)
}

#[test]
fn ps_lists_in_task_order_says_when_cut_and_filters() {
    let c = Cluster::start(1);
    let node = &c.nodes[0];
    let mut s = json_client(&node.socket());
    let register = json!({"register": {"name": "bulk", "role": "", "weight": 1,
        "failover_timeout_ms": 600000, "framework_id": null}});
    s.write_all(&frame(register.to_string().as_bytes()))
        .unwrap();
    let fw = read_frame(&mut s).unwrap()["registered"]["framework_id"]
        .as_str()
        .unwrap()
        .to_string();
    for (rid, tasks) in [
        (1, vec![spec("bulk"); 1500]),
        (2, {
            let mut t = vec![spec("bulk"); 599];
            t.push(spec("special"));
            t
        }),
    ] {
        let submit = json!({"submit": {"request_id": rid, "tasks": tasks}});
        s.write_all(&frame(submit.to_string().as_bytes())).unwrap();
    }
    // Keep the framework's events flowing (acks are optional here: the
    // node re-sends what is not acknowledged).
    let total = 2100;
    wait_for("every task to finish", Duration::from_secs(120), || {
        let (n, _, _) = matched(node, &["--state", "finished", "--limit", "1"]);
        (n == total).then_some(())
    });

    let (n, rows, err) = matched(node, &[]);
    assert_eq!(rows.len(), 2000, "one answer holds 2,000 rows");
    assert_eq!(n, total, "the cut is reported: {err}");
    assert!(err.contains("showing 2000 of 2100"), "{err}");
    // Task order: by number, not as text (.1, .2, … not .1, .10, .100).
    let first: Vec<String> = rows
        .iter()
        .take(12)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (1..=12).map(|i| format!("{fw}.{i}")).collect();
    assert_eq!(first, want);

    let (n, rows, err) = matched(node, &["--name", "special"]);
    assert_eq!((n, rows.len()), (1, 1), "{err}");
    assert_eq!(rows[0]["id"], format!("{fw}.2100").as_str());
    assert!(err.is_empty(), "no note when nothing was cut: {err}");

    let (_, rows, _) = matched(node, &["--framework", &fw, "--limit", "5"]);
    assert_eq!(rows.len(), 5);

    let out = node.cli(&["ps", "--state", "sleeping"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a task state"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
