//! Import leases: who holds a (did, collection), until when, and when a
//! holder is known to be gone.
//!
//! Owns: the owner name of this process (`host:pid:nonce`), the expiry of a
//! claim or renewal (now + the lease length), the renewal loop that runs
//! beside a pair, and the dead-owner check that lets a pair of a killed
//! local importer be taken over before its lease expires. Does not own the
//! claim itself: `store::imports` matches owner and expiry in SQL, and each
//! committed page renews the lease in its own transaction.
//!
//! Invariant: a lease is renewed every third of its length, so two renewals
//! can fail (a database hiccup) before another importer may take the pair.

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// This process's leases: one owner name, one length.
#[derive(Debug, Clone)]
pub struct Lease {
    owner: String,
    length: Duration,
}

impl Lease {
    /// Leases of `length` held under a new, unique owner name.
    pub fn new(length: Duration) -> Lease {
        Lease::with_owner(new_owner(), length)
    }

    /// Leases under a given owner name (tests, or a caller that names itself).
    pub fn with_owner(owner: String, length: Duration) -> Lease {
        Lease { owner, length }
    }

    /// The owner name written into `lease_owner`.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// How long a claim or renewal holds without another renewal.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// When a claim or renewal made now expires.
    pub fn until(&self) -> DateTime<Utc> {
        self.until_from(Utc::now())
    }

    fn until_from(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.length).unwrap_or_default()
    }

    /// How often a running pair renews its lease.
    pub fn renew_every(&self) -> Duration {
        self.length / 3
    }

    /// Renews the lease of state `id` every [`Lease::renew_every`];
    /// returns (after cancelling `run`) only when the lease is no longer
    /// ours. Once `run` is cancelled by the caller it never returns, so it
    /// can sit in a `select!` beside the pair's job.
    pub async fn keep(&self, store: &Store, id: i64, run: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.renew_every()) => {}
                _ = run.cancelled() => return std::future::pending().await,
            }
            match store.renew_import(id, &self.owner, self.until()).await {
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
}

/// `host:pid:nonce`: unique per process, and checkable on this host.
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
    static HOST: OnceLock<String> = OnceLock::new();
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

/// The owner to take a pair over from: `holder`, if it is a dead local
/// process.
pub fn stealable(holder: Option<&str>) -> Option<&str> {
    holder.filter(|o| owner_is_dead(o))
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

    #[test]
    fn only_dead_local_holders_are_stolen_from() {
        let me = new_owner();
        let host = me.rsplitn(3, ':').nth(2).unwrap();
        let dead = format!("{host}:99999999:00000000");
        assert_eq!(stealable(Some(&dead)), Some(dead.as_str()));
        assert_eq!(stealable(Some(&me)), None);
        assert_eq!(stealable(Some("other-host:99999999:00000000")), None);
        assert_eq!(stealable(None), None);
    }

    #[test]
    fn each_lease_has_its_own_owner() {
        let a = Lease::new(Duration::from_secs(60));
        let b = Lease::new(Duration::from_secs(60));
        assert_ne!(a.owner(), b.owner());
        assert_eq!(
            Lease::with_owner("h:1:0".into(), Duration::ZERO).owner(),
            "h:1:0"
        );
    }

    #[test]
    fn expiry_is_now_plus_the_length_and_renewal_a_third_of_it() {
        let lease = Lease::with_owner("h:1:0".into(), Duration::from_secs(90));
        let now = Utc::now();
        assert_eq!(lease.until_from(now), now + chrono::Duration::seconds(90));
        assert_eq!(lease.renew_every(), Duration::from_secs(30));
        assert_eq!(lease.length(), Duration::from_secs(90));
        // A length chrono cannot hold expires now rather than panicking.
        let huge = Lease::with_owner("h:1:0".into(), Duration::MAX);
        assert_eq!(huge.until_from(now), now);
    }

    async fn store(dir: &tempfile::TempDir) -> Store {
        let store = Store::connect(&crate::store::DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("lease.db").display()),
            ..Default::default()
        })
        .await
        .unwrap();
        store.migrate().await.unwrap();
        store
    }

    #[tokio::test]
    async fn keeping_a_lease_ends_the_run_when_another_owner_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let ours = Lease::with_owner("h:1:a".into(), Duration::from_millis(300));
        let theirs = Lease::with_owner("h:2:b".into(), Duration::from_secs(60));
        store
            .enqueue_imports("did:plc:a", &["app.bsky.feed.post".into()], false)
            .await
            .unwrap();
        let state = store
            .claim_import(
                "did:plc:a",
                "app.bsky.feed.post",
                theirs.owner(),
                theirs.until(),
                None,
            )
            .await
            .unwrap()
            .unwrap();
        let run = CancellationToken::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            ours.keep(&store, state.id, run.clone()),
        )
        .await
        .expect("keep returns once the lease is not ours");
        assert!(run.is_cancelled());

        // The holder itself keeps renewing until its run ends.
        let run = CancellationToken::new();
        let kept = tokio::time::timeout(
            Duration::from_millis(200),
            Lease::with_owner("h:2:b".into(), Duration::from_millis(150)).keep(
                &store,
                state.id,
                run.clone(),
            ),
        )
        .await;
        assert!(kept.is_err() && !run.is_cancelled());
        store.close().await;
    }

    #[tokio::test]
    async fn keeping_a_lease_never_returns_once_the_run_is_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let lease = Lease::with_owner("h:1:0".into(), Duration::from_millis(30));
        let run = CancellationToken::new();
        run.cancel();
        let kept =
            tokio::time::timeout(Duration::from_millis(200), lease.keep(&store, 1, run)).await;
        assert!(kept.is_err(), "keep returned after the run ended");
        store.close().await;
    }
}
