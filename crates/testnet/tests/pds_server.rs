//! The test network peers are test infrastructure, so they are proven here
//! against independent oracles: `goat repo ls`'s listing of a real CAR, the
//! reference PDS's recorded responses (byte for byte), plc.directory's
//! status codes, and a real hickory resolver for the DNS server.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testnet::dns::Dns;
use testnet::fixture;
use testnet::pds::{
    DESCRIBE_REPO, Fault, GET_LATEST_COMMIT, LIST_RECORDS, PLC, Pds, SynthRecord, tid,
};

const ALICE: &str = "did:plc:xnu5z7akmky27sltgn7hbneu";
const BOB: &str = "did:plc:p2jidewytiik24tsb37m4ktc";
const CAROL: &str = "did:plc:e56xi43bwhhrzjgntitmqt64";
const POST: &str = "app.bsky.feed.post";
const LIKE: &str = "app.bsky.feed.like";

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn send(req: reqwest::RequestBuilder) -> Resp {
    let r = req.send().await.expect("request");
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

fn xrpc_url(pds: &Pds, method: &str, params: &[(&str, &str)]) -> String {
    let mut u = url::Url::parse(&format!("{}/xrpc/{method}", pds.url())).unwrap();
    u.query_pairs_mut().extend_pairs(params);
    u.into()
}

async fn xrpc(pds: &Pds, method: &str, params: &[(&str, &str)]) -> Resp {
    send(client().get(xrpc_url(pds, method, params))).await
}

async fn get(pds: &Pds, path: &str) -> Resp {
    send(client().get(format!("{}{path}", pds.url()))).await
}

/// Pages through one collection; returns `(rkey, cid, value)` in served
/// order and the number of requests.
async fn list_all(
    pds: &Pds,
    repo: &str,
    collection: &str,
    limit: &str,
    reverse: bool,
) -> (Vec<(String, String, Value)>, usize) {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for requests in 1.. {
        let mut params = vec![("repo", repo), ("collection", collection), ("limit", limit)];
        if reverse {
            params.push(("reverse", "true"));
        }
        if let Some(c) = &cursor {
            params.push(("cursor", c));
        }
        let r = xrpc(pds, LIST_RECORDS, &params).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let page = r.json();
        let records = page["records"].as_array().unwrap();
        for rec in records {
            let uri = rec["uri"].as_str().unwrap();
            let rkey = uri.rsplit('/').next().unwrap().to_owned();
            assert!(uri.starts_with("at://did:"));
            assert!(uri.ends_with(&format!("/{collection}/{rkey}")));
            out.push((
                rkey,
                rec["cid"].as_str().unwrap().to_owned(),
                rec["value"].clone(),
            ));
        }
        match page["cursor"].as_str() {
            None => return (out, requests),
            Some(c) => {
                let last = out.last().expect("a cursor comes with records").0.clone();
                assert_eq!(c, last, "cursor is the last record's rkey");
                cursor = Some(c.to_owned());
            }
        }
    }
    unreachable!()
}

fn post(rkey: &str, text: &str) -> SynthRecord {
    let json = json!({"$type": POST, "text": text, "createdAt": "2026-07-04T14:38:07.513Z"});
    SynthRecord::new(POST, rkey, &json.to_string())
}

fn like(rkey: &str) -> SynthRecord {
    let json = json!({"$type": LIKE, "createdAt": "2026-07-04T14:38:07.513Z",
        "subject": {"cid": "bafyx", "uri": format!("at://{BOB}/{POST}/1")}});
    SynthRecord::new(LIKE, rkey, &json.to_string())
}

/// `n` posts with TID rkeys one second apart, oldest first.
fn posts(n: usize) -> Vec<SynthRecord> {
    (0..n)
        .map(|i| {
            post(
                &tid(1_751_600_000_000_000 + i as u64 * 1_000_000, 7),
                &format!("post {i}"),
            )
        })
        .collect()
}

// ---- CAR repositories ----

#[tokio::test]
async fn jetstream_car_is_listed_exactly_as_goat_lists_it() {
    let pds = Pds::start().await;
    let info = pds.add_car(fixture("car/jetstream_repo.car"));
    let expected: BTreeSet<(String, String)> =
        testnet::fixture_lines("car/jetstream_repo.car_expected_records.tsv")
            .iter()
            .map(|l| {
                let (path, cid) = l.split_once('\t').unwrap();
                (path.to_owned(), cid.to_owned())
            })
            .collect();
    assert_eq!(info.did, "did:plc:53iucmf5ldftgqyf2ac7hmhd");
    assert_eq!(info.rev, "3migo7fijwi2k");
    assert_eq!((info.records, info.missing, info.missing_nodes), (23, 0, 0));
    assert_eq!(expected.len(), 23);

    // The commit CID is the CAR root, and its `data` is goat's MST root
    // (decoded here with ipld-core, not parity).
    let bytes = std::fs::read(fixture("car/jetstream_repo.car")).unwrap();
    let car = parity::source::car::Car::parse(&bytes).unwrap();
    let root = ipld_core::cid::Cid::try_from(car.roots()[0]).unwrap();
    assert_eq!(info.commit_cid, root.to_string());
    let commit: ipld_core::ipld::Ipld =
        serde_ipld_dagcbor::from_slice(car.get(car.roots()[0]).unwrap()).unwrap();
    let ipld_core::ipld::Ipld::Map(commit) = commit else {
        panic!()
    };
    assert!(
        matches!(commit.get("data"), Some(ipld_core::ipld::Ipld::Link(c))
        if c.to_string() == "bafyreidigqr65jj2zsmitco3fcuag6pi7std6quxa2bcp2xrpin44ikzsy")
    );

    let described = xrpc(&pds, DESCRIBE_REPO, &[("repo", &info.did)])
        .await
        .json();
    let collections: Vec<String> = described["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let from_goat: BTreeSet<String> = expected
        .iter()
        .map(|(p, _)| p.split_once('/').unwrap().0.to_owned())
        .collect();
    assert_eq!(collections, from_goat.into_iter().collect::<Vec<_>>());

    let mut listed = BTreeSet::new();
    let mut descending = Vec::new();
    for c in &collections {
        let (desc, requests) = list_all(&pds, &info.did, c, "2", false).await;
        let rkeys: Vec<&String> = desc.iter().map(|r| &r.0).collect();
        assert!(
            rkeys.windows(2).all(|w| w[0] > w[1]),
            "descending: {rkeys:?}"
        );
        // Every non-empty page has a cursor; the end is an empty page.
        assert_eq!(requests, desc.len().div_ceil(2) + 1);
        for (rkey, cid, value) in &desc {
            assert_eq!(
                value["$type"],
                c.as_str(),
                "record {c}/{rkey} is its collection's"
            );
            assert!(listed.insert((format!("{c}/{rkey}"), cid.clone())));
        }
        descending.push(desc);
    }
    assert_eq!(listed, expected);
    let pages = pds.list_records_pages();
    let distinct: BTreeSet<_> = pages.iter().collect();
    assert_eq!(distinct.len(), pages.len(), "no page fetched twice");
    assert!(pages.iter().all(|p| p.0 == info.did));

    for (c, desc) in collections.iter().zip(descending) {
        let (asc, _) = list_all(&pds, &info.did, c, "3", true).await;
        assert_eq!(asc, desc.into_iter().rev().collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn every_car_fixture_walks_to_its_documented_record_counts() {
    let pds = Pds::start().await;
    // (file, records served, records whose block is absent, MST nodes
    // absent) per car/SOURCES.md. The slice's 5 listed records are those
    // of the nodes present: its root's left subtree is not in the file.
    let cases = [
        ("shrike_calabro.car", 4347, 0, 0),
        ("repostream_little.car", 278, 0, 0),
        ("repostream_tiny.car", 8, 0, 0),
        ("repostream_empty.car", 0, 0, 0),
        ("jetstream_repo.car", 23, 0, 0),
        ("indigo_bnewbold.robocracy.org.20250310005405.car", 38, 0, 0),
        ("indigo_fakermaker.repo.car", 142, 0, 0),
        ("indigo_paul_staging.repo.car", 185, 0, 0),
        ("indigo_greenground.repo.car", 2, 0, 0),
        ("indigo_repo_slice.car", 1, 4, 1),
        (
            "indigo_bafyreieovfuizojpw3zresz7sx3nk4trm2by23pt5rxbey3jme4uo5ogiu.car",
            6,
            0,
            0,
        ),
        ("rsky_valid_repo.car", 6, 0, 0),
    ];
    for (file, records, missing, missing_nodes) in cases {
        let info = pds.add_car(fixture(&format!("car/{file}")));
        assert_eq!(
            (info.records, info.missing, info.missing_nodes),
            (records, missing, missing_nodes),
            "{file}"
        );
        let bytes = std::fs::read(fixture(&format!("car/{file}"))).unwrap();
        let repo = testnet::pds::mst::read_car(&bytes);
        assert_eq!((&repo.did, &repo.rev), (&info.did, &info.rev));
        // Served as read. (Not in the same order: the MST sorts whole keys,
        // and `.` < `/` puts `a.b.c/x` before `a.b/y`.)
        let mut by_collection = repo.records.clone();
        by_collection.sort_by(|a, b| (&a.collection, &a.rkey).cmp(&(&b.collection, &b.rkey)));
        assert_eq!(pds.records(&info.did), by_collection, "{file}");
        let keys: Vec<String> = repo
            .records
            .iter()
            .map(|r| format!("{}/{}", r.collection, r.rkey))
            .collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "{file}: MST order is key order"
        );
        for r in &repo.records {
            let v: Value = serde_json::from_str(&r.json).unwrap();
            assert_eq!(
                v["$type"],
                r.collection.as_str(),
                "{file}: {}/{}",
                r.collection,
                r.rkey
            );
            assert!(r.cid.starts_with("bafyrei"), "{file}: {}", r.cid);
        }
    }
}

// ---- listRecords semantics ----

/// The records of rsky's PDS 0.5.27 recordings, each value's JSON text kept
/// as recorded.
fn recorded_alice_records() -> Vec<SynthRecord> {
    #[derive(serde::Deserialize)]
    struct Page {
        records: Vec<Rec>,
    }
    #[derive(serde::Deserialize)]
    struct Rec {
        uri: String,
        cid: String,
        value: Box<serde_json::value::RawValue>,
    }
    let mut out = Vec::new();
    for f in ["listRecords", "listRecords_page2", "listRecords_reverse"] {
        let text = std::fs::read_to_string(fixture(&format!("xrpc/rsky-ts-pds-0.5.27/{f}.json")));
        let page: Page = serde_json::from_str(&text.unwrap()).unwrap();
        for r in page.records {
            let (_, rkey) = r.uri.rsplit_once('/').unwrap();
            out.push(SynthRecord {
                collection: POST.into(),
                rkey: rkey.into(),
                cid: r.cid,
                json: r.value.get().into(),
            });
        }
    }
    out
}

fn recorded(name: &str) -> String {
    std::fs::read_to_string(fixture(&format!("xrpc/rsky-ts-pds-0.5.27/{name}.json")))
        .unwrap()
        .trim_end()
        .to_owned()
}

#[tokio::test]
async fn reference_pds_responses_are_reproduced_byte_for_byte() {
    let pds = Pds::start().await;
    pds.add_repo(
        ALICE,
        "3mvan7ylpmc2w",
        Some("alice.test"),
        recorded_alice_records(),
    );
    pds.add_repo(BOB, "3mvan7yikzk2w", None, posts(1));
    pds.add_repo(CAROL, "3mvan7xswnc2w", None, posts(1));
    pds.set_account_status(BOB, Some("deactivated"));
    pds.set_account_status(CAROL, Some("takendown"));
    let base = [("repo", ALICE), ("collection", POST)];
    type Params<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Params, u16, &str); 6] = [
        (&[("limit", "5")], 200, "listRecords"),
        (
            &[("limit", "5"), ("cursor", "3lfixtureaa2c")],
            200,
            "listRecords_page2",
        ),
        (
            &[("limit", "5"), ("reverse", "true")],
            200,
            "listRecords_reverse",
        ),
        (&[("limit", "101")], 400, "alice_listRecords_limit101"),
        (&[("repo", BOB)], 400, "bob_listRecords"),
        (&[("repo", CAROL)], 400, "carol_listRecords"),
    ];
    for (extra, status, name) in cases {
        let mut params: Vec<(&str, &str)> = base.to_vec();
        for (k, v) in extra {
            params.retain(|p| p.0 != *k);
            params.push((k, v));
        }
        let r = xrpc(&pds, LIST_RECORDS, &params).await;
        assert_eq!((r.status, &r.body), (status, &recorded(name)), "{name}");
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("application/json")
        );
    }
}

#[tokio::test]
async fn list_records_orders_pages_and_validates_like_the_reference() {
    let pds = Pds::start().await;
    let all = posts(120);
    let mut records = all.clone();
    records.extend([like("3laaaaaaaaaa2"), like("3lbbbbbbbbbb2")]);
    pds.add_repo(ALICE, "3mvan7ylpmc2w", Some("Alice.Test"), records);
    let newest_first: Vec<String> = all.iter().rev().map(|r| r.rkey.clone()).collect();

    // Default limit 50, newest first, then the empty final page.
    let (desc, requests) = list_all(&pds, ALICE, POST, "50", false).await;
    assert_eq!(requests, 4);
    let rkeys: Vec<String> = desc.iter().map(|r| r.0.clone()).collect();
    assert_eq!(rkeys, newest_first);
    let r = xrpc(&pds, LIST_RECORDS, &[("repo", ALICE), ("collection", POST)])
        .await
        .json();
    assert_eq!(r["records"].as_array().unwrap().len(), 50);
    assert_eq!(r["cursor"], newest_first[49].as_str());
    for (got, want) in desc.iter().zip(all.iter().rev()) {
        assert_eq!(got.1, want.cid);
        assert_eq!(got.2, serde_json::from_str::<Value>(&want.json).unwrap());
    }

    // The cursor is exclusive, both ways, and need not be an existing rkey.
    let after = |cursor: &str, reverse: &str| {
        let params = [
            ("repo", ALICE),
            ("collection", POST),
            ("limit", "2"),
            ("cursor", cursor),
            ("reverse", reverse),
        ];
        let url = xrpc_url(&pds, LIST_RECORDS, &params);
        async move {
            let v = send(client().get(url)).await.json();
            v["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    r["uri"]
                        .as_str()
                        .unwrap()
                        .rsplit('/')
                        .next()
                        .unwrap()
                        .to_owned()
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        after(&newest_first[10], "false").await,
        newest_first[11..13]
    );
    assert_eq!(
        after(&newest_first[10], "true").await,
        [newest_first[9].clone(), newest_first[8].clone()]
    );
    let between = format!("{}a", newest_first[10]);
    assert_eq!(after(&between, "false").await, newest_first[10..12]);
    assert!(after(&newest_first[119], "false").await.is_empty());

    // By handle, any case; other collections are separate.
    let (likes, _) = list_all(&pds, "alice.TEST", LIKE, "100", false).await;
    let like_keys: Vec<&str> = likes.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(like_keys, ["3lbbbbbbbbbb2", "3laaaaaaaaaa2"]);
    let none = xrpc(
        &pds,
        LIST_RECORDS,
        &[("repo", ALICE), ("collection", "app.bsky.graph.follow")],
    );
    assert_eq!(none.await.body, r#"{"records":[]}"#);

    // Limits and parameters.
    let full = xrpc(
        &pds,
        LIST_RECORDS,
        &[("repo", ALICE), ("collection", POST), ("limit", "100")],
    );
    assert_eq!(full.await.json()["records"].as_array().unwrap().len(), 100);
    for bad in [
        vec![("repo", ALICE), ("collection", POST), ("limit", "0")],
        vec![("repo", ALICE), ("collection", POST), ("limit", "ten")],
        vec![("repo", ALICE), ("collection", POST), ("reverse", "yes")],
        vec![("repo", ALICE)],
        vec![("collection", POST)],
        vec![("repo", "nobody.test"), ("collection", POST)],
        vec![("repo", BOB), ("collection", POST)],
    ] {
        let r = xrpc(&pds, LIST_RECORDS, &bad).await;
        assert_eq!(
            (r.status, &r.json()["error"]),
            (400, &json!("InvalidRequest")),
            "{bad:?}"
        );
    }
    let r = xrpc(&pds, LIST_RECORDS, &[("repo", BOB), ("collection", POST)]).await;
    assert_eq!(r.json()["message"], format!("Could not find repo: {BOB}"));

    // The other cursor style: none on the page after which nothing remains.
    pds.set_omit_final_cursor(true);
    assert_eq!(list_all(&pds, ALICE, POST, "50", false).await.1, 3);
    assert_eq!(list_all(&pds, ALICE, POST, "60", false).await.1, 2);
}

#[tokio::test]
async fn updates_and_deletes_change_what_is_served() {
    let pds = Pds::start().await;
    pds.add_repo(
        ALICE,
        "3mvan7ylpmc2w",
        None,
        vec![post("3l2", "two"), like("3l1")],
    );
    pds.update_record(ALICE, post("3l2", "two, edited"));
    pds.update_record(ALICE, post("3l3", "three"));
    assert!(pds.delete_record(ALICE, LIKE, "3l1"));
    assert!(!pds.delete_record(ALICE, LIKE, "3l1"));
    let (served, _) = list_all(&pds, ALICE, POST, "10", false).await;
    let texts: Vec<&str> = served
        .iter()
        .map(|r| r.2["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["three", "two, edited"]);
    assert_eq!(served[1].1, post("3l2", "two, edited").cid);
    assert_ne!(served[1].1, post("3l2", "two").cid);
    let described = xrpc(&pds, DESCRIBE_REPO, &[("repo", ALICE)]).await.json();
    assert_eq!(described["collections"], json!([POST]));
    assert_eq!(
        pds.records(ALICE),
        vec![post("3l2", "two, edited"), post("3l3", "three")]
    );
}

#[tokio::test]
async fn describe_repo_and_latest_commit() {
    let pds = Pds::start().await;
    pds.add_repo(
        ALICE,
        "3mvan7ylpmc2w",
        Some("alice.test"),
        vec![like("3l1"), post("3l2", "x")],
    );
    for repo in [ALICE, "alice.test"] {
        let d = xrpc(&pds, DESCRIBE_REPO, &[("repo", repo)]).await.json();
        assert_eq!(d["handle"], "alice.test");
        assert_eq!(d["did"], ALICE);
        assert_eq!(d["didDoc"], pds.did_doc(ALICE).unwrap());
        assert_eq!(d["collections"], json!([LIKE, POST]));
        assert_eq!(d["handleIsCorrect"], true);
    }

    let c = xrpc(&pds, GET_LATEST_COMMIT, &[("did", ALICE)])
        .await
        .json();
    assert_eq!(c["rev"], "3mvan7ylpmc2w");
    let first_cid = c["cid"].as_str().unwrap().to_owned();
    assert!(first_cid.starts_with("bafyrei"));
    pds.set_rev(ALICE, "3mvan7zzzzz2w");
    let c = xrpc(&pds, GET_LATEST_COMMIT, &[("did", ALICE)])
        .await
        .json();
    assert_eq!(c["rev"], "3mvan7zzzzz2w");
    assert_ne!(c["cid"], first_cid.as_str());

    let r = xrpc(&pds, GET_LATEST_COMMIT, &[("did", BOB)]).await;
    assert_eq!(
        (r.status, &r.json()["error"]),
        (400, &json!("RepoNotFound"))
    );
    for (status, error) in [
        ("deactivated", "RepoDeactivated"),
        ("takendown", "RepoTakendown"),
    ] {
        pds.set_account_status(ALICE, Some(status));
        let r = xrpc(&pds, GET_LATEST_COMMIT, &[("did", ALICE)]).await;
        assert_eq!((r.status, &r.json()["error"]), (400, &json!(error)));
        let r = xrpc(&pds, DESCRIBE_REPO, &[("repo", ALICE)]).await;
        assert_eq!(r.status, 400);
    }
}

// ---- faults, pacing, gate ----

#[tokio::test]
async fn faults_are_consumed_in_order_by_their_method_only() {
    let pds = Pds::start().await;
    pds.add_repo(ALICE, "3mvan7ylpmc2w", None, posts(3));
    let normal = xrpc(&pds, LIST_RECORDS, &[("repo", ALICE), ("collection", POST)])
        .await
        .body;
    pds.inject(
        LIST_RECORDS,
        vec![
            Fault::Status(500),
            Fault::Status(502),
            Fault::RateLimited {
                retry_after_secs: Some(7),
                remaining: Some(0),
                reset_epoch_secs: Some(1_783_000_000),
            },
            Fault::RateLimited {
                retry_after_secs: None,
                remaining: None,
                reset_epoch_secs: None,
            },
            Fault::MalformedJson,
            Fault::NotJson,
        ],
    );
    // Another method is not affected.
    assert_eq!(
        xrpc(&pds, DESCRIBE_REPO, &[("repo", ALICE)]).await.status,
        200
    );

    let list = || xrpc(&pds, LIST_RECORDS, &[("repo", ALICE), ("collection", POST)]);
    let r = list().await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (500, Some("InternalServerError"))
    );
    let r = list().await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (502, Some("UpstreamFailure"))
    );
    let r = list().await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (429, Some("RateLimitExceeded"))
    );
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("ratelimit-limit"), Some("3000"));
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("ratelimit-reset"), Some("1783000000"));
    let r = list().await;
    assert_eq!(r.status, 429);
    for h in [
        "retry-after",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
    ] {
        assert_eq!(r.header(h), None, "{h}: a bare 429, as from an edge proxy");
    }
    let r = list().await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<Value>(&r.body).is_err());
    assert!(!r.body.is_empty() && normal.starts_with(&r.body));
    let r = list().await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(serde_json::from_str::<Value>(&r.body).is_err());
    assert_eq!(list().await.body, normal);

    let statuses: Vec<(String, u16)> = pds
        .requests()
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect();
    let l = LIST_RECORDS.to_owned();
    assert_eq!(
        statuses,
        [
            (l.clone(), 200),
            (DESCRIBE_REPO.to_owned(), 200),
            (l.clone(), 500),
            (l.clone(), 502),
            (l.clone(), 429),
            (l.clone(), 429),
            (l.clone(), 200),
            (l.clone(), 200),
            (l, 200),
        ]
    );
    assert_eq!(pds.count(LIST_RECORDS), 8);
    assert_eq!(pds.requests()[2].query["repo"], ALICE);
    // Only the two normal answers count as pages.
    let page = (ALICE.to_owned(), POST.to_owned(), None);
    assert_eq!(pds.list_records_pages(), [page.clone(), page]);
}

