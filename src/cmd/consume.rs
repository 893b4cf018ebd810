//! `parity consume`: builds the pipeline's parts from the configuration and
//! runs it.
//!
//! Owns: [`Consumer`], the library entry point (a `Config` plus any mappers
//! a library user registers), applying the run's overrides (`--endpoint`,
//! `--collections`) and validating the result, and turning each config
//! section into its runtime type (`Registry::from_config`,
//! `Filter::from_config`, `PurgePolicy::from_config`, endpoints). Does not
//! own the run itself: that is [`pipeline::run`].

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::batch::PurgePolicy;
use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::event::CollectionPattern;
use crate::filter::Filter;
use crate::import::keys::ResolverKeys;
use crate::import::{self, identity::Resolver};
use crate::mapper::{Mapper, Registry};
use crate::obs::{self, Obs};
pub use crate::pipeline::ConsumeOptions;
use crate::pipeline::{self, Parts};
use crate::source::verify::Verifier;
use crate::source::{Endpoint, VerifyMode};

/// The consume pipeline, with any mappers a library user registered.
pub struct Consumer {
    config: Config,
    custom: Vec<(CollectionPattern, Arc<dyn Mapper>)>,
    obs: Arc<Obs>,
}

impl Consumer {
    /// With `metrics.addr` set, installs the Prometheus recorder first so
    /// the counters created here feed it.
    pub fn new(config: Config) -> Consumer {
        if matches!(config.metrics.listen_addr(), Ok(Some(_))) {
            obs::install();
        }
        let obs = Obs::new(Duration::from_secs(config.health.max_stale));
        Consumer {
            config,
            custom: Vec::new(),
            obs: Arc::new(obs),
        }
    }

    /// Adds a mapper of your own for `pattern`. Built-in and declarative
    /// mappers win for the collections they name; yours win over the
    /// generic catch-all.
    pub fn register(
        &mut self,
        pattern: CollectionPattern,
        mapper: Arc<dyn Mapper>,
    ) -> &mut Consumer {
        self.custom.push((pattern, mapper));
        self
    }

    /// The counters, health and metrics this run updates (what `/health`
    /// and `/ready` report).
    pub fn obs(&self) -> Arc<Obs> {
        self.obs.clone()
    }

    /// Builds the registry: built-ins, declarative, custom, then generic.
    pub fn registry(&self) -> Result<Registry, Error> {
        Ok(Registry::from_config(&self.config.mappers, &self.custom)?)
    }

    /// Runs until `token` is cancelled (then drains) or a fatal error.
    pub async fn run(self, opts: ConsumeOptions, token: CancellationToken) -> Result<(), Error> {
        let mut cfg = self.config;
        if !opts.endpoints.is_empty() {
            cfg.source.endpoints = opts.endpoints.clone();
        }
        if let Some(c) = &opts.collections {
            cfg.filter.collections = c.clone();
        }
        cfg.validate()?;
        let registry = Registry::from_config(&cfg.mappers, &self.custom)?;
        let purge = PurgePolicy::from_config(&cfg.accounts).map_err(ConfigError)?;
        let metrics_addr = cfg.metrics.listen_addr().map_err(ConfigError)?;
        for c in cfg.filter.collection_patterns().map_err(ConfigError)? {
            if let CollectionPattern::Exact(n) = c
                && !registry.handles(&n)
            {
                tracing::warn!(collection = %n, "Collection has no mapper; its events only move the cursor.");
            }
        }
        let filter = Filter::from_config(&cfg.filter, registry.patterns()).map_err(ConfigError)?;
        let endpoints: Vec<Endpoint> = cfg
            .source
            .endpoints
            .iter()
            .map(|e| Endpoint::parse(e).map_err(ConfigError))
            .collect::<Result<_, _>>()?;
        // `[publish] enabled`: the outbox worker runs next to the pipeline
        // on the same shutdown token (nothing of it exists otherwise).
        let publisher = if cfg.publish.enabled {
            let pcfg = cfg.clone();
            let registry = Arc::new(Registry::from_config(&cfg.mappers, &self.custom)?);
            let t = token.clone();
            let obs = self.obs.clone();
            Some(tokio::spawn(async move {
                crate::cmd::publish::run_until(&pcfg, registry, Some((obs, false)), t).await
            }))
        } else {
            None
        };
        let verifier = verifier(&cfg, self.obs.clone())?;
        // `[feed] enabled`: the feed server and broker relay share the
        // pipeline's store; the port is taken now, before anything runs.
        let mut feed = super::consume_feed::FeedSide::bind(&cfg.feed).await?;
        let on_store = feed.as_mut().map(|f| {
            let wakes = [Arc::new(Notify::new()), Arc::new(Notify::new())];
            f.starter(wakes, token.clone())
        });
        // `import.auto_resync`: the re-import worker, on the same token.
        let resyncer = if cfg.import.auto_resync {
            let settings = import::Settings {
                import: cfg.import.clone(),
                identity: cfg.identity.clone(),
                database: cfg.database.clone(),
                registry: Registry::from_config(&cfg.mappers, &self.custom)?,
                purge: purge.clone(),
                metrics_addr: None,
                health_max_stale: Duration::from_secs(cfg.health.max_stale),
                progress_interval_seconds: cfg.log.progress_interval_seconds,
                change_log: cfg.feed.change_log(),
            };
            let (t, obs) = (token.clone(), self.obs.clone());
            Some(tokio::spawn(import::auto_resync::run(settings, obs, t)))
        } else {
            None
        };
        let parts = Parts {
            database: cfg.database,
            source: cfg.source,
            endpoints,
            batch: cfg.batch,
            purge,
            filter,
            registry,
            metrics_addr,
            progress_interval_seconds: cfg.log.progress_interval_seconds,
            obs: self.obs,
            verifier,
            change_log: cfg.feed.change_log(),
            on_store,
        };
        let result = pipeline::run(parts, &opts, token.clone()).await;
        let fed = match feed {
            Some(f) => {
                token.cancel();
                f.finish().await
            }
            None => Ok(()),
        };
        if let Some(p) = publisher {
            token.cancel();
            match p.await {
                Ok(r) => r?,
                Err(e) => return Err(Error::Internal(format!("publish worker: {e}"))),
            }
        }
        if let Some(r) = resyncer {
            token.cancel();
            match r.await {
                Ok(r) => r?,
                Err(e) => return Err(Error::Internal(format!("auto_resync worker: {e}"))),
            }
        }
        result?;
        fed
    }
}

/// The live verification stage when `source.verify` is on: keys from the
/// `[identity]` resolver (its cache and TTL), each lookup bounded by
/// `identity.timeout_seconds`.
fn verifier(cfg: &Config, obs: Arc<Obs>) -> Result<Option<Verifier>, Error> {
    if !cfg.source.verify.is_on() {
        return Ok(None);
    }
    let resolver = Resolver::new(&cfg.identity, None).map_err(ConfigError)?;
    Ok(Some(Verifier::new(
        cfg.source.verify == VerifyMode::Full,
        Arc::new(ResolverKeys(Arc::new(resolver))),
        obs,
        Duration::from_secs(cfg.identity.timeout_seconds.max(1)),
    )))
}

/// `parity consume`: runs until SIGINT/SIGTERM.
pub async fn run(cfg: Config, opts: ConsumeOptions) -> Result<ExitCode, Error> {
    let token = crate::shutdown::on_signals();
    Consumer::new(cfg).run(opts, token).await?;
    Ok(ExitCode::SUCCESS)
}
