//! A model of chitchat 0.13's scuttlebutt gossip, faithful enough to predict
//! staleness and cost, cheap enough for 10,000 nodes.
//!
//! What it keeps from chitchat (`server.rs`, `lib.rs`, `state.rs`,
//! `failure_detector.rs` of chitchat 0.13.0):
//! - every `interval`, each live member gossips with 3 random peers it holds
//!   live, plus a dead one with probability `dead / (live + 1)`, plus a seed
//!   with probability `seeds / (live + dead)` when no seed was among them;
//! - an exchange is SYN (the full digest: one entry per member) → SYN-ACK
//!   (the peer's full digest and the delta the initiator lacks) → ACK (the
//!   delta the peer lacks); heartbeats travel in digests and feed the
//!   receiver's failure detector; every processed message bumps the
//!   receiver's own heartbeat;
//! - deltas are trimmed to the 65,507-byte datagram minus header and digest,
//!   unknown members first, then members with the most stale key-values,
//!   ties shuffled; a SYN that does not fit one datagram is not sent and is
//!   counted as oversize;
//! - the phi-accrual detector with chitchat's defaults: phi = time since the
//!   last heartbeat / mean interval, the mean smoothed with a 5 s prior of
//!   weight 5, intervals over 10 s ignored, dead above phi 8, samples reset
//!   when a node is declared dead, and no verdict of "alive" before two
//!   heartbeats.
//!
//! What it simplifies, and why it is safe: an exchange completes within its
//! round (its three datagrams take microseconds, the interval is a second);
//! a member's published state is five keys (three static, `free` and `alloc`
//! updated together); membership is known from the start (bootstrap is not
//! modelled); peers are chosen from the live set of the cell's designated
//! monitor rather than each member's own detector (each member's would agree
//! within a round or two). State is two `k × k` matrices of `u32` per cell
//! (versions and heartbeats known by each member about each member): 2 MiB
//! for a 500-node cell, 20 MiB for 10,000 nodes in cells of 500. Full
//! failure-detector state is kept only for monitored members (a sample per
//! cell plus every node hosting a bidder).

use crate::engine::{Micros, SEC};
use crate::metrics::Histogram;
use crate::network::NetConfig;
use rand::RngExt;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

mod detector;
mod flat;
mod sizes;

use detector::{Fd, phi_alive, report_heartbeat};
pub use flat::{FlatRun, flat_run};
use sizes::STATIC_VERSIONS;
pub use sizes::{Config, GOSSIP_COUNT, HEADER_LEN, MAX_DATAGRAM};

/// Something a watched member learned (reported to the driver).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// `observer` now knows `subject`'s state at gossip `version`.
    State {
        /// Global node index of the observer.
        observer: u32,
        /// Global node index of the subject.
        subject: u32,
        /// Gossip version now known.
        version: u32,
    },
    /// `observer`'s failure detector changed its verdict on `subject`.
    Alive {
        /// Global node index of the observer.
        observer: u32,
        /// Global node index of the subject.
        subject: u32,
        /// The new verdict.
        alive: bool,
    },
}
#[derive(Clone, Copy, Debug)]
struct Tracked {
    version: u32,
    t0: Micros,
    informed: u32,
    next_decile: u8,
}

/// Measurements shared by all groups.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Time for a change to reach 99% of live members (µs).
    pub convergence: Histogram,
    /// Time from crash to a monitor's dead verdict (µs).
    pub detection: Histogram,
    /// Sum and count of the time to reach 10%, 20%, …, 90%, 99% of the group.
    pub deciles: [(f64, u64); 10],
    /// Bytes sent by all members.
    pub bytes: u64,
    /// Datagrams sent.
    pub messages: u64,
    /// Largest datagram.
    pub max_message: u64,
    /// Datagrams not sent because they exceeded [`MAX_DATAGRAM`].
    pub oversize: u64,
    /// Changes whose convergence was not seen within 60 s.
    pub unconverged: u64,
}

