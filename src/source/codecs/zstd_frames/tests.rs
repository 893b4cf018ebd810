//! Round trips against the real v1 fixtures, wrong dictionaries, garbage
//! and decompression bombs.

use proptest::prelude::*;
use zstd::zstd_safe::CParameter;

use super::*;
use crate::source::formats::jetstream::decode_v1;

const GOLDEN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/jetstream/golden_v1.jsonl"
));
const RELAY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471/jetstream_v1.jsonl"
));
const V2_DICT: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/jetstream/zstd/subscribe_events_20260811.zdict"
));
const MAX: usize = 1 << 20;

fn compress(dict: &[u8], data: &[u8]) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::with_dictionary(3, dict).unwrap();
    c.compress(data).unwrap()
}

#[test]
fn dictionary_ids_parse() {
    assert_eq!(dictionary_id(V1_DICTIONARY), Some(V1_DICTIONARY_ID));
    assert_eq!(V1_DICTIONARY.len(), 112_640);
    assert_eq!(dictionary_id(V2_DICT), Some(20_260_811));
    assert_eq!(dictionary_id(b""), None);
    assert_eq!(dictionary_id(&[0x37, 0xA4, 0x30, 0xEC, 1, 0, 0]), None);
    assert_eq!(dictionary_id(&[0x37, 0xA4, 0x30, 0xEC, 0, 0, 0, 0]), None);
    assert_eq!(
        dictionary_id(&[0x37, 0xA4, 0x30, 0xEC, 7, 0, 0, 0]),
        Some(7)
    );
    assert_eq!(dictionary_id(b"raw content dictionary"), None);
    let d = FrameDecompressor::v1().unwrap();
    assert_eq!(d.dictionary_id(), Some(V1_DICTIONARY_ID));
}

#[test]
fn fixture_lines_round_trip_through_v1_dictionary() {
    let mut d = FrameDecompressor::v1().unwrap();
    let mut n = 0;
    for line in GOLDEN.lines().chain(RELAY.lines()) {
        let frame = compress(V1_DICTIONARY, line.as_bytes());
        assert!(frame.len() < line.len(), "dictionary should help");
        let out = d.decompress(&frame, MAX).unwrap();
        assert_eq!(out, line.as_bytes());
        assert_eq!(decode_v1(out).unwrap(), decode_v1(line.as_bytes()).unwrap());
        n += 1;
    }
    assert_eq!(n, 112);
}

#[test]
fn wrong_dictionary_is_an_error() {
    let line = GOLDEN.lines().next().unwrap().as_bytes();
    let mut d = FrameDecompressor::v1().unwrap();
    let frame = compress(V2_DICT, line);
    assert!(matches!(
        d.decompress(&frame, MAX),
        Err(ZstdError::WrongDictionary {
            frame: 20_260_811,
            ours: V1_DICTIONARY_ID
        })
    ));
    // A v2 decompressor refuses v1 frames the same way.
    let mut d2 = FrameDecompressor::new(V2_DICT).unwrap();
    let v1_frame = compress(V1_DICTIONARY, line);
    let err = d2.decompress(&v1_frame, MAX).unwrap_err();
    assert_eq!(err.reason(), "zstd_dictionary");
    // A raw-content dictionary has no ID to compare: either zstd notices
    // or the bytes come out wrong, but nothing panics.
    // (The line itself as dictionary content: the frame is all references.)
    let frame = compress(line, line);
    assert!(frame.len() < 32);
    if let Ok(out) = d.decompress(&frame, MAX) {
        assert_ne!(out, line);
    }
}

#[test]
fn garbage_and_truncation_are_errors() {
    let mut d = FrameDecompressor::v1().unwrap();
    let line = GOLDEN.lines().nth(1).unwrap().as_bytes();
    let frame = compress(V1_DICTIONARY, line);
    let garbage: [&[u8]; 5] = [
        b"",
        b"{\"did\":\"x\"}",
        &[0x28, 0xB5, 0x2F, 0xFD],
        &frame[..frame.len() / 2],
        &frame[..frame.len() - 1],
    ];
    for g in garbage {
        let err = d.decompress(g, MAX).unwrap_err();
        assert_eq!(err.reason(), "malformed", "{g:?}: {err}");
    }
    // The context recovers after errors.
    assert_eq!(d.decompress(&frame, MAX).unwrap(), line);
}

#[test]
fn bombs_are_refused_before_allocation() {
    let mut d = FrameDecompressor::v1().unwrap();
    let zeros = vec![0u8; 8 << 20];
    // Header declares 8 MiB: refused without decoding.
    let frame = compress(V1_DICTIONARY, &zeros);
    assert!(frame.len() < 4096);
    let err = d.decompress(&frame, 64 << 10).unwrap_err();
    assert!(matches!(err, ZstdError::TooLarge { declared: Some(n), .. } if n == 8 << 20));
    assert!(d.buf.capacity() < 64 << 10);
    // No declared size: decoding stops at the cap.
    let mut c = zstd::bulk::Compressor::with_dictionary(3, V1_DICTIONARY).unwrap();
    c.set_parameter(CParameter::ContentSizeFlag(false)).unwrap();
    let frame = c.compress(&zeros).unwrap();
    let err = d.decompress(&frame, 64 << 10).unwrap_err();
    assert!(
        matches!(err, ZstdError::TooLarge { declared: None, .. }),
        "{err}"
    );
    assert_eq!(err.reason(), "too_large");
    assert!(d.buf.capacity() <= 128 << 10);
    // A smaller cap after a bigger one is still enforced.
    let small = c.compress(&zeros[..100 << 10]).unwrap();
    assert_eq!(d.decompress(&small, 1 << 20).unwrap().len(), 100 << 10);
    assert!(d.decompress(&small, 10 << 10).is_err());
    // A frame of exactly the cap fits.
    let exact = compress(V1_DICTIONARY, &zeros[..4096]);
    assert_eq!(d.decompress(&exact, 4096).unwrap().len(), 4096);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut d = FrameDecompressor::v1().unwrap();
        let _ = d.decompress(&bytes, 4096);
    }

    #[test]
    fn mutated_frames_never_panic(idx in 0usize..112, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let line = GOLDEN.lines().chain(RELAY.lines()).nth(idx).unwrap();
        let mut frame = compress(V1_DICTIONARY, line.as_bytes());
        for (at, b) in flips {
            let n = frame.len();
            frame[at % n] ^= b;
        }
        let mut d = FrameDecompressor::v1().unwrap();
        if let Ok(out) = d.decompress(&frame, 4096) {
            prop_assert!(out.len() <= 4096);
            let _ = decode_v1(out);
        }
    }
}
