//! A node that stops answering for longer than the failure detector's
//! patience (SIGSTOP), then comes back (SIGCONT): the cluster reported its
//! tasks lost, so they must not keep running there (issue 11). The task's
//! home node, on seeing the node alive again, kills what it reported lost.

mod common;

use common::{Cluster, Resume, wait_for};
use std::time::Duration;

/// Pids of processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want)
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        })
        .collect()
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Three nodes, the third ("sleeper") with `role=sleeper`, and one task
/// `argv` on it submitted from node `from`; returns the cluster and the
/// task's id.
fn sleeper_cluster(from: usize, argv: [&str; 2]) -> (Cluster, String) {
    let mut cluster = Cluster::new();
    let key = cluster.key.clone();
    cluster.add("n1", &key, &[]);
    cluster.add("n2", &key, &[]);
    cluster.add("sleeper", &key, &["--attr", "role=sleeper"]);
    cluster.wait_formed(3);
    let out = cluster.nodes[from].cli(&[
        "run",
        "--cpus",
        "0.5",
        "--constraint",
        "role==sleeper",
        "--",
        argv[0],
        argv[1],
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (cluster, id)
}

#[test]
fn a_task_reported_lost_does_not_keep_running_when_its_node_comes_back() {
    // A command line no other test uses, to find the process.
    let argv = ["sleep", "1171"];
    let (cluster, id) = sleeper_cluster(0, argv);
    let n1 = &cluster.nodes[0];
    wait_for(
        "the task to run on sleeper",
        Duration::from_secs(30),
        || {
            let rows = n1.ps()?;
            rows.iter()
                .any(|r| r["id"] == id.as_str() && r["state"] == "running")
                .then_some(())
        },
    );
    assert_eq!(processes(&argv).len(), 1, "the task's process runs");

    // Pause the node until the cluster has declared it dead.
    let pid = cluster.nodes[2].pid();
    signal(pid, "-STOP");
    let resume = Resume(pid);
    let n1 = &cluster.nodes[0];
    wait_for("the task reported lost", Duration::from_secs(60), || {
        let rows = n1.ps()?;
        rows.iter()
            .any(|r| r["id"] == id.as_str() && r["state"] == "lost")
            .then_some(())
    });
    assert_eq!(processes(&argv).len(), 1, "paused, it still runs");
    drop(resume);

    // Back: the home node kills what it reported lost there.
    wait_for(
        "the lost task's process to be stopped",
        Duration::from_secs(60),
        || processes(&argv).is_empty().then_some(()),
    );
    let log = cluster.nodes[0].log();
    assert!(
        log.contains("killing the tasks reported lost there"),
        "n1 says why it killed"
    );
}

#[test]
fn a_dead_nodes_own_tasks_are_listed_lost_not_dropped() {
    // Issue 11: while a node was dead, the tasks it ran for its own
    // frameworks vanished from `ps` and the dashboard (nobody else knows
    // them). A node that heard of them lists them lost.
    let argv = ["sleep", "1172"];
    let (cluster, id) = sleeper_cluster(2, argv);
    let sleeper = &cluster.nodes[2];
    let n1 = &cluster.nodes[0];
    let state_at_n1 =
        || -> Option<serde_json::Value> { n1.ps()?.into_iter().find(|r| r["id"] == id.as_str()) };
    wait_for(
        "n1 to list the task running",
        Duration::from_secs(30),
        || {
            state_at_n1()
                .filter(|r| r["state"] == "running")
                .map(|_| ())
        },
    );

    let pid = sleeper.pid();
    signal(pid, "-STOP");
    let resume = Resume(pid);
    let row = wait_for("n1 to list the task lost", Duration::from_secs(60), || {
        state_at_n1().filter(|r| r["state"] == "lost")
    });
    let reason = row["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("declared dead"), "{row}");
    let out = n1.cli(&["ps"]);
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains("sleeper"), "ps names the dead node: {note}");
    drop(resume);
    wait_for(
        "the task to be listed running again",
        Duration::from_secs(60),
        || {
            state_at_n1()
                .filter(|r| r["state"] == "running")
                .map(|_| ())
        },
    );
    assert_eq!(
        processes(&argv).len(),
        1,
        "nobody was told it was lost: it runs on"
    );
}

#[test]
fn a_dead_nodes_own_tasks_are_listed_lost_by_a_node_that_never_listed() {
    // The sleeper runs a task of its own framework; only it knows the task,
    // and its witness. n2 never listed anything before the sleeper is
    // declared dead, so it heard nothing: the witness answers for it.
    let argv = ["sleep", "1173"];
    let (cluster, id) = sleeper_cluster(2, argv);
    let sleeper = &cluster.nodes[2];
    wait_for(
        "the sleeper to list its task running",
        Duration::from_secs(30),
        || {
            sleeper
                .ps()?
                .into_iter()
                .any(|r| r["id"] == id.as_str() && r["state"] == "running")
                .then_some(())
        },
    );
    // The witness hears of a launch at once and of the next change within
    // a second (its pace); nothing outside the nodes shows it arrived.
    std::thread::sleep(Duration::from_secs(2));

    let pid = sleeper.pid();
    signal(pid, "-STOP");
    let resume = Resume(pid);
    let n2 = &cluster.nodes[1];
    let row = wait_for("n2 to list the task lost", Duration::from_secs(60), || {
        n2.ps()?
            .into_iter()
            .find(|r| r["id"] == id.as_str() && r["state"] == "lost")
    });
    let reason = row["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("declared dead") && reason.contains("witness"),
        "{row}"
    );
    drop(resume);
    wait_for(
        "the task to be listed running again",
        Duration::from_secs(60),
        || {
            n2.ps()?
                .into_iter()
                .any(|r| r["id"] == id.as_str() && r["state"] == "running")
                .then_some(())
        },
    );
}
