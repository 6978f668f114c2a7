//! The network model: per-link latency, random loss and scheduled partitions.
//!
//! A message from node `a` to node `b` takes a per-link base delay (fixed for
//! the link, drawn by hashing the pair, between `base` and `2 × base`) plus an
//! exponentially distributed jitter of mean `jitter`; it is lost with
//! probability `loss`, and always lost while a partition separates `a` and
//! `b`. A partition splits the nodes into those with index below `split`
//! and the rest, from `start` to `end`.

use crate::engine::{Micros, splitmix};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// One scheduled partition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Partition {
    /// When it starts.
    pub start: Micros,
    /// When it heals.
    pub end: Micros,
    /// Nodes `0..split` on one side, `split..` on the other.
    pub split: u32,
}

impl Partition {
    /// Parses `START_S:END_S:FRACTION`, e.g. `60:90:0.5`.
    ///
    /// # Errors
    /// A message naming the part that is wrong.
    pub fn parse(text: &str, nodes: u32) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let [s, e, f] = parts.as_slice() else {
            return Err(format!(
                "partition {text:?} must be START_S:END_S:FRACTION, e.g. 60:90:0.5"
            ));
        };
        let num = |x: &str, what: &str| {
            x.parse::<f64>()
                .map_err(|_| format!("partition {text:?}: {what} {x:?} is not a number"))
        };
        let (s, e, f) = (num(s, "start")?, num(e, "end")?, num(f, "fraction")?);
        if !(0.0..=1.0).contains(&f) || e < s || s < 0.0 {
            return Err(format!(
                "partition {text:?}: need 0 <= START <= END and FRACTION in [0, 1]"
            ));
        }
        Ok(Partition {
            start: (s * 1e6) as Micros,
            end: (e * 1e6) as Micros,
            split: (f * f64::from(nodes)) as u32,
        })
    }

    fn cuts(&self, now: Micros, a: u32, b: u32) -> bool {
        now >= self.start && now < self.end && ((a < self.split) != (b < self.split))
    }
}

/// Network parameters.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Smallest one-way base delay.
    pub base: Micros,
    /// Mean of the exponential jitter added to every message.
    pub jitter: Micros,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Scheduled partitions.
    pub partitions: Vec<Partition>,
}

impl Default for NetConfig {
    /// A datacenter network: 100–200 µs one way plus 50 µs mean jitter.
    fn default() -> Self {
        NetConfig {
            base: 100,
            jitter: 50,
            loss: 0.0,
            partitions: Vec::new(),
        }
    }
}

impl NetConfig {
    /// The one-way delay of a message from `a` to `b` sent at `now`, or
    /// `None` if it is lost.
    pub fn delay(&self, rng: &mut ChaCha8Rng, now: Micros, a: u32, b: u32) -> Option<Micros> {
        if self.partitions.iter().any(|p| p.cuts(now, a, b)) {
            return None;
        }
        if self.loss > 0.0 && rng.random::<f64>() < self.loss {
            return None;
        }
        Some(self.latency(rng, a, b))
    }

    /// Whether a message sent now would get through (used by the gossip
    /// model, whose exchanges are instantaneous at round granularity).
    pub fn delivers(&self, rng: &mut ChaCha8Rng, now: Micros, a: u32, b: u32) -> bool {
        if self.partitions.iter().any(|p| p.cuts(now, a, b)) {
            return false;
        }
        !(self.loss > 0.0 && rng.random::<f64>() < self.loss)
    }

    /// The one-way latency of a delivered message.
    pub fn latency(&self, rng: &mut ChaCha8Rng, a: u32, b: u32) -> Micros {
        let link = splitmix((u64::from(a) << 32) | u64::from(b));
        let base = self.base + link % (self.base.max(1));
        let u: f64 = rng.random::<f64>();
        let jitter = -(1.0 - u).ln() * self.jitter as f64;
        base + jitter as Micros
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn partitions_cut_only_across_and_only_while_active() {
        let p = Partition::parse("1:2:0.5", 10).unwrap();
        let net = NetConfig {
            partitions: vec![p],
            ..NetConfig::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert!(net.delay(&mut rng, 1_500_000, 1, 7).is_none());
        assert!(net.delay(&mut rng, 1_500_000, 1, 2).is_some());
        assert!(net.delay(&mut rng, 2_500_000, 1, 7).is_some());
        assert!(Partition::parse("2:1:0.5", 10).is_err());
        assert!(Partition::parse("x", 10).is_err());
    }
}
