//! Password hashing (argon2id), API key generation and hashing, random ids.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
// The shards look keys up by this hash too, so it lives in ringmq-core.
pub use ringmq_core::control::key_hash::key_hash;

/// Why a secret could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The OS random source failed.
    #[error("random source failed")]
    Random,
    /// argon2 refused its parameters or input.
    #[error("password hashing failed")]
    Hash,
}

/// The three API key kinds, by prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPrefix {
    /// `sk_`
    Secret,
    /// `pk_`
    Public,
    /// `rk_`
    Restricted,
}

impl KeyPrefix {
    /// The prefix string including the underscore.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPrefix::Secret => "sk_",
            KeyPrefix::Public => "pk_",
            KeyPrefix::Restricted => "rk_",
        }
    }
}

// Tests hash many passwords; the production cost would make them take minutes.
#[cfg(not(test))]
const ARGON_COST: (u32, u32, u32) = (19_456, 2, 1);
#[cfg(test)]
const ARGON_COST: (u32, u32, u32) = (8, 1, 1);

fn hasher() -> Result<Argon2<'static>, SecretError> {
    let (m, t, p) = ARGON_COST;
    let params = Params::new(m, t, p, None).map_err(|_| SecretError::Hash)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Fills `buf` from the OS random source.
pub fn fill_random(buf: &mut [u8]) -> Result<(), SecretError> {
    getrandom::getrandom(buf).map_err(|_| SecretError::Random)
}

/// Hashes a password with argon2id and a random salt into a PHC string.
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    let mut salt = [0u8; 16];
    fill_random(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| SecretError::Hash)?;
    let hash = hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|_| SecretError::Hash)?;
    Ok(hash.to_string())
}

/// Checks a password against a PHC string (slow by design: call it off the shard threads).
pub fn verify_password(phc: &str, password: &[u8]) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // The parameters come from the PHC string, so hashes made with other costs still verify.
    Argon2::default().verify_password(password, &parsed).is_ok()
}

/// A new API key secret: prefix + 32 random bytes in base64url without padding.
pub fn generate_key(kind: KeyPrefix) -> Result<String, SecretError> {
    let mut raw = [0u8; 32];
    fill_random(&mut raw)?;
    let mut out = String::with_capacity(3 + 43);
    out.push_str(kind.as_str());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw, &mut out);
    Ok(out)
}

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ALNUM_MIXED: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

fn random_from(alphabet: &[u8], len: usize) -> Result<String, SecretError> {
    let mut out = String::with_capacity(len);
    // Rejection sampling keeps every symbol equally likely.
    let limit = 256 - (256 % alphabet.len());
    let mut buf = [0u8; 64];
    while out.len() < len {
        fill_random(&mut buf)?;
        for &b in &buf {
            if out.len() == len {
                break;
            }
            if (b as usize) < limit {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    Ok(out)
}

/// `prefix` + `len` random lowercase letters/digits, e.g. `random_id("org_", 12)`.
pub fn random_id(prefix: &str, len: usize) -> Result<String, SecretError> {
    let mut id = String::with_capacity(prefix.len() + len);
    id.push_str(prefix);
    id.push_str(&random_from(ALNUM, len)?);
    Ok(id)
}

/// A random password of `len` mixed-case letters and digits (token-exchange credentials).
pub fn random_password(len: usize) -> Result<String, SecretError> {
    random_from(ALNUM_MIXED, len)
}

/// Constant-time equality so comparing secrets leaks no prefix length.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_roundtrip() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password(&phc, b"correct horse"));
        assert!(!verify_password(&phc, b"wrong horse"));
        assert!(!verify_password("garbage", b"x"));
        assert_ne!(phc, hash_password("correct horse").unwrap());
    }

    #[test]
    fn keys_and_ids() {
        let k = generate_key(KeyPrefix::Restricted).unwrap();
        assert!(k.starts_with("rk_"));
        assert_eq!(k.len(), 46);
        assert_ne!(k, generate_key(KeyPrefix::Restricted).unwrap());
        assert_eq!(key_hash(&k), key_hash(&k));
        let id = random_id("org_", 12).unwrap();
        assert_eq!(id.len(), 16);
        assert!(id[4..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_eq!(random_password(24).unwrap().len(), 24);
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
