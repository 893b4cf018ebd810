//! The publish worker: claims a DID's next outbox rows, sends them to the
//! account's PDS, and writes the result back.
//!
//! Owns: the loop of each of `publish.concurrency` tasks (claim → publish →
//! repeat, idle wait), grouping a claim into calls (consecutive plain rows
//! in one `applyWrites` of at most [`MAX_WRITES`]; rows with `swap_cid`,
//! and creates or deletes that may already have reached the PDS, one by
//! one with `putRecord`/`deleteRecord`), what each answer does to the rows,
//! the per-row log lines, pacing each call (a paused account or PDS host,
//! the account's write budget: [`super::pacing`]), and releasing leases on
//! shutdown.
//!
//! Exactly once: a create's rkey is stored before its first call. A row
//! claimed before (`attempts > 1`: the earlier call may have written it)
//! is first looked up on the PDS ([`super::recheck`]): found as parity
//! would write it, it is published without a write; found absent (on its
//! first retry), it is batched again. Otherwise it is sent as `putRecord`
//! with `swapRecord: null` ("must not exist yet"), and a PDS that already
//! has the same record answers 200 without a new commit. Either way
//! without a commit, the rev is the account's latest (`getLatestCommit`).
//!
//! Shutdown: cancellation is checked between calls only, so calls in
//! flight finish and their results are written; then every row still
//! leased by this process goes back to `pending`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::PublishConfig;
use super::pacing;
use super::recheck::{self, Found};
use super::session::{Live, SessionError, Sessions};
use super::writeback::{self, Written};
use super::xrpc::{CallError, Client};
use crate::event::{Did, Nsid, RecordKey};
use crate::mapper::Registry;
use crate::obs::names;
use crate::store::{Charge, OutboxRow, Store, StoreError};

/// Most writes in one `applyWrites` (the PDS's limit).
pub const MAX_WRITES: usize = 200;
/// Largest `applyWrites` body parity builds: the reference PDS refuses
/// JSON bodies over 150 KiB, so batches are cut well below that.
pub const MAX_BATCH_BYTES: usize = 120 * 1024;
/// First retry delay after a transient failure (doubles per attempt).
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Wait after a 429 without any header saying how long.
const RATE_LIMIT_DEFAULT: Duration = Duration::from_secs(30);
/// How often expired `pending_auth` rows are failed and the gauge updated.
const HOUSEKEEPING: Duration = Duration::from_secs(5);
/// Largest record accepted from the outbox (a PDS refuses larger ones).
const MAX_RECORD_BYTES: usize = 1 << 20;

/// What the worker needs, built by the command.
#[derive(Clone)]
pub struct Worker {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub sessions: Sessions,
    pub client: Client,
    pub cfg: PublishConfig,
    /// Unique per process; task `i` leases as `<owner>/<i>`.
    pub owner: String,
    /// Health of the process serving `/health` (the publish command's, or
    /// consume's when `[publish] enabled`): progress and a stuck outbox.
    pub obs: Option<Arc<crate::obs::Obs>>,
    /// `health.max_outbox_age`.
    pub max_outbox_age: Duration,
    /// The worker is the process's only work (`parity publish`): a working
    /// outbox is its progress for `/health`. Inside `consume` the stream
    /// owns progress, so a stale stream is never hidden by the worker.
    pub owns_progress: bool,
}

/// Why the worker stopped without being asked.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] crate::auth::SealError),
}

impl From<SessionError> for PublishError {
    fn from(e: SessionError) -> PublishError {
        match e {
            SessionError::Store(s) => PublishError::Store(s),
            SessionError::Seal(s) => PublishError::Seal(s),
            SessionError::Call(c) => {
                PublishError::Store(StoreError::Sql(sqlx::Error::Protocol(c.to_string())))
            }
        }
    }
}

/// One call to the PDS.
enum Unit<'a> {
    /// Plain rows in one applyWrites.
    Batch(Vec<&'a OutboxRow>),
    /// One row through putRecord / deleteRecord.
    Single(&'a OutboxRow),
}

impl Unit<'_> {
    fn rows(&self) -> Vec<&OutboxRow> {
        match self {
            Unit::Batch(r) => r.clone(),
            Unit::Single(r) => vec![r],
        }
    }
}

