//! Every message that crosses a process boundary, as plain serde types.
//!
//! [`PeerMessage`] travels node to node (over libp2p request-response in the
//! node, over the modelled network in the simulator). [`ClientMessage`] and
//! [`ServerMessage`] travel on a node's framework socket. Encoding lives in
//! [`crate::codec`]. The types stay plain (externally tagged enums, no
//! skipped fields) so postcard and JSON encode them the same way everywhere;
//! new variants go at the end, and a breaking change bumps
//! [`PROTOCOL_VERSION`].

use crate::cell::{CellAggregate, CellId};
use crate::constraint::Attributes;
use crate::ids::{BidId, FrameworkId, LeaseId, NodeId, TaskId};
use crate::resources::{Dimension, Resources};
use crate::task::{TaskSpec, TaskState, TaskStatus};
use crate::view::NodeInfo;
use serde::{Deserialize, Serialize};

/// The version both the peer protocol and the framework socket speak.
pub const PROTOCOL_VERSION: u32 = 1;

/// The libp2p protocol name of the peer protocol. Version 2 (2026-11-22):
/// status updates carry the node's free vector, and a withdrawal gives back
/// an awarded lease (a version-1 bidder would release it, a version-1
/// auctioneer would keep it until it expired); nodes of different versions
/// do not talk. Version 3 (2026-12-01): `ListTasks` carries the asker's
/// [`TaskQuery`] (filters and limit applied by the answering node), a
/// `TaskList` says how many rows matched before its cut, and a node sends
/// its witness the tasks it runs for frameworks homed on it
/// ([`PeerMessage::Witness`]).
pub const PEER_PROTOCOL_NAME: &str = "/agora/peer/5";

// ---------------------------------------------------------------- peers

/// A request for resources, sent by a bidder to a candidate node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    /// Unique per bidder.
    pub bid_id: BidId,
    /// The task being placed.
    pub task_id: TaskId,
    /// Its framework.
    pub framework: FrameworkId,
    /// The framework's DRF weight (at least 1).
    pub weight: u32,
    /// What to run and what it needs (boxed: it is most of a bid's size, and
    /// every other message, and every cached answer, would otherwise be as
    /// large as a bid).
    pub spec: Box<TaskSpec>,
    /// A tie-breaker after priority and fair share: higher wins.
    pub price: u64,
    /// How long the bidder is willing to wait at this node for room, in
    /// milliseconds: a bid that does not fit now is held (and ranked again
    /// whenever resources free up) until then, and rejected after. 0 means
    /// answer at once.
    pub wait_ms: u32,
}

/// A lease on resources, granted in answer to a [`Bid`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Award {
    /// The bid answered.
    pub bid_id: BidId,
    /// Its task.
    pub task_id: TaskId,
    /// The lease to confirm or release.
    pub lease_id: LeaseId,
    /// How long the lease holds without a confirm, in milliseconds.
    pub lease_ms: u32,
    /// Concrete ports reserved for the task.
    pub ports: Vec<u16>,
}

/// Why a bid lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The node does not have enough free in these dimensions.
    Insufficient(Vec<Dimension>),
    /// Other bids in the same window ranked higher and took what was free.
    Outbid,
    /// The node's attributes do not satisfy the task's constraints.
    Constraints,
    /// The node holds too many undecided bids; try elsewhere.
    Busy,
    /// The spec broke a limit (the text says which).
    InvalidSpec(String),
    /// The node is leaving the cluster.
    Draining,
    /// The bidder withdrew the bid (its task was placed elsewhere or ended).
    Withdrawn,
}

/// A lost bid, with the node's current free vector so the bidder's view heals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// The bid answered.
    pub bid_id: BidId,
    /// Its task.
    pub task_id: TaskId,
    /// Why.
    pub reason: RejectReason,
    /// The node's free resources now.
    pub free: Resources,
    /// The version of that free vector (it grows with every ledger change).
    pub free_version: u64,
}