#[tokio::test]
async fn hang_outlasts_a_client_timeout_then_the_next_request_is_normal() {
    let pds = Pds::start().await;
    pds.add_repo(ALICE, "3mvan7ylpmc2w", None, posts(1));
    let url = xrpc_url(&pds, LIST_RECORDS, &[("repo", ALICE), ("collection", POST)]);
    pds.inject(
        LIST_RECORDS,
        vec![
            Fault::Hang(Duration::from_secs(600)),
            Fault::Hang(Duration::from_millis(100)),
        ],
    );
    let err = client()
        .get(&url)
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(pds.requests()[0].status, 0, "no answer was sent");

    let t = Instant::now();
    let r = send(client().get(&url)).await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(send(client().get(&url)).await.status, 200);
}

#[tokio::test]
async fn latency_and_rate_limit_headers_apply_to_xrpc_answers() {
    let pds = Pds::start().await;
    pds.add_repo(ALICE, "3mvan7ylpmc2w", None, posts(1));
    pds.set_latency(Duration::from_millis(50));
    pds.set_rate_limit_headers(3000, 2999, 1_783_000_300);
    let t = Instant::now();
    let r = xrpc(&pds, LIST_RECORDS, &[("repo", ALICE), ("collection", POST)]).await;
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-limit"), Some("3000"));
    assert_eq!(r.header("ratelimit-remaining"), Some("2999"));
    assert_eq!(r.header("ratelimit-reset"), Some("1783000300"));
    assert_eq!(r.header("ratelimit-policy"), Some("3000;w=300"));
    let r = get(&pds, &format!("/{ALICE}")).await;
    assert_eq!(
        (r.status, r.header("ratelimit-limit")),
        (200, None),
        "not on the PLC role"
    );
}

