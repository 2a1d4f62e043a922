//! The per-session TopicFilter decision cache.
//!
//! Owned by the connection task, so lookups take no lock. Keyed by action and topic;
//! each entry expires after the TTL the plugins gave (the smallest in the chain), capped
//! by `topic-check.cache.max_ttl`. Denials are cached like allows.
//!
//! Bounded twice: `max_entries` decisions and `max_bytes` bytes of topics. At either
//! bound expired entries are swept; if that does not make room, the new decision is not
//! cached ([`Put::Full`]; the caller counts it) and the chain is asked next time.
//!
//! Keys own their bytes: a topic handed in is copied, never kept as a slice of the
//! buffer it was decoded from, so a cached decision cannot pin a client's receive
//! buffer (a 1 MB denied PUBLISH would otherwise stay in memory for the entry's TTL).

use std::time::Duration;

use bytestring::ByteString;
use foldhash::HashMap;
use tokio::time::Instant;

use super::config::CacheConfig;

/// Cached decisions of one session.
pub struct DecisionCache {
    /// One map per action (publish, subscribe, receive): lookups by `&str`, no key
    /// allocation on the hot path.
    by_action: [HashMap<ByteString, (Cached, Instant)>; 3],
    /// The last hit per action: a stream of messages on one topic (the common case)
    /// compares a string instead of hashing it.
    last_hit: [Option<(ByteString, Cached, Instant)>; 3],
    /// Bytes of the topics held as keys.
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    max_ttl: Duration,
}

/// What [`DecisionCache::put`] did with a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Cached.
    Stored,
    /// Not cacheable: a TTL of zero, or a cache configured off (`max_entries: 0`).
    Uncacheable,
    /// Not cached: the cache is at `max_entries` or `max_bytes` with nothing expired.
    Full,
}

