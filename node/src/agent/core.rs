//! The core of a running node: one synchronous, sans-IO machine that holds
//! the node's [`Host`] (everything the node decides: auctioneer, bidders,
//! view, liveness) and the node's own sub-machines: the framework
//! [`Sessions`], the cross-node [`Queries`] and two [`Pacer`]s (the ledger
//! to gossip, the HTTP snapshot). It reads no clock and does no IO: the
//! driver ([`super::run_loop`]) feeds it inputs with the time (`handle_*`)
//! and carries out what it asks for ([`Core::poll_output`]), waking it at
//! [`Core::poll_timeout`].
//!
//! Commands from framework connections and the HTTP API are handled in
//! [`super::command`]; this file holds the inputs from gossip, other nodes
//! and the executor, the periodic work, and the outputs.

use super::frameworks::Framework;
use super::journal::Record as JournalRecord;
use super::pacer::Pacer;
use super::queries::{Out, Purpose, Queries};
use super::registry::{Kind, Record};
use super::sessions::Sessions;
use crate::executor::{DataDirProblem, EndedTask, Recovered};
use crate::http::Metrics;
use crate::surface::{Asker, Reply};
use agora_protocol::fairness::FrameworkUsage;
use agora_protocol::host::{self, Host};
use agora_protocol::resources::Resources;
use agora_protocol::task::TaskStatus;
use agora_protocol::view::NodeInfo;
use agora_protocol::wire::{ErrorCode, LogChunk, LogRead, PeerMessage, TaskPage, TaskRow};
use agora_protocol::{FrameworkId, Instant, NodeId, offers};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Periodic work interval (status re-sends, failover, offers).
pub const TICK: Duration = Duration::from_millis(250);
/// Least time between two gossip publishes of the ledger.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(50);
/// Least time between two HTTP snapshots.
pub const PUBLISH_API_EVERY: Duration = Duration::from_millis(200);
/// An HTTP snapshot is republished at least this often (counters, ages).
pub const REFRESH_API_EVERY: Duration = Duration::from_secs(2);
/// The internal HTTP framework's failover timeout (it never disconnects).
const HTTP_FAILOVER: Duration = Duration::from_secs(3600);
/// Placement latencies kept for the logs.
const LATENCIES: usize = 10_000;

/// The node's ledger, to publish in gossip.
#[derive(Clone, Debug, PartialEq)]
pub struct Ledger {
    /// Capacity.
    pub total: Resources,
    /// What is free.
    pub free: Resources,
    /// The ledger's version.
    pub version: u64,
    /// What each framework holds here.
    pub allocations: BTreeMap<FrameworkId, FrameworkUsage>,
}

/// The cells as the driver's cells machine knows them.
#[derive(Clone, Debug, PartialEq)]
pub struct CellsView {
    /// The home cell's name.
    pub name: String,
    /// Every cell of the directory (the home cell's entry is ignored).
    pub others: Vec<agora_protocol::wire::CellEntry>,
}

