//! One monitor per task: a tokio task that starts the task's supervisor (or
//! re-attaches to it after an agent restart), notices when the task starts
//! and ends, carries out kills (TERM to the task's process group, KILL when
//! the grace period is over), and turns the supervisor's exit record into
//! the task's final status. Each monitor is the only writer of its task's
//! checkpoint, so checkpoint writes never race; its last act is to put its
//! task in the ended-task table, from where the GC (`gc.rs`) may collect it.

use super::cgroup::{self, Cgroups};
use super::checkpoint::{Checkpoint, KillState};
use super::fsutil::{
    LAUNCH_FILE, Layout, OLD_TAG, ProcRef, REQUEST_FILE, SUPERVISOR_LOG, aside_path, atomic_write,
    kill_leftovers, unix_ms,
};
use super::gc::{GcPolicy, Retained};
use super::health;
use super::status::final_status;
use super::supervisor::{ExitRecord, LaunchSpec, read_exit, read_process};
use super::{EndedTask, ExecEvent};
use agora_protocol::ids::{NodeId, TaskId};
use agora_protocol::task::{Command, TaskState, TaskStatus};
use rustix::process::{Pid, Signal};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What every monitor shares with the executor.
pub(crate) struct Shared {
    pub layout: Layout,
    pub node_id: NodeId,
    pub agora_exe: PathBuf,
    pub cgroups: Cgroups,
    /// Who tasks run as and what they are kept from (`isolation.rs`).
    pub isolation: super::isolation::Isolation,
    pub events: mpsc::Sender<ExecEvent>,
    pub cancel: CancellationToken,
    pub running: AtomicUsize,
    /// The GC policy (for what log lines say about files kept for
    /// inspection).
    pub gc: GcPolicy,
    /// Tasks launched or re-attached whose monitor has not finished them
    /// yet: `Executor::launch` adds a task before its monitor creates the
    /// sandbox, and [`finish`] removes it after the task is in the
    /// ended-task table (or its monitor stopped without delivering the end,
    /// its checkpoint written). The GC never collects a sandbox named for a
    /// task in it (see `leftovers.rs`). Lock order: this one before `ended`.
    pub active: Mutex<HashSet<TaskId>>,
    /// Ended tasks whose status was delivered and whose monitor is done,
    /// until the GC or `forget` removes them (bounded by the GC policy).
    pub ended: Mutex<HashMap<TaskId, Retained>>,
    /// What is wrong with the data dir as last reported to the agent
    /// (`health::report`).
    pub data_dir: Mutex<Option<super::DataDirProblem>>,
    /// Starts supervisors without a program start each (`spawner.rs`).
    pub spawner: super::spawner::Spawner,
}

impl Shared {
    /// The ended-task table (a panic elsewhere while it was held leaves it
    /// usable: every change to it is a single insert or remove).
    pub fn ended_table(&self) -> MutexGuard<'_, HashMap<TaskId, Retained>> {
        self.ended.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The data dir's last reported problem (usable after a panic: every
    /// change is one assignment).
    pub fn data_dir_state(&self) -> MutexGuard<'_, Option<super::DataDirProblem>> {
        self.data_dir.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The active set (see [`Shared::active`]; usable after a panic for the
    /// same reason as the ended-task table).
    pub fn active_set(&self) -> MutexGuard<'_, HashSet<TaskId>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Longest pause between two looks for a task's start.
const MAX_START_POLL: Duration = Duration::from_millis(200);
/// Pause between two looks at a supervisor that cannot be watched by pidfd.
const LIVENESS_POLL: Duration = Duration::from_millis(250);

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)
}

async fn save(shared: &Shared, cp: &mut Checkpoint) {
    let layout = shared.layout.clone();
    let mut copy = cp.clone();
    let task = cp.request.task_id.clone();
    match blocking(move || copy.save(&layout).map(|()| copy.updated_unix_ms)).await {
        Ok(Ok(at)) => cp.updated_unix_ms = at,
        Ok(Err(e)) | Err(e) => tracing::warn!(
            task = %task,
            "cannot write the task's checkpoint: {e}; it will not survive an agent restart"
        ),
    }
}

/// Reports that the task of `cp` is running.
async fn emit_running(shared: &Shared, cp: &Checkpoint) {
    let status = TaskStatus::new(
        cp.request.task_id.clone(),
        TaskState::Running,
        Some(shared.node_id.clone()),
    );
    emit(
        shared,
        ExecEvent::Status {
            request: Box::new(cp.request.clone()),
            status,
        },
    )
    .await;
}

