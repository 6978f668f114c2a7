//! Questions that other nodes, or this node's files, must answer: task
//! listings and log reads. A sans-IO machine: the core starts a query with
//! the rows it has and the nodes the host says to ask
//! ([`agora_protocol::host::Host::list_targets`]), feeds it the answers and
//! the clock, and takes what it produces with [`Queries::poll`]: messages
//! to send, log files to read, and finished queries to answer.
//!
//! - A **listing** merges this node's rows with each asked node's answer
//!   (each node applies the query's filters and limit itself); it finishes
//!   when every asked node answered or after [`QUERY_TIMEOUT`], naming the
//!   nodes that did not answer (and the dead ones) as `unreachable`.
//!   What the listing was for ([`Purpose`]) goes back with it: a page for
//!   the asker, one task's row, a kill or a log read that needed to find
//!   the task first.
//! - A **log read** reads the local files first when the task may have run
//!   here, else asks the one node that ran it.
//!
//! Every query gets an id local to this node, sent as the peer message's
//! `request_id`; answers are matched by id and sender. At most
//! [`MAX_QUERIES`] are open at once; more are refused with `busy`.

use crate::surface::Asker;
use agora_protocol::listing::{Merged, is_own};
use agora_protocol::task::TaskState;
use agora_protocol::wire::{
    LogChunk, LogRead, MAX_LIST_ROWS, PeerMessage, TaskList, TaskQuery, TaskRow,
};
use agora_protocol::{FrameworkId, Instant, NodeId, TaskId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// How long a query waits for other nodes.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Most queries open at once.
pub const MAX_QUERIES: usize = 1024;

/// What a listing is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A page of rows for the asker (socket `list_tasks`, HTTP list).
    Page,
    /// One task's row (HTTP `GET /api/v1/tasks/ID`).
    Get(TaskId),
    /// A kill of a task homed elsewhere: where does it run?
    Kill {
        /// The task.
        task_id: TaskId,
        /// The framework killing it (None: an operator).
        caller: Option<FrameworkId>,
    },
    /// A log read of a task that did not run here: where did it run?
    Log(LogRead),
}

/// What the machine asks the driver (through the core) to do.
#[derive(Debug, PartialEq)]
pub enum Out {
    /// Send a message to a node.
    Send {
        /// The node.
        to: NodeId,
        /// The message.
        msg: PeerMessage,
    },
    /// Read a log from this node's files; the answer goes to
    /// [`Queries::on_local_log`] with `token`.
    ReadLocal {
        /// Names this read.
        token: u64,
        /// What to read.
        read: LogRead,
    },
    /// A listing is complete (or timed out).
    Listed {
        /// Who asked.
        asker: Asker,
        /// What for.
        purpose: Purpose,
        /// The query (its request id and filters).
        query: TaskQuery,
        /// The merged rows, one per task.
        rows: BTreeMap<TaskId, TaskRow>,
        /// At least this many rows matched on the nodes that answered.
        matched: u64,
        /// Nodes whose rows may be missing.
        unreachable: Vec<NodeId>,
    },
    /// A log read is complete (its `error` set when it failed). The chunk's
    /// `request_id` is the asker's.
    Log {
        /// Who asked.
        asker: Asker,
        /// The chunk.
        chunk: LogChunk,
    },
    /// A peer's log read answered from this node's files.
    PeerLog {
        /// The peer.
        to: NodeId,
        /// The chunk, with the peer's request id.
        chunk: LogChunk,
    },
}

#[derive(Debug)]
struct Listing {
    asker: Asker,
    purpose: Purpose,
    query: TaskQuery,
    rows: Merged,
    matched: u64,
    waiting: BTreeSet<NodeId>,
    dead: Vec<NodeId>,
    deadline: Instant,
}

#[derive(Debug)]
enum LogWait {
    /// This node's files, for an asker: on an error, `then` says what next.
    Local {
        asker: Asker,
        read: LogRead,
        then: LocalMiss,
    },
    /// This node's files, for a peer.
    ForPeer { to: NodeId, request_id: u64 },
    /// Another node's files.
    Remote {
        asker: Asker,
        read: LogRead,
        node: NodeId,
        deadline: Instant,
    },
}

/// What a local log read does when this node has no such log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalMiss {
    /// Answer the error.
    Answer,
    /// Find the node that ran the task (a listing to its home), then read
    /// there.
    Find {
        /// The listing naming the task.
        query: TaskQuery,
        /// This node's rows of the task.
        local: Vec<TaskRow>,
        /// The nodes to ask.
        ask: Vec<NodeId>,
        /// Dead nodes that may know it.
        dead: Vec<NodeId>,
    },
}