/// What the core asks the driver to do.
#[derive(Debug)]
pub enum Output {
    /// Send a message to another node (libp2p).
    Transmit(host::Transmit),
    /// Launch or kill a task (the executor).
    Exec(host::Exec),
    /// Read a log from this node's files; the chunk comes back through
    /// [`Core::handle_local_log`] with `token`.
    ReadLog {
        /// Names the read.
        token: u64,
        /// What to read.
        read: LogRead,
    },
    /// Publish this ledger in gossip.
    Publish(Ledger),
    /// Answer a socket connection or an HTTP request.
    Reply {
        /// Who asked.
        to: Asker,
        /// The answer.
        reply: Reply,
    },
    /// Publish a new HTTP snapshot (the driver builds it from
    /// [`Core::host`], [`Core::frameworks`] and its own counters).
    PublishApi,
    /// Keep this list of the frameworks homed here on disk (it changed), so
    /// that a restart homes them again ([`super::registry`]).
    SaveFrameworks(Vec<Record>),
    /// The host imports another cell's members for its bidders (`true`)
    /// or no longer needs them (`false`): the driver asks that cell's
    /// gateways ([`super::cells`]) and answers with [`Core::handle_import`].
    Cells {
        /// The cell.
        cell: agora_protocol::cell::CellId,
        /// Import (`true`) or drop (`false`).
        import: bool,
    },
    /// Every other cell's members are wanted (`list_all_nodes`): the
    /// driver's cells machine asks their gateways and the driver answers
    /// `asker`.
    Survey {
        /// Who asked.
        asker: Asker,
        /// The request id.
        request_id: u64,
    },
    /// A cell directory message from another node, for the driver's cells
    /// machine ([`super::cells`]): it answers from gossip.
    Directory {
        /// The sender.
        from: NodeId,
        /// The message.
        msg: PeerMessage,
    },
    /// Append these framed records to the journal of the tasks homed here
    /// ([`super::journal`]); `sync`: a submit, to be on disk before the
    /// next [`Output::Reply`] goes out.
    Journal {
        /// Framed records.
        bytes: Vec<u8>,
        /// Sync before the next answer.
        sync: bool,
    },
}

/// The HTTP API's side of the core.
pub(super) struct ApiSide {
    /// The internal "http" framework that places submitted tasks.
    pub(super) framework: FrameworkId,
    pacer: Pacer,
    metrics: Option<Arc<Metrics>>,
}

/// The node's state. See the module documentation.
pub struct Core {
    pub(super) me: NodeId,
    /// Everything the node decides.
    pub(super) host: Host<ChaCha8Rng>,
    pub(super) sessions: Sessions,
    pub(super) queries: Queries,
    ledger: Pacer,
    pub(super) api: Option<ApiSide>,
    next_tick: Instant,
    latencies: VecDeque<Duration>,
    counted: host::Stats,
    pub(super) out: VecDeque<Output>,
    /// The cells (`None`: a flat cluster).
    cells_view: Option<CellsView>,
    /// The frameworks last given to [`Output::SaveFrameworks`].
    saved: Vec<Record>,
    /// The HTTP framework of the run before, restored for [`Core::enable_http`].
    restored_http: Option<FrameworkId>,
}

impl Core {
    /// A core for `host`, started at `now`.
    pub fn new(host: Host<ChaCha8Rng>, now: Instant) -> Self {
        Core {
            me: host.node_id().clone(),
            host,
            sessions: Sessions::default(),
            queries: Queries::default(),
            ledger: Pacer::new(PUBLISH_EVERY, None),
            api: None,
            next_tick: now + TICK,
            latencies: VecDeque::new(),
            counted: host::Stats::default(),
            out: VecDeque::new(),
            cells_view: None,
            saved: Vec::new(),
            restored_http: None,
        }
    }

    /// Homes again the frameworks the run before kept on disk (call before
    /// [`Core::recover`], so that the tasks it reports find their
    /// framework). Each is disconnected from `now` on: it reattaches within
    /// its failover timeout or fails over as after a dropped connection.
    ///
    /// `journal` holds each framework's tasks as the journal kept them
    /// ([`super::journal`]): they come back with it.
    pub fn restore(
        &mut self,
        now: Instant,
        records: Vec<Record>,
        mut journal: BTreeMap<FrameworkId, Vec<host::Journaled>>,
    ) {
        let floor = self.host.generation();
        for r in records {
            if self.sessions.get(&r.id).is_some() || r.id.home().as_ref() != Some(&self.me) {
                continue;
            }
            let tasks = journal.remove(&r.id).unwrap_or_default();
            if let Err(e) =
                self.host
                    .restore_framework(now, r.id.clone(), r.weight, rand::make_rng(), tasks)
            {
                tracing::warn!(framework = %r.id, error = %e, "cannot restore a framework homed here before the restart");
                continue;
            }
            let failover = Duration::from_millis(r.failover_ms);
            let mut f = Framework::new(r.id.clone(), r.name, r.role, r.weight, failover, None);
            f.events_from(floor);
            match r.kind {
                Kind::Framework => {
                    f.internal = false;
                    f.disconnected_at = Some(now);
                    self.sessions.insert(f);
                }
                Kind::Operator => self.sessions.set_operator(f),
                Kind::Http => {
                    self.restored_http = Some(r.id.clone());
                    self.sessions.insert(f);
                }
            }
            tracing::info!(framework = %r.id, kind = ?r.kind, "framework homed here before the restart restored");
        }
        self.saved = self.framework_records();
        self.pump(now);
    }

