//! Tests of repository verification: every fixture CAR against independent
//! listings, signatures against the fixtures' DID documents and the interop
//! vectors, the MST against the interop roots, tampered copies, the
//! streaming reader's bound, and never-panic properties.

use std::collections::BTreeMap;

use base64::Engine as _;
use proptest::prelude::*;
use serde_json::Value;

use super::mst::{self, Leaf};
use super::*;
use crate::source::codecs::car;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const GIB: u64 = 1 << 30;

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn json(rel: &str) -> Value {
    serde_json::from_slice(&read(rel)).unwrap()
}

fn cid_bytes(s: &str) -> Vec<u8> {
    cid::Cid::try_from(s).unwrap().to_bytes()
}

fn cid_text(cid: &[u8]) -> String {
    cid::Cid::try_from(cid).unwrap().to_string()
}

/// The DID a CAR's commit is signed for.
fn commit_did(blocks: &Blocks) -> String {
    let root = blocks.roots().next().unwrap();
    Commit::parse(blocks.get(root).unwrap())
        .unwrap()
        .did
        .to_owned()
}

fn verify_file(name: &str, key: Option<&PublicKey>) -> Result<(usize, String), RepoError> {
    let blocks = Blocks::from_car(&read(&format!("car/{name}")), GIB)?;
    let did = commit_did(&blocks);
    verify_repo(&blocks, &did, key).map(|v| (v.records.len(), v.commit.rev.to_owned()))
}

/// Record counts from the fixtures' SOURCES.md (an MST walk by others).
const COUNTS: &[(&str, usize)] = &[
    (
        "indigo_bafyreieovfuizojpw3zresz7sx3nk4trm2by23pt5rxbey3jme4uo5ogiu.car",
        6,
    ),
    ("indigo_bnewbold.robocracy.org.20250310005405.car", 38),
    ("indigo_fakermaker.repo.car", 142),
    ("indigo_greenground.repo.car", 2),
    ("indigo_paul_staging.repo.car", 185),
    ("jetstream_repo.car", 23),
    ("repostream_empty.car", 0),
    ("repostream_little.car", 278),
    ("repostream_tiny.car", 8),
    ("rsky_valid_repo.car", 6),
    ("shrike_calabro.car", 4347),
];

