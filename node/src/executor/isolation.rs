//! Keeping tasks away from their node (issue 12: a task read the cluster
//! key, the node's p2p key and another task's environment, then acted as
//! the operator on the socket).
//!
//! Three layers, each enough on its own for what it guards:
//!
//! 1. **The task user.** When the agent runs as root, tasks run as an
//!    unprivileged user (`--task-user`, `nobody` by default): the
//!    supervisor stays root (it writes the logs and the exit record) and
//!    its child drops its groups, gid and uid just before it executes the
//!    task ([`ChildSetup::apply`]).
//! 2. **Permissions.** The data dir is 0711 (others may pass through it,
//!    not list it), `tasks/` (checkpoints: every task's spec and
//!    environment) 0700, `sandboxes/` 0711. A sandbox is root's with the
//!    task user's group, mode 1770: the task may create and remove its own
//!    files there, but, the directory being sticky, it cannot rename or
//!    replace what the supervisor keeps in it (`.agora/`, mode 0700, holds
//!    `launch.json` with the task's environment, and the exit and process
//!    records the agent trusts; `stdout` and `stderr` are 0600).
//! 3. **A private mount namespace** where the kernel allows it (the
//!    executor checks once at open, [`probe_namespaces`]): the child
//!    unshares its mounts, makes them private, covers the data dir with an
//!    empty tmpfs and binds its own sandbox back at its path (a detached
//!    clone made before the cover, `open_tree` and `move_mount`: Linux
//!    5.2 or later). The task then
//!    sees neither the data dir (keys, socket, checkpoints) nor any other
//!    sandbox, whatever their permissions. When a directory above the data
//!    dir is closed to the task user (a 0700 home or temporary directory),
//!    the tmpfs covers the highest such directory instead: nothing under it
//!    was reachable anyway, and the sandbox's path is then reachable.
//!
//! What stays shared: tasks that run as the same user can signal each
//! other and read each other's `/proc/PID` entries (environment included);
//! they see the rest of the file system as that user does.

use crate::users::User;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How a task is kept from its node: decided by the executor and written
/// into the task's `launch.json` for its supervisor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Isolation {
    /// The user the task runs as; `None`: the agent's own (no switch).
    pub user: Option<User>,
    /// The data dir to hide behind a private mount namespace; `None`: no
    /// namespace (the kernel refused one, or the task runs as the agent's
    /// user, who may read the data dir anyway).
    pub hide: Option<PathBuf>,
}

/// Mode of the data dir: others may pass through to their sandbox, not list it.
const DATA_DIR_MODE: u32 = 0o711;
/// Mode of `tasks/` (checkpoints hold every task's spec and environment).
const CHECKPOINTS_MODE: u32 = 0o700;
/// Mode of `sandboxes/`.
const SANDBOXES_MODE: u32 = 0o711;
/// Mode of a sandbox of a task that runs as another user (owner root,
/// group the task user's): sticky, so the task cannot move what root keeps
/// in it.
const SHARED_SANDBOX_MODE: u32 = 0o1770;
/// Mode of a sandbox of a task that runs as the agent's user, and of the
/// supervisor's `.agora/` in every sandbox.
const PRIVATE_MODE: u32 = 0o700;

fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Sets the modes of the data dir, `tasks/` and `sandboxes/` (see the
/// module docs). Blocking.
///
/// # Errors
/// A mode cannot be set; the message names the path.
pub(crate) fn harden_dirs(
    data_dir: &Path,
    checkpoints: &Path,
    sandboxes: &Path,
) -> Result<(), String> {
    for (dir, mode) in [
        (data_dir, DATA_DIR_MODE),
        (checkpoints, CHECKPOINTS_MODE),
        (sandboxes, SANDBOXES_MODE),
    ] {
        chmod(dir, mode)
            .map_err(|e| format!("cannot set mode {mode:o} on {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Gives a new sandbox and its `.agora/` their owner and modes (see the
/// module docs). Blocking.
///
/// # Errors
/// The owner or a mode cannot be set; the message names the path.
pub(crate) fn prepare_sandbox(
    sandbox: &Path,
    meta: &Path,
    user: Option<&User>,
) -> Result<(), String> {
    let fail =
        |what: &str, path: &Path, e: io::Error| format!("cannot {what} {}: {e}", path.display());
    chmod(meta, PRIVATE_MODE).map_err(|e| fail("make private", meta, e))?;
    match user {
        Some(u) => {
            rustix::fs::chown(
                sandbox,
                Some(rustix::fs::Uid::ROOT),
                Some(rustix::fs::Gid::from_raw(u.gid)),
            )
            .map_err(|e| {
                fail(
                    &format!("give the task user's group ({}) to", u.gid),
                    sandbox,
                    e.into(),
                )
            })?;
            chmod(sandbox, SHARED_SANDBOX_MODE).map_err(|e| fail("set the mode of", sandbox, e))
        }
        None => chmod(sandbox, PRIVATE_MODE).map_err(|e| fail("make private", sandbox, e)),
    }
}

/// Whether this kernel lets the executor give tasks a private mount
/// namespace: starts `agora --version` in one, with its mounts made
/// private, and checks it ran. Blocking.
///
/// # Errors
/// Why not (the OS error of the step that failed).
pub(crate) fn probe_namespaces(agora_exe: &Path) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(agora_exe);
    cmd.arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: the closure makes two system calls and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)?;
            rustix::mount::mount_change(
                c"/",
                rustix::mount::MountPropagationFlags::PRIVATE
                    | rustix::mount::MountPropagationFlags::REC,
            )?;
            // What `ChildSetup::apply` uses to bind the sandbox (Linux 5.2).
            rustix::mount::open_tree(
                rustix::fs::CWD,
                c"/",
                rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
                    | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC,
            )?;
            Ok(())
        });
    }
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`{} --version` {s}", agora_exe.display())),
        Err(e) => Err(e.to_string()),
    }
}