    /// Every homed framework's tasks, as the journal must hold them.
    pub fn journal_snapshot(&self) -> Vec<(FrameworkId, Vec<host::Journaled>)> {
        self.saved
            .iter()
            .filter_map(|r| self.host.journal(&r.id).map(|t| (r.id.clone(), t)))
            .collect()
    }

    /// Asks the driver to append `record` to the journal.
    pub(super) fn journal(&mut self, record: &JournalRecord, sync: bool) {
        let mut bytes = Vec::new();
        super::journal::encode_into(&mut bytes, record);
        self.out.push_back(Output::Journal { bytes, sync });
    }

    /// The frameworks to keep on disk.
    fn framework_records(&self) -> Vec<Record> {
        let operator = self.sessions.operator();
        let http = self.http_framework().or(self.restored_http.as_ref());
        let mut out: Vec<Record> = self
            .sessions
            .frameworks()
            .map(|f| Record {
                id: f.id.clone(),
                kind: if Some(&f.id) == operator {
                    Kind::Operator
                } else if Some(&f.id) == http {
                    Kind::Http
                } else {
                    Kind::Framework
                },
                name: f.name.clone(),
                role: f.role.clone(),
                weight: f.weight,
                failover_ms: u64::try_from(f.failover.as_millis()).unwrap_or(u64::MAX),
            })
            .collect();
        out.sort();
        out
    }

    /// Asks the driver to keep the frameworks on disk if they changed.
    pub(super) fn save_frameworks(&mut self) {
        let now = self.framework_records();
        if now != self.saved {
            self.saved = now.clone();
            self.out.push_back(Output::SaveFrameworks(now));
        }
    }

    /// The node's host (for the driver's snapshots and shutdown).
    pub fn host(&self) -> &Host<ChaCha8Rng> {
        &self.host
    }

    /// The framework sessions kept here.
    pub fn frameworks(&self) -> impl Iterator<Item = &Framework> {
        self.sessions.frameworks()
    }

    /// Every task this node knows without asking, one row per task.
    pub fn local_listing(&self) -> Vec<TaskRow> {
        let mut rows = agora_protocol::listing::Merged::default();
        rows.add(None, self.host.task_rows());
        rows.into_rows().into_values().collect()
    }

    /// The node's ledger as gossip publishes it.
    pub fn ledger(&self) -> Ledger {
        let a = self.host.auctioneer();
        Ledger {
            total: a.capacity(),
            free: a.free(),
            version: a.version(),
            allocations: a.allocations(),
        }
    }

    /// The internal HTTP framework, when the HTTP API is on.
    pub fn http_framework(&self) -> Option<&FrameworkId> {
        self.api.as_ref().map(|a| &a.framework)
    }

