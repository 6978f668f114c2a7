//! One cell's part of the auction run: its nodes' hosts, their executors,
//! the cell's gossip, and an event queue of its own.
//!
//! A shard runs a window of simulated time on its own (see the module doc
//! of [`super`]): it touches only its own state, and what it sends another
//! shard (a message to one of its nodes, the end of a task of a job homed
//! there) goes into its outbox, at least the lookahead in the future, for
//! the coordinator to deliver after the window. A cell import it asks for
//! is answered by the coordinator at the window's end.

use super::*;

/// An event of one shard.
pub(super) enum Ev {
    /// A job arrives at its framework's home (here).
    Arrival(Box<Job>),
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
        job: u64,
    },
    /// A task of job `job` (homed here) ended at `at` on another shard.
    TaskDone {
        job: u64,
        at: Micros,
    },
    /// The answer to a cell import asked for by home `node`.
    Import {
        node: u32,
        cell: u32,
        infos: Vec<NodeInfo>,
    },
    Gossip(u32),
}

pub(super) struct Running {
    pub(super) res: Resources,
    pub(super) fw: u32,
}

pub(super) struct SimNode {
    pub(super) id: NodeId,
    pub(super) host: Host<ChaCha8Rng>,
    pub(super) up: bool,
    pub(super) epoch: u32,
    pub(super) timer: Micros,
    pub(super) exec: HashMap<TaskId, Running>,
    pub(super) exec_used: Resources,
    pub(super) local: u32,
    pub(super) history: VecDeque<(u32, u64, Resources)>,
    pub(super) bidders: Vec<u32>,
}

pub(super) struct TaskInfo {
    job: u64,
    placed: bool,
    res: Resources,
}

pub(super) struct JobState {
    arrival: Micros,
    remaining: u32,
}

/// One cell of the auction run.
pub(super) struct Shard {
    pub(super) cell: u32,
    /// Global index of the first node.
    pub(super) lo: u32,
    pub(super) nodes: Vec<SimNode>,
    pub(super) group: Group,
    pub(super) q: Queue<Ev>,
    pub(super) rng: ChaCha8Rng,
    pub(super) gmetrics: gossip::Metrics,
    learned: Vec<Learned>,
    /// What happened here: placements and tasks of this cell's nodes, jobs
    /// of the frameworks homed here.
    pub(super) c: Collector,
    /// What tasks running on this cell's nodes hold, per framework.
    pub(super) fw_used: Vec<Resources>,
    /// Submitted, not yet placed, per framework homed here.
    pub(super) fw_pending: Vec<Resources>,
    tasks: HashMap<TaskId, TaskInfo>,
    jobs: HashMap<u64, JobState>,
    /// Tasks of frameworks homed here lost with a crashed node, not yet
    /// reported to their framework.
    pub(super) lost_pending: HashMap<TaskId, Micros>,
    pub(super) hash: TraceHash,
    /// Events for other shards: (time, shard, event).
    pub(super) out: Vec<(Micros, u32, Ev)>,
    /// Cell imports asked for: (home node, cell).
    pub(super) imports: Vec<(u32, u32)>,
    /// The first invariant violation; the shard stops there.
    pub(super) error: Option<Violation>,
}

impl Shard {
    pub(super) fn new(ctx: &Ctx, cell: u32, nodes: Vec<SimNode>, group: Group, seed: u64) -> Self {
        let n_fw = ctx.bidders.len();
        let lo = cell_range(&ctx.p, cell as usize).0 as u32;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut q = Queue::new();
        for i in 0..nodes.len() as u32 {
            q.push(
                rng.random_range(0..ctx.p.gossip_interval),
                Ev::Gossip(lo + i),
            );
        }
        Shard {
            cell,
            lo,
            nodes,
            group,
            q,
            rng,
            gmetrics: gossip::Metrics::default(),
            learned: Vec::new(),
            c: Collector::default(),
            fw_used: vec![Resources::ZERO; n_fw],
            fw_pending: vec![Resources::ZERO; n_fw],
            tasks: HashMap::new(),
            jobs: HashMap::new(),
            lost_pending: HashMap::new(),
            hash: TraceHash::default(),
            out: Vec::new(),
            imports: Vec::new(),
            error: None,
        }
    }

    pub(super) fn node(&self, n: u32) -> &SimNode {
        &self.nodes[(n - self.lo) as usize]
    }

