//! Building an [`ApiSnapshot`] from what the agent already has: the
//! protocol's [`ClusterView`] (fed by gossip), the tasks it knows and the
//! frameworks registered on its socket. The agent may fill the snapshot by
//! hand instead; these helpers only save it the bookkeeping.

use super::{ApiSnapshot, CellRow, FrameworkRow};
use agora_protocol::ids::{FrameworkId, NodeId};
use agora_protocol::resources::Resources;
use agora_protocol::view::{ClusterView, NodeInfo};
use agora_protocol::wire::{NodeRow, TaskRow};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// A framework registered on this node's socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalFramework {
    /// Its id.
    pub id: FrameworkId,
    /// Its name from `register`.
    pub name: String,
    /// Its DRF weight.
    pub weight: u32,
    /// Whether its socket connection is open now.
    pub connected: bool,
}

/// One row per node of the view, sorted by id.
pub fn node_rows(view: &ClusterView) -> Vec<NodeRow> {
    sorted_rows(view.iter())
}

/// The rows of these nodes, by id.
pub fn sorted_rows<'a>(nodes: impl IntoIterator<Item = &'a NodeInfo>) -> Vec<NodeRow> {
    let mut rows: Vec<NodeRow> = nodes
        .into_iter()
        .map(|n| NodeRow {
            id: n.id.clone(),
            addr: n.addr.clone(),
            alive: n.alive,
            total: n.total,
            free: n.free,
            attrs: n.attrs.clone(),
        })
        .collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

/// The name and home node encoded in a framework id of the form
/// `NAME-SUFFIX@NODE` (`FrameworkId::homed`, how nodes name frameworks);
/// `None` for the parts an id does not have. The home is the protocol's
/// reading ([`FrameworkId::home`]).
pub fn parse_framework_id(id: &FrameworkId) -> (String, Option<NodeId>) {
    let text = id.as_str();
    let home = id.home();
    let front = text.split_once('@').map_or(text, |(front, _)| front);
    let name = match front.rsplit_once('-') {
        Some((name, suffix))
            if !name.is_empty() && suffix.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            name
        }
        _ => front,
    };
    (name.to_string(), home)
}

/// Every framework this node knows: those registered here (`local`, homed on
/// `self_id`) and those that hold resources anywhere in the gossip view.
/// Shares and allocations come from the view's DRF totals; active task counts
/// from `tasks` (so they are exact for frameworks homed here).
pub fn framework_rows(
    self_id: &NodeId,
    view: &ClusterView,
    local: &[LocalFramework],
    tasks: &[TaskRow],
) -> Vec<FrameworkRow> {
    let shares = view.fair_shares();
    let mut active: BTreeMap<&FrameworkId, u32> = BTreeMap::new();
    for t in tasks.iter().filter(|t| !t.state.is_terminal()) {
        *active.entry(&t.framework).or_default() += 1;
    }
    let mut rows: BTreeMap<FrameworkId, FrameworkRow> = BTreeMap::new();
    for f in local {
        rows.insert(
            f.id.clone(),
            FrameworkRow {
                id: f.id.clone(),
                name: f.name.clone(),
                weight: f.weight.max(1),
                home_node: Some(self_id.clone()),
                dominant_share: shares.share(&f.id, f.weight),
                allocated: shares.usage(&f.id),
                active_tasks: active.get(&f.id).copied().unwrap_or(0),
                connected: Some(f.connected),
            },
        );
    }
    let mut weights: BTreeMap<FrameworkId, u32> = BTreeMap::new();
    for node in view.iter().filter(|n| n.alive) {
        for (fw, usage) in &node.allocations {
            weights.entry(fw.clone()).or_insert(usage.weight.max(1));
        }
    }
    for (fw, weight) in weights {
        if rows.contains_key(&fw) {
            continue;
        }
        let (name, home) = parse_framework_id(&fw);
        let allocated: Resources = shares.usage(&fw);
        rows.insert(
            fw.clone(),
            FrameworkRow {
                name,
                weight,
                // Another node's framework: its connection is not gossiped.
                connected: None,
                home_node: home,
                dominant_share: shares.share(&fw, weight),
                allocated,
                active_tasks: active.get(&fw).copied().unwrap_or(0),
                id: fw,
            },
        );
    }
    rows.into_values().collect()
}

