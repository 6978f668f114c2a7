//! The executor: runs awarded tasks as child processes in sandboxes.
//!
//! INTERFACE CONTRACT (agreed between the executor and node-core work; the
//! executor work fills in the bodies and may add items, but keeps these
//! signatures):
//!
//! ```ignore
//! let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
//! let (mut exec, recovered) = Executor::open(config, tx).await?;
//! exec.launch(request);                    // emits Running, or Failed with the OS error
//! exec.kill(&task_id, grace);              // TERM, then KILL after grace
//! let chunk = exec.read_log(&task_id, LogStream::Stdout, 0, 65536).await;
//! while let Some(ExecEvent::Status { status, .. }) = rx.recv().await { .. }
//! ```
//!
//! Hidden subcommands: the `agora` CLI has `agora __supervise ARGS...`, which
//! calls [`supervise_main`] (the per-task supervisor process that outlives an
//! agent restart), and `agora __spawner`, which calls [`spawner_main`] (the
//! helper that starts supervisors).
//!
//! How it works:
//! - Each task runs in `DATA_DIR/sandboxes/TASK/` (its cwd) with `stdout` and
//!   `stderr` files there, under a supervisor process (`agora __supervise`,
//!   in its own session) that outlives the agent; see `supervisor.rs`.
//!   The supervisor and executor exchange files in `SANDBOX/.agora/`.
//!   Supervisors are not started as programs: a helper child of the
//!   agent, `agora __spawner`, forks itself into each (`spawner.rs`);
//!   without it, the executor starts `agora __supervise` itself.
//! - State is checkpointed in `DATA_DIR/tasks/TASK.json` (`checkpoint.rs`); a
//!   restarted agent re-attaches to running supervisors (pidfd, with the
//!   process start time checked against pid reuse) and reports tasks that
//!   ended while it was down.
//! - Limits go through cgroups when the host allows it (`cgroup.rs`).
//! - Tasks run as [`ExecutorConfig::task_user`] (else the agent's user),
//!   kept from the data dir, the keys and other sandboxes
//!   (`isolation.rs`).
//! - Tasks get `PATH`, the locale and `TZ` of the agent's environment
//!   (nothing else of it), `HOME` (the sandbox), `USER`, `LOGNAME`, the
//!   spec's `env` and `AGORA_TASK_ID`, `AGORA_NODE_ID`,
//!   `AGORA_FRAMEWORK_ID`, `AGORA_SANDBOX`, `AGORA_PORTS`. A task ends with all of its processes:
//!   when its main process exits, the rest of its process group is killed.
//! - One executor per data dir: `open` takes a lock on
//!   `DATA_DIR/executor.lock` and fails while another agent holds it.
//! - A checkpoint that cannot be read is moved aside and its task
//!   accounted for (`recovery.rs`): re-attached when its sandbox's launch
//!   record (`.agora/request.json`) and its supervisor are there, otherwise
//!   reported how it ended or `lost`, what is left of it killed first.
//! - A supervisor that dies without recording the task's end (SIGKILL) has
//!   what is left of its task (process group, session, cgroups) killed
//!   before the task is reported `lost` (`fsutil::kill_leftovers`).
//! - The data dir is looked at every 2 s (`health.rs`): while it is full,
//!   read-only or unwritable the agent hears [`ExecEvent::DataDir`] and
//!   takes no tasks; a launch meanwhile fails at once with the reason.
//! - Under systemd, the unit needs `KillMode=process` (or `mixed`) for
//!   tasks to survive an agent restart; the default kills the supervisors.
//! - Ended tasks are kept (checkpoint, sandbox, logs, an entry in
//!   [`Executor::history`]) until the garbage collector removes them: past
//!   a count or an age, or oldest first while the data dir's disk is too
//!   full ([`GcPolicy`], `gc.rs`). Running tasks are never collected. The
//!   same passes remove what no retained task accounts for
//!   (`leftovers.rs`): checkpoints set aside as corrupt and sandboxes set
//!   aside by a launch (kept for inspection, by the same age and count),
//!   orphan sandboxes and stale temp files (after a grace), never the
//!   sandbox of a task being launched or running.
//!
//! Reporting rules for the agent:
//! - A launched task emits `Running` once its process exists, then exactly
//!   one terminal status (`Finished`, `Failed`, `Killed`, or `Lost` when its
//!   supervisor vanished without a record). A task that cannot start emits
//!   only `Failed`.
//! - A task re-attached at open is returned as [`Recovered::Running`] (no
//!   new Running event); its end is emitted as an event, once.
//! - A task whose checkpoint was corrupt and that could not be re-attached
//!   is returned as [`Recovered::Ended`] by that open only, and is not in
//!   [`Executor::history`].
//! - Each terminal status is delivered to the agent once: as an event, or,
//!   when the executor was not there to send it (the agent was down, or it
//!   stopped before the event reached the channel), as [`Recovered::Ended`]
//!   from the next `open`. The delivery is recorded in the task's
//!   checkpoint, so later opens do not return the task again. (A crash
//!   between the delivery and that write delivers it once more.)
//! - Every ended task still retained, delivered or not, is in
//!   [`Executor::history`], across restarts, until the GC or
//!   [`Executor::forget`] removes it.

