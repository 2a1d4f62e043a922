//! What every task of the soak shares: the counters of the report, the notes of the first
//! violations, the stop signals, and the rules that say whether a delivery was allowed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tandem_broker::protocol::Publish;
use tokio_util::sync::CancellationToken;

/// Counters shared by every task.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) spurious_disconnects: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) reconnect_failures: AtomicU64,
    pub(crate) sessions_not_resumed: AtomicU64,
    pub(crate) cross_user: AtomicU64,
    pub(crate) wrong_password_accepted: AtomicU64,
    pub(crate) published: [AtomicU64; 3],
    pub(crate) churn_started: AtomicU64,
    pub(crate) churn_skipped: AtomicU64,
    pub(crate) churn_failed: AtomicU64,
    pub(crate) slow_disconnects: AtomicU64,
    pub(crate) kills: AtomicU64,
    pub(crate) reloads: AtomicU64,
}

/// What every task holds.
pub(crate) struct Shared {
    pub(crate) addr: SocketAddr,
    pub(crate) counters: Counters,
    /// Publishing stops.
    pub(crate) stop_publishing: CancellationToken,
    /// Everything stops.
    pub(crate) end: CancellationToken,
    /// The first few violations, for the report.
    pub(crate) notes: Mutex<Vec<String>>,
    pub(crate) slow_readers: usize,
}

impl Shared {
    /// Records a violation (the first 20, echoed on stderr as they come).
    pub(crate) fn note(&self, what: String) {
        let mut notes = self.notes.lock().unwrap();
        if notes.len() < 20 {
            eprintln!("soak: {what}");
            notes.push(what);
        }
    }
}

/// Team of long-lived client `i`.
pub(crate) fn team(i: usize) -> usize {
    i / 2
}

/// The password of `user` in the broker's config.
pub(crate) fn password(user: &str) -> String {
    format!("pw-{user}")
}

/// Checks a delivery to `receiver_team` (None: allowed to read every team) against the ACL:
/// the topic's team must be the publisher's (publish-acl) and, for a team member, its own
/// (receive-acl). Returns the long-lived publisher index and sequence for `m` messages.
pub(crate) fn check_delivery(
    sh: &Shared,
    receiver: &str,
    receiver_team: Option<usize>,
    p: &Publish,
) -> Option<(usize, u64)> {
    let topic_team: Option<usize> = p.topic.split('/').nth(1).and_then(|t| t.parse().ok());
    let text = String::from_utf8_lossy(&p.payload);
    let mut words = text.split(' ');
    let kind = words.next().unwrap_or("");
    let publisher: Option<usize> = words.next().and_then(|u| u.strip_prefix('u')?.parse().ok());
    let seq: Option<u64> = words.next().and_then(|s| s.parse().ok());
    let (Some(topic_team), Some(publisher)) = (topic_team, publisher) else {
        sh.counters.cross_user.fetch_add(1, Ordering::Relaxed);
        sh.note(format!(
            "{receiver} got an unexpected message {:?} {text:?}",
            p.topic
        ));
        return None;
    };
    if team(publisher) != topic_team {
        sh.counters.cross_user.fetch_add(1, Ordering::Relaxed);
        sh.note(format!(
            "{receiver} got {:?} {text:?}: u{publisher} may not publish there",
            p.topic
        ));
        return None;
    }
    if let Some(own) = receiver_team
        && own != topic_team
    {
        sh.counters.cross_user.fetch_add(1, Ordering::Relaxed);
        sh.note(format!(
            "{receiver} (team {own}) got {:?} {text:?}: not its team",
            p.topic
        ));
        return None;
    }
    (kind == "m").then_some(())?;
    Some((publisher, seq?))
}

/// What a long-lived client saw: the QoS 1/2 sequences acknowledged to it as publisher, and
/// the sequences it received per publisher.
#[derive(Default)]
pub(crate) struct Outcome {
    /// Sequence -> when it was sent.
    pub(crate) acked: HashMap<u64, Instant>,
    pub(crate) received: HashMap<usize, HashSet<u64>>,
    /// When the team subscription was first granted.
    pub(crate) subscribed: Option<Instant>,
}