impl ApiSnapshot {
    /// A snapshot of a one-cell cluster from the agent's view, the tasks it
    /// knows (homed or running here) and its registered frameworks.
    pub fn from_view(
        node_id: NodeId,
        cell_id: &str,
        view: &ClusterView,
        tasks: Vec<TaskRow>,
        local_frameworks: &[LocalFramework],
    ) -> Self {
        let frameworks = framework_rows(&node_id, view, local_frameworks, &tasks);
        let agg = agora_protocol::cell::CellAggregate::from_nodes(view.iter());
        ApiSnapshot {
            nodes: node_rows(view),
            cells: vec![CellRow::of(&agora_protocol::wire::CellRow {
                name: cell_id.to_string(),
                home: true,
                imported: false,
                aggregate: agg,
                gateways: Vec::new(),
            })],
            cell: None,
            node_id,
            tasks,
            frameworks,
            produced_at: SystemTime::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::constraint::Attributes;
    use agora_protocol::fairness::FrameworkUsage;
    use agora_protocol::task::TaskState;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn web_connected(snap: &ApiSnapshot, fw: &FrameworkId) -> Option<bool> {
        snap.frameworks
            .iter()
            .find(|f| &f.id == fw)
            .unwrap()
            .connected
    }

    #[test]
    fn framework_ids_give_name_and_home() {
        let f = FrameworkId::new("batch-1a2b3c4d@node-3").unwrap();
        assert_eq!(parse_framework_id(&f), ("batch".into(), Some(id("node-3"))));
        let f = FrameworkId::new("my-job-x@n1").unwrap();
        assert_eq!(parse_framework_id(&f), ("my-job-x".into(), Some(id("n1"))));
        let f = FrameworkId::new("plain").unwrap();
        assert_eq!(parse_framework_id(&f), ("plain".into(), None));
    }

    #[test]
    fn snapshot_from_view_has_nodes_frameworks_and_one_cell() {
        let mut view = ClusterView::new();
        let mut a = NodeInfo::new(
            id("a"),
            Resources::cpu_mem(4000, 4096),
            Attributes::default(),
        );
        let remote = FrameworkId::new("web-00ff@b").unwrap();
        a.allocations.insert(
            remote.clone(),
            FrameworkUsage {
                resources: Resources::cpu_mem(2000, 0),
                weight: 2,
            },
        );
        a.free = Resources::cpu_mem(2000, 4096);
        view.upsert(a);
        view.upsert(NodeInfo::new(
            id("b"),
            Resources::cpu_mem(4000, 4096),
            Attributes::default(),
        ));
        let local = FrameworkId::new("cli-0001@a").unwrap();
        let tasks = vec![TaskRow {
            task_id: agora_protocol::ids::TaskId::for_framework(&local, 1),
            name: "x".into(),
            framework: local.clone(),
            state: TaskState::Staging,
            node: None,
            exit_code: None,
            resources: Resources::cpu_mem(100, 0),
            reason: None,
        }];
        let fws = [LocalFramework {
            id: local.clone(),
            name: "cli".into(),
            weight: 1,
            connected: true,
        }];
        let snap = ApiSnapshot::from_view(id("a"), "cell-0", &view, tasks, &fws);
        assert_eq!(snap.nodes.len(), 2);
        assert_eq!(snap.cells.len(), 1);
        assert_eq!(
            (
                snap.cells[0].id.as_str(),
                snap.cells[0].members,
                snap.cells[0].home
            ),
            ("cell-0", 2, true)
        );
        assert_eq!(snap.frameworks.len(), 2);
        let cli = snap.frameworks.iter().find(|f| f.id == local).unwrap();
        assert_eq!((cli.active_tasks, cli.connected), (1, Some(true)));
        assert_eq!(web_connected(&snap, &remote), None);
        assert_eq!(cli.home_node, Some(id("a")));
        let web = snap.frameworks.iter().find(|f| f.id == remote).unwrap();
        assert_eq!(web.name, "web");
        assert_eq!(web.home_node, Some(id("b")));
        assert_eq!(web.allocated.cpu_millis, 2000);
        // 2000 of 8000 millicores, weight 2.
        assert!((web.dominant_share - 0.125).abs() < 1e-9);
    }
}