    /// Turns the HTTP side on: registers the internal "http" framework
    /// (never failed over, never forgotten) and counts into `metrics`.
    ///
    /// # Errors
    /// The framework cannot be registered (this run of the node handed out
    /// every bid range).
    pub fn enable_http(
        &mut self,
        now: Instant,
        metrics: Option<Arc<Metrics>>,
    ) -> anyhow::Result<()> {
        let id = match self.restored_http.take() {
            Some(id) => id,
            None => {
                let id = FrameworkId::homed("http", rand::random::<u32>(), &self.me)
                    .map_err(|e| anyhow::anyhow!("cannot name the internal http framework: {e}"))?;
                self.host
                    .add_framework(id.clone(), 1, rand::make_rng())
                    .map_err(|e| {
                        anyhow::anyhow!("cannot register the internal http framework: {e}")
                    })?;
                let f = Framework::new(
                    id.clone(),
                    "http".into(),
                    String::new(),
                    1,
                    HTTP_FAILOVER,
                    None,
                );
                self.sessions.insert(f);
                id
            }
        };
        tracing::info!(framework = %id, "internal http framework registered");
        self.api = Some(ApiSide {
            framework: id,
            pacer: Pacer::new(PUBLISH_API_EVERY, Some(REFRESH_API_EVERY)),
            metrics,
        });
        self.save_frameworks();
        self.pump(now);
        Ok(())
    }

    /// The metrics, when the HTTP API is on.
    fn metrics(&self) -> Option<&Metrics> {
        self.api.as_ref()?.metrics.as_deref()
    }

    // ------------------------------------------------------------ inputs

    /// Re-adopts recovered tasks, reports those that ended while down, and
    /// keeps the rows of tasks that ended before the restart (the
    /// executor's history, until its garbage collector removes them).
    pub fn recover(&mut self, now: Instant, history: Vec<EndedTask>, recovered: Vec<Recovered>) {
        for e in history {
            self.host.remember_ended(TaskRow {
                task_id: e.request.task_id,
                name: e.request.spec.name,
                framework: e.request.framework,
                state: e.status.state,
                node: Some(self.me.clone()),
                exit_code: e.status.exit_code,
                resources: e.request.spec.resources,
                reason: e.status.reason,
            });
        }
        for r in recovered {
            match r {
                Recovered::Running(req) => {
                    tracing::info!(task = %req.task_id, "re-attached to a running task");
                    if let Err(e) = self.host.adopt(now, &req) {
                        tracing::warn!(task = %req.task_id, error = %e, "re-attached task not adopted twice");
                    }
                }
                Recovered::Ended(req, status) => {
                    tracing::info!(task = %req.task_id, state = %status.state, "task ended while the agent was down");
                    self.host.handle_exec(now, status, Some(&req));
                }
            }
        }
        // Restored frameworks hear of what was re-attached here.
        self.host.after_recovery(now);
        let a = self.host.auctioneer();
        if let Some(over) = a.overcommitted() {
            tracing::warn!(
                held = %a.used(),
                capacity = %a.capacity(),
                over = %over,
                tasks = a.running_count(),
                "the re-attached tasks hold more than this node offers (was it restarted with \
                 smaller --cpus, --mem, --disk or --gpus?): it is overcommitted by {over}; they \
                 keep running and are counted, and the node takes no new tasks (it advertises \
                 nothing free) until enough of them end"
            );
        }
        self.pump(now);
    }

    /// Whether the data dir can take new tasks changed (the executor's
    /// probe): while it cannot, the node takes none (the auctioneer
    /// advertises nothing free and rejects bids); the tasks it runs go on.
    pub fn handle_data_dir(&mut self, now: Instant, problem: Option<DataDirProblem>) {
        if let Some(m) = self.metrics() {
            m.set_data_dir(problem.as_ref().map(|p| p.fault.code()));
        }
        self.host
            .set_unavailable(now, problem.map(|p| p.to_string()));
        self.api_dirty();
        self.pump(now);
    }

    /// The members gossip sees (this node excluded).
    pub fn handle_members(&mut self, now: Instant, members: Vec<NodeInfo>) {
        if self.host.handle_members(now, members) {
            self.sessions.view_changed();
        }
        self.api_dirty();
        self.pump(now);
    }

