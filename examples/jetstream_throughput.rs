//! Single-threaded decode throughput over the real Jetstream fixtures.
//!
//! `cargo build --release --example jetstream_throughput`
//! then `taskset -c 0 target/release/examples/jetstream_throughput [passes [only]]`.
//! Replays the 112 fixture lines (golden + relay) `passes` times through:
//! decode_v1 on plain JSON, against untyped `serde_json::Value` (what a
//! plain consumer parses into) and a bare JSON scan; zstd (v1 dictionary) + decode_v1, with the
//! dictionary loaded per decompressor and as a shared prepared dictionary;
//! decode_v2 on v2 frames built from the same lines; zstd (v2 dictionary) +
//! decode_v2.

use std::hint::black_box;
use std::time::Instant;

use parity::source::jetstream::decode_v1;
use parity::source::jetstream_v2::{PAYLOAD_TYPE_PREFIX, decode_v2};
use parity::source::zstd_frames::{FrameDecompressor, V1_DICTIONARY};
use serde_json::Value;

const GOLDEN: &str = include_str!("../tests/fixtures/jetstream/golden_v1.jsonl");
const RELAY: &str = include_str!(
    "../tests/fixtures/firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471/jetstream_v1.jsonl"
);
const V2_DICT: &[u8] =
    include_bytes!("../tests/fixtures/jetstream/zstd/subscribe_events_20260811.zdict");
const MAX: usize = 1 << 20;

fn report(name: &str, events: usize, bytes: usize, t: Instant) {
    let s = t.elapsed().as_secs_f64();
    println!(
        "{name:<34} {:>10.0} events/s  {:>7.1} ns/event  {:>6.0} MB/s (input)",
        events as f64 / s,
        s * 1e9 / events as f64,
        bytes as f64 / s / 1e6
    );
}

/// Same mapping as the unit tests' `to_v2` (rough: via `Value`, so keys of
/// the record get sorted; fine for timing).
fn to_v2(line: &str, seq: usize) -> String {
    let v: Value = serde_json::from_str(line).expect("fixture");
    let us = v["time_us"].as_i64().expect("time_us");
    let time = chrono::DateTime::from_timestamp_micros(us)
        .expect("time")
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let kind = v["kind"].as_str().expect("kind");
    let mut p = serde_json::Map::new();
    p.insert(
        "$type".into(),
        format!("{PAYLOAD_TYPE_PREFIX}{kind}").into(),
    );
    p.insert("seq".into(), seq.into());
    p.insert("did".into(), v["did"].clone());
    p.insert("time".into(), time.into());
    match kind {
        "commit" => {
            for (k, x) in v["commit"].as_object().expect("commit") {
                p.insert(k.clone(), x.clone());
            }
        }
        k => {
            p.insert(k.into(), v[k].clone());
        }
    }
    serde_json::json!({"$type": "message", "payload": p}).to_string()
}

