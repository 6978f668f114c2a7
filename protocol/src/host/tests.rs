//! Hosts on a virtual clock, connected by an instant in-test network and an
//! executor that starts every task at once.

use super::*;
use crate::task::{Command, TaskState};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub(super) type H = Host<ChaCha8Rng>;

pub(super) fn nid(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

pub(super) fn fid(s: &str) -> FrameworkId {
    FrameworkId::new(s).unwrap()
}

pub(super) fn spec(name: &str, cpus: u64) -> TaskSpec {
    TaskSpec::new(
        name,
        Command::Argv(vec!["true".into()]),
        Resources::cpu_mem(cpus * 1000, 64),
    )
}

pub(super) fn host(id: &str, cpus: u64, generation: u64) -> H {
    host_with(
        id,
        cpus,
        Config {
            generation,
            ..Config::default()
        },
    )
}

fn host_with(id: &str, cpus: u64, config: Config) -> H {
    Host::new(
        nid(id),
        Resources::cpu_mem(cpus * 1000, 4096),
        PortSet::default(),
        Attributes::default(),
        String::new(),
        config,
    )
}

/// A cluster of hosts that see each other alive.
pub(super) struct Net {
    pub(super) now: Instant,
    pub(super) hosts: BTreeMap<NodeId, H>,
    /// Nodes that deliver nothing and receive nothing (paused or cut off).
    pub(super) mute: BTreeSet<NodeId>,
    /// Pairs that cannot reach each other (a partition), both orders.
    pub(super) cut: BTreeSet<(NodeId, NodeId)>,
    /// What each node's executor runs.
    pub(super) running: BTreeMap<NodeId, BTreeSet<TaskId>>,
    /// Events seen, per node.
    pub(super) events: BTreeMap<NodeId, Vec<Event>>,
    /// Kills the executors carried out.
    pub(super) killed: Vec<(NodeId, TaskId)>,
    /// Witness messages sent: from, to, what.
    pub(super) witness: Vec<(NodeId, NodeId, crate::wire::WitnessRows)>,
}

impl Net {
    pub(super) fn new(hosts: Vec<H>) -> Net {
        let mut net = Net {
            now: Instant::ZERO,
            hosts: hosts
                .into_iter()
                .map(|h| (h.node_id().clone(), h))
                .collect(),
            mute: BTreeSet::new(),
            cut: BTreeSet::new(),
            running: BTreeMap::new(),
            events: BTreeMap::new(),
            killed: Vec::new(),
            witness: Vec::new(),
        };
        net.gossip();
        net
    }

    /// Every host learns every other's current state (alive unless mute).
    pub(super) fn gossip(&mut self) {
        let infos: Vec<NodeInfo> = self
            .hosts
            .values()
            .map(|h| {
                let mut i = h.view().get(h.node_id()).cloned().unwrap();
                i.alive = !self.mute.contains(&i.id);
                // As the node's gossip carries it (chitchat's generation).
                i.generation = h.generation();
                i
            })
            .collect();
        let now = self.now;
        let cell_of: BTreeMap<NodeId, Option<crate::cell::CellId>> = self
            .hosts
            .iter()
            .map(|(id, h)| (id.clone(), h.cell()))
            .collect();
        for (id, h) in &mut self.hosts {
            if self.mute.contains(id) {
                continue;
            }
            // Each cell is its own gossip cluster.
            let seen = infos
                .iter()
                .filter(|i| cell_of.get(&i.id) == cell_of.get(id))
                .map(|i| NodeInfo {
                    alive: i.alive && !self.cut.contains(&(id.clone(), i.id.clone())),
                    ..i.clone()
                })
                .collect();
            h.handle_members(now, seen);
        }
        self.settle();
    }

    /// `task` ends `finished` on `node`'s executor; the network settles.
    pub(super) fn finish_on(&mut self, node: &str, task: &TaskId) {
        let now = self.now;
        self.h(node).handle_exec(
            now,
            TaskStatus::new(task.clone(), TaskState::Finished, Some(nid(node))),
            None,
        );
        self.settle();
    }

    pub(super) fn h(&mut self, id: &str) -> &mut H {
        self.hosts.get_mut(&nid(id)).unwrap()
    }

    /// Delivers messages and runs executors until nothing moves.
    pub(super) fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            let ids: Vec<NodeId> = self.hosts.keys().cloned().collect();
            for id in &ids {
                let now = self.now;
                let h = self.hosts.get_mut(id).unwrap();
                let mut out = Vec::new();
                while let Some(t) = h.poll_transmit() {
                    out.push(t);
                }
                while let Some(e) = h.poll_exec() {
                    moved = true;
                    match e {
                        Exec::Launch(l) => {
                            self.running
                                .entry(id.clone())
                                .or_default()
                                .insert(l.task_id.clone());
                            let st = TaskStatus::new(
                                l.task_id.clone(),
                                TaskState::Running,
                                Some(id.clone()),
                            );
                            h.handle_exec(now, st, Some(&l));
                        }
                        Exec::Kill { task_id, .. } => {
                            self.killed.push((id.clone(), task_id.clone()));
                            if let Some(r) = self.running.get_mut(id) {
                                r.remove(&task_id);
                            }
                            let st = TaskStatus::new(task_id, TaskState::Killed, Some(id.clone()));
                            h.handle_exec(now, st, None);
                        }
                    }
                }
                while let Some(ev) = h.poll_event() {
                    self.events.entry(id.clone()).or_default().push(ev);
                }
                for t in out {
                    moved = true;
                    if let PeerMessage::Witness(w) = &t.msg {
                        self.witness.push((id.clone(), t.to.clone(), w.clone()));
                    }
                    if self.mute.contains(id)
                        || self.mute.contains(&t.to)
                        || self.cut.contains(&(id.clone(), t.to.clone()))
                    {
                        continue;
                    }
                    if let Some(dst) = self.hosts.get_mut(&t.to) {
                        let back = dst.handle_peer(now, id.clone(), t.msg);
                        assert!(back.is_none(), "no shell messages in these tests");
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network never settled");
    }

    /// Advances the clock to `t`, running every host's timers on the way.
    pub(super) fn advance(&mut self, t: Instant) {
        loop {
            let next = self
                .hosts
                .iter()
                .filter(|(id, _)| !self.mute.contains(*id))
                .filter_map(|(_, h)| h.poll_timeout())
                .min();
            match next {
                Some(n) if n <= t => {
                    self.now = self.now.max(n);
                    let now = self.now;
                    for (id, h) in &mut self.hosts {
                        if !self.mute.contains(id) && h.poll_timeout().is_some_and(|x| x <= now) {
                            h.handle_timeout(now);
                        }
                    }
                    self.settle();
                }
                _ => break,
            }
        }
        self.now = self.now.max(t);
    }

    pub(super) fn statuses(&self, node: &str, task: &TaskId) -> Vec<TaskState> {
        self.events
            .get(&nid(node))
            .into_iter()
            .flatten()
            .filter_map(|e| match e {
                Event::Status { status, .. } if status.task_id == *task => Some(status.state),
                _ => None,
            })
            .collect()
    }
}

pub(super) fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Homes `fw` on a (which has no room) and places one task of it on b.
fn one_task_on_b(net: &mut Net, fw: &FrameworkId, seed: u64) -> Vec<TaskId> {
    net.h("a").add_framework(fw.clone(), 1, rng(seed)).unwrap();
    let now = net.now;
    let ids = net.h("a").submit(now, fw, vec![spec("x", 1)]).unwrap();
    net.settle();
    net.advance(Instant::from_millis(100));
    assert!(net.running[&nid("b")].contains(&ids[0]));
    ids
}

#[test]
fn a_task_submitted_on_one_host_runs_on_another_and_its_status_comes_home() {
    // a is too small for the task: it must go to b.
    let mut net = Net::new(vec![host("a", 1, 0), host("b", 4, 0)]);
    let fw = fid("batch@a");
    net.h("a").add_framework(fw.clone(), 1, rng(1)).unwrap();
    let now = net.now;
    let ids = net.h("a").submit(now, &fw, vec![spec("job", 2)]).unwrap();
    net.settle();
    net.advance(Instant::from_millis(100));
    assert!(net.running[&nid("b")].contains(&ids[0]));
    assert_eq!(
        net.statuses("a", &ids[0]),
        vec![TaskState::Starting, TaskState::Running]
    );
    assert_eq!(net.hosts[&nid("b")].auctioneer().running_count(), 1);
}

#[test]
fn awards_reach_a_framework_whose_id_is_cut_in_its_task_ids() {
    // A framework id over 121 bytes is cut in its task ids; routing by
    // prefix dropped its awards (issue 11).
    let long = format!("cli-0a1b2c3d@{}", "n".repeat(115));
    let fw = fid(&long);
    let mut net = Net::new(vec![host("a", 1, 0), host("b", 4, 0)]);
    net.h("a").add_framework(fw.clone(), 1, rng(2)).unwrap();
    let now = net.now;
    let ids = net.h("a").submit(now, &fw, vec![spec("job", 2)]).unwrap();
    assert_ne!(ids[0].framework_part(), fw.as_str(), "the id really is cut");
    net.settle();
    net.advance(Instant::from_millis(100));
    assert!(net.running[&nid("b")].contains(&ids[0]));
    assert!(net.statuses("a", &ids[0]).contains(&TaskState::Running));
    assert_eq!(net.hosts[&nid("a")].stats().unroutable, 0);
}

#[test]
fn frameworks_on_one_host_bid_from_disjoint_ranges() {
    let mut net = Net::new(vec![host("a", 0, 0), host("b", 4, 7)]);
    let (f1, f2) = (fid("one@a"), fid("two@a"));
    net.h("a").add_framework(f1.clone(), 1, rng(3)).unwrap();
    net.h("a").add_framework(f2.clone(), 1, rng(4)).unwrap();
    let now = net.now;
    let t1 = net.h("a").submit(now, &f1, vec![spec("x", 1)]).unwrap();
    let t2 = net.h("a").submit(now, &f2, vec![spec("x", 1)]).unwrap();
    net.settle();
    net.advance(Instant::from_millis(100));
    // Both bids were told apart by b's auctioneer and both tasks run.
    let on_b = &net.running[&nid("b")];
    assert!(on_b.contains(&t1[0]) && on_b.contains(&t2[0]));
    let a = &net.hosts[&nid("a")];
    assert_eq!(a.stats().bids_sent, a.stats().awards + a.stats().rejects);
}

#[test]
fn empty_and_oversized_submits_are_refused() {
    let mut h = host("a", 4, 0);
    let fw = fid("f@a");
    h.add_framework(fw.clone(), 1, rng(5)).unwrap();
    let e = h.submit(Instant::ZERO, &fw, Vec::new()).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidSpec);
    assert!(e.message.contains("at least one task"), "{e}");
    let many = vec![spec("x", 1); MAX_SUBMIT + 1];
    assert_eq!(
        h.submit(Instant::ZERO, &fw, many).unwrap_err().code,
        ErrorCode::InvalidSpec
    );
    let e = h
        .submit(Instant::ZERO, &fid("nobody@a"), vec![spec("x", 1)])
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownFramework);
}

#[test]
fn a_dead_peers_tasks_are_lost_and_killed_when_it_comes_back() {
    let mut net = Net::new(vec![host("a", 0, 0), host("b", 4, 0)]);
    let fw = fid("f@a");
    let ids = one_task_on_b(&mut net, &fw, 6);
    net.gossip();
    // b stops answering (SIGSTOP) and is declared dead.
    net.mute.insert(nid("b"));
    net.advance(Instant::from_millis(1_000));
    net.gossip();
    assert_eq!(
        net.statuses("a", &ids[0]).last(),
        Some(&TaskState::Lost),
        "the home reports the task lost"
    );
    assert!(
        net.running[&nid("b")].contains(&ids[0]),
        "still running on the paused node"
    );
    // b comes back (SIGCONT): a kills what it reported lost there.
    net.mute.remove(&nid("b"));
    net.advance(Instant::from_millis(2_000));
    net.gossip();
    assert!(net.killed.contains(&(nid("b"), ids[0].clone())));
    assert!(!net.running[&nid("b")].contains(&ids[0]));
    assert!(net.events[&nid("a")].contains(&Event::NodeRevived {
        node: nid("b"),
        kills: 1
    }));
    // The task stays lost at home: a later kill report does not revive it.
    assert_eq!(net.statuses("a", &ids[0]).last(), Some(&TaskState::Lost));
}

#[test]
fn a_partition_stops_what_each_side_reported_lost_and_the_heal_tells_nothing_new() {
    // a is f's home; f's task runs on b. The link between them is cut both
    // ways: a reports the task lost, and b, which holds a dead, kills it (the
    // old code ran it to the end). After the heal the home keeps `lost`.
    let mut net = Net::new(vec![host("a", 0, 0), host("b", 4, 0)]);
    let fw = fid("f@a");
    let ids = one_task_on_b(&mut net, &fw, 7);
    net.gossip();
    net.cut.insert((nid("a"), nid("b")));
    net.cut.insert((nid("b"), nid("a")));
    net.advance(Instant::from_millis(1_000));
    net.gossip();
    assert_eq!(net.statuses("a", &ids[0]).last(), Some(&TaskState::Lost));
    assert!(
        net.killed.contains(&(nid("b"), ids[0].clone())),
        "the far side kills the task whose home it holds dead"
    );
    assert!(!net.running[&nid("b")].contains(&ids[0]));
    let rows = net.h("b").auctioneer().task_rows();
    let row = rows.iter().find(|r| r.task_id == ids[0]).unwrap();
    assert_eq!(row.state, TaskState::Killed);
    let reason = row.reason.clone().unwrap_or_default();
    assert!(reason.contains("home node a was declared dead"), "{reason}");
    assert_eq!(net.h("b").auctioneer().stats().orphans_killed, 1);
    // The heal: b's `killed` reaches the home, which keeps `lost`.
    net.cut.clear();
    net.gossip();
    net.advance(Instant::from_millis(60_000));
    assert_eq!(
        net.statuses("a", &ids[0]),
        vec![TaskState::Starting, TaskState::Running, TaskState::Lost]
    );
    assert_eq!(net.h("b").auctioneer().unacked_count(), 0);
}

#[test]
fn a_restored_framework_hears_how_its_earlier_tasks_end_and_numbers_anew() {
    // f's home a restarts while f's task runs on b. The new run restores f
    // (the node keeps its frameworks on disk): b's report of the task's end
    // reaches f, and new tasks never reuse the earlier run's numbers. (The
    // old code did not know f: the report was acked and dropped, and a
    // re-registered framework numbered from 1 again.)
    let mut net = Net::new(vec![host("a", 0, 1), host("b", 4, 1)]);
    let fw = fid("f@a");
    let ids = one_task_on_b(&mut net, &fw, 9);
    // a restarts as generation 1,000.
    let mut a = host("a", 0, 1_000);
    a.restore_framework(net.now, fw.clone(), 1, rng(10), Vec::new())
        .unwrap();
    net.hosts.insert(nid("a"), a);
    net.events.remove(&nid("a"));
    net.gossip();
    net.finish_on("b", &ids[0]);
    assert_eq!(
        net.statuses("a", &ids[0]).last(),
        Some(&TaskState::Finished)
    );
    assert_eq!(net.h("b").auctioneer().unacked_count(), 0);
    assert_eq!(net.h("a").bidder(&fw).unwrap().stats().adopted, 1);
    let now = net.now;
    let new = net.h("a").submit(now, &fw, vec![spec("y", 1)]).unwrap();
    assert_eq!(new[0].as_str(), "f@a.1000");
}

#[test]
fn a_restored_home_takes_back_its_journal_places_again_what_no_node_ran_and_tells_no_second_end() {
    // a, f's home, restarts. Its journal held four tasks: x placed on b
    // (still running), y submitted and not yet placed, w placed on c (gone
    // for good) and z that ended `finished`. After the restore window: b's
    // report adopts x, y is placed (the old code reported it lost at a
    // reconcile: the submit was acknowledged and then forgotten), w is lost
    // with a reason, and z still answers `finished`.
    let mut net = Net::new(vec![host("a", 0, 1), host("b", 4, 1)]);
    let fw = fid("f@a");
    let ids = one_task_on_b(&mut net, &fw, 11);
    let mut journal = net.h("a").journal(&fw).unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].placed_on, Some(nid("b")));
    let id = |n: u64| TaskId::for_framework(&fw, n);
    journal.push(Journaled {
        task_id: id(2),
        spec: spec("y", 1),
        placed_on: None,
        ended: None,
    });
    journal.push(Journaled {
        task_id: id(3),
        spec: spec("w", 1),
        placed_on: Some(nid("c")),
        ended: None,
    });
    let mut told = TaskStatus::new(id(4), TaskState::Finished, Some(nid("b")));
    told.exit_code = Some(0);
    journal.push(Journaled {
        task_id: id(4),
        spec: spec("z", 1),
        placed_on: Some(nid("b")),
        ended: Some(told),
    });
    let mut a = host("a", 0, 1_000);
    a.restore_framework(net.now, fw.clone(), 1, rng(12), journal)
        .unwrap();
    net.hosts.insert(nid("a"), a);
    net.events.remove(&nid("a"));
    net.gossip();
    net.settle();
    let window = Config::default().restore_window;
    net.advance(net.now + window + Duration::from_millis(500));
    net.gossip();
    net.settle();
    net.advance(net.now + Duration::from_millis(500));
    let b = nid("b");
    assert!(net.running[&b].contains(&ids[0]), "x still runs on b");
    assert!(net.running[&b].contains(&id(2)), "y was placed after all");
    assert_eq!(
        net.statuses("a", &id(2)),
        vec![TaskState::Starting, TaskState::Running]
    );
    let w = net.statuses("a", &id(3));
    assert_eq!(w, vec![TaskState::Lost]);
    // A late report of another end for z (a node's retry) tells nothing.
    let late = PeerMessage::Status(crate::wire::StatusUpdate {
        seq: 7,
        framework: fw.clone(),
        status: TaskStatus::new(id(4), TaskState::Killed, Some(nid("b"))),
        free: Resources::cpu_mem(3000, 4000),
        free_version: 1,
    });
    let now = net.now;
    let _ = net.h("a").handle_peer(now, nid("b"), late);
    net.settle();
    assert!(
        net.statuses("a", &id(4)).is_empty(),
        "nothing new told for z"
    );
    let bidder = net.h("a").bidder(&fw).unwrap();
    let (_, z) = bidder.status_of(&id(4)).unwrap();
    assert_eq!((z.state, z.exit_code), (TaskState::Finished, Some(0)));
    let (_, x) = bidder.status_of(&ids[0]).unwrap();
    assert_eq!(x.node, Some(b));
    let st = bidder.stats();
    assert_eq!(
        (st.restored, st.replaced_after_restart, st.lost_in_restart),
        (3, 1, 1),
        "{:?}",
        x
    );
    // x ends on b: its framework hears it once.
    net.finish_on("b", &ids[0]);
    assert_eq!(
        net.statuses("a", &ids[0]),
        vec![TaskState::Running, TaskState::Finished]
    );
}

