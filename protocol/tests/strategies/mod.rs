//! proptest strategies for every wire type, shared by the codec tests.

#![allow(dead_code)]

use agora_protocol::constraint::{Attributes, Constraint};
use agora_protocol::ids::{BidId, FrameworkId, LeaseId, NodeId, TaskId};
use agora_protocol::resources::{Dimension, Resources};
use agora_protocol::task::{Command, Priority, TaskSpec, TaskState, TaskStatus};
use agora_protocol::wire::*;
use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;

pub fn word() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,11}"
}

pub fn text() -> impl Strategy<Value = String> {
    // any unicode, including quotes and control characters
    any::<String>()
}

pub fn node_id() -> impl Strategy<Value = NodeId> {
    word().prop_map(|s| NodeId::new(s).unwrap())
}

pub fn framework_id() -> impl Strategy<Value = FrameworkId> {
    word().prop_map(|s| FrameworkId::new(format!("{s}@n1")).unwrap())
}

pub fn task_id() -> impl Strategy<Value = TaskId> {
    (framework_id(), any::<u64>()).prop_map(|(f, n)| TaskId::for_framework(&f, n))
}

pub fn resources() -> impl Strategy<Value = Resources> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(cpu_millis, mem_mib, disk_mib, gpus, ports)| Resources {
            cpu_millis,
            mem_mib,
            disk_mib,
            gpus,
            ports,
        })
}

pub fn dimension() -> impl Strategy<Value = Dimension> {
    prop::sample::select(Dimension::ALL.to_vec())
}

pub fn attrs() -> impl Strategy<Value = Attributes> {
    btree_map(word(), word(), 0..4).prop_map(Attributes)
}

pub fn constraint() -> impl Strategy<Value = Constraint> {
    prop_oneof![
        (word(), word()).prop_map(|(key, value)| Constraint::Eq { key, value }),
        (word(), word()).prop_map(|(key, value)| Constraint::Ne { key, value }),
        (word(), btree_set(word(), 1..4)).prop_map(|(key, values)| Constraint::In { key, values }),
        word().prop_map(|key| Constraint::Unique { key }),
        word().prop_map(|key| Constraint::Spread { key }),
    ]
}

pub fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        vec(text(), 0..4).prop_map(Command::Argv),
        text().prop_map(Command::Shell),
    ]
}

pub fn spec() -> impl Strategy<Value = TaskSpec> {
    (
        text(),
        command(),
        btree_map(text(), text(), 0..3),
        resources(),
        vec(constraint(), 0..3),
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(
                name,
                command,
                env,
                resources,
                constraints,
                p,
                kill_grace_ms,
                placement_timeout_ms,
            )| {
                TaskSpec {
                    name,
                    command,
                    env,
                    resources,
                    constraints,
                    priority: Priority(p),
                    kill_grace_ms,
                    placement_timeout_ms,
                }
            },
        )
}

pub fn state() -> impl Strategy<Value = TaskState> {
    prop::sample::select(vec![
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Lost,
    ])
}

pub fn status() -> impl Strategy<Value = TaskStatus> {
    (
        task_id(),
        state(),
        option::of(node_id()),
        option::of(any::<i32>()),
        option::of(any::<i32>()),
        option::of(text()),
    )
        .prop_map(
            |(task_id, state, node, exit_code, signal, reason)| TaskStatus {
                task_id,
                state,
                node,
                exit_code,
                signal,
                reason,
            },
        )
}

pub fn reject_reason() -> impl Strategy<Value = RejectReason> {
    prop_oneof![
        vec(dimension(), 0..3).prop_map(RejectReason::Insufficient),
        Just(RejectReason::Outbid),
        Just(RejectReason::Constraints),
        Just(RejectReason::Busy),
        text().prop_map(RejectReason::InvalidSpec),
        Just(RejectReason::Draining),
        Just(RejectReason::Withdrawn),
    ]
}

pub fn stream() -> impl Strategy<Value = LogStream> {
    prop_oneof![Just(LogStream::Stdout), Just(LogStream::Stderr)]
}

pub fn task_row() -> impl Strategy<Value = TaskRow> {
    (
        task_id(),
        text(),
        framework_id(),
        state(),
        option::of(node_id()),
        option::of(any::<i32>()),
        resources(),
        option::of(text()),
    )
        .prop_map(
            |(task_id, name, framework, state, node, exit_code, resources, reason)| TaskRow {
                task_id,
                name,
                framework,
                state,
                node,
                exit_code,
                resources,
                reason,
            },
        )
}

