//! Entry points for the fuzz targets (fuzz/) and the byte-soup tests
//! (tests/byte_soup.rs): one function per family of decoders that read
//! bytes from outside the node, each calling the node's real decoders and
//! checking what must hold of what they return. Not part of the API;
//! nothing here decodes anything itself.
//!
//! | family | bytes | decoders |
//! |--------|-------|----------|
//! | [`client_frame`] | the framework socket | frames ([`FramedReader`]), the handshake, `ClientMessage` (the socket's `decode_request`) and `ServerMessage` (the client's), JSON and postcard |
//! | [`peer_message`] | a libp2p stream | [`PeerCodec`]'s request and response |
//! | [`gossip_datagram`] | a UDP datagram | [`Sealer::open`], and a member's published state ([`state::decode`]) |
//! | [`http_body`] | an HTTP request | the `POST /api/v1/tasks` body ([`submit_specs`]), the Host check ([`host_allowed`]) |
//! | [`config_toml`] | the agent's files | `--config` TOML ([`config::parse_file`], [`AgentConfig::resolve`]), the cluster key, the p2p identity key |
//! | [`checkpoint`] | the data dir | task checkpoints, `launch.json`, `exit.json`, `process.json` |
//!
//! Each returns a [`Report`] (how many decoders accepted the bytes and how
//! many refused them) and panics when a property breaks: a decoder
//! panicked, a decoded value is not what its own encoding decodes to, or a
//! decoder accepted what it must refuse. [`seeds`] gives real encodings for
//! each family, the fuzzers' starting corpus.

use crate::config::{self, AgentConfig};
use crate::executor::{checkpoint as cp, status, supervisor};
use crate::framing::FramedReader;
use crate::gossip::seal::Sealer;
use crate::gossip::{ClusterKey, LocalState, state};
use crate::http::{host_allowed, submit_specs};
use crate::p2p::{MAX_PEER_FRAME, PeerCodec, PeerEnvelope};
use agora_protocol::codec::{Codec, DEFAULT_MAX_FRAME, frame};
use agora_protocol::fuzzing as proto;
use agora_protocol::task::TaskSpec;
use agora_protocol::wire::{ClientMessage, PEER_PROTOCOL_NAME, ServerMessage};
use futures::executor::block_on;
use libp2p::StreamProtocol;
use libp2p::request_response::Codec as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The fuzz targets, each a family of decoders.
pub const TARGETS: [&str; 6] = [
    "client_frame",
    "peer_message",
    "gossip_datagram",
    "http_body",
    "config_toml",
    "checkpoint",
];

/// What the decoders of one family made of some bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Decoders that accepted the bytes (as a value, a frame, a handshake).
    pub accepted: usize,
    /// Decoders that refused them with an error.
    pub rejected: usize,
}

impl Report {
    fn count<T, E>(&mut self, r: &Result<T, E>) {
        if r.is_ok() {
            self.accepted += 1;
        } else {
            self.rejected += 1;
        }
    }
}

/// Runs the family `target` (one of [`TARGETS`]) on `data`.
///
/// # Panics
/// For an unknown target, and when a property breaks.
pub fn run(target: &str, data: &[u8]) -> Report {
    match target {
        "client_frame" => client_frame(data),
        "peer_message" => peer_message(data),
        "gossip_datagram" => gossip_datagram(data),
        "http_body" => http_body(data),
        "config_toml" => config_toml(data),
        "checkpoint" => checkpoint(data),
        other => panic!("no fuzz target {other:?}; the targets are {TARGETS:?}"),
    }
}

// ------------------------------------------------------------ framework socket

/// A tokio reader that hands out at most `chunk` bytes per read, as a
/// socket may.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl tokio::io::AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.chunk.max(1).min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// What the node's socket reader makes of one connection's bytes.
#[derive(Debug, PartialEq)]
pub struct ClientStream {
    /// The first frame read as a handshake (`None`: no whole first frame).
    pub handshake: Option<Result<Codec, agora_protocol::codec::HandshakeError>>,
    /// The requests after it, up to the first that does not decode (the
    /// node answers `bad_frame` and closes there).
    pub requests: Vec<Result<ClientMessage, agora_protocol::codec::CodecError>>,
    /// How the framing ended: `None` cleanly, else the reader's error.
    pub framing_error: Option<String>,
}

