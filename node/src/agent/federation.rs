//! The IO of cells: the federation gossip a gateway runs, and carrying out
//! what the [`super::cells`] machine asks. It decides nothing: the host
//! decides who the gateways are and which cells to import, the machine
//! who to ask.

use super::Driver;
use super::cells::{Cells, CellsOut, FederationMember, SurveyedCell, directory_from};
use crate::gossip::{Gossip, GossipConfig, LocalState, Snapshot};
use crate::surface::Reply;
use agora_protocol::wire::{CellMember, Contact};
use agora_protocol::wire::{CellNodeList, CellNodes, ErrorCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long after a failed start the federation gossip is tried again.
const START_RETRY: Duration = Duration::from_secs(10);

/// The cells side of the driver.
pub struct CellsIo {
    /// The machine.
    pub machine: Cells,
    /// The federation gossip's settings (seeds are filled in at start).
    pub fed_cfg: GossipConfig,
    /// The federation gossip, while this node is a gateway.
    pub federation: Option<Gossip>,
    /// Its snapshots.
    pub fed_rx: Option<watch::Receiver<Arc<Snapshot>>>,
    /// A start the machine asked for, not yet carried out.
    pub pending_start: Option<Vec<String>>,
    /// When a failed start may be tried again.
    pub retry_at: Option<std::time::Instant>,
    /// The home cell's last snapshot.
    pub home: Arc<Snapshot>,
    /// The directory version last shown to the core.
    pub shown: Option<u64>,
}

impl CellsIo {
    /// The members of the home cell as gossip knows them (this node
    /// included), for a `cell_query`.
    fn home_members(home: &Snapshot) -> Vec<CellMember> {
        home.members
            .iter()
            .filter_map(|m| {
                let st = m.state.as_ref()?;
                Some(CellMember {
                    info: m.to_node_info()?,
                    contact: Contact {
                        node: m.id.clone(),
                        peer_id: st.peer_id.clone(),
                        p2p_addr: st.p2p_addr.clone(),
                        federation: st.federation.clone(),
                    },
                })
            })
            .collect()
    }
}

/// Waits for the federation gossip's next snapshot (never, while there is
/// no federation gossip).
pub async fn federation_changed(rx: Option<&mut watch::Receiver<Arc<Snapshot>>>) -> Arc<Snapshot> {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            rx.borrow_and_update().clone()
        }
        None => std::future::pending().await,
    }
}

impl Driver {
    /// The machine's periodic work, and after every membership change
    /// (the gateways may have moved).
    pub(super) fn cells_tick(&mut self) {
        let now = self.clock.now();
        let me = self.core.me.clone();
        let gateways = self.core.host().gateways();
        let Some(c) = self.cells.as_mut() else {
            return;
        };
        let home_federation: Vec<String> = c
            .home
            .members
            .iter()
            .filter(|m| m.alive && m.id != me)
            .filter_map(|m| m.state.as_ref()?.federation.clone())
            .collect();
        let alone = !c.home.members.iter().any(|m| m.alive && m.id != me);
        c.machine
            .handle_tick(now, &gateways, &home_federation, alone);
        if c.machine.is_gateway()
            && c.federation.is_none()
            && c.pending_start.is_none()
            && c.retry_at.is_some_and(|t| std::time::Instant::now() >= t)
        {
            c.retry_at = None;
            c.pending_start = Some(c.fed_cfg.seeds.clone());
        }
        if let Some(fed) = &c.federation {
            let agg = self.core.host().home_aggregate();
            fed.publish(LocalState {
                p2p_addr: self.local_state.p2p_addr.clone(),
                peer_id: self.local_state.peer_id.clone(),
                total: agg.total,
                free: agg.free,
                cell: Some(c.machine.name().to_string()),
                aggregate: Some(agg),
                ..LocalState::default()
            });
        }
        self.drain_cells();
    }

