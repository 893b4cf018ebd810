//! Brokers that fan the change log out to several `parity serve` nodes:
//! NATS JetStream, Redis pub/sub and a RabbitMQ topic exchange.
//!
//! Owns: connecting by URL scheme, the message (the change row as JSON plus
//! `prev_seq`, the seq published before it), the [`relay`] the committing
//! process runs (publishes the log after commit, in order, and records the
//! last seq handed over in `parity_feed_state`, so a restart republishes
//! from there and never skips), and [`follow`], which a serve node runs to
//! feed its hub from the broker. Subjects, channels and routing keys are
//! `parity.<table>.<op>`.
//!
//! A serve node never trusts the broker for completeness: each message
//! names the seq before it, and when that is newer than what the node has
//! published (a message lost while disconnected, Redis pub/sub keeps
//! nothing), the node fills the gap from the database log first. It also
//! reads the log now and then, so a lost last message is found too.
//! Duplicates (a republish after a crash) are dropped by seq; NATS
//! JetStream also drops them itself by message id `<database id>:<seq>`.

mod amqp;
mod nats;
mod redis;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::change::{Change, Rendered};
use super::config::FeedConfig;
use super::hub::{Hub, PAGE, change_from_row};
use crate::obs::names;
use crate::store::{Store, StoreError};

/// A broker failure: connecting, publishing or subscribing.
#[derive(Debug, thiserror::Error)]
#[error("feed broker {kind}: {message}")]
pub struct BrokerError {
    pub kind: &'static str,
    pub message: String,
}

impl BrokerError {
    fn new(kind: &'static str, e: impl std::fmt::Display) -> BrokerError {
        BrokerError {
            kind,
            message: e.to_string().chars().take(300).collect(),
        }
    }
}

/// The raw payloads a subscription delivers.
pub type Messages = Pin<Box<dyn Stream<Item = Vec<u8>> + Send>>;

/// How many published messages may await the broker's acknowledgement at
/// once: one round trip per message capped the relay at a few thousand
/// changes per second.
const WINDOW: usize = 256;

/// One message to publish: subject (routing key, channel), message id
/// (`<database id>:<seq>`, used by NATS JetStream) and body.
pub struct Outgoing {
    pub subject: String,
    pub id: String,
    pub body: String,
}

pub enum Broker {
    Nats(nats::Nats),
    Redis(redis::Redis),
    Amqp(amqp::Amqp),
}

impl Broker {
    pub async fn connect(url: &str, cfg: &FeedConfig) -> Result<Broker, BrokerError> {
        if url.starts_with("nats://") {
            let max_age = cfg.retention().map_err(|e| BrokerError::new("nats", e))?;
            Ok(Broker::Nats(nats::Nats::connect(url, max_age).await?))
        } else if url.starts_with("redis://") || url.starts_with("rediss://") {
            Ok(Broker::Redis(redis::Redis::connect(url).await?))
        } else if url.starts_with("amqp://") || url.starts_with("amqps://") {
            Ok(Broker::Amqp(
                amqp::Amqp::connect(url, &cfg.rabbitmq_exchange).await?,
            ))
        } else {
            Err(BrokerError::new(
                "unknown",
                "use nats://, redis:// or amqp://",
            ))
        }
    }

    /// The `broker` label: nats, redis or rabbitmq.
    pub fn kind(&self) -> &'static str {
        match self {
            Broker::Nats(_) => "nats",
            Broker::Redis(_) => "redis",
            Broker::Amqp(_) => "rabbitmq",
        }
    }

    /// Publishes one change and waits until the broker has it.
    /// Publishes `page` in order, pipelined (up to [`WINDOW`] awaiting
    /// the broker's acknowledgement at once). Returns how many messages
    /// from the start of `page` the broker acknowledged, and the error that
    /// stopped it, if any: the rest are published again from there.
    pub async fn publish_page(&self, page: &[Outgoing]) -> (usize, Option<BrokerError>) {
        if page.is_empty() {
            return (0, None);
        }
        match self {
            Broker::Nats(b) => b.publish_page(page).await,
            Broker::Redis(b) => b.publish_page(page).await,
            Broker::Amqp(b) => b.publish_page(page).await,
        }
    }

    /// Every change message published from now on.
    pub async fn subscribe(&self) -> Result<Messages, BrokerError> {
        match self {
            Broker::Nats(b) => b.subscribe().await,
            Broker::Redis(b) => b.subscribe().await,
            Broker::Amqp(b) => b.subscribe().await,
        }
    }
}

