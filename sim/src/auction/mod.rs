//! The auction run: every node's real [`Host`] (the machine the `agora`
//! node runs: its auctioneer, the bidders of the frameworks homed there, its
//! view, liveness and routing), over the network model, with cells gossiping
//! through the chitchat model and a federation of gateways publishing cell
//! aggregates.
//!
//! Memory at 10,000 nodes: every node has a host, but only a node where a
//! bidder lives is fed membership — nodes without a bidder never read their
//! view — and that view holds the home cell (plus any cell imported for
//! cross-cell bidding), so views cost `homes × cell size` entries instead of
//! `nodes²`. What each view holds is exactly what that home node has learned
//! through the gossip model, with its staleness. Frameworks that share a home
//! node share its view, as they do on a real node.
//!
//! Modelled rather than driven: the executor, gossip (the hosts are told
//! what the chitchat model says each home learned), the auctioneers' fair
//! shares (set once a second from the cluster's allocations, where a node
//! computes them from its gossip view), and what a cell import fetches: a
//! host's [`host::Event::ImportCell`] is answered with the cell's nodes as
//! they are at the end of the current window (below), at most one
//! lookahead later (the node asks one of the cell's gateways, a round trip
//! away). When to cross is the host's decision, as on the node.
//!
//! The executor is simulated: a launched task reports `Running` at once and
//! `Finished` after its duration. Invariants are checked after every event
//! (see [`crate::invariants`]); a violation stops the run.
//!
//! # Running cells in parallel
//!
//! Each cell is a [`shard::Shard`] with its nodes, its gossip group, its
//! own event queue and RNG. Shards meet only through messages between
//! nodes of different cells, which take at least the network's base
//! latency: the **lookahead** `L`. So the run advances in windows of at
//! most `L` simulated µs (conservative parallel discrete-event simulation):
//! within a window every shard runs its own events on whichever thread
//! claims it ([`pool`]); anything it sends another shard lands at least `L`
//! later, so in a later window, and waits in its outbox. Between windows
//! the coordinator delivers the outboxes (in shard order, so ties break the
//! same way every run), answers cell imports, pushes the jobs arriving in
//! the next window to their home shards, and runs the cluster-wide events
//! at their exact times, with every shard stopped: the one-second sample
//! (fair shares, fairness, gossip bytes), the federation's rounds (which
//! read a cell's state and tell every home), crashes, rejoins and the test
//! fault. A window never crosses the next such event.
//!
//! The shards are the cells whatever the thread count, and nothing depends
//! on which thread ran a shard, so the same seed gives the same run with 1
//! thread or 8 (`sim/tests/runs.rs` checks it).
//!
//! A message within a cell takes its modelled latency as before. Only with
//! `--latency-us 0` does the lookahead (then 1 µs) delay a cross-cell
//! message beyond its modelled latency.

use crate::engine::{Micros, Queue, SEC, TraceHash, splitmix};
use crate::failures::CrashAt;
use crate::gossip::{self, Group, Learned};
use crate::invariants::{self, Fault, Violation};
use crate::metrics::{Collector, FwSample};
use crate::network::NetConfig;
use crate::workload::{FrameworkDef, Job, SERVICE_DURATION, Workload};
use agora_protocol::auctioneer;
use agora_protocol::bidder;
use agora_protocol::cell::{self, CellAggregate, CellId};
use agora_protocol::constraint::Attributes;
use agora_protocol::fairness::{FairShares, FrameworkUsage};
use agora_protocol::host::{self, Change, Host};
use agora_protocol::resources::PortSet;
use agora_protocol::task::{Command, TaskSpec, TaskState, TaskStatus};
use agora_protocol::view::NodeInfo;
use agora_protocol::wire::PeerMessage;
use agora_protocol::{FrameworkId, Instant, NodeId, Resources, TaskId};
use indicatif::ProgressBar;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

mod global;
mod params;
mod pool;
mod shard;

pub use params::{Params, home_node, node_id};
use params::{cell_range, node_index};
use shard::{Ev, Running, Shard, SimNode};

/// What the auction run produced besides its [`Collector`].
#[derive(Clone, Debug, Default)]
pub struct GossipOutcome {
    /// Model metrics (cells and federation together).
    pub metrics: gossip::Metrics,
    /// (time s, bytes per node per second) over the run.
    pub bytes_series: Vec<(f64, f64)>,
    /// Largest flat cell whose SYN fits a datagram, for these ids.
    pub max_flat_cell: usize,
}

/// The cluster-wide events, run between windows with every shard stopped.
enum Global {
    Sample,
    FedGossip(u32),
    Crash {
        node: u32,
        rejoin_at: Option<Micros>,
    },
    Rejoin(u32),
    Fault,
}

