//! The hash an API key secret is stored and looked up by.

use sha2::{Digest, Sha256};

/// SHA-256 of a key secret; keys carry 256 bits of entropy, so a fast hash is enough at rest.
pub fn key_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}