/// Most nodes whose own tasks are remembered ([`Queries`], "heard").
pub const MAX_HEARD_NODES: usize = 256;

/// Open queries, and what this node heard in answers about each peer's own
/// tasks.
#[derive(Debug, Default)]
pub struct Queries {
    next: u64,
    listings: BTreeMap<u64, Listing>,
    logs: BTreeMap<u64, LogWait>,
    out: VecDeque<Out>,
    /// Per peer, the unfinished tasks it runs for frameworks homed on it, as
    /// its last answers said (at most [`MAX_LIST_ROWS`] per peer, for the
    /// [`MAX_HEARD_NODES`] peers heard from last). Nobody else knows these
    /// tasks: when the peer is declared dead, listings show them `lost`
    /// instead of dropping them.
    heard: BTreeMap<NodeId, (u64, BTreeMap<TaskId, TaskRow>)>,
    heard_seq: u64,
}

impl Queries {
    /// Open queries.
    pub fn open(&self) -> usize {
        self.listings.len() + self.logs.len()
    }

    fn next_id(&mut self) -> Option<u64> {
        if self.open() >= MAX_QUERIES {
            return None;
        }
        self.next += 1;
        Some(self.next)
    }

    /// Starts a listing: `local` is this node's rows, `ask` the nodes to
    /// ask, `dead` nodes whose rows are missing anyway. With nobody to ask
    /// it finishes at once.
    ///
    /// # Errors
    /// [`MAX_QUERIES`] are open (the asker should hear `busy`).
    #[allow(clippy::too_many_arguments)]
    pub fn list(
        &mut self,
        now: Instant,
        asker: Asker,
        purpose: Purpose,
        query: TaskQuery,
        local: Vec<TaskRow>,
        ask: Vec<NodeId>,
        dead: Vec<NodeId>,
    ) -> Result<(), TooMany> {
        let mut rows = Merged::default();
        rows.add(None, local.into_iter().filter(|r| query.matches(r)));
        if ask.is_empty() {
            self.add_lost(&query, &mut rows, &dead);
            let matched = rows.len() as u64;
            self.out.push_back(Out::Listed {
                asker,
                purpose,
                query,
                rows: rows.into_rows(),
                matched,
                unreachable: dead,
            });
            return Ok(());
        }
        let matched = rows.len() as u64;
        let id = self.next_id().ok_or(TooMany)?;
        for to in &ask {
            let mut q = query.clone();
            q.request_id = id;
            self.out.push_back(Out::Send {
                to: to.clone(),
                msg: PeerMessage::ListTasks(q),
            });
        }
        self.listings.insert(
            id,
            Listing {
                asker,
                purpose,
                query,
                rows,
                matched,
                waiting: ask.into_iter().collect(),
                dead,
                deadline: now + QUERY_TIMEOUT,
            },
        );
        Ok(())
    }

    /// A node's answer to a listing.
    pub fn on_task_list(&mut self, from: &NodeId, t: TaskList) {
        let Some(l) = self.listings.get_mut(&t.request_id) else {
            return;
        };
        if !l.waiting.remove(from) {
            return;
        }
        let complete = l.query.is_everything() && t.matched == t.tasks.len() as u64;
        self.heard_seq += 1;
        let seq = self.heard_seq;
        let entry = self.heard.entry(from.clone()).or_default();
        entry.0 = seq;
        if complete {
            entry.1.clear();
        }
        for row in &t.tasks {
            if row.state.is_terminal() || !is_own(row, from) {
                entry.1.remove(&row.task_id);
            } else if entry.1.len() < MAX_LIST_ROWS || entry.1.contains_key(&row.task_id) {
                entry.1.insert(row.task_id.clone(), row.clone());
            }
        }
        if entry.1.is_empty() {
            self.heard.remove(from);
        }
        if self.heard.len() > MAX_HEARD_NODES
            && let Some(oldest) = self
                .heard
                .iter()
                .min_by_key(|(_, (seq, _))| *seq)
                .map(|(n, _)| n.clone())
        {
            self.heard.remove(&oldest);
        }
        let Some(l) = self.listings.get_mut(&t.request_id) else {
            return;
        };
        let query = &l.query;
        l.rows
            .add(Some(from), t.tasks.into_iter().filter(|r| query.matches(r)));
        l.matched = l.matched.max(t.matched).max(l.rows.len() as u64);
        if l.waiting.is_empty() {
            self.finish_listing(t.request_id);
        }
    }

