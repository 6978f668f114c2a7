//! Fixed-seed unit tests of the auction: the auctioneer's ordering, holds,
//! leases and status retries, and the bidder's placement, retry, confirm and
//! give-up paths, asserting on exactly what each machine emits.

mod units;

use agora_protocol::auctioneer::{self, Auctioneer, Event as AEvent, Transmit};
use agora_protocol::bidder::{self, Bidder, Event as BEvent};
use agora_protocol::constraint::Attributes;
use agora_protocol::fairness::{FairShares, FrameworkUsage};
use agora_protocol::ids::{BidId, LeaseId, NodeId, TaskId};
use agora_protocol::resources::{PortSet, Resources};
use agora_protocol::task::{Command, Priority, TaskSpec, TaskState, TaskStatus};
use agora_protocol::time::Instant;
use agora_protocol::view::{ClusterView, NodeInfo};
use agora_protocol::wire::*;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::time::Duration;
use units::{bidder_with, events, fw, ms, n, sent};

fn spec(cpu: u64, mem: u64) -> TaskSpec {
    TaskSpec::new(
        "job",
        Command::Shell("true".into()),
        Resources::cpu_mem(cpu, mem),
    )
}

fn bid(id: u64, framework: &str, cpu: u64, prio: u8, price: u64, wait_ms: u32) -> Bid {
    let f = fw(framework);
    let mut s = spec(cpu, 0);
    s.priority = Priority(prio);
    Bid {
        bid_id: BidId(id),
        task_id: TaskId::for_framework(&f, id),
        framework: f,
        weight: 1,
        spec: Box::new(s),
        price,
        wait_ms,
    }
}

fn auctioneer(cpu: u64) -> Auctioneer {
    Auctioneer::new(
        n("node"),
        Resources::cpu_mem(cpu, 4096),
        PortSet::parse("9000-9003").unwrap(),
        Attributes::default(),
        auctioneer::Config::default(),
    )
}

fn drain(a: &mut Auctioneer) -> Vec<Transmit> {
    std::iter::from_fn(|| a.poll_transmit()).collect()
}

fn answers(a: &mut Auctioneer) -> Vec<(u64, &'static str)> {
    drain(a)
        .into_iter()
        .filter_map(|t| match t.msg {
            PeerMessage::Award(x) => Some((x.bid_id.0, "award")),
            PeerMessage::Reject(x) => Some((x.bid_id.0, "reject")),
            _ => None,
        })
        .collect()
}

#[test]
fn a_restarted_ledger_can_start_above_its_old_versions() {
    let mut a = auctioneer(1000);
    let old = a.version();
    a.raise_version(1_700_000_000_000);
    assert_eq!(a.version(), 1_700_000_000_000);
    a.raise_version(5); // never lowered
    assert_eq!(a.version(), 1_700_000_000_000);
    assert!(old < a.version());
    assert!(std::iter::from_fn(|| a.poll_event()).any(
        |e| matches!(e, AEvent::LedgerChanged { version, .. } if version == 1_700_000_000_000)
    ));
}

#[test]
fn bidders_sharing_a_node_may_reuse_bid_ids() {
    // two frameworks on node h both send their bid number 1
    let mut a = auctioneer(1000);
    a.handle_message(ms(0), n("h"), PeerMessage::Bid(bid(1, "a", 400, 0, 0, 0)))
        .unwrap();
    a.handle_message(ms(0), n("h"), PeerMessage::Bid(bid(1, "b", 400, 0, 0, 0)))
        .unwrap();
    let awards: Vec<TaskId> = drain(&mut a)
        .into_iter()
        .filter_map(|t| match t.msg {
            PeerMessage::Award(x) => Some(x.task_id),
            _ => None,
        })
        .collect();
    assert_eq!(
        awards.len(),
        2,
        "each framework's bid is decided on its own"
    );
    assert_ne!(awards[0], awards[1]);
    assert_eq!(a.free().cpu_millis, 200);
}

#[test]
fn uncontended_bids_are_awarded_at_once() {
    let mut a = auctioneer(1000);
    a.handle_message(ms(0), n("h"), PeerMessage::Bid(bid(1, "a", 400, 0, 0, 0)))
        .unwrap();
    assert_eq!(answers(&mut a), vec![(1, "award")]);
    assert_eq!(a.free().cpu_millis, 600);
    assert!(a.poll_timeout().is_some(), "the lease expiry is a timer");
}