mod cgroup;
pub(crate) mod checkpoint;
pub(crate) mod fsutil;
mod gc;
mod health;
mod isolation;
mod leftovers;
mod logs;
mod monitor;
mod recovery;
mod spawner;
pub(crate) mod status;
pub(crate) mod supervisor;

use agora_protocol::ids::{NodeId, TaskId};
use agora_protocol::task::TaskStatus;
use agora_protocol::wire::{LogChunk, LogStream};
use anyhow::Context;
use checkpoint::Checkpoint;
use fsutil::Layout;
pub(crate) use fsutil::atomic_write;
pub use gc::GcPolicy;
use monitor::Shared;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Reads task logs from the data dir: [`LogReader::read`] blocks (on the
/// file system), so it belongs on a blocking thread.
#[derive(Clone, Debug)]
pub struct LogReader {
    layout: Layout,
}

impl LogReader {
    /// Up to `max_bytes` (capped at `MAX_LOG_CHUNK`) of a task's stream from
    /// `offset`; the chunk's `error` says why there is nothing.
    pub fn read(
        &self,
        task_id: &TaskId,
        stream: LogStream,
        offset: u64,
        max_bytes: u32,
    ) -> LogChunk {
        logs::read(&self.layout, task_id, stream, offset, max_bytes)
    }

    /// [`LogReader::read`] on a blocking thread.
    pub async fn read_async(
        self,
        task_id: TaskId,
        stream: LogStream,
        offset: u64,
        max_bytes: u32,
    ) -> LogChunk {
        let id = task_id.clone();
        match tokio::task::spawn_blocking(move || self.read(&id, stream, offset, max_bytes)).await {
            Ok(chunk) => chunk,
            Err(e) => LogChunk {
                request_id: 0,
                task_id,
                data: Vec::new(),
                next_offset: offset,
                eof: false,
                error: Some(format!("log read stopped: {e}")),
            },
        }
    }
}

/// How to run the executor.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// The node's data dir; sandboxes go in DIR/sandboxes/TASK/, checkpoints in DIR/tasks/.
    pub data_dir: PathBuf,
    /// This node (exported to tasks as AGORA_NODE_ID).
    pub node_id: NodeId,
    /// Try to use cgroups (v2, else v1) when the host allows it.
    pub cgroups: bool,
    /// Path of the `agora` binary to run as `agora __supervise` (std::env::current_exe()).
    pub agora_exe: PathBuf,
    /// When ended tasks are garbage collected.
    pub gc: GcPolicy,
    /// The user tasks run as when it is not the agent's own (`--task-user`;
    /// switching needs the agent to be root). With one, tasks are also
    /// kept from the data dir and other sandboxes: by permissions, and by
    /// a private mount namespace where the kernel allows it. `None`: tasks
    /// run as the agent's user.
    pub task_user: Option<crate::users::User>,
}

/// A task to start: what the host asked for ([`agora_protocol::host::Launch`]),
/// checkpointed as it is.
pub type LaunchRequest = agora_protocol::host::Launch;

/// What the executor reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecEvent {
    /// A task's state changed (running, finished, failed, killed).
    Status {
        /// The task's request (for the home node and framework).
        request: Box<LaunchRequest>,
        /// The status.
        status: TaskStatus,
    },
    /// Whether the data dir can take new tasks changed (see `health.rs`):
    /// `Some` while it cannot (full, read-only), `None` once it can again.
    /// Sent at open when the first look finds a problem, then on every
    /// change.
    DataDir {
        /// What is wrong, if anything.
        problem: Option<DataDirProblem>,
    },
}

