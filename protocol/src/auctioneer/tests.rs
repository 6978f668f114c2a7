//! Unit tests of two ledger rules issue 12 asked for: tasks re-adopted
//! after a restart are always counted, even past a smaller capacity (the
//! node is then overcommitted and awards nothing until enough end), and a
//! node its shell marks unavailable (data dir full or read-only) advertises
//! nothing free, rejects bids and refuses confirms until it is available
//! again.

use super::*;
use crate::task::Command;

fn n(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn ms(v: u64) -> Instant {
    Instant::from_millis(v)
}

fn spec(cpu: u64) -> TaskSpec {
    TaskSpec::new(
        "job",
        Command::Shell("true".into()),
        Resources::cpu_mem(cpu, 0),
    )
}

fn auctioneer(cpu: u64) -> Auctioneer {
    Auctioneer::new(
        n("node"),
        Resources::cpu_mem(cpu, 4096),
        PortSet::parse("9000-9003").unwrap(),
        Attributes::default(),
        Config::default(),
    )
}

fn bid(id: u64, cpu: u64) -> Bid {
    let f = FrameworkId::new("fw").unwrap();
    Bid {
        bid_id: BidId(id),
        task_id: TaskId::for_framework(&f, id),
        framework: f,
        weight: 1,
        spec: Box::new(spec(cpu)),
        price: 0,
        wait_ms: 1000,
    }
}

fn adopt(a: &mut Auctioneer, task: &str, cpu: u64) -> Result<(), Error> {
    a.adopt(
        TaskId::new(task).unwrap(),
        FrameworkId::new("fw").unwrap(),
        1,
        n("home"),
        &spec(cpu),
        vec![],
        TaskState::Running,
    )
}

/// What the node answered, in order: ("award" | "reject" | "confirmed" |
/// "refused", bid or lease id).
fn answers(a: &mut Auctioneer) -> Vec<(&'static str, u64)> {
    std::iter::from_fn(|| a.poll_transmit())
        .filter_map(|t| match t.msg {
            PeerMessage::Award(x) => Some(("award", x.bid_id.0)),
            PeerMessage::Reject(x) => Some(("reject", x.bid_id.0)),
            PeerMessage::Confirmed(x) => Some(("confirmed", x.lease_id.0)),
            PeerMessage::ConfirmRefused(x) => Some(("refused", x.lease_id.0)),
            _ => None,
        })
        .collect()
}

fn ended(task: &str) -> TaskStatus {
    TaskStatus::new(
        TaskId::new(task).unwrap(),
        TaskState::Killed,
        Some(n("node")),
    )
}

#[test]
fn readopted_tasks_past_a_smaller_capacity_are_counted_and_nothing_is_awarded() {
    // Restarted with 1 cpu; its tasks hold 2.
    let mut a = auctioneer(1000);
    adopt(&mut a, "fw.1", 1000).unwrap();
    adopt(&mut a, "fw.2", 1000).unwrap();
    assert_eq!(
        adopt(&mut a, "fw.2", 1000),
        Err(Error::AlreadyHeld(TaskId::new("fw.2").unwrap())),
        "the same task is not counted twice"
    );
    assert_eq!(a.running_count(), 2);
    assert_eq!(a.task_rows().len(), 2, "both are listed");
    assert_eq!(a.used().cpu_millis, 2000);
    assert_eq!(a.overcommitted(), Some(Resources::cpu_mem(1000, 0)));
    assert_eq!(a.free(), Resources::ZERO, "nothing is advertised free");

    a.handle_message(ms(0), n("h"), PeerMessage::Bid(bid(1, 100)))
        .unwrap();
    a.handle_timeout(ms(5)); // its window closes: nothing fits, it is held
    assert_eq!(answers(&mut a), vec![], "a bid waits: nothing fits");
    assert_eq!(a.held_count(), 1);
    // One ends: 1.0 of 1.0 held, still no room.
    a.task_status(ms(10), ended("fw.1")).unwrap();
    assert_eq!(a.overcommitted(), None);
    assert_eq!(a.free().cpu_millis, 0);
    a.handle_timeout(ms(16));
    assert_eq!(answers(&mut a), vec![]);
    // The other ends: room again, and the held bid gets it.
    a.task_status(ms(20), ended("fw.2")).unwrap();
    a.handle_timeout(ms(26));
    assert_eq!(answers(&mut a), vec![("award", 1)]);
    assert_eq!(a.free().cpu_millis, 900);
}

#[test]
fn an_unavailable_node_advertises_nothing_rejects_bids_and_refuses_confirms() {
    let mut a = auctioneer(1000);
    // A lease granted before, and a bid held for lack of room.
    a.handle_message(ms(0), n("h"), PeerMessage::Bid(bid(1, 800)))
        .unwrap();
    let lease = std::iter::from_fn(|| a.poll_transmit())
        .find_map(|t| match t.msg {
            PeerMessage::Award(x) => Some(x.lease_id),
            _ => None,
        })
        .unwrap();
    a.handle_message(ms(1), n("h"), PeerMessage::Bid(bid(2, 800)))
        .unwrap();
    a.handle_timeout(ms(10)); // the window closes: bid 2 is held
    assert_eq!(answers(&mut a), vec![]);
    assert_eq!(a.held_count(), 1);
    let before = a.version();
    let _ = std::iter::from_fn(|| a.poll_event()).count();

    a.set_unavailable(
        ms(20),
        Some("disk_full: the data dir's disk is full".into()),
    );
    assert_eq!(a.free(), Resources::ZERO);
    assert!(a.version() > before, "views take the new free vector");
    assert!(
        std::iter::from_fn(|| a.poll_event()).any(|e| matches!(
            e,
            Event::LedgerChanged { free, .. } if free == Resources::ZERO
        )),
        "the shell is told to gossip it"
    );
    assert_eq!(
        answers(&mut a),
        vec![("reject", 2)],
        "the held bid is let go"
    );
    a.handle_message(ms(30), n("h"), PeerMessage::Bid(bid(3, 100)))
        .unwrap();
    let reject = std::iter::from_fn(|| a.poll_transmit())
        .find_map(|t| match t.msg {
            PeerMessage::Reject(x) => Some(x),
            _ => None,
        })
        .expect("a new bid is rejected at once");
    assert_eq!(reject.bid_id, BidId(3));
    assert_eq!(reject.free, Resources::ZERO);
    assert!(matches!(reject.reason, RejectReason::Insufficient(_)));
    let confirm = |a: &mut Auctioneer, at| {
        a.handle_message(
            ms(at),
            n("h"),
            PeerMessage::Confirm(Confirm {
                lease_id: lease,
                task_id: bid(1, 800).task_id,
            }),
        )
        .unwrap();
    };
    confirm(&mut a, 40);
    let refused = std::iter::from_fn(|| a.poll_transmit())
        .find_map(|t| match t.msg {
            PeerMessage::ConfirmRefused(x) => Some(x),
            _ => None,
        })
        .expect("the earlier lease is not launched");
    assert!(refused.reason.contains("disk_full"), "{}", refused.reason);
    assert_eq!(a.lease_count(), 0, "its resources are given back");
    assert!(
        !std::iter::from_fn(|| a.poll_event()).any(|e| matches!(e, Event::Launch { .. })),
        "nothing is launched"
    );

    // Available again: bids are awarded.
    a.set_unavailable(ms(50), None);
    assert_eq!(a.free().cpu_millis, 1000);
    a.handle_message(ms(60), n("h"), PeerMessage::Bid(bid(4, 100)))
        .unwrap();
    assert_eq!(answers(&mut a), vec![("award", 4)]);
}

#[test]
fn an_unavailable_node_keeps_reporting_the_tasks_it_runs() {
    let mut a = auctioneer(1000);
    adopt(&mut a, "fw.1", 500).unwrap();
    a.set_unavailable(ms(0), Some("data_dir_read_only".into()));
    a.task_status(
        ms(1),
        TaskStatus::new(
            TaskId::new("fw.1").unwrap(),
            TaskState::Finished,
            Some(n("node")),
        ),
    )
    .unwrap();
    let sent: Vec<TaskState> = std::iter::from_fn(|| a.poll_transmit())
        .filter_map(|t| match t.msg {
            PeerMessage::Status(u) => Some(u.status.state),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![TaskState::Finished]);
    assert_eq!(a.free(), Resources::ZERO, "still nothing free");
}
