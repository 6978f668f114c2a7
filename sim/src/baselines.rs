//! The baselines, run on the identical workload and seed as the auction:
//!
//! - `central`: an omniscient central DRF scheduler with zero decision time
//!   (the ideal). Whenever a task arrives or one ends, it repeatedly takes the
//!   framework with the lowest weighted dominant share that has a waiting
//!   task, and places that task at once on the live node whose free CPU fits
//!   it most tightly (best fit), until nothing more fits.
//! - `random`: each task is sent to a uniformly random node and waits in that
//!   node's FIFO queue (Sparrow's "random" baseline).
//! - `sparrow`: batch sampling with late binding, d = 2: a job of m tasks
//!   places reservations in the queues of 2·m random nodes; a node whose
//!   reservation reaches the head with room asks the job's scheduler for a
//!   task (one round trip, holding the room meanwhile) and gets the next
//!   unlaunched task or a cancel.
//!
//! Queue-based baselines never overcommit by construction; the check runs
//! anyway. Node failures are applied to the auction only (the baselines
//! have no failure handling to compare).

use crate::auction::Params;
use crate::engine::{Micros, Queue, SEC, TraceHash};
use crate::invariants::Violation;
use crate::metrics::{Collector, FwSample, dominant_share};
use crate::workload::{Job, SERVICE_DURATION, TaskReq, Workload};
use agora_protocol::Resources;
use indicatif::ProgressBar;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Which baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Central DRF, zero decision time.
    Central,
    /// Random placement into worker queues.
    Random,
    /// Sparrow batch sampling with late binding.
    Sparrow,
}

/// Sparrow's probe ratio.
pub const SPARROW_D: usize = 2;

enum Ev {
    Arrival,
    Enqueue {
        node: u32,
        item: Item,
    },
    TaskEnd {
        node: u32,
        job: u64,
        idx: u32,
    },
    GetTask {
        node: u32,
        job: u64,
    },
    Reply {
        node: u32,
        job: u64,
        idx: Option<u32>,
    },
    Sample,
}

#[derive(Clone, Copy)]
enum Item {
    Task { job: u64, idx: u32 },
    Reservation { job: u64 },
}

struct BJob {
    arrival: Micros,
    fw: u32,
    tasks: Vec<TaskReq>,
    next: u32,
    remaining: u32,
    service: bool,
    need: Resources,
}

struct Worker {
    cap: Resources,
    free: Resources,
    queue: VecDeque<Item>,
    waiting_reply: bool,
}

struct Base {
    kind: Kind,
    p: Params,
    q: Queue<Ev>,
    rng: ChaCha8Rng,
    workers: Vec<Worker>,
    by_free: BTreeSet<(u64, u32)>,
    jobs: HashMap<u64, BJob>,
    pending: Vec<VecDeque<(u64, u32)>>,
    weights: Vec<u32>,
    homes: Vec<u32>,
    fw_used: Vec<Resources>,
    /// Resources of each framework's submitted tasks not yet placed.
    fw_pending: Vec<Resources>,
    workload: Workload,
    next_job: Option<Job>,
    total: Resources,
    c: Collector,
    hash: TraceHash,
    progress: Option<ProgressBar>,
}

