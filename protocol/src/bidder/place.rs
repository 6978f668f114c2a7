//! Placing a task: choosing candidates from the view (sampled, filtered by
//! fit and constraints, ranked, drawn from the best few), sending the bids,
//! and backing off when nothing fits. Also the per-job placement counts that
//! `unique` and `spread` constraints read.

use super::*;

impl<R: Rng> Bidder<R> {
    pub(super) fn job_add(&mut self, task_id: &TaskId, node: &NodeId) {
        if let Some(t) = self.tasks.get(task_id) {
            let nodes = match self.job_nodes.get_mut(&t.spec.name) {
                Some(nodes) => nodes,
                None => self.job_nodes.entry(t.spec.name.clone()).or_default(),
            };
            *nodes.entry(node.clone()).or_insert(0) += 1;
        }
    }

    pub(super) fn job_sub(&mut self, task_id: &TaskId, node: &NodeId) {
        let Some(t) = self.tasks.get(task_id) else {
            return;
        };
        if let Some(nodes) = self.job_nodes.get_mut(&t.spec.name) {
            if let Some(c) = nodes.get_mut(node) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    nodes.remove(node);
                }
            }
            if nodes.is_empty() {
                self.job_nodes.remove(&t.spec.name);
            }
        }
    }

    pub(super) fn placed_values(
        &self,
        name: &str,
        constraints: &[Constraint],
        view: &ClusterView,
    ) -> Placed {
        let mut placed = Placed::new();
        let keys: Vec<&str> = constraints
            .iter()
            .filter(|c| matches!(c, Constraint::Unique { .. } | Constraint::Spread { .. }))
            .map(Constraint::key)
            .collect();
        if keys.is_empty() {
            return placed;
        }
        for (node, count) in self.job_nodes.get(name).into_iter().flatten() {
            let Some(info) = view.get(node) else { continue };
            for key in &keys {
                if let Some(v) = info.attrs.get(key) {
                    *placed
                        .entry((*key).to_string())
                        .or_default()
                        .entry(v.to_string())
                        .or_insert(0) += count;
                }
            }
        }
        placed
    }

    pub(super) fn try_place(&mut self, now: Instant, task_id: &TaskId, view: &mut ClusterView) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        if task.phase != Phase::Waiting || task.next_try > now {
            return;
        }
        if now >= task.deadline {
            let reason = explain(
                &task.spec,
                task.last_reject.as_deref(),
                view,
                task.deadline - task.submitted,
            );
            self.stats.gave_up += 1;
            self.end(task_id, TaskState::Failed, None, Some(reason));
            return;
        }
        let spec = task.spec.clone();
        let pinned = task.pinned.clone();
        let chosen: Vec<NodeId> = match &pinned {
            Some(node) => match view.get(node) {
                Some(info) if info.alive => vec![node.clone()],
                _ => {
                    self.end(
                        task_id,
                        TaskState::Failed,
                        None,
                        Some(format!("node {node} is not alive in this node's view")),
                    );
                    return;
                }
            },
            None => self.choose(&spec, view),
        };
        if chosen.is_empty() {
            if let Some(t) = self.tasks.get_mut(task_id) {
                t.last_reject = None;
            }
            let delay = self.backoff(task_id);
            self.retry_later(now, task_id, delay);
            return;
        }
        let mut open = BTreeSet::new();
        for node in chosen {
            let bid_id = BidId(self.next_bid);
            self.next_bid += 1;
            self.stats.bids_sent += 1;
            let expires = now + self.config.bid_timeout;
            self.bids.insert(
                bid_id,
                OutBid {
                    task_id: task_id.clone(),
                    node: node.clone(),
                    withdrawn: false,
                    expires,
                },
            );
            self.job_add(task_id, &node);
            open.insert(bid_id);
            view.note_award(&node, &spec.resources);
            self.timers.insert((expires, Timer::BidTimeout(bid_id)));
            self.transmits.push_back(Transmit {
                to: node,
                msg: PeerMessage::Bid(Bid {
                    bid_id,
                    task_id: task_id.clone(),
                    framework: self.framework.clone(),
                    weight: self.weight,
                    spec: Box::new(spec.clone()),
                    price: 0,
                    wait_ms: millis_u32(self.config.bid_wait),
                }),
            });
        }
        if let Some(t) = self.tasks.get_mut(task_id) {
            t.attempts += 1;
            t.phase = Phase::Bidding { open };
        }
    }

    /// Candidates: alive, fitting, admitted; ranked; `candidates` drawn from the best few.
    pub(super) fn choose(&mut self, spec: &TaskSpec, view: &ClusterView) -> Vec<NodeId> {
        let placed = self.placed_values(&spec.name, &spec.constraints, view);
        let sample = view.sample(&mut self.rng, self.config.scan_limit);
        // The last key is random: nodes that tie (every full node, or many
        // identical empty ones) are drawn evenly instead of lowest id first,
        // which would herd every bidder onto the same few nodes.
        let mut scored: Vec<(bool, u32, f64, u64, &NodeInfo)> = sample
            .into_iter()
            .filter(|n| n.alive && spec.resources.fits_in(&n.total))
            .filter(|n| admits_all(&spec.constraints, &n.attrs, &placed))
            .map(|n| {
                let full = !spec.resources.fits_in(&n.free);
                let penalty: u32 = spec
                    .constraints
                    .iter()
                    .map(|c| c.spread_penalty(&n.attrs, &placed))
                    .sum();
                let left = n
                    .free
                    .saturating_sub(&spec.resources)
                    .dominant_share(&n.total);
                // A full node's fit says nothing about when it will have
                // room: full nodes only differ by the random key.
                let score = match (full, self.config.score) {
                    (true, _) => 0.0,
                    (false, Score::BestFit) => left,
                    (false, Score::Spread) => -left,
                };
                (full, penalty, score, 0, n)
            })
            .collect();
        for s in &mut scored {
            s.3 = self.rng.next_u64();
        }
        // Nodes with room now first; among full ones, a bid waits for room.
        scored.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.1.cmp(&b.1))
                .then(a.2.total_cmp(&b.2))
                .then(a.3.cmp(&b.3))
        });
        scored.truncate(self.config.best_of.max(self.config.candidates));
        let mut out = Vec::new();
        while out.len() < self.config.candidates && !scored.is_empty() {
            let i = self.rng.random_range(0..scored.len());
            out.push(scored.swap_remove(i).4.id.clone());
        }
        out
    }

    pub(super) fn backoff(&mut self, task_id: &TaskId) -> Duration {
        let attempts = self.tasks.get(task_id).map_or(0, |t| t.attempts);
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << attempts.min(16))
            .min(self.config.backoff_max);
        // jitter in [50%, 100%)
        let micros = u64::try_from(exp.as_micros()).unwrap_or(u64::MAX);
        let low = micros / 2;
        Duration::from_micros(low + self.rng.random_range(0..=micros - low))
    }

    pub(super) fn retry_later(&mut self, now: Instant, task_id: &TaskId, delay: Duration) {
        if let Some(t) = self.tasks.get_mut(task_id) {
            t.phase = Phase::Waiting;
            t.state = TaskState::Staging;
            t.node = None;
            let at = (now + delay).min(t.deadline);
            t.next_try = at;
            self.timers.insert((at, Timer::Retry(task_id.clone())));
        }
    }
}
