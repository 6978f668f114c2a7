//! One node id, one agent (issue 12): a second agent started with an
//! existing `--node-id` silently took over that node's identity; the first
//! one's 8 tasks stayed running, then turned `lost` though they exited 0.
//! Now the newcomer sees a live member with its node id under another
//! identity key and exits with an error that names the other agent's
//! address and what to do; the incumbent keeps the id, warns, and its tasks
//! end as they really did. A second agent on a data dir already in use
//! fails at start.

mod common;
mod fault;

use common::{ChildGuard, Cluster, exe, exit_by, free_port, wait_for};
use fault::{run, wait_state};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `agora agent` with the test cluster's usual flags.
/// Its log (stderr) goes to `log`.
fn agent(cluster: &Cluster, dir: &Path, id: &str, seed: &str, log: &Path) -> (ChildGuard, u16) {
    let port = free_port();
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(exe())
        .arg("agent")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--cluster-key-file")
        .arg(&cluster.key)
        .args(["--node-id", id, "--cpus", "2", "--mem", "2048"])
        .args([
            "--gossip-interval-ms",
            "200",
            "--no-cgroups",
            "--seeds",
            seed,
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    (ChildGuard(child), port)
}

#[test]
fn a_second_agent_with_an_existing_node_id_exits_and_the_first_keeps_its_tasks() {
    let mut cluster = Cluster::new();
    let key = cluster.key.clone();
    cluster.add("n1", &key, &[]);
    cluster.add("n2", &key, &["--attr", "role=n2"]);
    cluster.wait_formed(2);
    let ids = run(
        &cluster.nodes[0],
        &[
            "--count",
            "8",
            "--constraint",
            "role==n2",
            "--",
            "sleep",
            "8",
        ],
    );
    wait_state(&cluster.nodes[0], &ids, "running", Duration::from_secs(60));

    let dir = cluster.root.path().join("impostor");
    let log = cluster.root.path().join("impostor.log");
    let (mut dup, dup_port) = agent(&cluster, &dir, "n2", &cluster.nodes[0].addr(), &log);
    let status = exit_by(&mut dup, Duration::from_secs(60), "the second n2");
    assert!(!status.success(), "the newcomer fails: {status}");
    let said = std::fs::read_to_string(&log).unwrap();
    let incumbent = cluster.nodes[1].addr();
    assert!(
        said.contains("n2") && said.contains(&incumbent) && said.contains("--node-id"),
        "the newcomer names the other agent's address and the fix: {said}"
    );
    wait_for("the incumbent's warning", Duration::from_secs(30), || {
        let log = cluster.nodes[1].log();
        (log.contains("same node id") && log.contains(&format!("127.0.0.1:{dup_port}")))
            .then_some(())
    });

    // The incumbent's tasks end as they did, and it is still n2.
    wait_state(&cluster.nodes[0], &ids, "finished", Duration::from_secs(60));
    let alive = cluster.nodes[0].alive();
    assert!(alive.contains(&"n2".to_string()), "{alive:?}");
    let out = cluster.nodes[0].cli(&["run", "--wait", "--constraint", "role==n2", "--", "true"]);
    assert!(
        out.status.success(),
        "n2 still takes work: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_second_agent_on_a_data_dir_in_use_fails_at_start() {
    let cluster = Cluster::start(1);
    let n1 = &cluster.nodes[0];
    let log = cluster.root.path().join("second.log");
    let (mut second, _) = agent(&cluster, &n1.dir, "n1", &n1.addr(), &log);
    let status = exit_by(&mut second, Duration::from_secs(30), "the second agent");
    assert!(!status.success(), "{status}");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("another agent is using the data dir"),
        "it says why: {said}"
    );
    // The first one is unharmed.
    assert_eq!(cluster.nodes[0].alive(), vec!["n1".to_string()]);
}