#[test]
fn contention_is_ranked_by_priority_then_share_then_price_then_arrival() {
    let mut a = auctioneer(1000);
    // fill 600 so that the next bids contend for 400
    a.handle_message(ms(0), n("h"), PeerMessage::Bid(bid(1, "x", 600, 0, 0, 0)))
        .unwrap();
    drain(&mut a);
    let mut usage = BTreeMap::new();
    usage.insert(
        fw("rich"),
        FrameworkUsage {
            resources: Resources::cpu_mem(5000, 0),
            weight: 1,
        },
    );
    usage.insert(
        fw("poor"),
        FrameworkUsage {
            resources: Resources::cpu_mem(1000, 0),
            weight: 1,
        },
    );
    a.set_shares(FairShares::new(Resources::cpu_mem(10_000, 0), usage));
    // 500 does not fit in 400: the window opens and later bids join it
    let t = ms(1);
    for b in [
        bid(2, "rich", 500, 0, 0, 0), // does not fit at all now
        bid(3, "rich", 200, 0, 0, 0), // rich: share 0.5
        bid(4, "poor", 200, 0, 0, 0), // poor: share 0.1 → before rich
        bid(5, "rich", 200, 7, 0, 0), // priority 7 → first
        bid(6, "poor", 200, 0, 9, 0), // same share as 4, higher price → before 4
    ] {
        a.handle_message(t, n("h"), PeerMessage::Bid(b)).unwrap();
    }
    assert!(
        answers(&mut a).is_empty(),
        "contended bids wait for the window"
    );
    let close = a.poll_timeout().unwrap();
    assert_eq!(close, t + auctioneer::Config::default().window);
    a.handle_timeout(close);
    // 400 free: bid 5 (prio 7, 200) then bid 6 (poor, price 9, 200); the rest lose
    let got = answers(&mut a);
    let awarded: Vec<u64> = got.iter().filter(|x| x.1 == "award").map(|x| x.0).collect();
    assert_eq!(awarded, vec![5, 6]);
    let rejected: Vec<u64> = got
        .iter()
        .filter(|x| x.1 == "reject")
        .map(|x| x.0)
        .collect();
    assert_eq!(rejected.len(), 3);
    assert_eq!(a.free().cpu_millis, 0);
}

#[test]
fn equal_keys_go_by_arrival_and_awards_charge_the_share() {
    let mut a = auctioneer(1000);
    a.handle_message(ms(0), n("h"), PeerMessage::Bid(bid(1, "x", 600, 0, 0, 0)))
        .unwrap();
    drain(&mut a);
    let t = ms(1);
    // a and b both start at share 0: a arrived first and wins the first 200;
    // then a's share is charged, so b wins the next 200 although a's second
    // bid arrived before it.
    for b in [
        bid(2, "a", 500, 0, 0, 0),
        bid(3, "a", 200, 0, 0, 0),
        bid(4, "a", 200, 0, 0, 0),
        bid(5, "b", 200, 0, 0, 0),
    ] {
        a.handle_message(t, n("h"), PeerMessage::Bid(b)).unwrap();
    }
    a.set_shares(FairShares::new(
        Resources::cpu_mem(1000, 4096),
        BTreeMap::new(),
    ));
    a.handle_timeout(a.poll_timeout().unwrap());
    let awarded: Vec<u64> = answers(&mut a)
        .into_iter()
        .filter(|x| x.1 == "award")
        .map(|x| x.0)
        .collect();
    assert_eq!(awarded, vec![3, 5]);
}