fn main() {
    let passes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    // Optional second argument: run only sections whose name contains it.
    let only = std::env::args().nth(2).unwrap_or_default();
    let want = |name: &str| name.contains(only.as_str());
    let lines: Vec<&[u8]> = GOLDEN
        .lines()
        .chain(RELAY.lines())
        .map(str::as_bytes)
        .collect();
    let plain_bytes: usize = lines.iter().map(|l| l.len()).sum();
    let n = lines.len() * passes;

    let mut c = zstd::bulk::Compressor::with_dictionary(3, V1_DICTIONARY).expect("dict");
    let frames: Vec<Vec<u8>> = lines.iter().map(|l| c.compress(l).expect("zstd")).collect();
    let zbytes: usize = frames.iter().map(Vec::len).sum();
    let v2: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| to_v2(std::str::from_utf8(l).expect("utf8"), i + 1))
        .collect();
    let v2_bytes: usize = v2.iter().map(String::len).sum();
    let mut c2 = zstd::bulk::Compressor::with_dictionary(1, V2_DICT).expect("dict");
    let v2_frames: Vec<Vec<u8>> = v2
        .iter()
        .map(|l| c2.compress(l.as_bytes()).expect("zstd"))
        .collect();
    let z2bytes: usize = v2_frames.iter().map(Vec::len).sum();
    println!(
        "{} lines: plain {plain_bytes} B, zstd-v1 {zbytes} B, v2 {v2_bytes} B, zstd-v2 {z2bytes} B; {passes} passes",
        lines.len()
    );

    if want("v1 plain decode_v1") {
        let t = Instant::now();
        for _ in 0..passes {
            for l in &lines {
                black_box(decode_v1(black_box(l)).expect("v1"));
            }
        }
        report("v1 plain decode_v1", n, plain_bytes * passes, t);
    }

    // A plain consumer's decoder: untyped `serde_json::Value`, no checks.
    if want("plain serde_json::Value") {
        let t = Instant::now();
        for _ in 0..passes {
            for l in &lines {
                let v: Value = serde_json::from_slice(black_box(l)).expect("json");
                black_box(v);
            }
        }
        report("plain serde_json::Value", n, plain_bytes * passes, t);
    }

    // Floors: serde_json only scanning the bytes (no struct, no allocation).
    if want("floor json scan (from_slice)") {
        let t = Instant::now();
        for _ in 0..passes {
            for l in &lines {
                let r: serde::de::IgnoredAny = serde_json::from_slice(black_box(l)).expect("json");
                black_box(r);
            }
        }
        report("floor json scan (from_slice)", n, plain_bytes * passes, t);
    }
    if want("floor json scan (from_str)") {
        let strs: Vec<&str> = GOLDEN.lines().chain(RELAY.lines()).collect();
        let t = Instant::now();
        for _ in 0..passes {
            for l in &strs {
                let r: serde::de::IgnoredAny = serde_json::from_str(black_box(l)).expect("json");
                black_box(r);
            }
        }
        report("floor json scan (from_str)", n, plain_bytes * passes, t);
    }

    let t = Instant::now();
    let mut d = FrameDecompressor::v1().expect("dict");
    println!(
        "  FrameDecompressor::v1() (load dictionary): {:?}",
        t.elapsed()
    );
    if want("v1 zstd + decode_v1") {
        let t = Instant::now();
        for _ in 0..passes {
            for f in &frames {
                black_box(decode_v1(d.decompress(black_box(f), MAX).expect("zstd")).expect("v1"));
            }
        }
        report("v1 zstd + decode_v1", n, zbytes * passes, t);
    }

    if want("v1 zstd only (reused buffer)") {
        let t = Instant::now();
        for _ in 0..passes {
            for f in &frames {
                black_box(d.decompress(black_box(f), MAX).expect("zstd"));
            }
        }
        report("v1 zstd only (reused buffer)", n, zbytes * passes, t);
    }

    let prepared = zstd::dict::DecoderDictionary::copy(V1_DICTIONARY);
    let t = Instant::now();
    let mut pd = zstd::bulk::Decompressor::with_prepared_dictionary(&prepared).expect("dict");
    println!(
        "  with_prepared_dictionary (per connection): {:?}",
        t.elapsed()
    );
    if want("v1 zstd only (prepared, Vec/frame)") {
        let t = Instant::now();
        for _ in 0..passes {
            for f in &frames {
                black_box(pd.decompress(black_box(f), MAX).expect("zstd"));
            }
        }
        report("v1 zstd only (prepared, Vec/frame)", n, zbytes * passes, t);
    }

    if want("v2 plain decode_v2") {
        let t = Instant::now();
        for _ in 0..passes {
            for f in &v2 {
                black_box(decode_v2(black_box(f.as_bytes())).expect("v2"));
            }
        }
        report("v2 plain decode_v2", n, v2_bytes * passes, t);
    }

    let mut d2 = FrameDecompressor::new(V2_DICT).expect("dict");
    if want("v2 zstd + decode_v2") {
        let t = Instant::now();
        for _ in 0..passes {
            for f in &v2_frames {
                black_box(decode_v2(d2.decompress(black_box(f), MAX).expect("zstd")).expect("v2"));
            }
        }
        report("v2 zstd + decode_v2", n, z2bytes * passes, t);
    }
}