/// Default `PATH` of a task when the agent has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Whether a variable of the agent's environment is passed on to tasks:
/// the program search path, the locale and the time zone. Nothing else
/// (the agent's environment may hold credentials).
fn passed_on(name: &str) -> bool {
    matches!(name, "PATH" | "LANG" | "LANGUAGE" | "TZ") || name.starts_with("LC_")
}

/// The environment every task starts from, before its spec's `env` and
/// the `AGORA_*` variables: `PATH`, the locale and `TZ` from the agent's,
/// `HOME` the sandbox, `USER` and `LOGNAME` the task user's name (the
/// agent's when tasks run as its user).
pub(crate) fn base_env(user: Option<&User>, sandbox: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| passed_on(k)).collect();
    env.sort();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env.push(("HOME".into(), sandbox.display().to_string()));
    let name = match user {
        Some(u) => Some(u.name.clone()),
        None => std::env::var("USER").ok(),
    };
    if let Some(name) = name {
        env.push(("USER".into(), name.clone()));
        env.push(("LOGNAME".into(), name));
    }
    env
}

/// Whether `user` may pass through a directory with this metadata (its
/// mode bits; ACLs are not read).
fn can_enter(meta: &std::fs::Metadata, user: &User) -> bool {
    let mode = meta.mode();
    if user.uid == 0 {
        return true;
    }
    if meta.uid() == user.uid {
        mode & 0o100 != 0
    } else if meta.gid() == user.gid || user.groups.contains(&meta.gid()) {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// The first directory of `path`'s ancestors (from the root down, `path`
/// itself included, `/` excluded) that `user` cannot pass through, with
/// its metadata.
fn first_closed(path: &Path, user: &User) -> io::Result<Option<(PathBuf, std::fs::Metadata)>> {
    let chain: Vec<&Path> = path.ancestors().collect();
    for dir in chain.into_iter().rev() {
        if dir.parent().is_none() {
            continue;
        }
        let meta = std::fs::metadata(dir)?;
        if !can_enter(&meta, user) {
            return Ok(Some((dir.to_path_buf(), meta)));
        }
    }
    Ok(None)
}

fn cstr(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("the path {} holds a NUL byte", path.display()))
}

/// The steps of [`ChildSetup::apply`], for the error that names the one
/// that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Step {
    Unshare = 1,
    PrivateMounts,
    Cover,
    Skeleton,
    Bind,
    Groups,
    Gid,
    Uid,
    Chdir,
}

impl Step {
    /// The step a byte written by [`ChildSetup::apply`]'s caller names.
    pub fn from_byte(b: u8) -> Option<Step> {
        use Step::*;
        [
            Unshare,
            PrivateMounts,
            Cover,
            Skeleton,
            Bind,
            Groups,
            Gid,
            Uid,
            Chdir,
        ]
        .into_iter()
        .find(|s| *s as u8 == b)
    }
}

/// The private mount namespace of one task.
#[derive(Debug)]
struct Mounts {
    /// Covered with an empty tmpfs.
    cover: CString,
    /// Directories made in the tmpfs down to the sandbox (the last one is
    /// where the sandbox is bound).
    skeleton: Vec<CString>,
    /// The sandbox: cloned (`open_tree`) before the cover, attached back
    /// here (`move_mount`) after it.
    target: CString,
}