#[test]
fn held_bids_win_freed_resources_and_expire_with_a_reject() {
    let mut a = auctioneer(1000);
    a.handle_message(ms(0), n("h"), PeerMessage::Bid(bid(1, "x", 1000, 0, 0, 0)))
        .unwrap();
    let lease = match drain(&mut a).pop().unwrap().msg {
        PeerMessage::Award(x) => x.lease_id,
        other => panic!("{other:?}"),
    };
    // two bids wait for room: 2 for 100 ms, 3 for 1 s
    a.handle_message(ms(1), n("h"), PeerMessage::Bid(bid(2, "y", 500, 0, 0, 100)))
        .unwrap();
    a.handle_message(
        ms(1),
        n("h"),
        PeerMessage::Bid(bid(3, "z", 500, 0, 0, 1000)),
    )
    .unwrap();
    a.handle_timeout(ms(10)); // window closes: nothing fits, both held
    assert!(answers(&mut a).is_empty());
    assert_eq!(a.held_count(), 2);
    a.handle_timeout(ms(101)); // bid 2's wait is over
    assert_eq!(answers(&mut a), vec![(2, "reject")]);
    // the lease is released: bid 3 gets the room
    a.handle_message(
        ms(200),
        n("h"),
        PeerMessage::Release(Release {
            lease_id: lease,
            task_id: TaskId::for_framework(&fw("x"), 1),
        }),
    )
    .unwrap();
    assert_eq!(
        answers(&mut a),
        vec![(3, "award")],
        "uncontended once freed"
    );
    assert_eq!(a.held_count(), 0);
}

#[test]
fn withdrawn_bids_are_answered_once() {
    let mut a = auctioneer(100);
    a.handle_message(ms(0), n("h"), PeerMessage::Bid(bid(1, "x", 100, 0, 0, 0)))
        .unwrap();
    a.handle_message(
        ms(0),
        n("h"),
        PeerMessage::Bid(bid(2, "x", 100, 0, 0, 5000)),
    )
    .unwrap();
    a.handle_timeout(ms(10));
    drain(&mut a);
    let w = Withdraw {
        bid_id: BidId(2),
        task_id: TaskId::for_framework(&fw("x"), 2),
    };
    a.handle_message(ms(11), n("h"), PeerMessage::Withdraw(w.clone()))
        .unwrap();
    let first = drain(&mut a);
    assert!(matches!(
        &first[..],
        [Transmit {
            msg: PeerMessage::Reject(Reject {
                reason: RejectReason::Withdrawn,
                ..
            }),
            ..
        }]
    ));
    // a duplicate bid gets the same answer again, a second withdraw nothing
    a.handle_message(
        ms(12),
        n("h"),
        PeerMessage::Bid(bid(2, "x", 100, 0, 0, 5000)),
    )
    .unwrap();
    assert_eq!(drain(&mut a)[0].msg, first[0].msg);
    a.handle_message(ms(13), n("h"), PeerMessage::Withdraw(w))
        .unwrap();
    assert!(drain(&mut a).is_empty());
}

#[test]
fn withdrawing_an_awarded_bid_gives_its_lease_back() {
    let mut a = auctioneer(1000);
    a.handle_message(ms(0), n("h"), PeerMessage::Bid(bid(1, "x", 1000, 0, 0, 0)))
        .unwrap();
    let lease = match drain(&mut a).pop().map(|t| t.msg) {
        Some(PeerMessage::Award(x)) => x.lease_id,
        other => panic!("{other:?}"),
    };
    assert_eq!(a.free().cpu_millis, 0);
    let task = TaskId::for_framework(&fw("x"), 1);
    // a withdrawal naming another bidder or another bid changes nothing
    for (from, id) in [("other", 1), ("h", 2)] {
        a.handle_message(
            ms(1),
            n(from),
            PeerMessage::Withdraw(Withdraw {
                bid_id: BidId(id),
                task_id: task.clone(),
            }),
        )
        .unwrap();
        assert_eq!(a.free().cpu_millis, 0, "withdraw from {from} of bid {id}");
    }
    a.handle_message(
        ms(2),
        n("h"),
        PeerMessage::Withdraw(Withdraw {
            bid_id: BidId(1),
            task_id: task.clone(),
        }),
    )
    .unwrap();
    // the award was the bid's answer: nothing more is sent
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.free().cpu_millis, 1000);
    assert_eq!((a.lease_count(), a.stats().leases_withdrawn), (0, 1));
    // the lease cannot be confirmed any more, and the room goes to the next bid
    a.handle_message(
        ms(3),
        n("h"),
        PeerMessage::Confirm(Confirm {
            lease_id: lease,
            task_id: task.clone(),
        }),
    )
    .unwrap();
    assert!(matches!(
        &drain(&mut a)[..],
        [Transmit {
            msg: PeerMessage::ConfirmRefused(_),
            ..
        }]
    ));
    a.handle_message(ms(4), n("h"), PeerMessage::Bid(bid(3, "x", 1000, 0, 0, 0)))
        .unwrap();
    assert_eq!(answers(&mut a), vec![(3, "award")]);
}

