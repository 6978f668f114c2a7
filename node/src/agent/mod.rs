//! `agora agent`: a running node.
//!
//! Start-up opens the data dir (identity, checkpoints), re-attaches the
//! executor to tasks that survived a restart, starts libp2p, gossip and the
//! framework socket, then runs one loop ([`run_loop`]) that `select!`s over
//! its inputs: gossip snapshots, libp2p events, socket commands, the HTTP
//! API's commands when `--http` is on, executor events, finished log reads
//! and the core's next deadline.
//!
//! The pieces, none of which imports a file that imports it back:
//! - [`core::Core`]: the node as one synchronous, sans-IO machine. It holds
//!   the protocol's `Host` (every decision), the framework [`sessions`], the
//!   cross-node [`queries`] and two [`pacer`]s, takes inputs with the time
//!   (`handle_*`) and queues outputs ([`core::Output`]). Tested on a virtual
//!   clock (core/tests.rs).
//! - [`command`]: the one command surface (`crate::surface`) the socket and
//!   the HTTP API share, answered in the core.
//! - [`Driver`] (here): the IO. It feeds each input to the core and carries
//!   out every output: libp2p sends, executor launches and kills, log reads
//!   on a blocking thread, gossip publishes, replies to connections and HTTP
//!   requests, HTTP snapshots ([`api`]). It decides nothing.
//!
//! SIGINT or SIGTERM: the auctioneer stops awarding, pending status updates
//! get a moment to be delivered (up to 2 s), the executor detaches (tasks
//! keep running; the next start re-attaches them) and the node leaves gossip
//! gracefully. If tasks are still running it does not announce its leave:
//! peers would at once report those tasks lost; instead a restart within the
//! failure detector's time (a few seconds) re-attaches them unnoticed, and
//! a node that stays down is declared dead as if it had crashed.

pub mod api;
pub mod cells;
pub mod command;
pub mod core;
mod federation;
pub mod frameworks;
pub mod journal;
pub mod pacer;
pub mod queries;
pub mod registry;
pub mod sessions;

use crate::config::{AgentConfig, ensure_dir};
use crate::executor::{ExecEvent, Executor, ExecutorConfig, LogReader};
use crate::gossip::{ClusterKey, Gossip, GossipConfig, LocalState, Snapshot};
use crate::http::{self, ApiRequest};
use crate::p2p::{P2p, tcp_multiaddr};
use crate::socket::{self, ClientCmd};
use crate::surface::{Asker, Reply};
use agora_protocol::host::{self, Host};
use agora_protocol::view::NodeInfo;
use agora_protocol::wire::{LogChunk, PeerMessage, ServerMessage};
use agora_protocol::{Instant, NodeId};
use anyhow::Context;
use core::{Core, Output};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Capacity of the executor's event channel.
const EXEC_EVENTS: usize = 1024;
/// Capacity of the socket → core channel.
const CLIENT_CMDS: usize = 1024;
/// Capacity of the channel of finished log reads (as many as queries may be
/// open).
const LOG_READS: usize = queries::MAX_QUERIES;
/// A journal that cannot be written is tried again no sooner than this.
const JOURNAL_RETRY: Duration = Duration::from_secs(5);