#[test]
fn every_complete_fixture_repo_verifies_with_its_record_count() {
    for (name, count) in COUNTS {
        let (n, _) = verify_file(name, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(n, *count, "{name}");
    }
}

#[test]
fn jetstream_repo_matches_the_goat_listing_and_commit() {
    let blocks = Blocks::from_car(&read("car/jetstream_repo.car"), GIB).unwrap();
    let repo = verify_repo(&blocks, "did:plc:53iucmf5ldftgqyf2ac7hmhd", None).unwrap();
    let got: Vec<String> = repo
        .records
        .iter()
        .map(|r| format!("{}\t{}", String::from_utf8_lossy(&r.key), cid_text(r.cid)))
        .collect();
    let tsv = String::from_utf8(read("car/jetstream_repo.car_expected_records.tsv")).unwrap();
    let want: Vec<String> = tsv.lines().map(str::to_owned).collect();
    assert_eq!(got, want);
    assert_eq!(repo.commit.rev, "3migo7fijwi2k");
    assert_eq!(repo.commit.version, 3);
    assert_eq!(
        cid_text(repo.commit.data),
        "bafyreidigqr65jj2zsmitco3fcuag6pi7std6quxa2bcp2xrpin44ikzsy"
    );
    assert_eq!(
        verify_repo(&blocks, "did:plc:someoneelse", None).unwrap_err(),
        RepoError::DidMismatch
    );
}

#[test]
fn the_partial_repo_fails_with_missing_block() {
    assert_eq!(
        verify_file("indigo_repo_slice.car", None).unwrap_err(),
        RepoError::MissingBlock
    );
    assert_eq!(RepoError::MissingBlock.to_string(), "missing block");
}

fn doc_key(rel: &str) -> PublicKey {
    PublicKey::from_did_document(&json(rel)).unwrap()
}

#[test]
fn signatures_verify_against_the_fixture_did_documents() {
    // A v2 commit signed with a legacy K-256 verification method.
    let paul = doc_key("identity/did-docs/indigo_paul_staging.didDoc.json");
    assert_eq!(
        verify_file("indigo_paul_staging.repo.car", Some(&paul))
            .unwrap()
            .0,
        185
    );
    // Someone else's key is a bad signature.
    let other = doc_key("identity/did-docs/indigo_did_plc_doc.json");
    assert_eq!(
        verify_file("indigo_paul_staging.repo.car", Some(&other)).unwrap_err(),
        RepoError::BadSignature
    );
    // The fakermaker repo (old dev-env, P-256) is signed with a high-S
    // signature, which atproto does not accept: the key is right (the
    // signature verifies once normalised) but the repo is rejected.
    let faker = doc_key("identity/did-docs/indigo_fakermaker.didDoc.json");
    assert!(matches!(faker, PublicKey::P256(_)));
    let blocks = Blocks::from_car(&read("car/indigo_fakermaker.repo.car"), GIB).unwrap();
    let commit = Commit::parse(blocks.get(blocks.roots().next().unwrap()).unwrap()).unwrap();
    let high = p256::ecdsa::Signature::from_slice(commit.sig).unwrap();
    let low = high
        .normalize_s()
        .expect("the fixture's signature is high-S");
    assert!(faker.verify(&commit.unsigned, &low.to_bytes()));
    assert_eq!(
        verify_file("indigo_fakermaker.repo.car", Some(&faker)).unwrap_err(),
        RepoError::BadSignature
    );
}

#[test]
fn did_document_formats_give_the_same_key() {
    let current = doc_key("identity/did-docs/indigo_did_plc_doc.json");
    let legacy = doc_key("identity/did-docs/indigo_did_plc_doc_legacy.json");
    assert_eq!(current, legacy);
    assert!(matches!(current, PublicKey::K256(_)));
    assert!(matches!(
        doc_key("identity/did-docs/indigo_fakermaker.didDoc.json"),
        PublicKey::P256(_)
    ));
    assert_eq!(
        PublicKey::from_did_document(&serde_json::json!({"verificationMethod": []})),
        Err(KeyError::NoAtprotoKey)
    );
    let long = format!("z{}", "1".repeat(10_000));
    assert_eq!(PublicKey::from_multikey(&long), Err(KeyError::Multibase));
    assert_eq!(PublicKey::from_multikey("z0OIl"), Err(KeyError::Multibase));
    assert_eq!(PublicKey::from_multikey("zzzz"), Err(KeyError::Codec));
}

#[test]
fn interop_signature_vectors() {
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let vectors = json("interop/crypto/signature-fixtures.json");
    let vectors = vectors.as_array().unwrap();
    assert_eq!(vectors.len(), 6);
    for v in vectors {
        let field = |k: &str| v[k].as_str().unwrap();
        let message = b64.decode(field("messageBase64")).unwrap();
        let sig = b64.decode(field("signatureBase64")).unwrap();
        let key = PublicKey::from_did_key(field("publicKeyDid")).unwrap();
        let suite = serde_json::json!({"verificationMethod": [{
            "id": "#atproto", "type": field("didDocSuite"),
            "publicKeyMultibase": field("publicKeyMultibase")}]});
        assert_eq!(PublicKey::from_did_document(&suite).unwrap(), key);
        let valid = v["validSignature"].as_bool().unwrap();
        assert_eq!(key.verify(&message, &sig), valid, "{}", field("comment"));
    }
    for file in ["w3c_didkey_K256.json", "w3c_didkey_P256.json"] {
        for v in json(&format!("interop/crypto/{file}")).as_array().unwrap() {
            PublicKey::from_did_key(v["publicDidKey"].as_str().unwrap()).unwrap();
        }
    }
}

/// The low-S rule on the secp256k1 backend itself: the valid ES256K
/// interop vector, its `s` replaced by n − s (the same ECDSA signature in
/// high-S form, valid for plain ECDSA), is refused; the vector's own
/// high-S case is also refused above, but only this one shows the refusal
/// is the S rule and not some other defect.
#[test]
fn a_high_s_copy_of_a_valid_secp256k1_signature_is_refused() {
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let vectors = json("interop/crypto/signature-fixtures.json");
    let v = vectors
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["algorithm"] == "ES256K" && v["validSignature"] == true)
        .unwrap();
    let field = |k: &str| v[k].as_str().unwrap();
    let message = b64.decode(field("messageBase64")).unwrap();
    let sig = b64.decode(field("signatureBase64")).unwrap();
    let key = PublicKey::from_did_key(field("publicKeyDid")).unwrap();
    assert!(matches!(key, PublicKey::K256(_)));
    assert!(key.verify(&message, &sig));
    let low = k256::ecdsa::Signature::from_slice(&sig).unwrap();
    let (r, s) = low.split_scalars();
    let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
    // (r, n − s) verifies wherever (r, s) does: it normalises back.
    assert_eq!(high.normalize_s(), Some(low), "the copy is the high-S twin");
    assert!(!key.verify(&message, &high.to_bytes()));
}