#[test]
fn a_restored_task_reported_by_two_nodes_runs_on_the_first_only() {
    // The journal did not know where y went (its placement was not yet
    // written): b and c both report it after the restart. The first keeps
    // it; the other is told to kill it.
    let mut net = Net::new(vec![host("a", 0, 1_000), host("b", 4, 1), host("c", 4, 1)]);
    let fw = fid("f@a");
    let y = TaskId::for_framework(&fw, 2);
    let now = net.now;
    net.h("a")
        .restore_framework(
            now,
            fw.clone(),
            1,
            rng(13),
            vec![Journaled {
                task_id: y.clone(),
                spec: spec("y", 1),
                placed_on: None,
                ended: None,
            }],
        )
        .unwrap();
    for (n, seq) in [("b", 1), ("c", 1)] {
        let msg = PeerMessage::Status(crate::wire::StatusUpdate {
            seq,
            framework: fw.clone(),
            status: TaskStatus::new(y.clone(), TaskState::Running, Some(nid(n))),
            free: Resources::cpu_mem(3000, 4000),
            free_version: 9,
        });
        let now = net.now;
        let _ = net.h("a").handle_peer(now, nid(n), msg);
    }
    let sent: Vec<(NodeId, PeerMessage)> = std::iter::from_fn(|| net.h("a").poll_transmit())
        .map(|t| (t.to, t.msg))
        .collect();
    let kills: Vec<&NodeId> = sent
        .iter()
        .filter(|(_, m)| matches!(m, PeerMessage::Kill(k) if k.task_id == y))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(kills, vec![&nid("c")], "{sent:?}");
    let (_, s) = net.h("a").bidder(&fw).unwrap().status_of(&y).unwrap();
    assert_eq!((s.state, s.node), (TaskState::Running, Some(nid("b"))));
}