/// Reads `data` as the node's socket does ([`FramedReader`] at
/// [`DEFAULT_MAX_FRAME`], the handshake, then `decode_request` per frame
/// until one fails), the bytes arriving `chunk` at a time.
pub fn client_stream(data: &[u8], chunk: usize) -> ClientStream {
    let mut frames = FramedReader::new(Chunked { data, chunk }, DEFAULT_MAX_FRAME);
    let mut out = ClientStream {
        handshake: None,
        requests: Vec::new(),
        framing_error: None,
    };
    let codec = match block_on(frames.next()) {
        Ok(Some(f)) => {
            let h = proto::handshake(f);
            out.handshake = Some(h.clone());
            match h {
                Ok(c) => c,
                Err(_) => return out,
            }
        }
        Ok(None) => return out,
        Err(e) => {
            out.framing_error = Some(e.to_string());
            return out;
        }
    };
    loop {
        match block_on(frames.next()) {
            Ok(None) => return out,
            Ok(Some(payload)) => {
                let r = crate::socket::decode_request(codec, payload);
                let failed = r.is_err();
                if let Ok(msg) = &r {
                    proto::specs_of_request(msg)
                        .into_iter()
                        .for_each(proto::check_spec);
                    let again = codec.encode(msg).expect("a decoded request encodes");
                    assert_eq!(
                        crate::socket::decode_request(codec, &again).as_ref(),
                        Ok(msg),
                        "a request does not survive decode(encode(x))"
                    );
                }
                out.requests.push(r);
                if failed {
                    return out;
                }
            }
            Err(e) => {
                out.framing_error = Some(e.to_string());
                return out;
            }
        }
    }
}

/// The framework socket's decoders on `data`: as one connection's byte
/// stream (read whole and in small chunks, which must agree), and as a
/// single payload: a handshake, and a `ClientMessage` and a
/// `ServerMessage` in each codec.
///
/// # Panics
/// When a property breaks.
pub fn client_frame(data: &[u8]) -> Report {
    let mut report = Report::default();
    let whole = client_stream(data, usize::MAX);
    let chunk = 1 + data.first().map_or(0, |b| usize::from(b % 7));
    assert_eq!(
        whole,
        client_stream(data, chunk),
        "the socket read differently in chunks of {chunk}"
    );
    if let Some(h) = &whole.handshake {
        report.count(h);
    }
    for r in &whole.requests {
        report.count(r);
    }
    // A small limit: random prefixes then often announce frames that fit,
    // and no pass allocates the megabyte a big prefix reserves (the
    // socket's own limit is read above).
    proto::frames(data, 4096, chunk);
    report.count(&proto::handshake(data));
    for codec in [Codec::Json, Codec::Postcard] {
        let request = proto::payload::<ClientMessage>(codec, data);
        if let Ok(msg) = &request {
            proto::specs_of_request(msg)
                .into_iter()
                .for_each(proto::check_spec);
        }
        report.count(&request);
        report.count(&proto::payload::<ServerMessage>(codec, data));
    }
    report
}

// ------------------------------------------------------------ peers

fn peer_protocol() -> StreamProtocol {
    StreamProtocol::new(PEER_PROTOCOL_NAME)
}

/// Reads `data` as one inbound peer request stream with the node's
/// [`PeerCodec`].
///
/// # Errors
/// The codec's io error (oversized, cut short, undecodable).
pub fn peer_request(data: &[u8]) -> io::Result<PeerEnvelope> {
    let mut io = futures::io::Cursor::new(data);
    block_on(PeerCodec::default().read_request(&peer_protocol(), &mut io))
}