impl Metrics {
    /// Adds what another group (or another cell's part of the run) measured.
    pub fn absorb(&mut self, o: &Metrics) {
        self.convergence.merge(&o.convergence);
        self.detection.merge(&o.detection);
        for (a, b) in self.deciles.iter_mut().zip(&o.deciles) {
            a.0 += b.0;
            a.1 += b.1;
        }
        self.bytes += o.bytes;
        self.messages += o.messages;
        self.max_message = self.max_message.max(o.max_message);
        self.oversize += o.oversize;
        self.unconverged += o.unconverged;
    }
}

/// One chitchat cluster: a cell, or the federation of gateways.
pub struct Group {
    cfg: Config,
    k: usize,
    members: Vec<u32>,
    known: Vec<u32>,
    hb: Vec<u32>,
    up: Vec<bool>,
    crashed_at: Vec<Option<Micros>>,
    monitor_of: Vec<u32>,
    monitors: Vec<usize>,
    fd: Vec<Fd>,
    watch: Vec<bool>,
    live: Vec<u32>,
    dead: Vec<u32>,
    tracked: Vec<Vec<Tracked>>,
    n_tracked: usize,
    bumps: u64,
    digest_len: usize,
    scratch: Vec<(u32, u32, u32, u32)>,
    /// Bytes sent per member.
    pub bytes_by_member: Vec<u64>,
}

/// Most state changes tracked at once for convergence.
const TRACK_CAP: usize = 512;
/// Track one change in this many.
const TRACK_EVERY: u64 = 7;

impl Group {
    /// A group of `members` (global node indices), bootstrapped: everyone
    /// knows everyone's initial state and has heard heartbeats every
    /// interval. `watched` members (those hosting a bidder) report what they
    /// learn; they and `sample_monitors` others keep full detectors.
    pub fn new(cfg: Config, members: Vec<u32>, watched: &[bool], sample_monitors: usize) -> Self {
        let k = members.len();
        let init = STATIC_VERSIONS + 2;
        let mut monitors = Vec::new();
        let mut monitor_of = vec![u32::MAX; k];
        let step = (k / sample_monitors.max(1)).max(1);
        for (i, slot) in monitor_of.iter_mut().enumerate() {
            if i % step == 0 && monitors.len() < sample_monitors
                || watched.get(i).copied().unwrap_or(false)
            {
                *slot = monitors.len() as u32;
                monitors.push(i);
            }
        }
        let interval_s = cfg.interval as f64 / SEC as f64;
        let fd = vec![
            Fd {
                last: 0,
                sum: interval_s * 10.0,
                n: 10,
                dead: false,
            };
            monitors.len() * k
        ];
        let digest_len = cfg.syn_len(k) - (HEADER_LEN + 2 + cfg.cluster_id_len);
        Group {
            k,
            known: vec![init; k * k],
            hb: vec![1; k * k],
            up: vec![true; k],
            crashed_at: vec![None; k],
            monitor_of,
            monitors,
            fd,
            watch: (0..k)
                .map(|i| watched.get(i).copied().unwrap_or(false))
                .collect(),
            live: (0..k as u32).collect(),
            dead: Vec::new(),
            tracked: vec![Vec::new(); k],
            n_tracked: 0,
            bumps: 0,
            digest_len,
            scratch: Vec::new(),
            bytes_by_member: vec![0; k],
            members,
            cfg,
        }
    }