    /// Adds, as `lost`, what was heard of the dead nodes' own tasks.
    fn add_lost(&self, query: &TaskQuery, into: &mut Merged, dead: &[NodeId]) {
        for node in dead {
            let Some((_, rows)) = self.heard.get(node) else {
                continue;
            };
            let lost: Vec<TaskRow> = rows
                .values()
                .map(|r| {
                    let mut r = r.clone();
                    r.state = TaskState::Lost;
                    r.reason = Some(format!(
                        "node {node}, where it ran for a framework homed there, is declared \
                         dead; this is the last this node heard of it"
                    ));
                    r
                })
                .filter(|r| query.matches(r))
                .collect();
            into.add(None, lost);
        }
    }

    fn finish_listing(&mut self, id: u64) {
        let Some(mut l) = self.listings.remove(&id) else {
            return;
        };
        self.add_lost(&l.query, &mut l.rows, &l.dead);
        let mut unreachable: Vec<NodeId> = l.waiting.into_iter().collect();
        unreachable.extend(l.dead);
        let matched = l.matched.max(l.rows.len() as u64);
        self.out.push_back(Out::Listed {
            asker: l.asker,
            purpose: l.purpose,
            query: l.query,
            rows: l.rows.into_rows(),
            matched,
            unreachable,
        });
    }

    /// Reads a log from this node's files for `asker`; `then` says what to
    /// do if this node has no such log.
    ///
    /// # Errors
    /// [`MAX_QUERIES`] are open.
    pub fn read_local(
        &mut self,
        asker: Asker,
        read: LogRead,
        then: LocalMiss,
    ) -> Result<(), TooMany> {
        let token = self.next_id().ok_or(TooMany)?;
        self.out.push_back(Out::ReadLocal {
            token,
            read: read.clone(),
        });
        self.logs
            .insert(token, LogWait::Local { asker, read, then });
        Ok(())
    }

    /// Reads a log from this node's files for a peer that asked.
    ///
    /// # Errors
    /// [`MAX_QUERIES`] are open (the peer's read times out; it may retry).
    pub fn read_for_peer(&mut self, from: NodeId, read: LogRead) -> Result<(), TooMany> {
        let token = self.next_id().ok_or(TooMany)?;
        let request_id = read.request_id;
        self.out.push_back(Out::ReadLocal { token, read });
        self.logs.insert(
            token,
            LogWait::ForPeer {
                to: from,
                request_id,
            },
        );
        Ok(())
    }

    /// Reads a log on the node that ran the task.
    ///
    /// # Errors
    /// [`MAX_QUERIES`] are open.
    pub fn read_remote(
        &mut self,
        now: Instant,
        asker: Asker,
        read: LogRead,
        node: NodeId,
    ) -> Result<(), TooMany> {
        let id = self.next_id().ok_or(TooMany)?;
        let mut r = read.clone();
        r.request_id = id;
        self.out.push_back(Out::Send {
            to: node.clone(),
            msg: PeerMessage::LogRead(r),
        });
        self.logs.insert(
            id,
            LogWait::Remote {
                asker,
                read,
                node,
                deadline: now + QUERY_TIMEOUT,
            },
        );
        Ok(())
    }

    /// The answer of a local file read.
    pub fn on_local_log(&mut self, now: Instant, token: u64, mut chunk: LogChunk) {
        match self.logs.remove(&token) {
            Some(LogWait::ForPeer { to, request_id }) => {
                chunk.request_id = request_id;
                self.out.push_back(Out::PeerLog { to, chunk });
            }
            Some(LogWait::Local { asker, read, then }) => match then {
                LocalMiss::Find {
                    query,
                    local,
                    ask,
                    dead,
                } if chunk.error.is_some() => {
                    let purpose = Purpose::Log(read.clone());
                    if self
                        .list(now, asker, purpose, query, local, ask, dead)
                        .is_err()
                    {
                        chunk.request_id = read.request_id;
                        self.out.push_back(Out::Log { asker, chunk });
                    }
                }
                _ => {
                    chunk.request_id = read.request_id;
                    self.out.push_back(Out::Log { asker, chunk });
                }
            },
            Some(other) => {
                self.logs.insert(token, other);
            }
            None => {}
        }
    }

