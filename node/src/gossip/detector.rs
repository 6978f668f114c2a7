//! The failure detector behind [`super::Member::alive`] (sans-IO: every
//! input carries its time, so the tests drive it with a virtual clock).
//!
//! Chitchat has its own phi-accrual detector, but it only re-judges its
//! members once per gossip round, needs two heartbeats of a member before it
//! holds it alive, and waits 8 mean heartbeat gaps of silence before it
//! declares it dead (8.7–10.6 s at 32 agents with a 1 s round). This one
//! reads chitchat's heartbeats at every driver poll instead:
//!
//! - **Joining → alive**: a member first seen is *joining* (not alive: it
//!   may be an old incarnation that gossip still carries); the first time
//!   its heartbeat advances while this node watches, it is alive.
//! - **Suspect → probed**: a live member silent (no heartbeat advance) for
//!   longer than its *suspicion timeout* — [`SUSPECT_PHI`] times its mean
//!   gap between advances, clamped to 2–8 gossip intervals and at least
//!   [`MIN_SUSPECT`] — is suspect: the
//!   driver sends it a gossip exchange directly (a probe, as SWIM does) so
//!   that a live member answers with its current heartbeat whatever gossip's
//!   random peer choice did, at most [`PROBES_PER_WINDOW`] times.
//! - **Dead**: still silent one more gossip interval (at least
//!   [`MIN_WINDOW`]) after that (the probe window), it is dead. A later
//!   advance brings it back to alive.
//!
//! **Local health** (Lifeguard, Dadgar et al. 2018): a node that is itself
//! late — its own driver tick runs well after it was due (CPU starvation, a
//! paused process), or it hears no advance from any of several live members
//! at once — would otherwise read its own slowness as everyone else's
//! death. Each late tick raises a local health score (0 to
//! [`MAX_HEALTH`]; by the lateness, in [`LATE_TICK`] steps) and every
//! threshold above is multiplied by `1 + score`; the score falls by one per
//! [`HEALTH_DECAY`] without a late tick. A late tick also passes no verdict
//! at all, since the heartbeats that arrived meanwhile may still sit unread
//! in the socket.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Suspicion timeout, in mean gaps between heartbeat advances.
pub const SUSPECT_PHI: f64 = 4.0;
/// The suspicion timeout is never shorter than this, however short the
/// gossip interval (at 200 ms a shorter one would call members dead after
/// a few lost datagrams).
pub const MIN_SUSPECT: Duration = Duration::from_secs(1);
/// The probe window is never shorter than this.
pub const MIN_WINDOW: Duration = Duration::from_millis(500);
/// Gaps kept per member for its mean.
const GAP_WINDOW: usize = 64;
/// Weight of the prior gap (half a gossip interval) in a member's mean.
const PRIOR_WEIGHT: f64 = 4.0;
/// Probes sent to a suspect member during its probe window.
pub const PROBES_PER_WINDOW: u32 = 3;
/// The most probes one poll sends (the rest wait for the next poll).
pub const MAX_PROBES_PER_POLL: usize = 8;
/// Highest local health score (thresholds grow to 9 times their value).
pub const MAX_HEALTH: u32 = 8;
/// A driver tick later than this counts against local health (one point
/// per step of lateness beyond the first). The driver ticks every 50 ms; on
/// a loaded 2-core machine running 32 agents its ticks are late by tens of
/// milliseconds, not by this much.
pub const LATE_TICK: Duration = Duration::from_millis(100);
/// Time without a late tick that lowers local health by one.
pub const HEALTH_DECAY: Duration = Duration::from_secs(1);

/// Where a member stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Seen, but its heartbeat has not advanced since.
    Joining,
    /// Its heartbeat advanced recently enough.
    Alive,
    /// Silent past its suspicion timeout and probe window.
    Dead,
}

struct Track {
    heartbeat: u64,
    last_advance: Instant,
    gaps: VecDeque<f64>,
    gap_sum: f64,
    liveness: Liveness,
    probes: u32,
    last_probe: Option<Instant>,
}

/// The detector: one track per member (the caller's key), and this node's
/// local health.
pub struct Detector<K> {
    interval: Duration,
    tracks: HashMap<K, Track>,
    health: u32,
    last_late: Option<Instant>,
    late_now: bool,
    last_any_advance: Option<Instant>,
    last_drought_step: Option<Instant>,
}

impl<K: Eq + Hash + Clone> Detector<K> {
    /// A detector for a cluster gossiping every `interval`.
    pub fn new(interval: Duration) -> Self {
        Detector {
            interval: interval.max(Duration::from_millis(1)),
            tracks: HashMap::new(),
            health: 0,
            last_late: None,
            late_now: false,
            last_any_advance: None,
            last_drought_step: None,
        }
    }

