//! Fixed-seed unit tests of placement constraints and failure reasons: the
//! job tally (`unique` and `spread` count tasks with bids in flight as well
//! as placed ones), `spread` choosing the job's least-used value, reasons
//! that name the constraint that excluded nodes, and tasks that no node
//! could ever hold failing after the grace. Each asserts on what the bidder
//! emits, on a virtual clock.

mod units;

use agora_protocol::bidder::{self, Bidder, Event as BEvent};
use agora_protocol::constraint::Attributes;
use agora_protocol::ids::{LeaseId, NodeId, TaskId};
use agora_protocol::resources::Resources;
use agora_protocol::task::{Command, TaskSpec, TaskState};
use agora_protocol::time::Instant;
use agora_protocol::view::{ClusterView, NodeInfo};
use agora_protocol::wire::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use units::{bidder_with, events, fw, ms, n, sent};

/// The reason of the first `failed` status the bidder reported.
fn failure_reason(b: &mut Bidder<ChaCha8Rng>) -> String {
    events(b)
        .into_iter()
        .find_map(|e| match e {
            BEvent::Status { status, .. } if status.state == TaskState::Failed => status.reason,
            _ => None,
        })
        .expect("a failed status with a reason")
}

/// A view of idle nodes: (id, cpus in millis, attributes as KEY=VALUE).
fn labelled(nodes: &[(&str, u64, &[&str])]) -> ClusterView {
    let mut v = ClusterView::new();
    for (id, cpu, labels) in nodes {
        let mut attrs = Attributes::default();
        attrs.insert("hostname", *id);
        for l in *labels {
            let (k, val) = Attributes::parse_label(l).unwrap();
            attrs.insert(k, val);
        }
        v.upsert(NodeInfo::new(n(id), Resources::cpu_mem(*cpu, 8192), attrs));
    }
    v
}

fn constrained(name: &str, cpu: u64, constraints: &[&str]) -> TaskSpec {
    let mut s = TaskSpec::new(
        name,
        Command::Shell("true".into()),
        Resources::cpu_mem(cpu, 0),
    );
    s.constraints = constraints.iter().map(|c| c.parse().unwrap()).collect();
    s
}

/// Every bid sent: (task, node, bid).
fn bids_sent(b: &mut Bidder<ChaCha8Rng>) -> Vec<(TaskId, NodeId, Bid)> {
    sent(b)
        .into_iter()
        .filter_map(|t| match t.msg {
            PeerMessage::Bid(x) => Some((x.task_id.clone(), t.to, x)),
            _ => None,
        })
        .collect()
}

/// Answers `bid` with an award and the award's confirm with `Confirmed`.
fn place(b: &mut Bidder<ChaCha8Rng>, v: &mut ClusterView, at: Instant, node: &NodeId, x: &Bid) {
    let lease = LeaseId(1000 + x.bid_id.0);
    b.handle_message(
        at,
        node.clone(),
        PeerMessage::Award(Award {
            bid_id: x.bid_id,
            task_id: x.task_id.clone(),
            lease_id: lease,
            lease_ms: 3000,
            ports: vec![],
        }),
        v,
    )
    .unwrap();
    b.handle_message(
        at,
        node.clone(),
        PeerMessage::Confirmed(Confirmed {
            lease_id: lease,
            task_id: x.task_id.clone(),
        }),
        v,
    )
    .unwrap();
}

/// Runs the bidder's timers until it has none left or `until`, answering
/// nothing; returns the time of the last one run.
fn run_timers(b: &mut Bidder<ChaCha8Rng>, v: &mut ClusterView, until: Instant) -> Instant {
    let mut t = ms(0);
    while let Some(next) = b.poll_timeout() {
        if next > until {
            break;
        }
        t = next;
        b.handle_timeout(t, v);
    }
    t
}

/// Like `run_timers`, but every bid is rejected by its node with the free
/// vector `free` gives for it.
fn run_rejecting(
    b: &mut Bidder<ChaCha8Rng>,
    v: &mut ClusterView,
    until: Instant,
    free: impl Fn(&NodeId) -> Resources,
) {
    let mut version = 100;
    while let Some(t) = b.poll_timeout() {
        if t > until {
            break;
        }
        b.handle_timeout(t, v);
        for (task_id, node, x) in bids_sent(b) {
            version += 1;
            let r = Reject {
                bid_id: x.bid_id,
                task_id,
                reason: RejectReason::Insufficient(vec![]),
                free: free(&node),
                free_version: version,
            };
            b.handle_message(t, node, PeerMessage::Reject(r), v)
                .unwrap();
        }
    }
}