/// One framework: its bidder lives in its home node's host.
pub(super) struct SimBidder {
    pub(super) id: FrameworkId,
    pub(super) fw: u32,
    pub(super) home: u32,
}

/// What every shard reads and none changes.
pub(super) struct Ctx {
    pub(super) p: Params,
    /// The smallest latency between two nodes: how far a window reaches.
    pub(super) lookahead: Micros,
    pub(super) fw_index: HashMap<String, u32>,
    pub(super) bidders: Vec<SimBidder>,
    /// The cell of each framework's home.
    pub(super) fw_home_cell: Vec<u32>,
    /// Every node's id, by index (formatting one per message was 3% of
    /// the run).
    pub(super) ids: Vec<NodeId>,
}

impl Ctx {
    /// The shard (cell) of node `n`.
    pub(super) fn shard_of(&self, n: u32) -> u32 {
        (n as usize / self.p.cell_size.max(1)) as u32
    }
}

/// The auction simulation.
pub struct AuctionSim {
    ctx: std::sync::Arc<Ctx>,
    shards: Vec<Mutex<Shard>>,
    threads: usize,
    gq: Queue<Global>,
    rng: ChaCha8Rng,
    fws: Vec<FrameworkDef>,
    workload: Workload,
    next_job: Option<Job>,
    fed: Group,
    fed_cell: Vec<u32>,
    aggregates: BTreeMap<CellId, CellAggregate>,
    /// The federation's gossip.
    fmetrics: gossip::Metrics,
    bytes_series: Vec<(f64, f64)>,
    last_bytes: u64,
    /// The cluster-wide measurements (fairness samples).
    c: Collector,
    hash: TraceHash,
    progress: Option<ProgressBar>,
}

