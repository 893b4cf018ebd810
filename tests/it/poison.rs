//! One hostile record never stops ingestion, and both backends store the
//! same rows for the same input: an `#identity` whose handle holds a NUL, a
//! like whose `subject.uri` is 3,000 random characters (past PostgreSQL's
//! btree entry limit), a follow whose subject is as long, a post whose text
//! holds a NUL, and commits whose `rev` or `cid` are not a TID or a CID,
//! mixed into 50 real events. The real binary consumes them from the local
//! Jetstream server (v1 and v2 wire formats), on SQLite and PostgreSQL.

use std::time::Duration;

use crate::common;

use common::jetstream::{JetstreamServer, Line};
use common::model;
use common::pds::{dag_cbor_cid, tid};
use common::process::{Metrics, Parity, scrape};
use common::{TestDb, fixture_lines};

const STD: [&str; 6] = ["uri", "did", "rkey", "cid", "rev", "record"];
const TABLES: [&str; 6] = ["posts", "likes", "reposts", "follows", "blocks", "profiles"];

/// DIDs of the hostile accounts (valid did:plc syntax).
const EVIL: &str = "did:plc:eeeeeeeeeeeeeeeeeeeeeeee";
const EVIL_LIKE: &str = "did:plc:llllllllllllllllllllllll";

/// 3,000 pseudo-random alphanumerics (a fixed LCG: the same on every run).
fn long_random() -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..3_000)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            alphabet[(x >> 33) as usize % alphabet.len()] as char
        })
        .collect()
}

fn commit(
    did: &str,
    t: i64,
    collection: &str,
    rkey: &str,
    rev: &str,
    cid: &str,
    record: &str,
) -> String {
    format!(
        r#"{{"did":"{did}","time_us":{t},"kind":"commit","commit":{{"rev":"{rev}","operation":"create","collection":"{collection}","rkey":"{rkey}","record":{record},"cid":"{cid}"}}}}"#
    )
}

/// The hostile events, each 1 µs after a real one (`at[i]`).
struct Poison {
    lines: Vec<String>,
    like_uri: String,
    follow_uri: String,
    post_uri: String,
}

fn poison(at: &[i64]) -> Poison {
    let long = long_random();
    let rev = |i: u64| tid(1_783_175_888_000_000 + i, 7);
    let cid = |s: &str| dag_cbor_cid(s.as_bytes());
    let like = format!(
        r#"{{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:07.513Z","subject":{{"cid":"bafyreigypyz6zwh52ljwarhdtwboeedyr42vydpgti633ii2rsvljp7ak4","uri":"at://{long}"}}}}"#
    );
    let follow = format!(
        r#"{{"$type":"app.bsky.graph.follow","createdAt":"2026-07-04T14:38:07.513Z","subject":"did:plc:{long}"}}"#
    );
    let post = r#"{"$type":"app.bsky.feed.post","createdAt":"2026-07-04T14:38:07.513Z","langs":["e\u0000n"],"text":"nul\u0000inside"}"#;
    let lines = vec![
        format!(
            r#"{{"did":"{EVIL}","time_us":{},"kind":"identity","identity":{{"did":"{EVIL}","handle":"evil\u0000.bsky.social","seq":1,"time":"2026-07-04T14:38:07.513Z"}}}}"#,
            at[0] + 1
        ),
        commit(
            EVIL_LIKE,
            at[1] + 1,
            "app.bsky.feed.like",
            &rev(1),
            &rev(1),
            &cid("like"),
            &like,
        ),
        commit(
            EVIL,
            at[2] + 1,
            "app.bsky.graph.follow",
            &rev(2),
            &rev(2),
            &cid("follow"),
            &follow,
        ),
        commit(
            EVIL,
            at[3] + 1,
            "app.bsky.feed.post",
            &rev(3),
            &rev(3),
            &cid("post"),
            post,
        ),
        // Not a TID / not a CID: dropped as malformed.
        commit(
            EVIL,
            at[4] + 1,
            "app.bsky.feed.post",
            &rev(4),
            "3mpt\\u0000x",
            &cid("p4"),
            post,
        ),
        commit(
            EVIL,
            at[5] + 1,
            "app.bsky.feed.post",
            &rev(5),
            &rev(5),
            "bafy\\u0000",
            post,
        ),
    ];
    Poison {
        lines,
        like_uri: format!("at://{EVIL_LIKE}/app.bsky.feed.like/{}", rev(1)),
        follow_uri: format!("at://{EVIL}/app.bsky.graph.follow/{}", rev(2)),
        post_uri: format!("at://{EVIL}/app.bsky.feed.post/{}", rev(3)),
    }
}

