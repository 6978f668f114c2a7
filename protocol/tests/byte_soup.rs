//! Byte soup: random bytes and damaged real encodings through every decoder
//! of this crate that reads bytes from outside (frames, the handshake, the
//! framework and peer messages in both codecs). Nothing may panic; what
//! decodes must survive `decode(encode(x))` (checked inside
//! `agora_protocol::fuzzing`); and where it is decidable that bytes are not
//! an encoding (a strict prefix, a trailing byte, not JSON at all), they
//! must be an error. The long runs are the fuzz targets in fuzz/
//! (scripts/fuzz.sh); these are their short, always-on cousins.

use agora_protocol::codec::{Codec, CodecError, DEFAULT_MAX_FRAME, frame};
use agora_protocol::fuzzing::{self as f, Frames};
use agora_protocol::wire::{ClientMessage, PeerMessage, ServerMessage};
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    }
}

/// Every sample message of each type, in each codec.
fn encodings() -> Vec<(Codec, &'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for codec in [Codec::Json, Codec::Postcard] {
        for m in f::sample_client_messages() {
            out.push((codec, "client", codec.encode(&m).unwrap()));
        }
        for m in f::sample_server_messages() {
            out.push((codec, "server", codec.encode(&m).unwrap()));
        }
        for m in f::sample_peer_messages() {
            out.push((codec, "peer", codec.encode(&m).unwrap()));
        }
    }
    out
}

fn decode_as(codec: Codec, kind: &str, bytes: &[u8]) -> Result<(), CodecError> {
    match kind {
        "client" => f::payload::<ClientMessage>(codec, bytes).map(drop),
        "server" => f::payload::<ServerMessage>(codec, bytes).map(drop),
        _ => f::payload::<PeerMessage>(codec, bytes).map(drop),
    }
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

fn all_three<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) {
    for codec in [Codec::Json, Codec::Postcard] {
        let r = f::payload::<T>(codec, bytes);
        if codec == Codec::Json && serde_json::from_slice::<serde_json::Value>(bytes).is_err() {
            assert!(r.is_err(), "bytes that are not JSON decoded: {bytes:?}");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_are_errors_or_values_that_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        all_three::<ClientMessage>(&bytes);
        all_three::<ServerMessage>(&bytes);
        all_three::<PeerMessage>(&bytes);
        let _ = f::handshake(&bytes);
    }

    #[test]
    fn damaged_encodings_are_errors_or_values_that_round_trip(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec(any::<(u16, u8, u8)>(), 1..4),
    ) {
        let all = encodings();
        let (codec, kind, bytes) = &all[pick.index(all.len())];
        let damaged = mutate(bytes, &edits);
        let _ = decode_as(*codec, kind, &damaged);
    }

    #[test]
    fn a_strict_prefix_or_a_trailing_byte_is_an_error(
        pick in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        extra in any::<u8>(),
    ) {
        let all = encodings();
        let (codec, kind, bytes) = &all[pick.index(all.len())];
        prop_assert!(decode_as(*codec, kind, bytes).is_ok());
        let prefix = &bytes[..cut.index(bytes.len())];
        prop_assert!(decode_as(*codec, kind, prefix).is_err(), "a prefix of {} bytes decoded", prefix.len());
        let mut longer = bytes.clone();
        longer.push(if *codec == Codec::Json { b'x' } else { extra });
        prop_assert!(decode_as(*codec, kind, &longer).is_err(), "a trailing byte was accepted");
    }

    #[test]
    fn random_streams_split_the_same_however_they_arrive(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        max in 0usize..64,
        chunk in 1usize..40,
    ) {
        // Small limits: random prefixes then often announce frames that fit.
        let max = if max == 63 { DEFAULT_MAX_FRAME } else { max };
        let _ = f::frames(&bytes, max, chunk);
    }

}

proptest! {
    // Fewer cases: each reads a 3 KB stream three ways, one a byte at a
    // time, which an unoptimised build does at about 5 us a byte.
    #![proptest_config(ProptestConfig { cases: 64, ..config() })]

    #[test]
    fn damaged_streams_of_real_frames_split_the_same_however_they_arrive(
        edits in prop::collection::vec(any::<(u16, u8, u8)>(), 0..4),
        chunk in 1usize..300,
    ) {
        let mut stream = frame(&Codec::Json.handshake(), 1024).unwrap();
        let mut payloads = vec![Codec::Json.handshake()];
        for m in f::sample_client_messages() {
            let p = Codec::Json.encode(&m).unwrap();
            stream.extend(frame(&p, 1024).unwrap());
            payloads.push(p);
        }
        let got = f::frames(&mutate(&stream, &edits), 1024, chunk);
        if edits.is_empty() {
            prop_assert_eq!(got, Frames { frames: payloads, rest: 0, error: None });
        }
    }
}

#[test]
fn every_sample_decodes_in_both_codecs() {
    for (codec, kind, bytes) in encodings() {
        assert_eq!(decode_as(codec, kind, &bytes), Ok(()), "{codec} {kind}");
    }
}

#[test]
fn an_oversized_prefix_is_refused_however_the_stream_is_cut() {
    let mut stream = frame(b"ok", 16).unwrap();
    stream.extend_from_slice(&17u32.to_be_bytes());
    stream.extend_from_slice(&[0; 17]);
    let got = f::frames(&stream, 16, 3);
    assert_eq!(got.frames, vec![b"ok".to_vec()]);
    assert_eq!(
        got.error,
        Some(CodecError::FrameTooLarge { len: 17, max: 16 })
    );
}
