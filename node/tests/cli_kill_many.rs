//! `agora kill` of many tasks at once (issue 13): several ids, or every
//! unended task of a job (`--name`), go out on one connection without a
//! look-up each; an unknown id among them is refused with its reason and
//! a non-zero exit while the others are killed.

mod common;

use common::{Cluster, wait_for};
use std::collections::BTreeMap;
use std::time::Duration;

fn states(node: &common::Node, name: &str) -> BTreeMap<String, String> {
    node.ps()
        .unwrap_or_default()
        .iter()
        .filter(|r| r["name"] == name)
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn run(node: &common::Node, name: &str, count: &str) -> Vec<String> {
    let out = node.cli(&[
        "run", "--count", count, "--cpus", "0.05", "--name", name, "--", "sleep", "600",
    ]);
    assert!(
        out.status.success(),
        "run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        ids.len(),
        count.parse::<usize>().unwrap(),
        "run prints the ids"
    );
    wait_for("the tasks to run", Duration::from_secs(60), || {
        let s = states(node, name);
        (s.len() == ids.len() && s.values().all(|v| v == "running")).then_some(())
    });
    ids
}

#[test]
fn many_ids_and_a_job_name_are_killed_in_one_call() {
    let cluster = Cluster::start(2);
    let (home, other) = (&cluster.nodes[0], &cluster.nodes[1]);

    // Ids, from the node that is not their home, with one unknown id.
    let ids = run(home, "many", "40");
    let mut args = vec!["kill"];
    args.extend(ids.iter().map(String::as_str));
    args.push("nosuch.1");
    let out = other.cli(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nosuch.1"), "the unknown id is named: {err}");
    assert!(err.contains("kill requested for 40 tasks"), "{err}");
    wait_for("the 40 to be killed", Duration::from_secs(60), || {
        states(home, "many")
            .values()
            .all(|s| s == "killed")
            .then_some(())
    });

    // A job by name.
    run(home, "job", "30");
    let out = home.cli(&["kill", "--name", "job"]);
    assert!(
        out.status.success(),
        "kill --name: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the job to be killed", Duration::from_secs(60), || {
        states(home, "job")
            .values()
            .all(|s| s == "killed")
            .then_some(())
    });
    let out = home.cli(&["kill", "--name", "job"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no task named job"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
