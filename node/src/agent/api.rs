//! The driver's side of the HTTP API (`--http`, see [`crate::http`]): the
//! snapshot the HTTP server reads, built from the core's host and sessions
//! and the driver's own gossip and libp2p counters when the core says one
//! is due ([`super::core::Output::PublishApi`]).

use super::core::Core;
use crate::gossip::GossipStats;
use crate::http::{ApiSnapshot, LocalFramework, Metrics, PeerTotals};
use crate::p2p::P2pStats;
use std::sync::Arc;
use tokio::sync::watch;

/// What the driver keeps for the HTTP API.
pub struct HttpSide {
    /// Where snapshots go.
    pub snap_tx: watch::Sender<Arc<ApiSnapshot>>,
    /// Shared with the HTTP server, which only reads it on scrapes.
    pub metrics: Arc<Metrics>,
    /// The cell this node belongs to.
    pub cell_id: String,
}

impl HttpSide {
    /// Publishes a snapshot of `core` with the driver's counters.
    pub fn publish(
        &self,
        core: &Core,
        gossip: GossipStats,
        p2p: P2pStats,
        journal: super::journal::Stats,
        located: super::cells::CellsStats,
    ) {
        let tasks = core.local_listing();
        let http_fw = core.http_framework();
        let local: Vec<LocalFramework> = core
            .frameworks()
            .map(|f| LocalFramework {
                id: f.id.clone(),
                name: f.name.clone(),
                weight: f.weight,
                connected: f.conn.is_some() || Some(&f.id) == http_fw,
            })
            .collect();
        let mut snap = ApiSnapshot::from_view(
            core.host().node_id().clone(),
            &self.cell_id,
            core.host().view(),
            tasks,
            &local,
        );
        let cells = core.cell_list(0);
        if let Some(name) = cells.cell.clone() {
            snap.cells = cells.cells.iter().map(crate::http::CellRow::of).collect();
            snap.cell = Some((name, cells.gateway));
            self.metrics.set_cells(&cells);
        }
        self.metrics.set_gossip_totals(
            gossip.bytes_in,
            gossip.bytes_out,
            gossip.datagrams_rejected,
        );
        self.metrics.set_node_totals(&crate::http::NodeTotals {
            gossip_probes: gossip.probes,
            gossip_join_pushes: gossip.join_pushes,
            gossip_local_health: gossip.local_health,
            journal_syncs: journal.syncs,
            journal_errors: journal.errors,
            cell_locates: located.locates,
            cell_located: located.located,
            cell_unlocated: located.unlocated_dropped,
        });
        self.metrics.set_peer_totals(&PeerTotals {
            sent: p2p.sent,
            received: p2p.received,
            unroutable: p2p.unroutable,
            failed: p2p.failures,
            other_version: p2p.other_version,
        });
        self.snap_tx.send_replace(Arc::new(snap));
    }
}
