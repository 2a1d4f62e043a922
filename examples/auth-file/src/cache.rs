//! A small cache of recent successful verifications, so a reconnect storm of the same clients
//! does not run argon2 for each of them again.
//!
//! It keeps, per user, a keyed SHA-512 of the password that last verified (the key is random
//! per process, never the password itself) and when. Bounded in size and age; it belongs to
//! one version of the file, so a reload (a changed or removed password) forgets it.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha512};
use subtle::ConstantTimeEq as _;

/// How many users are remembered at most.
const CAPACITY: usize = 4096;
/// How long a verification is remembered.
const TTL: Duration = Duration::from_secs(300);

/// Random per process, so the digests cannot be compared with precomputed tables.
static KEY: LazyLock<[u8; 16]> = LazyLock::new(argon2::password_hash::generate_salt);

fn digest(user: &str, password: &[u8]) -> [u8; 64] {
    Sha512::new()
        .chain_update(*KEY)
        .chain_update((user.len() as u64).to_le_bytes())
        .chain_update(user)
        .chain_update(password)
        .finalize()
        .into()
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct VerifiedCache {
    entries: Mutex<HashMap<String, ([u8; 64], Instant)>>,
}

impl VerifiedCache {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether `password` verified for `user` within the last [`TTL`].
    pub(crate) fn hit(&self, user: &str, password: &[u8]) -> bool {
        let want = digest(user, password);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(user)
            .is_some_and(|(got, at)| at.elapsed() < TTL && bool::from(got.ct_eq(&want)))
    }

    /// Remembers that `password` verified for `user`.
    pub(crate) fn insert(&self, user: &str, password: &[u8]) {
        let entry = (digest(user, password), Instant::now());
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY && !entries.contains_key(user) {
            entries.retain(|_, (_, at)| at.elapsed() < TTL);
            if entries.len() >= CAPACITY {
                // Still full of fresh entries: start over rather than grow.
                entries.clear();
            }
        }
        entries.insert(user.to_owned(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_only_the_verified_password() {
        let cache = VerifiedCache::new();
        assert!(!cache.hit("alice", b"pw"));
        cache.insert("alice", b"pw");
        assert!(cache.hit("alice", b"pw"));
        assert!(!cache.hit("alice", b"other"));
        assert!(!cache.hit("bob", b"pw"));
        cache.insert("alice", b"new");
        assert!(!cache.hit("alice", b"pw"), "one password per user");
    }

    #[test]
    fn stays_bounded() {
        let cache = VerifiedCache::new();
        for i in 0..CAPACITY + 10 {
            cache.insert(&format!("u{i}"), b"pw");
        }
        assert!(cache.entries.lock().unwrap().len() <= CAPACITY);
    }
}