impl AuctionSim {
    /// Builds the cluster, its cells and the frameworks' bidders; the run
    /// will use `threads` threads (at least 1; the result does not depend
    /// on it).
    pub fn new(
        p: Params,
        workload: Workload,
        progress: Option<ProgressBar>,
        threads: usize,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let cells_n = p.cells();
        let fws = workload.frameworks().to_vec();
        let cap = p.capacity();
        let mut nodes: Vec<SimNode> = (0..p.nodes as u32)
            .map(|i| SimNode {
                host: new_host(&p, node_id(i)),
                id: node_id(i),
                up: true,
                epoch: 0,
                timer: Micros::MAX,
                exec: HashMap::new(),
                exec_used: Resources::ZERO,
                local: (i as usize % p.cell_size.max(1)) as u32,
                history: VecDeque::from([(5, 1, cap)]),
                bidders: Vec::new(),
            })
            .collect();
        let mut bidders = Vec::new();
        let mut fw_index = HashMap::new();
        let mut fw_home_cell = Vec::new();
        for (f, def) in fws.iter().enumerate() {
            let (lo, hi) = cell_range(&p, def.cell % cells_n);
            let home = home_node(&p, def);
            let fw_id = FrameworkId::new(def.name.clone())
                .unwrap_or_else(|_| unreachable!("framework names are validated"));
            let brng = ChaCha8Rng::seed_from_u64(splitmix(p.seed ^ (f as u64 + 1)));
            if nodes[home as usize].bidders.is_empty() {
                // A home starts knowing its cell.
                let host = &mut nodes[home as usize].host;
                for i in (lo..hi).filter(|&i| i != home as usize) {
                    host.view_mut().upsert(NodeInfo {
                        version: 1,
                        ..NodeInfo::new(node_id(i as u32), cap, Attributes::default())
                    });
                }
            }
            let host = &mut nodes[home as usize].host;
            if let Err(e) = host.add_framework(fw_id.clone(), def.weight, brng) {
                unreachable!("framework names are distinct: {e}");
            }
            fw_index.insert(def.name.clone(), f as u32);
            fw_home_cell.push((home as usize / p.cell_size.max(1)) as u32);
            nodes[home as usize].bidders.push(f as u32);
            bidders.push(SimBidder {
                id: fw_id,
                fw: f as u32,
                home,
            });
        }
        let id_len = 6;
        let mut fed_members = Vec::new();
        let mut fed_cell = Vec::new();
        for c in 0..cells_n {
            let (lo, hi) = cell_range(&p, c);
            let ids: Vec<NodeId> = (lo..hi).map(|i| nodes[i].id.clone()).collect();
            for g in cell::gateways(CellId(c as u32), &ids, 3) {
                if let Some(i) = node_index(&g) {
                    fed_members.push(i);
                    fed_cell.push(c as u32);
                }
            }
        }
        let fed = Group::new(
            gossip::Config::federation(p.gossip_interval, id_len),
            fed_members,
            &[],
            2,
        );
        let mut gq = Queue::new();
        let mut wl = workload;
        let next_job = wl.next_job();
        for i in 0..fed.members().len() as u32 {
            gq.push(rng.random_range(0..p.gossip_interval), Global::FedGossip(i));
        }
        gq.push(SEC, Global::Sample);
        if p.failure_rate > 0.0 {
            // Poisson crashes over the whole cluster; bidder homes are spared
            // (a framework's death is not what this measures).
            let per_s = p.failure_rate * p.nodes as f64 / 3600.0;
            let mut t = 0.0;
            loop {
                let u: f64 = rng.random::<f64>();
                t += -(1.0 - u).ln() / per_s;
                if t * 1e6 >= p.duration as f64 {
                    break;
                }
                let n = rng.random_range(0..p.nodes as u32);
                if nodes[n as usize].bidders.is_empty() {
                    let at = (t * 1e6) as Micros;
                    gq.push(
                        at,
                        Global::Crash {
                            node: n,
                            rejoin_at: Some(at + p.rejoin_after),
                        },
                    );
                }
            }
        }
        for c in &p.crashes {
            gq.push(
                c.at,
                Global::Crash {
                    node: c.node,
                    rejoin_at: c.rejoin,
                },
            );
        }
        if let Some(f) = &p.fault {
            gq.push(f.at, Global::Fault);
        }
        let ids = nodes.iter().map(|n| n.id.clone()).collect();
        let ctx = std::sync::Arc::new(Ctx {
            ids,
            lookahead: p.net.base.max(1),
            p,
            fw_index,
            bidders,
            fw_home_cell,
        });
        // Split the nodes into their cells, last cell first.
        let mut shards = Vec::new();
        for c in (0..cells_n).rev() {
            let (lo, hi) = cell_range(&ctx.p, c);
            let members: Vec<u32> = (lo as u32..hi as u32).collect();
            let cell_nodes = nodes.split_off(lo);
            let watched: Vec<bool> = cell_nodes.iter().map(|n| !n.bidders.is_empty()).collect();
            let group = Group::new(
                gossip::Config::cell(ctx.p.gossip_interval, id_len),
                members,
                &watched,
                4,
            );
            debug_assert_eq!(cell_nodes.len(), hi - lo);
            let seed = splitmix(ctx.p.seed ^ 0x5348_4152_4400_0000 ^ c as u64);
            shards.push(Mutex::new(Shard::new(
                &ctx, c as u32, cell_nodes, group, seed,
            )));
        }
        shards.reverse();
        AuctionSim {
            ctx,
            shards,
            threads: threads.max(1),
            gq,
            rng,
            fws,
            workload: wl,
            next_job,
            fed,
            fed_cell,
            aggregates: BTreeMap::new(),
            fmetrics: gossip::Metrics::default(),
            bytes_series: Vec::new(),
            last_bytes: 0,
            c: Collector::default(),
            hash: TraceHash::default(),
            progress,
        }
    }

    /// Runs to the end.
    ///
    /// # Errors
    /// The first invariant violation, with the seed and the event.
    pub fn run(mut self) -> Result<(Collector, GossipOutcome), Violation> {
        let pool = pool::Pool::new();
        let shards = std::mem::take(&mut self.shards);
        let ctx = self.ctx.clone();
        let work = |s: &mut Shard, end: Micros| s.run_until(&ctx, end);
        let result = std::thread::scope(|scope| {
            for _ in 1..self.threads.min(shards.len()) {
                scope.spawn(|| pool.serve(&shards, &work));
            }
            // The pool's threads leave however the window loop ends (a
            // panic included: the scope would otherwise wait for them).
            let _stop = pool::StopOnDrop(&pool);
            self.windows(&pool, &shards, &work)
        });
        self.shards = shards;
        result?;
        self.finish()
    }