pub fn log_chunk() -> impl Strategy<Value = LogChunk> {
    (
        any::<u64>(),
        task_id(),
        vec(any::<u8>(), 0..64),
        any::<u64>(),
        any::<bool>(),
        option::of(text()),
    )
        .prop_map(
            |(request_id, task_id, data, next_offset, eof, error)| LogChunk {
                request_id,
                task_id,
                data,
                next_offset,
                eof,
                error,
            },
        )
}

pub fn peer_message() -> impl Strategy<Value = PeerMessage> {
    let lease = any::<u64>().prop_map(LeaseId);
    let bid = any::<u64>().prop_map(BidId);
    prop_oneof![
        (
            bid.clone(),
            task_id(),
            framework_id(),
            any::<u32>(),
            spec(),
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(
                |(bid_id, task_id, framework, weight, spec, price, wait_ms)| PeerMessage::Bid(
                    Bid {
                        bid_id,
                        task_id,
                        framework,
                        weight,
                        spec: Box::new(spec),
                        price,
                        wait_ms,
                    }
                )
            ),
        (any::<u64>(), task_id()).prop_map(|(b, task_id)| PeerMessage::Withdraw(Withdraw {
            bid_id: BidId(b),
            task_id
        })),
        (
            bid.clone(),
            task_id(),
            lease.clone(),
            any::<u32>(),
            vec(any::<u16>(), 0..4)
        )
            .prop_map(
                |(bid_id, task_id, lease_id, lease_ms, ports)| PeerMessage::Award(Award {
                    bid_id,
                    task_id,
                    lease_id,
                    lease_ms,
                    ports
                })
            ),
        (bid, task_id(), reject_reason(), resources(), any::<u64>()).prop_map(
            |(bid_id, task_id, reason, free, free_version)| PeerMessage::Reject(Reject {
                bid_id,
                task_id,
                reason,
                free,
                free_version
            })
        ),
        (lease.clone(), task_id())
            .prop_map(|(lease_id, task_id)| PeerMessage::Confirm(Confirm { lease_id, task_id })),
        (lease.clone(), task_id()).prop_map(|(lease_id, task_id)| PeerMessage::Confirmed(
            Confirmed { lease_id, task_id }
        )),
        (lease.clone(), task_id(), text()).prop_map(|(lease_id, task_id, reason)| {
            PeerMessage::ConfirmRefused(ConfirmRefused {
                lease_id,
                task_id,
                reason,
            })
        }),
        (lease, task_id())
            .prop_map(|(lease_id, task_id)| PeerMessage::Release(Release { lease_id, task_id })),
        (
            any::<u64>(),
            framework_id(),
            status(),
            resources(),
            any::<u64>()
        )
            .prop_map(|(seq, framework, status, free, free_version)| {
                PeerMessage::Status(StatusUpdate {
                    seq,
                    framework,
                    status,
                    free,
                    free_version,
                })
            }),
        (task_id(), any::<u64>())
            .prop_map(|(task_id, seq)| PeerMessage::StatusAck(StatusAck { task_id, seq })),
        task_id().prop_map(|task_id| PeerMessage::Kill(Kill { task_id })),
        (
            any::<u64>(),
            task_id(),
            stream(),
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(|(request_id, task_id, stream, offset, max_bytes)| {
                PeerMessage::LogRead(LogRead {
                    request_id,
                    task_id,
                    stream,
                    offset,
                    max_bytes,
                })
            }),
        log_chunk().prop_map(PeerMessage::LogChunk),
        any::<u64>().prop_map(|request_id| PeerMessage::ListTasks(TaskQuery::all(request_id))),
        (any::<u64>(), vec(task_row(), 0..3)).prop_map(
            |(request_id, tasks)| PeerMessage::TaskList(TaskList {
                request_id,
                matched: tasks.len() as u64,
                tasks
            })
        ),
        (any::<u64>(), vec(task_row(), 0..3))
            .prop_map(|(version, rows)| PeerMessage::Witness(WitnessRows { version, rows })),
    ]
}

pub fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (
            text(),
            text(),
            any::<u32>(),
            any::<u32>(),
            option::of(framework_id())
        )
            .prop_map(|(name, role, weight, failover_timeout_ms, framework_id)| {
                ClientMessage::Register(Register {
                    name,
                    role,
                    weight,
                    failover_timeout_ms,
                    framework_id,
                })
            }),
        (any::<u64>(), vec(spec(), 0..3))
            .prop_map(|(request_id, tasks)| ClientMessage::Submit(Submit { request_id, tasks })),
        Just(ClientMessage::SubscribeOffers),
        Just(ClientMessage::UnsubscribeOffers),
        (any::<u64>(), node_id(), spec()).prop_map(|(request_id, node, task)| {
            ClientMessage::BidOn(BidOn {
                request_id,
                node,
                task,
            })
        }),
        task_id().prop_map(|task_id| ClientMessage::Kill(Kill { task_id })),
        vec(task_id(), 0..3).prop_map(ClientMessage::Reconcile),
        (task_id(), any::<u64>())
            .prop_map(|(task_id, seq)| ClientMessage::Ack(StatusAck { task_id, seq })),
        (
            any::<u64>(),
            option::of(task_id()),
            option::of(text()),
            option::of(node_id()),
            any::<u32>()
        )
            .prop_map(|(request_id, task_id, name, node, limit)| {
                ClientMessage::ListTasks(TaskQuery {
                    request_id,
                    task_id,
                    name,
                    node,
                    limit,
                    ..TaskQuery::default()
                })
            }),
        any::<u64>().prop_map(|request_id| ClientMessage::ListNodes(ListTasks { request_id })),
        (
            any::<u64>(),
            task_id(),
            stream(),
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(|(request_id, task_id, stream, offset, max_bytes)| {
                ClientMessage::ReadLog(ReadLog {
                    request_id,
                    task_id,
                    stream,
                    offset,
                    max_bytes,
                })
            }),
    ]
}

pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::BadHandshake,
        ErrorCode::UnsupportedVersion,
        ErrorCode::BadFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::NotRegistered,
        ErrorCode::InvalidSpec,
        ErrorCode::UnknownTask,
        ErrorCode::UnknownNode,
        ErrorCode::Busy,
        ErrorCode::UnknownFramework,
        ErrorCode::Internal,
        ErrorCode::Forbidden,
    ])
}

