//! Properties of the service plan (protocol::service::plan) over random
//! instance sets: it never stops healthy instances below the floor the
//! spec allows, never starts past the over-capacity, never keeps more than
//! the count of the current version, and does not depend on the order the
//! instances are listed in (so every owner plans alike).

use agora_protocol::service::{
    Instance, Phase, Restarts, ServiceSpec, Stamp, StopReason, UpgradeStrategy, Version, plan,
};
use agora_protocol::task::Command;
use agora_protocol::{Instant, NodeId, Resources, TaskId};
use proptest::prelude::*;

fn phase(k: u8) -> Phase {
    [
        Phase::Unhealthy,
        Phase::Placing,
        Phase::Starting,
        Phase::Healthy,
        Phase::Stopping,
    ][k as usize % 5]
}

proptest! {
    #[test]
    fn plans_keep_the_floor_and_the_cap_whatever_the_order(
        target in 0u32..12,
        min_milli in 0u32..=1000,
        over_milli in 0u32..=1000,
        raw in proptest::collection::vec((0u8..5, 0u64..3, 0u64..50), 0..30),
        seed in any::<u64>(),
    ) {
        let mut spec = ServiceSpec::new("svc", Command::Shell("x".into()), Resources::cpu_mem(1, 1));
        spec.instances = target;
        spec.upgrade = UpgradeStrategy { min_healthy_milli: min_milli, max_over_milli: over_milli };
        let version = |s: u64| Version { stamp: Stamp(s), writer: NodeId::new("w").unwrap() };
        let current = version(2);
        let instances: Vec<Instance> = raw
            .iter()
            .enumerate()
            .map(|(i, (p, v, since))| Instance {
                task: TaskId::new(format!("svc.{i}")).unwrap(),
                version: version(*v),
                phase: phase(*p),
                since: Instant::from_millis(*since),
                node: None,
            })
            .collect();
        let now = Instant::from_millis(1_000_000);
        let p = plan(&spec, &current, &instances, &Restarts::default(), now);
        // Same plan whatever the order.
        let mut shuffled = instances.clone();
        let k = (seed as usize) % (shuffled.len().max(1));
        shuffled.rotate_left(k);
        shuffled.reverse();
        prop_assert_eq!(&plan(&spec, &current, &shuffled, &Restarts::default(), now), &p);

        let stopped = |i: &Instance| p.stop.iter().any(|(t, _)| *t == i.task);
        let healthy_before = instances.iter().filter(|i| i.phase == Phase::Healthy).count() as u32;
        let healthy_after = instances
            .iter()
            .filter(|i| i.phase == Phase::Healthy && !stopped(i))
            .count() as u32;
        // Healthy instances are only stopped as surplus of the current
        // version or down to the floor.
        let floor = spec.upgrade.min_healthy(target).min(healthy_before);
        prop_assert!(healthy_after >= floor.min(target), "healthy {healthy_before} -> {healthy_after}, floor {floor}");
        // Nothing stopping is stopped again; unhealthy ones always are.
        for i in &instances {
            if i.phase == Phase::Stopping { prop_assert!(!stopped(i)); }
            if i.phase == Phase::Unhealthy {
                prop_assert!(p.stop.contains(&(i.task.clone(), StopReason::Unhealthy)));
            }
        }
        // Never more of the current version than the count, and starts stay
        // within the over-capacity.
        let live_after = instances
            .iter()
            .filter(|i| !matches!(i.phase, Phase::Stopping | Phase::Unhealthy) && !stopped(i))
            .count() as u32;
        let current_after = instances
            .iter()
            .filter(|i| i.version == current && !matches!(i.phase, Phase::Stopping | Phase::Unhealthy) && !stopped(i))
            .count() as u32;
        prop_assert!(current_after + p.start <= target);
        if p.start > 0 {
            prop_assert!(live_after + p.start <= spec.upgrade.max_total(target));
        }
    }
}
