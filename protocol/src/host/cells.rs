//! The host's part in cells (see [`crate::cell`]): which cell it belongs
//! to, whether it is one of that cell's gateways, the aggregates of the
//! other cells, and when its bidders look beyond the home cell.
//!
//! Every cell tick (`Config::cell_tick`) each framework homed here is judged
//! by its last request: when the home cell cannot take it
//! ([`cell::should_cross`], judged on the home cell's aggregate as the
//! federation carries it, so that the bidder's own pending bids do not make
//! home look full) the freer other cell with most room
//! ([`cell::best_other_cell`]) is imported; when home has room again, the
//! import is dropped. The host asks its driver for a cell's members with
//! [`Event::ImportCell`] and forgets them itself when the last framework
//! importing the cell stops ([`Event::DropCell`]); the driver answers and
//! refreshes with [`Host::handle_import`] (the node asks a gateway of that
//! cell; the simulator copies the cell's nodes). Imported nodes are not in
//! the home cell's gossip, so a membership snapshot that lacks them does not
//! declare them gone.
//!
//! Everything is decided here, so the node and the simulator cross cells
//! the same way.

use super::{Event, Host};
use crate::cell::{self, CellAggregate, CellId};
use crate::ids::{FrameworkId, NodeId};
use crate::resources::Resources;
use crate::time::Instant;
use crate::view::NodeInfo;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};

/// Most other cells' aggregates kept (a federation of 10,000 nodes in
/// cells of 100 has 100).
pub const MAX_CELLS: usize = 4096;
/// Most nodes imported from one cell.
pub const MAX_IMPORTED: usize = 4096;

/// The cells state of a host.
#[derive(Debug, Default)]
pub(super) struct Cells {
    /// The aggregates heard from the federation, by cell (home included).
    aggregates: BTreeMap<CellId, CellAggregate>,
    /// Each homed framework's last request (what crossing is judged for).
    last_req: BTreeMap<FrameworkId, Resources>,
    /// The cell each framework imports.
    imports: BTreeMap<FrameworkId, CellId>,
    /// The nodes imported into the view, by cell.
    imported: BTreeMap<CellId, BTreeSet<NodeId>>,
    /// When the next crossing check is due (None: not in a cell).
    next_tick: Option<Instant>,
}

