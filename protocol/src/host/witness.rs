//! Witnesses: who else knows the tasks a node runs for its own frameworks.
//!
//! A task's rows live on its home node's bidder and on the node running it.
//! When both are the same node X, nobody else knows the task, and while X is
//! declared dead a listing would drop it. So each node X picks a *witness*
//! ([`choose`]: the live member other than X with the highest rendezvous
//! score for `witness/X`, ties by node id) and sends it its *own tasks*
//! (those it runs for frameworks homed on it) whenever that set or the
//! witness changes, at most once per [`PACE`], and again every [`REFRESH`]
//! so that a restarted witness learns them. The witness keeps the latest
//! rows of each node it witnesses ([`Received`], bounded) and, while the
//! view holds that node dead, lists them as lost.
//!
//! ```text
//!   X (own tasks change, or witness moves)        W = choose(X, live)
//!     │  paced: one Witness{version, rows} per PACE, refresh per REFRESH
//!     └──────────────────────────────────────────► W keeps rows[X]
//!   X declared dead in W's view  ──►  W's task_rows() lists rows[X] as lost
//! ```
//!
//! Limits: at most [`MAX_LIST_ROWS`] rows per node (running first; more
//! are not witnessed); a task launched within the last [`PACE`] before X
//! died may be missing; a witness keeps at most [`MAX_WITNESSED`] nodes.
//! Two nodes that disagree about who is alive may pick different
//! witnesses: the old one is told to forget (an empty message) when it is
//! still alive.
//!
//! The two halves are plain data driven by the host: [`Sending`] decides
//! when and what to send; [`Received`] keeps what arrived.

use crate::ids::NodeId;
use crate::time::Instant;
use crate::wire::{MAX_LIST_ROWS, TaskRow, WitnessRows};
use std::collections::BTreeMap;
use std::time::Duration;

/// At most one message to the witness per this long.
pub const PACE: Duration = Duration::from_secs(1);

/// A non-empty set is sent again after this long even without a change.
pub const REFRESH: Duration = Duration::from_secs(30);

/// Most nodes one witness keeps rows for; past it the oldest-updated goes.
pub const MAX_WITNESSED: usize = 64;

/// The witness of `node`: the member of `live` other than `node` with the
/// highest [`crate::cell::rendezvous_score`] for `witness/<node>`, ties by
/// node id (the smaller wins). None when `node` is alone.
pub fn choose<'a>(node: &NodeId, live: impl IntoIterator<Item = &'a NodeId>) -> Option<NodeId> {
    let key = format!("witness/{node}");
    live.into_iter()
        .filter(|m| *m != node)
        .map(|m| (crate::cell::rendezvous_score(&key, m), m))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, m)| m.clone())
}

/// The sending half: when to send, to whom, with which version.
#[derive(Debug)]
pub(super) struct Sending {
    version: u64,
    /// The witness the last message went to (None: none sent, or no
    /// witness could be chosen).
    sent_to: Option<NodeId>,
    /// The last message sent was empty (true before any: the witness knows
    /// nothing of this node).
    sent_empty: bool,
    last_sent: Option<Instant>,
    /// When the timer fires.
    due: Option<Instant>,
    /// The own set or the membership may have changed since the last send.
    dirty: bool,
}

impl Sending {
    /// Versions start from the node's generation, so a restarted node's
    /// messages are newer than anything its witness holds.
    pub(super) fn new(generation: u64) -> Self {
        Sending {
            version: generation,
            sent_to: None,
            sent_empty: true,
            last_sent: None,
            due: None,
            dirty: false,
        }
    }

    /// Something may have changed (a launch or an end of an own task, or
    /// the membership); [`Sending::schedule`] sets the timer.
    pub(super) fn touch(&mut self) {
        self.dirty = true;
    }

    /// The membership changed, so the witness may have moved: only matters
    /// when the witness was last told of some tasks (an empty set stays
    /// empty until an own task changes, which touches).
    pub(super) fn touch_membership(&mut self) {
        if !self.sent_empty {
            self.dirty = true;
        }
    }

