//! Replays the 100 recorded relay frames (98 `#commit`, 1 `#identity`,
//! 1 `#account`) through `decode_frame_with` on one thread, in rounds of
//! one second, and prints the best and median round: frames/s, commits/s,
//! events/s. (Best-of-N because the machine is shared and noisy.)
//!
//! `cargo run --release --example firehose_throughput [rounds]`

use std::time::{Duration, Instant};

use parity::source::dagcbor::Transcoder;
use parity::source::firehose::{Frame, decode_frame_with};

const FRAMES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471/frames.bin"
);

struct Round {
    secs: f64,
    frames: u64,
    commits: u64,
    events: u64,
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let bytes = std::fs::read(FRAMES).expect("read frames.bin");
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        frames.push(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
    let total_bytes: usize = frames.iter().map(|f| f.len()).sum();
    println!(
        "{} frames, {total_bytes} B, {rounds} rounds of 1 s",
        frames.len()
    );

    let mut tc = Transcoder::new();
    let mut results = Vec::new();
    for _ in 0..rounds {
        let mut round = Round {
            secs: 0.0,
            frames: 0,
            commits: 0,
            events: 0,
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            for f in &frames {
                match decode_frame_with(f, &mut tc).expect("decodes") {
                    Frame::Commit(c) => {
                        round.commits += 1;
                        round.events += c.events.len() as u64;
                    }
                    Frame::Event(_) => round.events += 1,
                    _ => {}
                }
                round.frames += 1;
            }
        }
        round.secs = start.elapsed().as_secs_f64();
        results.push(round);
    }
    results.sort_by(|a, b| (b.commits as f64 / b.secs).total_cmp(&(a.commits as f64 / a.secs)));
    for (label, r) in [
        ("best", &results[0]),
        ("median", &results[results.len() / 2]),
    ] {
        println!(
            "{label:>6}: {:>8.0} frames/s ({:.2} µs/frame) | {:>8.0} commits/s | {:>8.0} events/s | {:.0} MB/s in",
            r.frames as f64 / r.secs,
            r.secs * 1e6 / r.frames as f64,
            r.commits as f64 / r.secs,
            r.events as f64 / r.secs,
            r.frames as f64 / frames.len() as f64 * total_bytes as f64 / r.secs / 1e6,
        );
    }
}
