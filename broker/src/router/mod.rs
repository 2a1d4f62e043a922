//! The router: who is subscribed to what, retained messages, and fan-out.
//!
//! The router is shared state behind two read-mostly locks, not a task: a publishing
//! connection routes its own messages, so fan-out runs on the publisher's task with no
//! hop through a channel, and publishers on different cores route in parallel under
//! read locks. No lock is ever held across an `.await`: delivery is a non-blocking
//! `try_send` into each subscriber's bounded [`Mailbox`](crate::session::Mailbox);
//! a full mailbox drops the message for that subscriber and counts it.
//!
//! # Layout
//! - [`topic`]: filter validation, level counting and matching rules.
//! - [`tree`]: the subscription tree.
//! - [`retained`]: the retained store, a tree of topic levels with count and bytes bounds.

pub mod retained;
pub mod topic;
pub mod tree;

use std::sync::Arc;

use bytestring::ByteString;
use parking_lot::RwLock;
use smallvec::SmallVec;

use crate::protocol::QoS;
use crate::session::id::SessionId;
use crate::session::mailbox::Offer;
use crate::session::message::{Delivery, Message};
use crate::stats::Stats;
use retained::{Applied, Bounds, Refused, RetainedStore};
pub use tree::Subscriber;
use tree::SubscriptionTree;

/// Subscriptions, retained messages and fan-out.
pub struct Router {
    subscriptions: RwLock<SubscriptionTree>,
    retained: RwLock<RetainedStore>,
    stats: Arc<Stats>,
}

impl Router {
    /// An empty router counting into `stats`, its retained store within `retained`.
    pub fn new(stats: Arc<Stats>, retained: Bounds) -> Self {
        Self {
            subscriptions: RwLock::default(),
            retained: RwLock::new(RetainedStore::new(retained)),
            stats,
        }
    }

    /// Subscribes (or re-subscribes with a new QoS). Returns whether it replaced one.
    pub fn subscribe(&self, filter: &str, subscriber: Subscriber) -> bool {
        self.subscriptions.write().insert(filter, subscriber)
    }

    /// Removes one subscription; returns whether it existed.
    pub fn unsubscribe(&self, filter: &str, session: SessionId) -> bool {
        self.subscriptions.write().remove(filter, session)
    }

