//! Who is at the other end of a socket connection (the kernel's
//! SO_PEERCRED, which the client cannot forge) and whether it may act as
//! the node's operator (issue 12: a task that reached the socket
//! registered as `operator` and killed another framework's tasks).
//!
//! The operator (`agora run`, `agora kill`, any connection registered with
//! the role `operator`, and `kill` from a connection that did not
//! register) may submit as the node's operator framework and kill any
//! task. Only these may: uid 0, the agent's own uid, and members of the
//! `--operator-group` (its primary group or a supplementary one in the
//! group database). Any other connection that can reach the socket may
//! still register as a framework of its own and manage its own tasks.

use std::path::Path;
use tokio::net::UnixStream;

/// The other end of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its uid, when the kernel told it.
    pub uid: Option<u32>,
    /// Its pid, when the kernel told it (for the log).
    pub pid: Option<i32>,
    /// Whether it may act as the operator.
    pub operator: bool,
}

impl Peer {
    /// A peer trusted as the operator (tests and in-process callers).
    pub fn trusted() -> Peer {
        Peer {
            uid: None,
            pid: None,
            operator: true,
        }
    }
}

/// Who may act as the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorPolicy {
    /// The agent's effective uid.
    pub agent_uid: u32,
    /// `--operator-group`: name and gid.
    pub group: Option<(String, u32)>,
}

impl OperatorPolicy {
    /// Whether a peer with this uid and primary gid may act as the
    /// operator. May block on the group database (only when a group is
    /// configured and the uid is neither root nor the agent's).
    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        if uid == 0 || uid == self.agent_uid {
            return true;
        }
        match &self.group {
            Some((_, group)) => crate::users::is_member(uid, gid, *group),
            None => false,
        }
    }

    /// The peer at the other end of `stream`. A peer whose credentials
    /// cannot be read is not the operator.
    pub async fn identify(&self, stream: &UnixStream) -> Peer {
        let Ok(cred) = stream.peer_cred() else {
            return Peer {
                uid: None,
                pid: None,
                operator: false,
            };
        };
        let (uid, gid) = (cred.uid(), cred.gid());
        let operator = if uid == 0 || uid == self.agent_uid || self.group.is_none() {
            self.allows(uid, gid)
        } else {
            let policy = self.clone();
            tokio::task::spawn_blocking(move || policy.allows(uid, gid))
                .await
                .unwrap_or(false)
        };
        Peer {
            uid: Some(uid),
            pid: cred.pid(),
            operator,
        }
    }
}

/// Lets the members of `gid` connect to the socket at `path`: group
/// `gid`, mode 0660 (for `--operator-group`).
///
/// # Errors
/// The group or the mode cannot be set.
pub fn share_with_group(path: &Path, gid: u32) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid)))
        .with_context(|| format!("cannot give the socket {} to group {gid}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set mode 0660 on {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_the_agents_uid_and_the_group_may_operate_and_nobody_else() {
        let p = OperatorPolicy {
            agent_uid: 1000,
            group: None,
        };
        assert!(p.allows(0, 0));
        assert!(p.allows(1000, 1000));
        assert!(!p.allows(65534, 65534));
        let g = OperatorPolicy {
            agent_uid: 1000,
            group: Some(("ops".into(), 4242)),
        };
        assert!(g.allows(65534, 4242), "primary group");
        assert!(!g.allows(65534, 65534));
    }
}
