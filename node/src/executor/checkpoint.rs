//! Per-task checkpoints: `DATA_DIR/tasks/TASK.json`, written atomically.
//!
//! A checkpoint holds everything a restarted agent needs to find a task
//! again: the launch request, the supervisor process (pid, start time, boot
//! id, so a reused pid is never mistaken for it), whether Running was
//! reported, a kill in progress (with its deadline), the task's cgroups, and
//! once the task has ended its final status, when it ended, and whether
//! that status has been delivered to the agent. Ended checkpoints stay until
//! the GC (`gc.rs`) or [`super::Executor::forget`] removes them; they are the
//! node's history of ended tasks across restarts.
//!
//! Format (JSON, `version` 1):
//! `{"version":1,"request":{...LaunchRequest...},"supervisor":{"pid":..,
//! "start_time":..,"boot_id":".."}|null,"started":bool,"kill":{"grace_ms":..,
//! "deadline_unix_ms":..}|null,"cgroups":["/sys/fs/cgroup/..."],
//! "ended":{...TaskStatus...}|null,"ended_unix_ms":..|null,"reported":bool,
//! "updated_unix_ms":..}`. `ended_unix_ms` and `reported` were added later
//! within version 1: a checkpoint without them loads with `reported` false
//! (its status is reported once more) and its end time taken from
//! `updated_unix_ms`; older agents ignore the two fields.

use super::LaunchRequest;
use super::fsutil::{CORRUPT_TAG, Layout, ProcRef, aside_path, atomic_write, task_of, unix_ms};
use super::gc::GcPolicy;
use agora_protocol::task::TaskStatus;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The checkpoint format written by this code.
pub(crate) const VERSION: u32 = 1;

/// A kill that was asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KillState {
    /// TERM to KILL, in milliseconds.
    pub grace_ms: u64,
    /// When KILL is due (Unix milliseconds), so a restart keeps the deadline.
    pub deadline_unix_ms: u64,
}

/// One task's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// What was launched.
    pub request: LaunchRequest,
    /// Its supervisor, once started.
    pub supervisor: Option<ProcRef>,
    /// True once Running has been reported (on disk from the checkpoint's
    /// next write, a kill or the end: a restart re-attaches a running task
    /// either way and reports no second Running).
    pub started: bool,
    /// A kill in progress.
    pub kill: Option<KillState>,
    /// The task's cgroup directories.
    pub cgroups: Vec<PathBuf>,
    /// The final status, once the task has ended.
    pub ended: Option<TaskStatus>,
    /// When it ended (Unix milliseconds); see [`Checkpoint::ended_at`].
    #[serde(default)]
    pub ended_unix_ms: Option<u64>,
    /// True once the final status has been delivered to the agent (sent on
    /// the event channel, or returned by `Executor::open` as
    /// `Recovered::Ended`): later opens do not report it again.
    #[serde(default)]
    pub reported: bool,
    /// Last write (Unix milliseconds).
    pub updated_unix_ms: u64,
}

impl Checkpoint {
    /// A fresh checkpoint for a task about to start.
    pub fn new(request: LaunchRequest) -> Checkpoint {
        Checkpoint {
            version: VERSION,
            request,
            supervisor: None,
            started: false,
            kill: None,
            cgroups: Vec::new(),
            ended: None,
            ended_unix_ms: None,
            reported: false,
            updated_unix_ms: unix_ms(),
        }
    }

    /// Records the final status and the time it was reached (not saved).
    pub fn end(&mut self, status: TaskStatus) {
        self.ended = Some(status);
        self.ended_unix_ms = Some(unix_ms());
    }

    /// When the task ended (Unix milliseconds): the recorded time, or for a
    /// checkpoint written before that was recorded, its last write (which,
    /// for an ended task, was the write of its final status).
    pub fn ended_at(&self) -> u64 {
        self.ended_unix_ms.unwrap_or(self.updated_unix_ms)
    }

    /// Writes it atomically to its file.
    ///
    /// # Errors
    /// The file cannot be written or synced.
    pub fn save(&mut self, layout: &Layout) -> io::Result<()> {
        self.updated_unix_ms = unix_ms();
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        atomic_write(&layout.checkpoint(self.request.task_id.as_str()), &bytes)
    }
}

/// Reads a checkpoint file's bytes: JSON of this [`VERSION`]. A checkpoint
/// written before end times were recorded gets the time of its last write.
///
/// # Errors
/// Why it is not a checkpoint, for the warning that moves it aside.
pub(crate) fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    let mut c =
        serde_json::from_slice::<Checkpoint>(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    if c.version != VERSION {
        return Err(format!(
            "unsupported version {} (expected {VERSION})",
            c.version
        ));
    }
    if c.ended.is_some() && c.ended_unix_ms.is_none() {
        // Written before end times were: keep the time of the final write,
        // before a new write changes it.
        c.ended_unix_ms = Some(c.updated_unix_ms);
    }
    Ok(c)
}

