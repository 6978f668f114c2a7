//! Messages from other nodes. The host takes everything it decides on
//! (auction traffic, awards, rejects, confirm answers, status updates);
//! what it hands back needs IO or a fan-out: log reads (the executor),
//! task listings (answered from the host's rows), and the answers to this
//! node's own queries ([`super::queries`]).

use super::core::{Core, MAX_PEER_ROWS};
use agora_protocol::NodeId;
use agora_protocol::wire::{PeerMessage, TaskList};

impl Core {
    /// Dispatches a message from another node.
    pub async fn on_peer(&mut self, from: NodeId, msg: PeerMessage) {
        let now = self.clock.now();
        let Some(back) = self.host.handle_peer(now, from.clone(), msg) else {
            return;
        };
        match back {
            PeerMessage::LogRead(r) => {
                let mut chunk = self
                    .executor
                    .read_log(&r.task_id, r.stream, r.offset, r.max_bytes)
                    .await;
                chunk.request_id = r.request_id;
                self.p2p.send(&from, PeerMessage::LogChunk(chunk));
            }
            PeerMessage::LogChunk(c) => self.on_log_chunk(from, c),
            PeerMessage::ListTasks(l) => {
                // Bounded to stay far below the peer frame limit; running
                // tasks first.
                let mut tasks = self.local_rows();
                tasks.sort_by_key(|r| r.state.is_terminal());
                tasks.truncate(MAX_PEER_ROWS);
                self.p2p.send(
                    &from,
                    PeerMessage::TaskList(TaskList {
                        request_id: l.request_id,
                        tasks,
                    }),
                );
            }
            PeerMessage::TaskList(t) => self.on_task_list(from, t),
            other => {
                tracing::debug!(%from, kind = other.kind(), "the host handed back a message it decides on; dropped");
            }
        }
    }
}
