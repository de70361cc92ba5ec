//! Key material: generating secrets, hashing them, and the short non-secret `key_id`.
//!
//! A virtual key is `sk-` followed by 32 base62 characters from the operating system's random source
//! (about 190 bits). Only its SHA-256 is stored: with that much entropy a fast hash cannot be
//! brute-forced, so no slow password hash is needed and authentication costs one SHA-256.

use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::Rng;
use sha2::{Digest, Sha256};

/// The prefix of every generated key.
pub const PREFIX: &str = "sk-";
/// Random base62 characters after the prefix (32 × log2(62) ≈ 190 bits).
const RANDOM_CHARS: usize = 32;

/// A SHA-256 digest of a secret: the lookup key of the in-memory view.
pub type Digest32 = [u8; 32];

/// A fresh secret `sk-...`.
pub fn generate() -> String {
    let mut s = String::with_capacity(PREFIX.len() + RANDOM_CHARS);
    s.push_str(PREFIX);
    s.extend(
        OsRng
            .sample_iter(&Alphanumeric)
            .take(RANDOM_CHARS)
            .map(char::from),
    );
    s
}

/// SHA-256 of a secret.
pub fn digest(secret: &str) -> Digest32 {
    Sha256::digest(secret.as_bytes()).into()
}

/// Lowercase hex of a digest (the form stored in the database).
pub fn to_hex(d: &Digest32) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in d {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Parses 64 hex digits back into a digest.
pub fn from_hex(s: &str) -> Option<Digest32> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// The short, non-secret identifier for logs, metrics and listings: `k` + the first 12 hex digits of
/// the hash (48 bits: collisions are unlikely among a deployment's keys, and it reveals nothing usable).
pub fn key_id(hash_hex: &str) -> String {
    let n = hash_hex.len().min(12);
    format!("k{}", &hash_hex[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_long_unique_and_base62() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.starts_with("sk-"));
        assert_eq!(a.len(), 35);
        assert!(a[3..].chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn hex_round_trip_and_key_id() {
        let d = digest("sk-test");
        let h = to_hex(&d);
        assert_eq!(h.len(), 64);
        assert_eq!(from_hex(&h), Some(d));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(key_id(&h), format!("k{}", &h[..12]));
        // SHA-256("abc"), a published test vector.
        assert_eq!(
            to_hex(&digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
