//! What a run measures: latency histograms, per-scheduler counters,
//! utilization and fairness samples, and the report written as JSON.
//!
//! Histograms are log-linear (64 sub-buckets per power of two, so every
//! quantile is within ~1.6%) and hold any number of samples in fixed memory,
//! which matters at 200,000 tasks per simulated second.

use crate::engine::{Micros, SEC};
use agora_protocol::Resources;
use serde::Serialize;

const SUB: u32 = 64;

/// A log-linear histogram of microsecond values.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; (64 * SUB) as usize],
            total: 0,
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < u64::from(SUB) {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= 6
    let shift = exp - 6;
    let mant = (v >> shift) as u32 - SUB; // 0..SUB
    ((exp - 5) * SUB + mant) as usize
}

fn bucket_low(i: usize) -> u64 {
    let i = i as u32;
    if i < SUB {
        return u64::from(i);
    }
    let exp = i / SUB + 5;
    let mant = i % SUB;
    (u64::from(SUB + mant)) << (exp - 6)
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
        self.total += 1;
    }

    /// Adds every value `other` recorded.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q`-quantile (0..=1), or 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let target = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return bucket_low(i);
            }
        }
        bucket_low(self.counts.len() - 1)
    }

    /// The CDF as (value, cumulative fraction) points, for plotting.
    pub fn cdf(&self) -> Vec<(u64, f64)> {
        let mut out = Vec::new();
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            if *c > 0 {
                seen += c;
                out.push((bucket_low(i), seen as f64 / self.total.max(1) as f64));
            }
        }
        out
    }
}

/// p50 and p99.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct P50P99 {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// p50, p90 and p99.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct P50P90P99 {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// One scheduler's results, exactly the fields of the issue.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SchedulerReport {
    /// Tasks handed to the scheduler.
    pub tasks_submitted: u64,
    /// Tasks that ran to completion within the run.
    pub tasks_completed: u64,
    /// From submission to the task's start, in ms.
    pub placement_latency_ms: P50P90P99,
    /// Job response time quantiles divided by central's.
    pub response_time_ratio_to_central: P50P99,
    /// Completed tasks per simulated second.
    pub throughput_tasks_per_s: f64,
    /// Mean fraction of all CPU held by running tasks.
    pub utilization: f64,
    /// Mean over 1 s samples of the largest amount by which a framework's
    /// weighted dominant share falls short of its DRF fair share for the
    /// demand of that moment ([`drf_shortfall`]).
    pub fairness_max_share_gap: f64,
    /// Mean over 1 s samples of the largest difference in weighted dominant
    /// share between frameworks that have a task waiting
    /// ([`backlogged_spread`]); the definition of `fairness_max_share_gap`
    /// before 2026-11-22.
    pub fairness_backlogged_spread: f64,
    /// Bids (or probes) sent per submitted task.
    pub bids_per_task: f64,
    /// Rejects per submitted task.
    pub rejects_per_task: f64,
    /// Times a node held more than its capacity.
    pub overcommit_violations: u64,
    /// Tasks lost with a crashed node whose framework was never told.
    pub tasks_lost_unreported: u64,
    /// Tasks lost with a crashed node and reported to their framework.
    pub tasks_lost_reported: u64,
    /// Tasks launched in a cell other than their framework's home cell
    /// (auction runs with cells; 0 otherwise).
    pub tasks_placed_across_cells: u64,
    /// Wall-clock seconds this scheduler's run took (with `all`, the
    /// baselines run side by side first, then the auction on every thread).
    pub wall_s: f64,
}

/// Gossip results (auction runs only).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct GossipReport {
    /// Gossip bytes sent per node per simulated second (cells and federation).
    pub bytes_per_node_per_s: f64,
    /// Seconds for a state change to reach 99% of its cell.
    pub convergence_s: P50P99,
    /// Seconds from a crash until a cell member's detector declares it dead;
    /// `null` when no node failed (nothing to detect).
    pub failure_detection_s: Option<P50P99>,
    /// Largest gossip message, in bytes.
    pub max_message_bytes: u64,
    /// Messages that exceeded the 65,507-byte datagram and were not sent.
    pub oversize_messages: u64,
}

/// Run information.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RunReport {
    /// Nodes simulated.
    pub nodes: usize,
    /// The seed.
    pub seed: u64,
    /// Simulated seconds (per scheduler).
    pub simulated_s: f64,
    /// Wall-clock seconds for the whole command.
    pub wall_s: f64,
    /// Events processed, all schedulers together.
    pub events: u64,
    /// Fingerprint of every run, hex.
    pub trace_hash: String,
}

