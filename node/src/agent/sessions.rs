//! The framework sessions of one node: which socket connections are open,
//! which framework each one is (see [`super::frameworks::Framework`] for one
//! framework's queue of status events), who gets offers and when, and when a
//! disconnected framework fails over or is forgotten. A sans-IO machine: the
//! core calls it with the clock and carries out what it returns; the
//! framework's bidder is the host's.
//!
//! Rules (docs/FRAMEWORK_API.md):
//! - a connection registers once; `register` with a `framework_id` reattaches
//!   a framework whose session is still kept, taking it from any connection
//!   that had it, and re-sends every unacknowledged event;
//! - a framework disconnected past its failover timeout has its unfinished
//!   tasks killed ([`Sessions::failovers`]); one disconnected with nothing
//!   left running is forgotten after its failover timeout or [`FORGET_IDLE`],
//!   whichever is shorter (its task history stays with the host);
//! - at most [`MAX_FRAMEWORKS`] sessions; a registration past that forgets
//!   the framework idle longest, if one is idle;
//! - each offers subscriber gets a new frame when the view changed, at most
//!   once per [`OFFER_EVERY`] counted from its last frame (the one answering
//!   its subscribe included);
//! - every connection that registers with the operator role (the `agora`
//!   CLI) joins the node's one operator framework instead of making a
//!   framework of its own, so a node holds one framework per operator however
//!   many `agora run`s there are. Each such connection has its own queue of
//!   status events: it hears about the tasks it submitted, and its queue goes
//!   with it when it closes (the tasks run on; the operator framework never
//!   fails over and is never forgotten).

use super::frameworks::{Framework, MAX_FRAMEWORKS};
use agora_protocol::task::TaskStatus;
use agora_protocol::wire::StatusEvent;
use agora_protocol::{FrameworkId, Instant, TaskId};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Offers are sent at most this often to one connection.
pub const OFFER_EVERY: Duration = Duration::from_secs(1);
/// Re-sends per framework per tick.
pub const RESENDS_PER_TICK: usize = 512;
/// A disconnected framework with nothing left running is forgotten after
/// its failover timeout or this long, whichever is shorter.
pub const FORGET_IDLE: Duration = Duration::from_secs(600);

/// One socket connection.
#[derive(Debug, Default)]
struct Conn {
    framework: Option<FrameworkId>,
    offers: bool,
    offers_sent: Option<Instant>,
    offers_stale: bool,
    /// The status queue of a connection attached to the operator framework.
    queue: Option<Framework>,
    /// Whether its peer may act as the operator (see `crate::socket::Peer`).
    may_operate: bool,
    /// Its peer's uid, when known (for refusals).
    uid: Option<u32>,
}

/// Why a registration was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// The connection is registered already (as this framework).
    Already(FrameworkId),
    /// `framework_id` names no session kept here.
    Unknown(FrameworkId),
    /// The table is full and no framework is idle.
    Full,
    /// The connection's peer (this uid, when known) may not act as the operator.
    Forbidden(Option<u32>),
}

/// The sessions. See the module documentation.
#[derive(Debug, Default)]
pub struct Sessions {
    frameworks: BTreeMap<FrameworkId, Framework>,
    conns: BTreeMap<u64, Conn>,
    /// The view changed since subscribers were last marked stale.
    offers_dirty: bool,
    /// The node's operator framework, once an operator registered.
    operator: Option<FrameworkId>,
    /// The operator framework's unfinished tasks → the connection that
    /// submitted them (at most the bidder's task limit).
    submitter: HashMap<TaskId, u64>,
}

impl Sessions {
    /// A connection opened, from `peer`.
    pub fn open(&mut self, conn: u64, peer: crate::socket::Peer) {
        self.conns.insert(
            conn,
            Conn {
                may_operate: peer.operator,
                uid: peer.uid,
                ..Conn::default()
            },
        );
    }

    /// Whether a connection's peer may act as the operator; `Err` holds its
    /// uid, when known, for the refusal.
    pub fn may_operate(&self, conn: u64) -> Result<(), Option<u32>> {
        match self.conns.get(&conn) {
            Some(c) if c.may_operate => Ok(()),
            Some(c) => Err(c.uid),
            None => Err(None),
        }
    }

