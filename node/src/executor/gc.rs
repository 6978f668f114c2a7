//! Garbage collection of ended tasks, after Nomad's client GC: an ended
//! task's checkpoint, sandbox (logs included) and entry in the ended-task
//! table are removed once it is past the retention count or age, or, while
//! the data dir's filesystem is fuller than a threshold, oldest first until
//! it is under it again. A running task is never collected. The same
//! passes remove what no retained task accounts for (`leftovers.rs`):
//! checkpoints and sandboxes set aside for inspection (by age and count,
//! and under disk pressure), orphan sandboxes and stale temp files (after a
//! grace).
//!
//! The decision is [`plan`], a pure function of the wall time, the retained
//! ended tasks, the leftovers and the disk usage ([`plan_gc`] for the
//! tasks, `leftovers::plan` for the rest), so it is tested on a virtual
//! clock with made-up usage. [`run`] is the shell: a tokio task that, at
//! start-up and then every [`GcPolicy::interval`], measures the disk
//! ([`disk_usage`], statvfs), lists the leftovers, plans, and removes at
//! most [`GcPolicy::max_per_pass`] tasks and leftovers; a pass that removed
//! that many is followed by another one after [`CATCH_UP`] instead of a
//! whole interval.
//!
//! Only tasks in the ended-task table are candidates. A monitor puts its
//! task there as its very last act, after the final checkpoint write and
//! after the final status was delivered, so the GC never races a monitor
//! writing the files it removes.

use super::EndedTask;
use super::fsutil::Layout;
use super::leftovers::{self, Leftover, Why};
use super::monitor::Shared;
use agora_protocol::ids::TaskId;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Pause before the next pass when a pass removed [`GcPolicy::max_per_pass`]
/// tasks and leftovers (a backlog, e.g. the checkpoints of an old version
/// that kept all).
pub(crate) const CATCH_UP: Duration = Duration::from_secs(1);

/// Most directory entries counted when measuring one sandbox: beyond that
/// the size is a lower bound (a disk-pressure pass then removes one task
/// more in its next pass, after measuring the disk again).
const MAX_WALK: usize = 100_000;

/// When ended tasks are collected. The defaults follow Nomad's client GC
/// where it has one (`gc_interval` 1 m; its `gc_disk_usage_threshold` is 80%,
/// ours 90% because the data dir usually shares a disk with the system).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    /// Most ended tasks kept; the oldest beyond it are collected
    /// (`--gc-max-ended`, default 1,000: a day of history for a node that
    /// ends a task every 90 s, while the table and the start-up scan of the
    /// checkpoints stay around a megabyte and a fraction of a second). Also
    /// the most files kept set aside for inspection (corrupt checkpoints
    /// and old sandboxes, counted apart from the ended tasks).
    pub max_ended: usize,
    /// Ended tasks older than this (by the time they ended), and files set
    /// aside for inspection longer than this, are collected (`--gc-max-age`,
    /// default 24 h: yesterday's failure can still be read with `agora logs`
    /// the next morning).
    pub max_age: Duration,
    /// While the data dir's filesystem is more than this percentage full
    /// (used / (used + available to unprivileged users), as `df` computes it),
    /// files set aside for inspection and then the oldest ended tasks are
    /// collected until it is not (`--gc-disk-percent`, default 90; 100
    /// turns this off).
    pub disk_percent: u8,
    /// Time between two passes (`--gc-interval`, default 60 s, Nomad's).
    pub interval: Duration,
    /// Most tasks and leftovers one pass removes, so a pass is a bounded
    /// amount of work (default 256; not a flag).
    pub max_per_pass: usize,
    /// A sandbox no task owns (an orphan, see `leftovers.rs`), or a stale
    /// checkpoint temp file, is removed once it has not been modified for
    /// this long, never sooner, not even when the disk is full (default
    /// 10 min; not a flag). The executor never collects the sandbox of a
    /// task it is launching or running whatever this is; the grace is a
    /// second guard, and how long `agora logs` still finds a task after
    /// [`super::Executor::forget`].
    pub orphan_grace: Duration,
}

