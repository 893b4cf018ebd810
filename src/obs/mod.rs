//! Observability: logging, Prometheus metrics, health, and the one HTTP
//! listener that serves `/metrics`, `/health` and `/ready`.
//!
//! Owns: [`Obs`], the one object a running command creates and hands to
//! its stages as an `Arc<Obs>` (counters, liveness, metric handles, the lag,
//! and [`Obs::on_commit`]); every metric name and help text ([`names`]);
//! the recorder ([`install`]), which exports every counter with known
//! label values at 0 from the start; the bounded label values
//! ([`DropReason`], [`ReceivedKind`] and the fixed label sets in `labels`);
//! what "healthy" and "ready" mean ([`Unhealthy`], [`NotReady`]); the
//! listener ([`serve`]); the `[metrics]`, `[health]` and
//! `[log]` config sections; the tracing subscriber ([`init_logging`]) and
//! [`Escaped`]. Does not own any counting decision: the source, pipeline and
//! importer say what happened, this module only records and exports it.
//!
//! Depends only on `event` (for [`ReceivedKind::of`]) and `store` (the
//! [`crate::store::CommitStats`] and [`crate::store::StoreError`] that
//! [`Obs::on_commit`] and [`Obs::record_db_error`] take); never on source,
//! import, pipeline or config.
//!
//! For a command (`consume`, `import`, `resume`):
//! 1. [`install`] when `metrics.addr` is set, before [`Obs::new`] (it
//!    resolves metric handles once);
//! 2. [`serve`]`(addr, obs, token)` with the `Arc<`[`Obs`]`>`, before
//!    connecting to the database, so `/health` answers during start-up;
//! 3. [`Obs::mark_migrated`] after migrations, then the stages report
//!    through the same `Obs` ([`Obs::set_connected`], [`Obs::touch`],
//!    [`Obs::on_commit`]; `import` calls [`Obs::mark_ready`] once it
//!    starts fetching).
//!
//! Invariant: metric labels are bounded (fixed reasons, kinds, table names
//! from the config, configured endpoint hosts), never a DID, URI or error
//! text.

mod config;
mod health;
mod labels;
mod logging;
pub mod names;
mod observer;
mod recorder;
mod server;

pub use config::{HealthConfig, MetricsConfig};
pub use health::{NotReady, Unhealthy};
pub use labels::{CursorRejection, DropReason, ReceivedKind, endpoint_label};
pub use logging::{Escaped, LogConfig, init_logging};
pub use observer::Obs;
pub use recorder::install;
pub use server::{ServeError, Server, serve};
