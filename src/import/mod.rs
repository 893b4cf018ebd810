//! Backfill: `parity import`, `parity import-status` and `parity resume`.
//!
//! The stream only carries what happens from now on; import fetches the
//! records that already exist, from each account's PDS
//! (`com.atproto.repo.listRecords`), through the same mappers, batches and
//! convergence rules as `parity consume`.
//!
//! Layout, from the run down to one page: [`runner`] (inputs in
//! parallel, gauges, the run's totals), [`account`] (one DID: resolve,
//! decide its collections, run them), [`discover`] (which collections:
//! `describeRepo`, `*` requests), [`pair`] (claim one (did, collection),
//! run it under its lease, record how it ended), [`job`] (one pair's pages
//! with their cursor), [`page`] (a listed page → its batch, through the
//! mappers). Beside them: [`lease`] (owner names, expiry, renewal),
//! [`summary`] (outcomes and the final line), [`failure`] (why a DID or
//! pair failed), [`config`] (the `[import]` and `[identity]` sections),
//! [`identity`] (DID/handle → PDS, cached), [`xrpc`] (paced, retrying
//! HTTP), [`progress`] (bars or log lines), [`status`] (the status report).
//! State lives in `parity_import_states` (see `store::imports`).
//!
//! Inputs are strings only up to the resolver (DIDs and handles from the
//! command line or the state table); from there on an account is a
//! [`Did`](crate::event::Did) and a collection an
//! [`Nsid`](crate::event::Nsid), and errors stay typed until they are
//! written to a state row, printed or logged.

pub mod account;
pub mod config;
pub mod discover;
pub mod failure;
pub mod identity;
pub mod job;
pub mod lease;
pub mod page;
pub mod pair;
pub mod progress;
pub mod runner;
pub mod status;
pub mod summary;
pub mod xrpc;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use config::{IdentityConfig, ImportConfig};
pub use summary::{DidStatus, Summary};

use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::event::Nsid;
use crate::store::Store;

/// `parity import` arguments, after the command line.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// DIDs and handles.
    pub targets: Vec<String>,
    /// A file with one DID or handle per line.
    pub file: Option<PathBuf>,
    /// Only these collections (each must have a mapper).
    pub collections: Vec<String>,
    pub progress: bool,
    pub concurrency: Option<usize>,
    pub force: bool,
}

/// One input that is not a DID or handle, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidInput(pub String);

/// Reads the targets: arguments first, then the file (blank lines and `#`
/// comments ignored). Invalid entries are returned apart, each naming its
/// line, so the caller reports them and goes on with the rest.
pub fn read_targets(
    args: &[String],
    file: Option<&Path>,
) -> Result<(Vec<String>, Vec<InvalidInput>), ConfigError> {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let mut take = |raw: &str, origin: String| {
        let t = raw.trim();
        if valid_target(t) {
            if !ok.iter().any(|o: &String| o == t) {
                ok.push(t.to_owned());
            }
        } else {
            bad.push(InvalidInput(format!(
                "{origin}: {:?} is not a DID (did:plc:…, did:web:…) or a handle; skipped",
                t.chars().take(100).collect::<String>()
            )));
        }
    };
    for a in args {
        take(a, "argument".into());
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read --file {}: {e}", path.display())))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if !line.is_empty() {
                take(line, format!("{} line {}", path.display(), i + 1));
            }
        }
    }
    Ok((ok, bad))
}

fn valid_target(t: &str) -> bool {
    if t.starts_with("did:") {
        return crate::event::Did::parse(t).is_some();
    }
    identity::is_handle(&t.trim_start_matches('@').to_ascii_lowercase())
}

/// The metrics and health listener of an import run (`metrics.addr`).
/// The recorder is installed before any import counter is touched.
struct Ops {
    health: Arc<crate::ops::Health>,
    server: Option<crate::ops::Server>,
    token: CancellationToken,
}

