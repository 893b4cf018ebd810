//! What a row may hold before it reaches SQL, the same on every backend.
//!
//! Owns: removing U+0000 (PostgreSQL `text` cannot hold it, and
//! `record->>'field'` fails on a `\u0000` escape, while SQLite takes both,
//! so both backends get the value without it), and the size bound of text
//! in an indexed column ([`MAX_INDEXED_BYTES`]). [`super::Registry`] applies
//! both to every row, whichever mapper made it, so the stream and the import
//! store the same rows on SQLite and PostgreSQL. Pure: no IO.
//!
//! Choices: NUL is removed, not replaced (the rest of the text is kept
//! as sent). Text longer than [`MAX_INDEXED_BYTES`] in an indexed column is
//! stored as NULL; the `record` column keeps the full value. No real
//! identifier is that long (a did:web is at most 261 bytes, an at-uri of a
//! record about 1,100), so only garbage loses its column.

use std::borrow::Cow;

use super::table::Value;

/// Longest text stored in an indexed column (and longest record URI, the
/// primary key). PostgreSQL refuses a btree entry over 2,704 bytes,
/// headers included (SQLSTATE 54000); this leaves room for them.
pub const MAX_INDEXED_BYTES: usize = 2_000;

/// `s` without NUL characters.
pub fn text_without_nul(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', ""))
    } else {
        Cow::Borrowed(s)
    }
}

/// Valid JSON text without `\u0000` escapes (the only way JSON text holds a
/// NUL). An escaped backslash followed by `u0000` is text, and is kept.
pub fn json_without_nul(json: &str) -> Cow<'_, str> {
    if !json.contains("\\u0000") {
        return Cow::Borrowed(json);
    }
    let b = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let (mut i, mut kept) = (0, 0);
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
        } else if b[i + 1..].starts_with(b"u0000") {
            out.push_str(&json[kept..i]);
            i += 6;
            kept = i;
        } else {
            // Any other escape is two bytes, or `\uXXXX` whose tail is
            // plain text to this scan.
            i += 2;
        }
    }
    out.push_str(&json[kept..]);
    Cow::Owned(out)
}

/// One mapped value made storable: NUL removed from text and JSON, and
/// text too long for an index entry dropped when `indexed`.
pub fn value(v: Value, indexed: bool) -> Value {
    match v {
        Value::Text(s) if indexed && s.len() > MAX_INDEXED_BYTES => Value::Null,
        Value::Text(s) => match text_without_nul(&s) {
            Cow::Borrowed(_) => Value::Text(s),
            Cow::Owned(t) => Value::Text(t),
        },
        Value::Json(s) => match json_without_nul(&s) {
            Cow::Borrowed(_) => Value::Json(s),
            Cow::Owned(t) => Value::Json(t),
        },
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_removed_from_text_and_json() {
        assert_eq!(text_without_nul("a\0b\0"), "ab");
        assert!(matches!(text_without_nul("ab"), Cow::Borrowed(_)));
        assert_eq!(
            json_without_nul(r#"{"t":"a\u0000b","u":"\u0000"}"#),
            r#"{"t":"ab","u":""}"#
        );
        // An escaped backslash before u0000 is text, not a NUL.
        assert_eq!(json_without_nul(r#"["\\u0000"]"#), r#"["\\u0000"]"#);
        assert_eq!(json_without_nul(r#"["\\\u0000"]"#), r#"["\\"]"#);
        assert_eq!(json_without_nul(r#"["\u00001"]"#), r#"["1"]"#);
        assert!(matches!(
            json_without_nul(r#"{"a":"\u0001"}"#),
            Cow::Borrowed(_)
        ));
        for s in [r#"{"t":"a\u0000b"}"#, r#"["\\\u0000\"\u0000"]"#] {
            let clean = json_without_nul(s);
            let v: serde_json::Value = serde_json::from_str(&clean).unwrap();
            assert!(!v.to_string().contains("\\u0000"), "{clean}");
        }
    }

    #[test]
    fn indexed_text_is_bounded() {
        let long = "x".repeat(MAX_INDEXED_BYTES + 1);
        assert_eq!(value(Value::Text(long.clone()), true), Value::Null);
        assert_eq!(value(Value::Text(long.clone()), false), Value::Text(long));
        let max = "x".repeat(MAX_INDEXED_BYTES);
        assert_eq!(value(Value::Text(max.clone()), true), Value::Text(max));
        assert_eq!(
            value(Value::Text("a\0".into()), true),
            Value::Text("a".into())
        );
        assert_eq!(
            value(Value::Json(r#"["e\u0000n"]"#.into()), false),
            Value::Json(r#"["en"]"#.into())
        );
        assert_eq!(value(Value::Integer(3), true), Value::Integer(3));
    }
}
