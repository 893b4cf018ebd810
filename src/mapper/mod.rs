//! Mappers turn a record into a row of a table; the [`Registry`] picks the
//! mapper for each collection and turns commits into [`Mutation`]s.
//!
//! Owns: the public [`Mapper`] trait, dispatch by collection (exact NSIDs
//! first, then patterns, in registration order), and the mutation types the
//! batcher collects. Two entry points share one mapping path: a stream
//! event ([`Registry::dispatch`]) and a record as it exists in a repo
//! ([`Registry::map_listed`], used by import; it carries no stream
//! cursor). Does not own: SQL (store), batching (batch) or which events
//! arrive (filter). Pure: no IO.
//!
//! Three kinds of mapper are registered by [`Registry::from_config`] (from
//! the `[mappers]` section, [`MappersConfig`]): the built-ins ([`builtin`]),
//! declarative mappers from config ([`declarative`]) and the generic
//! catch-all `records` table ([`generic`]). Library users register their
//! own with [`Registry::register`] or pass them to `from_config`.

pub mod builtin;
pub mod clean;
mod config;
pub mod declarative;
pub mod generic;
mod reserved;
pub mod table;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::event::{CollectionPattern, CommitOp, Did, Event, EventKind, Nsid, RecordKey};
pub use config::{MappersConfig, MappersError};
pub use table::{Column, ColumnType, TableSchema, Value};

/// One record handed to a mapper.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub did: &'a Did,
    pub collection: &'a Nsid,
    pub rkey: &'a RecordKey,
    pub uri: &'a str,
    /// The record as atproto JSON.
    pub json: &'a str,
}

/// Why a record did not fit its mapper. The pipeline counts it as failed,
/// logs the URI and goes on with the batch.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MapError {
    #[error("missing required field {0}")]
    Missing(String),
    #[error("field {field} is not a {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("record is not a JSON object: {0}")]
    Json(String),
    /// The record's URI is longer than an index entry may be
    /// ([`clean::MAX_INDEXED_BYTES`]).
    #[error("record URI of {0} bytes is too long to store")]
    UriTooLong(usize),
}

/// Turns records of some collection into rows of one table.
///
/// `map` returns the values of [`Mapper::table`]'s own columns, in order;
/// parity fills the standard columns (`uri`, `did`, `rkey`, `cid`, `rev`,
/// `record`, `synced_at`) itself and handles deletes by `uri`.
pub trait Mapper: Send + Sync {
    /// The table this mapper writes. parity creates it if it does not exist
    /// and checks that an existing one has every column.
    fn table(&self) -> &TableSchema;
    /// Maps one record to the values of the table's own columns.
    fn map(&self, record: &RecordRef<'_>) -> Result<Vec<Value>, MapError>;
}

/// Index of a table in [`Registry::tables`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId(pub usize);

/// A new or changed record, ready to write.
#[derive(Debug, Clone)]
pub struct Row {
    pub table: TableId,
    pub uri: String,
    pub did: Did,
    pub rkey: String,
    pub cid: String,
    pub rev: String,
    pub record: Box<RawValue>,
    pub values: Vec<Value>,
}

impl PartialEq for Row {
    fn eq(&self, o: &Row) -> bool {
        self.table == o.table
            && self.uri == o.uri
            && self.did == o.did
            && self.rkey == o.rkey
            && self.cid == o.cid
            && self.rev == o.rev
            && self.record.get() == o.record.get()
            && self.values == o.values
    }
}

/// One change to one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    Upsert(Row),
    Delete {
        table: TableId,
        uri: String,
        did: Did,
        rev: String,
    },
}

impl Mutation {
    pub fn uri(&self) -> &str {
        match self {
            Mutation::Upsert(r) => &r.uri,
            Mutation::Delete { uri, .. } => uri,
        }
    }

    pub fn rev(&self) -> &str {
        match self {
            Mutation::Upsert(r) => &r.rev,
            Mutation::Delete { rev, .. } => rev,
        }
    }

