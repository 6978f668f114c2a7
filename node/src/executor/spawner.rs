//! The supervisor spawner, `agora __spawner`: one small helper process per
//! executor that starts each task's supervisor by forking itself, so that a
//! launch costs no new program start.
//!
//! Why: starting `agora __supervise` with exec cost about 2.4 ms of CPU per
//! task on the 2-core VM of issue 13 (`perf record` over 2,000 tasks): the
//! dynamic loader probing the CPU (its cache-size CPUID loop traps to the
//! hypervisor, ~0.6 ms), mapping and relocating an 88 MB binary, and the
//! page faults of a fresh process, before the supervisor did any work. A
//! fork of an already running, single-threaded, small process pays none of
//! that. (The agent itself must not fork: it is multi-threaded, and copying
//! its page tables cost about 5 ms per task.)
//!
//! What does not change: every task still has a supervisor process of its
//! own, running the same code (`supervisor::run`), the leader of a session
//! of its own, that outlives the agent (and this spawner) and is re-attached
//! after a restart. Its command line reads `agora __supervise SANDBOX` (the
//! child writes it over the spawner's own, which was started with room for
//! it), which is how recovery and operators find it; a sandbox path too long
//! for that room makes the child exec `agora __supervise SANDBOX` instead.
//!
//! ```text
//!   agent (executor) ──Spawn{sandbox, log}──▶ agora __spawner (stdin)
//!        ◀── Spawned{pid, start time} | Failed{why} ──   (stdout, in order)
//!                          fork() ──▶ supervisor ──▶ task
//!        ◀── Exited{pid, wait status} ── (the spawner reaps its children)
//! ```
//!
//! Messages are postcard, each behind a little-endian `u32` length. The
//! spawner writes `Spawned` before it can reap that child, so `Exited`
//! always comes after it; the pid cannot be reused before the agent has
//! read the child's start time, because the child is not reaped until then.
//!
//! When the spawner is gone (killed, or it could not start), the monitors
//! of running tasks watch their supervisors through pidfds as after an
//! agent restart (only the note on how a supervisor without an exit record
//! ended is lost), and launches start `agora __supervise` directly, as
//! before, until a new spawner starts (at most one try every
//! [`RESTART_EVERY`]).

use super::fsutil::ProcRef;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// The largest message either side accepts (a path is at most 4 KiB).
const MAX_MESSAGE: usize = 64 * 1024;
/// Room the spawner's command line keeps for a supervisor's
/// (`agora __supervise SANDBOX`).
const CMDLINE_ROOM: usize = 4096;
/// Least time between two starts of a spawner.
pub(crate) const RESTART_EVERY: Duration = Duration::from_secs(5);

/// From the executor to the spawner.
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// Start the supervisor of the sandbox at this path, its stdout and
    /// stderr appended to the file at `log`.
    Spawn {
        /// The sandbox (bytes of the path).
        sandbox: Vec<u8>,
        /// `SANDBOX/.agora/supervisor.log` (bytes of the path).
        log: Vec<u8>,
    },
}

/// From the spawner to the executor.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    /// The answer to a `Spawn`: the supervisor runs.
    Spawned(ProcRef),
    /// The answer to a `Spawn`: it could not be started.
    Failed(String),
    /// A supervisor this spawner started has exited (its raw wait status).
    Exited {
        /// Its pid.
        pid: i32,
        /// As waitpid(2) gives it.
        status: i32,
    },
}

fn encode<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let body = postcard::to_allocvec(msg).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Takes the first whole message off `buf`, if there is one.
fn take<T: for<'de> Deserialize<'de>>(buf: &mut Vec<u8>) -> io::Result<Option<T>> {
    let Some(len) = buf
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    else {
        return Ok(None);
    };
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message of {len} bytes (at most {MAX_MESSAGE})"),
        ));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let msg = postcard::from_bytes(&buf[4..4 + len])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    buf.drain(..4 + len);
    Ok(Some(msg))
}

// ---------------------------------------------------------------------------
// The executor's side.

/// What a launch gets from [`Spawner::spawn`].
pub(crate) struct Spawned {
    /// The supervisor.
    pub process: ProcRef,
    /// Its raw wait status once it has exited; closed without one if the
    /// spawner went away first.
    pub exit: oneshot::Receiver<i32>,
}

