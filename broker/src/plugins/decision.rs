//! What a topic check decides, as the connection sees it, and the backoff between
//! attempts at a check that keeps failing.

use std::time::Duration;

use bytestring::ByteString;

/// What a topic check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Allowed: by a verdict, a cached one, `on_error: allow`, or no chain at all.
    Allowed,
    /// Denied by a verdict (or a cached one): final.
    Denied,
    /// Denied because a plugin failed (`on_error` applied): no verdict yet.
    Failed,
}

impl Checked {
    /// The decision without what the client is told.
    pub fn of(decision: &Decision) -> Self {
        match decision {
            Decision::Allowed => Checked::Allowed,
            Decision::Denied(_) => Checked::Denied,
            Decision::Failed => Checked::Failed,
        }
    }
}

/// What a topic check decided, with what a refused MQTT 5 client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed: by a verdict, a cached one, `on_error: allow`, or no chain at all.
    Allowed,
    /// Denied by a verdict (or a cached one): final.
    Denied(Denial),
    /// Denied because a plugin failed (`on_error` applied): no verdict yet.
    Failed,
}

/// A denial as the deciding plugin put it for the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Denial {
    /// The MQTT 5 reason code it asked for; 0 leaves the broker's choice. Not checked
    /// here: the caller knows which codes its packet may carry.
    pub code: u8,
    /// Its Reason String (not kept by the cache).
    pub reason: Option<ByteString>,
}

/// Waits between attempts at a check that keeps failing with a plugin error: from
/// 100 ms, doubling up to 2 s. A plugin that is down answers at once (circuit open), so
/// retries cost little; the backoff keeps them from spinning.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);

    /// Starts again at the shortest wait.
    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }

    /// The wait before the next attempt; the one after is twice as long (bounded).
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Self::MIN }
    }
}
