//! `parity outbox status|retry|add`: looking at and steering the publish
//! queue from a shell.
//!
//! `status` prints a summary line with a count per status, then a table
//! (or one JSON object per row with `--json`); `retry` re-queues failed,
//! conflicting or waiting rows; `add` enqueues one row, as an application's
//! INSERT would.

use std::process::ExitCode;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};

use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::event::{Did, Nsid, RecordKey};
use crate::store::{OutboxFilter, RetryTarget, Store};

/// Rows shown by `outbox status`.
const STATUS_CAP: i64 = 200;

/// `parity outbox` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum OutboxCommand {
    /// Counts per status, then the rows (optionally of one DID).
    Status(StatusArgs),
    /// Re-queue failed, conflicting or pending_auth rows.
    Retry(RetryArgs),
    /// Enqueue one write (what an application's INSERT does).
    Add(AddArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[arg(value_name = "DID")]
    pub did: Option<String>,
    /// Only rows not finished (pending, in_flight, pending_auth).
    #[arg(long, group = "which")]
    pub pending: bool,
    /// Only failed and conflict rows.
    #[arg(long, group = "which")]
    pub failed: bool,
    /// One JSON object per row instead of the summary and table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct RetryArgs {
    /// One row by id.
    #[arg(value_name = "ID", group = "target")]
    pub id: Option<i64>,
    /// Every failed, conflicting or waiting row of this DID.
    #[arg(long, group = "target")]
    pub did: Option<String>,
    /// Every failed and conflict row.
    #[arg(long, group = "target")]
    pub failed: bool,
}

/// Exactly one of `--create`, `--update`, `--delete` (checked in [`add`]:
/// a struct-level clap group would take in every field).
#[derive(Debug, Clone, clap::Args)]
pub struct AddArgs {
    #[arg(long)]
    pub did: String,
    #[arg(long, value_name = "NSID")]
    pub collection: String,
    /// Record key (a create without one gets a TID when published).
    #[arg(long)]
    pub rkey: Option<String>,
    #[arg(long)]
    pub create: bool,
    #[arg(long)]
    pub update: bool,
    #[arg(long)]
    pub delete: bool,
    /// The record as JSON, or @FILE to read it from a file.
    #[arg(long, value_name = "JSON|@FILE")]
    pub record: Option<String>,
    /// Only apply if the record's current CID is this one.
    #[arg(long, value_name = "CID")]
    pub swap_cid: Option<String>,
}

fn bad(msg: impl Into<String>) -> Error {
    ConfigError(msg.into()).into()
}

pub async fn run(cfg: &Config, cmd: OutboxCommand) -> Result<ExitCode, Error> {
    match cmd {
        OutboxCommand::Status(a) => status(cfg, a).await,
        OutboxCommand::Retry(a) => retry(cfg, a).await,
        OutboxCommand::Add(a) => add(cfg, a).await,
    }
}

async fn status(cfg: &Config, a: StatusArgs) -> Result<ExitCode, Error> {
    let Some(store) = Store::connect_read_only(&cfg.database).await? else {
        println!("The outbox is empty (no database yet).");
        return Ok(ExitCode::SUCCESS);
    };
    let filter = match (a.pending, a.failed) {
        (true, _) => OutboxFilter::Pending,
        (_, true) => OutboxFilter::Failed,
        _ => OutboxFilter::All,
    };
    let rows = store
        .outbox_rows(a.did.as_deref(), filter, STATUS_CAP)
        .await?;
    if a.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        }
        store.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    let counts = store.outbox_counts(a.did.as_deref()).await?;
    store.close().await;
    let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    println!("{}", summary.join(", "));
    if rows.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header([
            "id",
            "DID",
            "collection",
            "rkey",
            "op",
            "status",
            "attempts",
            "error",
        ]);
    for r in rows {
        let error: String = r.error.unwrap_or_default().chars().take(80).collect();
        t.add_row([
            r.id.to_string(),
            r.did,
            r.collection,
            r.rkey.unwrap_or_default(),
            r.op,
            r.status,
            r.attempts.to_string(),
            crate::obs::Escaped(error).to_string(),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

async fn retry(cfg: &Config, a: RetryArgs) -> Result<ExitCode, Error> {
    let target = match (a.id, a.did, a.failed) {
        (Some(id), _, _) => RetryTarget::Id(id),
        (_, Some(d), _) => RetryTarget::Did(d),
        _ => RetryTarget::AllFailed,
    };
    let store = Store::connect(&cfg.database).await?;
    store.migrate().await?;
    let n = store.retry_outbox(&target).await?;
    store.close().await;
    println!("{n} outbox rows queued again.");
    Ok(ExitCode::SUCCESS)
}

async fn add(cfg: &Config, a: AddArgs) -> Result<ExitCode, Error> {
    if Did::parse(&a.did).is_none() {
        return Err(bad(format!("--did {:?} is not a DID", a.did)));
    }
    if Nsid::parse(&a.collection).is_none() {
        return Err(bad(format!(
            "--collection {:?} is not an NSID",
            a.collection
        )));
    }
    if let Some(k) = &a.rkey
        && RecordKey::parse(k).is_none()
    {
        return Err(bad(format!("--rkey {k:?} is not a record key")));
    }
    if [a.create, a.update, a.delete]
        .iter()
        .filter(|b| **b)
        .count()
        != 1
    {
        return Err(bad("give exactly one of --create, --update, --delete"));
    }
    let op = if a.create {
        "create"
    } else if a.update {
        "update"
    } else {
        "delete"
    };
    if op != "create" && a.rkey.is_none() {
        return Err(bad(format!("--{op} needs --rkey")));
    }
    let record = match (&a.record, op) {
        (Some(_), "delete") => return Err(bad("--delete takes no --record")),
        (None, "delete") => None,
        (None, _) => return Err(bad(format!("--{op} needs --record JSON or @FILE"))),
        (Some(r), _) => {
            let text = match r.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| bad(format!("cannot read --record file {path}: {e}")))?,
                None => r.clone(),
            };
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| bad(format!("--record is not JSON: {e}")))?;
            if v.get("$type").and_then(|t| t.as_str()) != Some(a.collection.as_str()) {
                return Err(bad("--record needs \"$type\" equal to --collection"));
            }
            Some(v.to_string())
        }
    };
    let store = Store::connect(&cfg.database).await?;
    store.migrate().await?;
    let id = store
        .add_outbox(
            &a.did,
            &a.collection,
            a.rkey.as_deref(),
            op,
            record.as_deref(),
            a.swap_cid.as_deref(),
        )
        .await?;
    store.close().await;
    println!("Enqueued outbox row {id}.");
    Ok(ExitCode::SUCCESS)
}
