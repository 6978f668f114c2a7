//! The data dir: the bytes as a task checkpoint, launch.json, exit.json and
//! process.json. The decoding and the checks are
//! `agora_node::fuzzing::checkpoint`; a panic is a crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    agora_node::fuzzing::checkpoint(data);
});
