//! Nodes' lives: a task ending on its node, a node crashing and rejoining as
//! a new generation.

use super::*;

impl AuctionSim {
    pub(super) fn task_end(
        &mut self,
        now: Micros,
        n: u32,
        epoch: u32,
        task: TaskId,
    ) -> Result<(), Violation> {
        let node = &mut self.nodes[n as usize];
        if node.epoch != epoch || !node.up {
            return Ok(());
        }
        let Some(r) = node.exec.remove(&task) else {
            return Ok(());
        };
        node.exec_used = node.exec_used.saturating_sub(&r.res);
        let id = node.id.clone();
        let status = TaskStatus {
            exit_code: Some(0),
            ..TaskStatus::new(task.clone(), TaskState::Finished, Some(id))
        };
        node.host
            .handle_exec(Instant::from_micros(now), status, None);
        self.c.busy_sub(now, r.res.cpu_millis);
        self.fw_used[r.fw as usize] = self.fw_used[r.fw as usize].saturating_sub(&r.res);
        self.c.completed += 1;
        if let Some(t) = self.tasks.get(&task)
            && let Some(js) = self.jobs.get_mut(&t.job)
        {
            js.remaining = js.remaining.saturating_sub(1);
            if js.remaining == 0 {
                self.c.response.record(now - js.arrival);
                self.jobs.remove(&t.job);
            }
        }
        self.pump_node(now, n)
    }

    pub(super) fn crash(
        &mut self,
        now: Micros,
        n: u32,
        rejoin_at: Option<Micros>,
    ) -> Result<(), Violation> {
        let node = &mut self.nodes[n as usize];
        if !node.up || !node.bidders.is_empty() {
            return Ok(());
        }
        node.up = false;
        node.epoch += 1;
        node.timer = Micros::MAX;
        let lost: Vec<(TaskId, Running)> = node.exec.drain().collect();
        node.exec_used = Resources::ZERO;
        let (c, l) = (node.cell as usize, node.local as usize);
        for (t, r) in lost {
            self.c.busy_sub(now, r.res.cpu_millis);
            self.fw_used[r.fw as usize] = self.fw_used[r.fw as usize].saturating_sub(&r.res);
            self.lost_pending.insert(t, now);
        }
        self.cells[c].crash(l, now);
        if let Some(t) = rejoin_at {
            self.q.push(t, Ev::Rejoin(n));
        }
        Ok(())
    }

    pub(super) fn rejoin(&mut self, now: Micros, n: u32) -> Result<(), Violation> {
        let cap = self.p.capacity();
        let id = self.nodes[n as usize].id.clone();
        // A restarted node is a new chitchat generation whose tasks did not
        // survive the crash: homes that know it learn that now (their hosts
        // report its tasks lost if they had not declared it dead yet), and
        // re-learn it from its fresh ledger (whose versions restart).
        let at = Instant::from_micros(now);
        for h in 0..self.nodes.len() {
            if self.nodes[h].bidders.is_empty() || self.nodes[h].host.view().get(&id).is_none() {
                continue;
            }
            let info = NodeInfo {
                version: 1,
                ..NodeInfo::new(id.clone(), cap, Attributes::default())
            };
            self.nodes[h]
                .host
                .handle_membership(at, Change::Reborn(info));
            self.pump_node(now, h as u32)?;
        }
        let host = new_host(&self.p, id);
        let node = &mut self.nodes[n as usize];
        node.host = host;
        node.up = true;
        node.history.clear();
        let (c, l) = (node.cell as usize, node.local as usize);
        self.cells[c].rejoin(l, now);
        let gv = self.cells[c].own_version(l);
        let node = &mut self.nodes[n as usize];
        let a = node.host.auctioneer();
        node.history.push_back((gv, a.version(), a.free()));
        Ok(())
    }
}
