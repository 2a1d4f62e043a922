//! The per-session TopicFilter decision cache.
//!
//! Owned by the connection task, so lookups take no lock. Keyed by action and topic;
//! each entry expires after the TTL the plugins gave (the smallest in the chain), capped
//! by `topic-check.cache.max_ttl`. Denials are cached like allows. At `max_entries`
//! expired entries are swept; if none had expired, the new decision is not cached.

use std::time::Duration;

use bytestring::ByteString;
use foldhash::HashMap;
use tokio::time::Instant;

use super::config::CacheConfig;

/// Cached decisions of one session.
pub struct DecisionCache {
    /// One map per action (publish, subscribe, receive): lookups by `&str`, no key
    /// allocation on the hot path.
    by_action: [HashMap<ByteString, (bool, Instant)>; 3],
    /// The last hit per action: a stream of messages on one topic (the common case)
    /// compares a string instead of hashing it.
    last_hit: [Option<(ByteString, bool, Instant)>; 3],
    max_entries: usize,
    max_ttl: Duration,
}

/// Which action a cached decision is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachedAction {
    /// PUBLISH.
    Publish = 0,
    /// SUBSCRIBE.
    Subscribe = 1,
    /// RECEIVE.
    Receive = 2,
}

impl DecisionCache {
    /// An empty cache with the configured bounds.
    pub fn new(config: &CacheConfig) -> Self {
        Self {
            by_action: Default::default(),
            last_hit: Default::default(),
            max_entries: config.max_entries,
            max_ttl: config.max_ttl,
        }
    }

    /// Number of entries (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.by_action.iter().map(HashMap::len).sum()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached decision, if fresh.
    pub fn get(&mut self, action: CachedAction, topic: &str, now: Instant) -> Option<bool> {
        let a = action as usize;
        if let Some((last, allowed, expires)) = &self.last_hit[a]
            && *expires > now
            && &**last == topic
        {
            return Some(*allowed);
        }
        let (key, (allowed, expires)) = self.by_action[a].get_key_value(topic)?;
        if *expires <= now {
            return None;
        }
        self.last_hit[a] = Some((key.clone(), *allowed, *expires));
        Some(*allowed)
    }

    /// Caches a decision for `ttl` (capped). Returns whether it was stored.
    pub fn put(
        &mut self,
        action: CachedAction,
        topic: ByteString,
        allowed: bool,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        let ttl = ttl.min(self.max_ttl);
        if ttl.is_zero() || self.max_entries == 0 {
            return false;
        }
        if self.len() >= self.max_entries {
            for map in &mut self.by_action {
                map.retain(|_, (_, expires)| *expires > now);
            }
            self.last_hit = Default::default();
            if self.len() >= self.max_entries {
                return false;
            }
        }
        // A newer decision for the memoized topic replaces the memo too.
        let a = action as usize;
        if self.last_hit[a].as_ref().is_some_and(|(t, ..)| *t == topic) {
            self.last_hit[a] = None;
        }
        self.by_action[a].insert(topic, (allowed, now + ttl));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_entries: usize) -> DecisionCache {
        DecisionCache::new(&CacheConfig {
            max_entries,
            max_ttl: Duration::from_secs(10),
        })
    }

    #[test]
    fn entries_expire_and_are_per_action() {
        let mut c = cache(10);
        let t0 = Instant::now();
        assert!(c.put(
            CachedAction::Publish,
            "a".into(),
            false,
            Duration::from_secs(1),
            t0
        ));
        assert_eq!(c.get(CachedAction::Publish, "a", t0), Some(false));
        assert_eq!(c.get(CachedAction::Receive, "a", t0), None);
        assert_eq!(
            c.get(CachedAction::Publish, "a", t0 + Duration::from_secs(2)),
            None
        );
    }

    #[test]
    fn the_last_hit_memo_follows_updates_and_expiry() {
        let mut c = cache(10);
        let t0 = Instant::now();
        c.put(
            CachedAction::Receive,
            "t".into(),
            true,
            Duration::from_secs(1),
            t0,
        );
        assert_eq!(c.get(CachedAction::Receive, "t", t0), Some(true));
        assert_eq!(
            c.get(CachedAction::Receive, "t", t0),
            Some(true),
            "from the memo"
        );
        c.put(
            CachedAction::Receive,
            "t".into(),
            false,
            Duration::from_secs(5),
            t0,
        );
        assert_eq!(
            c.get(CachedAction::Receive, "t", t0),
            Some(false),
            "memo replaced"
        );
        assert_eq!(c.get(CachedAction::Receive, "u", t0), None);
        let later = t0 + Duration::from_secs(6);
        assert_eq!(
            c.get(CachedAction::Receive, "t", later),
            None,
            "memo expires too"
        );
    }

    #[test]
    fn ttl_is_capped_and_zero_is_not_cached() {
        let mut c = cache(10);
        let t0 = Instant::now();
        assert!(!c.put(CachedAction::Publish, "z".into(), true, Duration::ZERO, t0));
        c.put(
            CachedAction::Publish,
            "a".into(),
            true,
            Duration::from_secs(3600),
            t0,
        );
        assert_eq!(
            c.get(CachedAction::Publish, "a", t0 + Duration::from_secs(9)),
            Some(true)
        );
        assert_eq!(
            c.get(CachedAction::Publish, "a", t0 + Duration::from_secs(11)),
            None
        );
    }

    #[test]
    fn bounded_sweeps_expired_then_refuses() {
        let mut c = cache(2);
        let t0 = Instant::now();
        assert!(c.put(
            CachedAction::Publish,
            "a".into(),
            true,
            Duration::from_secs(1),
            t0
        ));
        assert!(c.put(
            CachedAction::Publish,
            "b".into(),
            true,
            Duration::from_secs(5),
            t0
        ));
        assert!(!c.put(
            CachedAction::Publish,
            "c".into(),
            true,
            Duration::from_secs(5),
            t0
        ));
        let later = t0 + Duration::from_secs(2);
        assert!(c.put(
            CachedAction::Publish,
            "c".into(),
            true,
            Duration::from_secs(5),
            later
        ));
        assert_eq!(c.len(), 2);
    }
}