/// DIR/report.json.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Report {
    /// Per scheduler, by name.
    pub schedulers: std::collections::BTreeMap<String, SchedulerReport>,
    /// Gossip (present when the auction ran).
    pub gossip: Option<GossipReport>,
    /// Run information.
    pub run: RunReport,
}

/// Everything one scheduler run collects (turned into a [`SchedulerReport`]).
#[derive(Clone, Debug, Default)]
pub struct Collector {
    /// Tasks submitted.
    pub submitted: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Placement latencies (µs).
    pub placement: Histogram,
    /// Job response times (µs).
    pub response: Histogram,
    /// Bids or probes sent.
    pub bids: u64,
    /// Rejects.
    pub rejects: u64,
    /// Overcommit violations seen.
    pub overcommit: u64,
    /// Lost tasks never reported.
    pub lost_unreported: u64,
    /// Tasks reported lost to their framework (their node crashed).
    pub lost_reported: u64,
    /// Tasks launched outside their framework's home cell.
    pub cross_cell: u64,
    busy_millis: u64,
    busy_integral: f64,
    last_change: Micros,
    /// (time s, DRF shortfall) samples.
    pub fairness: Vec<(f64, f64)>,
    /// (time s, spread of shares among backlogged frameworks) samples.
    pub spread: Vec<(f64, f64)>,
    /// Events processed.
    pub events: u64,
    /// The run's trace hash.
    pub trace_hash: u64,
    /// Wall-clock seconds the run took (set by its caller).
    pub wall_s: f64,
}

impl Collector {
    /// A task started holding `cpu_millis` at `now`.
    pub fn busy_add(&mut self, now: Micros, cpu_millis: u64) {
        self.advance(now);
        self.busy_millis += cpu_millis;
    }

    /// A task stopped holding `cpu_millis` at `now`.
    pub fn busy_sub(&mut self, now: Micros, cpu_millis: u64) {
        self.advance(now);
        self.busy_millis = self.busy_millis.saturating_sub(cpu_millis);
    }

    /// Adds what `other` counted (a part of the same run: one cell of the
    /// auction), with both brought to `end` for utilization. The fairness
    /// samples stay this collector's.
    pub fn absorb(&mut self, other: &mut Collector, end: Micros) {
        self.advance(end);
        other.advance(end);
        self.submitted += other.submitted;
        self.completed += other.completed;
        self.placement.merge(&other.placement);
        self.response.merge(&other.response);
        self.bids += other.bids;
        self.rejects += other.rejects;
        self.overcommit += other.overcommit;
        self.lost_unreported += other.lost_unreported;
        self.lost_reported += other.lost_reported;
        self.cross_cell += other.cross_cell;
        self.busy_millis += other.busy_millis;
        self.busy_integral += other.busy_integral;
    }

    fn advance(&mut self, now: Micros) {
        if now > self.last_change {
            self.busy_integral += self.busy_millis as f64 * (now - self.last_change) as f64;
            self.last_change = now;
        }
    }

    /// Records a fairness sample: each framework's allocation, what it is
    /// still waiting for, and its weight, over the cluster's `total`.
    ///
    /// Two figures per sample (see [`drf_shortfall`] and
    /// [`backlogged_spread`]).
    pub fn sample_fairness(&mut self, now: Micros, total: &Resources, fws: &[FwSample]) {
        let t = now as f64 / SEC as f64;
        self.fairness.push((t, drf_shortfall(total, fws)));
        self.spread.push((t, backlogged_spread(total, fws)));
    }

