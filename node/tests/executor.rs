//! Integration tests of the executor with real processes: the real `agora`
//! binary as the per-task supervisor, real files in a temporary data dir,
//! real signals and (where the host allows) real cgroups.

use agora_node::executor::{
    ExecEvent, Executor, ExecutorConfig, GcPolicy, LaunchRequest, Recovered,
};
use agora_protocol::ids::{FrameworkId, NodeId, TaskId};
use agora_protocol::resources::Resources;
use agora_protocol::task::{Command, TaskSpec, TaskState, TaskStatus};
use agora_protocol::wire::LogStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest wait for any one event.
const DEADLINE: Duration = Duration::from_secs(30);

/// A temporary data dir; on drop, kills every task process still running in
/// it (their supervisors then exit) and removes the dir.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "agora-exec-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        DataDir(dir)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.0.join("sandboxes")) {
            for e in entries.flatten() {
                let Ok(bytes) = std::fs::read(e.path().join(".agora/process.json")) else {
                    continue;
                };
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                    continue;
                };
                let pid = v["pid"].as_i64().unwrap_or(0) as i32;
                let start = v["start_time"].as_u64();
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let now_start = stat
                    .rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().nth(19).map(str::to_string))
                    .and_then(|s| s.parse::<u64>().ok());
                if pid > 0
                    && now_start.is_some()
                    && now_start == start
                    && let Some(pid) = rustix::process::Pid::from_raw(pid)
                {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
            }
        }
        // The executor's background work may still be writing for a moment
        // (a CI run once found this directory left behind): try again.
        for _ in 0..50 {
            if std::fs::remove_dir_all(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: cannot remove {}", self.0.display());
    }
}

fn config(dir: &Path, cgroups: bool) -> ExecutorConfig {
    ExecutorConfig {
        data_dir: dir.to_path_buf(),
        node_id: NodeId::new("node-1").unwrap(),
        cgroups,
        agora_exe: PathBuf::from(env!("CARGO_BIN_EXE_agora")),
        gc: gc_off_disk(),
        // As the test's own user: the agent-level isolation is tested in
        // task_isolation.rs.
        task_user: None,
    }
}

fn request(id: &str, command: Command) -> LaunchRequest {
    let mut spec = TaskSpec::new(
        "test",
        command,
        Resources {
            cpu_millis: 500,
            mem_mib: 64,
            ..Resources::default()
        },
    );
    spec.env.insert("GREETING".into(), "hello".into());
    LaunchRequest {
        task_id: TaskId::new(id).unwrap(),
        framework: FrameworkId::new("fw").unwrap(),
        weight: 1,
        home: NodeId::new("node-1").unwrap(),
        spec,
        ports: vec![31000, 31001],
    }
}

fn sh(line: &str) -> Command {
    Command::Shell(line.to_string())
}

async fn open(dir: &Path) -> (Executor, Vec<Recovered>, mpsc::Receiver<ExecEvent>) {
    let (tx, rx) = mpsc::channel(64);
    let (exec, recovered) = Executor::open(config(dir, false), tx).await.unwrap();
    (exec, recovered, rx)
}

/// The next status of `task` (other tasks' events are skipped).
async fn next_status(rx: &mut mpsc::Receiver<ExecEvent>, task: &str) -> TaskStatus {
    let fut = async {
        loop {
            match rx.recv().await {
                Some(ExecEvent::Status { status, .. }) if status.task_id.as_str() == task => {
                    return status;
                }
                Some(_) => continue,
                None => panic!("event channel closed"),
            }
        }
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("no status for {task} within {DEADLINE:?}"))
}

/// The final status of `task`, checking that Running came first.
async fn run_to_end(rx: &mut mpsc::Receiver<ExecEvent>, task: &str) -> TaskStatus {
    let first = next_status(rx, task).await;
    assert_eq!(first.state, TaskState::Running, "{first:?}");
    let last = next_status(rx, task).await;
    assert!(last.state.is_terminal(), "{last:?}");
    last
}

async fn read_all(exec: &Executor, task: &str, stream: LogStream) -> String {
    let id = TaskId::new(task).unwrap();
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let chunk = exec.read_log(&id, stream, offset, 7).await;
        assert_eq!(chunk.error, None);
        out.extend_from_slice(&chunk.data);
        offset = chunk.next_offset;
        if chunk.eof {
            break;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Launches "stubborn", a task that ignores TERM, and waits until it is
/// running and has printed that it is ready (its TERM trap is set).
/// Returns the path of its stdout.
async fn launch_stubborn(
    exec: &mut Executor,
    rx: &mut mpsc::Receiver<ExecEvent>,
) -> std::path::PathBuf {
    exec.launch(request(
        "stubborn",
        sh("trap 'echo got TERM' TERM; echo ready; while true; do sleep 0.1; done"),
    ));
    assert_eq!(next_status(rx, "stubborn").await.state, TaskState::Running);
    let stdout = exec
        .sandbox_dir(&TaskId::new("stubborn").unwrap())
        .join("stdout");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while std::fs::read_to_string(&stdout)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stdout
}

async fn wait_for_file(path: &Path) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_finishes_and_logs_read_by_offset() {
    let dir = DataDir::new("echo");
    let (mut exec, recovered, mut rx) = open(&dir.0).await;
    assert!(recovered.is_empty());
    exec.launch(request("t1", sh("echo hello stdout; echo oops >&2")));
    let end = run_to_end(&mut rx, "t1").await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
    assert_eq!(end.exit_code, Some(0));
    assert_eq!(end.node.as_ref().map(NodeId::as_str), Some("node-1"));
    assert_eq!(exec.running(), 0);
    assert_eq!(
        read_all(&exec, "t1", LogStream::Stdout).await,
        "hello stdout\n"
    );
    assert_eq!(read_all(&exec, "t1", LogStream::Stderr).await, "oops\n");
    // A read from the middle, and past the end.
    let id = TaskId::new("t1").unwrap();
    let mid = exec.read_log(&id, LogStream::Stdout, 6, 1 << 30).await;
    assert_eq!(mid.data, b"stdout\n");
    assert!(mid.eof);
    assert_eq!(mid.next_offset, 13);
    let past = exec.read_log(&id, LogStream::Stdout, 100, 10).await;
    assert!(past.data.is_empty() && past.eof && past.error.is_none());
    let unknown = exec
        .read_log(&TaskId::new("nope").unwrap(), LogStream::Stdout, 0, 10)
        .await;
    assert!(unknown.error.is_some_and(|e| e.contains("unknown task")));
    exec.detach().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_leads_a_session_of_its_own() {
    // The supervisor must outlive the agent and its terminal: it is the
    // leader of its own session (it calls setsid itself now, so that the
    // agent can spawn it without forking). The task, its child, says which
    // session it is in and who its parent is.
    let dir = DataDir::new("session");
    let (mut exec, _, mut rx) = open(&dir.0).await;
    exec.launch(request(
        "s1",
        sh("read -r pid comm state ppid pgrp sid rest < /proc/self/stat; echo \"$sid $PPID\""),
    ));
    let end = run_to_end(&mut rx, "s1").await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
    let out = read_all(&exec, "s1", LogStream::Stdout).await;
    let ids: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(ids.len(), 2, "{out:?}");
    assert_eq!(
        ids[0], ids[1],
        "the task's session is its supervisor's: {out:?}"
    );
    assert_ne!(
        ids[0],
        std::process::id().to_string(),
        "not the test's session"
    );
    exec.detach().await;
}

/// The pid of a task's supervisor, from its checkpoint.
fn supervisor_pid(dir: &Path, task: &str) -> i32 {
    let cp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("tasks/{task}.json"))).unwrap())
            .unwrap();
    cp["supervisor"]["pid"].as_i64().unwrap() as i32
}

