//! The stream of messages one client receives: log replays for channels
//! subscribed with a cursor, interleaved with live changes from the hub.
//!
//! Owns: the hand-over for each replay (live changes for its channels are
//! held until the replay reaches the end of the log, then those above the
//! last replayed seq are released, so there is no gap and no duplicate),
//! the bound on what is held, and the cursor a dropped client resumes from.
//! [`Feeder::next`] is cancel-safe: the page read in flight is kept across
//! calls, so a transport may `select!` on it with its socket.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::change::Rendered;
use super::channel::Channel;
use super::hub::{Hub, Live, Recv};
use super::session::{FeedError, Subscription, replay_page};
use crate::store::Store;

type Page = Result<(Vec<(Arc<Rendered>, String)>, Option<i64>), FeedError>;

/// A message to send and the channel it goes out through.
pub type Item = (Arc<Rendered>, Arc<str>);

struct Replay {
    after: i64,
    channels: Vec<(Channel, String)>,
    held: Vec<Arc<Rendered>>,
}

/// Why a client's stream ended.
#[derive(Debug)]
pub enum End {
    /// It fell more than the buffer behind: resume after `cursor`.
    Slow {
        cursor: i64,
    },
    /// The server is shutting down.
    Closed,
    Failed(FeedError),
}

pub struct Feeder {
    store: Store,
    live: Live,
    pub subs: Subscription,
    replays: VecDeque<Replay>,
    page: Option<Pin<Box<dyn Future<Output = Page> + Send>>>,
    queue: VecDeque<Item>,
    /// The newest live seq taken from the hub.
    live_seen: i64,
    limit: usize,
}

impl Feeder {
    /// A feeder with an inbox at the hub, reading no channel yet.
    pub fn new(store: Store, hub: &Arc<Hub>, limit: usize) -> Feeder {
        let live = hub.inbox();
        let latest = live.latest();
        Feeder {
            store,
            live,
            subs: Subscription::default(),
            replays: VecDeque::new(),
            page: None,
            queue: VecDeque::new(),
            live_seen: latest,
            limit,
        }
    }

    /// Channels live from now on.
    pub fn subscribe_live(
        &mut self,
        channels: Vec<(Channel, String)>,
        max: usize,
    ) -> Result<(), FeedError> {
        self.check_room(channels.len(), max)?;
        let new: Vec<(Channel, String)> = channels
            .into_iter()
            .filter(|(_, n)| !self.subs.subs.iter().any(|s| *s.name == **n))
            .collect();
        // Routed before the hub's latest is read: every matching change
        // above `now` reaches the inbox.
        let now = self.live.add(new.iter().map(|(c, _)| c));
        self.live_seen = self.live_seen.max(now);
        self.subs.add(new, now, max)
    }

    /// Channels replayed from the log after `cursor`, then live.
    pub fn subscribe_from(
        &mut self,
        channels: Vec<(Channel, String)>,
        cursor: i64,
        max: usize,
    ) -> Result<(), FeedError> {
        self.check_room(channels.len(), max)?;
        // Routed before the log is read: what commits during the replay is
        // held, then released above the replay's last seq.
        self.live.add(channels.iter().map(|(c, _)| c));
        self.replays.push_back(Replay {
            after: cursor,
            channels,
            held: Vec::new(),
        });
        Ok(())
    }

    fn check_room(&self, adding: usize, max: usize) -> Result<(), FeedError> {
        let replaying: usize = self.replays.iter().map(|r| r.channels.len()).sum();
        if self.subs.subs.len() + replaying + adding > max {
            return Err(FeedError::TooManyChannels(max));
        }
        Ok(())
    }

