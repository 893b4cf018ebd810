//! Event filtering: which events reach the mappers, and the `[filter]`
//! config section that builds the filter.
//!
//! Owns: [`FilterConfig`] (its keys, defaults and checks), the DID allow-
//! and deny-lists (inline and from DID list files) and the operation set.
//! Collection patterns themselves live in `event` ([`CollectionPattern`],
//! re-exported here). Does not own the cursor: an event the filter rejects
//! still advances the cursor, because the pipeline passes it on as "seen".
//!
//! IO: only [`Filter::from_config`] (and [`read_did_file`]) read files, once
//! at startup; [`Filter::accepts`] is pure.
//!
//! Identity and account events carry no collection, so only the DID lists
//! apply to them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::event::{CollectionPattern, any_matches};
use crate::event::{CommitOp, Did, Event, EventKind};

/// Which events reach the mappers (the `[filter]` section).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Collections to keep (`app.bsky.feed.post`, `app.bsky.*`, `*`).
    /// Empty: every collection that has a mapper.
    #[serde(default)]
    pub collections: Vec<String>,
    /// Only these DIDs (empty: every DID).
    #[serde(default)]
    pub dids: Vec<String>,
    /// File with more allowed DIDs, one per line, `#` comments.
    #[serde(default)]
    pub dids_file: String,
    /// Never these DIDs.
    #[serde(default)]
    pub exclude_dids: Vec<String>,
    /// File with more excluded DIDs.
    #[serde(default)]
    pub exclude_dids_file: String,
    /// Commit operations to apply.
    #[serde(default = "default_operations")]
    pub operations: Vec<String>,
}

fn default_operations() -> Vec<String> {
    vec!["create".into(), "update".into(), "delete".into()]
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            collections: Vec::new(),
            dids: Vec::new(),
            dids_file: String::new(),
            exclude_dids: Vec::new(),
            exclude_dids_file: String::new(),
            operations: default_operations(),
        }
    }
}

impl FilterConfig {
    /// Checks every value that can be checked without reading files; the
    /// message names the key and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        self.collection_patterns()?;
        self.operations()?;
        for d in self.dids.iter().chain(&self.exclude_dids) {
            Did::parse(d)
                .ok_or_else(|| format!("filter: {d:?} is not a DID (did:plc:… or did:web:…)"))?;
        }
        Ok(())
    }

    /// `collections`, parsed.
    pub fn collection_patterns(&self) -> Result<Vec<CollectionPattern>, String> {
        self.collections
            .iter()
            .map(|c| CollectionPattern::parse(c).map_err(|e| format!("filter.collections: {e}")))
            .collect()
    }

    /// `operations`, parsed.
    pub fn operations(&self) -> Result<Vec<CommitOp>, String> {
        self.operations
            .iter()
            .map(|o| {
                CommitOp::parse(o).ok_or_else(|| {
                    format!(
                        "filter.operations: {o:?} is not an operation; use create, update, delete"
                    )
                })
            })
            .collect()
    }

    /// The allow-list (inline plus file), or `None` for every DID.
    pub fn allowed_dids(&self) -> Result<Option<HashSet<Did>>, String> {
        let set = did_set(&self.dids, &self.dids_file)?;
        Ok((!set.is_empty()).then_some(set))
    }

    /// The deny-list (inline plus file).
    pub fn excluded_dids(&self) -> Result<HashSet<Did>, String> {
        did_set(&self.exclude_dids, &self.exclude_dids_file)
    }
}

fn did_set(inline: &[String], file: &str) -> Result<HashSet<Did>, String> {
    let mut set = HashSet::new();
    for d in inline {
        set.insert(Did::parse(d).ok_or_else(|| format!("filter: {d:?} is not a DID"))?);
    }
    if !file.is_empty() {
        set.extend(read_did_file(&PathBuf::from(file))?);
    }
    Ok(set)
}

/// Reads one DID per line; blank lines and `#` comments are ignored.
pub fn read_did_file(path: &Path) -> Result<Vec<Did>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read DID file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(
            Did::parse(line).ok_or_else(|| {
                format!("{} line {}: {line:?} is not a DID", path.display(), i + 1)
            })?,
        );
    }
    Ok(out)
}

/// The filter applied to every decoded event.
#[derive(Debug, Clone)]
pub struct Filter {
    collections: Vec<CollectionPattern>,
    allow: Option<HashSet<Did>>,
    deny: HashSet<Did>,
    create: bool,
    update: bool,
    delete: bool,
}

