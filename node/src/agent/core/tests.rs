//! Cores on a virtual clock, wired by an in-test network: every output is
//! carried out by the test (messages delivered, launches started at once,
//! kills carried out), so a whole node's behaviour — sessions, routing of
//! listings and kills, timeouts — is checked without sockets or processes.

use super::*;
use crate::surface::Command;
use agora_protocol::TaskId;
use agora_protocol::constraint::Attributes;
use agora_protocol::resources::PortSet;
use agora_protocol::task::{Command as Argv, TaskSpec, TaskState};
use agora_protocol::wire::{Kill, Register, ServerMessage, Submit, TaskQuery};
use std::collections::BTreeSet;

fn nid(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn core(id: &str, cpus: u64) -> Core {
    core_of(id, cpus, 0)
}

/// A core whose node runs as `generation` (0: unknown, as in most tests).
fn core_of(id: &str, cpus: u64, generation: u64) -> Core {
    let host = Host::new(
        nid(id),
        Resources::cpu_mem(cpus * 1000, 4096),
        PortSet::default(),
        Attributes::default(),
        String::new(),
        host::Config {
            generation,
            ..host::Config::default()
        },
    );
    Core::new(host, Instant::ZERO)
}

fn spec(name: &str) -> TaskSpec {
    TaskSpec::new(
        name,
        Argv::Argv(vec!["true".into()]),
        Resources::cpu_mem(1000, 64),
    )
}

struct Net {
    now: Instant,
    cores: BTreeMap<NodeId, Core>,
    mute: BTreeSet<NodeId>,
    /// Replies each node gave, by asker.
    replies: Vec<(NodeId, Asker, Reply)>,
    /// Messages sent between nodes: (from, to, kind).
    sent: Vec<(NodeId, NodeId, &'static str)>,
    running: BTreeMap<TaskId, (NodeId, host::Launch)>,
    /// Each node's journal as the driver writes it: (bytes, bytes synced).
    journals: BTreeMap<NodeId, (Vec<u8>, usize, bool)>,
}

impl Net {
    fn new(cores: Vec<Core>) -> Net {
        let mut n = Net {
            now: Instant::ZERO,
            cores: cores.into_iter().map(|c| (c.me.clone(), c)).collect(),
            mute: BTreeSet::new(),
            replies: Vec::new(),
            sent: Vec::new(),
            running: BTreeMap::new(),
            journals: BTreeMap::new(),
        };
        n.gossip();
        n
    }

    fn c(&mut self, id: &str) -> &mut Core {
        self.cores.get_mut(&nid(id)).unwrap()
    }

    fn gossip(&mut self) {
        let infos: Vec<NodeInfo> = self
            .cores
            .values()
            .map(|c| {
                let mut i = c.host.view().get(&c.me).cloned().unwrap();
                i.alive = !self.mute.contains(&i.id);
                // As the node's gossip carries it (chitchat's generation).
                i.generation = c.host.generation();
                i
            })
            .collect();
        let now = self.now;
        for (id, c) in &mut self.cores {
            if !self.mute.contains(id) {
                let others = infos.iter().filter(|i| i.id != *id).cloned().collect();
                c.handle_members(now, others);
            }
        }
        self.settle();
    }

    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            let ids: Vec<NodeId> = self.cores.keys().cloned().collect();
            for id in &ids {
                let now = self.now;
                let mut outs = Vec::new();
                while let Some(o) = self.cores.get_mut(id).unwrap().poll_output() {
                    outs.push(o);
                }
                for o in outs {
                    moved = true;
                    match o {
                        Output::Transmit(t) => {
                            self.sent.push((id.clone(), t.to.clone(), t.msg.kind()));
                            if self.mute.contains(id) || self.mute.contains(&t.to) {
                                continue;
                            }
                            if let Some(dst) = self.cores.get_mut(&t.to) {
                                dst.handle_peer(now, id.clone(), t.msg);
                            }
                        }
                        Output::Exec(host::Exec::Launch(l)) => {
                            self.running
                                .insert(l.task_id.clone(), (id.clone(), l.clone()));
                            let st = TaskStatus::new(
                                l.task_id.clone(),
                                TaskState::Running,
                                Some(id.clone()),
                            );
                            self.c(id.as_str()).handle_exec(now, &l, st);
                        }
                        Output::Exec(host::Exec::Kill { task_id, .. }) => {
                            if let Some((_, l)) = self.running.remove(&task_id) {
                                let st =
                                    TaskStatus::new(task_id, TaskState::Killed, Some(id.clone()));
                                self.c(id.as_str()).handle_exec(now, &l, st);
                            }
                        }
                        Output::ReadLog { token, read } => {
                            let chunk = LogChunk {
                                request_id: 0,
                                task_id: read.task_id.clone(),
                                data: if self.running.contains_key(&read.task_id) {
                                    b"out".to_vec()
                                } else {
                                    Vec::new()
                                },
                                next_offset: 3,
                                eof: true,
                                error: (!self.running.contains_key(&read.task_id))
                                    .then(|| "no sandbox".to_string()),
                            };
                            self.c(id.as_str()).handle_local_log(now, token, chunk);
                        }
                        Output::Reply { to, reply } => {
                            // As the driver: the journal is synced first.
                            let j = self.journals.entry(id.clone()).or_default();
                            if j.2 {
                                j.1 = j.0.len();
                                j.2 = false;
                            }
                            self.replies.push((id.clone(), to, reply));
                        }
                        Output::Journal { bytes, sync } => {
                            let j = self.journals.entry(id.clone()).or_default();
                            j.0.extend_from_slice(&bytes);
                            j.2 |= sync;
                        }
                        Output::Publish(_)
                        | Output::PublishApi
                        | Output::SaveFrameworks(_)
                        | Output::Cells { .. }
                        | Output::Directory { .. }
                        | Output::Survey { .. } => {}
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network never settled");
    }

    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let next = self
                .cores
                .iter()
                .filter(|(id, _)| !self.mute.contains(*id))
                .map(|(_, c)| c.poll_timeout())
                .min()
                .unwrap();
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            for (id, c) in &mut self.cores {
                if !self.mute.contains(id) && c.poll_timeout() <= now {
                    c.handle_timeout(now);
                }
            }
            self.settle();
        }
        self.now = end;
    }

    fn command(&mut self, node: &str, asker: Asker, cmd: Command) {
        let now = self.now;
        self.c(node).handle_command(now, asker, cmd);
        self.settle();
    }

    /// The replies `node` gave `asker`, taken.
    fn take(&mut self, node: &str, asker: Asker) -> Vec<Reply> {
        let (mine, rest) = std::mem::take(&mut self.replies)
            .into_iter()
            .partition(|(n, a, _)| *n == nid(node) && *a == asker);
        self.replies = rest;
        mine.into_iter().map(|(_, _, r)| r).collect()
    }

    /// Registers a framework on `node` from connection `conn` and submits
    /// `n` tasks; returns their ids.
    fn submit(&mut self, node: &str, conn: u64, n: usize) -> Vec<TaskId> {
        self.c(node)
            .handle_open(conn, crate::socket::Peer::trusted());
        self.command(
            node,
            Asker::Conn(conn),
            Command::Register(Register {
                name: "batch".into(),
                role: String::new(),
                weight: 1,
                failover_timeout_ms: 5_000,
                framework_id: None,
            }),
        );
        let tasks = (0..n).map(|i| spec(&format!("t{i}"))).collect();
        self.command(
            node,
            Asker::Conn(conn),
            Command::Submit(Submit {
                request_id: 1,
                tasks,
            }),
        );
        self.advance(Duration::from_millis(200));
        self.replies
            .iter()
            .find_map(|(n, a, r)| match r {
                Reply::Submitted(s) if *n == nid(node) && *a == Asker::Conn(conn) => {
                    Some(s.task_ids.clone())
                }
                _ => None,
            })
            .expect("submitted")
    }
}

#[test]
fn a_task_runs_elsewhere_and_its_status_reaches_the_connection() {
    let mut net = Net::new(vec![core("a", 0), core("b", 4)]);
    let ids = net.submit("a", 1, 1);
    assert_eq!(net.running[&ids[0]].0, nid("b"));
    net.advance(Duration::from_millis(100));
    let mut seen = Vec::new();
    for r in &net.replies {
        if let (_, Asker::Conn(1), Reply::Status(e)) = r {
            seen.push(e.status.state);
        }
    }
    assert!(seen.contains(&TaskState::Running), "{seen:?}");
}

#[test]
fn a_kill_from_another_node_asks_the_home_then_only_the_running_node() {
    let mut net = Net::new(vec![core("a", 0), core("b", 4), core("c", 0), core("d", 0)]);
    let ids = net.submit("a", 1, 1);
    net.sent.clear();
    net.command(
        "c",
        Asker::Http(5),
        Command::Kill(Kill {
            task_id: ids[0].clone(),
        }),
    );
    assert_eq!(
        net.take("c", Asker::Http(5)),
        vec![Reply::KillSent(ids[0].clone())]
    );
    let from_c: Vec<_> = net
        .sent
        .iter()
        .filter(|(f, _, _)| *f == nid("c"))
        .map(|(_, to, k)| (to.as_str().to_string(), *k))
        .collect();
    assert_eq!(
        from_c,
        vec![("a".to_string(), "list_tasks"), ("b".to_string(), "kill")],
        "the home is asked where it runs, then only that node is told"
    );
    assert!(!net.running.contains_key(&ids[0]));
    // The killed task's end is known at home, and a second kill says so
    // (it said "no live node knows task" before, issue 11).
    net.advance(Duration::from_millis(100));
    net.c("c").handle_open(9, crate::socket::Peer::trusted());
    net.command(
        "c",
        Asker::Conn(9),
        Command::Kill(Kill {
            task_id: ids[0].clone(),
        }),
    );
    let r = net.take("c", Asker::Conn(9));
    assert!(
        matches!(&r[..], [Reply::Error(e)] if e.message.contains("already ended")),
        "{r:?}"
    );
}

#[test]
fn a_listing_names_the_node_that_did_not_answer_after_the_timeout() {
    let mut net = Net::new(vec![core("a", 2), core("b", 2), core("c", 2)]);
    let ids = net.submit("a", 1, 2);
    // b stops answering but is not declared dead yet.
    net.mute.insert(nid("b"));
    net.command("c", Asker::Conn(3), Command::ListTasks(TaskQuery::all(42)));
    assert!(net.take("c", Asker::Conn(3)).is_empty(), "waits for b");
    net.advance(super::super::queries::QUERY_TIMEOUT);
    let r = net.take("c", Asker::Conn(3));
    let [Reply::Tasks(page)] = &r[..] else {
        panic!("{r:?}")
    };
    assert_eq!(page.request_id, 42);
    assert_eq!(page.unreachable, vec![nid("b")]);
    let listed: Vec<&TaskId> = page.tasks.iter().map(|t| &t.task_id).collect();
    assert_eq!(
        listed,
        ids.iter().collect::<Vec<_>>(),
        "a, the home, answered for both"
    );
}

#[test]
fn a_framework_gone_past_its_failover_timeout_has_its_tasks_killed() {
    let mut net = Net::new(vec![core("a", 4)]);
    let ids = net.submit("a", 1, 2);
    assert_eq!(net.running.len(), 2);
    let now = net.now;
    net.c("a").handle_closed(now, 1);
    net.advance(Duration::from_millis(4_000));
    assert_eq!(net.running.len(), 2, "within the failover timeout");
    net.advance(Duration::from_millis(1_500));
    assert!(net.running.is_empty(), "killed after it");
    // Its history stays: the rows are still listed.
    net.command("a", Asker::Http(1), Command::GetTask(ids[1].clone()));
    let r = net.take("a", Asker::Http(1));
    assert!(
        matches!(&r[..], [Reply::Task(Some(row))] if row.state == TaskState::Killed),
        "{r:?}"
    );
}

#[test]
fn a_log_read_elsewhere_finds_the_running_node_through_the_home() {
    let mut net = Net::new(vec![core("a", 0), core("b", 4), core("c", 0)]);
    let ids = net.submit("a", 1, 1);
    net.command(
        "c",
        Asker::Conn(2),
        Command::ReadLog(agora_protocol::wire::ReadLog {
            request_id: 8,
            task_id: ids[0].clone(),
            stream: agora_protocol::wire::LogStream::Stdout,
            offset: 0,
            max_bytes: 100,
        }),
    );
    let r = net.take("c", Asker::Conn(2));
    let [Reply::Log(chunk)] = &r[..] else {
        panic!("{r:?}")
    };
    assert_eq!(chunk.request_id, 8);
    assert_eq!(chunk.data, b"out");
    assert!(chunk.error.is_none());
}

#[test]
fn unregistered_connections_may_only_look_and_kill() {
    let mut net = Net::new(vec![core("a", 1)]);
    net.c("a").handle_open(7, crate::socket::Peer::trusted());
    net.command(
        "a",
        Asker::Conn(7),
        Command::Submit(Submit {
            request_id: 3,
            tasks: vec![spec("x")],
        }),
    );
    let r = net.take("a", Asker::Conn(7));
    assert!(
        matches!(&r[..], [Reply::Error(e)] if e.code == ErrorCode::NotRegistered),
        "{r:?}"
    );
    // An HTTP submit without the HTTP side enabled is refused, not lost.
    net.command(
        "a",
        Asker::Http(1),
        Command::Submit(Submit {
            request_id: 0,
            tasks: vec![spec("x")],
        }),
    );
    let r = net.take("a", Asker::Http(1));
    assert!(
        matches!(&r[..], [Reply::Error(e)] if e.code == ErrorCode::Busy),
        "{r:?}"
    );
    // Socket frames: a kill's success has none.
    assert!(
        Reply::KillSent(TaskId::new("f.1").unwrap())
            .into_server_message()
            .is_none()
    );
    assert!(matches!(
        Reply::Tasks(TaskPage {
            request_id: 1,
            tasks: Vec::new(),
            matched: 0,
            unreachable: Vec::new()
        })
        .into_server_message(),
        Some(ServerMessage::Tasks(_))
    ));
}

#[test]
fn a_peer_that_may_not_operate_runs_its_own_framework_and_nothing_more() {
    // Issue 12: a task reached the socket, registered as operator and
    // killed another framework's task.
    let mut net = Net::new(vec![core("a", 2)]);
    let victim = net.submit("a", 1, 1);
    assert!(net.running.contains_key(&victim[0]));
    let stranger = crate::socket::Peer {
        uid: Some(65534),
        pid: Some(4242),
        operator: false,
    };
    net.c("a").handle_open(2, stranger);
    let register = |role: &str| {
        Command::Register(Register {
            name: "intruder".into(),
            role: role.into(),
            weight: 1,
            failover_timeout_ms: 1_000,
            framework_id: None,
        })
    };
    let kill = || {
        Command::Kill(Kill {
            task_id: victim[0].clone(),
        })
    };
    let forbidden = |r: &[Reply]| {
        matches!(r, [Reply::Error(e)] if e.code == ErrorCode::Forbidden
            && e.message.contains("uid 65534")
            && e.message.contains("--operator-group"))
    };
    net.command(
        "a",
        Asker::Conn(2),
        register(agora_protocol::wire::OPERATOR_ROLE),
    );
    let r = net.take("a", Asker::Conn(2));
    assert!(forbidden(&r), "{r:?}");
    assert!(
        net.c("a").sessions.operator().is_none(),
        "no operator framework made for it"
    );
    // `agora kill`'s way: a kill without registering.
    net.command("a", Asker::Conn(2), kill());
    let r = net.take("a", Asker::Conn(2));
    assert!(forbidden(&r), "{r:?}");
    // As a framework of its own it may register, and kill only its own.
    net.command("a", Asker::Conn(2), register(""));
    let r = net.take("a", Asker::Conn(2));
    assert!(matches!(&r[..], [Reply::Registered(_)]), "{r:?}");
    net.command("a", Asker::Conn(2), kill());
    let r = net.take("a", Asker::Conn(2));
    assert!(matches!(&r[..], [Reply::Error(_)]), "{r:?}");
    net.advance(Duration::from_millis(200));
    assert!(
        net.running.contains_key(&victim[0]),
        "the other framework's task runs on"
    );
}

fn launch(task: &str, home: &str, cpus: u64) -> host::Launch {
    let framework = FrameworkId::new(format!("gone-1@{home}")).unwrap();
    host::Launch {
        task_id: TaskId::for_framework(&framework, task.parse().unwrap()),
        framework,
        weight: 1,
        home: nid(home),
        spec: TaskSpec::new(
            "old",
            Argv::Argv(vec!["sleep".into()]),
            Resources::cpu_mem(cpus * 1000, 0),
        ),
        ports: vec![],
    }
}

fn published(c: &mut Core) -> Vec<Ledger> {
    std::iter::from_fn(|| c.poll_output())
        .filter_map(|o| match o {
            Output::Publish(l) => Some(l),
            _ => None,
        })
        .collect()
}

/// Issue 12: restarted with 1 cpu, a node that re-attached tasks holding 2
/// listed and counted only one of them.
#[test]
fn tasks_reattached_past_a_smaller_capacity_are_counted_listed_and_kept_once_ended() {
    let mut c = core("n1", 1);
    let (a, b) = (launch("1", "n1", 1), launch("2", "n1", 1));
    c.recover(
        Instant::ZERO,
        vec![],
        vec![Recovered::Running(a.clone()), Recovered::Running(b.clone())],
    );
    let rows = c.local_listing();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.state == TaskState::Running));
    assert_eq!(c.ledger().free, Resources::ZERO, "nothing advertised free");
    // Their framework (homed here in the previous run) is gone: once a task
    // ends, the node keeps its row.
    let now = Instant::from_millis(10);
    c.handle_exec(
        now,
        &a,
        TaskStatus::new(a.task_id.clone(), TaskState::Killed, Some(nid("n1"))),
    );
    let ended = c
        .local_listing()
        .into_iter()
        .find(|r| r.task_id == a.task_id)
        .expect("the ended task is still listed");
    assert_eq!(ended.state, TaskState::Killed);
    assert_eq!(c.ledger().free.cpu_millis, 0, "1.0 of 1.0 still held");
}

