//! The cluster harness (node/tests/common) leaves nothing behind: dropping a
//! `Cluster` whose agent still runs a task kills the agent, the task's
//! supervisor (which runs in its own session to outlive agent restarts) and
//! the task, and removes the temporary directory.

mod common;

use common::{Cluster, wait_for};
use std::path::Path;
use std::time::Duration;

/// Pids of live (not zombie) processes whose command line mentions `dir`.
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rfind(')')
                    .map(|i| s[i + 1..].trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie && cmdline.contains(&needle) {
            found.push(format!("{}: {cmdline}", e.file_name().to_string_lossy()));
        }
    }
    found
}

#[test]
fn dropping_a_cluster_kills_its_tasks_and_removes_its_directory() {
    let c = Cluster::start(1);
    let root = c.root.path().to_path_buf();
    let n1 = &c.nodes[0];
    // The task's command line names the directory, as its supervisor's does.
    let marker = root.join("marker");
    let out = n1.cli(&[
        "run",
        "--cpus",
        "0.1",
        "--",
        "sh",
        "-c",
        &format!("sleep 600; echo {}", marker.display()),
    ]);
    assert!(
        out.status.success(),
        "run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the task to run", Duration::from_secs(30), || {
        let rows = n1.ps()?;
        rows.iter().any(|r| r["state"] == "running").then_some(())
    });
    assert!(
        processes_mentioning(&root).len() >= 3,
        "agent, supervisor and task: {:?}",
        processes_mentioning(&root)
    );

    drop(c);
    let left = processes_mentioning(&root);
    assert!(left.is_empty(), "still running after the drop: {left:?}");
    assert!(!root.exists(), "{} was not removed", root.display());
}
