//! The change feed through each broker on this machine (NATS JetStream on
//! 4222, Redis on 6379, RabbitMQ on 5672): the relay publishes the log, two
//! `parity serve` nodes follow the broker, and their clients receive the
//! same sequence; a relay restarted from an older published seq (a crash
//! between publishing and recording it) republishes without the clients
//! seeing a duplicate, and NATS JetStream keeps each change once.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parity::feed::broker::{self, Broker};
use parity::feed::{self, FeedConfig};
use parity::store::{DatabaseConfig, Store};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::common::TestDb;

const WAIT: Duration = Duration::from_secs(20);

async fn store(db: &TestDb) -> Store {
    let s = Store::connect(&DatabaseConfig {
        url: db.url.clone(),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap();
    s.migrate().await.unwrap();
    s
}

fn config(url: &str) -> FeedConfig {
    FeedConfig {
        enabled: true,
        broker: url.to_owned(),
        poll_interval_ms: 50,
        ..FeedConfig::default()
    }
}

/// A serve node's config: its own reading of the log is a minute apart, so
/// what its clients get within the tests' wait came through the broker.
fn node_config(url: &str) -> FeedConfig {
    FeedConfig {
        poll_interval_ms: 60_000,
        ..config(url)
    }
}

/// A serve node on a free port; returns its address.
async fn node(db: &TestDb, url: &str, token: &CancellationToken) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = store(db).await;
    let cfg = node_config(url);
    let t = token.clone();
    tokio::spawn(async move {
        feed::run(s, cfg, listener, Arc::new(Notify::new()), t)
            .await
            .unwrap()
    });
    addr
}

/// Appends `n` changes of a collection unique to this test.
async fn append(db: &TestDb, table: &str, n: usize) {
    let at = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let ts = if db.is_pg() {
        format!("'{at}'::timestamptz")
    } else {
        format!("'{at}'")
    };
    let values: Vec<String> = (0..n)
        .map(|i| {
            let rkey = format!("3lc{i:010}{}", rand::random::<u32>());
            format!(
                "('{table}', 'upsert', 'at://did:plc:abc/com.example.x/{rkey}', 'did:plc:abc', 'com.example.x', '{rkey}', 'bafyreia', '3lc2aaaaaaa22', '{{}}', {ts})"
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO parity_changes (table_name, op, uri, did, collection, rkey, cid, rev, record, committed_at) VALUES {}",
        values.join(", ")
    );
    db.exec(&sql).await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn client(addr: std::net::SocketAddr) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/feed"))
        .await
        .unwrap();
    ws.send(Message::text(r#"{"op":"subscribe","channels":["all"]}"#))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await["op"], "subscribed");
    ws
}

async fn next(ws: &mut Ws) -> serde_json::Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Close(c))) => panic!("closed: {c:?}"),
            Some(Ok(_)) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
}

async fn seqs(ws: &mut Ws, n: usize) -> Vec<i64> {
    let mut out = Vec::new();
    while out.len() < n {
        out.push(next(ws).await["seq"].as_i64().unwrap());
    }
    out
}

async fn scenario(db: TestDb, url: &str) {
    let table = format!("t{}", rand::random::<u32>());
    let token = CancellationToken::new();
    let _stop = token.clone().drop_guard();
    let (a, b) = (node(&db, url, &token).await, node(&db, url, &token).await);
    let (mut ca, mut cb) = (client(a).await, client(b).await);

    let s = store(&db).await;
    let relay_token = token.child_token();
    let wake = Arc::new(Notify::new());
    let b1 = Arc::new(Broker::connect(url, &config(url)).await.unwrap());
    let relay = tokio::spawn(broker::relay(
        s.clone(),
        b1,
        wake.clone(),
        Duration::from_millis(50),
        relay_token.clone(),
    ));
    for _ in 0..3 {
        append(&db, &table, 10).await;
        wake.notify_one();
    }
    let want: Vec<i64> = (1..=30).collect();
    assert_eq!(seqs(&mut ca, 30).await, want);
    assert_eq!(seqs(&mut cb, 30).await, want);

    // A crash after publishing 11..30 but before recording it: the restarted
    // relay publishes them again. Clients see each change once.
    relay_token.cancel();
    relay.await.unwrap().unwrap();
    db.exec("UPDATE parity_feed_state SET published_seq = 10")
        .await;
    let b2 = Arc::new(Broker::connect(url, &config(url)).await.unwrap());
    let relay2 = token.child_token();
    tokio::spawn(broker::relay(
        s.clone(),
        b2,
        wake.clone(),
        Duration::from_millis(50),
        relay2,
    ));
    append(&db, &table, 5).await;
    wake.notify_one();
    let want: Vec<i64> = (31..=35).collect();
    assert_eq!(seqs(&mut ca, 5).await, want);
    assert_eq!(seqs(&mut cb, 5).await, want);

    if url.starts_with("nats://") {
        // JetStream dropped the republished ids: 35 messages for this table.
        let nc = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(nc);
        let stream = js.get_stream("PARITY").await.unwrap();
        let mut info = stream
            .info_with_subjects(format!("parity.{table}.>"))
            .await
            .unwrap();
        let mut total = 0;
        while let Some(Ok((_, n))) = info.next().await {
            total += n;
        }
        assert_eq!(total, 35);
    }
}

backend_tests!(nats_jetstream_fans_out_once, |db| scenario(
    db,
    "nats://127.0.0.1:4222"
));
backend_tests!(redis_fans_out_once, |db| scenario(
    db,
    "redis://127.0.0.1:6379"
));
backend_tests!(rabbitmq_fans_out_once, |db| scenario(
    db,
    "amqp://guest:guest@127.0.0.1:5672/%2f"
));

/// The `uri`s of the next `n` messages.
async fn uris(ws: &mut Ws, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        out.push(next(ws).await["uri"].as_str().unwrap().to_owned());
    }
    out
}

/// Every logged uri of `db`, in seq order.
async fn logged(db: &TestDb) -> Vec<String> {
    db.query_text("SELECT uri FROM parity_changes ORDER BY seq".into(), 1)
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
}

/// Two databases publish into the same stream or exchange (their seqs
/// overlap): each database's serve node delivers only its own changes.
async fn shared_broker(url: &str) {
    let (da, dbb) = (TestDb::sqlite(), TestDb::sqlite());
    let table = format!("t{}", rand::random::<u32>());
    let token = CancellationToken::new();
    let _stop = token.clone().drop_guard();
    let (na, nb) = (node(&da, url, &token).await, node(&dbb, url, &token).await);
    let (mut ca, mut cb) = (client(na).await, client(nb).await);
    let mut wakes = Vec::new();
    for d in [&da, &dbb] {
        let wake = Arc::new(Notify::new());
        let b = Arc::new(Broker::connect(url, &config(url)).await.unwrap());
        tokio::spawn(broker::relay(
            store(d).await,
            b,
            wake.clone(),
            Duration::from_millis(50),
            token.clone(),
        ));
        wakes.push(wake);
    }
    // B's changes first, all the way to B's client: A's node sees them on
    // the broker (seqs 1..10, as A's will be) and must not serve them.
    append(&dbb, &table, 10).await;
    wakes[1].notify_one();
    assert_eq!(uris(&mut cb, 10).await, logged(&dbb).await);
    append(&da, &table, 10).await;
    wakes[0].notify_one();
    assert_eq!(uris(&mut ca, 10).await, logged(&da).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_two_databases_share_a_stream() {
    shared_broker("nats://127.0.0.1:4222").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_databases_share_channels() {
    shared_broker("redis://127.0.0.1:6379").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_two_databases_share_an_exchange() {
    shared_broker("amqp://guest:guest@127.0.0.1:5672/%2f").await;
}

/// The relay of a run that is closing (token cancelled, pool closed) ends
/// without an error, so `parity consume` exits 0 on SIGTERM; the same
/// closed store while the run goes on is a real failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_ends_quietly_when_the_run_closes_its_store() {
    let db = TestDb::sqlite();
    let s = store(&db).await;
    let url = "redis://127.0.0.1:6379";
    let b = Arc::new(Broker::connect(url, &config(url)).await.unwrap());
    s.close().await;
    let token = CancellationToken::new();
    let running = broker::relay(
        s.clone(),
        b.clone(),
        Arc::new(Notify::new()),
        Duration::from_millis(50),
        token.clone(),
    )
    .await;
    assert!(running.is_err(), "a closed store while running is an error");
    token.cancel();
    let closing = broker::relay(
        s,
        b,
        Arc::new(Notify::new()),
        Duration::from_millis(50),
        token,
    )
    .await;
    assert!(closing.is_ok(), "{closing:?}");
}

/// A serve node's follow loop given a burst the subscription already holds
/// (taken and published as one page): a duplicate, another database's
/// change and a malformed payload are dropped; a message whose `prev_seq`
/// is ahead of what the node holds (3 and 4 were lost) has the gap filled
/// from the log first; every change reaches the client once, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_from_the_broker_is_published_in_order_with_its_gaps_filled() {
    use parity::feed::channel::Channel;
    use parity::feed::hub::{Hub, change_from_row};

    let db = TestDb::sqlite();
    let s = store(&db).await;
    append(&db, "likes", 6).await;
    let rendered: Vec<_> = s
        .changes_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| parity::feed::change::Rendered::new(change_from_row(r).unwrap()))
        .collect();
    assert_eq!(rendered.len(), 6);
    let msg =
        |i: usize, prev: i64, db_id: &str| broker::payload(&rendered[i], prev, db_id).into_bytes();
    let burst: Vec<Vec<u8>> = vec![
        msg(0, 0, "db"),
        msg(1, 1, "db"),
        msg(1, 1, "db"),
        msg(2, 2, "other-db"),
        b"{\"seq\":".to_vec(),
        msg(4, 4, "db"),
        msg(5, 5, "db"),
    ];
    let hub = Hub::new(100, 0);
    let mut live = hub.inbox();
    live.add([&Channel::parse("all").unwrap()]);
    let token = CancellationToken::new();
    let following = tokio::spawn(broker::follow(
        Box::pin(futures_util::stream::iter(burst)),
        "test",
        "db".into(),
        s,
        hub.clone(),
        Duration::from_secs(60),
        token.clone(),
    ));
    let mut got = Vec::new();
    while got.len() < 6 {
        let c = tokio::time::timeout(WAIT, live.recv())
            .await
            .expect("a change in time")
            .expect("not cut off");
        got.push(c.change.seq);
    }
    let want: Vec<i64> = rendered.iter().map(|r| r.change.seq).collect();
    assert_eq!(got, want);
    assert!(live.try_recv().is_err(), "a change arrived twice");
    token.cancel();
    following.await.unwrap().unwrap();
}