/// Sends an event unless the executor is going away; true when the event
/// reached the agent's channel.
async fn emit(shared: &Shared, event: ExecEvent) -> bool {
    tokio::select! {
        _ = shared.cancel.cancelled() => false,
        sent = shared.events.send(event) => sent.is_ok(),
    }
}

/// How the monitor learns that the supervisor has exited.
enum Watcher {
    /// Our own child: wait for it (this also reaps it).
    Child(tokio::process::Child),
    /// A child of the spawner, which reports its exit; should the spawner
    /// go away first, it is watched as after a restart.
    Spawned(tokio::sync::oneshot::Receiver<i32>, ProcRef),
    /// Another process (after a restart): a pidfd becomes readable on exit.
    Pidfd(AsyncFd<OwnedFd>, ProcRef),
    /// No pidfd: look at /proc now and then.
    Poll(ProcRef),
}

impl Watcher {
    /// Watches a supervisor this process did not start.
    fn attach(process: ProcRef) -> Watcher {
        let Some(pid) = Pid::from_raw(process.pid) else {
            return Watcher::Poll(process);
        };
        // Open first, then check the start time: if the pid was reused
        // before the open, the check fails and we do not watch a stranger.
        match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            // SAFETY: the pidfd is owned by the AsyncFd and neither replaced
            // nor closed while registered.
            Ok(fd) if process.is_alive() => {
                match unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                {
                    Ok(fd) => Watcher::Pidfd(fd, process),
                    Err(_) => Watcher::Poll(process),
                }
            }
            _ => Watcher::Poll(process),
        }
    }

    /// Resolves when the supervisor has exited, with a note when it exited
    /// abnormally (for the reason of a lost task).
    async fn exited(&mut self) -> Option<String> {
        if let Watcher::Spawned(exit, process) = self {
            match exit.await {
                Ok(raw) => {
                    use std::os::unix::process::ExitStatusExt;
                    let status = std::process::ExitStatus::from_raw(raw);
                    return (!status.success()).then(|| format!("the supervisor {status}"));
                }
                Err(_) => *self = Watcher::attach(process.clone()),
            }
        }
        match self {
            // Replaced just above.
            Watcher::Spawned(..) => None,
            Watcher::Child(child) => match child.wait().await {
                Ok(status) if status.success() => None,
                Ok(status) => Some(format!("the supervisor {status}")),
                Err(e) => Some(format!("cannot wait for the supervisor: {e}")),
            },
            Watcher::Pidfd(fd, process) => {
                if fd.readable().await.is_ok() {
                    return None;
                }
                while process.is_alive() {
                    tokio::time::sleep(LIVENESS_POLL).await;
                }
                None
            }
            Watcher::Poll(process) => {
                while process.is_alive() {
                    tokio::time::sleep(LIVENESS_POLL).await;
                }
                None
            }
        }
    }
}

/// Signals a process group whose leader is `leader`, if it is still that process.
fn signal_group(leader: &ProcRef, sig: Signal) {
    if leader.is_alive()
        && let Some(pid) = Pid::from_raw(leader.pid)
        && let Err(e) = rustix::process::kill_process_group(pid, sig)
    {
        tracing::debug!(pid = leader.pid, "cannot signal process group: {e}");
    }
}

/// Records the final status in the checkpoint and frees the task's cgroups
/// (blocking), before the end is reported.
fn conclude(layout: &Layout, cp: &mut Checkpoint, status: TaskStatus) {
    cp.end(status);
    if let Err(e) = cp.save(layout) {
        tracing::warn!(
            task = %cp.request.task_id,
            "cannot write the task's checkpoint: {e}; it will not survive an agent restart"
        );
    }
    if !cp.cgroups.is_empty() {
        cgroup::remove(&cp.cgroups);
    }
}

/// Records the final status, frees the cgroups and reports the end (see
/// [`deliver`]).
async fn finish(shared: &Shared, cp: Checkpoint, status: TaskStatus) {
    let layout = shared.layout.clone();
    let (mut copy, st) = (cp.clone(), status.clone());
    let cp = match blocking(move || {
        conclude(&layout, &mut copy, st);
        copy
    })
    .await
    {
        Ok(cp) => cp,
        Err(e) => {
            tracing::warn!(task = %status.task_id, "cannot record the task's end: {e}");
            let mut cp = cp;
            cp.end(status.clone());
            cp
        }
    };
    deliver(shared, cp, status).await;
}