/// Reads `data` as a peer's acknowledgement with the node's [`PeerCodec`].
///
/// # Errors
/// The codec's io error (anything but an empty frame).
pub fn peer_response(data: &[u8]) -> io::Result<()> {
    let mut io = futures::io::Cursor::new(data);
    block_on(PeerCodec::default().read_response(&peer_protocol(), &mut io))
}

/// What [`PeerCodec`] writes for `env`.
pub fn peer_request_bytes(env: &PeerEnvelope) -> Vec<u8> {
    let mut io = futures::io::Cursor::new(Vec::new());
    block_on(PeerCodec::default().write_request(&peer_protocol(), &mut io, env.clone()))
        .expect("writing to memory");
    io.into_inner()
}

/// The peer codec on `data`, as a stream (prefix and all) and as a frame's
/// payload. What decodes must be written back by the codec as a frame no
/// longer than the one read (postcard's own encoding is the shortest) that
/// reads back equal.
///
/// # Panics
/// When a property breaks.
pub fn peer_message(data: &[u8]) -> Report {
    let mut report = Report::default();
    let check = |env: &PeerEnvelope, read: &[u8]| {
        if let agora_protocol::wire::PeerMessage::Bid(bid) = &env.msg {
            proto::check_spec(&bid.spec);
        }
        let written = peer_request_bytes(env);
        assert_eq!(peer_request(&written).ok().as_ref(), Some(env));
        assert!(
            written.len() <= read.len(),
            "the codec wrote a longer frame"
        );
    };
    let r = peer_request(data);
    if let Ok(env) = &r {
        let len = 4 + u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        check(env, &data[..len]);
    }
    report.count(&r);
    if let Ok(framed) = frame(data, MAX_PEER_FRAME) {
        let r = peer_request(&framed);
        if let Ok(env) = &r {
            check(env, &framed);
        }
        report.count(&r);
    }
    let ack = peer_response(data);
    if ack.is_ok() {
        assert_eq!(
            &data[..4],
            &[0, 0, 0, 0],
            "an ack that is not an empty frame"
        );
    }
    report.count(&ack);
    report
}

// ------------------------------------------------------------ gossip

/// The cluster key the gossip target seals and opens with.
pub fn fuzz_sealer() -> Sealer {
    Sealer::new(&ClusterKey([7; 32]), "fuzz")
}

/// Opens `data` as a sealed gossip datagram of the fuzz cluster.
///
/// # Errors
/// [`crate::gossip::seal::OpenError`], as the relay gets it.
///
/// # Panics
/// When an error leaves plaintext behind.
pub fn open_datagram(data: &[u8]) -> Result<Vec<u8>, crate::gossip::seal::OpenError> {
    let mut plain = vec![0xAA; 3];
    let r = fuzz_sealer().open(data, &mut plain);
    if r.is_err() {
        assert!(
            plain.is_empty(),
            "a datagram that failed to open left bytes"
        );
    }
    r.map(|()| plain)
}

/// Reads a member's published state from `text`, one key per line: the
/// key's letter, then its value (what chitchat hands the node, key by key).
///
/// # Errors
/// [`state::DecodeError`], as the gossip view gets it.
///
/// # Panics
/// When a state decodes but does not survive `decode(encode(x))`.
pub fn node_state(text: &[u8]) -> Result<LocalState, state::DecodeError> {
    let text = String::from_utf8_lossy(text);
    let mut keys: Vec<(String, &str)> = Vec::new();
    for line in text.split('\n') {
        let mut chars = line.chars();
        if let Some(k) = chars.next() {
            keys.push((k.to_string(), chars.as_str()));
        }
    }
    // chitchat keeps one value per key: the last one written.
    let get = |k: &str| keys.iter().rev().find(|(key, _)| key == k).map(|(_, v)| *v);
    let s = state::decode(get)?;
    let encoded = state::encode(&s);
    let back = state::decode(|k| {
        encoded
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.as_str())
    });
    assert_eq!(
        back.as_ref(),
        Ok(&s),
        "a state does not survive decode(encode(x))"
    );
    // What the node then parses out of it (P2p::set_peer).
    let _ = s.peer_id.parse::<libp2p::PeerId>();
    let _ = s.p2p_addr.parse::<libp2p::Multiaddr>();
    Ok(s)
}

