//! The core's one command surface ([`crate::surface`]): what a socket
//! connection or an HTTP request asks, answered with one [`Reply`]. Submit,
//! kill, listings and log reads are written once here for both; what only a
//! framework connection can do (register, acks, reconcile, offers) is
//! refused to HTTP with a reason. The rules are those of
//! docs/FRAMEWORK_API.md.

use super::core::{Core, Output};
use super::frameworks::Framework;
use super::queries::{LocalMiss, Purpose};
use super::sessions::RegisterError;
use crate::surface::{Asker, Command, Reply};
use agora_protocol::host::Refused;
use agora_protocol::task::TaskSpec;
use agora_protocol::wire::{
    self, BidOn, CellNodeList, ErrorCode, LogChunk, LogRead, MAX_LOG_CHUNK, NodeList, ReadLog,
    Register, Registered, StatusEvent, Submit, Submitted, TaskQuery,
};
use agora_protocol::{FrameworkId, Instant, TaskId, offers};
use std::time::Duration;

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

fn refused(r: Refused, request_id: Option<u64>) -> Reply {
    Reply::error(r.code, r.message, request_id)
}

/// The refusal of an operator's request from a peer that may not act as
/// the operator (`what` it asked, then why not and what to do).
fn not_operator(what: &str, uid: Option<u32>) -> Reply {
    let who = match uid {
        Some(uid) => format!("this connection's user (uid {uid})"),
        None => "this connection's user (unknown: the kernel gave no credentials)".into(),
    };
    Reply::error(
        ErrorCode::Forbidden,
        format!(
            "{what} needs the operator, and {who} may not act as the operator: only root, the \
             agent's own user and members of the agent's --operator-group may. Run the command \
             as one of them (or start the agent with --operator-group GROUP), or register as a \
             framework (a role other than \"{}\") to run and kill tasks of your own",
            wire::OPERATOR_ROLE
        ),
        None,
    )
}

impl Core {
    /// Handles one command from a socket connection or the HTTP API.
    pub fn handle_command(&mut self, now: Instant, asker: Asker, cmd: Command) {
        match asker {
            Asker::Conn(conn) => self.conn_command(now, conn, cmd),
            Asker::Http(_) => self.http_command(now, asker, cmd),
        }
        self.api_dirty();
        self.pump(now);
    }

    fn http_command(&mut self, now: Instant, asker: Asker, cmd: Command) {
        match cmd {
            Command::ListTasks(q) => self.list_tasks(now, asker, q),
            Command::GetTask(id) => self.get_task(now, asker, id),
            Command::ListNodes(l) => self.list_nodes(asker, l.request_id),
            Command::ListCells(l) => self.list_cells(asker, l.request_id),
            Command::ListAllNodes(l) => self.list_all_nodes(asker, l.request_id),
            Command::ReadLog(r) => self.read_log(now, asker, r),
            Command::Submit(s) => match self.http_framework().cloned() {
                Some(fw) => self.submit(now, asker, &fw, s),
                None => self.reply(
                    asker,
                    Reply::error(
                        ErrorCode::Busy,
                        "the HTTP API is not enabled on this node",
                        None,
                    ),
                ),
            },
            // The HTTP API acts as the operator.
            Command::Kill(k) => self.kill(now, asker, None, k.task_id),
            other => self.reply(
                asker,
                Reply::error(
                    ErrorCode::InvalidSpec,
                    format!(
                        "{other:?} needs a framework connection: use the framework socket \
                         (docs/FRAMEWORK_API.md)"
                    ),
                    None,
                ),
            ),
        }
    }

