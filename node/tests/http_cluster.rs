//! The HTTP API of real agents: a 3-node loopback cluster of `agora agent`
//! processes, each with `--http` (n1 and n2 with `--http-token-file`, n3
//! with `--http-public-read` and no token), queried with a small HTTP/1.1
//! client. Covers the read routes on every node (including answers that
//! need other nodes: remote tasks and logs), reads refused without the
//! token unless public, submit and kill with and without the token, 404s,
//! the OpenAPI document and `/metrics` parsed as Prometheus text.

mod common;
mod prom;

use common::http::{Resp, request};
use common::{Cluster, wait_for};
use prom::metric;
use serde_json::Value;
use std::time::Duration;

const TOKEN: &str = "test-token-0123456789";

/// A free TCP port on loopback (probed; the agent binds it right after).
fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn auth() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

/// GET with the token (n3, whose reads are public, ignores it).
fn get(addr: &str, path: &str) -> Resp {
    let (k, v) = auth();
    request(addr, "GET", path, &[(k, v.as_str())], None)
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

fn post_task(addr: &str, body: &str, token: bool) -> Resp {
    let (k, v) = auth();
    let headers: Vec<(&str, &str)> = if token { vec![(k, v.as_str())] } else { vec![] };
    request(addr, "POST", "/api/v1/tasks", &headers, Some(body)).unwrap()
}

fn task(addr: &str, id: &str) -> Option<Value> {
    let (k, v) = auth();
    let r = request(
        addr,
        "GET",
        &format!("/api/v1/tasks/{id}"),
        &[(k, v.as_str())],
        None,
    )
    .ok()?;
    (r.status == 200).then(|| r.json())
}

fn wait_state(addr: &str, id: &str, state: &str) -> Value {
    wait_for(
        &format!("task {id} to be {state} (asked at {addr})"),
        Duration::from_secs(60),
        || task(addr, id).filter(|t| t["state"] == state),
    )
}

fn ids(list: &Value) -> Vec<String> {
    list["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks array in {list}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn http_api_serves_a_three_node_cluster() {
    let mut c = Cluster::new();
    let key = c.key.clone();
    let token_file = c.root.path().join("http-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let ports = [free_tcp_port(), free_tcp_port(), free_tcp_port()];
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    c.add(
        "n1",
        &key,
        &[
            "--http",
            &addrs[0],
            "--http-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    // A bare port: the listener defaults to localhost.
    c.add(
        "n2",
        &key,
        &[
            "--http",
            &ports[1].to_string(),
            "--http-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    c.add("n3", &key, &["--http", &addrs[2], "--http-public-read"]);
    c.wait_formed(3);
    let (a1, a2, a3) = (addrs[0].as_str(), addrs[1].as_str(), addrs[2].as_str());

    // Every node serves the whole cluster, all three alive.
    for a in [a1, a2, a3] {
        wait_for(
            &format!("{a} to list 3 live nodes"),
            Duration::from_secs(30),
            || {
                let (k, v) = auth();
                let r = request(a, "GET", "/api/v1/nodes", &[(k, v.as_str())], None).ok()?;
                let v = (r.status == 200).then(|| r.json())?;
                let alive = v["nodes"]
                    .as_array()?
                    .iter()
                    .filter(|n| n["alive"] == true)
                    .count();
                (alive == 3).then_some(())
            },
        );
    }
    // Reads need the token, except on n3 (--http-public-read); the
    // dashboard's page never does.
    for (a, status) in [(a1, 401), (a2, 401), (a3, 200)] {
        let r = request(a, "GET", "/api/v1/tasks", &[], None).unwrap();
        assert_eq!(r.status, status, "{a}: {}", r.text());
        let r = request(a, "GET", "/", &[], None).unwrap();
        assert_eq!(r.status, 200, "{a}: {}", r.text());
    }
    let cluster = get(a1, "/api/v1/cluster").json();
    assert_eq!(cluster["node_id"], "n1", "{cluster}");
    assert_eq!(cluster["nodes"]["alive"], 3, "{cluster}");
    assert_eq!(
        cluster["resources"]["total"]["cpu_millis"], 6000,
        "{cluster}"
    );
    let n2 = get(a3, "/api/v1/nodes/n2");
    assert_eq!(n2.status, 200, "{}", n2.text());
    let n2 = n2.json();
    assert_eq!(
        (n2["id"].as_str(), n2["alive"].as_bool()),
        (Some("n2"), Some(true))
    );
    let missing = get(a1, "/api/v1/nodes/nope");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());

    // Mutations: no token → 401; a node without a token file → 403.
    let spec = r#"{"count": 3, "cpus": 0.5, "mem": 16, "command": ["sh", "-c", "echo hello from $AGORA_NODE_ID"]}"#;
    let r = post_task(a1, spec, false);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.json()["error"].is_string());
    let r = post_task(a3, spec, true);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"].is_string());

    // Submit with the token: three tasks that finish.
    let r = post_task(a1, spec, true);
    assert_eq!(r.status, 202, "{}", r.text());
    let submitted: Vec<String> = r.json()["task_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(submitted.len(), 3);
    let mut done = Vec::new();
    for id in &submitted {
        let t = wait_state(a1, id, "finished");
        assert_eq!(t["exit_code"], 0, "{t}");
        done.push(t);
    }
    // Another node finds a task homed on n1 and reads its log from the node
    // that ran it.
    let t0 = &done[0];
    let ran_on = t0["node"].as_str().unwrap().to_string();
    assert_eq!(wait_state(a3, &submitted[0], "finished")["node"], ran_on);
    for a in [a1, a2] {
        let log = get(
            a,
            &format!("/api/v1/tasks/{}/logs?format=text", submitted[0]),
        );
        assert_eq!(log.status, 200, "{}", log.text());
        assert_eq!(log.text(), format!("hello from {ran_on}\n"));
    }
    let log = get(a3, &format!("/api/v1/tasks/{}/logs", submitted[1])).json();
    assert!(
        log["data"].as_str().unwrap().starts_with("hello from n"),
        "{log}"
    );

    // Frameworks: the internal "http" one, homed on n1.
    let fws = get(a1, "/api/v1/frameworks").json();
    let http_fw = fws["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "http")
        .unwrap_or_else(|| panic!("no http framework in {fws}"))
        .clone();
    assert_eq!(http_fw["home_node"], "n1", "{http_fw}");
    let fw_id = http_fw["id"].as_str().unwrap().to_string();

    // The cluster-wide list with filters, from nodes that home none of them.
    // A node reuses its list for up to a second (shared by concurrent
    // requests), so an earlier empty answer may still be served: poll.
    for a in [a2, a3] {
        wait_for(
            &format!("{a} to list the submitted tasks"),
            Duration::from_secs(15),
            || {
                let all = get(a, "/api/v1/tasks").json();
                submitted
                    .iter()
                    .all(|id| ids(&all).contains(id))
                    .then_some(())
            },
        );
    }
    let finished = get(
        a2,
        &format!("/api/v1/tasks?state=finished&framework={fw_id}"),
    )
    .json();
    let mut got = ids(&finished);
    got.sort();
    let mut want = submitted.clone();
    want.sort();
    assert_eq!(got, want);
    let running = get(
        a2,
        &format!("/api/v1/tasks?state=running&framework={fw_id}"),
    )
    .json();
    assert!(ids(&running).is_empty(), "{running}");
    let on_node = get(a3, &format!("/api/v1/tasks?node={ran_on}")).json();
    assert!(ids(&on_node).contains(&submitted[0]), "{on_node}");
    assert!(
        on_node["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["node"] == ran_on.as_str())
    );

    // Kill a running task over HTTP.
    let r = post_task(
        a1,
        r#"{"cpus": 0.1, "command": ["sleep", "60"], "kill_grace_ms": 500}"#,
        true,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let sleeper = r.json()["task_ids"][0].as_str().unwrap().to_string();
    wait_state(a1, &sleeper, "running");
    let r = request(a1, "DELETE", &format!("/api/v1/tasks/{sleeper}"), &[], None).unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    let (k, v) = auth();
    let r = request(
        a1,
        "DELETE",
        &format!("/api/v1/tasks/{sleeper}"),
        &[(k, v.as_str())],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    wait_state(a1, &sleeper, "killed");
    wait_state(a2, &sleeper, "killed");

    // Unknown tasks: 404 with a JSON error.
    let unknown = format!("{fw_id}.999");
    for a in [a1, a3] {
        let r = get(a, &format!("/api/v1/tasks/{unknown}"));
        assert_eq!(r.status, 404, "{}", r.text());
        assert!(r.json()["error"].is_string());
    }
    let r = request(
        a1,
        "DELETE",
        &format!("/api/v1/tasks/{unknown}"),
        &[(k, v.as_str())],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    let r = get(a1, &format!("/api/v1/tasks/{unknown}/logs"));
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.json()["error"].is_string());

    // The OpenAPI document and the dashboard.
    let openapi = get(a2, "/api/v1/openapi.json").json();
    assert!(openapi["openapi"].as_str().unwrap().starts_with('3'));
    assert!(openapi["paths"]["/api/v1/tasks"].is_object());
    let page = get(a3, "/");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("text/html"));

    // Metrics on the node whose bidder placed the tasks.
    let scrape = wait_for(
        "n1's metrics to show 3 live nodes and its peer messages",
        Duration::from_secs(15),
        || {
            let r = get(a1, "/metrics");
            assert_eq!(r.status, 200);
            let lines = r
                .text()
                .lines()
                .map(|l| Ok(l.to_string()))
                .collect::<Vec<_>>();
            let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).unwrap();
            // Each of the 4 tasks bid on at least one other node (2
            // candidates of 3), and each such bid was answered over libp2p.
            let peer = |outcome| {
                metric(
                    &scrape,
                    "agora_peer_messages_total",
                    &[("outcome", outcome)],
                )
            };
            (metric(&scrape, "agora_nodes", &[("state", "alive")]) == 3.0
                && peer("sent") >= 4.0
                && peer("received") >= 4.0)
                .then_some(scrape)
        },
    );
    assert_eq!(metric(&scrape, "agora_nodes", &[("state", "dead")]), 0.0);
    let sent = metric(&scrape, "agora_bids_sent_total", &[]);
    let won = metric(&scrape, "agora_bids_won_total", &[]);
    assert!(sent >= 4.0, "bids sent {sent}");
    assert!(won >= 4.0, "bids won {won}");
    assert!(metric(&scrape, "agora_gossip_sent_bytes_total", &[]) > 0.0);
    assert_eq!(metric(&scrape, "agora_peers_other_version", &[]), 0.0);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric.starts_with("agora_auction_latency_seconds")),
        "no auction latency histogram"
    );
}

#[test]
fn a_busy_http_port_stops_the_agent_with_a_clear_error() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let mut c = Cluster::new();
    let key = c.key.clone();
    let i = c.add("lonely", &key, &["--http", &addr]);
    let node = &c.nodes[i];
    let log = wait_for(
        "the agent to refuse the busy HTTP port",
        Duration::from_secs(30),
        || {
            let log = node.log();
            log.contains("cannot listen for HTTP").then_some(log)
        },
    );
    assert!(log.contains(&addr), "{log}");
}
