//! Peer streams: the bytes read by the node's libp2p PeerCodec as a request
//! (prefix and all, and framed as one payload) and as an acknowledgement. The
//! decoding and the checks are `agora_node::fuzzing::peer_message`; a panic is
//! a crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    agora_node::fuzzing::peer_message(data);
});
