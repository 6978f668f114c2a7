//! Entry points for the fuzz targets (fuzz/) and the byte-soup tests: thin
//! wrappers that call the real decoders of this crate ([`Codec`],
//! [`FrameReader`], the handshake) and check what must hold of what they
//! return, plus sample messages whose encodings seed the fuzzers. Not part
//! of the API: nothing here decodes anything itself.
//!
//! Every check panics when a property breaks, so that a fuzzer reports the
//! input: a decoder panicked, a decoded value does not survive
//! `decode(encode(x))`, or a reader gave different frames depending on how
//! the bytes were cut.

use crate::cell::{CellAggregate, CellId};
use crate::codec::{Codec, CodecError, FrameReader, HandshakeError};
use crate::constraint::{Attributes, Constraint};
use crate::ids::{BidId, FrameworkId, LeaseId, NodeId, TaskId};
use crate::resources::{Dimension, Resources};
use crate::task::{Command, Priority, TaskSpec, TaskState, TaskStatus};
use crate::wire::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Decodes `payload` as a `T` in `codec`; a value that decodes must come
/// back equal from its own encoding. (Not byte for byte: postcard reads an
/// overlong varint, e.g. `80 00` for 0, as the number it spells, and JSON
/// allows spaces and any key order.)
///
/// # Panics
/// When a property does not hold.
pub fn payload<T>(codec: Codec, payload: &[u8]) -> Result<T, CodecError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let value = codec.decode::<T>(payload)?;
    let again = codec
        .encode(&value)
        .unwrap_or_else(|e| panic!("{value:?} decoded but does not encode: {e}"));
    let back: T = codec
        .decode(&again)
        .unwrap_or_else(|e| panic!("{value:?} does not decode from its own encoding: {e}"));
    assert_eq!(back, value, "decode(encode(x)) != x in {codec}");
    assert!(
        codec != Codec::Postcard || again.len() <= payload.len(),
        "postcard's own encoding of {value:?} is longer than bytes that decode to it"
    );
    Ok(value)
}

/// A spec that passes [`TaskSpec::validate`] must be one a node can start:
/// execve(2) takes no NUL byte in the program, an argument or the
/// environment, and an environment variable's name is not empty and has no
/// `=`. A spec that breaks this would be placed, hold its resources, and
/// fail only at exec on the node that won it.
///
/// # Panics
/// When a valid spec cannot be started.
pub fn check_spec(spec: &TaskSpec) {
    if spec.validate().is_err() {
        return;
    }
    let command: Vec<&str> = match &spec.command {
        Command::Argv(argv) => argv.iter().map(String::as_str).collect(),
        Command::Shell(line) => vec![line.as_str()],
    };
    for s in command {
        assert!(
            !s.contains('\0'),
            "a valid spec has a NUL in its command: {s:?}"
        );
    }
    for (k, v) in &spec.env {
        assert!(
            !k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0'),
            "a valid spec has an environment variable exec cannot take: {k:?}={v:?}"
        );
    }
}

/// The task specs a framework's request carries.
pub fn specs_of_request(msg: &ClientMessage) -> Vec<&TaskSpec> {
    match msg {
        ClientMessage::Submit(s) => s.tasks.iter().collect(),
        ClientMessage::BidOn(b) => vec![&b.task],
        _ => Vec::new(),
    }
}

/// Reads a handshake; one that is accepted names a codec whose own
/// handshake is accepted as the same codec.
///
/// # Panics
/// When that does not hold.
pub fn handshake(payload: &[u8]) -> Result<Codec, HandshakeError> {
    let codec = Codec::from_handshake(payload)?;
    assert_eq!(Codec::from_handshake(&codec.handshake()), Ok(codec));
    Ok(codec)
}

/// The frames of a byte stream and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frames {
    /// The payloads, in order.
    pub frames: Vec<Vec<u8>>,
    /// Bytes left over that do not make a whole frame.
    pub rest: usize,
    /// The error that stopped the reading (an oversized prefix), if any.
    pub error: Option<CodecError>,
}

