//! The HTTP API: the bytes as the body of POST /api/v1/tasks and as a Host
//! header. The decoding and the checks are `agora_node::fuzzing::http_body`; a
//! panic is a crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    agora_node::fuzzing::http_body(data);
});
