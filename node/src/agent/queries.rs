//! Questions a client asks that other nodes must answer: `list_tasks`
//! (this node's tasks merged with every live peer's, ~2 s timeout, missing
//! answers skipped) and `read_log` (from whichever node ran the task). Each
//! gets an id local to this node, sent as the peer message's `request_id`;
//! answers are matched back by id and sender. At most [`MAX_QUERIES`] are
//! open at once. The asker is a socket connection or the HTTP API
//! ([`TaskReply`], [`LogReply`]); both go through the same fan-out.

use crate::http::{CommandError, TaskListing};
use agora_protocol::wire::{self, ErrorCode, LogStream, TaskPage, TaskRow};
use agora_protocol::{Instant, NodeId, TaskId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::oneshot;

/// Who waits for a task listing.
#[derive(Debug)]
pub enum TaskReply {
    /// A socket connection's `list_tasks`.
    Conn {
        /// The asking connection.
        conn: u64,
        /// What it asked for.
        query: wire::TaskQuery,
    },
    /// The HTTP API's cluster-wide list.
    List(oneshot::Sender<TaskListing>),
    /// The HTTP API's look-up of one task.
    Get(TaskId, oneshot::Sender<Option<TaskRow>>),
    /// The HTTP API's kill of a task homed elsewhere: sent once a node is
    /// found that knows it unfinished.
    Kill(TaskId, oneshot::Sender<Result<(), CommandError>>),
}

/// Who waits for a log chunk.
#[derive(Debug)]
pub enum LogReply {
    /// A socket connection's `read_log`.
    Conn {
        /// The asking connection.
        conn: u64,
        /// The client's request id.
        request_id: u64,
    },
    /// The HTTP API.
    Api(oneshot::Sender<Result<LogChunk, CommandError>>),
}

/// How long a query waits for peers.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Most queries open at once.
pub const MAX_QUERIES: usize = 1024;
/// Most task rows returned to a client in one answer.
pub const MAX_ROWS: usize = 2000;

/// A `list_tasks` in progress.
#[derive(Debug)]
pub struct TaskQuery {
    /// Who asked.
    pub to: TaskReply,
    /// Rows so far, by task.
    pub rows: BTreeMap<TaskId, TaskRow>,
    /// Peers not yet answered.
    pub waiting: BTreeSet<NodeId>,
    /// When to answer regardless.
    pub deadline: Instant,
}

/// A `read_log` in progress.
#[derive(Debug)]
pub struct LogQuery {
    /// Who asked.
    pub to: LogReply,
    /// The task.
    pub task_id: TaskId,
    /// Which file.
    pub stream: LogStream,
    /// Peers not yet answered.
    pub waiting: BTreeSet<NodeId>,
    /// The last error heard.
    pub last_error: Option<String>,
    /// When to give up.
    pub deadline: Instant,
}

/// Open queries.
#[derive(Debug, Default)]
pub struct Queries {
    next: u64,
    /// Task listings.
    pub tasks: BTreeMap<u64, TaskQuery>,
    /// Log reads.
    pub logs: BTreeMap<u64, LogQuery>,
}

impl Queries {
    /// A fresh query id, or None when too many are open.
    pub fn next_id(&mut self) -> Option<u64> {
        if self.tasks.len() + self.logs.len() >= MAX_QUERIES {
            return None;
        }
        self.next += 1;
        Some(self.next)
    }
}

fn rank(row: &TaskRow) -> (u8, bool, bool) {
    use agora_protocol::task::TaskState::*;
    let r = match row.state {
        Staging => 0,
        Starting => 1,
        Running => 2,
        Finished | Failed | Killed | Lost => 3,
    };
    (r, row.exit_code.is_some(), row.node.is_some())
}

/// Merges rows: for each task, the most advanced state wins.
pub fn merge_rows(into: &mut BTreeMap<TaskId, TaskRow>, rows: Vec<TaskRow>) {
    for row in rows {
        match into.get(&row.task_id) {
            Some(old) if rank(old) >= rank(&row) => {}
            _ => {
                into.insert(row.task_id.clone(), row);
            }
        }
    }
}

use super::core::Core;
use agora_protocol::wire::{
    ListTasks, LogChunk, LogRead, MAX_LOG_CHUNK, PeerMessage, ReadLog, ServerMessage, TaskList,
};

impl Core {
    pub(super) fn start_list_tasks(&mut self, to: TaskReply) {
        let mut rows = BTreeMap::new();
        merge_rows(&mut rows, self.local_rows());
        let peers = self.host.live_peers();
        let Some(qid) = self.queries.next_id().filter(|_| !peers.is_empty()) else {
            return self.answer_tasks(to, rows, Vec::new());
        };
        for p in &peers {
            self.p2p
                .send(p, PeerMessage::ListTasks(ListTasks { request_id: qid }));
        }
        self.queries.tasks.insert(
            qid,
            TaskQuery {
                to,
                rows,
                waiting: peers.into_iter().collect(),
                deadline: self.clock.now() + QUERY_TIMEOUT,
            },
        );
    }

    /// Answers a finished (or timed-out) task listing.
    pub(super) fn answer_tasks(
        &mut self,
        to: TaskReply,
        rows: BTreeMap<TaskId, TaskRow>,
        unreachable: Vec<NodeId>,
    ) {
        match to {
            TaskReply::Conn { conn, query } => {
                let (tasks, matched) = query.page(rows.into_values());
                self.reply(
                    conn,
                    ServerMessage::Tasks(TaskPage {
                        request_id: query.request_id,
                        tasks,
                        matched,
                    }),
                );
            }
            TaskReply::List(reply) => {
                let tasks = rows.into_values().take(MAX_ROWS).collect();
                let _ = reply.send(TaskListing { tasks, unreachable });
            }
            TaskReply::Get(id, reply) => {
                let _ = reply.send(rows.get(&id).cloned());
            }
            TaskReply::Kill(id, reply) => match rows.get(&id) {
                Some(row) if !row.state.is_terminal() => {
                    let now = self.clock.now();
                    let answer = self
                        .host
                        .kill(now, None, &id)
                        .map(|_| ())
                        .map_err(|e| CommandError::new(e.code, e.message));
                    let _ = reply.send(answer);
                }
                Some(_) => {
                    let _ = reply.send(Err(CommandError::new(
                        ErrorCode::UnknownTask,
                        format!("task {id} has already ended"),
                    )));
                }
                None => {
                    let _ = reply.send(Err(CommandError::new(
                        ErrorCode::UnknownTask,
                        format!("no live node knows task {id}"),
                    )));
                }
            },
        }
    }

    /// A peer's answer to `ListTasks`.
    pub(super) fn on_task_list(&mut self, from: NodeId, t: TaskList) {
        let Some(q) = self.queries.tasks.get_mut(&t.request_id) else {
            return;
        };
        if !q.waiting.remove(&from) {
            return;
        }
        merge_rows(&mut q.rows, t.tasks);
        if q.waiting.is_empty()
            && let Some(q) = self.queries.tasks.remove(&t.request_id)
        {
            self.answer_tasks(q.to, q.rows, Vec::new());
        }
    }

    /// Hands a log chunk (or its error) to whoever asked.
    pub(super) fn answer_log(&mut self, to: LogReply, mut chunk: LogChunk) {
        match to {
            LogReply::Conn { conn, request_id } => {
                chunk.request_id = request_id;
                self.reply(conn, ServerMessage::Log(chunk));
            }
            LogReply::Api(reply) => {
                let answer = match chunk.error.take() {
                    Some(e) => Err(CommandError::new(ErrorCode::UnknownTask, e)),
                    None => Ok(chunk),
                };
                let _ = reply.send(answer);
            }
        }
    }

    pub(super) async fn start_read_log(&mut self, to: LogReply, r: ReadLog) {
        let max_bytes = r.max_bytes.min(MAX_LOG_CHUNK);
        // Where did it run? Ask a local bidder first.
        let node = self.host.status_of(&r.task_id).and_then(|(_, s)| s.node);
        let local_first = node.as_ref().is_none_or(|n| *n == self.me);
        if local_first {
            let mut chunk = self
                .executor
                .read_log(&r.task_id, r.stream, r.offset, max_bytes)
                .await;
            if chunk.error.is_none() || node.is_some() {
                chunk.request_id = r.request_id;
                return self.answer_log(to, chunk);
            }
        }
        let targets: Vec<NodeId> = match node {
            Some(n) if n != self.me => vec![n],
            _ => self.host.live_peers(),
        };
        let Some(qid) = self.queries.next_id().filter(|_| !targets.is_empty()) else {
            return self.answer_log(
                to,
                LogChunk {
                    request_id: r.request_id,
                    task_id: r.task_id.clone(),
                    data: Vec::new(),
                    next_offset: r.offset,
                    eof: true,
                    error: Some(format!(
                        "no live node knows task {}; check the id with `agora ps`",
                        r.task_id
                    )),
                },
            );
        };
        for n in &targets {
            self.p2p.send(
                n,
                PeerMessage::LogRead(LogRead {
                    request_id: qid,
                    task_id: r.task_id.clone(),
                    stream: r.stream,
                    offset: r.offset,
                    max_bytes,
                }),
            );
        }
        self.queries.logs.insert(
            qid,
            LogQuery {
                to,
                task_id: r.task_id,
                stream: r.stream,
                waiting: targets.into_iter().collect::<BTreeSet<_>>(),
                last_error: None,
                deadline: self.clock.now() + QUERY_TIMEOUT,
            },
        );
    }

    /// A peer's answer to `LogRead`.
    pub(super) fn on_log_chunk(&mut self, from: NodeId, c: LogChunk) {
        let Some(q) = self.queries.logs.get_mut(&c.request_id) else {
            return;
        };
        if !q.waiting.remove(&from) {
            return;
        }
        let done = c.error.is_none() || q.waiting.is_empty();
        if c.error.is_some() {
            q.last_error = c.error.clone();
        }
        if done && let Some(q) = self.queries.logs.remove(&c.request_id) {
            self.answer_log(q.to, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::task::TaskState;
    use agora_protocol::{FrameworkId, Resources};

    fn row(state: TaskState, exit: Option<i32>) -> TaskRow {
        TaskRow {
            task_id: TaskId::new("f.1").unwrap(),
            name: "j".into(),
            framework: FrameworkId::new("f").unwrap(),
            state,
            node: None,
            exit_code: exit,
            resources: Resources::ZERO,
            reason: None,
        }
    }

    #[test]
    fn most_advanced_row_wins() {
        let mut m = BTreeMap::new();
        merge_rows(&mut m, vec![row(TaskState::Running, None)]);
        merge_rows(&mut m, vec![row(TaskState::Finished, Some(0))]);
        merge_rows(&mut m, vec![row(TaskState::Starting, None)]);
        assert_eq!(m.len(), 1);
        assert_eq!(m.values().next().unwrap().state, TaskState::Finished);
    }
}
