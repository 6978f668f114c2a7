//! Cells: grouping nodes into chitchat clusters small enough to gossip, and
//! the federation-level aggregates that let a bidder cross cells.
//!
//! A cell is one chitchat cluster. A few of its live members, its
//! **gateways**, also join the federation cluster and publish the cell's
//! [`CellAggregate`]: member counts, total and free capacity, and how many
//! nodes could take a task of each size class. Gateways are chosen without an
//! election by rendezvous hashing ([`gateways`]): every member that sees the
//! same live set picks the same gateways, and a gateway's death moves only its
//! own role. A bidder whose own cell cannot fit a task, or is saturated
//! ([`should_cross`]), bids in a freer cell picked with [`best_other_cell`].
//!
//! Everything here is pure: no clock, no RNG, deterministic iteration.

use crate::ids::NodeId;
use crate::resources::Resources;
use crate::view::NodeInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Identifies a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CellId(pub u32);

/// CPU size classes: class `i` means "at least 2^i cores free" (1 to 128).
pub const CPU_CLASSES: usize = 8;
/// Memory size classes: class `j` means "at least 2^j GiB free" (1 to 512).
pub const MEM_CLASSES: usize = 10;

/// What a cell publishes to the federation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellAggregate {
    /// Members known (alive or not).
    pub members: u32,
    /// Members held alive.
    pub alive: u32,
    /// Sum of live members' totals.
    pub total: Resources,
    /// Sum of live members' free vectors.
    pub free: Resources,
    /// `cpu_fit[i]`: live members with at least 2^i cores free.
    pub cpu_fit: [u32; CPU_CLASSES],
    /// `mem_fit[j]`: live members with at least 2^j GiB free.
    pub mem_fit: [u32; MEM_CLASSES],
}

fn cpu_class(cpu_millis: u64) -> usize {
    // smallest i with 2^i cores >= request
    let cores = cpu_millis.div_ceil(1000).max(1);
    (64 - (cores - 1).leading_zeros()) as usize
}

fn mem_class(mem_mib: u64) -> usize {
    let gib = mem_mib.div_ceil(1024).max(1);
    (64 - (gib - 1).leading_zeros()) as usize
}

impl CellAggregate {
    /// The aggregate of a cell from its members' gossiped info.
    pub fn from_nodes<'a>(nodes: impl IntoIterator<Item = &'a NodeInfo>) -> Self {
        let mut a = CellAggregate::default();
        for n in nodes {
            a.members += 1;
            if !n.alive {
                continue;
            }
            a.alive += 1;
            a.total = a.total.saturating_add(&n.total);
            a.free = a.free.saturating_add(&n.free);
            let cores = n.free.cpu_millis / 1000;
            for (i, slot) in a.cpu_fit.iter_mut().enumerate() {
                if cores >= 1u64 << i {
                    *slot += 1;
                }
            }
            let gib = n.free.mem_mib / 1024;
            for (j, slot) in a.mem_fit.iter_mut().enumerate() {
                if gib >= 1u64 << j {
                    *slot += 1;
                }
            }
        }
        a
    }

    /// An upper bound on the live members that could take `r` (by its CPU
    /// and memory size classes; other dimensions are not summarized).
    pub fn nodes_fitting(&self, r: &Resources) -> u32 {
        let c = cpu_class(r.cpu_millis);
        let m = mem_class(r.mem_mib);
        let cpu = if r.cpu_millis == 0 {
            self.alive
        } else {
            self.cpu_fit.get(c).copied().unwrap_or(0)
        };
        let mem = if r.mem_mib == 0 {
            self.alive
        } else {
            self.mem_fit.get(m).copied().unwrap_or(0)
        };
        cpu.min(mem)
    }

    /// Whether some member may take `r`.
    pub fn can_fit(&self, r: &Resources) -> bool {
        self.nodes_fitting(r) > 0
    }

    /// The smallest free fraction among the CPU and memory of the cell,
    /// counting only the dimensions `r` asks for (CPU alone when it asks for
    /// neither); 0 when the cell has no live capacity.
    pub fn free_fraction(&self, r: &Resources) -> f64 {
        let frac = |free: u64, total: u64| {
            if total == 0 {
                0.0
            } else {
                free as f64 / total as f64
            }
        };
        let cpu = frac(self.free.cpu_millis, self.total.cpu_millis);
        let mem = frac(self.free.mem_mib, self.total.mem_mib);
        match (r.cpu_millis > 0, r.mem_mib > 0) {
            (_, false) => cpu,
            (false, true) => mem,
            (true, true) => cpu.min(mem),
        }
    }

    /// Fraction of the cell's CPU that is free (0 when empty).
    pub fn free_cpu_fraction(&self) -> f64 {
        if self.total.cpu_millis == 0 {
            0.0
        } else {
            self.free.cpu_millis as f64 / self.total.cpu_millis as f64
        }
    }
}