/// State lines for `s` as [`node_state`] reads them.
pub fn node_state_lines(s: &LocalState) -> Vec<u8> {
    let mut out = String::new();
    for (k, v) in state::encode(s) {
        out.push_str(k);
        out.push_str(&v);
        out.push('\n');
    }
    out.into_bytes()
}

/// Gossip's decoders on `data`: opened as a datagram (which must fail: no
/// fuzzer forges the tag), sealed then opened (which must give `data`
/// back, and fail once any byte is changed), and read as a member's state.
///
/// # Panics
/// When a property breaks.
pub fn gossip_datagram(data: &[u8]) -> Report {
    let mut report = Report::default();
    let opened = open_datagram(data);
    if let Ok(plain) = &opened {
        report.count(&node_state(plain));
    }
    report.count(&opened);
    let sealer = fuzz_sealer();
    let mut sealed = Vec::new();
    sealer
        .seal(data, &mut sealed)
        .expect("a datagram-sized seal");
    assert_eq!(open_datagram(&sealed).as_deref(), Ok(data));
    let at = data.first().map_or(0, |b| usize::from(*b)) % sealed.len();
    sealed[at] ^= 1 << (data.len() % 8);
    assert!(
        open_datagram(&sealed).is_err(),
        "a changed byte {at} opened"
    );
    report.count(&node_state(data));
    report
}

// ------------------------------------------------------------ HTTP

/// The hosts [`http_body`] allows besides IP addresses and localhost.
const ALLOWED: [&str; 1] = ["node1.example.com"];

/// The HTTP API's decoders on `data`: the body of `POST /api/v1/tasks`
/// (accepted specs must be valid, as many as asked, and survive both
/// codecs), and `data` as a Host header.
///
/// # Panics
/// When a property breaks.
pub fn http_body(data: &[u8]) -> Report {
    let mut report = Report::default();
    let specs = submit_specs(data);
    if let Ok(specs) = &specs {
        assert!(!specs.is_empty() && specs.len() <= agora_protocol::wire::MAX_SUBMIT);
        let first = &specs[0];
        assert!(specs.iter().all(|s| s == first));
        assert_eq!(first.validate(), Ok(()), "an accepted spec is invalid");
        proto::check_spec(first);
        for codec in [Codec::Json, Codec::Postcard] {
            let bytes = codec.encode(first).expect("a spec encodes");
            let back = proto::payload::<TaskSpec>(codec, &bytes);
            assert_eq!(back.as_ref(), Ok(first));
        }
    }
    report.count(&specs);
    let allowed: Vec<String> = ALLOWED.iter().map(|s| s.to_string()).collect();
    let host = String::from_utf8_lossy(data);
    let ok = host_allowed(&host, &allowed);
    report.count(&if ok { Ok(()) } else { Err(()) });
    report
}

// ------------------------------------------------------------ config

/// The config file's text read and resolved as the agent does, without its
/// lookups: an address that is not an IP literal (which `resolve` would
/// look up in DNS) is dropped, and so is an HTTP token file (which it would
/// read) when the HTTP API is on.
///
/// # Errors
/// The parse or resolve error, in the agent's words.
pub fn config_text(text: &str) -> Result<AgentConfig, String> {
    let mut args = config::parse_file(text).map_err(|e| e.to_string())?;
    let literal = |a: &Option<String>| {
        a.as_ref()
            .filter(|t| t.parse::<std::net::SocketAddr>().is_ok())
            .cloned()
    };
    args.listen = literal(&args.listen);
    args.advertise = literal(&args.advertise);
    args.p2p_listen = literal(&args.p2p_listen);
    args.http = args
        .http
        .as_ref()
        .filter(|t| t.trim().parse::<u16>().is_ok() || t.parse::<std::net::SocketAddr>().is_ok())
        .cloned();
    if args.http.is_some() {
        args.http_token_file = None;
    }
    AgentConfig::resolve(args).map_err(|e| format!("{e:#}"))
}