/// Splits `stream` into frames of at most `max` bytes with a
/// [`FrameReader`], the bytes arriving `chunk` at a time into
/// [`FrameReader::unfilled`] as a socket delivers them.
pub fn frames_in_chunks(stream: &[u8], max: usize, chunk: usize) -> Frames {
    let mut r = FrameReader::new(max);
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        loop {
            match r.next_frame() {
                Ok(Some(f)) => out.push(f.to_vec()),
                Ok(None) => break,
                Err(e) => {
                    return Frames {
                        frames: out,
                        rest: r.buffered(),
                        error: Some(e),
                    };
                }
            }
        }
        if at == stream.len() {
            return Frames {
                frames: out,
                rest: r.buffered(),
                error: None,
            };
        }
        let room = r.unfilled();
        let n = room.len().min(chunk.max(1)).min(stream.len() - at);
        room[..n].copy_from_slice(&stream[at..at + n]);
        r.filled(n);
        at += n;
    }
}

/// Splits `stream` into frames three ways (all at once with
/// [`FrameReader::push`], and into the reader's buffer in chunks of
/// `chunk` and of one byte) and checks that all three agree, that every
/// frame is within `max`, and that framing the frames again gives back the
/// stream's bytes.
///
/// # Panics
/// When the three disagree or a frame breaks the limit.
pub fn frames(stream: &[u8], max: usize, chunk: usize) -> Frames {
    let mut r = FrameReader::new(max);
    r.push(stream);
    let mut whole = Frames {
        frames: Vec::new(),
        rest: 0,
        error: None,
    };
    loop {
        match r.next_frame() {
            Ok(Some(f)) => whole.frames.push(f.to_vec()),
            Ok(None) => break,
            Err(e) => {
                whole.error = Some(e);
                break;
            }
        }
    }
    whole.rest = r.buffered();
    // An oversized prefix is seen as soon as its four bytes are in, so
    // the bytes buffered behind it depend on the cut; the frames before
    // it and the error do not.
    let same = |a: &Frames, b: &Frames| {
        a.frames == b.frames && a.error == b.error && (a.error.is_some() || a.rest == b.rest)
    };
    let chunked = frames_in_chunks(stream, max, chunk);
    assert!(same(&whole, &chunked), "{whole:?} != {chunked:?}");
    if stream.len() <= 4096 {
        let bytewise = frames_in_chunks(stream, max, 1);
        assert!(same(&whole, &bytewise), "{whole:?} != {bytewise:?}");
    }
    let mut again = Vec::new();
    for f in &whole.frames {
        assert!(f.len() <= max, "a frame of {} bytes over {max}", f.len());
        again.extend(crate::codec::frame(f, max).expect("a frame within the limit"));
    }
    assert_eq!(again[..], stream[..again.len()], "frames do not re-frame");
    whole
}

fn spec() -> TaskSpec {
    let mut spec = TaskSpec::new(
        "web",
        Command::Argv(vec!["/bin/echo".into(), "hi".into()]),
        Resources {
            cpu_millis: 500,
            mem_mib: 128,
            disk_mib: 10,
            gpus: 0,
            ports: 2,
        },
    );
    spec.env.insert("MODE".into(), "test".into());
    spec.constraints = ["os==linux", "zone in eu-1,eu-2", "rack:unique"]
        .iter()
        .filter_map(|c| c.parse::<Constraint>().ok())
        .collect();
    spec.priority = Priority(3);
    spec
}

/// A task spec with a bit of everything, for samples.
pub fn sample_spec() -> TaskSpec {
    spec()
}

fn ids() -> (NodeId, FrameworkId, TaskId) {
    let node = NodeId::new("n1").expect("valid id");
    let fw = FrameworkId::new("batch-1f@n1").expect("valid id");
    let task = TaskId::for_framework(&fw, 7);
    (node, fw, task)
}

fn contact() -> Contact {
    Contact {
        node: NodeId::new("n2").expect("valid id"),
        peer_id: "12D3KooW".into(),
        p2p_addr: "/ip4/127.0.0.1/tcp/7001".into(),
        federation: Some("127.0.0.1:7002".into()),
    }
}

