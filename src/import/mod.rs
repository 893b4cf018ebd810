//! Backfill: `parity import`, `parity import-status` and `parity resume`.
//!
//! The stream only carries what happens from now on; import fetches the
//! records that already exist, from each account's PDS
//! (`com.atproto.repo.listRecords`), through the same mappers, batches and
//! convergence rules as `parity consume`.
//!
//! Entry points: [`import`], [`resume`] and [`import_status`], called by
//! `cmd::import`, `cmd::resume` and `cmd::import_status` with [`Settings`]
//! (the sections and runtime types built from the config) and the run's
//! options ([`ImportOptions`], [`ResumeOptions`], [`StatusOptions`]).
//! Run-level failures are [`ImportError`]s; a DID's or collection's failure
//! is counted in the [`Summary`].
//!
//! Layout, from the run down to one page: [`runner`] (inputs in
//! parallel, gauges, the run's totals), [`account`] (one DID: resolve,
//! decide its collections, run them), [`discover`] (which collections:
//! `describeRepo`, `*` requests), [`pair`] (claim one (did, collection),
//! run it under its lease, record how it ended), [`job`] (one pair's pages
//! with their cursor), [`page`] (a listed page → its batch, through the
//! mappers); for whole-repo imports (`import.method`), [`snapshot`] (one
//! verified getRepo per DID) and [`repo_job`] (a collection's pages from
//! it). Beside them: [`lease`] (owner names, expiry, renewal),
//! [`summary`] (outcomes and the final line), [`failure`] (why a DID or
//! pair failed), [`config`] (the `[import]` and `[identity]` sections),
//! [`identity`] (DID/handle → PDS, cached), [`xrpc`] (paced, retrying
//! HTTP), [`progress`] (bars or log lines), [`status`] (the status report).
//! `import --all` ([`all`]) feeds the same per-DID flow from a relay:
//! [`listing`] pages through it ([`relay`] reads one page) into a queue of
//! DIDs that [`all`] drains.
//! State lives in `parity_import_states` (see `store::imports`).
//!
//! Inputs are strings only up to the resolver (DIDs and handles from the
//! command line or the state table); from there on an account is a
//! [`Did`](crate::event::Did) and a collection an
//! [`Nsid`](crate::event::Nsid), and errors stay typed until they are
//! written to a state row, printed or logged.

pub mod account;
pub mod all;
pub mod auto_resync;
pub mod config;
pub mod discover;
mod error;
pub mod failure;
pub mod fresh;
pub mod identity;
pub mod job;
pub mod keys;
pub mod lease;
pub mod listing;
mod options;
pub mod page;
pub mod pair;
pub mod progress;
pub mod relay;
pub mod repo_job;
pub mod runner;
mod slots;
pub mod snapshot;
pub mod status;
pub mod status_all;
pub mod summary;
pub mod xrpc;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use all::import_all;
pub use config::{IdentityConfig, ImportConfig, ImportMethod};
pub use error::ImportError;
pub use options::{ImportOptions, ResumeOptions, StatusOptions};
pub use summary::{DidStatus, Summary};

use crate::batch::PurgePolicy;
use crate::event::Nsid;
use crate::mapper::Registry;
use crate::obs::Obs;
use crate::store::{ChangeLog, DatabaseConfig, StatusFilter, Store};

/// What an import or resume run takes from the configuration, built from
/// it by `cmd::import` and `cmd::resume`.
pub struct Settings {
    pub import: ImportConfig,
    pub identity: IdentityConfig,
    pub database: DatabaseConfig,
    /// The mappers records go through (`Registry::from_config`).
    pub registry: Registry,
    /// What account statuses purge (`PurgePolicy::from_config`).
    pub purge: PurgePolicy,
    /// Where `/metrics`, `/health` and `/ready` listen, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// `health.max_stale`.
    pub health_max_stale: Duration,
    /// `log.progress_interval_seconds` (0: the default interval).
    pub progress_interval_seconds: u64,
    /// What imported pages append to the change log (`[feed]`).
    pub change_log: ChangeLog,
}

/// One input that is not a DID or handle, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidInput(pub String);

