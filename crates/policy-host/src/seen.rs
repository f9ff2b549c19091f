//! The seen-before store plugins share: `seen_before(key, ttl)` records a key for `ttl`
//! and answers whether it was already there, atomically. Replay windows keep their nonces
//! here, so every instance of every plugin sees every nonce of this sidecar.
//!
//! Bounded: at `capacity` keys the store answers "seen" for new keys (the request is
//! refused) rather than forget a nonce and let a replay through. Size it for the signed
//! request rate times the replay window (e.g. 1000 req/s x 330 s = 330k keys); expired keys
//! count until moka's timer wheel evicts them (about a second later).

use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

/// Per-entry expiry: the value is the entry's TTL.
struct Ttl;

impl Expiry<String, Duration> for Ttl {
    fn expire_after_create(
        &self,
        _key: &String,
        ttl: &Duration,
        _now: Instant,
    ) -> Option<Duration> {
        Some(*ttl)
    }
}

/// The store.
pub struct SeenStore {
    keys: Cache<String, Duration>,
    capacity: u64,
}

impl SeenStore {
    /// A store holding at most `capacity` live keys.
    pub fn new(capacity: u64) -> Self {
        Self {
            keys: Cache::builder().expire_after(Ttl).build(),
            capacity,
        }
    }

    /// Records `key` for `ttl`; `true` if it was already recorded (or the store is full).
    pub fn seen_before(&self, key: &str, ttl: Duration) -> bool {
        if self.keys.contains_key(key) {
            return true;
        }
        if self.keys.entry_count() >= self.capacity {
            self.keys.run_pending_tasks();
            if self.keys.entry_count() >= self.capacity {
                tracing::error!(
                    capacity = self.capacity,
                    "seen-before store full; refusing new keys until entries expire"
                );
                return true;
            }
        }
        !self.keys.entry(key.to_owned()).or_insert(ttl).is_fresh()
    }

    /// Live keys (approximate).
    pub fn len(&self) -> u64 {
        self.keys.entry_count()
    }

    /// Whether no key is live (approximate).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_seen_once_until_it_expires() {
        let store = SeenStore::new(1000);
        assert!(!store.seen_before("a", Duration::from_millis(50)));
        assert!(store.seen_before("a", Duration::from_millis(50)));
        assert!(!store.seen_before("b", Duration::from_secs(60)));
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.keys.contains_key("a") {
            assert!(Instant::now() < deadline, "the entry expires");
            std::thread::yield_now();
        }
        assert!(
            !store.seen_before("a", Duration::from_secs(60)),
            "expired keys may come again"
        );
        assert!(store.seen_before("b", Duration::from_secs(60)));
    }

    #[test]
    fn a_full_store_fails_closed() {
        let store = SeenStore::new(2);
        assert!(!store.seen_before("a", Duration::from_secs(60)));
        assert!(!store.seen_before("b", Duration::from_secs(60)));
        store.keys.run_pending_tasks();
        assert!(
            store.seen_before("c", Duration::from_secs(60)),
            "refused, not forgotten"
        );
        assert!(store.seen_before("a", Duration::from_secs(60)));
    }
}