#[test]
fn a_withdrawal_that_overtakes_its_bid_answers_the_bid_when_it_comes() {
    let mut a = auctioneer(1000);
    a.handle_message(
        ms(0),
        n("h"),
        PeerMessage::Withdraw(Withdraw {
            bid_id: BidId(5),
            task_id: TaskId::for_framework(&fw("x"), 5),
        }),
    )
    .unwrap();
    assert!(drain(&mut a).is_empty());
    a.handle_message(ms(1), n("h"), PeerMessage::Bid(bid(5, "x", 500, 0, 0, 0)))
        .unwrap();
    assert!(matches!(
        &drain(&mut a)[..],
        [Transmit {
            msg: PeerMessage::Reject(Reject {
                reason: RejectReason::Withdrawn,
                ..
            }),
            ..
        }]
    ));
    assert_eq!((a.free().cpu_millis, a.lease_count()), (1000, 0));
}

#[test]
fn leases_expire_and_late_confirms_are_refused() {
    let mut a = auctioneer(1000);
    a.handle_message(ms(0), n("h"), PeerMessage::Bid(bid(1, "x", 1000, 0, 0, 0)))
        .unwrap();
    let award = match drain(&mut a).pop().unwrap().msg {
        PeerMessage::Award(x) => x,
        other => panic!("{other:?}"),
    };
    assert_eq!(award.ports, Vec::<u16>::new());
    let ttl = auctioneer::Config::default().lease_ttl;
    a.handle_timeout(Instant::ZERO + ttl);
    assert_eq!(a.lease_count(), 0);
    assert_eq!(a.free().cpu_millis, 1000);
    a.handle_message(
        Instant::ZERO + ttl,
        n("h"),
        PeerMessage::Confirm(Confirm {
            lease_id: award.lease_id,
            task_id: award.task_id,
        }),
    )
    .unwrap();
    assert!(matches!(
        drain(&mut a)[0].msg,
        PeerMessage::ConfirmRefused(_)
    ));
    assert!(std::iter::from_fn(|| a.poll_event()).all(|e| !matches!(e, AEvent::Launch { .. })));
}

#[test]
fn confirm_launches_once_and_status_is_retried_until_acked() {
    let mut a = auctioneer(1000);
    let mut b = bid(1, "x", 500, 0, 0, 0);
    b.spec.resources.ports = 2;
    a.handle_message(ms(0), n("home"), PeerMessage::Bid(b))
        .unwrap();
    let award = match drain(&mut a).pop().unwrap().msg {
        PeerMessage::Award(x) => x,
        other => panic!("{other:?}"),
    };
    assert_eq!(award.ports, vec![9000, 9001]);
    let confirm = PeerMessage::Confirm(Confirm {
        lease_id: award.lease_id,
        task_id: award.task_id.clone(),
    });
    a.handle_message(ms(1), n("home"), confirm.clone()).unwrap();
    a.handle_message(ms(2), n("home"), confirm).unwrap(); // duplicate
    let sent = drain(&mut a);
    assert_eq!(
        sent.iter()
            .filter(|t| matches!(t.msg, PeerMessage::Confirmed(_)))
            .count(),
        2
    );
    let launches = std::iter::from_fn(|| a.poll_event())
        .filter(|e| matches!(e, AEvent::Launch { .. }))
        .count();
    assert_eq!(launches, 1);
    // the task finishes: resources and ports come back, the status goes home
    a.task_status(
        ms(10),
        TaskStatus::new(award.task_id.clone(), TaskState::Finished, Some(n("node"))),
    )
    .unwrap();
    assert_eq!(a.free().cpu_millis, 1000);
    let first = match &drain(&mut a)[..] {
        [
            Transmit {
                msg: PeerMessage::Status(u),
                ..
            },
        ] => u.clone(),
        other => panic!("{other:?}"),
    };
    // it carries the node's free vector, with the room the task gave back
    assert_eq!((first.free, first.free_version), (a.free(), a.version()));
    // another award before the retry: the re-sent update is the same update
    // with the free vector of the moment it is re-sent
    a.handle_message(
        ms(20),
        n("home"),
        PeerMessage::Bid(bid(2, "x", 300, 0, 0, 0)),
    )
    .unwrap();
    drain(&mut a);
    let retry = a.poll_timeout().unwrap();
    a.handle_timeout(retry);
    let again = match drain(&mut a).pop().map(|t| t.msg) {
        Some(PeerMessage::Status(u)) => u,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (&again.status, again.seq),
        (&first.status, first.seq),
        "re-sent"
    );
    assert_eq!(again.free.cpu_millis, 700);
    assert!(again.free_version > first.free_version);
    let seq = again.seq;
    // an ack from another node is ignored; the home node's ack ends it
    a.handle_message(
        ms(600),
        n("other"),
        PeerMessage::StatusAck(StatusAck {
            task_id: award.task_id.clone(),
            seq,
        }),
    )
    .unwrap();
    assert_eq!(a.unacked_count(), 1);
    a.handle_message(
        ms(600),
        n("home"),
        PeerMessage::StatusAck(StatusAck {
            task_id: award.task_id.clone(),
            seq,
        }),
    )
    .unwrap();
    assert_eq!(a.unacked_count(), 0);
    // illegal transitions are refused without changing anything
    assert!(
        a.task_status(
            ms(700),
            TaskStatus::new(award.task_id, TaskState::Running, None)
        )
        .is_err()
    );
}

