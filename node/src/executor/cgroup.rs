//! Resource limits through cgroups, written directly to cgroupfs.
//!
//! At open the executor looks for a usable hierarchy: cgroup v2 with the
//! `cpu` and `memory` controllers (tasks go under `MOUNT/agora/NODE/TASK`,
//! with `memory.max` and `cpu.max`), else cgroup v1 `memory` and `cpu`
//! hierarchies (tasks go under the agent's own cgroup in each,
//! `.../agora/NODE/TASK`, with `memory.limit_in_bytes` and
//! `cpu.cfs_quota_us`). Detection is honest: it creates a probe cgroup and
//! writes a limit into it before claiming anything. When nothing is usable
//! the reason is kept for the log and `agora nodes`, and tasks run without
//! limits: cgroups never fail a task.

use super::fsutil::component;
use agora_protocol::resources::Resources;
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// CPU period written with every quota, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// The hierarchy this node uses for its tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cgroups {
    /// No limits; the reason says why.
    None {
        /// Why no cgroup is used.
        reason: String,
    },
    /// cgroup v2: task cgroups are created under `base`.
    V2 {
        /// `MOUNT/agora/NODE`.
        base: PathBuf,
    },
    /// cgroup v1: task cgroups are created under each base present.
    V1 {
        /// Base in the memory hierarchy.
        memory: Option<PathBuf>,
        /// Base in the cpu hierarchy.
        cpu: Option<PathBuf>,
    },
}

struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    options: Vec<String>,
}

fn mounts() -> Vec<Mount> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                root: left.get(3)?.to_string(),
                point: PathBuf::from(unescape(left.get(4)?)),
                fstype: right.first()?.to_string(),
                options: right.get(2)?.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// mountinfo escapes spaces and a few other bytes as `\ooo`.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The agent's own cgroup path in the v1 hierarchy holding `controller`.
fn own_v1_path(controller: &str) -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let ctrls = parts.next()?;
        let path = parts.next()?;
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn mkdir_all(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))
}

/// Enables the cpu and memory controllers for the children of `dir`.
fn enable_controllers(dir: &Path) -> io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&file).unwrap_or_default();
    let have = |c: &str| current.split_whitespace().any(|x| x == c);
    if have("cpu") && have("memory") {
        return Ok(());
    }
    write(&file, "+cpu +memory")
}

fn v2_limits(dir: &Path, res: &Resources) -> io::Result<()> {
    let mem = if res.mem_mib == 0 {
        "max".to_string()
    } else {
        (res.mem_mib.saturating_mul(1024 * 1024)).to_string()
    };
    write(&dir.join("memory.max"), &mem)?;
    let cpu = if res.cpu_millis == 0 {
        format!("max {CPU_PERIOD_US}")
    } else {
        format!("{} {CPU_PERIOD_US}", cpu_quota_us(res.cpu_millis))
    };
    write(&dir.join("cpu.max"), &cpu)
}

fn v1_memory_limit(dir: &Path, res: &Resources) -> io::Result<()> {
    let mem = if res.mem_mib == 0 {
        "-1".to_string()
    } else {
        (res.mem_mib.saturating_mul(1024 * 1024)).to_string()
    };
    write(&dir.join("memory.limit_in_bytes"), &mem)
}

fn v1_cpu_limit(dir: &Path, res: &Resources) -> io::Result<()> {
    write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
    let quota = if res.cpu_millis == 0 {
        "-1".to_string()
    } else {
        cpu_quota_us(res.cpu_millis).to_string()
    };
    write(&dir.join("cpu.cfs_quota_us"), &quota)
}

/// Microseconds of CPU per period for a share in millicores (at least 1 ms,
/// the kernel's minimum).
pub(crate) fn cpu_quota_us(cpu_millis: u64) -> u64 {
    (cpu_millis.saturating_mul(CPU_PERIOD_US) / 1000).max(1000)
}

/// Creates a throw-away cgroup under `base`, applies `limit` to it, removes it.
fn probe(base: &Path, limit: impl Fn(&Path) -> io::Result<()>) -> io::Result<()> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = base.join(format!(".probe-{}-{seq}", std::process::id()));
    mkdir_all(&dir)?;
    let result = limit(&dir);
    let _ = fs::remove_dir(&dir);
    result
}

fn detect_v2(mount: &Path, node: &str) -> io::Result<PathBuf> {
    let agora = mount.join("agora");
    let base = agora.join(component(node));
    enable_controllers(mount)?;
    mkdir_all(&agora)?;
    enable_controllers(&agora)?;
    mkdir_all(&base)?;
    enable_controllers(&base)?;
    probe(&base, |d| {
        v2_limits(
            d,
            &Resources {
                cpu_millis: 1000,
                mem_mib: 64,
                ..Resources::default()
            },
        )
    })?;
    Ok(base)
}

fn v1_base(mounts: &[Mount], controller: &str, node: &str) -> Result<PathBuf, String> {
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == controller))
        .ok_or_else(|| format!("no cgroup v1 hierarchy has the {controller} controller"))?;
    let own = own_v1_path(controller).unwrap_or_else(|| "/".to_string());
    // The agent's cgroup relative to what this mount shows.
    let rel = own
        .strip_prefix(mount.root.as_str())
        .unwrap_or(own.as_str())
        .trim_start_matches('/');
    let mut parent = mount.point.join(rel);
    if !parent.is_dir() {
        parent = mount.point.clone();
    }
    let base = parent.join("agora").join(component(node));
    mkdir_all(&base).map_err(|e| e.to_string())?;
    let res = Resources {
        cpu_millis: 1000,
        mem_mib: 64,
        ..Resources::default()
    };
    let result = if controller == "memory" {
        probe(&base, |d| v1_memory_limit(d, &res))
    } else {
        probe(&base, |d| v1_cpu_limit(d, &res))
    };
    result.map_err(|e| e.to_string())?;
    Ok(base)
}

