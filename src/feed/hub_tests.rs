//! Tests of the hub's routing: a change reaches exactly the inboxes whose
//! channels match it (the same answer as [`Channel::matches`]), each once,
//! in seq order; unsubscribing and dropping stop the routing; a full inbox
//! is cut off. Pages published at once keep all of that, and a reader on
//! another thread, woken once per page, still gets every change once and
//! in order.

use std::sync::Arc;

use super::change::Rendered;
use super::change::tests::change;
use super::channel::Channel;
use super::hub::{Hub, Recv};

const CHANNELS: &[&str] = &[
    "all",
    "table:likes",
    "table:posts",
    "collection:app.bsky.feed.like",
    "collection:app.bsky.feed.post",
    "collection:app.bsky.feed.*",
    "collection:app.bsky.*",
    "collection:*",
    "collection:app.bsky.graph.*",
    "collection:app.bsky.feed.lik",
    "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
    "did:plc:z72i7hdynmk6r22z27h6tvur",
    "subject:at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.post/3lbyl2hd5n22x",
    "subject:at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.post/other",
];

fn changes() -> Vec<Arc<Rendered>> {
    let kinds = [
        ("likes", "app.bsky.feed.like"),
        ("posts", "app.bsky.feed.post"),
        ("follows", "app.bsky.graph.follow"),
        ("profiles", "app.bsky.actor.profile"),
        ("custom", "com.example.feed.like"),
    ];
    let mut out = Vec::new();
    for (i, (table, collection)) in kinds.iter().enumerate() {
        let mut c = change(i as i64 + 1, table, collection);
        if i % 2 == 1 {
            c.did = "did:plc:z72i7hdynmk6r22z27h6tvur".into();
            c.subjects.clear();
        }
        out.push(Rendered::new(c));
    }
    out
}

#[test]
fn each_channel_gets_exactly_the_changes_it_matches() {
    for name in CHANNELS {
        let channel = Channel::parse(name).unwrap();
        let hub = Hub::new(100, 0);
        let mut live = hub.inbox();
        live.add([&channel]);
        let all = changes();
        for c in &all {
            hub.publish(c.clone());
        }
        let mut got = Vec::new();
        while let Ok(c) = live.try_recv() {
            got.push(c.change.seq);
        }
        let want: Vec<i64> = all
            .iter()
            .filter(|c| channel.matches(&c.change))
            .map(|c| c.change.seq)
            .collect();
        assert_eq!(got, want, "channel {name}");
    }
}

#[test]
fn a_change_matching_several_channels_arrives_once_in_order() {
    let hub = Hub::new(100, 0);
    let mut live = hub.inbox();
    let chans: Vec<Channel> = ["all", "table:likes", "collection:app.bsky.*"]
        .iter()
        .map(|n| Channel::parse(n).unwrap())
        .collect();
    assert_eq!(live.add(chans.iter()), 0);
    for c in changes() {
        hub.publish(c);
    }
    let mut got = Vec::new();
    while let Ok(c) = live.try_recv() {
        got.push(c.change.seq);
    }
    assert_eq!(got, vec![1, 2, 3, 4, 5]);
}

#[test]
fn unsubscribed_and_dropped_inboxes_get_nothing_more() {
    let hub = Hub::new(100, 0);
    let likes = Channel::parse("table:likes").unwrap();
    let mut a = hub.inbox();
    let mut b = hub.inbox();
    a.add([&likes]);
    b.add([&likes]);
    let all = changes();
    hub.publish(all[0].clone());
    a.remove([&likes]);
    drop(b);
    let mut c = all[0].change.clone();
    c.seq = 10;
    hub.publish(Rendered::new(c));
    assert_eq!(a.try_recv().unwrap().change.seq, 1);
    assert_eq!(a.try_recv().unwrap_err(), Recv::Empty);
    // The dropped inbox left the routing table: a new one is alone there.
    let mut d = hub.inbox();
    assert_eq!(d.add([&likes]), 10);
    let mut c = all[0].change.clone();
    c.seq = 11;
    hub.publish(Rendered::new(c));
    assert_eq!(d.try_recv().unwrap().change.seq, 11);
}

#[test]
fn a_full_inbox_is_cut_off() {
    let hub = Hub::new(2, 0);
    let all = Channel::parse("all").unwrap();
    let mut slow = hub.inbox();
    let mut fast = hub.inbox();
    slow.add([&all]);
    fast.add([&all]);
    for c in changes() {
        hub.publish(c);
        while fast.try_recv().is_ok() {}
    }
    assert_eq!(slow.try_recv().unwrap_err(), Recv::Lagged);
    assert_eq!(fast.try_recv().unwrap_err(), Recv::Empty);
}

#[test]
fn a_page_published_at_once_arrives_in_order_each_once() {
    let hub = Hub::new(100, 0);
    let mut live = hub.inbox();
    let chans: Vec<Channel> = ["all", "table:likes"]
        .iter()
        .map(|n| Channel::parse(n).unwrap())
        .collect();
    live.add(chans.iter());
    let all = changes();
    hub.publish_all(&all[..3]);
    assert_eq!(live.try_recv().unwrap().change.seq, 1);
    // The first three again are duplicates: only 4 and 5 are new.
    hub.publish_all(&all);
    let mut got = Vec::new();
    while let Ok(c) = live.try_recv() {
        got.push(c.change.seq);
    }
    assert_eq!(got, vec![2, 3, 4, 5]);
    assert_eq!(hub.latest(), 5);
}

#[test]
fn changes_taken_but_not_read_count_against_the_buffer() {
    let hub = Hub::new(3, 0);
    let mut live = hub.inbox();
    live.add([&Channel::parse("all").unwrap()]);
    let all = changes();
    hub.publish_all(&all[..3]);
    // Reading one takes all three from the hub; two are still unread.
    assert_eq!(live.try_recv().unwrap().change.seq, 1);
    hub.publish(all[3].clone());
    hub.publish(all[4].clone());
    assert_eq!(live.try_recv().unwrap_err(), Recv::Lagged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_on_another_thread_gets_every_change_once_in_order() {
    const N: i64 = 20_000;
    let hub = Hub::new(N as usize, 0);
    let mut live = hub.inbox();
    live.add([&Channel::parse("table:likes").unwrap()]);
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(N as usize);
        while got.len() < N as usize {
            got.push(live.recv().await.unwrap().change.seq);
        }
        got
    });
    let base = change(1, "likes", "app.bsky.feed.like");
    let (mut seq, mut size) = (1, 1);
    while seq <= N {
        let page: Vec<Arc<Rendered>> = (seq..(seq + size).min(N + 1))
            .map(|s| {
                let mut c = base.clone();
                c.seq = s;
                Rendered::new(c)
            })
            .collect();
        hub.publish_all(&page);
        seq += page.len() as i64;
        size = size % 97 + 1;
        tokio::task::yield_now().await;
    }
    // A lost wake would leave the reader waiting: fail instead of hanging.
    let got = tokio::time::timeout(std::time::Duration::from_secs(60), reader)
        .await
        .expect("the reader missed a wake")
        .unwrap();
    assert_eq!(got, (1..=N).collect::<Vec<_>>());
}