/// A process's command line, its arguments split (empty ones dropped).
fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// A process's parent pid, from /proc/PID/stat.
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisors_are_forked_by_the_spawner_and_outlive_it() {
    // Supervisors are started by `agora __spawner` forking itself (no
    // program start per task), yet each still reads `agora __supervise
    // SANDBOX` (how recovery finds it), and a task whose spawner dies is
    // still watched to its end; later launches still work.
    let dir = DataDir::new("spawner");
    let (mut exec, _, mut rx) = open(&dir.0).await;
    exec.launch(request("long", sh("exec sleep 60")));
    assert_eq!(next_status(&mut rx, "long").await.state, TaskState::Running);
    let sup = supervisor_pid(&dir.0, "long");
    let sandbox = exec.sandbox_dir(&TaskId::new("long").unwrap());
    let line = cmdline(sup);
    assert_eq!(
        line.get(1..),
        Some(&["__supervise".to_string(), sandbox.display().to_string()][..]),
        "{line:?}"
    );
    let spawner = parent_of(sup);
    assert_ne!(
        spawner,
        std::process::id() as i32,
        "not a child of the agent"
    );
    assert_eq!(
        cmdline(spawner).get(1).map(String::as_str),
        Some("__spawner")
    );

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(spawner).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    // The supervisor and its task run on; the task is killed as usual and
    // its end reported with its signal.
    exec.kill(&TaskId::new("long").unwrap(), Duration::from_millis(500));
    let end = next_status(&mut rx, "long").await;
    assert_eq!(end.state, TaskState::Killed, "{end:?}");
    assert_eq!(end.signal, Some(15), "{end:?}");
    // Without a spawner (a new one is not started within 5 s of the last),
    // a launch starts its supervisor directly.
    exec.launch(request("after", sh("exit 3")));
    let end = run_to_end(&mut rx, "after").await;
    assert_eq!(end.state, TaskState::Failed, "{end:?}");
    assert_eq!(end.exit_code, Some(3), "{end:?}");
    exec.detach().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_unstartable_commands_fail_with_reasons() {
    let dir = DataDir::new("fail");
    let (mut exec, _, mut rx) = open(&dir.0).await;
    exec.launch(request("exit3", sh("exit 3")));
    let end = run_to_end(&mut rx, "exit3").await;
    assert_eq!(end.state, TaskState::Failed);
    assert_eq!(end.exit_code, Some(3));
    assert_eq!(end.reason.as_deref(), Some("exited with code 3"));

    exec.launch(request(
        "missing",
        Command::Argv(vec!["nosuchcmd-agora".into(), "x".into()]),
    ));
    let end = next_status(&mut rx, "missing").await;
    assert_eq!(end.state, TaskState::Failed, "{end:?}");
    assert_eq!(end.exit_code, None);
    assert_eq!(
        end.reason.as_deref(),
        Some("cannot start `nosuchcmd-agora`: No such file or directory (os error 2)")
    );

    // Not executable: EACCES.
    let script = dir.0.join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    exec.launch(request(
        "noexec",
        Command::Argv(vec![script.display().to_string()]),
    ));
    let end = next_status(&mut rx, "noexec").await;
    assert_eq!(end.state, TaskState::Failed, "{end:?}");
    assert!(
        end.reason.as_deref().unwrap().contains("Permission denied"),
        "{end:?}"
    );

    // The shell's "command not found" is an exit code, not a start failure.
    exec.launch(request("sh127", sh("nosuchcmd-agora")));
    let end = run_to_end(&mut rx, "sh127").await;
    assert_eq!(end.exit_code, Some(127));

    // A task killed by a signal it did not ask for.
    exec.launch(request("segv", sh("kill -SEGV $$")));
    let end = run_to_end(&mut rx, "segv").await;
    assert_eq!(end.state, TaskState::Failed);
    assert_eq!(end.signal, Some(11));
    assert_eq!(end.reason.as_deref(), Some("killed by signal 11 (SIGSEGV)"));
    exec.detach().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_terms_then_kills_after_grace() {
    let dir = DataDir::new("kill");
    let (mut exec, _, mut rx) = open(&dir.0).await;
    exec.launch(request("sleeper", sh("exec sleep 60")));
    assert_eq!(
        next_status(&mut rx, "sleeper").await.state,
        TaskState::Running
    );
    assert_eq!(exec.running(), 1);
    exec.kill(&TaskId::new("sleeper").unwrap(), Duration::from_millis(500));
    let end = next_status(&mut rx, "sleeper").await;
    assert_eq!(end.state, TaskState::Killed, "{end:?}");
    assert_eq!(end.signal, Some(15), "{end:?}");

    // Trapping TERM does not save a task: KILL follows the grace period.
    launch_stubborn(&mut exec, &mut rx).await;
    exec.kill(
        &TaskId::new("stubborn").unwrap(),
        Duration::from_millis(500),
    );
    let end = next_status(&mut rx, "stubborn").await;
    assert_eq!(end.state, TaskState::Killed, "{end:?}");
    assert_eq!(end.signal, Some(9), "{end:?}");
    assert!(
        end.reason
            .as_deref()
            .unwrap()
            .contains("SIGKILL after a 500 ms grace"),
        "{end:?}"
    );
    assert!(
        read_all(&exec, "stubborn", LogStream::Stdout)
            .await
            .contains("got TERM")
    );
    // Unknown tasks are ignored.
    exec.kill(&TaskId::new("nope").unwrap(), Duration::from_millis(1));
    assert_eq!(exec.running(), 0);
    exec.detach().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_executor_reattaches_and_reports_the_end_once() {
    let dir = DataDir::new("reattach");
    let (mut exec, _, mut rx) = open(&dir.0).await;
    let marker = dir.0.join("go");
    let line = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; echo done",
        marker.display()
    );
    exec.launch(request("long", sh(&line)));
    assert_eq!(next_status(&mut rx, "long").await.state, TaskState::Running);
    exec.detach().await; // the agent stops; the task does not
    drop(rx);

    let (exec, recovered, mut rx) = open(&dir.0).await;
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert!(matches!(&recovered[0], Recovered::Running(r) if r.task_id.as_str() == "long"));
    assert_eq!(exec.running(), 1);
    std::fs::write(&marker, "").unwrap();
    let end = next_status(&mut rx, "long").await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
    assert_eq!(read_all(&exec, "long", LogStream::Stdout).await, "done\n");
    // Exactly once: nothing else arrives for it.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err()
    );

    // Its end was delivered as an event: the next open does not report it
    // again, but keeps it in the history; after forget, neither.
    exec.detach().await;
    let (mut exec, recovered, _rx) = open(&dir.0).await;
    assert!(recovered.is_empty(), "{recovered:?}");
    let history = exec.history();
    assert!(
        matches!(&history[..], [t] if t.request.task_id.as_str() == "long" && t.status.state == TaskState::Finished),
        "{history:?}"
    );
    assert!(exec.forget(&TaskId::new("long").unwrap()));
    assert!(exec.history().is_empty());
    exec.detach().await;
    let (exec, recovered, _rx) = open(&dir.0).await;
    assert!(recovered.is_empty(), "{recovered:?}");
    assert!(exec.history().is_empty());
    // Logs outlive the checkpoint, until the task is purged.
    assert_eq!(read_all(&exec, "long", LogStream::Stdout).await, "done\n");
    let mut exec = exec;
    assert!(exec.purge(&TaskId::new("long").unwrap()).await);
    let gone = exec
        .read_log(&TaskId::new("long").unwrap(), LogStream::Stdout, 0, 10)
        .await;
    assert!(gone.error.is_some());
    // Only one executor at a time per data dir.
    let (tx, _rx2) = mpsc::channel(1);
    let second = Executor::open(config(&dir.0, false), tx).await;
    let err = second
        .err()
        .expect("a second executor on the same dir must be refused");
    assert!(
        format!("{err:#}").contains("another agent is using the data dir"),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_ends_while_no_executor_is_open_is_recovered_as_ended() {
    let dir = DataDir::new("offline");
    let (mut exec, _, mut rx) = open(&dir.0).await;
    let marker = dir.0.join("go");
    let line = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; exit 4",
        marker.display()
    );
    exec.launch(request("offline", sh(&line)));
    assert_eq!(
        next_status(&mut rx, "offline").await.state,
        TaskState::Running
    );
    let sandbox = exec.sandbox_dir(&TaskId::new("offline").unwrap());
    exec.detach().await;
    std::fs::write(&marker, "").unwrap();
    wait_for_file(&sandbox.join(".agora/exit.json")).await;
    // Let the supervisor exit after writing its record.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let (exec, recovered, _rx) = loop {
        let opened = open(&dir.0).await;
        if matches!(&opened.1[..], [Recovered::Ended(..)]) {
            break opened;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", opened.1);
        opened.0.detach().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let [Recovered::Ended(req, status)] = &recovered[..] else {
        panic!("{recovered:?}")
    };
    assert_eq!(req.task_id.as_str(), "offline");
    assert_eq!(status.state, TaskState::Failed);
    assert_eq!(status.exit_code, Some(4));
    assert_eq!(exec.running(), 0);
    let id = req.task_id.clone();
    // A second restart does not report it again (the first one did), and
    // still shows it as history, with its exit code and end time.
    exec.detach().await;
    let (mut exec, recovered, _rx) = open(&dir.0).await;
    assert!(recovered.is_empty(), "reported twice: {recovered:?}");
    let [ended] = &exec.history()[..] else {
        panic!("{:?}", exec.history())
    };
    assert_eq!(ended.request.task_id, id);
    assert_eq!(
        (ended.status.state, ended.status.exit_code),
        (TaskState::Failed, Some(4))
    );
    assert!(ended.ended_unix_ms > 0);
    assert!(exec.forget(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_supervisor_vanished_is_lost() {
    let dir = DataDir::new("lost");
    let (mut exec, _, mut rx) = open(&dir.0).await;
    exec.launch(request("victim", sh("exec sleep 60")));
    assert_eq!(
        next_status(&mut rx, "victim").await.state,
        TaskState::Running
    );
    exec.detach().await;
    // Kill the supervisor (its own session and process group) hard.
    let cp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.0.join("tasks/victim.json")).unwrap()).unwrap();
    let sup = cp["supervisor"]["pid"].as_i64().unwrap() as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(sup).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while std::fs::read_to_string(format!("/proc/{sup}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (exec, recovered, _rx) = open(&dir.0).await;
    let [Recovered::Ended(_, status)] = &recovered[..] else {
        panic!("{recovered:?}")
    };
    assert_eq!(status.state, TaskState::Lost, "{status:?}");
    let reason = status.reason.as_deref().unwrap();
    assert!(
        reason.contains("supervisor") && reason.contains("process group"),
        "{reason}"
    );
    // Its background work stops before the data dir is removed.
    exec.detach().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_checkpoint_is_moved_aside_and_its_task_reported_lost() {
    let dir = DataDir::new("corrupt");
    std::fs::create_dir_all(dir.0.join("tasks")).unwrap();
    std::fs::write(dir.0.join("tasks/broken.json"), b"{ not json").unwrap();
    let (exec, recovered, _rx) = open(&dir.0).await;
    // Issue 12: the task it described was forgotten. It has no sandbox
    // left to rebuild it from: it is reported lost, saying why.
    let [Recovered::Ended(req, status)] = &recovered[..] else {
        panic!("{recovered:?}")
    };
    assert_eq!(req.task_id.as_str(), "broken");
    assert_eq!(status.state, TaskState::Lost, "{status:?}");
    let reason = status.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("tasks/broken.json was corrupt") && reason.contains("sandbox is gone"),
        "{reason}"
    );
    let names: Vec<String> = std::fs::read_dir(dir.0.join("tasks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.contains(&"broken.json".to_string()), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("broken.json.corrupt-")),
        "kept for inspection: {names:?}"
    );
    // Reported once: the next open is quiet.
    drop(exec);
    let (mut exec, again, mut rx) = open(&dir.0).await;
    assert!(again.is_empty(), "{again:?}");
    // The executor still works.
    exec.launch(request("after", sh("true")));
    assert_eq!(
        run_to_end(&mut rx, "after").await.state,
        TaskState::Finished
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_see_their_environment_and_sandbox() {
    let dir = DataDir::new("env");
    let (mut exec, _, mut rx) = open(&dir.0).await;
    exec.launch(request(
        "envtask",
        sh("echo \"$AGORA_TASK_ID|$AGORA_NODE_ID|$AGORA_SANDBOX|$AGORA_PORTS|$GREETING|$(pwd)\""),
    ));
    assert_eq!(
        run_to_end(&mut rx, "envtask").await.state,
        TaskState::Finished
    );
    let sandbox = exec.sandbox_dir(&TaskId::new("envtask").unwrap());
    let sandbox = std::fs::canonicalize(&sandbox).unwrap();
    let out = read_all(&exec, "envtask", LogStream::Stdout).await;
    let fields: Vec<&str> = out.trim_end().split('|').collect();
    assert_eq!(fields[0], "envtask");
    assert_eq!(fields[1], "node-1");
    assert_eq!(std::fs::canonicalize(fields[2]).unwrap(), sandbox);
    assert_eq!(fields[3], "31000,31001");
    assert_eq!(fields[4], "hello");
    assert_eq!(std::fs::canonicalize(fields[5]).unwrap(), sandbox);
    // A task id that would escape the sandboxes dir stays inside it.
    exec.launch(request("..", sh("pwd")));
    assert_eq!(run_to_end(&mut rx, "..").await.state, TaskState::Finished);
    let out = read_all(&exec, "..", LogStream::Stdout).await;
    assert!(out.trim_end().ends_with("/sandboxes/%.."), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_limits_are_written_when_the_host_allows() {
    let dir = DataDir::new("cgroup");
    let (tx, mut rx) = mpsc::channel(64);
    let (mut exec, _) = Executor::open(config(&dir.0, true), tx).await.unwrap();
    let mode = exec.cgroup_mode();
    println!("cgroup mode: {mode}");
    if mode.starts_with("no cgroups") {
        println!("skipping the cgroup limit checks: {mode}");
        return;
    }
    let id = TaskId::new("limited").unwrap();
    let marker = dir.0.join("go");
    exec.launch(request(
        "limited",
        sh(&format!(
            "cat /proc/self/cgroup; while [ ! -e {} ]; do sleep 0.05; done",
            marker.display()
        )),
    ));
    assert_eq!(
        next_status(&mut rx, "limited").await.state,
        TaskState::Running
    );
    let dirs = exec.cgroup_dirs(&id);
    assert!(!dirs.is_empty());
    let read = |d: &PathBuf, f: &str| {
        std::fs::read_to_string(d.join(f))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    for d in &dirs {
        assert!(d.is_dir(), "{} missing while the task runs", d.display());
        if d.join("memory.max").exists() {
            assert_eq!(read(d, "memory.max"), (64u64 << 20).to_string());
            assert_eq!(read(d, "cpu.max"), "50000 100000");
        }
        if d.join("memory.limit_in_bytes").exists() {
            assert_eq!(read(d, "memory.limit_in_bytes"), (64u64 << 20).to_string());
        }
        if d.join("cpu.cfs_quota_us").exists() {
            assert_eq!(read(d, "cpu.cfs_quota_us"), "50000");
            assert_eq!(read(d, "cpu.cfs_period_us"), "100000");
        }
    }
    std::fs::write(&marker, "").unwrap();
    assert_eq!(
        next_status(&mut rx, "limited").await.state,
        TaskState::Finished
    );
    // The task ran inside its cgroups, which are gone once it ended.
    let out = read_all(&exec, "limited", LogStream::Stdout).await;
    for d in &dirs {
        assert!(d.ends_with("agora/node-1/limited"), "{}", d.display());
        assert!(!d.exists(), "{} still exists", d.display());
    }
    assert!(out.contains("/agora/node-1/limited"), "{out}");
    exec.detach().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_in_progress_survives_a_restart() {
    let dir = DataDir::new("killrestart");
    let (mut exec, _, mut rx) = open(&dir.0).await;
    let stdout = launch_stubborn(&mut exec, &mut rx).await;
    exec.kill(
        &TaskId::new("stubborn").unwrap(),
        Duration::from_millis(1500),
    );
    // The kill is checkpointed (and TERM sent) before the agent stops.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !std::fs::read_to_string(&stdout)
        .unwrap_or_default()
        .contains("got TERM")
    {
        assert!(tokio::time::Instant::now() < deadline, "TERM never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    exec.detach().await;
    drop(rx);
    let (exec, recovered, mut rx) = open(&dir.0).await;
    assert!(
        matches!(&recovered[..], [Recovered::Running(_)]),
        "{recovered:?}"
    );
    let end = next_status(&mut rx, "stubborn").await;
    assert_eq!(end.state, TaskState::Killed, "{end:?}");
    assert_eq!(end.signal, Some(9), "{end:?}");
    exec.detach().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_memory_limit_is_reported_out_of_memory() {
    let dir = DataDir::new("oom");
    let (tx, mut rx) = mpsc::channel(64);
    let (mut exec, _) = Executor::open(config(&dir.0, true), tx).await.unwrap();
    let mode = exec.cgroup_mode();
    if !mode.contains("memory at /") && !mode.starts_with("cgroup v2") {
        println!("skipping the out-of-memory check: {mode}");
        return;
    }
    // The shell itself holds ~200 MB in a variable; its limit is 64 MiB.
    exec.launch(request(
        "hog",
        sh("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"),
    ));
    let end = run_to_end(&mut rx, "hog").await;
    assert_eq!(end.state, TaskState::Failed, "{end:?}");
    assert_eq!(end.signal, Some(9), "{end:?}");
    assert!(
        end.reason.as_deref().unwrap().contains("out of memory"),
        "{end:?}"
    );
    exec.detach().await;
}

/// Opens an executor with its own GC policy.
async fn open_with(
    dir: &Path,
    gc: GcPolicy,
) -> (Executor, Vec<Recovered>, mpsc::Receiver<ExecEvent>) {
    let (tx, rx) = mpsc::channel(64);
    let cfg = ExecutorConfig {
        gc,
        ..config(dir, false)
    };
    let (exec, recovered) = Executor::open(cfg, tx).await.unwrap();
    (exec, recovered, rx)
}

/// Polls until `done` holds.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn history_ids(exec: &Executor) -> Vec<String> {
    exec.history()
        .iter()
        .map(|t| t.request.task_id.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gc_keeps_the_newest_ended_tasks_and_removes_the_rest_from_disk() {
    let dir = DataDir::new("gc-count");
    let gc = GcPolicy {
        max_ended: 2,
        interval: Duration::from_millis(50),
        ..gc_off_disk()
    };
    let (mut exec, _, mut rx) = open_with(&dir.0, gc).await;
    let marker = dir.0.join("go");
    exec.launch(request(
        "runner",
        sh(&format!(
            "while [ ! -e {} ]; do sleep 0.05; done",
            marker.display()
        )),
    ));
    assert_eq!(
        next_status(&mut rx, "runner").await.state,
        TaskState::Running
    );
    for i in 0..4 {
        let id = format!("t{i}");
        exec.launch(request(&id, sh("echo out; echo err >&2")));
        assert_eq!(run_to_end(&mut rx, &id).await.state, TaskState::Finished);
    }
    let sandbox = |id: &str| dir.0.join("sandboxes").join(id);
    let checkpoint = |id: &str| dir.0.join(format!("tasks/{id}.json"));
    wait_until("the GC never kept just the two newest", || {
        history_ids(&exec) == ["t2", "t3"] && !checkpoint("t1").exists()
    })
    .await;
    for old in ["t0", "t1"] {
        assert!(!sandbox(old).exists(), "{old}'s sandbox is still there");
        assert!(
            !checkpoint(old).exists(),
            "{old}'s checkpoint is still there"
        );
    }
    for kept in ["t2", "t3"] {
        assert_eq!(read_all(&exec, kept, LogStream::Stdout).await, "out\n");
        assert!(checkpoint(kept).exists());
    }
    // The running task is not an ended one: never collected.
    assert_eq!(exec.running(), 1);
    assert!(sandbox("runner").join(".agora/process.json").exists());
    assert!(checkpoint("runner").exists());
    // A restart finds what the GC left, and keeps collecting.
    exec.detach().await;
    drop(rx);
    let gc = GcPolicy {
        max_ended: 1,
        interval: Duration::from_millis(50),
        ..gc_off_disk()
    };
    let (exec, recovered, mut rx) = open_with(&dir.0, gc).await;
    assert!(
        matches!(&recovered[..], [Recovered::Running(r)] if r.task_id.as_str() == "runner"),
        "{recovered:?}"
    );
    wait_until("the start-up pass never ran", || {
        history_ids(&exec) == ["t3"] && !checkpoint("t2").exists()
    })
    .await;
    assert!(!sandbox("t2").exists());
    std::fs::write(&marker, "").unwrap();
    assert_eq!(
        next_status(&mut rx, "runner").await.state,
        TaskState::Finished
    );
    wait_until("the ended runner never replaced t3", || {
        history_ids(&exec) == ["runner"] && !sandbox("t3").exists()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_is_never_collected_even_when_nothing_may_be_kept() {
    let dir = DataDir::new("gc-running");
    let gc = GcPolicy {
        max_ended: 0,
        max_age: Duration::ZERO,
        interval: Duration::from_millis(20),
        ..gc_off_disk()
    };
    let (mut exec, _, mut rx) = open_with(&dir.0, gc).await;
    exec.launch(request("sleeper", sh("exec sleep 30")));
    assert_eq!(
        next_status(&mut rx, "sleeper").await.state,
        TaskState::Running
    );
    exec.launch(request("quick", sh("true")));
    assert_eq!(
        run_to_end(&mut rx, "quick").await.state,
        TaskState::Finished
    );
    let sandbox = |id: &str| dir.0.join("sandboxes").join(id);
    wait_until("the ended task was never collected", || {
        !sandbox("quick").exists() && !dir.0.join("tasks/quick.json").exists()
    })
    .await;
    // Many passes later, the running one is whole and can still be killed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sandbox("sleeper").join("stdout").exists());
    assert!(dir.0.join("tasks/sleeper.json").exists());
    assert!(exec.history().is_empty());
    exec.kill(&TaskId::new("sleeper").unwrap(), Duration::from_millis(100));
    assert_eq!(
        next_status(&mut rx, "sleeper").await.state,
        TaskState::Killed
    );
    wait_until("the killed task was never collected", || {
        !sandbox("sleeper").exists()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_that_ended_long_ago_are_collected_at_start_up() {
    let dir = DataDir::new("gc-age");
    let (mut exec, _, mut rx) = open(&dir.0).await;
    for id in ["old", "legacy", "legacy-recent", "recent"] {
        exec.launch(request(id, sh("true")));
        assert_eq!(run_to_end(&mut rx, id).await.state, TaskState::Finished);
    }
    wait_until("not all four in the history", || exec.history().len() == 4).await;
    exec.detach().await;
    drop(rx);
    // Move two ends two days back: one as this version writes checkpoints,
    // one as the previous version did (no end time, no reported flag).
    let two_days_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 48 * 3600 * 1000;
    let edit = |id: &str, f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let path = dir.0.join(format!("tasks/{id}.json"));
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(v.as_object_mut().unwrap());
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    };
    edit("old", &|cp| {
        cp.insert("ended_unix_ms".into(), two_days_ago.into());
    });
    edit("legacy", &|cp| {
        cp.remove("ended_unix_ms");
        cp.remove("reported");
        cp.insert("updated_unix_ms".into(), two_days_ago.into());
    });
    edit("legacy-recent", &|cp| {
        cp.remove("ended_unix_ms");
        cp.remove("reported");
    });
    let (exec, recovered, _rx) = open_with(&dir.0, gc_off_disk()).await;
    // The old version's checkpoints never recorded a delivery: once more.
    let mut ended: Vec<&str> = recovered
        .iter()
        .map(|r| match r {
            Recovered::Ended(r, _) => r.task_id.as_str(),
            Recovered::Running(r) => panic!("{r:?} is not running"),
        })
        .collect();
    ended.sort();
    assert_eq!(ended, ["legacy", "legacy-recent"]);
    wait_until("the start-up pass never collected the old tasks", || {
        history_ids(&exec) == ["legacy-recent", "recent"]
    })
    .await;
    for gone in ["old", "legacy"] {
        assert!(!exec.sandbox_dir(&TaskId::new(gone).unwrap()).exists());
        assert!(!dir.0.join(format!("tasks/{gone}.json")).exists());
    }
    assert_eq!(read_all(&exec, "recent", LogStream::Stdout).await, "");
    // Delivered once: the next start reports nothing.
    exec.detach().await;
    let (exec, recovered, _rx) = open(&dir.0).await;
    assert!(recovered.is_empty(), "{recovered:?}");
    assert_eq!(history_ids(&exec), ["legacy-recent", "recent"]);
}

/// Sets a file's or directory's modification time `secs` seconds back.
fn age(path: &Path, secs: u64) {
    let then = std::time::SystemTime::now() - Duration::from_secs(secs);
    std::fs::File::open(path)
        .unwrap()
        .set_modified(then)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Names in a directory that start with `prefix`.
fn names_starting(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// A process in its own group, killed on drop, recorded the way a
/// supervisor records its task (`.agora/process.json`).
struct Alive(std::process::Child);

impl Alive {
    fn start() -> Alive {
        use std::os::unix::process::CommandExt;
        Alive(
            std::process::Command::new("sleep")
                .arg("60")
                .process_group(0)
                .spawn()
                .unwrap(),
        )
    }

    fn record_in(&self, sandbox: &Path) {
        let pid = self.0.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let start: u64 = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        let record =
            serde_json::json!({"pid": pid, "start_time": start, "boot_id": boot_id.trim()});
        std::fs::create_dir_all(sandbox.join(".agora")).unwrap();
        std::fs::write(sandbox.join(".agora/process.json"), record.to_string()).unwrap();
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gc_collects_files_set_aside_orphan_sandboxes_and_stale_temp_files() {
    let dir = DataDir::new("gc-leftovers");
    let (tasks, sandboxes) = (dir.0.join("tasks"), dir.0.join("sandboxes"));
    // A sandbox set aside for real: a task forgotten (its sandbox stays),
    // then launched again under the same id.
    let (mut exec, _, mut rx) = open(&dir.0).await;
    let id = TaskId::new("again").unwrap();
    exec.launch(request("again", sh("echo first")));
    assert_eq!(
        run_to_end(&mut rx, "again").await.state,
        TaskState::Finished
    );
    wait_until("the first run was never forgotten", || exec.forget(&id)).await;
    exec.launch(request("again", sh("echo second")));
    assert_eq!(
        run_to_end(&mut rx, "again").await.state,
        TaskState::Finished
    );
    let [old] = &names_starting(&sandboxes, "again.old-")[..] else {
        panic!("the launch did not set the old sandbox aside")
    };
    wait_until("the second run never retained", || {
        exec.history().len() == 1
    })
    .await;
    exec.detach().await;
    drop(rx);
    // While no executor runs: three checkpoints that the next open sets
    // aside as corrupt (the first with the sandbox its task had), a launch
    // cut between creating its sandbox and writing its checkpoint, an
    // orphan modified just now, and a sandbox whose process still runs.
    for bad in ["bad1", "bad2", "bad3"] {
        std::fs::write(tasks.join(format!("{bad}.json")), b"{ not json").unwrap();
    }
    std::fs::create_dir_all(sandboxes.join("bad1/.agora")).unwrap();
    std::fs::write(sandboxes.join("bad1/stdout"), b"lost\n").unwrap();
    std::fs::create_dir_all(sandboxes.join("half/.agora")).unwrap();
    std::fs::write(sandboxes.join("half/.agora/launch.json"), b"{}").unwrap();
    std::fs::create_dir_all(sandboxes.join("fresh")).unwrap();
    let alive = Alive::start();
    alive.record_in(&sandboxes.join("alive"));
    for d in ["bad1", "half", "alive", old.as_str()] {
        age(&sandboxes.join(d), 3600);
    }
    // At most two files set aside; the rest as by default (24 h, a grace
    // of 10 min, 90% of the disk).
    let gc = GcPolicy {
        max_ended: 2,
        interval: Duration::from_millis(20),
        ..gc_off_disk()
    };
    let (exec, recovered, _rx) = open_with(&dir.0, gc).await;
    // Their tasks are reported lost once (issue 12), and not retained.
    let lost: Vec<&str> = recovered
        .iter()
        .filter_map(|r| match r {
            Recovered::Ended(req, st) if st.state == TaskState::Lost => Some(req.task_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(lost, ["bad1", "bad2", "bad3"], "{recovered:?}");
    // A checkpoint write that failed while the executor ran.
    let temp = tasks.join(".ghost.json.tmp");
    std::fs::write(&temp, b"{").unwrap();
    age(&temp, 3600);
    wait_until("the leftovers were never collected", || {
        names_starting(&sandboxes, "again.old-").is_empty()
            && names_starting(&tasks, "bad1.json.corrupt-").is_empty()
            && !sandboxes.join("bad1").exists()
            && !sandboxes.join("half").exists()
            && !temp.exists()
    })
    .await;
    // The two newest files set aside stay for inspection.
    for kept in ["bad2.json.corrupt-", "bad3.json.corrupt-"] {
        assert_eq!(names_starting(&tasks, kept).len(), 1, "{kept} is gone");
    }
    // So do the orphan within its grace, the sandbox whose process runs,
    // and the retained task; and no trash is left.
    assert!(sandboxes.join("fresh").exists());
    assert!(sandboxes.join("alive/.agora/process.json").exists());
    assert_eq!(history_ids(&exec), ["again"]);
    assert_eq!(
        read_all(&exec, "again", LogStream::Stdout).await,
        "second\n"
    );
    assert!(tasks.join("again.json").exists());
    assert_eq!(names_starting(&sandboxes, ".gc-"), Vec::<String>::new());
    // Once the process is gone, its sandbox is an orphan like the others.
    drop(alive);
    wait_until(
        "the sandbox of the ended process was never collected",
        || !sandboxes.join("alive").exists(),
    )
    .await;
    assert!(sandboxes.join("fresh").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_disk_threshold_files_set_aside_go_and_orphans_keep_their_grace() {
    let dir = DataDir::new("gc-leftovers-disk");
    let (tasks, sandboxes) = (dir.0.join("tasks"), dir.0.join("sandboxes"));
    std::fs::create_dir_all(&tasks).unwrap();
    std::fs::write(tasks.join("bad.json"), b"{ not json").unwrap();
    std::fs::create_dir_all(sandboxes.join("fresh")).unwrap();
    // 0% always counts as too full; the file is new and alone, so only the
    // disk rule takes it.
    let gc = GcPolicy {
        disk_percent: 0,
        interval: Duration::from_millis(20),
        ..gc_off_disk()
    };
    let (mut exec, _, mut rx) = open_with(&dir.0, gc).await;
    exec.launch(request("sleeper", sh("exec sleep 30")));
    assert_eq!(
        next_status(&mut rx, "sleeper").await.state,
        TaskState::Running
    );
    wait_until("the file set aside was never collected", || {
        names_starting(&tasks, "bad.json.corrupt-").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sandboxes.join("fresh").exists());
    assert!(sandboxes.join("sleeper/stdout").exists());
    assert!(tasks.join("sleeper.json").exists());
    exec.kill(&TaskId::new("sleeper").unwrap(), Duration::from_millis(100));
    assert_eq!(
        next_status(&mut rx, "sleeper").await.state,
        TaskState::Killed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_grace_the_gc_still_never_takes_the_sandbox_of_a_launch() {
    let dir = DataDir::new("gc-launch-race");
    // Passes back to back that take any orphan at once.
    let gc = GcPolicy {
        orphan_grace: Duration::ZERO,
        interval: Duration::from_millis(1),
        ..gc_off_disk()
    };
    let (mut exec, _, mut rx) = open_with(&dir.0, gc).await;
    let n = 40;
    for i in 0..n {
        exec.launch(request(&format!("t{i}"), sh("echo out")));
    }
    let mut ended = 0;
    while ended < n {
        let fut = rx.recv();
        let Some(ExecEvent::Status { status, .. }) =
            tokio::time::timeout(DEADLINE, fut).await.unwrap()
        else {
            panic!("event channel closed")
        };
        if status.state.is_terminal() {
            assert_eq!(status.state, TaskState::Finished, "{status:?}");
            ended += 1;
        }
    }
    wait_until("not all retained", || exec.history().len() == n).await;
    for i in 0..n {
        assert_eq!(
            read_all(&exec, &format!("t{i}"), LogStream::Stdout).await,
            "out\n"
        );
    }
    // A forgotten task's sandbox is an orphan, here with no grace.
    let id = TaskId::new("t0").unwrap();
    wait_until("t0 was never forgotten", || exec.forget(&id)).await;
    wait_until("the forgotten sandbox was never collected", || {
        !exec.sandbox_dir(&id).exists()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_retained_without_a_checkpoint_keeps_its_id() {
    let dir = DataDir::new("no-checkpoint");
    // A directory where the checkpoint's temp file goes: every checkpoint
    // write of "dup" fails, so it ends retained but without a checkpoint.
    std::fs::create_dir_all(dir.0.join("tasks/.dup.json.tmp")).unwrap();
    let (mut exec, _, mut rx) = open(&dir.0).await;
    exec.launch(request("dup", sh("true")));
    let failed = next_status(&mut rx, "dup").await;
    assert_eq!(failed.state, TaskState::Failed, "{failed:?}");
    assert!(
        failed.reason.as_deref().unwrap().contains("checkpoint"),
        "{failed:?}"
    );
    wait_until("dup was never retained", || history_ids(&exec) == ["dup"]).await;
    assert!(!dir.0.join("tasks/dup.json").exists());
    // Enough launches later that the executor's table of monitors has
    // dropped the finished ones (it keeps 64 beyond twice the running).
    let n = 70;
    for i in 0..n {
        exec.launch(request(&format!("f{i}"), sh("true")));
    }
    let mut ended = 0;
    while ended < n {
        let Some(ExecEvent::Status { status, .. }) =
            tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap()
        else {
            panic!("event channel closed")
        };
        ended += usize::from(status.state.is_terminal());
    }
    exec.launch(request("trigger", sh("true")));
    run_to_end(&mut rx, "trigger").await;
    // The id is still taken: a second launch is ignored (it would have
    // shared a sandbox with the entry the GC removes later).
    exec.launch(request("dup", sh("true")));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "a launch of a retained id was not ignored"
    );
}

/// Benchmark, not run by default: an upgrade onto a data dir holding N
/// (env `N`, default 5000) ended checkpoints in the previous version's
/// format, each with a 4 KiB sandbox. Prints how long `open` takes and how
/// long the GC takes to bring the history down to the default 1000.
/// `N=5000 cargo test -p agora-node --test executor gc_backlog -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn gc_backlog_benchmark() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let dir = DataDir::new("gc-backlog");
    let (mut exec, _, mut rx) = open(&dir.0).await;
    exec.launch(request("seed", sh("true")));
    run_to_end(&mut rx, "seed").await;
    wait_until("seed never retained", || exec.history().len() == 1).await;
    exec.detach().await;
    drop(rx);
    let seed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.0.join("tasks/seed.json")).unwrap()).unwrap();
    std::fs::remove_file(dir.0.join("tasks/seed.json")).unwrap();
    for i in 0..n {
        let id = format!("t{i:06}");
        let mut v = seed.clone();
        v["request"]["task_id"] = id.clone().into();
        v["ended"]["task_id"] = id.clone().into();
        let fields = v.as_object_mut().unwrap();
        fields.remove("reported");
        fields.remove("ended_unix_ms");
        // Recent enough that only the count applies.
        fields.insert(
            "updated_unix_ms".into(),
            (seed["updated_unix_ms"].as_u64().unwrap() + i as u64).into(),
        );
        std::fs::write(dir.0.join(format!("tasks/{id}.json")), v.to_string()).unwrap();
        let sandbox = dir.0.join("sandboxes").join(&id);
        std::fs::create_dir_all(sandbox.join(".agora")).unwrap();
        std::fs::write(sandbox.join("stdout"), vec![0u8; 4096]).unwrap();
    }
    let t0 = std::time::Instant::now();
    let (exec, recovered, _rx) = open_with(&dir.0, gc_off_disk()).await;
    eprintln!(
        "open with {n} old checkpoints: {:?} ({} recovered as ended)",
        t0.elapsed(),
        recovered.len()
    );
    let t1 = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    while exec.history().len() > 1000 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("GC down to 1000: {:?} after open", t1.elapsed());
    exec.detach().await;
    let t2 = std::time::Instant::now();
    let (_exec, recovered, _rx) = open(&dir.0).await;
    eprintln!(
        "next open: {:?} ({} recovered)",
        t2.elapsed(),
        recovered.len()
    );
    assert!(recovered.is_empty());
}

/// The default GC policy without its disk threshold: these tests run on
/// shared machines whose disk may be over 90% full (a run of this suite
/// failed six GC and checkpoint tests that way); the disk tests set their
/// own threshold.
fn gc_off_disk() -> GcPolicy {
    GcPolicy {
        disk_percent: 100,
        ..GcPolicy::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_fails_in_preparation_leaves_no_cgroups_behind() {
    // Its cgroups were made, then writing its checkpoint failed: the task
    // failed, and its cgroups stayed on the host for good.
    let dir = DataDir::new("cgroup-prepare");
    let (tx, mut rx) = mpsc::channel(64);
    let (mut exec, _) = Executor::open(config(&dir.0, true), tx).await.unwrap();
    let mode = exec.cgroup_mode();
    if mode.starts_with("no cgroups") {
        println!("skipping: {mode}");
        return;
    }
    let id = TaskId::new("unwritable").unwrap();
    // The checkpoints' directory made immutable (root ignores permissions,
    // not this): the sandbox and the cgroups are made, the checkpoint is not.
    let tasks = dir.0.join("tasks");
    std::fs::create_dir_all(&tasks).unwrap();
    struct Mutable(PathBuf);
    impl Drop for Mutable {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
        }
    }
    let set = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&tasks)
        .status();
    if !set.as_ref().is_ok_and(|s| s.success()) {
        println!("skipping: chattr +i does not work here ({set:?})");
        return;
    }
    let _undo = Mutable(tasks.clone());
    exec.launch(request("unwritable", sh("true")));
    let st = next_status(&mut rx, "unwritable").await;
    assert_eq!(st.state, TaskState::Failed, "{st:?}");
    assert!(
        st.reason.as_deref().unwrap_or("").contains("checkpoint"),
        "{st:?}"
    );
    let dirs = exec.cgroup_dirs(&id);
    assert!(!dirs.is_empty());
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    exec.detach().await;
}
