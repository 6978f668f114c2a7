//! The tasks of the frameworks homed on this node, kept on disk
//! (`DATA_DIR/journal`) so that a restarted agent knows them again: a task
//! whose submit was acknowledged is never forgotten by a crash of its home,
//! and a task that ended is never told a second, different end
//! (`Host::restore_framework`, `Bidder::restore_tasks`).
//!
//! The file is a sequence of records, each a little-endian `u32` length, a
//! little-endian `u32` FNV-1a checksum of the payload, and the payload (a
//! postcard-encoded [`Record`]). The core says what to append
//! ([`Output::Journal`]); the driver appends it and, for a submit, syncs the
//! file before the framework hears `submitted` (one sync for every submit
//! answered in the same pass). Placements and ends are appended without a
//! sync of their own: a crash may lose the last of them, and then a task is
//! found again by its node's report, or placed again when no node reports
//! it. When the file has grown to several times what the frameworks hold,
//! the driver rewrites it from the host ([`snapshot`]), atomically; it does
//! so at every start too.
//!
//! A record that is cut short or does not check (a crash in the middle of
//! an append, a damaged disk) ends the reading there, with a warning that
//! says how many bytes were dropped; what came before is kept.
//!
//! [`Output::Journal`]: super::core::Output::Journal

use agora_protocol::host::Journaled;
use agora_protocol::task::{TaskSpec, TaskStatus};
use agora_protocol::{FrameworkId, NodeId, TaskId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// The file's name in the data dir.
pub const FILE: &str = "journal";
/// The largest record read back (a task spec is far smaller).
const MAX_RECORD: usize = 16 << 20;
/// The file is rewritten once it is this many times its size after the last
/// rewrite (and at least [`MIN_COMPACT`]).
const GROWTH: u64 = 4;
/// Below this size the file is never rewritten while the node runs.
const MIN_COMPACT: u64 = 8 << 20;

/// One entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// A task as the host holds it (a submit, or a rewrite's copy).
    Task {
        /// Its framework.
        framework: FrameworkId,
        /// The task.
        task: Journaled,
    },
    /// A task was placed on `node`.
    Placed {
        /// Its framework.
        framework: FrameworkId,
        /// The task.
        task_id: TaskId,
        /// Where.
        node: NodeId,
    },
    /// A task ended, and its framework is told this status.
    Ended {
        /// Its framework.
        framework: FrameworkId,
        /// The terminal status.
        status: TaskStatus,
    },
}

impl Record {
    /// A submitted task, not yet placed.
    pub fn submitted(framework: &FrameworkId, task_id: TaskId, spec: TaskSpec) -> Record {
        Record::Task {
            framework: framework.clone(),
            task: Journaled {
                task_id,
                spec,
                placed_on: None,
                ended: None,
            },
        }
    }
}

/// The file's path.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

fn checksum(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Appends `r`, framed, to `out`.
pub fn encode_into(out: &mut Vec<u8>, r: &Record) {
    let Ok(payload) = postcard::to_stdvec(r) else {
        return;
    };
    let Ok(len) = u32::try_from(payload.len()) else {
        return;
    };
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// What [`decode`] read.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    /// Per framework, its tasks in id order.
    pub tasks: BTreeMap<FrameworkId, Vec<Journaled>>,
    /// Records read.
    pub records: usize,
    /// Bytes at the end that were cut short or did not check, and why.
    pub dropped: Option<(usize, String)>,
}

/// Folds the records in `bytes` into each framework's tasks: a later record
/// of a task updates the earlier one; a placement or an end of a task with
/// no record of its own is ignored.
pub fn decode(bytes: &[u8]) -> Decoded {
    let mut by_fw: BTreeMap<FrameworkId, BTreeMap<TaskId, Journaled>> = BTreeMap::new();
    let mut records = 0;
    let mut at = 0usize;
    let mut dropped = None;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let bad = |why: &str| Some((rest.len(), why.to_string()));
        if rest.len() < 8 {
            dropped = bad("a record header cut short");
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let sum = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD {
            dropped = bad("a record length past the limit");
            break;
        }
        let Some(payload) = rest.get(8..8 + len) else {
            dropped = bad("a record cut short");
            break;
        };
        if checksum(payload) != sum {
            dropped = bad("a record whose checksum does not match");
            break;
        }
        let record: Record = match postcard::from_bytes(payload) {
            Ok(r) => r,
            Err(e) => {
                dropped = Some((rest.len(), format!("a record that does not decode: {e}")));
                break;
            }
        };
        at += 8 + len;
        records += 1;
        match record {
            Record::Task { framework, task } => {
                by_fw
                    .entry(framework)
                    .or_default()
                    .insert(task.task_id.clone(), task);
            }
            Record::Placed {
                framework,
                task_id,
                node,
            } => {
                if let Some(t) = by_fw.get_mut(&framework).and_then(|m| m.get_mut(&task_id)) {
                    t.placed_on = Some(node);
                }
            }
            Record::Ended { framework, status } => {
                if let Some(t) = by_fw
                    .get_mut(&framework)
                    .and_then(|m| m.get_mut(&status.task_id))
                {
                    if status.node.is_some() {
                        t.placed_on.clone_from(&status.node);
                    }
                    t.ended = Some(status);
                }
            }
        }
    }
    Decoded {
        tasks: by_fw
            .into_iter()
            .map(|(fw, m)| (fw, m.into_values().collect()))
            .collect(),
        records,
        dropped,
    }
}

/// Reads the journal in `data_dir` (nothing when there is none). What
/// cannot be read is reported in a warning; the readable part is kept.
pub fn load(data_dir: &Path) -> Decoded {
    let p = path(data_dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Decoded::default(),
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "cannot read the journal of the tasks homed here; a restart forgets their submits (their nodes still report the ones that run)");
            return Decoded::default();
        }
    };
    let d = decode(&bytes);
    if let Some((n, why)) = &d.dropped {
        tracing::warn!(
            path = %p.display(),
            bytes_dropped = n,
            records_kept = d.records,
            why = %why,
            "the end of the journal cannot be read (a crash in the middle of a write, or a damaged disk); keeping what comes before"
        );
    }
    d
}