fn row() -> TaskRow {
    let (node, fw, task) = ids();
    TaskRow {
        task_id: task,
        name: "web".into(),
        framework: fw,
        state: TaskState::Running,
        node: Some(node),
        exit_code: None,
        resources: Resources::cpu_mem(500, 128),
        reason: Some("why".into()),
    }
}

fn status() -> TaskStatus {
    let (node, _, task) = ids();
    let mut s = TaskStatus::new(task, TaskState::Failed, Some(node)).with_reason("exited 3");
    s.exit_code = Some(3);
    s
}

/// One of each framework request.
pub fn sample_client_messages() -> Vec<ClientMessage> {
    let (node, fw, task) = ids();
    vec![
        ClientMessage::Register(Register {
            name: "batch".into(),
            role: "analytics".into(),
            weight: 2,
            failover_timeout_ms: 60_000,
            framework_id: Some(fw.clone()),
        }),
        ClientMessage::Submit(Submit {
            request_id: 1,
            tasks: vec![
                spec(),
                TaskSpec::new(
                    "sh",
                    Command::Shell("true".into()),
                    Resources::cpu_mem(100, 0),
                ),
            ],
        }),
        ClientMessage::SubscribeOffers,
        ClientMessage::UnsubscribeOffers,
        ClientMessage::BidOn(BidOn {
            request_id: 2,
            node: node.clone(),
            task: spec(),
        }),
        ClientMessage::Kill(Kill {
            task_id: task.clone(),
        }),
        ClientMessage::Reconcile(vec![task.clone()]),
        ClientMessage::Ack(StatusAck {
            task_id: task.clone(),
            seq: 9,
        }),
        ClientMessage::ListTasks(TaskQuery {
            request_id: 3,
            task_id: Some(task.clone()),
            state: Some(TaskState::Running),
            name: Some("web".into()),
            node: Some(node),
            framework: Some(fw),
            limit: 10,
        }),
        ClientMessage::ListAllNodes(ListTasks { request_id: 5 }),
        ClientMessage::ListNodes(ListTasks { request_id: 4 }),
        ClientMessage::ReadLog(ReadLog {
            request_id: 5,
            task_id: task,
            stream: LogStream::Stderr,
            offset: 100,
            max_bytes: 4096,
        }),
    ]
}

/// One of each node answer.
pub fn sample_server_messages() -> Vec<ServerMessage> {
    let (node, fw, task) = ids();
    let mut attrs = Attributes::default();
    attrs.insert("os", "linux");
    vec![
        ServerMessage::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            node_id: node.clone(),
        }),
        ServerMessage::Registered(Registered {
            framework_id: fw,
            reattached: false,
        }),
        ServerMessage::Submitted(Submitted {
            request_id: 1,
            task_ids: vec![task.clone()],
        }),
        ServerMessage::Offers(vec![Offer {
            node: node.clone(),
            free: Resources::cpu_mem(1000, 512),
            total: Resources::cpu_mem(4000, 8192),
            attrs: attrs.clone(),
            version: 12,
        }]),
        ServerMessage::Status(StatusEvent {
            seq: 4,
            name: "web".into(),
            status: status(),
        }),
        ServerMessage::Tasks(TaskPage {
            request_id: 3,
            tasks: vec![row()],
            matched: 1,
            unreachable: vec![node.clone()],
        }),
        ServerMessage::Nodes(NodeList {
            request_id: 4,
            nodes: vec![NodeRow {
                id: node.clone(),
                addr: "127.0.0.1:7700".into(),
                alive: true,
                total: Resources::cpu_mem(4000, 8192),
                free: Resources::cpu_mem(1000, 512),
                attrs: attrs.clone(),
            }],
        }),
        ServerMessage::CellNodes(CellNodeList {
            request_id: 6,
            cells: vec![
                CellNodes {
                    cell: Some("east".into()),
                    home: true,
                    nodes: vec![NodeRow {
                        id: node,
                        addr: "127.0.0.1:7700".into(),
                        alive: true,
                        total: Resources::cpu_mem(4000, 8192),
                        free: Resources::cpu_mem(1000, 512),
                        attrs,
                    }],
                    error: None,
                },
                CellNodes {
                    cell: Some("west".into()),
                    home: false,
                    nodes: Vec::new(),
                    error: Some("its gateways did not answer".into()),
                },
            ],
        }),
        ServerMessage::Log(LogChunk {
            request_id: 5,
            task_id: task,
            data: b"hello\n".to_vec(),
            next_offset: 6,
            eof: true,
            error: None,
        }),
        ServerMessage::Error(ErrorReply {
            code: ErrorCode::BadFrame,
            message: "no".into(),
            request_id: Some(1),
        }),
    ]
}

