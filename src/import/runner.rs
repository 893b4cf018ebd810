//! Runs `parity import` and `parity resume`: resolve each account, decide
//! its collections, claim each (did, collection) under a lease and import
//! it, DIDs in parallel.
//!
//! Owns: per-DID flow and outcome, lease renewal while a pair runs, taking
//! over pairs whose importer died (expired lease, or a local owner whose
//! process is gone), expanding `*` requests (queued by the stream's resync
//! signal, or left by a DID that failed before its collections were known),
//! and the run summary. Does not own paging (job) or HTTP (xrpc).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use chrono::Utc;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::identity::{Identity, Resolver};
use super::job::{self, Counts, Ctx, JobError};
use super::progress::{DidBar, Progress};
use super::xrpc::XrpcError;
use crate::store::{ImportState, ImportStatus, StatusFilter};

/// The collection name of a "discover every collection" request.
pub const ALL_COLLECTIONS: &str = "*";

/// How one DID ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DidStatus {
    Completed,
    /// Nothing to do: already imported, or another importer has it.
    Skipped(String),
    Failed(String),
    Interrupted,
}

/// One DID's result.
#[derive(Debug, Clone)]
pub struct DidOutcome {
    pub did: String,
    pub counts: Counts,
    pub status: DidStatus,
}

/// The whole run's result.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub records: Counts,
    pub completed: u64,
    pub skipped: u64,
    pub failed: u64,
    pub interrupted: u64,
    /// Input lines that were not a DID or handle (reported and skipped).
    pub invalid_inputs: u64,
}

impl Summary {
    fn add(&mut self, o: &DidOutcome) {
        self.records += o.counts;
        match o.status {
            DidStatus::Completed => self.completed += 1,
            DidStatus::Skipped(_) => self.skipped += 1,
            DidStatus::Failed(_) => self.failed += 1,
            DidStatus::Interrupted => self.interrupted += 1,
        }
    }

    /// Whether the exit code should say something went wrong.
    pub fn is_success(&self) -> bool {
        self.failed == 0 && self.interrupted == 0
    }

    /// The final summary line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "import finished: {} records synced, {} skipped, {} failed; {} DIDs completed, {} skipped, {} failed",
            self.records.synced,
            self.records.skipped,
            self.records.failed,
            self.completed,
            self.skipped,
            self.failed
        );
        if self.interrupted > 0 {
            s.push_str(&format!(", {} interrupted", self.interrupted));
        }
        if self.invalid_inputs > 0 {
            s.push_str(&format!(
                "; {} invalid input lines skipped",
                self.invalid_inputs
            ));
        }
        s
    }
}

/// What to do with each DID.
#[derive(Debug, Clone)]
pub enum Work {
    /// `parity import`: these collections (`None`: every mapped collection
    /// the repo has), re-importing completed ones if `force`.
    Import {
        collections: Option<Vec<String>>,
        force: bool,
    },
    /// `parity resume`: whatever is not completed.
    Resume,
}

/// Shared state of one run.
pub struct Runner {
    pub ctx: Arc<Ctx>,
    pub resolver: Arc<Resolver>,
    pub progress: Progress,
    pub concurrency: usize,
    gauges: Arc<Gauges>,
}

#[derive(Default)]
struct Gauges {
    pending: AtomicI64,
    in_progress: AtomicI64,
    completed: AtomicI64,
    failed: AtomicI64,
}

impl Gauges {
    fn publish(&self) {
        for (status, v) in [
            ("pending", &self.pending),
            ("in_progress", &self.in_progress),
            ("completed", &self.completed),
            ("failed", &self.failed),
        ] {
            metrics::gauge!("parity_import_dids", "status" => status).set(v.load(Relaxed) as f64);
        }
    }
}

#[derive(Deserialize)]
struct DescribeRepo {
    #[serde(default)]
    collections: Vec<String>,
}

impl Runner {
    pub fn new(
        ctx: Arc<Ctx>,
        resolver: Arc<Resolver>,
        progress: Progress,
        concurrency: usize,
    ) -> Runner {
        Runner {
            ctx,
            resolver,
            progress,
            concurrency: concurrency.max(1),
            gauges: Arc::new(Gauges::default()),
        }
    }