/// 50 real events with the hostile ones among them, in `time_us` order.
fn stream() -> (Vec<Line>, Vec<String>, Poison) {
    let real: Vec<String> = fixture_lines(common::RELAY_JSONL)
        .into_iter()
        .take(50)
        .collect();
    let mut lines: Vec<Line> = real.iter().map(|l| Line::new(l)).collect();
    lines.sort_by_key(|l| l.cursor);
    let at: Vec<i64> = [5, 12, 20, 28, 36, 44]
        .iter()
        .map(|&i| lines[i].cursor.unwrap())
        .collect();
    let p = poison(&at);
    lines.extend(p.lines.iter().map(|l| Line::new(l)));
    lines.sort_by_key(|l| l.cursor);
    (lines, real, p)
}

/// Runs the binary on the stream (`v2`: as Jetstream v2 frames) until the
/// last event is committed; returns its metrics.
async fn consume(db: &TestDb, v2: bool) -> Metrics {
    let (lines, _, _) = stream();
    let lines: Vec<Line> = if v2 {
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| Line::v2(&common::v1_to_v2(&l.text, 9_000 + i as i64)))
            .collect()
    } else {
        lines
    };
    let last = lines.iter().filter_map(|l| l.cursor).max().unwrap();
    let server = JetstreamServer::start(lines).await;
    let url = if v2 { server.v2_url() } else { server.url() };
    let toml = format!(
        "[source]\nendpoints = [\"{url}\"]\ncompress = false\n[batch]\nmax_age_ms = 20\n[log]\nprogress_interval_seconds = 0\n"
    );
    let (mut parity, _cfg) = Parity::consume(&toml, &db.url);
    let addr = parity.metrics_addr().await;
    server.wait_connections(1).await;
    server.publish_all();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while db.cursor().await != Some(last) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cursor {:?} never reached {last}:\n{}",
            db.cursor().await,
            parity.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = scrape(addr).await;
    parity.stop();
    m
}

