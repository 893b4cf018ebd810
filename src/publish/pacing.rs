//! Pacing: what a call costs of its account's budget, whether the PDS
//! charged a call that failed, the rate-limit scopes a call belongs to, and
//! how much of a batch fits what is left.
//!
//! The reference PDS charges each repo write points against a per-account
//! hourly and daily budget (`publish.points_per_hour`,
//! `publish.points_per_day`): `applyWrites` 3 per create, 2 per update, 1
//! per delete; `putRecord` 2 and `deleteRecord` 1, whatever the record's
//! state (`@atproto/pds` `api/com/atproto/repo/{applyWrites,putRecord,
//! deleteRecord}.js`, `rateLimit` … `calcPoints`). The worker charges a
//! call before sending it (`Store::charge_write_points`, shared by every
//! process on the database) and, when the budget is spent, leaves the rows
//! `pending` until the window ends instead of letting the PDS answer 429.
//! When the PDS did not charge a failed call ([`charged`]), the points are
//! given back (`Store::refund_write_points`). A 429 still pauses the
//! account and its PDS host (`Store::pause_publish`).
//!
//! Pure: no IO.

use super::xrpc::CallError;
use crate::store::OutboxRow;

/// Points one row costs in an `applyWrites`.
pub fn points(r: &OutboxRow) -> i64 {
    match r.op.as_str() {
        "create" => 3,
        "update" => 2,
        _ => 1,
    }
}

/// Points of one row sent alone: `deleteRecord` 1, `putRecord` 2 (a create
/// sent again as a put that must not overwrite is charged as a put).
pub fn single_points(r: &OutboxRow) -> i64 {
    if r.op == "delete" { 1 } else { 2 }
}

/// Points of several rows in one `applyWrites`.
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

/// Whether the PDS charged a write call that failed with `e`.
///
/// The reference PDS's XRPC server (`@atproto/xrpc-server`
/// `dist/server.js`, `createHandlerInternal`) runs, in order: params,
/// `authVerifier`, the input's lexicon check, `routeLimiter.handle(ctx)`
/// (the points are consumed here), then the handler. So:
/// - an auth failure (`ExpiredToken`, `InvalidToken`, `AuthRequired`:
///   [`CallError::ExpiredToken`], [`CallError::Auth`]) comes before the
///   limiter: not charged;
/// - a request that never reached the PDS ([`CallError::Unreachable`]):
///   not charged;
/// - a 429 is charged: `rate-limiter-flexible`'s `consume` adds the points
///   before it compares them with the limit (`RateLimiterMemory.consume`:
///   `incrby`, then `reject`), and both windows consume (`CombinedRateLimiter`);
/// - `InvalidSwap`, record validation (`InvalidRequest` from
///   `InvalidRecordError`), `AccountDeactivated`/`AccountTakedown`
///   (`findAccount` in the handler) and 5xx come from the handler: charged;
/// - a timeout may or may not have reached the handler: counted as charged,
///   since over-counting only paces a little early while under-counting
///   meets the PDS's 429.
///
/// (`InvalidRequest` from the lexicon check is not charged, but the same
/// name comes from the handler's record validation, which is; parity checks
/// its rows' shape before sending, so it keeps those points.)
pub fn charged(e: &CallError) -> bool {
    !matches!(
        e,
        CallError::ExpiredToken | CallError::Auth(_) | CallError::Unreachable(_)
    )
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
        OutboxRow::in_flight(1, op)
    }

    #[test]
    fn writes_cost_like_the_reference_pds() {
        let (c, u, d) = (row("create"), row("update"), row("delete"));
        assert_eq!(cost(&[&c, &u, &d]), 6);
        assert_eq!(
            (single_points(&c), single_points(&u), single_points(&d)),
            (2, 2, 1)
        );
        // 3 + 2 fit in 5; the delete after them does not.
        assert_eq!(fitting(&[&c, &u, &d], 5), 2);
        assert_eq!(fitting(&[&c, &u, &d], 2), 0);
        assert_eq!(fitting(&[&d, &c], 100), 2);
    }

    #[test]
    fn only_calls_the_pds_refused_before_its_limiter_are_free() {
        for free in [
            CallError::ExpiredToken,
            CallError::Auth("InvalidToken".into()),
            CallError::Unreachable("cannot reach the PDS".into()),
        ] {
            assert!(!charged(&free), "{free:?}");
        }
        for paid in [
            CallError::RateLimited { wait: None },
            CallError::InvalidSwap("x".into()),
            CallError::AccountGone("AccountDeactivated".into()),
            CallError::Refused {
                name: "InvalidRequest".into(),
                message: "x".into(),
            },
            CallError::Transient("the PDS answered 500".into()),
        ] {
            assert!(charged(&paid), "{paid:?}");
        }
    }
}