/// Issue 12: a node whose data dir is full kept advertising its resources.
#[test]
fn a_data_dir_that_cannot_take_tasks_stops_the_node_taking_them_until_it_can() {
    let mut c = core("n1", 2);
    let now = Instant::from_millis(100);
    let _ = published(&mut c);
    let problem = DataDirProblem {
        fault: crate::executor::DataDirFault::DiskFull,
        detail: "the data dir's disk has 0 B free".into(),
    };
    c.handle_data_dir(now, Some(problem));
    assert_eq!(
        c.host()
            .auctioneer()
            .unavailable()
            .map(|w| w.starts_with("disk_full")),
        Some(true)
    );
    let later = now + PUBLISH_EVERY;
    c.handle_timeout(later);
    let ledgers = published(&mut c);
    assert_eq!(
        ledgers.last().map(|l| l.free),
        Some(Resources::ZERO),
        "{ledgers:?}"
    );
    c.handle_data_dir(later, None);
    c.handle_timeout(later + PUBLISH_EVERY);
    let ledgers = published(&mut c);
    assert_eq!(
        ledgers.last().map(|l| l.free.cpu_millis),
        Some(2000),
        "{ledgers:?}"
    );
}

#[test]
fn tasks_waiting_for_a_place_when_their_home_crashes_are_placed_after_its_restart() {
    // a homes the framework; b has room for one of its three tasks. a is
    // SIGKILLed with two tasks still waiting: what it synced before it
    // answered `submitted` brings them back, and after the restore window
    // they are placed (the old code knew nothing of them: a reconcile
    // reported them lost, though their submit had been acknowledged).
    let mut net = Net::new(vec![core_of("a", 0, 1), core_of("b", 1, 1)]);
    let ids = net.submit("a", 1, 3);
    assert_eq!(ids.len(), 3);
    assert_eq!(net.running.len(), 1, "b has room for one");
    let records = net.c("a").framework_records();
    let (bytes, synced, _) = net.journals[&nid("a")].clone();
    let journal = crate::agent::journal::decode(&bytes[..synced]);
    assert_eq!(journal.tasks.values().map(Vec::len).sum::<usize>(), 3);
    // The crash: whatever was not synced is lost too.
    let now = net.now;
    let mut a = core_of("a", 0, 1_000);
    a.restore(now, records, journal.tasks);
    a.recover(now, Vec::new(), Vec::new());
    net.cores.insert(nid("a"), a);
    net.gossip();
    // The framework reattaches, as after a dropped connection.
    let fw = FrameworkId::new(ids[0].framework_part()).unwrap();
    net.c("a").handle_open(2, crate::socket::Peer::trusted());
    net.command(
        "a",
        Asker::Conn(2),
        Command::Register(Register {
            name: "batch".into(),
            role: String::new(),
            weight: 1,
            failover_timeout_ms: 5_000,
            framework_id: Some(fw.clone()),
        }),
    );
    // The running task ends on b; the other two take its room in turn.
    for _ in 0..3 {
        net.advance(Duration::from_secs(11));
        let done: Vec<TaskId> = net.running.keys().cloned().collect();
        for t in done {
            if let Some((node, l)) = net.running.remove(&t) {
                let now = net.now;
                let st = TaskStatus::new(t, TaskState::Finished, Some(node.clone()));
                net.c(node.as_str()).handle_exec(now, &l, st);
            }
        }
        net.settle();
    }
    let bidder = net.c("a").host.bidder(&fw).unwrap();
    for id in &ids {
        let (_, st) = bidder.status_of(id).unwrap();
        assert_eq!(st.state, TaskState::Finished, "{id}: {st:?}");
    }
    assert_eq!(bidder.stats().replaced_after_restart, 2);
}
