//! Sealing session tokens: XChaCha20-Poly1305 (RustCrypto
//! `chacha20poly1305`) with a random 192-bit nonce per value, and the
//! row's DID and column name as associated data, so a sealed token cannot
//! be moved to another row or column unnoticed.
//!
//! Stored form: `v1:` + base64(nonce ‖ ciphertext ‖ tag). The key is 32
//! bytes, from `PARITY_AUTH_KEY` (64 hex characters) or `auth.key_file`
//! (the same, created with mode 0600 on first use).

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

/// The environment variable that holds the key instead of the file.
pub const KEY_ENV: &str = "PARITY_AUTH_KEY";
const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 24;

/// Why a key could not be loaded or a token not opened. Messages never
/// contain key or token material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("{0}")]
    Key(String),
    /// Wrong key, or the stored value was changed or moved.
    #[error(
        "a stored session token cannot be decrypted with this key (wrong auth key, or the row was altered)"
    )]
    Open,
}

/// Seals and opens session tokens with one key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

fn parse_hex_key(text: &str, source: &str) -> Result<[u8; 32], SealError> {
    let t = text.trim();
    let bad = || {
        SealError::Key(format!(
            "{source} must hold 64 hex characters (a 32-byte key)"
        ))
    };
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(key)
}

impl Sealer {
    /// A sealer over a raw key.
    pub fn new(key: [u8; 32]) -> Sealer {
        Sealer {
            cipher: XChaCha20Poly1305::new(&Key::from(key)),
        }
    }

    /// The key from `env_key` (the value of `PARITY_AUTH_KEY`) if set, else
    /// from `key_file`; with `create`, a missing file is created with a new
    /// random key, mode 0600 (never overwritten).
    pub fn load(env_key: Option<&str>, key_file: &Path, create: bool) -> Result<Sealer, SealError> {
        if let Some(k) = env_key {
            return Ok(Sealer::new(parse_hex_key(k, KEY_ENV)?));
        }
        let shown = key_file.display();
        match std::fs::read_to_string(key_file) {
            Ok(text) => Ok(Sealer::new(parse_hex_key(
                &text,
                &format!("auth.key_file {shown}"),
            )?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let key: [u8; 32] = rand::random();
                let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                let mut f = std::fs::OpenOptions::new();
                f.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
                let mut file = f.open(key_file).map_err(|e| {
                    SealError::Key(format!("cannot create auth.key_file {shown}: {e}"))
                })?;
                file.write_all(format!("{hex}\n").as_bytes())
                    .and_then(|_| file.sync_all())
                    .map_err(|e| {
                        SealError::Key(format!("cannot write auth.key_file {shown}: {e}"))
                    })?;
                tracing::info!(path = %shown, "Created the session key file (mode 0600).");
                Ok(Sealer::new(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SealError::Key(format!(
                "auth.key_file {shown} does not exist: run `parity auth login` first, or set {KEY_ENV}"
            ))),
            Err(e) => Err(SealError::Key(format!(
                "cannot read auth.key_file {shown}: {e}"
            ))),
        }
    }

    /// Seals `secret` for `did`'s column `column`.
    pub fn seal(&self, did: &str, column: &str, secret: &str) -> String {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = format!("{did}\n{column}");
        let ct = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory value cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// Opens a value sealed by [`Sealer::seal`] for the same DID and column.
    pub fn open(&self, did: &str, column: &str, sealed: &str) -> Result<String, SealError> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|r| r.len() > NONCE_LEN)
            .ok_or(SealError::Open)?;
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Open)?;
        let aad = format!("{did}\n{column}");
        let pt = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)?;
        String::from_utf8(pt).map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_tokens_open_only_with_the_same_key_did_and_column() {
        let s = Sealer::new([7; 32]);
        let sealed = s.seal("did:plc:a", "access_token", "secret-jwt");
        assert!(!sealed.contains("secret-jwt"));
        assert_eq!(
            s.open("did:plc:a", "access_token", &sealed).unwrap(),
            "secret-jwt"
        );
        // Two seals of one value differ (fresh nonce).
        assert_ne!(sealed, s.seal("did:plc:a", "access_token", "secret-jwt"));
        assert_eq!(
            s.open("did:plc:b", "access_token", &sealed),
            Err(SealError::Open)
        );
        assert_eq!(
            s.open("did:plc:a", "refresh_token", &sealed),
            Err(SealError::Open)
        );
        assert_eq!(
            Sealer::new([8; 32]).open("did:plc:a", "access_token", &sealed),
            Err(SealError::Open)
        );
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            s.open("did:plc:a", "access_token", &tampered),
            Err(SealError::Open)
        );
    }

    #[test]
    fn key_file_is_created_0600_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        assert!(matches!(
            Sealer::load(None, &path, false),
            Err(SealError::Key(_))
        ));
        let a = Sealer::load(None, &path, true).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = a.seal("d", "c", "x");
        let b = Sealer::load(None, &path, true).unwrap();
        assert_eq!(b.open("d", "c", &sealed).unwrap(), "x");
        // The environment key wins over the file.
        let env = "11".repeat(32);
        let c = Sealer::load(Some(&env), &path, true).unwrap();
        assert_eq!(c.open("d", "c", &sealed), Err(SealError::Open));
        let e = Sealer::load(Some("short"), &path, true).unwrap_err();
        assert!(e.to_string().contains(KEY_ENV) && !e.to_string().contains("short"));
    }
}