/// Replies the reader task routes.
#[derive(Default)]
struct Routes {
    /// Answers to the spawns sent, in order.
    answers: VecDeque<oneshot::Sender<Result<Spawned, String>>>,
    /// Supervisors started and not yet exited, by pid.
    exits: HashMap<i32, oneshot::Sender<i32>>,
    /// The connection is over: nothing more will be routed.
    closed: bool,
}

struct Conn {
    stdin: tokio::process::ChildStdin,
    routes: Arc<Mutex<Routes>>,
}

fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(|e| e.into_inner())
}

/// The executor's handle on its spawner (started at the first launch).
pub(crate) struct Spawner {
    exe: PathBuf,
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// When the last spawner was started (none yet: `None`).
    started: Mutex<Option<Instant>>,
}

impl Spawner {
    /// A handle that starts `EXE __spawner` when first asked to spawn.
    pub fn new(exe: PathBuf) -> Spawner {
        Spawner {
            exe,
            conn: tokio::sync::Mutex::new(None),
            started: Mutex::new(None),
        }
    }

    /// Starts the supervisor of `sandbox` through the spawner.
    ///
    /// # Errors
    /// Why not: the spawner cannot be started or is gone (the caller then
    /// starts the supervisor itself), or it could not fork.
    pub async fn spawn(&self, sandbox: &Path, log: &Path) -> Result<Spawned, String> {
        let request = encode(&Request::Spawn {
            sandbox: sandbox.as_os_str().as_bytes().to_vec(),
            log: log.as_os_str().as_bytes().to_vec(),
        })
        .map_err(|e| e.to_string())?;
        let answer = {
            let mut guard = self.conn.lock().await;
            if guard.as_ref().is_none_or(|c| lock(&c.routes).closed) {
                *guard = None;
                *guard = Some(self.start()?);
            }
            let Some(conn) = guard.as_mut() else {
                return Err("no spawner".into());
            };
            let (tx, rx) = oneshot::channel();
            lock(&conn.routes).answers.push_back(tx);
            if let Err(e) = conn.stdin.write_all(&request).await {
                let mut routes = lock(&conn.routes);
                routes.closed = true;
                routes.answers.clear();
                return Err(format!("the spawner is gone ({e})"));
            }
            rx
        };
        answer
            .await
            .unwrap_or_else(|_| Err("the spawner is gone".into()))
    }

    /// Starts a spawner, unless one was started less than
    /// [`RESTART_EVERY`] ago.
    fn start(&self) -> Result<Conn, String> {
        {
            let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
            if started.is_some_and(|t| t.elapsed() < RESTART_EVERY) {
                return Err("the spawner stopped recently; not starting another yet".into());
            }
            *started = Some(Instant::now());
        }
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("__spawner")
            .arg(" ".repeat(CMDLINE_ROOM))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Closing its stdin stops it; its supervisors stay.
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| {
            let e = format!("cannot start `{} __spawner`: {e}", self.exe.display());
            tracing::warn!("{e}; supervisors are started as programs meanwhile");
            e
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the spawner has no pipes".into());
        };
        let routes = Arc::new(Mutex::new(Routes::default()));
        tracing::debug!(pid = ?child.id(), "started the supervisor spawner");
        tokio::spawn(read_replies(child, stdout, Arc::clone(&routes)));
        Ok(Conn { stdin, routes })
    }

    /// Stops the spawner (closing its stdin); the supervisors it started
    /// keep running.
    pub async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            lock(&conn.routes).closed = true;
        }
    }

    /// [`Spawner::close`] from a place that cannot wait (best effort).
    pub fn close_now(&self) {
        if let Ok(mut guard) = self.conn.try_lock()
            && let Some(conn) = guard.take()
        {
            lock(&conn.routes).closed = true;
        }
    }
}