/// Everything the task's process does between fork and exec, prepared
/// (allocated, resolved) before the fork so that [`ChildSetup::apply`]
/// makes system calls only.
#[derive(Debug)]
pub(crate) struct ChildSetup {
    /// The namespace, when the launch asks for one.
    mounts: Option<Mounts>,
    /// The user to become: groups, gid, uid.
    ids: Option<(Vec<rustix::fs::Gid>, rustix::fs::Gid, rustix::fs::Uid)>,
    /// The task's working directory (entered last, as the task user).
    cwd: CString,
    /// What the isolation amounts to, for the supervisor's log.
    pub summary: String,
}

impl ChildSetup {
    /// Plans the child's set-up for a task in `sandbox` (its cwd).
    /// Blocking; the supervisor calls it before it starts the task.
    ///
    /// # Errors
    /// Why the task cannot be started this way, for its `cannot_start`
    /// record: its user could not reach its sandbox, or a path cannot be
    /// used.
    pub fn plan(isolation: &Isolation, sandbox: &Path) -> Result<ChildSetup, String> {
        let cwd = cstr(sandbox)?;
        let Some(user) = &isolation.user else {
            return Ok(ChildSetup {
                mounts: None,
                ids: None,
                cwd,
                summary: "as the agent's user, no private mounts".into(),
            });
        };
        let ids = Some((
            user.groups
                .iter()
                .map(|g| rustix::fs::Gid::from_raw(*g))
                .collect(),
            rustix::fs::Gid::from_raw(user.gid),
            rustix::fs::Uid::from_raw(user.uid),
        ));
        let canon = std::fs::canonicalize(sandbox)
            .map_err(|e| format!("cannot resolve the sandbox {}: {e}", sandbox.display()))?;
        let hide = match &isolation.hide {
            Some(dir) => Some(
                std::fs::canonicalize(dir)
                    .map_err(|e| format!("cannot resolve the data dir {}: {e}", dir.display()))?,
            ),
            None => None,
        };
        let Some(data) = hide.filter(|d| canon.starts_with(d) && canon != *d) else {
            // No namespace: the sandbox's own path must be open to the user.
            let closed = first_closed(canon.parent().unwrap_or(&canon), user).map_err(|e| {
                format!(
                    "cannot check the path to the sandbox {}: {e}",
                    canon.display()
                )
            })?;
            if let Some((dir, meta)) = closed {
                return Err(format!(
                    "the task user {} (uid {}) cannot reach its sandbox {}: {} is mode {:o}, owner \
                     uid {}, group {}; make the directories above the data dir passable for it \
                     (chmod o+x {}), or run tasks as another user (--task-user)",
                    user.name,
                    user.uid,
                    sandbox.display(),
                    dir.display(),
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid(),
                    dir.display()
                ));
            }
            return Ok(ChildSetup {
                mounts: None,
                ids,
                cwd,
                summary: format!(
                    "as {} (uid {}), no private mounts: the data dir is guarded by its permissions only",
                    user.name, user.uid
                ),
            });
        };
        // The highest closed directory above the data dir, else the data dir.
        let above = data.parent().unwrap_or(&data);
        let cover = match first_closed(above, user) {
            Ok(Some((dir, _))) => dir,
            Ok(None) => data.clone(),
            Err(e) => {
                return Err(format!(
                    "cannot check the path to the data dir {}: {e}",
                    data.display()
                ));
            }
        };
        let rel = canon.strip_prefix(&cover).map_err(|_| {
            format!(
                "the sandbox {} is not under {}",
                canon.display(),
                cover.display()
            )
        })?;
        let mut skeleton = Vec::new();
        let mut at = cover.clone();
        for part in rel.components() {
            at.push(part);
            skeleton.push(cstr(&at)?);
        }
        Ok(ChildSetup {
            summary: format!(
                "as {} (uid {}), in a private mount namespace hiding {}",
                user.name,
                user.uid,
                cover.display()
            ),
            mounts: Some(Mounts {
                cover: cstr(&cover)?,
                skeleton,
                target: cstr(&canon)?,
            }),
            ids,
            // The cover may hide the path the agent was given (a data dir
            // reached through a symlink under it): enter the real one.
            cwd: cstr(&canon)?,
        })
    }