/// Whether a row goes alone: a compare-and-swap, or a create/delete that
/// an earlier claim may have sent already, unless the PDS was just seen
/// not to have it (`absent`, [`super::recheck`]). (Such rows cannot go in
/// one `applyWrites` again: the reference PDS answers a create of a record
/// that exists with a 500, not with an error that says so.)
fn alone(r: &OutboxRow, absent: &HashSet<i64>) -> bool {
    r.swap_cid.is_some() || (r.attempts > 1 && r.op != "update" && !absent.contains(&r.id))
}

/// Bytes a write adds to an `applyWrites` body (its record plus the
/// write's own keys).
fn write_bytes(r: &OutboxRow) -> usize {
    r.record.as_ref().map_or(0, String::len) + 160
}

fn units<'a>(rows: &'a [OutboxRow], absent: &HashSet<i64>) -> Vec<Unit<'a>> {
    let mut out = Vec::new();
    let mut plain: Vec<&OutboxRow> = Vec::new();
    let mut bytes = 0;
    for r in rows {
        if alone(r, absent) {
            if !plain.is_empty() {
                out.push(Unit::Batch(std::mem::take(&mut plain)));
                bytes = 0;
            }
            out.push(Unit::Single(r));
        } else {
            if !plain.is_empty() && bytes + write_bytes(r) > MAX_BATCH_BYTES {
                out.push(Unit::Batch(std::mem::take(&mut plain)));
                bytes = 0;
            }
            bytes += write_bytes(r);
            plain.push(r);
            if plain.len() == MAX_WRITES {
                out.push(Unit::Batch(std::mem::take(&mut plain)));
                bytes = 0;
            }
        }
    }
    if !plain.is_empty() {
        out.push(Unit::Batch(plain));
    }
    out
}

/// Retry delay after `attempts` attempts: doubling, capped, ±25 % jitter.
fn backoff(attempts: i64) -> Duration {
    let exp = attempts.clamp(1, 20) as u32 - 1;
    let d = BACKOFF_BASE
        .saturating_mul(1u32 << exp.min(16))
        .min(BACKOFF_MAX);
    let jitter = rand::random::<f64>() * 0.5 + 0.75;
    d.mul_f64(jitter)
}

/// Why a row cannot be sent at all (checked before any URL or SQL use).
fn invalid(r: &OutboxRow) -> Option<String> {
    if Nsid::parse(&r.collection).is_none() {
        return Some("collection is not an NSID".into());
    }
    if let Some(k) = &r.rkey
        && RecordKey::parse(k).is_none()
    {
        return Some("rkey is not a valid record key".into());
    }
    match (r.op.as_str(), &r.record) {
        ("delete", _) => None,
        (_, None) => Some("a create or update needs a record".into()),
        (_, Some(t)) if t.len() > MAX_RECORD_BYTES => Some("record is larger than 1 MiB".into()),
        (_, Some(t)) => match serde_json::from_str::<Value>(t) {
            Ok(Value::Object(o))
                if o.get("$type").and_then(Value::as_str) == Some(&r.collection) =>
            {
                None
            }
            Ok(Value::Object(_)) => Some("record.$type must equal the collection".into()),
            _ => Some("record is not a JSON object".into()),
        },
    }
}

fn write_json(r: &OutboxRow) -> Value {
    let rkey = r.rkey.as_deref().unwrap_or_default();
    let record = || {
        serde_json::from_str::<Value>(r.record.as_deref().unwrap_or("null")).unwrap_or(Value::Null)
    };
    match r.op.as_str() {
        "create" => {
            json!({"$type": "com.atproto.repo.applyWrites#create", "collection": r.collection, "rkey": rkey, "value": record()})
        }
        "update" => {
            json!({"$type": "com.atproto.repo.applyWrites#update", "collection": r.collection, "rkey": rkey, "value": record()})
        }
        _ => {
            json!({"$type": "com.atproto.repo.applyWrites#delete", "collection": r.collection, "rkey": rkey})
        }
    }
}

