//! The auction on one node: taking bids, answering at once when there is no
//! contention, collecting a window and ranking it when there is, holding bids
//! that do not fit, and withdrawals. Every answer is remembered so a repeated
//! or withdrawn bid gets the same one.

use super::*;

impl Auctioneer {
    /// Awards at once when the whole book fits; otherwise makes sure a
    /// window is open to rank it.
    pub(super) fn decide(&mut self, now: Instant) {
        if self.book.is_empty() || self.window_closes.is_some() || self.unavailable.is_some() {
            return;
        }
        let demand = self.book.iter().try_fold(Resources::ZERO, |acc, p| {
            acc.checked_add(&p.bid.spec.resources)
        });
        let uncontended = demand.is_some_and(|d| d.fits_in(&self.free()));
        if uncontended {
            let book = std::mem::take(&mut self.book);
            for p in book {
                self.award(now, p);
            }
        } else if self.config.window.is_zero() {
            self.close_window(now);
        } else {
            self.window_closes = Some(now + self.config.window);
        }
    }

    pub(super) fn no_room_reason(&self, asked: &Resources) -> RejectReason {
        if asked.fits_in(&self.free()) && self.unavailable.is_none() {
            RejectReason::Outbid
        } else {
            RejectReason::Insufficient(asked.shortfall(&self.free()))
        }
    }

    pub(super) fn remember(&mut self, from: NodeId, bid: &Bid, answer: PeerMessage) {
        self.remember_key((from, bid.task_id.clone(), bid.bid_id), answer);
    }

    pub(super) fn remember_key(&mut self, key: BidKey, answer: PeerMessage) {
        if self.answered.insert(key.clone(), answer).is_none() {
            self.answered_order.push_back(key);
        }
        while self.answered_order.len() > self.config.answer_cache {
            if let Some(old) = self.answered_order.pop_front() {
                self.answered.remove(&old);
            }
        }
    }

    pub(super) fn reject(&mut self, from: NodeId, bid: &Bid, reason: RejectReason) {
        self.stats.rejects += 1;
        let msg = PeerMessage::Reject(Reject {
            bid_id: bid.bid_id,
            task_id: bid.task_id.clone(),
            reason,
            free: self.free(),
            free_version: self.version,
        });
        self.remember(from.clone(), bid, msg.clone());
        self.transmits.push_back(Transmit { to: from, msg });
    }

    pub(super) fn admits(&self, constraints: &[Constraint]) -> bool {
        // unique and spread depend on the bidder's placements; the node checks
        // what it can know alone.
        let nothing = Placed::default();
        constraints.iter().all(|c| match c {
            Constraint::Unique { .. } | Constraint::Spread { .. } => {
                self.attrs.get(c.key()).is_some()
            }
            _ => c.admits(&self.attrs, &nothing),
        })
    }

    pub(super) fn on_bid(&mut self, now: Instant, from: NodeId, bid: Bid) {
        let key = (from.clone(), bid.task_id.clone(), bid.bid_id);
        if let Some(answer) = self.answered.get(&key) {
            let msg = answer.clone();
            self.transmits.push_back(Transmit { to: from, msg });
            return;
        }
        if self
            .book
            .iter()
            .any(|p| p.from == from && p.bid.bid_id == bid.bid_id && p.bid.task_id == bid.task_id)
        {
            return; // a duplicate of a bid still being decided
        }
        self.stats.bids += 1;
        if let Err(e) = bid.spec.validate() {
            return self.reject(from, &bid, RejectReason::InvalidSpec(e.to_string()));
        }
        if self.draining {
            return self.reject(from, &bid, RejectReason::Draining);
        }
        if self.unavailable.is_some() {
            // Free is nothing: the reject says so, and heals the bidder's view.
            let reason = self.no_room_reason(&bid.spec.resources);
            return self.reject(from, &bid, reason);
        }
        if !self.admits(&bid.spec.constraints) {
            return self.reject(from, &bid, RejectReason::Constraints);
        }
        let short = bid.spec.resources.shortfall(&self.capacity);
        if !short.is_empty() {
            return self.reject(from, &bid, RejectReason::Insufficient(short));
        }
        if self.book.len() >= self.config.max_pending_bids {
            return self.reject(from, &bid, RejectReason::Busy);
        }
        self.arrivals += 1;
        // Every bid stays at least until the window it joins closes.
        let wait = Duration::from_millis(u64::from(bid.wait_ms))
            .min(self.config.max_hold)
            .max(self.config.window);
        self.book.push(PendingBid {
            from,
            bid,
            arrival: self.arrivals,
            hold_until: now + wait,
        });
        self.decide(now);
    }

    pub(super) fn award(&mut self, now: Instant, p: PendingBid) {
        let Some(ports) = self.ports.take(p.bid.spec.resources.ports) else {
            // cannot happen: ports are counted in `free`; reject defensively
            return self.reject(p.from, &p.bid, RejectReason::Insufficient(vec![]));
        };
        let lease_id = LeaseId(self.next_lease);
        self.next_lease += 1;
        let expires = now + self.config.lease_ttl;
        self.charge(&p.bid.spec.resources);
        self.stats.awards += 1;
        let msg = PeerMessage::Award(Award {
            bid_id: p.bid.bid_id,
            task_id: p.bid.task_id.clone(),
            lease_id,
            lease_ms: millis_u32(self.config.lease_ttl),
            ports: ports.clone(),
        });
        self.remember(p.from.clone(), &p.bid, msg.clone());
        self.transmits.push_back(Transmit {
            to: p.from.clone(),
            msg,
        });
        self.expiries.insert((expires, lease_id));
        self.leases.insert(
            lease_id,
            Lease {
                from: p.from,
                bid_id: p.bid.bid_id,
                task_id: p.bid.task_id,
                framework: p.bid.framework,
                weight: p.bid.weight.max(1),
                spec: p.bid.spec,
                ports,
                expires,
            },
        );
    }

