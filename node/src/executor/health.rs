//! Whether the data dir can take new tasks: a task needs room there for its
//! checkpoint, sandbox and logs, so a node whose data dir is full or
//! read-only would fail every task sent to it (issue 12: 50 of 60). The
//! executor looks every [`PROBE_EVERY`] and tells the agent when the answer
//! changes ([`super::ExecEvent::DataDir`]); the agent then stops or resumes
//! taking tasks (the auctioneer's `set_unavailable`), the tasks running
//! meanwhile go on and are reported as usual.
//!
//! One look ([`check`]) is a statvfs of the data dir, then a small write:
//! - read-only (`ST_RDONLY`, or the write fails with EROFS):
//!   `data_dir_read_only`;
//! - less free than the reserve ([`reserve`]: 1% of the disk, at least
//!   1 MiB and at most 256 MiB), or the write fails with ENOSPC or EDQUOT:
//!   `disk_full`. A full disk counts as recovered only once twice the
//!   reserve is free, so a disk at the edge does not flap;
//! - any other write error: `data_dir_unwritable`.

use super::fsutil::Layout;
use super::monitor::Shared;
use super::{DataDirFault, DataDirProblem, ExecEvent};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// How often the data dir is looked at.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(2);

/// The file the write probe writes and removes (a name no task id has:
/// it is in the data dir itself, not in `tasks/` or `sandboxes/`).
const PROBE_FILE: &str = ".write-probe";

/// Bytes the write probe writes (one page).
const PROBE_BYTES: usize = 4096;

const MIB: u64 = 1024 * 1024;

/// The free space under which the data dir is full, for a disk of `total`
/// bytes: 1% of it, at least 1 MiB, at most 256 MiB.
pub(crate) fn reserve(total: u64) -> u64 {
    (total / 100).clamp(MIB, 256 * MIB)
}

/// What is wrong with the data dir now, if anything. `was_full` says the
/// last look found it full (it then needs twice the reserve to recover).
/// Blocking.
pub(crate) fn check(layout: &Layout, was_full: bool) -> Option<DataDirProblem> {
    let dir = &layout.data_dir;
    match rustix::fs::statvfs(dir) {
        Ok(st) => {
            if st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
                return Some(read_only(layout));
            }
            let total = st.f_blocks.saturating_mul(st.f_frsize);
            let avail = st.f_bavail.saturating_mul(st.f_frsize);
            let need = reserve(total) * if was_full { 2 } else { 1 };
            if avail < need {
                return Some(DataDirProblem {
                    fault: DataDirFault::DiskFull,
                    detail: format!(
                        "the data dir {}'s disk has {} free, less than the {} this node keeps \
                         for new tasks; free space on it (the node takes tasks again by itself)",
                        dir.display(),
                        mib(avail),
                        mib(need)
                    ),
                });
            }
        }
        Err(e) => tracing::debug!(data_dir = %dir.display(), "statvfs failed: {e}"),
    }
    let probe = dir.join(PROBE_FILE);
    let written = std::fs::File::create(&probe).and_then(|mut f| f.write_all(&[0; PROBE_BYTES]));
    let _ = std::fs::remove_file(&probe);
    match written {
        Ok(()) => None,
        Err(e) => Some(match fault_of(&e) {
            Some(DataDirFault::ReadOnly) => read_only(layout),
            Some(DataDirFault::DiskFull) => DataDirProblem {
                fault: DataDirFault::DiskFull,
                detail: format!(
                    "the data dir {}'s disk is full (writing {}: {e}); free space on it \
                     (the node takes tasks again by itself)",
                    dir.display(),
                    probe.display()
                ),
            },
            _ => DataDirProblem {
                fault: DataDirFault::Unwritable,
                detail: format!(
                    "cannot write in the data dir {} ({}: {e}); check its permissions and \
                     the file system",
                    dir.display(),
                    probe.display()
                ),
            },
        }),
    }
}

