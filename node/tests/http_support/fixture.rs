//! The fixture cluster of the HTTP tests: five nodes in three zones (one
//! dead), twenty tasks of four frameworks in every state, one cell.

use agora_node::http::{ApiSnapshot, CellRow, FrameworkRow};
use agora_protocol::constraint::Attributes;
use agora_protocol::ids::{FrameworkId, NodeId, TaskId};
use agora_protocol::resources::Resources;
use agora_protocol::task::TaskState;
use agora_protocol::wire::{NodeRow, TaskRow};
use std::time::SystemTime;

pub fn node_id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

pub fn fw_id(s: &str) -> FrameworkId {
    FrameworkId::new(s).unwrap()
}

pub fn task_id(s: &str) -> TaskId {
    TaskId::new(s).unwrap()
}

/// The five nodes of the fixture: id, zone, cpus (millicores), mem (MiB).
pub const NODES: [(&str, &str, u64, u64); 5] = [
    ("node-a", "eu-1", 8000, 16384),
    ("node-b", "eu-1", 8000, 16384),
    ("node-c", "eu-2", 16000, 65536),
    ("node-d", "eu-2", 4000, 8192),
    ("node-e", "us-1", 8000, 32768),
];

/// A fixture task: id, name, framework, state, node index, cpus, mem.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    TaskState,
    Option<usize>,
    u64,
    u64,
);

/// Tasks of the fixture.
fn task_table() -> Vec<TaskRow> {
    let rows: [Row; 20] = [
        (
            "batch.1",
            "etl",
            "batch",
            TaskState::Running,
            Some(0),
            2000,
            4096,
        ),
        (
            "batch.2",
            "etl",
            "batch",
            TaskState::Running,
            Some(1),
            2000,
            4096,
        ),
        (
            "batch.3",
            "etl",
            "batch",
            TaskState::Running,
            Some(2),
            2000,
            4096,
        ),
        (
            "batch.4",
            "etl",
            "batch",
            TaskState::Running,
            Some(3),
            2000,
            4096,
        ),
        (
            "batch.5",
            "etl",
            "batch",
            TaskState::Finished,
            Some(4),
            2000,
            4096,
        ),
        (
            "batch.6",
            "etl",
            "batch",
            TaskState::Finished,
            Some(0),
            2000,
            4096,
        ),
        (
            "batch.7",
            "etl",
            "batch",
            TaskState::Failed,
            Some(1),
            2000,
            4096,
        ),
        (
            "batch.8",
            "report",
            "batch",
            TaskState::Staging,
            None,
            4000,
            8192,
        ),
        (
            "web.1",
            "frontend",
            "web",
            TaskState::Running,
            Some(2),
            1000,
            1024,
        ),
        (
            "web.2",
            "frontend",
            "web",
            TaskState::Running,
            Some(4),
            1000,
            1024,
        ),
        (
            "web.3",
            "frontend",
            "web",
            TaskState::Running,
            Some(0),
            1000,
            1024,
        ),
        (
            "web.4",
            "api",
            "web",
            TaskState::Running,
            Some(2),
            2000,
            2048,
        ),
        (
            "web.5",
            "api",
            "web",
            TaskState::Starting,
            Some(3),
            1500,
            2048,
        ),
        ("web.6", "cache", "web", TaskState::Lost, Some(4), 500, 8192),
        (
            "ml.1",
            "train",
            "ml",
            TaskState::Running,
            Some(2),
            8000,
            32768,
        ),
        (
            "ml.2",
            "train",
            "ml",
            TaskState::Running,
            Some(4),
            4000,
            16384,
        ),
        (
            "ml.3",
            "eval",
            "ml",
            TaskState::Finished,
            Some(1),
            1000,
            2048,
        ),
        ("ml.4", "eval", "ml", TaskState::Killed, Some(3), 1000, 2048),
        ("http.1", "sh", "http", TaskState::Running, Some(1), 100, 0),
        (
            "http.2",
            "sleep",
            "http",
            TaskState::Finished,
            Some(0),
            100,
            0,
        ),
    ];
    rows.iter()
        .map(|(id, name, fw, state, node, cpu, mem)| TaskRow {
            task_id: task_id(id),
            name: (*name).into(),
            framework: fw_id(fw),
            state: *state,
            node: node.map(|i| node_id(NODES[i].0)),
            exit_code: match state {
                TaskState::Finished => Some(0),
                TaskState::Failed => Some(2),
                TaskState::Killed => Some(143),
                _ => None,
            },
            resources: Resources::cpu_mem(*cpu, *mem),
            reason: match state {
                TaskState::Failed => Some("exited with status 2".into()),
                TaskState::Lost => Some("node-e stopped answering".into()),
                _ => None,
            },
        })
        .collect()
}