/// Why the data dir cannot take new tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataDirFault {
    /// Its disk is full (or nearly: less than the reserve is free).
    DiskFull,
    /// It is on a read-only file system.
    ReadOnly,
    /// Writing there fails for another reason (permissions, IO errors).
    Unwritable,
}

impl DataDirFault {
    /// Every fault, for metrics.
    pub const ALL: [DataDirFault; 3] = [
        DataDirFault::DiskFull,
        DataDirFault::ReadOnly,
        DataDirFault::Unwritable,
    ];

    /// Its code in reasons, logs and metrics: `disk_full`,
    /// `data_dir_read_only`, `data_dir_unwritable`.
    pub fn code(self) -> &'static str {
        match self {
            DataDirFault::DiskFull => "disk_full",
            DataDirFault::ReadOnly => "data_dir_read_only",
            DataDirFault::Unwritable => "data_dir_unwritable",
        }
    }

    /// In plain words.
    pub fn plain(self) -> &'static str {
        match self {
            DataDirFault::DiskFull => "the data dir's disk is full",
            DataDirFault::ReadOnly => "the data dir is read-only",
            DataDirFault::Unwritable => "the data dir cannot be written",
        }
    }
}

/// A data dir that cannot take new tasks, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDirProblem {
    /// What kind of problem.
    pub fault: DataDirFault,
    /// For people: what was measured, what to do.
    pub detail: String,
}

impl std::fmt::Display for DataDirProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.fault.code(), self.detail)
    }
}

/// A task found in the checkpoints when the executor opened that the agent
/// must hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// Still running: re-attached; its end will be reported as an event.
    Running(LaunchRequest),
    /// Ended with a final status that was never delivered to an agent: it
    /// ended while no executor was open, or the executor stopped before its
    /// end event reached the channel. Returned by one `open` only (the
    /// delivery is recorded in the checkpoint); tasks whose end was already
    /// delivered are not returned, they are in [`Executor::history`].
    Ended(LaunchRequest, TaskStatus),
}

/// A retained ended task (see [`Executor::history`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndedTask {
    /// What was launched: task id, framework, home node, spec (name,
    /// resources, command), ports.
    pub request: LaunchRequest,
    /// Its final status (state, exit code or signal, reason, this node).
    pub status: TaskStatus,
    /// When it ended, Unix milliseconds (wall clock). For a checkpoint
    /// written before end times were recorded: its last write.
    pub ended_unix_ms: u64,
}

/// Attempts (20 ms apart) to take the data dir lock before giving up.
const LOCK_TRIES: u32 = 100;

/// Most kill requests queued for one task (further ones are redundant).
const KILL_QUEUE: usize = 4;

/// A launch drops the finished entries from the task table once it holds
/// more than twice the running tasks plus this many.
const TABLE_SLACK: usize = 64;

struct Entry {
    kill_tx: mpsc::Sender<Duration>,
    monitor: JoinHandle<()>,
}

/// The executor of one node.
pub struct Executor {
    shared: Arc<Shared>,
    /// Held (flock) while this executor owns the data dir.
    _lock: std::fs::File,
    runtime: tokio::runtime::Handle,
    /// Monitors of tasks launched or re-attached (finished ones are dropped
    /// at launches, see [`TABLE_SLACK`]); ended tasks live in `shared.ended`.
    tasks: HashMap<TaskId, Entry>,
    /// The garbage collector's task (taken by `detach`).
    gc: Option<JoinHandle<()>>,
    /// The data dir's health probe (`health.rs`; taken by `detach`).
    health: Option<JoinHandle<()>>,
}