/// "Launch the task on this lease."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirm {
    /// The lease.
    pub lease_id: LeaseId,
    /// Its task.
    pub task_id: TaskId,
}

/// The lease is now a running allocation and the task is being launched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmed {
    /// The lease.
    pub lease_id: LeaseId,
    /// Its task.
    pub task_id: TaskId,
}

/// The confirm came too late (the lease expired) or named an unknown lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmRefused {
    /// The lease.
    pub lease_id: LeaseId,
    /// Its task.
    pub task_id: TaskId,
    /// Why, for the log.
    pub reason: String,
}

/// "I do not need this lease."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The lease.
    pub lease_id: LeaseId,
    /// Its task.
    pub task_id: TaskId,
}

/// A task's new state, from the node running it to its home node; resent
/// until acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// Grows with each update the node sends for this task.
    pub seq: u64,
    /// The task's framework.
    pub framework: FrameworkId,
    /// The status.
    pub status: TaskStatus,
    /// The node's free resources when this update was (re)sent: a finished
    /// task's room reaches its home node's bidders at once instead of with
    /// the next gossip round.
    pub free: Resources,
    /// The version of that free vector (as in [`Reject`]).
    pub free_version: u64,
}

/// Acknowledges a [`StatusUpdate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAck {
    /// The task.
    pub task_id: TaskId,
    /// The update's sequence number.
    pub seq: u64,
}

/// "Kill this task" (TERM, then KILL after its grace period).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kill {
    /// The task.
    pub task_id: TaskId,
}

/// Which output file of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Reads part of a task's output from the node that ran it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRead {
    /// Chosen by the reader, echoed in the answer.
    pub request_id: u64,
    /// The task.
    pub task_id: TaskId,
    /// Which file.
    pub stream: LogStream,
    /// Byte offset to start at.
    pub offset: u64,
    /// At most this many bytes (the node caps it at [`MAX_LOG_CHUNK`]).
    pub max_bytes: u32,
}

/// Largest chunk of log returned by one read.
pub const MAX_LOG_CHUNK: u32 = 256 * 1024;

/// Part of a task's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// From the request.
    pub request_id: u64,
    /// The task.
    pub task_id: TaskId,
    /// The bytes read.
    pub data: Vec<u8>,
    /// Offset to ask for next.
    pub next_offset: u64,
    /// True when `next_offset` is the end of the file as it is now.
    pub eof: bool,
    /// Set when the log could not be read (unknown task, IO error).
    pub error: Option<String>,
}

/// Asks a node which tasks it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTasks {
    /// Chosen by the asker, echoed in the answer.
    pub request_id: u64,
}

/// One task as listed by a node or a home node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRow {
    /// The task.
    pub task_id: TaskId,
    /// Its job name.
    pub name: String,
    /// Its framework.
    pub framework: FrameworkId,
    /// Its state.
    pub state: TaskState,
    /// Where it was placed.
    pub node: Option<NodeId>,
    /// Its exit code, if it exited.
    pub exit_code: Option<i32>,
    /// What it holds.
    pub resources: Resources,
    /// Why it ended, if it failed or was lost.
    pub reason: Option<String>,
}

/// A framework's `list_tasks`: which tasks, at most how many. Every filter
/// is optional (absent in JSON means "any"); a row must pass them all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskQuery {
    /// Chosen by the asker, echoed in the answer.
    pub request_id: u64,
    /// Only this task.
    #[serde(default)]
    pub task_id: Option<TaskId>,
    /// Only tasks in this state.
    #[serde(default)]
    pub state: Option<TaskState>,
    /// Only tasks of this job name.
    #[serde(default)]
    pub name: Option<String>,
    /// Only tasks placed on this node.
    #[serde(default)]
    pub node: Option<NodeId>,
    /// Only tasks of this framework.
    #[serde(default)]
    pub framework: Option<FrameworkId>,
    /// At most this many rows (0, or more than [`MAX_LIST_ROWS`]: that).
    #[serde(default)]
    pub limit: u32,
}