    /// A node's answer to a log read this node sent.
    pub fn on_log_chunk(&mut self, from: &NodeId, mut chunk: LogChunk) {
        match self.logs.get(&chunk.request_id) {
            Some(LogWait::Remote { node, .. }) if node == from => {}
            _ => return,
        }
        if let Some(LogWait::Remote { asker, read, .. }) = self.logs.remove(&chunk.request_id) {
            chunk.request_id = read.request_id;
            self.out.push_back(Out::Log { asker, chunk });
        }
    }

    /// When the next query times out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let l = self.listings.values().map(|l| l.deadline).min();
        let r = self
            .logs
            .values()
            .filter_map(|w| match w {
                LogWait::Remote { deadline, .. } => Some(*deadline),
                _ => None,
            })
            .min();
        l.into_iter().chain(r).min()
    }

    /// Finishes the queries whose time is up.
    pub fn handle_timeout(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .listings
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.finish_listing(id);
        }
        let late: Vec<u64> = self
            .logs
            .iter()
            .filter(|(_, w)| matches!(w, LogWait::Remote { deadline, .. } if *deadline <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(LogWait::Remote {
                asker, read, node, ..
            }) = self.logs.remove(&id)
            {
                let chunk = LogChunk {
                    request_id: read.request_id,
                    task_id: read.task_id.clone(),
                    data: Vec::new(),
                    next_offset: read.offset,
                    eof: false,
                    error: Some(format!(
                        "node {node}, which ran task {}, did not answer within {} s; retry",
                        read.task_id,
                        QUERY_TIMEOUT.as_secs()
                    )),
                };
                self.out.push_back(Out::Log { asker, chunk });
            }
        }
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Option<Out> {
        self.out.pop_front()
    }
}

/// Too many queries are open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooMany;

impl std::fmt::Display for TooMany {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this node has {MAX_QUERIES} listings and log reads open; retry in a few seconds"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::Resources;
    use agora_protocol::wire::LogStream;

    fn nid(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn row(id: &str, state: TaskState, node: Option<&str>) -> TaskRow {
        TaskRow {
            task_id: TaskId::new(id).unwrap(),
            name: "j".into(),
            framework: FrameworkId::new("f").unwrap(),
            state,
            node: node.map(nid),
            exit_code: None,
            resources: Resources::ZERO,
            reason: None,
        }
    }

    fn drain(q: &mut Queries) -> Vec<Out> {
        std::iter::from_fn(|| q.poll()).collect()
    }

    /// Starts a page listing that asks `ask`; returns the id peers see.
    fn ask_peers(q: &mut Queries, query: TaskQuery, ask: &[&str]) -> u64 {
        let ask = ask.iter().map(|n| nid(n)).collect();
        q.list(
            Instant::ZERO,
            Asker::Conn(1),
            Purpose::Page,
            query,
            Vec::new(),
            ask,
            Vec::new(),
        )
        .unwrap();
        let out = drain(q);
        let Some(Out::Send {
            msg: PeerMessage::ListTasks(sent),
            ..
        }) = out.first()
        else {
            panic!("{out:?}")
        };
        sent.request_id
    }

    #[test]
    fn a_listing_merges_answers_and_names_who_did_not_answer_in_time() {
        let mut q = Queries::default();
        let t0 = Instant::from_millis(1000);
        q.list(
            t0,
            Asker::Conn(4),
            Purpose::Page,
            TaskQuery::all(77),
            vec![row("f.1", TaskState::Running, Some("a"))],
            vec![nid("b"), nid("c")],
            vec![nid("d")],
        )
        .unwrap();
        let sent = drain(&mut q);
        assert_eq!(sent.len(), 2);
        let Out::Send {
            msg: PeerMessage::ListTasks(asked),
            ..
        } = &sent[0]
        else {
            panic!("{sent:?}")
        };
        let id = asked.request_id;
        assert_ne!(id, 77, "peers get this node's query id");
        // b answers; a stranger's answer and a repeat are ignored.
        let answer = TaskList {
            request_id: id,
            tasks: vec![
                row("f.1", TaskState::Finished, Some("a")),
                row("f.2", TaskState::Running, Some("b")),
            ],
            matched: 5,
        };
        q.on_task_list(&nid("x"), answer.clone());
        q.on_task_list(&nid("b"), answer.clone());
        q.on_task_list(&nid("b"), answer);
        assert!(drain(&mut q).is_empty(), "c has not answered yet");
        assert_eq!(q.poll_timeout(), Some(t0 + QUERY_TIMEOUT));
        q.handle_timeout(t0 + (QUERY_TIMEOUT - Duration::from_millis(1)));
        assert!(drain(&mut q).is_empty());
        q.handle_timeout(t0 + QUERY_TIMEOUT);
        let done = drain(&mut q);
        let [
            Out::Listed {
                asker,
                query,
                rows,
                matched,
                unreachable,
                ..
            },
        ] = &done[..]
        else {
            panic!("{done:?}")
        };
        assert_eq!(*asker, Asker::Conn(4));
        assert_eq!(query.request_id, 77, "the asker's own id comes back");
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[&TaskId::new("f.1").unwrap()].state,
            TaskState::Finished
        );
        assert_eq!(*matched, 5, "b said 5 matched before its cut");
        assert_eq!(unreachable, &vec![nid("c"), nid("d")]);
        assert_eq!(q.open(), 0);
        assert_eq!(q.poll_timeout(), None);
    }

