//! Verified tokens remembered for a moment: a till sends every request with the same token, and
//! reading it back each time was a database round trip per request (on SQLite as many as the
//! receipt writer's statements).
//!
//! A token deleted through this server is forgotten at once. One deleted through another server
//! on the same database (scaled out), or removed from the database by hand, is refused here
//! within [`TTL`]. Unknown tokens are not remembered: every refusal reads the database.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use savdo_storage::TokenInfo;
use uuid::Uuid;

/// How long a verified token is believed without reading it again.
pub const TTL: Duration = Duration::from_secs(1);
/// Tokens remembered at most; beyond it the stale ones go, then all (the next requests read).
const CAPACITY: usize = 4096;

/// The SHA-256 of a token, as stored.
pub type TokenHash = [u8; 32];

#[derive(Default)]
pub struct TokenCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<TokenHash, (TokenInfo, Instant)>,
    /// Bumped by every forget: a read that began before it is not remembered (it may have seen
    /// the token just deleted).
    generation: u64,
}

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token, if verified less than [`TTL`] ago.
    pub fn get(&self, hash: &TokenHash) -> Option<TokenInfo> {
        self.get_at(hash, Instant::now())
    }

    fn get_at(&self, hash: &TokenHash, now: Instant) -> Option<TokenInfo> {
        let inner = self.lock();
        let (info, at) = inner.entries.get(hash)?;
        (now.saturating_duration_since(*at) < TTL).then(|| info.clone())
    }

    /// Take before reading a token from the database; hand to [`TokenCache::put`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Remember a token read from the database, unless a token was forgotten since `generation`.
    pub fn put(&self, hash: TokenHash, info: TokenInfo, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= CAPACITY {
            inner.entries.retain(|_, (_, at)| at.elapsed() < TTL);
            if inner.entries.len() >= CAPACITY {
                inner.entries.clear();
            }
        }
        inner.entries.insert(hash, (info, Instant::now()));
    }

    /// A token was deleted: refuse it from now on.
    pub fn forget(&self, id: Uuid) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.retain(|_, (info, _)| info.id != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use savdo_domain::tenant::Role;

    fn info(id: Uuid) -> TokenInfo {
        TokenInfo {
            id,
            tenant_id: Uuid::now_v7(),
            name: "till".into(),
            role: Role::Cashier,
            store_id: None,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn remembers_until_forgotten() {
        let cache = TokenCache::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        cache.put([1; 32], info(a), cache.generation());
        cache.put([2; 32], info(b), cache.generation());
        assert_eq!(cache.get(&[1; 32]).map(|i| i.id), Some(a));
        cache.forget(a);
        assert!(cache.get(&[1; 32]).is_none());
        assert_eq!(cache.get(&[2; 32]).map(|i| i.id), Some(b));
    }

    #[test]
    fn read_again_after_the_ttl() {
        let cache = TokenCache::default();
        let a = Uuid::now_v7();
        cache.put([1; 32], info(a), cache.generation());
        let now = Instant::now();
        assert!(cache.get_at(&[1; 32], now).is_some());
        assert!(cache.get_at(&[1; 32], now + TTL).is_none());
    }

    #[test]
    fn a_read_from_before_a_forget_is_not_remembered() {
        let cache = TokenCache::default();
        let a = Uuid::now_v7();
        let generation = cache.generation();
        // The token is deleted while its read is in flight.
        cache.forget(a);
        cache.put([1; 32], info(a), generation);
        assert!(cache.get(&[1; 32]).is_none());
    }

    #[test]
    fn stays_bounded() {
        let cache = TokenCache::default();
        for i in 0..(CAPACITY + 10) {
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.put(hash, info(Uuid::now_v7()), cache.generation());
        }
        assert!(cache.lock().entries.len() <= CAPACITY);
    }
}