/// Most rows in one answer to `list_tasks`.
pub const MAX_LIST_ROWS: usize = 2000;

impl TaskQuery {
    /// Every task, as many as one answer holds.
    pub fn all(request_id: u64) -> Self {
        TaskQuery {
            request_id,
            ..TaskQuery::default()
        }
    }

    /// True when the query has no filter (its answer is every row, up to
    /// the limit).
    pub fn is_everything(&self) -> bool {
        self.task_id.is_none()
            && self.state.is_none()
            && self.name.is_none()
            && self.node.is_none()
            && self.framework.is_none()
    }

    /// True when `row` passes every filter.
    pub fn matches(&self, row: &TaskRow) -> bool {
        self.task_id.as_ref().is_none_or(|t| *t == row.task_id)
            && self.state.is_none_or(|s| s == row.state)
            && self.name.as_ref().is_none_or(|n| *n == row.name)
            && self
                .node
                .as_ref()
                .is_none_or(|n| row.node.as_ref() == Some(n))
            && self
                .framework
                .as_ref()
                .is_none_or(|f| *f == row.framework || row.task_id.is_of(f))
    }

    /// The rows that match, in task order ([`TaskId::list_order`]), cut to
    /// the limit, with how many matched before the cut.
    pub fn page(&self, rows: impl IntoIterator<Item = TaskRow>) -> (Vec<TaskRow>, u64) {
        let mut out: Vec<TaskRow> = rows.into_iter().filter(|r| self.matches(r)).collect();
        out.sort_by(|a, b| a.task_id.list_order(&b.task_id));
        let matched = out.len() as u64;
        let limit = match self.limit as usize {
            0 => MAX_LIST_ROWS,
            n => n.min(MAX_LIST_ROWS),
        };
        out.truncate(limit);
        (out, matched)
    }
}

/// A node's answer to a framework's `list_tasks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPage {
    /// From the request.
    pub request_id: u64,
    /// The matching tasks, in task order, at most the request's limit.
    pub tasks: Vec<TaskRow>,
    /// How many tasks matched: more than `tasks` holds when the list was cut.
    #[serde(default)]
    pub matched: u64,
    /// Nodes whose rows may be missing: live nodes that did not answer in
    /// time, and dead nodes (the tasks they ran for frameworks homed on
    /// them are known only to them).
    #[serde(default)]
    pub unreachable: Vec<NodeId>,
}

/// A node's answer to a peer's `ListTasks` query: the rows it knows that
/// match, in task order, cut to the query's limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskList {
    /// From the request.
    pub request_id: u64,
    /// The tasks.
    pub tasks: Vec<TaskRow>,
    /// How many of its rows matched before the cut.
    pub matched: u64,
}

/// The tasks a node runs for frameworks homed on it, sent to its witness
/// (docs/PROTOCOL.md, "Queries go to the owner"): only that node knows them,
/// so while it is declared dead its witness lists them as lost. All of them
/// each time (running first, cut to [`MAX_LIST_ROWS`]: more are not
/// witnessed); an empty list tells the witness to forget the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessRows {
    /// Grows with every message the node sends, across restarts (it starts
    /// from the node's generation): an older message never replaces a newer.
    pub version: u64,
    /// The tasks.
    pub rows: Vec<TaskRow>,
}

/// Where a node outside the home cell's gossip is reached (what a gateway
/// tells about the nodes it knows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The node.
    pub node: NodeId,
    /// Its libp2p peer id (base58).
    pub peer_id: String,
    /// Its libp2p address (multiaddr).
    pub p2p_addr: String,
    /// Its federation gossip address, when it is a gateway.
    #[serde(default)]
    pub federation: Option<String>,
}

/// One cell as the federation knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellEntry {
    /// The cell.
    pub cell: CellId,
    /// Its name.
    pub name: String,
    /// What its gateways publish.
    pub aggregate: CellAggregate,
    /// Its gateways (those in the federation).
    pub gateways: Vec<Contact>,
}