#[tokio::test]
async fn gate_holds_list_records_until_opened() {
    let pds = std::sync::Arc::new(Pds::start().await);
    pds.add_repo(ALICE, "3mvan7ylpmc2w", None, vec![post("3l1", "before")]);
    let url = xrpc_url(&pds, LIST_RECORDS, &[("repo", ALICE), ("collection", POST)]);
    pds.gate_list_records_after(1);
    assert_eq!(send(client().get(&url)).await.status, 200);

    let held = tokio::spawn(send(client().get(&url)));
    pds.wait_for_list_records(2).await;
    // A faulted request is answered even while the gate is closed.
    pds.inject(LIST_RECORDS, vec![Fault::Status(503)]);
    assert_eq!(send(client().get(&url)).await.status, 503);
    assert!(!held.is_finished());
    assert_eq!(pds.requests()[1].status, 0, "held, not answered");

    // What the held request sees is read after the gate opens.
    pds.update_record(ALICE, post("3l1", "after"));
    pds.open_gate();
    let r = held.await.unwrap();
    assert_eq!(r.json()["records"][0]["value"]["text"], "after");
    assert_eq!(send(client().get(&url)).await.status, 200, "gate removed");
    assert_eq!(pds.count(LIST_RECORDS), 4);
}

// ---- identity ----

