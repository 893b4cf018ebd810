//! Repository signing keys: the `#atproto` verification method of a DID
//! document, multikeys and did:key strings, and ECDSA verification of a
//! commit's signature (secp256k1 / ES256K and NIST P-256 / ES256).
//!
//! Owns: decoding `publicKeyMultibase` (base58btc multikey with the
//! `secp256k1-pub` 0xe7 or `p256-pub` 0x1200 multicodec prefix; the legacy
//! `EcdsaSecp256k1VerificationKey2019` / `EcdsaSecp256r1VerificationKey2019`
//! forms carry the bare SEC1 key) and [`PublicKey::verify`]. Does not own:
//! fetching DID documents (`import::identity`), caching keys.
//!
//! Invariants: signatures are the 64-byte compact `r ‖ s` form over the
//! SHA-256 of the message, and only **low-S** signatures are valid (atproto
//! cryptography spec; the interop vectors include high-S and DER
//! signatures that must fail).
//!
//! Backends: secp256k1 through libsecp256k1 (the `secp256k1` crate, whose
//! verify rejects high-S itself), measured about 3× faster than RustCrypto's
//! `k256` on the relay commits (BENCHMARKS.md, issue 15 c): it is the key
//! type of almost every account and `source.verify` checks every commit.
//! P-256 through RustCrypto `p256`.

use p256::ecdsa::signature::Verifier as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A public key a repository commit can be signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    K256(secp256k1::PublicKey),
    P256(p256::ecdsa::VerifyingKey),
}

/// Why a key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("DID document has no #atproto verification method")]
    NoAtprotoKey,
    #[error("verification method type {0:?} is not supported")]
    UnsupportedType(String),
    #[error("publicKeyMultibase is not base58btc multibase")]
    Multibase,
    #[error("multikey codec is neither secp256k1-pub nor p256-pub")]
    Codec,
    #[error("not a valid curve point")]
    Point,
}

/// Multicodec varint prefixes of the two key types atproto uses.
const SECP256K1_PUB: [u8; 2] = [0xe7, 0x01];
const P256_PUB: [u8; 2] = [0x80, 0x24];

impl PublicKey {
    /// From a multikey (`z…` base58btc, multicodec-prefixed SEC1 point).
    pub fn from_multikey(multibase: &str) -> Result<PublicKey, KeyError> {
        let bytes = decode_base58btc(multibase)?;
        match bytes.split_at_checked(2) {
            Some((prefix, key)) if prefix == SECP256K1_PUB => Self::k256(key),
            Some((prefix, key)) if prefix == P256_PUB => Self::p256(key),
            _ => Err(KeyError::Codec),
        }
    }

    /// From a `did:key:z…` string.
    pub fn from_did_key(did_key: &str) -> Result<PublicKey, KeyError> {
        Self::from_multikey(
            did_key
                .strip_prefix("did:key:")
                .ok_or(KeyError::Multibase)?,
        )
    }

    /// The key of the first verification method whose `id` ends in
    /// `#atproto` (relative or absolute id), in any of the three formats.
    pub fn from_did_document(doc: &Value) -> Result<PublicKey, KeyError> {
        let method = doc
            .get("verificationMethod")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|m| {
                m.get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.ends_with("#atproto"))
            })
            .ok_or(KeyError::NoAtprotoKey)?;
        let multibase = method
            .get("publicKeyMultibase")
            .and_then(Value::as_str)
            .ok_or(KeyError::Multibase)?;
        match method.get("type").and_then(Value::as_str).unwrap_or("") {
            "Multikey" => Self::from_multikey(multibase),
            "EcdsaSecp256k1VerificationKey2019" => Self::k256(&decode_base58btc(multibase)?),
            "EcdsaSecp256r1VerificationKey2019" => Self::p256(&decode_base58btc(multibase)?),
            other => Err(KeyError::UnsupportedType(other.chars().take(64).collect())),
        }
    }

    fn k256(sec1: &[u8]) -> Result<PublicKey, KeyError> {
        secp256k1::PublicKey::from_slice(sec1)
            .map(PublicKey::K256)
            .map_err(|_| KeyError::Point)
    }

    fn p256(sec1: &[u8]) -> Result<PublicKey, KeyError> {
        p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
            .map(PublicKey::P256)
            .map_err(|_| KeyError::Point)
    }

    /// True when `sig` (64-byte compact, low-S) signs SHA-256(`message`).
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            // libsecp256k1 refuses high-S signatures by itself.
            PublicKey::K256(key) => secp256k1::ecdsa::Signature::from_compact(sig).is_ok_and(|s| {
                let digest = secp256k1::Message::from_digest(Sha256::digest(message).into());
                secp256k1::ecdsa::verify(&s, digest, key).is_ok()
            }),
            PublicKey::P256(key) => p256::ecdsa::Signature::from_slice(sig)
                .is_ok_and(|s| s.normalize_s().is_none() && key.verify(message, &s).is_ok()),
        }
    }
}

/// Longest `publicKeyMultibase` accepted: an uncompressed legacy key is 90
/// characters; base58 decoding is quadratic, so hostile lengths stop here.
const MAX_MULTIBASE_LEN: usize = 128;

fn decode_base58btc(multibase: &str) -> Result<Vec<u8>, KeyError> {
    if multibase.len() > MAX_MULTIBASE_LEN {
        return Err(KeyError::Multibase);
    }
    match multibase::decode(multibase) {
        Ok((multibase::Base::Base58Btc, bytes)) => Ok(bytes),
        _ => Err(KeyError::Multibase),
    }
}