impl Ops {
    async fn start(cfg: &Config) -> Result<Ops, Error> {
        let addr = cfg.metrics.listen_addr().map_err(ConfigError)?;
        let health = Arc::new(crate::ops::Health::new(Duration::from_secs(
            cfg.health.max_stale,
        )));
        let token = CancellationToken::new();
        let server = match addr {
            Some(a) => Some(crate::ops::serve(a, health.clone(), token.clone()).await?),
            None => None,
        };
        Ok(Ops {
            health,
            server,
            token,
        })
    }

    async fn stop(self) {
        self.token.cancel();
        if let Some(s) = self.server {
            s.close().await;
        }
    }
}

/// The plain progress line's interval (`log.progress_interval_seconds`).
fn log_every(cfg: &Config) -> Duration {
    match cfg.log.progress_interval_seconds {
        0 => progress::LOG_EVERY,
        s => Duration::from_secs(s),
    }
}

/// Connections an import uses on PostgreSQL: each running DID commits its
/// own pages, so the pool grows with `concurrency` (measured: at 400
/// requests/s the default 4 connections held the import to 31 % of the rate,
/// 16 let it reach 81 %; see BENCHMARKS.md). SQLite has one writer anyway.
const MAX_IMPORT_CONNECTIONS: u32 = 16;

/// Connects, migrates and prepares the mapped tables.
async fn open(cfg: &Config, concurrency: usize) -> Result<(Store, crate::mapper::Registry), Error> {
    let registry = crate::pipeline::build_registry(cfg, &[])?;
    let mut db = cfg.database.clone();
    if db.url.starts_with("postgres") {
        let wanted = (concurrency as u32).clamp(1, MAX_IMPORT_CONNECTIONS);
        db.max_connections = db.max_connections.max(wanted);
    }
    let mut store = Store::connect(&db).await?;
    store.migrate().await?;
    store
        .prepare(registry.tables(), &cfg.purge_statuses()?)
        .await?;
    Ok((store, registry))
}

/// Starts the metrics listener, then opens the database; ready once
/// migrated.
async fn start(cfg: &Config, concurrency: Option<usize>) -> Result<Session, Error> {
    let ops = Ops::start(cfg).await?;
    let (store, registry) = open(cfg, concurrency.unwrap_or(cfg.import.concurrency)).await?;
    ops.health.mark_ready();
    Ok(Session {
        store,
        registry,
        ops,
    })
}

/// What one import or resume run holds open.
struct Session {
    store: Store,
    registry: crate::mapper::Registry,
    ops: Ops,
}

/// Runs `work` for `inputs`, then closes everything the session opened.
async fn run_all(
    cfg: &Config,
    s: Session,
    progress: progress::Progress,
    inputs: Vec<String>,
    work: runner::Work,
    concurrency: Option<usize>,
    token: &CancellationToken,
) -> Result<Summary, Error> {
    let r = runner(
        cfg,
        s.store.clone(),
        s.registry,
        progress.clone(),
        concurrency,
        s.ops.health.clone(),
    )?;
    let logger = progress.spawn_logger(token.child_token());
    let summary = r.run(inputs, work, token).await;
    if let Some(l) = logger {
        l.abort();
    }
    progress.finish();
    s.store.close().await;
    s.ops.stop().await;
    Ok(summary)
}

fn runner(
    cfg: &Config,
    store: Store,
    registry: crate::mapper::Registry,
    progress: progress::Progress,
    concurrency: Option<usize>,
    health: Arc<crate::ops::Health>,
) -> Result<runner::Runner, Error> {
    let xrpc = xrpc::Xrpc::new(&cfg.import).map_err(ConfigError)?;
    let resolver =
        identity::Resolver::new(&cfg.identity, Some(store.clone())).map_err(ConfigError)?;
    let ctx = job::Ctx {
        store,
        xrpc: Arc::new(xrpc),
        registry: Arc::new(registry),
        lease: lease::Lease::new(Duration::from_secs(cfg.import.lease_seconds)),
        page_size: cfg.import.page_size,
        page_delay: Duration::from_millis(cfg.import.page_delay),
        health,
    };
    Ok(runner::Runner::new(
        Arc::new(ctx),
        Arc::new(resolver),
        progress,
        concurrency.unwrap_or(cfg.import.concurrency),
    ))
}