    /// A connection closed (or was closed); its framework keeps its tasks
    /// for its failover timeout. Returns that framework.
    pub fn close(&mut self, now: Instant, conn: u64) -> Option<FrameworkId> {
        let c = self.conns.remove(&conn)?;
        if c.queue.is_some() {
            // An operator connection: its queue goes, the tasks run on.
            self.submitter.retain(|_, by| *by != conn);
            return None;
        }
        let fw = c.framework?;
        let f = self.frameworks.get_mut(&fw)?;
        if f.conn != Some(conn) {
            return None;
        }
        f.conn = None;
        f.disconnected_at = Some(now);
        Some(fw)
    }

    /// The framework a connection registered as.
    pub fn framework_of(&self, conn: u64) -> Option<&FrameworkId> {
        self.conns.get(&conn)?.framework.as_ref()
    }

    /// A framework's session.
    pub fn get(&self, fw: &FrameworkId) -> Option<&Framework> {
        self.frameworks.get(fw)
    }

    /// Every session.
    pub fn frameworks(&self) -> impl Iterator<Item = &Framework> {
        self.frameworks.values()
    }

    /// Checks that `conn` may register, forgetting an idle framework when
    /// the table is full (`idle(fw)` says whether one has nothing active;
    /// the forgotten framework is returned, for the host to remove).
    ///
    /// # Errors
    /// The connection is registered already, or the table is full.
    pub fn room_for(
        &mut self,
        conn: u64,
        idle: impl Fn(&FrameworkId) -> bool,
    ) -> Result<Option<FrameworkId>, RegisterError> {
        if let Some(fw) = self.framework_of(conn) {
            return Err(RegisterError::Already(fw.clone()));
        }
        if self.frameworks.len() < MAX_FRAMEWORKS {
            return Ok(None);
        }
        let victim = self
            .frameworks
            .values()
            .filter(|f| !f.internal && f.conn.is_none() && f.unacked_count() == 0 && idle(&f.id))
            .min_by_key(|f| f.disconnected_at)
            .map(|f| f.id.clone())
            .ok_or(RegisterError::Full)?;
        self.frameworks.remove(&victim);
        Ok(Some(victim))
    }

    /// Adds a new framework session (attached to `f.conn`, if any).
    pub fn insert(&mut self, f: Framework) {
        if let Some(conn) = f.conn
            && let Some(c) = self.conns.get_mut(&conn)
        {
            c.framework = Some(f.id.clone());
        }
        self.frameworks.insert(f.id.clone(), f);
    }

    /// Reattaches a kept framework to `conn`; returns the events to
    /// re-send (every unacknowledged one).
    ///
    /// # Errors
    /// The connection is registered already, or the framework is unknown.
    pub fn reattach(
        &mut self,
        now: Instant,
        conn: u64,
        id: &FrameworkId,
    ) -> Result<Vec<StatusEvent>, RegisterError> {
        if let Some(fw) = self.framework_of(conn) {
            return Err(RegisterError::Already(fw.clone()));
        }
        let f = self
            .frameworks
            .get_mut(id)
            .filter(|f| !f.internal)
            .ok_or_else(|| RegisterError::Unknown(id.clone()))?;
        let old = f.conn.replace(conn);
        f.disconnected_at = None;
        f.failed_over = false;
        let events = f.all_unacked(now);
        if let Some(old) = old
            && old != conn
            && let Some(c) = self.conns.get_mut(&old)
        {
            c.framework = None;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.framework = Some(id.clone());
        }
        Ok(events)
    }

    /// Forgets a framework's session.
    pub fn forget(&mut self, id: &FrameworkId) {
        self.frameworks.remove(id);
    }

    /// The node's operator framework, if an operator registered.
    pub fn operator(&self) -> Option<&FrameworkId> {
        self.operator.as_ref()
    }

    /// Makes `f` the node's operator framework (internal: never failed over
    /// or forgotten).
    pub fn set_operator(&mut self, f: Framework) {
        self.operator = Some(f.id.clone());
        self.frameworks.insert(f.id.clone(), f);
    }

    /// Attaches `conn` to the operator framework with a queue of its own.
    ///
    /// # Errors
    /// The connection is registered already, its peer may not act as the
    /// operator, or there is no operator framework yet.
    pub fn join_operator(
        &mut self,
        conn: u64,
        failover: Duration,
    ) -> Result<FrameworkId, RegisterError> {
        if let Some(fw) = self.framework_of(conn) {
            return Err(RegisterError::Already(fw.clone()));
        }
        self.may_operate(conn).map_err(RegisterError::Forbidden)?;
        let id = self.operator.clone().ok_or(RegisterError::Full)?;
        let c = self.conns.entry(conn).or_default();
        c.framework = Some(id.clone());
        c.queue = Some(Framework::new(
            id.clone(),
            "operator".into(),
            agora_protocol::wire::OPERATOR_ROLE.into(),
            1,
            failover,
            Some(conn),
        ));
        Ok(id)
    }