impl Filter {
    /// `collections` empty means every collection; `allow` `None` means every
    /// DID; `ops` lists the commit operations to keep.
    pub fn new(
        collections: Vec<CollectionPattern>,
        allow: Option<HashSet<Did>>,
        deny: HashSet<Did>,
        ops: &[CommitOp],
    ) -> Filter {
        Filter {
            collections,
            allow,
            deny,
            create: ops.contains(&CommitOp::Create),
            update: ops.contains(&CommitOp::Update),
            delete: ops.contains(&CommitOp::Delete),
        }
    }

    /// The filter `cfg` describes, reading its DID list files. `mapped` (the
    /// collections that have a mapper) stands in for an empty
    /// `collections`.
    pub fn from_config(
        cfg: &FilterConfig,
        mapped: Vec<CollectionPattern>,
    ) -> Result<Filter, String> {
        let mut collections = cfg.collection_patterns()?;
        if collections.is_empty() {
            collections = mapped;
        }
        Ok(Filter::new(
            collections,
            cfg.allowed_dids()?,
            cfg.excluded_dids()?,
            &cfg.operations()?,
        ))
    }

    /// A filter that keeps everything.
    pub fn all() -> Filter {
        Filter::new(
            Vec::new(),
            None,
            HashSet::new(),
            &[CommitOp::Create, CommitOp::Update, CommitOp::Delete],
        )
    }

    /// The collection patterns, for pushing to the server.
    pub fn collections(&self) -> &[CollectionPattern] {
        &self.collections
    }

    /// The allow-list, if any, for pushing to the server.
    pub fn allowed_dids(&self) -> Option<&HashSet<Did>> {
        self.allow.as_ref()
    }

    fn did_ok(&self, did: &Did) -> bool {
        !self.deny.contains(did) && self.allow.as_ref().is_none_or(|a| a.contains(did))
    }

    /// Whether the event goes on to the mappers.
    pub fn accepts(&self, event: &Event) -> bool {
        if !self.did_ok(&event.did) {
            return false;
        }
        match &event.kind {
            EventKind::Commit(c) => {
                let op_ok = match c.op {
                    CommitOp::Create => self.create,
                    CommitOp::Update => self.update,
                    CommitOp::Delete => self.delete,
                };
                op_ok
                    && (self.collections.is_empty()
                        || any_matches(&self.collections, c.collection.as_str()))
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Commit, Cursor, Nsid, RecordKey};

    fn commit(did: &str, nsid: &str, op: CommitOp) -> Event {
        Event {
            cursor: Cursor(1),
            time_us: 1,
            did: Did::parse(did).unwrap(),
            kind: EventKind::Commit(Commit {
                collection: Nsid::parse(nsid).unwrap(),
                rkey: RecordKey::parse("k").unwrap(),
                rev: "r".into(),
                op,
                cid: None,
                record: None,
            }),
        }
    }

    #[test]
    fn collections_dids_and_ops() {
        let allow: HashSet<Did> = [
            Did::parse("did:plc:a").unwrap(),
            Did::parse("did:plc:b").unwrap(),
        ]
        .into();
        let deny: HashSet<Did> = [Did::parse("did:plc:b").unwrap()].into();
        let f = Filter::new(
            vec![CollectionPattern::parse("app.bsky.feed.*").unwrap()],
            Some(allow),
            deny,
            &[CommitOp::Create, CommitOp::Delete],
        );
        assert!(f.accepts(&commit("did:plc:a", "app.bsky.feed.post", CommitOp::Create)));
        assert!(!f.accepts(&commit("did:plc:a", "app.bsky.feed.post", CommitOp::Update)));
        assert!(!f.accepts(&commit(
            "did:plc:a",
            "app.bsky.graph.follow",
            CommitOp::Create
        )));
        assert!(!f.accepts(&commit("did:plc:b", "app.bsky.feed.post", CommitOp::Create)));
        assert!(!f.accepts(&commit("did:plc:c", "app.bsky.feed.post", CommitOp::Create)));
        let ident = Event {
            cursor: Cursor(1),
            time_us: 1,
            did: Did::parse("did:plc:a").unwrap(),
            kind: EventKind::Identity { handle: None },
        };
        assert!(f.accepts(&ident));
        assert!(Filter::all().accepts(&commit("did:plc:z", "x.y.z", CommitOp::Update)));
    }

    #[test]
    fn did_files_skip_comments_and_name_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dids.txt");
        std::fs::write(
            &p,
            "# allow\ndid:plc:a\n\n did:web:example.com # trailing\n",
        )
        .unwrap();
        assert_eq!(read_did_file(&p).unwrap().len(), 2);
        std::fs::write(&p, "did:plc:a\nbob\n").unwrap();
        assert!(read_did_file(&p).unwrap_err().contains("line 2"));
    }
}