    /// Sets the timer for a pending change: now, or [`PACE`] after the last
    /// message.
    pub(super) fn schedule(&mut self, now: Instant) {
        if !self.dirty {
            return;
        }
        let at = self.last_sent.map_or(now, |t| (t + PACE).max(now));
        if self.due.is_none_or(|d| d > at) {
            self.due = Some(at);
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.due
    }

    /// True when the timer is due at `now`.
    pub(super) fn is_due(&self, now: Instant) -> bool {
        self.due.is_some_and(|d| d <= now)
    }

    /// True when nothing would be sent for an empty set (the witness was
    /// told it is empty, or never heard of this node): the host can skip
    /// choosing a witness.
    pub(super) fn quiet_when_empty(&self) -> bool {
        self.sent_empty
    }

    /// The timer fired: what to send, given the own rows now (already cut
    /// and ordered) and the witness now. An old witness that last got rows
    /// is told to forget when it differs from the new one.
    pub(super) fn fire(
        &mut self,
        now: Instant,
        rows: Vec<TaskRow>,
        witness: Option<NodeId>,
    ) -> Vec<(NodeId, WitnessRows)> {
        self.due = None;
        self.dirty = false;
        let empty = rows.is_empty();
        let mut out = Vec::new();
        if empty && self.sent_empty {
            return out;
        }
        if let Some(old) = &self.sent_to
            && Some(old) != witness.as_ref()
            && !self.sent_empty
        {
            self.version += 1;
            out.push((
                old.clone(),
                WitnessRows {
                    version: self.version,
                    rows: Vec::new(),
                },
            ));
        }
        if let Some(w) = &witness {
            self.version += 1;
            out.push((
                w.clone(),
                WitnessRows {
                    version: self.version,
                    rows,
                },
            ));
            self.last_sent = Some(now);
        }
        self.sent_to = witness;
        self.sent_empty = empty;
        if !empty {
            self.due = Some(now + REFRESH);
        }
        out
    }
}

/// Orders own rows for sending: running first, then by task id; cut to
/// [`MAX_LIST_ROWS`].
pub(super) fn cut(mut rows: Vec<TaskRow>) -> Vec<TaskRow> {
    rows.sort_by(|a, b| {
        (a.state != crate::task::TaskState::Running)
            .cmp(&(b.state != crate::task::TaskState::Running))
            .then_with(|| a.task_id.cmp(&b.task_id))
    });
    rows.truncate(MAX_LIST_ROWS);
    rows
}

#[derive(Debug)]
struct Entry {
    version: u64,
    /// When it was last replaced (a counter: oldest-updated goes first).
    updated: u64,
    rows: Vec<TaskRow>,
}

/// The receiving half: the latest rows of each node witnessed here, at most
/// [`MAX_WITNESSED`] nodes × [`MAX_LIST_ROWS`] rows.
#[derive(Debug, Default)]
pub(super) struct Received {
    nodes: BTreeMap<NodeId, Entry>,
    seq: u64,
}

impl Received {
    /// Rows from `from`. An older version than held is ignored; an empty
    /// list forgets the node. Rows are cut to [`MAX_LIST_ROWS`] and marked
    /// as placed on `from` (they are its own tasks).
    pub(super) fn record(&mut self, from: NodeId, msg: WitnessRows) {
        if self
            .nodes
            .get(&from)
            .is_some_and(|e| e.version >= msg.version)
        {
            return;
        }
        if msg.rows.is_empty() {
            self.nodes.remove(&from);
            return;
        }
        let mut rows = msg.rows;
        rows.truncate(MAX_LIST_ROWS);
        for r in &mut rows {
            r.node = Some(from.clone());
        }
        self.seq += 1;
        self.nodes.insert(
            from,
            Entry {
                version: msg.version,
                updated: self.seq,
                rows,
            },
        );
        while self.nodes.len() > MAX_WITNESSED {
            let Some(oldest) = self
                .nodes
                .iter()
                .min_by_key(|(_, e)| e.updated)
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            self.nodes.remove(&oldest);
        }
    }

    /// Forgets a node (it left the view, or came back as a new generation).
    pub(super) fn forget(&mut self, node: &NodeId) {
        self.nodes.remove(node);
    }

    /// Keeps only the nodes `keep` says yes to.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&NodeId) -> bool) {
        self.nodes.retain(|n, _| keep(n));
    }

    /// The witnessed nodes and their rows.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&NodeId, &[TaskRow])> {
        self.nodes.iter().map(|(n, e)| (n, e.rows.as_slice()))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nid(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn the_witness_is_never_the_node_and_does_not_depend_on_order() {
        let members: Vec<NodeId> = (0..20).map(|i| nid(&format!("n{i}"))).collect();
        let x = nid("n3");
        let w = choose(&x, &members).unwrap();
        assert_ne!(w, x);
        let reversed: Vec<NodeId> = members.iter().rev().cloned().collect();
        assert_eq!(choose(&x, &reversed), Some(w.clone()));
        // Without it, someone else.
        let without: Vec<NodeId> = members.iter().filter(|m| **m != w).cloned().collect();
        assert_ne!(choose(&x, &without), Some(w));
        assert_eq!(choose(&x, std::slice::from_ref(&x)), None);
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_and_empty_forgets() {
        let mut r = Received::default();
        let row = |t: &str| TaskRow {
            task_id: crate::ids::TaskId::new(t).unwrap(),
            name: "j".into(),
            framework: crate::ids::FrameworkId::new("f").unwrap(),
            state: crate::task::TaskState::Running,
            node: None,
            exit_code: None,
            resources: crate::resources::Resources::ZERO,
            reason: None,
        };
        r.record(
            nid("x"),
            WitnessRows {
                version: 5,
                rows: vec![row("f.1"), row("f.2")],
            },
        );
        r.record(
            nid("x"),
            WitnessRows {
                version: 4,
                rows: vec![row("f.1")],
            },
        );
        let (_, rows) = r.iter().next().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].node, Some(nid("x")));
        r.record(
            nid("x"),
            WitnessRows {
                version: 6,
                rows: Vec::new(),
            },
        );
        assert!(r.is_empty());
    }

    #[test]
    fn a_witness_keeps_a_bounded_number_of_nodes() {
        let mut r = Received::default();
        let row = TaskRow {
            task_id: crate::ids::TaskId::new("f.1").unwrap(),
            name: "j".into(),
            framework: crate::ids::FrameworkId::new("f").unwrap(),
            state: crate::task::TaskState::Running,
            node: None,
            exit_code: None,
            resources: crate::resources::Resources::ZERO,
            reason: None,
        };
        for i in 0..(MAX_WITNESSED + 5) {
            r.record(
                nid(&format!("n{i}")),
                WitnessRows {
                    version: 1,
                    rows: vec![row.clone()],
                },
            );
        }
        assert_eq!(r.iter().count(), MAX_WITNESSED);
        // The oldest-updated went.
        assert!(r.iter().all(|(n, _)| *n != nid("n0")));
    }
}