    fn conn_command(&mut self, now: Instant, conn: u64, cmd: Command) {
        let asker = Asker::Conn(conn);
        let registered = self.sessions.framework_of(conn).cloned();
        // What any connection may do, registered or not.
        let cmd = match cmd {
            Command::ListTasks(q) => return self.list_tasks(now, asker, q),
            Command::GetTask(id) => return self.get_task(now, asker, id),
            Command::ListNodes(l) => return self.list_nodes(asker, l.request_id),
            Command::ListCells(l) => return self.list_cells(asker, l.request_id),
            Command::ListAllNodes(l) => return self.list_all_nodes(asker, l.request_id),
            Command::ReadLog(r) => return self.read_log(now, asker, r),
            Command::Register(r) => return self.register(now, conn, r),
            Command::Kill(k) => {
                // A framework kills only its own tasks; an operator (or a
                // connection that did not register, such as `agora kill`,
                // from a peer allowed to act as the operator) may kill any.
                if registered.is_none()
                    && let Err(uid) = self.sessions.may_operate(conn)
                {
                    return self.reply(asker, not_operator("kill without register", uid));
                }
                let caller = registered.filter(|fw| {
                    self.sessions
                        .get(fw)
                        .is_none_or(|f| f.role != wire::OPERATOR_ROLE)
                });
                return self.kill(now, asker, caller, k.task_id);
            }
            other => other,
        };
        let Some(fw) = registered else {
            return self.reply(
                asker,
                Reply::error(
                    ErrorCode::NotRegistered,
                    "register first: only list_tasks, list_nodes, list_all_nodes, list_cells, read_log and kill work before register",
                    None,
                ),
            );
        };
        match cmd {
            Command::Submit(s) => self.submit(now, asker, &fw, s),
            Command::BidOn(b) => self.bid_on(now, asker, &fw, b),
            Command::SubscribeOffers => {
                self.sessions.subscribe(now, conn);
                let list = offers::from_view(self.host.view(), 10_000);
                self.reply(asker, Reply::Offers(list));
            }
            Command::UnsubscribeOffers => self.sessions.unsubscribe(conn),
            Command::Reconcile(ids) => self.reconcile(now, conn, &fw, ids),
            Command::Ack(a) => self.sessions.ack(conn, &fw, &a.task_id, a.seq),
            Command::ListTasks(_)
            | Command::GetTask(_)
            | Command::ListNodes(_)
            | Command::ListCells(_)
            | Command::ListAllNodes(_)
            | Command::ReadLog(_)
            | Command::Register(_)
            | Command::Kill(_) => {}
        }
    }

    // ------------------------------------------------------------ sessions

    fn register(&mut self, now: Instant, conn: u64, r: Register) {
        let asker = Asker::Conn(conn);
        let already = |fw: FrameworkId| {
            Reply::error(
                ErrorCode::InvalidSpec,
                format!("this connection is already registered as {fw}"),
                None,
            )
        };
        if r.role == wire::OPERATOR_ROLE {
            return self.join_operator(conn, &r);
        }
        if let Some(id) = r.framework_id {
            match self.sessions.reattach(now, conn, &id) {
                Ok(events) => {
                    tracing::info!(framework = %id, resent = events.len(), "framework reattached");
                    self.reply(
                        asker,
                        Reply::Registered(Registered {
                            framework_id: id,
                            reattached: true,
                        }),
                    );
                    for e in events {
                        self.reply(asker, Reply::Status(e));
                    }
                }
                Err(RegisterError::Already(fw)) => self.reply(asker, already(fw)),
                Err(_) => self.reply(
                    asker,
                    Reply::error(
                        ErrorCode::UnknownFramework,
                        format!(
                            "framework {id} is not known on this node (its failover timeout may \
                             have passed); register without framework_id"
                        ),
                        None,
                    ),
                ),
            }
            return;
        }
        let name = clean_name(&r.name);
        if name.is_empty() {
            return self.reply(
                asker,
                Reply::error(
                    ErrorCode::InvalidSpec,
                    "a framework needs a name of letters, digits, _ or -",
                    None,
                ),
            );
        }
        if r.weight == 0 {
            return self.reply(
                asker,
                Reply::error(ErrorCode::InvalidSpec, "weight must be at least 1", None),
            );
        }
        let host = &self.host;
        let idle = |fw: &FrameworkId| host.bidder(fw).is_none_or(|b| b.active_tasks() == 0);
        match self.sessions.room_for(conn, idle) {
            Ok(None) => {}
            Ok(Some(gone)) => {
                tracing::info!(framework = %gone, "framework forgotten to make room; its task history is kept");
                self.host.remove_framework(&gone);
            }
            Err(RegisterError::Already(fw)) => return self.reply(asker, already(fw)),
            Err(_) => {
                return self.reply(
                    asker,
                    Reply::error(
                        ErrorCode::Busy,
                        format!(
                            "this node already holds {} frameworks; retry later",
                            super::frameworks::MAX_FRAMEWORKS
                        ),
                        None,
                    ),
                );
            }
        }
        let id = match FrameworkId::homed(&name, rand::random::<u32>(), &self.me) {
            Ok(id) => id,
            Err(e) => {
                return self.reply(
                    asker,
                    Reply::error(ErrorCode::InvalidSpec, e.to_string(), None),
                );
            }
        };
        if let Err(e) = self
            .host
            .add_framework(id.clone(), r.weight, rand::make_rng())
        {
            return self.reply(asker, refused(e, None));
        }
        tracing::info!(framework = %id, role = %r.role, weight = r.weight, "framework registered");
        self.sessions.insert(Framework::new(
            id.clone(),
            name,
            r.role,
            r.weight,
            Duration::from_millis(u64::from(r.failover_timeout_ms)),
            Some(conn),
        ));
        self.save_frameworks();
        self.reply(
            asker,
            Reply::Registered(Registered {
                framework_id: id,
                reattached: false,
            }),
        );
    }

