//! A node whose data dir is full or read-only (issue 12): it kept
//! advertising its resources and failed 50 of 60 tasks sent to it, and a
//! supervisor whose task filled the disk panicked, so that task was reported
//! lost. Now the node advertises nothing free and says why (log line,
//! metric) while its data dir cannot take new tasks, keeps reporting the
//! tasks it runs, and recovers by itself when space returns; a task that
//! fills the disk ends `failed`, the reason naming the full disk.
//!
//! Each data dir is a small tmpfs (root only: skipped with a message
//! otherwise), always unmounted when the test ends.

mod common;
mod fault;

use common::{Cluster, free_tcp_addr, wait_for};
use fault::{Tmpfs, row, run, state, wait_state};
use std::time::Duration;

const TOKEN: &str = "fault-disk-token";

/// A cluster of `n1` and `disk` (attribute role=disk, HTTP on), whose data
/// dir is `fs`; returns the cluster and disk's HTTP address.
fn cluster_with_disk_node(fs: &Tmpfs, extra: &[&str]) -> (Cluster, String) {
    let mut cluster = Cluster::new();
    let key = cluster.key.clone();
    cluster.add("n1", &key, &[]);
    std::os::unix::fs::symlink(fs.path(), cluster.root.path().join("disk")).unwrap();
    let token = cluster.root.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let http = free_tcp_addr();
    let mut args = vec![
        "--attr",
        "role=disk",
        "--http",
        &http,
        "--http-token-file",
        token.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cluster.add("disk", &key, &args);
    cluster.wait_formed(2);
    (cluster, http)
}

/// Runs `argv` on `disk` through `n1`; returns the task ids.
fn run_on_disk(n1: &common::Node, argv: &[&str]) -> Vec<String> {
    let mut args = vec!["--constraint", "role==disk", "--"];
    args.extend_from_slice(argv);
    run(n1, &args)
}

/// `disk`'s free CPUs as n1 sees them.
fn cpus_free(cluster: &Cluster) -> Option<f64> {
    let nodes = cluster.nodes[0].nodes()?;
    nodes.iter().find(|n| n["id"] == "disk")?["cpus_free"].as_f64()
}

/// The value of `agora_data_dir_unavailable{reason=...}` on disk.
fn unavailable(http: &str, reason: &str) -> Option<f64> {
    let auth = format!("Bearer {TOKEN}");
    let resp =
        common::http::request(http, "GET", "/metrics", &[("Authorization", &auth)], None).ok()?;
    let want = format!("agora_data_dir_unavailable{{reason=\"{reason}\"}} ");
    resp.text()
        .lines()
        .find_map(|l| l.strip_prefix(want.as_str())?.trim().parse().ok())
}

#[test]
fn a_full_data_dir_takes_no_new_work_keeps_its_tasks_and_recovers() {
    let Some(fs) = Tmpfs::mount(8) else { return };
    let (cluster, http) = cluster_with_disk_node(&fs, &[]);
    let n1 = &cluster.nodes[0];
    let long = run_on_disk(n1, &["sleep", "1201"]);
    wait_state(n1, &long, "running", Duration::from_secs(30));

    let fill = fs.fill("fill");
    wait_for(
        "disk to advertise nothing free",
        Duration::from_secs(30),
        || (cpus_free(&cluster)? == 0.0).then_some(()),
    );
    assert_eq!(unavailable(&http, "disk_full"), Some(1.0));
    assert_eq!(unavailable(&http, "data_dir_read_only"), Some(0.0));
    let log = cluster.nodes[1].log();
    assert!(
        log.contains("disk_full") && log.contains("no new tasks"),
        "disk says why it takes no work"
    );

    // Work sent to the cluster meanwhile all runs, elsewhere.
    let out = n1.cli(&["run", "--count", "20", "--wait", "--json", "--", "true"]);
    assert!(
        out.status.success(),
        "every task finished: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ran: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let on_disk = ran
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["node"] == "disk")
        .count();
    assert_eq!(on_disk, 0, "{ran}");
    // The task already there is still reported running.
    assert_eq!(state(n1, &long[0]).as_deref(), Some("running"));

    // Space returns: disk takes work again, by itself.
    std::fs::remove_file(&fill).unwrap();
    wait_for(
        "disk to advertise room again",
        Duration::from_secs(30),
        || (cpus_free(&cluster)? > 0.0).then_some(()),
    );
    assert_eq!(unavailable(&http, "disk_full"), Some(0.0));
    let out = n1.cli(&["run", "--wait", "--constraint", "role==disk", "--", "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(n1.cli(&["kill", &long[0]]).status.success());
    wait_state(n1, &long, "killed", Duration::from_secs(30));
}

/// Waits until disk, its data dir read-only, advertises nothing free and
/// says why (metric, log), and checks that a task for it is not placed.
fn takes_nothing_while_read_only(cluster: &Cluster, http: &str) {
    wait_for(
        "disk to advertise nothing free",
        Duration::from_secs(30),
        || (cpus_free(cluster)? == 0.0).then_some(()),
    );
    assert_eq!(unavailable(http, "data_dir_read_only"), Some(1.0));
    assert!(cluster.nodes[1].log().contains("data_dir_read_only"));
    let out = cluster.nodes[0].cli(&[
        "run",
        "--wait",
        "--constraint",
        "role==disk",
        "--placement-timeout",
        "3",
        "--",
        "true",
    ]);
    assert!(
        !out.status.success(),
        "nothing is placed on a read-only node"
    );
}

/// A read-only remount fails while a file on it is open for writing, and a
/// running task holds its stdout and stderr open: this node runs no task
/// when its data dir turns read-only (the full-disk test shows running
/// tasks kept and reported).
#[test]
fn a_read_only_data_dir_takes_no_new_work_until_it_is_writable_again() {
    let Some(fs) = Tmpfs::mount(16) else { return };
    let (cluster, http) = cluster_with_disk_node(&fs, &[]);
    let n1 = &cluster.nodes[0];
    let out = n1.cli(&["run", "--wait", "--constraint", "role==disk", "--", "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    fs.remount(true);
    takes_nothing_while_read_only(&cluster, &http);

    fs.remount(false);
    wait_for(
        "disk to advertise room again",
        Duration::from_secs(30),
        || (cpus_free(&cluster)? > 0.0).then_some(()),
    );
    assert_eq!(unavailable(&http, "data_dir_read_only"), Some(0.0));
    let out = n1.cli(&["run", "--wait", "--constraint", "role==disk", "--", "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The rest of the read-only case: a task runs on the node when its data
/// dir turns read-only, and ends while it is. The node takes no new work
/// and keeps reporting the task; when the disk is writable again the task's
/// end is reported as it happened, `finished` with its output (the old
/// supervisor could not write the exit record and gave up at once: the
/// task was reported lost, its exit code gone).
#[test]
fn a_task_running_when_the_data_dir_turns_read_only_is_still_reported() {
    let Some(fs) = Tmpfs::mount(16) else { return };
    let (cluster, http) = cluster_with_disk_node(&fs, &[]);
    let n1 = &cluster.nodes[0];
    let ids = run_on_disk(n1, &["sh", "-c", "echo started; sleep 6; echo done"]);
    wait_state(n1, &ids, "running", Duration::from_secs(30));
    let ro = fs.read_only_over();
    takes_nothing_while_read_only(&cluster, &http);
    assert_eq!(state(n1, &ids[0]).as_deref(), Some("running"));
    // Past the task's end: its supervisor waits for the disk.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(state(n1, &ids[0]).as_deref(), Some("running"));
    drop(ro);
    wait_for(
        "disk to advertise room again",
        Duration::from_secs(30),
        || (cpus_free(&cluster)? > 0.0).then_some(()),
    );
    wait_state(n1, &ids, "finished", Duration::from_secs(40));
    let out = n1.cli(&["logs", &ids[0]]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\ndone\n");
}

#[test]
fn a_task_that_fills_the_disk_fails_saying_so_and_the_node_recovers() {
    let Some(fs) = Tmpfs::mount(8) else { return };
    // Ended tasks are collected every second while the disk is too full.
    let (cluster, _http) = cluster_with_disk_node(&fs, &["--gc-interval", "1s"]);
    let n1 = &cluster.nodes[0];
    let ids = run_on_disk(n1, &["dd", "if=/dev/zero", "of=big", "bs=64k"]);
    let r = wait_for("the task to end", Duration::from_secs(60), || {
        row(n1, &ids[0]).filter(|r| {
            r["state"]
                .as_str()
                .is_some_and(|s| ["finished", "failed", "killed", "lost"].contains(&s))
        })
    });
    assert_eq!(r["state"], "failed", "{r}");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("disk is full"), "{r}");

    // Its sandbox is collected, space returns, the node takes work again.
    let out = n1.cli(&["run", "--wait", "--constraint", "role==disk", "--", "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The supervisor itself, on a disk its task filled: it records how the
/// task ended (through the page it set aside) and does not panic (issue
/// 12: exit 101, the task reported lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_records_the_exit_of_a_task_that_filled_its_disk() {
    use agora_node::executor::{ExecEvent, Executor, ExecutorConfig, GcPolicy, LaunchRequest};
    use agora_protocol::ids::{FrameworkId, NodeId, TaskId};
    use agora_protocol::resources::Resources;
    use agora_protocol::task::{Command, TaskSpec, TaskState};

    let Some(fs) = Tmpfs::mount(4) else { return };
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let config = ExecutorConfig {
        data_dir: fs.path().to_path_buf(),
        node_id: NodeId::new("n1").unwrap(),
        cgroups: false,
        agora_exe: common::exe().into(),
        gc: GcPolicy::default(),
        task_user: None,
    };
    let (mut exec, _) = Executor::open(config, tx).await.unwrap();
    let id = TaskId::new("fw.1").unwrap();
    exec.launch(LaunchRequest {
        task_id: id.clone(),
        framework: FrameworkId::new("fw").unwrap(),
        weight: 1,
        home: NodeId::new("n1").unwrap(),
        spec: TaskSpec::new(
            "fill",
            Command::Shell("dd if=/dev/zero of=big bs=64k; exit 3".into()),
            Resources::ZERO,
        ),
        ports: vec![],
    });
    let end = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match rx.recv().await {
                Some(ExecEvent::Status { status, .. }) if status.state.is_terminal() => {
                    return status;
                }
                Some(_) => {}
                None => panic!("the executor stopped"),
            }
        }
    })
    .await
    .expect("the task ends");
    assert_eq!(
        (end.state, end.exit_code),
        (TaskState::Failed, Some(3)),
        "{end:?}"
    );
    assert!(
        end.reason
            .as_deref()
            .unwrap_or_default()
            .contains("disk is full"),
        "{end:?}"
    );
    let sup_log = fs.path().join("sandboxes/fw.1/.agora/supervisor.log");
    let said = std::fs::read_to_string(&sup_log).unwrap_or_default();
    assert!(!said.contains("panicked"), "{said}");
    exec.detach().await;
}
