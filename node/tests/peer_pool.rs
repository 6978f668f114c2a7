//! The node-to-node connection pool (issue 13) on real agents: connections
//! are opened on demand and kept within `--peer-connections` (the least
//! recently used closed first, messages in flight on it retried), and a
//! connection that carries nothing for `--peer-idle-timeout` is closed.
//! The pool's figures are read from /metrics. (A burst of messages past
//! yamux's stream limit is tested on real swarms in node/src/p2p/mod.rs.)

mod common;
mod prom;

use common::http::request;
use common::{Cluster, free_tcp_addr, wait_for};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Adds node `id` with the HTTP API on (reads public) and `extra` flags;
/// returns its HTTP address.
fn add(c: &mut Cluster, id: &str, extra: &[&str]) -> String {
    let key = c.key.clone();
    let http = free_tcp_addr();
    let mut args = vec!["--http", http.as_str(), "--http-public-read"];
    args.extend_from_slice(extra);
    c.add(id, &key, &args);
    http
}

/// The value of sample `name` with `labels` on the node's /metrics, or
/// None while the node does not answer.
fn metric(http: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let r = request(http, "GET", "/metrics", &[], None).ok()?;
    if r.status != 200 {
        return None;
    }
    let lines = r
        .text()
        .lines()
        .map(|l| Ok(l.to_string()))
        .collect::<Vec<_>>();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).ok()?;
    Some(prom::metric(&scrape, name, labels))
}

#[test]
fn with_a_cap_of_two_connections_five_nodes_all_run_tasks_and_the_cap_holds() {
    let mut c = Cluster::new();
    let https: Vec<String> = (1..=5)
        .map(|i| add(&mut c, &format!("n{i}"), &["--peer-connections", "2"]))
        .collect();
    c.wait_formed(5);

    // Watch every node's gauge while the tasks run.
    let stop = Arc::new(AtomicBool::new(false));
    let highest: Arc<Mutex<BTreeMap<usize, f64>>> = Arc::default();
    let watcher = {
        let (stop, highest, https) = (stop.clone(), highest.clone(), https.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (i, http) in https.iter().enumerate() {
                    if let Some(v) = metric(http, "agora_peer_connections", &[]) {
                        let mut h = highest.lock().unwrap();
                        let e = h.entry(i).or_insert(0.0);
                        *e = e.max(v);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // 40 tasks of a whole CPU on 5 nodes of 2: every node must take some,
    // so n1 talks to all four others, two at a time at most.
    let out = c.nodes[0].cli(&[
        "run",
        "--count",
        "40",
        "--cpus",
        "1",
        "--wait",
        "--",
        "sh",
        "-c",
        "sleep 0.3",
    ]);
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = c.nodes[0].ps().expect("ps answers");
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows.iter().filter(|r| r["name"] == "sh") {
        assert_eq!(r["state"], "finished", "{r}");
        *per_node
            .entry(r["node"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_node.len(), 5, "every node runs some: {per_node:?}");
    assert_eq!(per_node.values().sum::<usize>(), 40, "{per_node:?}");

    let highest = highest.lock().unwrap().clone();
    assert_eq!(highest.len(), 5, "every node's gauge was read: {highest:?}");
    for (i, v) in &highest {
        assert!(
            *v <= 2.0,
            "n{} had {v} peer connections open: {highest:?}",
            i + 1
        );
    }
    // n1 reached four nodes through two connections: it closed some.
    let lru = metric(
        &https[0],
        "agora_peer_connections_closed_total",
        &[("reason", "lru")],
    )
    .expect("n1 answers /metrics");
    assert!(lru >= 1.0, "n1 closed no connection for the cap");
}

#[test]
fn a_connection_idle_past_the_timeout_is_closed() {
    let mut c = Cluster::new();
    let h1 = add(&mut c, "n1", &["--peer-idle-timeout", "1"]);
    let h2 = add(
        &mut c,
        "n2",
        &["--peer-idle-timeout", "1", "--attr", "role=b"],
    );
    c.wait_formed(2);
    // Gossip alone opens no peer connection.
    for h in [&h1, &h2] {
        assert_eq!(metric(h, "agora_peer_connections", &[]), Some(0.0));
    }
    let out = c.nodes[0].cli(&["run", "--constraint", "role==b", "--wait", "--", "true"]);
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The task's bid, award and statuses went over one connection, which
    // then carries nothing: it is closed (by whichever end's timer fires
    // first; the other sees it end), and counted as idle.
    wait_for(
        "the idle connection to close",
        Duration::from_secs(30),
        || {
            let mut idle = 0.0;
            for h in [&h1, &h2] {
                if metric(h, "agora_peer_connections", &[])? != 0.0 {
                    return None;
                }
                idle += metric(
                    h,
                    "agora_peer_connections_closed_total",
                    &[("reason", "idle")],
                )?;
            }
            (idle >= 1.0).then_some(())
        },
    );
}