#[test]
fn interop_key_layers() {
    for v in json("interop/mst/key_heights.json").as_array().unwrap() {
        let key = v["key"].as_str().unwrap();
        assert_eq!(
            u64::from(mst::key_layer(key.as_bytes())),
            v["height"].as_u64().unwrap(),
            "{key}"
        );
    }
}

#[test]
fn recomputed_roots_match_the_interop_commit_proofs() {
    for case in json("interop/firehose/commit-proof-fixtures.json")
        .as_array()
        .unwrap()
    {
        let value = cid_bytes(case["leafValue"].as_str().unwrap());
        let keys = |field: &str| -> Vec<String> {
            case[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_owned())
                .collect()
        };
        let root = |set: &std::collections::BTreeSet<String>| {
            let leaves: Vec<Leaf<'_>> = set
                .iter()
                .map(|k| Leaf {
                    key: k.clone().into_bytes(),
                    value: &value,
                })
                .collect();
            cid_text(&mst::root_cid(&leaves))
        };
        let mut set: std::collections::BTreeSet<String> = keys("keys").into_iter().collect();
        assert_eq!(
            root(&set),
            case["rootBeforeCommit"].as_str().unwrap(),
            "{}",
            case["comment"]
        );
        set.extend(keys("adds"));
        for d in keys("dels") {
            set.remove(&d);
        }
        assert_eq!(
            root(&set),
            case["rootAfterCommit"].as_str().unwrap(),
            "{}",
            case["comment"]
        );
    }
}

/// Sections of a CAR file: (offset of the section's CID, CID len, data range).
fn sections(bytes: &[u8]) -> Vec<(usize, usize, std::ops::Range<usize>)> {
    let mut pos = 0;
    let header = car::read_uvarint(bytes, &mut pos).unwrap() as usize;
    pos += header;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let len = car::read_uvarint(bytes, &mut pos).unwrap() as usize;
        let cid_len = car::parse_cid(&bytes[pos..]).unwrap().len;
        out.push((pos, cid_len, pos + cid_len..pos + len));
        pos += len;
    }
    out
}

/// The ranges of `bytes` holding a block of the given kind.
fn block_of_kind(bytes: &[u8], kind: &str) -> std::ops::Range<usize> {
    let blocks = Blocks::from_car(bytes, GIB).unwrap();
    let did = commit_did(&blocks);
    let repo = verify_repo(&blocks, &did, None).unwrap();
    let wanted: Vec<u8> = match kind {
        "record" => repo.records[repo.records.len() / 2].cid.to_vec(),
        "mst" => repo.commit.data.to_vec(),
        _ => repo.commit_cid.to_vec(),
    };
    sections(bytes)
        .into_iter()
        .find(|(at, len, _)| bytes[*at..*at + len] == wanted[..])
        .map(|(_, _, data)| data)
        .unwrap()
}

