//! `parity auth login|list|logout`: the sessions the publish worker uses.
//!
//! Owns: resolving the account, reading the app password (never from a
//! flag value), `createSession`/`deleteSession`, sealing the tokens with
//! the `[auth]` key, and resuming the DID's `pending_auth` outbox rows on
//! login, which a running `parity publish` then picks up on its next poll.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde_json::json;

use crate::auth::password::{self, PASSWORD_ENV};
use crate::auth::{KEY_ENV, Sealer};
use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::import::identity::Resolver;
use crate::net::Policy;
use crate::publish::xrpc::{Client, Tokens};
use crate::store::Store;

/// `parity auth` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuthCommand {
    /// Sign in as an account with an app password (from PARITY_APP_PASSWORD,
    /// --password-file or a prompt) and store the session, encrypted.
    Login(LoginOptions),
    /// List stored sessions: DID, handle, PDS, state, last refresh.
    List,
    /// End a DID's session on its PDS and forget it.
    Logout {
        #[arg(value_name = "DID")]
        did: String,
    },
}

/// `parity auth login` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct LoginOptions {
    /// The account: a handle or a DID.
    #[arg(value_name = "HANDLE|DID")]
    pub account: String,
    /// Read the app password from the first line of this file.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// The sealer of this run's `[auth]` key.
pub fn sealer(cfg: &Config, create: bool) -> Result<Sealer, Error> {
    let env_key = std::env::var(KEY_ENV).ok();
    Sealer::load(env_key.as_deref(), Path::new(&cfg.auth.key_file), create)
        .map_err(|e| ConfigError(e.to_string()).into())
}

pub fn client(cfg: &Config) -> Result<Client, Error> {
    let policy = Policy {
        allow_private: cfg.identity.allow_private_addresses,
    };
    Client::new(policy, Duration::from_secs(cfg.publish.timeout_seconds)).map_err(Error::Internal)
}

fn runtime(msg: impl Into<String>) -> Error {
    Error::Publish(msg.into())
}

pub async fn run(cfg: &Config, cmd: AuthCommand) -> Result<ExitCode, Error> {
    match cmd {
        AuthCommand::Login(o) => login(cfg, o).await,
        AuthCommand::List => list(cfg).await,
        AuthCommand::Logout { did } => logout(cfg, &did).await,
    }
}

async fn login(cfg: &Config, o: LoginOptions) -> Result<ExitCode, Error> {
    let pw = password::read(std::env::var(PASSWORD_ENV).ok(), o.password_file.as_deref())
        .map_err(ConfigError)?;
    let sealer = sealer(cfg, true)?;
    let resolver = Resolver::new(&cfg.identity, None).map_err(ConfigError)?;
    let id = resolver
        .resolve(&o.account)
        .await
        .map_err(|e| runtime(format!("cannot resolve {}: {e}", o.account)))?;
    let client = client(cfg)?;
    let answer = client
        .post(
            &id.pds,
            "com.atproto.server.createSession",
            None,
            &json!({"identifier": id.did.as_str(), "password": pw}),
        )
        .await
        .map_err(|e| runtime(format!("createSession refused: {e}")))?;
    let t = Tokens::from_answer(&answer).map_err(|e| runtime(e.to_string()))?;
    if t.did != id.did.as_str() {
        return Err(runtime("the PDS answered for another DID; not stored"));
    }
    let store = Store::connect(&cfg.database).await?;
    store.migrate().await?;
    let did = id.did.as_str();
    store
        .save_session(
            did,
            t.handle.as_deref().or(id.handle.as_deref()),
            &id.pds,
            &sealer.seal(did, "access_token", &t.access),
            &sealer.seal(did, "refresh_token", &t.refresh),
        )
        .await?;
    let resumed = store.resume_pending_auth(did).await?;
    store.close().await;
    println!(
        "Signed in as {did}{} on {}; {resumed} outbox rows waiting for this login resumed.",
        t.handle.map(|h| format!(" ({h})")).unwrap_or_default(),
        id.pds
    );
    Ok(ExitCode::SUCCESS)
}

async fn list(cfg: &Config) -> Result<ExitCode, Error> {
    let Some(store) = Store::connect_read_only(&cfg.database).await? else {
        println!("No sessions.");
        return Ok(ExitCode::SUCCESS);
    };
    let rows = store.sessions().await?;
    store.close().await;
    if rows.is_empty() {
        println!("No sessions.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(["DID", "handle", "PDS", "state", "last refresh"]);
    for r in rows {
        t.add_row([
            r.did,
            r.handle.unwrap_or_default(),
            r.pds,
            r.state,
            r.refreshed_at.unwrap_or_default(),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

async fn logout(cfg: &Config, did: &str) -> Result<ExitCode, Error> {
    let store = Store::connect(&cfg.database).await?;
    store.migrate().await?;
    let Some(row) = store.session(did).await? else {
        return Err(runtime(format!("no session for {did}")));
    };
    // Best effort on the PDS: the session is forgotten here either way.
    if let Ok(sealer) = sealer(cfg, false)
        && let Ok(refresh) = sealer.open(did, "refresh_token", &row.refresh_token)
        && let Err(e) = client(cfg)?
            .post_empty(&row.pds, "com.atproto.server.deleteSession", &refresh)
            .await
    {
        tracing::warn!(did, error = %e, "deleteSession failed; forgetting the session anyway.");
    }
    store.delete_session(did).await?;
    store.close().await;
    println!("Signed out {did}.");
    Ok(ExitCode::SUCCESS)
}