/// The whole journal as the host holds it now: `(framework, tasks)` pairs.
pub fn snapshot(frameworks: &[(FrameworkId, Vec<Journaled>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (fw, tasks) in frameworks {
        for t in tasks {
            encode_into(
                &mut out,
                &Record::Task {
                    framework: fw.clone(),
                    task: t.clone(),
                },
            );
        }
    }
    out
}

/// The journal file, appended to by the driver. It holds no open file
/// between writes (the file is opened, written and closed for each pass of
/// the driver), so the data dir can be remounted and a broken disk shows at
/// the next write.
pub struct Writer {
    path: PathBuf,
    /// Framed records not yet written.
    pending: Vec<u8>,
    /// Records written since the last sync.
    unsynced: bool,
    /// Its size, and its size after the last rewrite.
    size: u64,
    base: u64,
    /// Why the last write failed (cleared by the next rewrite that works).
    pub broken: Option<String>,
    /// Counters for /metrics.
    pub stats: Stats,
}

/// The writer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes written.
    pub bytes: u64,
    /// Syncs done.
    pub syncs: u64,
    /// Writes or syncs that failed.
    pub errors: u64,
    /// Rewrites from the host.
    pub rewrites: u64,
}

impl Writer {
    /// Rewrites the journal in `data_dir` with `bytes` (a [`snapshot`]).
    pub fn create(data_dir: &Path, bytes: &[u8]) -> Writer {
        let mut w = Writer {
            path: path(data_dir),
            pending: Vec::new(),
            unsynced: false,
            size: 0,
            base: 0,
            broken: None,
            stats: Stats::default(),
        };
        w.rewrite(bytes);
        w
    }

    /// Replaces the file with `bytes`, atomically (what was pending is in
    /// `bytes`: a snapshot of the host, taken after it).
    pub fn rewrite(&mut self, bytes: &[u8]) {
        self.pending.clear();
        match crate::executor::atomic_write(&self.path, bytes) {
            Ok(()) => {
                self.size = bytes.len() as u64;
                self.base = self.size;
                self.unsynced = false;
                self.broken = None;
                self.stats.rewrites += 1;
            }
            Err(e) => self.fail(&e),
        }
    }

    fn fail(&mut self, e: &std::io::Error) {
        self.stats.errors += 1;
        if self.broken.is_none() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the journal of the tasks homed here: until it can, a crash of this agent forgets the tasks submitted since (free space on the data dir, or make it writable; the journal is rewritten once writes work again)");
        }
        self.broken = Some(e.to_string());
        self.pending.clear();
    }

    /// Queues framed records for the next [`Writer::flush`].
    pub fn append(&mut self, bytes: &[u8]) {
        if self.broken.is_none() {
            self.pending.extend_from_slice(bytes);
        }
    }

    /// Writes what is queued; with `sync`, makes everything written so far
    /// durable too.
    pub fn flush(&mut self, sync: bool) {
        if self.pending.is_empty() && !(sync && self.unsynced) {
            return;
        }
        let written = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|mut f| {
                f.write_all(&self.pending)?;
                if sync {
                    f.sync_data()?;
                }
                Ok(())
            });
        match written {
            Ok(()) => {
                self.size += self.pending.len() as u64;
                self.stats.bytes += self.pending.len() as u64;
                self.pending.clear();
                if sync {
                    self.unsynced = false;
                    self.stats.syncs += 1;
                } else {
                    self.unsynced = true;
                }
            }
            Err(e) => self.fail(&e),
        }
    }

    /// Whether the file should be rewritten from the host: it grew well
    /// past what the last rewrite held, or a write failed.
    pub fn wants_rewrite(&self) -> bool {
        self.broken.is_some() || self.size > (self.base * GROWTH).max(MIN_COMPACT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::Resources;
    use agora_protocol::task::{Command, TaskState};

    fn fw() -> FrameworkId {
        FrameworkId::new("f@n1").unwrap()
    }

    fn spec(name: &str) -> TaskSpec {
        TaskSpec::new(
            name,
            Command::Argv(vec!["true".into()]),
            Resources::cpu_mem(100, 8),
        )
    }

    fn id(n: u64) -> TaskId {
        TaskId::for_framework(&fw(), n)
    }

    #[test]
    fn records_fold_into_each_tasks_latest_state() {
        let mut b = Vec::new();
        encode_into(&mut b, &Record::submitted(&fw(), id(1), spec("a")));
        encode_into(&mut b, &Record::submitted(&fw(), id(2), spec("b")));
        encode_into(
            &mut b,
            &Record::Placed {
                framework: fw(),
                task_id: id(1),
                node: NodeId::new("n2").unwrap(),
            },
        );
        let done = TaskStatus::new(id(2), TaskState::Finished, Some(NodeId::new("n3").unwrap()));
        encode_into(
            &mut b,
            &Record::Ended {
                framework: fw(),
                status: done.clone(),
            },
        );
        // A placement of a task the journal never had is ignored.
        encode_into(
            &mut b,
            &Record::Placed {
                framework: fw(),
                task_id: id(9),
                node: NodeId::new("n2").unwrap(),
            },
        );
        let d = decode(&b);
        assert_eq!(d.records, 5);
        assert_eq!(d.dropped, None);
        let tasks = &d.tasks[&fw()];
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].placed_on, Some(NodeId::new("n2").unwrap()));
        assert_eq!(tasks[0].ended, None);
        assert_eq!(tasks[1].ended, Some(done));
        assert_eq!(tasks[1].placed_on, Some(NodeId::new("n3").unwrap()));
        // A rewrite from the folded state reads back the same.
        let again = decode(&snapshot(&[(fw(), tasks.clone())]));
        assert_eq!(again.tasks, d.tasks);
    }

    #[test]
    fn a_torn_or_damaged_tail_keeps_what_comes_before() {
        let mut b = Vec::new();
        encode_into(&mut b, &Record::submitted(&fw(), id(1), spec("a")));
        let good = b.len();
        encode_into(&mut b, &Record::submitted(&fw(), id(2), spec("b")));
        for cut in [good + 3, good + 9, b.len() - 1] {
            let d = decode(&b[..cut]);
            assert_eq!(d.records, 1, "cut at {cut}");
            assert_eq!(d.tasks[&fw()].len(), 1);
            assert_eq!(d.dropped.as_ref().map(|x| x.0), Some(cut - good));
        }
        let mut flipped = b.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x40;
        let d = decode(&flipped);
        assert_eq!(d.records, 1);
        assert!(d.dropped.unwrap().1.contains("checksum"));
        // A length past the limit is refused before anything is read.
        let mut huge = b[..good].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert!(decode(&huge).dropped.unwrap().1.contains("limit"));
    }

    #[test]
    fn the_writer_appends_syncs_and_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::create(dir.path(), &[]);
        let mut b = Vec::new();
        encode_into(&mut b, &Record::submitted(&fw(), id(1), spec("a")));
        w.append(&b);
        w.flush(false);
        w.flush(true);
        w.flush(true);
        assert_eq!(w.stats.syncs, 1, "nothing new: no second sync");
        assert_eq!(w.stats.bytes, b.len() as u64);
        assert_eq!(load(dir.path()).tasks[&fw()].len(), 1);
        assert!(!w.wants_rewrite());
        // Task specs (environments) are the agent's alone.
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        w.rewrite(&[]);
        assert!(load(dir.path()).tasks.is_empty());
        assert_eq!(load(dir.path()).dropped, None);
    }

    #[test]
    fn a_journal_that_cannot_be_written_says_so_and_asks_for_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        // The data dir's journal path is a directory: nothing can be written.
        std::fs::create_dir(path(dir.path())).unwrap();
        let mut w = Writer::create(dir.path(), &[]);
        assert!(w.broken.is_some());
        assert!(w.wants_rewrite());
        w.append(b"x");
        w.flush(true);
        assert_eq!(w.stats.bytes, 0);
        std::fs::remove_dir(path(dir.path())).unwrap();
        w.rewrite(&[]);
        assert!(w.broken.is_none());
        assert!(!w.wants_rewrite());
    }
}