    /// The report, given the run's length, the cluster's CPU and central's
    /// response-time quantiles (µs).
    pub fn report(
        &mut self,
        end: Micros,
        total_cpu_millis: u64,
        central: Option<(u64, u64)>,
    ) -> SchedulerReport {
        self.advance(end);
        let secs = end as f64 / SEC as f64;
        let ms = |v: u64| v as f64 / 1000.0;
        let per_task = |x: u64| {
            if self.submitted == 0 {
                0.0
            } else {
                x as f64 / self.submitted as f64
            }
        };
        let (r50, r99) = (self.response.quantile(0.5), self.response.quantile(0.99));
        let ratio = match central {
            Some((c50, c99)) if c50 > 0 && c99 > 0 => P50P99 {
                p50: r50 as f64 / c50 as f64,
                p99: r99 as f64 / c99 as f64,
            },
            _ => P50P99::default(),
        };
        // Mean over the samples after the first tenth of the run (warm-up).
        let mean_after_warmup = |v: &[(f64, f64)]| {
            let kept: Vec<f64> = v
                .iter()
                .filter(|(t, _)| *t >= secs * 0.1)
                .map(|s| s.1)
                .collect();
            if kept.is_empty() {
                0.0
            } else {
                kept.iter().sum::<f64>() / kept.len() as f64
            }
        };
        SchedulerReport {
            tasks_submitted: self.submitted,
            tasks_completed: self.completed,
            placement_latency_ms: P50P90P99 {
                p50: ms(self.placement.quantile(0.5)),
                p90: ms(self.placement.quantile(0.9)),
                p99: ms(self.placement.quantile(0.99)),
            },
            response_time_ratio_to_central: ratio,
            throughput_tasks_per_s: if secs > 0.0 {
                self.completed as f64 / secs
            } else {
                0.0
            },
            utilization: if end > 0 && total_cpu_millis > 0 {
                self.busy_integral / (end as f64 * total_cpu_millis as f64)
            } else {
                0.0
            },
            fairness_max_share_gap: mean_after_warmup(&self.fairness),
            fairness_backlogged_spread: mean_after_warmup(&self.spread),
            bids_per_task: per_task(self.bids),
            rejects_per_task: per_task(self.rejects),
            overcommit_violations: self.overcommit,
            tasks_lost_unreported: self.lost_unreported,
            tasks_lost_reported: self.lost_reported,
            tasks_placed_across_cells: self.cross_cell,
            wall_s: self.wall_s,
        }
    }
}

/// Weighted dominant share of a (cpu, mem) usage on a cluster of (cpu, mem).
/// One framework at a fairness sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FwSample {
    /// What its running tasks hold.
    pub used: Resources,
    /// What its submitted, not yet placed tasks ask for.
    pub waiting: Resources,
    /// Its DRF weight.
    pub weight: u32,
}

fn share_of(r: &Resources, total: &Resources, weight: u32) -> f64 {
    dominant_share(
        (r.cpu_millis, r.mem_mib),
        (total.cpu_millis, total.mem_mib),
        weight,
    )
}

/// How far the least-served framework is below its DRF fair share of what
/// the scheduler has handed out.
///
/// The fair shares are those of progressive filling (weighted DRF) of the
/// resources in use at that moment (the sum of every framework's
/// allocation, CPU and memory) over each framework's demand, `used +
/// waiting`: every framework's weighted dominant share rises together, each
/// along its own demand vector, until its demand is met or a resource runs
/// out. The result is the largest `fair − actual` over the frameworks (0
/// when everyone has at least its fair share), in units of cluster share.
///
/// Filling what is in use, not the whole cluster, separates fairness from
/// efficiency: a framework waiting while the cluster has room is a matter
/// for utilization and placement latency, and a lone framework is never
/// short. A framework held back while others take more than their share is
/// short by the difference.
pub fn drf_shortfall(total: &Resources, fws: &[FwSample]) -> f64 {
    let in_use = fws
        .iter()
        .fold(Resources::ZERO, |a, f| a.saturating_add(&f.used));
    let demand: Vec<(Resources, f64)> = fws
        .iter()
        .map(|f| {
            let d = f.used.saturating_add(&f.waiting);
            (d, share_of(&d, total, f.weight))
        })
        .collect();
    let top = demand.iter().map(|d| d.1).fold(0.0, f64::max);
    if top <= 0.0 {
        return 0.0;
    }
    // Whether every framework can have min(level, its demand's share).
    let fits = |level: f64| {
        let (mut cpu, mut mem) = (0.0, 0.0);
        for (d, s) in &demand {
            if *s > 0.0 {
                let k = (level / s).min(1.0);
                cpu += d.cpu_millis as f64 * k;
                mem += d.mem_mib as f64 * k;
            }
        }
        cpu <= in_use.cpu_millis as f64 * (1.0 + 1e-9) + 1e-6
            && mem <= in_use.mem_mib as f64 * (1.0 + 1e-9) + 1e-6
    };
    let level = if fits(top) {
        top
    } else {
        let (mut lo, mut hi) = (0.0, top);
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if fits(mid) { lo = mid } else { hi = mid }
        }
        lo
    };
    fws.iter()
        .zip(&demand)
        .map(|(f, (_, s))| level.min(*s) - share_of(&f.used, total, f.weight))
        .fold(0.0, f64::max)
}