/// A gateway's answer to [`PeerMessage::FederationQuery`]: every cell of
/// the federation (its own included), at most
/// [`crate::host::MAX_CELLS`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationView {
    /// The cells.
    pub cells: Vec<CellEntry>,
}

/// Any node → a gateway of `cell`: who are that cell's members?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellQuery {
    /// The cell asked about.
    pub cell: CellId,
}

/// One member of a cell, as its gateway knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellMember {
    /// What the view holds about it.
    pub info: NodeInfo,
    /// Where it is reached.
    pub contact: Contact,
}

/// A gateway's answer to [`PeerMessage::CellQuery`]: the members of its
/// cell it knows (at most [`crate::host::MAX_IMPORTED`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellMembers {
    /// The cell.
    pub cell: CellId,
    /// Its members.
    pub members: Vec<CellMember>,
}

/// Any node → one gateway of each other cell: where is this node? Sent
/// when a message must go to a node that is neither in the sender's cell
/// nor imported (a task's home or runner in another cell).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locate {
    /// The node looked for.
    pub node: NodeId,
}

/// Answer to [`PeerMessage::Locate`], from a node whose cell has the node
/// alive (the others stay silent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Located {
    /// The answering node's cell, the located node's.
    pub cell: CellId,
    /// Where the node is reached.
    pub contact: Contact,
}

/// Everything one node says to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerMessage {
    /// Bidder → auctioneer.
    Bid(Bid),
    /// Auctioneer → bidder.
    Award(Award),
    /// Auctioneer → bidder.
    Reject(Reject),
    /// Bidder → auctioneer.
    Confirm(Confirm),
    /// Auctioneer → bidder.
    Confirmed(Confirmed),
    /// Auctioneer → bidder.
    ConfirmRefused(ConfirmRefused),
    /// Bidder → auctioneer.
    Release(Release),
    /// Running node → home node.
    Status(StatusUpdate),
    /// Home node → running node.
    StatusAck(StatusAck),
    /// Home node → running node.
    Kill(Kill),
    /// Any node → running node.
    LogRead(LogRead),
    /// Running node → reader.
    LogChunk(LogChunk),
    /// Any node → any node: the rows it knows that match.
    ListTasks(TaskQuery),
    /// Answer to `ListTasks`.
    TaskList(TaskList),
    /// Bidder → auctioneer: cancel a bid. A held bid is answered with a
    /// `Withdrawn` reject; an awarded, unconfirmed one has its lease given
    /// back (the award was its answer); one not yet arrived is answered
    /// `Withdrawn` when it does.
    Withdraw(Withdraw),
    /// Any node → its witness: the tasks it runs for frameworks homed on it.
    Witness(WitnessRows),
    /// Any node → a gateway of its own cell: the federation's cells.
    FederationQuery,
    /// Answer to `FederationQuery`.
    FederationView(FederationView),
    /// Any node → a gateway of another cell: that cell's members.
    CellQuery(CellQuery),
    /// Answer to `CellQuery`.
    CellMembers(CellMembers),
    /// Any node → a gateway of another cell: where is this node?
    Locate(Locate),
    /// Answer to `Locate`.
    Located(Located),
}

