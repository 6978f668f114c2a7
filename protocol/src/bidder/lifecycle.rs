//! A task's life after its bids are out: awards and rejects, the confirm and
//! its re-sends, withdrawals of the losing bids, kills, status updates from
//! the running node, and the one terminal status each task ends with.

use super::*;

impl<R: Rng> Bidder<R> {
    pub(super) fn status(task_id: &TaskId, t: &Task) -> TaskStatus {
        TaskStatus {
            task_id: task_id.clone(),
            state: t.state,
            node: t.node.clone(),
            exit_code: t.exit_code,
            signal: None,
            reason: t.reason.clone(),
        }
    }

    /// Asks the nodes holding these bids to drop them. A withdrawn bid can
    /// no longer place its task, so its hold in the job's tally goes now,
    /// not when the node answers.
    pub(super) fn withdraw(&mut self, bids: &[BidId]) {
        for bid in bids {
            let Some(b) = self.bids.get_mut(bid) else {
                continue;
            };
            if b.withdrawn {
                continue;
            }
            b.withdrawn = true;
            let (node, task_id, asked) = (b.node.clone(), b.task_id.clone(), b.resources);
            // The node gives back whatever the bid got: it asks for nothing
            // there any more.
            self.unask(&node, &asked);
            self.transmits.push_back(Transmit {
                to: node.clone(),
                msg: PeerMessage::Withdraw(Withdraw {
                    bid_id: *bid,
                    task_id: task_id.clone(),
                }),
            });
            self.unhold(&task_id, &node);
        }
    }

    /// Forgets an outstanding bid and its timeout timer, so an answered bid
    /// does not wake the bidder a `bid_timeout` later for nothing.
    pub(super) fn take_bid(&mut self, bid: BidId) -> Option<OutBid> {
        let b = self.bids.remove(&bid)?;
        self.timers.remove(&(b.expires, Timer::BidTimeout(bid)));
        if !b.withdrawn {
            self.unask(&b.node, &b.resources);
        }
        Some(b)
    }

    /// A live bid on `node` asks for `r` (see `Bidder::asked`).
    pub(super) fn ask(&mut self, node: &NodeId, r: &Resources) {
        let e = self.asked.entry(node.clone()).or_insert(Resources::ZERO);
        *e = e.saturating_add(r);
    }

    /// A bid on `node` that asked for `r` is live no more.
    pub(super) fn unask(&mut self, node: &NodeId, r: &Resources) {
        if let Some(e) = self.asked.get_mut(node) {
            *e = e.saturating_sub(r);
            if *e == Resources::ZERO {
                self.asked.remove(node);
            }
        }
    }

    /// What `node` has free for this bidder's next bid: the view's free
    /// vector less what this bidder's live bids there ask for.
    pub(super) fn free_for_me(&self, node: &NodeInfo) -> Resources {
        match self.asked.get(&node.id) {
            Some(asked) => node.free.saturating_sub(asked),
            None => node.free,
        }
    }

    /// Sets the task's confirm re-send timer, replacing any earlier one.
    pub(super) fn set_confirm_timer(&mut self, at: Instant, task_id: &TaskId) {
        self.cancel_confirm_timer(task_id);
        if let Some(t) = self.tasks.get_mut(task_id) {
            t.confirm_timer = Some(at);
            self.timers
                .insert((at, Timer::ConfirmResend(task_id.clone())));
        }
    }

    /// Drops the task's confirm re-send timer once the confirm is answered.
    pub(super) fn cancel_confirm_timer(&mut self, task_id: &TaskId) {
        if let Some(at) = self
            .tasks
            .get_mut(task_id)
            .and_then(|t| t.confirm_timer.take())
        {
            self.timers
                .remove(&(at, Timer::ConfirmResend(task_id.clone())));
        }
    }

    pub(super) fn bid_timed_out(&mut self, now: Instant, bid: BidId) {
        let Some(b) = self.take_bid(bid) else {
            return;
        };
        self.stats.bids_timed_out += 1;
        if !b.withdrawn {
            self.unhold(&b.task_id, &b.node);
        }
        let why = format!("node {} did not answer a bid in time", b.node);
        self.bid_lost(now, &b.task_id, bid, why);
    }