/// Routes the spawner's replies until it closes its stdout, then waits for
/// it (so that it is reaped).
async fn read_replies(
    mut child: tokio::process::Child,
    mut stdout: tokio::process::ChildStdout,
    routes: Arc<Mutex<Routes>>,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let why = 'read: loop {
        loop {
            match take::<Reply>(&mut buf) {
                Ok(Some(reply)) => route(&routes, reply),
                Ok(None) => break,
                Err(e) => break 'read format!("it sent {e}"),
            }
        }
        match stdout.read(&mut chunk).await {
            Ok(0) => break "it closed its output".to_string(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => break format!("cannot read from it: {e}"),
        }
    };
    let (unanswered, expected) = {
        let mut r = lock(&routes);
        let expected = r.closed;
        r.closed = true;
        r.exits.clear();
        (std::mem::take(&mut r.answers), expected)
    };
    if !expected {
        tracing::warn!(
            "the supervisor spawner stopped ({why}); supervisors are started as programs \
             until a new one starts (at most one try every {} s)",
            RESTART_EVERY.as_secs()
        );
    }
    for tx in unanswered {
        let _ = tx.send(Err("the spawner is gone".into()));
    }
    drop(stdout);
    let status = child.wait().await;
    tracing::debug!(?status, "the supervisor spawner stopped: {why}");
}

fn route(routes: &Mutex<Routes>, reply: Reply) {
    let mut r = lock(routes);
    match reply {
        Reply::Spawned(process) => {
            let (tx, exit) = oneshot::channel();
            r.exits.insert(process.pid, tx);
            if let Some(answer) = r.answers.pop_front() {
                let _ = answer.send(Ok(Spawned { process, exit }));
            }
        }
        Reply::Failed(why) => {
            if let Some(answer) = r.answers.pop_front() {
                let _ = answer.send(Err(why));
            }
        }
        Reply::Exited { pid, status } => {
            if let Some(tx) = r.exits.remove(&pid) {
                let _ = tx.send(status);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The spawner's side: a single-threaded blocking loop.

/// Entry point of `agora __spawner ROOM` (started by the executor; `args`
/// is the whole command line). Returns the exit code.
pub(crate) fn serve(args: Vec<OsString>) -> i32 {
    match serve_loop(&args) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(io::stderr(), "agora spawner: {e}");
            1
        }
    }
}

/// The spawner's own command line in memory (`arg_start`, `arg_end` of
/// /proc/self/stat), which a child overwrites with its own.
fn cmdline_area() -> Option<(usize, usize)> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 48 and 49 of stat(5); `rest` starts at field 3.
    let start = fields.get(45)?.parse().ok()?;
    let end = fields.get(46)?.parse().ok()?;
    (end > start).then_some((start, end))
}

fn errno() -> io::Error {
    io::Error::last_os_error()
}

fn serve_loop(args: &[OsString]) -> io::Result<()> {
    let exe = args.first().cloned().unwrap_or_else(|| "agora".into());
    let area = cmdline_area();
    // SIGCHLD is read from a signalfd, so it must be blocked.
    // SAFETY: plain libc calls on a zeroed sigset owned here.
    let sigfd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(errno());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(errno());
        }
        fd
    };
    // Unbuffered: poll(2) must see every byte not yet read, and a forked
    // child must not inherit replies waiting in a buffer.
    // SAFETY: descriptors 0 and 1 are the pipes from and to the executor,
    // used by nothing else in this process.
    let (mut input, mut output) = unsafe {
        use std::os::fd::FromRawFd;
        (std::fs::File::from_raw_fd(0), std::fs::File::from_raw_fd(1))
    };
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two pollfds owned here.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            let e = errno();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents != 0 {
            let mut info = [0u8; 128 * 8];
            // SAFETY: reads into a buffer owned here; the fd is nonblocking.
            while unsafe { libc::read(sigfd, info.as_mut_ptr().cast(), info.len()) } > 0 {}
            reap(&mut output)?;
        }
        if fds[0].revents != 0 {
            let n = match input.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                // The executor is gone: its supervisors stay, and whoever
                // inherits them (init) reaps them.
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            while let Some(Request::Spawn { sandbox, log }) = take(&mut buf)? {
                let reply = spawn_one(&exe, area, sigfd, sandbox, log);
                output.write_all(&encode(&reply)?)?;
            }
        }
    }
}

