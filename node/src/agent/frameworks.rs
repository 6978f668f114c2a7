//! The sessions of the frameworks registered on this node: each one's socket
//! connection (if attached), failover state and queue of status events
//! awaiting acknowledgement. Its bidder is the host's
//! ([`agora_protocol::host::Host`]).
//!
//! Status events get a sequence number that grows per framework. They stay
//! in the queue until the framework acks them, are re-sent every
//! [`RESEND_AFTER`] while it is connected, and all of them on reattach. The
//! queue holds at most one event per task, its newest: a later event of the
//! same task supersedes an unacknowledged earlier one (which was sent
//! already). A terminal event is never dropped; the queue is bounded because
//! the core refuses a submit while unfinished tasks plus unacknowledged
//! terminal events would pass the bidder's task limit (backpressure instead
//! of loss).

use agora_protocol::TaskId;
use agora_protocol::task::TaskStatus;
use agora_protocol::wire::StatusEvent;
use agora_protocol::{FrameworkId, Instant};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Re-send an unacknowledged event after this long.
pub const RESEND_AFTER: Duration = Duration::from_secs(5);
/// Most frameworks kept on one node.
pub const MAX_FRAMEWORKS: usize = 256;

#[derive(Debug)]
struct Pending {
    event: StatusEvent,
    sent_at: Instant,
}

/// One registered framework.
#[derive(Debug)]
pub struct Framework {
    /// Its id.
    pub id: FrameworkId,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Its DRF weight.
    pub weight: u32,
    /// Tasks survive a disconnect this long.
    pub failover: Duration,
    /// The node's own framework (the HTTP API's): never fails over, never
    /// forgotten.
    pub internal: bool,
    /// The attached connection.
    pub conn: Option<u64>,
    /// When it lost its connection.
    pub disconnected_at: Option<Instant>,
    /// Its unfinished tasks were killed after the failover timeout.
    pub failed_over: bool,
    next_seq: u64,
    unacked: BTreeMap<u64, Pending>,
    /// (last sent, seq) of every queued event: re-sends go oldest-sent
    /// first, so a framework that acks nothing still hears every event in
    /// turn (by seq, the lowest few thousand would be re-sent forever).
    by_sent: BTreeSet<(Instant, u64)>,
    /// Task → the sequence number of its queued event.
    latest: HashMap<TaskId, u64>,
    terminal_unacked: usize,
}

impl Framework {
    /// Numbers this framework's events from `floor` on (a framework restored
    /// after its node restarted: its events' `seq` keeps growing).
    pub fn events_from(&mut self, floor: u64) {
        self.next_seq = self.next_seq.max(floor);
    }

    /// A new framework session, attached to `conn` (None for the node's
    /// internal framework, which is never detached and never forgotten).
    pub fn new(
        id: FrameworkId,
        name: String,
        role: String,
        weight: u32,
        failover: Duration,
        conn: Option<u64>,
    ) -> Self {
        Framework {
            id,
            name,
            role,
            weight,
            failover,
            internal: conn.is_none(),
            conn,
            disconnected_at: None,
            failed_over: false,
            next_seq: 1,
            unacked: BTreeMap::new(),
            by_sent: BTreeSet::new(),
            latest: HashMap::new(),
            terminal_unacked: 0,
        }
    }

    /// Queues a status event and returns it for sending now.
    pub fn push_status(&mut self, now: Instant, name: String, status: TaskStatus) -> StatusEvent {
        let seq = self.next_seq;
        self.next_seq += 1;
        let event = StatusEvent { seq, name, status };
        if let Some(old) = self.latest.insert(event.status.task_id.clone(), seq) {
            self.remove(old);
        }
        if event.status.state.is_terminal() {
            self.terminal_unacked += 1;
        }
        self.unacked.insert(
            seq,
            Pending {
                event: event.clone(),
                sent_at: now,
            },
        );
        self.by_sent.insert((now, seq));
        event
    }

    fn remove(&mut self, seq: u64) {
        if let Some(p) = self.unacked.remove(&seq) {
            self.by_sent.remove(&(p.sent_at, seq));
            if p.event.status.state.is_terminal() {
                self.terminal_unacked -= 1;
            }
        }
    }

    /// Removes an acknowledged event. Returns false if unknown (already
    /// acked, superseded, or never sent).
    pub fn ack(&mut self, task_id: &TaskId, seq: u64) -> bool {
        match self.unacked.get(&seq) {
            Some(p) if p.event.status.task_id == *task_id => {
                self.remove(seq);
                if self.latest.get(task_id) == Some(&seq) {
                    self.latest.remove(task_id);
                }
                true
            }
            _ => false,
        }
    }

    /// Every unacknowledged event (on reattach), marked as sent now.
    pub fn all_unacked(&mut self, now: Instant) -> Vec<StatusEvent> {
        let seqs: Vec<u64> = self.unacked.keys().copied().collect();
        self.mark_sent(now, seqs)
    }