    /// The members of another cell, from one of its gateways (see
    /// [`Host::handle_import`]).
    pub fn handle_import(
        &mut self,
        now: Instant,
        cell: agora_protocol::cell::CellId,
        members: Vec<NodeInfo>,
    ) {
        self.host.handle_import(now, cell, members);
        self.sessions.view_changed();
        self.api_dirty();
        self.pump(now);
    }

    /// A cell's aggregate, from the federation (see
    /// [`Host::handle_aggregate`]).
    pub fn handle_aggregate(
        &mut self,
        now: Instant,
        cell: agora_protocol::cell::CellId,
        agg: agora_protocol::cell::CellAggregate,
    ) {
        self.host.handle_aggregate(now, cell, agg);
        self.api_dirty();
        self.pump(now);
    }

    /// What the driver's cells machine knows of the other cells (for
    /// listings); `None` in a flat cluster.
    pub fn set_cells(&mut self, view: Option<CellsView>) {
        if self.cells_view != view {
            self.cells_view = view;
            self.api_dirty();
        }
    }

    /// The cells as `list_cells` and the API show them: home first (from
    /// this node's own view), then the others by name.
    pub fn cell_list(&self, request_id: u64) -> agora_protocol::wire::CellList {
        let Some(v) = &self.cells_view else {
            return agora_protocol::wire::CellList {
                request_id,
                cell: None,
                gateway: false,
                cells: Vec::new(),
            };
        };
        let imported = self.host.imported_cells();
        let mut cells = vec![agora_protocol::wire::CellRow {
            name: v.name.clone(),
            home: true,
            imported: false,
            aggregate: self.host.home_aggregate(),
            gateways: self.host.gateways(),
        }];
        let mut others: Vec<agora_protocol::wire::CellRow> = v
            .others
            .iter()
            .filter(|e| e.name != v.name)
            .map(|e| agora_protocol::wire::CellRow {
                name: e.name.clone(),
                home: false,
                imported: imported.contains(&e.cell),
                aggregate: e.aggregate.clone(),
                gateways: e.gateways.iter().map(|g| g.node.clone()).collect(),
            })
            .collect();
        others.sort_by(|a, b| a.name.cmp(&b.name));
        cells.extend(others);
        agora_protocol::wire::CellList {
            request_id,
            cell: Some(v.name.clone()),
            gateway: self.host.is_gateway(),
            cells,
        }
    }

    /// A message from another node.
    pub fn handle_peer(&mut self, now: Instant, from: NodeId, msg: PeerMessage) {
        match self.host.handle_peer(now, from.clone(), msg) {
            None => {}
            Some(PeerMessage::LogRead(r)) => {
                if let Err(e) = self.queries.read_for_peer(from, r) {
                    tracing::warn!(error = %e, "a peer's log read was not answered");
                }
            }
            Some(PeerMessage::LogChunk(c)) => self.queries.on_log_chunk(&from, c),
            Some(PeerMessage::TaskList(t)) => self.queries.on_task_list(&from, t),
            Some(
                msg @ (PeerMessage::FederationQuery
                | PeerMessage::FederationView(_)
                | PeerMessage::CellQuery(_)
                | PeerMessage::CellMembers(_)
                | PeerMessage::Locate(_)
                | PeerMessage::Located(_)),
            ) => self.out.push_back(Output::Directory { from, msg }),
            Some(other) => {
                tracing::debug!(%from, kind = other.kind(), "the host handed back a message it decides on; dropped");
            }
        }
        self.pump(now);
    }

    /// A task's state changed on this node. A task whose framework was
    /// homed here but is gone (a previous run of this agent registered it)
    /// has no bidder to keep its row once it ends: its end is kept in the
    /// node's history, so listings still show it.
    pub fn handle_exec(&mut self, now: Instant, launch: &host::Launch, status: TaskStatus) {
        if status.state.is_terminal()
            && launch.home == self.me
            && !self.host.is_homed(&launch.framework)
        {
            self.host.remember_ended(TaskRow {
                task_id: launch.task_id.clone(),
                name: launch.spec.name.clone(),
                framework: launch.framework.clone(),
                state: status.state,
                node: Some(self.me.clone()),
                exit_code: status.exit_code,
                resources: launch.spec.resources,
                reason: status.reason.clone(),
            });
        }
        self.host.handle_exec(now, status, Some(launch));
        self.pump(now);
    }