    /// An operator connection joins the node's operator framework (made at
    /// the first one), with a status queue of its own.
    fn join_operator(&mut self, conn: u64, r: &Register) {
        let asker = Asker::Conn(conn);
        if let Err(uid) = self.sessions.may_operate(conn) {
            tracing::warn!(conn, uid = ?uid, "refused: a connection not allowed to act as the operator registered as one");
            return self.reply(
                asker,
                not_operator(
                    &format!("register with role \"{}\"", wire::OPERATOR_ROLE),
                    uid,
                ),
            );
        }
        if self.sessions.operator().is_none() {
            let made = FrameworkId::homed("operator", rand::random::<u32>(), &self.me)
                .map_err(|e| e.to_string())
                .and_then(|id| {
                    self.host
                        .add_framework(id.clone(), 1, rand::make_rng())
                        .map(|()| id)
                        .map_err(|e| e.message)
                });
            match made {
                Ok(id) => {
                    tracing::info!(framework = %id, "operator framework registered (shared by every operator connection)");
                    self.sessions.set_operator(Framework::new(
                        id,
                        "operator".into(),
                        wire::OPERATOR_ROLE.into(),
                        1,
                        Duration::MAX,
                        None,
                    ));
                    self.save_frameworks();
                }
                Err(e) => {
                    return self.reply(
                        asker,
                        Reply::error(
                            ErrorCode::Busy,
                            format!("cannot make the operator framework: {e}"),
                            None,
                        ),
                    );
                }
            }
        }
        let failover = Duration::from_millis(u64::from(r.failover_timeout_ms));
        match self.sessions.join_operator(conn, failover) {
            Ok(id) => self.reply(
                asker,
                Reply::Registered(Registered {
                    framework_id: id,
                    reattached: false,
                }),
            ),
            Err(RegisterError::Already(fw)) => self.reply(
                asker,
                Reply::error(
                    ErrorCode::InvalidSpec,
                    format!("this connection is already registered as {fw}"),
                    None,
                ),
            ),
            Err(RegisterError::Forbidden(uid)) => self.reply(
                asker,
                not_operator(
                    &format!("register with role \"{}\"", wire::OPERATOR_ROLE),
                    uid,
                ),
            ),
            Err(_) => self.reply(
                asker,
                Reply::error(
                    ErrorCode::Busy,
                    "the operator framework is not available",
                    None,
                ),
            ),
        }
    }

    fn reconcile(&mut self, now: Instant, conn: u64, fw: &FrameworkId, ids: Vec<TaskId>) {
        let asker = Asker::Conn(conn);
        let Some(b) = self.host.bidder(fw) else {
            return;
        };
        let ids: Vec<TaskId> = if ids.is_empty() {
            b.task_rows().into_iter().map(|r| r.task_id).collect()
        } else {
            ids
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let known = self
                .host
                .bidder(fw)
                .and_then(|b| b.status_of(&id))
                .or_else(|| {
                    // Forgotten by the bidder but not yet acknowledged.
                    self.sessions.unacked_status(conn, fw, &id)
                });
            out.push(match known {
                Some((name, status)) => Reply::Status(StatusEvent {
                    seq: 0,
                    name,
                    status,
                }),
                None => match self.host.reconcile_unknown(now, fw, &id) {
                    Ok(Some(status)) => Reply::Status(StatusEvent {
                        seq: 0,
                        name: String::new(),
                        status,
                    }),
                    Ok(None) => Reply::error(
                        ErrorCode::UnknownTask,
                        format!("task {id} is not known to framework {fw}"),
                        None,
                    ),
                    Err(until) => Reply::error(
                        ErrorCode::UnknownTask,
                        format!(
                            "task {id} is from before this node restarted and no node has \
                             reported it yet; reconcile it again in {} ms (it is reported lost \
                             if still unknown then)",
                            until.saturating_duration_since(now).as_millis()
                        ),
                        None,
                    ),
                },
            });
        }
        for r in out {
            self.reply(asker, r);
        }
    }

    // ------------------------------------------------------------ work