fn rack_of<'a>(v: &'a ClusterView, node: &NodeId) -> &'a str {
    v.get(node).unwrap().attrs.get("rack").unwrap()
}

#[test]
fn spread_puts_each_next_task_of_a_job_on_its_least_used_value() {
    // An idle 3-rack cluster, the home node in one of the racks, two nodes
    // per rack, the default two bids per task.
    let mut v = labelled(&[
        ("home", 4000, &["rack=r1"]),
        ("a", 4000, &["rack=r1"]),
        ("b", 4000, &["rack=r2"]),
        ("c", 4000, &["rack=r2"]),
        ("d", 4000, &["rack=r3"]),
        ("e", 4000, &["rack=r3"]),
    ]);
    let mut b = bidder_with(bidder::Config::default());
    let s = constrained("web", 250, &["rack:spread"]);
    for _ in 0..3 {
        b.submit(ms(0), s.clone()).unwrap();
    }
    b.handle_timeout(ms(0), &mut v);
    let bids = bids_sent(&mut b);
    // Bids in flight count: the three tasks bid on three different racks,
    // each task's bids all in one rack.
    let mut racks: BTreeMap<TaskId, BTreeSet<&str>> = BTreeMap::new();
    for (task, node, _) in &bids {
        racks
            .entry(task.clone())
            .or_default()
            .insert(rack_of(&v, node));
    }
    assert_eq!(racks.len(), 3, "{bids:?}");
    assert!(racks.values().all(|r| r.len() == 1), "{racks:?}");
    let used: BTreeSet<&str> = racks.values().flat_map(|r| r.iter().copied()).collect();
    assert_eq!(used.len(), 3, "{racks:?}");

    // Each task is placed by its first bid; placed tasks count too: three
    // more tasks again take one rack each.
    let mut first: BTreeMap<TaskId, (NodeId, Bid)> = BTreeMap::new();
    for (task, node, x) in bids {
        first.entry(task).or_insert((node, x));
    }
    for (node, x) in first.values() {
        place(&mut b, &mut v, ms(5), node, x);
    }
    let _ = sent(&mut b);
    for _ in 0..3 {
        b.submit(ms(10), s.clone()).unwrap();
    }
    b.handle_timeout(ms(10), &mut v);
    let mut per_rack: BTreeMap<&str, BTreeSet<TaskId>> = BTreeMap::new();
    for (node, x) in first.values() {
        per_rack
            .entry(rack_of(&v, node))
            .or_default()
            .insert(x.task_id.clone());
    }
    for (task, node, _) in bids_sent(&mut b) {
        per_rack.entry(rack_of(&v, &node)).or_default().insert(task);
    }
    let counts: Vec<usize> = per_rack.values().map(|t| t.len()).collect();
    assert_eq!(counts, vec![2, 2, 2], "{per_rack:?}");
}

#[test]
fn spread_breaks_ties_between_values_at_random() {
    let v = labelled(&[
        ("a", 4000, &["zone=z1"]),
        ("b", 4000, &["zone=z2"]),
        ("c", 4000, &["zone=z3"]),
    ]);
    let mut zones = BTreeSet::new();
    for seed in 0..16 {
        let mut v = v.clone();
        let mut b = Bidder::new(
            n("home"),
            fw("f@home"),
            1,
            bidder::Config::default(),
            ChaCha8Rng::seed_from_u64(seed),
        );
        b.submit(ms(0), constrained("web", 250, &["zone:spread"]))
            .unwrap();
        b.handle_timeout(ms(0), &mut v);
        for (_, node, _) in bids_sent(&mut b) {
            zones.insert(v.get(&node).unwrap().attrs.get("zone").unwrap().to_string());
        }
    }
    assert_eq!(zones.len(), 3, "the first task always went to {zones:?}");
}

