//! What the core does with framework socket messages, and its periodic
//! work: status re-sends, failover timeouts, offers and query deadlines
//! (the queries themselves are in [`super::queries`]).
//! The rules are those of docs/FRAMEWORK_API.md (register, submit,
//! offers, bid_on, kill, reconcile, ack, list_tasks, list_nodes, read_log).

use super::core::{Conn, Core};
use super::frameworks::{Framework, MAX_FRAMEWORKS};
use super::queries::{LogReply, TaskReply};
use crate::socket::ClientCmd;
use agora_protocol::host::Refused;
use agora_protocol::wire::{
    BidOn, ClientMessage, ErrorCode, ErrorReply, LogChunk, NodeList, Register, Registered,
    ServerMessage, StatusEvent, Submit, Submitted,
};
use agora_protocol::{FrameworkId, Instant, TaskId, offers, wire};
use std::time::Duration;

/// Offers are sent at most this often.
const OFFER_EVERY: Duration = Duration::from_secs(1);
/// Re-sends per framework per tick.
const RESENDS_PER_TICK: usize = 512;
/// A disconnected framework with nothing left running is forgotten after
/// its failover timeout or this long, whichever is shorter.
const FORGET_IDLE: Duration = Duration::from_secs(600);

fn err(code: ErrorCode, message: impl Into<String>, request_id: Option<u64>) -> ServerMessage {
    ServerMessage::Error(ErrorReply {
        code,
        message: message.into(),
        request_id,
    })
}

fn refused(r: Refused, request_id: Option<u64>) -> ServerMessage {
    err(r.code, r.message, request_id)
}

fn clean_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect()
}

impl Core {
    /// Handles a command from a connection task.
    pub async fn on_client(&mut self, cmd: ClientCmd) {
        match cmd {
            ClientCmd::Open { conn, tx } => {
                self.conns.insert(
                    conn,
                    Conn {
                        tx,
                        framework: None,
                        offers: false,
                        offers_sent: None,
                        offers_stale: false,
                    },
                );
            }
            ClientCmd::Closed { conn } => self.drop_conn(conn),
            ClientCmd::Message { conn, msg } => self.on_message(conn, msg).await,
        }
    }

