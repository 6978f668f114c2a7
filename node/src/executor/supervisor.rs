//! The per-task supervisor process, `agora __supervise SANDBOX`.
//!
//! The executor starts one supervisor per task (forked by the spawner,
//! `spawner.rs`, or started as `agora __supervise SANDBOX`), which first
//! moves into a new session (setsid), so that it outlives the agent. The supervisor reads its instructions from
//! `SANDBOX/.agora/launch.json`, starts the task in its own process group
//! (inside the task's cgroups when there are any), records the task's pid in
//! `process.json`, waits for it, kills whatever is left of its process group,
//! and records how it ended in `exit.json` (atomically), then exits. A task
//! that cannot be started at all is recorded as `cannot_start` with the OS
//! error, so the agent can tell "could not start" from "exited 127".
//!
//! A task may fill the disk its sandbox is on (issue 12: the supervisor
//! then panicked writing to its log, exit 101, and the task was reported
//! lost). So the supervisor never panics on a failed write: its messages
//! go to stderr (`supervisor.log`) best effort, and before it starts the
//! task it sets aside one page for the exit record (`exit.json.reserve`),
//! which it overwrites in place and renames to `exit.json` when the normal
//! write fails for lack of space.

use super::fsutil::{EXIT_FILE, LAUNCH_FILE, META_DIR, PROCESS_FILE, ProcRef, atomic_write};
use super::isolation::{ChildSetup, Isolation, Step};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `eprintln!` that never panics: std's panics when stderr cannot be
/// written, and the supervisor's stderr is a file on the disk a task may
/// have filled. The message is lost then; the exit record is what counts.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The page set aside for the exit record (see the module docs).
const RESERVE_FILE: &str = "exit.json.reserve";
/// Its size: far more than any exit record.
const RESERVE_BYTES: usize = 4096;

/// What the supervisor runs, written by the executor to `launch.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LaunchSpec {
    /// The program (looked up in PATH when it has no slash).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to the supervisor's environment.
    pub env: Vec<(String, String)>,
    /// Working directory (the sandbox).
    pub cwd: PathBuf,
    /// File that receives stdout.
    pub stdout: PathBuf,
    /// File that receives stderr.
    pub stderr: PathBuf,
    /// `cgroup.procs` files the task joins before it executes.
    pub cgroup_procs: Vec<PathBuf>,
    /// The user it runs as and what it is kept from (`isolation.rs`).
    #[serde(default)]
    pub isolation: Isolation,
    /// Start from an empty environment rather than the supervisor's (then
    /// `env` holds all of it).
    #[serde(default)]
    pub clear_env: bool,
}

/// How a task ended, written by the supervisor to `exit.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ExitRecord {
    /// It exited with this code.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// A signal ended it.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// It could not be started.
    CannotStart {
        /// The OS error, for people.
        reason: String,
    },
}

/// Reads `exit.json` of a sandbox's meta dir, if the supervisor wrote it.
pub(crate) fn read_exit(meta: &Path) -> Option<ExitRecord> {
    decode_exit(&std::fs::read(meta.join(EXIT_FILE)).ok()?)
}

/// The bytes of an `exit.json`, if they are an [`ExitRecord`].
pub(crate) fn decode_exit(bytes: &[u8]) -> Option<ExitRecord> {
    serde_json::from_slice(bytes).ok()
}

/// Reads `process.json` of a sandbox's meta dir, if the task has started.
pub(crate) fn read_process(meta: &Path) -> Option<ProcRef> {
    decode_process(&std::fs::read(meta.join(PROCESS_FILE)).ok()?)
}

/// The bytes of a `process.json`, if they name a process.
pub(crate) fn decode_process(bytes: &[u8]) -> Option<ProcRef> {
    serde_json::from_slice(bytes).ok()
}

