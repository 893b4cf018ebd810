//! JSON text writers with Go's exact output: strings escaped as Jetstream's
//! Go encoder does, CIDs as multibase base32, bytes as unpadded base64,
//! integers.
//!
//! Owns: byte-level output formatting. Does not own: structure (key order,
//! `$link`/`$bytes`/blob shapes: see `transcode`).
//!
//! Invariants: input strings are already valid UTF-8; the output is valid
//! UTF-8 and a valid JSON token; escaping matches `goccy/go-json` with HTML
//! escaping on (Jetstream's default): `\"` `\\` `\n` `\r` `\t`, other
//! controls and `<` `>` `&` as `\u00XX` (lower-case hex), U+2028/U+2029 as
//! `\u2028`/`\u2029`, everything else (including DEL and non-ASCII) as is.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

/// Appends the multibase base32 (lower-case, no padding, `b` prefix) form of a
/// binary CIDv1, which is how every CIDv1 prints as a string.
pub fn push_cid_base32(out: &mut Vec<u8>, cid: &[u8]) {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    out.reserve(1 + cid.len().div_ceil(5) * 8);
    out.push(b'b');
    let mut chunks = cid.chunks_exact(5);
    for c in &mut chunks {
        let bits = u64::from_be_bytes([0, 0, 0, c[0], c[1], c[2], c[3], c[4]]);
        let at = |shift: u32| ALPHABET[((bits >> shift) & 31) as usize];
        out.extend_from_slice(&[at(35), at(30), at(25), at(20), at(15), at(10), at(5), at(0)]);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut block = [0u8; 5];
        block[..rest.len()].copy_from_slice(rest);
        let bits = block.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        for i in 0..(rest.len() * 8).div_ceil(5) {
            out.push(ALPHABET[((bits >> (35 - 5 * i)) & 31) as usize]);
        }
    }
}

/// Bytes that need a look in [`push_json_str`]: controls, `"` `\` `<` `>` `&`,
/// and 0xE2 (first byte of U+2028/U+2029).
static NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[b'&' as usize] = true;
    t[0xE2] = true;
    t
};

/// True if any byte of the 8-byte word is flagged in [`NEEDS_ESCAPE`]
/// (bit tricks: "has a zero byte" / "has a byte < n", exact for "any").
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const L: u64 = 0x0101_0101_0101_0101;
    const H: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(L) & !v & H;
    let below_space = w.wrapping_sub(L * 0x20) & !w & H;
    let hits = below_space
        | zero(w ^ (L * u64::from(b'"')))
        | zero(w ^ (L * u64::from(b'\\')))
        | zero(w ^ (L * u64::from(b'<')))
        | zero(w ^ (L * u64::from(b'>')))
        | zero(w ^ (L * u64::from(b'&')))
        | zero(w ^ (L * 0xE2));
    hits != 0
}

/// Appends `s` as a JSON string, escaped exactly as Go's JSON encoders do.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    push_json_utf8(out, s.as_bytes());
}

/// [`push_json_str`] for bytes already checked to be UTF-8.
pub(super) fn push_json_utf8(out: &mut Vec<u8>, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        while let Some(word) = b.get(i..i + 8) {
            if word_needs_escape(u64::from_le_bytes([
                word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
            ])) {
                break;
            }
            i += 8;
        }
        let Some(&c) = b.get(i) else { break };
        if !NEEDS_ESCAPE[c as usize] {
            i += 1;
            continue;
        }
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0xE2 if b.get(i + 1) == Some(&0x80) && matches!(b.get(i + 2), Some(0xA8 | 0xA9)) => {
                out.extend_from_slice(&b[start..i]);
                out.extend_from_slice(if b[i + 2] == 0xA8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 3;
                start = i;
                continue;
            }
            0xE2 => {
                i += 1;
                continue;
            }
            _ => {
                out.extend_from_slice(&b[start..i]);
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(c >> 4) as usize],
                    HEX[(c & 15) as usize],
                ]);
                i += 1;
                start = i;
                continue;
            }
        };
        out.extend_from_slice(&b[start..i]);
        out.extend_from_slice(esc);
        i += 1;
        start = i;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

pub(super) fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `{"$link":"b…"}` for a binary CIDv1.
pub(super) fn push_link(out: &mut Vec<u8>, cid: &[u8]) {
    out.extend_from_slice(b"{\"$link\":\"");
    push_cid_base32(out, cid);
    out.extend_from_slice(b"\"}");
}

/// Appends `{"$bytes":"…"}` (standard alphabet, no padding).
pub(super) fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(b"{\"$bytes\":\"");
    let start = out.len();
    out.resize(start + bytes.len().div_ceil(3) * 4, 0);
    let written = STANDARD_NO_PAD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
    out.extend_from_slice(b"\"}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn base32_matches_cid_crate() {
        for s in [
            "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a",
            "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity",
        ] {
            let c = cid::Cid::try_from(s).unwrap();
            let mut out = Vec::new();
            push_cid_base32(&mut out, &c.to_bytes());
            assert_eq!(String::from_utf8(out).unwrap(), s);
        }
    }

    /// Go's string escaping, one char at a time (the obvious, slow way).
    fn go_escape_reference(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '<' | '>' | '&' | '\u{0}'..='\u{1f}' | '\u{2028}' | '\u{2029}' => {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    proptest! {
        #[test]
        fn string_escaping_matches_go_reference(s in "[\\x00-\\x7f\u{2026}-\u{202a}\u{e000}é😀<>&]{0,40}") {
            let mut out = Vec::new();
            push_json_str(&mut out, &s);
            prop_assert_eq!(String::from_utf8(out).unwrap(), go_escape_reference(&s));
        }

    }
}