impl Cells {
    pub(super) fn new(in_cell: bool) -> Self {
        Cells {
            next_tick: in_cell.then_some(Instant::ZERO),
            ..Cells::default()
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Whether `node` was imported from another cell.
    pub(super) fn is_imported(&self, node: &NodeId) -> bool {
        self.imported.values().any(|s| s.contains(node))
    }

    pub(super) fn note_request(&mut self, fw: &FrameworkId, r: Resources) {
        if let Some(v) = self.last_req.get_mut(fw) {
            *v = r;
        } else {
            self.last_req.insert(fw.clone(), r);
        }
    }

    pub(super) fn forget_framework(&mut self, fw: &FrameworkId) {
        self.last_req.remove(fw);
        self.imports.remove(fw);
    }
}

impl<R: Rng> Host<R> {
    /// The cell this node belongs to, if it runs in cells.
    pub fn cell(&self) -> Option<CellId> {
        self.config.cell
    }

    /// Whether `node` is in the view because a bidder here imported its
    /// cell (it is not a member of the home cell).
    pub fn is_imported(&self, node: &NodeId) -> bool {
        self.cells.is_imported(node)
    }

    /// The aggregate of the home cell, from this node's view of its members
    /// (what a gateway publishes to the federation).
    pub fn home_aggregate(&self) -> CellAggregate {
        CellAggregate::from_nodes(self.view.iter().filter(|n| !self.cells.is_imported(&n.id)))
    }

    /// The home cell's gateways: its `Config::gateways` live members with
    /// the highest rendezvous score (this node among them, when it is one).
    pub fn gateways(&self) -> Vec<NodeId> {
        let Some(c) = self.config.cell else {
            return Vec::new();
        };
        let live: Vec<&NodeId> = self
            .view
            .iter()
            .filter(|n| (n.alive || n.id == self.me) && !self.cells.is_imported(&n.id))
            .map(|n| &n.id)
            .collect();
        cell::gateways(c, live, self.config.gateways)
    }

    /// Whether this node is one of its cell's gateways.
    pub fn is_gateway(&self) -> bool {
        self.gateways().contains(&self.me)
    }

    /// The aggregates heard from the federation, by cell.
    pub fn aggregates(&self) -> &BTreeMap<CellId, CellAggregate> {
        &self.cells.aggregates
    }

    /// The federation's aggregate of `cell` (from a gateway, through the
    /// federation's gossip). At most [`MAX_CELLS`] cells are kept; an
    /// aggregate of a new cell past that is ignored.
    pub fn handle_aggregate(&mut self, now: Instant, cell: CellId, agg: CellAggregate) {
        if self.config.cell.is_none() {
            return;
        }
        if let Some(a) = self.cells.aggregates.get_mut(&cell) {
            *a = agg;
        } else if self.cells.aggregates.len() < MAX_CELLS {
            self.cells.aggregates.insert(cell, agg);
        }
        let _ = now;
    }

    /// The cells imported into the view (to refresh).
    pub fn imported_cells(&self) -> Vec<CellId> {
        self.cells.imported.keys().copied().collect()
    }

    /// The members of `cell` as one of its gateways (or the simulator) knows
    /// them: they enter the view, replacing what was imported from that cell
    /// before, for the bidders that import it. Ignored unless a framework
    /// here imports `cell` (an answer that comes after the import ended).
    /// At most [`MAX_IMPORTED`] nodes are taken.
    pub fn handle_import(&mut self, now: Instant, cell: CellId, members: Vec<NodeInfo>) {
        if Some(cell) == self.config.cell || !self.cells.imports.values().any(|c| *c == cell) {
            return;
        }
        let mut now_in = BTreeSet::new();
        for mut info in members.into_iter().take(MAX_IMPORTED) {
            if info.id == self.me {
                continue;
            }
            let id = info.id.clone();
            let alive = info.alive;
            let known = self.view.get(&id).is_some();
            if known {
                info.alive = self.view.get(&id).is_some_and(|n| n.alive);
            }
            self.view.upsert(info);
            // A node the gateway holds dead is dead here too: the tasks
            // placed there are reported lost, as for a home-cell member.
            self.set_alive(now, &id, alive);
            now_in.insert(id);
        }
        let old = self.cells.imported.insert(cell, now_in.clone());
        for gone in old.unwrap_or_default().difference(&now_in) {
            self.set_alive(now, gone, false);
            self.view.remove(gone);
        }
        self.update_shares();
        self.pump(now);
    }

    /// The crossing check (see the module documentation).
    pub(super) fn cells_tick(&mut self, now: Instant) {
        let Some(home) = self.config.cell else {
            return;
        };
        if self.cells.next_tick.is_none_or(|t| t > now) {
            return;
        }
        self.cells.next_tick = Some(now + self.config.cell_tick);
        let home_agg = match self.cells.aggregates.get(&home) {
            Some(a) => a.clone(),
            // Until the federation's first aggregate, from the view.
            None => self.home_aggregate(),
        };
        let fws: Vec<(FrameworkId, Resources)> = self
            .cells
            .last_req
            .iter()
            .map(|(f, r)| (f.clone(), *r))
            .collect();
        for (fw, req) in fws {
            // Spill only to a freer cell, unless no home member can take the
            // task at all (then any cell that can is better).
            let home_free = if home_agg.nodes_fitting(&req) == 0 {
                -1.0
            } else {
                home_agg.free_fraction(&req)
            };
            let target = if cell::should_cross(
                &home_agg,
                &req,
                self.config.cross_min_fitting,
                self.config.spill_below,
            ) {
                cell::best_other_cell(home, &req, &self.cells.aggregates, fw.as_str(), home_free)
            } else {
                None
            };
            let current = self.cells.imports.get(&fw).copied();
            if target == current {
                continue;
            }
            if let Some(c) = current {
                self.cells.imports.remove(&fw);
                self.drop_cell_if_unused(now, c);
            }
            if let Some(c) = target {
                let first = !self.cells.imports.values().any(|x| *x == c);
                self.cells.imports.insert(fw, c);
                if first {
                    self.cells.imported.entry(c).or_default();
                    self.events.push_back(Event::ImportCell(c));
                }
            }
        }
    }

    /// Forgets the nodes imported from `cell` once no framework imports it.
    fn drop_cell_if_unused(&mut self, now: Instant, cell: CellId) {
        if self.cells.imports.values().any(|c| *c == cell) {
            return;
        }
        let nodes = self.cells.imported.remove(&cell).unwrap_or_default();
        for n in &nodes {
            // Tasks placed there stay placed: their node reports to their
            // home as any node does. Only the view forgets the node.
            self.view.remove(n);
        }
        self.events.push_back(Event::DropCell(cell));
        self.update_shares();
        self.pump(now);
    }
}
