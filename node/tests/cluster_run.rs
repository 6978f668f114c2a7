//! Five nodes of 2 CPUs form a cluster; 100 half-CPU tasks submitted with
//! `agora run --wait` all finish, every node runs some, and `agora logs`
//! returns each task's output (the id of the node that ran it).

mod common;

use common::Cluster;
use std::collections::BTreeMap;

#[test]
fn five_nodes_run_a_hundred_tasks_everywhere() {
    let cluster = Cluster::start(5);
    let n1 = &cluster.nodes[0];
    let out = n1.cli(&[
        "run",
        "--count",
        "100",
        "--cpus",
        "0.5",
        "--wait",
        "--",
        "sh",
        "-c",
        "sleep 0.2; echo $AGORA_NODE_ID",
    ]);
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Ask another node: the listing merges every node's view.
    let rows = cluster.nodes[2].ps().expect("ps answers");
    let ours: Vec<_> = rows.iter().filter(|r| r["name"] == "sh").collect();
    assert_eq!(ours.len(), 100, "{rows:?}");
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for r in &ours {
        assert_eq!(r["state"], "finished", "{r}");
        assert_eq!(r["exit_code"], 0, "{r}");
        *per_node
            .entry(r["node"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        per_node.len(),
        5,
        "every node runs some tasks: {per_node:?}"
    );

    for r in &ours {
        let id = r["id"].as_str().unwrap();
        let logs = cluster.nodes[1].cli(&["logs", id]);
        assert!(
            logs.status.success(),
            "logs {id}: {}",
            String::from_utf8_lossy(&logs.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&logs.stdout).trim(),
            r["node"].as_str().unwrap(),
            "task {id} printed the node it ran on"
        );
    }

    // The json listing of nodes has the documented keys.
    let nodes = n1.nodes().unwrap();
    for key in [
        "id",
        "addr",
        "alive",
        "cpus_total",
        "cpus_free",
        "mem_total_mib",
        "mem_free_mib",
        "attrs",
    ] {
        assert!(nodes[0].get(key).is_some(), "nodes --json lacks {key}");
    }
}
