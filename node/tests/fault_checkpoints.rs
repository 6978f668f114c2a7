//! Faults an agent finds in its own data dir when it restarts (issue 12):
//! corrupt and truncated checkpoints, and fewer CPUs than the tasks it
//! re-attaches hold. Nothing may be dropped silently: every task is
//! re-attached and counted, or reported with the reason, its process gone.

mod common;
mod fault;

use common::{Cluster, wait_for};
use fault::{Proc, row, run, state, task_processes, wait_state};
use std::time::Duration;

/// Issue 12: corrupting 5 of a node's 10 checkpoints and restarting it left
/// those 5 "running" forever while their processes finished unsupervised.
/// Now a task whose checkpoint is corrupt is rebuilt from its sandbox and
/// re-attached when its supervisor still runs; a task that cannot be
/// rebuilt (no launch record left) is killed and reported lost with a
/// reason that names the corrupt checkpoint.
#[test]
fn corrupt_and_truncated_checkpoints_are_reattached_or_reported_never_dropped() {
    let mut cluster = Cluster::new();
    let key = cluster.key.clone();
    cluster.add("home", &key, &[]);
    cluster.add("worker", &key, &["--attr", "role=worker"]);
    cluster.wait_formed(2);
    let ids = run(
        &cluster.nodes[0],
        &[
            "--count",
            "10",
            "--cpus",
            "0.1",
            "--constraint",
            "role==worker",
            "--",
            "sleep",
            "1181",
        ],
    );
    assert_eq!(ids.len(), 10, "{ids:?}");
    wait_state(&cluster.nodes[0], &ids, "running", Duration::from_secs(60));
    let dir = cluster.nodes[1].dir.clone();
    let procs: Vec<Proc> = task_processes(&dir, &ids);
    assert!(procs.iter().all(Proc::alive));

    // Stop the worker (its tasks keep running), damage 5 checkpoints.
    let status = cluster.nodes[1].signal_and_wait("-TERM");
    assert!(status.success(), "the agent stops cleanly: {status}");
    let checkpoint = |i: usize| dir.join("tasks").join(format!("{}.json", ids[i]));
    for i in [0, 2, 6] {
        std::fs::write(checkpoint(i), b"{ \"version\": 1, not json").unwrap();
    }
    for i in [4, 8] {
        let bytes = std::fs::read(checkpoint(i)).unwrap();
        std::fs::write(checkpoint(i), &bytes[..bytes.len() / 2]).unwrap();
    }
    // Two of them lose their launch record as well (as a sandbox made by an
    // older agent has none): they cannot be rebuilt.
    let unrecoverable = [6, 8];
    for i in unrecoverable {
        let path = fault::sandbox(&dir, &ids[i]).join(".agora/request.json");
        if let Err(e) = std::fs::remove_file(&path) {
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        }
    }
    cluster.nodes[1].start();
    let home = &cluster.nodes[0];

    // The two that cannot be rebuilt end lost, saying why, their processes
    // killed before that was reported.
    let lost: Vec<String> = unrecoverable.iter().map(|&i| ids[i].clone()).collect();
    wait_state(home, &lost, "lost", Duration::from_secs(60));
    for &i in &unrecoverable {
        assert!(
            !procs[i].alive(),
            "{} was reported lost but its process {} still runs",
            ids[i],
            procs[i].pid
        );
        let r = row(home, &ids[i]).unwrap();
        let reason = r["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("checkpoint") && reason.contains(".corrupt-"),
            "the reason names the corrupt checkpoint: {r}"
        );
    }
    let log = cluster.nodes[1].log();
    assert!(
        log.contains("corrupt task checkpoint"),
        "the worker says so"
    );

    // Every other task is supervised again: a kill reaches it, it ends
    // killed and its process is gone.
    let rest: Vec<String> = (0..10)
        .filter(|i| !unrecoverable.contains(i))
        .map(|i| ids[i].clone())
        .collect();
    for id in &rest {
        assert_eq!(state(home, id).as_deref(), Some("running"), "{id}");
        let out = home.cli(&["kill", id]);
        assert!(
            out.status.success(),
            "kill {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_state(home, &rest, "killed", Duration::from_secs(60));
    for (i, p) in procs.iter().enumerate() {
        wait_for(
            &format!("the process of {} to be gone", ids[i]),
            Duration::from_secs(10),
            || (!p.alive()).then_some(()),
        );
    }
}

/// Issue 12: a restart with fewer `--cpus` than the re-attached tasks hold
/// left tasks uncounted and missing from `ps` (2.0 cpus on a 1-cpu node).
/// Now every re-attached task is counted and listed, the node advertises
/// nothing free and takes no new work until enough of them end.
#[test]
fn a_restart_with_fewer_cpus_counts_and_lists_every_reattached_task() {
    let mut cluster = Cluster::start(1);
    let ids = run(
        &cluster.nodes[0],
        &["--count", "2", "--cpus", "1", "--", "sleep", "1182"],
    );
    let node = &cluster.nodes[0];
    wait_state(node, &ids, "running", Duration::from_secs(60));
    let status = cluster.nodes[0].signal_and_wait("-TERM");
    assert!(status.success(), "the agent stops cleanly: {status}");
    cluster.nodes[0].set_arg("--cpus", "1");
    cluster.nodes[0].start();
    let node = &cluster.nodes[0];

    // Both listed running (the framework that ran them is gone: only the
    // node's ledger can list them).
    wait_state(node, &ids, "running", Duration::from_secs(60));
    let free = wait_for("the node's ledger", Duration::from_secs(30), || {
        let nodes = node.nodes()?;
        let me = nodes.iter().find(|n| n["id"] == "n1")?;
        Some((me["cpus_total"].as_f64()?, me["cpus_free"].as_f64()?))
    });
    assert_eq!(free, (1.0, 0.0), "1 cpu in all, nothing free");
    assert!(
        node.log().contains("overcommitted"),
        "the node warns about the overcommit"
    );

    // No room for more, even once one of the two has ended (1.0 of 1.0).
    let out = node.cli(&[
        "run",
        "--wait",
        "--cpus",
        "0.1",
        "--placement-timeout",
        "3",
        "--",
        "true",
    ]);
    assert!(!out.status.success(), "a new task is not placed");
    let out = node.cli(&["kill", &ids[0]]);
    assert!(out.status.success());
    wait_state(node, &ids[..1], "killed", Duration::from_secs(30));
    let out = node.cli(&[
        "run",
        "--wait",
        "--cpus",
        "0.1",
        "--placement-timeout",
        "3",
        "--",
        "true",
    ]);
    assert!(!out.status.success(), "1.0 of 1.0 cpus still held");

    // Room again once the second ends.
    let out = node.cli(&["kill", &ids[1]]);
    assert!(out.status.success());
    wait_state(node, &ids[1..], "killed", Duration::from_secs(30));
    let out = node.cli(&["run", "--wait", "--cpus", "0.1", "--", "true"]);
    assert!(
        out.status.success(),
        "placed once room is back: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
