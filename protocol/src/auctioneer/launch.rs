//! What happens after an award: confirms that launch tasks, releases that
//! give leases back, kills, and the status updates sent to each task's home
//! node until acknowledged (with adopted and restarted tasks' reports).

use super::*;

impl Auctioneer {
    /// Reports a task's new state from the executor (running, or how it ended).
    /// Terminal states free the task's resources. The update is sent to the
    /// task's home node and re-sent until acknowledged.
    ///
    /// # Errors
    /// [`Error::UnknownTask`] if the task holds no allocation here;
    /// [`Error::Transition`] if the life cycle forbids the change.
    pub fn task_status(&mut self, now: Instant, mut status: TaskStatus) -> Result<(), Error> {
        let task_id = status.task_id.clone();
        let alloc = self
            .running
            .get_mut(&task_id)
            .ok_or_else(|| Error::UnknownTask(task_id.clone()))?;
        alloc.state = alloc.state.transition(status.state)?;
        if status.state.is_terminal() && status.reason.is_none() {
            status.reason = alloc.kill_reason.clone();
        }
        let (home, framework, name, resources) = (
            alloc.home.clone(),
            alloc.framework.clone(),
            alloc.name.clone(),
            alloc.resources,
        );
        if status.state.is_terminal()
            && let Some(a) = self.running.remove(&task_id)
        {
            self.give_back(now, &a.resources, a.ports);
        }
        self.send_status(now, home, framework, name, resources, status);
        self.refresh_hold_min();
        Ok(())
    }

    /// Re-adopts a task that was running before the node restarted
    /// (recovery). The task runs whatever the ledger says, so it is always
    /// counted, even when it does not fit in what is free (the node was
    /// restarted with a smaller capacity): the node is then
    /// [overcommitted](Auctioneer::overcommitted), advertises nothing free
    /// and awards nothing until enough of its tasks end.
    ///
    /// # Errors
    /// [`Error::AlreadyHeld`] if the task already holds an allocation here
    /// (nothing changes).
    #[allow(clippy::too_many_arguments)]
    pub fn adopt(
        &mut self,
        task_id: TaskId,
        framework: FrameworkId,
        weight: u32,
        home: NodeId,
        spec: &TaskSpec,
        ports: Vec<u16>,
        state: TaskState,
    ) -> Result<(), Error> {
        if self.running.contains_key(&task_id) {
            return Err(Error::AlreadyHeld(task_id));
        }
        for p in &ports {
            // Ports outside the configured set are kept as they are.
            let _ = self.ports.take_specific(*p);
        }
        self.charge(&spec.resources);
        self.running.insert(
            task_id,
            Allocation {
                framework,
                weight,
                home,
                name: spec.name.clone(),
                resources: spec.resources,
                ports,
                state,
                kill_grace: Duration::from_millis(u64::from(spec.kill_grace_ms)),
                kill_reason: None,
            },
        );
        Ok(())
    }

    /// Reports afresh every task running here for frameworks homed on `home`,
    /// which restarted (a new generation in gossip, or this node itself after
    /// its own restart): the new run's bidders know nothing of them until
    /// told ([`crate::bidder::Bidder::restored`]). Updates already waiting
    /// for an acknowledgement are re-sent anyway. Returns how many were sent.
    pub fn home_restarted(&mut self, now: Instant, home: &NodeId) -> usize {
        let fresh: Vec<(TaskId, FrameworkId, String, Resources, TaskState)> = self
            .running
            .iter()
            .filter(|(id, a)| {
                a.home == *home && !a.state.is_terminal() && !self.outbox.contains_key(*id)
            })
            .map(|(id, a)| {
                (
                    id.clone(),
                    a.framework.clone(),
                    a.name.clone(),
                    a.resources,
                    a.state,
                )
            })
            .collect();
        let n = fresh.len();
        for (task_id, framework, name, resources, state) in fresh {
            let status = TaskStatus::new(task_id, state, Some(self.me.clone()));
            self.send_status(now, home.clone(), framework, name, resources, status);
        }
        self.refresh_hold_min();
        n
    }