/// The bytes of a `launch.json`.
///
/// # Errors
/// serde's words for what is wrong.
pub(crate) fn decode_launch(bytes: &[u8]) -> Result<LaunchSpec, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    atomic_write(path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// How long a supervisor keeps trying to write the exit record while the
/// data dir cannot take it (read-only, or full past the reserved page).
const RECORD_RETRY_FOR: Duration = Duration::from_secs(3600);
/// Between two tries.
const RECORD_RETRY_EVERY: Duration = Duration::from_secs(1);

fn record_exit(meta: &Path, record: &ExitRecord) -> i32 {
    record_exit_within(meta, record, RECORD_RETRY_FOR)
}

/// Writes the exit record. While it cannot (a data dir turned read-only,
/// or full), the supervisor stays and tries again every second for up to
/// `retry_for`, so that the agent keeps seeing the task and its end is
/// recorded as it happened once the disk takes writes again (exiting at
/// once lost the exit code: the task was reported lost). It gives up
/// early if the sandbox's meta dir is gone.
fn record_exit_within(meta: &Path, record: &ExitRecord, retry_for: Duration) -> i32 {
    let reserve = meta.join(RESERVE_FILE);
    let until = std::time::Instant::now() + retry_for;
    let mut said = false;
    let written = loop {
        let written = write_json(&meta.join(EXIT_FILE), record).or_else(|e| {
            // Out of space (a task filled the disk): the reserved page needs none.
            let bytes = serde_json::to_vec(record).map_err(|e| e.to_string())?;
            write_in_place(&reserve, &meta.join(EXIT_FILE), &bytes)
                .map_err(|e2| format!("{e}; and through the reserved page: {e2}"))
        });
        match written {
            Err(e) if std::time::Instant::now() < until && meta.is_dir() => {
                if !said {
                    said = true;
                    eprintln!(
                        "agora supervisor: {e}; trying again every {}s for up to {}s (make the data dir writable)",
                        RECORD_RETRY_EVERY.as_secs(),
                        retry_for.as_secs()
                    );
                }
                std::thread::sleep(RECORD_RETRY_EVERY);
            }
            other => break other,
        }
    };
    let _ = std::fs::remove_file(&reserve);
    match written {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("agora supervisor: {e}");
            1
        }
    }
}

/// Sets aside a page for the exit record, before the task can fill the disk.
fn reserve_exit_record(meta: &Path) {
    let path = meta.join(RESERVE_FILE);
    if let Err(e) =
        std::fs::write(&path, [b' '; RESERVE_BYTES]).and_then(|()| File::open(&path)?.sync_all())
    {
        eprintln!(
            "agora supervisor: cannot reserve room for the exit record ({}: {e})",
            path.display()
        );
    }
}