    /// Members (global indices).
    pub fn members(&self) -> &[u32] {
        &self.members
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The version member `local` publishes now.
    pub fn own_version(&self, local: usize) -> u32 {
        self.known[local * self.k + local]
    }

    /// Member `local` changed its published state (`free` and `alloc`).
    pub fn bump(&mut self, local: usize, now: Micros) -> u32 {
        let i = local * self.k + local;
        self.known[i] += 2;
        let v = self.known[i];
        self.bumps += 1;
        let list = &mut self.tracked[local];
        let before = list.len();
        list.retain(|t| now.saturating_sub(t.t0) < 60 * SEC);
        let expired = before - list.len();
        self.n_tracked -= expired;
        if self.bumps.is_multiple_of(TRACK_EVERY) && self.n_tracked < TRACK_CAP {
            list.push(Tracked {
                version: v,
                t0: now,
                informed: 1,
                next_decile: 0,
            });
            self.n_tracked += 1;
        }
        v
    }

    /// Member `local` crashed.
    pub fn crash(&mut self, local: usize, now: Micros) {
        self.up[local] = false;
        self.crashed_at[local] = Some(now);
    }

    /// Member `local` came back (its state is republished).
    pub fn rejoin(&mut self, local: usize, now: Micros) {
        self.up[local] = true;
        self.crashed_at[local] = None;
        self.bump(local, now);
    }

    /// One gossip round of member `local` at `now`.
    pub fn round(
        &mut self,
        local: usize,
        now: Micros,
        rng: &mut ChaCha8Rng,
        net: &NetConfig,
        metrics: &mut Metrics,
        learned: &mut Vec<Learned>,
    ) {
        if !self.up[local] {
            return;
        }
        self.hb[local * self.k + local] += 1;
        let mut peers: Vec<usize> = Vec::with_capacity(5);
        let candidates = if self.live.len() > 1 {
            &self.live
        } else {
            &self.dead
        };
        let want = GOSSIP_COUNT.min(
            candidates
                .len()
                .saturating_sub(usize::from(candidates.contains(&(local as u32)))),
        );
        let mut tries = 0;
        while peers.len() < want && tries < 64 {
            tries += 1;
            let p = candidates[rng.random_range(0..candidates.len())] as usize;
            if p != local && !peers.contains(&p) {
                peers.push(p);
            }
        }
        let (live_n, dead_n) = (self.live.len(), self.dead.len());
        if dead_n > 0 && (dead_n as f64 / (live_n + 1) as f64) > rng.random::<f64>() {
            let d = self.dead[rng.random_range(0..dead_n)] as usize;
            if d != local {
                peers.push(d);
            }
        }
        let seeds = self.cfg.seeds.min(self.k);
        if !peers.iter().any(|p| *p < seeds) && seeds > 0 {
            let p = seeds as f64 / (live_n + dead_n).max(1) as f64;
            if live_n == 0 || rng.random::<f64>() <= p {
                let s = rng.random_range(0..seeds);
                if s != local {
                    peers.push(s);
                }
            }
        }
        for p in peers {
            self.exchange(local, p, now, rng, net, metrics, learned);
        }
        if self.monitor_of[local] != u32::MAX {
            self.update_liveness(local, now, metrics, learned);
        }
    }

    fn send(&mut self, from: usize, bytes: usize, metrics: &mut Metrics) -> bool {
        if bytes > MAX_DATAGRAM {
            metrics.oversize += 1;
            return false;
        }
        self.bytes_by_member[from] += bytes as u64;
        metrics.bytes += bytes as u64;
        metrics.messages += 1;
        metrics.max_message = metrics.max_message.max(bytes as u64);
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn exchange(
        &mut self,
        a: usize,
        b: usize,
        now: Micros,
        rng: &mut ChaCha8Rng,
        net: &NetConfig,
        metrics: &mut Metrics,
        learned: &mut Vec<Learned>,
    ) {
        let (ga, gb) = (self.members[a], self.members[b]);
        let syn = self.cfg.syn_len(self.k);
        if !self.send(a, syn, metrics) || !self.up[b] || !net.delivers(rng, now, ga, gb) {
            return;
        }
        // b processes the SYN.
        self.hb[b * self.k + b] += 1;
        self.merge_heartbeats(a, b, now);
        let mtu = MAX_DATAGRAM.saturating_sub(HEADER_LEN + self.digest_len);
        let delta = self.delta(b, a, mtu, rng);
        if !self.send(b, HEADER_LEN + self.digest_len + delta, metrics)
            || !net.delivers(rng, now, gb, ga)
        {
            return;
        }
        // a processes the SYN-ACK.
        self.hb[a * self.k + a] += 1;
        self.merge_heartbeats(b, a, now);
        self.apply(a, now, metrics, learned);
        let delta = self.delta(a, b, MAX_DATAGRAM - HEADER_LEN, rng);
        if !self.send(a, HEADER_LEN + delta, metrics) || !net.delivers(rng, now, ga, gb) {
            return;
        }
        self.hb[b * self.k + b] += 1;
        self.apply(b, now, metrics, learned);
    }

    /// `dst` takes the larger heartbeats of `src`'s digest.
    fn merge_heartbeats(&mut self, src: usize, dst: usize, now: Micros) {
        let k = self.k;
        let mon = self.monitor_of[dst];
        let (s_row, d_row) = rows(&mut self.hb, src, dst, k);
        for s in 0..k {
            if s_row[s] > d_row[s] {
                d_row[s] = s_row[s];
                if mon != u32::MAX && s != dst {
                    let fd = &mut self.fd[mon as usize * k + s];
                    report_heartbeat(fd, now, &self.cfg);
                }
            }
        }
    }

    /// Computes the delta `src` sends `dst` within `mtu`, leaving the chosen
    /// subjects in `scratch`; returns its size in bytes.
    fn delta(&mut self, src: usize, dst: usize, mtu: usize, rng: &mut ChaCha8Rng) -> usize {
        let k = self.k;
        self.scratch.clear();
        let node_len = 1 + self.cfg.chitchat_id_len() + 16;
        let mut total = 0usize;
        let sk = &self.known[src * k..src * k + k];
        let dk = &self.known[dst * k..dst * k + k];
        for s in 0..k {
            let (have, floor) = (sk[s], dk[s]);
            if have > floor {
                let statics = STATIC_VERSIONS
                    .min(have)
                    .saturating_sub(floor.min(STATIC_VERSIONS));
                let dynamic = have > floor.max(STATIC_VERSIONS);
                let mut size = node_len;
                for i in 0..statics as usize {
                    size += self.cfg.static_kv[(floor as usize + i).min(2)];
                }
                let mut count = statics;
                if dynamic {
                    size += self.cfg.dynamic_kv[0] + self.cfg.dynamic_kv[1];
                    count += 2;
                }
                total += size;
                self.scratch.push((
                    s as u32,
                    have,
                    size as u32,
                    if floor == 0 { u32::MAX } else { count },
                ));
            }
        }
        if total <= mtu {
            return total;
        }
        // Trim as chitchat does: unknown first, then most stale KVs; ties shuffled.
        self.scratch.shuffle(rng);
        self.scratch.sort_by_key(|x| std::cmp::Reverse(x.3));
        let mut used = 0usize;
        let mut keep = 0;
        for e in &self.scratch {
            if used + e.2 as usize > mtu {
                break;
            }
            used += e.2 as usize;
            keep += 1;
        }
        self.scratch.truncate(keep);
        used
    }

    /// `dst` applies the delta left in `scratch`.
    fn apply(
        &mut self,
        dst: usize,
        now: Micros,
        metrics: &mut Metrics,
        learned: &mut Vec<Learned>,
    ) {
        let k = self.k;
        // Counted only when a tracked change needs it (most deltas carry none).
        let mut alive: Option<u32> = None;
        let watched = self.watch[dst];
        for i in 0..self.scratch.len() {
            let (s, have, _, _) = self.scratch[i];
            let s = s as usize;
            let slot = &mut self.known[dst * k + s];
            let old = *slot;
            if have <= old {
                continue;
            }
            *slot = have;
            if watched {
                learned.push(Learned::State {
                    observer: self.members[dst],
                    subject: self.members[s],
                    version: have,
                });
            }
            if self.tracked[s].is_empty() {
                continue;
            }
            let mut done = 0;
            for t in self.tracked[s].iter_mut() {
                if old < t.version && have >= t.version {
                    t.informed += 1;
                    let alive =
                        *alive.get_or_insert_with(|| self.up.iter().filter(|u| **u).count() as u32);
                    let frac = f64::from(t.informed) / f64::from(alive.max(1));
                    while (t.next_decile as usize) < 10 {
                        let need = if t.next_decile == 9 {
                            0.99
                        } else {
                            f64::from(t.next_decile + 1) / 10.0
                        };
                        if frac + 1e-9 < need {
                            break;
                        }
                        let d = &mut metrics.deciles[t.next_decile as usize];
                        d.0 += (now - t.t0) as f64 / SEC as f64;
                        d.1 += 1;
                        t.next_decile += 1;
                    }
                    if t.next_decile >= 10 {
                        metrics.convergence.record(now - t.t0);
                        t.version = u32::MAX;
                        done += 1;
                    }
                }
            }
            if done > 0 {
                self.tracked[s].retain(|t| t.version != u32::MAX);
                self.n_tracked -= done;
            }
        }
    }

    fn update_liveness(
        &mut self,
        local: usize,
        now: Micros,
        metrics: &mut Metrics,
        learned: &mut Vec<Learned>,
    ) {
        let k = self.k;
        let m = self.monitor_of[local] as usize;
        let mut changed = false;
        for s in 0..k {
            if s == local {
                continue;
            }
            let fd = &mut self.fd[m * k + s];
            let alive = phi_alive(fd, now, &self.cfg);
            if alive != fd.dead {
                continue;
            }
            fd.dead = !alive;
            changed = true;
            if !alive {
                fd.sum = 0.0;
                fd.n = 0;
                if let Some(t) = self.crashed_at[s] {
                    metrics.detection.record(now - t);
                }
            }
            if self.watch[local] {
                learned.push(Learned::Alive {
                    observer: self.members[local],
                    subject: self.members[s],
                    alive,
                });
            }
        }
        let designated = self.monitors.iter().copied().find(|&i| self.up[i]);
        if changed && designated == Some(local) {
            self.live.clear();
            self.dead.clear();
            for s in 0..k {
                if s == local || !self.fd[m * k + s].dead {
                    self.live.push(s as u32);
                } else {
                    self.dead.push(s as u32);
                }
            }
        }
    }
}

fn rows(v: &mut [u32], src: usize, dst: usize, k: usize) -> (&[u32], &mut [u32]) {
    if src < dst {
        let (lo, hi) = v.split_at_mut(dst * k);
        (&lo[src * k..src * k + k], &mut hi[..k])
    } else {
        let (lo, hi) = v.split_at_mut(src * k);
        (&hi[..k], &mut lo[dst * k..dst * k + k])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_limit_matches_the_digest_arithmetic() {
        let cfg = Config::cell(SEC, 6);
        let n = cfg.max_flat_members();
        assert!(cfg.syn_len(n) <= MAX_DATAGRAM && cfg.syn_len(n + 1) > MAX_DATAGRAM);
        assert!((1000..2000).contains(&n), "{n}");
    }

    #[test]
    fn a_change_spreads_in_a_few_rounds_and_a_crash_is_detected() {
        let r = flat_run(64, 6, SEC, 1);
        assert!(
            r.rounds_to_converge > 0.5 && r.rounds_to_converge < 10.0,
            "{r:?}"
        );
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let members: Vec<u32> = (0..32).collect();
        let mut g = Group::new(Config::cell(SEC, 6), members, &[true], 4);
        let (net, mut m, mut l) = (NetConfig::default(), Metrics::default(), Vec::new());
        for r in 0..60u64 {
            if r == 10 {
                g.crash(5, r * SEC);
            }
            for i in 0..32 {
                g.round(i, r * SEC + i as u64 * 1000, &mut rng, &net, &mut m, &mut l);
            }
        }
        assert!(m.detection.count() > 0);
        let secs = m.detection.quantile(0.5) as f64 / 1e6;
        assert!(secs > 2.0 && secs < 30.0, "{secs}");
        assert!(l.iter().any(|x| matches!(
            x,
            Learned::Alive {
                subject: 5,
                alive: false,
                ..
            }
        )));
    }

    #[test]
    fn oversize_syns_are_counted_not_sent() {
        let cfg = Config::cell(SEC, 6);
        let n = cfg.max_flat_members() + 10;
        let members: Vec<u32> = (0..n as u32).collect();
        let mut g = Group::new(cfg, members, &[], 1);
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut m = Metrics::default();
        g.round(
            0,
            0,
            &mut rng,
            &NetConfig::default(),
            &mut m,
            &mut Vec::new(),
        );
        assert!(m.oversize >= 3);
        assert_eq!(m.bytes, 0);
    }
}
