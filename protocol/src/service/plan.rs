//! What a service's owner does next: a pure function of the spec, the
//! instances it observes and its restart record ([`plan`]).
//!
//! The owner calls it whenever something changed and carries out the
//! result: start so many instances of the current version (through the
//! auction, like any framework's tasks), stop these. Because the plan
//! depends only on what is observed, a new owner that takes over computes
//! the same plan from the same cluster state; nothing lives only in the
//! dead owner's memory but the restart record, which the new owner rebuilds
//! from the instances' recent ends.
//!
//! The rules, in order:
//!
//! 1. An **unhealthy** instance (its node's health check failed the
//!    configured number of times in a row) is stopped; it is replaced by
//!    rule 4.
//! 2. **Surplus** instances of the current version (after a scale-down, or
//!    after a partition heals and both sides had started the full count)
//!    are stopped, least valuable first: not yet placed, then starting,
//!    then healthy; among equals the youngest, then the larger task id. The
//!    order is total and every owner computes it alike, so a heal stops the
//!    same instances whoever owns the service, with no flapping.
//! 3. Instances of an **old version** (a deployment is in progress) are
//!    stopped, least valuable first, while more than `instances` run or
//!    while new ones need room that `upgrade.max_over` does not give; a
//!    healthy old one only while the healthy count stays at or above
//!    `upgrade.min_healthy`. With the default (`min_healthy` 1.0) no
//!    healthy old instance stops before a new one is healthy in its place,
//!    so a new version that never becomes healthy leaves the old ones
//!    serving, and the deployment shows as stalled with the reason.
//! 4. **Starts**: as many instances of the current version as are missing,
//!    within `instances + max_over` in all, and not before the restart
//!    backoff allows: after n consecutive failed instances the next start
//!    waits `backoff.initial × factor^(n-1)` (at most `backoff.max`) from
//!    the last failure. The record is cleared when an instance of the
//!    current version is healthy.

use super::spec::ServiceSpec;
use super::version::Version;
use crate::ids::{NodeId, TaskId};
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::time::Duration;

/// After this many consecutive failures of the new version, a deployment
/// shows as stalled (it keeps retrying with backoff).
pub const STALL_AFTER: u32 = 3;

/// Where an instance is in its life, as its owner observes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Failed its health check the configured number of times in a row.
    Unhealthy,
    /// Submitted, not yet running on a node.
    Placing,
    /// Running, not yet healthy (in its grace period, or no result yet).
    Starting,
    /// Healthy (or, with no health check, running).
    Healthy,
    /// A stop was sent; it is ending.
    Stopping,
}

/// One instance that has not ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Its task.
    pub task: TaskId,
    /// The spec version it was started from.
    pub version: Version,
    /// Its phase.
    pub phase: Phase,
    /// When it was submitted.
    pub since: Instant,
    /// Where it runs, once placed.
    pub node: Option<NodeId>,
}

/// Recent failures of the current version (the backoff's input).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restarts {
    /// Instances of the current version that failed in a row since one was
    /// last healthy.
    pub failures: u32,
    /// When the last one failed.
    pub last_failure: Option<Instant>,
    /// Why it failed.
    pub last_reason: Option<String>,
}

impl Restarts {
    /// An instance of `version` ended; `failed` unless it finished cleanly
    /// or was stopped on purpose. Ends of another version do not count.
    pub fn note_end(&mut self, now: Instant, failed: bool, reason: Option<String>) {
        if failed {
            self.failures = self.failures.saturating_add(1);
            self.last_failure = Some(now);
            self.last_reason = reason;
        }
    }

    /// An instance of the current version is healthy: the record clears.
    pub fn note_healthy(&mut self) {
        *self = Restarts::default();
    }

    /// The earliest start the backoff allows.
    pub fn next_start(&self, spec: &ServiceSpec) -> Option<Instant> {
        let at = self.last_failure?;
        Some(at + Duration::from_millis(spec.backoff.delay_ms(self.failures)))
    }
}

/// Why an instance is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It failed its health checks (it is replaced).
    Unhealthy,
    /// More instances run than the spec asks for.
    Surplus,
    /// It runs an old version and a new one takes its place.
    Replaced,
}

impl StopReason {
    /// How `service show` words it.
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Unhealthy => "failed its health checks; replaced",
            StopReason::Surplus => "more instances ran than the service asks for",
            StopReason::Replaced => "runs an old version; replaced by the deployment",
        }
    }
}

