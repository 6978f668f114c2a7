//! Messages between the real machines: sending over the network model,
//! delivering to an auctioneer or a bidder, and pumping what each machine
//! wants sent, launched or reported after every input.

use super::*;

impl AuctionSim {
    pub(super) fn send(&mut self, now: Micros, from: u32, to: u32, msg: PeerMessage) {
        if let Some(d) = self.p.net.delay(&mut self.rng, now, from, to) {
            self.q.push(
                now + d,
                Ev::Deliver {
                    to,
                    from,
                    msg: Box::new(msg),
                },
            );
        }
    }

    pub(super) fn deliver(
        &mut self,
        now: Micros,
        to: u32,
        from: u32,
        msg: PeerMessage,
    ) -> Result<(), Violation> {
        if !self.nodes[to as usize].up {
            return Ok(());
        }
        let from_id = self.nodes[from as usize].id.clone();
        let at = Instant::from_micros(now);
        // Messages for a bidder go to the bidder of the framework the task
        // id names; the rest go to the node's auctioneer.
        let fw_name = match &msg {
            PeerMessage::Award(a) => Some(a.task_id.framework_part()),
            PeerMessage::Reject(r) => Some(r.task_id.framework_part()),
            PeerMessage::Confirmed(c) => Some(c.task_id.framework_part()),
            PeerMessage::ConfirmRefused(c) => Some(c.task_id.framework_part()),
            PeerMessage::Status(u) => Some(u.framework.as_str()),
            _ => None,
        };
        let bidder = fw_name.map(|name| self.fw_index.get(name).copied());
        match bidder {
            None => {
                let _ = self.nodes[to as usize]
                    .auct
                    .handle_message(at, from_id, msg);
                self.pump_node(now, to)
            }
            Some(b) => {
                let Some(b) = b else {
                    return Ok(());
                };
                let sb = &mut self.bidders[b as usize];
                if sb.home != to {
                    return Ok(());
                }
                let _ = sb.b.handle_message(at, from_id, msg, &mut sb.view);
                self.pump_bidder(now, b)
            }
        }
    }

    pub(super) fn pump_node(&mut self, now: Micros, n: u32) -> Result<(), Violation> {
        let at = Instant::from_micros(now);
        loop {
            while let Some(t) = self.nodes[n as usize].auct.poll_transmit() {
                if let Some(to) = node_index(&t.to) {
                    self.send(now, n, to, t.msg);
                }
            }
            let Some(ev) = self.nodes[n as usize].auct.poll_event() else {
                break;
            };
            match ev {
                auctioneer::Event::Launch {
                    task_id,
                    framework,
                    spec,
                    ..
                } => {
                    let fw = self.fw_index.get(framework.as_str()).copied().unwrap_or(0);
                    let res = spec.resources;
                    let node = &mut self.nodes[n as usize];
                    node.exec_used = node.exec_used.saturating_add(&res);
                    node.exec.insert(task_id.clone(), Running { res, fw });
                    let epoch = node.epoch;
                    let id = node.id.clone();
                    let _ = node.auct.task_status(
                        at,
                        TaskStatus::new(task_id.clone(), TaskState::Running, Some(id)),
                    );
                    self.c.busy_add(now, res.cpu_millis);
                    self.fw_used[fw as usize] = self.fw_used[fw as usize].saturating_add(&res);
                    let dur = self
                        .tasks
                        .get(&task_id)
                        .map_or(SERVICE_DURATION, |t| t.duration);
                    if dur < SERVICE_DURATION {
                        self.q.push(
                            now + dur,
                            Ev::TaskEnd {
                                node: n,
                                epoch,
                                task: task_id,
                            },
                        );
                    }
                    self.check_node(n)?;
                }
                auctioneer::Event::LedgerChanged { free, version } => {
                    let node = &self.nodes[n as usize];
                    let (c, l) = (node.cell as usize, node.local as usize);
                    let gv = self.cells[c].bump(l, now);
                    let node = &mut self.nodes[n as usize];
                    node.history.push_back((gv, version, free));
                    if node.history.len() > 16 {
                        node.history.pop_front();
                    }
                }
                auctioneer::Event::Kill { task_id, .. } => {
                    let node = &mut self.nodes[n as usize];
                    if let Some(r) = node.exec.remove(&task_id) {
                        node.exec_used = node.exec_used.saturating_sub(&r.res);
                        let id = node.id.clone();
                        let _ = node
                            .auct
                            .task_status(at, TaskStatus::new(task_id, TaskState::Killed, Some(id)));
                        self.c.busy_sub(now, r.res.cpu_millis);
                        self.fw_used[r.fw as usize] =
                            self.fw_used[r.fw as usize].saturating_sub(&r.res);
                    }
                }
                auctioneer::Event::StatusUndeliverable { .. } => {}
            }
        }
        let node = &mut self.nodes[n as usize];
        if let Some(t) = node.auct.poll_timeout() {
            let t = t.as_micros().max(now);
            if t < node.timer || node.timer < now {
                node.timer = t;
                self.q.push(t, Ev::NodeTimer(n));
            }
        }
        self.check_node(n)
    }

    pub(super) fn check_node(&mut self, n: u32) -> Result<(), Violation> {
        let node = &self.nodes[n as usize];
        let cap = node.auct.capacity();
        if let Err(v) = invariants::check_node(&node.id, &cap, &node.auct.used(), &node.exec_used) {
            self.c.overcommit += 1;
            return Err(v);
        }
        Ok(())
    }

    pub(super) fn pump_bidder(&mut self, now: Micros, b: u32) -> Result<(), Violation> {
        let home = self.bidders[b as usize].home;
        while let Some(t) = self.bidders[b as usize].b.poll_transmit() {
            if let Some(to) = node_index(&t.to) {
                self.send(now, home, to, t.msg);
            }
        }
        while let Some(ev) = self.bidders[b as usize].b.poll_event() {
            match ev {
                bidder::Event::Placed {
                    task_id, latency, ..
                } => {
                    self.c.placement.record(latency.as_micros() as u64);
                    if let Some(t) = self.tasks.get_mut(&task_id)
                        && !t.placed
                    {
                        t.placed = true;
                        let fw = self.bidders[b as usize].fw as usize;
                        self.fw_pending[fw] = self.fw_pending[fw].saturating_sub(&t.res);
                    }
                }
                bidder::Event::Status { status, .. } => {
                    if status.state == TaskState::Lost {
                        self.c.lost_reported += 1;
                    }
                    if status.state.is_terminal() {
                        self.lost_pending.remove(&status.task_id);
                        if let Some(t) = self.tasks.remove(&status.task_id) {
                            if !t.placed {
                                let fw = self.bidders[b as usize].fw as usize;
                                self.fw_pending[fw] = self.fw_pending[fw].saturating_sub(&t.res);
                            }
                            if status.state != TaskState::Finished
                                && let Some(js) = self.jobs.get_mut(&t.job)
                            {
                                js.remaining = js.remaining.saturating_sub(1);
                                if js.remaining == 0 {
                                    self.jobs.remove(&t.job);
                                }
                            }
                        }
                    }
                }
            }
        }
        let sb = &mut self.bidders[b as usize];
        if let Some(t) = sb.b.poll_timeout() {
            let t = t.as_micros().max(now);
            if t < sb.timer || sb.timer < now {
                sb.timer = t;
                self.q.push(t, Ev::BidderTimer(b));
            }
        }
        invariants::check_bidder(&sb.b)
    }
}
