//! The parameters of a run, and how nodes and frameworks are named and
//! placed.

use super::*;

/// Parameters shared by every scheduler run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Nodes.
    pub nodes: usize,
    /// Cores per node.
    pub cores: u64,
    /// Nodes per cell (the whole cluster is one cell when ≥ nodes).
    pub cell_size: usize,
    /// Gossip interval.
    pub gossip_interval: Micros,
    /// The network.
    pub net: NetConfig,
    /// Crashes per node per hour (0: none).
    pub failure_rate: f64,
    /// A crashed node rejoins after this long.
    pub rejoin_after: Micros,
    /// Crashes at given times (`--crash`).
    pub crashes: Vec<CrashAt>,
    /// Simulated length.
    pub duration: Micros,
    /// The seed.
    pub seed: u64,
    /// A deliberate fault, for testing the invariant checker.
    pub fault: Option<Fault>,
    /// Bidder tunables.
    pub bidder: bidder::Config,
    /// Auctioneer tunables.
    pub auctioneer: auctioneer::Config,
    /// A bidder spills into another cell when under this fraction of its
    /// home cell is free ([`cell::should_cross`]); 0 spills only when home
    /// cannot fit the task at all.
    pub spill_below: f64,
}

impl Params {
    /// Number of cells.
    pub fn cells(&self) -> usize {
        self.nodes.div_ceil(self.cell_size.max(1)).max(1)
    }

    /// A node's capacity.
    pub fn capacity(&self) -> Resources {
        Resources {
            cpu_millis: self.cores * 1000,
            mem_mib: self.cores * crate::workload::MEM_PER_CORE_MIB,
            disk_mib: 1 << 20,
            gpus: 0,
            ports: 0,
        }
    }
}

/// The nodes `lo..hi` of cell `cell`.
pub(super) fn cell_range(p: &Params, cell: usize) -> (usize, usize) {
    let lo = cell * p.cell_size;
    (lo, ((cell + 1) * p.cell_size).min(p.nodes))
}

/// The node a framework's bidder lives on: the top rendezvous node of its
/// cell for its name.
pub fn home_node(p: &Params, def: &FrameworkDef) -> u32 {
    let (lo, hi) = cell_range(p, def.cell % p.cells());
    (lo..hi)
        .max_by_key(|&i| cell::rendezvous_score(&def.name, &node_id(i as u32)))
        .unwrap_or(0) as u32
}

/// The node id of index `i`.
pub fn node_id(i: u32) -> NodeId {
    NodeId::new(format!("n{i:05}")).unwrap_or_else(|_| unreachable!("n + digits is a valid id"))
}

pub(super) fn node_index(id: &NodeId) -> Option<u32> {
    id.as_str().get(1..)?.parse().ok()
}
