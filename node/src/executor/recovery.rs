//! What `Executor::open` finds in the checkpoints: tasks to re-attach,
//! tasks whose supervisor is gone (concluded here), and ended tasks, with
//! which of those the agent has never been told about.
//!
//! An ended task whose delivery is not recorded yet (it ended while no
//! executor was open, or was written by a version that did not record
//! deliveries) is returned for `Recovered::Ended` and its checkpoint marked
//! delivered, one atomic write each, unless the garbage collector is about
//! to delete it anyway (past the count or age, or the disk is too full):
//! then the write is skipped, so upgrading a node with a large backlog of
//! old checkpoints does not cost one fsync per task it is about to delete.
//! Such a task is reported once more if the agent restarts before the GC
//! has removed it.

use super::checkpoint::{self, Checkpoint};
use super::fsutil::{Layout, ProcRef, unix_ms};
use super::gc::{self, Candidate, GcPolicy, Retained};
use super::{EndedTask, monitor};
use agora_protocol::ids::{NodeId, TaskId};
use std::collections::HashSet;
use std::io;

/// The checkpoints, sorted out.
pub(crate) struct Scan {
    /// Tasks whose supervisor still runs.
    pub running: Vec<(Checkpoint, ProcRef)>,
    /// Ended tasks, each with true when the agent must hear of it now.
    pub ended: Vec<(Retained, bool)>,
}

/// Reads and sorts out every checkpoint (blocking); concludes tasks whose
/// supervisor is gone, and records the deliveries about to be made.
///
/// # Errors
/// The checkpoint directory cannot be read.
pub(crate) fn scan(layout: &Layout, node: &NodeId, policy: &GcPolicy) -> io::Result<Scan> {
    let mut running = Vec::new();
    // (checkpoint, to deliver, delivery already recorded)
    let mut ended: Vec<(Checkpoint, bool, bool)> = Vec::new();
    for cp in checkpoint::load_all(layout, policy)? {
        if cp.ended.is_some() {
            let deliver = !cp.reported;
            ended.push((cp, deliver, !deliver));
            continue;
        }
        match cp.supervisor.clone().filter(ProcRef::is_alive) {
            Some(sup) => running.push((cp, sup)),
            // Saved with the delivery recorded.
            None => ended.push((monitor::conclude_offline(layout, node, cp), true, true)),
        }
    }
    let retained: Vec<Retained> = ended
        .iter()
        .filter_map(|(cp, _, _)| {
            let status = cp.ended.clone()?;
            Some(Retained::measure(
                layout,
                EndedTask {
                    request: cp.request.clone(),
                    status,
                    ended_unix_ms: cp.ended_at(),
                },
            ))
        })
        .collect();
    let doomed = doomed(layout, policy, &retained);
    let mut out = Vec::with_capacity(retained.len());
    for ((mut cp, deliver, recorded), r) in ended.into_iter().zip(retained) {
        if deliver && !recorded && !doomed.contains(&cp.request.task_id) {
            cp.reported = true;
            if let Err(e) = cp.save(layout) {
                tracing::warn!(task = %cp.request.task_id, "cannot record that the task's end was reported: {e}; the next start reports it again");
            }
        }
        out.push((r, deliver));
    }
    Ok(Scan {
        running,
        ended: out,
    })
}

/// The ended tasks the garbage collector will delete in its next passes
/// (what its first pass would do, without the per-pass bound; leftovers
/// count, since under disk pressure what they free spares ended tasks).
/// Every task has a checkpoint at this point, so a sandbox without one is
/// no task's.
fn doomed(layout: &Layout, policy: &GcPolicy, retained: &[Retained]) -> HashSet<TaskId> {
    let candidates: Vec<Candidate> = retained.iter().map(Retained::candidate).collect();
    let disk = gc::measure_disk(layout, policy);
    let found = gc::find_leftovers(layout, policy, disk, |name| {
        layout.checkpoints().join(format!("{name}.json")).exists()
    });
    let unbounded = GcPolicy {
        max_per_pass: usize::MAX,
        ..policy.clone()
    };
    gc::plan(unix_ms(), &candidates, &found, &unbounded, disk)
        .tasks
        .into_iter()
        .collect()
}