    /// A federation snapshot: the directory of a gateway.
    pub(super) fn on_federation(&mut self, snap: &Snapshot) {
        let Some(c) = self.cells.as_mut() else {
            return;
        };
        let members = snap.members.iter().filter(|m| m.alive).filter_map(|m| {
            let st = m.state.as_ref()?;
            Some(FederationMember {
                cell: st.cell.clone()?,
                aggregate: st.aggregate.clone()?,
                contact: Contact {
                    node: m.id.clone(),
                    peer_id: st.peer_id.clone(),
                    p2p_addr: st.p2p_addr.clone(),
                    federation: Some(m.gossip_addr.to_string()),
                },
            })
        });
        c.machine.handle_federation(directory_from(members));
        self.drain_cells();
    }

    /// A cell directory message from another node.
    pub(super) fn on_directory(
        &mut self,
        from: agora_protocol::NodeId,
        msg: agora_protocol::wire::PeerMessage,
    ) {
        let Some(c) = self.cells.as_mut() else {
            tracing::debug!(%from, kind = msg.kind(), "a cell directory message, but this node runs no cells; dropped");
            return;
        };
        let home = c.home.clone();
        c.machine
            .handle_message(from, msg, || CellsIo::home_members(&home));
        self.drain_cells();
    }

    /// `list_all_nodes`: the cells machine asks every other cell.
    pub(super) fn on_survey(&mut self, asker: crate::surface::Asker, request_id: u64) {
        let now = self.clock.now();
        let Some(c) = self.cells.as_mut() else {
            return;
        };
        if let Err(why) = c.machine.handle_survey(now, asker, request_id) {
            self.reply(asker, Reply::error(ErrorCode::Busy, why, Some(request_id)));
        }
        self.drain_cells();
    }

    /// A finished survey: the home cell from gossip, the others as their
    /// gateways answered.
    fn answer_survey(
        &mut self,
        asker: crate::surface::Asker,
        request_id: u64,
        others: Vec<SurveyedCell>,
        home: String,
    ) {
        let mut cells = vec![CellNodes {
            cell: Some(home),
            home: true,
            nodes: self.core.home_cell_rows(),
            error: None,
        }];
        for o in others {
            let (nodes, error) = match o.members {
                Some(m) => (crate::http::sorted_rows(m.iter()), None),
                None => (
                    Vec::new(),
                    Some(format!(
                        "no gateway of cell {} answered within {} s",
                        o.name,
                        super::cells::SURVEY_TIMEOUT.as_secs()
                    )),
                ),
            };
            cells.push(CellNodes {
                cell: Some(o.name),
                home: false,
                nodes,
                error,
            });
        }
        self.reply(asker, Reply::CellNodes(CellNodeList { request_id, cells }));
    }

    /// The host imports or drops a cell.
    pub(super) fn on_import_cell(&mut self, cell: agora_protocol::cell::CellId, import: bool) {
        if let Some(c) = self.cells.as_mut() {
            c.machine.handle_import_cell(cell, import);
            self.drain_cells();
        }
    }