impl PeerMessage {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::Bid(_) => "bid",
            PeerMessage::Award(_) => "award",
            PeerMessage::Reject(_) => "reject",
            PeerMessage::Confirm(_) => "confirm",
            PeerMessage::Confirmed(_) => "confirmed",
            PeerMessage::ConfirmRefused(_) => "confirm_refused",
            PeerMessage::Release(_) => "release",
            PeerMessage::Status(_) => "status",
            PeerMessage::StatusAck(_) => "status_ack",
            PeerMessage::Kill(_) => "kill",
            PeerMessage::LogRead(_) => "log_read",
            PeerMessage::LogChunk(_) => "log_chunk",
            PeerMessage::ListTasks(_) => "list_tasks",
            PeerMessage::TaskList(_) => "task_list",
            PeerMessage::Withdraw(_) => "withdraw",
            PeerMessage::Witness(_) => "witness",
            PeerMessage::FederationQuery => "federation_query",
            PeerMessage::FederationView(_) => "federation_view",
            PeerMessage::CellQuery(_) => "cell_query",
            PeerMessage::CellMembers(_) => "cell_members",
            PeerMessage::Locate(_) => "locate",
            PeerMessage::Located(_) => "located",
        }
    }

    /// Which state machine of the receiving node handles this message.
    pub fn recipient(&self) -> Recipient {
        match self {
            PeerMessage::Bid(_)
            | PeerMessage::Confirm(_)
            | PeerMessage::Release(_)
            | PeerMessage::StatusAck(_)
            | PeerMessage::Kill(_)
            | PeerMessage::Withdraw(_) => Recipient::Auctioneer,
            PeerMessage::Award(_)
            | PeerMessage::Reject(_)
            | PeerMessage::Confirmed(_)
            | PeerMessage::ConfirmRefused(_)
            | PeerMessage::Status(_) => Recipient::Bidder,
            PeerMessage::LogRead(_) | PeerMessage::ListTasks(_) => Recipient::Shell,
            PeerMessage::LogChunk(_) | PeerMessage::TaskList(_) => Recipient::Shell,
            PeerMessage::Witness(_) => Recipient::Host,
            PeerMessage::FederationQuery
            | PeerMessage::FederationView(_)
            | PeerMessage::CellQuery(_)
            | PeerMessage::CellMembers(_)
            | PeerMessage::Locate(_)
            | PeerMessage::Located(_) => Recipient::Directory,
        }
    }
}

/// Who handles a [`PeerMessage`] on the receiving node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// The node's auctioneer.
    Auctioneer,
    /// The bidder of the framework the message is about (awards, rejects and
    /// confirm answers name a bid or lease of that bidder; status updates name
    /// its framework).
    Bidder,
    /// The node's shell (logs, task lists): requests to answer from files and
    /// ledgers, or answers to requests it made.
    Shell,
    /// The host itself: a node's witness rows, kept for listings.
    Host,
    /// The node's cell directory (the driver: it answers from gossip what
    /// the members of its cell and the federation are).
    Directory,
}

/// Withdraws a held bid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdraw {
    /// The bid.
    pub bid_id: BidId,
    /// Its task.
    pub task_id: TaskId,
}

impl PeerMessage {
    /// For messages to a bidder: the task they concern (the task id starts
    /// with the framework id, see [`crate::ids::TaskId::framework_part`]).
    pub fn task_id(&self) -> Option<&TaskId> {
        match self {
            PeerMessage::Bid(m) => Some(&m.task_id),
            PeerMessage::Award(m) => Some(&m.task_id),
            PeerMessage::Reject(m) => Some(&m.task_id),
            PeerMessage::Confirm(m) => Some(&m.task_id),
            PeerMessage::Confirmed(m) => Some(&m.task_id),
            PeerMessage::ConfirmRefused(m) => Some(&m.task_id),
            PeerMessage::Release(m) => Some(&m.task_id),
            PeerMessage::Status(m) => Some(&m.status.task_id),
            PeerMessage::StatusAck(m) => Some(&m.task_id),
            PeerMessage::Kill(m) => Some(&m.task_id),
            PeerMessage::LogRead(m) => Some(&m.task_id),
            PeerMessage::LogChunk(m) => Some(&m.task_id),
            PeerMessage::Withdraw(m) => Some(&m.task_id),
            PeerMessage::ListTasks(_)
            | PeerMessage::TaskList(_)
            | PeerMessage::Witness(_)
            | PeerMessage::FederationQuery
            | PeerMessage::FederationView(_)
            | PeerMessage::CellQuery(_)
            | PeerMessage::CellMembers(_)
            | PeerMessage::Locate(_)
            | PeerMessage::Located(_) => None,
        }
    }
}