/// Writes `bytes` over the start of `reserve` (already allocated, so no
/// new space is needed), cuts it to their length and renames it to `path`.
fn write_in_place(reserve: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = OpenOptions::new().write(true).open(reserve)?;
    f.write_all(bytes)?;
    f.set_len(bytes.len() as u64)?;
    f.sync_all()?;
    std::fs::rename(reserve, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn open_output(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Root's, like the rest of what the supervisor keeps in the sandbox:
    // the task writes through the descriptor it is given.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Entry point of `agora __supervise SANDBOX` (see the module docs).
pub(crate) fn run(args: Vec<OsString>) -> i32 {
    let [sandbox] = args.as_slice() else {
        eprintln!("usage: agora __supervise SANDBOX (internal; started by the agent)");
        return 2;
    };
    // A session of its own, so that it outlives the agent and its terminal.
    // The agent does not do this between fork and exec: any closure there
    // makes the standard library fork the whole agent instead of using
    // posix_spawn, which cost the agent about 5 ms of CPU per task (page
    // tables copied, then faulted back: `perf` on 2,000 tasks).
    if let Err(e) = rustix::process::setsid() {
        eprintln!(
            "agora supervisor: cannot start a session of its own (setsid: {e}); going on in the agent's"
        );
    }
    let meta = Path::new(sandbox).join(META_DIR);
    let spec: LaunchSpec = match std::fs::read(meta.join(LAUNCH_FILE))
        .map_err(|e| e.to_string())
        .and_then(|b| decode_launch(&b))
    {
        Ok(spec) => spec,
        Err(e) => {
            let reason = format!(
                "the supervisor cannot read {}: {e}",
                meta.join(LAUNCH_FILE).display()
            );
            eprintln!("agora supervisor: {reason}");
            return record_exit(&meta, &ExitRecord::CannotStart { reason });
        }
    };
    reserve_exit_record(&meta);
    let cannot_start = |what: String| {
        eprintln!("agora supervisor: {what}");
        record_exit(&meta, &ExitRecord::CannotStart { reason: what })
    };
    let stdout = match open_output(&spec.stdout) {
        Ok(f) => f,
        Err(e) => return cannot_start(format!("cannot open {}: {e}", spec.stdout.display())),
    };
    let stderr = match open_output(&spec.stderr) {
        Ok(f) => f,
        Err(e) => return cannot_start(format!("cannot open {}: {e}", spec.stderr.display())),
    };
    // Cgroups never stop a task: a file that cannot be opened is logged and skipped.
    let mut cgroup_fds: Vec<OwnedFd> = Vec::new();
    for path in &spec.cgroup_procs {
        match OpenOptions::new().write(true).open(path) {
            Ok(f) => cgroup_fds.push(f.into()),
            Err(e) => eprintln!(
                "agora supervisor: not joining cgroup {}: {e}",
                path.display()
            ),
        }
    }
    let setup = match ChildSetup::plan(&spec.isolation, &spec.cwd) {
        Ok(setup) => std::sync::Arc::new(setup),
        Err(e) => return cannot_start(e),
    };
    eprintln!("agora supervisor: starting the task {}", setup.summary);
    let mut cmd = Command::new(&spec.program);
    if spec.clear_env {
        cmd.env_clear();
    }
    // No current_dir: the child enters the sandbox once its mounts and
    // its user are set (`ChildSetup::apply`).
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    if !cgroup_fds.is_empty() {
        // SAFETY: the closure only calls write(2) on descriptors opened
        // before the fork, which is async-signal-safe; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &cgroup_fds {
                    // "0" moves the writing process (the task, before exec).
                    let _ = rustix::io::write(fd, b"0");
                }
                Ok(())
            });
        }
    }
    // The child names the set-up step that failed on this pipe.
    let (mut step_rx, step_tx) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return cannot_start(format!("cannot make a pipe to start the task: {e}")),
    };
    let in_child = std::sync::Arc::clone(&setup);
    // SAFETY: `apply` makes system calls only, and the error path one
    // write(2) to a descriptor opened before the fork; nothing allocates.
    unsafe {
        cmd.pre_exec(move || match in_child.apply() {
            Ok(()) => Ok(()),
            Err((step, errno)) => {
                let _ = rustix::io::write(&step_tx, &[step as u8]);
                Err(std::io::Error::from_raw_os_error(errno.raw_os_error()))
            }
        });
    }
    let spawned = cmd.spawn();
    // Closes this end's copy of the pipe's writer (the closure holds it).
    drop(cmd);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let mut byte = [0u8; 1];
            let step = match std::io::Read::read(&mut step_rx, &mut byte) {
                Ok(1) => Step::from_byte(byte[0]),
                _ => None,
            };
            return cannot_start(match step {
                Some(step) => format!("{}: {e}", setup.describe(step)),
                None => format!("cannot start `{}`: {e}", spec.program),
            });
        }
    };
    drop(step_rx);
    let raw_pid = child.id() as i32;
    if let Some(process) = ProcRef::of(raw_pid)
        && let Err(e) = write_json(&meta.join(PROCESS_FILE), &process)
    {
        eprintln!("agora supervisor: {e}");
    }
    // Wait without reaping, so that the task's pid (and so its process
    // group id) cannot be reused while its leftovers are killed.
    if let Some(pid) = Pid::from_raw(raw_pid) {
        loop {
            match rustix::process::waitid(
                WaitId::Pid(pid),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    eprintln!("agora supervisor: waitid: {e}");
                    break;
                }
                Ok(_) => break,
            }
        }
        // A task ends with all of its processes.
        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
    }
    let status = loop {
        match child.wait() {
            Ok(status) => break status,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("agora supervisor: cannot wait for the task: {e}");
                return 1;
            }
        }
    };
    let record = match (status.code(), status.signal()) {
        (Some(code), _) => ExitRecord::Exited { code },
        (None, Some(signal)) => ExitRecord::Signaled { signal },
        (None, None) => ExitRecord::CannotStart {
            reason: format!("the task ended with an unknown status {status:?}"),
        },
    };
    record_exit(&meta, &record)
}
