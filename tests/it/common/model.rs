//! An independent model of what the tables must hold after a stream: the
//! newest rev of each record, deletes winning over older creates. Written
//! against `serde_json::Value`, sharing no code with parity's mappers.

#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Ev {
    did: String,
    kind: String,
    commit: Option<Commit>,
}

#[derive(Deserialize)]
struct Commit {
    rev: String,
    operation: String,
    collection: String,
    rkey: String,
    record: Option<Box<RawValue>>,
    cid: Option<String>,
}

/// One expected row.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub uri: String,
    pub did: String,
    pub rkey: String,
    pub cid: String,
    pub rev: String,
    pub record: String,
    pub collection: String,
}

pub fn table_of(collection: &str) -> Option<&'static str> {
    Some(match collection {
        "app.bsky.feed.post" => "posts",
        "app.bsky.feed.like" => "likes",
        "app.bsky.feed.repost" => "reposts",
        "app.bsky.graph.follow" => "follows",
        "app.bsky.graph.block" => "blocks",
        "app.bsky.actor.profile" => "profiles",
        _ => return None,
    })
}

/// Applies the lines in order; returns table → uri → row.
pub fn expected(lines: &[&str]) -> BTreeMap<&'static str, BTreeMap<String, Expected>> {
    let mut live: BTreeMap<String, Expected> = BTreeMap::new();
    let mut dead: BTreeMap<String, String> = BTreeMap::new();
    for line in lines {
        let Ok(ev) = serde_json::from_str::<Ev>(line) else {
            continue;
        };
        let (Some(c), "commit") = (ev.commit, ev.kind.as_str()) else {
            continue;
        };
        if table_of(&c.collection).is_none() {
            continue;
        }
        let uri = format!("at://{}/{}/{}", ev.did, c.collection, c.rkey);
        if c.operation == "delete" {
            if live.get(&uri).is_some_and(|r| r.rev <= c.rev) {
                live.remove(&uri);
            }
            let t = dead.entry(uri).or_default();
            if *t < c.rev {
                *t = c.rev;
            }
            continue;
        }
        if dead.get(&uri).is_some_and(|r| *r >= c.rev)
            || live.get(&uri).is_some_and(|r| r.rev >= c.rev)
        {
            continue;
        }
        live.insert(
            uri.clone(),
            Expected {
                uri,
                did: ev.did.clone(),
                rkey: c.rkey,
                cid: c.cid.unwrap_or_default(),
                rev: c.rev,
                record: c.record.map(|r| r.get().to_owned()).unwrap_or_default(),
                collection: c.collection,
            },
        );
    }
    let mut out: BTreeMap<&'static str, BTreeMap<String, Expected>> = BTreeMap::new();
    for (uri, row) in live {
        out.entry(table_of(&row.collection).unwrap())
            .or_default()
            .insert(uri, row);
    }
    out
}

/// The standard columns of expected rows of one table, as the snapshot
/// helper returns them.
pub fn standard_rows(
    m: &BTreeMap<&'static str, BTreeMap<String, Expected>>,
    table: &str,
) -> Vec<Vec<Option<String>>> {
    m.get(table)
        .map(|rows| {
            rows.values()
                .map(|r| {
                    vec![
                        Some(r.uri.clone()),
                        Some(r.did.clone()),
                        Some(r.rkey.clone()),
                        Some(r.cid.clone()),
                        Some(r.rev.clone()),
                        Some(r.record.clone()),
                    ]
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `createdAt` normalised the way the snapshot renders timestamps.
pub fn norm_time(s: Option<&str>) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(s?).ok()?;
    Some(
        t.with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
}