/// `parity import`.
pub async fn import(
    cfg: &Config,
    opts: ImportOptions,
    token: CancellationToken,
) -> Result<Summary, Error> {
    let (targets, invalid) = read_targets(&opts.targets, opts.file.as_deref())?;
    if targets.is_empty() && invalid.is_empty() {
        return Err(
            ConfigError("nothing to import: give DIDs or handles, or --file FILE".into()).into(),
        );
    }
    if opts.concurrency == Some(0) {
        return Err(ConfigError("--concurrency must be at least 1".into()).into());
    }
    let session = start(cfg, opts.concurrency).await?;
    let collections = if opts.collections.is_empty() {
        None
    } else {
        let mut out = Vec::new();
        for c in &opts.collections {
            let Some(nsid) = Nsid::parse(c) else {
                return Err(ConfigError(format!(
                    "--collection {c:?} is not an NSID (e.g. app.bsky.feed.post)"
                ))
                .into());
            };
            if !session.registry.handles(c) {
                return Err(ConfigError(format!(
                    "--collection {c}: no mapper handles this collection; enable a built-in, declarative or generic mapper for it (see [mappers])"
                ))
                .into());
            }
            out.push(nsid);
        }
        Some(out)
    };
    let progress = progress::Progress::new(opts.progress, targets.len() as u64, log_every(cfg));
    for bad in &invalid {
        progress.println(&bad.0);
    }
    let mut summary = run_all(
        cfg,
        session,
        progress,
        targets,
        runner::Work::Import {
            collections,
            force: opts.force,
        },
        opts.concurrency,
        &token,
    )
    .await?;
    summary.invalid_inputs = invalid.len() as u64;
    Ok(summary)
}

/// `parity resume [DID]`: every pending, failed or interrupted import.
pub async fn resume(
    cfg: &Config,
    did: Option<String>,
    show_progress: bool,
    concurrency: Option<usize>,
    token: CancellationToken,
) -> Result<Summary, Error> {
    if let Some(d) = &did
        && crate::event::Did::parse(d).is_none()
    {
        return Err(ConfigError(format!("{d:?} is not a DID (did:plc:… or did:web:…)")).into());
    }
    let session = start(cfg, concurrency).await?;
    let rows = session.store.resumable_imports(did.as_deref()).await?;
    let mut seen = std::collections::HashSet::new();
    let dids: Vec<String> = rows
        .into_iter()
        .map(|s| s.did)
        .filter(|d| seen.insert(d.clone()))
        .collect();
    let progress = progress::Progress::new(show_progress, dids.len() as u64, log_every(cfg));
    run_all(
        cfg,
        session,
        progress,
        dids,
        runner::Work::Resume,
        concurrency,
        &token,
    )
    .await
}

/// `parity import-status`.
pub async fn import_status(
    cfg: &Config,
    did: Option<&str>,
    filter: crate::store::StatusFilter,
    json: bool,
) -> Result<String, Error> {
    let store = Store::connect(&cfg.database).await?;
    store.migrate().await?;
    let out = status::report(&store, did, filter, json).await?;
    store.close().await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_skip_comments_and_name_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("dids.txt");
        std::fs::write(
            &f,
            "# accounts\ndid:plc:ewvi7nxzyoun6zhxrhs64oiz\n\n  alice.test  # a handle\nnot a did\ndid:plc:ewvi7nxzyoun6zhxrhs64oiz\n",
        )
        .unwrap();
        let (ok, bad) = read_targets(&["@Bob.Example.com".into()], Some(&f)).unwrap();
        assert_eq!(
            ok,
            vec![
                "@Bob.Example.com",
                "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
                "alice.test"
            ]
        );
        assert_eq!(bad.len(), 1);
        assert!(bad[0].0.contains("line 5"), "{:?}", bad[0]);
        assert!(read_targets(&[], Some(Path::new("/nonexistent/x"))).is_err());
    }
}
