//! Failed-login throttling: after `user_failures` failures for one username, or
//! `address_failures` from one source address, within `window`, further attempts for that
//! username or from that address are denied at once, without hashing, until the window ends.
//!
//! Why: every wrong password costs a password hash (argon2 takes a core for tens of
//! milliseconds), so a handful of attackers guessing one user's password would keep the plugin
//! busy past the broker's deadline and refuse everyone else. Throttled attempts cost a map
//! lookup.
//!
//! Rules, decided:
//! - Windows are fixed: they start at a key's first failure and end `window` later, when the
//!   count starts again from zero. A key stays throttled at most `window`.
//! - A success for a username clears that username's failures (it was its owner); it does not
//!   clear the address's, so one valid account cannot launder an address's guesses.
//! - Unknown usernames count like known ones (their attempts are verified against a decoy hash
//!   too): throttling says nothing about whether a user exists.
//! - IPv6 addresses are keyed by their /64 prefix, the block one subscriber usually holds.
//! - Memory is bounded: each map holds at most `max_entries` keys. When one is full, expired
//!   entries are dropped; if it is still full, the new key is not tracked (and counted):
//!   evicting a live entry would let an attacker flush the throttle on the user it attacks.
//! - Throttling state belongs to the process, not to one `Describe`: a reload or a probe does
//!   not reset it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tandem_plugin::serde::Deserialize;
use tandem_plugin::tracing::warn;

/// The `throttle:` section of the plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(crate = "tandem_plugin::serde", deny_unknown_fields, default)]
pub(crate) struct ThrottleSettings {
    /// Failures for one username within `window` after which its attempts are denied at
    /// once; 0 turns username throttling off.
    pub(crate) user_failures: u32,
    /// Failures from one address (IPv6: its /64) within `window` after which its attempts
    /// are denied at once; 0 turns address throttling off.
    pub(crate) address_failures: u32,
    /// How long failures are counted, and so the longest a key stays throttled.
    #[serde(with = "humantime_serde")]
    pub(crate) window: Duration,
    /// Most keys tracked per map (usernames, addresses).
    pub(crate) max_entries: usize,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            user_failures: 5,
            address_failures: 20,
            window: Duration::from_secs(60),
            max_entries: 10_000,
        }
    }
}

/// Why an attempt is refused without a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Throttled {
    /// Too many failures for this username.
    User,
    /// Too many failures from this address.
    Address,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
}

/// One bounded map of failure counts.
#[derive(Debug)]
struct Counts<K> {
    entries: HashMap<K, Entry>,
}

impl<K: std::hash::Hash + Eq + Clone> Counts<K> {
    fn new() -> Self {
        Counts {
            entries: HashMap::new(),
        }
    }

    fn throttled(&self, key: &K, limit: u32, window: Duration, now: Instant) -> bool {
        limit > 0
            && self.entries.get(key).is_some_and(|e| {
                now.saturating_duration_since(e.since) < window && e.failures >= limit
            })
    }

    /// Counts a failure; returns the new count, or `None` when the key could not be tracked.
    fn fail(&mut self, key: &K, window: Duration, max: usize, now: Instant) -> Option<u32> {
        if !self.entries.contains_key(key) && self.entries.len() >= max {
            self.entries
                .retain(|_, e| now.saturating_duration_since(e.since) < window);
            if self.entries.len() >= max {
                return None;
            }
        }
        let e = self.entries.entry(key.clone()).or_insert(Entry {
            failures: 0,
            since: now,
        });
        if now.saturating_duration_since(e.since) >= window {
            *e = Entry {
                failures: 0,
                since: now,
            };
        }
        e.failures = e.failures.saturating_add(1);
        Some(e.failures)
    }