#[test]
fn a_restarted_node_confirms_a_task_it_reattached_instead_of_sending_it_elsewhere() {
    // b launched f's task, then restarted before its Confirmed answer got
    // through, and re-attached the task. The bidder's re-sent confirm names
    // a lease the new run never made: refusing it had the bidder place the
    // task again elsewhere while it ran on here (found by the crash storm:
    // tasks on two nodes).
    let fw = fid("f@a");
    let launch = Launch {
        task_id: TaskId::for_framework(&fw, 1),
        framework: fw.clone(),
        weight: 1,
        home: nid("a"),
        spec: spec("x", 1),
        ports: vec![],
    };
    let mut b = host("b", 4, 2);
    b.adopt(Instant::ZERO, &launch).unwrap();
    b.after_recovery(Instant::ZERO);
    let msg = PeerMessage::Confirm(crate::wire::Confirm {
        lease_id: crate::ids::LeaseId(1),
        task_id: launch.task_id.clone(),
    });
    assert!(b.handle_peer(Instant::ZERO, nid("a"), msg).is_none());
    let sent: Vec<PeerMessage> = std::iter::from_fn(|| b.poll_transmit())
        .map(|t| t.msg)
        .collect();
    assert!(
        sent.iter()
            .any(|m| matches!(m, PeerMessage::Confirmed(c) if c.task_id == launch.task_id)),
        "{sent:?}"
    );
    assert!(
        !sent
            .iter()
            .any(|m| matches!(m, PeerMessage::ConfirmRefused(_))),
        "{sent:?}"
    );
    // And its home hears at once that it runs here (re-sent at recovery).
    assert!(
        sent.iter()
            .any(|m| matches!(m, PeerMessage::Status(u) if u.status.task_id == launch.task_id)),
        "{sent:?}"
    );
}