    /// Gossip holds `heartbeat` for member `key` at `now` (called for every
    /// member at every poll; only a larger value than before is news).
    pub fn handle_heartbeat(&mut self, key: &K, heartbeat: u64, now: Instant) {
        let ceiling = self.interval.as_secs_f64() * 8.0;
        let Some(t) = self.tracks.get_mut(key) else {
            self.tracks.insert(
                key.clone(),
                Track {
                    heartbeat,
                    last_advance: now,
                    gaps: VecDeque::with_capacity(GAP_WINDOW),
                    gap_sum: 0.0,
                    liveness: Liveness::Joining,
                    probes: 0,
                    last_probe: None,
                },
            );
            return;
        };
        if heartbeat <= t.heartbeat {
            return;
        }
        if t.liveness == Liveness::Alive {
            let gap = now
                .saturating_duration_since(t.last_advance)
                .as_secs_f64()
                .min(ceiling);
            if t.gaps.len() == GAP_WINDOW
                && let Some(old) = t.gaps.pop_front()
            {
                t.gap_sum -= old;
            }
            t.gaps.push_back(gap);
            t.gap_sum += gap;
        }
        t.heartbeat = heartbeat;
        t.last_advance = now;
        t.liveness = Liveness::Alive;
        t.probes = 0;
        t.last_probe = None;
        self.last_any_advance = Some(now);
    }

    /// The driver's tick that was due at `due` ran at `now`: updates local
    /// health.
    pub fn handle_tick(&mut self, due: Instant, now: Instant) {
        let lag = now.saturating_duration_since(due);
        self.late_now = lag > LATE_TICK;
        if self.late_now {
            let steps = (lag.as_secs_f64() / LATE_TICK.as_secs_f64()).ceil() as u32;
            self.raise_health(steps.saturating_sub(1).max(1), now);
            return;
        }
        // Several live members silent at once: more likely this node is the
        // one that stopped hearing (starved or cut off) than all of them.
        let alive = self
            .tracks
            .values()
            .filter(|t| t.liveness == Liveness::Alive)
            .count();
        let floor = Duration::from_secs_f64(self.bounds().0);
        let drought = self
            .last_any_advance
            .is_some_and(|t| now.saturating_duration_since(t) > floor);
        if alive >= 2
            && drought
            && self
                .last_drought_step
                .is_none_or(|t| now.saturating_duration_since(t) >= floor)
        {
            self.last_drought_step = Some(now);
            self.raise_health(1, now);
            return;
        }
        if self.health > 0
            && self
                .last_late
                .is_none_or(|t| now.saturating_duration_since(t) >= HEALTH_DECAY)
        {
            self.health -= 1;
            self.last_late = Some(now);
        }
    }

    fn raise_health(&mut self, by: u32, now: Instant) {
        self.health = (self.health + by).min(MAX_HEALTH);
        self.last_late = Some(now);
    }

    /// Passes verdicts at `now` and returns the members to probe (at most
    /// [`MAX_PROBES_PER_POLL`]). A late tick passes none.
    pub fn poll_probes(&mut self, now: Instant) -> Vec<K> {
        let mut probes = Vec::new();
        if self.late_now {
            return probes;
        }
        let scale = f64::from(1 + self.health);
        let window = self.window_secs() * scale;
        let (floor, ceiling, prior) = self.bounds();
        for (key, t) in &mut self.tracks {
            if t.liveness != Liveness::Alive {
                continue;
            }
            let suspect = suspect_secs(t, floor, ceiling, prior) * scale;
            let silence = now.saturating_duration_since(t.last_advance).as_secs_f64();
            if silence > suspect + window {
                t.liveness = Liveness::Dead;
                continue;
            }
            let spacing = window / f64::from(PROBES_PER_WINDOW);
            let due = t
                .last_probe
                .is_none_or(|p| now.saturating_duration_since(p).as_secs_f64() >= spacing);
            if silence > suspect
                && t.probes < PROBES_PER_WINDOW
                && due
                && probes.len() < MAX_PROBES_PER_POLL
            {
                t.probes += 1;
                t.last_probe = Some(now);
                probes.push(key.clone());
            }
        }
        probes
    }

    /// The suspicion timeout's floor and ceiling, and the prior mean gap.
    fn bounds(&self) -> (f64, f64, f64) {
        let i = self.interval.as_secs_f64();
        let floor = (2.0 * i).max(MIN_SUSPECT.as_secs_f64());
        (floor, (8.0 * i).max(floor), i / 2.0)
    }

    /// The probe window before local health.
    fn window_secs(&self) -> f64 {
        self.interval.as_secs_f64().max(MIN_WINDOW.as_secs_f64())
    }

