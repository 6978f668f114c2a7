//! Where every peer message goes, and the pump that drains the host's
//! machines after each input.
//!
//! - Auctioneer traffic (bids, confirms, releases, withdrawals, status
//!   acknowledgements, kills) goes to the auctioneer.
//! - Awards and rejects go to the bidder whose bid they answer, found by the
//!   bid id's range. An award nobody here wants is released at once; a
//!   reject for nobody is dropped.
//! - Confirm answers go to the framework that made the task id.
//! - A status update goes to the framework it names. For a framework not
//!   homed here (it was removed), the update is acknowledged so the sender
//!   stops re-sending, and a task still running is killed: nobody would
//!   hear of it.
//! - Witness rows are kept for listings ([`super::witness`]).
//! - Log reads and task listings are the shell's (they need the executor or
//!   fan out to peers); [`Host::handle_peer`] hands them back.

use super::{Event, Exec, Host, Launch, Transmit};
use crate::auctioneer;
use crate::bidder;
use crate::ids::{FrameworkId, NodeId};
use crate::time::Instant;
use crate::wire::{Kill, PeerMessage, Release, StatusAck, TaskList};
use rand::Rng;

/// Most rounds of one pump; each round moves at least one message or event,
/// so this only bounds a pathological loop.
const MAX_PUMP_ROUNDS: usize = 100_000;

