//! The JSON shapes the API returns, built from the agent's rows. Keys are
//! stable snake_case and match `agora nodes --json` / `agora ps --json`,
//! with the full resource vectors added.

use super::{ApiSnapshot, CellRow};
use agora_protocol::resources::{Dimension, Resources};
use agora_protocol::task::TaskState;
use agora_protocol::wire::{NodeRow, TaskRow};
use serde::Serialize;
use std::collections::BTreeMap;

/// One node, as `/api/v1/nodes` returns it.
#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    /// The node id.
    pub id: String,
    /// Its gossip address.
    pub addr: String,
    /// Whether the failure detector holds it alive.
    pub alive: bool,
    /// True for the node serving this API.
    pub is_self: bool,
    /// Total CPUs (cores, decimal).
    pub cpus_total: f64,
    /// Free CPUs.
    pub cpus_free: f64,
    /// Total memory, MiB.
    pub mem_total_mib: u64,
    /// Free memory, MiB.
    pub mem_free_mib: u64,
    /// The largest used fraction over its dimensions, 0.0 to 1.0.
    pub utilization: f64,
    /// Total resources, every dimension.
    pub total: Resources,
    /// Free resources, every dimension.
    pub free: Resources,
    /// Its attributes.
    pub attrs: BTreeMap<String, String>,
}

impl NodeView {
    /// The view of one row.
    pub fn new(row: &NodeRow, self_id: &str) -> Self {
        NodeView {
            id: row.id.to_string(),
            addr: row.addr.clone(),
            alive: row.alive,
            is_self: row.id.as_str() == self_id,
            cpus_total: cores(row.total.cpu_millis),
            cpus_free: cores(row.free.cpu_millis),
            mem_total_mib: row.total.mem_mib,
            mem_free_mib: row.free.mem_mib,
            utilization: row
                .total
                .saturating_sub(&row.free)
                .dominant_share(&row.total),
            total: row.total,
            free: row.free,
            attrs: row.attrs.0.clone(),
        }
    }
}

/// One task, as `/api/v1/tasks` returns it.
#[derive(Clone, Debug, Serialize)]
pub struct TaskView {
    /// The task id.
    pub id: String,
    /// Its job name.
    pub name: String,
    /// Its state.
    pub state: TaskState,
    /// Where it was placed.
    pub node: Option<String>,
    /// Its exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Its framework.
    pub framework: String,
    /// CPUs it holds (cores, decimal).
    pub cpus: f64,
    /// Memory it holds, MiB.
    pub mem_mib: u64,
    /// What it holds, every dimension.
    pub resources: Resources,
    /// Why it ended, if it failed or was lost.
    pub reason: Option<String>,
}

impl From<&TaskRow> for TaskView {
    fn from(r: &TaskRow) -> Self {
        TaskView {
            id: r.task_id.to_string(),
            name: r.name.clone(),
            state: r.state,
            node: r.node.as_ref().map(ToString::to_string),
            exit_code: r.exit_code,
            framework: r.framework.to_string(),
            cpus: cores(r.resources.cpu_millis),
            mem_mib: r.resources.mem_mib,
            resources: r.resources,
            reason: r.reason.clone(),
        }
    }
}

/// Every task state, in life-cycle order.
pub const ALL_STATES: [TaskState; 7] = [
    TaskState::Staging,
    TaskState::Starting,
    TaskState::Running,
    TaskState::Finished,
    TaskState::Failed,
    TaskState::Killed,
    TaskState::Lost,
];

/// Parses a state name as the API spells it.
pub fn parse_state(s: &str) -> Option<TaskState> {
    ALL_STATES.into_iter().find(|t| t.name() == s)
}

/// Counts tasks by state, with every state present (zeros included).
pub fn count_states<'a>(
    tasks: impl IntoIterator<Item = &'a TaskRow>,
) -> BTreeMap<&'static str, u64> {
    let mut counts: BTreeMap<&'static str, u64> =
        ALL_STATES.into_iter().map(|s| (s.name(), 0)).collect();
    for t in tasks {
        *counts.entry(t.state.name()).or_default() += 1;
    }
    counts
}

/// Cores as a decimal: 1500 → 1.5.
pub fn cores(millis: u64) -> f64 {
    millis as f64 / 1000.0
}

/// Resource totals of the nodes alive in a snapshot.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Capacity {
    /// Sum of the alive nodes' totals.
    pub total: Resources,
    /// Sum of their free resources.
    pub free: Resources,
    /// `total - free`.
    pub used: Resources,
}

impl Capacity {
    /// Sums the alive nodes of `snap`.
    pub fn of(snap: &ApiSnapshot) -> Self {
        let mut c = Capacity::default();
        for n in snap.nodes.iter().filter(|n| n.alive) {
            c.total = c.total.saturating_add(&n.total);
            c.free = c.free.saturating_add(&n.free);
        }
        c.used = c.total.saturating_sub(&c.free);
        c
    }

    /// Used fraction per dimension that the cluster has (0.0 to 1.0).
    pub fn utilization(&self) -> BTreeMap<&'static str, f64> {
        Dimension::ALL
            .into_iter()
            .filter(|d| self.total.get(*d) > 0)
            .map(|d| (d.name(), self.used.get(d) as f64 / self.total.get(d) as f64))
            .collect()
    }
}

/// The body of `/api/v1/cluster`.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterSummary {
    /// The node serving this API.
    pub node_id: String,
    /// When the snapshot was produced, milliseconds since the Unix epoch.
    pub produced_at_ms: u64,
    /// Node counts.
    pub nodes: NodeCounts,
    /// Resources of the alive nodes.
    pub resources: Capacity,
    /// Used fraction per dimension.
    pub utilization: BTreeMap<&'static str, f64>,
    /// Task counts by state (every state present).
    pub tasks: BTreeMap<&'static str, u64>,
    /// "cluster" when the counts come from every node, "local" when the
    /// agent could not list the cluster in time and only this node's tasks
    /// were counted.
    pub tasks_scope: &'static str,
    /// Nodes whose tasks could not be listed.
    pub unreachable: Vec<String>,
    /// Frameworks known, and how many are connected.
    pub frameworks: FrameworkCounts,
    /// The cells.
    pub cells: Vec<CellRow>,
}

/// Alive and dead nodes.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct NodeCounts {
    /// Alive.
    pub alive: u64,
    /// Dead.
    pub dead: u64,
    /// Both.
    pub total: u64,
}

/// Known and connected frameworks.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct FrameworkCounts {
    /// Known.
    pub total: u64,
    /// Connected to this node's socket now.
    pub connected: u64,
}