/// A stable 64-bit hash (FNV-1a then a mixer); never changes between
/// versions, so every node computes the same rendezvous scores.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// The longest cell name.
pub const MAX_CELL_NAME: usize = 64;

/// Checks a cell name: 1 to [`MAX_CELL_NAME`] ASCII letters, digits, `-`,
/// `_` or `.` (it becomes part of gossip's cluster name and of file names).
///
/// # Errors
/// What is wrong with the name, and what a good one looks like.
pub fn check_cell_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CELL_NAME {
        return Err(format!(
            "cell name {name:?}: give 1 to {MAX_CELL_NAME} characters, e.g. rack-12"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "cell name {name:?}: {c:?} is not allowed; use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

impl CellId {
    /// The id of the cell called `name` (a stable hash: every node and
    /// every version computes the same id for the same name).
    pub fn from_name(name: &str) -> CellId {
        let h = stable_hash(&[b"cell-name", name.as_bytes()]);
        CellId((h >> 32) as u32 ^ (h as u32))
    }
}

/// The cell of `node` when the cluster is split into `cells` cells
/// automatically (`--cells`): jump consistent hashing (Lamping and Veach)
/// of the node id, named `c0` to `c<cells-1>`. Raising `cells` from `k` to
/// `k + 1` moves only about `1/(k+1)` of the nodes, all into the new cell:
/// that is how a cluster whose cells grew past their size splits one more.
pub fn auto_cell(node: &NodeId, cells: u32) -> String {
    let mut key = stable_hash(&[b"auto-cell", node.as_str().as_bytes()]);
    let buckets = i64::from(cells.max(1));
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let r = ((key >> 33) + 1) as f64;
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / r)) as i64;
    }
    format!("c{b}")
}

/// The rendezvous (highest random weight) score of `node` for `key`.
pub fn rendezvous_score(key: &str, node: &NodeId) -> u64 {
    stable_hash(&[key.as_bytes(), node.as_str().as_bytes()])
}

/// The `count` gateways of cell `cell` among its live members: highest
/// rendezvous score for the key `cell/<id>` first, ties by node id.
pub fn gateways<'a>(
    cell: CellId,
    live_members: impl IntoIterator<Item = &'a NodeId>,
    count: usize,
) -> Vec<NodeId> {
    let key = format!("cell/{}", cell.0);
    let mut scored: Vec<(u64, &NodeId)> = live_members
        .into_iter()
        .map(|n| (rendezvous_score(&key, n), n))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(count)
        .map(|(_, n)| n.clone())
        .collect()
}

/// Where a task of `r` should be bid for: the home cell if its aggregate says
/// some member can take it; otherwise the other cell with the most members
/// that can (see [`best_other_cell`]). `None` when no cell can take it.
pub fn choose_cell(
    home: CellId,
    r: &Resources,
    aggregates: &BTreeMap<CellId, CellAggregate>,
    task_key: &str,
) -> Option<CellId> {
    if aggregates.get(&home).is_some_and(|a| a.can_fit(r)) {
        return Some(home);
    }
    best_other_cell(home, r, aggregates, task_key, -1.0)
}

/// The cell other than `home` with the most members that can take `r`, among
/// those whose free fraction for `r` is above `freer_than`; ties are broken
/// by the rendezvous score of `task_key`, so that bidders in the same
/// situation spread over equal cells instead of all crowding one.
pub fn best_other_cell(
    home: CellId,
    r: &Resources,
    aggregates: &BTreeMap<CellId, CellAggregate>,
    task_key: &str,
    freer_than: f64,
) -> Option<CellId> {
    aggregates
        .iter()
        .filter(|(c, a)| **c != home && a.can_fit(r) && a.free_fraction(r) > freer_than)
        .max_by(|(ca, a), (cb, b)| {
            a.nodes_fitting(r).cmp(&b.nodes_fitting(r)).then_with(|| {
                let ha = stable_hash(&[task_key.as_bytes(), &ca.0.to_le_bytes()]);
                let hb = stable_hash(&[task_key.as_bytes(), &cb.0.to_le_bytes()]);
                ha.cmp(&hb)
            })
        })
        .map(|(c, _)| *c)
}

