//! Keeps docs/FRAMEWORK_API.md true to the wire types.
//!
//! Every fenced code block whose info string starts with `json` is decoded
//! into the Rust type its label names and encoded back; the result must be
//! the same JSON value as the block, so an example can neither be invalid
//! nor lose or invent a field. The labels (the word after `json` on the
//! opening fence) are:
//!
//! | fence | type |
//! |---|---|
//! | ```` ```json client ```` | `wire::ClientMessage` |
//! | ```` ```json server ```` | `wire::ServerMessage` |
//! | ```` ```json task_spec ```` | `task::TaskSpec` |
//! | ```` ```json resources ```` | `resources::Resources` |
//! | ```` ```json constraint ```` | `constraint::Constraint` |
//!
//! A `json` block with no label or another label fails the test: write
//! illustrations that are not messages as ```` ```text ````. The test also
//! checks that every message variant, error code, task state, constraint and
//! command kind is shown, and that the limits the document quotes are the
//! crate's constants. The variant lists are read from serde itself (the
//! "unknown variant, expected one of ..." error), so a new variant fails the
//! test until the document shows it.

use agora_protocol::codec::{Codec, DEFAULT_MAX_FRAME, frame};
use agora_protocol::constraint::Constraint;
use agora_protocol::ids::MAX_ID_LEN;
use agora_protocol::resources::Resources;
use agora_protocol::task::{
    Command, MAX_COMMAND_BYTES, MAX_CONSTRAINTS, MAX_ENV, MAX_EXEC_BYTES, MAX_EXEC_STRING,
    TaskSpec, TaskState,
};
use agora_protocol::wire::{
    ClientMessage, ErrorCode, LogStream, MAX_LOG_CHUNK, MAX_SUBMIT, PROTOCOL_VERSION, ServerMessage,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// One ```json block of the document.
struct Block {
    /// The label after `json`.
    label: String,
    /// 1-based line of the opening fence.
    line: usize,
    /// The block's text.
    text: String,
}

fn doc() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/FRAMEWORK_API.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path:?}: {e}"))
}

fn json_blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    let mut in_other_fence = false;
    for (i, line) in doc.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(b) = current.as_mut() {
            if trimmed.starts_with("```") {
                blocks.push(current.take().unwrap());
            } else {
                b.text.push_str(line);
                b.text.push('\n');
            }
            continue;
        }
        if let Some(info) = trimmed.strip_prefix("```") {
            if in_other_fence {
                in_other_fence = false;
                continue;
            }
            let mut words = info.split_whitespace();
            if words.next() == Some("json") {
                current = Some(Block {
                    label: words.next().unwrap_or("").to_string(),
                    line: i + 1,
                    text: String::new(),
                });
            } else {
                in_other_fence = true;
            }
        }
    }
    assert!(current.is_none(), "unterminated ```json block");
    blocks
}

/// Decodes `text` as `T`, re-encodes it, and requires the same JSON value.
fn round_trip<T: DeserializeOwned + Serialize>(block: &Block) -> T {
    let written: Value = serde_json::from_str(&block.text)
        .unwrap_or_else(|e| panic!("line {}: not JSON: {e}\n{}", block.line, block.text));
    let typed: T = Codec::Json
        .decode(block.text.as_bytes())
        .unwrap_or_else(|e| {
            panic!(
                "line {}: does not decode as {}: {e}\n{}",
                block.line, block.label, block.text
            )
        });
    let again = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        again, written,
        "line {}: re-encoding differs from the example (a field missing, extra, or spelled differently)",
        block.line
    );
    typed
}

/// The tag of an externally tagged enum value: the string itself for a unit
/// variant, the only key for the others.
fn tag(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) if m.len() == 1 => m.keys().next().unwrap().clone(),
        other => panic!("not an externally tagged enum value: {other}"),
    }
}

/// Every variant name of `T`, as serde spells them, read from the error
/// serde gives for an unknown variant.
fn variants<T: DeserializeOwned + std::fmt::Debug>() -> BTreeSet<String> {
    let err = serde_json::from_str::<T>("\"no such variant\"").unwrap_err();
    let msg = err.to_string();
    let expected = msg
        .split_once("expected")
        .unwrap_or_else(|| panic!("unexpected serde error: {msg}"))
        .1;
    let names: BTreeSet<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(!names.is_empty(), "no variants in: {msg}");
    names
}