    /// Tasks a connection submitted: an operator connection hears their
    /// status events.
    pub fn submitted(&mut self, conn: u64, ids: &[TaskId]) {
        if self.conns.get(&conn).is_some_and(|c| c.queue.is_some()) {
            for id in ids {
                self.submitter.insert(id.clone(), conn);
            }
        }
    }

    /// The operator connections (for tests and metrics).
    pub fn operator_conns(&self) -> usize {
        self.conns.values().filter(|c| c.queue.is_some()).count()
    }

    /// Queues a status event for a framework; returns the connection to
    /// send it to now, if the framework is attached.
    pub fn push_status(
        &mut self,
        now: Instant,
        fw: &FrameworkId,
        name: String,
        status: TaskStatus,
    ) -> Option<(Option<u64>, StatusEvent)> {
        if self.operator.as_ref() == Some(fw) {
            let task = status.task_id.clone();
            let conn = if status.state.is_terminal() {
                self.submitter.remove(&task)?
            } else {
                *self.submitter.get(&task)?
            };
            let q = self.conns.get_mut(&conn)?.queue.as_mut()?;
            return Some((Some(conn), q.push_status(now, name, status)));
        }
        let f = self.frameworks.get_mut(fw)?;
        let e = f.push_status(now, name, status);
        Some((f.conn, e))
    }

    /// A status event was handled.
    pub fn ack(&mut self, conn: u64, fw: &FrameworkId, task_id: &TaskId, seq: u64) {
        if let Some(q) = self.conns.get_mut(&conn).and_then(|c| c.queue.as_mut()) {
            q.ack(task_id, seq);
        } else if let Some(f) = self.frameworks.get_mut(fw) {
            f.ack(task_id, seq);
        }
    }

    /// The newest unacknowledged status of a task, as `conn` would hear it.
    pub fn unacked_status(
        &self,
        conn: u64,
        fw: &FrameworkId,
        task_id: &TaskId,
    ) -> Option<(String, TaskStatus)> {
        match self.conns.get(&conn).and_then(|c| c.queue.as_ref()) {
            Some(q) => q.unacked_status(task_id),
            None => self.frameworks.get(fw)?.unacked_status(task_id),
        }
    }

    /// Unacknowledged terminal events of a framework (of every connection
    /// of the operator framework).
    pub fn unacked_terminal(&self, fw: &FrameworkId) -> usize {
        if self.operator.as_ref() == Some(fw) {
            return self
                .conns
                .values()
                .filter_map(|c| c.queue.as_ref())
                .map(Framework::unacked_terminal)
                .sum();
        }
        self.frameworks
            .get(fw)
            .map_or(0, Framework::unacked_terminal)
    }

    /// Status events due for a re-send, with their connection.
    pub fn resends(&mut self, now: Instant) -> Vec<(u64, StatusEvent)> {
        let mut out = Vec::new();
        for (conn, c) in &mut self.conns {
            if let Some(q) = c.queue.as_mut() {
                out.extend(
                    q.due_resends(now, RESENDS_PER_TICK)
                        .into_iter()
                        .map(|e| (*conn, e)),
                );
            }
        }
        for f in self.frameworks.values_mut() {
            if let Some(conn) = f.conn {
                out.extend(
                    f.due_resends(now, RESENDS_PER_TICK)
                        .into_iter()
                        .map(|e| (conn, e)),
                );
            }
        }
        out
    }

    /// Frameworks whose failover timeout just passed (each once): their
    /// unfinished tasks are to be killed.
    pub fn failovers(&mut self, now: Instant) -> Vec<FrameworkId> {
        let mut out = Vec::new();
        for f in self.frameworks.values_mut() {
            if f.failover_due(now) && !f.failed_over {
                f.failed_over = true;
                out.push(f.id.clone());
            }
        }
        out
    }

    /// Disconnected frameworks idle long enough to forget, if nothing of
    /// theirs is active (`idle`); they are removed here and returned for
    /// the host to remove.
    pub fn forget_idle(
        &mut self,
        now: Instant,
        idle: impl Fn(&FrameworkId) -> bool,
    ) -> Vec<FrameworkId> {
        let gone: Vec<FrameworkId> = self
            .frameworks
            .values()
            .filter(|f| {
                !f.internal
                    && f.conn.is_none()
                    && f.disconnected_at
                        .is_some_and(|t| now - t >= f.failover.min(FORGET_IDLE))
                    && idle(&f.id)
            })
            .map(|f| f.id.clone())
            .collect();
        for id in &gone {
            self.frameworks.remove(id);
        }
        gone
    }