#[test]
fn spread_prefers_a_value_with_room_now_over_a_less_used_full_one() {
    let mut v = labelled(&[("a", 4000, &["rack=r1"]), ("b", 4000, &["rack=r2"])]);
    let mut b = bidder_with(bidder::Config::default());
    let s = constrained("web", 1000, &["rack:spread"]);
    // one task of the job on r1 ...
    b.submit(ms(0), s.clone()).unwrap();
    b.handle_timeout(ms(0), &mut v);
    let bids = bids_sent(&mut b);
    assert_eq!(bids.len(), 1);
    let (_, on, x) = &bids[0];
    place(&mut b, &mut v, ms(1), on, x);
    // ... and the other rack is full: the next task goes where it fits now
    let other = if *on == n("a") { n("b") } else { n("a") };
    v.apply_free(&other, Resources::cpu_mem(0, 8192), 9);
    b.submit(ms(2), s).unwrap();
    b.handle_timeout(ms(2), &mut v);
    let targets: Vec<NodeId> = bids_sent(&mut b).into_iter().map(|(_, n, _)| n).collect();
    assert_eq!(targets, vec![on.clone()]);
}

#[test]
fn a_withdrawn_bid_frees_its_node_for_the_next_unique_task_at_once() {
    let mut v = labelled(&[("a", 4000, &[]), ("b", 4000, &[])]);
    let mut b = bidder_with(bidder::Config::default());
    let s = constrained("web", 250, &["hostname:unique"]);
    let first = b.submit(ms(0), s.clone()).unwrap();
    let second = b.submit(ms(0), s).unwrap();
    b.handle_timeout(ms(0), &mut v);
    let bids = bids_sent(&mut b);
    // the first task bids on both nodes; the second finds none free of the job
    assert_eq!(bids.len(), 2, "{bids:?}");
    assert!(bids.iter().all(|(t, _, _)| *t == first));
    // "a" awards: the bid on "b" is withdrawn, and can no longer place the
    // first task, so "b" is free for the second at its next attempt even
    // though "b" has not answered the withdrawal
    let (node, x) = bids
        .iter()
        .find(|(_, node, _)| *node == n("a"))
        .map(|(_, node, x)| (node.clone(), x.clone()))
        .unwrap();
    place(&mut b, &mut v, ms(1), &node, &x);
    let _ = sent(&mut b);
    let retry = b.poll_timeout().unwrap();
    assert!(retry < ms(500), "{retry}");
    b.handle_timeout(retry, &mut v);
    let next: Vec<(TaskId, NodeId)> = bids_sent(&mut b)
        .into_iter()
        .map(|(t, n, _)| (t, n))
        .collect();
    assert_eq!(next, vec![(second, n("b"))]);
}

#[test]
fn a_unique_task_that_cannot_be_placed_names_the_constraint() {
    // Three 2-cpu nodes, each running a 0.25-cpu task of job web: 1.75
    // cpus free everywhere, but hostname:unique leaves no node.
    let mut v = labelled(&[("a", 2000, &[]), ("b", 2000, &[]), ("c", 2000, &[])]);
    let mut b = bidder_with(bidder::Config {
        candidates: 1,
        placement_timeout: Duration::from_secs(1),
        ..bidder::Config::default()
    });
    let s = constrained("web", 250, &["hostname:unique"]);
    for _ in 0..3 {
        b.submit(ms(0), s.clone()).unwrap();
    }
    b.handle_timeout(ms(0), &mut v);
    for (_, node, x) in bids_sent(&mut b) {
        place(&mut b, &mut v, ms(1), &node, &x);
    }
    b.submit(ms(2), s).unwrap();
    run_timers(&mut b, &mut v, ms(60_000));
    let reason = failure_reason(&mut b);
    assert_eq!(
        reason,
        "hostname:unique: every one of the 3 live nodes already has a task of job web, running or being placed"
    );
}