    /// Sets the task's process up, in the child between fork and exec:
    /// the private mounts, then the user (groups, gid, uid), then its
    /// working directory. Makes system calls only (no allocation, no
    /// lock), as a forked child of a threaded process must.
    ///
    /// # Errors
    /// The step that failed and its OS error.
    pub fn apply(&self) -> Result<(), (Step, rustix::io::Errno)> {
        use rustix::mount::{MountFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags};
        if let Some(m) = &self.mounts {
            // SAFETY: only the mount table is unshared, not file descriptors.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
                .map_err(|e| (Step::Unshare, e))?;
            rustix::mount::mount_change(
                c"/",
                MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
            )
            .map_err(|e| (Step::PrivateMounts, e))?;
            // A bind of the sandbox alone (its own submounts not
            // included), detached: the cover would hide its path.
            let sandbox = rustix::mount::open_tree(
                rustix::fs::CWD,
                m.target.as_c_str(),
                OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
            )
            .map_err(|e| (Step::Bind, e))?;
            rustix::mount::mount(
                c"tmpfs",
                m.cover.as_c_str(),
                c"tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                Some(c"mode=0711,size=1m"),
            )
            .map_err(|e| (Step::Cover, e))?;
            for dir in &m.skeleton {
                rustix::fs::mkdir(dir.as_c_str(), rustix::fs::Mode::from_raw_mode(0o711))
                    .map_err(|e| (Step::Skeleton, e))?;
            }
            rustix::mount::move_mount(
                &sandbox,
                c"",
                rustix::fs::CWD,
                m.target.as_c_str(),
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .map_err(|e| (Step::Bind, e))?;
        }
        if let Some((groups, gid, uid)) = &self.ids {
            rustix::thread::set_thread_groups(groups).map_err(|e| (Step::Groups, e))?;
            rustix::thread::set_thread_gid(*gid).map_err(|e| (Step::Gid, e))?;
            rustix::thread::set_thread_uid(*uid).map_err(|e| (Step::Uid, e))?;
        }
        rustix::process::chdir(self.cwd.as_c_str()).map_err(|e| (Step::Chdir, e))
    }

    /// What failed, for the task's `cannot_start` reason.
    pub fn describe(&self, step: Step) -> String {
        let show = |c: &CString| String::from_utf8_lossy(c.as_bytes()).into_owned();
        let m = self.mounts.as_ref();
        match step {
            Step::Unshare => "cannot give the task a private mount namespace".into(),
            Step::PrivateMounts => "cannot make the task's mounts private".into(),
            Step::Cover => format!(
                "cannot cover {} with a tmpfs in the task's namespace",
                m.map(|m| show(&m.cover)).unwrap_or_default()
            ),
            Step::Skeleton => "cannot make the path to the sandbox in the task's namespace".into(),
            Step::Bind => format!(
                "cannot bind the sandbox {} in the task's namespace",
                m.map(|m| show(&m.target)).unwrap_or_default()
            ),
            Step::Groups => "cannot set the task user's groups".into(),
            Step::Gid => "cannot switch to the task user's group".into(),
            Step::Uid => "cannot switch to the task user".into(),
            Step::Chdir => format!("the task cannot enter its sandbox {}", show(&self.cwd)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> User {
        User {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        }
    }

    #[test]
    fn mode_bits_decide_who_may_enter() {
        let dir = tempfile::tempdir().unwrap();
        let meta = |mode| {
            chmod(dir.path(), mode).unwrap();
            std::fs::metadata(dir.path()).unwrap()
        };
        let owner = rustix::process::geteuid().as_raw();
        let me = User {
            name: "me".into(),
            uid: owner,
            gid: 4242,
            groups: vec![4242],
        };
        if owner != 0 {
            assert!(!can_enter(&meta(0o070), &me));
        }
        assert!(can_enter(&meta(0o700), &me));
        assert!(!can_enter(&meta(0o700), &nobody()));
        assert!(can_enter(&meta(0o711), &nobody()));
        assert!(!can_enter(&meta(0o770), &nobody()));
        chmod(dir.path(), 0o700).unwrap();
    }

    #[test]
    fn tasks_get_the_path_and_locale_of_the_agent_and_nothing_else() {
        // Issue 12: tasks inherited the agent's whole environment.
        let env = base_env(Some(&nobody()), Path::new("/d/sandboxes/t"));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert!(get("PATH").is_some());
        assert_eq!(get("HOME"), Some("/d/sandboxes/t"));
        assert_eq!(get("USER"), Some("nobody"));
        assert_eq!(get("LOGNAME"), Some("nobody"));
        for (k, _) in &env {
            assert!(
                passed_on(k) || ["HOME", "USER", "LOGNAME"].contains(&k.as_str()),
                "{k} passed on"
            );
        }
        assert!(!passed_on("AWS_SECRET_ACCESS_KEY"));
        assert!(!passed_on("AGORA_SOCKET"));
        assert!(passed_on("LC_ALL"));
    }

    #[test]
    fn steps_round_trip_through_a_byte() {
        for b in 1..=9u8 {
            assert_eq!(Step::from_byte(b).map(|s| s as u8), Some(b));
        }
        assert_eq!(Step::from_byte(0), None);
        assert_eq!(Step::from_byte(10), None);
    }
}