/// The state of a service as its plan sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The count is met with healthy instances of the current version.
    Steady,
    /// Instances are being started, replaced or stopped.
    Converging,
    /// Old-version instances run beside the new ones.
    Deploying {
        /// Instances of the new version that are healthy.
        new_healthy: u32,
        /// Old-version instances left.
        old_left: u32,
    },
    /// Starts wait for the backoff.
    BackingOff {
        /// Until when.
        until: Instant,
        /// Consecutive failures.
        failures: u32,
        /// Why the last one failed.
        reason: Option<String>,
    },
    /// A deployment whose new instances keep failing: it keeps retrying
    /// with backoff and the old instances keep serving.
    Stalled {
        /// Consecutive failures of the new version.
        failures: u32,
        /// Why the last one failed.
        reason: Option<String>,
        /// Old-version instances still serving.
        old_left: u32,
    },
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Instances of the current version to start.
    pub start: u32,
    /// Instances to stop, and why.
    pub stop: Vec<(TaskId, StopReason)>,
    /// When to plan again at the latest (the backoff's end).
    pub wake: Option<Instant>,
    /// The service's state.
    pub status: Status,
}

/// Least valuable first: by phase (unhealthy, placing, starting, healthy),
/// then the youngest, then the larger task id.
fn stop_order(a: &Instance, b: &Instance) -> Ordering {
    a.phase
        .cmp(&b.phase)
        .then_with(|| b.since.cmp(&a.since))
        .then_with(|| b.task.cmp(&a.task))
}

