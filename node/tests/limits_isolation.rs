//! A node started with another cluster key (or cluster id) than its seed
//! used to log nothing about being cut off (issue 12). Now it warns that it
//! is alone and what to check, its seed warns that it receives gossip it
//! cannot open, both show `agora_gossip_isolated 1`, and a node with the
//! right key joins and clears the seed's isolation.

mod common;
mod limits_support;
mod prom;

use common::{Cluster, free_tcp_addr, keygen, wait_for};
use limits_support::metric;
use std::time::Duration;

#[test]
fn nodes_with_another_key_or_cluster_id_say_they_are_alone_and_what_to_check() {
    let mut c = Cluster::new();
    let key = c.key.clone();
    let http: Vec<String> = (0..4).map(|_| free_tcp_addr()).collect();
    c.add("a", &key, &["--http", &http[0], "--http-public-read"]);
    c.wait_formed(1);
    let other_key = c.root.path().join("other.key");
    keygen(&other_key);
    // Both seeded with a (Cluster::add seeds every node with the first).
    c.add("b", &other_key, &["--http", &http[1], "--http-public-read"]);
    c.add(
        "c",
        &key,
        &[
            "--http",
            &http[2],
            "--http-public-read",
            "--cluster-id",
            "another",
        ],
    );

    for (i, who) in [(1, "b (another key)"), (2, "c (another cluster id)")] {
        let node = &c.nodes[i];
        wait_for(
            &format!("{who} to log that it is alone"),
            Duration::from_secs(60),
            || node.log().contains("this node is alone").then_some(()),
        );
        let log = node.log();
        assert!(
            log.contains("--cluster-key-file") && log.contains("--cluster-id"),
            "{log}"
        );
        assert_eq!(metric(&http[i], "agora_gossip_isolated", &[]), 1.0, "{who}");
        assert_eq!(
            node.alive(),
            std::slice::from_ref(&node.id),
            "{who} sees only itself"
        );
    }

    // The seed hears gossip it cannot open, and says so.
    let a = &c.nodes[0];
    wait_for(
        "a to warn about gossip it cannot open",
        Duration::from_secs(60),
        || {
            a.log()
                .contains("fail to open with the cluster key and cluster id")
                .then_some(())
        },
    );
    assert!(metric(&http[0], "agora_gossip_rejected_datagrams_total", &[]) > 0.0);
    // It has no seeds, but foreign gossip and no peer: alone too.
    wait_for(
        "a to count itself isolated",
        Duration::from_secs(60),
        || (metric(&http[0], "agora_gossip_isolated", &[]) == 1.0).then_some(()),
    );

    // A node with the right key and id joins; a is no longer alone, and
    // the newcomer never was.
    c.add("d", &key, &["--http", &http[3], "--http-public-read"]);
    let (a, d) = (&c.nodes[0], &c.nodes[3]);
    wait_for("a and d to see each other", Duration::from_secs(60), || {
        (a.alive().len() == 2 && d.alive().len() == 2).then_some(())
    });
    wait_for(
        "a to say it is no longer alone",
        Duration::from_secs(30),
        || a.log().contains("no longer alone").then_some(()),
    );
    assert_eq!(metric(&http[0], "agora_gossip_isolated", &[]), 0.0);
    assert_eq!(metric(&http[3], "agora_gossip_isolated", &[]), 0.0);
    assert!(!d.log().contains("this node is alone"), "{}", d.log());
}
