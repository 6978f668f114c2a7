//! The framework socket: a connection's bytes read as the node reads them
//! (frames, the handshake, requests until one fails; whole and in chunks, which
//! must agree), and the bytes as one payload: a handshake, a ClientMessage and
//! a ServerMessage in JSON and postcard. The decoding and the checks are
//! `agora_node::fuzzing::client_frame`; a panic is a crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    agora_node::fuzzing::client_frame(data);
});