    /// Events due for a re-send (at most `max`, those sent longest ago
    /// first), marked as sent now.
    pub fn due_resends(&mut self, now: Instant, max: usize) -> Vec<StatusEvent> {
        let seqs: Vec<u64> = self
            .by_sent
            .iter()
            .take_while(|(t, _)| *t + RESEND_AFTER <= now)
            .take(max)
            .map(|(_, seq)| *seq)
            .collect();
        self.mark_sent(now, seqs)
    }

    fn mark_sent(&mut self, now: Instant, seqs: Vec<u64>) -> Vec<StatusEvent> {
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(p) = self.unacked.get_mut(&seq) {
                self.by_sent.remove(&(p.sent_at, seq));
                p.sent_at = now;
                self.by_sent.insert((now, seq));
                out.push(p.event.clone());
            }
        }
        out
    }

    /// Unacknowledged events.
    pub fn unacked_count(&self) -> usize {
        self.unacked.len()
    }

    /// Unacknowledged terminal events (each is one accepted task's end).
    pub fn unacked_terminal(&self) -> usize {
        self.terminal_unacked
    }

    /// The newest unacknowledged status of a task, if any.
    pub fn unacked_status(&self, task_id: &TaskId) -> Option<(String, TaskStatus)> {
        let p = self.unacked.get(self.latest.get(task_id)?)?;
        Some((p.event.name.clone(), p.event.status.clone()))
    }

    /// True when disconnected past its failover timeout.
    pub fn failover_due(&self, now: Instant) -> bool {
        !self.internal
            && self.conn.is_none()
            && self
                .disconnected_at
                .is_some_and(|t| t + self.failover <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::task::TaskState;

    fn fw() -> Framework {
        Framework::new(
            FrameworkId::new("f-1@n").unwrap(),
            "f".into(),
            String::new(),
            1,
            Duration::from_secs(1),
            Some(1),
        )
    }

    #[test]
    fn acks_and_resends() {
        let mut f = fw();
        let t = TaskId::new("f-1@n.1").unwrap();
        let e = f.push_status(
            Instant::ZERO,
            "job".into(),
            TaskStatus::new(t.clone(), TaskState::Running, None),
        );
        assert_eq!(e.seq, 1);
        assert!(f.due_resends(Instant::from_millis(1000), 10).is_empty());
        assert_eq!(f.due_resends(Instant::from_millis(5000), 10).len(), 1);
        assert!(!f.ack(&TaskId::new("other").unwrap(), 1));
        assert!(f.ack(&t, 1));
        assert!(!f.ack(&t, 1));
        assert_eq!(f.unacked_count(), 0);
    }

    #[test]
    fn resends_reach_every_event_in_turn() {
        // Issue 11: re-sends went by seq, 512 a tick: past 10,240 events a
        // framework that acked nothing never heard the newest again.
        let mut f = fw();
        for i in 1..=3000 {
            let t = TaskId::new(format!("f-1@n.{i}")).unwrap();
            f.push_status(
                Instant::ZERO,
                "j".into(),
                TaskStatus::new(t, TaskState::Failed, None),
            );
        }
        let mut heard = std::collections::BTreeSet::new();
        let mut now = Instant::from_millis(5000);
        for _ in 0..6 {
            heard.extend(f.due_resends(now, 512).into_iter().map(|e| e.seq));
            now = now + Duration::from_millis(250);
        }
        assert_eq!(heard.len(), 3000, "every event re-sent once in 6 ticks");
        assert!(f.due_resends(now, 512).is_empty(), "none due again yet");
    }

    #[test]
    fn a_later_event_supersedes_and_terminal_events_are_never_dropped() {
        // Issue 11: past 10,000 unacknowledged events the old queue dropped
        // terminal events, and their tasks' fate could not be learned.
        let mut f = fw();
        let n = 25_000;
        for i in 1..=n {
            let t = TaskId::new(format!("f-1@n.{i}")).unwrap();
            f.push_status(
                Instant::ZERO,
                "j".into(),
                TaskStatus::new(t.clone(), TaskState::Running, None),
            );
            f.push_status(
                Instant::ZERO,
                "j".into(),
                TaskStatus::new(t, TaskState::Failed, None),
            );
        }
        // One event per task, its terminal one.
        assert_eq!(f.unacked_count(), n);
        assert_eq!(f.unacked_terminal(), n);
        let t = TaskId::new("f-1@n.7").unwrap();
        let (_, st) = f.unacked_status(&t).unwrap();
        assert_eq!(st.state, TaskState::Failed);
        // Acking the superseded event does nothing; acking the newest does.
        assert!(!f.ack(&t, 13));
        assert!(f.ack(&t, 14));
        assert_eq!(f.unacked_terminal(), n - 1);
        assert!(f.unacked_status(&t).is_none());
    }
}