/// `parity.<table>.<op>`.
pub fn subject(change: &Change) -> String {
    format!("parity.{}.{}", change.table_name, change.op.as_str())
}

/// The message for `change` of database `database_id`, published after
/// `prev`.
pub fn payload(change: &Rendered, prev: i64, database_id: &str) -> String {
    let mut out = change.with_field("prev_seq", &prev.to_string());
    out.pop(); // the closing brace
    out.push_str(",\"database_id\":");
    out.push_str(&serde_json::Value::from(database_id).to_string());
    out.push('}');
    out
}

/// A message as a serve node reads it.
struct Message {
    change: Change,
    prev_seq: i64,
    /// Several databases may publish into one stream or exchange; a node
    /// serves only its own database's changes.
    database_id: String,
}

/// The fields a message adds to its change.
#[derive(serde::Deserialize)]
struct Envelope {
    prev_seq: i64,
    database_id: String,
}

impl Message {
    /// The change and the envelope, each read from the whole payload: the
    /// change's record is kept as raw JSON, which `#[serde(flatten)]`
    /// cannot carry (every message failed to parse that way, and nodes
    /// fell back to reading the log).
    fn parse(bytes: &[u8]) -> Option<Message> {
        let env: Envelope = serde_json::from_slice(bytes).ok()?;
        let change: Change = serde_json::from_slice(bytes).ok()?;
        Some(Message {
            change,
            prev_seq: env.prev_seq,
            database_id: env.database_id,
        })
    }
}

/// Publishes the change log to `broker` from the last seq handed over,
/// until cancelled; woken by the writer (`wake`) or every `interval`.
///
/// What reached the broker is recorded by a task of its own, latest value
/// first: on SQLite that write waits for the pipeline's writer, and the
/// relay keeps publishing meanwhile. A crash republishes from the last
/// recorded seq (duplicates, never gaps). Store errors once `token` is
/// cancelled (the run is closing its pool) end the relay quietly.
pub async fn relay(
    store: Store,
    broker: Arc<Broker>,
    wake: Arc<Notify>,
    interval: Duration,
    token: CancellationToken,
) -> Result<(), StoreError> {
    let (database_id, published) = match store.feed_state().await {
        Ok(s) => s,
        Err(_) if token.is_cancelled() => return Ok(()),
        Err(e) => return Err(e),
    };
    let (record, recorded) = tokio::sync::watch::channel(published);
    let recorder = tokio::spawn(record_published(store.clone(), recorded));
    let r = publish_log(
        &store,
        &broker,
        &database_id,
        published,
        &record,
        wake,
        interval,
        &token,
    )
    .await;
    drop(record);
    let w = recorder
        .await
        .unwrap_or_else(|e| Err(StoreError::Sql(sqlx::Error::Protocol(e.to_string()))));
    match r.and(w) {
        Err(_) if token.is_cancelled() => Ok(()),
        r => r,
    }
}

