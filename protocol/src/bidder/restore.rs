//! A bidder after its home node restarted: the tasks its home kept in its
//! journal come back ([`Bidder::restore_tasks`]) and wait, until the restore
//! window ends, for the nodes that run them to report; what no node
//! reported by then is placed again (it was never placed) or reported lost
//! (it was placed on a node that is gone).

use super::{Bidder, Phase, Task, Timer};
use crate::ids::{NodeId, TaskId};
use crate::task::{TaskSpec, TaskState, TaskStatus};
use crate::time::Instant;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A task of a framework as its home node keeps it on disk, so that a
/// restarted home knows it again ([`Bidder::journal`] writes the list,
/// [`Bidder::restore_tasks`] reads it back).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Journaled {
    /// The task.
    pub task_id: TaskId,
    /// What it runs (an adopted task's spec is empty: its home never had it).
    pub spec: TaskSpec,
    /// The node it was last known placed on, if any.
    pub placed_on: Option<NodeId>,
    /// The terminal status its framework was told, once it ended.
    pub ended: Option<TaskStatus>,
}

impl<R: Rng> Bidder<R> {
    /// Takes back the tasks the run before kept in its home's journal (call
    /// after [`Bidder::restored`]). An ended one answers reconciles with the
    /// state its framework was told, so no second terminal state is ever
    /// told for it. An unfinished one waits for the restore window: the
    /// first node that reports it running owns it (any other is told to
    /// kill it); if none did by the window's end, a task that was placed is
    /// reported lost and one that was not is placed again, as if just
    /// submitted. Tasks of this run, or already known, are skipped.
    pub fn restore_tasks(&mut self, now: Instant, tasks: Vec<Journaled>) {
        let mut waiting = false;
        for j in tasks {
            if !self.of_earlier_run(&j.task_id) || self.tasks.contains_key(&j.task_id) {
                continue;
            }
            let timeout = self.timeout_of(&j.spec);
            let mut task = Task {
                spec: j.spec,
                state: TaskState::Staging,
                phase: Phase::Restoring {
                    placed_on: j.placed_on.clone(),
                },
                submitted: now,
                deadline: now + timeout,
                next_try: now,
                attempts: 0,
                pinned: None,
                last_reject: None,
                kill_requested: false,
                node: j.placed_on,
                exit_code: None,
                reason: None,
                confirm_timer: None,
                holds: Vec::new(),
                burst: false,
            };
            match j.ended {
                Some(s) if s.state.is_terminal() => {
                    task.state = s.state;
                    task.phase = Phase::Ended;
                    task.node = s.node;
                    task.exit_code = s.exit_code;
                    task.reason = s.reason;
                    self.tasks.insert(j.task_id.clone(), task);
                    self.ended.push_back(j.task_id);
                    while self.ended.len() > self.config.keep_ended {
                        if let Some(old) = self.ended.pop_front() {
                            self.tasks.remove(&old);
                        }
                    }
                }
                _ => {
                    if self.active >= self.config.max_active_tasks {
                        continue;
                    }
                    self.tasks.insert(j.task_id, task);
                    self.active += 1;
                    self.stats.restored += 1;
                    waiting = true;
                }
            }
        }
        if waiting {
            self.timers
                .insert((self.restored_until.max(now), Timer::RestoreEnd));
        }
    }

    /// What this bidder's home must keep on disk to restore it: every task
    /// it tracks, unfinished ones with their spec and node, ended ones with
    /// the status told (at most `keep_ended` of them), in id order.
    pub fn journal(&self) -> Vec<Journaled> {
        let mut out: Vec<Journaled> = self
            .tasks
            .iter()
            .map(|(id, t)| {
                let placed_on = match &t.phase {
                    Phase::Placed { node } => Some(node.clone()),
                    Phase::Restoring { placed_on } => placed_on.clone(),
                    _ => None,
                };
                let ended = t.state.is_terminal().then(|| Self::status(id, t));
                Journaled {
                    task_id: id.clone(),
                    spec: t.spec.clone(),
                    placed_on,
                    ended,
                }
            })
            .collect();
        out.sort_unstable_by(|a, b| a.task_id.cmp(&b.task_id));
        out
    }

    /// The restore window ended: what no node reported is placed again or
    /// reported lost (see [`Bidder::restore_tasks`]).
    pub(super) fn restore_window_ended(&mut self, now: Instant) {
        let mut left: Vec<(TaskId, Option<NodeId>)> = self
            .tasks
            .iter()
            .filter_map(|(id, t)| match &t.phase {
                Phase::Restoring { placed_on } => Some((id.clone(), placed_on.clone())),
                _ => None,
            })
            .collect();
        left.sort_unstable();
        let home = self.home.clone();
        for (task_id, placed_on) in left {
            match placed_on {
                Some(node) => {
                    self.stats.lost_in_restart += 1;
                    self.end(
                        &task_id,
                        TaskState::Lost,
                        None,
                        Some(format!(
                            "its home node {home} restarted and its node {node} did not report \
                             it running: it ended while its home was down, or its node is gone"
                        )),
                    );
                }
                None => {
                    self.stats.replaced_after_restart += 1;
                    let timeout = match self.tasks.get(&task_id) {
                        Some(t) => self.timeout_of(&t.spec),
                        None => continue,
                    };
                    if let Some(t) = self.tasks.get_mut(&task_id) {
                        t.submitted = now;
                        t.deadline = now + timeout;
                    }
                    self.retry_later(now, &task_id, Duration::ZERO);
                }
            }
        }
    }

    /// How long `spec` may wait for a place.
    pub(super) fn timeout_of(&self, spec: &TaskSpec) -> Duration {
        if spec.placement_timeout_ms > 0 {
            Duration::from_millis(u64::from(spec.placement_timeout_ms))
        } else {
            self.config.placement_timeout
        }
    }
}
