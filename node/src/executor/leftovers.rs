//! Leftovers: what the executor leaves under its data dir that no retained
//! task accounts for, and how the garbage collector (`gc.rs`) removes it.
//!
//! | leftover | left by | removed |
//! |---|---|---|
//! | `tasks/NAME.json.corrupt-UNIXMS` | `checkpoint::load_all` at open: a checkpoint that cannot be read, has another version, or describes another task | kept for an operator to inspect: once set aside longer than [`GcPolicy::max_age`], or when more than [`GcPolicy::max_ended`] files are set aside (the oldest), or while the disk is too full |
//! | `sandboxes/NAME.old-UNIXMS` | a launch that found a sandbox for its task id already (an orphan, below, of an earlier task with that id, e.g. one forgotten) | the same, counted with the above |
//! | `sandboxes/NAME`, an *orphan*: no checkpoint `tasks/NAME.json`, and its task is not launching, running or in the ended-task table | [`super::Executor::forget`], which keeps the sandbox; a checkpoint set aside as corrupt; a launch that failed before or while writing its checkpoint (the ended-task table then holds the task until the executor stops); a crash between creating the sandbox and writing the checkpoint; a sandbox the GC or [`super::Executor::purge`] could not remove | once not modified for [`GcPolicy::orphan_grace`] |
//! | `tasks/.NAME.json.tmp` | a checkpoint write that failed while the executor runs, e.g. on a full disk (`load_all` removes those a crash leaves, at open) | once not modified for the grace, unless NAME's task is active |
//! | `sandboxes/.gc-NAME-UNIXMS` | the GC itself: a leftover it renamed out of the way and could not remove | by every pass |
//!
//! A sandbox whose task process is still alive (`.agora/process.json`) is
//! never removed, whatever else holds: a task whose checkpoint was set
//! aside can still be running. Within the grace nothing that has one is
//! removed, not even when the disk is full; past it, orphans go at once.
//!
//! # Never the sandbox of a task being launched or running
//! A launch adds its task to the executor's active set ([`Shared::active`])
//! before its monitor creates the sandbox; a task leaves the set only once
//! it is in the ended-task table (or its monitor stopped with the executor,
//! its checkpoint written). To remove a sandbox, the GC holds the active
//! set's lock while it checks that no task in the active set or the ended
//! table, and no checkpoint, has that name, and renames the sandbox to
//! `.gc-NAME-UNIXMS`, which no task can own (see
//! [`super::fsutil::TRASH_PREFIX`]); it removes the renamed tree after
//! releasing the lock. So a launch is either registered before the check
//! (and its sandbox stays) or creates a fresh sandbox after the rename. The
//! grace is a second guard, not what makes this safe.
//!
//! [`plan`] is the decision, a pure function tested on a virtual clock;
//! [`list`], [`measure`] and [`collect`] are the blocking shell that
//! `gc::pass` (and, for its forecast, `recovery::scan`) calls.

use super::fsutil::{
    CORRUPT_TAG, Layout, META_DIR, OLD_TAG, TRASH_PREFIX, modified_unix_ms, parse_aside, task_of,
};
use super::gc::{GcPolicy, human, rough, tree_bytes};
use super::monitor::Shared;
use super::supervisor::read_process;
use agora_protocol::ids::TaskId;
use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What a leftover is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// `tasks/NAME.json.corrupt-UNIXMS`.
    CorruptCheckpoint,
    /// `sandboxes/NAME.old-UNIXMS`.
    OldSandbox,
    /// `sandboxes/NAME` that no task owns.
    Orphan,
    /// `tasks/.NAME.json.tmp`.
    TempFile,
    /// `sandboxes/.gc-NAME-UNIXMS`.
    Trash,
}

impl Kind {
    /// Set aside for an operator to inspect: kept by age and count.
    fn is_aside(self) -> bool {
        matches!(self, Kind::CorruptCheckpoint | Kind::OldSandbox)
    }