// ---------------------------------------------------------------- framework socket

/// The [`Register::role`] of a connection that may kill any framework's task
/// (the `agora` CLI registers with it). A framework kills only its own tasks;
/// who may connect to the socket at all is decided by its file permissions.
pub const OPERATOR_ROLE: &str = "operator";

/// Announces a framework. The first message after the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// A human name, e.g. "batch" or "cli".
    pub name: String,
    /// A role for grouping, e.g. "analytics" (may be empty). [`OPERATOR_ROLE`]
    /// is reserved: it may kill other frameworks' tasks.
    pub role: String,
    /// DRF weight, at least 1: a framework of weight 2 is entitled to twice
    /// the dominant share of one of weight 1.
    pub weight: u32,
    /// How long its tasks survive a disconnect, in milliseconds.
    pub failover_timeout_ms: u32,
    /// Set to reattach to an existing framework after a disconnect.
    pub framework_id: Option<FrameworkId>,
}

/// Submits tasks for the home node's bidder to place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submit {
    /// Chosen by the client, echoed in the answer.
    pub request_id: u64,
    /// The tasks (at most [`MAX_SUBMIT`] per message).
    pub tasks: Vec<TaskSpec>,
}

/// Largest number of tasks in one [`Submit`].
pub const MAX_SUBMIT: usize = 10_000;

/// Offer mode: bid for a task on a node the framework chose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidOn {
    /// Chosen by the client, echoed in the answer.
    pub request_id: u64,
    /// The node.
    pub node: NodeId,
    /// The task.
    pub task: TaskSpec,
}

/// Reads part of a task's output wherever it ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadLog {
    /// Chosen by the client, echoed in the answer.
    pub request_id: u64,
    /// The task.
    pub task_id: TaskId,
    /// Which file.
    pub stream: LogStream,
    /// Byte offset.
    pub offset: u64,
    /// At most this many bytes.
    pub max_bytes: u32,
}

/// Everything a framework says to its node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientMessage {
    /// Announce (or re-attach) the framework.
    Register(Register),
    /// Place tasks through the home node's bidder.
    Submit(Submit),
    /// Start receiving offers.
    SubscribeOffers,
    /// Stop receiving offers.
    UnsubscribeOffers,
    /// Bid on a named node.
    BidOn(BidOn),
    /// Kill a task.
    Kill(Kill),
    /// Ask for the current state of these tasks (all of the framework's if empty).
    Reconcile(Vec<TaskId>),
    /// Acknowledge a status update.
    Ack(StatusAck),
    /// List the tasks the cluster knows (filtered, in task order, cut to a
    /// limit).
    ListTasks(TaskQuery),
    /// List the cluster as this node sees it.
    ListNodes(ListTasks),
    /// Read a task's output.
    ReadLog(ReadLog),
    /// List the cells this node knows of (its own, and the federation's).
    ListCells(ListTasks),
    /// List every cell's members: this node's cell from its gossip, every
    /// other cell from one of its gateways (answered with `cell_nodes`).
    ListAllNodes(ListTasks),
}

/// The node's answer to the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the node speaks.
    pub version: u32,
    /// The node.
    pub node_id: NodeId,
}

/// Answer to [`Register`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The framework's id (keep it to reattach after a disconnect).
    pub framework_id: FrameworkId,
    /// True when this reattached to an existing framework.
    pub reattached: bool,
}

/// Answer to [`Submit`] or [`BidOn`]: the ids given to the tasks, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// From the request.
    pub request_id: u64,
    /// The task ids.
    pub task_ids: Vec<TaskId>,
}

/// Free resources on one node, as the home node's gossip view has them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The node.
    pub node: NodeId,
    /// What it has free.
    pub free: Resources,
    /// What it has in all.
    pub total: Resources,
    /// Its attributes.
    pub attrs: Attributes,
    /// The version of `free`.
    pub version: u64,
}