/// Reports the end of a task already concluded ([`conclude`]); once the
/// report is delivered, records that in the checkpoint (so a restart does
/// not report it again) and retains the task in the ended-task table.
async fn deliver(shared: &Shared, mut cp: Checkpoint, status: TaskStatus) {
    shared.running.fetch_sub(1, Ordering::SeqCst);
    tracing::info!(task = %status.task_id, state = %status.state, reason = ?status.reason, "task ended");
    let delivered = emit(
        shared,
        ExecEvent::Status {
            request: Box::new(cp.request.clone()),
            status: status.clone(),
        },
    )
    .await;
    if !delivered {
        // The executor is going away: the next open reports it.
        shared.active_set().remove(&status.task_id);
        return;
    }
    cp.reported = true;
    let id = status.task_id.clone();
    let layout = shared.layout.clone();
    // One trip to a blocking thread for both.
    let retained = blocking(move || {
        if let Err(e) = cp.save(&layout) {
            tracing::warn!(task = %cp.request.task_id, "cannot record the delivery in the task's checkpoint: {e}");
        }
        let task = EndedTask {
            ended_unix_ms: cp.ended_at(),
            request: cp.request,
            status,
        };
        Retained::measure(&layout, task)
    })
    .await;
    if let Ok(r) = retained {
        shared.ended_table().insert(id.clone(), r);
    }
    // Only now: the GC must see the task in one table or the other.
    shared.active_set().remove(&id);
}

