//! Messages from other nodes (and from this one to itself): auctioneer
//! traffic goes to the auctioneer; awards, rejects and confirmations are
//! routed to the bidder that bid, with wire bid ids mapped back to the
//! bidder's own; status updates go to the task's framework; log reads and
//! task listings are answered from here.

use super::core::{Core, MAX_BIDS_MAPPED, MAX_PEER_ROWS, framework_of};
use agora_protocol::wire::{PeerMessage, StatusAck, TaskList};
use agora_protocol::{BidId, FrameworkId, Instant, NodeId, TaskId};

impl Core {
    /// Dispatches a message from a node (possibly this one).
    pub async fn on_peer(&mut self, from: NodeId, msg: PeerMessage) {
        let now = self.clock.now();
        match msg {
            PeerMessage::Bid(_)
            | PeerMessage::Confirm(_)
            | PeerMessage::Release(_)
            | PeerMessage::StatusAck(_)
            | PeerMessage::Kill(_)
            | PeerMessage::Withdraw(_) => {
                let kind = msg.kind();
                if let Err(e) = self.auctioneer.handle_message(now, from.clone(), msg) {
                    tracing::debug!(%from, kind, error = %e, "auctioneer refused a message");
                }
            }
            PeerMessage::Award(mut a) => {
                let (task_id, lease_id) = (a.task_id.clone(), a.lease_id);
                let routed = match self.bids.get(&a.bid_id).cloned() {
                    Some((_, own)) => {
                        if let Some(m) = self.metrics() {
                            m.bids_won.inc();
                        }
                        a.bid_id = own;
                        self.route_to_bidder(now, &task_id, from.clone(), PeerMessage::Award(a))
                    }
                    None => false,
                };
                if !routed {
                    // Nobody here wants it: give the lease back at once.
                    self.send(
                        from,
                        PeerMessage::Release(agora_protocol::wire::Release { lease_id, task_id }),
                    );
                }
            }
            PeerMessage::Reject(mut r) => {
                let task_id = r.task_id.clone();
                self.view.apply_free(&from, r.free, r.free_version);
                if let Some((_, own)) = self.bids.get(&r.bid_id).cloned() {
                    if let Some(m) = self.metrics() {
                        m.bids_rejected.inc();
                    }
                    r.bid_id = own;
                    self.route_to_bidder(now, &task_id, from, PeerMessage::Reject(r));
                }
            }
            PeerMessage::Confirmed(ref c) => {
                let task_id = c.task_id.clone();
                self.route_to_bidder(now, &task_id, from, msg);
            }
            PeerMessage::ConfirmRefused(ref c) => {
                let task_id = c.task_id.clone();
                self.route_to_bidder(now, &task_id, from, msg);
            }
            PeerMessage::Status(u) => {
                if let Some(f) = self.frameworks.get_mut(&u.framework) {
                    let _ =
                        f.bidder
                            .handle_message(now, from, PeerMessage::Status(u), &mut self.view);
                } else {
                    // The framework is gone: acknowledge so the node stops
                    // re-sending, and stop a task nobody will hear about.
                    let task_id = u.status.task_id.clone();
                    tracing::debug!(%from, task = %task_id, "status for an unknown framework; acknowledging");
                    self.send(
                        from.clone(),
                        PeerMessage::StatusAck(StatusAck {
                            task_id: task_id.clone(),
                            seq: u.seq,
                        }),
                    );
                    if !u.status.state.is_terminal() {
                        self.send(
                            from,
                            PeerMessage::Kill(agora_protocol::wire::Kill { task_id }),
                        );
                    }
                }
            }
            PeerMessage::LogRead(r) => {
                let mut chunk = self
                    .executor
                    .read_log(&r.task_id, r.stream, r.offset, r.max_bytes)
                    .await;
                chunk.request_id = r.request_id;
                self.send(from, PeerMessage::LogChunk(chunk));
            }
            PeerMessage::LogChunk(c) => self.on_log_chunk(from, c).await,
            PeerMessage::ListTasks(l) => {
                // Bounded to stay far below the peer frame limit; running
                // tasks first.
                let mut tasks = self.local_rows();
                tasks.sort_by_key(|r| r.state.is_terminal());
                tasks.truncate(MAX_PEER_ROWS);
                self.send(
                    from,
                    PeerMessage::TaskList(TaskList {
                        request_id: l.request_id,
                        tasks,
                    }),
                );
            }
            PeerMessage::TaskList(t) => self.on_task_list(from, t),
        }
    }

    /// Gives a bidder's outgoing bid a wire id unique on this node (bidders
    /// number their bids from 1 each, and an auctioneer recognises
    /// duplicates by sender node and bid id); withdrawals are translated
    /// the same way. None when a withdrawal names a forgotten bid.
    pub(super) fn bid_out(&mut self, fw: &FrameworkId, msg: PeerMessage) -> Option<PeerMessage> {
        match msg {
            PeerMessage::Bid(mut b) => {
                let wire = BidId(self.next_bid);
                self.next_bid += 1;
                self.bids.insert(wire, (fw.clone(), b.bid_id));
                self.bids_back.insert((fw.clone(), b.bid_id), wire);
                self.bids_order.push_back(wire);
                while self.bids_order.len() > MAX_BIDS_MAPPED {
                    if let Some(old) = self.bids_order.pop_front()
                        && let Some(key) = self.bids.remove(&old)
                    {
                        self.bids_back.remove(&key);
                    }
                }
                b.bid_id = wire;
                if let Some(m) = self.metrics() {
                    m.bids_sent.inc();
                }
                Some(PeerMessage::Bid(b))
            }
            PeerMessage::Withdraw(mut w) => {
                w.bid_id = *self.bids_back.get(&(fw.clone(), w.bid_id))?;
                Some(PeerMessage::Withdraw(w))
            }
            other => Some(other),
        }
    }

    /// Hands a message to the bidder of the task's framework; false if
    /// there is none on this node.
    pub(super) fn route_to_bidder(
        &mut self,
        now: Instant,
        task_id: &TaskId,
        from: NodeId,
        msg: PeerMessage,
    ) -> bool {
        let Some(fw) = framework_of(task_id) else {
            return false;
        };
        let Some(f) = self.frameworks.get_mut(&fw) else {
            return false;
        };
        if let Err(e) = f.bidder.handle_message(now, from, msg, &mut self.view) {
            tracing::debug!(error = %e, "bidder refused a message");
        }
        true
    }
}