/// A cached decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    /// Allowed.
    Allowed,
    /// Denied, with the MQTT 5 reason code the deciding plugin asked for (0: the
    /// broker's choice). The plugin's Reason String is not kept.
    Denied(u8),
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
            bytes: 0,
            max_entries: config.max_entries,
            max_bytes: config.max_bytes,
            max_ttl: config.max_ttl,
        }
    }

    /// Bytes of topics held (expired entries included until swept).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn has_room_for(&self, topic_len: usize) -> bool {
        self.len() < self.max_entries && self.bytes + topic_len <= self.max_bytes
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
    pub fn get(&mut self, action: CachedAction, topic: &str, now: Instant) -> Option<Cached> {
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

    /// Caches a decision for `ttl` (capped). The topic is copied: the cache never
    /// shares the caller's buffer.
    pub fn put(
        &mut self,
        action: CachedAction,
        topic: &str,
        allowed: Cached,
        ttl: Duration,
        now: Instant,
    ) -> Put {
        let ttl = ttl.min(self.max_ttl);
        if ttl.is_zero() || self.max_entries == 0 {
            return Put::Uncacheable;
        }
        let a = action as usize;
        // A newer decision for a topic already held replaces it in place: no new bytes.
        if let Some(entry) = self.by_action[a].get_mut(topic) {
            *entry = (allowed, now + ttl);
            if self.last_hit[a]
                .as_ref()
                .is_some_and(|(t, ..)| &**t == topic)
            {
                self.last_hit[a] = None;
            }
            return Put::Stored;
        }
        if !self.has_room_for(topic.len()) {
            for map in &mut self.by_action {
                map.retain(|_, (_, expires)| *expires > now);
            }
            self.bytes = self
                .by_action
                .iter()
                .flat_map(|m| m.keys())
                .map(|k| k.len())
                .sum();
            self.last_hit = Default::default();
            if !self.has_room_for(topic.len()) {
                return Put::Full;
            }
        }
        self.bytes += topic.len();
        // `ByteString::from(&str)` copies into a buffer of its own.
        self.by_action[a].insert(ByteString::from(topic), (allowed, now + ttl));
        Put::Stored
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn cache(max_entries: usize) -> DecisionCache {
        DecisionCache::new(&CacheConfig {
            max_entries,
            max_ttl: Duration::from_secs(10),
            ..Default::default()
        })
    }

    #[test]
    fn entries_expire_and_are_per_action() {
        let mut c = cache(10);
        let t0 = Instant::now();
        assert_eq!(
            c.put(CachedAction::Publish, "a", Cached::Denied(0), SEC, t0),
            Put::Stored
        );
        assert_eq!(
            c.get(CachedAction::Publish, "a", t0),
            Some(Cached::Denied(0))
        );
        assert_eq!(c.get(CachedAction::Receive, "a", t0), None);
        assert_eq!(c.get(CachedAction::Publish, "a", t0 + 2 * SEC), None);
    }

    #[test]
    fn the_last_hit_memo_follows_updates_and_expiry() {
        let mut c = cache(10);
        let t0 = Instant::now();
        c.put(CachedAction::Receive, "t", Cached::Allowed, SEC, t0);
        assert_eq!(c.get(CachedAction::Receive, "t", t0), Some(Cached::Allowed));
        assert_eq!(
            c.get(CachedAction::Receive, "t", t0),
            Some(Cached::Allowed),
            "from the memo"
        );
        c.put(CachedAction::Receive, "t", Cached::Denied(0), 5 * SEC, t0);
        assert_eq!(
            c.get(CachedAction::Receive, "t", t0),
            Some(Cached::Denied(0)),
            "memo replaced"
        );
        assert_eq!(c.bytes(), 1, "a replaced decision adds no bytes");
        assert_eq!(c.get(CachedAction::Receive, "u", t0), None);
        assert_eq!(
            c.get(CachedAction::Receive, "t", t0 + 6 * SEC),
            None,
            "memo expires too"
        );
    }

    #[test]
    fn ttl_is_capped_and_zero_is_not_cached() {
        let mut c = cache(10);
        let t0 = Instant::now();
        assert_eq!(
            c.put(
                CachedAction::Publish,
                "z",
                Cached::Allowed,
                Duration::ZERO,
                t0
            ),
            Put::Uncacheable
        );
        c.put(CachedAction::Publish, "a", Cached::Allowed, 3600 * SEC, t0);
        assert_eq!(
            c.get(CachedAction::Publish, "a", t0 + 9 * SEC),
            Some(Cached::Allowed)
        );
        assert_eq!(c.get(CachedAction::Publish, "a", t0 + 11 * SEC), None);
    }

    #[test]
    fn bounded_sweeps_expired_then_refuses() {
        let mut c = cache(2);
        let t0 = Instant::now();
        assert_eq!(
            c.put(CachedAction::Publish, "a", Cached::Allowed, SEC, t0),
            Put::Stored
        );
        assert_eq!(
            c.put(CachedAction::Publish, "b", Cached::Allowed, 5 * SEC, t0),
            Put::Stored
        );
        assert_eq!(
            c.put(CachedAction::Publish, "c", Cached::Allowed, 5 * SEC, t0),
            Put::Full
        );
        let later = t0 + 2 * SEC;
        assert_eq!(
            c.put(CachedAction::Publish, "c", Cached::Allowed, 5 * SEC, later),
            Put::Stored
        );
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn bounded_in_bytes_of_topics() {
        let mut c = DecisionCache::new(&CacheConfig {
            max_entries: 100,
            max_bytes: 10,
            max_ttl: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        assert_eq!(
            c.put(CachedAction::Publish, "aaaa", Cached::Allowed, SEC, t0),
            Put::Stored
        );
        assert_eq!(
            c.put(
                CachedAction::Receive,
                "bbbbbb",
                Cached::Allowed,
                5 * SEC,
                t0
            ),
            Put::Stored
        );
        assert_eq!(c.bytes(), 10);
        assert_eq!(
            c.put(CachedAction::Subscribe, "c", Cached::Allowed, 5 * SEC, t0),
            Put::Full,
            "one byte over max_bytes"
        );
        assert_eq!(
            c.put(
                CachedAction::Publish,
                &"x".repeat(11),
                Cached::Allowed,
                5 * SEC,
                t0 + 2 * SEC
            ),
            Put::Full,
            "a topic longer than max_bytes is never cached"
        );
        // The sweep above removed the expired "aaaa": room again.
        assert_eq!(c.bytes(), 6);
        assert_eq!(
            c.put(
                CachedAction::Subscribe,
                "c",
                Cached::Allowed,
                5 * SEC,
                t0 + 2 * SEC
            ),
            Put::Stored
        );
        assert_eq!(c.bytes(), 7);
    }

    #[test]
    fn a_cached_key_does_not_keep_the_source_buffer_alive() {
        // A topic as the codec hands it over: a slice of a large receive buffer.
        let buffer = Bytes::from(vec![b'x'; 1 << 20]);
        let topic = ByteString::try_from(buffer.slice(0..16)).unwrap();
        assert!(!buffer.is_unique(), "the topic shares the buffer");
        let mut c = cache(10);
        let t0 = Instant::now();
        assert_eq!(
            c.put(CachedAction::Publish, &topic, Cached::Denied(0), SEC, t0),
            Put::Stored
        );
        assert_eq!(
            c.get(CachedAction::Publish, &topic, t0),
            Some(Cached::Denied(0))
        );
        drop(topic);
        assert!(
            buffer.is_unique(),
            "the cache holds a copy of the topic, not a slice of the buffer"
        );
        assert_eq!(
            c.get(CachedAction::Publish, &"x".repeat(16), t0),
            Some(Cached::Denied(0))
        );
    }
}