impl Default for GcPolicy {
    fn default() -> GcPolicy {
        GcPolicy {
            max_ended: 1000,
            max_age: Duration::from_secs(24 * 3600),
            disk_percent: 90,
            interval: Duration::from_secs(60),
            max_per_pass: 256,
            orphan_grace: Duration::from_secs(600),
        }
    }
}

impl GcPolicy {
    /// What the log line of a file set aside for inspection says about how
    /// long it is kept.
    pub(crate) fn aside_note(&self) -> String {
        let mut note = format!(
            "kept for inspection until it is older than --gc-max-age {} or more than \
             --gc-max-ended {} newer files are set aside",
            human(self.max_age),
            self.max_ended
        );
        if self.disk_percent < 100 {
            note.push_str(&format!(
                ", or sooner while the data dir's disk is over {}% full",
                self.disk_percent
            ));
        }
        note
    }
}

/// A duration for log lines, in its largest whole unit: `24h`, `90s`, `10m`.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// An elapsed time for log lines, rounded down to a unit that keeps it
/// short: `850ms`, `42s`, `17m`, `5h`, `3d`.
pub(crate) fn rough(d: Duration) -> String {
    let s = d.as_secs();
    if s < 1 {
        format!("{}ms", d.as_millis())
    } else if s < 120 {
        format!("{s}s")
    } else if s < 2 * 3600 {
        format!("{}m", s / 60)
    } else if s < 2 * 86_400 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

/// How full a filesystem is, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DiskUsage {
    /// Bytes in use.
    pub used: u64,
    /// Bytes an unprivileged process can still use.
    pub avail: u64,
}

impl DiskUsage {
    /// Bytes to free before the usage is at most `percent`%.
    fn excess(&self, percent: u8) -> u64 {
        let total = u128::from(self.used) + u128::from(self.avail);
        let allowed = total * u128::from(percent.min(100)) / 100;
        u64::try_from(u128::from(self.used).saturating_sub(allowed)).unwrap_or(u64::MAX)
    }

    /// The usage once `bytes` more are free.
    fn after_freeing(self, bytes: u64) -> DiskUsage {
        let bytes = bytes.min(self.used);
        DiskUsage {
            used: self.used - bytes,
            avail: self.avail.saturating_add(bytes),
        }
    }
}

/// The usage of the filesystem holding `path` (statvfs).
///
/// # Errors
/// statvfs fails (e.g. `path` does not exist).
pub(crate) fn disk_usage(path: &Path) -> io::Result<DiskUsage> {
    let st = rustix::fs::statvfs(path)?;
    let block = st.f_frsize;
    Ok(DiskUsage {
        used: st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(block),
        avail: st.f_bavail.saturating_mul(block),
    })
}

/// An ended task the GC may collect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// The task.
    pub id: TaskId,
    /// When it ended (Unix milliseconds).
    pub ended_unix_ms: u64,
    /// What its sandbox and checkpoint take on disk.
    pub disk_bytes: u64,
}

/// The tasks to collect now, oldest first (by end time, then id), at most
/// `policy.max_per_pass`: those beyond the `max_ended` newest, those ended
/// more than `max_age` before `now_unix_ms`, and while `disk` is over
/// `disk_percent`, further ones, oldest first, until their `disk_bytes` add
/// up to the excess. Each rule picks a run of the oldest tasks, so the
/// result is always the oldest `k` candidates. `disk` is `None` when the
/// usage could not be measured (then only count and age apply).
pub(crate) fn plan_gc(
    now_unix_ms: u64,
    candidates: &[Candidate],
    policy: &GcPolicy,
    disk: Option<DiskUsage>,
) -> Vec<TaskId> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| (a.ended_unix_ms, &a.id).cmp(&(b.ended_unix_ms, &b.id)));
    let by_count = sorted.len().saturating_sub(policy.max_ended);
    let max_age_ms = u64::try_from(policy.max_age.as_millis()).unwrap_or(u64::MAX);
    let by_age = sorted
        .iter()
        .take_while(|c| now_unix_ms.saturating_sub(c.ended_unix_ms) > max_age_ms)
        .count();
    let mut k = by_count.max(by_age);
    if let Some(disk) = disk {
        let excess = disk.excess(policy.disk_percent);
        let mut freed: u64 = sorted[..k].iter().map(|c| c.disk_bytes).sum();
        while freed < excess && k < sorted.len() {
            freed = freed.saturating_add(sorted[k].disk_bytes);
            k += 1;
        }
    }
    sorted
        .into_iter()
        .take(k.min(policy.max_per_pass))
        .map(|c| c.id.clone())
        .collect()
}

