//! The six bundled `app.bsky.*` mappers: posts, likes, reposts, follows,
//! blocks and profiles.
//!
//! Owns: each table's own columns and how they come out of the record
//! (borrowed serde structs, unknown fields ignored). The tables themselves are
//! created by the migrations under `migrations/`, which must match
//! [`schema`]; a store test checks that they do.
//!
//! Required fields follow the lexicons: a post needs `text` and `createdAt`,
//! a like or repost a `subject` strong ref and `createdAt`, a follow or block
//! a `subject` DID and `createdAt`. A `createdAt` that is present but not a
//! valid datetime is stored as NULL (the record column keeps it).

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::table::{ColumnType as T, TableSchema, Value};
use super::{MapError, Mapper, RecordRef, Registry, RegistryError};
use crate::event::CollectionPattern;

/// One bundled mapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Posts,
    Likes,
    Reposts,
    Follows,
    Blocks,
    Profiles,
}

/// Every built-in, in table order.
pub const ALL: [Builtin; 6] = [
    Builtin::Posts,
    Builtin::Likes,
    Builtin::Reposts,
    Builtin::Follows,
    Builtin::Blocks,
    Builtin::Profiles,
];

impl Builtin {
    /// The table name, which is also how config names the mapper.
    pub fn table_name(self) -> &'static str {
        match self {
            Builtin::Posts => "posts",
            Builtin::Likes => "likes",
            Builtin::Reposts => "reposts",
            Builtin::Follows => "follows",
            Builtin::Blocks => "blocks",
            Builtin::Profiles => "profiles",
        }
    }

    pub fn from_table_name(s: &str) -> Option<Builtin> {
        ALL.into_iter().find(|b| b.table_name() == s)
    }

    pub fn collection(self) -> &'static str {
        match self {
            Builtin::Posts => "app.bsky.feed.post",
            Builtin::Likes => "app.bsky.feed.like",
            Builtin::Reposts => "app.bsky.feed.repost",
            Builtin::Follows => "app.bsky.graph.follow",
            Builtin::Blocks => "app.bsky.graph.block",
            Builtin::Profiles => "app.bsky.actor.profile",
        }
    }

    /// The table layout (matches the migrations).
    pub fn schema(self) -> TableSchema {
        let name = self.table_name();
        match self {
            Builtin::Posts => TableSchema::new(
                name,
                &[
                    ("text", T::Text),
                    ("created_at", T::Timestamp),
                    ("reply_parent_uri", T::Text),
                    ("reply_root_uri", T::Text),
                    ("langs", T::Json),
                ],
            )
            .with_index(&["reply_parent_uri"])
            .with_index(&["reply_root_uri"]),
            Builtin::Likes | Builtin::Reposts => TableSchema::new(
                name,
                &[
                    ("subject_uri", T::Text),
                    ("subject_cid", T::Text),
                    ("created_at", T::Timestamp),
                ],
            )
            .with_index(&["subject_uri"]),
            Builtin::Follows | Builtin::Blocks => TableSchema::new(
                name,
                &[("subject_did", T::Text), ("created_at", T::Timestamp)],
            )
            .with_index(&["subject_did"]),
            Builtin::Profiles => {
                TableSchema::new(name, &[("display_name", T::Text), ("description", T::Text)])
            }
        }
    }
}

/// Registers the given built-ins for their collections.
pub fn register_all(reg: &mut Registry, which: &[Builtin]) -> Result<(), RegistryError> {
    for &b in which {
        reg.register(
            CollectionPattern::Exact(b.collection().to_owned()),
            Arc::new(BuiltinMapper {
                which: b,
                schema: b.schema(),
            }),
        )?;
    }
    Ok(())
}

struct BuiltinMapper {
    which: Builtin,
    schema: TableSchema,
}

#[derive(Deserialize)]
struct StrongRef<'a> {
    #[serde(borrow)]
    uri: Option<Cow<'a, str>>,
    #[serde(borrow)]
    cid: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ReplyRef<'a> {
    #[serde(borrow)]
    root: Option<StrongRef<'a>>,
    #[serde(borrow)]
    parent: Option<StrongRef<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Post<'a> {
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    created_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reply: Option<ReplyRef<'a>>,
    #[serde(borrow)]
    langs: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subject<'a> {
    #[serde(borrow)]
    subject: Option<StrongRef<'a>>,
    #[serde(borrow)]
    created_at: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubjectDid<'a> {
    #[serde(borrow)]
    subject: Option<Cow<'a, str>>,
    #[serde(borrow)]
    created_at: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile<'a> {
    #[serde(borrow)]
    display_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    description: Option<Cow<'a, str>>,
}

/// Bounded description of a serde error that never carries the offending
/// value (it is logged, and records are anyone's text): serde's
/// `invalid type: string "…", expected …` keeps only the kind (`string`)
/// and what was expected; `unknown variant `…`` drops the variant.
pub(crate) fn shape_error(e: serde_json::Error) -> MapError {
    let mut msg = without_value(&e.to_string());
    if msg.len() > 160 {
        let mut cut = 160;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
        msg.push('…');
    }
    MapError::Json(msg)
}

fn without_value(msg: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix)
            && let Some(i) = rest.rfind(", expected")
        {
            let kind = rest[..i].split(['"', '`']).next().unwrap_or("").trim();
            return format!("{prefix}{kind}{}", &rest[i..]);
        }
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `")
        && let Some(i) = rest.rfind("`, expected")
    {
        return format!("unknown variant{}", &rest[i + 1..]);
    }
    msg.to_owned()
}

fn required<'a>(v: Option<Cow<'a, str>>, field: &str) -> Result<Cow<'a, str>, MapError> {
    v.ok_or_else(|| MapError::Missing(field.to_owned()))
}