    /// Never removed while modified within [`GcPolicy::orphan_grace`].
    fn has_grace(self) -> bool {
        matches!(self, Kind::OldSandbox | Kind::Orphan | Kind::TempFile)
    }

    /// The directory it is in.
    fn dir(self, layout: &Layout) -> PathBuf {
        match self {
            Kind::CorruptCheckpoint | Kind::TempFile => layout.checkpoints(),
            Kind::OldSandbox | Kind::Orphan | Kind::Trash => layout.sandboxes(),
        }
    }

    /// For log lines.
    fn what(self) -> &'static str {
        match self {
            Kind::CorruptCheckpoint => "a checkpoint set aside as corrupt",
            Kind::OldSandbox => "a sandbox set aside by a launch",
            Kind::Orphan => "an orphan sandbox (no checkpoint, no task)",
            Kind::TempFile => "a stale checkpoint temp file",
            Kind::Trash => "a leftover the GC had set to remove",
        }
    }
}

/// One leftover, as [`plan`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Leftover {
    /// What it is.
    pub kind: Kind,
    /// Its file name in `tasks/` or `sandboxes/`.
    pub name: String,
    /// When it was set aside (the time in its name), or for other kinds its
    /// modification time (Unix milliseconds).
    pub since_unix_ms: u64,
    /// Its modification time (Unix milliseconds).
    pub modified_unix_ms: u64,
    /// What it takes on disk ([`measure`]d only while the disk is over the
    /// threshold, 0 otherwise).
    pub disk_bytes: u64,
    /// A sandbox whose task process is alive.
    pub in_use: bool,
}

impl Leftover {
    /// Where it is.
    pub fn path(&self, layout: &Layout) -> PathBuf {
        self.kind.dir(layout).join(&self.name)
    }

    /// What it is, for log lines.
    pub fn what(&self) -> &'static str {
        self.kind.what()
    }
}

/// Why [`plan`] collects a leftover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// Set aside longer than [`GcPolicy::max_age`].
    Age,
    /// Older than the [`GcPolicy::max_ended`] newest set aside.
    Count,
    /// The data dir's disk is over [`GcPolicy::disk_percent`].
    Disk,
    /// Not modified for longer than [`GcPolicy::orphan_grace`].
    Grace,
    /// Renamed out of the way by an earlier pass.
    Trash,
}

impl Why {
    /// The end of the log line that says a leftover was removed.
    pub fn describe(self, l: &Leftover, policy: &GcPolicy, now_unix_ms: u64) -> String {
        let ago = |t: u64| rough(Duration::from_millis(now_unix_ms.saturating_sub(t)));
        match self {
            Why::Age => format!(
                "it was kept for inspection, set aside {} ago: longer than --gc-max-age {}",
                ago(l.since_unix_ms),
                human(policy.max_age)
            ),
            Why::Count => format!(
                "it was kept for inspection, but more than --gc-max-ended {} files are set aside and it was among the oldest",
                policy.max_ended
            ),
            Why::Disk => format!(
                "it was kept for inspection, but the data dir's disk is over --gc-disk-percent {}% full",
                policy.disk_percent
            ),
            Why::Grace => format!(
                "no task owns it and it was last modified {} ago (more than {})",
                ago(l.modified_unix_ms),
                human(policy.orphan_grace)
            ),
            Why::Trash => "an earlier pass could not remove it".to_string(),
        }
    }
}

