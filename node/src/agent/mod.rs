//! `agora agent`: a running node.
//!
//! Start-up opens the data dir (identity, checkpoints), re-attaches the
//! executor to tasks that survived a restart, starts libp2p, gossip and the
//! framework socket, then hands everything to one task that owns every state
//! machine and `select!`s over its inputs ([`run_loop`]): gossip snapshots,
//! libp2p events, socket commands, executor events and the machines' next
//! deadline, and the HTTP API's commands when `--http` is on ([`api`]).
//! After each input the core carries out what its host asked for.
//!
//! SIGINT or SIGTERM: the auctioneer stops awarding, pending status updates
//! get a moment to be delivered (up to 2 s), the executor detaches (tasks
//! keep running; the next start re-attaches them) and the node leaves gossip
//! gracefully. If tasks are still running it does not announce its leave:
//! peers would at once report those tasks lost; instead a restart within the
//! failure detector's time (a few seconds) re-attaches them unnoticed, and
//! a node that stays down is declared dead as if it had crashed.

pub mod api;
mod clients;
pub mod core;
pub mod frameworks;
mod membership;
mod peers;
pub mod queries;

use crate::config::{AgentConfig, ensure_dir};
use crate::executor::{ExecEvent, Executor, ExecutorConfig};
use crate::gossip::{ClusterKey, Gossip, GossipConfig, LocalState, Snapshot};
use crate::http::{self, ApiCommand};
use crate::p2p::{P2p, tcp_multiaddr};
use crate::socket::{self, ClientCmd};
use agora_protocol::host::{self, Host};
use anyhow::Context;
use core::{Clock, Core};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Capacity of the executor's event channel.
const EXEC_EVENTS: usize = 1024;
/// Capacity of the socket → core channel.
const CLIENT_CMDS: usize = 1024;

/// Runs a node until SIGINT or SIGTERM.
///
/// # Errors
/// Anything that prevents start-up (data dir, key, ports, socket), with
/// what to do about it.
pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    ensure_dir(&cfg.data_dir)?;
    let me = crate::identity::node_id(&cfg.data_dir, cfg.node_id.as_deref())?;
    let keypair = crate::identity::p2p_keypair(&cfg.data_dir)?;
    let key = ClusterKey::load(&cfg.cluster_key_file)?;
    let clock = Clock::new();
    // The node's generation: larger than any earlier run's, so that peers
    // take this run's ledger as newer than what they remember.
    let generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0));

    let (exec_tx, mut exec_rx) = mpsc::channel::<ExecEvent>(EXEC_EVENTS);
    let agora_exe = std::env::current_exe().context("cannot find the agora executable's path")?;
    let (executor, recovered) = Executor::open(
        ExecutorConfig {
            data_dir: cfg.data_dir.clone(),
            node_id: me.clone(),
            cgroups: cfg.cgroups,
            agora_exe,
            gc: cfg.gc.clone(),
        },
        exec_tx,
    )
    .await
    .context("cannot open the executor")?;
    tracing::info!(mode = %executor.cgroup_mode(), "executor ready");

    let p2p = P2p::start(me.clone(), keypair, &key.0, cfg.p2p_listen)?;
    let host = Host::new(
        me.clone(),
        cfg.capacity,
        cfg.ports.clone(),
        cfg.attrs.clone(),
        cfg.advertise.to_string(),
        host::Config {
            generation,
            ..host::Config::default()
        },
    );
    let a = host.auctioneer();
    let local_state = LocalState {
        p2p_addr: tcp_multiaddr(cfg.p2p_advertise()).to_string(),
        peer_id: p2p.peer_id().to_base58(),
        total: a.capacity(),
        free: a.free(),
        version: a.version(),
        attrs: cfg.attrs.clone(),
        allocations: a.allocations(),
    };
    let (gossip, snapshots) = Gossip::start(
        GossipConfig {
            node_id: me.clone(),
            listen: cfg.listen,
            advertise: cfg.advertise,
            seeds: cfg.seeds.clone(),
            key,
            interval: cfg.gossip_interval,
            cluster_id: cfg.cluster_id.clone(),
        },
        local_state.clone(),
    )
    .await
    .context("cannot start gossip")?;

    let listener = socket::bind(&cfg.socket)?;
    let (client_tx, client_rx) = mpsc::channel::<ClientCmd>(CLIENT_CMDS);
    let server = tokio::spawn(socket::serve(listener, me.clone(), client_tx));

    let mut core = Core::new(clock, host, p2p, executor, gossip, local_state);
    core.recover(recovered);
    let (api_tx, api_rx) = mpsc::channel::<ApiCommand>(http::COMMAND_QUEUE);
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
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
            core.enable_http(snap_tx, metrics.clone(), cfg.cluster_id.clone())?;
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
    core.drain().await;
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
    run_loop(&mut core, snapshots, client_rx, api_rx, &mut exec_rx, stop).await;

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
    core.host.drain(core.clock.now());
    core.drain().await;
    core.publish_now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while core.host.auctioneer().unacked_count() > 0 && tokio::time::Instant::now() < deadline {
        let wake = core.clock.to_tokio(core.poll_timeout()).min(deadline);
        tokio::select! {
            ev = core.p2p.swarm.select_next_some() => {
                if let Some((from, msg)) = core.p2p.on_event(ev) {
                    core.on_peer(from, msg).await;
                }
            }
            Some(ev) = exec_rx.recv() => core.on_exec(ev),
            () = tokio::time::sleep_until(wake) => core.on_timeout(),
        }
        core.drain().await;
    }
    let Core {
        gossip, executor, ..
    } = core;
    if executor.running() == 0 {
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

/// The node's one loop: every input goes to the core, then the core drains.
pub async fn run_loop(
    core: &mut Core,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    mut client_rx: mpsc::Receiver<ClientCmd>,
    mut api_rx: mpsc::Receiver<ApiCommand>,
    exec_rx: &mut mpsc::Receiver<ExecEvent>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut gossip_open = true;
    {
        let snap = snapshots.borrow_and_update().clone();
        core.on_snapshot(&snap);
    }
    loop {
        let wake = core.clock.to_tokio(core.poll_timeout());
        tokio::select! {
            () = &mut stop => return,
            changed = snapshots.changed(), if gossip_open => {
                if changed.is_err() {
                    tracing::error!("gossip stopped; the node no longer sees the cluster");
                    gossip_open = false;
                } else {
                    let snap = snapshots.borrow_and_update().clone();
                    core.on_snapshot(&snap);
                    core.api_dirty();
                }
            }
            ev = core.p2p.swarm.select_next_some() => {
                if let Some((from, msg)) = core.p2p.on_event(ev) {
                    core.on_peer(from, msg).await;
                }
            }
            Some(cmd) = client_rx.recv() => core.on_client(cmd).await,
            Some(cmd) = api_rx.recv() => core.on_api(cmd).await,
            Some(ev) = exec_rx.recv() => core.on_exec(ev),
            () = tokio::time::sleep_until(wake) => core.on_timeout(),
        }
        core.drain().await;
    }
}