/// Reaps every child that has exited and reports it.
fn reap(output: &mut impl Write) -> io::Result<()> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on any child, without blocking.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return Ok(());
        }
        output.write_all(&encode(&Reply::Exited { pid, status })?)?;
    }
}

fn spawn_one(
    exe: &OsString,
    area: Option<(usize, usize)>,
    sigfd: i32,
    sandbox: Vec<u8>,
    log: Vec<u8>,
) -> Reply {
    let sandbox = OsString::from_vec(sandbox);
    let log_path = PathBuf::from(OsString::from_vec(log));
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
    {
        Ok(f) => f,
        Err(e) => return Reply::Failed(format!("cannot open {}: {e}", log_path.display())),
    };
    let null = match std::fs::File::open("/dev/null") {
        Ok(f) => f,
        Err(e) => return Reply::Failed(format!("cannot open /dev/null: {e}")),
    };
    // SAFETY: this process is single-threaded, so the child may do anything
    // the parent could (allocate, take locks).
    match unsafe { libc::fork() } {
        -1 => Reply::Failed(format!("cannot fork: {}", errno())),
        0 => {
            use std::os::fd::AsRawFd;
            // SAFETY: resets this process's signal mask and descriptors 0-2;
            // all descriptors named are open and owned here.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                libc::close(sigfd);
                libc::dup2(null.as_raw_fd(), 0);
                libc::dup2(log.as_raw_fd(), 1);
                libc::dup2(log.as_raw_fd(), 2);
            }
            drop((log, null));
            let code = if rename_to_supervisor(area, exe, &sandbox) {
                super::supervisor::run(vec![sandbox])
            } else {
                // No room for its command line: be started as before.
                use std::os::unix::process::CommandExt;
                let e = std::process::Command::new(exe)
                    .arg("__supervise")
                    .arg(&sandbox)
                    .exec();
                let _ = writeln!(
                    io::stderr(),
                    "agora spawner: cannot exec the supervisor: {e}"
                );
                127
            };
            // SAFETY: ends this child without running the spawner's exit
            // handlers a second time.
            unsafe { libc::_exit(code) }
        }
        pid => {
            drop((log, null));
            match ProcRef::of(pid) {
                Some(p) => Reply::Spawned(p),
                None => {
                    // SAFETY: our own unreaped child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    Reply::Failed(format!(
                        "cannot read /proc/{pid}/stat of the new supervisor"
                    ))
                }
            }
        }
    }
}

/// Writes `EXE\0__supervise\0SANDBOX\0` over this process's command line
/// (zero-filling the rest); false when it does not fit.
fn rename_to_supervisor(area: Option<(usize, usize)>, exe: &OsString, sandbox: &OsString) -> bool {
    let Some((start, end)) = area else {
        return false;
    };
    let mut line = Vec::new();
    for part in [exe.as_bytes(), b"__supervise", sandbox.as_bytes()] {
        line.extend_from_slice(part);
        line.push(0);
    }
    if line.len() > end - start {
        return false;
    }
    // SAFETY: [start, end) is this process's own argv strings (from
    // /proc/self/stat), writable stack memory nothing reads any more: the
    // arguments were copied at start.
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, end - start);
        area[..line.len()].copy_from_slice(&line);
        area[line.len()..].fill(0);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_off_the_buffer_whole_and_in_order() {
        let mut buf = encode(&Reply::Exited { pid: 7, status: 9 }).unwrap();
        buf.extend(encode(&Reply::Failed("no".into())).unwrap());
        let cut = buf.len() - 1;
        let last = buf.split_off(cut);
        assert!(matches!(
            take::<Reply>(&mut buf).unwrap(),
            Some(Reply::Exited { pid: 7, status: 9 })
        ));
        assert!(take::<Reply>(&mut buf).unwrap().is_none(), "cut short");
        buf.extend(last);
        assert!(matches!(take::<Reply>(&mut buf).unwrap(), Some(Reply::Failed(s)) if s == "no"));
        assert!(buf.is_empty());
    }

    #[test]
    fn an_oversized_length_is_an_error_not_an_allocation() {
        let mut buf = (u32::MAX).to_le_bytes().to_vec();
        assert!(take::<Reply>(&mut buf).is_err());
    }
}