#[test]
fn held_bids_of_a_dead_home_are_dropped_unanswered() {
    // b is full; a's bid is held there. a dies: the held bid goes, so that
    // b's later room is not awarded to nobody.
    let mut net = Net::new(vec![host("a", 0, 0), host("b", 1, 0)]);
    let fw = fid("f@a");
    net.h("a").add_framework(fw.clone(), 1, rng(8)).unwrap();
    let now = net.now;
    net.h("a")
        .submit(now, &fw, vec![spec("x", 1), spec("y", 1)])
        .unwrap();
    net.settle();
    net.advance(Instant::from_millis(20));
    assert_eq!(net.h("b").auctioneer().held_count(), 1);
    net.mute.insert(nid("a"));
    net.gossip();
    assert_eq!(net.h("b").auctioneer().held_count(), 0);
    assert_eq!(net.h("b").auctioneer().stats().bids_dropped_home_dead, 1);
}

#[test]
fn a_restarting_peer_is_held_alive_for_the_grace_then_declared_dead() {
    let mut a = host("a", 0, 0);
    let fw = fid("f@a");
    a.add_framework(fw.clone(), 1, rng(7)).unwrap();
    let mut b = NodeInfo::new(
        nid("b"),
        Resources::cpu_mem(4000, 4096),
        Attributes::default(),
    );
    b.version = 10;
    a.handle_members(Instant::ZERO, vec![b.clone()]);
    assert!(a.view().get(&nid("b")).unwrap().alive);
    // A new generation the detector does not hold alive yet, with a newer
    // ledger: held alive for the grace.
    b.alive = false;
    b.version = 1_000_000;
    let t = Instant::from_millis(1_000);
    a.handle_members(t, vec![b.clone()]);
    assert!(a.view().get(&nid("b")).unwrap().alive);
    assert_eq!(a.poll_timeout(), Some(t + Config::default().restart_grace));
    while a.poll_event().is_some() {}
    // It never comes back alive: dead when the grace runs out.
    a.handle_timeout(t + Config::default().restart_grace);
    assert!(!a.view().get(&nid("b")).unwrap().alive);
    assert_eq!(a.poll_event(), Some(Event::NodeDead(nid("b"))));
}

