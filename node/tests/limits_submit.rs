//! Submits that used to fail late or badly (issue 12): `agora run --count
//! 10000` with a 200-byte command was one frame over the limit; a 900 KB
//! environment was accepted and then failed at exec with E2BIG; `--cpus 0`
//! was accepted. Each is now refused at once with the size and the limit,
//! or split so that it works, and the node keeps serving.

mod common;
mod limits_support;
mod prom;

use common::http::request;
use common::json::{closed, error_code, frame, json_client, read_frame};
use common::{Cluster, exe};
use limits_support::{TOKEN, metric, one_node};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Command;

#[test]
fn run_count_10000_with_a_200_byte_command_is_submitted_whole() {
    let c = Cluster::start(1);
    let node = &c.nodes[0];
    let long = "x".repeat(200);
    // No node has zone=nowhere: the tasks fail 2 s after their submit
    // instead of starting 10,000 processes.
    let out = node.cli(&[
        "run",
        "--count",
        "10000",
        "--constraint",
        "zone==nowhere",
        "--",
        "true",
        &long,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 10_000, "one distinct task id per task");
    // The node is still there, and knows them.
    let out = node.cli(&["ps", "--limit", "1"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("of 10000 matching tasks"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Registers a JSON client as a framework.
fn registered(c: &Cluster) -> UnixStream {
    let mut s = json_client(&c.nodes[0].socket());
    s.write_all(&frame(
        br#"{"register":{"name":"envs","role":"","weight":1,"failover_timeout_ms":1000,"framework_id":null}}"#,
    ))
    .unwrap();
    let r = read_frame(&mut s).unwrap();
    assert!(r.get("registered").is_some(), "{r}");
    s
}

fn submit_with_env(env: serde_json::Value) -> Vec<u8> {
    let task = serde_json::json!({
        "name": "big", "command": {"argv": ["true"]}, "env": env,
        "resources": {"cpu_millis": 100, "mem_mib": 0, "disk_mib": 0, "gpus": 0, "ports": 0},
        "constraints": [], "priority": 0, "kill_grace_ms": 5000, "placement_timeout_ms": 0});
    serde_json::json!({"submit": {"request_id": 7, "tasks": [task]}})
        .to_string()
        .into_bytes()
}

#[test]
fn environments_exec_would_refuse_are_refused_at_submit_with_the_size_and_the_limit() {
    let (c, http) = one_node(&[]);
    let mut s = registered(&c);

    // One 900 KB variable: longer than exec takes for one string.
    let big = serde_json::json!({"BIG": "x".repeat(900_000)});
    s.write_all(&frame(&submit_with_env(big.clone()))).unwrap();
    let r = read_frame(&mut s).unwrap();
    assert_eq!(error_code(&r), "invalid_spec", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"BIG\"")
            && message.contains("900004 bytes")
            && message.contains("131071"),
        "{message}"
    );

    // 900 KB in nine variables: each fits, the total does not.
    let nine: serde_json::Map<String, serde_json::Value> = (0..9)
        .map(|i| (format!("V{i}"), "x".repeat(100_000).into()))
        .collect();
    s.write_all(&frame(&submit_with_env(nine.into()))).unwrap();
    let r = read_frame(&mut s).unwrap();
    assert_eq!(error_code(&r), "invalid_spec", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("900121 bytes") && message.contains("the limit is 524288"),
        "{message}"
    );

    // The same over HTTP.
    let body = serde_json::json!({"name": "big", "command": ["true"], "cpus": 0.1, "env": big});
    let auth = format!("Bearer {TOKEN}");
    let r = request(
        &http,
        "POST",
        "/api/v1/tasks",
        &[("Authorization", &auth)],
        Some(&body.to_string()),
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("900004 bytes"), "{}", r.text());

    // 10 MB: over the socket's frame limit; that connection only is closed.
    let ten = serde_json::json!({"BIG": "x".repeat(10 << 20)});
    let _ = s.write_all(&frame(&submit_with_env(ten)));
    let r = read_frame(&mut s).unwrap();
    assert_eq!(error_code(&r), "frame_too_large", "{r}");
    assert!(closed(&mut s));
    assert!(metric(&http, "agora_frames_too_large_total", &[("port", "socket")]) >= 1.0);

    // The node is still serving, and no task was created.
    let tasks = c.nodes[0].ps().expect("the node answers");
    assert!(tasks.is_empty(), "{tasks:?}");
}

#[test]
fn a_submit_whose_answer_cannot_fit_a_frame_is_refused_before_any_task_is_made() {
    // A postcard framework with a long id submits 10,000 small tasks (one
    // 400 KB frame): their ids (about 115 bytes each) do not fit one 1 MiB
    // answer. The old node made the tasks, then answered `internal` ("answer
    // exceeded the maximum frame size"), so the framework never learned
    // their ids.
    use agora_protocol::codec::{Codec, DEFAULT_MAX_FRAME, frame as pframe};
    use agora_protocol::resources::Resources;
    use agora_protocol::task::{Command as Cmd, TaskSpec};
    use agora_protocol::wire::{ClientMessage, Register, ServerMessage, Submit};
    use std::io::Read;
    // A 50-character node id makes the framework's ids about 115 bytes.
    let mut c = Cluster::new();
    let key = c.key.clone();
    c.add(&"n".repeat(50), &key, &[]);
    c.wait_formed(1);
    let mut s = common::json::connect(&c.nodes[0].socket());
    let read = |s: &mut UnixStream| -> ServerMessage {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        Codec::Postcard.decode(&buf).unwrap()
    };
    let send = |s: &mut UnixStream, m: &ClientMessage| {
        let bytes = Codec::Postcard.encode(m).unwrap();
        s.write_all(&pframe(&bytes, DEFAULT_MAX_FRAME).unwrap())
            .unwrap();
    };
    s.write_all(&frame(b"agora/1 postcard")).unwrap();
    assert!(matches!(read(&mut s), ServerMessage::Welcome(_)));
    send(
        &mut s,
        &ClientMessage::Register(Register {
            name: "n".repeat(100),
            role: String::new(),
            weight: 1,
            failover_timeout_ms: 1000,
            framework_id: None,
        }),
    );
    assert!(matches!(read(&mut s), ServerMessage::Registered(_)));
    let spec = TaskSpec::new(
        "t",
        Cmd::Argv(vec!["true".into()]),
        Resources::cpu_mem(1, 0),
    );
    send(
        &mut s,
        &ClientMessage::Submit(Submit {
            request_id: 3,
            tasks: vec![spec; 10_000],
        }),
    );
    match read(&mut s) {
        ServerMessage::Error(e) => {
            assert_eq!(
                e.code,
                agora_protocol::wire::ErrorCode::InvalidSpec,
                "{e:?}"
            );
            assert!(e.message.contains("submit at most"), "{}", e.message);
        }
        ServerMessage::Submitted(sub) => panic!(
            "{} tasks made and answered in one frame: the check is too strict or the ids short",
            sub.task_ids.len()
        ),
        other => panic!("{other:?}"),
    }
    // Nothing was made.
    let ps = c.nodes[0].ps().unwrap();
    assert!(ps.is_empty(), "{} tasks made", ps.len());
}

#[test]
fn zero_negative_and_non_numeric_cpus_are_refused_by_the_command_line() {
    for (args, what) in [
        (
            &["run", "--cpus", "0", "--", "true"][..],
            "give more than 0",
        ),
        (
            &["run", "--cpus=-1", "--", "true"][..],
            "is not a cpu count",
        ),
        (
            &["run", "--cpus", "NaN", "--", "true"][..],
            "is not a cpu count",
        ),
        (
            &["run", "--cpus", "inf", "--", "true"][..],
            "is not a cpu count",
        ),
        (&["agent", "--cpus", "0"][..], "give more than 0"),
        (&["agent", "--mem", "0"][..], "give more than 0"),
    ] {
        let out = Command::new(exe()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(what), "{args:?}: {err}");
    }
}
