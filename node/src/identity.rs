//! A node's persistent identity in its data dir: its node id
//! (DATA_DIR/node-id, text) and its libp2p ed25519 key
//! (DATA_DIR/p2p-identity.key, protobuf encoding, mode 0600). Both are
//! created on first start and reused afterwards, so a restarted agent is the
//! same node to its peers. Files are written atomically (temp, fsync, rename).
//!
//! One data dir, one agent: [`lock_data_dir`] holds `DATA_DIR/agent.lock`
//! for the agent's lifetime, and a second agent on the same dir fails at
//! start. One node id, one agent: [`DuplicateGuard`] watches gossip for
//! another live agent with this node's id under another identity key (two
//! data dirs given the same `--node-id`) and decides which one keeps the id
//! (docs/PROTOCOL.md, "One node id, one agent").

use crate::gossip::Incarnation;
use agora_protocol::NodeId;
use anyhow::{Context, bail};
use libp2p::identity::Keypair;
use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
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

/// Attempts (50 ms apart) to take the data dir's lock: an agent that just
/// stopped may still be releasing it.
const LOCK_TRIES: u32 = 20;

/// Takes `DATA_DIR/agent.lock` (an exclusive flock, released when the file
/// is dropped or the process ends), before anything in the data dir is
/// read or created. Blocks for up to a second while another holds it.
///
/// # Errors
/// Another agent holds it (the message says what to do), or the file
/// cannot be opened.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("agent.lock");
    // Held open read-only: a file open for writing would keep the data
    // dir's file system from being remounted read-only.
    if !path.exists() {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    let file = std::fs::File::open(&path).with_context(|| {
        format!(
            "cannot open {}; check the --data-dir path, its permissions and that its \
                 file system is writable",
            path.display()
        )
    })?;
    let mut tries = 0;
    while let Err(e) =
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
    {
        tries += 1;
        if tries >= LOCK_TRIES {
            bail!(
                "another agent is using the data dir {} (lock {}: {e}); stop it or give this \
                 one another --data-dir",
                data_dir.display(),
                path.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(file)
}

/// Heartbeat advances of another incarnation that prove it is a running
/// agent: a stopped one's heartbeat does not move, except while gossip
/// catches up on its last value (a step or two).
pub const PROOF_ADVANCES: u64 = 3;

/// What [`DuplicateGuard::handle_rivals`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Duplicate {
    /// An older live agent holds this node id: this agent must exit with
    /// this message (it names the other agent and what to do).
    Refuse(String),
    /// A newer agent started with this node id: this one keeps it and
    /// warns (once per such agent) with this message.
    Warn(String),
}

/// Decides what to do about other agents with this node's id (sans-IO:
/// fed gossip's [`Incarnation`]s of this id). The rule: a node id belongs
/// to the identity key that held it first. Another incarnation with
/// another peer id that is alive and older (generation, then gossip
/// address) than this one, whose heartbeat advanced [`PROOF_ADVANCES`]
/// times, is a running agent that had the id first: this agent refuses
/// to run (older than this key's oldest live incarnation: this node's
/// previous run, still held alive just after a restart, keeps the claim
/// of its key). A newer one is warned about; gossip keeps routing the id to
/// the older one (`gossip/view.rs`), so the newer one never receives its
/// traffic. An incarnation with this node's own peer id is its own earlier
/// run (same data dir): not a duplicate.
#[derive(Debug)]
pub struct DuplicateGuard {
    node: NodeId,
    peer_id: String,
    age: (u64, SocketAddr),
    warned: BTreeSet<(u64, SocketAddr)>,
}

impl DuplicateGuard {
    /// A guard for this agent: its node id, libp2p peer id, gossip
    /// generation and advertised gossip address.
    pub fn new(node: NodeId, peer_id: String, generation: u64, gossip_addr: SocketAddr) -> Self {
        DuplicateGuard {
            node,
            peer_id,
            age: (generation, gossip_addr),
            warned: BTreeSet::new(),
        }
    }

    /// Looks at the other incarnations of this node's id in a snapshot.
    pub fn handle_rivals(&mut self, rivals: &[Incarnation]) -> Vec<Duplicate> {
        // This key's claim: its oldest live incarnation (an earlier run of
        // this node still held alive just after a restart counts, as in
        // gossip's choice of incarnation).
        let claim = rivals
            .iter()
            .filter(|r| r.alive && r.peer_id.as_deref() == Some(self.peer_id.as_str()))
            .map(|r| (r.generation, r.gossip_addr))
            .chain(std::iter::once(self.age))
            .min()
            .unwrap_or(self.age);
        let mut out = Vec::new();
        for r in rivals {
            let Some(peer) = r.peer_id.as_deref() else {
                continue;
            };
            if peer == self.peer_id {
                continue;
            }
            let age = (r.generation, r.gossip_addr);
            if age < claim {
                if r.alive && r.heartbeat_advances >= PROOF_ADVANCES {
                    out.push(Duplicate::Refuse(format!(
                        "another agent already runs as node {node}: gossip address {addr} \
                         (libp2p peer {peer}), started before this one (generation {g}) and \
                         alive; a node id belongs to the agent that had it first, so this \
                         agent (peer {mine}) exits instead of taking it over. Give this agent \
                         another --node-id (or none, for a generated one) and its own \
                         --data-dir, or stop the agent at {addr} first if this one is meant to \
                         replace it",
                        node = self.node,
                        addr = r.gossip_addr,
                        g = r.generation,
                        mine = self.peer_id,
                    )));
                }
            } else if self.warned.insert(age) {
                // Also when it is no longer alive: it may have exited before
                // this node heard of it, and the operator should know.
                let now = if r.alive {
                    "the other exits if it runs this version of agora, else stop it or give \
                     it another --node-id"
                } else {
                    "it is not running (any more)"
                };
                out.push(Duplicate::Warn(format!(
                    "another agent started with the same node id {node} at gossip address \
                     {addr} (libp2p peer {peer}); this agent had the id first and keeps it, \
                     and peers keep routing it here; {now}",
                    node = self.node,
                    addr = r.gossip_addr,
                )));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rival(generation: u64, port: u16, peer: &str, alive: bool, advances: u64) -> Incarnation {
        Incarnation {
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            generation,
            peer_id: Some(peer.to_string()),
            alive,
            heartbeat_advances: advances,
        }
    }

    fn guard() -> DuplicateGuard {
        DuplicateGuard::new(
            NodeId::new("n2").unwrap(),
            "mine".into(),
            100,
            SocketAddr::from(([127, 0, 0, 1], 7000)),
        )
    }

    #[test]
    fn an_older_live_agent_with_another_key_is_refused_only_once_proven_alive() {
        let mut g = guard();
        // Just heard of: its heartbeat has not moved yet (a stopped
        // previous holder of the id looks the same).
        assert_eq!(
            g.handle_rivals(&[rival(50, 7100, "other", true, 1)]),
            vec![]
        );
        let found = g.handle_rivals(&[rival(50, 7100, "other", true, PROOF_ADVANCES)]);
        let [Duplicate::Refuse(msg)] = &found[..] else {
            panic!("{found:?}")
        };
        assert!(
            msg.contains("n2") && msg.contains("127.0.0.1:7100") && msg.contains("--node-id"),
            "{msg}"
        );
    }

    #[test]
    fn a_dead_agent_or_this_nodes_own_earlier_run_is_no_duplicate() {
        let mut g = guard();
        let ignored = [
            // An older one that stopped: a previous holder of the id.
            rival(40, 7100, "other", false, 9),
            rival(50, 7000, "mine", true, 9),
            Incarnation {
                peer_id: None,
                ..rival(50, 7100, "x", true, 9)
            },
        ];
        assert_eq!(g.handle_rivals(&ignored), vec![]);
    }

    #[test]
    fn a_restarted_node_keeps_the_claim_its_previous_run_had() {
        let mut g = guard();
        // Its previous run (same key) is still held alive, older than the
        // other agent: the id is this key's.
        let found = g.handle_rivals(&[
            rival(10, 7000, "mine", true, 0),
            rival(50, 7100, "other", true, PROOF_ADVANCES),
        ]);
        assert!(matches!(found[..], [Duplicate::Warn(_)]), "{found:?}");
    }

    #[test]
    fn a_newer_agent_is_warned_about_once_and_ties_go_by_address() {
        let mut g = guard();
        // Heard of only after it exited: still worth a warning.
        let found = g.handle_rivals(&[rival(120, 7200, "other", false, 0)]);
        assert!(matches!(found[..], [Duplicate::Warn(_)]), "{found:?}");
        let newer = rival(150, 7100, "other", true, 0);
        let found = g.handle_rivals(std::slice::from_ref(&newer));
        let [Duplicate::Warn(msg)] = &found[..] else {
            panic!("{found:?}")
        };
        assert!(
            msg.contains("same node id") && msg.contains("127.0.0.1:7100"),
            "{msg}"
        );
        assert_eq!(g.handle_rivals(&[newer]), vec![], "once");
        // Same generation: the lower address had it first.
        let found = g.handle_rivals(&[rival(100, 6000, "other", true, PROOF_ADVANCES)]);
        assert!(matches!(found[..], [Duplicate::Refuse(_)]), "{found:?}");
        let found = g.handle_rivals(&[rival(100, 8000, "other", true, PROOF_ADVANCES)]);
        assert!(matches!(found[..], [Duplicate::Warn(_)]), "{found:?}");
    }

    #[test]
    fn a_data_dir_is_locked_by_one_agent_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_data_dir(dir.path()).unwrap();
        let err = lock_data_dir(dir.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("another agent is using the data dir"),
            "{err:#}"
        );
        drop(held);
        lock_data_dir(dir.path()).unwrap();
    }

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