/// What one pass removes.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    /// Ended tasks, oldest first.
    pub tasks: Vec<TaskId>,
    /// Leftovers, each with why (in `leftovers::plan`'s order).
    pub leftovers: Vec<(&'a Leftover, Why)>,
}

/// What to remove now: the leftovers `leftovers::plan` picks, and the ended
/// tasks [`plan_gc`] picks once what those leftovers free is counted as
/// free already (so under disk pressure, files set aside go before ended
/// tasks, which `agora ps` and `agora logs` still show). At most
/// `policy.max_per_pass` in all, tasks first, so leftovers that cannot be
/// removed never hold up the tasks.
pub(crate) fn plan<'a>(
    now_unix_ms: u64,
    candidates: &[Candidate],
    found: &'a [Leftover],
    policy: &GcPolicy,
    disk: Option<DiskUsage>,
) -> Plan<'a> {
    let excess = disk.map_or(0, |d| d.excess(policy.disk_percent));
    let mut picked = leftovers::plan(now_unix_ms, found, policy, excess);
    let freed = picked
        .iter()
        .fold(0u64, |sum, (l, _)| sum.saturating_add(l.disk_bytes));
    let tasks = plan_gc(
        now_unix_ms,
        candidates,
        policy,
        disk.map(|d| d.after_freeing(freed)),
    );
    picked.truncate(policy.max_per_pass.saturating_sub(tasks.len()));
    Plan {
        tasks,
        leftovers: picked,
    }
}

/// Lists the leftovers, measured when the disk is over the threshold
/// (blocking). `owned` as for `leftovers::list`.
pub(crate) fn find_leftovers(
    layout: &Layout,
    policy: &GcPolicy,
    disk: Option<DiskUsage>,
    owned: impl Fn(&str) -> bool,
) -> Vec<Leftover> {
    let mut found = leftovers::list(layout, owned);
    if disk.is_some_and(|d| d.excess(policy.disk_percent) > 0) {
        leftovers::measure(layout, &mut found);
    }
    found
}

/// Bytes a directory tree takes on disk (allocated blocks, symlinks not
/// followed), counting at most [`MAX_WALK`] entries; 0 when it is missing.
pub(crate) fn tree_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        total = total.saturating_add(meta.blocks().saturating_mul(512));
        seen += 1;
        if seen >= MAX_WALK {
            break;
        }
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&p)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    total
}

/// One retained ended task, with its size for disk-pressure decisions.
#[derive(Clone, Debug)]
pub(crate) struct Retained {
    /// What [`super::Executor::history`] returns for it.
    pub task: EndedTask,
    /// Its sandbox's and checkpoint's size when it ended.
    pub disk_bytes: u64,
}

impl Retained {
    /// Measures the task's files (blocking).
    pub fn measure(layout: &Layout, task: EndedTask) -> Retained {
        let id = task.request.task_id.as_str();
        let disk_bytes =
            tree_bytes(&layout.sandbox(id)).saturating_add(tree_bytes(&layout.checkpoint(id)));
        Retained { task, disk_bytes }
    }

    /// It as the GC plan sees it.
    pub fn candidate(&self) -> Candidate {
        Candidate {
            id: self.task.request.task_id.clone(),
            ended_unix_ms: self.task.ended_unix_ms,
            disk_bytes: self.disk_bytes,
        }
    }
}

