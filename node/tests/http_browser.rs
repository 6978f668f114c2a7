//! The dashboard in a real browser: headless Chromium renders the page served
//! by the real router (with the stand-in agent of http_support), runs its
//! JavaScript, and the test checks that every node id and a task id appear in
//! the rendered DOM. Ignored by default because it needs Debian's `chromium`
//! package; run it with
//!
//! ```text
//! cargo test -p agora-node --test http_browser -- --ignored
//! AGORA_DASHBOARD_SCREENSHOT=docs/dashboard.png cargo test -p agora-node --test http_browser -- --ignored
//! ```
//!
//! The second form also saves a 1400x900 screenshot (a relative path is
//! taken from the workspace root).

mod http_support;

use agora_node::http::HttpConfig;
use http_support::{Agent, FakeAgent, NODES, TestServer, browser, cluster_snapshot};

#[tokio::test]
#[ignore = "needs chromium (apt-get install -y chromium)"]
async fn dashboard_renders_nodes_and_tasks_in_chromium() {
    let (snap, tasks) = cluster_snapshot();
    let s = TestServer::start(
        HttpConfig::default(),
        snap,
        Agent::Fake(FakeAgent::new(tasks)),
    )
    .await;
    let url = s.url("/");
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

    if let Some(path) = std::env::var_os("AGORA_DASHBOARD_SCREENSHOT") {
        // A relative path is taken from the workspace root, not node/.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let path = root.join(path);
        browser::screenshot(&url, &path, 1400, 900)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    s.stop().await;
}
