//! A node's persistent identity in its data dir: its node id
//! (DATA_DIR/node-id, text) and its libp2p ed25519 key
//! (DATA_DIR/p2p-identity.key, protobuf encoding, mode 0600). Both are
//! created on first start and reused afterwards, so a restarted agent is the
//! same node to its peers. Files are written atomically (temp, fsync, rename).

use agora_protocol::NodeId;
use anyhow::{Context, bail};
use libp2p::identity::Keypair;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `path` atomically with the given mode.
///
/// # Errors
/// IO errors, with the path.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

fn default_node_id() -> String {
    let host: String = sysinfo::System::host_name()
        .unwrap_or_else(|_| "node".to_string())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    format!("{host}-{:04x}", rand::random::<u16>())
}

/// The node id: `given` if set (and it must match a persisted one), else
/// the persisted one, else a new `HOSTNAME-XXXX` that is then persisted.
///
/// # Errors
/// An invalid id, or an unreadable/unwritable file.
pub fn node_id(data_dir: &Path, given: Option<&str>) -> anyhow::Result<NodeId> {
    let path = data_dir.join("node-id");
    let stored = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let id = match (given, stored) {
        (Some(g), Some(s)) if g != s => bail!(
            "--node-id {g} differs from the id {s} kept in {}; a data dir belongs to one node (use another --data-dir, or delete that file)",
            path.display()
        ),
        (Some(g), _) => g.to_string(),
        (None, Some(s)) => s,
        (None, None) => default_node_id(),
    };
    let node = NodeId::new(&id).with_context(|| format!("invalid node id {id:?}"))?;
    if !path.exists() {
        write_atomic(&path, format!("{id}\n").as_bytes(), 0o644)?;
    }
    Ok(node)
}

/// The libp2p keypair, loaded or created.
///
/// # Errors
/// A corrupt or unreadable key file, with its path.
pub fn p2p_keypair(data_dir: &Path) -> anyhow::Result<Keypair> {
    let path = data_dir.join("p2p-identity.key");
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).with_context(|| {
            format!(
                "{} is not a valid libp2p key; move it aside to create a new identity",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let kp = Keypair::generate_ed25519();
            let bytes = kp
                .to_protobuf_encoding()
                .context("cannot encode the new libp2p key")?;
            write_atomic(&path, &bytes, 0o600)?;
            Ok(kp)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists() {
        let dir = std::env::temp_dir().join(format!("agora-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = node_id(&dir, None).unwrap();
        assert_eq!(node_id(&dir, None).unwrap(), a);
        assert!(node_id(&dir, Some("other")).is_err());
        let k1 = p2p_keypair(&dir).unwrap();
        let k2 = p2p_keypair(&dir).unwrap();
        assert_eq!(k1.public(), k2.public());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