/// Removes a task's sandbox, then its checkpoint (blocking). A sandbox that
/// cannot be removed is left behind with a warning naming it; the task is
/// forgotten all the same, so one stubborn directory never stalls the GC.
///
/// # Errors
/// The checkpoint exists and cannot be removed (the task stays retained).
pub(crate) fn remove_task_files(layout: &Layout, id: &TaskId) -> io::Result<()> {
    let sandbox = layout.sandbox(id.as_str());
    match std::fs::remove_dir_all(&sandbox) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            task = %id,
            sandbox = %sandbox.display(),
            "cannot remove the sandbox of a collected task: {e}; remove it by hand"
        ),
    }
    match std::fs::remove_file(layout.checkpoint(id.as_str())) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PassReport {
    /// Tasks removed.
    pub removed: usize,
    /// Leftovers removed.
    pub leftovers: usize,
    /// The disk was over the threshold with nothing to collect.
    pub starved: bool,
}

/// The usage of the data dir's disk, when the policy has a disk rule and
/// statvfs answers.
pub(crate) fn measure_disk(layout: &Layout, policy: &GcPolicy) -> Option<DiskUsage> {
    if policy.disk_percent >= 100 {
        return None;
    }
    match disk_usage(&layout.data_dir) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::debug!(data_dir = %layout.data_dir.display(), "statvfs failed: {e}; collecting by count and age only");
            None
        }
    }
}

/// One pass (blocking): plans and collects.
pub(crate) fn pass(shared: &Shared, policy: &GcPolicy, now_unix_ms: u64) -> PassReport {
    let candidates: Vec<Candidate> = shared
        .ended_table()
        .values()
        .map(Retained::candidate)
        .collect();
    let disk = measure_disk(&shared.layout, policy);
    let found = find_leftovers(&shared.layout, policy, disk, |name| {
        leftovers::owned_now(shared, name)
    });
    let plan = plan(now_unix_ms, &candidates, &found, policy, disk);
    let mut removed = 0;
    for id in &plan.tasks {
        match remove_task_files(&shared.layout, id) {
            Ok(()) => {
                shared.ended_table().remove(id);
                removed += 1;
            }
            Err(e) => tracing::warn!(
                task = %id,
                checkpoint = %shared.layout.checkpoint(id.as_str()).display(),
                "cannot remove the checkpoint of a collected task: {e}"
            ),
        }
    }
    let mut swept = 0;
    for (l, why) in &plan.leftovers {
        let path = l.path(&shared.layout);
        match leftovers::collect(shared, l, now_unix_ms) {
            Ok(false) => {}
            Ok(true) => {
                swept += 1;
                if *why != Why::Trash {
                    tracing::info!(
                        path = %path.display(),
                        "removed {}: {}",
                        l.what(),
                        why.describe(l, policy, now_unix_ms)
                    );
                }
            }
            Err(e) if *why == Why::Trash => {
                tracing::debug!(path = %path.display(), "cannot remove: {e}")
            }
            Err(e) => tracing::warn!(
                path = %path.display(),
                "cannot remove {}: {e}; remove it by hand if this repeats",
                l.what()
            ),
        }
    }
    if removed > 0 || swept > 0 {
        tracing::info!(
            removed,
            leftovers = swept,
            retained = shared.ended_table().len(),
            "collected ended tasks and leftovers"
        );
    }
    let starved = plan.tasks.is_empty()
        && plan.leftovers.is_empty()
        && disk.is_some_and(|d| d.excess(policy.disk_percent) > 0);
    PassReport {
        removed,
        leftovers: swept,
        starved,
    }
}