    /// A connection subscribes to offers; it is sent a frame now.
    pub fn subscribe(&mut self, now: Instant, conn: u64) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.offers = true;
            c.offers_sent = Some(now);
            c.offers_stale = false;
        }
    }

    /// A connection unsubscribes.
    pub fn unsubscribe(&mut self, conn: u64) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.offers = false;
        }
    }

    /// The view changed: subscribers get a new frame when their pace
    /// allows.
    pub fn view_changed(&mut self) {
        self.offers_dirty = true;
    }

    /// Subscribers due a new offers frame now (marked as sent).
    pub fn offers_due(&mut self, now: Instant) -> Vec<u64> {
        if std::mem::take(&mut self.offers_dirty) {
            for c in self.conns.values_mut().filter(|c| c.offers) {
                c.offers_stale = true;
            }
        }
        let mut due = Vec::new();
        for (id, c) in &mut self.conns {
            if c.offers && c.offers_stale && c.offers_sent.is_none_or(|t| now - t >= OFFER_EVERY) {
                c.offers_stale = false;
                c.offers_sent = Some(now);
                due.push(*id);
            }
        }
        due
    }

    /// The number of open connections.
    pub fn conns(&self) -> usize {
        self.conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::Peer;
    use agora_protocol::task::TaskState;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn fw(id: &str, conn: Option<u64>, failover: Duration) -> Framework {
        Framework::new(
            FrameworkId::new(id).unwrap(),
            "f".into(),
            String::new(),
            1,
            failover,
            conn,
        )
    }

    #[test]
    fn a_disconnected_framework_fails_over_once_then_is_forgotten() {
        let mut s = Sessions::default();
        s.open(1, Peer::trusted());
        s.insert(fw("a@n", Some(1), Duration::from_secs(10)));
        assert_eq!(s.framework_of(1).map(FrameworkId::as_str), Some("a@n"));
        let id = FrameworkId::new("a@n").unwrap();
        assert_eq!(s.close(ms(1000), 1), Some(id.clone()));
        assert!(s.failovers(ms(10_999)).is_empty());
        assert_eq!(s.failovers(ms(11_000)), vec![id.clone()]);
        assert!(s.failovers(ms(12_000)).is_empty(), "once");
        // Not forgotten while something of it is active.
        assert!(s.forget_idle(ms(12_000), |_| false).is_empty());
        assert_eq!(s.forget_idle(ms(12_000), |_| true), vec![id.clone()]);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn a_reattach_takes_the_framework_and_resends_what_is_unacked() {
        let mut s = Sessions::default();
        s.open(1, Peer::trusted());
        s.open(2, Peer::trusted());
        s.insert(fw("a@n", Some(1), Duration::from_secs(10)));
        let id = FrameworkId::new("a@n").unwrap();
        let t = TaskId::new("a@n.1").unwrap();
        let (to, e) = s
            .push_status(
                ms(0),
                &id,
                "j".into(),
                TaskStatus::new(t.clone(), TaskState::Running, None),
            )
            .unwrap();
        assert_eq!(to, Some(1));
        let events = s.reattach(ms(100), 2, &id).unwrap();
        assert_eq!(events, vec![e.clone()]);
        assert_eq!(s.framework_of(1), None, "the old connection lost it");
        assert_eq!(s.framework_of(2), Some(&id));
        assert_eq!(
            s.reattach(ms(100), 2, &id),
            Err(RegisterError::Already(id.clone()))
        );
        s.ack(2, &id, &t, e.seq);
        assert!(s.resends(ms(60_000)).is_empty());
        assert_eq!(
            s.reattach(ms(0), 1, &FrameworkId::new("x").unwrap()),
            Err(RegisterError::Unknown(FrameworkId::new("x").unwrap()))
        );
    }

    #[test]
    fn a_full_table_forgets_the_idlest_but_never_the_internal_one() {
        let mut s = Sessions::default();
        s.insert(fw("internal@n", None, Duration::from_secs(3600)));
        for i in 1..MAX_FRAMEWORKS {
            let c = i as u64;
            s.open(c, Peer::trusted());
            s.insert(fw(&format!("f{i}@n"), Some(c), Duration::from_secs(10)));
            s.close(ms(c), c);
        }
        s.open(9999, Peer::trusted());
        let gone = s.room_for(9999, |_| true).unwrap();
        assert_eq!(gone.map(|f| f.to_string()), Some("f1@n".into()));
        // Nothing idle: full.
        s.insert(fw("g@n", None, Duration::from_secs(10)));
        assert_eq!(s.room_for(9999, |_| false), Err(RegisterError::Full));
        assert!(s.get(&FrameworkId::new("internal@n").unwrap()).is_some());
    }

    #[test]
    fn operator_connections_share_one_framework_and_hear_their_own_tasks() {
        // Issue 11: every `agora run` registered a framework of its own, and
        // a node holds at most 256.
        let mut s = Sessions::default();
        let op = FrameworkId::new("operator-1@n").unwrap();
        s.set_operator(fw("operator-1@n", None, Duration::from_secs(3600)));
        for conn in 1..=(MAX_FRAMEWORKS as u64 + 10) {
            s.open(conn, Peer::trusted());
            assert_eq!(
                s.join_operator(conn, Duration::from_secs(60)),
                Ok(op.clone())
            );
        }
        assert_eq!(s.frameworks().count(), 1);
        let (t1, t2) = (
            TaskId::new("operator-1@n.1").unwrap(),
            TaskId::new("operator-1@n.2").unwrap(),
        );
        s.submitted(1, std::slice::from_ref(&t1));
        s.submitted(2, std::slice::from_ref(&t2));
        let run = |t: &TaskId, st| TaskStatus::new(t.clone(), st, None);
        let (to, e1) = s
            .push_status(ms(0), &op, "j".into(), run(&t1, TaskState::Running))
            .unwrap();
        assert_eq!(to, Some(1));
        let (to, e2) = s
            .push_status(ms(0), &op, "j".into(), run(&t2, TaskState::Finished))
            .unwrap();
        assert_eq!(to, Some(2));
        assert_eq!(s.unacked_terminal(&op), 1);
        // Connection 2's ack counts for it; connection 1 still waits on its own.
        s.ack(2, &op, &t2, e2.seq);
        assert_eq!(s.unacked_terminal(&op), 0);
        assert_eq!(
            s.unacked_status(1, &op, &t1).map(|(_, st)| st.state),
            Some(TaskState::Running)
        );
        assert_eq!(
            s.resends(ms(5000))
                .iter()
                .map(|(c, e)| (*c, e.seq))
                .collect::<Vec<_>>(),
            vec![(1, e1.seq)]
        );
        // Connection 1 goes: its queue goes, the task's later events too.
        assert_eq!(s.close(ms(6000), 1), None);
        assert!(
            s.push_status(ms(7000), &op, "j".into(), run(&t1, TaskState::Finished))
                .is_none()
        );
        assert!(
            s.failovers(ms(10_000_000)).is_empty(),
            "the operator framework never fails over"
        );
        assert!(s.forget_idle(ms(10_000_000), |_| true).is_empty());
    }

    #[test]
    fn only_a_peer_allowed_to_operate_joins_the_operator_framework() {
        // Issue 12: a task that reached the socket registered as operator.
        let mut s = Sessions::default();
        let op = FrameworkId::new("operator-1@n").unwrap();
        s.set_operator(fw("operator-1@n", None, Duration::from_secs(3600)));
        let stranger = Peer {
            uid: Some(65534),
            pid: None,
            operator: false,
        };
        s.open(1, stranger);
        s.open(2, Peer::trusted());
        assert_eq!(s.may_operate(1), Err(Some(65534)));
        assert_eq!(
            s.join_operator(1, Duration::from_secs(60)),
            Err(RegisterError::Forbidden(Some(65534)))
        );
        assert_eq!(s.framework_of(1), None);
        assert_eq!(s.join_operator(2, Duration::from_secs(60)), Ok(op));
        assert_eq!(s.may_operate(99), Err(None), "an unknown connection");
    }

    #[test]
    fn offers_are_paced_per_connection() {
        // Issue 11: no frame followed a framework's own placements, and a
        // frame came right after the subscribe's.
        let mut s = Sessions::default();
        s.open(1, Peer::trusted());
        s.subscribe(ms(0), 1);
        s.view_changed();
        assert!(
            s.offers_due(ms(500)).is_empty(),
            "one second after the subscribe's frame"
        );
        assert_eq!(s.offers_due(ms(1000)), vec![1]);
        assert!(s.offers_due(ms(3000)).is_empty(), "nothing changed");
        s.view_changed();
        assert_eq!(s.offers_due(ms(3000)), vec![1]);
        s.unsubscribe(1);
        s.view_changed();
        assert!(s.offers_due(ms(9000)).is_empty());
    }
}