    fn clear(&mut self, key: &K) {
        self.entries.remove(key);
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The key of a source address: the address itself, or the /64 of an IPv6 one.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Throttle {
    users: Mutex<Counts<String>>,
    addresses: Mutex<Counts<IpAddr>>,
    /// Attempts refused at once because of a throttle.
    pub(crate) refused: AtomicU64,
    /// Failures that could not be tracked because a map was full.
    pub(crate) untracked: AtomicU64,
}

impl Throttle {
    pub(crate) fn new() -> Self {
        Throttle {
            users: Mutex::new(Counts::new()),
            addresses: Mutex::new(Counts::new()),
            refused: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
        }
    }

    /// Whether an attempt for `user` from `addr` is to be refused without verifying it.
    pub(crate) fn check(
        &self,
        settings: &ThrottleSettings,
        user: &str,
        addr: Option<IpAddr>,
        now: Instant,
    ) -> Option<Throttled> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let throttled = if users.throttled(
            &user.to_owned(),
            settings.user_failures,
            settings.window,
            now,
        ) {
            Some(Throttled::User)
        } else {
            drop(users);
            let addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
            addr.map(address_key)
                .filter(|a| addresses.throttled(a, settings.address_failures, settings.window, now))
                .map(|_| Throttled::Address)
        };
        if throttled.is_some() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        throttled
    }

    /// Counts a failed attempt (wrong password, unknown user, no password).
    pub(crate) fn failed(
        &self,
        settings: &ThrottleSettings,
        user: &str,
        addr: Option<IpAddr>,
        now: Instant,
    ) {
        let (window, max) = (settings.window, settings.max_entries);
        if settings.user_failures > 0 {
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            match users.fail(&user.to_owned(), window, max, now) {
                Some(n) if n == settings.user_failures => {
                    warn!(user = %user, failures = n, window = ?window,
                        "too many failed logins for this username; refusing its attempts without verifying until the window ends");
                }
                Some(_) => {}
                None => self.untracked(users.len()),
            }
        }
        if settings.address_failures > 0
            && let Some(addr) = addr.map(address_key)
        {
            let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
            match addresses.fail(&addr, window, max, now) {
                Some(n) if n == settings.address_failures => {
                    warn!(address = %addr, failures = n, window = ?window,
                        "too many failed logins from this address; refusing its attempts without verifying until the window ends");
                }
                Some(_) => {}
                None => self.untracked(addresses.len()),
            }
        }
    }

    /// A verified login: the username's failures are forgotten.
    pub(crate) fn succeeded(&self, user: &str) {
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear(&user.to_owned());
    }

    fn untracked(&self, entries: usize) {
        // Logged on the first and then every 1000th, so a flood of keys cannot flood the log.
        let n = self.untracked.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(1000) {
            warn!(
                entries,
                untracked = n + 1,
                "failed-login throttle is full; new usernames or addresses are not tracked until entries expire (raise throttle.max_entries)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ThrottleSettings {
        ThrottleSettings {
            user_failures: 3,
            address_failures: 5,
            window: Duration::from_secs(60),
            max_entries: 4,
        }
    }

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    #[test]
    fn a_username_is_throttled_after_its_failures_until_the_window_ends() {
        let (s, t, t0) = (settings(), Throttle::new(), Instant::now());
        for i in 0..3 {
            assert_eq!(t.check(&s, "alice", A, t0), None, "attempt {i}");
            t.failed(&s, "alice", if i % 2 == 0 { A } else { B }, t0);
        }
        // From any address, the username is refused; other usernames are not.
        assert_eq!(t.check(&s, "alice", B, t0), Some(Throttled::User));
        assert_eq!(t.check(&s, "bob", B, t0), None);
        // The window is fixed: it ends 60 s after the first failure.
        assert_eq!(
            t.check(&s, "alice", A, t0 + Duration::from_secs(59)),
            Some(Throttled::User)
        );
        assert_eq!(t.check(&s, "alice", A, t0 + Duration::from_secs(60)), None);
        assert_eq!(t.refused.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn an_address_is_throttled_across_usernames_and_a_success_does_not_clear_it() {
        let (s, t, t0) = (settings(), Throttle::new(), Instant::now());
        for i in 0..5 {
            t.failed(&s, &format!("user{i}"), A, t0);
        }
        assert_eq!(t.check(&s, "bob", A, t0), Some(Throttled::Address));
        assert_eq!(t.check(&s, "bob", B, t0), None);
        t.succeeded("bob");
        assert_eq!(t.check(&s, "bob", A, t0), Some(Throttled::Address));
        // A success clears the username's own failures.
        t.failed(&s, "carol", B, t0);
        t.failed(&s, "carol", B, t0);
        t.succeeded("carol");
        t.failed(&s, "carol", B, t0);
        assert_eq!(t.check(&s, "carol", B, t0), None);
    }

    #[test]
    fn ipv6_addresses_share_their_64_and_mapped_v4_is_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(address_key(mapped), A.unwrap());
    }

    #[test]
    fn a_full_map_keeps_its_live_entries_and_does_not_track_new_keys() {
        let (s, t, t0) = (settings(), Throttle::new(), Instant::now());
        for _ in 0..3 {
            t.failed(&s, "victim", None, t0);
        }
        for i in 0..10 {
            t.failed(&s, &format!("flood{i}"), None, t0);
        }
        assert_eq!(t.users.lock().unwrap().len(), 4, "bounded");
        assert_eq!(t.untracked.load(Ordering::Relaxed), 7);
        assert_eq!(
            t.check(&s, "victim", None, t0),
            Some(Throttled::User),
            "the flood did not evict the throttle on the attacked user"
        );
        // Once the window has passed, expired entries make room.
        let later = t0 + Duration::from_secs(61);
        t.failed(&s, "new", None, later);
        assert_eq!(t.users.lock().unwrap().len(), 1);
    }

    #[test]
    fn zero_turns_a_throttle_off() {
        let s = ThrottleSettings {
            user_failures: 0,
            address_failures: 0,
            ..settings()
        };
        let (t, t0) = (Throttle::new(), Instant::now());
        for _ in 0..10 {
            t.failed(&s, "alice", A, t0);
        }
        assert_eq!(t.check(&s, "alice", A, t0), None);
        assert_eq!(t.users.lock().unwrap().len(), 0);
    }
}