#[test]
fn a_reason_says_which_constraint_excluded_how_many_nodes() {
    // zone==eu-1 leaves two nodes, hostname:unique one of them; that one is
    // busy
    let mut v = labelled(&[
        ("a", 2000, &["zone=eu-1"]),
        ("b", 2000, &["zone=eu-1"]),
        ("c", 2000, &["zone=eu-2"]),
    ]);
    let mut b = bidder_with(bidder::Config {
        candidates: 1,
        placement_timeout: Duration::from_secs(1),
        ..bidder::Config::default()
    });
    let s = constrained("web", 1500, &["zone==eu-1", "hostname:unique"]);
    b.submit(ms(0), s.clone()).unwrap();
    b.handle_timeout(ms(0), &mut v);
    let bids = bids_sent(&mut b);
    let (_, node, x) = &bids[0];
    place(&mut b, &mut v, ms(1), node, x);
    let other = if *node == n("a") { n("b") } else { n("a") };
    b.submit(ms(2), s).unwrap();
    run_rejecting(&mut b, &mut v, ms(60_000), |_| {
        Resources::cpu_mem(500, 8192)
    });
    let reason = failure_reason(&mut b);
    assert_eq!(
        reason,
        format!(
            "no node has 1.5 cpus free; largest free is 0.5 cpus on {other} (waited 1s); \
             of the 3 live nodes, zone==eu-1 excluded 1, hostname:unique excluded 1 \
             (they already have a task of job web, running or being placed)"
        )
    );
}

#[test]
fn a_task_no_node_can_ever_hold_fails_at_once() {
    let cfg = bidder::Config::default();
    let grace = ms(cfg.never_fit_grace.as_millis() as u64);
    assert!(cfg.never_fit_grace < cfg.placement_timeout / 10);
    // more cpus than any node has in total
    let mut v = labelled(&[("n1", 2000, &["zone=eu-1"]), ("n2", 4000, &["zone=eu-2"])]);
    let mut b = bidder_with(cfg.clone());
    b.submit(ms(0), constrained("big", 100_000, &[])).unwrap();
    let t = run_timers(&mut b, &mut v, ms(600_000));
    assert_eq!(t, grace, "failed at {t}, not when the grace was over");
    assert!(bids_sent(&mut b).is_empty());
    assert_eq!(
        failure_reason(&mut b),
        "no node can ever fit 100 cpus: the largest node has 4 cpus in total (n2)"
    );
    assert_eq!(b.active_tasks(), 0);

    // a constraint no node matches
    let mut b = bidder_with(cfg.clone());
    b.submit(ms(0), constrained("web", 250, &["zone==mars"]))
        .unwrap();
    assert_eq!(run_timers(&mut b, &mut v, ms(600_000)), grace);
    assert_eq!(
        failure_reason(&mut b),
        "no live node matches zone==mars (values seen: eu-1, eu-2)"
    );

    // big enough only where the constraints do not allow
    let mut b = bidder_with(cfg.clone());
    b.submit(ms(0), constrained("web", 3000, &["zone==eu-1"]))
        .unwrap();
    assert_eq!(run_timers(&mut b, &mut v, ms(600_000)), grace);
    assert_eq!(
        failure_reason(&mut b),
        "no node can ever fit 3 cpus: the largest live node that satisfies zone==eu-1 has 2 cpus in total (n1)"
    );

    // a spread key no node has
    let mut b = bidder_with(cfg);
    b.submit(ms(0), constrained("web", 250, &["rack:spread"]))
        .unwrap();
    run_timers(&mut b, &mut v, ms(600_000));
    assert_eq!(
        failure_reason(&mut b),
        "no live node has the attribute rack, which rack:spread needs"
    );
}

#[test]
fn a_node_that_joins_within_the_grace_takes_a_task_nothing_else_could() {
    let mut v = labelled(&[("n1", 4000, &[])]);
    let mut b = bidder_with(bidder::Config::default());
    let task = b.submit(ms(0), constrained("big", 8000, &[])).unwrap();
    b.handle_timeout(ms(0), &mut v);
    assert!(bids_sent(&mut b).is_empty());
    // gossip brings a bigger node before the grace is over
    v.upsert(NodeInfo::new(
        n("n2"),
        Resources::cpu_mem(16_000, 8192),
        Attributes::default(),
    ));
    let t = b.poll_timeout().unwrap();
    b.handle_timeout(t, &mut v);
    let bids = bids_sent(&mut b);
    assert_eq!(bids.len(), 1);
    assert_eq!((&bids[0].0, &bids[0].1), (&task, &n("n2")));
    assert!(events(&mut b).is_empty(), "nothing failed");
}