/// A realistic cluster: 5 nodes (one dead: node-d), 20 tasks, 4 frameworks.
pub fn cluster_snapshot() -> (ApiSnapshot, Vec<TaskRow>) {
    let tasks = task_table();
    let nodes: Vec<NodeRow> = NODES
        .iter()
        .enumerate()
        .map(|(i, (id, zone, cpu, mem))| {
            let used = tasks
                .iter()
                .filter(|t| {
                    t.node.as_ref().map(NodeId::as_str) == Some(*id) && !t.state.is_terminal()
                })
                .fold(Resources::ZERO, |acc, t| acc.saturating_add(&t.resources));
            let total = Resources {
                cpu_millis: *cpu,
                mem_mib: *mem,
                disk_mib: 102_400,
                gpus: u32::from(*id == "node-c"),
                ports: 1000,
            };
            let mut attrs = Attributes::default();
            attrs.insert("os", "linux");
            attrs.insert("arch", "x86_64");
            attrs.insert("zone", *zone);
            attrs.insert("hostname", format!("{id}.example.internal"));
            attrs.insert("rack", format!("r{}", i % 2 + 1));
            NodeRow {
                id: node_id(id),
                addr: format!("10.0.0.{}:7400", i + 11),
                alive: *id != "node-d",
                total,
                free: total.saturating_sub(&used),
                attrs,
            }
        })
        .collect();
    let frameworks = vec![
        // Homed here (node-a): connection known. Elsewhere: not gossiped.
        fw("batch", "batch", 1, "node-a", 0.25, 4, Some(true)),
        fw("web", "web", 2, "node-b", 0.15, 4, None),
        fw("ml", "ml", 1, "node-c", 0.333, 2, None),
        fw("http", "http", 1, "node-a", 0.002, 1, Some(false)),
    ];
    let snapshot = ApiSnapshot {
        node_id: node_id("node-a"),
        nodes,
        // This node's own tasks: those homed or running on node-a.
        tasks: tasks
            .iter()
            .filter(|t| {
                t.node.as_ref().map(NodeId::as_str) == Some("node-a")
                    || t.framework.as_str() == "batch"
                    || t.framework.as_str() == "http"
            })
            .cloned()
            .collect(),
        frameworks,
        cells: vec![CellRow {
            id: "cell-0".into(),
            members: 5,
            alive: 4,
            home: true,
            imported: false,
            gateways: Vec::new(),
            cpus_total: 40.0,
            cpus_free: 12.5,
            mem_total_mib: 163_840,
            mem_free_mib: 90_000,
        }],
        cell: None,
        produced_at: SystemTime::now(),
    };
    (snapshot, tasks)
}

fn fw(
    id: &str,
    name: &str,
    weight: u32,
    home: &str,
    share: f64,
    active: u32,
    connected: Option<bool>,
) -> FrameworkRow {
    FrameworkRow {
        id: fw_id(id),
        name: name.into(),
        weight,
        home_node: Some(node_id(home)),
        dominant_share: share,
        allocated: Resources::cpu_mem((share * 44_000.0) as u64, (share * 131_072.0) as u64),
        active_tasks: active,
        connected,
    }
}