/// Runs one baseline.
///
/// # Errors
/// A [`Violation`] if a node would be overcommitted.
pub fn run(
    kind: Kind,
    p: &Params,
    workload: Workload,
    progress: Option<ProgressBar>,
) -> Result<Collector, Violation> {
    let cap = p.capacity();
    let fws = workload.frameworks().to_vec();
    let mut w = workload;
    let next_job = w.next_job();
    let mut q = Queue::new();
    if let Some(j) = &next_job {
        q.push(j.arrival, Ev::Arrival);
    }
    q.push(SEC, Ev::Sample);
    let cells = p.cells();
    let mut b = Base {
        kind,
        q,
        rng: ChaCha8Rng::seed_from_u64(p.seed ^ 0x6261_7365),
        workers: (0..p.nodes)
            .map(|_| Worker {
                cap,
                free: cap,
                queue: VecDeque::new(),
                waiting_reply: false,
            })
            .collect(),
        by_free: (0..p.nodes as u32).map(|i| (cap.cpu_millis, i)).collect(),
        jobs: HashMap::new(),
        pending: vec![VecDeque::new(); fws.len()],
        weights: fws.iter().map(|f| f.weight).collect(),
        homes: fws
            .iter()
            .map(|f| ((f.cell % cells) * p.cell_size) as u32)
            .collect(),
        fw_used: vec![Resources::ZERO; fws.len()],
        fw_pending: vec![Resources::ZERO; fws.len()],
        workload: w,
        next_job,
        total: Resources {
            cpu_millis: cap.cpu_millis * p.nodes as u64,
            mem_mib: cap.mem_mib * p.nodes as u64,
            ..Resources::ZERO
        },
        c: Collector::default(),
        hash: TraceHash::default(),
        progress,
        p: p.clone(),
    };
    while let Some((now, ev)) = b.q.pop() {
        if now > b.p.duration {
            break;
        }
        b.hash.mix(now);
        b.handle(now, ev).map_err(|what| Violation {
            seed: b.p.seed,
            time: now,
            event: b.q.popped(),
            what,
        })?;
    }
    b.c.events = b.q.popped();
    b.c.trace_hash = b.hash.value();
    Ok(b.c)
}

impl Base {
    fn latency(&mut self, a: u32, z: u32) -> Micros {
        self.p.net.latency(&mut self.rng, a, z)
    }