impl<R: Rng> Host<R> {
    /// A message from node `from` (never this node: the host loops its own
    /// messages back itself). A `ListTasks` query is answered from the
    /// host's rows. Returns the message when it is the shell's: a `LogRead`
    /// to answer from the files, or an answer (`LogChunk`, `TaskList`) to a
    /// query the shell made.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: PeerMessage,
    ) -> Option<PeerMessage> {
        let back = self.dispatch(now, from, msg);
        self.pump(now);
        back
    }

    pub(super) fn send(&mut self, to: NodeId, msg: PeerMessage) {
        if to == self.me {
            self.local.push_back(msg);
        } else {
            self.transmits.push_back(Transmit { to, msg });
        }
    }

    fn dispatch(&mut self, now: Instant, from: NodeId, msg: PeerMessage) -> Option<PeerMessage> {
        match msg {
            PeerMessage::Bid(_)
            | PeerMessage::Confirm(_)
            | PeerMessage::Release(_)
            | PeerMessage::StatusAck(_)
            | PeerMessage::Kill(_)
            | PeerMessage::Withdraw(_) => {
                // Errors leave the ledger unchanged (an unknown lease, a
                // kill of a task not run here); nothing to answer.
                let _ = self.auctioneer.handle_message(now, from, msg);
                None
            }
            PeerMessage::Award(a) => {
                match self.framework_of_bid(a.bid_id).cloned() {
                    Some(fw) => {
                        self.stats.awards += 1;
                        self.give_bidder(now, &fw, from, PeerMessage::Award(a));
                    }
                    None => {
                        // Nobody here wants it: give the lease back at once.
                        self.stats.unroutable += 1;
                        self.send(
                            from,
                            PeerMessage::Release(Release {
                                lease_id: a.lease_id,
                                task_id: a.task_id,
                            }),
                        );
                    }
                }
                None
            }
            PeerMessage::Reject(r) => {
                match self.framework_of_bid(r.bid_id).cloned() {
                    Some(fw) => {
                        self.stats.rejects += 1;
                        self.give_bidder(now, &fw, from, PeerMessage::Reject(r));
                    }
                    None => {
                        self.stats.unroutable += 1;
                        self.view.apply_free(&from, r.free, r.free_version);
                    }
                }
                None
            }
            PeerMessage::Confirmed(ref c) => {
                let fw = self.framework_of_task(&c.task_id);
                self.route_by_task(now, fw, from, msg);
                None
            }
            PeerMessage::ConfirmRefused(ref c) => {
                let fw = self.framework_of_task(&c.task_id);
                self.route_by_task(now, fw, from, msg);
                None
            }
            PeerMessage::Status(u) => {
                if self.frameworks.contains_key(&u.framework) {
                    let fw = u.framework.clone();
                    self.give_bidder(now, &fw, from, PeerMessage::Status(u));
                } else {
                    self.stats.orphan_status += 1;
                    self.view.apply_free(&from, u.free, u.free_version);
                    let task_id = u.status.task_id.clone();
                    self.send(
                        from.clone(),
                        PeerMessage::StatusAck(StatusAck {
                            task_id: task_id.clone(),
                            seq: u.seq,
                        }),
                    );
                    if !u.status.state.is_terminal() {
                        self.send(from, PeerMessage::Kill(Kill { task_id }));
                    }
                }
                None
            }
            PeerMessage::ListTasks(q) => {
                let (tasks, matched) = q.page(self.task_rows());
                self.send(
                    from,
                    PeerMessage::TaskList(TaskList {
                        request_id: q.request_id,
                        tasks,
                        matched,
                    }),
                );
                None
            }
            PeerMessage::Witness(w) => {
                if from != self.me {
                    self.witnessed.record(from, w);
                }
                None
            }
            other @ (PeerMessage::LogRead(_)
            | PeerMessage::LogChunk(_)
            | PeerMessage::TaskList(_)
            | PeerMessage::FederationQuery
            | PeerMessage::FederationView(_)
            | PeerMessage::CellQuery(_)
            | PeerMessage::CellMembers(_)
            | PeerMessage::Locate(_)
            | PeerMessage::Located(_)) => Some(other),
        }
    }

    fn route_by_task(
        &mut self,
        now: Instant,
        fw: Option<FrameworkId>,
        from: NodeId,
        msg: PeerMessage,
    ) {
        match fw {
            Some(fw) => self.give_bidder(now, &fw, from, msg),
            None => self.stats.unroutable += 1,
        }
    }

    fn give_bidder(&mut self, now: Instant, fw: &FrameworkId, from: NodeId, msg: PeerMessage) {
        if let Some(h) = self.frameworks.get_mut(fw) {
            // A bidder refuses only kinds it does not take, which routing
            // never hands it.
            let _ = h.bidder.handle_message(now, from, msg, &mut self.view);
        }
    }

    /// Drains every machine until nothing moves: transmits out (or back in
    /// when addressed to this node), auctioneer events to the executor and
    /// the shell, bidder events to the shell.
    pub(super) fn pump(&mut self, now: Instant) {
        for _ in 0..MAX_PUMP_ROUNDS {
            let mut moved = false;
            while let Some(t) = self.auctioneer.poll_transmit() {
                moved = true;
                self.send(t.to, t.msg);
            }
            while let Some(ev) = self.auctioneer.poll_event() {
                moved = true;
                self.on_auction_event(ev);
            }
            for (id, h) in &mut self.frameworks {
                while let Some(t) = h.bidder.poll_transmit() {
                    moved = true;
                    if matches!(t.msg, PeerMessage::Bid(_)) {
                        self.stats.bids_sent += 1;
                    }
                    if t.to == self.me {
                        self.local.push_back(t.msg);
                    } else {
                        self.transmits.push_back(t);
                    }
                }
                while let Some(ev) = h.bidder.poll_event() {
                    self.events.push_back(match ev {
                        bidder::Event::Status { name, status } => Event::Status {
                            framework: id.clone(),
                            name,
                            status,
                        },
                        bidder::Event::Placed {
                            task_id,
                            node,
                            latency,
                            attempts,
                        } => Event::Placed {
                            framework: id.clone(),
                            task_id,
                            node,
                            latency,
                            attempts,
                        },
                    });
                    moved = true;
                }
            }
            while let Some(msg) = self.local.pop_front() {
                moved = true;
                let me = self.me.clone();
                // The shell's kinds are never sent to oneself.
                let _ = self.dispatch(now, me, msg);
            }
            if !moved {
                self.witness_out.schedule(now);
                return;
            }
        }
        self.witness_out.schedule(now);
    }

    fn on_auction_event(&mut self, ev: auctioneer::Event) {
        match ev {
            auctioneer::Event::Launch {
                task_id,
                framework,
                weight,
                home,
                spec,
                ports,
            } => {
                if home == self.me {
                    self.witness_out.touch();
                }
                self.exec.push_back(Exec::Launch(Launch {
                    task_id,
                    framework,
                    weight,
                    home,
                    spec,
                    ports,
                }));
            }
            auctioneer::Event::Kill { task_id, grace } => {
                self.exec.push_back(Exec::Kill { task_id, grace });
            }
            auctioneer::Event::LedgerChanged { free, version } => {
                self.refresh_self();
                self.events
                    .push_back(Event::LedgerChanged { free, version });
            }
            auctioneer::Event::StatusUndeliverable { task_id, home } => {
                self.events
                    .push_back(Event::StatusUndeliverable { task_id, home });
            }
        }
    }
}