/// What every backend must hold after the poisoned stream.
async fn poisoned_stream_is_stored(db: TestDb, v2: bool) {
    let m = consume(&db, v2).await;
    let (_, real, p) = stream();
    let dropped = |reason| {
        m.get(
            "parity_events_dropped_total",
            &[("reason", reason), ("intentional", "false")],
        )
    };
    // The NUL handle, the NUL rev and the NUL cid.
    assert_eq!(dropped("malformed"), 3.0);
    assert_eq!(dropped("db_rejected"), 0.0);

    // Every real event, plus the long-subject like and follow, and the post.
    let mut texts: Vec<&str> = real.iter().map(String::as_str).collect();
    texts.extend(p.lines[1..3].iter().map(String::as_str));
    let want = model::expected(&texts);
    for t in TABLES {
        let rows: Vec<_> = db
            .rows(t, &STD)
            .await
            .into_iter()
            .filter(|r| r[0].as_deref() != Some(&p.post_uri))
            .collect();
        assert_eq!(rows, model::standard_rows(&want, t), "table {t}");
    }
    // Indexed columns too long for an index entry are NULL; the record
    // keeps the value.
    let likes = db
        .rows("likes", &["uri", "subject_uri", "subject_cid"])
        .await;
    let like = likes
        .iter()
        .find(|r| r[0].as_deref() == Some(&p.like_uri))
        .unwrap();
    assert_eq!(like[1], None);
    assert!(like[2].is_some());
    let follows = db.rows("follows", &["uri", "subject_did"]).await;
    let follow = follows
        .iter()
        .find(|r| r[0].as_deref() == Some(&p.follow_uri))
        .unwrap();
    assert_eq!(follow[1], None);
    // NUL is removed from mapped text and from the stored record.
    let posts = db.rows("posts", &["uri", "text", "langs", "record"]).await;
    let post = posts
        .iter()
        .find(|r| r[0].as_deref() == Some(&p.post_uri))
        .unwrap();
    assert_eq!(post[1].as_deref(), Some("nulinside"));
    assert_eq!(post[2].as_deref(), Some(r#"["en"]"#));
    let record = post[3].as_deref().unwrap();
    assert!(!record.contains("\\u0000"), "{record}");
    assert!(record.contains(r#""text":"nulinside""#), "{record}");
    // The identity event never reached the database.
    assert_eq!(
        db.scalar(&format!(
            "SELECT handle FROM parity_repos WHERE did = '{EVIL}'"
        ))
        .await,
        None
    );
}

backend_tests!(poisoned_v1, |db| poisoned_stream_is_stored(db, false));
backend_tests!(poisoned_v2, |db| poisoned_stream_is_stored(db, true));

/// The same poisoned stream leaves the same rows in SQLite and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_store_the_same_rows() {
    let lite = TestDb::sqlite();
    let pg = TestDb::postgres("poison_same_rows").await;
    consume(&lite, false).await;
    consume(&pg, false).await;
    assert_eq!(lite.snapshot().await, pg.snapshot().await);
    assert_eq!(lite.count("likes").await, pg.count("likes").await);
}

/// The database refuses two records of a batch: the writer finds them,
/// counts and logs them, and commits every other row with the cursor.
async fn refused_records_are_quarantined(db: TestDb) {
    common::install_like_refusal(&db).await;
    let real: Vec<String> = fixture_lines(common::RELAY_JSONL)
        .into_iter()
        .take(50)
        .collect();
    let mut lines: Vec<Line> = real.iter().map(|l| Line::new(l)).collect();
    lines.sort_by_key(|l| l.cursor);
    let refused = r#"{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:07.513Z","subject":{"cid":"refused","uri":"at://did:plc:kga5z6jrxggdvv4ii47qsjl6/app.bsky.feed.post/3mpsdpmrock2f"}}"#;
    let mut uris = Vec::new();
    for (n, i) in [(1u64, 10usize), (2, 30)] {
        let rkey = tid(1_783_175_888_000_000 + n, 9);
        let t = lines[i].cursor.unwrap() + 1;
        uris.push(format!("at://{EVIL_LIKE}/app.bsky.feed.like/{rkey}"));
        let cid = dag_cbor_cid(rkey.as_bytes());
        let line = commit(
            EVIL_LIKE,
            t,
            "app.bsky.feed.like",
            &rkey,
            &rkey,
            &cid,
            refused,
        );
        lines.push(Line::new(&line));
    }
    lines.sort_by_key(|l| l.cursor);
    let last = lines.iter().filter_map(|l| l.cursor).max().unwrap();
    let server = JetstreamServer::start(lines).await;
    let toml = format!(
        "[source]\nendpoints = [\"{}\"]\n[batch]\nmax_age_ms = 20\n[log]\nprogress_interval_seconds = 0\n",
        server.url()
    );
    let (mut parity, _cfg) = Parity::consume(&toml, &db.url);
    let addr = parity.metrics_addr().await;
    server.wait_connections(1).await;
    server.publish_all();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while db.cursor().await != Some(last) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cursor {:?} never reached {last}:\n{}",
            db.cursor().await,
            parity.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = scrape(addr).await;
    let logs = parity.stop();

    let rejected = m.get(
        "parity_events_dropped_total",
        &[("reason", "db_rejected"), ("intentional", "false")],
    );
    assert_eq!(rejected, 2.0);
    assert!(m.get("parity_db_errors_total", &[("kind", "rejected")]) >= 1.0);
    assert_eq!(m.get("parity_db_errors_total", &[("kind", "fatal")]), 0.0);
    // Every real row, and neither refused like.
    let texts: Vec<&str> = real.iter().map(String::as_str).collect();
    let want = model::expected(&texts);
    for t in TABLES {
        assert_eq!(
            db.rows(t, &STD).await,
            model::standard_rows(&want, t),
            "table {t}"
        );
    }
    // Each refused record is logged by URI.
    for uri in &uris {
        assert!(
            logs.iter()
                .any(|l| l.contains("Database refused a record") && l.contains(uri.as_str())),
            "{uri} not logged:\n{}",
            logs.join("\n")
        );
    }
}

backend_tests!(quarantine, |db| refused_records_are_quarantined(db));

/// An import page with a record the database refuses: the page commits
/// without it, it counts as failed and is named in the log, and the pair
/// completes.
async fn refused_import_records_are_quarantined(db: TestDb) {
    use common::importer::{self, parity, run};
    common::install_like_refusal(&db).await;
    let pds = common::pds::Pds::start().await;
    let did = "did:plc:refusedimport00000000000";
    let like = "app.bsky.feed.like";
    let record = |i: u64, cid: &str| {
        common::pds::SynthRecord::new(
            like,
            &tid(1_700_000_000_000_000 + i, 1),
            &format!(
                r#"{{"$type":"{like}","createdAt":"2026-01-01T00:00:00.000Z","subject":{{"cid":"{cid}","uri":"at://did:plc:kga5z6jrxggdvv4ii47qsjl6/app.bsky.feed.post/3mpsdpmrock2f"}}}}"#
            ),
        )
    };
    let subject = "bafyreigypyz6zwh52ljwarhdtwboeedyr42vydpgti633ii2rsvljp7ak4";
    let refused = record(2, "refused");
    let refused_uri = format!("at://{did}/{like}/{}", refused.rkey);
    pds.add_repo(
        did,
        &tid(1_800_000_000_000_000, 1),
        None,
        vec![record(1, subject), refused, record(3, subject)],
    );
    let (code, out, err) = run(parity(&db, &pds, &["import", did])).await;
    assert_eq!(
        code, 0,
        "a refused record does not fail the DID: {out}{err}"
    );
    assert!(
        out.contains("2 records synced, 0 skipped, 1 failed"),
        "{out}"
    );
    assert!(
        err.contains("the database refused a record") && err.contains(&refused_uri),
        "{err}"
    );
    assert_eq!(db.count("likes").await, 2);
    assert_eq!(
        importer::states(&db, did).await,
        vec![(like.to_owned(), "completed".to_owned(), 2, 0, 1)]
    );
}

backend_tests!(import_quarantine, |db| {
    refused_import_records_are_quarantined(db)
});

/// The raw firehose: an `#identity` frame whose handle holds a NUL, before
/// 50 real relay frames, is dropped as malformed and the rest is stored.
async fn poisoned_firehose_is_stored(db: TestDb) {
    let real = common::relay_frames();
    let mut frames: Vec<(i64, Vec<u8>)> = real.iter().take(50).cloned().collect();
    // Seqs of the recording are consecutive: the poison goes first, in the
    // same batch as the real frames after it.
    let seq = frames[0].0 - 1;
    let poison = common::frames::message(
        &serde_json::json!({"op": 1, "t": "#identity"}),
        &serde_json::json!({"seq": seq, "did": EVIL, "time": "2026-07-04T14:38:07.513Z", "handle": "evil\u{0}.bsky.social"}),
    );
    frames.insert(0, (seq, poison));
    let last = frames.last().unwrap().0;
    let server =
        JetstreamServer::start(frames.iter().map(|(s, b)| Line::frame(b, *s)).collect()).await;
    let toml = format!(
        "[source]\nendpoints = [\"{}\"]\n[batch]\nmax_age_ms = 20\n[log]\nprogress_interval_seconds = 0\n",
        server.firehose_url()
    );
    let (mut parity, _cfg) = Parity::consume(&toml, &db.url);
    let addr = parity.metrics_addr().await;
    server.wait_connections(1).await;
    server.publish_all();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while db.cursor().await != Some(last) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cursor {:?} never reached {last}:\n{}",
            db.cursor().await,
            parity.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = scrape(addr).await;
    parity.stop();
    let malformed = m.get(
        "parity_events_dropped_total",
        &[("reason", "malformed"), ("intentional", "false")],
    );
    assert_eq!(malformed, 1.0);
    assert_eq!(
        db.scalar(&format!(
            "SELECT handle FROM parity_repos WHERE did = '{EVIL}'"
        ))
        .await,
        None
    );
    assert!(db.count("likes").await > 0);
}

backend_tests!(poisoned_firehose, |db| poisoned_firehose_is_stored(db));

/// What PostgreSQL refuses by itself is a rejection that quarantine handles
/// (a NUL in text: 22021; an index entry over the btree limit: 54000), even
/// when the rows come from a mapper that skipped the cleaning; and a
/// refused checkpoint (a negative cursor, our own corruption) still fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refusals_are_quarantined_at_the_store() {
    use parity::batch::{BatchConfig, Batcher, PurgePolicy};
    use parity::event::{Cursor, Did};
    use parity::mapper::{Mutation, Row, TableId, Value};
    use parity::store::{DatabaseConfig, Store};
    use std::time::Instant;

    let db = TestDb::postgres("poison_store").await;
    let mut store = Store::connect(&DatabaseConfig {
        url: db.url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store
        .prepare(&[parity::mapper::builtin::Builtin::Likes.schema()], &[])
        .await
        .unwrap();
    let did = Did::parse(EVIL_LIKE).unwrap();
    let like = |n: u64, subject_uri: String, subject_cid: &str| {
        let rkey = tid(1_783_175_888_000_000 + n, 1);
        Mutation::Upsert(Row {
            table: TableId(0),
            uri: format!("at://{EVIL_LIKE}/app.bsky.feed.like/{rkey}"),
            did: did.clone(),
            rkey: rkey.clone(),
            cid: dag_cbor_cid(rkey.as_bytes()),
            rev: rkey,
            record: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            values: vec![
                Value::Text(subject_uri),
                Value::Text(subject_cid.into()),
                Value::Null,
            ],
        })
    };
    let batch = |cursor: i64, mutations: Vec<Mutation>, handle: Option<&str>| {
        let mut b = Batcher::new(&BatchConfig::default(), PurgePolicy::default());
        b.seen("s", Cursor(cursor), 1, true, Instant::now());
        for m in mutations {
            b.push(m);
        }
        if let Some(h) = handle {
            b.identity(&Did::parse(EVIL).unwrap(), Some(h.to_owned()));
        }
        b.take().unwrap()
    };
    let uri = |m: &Mutation| m.uri().to_owned();
    let good = like(1, "at://did:plc:b/app.bsky.feed.post/1".into(), "bafyx");
    let long = like(2, format!("at://{}", long_random()), "bafyx");
    let nul = like(3, "at://did:plc:b/app.bsky.feed.post/1".into(), "a\0b");
    let want = vec![uri(&long), uri(&nul), format!("at://{EVIL}")];
    let b = batch(5, vec![good, long, nul], Some("evil\0.bsky.social"));

    let err = store.commit(&b).await.unwrap_err();
    assert!(err.is_rejection() && !err.is_transient(), "{err}");
    assert_eq!(err.kind(), "rejected");
    let q = store.quarantine(&b, err).await.unwrap();
    let mut got: Vec<String> = q.rejected.iter().map(|r| r.uri.clone()).collect();
    got.sort();
    let mut want = want;
    want.sort();
    assert_eq!(got, want);
    assert_eq!(q.stats.upserted_total(), 1);
    assert_eq!(db.count("likes").await, 1);
    assert_eq!(db.cursor().await, Some(5));
    assert_eq!(db.count("parity_repos WHERE handle IS NOT NULL").await, 0);

    // A negative cursor is refused by parity's own CHECK: nothing is left
    // out, nothing is written, the error comes back.
    let b = batch(-1, vec![like(4, "at://x".into(), "bafyx")], None);
    let err = store.commit(&b).await.unwrap_err();
    assert!(err.is_rejection(), "{err}");
    let err = store.quarantine(&b, err).await.unwrap_err();
    assert!(err.to_string().contains("parity_cursors"), "{err}");
    assert_eq!(db.count("likes").await, 1);
    assert_eq!(db.cursor().await, Some(5));
}
