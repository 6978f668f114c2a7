//! Fault scenarios 1 and 2 of issue 12 (docs/RELIABILITY.md): partitions of
//! real agents in network namespaces, checked against what every node really
//! runs and what the frameworks were told.

mod common;

use common::netns::{FaultCluster, Recorder};
use common::wait_for;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long a far side may take to act on a verdict: the failure detector
/// (a few seconds at 200 ms gossip) plus the kill grace (1 s).
const SETTLE: Duration = Duration::from_secs(20);

fn ids(c: &FaultCluster, idx: &[usize]) -> BTreeSet<String> {
    idx.iter().map(|i| c.nodes[*i].id.clone()).collect()
}

/// Every node's `ps --json` as task id -> state, when every node answers.
fn listings(c: &FaultCluster) -> Option<Vec<BTreeMap<String, String>>> {
    c.nodes
        .iter()
        .map(|n| {
            let v = n.json(&["ps"])?;
            Some(
                v.as_array()?
                    .iter()
                    .filter_map(|t| {
                        Some((
                            t["task_id"].as_str()?.to_string(),
                            t["state"].as_str()?.to_string(),
                        ))
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Waits until every node holds every node alive and every node lists the
/// same tasks in the same states; returns how long that took.
fn converge(c: &FaultCluster, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    let all = ids(c, &c.all());
    wait_for("views and task tables to converge", timeout, || {
        let views_agree = c.nodes.iter().all(|n| n.alive().as_ref() == Some(&all));
        let l = listings(c)?;
        (views_agree && l.windows(2).all(|w| w[0] == w[1])).then_some(())
    });
    t0.elapsed()
}

/// Waits until the framework was told `n` tasks running.
fn wait_running(f: &Recorder, tasks: &[String], what: &str) -> BTreeMap<String, String> {
    wait_for(what, Duration::from_secs(60), || {
        let latest = f.latest();
        let placed: BTreeMap<String, String> = tasks
            .iter()
            .filter_map(|t| {
                let s = latest.get(t)?;
                (s.state == "running").then(|| (t.clone(), s.node.clone().unwrap_or_default()))
            })
            .collect();
        (placed.len() == tasks.len()).then_some(placed)
    })
}

#[test]
fn a_three_three_partition_keeps_both_sides_scheduling_and_heals_to_one_story() {
    let Some(mut c) = FaultCluster::start(6, 1, &[]) else {
        return;
    };
    let (left, right) = ([0, 1, 2], [3, 4, 5]);
    let mut a = Recorder::connect(&c.nodes[0], "left");
    let mut b = Recorder::connect(&c.nodes[3], "right");
    // Before the cut: tasks of both frameworks everywhere.
    let a0 = a.submit("before", 6, &["sleep", "600"]).unwrap();
    let b0 = b.submit("before", 6, &["sleep", "600"]).unwrap();
    let a0_at = wait_running(&a, &a0, "left's first tasks to run");
    wait_running(&b, &b0, "right's first tasks to run");
    c.assert_invariants("placing before the partition", &[&a, &b], SETTLE);

    c.partition(&left, &right);
    let (l, r) = (ids(&c, &left), ids(&c, &right));
    for i in left {
        c.wait_sees(i, &l, Duration::from_secs(60));
    }
    for i in right {
        c.wait_sees(i, &r, Duration::from_secs(60));
    }
    c.note("each side holds only itself alive");
    // Both sides keep placing, on their own side.
    let a1 = a.submit("during", 4, &["sleep", "600"]).unwrap();
    let b1 = b.submit("during", 4, &["sleep", "600"]).unwrap();
    for (task, node) in wait_running(&a, &a1, "left's tasks during the partition") {
        assert!(
            l.contains(&node),
            "{task} placed on {node}, across the partition"
        );
    }
    for (task, node) in wait_running(&b, &b1, "right's tasks during the partition") {
        assert!(
            r.contains(&node),
            "{task} placed on {node}, across the partition"
        );
    }
    // Waves of short tasks on both sides for a while: all finish, on their
    // own side.
    let mut waves = Vec::new();
    for wave in 0..4 {
        let wa = a
            .submit(&format!("wave{wave}"), 3, &["sleep", "1"])
            .unwrap();
        let wb = b
            .submit(&format!("wave{wave}"), 3, &["sleep", "1"])
            .unwrap();
        waves.push((wa, wb));
        std::thread::sleep(Duration::from_secs(2));
        c.assert_invariants(
            &format!("wave {wave} during the partition"),
            &[&a, &b],
            SETTLE,
        );
    }
    for (f, side, wave) in waves
        .iter()
        .flat_map(|(wa, wb)| [(&a, &l, wa), (&b, &r, wb)])
    {
        wait_for(
            "a wave to finish on its side",
            Duration::from_secs(60),
            || {
                let latest = f.latest();
                wave.iter()
                    .all(|t| latest.get(t).is_some_and(|s| s.state == "finished"))
                    .then_some(())
            },
        );
        for t in wave {
            let told = &f.told()[t];
            let node = told.iter().find_map(|s| s.node.clone()).unwrap_or_default();
            assert!(
                side.contains(&node),
                "{t} ran on {node}, across the partition"
            );
        }
    }
    // Left's tasks that ran on the right are lost for left, and the right
    // kills them: no zombie runs on after being reported lost.
    let cut_off: Vec<&String> = a0_at
        .iter()
        .filter(|(_, n)| r.contains(*n))
        .map(|(t, _)| t)
        .collect();
    wait_for(
        "left to be told its tasks on the right are lost",
        SETTLE,
        || {
            let latest = a.latest();
            cut_off
                .iter()
                .all(|t| latest.get(*t).is_some_and(|s| s.state == "lost"))
                .then_some(())
        },
    );
    wait_for(
        "the right side to stop left's cut-off tasks",
        SETTLE,
        || {
            let running = c.running_tasks();
            cut_off
                .iter()
                .all(|t| !running.contains_key(*t))
                .then_some(())
        },
    );
    c.assert_invariants(
        "scheduling on both sides of the partition",
        &[&a, &b],
        SETTLE,
    );

    c.heal();
    let took = converge(&c, Duration::from_secs(90));
    c.note(format!(
        "converged {:.2} s after the heal",
        took.as_secs_f64()
    ));
    println!("FIGURE partition_3_3_converge_s {:.2}", took.as_secs_f64());
    c.assert_invariants("the heal", &[&a, &b], SETTLE);
    // Each task is reported once: one terminal state at most, and every
    // acknowledged submit is running or ended.
    let forgotten = c.forgotten(&[&a, &b]);
    assert!(
        forgotten.is_empty(),
        "forgotten: {forgotten:?}\n{}",
        c.report()
    );
    // The tasks told running are running, each on the node named.
    let running = c.running_tasks();
    for f in [&a, &b] {
        for (task, s) in f.latest() {
            if s.state == "running" {
                let on = running.get(&task).map(|(n, _)| n.clone());
                assert_eq!(
                    on,
                    Some(vec![s.node.clone().unwrap()]),
                    "{task}\n{}",
                    c.report()
                );
            }
        }
    }
}

#[test]
fn the_fault_harness_leaves_no_namespace_link_or_mount_behind() {
    let Some(mut c) = FaultCluster::start(2, 2, &[]) else {
        return;
    };
    c.partition(&[0], &[1]);
    c.loss(10);
    let root = c.nodes[0].dir.parent().unwrap().to_path_buf();
    let tag = c.nodes[0].ns.trim_end_matches("n1").to_string();
    drop(c);
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains(&tag),
        "namespaces left"
    );
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&tag),
        "links left"
    );
    assert!(!mounts.contains(root.to_str().unwrap()), "mounts left");
    assert!(!root.exists(), "{} left", root.display());
}