#[test]
fn a_restarted_host_is_newer_than_anything_its_peers_remember() {
    let mut net = Net::new(vec![host("a", 4, 0), host("b", 4, 5_000)]);
    let v_old = net.hosts[&nid("a")].view().get(&nid("b")).unwrap().version;
    assert!(v_old >= 5_000, "versions start from the generation");
    // b restarts with a later generation.
    net.hosts.insert(nid("b"), host("b", 4, 9_000));
    net.gossip();
    let v_new = net.hosts[&nid("a")].view().get(&nid("b")).unwrap().version;
    assert!(v_new > v_old && v_new >= 9_000);
}

#[test]
fn a_removed_framework_keeps_its_history() {
    let mut net = Net::new(vec![host("a", 4, 0)]);
    let fw = fid("f@a");
    net.h("a").add_framework(fw.clone(), 1, rng(8)).unwrap();
    let now = net.now;
    let ids = net.h("a").submit(now, &fw, vec![spec("x", 1)]).unwrap();
    net.settle();
    let k = net.h("a").kill(now, Some(&fw), &ids[0]).unwrap();
    assert_eq!(k, KillSent::Homed);
    net.settle();
    assert!(net.h("a").remove_framework(&fw));
    let rows = net.h("a").task_rows();
    let row = rows.iter().find(|r| r.task_id == ids[0]).unwrap();
    assert_eq!(row.state, TaskState::Killed);
    let e = net.h("a").kill(now, None, &ids[0]).unwrap_err();
    assert!(e.message.contains("already ended"), "{e}");
}