/// A checkpoint that could not be used, moved aside at open.
#[derive(Clone, Debug)]
pub(crate) struct Corrupt {
    /// Its file name in `tasks/` (`NAME.json`).
    pub name: String,
    /// Where it is now: `NAME.json.corrupt-UNIXMS`, or where it was when it
    /// could not be moved.
    pub aside: PathBuf,
    /// What is wrong with it.
    pub why: String,
}

impl Corrupt {
    /// The task it was for, from its file name (see `fsutil::component`).
    pub fn task_name(&self) -> Option<&str> {
        task_of(self.name.strip_suffix(".json")?)
    }

    /// For reasons and logs: "its checkpoint tasks/NAME.json was corrupt
    /// (WHY) and is kept as PATH".
    pub fn describe(&self) -> String {
        format!(
            "its checkpoint tasks/{} was corrupt ({}) and is kept as {}",
            self.name,
            self.why,
            self.aside.display()
        )
    }
}

/// Moves a bad checkpoint aside as `NAME.corrupt-UNIXMS`, with a warning
/// that says how long it is kept (the GC removes it, see `leftovers.rs`).
fn move_aside(path: &Path, name: &str, why: String, policy: &GcPolicy) -> Corrupt {
    let aside = aside_path(path, CORRUPT_TAG, unix_ms());
    match fs::rename(path, &aside) {
        Ok(()) => {
            tracing::warn!(
                checkpoint = %path.display(),
                moved_to = %aside.display(),
                "corrupt task checkpoint moved aside: {why}; the task is rebuilt from its \
                 sandbox, or reported lost and what is left of it killed (see the next lines); \
                 the file is {}",
                policy.aside_note()
            );
            Corrupt {
                name: name.to_string(),
                aside,
                why,
            }
        }
        Err(e) => {
            tracing::warn!(
                checkpoint = %path.display(),
                "corrupt task checkpoint ({why}) could not be moved aside: {e}; ignoring it"
            );
            Corrupt {
                name: name.to_string(),
                aside: path.to_path_buf(),
                why,
            }
        }
    }
}

/// Every checkpoint of the node, read at open.
pub(crate) struct Loaded {
    /// Those that could be read.
    pub good: Vec<Checkpoint>,
    /// Those moved aside (or left in place when they could not be moved).
    pub corrupt: Vec<Corrupt>,
}

/// Reads every checkpoint of the node. Corrupt ones (unreadable, invalid
/// or truncated JSON, another version, another task's) are moved aside with
/// a warning (which says how long `policy` keeps them) and returned for
/// the caller to account for their tasks; stale temp files are removed.
///
/// # Errors
/// The checkpoint directory cannot be read.
pub(crate) fn load_all(layout: &Layout, policy: &GcPolicy) -> io::Result<Loaded> {
    let dir = layout.checkpoints();
    let mut out = Loaded {
        good: Vec::new(),
        corrupt: Vec::new(),
    };
    let mut entries: Vec<PathBuf> = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') && name.ends_with(".tmp") {
            let _ = fs::remove_file(&path);
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        let parsed = fs::read(&path)
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|b| decode(&b))
            .and_then(|c| {
                if layout.checkpoint(c.request.task_id.as_str()) != path {
                    Err(format!(
                        "it describes task {} but is not that task's file",
                        c.request.task_id
                    ))
                } else {
                    Ok(c)
                }
            });
        match parsed {
            Ok(c) => out.good.push(c),
            Err(why) => out.corrupt.push(move_aside(&path, &name, why, policy)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::ids::{FrameworkId, NodeId, TaskId};
    use agora_protocol::task::{Command, TaskSpec, TaskState};

    #[test]
    fn a_checkpoint_from_before_reported_and_end_times_loads() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            data_dir: dir.path().to_path_buf(),
        };
        fs::create_dir_all(layout.checkpoints()).unwrap();
        let id = TaskId::new("fw-1.t1").unwrap();
        let mut cp = Checkpoint::new(LaunchRequest {
            task_id: id.clone(),
            framework: FrameworkId::new("fw-1").unwrap(),
            weight: 1,
            home: NodeId::new("n1").unwrap(),
            spec: TaskSpec::new("t", Command::Shell("true".into()), Default::default()),
            ports: vec![],
        });
        cp.end(TaskStatus::new(id, TaskState::Finished, None));
        // As the previous version wrote it: no "ended_unix_ms", no "reported".
        let mut old = serde_json::to_value(&cp).unwrap();
        let fields = old.as_object_mut().unwrap();
        assert!(fields.remove("ended_unix_ms").is_some() && fields.remove("reported").is_some());
        fields.insert("updated_unix_ms".into(), 1234.into());
        fs::write(layout.checkpoint("fw-1.t1"), old.to_string()).unwrap();
        let [loaded] = &load_all(&layout, &GcPolicy::default()).unwrap().good[..] else {
            panic!("the old checkpoint did not load")
        };
        assert!(!loaded.reported);
        assert_eq!(loaded.ended, cp.ended);
        assert_eq!(loaded.ended_at(), 1234);
        // A new write keeps the end time.
        loaded.clone().save(&layout).unwrap();
        assert_eq!(
            load_all(&layout, &GcPolicy::default()).unwrap().good[0].ended_at(),
            1234
        );
    }
}