fn read_only(layout: &Layout) -> DataDirProblem {
    DataDirProblem {
        fault: DataDirFault::ReadOnly,
        detail: format!(
            "the data dir {} is on a read-only file system; remount it read-write (the node \
             takes tasks again by itself)",
            layout.data_dir.display()
        ),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// The data dir fault an IO error means, if it means one.
pub(crate) fn fault_of(e: &std::io::Error) -> Option<DataDirFault> {
    match e.raw_os_error()? {
        libc_errno::ENOSPC | libc_errno::EDQUOT => Some(DataDirFault::DiskFull),
        libc_errno::EROFS => Some(DataDirFault::ReadOnly),
        _ => None,
    }
}

/// What to add to a task's failure reason for an IO error that a data dir
/// fault explains ("" for other errors).
pub(crate) fn hint(e: &std::io::Error) -> String {
    match fault_of(e) {
        Some(f) => format!(" ({}: {})", f.code(), f.plain()),
        None => String::new(),
    }
}

/// The errno values this module tells apart.
mod libc_errno {
    pub const ENOSPC: i32 = rustix::io::Errno::NOSPC.raw_os_error();
    pub const EDQUOT: i32 = rustix::io::Errno::DQUOT.raw_os_error();
    pub const EROFS: i32 = rustix::io::Errno::ROFS.raw_os_error();
}

/// Records what is wrong with the data dir now and, when that changed
/// since the last report, tells the agent (with a log line). The probe
/// reports every look; a monitor reports a problem it ran into (a task
/// that failed on a full disk, a launch that could not write its sandbox)
/// at once, before that task's status, so that the node takes no task in
/// its place.
pub(crate) async fn report(shared: &Shared, problem: Option<DataDirProblem>) {
    let changed = {
        let mut last = shared.data_dir_state();
        let changed = last.as_ref().map(|p| p.fault) != problem.as_ref().map(|p| p.fault);
        *last = problem.clone();
        changed
    };
    if !changed {
        return;
    }
    match &problem {
        Some(p) => tracing::warn!(
            data_dir = %shared.layout.data_dir.display(),
            reason = p.fault.code(),
            "the data dir cannot take new tasks; this node takes no new tasks (it advertises \
             nothing free) until it can: {p}"
        ),
        None => tracing::info!(
            data_dir = %shared.layout.data_dir.display(),
            "the data dir can take new tasks again; this node takes tasks again"
        ),
    }
    tokio::select! {
        _ = shared.cancel.cancelled() => {}
        _ = shared.events.send(ExecEvent::DataDir { problem }) => {}
    }
}

/// The probe task: a look at once, then one every [`PROBE_EVERY`], each
/// [`report`]ed. Runs until the executor goes away.
pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        let layout = shared.layout.clone();
        let was_full = shared
            .data_dir_state()
            .as_ref()
            .is_some_and(|p| p.fault == DataDirFault::DiskFull);
        let now = tokio::task::spawn_blocking(move || check(&layout, was_full))
            .await
            .unwrap_or(None);
        report(&shared, now).await;
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_one_percent_within_bounds() {
        assert_eq!(reserve(8 * MIB), MIB);
        assert_eq!(reserve(10_000 * MIB), 100 * MIB);
        assert_eq!(reserve(1 << 50), 256 * MIB);
    }

    #[test]
    fn a_writable_data_dir_with_room_has_no_problem() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            data_dir: dir.path().to_path_buf(),
        };
        // The test's temp dir may sit on a fuller disk than the reserve
        // allows: only a write failure or read-only counts here.
        let problem = check(&layout, false);
        assert!(
            problem
                .as_ref()
                .is_none_or(|p| p.fault == DataDirFault::DiskFull),
            "{problem:?}"
        );
        assert!(!dir.path().join(PROBE_FILE).exists(), "the probe cleans up");
    }

    #[test]
    fn errors_name_their_fault() {
        let full = std::io::Error::from_raw_os_error(libc_errno::ENOSPC);
        let ro = std::io::Error::from_raw_os_error(libc_errno::EROFS);
        let other = std::io::Error::from_raw_os_error(rustix::io::Errno::ACCESS.raw_os_error());
        assert_eq!(fault_of(&full), Some(DataDirFault::DiskFull));
        assert_eq!(fault_of(&ro), Some(DataDirFault::ReadOnly));
        assert_eq!(fault_of(&other), None);
        assert!(hint(&full).contains("disk_full"));
        assert_eq!(hint(&other), "");
    }
}
