//! The [`Decoder`] wrapper: size limit, resume floor, frame types, typed
//! drops, control frames, and firehose state that survives a reconnect.

use super::*;
use crate::event::EventKind;
use crate::source::codecs::zstd_frames::V1_DICTIONARY;

const GOLDEN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/jetstream/golden_v1.jsonl"
));

fn line(i: usize) -> &'static [u8] {
    GOLDEN.lines().nth(i).unwrap().as_bytes()
}

fn decoder(format: WireFormat, floor: Option<Cursor>) -> Decoder {
    let mut d = Decoder::new(1 << 20);
    d.connect(format, floor, None).unwrap();
    d
}

#[test]
fn v1_text_and_compressed_frames() {
    let mut d = decoder(WireFormat::JetstreamV1, None);
    let mut out = Output::default();
    d.decode(Message::Text(line(0)), &mut out).unwrap();
    assert_eq!(out.events.len(), 1);
    let want = out.events[0].clone();
    let frame = zstd::bulk::Compressor::with_dictionary(3, V1_DICTIONARY)
        .unwrap()
        .compress(line(0))
        .unwrap();
    d.decode(Message::Binary(&frame), &mut out).unwrap();
    assert_eq!(out.events, vec![want]);
    assert!(out.dropped.is_empty() && out.control.is_none());
    d.decode(Message::Binary(b"not zstd"), &mut out).unwrap();
    assert!(out.events.is_empty());
    assert!(matches!(
        out.dropped[..],
        [Dropped::Zstd {
            error: ZstdError::Corrupt(_),
            len: 8
        }]
    ));
}

#[test]
fn oversized_and_undecodable_messages_are_typed_drops() {
    let mut d = Decoder::new(1024);
    d.connect(WireFormat::JetstreamV1, None, None).unwrap();
    let mut out = Output::default();
    d.decode(Message::Text(&[b' '; 1025]), &mut out).unwrap();
    assert!(matches!(
        out.dropped[..],
        [Dropped::Oversized { len: 1025 }]
    ));
    d.decode(
        Message::Text(br#"{"did":"did:plc:a","time_us":1,"kind":"labels"}"#),
        &mut out,
    )
    .unwrap();
    assert!(matches!(
        out.dropped[..],
        [Dropped::Jetstream {
            error: jetstream::DecodeError::UnknownKind,
            ..
        }]
    ));
    d.decode(Message::Text(b"{"), &mut out).unwrap();
    assert!(matches!(
        out.dropped[..],
        [Dropped::Jetstream {
            error: jetstream::DecodeError::Malformed(_),
            len: 1
        }]
    ));
    // The firehose has no text frames; v2 without a dictionary cannot inflate.
    d.connect(WireFormat::Firehose, None, None).unwrap();
    d.decode(Message::Text(b"{}"), &mut out).unwrap();
    assert!(matches!(
        out.dropped[..],
        [Dropped::WrongFrameType { len: 2 }]
    ));
    d.decode(Message::Binary(&[]), &mut out).unwrap();
    assert!(matches!(
        out.dropped[..],
        [Dropped::Firehose { len: 0, .. }]
    ));
    d.connect(WireFormat::JetstreamV2, None, None).unwrap();
    d.decode(Message::Binary(b"zz"), &mut out).unwrap();
    assert!(matches!(
        out.dropped[..],
        [Dropped::NoDictionary { len: 2 }]
    ));
    assert!(out.events.is_empty());
}

#[test]
fn v2_control_frames_pass_through_and_the_floor_drops_replays() {
    let mut d = decoder(WireFormat::JetstreamV2, Some(Cursor(7)));
    let mut out = Output::default();
    let frame = |seq: i64| {
        format!(
            r#"{{"$type":"message","payload":{{"$type":"network.bsky.jetstream.subscribeEvents#identity","seq":{seq},"did":"did:plc:a","time":"2026-01-01T00:00:00Z","identity":{{}}}}}}"#
        )
    };
    for seq in [6, 7] {
        d.decode(Message::Text(frame(seq).as_bytes()), &mut out)
            .unwrap();
        assert!(out.events.is_empty() && out.dropped.is_empty(), "{seq}");
    }
    d.decode(Message::Text(frame(8).as_bytes()), &mut out)
        .unwrap();
    assert_eq!(out.events[0].cursor, Cursor(8));
    d.decode(
        Message::Text(br#"{"$type":"error","error":"ConsumerTooSlow"}"#),
        &mut out,
    )
    .unwrap();
    assert!(out.events.is_empty());
    assert_eq!(
        out.control,
        Some(Control::Error {
            error: "ConsumerTooSlow".into(),
            message: None
        })
    );
    // A new connection without a floor keeps everything.
    d.connect(WireFormat::JetstreamV2, None, None).unwrap();
    d.decode(Message::Text(frame(6).as_bytes()), &mut out)
        .unwrap();
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.control, None);
}

#[test]
fn firehose_replayed_commit_is_stale_across_reconnects() {
    let frames = crate::source::formats::firehose::tests::relay_frames();
    let commit = frames
        .iter()
        .find(|f| {
            matches!(firehose::decode_frame(f), Ok(firehose::Frame::Commit(c)) if c.events.len() == 1)
        })
        .unwrap();
    let mut d = decoder(WireFormat::Firehose, None);
    let mut out = Output::default();
    d.decode(Message::Binary(commit), &mut out).unwrap();
    assert_eq!(out.events.len(), 1);
    assert!(matches!(out.events[0].kind, EventKind::Commit(_)));
    let seq = out.events[0].cursor;
    // Reconnect without a floor: the replayed commit is stale, one Skip
    // event carries its cursor, its op counts as one drop.
    d.connect(WireFormat::Firehose, None, None).unwrap();
    d.decode(Message::Binary(commit), &mut out).unwrap();
    assert_eq!(out.events.len(), 1);
    assert_eq!(
        (out.events[0].cursor, &out.events[0].kind),
        (seq, &EventKind::Skip)
    );
    assert!(matches!(
        out.dropped[..],
        [Dropped::StaleCommit { ops: 1, .. }]
    ));
    assert_eq!(out.dropped[0].events(), 1);
    // With the floor at that seq, the Skip event is dropped too.
    d.connect(WireFormat::Firehose, Some(seq), None).unwrap();
    d.decode(Message::Binary(commit), &mut out).unwrap();
    assert!(out.events.is_empty());
    assert_eq!(out.dropped.len(), 1);
}
