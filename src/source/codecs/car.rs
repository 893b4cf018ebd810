//! CARv1 reader for in-memory slices (the `blocks` field of `#commit` and
//! `#sync` firehose events, or a small `getRepo` export) and block CID checks.
//!
//! Owns: splitting `uvarint(header_len) ‖ DAG-CBOR {version: 1, roots: [CID]}`
//! then repeated `uvarint(len) ‖ CID ‖ block` into roots and blocks, and
//! [`verify`] (does a block hash to its CID). Does not own: decoding blocks
//! (see `dagcbor`) or walking the MST.
//!
//! Invariants: no copies (roots, CIDs and blocks borrow the input); every
//! length is checked against the bytes that remain and varints are capped at
//! [`MAX_VARINT_LEN`] bytes, so no input can panic or over-allocate; block
//! CIDs are kept in their binary form and compared byte for byte (binary CIDs
//! are canonical, so equal bytes ⇔ equal CIDs). The first copy of a duplicated
//! block wins. Blocks are not hashed while parsing: call [`verify`] on the
//! ones you use.

use sha2::{Digest, Sha256};

use super::dagcbor::{CborError, Reader};

/// Longest unsigned LEB128 varint accepted (enough for a u64).
pub const MAX_VARINT_LEN: usize = 10;
/// Multicodec `dag-cbor`.
pub const CODEC_DAG_CBOR: u64 = 0x71;
/// Multicodec `raw` (blobs).
pub const CODEC_RAW: u64 = 0x55;
/// Multihash `sha2-256`.
pub const HASH_SHA2_256: u64 = 0x12;

/// Why a CAR slice or a block is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarError {
    #[error("CAR truncated: {0}")]
    Truncated(&'static str),
    #[error("varint longer than {MAX_VARINT_LEN} bytes or not minimal")]
    Varint,
    #[error("CAR header: {0}")]
    Header(CborError),
    #[error("CAR header version {0}, expected 1")]
    Version(u64),
    #[error("malformed CID")]
    Cid,
    #[error(
        "CID uses codec {codec:#x} / hash {hash:#x}; only dag-cbor or raw with sha2-256 are verified"
    )]
    Unsupported { codec: u64, hash: u64 },
    #[error("block bytes do not hash to their CID")]
    DigestMismatch,
}

impl From<CborError> for CarError {
    fn from(e: CborError) -> Self {
        CarError::Header(e)
    }
}

/// Reads an unsigned LEB128 varint at `*pos`, advancing it.
pub fn read_uvarint(bytes: &[u8], pos: &mut usize) -> Result<u64, CarError> {
    // Fast path: one- and two-byte varints (every block length in practice).
    match bytes.get(*pos..) {
        Some([b0, ..]) if *b0 < 0x80 => {
            *pos += 1;
            return Ok(u64::from(*b0));
        }
        Some([b0, b1, ..]) if *b1 < 0x80 && *b1 != 0 => {
            *pos += 2;
            return Ok(u64::from(b0 & 0x7f) | (u64::from(*b1) << 7));
        }
        _ => {}
    }
    let mut value = 0u64;
    for i in 0..MAX_VARINT_LEN {
        let b = *bytes.get(*pos + i).ok_or(CarError::Truncated("varint"))?;
        let low = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err(CarError::Varint); // would overflow 64 bits
        }
        value |= low << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(CarError::Varint); // trailing zero group: not minimal
            }
            *pos += i + 1;
            return Ok(value);
        }
    }
    Err(CarError::Varint)
}

/// The parts of a binary CID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidParts<'a> {
    pub version: u64,
    pub codec: u64,
    pub hash: u64,
    pub digest: &'a [u8],
    /// Total length of the binary CID in bytes.
    pub len: usize,
}

/// Parses the binary CID at the start of `bytes` (CIDv0 or CIDv1).
pub fn parse_cid(bytes: &[u8]) -> Result<CidParts<'_>, CarError> {
    // Fast path: the atproto CID, v1 dag-cbor/raw sha2-256 (single-byte varints).
    if let [0x01, codec @ (0x71 | 0x55), 0x12, 0x20, rest @ ..] = bytes
        && let Some(digest) = rest.get(..32)
    {
        let codec = u64::from(*codec);
        return Ok(CidParts {
            version: 1,
            codec,
            hash: 0x12,
            digest,
            len: 36,
        });
    }
    if bytes.len() >= 34 && bytes[0] == 0x12 && bytes[1] == 0x20 {
        // CIDv0: a bare sha2-256 multihash, implicitly dag-pb.
        return Ok(CidParts {
            version: 0,
            codec: 0x70,
            hash: 0x12,
            digest: &bytes[2..34],
            len: 34,
        });
    }
    let mut pos = 0;
    let version = read_uvarint(bytes, &mut pos)?;
    if version != 1 {
        return Err(CarError::Cid);
    }
    let codec = read_uvarint(bytes, &mut pos)?;
    let hash = read_uvarint(bytes, &mut pos)?;
    let digest_len = read_uvarint(bytes, &mut pos)?;
    if digest_len > (bytes.len() - pos) as u64 {
        return Err(CarError::Truncated("CID digest"));
    }
    let digest = &bytes[pos..pos + digest_len as usize];
    Ok(CidParts {
        version,
        codec,
        hash,
        digest,
        len: pos + digest.len(),
    })
}