/// The supervisor's instructions for a request.
fn launch_spec(
    shared: &Shared,
    cp: &Checkpoint,
    sandbox: &std::path::Path,
    cgroup_procs: Vec<PathBuf>,
) -> LaunchSpec {
    let req = &cp.request;
    let (program, args) = match &req.spec.command {
        Command::Shell(line) => ("sh".to_string(), vec!["-c".to_string(), line.clone()]),
        Command::Argv(argv) => (
            argv.first().cloned().unwrap_or_default(),
            argv.iter().skip(1).cloned().collect(),
        ),
    };
    let mut env = super::isolation::base_env(shared.isolation.user.as_ref(), sandbox);
    env.extend(req.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let ports: Vec<String> = req.ports.iter().map(u16::to_string).collect();
    env.push(("AGORA_TASK_ID".into(), req.task_id.to_string()));
    env.push(("AGORA_NODE_ID".into(), shared.node_id.to_string()));
    env.push(("AGORA_FRAMEWORK_ID".into(), req.framework.to_string()));
    env.push(("AGORA_SANDBOX".into(), sandbox.display().to_string()));
    env.push(("AGORA_PORTS".into(), ports.join(",")));
    LaunchSpec {
        program,
        args,
        env,
        cwd: sandbox.to_path_buf(),
        stdout: sandbox.join("stdout"),
        stderr: sandbox.join("stderr"),
        cgroup_procs,
        isolation: shared.isolation.clone(),
        clear_env: true,
    }
}

/// Prepares the sandbox, cgroups and checkpoint, then starts the supervisor.
fn prepare(shared: &Shared, cp: &mut Checkpoint) -> Result<(), String> {
    let task = cp.request.task_id.as_str().to_string();
    let sandbox = shared.layout.sandbox(&task);
    let meta = shared.layout.meta(&task);
    if sandbox.exists() {
        let aside = aside_path(&sandbox, OLD_TAG, unix_ms());
        tracing::warn!(
            task = %task,
            moved_to = %aside.display(),
            "a sandbox for this task id already exists (of an earlier task with this id that \
             the executor no longer knows); moving it aside, {}",
            shared.gc.aside_note()
        );
        std::fs::rename(&sandbox, &aside).map_err(|e| {
            format!(
                "cannot move the old sandbox {} aside: {e}{}",
                sandbox.display(),
                health::hint(&e)
            )
        })?;
    }
    std::fs::create_dir_all(&meta).map_err(|e| {
        format!(
            "cannot create the sandbox {}: {e}{}",
            sandbox.display(),
            health::hint(&e)
        )
    })?;
    super::isolation::prepare_sandbox(&sandbox, &meta, shared.isolation.user.as_ref())?;
    let procs = if matches!(shared.cgroups, Cgroups::None { .. }) {
        Vec::new()
    } else {
        match shared.cgroups.create(&task, &cp.request.spec.resources) {
            Ok(procs) => {
                cp.cgroups = procs
                    .iter()
                    .filter_map(|p| p.parent().map(PathBuf::from))
                    .collect();
                procs
            }
            Err(e) => {
                tracing::warn!(task = %task, "running the task without cgroup limits: {e}");
                Vec::new()
            }
        }
    };
    let spec = launch_spec(shared, cp, &sandbox, procs);
    let written = write_launch(shared, cp, &meta, &spec);
    if written.is_err() && !cp.cgroups.is_empty() {
        // Nothing will run in them: free them now (the end of a task that
        // never started does not know of them).
        cgroup::remove(&cp.cgroups);
        cp.cgroups.clear();
    }
    written
}

/// Writes the launch spec, the request and the checkpoint of a task being
/// prepared.
fn write_launch(
    shared: &Shared,
    cp: &mut Checkpoint,
    meta: &std::path::Path,
    spec: &LaunchSpec,
) -> Result<(), String> {
    let write = |name: &str, bytes: Vec<u8>| {
        let path = meta.join(name);
        atomic_write(&path, &bytes)
            .map_err(|e| format!("cannot write {}: {e}{}", path.display(), health::hint(&e)))
    };
    write(
        LAUNCH_FILE,
        serde_json::to_vec_pretty(spec).map_err(|e| e.to_string())?,
    )?;
    write(
        REQUEST_FILE,
        serde_json::to_vec_pretty(&cp.request).map_err(|e| e.to_string())?,
    )?;
    cp.save(&shared.layout).map_err(|e| {
        format!(
            "cannot write the task's checkpoint: {e}{}",
            health::hint(&e)
        )
    })
}

fn spawn_supervisor(shared: &Shared, task: &str) -> io::Result<tokio::process::Child> {
    let sandbox = shared.layout.sandbox(task);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(shared.layout.meta(task).join(SUPERVISOR_LOG))?;
    let mut cmd = tokio::process::Command::new(&shared.agora_exe);
    cmd.arg("__supervise")
        .arg(&sandbox)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(false);
    // No closure between fork and exec: the supervisor calls setsid itself,
    // so the standard library spawns it with posix_spawn (vfork) instead of
    // forking the whole agent (see `supervisor::run`).
    cmd.spawn()
}

/// Starts a new task and watches it to the end.
pub(crate) async fn launch(
    shared: Arc<Shared>,
    mut cp: Checkpoint,
    kill_rx: mpsc::Receiver<Duration>,
) {
    let task = cp.request.task_id.as_str().to_string();
    let known = shared.data_dir_state().clone();
    if let Some(p) = known {
        // The node stopped taking tasks after this one was confirmed.
        let status = TaskStatus::new(
            cp.request.task_id.clone(),
            TaskState::Failed,
            Some(shared.node_id.clone()),
        )
        .with_reason(format!("this node's data dir cannot take the task: {p}"));
        return finish(&shared, cp, status).await;
    }
    let prepared = {
        let shared2 = Arc::clone(&shared);
        let mut copy = cp.clone();
        blocking(move || prepare(&shared2, &mut copy).map(|()| copy)).await
    };
    cp = match prepared {
        Ok(Ok(c)) => c,
        Ok(Err(reason)) => {
            // A full or read-only data dir: stop taking tasks at once.
            let layout = shared.layout.clone();
            if let Ok(Some(p)) = blocking(move || health::check(&layout, false)).await {
                health::report(&shared, Some(p)).await;
            }
            let status = TaskStatus::new(
                cp.request.task_id.clone(),
                TaskState::Failed,
                Some(shared.node_id.clone()),
            )
            .with_reason(reason);
            return finish(&shared, cp, status).await;
        }
        Err(e) => {
            let status = TaskStatus::new(
                cp.request.task_id.clone(),
                TaskState::Failed,
                Some(shared.node_id.clone()),
            )
            .with_reason(format!("cannot prepare the task: {e}"));
            return finish(&shared, cp, status).await;
        }
    };
    let watcher = match start_supervisor(&shared, &task).await {
        Ok(watcher) => watcher,
        Err(e) => {
            let status = TaskStatus::new(
                cp.request.task_id.clone(),
                TaskState::Failed,
                Some(shared.node_id.clone()),
            )
            .with_reason(format!(
                "cannot start the task supervisor `{} __supervise`: {e}{}",
                shared.agora_exe.display(),
                health::hint(&e)
            ));
            return finish(&shared, cp, status).await;
        }
    };
    cp.supervisor = match &watcher {
        Watcher::Child(child) => child.id().and_then(|pid| ProcRef::of(pid as i32)),
        Watcher::Spawned(_, process) => Some(process.clone()),
        Watcher::Pidfd(..) | Watcher::Poll(_) => None,
    };
    save(&shared, &mut cp).await;
    watch(shared, cp, watcher, true, kill_rx).await;
}

/// Starts the supervisor of `task`: through the spawner, else (it cannot
/// be used) as a child of this process.
async fn start_supervisor(shared: &Shared, task: &str) -> io::Result<Watcher> {
    let sandbox = shared.layout.sandbox(task);
    let log = shared.layout.meta(task).join(SUPERVISOR_LOG);
    match shared.spawner.spawn(&sandbox, &log).await {
        Ok(s) => Ok(Watcher::Spawned(s.exit, s.process)),
        Err(e) => {
            tracing::debug!(task = %task, "starting the supervisor directly: {e}");
            spawn_supervisor(shared, task).map(Watcher::Child)
        }
    }
}

/// Watches a task found running at open.
pub(crate) async fn reattach(
    shared: Arc<Shared>,
    cp: Checkpoint,
    supervisor: ProcRef,
    kill_rx: mpsc::Receiver<Duration>,
) {
    watch(shared, cp, Watcher::attach(supervisor), false, kill_rx).await;
}

async fn watch(
    shared: Arc<Shared>,
    mut cp: Checkpoint,
    mut watcher: Watcher,
    fresh: bool,
    mut kill_rx: mpsc::Receiver<Duration>,
) {
    let meta = shared.layout.meta(cp.request.task_id.as_str());
    let mut task_proc: Option<ProcRef> = None;
    let mut term_sent = false;
    let mut kill_sent = false;
    let mut delay = Duration::from_millis(5);
    let note = loop {
        if task_proc.is_none()
            && let Some(p) = read_process(&meta)
        {
            task_proc = Some(p);
            if !cp.started {
                // Written with the checkpoint's next write (a kill, the
                // end): nothing reads it back before then, and a write
                // here cost every task a sync and a trip to a blocking
                // thread.
                cp.started = true;
                if fresh {
                    emit_running(&shared, &cp).await;
                }
            }
        }
        if cp.kill.is_some()
            && !term_sent
            && let Some(p) = &task_proc
        {
            signal_group(p, Signal::TERM);
            term_sent = true;
        }
        let deadline = cp.kill.as_ref().filter(|_| !kill_sent).map(|k| {
            tokio::time::Instant::now()
                + Duration::from_millis(k.deadline_unix_ms.saturating_sub(unix_ms()))
        });
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return,
            note = watcher.exited() => break note,
            Some(grace) = kill_rx.recv() => {
                if cp.kill.is_none() {
                    let grace_ms = grace.as_millis() as u64;
                    cp.kill = Some(KillState { grace_ms, deadline_unix_ms: unix_ms() + grace_ms });
                    save(&shared, &mut cp).await;
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                kill_sent = true;
                match &task_proc {
                    Some(p) => signal_group(p, Signal::KILL),
                    // Not started yet: stop the supervisor (its own group).
                    None => if let Some(s) = &cp.supervisor { signal_group(s, Signal::KILL) },
                }
                for dir in &cp.cgroups {
                    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
                }
            }
            _ = tokio::time::sleep(delay), if task_proc.is_none() => {
                delay = (delay * 2).min(MAX_START_POLL);
            }
        }
    };
    if fresh && !cp.started && read_process(&meta).is_some() {
        // It started and ended between two looks: still report Running first.
        cp.started = true;
        emit_running(&shared, &cp).await;
    }
    end(&shared, cp, note).await;
}

/// The supervisor has exited: read its record and finish the task. A
/// supervisor that left no record (it was killed) may have left the task
/// running: whatever is left of the task is killed before the task is
/// reported lost, and the reason says so. A task that failed while the data
/// dir's disk was full (or read-only) says that too.
async fn end(shared: &Shared, mut cp: Checkpoint, note: Option<String>) {
    let meta = shared.layout.meta(cp.request.task_id.as_str());
    let layout = shared.layout.clone();
    let node = shared.node_id.clone();
    let fallback = cp.clone();
    // One trip to a blocking thread: what the supervisor left, the final
    // status, and its record (`conclude`).
    let looked = blocking(move || {
        let dirs = cp.cgroups.clone();
        let exit = read_exit(&meta);
        let oom = cgroup::oom_killed(&dirs);
        let killed = exit.is_none().then(|| {
            let task = read_process(&meta);
            let (n, left) = kill_leftovers(task.as_ref(), cp.supervisor.as_ref(), &dirs);
            killed_note(task.as_ref(), n, left)
        });
        // A task that finished needs no look at the disk.
        let finished = matches!(exit, Some(ExitRecord::Exited { code: 0 }));
        let disk = if finished {
            None
        } else {
            health::check(&layout, false)
        };
        if exit.is_some() && !cp.started {
            cp.started = true;
        }
        let note = match (note, killed.flatten()) {
            (Some(note), Some(killed)) => Some(format!("{note}; {killed}")),
            (None, Some(killed)) => Some(format!("the supervisor is gone; {killed}")),
            (note, None) => note,
        };
        let mut status = final_status(&node, &cp.request, exit, cp.kill.as_ref(), oom, note);
        add_disk_note(&mut status, disk.as_ref());
        conclude(&layout, &mut cp, status.clone());
        (cp, status, disk)
    })
    .await;
    let (cp, status, disk) = match looked {
        Ok(done) => done,
        Err(e) => {
            // The look itself stopped: lost, as a supervisor without a record.
            let status = final_status(
                &shared.node_id,
                &fallback.request,
                None,
                fallback.kill.as_ref(),
                false,
                Some(format!("cannot read how the task ended: {e}")),
            );
            return finish(shared, fallback, status).await;
        }
    };
    if let Some(p) = &disk {
        // Before the task's end is reported: the node takes no task in
        // its place on a data dir that cannot hold it.
        health::report(shared, Some(p.clone())).await;
    }
    deliver(shared, cp, status).await;
}

/// What [`kill_leftovers`] did, for a lost task's reason (None when
/// nothing of the task was left).
pub(crate) fn killed_note(task: Option<&ProcRef>, killed: usize, left: usize) -> Option<String> {
    let group = task.map_or_else(String::new, |p| format!(" {}", p.pid));
    match (killed, left) {
        (0, 0) => None,
        (n, 0) => Some(format!(
            "its process group{group} was killed ({n} processes still ran) before this report"
        )),
        (n, left) => Some(format!(
            "its process group{group} was killed ({n} processes still ran), but {left} \
             outlived SIGKILL for 5 s"
        )),
    }
}

/// Adds to a failed or lost task's reason that the data dir could not be
/// written when it ended (which may be why).
fn add_disk_note(status: &mut TaskStatus, disk: Option<&super::DataDirProblem>) {
    let Some(p) = disk else { return };
    if !matches!(status.state, TaskState::Failed | TaskState::Lost) {
        return;
    }
    let note = format!(
        "{} ({}) when it ended, which may be why",
        p.fault.plain(),
        p.fault.code()
    );
    status.reason = Some(match status.reason.take() {
        Some(r) => format!("{r}; {note}"),
        None => note,
    });
}

/// Concludes, at open, a task whose supervisor is gone: its final status
/// comes from the exit record, or it is lost. A task process still alive
/// without its supervisor is killed, so nothing runs unaccounted for.
/// Blocking; writes the checkpoint and frees the cgroups.
pub(crate) fn conclude_offline(layout: &Layout, node: &NodeId, mut cp: Checkpoint) -> Checkpoint {
    let meta = layout.meta(cp.request.task_id.as_str());
    let exit = read_exit(&meta);
    let mut note = match &cp.supervisor {
        Some(s) => format!(
            "supervisor pid {} is gone; the machine may have rebooted or it was killed",
            s.pid
        ),
        None => "the agent stopped while starting it".to_string(),
    };
    let oom = cgroup::oom_killed(&cp.cgroups);
    if exit.is_none() {
        let task = read_process(&meta);
        let (n, left) = kill_leftovers(task.as_ref(), cp.supervisor.as_ref(), &cp.cgroups);
        if let Some(killed) = killed_note(task.as_ref(), n, left) {
            note.push_str(&format!("; {killed}"));
        }
    }
    let status = final_status(node, &cp.request, exit, cp.kill.as_ref(), oom, Some(note));
    cp.end(status);
    // Only `Executor::open` calls this, and it returns the task as
    // `Recovered::Ended`: that is its delivery.
    cp.reported = true;
    if let Err(e) = cp.save(layout) {
        tracing::warn!(task = %cp.request.task_id, "cannot write the task's checkpoint: {e}");
    }
    cgroup::remove(&cp.cgroups);
    cp
}