#[test]
fn a_task_only_a_dead_node_could_hold_waits_for_it() {
    let mut v = labelled(&[("n1", 4000, &[]), ("n2", 16_000, &[])]);
    v.set_alive(&n("n2"), false);
    let cfg = bidder::Config {
        placement_timeout: Duration::from_secs(10),
        ..bidder::Config::default()
    };
    let mut b = bidder_with(cfg);
    b.submit(ms(0), constrained("big", 8000, &[])).unwrap();
    let t = run_timers(&mut b, &mut v, ms(600_000));
    assert_eq!(t, ms(10_000), "it waited for its placement timeout");
    assert_eq!(
        failure_reason(&mut b),
        "no node can ever fit 8 cpus: the largest node has 4 cpus in total (n1); node n2, which could, is not alive"
    );
}

#[test]
fn a_unique_reason_also_counts_the_nodes_other_constraints_excluded() {
    let mut v = labelled(&[
        ("a", 2000, &["zone=eu-1"]),
        ("b", 2000, &["zone=eu-1"]),
        ("c", 2000, &["zone=eu-2"]),
        ("d", 500, &["zone=eu-1"]),
    ]);
    let mut b = bidder_with(bidder::Config {
        candidates: 1,
        placement_timeout: Duration::from_secs(1),
        ..bidder::Config::default()
    });
    let s = constrained("web", 1000, &["zone==eu-1", "hostname:unique"]);
    for _ in 0..2 {
        b.submit(ms(0), s.clone()).unwrap();
    }
    b.handle_timeout(ms(0), &mut v);
    for (_, node, x) in bids_sent(&mut b) {
        place(&mut b, &mut v, ms(1), &node, &x);
    }
    b.submit(ms(2), s).unwrap();
    run_timers(&mut b, &mut v, ms(60_000));
    assert_eq!(
        failure_reason(&mut b),
        "hostname:unique: every one of the 2 live nodes that could otherwise take it already \
         has a task of job web, running or being placed (2 more: zone==eu-1 excluded 1, 1 too \
         small in total)"
    );
}

#[test]
fn unanswered_confirms_are_resent_ever_more_slowly_before_the_task_is_reported_lost() {
    // A node that gossips alive but is too loaded to answer: confirms were
    // re-sent every 200 ms and the task reported lost after 20 of them
    // (4 s), while the node went on to launch it. Now each re-send waits
    // twice as long as the last, up to 2 s, 12 confirms in all.
    let mut v = labelled(&[("a", 4000, &[])]);
    let mut b = bidder_with(bidder::Config::default());
    let task = b.submit(ms(0), constrained("web", 250, &[])).unwrap();
    b.handle_timeout(ms(0), &mut v);
    let bids = bids_sent(&mut b);
    let (_, node, x) = bids.first().expect("a bid").clone();
    b.handle_message(
        ms(5),
        node.clone(),
        PeerMessage::Award(Award {
            bid_id: x.bid_id,
            task_id: x.task_id.clone(),
            lease_id: LeaseId(9),
            lease_ms: 3000,
            ports: vec![],
        }),
        &mut v,
    )
    .unwrap();
    let mut confirms = vec![5u64];
    sent(&mut b);
    let mut lost_at = None;
    while let Some(t) = b.poll_timeout() {
        if t > ms(60_000) {
            break;
        }
        b.handle_timeout(t, &mut v);
        for s in sent(&mut b) {
            if matches!(s.msg, PeerMessage::Confirm(_)) {
                confirms.push((t - ms(0)).as_millis() as u64);
            }
        }
        let lost = events(&mut b).into_iter().any(|e| {
            matches!(e, BEvent::Status { status, .. }
                if status.task_id == task && status.state == TaskState::Lost)
        });
        if lost {
            lost_at = Some((t - ms(0)).as_millis() as u64);
            break;
        }
    }
    let gaps: Vec<u64> = confirms.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(
        gaps,
        [
            200, 400, 800, 1600, 2000, 2000, 2000, 2000, 2000, 2000, 2000
        ],
        "confirms at {confirms:?}"
    );
    assert_eq!(confirms.len(), 12);
    assert_eq!(
        lost_at,
        Some(confirms[11] + 2000),
        "lost after the last wait"
    );
}