/// The plan for `spec` at `version`, given its instances that have not
/// ended and its restart record (see the module docs).
pub fn plan(
    spec: &ServiceSpec,
    version: &Version,
    instances: &[Instance],
    restarts: &Restarts,
    now: Instant,
) -> Plan {
    let target = spec.instances;
    let min_healthy = spec.upgrade.min_healthy(target);
    let max_total = spec.upgrade.max_total(target);
    let mut stop = Vec::new();
    let mut new: Vec<&Instance> = Vec::new();
    let mut old: Vec<&Instance> = Vec::new();
    for i in instances {
        match i.phase {
            Phase::Stopping => {}
            Phase::Unhealthy => stop.push((i.task.clone(), StopReason::Unhealthy)),
            _ if i.version == *version => new.push(i),
            _ => old.push(i),
        }
    }
    stop.sort_by(|a: &(TaskId, StopReason), b| a.0.cmp(&b.0));
    // Rule 2: surplus of the current version.
    new.sort_by(|a, b| stop_order(a, b));
    let surplus = new.len().saturating_sub(target as usize);
    for i in new.drain(..surplus) {
        stop.push((i.task.clone(), StopReason::Surplus));
    }
    let healthy = |v: &[&Instance]| v.iter().filter(|i| i.phase == Phase::Healthy).count() as u32;
    let new_healthy = healthy(&new);
    // Rule 4's room, before rule 3 frees some.
    let need = target.saturating_sub(new.len() as u32);
    // Rule 3: old versions.
    old.sort_by(|a, b| stop_order(a, b));
    let mut old_healthy = healthy(&old);
    let mut live = (new.len() + old.len()) as u32;
    let mut kept_old = 0u32;
    for i in &old {
        let room = max_total.saturating_sub(live);
        let wanted = live > target || need > room;
        let may = i.phase != Phase::Healthy || old_healthy - 1 + new_healthy >= min_healthy;
        if wanted && may {
            if i.phase == Phase::Healthy {
                old_healthy -= 1;
            }
            live -= 1;
            stop.push((i.task.clone(), StopReason::Replaced));
        } else {
            kept_old += 1;
        }
    }
    // Rule 4: starts, within the over-capacity and the backoff.
    let room = max_total.saturating_sub(live);
    let mut start = need.min(room);
    let mut wake = None;
    let held = restarts.next_start(spec).filter(|t| now < *t);
    if let Some(until) = held {
        if start > 0 {
            wake = Some(until);
        }
        start = 0;
    }
    let status = if kept_old > 0 && restarts.failures >= STALL_AFTER {
        Status::Stalled {
            failures: restarts.failures,
            reason: restarts.last_reason.clone(),
            old_left: kept_old,
        }
    } else if let (Some(until), Some(_)) = (held, wake) {
        Status::BackingOff {
            until,
            failures: restarts.failures,
            reason: restarts.last_reason.clone(),
        }
    } else if kept_old > 0 || old.len() > kept_old as usize {
        Status::Deploying {
            new_healthy,
            old_left: kept_old,
        }
    } else if stop.is_empty() && start == 0 && new_healthy == target {
        Status::Steady
    } else {
        Status::Converging
    };
    Plan {
        start,
        stop,
        wake,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;
    use crate::service::spec::UpgradeStrategy;
    use crate::service::version::Stamp;
    use crate::task::Command;

    fn ver(s: u64) -> Version {
        Version {
            stamp: Stamp(s),
            writer: NodeId::new("w").unwrap(),
        }
    }

    fn spec(instances: u32) -> ServiceSpec {
        let mut s = ServiceSpec::new(
            "web",
            Command::Shell("serve".into()),
            Resources::cpu_mem(100, 16),
        );
        s.instances = instances;
        s
    }

    fn inst(n: u32, version: u64, phase: Phase) -> Instance {
        Instance {
            task: TaskId::new(format!("svc.{n}")).unwrap(),
            version: ver(version),
            phase,
            since: Instant::from_millis(u64::from(n) * 1000),
            node: None,
        }
    }

    fn stopped(p: &Plan) -> Vec<(String, StopReason)> {
        p.stop
            .iter()
            .map(|(t, r)| (t.as_str().to_string(), *r))
            .collect()
    }

    const NOW: Instant = Instant::from_millis(100_000);

    #[test]
    fn a_new_service_starts_its_count_and_is_steady_when_healthy() {
        let s = spec(3);
        let p = plan(&s, &ver(1), &[], &Restarts::default(), NOW);
        assert_eq!((p.start, p.stop.len()), (3, 0));
        assert_eq!(p.status, Status::Converging);
        let all: Vec<Instance> = (1..=3).map(|n| inst(n, 1, Phase::Healthy)).collect();
        let p = plan(&s, &ver(1), &all, &Restarts::default(), NOW);
        assert_eq!((p.start, p.stop.len(), p.status), (0, 0, Status::Steady));
    }

    #[test]
    fn an_unhealthy_instance_is_stopped_and_replaced_and_a_lost_one_replaced() {
        let s = spec(3);
        let mut is = vec![
            inst(1, 1, Phase::Healthy),
            inst(2, 1, Phase::Unhealthy),
            inst(3, 1, Phase::Healthy),
        ];
        let p = plan(&s, &ver(1), &is, &Restarts::default(), NOW);
        assert_eq!(stopped(&p), [("svc.2".to_string(), StopReason::Unhealthy)]);
        assert_eq!(p.start, 1, "replaced at once");
        // Its node died: it is gone from the instances, and replaced.
        is.remove(1);
        let p = plan(&s, &ver(1), &is, &Restarts::default(), NOW);
        assert_eq!((p.start, p.stop.len()), (1, 0));
    }

    #[test]
    fn after_a_partition_heals_the_surplus_goes_by_one_rule_and_the_rest_stay() {
        // Both sides ran 3: six healthy instances of the current version.
        let s = spec(3);
        let mut is: Vec<Instance> = (1..=6).map(|n| inst(n, 1, Phase::Healthy)).collect();
        is[0].phase = Phase::Starting;
        let p = plan(&s, &ver(1), &is, &Restarts::default(), NOW);
        // The starting one first, then the youngest healthy.
        let names: Vec<String> = stopped(&p).into_iter().map(|(t, _)| t).collect();
        assert_eq!(names, ["svc.1", "svc.6", "svc.5"]);
        assert!(p.stop.iter().all(|(_, r)| *r == StopReason::Surplus));
        assert_eq!(p.start, 0);
        // The order given does not matter: a new owner plans the same.
        let mut rev = is.clone();
        rev.reverse();
        assert_eq!(
            plan(&s, &ver(1), &rev, &Restarts::default(), NOW).stop,
            p.stop
        );
        // Once they are stopping, nothing more is stopped (no flapping).
        for i in &mut is {
            if p.stop.iter().any(|(t, _)| *t == i.task) {
                i.phase = Phase::Stopping;
            }
        }
        let again = plan(&s, &ver(1), &is, &Restarts::default(), NOW);
        assert_eq!(
            (again.start, again.stop.len(), again.status),
            (0, 0, Status::Steady)
        );
    }

    #[test]
    fn a_rolling_upgrade_never_drops_below_the_healthy_minimum() {
        // 6 instances, all must stay healthy, one extra at a time.
        let mut s = spec(6);
        s.upgrade = UpgradeStrategy {
            min_healthy_milli: 1000,
            max_over_milli: 0,
        };
        let mut is: Vec<Instance> = (1..=6).map(|n| inst(n, 1, Phase::Healthy)).collect();
        let v2 = ver(2);
        let mut next = 7;
        let mut min_seen = u32::MAX;
        for _ in 0..40 {
            let p = plan(&s, &v2, &is, &Restarts::default(), NOW);
            // Carry the plan out: stops take effect, starts begin placing.
            is.retain(|i| !p.stop.iter().any(|(t, _)| *t == i.task));
            for _ in 0..p.start {
                is.push(inst(next, 2, Phase::Placing));
                next += 1;
            }
            let healthy = is.iter().filter(|i| i.phase == Phase::Healthy).count() as u32;
            min_seen = min_seen.min(healthy);
            assert!(is.len() <= 7, "over capacity: {}", is.len());
            if p.status == Status::Steady {
                break;
            }
            // New instances become healthy one step at a time.
            for i in &mut is {
                i.phase = match i.phase {
                    Phase::Placing => Phase::Starting,
                    Phase::Starting => Phase::Healthy,
                    p => p,
                };
            }
        }
        assert_eq!(min_seen, 6, "never fewer than 6 healthy");
        assert_eq!(is.len(), 6);
        assert!(
            is.iter()
                .all(|i| i.version == v2 && i.phase == Phase::Healthy)
        );
    }

    #[test]
    fn a_new_version_that_never_gets_healthy_stalls_with_the_old_ones_serving() {
        let s = spec(3);
        let old: Vec<Instance> = (1..=3).map(|n| inst(n, 1, Phase::Healthy)).collect();
        let v2 = ver(2);
        // The first try starts new instances beside the old (max_over 1.0).
        let p = plan(&s, &v2, &old, &Restarts::default(), NOW);
        assert_eq!((p.start, p.stop.len()), (3, 0));
        // They keep crashing: three failures in a row.
        let mut r = Restarts::default();
        for k in 0..3 {
            r.note_end(
                NOW + Duration::from_secs(k),
                true,
                Some("exited with 1".into()),
            );
        }
        let p = plan(&s, &v2, &old, &r, NOW + Duration::from_secs(2));
        assert_eq!(p.stop, vec![], "no healthy old instance is stopped");
        assert_eq!(
            p.status,
            Status::Stalled {
                failures: 3,
                reason: Some("exited with 1".into()),
                old_left: 3
            }
        );
        // Starts wait for the backoff (1 s × 1.15² from the last failure).
        assert_eq!(p.start, 0);
        assert_eq!(p.wake, Some(NOW + Duration::from_millis(2000 + 1322)));
        let later = plan(&s, &v2, &old, &r, NOW + Duration::from_secs(4));
        assert_eq!(later.start, 3, "retried after the backoff");
    }

    #[test]
    fn with_a_lower_minimum_an_upgrade_without_spare_room_stops_old_ones_first() {
        let mut s = spec(4);
        s.upgrade = UpgradeStrategy {
            min_healthy_milli: 500,
            max_over_milli: 0,
        };
        let old: Vec<Instance> = (1..=4).map(|n| inst(n, 1, Phase::Healthy)).collect();
        let p = plan(&s, &ver(2), &old, &Restarts::default(), NOW);
        // Two may go at once (4 × 0.5 stay healthy), making room for two.
        assert_eq!(p.stop.len(), 2);
        assert!(p.stop.iter().all(|(_, r)| *r == StopReason::Replaced));
        assert_eq!(p.start, 2);
        assert_eq!(
            p.status,
            Status::Deploying {
                new_healthy: 0,
                old_left: 2
            }
        );
    }

    #[test]
    fn a_crashing_service_backs_off_and_a_healthy_instance_clears_the_record() {
        let s = spec(1);
        let mut r = Restarts::default();
        let mut waits = Vec::new();
        let mut t = NOW;
        for _ in 0..4 {
            r.note_end(t, true, Some("exited with 2".into()));
            let p = plan(&s, &ver(1), &[], &r, t);
            assert_eq!(p.start, 0);
            let Status::BackingOff {
                until, failures, ..
            } = p.status
            else {
                panic!("{:?}", p.status)
            };
            assert_eq!(failures, waits.len() as u32 + 1);
            waits.push((until - t).as_millis());
            assert_eq!(plan(&s, &ver(1), &[], &r, until).start, 1);
            t = until + Duration::from_secs(1);
        }
        assert_eq!(
            waits,
            [1000, 1150, 1322, 1520],
            "grows by 1.15 each failure"
        );
        r.note_healthy();
        assert_eq!(plan(&s, &ver(1), &[], &r, t).start, 1);
        assert_eq!(r, Restarts::default());
    }

    #[test]
    fn scaling_down_stops_the_least_valuable_first() {
        let s = spec(2);
        let is = vec![
            inst(1, 1, Phase::Healthy),
            inst(2, 1, Phase::Placing),
            inst(3, 1, Phase::Healthy),
            inst(4, 1, Phase::Starting),
        ];
        let p = plan(&s, &ver(1), &is, &Restarts::default(), NOW);
        let names: Vec<String> = stopped(&p).into_iter().map(|(t, _)| t).collect();
        assert_eq!(names, ["svc.2", "svc.4"]);
    }
}
