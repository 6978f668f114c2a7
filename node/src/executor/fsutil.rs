//! Files and processes the executor relies on: the on-disk layout of a
//! node's data dir (and the names of what is moved aside in it), atomic
//! writes (write a temp file, fsync, rename, fsync the directory), and
//! identifying a process across pid reuse and reboots (its start time in
//! `/proc/PID/stat` plus the kernel's boot id).

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Directory (under the sandbox) where the supervisor and the executor
/// exchange files; tasks should leave it alone.
pub(crate) const META_DIR: &str = ".agora";
/// The supervisor's instructions, written by the executor.
pub(crate) const LAUNCH_FILE: &str = "launch.json";
/// What was launched (the executor's `LaunchRequest`), written with
/// `launch.json`: a task whose checkpoint is lost or corrupt is rebuilt
/// from it (see `recovery.rs`).
pub(crate) const REQUEST_FILE: &str = "request.json";
/// The task's process, written by the supervisor once it has started.
pub(crate) const PROCESS_FILE: &str = "process.json";
/// How the task ended (or why it could not start), written by the supervisor.
pub(crate) const EXIT_FILE: &str = "exit.json";
/// The supervisor's own stdout and stderr.
pub(crate) const SUPERVISOR_LOG: &str = "supervisor.log";

/// A file-name component for an id. Ids are `[A-Za-z0-9._:@-]`, so only a
/// leading dot (`.`, `..`, hidden names) needs care: such ids get a `%`
/// prefix, a character no id can contain, so two ids never share a name.
pub(crate) fn component(id: &str) -> String {
    if id.starts_with('.') || id.is_empty() {
        format!("%{id}")
    } else {
        id.to_string()
    }
}

/// The task id whose [`component`] is `name`, if there is one (names that
/// start with a dot, or with `%` not followed by one, are no task's).
pub(crate) fn task_of(name: &str) -> Option<&str> {
    match name.strip_prefix('%') {
        Some(rest) if rest.is_empty() || rest.starts_with('.') => Some(rest),
        Some(_) => None,
        None if name.starts_with('.') => None,
        None => Some(name),
    }
}

/// Tag of a checkpoint moved aside because it cannot be used:
/// `tasks/NAME.json.corrupt-UNIXMS`.
pub(crate) const CORRUPT_TAG: &str = ".corrupt-";
/// Tag of a sandbox moved aside by a launch that found one for its task id
/// already: `sandboxes/NAME.old-UNIXMS`.
pub(crate) const OLD_TAG: &str = ".old-";
/// Prefix of a leftover the GC has renamed out of the way to remove it:
/// `sandboxes/.gc-NAME-UNIXMS` (no [`component`] starts with a dot, so no
/// task can own that name).
pub(crate) const TRASH_PREFIX: &str = ".gc-";

/// `path` with `TAG` and a Unix-millisecond time appended to its file name
/// (`NAME{tag}{unix_ms}`), where it is moved aside.
pub(crate) fn aside_path(path: &Path, tag: &str, unix_ms: u64) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{name}{tag}{unix_ms}"))
}

/// The name and time of a file name made by [`aside_path`] with `tag`.
pub(crate) fn parse_aside<'a>(name: &'a str, tag: &str) -> Option<(&'a str, u64)> {
    let (base, ms) = name.rsplit_once(tag)?;
    if base.is_empty() || ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, ms.parse().ok()?))
}

/// Sets a file's or directory's modification time to now.
///
/// # Errors
/// It cannot be opened, or its times cannot be set.
pub(crate) fn touch(path: &Path) -> io::Result<()> {
    File::open(path)?.set_modified(SystemTime::now())
}

/// A file's or directory's modification time (Unix milliseconds; 0 when
/// unreadable), symlinks not followed.
pub(crate) fn modified_unix_ms(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The on-disk layout of one node's executor.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub data_dir: PathBuf,
}

impl Layout {
    pub fn sandboxes(&self) -> PathBuf {
        self.data_dir.join("sandboxes")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.data_dir.join("tasks")
    }
    pub fn sandbox(&self, task: &str) -> PathBuf {
        self.sandboxes().join(component(task))
    }
    pub fn meta(&self, task: &str) -> PathBuf {
        self.sandbox(task).join(META_DIR)
    }
    pub fn checkpoint(&self, task: &str) -> PathBuf {
        self.checkpoints().join(format!("{}.json", component(task)))
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new
/// content: temp file, fsync, rename over, fsync the directory. The file is
/// the agent's alone (mode 0600): checkpoints, the frameworks and the task
/// journal hold task specs, environments included.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // A temp file left by a crash keeps its old mode: set it anyway.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One process, named so that a reused pid or a reboot is not mistaken for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcRef {
    /// Its pid.
    pub pid: i32,
    /// Field 22 of /proc/PID/stat (clock ticks after boot).
    pub start_time: u64,
    /// /proc/sys/kernel/random/boot_id when it was recorded.
    pub boot_id: String,
}

/// The kernel's boot id (empty when unreadable).
pub(crate) fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// State letter and start time of a process, from /proc/PID/stat.
pub(crate) fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse
    // after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

impl ProcRef {
    /// Names the process `pid` as it is now.
    pub fn of(pid: i32) -> Option<ProcRef> {
        let (_, start_time) = proc_stat(pid)?;
        Some(ProcRef {
            pid,
            start_time,
            boot_id: boot_id(),
        })
    }