    /// Ranks the bids on hand and awards greedily what fits.
    pub(super) fn close_window(&mut self, now: Instant) {
        self.stats.contended_windows += 1;
        let mut shares = self.shares.clone();
        // One lane per framework, best bid first. A framework's share is the
        // same for all its bids, so (priority, price, arrival) orders a lane,
        // and the best bid overall is the best of the lanes' heads under the
        // full key. Only the lane just charged changes its share: each award
        // costs one pass over the lanes, not over the whole book.
        let mut by_framework: BTreeMap<FrameworkId, Vec<PendingBid>> = BTreeMap::new();
        for p in std::mem::take(&mut self.book) {
            by_framework
                .entry(p.bid.framework.clone())
                .or_default()
                .push(p);
        }
        let mut lanes: Vec<(f64, VecDeque<PendingBid>)> = by_framework
            .into_iter()
            .map(|(fw, mut bids)| {
                bids.sort_by(|x, y| {
                    y.bid
                        .spec
                        .priority
                        .cmp(&x.bid.spec.priority)
                        .then_with(|| y.bid.price.cmp(&x.bid.price))
                        .then_with(|| x.arrival.cmp(&y.arrival))
                });
                let weight = bids.first().map_or(1, |p| p.bid.weight);
                (shares.share(&fw, weight), VecDeque::from(bids))
            })
            .collect();
        loop {
            let best = lanes
                .iter()
                .enumerate()
                .filter_map(|(i, (share, lane))| lane.front().map(|p| (i, *share, p)))
                .min_by(|(_, sx, x), (_, sy, y)| {
                    y.bid
                        .spec
                        .priority
                        .cmp(&x.bid.spec.priority)
                        .then_with(|| sx.total_cmp(sy))
                        .then_with(|| y.bid.price.cmp(&x.bid.price))
                        .then_with(|| x.arrival.cmp(&y.arrival))
                })
                .map(|(i, _, _)| i);
            let Some(i) = best else { break };
            let Some(p) = lanes[i].1.pop_front() else {
                break;
            };
            if p.bid.spec.resources.fits_in(&self.free()) {
                shares.charge(&p.bid.framework, p.bid.weight, &p.bid.spec.resources);
                lanes[i].0 = shares.share(&p.bid.framework, p.bid.weight);
                self.award(now, p);
            } else if p.hold_until > now {
                self.book.push(p);
            } else {
                let reason = self.no_room_reason(&p.bid.spec.resources);
                self.reject(p.from.clone(), &p.bid, reason);
            }
        }
        // held bids keep their arrival order
        self.book.sort_by_key(|p| p.arrival);
    }

    /// A withdrawal cancels the bid whatever state it is in, so the bidder
    /// never has to release an award it no longer wants:
    /// - held in the book: answered with a `Withdrawn` reject;
    /// - awarded and not yet confirmed: the lease is given back at once (the
    ///   award already answered the bid);
    /// - not seen yet (the withdrawal overtook its bid): remembered as a
    ///   `Withdrawn` reject in the answer cache, which is what the bid gets
    ///   when it arrives;
    /// - rejected, or confirmed: nothing to do.
    pub(super) fn on_withdraw(&mut self, now: Instant, from: NodeId, w: Withdraw) {
        if let Some(i) = self
            .book
            .iter()
            .position(|p| p.from == from && p.bid.bid_id == w.bid_id && p.bid.task_id == w.task_id)
        {
            let p = self.book.remove(i);
            self.stats.withdrawn += 1;
            self.reject(p.from, &p.bid, RejectReason::Withdrawn);
            return;
        }
        let key = (from, w.task_id, w.bid_id);
        let lease_id = self
            .leases
            .iter()
            .find(|(_, l)| l.from == key.0 && l.bid_id == key.2 && l.task_id == key.1)
            .map(|(id, _)| *id);
        if let Some(lease_id) = lease_id
            && let Some(lease) = self.leases.remove(&lease_id)
        {
            self.expiries.remove(&(lease.expires, lease_id));
            self.stats.leases_withdrawn += 1;
            // The award stays the bid's one answer: a duplicate of the bid
            // gets it again, and the bidder, which no longer knows the bid,
            // releases it (a no-op here).
            self.give_back(now, &lease.spec.resources, lease.ports);
            return;
        }
        if !self.answered.contains_key(&key) {
            let answer = self.withdrawn_answer(&key);
            self.remember_key(key, answer);
        }
    }

    pub(super) fn withdrawn_answer(&self, key: &BidKey) -> PeerMessage {
        PeerMessage::Reject(Reject {
            bid_id: key.2,
            task_id: key.1.clone(),
            reason: RejectReason::Withdrawn,
            free: self.free(),
            free_version: self.version,
        })
    }
}