/// The largest difference in weighted dominant share between frameworks
/// that have a task waiting (0 with fewer than two). This counts a
/// framework as backlogged for a task that waits only the moment a
/// placement takes, so frameworks whose demand is met show the differences
/// of their demands as a gap; [`drf_shortfall`] does not.
pub fn backlogged_spread(total: &Resources, fws: &[FwSample]) -> f64 {
    let backlogged: Vec<f64> = fws
        .iter()
        .filter(|f| f.waiting != Resources::ZERO)
        .map(|f| share_of(&f.used, total, f.weight))
        .collect();
    if backlogged.len() < 2 {
        return 0.0;
    }
    let max = backlogged.iter().copied().fold(f64::MIN, f64::max);
    let min = backlogged.iter().copied().fold(f64::MAX, f64::min);
    max - min
}

/// Weighted dominant share of `used` in `total` (CPU and memory).
pub fn dominant_share(used: (u64, u64), total: (u64, u64), weight: u32) -> f64 {
    let c = used.0 as f64 / total.0.max(1) as f64;
    let m = used.1 as f64 / total.1.max(1) as f64;
    c.max(m) / f64::from(weight.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw(cpu: u64, mem: u64, wait_cpu: u64, wait_mem: u64, weight: u32) -> FwSample {
        FwSample {
            used: Resources::cpu_mem(cpu, mem),
            waiting: Resources::cpu_mem(wait_cpu, wait_mem),
            weight,
        }
    }

    #[test]
    fn drf_shortfall_measures_distance_from_progressive_filling() {
        let total = Resources::cpu_mem(100_000, 100_000);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        // Room to spare and nothing waiting: nobody is short.
        assert_eq!(
            drf_shortfall(&total, &[fw(40_000, 0, 0, 0, 1), fw(10_000, 0, 0, 0, 1)]),
            0.0
        );
        // A full cluster, both waiting for more: fair is half each, and the
        // framework held to 30% is 20 points short.
        let starved = [fw(70_000, 0, 50_000, 0, 1), fw(30_000, 0, 50_000, 0, 1)];
        assert!(close(drf_shortfall(&total, &starved), 0.2));
        // Weights 2 and 1: 2/3 and 1/3 of the CPU is exactly fair.
        let weighted = [fw(66_667, 0, 50_000, 0, 2), fw(33_333, 0, 50_000, 0, 1)];
        assert!(drf_shortfall(&total, &weighted) < 1e-4);
        // Dominant resources: A's tasks are 6:1 CPU to memory, B's 1:6, and
        // each holds the same share of its dominant resource: fair, whether
        // the cluster is full (6/7 each) or not (60% each; the idle rest is
        // a matter of efficiency).
        for (big, small) in [(85_714, 14_286), (60_000, 10_000)] {
            let drf = [
                fw(big, small, 60_000, 10_000, 1),
                fw(small, big, 10_000, 60_000, 1),
            ];
            assert!(drf_shortfall(&total, &drf) < 1e-4, "{big}/{small}");
        }
        // ...but with the memory-heavy one held to 40% of the memory while
        // the other has 60% of the CPU, what is in use (2/3 of the CPU,
        // half the memory) split by progressive filling gives each 3/7:
        // the memory-heavy one is 3/7 - 0.4 short.
        let skewed = [
            fw(60_000, 10_000, 60_000, 10_000, 1),
            fw(6_667, 40_000, 10_000, 60_000, 1),
        ];
        assert!(close(drf_shortfall(&total, &skewed), 3.0 / 7.0 - 0.4));
        // One framework alone is never short, however much it waits for.
        assert!(drf_shortfall(&total, &[fw(30_000, 0, 50_000, 0, 1)]) < 1e-6);
        // With room, a task waiting while another framework's ran: short by
        // that task only, however different the frameworks' demands are...
        let busy = [fw(40_000, 0, 2_000, 0, 1), fw(10_000, 0, 1_000, 0, 1)];
        assert!(close(drf_shortfall(&total, &busy), 0.01));
        // ...which the spread of backlogged shares calls a 30-point gap.
        assert!(close(backlogged_spread(&total, &busy), 0.3));
        assert_eq!(backlogged_spread(&total, &busy[..1]), 0.0);
    }

    #[test]
    fn quantiles_are_within_two_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 10);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.02, "{p99}");
        assert_eq!(h.cdf().last().unwrap().1, 1.0);
        for v in [0u64, 1, 63, 64, 65, 1000, 1 << 40] {
            assert!(bucket_low(bucket(v)) <= v);
        }
    }
}