pub fn offer() -> impl Strategy<Value = Offer> {
    (node_id(), resources(), resources(), attrs(), any::<u64>()).prop_map(
        |(node, free, total, attrs, version)| Offer {
            node,
            free,
            total,
            attrs,
            version,
        },
    )
}

pub fn node_row() -> impl Strategy<Value = NodeRow> {
    (
        node_id(),
        text(),
        any::<bool>(),
        resources(),
        resources(),
        attrs(),
    )
        .prop_map(|(id, addr, alive, total, free, attrs)| NodeRow {
            id,
            addr,
            alive,
            total,
            free,
            attrs,
        })
}

pub fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (any::<u32>(), node_id())
            .prop_map(|(version, node_id)| ServerMessage::Welcome(Welcome { version, node_id })),
        (framework_id(), any::<bool>()).prop_map(|(framework_id, reattached)| {
            ServerMessage::Registered(Registered {
                framework_id,
                reattached,
            })
        }),
        (any::<u64>(), vec(task_id(), 0..3)).prop_map(|(request_id, task_ids)| {
            ServerMessage::Submitted(Submitted {
                request_id,
                task_ids,
            })
        }),
        vec(offer(), 0..3).prop_map(ServerMessage::Offers),
        (any::<u64>(), text(), status()).prop_map(|(seq, name, status)| ServerMessage::Status(
            StatusEvent { seq, name, status }
        )),
        (
            any::<u64>(),
            vec(task_row(), 0..3),
            any::<u64>(),
            vec(node_id(), 0..2)
        )
            .prop_map(
                |(request_id, tasks, matched, unreachable)| ServerMessage::Tasks(TaskPage {
                    request_id,
                    tasks,
                    matched,
                    unreachable,
                })
            ),
        (any::<u64>(), vec(node_row(), 0..3))
            .prop_map(|(request_id, nodes)| ServerMessage::Nodes(NodeList { request_id, nodes })),
        log_chunk().prop_map(ServerMessage::Log),
        (error_code(), text(), option::of(any::<u64>())).prop_map(|(code, message, request_id)| {
            ServerMessage::Error(ErrorReply {
                code,
                message,
                request_id,
            })
        }),
    ]
}