    /// Runs `work` for every input (DID or handle), `concurrency` at a time.
    pub async fn run(&self, inputs: Vec<String>, work: Work, token: &CancellationToken) -> Summary {
        self.gauges.pending.store(inputs.len() as i64, Relaxed);
        self.gauges.publish();
        let mut summary = Summary::default();
        let mut results = futures_util::stream::iter(inputs)
            .map(|input| {
                let work = work.clone();
                async move { self.one(&input, &work, token).await }
            })
            .buffer_unordered(self.concurrency);
        while let Some(o) = results.next().await {
            match &o.status {
                DidStatus::Failed(e) => {
                    let line = format!("{}: failed: {e}", o.did);
                    self.progress
                        .println(&crate::telemetry::Escaped(&line).to_string());
                    tracing::warn!(did = ?o.did, error = %e, "import failed");
                }
                DidStatus::Skipped(why) => {
                    tracing::info!(did = ?o.did, why = %why, "import skipped")
                }
                DidStatus::Completed => tracing::info!(
                    did = ?o.did, synced = o.counts.synced, skipped = o.counts.skipped,
                    failed = o.counts.failed, "import completed"
                ),
                DidStatus::Interrupted => {}
            }
            summary.add(&o);
        }
        summary
    }

    async fn one(&self, input: &str, work: &Work, token: &CancellationToken) -> DidOutcome {
        let g = &self.gauges;
        g.pending.fetch_sub(1, Relaxed);
        g.in_progress.fetch_add(1, Relaxed);
        g.publish();
        let bar = self.progress.did(input);
        let out = self.did(input, work, &bar, token).await;
        bar.finish();
        g.in_progress.fetch_sub(1, Relaxed);
        match out.status {
            DidStatus::Completed | DidStatus::Skipped(_) => g.completed.fetch_add(1, Relaxed),
            DidStatus::Failed(_) | DidStatus::Interrupted => g.failed.fetch_add(1, Relaxed),
        };
        g.publish();
        out
    }

    async fn did(
        &self,
        input: &str,
        work: &Work,
        bar: &DidBar,
        token: &CancellationToken,
    ) -> DidOutcome {
        let fail = |did: &str, e: String| DidOutcome {
            did: did.to_owned(),
            counts: Counts::default(),
            status: DidStatus::Failed(e),
        };
        let id = match self.resolver.resolve(input).await {
            Ok(id) => id,
            Err(e) => {
                if input.starts_with("did:") {
                    self.record_failure(input, &e.to_string()).await;
                }
                return fail(input, e.to_string());
            }
        };
        let did = id.did.to_string();
        let store = &self.ctx.store;
        let result = match work {
            Work::Import { collections, force } => {
                let cols = match collections {
                    Some(c) => Ok(c.clone()),
                    None => self.mapped_collections(&id, token).await,
                };
                match cols {
                    Ok(cols) => async {
                        store.enqueue_imports(&did, &cols, *force).await?;
                        store.clear_failed_discovery(&did).await?;
                        Ok(cols)
                    }
                    .await
                    .map_err(|e: crate::store::StoreError| e.to_string()),
                    Err(e) => Err(e),
                }
            }
            Work::Resume => self.expand_requests(&id, token).await,
        };
        let collections = match result {
            Ok(c) => c,
            Err(_) if token.is_cancelled() => {
                return DidOutcome {
                    did,
                    counts: Counts::default(),
                    status: DidStatus::Interrupted,
                };
            }
            Err(e) => {
                self.record_failure(&did, &e).await;
                return fail(&did, e);
            }
        };
        self.run_pairs(&id, &collections, bar, token).await
    }