#[tokio::test]
async fn plc_directory_serves_documents_404_and_410() {
    let pds = Pds::start().await;
    pds.add_did_doc(ALICE, "Alice.Test");
    let r = get(&pds, &format!("/{ALICE}")).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/did+ld+json")
    );
    let doc = r.json();
    let template: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("identity/did-docs/indigo_did_plc_doc.json")).unwrap(),
    )
    .unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&doc), keys(&template));
    assert_eq!(doc["@context"], template["@context"]);
    assert_eq!(doc["id"], ALICE);
    assert_eq!(doc["alsoKnownAs"], json!(["at://alice.test"]));
    assert_eq!(
        doc["verificationMethod"][0]["id"],
        format!("{ALICE}#atproto")
    );
    assert_eq!(doc["verificationMethod"][0]["controller"], ALICE);
    assert_eq!(doc["verificationMethod"][0]["type"], "Multikey");
    assert_eq!(
        doc["service"],
        json!([{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": pds.url()}])
    );

    let r = get(&pds, &format!("/{BOB}")).await;
    assert_eq!(
        (r.status, r.json()),
        (
            404,
            json!({"message": format!("DID not registered: {BOB}")})
        )
    );
    pds.tombstone(ALICE);
    let r = get(&pds, &format!("/{ALICE}")).await;
    assert_eq!(
        (r.status, r.json()),
        (
            410,
            json!({"message": format!("DID not available: {ALICE}")})
        )
    );
    pds.remove_did_doc(ALICE);
    assert_eq!(get(&pds, &format!("/{ALICE}")).await.status, 404);

    pds.inject(PLC, vec![Fault::Status(503)]);
    pds.add_did_doc(ALICE, "alice.test");
    let r = get(&pds, &format!("/{ALICE}")).await;
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (503, Some("Not Enough Resources"))
    );
    assert_eq!(get(&pds, &format!("/{ALICE}")).await.status, 200);
    assert_eq!(pds.count(PLC), 6);

    // A CAR's DID is registered on load, with no handle.
    let info = pds.add_car(fixture("car/repostream_tiny.car"));
    let doc = get(&pds, &format!("/{}", info.did)).await.json();
    assert_eq!(
        (doc["id"].as_str(), &doc["alsoKnownAs"]),
        (Some(info.did.as_str()), &json!([]))
    );
    let d = xrpc(&pds, DESCRIBE_REPO, &[("repo", &info.did)])
        .await
        .json();
    assert_eq!(
        (&d["handle"], &d["handleIsCorrect"]),
        (&json!("handle.invalid"), &json!(false))
    );
}

#[tokio::test]
async fn recorded_did_doc_is_served_with_only_its_pds_endpoint_rewritten() {
    let pds = Pds::start().await;
    let path = fixture("identity/did-docs/indigo_did_plc_z5vnbioquyhivxirw3bbljmu.didDoc.json");
    let recorded: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let did = pds.add_did_doc_json(recorded.clone());
    assert_eq!(did, "did:plc:z5vnbioquyhivxirw3bbljmu");
    let mut expected = recorded;
    expected["service"][0]["serviceEndpoint"] = json!(pds.url());
    assert_eq!(get(&pds, &format!("/{did}")).await.json(), expected);
    // Its alias is the account's handle.
    pds.add_repo(&did, "3l", None, posts(1));
    let d = xrpc(&pds, DESCRIBE_REPO, &[("repo", "koch5149-c5.test")])
        .await
        .json();
    assert_eq!(
        (&d["did"], &d["handleIsCorrect"]),
        (&json!(did), &json!(true))
    );
}

#[tokio::test]
async fn did_web_and_handle_well_known() {
    let pds = Pds::start().await;
    assert_eq!(get(&pds, "/.well-known/did.json").await.status, 404);
    let web = pds.local_did_web();
    assert_eq!(web, format!("did:web:localhost%3A{}", pds.addr().port()));
    pds.set_did_web(&web);
    let r = get(&pds, "/.well-known/did.json").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["id"], web.as_str());
    assert_eq!(doc["service"][0]["serviceEndpoint"], pds.url());
    // did:web is not the PLC directory's.
    assert_eq!(get(&pds, &format!("/{web}")).await.status, 404);

    pds.add_handle("Alice.Test", ALICE);
    let well_known = |host: &'static str| {
        let req = client()
            .get(format!("{}/.well-known/atproto-did", pds.url()))
            .header("host", host);
        send(req)
    };
    for host in ["alice.test", "ALICE.test:8443"] {
        let r = well_known(host).await;
        assert_eq!((r.status, r.body.as_str()), (200, ALICE), "{host}");
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    }
    assert_eq!(well_known("bob.test").await.status, 404);
}

