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
//! host's [`host::Event::ImportCell`] is answered at once with the cell's
//! nodes as they are (the node asks one of the cell's gateways). When to
//! cross is the host's decision, as on the node.
//!
//! The executor is simulated: a launched task reports `Running` at once and
//! `Finished` after its duration. Invariants are checked after every event
//! (see [`crate::invariants`]); a violation stops the run.

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

mod cells;
mod lifecycle;
mod params;
mod pump;

pub use params::{Params, home_node, node_id};
use params::{cell_range, node_index};

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

enum Ev {
    Arrival,
    Deliver {
        to: u32,
        from: u32,
        msg: Box<PeerMessage>,
    },
    NodeTimer(u32),
    TaskEnd {
        node: u32,
        epoch: u32,
        task: TaskId,
    },
    Gossip(u32),
    FedGossip(u32),
    Sample,
    Crash {
        node: u32,
        rejoin_at: Option<Micros>,
    },
    Rejoin(u32),
    Fault,
}

struct Running {
    res: Resources,
    fw: u32,
}

struct SimNode {
    id: NodeId,
    host: Host<ChaCha8Rng>,
    up: bool,
    epoch: u32,
    timer: Micros,
    exec: HashMap<TaskId, Running>,
    exec_used: Resources,
    cell: u32,
    local: u32,
    history: VecDeque<(u32, u64, Resources)>,
    bidders: Vec<u32>,
}

/// One framework: its bidder lives in its home node's host.
struct SimBidder {
    id: FrameworkId,
    fw: u32,
    home: u32,
}

struct TaskInfo {
    job: u64,
    duration: Micros,
    placed: bool,
    res: Resources,
}

struct JobState {
    arrival: Micros,
    remaining: u32,
}

/// The auction simulation.
pub struct AuctionSim {
    p: Params,
    q: Queue<Ev>,
    rng: ChaCha8Rng,
    nodes: Vec<SimNode>,
    bidders: Vec<SimBidder>,
    fw_index: HashMap<String, u32>,
    fws: Vec<FrameworkDef>,
    fw_used: Vec<Resources>,
    /// Resources of each framework's submitted tasks not yet placed.
    fw_pending: Vec<Resources>,
    tasks: HashMap<TaskId, TaskInfo>,
    jobs: HashMap<u64, JobState>,
    lost_pending: HashMap<TaskId, Micros>,
    workload: Workload,
    next_job: Option<Job>,
    cells: Vec<Group>,
    fed: Group,
    fed_cell: Vec<u32>,
    aggregates: BTreeMap<CellId, CellAggregate>,
    gmetrics: gossip::Metrics,
    learned: Vec<Learned>,
    bytes_series: Vec<(f64, f64)>,
    last_bytes: u64,
    /// Everything measured.
    pub c: Collector,
    hash: TraceHash,
    progress: Option<ProgressBar>,
}

