//! Messages between the real machines: sending over the network model,
//! delivering to a node's host, and pumping what each host wants sent,
//! launched or reported after every input.

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
        // The host routes it: to its auctioneer, or to the bidder whose bid
        // or task it answers. Log reads and listings never travel here.
        let _ = self.nodes[to as usize].host.handle_peer(at, from_id, msg);
        self.pump_node(now, to)
    }

    /// Carries out what node `n`'s host asked for: messages onto the
    /// network, launches and kills on the modelled executor (which reports
    /// back at once), events into the measurements. Then re-arms the node's
    /// timer and checks the invariants.
    pub(super) fn pump_node(&mut self, now: Micros, n: u32) -> Result<(), Violation> {
        loop {
            let mut moved = false;
            while let Some(t) = self.nodes[n as usize].host.poll_transmit() {
                moved = true;
                if let Some(to) = node_index(&t.to) {
                    self.send(now, n, to, t.msg);
                }
            }
            while let Some(e) = self.nodes[n as usize].host.poll_exec() {
                moved = true;
                self.exec(now, n, e)?;
            }
            while let Some(ev) = self.nodes[n as usize].host.poll_event() {
                moved = true;
                self.on_host_event(now, n, ev);
            }
            if !moved {
                break;
            }
        }
        let node = &mut self.nodes[n as usize];
        if let Some(t) = node.host.poll_timeout() {
            let t = t.as_micros().max(now);
            if t < node.timer || node.timer < now {
                node.timer = t;
                self.q.push(t, Ev::NodeTimer(n));
            }
        }
        self.check_node(n)?;
        let node = &self.nodes[n as usize];
        for &b in &node.bidders {
            if let Some(bidder) = node.host.bidder(&self.bidders[b as usize].id) {
                invariants::check_bidder(bidder)?;
            }
        }
        Ok(())
    }

    fn exec(&mut self, now: Micros, n: u32, e: host::Exec) -> Result<(), Violation> {
        let at = Instant::from_micros(now);
        match e {
            host::Exec::Launch(l) => {
                let fw = self
                    .fw_index
                    .get(l.framework.as_str())
                    .copied()
                    .unwrap_or(0);
                let res = l.spec.resources;
                let home_cell = self
                    .bidders
                    .iter()
                    .find(|b| b.fw == fw)
                    .map(|b| self.nodes[b.home as usize].cell);
                if home_cell.is_some_and(|c| c != self.nodes[n as usize].cell) {
                    self.c.cross_cell += 1;
                }
                let node = &mut self.nodes[n as usize];
                node.exec_used = node.exec_used.saturating_add(&res);
                node.exec.insert(l.task_id.clone(), Running { res, fw });
                let epoch = node.epoch;
                let id = node.id.clone();
                node.host.handle_exec(
                    at,
                    TaskStatus::new(l.task_id.clone(), TaskState::Running, Some(id)),
                    None,
                );
                self.c.busy_add(now, res.cpu_millis);
                self.fw_used[fw as usize] = self.fw_used[fw as usize].saturating_add(&res);
                let dur = self
                    .tasks
                    .get(&l.task_id)
                    .map_or(SERVICE_DURATION, |t| t.duration);
                if dur < SERVICE_DURATION {
                    self.q.push(
                        now + dur,
                        Ev::TaskEnd {
                            node: n,
                            epoch,
                            task: l.task_id,
                        },
                    );
                }
                self.check_node(n)
            }
            host::Exec::Kill { task_id, .. } => {
                let node = &mut self.nodes[n as usize];
                if let Some(r) = node.exec.remove(&task_id) {
                    node.exec_used = node.exec_used.saturating_sub(&r.res);
                    let id = node.id.clone();
                    node.host.handle_exec(
                        at,
                        TaskStatus::new(task_id, TaskState::Killed, Some(id)),
                        None,
                    );
                    self.c.busy_sub(now, r.res.cpu_millis);
                    self.fw_used[r.fw as usize] =
                        self.fw_used[r.fw as usize].saturating_sub(&r.res);
                }
                Ok(())
            }
        }
    }

    fn on_host_event(&mut self, now: Micros, n: u32, ev: host::Event) {
        match ev {
            host::Event::LedgerChanged { free, version } => {
                let node = &self.nodes[n as usize];
                let (c, l) = (node.cell as usize, node.local as usize);
                let gv = self.cells[c].bump(l, now);
                let node = &mut self.nodes[n as usize];
                node.history.push_back((gv, version, free));
                if node.history.len() > 16 {
                    node.history.pop_front();
                }
            }
            host::Event::Placed {
                framework,
                task_id,
                latency,
                ..
            } => {
                self.c.placement.record(latency.as_micros() as u64);
                if let Some(t) = self.tasks.get_mut(&task_id)
                    && !t.placed
                {
                    t.placed = true;
                    if let Some(&fw) = self.fw_index.get(framework.as_str()) {
                        let fw = fw as usize;
                        self.fw_pending[fw] = self.fw_pending[fw].saturating_sub(&t.res);
                    }
                }
            }
            host::Event::Status {
                framework, status, ..
            } => {
                if status.state == TaskState::Lost {
                    self.c.lost_reported += 1;
                }
                if status.state.is_terminal() {
                    self.lost_pending.remove(&status.task_id);
                    if let Some(t) = self.tasks.remove(&status.task_id) {
                        if !t.placed
                            && let Some(&fw) = self.fw_index.get(framework.as_str())
                        {
                            let fw = fw as usize;
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
            host::Event::ImportCell(c) => self.import_cell(now, n, c.0),
            host::Event::StatusUndeliverable { .. }
            | host::Event::NodeAlive(_)
            | host::Event::NodeDead(_)
            | host::Event::NodeRevived { .. }
            | host::Event::DropCell(_) => {}
        }
    }

    pub(super) fn check_node(&mut self, n: u32) -> Result<(), Violation> {
        let node = &self.nodes[n as usize];
        let a = node.host.auctioneer();
        if let Err(v) = invariants::check_node(&node.id, &a.capacity(), &a.used(), &node.exec_used)
        {
            self.c.overcommit += 1;
            return Err(v);
        }
        Ok(())
    }
}
