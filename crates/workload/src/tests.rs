//! The generator's properties, checked through parity's own decoders where
//! the wire forms are concerned.

use std::collections::HashMap;

use parity::event::EventKind;
use parity::source::firehose::{Frame, decode_frame};
use parity::source::jetstream::decode_v1;

use crate::event::{Config, Generator, Kind};
use crate::keys::KeyMode;
use crate::rows::{RowMapper, Write};
use crate::template::Op;

const T0: u64 = 1_783_175_888_000_000;

fn generator(keys: KeyMode, real_cids: bool) -> Generator {
    let mut cfg = Config::new(11, keys, T0, 1_000);
    cfg.real_cids = real_cids;
    cfg.delete_window = 2_000;
    Generator::new(cfg)
}

#[test]
fn a_seed_makes_the_same_run_and_another_seed_another() {
    let a = generator(KeyMode::Random, false);
    let b = generator(KeyMode::Random, false);
    let mut cfg = a.config().clone();
    cfg.seed = 12;
    let c = Generator::new(cfg);
    let same = (0..500).all(|i| a.event(i) == b.event(i));
    assert!(same);
    assert!((0..500).filter(|&i| a.event(i) != c.event(i)).count() > 450);
}

#[test]
fn the_mix_is_the_recordings() {
    let g = generator(KeyMode::Bench, false);
    let n = 30_000;
    let mut counts: HashMap<String, u64> = HashMap::new();
    for i in 0..n {
        let k = match g.event(i).kind {
            Kind::Commit { op, collection, .. } => format!("{} {collection}", op.as_str()),
            Kind::Identity { .. } => "identity".into(),
            Kind::Account { .. } => "account".into(),
        };
        *counts.entry(k).or_default() += 1;
    }
    for (k, share) in crate::template::mix(&crate::template::recorded()) {
        let got = counts.get(&k).copied().unwrap_or(0) as f64 / n as f64;
        // Binomial sd at 30,000 draws is at most 0.29 %.
        assert!((got - share).abs() < 0.012, "{k}: {got} vs {share}");
    }
}

#[test]
fn deletes_remove_an_earlier_create_of_the_same_account() {
    let g = generator(KeyMode::Random, false);
    let events: Vec<_> = (0..20_000).map(|i| g.event(i)).collect();
    let mut created = HashMap::new();
    let (mut deletes, mut hits) = (0, 0);
    for e in &events {
        if let Kind::Commit {
            op,
            collection,
            rkey,
            ..
        } = &e.kind
        {
            let key = format!("{}/{collection}/{rkey}", e.did);
            match op {
                Op::Create => {
                    created.insert(key, e.index);
                }
                Op::Delete if e.index > 5_000 => {
                    deletes += 1;
                    hits += created.get(&key).is_some_and(|&j| j < e.index) as u32;
                }
                _ => {}
            }
        }
    }
    assert!(deletes > 300, "{deletes}");
    assert_eq!(hits, deletes, "every delete past the warm-up hits a create");
}

#[test]
fn keys_are_distinct_and_revs_grow_per_account_in_both_modes() {
    for mode in [KeyMode::Bench, KeyMode::Random] {
        let g = generator(mode, false);
        let mut uris = std::collections::HashSet::new();
        let mut last_rev: HashMap<String, String> = HashMap::new();
        for i in 0..20_000 {
            let e = g.event(i);
            if let Kind::Commit {
                op,
                collection,
                rkey,
                rev,
                ..
            } = &e.kind
            {
                assert!(parity::event::is_tid(rev), "{rev}");
                if *op == Op::Create {
                    assert!(
                        uris.insert(format!("{}/{collection}/{rkey}", e.did)),
                        "{mode:?}"
                    );
                }
                if let Some(prev) = last_rev.insert(e.did.clone(), rev.clone()) {
                    assert!(prev < *rev, "{mode:?}: {prev} then {rev}");
                }
            }
        }
        // A few accounts are very active (Zipf), most are seen rarely.
        assert!(last_rev.len() > 3_000, "{mode:?} {}", last_rev.len());
    }
    let e = generator(KeyMode::Bench, false).event(7);
    assert!(e.did.starts_with("did:plc:bench"));
}

#[test]
fn jetstream_messages_decode_to_the_generated_events() {
    let g = generator(KeyMode::Random, false);
    for i in 0..2_000 {
        let e = g.event(i);
        let d = decode_v1(crate::jetstream::message(&e).as_bytes()).expect("parity decodes it");
        assert_eq!(d.cursor.0 as u64, e.time_us);
        assert_eq!(d.did.as_str(), e.did);
        match (&d.kind, &e.kind) {
            (EventKind::Commit(c), Kind::Commit { rkey, rev, .. }) => {
                assert_eq!(c.rkey.as_str(), rkey);
                assert_eq!(&c.rev, rev);
            }
            (EventKind::Identity { .. }, Kind::Identity { .. })
            | (EventKind::Account { .. }, Kind::Account { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn firehose_frames_decode_with_verified_record_cids() {
    let g = generator(KeyMode::Bench, true);
    for i in 0..2_000 {
        let e = g.event(i);
        match decode_frame(&crate::firehose::message(&e)).expect("parity decodes it") {
            Frame::Commit(c) => {
                assert!(c.bad_ops.is_empty(), "{:?}", c.bad_ops);
                assert_eq!(c.meta.seq as u64, i + 1);
                assert_eq!(c.events.len(), 1);
                let Kind::Commit { cid, .. } = &e.kind else {
                    panic!("a commit")
                };
                if let EventKind::Commit(dc) = &c.events[0].kind {
                    assert_eq!(dc.cid.as_deref(), cid.as_deref());
                }
            }
            Frame::Event(ev) => assert_eq!(ev.did.as_str(), e.did),
            Frame::Control(c) => panic!("{c:?}"),
        }
    }
}

#[test]
fn rows_are_parity_mappers_rows() {
    let g = generator(KeyMode::Random, false);
    let m = RowMapper::new();
    let mut tables: HashMap<String, u32> = HashMap::new();
    for i in 0..3_000 {
        let e = g.event(i);
        match (m.write(&e), &e.kind) {
            (
                Some(Write::Upsert {
                    table, values, uri, ..
                }),
                Kind::Commit { collection, .. },
            ) => {
                assert!(uri.contains(collection.as_str()));
                if table == "likes" {
                    let subject = values.iter().find(|(n, _)| n == "subject_uri").unwrap();
                    assert!(
                        matches!(&subject.1, parity::mapper::Value::Text(s) if s.starts_with("at://did:plc:"))
                    );
                }
                *tables.entry(table).or_default() += 1;
            }
            (Some(Write::Delete { .. } | Write::Repo { .. }), _) => {}
            (None, Kind::Commit { collection, .. }) => {
                assert!(
                    !collection.starts_with("app.bsky.feed"),
                    "{collection} unmapped?"
                )
            }
            (w, k) => panic!("{w:?} for {k:?}"),
        }
    }
    for t in ["likes", "posts", "reposts", "follows"] {
        assert!(tables.get(t).copied().unwrap_or(0) > 0, "{t}: {tables:?}");
    }
}