/// The leftovers to remove now, in this order: trash; orphans and temp
/// files not modified within the grace; files set aside longer than
/// `max_age` or beyond the `max_ended` newest set aside (corrupt
/// checkpoints and old sandboxes counted together), oldest first (by the
/// time they were set aside, then kind and name); and while what these
/// free is less than `excess` bytes, further files set aside, oldest first,
/// until it is not. Sandboxes in use, and anything with a grace modified
/// within it, are never picked (they still count towards `max_ended`).
/// Not bounded by `max_per_pass` (see `gc::plan`).
pub(crate) fn plan<'a>(
    now_unix_ms: u64,
    leftovers: &'a [Leftover],
    policy: &GcPolicy,
    excess: u64,
) -> Vec<(&'a Leftover, Why)> {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let (grace, max_age) = (ms(policy.orphan_grace), ms(policy.max_age));
    let age = |t: u64| now_unix_ms.saturating_sub(t);
    let removable =
        |l: &Leftover| !l.in_use && (!l.kind.has_grace() || age(l.modified_unix_ms) > grace);
    let sorted = |keep: &dyn Fn(&Leftover) -> bool| {
        let mut v: Vec<&'a Leftover> = leftovers.iter().filter(|l| keep(l)).collect();
        v.sort_by(|a, b| {
            (a.since_unix_ms, a.kind, &a.name).cmp(&(b.since_unix_ms, b.kind, &b.name))
        });
        v
    };
    let mut out: Vec<(&Leftover, Why)> = sorted(&|l| l.kind == Kind::Trash)
        .into_iter()
        .map(|l| (l, Why::Trash))
        .collect();
    out.extend(
        sorted(&|l| matches!(l.kind, Kind::Orphan | Kind::TempFile) && removable(l))
            .into_iter()
            .map(|l| (l, Why::Grace)),
    );
    let aside = sorted(&|l| l.kind.is_aside());
    let by_count = aside.len().saturating_sub(policy.max_ended);
    let by_age = aside
        .iter()
        .take_while(|l| age(l.since_unix_ms) > max_age)
        .count();
    let mut spare = Vec::new();
    for (i, l) in aside.into_iter().enumerate() {
        if !removable(l) {
            continue;
        }
        if i < by_age {
            out.push((l, Why::Age));
        } else if i < by_count {
            out.push((l, Why::Count));
        } else {
            spare.push(l);
        }
    }
    let mut freed = out
        .iter()
        .fold(0u64, |sum, (l, _)| sum.saturating_add(l.disk_bytes));
    for l in spare {
        if freed >= excess {
            break;
        }
        freed = freed.saturating_add(l.disk_bytes);
        out.push((l, Why::Disk));
    }
    out
}

/// Every leftover in the data dir (blocking), sizes not measured. `owned`
/// says whether a name in `sandboxes/` belongs to a task (see
/// [`owned_now`]); such sandboxes are not leftovers. Names the executor
/// never makes are left alone.
pub(crate) fn list(layout: &Layout, owned: impl Fn(&str) -> bool) -> Vec<Leftover> {
    let mut out = Vec::new();
    let entries = |dir: PathBuf| {
        std::fs::read_dir(&dir)
            .map_err(|e| tracing::debug!(dir = %dir.display(), "cannot list: {e}"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let meta = e.path().symlink_metadata().ok()?;
                Some((e.file_name().to_string_lossy().into_owned(), meta))
            })
    };
    for (name, meta) in entries(layout.checkpoints()) {
        let modified = modified_unix_ms(&meta);
        let (kind, since) = if name.ends_with(".json") || !meta.is_file() {
            continue;
        } else if name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".json.tmp"))
            .is_some()
        {
            (Kind::TempFile, modified)
        } else if let Some((base, at)) = parse_aside(&name, CORRUPT_TAG)
            && base.ends_with(".json")
        {
            (Kind::CorruptCheckpoint, at)
        } else {
            continue;
        };
        out.push(leftover(kind, name, since, modified, false));
    }
    for (name, meta) in entries(layout.sandboxes()) {
        let modified = modified_unix_ms(&meta);
        if name.starts_with(TRASH_PREFIX) {
            out.push(leftover(Kind::Trash, name, modified, modified, false));
            continue;
        }
        if name.starts_with('.') || !meta.is_dir() || owned(&name) {
            continue;
        }
        let in_use = read_process(&layout.sandboxes().join(&name).join(META_DIR))
            .is_some_and(|p| p.is_alive());
        let (kind, since) = match parse_aside(&name, OLD_TAG) {
            Some((_, at)) => (Kind::OldSandbox, at),
            None => (Kind::Orphan, modified),
        };
        out.push(leftover(kind, name, since, modified, in_use));
    }
    out
}

