//! The generator: event `i` of a run is a pure function of the run's
//! [`Config`] and `i`, so runs are reproducible from a seed, any event can
//! be made again (a delete re-creates the record it deletes to learn its
//! DID and rkey), and nothing is kept between events: 10M events stream in
//! constant memory.
//!
//! Each event: a template picked uniformly from the recording (the real
//! mix, [`crate::template`]); an account drawn from the Zipf pool
//! ([`crate::zipf`]); keys in the run's [`KeyMode`]; subjects (liked and
//! reposted posts, reply parents and roots, followed and blocked accounts)
//! random, pointing at Zipf-drawn accounts; `createdAt` the event's time.
//! A delete removes the record of an earlier create of the same collection
//! (up to `delete_window` events back), as real deletes mostly do.

use serde_json::Value;

use crate::keys::{self, KeyMode};
use crate::rng::Rng;
use crate::template::{self, Op, Template};
use crate::zipf::Zipf;

/// What a run generates.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub keys: KeyMode,
    /// Accounts in the pool.
    pub accounts: usize,
    /// Zipf exponent of account activity.
    pub zipf_s: f64,
    /// The clock of event 0, µs since the epoch (Jetstream `time_us`).
    pub start_us: u64,
    /// Clock step between events, µs (≥ 1: cursors strictly increase).
    pub step_us: u64,
    /// Record CIDs are the real CIDs of the records' DAG-CBOR (the
    /// firehose needs them; Jetstream runs may use random ones, cheaper).
    pub real_cids: bool,
    /// How far back (events) a delete looks for the record it deletes.
    pub delete_window: u64,
}

impl Config {
    /// The defaults BENCHMARKS.md documents: 1M accounts, Zipf s = 1.
    pub fn new(seed: u64, keys: KeyMode, start_us: u64, step_us: u64) -> Config {
        Config {
            seed,
            keys,
            accounts: 1_000_000,
            zipf_s: 1.0,
            start_us,
            step_us: step_us.max(1),
            real_cids: false,
            delete_window: 100_000,
        }
    }
}

/// One generated event.
#[derive(Debug, Clone, PartialEq)]
pub struct GenEvent {
    pub index: u64,
    pub time_us: u64,
    pub did: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Commit {
        op: Op,
        collection: String,
        rkey: String,
        rev: String,
        /// Creates and updates.
        record: Option<Value>,
        cid: Option<String>,
        /// The record's DAG-CBOR block when `real_cids` is on.
        block: Option<Vec<u8>>,
    },
    Identity {
        handle: String,
    },
    Account {
        active: bool,
        status: Option<String>,
    },
}

/// Streams of one event kept apart by purpose.
const DOMAIN_EVENT: u64 = 0xE7;

/// Makes events.
pub struct Generator {
    cfg: Config,
    templates: Vec<Template>,
    zipf: Zipf,
}

impl Generator {
    pub fn new(cfg: Config) -> Generator {
        Generator::with_templates(cfg, template::recorded())
    }