    pub fn unsubscribe(&mut self, names: &[String]) {
        let mut gone: Vec<Channel> = Vec::new();
        self.subs.subs.retain(|s| {
            let hit = names
                .iter()
                .any(|n| **n == *s.name || Channel::parse(n).is_ok_and(|c| c == s.channel));
            if hit {
                gone.push(s.channel.clone());
            }
            !hit
        });
        for r in &mut self.replays {
            r.channels.retain(|(c, n)| {
                let hit = names.contains(n);
                if hit {
                    gone.push(c.clone());
                }
                !hit
            });
        }
        self.live.remove(gone.iter());
    }

    /// Where a client that stops now resumes without a gap.
    pub fn resume_cursor(&self) -> i64 {
        let mut c = self.live_seen;
        if let Some((r, _)) = self.queue.front() {
            c = c.min(r.change.seq - 1);
        }
        if let Some(r) = self.replays.front() {
            c = c.min(r.after);
        }
        c.max(0)
    }

    fn take_live(&mut self, change: Arc<Rendered>) -> Result<(), End> {
        self.live_seen = self.live_seen.max(change.change.seq);
        for r in &mut self.replays {
            if r.channels.iter().any(|(c, _)| c.matches(&change.change)) {
                if r.held.len() >= self.limit {
                    return Err(End::Slow {
                        cursor: self.resume_cursor_before(&change),
                    });
                }
                r.held.push(change.clone());
            }
        }
        if let Some(name) = self.subs.route(&change) {
            let name = name.clone();
            self.queue.push_back((change, name));
        }
        if self.queue.len() > self.limit {
            return Err(End::Slow {
                cursor: self.resume_cursor(),
            });
        }
        Ok(())
    }

    fn resume_cursor_before(&self, change: &Rendered) -> i64 {
        self.resume_cursor().min(change.change.seq - 1).max(0)
    }

    fn finish_replay(&mut self) {
        if let Some(r) = self.replays.pop_front() {
            for change in r.held {
                if change.change.seq > r.after
                    && let Some((_, name)) =
                        r.channels.iter().find(|(c, _)| c.matches(&change.change))
                {
                    self.queue.push_back((change, name.as_str().into()));
                }
            }
            let _ = self.subs.add(r.channels, r.after, usize::MAX);
        }
    }

    /// The next message to send, with the channel it goes out through.
    pub async fn next(&mut self) -> Result<Item, End> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Ok(item);
            }
            if let Some(front) = self.replays.front() {
                if self.page.is_none() {
                    let (store, after, channels) =
                        (self.store.clone(), front.after, front.channels.clone());
                    self.page = Some(Box::pin(async move {
                        replay_page(&store, after, &channels).await
                    }));
                }
                let page = self.page.as_mut().expect("set above");
                tokio::select! {
                    r = self.live.recv() => self.on_recv(r)?,
                    p = page => {
                        self.page = None;
                        match p.map_err(End::Failed)? {
                            (items, Some(last)) => {
                                self.queue
                                    .extend(items.into_iter().map(|(c, n)| (c, n.into())));
                                if let Some(front) = self.replays.front_mut() {
                                    front.after = last;
                                }
                            }
                            (_, None) => self.finish_replay(),
                        }
                    }
                }
            } else {
                let r = self.live.recv().await;
                self.on_recv(r)?;
            }
        }
    }

    fn on_recv(&mut self, r: Result<Arc<Rendered>, Recv>) -> Result<(), End> {
        match r {
            Ok(change) => self.take_live(change),
            Err(Recv::Lagged) => Err(End::Slow {
                cursor: self.resume_cursor(),
            }),
            Err(Recv::Empty) => Err(End::Closed),
        }
    }

    /// The next message if one is ready now, without waiting: for a
    /// transport that writes what is ready in one go. `None` also while a
    /// replay is under way (its pages are read by [`Feeder::next`]).
    pub fn try_next(&mut self) -> Option<Result<Item, End>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some(Ok(item));
            }
            if !self.replays.is_empty() {
                return None;
            }
            match self.live.try_recv() {
                Err(Recv::Empty) => return None,
                r => {
                    if let Err(e) = self.on_recv(r) {
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}