// ---- DNS ----

fn txt_strings(lookup: &hickory_resolver::lookup::Lookup) -> Vec<String> {
    use hickory_resolver::proto::rr::RData;
    lookup
        .answers()
        .iter()
        .map(|r| match &r.data {
            RData::TXT(t) => t
                .txt_data
                .iter()
                .map(|s| String::from_utf8_lossy(s))
                .collect(),
            other => panic!("not TXT: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn dns_answers_atproto_txt_to_a_real_resolver() {
    let dns = Dns::start().await;
    dns.set_handle("Alice.Test", ALICE);
    dns.set_txt(
        "_atproto.two.test.",
        vec![format!("did={ALICE}"), format!("did={BOB}")],
    );
    dns.set_txt("_atproto.empty.test", vec![]);
    let long = format!("did={}", "x".repeat(300));
    dns.set_txt("_atproto.long.test", vec![long.clone()]);
    let resolver = dns.resolver();

    let found = resolver.txt_lookup("_atproto.alice.test.").await.unwrap();
    assert_eq!(txt_strings(&found), [format!("did={ALICE}")]);
    let two = resolver.txt_lookup("_atproto.two.test.").await.unwrap();
    assert_eq!(
        txt_strings(&two),
        [format!("did={ALICE}"), format!("did={BOB}")]
    );
    let split = resolver.txt_lookup("_atproto.long.test.").await.unwrap();
    assert_eq!(txt_strings(&split), [long]);

    let err = resolver.txt_lookup("_atproto.bob.test.").await.unwrap_err();
    assert!(err.is_nx_domain(), "{err}");
    let err = resolver
        .txt_lookup("_atproto.empty.test.")
        .await
        .unwrap_err();
    assert!(err.is_no_records_found() && !err.is_nx_domain(), "{err}");
    let err = resolver
        .ipv4_lookup("_atproto.alice.test.")
        .await
        .unwrap_err();
    assert!(err.is_no_records_found() && !err.is_nx_domain(), "{err}");

    dns.set_servfail(true);
    let err = resolver
        .txt_lookup("_atproto.alice.test.")
        .await
        .unwrap_err();
    assert!(!err.is_no_records_found(), "{err}");
    dns.set_servfail(false);
    dns.remove("_atproto.alice.test");
    assert!(
        resolver
            .txt_lookup("_atproto.alice.test.")
            .await
            .unwrap_err()
            .is_nx_domain()
    );
    assert!(
        dns.queries()
            .contains(&"_atproto.alice.test TXT".to_owned())
    );
    assert!(dns.queries().contains(&"_atproto.alice.test A".to_owned()));
}

#[test]
fn tids_sort_like_their_timestamps_and_synthetic_cids_are_stable() {
    let a = tid(1_751_600_000_000_000, 0);
    let b = tid(1_751_600_000_000_001, 0);
    assert_eq!(a.len(), 13);
    assert!(a < b && b < tid(1_751_600_000_000_001, 1));
    assert_eq!(post("3l1", "x").cid, post("3l1", "x").cid);
    assert_ne!(post("3l1", "x").cid, post("3l1", "y").cid);
}
