//! `agora kill` from a node that is not the task's home: the task is found
//! through the cluster-wide listing and killed; an unknown id and a task
//! that has already ended are refused with a reason and a non-zero exit.
//! Another framework on the socket may not kill the task; the CLI, which
//! does not register (an unregistered connection kills as the operator),
//! may.

mod common;

use common::json::{error_code, frame, json_client, read_frame};
use common::{Cluster, wait_for};
use std::io::Write;
use std::time::Duration;

#[test]
fn kill_from_another_node_stops_the_task_and_bad_ids_are_refused() {
    let cluster = Cluster::start(2);
    let (home, other) = (&cluster.nodes[0], &cluster.nodes[1]);
    let out = home.cli(&["run", "--cpus", "0.1", "--", "sleep", "600"]);
    assert!(
        out.status.success(),
        "run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!id.is_empty(), "run prints the task id");
    let state = |id: &str| -> Option<String> {
        other
            .ps()?
            .iter()
            .find(|r| r["id"] == id)
            .and_then(|r| r["state"].as_str().map(str::to_string))
    };
    wait_for("the task to run", Duration::from_secs(30), || {
        (state(&id).as_deref() == Some("running")).then_some(())
    });

    // A framework kills only its own tasks, on the task's home node or any
    // other.
    for node in [home, other] {
        let mut batch = json_client(&node.socket());
        let register = r#"{"register":{"name":"batch","role":"","weight":1,"failover_timeout_ms":0,"framework_id":null}}"#;
        batch.write_all(&frame(register.as_bytes())).unwrap();
        let registered = read_frame(&mut batch).expect("an answer to register");
        assert!(registered["registered"].is_object(), "{registered}");
        let kill = serde_json::json!({"kill": {"task_id": id}});
        batch
            .write_all(&frame(kill.to_string().as_bytes()))
            .unwrap();
        let refused = read_frame(&mut batch).expect("an answer to the kill");
        assert_eq!(error_code(&refused), "unknown_task", "{refused}");
        let why = refused["error"]["message"].as_str().unwrap_or_default();
        assert!(
            why.contains("belongs to framework") && why.contains("operator"),
            "{why}"
        );
    }
    assert_eq!(state(&id).as_deref(), Some("running"));

    // Killed through the other node, which is not the task's home.
    let out = other.cli(&["kill", &id]);
    assert!(
        out.status.success(),
        "kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the task to be killed", Duration::from_secs(30), || {
        (state(&id).as_deref() == Some("killed")).then_some(())
    });

    let out = other.cli(&["kill", &id]);
    assert!(!out.status.success(), "a second kill is refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has already ended (killed)"), "{err}");

    let framework = id.rsplit_once('.').map(|(f, _)| f).unwrap();
    let unknown = format!("{framework}.999999");
    let out = other.cli(&["kill", &unknown]);
    assert!(!out.status.success(), "an unknown id is refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no node knows task"), "{err}");
}
