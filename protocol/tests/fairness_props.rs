//! Fairness under contention: equal-weight frameworks competing for a full
//! cluster end up with dominant shares within one task's share of each other.
//!
//! Scenario (per case): a filler framework occupies every node; the
//! frameworks under test then submit far more identical tasks than the
//! cluster holds, and their bids wait at the full nodes (each task bids on
//! every node). The filler's tasks all end at the same instant; every node
//! ranks the waiting bids by weighted dominant share as it hands out the
//! freed resources, and the bidders confirm one award per task and withdraw
//! or release the rest. Once the cluster is full again, no framework may hold
//! more than one task's share above another. Shares are given to each
//! auctioneer as they truly are at each decision (the harness's instant
//! mode), so this tests the ranking and the bid/confirm/release dance, not
//! gossip lag (the simulator measures that).

mod harness;

use agora_protocol::auctioneer;
use agora_protocol::bidder;
use agora_protocol::resources::Resources;
use harness::{Harness, NetConfig, Op};
use proptest::prelude::*;
use std::time::Duration;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xFA1E),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn equal_weights_converge_within_one_task(
        seed in any::<u64>(),
        frameworks in 2usize..=3,
        extra_nodes in 0usize..=3,
        slots_cpu in 2u64..=6,
        slots_mem in 2u64..=6,
        spread_us in 0u64..3_000,
    ) {
        let nodes = frameworks + 1 + extra_nodes;
        // one task takes 1/slots_cpu of a node's cpu and 1/slots_mem of its memory
        let cap = Resources::cpu_mem(1200 * slots_cpu, 1024 * slots_mem);
        let task = Resources::cpu_mem(1200, 1024);
        let a = auctioneer::Config {
            window: Duration::from_millis(5),
            lease_ttl: Duration::from_secs(1),
            max_hold: Duration::from_secs(10),
            ..auctioneer::Config::default()
        };
        let b = bidder::Config {
            candidates: nodes,
            best_of: nodes,
            scan_limit: nodes,
            bid_wait: Duration::from_secs(10),
            bid_timeout: Duration::from_secs(12),
            placement_timeout: Duration::from_secs(30),
            ..bidder::Config::default()
        };
        let net = NetConfig { loss: 0.0, dup: 0.0, delay_us: (100, 100 + spread_us) };
        let mut h = Harness::new(seed, frameworks + 1, extra_nodes, cap, net, a, b);
        h.set_instant_shares(true);
        // The filler (bidder 0) takes every node whole.
        for _ in 0..nodes {
            h.apply(&Op::Submit { b: 0, cpu: cap.cpu_millis, mem: cap.mem_mib, run_ms: 3_600_000 });
        }
        h.apply(&Op::Wait { ms: 500 });
        prop_assert_eq!(h.running_tasks(0), nodes, "the filler did not fill the cluster");
        // Demand far beyond capacity from every framework under test.
        let slots = (slots_cpu.min(slots_mem) as usize) * nodes;
        for f in 1..=frameworks {
            for _ in 0..slots {
                h.apply(&Op::Submit { b: f, cpu: task.cpu_millis, mem: task.mem_mib, run_ms: 3_600_000 });
            }
        }
        h.apply(&Op::Wait { ms: 200 });
        h.finish_all(0);
        h.apply(&Op::Wait { ms: 3_000 });
        let running: Vec<usize> = (1..=frameworks).map(|f| h.running_tasks(f)).collect();
        prop_assert_eq!(running.iter().sum::<usize>(), slots, "the freed cluster was not refilled: {:?}", running);
        let max = running.iter().max().copied().unwrap_or(0);
        let min = running.iter().min().copied().unwrap_or(0);
        prop_assert!(max - min <= 1, "dominant shares differ by more than one task: {:?}", running);
    }
}