/// Checks that `block` hashes to the binary `cid` (sha2-256; codec dag-cbor
/// or raw). Any other codec or hash is `Unsupported`.
pub fn verify(cid: &[u8], block: &[u8]) -> Result<(), CarError> {
    let parts = parse_cid(cid)?;
    if parts.len != cid.len() {
        return Err(CarError::Cid);
    }
    if parts.version != 1
        || (parts.codec != CODEC_DAG_CBOR && parts.codec != CODEC_RAW)
        || parts.hash != HASH_SHA2_256
        || parts.digest.len() != 32
    {
        return Err(CarError::Unsupported {
            codec: parts.codec,
            hash: parts.hash,
        });
    }
    if Sha256::digest(block)[..] == *parts.digest {
        Ok(())
    } else {
        Err(CarError::DigestMismatch)
    }
}

/// One block: binary CID and data, both borrowed from the CAR bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block<'a> {
    pub cid: &'a [u8],
    pub data: &'a [u8],
}

/// A parsed CARv1 slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Car<'a> {
    roots: Vec<&'a [u8]>,
    blocks: Vec<Block<'a>>,
}

impl<'a> Car<'a> {
    /// Splits a CARv1 slice; the blocks' hashes are not checked here.
    pub fn parse(bytes: &'a [u8]) -> Result<Car<'a>, CarError> {
        let mut pos = 0;
        let header_len = read_uvarint(bytes, &mut pos)?;
        if header_len == 0 || header_len > (bytes.len() - pos) as u64 {
            return Err(CarError::Truncated("header"));
        }
        let header = &bytes[pos..pos + header_len as usize];
        pos += header.len();
        let roots = parse_header(header)?;

        let mut blocks = Vec::with_capacity(8);
        while pos < bytes.len() {
            let len = read_uvarint(bytes, &mut pos)?;
            if len == 0 || len > (bytes.len() - pos) as u64 {
                return Err(CarError::Truncated("block"));
            }
            let section = &bytes[pos..pos + len as usize];
            pos += section.len();
            let cid_len = parse_cid(section)?.len;
            blocks.push(Block {
                cid: &section[..cid_len],
                data: &section[cid_len..],
            });
        }
        Ok(Car { roots, blocks })
    }

    /// The header's root CIDs (binary).
    pub fn roots(&self) -> &[&'a [u8]] {
        &self.roots
    }

    /// All blocks in file order (duplicates included).
    pub fn blocks(&self) -> &[Block<'a>] {
        &self.blocks
    }

    /// The first block whose binary CID equals `cid`.
    pub fn get(&self, cid: &[u8]) -> Option<&'a [u8]> {
        // Compare the digests' last bytes first: cheap and almost always decisive.
        let tail = |c: &[u8]| c.last().copied();
        self.blocks
            .iter()
            .find(|b| tail(b.cid) == tail(cid) && b.cid == cid)
            .map(|b| b.data)
    }
}