impl AuctionSim {
    /// Builds the cluster, its cells and the frameworks' bidders.
    pub fn new(p: Params, workload: Workload, progress: Option<ProgressBar>) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let cells_n = p.cells();
        let fws = workload.frameworks().to_vec();
        let cap = p.capacity();
        let mut nodes: Vec<SimNode> = (0..p.nodes as u32)
            .map(|i| {
                let id = node_id(i);
                let cell = (i as usize / p.cell_size.max(1)) as u32;
                SimNode {
                    host: new_host(&p, id.clone()),
                    id,
                    up: true,
                    epoch: 0,
                    timer: Micros::MAX,
                    exec: HashMap::new(),
                    exec_used: Resources::ZERO,
                    cell,
                    local: (i as usize % p.cell_size.max(1)) as u32,
                    history: VecDeque::from([(5, 1, cap)]),
                    bidders: Vec::new(),
                }
            })
            .collect();
        let mut bidders = Vec::new();
        let mut fw_index = HashMap::new();
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
            nodes[home as usize].bidders.push(f as u32);
            bidders.push(SimBidder {
                id: fw_id,
                fw: f as u32,
                home,
            });
        }
        let id_len = 6;
        let mut cells = Vec::new();
        for c in 0..cells_n {
            let lo = c * p.cell_size;
            let hi = ((c + 1) * p.cell_size).min(p.nodes);
            let members: Vec<u32> = (lo as u32..hi as u32).collect();
            let watched: Vec<bool> = members
                .iter()
                .map(|&i| !nodes[i as usize].bidders.is_empty())
                .collect();
            cells.push(Group::new(
                gossip::Config::cell(p.gossip_interval, id_len),
                members,
                &watched,
                4,
            ));
        }
        let mut fed_members = Vec::new();
        let mut fed_cell = Vec::new();
        for c in 0..cells_n {
            let lo = c * p.cell_size;
            let hi = ((c + 1) * p.cell_size).min(p.nodes);
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
        let mut q = Queue::new();
        let mut wl = workload;
        let next_job = wl.next_job();
        if let Some(j) = &next_job {
            q.push(j.arrival, Ev::Arrival);
        }
        for i in 0..p.nodes as u32 {
            q.push(rng.random_range(0..p.gossip_interval), Ev::Gossip(i));
        }
        for i in 0..fed.members().len() as u32 {
            q.push(rng.random_range(0..p.gossip_interval), Ev::FedGossip(i));
        }
        q.push(SEC, Ev::Sample);
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
                    q.push(
                        at,
                        Ev::Crash {
                            node: n,
                            rejoin_at: Some(at + p.rejoin_after),
                        },
                    );
                }
            }
        }
        for c in &p.crashes {
            q.push(
                c.at,
                Ev::Crash {
                    node: c.node,
                    rejoin_at: c.rejoin,
                },
            );
        }
        if let Some(f) = &p.fault {
            q.push(f.at, Ev::Fault);
        }
        let n_fw = fws.len();
        AuctionSim {
            rng,
            q,
            nodes,
            bidders,
            fw_index,
            fws,
            fw_used: vec![Resources::ZERO; n_fw],
            fw_pending: vec![Resources::ZERO; n_fw],
            tasks: HashMap::new(),
            jobs: HashMap::new(),
            lost_pending: HashMap::new(),
            workload: wl,
            next_job,
            cells,
            fed,
            fed_cell,
            aggregates: BTreeMap::new(),
            gmetrics: gossip::Metrics::default(),
            learned: Vec::new(),
            bytes_series: Vec::new(),
            last_bytes: 0,
            c: Collector::default(),
            hash: TraceHash::default(),
            progress,
            p,
        }
    }

    /// Runs to the end.
    ///
    /// # Errors
    /// The first invariant violation, with the seed and the event.
    pub fn run(mut self) -> Result<(Collector, GossipOutcome), Violation> {
        while let Some((now, ev)) = self.q.pop() {
            if now > self.p.duration {
                break;
            }
            let what = self.handle(now, ev);
            self.hash.mix(now);
            self.hash.mix(what.0);
            if let Err(v) = what.1 {
                return Err(Violation {
                    seed: self.p.seed,
                    time: now,
                    event: self.q.popped(),
                    ..v
                });
            }
        }
        let end = self.p.duration;
        let old = self
            .lost_pending
            .values()
            .filter(|t| end.saturating_sub(**t) > invariants::LOST_REPORT_BOUND)
            .count();
        self.c.lost_unreported = old as u64;
        for b in &self.bidders {
            if let Some(bidder) = self.nodes[b.home as usize].host.bidder(&b.id) {
                let s = bidder.stats();
                self.c.bids += s.bids_sent;
                self.c.rejects += s.bids_rejected;
            }
        }
        self.c.events = self.q.popped();
        self.c.trace_hash = self.hash.value();
        let max_flat_cell = self.cells[0].config().max_flat_members();
        Ok((
            self.c,
            GossipOutcome {
                metrics: self.gmetrics,
                bytes_series: self.bytes_series,
                max_flat_cell,
            },
        ))
    }

    fn handle(&mut self, now: Micros, ev: Ev) -> (u64, Result<(), Violation>) {
        match ev {
            Ev::Arrival => (1, self.arrival(now)),
            Ev::Deliver { to, from, msg } => {
                (2 + u64::from(to) * 16, self.deliver(now, to, from, *msg))
            }
            Ev::NodeTimer(n) => {
                if self.nodes[n as usize].timer != now || !self.nodes[n as usize].up {
                    return (3, Ok(()));
                }
                self.nodes[n as usize].timer = Micros::MAX;
                self.nodes[n as usize]
                    .host
                    .handle_timeout(Instant::from_micros(now));
                (4 + u64::from(n) * 16, self.pump_node(now, n))
            }
            Ev::TaskEnd { node, epoch, task } => (7, self.task_end(now, node, epoch, task)),
            Ev::Gossip(n) => (8, self.gossip_round(now, n)),
            Ev::FedGossip(i) => {
                self.fed_round(now, i);
                (9, Ok(()))
            }
            Ev::Sample => (10, self.sample(now)),
            Ev::Crash { node, rejoin_at } => (11, self.crash(now, node, rejoin_at)),
            Ev::Rejoin(n) => (12, self.rejoin(now, n)),
            Ev::Fault => {
                if let Some(f) = self.p.fault.clone() {
                    let node = &mut self.nodes[f.node as usize];
                    node.exec_used = node.exec_used.saturating_add(&f.extra);
                    return (13, self.check_node(f.node));
                }
                (13, Ok(()))
            }
        }
    }

    fn arrival(&mut self, now: Micros) -> Result<(), Violation> {
        let Some(job) = self.next_job.take() else {
            return Ok(());
        };
        self.next_job = self.workload.next_job();
        if let Some(j) = &self.next_job {
            self.q.push(j.arrival, Ev::Arrival);
        }
        let b = job.framework as u32;
        if !job.service {
            self.jobs.insert(
                job.id,
                JobState {
                    arrival: now,
                    remaining: job.tasks.len() as u32,
                },
            );
        }
        let name = format!("j{}", job.id);
        let home = self.bidders[b as usize].home;
        let fw_id = self.bidders[b as usize].id.clone();
        for t in &job.tasks {
            let res = Resources::cpu_mem(t.cpu_millis, t.mem_mib);
            let spec = TaskSpec::new(name.clone(), Command::Argv(vec!["sim".into()]), res);
            let at = Instant::from_micros(now);
            match self.nodes[home as usize]
                .host
                .submit(at, &fw_id, vec![spec])
            {
                Ok(ids) => {
                    self.c.submitted += 1;
                    let fw = self.bidders[b as usize].fw as usize;
                    self.fw_pending[fw] = self.fw_pending[fw].saturating_add(&res);
                    for task_id in ids {
                        self.tasks.insert(
                            task_id,
                            TaskInfo {
                                job: if job.service { u64::MAX } else { job.id },
                                duration: t.duration,
                                placed: false,
                                res,
                            },
                        );
                    }
                }
                Err(_) => {
                    self.c.submitted += 1;
                    if let Some(js) = self.jobs.get_mut(&job.id) {
                        js.remaining = js.remaining.saturating_sub(1);
                    }
                }
            }
        }
        self.pump_node(now, home)
    }
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