    #[test]
    fn a_local_log_miss_finds_the_node_and_reads_there() {
        let mut q = Queries::default();
        let t = TaskId::new("f.3").unwrap();
        let read = LogRead {
            request_id: 9,
            task_id: t.clone(),
            stream: LogStream::Stdout,
            offset: 0,
            max_bytes: 100,
        };
        let find = TaskQuery {
            task_id: Some(t.clone()),
            ..TaskQuery::all(0)
        };
        q.read_local(
            Asker::Http(1),
            read.clone(),
            LocalMiss::Find {
                query: find,
                local: Vec::new(),
                ask: vec![nid("home")],
                dead: Vec::new(),
            },
        )
        .unwrap();
        let out = drain(&mut q);
        let [Out::ReadLocal { token, .. }] = &out[..] else {
            panic!("{out:?}")
        };
        let miss = LogChunk {
            request_id: 0,
            task_id: t.clone(),
            data: Vec::new(),
            next_offset: 0,
            eof: false,
            error: Some("no sandbox".into()),
        };
        let now = Instant::ZERO;
        q.on_local_log(now, *token, miss);
        let out = drain(&mut q);
        assert!(
            matches!(&out[..], [Out::Send { to, msg: PeerMessage::ListTasks(_) }] if *to == nid("home")),
            "{out:?}"
        );
        // A remote read that nobody answers ends with an error naming the node.
        q.read_remote(now, Asker::Http(1), read, nid("b")).unwrap();
        let out = drain(&mut q);
        let [
            Out::Send {
                msg: PeerMessage::LogRead(r),
                ..
            },
        ] = &out[..]
        else {
            panic!("{out:?}")
        };
        let rid = r.request_id;
        // An answer from another node than the one asked is ignored.
        let chunk = LogChunk {
            request_id: rid,
            task_id: t.clone(),
            data: b"hi".to_vec(),
            next_offset: 2,
            eof: true,
            error: None,
        };
        q.on_log_chunk(&nid("c"), chunk.clone());
        assert!(drain(&mut q).is_empty());
        q.on_log_chunk(&nid("b"), chunk);
        let out = drain(&mut q);
        let [Out::Log { chunk, .. }] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(chunk.request_id, 9);
        assert_eq!(chunk.data, b"hi");
        q.read_remote(
            now,
            Asker::Http(2),
            LogRead {
                request_id: 10,
                task_id: t,
                stream: LogStream::Stderr,
                offset: 0,
                max_bytes: 1,
            },
            nid("b"),
        )
        .unwrap();
        drain(&mut q);
        q.handle_timeout(now + QUERY_TIMEOUT);
        let out = drain(&mut q);
        // The home never answered the look-up either: it times out too.
        let [Out::Listed { unreachable, .. }, Out::Log { chunk, .. }] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(unreachable, &vec![nid("home")]);
        assert!(
            chunk.error.as_ref().unwrap().contains("node b"),
            "{chunk:?}"
        );
    }