    fn handle(&mut self, now: Micros, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::Arrival => self.arrival(now),
            Ev::Enqueue { node, item } => {
                self.hash.mix(u64::from(node));
                self.workers[node as usize].queue.push_back(item);
                self.try_start(now, node)
            }
            Ev::TaskEnd { node, job, idx } => self.task_end(now, node, job, idx),
            Ev::GetTask { node, job } => {
                let home = self.jobs.get(&job).map_or(0, |j| self.homes[j.fw as usize]);
                let idx = match self.jobs.get_mut(&job) {
                    Some(j) if (j.next as usize) < j.tasks.len() => {
                        j.next += 1;
                        Some(j.next - 1)
                    }
                    _ => None,
                };
                if idx.is_none() {
                    self.c.rejects += 1;
                }
                let d = self.latency(home, node);
                self.q.push(now + d, Ev::Reply { node, job, idx });
                Ok(())
            }
            Ev::Reply { node, job, idx } => {
                let need = self.jobs.get(&job).map_or(Resources::ZERO, |j| j.need);
                let w = &mut self.workers[node as usize];
                w.waiting_reply = false;
                w.free = w.free.saturating_add(&need);
                if let Some(i) = idx {
                    self.start(now, node, job, i)?;
                }
                self.try_start(now, node)
            }
            Ev::Sample => {
                self.q.push(now + SEC, Ev::Sample);
                if let Some(pb) = &self.progress {
                    pb.set_position(now / SEC);
                }
                let shares: Vec<FwSample> = (0..self.weights.len())
                    .map(|f| FwSample {
                        used: self.fw_used[f],
                        waiting: self.fw_pending[f],
                        weight: self.weights[f],
                    })
                    .collect();
                self.c.sample_fairness(now, &self.total, &shares);
                Ok(())
            }
        }
    }

    fn arrival(&mut self, now: Micros) -> Result<(), String> {
        let Some(job) = self.next_job.take() else {
            return Ok(());
        };
        self.next_job = self.workload.next_job();
        if let Some(j) = &self.next_job {
            self.q.push(j.arrival, Ev::Arrival);
        }
        let m = job.tasks.len() as u32;
        let fw = job.framework as u32;
        self.c.submitted += u64::from(m);
        let waiting = job.tasks.iter().fold(Resources::ZERO, |a, t| {
            a.saturating_add(&Resources::cpu_mem(t.cpu_millis, t.mem_mib))
        });
        self.fw_pending[fw as usize] = self.fw_pending[fw as usize].saturating_add(&waiting);
        let need = job.tasks.iter().fold(Resources::ZERO, |a, t| Resources {
            cpu_millis: a.cpu_millis.max(t.cpu_millis),
            mem_mib: a.mem_mib.max(t.mem_mib),
            ..Resources::ZERO
        });
        self.jobs.insert(
            job.id,
            BJob {
                arrival: now,
                fw,
                tasks: job.tasks.clone(),
                next: 0,
                remaining: m,
                service: job.service,
                need,
            },
        );
        let home = self.homes[fw as usize];
        let n = self.p.nodes as u32;
        match self.kind {
            Kind::Central => {
                self.c.bids += u64::from(m);
                for i in 0..m {
                    self.pending[fw as usize].push_back((job.id, i));
                }
                self.place_central(now)
            }
            Kind::Random => {
                self.c.bids += u64::from(m);
                if let Some(j) = self.jobs.get_mut(&job.id) {
                    j.next = m;
                }
                for i in 0..m {
                    let node = self.rng.random_range(0..n);
                    let d = self.latency(home, node);
                    self.q.push(
                        now + d,
                        Ev::Enqueue {
                            node,
                            item: Item::Task {
                                job: job.id,
                                idx: i,
                            },
                        },
                    );
                }
                Ok(())
            }
            Kind::Sparrow => {
                let probes = (SPARROW_D * m as usize).min(n as usize);
                self.c.bids += probes as u64;
                let mut chosen = BTreeSet::new();
                while chosen.len() < probes {
                    chosen.insert(self.rng.random_range(0..n));
                }
                let mut chosen: Vec<u32> = chosen.into_iter().collect();
                // BTreeSet order is by index; shuffle deterministically so the
                // probe order does not favour low indices.
                for i in (1..chosen.len()).rev() {
                    let j = self.rng.random_range(0..=i);
                    chosen.swap(i, j);
                }
                for node in chosen {
                    let d = self.latency(home, node);
                    self.q.push(
                        now + d,
                        Ev::Enqueue {
                            node,
                            item: Item::Reservation { job: job.id },
                        },
                    );
                }
                Ok(())
            }
        }
    }

    fn try_start(&mut self, now: Micros, node: u32) -> Result<(), String> {
        loop {
            let w = &self.workers[node as usize];
            if w.waiting_reply {
                return Ok(());
            }
            let Some(&head) = w.queue.front() else {
                return Ok(());
            };
            match head {
                Item::Task { job, idx } => {
                    let Some(req) = self.jobs.get(&job).map(|j| j.tasks[idx as usize]) else {
                        self.workers[node as usize].queue.pop_front();
                        continue;
                    };
                    if !Resources::cpu_mem(req.cpu_millis, req.mem_mib).fits_in(&w.free) {
                        return Ok(());
                    }
                    self.workers[node as usize].queue.pop_front();
                    self.start(now, node, job, idx)?;
                }
                Item::Reservation { job } => {
                    let Some(j) = self.jobs.get(&job) else {
                        self.workers[node as usize].queue.pop_front();
                        continue;
                    };
                    if j.next as usize >= j.tasks.len() {
                        // Every task launched: a cancel would come back; skip the trip.
                        self.workers[node as usize].queue.pop_front();
                        self.c.rejects += 1;
                        continue;
                    }
                    let need = j.need;
                    let home = self.homes[j.fw as usize];
                    if !need.fits_in(&w.free) {
                        return Ok(());
                    }
                    let w = &mut self.workers[node as usize];
                    w.queue.pop_front();
                    w.free = w
                        .free
                        .checked_sub(&need)
                        .ok_or("sparrow reservation overcommitted a node")?;
                    w.waiting_reply = true;
                    let d = self.latency(node, home);
                    self.q.push(now + d, Ev::GetTask { node, job });
                    return Ok(());
                }
            }
        }
    }

    fn start(&mut self, now: Micros, node: u32, job: u64, idx: u32) -> Result<(), String> {
        let Some(j) = self.jobs.get(&job) else {
            return Ok(());
        };
        let t = j.tasks[idx as usize];
        let fw = j.fw as usize;
        let res = Resources::cpu_mem(t.cpu_millis, t.mem_mib);
        let w = &mut self.workers[node as usize];
        let old_cpu = w.free.cpu_millis;
        w.free = w.free.checked_sub(&res).ok_or_else(|| {
            format!(
                "overcommit: node n{node:05} would run more than its capacity {:?}",
                w.cap
            )
        })?;
        let new_cpu = w.free.cpu_millis;
        if self.kind == Kind::Central {
            self.by_free.remove(&(old_cpu, node));
            self.by_free.insert((new_cpu, node));
        }
        self.c.placement.record(now - j.arrival);
        self.c.busy_add(now, res.cpu_millis);
        self.fw_used[fw] = self.fw_used[fw].saturating_add(&res);
        self.fw_pending[fw] = self.fw_pending[fw].saturating_sub(&res);
        self.hash.mix(u64::from(node) << 20 | u64::from(idx));
        if t.duration < SERVICE_DURATION {
            self.q
                .push(now + t.duration, Ev::TaskEnd { node, job, idx });
        }
        Ok(())
    }

    fn task_end(&mut self, now: Micros, node: u32, job: u64, idx: u32) -> Result<(), String> {
        let Some(j) = self.jobs.get_mut(&job) else {
            return Ok(());
        };
        let t = j.tasks[idx as usize];
        let res = Resources::cpu_mem(t.cpu_millis, t.mem_mib);
        let fw = j.fw as usize;
        j.remaining -= 1;
        if j.remaining == 0 {
            if !j.service {
                self.c.response.record(now - j.arrival);
            }
            self.jobs.remove(&job);
        }
        self.c.completed += 1;
        self.c.busy_sub(now, res.cpu_millis);
        self.fw_used[fw] = self.fw_used[fw].saturating_sub(&res);
        let w = &mut self.workers[node as usize];
        let old_cpu = w.free.cpu_millis;
        w.free = w.free.saturating_add(&res);
        if !w.free.fits_in(&w.cap) {
            return Err(format!("node n{node:05} freed more than it had"));
        }
        match self.kind {
            Kind::Central => {
                let new_cpu = self.workers[node as usize].free.cpu_millis;
                self.by_free.remove(&(old_cpu, node));
                self.by_free.insert((new_cpu, node));
                self.place_central(now)
            }
            _ => self.try_start(now, node),
        }
    }

    fn place_central(&mut self, now: Micros) -> Result<(), String> {
        let f_n = self.pending.len();
        let mut blocked = vec![false; f_n];
        loop {
            let mut best: Option<(f64, usize)> = None;
            for (f, is_blocked) in blocked.iter().enumerate() {
                if *is_blocked || self.pending[f].is_empty() {
                    continue;
                }
                let u = self.fw_used[f];
                let s = dominant_share(
                    (u.cpu_millis, u.mem_mib),
                    (self.total.cpu_millis, self.total.mem_mib),
                    self.weights[f],
                );
                if best.is_none_or(|(bs, _)| s < bs) {
                    best = Some((s, f));
                }
            }
            let Some((_, f)) = best else {
                return Ok(());
            };
            let Some(&(job, idx)) = self.pending[f].front() else {
                continue;
            };
            let Some(t) = self.jobs.get(&job).map(|j| j.tasks[idx as usize]) else {
                self.pending[f].pop_front();
                continue;
            };
            let node = self
                .by_free
                .range((t.cpu_millis, 0)..)
                .find(|(_, n)| self.workers[*n as usize].free.mem_mib >= t.mem_mib)
                .map(|(_, n)| *n);
            match node {
                Some(n) => {
                    self.pending[f].pop_front();
                    self.start(now, n, job, idx)?;
                }
                None => blocked[f] = true,
            }
        }
    }
}