/// The agent's own files on `data`: as a `--config` file (parsed and
/// resolved), as a cluster key (which must print back as it was read), and
/// as a libp2p identity key file (which must encode back to a key with the
/// same peer id).
///
/// # Panics
/// When a property breaks.
pub fn config_toml(data: &[u8]) -> Report {
    let mut report = Report::default();
    let text = String::from_utf8_lossy(data);
    let cfg = config_text(&text);
    if let Ok(cfg) = &cfg {
        assert!(cfg.log_format == "text" || cfg.log_format == "json");
        assert!((10..=60_000).contains(&cfg.gossip_interval.as_millis()));
    }
    report.count(&cfg);
    let key = ClusterKey::from_base64(&text);
    if let Ok(key) = &key {
        assert_eq!(key.to_base64(), text.trim(), "a key read from other text");
    }
    report.count(&key);
    let kp = libp2p::identity::Keypair::from_protobuf_encoding(data);
    if let Ok(kp) = &kp {
        let again = kp.to_protobuf_encoding().expect("a key read encodes");
        let back = libp2p::identity::Keypair::from_protobuf_encoding(&again).expect("re-read");
        assert_eq!(back.public(), kp.public());
    }
    report.count(&kp);
    report
}

// ------------------------------------------------------------ checkpoints

/// The executor's files on `data`: as a task checkpoint, a `launch.json`,
/// an `exit.json` and a `process.json`. What decodes must survive
/// `decode(encode(x))`; a checkpoint that decodes, with the exit record if
/// `data` is one, becomes a final status as a recovering agent makes it.
///
/// # Panics
/// When a property breaks.
pub fn checkpoint(data: &[u8]) -> Report {
    let mut report = Report::default();
    let c = cp::decode(data);
    let exit = supervisor::decode_exit(data);
    if let Ok(c) = &c {
        let again = serde_json::to_vec(c).expect("a checkpoint encodes");
        assert_eq!(cp::decode(&again).as_ref(), Ok(c));
        let node = agora_protocol::NodeId::new("n1").expect("valid id");
        let s = status::final_status(
            &node,
            &c.request,
            exit.clone(),
            c.kill.as_ref(),
            false,
            None,
        );
        assert!(s.state.is_terminal(), "a final status that is not final");
        let _ = c.ended_at();
    }
    report.count(&c);
    if let Some(e) = &exit {
        let again = serde_json::to_vec(e).expect("an exit record encodes");
        assert_eq!(supervisor::decode_exit(&again).as_ref(), Some(e));
    }
    report.count(&exit.ok_or(()));
    let launch = supervisor::decode_launch(data);
    if let Ok(l) = &launch {
        let again = serde_json::to_vec(l).expect("a launch spec encodes");
        let back = supervisor::decode_launch(&again).expect("re-read");
        assert_eq!(serde_json::to_vec(&back).ok(), Some(again));
    }
    report.count(&launch);
    let process = supervisor::decode_process(data);
    if let Some(p) = &process {
        let again = serde_json::to_vec(p).expect("a process record encodes");
        assert_eq!(supervisor::decode_process(&again).as_ref(), Some(p));
    }
    report.count(&process.ok_or(()));
    report
}

// ------------------------------------------------------------ seeds

