//! Password policy and hashing.
//!
//! Hashing is argon2id with the `argon2` crate's defaults (OWASP's minimum: 19 MiB, 2 passes, 1
//! lane), stored as a PHC string so the parameters can be raised later without a migration.
//! The policy refuses short passwords and "breach-style" weak ones: the password's core
//! (lowercased, common leetspeak undone, trailing digits and symbols removed) is one of the most
//! common breached passwords (embedded list), a keyboard or alphabet run, repeats a few
//! characters only, or contains the username.

use std::collections::HashSet;
use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::Error;

/// Minimum length, in characters.
pub const MIN_LEN: usize = 12;
/// Maximum length, in bytes (hashing cost stays bounded).
pub const MAX_LEN: usize = 1024;

static COMMON: &str = include_str!("common-passwords.txt");

fn common() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

const RUNS: &[&str] = &[
    "abcdefghijklmnopqrstuvwxyz",
    "qwertyuiopasdfghjklzxcvbnm",
    "qwertzuiopasdfghjklyxcvbnm",
    "azertyuiopqsdfghjklmwxcvbn",
    "1234567890",
    "0987654321",
    "zyxwvutsrqponmlkjihgfedcba",
    "mnbvcxzlkjhgfdsapoiuytrewq",
];

fn unleet(c: char) -> char {
    match c {
        '0' => 'o',
        '1' | '!' | '|' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' => 't',
        '8' => 'b',
        '9' => 'g',
        c => c,
    }
}

/// Why `password` is refused, if it is. `username` (when known) must not be part of it.
pub fn weakness(password: &str, username: Option<&str>) -> Option<String> {
    let chars = password.chars().count();
    if chars < MIN_LEN {
        return Some(format!(
            "the password is too short: use at least {MIN_LEN} characters (a few unrelated words work well)"
        ));
    }
    if password.len() > MAX_LEN {
        return Some(format!("the password is longer than {MAX_LEN} bytes"));
    }
    let lower = password.to_lowercase();
    let distinct: HashSet<char> = lower.chars().collect();
    if distinct.len() < 5 {
        return Some("the password repeats too few different characters".into());
    }
    if let Some(u) = username.map(str::to_lowercase)
        && u.chars().count() >= 3
        && lower.contains(&u)
    {
        return Some("the password contains the username".into());
    }
    // The core: lowercase, trailing digits and symbols removed, leetspeak undone.
    let trimmed = lower.trim_end_matches(|c: char| !c.is_alphabetic());
    let trimmed = if trimmed.chars().count() >= 4 {
        trimmed
    } else {
        lower.as_str()
    };
    let core: String = trimmed
        .chars()
        .map(unleet)
        .filter(|c| c.is_alphanumeric())
        .collect();
    let plain: String = lower.chars().filter(|c| c.is_alphanumeric()).collect();
    let list = common();
    if list.contains(core.as_str()) || list.contains(plain.as_str()) {
        return Some(
            "the password is one of the most common passwords found in data breaches".into(),
        );
    }
    // The core repeated ("passwordpassword", "qwertyqwerty").
    for unit in 1..=core.len() / 2 {
        if core.len().is_multiple_of(unit)
            && core.is_char_boundary(unit)
            && core[..unit].repeat(core.len() / unit) == core
            && (unit < 4 || list.contains(&core[..unit]))
        {
            return Some(
                "the password repeats a common word or a short pattern: add unrelated words".into(),
            );
        }
    }
    if lower.chars().all(|c| c.is_ascii_digit()) {
        return Some("the password is only digits: add words".into());
    }
    if plain.len() >= 8 && RUNS.iter().any(|r| r.repeat(2).contains(plain.as_str())) {
        return Some("the password is a keyboard or alphabet sequence".into());
    }
    None
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// Hashes a password (argon2id, random salt) into a PHC string.
pub fn hash(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Invalid(format!("cannot hash the password: {e}")))
}

/// Checks a password against a PHC string (any argon2 variant and parameters).
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_LEN {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(h) => hasher().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, verified against when the username does not exist so that
/// the answer takes as long as for a real user.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash(&super::token::random_urlsafe(24)).unwrap_or_else(|_| {
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2bZ0bXf7rJ2bI+eCqPbq4d3s8w7sJZ9gk0xQn2mY8yQ".into()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_passwords_are_refused() {
        for p in [
            "short",
            "Password123!",
            "P@ssw0rd2024",
            "qwertyuiop12",
            "1234567890123",
            "aaaaaaaaaaaaaaa",
            "abababababab",
            "passwordpassword",
            "iloveyou12345",
            "abcdefghijklm",
            "Tr0ub4dor&3",
        ] {
            assert!(weakness(p, None).is_some(), "{p} accepted");
        }
        assert!(
            weakness("alice-and-her-cat", Some("alice"))
                .unwrap()
                .contains("username")
        );
        for p in [
            "correct horse battery staple",
            "violet-otter-carries-lamps",
            "Gx7#pQ2!vL9@",
        ] {
            assert_eq!(weakness(p, Some("admin")), None, "{p} refused");
        }
    }

    #[test]
    fn list_is_loaded() {
        assert!(common().len() > 300);
        assert!(common().contains("password"));
        assert!(!common().iter().any(|l| l.starts_with('#')));
    }

    #[test]
    fn hash_and_verify() {
        let h = hash("violet-otter-carries-lamps").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("violet-otter-carries-lamps", &h));
        assert!(!verify("violet-otter-carries-lamp", &h));
        assert!(!verify("x", "not a hash"));
        assert!(!verify("x", dummy_hash()));
    }
}
