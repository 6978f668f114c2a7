//! Codec properties: every message survives both codecs, framed, and no
//! sequence of bytes makes a decoder panic.

mod strategies;

use agora_protocol::codec::{Codec, CodecError, FrameReader, frame};
use agora_protocol::wire::{ClientMessage, PeerMessage, ServerMessage};
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use strategies::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xA60A),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(msg: &T) {
    for codec in [Codec::Postcard, Codec::Json] {
        let payload = codec.encode(msg).unwrap();
        let framed = frame(&payload, usize::MAX >> 1).unwrap();
        let mut reader = FrameReader::new(usize::MAX >> 1);
        // feed in two pieces to exercise partial frames
        let cut = framed.len() / 2;
        reader.push(&framed[..cut]);
        let first = reader.next_frame().unwrap().map(<[u8]>::to_vec);
        reader.push(&framed[cut..]);
        let got = match first {
            Some(p) => p,
            None => reader.next_frame().unwrap().unwrap().to_vec(),
        };
        let back: T = codec.decode(&got).unwrap();
        assert_eq!(&back, msg, "{codec}");
    }
}

fn never_panics<T: DeserializeOwned>(bytes: &[u8]) {
    for codec in [Codec::Postcard, Codec::Json] {
        let _ = codec.decode::<T>(bytes);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn peer_messages_round_trip(msg in peer_message()) {
        round_trip(&msg);
    }

    #[test]
    fn client_messages_round_trip(msg in client_message()) {
        round_trip(&msg);
    }

    #[test]
    fn server_messages_round_trip(msg in server_message()) {
        round_trip(&msg);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        never_panics::<PeerMessage>(&bytes);
        never_panics::<ClientMessage>(&bytes);
        never_panics::<ServerMessage>(&bytes);
        let _ = Codec::from_handshake(&bytes);
        let mut reader = FrameReader::new(1024);
        reader.push(&bytes);
        while let Ok(Some(_)) = reader.next_frame() {}
    }

    #[test]
    /// Fed by copies or read into, in pieces of any size, the reader gives
    /// back every frame once and in order.
    fn any_split_of_a_stream_gives_back_its_frames(
        sizes in proptest::collection::vec(0usize..20_000, 0..12),
        cuts in proptest::collection::vec(1usize..30_000, 1..8),
        copy in any::<bool>(),
    ) {
        let payloads: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let stream: Vec<u8> = payloads.iter().flat_map(|p| frame(p, 20_000).unwrap()).collect();
        let mut reader = FrameReader::new(20_000);
        let (mut got, mut at) = (Vec::new(), 0);
        for cut in cuts.iter().cycle() {
            if at == stream.len() {
                break;
            }
            let mut n = (*cut).min(stream.len() - at);
            if copy {
                reader.push(&stream[at..at + n]);
            } else {
                let room = reader.unfilled();
                n = n.min(room.len());
                room[..n].copy_from_slice(&stream[at..at + n]);
                reader.filled(n);
            }
            at += n;
            while let Some(p) = reader.next_frame().unwrap() {
                got.push(p.to_vec());
            }
        }
        prop_assert_eq!(got, payloads);
        prop_assert_eq!(reader.buffered(), 0);
        prop_assert_eq!(reader.needed(), Ok(4));
    }

    #[test]
    fn truncated_messages_are_errors(msg in peer_message(), cut in any::<prop::sample::Index>()) {
        for codec in [Codec::Postcard, Codec::Json] {
            let payload = codec.encode(&msg).unwrap();
            if payload.is_empty() { continue; }
            let at = cut.index(payload.len()); // strictly shorter
            let r = codec.decode::<PeerMessage>(&payload[..at]);
            prop_assert!(r.is_err(), "{codec}: a truncated payload decoded");
        }
    }

    #[test]
    fn mutated_messages_never_panic(msg in peer_message(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        for codec in [Codec::Postcard, Codec::Json] {
            let mut payload = codec.encode(&msg).unwrap();
            if payload.is_empty() { continue; }
            let i = at.index(payload.len());
            payload[i] = byte;
            let _ = codec.decode::<PeerMessage>(&payload);
        }
    }
}

#[test]
fn oversized_frames_are_refused_before_buffering() {
    let mut reader = FrameReader::new(16);
    reader.push(&(17u32).to_be_bytes());
    assert_eq!(
        reader.next_frame(),
        Err(CodecError::FrameTooLarge { len: 17, max: 16 })
    );
    assert!(matches!(
        frame(&[0u8; 17], 16),
        Err(CodecError::FrameTooLarge { .. })
    ));
}

#[test]
fn trailing_bytes_are_refused() {
    let msg = PeerMessage::Kill(agora_protocol::wire::Kill {
        task_id: agora_protocol::TaskId::new("f.1").unwrap(),
    });
    let mut payload = Codec::Postcard.encode(&msg).unwrap();
    payload.push(0);
    assert_eq!(
        Codec::Postcard.decode::<PeerMessage>(&payload),
        Err(CodecError::TrailingBytes { extra: 1 })
    );
}

#[test]
fn invalid_ids_are_refused_on_decode() {
    let bad = br#"{"kill":{"task_id":"no spaces allowed"}}"#;
    let err = Codec::Json.decode::<PeerMessage>(bad).unwrap_err();
    assert!(err.to_string().contains("character"), "{err}");
}

#[test]
fn json_form_is_externally_tagged_snake_case() {
    let msg = ClientMessage::ListTasks(agora_protocol::wire::TaskQuery::all(3));
    assert_eq!(
        String::from_utf8(Codec::Json.encode(&msg).unwrap()).unwrap(),
        r#"{"list_tasks":{"request_id":3,"task_id":null,"state":null,"name":null,"node":null,"framework":null,"limit":0}}"#
    );
    // Filters may be left out: a bare request lists everything.
    let bare: ClientMessage = Codec::Json
        .decode(br#"{"list_tasks":{"request_id":3}}"#)
        .unwrap();
    assert_eq!(bare, msg);
    assert_eq!(
        String::from_utf8(Codec::Json.encode(&ClientMessage::SubscribeOffers).unwrap()).unwrap(),
        r#""subscribe_offers""#
    );
}
