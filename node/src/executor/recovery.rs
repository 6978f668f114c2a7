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
//!
//! # Corrupt checkpoints
//! A checkpoint that cannot be read (invalid or truncated JSON, another
//! version) is moved aside by `checkpoint::load_all`, and its task is
//! accounted for here, never dropped (issue 12). Its id comes from the
//! file's name; its sandbox holds the rest:
//! - with the launch record (`.agora/request.json`, written at launch) and
//!   a live supervisor (found by its command line, `agora __supervise
//!   SANDBOX`), the checkpoint is rebuilt and the task re-attached. A kill
//!   that was in progress is forgotten (its deadline was in the
//!   checkpoint): the task runs until killed again;
//! - otherwise, when its supervisor recorded how it ended (`exit.json`),
//!   it ended that way and is reported so;
//! - otherwise whatever is left of it (its process group from
//!   `process.json`, its supervisor's session, its cgroups) is killed and
//!   it is reported `lost`, the reason naming the corrupt checkpoint. The
//!   request it is reported with is rebuilt from `launch.json` (command,
//!   framework, ports) and the id (home node); its resources are unknown
//!   and read as zero.
//!
//! A concluded task is reported once (`Recovered::Ended`) and not retained:
//! no new checkpoint is written for it, so the next open is quiet, and its
//! sandbox (with its logs) is an orphan the GC removes after its grace.

use super::checkpoint::{self, Checkpoint, Corrupt};
use super::fsutil::{
    LAUNCH_FILE, Layout, ProcRef, REQUEST_FILE, find_supervisor, kill_leftovers, unix_ms,
};
use super::gc::{self, Candidate, GcPolicy, Retained};
use super::status::final_status;
use super::supervisor::{LaunchSpec, read_exit, read_process};
use super::{EndedTask, LaunchRequest, cgroup, monitor};
use agora_protocol::ids::{FrameworkId, NodeId, TaskId};
use agora_protocol::resources::Resources;
use agora_protocol::task::{Command, TaskSpec, TaskState, TaskStatus};
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

/// The checkpoints, sorted out.
pub(crate) struct Scan {
    /// Tasks whose supervisor still runs.
    pub running: Vec<(Checkpoint, ProcRef)>,
    /// Ended tasks, each with true when the agent must hear of it now.
    pub ended: Vec<(Retained, bool)>,
    /// Tasks of corrupt checkpoints that could not be re-attached, with how
    /// they ended: the agent hears of each once; none is retained (no
    /// checkpoint is written for them, so the next open does not report
    /// them again, and their sandboxes are orphans for the GC).
    pub concluded: Vec<(LaunchRequest, TaskStatus)>,
}

/// Reads and sorts out every checkpoint (blocking); concludes tasks whose
/// supervisor is gone, accounts for the tasks of corrupt checkpoints (see
/// the module docs), and records the deliveries about to be made.
/// `task_dirs` names a task's cgroup directories on this node.
///
/// # Errors
/// The checkpoint directory cannot be read.
pub(crate) fn scan(
    layout: &Layout,
    node: &NodeId,
    policy: &GcPolicy,
    task_dirs: &dyn Fn(&str) -> Vec<PathBuf>,
) -> io::Result<Scan> {
    let mut running = Vec::new();
    // (checkpoint, to deliver, delivery already recorded)
    let mut ended: Vec<(Checkpoint, bool, bool)> = Vec::new();
    let mut concluded = Vec::new();
    let loaded = checkpoint::load_all(layout, policy)?;
    for bad in &loaded.corrupt {
        match rebuild(layout, node, bad, task_dirs) {
            Some(Rebuilt::Running(cp, sup)) => running.push((cp, sup)),
            Some(Rebuilt::Concluded(request, status)) => concluded.push((request, status)),
            None => {}
        }
    }
    for cp in loaded.good {
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
        concluded,
    })
}

/// What a corrupt checkpoint's task turned out to be.
enum Rebuilt {
    /// Re-attached: its supervisor runs.
    Running(Checkpoint, ProcRef),
    /// Concluded: how it ended, to deliver once.
    Concluded(LaunchRequest, TaskStatus),
}