    pub fn with_templates(cfg: Config, templates: Vec<Template>) -> Generator {
        assert!(!templates.is_empty(), "at least one template");
        let zipf = Zipf::new(cfg.accounts, cfg.zipf_s);
        Generator {
            cfg,
            templates,
            zipf,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn zipf(&self) -> &Zipf {
        &self.zipf
    }

    /// The clock (Jetstream `time_us` cursor) of event `i`.
    pub fn time_us(&self, i: u64) -> u64 {
        self.cfg.start_us + i * self.cfg.step_us
    }

    /// The first event whose clock is at or after `time_us`.
    pub fn index_at(&self, time_us: u64) -> u64 {
        time_us
            .saturating_sub(self.cfg.start_us)
            .div_ceil(self.cfg.step_us)
    }

    fn rng(&self, i: u64) -> Rng {
        Rng::for_item(self.cfg.seed, DOMAIN_EVENT, i)
    }

    /// Which template event `i` uses (its stream's first draw).
    fn template_of(&self, i: u64) -> usize {
        self.rng(i).below(self.templates.len() as u64) as usize
    }

    fn did(&self, rng: &mut Rng) -> String {
        keys::did(self.cfg.keys, self.cfg.seed, self.zipf.sample(rng))
    }

    /// Event `i`.
    pub fn event(&self, i: u64) -> GenEvent {
        let mut rng = self.rng(i);
        let t = &self.templates[rng.below(self.templates.len() as u64) as usize];
        let time_us = self.time_us(i);
        let (did, kind) = match t {
            Template::Identity => {
                let rank = self.zipf.sample(&mut rng);
                (
                    keys::did(self.cfg.keys, self.cfg.seed, rank),
                    Kind::Identity {
                        handle: format!("u{rank}.bsky.social"),
                    },
                )
            }
            Template::Account { active, status } => (
                self.did(&mut rng),
                Kind::Account {
                    active: *active,
                    status: status.clone(),
                },
            ),
            Template::Commit {
                op: Op::Delete,
                collection,
                ..
            } => {
                let rev = self.rev(i, time_us, &mut rng);
                let (did, rkey) = match self.deleted_create(i, collection, &mut rng) {
                    Some(e) => match e.kind {
                        Kind::Commit { rkey, .. } => (e.did, rkey),
                        _ => unreachable!("a create"),
                    },
                    None => (self.did(&mut rng), self.rkey(i, time_us, &mut rng)),
                };
                let kind = Kind::Commit {
                    op: Op::Delete,
                    collection: collection.clone(),
                    rkey,
                    rev,
                    record: None,
                    cid: None,
                    block: None,
                };
                (did, kind)
            }
            Template::Commit {
                op,
                collection,
                rkey_self,
                record,
            } => {
                let did = self.did(&mut rng);
                let rkey = if *rkey_self {
                    "self".to_owned()
                } else {
                    self.rkey(i, time_us, &mut rng)
                };
                let rev = self.rev(i, time_us, &mut rng);
                let mut record = record.clone().expect("creates carry a record");
                self.vary(&mut record, time_us, &mut rng);
                let (cid, block) = if self.cfg.real_cids {
                    let bytes =
                        serde_ipld_dagcbor::to_vec(&testnet::frames::to_ipld(&record)).unwrap();
                    (keys::dag_cid(&bytes).to_string(), Some(bytes))
                } else {
                    (keys::random_cid(&mut rng), None)
                };
                let kind = Kind::Commit {
                    op: *op,
                    collection: collection.clone(),
                    rkey,
                    rev,
                    record: Some(record),
                    cid: Some(cid),
                    block,
                };
                (did, kind)
            }
        };
        GenEvent {
            index: i,
            time_us,
            did,
            kind,
        }
    }

    /// The latest create of `collection` in the `delete_window` events
    /// before a random point behind `i`, if any.
    fn deleted_create(&self, i: u64, collection: &str, rng: &mut Rng) -> Option<GenEvent> {
        let back = 1 + rng.below(self.cfg.delete_window.max(1));
        let from = i.checked_sub(back)?;
        let stop = i.saturating_sub(self.cfg.delete_window * 2);
        (stop..=from)
            .rev()
            .find_map(|j| match &self.templates[self.template_of(j)] {
                Template::Commit {
                    op: Op::Create,
                    collection: c,
                    rkey_self: false,
                    ..
                } if c == collection => Some(self.event(j)),
                _ => None,
            })
    }

    fn rkey(&self, i: u64, time_us: u64, rng: &mut Rng) -> String {
        match self.cfg.keys {
            KeyMode::Bench => keys::counter_tid(i),
            KeyMode::Random => keys::tid(time_us, rng.below(1024)),
        }
    }

    fn rev(&self, i: u64, time_us: u64, rng: &mut Rng) -> String {
        match self.cfg.keys {
            KeyMode::Bench => keys::counter_tid(BENCH_REV_BASE + i),
            KeyMode::Random => keys::tid(time_us, rng.below(1024)),
        }
    }

    /// A strong ref to a random post of a Zipf-drawn account, written up to
    /// 30 days before `time_us`.
    fn post_ref(&self, time_us: u64, rng: &mut Rng) -> Value {
        let did = self.did(rng);
        let at = time_us.saturating_sub(rng.below(30 * 86_400 * 1_000_000));
        serde_json::json!({
            "cid": keys::random_cid(rng),
            "uri": format!("at://{did}/app.bsky.feed.post/{}", keys::tid(at, rng.below(1024))),
        })
    }

    /// New subjects and `createdAt` on a recorded record.
    fn vary(&self, record: &mut Value, time_us: u64, rng: &mut Rng) {
        let Some(obj) = record.as_object_mut() else {
            return;
        };
        if obj.contains_key("createdAt") {
            obj.insert("createdAt".into(), Value::String(rfc3339(time_us)));
        }
        match obj.get("$type").and_then(Value::as_str) {
            Some("app.bsky.feed.like" | "app.bsky.feed.repost") => {
                obj.insert("subject".into(), self.post_ref(time_us, rng));
            }
            Some("app.bsky.graph.follow" | "app.bsky.graph.block") => {
                obj.insert("subject".into(), Value::String(self.did(rng)));
            }
            Some("app.bsky.feed.post") if obj.contains_key("reply") => {
                let reply = serde_json::json!({
                    "parent": self.post_ref(time_us, rng),
                    "root": self.post_ref(time_us, rng),
                });
                obj.insert("reply".into(), reply);
            }
            _ => {}
        }
    }
}

/// Bench-key revs sit above every bench-key rkey counter.
const BENCH_REV_BASE: u64 = 1_000_000_000;

/// `2026-07-04T14:38:08.463Z` for a µs clock.
pub fn rfc3339(time_us: u64) -> String {
    chrono::DateTime::from_timestamp_micros(time_us as i64)
        .expect("clock in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