impl Cgroups {
    /// Finds and prepares a hierarchy for the tasks of `node` (see the module docs).
    pub fn detect(enabled: bool, node: &str) -> Cgroups {
        if !enabled {
            return Cgroups::None {
                reason: "disabled by configuration".into(),
            };
        }
        let mounts = mounts();
        let mut notes = Vec::new();
        for m in mounts.iter().filter(|m| m.fstype == "cgroup2") {
            let controllers =
                fs::read_to_string(m.point.join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            if !(has("cpu") && has("memory")) {
                notes.push(format!(
                    "cgroup v2 at {} lacks the cpu and memory controllers (it has: {})",
                    m.point.display(),
                    if controllers.trim().is_empty() {
                        "none"
                    } else {
                        controllers.trim()
                    }
                ));
                continue;
            }
            match detect_v2(&m.point, node) {
                Ok(base) => return Cgroups::V2 { base },
                Err(e) => notes.push(format!(
                    "cgroup v2 at {} is not writable: {e}",
                    m.point.display()
                )),
            }
        }
        let memory = v1_base(&mounts, "memory", node);
        let cpu = v1_base(&mounts, "cpu", node);
        match (memory, cpu) {
            (Err(me), Err(ce)) => {
                if !mounts
                    .iter()
                    .any(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
                {
                    notes.push("no cgroup filesystem is mounted".into());
                } else {
                    notes.push(format!("cgroup v1: {me}; {ce}"));
                }
                Cgroups::None {
                    reason: notes.join("; "),
                }
            }
            (memory, cpu) => Cgroups::V1 {
                memory: memory.ok(),
                cpu: cpu.ok(),
            },
        }
    }

    /// One line for the log and `agora nodes`.
    pub fn describe(&self) -> String {
        match self {
            Cgroups::None { reason } => format!("no cgroups: {reason}"),
            Cgroups::V2 { base } => {
                format!("cgroup v2 at {} (memory.max, cpu.max)", base.display())
            }
            Cgroups::V1 { memory, cpu } => {
                let show = |p: &Option<PathBuf>| {
                    p.as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "unavailable".into())
                };
                format!(
                    "cgroup v1: memory at {} (memory.limit_in_bytes), cpu at {} (cpu.cfs_quota_us)",
                    show(memory),
                    show(cpu)
                )
            }
        }
    }

    /// The cgroup directories a task gets (none without cgroups).
    pub fn task_dirs(&self, task: &str) -> Vec<PathBuf> {
        let name = component(task);
        match self {
            Cgroups::None { .. } => Vec::new(),
            Cgroups::V2 { base } => vec![base.join(name)],
            Cgroups::V1 { memory, cpu } => [memory, cpu]
                .into_iter()
                .flatten()
                .map(|b| b.join(&name))
                .collect(),
        }
    }

    /// Creates a task's cgroups and writes its limits. Returns the
    /// `cgroup.procs` files the task must join.
    ///
    /// # Errors
    /// A directory or limit file cannot be written; whatever was created is
    /// removed again.
    pub fn create(&self, task: &str, res: &Resources) -> io::Result<Vec<PathBuf>> {
        let name = component(task);
        let mut made = Vec::new();
        let result = (|| -> io::Result<()> {
            match self {
                Cgroups::None { .. } => {}
                Cgroups::V2 { base } => {
                    let dir = base.join(&name);
                    mkdir_all(&dir)?;
                    made.push(dir.clone());
                    v2_limits(&dir, res)?;
                }
                Cgroups::V1 { memory, cpu } => {
                    if let Some(base) = memory {
                        let dir = base.join(&name);
                        mkdir_all(&dir)?;
                        made.push(dir.clone());
                        v1_memory_limit(&dir, res)?;
                    }
                    if let Some(base) = cpu {
                        let dir = base.join(&name);
                        mkdir_all(&dir)?;
                        made.push(dir.clone());
                        v1_cpu_limit(&dir, res)?;
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(made.iter().map(|d| d.join("cgroup.procs")).collect()),
            Err(e) => {
                remove(&made);
                Err(e)
            }
        }
    }
}

/// True when the kernel's OOM killer killed something in these cgroups.
pub(crate) fn oom_killed(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| {
        ["memory.events", "memory.oom_control"].iter().any(|f| {
            fs::read_to_string(d.join(f)).is_ok_and(|text| {
                text.lines().any(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
        })
    })
}

/// Removes task cgroups, killing stray processes still in them (best effort,
/// bounded: about half a second per directory at most).
pub(crate) fn remove(dirs: &[PathBuf]) {
    for dir in dirs {
        for attempt in 0..20 {
            match fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) => {
                    if attempt == 19 {
                        tracing::warn!(cgroup = %dir.display(), "cannot remove a task cgroup: {e}");
                        break;
                    }
                    let kill = dir.join("cgroup.kill");
                    if kill.exists() {
                        let _ = fs::write(&kill, "1");
                    } else if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                                let _ = rustix::process::kill_process(
                                    pid,
                                    rustix::process::Signal::KILL,
                                );
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quota_follows_millicores_with_a_floor() {
        assert_eq!(cpu_quota_us(1000), 100_000);
        assert_eq!(cpu_quota_us(500), 50_000);
        assert_eq!(cpu_quota_us(2500), 250_000);
        assert_eq!(cpu_quota_us(1), 1000);
    }

    #[test]
    fn disabled_cgroups_say_so() {
        let c = Cgroups::detect(false, "n1");
        assert_eq!(c.describe(), "no cgroups: disabled by configuration");
        assert!(c.task_dirs("t").is_empty());
    }
}
