//! The HTTP API, dashboard and metrics over real HTTP on a loopback listener,
//! with the real router and `serve`. A small task in the test stands in for
//! the agent and answers its commands (see http_support), until the module
//! is wired into the agent and covered by the cluster tests in tests/.

mod http_support;
mod prom;

use agora_node::http::HttpConfig;
use http_support::{Agent, FakeAgent, NODES, TestServer, cluster_snapshot};
use prom::metric;
use std::collections::BTreeSet;
use std::time::Duration;

const TOKEN: &str = "s3cret-token";

fn config(token: Option<&str>) -> HttpConfig {
    HttpConfig {
        token: token.map(str::to_string),
        ..HttpConfig::default()
    }
}

/// A node with `--http-public-read` and no token file: reads for anyone,
/// no changes.
async fn start_public_read_only() -> TestServer {
    let (snap, tasks) = cluster_snapshot();
    let cfg = HttpConfig {
        public_read: true,
        ..config(None)
    };
    TestServer::start(cfg, snap, Agent::Fake(FakeAgent::new(tasks))).await
}

async fn start(token: Option<&str>) -> TestServer {
    let (snap, tasks) = cluster_snapshot();
    TestServer::start(config(token), snap, Agent::Fake(FakeAgent::new(tasks))).await
}