/// Converts between tokio's clock and the protocol's microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: tokio::time::Instant,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        Clock {
            start: tokio::time::Instant::now(),
        }
    }

    /// Now, for the protocol.
    pub fn now(&self) -> Instant {
        let micros = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        Instant::from_micros(micros)
    }

    /// A protocol instant as a tokio instant (far future for MAX).
    pub fn to_tokio(&self, t: Instant) -> tokio::time::Instant {
        let capped = t.as_micros().min(86_400_000_000 * 365);
        self.start + Duration::from_micros(capped)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs a node until SIGINT or SIGTERM.
///
/// # Errors
/// Anything that prevents start-up (data dir, key, ports, socket), with
/// what to do about it.
pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    ensure_dir(&cfg.data_dir)?;
    // Before anything in the data dir is read or created.
    let _lock = crate::identity::lock_data_dir(&cfg.data_dir)?;
    match (&cfg.task_user, cfg.agent_uid) {
        (Some(_), _) => {}
        (None, 0) => tracing::warn!(
            "tasks run as root (--task-user root): any task can read this node's keys and \
             data dir and act as the operator; give --task-user USER unless every task is trusted"
        ),
        (None, uid) => tracing::warn!(
            uid,
            "the agent is not root, so tasks run as its own user (uid {uid}): isolation is \
             reduced, a task can read this node's keys and data dir and act as the operator; \
             run the agent as root for tasks to run as an unprivileged --task-user"
        ),
    }
    let me = crate::identity::node_id(&cfg.data_dir, cfg.node_id.as_deref())?;
    let keypair = crate::identity::p2p_keypair(&cfg.data_dir)?;
    let key = ClusterKey::load(&cfg.cluster_key_file)?;
    let clock = Clock::new();
    // The node's generation: larger than any earlier run's, so that peers
    // take this run's ledger as newer than what they remember.
    let generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0));

    let (exec_tx, exec_rx) = mpsc::channel::<ExecEvent>(EXEC_EVENTS);
    let agora_exe = std::env::current_exe().context("cannot find the agora executable's path")?;
    let (executor, recovered) = Executor::open(
        ExecutorConfig {
            data_dir: cfg.data_dir.clone(),
            node_id: me.clone(),
            cgroups: cfg.cgroups,
            agora_exe,
            gc: cfg.gc.clone(),
            task_user: cfg.task_user.clone(),
        },
        exec_tx,
    )
    .await
    .context("cannot open the executor")?;
    tracing::info!(mode = %executor.cgroup_mode(), "executor ready");

    let mut p2p = P2p::start(me.clone(), keypair, &key.0, cfg.p2p_listen)?;
    let p2p_addr = tcp_multiaddr(cfg.p2p_advertise()).to_string();
    p2p.set_reply_to(&p2p_addr);
    let cell_name = cfg.cell.name_for(&me);
    if let Some(name) = &cell_name {
        tracing::info!(cell = %name, gateways = cfg.gateways, "this node runs in a cell");
    }
    let host = Host::new(
        me.clone(),
        cfg.capacity,
        cfg.ports.clone(),
        cfg.attrs.clone(),
        cfg.advertise.to_string(),
        host::Config {
            generation,
            cell: cell_name
                .as_deref()
                .map(agora_protocol::cell::CellId::from_name),
            gateways: cfg.gateways as usize,
            ..host::Config::default()
        },
    );
    let a = host.auctioneer();
    let local_state = LocalState {
        p2p_addr: p2p_addr.clone(),
        peer_id: p2p.peer_id().to_base58(),
        total: a.capacity(),
        free: a.free(),
        version: a.version(),
        attrs: cfg.attrs.clone(),
        allocations: a.allocations(),
        cell: cell_name.clone(),
        federation: None,
        aggregate: None,
    };
    // Each cell is its own gossip cluster; datagrams of another cell do not
    // open (see docs/CELLS.md).
    let gossip_cluster = match &cell_name {
        Some(name) => format!("{}/cell/{name}", cfg.cluster_id),
        None => cfg.cluster_id.clone(),
    };
    let (gossip, snapshots) = Gossip::start(
        GossipConfig {
            node_id: me.clone(),
            listen: cfg.listen,
            advertise: cfg.advertise,
            seeds: cfg.seeds.clone(),
            key: key.clone(),
            interval: cfg.gossip_interval,
            cluster_id: gossip_cluster,
        },
        local_state.clone(),
    )
    .await
    .context("cannot start gossip")?;

    let listener = socket::bind(&cfg.socket)?;
    if let Some((name, gid)) = &cfg.operator_group {
        socket::share_with_group(&cfg.socket, *gid)?;
        tracing::info!(group = %name, gid, "members of the operator group may connect to the socket and act as the operator");
    }
    let (client_tx, client_rx) = mpsc::channel::<ClientCmd>(CLIENT_CMDS);
    let policy = socket::OperatorPolicy {
        agent_uid: cfg.agent_uid,
        group: cfg.operator_group.clone(),
    };
    let server = tokio::spawn(socket::serve(listener, me.clone(), client_tx, policy));

    let mut core = Core::new(host, clock.now());
    let journaled = journal::load(&cfg.data_dir);
    if journaled.records > 0 {
        tracing::info!(
            records = journaled.records,
            frameworks = journaled.tasks.len(),
            "read the journal of the tasks homed here"
        );
    }
    core.restore(clock.now(), registry::load(&cfg.data_dir), journaled.tasks);
    core.recover(clock.now(), executor.history(), recovered);
    // Rewritten at once from what the host now holds: what the restore
    // dropped (frameworks no longer homed here, tasks forgotten) goes.
    let journal =
        journal::Writer::create(&cfg.data_dir, &journal::snapshot(&core.journal_snapshot()));
    let (api_tx, api_rx) = mpsc::channel::<ApiRequest>(http::COMMAND_QUEUE);
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut http_side = None;
    let http_server = match &cfg.http {
        Some(hcfg) => {
            let listener = tokio::net::TcpListener::bind(hcfg.listen)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen for HTTP on {} (--http): is another agent or program using it? Pick another port",
                        hcfg.listen
                    )
                })?;
            let (snap_tx, snap_rx) = watch::channel(Arc::new(http::ApiSnapshot::empty(me.clone())));
            let metrics = Arc::new(http::Metrics::new());
            core.enable_http(clock.now(), Some(metrics.clone()))?;
            http_side = Some(api::HttpSide {
                snap_tx,
                metrics: metrics.clone(),
                cell_id: cfg.cluster_id.clone(),
            });
            let shutdown = async move {
                let _ = http_stop_rx.await;
            };
            tracing::info!(http = %hcfg.listen, "HTTP API enabled");
            Some(tokio::spawn(http::serve(
                listener,
                hcfg.clone(),
                snap_rx,
                api_tx,
                metrics,
                shutdown,
            )))
        }
        None => {
            drop(api_tx);
            None
        }
    };
    let (log_tx, log_rx) = mpsc::channel(LOG_READS);
    let duplicates = crate::identity::DuplicateGuard::new(
        me.clone(),
        p2p.peer_id().to_base58(),
        gossip.generation(),
        gossip.advertise_addr(),
    );
    let cells = cell_name.as_ref().map(|name| {
        let fed_listen = cfg.federation_listen;
        let fed_advertise = if fed_listen.ip().is_unspecified() {
            std::net::SocketAddr::new(cfg.advertise.ip(), fed_listen.port())
        } else {
            fed_listen
        };
        federation::CellsIo {
            machine: cells::Cells::new(
                cells::CellsConfig {
                    name: name.clone(),
                    me: agora_protocol::wire::Contact {
                        node: me.clone(),
                        peer_id: local_state.peer_id.clone(),
                        p2p_addr: p2p_addr.clone(),
                        federation: Some(fed_advertise.to_string()),
                    },
                    federation_seeds: cfg.federation_seeds.clone(),
                    seeds: cfg.seeds.clone(),
                },
                clock.now(),
            ),
            fed_cfg: GossipConfig {
                node_id: me.clone(),
                listen: fed_listen,
                advertise: fed_advertise,
                seeds: cfg.federation_seeds.clone(),
                key: key.clone(),
                interval: cfg.gossip_interval,
                cluster_id: format!("{}/federation", cfg.cluster_id),
            },
            federation: None,
            fed_rx: None,
            pending_start: None,
            retry_at: None,
            home: Arc::new(Snapshot::default()),
            shown: None,
        }
    });
    let mut driver = Driver {
        cells,
        duplicates,
        refused: None,
        log_reader: executor.log_reader(),
        core,
        clock,
        p2p,
        executor,
        gossip,
        local_state,
        conns: HashMap::new(),
        http_waiting: HashMap::new(),
        next_http: 0,
        http: http_side,
        log_tx,
        data_dir: cfg.data_dir.clone(),
        journal,
        journal_sync_due: false,
        journal_retry_at: std::time::Instant::now(),
    };
    driver.drive();
    tracing::info!(
        node = %me,
        gossip = %cfg.listen,
        p2p = %cfg.p2p_listen,
        socket = %cfg.socket.display(),
        cpus = %agora_protocol::resources::format_cpus(cfg.capacity.cpu_millis),
        mem_mib = cfg.capacity.mem_mib,
        "agent started"
    );

    let stop = shutdown_signal();
    let mut inputs = Inputs {
        snapshots,
        client_rx,
        api_rx,
        exec_rx,
        log_rx,
    };
    run_loop(&mut driver, &mut inputs, stop).await;
    let refused = driver.refused.take();

    tracing::info!("shutting down: draining, leaving the cluster, detaching from tasks");
    server.abort();
    let _ = http_stop_tx.send(());
    if let Some(h) = http_server {
        // Requests in flight get a moment to finish; the rest are cut.
        match tokio::time::timeout(Duration::from_secs(1), h).await {
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %format!("{e:#}"), "HTTP server stopped with an error")
            }
            Ok(_) => {}
            Err(_) => tracing::debug!("HTTP server still busy at shutdown; stopping it"),
        }
    }
    let now = driver.clock.now();
    driver.core.handle_drain(now);
    driver.drive();
    driver.publish(driver.core.ledger());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while driver.core.unacked_status_updates() > 0 && tokio::time::Instant::now() < deadline {
        let wake = driver
            .clock
            .to_tokio(driver.core.poll_timeout())
            .min(deadline);
        tokio::select! {
            ev = driver.p2p.swarm.select_next_some() => {
                if let Some((from, msg)) = driver.p2p.on_event(ev) {
                    let now = driver.clock.now();
                    driver.core.handle_peer(now, from, msg);
                }
            }
            Some(ev) = inputs.exec_rx.recv() => driver.on_exec(ev),
            () = tokio::time::sleep_until(wake) => {
                let now = driver.clock.now();
                driver.core.handle_timeout(now);
            }
        }
        driver.drive();
    }
    let Driver {
        gossip,
        executor,
        cells,
        ..
    } = driver;
    if let Some(fed) = cells.and_then(|c| c.federation) {
        fed.leave().await;
    }
    if executor.running() == 0 || refused.is_some() {
        gossip.leave().await;
    } else {
        // Leaving would make every home node declare these tasks lost at
        // once; staying silent gives a restart the failure detector's few
        // seconds to come back and re-attach them.
        tracing::info!(
            running = executor.running(),
            "tasks keep running: not leaving the cluster, so that a restart re-attaches them"
        );
        drop(gossip);
    }
    executor.detach().await;
    let _ = std::fs::remove_file(&cfg.socket);
    if let Some(why) = refused {
        anyhow::bail!("{why}");
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The node's inputs.
pub struct Inputs {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    client_rx: mpsc::Receiver<ClientCmd>,
    api_rx: mpsc::Receiver<ApiRequest>,
    exec_rx: mpsc::Receiver<ExecEvent>,
    log_rx: mpsc::Receiver<(u64, LogChunk)>,
}

/// The IO around the core: it feeds the core every input with the time and
/// carries out every output. It decides nothing.
pub struct Driver {
    core: Core,
    /// Cells: the directory and the federation gossip (`None`: a flat
    /// cluster).
    cells: Option<federation::CellsIo>,
    /// Watches gossip for another agent with this node's id.
    duplicates: crate::identity::DuplicateGuard,
    /// Set when this agent must stop because another holds its node id:
    /// the loop ends and the agent exits with this error.
    refused: Option<String>,
    clock: Clock,
    p2p: P2p,
    executor: Executor,
    gossip: Gossip,
    /// The published gossip state, minus the ledger the core gives.
    local_state: LocalState,
    /// Where each socket connection's answers go.
    conns: HashMap<u64, mpsc::Sender<ServerMessage>>,
    /// HTTP requests waiting for their reply.
    http_waiting: HashMap<u64, oneshot::Sender<Reply>>,
    next_http: u64,
    http: Option<api::HttpSide>,
    log_reader: LogReader,
    log_tx: mpsc::Sender<(u64, LogChunk)>,
    /// The data dir (the frameworks homed here are kept there).
    data_dir: std::path::PathBuf,
    /// The tasks of the frameworks homed here, on disk.
    journal: journal::Writer,
    /// A submit was journaled: sync before the next answer goes out.
    journal_sync_due: bool,
    /// A broken journal is rewritten no sooner than this.
    journal_retry_at: std::time::Instant,
}

impl Driver {
    /// Carries out everything the core asked for.
    fn drive(&mut self) {
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Transmit(t) => self.transmit(t.to, t.msg),
                Output::Exec(host::Exec::Launch(l)) => {
                    tracing::debug!(task = %l.task_id, "launching");
                    self.executor.launch(l);
                }
                Output::Exec(host::Exec::Kill { task_id, grace }) => {
                    tracing::debug!(task = %task_id, "killing");
                    self.executor.kill(&task_id, grace);
                }
                Output::ReadLog { token, read } => {
                    let reader = self.log_reader.clone();
                    let tx = self.log_tx.clone();
                    tokio::spawn(async move {
                        let chunk = reader
                            .read_async(read.task_id, read.stream, read.offset, read.max_bytes)
                            .await;
                        let _ = tx.send((token, chunk)).await;
                    });
                }
                Output::Publish(ledger) => self.publish(ledger),
                Output::Reply { to, reply } => {
                    if self.journal_sync_due {
                        // The submits this pass journaled are on disk
                        // before any framework hears `submitted`.
                        self.journal_sync_due = false;
                        self.journal.flush(true);
                    }
                    self.reply(to, reply);
                }
                Output::Cells { cell, import } => self.on_import_cell(cell, import),
                Output::Directory { from, msg } => self.on_directory(from, msg),
                Output::Survey { asker, request_id } => self.on_survey(asker, request_id),
                Output::Journal { bytes, sync } => {
                    self.journal.append(&bytes);
                    self.journal_sync_due |= sync;
                }
                Output::PublishApi => {
                    if let Some(h) = &self.http {
                        h.publish(
                            &self.core,
                            self.gossip.stats(),
                            self.p2p.stats,
                            self.journal.stats,
                            self.cells
                                .as_ref()
                                .map(|c| c.machine.stats)
                                .unwrap_or_default(),
                        );
                    }
                }
                Output::SaveFrameworks(records) => {
                    // Small and rare (a registration, a forget): written at
                    // once, so that an acknowledged registration survives a
                    // crash.
                    if let Err(e) = registry::save(&self.data_dir, &records) {
                        tracing::warn!(error = %e, "cannot keep the frameworks homed here on disk; a restart will forget them");
                    }
                }
            }
        }
        self.journal
            .flush(std::mem::take(&mut self.journal_sync_due));
        if self.journal.wants_rewrite() {
            let now = std::time::Instant::now();
            if self.journal.broken.is_none() || now >= self.journal_retry_at {
                self.journal_retry_at = now + JOURNAL_RETRY;
                let bytes = journal::snapshot(&self.core.journal_snapshot());
                self.journal.rewrite(&bytes);
            }
        }
    }

    /// Sends a message to a node; in cells, one whose address this node
    /// does not know (another cell's node, not imported) waits while the
    /// cells machine finds it.
    fn transmit(&mut self, to: NodeId, msg: PeerMessage) {
        if !self.p2p.knows(&to)
            && let Some(c) = self.cells.as_mut()
        {
            let now = self.clock.now();
            c.machine.handle_unroutable(now, to, msg);
            self.drain_cells();
            return;
        }
        self.p2p.send(&to, msg);
    }

    fn publish(&mut self, ledger: core::Ledger) {
        let mut state = self.local_state.clone();
        state.total = ledger.total;
        state.free = ledger.free;
        state.version = ledger.version;
        state.allocations = ledger.allocations;
        self.gossip.publish(state);
    }

    /// Hands an answer to its connection or HTTP request. A status event
    /// (re-sent until acknowledged) or an offers frame (the next one
    /// replaces it) may be dropped when the connection's queue is full; any
    /// other answer may not: a client whose queue is too full to take one
    /// does not read its answers, and its connection is closed, as the
    /// socket closes one that leaves 16 MiB unread (docs/FRAMEWORK_API.md,
    /// "Flow control").
    fn reply(&mut self, to: Asker, reply: Reply) {
        match to {
            Asker::Http(id) => {
                if let Some(tx) = self.http_waiting.remove(&id) {
                    let _ = tx.send(reply);
                }
            }
            Asker::Conn(conn) => {
                let droppable = reply.droppable();
                let Some(msg) = reply.into_server_message() else {
                    return;
                };
                let Some(tx) = self.conns.get(&conn) else {
                    return;
                };
                match tx.try_send(msg) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) if !droppable => {
                        tracing::warn!(
                            conn,
                            "socket client left its answers unread (its queue is full); closing that connection"
                        );
                        self.conns.remove(&conn);
                        let now = self.clock.now();
                        self.core.handle_closed(now, conn);
                    }
                    Err(e) => {
                        tracing::debug!(conn, error = %e, "client queue full or closed; message dropped");
                    }
                }
            }
        }
    }

    fn on_exec(&mut self, ev: ExecEvent) {
        let now = self.clock.now();
        match ev {
            ExecEvent::Status { request, status } => self.core.handle_exec(now, &request, status),
            ExecEvent::DataDir { problem } => self.core.handle_data_dir(now, problem),
        }
    }

    fn on_client(&mut self, cmd: ClientCmd) {
        let now = self.clock.now();
        match cmd {
            ClientCmd::Open { conn, tx, peer } => {
                self.conns.insert(conn, tx);
                self.core.handle_open(conn, peer);
            }
            ClientCmd::Closed { conn } => {
                self.conns.remove(&conn);
                self.core.handle_closed(now, conn);
            }
            ClientCmd::Message { conn, msg } => {
                self.core.handle_command(now, Asker::Conn(conn), msg.into());
            }
        }
    }

    fn on_api(&mut self, req: ApiRequest) {
        // Requests whose HTTP side gave up are forgotten (their reply would
        // go nowhere), so the table stays as small as what is in flight.
        if self.http_waiting.len() >= http::COMMAND_QUEUE * 16 {
            self.http_waiting.retain(|_, tx| !tx.is_closed());
        }
        self.next_http += 1;
        let id = self.next_http;
        self.http_waiting.insert(id, req.reply);
        let now = self.clock.now();
        self.core.handle_command(now, Asker::Http(id), req.command);
    }

    /// Hands a membership snapshot to the core (and peers' addresses to
    /// libp2p).
    fn on_snapshot(&mut self, snap: &Arc<Snapshot>) {
        for found in self.duplicates.handle_rivals(&snap.rivals) {
            match found {
                crate::identity::Duplicate::Warn(msg) => tracing::warn!("{msg}"),
                crate::identity::Duplicate::Refuse(msg) => {
                    tracing::error!("{msg}");
                    self.refused.get_or_insert(msg);
                }
            }
        }
        let me: &NodeId = &self.core.me;
        let mut members = Vec::with_capacity(snap.members.len());
        for m in &snap.members {
            if m.id == *me {
                continue;
            }
            let Some(st) = &m.state else { continue };
            self.p2p.set_peer(&m.id, &st.peer_id, &st.p2p_addr);
            members.push(NodeInfo {
                id: m.id.clone(),
                addr: m.gossip_addr.to_string(),
                total: st.total,
                free: st.free,
                version: st.version,
                attrs: st.attrs.clone(),
                alive: m.alive,
                allocations: st.allocations.clone(),
                generation: m.generation,
            });
        }
        let now = self.clock.now();
        self.core.handle_members(now, members);
        if let Some(c) = self.cells.as_mut() {
            c.home = snap.clone();
        }
        self.cells_tick();
    }
}

