//! Property tests of placement constraints over random clusters and a
//! network that duplicates and reorders messages: `spread` over k values
//! puts n ≤ k tasks of a job on an idle cluster on n different values, and
//! `unique` never lets two running tasks of a job share a value, however
//! many tasks ask and however their bids and ends interleave.
//!
//! The network loses nothing here: a lost confirm answer can make a bidder
//! report a task lost while it still runs (it is killed when heard of), and
//! in that window another task of the job may take the value; that is the
//! failure path `auction_props` covers, not a placement decision.

mod harness;

use agora_protocol::auctioneer;
use agora_protocol::bidder;
use agora_protocol::constraint::Attributes;
use agora_protocol::resources::Resources;
use agora_protocol::task::{Command, TaskSpec, TaskState};
use harness::{Harness, NetConfig};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::time::Duration;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5B4E_AD00),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn net() -> impl Strategy<Value = NetConfig> {
    (0u32..=20, 0u64..20_000).prop_map(|(dup, spread)| NetConfig {
        loss: 0.0,
        dup: f64::from(dup) / 100.0,
        delay_us: (100, 100 + spread),
    })
}

fn timeouts() -> (auctioneer::Config, bidder::Config) {
    let a = auctioneer::Config {
        window: Duration::from_millis(5),
        lease_ttl: Duration::from_millis(500),
        status_retry: Duration::from_millis(100),
        status_retry_max: Duration::from_millis(400),
        ..auctioneer::Config::default()
    };
    let b = bidder::Config {
        bid_wait: Duration::from_millis(150),
        bid_timeout: Duration::from_millis(400),
        confirm_timeout: Duration::from_millis(100),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        ..bidder::Config::default()
    };
    (a, b)
}

/// Node `n{i}` is on rack `r{i % racks}`.
fn racked(racks: usize) -> impl Fn(usize) -> Attributes {
    move |i| {
        let mut a = Attributes::default();
        a.insert("hostname", format!("n{i}"));
        a.insert("rack", format!("r{}", i % racks));
        a
    }
}

fn task(constraint: &str) -> TaskSpec {
    let mut s = TaskSpec::new(
        "web",
        Command::Shell("true".into()),
        Resources::cpu_mem(250, 256),
    );
    s.constraints = vec![constraint.parse().unwrap()];
    s.placement_timeout_ms = 3_000;
    s
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn spread_over_k_values_never_puts_two_of_n_le_k_tasks_on_one(
        seed in any::<u64>(),
        racks in 1usize..=4,
        per_rack in 1usize..=3,
        extra in 0usize..4,
        net in net(),
    ) {
        let tasks = 1 + extra % racks;
        let (a, b) = timeouts();
        let nodes = racks * per_rack;
        let mut h = Harness::with_attrs(
            seed, 1, nodes - 1, Resources::cpu_mem(2000, 2048), net, a, b, racked(racks),
        );
        for _ in 0..tasks {
            // they run far longer than the test
            prop_assert!(h.submit_spec(0, task("rack:spread"), 600_000).is_some());
        }
        let until = h.now + Duration::from_secs(5);
        h.run_until(until);
        let rows = h.bidder(0).task_rows();
        let mut used = BTreeSet::new();
        for row in &rows {
            prop_assert!(
                matches!(row.state, TaskState::Starting | TaskState::Running),
                "{} is {:?}: {:?}", row.task_id, row.state, row.reason
            );
            let node = row.node.clone().unwrap();
            let rack = h.attr(&node, "rack").unwrap().to_string();
            prop_assert!(used.insert(rack.clone()), "two tasks on {}: {:?}", rack, rows);
        }
        prop_assert_eq!(used.len(), tasks);
    }

    #[test]
    fn unique_never_runs_two_tasks_of_a_job_on_one_value(
        seed in any::<u64>(),
        racks in 1usize..=4,
        per_rack in 1usize..=2,
        runs in proptest::collection::vec((10u64..400, 0u64..200), 1..=8),
        net in net(),
    ) {
        let (a, b) = timeouts();
        let nodes = racks * per_rack;
        let mut h = Harness::with_attrs(
            seed, 1, nodes - 1, Resources::cpu_mem(2000, 2048), net, a, b, racked(racks),
        );
        // checked after every event from here on
        h.watch_unique("rack");
        for (run_ms, gap_ms) in &runs {
            h.submit_spec(0, task("rack:unique"), *run_ms);
            let until = h.now + Duration::from_millis(*gap_ms);
            h.run_until(until);
        }
        h.settle(Duration::from_secs(60));
        let bidder = h.bidder(0);
        prop_assert_eq!(bidder.active_tasks(), 0, "a task never ended");
        for t in h.submitted(0) {
            let ends = h.record.terminal.get(t).map_or(0, Vec::len);
            prop_assert_eq!(ends, 1, "task {} ended {} times", t, ends);
        }
    }
}