    /// Reports afresh, to its home, every task this node re-attached after
    /// its own restart ([`crate::host::Host::after_recovery`]). Returns how
    /// many were sent.
    pub fn restarted(&mut self, now: Instant) -> usize {
        let homes: BTreeSet<NodeId> = self.running.values().map(|a| a.home.clone()).collect();
        homes.iter().map(|h| self.home_restarted(now, h)).sum()
    }

    /// Kills every task running here whose home is `home`, which was declared
    /// dead: nobody could be told about them, and the home reports them lost
    /// (it holds this node dead too when a partition is the cause, or it
    /// crashed). Held bids from it are dropped unanswered. Returns how many
    /// kills were asked for.
    pub fn home_died(&mut self, home: &NodeId) -> usize {
        let before = self.book.len();
        self.book.retain(|p| p.from != *home);
        self.stats.bids_dropped_home_dead += (before - self.book.len()) as u64;
        let mut kills = 0;
        for (task_id, a) in self.running.iter_mut() {
            if a.home != *home || a.state.is_terminal() {
                continue;
            }
            if a.kill_reason.is_none() {
                a.kill_reason = Some(format!(
                    "killed by {}: its home node {home} was declared dead, so its \
                     framework can no longer be told about it (the home reports it lost)",
                    self.me
                ));
            }
            self.events.push_back(Event::Kill {
                task_id: task_id.clone(),
                grace: a.kill_grace,
            });
            kills += 1;
        }
        self.stats.orphans_killed += kills as u64;
        self.refresh_hold_min();
        kills
    }

    /// Reports a task that ended while the node was down (recovery): its
    /// status is sent to its home node like any other.
    pub fn report_ended(
        &mut self,
        now: Instant,
        home: NodeId,
        framework: FrameworkId,
        spec: &TaskSpec,
        status: TaskStatus,
    ) {
        self.send_status(
            now,
            home,
            framework,
            spec.name.clone(),
            spec.resources,
            status,
        );
    }

    pub(super) fn on_confirm(&mut self, now: Instant, from: NodeId, c: Confirm) {
        let confirmed_before = self
            .confirmed
            .get(&c.lease_id)
            .is_some_and(|(owner, task)| *owner == from && *task == c.task_id);
        // Or the task runs here already: this node restarted after it
        // launched it and before its Confirmed answer got through, and
        // re-attached it. Refusing would have its bidder place it again
        // elsewhere while it runs on here (it ran on two nodes).
        let reattached = self.running.get(&c.task_id).is_some_and(|a| a.home == from);
        if confirmed_before || reattached {
            self.transmits.push_back(Transmit {
                to: from,
                msg: PeerMessage::Confirmed(Confirmed {
                    lease_id: c.lease_id,
                    task_id: c.task_id,
                }),
            });
            return;
        }
        let valid = self
            .leases
            .get(&c.lease_id)
            .is_some_and(|l| l.from == from && l.task_id == c.task_id && now < l.expires);
        if !valid {
            self.transmits.push_back(Transmit {
                to: from,
                msg: PeerMessage::ConfirmRefused(ConfirmRefused {
                    lease_id: c.lease_id,
                    task_id: c.task_id,
                    reason: "the lease expired or is unknown; bid again".into(),
                }),
            });
            return;
        }
        if let Some(why) = self.unavailable.clone() {
            // Granted before the node stopped taking tasks: the task would
            // fail here, so its bidder is sent elsewhere.
            if let Some(lease) = self.leases.remove(&c.lease_id) {
                self.expiries.remove(&(lease.expires, c.lease_id));
                self.give_back(now, &lease.spec.resources, lease.ports);
            }
            self.transmits.push_back(Transmit {
                to: from,
                msg: PeerMessage::ConfirmRefused(ConfirmRefused {
                    lease_id: c.lease_id,
                    task_id: c.task_id,
                    reason: format!("node {} takes no new tasks: {why}; bid again", self.me),
                }),
            });
            return;
        }
        let Some(lease) = self.leases.remove(&c.lease_id) else {
            return;
        };
        self.expiries.remove(&(lease.expires, c.lease_id));
        self.stats.launches += 1;
        self.confirmed
            .insert(c.lease_id, (from.clone(), lease.task_id.clone()));
        self.confirmed_order.push_back(c.lease_id);
        while self.confirmed_order.len() > self.config.answer_cache {
            if let Some(old) = self.confirmed_order.pop_front() {
                self.confirmed.remove(&old);
            }
        }
        self.running.insert(
            lease.task_id.clone(),
            Allocation {
                framework: lease.framework.clone(),
                weight: lease.weight,
                home: from.clone(),
                name: lease.spec.name.clone(),
                resources: lease.spec.resources,
                ports: lease.ports.clone(),
                state: TaskState::Starting,
                kill_grace: Duration::from_millis(u64::from(lease.spec.kill_grace_ms)),
                kill_reason: None,
            },
        );
        self.transmits.push_back(Transmit {
            to: from.clone(),
            msg: PeerMessage::Confirmed(Confirmed {
                lease_id: c.lease_id,
                task_id: lease.task_id.clone(),
            }),
        });
        self.events.push_back(Event::Launch {
            task_id: lease.task_id,
            framework: lease.framework,
            weight: lease.weight,
            home: from,
            spec: *lease.spec,
            ports: lease.ports,
        });
    }