    /// Removes every subscription of a session, given its filters.
    pub fn unsubscribe_all<'a>(
        &self,
        filters: impl IntoIterator<Item = &'a ByteString>,
        session: SessionId,
    ) {
        let mut tree = self.subscriptions.write();
        for f in filters {
            tree.remove(f, session);
        }
    }

    /// Number of subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.read().len()
    }

    /// Number of retained topics.
    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    /// Topic plus payload bytes of the retained store.
    pub fn retained_bytes(&self) -> usize {
        self.retained.read().bytes()
    }

    /// The retained messages for the subscriptions one SUBSCRIBE granted: each matching
    /// retained message once, at the highest QoS of the granted filters it matches
    /// (capped by its own QoS), as overlapping subscriptions deliver a publish once. At
    /// most `limit` messages (the room left in the session's queue): the walk stops
    /// there, since what is past it could not be queued anyway. A message whose MQTT 5
    /// expiry interval has run out is not sent. Returns the messages and whether the
    /// walk stopped at `limit`.
    pub fn retained_for_subscribe(
        &self,
        granted: &[(ByteString, QoS)],
        limit: usize,
    ) -> (Vec<(Arc<Message>, QoS)>, bool) {
        let store = self.retained.read();
        let now = tokio::time::Instant::now();
        let mut out: Vec<(Arc<Message>, QoS)> = Vec::new();
        // Each stored message is one allocation: its address identifies it.
        let mut seen: foldhash::HashMap<*const Message, usize> = Default::default();
        let mut full = false;
        for (filter, qos) in granted {
            store.for_each_matching(filter, &mut |m| {
                if m.expired(now) {
                    return true;
                }
                let qos = (*qos).min(m.qos);
                match seen.entry(Arc::as_ptr(m)) {
                    std::collections::hash_map::Entry::Occupied(at) => {
                        let held = &mut out[*at.get()].1;
                        *held = (*held).max(qos);
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        if out.len() >= limit {
                            full = true;
                            return false;
                        }
                        slot.insert(out.len());
                        out.push((m.clone(), qos));
                    }
                }
                true
            });
            if full {
                break;
            }
        }
        (out, full)
    }

    /// Routes a message: updates the retained store if it is retained, then offers it
    /// to every matching session once, at the highest QoS any of its matching
    /// subscriptions granted, capped by the message's QoS. Returns the number of
    /// sessions it was queued for.
    pub fn publish(&self, message: Arc<Message>) -> usize {
        self.route(message, |_| {})
    }

    /// [`publish`](Self::publish), also calling `queued_offline` with the client id of
    /// every offline persistent session the message was queued for (for the
    /// `retained_message` QUEUED event).
    pub fn publish_noting_offline(
        &self,
        message: Arc<Message>,
        queued_offline: impl FnMut(&ByteString),
    ) -> usize {
        self.route(message, queued_offline)
    }

    fn route(&self, message: Arc<Message>, mut queued_offline: impl FnMut(&ByteString)) -> usize {
        if message.retain {
            let applied = self.retained.write().apply(&message);
            if let Applied::Refused(why) = applied {
                self.retained_refused(&message, why);
            }
        }
        let tree = self.subscriptions.read();
        let mut matches: SmallVec<[&Subscriber; 16]> = SmallVec::new();
        tree.for_each_match(&message.topic, &mut |s| {
            if !(s.no_local && message.from == Some(s.session)) {
                matches.push(s);
            }
        });
        if matches.len() > 1 {
            // Overlapping subscriptions deliver once per session, at the highest QoS
            // (the first of its group once sorted), with every MQTT 5 subscription
            // identifier of the group.
            matches.sort_unstable_by(|a, b| a.session.cmp(&b.session).then(b.qos.cmp(&a.qos)));
        }
        let mut queued = 0;
        let mut rest = &matches[..];
        while let Some((&sub, _)) = rest.split_first() {
            let same = rest.iter().take_while(|s| s.session == sub.session).count();
            let (group, after) = rest.split_at(same);
            rest = after;
            let subscription_ids = subscription_ids(group);
            let qos = sub.qos.min(message.qos);
            let delivery = Delivery {
                message: message.clone(),
                qos,
                retain: sub.retain_as_published && message.retain,
                subscription_ids,
            };
            match sub.mailbox.offer(delivery) {
                Offer::Queued => queued += 1,
                Offer::QueuedOffline => {
                    queued += 1;
                    queued_offline(sub.mailbox.client_id());
                }
                Offer::Skipped => queued += 1,
                Offer::Dropped => self.stats.add_dropped(1),
            }
        }
        queued
    }

    /// Counts a retained message the store refused, and logs at a falling rate (the
    /// 1st, 2nd, 4th, 8th... refusal of each bound): a client filling the store must not
    /// fill the log too.
    fn retained_refused(&self, message: &Message, why: Refused) {
        let (n, bound) = match why {
            Refused::Count => (
                self.stats.limits.retained_refused(false),
                "mqtt.max_retained_messages",
            ),
            Refused::Bytes => (
                self.stats.limits.retained_refused(true),
                "mqtt.max_retained_bytes",
            ),
        };
        if n.is_power_of_two() {
            tracing::warn!(
                topic = ?message.topic,
                refused = n,
                bound,
                "retained store full; retained message not stored (still routed)"
            );
        }
    }
}

/// The MQTT 5 subscription identifiers of one session's matching subscriptions; `None`
/// (no allocation) when none has one, as for every 3.1.1 subscription.
fn subscription_ids(group: &[&Subscriber]) -> Option<Box<[u32]>> {
    if group.iter().all(|s| s.subscription_id == 0) {
        return None;
    }
    let mut ids: Vec<u32> = group
        .iter()
        .map(|s| s.subscription_id)
        .filter(|id| *id != 0)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Some(ids.into())
}