/// Real encodings for each target: `(target, file name, bytes)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    // Framework socket: a whole connection in each codec, and bare payloads.
    for codec in [Codec::Json, Codec::Postcard] {
        let mut stream = frame(&codec.handshake(), DEFAULT_MAX_FRAME).expect("small");
        for m in proto::sample_client_messages() {
            let p = codec.encode(&m).expect("encodes");
            stream.extend(frame(&p, DEFAULT_MAX_FRAME).expect("small"));
        }
        out.push(("client_frame", format!("stream-{codec}"), stream));
        for (i, m) in proto::sample_client_messages().iter().enumerate() {
            let p = codec.encode(m).expect("encodes");
            out.push(("client_frame", format!("request-{codec}-{i:02}"), p));
        }
        for (i, m) in proto::sample_server_messages().iter().enumerate() {
            let p = codec.encode(m).expect("encodes");
            out.push(("client_frame", format!("answer-{codec}-{i:02}"), p));
        }
    }
    // Peers: what PeerCodec writes, and the acknowledgement.
    let from = agora_protocol::NodeId::new("n2").expect("valid id");
    for (i, msg) in proto::sample_peer_messages().into_iter().enumerate() {
        let env = PeerEnvelope {
            from: from.clone(),
            msg,
            reply_to: Some("/ip4/10.0.0.5/tcp/7701".into()),
        };
        out.push((
            "peer_message",
            format!("request-{i:02}"),
            peer_request_bytes(&env),
        ));
    }
    out.push(("peer_message", "ack".into(), vec![0, 0, 0, 0]));
    // Gossip: a sealed datagram of a member's state, and the state itself.
    let state = sample_state();
    let lines = node_state_lines(&state);
    let mut sealed = Vec::new();
    fuzz_sealer().seal(&lines, &mut sealed).expect("small");
    out.push(("gossip_datagram", "sealed-state".into(), sealed));
    out.push(("gossip_datagram", "state".into(), lines));
    // HTTP: bodies as the docs show them, and Host headers.
    for (i, body) in [
        r#"{"command": ["/bin/echo", "hi"]}"#,
        r#"{"count": 3, "cpus": "0.5", "mem": "1G", "disk": 20, "gpus": 0, "ports": 1,
            "command": "echo $X", "name": "job", "constraints": ["os==linux", "zone in a,b", "rack:unique"],
            "env": {"X": "1"}, "priority": 2, "kill_grace_ms": 100, "placement_timeout": 30}"#,
        "127.0.0.1:7481",
        "[::1]:7481",
        "Node1.Example.com.",
    ]
    .iter()
    .enumerate()
    {
        out.push(("http_body", format!("body-{i}"), body.as_bytes().to_vec()));
    }
    // Config: a config file using every key, a cluster key, a p2p key.
    out.push((
        "config_toml",
        "agent.toml".into(),
        SAMPLE_CONFIG.as_bytes().to_vec(),
    ));
    out.push((
        "config_toml",
        "cluster.key".into(),
        format!("{}\n", ClusterKey([9; 32]).to_base64()).into_bytes(),
    ));
    let kp = libp2p::identity::Keypair::ed25519_from_bytes([5; 32]).expect("32 bytes");
    out.push((
        "config_toml",
        "p2p-identity.key".into(),
        kp.to_protobuf_encoding().expect("encodes"),
    ));
    // Checkpoints and the supervisor's files.
    for (name, bytes) in executor_files() {
        out.push(("checkpoint", name.to_string(), bytes));
    }
    out
}

const SAMPLE_CONFIG: &str = r#"data-dir = "/var/lib/agora"
node-id = "n1"
listen = "10.0.0.5:7700"
advertise = "10.0.0.5:7700"
seeds = ["10.0.0.6:7700", "10.0.0.7:7700"]
cluster-key-file = "/etc/agora/cluster.key"
cluster-id = "prod"
p2p-listen = "10.0.0.5:7701"
socket = "/run/agora.sock"
cpus = "3.5"
mem = "16G"
disk = 2048
gpus = 1
ports = "31000-31999"
attr = ["zone=eu-1", "rack=12"]
gossip-interval-ms = 500
no-cgroups = true
gc-max-ended = 100
gc-max-age = "24h"
gc-disk-percent = 90
gc-interval = "60s"
http = "7481"
http-allow-host = ["node1.example.com"]
log-format = "json"
log-level = "debug"
"#;