    /// A bid of this task ended without an award.
    pub(super) fn bid_lost(&mut self, now: Instant, task_id: &TaskId, bid: BidId, why: String) {
        let Some(t) = self.tasks.get_mut(task_id) else {
            return;
        };
        let Phase::Bidding { open } = &mut t.phase else {
            return;
        };
        open.remove(&bid);
        t.last_reject = Some(why.clone());
        if !open.is_empty() {
            return;
        }
        if t.pinned.is_some() {
            self.end(task_id, TaskState::Failed, None, Some(why));
            return;
        }
        let delay = self.backoff(task_id);
        self.retry_later(now, task_id, delay);
    }

    /// An award arrived for a live bid. Returns true if the task takes it.
    pub(super) fn take_award(
        &mut self,
        now: Instant,
        task_id: &TaskId,
        bid: BidId,
        node: &NodeId,
        lease: LeaseId,
    ) -> bool {
        let Some(t) = self.tasks.get_mut(task_id) else {
            return false;
        };
        let Phase::Bidding { open } = &t.phase else {
            return false;
        };
        if !open.contains(&bid) {
            return false;
        }
        let others: Vec<BidId> = open.iter().copied().filter(|b| *b != bid).collect();
        t.phase = Phase::Confirming {
            node: node.clone(),
            lease,
            attempts: 1,
        };
        t.node = Some(node.clone());
        self.withdraw(&others);
        self.transmits.push_back(Transmit {
            to: node.clone(),
            msg: PeerMessage::Confirm(Confirm {
                lease_id: lease,
                task_id: task_id.clone(),
            }),
        });
        self.set_confirm_timer(now + self.config.confirm_timeout, task_id);
        true
    }

    pub(super) fn resend_confirm(&mut self, now: Instant, task_id: &TaskId) {
        let Some(t) = self.tasks.get_mut(task_id) else {
            return;
        };
        t.confirm_timer = None; // this is it firing
        let Phase::Confirming {
            node,
            lease,
            attempts,
        } = &mut t.phase
        else {
            return;
        };
        if *attempts >= self.config.confirm_attempts {
            let why = format!("node {node} did not answer {attempts} confirms");
            self.end(task_id, TaskState::Lost, None, Some(why));
            return;
        }
        *attempts += 1;
        let (node, lease, attempt) = (node.clone(), *lease, *attempts);
        let wait = self.confirm_wait(attempt);
        self.transmits.push_back(Transmit {
            to: node,
            msg: PeerMessage::Confirm(Confirm {
                lease_id: lease,
                task_id: task_id.clone(),
            }),
        });
        self.set_confirm_timer(now + wait, task_id);
    }

    /// How long the `attempt`-th confirm (1: the first) waits for its
    /// answer: `confirm_timeout` doubled for each earlier one, at most
    /// `confirm_backoff_max`.
    pub(super) fn confirm_wait(&self, attempt: u32) -> std::time::Duration {
        let base = self.config.confirm_timeout;
        let doubled = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        doubled.min(self.config.confirm_backoff_max.max(base))
    }

    pub(super) fn resend_kill(&mut self, now: Instant, task_id: &TaskId) {
        let Some(t) = self.tasks.get(task_id) else {
            return;
        };
        if !t.kill_requested || t.state.is_terminal() {
            return;
        }
        let (Phase::Confirming { node, .. } | Phase::Placed { node }) = &t.phase else {
            return;
        };
        self.transmits.push_back(Transmit {
            to: node.clone(),
            msg: PeerMessage::Kill(Kill {
                task_id: task_id.clone(),
            }),
        });
        self.timers.insert((
            now + self.config.kill_retry,
            Timer::KillResend(task_id.clone()),
        ));
    }

