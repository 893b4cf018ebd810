//! `parity_publish_limits`: the publish rate limits every parity process on
//! this database shares.
//!
//! Owns: charging an account's write points against its hourly and daily
//! budget ([`Store::charge_write_points`], one conditional UPDATE, so two
//! processes never overspend), giving them back for a call the PDS did not
//! charge ([`Store::refund_write_points`]), and the pauses a 429 asks for, per account
//! or per PDS host ([`Store::pause_publish`], [`Store::publish_paused_until`]).
//! Does not own what a write costs or when to pause (`publish::pacing`).
//!
//! Scopes are text keys: `did:<did>` or `host:<origin>`. Windows are fixed,
//! like the reference PDS's: a window starts at its first charge after the
//! previous one ended.

use chrono::{DateTime, Utc};

use super::dialect::Dialect;
use super::{Store, StoreError};

/// What charging a write cost did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Charged: the call may go.
    Granted,
    /// Not charged: the budget has only `remaining` points until `until`.
    Exhausted {
        remaining: i64,
        until: DateTime<Utc>,
    },
}

#[derive(sqlx::FromRow)]
struct Windows {
    hour_start: String,
    hour_points: i64,
    day_start: String,
    day_points: i64,
}

fn ts(dialect: Dialect, c: &str) -> String {
    match dialect {
        Dialect::Postgres => {
            format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS {c}")
        }
        Dialect::Sqlite => c.to_owned(),
    }
}

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

const HOUR: chrono::TimeDelta = chrono::TimeDelta::hours(1);
const DAY: chrono::TimeDelta = chrono::TimeDelta::days(1);

impl Store {
    /// Charges `cost` points to `scope` if its hourly (`per_hour`) and daily
    /// (`per_day`) windows both have room, at `now`.
    pub async fn charge_write_points(
        &self,
        scope: &str,
        cost: i64,
        per_hour: i64,
        per_day: i64,
        now: DateTime<Utc>,
    ) -> Result<Charge, StoreError> {
        self.execute(
            "INSERT INTO parity_publish_limits (scope, hour_start, day_start, updated_at) \
             VALUES ($1, $2::timestamptz, $2::timestamptz, $2::timestamptz) ON CONFLICT (scope) DO NOTHING",
            vec![scope.into(), now.into()],
        )
        .await?;
        let charged = self
            .execute(
                "UPDATE parity_publish_limits SET \
                 hour_points = CASE WHEN hour_start <= $3::timestamptz THEN $5 ELSE hour_points + $5 END, \
                 hour_start = CASE WHEN hour_start <= $3::timestamptz THEN $2::timestamptz ELSE hour_start END, \
                 day_points = CASE WHEN day_start <= $4::timestamptz THEN $5 ELSE day_points + $5 END, \
                 day_start = CASE WHEN day_start <= $4::timestamptz THEN $2::timestamptz ELSE day_start END, \
                 updated_at = $2::timestamptz \
                 WHERE scope = $1 \
                   AND (CASE WHEN hour_start <= $3::timestamptz THEN 0 ELSE hour_points END) + $5 <= $6 \
                   AND (CASE WHEN day_start <= $4::timestamptz THEN 0 ELSE day_points END) + $5 <= $7",
                vec![
                    scope.into(),
                    now.into(),
                    (now - HOUR).into(),
                    (now - DAY).into(),
                    cost.into(),
                    per_hour.into(),
                    per_day.into(),
                ],
            )
            .await?;
        if charged > 0 {
            return Ok(Charge::Granted);
        }
        let d = self.dialect();
        let sql = format!(
            "SELECT {}, hour_points, {}, day_points FROM parity_publish_limits WHERE scope = $1",
            ts(d, "hour_start"),
            ts(d, "day_start")
        );
        let corrupt = || {
            StoreError::Sql(sqlx::Error::Protocol(format!(
                "parity_publish_limits has no readable row for {scope}"
            )))
        };
        let w: Windows = self
            .fetch_optional(&sql, vec![scope.into()])
            .await?
            .ok_or_else(corrupt)?;
        let (Some(hour_start), Some(day_start)) = (parse(&w.hour_start), parse(&w.day_start))
        else {
            return Err(corrupt());
        };
        // The windows still running (an ended one has its full budget).
        let hour_left = if hour_start <= now - HOUR {
            per_hour
        } else {
            per_hour - w.hour_points
        };
        let day_left = if day_start <= now - DAY {
            per_day
        } else {
            per_day - w.day_points
        };
        let mut until = now;
        if hour_left < cost {
            until = until.max(hour_start + HOUR);
        }
        if day_left < cost {
            until = until.max(day_start + DAY);
        }
        Ok(Charge::Exhausted {
            remaining: hour_left.min(day_left).max(0),
            until,
        })
    }

    /// Gives back `points` charged to `scope` at `charged_at` for a call the
    /// PDS did not charge. A window that began after `charged_at` never
    /// held them and is left alone; spend never goes below zero.
    pub async fn refund_write_points(
        &self,
        scope: &str,
        points: i64,
        charged_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE parity_publish_limits SET \
             hour_points = CASE WHEN hour_start <= $3::timestamptz THEN \
                 (CASE WHEN hour_points > $2 THEN hour_points - $2 ELSE 0 END) ELSE hour_points END, \
             day_points = CASE WHEN day_start <= $3::timestamptz THEN \
                 (CASE WHEN day_points > $2 THEN day_points - $2 ELSE 0 END) ELSE day_points END, \
             updated_at = $4::timestamptz \
             WHERE scope = $1",
            vec![
                scope.into(),
                points.into(),
                charged_at.into(),
                Utc::now().into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// No publish call for `scope` before `until` (a later pause stays).
    pub async fn pause_publish(&self, scope: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        let now = Utc::now();
        self.execute(
            "INSERT INTO parity_publish_limits (scope, hour_start, day_start, paused_until, updated_at) \
             VALUES ($1, $3::timestamptz, $3::timestamptz, $2::timestamptz, $3::timestamptz) \
             ON CONFLICT (scope) DO UPDATE SET updated_at = excluded.updated_at, \
             paused_until = CASE WHEN parity_publish_limits.paused_until IS NULL \
                 OR parity_publish_limits.paused_until < excluded.paused_until \
                 THEN excluded.paused_until ELSE parity_publish_limits.paused_until END",
            vec![scope.into(), until.into(), now.into()],
        )
        .await?;
        Ok(())
    }

    /// The latest pause of any of `scopes` still running at `now`.
    pub async fn publish_paused_until(
        &self,
        scopes: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut latest: Option<DateTime<Utc>> = None;
        for scope in scopes {
            let sql = format!(
                "SELECT {} FROM parity_publish_limits WHERE scope = $1 AND paused_until > $2::timestamptz",
                ts(self.dialect(), "paused_until")
            );
            let row: Option<(String,)> = self
                .fetch_optional(&sql, vec![(*scope).into(), now.into()])
                .await?;
            if let Some(t) = row.and_then(|(t,)| parse(&t)) {
                latest = Some(latest.map_or(t, |l| l.max(t)));
            }
        }
        Ok(latest)
    }
}
