//! v2 frames built from the real v1 fixtures must decode to the same events
//! as `decode_v1` (cursor aside); control frames; bad input never panics.
//!
//! v1 → v2 mapping used by [`to_v2`] (per the subscribeEvents lexicon):
//! - `seq` = `SEQ_BASE` + line index (v1 has no seq; any rising values do);
//! - `time` = `time_us` rendered `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, six
//!   digits, as upstream's `wireTime`), so `time_us` round-trips exactly;
//! - `kind: commit` → `#commit` with `commit.*` moved up into the payload,
//!   `record` copied byte for byte;
//! - `kind: identity|account` → `#identity|#account` with v1's nested
//!   object (already the upstream `subscribeRepos` event) copied verbatim.

use proptest::prelude::*;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::*;
use crate::event::CommitOp;
use crate::source::formats::jetstream::decode_v1;
use crate::source::transport::subscribe_v2::{
    DictionaryError, parse_zstd_dictionary, subscribe_query, zstd_dictionary_query,
};

const GOLDEN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/jetstream/golden_v1.jsonl"
));
const RELAY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471/jetstream_v1.jsonl"
));
const SEQ_BASE: i64 = 7_000_000;

#[derive(Deserialize)]
struct V1<'a> {
    did: String,
    time_us: i64,
    kind: String,
    #[serde(borrow)]
    commit: Option<V1Commit<'a>>,
    #[serde(borrow)]
    identity: Option<&'a RawValue>,
    #[serde(borrow)]
    account: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct V1Commit<'a> {
    rev: String,
    operation: String,
    collection: String,
    rkey: String,
    cid: Option<String>,
    #[serde(borrow)]
    record: Option<&'a RawValue>,
}

fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn wire_time(us: i64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(us).unwrap();
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The v2 frame carrying the same event as the v1 `line`.
pub(super) fn to_v2(line: &str, seq: i64) -> String {
    let v1: V1<'_> = serde_json::from_str(line).unwrap();
    let head = format!(
        r#""seq":{seq},"did":{},"time":{}"#,
        js(&v1.did),
        js(&wire_time(v1.time_us))
    );
    let payload = match v1.kind.as_str() {
        "commit" => {
            let c = v1.commit.unwrap();
            let mut p = format!(
                r#"{{"$type":"{PAYLOAD_TYPE_PREFIX}commit",{head},"rev":{},"operation":{},"collection":{},"rkey":{}"#,
                js(&c.rev),
                js(&c.operation),
                js(&c.collection),
                js(&c.rkey)
            );
            if let Some(cid) = c.cid {
                p += &format!(r#","cid":{}"#, js(&cid));
            }
            if let Some(r) = c.record {
                p += &format!(r#","record":{}"#, r.get());
            }
            p + "}"
        }
        "identity" => format!(
            r#"{{"$type":"{PAYLOAD_TYPE_PREFIX}identity",{head},"identity":{}}}"#,
            v1.identity.unwrap().get()
        ),
        "account" => format!(
            r#"{{"$type":"{PAYLOAD_TYPE_PREFIX}account",{head},"account":{}}}"#,
            v1.account.unwrap().get()
        ),
        k => panic!("unexpected v1 kind {k}"),
    };
    format!(r#"{{"$type":"message","payload":{payload}}}"#)
}

fn all_lines() -> impl Iterator<Item = &'static str> {
    GOLDEN.lines().chain(RELAY.lines())
}

#[test]
fn fixtures_decode_like_v1_except_cursor() {
    let mut n = 0;
    for (i, line) in all_lines().enumerate() {
        let seq = SEQ_BASE + i as i64;
        let frame = to_v2(line, seq);
        let mut want = decode_v1(line.as_bytes()).unwrap();
        want.cursor = Cursor(seq);
        assert_eq!(
            decode_v2(frame.as_bytes()).unwrap(),
            V2Frame::Event(want),
            "{frame}"
        );
        n += 1;
    }
    assert_eq!(n, 112);
}

#[test]
fn readme_example_and_sync() {
    let readme = r#"{"$type":"message","payload":{"$type":"network.bsky.jetstream.subscribeEvents#commit","seq":12345,"did":"did:plc:eygmaihciaxprqvxpfvl6flk","time":"2024-09-09T19:46:02.329308Z","rev":"3l3qo2vutsw2b","operation":"create","collection":"app.bsky.feed.like","rkey":"3l3qo2vuowo2b","cid":"bafyreidwaivazkwu67xztlmuobx35hs2lnfh3kolmgfmucldvhd3sgzcqi","record":{"$type":"app.bsky.feed.like","n":1}}}"#;
    let V2Frame::Event(ev) = decode_v2(readme.as_bytes()).unwrap() else {
        panic!("commit")
    };
    assert_eq!(
        (ev.cursor, ev.time_us),
        (Cursor(12345), 1_725_911_162_329_308)
    );
    let EventKind::Commit(c) = ev.kind else {
        panic!()
    };
    assert_eq!(c.op, CommitOp::Create);
    assert_eq!(
        c.record.unwrap().get(),
        r#"{"$type":"app.bsky.feed.like","n":1}"#
    );
    // Payload first, `$type` last, nested upstream sync with `$bytes`.
    let sync = r#"{"payload":{"sync":{"did":"did:plc:x","rev":"3mrevaaaaaaaa","seq":9,"time":"2026-05-25T00:00:02Z","blocks":{"$bytes":"AQ"}},"time":"2026-05-25T00:00:02.000001Z","did":"did:plc:x","seq":3,"$type":"network.bsky.jetstream.subscribeEvents#sync"},"$type":"message"}"#;
    let V2Frame::Event(ev) = decode_v2(sync.as_bytes()).unwrap() else {
        panic!("sync")
    };
    assert_eq!(
        ev.kind,
        EventKind::Sync {
            rev: "3mrevaaaaaaaa".into()
        }
    );
    assert_eq!((ev.cursor, ev.time_us), (Cursor(3), 1_779_667_202_000_001));
}

#[test]
fn control_frames() {
    let f = |s: &str| decode_v2(s.as_bytes());
    assert_eq!(
        f(r#"{"$type":"error","error":"ConsumerTooSlow"}"#).unwrap(),
        V2Frame::Control(Control::Error {
            error: "ConsumerTooSlow".into(),
            message: None
        })
    );
    assert_eq!(
        f(r#"{"$type":"error","error":"ConsumerTooSlow","message":"bye"}"#).unwrap(),
        V2Frame::Control(Control::Error {
            error: "ConsumerTooSlow".into(),
            message: Some("bye".into())
        })
    );
    let info = r#"{"$type":"message","payload":{"$type":"network.bsky.jetstream.subscribeEvents#info","name":"OutdatedCursor","message":"resuming from seq 42"}}"#;
    assert_eq!(
        f(info).unwrap(),
        V2Frame::Control(Control::Info {
            name: "OutdatedCursor".into(),
            message: Some("resuming from seq 42".into())
        })
    );
    // Unknown payload types, even with fields that clash with ours.
    for t in [
        "network.bsky.jetstream.subscribeEvents#labels",
        "com.example.other#commit",
    ] {
        let s =
            format!(r#"{{"$type":"message","payload":{{"$type":"{t}","seq":"x","account":7}}}}"#);
        assert_eq!(
            f(&s).unwrap(),
            V2Frame::Control(Control::Unknown {
                op: None,
                t: Some(t.into())
            })
        );
    }
    let err = f(r#"{"$type":"ping"}"#).unwrap_err();
    assert_eq!(err.reason(), "unknown_type");
}

#[test]
fn bad_frames_are_malformed() {
    let head = r#""$type":"network.bsky.jetstream.subscribeEvents#"#;
    let ok_commit = r#"commit","seq":1,"did":"did:plc:a","time":"2026-01-01T00:00:00.000000Z","rev":"3mptbypqos22u","operation":"delete","collection":"a.b.c","rkey":"k""#;
    let good = format!(r#"{{"$type":"message","payload":{{{head}{ok_commit}}}}}"#);
    assert!(decode_v2(good.as_bytes()).is_ok());
    for bad in [
        "".to_owned(),
        "[]".into(),
        r#"{"payload":{}}"#.into(),
        r#"{"$type":"message"}"#.into(),
        r#"{"$type":"error"}"#.into(),
        good.replace(r#""seq":1"#, r#""seq":-1"#),
        good.replace(r#""seq":1,"#, ""),
        good.replace(r#""seq":1"#, r#""seq":"1""#),
        good.replace("did:plc:a", "nope"),
        good.replace("2026-01-01T00:00:00.000000Z", "yesterday"),
        good.replace("2026-01-01T00:00:00.000000Z", "1969-12-31T23:59:59.000000Z"),
        good.replace("delete", "create"),
        good.replace(r#","rkey":"k""#, ""),
        good.replace("a.b.c", "nsid"),
        good.replace("commit\"", "account\""),
        good.replace("commit\"", "sync\""),
        good.replace("commit\"", "info\""),
        // Revs are TIDs; a create's CID must parse; handles are handles.
        good.replace("3mptbypqos22u", "r"),
        good.replace("3mptbypqos22u", "3mptbypqos22\\u0000"),
        good.replace(
            r#""operation":"delete""#,
            r#""operation":"create","cid":"bafy\u0000","record":{}"#,
        ),
        format!(
            r#"{{"$type":"message","payload":{{{head}identity","seq":1,"did":"did:plc:a","time":"2026-01-01T00:00:00.000000Z","identity":{{"handle":"evil\u0000.bsky.social"}}}}}}"#
        ),
    ] {
        let err = decode_v2(bad.as_bytes()).expect_err(&bad);
        assert_eq!(err.reason(), "malformed", "{bad}");
    }
}

#[test]
fn query_parameters_use_v2_names() {
    let q = subscribe_query(
        &["app.bsky.feed.*".into(), "app.bsky.graph.follow".into()],
        &["did:plc:a".into()],
        &["commit", "sync"],
        Some(42),
        Some(20_260_811),
    );
    let got: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        got,
        [
            ("kinds", "commit"),
            ("kinds", "sync"),
            ("collections", "app.bsky.feed.*"),
            ("collections", "app.bsky.graph.follow"),
            ("dids", "did:plc:a"),
            ("cursor", "42"),
            ("zstdDictionary", "20260811"),
        ]
    );
    assert!(subscribe_query(&[], &[], &[], None, None).is_empty());
    assert_eq!(
        zstd_dictionary_query(Some(7)),
        [("id".to_owned(), "7".to_owned())]
    );
    assert!(zstd_dictionary_query(None).is_empty());
}

#[test]
fn dictionary_responses() {
    let dict = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jetstream/zstd/subscribe_events_20260811.zdict"
    ));
    let octet = Some("application/octet-stream");
    let (id, bytes) = parse_zstd_dictionary(octet, dict, None).unwrap();
    assert_eq!((id, bytes.len()), (20_260_811, 65_536));
    assert!(parse_zstd_dictionary(None, dict, Some(20_260_811)).is_ok());
    assert_eq!(
        parse_zstd_dictionary(octet, dict, Some(5)),
        Err(DictionaryError::WrongId {
            requested: 5,
            got: 20_260_811
        })
    );
    assert_eq!(
        parse_zstd_dictionary(octet, b"hello", None),
        Err(DictionaryError::NotADictionary)
    );
    let body = br#"{"error":"DictionaryNotFound","message":"no dictionary with id 5; current dictionary id is 20260811"}"#;
    let err = parse_zstd_dictionary(Some("application/json; charset=utf-8"), body, Some(5));
    assert!(
        matches!(err, Err(DictionaryError::Xrpc { error, .. }) if error == "DictionaryNotFound")
    );
    // The dictionary really decodes v2-dictionary frames.
    let line = to_v2(GOLDEN.lines().next().unwrap(), 1);
    let frame = zstd::bulk::Compressor::with_dictionary(1, bytes)
        .unwrap()
        .compress(line.as_bytes())
        .unwrap();
    let mut d = crate::source::codecs::zstd_frames::FrameDecompressor::new(bytes).unwrap();
    assert_eq!(d.decompress(&frame, 1 << 16).unwrap(), line.as_bytes());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_v2(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(idx in 0usize..112, at in any::<usize>(), cut in 0usize..16, ins in "[\\PC]{0,8}") {
        let mut s = to_v2(all_lines().nth(idx).unwrap(), 5);
        let mut at = at % s.len();
        while !s.is_char_boundary(at) { at -= 1; }
        let mut end = (at + cut).min(s.len());
        while !s.is_char_boundary(end) { end -= 1; }
        s.replace_range(at..end, &ins);
        let _ = decode_v2(s.as_bytes());
    }
}