/// Decodes the header `{roots: [CID, …], version: 1}` (other keys skipped).
pub(crate) fn parse_header(header: &[u8]) -> Result<Vec<&[u8]>, CarError> {
    let mut r = Reader::new(header);
    let mut roots = None;
    let mut version = None;
    for _ in 0..r.read_map_len()? {
        match r.read_text()? {
            "roots" => {
                let n = r.read_array_len()?;
                let mut list = Vec::with_capacity(n.min(16) as usize);
                for _ in 0..n {
                    let cid = r.read_link()?;
                    if parse_cid(cid)?.len != cid.len() {
                        return Err(CarError::Cid);
                    }
                    list.push(cid);
                }
                roots = Some(list);
            }
            "version" => version = Some(r.read_uint()?),
            _ => r.skip_value(1)?,
        }
    }
    if r.position() != header.len() {
        return Err(CarError::Header(CborError::TrailingData));
    }
    match version {
        Some(1) => {}
        Some(v) => return Err(CarError::Version(v)),
        None => return Err(CarError::Header(CborError::DataModel("missing version"))),
    }
    roots.ok_or(CarError::Header(CborError::DataModel("missing roots")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::codecs::dagcbor::{self, tests::ipld_to_json};
    use proptest::prelude::*;

    const CAR_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/car");

    fn car_files() -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(CAR_DIR)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("car"))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    fn cid_bytes(s: &str) -> Vec<u8> {
        cid::Cid::try_from(s).unwrap().to_bytes()
    }

    #[test]
    fn every_fixture_car_parses_and_every_block_verifies() {
        let files = car_files();
        assert_eq!(files.len(), 12);
        let mut blocks = 0;
        for (name, bytes) in &files {
            let car = Car::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(car.roots().len(), 1, "{name}");
            assert!(
                car.get(car.roots()[0]).is_some(),
                "{name}: root block present"
            );
            for b in car.blocks() {
                verify(b.cid, b.data).unwrap_or_else(|e| panic!("{name}: {e}"));
                blocks += 1;
            }
        }
        assert!(blocks > 7000, "{blocks}");
    }

    /// Every block of every fixture CAR (commits, MST nodes, ~5,000 records
    /// from ~60 lexicons) transcodes to the same JSON value as the reference
    /// decoder gives, or is rejected for a data-model reason only.
    #[test]
    fn every_fixture_block_transcodes_like_the_reference() {
        let mut tc = dagcbor::Transcoder::new();
        let (mut same, mut data_model) = (0, 0);
        for (name, bytes) in car_files() {
            for b in Car::parse(&bytes).unwrap().blocks() {
                let reference = serde_ipld_dagcbor::from_slice::<ipld_core::ipld::Ipld>(b.data);
                match (tc.record_to_json(b.data), reference) {
                    (Ok(json), Ok(r)) => {
                        let ours: serde_json::Value = serde_json::from_str(&json).unwrap();
                        assert_eq!(ours, ipld_to_json(&r), "{name}");
                        same += 1;
                    }
                    (Err(e), Ok(_)) => {
                        assert!(
                            matches!(
                                e,
                                CborError::DataModel(_) | CborError::Float | CborError::NotAnObject
                            ),
                            "{name}: {e}"
                        );
                        data_model += 1;
                    }
                    (Ok(json), Err(e)) => {
                        panic!("{name}: accepted what the reference rejects ({e}): {json}")
                    }
                    (Err(_), Err(_)) => {}
                }
            }
        }
        assert!(same > 7000, "{same} same, {data_model} data-model rejects");
        assert_eq!(data_model, 0);
    }

    #[test]
    fn jetstream_repo_matches_goat_listing() {
        let bytes = std::fs::read(format!("{CAR_DIR}/jetstream_repo.car")).unwrap();
        let car = Car::parse(&bytes).unwrap();
        let tsv =
            std::fs::read_to_string(format!("{CAR_DIR}/jetstream_repo.car_expected_records.tsv"))
                .unwrap();
        let mut n = 0;
        for line in tsv.lines() {
            let (_, cid) = line.split_once('\t').unwrap();
            let cid = cid_bytes(cid);
            let block = car.get(&cid).expect("record block present");
            verify(&cid, block).unwrap();
            assert!(
                dagcbor::record_to_json(block)
                    .unwrap()
                    .starts_with("{\"$type\":\"app.bsky.")
            );
            n += 1;
        }
        assert_eq!(n, 23);
        // The root commit names the expected data CID.
        let commit = dagcbor::record_to_json(car.get(car.roots()[0]).unwrap()).unwrap();
        assert!(
            commit.contains(
                r#""data":{"$link":"bafyreidigqr65jj2zsmitco3fcuag6pi7std6quxa2bcp2xrpin44ikzsy"}"#
            ),
            "{commit}"
        );
        assert!(commit.contains(r#""rev":"3migo7fijwi2k""#));
    }

    #[test]
    fn partial_car_misses_blocks_cleanly() {
        let bytes = std::fs::read(format!("{CAR_DIR}/indigo_repo_slice.car")).unwrap();
        let car = Car::parse(&bytes).unwrap();
        assert!(
            car.get(&cid_bytes(
                "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
            ))
            .is_none()
        );
    }

    #[test]
    fn verify_rejects_mismatch_and_unsupported() {
        let data = b"\xa0";
        let mut cid = vec![0x01, 0x71, 0x12, 0x20];
        cid.extend_from_slice(&Sha256::digest(data));
        assert_eq!(verify(&cid, data), Ok(()));
        assert_eq!(verify(&cid, b"\xa1"), Err(CarError::DigestMismatch));
        cid[1] = 0x55; // raw
        assert_eq!(verify(&cid, data), Ok(()));
        cid[1] = 0x70; // dag-pb
        assert_eq!(
            verify(&cid, data),
            Err(CarError::Unsupported {
                codec: 0x70,
                hash: 0x12
            })
        );
        let mut v0 = vec![0x12, 0x20];
        v0.extend_from_slice(&Sha256::digest(data));
        assert!(matches!(
            verify(&v0, data),
            Err(CarError::Unsupported { .. })
        ));
        assert_eq!(
            verify(&cid[..20], data),
            Err(CarError::Truncated("CID digest"))
        );
        let mut long = cid.clone();
        long.push(0);
        assert_eq!(verify(&long, data), Err(CarError::Cid));
    }

    #[test]
    fn varints() {
        let read = |b: &[u8]| {
            let mut pos = 0;
            read_uvarint(b, &mut pos).map(|v| (v, pos))
        };
        assert_eq!(read(&[0x00]), Ok((0, 1)));
        assert_eq!(read(&[0x7f]), Ok((127, 1)));
        assert_eq!(read(&[0x80, 0x01]), Ok((128, 2)));
        assert_eq!(
            read(&[0xff; 9].iter().copied().chain([0x01]).collect::<Vec<_>>()),
            Ok((u64::MAX, 10))
        );
        assert_eq!(
            read(&[0xff; 9].iter().copied().chain([0x02]).collect::<Vec<_>>()),
            Err(CarError::Varint)
        );
        assert_eq!(read(&[0xff; 11]), Err(CarError::Varint));
        assert_eq!(read(&[0x80, 0x00]), Err(CarError::Varint));
        assert_eq!(read(&[0x80]), Err(CarError::Truncated("varint")));
        assert_eq!(read(&[]), Err(CarError::Truncated("varint")));
    }

    fn header(roots: &[&[u8]], version: u8) -> Vec<u8> {
        let mut h = vec![0xa2, 0x65];
        h.extend_from_slice(b"roots");
        h.push(0x80 + roots.len() as u8);
        for r in roots {
            h.extend_from_slice(&[0xd8, 0x2a, 0x58, r.len() as u8 + 1, 0x00]);
            h.extend_from_slice(r);
        }
        h.push(0x67);
        h.extend_from_slice(b"version");
        h.push(version);
        let mut car = vec![h.len() as u8];
        car.extend(h);
        car
    }

    #[test]
    fn malformed_cars_are_errors() {
        let root = cid_bytes("bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a");
        let good = header(&[&root], 1);
        assert_eq!(Car::parse(&good).unwrap().roots(), &[root.as_slice()]);
        assert_eq!(Car::parse(&header(&[&root], 2)), Err(CarError::Version(2)));
        assert!(Car::parse(&[]).is_err());
        assert!(Car::parse(&[0x00]).is_err());
        assert!(Car::parse(&good[..good.len() - 1]).is_err());
        let mut with_block = good.clone();
        with_block.push(0x00); // zero-length section
        assert_eq!(Car::parse(&with_block), Err(CarError::Truncated("block")));
        let mut too_long = good.clone();
        too_long.extend_from_slice(&[0x40, 0x01]);
        assert_eq!(Car::parse(&too_long), Err(CarError::Truncated("block")));
        let mut bad_cid = good.clone();
        bad_cid.extend_from_slice(&[0x02, 0x05, 0x00]);
        assert!(Car::parse(&bad_cid).is_err());
        // A good block, duplicated: the first wins.
        let mut dup = good.clone();
        for data in [b"\xa0".as_slice(), b"\xa1"] {
            dup.push((root.len() + data.len()) as u8);
            dup.extend_from_slice(&root);
            dup.extend_from_slice(data);
        }
        let car = Car::parse(&dup).unwrap();
        assert_eq!(
            (car.blocks().len(), car.get(&root)),
            (2, Some(b"\xa0".as_slice()))
        );
    }

    thread_local! {
        static SAMPLE: Vec<u8> = std::fs::read(format!("{CAR_DIR}/repostream_tiny.car")).unwrap();
    }

    proptest! {
        #[test]
        fn car_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(car) = Car::parse(&bytes) {
                for b in car.blocks() {
                    let _ = verify(b.cid, b.data);
                }
            }
        }

        #[test]
        fn mutated_car_never_panics(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..5), cut in any::<usize>()) {
            let mut bytes = SAMPLE.with(|s| s.clone());
            for (i, b) in edits {
                let n = bytes.len();
                bytes[i % n] ^= b;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            if let Ok(car) = Car::parse(&bytes) {
                for b in car.blocks() {
                    if verify(b.cid, b.data).is_ok() {
                        let _ = dagcbor::record_to_json(b.data);
                    }
                }
            }
        }

        #[test]
        fn varint_roundtrip(v in any::<u64>()) {
            let mut buf = Vec::new();
            let mut x = v;
            loop {
                let b = (x & 0x7f) as u8;
                x >>= 7;
                if x == 0 {
                    buf.push(b);
                    break;
                }
                buf.push(b | 0x80);
            }
            let mut pos = 0;
            prop_assert_eq!(read_uvarint(&buf, &mut pos), Ok(v));
            prop_assert_eq!(pos, buf.len());
        }
    }
}
