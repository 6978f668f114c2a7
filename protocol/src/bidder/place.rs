//! Placing a task: choosing candidates from the view (sampled, filtered by
//! fit and constraints, ranked, drawn from the best few; a `spread` task
//! first narrowed to its job's least-used value), sending the bids, and
//! backing off when nothing fits (or failing when nothing ever could). Also
//! the per-job tally of attribute values that `unique` and `spread` read.

use super::*;

/// Adds (`+1`) or removes (`-1`) one task's count for each `(key, value)` of
/// `attrs` that none of its `others` holds, so a task counts at most once
/// per value however many of its bids share it.
fn tally(job: &mut Placed, attrs: &Attributes, others: &[(NodeId, Attributes)], add: bool) {
    for (k, v) in &attrs.0 {
        if others.iter().any(|(_, a)| a.get(k) == Some(v.as_str())) {
            continue;
        }
        if add {
            *job.entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_insert(0) += 1;
        } else if let Some(values) = job.get_mut(k) {
            if let Some(c) = values.get_mut(v) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    values.remove(v);
                }
            }
            if values.is_empty() {
                job.remove(k);
            }
        }
    }
}

impl<R: Rng> Bidder<R> {
    /// The task now counts on `node` (a bid went out there) in its job's
    /// tally, under the node's attributes as the view has them now.
    pub(super) fn hold(&mut self, task_id: &TaskId, node: &NodeId, attrs: &Attributes) {
        if attrs.0.is_empty() {
            return;
        }
        let Some(t) = self.tasks.get_mut(task_id) else {
            return;
        };
        let job = match self.jobs.get_mut(&t.spec.name) {
            Some(job) => job,
            None => self.jobs.entry(t.spec.name.clone()).or_default(),
        };
        tally(job, attrs, &t.holds, true);
        t.holds.push((node.clone(), attrs.clone()));
    }

    /// The task no longer counts on `node` (its bid there lost or was
    /// withdrawn, or its placement there ended).
    pub(super) fn unhold(&mut self, task_id: &TaskId, node: &NodeId) {
        let Some(t) = self.tasks.get_mut(task_id) else {
            return;
        };
        let Some(i) = t.holds.iter().position(|(n, _)| n == node) else {
            return;
        };
        let (_, attrs) = t.holds.swap_remove(i);
        if let Some(job) = self.jobs.get_mut(&t.spec.name) {
            tally(job, &attrs, &t.holds, false);
            if job.is_empty() {
                self.jobs.remove(&t.spec.name);
            }
        }
    }

    /// The task counts nowhere any more (it ended).
    pub(super) fn unhold_all(&mut self, task_id: &TaskId) {
        while let Some(node) = self
            .tasks
            .get(task_id)
            .and_then(|t| t.holds.first())
            .map(|(n, _)| n.clone())
        {
            self.unhold(task_id, &node);
        }
    }