impl Worker {
    /// Runs `publish.concurrency` tasks until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) -> Result<(), PublishError> {
        let mut tasks = JoinSet::new();
        for i in 0..self.cfg.concurrency {
            let w = self.clone();
            let t = token.clone();
            tasks.spawn(async move { w.task(format!("{}/{i}", w.owner), t).await });
        }
        let w = self.clone();
        let t = token.clone();
        tasks.spawn(async move { w.housekeeping(t).await });
        tracing::info!(concurrency = self.cfg.concurrency, owner = %self.owner, "Publishing the outbox.");
        let mut result = Ok(());
        while let Some(done) = tasks.join_next().await {
            let r = done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            if let Err(e) = r {
                token.cancel();
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }

    async fn housekeeping(&self, token: CancellationToken) -> Result<(), PublishError> {
        // Validated with the config; the default only if it was not.
        let ttl = self
            .cfg
            .pending_auth_ttl()
            .ok()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .unwrap_or(chrono::Duration::days(7));
        loop {
            match self.store.expire_pending_auth(Utc::now() - ttl).await {
                Ok(rows) => {
                    for r in rows {
                        metrics::counter!(names::PUBLISH_WRITES, "op" => op_label(&r.op), "outcome" => "failed").increment(1);
                        tracing::info!(id = r.id, uri = %row_uri(&r), "Publish failed: no login within publish.pending_auth_ttl.");
                    }
                }
                Err(e) if e.is_transient() => {}
                Err(e) => return Err(e.into()),
            }
            if let Ok(counts) = self.store.outbox_counts(None).await {
                for (status, n) in counts {
                    metrics::gauge!(names::PUBLISH_OUTBOX, "status" => status).set(n as f64);
                }
                if self.owns_progress
                    && let Some(obs) = &self.obs
                {
                    obs.touch();
                }
            }
            if let Some(obs) = &self.obs
                && let Ok(oldest) = self.store.oldest_open_outbox().await
            {
                let age = oldest
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                    .and_then(|t| (Utc::now() - t.with_timezone(&Utc)).to_std().ok());
                obs.set_outbox_stuck(age.is_some_and(|a| a > self.max_outbox_age));
            }
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = tokio::time::sleep(HOUSEKEEPING) => {}
            }
        }
    }