    #[test]
    fn a_dead_nodes_own_tasks_are_listed_lost_from_what_was_heard() {
        // Issue 11: while a node was dead, the tasks it ran for frameworks
        // homed on it vanished from listings.
        let mut q = Queries::default();
        let own = |id: &str, state| {
            let mut r = row(id, state, Some("x"));
            r.framework = FrameworkId::new("f-00000001@x").unwrap();
            r
        };
        let (a, b, c) = (
            own("f-00000001@x.1", TaskState::Running),
            own("f-00000001@x.2", TaskState::Running),
            own("f-00000001@x.3", TaskState::Finished),
        );
        // Homed elsewhere: its home knows it, so it is not remembered.
        let elsewhere = row("g-00000001@y.1", TaskState::Running, Some("x"));
        let id = ask_peers(&mut q, TaskQuery::all(1), &["x"]);
        let tasks = vec![a.clone(), b.clone(), c, elsewhere];
        q.on_task_list(
            &nid("x"),
            TaskList {
                request_id: id,
                matched: 4,
                tasks,
            },
        );
        drain(&mut q);
        // x says task 2 ended, in an answer to a filtered query.
        let mut b_done = b.clone();
        b_done.state = TaskState::Killed;
        let id = ask_peers(
            &mut q,
            TaskQuery {
                task_id: Some(b.task_id.clone()),
                ..TaskQuery::all(2)
            },
            &["x"],
        );
        q.on_task_list(
            &nid("x"),
            TaskList {
                request_id: id,
                matched: 1,
                tasks: vec![b_done],
            },
        );
        drain(&mut q);
        // x is declared dead: a listing shows its own unfinished task lost.
        q.list(
            Instant::ZERO,
            Asker::Conn(1),
            Purpose::Page,
            TaskQuery::all(3),
            Vec::new(),
            Vec::new(),
            vec![nid("x")],
        )
        .unwrap();
        let out = drain(&mut q);
        let [
            Out::Listed {
                rows, unreachable, ..
            },
        ] = &out[..]
        else {
            panic!("{out:?}")
        };
        assert_eq!(unreachable, &vec![nid("x")]);
        assert_eq!(rows.keys().collect::<Vec<_>>(), vec![&a.task_id]);
        let lost = &rows[&a.task_id];
        assert_eq!(lost.state, TaskState::Lost);
        assert!(
            lost.reason.as_ref().unwrap().contains("declared dead"),
            "{lost:?}"
        );
        // Filters apply to them too.
        q.list(
            Instant::ZERO,
            Asker::Conn(1),
            Purpose::Page,
            TaskQuery {
                state: Some(TaskState::Running),
                ..TaskQuery::all(4)
            },
            Vec::new(),
            Vec::new(),
            vec![nid("x")],
        )
        .unwrap();
        let out = drain(&mut q);
        assert!(
            matches!(&out[..], [Out::Listed { rows, .. }] if rows.is_empty()),
            "{out:?}"
        );
    }

    #[test]
    fn the_homes_row_stands_against_a_witness_that_holds_it_dead() {
        // A witness that still holds node x dead lists x's running task
        // lost; x itself answered that it runs: x's row stands, whichever
        // answer came first.
        for home_first in [true, false] {
            let mut q = Queries::default();
            let id = ask_peers(&mut q, TaskQuery::all(1), &["x", "w"]);
            let mut running = row("f-00000001@x.1", TaskState::Running, Some("x"));
            running.framework = FrameworkId::new("f-00000001@x").unwrap();
            let mut lost = running.clone();
            lost.state = TaskState::Lost;
            let from_x = TaskList {
                request_id: id,
                matched: 1,
                tasks: vec![running],
            };
            let from_w = TaskList {
                request_id: id,
                matched: 1,
                tasks: vec![lost],
            };
            if home_first {
                q.on_task_list(&nid("x"), from_x);
                q.on_task_list(&nid("w"), from_w);
            } else {
                q.on_task_list(&nid("w"), from_w);
                q.on_task_list(&nid("x"), from_x);
            }
            let out = drain(&mut q);
            let [Out::Listed { rows, .. }] = &out[..] else {
                panic!("{out:?}")
            };
            assert_eq!(
                rows.values().next().unwrap().state,
                TaskState::Running,
                "home first: {home_first}"
            );
        }
    }

    #[test]
    fn open_queries_are_bounded() {
        let mut q = Queries::default();
        for _ in 0..MAX_QUERIES {
            q.list(
                Instant::ZERO,
                Asker::Conn(1),
                Purpose::Page,
                TaskQuery::all(1),
                Vec::new(),
                vec![nid("b")],
                Vec::new(),
            )
            .unwrap();
        }
        assert_eq!(
            q.list(
                Instant::ZERO,
                Asker::Conn(1),
                Purpose::Page,
                TaskQuery::all(1),
                Vec::new(),
                vec![nid("b")],
                Vec::new()
            ),
            Err(TooMany)
        );
        // One with nobody to ask needs no slot.
        assert!(
            q.list(
                Instant::ZERO,
                Asker::Conn(1),
                Purpose::Page,
                TaskQuery::all(1),
                Vec::new(),
                Vec::new(),
                Vec::new()
            )
            .is_ok()
        );
    }
}
