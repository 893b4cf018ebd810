//! The recorded events the workload is made of: the 102 production
//! Jetstream v1 events of the relay capture in `tests/fixtures/firehose/…/
//! jetstream_v1.jsonl` (see its `SOURCES.md`). Each generated event picks
//! one uniformly, so the mix of kinds, collections and operations (deletes,
//! updates, identity and account events) is the recording's; the record
//! bodies are the recorded ones with new subjects and times.
//!
//! Owns: reading the capture and the per-template facts the generator
//! needs. Does not own keys or subjects ([`crate::event`]).

use serde_json::Value;

/// A commit operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// One recorded event, as the generator uses it.
#[derive(Debug, Clone)]
pub enum Template {
    Commit {
        op: Op,
        collection: String,
        /// The record key is the literal `self` (profiles, statuses): kept.
        rkey_self: bool,
        /// The recorded record (creates and updates).
        record: Option<Value>,
    },
    Identity,
    Account {
        active: bool,
        status: Option<String>,
    },
}

/// Parses the recorded Jetstream v1 lines.
pub fn parse(lines: &[String]) -> Vec<Template> {
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("recorded JSON");
            match v["kind"].as_str() {
                Some("commit") => {
                    let c = &v["commit"];
                    Template::Commit {
                        op: match c["operation"].as_str() {
                            Some("create") => Op::Create,
                            Some("update") => Op::Update,
                            Some("delete") => Op::Delete,
                            o => panic!("recorded operation {o:?}"),
                        },
                        collection: c["collection"].as_str().expect("collection").to_owned(),
                        rkey_self: c["rkey"] == "self",
                        record: c.get("record").cloned(),
                    }
                }
                Some("identity") => Template::Identity,
                Some("account") => Template::Account {
                    active: v["account"]["active"].as_bool().unwrap_or(true),
                    status: v["account"]["status"].as_str().map(str::to_owned),
                },
                k => panic!("recorded kind {k:?}"),
            }
        })
        .collect()
}

/// The relay capture's templates.
pub fn recorded() -> Vec<Template> {
    parse(&testnet::fixture_lines(testnet::RELAY_JSONL))
}

/// How often each `kind/operation/collection` occurs among `templates`, as
/// shares, most frequent first (what BENCHMARKS.md quotes).
pub fn mix(templates: &[Template]) -> Vec<(String, f64)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for t in templates {
        let k = match t {
            Template::Commit { op, collection, .. } => format!("{} {collection}", op.as_str()),
            Template::Identity => "identity".to_owned(),
            Template::Account { .. } => "account".to_owned(),
        };
        *counts.entry(k).or_default() += 1;
    }
    let n = templates.len() as f64;
    let mut v: Vec<(String, f64)> = counts.into_iter().map(|(k, c)| (k, c as f64 / n)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recording_has_the_known_mix() {
        let t = recorded();
        assert_eq!(t.len(), 102);
        let m = mix(&t);
        assert_eq!(m[0].0, "create app.bsky.feed.like");
        assert!((m[0].1 - 71.0 / 102.0).abs() < 1e-9);
        let deletes: f64 = m
            .iter()
            .filter(|(k, _)| k.starts_with("delete"))
            .map(|x| x.1)
            .sum();
        assert!((deletes - 3.0 / 102.0).abs() < 1e-9);
        assert!(m.iter().any(|(k, _)| k == "identity"));
        assert!(m.iter().any(|(k, _)| k == "account"));
        assert!(t.iter().all(|t| match t {
            Template::Commit {
                op: Op::Delete,
                record,
                ..
            } => record.is_none(),
            Template::Commit { record, .. } => record.is_some(),
            _ => true,
        }));
    }
}