    /// Every collection of the repo that has a mapper (`describeRepo`).
    async fn mapped_collections(
        &self,
        id: &Identity,
        token: &CancellationToken,
    ) -> Result<Vec<String>, String> {
        let d: DescribeRepo = self
            .ctx
            .xrpc
            .get(
                &id.pds,
                "com.atproto.repo.describeRepo",
                &[("repo", id.did.as_str())],
                token,
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut cols: Vec<String> = d
            .collections
            .into_iter()
            .filter(|c| crate::event::Nsid::parse(c).is_some() && self.ctx.registry.handles(c))
            .collect();
        cols.sort();
        cols.dedup();
        Ok(cols)
    }

    /// For `resume`: turns a pending `*` request into per-collection states
    /// (re-importing every mapped collection), then returns every
    /// collection of the DID that is not completed.
    async fn expand_requests(
        &self,
        id: &Identity,
        token: &CancellationToken,
    ) -> Result<Vec<String>, String> {
        let store = &self.ctx.store;
        let did = id.did.as_str();
        let states = store
            .import_states(Some(did), StatusFilter::Pending, i64::MAX)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(req) = states.iter().find(|s| s.collection == ALL_COLLECTIONS) {
            let lease_until =
                Utc::now() + chrono::Duration::from_std(self.ctx.lease).unwrap_or_default();
            let steal = req.lease_owner.as_deref().filter(|o| owner_is_dead(o));
            if let Some(claimed) = store
                .claim_import(did, ALL_COLLECTIONS, &self.ctx.owner, lease_until, steal)
                .await
                .map_err(|e| e.to_string())?
            {
                let cols = match self.mapped_collections(id, token).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = store
                            .finish_import(claimed.id, &self.ctx.owner, Some(&e))
                            .await;
                        return Err(e);
                    }
                };
                store
                    .enqueue_imports(did, &cols, true)
                    .await
                    .map_err(|e| e.to_string())?;
                let at = claimed.updated_at.clone();
                store
                    .complete_discovery(claimed.id, &self.ctx.owner, did, &at)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let states = store
            .import_states(Some(did), StatusFilter::Pending, i64::MAX)
            .await
            .map_err(|e| e.to_string())?;
        let mut cols: Vec<String> = states
            .into_iter()
            .map(|s| s.collection)
            .filter(|c| c != ALL_COLLECTIONS)
            .collect();
        cols.sort();
        Ok(cols)
    }

    /// Leaves a visible failed `*` state for a DID that failed before its
    /// collections were known, so `import-status` shows it and `resume`
    /// retries it.
    async fn record_failure(&self, did: &str, error: &str) {
        let store = &self.ctx.store;
        let owner = &self.ctx.owner;
        let lease_until =
            Utc::now() + chrono::Duration::from_std(self.ctx.lease).unwrap_or_default();
        let r = async {
            store
                .enqueue_imports(did, &[ALL_COLLECTIONS.to_owned()], false)
                .await?;
            if let Some(s) = store
                .claim_import(did, ALL_COLLECTIONS, owner, lease_until, None)
                .await?
            {
                store.finish_import(s.id, owner, Some(error)).await?;
            }
            Ok::<(), crate::store::StoreError>(())
        };
        if let Err(e) = r.await {
            tracing::warn!(did = ?did, error = %e, "cannot record the import failure");
        }
    }

    async fn run_pairs(
        &self,
        id: &Identity,
        collections: &[String],
        bar: &DidBar,
        token: &CancellationToken,
    ) -> DidOutcome {
        let did = id.did.to_string();
        let mut counts = Counts::default();
        let mut ran = 0usize;
        let mut skipped: Vec<String> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let existing: BTreeMap<String, ImportState> = self
            .ctx
            .store
            .import_states(Some(&did), StatusFilter::All, i64::MAX)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.collection.clone(), s))
            .collect();
        for c in collections {
            if token.is_cancelled() {
                return DidOutcome {
                    did,
                    counts,
                    status: DidStatus::Interrupted,
                };
            }
            let steal = existing
                .get(c)
                .and_then(|s| s.lease_owner.as_deref())
                .filter(|o| owner_is_dead(o));
            match self.pair(id, c, steal, bar, token).await {
                PairResult::Done(n) => {
                    counts += n;
                    ran += 1;
                }
                PairResult::NotClaimed(why) => skipped.push(format!("{c}: {why}")),
                PairResult::Failed(n, e) => {
                    counts += n;
                    failures.push(format!("{c}: {e}"));
                }
                PairResult::Interrupted(n) => {
                    counts += n;
                    return DidOutcome {
                        did,
                        counts,
                        status: DidStatus::Interrupted,
                    };
                }
            }
        }
        let status = if !failures.is_empty() {
            DidStatus::Failed(failures.join("; "))
        } else if ran == 0 && !skipped.is_empty() {
            DidStatus::Skipped(skipped.join("; "))
        } else {
            DidStatus::Completed
        };
        DidOutcome {
            did,
            counts,
            status,
        }
    }

    async fn pair(
        &self,
        id: &Identity,
        collection: &str,
        steal: Option<&str>,
        bar: &DidBar,
        token: &CancellationToken,
    ) -> PairResult {
        let ctx = &self.ctx;
        let did = id.did.as_str();
        let lease_until = Utc::now() + chrono::Duration::from_std(ctx.lease).unwrap_or_default();
        let state = match ctx
            .store
            .claim_import(did, collection, &ctx.owner, lease_until, steal)
            .await
        {
            Ok(Some(s)) => s,
            Ok(None) => {
                let why = match ctx
                    .store
                    .import_states(Some(did), StatusFilter::All, i64::MAX)
                    .await
                {
                    Ok(v)
                        if v.iter().any(|s| {
                            s.collection == collection && s.status == ImportStatus::Completed
                        }) =>
                    {
                        "already imported (use --force to import again)"
                    }
                    _ => "being imported by another process",
                };
                return PairResult::NotClaimed(why.into());
            }
            Err(e) => return PairResult::Failed(Counts::default(), e.to_string()),
        };
        let pair_bar = bar.pair(collection);
        let lease_token = token.child_token();
        let renew = renew_lease(ctx, state.id, lease_token.clone());
        let result = tokio::select! {
            r = job::run(ctx, &id.pds, &state, &pair_bar, &lease_token) => r,
            () = renew => Err(JobError::LeaseLost),
        };
        lease_token.cancel();
        match result {
            Ok(n) => match ctx.store.finish_import(state.id, &ctx.owner, None).await {
                Ok(true) => PairResult::Done(n),
                Ok(false) => {
                    PairResult::NotClaimed("the lease was taken over by another importer".into())
                }
                Err(e) => PairResult::Failed(n, e.to_string()),
            },
            Err(JobError::Cancelled) | Err(JobError::Remote(XrpcError::Cancelled))
                if token.is_cancelled() =>
            {
                let _ = ctx.store.release_import(state.id, &ctx.owner).await;
                PairResult::Interrupted(Counts::default())
            }
            Err(JobError::LeaseLost) => {
                PairResult::NotClaimed("the lease was taken over by another importer".into())
            }
            Err(e) => {
                let msg = e.to_string();
                if let Err(se) = ctx
                    .store
                    .finish_import(state.id, &ctx.owner, Some(&msg))
                    .await
                {
                    tracing::warn!(error = %se, "cannot record the import failure");
                }
                PairResult::Failed(Counts::default(), msg)
            }
        }
    }
}

