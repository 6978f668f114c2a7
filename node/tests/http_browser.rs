//! The dashboard in a real browser (Debian's headless `chromium`, which
//! .ci/run installs): Chromium renders the page, runs its JavaScript, and the
//! tests check that every node id and task id appear in the rendered DOM.
//!
//! - `dashboard_shows_a_real_cluster_in_chromium` starts a 3-node cluster of
//!   real agents, submits tasks through the HTTP API and renders n1's
//!   dashboard: without the token it shows only its sign-in form, with
//!   `/?token=TOKEN` the cluster. With
//!   `AGORA_DASHBOARD_SCREENSHOT=docs/dashboard.png` it also saves the
//!   1400x900 screenshot shown in the README (a relative path is taken from
//!   the workspace root).
//! - `dashboard_renders_nodes_and_tasks_in_chromium` renders the
//!   router with the stand-in agent of http_support and a larger fixture
//!   cluster, including the log viewer and a wrong token's sign-in form;
//!   `AGORA_FIXTURE_SCREENSHOT=FILE`
//!   saves its screenshot.
//!
//! Without chromium both print one line saying so and pass (skipped), so
//! that `cargo test --workspace` passes on a machine with only Rust and
//! Python; with `AGORA_REQUIRE_BROWSER=1`, which .ci/run sets after
//! installing chromium, a missing browser fails them.
//!
//! ```text
//! cargo test -p agora-node --test http_browser
//! AGORA_REQUIRE_BROWSER=1 cargo test -p agora-node --test http_browser
//! AGORA_DASHBOARD_SCREENSHOT=docs/dashboard.png cargo test -p agora-node --test http_browser
//! ```

mod common;
mod http_support;

use agora_node::http::HttpConfig;
use common::http::request;
use common::{Cluster, wait_for};
use http_support::{Agent, FakeAgent, NODES, TestServer, browser, cluster_snapshot};
use std::time::Duration;

const TOKEN: &str = "browser-test-token";

/// Whether the rendered page shows its sign-in form.
fn login_shown(dom: &str) -> bool {
    dom.contains("id=\"login\"") && !dom.contains("id=\"login\" class=\"login\" hidden")
}

/// A relative path is taken from the workspace root, not node/.
fn from_root(path: &std::ffi::OsStr) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

