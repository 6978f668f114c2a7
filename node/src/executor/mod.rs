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
//! Hidden subcommand: the `agora` CLI has `agora __supervise ARGS...`, which
//! calls [`supervise_main`] (the per-task supervisor process that outlives an
//! agent restart).

use agora_protocol::ids::{FrameworkId, NodeId, TaskId};
use agora_protocol::task::{TaskSpec, TaskStatus};
use agora_protocol::wire::{LogChunk, LogStream};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

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
}

/// A task to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchRequest {
    /// The task.
    pub task_id: TaskId,
    /// Its framework.
    pub framework: FrameworkId,
    /// The framework's DRF weight.
    pub weight: u32,
    /// Its framework's home node.
    pub home: NodeId,
    /// What to run.
    pub spec: TaskSpec,
    /// Ports reserved for it (exported as AGORA_PORTS, comma separated).
    pub ports: Vec<u16>,
}

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
}

/// A task found in the checkpoints when the executor opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// Still running: re-attached; its end will be reported as an event.
    Running(LaunchRequest),
    /// Ended while the agent was down (or never started): its final status.
    Ended(LaunchRequest, TaskStatus),
}

/// The executor of one node.
pub struct Executor {
    _private: (),
}

impl Executor {
    /// Opens the data dir, reads the checkpoints (moving corrupt ones aside
    /// with a log line), re-attaches to tasks still running, and sets up
    /// cgroups if possible (logging which version, or why none).
    ///
    /// # Errors
    /// The data dir cannot be created or read.
    pub async fn open(
        _config: ExecutorConfig,
        _events: tokio::sync::mpsc::Sender<ExecEvent>,
    ) -> anyhow::Result<(Executor, Vec<Recovered>)> {
        todo!("executor work")
    }

    /// Starts a task. Reports Running once started, or Failed with the OS
    /// error as the reason when the command cannot start.
    pub fn launch(&mut self, _request: LaunchRequest) {
        todo!("executor work")
    }

    /// Kills a task: TERM to its process group, KILL after `grace`.
    /// Reports Killed when it is gone. Unknown tasks are ignored.
    pub fn kill(&mut self, _task_id: &TaskId, _grace: Duration) {
        todo!("executor work")
    }

    /// Reads part of a task's stdout or stderr (at most `max_bytes`, capped
    /// at 256 KiB). Errors go in `LogChunk::error`.
    pub async fn read_log(
        &self,
        _task_id: &TaskId,
        _stream: LogStream,
        _offset: u64,
        _max_bytes: u32,
    ) -> LogChunk {
        todo!("executor work")
    }

    /// Tasks currently running.
    pub fn running(&self) -> usize {
        todo!("executor work")
    }

    /// One line for the log and `agora nodes`: "cgroup v2 at ...", or why none.
    pub fn cgroup_mode(&self) -> String {
        todo!("executor work")
    }

    /// Kills nothing; forgets nothing: tasks keep running across an agent
    /// stop (they are re-attached on the next open). Stops the monitors.
    pub async fn detach(self) {
        todo!("executor work")
    }
}

/// Entry point of `agora __supervise`: runs one task as a supervisor process
/// and returns the process exit code.
pub fn supervise_main(_args: Vec<OsString>) -> i32 {
    todo!("executor work")
}