/// Records the newest published seq each time it moves, until the relay
/// drops its sender (then the last value is recorded too).
async fn record_published(
    store: Store,
    mut seq: tokio::sync::watch::Receiver<i64>,
) -> Result<(), StoreError> {
    let mut recorded = *seq.borrow_and_update();
    loop {
        let open = seq.changed().await.is_ok();
        let latest = *seq.borrow_and_update();
        if latest > recorded {
            store.set_published_seq(latest).await?;
            recorded = latest;
            metrics::gauge!(names::FEED_BROKER_PUBLISHED_SEQ).set(latest as f64);
        }
        if !open {
            return Ok(());
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn publish_log(
    store: &Store,
    broker: &Broker,
    database_id: &str,
    mut published: i64,
    record: &tokio::sync::watch::Sender<i64>,
    wake: Arc<Notify>,
    interval: Duration,
    token: &CancellationToken,
) -> Result<(), StoreError> {
    loop {
        let rows = store.changes_after(published, PAGE).await?;
        let mut page = Vec::with_capacity(rows.len());
        let mut seqs = Vec::with_capacity(rows.len());
        let mut prev = published;
        for row in &rows {
            let change = Rendered::new(change_from_row(row.clone())?);
            let seq = change.change.seq;
            page.push(Outgoing {
                subject: subject(&change.change),
                id: format!("{database_id}:{seq}"),
                body: payload(&change, prev, database_id),
            });
            seqs.push(seq);
            prev = seq;
        }
        let (acked, error) = broker.publish_page(&page).await;
        let failed = error.is_some();
        if let Some(e) = error {
            metrics::counter!(names::FEED_BROKER_ERRORS, "broker" => broker.kind()).increment(1);
            tracing::warn!(error = %e, "feed broker publish failed; retrying");
        }
        let sent = if acked > 0 {
            seqs[acked - 1]
        } else {
            published
        };
        if sent > published {
            record.send_replace(sent);
            published = sent;
        }
        if rows.len() as i64 == PAGE && !failed {
            continue;
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Feeds `hub` from a broker subscription until cancelled, filling any gap
/// from the log, and reading the log after `check` without a message in
/// case the last message was lost.
///
/// Every message the subscription already holds is taken in one go (up to
/// a log page) and published as one page, so a burst wakes each client
/// once, not once per change; one idle timer is re-armed per page rather
/// than a new one built per message.
pub async fn follow(
    mut messages: Messages,
    kind: &'static str,
    database_id: String,
    store: Store,
    hub: Arc<Hub>,
    check: Duration,
    token: CancellationToken,
) -> Result<(), StoreError> {
    let idle = tokio::time::sleep(check);
    tokio::pin!(idle);
    let mut page: Vec<Arc<Rendered>> = Vec::new();
    loop {
        let first = tokio::select! {
            _ = token.cancelled() => return Ok(()),
            m = messages.next() => m,
            () = &mut idle => {
                hub.catch_up(&store, None).await?;
                idle.as_mut().reset(tokio::time::Instant::now() + check);
                continue;
            }
        };
        let mut next = Some(first);
        while let Some(m) = next.take() {
            let Some(bytes) = m else {
                hub.publish_all(&page);
                metrics::counter!(names::FEED_BROKER_ERRORS, "broker" => kind).increment(1);
                tracing::warn!(
                    broker = kind,
                    "feed broker subscription ended; reading the log only"
                );
                return crate::feed::hub::tail(store, hub, Arc::new(Notify::new()), check, token)
                    .await;
            };
            take(&bytes, kind, &database_id, &store, &hub, &mut page).await?;
            if (page.len() as i64) < PAGE {
                // What the subscription holds already, without waiting.
                next = futures_util::FutureExt::now_or_never(messages.next());
            }
        }
        hub.publish_all(&page);
        page.clear();
        idle.as_mut().reset(tokio::time::Instant::now() + check);
    }
}

/// Adds one broker message to `page` (the changes not yet published, in
/// seq order): dropped if malformed, another database's or already had;
/// when its `prev_seq` is past what `hub` and `page` hold (a lost
/// message), `page` is published and the gap filled from the log first.
async fn take(
    bytes: &[u8],
    kind: &'static str,
    database_id: &str,
    store: &Store,
    hub: &Hub,
    page: &mut Vec<Arc<Rendered>>,
) -> Result<(), StoreError> {
    let Some(msg) = Message::parse(bytes) else {
        metrics::counter!(names::FEED_BROKER_ERRORS, "broker" => kind).increment(1);
        return Ok(());
    };
    if msg.database_id != database_id {
        return Ok(());
    }
    let seq = msg.change.seq;
    let held = page.last().map_or_else(|| hub.latest(), |c| c.change.seq);
    if seq <= held {
        return Ok(());
    }
    if msg.prev_seq > held {
        hub.publish_all(page);
        page.clear();
        hub.catch_up(store, Some(seq)).await?;
        return Ok(());
    }
    page.push(Rendered::new(msg.change));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_payload_reads_back_with_its_record() {
        let change: Change = serde_json::from_str(
            r#"{"seq":7,"table_name":"likes","op":"upsert","uri":"at://did:plc:a/app.bsky.feed.like/3k","did":"did:plc:a","collection":"app.bsky.feed.like","rkey":"3k","cid":"bafy","rev":"3l","record":{"subject":{"uri":"at://did:plc:b/app.bsky.feed.post/1"}},"committed_at":"2026-12-01T10:00:00.000000Z"}"#,
        )
        .unwrap();
        let body = payload(&Rendered::new(change), 6, "db-1");
        let msg = Message::parse(body.as_bytes()).expect("parses");
        assert_eq!((msg.change.seq, msg.prev_seq), (7, 6));
        assert_eq!(msg.database_id, "db-1");
        assert_eq!(
            msg.change.record.unwrap().get(),
            r#"{"subject":{"uri":"at://did:plc:b/app.bsky.feed.post/1"}}"#
        );
        assert!(Message::parse(b"{\"seq\":1}").is_none());
    }
}
