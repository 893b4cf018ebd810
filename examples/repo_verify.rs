//! Repository verification speed on one thread (issue 15, benchmarks b and
//! c), each against a baseline measured in the same run.
//!
//! (c) Commit signatures: the 98 real relay commits (secp256k1 keys from
//! their DID documents) verified with `PublicKey::verify` (libsecp256k1
//! through the `secp256k1` crate) and with the RustCrypto `k256` crate it
//! replaced (same keys, same signatures, low-S enforced by both), and the same
//! unsigned commits signed with one P-256 key and verified; the baseline is
//! the SHA-256 of the same bytes, the part of a verification no
//! implementation avoids.
//!
//! (b) Whole repositories: `Blocks::from_car` + `verify_repo` (CAR split
//! and indexed, MST walked with every node hashed, root recomputed from the
//! leaves, every record CID checked), then the same plus turning every
//! record into JSON (`snapshot::split`, what an import writes). The
//! baseline is the plain minimum: split the CAR with the `cid` crate into a
//! `HashMap` and hash every block (no MST, no structure). Repos: the
//! largest real one (`shrike_calabro.car`, 4,347 records) and
//! `repostream_little.car` (278).
//!
//! Rounds of one second alternate between the contenders, so a noisy
//! neighbour hits all alike; best and median round are printed.
//!
//! `cargo run --release --example repo_verify [rounds]`

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parity::import::snapshot;
use parity::source::codecs::car::Car;
use parity::source::codecs::repo::{Blocks, Commit, PublicKey, verify_repo};
use sha2::{Digest, Sha256};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Runs `f` repeatedly for about one second; returns items/s (`f` returns
/// how many items one call handled).
fn round(mut f: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < Duration::from_secs(1) {
        n += f();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn report(name: &str, mut rates: Vec<f64>, base: Option<(&str, &[f64])>) {
    rates.sort_by(f64::total_cmp);
    let best = rates[rates.len() - 1];
    let median = rates[rates.len() / 2];
    let ratio = base
        .map(|(b, r)| {
            let mut r = r.to_vec();
            r.sort_by(f64::total_cmp);
            format!(
                " ({:.4} / {:.4} of {b})",
                best / r[r.len() - 1],
                median / r[r.len() / 2]
            )
        })
        .unwrap_or_default();
    println!("{name:<44} best {best:>12.0}/s  median {median:>12.0}/s{ratio}");
}

fn relay_commits() -> Vec<(PublicKey, Vec<u8>, Vec<u8>)> {
    let (commits, docs) = testnet::frames::relay_commits();
    commits
        .iter()
        .map(|c| {
            let car = Car::parse(&c.blocks).unwrap();
            let commit = Commit::parse(car.get(&c.commit.to_bytes()).unwrap()).unwrap();
            let key = PublicKey::from_did_document(&docs[c.did.as_str()]).unwrap();
            assert!(key.verify(&commit.unsigned, commit.sig));
            (key, commit.unsigned.clone(), commit.sig.to_vec())
        })
        .collect()
}

/// The plain baseline: split with the `cid` crate, hash every block.
fn plain_hash_all(bytes: &[u8]) -> usize {
    let mut r = std::io::Cursor::new(bytes);
    let read_varint = |r: &mut std::io::Cursor<&[u8]>| -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = bytes[r.position() as usize];
            r.set_position(r.position() + 1);
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    };
    let header = read_varint(&mut r);
    r.set_position(r.position() + header);
    let mut map: HashMap<cid::Cid, &[u8]> = HashMap::new();
    while (r.position() as usize) < bytes.len() {
        let len = read_varint(&mut r) as usize;
        let start = r.position() as usize;
        let cid = cid::Cid::read_bytes(&mut r).unwrap();
        let data = &bytes[r.position() as usize..start + len];
        assert_eq!(&Sha256::digest(data)[..], cid.hash().digest());
        map.insert(cid, data);
        r.set_position((start + len) as u64);
    }
    map.len()
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);

    // (c) signatures
    let k256: Vec<_> = relay_commits();
    let signer = p256::ecdsa::SigningKey::from_slice(&Sha256::digest(b"bench p256 key")).unwrap();
    let p256_key = PublicKey::P256(*signer.verifying_key());
    let p256: Vec<(Vec<u8>, Vec<u8>)> = k256
        .iter()
        .map(|(_, unsigned, _)| {
            use p256::ecdsa::signature::Signer as _;
            let sig: p256::ecdsa::Signature = signer.sign(unsigned);
            let sig = sig.normalize_s().unwrap_or(sig);
            (unsigned.clone(), sig.to_bytes().to_vec())
        })
        .collect();
    assert!(p256.iter().all(|(m, s)| p256_key.verify(m, s)));
    // The same keys and signatures for the RustCrypto `k256` crate directly
    // (what `PublicKey::verify` used before it moved to libsecp256k1).
    let rust_crypto: Vec<(k256::ecdsa::VerifyingKey, Vec<u8>, k256::ecdsa::Signature)> = k256
        .iter()
        .map(|(k, m, s)| {
            let PublicKey::K256(pk) = k else {
                panic!("relay keys are secp256k1")
            };
            let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&pk.serialize()).unwrap();
            (
                vk,
                m.clone(),
                k256::ecdsa::Signature::from_slice(s).unwrap(),
            )
        })
        .collect();
    let (mut kr, mut rr, mut pr, mut hr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        kr.push(round(|| {
            k256.iter().filter(|(k, m, s)| k.verify(m, s)).count()
        }));
        rr.push(round(|| {
            use k256::ecdsa::signature::Verifier as _;
            rust_crypto
                .iter()
                .filter(|(k, m, s)| s.normalize_s().is_none() && k.verify(m, s).is_ok())
                .count()
        }));
        pr.push(round(|| {
            p256.iter().filter(|(m, s)| p256_key.verify(m, s)).count()
        }));
        hr.push(round(|| {
            for (_, m, _) in &k256 {
                std::hint::black_box(Sha256::digest(m));
            }
            k256.len()
        }));
    }
    println!(
        "(c) commit signature verification, one thread ({} commits)",
        k256.len()
    );
    report(
        "secp256k1, libsecp256k1 (PublicKey::verify)",
        kr.clone(),
        Some(("SHA-256 only", &hr)),
    );
    report(
        "secp256k1, RustCrypto k256 0.13",
        rr.clone(),
        Some(("SHA-256 only", &hr)),
    );
    report("libsecp256k1 ÷ k256", kr, Some(("k256", &rr)));
    report(
        "P-256 (same commits, re-signed)",
        pr,
        Some(("SHA-256 only", &hr)),
    );
    report("baseline: SHA-256 of the unsigned commit", hr.clone(), None);

    // (b) whole repositories
    for name in ["shrike_calabro.car", "repostream_little.car"] {
        let bytes = std::fs::read(format!("{FIXTURES}/car/{name}")).unwrap();
        let blocks = Blocks::from_car(&bytes, 1 << 30).unwrap();
        let did = Commit::parse(blocks.get(blocks.roots().next().unwrap()).unwrap())
            .unwrap()
            .did
            .to_owned();
        let records = verify_repo(&blocks, &did, None).unwrap().records.len();
        let (mut vr, mut jr, mut br) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            vr.push(round(|| {
                let b = Blocks::from_car(&bytes, 1 << 30).unwrap();
                verify_repo(&b, &did, None).unwrap().records.len()
            }));
            jr.push(round(|| {
                let b = Blocks::from_car(&bytes, 1 << 30).unwrap();
                let v = verify_repo(&b, &did, None).unwrap();
                let s = snapshot::split(&v, &did, |_| true);
                s.collections.values().map(|c| c.records.len()).sum()
            }));
            br.push(round(|| {
                plain_hash_all(&bytes);
                records
            }));
        }
        println!(
            "(b) {name}: {records} records, {} blocks, {} bytes; records/s, one thread",
            blocks.len(),
            bytes.len()
        );
        report(
            "parse + full verification",
            vr,
            Some(("plain hash-all", &br)),
        );
        report(
            "parse + full verification + JSON",
            jr,
            Some(("plain hash-all", &br)),
        );
        report(
            "baseline: cid-crate split + hash every block",
            br.clone(),
            None,
        );
    }
}