    /// True while this very process exists and has not exited (a zombie
    /// counts as exited).
    pub fn is_alive(&self) -> bool {
        if self.boot_id != boot_id() {
            return false;
        }
        match proc_stat(self.pid) {
            Some((state, start)) => start == self.start_time && !matches!(state, 'Z' | 'X' | 'x'),
            None => false,
        }
    }
}

/// One entry of /proc: the fields the executor reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProcEntry {
    /// Its pid.
    pub pid: i32,
    /// Its process group.
    pub pgrp: i32,
    /// Its session.
    pub session: i32,
    /// Its start time (clock ticks after boot).
    pub start_time: u64,
}

/// Every live (not zombie) process in /proc; those that vanish meanwhile
/// are skipped.
pub(crate) fn processes() -> Vec<ProcEntry> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &text[text.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        if matches!(f.first().copied(), Some("Z" | "X" | "x")) {
            return None;
        }
        Some(ProcEntry {
            pid,
            pgrp: f.get(2)?.parse().ok()?,
            session: f.get(3)?.parse().ok()?,
            start_time: f.get(19)?.parse().ok()?,
        })
    })
    .collect()
}

/// The running `agora __supervise SANDBOX` process of `sandbox`, found by
/// its command line (`sandbox` as the executor gave it, absolute).
pub(crate) fn find_supervisor(sandbox: &Path) -> Option<ProcRef> {
    let want = sandbox.as_os_str().as_encoded_bytes();
    processes().into_iter().find_map(|p| {
        let cmdline = fs::read(format!("/proc/{}/cmdline", p.pid)).ok()?;
        let mut args = cmdline.split(|b| *b == 0);
        let _exe = args.next()?;
        (args.next()? == b"__supervise" && args.next()? == want)
            .then(|| ProcRef::of(p.pid))
            .flatten()
            .filter(|r| r.start_time == p.start_time)
    })
}

/// Longest wait for killed processes to be gone.
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Kills with SIGKILL what is left of a task: every process of its process
/// group (`task`, the group's leader, whose pid is the group id) and of its
/// supervisor's session (`supervisor`, its leader), counting only processes
/// started no earlier than that leader (so a pid reused since is not
/// taken for it), and the task's cgroups (`cgroup.kill`, where there is
/// one). Waits (at most 5 s) until they are gone. Blocking.
///
/// Returns how many processes were killed, and how many still ran when it
/// gave up.
pub(crate) fn kill_leftovers(
    task: Option<&ProcRef>,
    supervisor: Option<&ProcRef>,
    cgroups: &[PathBuf],
) -> (usize, usize) {
    let boot = boot_id();
    let task = task.filter(|p| p.boot_id == boot);
    let supervisor = supervisor.filter(|p| p.boot_id == boot);
    let belongs = |p: &ProcEntry| {
        task.is_some_and(|t| p.pgrp == t.pid && p.start_time >= t.start_time)
            || supervisor.is_some_and(|s| p.session == s.pid && p.start_time >= s.start_time)
    };
    for dir in cgroups {
        let _ = fs::write(dir.join("cgroup.kill"), "1");
    }
    let deadline = std::time::Instant::now() + KILL_WAIT;
    let mut killed = std::collections::BTreeSet::new();
    loop {
        let left: Vec<i32> = processes()
            .iter()
            .filter(|p| belongs(p))
            .map(|p| p.pid)
            .collect();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return (killed.len(), left.len());
        }
        for pid in left {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                killed.insert(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The conventional name of a signal, for reasons people read.
pub(crate) fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => "unknown signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_never_escape_or_collide() {
        assert_eq!(component("fw.1"), "fw.1");
        assert_eq!(component(".."), "%..");
        assert_eq!(component("."), "%.");
        assert_ne!(component(".x"), component("_.x"));
        for id in ["fw.1", "..", ".", ".x"] {
            assert_eq!(task_of(&component(id)), Some(id));
        }
        assert_eq!(task_of(".gc-x-1"), None);
        assert_eq!(task_of("%x"), None);
    }

    #[test]
    fn aside_names_parse_back_and_others_do_not() {
        let p = aside_path(Path::new("/d/tasks/t.json"), CORRUPT_TAG, 17);
        assert_eq!(p, Path::new("/d/tasks/t.json.corrupt-17"));
        assert_eq!(
            parse_aside("t.json.corrupt-17", CORRUPT_TAG),
            Some(("t.json", 17))
        );
        assert_eq!(parse_aside("a.old-b.old-5", OLD_TAG), Some(("a.old-b", 5)));
        for bad in ["t.old-", ".old-5", "t.old-5x", "t.json", "t.old--5"] {
            assert_eq!(parse_aside(bad, OLD_TAG), None, "{bad}");
        }
    }

    #[test]
    fn own_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcRef::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        let other = ProcRef {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(!other.is_alive());
        let rebooted = ProcRef {
            boot_id: "another-boot".into(),
            ..me
        };
        assert!(!rebooted.is_alive());
    }
}