    /// A log read from this node's files finished.
    pub fn handle_local_log(&mut self, now: Instant, token: u64, chunk: LogChunk) {
        self.queries.on_local_log(now, token, chunk);
        self.pump(now);
    }

    /// A socket connection opened, from `peer` (whose uid decides whether
    /// it may act as the operator).
    pub fn handle_open(&mut self, conn: u64, peer: crate::socket::Peer) {
        self.sessions.open(conn, peer);
    }

    /// A socket connection closed (or the driver closed it).
    pub fn handle_closed(&mut self, now: Instant, conn: u64) {
        if let Some(fw) = self.sessions.close(now, conn) {
            tracing::info!(framework = %fw, "framework disconnected; its tasks keep running for its failover timeout");
        }
        self.api_dirty();
    }

    /// Stops awarding (shutdown).
    pub fn handle_drain(&mut self, now: Instant) {
        self.host.drain(now);
        self.pump(now);
    }

    /// The next instant the driver must call [`Core::handle_timeout`].
    pub fn poll_timeout(&self) -> Instant {
        [
            self.host.poll_timeout(),
            self.queries.poll_timeout(),
            self.ledger.poll_timeout(),
            self.api.as_ref().and_then(|a| a.pacer.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .fold(self.next_tick, Instant::min)
    }

    /// Runs every due timer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.host.poll_timeout().is_some_and(|t| t <= now) {
            self.host.handle_timeout(now);
        }
        self.queries.handle_timeout(now);
        if self.next_tick <= now {
            self.next_tick = now + TICK;
            self.tick(now);
        }
        self.pump(now);
    }

    /// The next thing the driver must do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Status updates this node's auctioneer sent that their home nodes
    /// have not acknowledged (shutdown waits a moment for them).
    pub fn unacked_status_updates(&self) -> usize {
        self.host.auctioneer().unacked_count()
    }

    // ------------------------------------------------------------ periodic