    pub fn did(&self) -> &Did {
        match self {
            Mutation::Upsert(r) => &r.did,
            Mutation::Delete { did, .. } => did,
        }
    }

    pub fn table(&self) -> TableId {
        match self {
            Mutation::Upsert(r) => r.table,
            Mutation::Delete { table, .. } => *table,
        }
    }
}

/// What dispatching one event produced.
#[derive(Debug)]
pub enum Dispatch {
    /// A row change.
    Mutation(Mutation),
    /// No mapper for this collection (or not a commit): nothing to write.
    Unmapped,
    /// The record did not fit its mapper.
    Failed { uri: String, error: MapError },
}

struct Entry {
    pattern: CollectionPattern,
    table: TableId,
    mapper: Arc<dyn Mapper>,
    /// Per mapper column: whether some index of the table covers it.
    indexed: Vec<bool>,
}

/// Mappers by collection.
#[derive(Default)]
pub struct Registry {
    exact: HashMap<String, usize>,
    entries: Vec<Entry>,
    tables: Vec<TableSchema>,
}

/// Why a mapper could not be registered (a configuration mistake).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RegistryError {
    #[error("two mappers write table {0} with different columns; give one of them another table")]
    TableConflict(String),
    #[error("collection {0} already has a mapper")]
    Duplicate(String),
    #[error(
        "invalid table or column name {0:?}: use lowercase letters, digits and _, not starting with parity_ and not an SQL reserved word"
    )]
    BadName(String),
    #[error(
        "table {table} is the built-in table of {collection}; the mapper for {pattern} must write another table"
    )]
    BuiltinTable {
        table: String,
        collection: &'static str,
        pattern: String,
    },
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `mapper` for `pattern`. Exact collections win over patterns;
    /// patterns are tried in registration order.
    pub fn register(
        &mut self,
        pattern: CollectionPattern,
        mapper: Arc<dyn Mapper>,
    ) -> Result<TableId, RegistryError> {
        let schema = mapper.table();
        if !table::valid_identifier(&schema.name) {
            return Err(RegistryError::BadName(schema.name.clone()));
        }
        for c in &schema.columns {
            if !table::valid_identifier(&c.name)
                || table::STANDARD_COLUMNS.contains(&c.name.as_str())
            {
                return Err(RegistryError::BadName(c.name.clone()));
            }
        }
        // A built-in table holds its own collection only: on SQLite its
        // `uri` is computed from that collection (migration 20261203000000).
        if let Some(b) = builtin::Builtin::from_table_name(&schema.name)
            && pattern != CollectionPattern::Exact(b.collection().to_owned())
        {
            return Err(RegistryError::BuiltinTable {
                table: schema.name.clone(),
                collection: b.collection(),
                pattern: pattern.to_string(),
            });
        }
        let table = match self.tables.iter().position(|t| t.name == schema.name) {
            Some(i) if self.tables[i].columns == schema.columns => TableId(i),
            Some(_) => return Err(RegistryError::TableConflict(schema.name.clone())),
            None => {
                self.tables.push(schema.clone());
                TableId(self.tables.len() - 1)
            }
        };
        if self.entries.iter().any(|e| e.pattern == pattern) {
            return Err(RegistryError::Duplicate(pattern.to_string()));
        }
        if let CollectionPattern::Exact(n) = &pattern {
            self.exact.insert(n.clone(), self.entries.len());
        }
        let indexed = schema
            .columns
            .iter()
            .map(|c| schema.indexes.iter().any(|ix| ix.contains(&c.name)))
            .collect();
        self.entries.push(Entry {
            pattern,
            table,
            mapper,
            indexed,
        });
        Ok(table)
    }

    /// Every table some mapper writes.
    pub fn tables(&self) -> &[TableSchema] {
        &self.tables
    }

    /// The collection patterns that have a mapper.
    pub fn patterns(&self) -> Vec<CollectionPattern> {
        self.entries.iter().map(|e| e.pattern.clone()).collect()
    }

    /// Whether some mapper handles this collection.
    pub fn handles(&self, nsid: &str) -> bool {
        self.find(nsid).is_some()
    }

    /// The table this collection's records are written to, if mapped.
    pub fn table_of(&self, nsid: &str) -> Option<TableId> {
        self.find(nsid).map(|e| e.table)
    }

    fn find(&self, nsid: &str) -> Option<&Entry> {
        if let Some(&i) = self.exact.get(nsid) {
            return Some(&self.entries[i]);
        }
        self.entries
            .iter()
            .find(|e| !matches!(e.pattern, CollectionPattern::Exact(_)) && e.pattern.matches(nsid))
    }

    /// Turns a commit event into a mutation of its mapper's table. A
    /// create or update goes through [`Registry::map_listed`], so the stream
    /// and the import map a record with the same code.
    pub fn dispatch(&self, event: &Event) -> Dispatch {
        let EventKind::Commit(c) = &event.kind else {
            return Dispatch::Unmapped;
        };
        match (c.op, &c.record, &c.cid) {
            (CommitOp::Delete, _, _) => match self.find(c.collection.as_str()) {
                Some(entry) => {
                    let uri = c.uri(&event.did);
                    if uri.len() > clean::MAX_INDEXED_BYTES {
                        return Dispatch::Failed {
                            error: MapError::UriTooLong(uri.len()),
                            uri,
                        };
                    }
                    Dispatch::Mutation(Mutation::Delete {
                        table: entry.table,
                        uri,
                        did: event.did.clone(),
                        rev: c.rev.clone(),
                    })
                }
                None => Dispatch::Unmapped,
            },
            (_, Some(record), Some(cid)) => self.map_listed(&ListedRecord {
                did: &event.did,
                collection: &c.collection,
                rkey: &c.rkey,
                cid,
                rev: &c.rev,
                record,
            }),
            _ if self.handles(c.collection.as_str()) => Dispatch::Failed {
                uri: c.uri(&event.did),
                error: MapError::Missing("record".into()),
            },
            _ => Dispatch::Unmapped,
        }
    }

    /// Maps one record as it exists in a repo (a `listRecords` entry, or
    /// the record of a create or update) into an upsert of its mapper's
    /// table. Carries no stream position: the caller checkpoints it.
    ///
    /// Every row leaves here storable on both backends ([`clean`]): NUL
    /// removed from the record and from mapped text and JSON, indexed text
    /// longer than an index entry stored as NULL, and a record whose URI
    /// is that long failed.
    pub fn map_listed(&self, r: &ListedRecord<'_>) -> Dispatch {
        let Some(entry) = self.find(r.collection.as_str()) else {
            return Dispatch::Unmapped;
        };
        let uri = r.uri();
        if uri.len() > clean::MAX_INDEXED_BYTES {
            return Dispatch::Failed {
                error: MapError::UriTooLong(uri.len()),
                uri,
            };
        }
        let rec = RecordRef {
            did: r.did,
            collection: r.collection,
            rkey: r.rkey,
            uri: &uri,
            json: r.record.get(),
        };
        match entry.mapper.map(&rec) {
            Ok(values) => Dispatch::Mutation(Mutation::Upsert(Row {
                table: entry.table,
                did: r.did.clone(),
                rkey: r.rkey.as_str().to_owned(),
                cid: r.cid.to_owned(),
                rev: r.rev.to_owned(),
                record: match clean::json_without_nul(r.record.get()) {
                    std::borrow::Cow::Borrowed(_) => r.record.to_owned(),
                    // Valid JSON stays valid without its `\u0000` escapes.
                    std::borrow::Cow::Owned(json) => {
                        RawValue::from_string(json).unwrap_or_else(|_| r.record.to_owned())
                    }
                },
                values: values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| clean::value(v, entry.indexed.get(i).copied().unwrap_or(false)))
                    .collect(),
                uri,
            })),
            Err(error) => Dispatch::Failed { uri, error },
        }
    }
}

