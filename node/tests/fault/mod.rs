//! Helpers shared by the fault tests (`fault_*.rs`): submitting tasks with
//! the CLI, reading a task's row and its process from a node's data dir,
//! telling whether that very process still runs, and a small tmpfs that is
//! always unmounted, even when the test fails.

#![allow(dead_code)]

use super::common::{Node, wait_for};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `agora run ARGS` on `node`; the task ids it printed.
pub fn run(node: &Node, args: &[&str]) -> Vec<String> {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let out = node.cli(&all);
    assert!(
        out.status.success(),
        "agora {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The row of task `id` in `node`'s `ps --json`, if listed.
pub fn row(node: &Node, id: &str) -> Option<serde_json::Value> {
    node.ps()?.into_iter().find(|r| r["id"] == id)
}

/// The state of task `id` as `node` lists it.
pub fn state(node: &Node, id: &str) -> Option<String> {
    row(node, id).and_then(|r| r["state"].as_str().map(str::to_string))
}

/// Waits until `node` lists every task of `ids` in `want`.
pub fn wait_state(node: &Node, ids: &[String], want: &str, timeout: Duration) {
    wait_for(
        &format!("{ids:?} to be {want} on {}", node.id),
        timeout,
        || {
            let rows = node.ps()?;
            ids.iter()
                .all(|id| {
                    rows.iter()
                        .any(|r| r["id"] == id.as_str() && r["state"] == want)
                })
                .then_some(())
        },
    );
}

/// A process named so that a reused pid is not mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub start_time: u64,
}

impl Proc {
    /// The process `pid` as it is now.
    pub fn of(pid: i32) -> Option<Proc> {
        let (_, start_time) = stat(pid)?;
        Some(Proc { pid, start_time })
    }

    /// True while this very process runs (a zombie has ended).
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|(state, start)| start == self.start_time && state != 'Z')
    }
}

/// State letter and start time of a process.
fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(19)?.parse().ok()?,
    ))
}

/// A task's sandbox on the node whose data dir is `dir`.
pub fn sandbox(dir: &Path, task: &str) -> PathBuf {
    dir.join("sandboxes").join(task)
}

/// The task's process as its supervisor recorded it (`.agora/process.json`).
pub fn task_process(dir: &Path, task: &str) -> Option<Proc> {
    let bytes = std::fs::read(sandbox(dir, task).join(".agora/process.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(Proc {
        pid: i32::try_from(v["pid"].as_i64()?).ok()?,
        start_time: v["start_time"].as_u64()?,
    })
}

/// The task's supervisor as its checkpoint records it.
pub fn supervisor(dir: &Path, task: &str) -> Option<Proc> {
    let bytes = std::fs::read(dir.join("tasks").join(format!("{task}.json"))).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(Proc {
        pid: i32::try_from(v["supervisor"]["pid"].as_i64()?).ok()?,
        start_time: v["supervisor"]["start_time"].as_u64()?,
    })
}

/// Waits until the supervisor of every task has recorded its process.
pub fn task_processes(dir: &Path, ids: &[String]) -> Vec<Proc> {
    ids.iter()
        .map(|id| {
            wait_for(
                &format!("the process of {id}"),
                Duration::from_secs(30),
                || task_process(dir, id),
            )
        })
        .collect()
}

/// Sends `sig` (e.g. "-KILL") to `pid`.
pub fn signal(pid: i32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {pid}");
}

/// True when this test runs as root (mounts need it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A tmpfs of a few MiB mounted on a fresh directory, unmounted (lazily,
/// so that a process still holding a file in it cannot keep it mounted)
/// and removed on drop, also when the test panics. Declare it before the
/// cluster whose node uses it, so that the agents are stopped first.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB; None (with a message) when not root.
    pub fn mount(mib: u32) -> Option<Tmpfs> {
        if !is_root() {
            eprintln!("skipped: mounting a tmpfs needs root (CI runs these tests as root)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "skipped: cannot mount a tmpfs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Tmpfs { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Remounts it read-only (`ro`) or read-write.
    pub fn remount(&self, ro: bool) {
        let out = Command::new("mount")
            .args(["-o", if ro { "remount,ro" } else { "remount,rw" }])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Makes it read-only for every new open, as a disk the kernel turned
    /// read-only after an error does, while files already open for writing
    /// (a running task's stdout) keep their writes: a read-only bind mount
    /// over it (`remount,ro` itself refuses while such a file is open).
    /// Dropping the guard makes it writable again.
    pub fn read_only_over(&self) -> ReadOnly<'_> {
        for args in [
            vec!["--bind".to_string(), self.path().display().to_string()],
            vec!["-o".to_string(), "remount,bind,ro".to_string()],
        ] {
            let out = Command::new("mount")
                .args(&args)
                .arg(self.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "mount {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ReadOnly { fs: self }
    }

    /// Writes zeros to `name` in it until the file system is full.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.path().join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        let _ = f.sync_all();
        path
    }
}

/// See [`Tmpfs::read_only_over`].
pub struct ReadOnly<'a> {
    fs: &'a Tmpfs,
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.fs.path()).status();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}
