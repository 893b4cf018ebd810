//! Pacing: what a write costs of its account's budget, the rate-limit
//! scopes a call belongs to, and how much of a batch fits what is left.
//!
//! The reference PDS charges each repo write points (create 3, update 2,
//! delete 1) against a per-account hourly and daily budget
//! (`publish.points_per_hour`, `publish.points_per_day`). The worker charges
//! a call before sending it (`Store::charge_write_points`, shared by every
//! process on the database) and, when the budget is spent, leaves the rows
//! `pending` until the window ends instead of letting the PDS answer 429.
//! A 429 still pauses the account and its PDS host (`Store::pause_publish`).
//!
//! Pure: no IO.

use crate::store::OutboxRow;

/// Points one outbox row spends. A create sent again as a `putRecord`
/// that must not overwrite still costs a create.
pub fn points(r: &OutboxRow) -> i64 {
    match r.op.as_str() {
        "create" => 3,
        "update" => 2,
        _ => 1,
    }
}

/// Points of several rows.
pub fn cost(rows: &[&OutboxRow]) -> i64 {
    rows.iter().map(|r| points(r)).sum()
}

/// How many of `rows`, from the first, fit in `remaining` points.
pub fn fitting(rows: &[&OutboxRow], remaining: i64) -> usize {
    let mut spent = 0;
    rows.iter()
        .take_while(|r| {
            spent += points(r);
            spent <= remaining
        })
        .count()
}

/// The scope of an account's budget and pauses.
pub fn did_scope(did: &str) -> String {
    format!("did:{did}")
}

/// The scope of a PDS host's pauses (its origin).
pub fn host_scope(origin: &str) -> String {
    format!("host:{origin}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(op: &str) -> OutboxRow {
        OutboxRow {
            id: 1,
            did: "did:plc:x".into(),
            collection: "app.bsky.feed.post".into(),
            rkey: None,
            op: op.into(),
            record: None,
            swap_cid: None,
            status: "in_flight".into(),
            attempts: 1,
            error: None,
            uri: None,
            cid: None,
            rev: None,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn writes_cost_like_the_reference_pds() {
        let (c, u, d) = (row("create"), row("update"), row("delete"));
        assert_eq!(cost(&[&c, &u, &d]), 6);
        // 3 + 2 fit in 5; the delete after them does not.
        assert_eq!(fitting(&[&c, &u, &d], 5), 2);
        assert_eq!(fitting(&[&c, &u, &d], 2), 0);
        assert_eq!(fitting(&[&d, &c], 100), 2);
    }
}
