//! The agent's files: the bytes as a --config TOML file (parsed and resolved
//! without DNS), as a cluster key and as a libp2p identity key file. The
//! decoding and the checks are `agora_node::fuzzing::config_toml`; a panic is a
//! crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    agora_node::fuzzing::config_toml(data);
});