fn leftover(kind: Kind, name: String, since: u64, modified: u64, in_use: bool) -> Leftover {
    Leftover {
        kind,
        name,
        since_unix_ms: since,
        modified_unix_ms: modified,
        disk_bytes: 0,
        in_use,
    }
}

/// Measures what each leftover takes on disk (blocking).
pub(crate) fn measure(layout: &Layout, leftovers: &mut [Leftover]) {
    for l in leftovers {
        l.disk_bytes = tree_bytes(&l.path(layout));
    }
}

/// True when a task owns the sandbox (or temp file) name `name`: it has a
/// checkpoint, or is active or in the ended table. Call with the active
/// set's lock held, so that the answer holds until it is released.
fn owned(shared: &Shared, active: &HashSet<TaskId>, name: &str) -> bool {
    if shared
        .layout
        .checkpoints()
        .join(format!("{name}.json"))
        .exists()
    {
        return true;
    }
    task_of(name)
        .and_then(|t| TaskId::new(t).ok())
        .is_some_and(|id| active.contains(&id) || shared.ended_table().contains_key(&id))
}

/// [`owned`] as it is now (for [`list`]; [`collect`] checks again).
pub(crate) fn owned_now(shared: &Shared, name: &str) -> bool {
    let active = shared.active_set();
    owned(shared, &active, name)
}