    /// Where `key` stands (`None`: never seen, or forgotten).
    pub fn liveness(&self, key: &K) -> Option<Liveness> {
        self.tracks.get(key).map(|t| t.liveness)
    }

    /// Whether `key` is alive.
    pub fn is_alive(&self, key: &K) -> bool {
        self.liveness(key) == Some(Liveness::Alive)
    }

    /// The silence after which `key` is suspect, local health included.
    pub fn suspicion_timeout(&self, key: &K) -> Option<Duration> {
        let t = self.tracks.get(key)?;
        let (floor, ceiling, prior) = self.bounds();
        let secs = suspect_secs(t, floor, ceiling, prior) * f64::from(1 + self.health);
        Duration::try_from_secs_f64(secs).ok()
    }

    /// This node's local health score (0: healthy; up to [`MAX_HEALTH`]).
    pub fn local_health(&self) -> u32 {
        self.health
    }

    /// Forgets the members `keep` says no.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.tracks.retain(|k, _| keep(k));
    }
}

fn suspect_secs(t: &Track, floor: f64, ceiling: f64, prior: f64) -> f64 {
    let mean = (t.gap_sum + PRIOR_WEIGHT * prior) / (t.gaps.len() as f64 + PRIOR_WEIGHT);
    (SUSPECT_PHI * mean).clamp(floor, ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_millis(500);
    const POLL: Duration = Duration::from_millis(50);

    /// A virtual clock and a detector polled every [`POLL`], with member
    /// `beating` advancing its heartbeat every `every` polls.
    struct Sim {
        d: Detector<&'static str>,
        t0: Instant,
        now: Instant,
        beats: HashMap<&'static str, u64>,
        probes: Vec<(&'static str, Duration)>,
    }

    impl Sim {
        fn new() -> Self {
            let t0 = Instant::now();
            Sim {
                d: Detector::new(I),
                t0,
                now: t0,
                beats: HashMap::new(),
                probes: Vec::new(),
            }
        }

        /// One poll at the due time plus `lag`; members in `beating`
        /// advance their heartbeat first.
        fn poll(&mut self, lag: Duration, beating: &[&'static str]) {
            let due = self.now + POLL;
            self.now = due + lag;
            for m in beating {
                *self.beats.entry(m).or_insert(0) += 1;
            }
            for (m, hb) in &self.beats {
                self.d.handle_heartbeat(m, *hb, self.now);
            }
            self.d.handle_tick(due, self.now);
            for p in self.d.poll_probes(self.now) {
                self.probes.push((p, self.now - self.t0));
            }
        }

        fn run(&mut self, polls: u32, beating: &[&'static str]) {
            for _ in 0..polls {
                self.poll(Duration::ZERO, beating);
            }
        }

        /// Polls (with the others beating) until `m` is dead; the time it took.
        fn until_dead(&mut self, m: &'static str, others: &[&'static str]) -> Duration {
            let start = self.now;
            for _ in 0..10_000 {
                if self.d.liveness(&m) == Some(Liveness::Dead) {
                    return self.now - start;
                }
                self.poll(Duration::ZERO, others);
            }
            panic!("{m} never declared dead");
        }
    }

    #[test]
    fn a_member_is_joining_until_its_heartbeat_advances_then_alive() {
        let mut s = Sim::new();
        s.d.handle_heartbeat(&"old", 7, s.now);
        s.run(1, &["a"]);
        assert_eq!(s.d.liveness(&"a"), Some(Liveness::Joining));
        // An old incarnation gossip still carries never advances: never alive,
        // and never probed.
        s.run(100, &["a"]);
        assert_eq!(s.d.liveness(&"old"), Some(Liveness::Joining));
        assert!(s.probes.iter().all(|(m, _)| *m != "old"));
        assert!(s.d.is_alive(&"a"));
    }

    #[test]
    fn a_silent_member_is_probed_then_dead_after_its_timeout_and_window() {
        let mut s = Sim::new();
        // Advances every poll (50 ms gaps): the timeout sits at its floor.
        s.run(200, &["a", "b", "c"]);
        assert_eq!(s.d.suspicion_timeout(&"a"), Some(I * 2));
        let took = s.until_dead("a", &["b", "c"]);
        // Dead after 2 intervals of silence plus one of probing, to a poll.
        assert!(took >= I * 3 && took <= I * 3 + POLL * 2, "{took:?}");
        let probes: Vec<_> = s.probes.iter().filter(|(m, _)| *m == "a").collect();
        assert_eq!(probes.len(), PROBES_PER_WINDOW as usize, "{probes:?}");
        assert!(s.d.is_alive(&"b") && s.d.is_alive(&"c"));
        // Its heartbeat moves again (it was only cut off): alive again.
        s.run(1, &["a", "b", "c"]);
        assert!(s.d.is_alive(&"a"));
    }

    #[test]
    fn an_answered_probe_keeps_the_member_alive() {
        let mut s = Sim::new();
        s.run(200, &["a", "b"]);
        // Gossip stops carrying a's heartbeat for 1.2 s, but a answers the
        // first probe: no verdict.
        s.run(24, &["b"]);
        assert!(s.probes.iter().any(|(m, _)| *m == "a"));
        assert!(s.d.is_alive(&"a"));
        s.run(1, &["a", "b"]);
        assert!(s.d.is_alive(&"a"));
    }

    #[test]
    fn a_member_with_sparse_heartbeats_gets_a_longer_timeout() {
        let mut s = Sim::new();
        for _ in 0..100 {
            s.run(1, &["a", "b"]);
            s.run(9, &["b"]);
        }
        // Mean gap about 0.49 s (the prior of 0.25 s weighs 4 of 68): 4 of
        // them, 1.94 s, within the 1 to 4 s bounds.
        let t = s.d.suspicion_timeout(&"a").unwrap();
        assert!((1.9..2.0).contains(&t.as_secs_f64()), "{t:?}");
        assert!(s.d.is_alive(&"a"));
    }

    #[test]
    fn a_starved_node_raises_its_thresholds_instead_of_declaring_peers_dead() {
        // The old behaviour, without local health: a 2 s stall of this node's
        // own loop, during which nobody's heartbeat was read, is 2 s of
        // silence; the next heartbeats were still unread in the socket.
        let mut s = Sim::new();
        s.run(200, &["a", "b", "c"]);
        // This node is starved: its ticks run 1 s late, three times in a row,
        // and no heartbeat is read meanwhile.
        for _ in 0..3 {
            s.poll(Duration::from_secs(1), &[]);
            assert!(s.d.is_alive(&"a") && s.d.is_alive(&"b"));
        }
        assert!(s.d.local_health() >= 6, "{}", s.d.local_health());
        // On time again, the heartbeats that waited arrive: nobody was dead.
        s.run(1, &["a", "b", "c"]);
        assert!(["a", "b", "c"].iter().all(|m| s.d.is_alive(m)));
        assert!(s.probes.is_empty(), "{:?}", s.probes);
        // Health recovers one step per second; a real death is then seen in
        // the healthy time again.
        s.run(200, &["a", "b", "c"]);
        assert_eq!(s.d.local_health(), 0);
        assert!(s.until_dead("a", &["b", "c"]) <= I * 3 + POLL * 2);
    }

    #[test]
    fn hearing_no_one_raises_local_health() {
        let mut s = Sim::new();
        s.run(200, &["a", "b", "c"]);
        // Every member goes silent at once (this node is cut off): the
        // thresholds grow while the silence lasts, so verdicts come later
        // than the 1.5 s a single death takes.
        let took = s.until_dead("a", &[]);
        assert!(s.d.local_health() >= 1);
        assert!(took > I * 3 + POLL * 2, "{took:?}");
        // A single dead member among live ones raises nothing.
        let mut s = Sim::new();
        s.run(200, &["a", "b", "c"]);
        s.until_dead("a", &["b", "c"]);
        assert_eq!(s.d.local_health(), 0);
    }

    #[test]
    fn a_short_gossip_interval_keeps_the_one_second_floor() {
        let mut s = Sim::new();
        s.d = Detector::new(Duration::from_millis(200));
        s.run(200, &["a", "b", "c"]);
        assert_eq!(s.d.suspicion_timeout(&"a"), Some(MIN_SUSPECT));
        let took = s.until_dead("a", &["b", "c"]);
        assert!(
            took >= MIN_SUSPECT + MIN_WINDOW && took <= MIN_SUSPECT + MIN_WINDOW + POLL * 2,
            "{took:?}"
        );
    }

    #[test]
    fn probes_per_poll_are_bounded() {
        let mut s = Sim::new();
        let names: Vec<&'static str> = (0..40)
            .map(|i| &*Box::leak(format!("m{i}").into_boxed_str()))
            .collect();
        s.run(100, &names);
        // All but one fall silent at once (one still beating, so this node
        // does not take the silence for its own).
        s.run(22, &names[..1]);
        let per_poll = s.probes.iter().fold(HashMap::new(), |mut acc, (_, t)| {
            *acc.entry(*t).or_insert(0) += 1;
            acc
        });
        assert!(per_poll.values().all(|&n| n <= MAX_PROBES_PER_POLL));
        assert!(!per_poll.is_empty());
    }
}
