//! Gossip: the bytes opened as a sealed datagram (must fail), sealed then
//! opened (must round-trip, and fail once a byte changes), and read as a
//! member's published state. The decoding and the checks are
//! `agora_node::fuzzing::gossip_datagram`; a panic is a crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    agora_node::fuzzing::gossip_datagram(data);
});