    pub(super) fn on_release(&mut self, now: Instant, from: NodeId, r: Release) {
        let owned = self
            .leases
            .get(&r.lease_id)
            .is_some_and(|l| l.from == from && l.task_id == r.task_id);
        if owned && let Some(lease) = self.leases.remove(&r.lease_id) {
            self.expiries.remove(&(lease.expires, r.lease_id));
            self.stats.leases_released += 1;
            self.give_back(now, &lease.spec.resources, lease.ports);
        }
    }

    pub(super) fn on_status_ack(&mut self, from: &NodeId, ack: StatusAck) {
        let done = self
            .outbox
            .get(&ack.task_id)
            .is_some_and(|o| o.home == *from && o.update.seq <= ack.seq);
        if done && let Some(o) = self.outbox.remove(&ack.task_id) {
            self.retries.remove(&(o.next_retry, ack.task_id));
        }
    }

    pub(super) fn on_kill(&mut self, k: Kill) -> Result<(), Error> {
        let alloc = self
            .running
            .get(&k.task_id)
            .ok_or_else(|| Error::UnknownTask(k.task_id.clone()))?;
        self.events.push_back(Event::Kill {
            task_id: k.task_id,
            grace: alloc.kill_grace,
        });
        Ok(())
    }

    pub(super) fn send_status(
        &mut self,
        now: Instant,
        home: NodeId,
        framework: FrameworkId,
        name: String,
        resources: Resources,
        status: TaskStatus,
    ) {
        self.status_seq += 1;
        let task_id = status.task_id.clone();
        let update = StatusUpdate {
            seq: self.status_seq,
            framework,
            status,
            free: self.free(),
            free_version: self.version,
        };
        if let Some(old) = self.outbox.remove(&task_id) {
            self.retries.remove(&(old.next_retry, task_id.clone()));
        }
        let next_retry = now + self.config.status_retry;
        self.retries.insert((next_retry, task_id.clone()));
        self.transmits.push_back(Transmit {
            to: home.clone(),
            msg: PeerMessage::Status(update.clone()),
        });
        self.outbox.insert(
            task_id,
            Outgoing {
                home,
                update,
                name,
                resources,
                next_retry,
                backoff: self.config.status_retry,
                attempts: 0,
            },
        );
    }
}