fn ids(v: &serde_json::Value, list: &str, key: &str) -> BTreeSet<String> {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("no array {list} in {v}"))
        .iter()
        .map(|x| x[key].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn cluster_summary_counts_nodes_resources_tasks_and_cells() {
    let s = start(Some(TOKEN)).await;
    let r = s.get("/api/v1/cluster").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").starts_with("application/json"));
    let v = r.json();
    assert_eq!(v["node_id"], "node-a");
    assert_eq!(v["nodes"]["alive"], 4);
    assert_eq!(v["nodes"]["dead"], 1);
    assert_eq!(v["nodes"]["total"], 5);
    // Alive nodes only: node-d (4 cores) is dead.
    assert_eq!(
        v["resources"]["total"]["cpu_millis"],
        8000 + 8000 + 16000 + 8000
    );
    let used = v["resources"]["used"]["cpu_millis"].as_u64().unwrap();
    let free = v["resources"]["free"]["cpu_millis"].as_u64().unwrap();
    assert_eq!(used + free, 40000);
    let cpu_util = v["utilization"]["cpu"].as_f64().unwrap();
    assert!((cpu_util - used as f64 / 40000.0).abs() < 1e-9);
    assert_eq!(v["tasks_scope"], "cluster");
    assert_eq!(v["tasks"]["running"], 11);
    assert_eq!(v["tasks"]["finished"], 4);
    assert_eq!(v["tasks"]["staging"], 1);
    assert_eq!(v["tasks"]["lost"], 1);
    let total: u64 = v["tasks"]
        .as_object()
        .unwrap()
        .values()
        .map(|x| x.as_u64().unwrap())
        .sum();
    assert_eq!(total, 20);
    assert_eq!(v["frameworks"]["total"], 4);
    assert_eq!(v["frameworks"]["connected"], 1);
    assert_eq!(v["cells"][0]["id"], "cell-0");
    assert_eq!(v["cells"][0]["members"], 5);
    s.stop().await;
}

#[tokio::test]
async fn nodes_list_and_one_node_with_its_tasks() {
    let s = start(Some(TOKEN)).await;
    let v = s.get("/api/v1/nodes").await.json();
    let expected: BTreeSet<String> = NODES.iter().map(|n| n.0.to_string()).collect();
    assert_eq!(ids(&v, "nodes", "id"), expected);
    let a = &v["nodes"][0];
    assert_eq!(a["id"], "node-a");
    assert_eq!(a["is_self"], true);
    assert_eq!(a["cpus_total"], 8.0);
    assert_eq!(a["mem_total_mib"], 16384);
    assert_eq!(a["attrs"]["zone"], "eu-1");
    assert_eq!(v["nodes"][3]["alive"], false);

    let r = s.get("/api/v1/nodes/node-c").await;
    assert_eq!(r.status, 200);
    let c = r.json();
    assert_eq!(c["id"], "node-c");
    assert_eq!(c["is_self"], false);
    let tasks: BTreeSet<String> = ids(&c, "tasks", "id");
    assert_eq!(
        tasks,
        ["batch.3", "web.1", "web.4", "ml.1"]
            .map(String::from)
            .into()
    );
    assert_eq!(c["tasks_scope"], "cluster");

    let r = s.get("/api/v1/nodes/no-such-node").await;
    assert_eq!(r.status, 404);
    assert!(r.header("content-type").starts_with("application/json"));
    assert!(r.error().contains("no-such-node"), "{}", r.text());
    s.stop().await;
}

#[tokio::test]
async fn task_list_filters_by_state_framework_and_node() {
    let s = start(Some(TOKEN)).await;
    let all = s.get("/api/v1/tasks").await.json();
    assert_eq!(all["tasks"].as_array().unwrap().len(), 20);
    assert_eq!(all["unreachable"], serde_json::json!([]));
    let t = all["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "batch.7")
        .unwrap();
    assert_eq!(t["state"], "failed");
    assert_eq!(t["exit_code"], 2);
    assert_eq!(t["node"], "node-b");
    assert_eq!(t["cpus"], 2.0);
    assert_eq!(t["reason"], "exited with status 2");

    let running = s.get("/api/v1/tasks?state=running").await.json();
    assert_eq!(running["tasks"].as_array().unwrap().len(), 11);
    assert!(
        running["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "running")
    );

    let ended = s.get("/api/v1/tasks?state=failed,killed,lost").await.json();
    assert_eq!(
        ids(&ended, "tasks", "id"),
        ["batch.7", "ml.4", "web.6"].map(String::from).into()
    );

    let ml = s.get("/api/v1/tasks?framework=ml").await.json();
    assert_eq!(
        ids(&ml, "tasks", "id"),
        ["ml.1", "ml.2", "ml.3", "ml.4"].map(String::from).into()
    );

    let on_e = s
        .get("/api/v1/tasks?node=node-e&state=running")
        .await
        .json();
    assert_eq!(
        ids(&on_e, "tasks", "id"),
        ["web.2", "ml.2"].map(String::from).into()
    );

    let r = s.get("/api/v1/tasks?state=sleeping").await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("sleeping"), "{}", r.text());
    s.stop().await;
}

#[tokio::test]
async fn one_task_and_unknown_task_is_json_404() {
    let s = start(Some(TOKEN)).await;
    let r = s.get("/api/v1/tasks/web.4").await;
    assert_eq!(r.status, 200);
    let t = r.json();
    assert_eq!(t["id"], "web.4");
    assert_eq!(t["name"], "api");
    assert_eq!(t["framework"], "web");
    assert_eq!(t["node"], "node-c");
    assert_eq!(t["mem_mib"], 2048);

    let r = s.get("/api/v1/tasks/nope.1").await;
    assert_eq!(r.status, 404);
    assert!(r.header("content-type").starts_with("application/json"));
    assert!(r.error().contains("nope.1"), "{}", r.text());

    let r = s.get("/api/v1/tasks/bad%20id").await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("bad task id"), "{}", r.text());

    let r = s.get("/api/v1/no/such/route").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("openapi.json"), "{}", r.text());
    let r = s.send("PUT", "/api/v1/nodes", &[], None).await;
    assert_eq!(r.status, 405);
    assert!(r.error().contains("PUT"), "{}", r.text());
    s.stop().await;
}