/// One existing record of a repo, with the commit rev it is known at: what
/// [`Registry::map_listed`] turns into a row.
#[derive(Debug, Clone, Copy)]
pub struct ListedRecord<'a> {
    pub did: &'a Did,
    pub collection: &'a Nsid,
    pub rkey: &'a RecordKey,
    pub cid: &'a str,
    /// The repo rev the record is known at (a TID; may be empty when the
    /// PDS reports none, which sorts before every real rev).
    pub rev: &'a str,
    /// The record as atproto JSON.
    pub record: &'a RawValue,
}

impl ListedRecord<'_> {
    /// `at://DID/COLLECTION/RKEY`
    pub fn uri(&self) -> String {
        format!("at://{}/{}/{}", self.did, self.collection, self.rkey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Commit, Cursor};

    fn ev(nsid: &str, op: CommitOp, record: Option<&str>) -> Event {
        Event {
            cursor: Cursor(1),
            time_us: 1,
            did: Did::parse("did:plc:a").unwrap(),
            kind: EventKind::Commit(Commit {
                collection: Nsid::parse(nsid).unwrap(),
                rkey: RecordKey::parse("k").unwrap(),
                rev: "3r".into(),
                op,
                cid: record.map(|_| "bafyc".to_owned()),
                record: record.map(|r| RawValue::from_string(r.to_owned()).unwrap()),
            }),
        }
    }

    #[test]
    fn a_collections_table_is_its_mappers() {
        let mut reg = Registry::new();
        builtin::register_all(&mut reg, &builtin::ALL).unwrap();
        generic::register(&mut reg, &[CollectionPattern::All]).unwrap();
        let name = |nsid: &str| reg.table_of(nsid).map(|t| reg.tables()[t.0].name.clone());
        assert_eq!(name("app.bsky.feed.like").as_deref(), Some("likes"));
        assert_eq!(name("app.bsky.feed.post").as_deref(), Some("posts"));
        assert_eq!(name("com.example.thing").as_deref(), Some("records"));
        let mut only_builtin = Registry::new();
        builtin::register_all(&mut only_builtin, &builtin::ALL).unwrap();
        assert_eq!(only_builtin.table_of("com.example.thing"), None);
    }

    #[test]
    fn exact_beats_pattern_and_unmapped_is_skipped() {
        let mut reg = Registry::new();
        builtin::register_all(&mut reg, &builtin::ALL).unwrap();
        generic::register(&mut reg, &[CollectionPattern::All]).unwrap();
        let like = r#"{"$type":"app.bsky.feed.like","subject":{"uri":"at://did:plc:b/app.bsky.feed.post/1","cid":"bafyx"},"createdAt":"2026-01-01T00:00:00Z"}"#;
        let Dispatch::Mutation(Mutation::Upsert(row)) =
            reg.dispatch(&ev("app.bsky.feed.like", CommitOp::Create, Some(like)))
        else {
            panic!("like maps")
        };
        assert_eq!(reg.tables()[row.table.0].name, "likes");
        let Dispatch::Mutation(Mutation::Upsert(row)) =
            reg.dispatch(&ev("com.example.thing", CommitOp::Create, Some("{}")))
        else {
            panic!("generic maps")
        };
        assert_eq!(reg.tables()[row.table.0].name, "records");
        assert_eq!(row.values, vec![Value::Text("com.example.thing".into())]);

        let only_builtin = {
            let mut r = Registry::new();
            builtin::register_all(&mut r, &builtin::ALL).unwrap();
            r
        };
        assert!(matches!(
            only_builtin.dispatch(&ev("com.example.thing", CommitOp::Create, Some("{}"))),
            Dispatch::Unmapped
        ));
        let Dispatch::Mutation(Mutation::Delete { uri, .. }) =
            only_builtin.dispatch(&ev("app.bsky.feed.post", CommitOp::Delete, None))
        else {
            panic!("delete maps")
        };
        assert_eq!(uri, "at://did:plc:a/app.bsky.feed.post/k");
    }

    #[test]
    fn a_listed_record_maps_like_its_create() {
        let mut reg = Registry::new();
        builtin::register_all(&mut reg, &builtin::ALL).unwrap();
        let like = r#"{"$type":"app.bsky.feed.like","subject":{"uri":"at://did:plc:b/app.bsky.feed.post/1","cid":"bafyx"},"createdAt":"2026-01-01T00:00:00Z"}"#;
        let event = ev("app.bsky.feed.like", CommitOp::Create, Some(like));
        let EventKind::Commit(c) = &event.kind else {
            unreachable!()
        };
        let listed = ListedRecord {
            did: &event.did,
            collection: &c.collection,
            rkey: &c.rkey,
            cid: "bafyc",
            rev: "3r",
            record: c.record.as_deref().unwrap(),
        };
        assert_eq!(listed.uri(), c.uri(&event.did));
        let (Dispatch::Mutation(a), Dispatch::Mutation(b)) =
            (reg.map_listed(&listed), reg.dispatch(&event))
        else {
            panic!("both map")
        };
        assert_eq!(a, b);
        let other = Nsid::parse("com.example.thing").unwrap();
        assert!(matches!(
            reg.map_listed(&ListedRecord {
                collection: &other,
                ..listed
            }),
            Dispatch::Unmapped
        ));
        // A create without its record fails only where a mapper exists.
        assert!(matches!(
            reg.dispatch(&ev("app.bsky.feed.like", CommitOp::Create, None)),
            Dispatch::Failed { .. }
        ));
        assert!(matches!(
            reg.dispatch(&ev("com.example.thing", CommitOp::Create, None)),
            Dispatch::Unmapped
        ));
    }

    #[test]
    fn bad_records_fail_without_panicking() {
        let mut reg = Registry::new();
        builtin::register_all(&mut reg, &builtin::ALL).unwrap();
        assert!(matches!(
            reg.dispatch(&ev("app.bsky.feed.like", CommitOp::Create, Some("{}"))),
            Dispatch::Failed { .. }
        ));
        assert!(matches!(
            reg.dispatch(&ev("app.bsky.feed.like", CommitOp::Create, Some("[1]"))),
            Dispatch::Failed { .. }
        ));
    }

    fn declarative_into(collection: &str, table: &str, column: &str) -> Arc<dyn Mapper> {
        Arc::new(
            declarative::DeclarativeMapper::new(&declarative::DeclarativeConfig {
                collection: collection.into(),
                table: table.into(),
                columns: [(
                    column.to_owned(),
                    declarative::ColumnConfig {
                        pointer: "/foo".into(),
                        r#type: ColumnType::Text,
                        required: false,
                    },
                )]
                .into(),
            })
            .unwrap(),
        )
    }

    #[test]
    fn table_conflicts_are_rejected() {
        let mut reg = Registry::new();
        let p = |c| CollectionPattern::parse(c).unwrap();
        reg.register(
            p("com.example.x"),
            declarative_into("com.example.x", "notes", "foo"),
        )
        .unwrap();
        assert_eq!(
            reg.register(
                p("com.example.y"),
                declarative_into("com.example.y", "notes", "bar")
            ),
            Err(RegistryError::TableConflict("notes".into()))
        );
    }

    /// A built-in table holds its own collection only (on SQLite its uri is
    /// computed from it), whether or not the built-in mapper is on.
    #[test]
    fn a_built_in_table_takes_no_other_collection() {
        let mut reg = Registry::new();
        let err = reg
            .register(
                CollectionPattern::parse("com.example.*").unwrap(),
                declarative_into("com.example.*", "posts", "foo"),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "table posts is the built-in table of app.bsky.feed.post; the mapper for com.example.* must write another table"
        );
        // Its own collection is still welcome there.
        builtin::register_all(&mut reg, &builtin::ALL).unwrap();
    }
}