/// The node's one loop: every input goes to the core with the time, then
/// the driver carries out what the core asked for.
pub async fn run_loop(
    d: &mut Driver,
    inputs: &mut Inputs,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut gossip_open = true;
    {
        let snap = inputs.snapshots.borrow_and_update().clone();
        d.on_snapshot(&snap);
        d.drive();
    }
    loop {
        if d.refused.is_some() {
            return;
        }
        let mut due = d.core.poll_timeout();
        if let Some(c) = &d.cells {
            due = due.min(c.machine.poll_timeout());
        }
        let wake = d.clock.to_tokio(due);
        tokio::select! {
            () = &mut stop => return,
            snap = federation::federation_changed(d.cells.as_mut().and_then(|c| c.fed_rx.as_mut())) => {
                d.on_federation(&snap);
            }
            changed = inputs.snapshots.changed(), if gossip_open => {
                if changed.is_err() {
                    tracing::error!("gossip stopped; the node no longer sees the cluster");
                    gossip_open = false;
                } else {
                    let snap = inputs.snapshots.borrow_and_update().clone();
                    d.on_snapshot(&snap);
                }
            }
            ev = d.p2p.swarm.select_next_some() => {
                if let Some((from, msg)) = d.p2p.on_event(ev) {
                    let now = d.clock.now();
                    d.core.handle_peer(now, from, msg);
                }
            }
            Some(cmd) = inputs.client_rx.recv() => d.on_client(cmd),
            Some(req) = inputs.api_rx.recv() => d.on_api(req),
            Some(ev) = inputs.exec_rx.recv() => d.on_exec(ev),
            Some((token, chunk)) = inputs.log_rx.recv() => {
                let now = d.clock.now();
                d.core.handle_local_log(now, token, chunk);
            }
            () = tokio::time::sleep_until(wake) => {
                let now = d.clock.now();
                d.core.handle_timeout(now);
                d.cells_tick();
            }
        }
        d.drive();
        d.start_federation().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_round_trips() {
        let c = Clock::new();
        let t = Instant::from_millis(1500);
        assert_eq!(
            c.to_tokio(t) - c.to_tokio(Instant::ZERO),
            Duration::from_millis(1500)
        );
        assert!(c.to_tokio(Instant::MAX) > c.to_tokio(t));
    }
}
