//! Issue 15, benchmark (c): secp256k1 commit-signature verifications per
//! second on one thread, for each candidate crate, in one run.
//!
//! Input: the 98 real relay `#commit`s of the recorded window
//! (`tests/fixtures/firehose/bsky-relay-…/frames.bin`) and the `#atproto`
//! keys of their DID documents (`did_docs.json`). Each contender does per
//! commit what parity's `PublicKey::verify` does: parse the 64-byte
//! compact signature, SHA-256 the unsigned commit, refuse a high-S
//! signature, verify against a key parsed once (the key cache holds parsed
//! keys). Contenders:
//!
//! - `secp256k1` 0.33: rust-bitcoin's bindings to Bitcoin Core's C
//!   libsecp256k1 (parity's backend);
//! - `k256` 0.13: RustCrypto, pure Rust (the backend before it);
//! - `libsecp256k1` 0.7: Parity Technologies' pure-Rust port;
//! - `secp256k1` again but parsing (decompressing) the key every time:
//!   what the parsed-key cache saves;
//! - the baseline, SHA-256 of the same bytes alone.
//!
//! Before measuring, every contender must accept all the commits and
//! reject a high-S copy of each signature (atproto accepts only low-S).
//! Rounds of one second alternate between the contenders, so a busy
//! neighbour slows all alike; best and median round are printed, per
//! second of wall time and per second of the thread's own CPU time (what
//! one core does, whatever else the machine runs: the figure to read on a
//! shared machine).
//!
//! `cargo build --release -p sigbench && taskset -c 0 target/release/sigbench [rounds]`

use std::time::{Duration, Instant};

use ipld_core::cid::Cid;
use ipld_core::ipld::Ipld;
use k256::ecdsa::signature::hazmat::PrehashVerifier as _;
use sha2::{Digest, Sha256};

/// One real commit: the compressed SEC1 key of its DID, the unsigned
/// commit block, the compact signature.
struct Signed {
    key: Vec<u8>,
    unsigned: Vec<u8>,
    sig: [u8; 64],
}

fn varint(b: &[u8], at: &mut usize) -> usize {
    let (mut v, mut shift) = (0usize, 0);
    loop {
        let x = b[*at];
        *at += 1;
        v |= usize::from(x & 0x7f) << shift;
        if x & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

/// The block named `want` in a CAR v1.
fn car_block<'a>(car: &'a [u8], want: &Cid) -> Option<&'a [u8]> {
    let mut at = 0;
    let header = varint(car, &mut at);
    at += header;
    while at < car.len() {
        let len = varint(car, &mut at);
        let end = at + len;
        let mut r = std::io::Cursor::new(&car[at..end]);
        let cid = Cid::read_bytes(&mut r).ok()?;
        if &cid == want {
            return Some(&car[at + r.position() as usize..end]);
        }
        at = end;
    }
    None
}

fn atproto_key(doc: &serde_json::Value) -> Vec<u8> {
    let method = doc["verificationMethod"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"].as_str().unwrap().ends_with("#atproto"))
        .unwrap();
    let (_, bytes) = multibase::decode(method["publicKeyMultibase"].as_str().unwrap()).unwrap();
    assert_eq!(bytes[..2], [0xe7, 0x01], "secp256k1-pub multikey");
    bytes[2..].to_vec()
}

fn relay_commits() -> Vec<Signed> {
    let (commits, docs) = testnet::frames::relay_commits();
    commits
        .iter()
        .map(|c| {
            let block = car_block(&c.blocks, &c.commit).expect("the commit block");
            let Ipld::Map(mut commit) = serde_ipld_dagcbor::from_slice(block).unwrap() else {
                panic!("a commit is a map");
            };
            let Some(Ipld::Bytes(sig)) = commit.remove("sig") else {
                panic!("a commit has a sig");
            };
            Signed {
                key: atproto_key(&docs[c.did.as_str()]),
                unsigned: serde_ipld_dagcbor::to_vec(&Ipld::Map(commit)).unwrap(),
                sig: sig.try_into().expect("64-byte compact signature"),
            }
        })
        .collect()
}

/// The same signature with s replaced by n − s: valid ECDSA, but high-S.
fn high_s(sig: &[u8; 64]) -> [u8; 64] {
    let s = k256::ecdsa::Signature::from_slice(sig).unwrap();
    let (r, s) = s.split_scalars();
    let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
    assert!(high.normalize_s().is_some(), "the copy is high-S");
    high.to_bytes().into()
}

/// Verifies one commit's unsigned bytes and signature.
type Verifier = Box<dyn Fn(&[u8], &[u8; 64]) -> bool>;
/// One call of a measured loop; returns the items it handled.
type Run = Box<dyn Fn() -> usize>;

/// One contender: a verifier per commit, built from the parsed key.
struct Contender {
    name: &'static str,
    make: fn(&Signed) -> Verifier,
}

fn secp256k1_c(c: &Signed) -> Verifier {
    let key = secp256k1::PublicKey::from_slice(&c.key).unwrap();
    Box::new(move |msg, sig| {
        secp256k1::ecdsa::Signature::from_compact(sig).is_ok_and(|s| {
            let digest = secp256k1::Message::from_digest(Sha256::digest(msg).into());
            // libsecp256k1 refuses high-S itself.
            secp256k1::ecdsa::verify(&s, digest, &key).is_ok()
        })
    })
}

fn secp256k1_c_parse_key(c: &Signed) -> Verifier {
    let sec1 = c.key.clone();
    Box::new(move |msg, sig| {
        let key = secp256k1::PublicKey::from_slice(&sec1).unwrap();
        secp256k1::ecdsa::Signature::from_compact(sig).is_ok_and(|s| {
            let digest = secp256k1::Message::from_digest(Sha256::digest(msg).into());
            secp256k1::ecdsa::verify(&s, digest, &key).is_ok()
        })
    })
}

fn rust_crypto_k256(c: &Signed) -> Verifier {
    let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(&c.key).unwrap();
    Box::new(move |msg, sig| {
        k256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| {
            // k256 refuses high-S itself too; parity's P-256 path checks
            // it this way.
            s.normalize_s().is_none() && key.verify_prehash(&Sha256::digest(msg), &s).is_ok()
        })
    })
}