#[test]
fn tampered_repos_fail_with_the_right_reason() {
    let name = "car/indigo_paul_staging.repo.car";
    let key = doc_key("identity/did-docs/indigo_paul_staging.didDoc.json");
    let original = read(name);
    let check = |bytes: &[u8]| {
        let blocks = Blocks::from_car(bytes, GIB).unwrap();
        verify_repo(&blocks, "did:plc:cmpvykrzb2l22kj4ojlv3ox4", Some(&key))
            .map(|r| r.records.len())
    };
    assert_eq!(check(&original), Ok(185));

    // One byte of a record (the last byte: inside a text value).
    let mut record = original.clone();
    let at = block_of_kind(&original, "record").end - 1;
    record[at] ^= 0x01;
    assert_eq!(check(&record), Err(RepoError::RecordCidMismatch));

    // One byte of the signature (found by content inside the commit).
    let mut sig = original.clone();
    let commit = block_of_kind(&original, "commit");
    let parsed = Commit::parse(&original[commit.clone()]).unwrap();
    let sig_at = commit.start
        + original[commit.clone()]
            .windows(parsed.sig.len())
            .position(|w| w == parsed.sig)
            .unwrap();
    sig[sig_at + 10] ^= 0x01;
    assert_eq!(check(&sig), Err(RepoError::BadSignature));

    // One byte of an MST node: the last byte is inside the last link's
    // digest, so the node still decodes but no longer hashes to its CID.
    let mut node = original.clone();
    let at = block_of_kind(&original, "mst").end - 1;
    node[at] ^= 0x01;
    assert_eq!(check(&node), Err(RepoError::MstRootMismatch));

    // A record block removed.
    let rec = block_of_kind(&original, "record");
    let section = sections(&original)
        .into_iter()
        .find(|(_, _, d)| *d == rec)
        .unwrap();
    let mut prefix_start = section.0 - 1;
    while original[prefix_start - 1] & 0x80 != 0 {
        prefix_start -= 1;
    }
    let mut cut = original[..prefix_start].to_vec();
    cut.extend_from_slice(&original[rec.end..]);
    assert_eq!(check(&cut), Err(RepoError::MissingBlock));
}

/// A CAR with `root` first and then `blocks` (binary CID, bytes).
fn car_bytes(root: &[u8], blocks: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut header = Vec::new();
    mst::head(&mut header, 5, 2);
    mst::text(&mut header, "roots");
    mst::head(&mut header, 4, 1);
    mst::link_or_null(&mut header, Some(root));
    mst::text(&mut header, "version");
    mst::head(&mut header, 0, 1);
    let mut out = Vec::new();
    let varint = |out: &mut Vec<u8>, mut v: usize| {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    };
    varint(&mut out, header.len());
    out.extend_from_slice(&header);
    for (cid, data) in blocks {
        varint(&mut out, cid.len() + data.len());
        out.extend_from_slice(cid);
        out.extend_from_slice(data);
    }
    out
}

/// An unsigned-looking commit block with a dummy signature.
fn commit_block(did: &str, data: &[u8]) -> Vec<u8> {
    let mut c = Vec::new();
    mst::head(&mut c, 5, 6);
    mst::text(&mut c, "did");
    mst::text(&mut c, did);
    mst::text(&mut c, "rev");
    mst::text(&mut c, "3l5ddpspzxq22");
    mst::text(&mut c, "sig");
    mst::head(&mut c, 2, 64);
    c.extend_from_slice(&[7; 64]);
    mst::text(&mut c, "data");
    mst::link_or_null(&mut c, Some(data));
    mst::text(&mut c, "prev");
    c.push(0xf6);
    mst::text(&mut c, "version");
    mst::head(&mut c, 0, 3);
    c
}

