//! A node started with a different cluster key never becomes a member:
//! it never appears in `agora nodes` of the real cluster and wins no task.

mod common;

use common::{Cluster, keygen, wait_for};
use std::time::Duration;

#[test]
fn a_node_with_another_key_stays_out() {
    let mut cluster = Cluster::start(3);
    let other_key = cluster.root.path().join("other.key");
    keygen(&other_key);
    let intruder = cluster.add("intruder", &other_key, &[]);

    // The intruder is up (its own socket answers) and tries to gossip.
    wait_for("the intruder's socket", Duration::from_secs(30), || {
        cluster.nodes[intruder].nodes()
    });
    let out = cluster.nodes[0].cli(&[
        "run",
        "--count",
        "24",
        "--cpus",
        "0.5",
        "--wait",
        "--",
        "sh",
        "-c",
        "sleep 0.1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for node in &cluster.nodes[..3] {
        let ids: Vec<String> = node
            .nodes()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect();
        assert!(
            !ids.contains(&"intruder".to_string()),
            "{} sees {ids:?}",
            node.id
        );
    }
    let seen_by_intruder = cluster.nodes[intruder].alive();
    assert_eq!(seen_by_intruder, vec!["intruder".to_string()]);
    let rows = cluster.nodes[0].ps().unwrap();
    assert_eq!(rows.len(), 24);
    assert!(
        rows.iter()
            .all(|r| r["node"] != "intruder" && r["state"] == "finished")
    );
    // Its sealed datagrams were rejected, not parsed.
    let log = cluster.nodes[0].log();
    assert!(
        log.contains("fail to open with the cluster key"),
        "n1 logged no rejected datagram"
    );
}
