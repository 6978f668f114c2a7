//! Per-task checkpoints: `DATA_DIR/tasks/TASK.json`, written atomically.
//!
//! A checkpoint holds everything a restarted agent needs to find a task
//! again: the launch request, the supervisor process (pid, start time, boot
//! id, so a reused pid is never mistaken for it), whether Running was
//! reported, a kill in progress (with its deadline), the task's cgroups, and
//! once the task has ended its final status. Ended checkpoints stay until
//! [`super::Executor::forget`] removes them, so a final status is reported
//! again after a restart until the agent says it has passed it on.
//!
//! Format (JSON, `version` 1):
//! `{"version":1,"request":{...LaunchRequest...},"supervisor":{"pid":..,
//! "start_time":..,"boot_id":".."}|null,"started":bool,"kill":{"grace_ms":..,
//! "deadline_unix_ms":..}|null,"cgroups":["/sys/fs/cgroup/..."],
//! "ended":{...TaskStatus...}|null,"updated_unix_ms":..}`

use super::LaunchRequest;
use super::fsutil::{Layout, ProcRef, atomic_write, unix_ms};
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
    /// True once Running has been reported.
    pub started: bool,
    /// A kill in progress.
    pub kill: Option<KillState>,
    /// The task's cgroup directories.
    pub cgroups: Vec<PathBuf>,
    /// The final status, once the task has ended.
    pub ended: Option<TaskStatus>,
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
            updated_unix_ms: unix_ms(),
        }
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

/// Moves a bad checkpoint aside as `NAME.corrupt-UNIXMS`, with a warning.
fn move_aside(path: &Path, why: &str) {
    let aside = path.with_file_name(format!(
        "{}.corrupt-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        unix_ms()
    ));
    match fs::rename(path, &aside) {
        Ok(()) => tracing::warn!(
            checkpoint = %path.display(),
            moved_to = %aside.display(),
            "corrupt task checkpoint moved aside: {why}; the task it described is not recovered"
        ),
        Err(e) => tracing::warn!(
            checkpoint = %path.display(),
            "corrupt task checkpoint ({why}) could not be moved aside: {e}; ignoring it"
        ),
    }
}

/// Reads every checkpoint of the node. Corrupt ones are moved aside with a
/// warning, stale temp files are removed.
///
/// # Errors
/// The checkpoint directory cannot be read.
pub(crate) fn load_all(layout: &Layout) -> io::Result<Vec<Checkpoint>> {
    let dir = layout.checkpoints();
    let mut out = Vec::new();
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
            .and_then(|b| {
                serde_json::from_slice::<Checkpoint>(&b).map_err(|e| format!("invalid JSON: {e}"))
            })
            .and_then(|c| {
                if c.version != VERSION {
                    Err(format!(
                        "unsupported version {} (expected {VERSION})",
                        c.version
                    ))
                } else if layout.checkpoint(c.request.task_id.as_str()) != path {
                    Err(format!(
                        "it describes task {} but is not that task's file",
                        c.request.task_id
                    ))
                } else {
                    Ok(c)
                }
            });
        match parsed {
            Ok(c) => out.push(c),
            Err(why) => move_aside(&path, &why),
        }
    }
    Ok(out)
}