fn opt_text(v: Option<Cow<'_, str>>) -> Value {
    v.map_or(Value::Null, |s| Value::text(&s))
}

impl Mapper for BuiltinMapper {
    fn table(&self) -> &TableSchema {
        &self.schema
    }

    fn map(&self, r: &RecordRef<'_>) -> Result<Vec<Value>, MapError> {
        let json = r.json;
        match self.which {
            Builtin::Posts => {
                let p: Post<'_> = serde_json::from_str(json).map_err(shape_error)?;
                let text = required(p.text, "text")?;
                let created = required(p.created_at, "createdAt")?;
                let (parent, root) = match p.reply {
                    Some(reply) => (
                        reply.parent.and_then(|s| s.uri),
                        reply.root.and_then(|s| s.uri),
                    ),
                    None => (None, None),
                };
                let langs = match p.langs {
                    Some(l) if l.get() != "null" => Value::Json(l.get().to_owned()),
                    _ => Value::Null,
                };
                Ok(vec![
                    Value::text(&text),
                    Value::timestamp(&created),
                    opt_text(parent),
                    opt_text(root),
                    langs,
                ])
            }
            Builtin::Likes | Builtin::Reposts => {
                let s: Subject<'_> = serde_json::from_str(json).map_err(shape_error)?;
                let subject = s
                    .subject
                    .ok_or_else(|| MapError::Missing("subject".into()))?;
                let uri = required(subject.uri, "subject.uri")?;
                let cid = required(subject.cid, "subject.cid")?;
                let created = required(s.created_at, "createdAt")?;
                Ok(vec![
                    Value::text(&uri),
                    Value::text(&cid),
                    Value::timestamp(&created),
                ])
            }
            Builtin::Follows | Builtin::Blocks => {
                let s: SubjectDid<'_> = serde_json::from_str(json).map_err(shape_error)?;
                let subject = required(s.subject, "subject")?;
                let created = required(s.created_at, "createdAt")?;
                Ok(vec![Value::text(&subject), Value::timestamp(&created)])
            }
            Builtin::Profiles => {
                let p: Profile<'_> = serde_json::from_str(json).map_err(shape_error)?;
                Ok(vec![opt_text(p.display_name), opt_text(p.description)])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Did, Nsid, RecordKey};

    fn map(b: Builtin, json: &str) -> Result<Vec<Value>, MapError> {
        let did = Did::parse("did:plc:a").unwrap();
        let nsid = Nsid::parse(b.collection()).unwrap();
        let rkey = RecordKey::parse("k").unwrap();
        let m = BuiltinMapper {
            which: b,
            schema: b.schema(),
        };
        m.map(&RecordRef {
            did: &did,
            collection: &nsid,
            rkey: &rkey,
            uri: "at://x",
            json,
        })
    }

    #[test]
    fn post_with_reply_and_langs() {
        let v = map(
            Builtin::Posts,
            r#"{"$type":"app.bsky.feed.post","text":"hi","createdAt":"2026-07-04T14:38:07.513Z","langs":["en"],"reply":{"parent":{"uri":"at://p","cid":"c1"},"root":{"uri":"at://r","cid":"c2"}}}"#,
        )
        .unwrap();
        assert_eq!(v[0], Value::Text("hi".into()));
        assert!(matches!(v[1], Value::Timestamp(_)));
        assert_eq!(v[2], Value::Text("at://p".into()));
        assert_eq!(v[3], Value::Text("at://r".into()));
        assert_eq!(v[4], Value::Json(r#"["en"]"#.into()));
    }

    /// A mapper failure is logged with its message: it names the kind and
    /// place of the mismatch, never the record's value.
    #[test]
    fn shape_errors_never_carry_the_value() {
        for (b, json) in [
            (Builtin::Likes, r#"{"subject":"s3cret words here"}"#),
            (Builtin::Posts, r#"{"text":8675309,"createdAt":"x"}"#),
            (Builtin::Posts, r#"{"text":["s3cret"],"createdAt":"x"}"#),
            (Builtin::Follows, r#"{"subject":true}"#),
        ] {
            let e = map(b, json).unwrap_err().to_string();
            assert!(
                e.starts_with("record is not a JSON object") || e.contains("invalid type"),
                "{e}"
            );
            for v in ["s3cret", "8675309", "true"] {
                assert!(!e.contains(v), "{json}: value in {e:?}");
            }
        }
    }

    #[test]
    fn required_fields_and_types() {
        assert_eq!(
            map(Builtin::Posts, r#"{"createdAt":"2026-01-01T00:00:00Z"}"#),
            Err(MapError::Missing("text".into()))
        );
        assert!(matches!(
            map(Builtin::Posts, r#"{"text":5,"createdAt":"x"}"#),
            Err(MapError::Json(_))
        ));
        assert_eq!(
            map(
                Builtin::Likes,
                r#"{"subject":{"uri":"at://x"},"createdAt":"2026-01-01T00:00:00Z"}"#
            ),
            Err(MapError::Missing("subject.cid".into()))
        );
        assert_eq!(
            map(Builtin::Follows, r#"{"createdAt":"2026-01-01T00:00:00Z"}"#),
            Err(MapError::Missing("subject".into()))
        );
        assert_eq!(
            map(Builtin::Profiles, "{}").unwrap(),
            vec![Value::Null, Value::Null]
        );
        // A bad datetime keeps the record, with a NULL column.
        assert_eq!(
            map(
                Builtin::Follows,
                r#"{"subject":"did:plc:b","createdAt":"soon"}"#
            )
            .unwrap()[1],
            Value::Null
        );
    }

    #[test]
    fn names_round_trip() {
        for b in ALL {
            assert_eq!(Builtin::from_table_name(b.table_name()), Some(b));
        }
    }
}
