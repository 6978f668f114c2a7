//! Property tests of the auction over random interleavings: submits, bids,
//! awards, confirms, releases, lease expiries, task ends, kills, node deaths,
//! and message loss, duplication and reordering, across several auctioneers
//! and bidders. The harness checks after every event that no node has more
//! awarded than its capacity, that no bid gets two different answers, that
//! no task is launched twice and that no task ends twice; at the end of each
//! run every bid has been answered or timed out, every lease has expired or
//! been confirmed, and every task has ended exactly once, its framework told.

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
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x000A_602A),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..4, 1u64..=4, 1u64..=4, 10u64..400).prop_map(|(b, c, m, run_ms)| Op::Submit {
            b,
            cpu: c * 250,
            mem: m * 256,
            run_ms
        }),
        3 => (1u64..300).prop_map(|ms| Op::Wait { ms }),
        1 => (0usize..8).prop_map(|n| Op::Crash { n }),
        1 => (0usize..4, 0usize..64).prop_map(|(b, i)| Op::Kill { b, i }),
    ]
}

fn net() -> impl Strategy<Value = NetConfig> {
    (0u32..=20, 0u32..=20, 0u64..20_000).prop_map(|(loss, dup, spread)| NetConfig {
        loss: f64::from(loss) / 100.0,
        dup: f64::from(dup) / 100.0,
        delay_us: (100, 100 + spread),
    })
}

fn short_timeouts() -> (auctioneer::Config, bidder::Config) {
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
        confirm_attempts: 10,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        kill_retry: Duration::from_millis(200),
        ..bidder::Config::default()
    };
    (a, b)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn auction_invariants_hold_under_hostile_interleavings(
        seed in any::<u64>(),
        homes in 1usize..=3,
        mortal in 1usize..=4,
        net in net(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let (a, b) = short_timeouts();
        let mut h = Harness::new(seed, homes, mortal, Resources::cpu_mem(2000, 2048), net, a, b);
        for op in &ops {
            h.apply(op);
        }
        // Long enough for every placement timeout (3 s), run (<0.4 s), lease
        // (0.5 s) and retry to play out.
        h.settle(Duration::from_secs(60));
        h.check();
        for i in 0..h.bidders() {
            let bidder = h.bidder(i);
            prop_assert_eq!(bidder.outstanding_bids(), 0, "a bid neither answered nor timed out");
            prop_assert_eq!(bidder.active_tasks(), 0, "a task never ended");
            for task in h.submitted(i) {
                let ends = h.record.terminal.get(task).map_or(0, Vec::len);
                prop_assert_eq!(ends, 1, "task {} ended {} times", task, ends);
            }
        }
        for (id, auct, alive) in h.auctioneers() {
            if alive {
                prop_assert_eq!(auct.lease_count(), 0, "a lease on {} never expired", id);
                prop_assert_eq!(auct.running_count(), 0, "an allocation on {} never ended", id);
                prop_assert_eq!(auct.used(), Resources::ZERO, "{} leaks resources", id);
            }
        }
    }
}