    /// Refuses work from a framework whose status events would no longer
    /// all fit: every accepted task's terminal event is kept until it is
    /// acknowledged, so the queue is bounded by refusing submits, not by
    /// dropping terminal events.
    fn submit_room(&self, fw: &FrameworkId, new: usize) -> Result<(), Refused> {
        let limit = agora_protocol::bidder::Config::default().max_active_tasks;
        let active = self.host.bidder(fw).map_or(0, |b| b.active_tasks());
        let unacked = self.sessions.unacked_terminal(fw);
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

    fn submit(&mut self, now: Instant, asker: Asker, fw: &FrameworkId, s: Submit) {
        let specs = s.tasks.clone();
        let answer = answer_fits(asker, fw, s.tasks.len())
            .and_then(|()| self.submit_room(fw, s.tasks.len()))
            .and_then(|()| self.host.submit(now, fw, s.tasks));
        if let Ok(ids) = &answer {
            self.journal_submits(fw, ids, specs);
        }
        if let (Asker::Conn(conn), Ok(ids)) = (asker, &answer) {
            self.sessions.submitted(conn, ids);
        }
        let reply = match answer {
            Ok(task_ids) => Reply::Submitted(Submitted {
                request_id: s.request_id,
                task_ids,
            }),
            Err(e) => refused(e, Some(s.request_id)),
        };
        self.reply(asker, reply);
    }

    /// Journals accepted submits; they are on disk before the answer goes
    /// out (the driver syncs before the next reply).
    fn journal_submits(&mut self, fw: &FrameworkId, ids: &[TaskId], specs: Vec<TaskSpec>) {
        let mut bytes = Vec::new();
        for (id, spec) in ids.iter().zip(specs) {
            super::journal::encode_into(
                &mut bytes,
                &super::journal::Record::submitted(fw, id.clone(), spec),
            );
        }
        self.out.push_back(Output::Journal { bytes, sync: true });
    }

    fn bid_on(&mut self, now: Instant, asker: Asker, fw: &FrameworkId, b: BidOn) {
        let spec = b.task.clone();
        let answer = self
            .submit_room(fw, 1)
            .and_then(|()| self.host.submit_on(now, fw, b.task, b.node));
        if let Ok(id) = &answer {
            self.journal_submits(fw, std::slice::from_ref(id), vec![spec]);
        }
        if let (Asker::Conn(conn), Ok(id)) = (asker, &answer) {
            self.sessions.submitted(conn, std::slice::from_ref(id));
        }
        let reply = match answer {
            Ok(id) => Reply::Submitted(Submitted {
                request_id: b.request_id,
                task_ids: vec![id],
            }),
            Err(e) => refused(e, Some(b.request_id)),
        };
        self.reply(asker, reply);
    }

    /// Kills a task: one homed here through the host at once; one homed
    /// elsewhere after asking its home where it runs (then only that node
    /// is told), so that a task that ended is answered "already ended".
    fn kill(&mut self, now: Instant, asker: Asker, caller: Option<FrameworkId>, task_id: TaskId) {
        if caller.is_some() || self.host.status_of(&task_id).is_some() {
            let reply = match self.host.kill(now, caller.as_ref(), &task_id) {
                Ok(_) => Reply::KillSent(task_id),
                Err(e) => refused(e, None),
            };
            return self.reply(asker, reply);
        }
        let q = TaskQuery {
            task_id: Some(task_id.clone()),
            ..TaskQuery::all(0)
        };
        let purpose = Purpose::Kill { task_id, caller };
        self.find(now, asker, purpose, q, None);
    }

    /// Starts a listing routed by the host.
    fn find(
        &mut self,
        now: Instant,
        asker: Asker,
        purpose: Purpose,
        q: TaskQuery,
        request_id: Option<u64>,
    ) {
        let t = self.host.list_targets(&q);
        let rows = self.host.task_rows();
        if let Err(e) = self
            .queries
            .list(now, asker, purpose, q, rows, t.ask, t.dead)
        {
            self.reply(
                asker,
                Reply::error(ErrorCode::Busy, e.to_string(), request_id),
            );
        }
    }

    fn list_tasks(&mut self, now: Instant, asker: Asker, q: TaskQuery) {
        let rid = Some(q.request_id);
        self.find(now, asker, Purpose::Page, q, rid);
    }

    fn get_task(&mut self, now: Instant, asker: Asker, id: TaskId) {
        // The home node's row is authoritative; a row of a task running
        // here but homed elsewhere is good enough.
        let homed_here = self.host.status_of(&id).is_some();
        let mut local = agora_protocol::listing::Merged::default();
        local.add(
            Some(&self.me),
            self.host
                .task_rows()
                .into_iter()
                .filter(|r| r.task_id == id),
        );
        match local.get(&id) {
            Some(row) if homed_here || row.node.as_ref() == Some(&self.me) => {
                let row = row.clone();
                self.reply(asker, Reply::Task(Some(row)));
            }
            _ => {
                let q = TaskQuery {
                    task_id: Some(id.clone()),
                    ..TaskQuery::all(0)
                };
                self.find(now, asker, Purpose::Get(id), q, None);
            }
        }
    }

    fn list_cells(&mut self, asker: Asker, request_id: u64) {
        let list = self.cell_list(request_id);
        self.reply(asker, Reply::Cells(list));
    }

    /// Every cell's members: in a flat cluster, the view; in cells, the
    /// driver asks every other cell's gateways ([`Output::Survey`]) and
    /// answers with [`Core::home_cell_rows`] and what they said.
    fn list_all_nodes(&mut self, asker: Asker, request_id: u64) {
        if self.host.cell().is_none() {
            let nodes = crate::http::node_rows(self.host.view());
            let cells = vec![wire::CellNodes {
                cell: None,
                home: true,
                nodes,
                error: None,
            }];
            return self.reply(asker, Reply::CellNodes(CellNodeList { request_id, cells }));
        }
        self.out.push_back(Output::Survey { asker, request_id });
    }

    /// The home cell's members (the view without imported nodes), by id.
    pub fn home_cell_rows(&self) -> Vec<wire::NodeRow> {
        crate::http::sorted_rows(
            self.host
                .view()
                .iter()
                .filter(|n| !self.host.is_imported(&n.id)),
        )
    }

    fn list_nodes(&mut self, asker: Asker, request_id: u64) {
        let nodes = crate::http::node_rows(self.host.view());
        self.reply(asker, Reply::Nodes(NodeList { request_id, nodes }));
    }

    /// Reads a log where the task ran: this node's files when it ran here
    /// (or may have), else the node its home says.
    fn read_log(&mut self, now: Instant, asker: Asker, r: ReadLog) {
        let read = LogRead {
            request_id: r.request_id,
            task_id: r.task_id,
            stream: r.stream,
            offset: r.offset,
            max_bytes: r.max_bytes.min(MAX_LOG_CHUNK),
        };
        let fail = |error: String| LogChunk {
            request_id: read.request_id,
            task_id: read.task_id.clone(),
            data: Vec::new(),
            next_offset: read.offset,
            eof: false,
            error: Some(error),
        };
        let started = match self.host.status_of(&read.task_id) {
            Some((_, status)) => match status.node {
                Some(n) if n == self.me => {
                    self.queries
                        .read_local(asker, read.clone(), LocalMiss::Answer)
                }
                Some(n) => self.queries.read_remote(now, asker, read.clone(), n),
                None => {
                    let chunk = fail(format!(
                        "task {} has not been placed on a node yet; retry when it runs",
                        read.task_id
                    ));
                    return self.reply(asker, Reply::Log(chunk));
                }
            },
            None => {
                let q = TaskQuery {
                    task_id: Some(read.task_id.clone()),
                    ..TaskQuery::all(0)
                };
                let t = self.host.list_targets(&q);
                let local: Vec<_> = self
                    .host
                    .task_rows()
                    .into_iter()
                    .filter(|row| row.task_id == read.task_id)
                    .collect();
                let miss = LocalMiss::Find {
                    query: q,
                    local,
                    ask: t.ask,
                    dead: t.dead,
                };
                self.queries.read_local(asker, read.clone(), miss)
            }
        };
        if let Err(e) = started {
            self.reply(asker, Reply::Log(fail(e.to_string())));
        }
    }
}

/// Refuses, before any task is made, a socket submit whose answer (one id
/// per task) might not fit in one frame: the tasks were made, then the
/// answer failed as `internal` and the framework never learned their ids.
/// An id is the framework's id, a dot and a number of up to 20 digits (cut
/// to [`agora_protocol::ids::MAX_ID_LEN`]), plus its quotes and comma in
/// JSON. HTTP answers have no frame.
fn answer_fits(asker: Asker, fw: &FrameworkId, tasks: usize) -> Result<(), Refused> {
    if !matches!(asker, Asker::Conn(_)) {
        return Ok(());
    }
    let per_id = (fw.as_str().len() + 21).min(agora_protocol::ids::MAX_ID_LEN) + 3;
    let most = (agora_protocol::codec::DEFAULT_MAX_FRAME - 1024) / per_id;
    if tasks > most {
        return Err(Refused::new(
            ErrorCode::InvalidSpec,
            format!(
                "{tasks} tasks in one submit: their ids might not fit in one answer frame \
                 (1 MiB) for framework {fw}; submit at most {most} at a time"
            ),
        ));
    }
    Ok(())
}