/// One of each node-to-node message.
pub fn sample_peer_messages() -> Vec<PeerMessage> {
    let (_, fw, task) = ids();
    let lease = LeaseId(77);
    vec![
        PeerMessage::Bid(Bid {
            bid_id: BidId(1),
            task_id: task.clone(),
            framework: fw.clone(),
            weight: 1,
            spec: Box::new(spec()),
            price: 5,
            wait_ms: 100,
        }),
        PeerMessage::Award(Award {
            bid_id: BidId(1),
            task_id: task.clone(),
            lease_id: lease,
            lease_ms: 2000,
            ports: vec![31000, 31001],
        }),
        PeerMessage::Reject(Reject {
            bid_id: BidId(1),
            task_id: task.clone(),
            reason: RejectReason::Insufficient(vec![Dimension::Cpu, Dimension::Mem]),
            free: Resources::cpu_mem(100, 0),
            free_version: 3,
        }),
        PeerMessage::Confirm(Confirm {
            lease_id: lease,
            task_id: task.clone(),
        }),
        PeerMessage::Confirmed(Confirmed {
            lease_id: lease,
            task_id: task.clone(),
        }),
        PeerMessage::ConfirmRefused(ConfirmRefused {
            lease_id: lease,
            task_id: task.clone(),
            reason: "expired".into(),
        }),
        PeerMessage::Release(Release {
            lease_id: lease,
            task_id: task.clone(),
        }),
        PeerMessage::Status(StatusUpdate {
            seq: 2,
            framework: fw.clone(),
            status: status(),
            free: Resources::cpu_mem(100, 0),
            free_version: 4,
        }),
        PeerMessage::StatusAck(StatusAck {
            task_id: task.clone(),
            seq: 2,
        }),
        PeerMessage::Kill(Kill {
            task_id: task.clone(),
        }),
        PeerMessage::LogRead(LogRead {
            request_id: 8,
            task_id: task.clone(),
            stream: LogStream::Stdout,
            offset: 0,
            max_bytes: MAX_LOG_CHUNK,
        }),
        PeerMessage::LogChunk(LogChunk {
            request_id: 8,
            task_id: task.clone(),
            data: vec![0, 1, 2, 255],
            next_offset: 4,
            eof: false,
            error: Some("gone".into()),
        }),
        PeerMessage::ListTasks(TaskQuery {
            framework: Some(fw),
            ..TaskQuery::all(9)
        }),
        PeerMessage::TaskList(TaskList {
            request_id: 9,
            tasks: vec![row()],
            matched: 1,
        }),
        PeerMessage::Withdraw(Withdraw {
            bid_id: BidId(1),
            task_id: task,
        }),
        PeerMessage::Witness(WitnessRows {
            version: 5,
            rows: vec![row()],
        }),
        PeerMessage::FederationQuery,
        PeerMessage::FederationView(FederationView {
            cells: vec![CellEntry {
                cell: CellId(7),
                name: "c1".into(),
                aggregate: CellAggregate::default(),
                gateways: vec![contact()],
            }],
        }),
        PeerMessage::CellQuery(CellQuery { cell: CellId(7) }),
        PeerMessage::CellMembers(CellMembers {
            cell: CellId(7),
            members: vec![CellMember {
                info: crate::view::NodeInfo::new(
                    NodeId::new("n2").expect("valid"),
                    Resources::cpu_mem(1000, 256),
                    Default::default(),
                ),
                contact: contact(),
            }],
        }),
        PeerMessage::Locate(Locate {
            node: NodeId::new("n3").expect("valid"),
        }),
        PeerMessage::Located(Located {
            cell: CellId(7),
            contact: contact(),
        }),
    ]
}
