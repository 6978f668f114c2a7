//! Questions a client asks that other nodes must answer: `list_tasks`
//! (this node's tasks merged with every live peer's, ~2 s timeout, missing
//! answers skipped) and `read_log` (from whichever node ran the task). Each
//! gets an id local to this node, sent as the peer message's `request_id`;
//! answers are matched back by id and sender. At most [`MAX_QUERIES`] are
//! open at once.

use agora_protocol::wire::{LogStream, TaskRow};
use agora_protocol::{Instant, NodeId, TaskId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long a query waits for peers.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Most queries open at once.
pub const MAX_QUERIES: usize = 1024;
/// Most task rows returned to a client in one answer.
pub const MAX_ROWS: usize = 2000;

/// A `list_tasks` in progress.
#[derive(Debug)]
pub struct TaskQuery {
    /// The asking connection.
    pub conn: u64,
    /// The client's request id.
    pub request_id: u64,
    /// Rows so far, by task.
    pub rows: BTreeMap<TaskId, TaskRow>,
    /// Peers not yet answered.
    pub waiting: BTreeSet<NodeId>,
    /// When to answer regardless.
    pub deadline: Instant,
}

/// A `read_log` in progress.
#[derive(Debug)]
pub struct LogQuery {
    /// The asking connection.
    pub conn: u64,
    /// The client's request id.
    pub request_id: u64,
    /// The task.
    pub task_id: TaskId,
    /// Which file.
    pub stream: LogStream,
    /// Peers not yet answered.
    pub waiting: BTreeSet<NodeId>,
    /// The last error heard.
    pub last_error: Option<String>,
    /// When to give up.
    pub deadline: Instant,
}

/// Open queries.
#[derive(Debug, Default)]
pub struct Queries {
    next: u64,
    /// Task listings.
    pub tasks: BTreeMap<u64, TaskQuery>,
    /// Log reads.
    pub logs: BTreeMap<u64, LogQuery>,
}

impl Queries {
    /// A fresh query id, or None when too many are open.
    pub fn next_id(&mut self) -> Option<u64> {
        if self.tasks.len() + self.logs.len() >= MAX_QUERIES {
            return None;
        }
        self.next += 1;
        Some(self.next)
    }
}

fn rank(row: &TaskRow) -> (u8, bool, bool) {
    use agora_protocol::task::TaskState::*;
    let r = match row.state {
        Staging => 0,
        Starting => 1,
        Running => 2,
        Finished | Failed | Killed | Lost => 3,
    };
    (r, row.exit_code.is_some(), row.node.is_some())
}

/// Merges rows: for each task, the most advanced state wins.
pub fn merge_rows(into: &mut BTreeMap<TaskId, TaskRow>, rows: Vec<TaskRow>) {
    for row in rows {
        match into.get(&row.task_id) {
            Some(old) if rank(old) >= rank(&row) => {}
            _ => {
                into.insert(row.task_id.clone(), row);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::task::TaskState;
    use agora_protocol::{FrameworkId, Resources};

    fn row(state: TaskState, exit: Option<i32>) -> TaskRow {
        TaskRow {
            task_id: TaskId::new("f.1").unwrap(),
            name: "j".into(),
            framework: FrameworkId::new("f").unwrap(),
            state,
            node: None,
            exit_code: exit,
            resources: Resources::ZERO,
            reason: None,
        }
    }

    #[test]
    fn most_advanced_row_wins() {
        let mut m = BTreeMap::new();
        merge_rows(&mut m, vec![row(TaskState::Running, None)]);
        merge_rows(&mut m, vec![row(TaskState::Finished, Some(0))]);
        merge_rows(&mut m, vec![row(TaskState::Starting, None)]);
        assert_eq!(m.len(), 1);
        assert_eq!(m.values().next().unwrap().state, TaskState::Finished);
    }
}