#[test]
fn a_framework_kills_only_its_own_tasks() {
    let mut net = Net::new(vec![host("a", 4, 0)]);
    let (f, g) = (fid("f@a"), fid("g@a"));
    net.h("a").add_framework(f.clone(), 1, rng(9)).unwrap();
    net.h("a").add_framework(g.clone(), 1, rng(10)).unwrap();
    let now = net.now;
    let ids = net.h("a").submit(now, &f, vec![spec("x", 1)]).unwrap();
    net.settle();
    net.advance(Instant::from_millis(100));
    let now = net.now;
    let e = net.h("a").kill(now, Some(&g), &ids[0]).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownTask);
    assert!(net.running[&nid("a")].contains(&ids[0]));
    // An operator may.
    net.h("a").kill(now, None, &ids[0]).unwrap();
    net.settle();
    assert!(!net.running[&nid("a")].contains(&ids[0]));
}

#[test]
fn a_status_for_a_framework_not_homed_here_is_acked_and_its_task_killed() {
    let mut a = host("a", 0, 0);
    let task_id = TaskId::new("gone@a.1").unwrap();
    let update = crate::wire::StatusUpdate {
        seq: 3,
        framework: fid("gone@a"),
        status: TaskStatus::new(task_id.clone(), TaskState::Running, Some(nid("b"))),
        free: Resources::ZERO,
        free_version: 1,
    };
    assert!(
        a.handle_peer(Instant::ZERO, nid("b"), PeerMessage::Status(update))
            .is_none()
    );
    let sent: Vec<Transmit> = std::iter::from_fn(|| a.poll_transmit()).collect();
    assert_eq!(
        sent,
        vec![
            Transmit {
                to: nid("b"),
                msg: PeerMessage::StatusAck(crate::wire::StatusAck {
                    task_id: task_id.clone(),
                    seq: 3
                })
            },
            Transmit {
                to: nid("b"),
                msg: PeerMessage::Kill(Kill { task_id })
            },
        ]
    );
    assert_eq!(a.stats().orphan_status, 1);
}

#[test]
fn a_listing_naming_a_task_asks_only_its_home_and_the_home_answers_it() {
    // Listings went to every live node and each answered all its rows
    // (issue 11): a query for one task now asks its home, which answers
    // only the matching rows.
    let mut net = Net::new(vec![host("a", 0, 0), host("b", 4, 0), host("c", 0, 0)]);
    let fw = FrameworkId::homed("batch", 1, &nid("a")).unwrap();
    net.h("a").add_framework(fw.clone(), 1, rng(9)).unwrap();
    let now = net.now;
    let ids = net
        .h("a")
        .submit(now, &fw, vec![spec("x", 1), spec("y", 1)])
        .unwrap();
    net.settle();
    net.advance(Instant::from_millis(100));
    let mut q = crate::wire::TaskQuery::all(7);
    q.task_id = Some(ids[1].clone());
    let t = net.hosts[&nid("c")].list_targets(&q);
    assert_eq!(t.ask, vec![nid("a")]);
    assert!(t.dead.is_empty());
    // On the home itself nobody else is asked.
    assert_eq!(
        net.hosts[&nid("a")].list_targets(&q).ask,
        Vec::<NodeId>::new()
    );
    // By framework: the home too; with no home named: every live peer.
    let by_fw = crate::wire::TaskQuery {
        framework: Some(fw.clone()),
        ..crate::wire::TaskQuery::all(8)
    };
    assert_eq!(
        net.hosts[&nid("c")].list_targets(&by_fw).ask,
        vec![nid("a")]
    );
    assert_eq!(
        net.hosts[&nid("c")]
            .list_targets(&crate::wire::TaskQuery::all(9))
            .ask,
        vec![nid("a"), nid("b")]
    );
    // The home answers the query with the one row.
    let now = net.now;
    let back = net
        .h("a")
        .handle_peer(now, nid("c"), PeerMessage::ListTasks(q));
    assert!(back.is_none(), "the host answers listings itself");
    let t = net.h("a").poll_transmit().expect("an answer");
    assert_eq!(t.to, nid("c"));
    let PeerMessage::TaskList(list) = t.msg else {
        panic!("not a task list: {:?}", t.msg)
    };
    assert_eq!(list.request_id, 7);
    assert_eq!(list.matched, 1);
    assert_eq!(list.tasks.len(), 1);
    assert_eq!(list.tasks[0].task_id, ids[1]);
    assert_eq!(list.tasks[0].node, Some(nid("b")));
}

