//! The cluster-wide events of the auction run, each at its exact time with
//! every shard stopped: the one-second sample (fair shares, fairness,
//! gossip bytes, refreshed cell imports, the lost-task check), the
//! federation of gateways and its aggregates, crashes and rejoins (which
//! touch homes in every cell), and the test fault.

use super::*;

impl AuctionSim {
    pub(super) fn global(
        &mut self,
        shards: &[Mutex<Shard>],
        now: Micros,
        g: Global,
    ) -> (u64, Result<(), Violation>) {
        match g {
            Global::Sample => (10, self.sample(shards, now)),
            Global::FedGossip(i) => {
                self.fed_round(shards, now, i);
                (9, Ok(()))
            }
            Global::Crash { node, rejoin_at } => {
                self.crash(shards, now, node, rejoin_at);
                (11, Ok(()))
            }
            Global::Rejoin(n) => (12, self.rejoin(shards, now, n)),
            Global::Fault => {
                if let Some(f) = self.ctx.p.fault.clone() {
                    let mut s = lock(&shards[self.ctx.shard_of(f.node) as usize]);
                    let node = s.node_mut(f.node);
                    node.exec_used = node.exec_used.saturating_add(&f.extra);
                    return (13, s.check_node(f.node));
                }
                (13, Ok(()))
            }
        }
    }

    fn fed_round(&mut self, shards: &[Mutex<Shard>], now: Micros, i: u32) {
        self.gq
            .push(now + self.ctx.p.gossip_interval, Global::FedGossip(i));
        let g = self.fed.members()[i as usize];
        let cellno = self.fed_cell[i as usize];
        let agg = {
            let s = lock(&shards[cellno as usize]);
            if !s.node(g).up {
                return;
            }
            CellAggregate::from_nodes(&s.infos(false))
        };
        if self.aggregates.get(&CellId(cellno)) != Some(&agg) {
            self.fed.bump(i as usize, now);
            // Every home hears it (the federation model carries it to the
            // cells' gateways, and their cells' gossip on).
            let at = Instant::from_micros(now);
            for b in &self.ctx.bidders {
                let mut s = lock(&shards[self.ctx.shard_of(b.home) as usize]);
                s.node_mut(b.home)
                    .host
                    .handle_aggregate(at, CellId(cellno), agg.clone());
            }
            self.aggregates.insert(CellId(cellno), agg);
        }
        let mut sink = Vec::new();
        self.fed.round(
            i as usize,
            now,
            &mut self.rng,
            &self.ctx.p.net,
            &mut self.fmetrics,
            &mut sink,
        );
    }

    fn sample(&mut self, shards: &[Mutex<Shard>], now: Micros) -> Result<(), Violation> {
        self.gq.push(now + SEC, Global::Sample);
        if let Some(pb) = &self.progress {
            pb.set_position(now / SEC);
        }
        // Fair shares from (one-second-old) allocations, as gossip carries them.
        let n_fw = self.fws.len();
        let mut total = Resources::ZERO;
        let mut used = vec![Resources::ZERO; n_fw];
        let mut pending = vec![Resources::ZERO; n_fw];
        let mut bytes = self.fmetrics.bytes;
        for s in shards {
            let s = lock(s);
            for n in s.nodes.iter().filter(|n| n.up) {
                total = total.saturating_add(&n.host.auctioneer().capacity());
            }
            for f in 0..n_fw {
                used[f] = used[f].saturating_add(&s.fw_used[f]);
                pending[f] = pending[f].saturating_add(&s.fw_pending[f]);
            }
            bytes += s.gmetrics.bytes;
        }
        let mut usage = BTreeMap::new();
        let mut samples = Vec::new();
        for (f, def) in self.fws.iter().enumerate() {
            if let Ok(id) = FrameworkId::new(def.name.clone()) {
                usage.insert(
                    id,
                    FrameworkUsage {
                        resources: used[f],
                        weight: def.weight,
                    },
                );
            }
            samples.push(FwSample {
                used: used[f],
                waiting: pending[f],
                weight: def.weight,
            });
        }
        self.c.sample_fairness(now, &total, &samples);
        let fs = FairShares::new(total, usage);
        for s in shards {
            let mut s = lock(s);
            for n in s.nodes.iter_mut().filter(|n| n.up) {
                n.host.set_shares(fs.clone());
            }
        }
        self.bytes_series.push((
            now as f64 / SEC as f64,
            (bytes - self.last_bytes) as f64 / self.ctx.p.nodes as f64,
        ));
        self.last_bytes = bytes;
        self.cross_cells(shards, now);
        for s in shards {
            invariants::check_lost(&lock(s).lost_pending, now)?;
        }
        Ok(())
    }