    async fn on_message(&mut self, conn: u64, msg: ClientMessage) {
        let now = self.clock.now();
        let registered = self.conns.get(&conn).and_then(|c| c.framework.clone());
        match msg {
            ClientMessage::ListTasks(l) => {
                return self.start_list_tasks(TaskReply::Conn { conn, query: l });
            }
            ClientMessage::ListNodes(l) => {
                let nodes = crate::http::node_rows(self.host.view());
                return self.reply(
                    conn,
                    ServerMessage::Nodes(NodeList {
                        request_id: l.request_id,
                        nodes,
                    }),
                );
            }
            ClientMessage::ReadLog(r) => {
                let to = LogReply::Conn {
                    conn,
                    request_id: r.request_id,
                };
                return self.start_read_log(to, r).await;
            }
            ClientMessage::Register(r) => return self.register(conn, now, r),
            _ => {}
        }
        let Some(fw) = registered else {
            return self.reply(
                conn,
                err(
                    ErrorCode::NotRegistered,
                    "register first: only list_tasks, list_nodes and read_log work before register",
                    None,
                ),
            );
        };
        match msg {
            ClientMessage::Submit(s) => self.submit(conn, now, &fw, s),
            ClientMessage::BidOn(b) => self.bid_on(conn, now, &fw, b),
            ClientMessage::SubscribeOffers => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.offers = true;
                    c.offers_sent = Some(now);
                    c.offers_stale = false;
                }
                let list = offers::from_view(self.host.view(), 10_000);
                self.reply(conn, ServerMessage::Offers(list));
            }
            ClientMessage::UnsubscribeOffers => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.offers = false;
                }
            }
            ClientMessage::Kill(k) => self.kill(conn, now, &fw, &k.task_id),
            ClientMessage::Reconcile(ids) => self.reconcile(conn, &fw, ids),
            ClientMessage::Ack(a) => {
                if let Some(f) = self.frameworks.get_mut(&fw) {
                    f.ack(&a.task_id, a.seq);
                }
            }
            ClientMessage::ListTasks(_)
            | ClientMessage::ListNodes(_)
            | ClientMessage::ReadLog(_)
            | ClientMessage::Register(_) => {}
        }
    }

    fn register(&mut self, conn: u64, now: Instant, r: Register) {
        if let Some(fw) = self.conns.get(&conn).and_then(|c| c.framework.clone()) {
            return self.reply(
                conn,
                err(
                    ErrorCode::InvalidSpec,
                    format!("this connection is already registered as {fw}"),
                    None,
                ),
            );
        }
        if let Some(id) = r.framework_id {
            let Some(f) = self.frameworks.get_mut(&id) else {
                return self.reply(
                    conn,
                    err(
                        ErrorCode::UnknownFramework,
                        format!("framework {id} is not known on this node (its failover timeout may have passed); register without framework_id"),
                        None,
                    ),
                );
            };
            let old = f.conn.replace(conn);
            f.disconnected_at = None;
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
            tracing::info!(framework = %id, resent = events.len(), "framework reattached");
            self.reply(
                conn,
                ServerMessage::Registered(Registered {
                    framework_id: id,
                    reattached: true,
                }),
            );
            for e in events {
                self.reply(conn, ServerMessage::Status(e));
            }
            return;
        }
        let name = clean_name(&r.name);
        if name.is_empty() {
            return self.reply(
                conn,
                err(
                    ErrorCode::InvalidSpec,
                    "a framework needs a name of letters, digits, _ or -",
                    None,
                ),
            );
        }
        if r.weight == 0 {
            return self.reply(
                conn,
                err(ErrorCode::InvalidSpec, "weight must be at least 1", None),
            );
        }
        if self.frameworks.len() >= MAX_FRAMEWORKS && !self.forget_one_idle() {
            return self.reply(
                conn,
                err(
                    ErrorCode::Busy,
                    format!("this node already holds {MAX_FRAMEWORKS} frameworks; retry later"),
                    None,
                ),
            );
        }
        let id_text = format!("{name}-{:08x}@{}", rand::random::<u32>(), self.me);
        let id = match FrameworkId::new(&id_text) {
            Ok(id) => id,
            Err(e) => {
                return self.reply(conn, err(ErrorCode::InvalidSpec, e.to_string(), None));
            }
        };
        if let Err(e) = self
            .host
            .add_framework(id.clone(), r.weight, rand::make_rng())
        {
            return self.reply(conn, refused(e, None));
        }
        tracing::info!(framework = %id, role = %r.role, weight = r.weight, "framework registered");
        let f = Framework::new(
            id.clone(),
            name,
            r.role,
            r.weight,
            Duration::from_millis(u64::from(r.failover_timeout_ms)),
            Some(conn),
        );
        self.frameworks.insert(id.clone(), f);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.framework = Some(id.clone());
        }
        self.reply(
            conn,
            ServerMessage::Registered(Registered {
                framework_id: id,
                reattached: false,
            }),
        );
    }

    /// Unfinished tasks of a framework homed here.
    fn active_tasks(&self, fw: &FrameworkId) -> usize {
        self.host.bidder(fw).map_or(0, |b| b.active_tasks())
    }

    /// Forgets the disconnected framework idle longest with nothing active
    /// and nothing unacknowledged (never the node's internal one). Its task
    /// history stays with the host.
    fn forget_one_idle(&mut self) -> bool {
        let victim = self
            .frameworks
            .values()
            .filter(|f| {
                !f.internal
                    && f.conn.is_none()
                    && f.unacked_count() == 0
                    && self.active_tasks(&f.id) == 0
            })
            .min_by_key(|f| f.disconnected_at)
            .map(|f| f.id.clone());
        match victim {
            Some(id) => {
                self.forget(&id);
                true
            }
            None => false,
        }
    }

    /// Forgets a framework: its session goes, its tasks' rows stay.
    pub(super) fn forget(&mut self, id: &FrameworkId) {
        tracing::info!(framework = %id, "framework forgotten; its task history is kept");
        self.frameworks.remove(id);
        self.host.remove_framework(id);
    }

    /// Refuses work from a framework whose status events would no longer
    /// all fit: every accepted task's terminal event is kept until it is
    /// acknowledged, so the queue is bounded by refusing submits, not by
    /// dropping terminal events.
    pub(super) fn submit_room(&self, fw: &FrameworkId, new: usize) -> Result<(), Refused> {
        let limit = agora_protocol::bidder::Config::default().max_active_tasks;
        let active = self.active_tasks(fw);
        let unacked = self.frameworks.get(fw).map_or(0, |f| f.unacked_terminal());
        if active + unacked + new > limit {
            return Err(Refused {
                code: ErrorCode::Busy,
                message: format!(
                    "{active} tasks are unfinished and {unacked} ended ones await your ack \
                     (limit {limit} together); ack status events or wait for tasks to end"
                ),
            });
        }
        Ok(())
    }

    fn submit(&mut self, conn: u64, now: Instant, fw: &FrameworkId, s: Submit) {
        let rid = Some(s.request_id);
        let answer = self
            .submit_room(fw, s.tasks.len())
            .and_then(|()| self.host.submit(now, fw, s.tasks));
        match answer {
            Ok(task_ids) => self.reply(
                conn,
                ServerMessage::Submitted(Submitted {
                    request_id: s.request_id,
                    task_ids,
                }),
            ),
            Err(e) => self.reply(conn, refused(e, rid)),
        }
    }

    fn bid_on(&mut self, conn: u64, now: Instant, fw: &FrameworkId, b: BidOn) {
        let rid = Some(b.request_id);
        let answer = self
            .submit_room(fw, 1)
            .and_then(|()| self.host.submit_on(now, fw, b.task, b.node));
        match answer {
            Ok(id) => self.reply(
                conn,
                ServerMessage::Submitted(Submitted {
                    request_id: b.request_id,
                    task_ids: vec![id],
                }),
            ),
            Err(e) => self.reply(conn, refused(e, rid)),
        }
    }

    fn kill(&mut self, conn: u64, now: Instant, caller: &FrameworkId, task_id: &TaskId) {
        let operator = self
            .frameworks
            .get(caller)
            .is_some_and(|f| f.role == wire::OPERATOR_ROLE);
        let caller = (!operator).then_some(caller);
        if let Err(e) = self.host.kill(now, caller, task_id) {
            self.reply(conn, refused(e, None));
        }
    }

    fn reconcile(&mut self, conn: u64, fw: &FrameworkId, ids: Vec<TaskId>) {
        let Some(b) = self.host.bidder(fw) else {
            return;
        };
        let ids: Vec<TaskId> = if ids.is_empty() {
            b.task_rows().into_iter().map(|r| r.task_id).collect()
        } else {
            ids
        };
        let mut out = Vec::new();
        for id in ids {
            let known = b.status_of(&id).or_else(|| {
                // Forgotten by the bidder but not yet acknowledged.
                self.frameworks.get(fw).and_then(|f| f.unacked_status(&id))
            });
            match known {
                Some((name, status)) => out.push(ServerMessage::Status(StatusEvent {
                    seq: 0,
                    name,
                    status,
                })),
                None => out.push(err(
                    ErrorCode::UnknownTask,
                    format!("task {id} is not known to framework {fw}"),
                    None,
                )),
            }
        }
        for m in out {
            self.reply(conn, m);
        }
    }

    // ------------------------------------------------------------ periodic

    /// Periodic work.
    pub(super) fn tick(&mut self, now: Instant) {
        // Status re-sends to connected frameworks.
        let mut sends = Vec::new();
        for f in self.frameworks.values_mut() {
            if let Some(conn) = f.conn {
                for e in f.due_resends(now, RESENDS_PER_TICK) {
                    sends.push((conn, ServerMessage::Status(e)));
                }
            }
        }
        for (conn, m) in sends {
            self.reply(conn, m);
        }
        // Failover: kill the unfinished tasks of frameworks gone too long,
        // then forget them once nothing is left running (their task rows
        // stay with the host).
        let mut fail_over = Vec::new();
        let mut forget = Vec::new();
        for f in self.frameworks.values_mut() {
            if f.failover_due(now) && !f.failed_over {
                f.failed_over = true;
                fail_over.push(f.id.clone());
            }
            let idle_for = f.disconnected_at.map(|t| now - t);
            if !f.internal
                && f.conn.is_none()
                && idle_for.is_some_and(|d| d >= f.failover.min(FORGET_IDLE))
            {
                forget.push(f.id.clone());
            }
        }
        for id in fail_over {
            tracing::info!(framework = %id, "failover timeout passed; killing its unfinished tasks");
            let active: Vec<TaskId> = self
                .host
                .bidder(&id)
                .map(|b| b.task_rows())
                .unwrap_or_default()
                .into_iter()
                .filter(|r| !r.state.is_terminal())
                .map(|r| r.task_id)
                .collect();
            for t in active {
                let _ = self.host.kill(now, Some(&id), &t);
            }
        }
        for id in forget {
            if self.active_tasks(&id) == 0 {
                self.forget(&id);
            }
        }
        // Offers: each subscriber gets a new frame when the view changed,
        // at most once per second (counted from its last frame, the one
        // answering its subscribe included).
        if std::mem::take(&mut self.offers_dirty) {
            for c in self.conns.values_mut().filter(|c| c.offers) {
                c.offers_stale = true;
            }
        }
        let due: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.offers && c.offers_stale && c.offers_sent.is_none_or(|t| now - t >= OFFER_EVERY)
            })
            .map(|(id, _)| *id)
            .collect();
        if !due.is_empty() {
            let list = offers::from_view(self.host.view(), 10_000);
            for id in due {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.offers_stale = false;
                    c.offers_sent = Some(now);
                }
                self.reply(id, ServerMessage::Offers(list.clone()));
            }
        }
        // Query deadlines.
        let late: Vec<u64> = self
            .queries
            .tasks
            .iter()
            .filter(|(_, q)| q.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(q) = self.queries.tasks.remove(&id) {
                let unreachable = q.waiting.into_iter().collect();
                self.answer_tasks(q.to, q.rows, unreachable);
            }
        }
        let late: Vec<u64> = self
            .queries
            .logs
            .iter()
            .filter(|(_, q)| q.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(q) = self.queries.logs.remove(&id) {
                let _ = q.stream;
                let chunk = LogChunk {
                    request_id: 0,
                    task_id: q.task_id.clone(),
                    data: Vec::new(),
                    next_offset: 0,
                    eof: true,
                    error: Some(q.last_error.unwrap_or_else(|| {
                        format!("no node answered for the log of task {}", q.task_id)
                    })),
                };
                self.answer_log(q.to, chunk);
            }
        }
    }
}
