//! The node's one command surface: the framework socket and the HTTP API
//! both turn a request into a [`Command`], hand it to the agent's core with
//! the [`Asker`] it came from, and get one [`Reply`] back (or several: a
//! reattach re-sends status events, a subscription sends offers). Submit,
//! kill, listing and log reads are therefore written once, in the core.
//!
//! A socket client's [`Command`] is its decoded `ClientMessage`; the HTTP
//! API builds the same commands ([`crate::http`]). Replies map back to
//! `ServerMessage`s for the socket ([`Reply::into_server_message`]) and to
//! JSON and status codes for HTTP.

use agora_protocol::wire::{
    BidOn, CellList, CellNodeList, ClientMessage, ErrorCode, ErrorReply, Kill, ListTasks, LogChunk,
    NodeList, Offer, ReadLog, Register, Registered, ServerMessage, StatusAck, StatusEvent, Submit,
    Submitted, TaskPage, TaskQuery, TaskRow,
};
use agora_protocol::{NodeId, TaskId};

/// Who asked: a socket connection or one HTTP request, by a number its
/// side chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Asker {
    /// A framework socket connection.
    Conn(u64),
    /// One HTTP request in flight.
    Http(u64),
}

/// Something a client asks the node to do. A socket connection must
/// register before anything but the queries (listing tasks and nodes,
/// reading logs); an HTTP request acts as the node's internal "http"
/// framework for submits and as the operator for kills.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Become (or reattach to) a framework.
    Register(Register),
    /// Place tasks.
    Submit(Submit),
    /// Place one task on a chosen node.
    BidOn(BidOn),
    /// Kill a task.
    Kill(Kill),
    /// The latest status of these tasks (all of the framework's if empty).
    Reconcile(Vec<TaskId>),
    /// A status event was handled.
    Ack(StatusAck),
    /// Start the `offers` frames.
    SubscribeOffers,
    /// Stop them.
    UnsubscribeOffers,
    /// Tasks anywhere in the cluster, filtered and paged.
    ListTasks(TaskQuery),
    /// One task, wherever it is.
    GetTask(TaskId),
    /// The nodes this node sees.
    ListNodes(ListTasks),
    /// Part of a task's output.
    ReadLog(ReadLog),
    /// The cells this node knows.
    ListCells(ListTasks),
    /// Every cell's members (its gateways asked).
    ListAllNodes(ListTasks),
}

impl From<ClientMessage> for Command {
    fn from(m: ClientMessage) -> Command {
        match m {
            ClientMessage::Register(r) => Command::Register(r),
            ClientMessage::Submit(s) => Command::Submit(s),
            ClientMessage::BidOn(b) => Command::BidOn(b),
            ClientMessage::Kill(k) => Command::Kill(k),
            ClientMessage::Reconcile(ids) => Command::Reconcile(ids),
            ClientMessage::Ack(a) => Command::Ack(a),
            ClientMessage::SubscribeOffers => Command::SubscribeOffers,
            ClientMessage::UnsubscribeOffers => Command::UnsubscribeOffers,
            ClientMessage::ListTasks(q) => Command::ListTasks(q),
            ClientMessage::ListNodes(l) => Command::ListNodes(l),
            ClientMessage::ReadLog(r) => Command::ReadLog(r),
            ClientMessage::ListCells(l) => Command::ListCells(l),
            ClientMessage::ListAllNodes(l) => Command::ListAllNodes(l),
        }
    }
}

/// What the node answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// To `Register`.
    Registered(Registered),
    /// To `Submit` and `BidOn`.
    Submitted(Submitted),
    /// To `Kill`: the kill is on its way (the task's status follows).
    KillSent(TaskId),
    /// A task's state changed (or, seq 0, a `Reconcile` answer).
    Status(StatusEvent),
    /// The current offers.
    Offers(Vec<Offer>),
    /// To `ListTasks`.
    Tasks(TaskPage),
    /// To `GetTask` (None: no node that answered knows it).
    Task(Option<TaskRow>),
    /// To `ListNodes`.
    Nodes(NodeList),
    /// To `ReadLog` (its `error` says why there is no data).
    Log(LogChunk),
    /// To `ListCells`.
    Cells(CellList),
    /// To `ListAllNodes`.
    CellNodes(CellNodeList),
    /// The command failed.
    Error(ErrorReply),
}

impl Reply {
    /// An error answer.
    pub fn error(code: ErrorCode, message: impl Into<String>, request_id: Option<u64>) -> Reply {
        Reply::Error(ErrorReply {
            code,
            message: message.into(),
            request_id,
        })
    }

    /// The frame a socket client gets, if any: a kill's success is told by
    /// the task's status events, and `GetTask` is an HTTP command (a socket
    /// client asks `list_tasks` with a `task_id` filter).
    pub fn into_server_message(self) -> Option<ServerMessage> {
        Some(match self {
            Reply::Registered(r) => ServerMessage::Registered(r),
            Reply::Submitted(s) => ServerMessage::Submitted(s),
            Reply::Status(e) => ServerMessage::Status(e),
            Reply::Offers(o) => ServerMessage::Offers(o),
            Reply::Tasks(p) => ServerMessage::Tasks(p),
            Reply::Nodes(n) => ServerMessage::Nodes(n),
            Reply::Log(c) => ServerMessage::Log(c),
            Reply::Cells(c) => ServerMessage::Cells(c),
            Reply::CellNodes(c) => ServerMessage::CellNodes(c),
            Reply::Error(e) => ServerMessage::Error(e),
            Reply::KillSent(_) | Reply::Task(_) => return None,
        })
    }

    /// True when a socket client may miss this reply without losing
    /// anything: a status event that needs an ack is re-sent until acked,
    /// and the next offers frame replaces this one.
    pub fn droppable(&self) -> bool {
        matches!(self, Reply::Status(e) if e.seq > 0) || matches!(self, Reply::Offers(_))
    }
}

/// The nodes a reply says may be missing rows, for a one-line note.
pub fn unreachable_note(nodes: &[NodeId]) -> Option<String> {
    if nodes.is_empty() {
        return None;
    }
    let names: Vec<&str> = nodes.iter().map(NodeId::as_str).collect();
    Some(format!(
        "{} node(s) did not answer or are down, so tasks only they know are missing: {}",
        nodes.len(),
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_map_to_socket_frames() {
        let t = TaskId::new("f.1").unwrap();
        assert_eq!(Reply::KillSent(t).into_server_message(), None);
        assert_eq!(Reply::Task(None).into_server_message(), None);
        let e = Reply::error(ErrorCode::Busy, "later", Some(3));
        assert!(!e.droppable());
        assert!(matches!(
            e.into_server_message(),
            Some(ServerMessage::Error(ErrorReply {
                request_id: Some(3),
                ..
            }))
        ));
        assert!(Reply::Offers(Vec::new()).droppable());
        assert_eq!(unreachable_note(&[]), None);
        let n = unreachable_note(&[NodeId::new("b").unwrap()]).unwrap();
        assert!(n.contains("b"), "{n}");
    }
}
