//! Byte soup: random bytes and damaged real encodings through every family
//! of decoders by which bytes from outside reach the node (the framework
//! socket, peer streams, gossip datagrams and state, HTTP bodies and Host
//! headers, the agent's config and key files, checkpoints and the
//! supervisor's files), through `agora_node::fuzzing`, the same entry
//! points the fuzz targets in fuzz/ use. Nothing may panic; what decodes
//! must survive `decode(encode(x))` (checked there); and where it is
//! decidable that bytes are not an encoding, they must be refused.
//!
//! Also replayed: every seed in fuzz/corpus/ and every input a fuzzer once
//! crashed on, in fuzz/regressions/TARGET/.
//!
//! `cargo test -p agora-node --test byte_soup -- --ignored write_fuzz_seeds`
//! rewrites fuzz/corpus/ from `fuzzing::seeds()`.

use agora_node::fuzzing::{self as f, Report, TARGETS};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn seeds_of(target: &str) -> Vec<Vec<u8>> {
    f::seeds()
        .into_iter()
        .filter(|(t, _, _)| *t == target)
        .map(|(_, _, b)| b)
        .collect()
}

/// A few changes to `bytes`: flips, overwrites, insertions, deletions.
fn mutate(bytes: &[u8], edits: &[(u16, u8, u8)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for &(at, kind, byte) in edits {
        let at = usize::from(at) % (out.len() + 1);
        match kind % 4 {
            0 if at < out.len() => out[at] ^= 1 << (byte % 8),
            1 if at < out.len() => out[at] = byte,
            2 => out.insert(at, byte),
            _ if at < out.len() => {
                out.remove(at);
            }
            _ => out.push(byte),
        }
    }
    out
}

fn not_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes).is_err()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_panic_a_decoder(
        target in prop::sample::select(TARGETS.to_vec()),
        bytes in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let _ = f::run(target, &bytes);
    }

    #[test]
    fn damaged_real_encodings_never_panic_a_decoder(
        target in prop::sample::select(TARGETS.to_vec()),
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec(any::<(u16, u8, u8)>(), 1..5),
    ) {
        let seeds = seeds_of(target);
        let seed = &seeds[pick.index(seeds.len())];
        let _ = f::run(target, &mutate(seed, &edits));
    }

    #[test]
    fn a_datagram_not_sealed_with_the_key_never_opens(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        edits in prop::collection::vec(any::<(u16, u8, u8)>(), 1..3),
    ) {
        prop_assert!(f::open_datagram(&bytes).is_err());
        let sealed = &seeds_of("gossip_datagram")[0];
        let damaged = mutate(sealed, &edits);
        if damaged != *sealed {
            prop_assert!(f::open_datagram(&damaged).is_err());
        }
    }

    #[test]
    fn bytes_that_are_not_json_are_no_request_body_and_no_executor_file(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        if not_json(&bytes) {
            prop_assert!(agora_node::http::submit_specs(&bytes).is_err());
            prop_assert_eq!(f::checkpoint(&bytes), Report { accepted: 0, rejected: 4 });
        }
    }

    #[test]
    fn a_cut_peer_frame_is_refused(pick in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
        let seeds = seeds_of("peer_message");
        let seed = &seeds[pick.index(seeds.len())];
        prop_assert!(f::peer_request(seed).is_ok() || f::peer_response(seed).is_ok());
        let cut = &seed[..cut.index(seed.len())];
        prop_assert!(f::peer_request(cut).is_err());
    }

    #[test]
    fn a_socket_connection_cut_short_loses_only_its_last_frame(cut in any::<prop::sample::Index>()) {
        let stream = &seeds_of("client_frame")[0];
        let whole = f::client_stream(stream, usize::MAX);
        let part = f::client_stream(&stream[..cut.index(stream.len())], 7);
        prop_assert!(part.requests.len() <= whole.requests.len());
        prop_assert_eq!(&part.requests[..], &whole.requests[..part.requests.len()]);
    }
}

#[test]
fn every_seed_is_accepted_by_a_decoder_of_its_target() {
    for (target, name, bytes) in f::seeds() {
        let report = f::run(target, &bytes);
        assert!(report.accepted > 0, "{target}/{name}: {report:?}");
    }
    // The two socket streams: a handshake and every request.
    for stream in &seeds_of("client_frame")[..1] {
        let s = f::client_stream(stream, 5);
        assert!(matches!(s.handshake, Some(Ok(_))));
        assert!(s.requests.iter().all(Result::is_ok) && s.requests.len() > 5);
        assert_eq!(s.framing_error, None);
    }
}

fn fuzz_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(sub)
}

/// Every file under fuzz/SUB/TARGET/, with its target.
fn files_under(sub: &str) -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    for target in TARGETS {
        let Ok(dir) = std::fs::read_dir(fuzz_dir(sub).join(target)) else {
            continue;
        };
        for entry in dir.flatten() {
            if entry.path().is_file() {
                out.push((target, entry.path()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn committed_seeds_and_fuzzer_regressions_replay_without_panic() {
    let seeds = files_under("corpus");
    assert!(
        seeds.len() >= TARGETS.len(),
        "fuzz/corpus/ holds {} seeds; rewrite it with write_fuzz_seeds",
        seeds.len()
    );
    for (target, path) in seeds.iter().chain(&files_under("regressions")) {
        let bytes = std::fs::read(path).unwrap();
        let _ = f::run(target, &bytes);
    }
}

#[test]
#[ignore = "writes fuzz/corpus/; run by hand after changing fuzzing::seeds"]
fn write_fuzz_seeds() {
    for (target, name, bytes) in f::seeds() {
        let dir = fuzz_dir("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