#[test]
fn bids_that_can_never_fit_or_break_rules_are_rejected_at_once() {
    let mut a = auctioneer(1000);
    a.handle_message(
        ms(0),
        n("h"),
        PeerMessage::Bid(bid(1, "x", 2000, 0, 0, 5000)),
    )
    .unwrap();
    let mut bad = bid(2, "x", 100, 0, 0, 0);
    bad.spec.command = Command::Argv(vec![]);
    a.handle_message(ms(0), n("h"), PeerMessage::Bid(bad))
        .unwrap();
    let reasons: Vec<RejectReason> = drain(&mut a)
        .into_iter()
        .map(|t| match t.msg {
            PeerMessage::Reject(r) => r.reason,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(matches!(&reasons[0], RejectReason::Insufficient(d) if d.len() == 1));
    assert!(matches!(&reasons[1], RejectReason::InvalidSpec(why) if why.contains("no command")));
    assert!(
        a.handle_message(
            ms(0),
            n("h"),
            PeerMessage::Award(Award {
                bid_id: BidId(1),
                task_id: TaskId::new("t.1").unwrap(),
                lease_id: LeaseId(1),
                lease_ms: 1,
                ports: vec![]
            })
        )
        .is_err()
    );
}

// ------------------------------------------------------------------ bidder

fn view(nodes: &[(&str, u64, u64, u64)]) -> ClusterView {
    let mut v = ClusterView::new();
    for (id, total_mem, free_mem, version) in nodes {
        let mut info = NodeInfo::new(
            n(id),
            Resources::cpu_mem(4000, *total_mem),
            Attributes::default(),
        );
        info.free = Resources::cpu_mem(4000, *free_mem);
        info.version = *version;
        v.upsert(info);
    }
    v
}

/// A one-candidate bidder that has submitted `s` and sent its first bid.
fn bid_once(v: &mut ClusterView, s: TaskSpec) -> (Bidder<ChaCha8Rng>, TaskId, Bid) {
    let mut b = bidder_with(bidder::Config {
        candidates: 1,
        ..bidder::Config::default()
    });
    let task = b.submit(ms(0), s).unwrap();
    b.handle_timeout(ms(0), v);
    let bid = match sent(&mut b).pop().unwrap().msg {
        PeerMessage::Bid(x) => x,
        other => panic!("{other:?}"),
    };
    (b, task, bid)
}

/// The reason of the first `failed` status the bidder reported.
fn failure_reason(b: &mut Bidder<ChaCha8Rng>) -> String {
    events(b)
        .into_iter()
        .find_map(|e| match e {
            BEvent::Status { status, .. } if status.state == TaskState::Failed => status.reason,
            _ => None,
        })
        .expect("a failed status with a reason")
}

#[test]
fn bidder_confirms_the_first_award_and_withdraws_or_releases_the_rest() {
    let mut v = view(&[
        ("a", 8192, 8192, 1),
        ("b", 8192, 8192, 1),
        ("c", 8192, 8192, 1),
    ]);
    let mut b = bidder_with(bidder::Config {
        candidates: 2,
        ..bidder::Config::default()
    });
    let task = b.submit(ms(0), spec(1000, 1024)).unwrap();
    b.handle_timeout(ms(0), &mut v);
    let bids: Vec<(NodeId, Bid)> = sent(&mut b)
        .into_iter()
        .map(|t| match t.msg {
            PeerMessage::Bid(x) => (t.to, x),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(bids.len(), 2);
    assert_ne!(bids[0].0, bids[1].0, "two different nodes");
    let award = |i: usize, lease: u64| {
        PeerMessage::Award(Award {
            bid_id: bids[i].1.bid_id,
            task_id: task.clone(),
            lease_id: LeaseId(lease),
            lease_ms: 3000,
            ports: vec![],
        })
    };
    b.handle_message(ms(5), bids[0].0.clone(), award(0, 10), &mut v)
        .unwrap();
    let out = sent(&mut b);
    assert!(
        matches!(&out[0], Transmit { msg: PeerMessage::Withdraw(w), to } if w.bid_id == bids[1].1.bid_id && *to == bids[1].0)
    );
    assert!(
        matches!(&out[1], Transmit { msg: PeerMessage::Confirm(c), to } if c.lease_id == LeaseId(10) && *to == bids[0].0)
    );
    // the second node had already awarded: the withdrawal gives that lease
    // back at the node, so the bidder sends nothing more
    b.handle_message(ms(6), bids[1].0.clone(), award(1, 20), &mut v)
        .unwrap();
    assert!(sent(&mut b).is_empty());
    b.handle_message(
        ms(7),
        bids[0].0.clone(),
        PeerMessage::Confirmed(Confirmed {
            lease_id: LeaseId(10),
            task_id: task.clone(),
        }),
        &mut v,
    )
    .unwrap();
    let ev = events(&mut b);
    assert!(
        matches!(&ev[0], BEvent::Placed { node, latency, attempts: 1, .. } if *node == bids[0].0 && *latency == Duration::from_millis(7))
    );
    assert!(matches!(&ev[1], BEvent::Status { status, .. } if status.state == TaskState::Starting));
    let s = b.stats();
    assert_eq!((s.bids_sent, s.bids_awarded, s.releases), (2, 2, 0));
    // Both bids and the confirm are answered: their timeout and re-send
    // timers went with them, so nothing is left to wake the bidder.
    assert_eq!(b.poll_timeout(), None);
}

#[test]
fn bidder_releases_an_award_for_a_bid_that_timed_out() {
    let mut v = view(&[("a", 8192, 8192, 1)]);
    let (mut b, task, first) = bid_once(&mut v, spec(1000, 1024));
    // no answer within bid_timeout: the bid ends; it was never withdrawn
    let timeout = bidder::Config::default().bid_timeout.as_millis() as u64;
    b.handle_timeout(ms(timeout + 1), &mut v);
    let _ = sent(&mut b);
    b.handle_message(
        ms(timeout + 100),
        n("a"),
        PeerMessage::Award(Award {
            bid_id: first.bid_id,
            task_id: task.clone(),
            lease_id: LeaseId(7),
            lease_ms: 3000,
            ports: vec![],
        }),
        &mut v,
    )
    .unwrap();
    let out = sent(&mut b);
    assert!(
        out.iter().any(|t| matches!(&t.msg, PeerMessage::Release(r) if r.lease_id == LeaseId(7) && r.task_id == task)),
        "{out:?}"
    );
    assert_eq!(b.stats().releases, 1);
}

#[test]
fn bidder_retries_with_backoff_after_rejects_and_heals_its_view() {
    let mut v = view(&[("a", 8192, 8192, 1)]);
    let (mut b, task, first) = bid_once(&mut v, spec(1000, 4096));
    // the node is fuller than gossip said
    let reject = Reject {
        bid_id: first.bid_id,
        task_id: task.clone(),
        reason: RejectReason::Insufficient(vec![agora_protocol::resources::Dimension::Mem]),
        free: Resources::cpu_mem(4000, 1024),
        free_version: 5,
    };
    b.handle_message(ms(3), n("a"), PeerMessage::Reject(reject), &mut v)
        .unwrap();
    assert_eq!(
        v.get(&n("a")).unwrap().free.mem_mib,
        1024,
        "view healed from the reject"
    );
    assert_eq!(v.get(&n("a")).unwrap().version, 5);
    let retry_at = b.poll_timeout().unwrap();
    let cfg = bidder::Config::default();
    assert!(
        retry_at > ms(3) && retry_at <= ms(3) + cfg.backoff_base * 2,
        "{retry_at}"
    );
    b.handle_timeout(retry_at, &mut v);
    // the node is full but big enough in total: the bid waits there
    match sent(&mut b).pop().unwrap().msg {
        PeerMessage::Bid(x) => {
            assert_eq!(x.wait_ms, cfg.bid_wait.as_millis() as u32);
            assert_ne!(x.bid_id, first.bid_id);
        }
        other => panic!("{other:?}"),
    }
    // a bid that is never answered times out and is counted once
    b.handle_timeout(retry_at + cfg.bid_timeout, &mut v);
    assert_eq!(b.stats().bids_timed_out, 1);
    assert_eq!(b.outstanding_bids(), 0);
}

#[test]
fn bidder_gives_up_with_an_actionable_reason() {
    let cfg = bidder::Config {
        placement_timeout: Duration::from_secs(1),
        ..bidder::Config::default()
    };
    // too big for any node in total
    let mut v = view(&[("n16", 32768, 32768, 1), ("n17", 32768, 31744, 1)]);
    let mut b = bidder_with(cfg.clone());
    b.submit(ms(0), spec(1000, 65536)).unwrap();
    let mut t = ms(0);
    while let Some(next) = b.poll_timeout() {
        t = next;
        b.handle_timeout(t, &mut v);
        sent(&mut b);
    }
    assert!(t <= ms(1000));
    let reason = failure_reason(&mut b);
    assert_eq!(
        reason,
        "no node can ever fit 64 GiB mem: the largest node has 32 GiB mem in total (n16)"
    );

    // big enough in total, but never enough free
    let mut v = view(&[("n16", 65536, 20480, 1), ("n17", 65536, 31744, 1)]);
    let mut b = bidder_with(cfg);
    b.submit(ms(0), spec(1000, 65536)).unwrap();
    let mut t;
    while let Some(next) = b.poll_timeout() {
        t = next;
        b.handle_timeout(t, &mut v);
        // every bid is rejected by its node with the same free vector
        for tr in sent(&mut b) {
            if let PeerMessage::Bid(x) = tr.msg {
                let free = v.get(&tr.to).unwrap().free;
                let r = Reject {
                    bid_id: x.bid_id,
                    task_id: x.task_id,
                    reason: RejectReason::Insufficient(vec![]),
                    free: Resources::cpu_mem(4000, if tr.to == n("n16") { 20480 } else { 31744 }),
                    free_version: 2,
                };
                let _ = free;
                b.handle_message(t, tr.to, PeerMessage::Reject(r), &mut v)
                    .unwrap();
            }
        }
    }
    let reason = failure_reason(&mut b);
    assert!(
        reason.starts_with("no node has 64 GiB mem free; largest free is 31 GiB mem on n17"),
        "{reason}"
    );
}

#[test]
fn bidder_reports_lost_tasks_and_kills_zombies() {
    let mut v = view(&[("a", 8192, 8192, 1)]);
    let (mut b, task, x) = bid_once(&mut v, spec(1000, 1024));
    b.handle_message(
        ms(1),
        n("a"),
        PeerMessage::Award(Award {
            bid_id: x.bid_id,
            task_id: task.clone(),
            lease_id: LeaseId(1),
            lease_ms: 3000,
            ports: vec![],
        }),
        &mut v,
    )
    .unwrap();
    // the Confirmed answer is lost, but a Running status proves the launch;
    // its free vector (version 5, newer than the view's 1) heals the view
    let mut running = TaskStatus::new(task.clone(), TaskState::Running, Some(n("a")));
    running.reason = None;
    b.handle_message(
        ms(2),
        n("a"),
        PeerMessage::Status(StatusUpdate {
            seq: 1,
            framework: fw("f@home"),
            status: running.clone(),
            free: Resources::cpu_mem(3000, 7168),
            free_version: 5,
        }),
        &mut v,
    )
    .unwrap();
    let a = v.get(&n("a")).unwrap();
    assert_eq!((a.free, a.version), (Resources::cpu_mem(3000, 7168), 5));
    let out = sent(&mut b);
    assert!(
        out.iter()
            .any(|t| matches!(&t.msg, PeerMessage::StatusAck(a) if a.seq == 1))
    );
    b.node_down(ms(3), &n("a"));
    let ev = events(&mut b);
    let states: Vec<TaskState> = ev
        .iter()
        .filter_map(|e| match e {
            BEvent::Status { status, .. } => Some(status.state),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        vec![TaskState::Starting, TaskState::Running, TaskState::Lost]
    );
    // the node was only partitioned: its next update is acked and the task killed there
    b.handle_message(
        ms(4),
        n("a"),
        PeerMessage::Status(StatusUpdate {
            seq: 2,
            framework: fw("f@home"),
            status: running,
            free: Resources::cpu_mem(0, 0),
            free_version: 4,
        }),
        &mut v,
    )
    .unwrap();
    // an older free vector than the view's does not overwrite it
    assert_eq!(v.get(&n("a")).unwrap().free, Resources::cpu_mem(3000, 7168));
    let out = sent(&mut b);
    assert!(
        out.iter()
            .any(|t| matches!(&t.msg, PeerMessage::Kill(k) if k.task_id == task))
    );
    assert!(
        events(&mut b).is_empty(),
        "a lost task is not reported twice"
    );
}

#[test]
fn full_nodes_that_tie_are_drawn_evenly_not_by_id() {
    // 40 identical full nodes: bids wait there, spread over many of them
    let nodes: Vec<(String, u64, u64, u64)> =
        (0..40).map(|i| (format!("n{i:02}"), 8192, 0, 1)).collect();
    let refs: Vec<(&str, u64, u64, u64)> = nodes
        .iter()
        .map(|(a, b, c, d)| (a.as_str(), *b, *c, *d))
        .collect();
    let mut v = view(&refs);
    let mut b = bidder_with(bidder::Config::default());
    for _ in 0..40 {
        b.submit(ms(0), spec(1000, 1024)).unwrap();
    }
    b.handle_timeout(ms(0), &mut v);
    let targets: std::collections::BTreeSet<NodeId> =
        sent(&mut b).into_iter().map(|t| t.to).collect();
    assert!(
        targets.len() >= 20,
        "bids herded onto {} nodes: {targets:?}",
        targets.len()
    );
}

#[test]
fn offer_mode_bids_on_the_named_node_only() {
    let mut v = view(&[("a", 8192, 8192, 1), ("b", 8192, 8192, 1)]);
    let mut b = bidder_with(bidder::Config::default());
    let task = b.submit_on(ms(0), spec(1000, 1024), n("b")).unwrap();
    b.handle_timeout(ms(0), &mut v);
    let out = sent(&mut b);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, n("b"));
    let x = match &out[0].msg {
        PeerMessage::Bid(x) => x.clone(),
        other => panic!("{other:?}"),
    };
    b.handle_message(
        ms(1),
        n("b"),
        PeerMessage::Reject(Reject {
            bid_id: x.bid_id,
            task_id: task,
            reason: RejectReason::Outbid,
            free: Resources::ZERO,
            free_version: 9,
        }),
        &mut v,
    )
    .unwrap();
    let reason = failure_reason(&mut b);
    assert_eq!(
        reason,
        "node b gave its free resources to higher-ranked bids"
    );
    assert_eq!(b.active_tasks(), 0);
}

#[test]
fn unique_constraint_keeps_a_job_off_a_used_rack() {
    let mut v = ClusterView::new();
    for (id, rack) in [("a", "r1"), ("b", "r1"), ("c", "r2")] {
        let mut attrs = Attributes::default();
        attrs.insert("rack", rack);
        v.upsert(NodeInfo::new(n(id), Resources::cpu_mem(4000, 8192), attrs));
    }
    let mut b = bidder_with(bidder::Config {
        candidates: 1,
        ..bidder::Config::default()
    });
    let mut s = spec(100, 0);
    s.constraints = vec!["rack:unique".parse().unwrap()];
    for _ in 0..3 {
        b.submit(ms(0), s.clone()).unwrap();
    }
    b.handle_timeout(ms(0), &mut v);
    let targets: Vec<NodeId> = sent(&mut b).into_iter().map(|t| t.to).collect();
    // two tasks bid, one per rack; the third finds no rack free and waits
    assert_eq!(targets.len(), 2, "{targets:?}");
    let racks: std::collections::BTreeSet<&str> = targets
        .iter()
        .map(|t| v.get(t).unwrap().attrs.get("rack").unwrap())
        .collect();
    assert_eq!(racks.len(), 2);
}
