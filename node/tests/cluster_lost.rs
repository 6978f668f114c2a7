//! A node killed with SIGKILL while its tasks run: within 30 s those tasks
//! are reported lost and `agora nodes` shows the node dead.

mod common;

use common::{Cluster, wait_for};
use std::time::Duration;

#[test]
fn tasks_of_a_killed_node_are_lost() {
    let mut cluster = Cluster::new();
    let key = cluster.key.clone();
    cluster.add("n1", &key, &[]);
    cluster.add("n2", &key, &[]);
    cluster.add("victim", &key, &["--attr", "role=victim"]);
    cluster.wait_formed(3);

    // Short enough that the orphaned processes end on their own soon.
    let out = cluster.nodes[0].cli(&[
        "run",
        "--count",
        "2",
        "--cpus",
        "0.5",
        "--constraint",
        "role==victim",
        "--",
        "sleep",
        "25",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 2);

    let n1 = &cluster.nodes[0];
    wait_for(
        "both tasks running on victim",
        Duration::from_secs(30),
        || {
            let rows = n1.ps()?;
            let running = rows
                .iter()
                .filter(|r| r["state"] == "running" && r["node"] == "victim")
                .count();
            (running == 2).then_some(())
        },
    );

    let status = cluster.nodes[2].signal_and_wait("-KILL");
    assert!(!status.success());

    let n1 = &cluster.nodes[0];
    wait_for("the tasks reported lost", Duration::from_secs(30), || {
        let rows = n1.ps()?;
        let lost = rows
            .iter()
            .filter(|r| ids.iter().any(|i| r["id"] == i.as_str()) && r["state"] == "lost")
            .count();
        (lost == 2).then_some(())
    });
    let nodes = n1.nodes().unwrap();
    let victim = nodes
        .iter()
        .find(|n| n["id"] == "victim")
        .expect("victim listed");
    assert_eq!(victim["alive"], false);
}