#[tokio::test]
async fn dashboard_shows_a_real_cluster_in_chromium() {
    if browser::chromium_or_skip("dashboard_shows_a_real_cluster_in_chromium").is_none() {
        return;
    }
    let mut c = Cluster::new();
    let key = c.key.clone();
    let token_file = c.root.path().join("http-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    c.add(
        "n1",
        &key,
        &[
            "--http",
            &addr,
            "--http-token-file",
            token_file.to_str().unwrap(),
            "--attr",
            "zone=eu-1",
        ],
    );
    c.add("n2", &key, &["--attr", "zone=eu-1"]);
    c.add("n3", &key, &["--attr", "zone=eu-2"]);
    c.wait_formed(3);
    let bearer = format!("Bearer {TOKEN}");
    let auth = ("Authorization", bearer.as_str());
    wait_for(
        "n1's API to list 3 live nodes",
        Duration::from_secs(30),
        || {
            let r = request(&addr, "GET", "/api/v1/cluster", &[auth], None).ok()?;
            (r.status == 200 && r.json()["nodes"]["alive"] == 3).then_some(())
        },
    );

    // Tasks through the API: two that finish, two that keep running.
    let mut ids = Vec::new();
    for spec in [
        r#"{"name": "hello", "count": 2, "cpus": 0.25, "mem": 32, "command": ["sh", "-c", "echo hello from $AGORA_NODE_ID"]}"#,
        r#"{"name": "web", "count": 2, "cpus": 0.75, "mem": 256, "constraints": ["zone:spread"], "command": ["sleep", "300"], "kill_grace_ms": 200}"#,
    ] {
        let r = request(
            &addr,
            "POST",
            "/api/v1/tasks",
            &[("Authorization", bearer.as_str())],
            Some(spec),
        )
        .unwrap();
        assert_eq!(r.status, 202, "{}", r.text());
        for id in r.json()["task_ids"].as_array().unwrap() {
            ids.push(id.as_str().unwrap().to_string());
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let want = if i < 2 { "finished" } else { "running" };
        wait_for(
            &format!("task {id} to be {want}"),
            Duration::from_secs(60),
            || {
                let r =
                    request(&addr, "GET", &format!("/api/v1/tasks/{id}"), &[auth], None).ok()?;
                (r.status == 200 && r.json()["state"] == want).then_some(())
            },
        );
    }

    // Without the token the page asks for it and shows nothing of the
    // cluster.
    let url = format!("http://{addr}/");
    let dom = browser::dump_dom(&url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(login_shown(&dom), "no sign-in form without the token");
    assert!(
        !dom.contains("data-node-id="),
        "nodes rendered without the token"
    );
    // With it (as /?token=TOKEN, which the page keeps), everything shows.
    let url = format!("http://{addr}/?token={TOKEN}");
    let mut expected: Vec<&str> = vec!["n1", "n2", "n3"];
    expected.extend(ids.iter().map(String::as_str));
    let dom = browser::check_dashboard(&url, &expected)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for node in ["n1", "n2", "n3"] {
        assert!(
            dom.contains(&format!("data-node-id=\"{node}\"")),
            "node tile {node} not rendered"
        );
    }
    for id in &ids {
        assert!(
            dom.contains(&format!("data-task-id=\"{id}\"")),
            "task row {id} not rendered"
        );
    }
    assert!(
        dom.contains("conn conn-ok"),
        "the page did not reach its API"
    );
    assert!(
        !login_shown(&dom),
        "the sign-in form stayed up with the token"
    );

    let shot = match std::env::var_os("AGORA_DASHBOARD_SCREENSHOT") {
        Some(path) => from_root(&path),
        None => c.root.path().join("dashboard.png"),
    };
    browser::screenshot(&url, &shot, 1400, 900)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
}

#[tokio::test]
async fn dashboard_renders_nodes_and_tasks_in_chromium() {
    if browser::chromium_or_skip("dashboard_renders_nodes_and_tasks_in_chromium").is_none() {
        return;
    }
    let (snap, tasks) = cluster_snapshot();
    let config = HttpConfig {
        token: Some(TOKEN.into()),
        ..HttpConfig::default()
    };
    let s = TestServer::start(config, snap, Agent::Fake(FakeAgent::new(tasks))).await;
    let url = s.url(&format!("/?token={TOKEN}"));
    let mut expected: Vec<&str> = NODES.iter().map(|n| n.0).collect();
    expected.extend(["web.4", "ml.1", "batch.7", "cell-0"]);
    let dom = browser::check_dashboard(&url, &expected)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Rendered by the script, not present in the static page.
    assert!(
        dom.contains("data-node-id=\"node-c\""),
        "node tiles not rendered"
    );
    assert!(
        dom.contains("data-task-id=\"web.4\""),
        "task rows not rendered"
    );
    assert!(
        dom.contains("conn conn-ok"),
        "the page did not reach its API"
    );

    // A task's logs link opens the log viewer, which reads from the API.
    // A wrong token: the form says it was not accepted.
    let dom = browser::dump_dom(&s.url("/?token=wrong"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(login_shown(&dom), "no sign-in form for a wrong token");
    assert!(
        dom.contains("was not accepted"),
        "the form does not say why"
    );

    let logs = browser::dump_dom(&format!("{url}#logs/batch.1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        logs.contains("batch.1 starting on node-a\nprocessing batch 1/3"),
        "the log viewer did not show the task's output"
    );
    if let Some(path) = std::env::var_os("AGORA_DASHBOARD_LOGS_SCREENSHOT") {
        browser::screenshot(
            &format!("{url}#logs/batch.1"),
            std::path::Path::new(&path),
            1400,
            900,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    if let Some(path) = std::env::var_os("AGORA_FIXTURE_SCREENSHOT") {
        let path = from_root(&path);
        browser::screenshot(&url, &path, 1400, 900)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    s.stop().await;
}