    /// The window loop (see the module doc).
    fn windows(
        &mut self,
        pool: &pool::Pool,
        shards: &[Mutex<Shard>],
        work: &(impl Fn(&mut Shard, Micros) + Sync),
    ) -> Result<(), Violation> {
        let duration = self.ctx.p.duration;
        let mut t: Micros = 0;
        let mut chooser = pool::Chooser::new(self.threads > 1 && shards.len() > 1);
        loop {
            self.route(shards, t);
            while let Some(at) = self.gq.peek_time()
                && at <= t
            {
                let Some((at, g)) = self.gq.pop() else { break };
                if at > duration {
                    continue;
                }
                let what = self.global(shards, at, g);
                self.hash.mix(at);
                self.hash.mix(what.0);
                what.1.map_err(|v| Violation {
                    seed: self.ctx.p.seed,
                    time: at,
                    event: self.gq.popped(),
                    ..v
                })?;
                self.route(shards, t);
            }
            if t > duration {
                return Ok(());
            }
            let end = (t + self.ctx.lookahead)
                .min(self.gq.peek_time().unwrap_or(Micros::MAX))
                .min(duration + 1);
            while let Some(j) = &self.next_job
                && j.arrival < end
            {
                let home = self.ctx.bidders[j.framework].home;
                let at = j.arrival;
                let job = self.next_job.take().map(Box::new);
                self.next_job = self.workload.next_job();
                if let Some(job) = job {
                    lock(&shards[self.ctx.shard_of(home) as usize])
                        .q
                        .push(at, Ev::Arrival(job));
                }
            }
            if chooser.parallel() {
                pool.window(shards, end, work);
            } else {
                for s in shards {
                    work(&mut lock(s), end);
                }
            }
            chooser.tick();
            // The earliest violation, whichever shard saw it.
            let mut first: Option<Violation> = None;
            for s in shards {
                if let Some(v) = lock(s).error.take()
                    && first.as_ref().is_none_or(|f| v.time < f.time)
                {
                    first = Some(v);
                }
            }
            if let Some(v) = first {
                return Err(v);
            }
            t = end;
        }
    }

    /// Delivers the shards' outboxes and answers their cell imports, at `t`.
    fn route(&mut self, shards: &[Mutex<Shard>], t: Micros) {
        let mut moved = Vec::new();
        let mut imports = Vec::new();
        for s in shards {
            let mut s = lock(s);
            moved.append(&mut s.out);
            imports.append(&mut s.imports);
        }
        for (at, to, ev) in moved {
            lock(&shards[to as usize]).q.push(at, ev);
        }
        for (node, cell) in imports {
            let Some(src) = shards.get(cell as usize) else {
                continue;
            };
            let infos = lock(src).infos(true);
            lock(&shards[self.ctx.shard_of(node) as usize])
                .q
                .push(t, Ev::Import { node, cell, infos });
        }
    }

    /// Totals over the shards, once the run is over.
    fn finish(mut self) -> Result<(Collector, GossipOutcome), Violation> {
        let end = self.ctx.p.duration;
        let mut c = std::mem::take(&mut self.c);
        let mut metrics = std::mem::take(&mut self.fmetrics);
        let mut events = self.gq.popped();
        let mut hash = self.hash;
        for s in &self.shards {
            let mut s = lock(s);
            let old = s
                .lost_pending
                .values()
                .filter(|t| end.saturating_sub(**t) > invariants::LOST_REPORT_BOUND)
                .count();
            c.lost_unreported += old as u64;
            for n in &s.nodes {
                for &b in &n.bidders {
                    if let Some(bidder) = n.host.bidder(&self.ctx.bidders[b as usize].id) {
                        let st = bidder.stats();
                        c.bids += st.bids_sent;
                        c.rejects += st.bids_rejected;
                    }
                }
            }
            c.absorb(&mut s.c, end);
            metrics.absorb(&s.gmetrics);
            events += s.q.popped();
            hash.mix(s.hash.value());
        }
        c.events = events;
        c.trace_hash = hash.value();
        let max_flat_cell = lock(&self.shards[0]).group.config().max_flat_members();
        Ok((
            c,
            GossipOutcome {
                metrics,
                bytes_series: self.bytes_series,
                max_flat_cell,
            },
        ))
    }
}

/// A shard, whoever held it last (a panicking shard ends the run anyway).
fn lock(s: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// A simulated node's host: the node's own machine, with the run's tunables.
/// Fair shares come from the simulator's model of gossiped allocations. With
/// more than one cell, the host knows its cell and decides itself when its
/// bidders cross to another ([`Host::handle_import`]).
pub(super) fn new_host(p: &Params, id: NodeId) -> Host<ChaCha8Rng> {
    let cell = (p.cells() > 1)
        .then(|| node_index(&id).map(|i| CellId(i / p.cell_size.max(1) as u32)))
        .flatten();
    Host::new(
        id,
        p.capacity(),
        PortSet::default(),
        Attributes::default(),
        String::new(),
        host::Config {
            generation: 0,
            auctioneer: p.auctioneer.clone(),
            bidder: p.bidder.clone(),
            shares_from_view: false,
            cell,
            spill_below: p.spill_below,
            ..host::Config::default()
        },
    )
}