    fn tick(&mut self, now: Instant) {
        for (conn, e) in self.sessions.resends(now) {
            self.reply(Asker::Conn(conn), Reply::Status(e));
        }
        for id in self.sessions.failovers(now) {
            tracing::info!(framework = %id, "failover timeout passed; killing its unfinished tasks");
            let active: Vec<_> = self
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
        let host = &self.host;
        let idle = |fw: &FrameworkId| host.bidder(fw).is_none_or(|b| b.active_tasks() == 0);
        for id in self.sessions.forget_idle(now, idle) {
            tracing::info!(framework = %id, "framework forgotten; its task history is kept");
            self.host.remove_framework(&id);
        }
        self.save_frameworks();
        let due = self.sessions.offers_due(now);
        if !due.is_empty() {
            let list = offers::from_view(self.host.view(), 10_000);
            for conn in due {
                self.reply(Asker::Conn(conn), Reply::Offers(list.clone()));
            }
        }
    }

    // ------------------------------------------------------------ outputs

    /// Queues an answer.
    pub(super) fn reply(&mut self, to: Asker, reply: Reply) {
        self.out.push_back(Output::Reply { to, reply });
    }

    pub(super) fn api_dirty(&mut self) {
        if let Some(a) = &mut self.api {
            a.pacer.mark();
        }
    }

    /// Moves everything the host and the queries produced into outputs,
    /// and publishes what is due.
    pub(super) fn pump(&mut self, now: Instant) {
        let mut moved = false;
        loop {
            let mut any = false;
            while let Some(t) = self.host.poll_transmit() {
                any = true;
                self.out.push_back(Output::Transmit(t));
            }
            while let Some(e) = self.host.poll_exec() {
                any = true;
                self.out.push_back(Output::Exec(e));
            }
            while let Some(ev) = self.host.poll_event() {
                any = true;
                self.on_host_event(now, ev);
            }
            while let Some(o) = self.queries.poll() {
                any = true;
                self.on_query_out(now, o);
            }
            if !any {
                break;
            }
            moved = true;
        }
        self.count_host_stats();
        if moved {
            self.api_dirty();
        }
        if self.ledger.take_due(now) {
            let l = self.ledger();
            self.out.push_back(Output::Publish(l));
        }
        if let Some(a) = &mut self.api
            && a.pacer.take_due(now)
        {
            self.out.push_back(Output::PublishApi);
        }
    }

    fn on_host_event(&mut self, now: Instant, ev: host::Event) {
        match ev {
            host::Event::Status {
                framework,
                name,
                status,
            } => {
                if status.state.is_terminal() {
                    self.journal(
                        &JournalRecord::Ended {
                            framework: framework.clone(),
                            status: status.clone(),
                        },
                        false,
                    );
                }
                if self.http_framework() == Some(&framework) {
                    // The internal framework has no connection to tell:
                    // its tasks are read from the host.
                    return;
                }
                if let Some((Some(conn), e)) =
                    self.sessions.push_status(now, &framework, name, status)
                {
                    self.reply(Asker::Conn(conn), Reply::Status(e));
                }
            }
            host::Event::Placed {
                framework,
                task_id,
                node,
                latency,
                attempts,
            } => {
                self.journal(
                    &JournalRecord::Placed {
                        framework,
                        task_id: task_id.clone(),
                        node: node.clone(),
                    },
                    false,
                );
                tracing::debug!(task = %task_id, %node, ?latency, attempts, "placed");
                // The bidder counted the award in the view: offers change.
                self.sessions.view_changed();
                if self.latencies.len() >= LATENCIES {
                    self.latencies.pop_front();
                }
                self.latencies.push_back(latency);
                if let Some(m) = self.metrics() {
                    m.observe_auction_latency(latency);
                }
            }
            host::Event::LedgerChanged { .. } => {
                self.sessions.view_changed();
                self.ledger.mark();
            }
            host::Event::StatusUndeliverable { task_id, home } => {
                tracing::warn!(task = %task_id, %home, "gave up delivering a status update to the task's home node");
            }
            host::Event::NodeAlive(node) => {
                self.sessions.view_changed();
                tracing::info!(%node, "node is alive");
            }
            host::Event::NodeDead(node) => {
                self.sessions.view_changed();
                tracing::warn!(%node, "node declared dead; its tasks are lost");
            }
            host::Event::NodeRevived { node, kills } => {
                self.sessions.view_changed();
                tracing::warn!(%node, kills, "node declared dead is back; killing the tasks reported lost there");
            }
            host::Event::ImportCell(cell) => {
                tracing::info!(
                    cell = cell.0,
                    "a framework here looks beyond its cell: importing another cell's members"
                );
                self.out.push_back(Output::Cells { cell, import: true });
            }
            host::Event::DropCell(cell) => {
                tracing::info!(
                    cell = cell.0,
                    "no framework here needs another cell's members any more"
                );
                self.out.push_back(Output::Cells {
                    cell,
                    import: false,
                });
            }
        }
    }

    fn on_query_out(&mut self, now: Instant, o: Out) {
        match o {
            Out::Send { to, msg } => self
                .out
                .push_back(Output::Transmit(host::Transmit { to, msg })),
            Out::ReadLocal { token, read } => self.out.push_back(Output::ReadLog { token, read }),
            Out::PeerLog { to, chunk } => self.out.push_back(Output::Transmit(host::Transmit {
                to,
                msg: PeerMessage::LogChunk(chunk),
            })),
            Out::Log { asker, chunk } => self.reply(asker, Reply::Log(chunk)),
            Out::Listed {
                asker,
                purpose,
                query,
                rows,
                matched,
                unreachable,
            } => self.listed(now, asker, purpose, query, rows, matched, unreachable),
        }
    }

    /// A listing finished: answer what it was for.
    #[allow(clippy::too_many_arguments)]
    fn listed(
        &mut self,
        now: Instant,
        asker: Asker,
        purpose: Purpose,
        query: agora_protocol::wire::TaskQuery,
        rows: BTreeMap<agora_protocol::TaskId, TaskRow>,
        matched: u64,
        unreachable: Vec<NodeId>,
    ) {
        match purpose {
            Purpose::Page => {
                let (tasks, _) = query.page(rows.into_values());
                self.reply(
                    asker,
                    Reply::Tasks(TaskPage {
                        request_id: query.request_id,
                        matched: matched.max(tasks.len() as u64),
                        tasks,
                        unreachable,
                    }),
                );
            }
            Purpose::Get(id) => {
                let row = rows.get(&id).cloned();
                self.reply(asker, Reply::Task(row));
            }
            Purpose::Kill { task_id, caller } => {
                let answer = match rows.get(&task_id) {
                    Some(row) if row.state.is_terminal() => Err(host::Refused::new(
                        ErrorCode::UnknownTask,
                        format!("task {task_id} has already ended ({})", row.state),
                    )),
                    Some(row) => match &row.node {
                        Some(node) => {
                            let node = node.clone();
                            self.host.kill_on(now, caller.as_ref(), &task_id, &node)
                        }
                        None => self.host.kill(now, caller.as_ref(), &task_id),
                    },
                    None => Err(host::Refused::new(
                        ErrorCode::UnknownTask,
                        unknown_task(&task_id, &unreachable),
                    )),
                };
                let reply = match answer {
                    Ok(_) => Reply::KillSent(task_id),
                    Err(e) => Reply::error(e.code, e.message, None),
                };
                self.reply(asker, reply);
            }
            Purpose::Log(read) => {
                let node = rows
                    .get(&read.task_id)
                    .and_then(|r| r.node.clone())
                    .filter(|n| *n != self.me);
                let task = read.task_id.clone();
                let request_id = read.request_id;
                let offset = read.offset;
                let failed = match node {
                    Some(n) => self
                        .queries
                        .read_remote(now, asker, read, n)
                        .err()
                        .map(|e| e.to_string()),
                    None if rows.contains_key(&task) => Some(format!(
                        "task {task} has not started on any node yet, or its log is gone"
                    )),
                    None => Some(unknown_task(&task, &unreachable)),
                };
                if let Some(error) = failed {
                    self.reply(
                        asker,
                        Reply::Log(LogChunk {
                            request_id,
                            task_id: task,
                            data: Vec::new(),
                            next_offset: offset,
                            eof: false,
                            error: Some(error),
                        }),
                    );
                }
            }
        }
    }

    /// Adds what the host counted since the last pump to the metrics.
    fn count_host_stats(&mut self) {
        let s = self.host.stats();
        let c = self.counted;
        if let Some(m) = self.metrics() {
            m.bids_sent.inc_by(s.bids_sent - c.bids_sent);
            m.bids_won.inc_by(s.awards - c.awards);
            m.bids_rejected.inc_by(s.rejects - c.rejects);
        }
        self.counted = s;
    }
}

/// "No node knows this task", saying which nodes could not be asked.
pub(super) fn unknown_task(task: &agora_protocol::TaskId, unreachable: &[NodeId]) -> String {
    match crate::surface::unreachable_note(unreachable) {
        Some(note) => format!("no node that answered knows task {task} ({note})"),
        None => format!("no node knows task {task}; check the id with `agora ps`"),
    }
}

#[cfg(test)]
mod tests;