#[tokio::test]
async fn logs_as_json_with_offsets_and_as_text() {
    let s = start(Some(TOKEN)).await;
    let r = s.get("/api/v1/tasks/batch.1/logs").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let full = "batch.1 starting on node-a\nprocessing batch 1/3\nprocessing batch 2/3\n";
    assert_eq!(v["task_id"], "batch.1");
    assert_eq!(v["stream"], "stdout");
    assert_eq!(v["data"], full);
    assert_eq!(v["offset"], 0);
    assert_eq!(v["next_offset"], full.len());
    assert_eq!(v["eof"], true);

    // Paging: offset and max_bytes.
    let v = s
        .get("/api/v1/tasks/batch.1/logs?offset=8&max_bytes=8")
        .await
        .json();
    assert_eq!(v["data"], "starting");
    assert_eq!(v["next_offset"], 16);
    assert_eq!(v["eof"], false);

    let v = s
        .get("/api/v1/tasks/batch.1/logs?stream=stderr")
        .await
        .json();
    assert_eq!(v["data"], "warning: cache cold\n");

    let r = s
        .get("/api/v1/tasks/batch.1/logs?format=text&offset=27")
        .await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/plain"));
    assert_eq!(r.text(), &full[27..]);
    assert_eq!(r.header("x-agora-next-offset"), full.len().to_string());
    assert_eq!(r.header("x-agora-eof"), "true");

    // A character cut by max_bytes is left for the next read.
    let v = s.get("/api/v1/tasks/ml.1/logs?max_bytes=5").await.json();
    assert_eq!(v["data"], "temp");
    assert_eq!(v["next_offset"], 4);
    assert_eq!(v["eof"], false);
    let v = s.get("/api/v1/tasks/ml.1/logs?offset=4").await.json();
    assert_eq!(v["data"], "érature: 20°C\n");
    assert_eq!(v["eof"], true);

    let r = s.get("/api/v1/tasks/nope.9/logs").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("nope.9"));
    let r = s.get("/api/v1/tasks/batch.1/logs?stream=stdin").await;
    assert_eq!(r.status, 400);
    let r = s.get("/api/v1/tasks/batch.1/logs?offset=-1").await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("offset"));
    s.stop().await;
}

