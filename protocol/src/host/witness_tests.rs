//! The witness on hosts on a virtual clock: a node's own tasks reach its
//! witness, which lists them lost while the node is dead.

use super::tests::*;
use super::*;
use crate::task::TaskState;

/// x (8 cpus) runs tasks of a framework homed on it; the two others are too
/// small to take them. Returns the net, x's witness and the third node.
fn cluster() -> (Net, NodeId, NodeId) {
    let mut net = Net::new(vec![host("x", 8, 10), host("y", 1, 20), host("z", 1, 30)]);
    net.h("x").add_framework(fid("f@x"), 1, rng(1)).unwrap();
    let w = net.h("x").witness().unwrap();
    assert_ne!(w, nid("x"));
    let other = if w == nid("y") { nid("z") } else { nid("y") };
    (net, w, other)
}

fn submit(net: &mut Net, name: &str) -> TaskId {
    let now = net.now;
    let ids = net
        .h("x")
        .submit(now, &fid("f@x"), vec![spec(name, 2)])
        .unwrap();
    net.settle();
    ids[0].clone()
}

fn row_of(net: &Net, node: &NodeId, task: &TaskId) -> Option<TaskRow> {
    net.hosts[node]
        .task_rows()
        .into_iter()
        .find(|r| r.task_id == *task)
}

fn to(net: &Net, w: &NodeId) -> Vec<crate::wire::WitnessRows> {
    net.witness
        .iter()
        .filter(|(f, t, _)| *f == nid("x") && t == w)
        .map(|(_, _, m)| m.clone())
        .collect()
}

#[test]
fn a_dead_nodes_own_task_is_listed_lost_by_its_witness_only_while_dead() {
    let (mut net, w, other) = cluster();
    let task = submit(&mut net, "job");
    net.advance(Instant::from_millis(1_500));
    assert!(net.running[&nid("x")].contains(&task));
    let sent = to(&net, &w);
    assert!(
        sent.last().is_some_and(|m| m
            .rows
            .iter()
            .any(|r| r.task_id == task && r.state == TaskState::Running)),
        "{sent:?}"
    );
    // Nobody but x knows the task, and while x lives nobody lists it lost.
    assert!(row_of(&net, &other, &task).is_none());
    assert!(row_of(&net, &w, &task).is_none());

    // x is paused and declared dead (gossip first: a newer ledger from a
    // node not held alive would look like a restart, given a grace).
    net.gossip();
    net.mute.insert(nid("x"));
    net.gossip();
    assert!(
        row_of(&net, &other, &task).is_none(),
        "only the witness knows"
    );
    let lost = row_of(&net, &w, &task).expect("the witness lists it");
    assert_eq!(lost.state, TaskState::Lost);
    assert_eq!(lost.node, Some(nid("x")));
    let reason = lost.reason.unwrap();
    assert!(reason.contains("node x") && reason.contains(&format!("witness {w}")));
    assert!(reason.contains("declared dead"), "{reason}");
    // The witness answers a peer's listing with it.
    let (rows, _) = crate::wire::TaskQuery::all(1).page(net.hosts[&w].task_rows());
    assert!(
        rows.iter()
            .any(|r| r.task_id == task && r.state == TaskState::Lost)
    );

    // x comes back: its own rows are its to tell, not lost.
    net.mute.remove(&nid("x"));
    net.gossip();
    assert!(row_of(&net, &w, &task).is_none());
    assert_eq!(
        row_of(&net, &nid("x"), &task).map(|r| r.state),
        Some(TaskState::Running)
    );
}

#[test]
fn launches_within_a_second_are_one_message_and_the_set_is_refreshed() {
    let (mut net, w, _) = cluster();
    let a = submit(&mut net, "a");
    net.advance(Instant::from_millis(200));
    let before = to(&net, &w).len();
    assert_eq!(before, 1, "the first launch is sent at once");
    // Three more launches within the second after it: one message, after
    // the pace.
    for n in ["b", "c", "d"] {
        submit(&mut net, n);
        let t = net.now + Duration::from_millis(200);
        net.advance(t);
    }
    assert_eq!(to(&net, &w).len(), before, "nothing before the pace");
    net.advance(Instant::from_millis(1_500));
    let sent = to(&net, &w);
    let new: Vec<_> = sent[before..].to_vec();
    assert_eq!(new.len(), 1, "one message for three launches: {new:?}");
    let last = &new[0];
    assert_eq!(last.rows.len(), 4, "{last:?}");
    assert!(last.rows.iter().any(|r| r.task_id == a));
    // Versions grow.
    assert!(sent.windows(2).all(|p| p[0].version < p[1].version));
    assert!(sent[0].version > 10, "versions start from the generation");
    // Unchanged: refreshed every 30 s, not more.
    let n = to(&net, &w).len();
    let t = net.now + Duration::from_secs(61);
    net.advance(t);
    let refreshes = to(&net, &w).len() - n;
    assert!(
        (2..=3).contains(&refreshes),
        "{refreshes} refreshes in 61 s"
    );
}

#[test]
fn an_empty_set_makes_the_witness_forget() {
    let (mut net, w, _) = cluster();
    let task = submit(&mut net, "job");
    net.advance(Instant::from_millis(1_500));
    assert!(!net.hosts[&w].witnessed.is_empty());
    let now = net.now;
    net.h("x").kill(now, None, &task).unwrap();
    net.settle();
    net.advance(now + Duration::from_secs(3));
    assert!(!net.running[&nid("x")].contains(&task));
    assert!(to(&net, &w).last().unwrap().rows.is_empty());
    assert!(net.hosts[&w].witnessed.is_empty(), "the witness forgot x");
    // Sent once: no refresh of an empty set.
    let n = net.witness.len();
    let t = net.now + Duration::from_secs(61);
    net.advance(t);
    assert_eq!(net.witness.len(), n);
}

#[test]
fn the_witness_moves_when_the_old_one_dies() {
    let (mut net, w, other) = cluster();
    let task = submit(&mut net, "job");
    net.advance(Instant::from_millis(1_500));
    // The witness dies; x sends its set to the next one.
    net.gossip();
    net.mute.insert(w.clone());
    net.gossip();
    let t = net.now + Duration::from_secs(2);
    net.advance(t);
    assert_eq!(net.h("x").witness(), Some(other.clone()));
    assert!(
        to(&net, &other)
            .last()
            .is_some_and(|m| m.rows.iter().any(|r| r.task_id == task)),
        "x re-sent to the new witness"
    );
    // Then x dies too: the new witness lists the task lost.
    net.gossip();
    net.mute.insert(nid("x"));
    net.gossip();
    assert_eq!(
        row_of(&net, &other, &task).map(|r| r.state),
        Some(TaskState::Lost)
    );
}
