//! `COPY`'s text format (`postgres_copy.rs`): columns in order, values as
//! the upsert binds them, the four special characters escaped. That the
//! copied rows read back as the upsert's is `postgres_fresh_tests.rs`'s.

use chrono::{DateTime, TimeZone, Utc};

use super::{encode, field};
use crate::mapper::{TableSchema, Value};
use crate::store::postgres_fresh::tests::like;

#[test]
fn rows_are_written_in_the_text_format_in_column_order() {
    use crate::mapper::ColumnType;
    let t: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 12, 4, 9, 8, 7).unwrap();
    let table = TableSchema::new(
        "t",
        &[
            ("n", ColumnType::Integer),
            ("b", ColumnType::Boolean),
            ("j", ColumnType::Json),
            ("at", ColumnType::Timestamp),
        ],
    );
    let mut row = like("did:plc:a", "3k1", "3a");
    row.values = vec![
        Value::Integer(-42),
        Value::Boolean(true),
        Value::Json("[\"a\\b\"]".into()),
        Value::Timestamp(t),
    ];
    // A value of another type than its column's is NULL, as the upsert
    // binds it; a missing one too.
    let mut other = like("did:plc:a", "3k2", "3a");
    other.values = vec![Value::Text("7".into()), Value::Boolean(false)];
    let out = String::from_utf8(encode(&table, &[row, other], t)).unwrap();
    let lines: Vec<&str> = out.split_terminator('\n').collect();
    let head = |rkey: &str| {
        format!(
            "at://did:plc:a/app.bsky.feed.like/{rkey}\tdid:plc:a\t{rkey}\tbafy-{rkey}\t3a\t{{\"text\":\"tab\\\\tnew\\\\nline \\\\\\\\ {rkey}\"}}\t2026-12-04T09:08:07.000000Z"
        )
    };
    assert_eq!(
        lines,
        vec![
            format!(
                "{}\t-42\tt\t[\"a\\\\b\"]\t2026-12-04T09:08:07.000000Z",
                head("3k1")
            ),
            format!("{}\t\\N\tf\t\\N\t\\N", head("3k2")),
        ]
    );
}

fn escaped(v: Option<&str>) -> String {
    let mut out = Vec::new();
    field(&mut out, v);
    String::from_utf8(out).unwrap()
}

#[test]
fn the_four_special_characters_are_escaped_and_null_is_marked() {
    assert_eq!(escaped(None), "\\N");
    assert_eq!(escaped(Some("")), "");
    assert_eq!(escaped(Some("plain é")), "plain é");
    assert_eq!(escaped(Some("a\\b\tc\nd\re\\N")), "a\\\\b\\tc\\nd\\re\\\\N");
}