/// The GC task: a pass at once, then one every `policy.interval` (or after
/// [`CATCH_UP`] while a backlog remains), until the executor goes away.
/// Warns once each time the disk stays over the threshold with nothing left
/// to collect.
pub(crate) async fn run(shared: Arc<Shared>, policy: GcPolicy) {
    let mut was_starved = false;
    loop {
        let (s, p) = (Arc::clone(&shared), policy.clone());
        let report = tokio::task::spawn_blocking(move || pass(&s, &p, super::fsutil::unix_ms()))
            .await
            .unwrap_or_default();
        if report.starved && !was_starved {
            tracing::warn!(
                data_dir = %shared.layout.data_dir.display(),
                "the data dir's disk is over {}% full and nothing is left to collect; \
                 free space on it (running tasks' files, and sandboxes in their grace, are \
                 never collected)",
                policy.disk_percent
            );
        }
        was_starved = report.starved;
        let wait = if report.removed + report.leftovers >= policy.max_per_pass {
            CATCH_UP
        } else {
            policy.interval
        };
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: u64 = 3600 * 1000;

    fn c(id: &str, ended_unix_ms: u64, disk_bytes: u64) -> Candidate {
        Candidate {
            id: TaskId::new(id).unwrap(),
            ended_unix_ms,
            disk_bytes,
        }
    }

    fn ids(v: &[TaskId]) -> Vec<&str> {
        v.iter().map(TaskId::as_str).collect()
    }

    fn policy(max_ended: usize, max_age_h: u64) -> GcPolicy {
        GcPolicy {
            max_ended,
            max_age: Duration::from_secs(max_age_h * 3600),
            ..GcPolicy::default()
        }
    }

    #[test]
    fn the_oldest_beyond_the_count_are_collected() {
        let now = 100 * HOUR_MS;
        let ended = [
            c("d", now - 1, 0),
            c("a", now - 4, 0),
            c("c", now - 2, 0),
            c("b", now - 3, 0),
        ];
        assert_eq!(ids(&plan_gc(now, &ended, &policy(2, 24), None)), ["a", "b"]);
        assert!(plan_gc(now, &ended, &policy(4, 24), None).is_empty());
        assert_eq!(plan_gc(now, &ended, &policy(0, 24), None).len(), 4);
        // Same end time: the id breaks the tie, so the plan is deterministic.
        let tied = [c("y", 5, 0), c("x", 5, 0)];
        assert_eq!(ids(&plan_gc(10, &tied, &policy(1, 24), None)), ["x"]);
    }

    #[test]
    fn tasks_past_the_age_are_collected_on_a_virtual_clock() {
        let ended = [c("old", 0, 0), c("new", 20 * HOUR_MS, 0)];
        let p = policy(1000, 24);
        assert!(plan_gc(24 * HOUR_MS, &ended, &p, None).is_empty());
        assert_eq!(ids(&plan_gc(24 * HOUR_MS + 1, &ended, &p, None)), ["old"]);
        assert_eq!(
            ids(&plan_gc(45 * HOUR_MS, &ended, &p, None)),
            ["old", "new"]
        );
        // A clock behind the end times collects nothing by age.
        assert!(plan_gc(0, &ended, &p, None).is_empty());
    }

    #[test]
    fn over_the_disk_threshold_the_oldest_go_until_enough_is_freed() {
        let ended = [c("a", 1, 30), c("b", 2, 30), c("c", 3, 30), c("d", 4, 30)];
        let p = policy(1000, 24);
        // 95 of 100 bytes used, threshold 90: 5 bytes to free, one task does.
        let full = DiskUsage { used: 95, avail: 5 };
        assert_eq!(ids(&plan_gc(10, &ended, &p, Some(full))), ["a"]);
        // 150 of 200: fine at 90%.
        let fine = DiskUsage {
            used: 150,
            avail: 50,
        };
        assert!(plan_gc(10, &ended, &p, Some(fine)).is_empty());
        // 100 of 100 used, 10 to free, but the count already takes two.
        let p2 = policy(2, 24);
        let at_max = DiskUsage {
            used: 100,
            avail: 0,
        };
        assert_eq!(ids(&plan_gc(10, &ended, &p2, Some(at_max))), ["a", "b"]);
        // More excess than all tasks free: all of them.
        let huge = DiskUsage {
            used: 10_000,
            avail: 0,
        };
        assert_eq!(plan_gc(10, &ended, &p, Some(huge)).len(), 4);
        // 100% turns the disk rule off.
        let off = GcPolicy {
            disk_percent: 100,
            ..p.clone()
        };
        assert!(plan_gc(10, &ended, &off, Some(huge)).is_empty());
    }

    #[test]
    fn a_pass_is_bounded() {
        let ended: Vec<Candidate> = (0..10).map(|i| c(&format!("t{i}"), i, 0)).collect();
        let p = GcPolicy {
            max_per_pass: 3,
            ..policy(0, 24)
        };
        assert_eq!(ids(&plan_gc(100, &ended, &p, None)), ["t0", "t1", "t2"]);
    }

    fn aside(name: &str, since: u64, disk_bytes: u64) -> Leftover {
        Leftover {
            kind: leftovers::Kind::CorruptCheckpoint,
            name: name.to_string(),
            since_unix_ms: since,
            modified_unix_ms: since,
            disk_bytes,
            in_use: false,
        }
    }

    #[test]
    fn under_disk_pressure_files_set_aside_go_before_ended_tasks() {
        let now = 10 * HOUR_MS;
        let ended = [c("a", now - 3, 30), c("b", now - 2, 30)];
        // Newer than the tasks, and within age and count.
        let found = [aside("x.json.corrupt-1", now - 1, 30)];
        let p = policy(1000, 24);
        // 5 bytes over: the file set aside is enough.
        let full = DiskUsage { used: 95, avail: 5 };
        let plan1 = plan(now, &ended, &found, &p, Some(full));
        assert!(plan1.tasks.is_empty(), "{plan1:?}");
        assert_eq!(plan1.leftovers.len(), 1);
        assert_eq!(plan1.leftovers[0].1, Why::Disk);
        // 40 over (100 used, 60% allowed): it and then the oldest task.
        let full_at_60 = DiskUsage {
            used: 100,
            avail: 0,
        };
        let p60 = GcPolicy {
            disk_percent: 60,
            ..p.clone()
        };
        let plan2 = plan(now, &ended, &found, &p60, Some(full_at_60));
        assert_eq!(ids(&plan2.tasks), ["a"]);
        assert_eq!(plan2.leftovers.len(), 1);
        // Below the threshold, nothing.
        let fine = DiskUsage {
            used: 10,
            avail: 90,
        };
        let plan3 = plan(now, &ended, &found, &p, Some(fine));
        assert!(plan3.tasks.is_empty() && plan3.leftovers.is_empty());
    }

    #[test]
    fn a_pass_takes_tasks_first_and_leftovers_within_what_is_left_of_the_bound() {
        let ended: Vec<Candidate> = (0..3).map(|i| c(&format!("t{i}"), i, 0)).collect();
        let found: Vec<Leftover> = (0..5)
            .map(|i| aside(&format!("f{i}.json.corrupt-{i}"), i, 0))
            .collect();
        let p = GcPolicy {
            max_per_pass: 4,
            ..policy(0, 24)
        };
        let planned = plan(100, &ended, &found, &p, None);
        assert_eq!(ids(&planned.tasks), ["t0", "t1", "t2"]);
        assert_eq!(planned.leftovers.len(), 1);
        assert_eq!(planned.leftovers[0].0.name, "f0.json.corrupt-0");
        let p = GcPolicy {
            max_per_pass: 2,
            ..p
        };
        let planned = plan(100, &ended, &found, &p, None);
        assert_eq!(planned.tasks.len(), 2);
        assert!(planned.leftovers.is_empty());
    }

    #[test]
    fn durations_are_said_in_their_largest_whole_unit() {
        assert_eq!(human(Duration::from_secs(86_400)), "1d");
        assert_eq!(human(Duration::from_secs(7200)), "2h");
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_secs(90)), "90s");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human(Duration::ZERO), "0ms");
        assert_eq!(rough(Duration::from_millis(3_602_850)), "60m");
        assert_eq!(rough(Duration::from_millis(1009)), "1s");
        assert_eq!(rough(Duration::from_secs(3 * 86_400 + 5)), "3d");
        let note = GcPolicy::default().aside_note();
        assert!(
            note.contains("--gc-max-age 1d") && note.contains("90% full"),
            "{note}"
        );
    }

    #[test]
    fn the_data_dirs_disk_usage_is_read_with_statvfs() {
        let dir = tempfile::tempdir().unwrap();
        let before = disk_usage(dir.path()).unwrap();
        assert!(before.used + before.avail > 0, "{before:?}");
        let err = disk_usage(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn tree_bytes_counts_what_files_take() {
        let dir = tempfile::tempdir().unwrap();
        let empty = tree_bytes(dir.path());
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/log"), vec![7u8; 64 * 1024]).unwrap();
        assert!(tree_bytes(dir.path()) >= empty + 64 * 1024);
        assert_eq!(tree_bytes(&dir.path().join("missing")), 0);
    }
}