    /// Carries out what the machine asked, then shows the core what it
    /// knows.
    pub(super) fn drain_cells(&mut self) {
        let now = self.clock.now();
        loop {
            let Some(c) = self.cells.as_mut() else {
                return;
            };
            let Some(o) = c.machine.poll_output() else {
                // Copied for the core only when it changed (it may hold
                // thousands of cells).
                let version = c.machine.directory_version();
                if c.shown != Some(version) {
                    c.shown = Some(version);
                    let view = super::core::CellsView {
                        name: c.machine.name().to_string(),
                        others: c.machine.directory().values().cloned().collect(),
                    };
                    self.core.set_cells(Some(view));
                }
                return;
            };
            match o {
                CellsOut::Send { to, msg } => self.p2p.send(&to, msg),
                CellsOut::Contact(k) => self.p2p.set_peer(&k.node, &k.peer_id, &k.p2p_addr),
                CellsOut::StartFederation { seeds } => c.pending_start = Some(seeds),
                CellsOut::Bootstrap { seeds } => {
                    for seed in seeds {
                        // The seed's libp2p port by default: its gossip
                        // PORT+1 (a seed given by name is skipped).
                        match seed.parse::<std::net::SocketAddr>() {
                            Ok(a) if a.port() < u16::MAX => {
                                let p2p = std::net::SocketAddr::new(a.ip(), a.port() + 1);
                                self.p2p.bootstrap(
                                    crate::p2p::tcp_multiaddr(p2p),
                                    agora_protocol::wire::PeerMessage::FederationQuery,
                                );
                            }
                            _ => {
                                tracing::debug!(%seed, "cannot ask this seed for the directory (not IP:PORT)")
                            }
                        }
                    }
                }
                CellsOut::GossipWith(addrs) => {
                    tracing::info!(cell = c.machine.name(), members = ?addrs, "alone in this cell: gossiping with its members the directory names");
                    for a in addrs.iter().filter_map(|a| a.parse().ok()) {
                        self.gossip.gossip_with(a);
                    }
                }
                CellsOut::FederationGossipWith(addrs) => {
                    if let Some(g) = &c.federation {
                        for a in addrs.iter().filter_map(|a| a.parse().ok()) {
                            g.gossip_with(a);
                        }
                    }
                }
                CellsOut::StopFederation => {
                    c.pending_start = None;
                    c.retry_at = None;
                    c.fed_rx = None;
                    if let Some(g) = c.federation.take() {
                        tracing::info!(
                            cell = c.machine.name(),
                            "no longer a gateway of this cell: leaving the federation"
                        );
                        tokio::spawn(g.leave());
                    }
                    self.local_state.federation = None;
                    self.publish(self.core.ledger());
                }
                CellsOut::Import { cell, members } => self.core.handle_import(now, cell, members),
                CellsOut::Aggregate { cell, agg } => self.core.handle_aggregate(now, cell, agg),
                CellsOut::Surveyed {
                    asker,
                    request_id,
                    cells,
                } => {
                    let home = c.machine.name().to_string();
                    self.answer_survey(asker, request_id, cells, home);
                }
            }
        }
    }

    /// Starts the federation gossip the machine asked for, if any.
    pub(super) async fn start_federation(&mut self) {
        let Some(c) = self.cells.as_mut() else {
            return;
        };
        let Some(seeds) = c.pending_start.take() else {
            return;
        };
        if !c.machine.is_gateway() || c.federation.is_some() {
            return;
        }
        // Kept: a failed start is tried again with the same seeds.
        c.fed_cfg.seeds = seeds;
        let cfg = c.fed_cfg.clone();
        let listen = cfg.listen;
        let state = LocalState {
            p2p_addr: self.local_state.p2p_addr.clone(),
            peer_id: self.local_state.peer_id.clone(),
            cell: Some(c.machine.name().to_string()),
            aggregate: Some(self.core.host().home_aggregate()),
            ..LocalState::default()
        };
        match Gossip::start(cfg, state).await {
            Ok((g, rx)) => {
                let addr = g.advertise_addr().to_string();
                tracing::info!(cell = c.machine.name(), federation = %addr, "this node is a gateway of its cell: joined the federation");
                c.federation = Some(g);
                c.fed_rx = Some(rx);
                self.local_state.federation = Some(addr);
                self.publish(self.core.ledger());
            }
            Err(e) => {
                tracing::error!(
                    error = %format!("{e:#}"),
                    %listen,
                    "this node is a gateway of its cell but cannot start the federation gossip; \
                     other cells cannot see this one through it (is --federation-listen free?). \
                     Trying again in {} s",
                    START_RETRY.as_secs()
                );
                c.retry_at = Some(std::time::Instant::now() + START_RETRY);
            }
        }
    }
}