fn parity_libsecp256k1(c: &Signed) -> Verifier {
    let key = libsecp256k1::PublicKey::parse_slice(
        &c.key,
        Some(libsecp256k1::PublicKeyFormat::Compressed),
    )
    .unwrap();
    Box::new(move |msg, sig| {
        libsecp256k1::Signature::parse_standard(sig).is_ok_and(|s| {
            // The port's verify accepts high-S: refuse it here.
            !s.s.is_high()
                && libsecp256k1::verify(
                    &libsecp256k1::Message::parse(&Sha256::digest(msg).into()),
                    &s,
                    &key,
                )
        })
    })
}

const CONTENDERS: [Contender; 4] = [
    Contender {
        name: "secp256k1 0.33 (C libsecp256k1)",
        make: secp256k1_c,
    },
    Contender {
        name: "k256 0.13 (RustCrypto)",
        make: rust_crypto_k256,
    },
    Contender {
        name: "libsecp256k1 0.7 (pure-Rust port)",
        make: parity_libsecp256k1,
    },
    Contender {
        name: "secp256k1 0.33, key parsed every time",
        make: secp256k1_c_parse_key,
    },
];

/// This thread's CPU time, in seconds.
fn thread_cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Runs `f` for about one second; returns items per wall second and per
/// CPU second of this thread.
fn round(f: &dyn Fn() -> usize) -> (f64, f64) {
    let (start, cpu) = (Instant::now(), thread_cpu());
    let mut n = 0usize;
    while start.elapsed() < Duration::from_secs(1) {
        n += f();
    }
    let n = n as f64;
    (n / start.elapsed().as_secs_f64(), n / (thread_cpu() - cpu))
}

fn best_median(mut r: Vec<f64>) -> (f64, f64) {
    r.sort_by(f64::total_cmp);
    (r[r.len() - 1], r[r.len() / 2])
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let commits = relay_commits();
    println!("{} real relay commits, {rounds} rounds", commits.len());
    let mut runs: Vec<(&str, Run)> = Vec::new();
    for c in CONTENDERS {
        let verifiers: Vec<_> = commits.iter().map(|s| (c.make)(s)).collect();
        for (v, s) in verifiers.iter().zip(&commits) {
            assert!(v(&s.unsigned, &s.sig), "{}: a real commit verifies", c.name);
            assert!(
                !v(&s.unsigned, &high_s(&s.sig)),
                "{}: high-S refused",
                c.name
            );
            let mut bad = s.sig;
            bad[10] ^= 1;
            assert!(
                !v(&s.unsigned, &bad),
                "{}: a changed signature fails",
                c.name
            );
        }
        let msgs: Vec<(Vec<u8>, [u8; 64])> = commits
            .iter()
            .map(|s| (s.unsigned.clone(), s.sig))
            .collect();
        runs.push((
            c.name,
            Box::new(move || {
                let ok = verifiers
                    .iter()
                    .zip(&msgs)
                    .filter(|(v, (m, s))| v(m, s))
                    .count();
                assert_eq!(ok, msgs.len());
                ok
            }),
        ));
    }
    let msgs: Vec<Vec<u8>> = commits.iter().map(|s| s.unsigned.clone()).collect();
    runs.push((
        "baseline: SHA-256 of the unsigned commit",
        Box::new(move || {
            let mut x = 0u8;
            for m in &msgs {
                x ^= Sha256::digest(m)[0];
            }
            std::hint::black_box(x);
            msgs.len()
        }),
    ));
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in runs.iter().enumerate() {
            let (w, c) = round(f.as_ref());
            wall[i].push(w);
            cpu[i].push(c);
        }
    }
    for (what, rates) in [("per wall second", wall), ("per CPU second", cpu)] {
        println!("{what}:");
        let (first_best, first_median) = best_median(rates[0].clone());
        for ((name, _), r) in runs.iter().zip(rates) {
            let (best, median) = best_median(r);
            println!(
                "  {name:<42} best {best:>10.0}/s  median {median:>10.0}/s  ({:.2} / {:.2} × secp256k1)",
                best / first_best,
                median / first_median
            );
        }
    }
}