    pub(super) fn try_place(&mut self, now: Instant, task_id: &TaskId, view: &mut ClusterView) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        if task.phase != Phase::Waiting || task.next_try > now {
            return;
        }
        if now >= task.deadline {
            let empty = Placed::new();
            let reason = explain(
                &task.spec,
                task.last_reject.as_deref(),
                view,
                task.deadline - task.submitted,
                self.jobs.get(&task.spec.name).unwrap_or(&empty),
            );
            self.stats.gave_up += 1;
            self.end(task_id, TaskState::Failed, None, Some(reason));
            return;
        }
        let spec = task.spec.clone();
        let pinned = task.pinned.clone();
        let submitted = task.submitted;
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
            None => {
                if self.attempts_at.0 != now {
                    self.attempts_at = (now, 0);
                }
                self.attempts_at.1 += 1;
                let burst =
                    task.burst || self.due_now.max(self.attempts_at.1) >= self.config.burst_tasks;
                if let Some(t) = self.tasks.get_mut(task_id) {
                    t.burst = burst;
                }
                self.choose(&spec, view, burst)
            }
        };
        if chosen.is_empty() {
            if let Some(t) = self.tasks.get_mut(task_id) {
                t.last_reject = None;
            }
            if let Some(reason) = never_fits(&spec, view) {
                // Nothing in the view could ever hold it. Unless the view
                // is still filling, nothing will: fail once the grace since
                // submit is over, checking again at its end.
                let grace_over = submitted + self.config.never_fit_grace;
                if now >= grace_over {
                    self.stats.gave_up += 1;
                    self.end(task_id, TaskState::Failed, None, Some(reason));
                } else {
                    self.retry_later(now, task_id, grace_over - now);
                }
                return;
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
                    resources: spec.resources,
                    withdrawn: false,
                    expires,
                },
            );
            self.ask(&node, &spec.resources);
            if let Some(info) = view.get(&node) {
                let attrs = info.attrs.clone();
                self.hold(task_id, &node, &attrs);
            }
            open.insert(bid_id);
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

    /// Candidates: alive, big enough in total, admitted; for a `spread` task
    /// only those with the job's least-used value; ranked; `candidates`
    /// drawn from the best few, or in a `burst` (see `Config::burst_tasks`)
    /// `candidates_with_room` of those with room when the best has room.
    /// Room is the view's free vector less this bidder's live bids there
    /// ([`Bidder::free_for_me`]), so a burst of tasks spreads over nodes by
    /// what each can still take instead of piling onto the one the view
    /// shows freest.
    pub(super) fn choose(
        &mut self,
        spec: &TaskSpec,
        view: &ClusterView,
        burst: bool,
    ) -> Vec<NodeId> {
        let empty = Placed::new();
        let placed = self.jobs.get(&spec.name).unwrap_or(&empty);
        let sample = view.sample(&mut self.rng, self.config.scan_limit);
        // The last key is random: nodes that tie (every full node, or many
        // identical empty ones) are drawn evenly instead of lowest id first,
        // which would herd every bidder onto the same few nodes.
        let mut scored: Vec<(bool, u32, f64, u64, &NodeInfo)> = sample
            .into_iter()
            .filter(|n| n.alive && spec.resources.fits_in(&n.total))
            .filter(|n| admits_all(&spec.constraints, &n.attrs, placed))
            .map(|n| {
                let free = self.free_for_me(n);
                let full = !spec.resources.fits_in(&free);
                let penalty: u32 = spec
                    .constraints
                    .iter()
                    .map(|c| c.spread_penalty(&n.attrs, placed))
                    .sum();
                let left = free
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
        let spread: Vec<&str> = spec
            .constraints
            .iter()
            .filter(|c| matches!(c, Constraint::Spread { .. }))
            .map(Constraint::key)
            .collect();
        if !spread.is_empty() && !scored.is_empty() {
            // Every bid of a spread task goes to nodes with one value (of
            // each spread key), so the task counts once, on that value,
            // while its bids are out. The value: among those with a node
            // that has room now (all of them if none has), the one holding
            // the fewest of the job's tasks; ties at random.
            let value_of = |n: &NodeInfo| -> Vec<String> {
                spread
                    .iter()
                    .map(|k| n.attrs.get(k).unwrap_or_default().to_string())
                    .collect()
            };
            // value → (no node with room now, the job's tasks there)
            let mut values: BTreeMap<Vec<String>, (bool, u32)> = BTreeMap::new();
            for s in &scored {
                let e = values.entry(value_of(s.4)).or_insert((true, s.1));
                e.0 &= s.0;
            }
            let best = values.values().min().copied();
            let ties: Vec<&Vec<String>> = values
                .iter()
                .filter(|(_, rank)| Some(**rank) == best)
                .map(|(v, _)| v)
                .collect();
            let pick = ties[self.rng.random_range(0..ties.len())].clone();
            scored.retain(|s| value_of(s.4) == pick);
        }
        // Nodes with room now first; among full ones, a bid waits for room.
        scored.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.1.cmp(&b.1))
                .then(a.2.total_cmp(&b.2))
                .then(a.3.cmp(&b.3))
        });
        scored.truncate(self.config.best_of.max(self.config.candidates));
        let want = if burst && scored.first().is_some_and(|s| !s.0) {
            // Only among those with room (the sort put them first).
            scored.retain(|s| !s.0);
            self.config
                .candidates_with_room
                .clamp(1, self.config.candidates.max(1))
        } else {
            self.config.candidates
        };
        let mut out = Vec::new();
        while out.len() < want && !scored.is_empty() {
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
