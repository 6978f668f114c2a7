//! How a node merges task listings from several nodes into one row per
//! task. Several nodes can hold a row for one task (its home's bidder, the
//! node that runs it, a witness of a dead home), so which row is shown is a
//! rule of the protocol, not of a shell:
//! - the row the task's home answered stands over every other node's (the
//!   home hears every status; a witness that still holds it dead would
//!   otherwise turn its running tasks `lost`);
//! - otherwise the most advanced state wins (a terminal state over running
//!   over starting over staging; then a row with an exit code, then one
//!   with a node).

use crate::ids::{NodeId, TaskId};
use crate::task::TaskState;
use crate::wire::TaskRow;
use std::collections::{BTreeMap, BTreeSet};

/// Rows merged from several nodes' answers, one per task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    rows: BTreeMap<TaskId, TaskRow>,
    /// Tasks whose home answered: its row stands.
    from_home: BTreeSet<TaskId>,
}

fn rank(row: &TaskRow) -> (u8, bool, bool) {
    let r = match row.state {
        TaskState::Staging => 0,
        TaskState::Starting => 1,
        TaskState::Running => 2,
        TaskState::Finished | TaskState::Failed | TaskState::Killed | TaskState::Lost => 3,
    };
    (r, row.exit_code.is_some(), row.node.is_some())
}

impl Merged {
    /// Adds rows answered by `from` (None: this node's own rows, or rows
    /// whose source does not matter).
    pub fn add(&mut self, from: Option<&NodeId>, rows: impl IntoIterator<Item = TaskRow>) {
        for row in rows {
            if from.is_some() && row.task_id.home().as_ref() == from {
                self.from_home.insert(row.task_id.clone());
                self.rows.insert(row.task_id.clone(), row);
                continue;
            }
            if self.from_home.contains(&row.task_id) {
                continue;
            }
            match self.rows.get(&row.task_id) {
                Some(old) if rank(old) >= rank(&row) => {}
                _ => {
                    self.rows.insert(row.task_id.clone(), row);
                }
            }
        }
    }

    /// The merged row of a task.
    pub fn get(&self, task: &TaskId) -> Option<&TaskRow> {
        self.rows.get(task)
    }

    /// How many tasks.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, by task id.
    pub fn into_rows(self) -> BTreeMap<TaskId, TaskRow> {
        self.rows
    }
}

/// True when `row` is one of `node`'s own tasks: run there for a framework
/// homed there, so that only `node` (and its witness) knows it.
pub fn is_own(row: &TaskRow, node: &NodeId) -> bool {
    row.node.as_ref() == Some(node) && row.task_id.home().as_ref() == Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::FrameworkId;
    use crate::resources::Resources;

    fn row(id: &str, state: TaskState, node: Option<&str>) -> TaskRow {
        TaskRow {
            task_id: TaskId::new(id).unwrap(),
            name: "j".into(),
            framework: FrameworkId::new("f").unwrap(),
            state,
            node: node.map(|n| NodeId::new(n).unwrap()),
            exit_code: None,
            resources: Resources::ZERO,
            reason: None,
        }
    }

    #[test]
    fn most_advanced_row_wins() {
        let mut m = Merged::default();
        m.add(None, [row("f.1", TaskState::Running, None)]);
        m.add(None, [row("f.1", TaskState::Finished, Some("a"))]);
        m.add(None, [row("f.1", TaskState::Starting, None)]);
        assert_eq!(m.len(), 1);
        let id = TaskId::new("f.1").unwrap();
        assert_eq!(m.get(&id).unwrap().state, TaskState::Finished);
    }

    #[test]
    fn the_homes_row_stands_whichever_came_first() {
        let x = NodeId::new("x").unwrap();
        let w = NodeId::new("w").unwrap();
        let id = "f-00000001@x.1";
        for home_first in [true, false] {
            let mut m = Merged::default();
            let running = row(id, TaskState::Running, Some("x"));
            let lost = row(id, TaskState::Lost, Some("x"));
            if home_first {
                m.add(Some(&x), [running]);
                m.add(Some(&w), [lost]);
            } else {
                m.add(Some(&w), [lost]);
                m.add(Some(&x), [running]);
            }
            let t = TaskId::new(id).unwrap();
            assert_eq!(m.get(&t).unwrap().state, TaskState::Running, "{home_first}");
        }
        assert!(is_own(&row(id, TaskState::Running, Some("x")), &x));
        assert!(!is_own(&row(id, TaskState::Running, Some("w")), &x));
        assert!(!is_own(
            &row("g-00000001@y.1", TaskState::Running, Some("x")),
            &x
        ));
    }
}