/// A status update for a framework; resent until acknowledged with `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// Acknowledge with this.
    pub seq: u64,
    /// The task's job name.
    pub name: String,
    /// The status.
    pub status: TaskStatus,
}

/// One node as a framework sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRow {
    /// The node.
    pub id: NodeId,
    /// Its gossip address.
    pub addr: String,
    /// Whether the failure detector holds it alive.
    pub alive: bool,
    /// What it has in all.
    pub total: Resources,
    /// What it has free.
    pub free: Resources,
    /// Its attributes.
    pub attrs: Attributes,
}

/// One cell, as a node knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellRow {
    /// Its name.
    pub name: String,
    /// Whether it is the asked node's own cell.
    pub home: bool,
    /// Whether the node has imported its members (a framework homed there
    /// bids in it).
    pub imported: bool,
    /// Its members, capacity and free resources: for the home cell from the
    /// node's own gossip, for another from its gateways.
    pub aggregate: CellAggregate,
    /// Its gateways.
    pub gateways: Vec<NodeId>,
}

/// Answer to `ListCells`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellList {
    /// From the request.
    pub request_id: u64,
    /// The node's cell (`None`: a flat cluster, no cells).
    pub cell: Option<String>,
    /// Whether the node is one of its cell's gateways.
    pub gateway: bool,
    /// The cells, home first, then by name.
    pub cells: Vec<CellRow>,
}

/// One cell's members, in a [`CellNodeList`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellNodes {
    /// The cell's name (`None`: a flat cluster, no cells).
    pub cell: Option<String>,
    /// Whether it is the asked node's own cell.
    pub home: bool,
    /// Its members, by id.
    pub nodes: Vec<NodeRow>,
    /// Why its members are missing (its gateways did not answer).
    pub error: Option<String>,
}

/// Answer to `ListAllNodes`: the home cell first, then the others by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellNodeList {
    /// From the request.
    pub request_id: u64,
    /// The cells.
    pub cells: Vec<CellNodes>,
}

/// Answer to `ListNodes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeList {
    /// From the request.
    pub request_id: u64,
    /// The nodes.
    pub nodes: Vec<NodeRow>,
}

/// What went wrong, as a stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The first frame was not a valid handshake.
    BadHandshake,
    /// The client speaks a protocol version the node does not.
    UnsupportedVersion,
    /// A frame could not be decoded.
    BadFrame,
    /// A frame exceeded the maximum size.
    FrameTooLarge,
    /// A message came before `register`.
    NotRegistered,
    /// A task spec broke a rule.
    InvalidSpec,
    /// No such task.
    UnknownTask,
    /// No such node, or it is dead.
    UnknownNode,
    /// A bounded queue is full; retry later.
    Busy,
    /// A framework id to reattach to is unknown.
    UnknownFramework,
    /// Something failed inside the node.
    Internal,
    /// The connection's user may not do this (e.g. act as the operator:
    /// only root, the agent's user and `--operator-group` members may).
    Forbidden,
}

/// An error for the client. Fatal codes close the connection after sending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// A stable code.
    pub code: ErrorCode,
    /// What was wrong and what to do, for a person.
    pub message: String,
    /// The request it answers, if it answers one.
    pub request_id: Option<u64>,
}

/// Everything a node says to a framework.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to the handshake.
    Welcome(Welcome),
    /// Answer to `register`.
    Registered(Registered),
    /// Answer to `submit` and `bid_on`.
    Submitted(Submitted),
    /// Offers, for subscribed frameworks.
    Offers(Vec<Offer>),
    /// A task's status changed (or a reconcile answer).
    Status(StatusEvent),
    /// Answer to `list_tasks`.
    Tasks(TaskPage),
    /// Answer to `list_nodes`.
    Nodes(NodeList),
    /// Answer to `read_log`.
    Log(LogChunk),
    /// Something was wrong.
    Error(ErrorReply),
    /// Answer to `list_cells`.
    Cells(CellList),
    /// Answer to `list_all_nodes`.
    CellNodes(CellNodeList),
}
