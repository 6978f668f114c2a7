//! Cluster tests of gossip: real chitchat instances behind real sealing
//! relays on 127.0.0.1 UDP sockets (port 0), polled with deadlines.

use super::relay::{Counters, SealedSocket, SealedTransport};
use super::seal::Sealer;
use super::state::tests::sample_state;
use super::*;
use std::time::Instant;
use tokio::sync::watch::Receiver;

const FAST: Duration = Duration::from_millis(200);
const DEADLINE: Duration = Duration::from_secs(20);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn state_for(name: &str) -> LocalState {
    let mut s = sample_state();
    s.p2p_addr = format!("/ip4/127.0.0.1/tcp/{}", 7000 + name.len());
    s.peer_id = format!("peer-{name}");
    s.attrs.insert("hostname", name);
    s
}

fn config(name: &str, key: &ClusterKey, seeds: &[SocketAddr], interval: Duration) -> GossipConfig {
    let mut c = GossipConfig::new(NodeId::new(name).unwrap(), loopback(), key.clone());
    c.seeds = seeds.iter().map(|a| a.to_string()).collect();
    c.interval = interval;
    c.cluster_id = "test".to_string();
    c
}

async fn start(
    name: &str,
    key: &ClusterKey,
    seeds: &[SocketAddr],
    interval: Duration,
) -> (Gossip, Receiver<Arc<Snapshot>>) {
    Gossip::start(config(name, key, seeds, interval), state_for(name))
        .await
        .unwrap()
}

/// Waits until `pred` holds for the latest snapshot, or panics at the deadline.
async fn wait_for(
    rx: &mut Receiver<Arc<Snapshot>>,
    within: Duration,
    what: &str,
    pred: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let snap = rx.borrow_and_update().clone();
        if pred(&snap) {
            return snap;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("snapshot channel closed while waiting for {what}"),
            Err(_) => {
                panic!("timed out after {within:?} waiting for {what}; last snapshot: {snap:#?}")
            }
        }
    }
}

