//! A stand-alone flat cluster, run without churn to compare the model with
//! real chitchat (sim/tests/chitchat_model.rs, docs/GOSSIP_MODEL.md).

use super::{Config, Group, Metrics};
use crate::engine::{Micros, SEC};
use crate::network::NetConfig;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Result of a stand-alone flat-cluster run (used to check the model
/// against real chitchat).
#[derive(Clone, Debug, PartialEq)]
pub struct FlatRun {
    /// Gossip rounds (intervals) until a change made at round 0 reached every member.
    pub rounds_to_converge: f64,
    /// Bytes sent per node per second in steady state.
    pub bytes_per_node_per_s: f64,
}

/// Runs `n` members with no churn for `warm` rounds, then one member sets a
/// key and the run counts rounds until all know it; bytes are measured over
/// the warm-up. Members' rounds are spread uniformly over the interval.
pub fn flat_run(n: usize, id_len: usize, interval: Micros, seed: u64) -> FlatRun {
    use rand::SeedableRng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cfg = Config::cell(interval, id_len);
    let members: Vec<u32> = (0..n as u32).collect();
    let mut g = Group::new(cfg, members, &[], 1);
    let net = NetConfig::default();
    let mut metrics = Metrics::default();
    let mut learned = Vec::new();
    let phase: Vec<Micros> = (0..n).map(|_| rng.random_range(0..interval)).collect();
    let warm = 10u64;
    let mut order: Vec<(Micros, usize)> = Vec::new();
    for r in 0..warm {
        for (i, p) in phase.iter().enumerate() {
            order.push((r * interval + p, i));
        }
    }
    order.sort();
    for (t, i) in &order {
        g.round(*i, *t, &mut rng, &net, &mut metrics, &mut learned);
    }
    let bytes_per_node_per_s =
        metrics.bytes as f64 / n as f64 / (warm as f64 * interval as f64 / SEC as f64);
    let start = warm * interval;
    let v = g.bump(0, start);
    let mut t = start;
    let mut round = 0u64;
    'outer: loop {
        let mut order: Vec<(Micros, usize)> = phase
            .iter()
            .enumerate()
            .map(|(i, p)| (start + round * interval + p, i))
            .collect();
        order.sort();
        for (at, i) in order {
            g.round(i, at, &mut rng, &net, &mut metrics, &mut learned);
            t = at;
            if (0..n).all(|o| g.known[o * n] >= v) {
                break 'outer;
            }
        }
        round += 1;
        if round > 1000 {
            break;
        }
    }
    FlatRun {
        rounds_to_converge: (t - start) as f64 / interval as f64,
        bytes_per_node_per_s,
    }
}
