//! API key material: keys are random, shown once, and stored as their SHA-256 hash.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{ApiKeyRecord, Store};

/// Prefix of every key, so a leaked key is recognisable.
pub const KEY_PREFIX: &str = "tb_";

/// A new random key: `tb_` + 32 random bytes in hex.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// The stored form of a key. Keys are 256-bit random, so a fast hash is safe here.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub fn hash_key_hex(key: &str) -> String {
    hex::encode(hash_key(key))
}

/// What listings show of a key.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(KEY_PREFIX.len() + 8).collect()
}

/// Creates a new key named `name` in `tier`: the raw key (to show once, never stored) and
/// its record.
pub async fn create(
    store: &dyn Store,
    name: &str,
    tier: &str,
) -> crate::Result<(String, ApiKeyRecord)> {
    let key = generate_key();
    let record = store
        .create_api_key(&hash_key_hex(&key), &display_prefix(&key), name, tier)
        .await?;
    Ok((key, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_only_their_hash_is_kept() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 64);
        assert_eq!(hash_key_hex(&a).len(), 64);
        assert_ne!(hash_key_hex(&a), hash_key_hex(&b));
        assert_eq!(display_prefix(&a), a[..11]);
    }
}