fn id(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn sees_alive_with_state(snap: &Snapshot, name: &str, state: &LocalState) -> bool {
    snap.get(&id(name))
        .is_some_and(|m| m.alive && m.state.as_ref() == Some(state))
}

fn sees_dead(snap: &Snapshot, name: &str) -> bool {
    snap.get(&id(name)).is_some_and(|m| !m.alive)
}

#[tokio::test]
async fn three_nodes_converge_and_publishes_propagate() {
    let key = ClusterKey::generate();
    let (a, mut a_rx) = start("a", &key, &[], FAST).await;
    let seed = a.advertise_addr();
    let (b, mut b_rx) = start("b", &key, &[seed], FAST).await;
    let (c, mut c_rx) = start("c", &key, &[seed], FAST).await;

    let names = ["a", "b", "c"];
    for (who, rx) in [("a", &mut a_rx), ("b", &mut b_rx), ("c", &mut c_rx)] {
        let snap = wait_for(rx, DEADLINE, &format!("{who} to see all three"), |s| {
            s.members.len() == 3
                && names
                    .iter()
                    .all(|n| sees_alive_with_state(s, n, &state_for(n)))
        })
        .await;
        let info = snap.get(&id("b")).unwrap().to_node_info().unwrap();
        assert_eq!(info.free, state_for("b").free);
        assert_eq!(info.addr, b.advertise_addr().to_string());
        assert!(info.alive);
        let addrs: Vec<SocketAddr> = snap.members.iter().map(|m| m.gossip_addr).collect();
        assert_eq!(
            addrs,
            vec![a.advertise_addr(), b.advertise_addr(), c.advertise_addr()]
        );
    }

    let mut changed = state_for("a");
    changed.version += 1;
    changed.free.cpu_millis -= 500;
    changed.allocations.clear();
    a.publish(changed.clone());
    for (who, rx) in [("b", &mut b_rx), ("c", &mut c_rx)] {
        wait_for(rx, DEADLINE, &format!("{who} to see a's new state"), |s| {
            sees_alive_with_state(s, "a", &changed)
        })
        .await;
    }
    wait_for(&mut a_rx, DEADLINE, "a to see its own new state", |s| {
        sees_alive_with_state(s, "a", &changed)
    })
    .await;

    for g in [&a, &b, &c] {
        let stats = g.stats();
        assert!(stats.bytes_in > 0 && stats.bytes_out > 0, "{stats:?}");
        assert!(
            stats.datagrams_in > 0 && stats.datagrams_out > 0,
            "{stats:?}"
        );
        assert_eq!(stats.datagrams_rejected, 0, "{stats:?}");
        assert_eq!(stats.datagrams_malformed, 0, "{stats:?}");
    }
    eprintln!(
        "published state of one node: {} bytes of keys and values (sample node: {})",
        changed.published_len(),
        state_for("a").published_len()
    );
    a.leave().await;
    b.leave().await;
    c.leave().await;
}

#[tokio::test]
async fn a_node_with_another_key_never_becomes_a_member() {
    let key = ClusterKey::generate();
    let (a, mut a_rx) = start("a", &key, &[], FAST).await;
    let (b, mut b_rx) = start("b", &key, &[a.advertise_addr()], FAST).await;
    let seeds = [a.advertise_addr(), b.advertise_addr()];
    let (x, mut x_rx) = start("x", &ClusterKey::generate(), &seeds, FAST).await;

    let never_x = |s: &Snapshot| s.get(&id("x")).is_none();
    let both = |s: &Snapshot| s.members.len() == 2 && s.alive().count() == 2;
    wait_for(&mut a_rx, DEADLINE, "a to see b", both).await;
    wait_for(&mut b_rx, DEADLINE, "b to see a", both).await;

    // Keep watching while x keeps gossiping at a and b.
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(never_x(&a_rx.borrow()), "a lists x: {:#?}", a_rx.borrow());
        assert!(never_x(&b_rx.borrow()), "b lists x: {:#?}", b_rx.borrow());
        let (ra, rb) = (a.stats().datagrams_rejected, b.stats().datagrams_rejected);
        if ra >= 3 && rb >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "x's datagrams were not rejected: a {ra}, b {rb}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And x sees only itself.
    let x_snap = x_rx.borrow_and_update().clone();
    assert_eq!(x_snap.members.len(), 1, "{x_snap:#?}");
    assert!(never_x(&a_rx.borrow()) && never_x(&b_rx.borrow()));
    drop(x);
    a.leave().await;
    b.leave().await;
}

#[tokio::test]
async fn abrupt_stop_is_detected_graceful_leave_is_seen_and_restart_rejoins() {
    // Default interval and failure detector: this measures what the node uses.
    let key = ClusterKey::generate();
    let interval = DEFAULT_INTERVAL;
    let (a, mut a_rx) = start("a", &key, &[], interval).await;
    let seed = a.advertise_addr();
    let (b, mut b_rx) = start("b", &key, &[seed], interval).await;
    let (c, _c_rx) = start("c", &key, &[seed], interval).await;
    let (d, _d_rx) = start("d", &key, &[seed], interval).await;
    let all = |s: &Snapshot| s.alive().count() == 4 && s.members.iter().all(|m| m.state.is_some());
    wait_for(&mut a_rx, DEADLINE, "a to see four", all).await;
    wait_for(&mut b_rx, DEADLINE, "b to see four", all).await;
    // No settling time: a member that just joined is the failure detector's
    // slowest case (few samples, the prior still weighs in).

    // c stops as if killed: no leave, its tasks and sockets just go away.
    let killed_at = Instant::now();
    drop(c);
    wait_for(&mut a_rx, Duration::from_secs(30), "a to see c dead", |s| {
        sees_dead(s, "c")
    })
    .await;
    let a_saw = killed_at.elapsed();
    wait_for(&mut b_rx, Duration::from_secs(30), "b to see c dead", |s| {
        sees_dead(s, "c")
    })
    .await;
    eprintln!(
        "abrupt stop detected after {:.1} s by a, {:.1} s by b (interval {interval:?})",
        a_saw.as_secs_f64(),
        killed_at.elapsed().as_secs_f64()
    );

    // d leaves gracefully: peers see it go at once, well before the
    // failure detector would.
    let left_at = Instant::now();
    let leaving = tokio::spawn(d.leave());
    wait_for(&mut a_rx, Duration::from_secs(30), "a to see d gone", |s| {
        sees_dead(s, "d")
    })
    .await;
    eprintln!(
        "graceful leave seen after {:.2} s",
        left_at.elapsed().as_secs_f64()
    );
    leaving.await.unwrap();

    // c comes back (a new generation, new state): one member "c", alive.
    let mut reborn = state_for("c");
    reborn.peer_id = "peer-c-2".to_string();
    let (c2, _c2_rx) = Gossip::start(config("c", &key, &[seed], interval), reborn.clone())
        .await
        .unwrap();
    let snap = wait_for(&mut a_rx, DEADLINE, "a to see c again", |s| {
        sees_alive_with_state(s, "c", &reborn)
    })
    .await;
    assert_eq!(snap.members.iter().filter(|m| m.id == id("c")).count(), 1);
    c2.leave().await;
    b.leave().await;
    a.leave().await;
}

#[tokio::test]
async fn nothing_leaves_the_machine_unsealed() {
    let key = ClusterKey::generate();
    let fake_peer = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
    let (a, _a_rx) = start(
        "plain-text-canary",
        &key,
        &[fake_peer.local_addr().unwrap()],
        FAST,
    )
    .await;
    let sealer = Sealer::new(&key, "test");
    let mut buf = vec![0u8; 65_536];
    let mut plain = Vec::new();
    for _ in 0..3 {
        let (len, from) = tokio::time::timeout(DEADLINE, fake_peer.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from, a.gossip_addr());
        let wire = &buf[..len];
        let canary = b"plain-text-canary";
        assert!(!wire.windows(canary.len()).any(|w| w == canary));
        sealer.open(wire, &mut plain).unwrap();
        // The plaintext is chitchat's SYN naming this node.
        assert!(plain.windows(canary.len()).any(|w| w == canary));
    }
    a.leave().await;
}

#[tokio::test]
async fn malformed_peer_state_is_skipped_without_panic() {
    let key = ClusterKey::generate();
    let (a, mut a_rx) = start("a", &key, &[], FAST).await;

    // Two raw chitchat peers that hold the key but publish nonsense: one
    // with unreadable values, one whose node id is not a valid NodeId.
    let mut handles = Vec::new();
    for (node_id, kvs) in [
        (
            "weird",
            vec![
                ("v", "1"),
                ("a", "x"),
                ("p", "y"),
                ("t", "lots"),
                ("f", "1;2"),
                ("l", "{"),
                ("u", "="),
            ],
        ),
        ("bad id!", vec![("v", "1")]),
    ] {
        let counters = Arc::new(Counters::default());
        let socket = SealedSocket::bind(loopback(), Sealer::new(&key, "test"), counters)
            .await
            .unwrap();
        let addr = socket.public_addr();
        let cfg = ChitchatConfig {
            chitchat_id: ChitchatId::new(node_id, 1, addr),
            cluster_id: "test".to_string(),
            gossip_interval: FAST,
            listen_addr: addr,
            seed_nodes: vec![a.advertise_addr().to_string()],
            failure_detector_config: failure_detector_config(FAST),
            marked_for_deletion_grace_period: TOMBSTONE_RETENTION,
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        };
        let kvs = kvs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let transport = SealedTransport::new(socket);
        handles.push(spawn_chitchat(cfg, kvs, &transport).await.unwrap());
    }
    let snap = wait_for(&mut a_rx, DEADLINE, "a to see weird", |s| {
        s.get(&id("weird")).is_some_and(|m| m.alive)
    })
    .await;
    assert_eq!(snap.get(&id("weird")).unwrap().state, None);
    // The peer with an invalid id is in chitchat but never in a snapshot.
    let raw_members = {
        let chitchat = a.handle.as_ref().unwrap().chitchat();
        let guard = chitchat.lock().await;
        guard.node_states().len()
    };
    assert!(raw_members >= 2);
    assert!(snap.members.iter().all(|m| m.id.as_str() != "bad id!"));
    for h in handles {
        h.shutdown().await.unwrap();
    }
    a.leave().await;
}

#[tokio::test]
async fn start_explains_bad_configuration() {
    let key = ClusterKey::generate();
    let mut c = config("a", &key, &[], FAST);
    c.seeds = vec!["no-port".to_string()];
    let err = format!(
        "{:#}",
        Gossip::start(c, state_for("a")).await.err().unwrap()
    );
    assert!(
        err.contains("no-port") && err.contains("HOST:PORT"),
        "{err}"
    );

    let (a, _rx) = start("a", &key, &[], FAST).await;
    let mut c = config("b", &key, &[], FAST);
    c.listen = a.gossip_addr();
    let err = format!(
        "{:#}",
        Gossip::start(c, state_for("b")).await.err().unwrap()
    );
    assert!(err.contains(&a.gossip_addr().to_string()), "{err}");

    let mut c = config("b", &key, &[], FAST);
    c.listen = "0.0.0.0:0".parse().unwrap();
    c.advertise = c.listen;
    let err = format!(
        "{:#}",
        Gossip::start(c, state_for("b")).await.err().unwrap()
    );
    assert!(err.contains("advertise"), "{err}");
    a.leave().await;
}

#[test]
fn gossip_handles_can_be_shared_between_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Gossip>();
    shareable::<Snapshot>();
    shareable::<GossipConfig>();
}
