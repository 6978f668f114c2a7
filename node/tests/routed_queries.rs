//! Listings and kills that name a task or a framework go to its home node
//! only (issue 11: every `ps`, kill and log read was broadcast to every live
//! node). Three real agents with `--http`; the third node lists and kills a
//! task of a framework homed on the first, and the second node's count of
//! peer messages received shows whether it was asked.

mod common;
mod prom;

use common::http::request;
use common::{Cluster, Resume, wait_for};
use prom::metric;
use std::time::Duration;

/// The agents' `--http-token-file` content (reads need it).
const TOKEN: &str = "routed-queries-token";

fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Peer messages `addr`'s node has received, once its metrics settled (its
/// snapshot is republished at least every 2 s).
fn received(addr: &str) -> f64 {
    std::thread::sleep(Duration::from_millis(2500));
    let auth = format!("Bearer {TOKEN}");
    let text = request(addr, "GET", "/metrics", &[("Authorization", &auth)], None)
        .unwrap_or_else(|e| panic!("GET http://{addr}/metrics: {e}"))
        .text();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    metric(
        &scrape,
        "agora_peer_messages_total",
        &[("outcome", "received")],
    )
}

#[test]
fn a_listing_or_kill_naming_a_framework_asks_only_its_home() {
    let mut c = Cluster::new();
    let key = c.key.clone();
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_tcp_port()))
        .collect();
    let token_file = c.root.path().join("http-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let token_file = token_file.display().to_string();
    for (i, a) in addrs.iter().enumerate() {
        c.add(
            &format!("n{}", i + 1),
            &key,
            &["--http", a, "--http-token-file", &token_file],
        );
    }
    c.wait_formed(3);
    let (home, bystander, asker) = (&c.nodes[0], &addrs[1], &c.nodes[2]);
    let out = home.cli(&["run", "--cpus", "0.1", "--", "true"]);
    assert!(
        out.status.success(),
        "run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let framework = id.rsplit_once('.').map(|(f, _)| f.to_string()).unwrap();
    wait_for(
        "the task to be finished at home",
        Duration::from_secs(30),
        || {
            home.ps()?
                .iter()
                .any(|r| r["id"] == id.as_str() && r["state"] == "finished")
                .then_some(())
        },
    );

    let before = received(bystander);
    let out = asker.cli(&["ps", "--json", "--framework", &framework]);
    assert!(
        out.status.success(),
        "ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["state"], "finished");
    let out = asker.cli(&["kill", &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has already ended (finished)"), "{err}");
    let after = received(bystander);
    assert_eq!(
        after, before,
        "the bystander was asked about a framework homed elsewhere"
    );

    // A listing with no home to go to asks everyone (so the count above
    // could have moved).
    let out = asker.cli(&["ps"]);
    assert!(
        out.status.success(),
        "ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        received(bystander) > after,
        "an unfiltered ps asks every node"
    );
}

#[test]
fn a_kill_whose_home_does_not_answer_says_which_node_did_not() {
    // Issue 11: "no live node knows task … home node is down" came for
    // tasks that had simply finished while their home was up but slow to
    // answer; the answer now names the node that did not answer.
    let cluster = Cluster::start(3);
    let (home, asker) = (&cluster.nodes[0], &cluster.nodes[1]);
    let out = home.cli(&["run", "--cpus", "0.1", "--", "true"]);
    assert!(
        out.status.success(),
        "run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_for("the task to finish", Duration::from_secs(30), || {
        home.ps()?
            .iter()
            .any(|r| r["id"] == id.as_str() && r["state"] == "finished")
            .then_some(())
    });
    let pid = home.pid();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let resume = Resume(pid);
    let out = asker.cli(&["kill", &id]);
    drop(resume);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not answer or are down") && err.contains(": n1"),
        "{err}"
    );
    // Once it answers again, the kill is told the truth.
    wait_for("the home to answer again", Duration::from_secs(30), || {
        let out = asker.cli(&["kill", &id]);
        String::from_utf8_lossy(&out.stderr)
            .contains("has already ended (finished)")
            .then_some(())
    });
}