#[test]
fn a_listing_whose_home_is_dead_asks_everyone_and_names_the_dead() {
    let mut net = Net::new(vec![host("a", 1, 0), host("b", 1, 0), host("c", 1, 0)]);
    net.mute.insert(nid("a"));
    net.advance(Instant::from_millis(1_000));
    net.gossip();
    let fw = FrameworkId::homed("batch", 1, &nid("a")).unwrap();
    let q = crate::wire::TaskQuery {
        task_id: Some(TaskId::for_framework(&fw, 1)),
        ..crate::wire::TaskQuery::all(1)
    };
    let t = net.hosts[&nid("c")].list_targets(&q);
    assert_eq!(t.ask, vec![nid("b")]);
    assert_eq!(t.dead, vec![nid("a")]);
}

#[test]
fn in_cells_a_listing_whose_home_is_in_another_cell_asks_that_home() {
    // A task homed on a (cell 0) asked about from c (cell 1): c has no
    // gossip about a. It used to ask every live node of its own cell,
    // which do not hold a's rows; now it asks a, which its driver finds
    // through cell 0's gateways.
    let mut net = Net::new(vec![
        in_cell("a", 1, 0),
        in_cell("b", 1, 1),
        in_cell("c", 1, 1),
    ]);
    net.gossip();
    let fw = FrameworkId::homed("batch", 1, &nid("a")).unwrap();
    let q = crate::wire::TaskQuery {
        task_id: Some(TaskId::for_framework(&fw, 1)),
        ..crate::wire::TaskQuery::all(1)
    };
    assert!(net.hosts[&nid("c")].view().get(&nid("a")).is_none());
    let t = net.hosts[&nid("c")].list_targets(&q);
    assert_eq!(t.ask, vec![nid("a")]);
    assert!(t.dead.is_empty());
    // A flat cluster that has not heard of the home still asks everyone.
    let mut flat = Net::new(vec![host("b", 1, 0), host("c", 1, 0)]);
    flat.gossip();
    assert_eq!(flat.hosts[&nid("c")].list_targets(&q).ask, vec![nid("b")]);
}

#[test]
fn a_kill_on_a_known_node_asks_only_that_node() {
    let mut net = Net::new(vec![host("a", 0, 0), host("b", 4, 0), host("c", 0, 0)]);
    let fw = FrameworkId::homed("batch", 1, &nid("a")).unwrap();
    net.h("a").add_framework(fw.clone(), 1, rng(10)).unwrap();
    let now = net.now;
    let ids = net.h("a").submit(now, &fw, vec![spec("x", 1)]).unwrap();
    net.settle();
    net.advance(Instant::from_millis(100));
    let now = net.now;
    let sent = net.h("c").kill_on(now, None, &ids[0], &nid("b")).unwrap();
    assert_eq!(sent, KillSent::Asked(1));
    let t = net.h("c").poll_transmit().expect("one kill");
    assert_eq!(t.to, nid("b"));
    assert!(matches!(t.msg, PeerMessage::Kill(_)));
    assert!(net.h("c").poll_transmit().is_none(), "nobody else is asked");
    // A framework may not kill another's task this way either.
    let other = FrameworkId::homed("other", 2, &nid("c")).unwrap();
    assert!(
        net.h("c")
            .kill_on(now, Some(&other), &ids[0], &nid("b"))
            .is_err()
    );
    // Delivered, the kill stops the task and its home hears it.
    let now = net.now;
    let back = net.h("b").handle_peer(now, nid("c"), t.msg);
    assert!(back.is_none());
    net.settle();
    assert!(!net.running[&nid("b")].contains(&ids[0]));
    assert_eq!(net.statuses("a", &ids[0]).last(), Some(&TaskState::Killed));
}

fn in_cell(id: &str, cpus: u64, cell: u32) -> H {
    host_with(
        id,
        cpus,
        Config {
            generation: 1,
            cell: Some(crate::cell::CellId(cell)),
            ..Config::default()
        },
    )
}

fn aggregate_of(net: &mut Net, ids: &[&str]) -> crate::cell::CellAggregate {
    let infos: Vec<NodeInfo> = ids
        .iter()
        .map(|i| {
            let h = net.h(i);
            let me = h.node_id().clone();
            h.view().get(&me).cloned().unwrap()
        })
        .collect();
    crate::cell::CellAggregate::from_nodes(&infos)
}

