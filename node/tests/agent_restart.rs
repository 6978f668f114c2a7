//! An agent restarted while a long task runs re-attaches to it; the task
//! finishes and its framework hears of the end exactly once.

mod common;

use agora_node::client::Client;
use agora_node::commands::register_cli;
use agora_protocol::Resources;
use agora_protocol::constraint::Constraint;
use agora_protocol::task::{Command, TaskSpec, TaskState};
use agora_protocol::wire::{ClientMessage, ServerMessage, StatusAck, Submit};
use common::{Cluster, wait_for};
use std::time::Duration;

#[test]
fn restarted_agent_reattaches_and_reports_once() {
    let mut cluster = Cluster::new();
    let key = cluster.key.clone();
    cluster.add("home", &key, &[]);
    cluster.add("worker", &key, &["--attr", "role=worker"]);
    cluster.wait_formed(2);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = cluster.nodes[0].socket();
    let mut client = rt.block_on(async {
        let mut c = Client::connect(&socket).await.unwrap();
        register_cli(&mut c).await.unwrap();
        let mut spec = TaskSpec::new(
            "long",
            Command::Shell("sleep 8; echo done".into()),
            Resources::cpu_mem(500, 0),
        );
        spec.constraints
            .push("role==worker".parse::<Constraint>().unwrap());
        c.send(&ClientMessage::Submit(Submit {
            request_id: 1,
            tasks: vec![spec],
        }))
        .await
        .unwrap();
        c
    });

    // Wait until it runs, acking what arrives.
    let mut events = Vec::new();
    rt.block_on(async {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), client.recv())
                .await
                .expect("status in time")
                .unwrap();
            if let ServerMessage::Status(ev) = msg {
                client
                    .send(&ClientMessage::Ack(StatusAck {
                        task_id: ev.status.task_id.clone(),
                        seq: ev.seq,
                    }))
                    .await
                    .unwrap();
                let running = ev.status.state == TaskState::Running;
                events.push(ev);
                if running {
                    break;
                }
            }
        }
    });

    // Restart the worker while the task runs.
    let status = cluster.nodes[1].signal_and_wait("-TERM");
    assert!(status.success(), "agent exits 0 on SIGTERM");
    cluster.nodes[1].start();

    rt.block_on(async {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(60), client.recv())
                .await
                .expect("the end of the task in time")
                .unwrap();
            if let ServerMessage::Status(ev) = msg {
                client
                    .send(&ClientMessage::Ack(StatusAck {
                        task_id: ev.status.task_id.clone(),
                        seq: ev.seq,
                    }))
                    .await
                    .unwrap();
                let terminal = ev.status.state.is_terminal();
                events.push(ev);
                if terminal {
                    break;
                }
            }
        }
        // Anything else that arrives within a few seconds must not be another end.
        while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_secs(4), client.recv()).await {
            if let ServerMessage::Status(ev) = msg {
                events.push(ev);
            }
        }
    });
    let ends: Vec<_> = events
        .iter()
        .filter(|e| e.status.state.is_terminal())
        .collect();
    assert_eq!(ends.len(), 1, "{events:?}");
    assert_eq!(ends[0].status.state, TaskState::Finished, "{events:?}");
    assert_eq!(
        ends[0].status.node.as_ref().map(|n| n.as_str()),
        Some("worker")
    );
    assert!(
        cluster.nodes[1].log().contains("re-attached"),
        "the worker re-attached"
    );

    let task = ends[0].status.task_id.to_string();
    wait_for("the task's output", Duration::from_secs(10), || {
        let out = cluster.nodes[0].cli(&["logs", &task]);
        (String::from_utf8_lossy(&out.stdout).trim() == "done").then_some(())
    });
}

/// Issue 11: after an agent restart the node forgot every ended task; a
/// killed task simply vanished from `agora ps`.
#[test]
fn ended_tasks_are_still_listed_after_a_restart() {
    let mut cluster = Cluster::start(1);
    let out = cluster.nodes[0].cli(&["run", "--cpus", "0.1", "--", "sleep", "300"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let state = |n: &common::Node| {
        n.ps()?
            .iter()
            .find(|r| r["id"] == id.as_str())
            .and_then(|r| r["state"].as_str().map(str::to_string))
    };
    wait_for("the task to run", Duration::from_secs(30), || {
        (state(&cluster.nodes[0]).as_deref() == Some("running")).then_some(())
    });
    let out = cluster.nodes[0].cli(&["kill", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the task to be killed", Duration::from_secs(30), || {
        (state(&cluster.nodes[0]).as_deref() == Some("killed")).then_some(())
    });

    let status = cluster.nodes[0].signal_and_wait("-TERM");
    assert!(status.success(), "the agent stops cleanly: {status}");
    cluster.nodes[0].start();
    let after = wait_for(
        "the restarted agent to list",
        Duration::from_secs(30),
        || cluster.nodes[0].ps(),
    );
    let row = after
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("task {id} vanished after the restart: {after:?}"));
    assert_eq!(row["state"], "killed", "{row}");
}