#[test]
fn every_json_block_is_a_real_message_and_round_trips() {
    let doc = doc();
    let blocks = json_blocks(&doc);
    assert!(blocks.len() > 20, "only {} json blocks found", blocks.len());
    let mut client = BTreeSet::new();
    let mut server = BTreeSet::new();
    let mut constraints = BTreeSet::new();
    let mut specs = 0;
    for b in &blocks {
        match b.label.as_str() {
            "client" => {
                let m: ClientMessage = round_trip(b);
                client.insert(tag(&serde_json::to_value(&m).unwrap()));
            }
            "server" => {
                let m: ServerMessage = round_trip(b);
                server.insert(tag(&serde_json::to_value(&m).unwrap()));
            }
            "task_spec" => {
                let s: TaskSpec = round_trip(b);
                assert_eq!(
                    s.validate(),
                    Ok(()),
                    "line {}: invalid example spec",
                    b.line
                );
                specs += 1;
            }
            "resources" => {
                let _: Resources = round_trip(b);
            }
            "constraint" => {
                let c: Constraint = round_trip(b);
                constraints.insert(tag(&serde_json::to_value(&c).unwrap()));
            }
            other => panic!(
                "line {}: ```json block labelled {other:?}; use json client, json server, \
                 json task_spec, json resources or json constraint (or ```text)",
                b.line
            ),
        }
    }
    assert_eq!(client, variants::<ClientMessage>(), "client messages shown");
    assert_eq!(server, variants::<ServerMessage>(), "server messages shown");
    assert_eq!(constraints, variants::<Constraint>(), "constraints shown");
    assert!(specs >= 1, "no task_spec example");
}

#[test]
fn every_code_state_and_kind_is_documented() {
    let doc = doc();
    for code in variants::<ErrorCode>() {
        assert!(
            doc.contains(&format!("| `{code}` |")),
            "error code {code} has no table row"
        );
    }
    for state in variants::<TaskState>() {
        assert!(
            doc.contains(&format!("| `{state}` |")),
            "state {state} has no table row"
        );
    }
    for kind in variants::<Command>() {
        assert!(
            doc.contains(&format!("{{\"{kind}\":")),
            "command {kind} not shown"
        );
    }
    for stream in variants::<LogStream>() {
        assert!(
            doc.contains(&format!("`\"{stream}\"`")),
            "stream {stream} not shown"
        );
    }
}

#[test]
fn quoted_limits_and_handshake_match_the_crate() {
    let doc = doc();
    for (what, value) in [
        ("max frame", DEFAULT_MAX_FRAME),
        ("MAX_SUBMIT", MAX_SUBMIT),
        ("MAX_LOG_CHUNK", MAX_LOG_CHUNK as usize),
        ("MAX_ENV", MAX_ENV),
        ("MAX_CONSTRAINTS", MAX_CONSTRAINTS),
        ("MAX_COMMAND_BYTES", MAX_COMMAND_BYTES),
        ("MAX_EXEC_STRING", MAX_EXEC_STRING),
        ("MAX_EXEC_BYTES", MAX_EXEC_BYTES),
        ("MAX_ID_LEN", MAX_ID_LEN),
    ] {
        assert!(
            doc.contains(&format!("| {value} ")) || doc.contains(&format!("| 1–{value} ")),
            "{what} = {value} is not the value in the limits table"
        );
    }
    for codec in [Codec::Json, Codec::Postcard] {
        let hs = String::from_utf8(codec.handshake()).unwrap();
        assert!(doc.contains(&format!("`{hs}`")), "handshake {hs} not shown");
        assert_eq!(Codec::from_handshake(hs.as_bytes()), Ok(codec));
    }
    assert!(doc.contains(&format!("\"version\":{PROTOCOL_VERSION}")));
    let framed = frame(&Codec::Json.handshake(), DEFAULT_MAX_FRAME).unwrap();
    let hex: Vec<String> = framed.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        doc.contains(&hex.join(" ")),
        "the framed handshake hex dump is wrong; it is {}",
        hex.join(" ")
    );
}
