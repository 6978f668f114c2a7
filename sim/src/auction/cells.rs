//! The auction run's periodic and gossip-driven work: cell gossip rounds and
//! what watched nodes learn from them, the federation of gateways and its
//! aggregates, cross-cell imports into bidders' views, and the one-second
//! sample (fair shares, fairness, gossip bytes, lost-task check).

use super::*;

impl AuctionSim {
    pub(super) fn gossip_round(&mut self, now: Micros, n: u32) -> Result<(), Violation> {
        self.q.push(now + self.p.gossip_interval, Ev::Gossip(n));
        let node = &self.nodes[n as usize];
        if !node.up {
            return Ok(());
        }
        let (c, l) = (node.cell as usize, node.local as usize);
        self.learned.clear();
        let mut learned = std::mem::take(&mut self.learned);
        self.cells[c].round(
            l,
            now,
            &mut self.rng,
            &self.p.net,
            &mut self.gmetrics,
            &mut learned,
        );
        let mut result = Ok(());
        for ev in learned.drain(..) {
            if let Err(v) = self.on_learned(now, ev) {
                result = Err(v);
                break;
            }
        }
        self.learned = learned;
        result
    }

    pub(super) fn on_learned(&mut self, now: Micros, ev: Learned) -> Result<(), Violation> {
        match ev {
            Learned::State {
                observer,
                subject,
                version,
            } => {
                let Some(&(_, lv, free)) = self.nodes[subject as usize]
                    .history
                    .iter()
                    .rev()
                    .find(|(gv, _, _)| *gv <= version)
                else {
                    return Ok(());
                };
                let sid = self.nodes[subject as usize].id.clone();
                let o = observer as usize;
                if !self.nodes[o].bidders.is_empty() {
                    self.nodes[o].host.handle_membership(
                        Instant::from_micros(now),
                        Change::Free {
                            node: sid,
                            free,
                            version: lv,
                        },
                    );
                    return self.pump_node(now, observer);
                }
                Ok(())
            }
            Learned::Alive {
                observer,
                subject,
                alive,
            } => {
                let sid = self.nodes[subject as usize].id.clone();
                let o = observer as usize;
                if !self.nodes[o].bidders.is_empty() {
                    self.nodes[o].host.handle_membership(
                        Instant::from_micros(now),
                        Change::Alive { node: sid, alive },
                    );
                    return self.pump_node(now, observer);
                }
                Ok(())
            }
        }
    }

    pub(super) fn fed_round(&mut self, now: Micros, i: u32) {
        self.q.push(now + self.p.gossip_interval, Ev::FedGossip(i));
        let g = self.fed.members()[i as usize];
        if !self.nodes[g as usize].up {
            return;
        }
        let cellno = self.fed_cell[i as usize];
        let agg = self.cell_aggregate(cellno);
        if self.aggregates.get(&CellId(cellno)) != Some(&agg) {
            self.fed.bump(i as usize, now);
            // Every home hears it (the federation model carries it to the
            // cells' gateways, and their cells' gossip on).
            let at = Instant::from_micros(now);
            for n in self.nodes.iter_mut().filter(|n| !n.bidders.is_empty()) {
                n.host.handle_aggregate(at, CellId(cellno), agg.clone());
            }
            self.aggregates.insert(CellId(cellno), agg);
        }
        let mut sink = Vec::new();
        self.fed.round(
            i as usize,
            now,
            &mut self.rng,
            &self.p.net,
            &mut self.gmetrics,
            &mut sink,
        );
    }

    pub(super) fn cell_aggregate(&self, c: u32) -> CellAggregate {
        let lo = c as usize * self.p.cell_size;
        let hi = ((c as usize + 1) * self.p.cell_size).min(self.p.nodes);
        let infos: Vec<NodeInfo> = (lo..hi)
            .map(|i| {
                let n = &self.nodes[i];
                let a = n.host.auctioneer();
                let mut info = NodeInfo::new(n.id.clone(), a.capacity(), Attributes::default());
                info.free = a.free();
                info.alive = n.up;
                info
            })
            .collect();
        CellAggregate::from_nodes(&infos)
    }

    pub(super) fn sample(&mut self, now: Micros) -> Result<(), Violation> {
        self.q.push(now + SEC, Ev::Sample);
        if let Some(pb) = &self.progress {
            pb.set_position(now / SEC);
        }
        // Fair shares from (one-second-old) allocations, as gossip carries them.
        let total = self
            .nodes
            .iter()
            .filter(|n| n.up)
            .fold(Resources::ZERO, |a, n| {
                a.saturating_add(&n.host.auctioneer().capacity())
            });
        let mut usage = BTreeMap::new();
        let mut shares = Vec::new();
        for (f, def) in self.fws.iter().enumerate() {
            if let Ok(id) = FrameworkId::new(def.name.clone()) {
                usage.insert(
                    id,
                    FrameworkUsage {
                        resources: self.fw_used[f],
                        weight: def.weight,
                    },
                );
            }
            shares.push(FwSample {
                used: self.fw_used[f],
                waiting: self.fw_pending[f],
                weight: def.weight,
            });
        }
        self.c.sample_fairness(now, &total, &shares);
        let fs = FairShares::new(total, usage);
        for n in self.nodes.iter_mut().filter(|n| n.up) {
            n.host.set_shares(fs.clone());
        }
        let bytes = self.gmetrics.bytes;
        self.bytes_series.push((
            now as f64 / SEC as f64,
            (bytes - self.last_bytes) as f64 / self.p.nodes as f64,
        ));
        self.last_bytes = bytes;
        self.cross_cells(now);
        invariants::check_lost(&self.lost_pending, now)
    }

    /// Refreshes every home's imported cells (the node re-asks a gateway
    /// now and then; here each second, with the cells' nodes as they are).
    pub(super) fn cross_cells(&mut self, now: Micros) {
        if self.cells.len() < 2 {
            return;
        }
        let homes: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&n| !self.nodes[n as usize].bidders.is_empty() && self.nodes[n as usize].up)
            .collect();
        for n in homes {
            for c in self.nodes[n as usize].host.imported_cells() {
                self.import_cell(now, n, c.0);
            }
        }
    }

    /// Hands home `n` the members of cell `c` as they are.
    pub(super) fn import_cell(&mut self, now: Micros, n: u32, c: u32) {
        let (lo, hi) = self.cell_range(c);
        let infos: Vec<NodeInfo> = (lo..hi)
            .map(|i| {
                let node = &self.nodes[i];
                let a = node.host.auctioneer();
                let mut info = NodeInfo::new(node.id.clone(), a.capacity(), Attributes::default());
                info.free = a.free();
                info.version = a.version();
                info.alive = node.up;
                info
            })
            .collect();
        self.nodes[n as usize]
            .host
            .handle_import(Instant::from_micros(now), CellId(c), infos);
    }

    pub(super) fn cell_range(&self, c: u32) -> (usize, usize) {
        let lo = c as usize * self.p.cell_size;
        (lo, ((c as usize + 1) * self.p.cell_size).min(self.p.nodes))
    }
}