    async fn task(&self, owner: String, token: CancellationToken) -> Result<(), PublishError> {
        let idle = Duration::from_millis(self.cfg.poll_interval_ms);
        let lease = chrono::Duration::seconds(self.cfg.lease_seconds as i64);
        while !token.is_cancelled() {
            let rows = match self
                .store
                .claim_outbox(&owner, Utc::now() + lease, MAX_WRITES as i64)
                .await
            {
                Ok(r) => r,
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "Claiming outbox rows failed; retrying.");
                    Vec::new()
                }
                Err(e) => return Err(e.into()),
            };
            if rows.is_empty() {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(idle) => continue,
                }
            }
            match self.publish_did(&owner, rows, &token).await {
                Ok(()) => {}
                Err(PublishError::Store(e)) if e.is_transient() => {
                    tracing::warn!(error = %e, "Database busy while publishing; the lease expires and the rows are retried.");
                }
                Err(PublishError::Store(StoreError::LeaseLost)) => {
                    // Another worker holds the DID now (our lease expired
                    // mid-call); its retries cannot duplicate a record.
                    tracing::warn!(
                        "Outbox lease lost while writing back; the new holder finishes these rows."
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let released = self.store.release_outbox(&owner).await?;
        if released > 0 {
            tracing::info!(rows = released, "Released outbox rows on shutdown.");
        }
        Ok(())
    }

    /// Publishes one claim (rows of one DID, in id order).
    async fn publish_did(
        &self,
        owner: &str,
        mut rows: Vec<OutboxRow>,
        token: &CancellationToken,
    ) -> Result<(), PublishError> {
        let did_text = rows[0].did.clone();
        let Some(did) = Did::parse(&did_text) else {
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            self.store
                .finish_outbox(&ids, owner, "failed", "did is not a valid DID")
                .await?;
            return Ok(());
        };
        // Invalid rows fail alone, before any URL or call.
        let mut bad = Vec::new();
        rows.retain(|r| match invalid(r) {
            Some(reason) => {
                bad.push((r.clone(), reason));
                false
            }
            None => true,
        });
        for (r, reason) in bad {
            self.fail(owner, &[&r], "failed", &reason).await?;
        }
        if rows.is_empty() {
            return Ok(());
        }
        let Some(mut live) = self.sessions.get(did.as_str()).await? else {
            self.wait_for_login(
                &did_text,
                owner,
                "no active session for this DID: run parity auth login",
            )
            .await?;
            return Ok(());
        };
        for r in rows.iter_mut() {
            if r.op == "create" && r.rkey.is_none() {
                let rkey = super::tid::next();
                if !self.store.set_outbox_rkey(r.id, owner, &rkey).await? {
                    return Ok(()); // the lease moved on; the new holder goes on
                }
                r.rkey = Some(rkey);
            }
        }
        let host = self
            .client
            .origin(&live.pds)
            .unwrap_or_else(|_| live.pds.clone());
        let (did_scope, host_scope) = (pacing::did_scope(&did_text), pacing::host_scope(&host));
        // Look-ups are calls too: none while the account or host is paused
        // (the first unit below then waits out the pause).
        let paused = self
            .store
            .publish_paused_until(&[&did_scope, &host_scope], Utc::now())
            .await?
            .is_some();
        let absent = if paused {
            HashSet::new()
        } else {
            self.recheck(&did, owner, &live, &mut rows).await?
        };
        if rows.is_empty() {
            return Ok(());
        }
        let units = units(&rows, &absent);
        let mut queue: std::collections::VecDeque<Unit<'_>> = units.into();
        let lease = chrono::Duration::seconds(self.cfg.lease_seconds as i64);
        while let Some(unit) = queue.pop_front() {
            if token.is_cancelled() {
                return Ok(()); // the rest is released by the task
            }
            // Each call starts with a whole lease; a claim of many calls
            // outlives the first one.
            if !self
                .store
                .renew_outbox_lease(&did_text, owner, Utc::now() + lease)
                .await?
            {
                tracing::warn!(did = %did_text, "Outbox lease taken over by another worker; leaving this DID to it.");
                return Ok(());
            }
            // Pacing: a paused account or host waits; a call that does not
            // fit the account's budget is cut to what fits, or waits for
            // the window to end. Neither spends an attempt.
            let now = Utc::now();
            if let Some(until) = self
                .store
                .publish_paused_until(&[&did_scope, &host_scope], now)
                .await?
            {
                let reason = "rate limited by the PDS: this account or its PDS host is paused";
                self.defer(owner, &unit, &queue, reason, until).await?;
                return Ok(());
            }
            let cost = match &unit {
                Unit::Batch(rs) => pacing::cost(rs),
                Unit::Single(r) => pacing::single_points(r),
            };
            let (per_hour, per_day) = (
                i64::from(self.cfg.points_per_hour),
                i64::from(self.cfg.points_per_day),
            );
            match self
                .store
                .charge_write_points(&did_scope, cost, per_hour, per_day, now)
                .await?
            {
                Charge::Granted => {}
                Charge::Exhausted { remaining, until } => {
                    if let Unit::Batch(rs) = &unit {
                        let fit = pacing::fitting(rs, remaining);
                        if fit > 0 && fit < rs.len() {
                            let (now_rows, later) = rs.split_at(fit);
                            queue.push_front(Unit::Batch(later.to_vec()));
                            queue.push_front(Unit::Batch(now_rows.to_vec()));
                            continue;
                        }
                    }
                    let reason = format!(
                        "write budget spent (publish.points_per_hour, publish.points_per_day): waiting until {}",
                        until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    );
                    self.defer(owner, &unit, &queue, &reason, until).await?;
                    tracing::info!(did = %did_text, until = %until.to_rfc3339(), "Write budget spent: pacing this DID.");
                    return Ok(());
                }
            }
            // The lease is renewed while the call is in flight too: a slow
            // PDS must not let another worker claim rows being written.
            let beat = Duration::from_secs(self.cfg.lease_seconds) / 3;
            let (result, charged) = {
                let call = self.call_with_auth(&did, &mut live, &unit);
                tokio::pin!(call);
                loop {
                    tokio::select! {
                        r = &mut call => break r,
                        _ = tokio::time::sleep(beat) => {
                            if let Err(e) = self
                                .store
                                .renew_outbox_lease(&did_text, owner, Utc::now() + lease)
                                .await
                            {
                                tracing::warn!(error = %e, "Renewing the outbox lease failed; the call goes on.");
                            }
                        }
                    }
                }
            };
            if !charged {
                // The PDS refused the call before its rate limiter (or it
                // never arrived): the points charged above were not spent.
                self.store
                    .refund_write_points(&did_scope, cost, now)
                    .await?;
            }
            match result {
                Ok(written) => self.write_back(&did, owner, &written).await?,
                Err(CallError::ExpiredToken | CallError::Auth(_)) => {
                    metrics::counter!(names::PUBLISH_AUTH_FAILURES).increment(1);
                    self.wait_for_login(
                        &did_text,
                        owner,
                        "the session expired or was revoked: run parity auth login",
                    )
                    .await?;
                    return Ok(());
                }
                Err(CallError::InvalidSwap(m)) => {
                    let reason = format!("InvalidSwap: the record is not at swap_cid ({m})");
                    self.fail(owner, &unit.rows(), "conflict", &reason).await?;
                }
                Err(CallError::AccountGone(name)) => {
                    // No write of this account can succeed: the whole claim
                    // fails, without a call per row.
                    let mut rows = unit.rows();
                    for u in &queue {
                        rows.extend(u.rows());
                    }
                    let reason = format!("{name}: the account is taken down or deactivated");
                    self.fail(owner, &rows, "failed", &reason).await?;
                    return Ok(());
                }
                Err(CallError::Refused { name, message }) => match unit {
                    Unit::Batch(rs) if rs.len() > 1 => {
                        // Find the refused write: send them one by one.
                        for r in rs.into_iter().rev() {
                            queue.push_front(Unit::Batch(vec![r]));
                        }
                    }
                    _ => {
                        let reason = format!("{name}: {message}");
                        self.fail(owner, &unit.rows(), "failed", &reason).await?;
                    }
                },
                Err(CallError::RateLimited { wait }) => {
                    // The limit may be the account's or the host's: both
                    // pause, for every process on this database.
                    metrics::counter!(names::PUBLISH_RATE_LIMITED).increment(1);
                    let wait = wait.unwrap_or(RATE_LIMIT_DEFAULT);
                    let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                    self.store.pause_publish(&did_scope, next).await?;
                    self.store.pause_publish(&host_scope, next).await?;
                    self.defer(owner, &unit, &queue, "rate limited by the PDS", next)
                        .await?;
                    tracing::warn!(did = %did_text, host = %host, wait_s = wait.as_secs(), "PDS rate limit: pausing this DID and its PDS host.");
                    return Ok(());
                }
                Err(CallError::Transient(m) | CallError::Unreachable(m)) => {
                    self.retry_or_fail(owner, &unit, &queue, &m).await?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Looks up on the PDS the creates an earlier claim may have written
    /// ([`recheck`]): those it has as parity would write them are published
    /// as they are and leave `rows`; returns the ids of those it does not
    /// have, which may go in a batch again.
    async fn recheck(
        &self,
        did: &Did,
        owner: &str,
        live: &Live,
        rows: &mut Vec<OutboxRow>,
    ) -> Result<HashSet<i64>, PublishError> {
        let doubtful = recheck::doubtful(rows);
        if doubtful.is_empty() {
            return Ok(HashSet::new());
        }
        let found = recheck::recheck(&self.client, &live.pds, did.as_str(), &doubtful).await;
        let absent: HashSet<i64> = found
            .iter()
            .filter(|(_, f)| **f == Found::Absent)
            .map(|(id, _)| *id)
            .collect();
        let same: Vec<(&OutboxRow, &str)> = doubtful
            .iter()
            .filter_map(|r| match found.get(&r.id) {
                Some(Found::Same { cid }) => Some((*r, cid.as_str())),
                _ => None,
            })
            .collect();
        if same.is_empty() {
            return Ok(absent);
        }
        // Written by a commit at or before the account's latest one.
        let Ok(rev) = self.latest_rev(&live.pds, did.as_str()).await else {
            return Ok(absent); // each goes alone; its put decides
        };
        let written: Vec<Written<'_>> = same
            .iter()
            .map(|(row, cid)| Written {
                row,
                cid: Some((*cid).to_owned()),
                rev: rev.clone(),
            })
            .collect();
        self.write_back(did, owner, &written).await?;
        let done: HashSet<i64> = same.iter().map(|(r, _)| r.id).collect();
        tracing::info!(did = %did.as_str(), rows = done.len(), "Found rows an earlier claim had already published.");
        rows.retain(|r| !done.contains(&r.id));
        Ok(absent)
    }

    /// Puts the unit's and the queue's rows back to `pending` until
    /// `until` without spending an attempt (rate limits and pacing).
    async fn defer(
        &self,
        owner: &str,
        unit: &Unit<'_>,
        queue: &std::collections::VecDeque<Unit<'_>>,
        reason: &str,
        until: chrono::DateTime<Utc>,
    ) -> Result<(), PublishError> {
        let rest = rest_ids(unit, queue);
        self.store
            .retry_outbox_later(&rest, owner, reason, until, true)
            .await?;
        Ok(())
    }

    /// Rows whose attempts are spent fail; the rest retry after a backoff.
    async fn retry_or_fail(
        &self,
        owner: &str,
        unit: &Unit<'_>,
        queue: &std::collections::VecDeque<Unit<'_>>,
        error: &str,
    ) -> Result<(), PublishError> {
        let mut rows = unit.rows();
        for u in queue {
            rows.extend(u.rows());
        }
        let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(1);
        let spent: Vec<&OutboxRow> = rows
            .iter()
            .copied()
            .filter(|r| r.attempts >= self.cfg.max_attempts as i64)
            .collect();
        if !spent.is_empty() {
            let reason = format!("gave up after publish.max_attempts: {error}");
            self.fail(owner, &spent, "failed", &reason).await?;
        }
        let again: Vec<i64> = rows
            .iter()
            .filter(|r| r.attempts < self.cfg.max_attempts as i64)
            .map(|r| r.id)
            .collect();
        let next = Utc::now() + chrono::Duration::from_std(backoff(attempts)).unwrap_or_default();
        self.store
            .retry_outbox_later(&again, owner, error, next, false)
            .await?;
        tracing::warn!(
            rows = again.len(),
            error,
            "Publish call failed; retrying later."
        );
        Ok(())
    }

    async fn wait_for_login(
        &self,
        did: &str,
        owner: &str,
        reason: &str,
    ) -> Result<(), PublishError> {
        let moved = self.store.outbox_pending_auth(did, owner, reason).await?;
        for r in &moved {
            metrics::counter!(names::PUBLISH_WRITES, "op" => op_label(&r.op), "outcome" => "pending_auth").increment(1);
            tracing::info!(id = r.id, uri = %row_uri(r), "Publish waits for a login (pending_auth).");
        }
        Ok(())
    }

    async fn fail(
        &self,
        owner: &str,
        rows: &[&OutboxRow],
        status: &str,
        reason: &str,
    ) -> Result<(), PublishError> {
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        self.store
            .finish_outbox(&ids, owner, status, reason)
            .await?;
        for r in rows {
            metrics::counter!(names::PUBLISH_WRITES, "op" => op_label(&r.op), "outcome" => status.to_owned()).increment(1);
            tracing::info!(id = r.id, uri = %row_uri(r), status, error = %reason, "Publish failed.");
        }
        Ok(())
    }

    /// One call, refreshing the session once on an auth error; with
    /// whether the PDS charged the unit's points ([`pacing::charged`]: an
    /// auth failure is refused before the PDS's rate limiter, so only the
    /// call after a refresh can be charged).
    async fn call_with_auth<'a>(
        &self,
        did: &Did,
        live: &mut Live,
        unit: &Unit<'a>,
    ) -> (Result<Vec<Written<'a>>, CallError>, bool) {
        let judged = |r: Result<Vec<Written<'a>>, CallError>| {
            let charged = r.as_ref().err().is_none_or(pacing::charged);
            (r, charged)
        };
        match self.call(did, live, unit).await {
            Err(CallError::ExpiredToken | CallError::Auth(_)) => {}
            other => return judged(other),
        }
        let refused = match self.sessions.refresh(did.as_str(), &live.access).await {
            Ok(Some(fresh)) => {
                *live = fresh;
                return judged(self.call(did, live, unit).await);
            }
            Ok(None) => CallError::Auth("session expired".into()),
            Err(SessionError::Call(e)) => e,
            Err(e) => CallError::Transient(e.to_string()),
        };
        // The write was not sent again: nothing was charged.
        (Err(refused), false)
    }

    async fn call<'a>(
        &self,
        did: &Did,
        live: &Live,
        unit: &Unit<'a>,
    ) -> Result<Vec<Written<'a>>, CallError> {
        let repo = did.as_str();
        match unit {
            Unit::Batch(rows) => {
                let writes: Vec<Value> = rows.iter().map(|r| write_json(r)).collect();
                let v = self
                    .client
                    .post(
                        &live.pds,
                        "com.atproto.repo.applyWrites",
                        Some(&live.access),
                        &json!({"repo": repo, "writes": writes}),
                    )
                    .await?;
                let rev = match v.pointer("/commit/rev").and_then(Value::as_str) {
                    Some(r) => r.to_owned(),
                    None => self.latest_rev(&live.pds, repo).await?,
                };
                let results = v.get("results").and_then(Value::as_array);
                Ok(rows
                    .iter()
                    .enumerate()
                    .map(|(i, r)| Written {
                        row: r,
                        cid: results
                            .and_then(|rs| rs.get(i))
                            .and_then(|x| x.get("cid"))
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        rev: rev.clone(),
                    })
                    .collect())
            }
            Unit::Single(r) => {
                let rkey = r.rkey.as_deref().unwrap_or_default();
                let v = if r.op == "delete" {
                    let mut body = json!({"repo": repo, "collection": r.collection, "rkey": rkey});
                    if let Some(s) = &r.swap_cid {
                        body["swapRecord"] = json!(s);
                    }
                    self.client
                        .post(
                            &live.pds,
                            "com.atproto.repo.deleteRecord",
                            Some(&live.access),
                            &body,
                        )
                        .await?
                } else {
                    let record: Value = serde_json::from_str(r.record.as_deref().unwrap_or("null"))
                        .unwrap_or(Value::Null);
                    // A retried create must not overwrite: swapRecord null.
                    let swap = match (&r.swap_cid, r.op.as_str()) {
                        (Some(s), _) => json!(s),
                        (None, _) => Value::Null,
                    };
                    let body = json!({"repo": repo, "collection": r.collection, "rkey": rkey,
                                      "record": record, "swapRecord": swap});
                    self.client
                        .post(
                            &live.pds,
                            "com.atproto.repo.putRecord",
                            Some(&live.access),
                            &body,
                        )
                        .await?
                };
                let rev = match v.pointer("/commit/rev").and_then(Value::as_str) {
                    Some(rev) => rev.to_owned(),
                    None => self.latest_rev(&live.pds, repo).await?,
                };
                Ok(vec![Written {
                    row: r,
                    cid: v.get("cid").and_then(Value::as_str).map(str::to_owned),
                    rev,
                }])
            }
        }
    }

    /// The account's latest rev, after a write that answered without one.
    /// Its failures are transient ones: the write before it went through
    /// (and was charged).
    async fn latest_rev(&self, pds: &str, did: &str) -> Result<String, CallError> {
        let v = self
            .client
            .get(pds, "com.atproto.sync.getLatestCommit", &[("did", did)])
            .await
            .map_err(|e| match e {
                CallError::RateLimited { wait } => CallError::RateLimited { wait },
                other => CallError::Transient(format!("getLatestCommit: {other}")),
            })?;
        v.get("rev")
            .and_then(Value::as_str)
            .filter(|r| r.len() <= 64)
            .map(str::to_owned)
            .ok_or_else(|| CallError::Transient("getLatestCommit answered without a rev".into()))
    }

    /// Marks the rows published and applies their records locally, in one
    /// transaction; then one log line per row.
    async fn write_back(
        &self,
        did: &Did,
        owner: &str,
        written: &[Written<'_>],
    ) -> Result<(), PublishError> {
        let batch = writeback::batch(&self.registry, did, owner, written);
        let mut tries = 0;
        loop {
            match self.store.commit(&batch).await {
                Ok(_) => break,
                Err(e) if e.is_transient() && tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(backoff(tries)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let now = Utc::now();
        for w in written {
            let outcome = if w.row.op == "delete" {
                "unpublished"
            } else {
                "published"
            };
            metrics::counter!(names::PUBLISH_WRITES, "op" => op_label(&w.row.op), "outcome" => outcome).increment(1);
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&w.row.created_at) {
                let age = (now - t.with_timezone(&Utc))
                    .num_microseconds()
                    .unwrap_or(0) as f64
                    / 1e6;
                metrics::histogram!(names::PUBLISH_LATENCY).record(age.max(0.0));
            }
            if outcome == "published" {
                tracing::info!(id = w.row.id, uri = %w.uri(), cid = w.cid.as_deref().unwrap_or(""), rev = %w.rev, "Published.");
            } else {
                tracing::info!(id = w.row.id, uri = %w.uri(), rev = %w.rev, "Unpublished.");
            }
        }
        Ok(())
    }
}

fn rest_ids(unit: &Unit<'_>, queue: &std::collections::VecDeque<Unit<'_>>) -> Vec<i64> {
    let mut ids: Vec<i64> = unit.rows().iter().map(|r| r.id).collect();
    for u in queue {
        ids.extend(u.rows().iter().map(|r| r.id));
    }
    ids
}

fn op_label(op: &str) -> &'static str {
    match op {
        "create" => "create",
        "update" => "update",
        _ => "delete",
    }
}

fn row_uri(r: &OutboxRow) -> String {
    format!(
        "at://{}/{}/{}",
        r.did,
        r.collection,
        r.rkey.as_deref().unwrap_or("(unassigned)")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, record_len: usize) -> OutboxRow {
        OutboxRow {
            rkey: Some(format!("3k{id:011}")),
            record: Some("x".repeat(record_len)),
            ..OutboxRow::in_flight(id, "create")
        }
    }

    fn sizes(units: &[Unit<'_>]) -> Vec<usize> {
        units.iter().map(|u| u.rows().len()).collect()
    }

    #[test]
    fn batches_stay_under_the_count_and_the_body_size() {
        let small: Vec<OutboxRow> = (0..250).map(|i| row(i, 100)).collect();
        let none = HashSet::new();
        assert_eq!(sizes(&units(&small, &none)), [200, 50]);
        // 3 KB records: 120 KiB holds 38 of them.
        let big: Vec<OutboxRow> = (0..100).map(|i| row(i, 3000)).collect();
        let u = units(&big, &none);
        assert_eq!(sizes(&u), [38, 38, 24]);
        for unit in &u {
            let bytes: usize = unit.rows().iter().map(|r| write_bytes(r)).sum();
            assert!(bytes <= MAX_BATCH_BYTES);
        }
        // A record alone over the limit still goes (the PDS judges it).
        assert_eq!(sizes(&units(&[row(1, 200_000), row(2, 10)], &none)), [1, 1]);
    }
}
