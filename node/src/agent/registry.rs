//! The frameworks homed on this node, kept on disk (`DATA_DIR/frameworks.json`)
//! so that a restarted agent homes them again: a framework reattaches after
//! its home's restart as after a dropped connection, its failover timeout
//! counted from the restart, and it hears how the tasks of the run before
//! end (`Host::restore_framework`). The operator framework and the HTTP
//! API's framework keep their ids too.
//!
//! The core says what to keep ([`Output::SaveFrameworks`], only when the set
//! changed); the driver writes it atomically and reads it at start. A file
//! that cannot be read is moved aside with a warning and the node starts
//! with no frameworks, as before this file existed.
//!
//! [`Output::SaveFrameworks`]: super::core::Output::SaveFrameworks

use agora_protocol::FrameworkId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file's name in the data dir.
pub const FILE: &str = "frameworks.json";
/// The format written by this code.
const VERSION: u32 = 1;

/// What kind of framework a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A framework that registered on the socket.
    Framework,
    /// The node's operator framework (every `agora` CLI connection).
    Operator,
    /// The HTTP API's framework.
    Http,
}

/// One framework homed here.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Record {
    /// Its id.
    pub id: FrameworkId,
    /// What it is.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Its DRF weight.
    pub weight: u32,
    /// Its failover timeout, in milliseconds.
    pub failover_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    frameworks: Vec<Record>,
}

/// The file's path.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Encodes the records for [`save`].
pub fn encode(records: &[Record]) -> Vec<u8> {
    serde_json::to_vec_pretty(&Stored {
        version: VERSION,
        frameworks: records.to_vec(),
    })
    .unwrap_or_default()
}

/// Decodes what [`encode`] wrote.
///
/// # Errors
/// Not JSON of this format, or another version, with what was wrong.
pub fn decode(bytes: &[u8]) -> Result<Vec<Record>, String> {
    let s: Stored = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if s.version != VERSION {
        return Err(format!(
            "format version {} (this agent reads version {VERSION})",
            s.version
        ));
    }
    Ok(s.frameworks)
}

/// Reads the records kept in `data_dir` (none when there is no file). A
/// file that cannot be decoded is moved aside (`frameworks.json.corrupt-MS`)
/// with a warning naming what was wrong.
pub fn load(data_dir: &Path) -> Vec<Record> {
    let p = path(data_dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "cannot read the frameworks homed here; starting without them");
            return Vec::new();
        }
    };
    match decode(&bytes) {
        Ok(r) => r,
        Err(why) => {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let aside = p.with_extension(format!("json.corrupt-{ms}"));
            let moved = std::fs::rename(&p, &aside);
            tracing::warn!(
                path = %p.display(),
                error = %why,
                moved_to = %aside.display(),
                moved = moved.is_ok(),
                "the frameworks homed here cannot be read; starting without them (they must register anew)"
            );
            Vec::new()
        }
    }
}

/// Writes the records to `data_dir` atomically.
///
/// # Errors
/// The file cannot be written (the old one stays).
pub fn save(data_dir: &Path, records: &[Record]) -> std::io::Result<()> {
    crate::executor::atomic_write(&path(data_dir), &encode(records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, kind: Kind) -> Record {
        Record {
            id: FrameworkId::new(id).unwrap(),
            kind,
            name: "batch".into(),
            role: String::new(),
            weight: 2,
            failover_ms: 60_000,
        }
    }

    #[test]
    fn records_survive_a_save_and_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let rs = vec![
            rec("batch-1@n1", Kind::Framework),
            rec("operator-2@n1", Kind::Operator),
        ];
        save(dir.path(), &rs).unwrap();
        assert_eq!(load(dir.path()), rs);
        assert!(load(&dir.path().join("none")).is_empty());
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_nothing_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), b"{\"version\":1,\"frameworks\":[{\"id\":").unwrap();
        assert!(load(dir.path()).is_empty());
        assert!(!path(dir.path()).exists());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("frameworks.json.corrupt-")
            })
            .collect();
        assert_eq!(aside.len(), 1);
        assert!(
            decode(br#"{"version":9,"frameworks":[]}"#)
                .unwrap_err()
                .contains("version 9")
        );
    }
}