#[test]
fn a_well_hashed_tree_of_the_wrong_shape_is_an_mst_root_mismatch() {
    // The tiny repo's records, all put in one node (every node hashes to
    // its CID and the leaves are right, but the layers are not).
    let blocks = Blocks::from_car(&read("car/repostream_tiny.car"), GIB).unwrap();
    let did = commit_did(&blocks);
    let repo = verify_repo(&blocks, &did, None).unwrap();
    assert!(repo.records.iter().any(|r| mst::key_layer(&r.key) > 0));
    let mut node = Vec::new();
    mst::head(&mut node, 5, 2);
    mst::text(&mut node, "e");
    mst::head(&mut node, 4, repo.records.len() as u64);
    let mut prev: &[u8] = &[];
    for r in &repo.records {
        let p = r.key.iter().zip(prev).take_while(|(a, b)| a == b).count();
        mst::head(&mut node, 5, 4);
        mst::text(&mut node, "k");
        mst::head(&mut node, 2, (r.key.len() - p) as u64);
        node.extend_from_slice(&r.key[p..]);
        mst::text(&mut node, "p");
        mst::head(&mut node, 0, p as u64);
        mst::text(&mut node, "t");
        node.push(0xf6);
        mst::text(&mut node, "v");
        mst::link_or_null(&mut node, Some(r.cid));
        prev = &r.key;
    }
    mst::text(&mut node, "l");
    node.push(0xf6);
    let node_cid = mst::dag_cbor_cid(&node);
    let commit = commit_block(&did, &node_cid);
    let commit_cid = mst::dag_cbor_cid(&commit);
    let mut list = vec![(commit_cid.clone(), commit), (node_cid, node)];
    list.extend(
        repo.records
            .iter()
            .map(|r| (r.cid.to_vec(), r.block.to_vec())),
    );
    let flat = Blocks::from_car(&car_bytes(&commit_cid, &list), GIB).unwrap();
    assert_eq!(
        verify_repo(&flat, &did, None).unwrap_err(),
        RepoError::MstRootMismatch
    );
    // The same blocks under the real root verify: only the shape differs.
    let mut real = list.clone();
    let good_commit = commit_block(&did, repo.commit.data);
    let good_cid = mst::dag_cbor_cid(&good_commit);
    real[0] = (good_cid.clone(), good_commit);
    for cid in mst_nodes(&blocks, repo.commit.data) {
        real.push((cid.clone(), blocks.get(&cid).unwrap().to_vec()));
    }
    let ok = Blocks::from_car(&car_bytes(&good_cid, &real), GIB).unwrap();
    assert_eq!(
        verify_repo(&ok, &did, None).unwrap().records.len(),
        repo.records.len()
    );
}

/// CIDs of every MST node under `root` (decoded with the reference decoder).
fn mst_nodes(blocks: &Blocks, root: &[u8]) -> Vec<Vec<u8>> {
    use ipld_core::ipld::Ipld;
    let mut out = vec![root.to_vec()];
    let mut i = 0;
    while i < out.len() {
        let node: Ipld = serde_ipld_dagcbor::from_slice(blocks.get(&out[i]).unwrap()).unwrap();
        let Ipld::Map(m) = node else { panic!() };
        if let Some(Ipld::Link(l)) = m.get("l") {
            out.push(l.to_bytes());
        }
        if let Some(Ipld::List(e)) = m.get("e") {
            for entry in e {
                if let Ipld::Map(em) = entry
                    && let Some(Ipld::Link(t)) = em.get("t")
                {
                    out.push(t.to_bytes());
                }
            }
        }
        i += 1;
    }
    out
}

#[test]
fn streaming_in_any_chunk_size_equals_the_whole_and_the_bound_holds() {
    let bytes = read("car/repostream_tiny.car");
    let whole = Blocks::from_car(&bytes, GIB).unwrap();
    for chunk in [1, 2, 3, 7, 64, 1000] {
        let mut s = CarStream::new(GIB);
        for c in bytes.chunks(chunk) {
            s.push(c).unwrap();
        }
        let blocks = s.finish().unwrap();
        assert_eq!(blocks.len(), whole.len());
        assert_eq!(
            blocks.roots().collect::<Vec<_>>(),
            whole.roots().collect::<Vec<_>>()
        );
        let did = commit_did(&blocks);
        assert_eq!(verify_repo(&blocks, &did, None).unwrap().records.len(), 8);
    }
    // One byte over the bound: refused before it is kept.
    let mut s = CarStream::new(bytes.len() as u64 - 1);
    let err = bytes.chunks(100).try_for_each(|c| s.push(c)).unwrap_err();
    assert_eq!(err, RepoError::TooBig(bytes.len() as u64 - 1));
    assert!(s.received() < bytes.len() as u64);
    // Exactly the bound is fine.
    assert!(Blocks::from_car(&bytes, bytes.len() as u64).is_ok());
    // A declared section longer than the bound is refused at once.
    let mut s = CarStream::new(1000);
    assert_eq!(s.push(&[0xff, 0xff, 0x03]), Err(RepoError::TooBig(1000)));
    // Truncated streams.
    let cut = Blocks::from_car(&bytes[..bytes.len() - 1], GIB).unwrap_err();
    assert_eq!(cut, RepoError::Malformed("CAR truncated"));
    assert!(Blocks::from_car(&[], GIB).is_err());
}