    pub(super) fn placed(&mut self, now: Instant, task_id: &TaskId, node: &NodeId) {
        self.cancel_confirm_timer(task_id);
        let Some(t) = self.tasks.get_mut(task_id) else {
            return;
        };
        t.phase = Phase::Placed { node: node.clone() };
        let latency = now - t.submitted;
        let attempts = t.attempts;
        self.stats.placed += 1;
        self.events.push_back(Event::Placed {
            task_id: task_id.clone(),
            node: node.clone(),
            latency,
            attempts,
        });
        if t.state == TaskState::Staging {
            t.state = TaskState::Starting;
            let status = Self::status(task_id, t);
            let name = t.spec.name.clone();
            self.events.push_back(Event::Status { name, status });
        }
    }

    pub(super) fn on_status(&mut self, now: Instant, from: NodeId, u: StatusUpdate) {
        let task_id = u.status.task_id.clone();
        self.transmits.push_back(Transmit {
            to: from.clone(),
            msg: PeerMessage::StatusAck(StatusAck {
                task_id: task_id.clone(),
                seq: u.seq,
            }),
        });
        if !self.tasks.contains_key(&task_id) {
            self.adopt_reported(now, &from, &task_id);
        }
        if let Some(t) = self.tasks.get_mut(&task_id)
            && matches!(t.phase, Phase::Restoring { .. })
        {
            // A task back from the journal: the first node to report it
            // owns it (any other is told to kill it below).
            t.phase = Phase::Placed { node: from.clone() };
            t.node = Some(from.clone());
            self.stats.adopted += 1;
        }
        let Some(t) = self.tasks.get(&task_id) else {
            return;
        };
        let owner = match &t.phase {
            Phase::Confirming { node, .. } | Phase::Placed { node } => Some(node.clone()),
            _ => None,
        };
        if owner.as_ref() != Some(&from) {
            // A node that does not (or no longer) own the task reports it: if
            // it still runs there, it must not.
            if !u.status.state.is_terminal() {
                self.transmits.push_back(Transmit {
                    to: from,
                    msg: PeerMessage::Kill(Kill { task_id }),
                });
            }
            return;
        }
        if matches!(t.phase, Phase::Confirming { .. }) {
            // The Confirmed answer was lost; the status proves the launch.
            self.placed(now, &task_id, &from);
        }
        let Some(t) = self.tasks.get(&task_id) else {
            return;
        };
        if !t.state.can_transition_to(u.status.state) {
            return; // a duplicate or reordered update
        }
        if u.status.state.is_terminal() {
            let reason = u.status.reason.clone();
            if let Some(t) = self.tasks.get_mut(&task_id) {
                t.exit_code = u.status.exit_code;
            }
            self.end(&task_id, u.status.state, u.status.signal, reason);
        } else if let Some(t) = self.tasks.get_mut(&task_id) {
            t.state = u.status.state;
            let status = Self::status(&task_id, t);
            let name = t.spec.name.clone();
            self.events.push_back(Event::Status { name, status });
        }
    }

    /// Moves a task to a terminal state, once, and reports it.
    pub(super) fn end(
        &mut self,
        task_id: &TaskId,
        state: TaskState,
        signal: Option<i32>,
        reason: Option<String>,
    ) {
        let Some(t) = self.tasks.get(task_id) else {
            return;
        };
        if t.state.is_terminal() {
            return;
        }
        self.cancel_confirm_timer(task_id);
        let Some(t) = self.tasks.get(task_id) else {
            return;
        };
        if let Phase::Bidding { open } = t.phase.clone() {
            let open: Vec<BidId> = open.into_iter().collect();
            self.withdraw(&open);
        }
        self.unhold_all(task_id);
        let Some(t) = self.tasks.get_mut(task_id) else {
            return;
        };
        t.state = state;
        t.phase = Phase::Ended;
        t.reason = reason;
        let mut status = Self::status(task_id, t);
        status.signal = signal;
        let name = t.spec.name.clone();
        self.active = self.active.saturating_sub(1);
        self.events.push_back(Event::Status { name, status });
        self.ended.push_back(task_id.clone());
        while self.ended.len() > self.config.keep_ended {
            if let Some(old) = self.ended.pop_front() {
                self.tasks.remove(&old);
            }
        }
    }
}