#[tokio::test]
async fn frameworks_with_dominant_shares() {
    let s = start(Some(TOKEN)).await;
    let v = s.get("/api/v1/frameworks").await.json();
    assert_eq!(
        ids(&v, "frameworks", "id"),
        ["batch", "http", "ml", "web"].map(String::from).into()
    );
    let ml = v["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "ml")
        .unwrap();
    assert_eq!(ml["name"], "ml");
    assert_eq!(ml["home_node"], "node-c");
    assert_eq!(ml["dominant_share"], 0.333);
    assert_eq!(ml["active_tasks"], 2);
    assert_eq!(ml["connected"], serde_json::Value::Null);
    let batch = v["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "batch")
        .unwrap();
    assert_eq!(batch["connected"], true);
    assert_eq!(ml["weight"], 1);
    s.stop().await;
}

#[tokio::test]
async fn mutations_are_refused_without_a_configured_token() {
    let s = start_public_read_only().await;
    let body = r#"{"command": ["true"]}"#;
    for (method, path, body) in [
        ("POST", "/api/v1/tasks", Some(body)),
        ("DELETE", "/api/v1/tasks/web.1", None),
    ] {
        let r = s
            .send(method, path, &[("authorization", "Bearer anything")], body)
            .await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
        assert!(r.error().contains("--http-token-file"), "{}", r.text());
    }
    // Nothing was changed.
    assert_eq!(
        s.get("/api/v1/tasks/web.1").await.json()["state"],
        "running"
    );
    s.stop().await;
}

#[tokio::test]
async fn mutations_need_the_right_bearer_token() {
    let s = start(Some(TOKEN)).await;
    let body = r#"{"command": ["true"]}"#;
    let r = s.send("POST", "/api/v1/tasks", &[], Some(body)).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").starts_with("Bearer"));
    assert!(r.error().contains("Authorization"), "{}", r.text());
    let r = s
        .send(
            "POST",
            "/api/v1/tasks",
            &[("authorization", "Bearer wrong")],
            Some(body),
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.error().contains("wrong"), "{}", r.text());
    let r = s
        .send(
            "DELETE",
            "/api/v1/tasks/web.1",
            &[("authorization", "Basic abc")],
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        s.get("/api/v1/tasks/web.1").await.json()["state"],
        "running"
    );

    let auth = format!("Bearer {TOKEN}");
    let r = s
        .send(
            "DELETE",
            "/api/v1/tasks/web.1",
            &[("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["task_id"], "web.1");
    assert_eq!(s.get("/api/v1/tasks/web.1").await.json()["state"], "killed");
    // The cached cluster list was refreshed by the kill.
    let killed = s.get("/api/v1/tasks?state=killed").await.json();
    assert!(ids(&killed, "tasks", "id").contains("web.1"));

    let r = s
        .send(
            "DELETE",
            "/api/v1/tasks/nope.3",
            &[("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("nope.3"));
    s.stop().await;
}

#[tokio::test]
async fn submit_creates_tasks_and_explains_bad_specs() {
    let s = start(Some(TOKEN)).await;
    let auth = format!("Bearer {TOKEN}");
    let h = [("authorization", auth.as_str())];
    let r = s
        .send(
            "POST",
            "/api/v1/tasks",
            &h,
            Some(
                r#"{"count": 3, "cpus": 0.5, "mem": 128, "name": "hello",
                    "constraints": ["os==linux", "zone in eu-1,eu-2"],
                    "command": ["sh", "-c", "echo $AGORA_NODE_ID"], "env": {"A": "1"}}"#,
            ),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let new: Vec<String> = r.json()["task_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    assert_eq!(new.len(), 3);
    let listed = s
        .get("/api/v1/tasks?framework=http&state=staging")
        .await
        .json();
    let listed = ids(&listed, "tasks", "id");
    for id in &new {
        assert!(listed.contains(id), "{id} not in {listed:?}");
        let t = s.get(&format!("/api/v1/tasks/{id}")).await.json();
        assert_eq!(t["name"], "hello");
        assert_eq!(t["cpus"], 0.5);
        assert_eq!(t["mem_mib"], 128);
    }

    let bad = [
        ("not json", "not a task spec"),
        (r#"{"cpus": 1}"#, "command"),
        (r#"{"command": []}"#, "no command"),
        (r#"{"command": "x", "cpus": "many"}"#, "cpus"),
        (r#"{"command": "x", "mem": "12X"}"#, "mem"),
        (r#"{"command": "x", "constraints": ["os=linux"]}"#, "'=='"),
        (r#"{"command": "x", "count": 0}"#, "count"),
        (r#"{"command": "x", "cpu": 1}"#, "unknown field"),
        (r#"{"command": "x", "cpus": 0, "mem": 0}"#, "no resources"),
    ];
    for (body, needle) in bad {
        let r = s.send("POST", "/api/v1/tasks", &h, Some(body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.error().contains(needle), "{body}: {}", r.text());
    }

    let huge = format!(r#"{{"command": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let r = s.send("POST", "/api/v1/tasks", &h, Some(&huge)).await;
    assert_eq!(r.status, 413, "{}", &r.text());
    assert!(r.error().contains("larger than"), "{}", r.text());
    s.stop().await;
}

#[tokio::test]
async fn an_agent_that_does_not_answer_gives_503_and_the_summary_falls_back() {
    let (snap, _) = cluster_snapshot();
    let cfg = HttpConfig {
        token: Some(TOKEN.into()),
        command_timeout: Duration::from_millis(200),
        ..HttpConfig::default()
    };
    let s = TestServer::start(cfg, snap, Agent::Silent).await;
    let r = s.get("/api/v1/tasks/web.1").await;
    assert_eq!(r.status, 503);
    assert!(r.error().contains("did not answer"), "{}", r.text());
    let r = s.get("/api/v1/tasks").await;
    assert_eq!(r.status, 503);
    let auth = format!("Bearer {TOKEN}");
    let r = s
        .send(
            "POST",
            "/api/v1/tasks",
            &[("authorization", &auth)],
            Some(r#"{"command": "true"}"#),
        )
        .await;
    assert_eq!(r.status, 503);
    // The summary still renders, from this node's own tasks.
    let v = s.get("/api/v1/cluster").await.json();
    assert_eq!(v["tasks_scope"], "local");
    assert_eq!(v["nodes"]["total"], 5);
    s.stop().await;
}

#[tokio::test]
async fn snapshot_updates_are_served_at_once() {
    let s = start(Some(TOKEN)).await;
    let (mut snap, _) = cluster_snapshot();
    snap.nodes.retain(|n| n.id.as_str() != "node-e");
    s.snapshot_tx.send(std::sync::Arc::new(snap)).unwrap();
    let v = s.get("/api/v1/nodes").await.json();
    assert!(!ids(&v, "nodes", "id").contains("node-e"));
    assert_eq!(s.get("/api/v1/nodes/node-e").await.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn openapi_document_describes_every_route() {
    let s = start(None).await;
    let r = s.get("/api/v1/openapi.json").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("application/json"));
    let v = r.json();
    assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    let paths = v["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/v1/cluster", &["get"][..]),
        ("/api/v1/nodes", &["get"]),
        ("/api/v1/nodes/{id}", &["get"]),
        ("/api/v1/tasks", &["get", "post"]),
        ("/api/v1/tasks/{id}", &["get", "delete"]),
        ("/api/v1/tasks/{id}/logs", &["get"]),
        ("/api/v1/frameworks", &["get"]),
        ("/api/v1/openapi.json", &["get"]),
        ("/metrics", &["get"]),
        ("/", &["get"]),
    ] {
        let p = paths.get(path).unwrap_or_else(|| panic!("{path} missing"));
        for m in methods {
            assert!(p.get(*m).is_some(), "{m} {path} missing");
        }
    }
    // Every $ref points at a schema that exists.
    let schemas = v["components"]["schemas"].as_object().unwrap();
    let text = r.text();
    for part in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
    s.stop().await;
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_with_every_family() {
    let s = start(Some(TOKEN)).await;
    s.metrics.bids_sent.inc_by(7);
    s.metrics.bids_won.inc_by(5);
    s.metrics.bids_rejected.inc_by(2);
    s.metrics.observe_auction_latency(Duration::from_millis(3));
    s.metrics.set_gossip_totals(4096, 2048, 3);
    let peers = agora_node::http::PeerTotals {
        sent: 40,
        received: 30,
        unroutable: 2,
        failed: 5,
        other_version: 1,
    };
    s.metrics.set_peer_totals(&peers);
    // Totals only grow: a smaller one (a restarted layer) is ignored.
    s.metrics
        .set_peer_totals(&agora_node::http::PeerTotals { sent: 10, ..peers });
    let r = s.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").contains("openmetrics-text"));
    let lines = r
        .text()
        .lines()
        .map(|l| Ok(l.to_string()))
        .collect::<Vec<_>>();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| metric(&scrape, name, labels);
    assert_eq!(value("agora_nodes", &[("state", "alive")]), 4.0);
    assert_eq!(value("agora_nodes", &[("state", "dead")]), 1.0);
    assert_eq!(
        value(
            "agora_resources_total",
            &[("scope", "cluster"), ("dimension", "cpu")]
        ),
        40000.0
    );
    assert_eq!(
        value(
            "agora_resources_total",
            &[("scope", "node"), ("dimension", "mem")]
        ),
        16384.0
    );
    let free = value(
        "agora_resources_free",
        &[("scope", "node"), ("dimension", "cpu")],
    );
    assert_eq!(free, 8000.0 - 2000.0 - 1000.0);
    // Tasks this node knows (node-a's snapshot), by state.
    assert_eq!(value("agora_tasks", &[("state", "running")]), 6.0);
    assert_eq!(value("agora_tasks", &[("state", "lost")]), 0.0);
    assert_eq!(value("agora_bids_sent_total", &[]), 7.0);
    assert_eq!(value("agora_bids_won_total", &[]), 5.0);
    assert_eq!(value("agora_bids_rejected_total", &[]), 2.0);
    assert_eq!(value("agora_auction_latency_seconds", &[]), 1.0);
    assert_eq!(value("agora_gossip_received_bytes_total", &[]), 4096.0);
    assert_eq!(value("agora_gossip_sent_bytes_total", &[]), 2048.0);
    assert_eq!(value("agora_gossip_rejected_datagrams_total", &[]), 3.0);
    assert_eq!(value("agora_frameworks_connected", &[]), 1.0);
    for (outcome, v) in [
        ("sent", 40.0),
        ("received", 30.0),
        ("unroutable", 2.0),
        ("failed", 5.0),
    ] {
        assert_eq!(
            value("agora_peer_messages_total", &[("outcome", outcome)]),
            v
        );
    }
    assert_eq!(value("agora_peers_other_version", &[]), 1.0);
    s.stop().await;
}

#[tokio::test]
async fn dashboard_is_served_with_its_assets_and_nothing_external() {
    let s = start(None).await;
    let r = s.get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/html"));
    assert!(
        r.header("content-security-policy")
            .contains("default-src 'none'")
    );
    let html = r.text();
    assert!(html.contains("/assets/app.js") && html.contains("/assets/app.css"));
    let js = s.get("/assets/app.js").await;
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").starts_with("text/javascript"));
    // The script reads the API it is served with.
    for route in [
        "/api/v1/cluster",
        "/api/v1/nodes",
        "/api/v1/tasks",
        "/api/v1/frameworks",
    ] {
        assert!(js.text().contains(route), "app.js does not poll {route}");
    }
    let css = s.get("/assets/app.css").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").starts_with("text/css"));
    let icon = s.get("/assets/favicon.svg").await;
    assert_eq!(icon.status, 200);
    for (name, text) in [
        ("index.html", &html),
        ("app.js", &js.text()),
        ("app.css", &css.text()),
    ] {
        for bad in ["http://", "https://", "@import", "//cdn", "fonts.g"] {
            assert!(
                !text.contains(bad),
                "{name} refers to something external: {bad}"
            );
        }
    }
    assert_eq!(s.get("/assets/nope.js").await.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn a_foreign_host_header_is_refused_everywhere_and_allowed_names_pass() {
    let (snap, tasks) = cluster_snapshot();
    let cfg = HttpConfig {
        allowed_hosts: vec!["node1.example.com".into()],
        ..config(Some(TOKEN))
    };
    let s = TestServer::start(cfg, snap, Agent::Fake(FakeAgent::new(tasks))).await;
    // A page on evil.example whose name now points at this node (DNS
    // rebinding) sends its own name as Host: nothing is served to it.
    for path in ["/", "/api/v1/cluster", "/metrics", "/api/v1/tasks"] {
        let r = s
            .send("GET", path, &[("host", "evil.example:7480")], None)
            .await;
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert!(r.error().contains("--http-allow-host"), "{}", r.text());
    }
    let auth = format!("Bearer {TOKEN}");
    for host in ["node1.example.com:7480", "localhost:7480", "127.0.0.1:7480"] {
        let r = s
            .send(
                "GET",
                "/api/v1/cluster",
                &[("host", host), ("authorization", &auth)],
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{host}: {}", r.text());
    }
    s.stop().await;
}

#[tokio::test]
async fn reads_need_the_token_unless_public_and_static_files_never_do() {
    // Issue 12: every read was open to anyone who could connect, tasks on
    // the node included.
    let s = start(Some(TOKEN)).await;
    let reads = [
        "/api/v1/cluster",
        "/api/v1/nodes",
        "/api/v1/nodes/node-c",
        "/api/v1/tasks",
        "/api/v1/tasks/web.4",
        "/api/v1/tasks/batch.1/logs",
        "/api/v1/frameworks",
        "/metrics",
        "/api/v1/no/such/route",
    ];
    for path in reads {
        let r = s.get_anonymous(path).await;
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        assert!(r.header("www-authenticate").starts_with("Bearer"), "{path}");
        let e = r.error();
        assert!(
            e.contains("Authorization: Bearer TOKEN") && e.contains("--http-public-read"),
            "{path}: {e}"
        );
        let r = s
            .send("GET", path, &[("authorization", "Bearer wrong")], None)
            .await;
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        assert!(r.error().contains("wrong bearer token"), "{path}");
    }
    for path in &reads[..8] {
        assert_eq!(s.get(path).await.status, 200, "{path} with the token");
    }
    // The dashboard's files and the API's description hold nothing of the
    // cluster: the page must load to ask for the token.
    for path in [
        "/",
        "/assets/app.js",
        "/assets/app.css",
        "/api/v1/openapi.json",
    ] {
        assert_eq!(s.get_anonymous(path).await.status, 200, "{path}");
    }
    s.stop().await;

    // No token file: reads are refused, with what to do.
    let s = start(None).await;
    let r = s.get_anonymous("/api/v1/tasks").await;
    assert_eq!(r.status, 403, "{}", r.text());
    let e = r.error();
    assert!(
        e.contains("--http-token-file") && e.contains("--http-public-read"),
        "{e}"
    );
    assert_eq!(s.get_anonymous("/").await.status, 200);
    s.stop().await;

    // --http-public-read: reads for anyone, changes still need the token.
    let (snap, tasks) = cluster_snapshot();
    let cfg = HttpConfig {
        public_read: true,
        ..config(Some(TOKEN))
    };
    let s = TestServer::start(cfg, snap, Agent::Fake(FakeAgent::new(tasks))).await;
    for path in &reads[..8] {
        assert_eq!(s.get_anonymous(path).await.status, 200, "{path}");
    }
    let r = s.send("DELETE", "/api/v1/tasks/web.1", &[], None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    s.stop().await;
}