/// The recorded relay frames: repeated `[u32 LE length][message]`.
fn relay_frames() -> Vec<Vec<u8>> {
    let bytes = read("firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471/frames.bin");
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        frames.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    frames
}

/// (repo DID, commit CID, blocks CAR) of each `#commit` frame.
pub(crate) fn relay_commits() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    use ipld_core::ipld::Ipld;
    let mut out = Vec::new();
    for frame in relay_frames() {
        let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(&frame);
        let header: BTreeMap<String, Ipld> = serde::Deserialize::deserialize(&mut de).unwrap();
        if header.get("t") != Some(&Ipld::String("#commit".into())) {
            continue;
        }
        let body: BTreeMap<String, Ipld> = serde::Deserialize::deserialize(&mut de).unwrap();
        let (Some(Ipld::String(did)), Some(Ipld::Link(commit)), Some(Ipld::Bytes(blocks))) =
            (body.get("repo"), body.get("commit"), body.get("blocks"))
        else {
            panic!("commit frame fields");
        };
        out.push((did.clone(), commit.to_bytes(), blocks.clone()));
    }
    out
}

#[test]
fn the_relay_commits_verify_against_their_did_documents() {
    let docs = json("firehose/bsky-relay-2026-07-04-seq-31527015372-31527015471/did_docs.json");
    let commits = relay_commits();
    assert_eq!(commits.len(), 98);
    let (mut k256, mut p256) = (0, 0);
    for (did, cid, blocks) in &commits {
        let key = PublicKey::from_did_document(&docs[did.as_str()]).unwrap();
        match key {
            PublicKey::K256(_) => k256 += 1,
            PublicKey::P256(_) => p256 += 1,
        }
        let car = car::Car::parse(blocks).unwrap();
        let block = car.get(cid).unwrap();
        let commit = Commit::parse(block).unwrap();
        assert_eq!(commit.did, did);
        assert!(key.verify(&commit.unsigned, commit.sig), "{did}");
        // The unsigned bytes plus the signature re-encode the block.
        assert_eq!(
            commit.unsigned.len() + 4 + 2 + commit.sig.len(),
            block.len()
        );
        let mut bad = commit.sig.to_vec();
        bad[0] ^= 1;
        assert!(!key.verify(&commit.unsigned, &bad), "{did}");
    }
    assert_eq!((k256, p256), (98, 0), "the window's keys are all secp256k1");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), chunk in 1usize..64) {
        let mut s = CarStream::new(4096);
        let pushed = bytes.chunks(chunk).try_for_each(|c| s.push(c));
        if pushed.is_ok() && let Ok(blocks) = s.finish() {
            let _ = verify_repo(&blocks, "did:plc:x", None);
        }
        let _ = Commit::parse(&bytes);
        let _ = PublicKey::from_multikey(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_repos_never_panic_and_never_verify_changed_records(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let original = read("car/repostream_tiny.car");
        let mut bytes = original.clone();
        for (at, v) in edits {
            let at = at % bytes.len();
            bytes[at] = v;
        }
        if let Ok(blocks) = Blocks::from_car(&bytes, GIB)
            && let Ok(repo) = verify_repo(&blocks, "did:plc:7hptvnhdyeu53xp6rz7e42iy", None)
        {
            // Whatever verified is exactly the original content.
            let orig = Blocks::from_car(&original, GIB).unwrap();
            let want = verify_repo(&orig, "did:plc:7hptvnhdyeu53xp6rz7e42iy", None).unwrap();
            prop_assert_eq!(repo.records, want.records);
        }
    }
}