    pub(super) fn node_mut(&mut self, n: u32) -> &mut SimNode {
        &mut self.nodes[(n - self.lo) as usize]
    }

    fn owns(&self, n: u32) -> bool {
        n >= self.lo && ((n - self.lo) as usize) < self.nodes.len()
    }

    /// Processes every event before `end` (exclusive).
    pub(super) fn run_until(&mut self, ctx: &Ctx, end: Micros) {
        if self.error.is_some() {
            return;
        }
        while let Some((now, ev)) = self.q.pop_before(end) {
            let what = self.handle(ctx, now, ev);
            self.hash.mix(now);
            self.hash.mix(what.0);
            if let Err(v) = what.1 {
                self.error = Some(Violation {
                    seed: ctx.p.seed,
                    time: now,
                    event: self.q.popped(),
                    ..v
                });
                return;
            }
        }
    }

    fn handle(&mut self, ctx: &Ctx, now: Micros, ev: Ev) -> (u64, Result<(), Violation>) {
        match ev {
            Ev::Arrival(job) => (1, self.arrival(ctx, now, *job)),
            Ev::Deliver { to, from, msg } => (
                2 + u64::from(to) * 16,
                self.deliver(ctx, now, to, from, *msg),
            ),
            Ev::NodeTimer(n) => {
                let node = self.node_mut(n);
                if node.timer != now || !node.up {
                    return (3, Ok(()));
                }
                node.timer = Micros::MAX;
                node.host.handle_timeout(Instant::from_micros(now));
                (4 + u64::from(n) * 16, self.pump_node(ctx, now, n))
            }
            Ev::TaskEnd {
                node,
                epoch,
                task,
                job,
            } => (7, self.task_end(ctx, now, node, epoch, task, job)),
            Ev::TaskDone { job, at } => {
                self.job_task_done(job, at);
                (5, Ok(()))
            }
            Ev::Import { node, cell, infos } => {
                if !self.node(node).up {
                    return (6, Ok(()));
                }
                self.node_mut(node).host.handle_import(
                    Instant::from_micros(now),
                    CellId(cell),
                    infos,
                );
                (6 + u64::from(node) * 16, self.pump_node(ctx, now, node))
            }
            Ev::Gossip(n) => (8, self.gossip_round(ctx, now, n)),
        }
    }