#[test]
fn a_task_home_cannot_take_crosses_to_the_cell_with_room_and_comes_back_home_after() {
    // Cell 0: a (the home, no room) and b (1 cpu). Cell 1: c (8 cpus). A
    // 4-cpu task fits no node of cell 0: at the next cell tick a asks for
    // cell 1's members, bids on c, and the task runs there with its status
    // coming home. When cell 0 has room again, the import is dropped. A
    // home-cell gossip snapshot, which never lists c, does not declare c
    // dead meanwhile.
    let mut net = Net::new(vec![
        in_cell("a", 0, 0),
        in_cell("b", 1, 0),
        in_cell("c", 8, 1),
    ]);
    let fw = fid("f@a");
    net.h("a").add_framework(fw.clone(), 1, rng(21)).unwrap();
    let (home, other) = (
        aggregate_of(&mut net, &["a", "b"]),
        aggregate_of(&mut net, &["c"]),
    );
    let now = net.now;
    net.h("a")
        .handle_aggregate(now, crate::cell::CellId(0), home.clone());
    net.h("a")
        .handle_aggregate(now, crate::cell::CellId(1), other);
    assert!(
        net.h("a").view().get(&nid("c")).is_none(),
        "cells do not gossip to each other"
    );
    let mut big = spec("big", 4);
    big.placement_timeout_ms = 30_000;
    let ids = net.h("a").submit(now, &fw, vec![big]).unwrap();
    net.advance(net.now + Duration::from_millis(1_100));
    let asked: Vec<&Event> = net.events[&nid("a")]
        .iter()
        .filter(|e| matches!(e, Event::ImportCell(_)))
        .collect();
    assert_eq!(asked, vec![&Event::ImportCell(crate::cell::CellId(1))]);
    assert_eq!(net.h("a").imported_cells(), vec![crate::cell::CellId(1)]);
    // The driver answers with cell 1's members (from a gateway there).
    let c_info = {
        let h = net.h("c");
        let me = h.node_id().clone();
        h.view().get(&me).cloned().unwrap()
    };
    let now = net.now;
    net.h("a")
        .handle_import(now, crate::cell::CellId(1), vec![c_info]);
    net.gossip();
    net.advance(net.now + Duration::from_secs(3));
    assert!(net.running[&nid("c")].contains(&ids[0]), "placed in cell 1");
    assert_eq!(
        net.statuses("a", &ids[0]),
        vec![TaskState::Starting, TaskState::Running]
    );
    assert!(
        net.h("a").view().get(&nid("c")).is_some_and(|n| n.alive),
        "the home cell's gossip does not make c gone"
    );
    // Cell 0 gets room (its aggregate says 8 members fit): the import goes.
    let mut roomy = home;
    roomy.cpu_fit = [8; crate::cell::CPU_CLASSES];
    roomy.mem_fit = [8; crate::cell::MEM_CLASSES];
    roomy.free = Resources::cpu_mem(64_000, 65_536);
    roomy.total = roomy.free;
    let now = net.now;
    net.h("a")
        .handle_aggregate(now, crate::cell::CellId(0), roomy);
    net.advance(net.now + Duration::from_millis(1_100));
    assert!(net.events[&nid("a")].contains(&Event::DropCell(crate::cell::CellId(1))));
    assert!(net.h("a").imported_cells().is_empty());
    assert!(net.h("a").view().get(&nid("c")).is_none());
    // The task still runs and its end still comes home.
    net.finish_on("c", &ids[0]);
    assert_eq!(
        net.statuses("a", &ids[0]).last(),
        Some(&TaskState::Finished)
    );
}

#[test]
fn gateways_are_the_cells_top_rendezvous_members_and_move_when_one_dies() {
    let hosts: Vec<H> = (0..6).map(|i| in_cell(&format!("g{i}"), 1, 7)).collect();
    let mut net = Net::new(hosts);
    let gw = net.h("g0").gateways();
    assert_eq!(gw.len(), 3);
    for i in 0..6 {
        let name = format!("g{i}");
        assert_eq!(net.h(&name).gateways(), gw, "every member picks the same");
        assert_eq!(net.h(&name).is_gateway(), gw.contains(&nid(&name)));
    }
    // The first gateway dies: the others agree on its successor, and only
    // its role moves.
    let dead = gw[0].clone();
    net.mute.insert(dead.clone());
    net.gossip();
    let observer = (0..6)
        .map(|i| format!("g{i}"))
        .find(|n| nid(n) != dead)
        .unwrap();
    let after = net.h(&observer).gateways();
    assert_eq!(after.len(), 3);
    assert!(!after.contains(&dead));
    assert!(after.contains(&gw[1]) && after.contains(&gw[2]));
    // A host outside cells has no gateways and ignores aggregates.
    let mut flat = host("f", 1, 1);
    assert!(flat.gateways().is_empty());
    flat.handle_aggregate(Instant::ZERO, crate::cell::CellId(1), Default::default());
    assert!(flat.aggregates().is_empty());
}
