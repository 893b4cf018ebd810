//! What the store-limit baselines write for a generated event: the same
//! row parity writes, mapped by parity's own built-in mappers
//! ([`parity::mapper::Registry::map_listed`]), so the baseline and parity
//! store identical table, key and column values.
//!
//! Owns: event → [`Write`]. A create or update of a mapped collection is an
//! upsert; a delete of one is a delete (plus its tombstone); identity and
//! account events update the account's `parity_repos` row; anything else
//! (unmapped collections) writes nothing, as in parity.

use parity::event::{Did, Nsid, RecordKey};
use parity::mapper::{Dispatch, ListedRecord, MappersConfig, Mutation, Registry, Value};
use serde_json::value::RawValue;

use crate::event::{GenEvent, Kind};
use crate::template::Op;

/// One write of the baseline.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Upsert {
        table: String,
        uri: String,
        did: String,
        rkey: String,
        cid: String,
        rev: String,
        record: String,
        /// The mapper's own columns, by name.
        values: Vec<(String, Value)>,
    },
    Delete {
        table: String,
        uri: String,
        rev: String,
    },
    Repo {
        did: String,
        handle: Option<String>,
        /// `(active, status)` of an account event.
        account: Option<(bool, String)>,
    },
}

impl Write {
    /// Whether this is a record row write (what "rows" counts).
    pub fn is_row(&self) -> bool {
        !matches!(self, Write::Repo { .. })
    }
}

/// Maps generated events with parity's default mappers.
pub struct RowMapper {
    reg: Registry,
}

impl Default for RowMapper {
    fn default() -> Self {
        RowMapper::new()
    }
}

impl RowMapper {
    /// The registry `parity consume` builds with default settings.
    pub fn new() -> RowMapper {
        RowMapper {
            reg: Registry::from_config(&MappersConfig::default(), &[]).expect("default mappers"),
        }
    }

    fn table_of(&self, collection: &str) -> Option<usize> {
        self.reg.tables().iter().position(|t| {
            parity::mapper::builtin::Builtin::from_table_name(&t.name)
                .is_some_and(|b| b.collection() == collection)
        })
    }

    /// The write for `e`, if any.
    pub fn write(&self, e: &GenEvent) -> Option<Write> {
        match &e.kind {
            Kind::Identity { handle } => Some(Write::Repo {
                did: e.did.clone(),
                handle: Some(handle.clone()),
                account: None,
            }),
            Kind::Account { active, status } => Some(Write::Repo {
                did: e.did.clone(),
                handle: None,
                account: Some((
                    *active,
                    status.clone().unwrap_or_else(|| "active".to_owned()),
                )),
            }),
            Kind::Commit {
                op: Op::Delete,
                collection,
                rkey,
                rev,
                ..
            } => {
                let t = self.table_of(collection)?;
                Some(Write::Delete {
                    table: self.reg.tables()[t].name.clone(),
                    uri: format!("at://{}/{collection}/{rkey}", e.did),
                    rev: rev.clone(),
                })
            }
            Kind::Commit {
                collection,
                rkey,
                rev,
                record,
                cid,
                ..
            } => {
                let json = record.as_ref()?.to_string();
                self.listed(&e.did, collection, rkey, cid.as_deref()?, rev, &json)
            }
        }
    }

    /// The upsert for one record as an import lists it (`record`: its JSON).
    pub fn listed(
        &self,
        did: &str,
        collection: &str,
        rkey: &str,
        cid: &str,
        rev: &str,
        record: &str,
    ) -> Option<Write> {
        let d = Did::parse(did)?;
        let nsid = Nsid::parse(collection)?;
        let rk = RecordKey::parse(rkey)?;
        let json = RawValue::from_string(record.to_owned()).ok()?;
        let listed = ListedRecord {
            did: &d,
            collection: &nsid,
            rkey: &rk,
            cid,
            rev,
            record: &json,
        };
        match self.reg.map_listed(&listed) {
            Dispatch::Mutation(Mutation::Upsert(row)) => {
                let schema = &self.reg.tables()[row.table.0];
                Some(Write::Upsert {
                    table: schema.name.clone(),
                    uri: row.uri,
                    did: did.to_owned(),
                    rkey: row.rkey,
                    cid: row.cid,
                    rev: row.rev,
                    record: row.record.get().to_owned(),
                    values: schema
                        .columns
                        .iter()
                        .map(|c| c.name.clone())
                        .zip(row.values)
                        .collect(),
                })
            }
            _ => None,
        }
    }
}

/// A column value as text (`None` = NULL): timestamps as parity renders
/// them, booleans as `true`/`false` (the PostgreSQL baseline casts) or
/// `1`/`0` (`sqlite`).
pub fn value_text(v: &Value, sqlite: bool) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Text(s) | Value::Json(s) => Some(s.clone()),
        Value::Integer(i) => Some(i.to_string()),
        Value::Boolean(b) => Some(match (sqlite, b) {
            (true, true) => "1".into(),
            (true, false) => "0".into(),
            (false, b) => b.to_string(),
        }),
        Value::Timestamp(t) => Some(parity::mapper::table::timestamp_text(t)),
    }
}

/// Whether `e` writes a record row in parity's default configuration (a
/// commit of a built-in mapper's collection), without mapping it: what the
/// bench server counts while it streams.
pub fn is_row_write(e: &GenEvent) -> bool {
    match &e.kind {
        Kind::Commit { collection, .. } => parity::mapper::builtin::ALL
            .iter()
            .any(|b| b.collection() == collection),
        _ => false,
    }
}
