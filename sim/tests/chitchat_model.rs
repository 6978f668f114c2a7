//! The gossip model against real chitchat 0.13 over its in-process
//! `ChannelTransport`, on tokio's paused clock: at 16, 64 and 256 nodes the
//! rounds for a change to reach every node and the bytes per node per second
//! must agree within 20% (means over 60, 16 and 10 changes: chitchat picks
//! its peers at random, and 12 changes at 16 nodes swung 0.96–1.18). Nodes start at spread-out instants, as real ones
//! do, so their gossip ticks are not synchronized. Run with `--nocapture` to see the table that
//! docs/GOSSIP_MODEL.md reproduces.

use agora_sim::gossip::{self, flat_run};
use chitchat::transport::ChannelTransport;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, spawn_chitchat};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::{Instant, sleep};

const INTERVAL: Duration = Duration::from_secs(1);

fn value(len: usize, salt: u64) -> String {
    // Pseudo-random hex so that compression does not flatter chitchat.
    let mut x = salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap_or('0')
        })
        .collect()
}

async fn start(n: usize, transport: &ChannelTransport) -> Vec<ChitchatHandle> {
    let addr = |i: usize| -> SocketAddr { format!("127.0.0.1:{}", 10_000 + i).parse().unwrap() };
    let seeds: Vec<String> = (0..3.min(n)).map(|i| addr(i).to_string()).collect();
    let mut handles = Vec::new();
    for i in 0..n {
        let id = ChitchatId::new(format!("n{i:05}"), 0, addr(i));
        let config = ChitchatConfig {
            chitchat_id: id,
            cluster_id: "agora-cell-0".into(),
            gossip_interval: INTERVAL,
            listen_addr: addr(i),
            seed_nodes: seeds.clone(),
            failure_detector_config: FailureDetectorConfig::default(),
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        // The same five keys, at the same sizes, as gossip::Config::cell.
        let kvs = vec![
            ("p2p".to_string(), value(90, i as u64 * 5 + 1)),
            ("attrs".to_string(), value(60, i as u64 * 5 + 2)),
            ("total".to_string(), value(40, i as u64 * 5 + 3)),
            ("free".to_string(), value(48, i as u64 * 5 + 4)),
            ("alloc".to_string(), value(40, i as u64 * 5 + 5)),
        ];
        handles.push(spawn_chitchat(config, kvs, transport).await.unwrap());
        // Spread the nodes' gossip ticks over the interval, as real nodes
        // started at different times are (and as the model assumes).
        sleep(INTERVAL / n as u32).await;
    }
    handles
}

async fn all_know(handles: &[ChitchatHandle], n: usize) -> bool {
    for h in handles {
        let c = h.chitchat();
        let guard = c.lock().await;
        if guard.node_states().len() < n
            || guard.node_states().values().any(|s| s.num_key_values() < 5)
        {
            return false;
        }
    }
    true
}

async fn all_have(handles: &[ChitchatHandle], node: &ChitchatId, v: &str) -> bool {
    for h in handles {
        let c = h.chitchat();
        let guard = c.lock().await;
        if guard.node_state(node).and_then(|s| s.get("free")) != Some(v) {
            return false;
        }
    }
    true
}

/// (rounds to converge, bytes per node per second) for real chitchat.
async fn real(n: usize, changes: usize) -> (f64, f64) {
    let transport = ChannelTransport::default();
    let handles = start(n, &transport).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !all_know(&handles, n).await {
        assert!(
            Instant::now() < deadline,
            "chitchat never converged on membership"
        );
        sleep(INTERVAL).await;
    }
    // Let heartbeats and liveness settle, then measure steady-state bytes.
    sleep(INTERVAL * 5).await;
    let before = transport.statistics().num_bytes_total;
    sleep(INTERVAL * 10).await;
    let bytes = (transport.statistics().num_bytes_total - before) as f64 / n as f64 / 10.0;
    let mut rounds = 0.0;
    for c in 0..changes {
        let who = handles[(c * 7) % n].chitchat_id().clone();
        let v = value(48, 1000 + c as u64);
        let h = &handles[(c * 7) % n];
        h.with_chitchat(|cc| cc.self_node_state().set("free", v.clone()))
            .await;
        let t0 = Instant::now();
        while !all_have(&handles, &who, &v).await {
            assert!(
                Instant::now() < t0 + Duration::from_secs(120),
                "a change never spread"
            );
            sleep(INTERVAL / 20).await;
        }
        rounds += (Instant::now() - t0).as_secs_f64() / INTERVAL.as_secs_f64();
        // The next change lands at an arbitrary point between ticks.
        sleep(INTERVAL * 2 + INTERVAL * (c as u32 * 37 % 100) / 100).await;
    }
    for h in handles {
        let _ = h.shutdown().await;
    }
    (rounds / changes as f64, bytes)
}

fn model(n: usize, runs: u64) -> (f64, f64) {
    let (mut r, mut b) = (0.0, 0.0);
    for seed in 0..runs {
        let f = flat_run(n, 6, 1_000_000, seed + 1);
        r += f.rounds_to_converge;
        b += f.bytes_per_node_per_s;
    }
    (r / runs as f64, b / runs as f64)
}

#[tokio::test(start_paused = true)]
async fn model_agrees_with_real_chitchat_within_20_percent() {
    println!("| nodes | rounds to converge: chitchat | model | bytes/node/s: chitchat | model |");
    println!("|---:|---:|---:|---:|---:|");
    let mut failures = Vec::new();
    for (n, changes) in [(16usize, 60usize), (64, 16), (256, 10)] {
        let (rr, rb) = real(n, changes).await;
        let (mr, mb) = model(n, 40);
        println!("| {n} | {rr:.2} | {mr:.2} | {rb:.0} | {mb:.0} |");
        let close = |a: f64, b: f64| (a - b).abs() <= 0.2 * a.max(b);
        if !close(rr, mr) {
            failures.push(format!(
                "{n} nodes: rounds {rr:.2} (chitchat) vs {mr:.2} (model)"
            ));
        }
        if !close(rb, mb) {
            failures.push(format!(
                "{n} nodes: bytes/node/s {rb:.0} (chitchat) vs {mb:.0} (model)"
            ));
        }
    }
    println!(
        "largest flat cell whose SYN fits a datagram: {}",
        gossip::Config::cell(1_000_000, 6).max_flat_members()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
