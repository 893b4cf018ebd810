//! The demo page (`examples/feed/index.html`, served at `/` with
//! `feed.demo`) in headless Chromium: `parity consume` commits the recorded
//! relay window from the local Jetstream server with the change feed on and
//! serving from the same process, and every committed change appears on the
//! page through `EventSource`, counted per table. The feed reads its log
//! only every ten minutes here, so what reaches the page in time came
//! through the wake each commit gives the feed in the same process.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::common::browser::Browser;
use crate::common::jetstream::{JetstreamServer, Line};
use crate::common::process::Parity;
use crate::common::{RELAY_JSONL, TestDb, fixture_lines, last_time_us};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_shows_each_change_consume_commits() {
    let db = TestDb::sqlite();
    let lines: Vec<Line> = fixture_lines(RELAY_JSONL)
        .iter()
        .map(|l| Line::new(l))
        .collect();
    let server = JetstreamServer::start(lines).await;
    let last = last_time_us(&server.lines());
    let toml = format!(
        "[source]\nendpoints = [\"{}\"]\n[batch]\nmax_age_ms = 20\n\
         [feed]\nenabled = true\naddr = \"127.0.0.1:0\"\ndemo = true\n\
         poll_interval_ms = 600000\n\
         [log]\nprogress_interval_seconds = 0\n",
        server.url()
    );
    let (mut parity, _cfg) = Parity::consume(&toml, &db.url);
    let served = parity.wait_log("Serving the change feed.").await;
    let addr = served["fields"]["addr"].as_str().unwrap().to_owned();

    // The page is live before anything is committed: what it shows arrives
    // live, not from a replay.
    let mut page = Browser::open(&format!("http://{addr}/?channel=all")).await;
    page.wait_for("document.getElementById('status')?.textContent", |v| {
        v == "live"
    })
    .await;
    server.publish_all();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while db.cursor().await != Some(last) {
        assert!(tokio::time::Instant::now() < deadline, "cursor {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logged = db
        .query_text(
            "SELECT CAST(seq AS TEXT), table_name FROM parity_changes ORDER BY seq".into(),
            2,
        )
        .await;
    assert!(logged.len() > 20, "the window commits changes: {logged:?}");
    let mut per_table: BTreeMap<String, u64> = BTreeMap::new();
    for row in &logged {
        *per_table.entry(row[1].clone().unwrap()).or_default() += 1;
    }
    let seqs: Vec<i64> = logged
        .iter()
        .map(|r| r[0].as_ref().unwrap().parse().unwrap())
        .collect();

    page.wait_for("document.querySelectorAll('#changes li').length", |v| {
        v.as_u64() == Some(seqs.len() as u64)
    })
    .await;
    // Newest first on the page.
    let shown = page
        .eval("[...document.querySelectorAll('#changes li')].map(li => +li.dataset.seq).reverse()")
        .await;
    let shown: Vec<i64> = serde_json::from_value(shown).unwrap();
    assert_eq!(shown, seqs, "each committed change once, in commit order");
    let counts = page
        .eval(
            "Object.fromEntries([...document.querySelectorAll('#counts span')]\
             .map(s => [s.dataset.table, +s.textContent.split(': ')[1]]))",
        )
        .await;
    let counts: BTreeMap<String, u64> = serde_json::from_value::<BTreeMap<String, Value>>(counts)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.as_u64().unwrap()))
        .collect();
    assert_eq!(counts, per_table, "the running count per table");
    // SIGTERM with the page still open: the feed ends its SSE stream and
    // consume exits (an open stream used to hold it forever).
    parity.stop();
    drop(page);
}