    fn arrival(&mut self, ctx: &Ctx, now: Micros, job: Job) -> Result<(), Violation> {
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
        let home = ctx.bidders[b as usize].home;
        let fw_id = ctx.bidders[b as usize].id.clone();
        let fw = ctx.bidders[b as usize].fw as usize;
        for t in &job.tasks {
            let res = Resources::cpu_mem(t.cpu_millis, t.mem_mib);
            // The simulated executor reads the task's length from its
            // command, as a real one would run `sleep`.
            let argv = vec!["sim".into(), t.duration.to_string()];
            let spec = TaskSpec::new(name.clone(), Command::Argv(argv), res);
            let at = Instant::from_micros(now);
            match self.node_mut(home).host.submit(at, &fw_id, vec![spec]) {
                Ok(ids) => {
                    self.c.submitted += 1;
                    self.fw_pending[fw] = self.fw_pending[fw].saturating_add(&res);
                    for task_id in ids {
                        self.tasks.insert(
                            task_id,
                            TaskInfo {
                                job: if job.service { u64::MAX } else { job.id },
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
        self.pump_node(ctx, now, home)
    }

    fn send(&mut self, ctx: &Ctx, now: Micros, from: u32, to: u32, msg: PeerMessage) {
        if let Some(d) = ctx.p.net.delay(&mut self.rng, now, from, to) {
            let ev = Ev::Deliver {
                to,
                from,
                msg: Box::new(msg),
            };
            if self.owns(to) {
                self.q.push(now + d, ev);
            } else {
                let at = now + d.max(ctx.lookahead);
                self.out.push((at, ctx.shard_of(to), ev));
            }
        }
    }

    fn deliver(
        &mut self,
        ctx: &Ctx,
        now: Micros,
        to: u32,
        from: u32,
        msg: PeerMessage,
    ) -> Result<(), Violation> {
        if !self.node(to).up {
            return Ok(());
        }
        let from_id = ctx.ids[from as usize].clone();
        let at = Instant::from_micros(now);
        // The host routes it: to its auctioneer, or to the bidder whose bid
        // or task it answers. Log reads and listings never travel here.
        let _ = self.node_mut(to).host.handle_peer(at, from_id, msg);
        self.pump_node(ctx, now, to)
    }

    /// Carries out what node `n`'s host asked for: messages onto the
    /// network, launches and kills on the modelled executor (which reports
    /// back at once), events into the measurements. Then re-arms the node's
    /// timer and checks the invariants.
    pub(super) fn pump_node(&mut self, ctx: &Ctx, now: Micros, n: u32) -> Result<(), Violation> {
        loop {
            let mut moved = false;
            while let Some(t) = self.node_mut(n).host.poll_transmit() {
                moved = true;
                if let Some(to) = node_index(&t.to) {
                    self.send(ctx, now, n, to, t.msg);
                }
            }
            while let Some(e) = self.node_mut(n).host.poll_exec() {
                moved = true;
                self.exec(ctx, now, n, e)?;
            }
            while let Some(ev) = self.node_mut(n).host.poll_event() {
                moved = true;
                self.on_host_event(ctx, now, n, ev);
            }
            if !moved {
                break;
            }
        }
        let node = self.node_mut(n);
        if let Some(t) = node.host.poll_timeout() {
            let t = t.as_micros().max(now);
            if t < node.timer || node.timer < now {
                node.timer = t;
                self.q.push(t, Ev::NodeTimer(n));
            }
        }
        self.check_node(n)?;
        let node = self.node(n);
        for &b in &node.bidders {
            if let Some(bidder) = node.host.bidder(&ctx.bidders[b as usize].id) {
                invariants::check_bidder(bidder)?;
            }
        }
        Ok(())
    }

    fn exec(&mut self, ctx: &Ctx, now: Micros, n: u32, e: host::Exec) -> Result<(), Violation> {
        let at = Instant::from_micros(now);
        match e {
            host::Exec::Launch(l) => {
                let fw = ctx.fw_index.get(l.framework.as_str()).copied().unwrap_or(0);
                let res = l.spec.resources;
                if ctx.fw_home_cell.get(fw as usize) != Some(&self.cell) {
                    self.c.cross_cell += 1;
                }
                let dur = match &l.spec.command {
                    Command::Argv(a) => a.get(1).and_then(|d| d.parse().ok()),
                    _ => None,
                }
                .unwrap_or(SERVICE_DURATION);
                let job = l
                    .spec
                    .name
                    .get(1..)
                    .and_then(|j| j.parse().ok())
                    .unwrap_or(u64::MAX);
                let node = self.node_mut(n);
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
                if dur < SERVICE_DURATION {
                    self.q.push(
                        now + dur,
                        Ev::TaskEnd {
                            node: n,
                            epoch,
                            task: l.task_id,
                            job,
                        },
                    );
                }
                self.check_node(n)
            }
            host::Exec::Kill { task_id, .. } => {
                let node = self.node_mut(n);
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

    fn on_host_event(&mut self, ctx: &Ctx, now: Micros, n: u32, ev: host::Event) {
        match ev {
            host::Event::LedgerChanged { free, version } => {
                let l = self.node(n).local as usize;
                let gv = self.group.bump(l, now);
                let node = self.node_mut(n);
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
                    if let Some(&fw) = ctx.fw_index.get(framework.as_str()) {
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
                            && let Some(&fw) = ctx.fw_index.get(framework.as_str())
                        {
                            let fw = fw as usize;
                            self.fw_pending[fw] = self.fw_pending[fw].saturating_sub(&t.res);
                        }
                        if status.state != TaskState::Finished {
                            self.job_task_failed(t.job);
                        }
                    }
                }
            }
            host::Event::ImportCell(c) => self.imports.push((n, c.0)),
            host::Event::StatusUndeliverable { .. }
            | host::Event::NodeAlive(_)
            | host::Event::NodeDead(_)
            | host::Event::NodeRevived { .. }
            | host::Event::DropCell(_) => {}
        }
    }

    pub(super) fn check_node(&mut self, n: u32) -> Result<(), Violation> {
        let node = self.node(n);
        let a = node.host.auctioneer();
        if let Err(v) = invariants::check_node(&node.id, &a.capacity(), &a.used(), &node.exec_used)
        {
            self.c.overcommit += 1;
            return Err(v);
        }
        Ok(())
    }

    fn task_end(
        &mut self,
        ctx: &Ctx,
        now: Micros,
        n: u32,
        epoch: u32,
        task: TaskId,
        job: u64,
    ) -> Result<(), Violation> {
        let node = self.node_mut(n);
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
            ..TaskStatus::new(task, TaskState::Finished, Some(id))
        };
        node.host
            .handle_exec(Instant::from_micros(now), status, None);
        self.c.busy_sub(now, r.res.cpu_millis);
        self.fw_used[r.fw as usize] = self.fw_used[r.fw as usize].saturating_sub(&r.res);
        self.c.completed += 1;
        let home = ctx
            .bidders
            .get(r.fw as usize)
            .map_or(self.cell, |b| ctx.shard_of(b.home));
        if home == self.cell {
            self.job_task_done(job, now);
        } else {
            self.out
                .push((now + ctx.lookahead, home, Ev::TaskDone { job, at: now }));
        }
        self.pump_node(ctx, now, n)
    }

    /// A task of `job` finished at `at`: the job's response time when it
    /// was the last.
    fn job_task_done(&mut self, job: u64, at: Micros) {
        if let Some(js) = self.jobs.get_mut(&job) {
            js.remaining = js.remaining.saturating_sub(1);
            if js.remaining == 0 {
                self.c.response.record(at - js.arrival);
                self.jobs.remove(&job);
            }
        }
    }

    /// A task of `job` ended without finishing: the job no longer waits
    /// for it, and gets no response time.
    fn job_task_failed(&mut self, job: u64) {
        if let Some(js) = self.jobs.get_mut(&job) {
            js.remaining = js.remaining.saturating_sub(1);
            if js.remaining == 0 {
                self.jobs.remove(&job);
            }
        }
    }

    fn gossip_round(&mut self, ctx: &Ctx, now: Micros, n: u32) -> Result<(), Violation> {
        self.q.push(now + ctx.p.gossip_interval, Ev::Gossip(n));
        let node = self.node(n);
        if !node.up {
            return Ok(());
        }
        let l = node.local as usize;
        self.learned.clear();
        let mut learned = std::mem::take(&mut self.learned);
        self.group.round(
            l,
            now,
            &mut self.rng,
            &ctx.p.net,
            &mut self.gmetrics,
            &mut learned,
        );
        let mut result = Ok(());
        for ev in learned.drain(..) {
            if let Err(v) = self.on_learned(ctx, now, ev) {
                result = Err(v);
                break;
            }
        }
        self.learned = learned;
        result
    }

    fn on_learned(&mut self, ctx: &Ctx, now: Micros, ev: Learned) -> Result<(), Violation> {
        match ev {
            Learned::State {
                observer,
                subject,
                version,
            } => {
                let Some(&(_, lv, free)) = self
                    .node(subject)
                    .history
                    .iter()
                    .rev()
                    .find(|(gv, _, _)| *gv <= version)
                else {
                    return Ok(());
                };
                let sid = self.node(subject).id.clone();
                if !self.node(observer).bidders.is_empty() {
                    self.node_mut(observer).host.handle_membership(
                        Instant::from_micros(now),
                        Change::Free {
                            node: sid,
                            free,
                            version: lv,
                        },
                    );
                    return self.pump_node(ctx, now, observer);
                }
                Ok(())
            }
            Learned::Alive {
                observer,
                subject,
                alive,
            } => {
                let sid = self.node(subject).id.clone();
                if !self.node(observer).bidders.is_empty() {
                    self.node_mut(observer).host.handle_membership(
                        Instant::from_micros(now),
                        Change::Alive { node: sid, alive },
                    );
                    return self.pump_node(ctx, now, observer);
                }
                Ok(())
            }
        }
    }

    /// This cell's nodes as a gateway would describe them now.
    pub(super) fn infos(&self, with_version: bool) -> Vec<NodeInfo> {
        self.nodes
            .iter()
            .map(|n| {
                let a = n.host.auctioneer();
                let mut info = NodeInfo::new(n.id.clone(), a.capacity(), Attributes::default());
                info.free = a.free();
                if with_version {
                    info.version = a.version();
                }
                info.alive = n.up;
                info
            })
            .collect()
    }
}