/// Removes a leftover (blocking). Returns false when there was nothing to
/// remove: it is gone already, or a task owns its name by now.
///
/// # Errors
/// It cannot be removed (a sandbox may have been renamed to trash first:
/// the error names where it is; later passes try again).
pub(crate) fn collect(shared: &Shared, l: &Leftover, now_unix_ms: u64) -> io::Result<bool> {
    let path = l.path(&shared.layout);
    let gone = |r: io::Result<()>| match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    };
    match l.kind {
        Kind::CorruptCheckpoint => gone(std::fs::remove_file(&path)),
        Kind::TempFile => {
            // Only its task's monitor writes it: not while that is active.
            let active = shared.active_set();
            let owner = l
                .name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".json.tmp"))
                .and_then(task_of)
                .and_then(|t| TaskId::new(t).ok());
            if owner.is_some_and(|id| active.contains(&id)) {
                return Ok(false);
            }
            gone(std::fs::remove_file(&path))
        }
        Kind::OldSandbox | Kind::Orphan => {
            let trash = shared
                .layout
                .sandboxes()
                .join(format!("{TRASH_PREFIX}{}-{now_unix_ms}", l.name));
            {
                let active = shared.active_set();
                if owned(shared, &active, &l.name) {
                    return Ok(false);
                }
                if !gone(std::fs::rename(&path, &trash))? {
                    return Ok(false);
                }
            }
            std::fs::remove_dir_all(&trash).map(|()| true).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{e} (it is now {}; later passes retry)", trash.display()),
                )
            })
        }
        Kind::Trash => {
            if path.symlink_metadata()?.is_dir() {
                gone(std::fs::remove_dir_all(&path))
            } else {
                gone(std::fs::remove_file(&path))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN_MS: u64 = 60 * 1000;
    const HOUR_MS: u64 = 60 * MIN_MS;

    fn l(kind: Kind, name: &str, since: u64, modified: u64) -> Leftover {
        leftover(kind, name.to_string(), since, modified, false)
    }

    fn names(v: &[(&Leftover, Why)]) -> Vec<(String, Why)> {
        v.iter().map(|(l, w)| (l.name.clone(), *w)).collect()
    }

    fn policy(max_ended: usize, max_age_h: u64) -> GcPolicy {
        GcPolicy {
            max_ended,
            max_age: Duration::from_secs(max_age_h * 3600),
            ..GcPolicy::default()
        }
    }

    #[test]
    fn the_data_dir_is_sorted_into_leftovers_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            data_dir: dir.path().to_path_buf(),
        };
        let (tasks, sandboxes) = (layout.checkpoints(), layout.sandboxes());
        for d in [
            "owned",
            "orphan",
            "d.old-7",
            ".gc-e-9",
            ".hidden",
            "live/.agora",
        ] {
            std::fs::create_dir_all(sandboxes.join(d)).unwrap();
        }
        std::fs::create_dir_all(&tasks).unwrap();
        for f in [
            "a.json",
            ".a.json.tmp",
            "b.json.corrupt-5",
            "c.json.corrupt-x",
            "notes.txt",
        ] {
            std::fs::write(tasks.join(f), b"").unwrap();
        }
        std::fs::write(sandboxes.join("file"), b"").unwrap();
        std::fs::create_dir(tasks.join(".dir.json.tmp")).unwrap();
        let me = super::super::fsutil::ProcRef::of(std::process::id() as i32).unwrap();
        std::fs::write(
            sandboxes.join("live/.agora/process.json"),
            serde_json::to_vec(&me).unwrap(),
        )
        .unwrap();
        let mut found = list(&layout, |name| name == "owned");
        found.sort_by(|a, b| a.name.cmp(&b.name));
        let got: Vec<(&str, Kind, Option<u64>, bool)> = found
            .iter()
            .map(|l| {
                let aside = l.kind.is_aside().then_some(l.since_unix_ms);
                (l.name.as_str(), l.kind, aside, l.in_use)
            })
            .collect();
        assert_eq!(
            got,
            [
                (".a.json.tmp", Kind::TempFile, None, false),
                (".gc-e-9", Kind::Trash, None, false),
                ("b.json.corrupt-5", Kind::CorruptCheckpoint, Some(5), false),
                ("d.old-7", Kind::OldSandbox, Some(7), false),
                ("live", Kind::Orphan, None, true),
                ("orphan", Kind::Orphan, None, false),
            ]
        );
        assert!(found.iter().all(|l| l.modified_unix_ms > 0));
        std::fs::write(sandboxes.join("orphan/stdout"), vec![1u8; 8192]).unwrap();
        measure(&layout, &mut found);
        let orphan = found.iter().find(|l| l.name == "orphan").unwrap();
        assert!(orphan.disk_bytes >= 8192, "{orphan:?}");
    }

    #[test]
    fn files_set_aside_go_by_age_on_a_virtual_clock() {
        let now = 100 * HOUR_MS;
        let found = [
            l(
                Kind::CorruptCheckpoint,
                "a.json.corrupt-1",
                now - 25 * HOUR_MS,
                0,
            ),
            l(Kind::OldSandbox, "b.old-2", now - 23 * HOUR_MS, 0),
        ];
        let p = policy(1000, 24);
        assert_eq!(
            names(&plan(now, &found, &p, 0)),
            [("a.json.corrupt-1".into(), Why::Age)]
        );
        assert!(plan(now - 2 * HOUR_MS, &found, &p, 0).is_empty());
        assert_eq!(plan(now + 2 * HOUR_MS, &found, &p, 0).len(), 2);
        // Their own time counts, not when the file was last written.
        let rewritten = [l(
            Kind::CorruptCheckpoint,
            "c.json.corrupt-3",
            now - 25 * HOUR_MS,
            now,
        )];
        assert_eq!(plan(now, &rewritten, &p, 0).len(), 1);
    }

    #[test]
    fn files_set_aside_are_counted_so_they_cannot_pile_up() {
        let now = 10 * HOUR_MS;
        let found: Vec<Leftover> = (0..5)
            .map(|i| {
                let kind = if i % 2 == 0 {
                    Kind::CorruptCheckpoint
                } else {
                    Kind::OldSandbox
                };
                l(kind, &format!("t{i}"), now - HOUR_MS + i * MIN_MS, 0)
            })
            .collect();
        // The two newest stay, whatever their kind.
        assert_eq!(
            names(&plan(now, &found, &policy(2, 24), 0)),
            [
                ("t0".into(), Why::Count),
                ("t1".into(), Why::Count),
                ("t2".into(), Why::Count)
            ]
        );
        assert!(plan(now, &found, &policy(5, 24), 0).is_empty());
        // Same time: kind, then name, break the tie.
        let tied = [
            l(Kind::OldSandbox, "x", 5, 0),
            l(Kind::CorruptCheckpoint, "y", 5, 0),
        ];
        assert_eq!(
            names(&plan(6, &tied, &policy(1, 24), 0)),
            [("y".into(), Why::Count)]
        );
    }

    #[test]
    fn orphans_and_temp_files_go_after_the_grace_and_never_before() {
        let now = 10 * HOUR_MS;
        let found = [
            l(Kind::Orphan, "fresh", now - 10 * MIN_MS, now - 10 * MIN_MS),
            l(Kind::Orphan, "stale", now - 11 * MIN_MS, now - 11 * MIN_MS),
            l(
                Kind::TempFile,
                ".t.json.tmp",
                now - 30 * MIN_MS,
                now - 30 * MIN_MS,
            ),
            l(Kind::TempFile, ".u.json.tmp", now - MIN_MS, now - MIN_MS),
        ];
        let p = policy(1000, 24);
        assert_eq!(
            names(&plan(now, &found, &p, 0)),
            [
                (".t.json.tmp".into(), Why::Grace),
                ("stale".into(), Why::Grace)
            ]
        );
        // Not even a full disk or a zero count takes one within the grace.
        let strict = GcPolicy {
            max_age: Duration::ZERO,
            ..policy(0, 0)
        };
        assert_eq!(plan(now, &found, &strict, u64::MAX).len(), 2);
        assert_eq!(plan(now + MIN_MS, &found, &p, 0).len(), 3);
        // A sandbox set aside at a launch has the grace too.
        let old = [l(Kind::OldSandbox, "o.old-1", 0, now - MIN_MS)];
        assert!(plan(now, &old, &strict, u64::MAX).is_empty());
        assert_eq!(plan(now + 10 * MIN_MS, &old, &strict, 0).len(), 1);
    }

    #[test]
    fn a_sandbox_whose_process_is_alive_is_never_collected() {
        let mut orphan = l(Kind::Orphan, "running", 0, 0);
        orphan.in_use = true;
        let mut old = l(Kind::OldSandbox, "r.old-1", 0, 0);
        old.in_use = true;
        let found = [orphan, old];
        let strict = GcPolicy {
            max_age: Duration::ZERO,
            ..policy(0, 0)
        };
        assert!(plan(1000 * HOUR_MS, &found, &strict, u64::MAX).is_empty());
    }

    #[test]
    fn over_the_disk_threshold_files_set_aside_go_oldest_first_until_enough_is_freed() {
        let now = 10 * HOUR_MS;
        let mut found: Vec<Leftover> = ["a", "b", "c"]
            .iter()
            .zip(1..)
            .map(|(n, i)| l(Kind::CorruptCheckpoint, n, now - HOUR_MS + i, 0))
            .collect();
        for f in &mut found {
            f.disk_bytes = 10;
        }
        let mut orphan = l(Kind::Orphan, "orphan", 0, 0);
        orphan.disk_bytes = 15;
        found.push(orphan);
        let p = policy(1000, 24);
        // The orphan goes anyway and frees 15: 20 to free takes one more.
        assert_eq!(
            names(&plan(now, &found, &p, 20)),
            [("orphan".into(), Why::Grace), ("a".into(), Why::Disk)]
        );
        assert_eq!(plan(now, &found, &p, 15).len(), 1);
        assert_eq!(plan(now, &found, &p, 1000).len(), 4);
        // Trash always goes, first.
        found.push(l(Kind::Trash, ".gc-z-1", now, now));
        assert_eq!(
            names(&plan(now, &found, &p, 0))[0],
            (".gc-z-1".into(), Why::Trash)
        );
    }
}
