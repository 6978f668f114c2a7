//! A task supervisor killed with SIGKILL (issue 12): the task was reported
//! lost while its process group ran on. Now the agent kills the task's
//! process group before it reports the task lost, and says so.

mod common;
mod fault;

use common::{Cluster, wait_for};
use fault::{row, run, signal, supervisor, task_processes, wait_state};
use std::time::Duration;

#[test]
fn a_task_whose_supervisor_is_killed_is_killed_before_it_is_reported_lost() {
    let cluster = Cluster::start(1);
    let node = &cluster.nodes[0];
    // A child in the task's process group too, not only its main process.
    let ids = run(node, &["--", "sh", "-c", "sleep 1191 & sleep 1192"]);
    wait_state(node, &ids, "running", Duration::from_secs(30));
    let task = task_processes(&node.dir, &ids)[0];
    let sup = wait_for("the supervisor", Duration::from_secs(10), || {
        supervisor(&node.dir, &ids[0])
    });
    assert!(task.alive() && sup.alive());
    let group = || -> Vec<i32> { members_of_group(task.pid) };
    wait_for("the task's child", Duration::from_secs(10), || {
        (group().len() >= 2).then_some(())
    });

    signal(sup.pid, "-KILL");
    wait_state(node, &ids, "lost", Duration::from_secs(30));
    // Checked at once: the agent reports lost only once the group is gone.
    assert!(!task.alive(), "the task's main process still runs");
    assert_eq!(
        group(),
        Vec::<i32>::new(),
        "the task's process group still runs"
    );
    let r = row(node, &ids[0]).unwrap();
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("supervisor") && reason.contains("SIGKILL") && reason.contains("killed"),
        "the reason says what happened: {r}"
    );
}

/// Live (not zombie) processes whose process group is `pgid`.
fn members_of_group(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.first() != Some(&"Z") && f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
        })
        .collect()
}
