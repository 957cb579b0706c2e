//! Random secrets and their stored form.

use std::fmt;

use base64::Engine as _;
use rand::RngCore;
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret string (password, token) whose `Debug` is redacted so that it cannot reach a log
/// by accident. Read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS generator; `rand::rng()` (ChaCha seeded from it) if it ever failed.
    if OsRng.try_fill_bytes(&mut b).is_err() {
        rand::rng().fill_bytes(&mut b);
    }
    b
}

/// `n` random bytes, base64url without padding.
pub fn random_urlsafe(n: usize) -> String {
    let mut v = vec![0u8; n];
    if OsRng.try_fill_bytes(&mut v).is_err() {
        rand::rng().fill_bytes(&mut v);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

/// A 256-bit session id or CSRF token.
pub fn session_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// Prefix of API tokens, so that secret scanners and humans recognise them.
pub const API_TOKEN_PREFIX: &str = "gat_";

/// A 256-bit API token.
pub fn api_token() -> String {
    format!(
        "{API_TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
    )
}

/// Letters of the setup token: lowercase, without look-alikes (no 0/o, 1/l/i): 31 symbols.
const SETUP_ALPHABET: &[u8; 31] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// A setup token a person can type from a console: 4 groups of 5 characters (~99 bits).
pub fn setup_token() -> String {
    let bytes = random_bytes::<20>();
    let mut out = String::with_capacity(23);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 5 == 0 {
            out.push('-');
        }
        // 256 % 31 = 8: the first 8 symbols are 3% likelier, which costs well under a bit.
        let idx = usize::from(*b) % SETUP_ALPHABET.len();
        out.push(char::from(SETUP_ALPHABET[idx]));
    }
    out
}

/// A typed setup token in canonical form: lowercase, without spaces and dashes.
pub fn normalize_setup_token(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// SHA-256 of a secret, hex: the stored form of high-entropy tokens.
pub fn sha256_hex(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(64);
    for b in d {
        use std::fmt::Write;
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Compares two strings in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let t = setup_token();
        assert_eq!(t.len(), 23, "{t}");
        assert_eq!(t.matches('-').count(), 3);
        assert!(
            t.chars()
                .all(|c| c == '-' || (c.is_ascii_alphanumeric() && !"01loi".contains(c))),
            "{t}"
        );
        assert_ne!(setup_token(), setup_token());
        assert_eq!(normalize_setup_token(" ABCDE-fghjk "), "abcdefghjk");
        assert_eq!(session_token().len(), 43);
        assert!(api_token().starts_with("gat_"));
        assert_eq!(sha256_hex("abc").len(), 64);
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret(<redacted>)"
        );
    }
}