enum PairResult {
    Done(Counts),
    NotClaimed(String),
    Failed(Counts, String),
    Interrupted(Counts),
}

/// Renews the lease every third of its length; returns (and cancels the
/// run) only when the lease is no longer ours.
async fn renew_lease(ctx: &Ctx, id: i64, run: CancellationToken) {
    let every = ctx.lease / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = run.cancelled() => return std::future::pending().await,
        }
        let until = Utc::now() + chrono::Duration::from_std(ctx.lease).unwrap_or_default();
        match ctx.store.renew_import(id, &ctx.owner, until).await {
            Ok(true) => {}
            Ok(false) => {
                run.cancel();
                return;
            }
            // A database hiccup: the page commits renew it too; try again.
            Err(e) => tracing::warn!(error = %e, "cannot renew the import lease"),
        }
    }
}

/// `host:pid:nonce` — unique per process, and checkable on this host.
pub fn new_owner() -> String {
    format!(
        "{}:{}:{:08x}",
        this_host(),
        std::process::id(),
        rand::random::<u32>()
    )
}

/// This machine's name, read once. When it cannot be read (a sandbox
/// hiding `/proc/sys`, no `/etc/hostname`) a random name stands in, so no
/// other process's lease ever looks like ours: two sandboxed machines must
/// not both call themselves `localhost` and take each other's leases.
fn this_host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|h| h.trim().replace(':', "_"))
            .find(|h| !h.is_empty() && h != "localhost")
            .unwrap_or_else(|| format!("unnamed-{:016x}", rand::random::<u64>()))
    })
}

/// Whether a lease owner is a process of this host that no longer runs
/// (killed importer): its pairs can be taken over without waiting for the
/// lease to expire. Anything doubtful counts as alive; the lease then
/// simply expires.
pub fn owner_is_dead(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(_nonce), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    host == this_host()
        && pid.parse::<u32>().is_ok_and(|p| {
            p != std::process::id()
                && std::path::Path::new("/proc/self").exists()
                && !std::path::Path::new(&format!("/proc/{p}")).exists()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_name_this_host_and_process() {
        let me = new_owner();
        assert!(!owner_is_dead(&me), "{me}");
        let host = me.rsplitn(3, ':').nth(2).unwrap();
        // pid_max is at most 2^22: this pid cannot exist.
        assert!(owner_is_dead(&format!("{host}:99999999:00000000")));
        assert!(!owner_is_dead("other-host:99999999:00000000"));
        assert!(!owner_is_dead("garbage"));
    }
}
