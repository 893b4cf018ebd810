//! The bounds on what an import run holds in flight.
//!
//! `concurrency` bounds the DIDs that talk to the network at once
//! (resolve, fetch, verify): each holds a **fetching slot**. A listRecords
//! import keeps its slot to the end, since it pages its PDS as it writes. A
//! whole-repo snapshot, once verified, trades its slot for **held room**
//! (its size, out of [`HELD_BYTES`]) and waits for the writer while the
//! next DID fetches; the runner keeps up to [`WRITE_AHEAD`] × `concurrency`
//! DIDs in flight in all. The writer then finds many DIDs' pages waiting
//! together and commits them in one transaction (SQLite's group commit)
//! instead of one repo's pages at a time. Measured in BENCHMARKS.md
//! (issue 15, benchmark b).
//!
//! Owns: the two semaphores and the trade. Does not own what a DID does
//! with its slot (`account`) or the fan-out (`runner`).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// DIDs in flight per fetching slot.
pub const WRITE_AHEAD: usize = 4;

/// The most bytes of verified snapshots held while they wait for the
/// writer; a bigger snapshot waits until it is the only one.
pub const HELD_BYTES: u64 = 256 << 20;

/// A run's fetching slots and held room.
pub struct Slots {
    fetching: Arc<Semaphore>,
    /// In KiB.
    held: Arc<Semaphore>,
    held_kib: u64,
}

impl Slots {
    /// `concurrency` fetching slots and `held_bytes` of room.
    pub fn new(concurrency: usize, held_bytes: u64) -> Slots {
        let held_kib = (held_bytes >> 10).clamp(1, u64::from(u32::MAX));
        Slots {
            fetching: Arc::new(Semaphore::new(concurrency.max(1))),
            held: Arc::new(Semaphore::new(held_kib as usize)),
            held_kib,
        }
    }

    /// Waits for a fetching slot; `None` when cancelled first.
    pub async fn fetch(&self, token: &CancellationToken) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            p = self.fetching.clone().acquire_owned() => Some(p.expect("never closed")),
            () = token.cancelled() => None,
        }
    }

    /// Trades `fetching` for room for a verified snapshot of `bytes`: the
    /// slot is given back only once the room is had, so a full budget
    /// holds back fetching too. `None` when cancelled first.
    pub async fn hold(
        &self,
        bytes: u64,
        fetching: OwnedSemaphorePermit,
        token: &CancellationToken,
    ) -> Option<OwnedSemaphorePermit> {
        let kib = (bytes >> 10).clamp(1, self.held_kib) as u32;
        let held = tokio::select! {
            p = self.held.clone().acquire_many_owned(kib) => p.expect("never closed"),
            () = token.cancelled() => return None,
        };
        drop(fetching);
        Some(held)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_verified_snapshot_gives_its_fetching_slot_to_the_next_did() {
        let slots = Slots::new(1, 1 << 20);
        let token = CancellationToken::new();
        let first = slots.fetch(&token).await.unwrap();
        assert!(slots.fetch(&token).now_or_never().is_none(), "one slot");
        let _held = slots.hold(4096, first, &token).await.unwrap();
        assert!(slots.fetch(&token).now_or_never().flatten().is_some());
    }

    #[tokio::test]
    async fn a_full_budget_keeps_the_slot_until_room_is_freed() {
        let slots = Slots::new(1, 64 << 10);
        let token = CancellationToken::new();
        let a = slots.fetch(&token).await.unwrap();
        let held_a = slots.hold(48 << 10, a, &token).await.unwrap();
        let b = slots.fetch(&token).await.unwrap();
        let hold_b = slots.hold(32 << 10, b, &token);
        tokio::pin!(hold_b);
        assert!((&mut hold_b).now_or_never().is_none(), "no room yet");
        assert!(
            slots.fetch(&token).now_or_never().is_none(),
            "b still holds its slot while it waits"
        );
        drop(held_a);
        let _held_b = hold_b.await.unwrap();
        assert!(slots.fetch(&token).now_or_never().flatten().is_some());
    }

    #[tokio::test]
    async fn a_snapshot_bigger_than_the_budget_waits_to_be_alone() {
        let slots = Slots::new(2, 64 << 10);
        let token = CancellationToken::new();
        let a = slots.fetch(&token).await.unwrap();
        let held_a = slots.hold(1 << 10, a, &token).await.unwrap();
        let b = slots.fetch(&token).await.unwrap();
        let hold_b = slots.hold(1 << 30, b, &token);
        tokio::pin!(hold_b);
        assert!((&mut hold_b).now_or_never().is_none());
        drop(held_a);
        assert!(hold_b.await.is_some());
    }

    #[tokio::test]
    async fn cancelling_ends_the_waits() {
        let slots = Slots::new(1, 64 << 10);
        let token = CancellationToken::new();
        let a = slots.fetch(&token).await.unwrap();
        let _held = slots.hold(64 << 10, a, &token).await.unwrap();
        let b = slots.fetch(&token).await.unwrap();
        token.cancel();
        assert!(slots.fetch(&token).await.is_none());
        assert!(slots.hold(1 << 10, b, &token).await.is_none());
    }
}
