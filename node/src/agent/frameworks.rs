//! The frameworks registered on this node: each one's bidder, its socket
//! connection (if attached) and its queue of status events awaiting
//! acknowledgement.
//!
//! Status events get a sequence number that grows per framework. They stay
//! in the queue until the framework acks them, are re-sent every
//! [`RESEND_AFTER`] while it is connected, and all of them on reattach. The
//! queue holds at most [`MAX_UNACKED`] events; beyond that the oldest
//! non-terminal event is dropped first (a later event of the same task
//! supersedes it), then the oldest terminal one.

use agora_protocol::bidder::{self, Bidder};
use agora_protocol::task::TaskStatus;
use agora_protocol::wire::StatusEvent;
use agora_protocol::{FrameworkId, Instant, NodeId};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::time::Duration;

/// Unacknowledged status events kept per framework.
pub const MAX_UNACKED: usize = 10_000;
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
    /// Tasks survive a disconnect this long.
    pub failover: Duration,
    /// Places its tasks.
    pub bidder: Bidder<ChaCha8Rng>,
    /// The attached connection.
    pub conn: Option<u64>,
    /// When it lost its connection.
    pub disconnected_at: Option<Instant>,
    /// Its unfinished tasks were killed after the failover timeout.
    pub failed_over: bool,
    next_seq: u64,
    unacked: BTreeMap<u64, Pending>,
    /// Events dropped because the queue was full.
    pub dropped: u64,
}

impl Framework {
    /// A new framework homed on `home`.
    pub fn new(
        home: NodeId,
        id: FrameworkId,
        name: String,
        role: String,
        weight: u32,
        failover: Duration,
        conn: u64,
    ) -> Self {
        let rng: ChaCha8Rng = rand::make_rng();
        Framework {
            bidder: Bidder::new(home, id.clone(), weight, bidder::Config::default(), rng),
            id,
            name,
            role,
            failover,
            conn: Some(conn),
            disconnected_at: None,
            failed_over: false,
            next_seq: 1,
            unacked: BTreeMap::new(),
            dropped: 0,
        }
    }

    /// Queues a status event and returns it for sending now.
    pub fn push_status(&mut self, now: Instant, name: String, status: TaskStatus) -> StatusEvent {
        let seq = self.next_seq;
        self.next_seq += 1;
        let event = StatusEvent { seq, name, status };
        if self.unacked.len() >= MAX_UNACKED {
            let victim = self
                .unacked
                .iter()
                .find(|(_, p)| !p.event.status.state.is_terminal())
                .or_else(|| self.unacked.iter().next())
                .map(|(s, _)| *s);
            if let Some(s) = victim {
                self.unacked.remove(&s);
                self.dropped += 1;
            }
        }
        self.unacked.insert(
            seq,
            Pending {
                event: event.clone(),
                sent_at: now,
            },
        );
        event
    }

    /// Removes an acknowledged event. Returns false if unknown (already
    /// acked, dropped, or never sent).
    pub fn ack(&mut self, task_id: &agora_protocol::TaskId, seq: u64) -> bool {
        match self.unacked.get(&seq) {
            Some(p) if p.event.status.task_id == *task_id => {
                self.unacked.remove(&seq);
                true
            }
            _ => false,
        }
    }

    /// Every unacknowledged event (on reattach), marked as sent now.
    pub fn all_unacked(&mut self, now: Instant) -> Vec<StatusEvent> {
        self.unacked
            .values_mut()
            .map(|p| {
                p.sent_at = now;
                p.event.clone()
            })
            .collect()
    }

    /// Events due for a re-send (at most `max`), marked as sent now.
    pub fn due_resends(&mut self, now: Instant, max: usize) -> Vec<StatusEvent> {
        self.unacked
            .values_mut()
            .filter(|p| p.sent_at + RESEND_AFTER <= now)
            .take(max)
            .map(|p| {
                p.sent_at = now;
                p.event.clone()
            })
            .collect()
    }

    /// Unacknowledged events.
    pub fn unacked_count(&self) -> usize {
        self.unacked.len()
    }

    /// True when disconnected past its failover timeout.
    pub fn failover_due(&self, now: Instant) -> bool {
        self.conn.is_none()
            && self
                .disconnected_at
                .is_some_and(|t| t + self.failover <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::TaskId;
    use agora_protocol::task::TaskState;

    fn fw() -> Framework {
        Framework::new(
            NodeId::new("n").unwrap(),
            FrameworkId::new("f-1@n").unwrap(),
            "f".into(),
            String::new(),
            1,
            Duration::from_secs(1),
            1,
        )
    }

    #[test]
    fn acks_resends_and_bounds() {
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
        for i in 0..(MAX_UNACKED + 5) {
            let state = if i == 0 {
                TaskState::Finished
            } else {
                TaskState::Running
            };
            f.push_status(
                Instant::ZERO,
                "j".into(),
                TaskStatus::new(t.clone(), state, None),
            );
        }
        assert_eq!(f.unacked_count(), MAX_UNACKED);
        // The terminal event survived; non-terminal ones were dropped first.
        assert!(f.unacked.contains_key(&2));
    }
}