    /// Refreshes every home's imported cells (the node re-asks a gateway
    /// now and then; here each second, with the cells' nodes as they are).
    fn cross_cells(&mut self, shards: &[Mutex<Shard>], now: Micros) {
        if shards.len() < 2 {
            return;
        }
        let at = Instant::from_micros(now);
        let mut homes: Vec<u32> = self.ctx.bidders.iter().map(|b| b.home).collect();
        homes.sort_unstable();
        homes.dedup();
        for n in homes {
            let home = self.ctx.shard_of(n) as usize;
            let cells = {
                let s = lock(&shards[home]);
                if !s.node(n).up {
                    continue;
                }
                s.node(n).host.imported_cells()
            };
            for c in cells {
                let Some(src) = shards.get(c.0 as usize) else {
                    continue;
                };
                let infos = lock(src).infos(true);
                lock(&shards[home])
                    .node_mut(n)
                    .host
                    .handle_import(at, c, infos);
            }
        }
    }

    fn crash(&mut self, shards: &[Mutex<Shard>], now: Micros, n: u32, rejoin_at: Option<Micros>) {
        let lost: Vec<(TaskId, Running)> = {
            let mut s = lock(&shards[self.ctx.shard_of(n) as usize]);
            let node = s.node_mut(n);
            if !node.up || !node.bidders.is_empty() {
                return;
            }
            node.up = false;
            node.epoch += 1;
            node.timer = Micros::MAX;
            let lost: Vec<(TaskId, Running)> = node.exec.drain().collect();
            node.exec_used = Resources::ZERO;
            let l = node.local as usize;
            for (_, r) in &lost {
                s.c.busy_sub(now, r.res.cpu_millis);
                s.fw_used[r.fw as usize] = s.fw_used[r.fw as usize].saturating_sub(&r.res);
            }
            s.group.crash(l, now);
            lost
        };
        for (t, r) in lost {
            let home = self
                .ctx
                .bidders
                .get(r.fw as usize)
                .map_or(0, |b| self.ctx.shard_of(b.home));
            lock(&shards[home as usize]).lost_pending.insert(t, now);
        }
        if let Some(t) = rejoin_at {
            self.gq.push(t, Global::Rejoin(n));
        }
    }

    fn rejoin(&mut self, shards: &[Mutex<Shard>], now: Micros, n: u32) -> Result<(), Violation> {
        let cap = self.ctx.p.capacity();
        let id = node_id(n);
        // A restarted node is a new chitchat generation whose tasks did not
        // survive the crash: homes that know it learn that now (their hosts
        // report its tasks lost if they had not declared it dead yet), and
        // re-learn it from its fresh ledger (whose versions restart).
        let at = Instant::from_micros(now);
        let mut homes: Vec<u32> = self.ctx.bidders.iter().map(|b| b.home).collect();
        homes.sort_unstable();
        homes.dedup();
        for h in homes {
            let mut s = lock(&shards[self.ctx.shard_of(h) as usize]);
            if s.node(h).host.view().get(&id).is_none() {
                continue;
            }
            let info = NodeInfo {
                version: 1,
                ..NodeInfo::new(id.clone(), cap, Attributes::default())
            };
            s.node_mut(h)
                .host
                .handle_membership(at, Change::Reborn(info));
            s.pump_node(&self.ctx, now, h)?;
        }
        let host = new_host(&self.ctx.p, id);
        let mut s = lock(&shards[self.ctx.shard_of(n) as usize]);
        let node = s.node_mut(n);
        node.host = host;
        node.up = true;
        node.history.clear();
        let l = node.local as usize;
        s.group.rejoin(l, now);
        let gv = s.group.own_version(l);
        let node = s.node_mut(n);
        let a = node.host.auctioneer();
        node.history.push_back((gv, a.version(), a.free()));
        Ok(())
    }
}
