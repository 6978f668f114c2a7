//! The Python example framework (examples/python/agora_framework.py,
//! standard library only, JSON codec) runs tasks on a two-node cluster.

mod common;

use common::Cluster;
use std::process::Command;

#[test]
fn python_example_framework_runs_tasks() {
    let cluster = Cluster::start(2);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/python/agora_framework.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg("--socket")
        .arg(cluster.nodes[0].socket())
        .args(["--count", "6", "--cpus", "0.5", "--timeout", "60"])
        .output()
        .expect("python3 must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python framework failed:\n{text}");
    let rows = cluster.nodes[1].ps().unwrap();
    let finished = rows
        .iter()
        .filter(|r| r["name"] == "py-example" && r["state"] == "finished")
        .count();
    assert_eq!(finished, 6, "{rows:?}\n{text}");
}