/// Reads the targets: arguments first, then the file (blank lines and `#`
/// comments ignored), keeping the first of repeated entries. Invalid
/// entries are returned apart, each naming its line, so the caller reports
/// them and goes on with the rest. Linear in the input: the file is read a
/// line at a time and repeats are found by hashing.
pub fn read_targets(
    args: &[String],
    file: Option<&Path>,
) -> Result<(Vec<String>, Vec<InvalidInput>), ImportError> {
    let mut ok = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut bad = Vec::new();
    let mut take = |raw: &str, origin: &dyn Fn() -> String| {
        let t = raw.trim();
        if valid_target(t) {
            if !seen.contains(t) {
                seen.insert(t.to_owned());
                ok.push(t.to_owned());
            }
        } else {
            bad.push(InvalidInput(format!(
                "{}: {:?} is not a DID (did:plc:…, did:web:…) or a handle; skipped",
                origin(),
                t.chars().take(100).collect::<String>()
            )));
        }
    };
    for a in args {
        take(a, &|| "argument".into());
    }
    if let Some(path) = file {
        use std::io::BufRead;
        let cannot = |e: std::io::Error| {
            ImportError::Invalid(format!("cannot read --file {}: {e}", path.display()))
        };
        let f = std::fs::File::open(path).map_err(cannot)?;
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(cannot)?;
            let line = line.split('#').next().unwrap_or("").trim();
            if !line.is_empty() {
                take(line, &|| format!("{} line {}", path.display(), i + 1));
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
    obs: Arc<Obs>,
    server: Option<crate::obs::Server>,
    token: CancellationToken,
}

impl Ops {
    async fn start(s: &Settings) -> Result<Ops, ImportError> {
        if s.metrics_addr.is_some() {
            crate::obs::install();
        }
        let obs = Arc::new(Obs::new(s.health_max_stale));
        let token = CancellationToken::new();
        let server = match s.metrics_addr {
            Some(a) => Some(crate::obs::serve(a, obs.clone(), token.clone()).await?),
            None => None,
        };
        Ok(Ops { obs, server, token })
    }

    async fn stop(self) {
        self.token.cancel();
        if let Some(s) = self.server {
            s.close().await;
        }
    }
}

/// The plain progress line's interval (`log.progress_interval_seconds`).
fn log_every(s: &Settings) -> Duration {
    match s.progress_interval_seconds {
        0 => progress::LOG_EVERY,
        secs => Duration::from_secs(secs),
    }
}

/// Connections an import uses on PostgreSQL: each running DID commits its
/// own pages, so the pool grows with `concurrency` (measured: at 400
/// requests/s the default 4 connections held the import to 31 % of the rate,
/// 16 let it reach 81 %; see BENCHMARKS.md). SQLite has one writer anyway.
/// Two per slot were tried (session 26): +40 % with the server 1 ms away,
/// about 10 % less on a local server, where more backends contend for the
/// same cores; raising `--concurrency` gives the remote case its pool.
const MAX_IMPORT_CONNECTIONS: u32 = 16;

/// The database settings an import connects with: on PostgreSQL, a pool
/// that grows with `concurrency` (never below the configured size), and
/// claims, states, identities and queue entries committed without waiting
/// for the disk, as the pages already are (closing the store waits once
/// for all of them; BENCHMARKS.md, issue 15 b, session 25). SQLite's are
/// the configured ones.
fn import_database(configured: &DatabaseConfig, concurrency: usize) -> DatabaseConfig {
    let mut db = configured.clone();
    if db.url.starts_with("postgres") {
        let wanted = (concurrency as u32).clamp(1, MAX_IMPORT_CONNECTIONS);
        db.max_connections = db.max_connections.max(wanted);
        db.async_commit = true;
    }
    db
}

/// Connects, migrates and prepares the mapped tables.
async fn open(s: &Settings, concurrency: usize) -> Result<Store, ImportError> {
    let db = import_database(&s.database, concurrency);
    let mut store = Store::connect(&db).await?;
    store.migrate().await?;
    store
        .prepare(s.registry.tables(), &s.purge.statuses)
        .await?;
    store.set_change_log(s.change_log.clone());
    Ok(store)
}

/// Starts the metrics listener, then opens the database; ready once
/// migrated.
async fn start(s: Settings, concurrency: Option<usize>) -> Result<Session, ImportError> {
    let ops = Ops::start(&s).await?;
    let store = open(&s, concurrency.unwrap_or(s.import.concurrency)).await?;
    ops.obs.mark_ready();
    Ok(Session {
        store,
        ops,
        log_every: log_every(&s),
        import: s.import,
        identity: s.identity,
        registry: s.registry,
    })
}

/// What one import or resume run holds open.
struct Session {
    store: Store,
    registry: Registry,
    ops: Ops,
    import: ImportConfig,
    identity: IdentityConfig,
    log_every: Duration,
}

/// Runs `work` for `inputs` (`total` of them), then closes everything the
/// session opened.
async fn run_all(
    s: Session,
    progress: progress::Progress,
    inputs: impl futures_util::Stream<Item = String>,
    total: u64,
    work: runner::Work,
    concurrency: Option<usize>,
    token: &CancellationToken,
) -> Result<Summary, ImportError> {
    let r = runner(
        &s.import,
        &s.identity,
        s.store.clone(),
        s.registry,
        progress.clone(),
        concurrency,
        s.ops.obs.clone(),
    )?;
    let logger = progress.spawn_logger(token.child_token());
    let summary = r.run(inputs, total, work, token).await;
    if let Some(l) = logger {
        l.abort();
    }
    progress.finish();
    s.store.close().await;
    s.ops.stop().await;
    Ok(summary)
}

fn runner(
    import: &ImportConfig,
    identity: &IdentityConfig,
    store: Store,
    registry: Registry,
    progress: progress::Progress,
    concurrency: Option<usize>,
    obs: Arc<Obs>,
) -> Result<runner::Runner, ImportError> {
    let policy = crate::net::Policy {
        allow_private: identity.allow_private_addresses,
    };
    let xrpc = xrpc::Xrpc::new(import, policy).map_err(ImportError::Invalid)?;
    let resolver =
        identity::Resolver::new(identity, Some(store.clone())).map_err(ImportError::Invalid)?;
    let ctx = job::Ctx {
        store,
        xrpc: Arc::new(xrpc),
        registry: Arc::new(registry),
        lease: lease::Lease::new(Duration::from_secs(import.lease_seconds)),
        page_size: import.page_size,
        getrepo_page_size: import.getrepo_page_size,
        page_delay: Duration::from_millis(import.page_delay),
        obs,
        method: import.method,
        max_repo_bytes: import.max_repo_bytes,
        no_getrepo: Default::default(),
    };
    Ok(runner::Runner::new(
        Arc::new(ctx),
        Arc::new(resolver),
        progress,
        concurrency.unwrap_or(import.concurrency),
    ))
}

/// `parity import`: the targets of `opts` (arguments and `--file`), each
/// DID's collections through `settings.registry`.
pub async fn import(
    settings: Settings,
    opts: ImportOptions,
    token: CancellationToken,
) -> Result<Summary, ImportError> {
    let (targets, invalid) = read_targets(&opts.targets, opts.file.as_deref())?;
    if targets.is_empty() && invalid.is_empty() {
        return Err(ImportError::Invalid(
            "nothing to import: give DIDs or handles, or --file FILE".into(),
        ));
    }
    if opts.concurrency == Some(0) {
        return Err(ImportError::Invalid(
            "--concurrency must be at least 1".into(),
        ));
    }
    let mut session = start(settings, opts.concurrency).await?;
    if let Some(m) = opts.method {
        session.import.method = m;
    }
    let collections = parse_collections(&session.registry, &opts.collections)?;
    let total = targets.len() as u64;
    let progress = progress::Progress::new(opts.progress, total, session.log_every);
    for bad in &invalid {
        progress.println(&bad.0);
    }
    let mut summary = run_all(
        session,
        progress,
        futures_util::stream::iter(targets),
        total,
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

/// The `--collection` values as NSIDs (`None`: none given, every mapped
/// collection); an invalid or unmapped one is an error naming it.
fn parse_collections(
    registry: &Registry,
    given: &[String],
) -> Result<Option<Vec<Nsid>>, ImportError> {
    if given.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for c in given {
        let Some(nsid) = Nsid::parse(c) else {
            return Err(ImportError::Invalid(format!(
                "--collection {c:?} is not an NSID (e.g. app.bsky.feed.post)"
            )));
        };
        if !registry.handles(c) {
            return Err(ImportError::Invalid(format!(
                "--collection {c}: no mapper handles this collection; enable a built-in, declarative or generic mapper for it (see [mappers])"
            )));
        }
        out.push(nsid);
    }
    Ok(Some(out))
}

/// `parity resume [DID]`: every pending, failed or interrupted import.
pub async fn resume(
    settings: Settings,
    opts: ResumeOptions,
    token: CancellationToken,
) -> Result<Summary, ImportError> {
    if let Some(d) = &opts.did
        && crate::event::Did::parse(d).is_none()
    {
        return Err(ImportError::Invalid(format!(
            "{d:?} is not a DID (did:plc:… or did:web:…)"
        )));
    }
    let session = start(settings, opts.concurrency).await?;
    let total = session
        .store
        .count_resumable_dids(opts.did.as_deref())
        .await?
        .max(0) as u64;
    let progress = progress::Progress::new(opts.progress, total, session.log_every);
    let failed = Arc::new(std::sync::Mutex::new(None));
    let dids = pending_dids(session.store.clone(), opts.did, failed.clone());
    let summary = run_all(
        session,
        progress,
        dids,
        total,
        runner::Work::Resume,
        opts.concurrency,
        &token,
    )
    .await?;
    match failed.lock().expect("resume error slot").take() {
        Some(e) => Err(e.into()),
        None => Ok(summary),
    }
}

/// DIDs `resume` reads from the store per page.
const RESUME_PAGE: i64 = 500;

/// The DIDs with unfinished states, read [`RESUME_PAGE`] at a time as the
/// runner asks for them (never all at once). A store error ends the stream
/// and is left in `failed` for the caller.
fn pending_dids(
    store: Store,
    did: Option<String>,
    failed: Arc<std::sync::Mutex<Option<crate::store::StoreError>>>,
) -> impl futures_util::Stream<Item = String> {
    use futures_util::StreamExt;
    let pages = futures_util::stream::unfold(Some(None::<String>), move |after| {
        let store = store.clone();
        let did = did.clone();
        let failed = failed.clone();
        async move {
            let after = after?;
            match store
                .resumable_dids(did.as_deref(), after.as_deref(), RESUME_PAGE)
                .await
            {
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let next = (page.len() as i64 == RESUME_PAGE).then(|| page.last().cloned());
                    Some((futures_util::stream::iter(page), next.flatten().map(Some)))
                }
                Err(e) => {
                    *failed.lock().expect("resume error slot") = Some(e);
                    None
                }
            }
        }
    });
    pages.flatten()
}

/// `parity import-status`: the report, as text or JSON lines.
pub async fn import_status(
    database: &DatabaseConfig,
    did: Option<&str>,
    filter: StatusFilter,
    json: bool,
) -> Result<String, ImportError> {
    let store = Store::connect(database).await?;
    store.migrate().await?;
    let out = status::report(&store, did, filter, json).await?;
    store.close().await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_commits_asynchronously_on_postgresql_only() {
        let pg = DatabaseConfig {
            url: "postgres://u@h/db".into(),
            max_connections: 4,
            ..Default::default()
        };
        let db = import_database(&pg, 8);
        assert!(db.async_commit);
        assert_eq!(db.max_connections, 8);
        // Never below the configured size.
        assert_eq!(import_database(&pg, 1).max_connections, 4);
        let big = DatabaseConfig {
            max_connections: 50,
            ..pg.clone()
        };
        assert_eq!(import_database(&big, 8).max_connections, 50);
        assert_eq!(
            import_database(&pg, 100).max_connections,
            MAX_IMPORT_CONNECTIONS
        );
        let lite = DatabaseConfig::default();
        assert!(lite.url.starts_with("sqlite:"));
        assert_eq!(import_database(&lite, 8), lite);
    }

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

    /// 1,000,000 lines (every DID twice, plus comments): the quadratic
    /// de-duplication took hours here; hashing takes seconds even in a
    /// debug build. The figure is in BENCHMARKS.md.
    #[test]
    fn a_million_line_file_is_deduplicated_in_linear_time() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("dids.txt");
        let mut text = String::with_capacity(40 << 20);
        // did:plc identifiers are 24 base32 characters.
        let did = |n: u32| {
            const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
            let id: String = (0..24)
                .map(|k| B32[((n >> (5 * (k % 6))) & 31) as usize ^ (k / 6)] as char)
                .collect();
            format!("did:plc:{id}")
        };
        for i in 0..1_000_000u32 {
            text.push_str(&did(i % 500_000));
            text.push_str(&format!("  # line {i}\n"));
        }
        std::fs::write(&f, text).unwrap();
        let started = std::time::Instant::now();
        let (ok, bad) = read_targets(&[], Some(&f)).unwrap();
        let took = started.elapsed();
        eprintln!("read_targets: 1,000,000 lines, 500,000 distinct, {took:?}");
        assert_eq!(ok.len(), 500_000);
        assert!(bad.is_empty());
        assert_eq!(ok[0], did(0));
        assert_eq!(ok[499_999], did(499_999));
        assert!(took < std::time::Duration::from_secs(60), "{took:?}");
    }
}