/// Accounts for the task of a corrupt checkpoint (see the module docs).
/// Blocking; writes the new checkpoint.
fn rebuild(
    layout: &Layout,
    node: &NodeId,
    bad: &Corrupt,
    task_dirs: &dyn Fn(&str) -> Vec<PathBuf>,
) -> Option<Rebuilt> {
    let task_id = match bad.task_name().map(TaskId::new) {
        Some(Ok(id)) => id,
        Some(Err(e)) => {
            tracing::warn!(checkpoint = %bad.aside.display(), "a corrupt checkpoint's file name is no task id ({e}): no task to account for");
            return None;
        }
        None => {
            tracing::warn!(checkpoint = %bad.aside.display(), "a corrupt checkpoint's file name names no task: no task to account for");
            return None;
        }
    };
    let sandbox = layout.sandbox(task_id.as_str());
    let meta = layout.meta(task_id.as_str());
    let recorded = read_request(&meta).filter(|r| r.task_id == task_id);
    let supervisor = find_supervisor(&sandbox);
    let cgroups: Vec<PathBuf> = task_dirs(task_id.as_str())
        .into_iter()
        .filter(|d| d.exists())
        .collect();
    if let (Some(request), Some(sup)) = (&recorded, &supervisor) {
        let mut cp = Checkpoint::new(request.clone());
        cp.supervisor = Some(sup.clone());
        cp.started = read_process(&meta).is_some();
        cp.cgroups = cgroups;
        if let Err(e) = cp.save(layout) {
            tracing::warn!(task = %task_id, "cannot write the rebuilt checkpoint: {e}; the task is re-attached, but an agent restart before it ends finds no checkpoint for it");
        }
        tracing::warn!(
            task = %task_id,
            supervisor = sup.pid,
            "{}: the task was rebuilt from its sandbox and re-attached to its supervisor \
             (a kill that was in progress, if any, is forgotten: kill it again)",
            bad.describe()
        );
        return Some(Rebuilt::Running(cp, sup.clone()));
    }
    let why_not = if !sandbox.exists() {
        "its sandbox is gone"
    } else if recorded.is_none() {
        "its sandbox has no launch record (.agora/request.json)"
    } else {
        "its supervisor is gone"
    };
    let request = recorded.unwrap_or_else(|| guess_request(&meta, &task_id, node));
    let exit = read_exit(&meta);
    let oom = cgroup::oom_killed(&cgroups);
    let status = match exit {
        Some(exit) => final_status(node, &request, Some(exit), None, oom, None),
        None => {
            let task = read_process(&meta);
            let (n, left) = kill_leftovers(task.as_ref(), supervisor.as_ref(), &cgroups);
            let mut reason = format!(
                "{}; the task could not be re-attached: {why_not}",
                bad.describe()
            );
            if let Some(killed) = monitor::killed_note(task.as_ref(), n, left) {
                reason.push_str(&format!("; {killed}"));
            }
            TaskStatus::new(task_id.clone(), TaskState::Lost, Some(node.clone()))
                .with_reason(reason)
        }
    };
    tracing::warn!(task = %task_id, state = %status.state, reason = ?status.reason, "the task of a corrupt checkpoint is concluded and reported");
    cgroup::remove(&cgroups);
    Some(Rebuilt::Concluded(request, status))
}

/// The launch record the executor wrote in a sandbox's meta dir.
fn read_request(meta: &Path) -> Option<LaunchRequest> {
    let bytes = std::fs::read(meta.join(REQUEST_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A request to report a task with when its launch record is gone: the
/// command, framework and ports from `launch.json` (what the supervisor
/// ran), the framework from the id otherwise, its home from the
/// framework's id (this node when no id names one), resources unknown.
fn guess_request(meta: &Path, task_id: &TaskId, node: &NodeId) -> LaunchRequest {
    let launch: Option<LaunchSpec> = std::fs::read(meta.join(LAUNCH_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let env = |key: &str| {
        launch
            .as_ref()?
            .env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let framework = env("AGORA_FRAMEWORK_ID")
        .and_then(|f| FrameworkId::new(f).ok())
        .or_else(|| FrameworkId::new(task_id.framework_part()).ok())
        .unwrap_or_else(|| FrameworkId::new("unknown").expect("a valid id"));
    let home = framework
        .home()
        .or_else(|| task_id.home())
        .unwrap_or_else(|| node.clone());
    let command = match &launch {
        Some(l) => Command::Argv(
            std::iter::once(l.program.clone())
                .chain(l.args.iter().cloned())
                .collect(),
        ),
        None => Command::Shell(String::new()),
    };
    let ports = env("AGORA_PORTS")
        .map(|p| p.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    LaunchRequest {
        task_id: task_id.clone(),
        framework,
        weight: 1,
        home,
        spec: TaskSpec::new("unknown", command, Resources::ZERO),
        ports,
    }
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