fn sample_state() -> LocalState {
    let mut attrs = agora_protocol::constraint::Attributes::default();
    attrs.insert("os", "linux");
    attrs.insert("zone", "eu-1");
    let mut allocations = std::collections::BTreeMap::new();
    allocations.insert(
        agora_protocol::FrameworkId::new("batch-1f@n1").expect("valid id"),
        agora_protocol::fairness::FrameworkUsage {
            resources: agora_protocol::Resources::cpu_mem(1500, 2048),
            weight: 2,
        },
    );
    LocalState {
        cell: Some("c1".into()),
        federation: Some("127.0.0.1:7002".into()),
        aggregate: Some(agora_protocol::cell::CellAggregate::default()),
        p2p_addr: "/ip4/10.0.0.5/tcp/7701".into(),
        peer_id: libp2p::identity::Keypair::ed25519_from_bytes([5; 32])
            .expect("32 bytes")
            .public()
            .to_peer_id()
            .to_string(),
        total: agora_protocol::Resources::cpu_mem(4000, 8192),
        free: agora_protocol::Resources::cpu_mem(2500, 6144),
        version: 17,
        attrs,
        allocations,
    }
}

/// Sample checkpoint, launch, exit and process files, as the executor and
/// the supervisor write them.
fn executor_files() -> Vec<(&'static str, Vec<u8>)> {
    let task = agora_protocol::TaskId::new("batch-1f@n1.7").expect("valid id");
    let mut c = cp::Checkpoint::new(crate::executor::LaunchRequest {
        task_id: task.clone(),
        framework: agora_protocol::FrameworkId::new("batch-1f@n1").expect("valid id"),
        weight: 1,
        home: agora_protocol::NodeId::new("n1").expect("valid id"),
        spec: proto::sample_spec(),
        ports: vec![31000, 31001],
    });
    let mut files = vec![(
        "checkpoint-new.json",
        serde_json::to_vec_pretty(&c).expect("encodes"),
    )];
    c.supervisor = Some(crate::executor::fsutil::ProcRef {
        pid: 4242,
        start_time: 123_456,
        boot_id: "0b5c7d3e-5f0a-4a8e-9f57-1c2d3e4f5a6b".into(),
    });
    c.started = true;
    c.kill = Some(cp::KillState {
        grace_ms: 5000,
        deadline_unix_ms: 1_800_000_000_000,
    });
    c.cgroups = vec!["/sys/fs/cgroup/agora/batch-1f@n1.7".into()];
    c.end(agora_protocol::task::TaskStatus::new(
        task,
        agora_protocol::task::TaskState::Killed,
        None,
    ));
    c.reported = true;
    files.push((
        "checkpoint-ended.json",
        serde_json::to_vec_pretty(&c).expect("encodes"),
    ));
    let launch = supervisor::LaunchSpec {
        program: "/bin/echo".into(),
        args: vec!["hi".into()],
        env: vec![("AGORA_PORTS".into(), "31000,31001".into())],
        cwd: "/var/lib/agora/sandboxes/batch-1f@n1.7".into(),
        stdout: "/var/lib/agora/sandboxes/batch-1f@n1.7/stdout".into(),
        stderr: "/var/lib/agora/sandboxes/batch-1f@n1.7/stderr".into(),
        cgroup_procs: vec!["/sys/fs/cgroup/agora/batch-1f@n1.7/cgroup.procs".into()],
        isolation: Default::default(),
        clear_env: true,
    };
    files.push((
        "launch.json",
        serde_json::to_vec_pretty(&launch).expect("encodes"),
    ));
    for (name, e) in [
        (
            "exit-exited.json",
            supervisor::ExitRecord::Exited { code: 3 },
        ),
        (
            "exit-signaled.json",
            supervisor::ExitRecord::Signaled { signal: 9 },
        ),
        (
            "exit-cannot-start.json",
            supervisor::ExitRecord::CannotStart {
                reason: "No such file or directory (os error 2)".into(),
            },
        ),
    ] {
        files.push((name, serde_json::to_vec(&e).expect("encodes")));
    }
    files.push((
        "process.json",
        serde_json::to_vec(c.supervisor.as_ref().expect("set above")).expect("encodes"),
    ));
    files
}
