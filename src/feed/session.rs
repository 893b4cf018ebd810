//! One client's subscriptions, shared by every transport: which channels it
//! reads, from which seq each one is live, replaying the log after a
//! cursor, and the errors a client is told.
//!
//! Hand-over without gap or duplicate: a client subscribes to the hub
//! *before* reading the log, reads the log after its cursor to the end, and
//! then takes live changes only above the last seq the log gave it
//! (`live_after`). A change committed before the log read is in the log; one
//! committed after it reaches the hub, which the client was already
//! subscribed to.

use std::sync::Arc;

use super::access::Access;
use super::change::Rendered;
use super::channel::{Channel, ChannelError};
use super::hub::{PAGE, change_from_row};
use crate::store::{Store, StoreError};

/// What a client is told when a request cannot be served. The text goes to
/// the client: it names the channel or cursor, never server internals.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("{0}")]
    Channel(#[from] ChannelError),
    #[error("not allowed to read channel {0}")]
    Forbidden(String),
    #[error("at most {0} channels per client")]
    TooManyChannels(usize),
    #[error("no channels given")]
    NoChannels,
    #[error(
        "cursor {cursor} is older than the change log keeps; the oldest available seq is {oldest}"
    )]
    CursorTooOld { cursor: i64, oldest: i64 },
    #[error("cursor {cursor} is ahead of the newest change ({latest})")]
    CursorAhead { cursor: i64, latest: i64 },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the change log cannot be read right now")]
    Store(#[from] StoreError),
}

/// One subscribed channel.
#[derive(Debug, Clone)]
pub struct Sub {
    pub channel: Channel,
    /// Shared by every message queued through this channel.
    pub name: Arc<str>,
    /// Live changes at or below this seq are not sent through this channel
    /// (the log replay, or the moment of subscribing, covered them).
    pub live_after: i64,
}

/// A client's channels.
#[derive(Debug, Clone, Default)]
pub struct Subscription {
    pub subs: Vec<Sub>,
}

impl Subscription {
    /// Parses and authorises `names`; none is added unless all are good.
    pub fn parse(
        names: &[String],
        token: Option<&str>,
        access: &Access,
    ) -> Result<Vec<(Channel, String)>, FeedError> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let channel = Channel::parse(name)?;
            let name = channel.to_string();
            if !access.allows(token, &name) {
                return Err(FeedError::Forbidden(name));
            }
            out.push((channel, name));
        }
        Ok(out)
    }

    /// Adds channels live after `live_after` (replacing the same names).
    pub fn add(
        &mut self,
        channels: Vec<(Channel, String)>,
        live_after: i64,
        max: usize,
    ) -> Result<(), FeedError> {
        let new: Vec<_> = channels
            .into_iter()
            .filter(|(_, n)| !self.subs.iter().any(|s| *s.name == **n))
            .collect();
        if self.subs.len() + new.len() > max {
            return Err(FeedError::TooManyChannels(max));
        }
        self.subs.extend(new.into_iter().map(|(channel, name)| Sub {
            channel,
            name: name.into(),
            live_after,
        }));
        Ok(())
    }

    pub fn remove(&mut self, names: &[String]) {
        self.subs.retain(|s| {
            !names
                .iter()
                .any(|n| **n == *s.name || Channel::parse(n).is_ok_and(|c| c == s.channel))
        });
    }

    /// The channel a live change goes out through, if any.
    pub fn route(&self, change: &Rendered) -> Option<&Arc<str>> {
        self.subs
            .iter()
            .find(|s| change.change.seq > s.live_after && s.channel.matches(&change.change))
            .map(|s| &s.name)
    }
}

/// Refuses a cursor the log cannot serve in full. `0` is always "from the
/// start of retention".
pub async fn check_cursor(store: &Store, cursor: i64) -> Result<(), FeedError> {
    if cursor < 0 {
        return Err(FeedError::BadRequest("cursor must be 0 or more".into()));
    }
    if cursor == 0 {
        return Ok(());
    }
    let bounds = store.change_bounds().await?;
    if cursor < bounds.swept {
        return Err(FeedError::CursorTooOld {
            cursor,
            oldest: bounds.swept + 1,
        });
    }
    if cursor > bounds.latest {
        return Err(FeedError::CursorAhead {
            cursor,
            latest: bounds.latest,
        });
    }
    Ok(())
}

/// One page of the log after `after`: the changes matching `channels`, each
/// with the channel it matched, and the last seq read (`None` at the end).
pub async fn replay_page(
    store: &Store,
    after: i64,
    channels: &[(Channel, String)],
) -> Result<(Vec<(Arc<Rendered>, String)>, Option<i64>), FeedError> {
    let rows = store.changes_after(after, PAGE).await?;
    let last = rows.last().map(|r| r.seq);
    let mut out = Vec::new();
    for row in rows {
        let change = change_from_row(row)?;
        if let Some((_, name)) = channels.iter().find(|(c, _)| c.matches(&change)) {
            let name = name.clone();
            out.push((Rendered::new(change), name));
        }
    }
    Ok((out, last))
}
