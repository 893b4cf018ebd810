//! Where the decoder's time goes, stage by stage (an ignored test run by
//! hand; not part of the suite).

use super::wire::{read_commit, read_header};
use super::*;

/// Where the time goes, stage by stage (cumulative). Run with
/// `cargo test --release --lib -- --ignored --nocapture stage_breakdown`.
#[test]
#[ignore]
fn stage_breakdown() {
    let frames = super::tests::relay_frames();
    let commits: Vec<&[u8]> = frames
        .iter()
        .map(|f| f.as_slice())
        .filter(|f| matches!(decode_frame(f), Ok(Frame::Commit(_))))
        .collect();
    let mut tc = Transcoder::new();
    let time = |name: &str, f: &mut dyn FnMut(&[u8]) -> usize| {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            let mut sink = 0;
            for _ in 0..300 {
                for c in &commits {
                    sink += f(c);
                }
            }
            let per = start.elapsed().as_secs_f64() * 1e6 / (300.0 * commits.len() as f64);
            best = best.min(per);
            std::hint::black_box(sink);
        }
        println!("{name:<40} {best:.3} µs/commit");
    };
    fn body(f: &[u8]) -> (CommitBody<'_>, usize) {
        let mut r = Reader::new(f);
        read_header(&mut r).unwrap();
        let pos = r.position();
        (read_commit(&f[pos..]).unwrap(), pos)
    }
    time("header + body", &mut |f| body(f).0.ops.len());
    time("+ CAR parse", &mut |f| {
        Car::parse(body(f).0.blocks).unwrap().blocks().len()
    });
    time("+ get + verify", &mut |f| {
        let b = body(f).0;
        let car = Car::parse(b.blocks).unwrap();
        b.ops
            .iter()
            .filter_map(|o| o.cid)
            .map(|c| usize::from(car::verify(c, car.get(c).unwrap()).is_ok()))
            .sum()
    });
    time("+ transcode", &mut |f| {
        let b = body(f).0;
        let car = Car::parse(b.blocks).unwrap();
        b.ops
            .iter()
            .filter_map(|o| o.cid)
            .map(|c| {
                let block = car.get(c).unwrap();
                car::verify(c, block).unwrap();
                tc.record_to_json(block).unwrap().len()
            })
            .sum()
    });
    let mut tc2 = Transcoder::new();
    time("+ RawValue", &mut |f| {
        let b = body(f).0;
        let car = Car::parse(b.blocks).unwrap();
        b.ops
            .iter()
            .filter_map(|o| o.cid)
            .map(|c| {
                let block = car.get(c).unwrap();
                car::verify(c, block).unwrap();
                RawValue::from_string(tc2.record_to_json(block).unwrap())
                    .unwrap()
                    .get()
                    .len()
            })
            .sum()
    });
    let mut tc3 = Transcoder::new();
    time(
        "full decode_frame_with",
        &mut |f| match decode_frame_with(f, &mut tc3).unwrap() {
            Frame::Commit(c) => c.events.len(),
            _ => 0,
        },
    );
}