/// Below this free fraction a cell is treated as full for spilling: at load
/// 0.8 a balanced cell keeps about a fifth free, while a cell whose own
/// frameworks ask for more than it has keeps only the moments between a
/// task ending and the next award.
pub const SPILL_FREE_FRACTION: f64 = 0.05;

/// Whether a bidder should look beyond its home cell: fewer than
/// `min_fitting` of its members can take `r`, or less than
/// `min_free_fraction` of the cell is free for `r` (the cell is saturated:
/// its frameworks ask for more than it has, even if a few nodes have a
/// moment's room). Pair it with [`best_other_cell`] with `freer_than` set to
/// the home cell's free fraction, so a bidder only spills to a cell with more
/// room than its own.
pub fn should_cross(
    home: &CellAggregate,
    r: &Resources,
    min_fitting: u32,
    min_free_fraction: f64,
) -> bool {
    home.nodes_fitting(r) < min_fitting.max(1) || home.free_fraction(r) < min_free_fraction
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constraint::Attributes;

    fn node(i: u32, free_cores: u64, free_gib: u64, alive: bool) -> NodeInfo {
        let mut n = NodeInfo::new(
            NodeId::new(format!("n{i}")).unwrap(),
            Resources::cpu_mem(16_000, 65_536),
            Attributes::default(),
        );
        n.free = Resources::cpu_mem(free_cores * 1000, free_gib * 1024);
        n.alive = alive;
        n
    }

    #[test]
    fn aggregates_count_size_classes_of_live_members() {
        let nodes = [
            node(1, 16, 64, true),
            node(2, 3, 2, true),
            node(3, 0, 0, true),
            node(4, 16, 64, false),
        ];
        let a = CellAggregate::from_nodes(&nodes);
        assert_eq!((a.members, a.alive), (4, 3));
        assert_eq!(a.free.cpu_millis, 19_000);
        assert_eq!(a.cpu_fit[0], 2, "two live nodes have >= 1 core");
        assert_eq!(a.cpu_fit[2], 1, "one has >= 4 cores");
        assert_eq!(a.nodes_fitting(&Resources::cpu_mem(2000, 2048)), 2);
        assert_eq!(
            a.nodes_fitting(&Resources::cpu_mem(3000, 1024)),
            1,
            "3 cores rounds up to class 4"
        );
        assert!(!a.can_fit(&Resources::cpu_mem(32_000, 1024)));
        assert!((a.free_cpu_fraction() - 19.0 / 48.0).abs() < 1e-9);
    }

    #[test]
    fn gateways_are_stable_and_move_only_when_a_gateway_dies() {
        let ids: Vec<NodeId> = (0..50)
            .map(|i| NodeId::new(format!("n{i}")).unwrap())
            .collect();
        let g = gateways(CellId(7), &ids, 3);
        assert_eq!(g.len(), 3);
        assert_eq!(
            g,
            gateways(CellId(7), ids.iter().rev(), 3),
            "order of input does not matter"
        );
        // Removing a non-gateway changes nothing; removing a gateway replaces only it.
        let without_other: Vec<NodeId> = ids
            .iter()
            .filter(|n| !g.contains(n))
            .skip(1)
            .cloned()
            .chain(g.iter().cloned())
            .collect();
        assert_eq!(gateways(CellId(7), &without_other, 3), g);
        let without_first: Vec<NodeId> = ids.iter().filter(|n| **n != g[0]).cloned().collect();
        let g2 = gateways(CellId(7), &without_first, 3);
        assert_eq!(&g2[..2], &g[1..]);
        assert_ne!(
            gateways(CellId(8), &ids, 3),
            g,
            "cells pick different gateways"
        );
    }

    #[test]
    fn choose_cell_prefers_home_then_most_room() {
        let mut aggs = BTreeMap::new();
        let full = CellAggregate::from_nodes(&[node(1, 0, 0, true)]);
        let some = CellAggregate::from_nodes(&[node(2, 4, 8, true)]);
        let more = CellAggregate::from_nodes(&[node(3, 4, 8, true), node(4, 8, 8, true)]);
        aggs.insert(CellId(0), full.clone());
        aggs.insert(CellId(1), some.clone());
        aggs.insert(CellId(2), more);
        let r = Resources::cpu_mem(1000, 1024);
        assert_eq!(choose_cell(CellId(0), &r, &aggs, "t1"), Some(CellId(2)));
        assert_eq!(choose_cell(CellId(1), &r, &aggs, "t1"), Some(CellId(1)));
        assert!(should_cross(&full, &r, 1, 0.0));
        assert!(!should_cross(&some, &r, 1, 0.0));
        let huge = Resources::cpu_mem(64_000, 1024);
        assert_eq!(choose_cell(CellId(0), &huge, &aggs, "t1"), None);
        // Ties are broken by the task key, deterministically.
        let mut tie = BTreeMap::new();
        tie.insert(CellId(0), full);
        tie.insert(CellId(1), some.clone());
        tie.insert(CellId(2), some);
        let picks: std::collections::BTreeSet<_> = (0..32)
            .filter_map(|i| choose_cell(CellId(0), &r, &tie, &format!("t{i}")))
            .collect();
        assert_eq!(picks.len(), 2, "equal cells share the load");
        assert_eq!(
            choose_cell(CellId(0), &r, &tie, "x"),
            choose_cell(CellId(0), &r, &tie, "x")
        );
    }

    #[test]
    fn a_saturated_cell_spills_to_a_freer_one() {
        // 10 nodes of 16 cores / 64 GiB; 8 are full, 2 have 2 cores free:
        // two nodes can still take a 1-core task, but the cell is 97.5% busy.
        let busy: Vec<NodeInfo> = (0..10)
            .map(|i| {
                if i < 8 {
                    node(i, 0, 0, true)
                } else {
                    node(i, 2, 8, true)
                }
            })
            .collect();
        let home = CellAggregate::from_nodes(&busy);
        let r = Resources::cpu_mem(1000, 1024);
        assert!((home.free_fraction(&r) - 4.0 / 160.0).abs() < 1e-9);
        assert!(!should_cross(&home, &r, 1, 0.0), "room for the task");
        assert!(
            should_cross(&home, &r, 1, SPILL_FREE_FRACTION),
            "but saturated"
        );
        let half: Vec<NodeInfo> = (10..20).map(|i| node(i, 8, 32, true)).collect();
        let mut aggs = BTreeMap::new();
        aggs.insert(CellId(0), home.clone());
        aggs.insert(CellId(1), CellAggregate::from_nodes(&half));
        aggs.insert(CellId(2), CellAggregate::from_nodes(&busy));
        let f = home.free_fraction(&r);
        assert_eq!(
            best_other_cell(CellId(0), &r, &aggs, "t", f),
            Some(CellId(1))
        );
        // a cell no freer than home is never a target
        aggs.remove(&CellId(1));
        assert_eq!(best_other_cell(CellId(0), &r, &aggs, "t", f), None);
        // memory is what a memory-heavy task looks at
        let mem_only = Resources::cpu_mem(0, 1024);
        assert!((home.free_fraction(&mem_only) - 16.0 / 640.0).abs() < 1e-9);
    }

    #[test]
    fn cell_names_are_checked_and_hash_stably() {
        assert!(check_cell_name("rack-12").is_ok());
        assert!(check_cell_name("").is_err());
        assert!(check_cell_name("a/b").unwrap_err().contains("'/'"));
        assert!(check_cell_name(&"x".repeat(65)).is_err());
        assert_eq!(CellId::from_name("a"), CellId::from_name("a"));
        assert_ne!(CellId::from_name("a"), CellId::from_name("b"));
    }

    #[test]
    fn auto_cells_spread_nodes_and_move_few_when_one_is_added() {
        let ids: Vec<NodeId> = (0..2000)
            .map(|i| NodeId::new(format!("n{i}")).unwrap())
            .collect();
        let mut per = BTreeMap::new();
        for n in &ids {
            *per.entry(auto_cell(n, 4)).or_insert(0u32) += 1;
        }
        assert_eq!(per.len(), 4, "{per:?}");
        assert!(per.values().all(|&c| (400..=600).contains(&c)), "{per:?}");
        let moved: Vec<&NodeId> = ids
            .iter()
            .filter(|n| auto_cell(n, 4) != auto_cell(n, 5))
            .collect();
        // About a fifth moves, and only into the new cell.
        assert!((300..=500).contains(&moved.len()), "{}", moved.len());
        assert!(moved.iter().all(|n| auto_cell(n, 5) == "c4"));
        assert_eq!(auto_cell(&ids[0], 1), "c0");
        assert_eq!(auto_cell(&ids[0], 0), "c0");
    }
}