impl Executor {
    /// Opens the data dir, reads the checkpoints (moving corrupt ones aside
    /// with a log line), re-attaches to tasks still running, sets up
    /// cgroups if possible (logging which version, or why none), and starts
    /// the garbage collector, whose first pass runs at once.
    ///
    /// Returns the executor and what the agent must hear about: every task
    /// re-attached ([`Recovered::Running`]) and every ended task whose final
    /// status was never delivered ([`Recovered::Ended`], marked delivered
    /// from now on). Ended tasks already delivered are only in
    /// [`Executor::history`].
    ///
    /// # Errors
    /// The data dir cannot be created or read.
    pub async fn open(
        config: ExecutorConfig,
        events: tokio::sync::mpsc::Sender<ExecEvent>,
    ) -> anyhow::Result<(Executor, Vec<Recovered>)> {
        let data_dir = std::path::absolute(&config.data_dir)
            .with_context(|| format!("data dir {}", config.data_dir.display()))?;
        let layout = Layout { data_dir };
        for dir in [layout.sandboxes(), layout.checkpoints()] {
            std::fs::create_dir_all(&dir).with_context(|| {
                format!(
                    "cannot create {}; check the --data-dir path and its permissions",
                    dir.display()
                )
            })?;
        }
        isolation::harden_dirs(&layout.data_dir, &layout.checkpoints(), &layout.sandboxes())
            .map_err(anyhow::Error::msg)?;
        let isolation = match &config.task_user {
            None => isolation::Isolation::default(),
            Some(user) => {
                let exe = config.agora_exe.clone();
                let probe = tokio::task::spawn_blocking(move || isolation::probe_namespaces(&exe))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                let hide = match probe {
                    Ok(()) => {
                        tracing::info!(
                            user = %user.name,
                            uid = user.uid,
                            "tasks run as {} in a private mount namespace that hides the data dir",
                            user.name
                        );
                        Some(layout.data_dir.clone())
                    }
                    Err(e) => {
                        tracing::warn!(
                            user = %user.name,
                            uid = user.uid,
                            "tasks run as {} without a private mount namespace ({e}): the data dir \
                             and other sandboxes are guarded by their permissions only, and tasks \
                             running as the same user can read each other's sandboxes",
                            user.name
                        );
                        None
                    }
                };
                isolation::Isolation {
                    user: Some(user.clone()),
                    hide,
                }
            }
        };
        let lock_path = layout.data_dir.join("executor.lock");
        // Held open read-only: a file open for writing would keep the data
        // dir's file system from being remounted read-only.
        if !lock_path.exists() {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .with_context(|| format!("cannot create {}", lock_path.display()))?;
        }
        let lock = std::fs::File::open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        // A fork elsewhere in this process (a task being spawned) briefly
        // holds a copy of a just-released lock until it execs: retry a bit.
        let mut tries = 0;
        while let Err(e) =
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        {
            tries += 1;
            if tries >= LOCK_TRIES {
                anyhow::bail!(
                    "another agent is using the data dir {} (lock {}: {e}); stop it or give this one another --data-dir",
                    layout.data_dir.display(),
                    lock_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (enabled, node) = (config.cgroups, config.node_id.as_str().to_string());
        let cgroups = tokio::task::spawn_blocking(move || cgroup::Cgroups::detect(enabled, &node))
            .await
            .context("cgroup detection stopped")?;
        tracing::info!("{}", cgroups.describe());
        let shared = Arc::new(Shared {
            layout: layout.clone(),
            node_id: config.node_id.clone(),
            agora_exe: config.agora_exe.clone(),
            cgroups,
            isolation,
            events,
            cancel: CancellationToken::new(),
            running: AtomicUsize::new(0),
            gc: config.gc.clone(),
            active: std::sync::Mutex::new(HashSet::new()),
            ended: std::sync::Mutex::new(HashMap::new()),
            data_dir: std::sync::Mutex::new(None),
            spawner: spawner::Spawner::new(config.agora_exe.clone()),
        });
        let (node_id, policy) = (config.node_id.clone(), config.gc.clone());
        let s2 = Arc::clone(&shared);
        let scan = tokio::task::spawn_blocking(move || {
            recovery::scan(&layout, &node_id, &policy, &|t| s2.cgroups.task_dirs(t))
        })
        .await
        .context("reading checkpoints stopped")?
        .with_context(|| {
            format!(
                "cannot read the checkpoints in {}",
                shared.layout.checkpoints().display()
            )
        })?;
        let runtime = tokio::runtime::Handle::current();
        let mut recovered = Vec::new();
        {
            let mut table = shared.ended_table();
            for (r, deliver) in scan.ended {
                if deliver {
                    recovered.push(Recovered::Ended(
                        r.task.request.clone(),
                        r.task.status.clone(),
                    ));
                }
                table.insert(r.task.request.task_id.clone(), r);
            }
        }
        for (request, status) in scan.concluded {
            recovered.push(Recovered::Ended(request, status));
        }
        let gc = runtime.spawn(gc::run(Arc::clone(&shared), config.gc.clone()));
        let health = runtime.spawn(health::run(Arc::clone(&shared)));
        let mut exec = Executor {
            shared,
            _lock: lock,
            runtime,
            tasks: HashMap::new(),
            gc: Some(gc),
            health: Some(health),
        };
        for (cp, sup) in scan.running {
            tracing::info!(task = %cp.request.task_id, supervisor = sup.pid, "re-attached to a running task");
            recovered.push(Recovered::Running(cp.request.clone()));
            let (kill_tx, kill_rx) = mpsc::channel(KILL_QUEUE);
            let id = cp.request.task_id.clone();
            exec.shared.active_set().insert(id.clone());
            exec.shared.running.fetch_add(1, Ordering::SeqCst);
            let monitor = exec.runtime.spawn(monitor::reattach(
                Arc::clone(&exec.shared),
                cp,
                sup,
                kill_rx,
            ));
            exec.tasks.insert(id, Entry { kill_tx, monitor });
        }
        Ok((exec, recovered))
    }

    /// Starts a task. Reports Running once started, or Failed with the OS
    /// error as the reason when the command cannot start.
    ///
    /// A task id the executor already knows (running, or ended and not yet
    /// collected or forgotten) is ignored with a warning: ids are unique in
    /// the cluster.
    ///
    /// Must be called from within the tokio runtime the executor was opened on
    /// or any thread (it spawns onto that runtime).
    pub fn launch(&mut self, request: LaunchRequest) {
        let id = request.task_id.clone();
        // The ended table as well as the checkpoint: an ended task whose
        // checkpoint could not be written is still retained (and its
        // sandbox is the GC's to remove).
        if self.tasks.contains_key(&id)
            || self.shared.ended_table().contains_key(&id)
            || self.shared.layout.checkpoint(id.as_str()).exists()
        {
            tracing::warn!(task = %id, "launch ignored: this node already has a task with this id");
            return;
        }
        tracing::info!(task = %id, "launching task");
        if self.tasks.len() >= 2 * self.running() + TABLE_SLACK {
            self.tasks.retain(|_, e| !e.monitor.is_finished());
        }
        let (kill_tx, kill_rx) = mpsc::channel(KILL_QUEUE);
        // Before the monitor creates the sandbox: from now on the GC leaves
        // a sandbox with this name alone.
        self.shared.active_set().insert(id.clone());
        self.shared.running.fetch_add(1, Ordering::SeqCst);
        let monitor = self.runtime.spawn(monitor::launch(
            Arc::clone(&self.shared),
            Checkpoint::new(request),
            kill_rx,
        ));
        self.tasks.insert(id, Entry { kill_tx, monitor });
    }

    /// Kills a task: TERM to its process group, KILL after `grace`.
    /// Reports Killed when it is gone. Unknown tasks are ignored.
    pub fn kill(&mut self, task_id: &TaskId, grace: Duration) {
        match self.tasks.get(task_id) {
            Some(entry) if !entry.monitor.is_finished() => {
                // A full queue already holds a kill: nothing is lost.
                let _ = entry.kill_tx.try_send(grace);
            }
            _ => tracing::debug!(task = %task_id, "kill ignored: the task is not running here"),
        }
    }

    /// A reader of this executor's task logs, to move to a blocking thread.
    pub fn log_reader(&self) -> LogReader {
        LogReader {
            layout: self.shared.layout.clone(),
        }
    }

    /// Reads part of a task's stdout or stderr (at most `max_bytes`, capped
    /// at 256 KiB). Errors go in `LogChunk::error`.
    pub async fn read_log(
        &self,
        task_id: &TaskId,
        stream: LogStream,
        offset: u64,
        max_bytes: u32,
    ) -> LogChunk {
        self.log_reader()
            .read_async(task_id.clone(), stream, offset, max_bytes)
            .await
    }

    /// Tasks currently running.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// One line for the log and `agora nodes`: "cgroup v2 at ...", or why none.
    pub fn cgroup_mode(&self) -> String {
        self.shared.cgroups.describe()
    }

    /// The cgroup directories a task gets on this node (empty without
    /// cgroups). They exist while the task runs and are removed when it ends.
    pub fn cgroup_dirs(&self, task_id: &TaskId) -> Vec<PathBuf> {
        self.shared.cgroups.task_dirs(task_id.as_str())
    }

    /// The sandbox directory of a task (its cwd; `stdout` and `stderr` are there).
    pub fn sandbox_dir(&self, task_id: &TaskId) -> PathBuf {
        self.shared.layout.sandbox(task_id.as_str())
    }

    /// Every ended task this executor retains, oldest end first (ties by
    /// task id): those found in the checkpoints at open (including the ones
    /// returned as [`Recovered::Ended`]) and those that ended since, until
    /// the GC or [`Executor::forget`] removes them. A task enters it just
    /// after its end event was sent and that delivery was written to its
    /// checkpoint (so shortly after the agent can receive the event).
    /// Between two GC passes it can exceed [`GcPolicy::max_ended`] by the
    /// tasks ended since the last pass (or a backlog the GC works through
    /// [`GcPolicy::max_per_pass`] tasks a pass).
    pub fn history(&self) -> Vec<EndedTask> {
        let mut out: Vec<EndedTask> = self
            .shared
            .ended_table()
            .values()
            .map(|r| r.task.clone())
            .collect();
        out.sort_by(|a, b| {
            (a.ended_unix_ms, &a.request.task_id).cmp(&(b.ended_unix_ms, &b.request.task_id))
        });
        out
    }

    /// Drops the checkpoint of an ended task and its entry in
    /// [`Executor::history`], so later opens no longer know it. Its sandbox
    /// (and logs) stay for [`GcPolicy::orphan_grace`] from now, then the GC
    /// removes it as an orphan. Returns false (and does nothing) when the
    /// task is still running or has no checkpoint.
    pub fn forget(&mut self, task_id: &TaskId) -> bool {
        if self
            .tasks
            .get(task_id)
            .is_some_and(|e| !e.monitor.is_finished())
        {
            tracing::warn!(task = %task_id, "forget ignored: the task is still running");
            return false;
        }
        let path = self.shared.layout.checkpoint(task_id.as_str());
        let ended = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Checkpoint>(&b).ok())
            .is_some_and(|c| c.ended.is_some());
        if !ended {
            return false;
        }
        // The orphan grace counts from now (a sandbox's mtime is otherwise
        // that of its last new file, often the task's start).
        let sandbox = self.shared.layout.sandbox(task_id.as_str());
        if let Err(e) = fsutil::touch(&sandbox)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::debug!(task = %task_id, sandbox = %sandbox.display(), "cannot touch: {e}");
        }
        self.tasks.remove(task_id);
        self.shared.ended_table().remove(task_id);
        match std::fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(task = %task_id, checkpoint = %path.display(), "cannot remove the checkpoint: {e}");
                false
            }
        }
    }

    /// Forgets an ended task (see [`Executor::forget`]) and deletes its
    /// sandbox, logs included. Returns false (and does nothing) while the
    /// task runs; true once nothing of it is left on disk.
    pub async fn purge(&mut self, task_id: &TaskId) -> bool {
        if self
            .tasks
            .get(task_id)
            .is_some_and(|e| !e.monitor.is_finished())
        {
            tracing::warn!(task = %task_id, "purge ignored: the task is still running");
            return false;
        }
        self.forget(task_id);
        if self.shared.layout.checkpoint(task_id.as_str()).exists() {
            return false;
        }
        let sandbox = self.shared.layout.sandbox(task_id.as_str());
        let removed =
            tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&sandbox) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("cannot remove {}: {e}", sandbox.display())),
            })
            .await;
        match removed {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(task = %task_id, "{e}");
                false
            }
            Err(e) => {
                tracing::warn!(task = %task_id, "sandbox removal stopped: {e}");
                false
            }
        }
    }

    /// Kills nothing; forgets nothing: tasks keep running across an agent
    /// stop (they are re-attached on the next open). Stops the monitors and the garbage collector.
    pub async fn detach(mut self) {
        self.shared.cancel.cancel();
        self.shared.spawner.close().await;
        for (_, entry) in self.tasks.drain() {
            let _ = entry.monitor.await;
        }
        if let Some(gc) = self.gc.take() {
            let _ = gc.await;
        }
        if let Some(health) = self.health.take() {
            let _ = health.await;
        }
    }
}

impl Drop for Executor {
    /// Same as [`Executor::detach`] without waiting: the monitors stop, the
    /// tasks keep running.
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        self.shared.spawner.close_now();
    }
}

/// Entry point of `agora __supervise`: runs one task as a supervisor process
/// and returns the process exit code.
pub fn supervise_main(args: Vec<OsString>) -> i32 {
    supervisor::run(args)
}

/// Entry point of `agora __spawner`: the helper that starts supervisors by
/// forking itself (`spawner.rs`); `args` is the whole command line.
/// Returns the process exit code.
pub fn spawner_main(args: Vec<OsString>) -> i32 {
    spawner::serve(args)
}

// The agent moves the executor into its own task and shares references
// across awaits.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Executor>();
};
