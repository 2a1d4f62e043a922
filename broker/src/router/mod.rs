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
pub mod shared;
pub mod topic;
pub mod tree;

use std::sync::Arc;

use bytestring::ByteString;
use parking_lot::RwLock;
use smallvec::SmallVec;

use crate::protocol::QoS;
use crate::session::id::SessionId;
use crate::session::mailbox::{Mailbox, Offer};
use crate::session::message::{Delivery, Message, SubscriptionIds};
use crate::stats::Stats;
use crate::storage::{Op, Store};
use retained::{Applied, Bounds, Refused, RetainedStore};
use shared::{ShareGroup, ShareGroups};
pub use tree::Subscriber;
use tree::SubscriptionTree;

/// Subscriptions, retained messages and fan-out.
pub struct Router {
    subscriptions: RwLock<SubscriptionTree>,
    share_groups: ShareGroups,
    retained: RwLock<RetainedStore>,
    stats: Arc<Stats>,
    /// Where retained messages are also written, when `storage.path` is set.
    store: Option<Arc<Store>>,
}

/// What routing one message did.
#[derive(Default)]
pub struct Routed {
    /// Sessions it was queued for (or skipped for, as QoS 0 to an offline session).
    pub matched: usize,
    /// Whether it changed the store (a stored delivery, a retained message): its
    /// acknowledgement waits for the store.
    pub stored: bool,
    /// QoS 1/2 deliveries to full queues under `mqtt.queue_full: backpressure`, for the
    /// publisher to wait with (only when routed with [`publish_waiting`](Router::publish_waiting)).
    pub blocked: Vec<(Arc<Mailbox>, Delivery)>,
}

impl Router {
    /// An empty router counting into `stats`, its retained store within `retained`.
    pub fn new(stats: Arc<Stats>, retained: Bounds) -> Self {
        Self {
            subscriptions: RwLock::default(),
            share_groups: ShareGroups::default(),
            retained: RwLock::new(RetainedStore::new(retained)),
            stats,
            store: None,
        }
    }

    /// Writes retained messages to `store` from now on.
    pub fn with_store(mut self, store: Option<Arc<Store>>) -> Self {
        self.store = store;
        self
    }

    /// The shared subscription group `name` (`$share/{group}/{filter}`): the one its
    /// members hold, or a new one if none does (for a delivery restored from the store).
    pub fn share_group(&self, name: &str) -> Arc<ShareGroup> {
        self.share_groups.get(name)
    }

    /// Puts back a retained message read from the store (not written to it again).
    pub fn restore_retained(&self, message: Arc<Message>) -> bool {
        !matches!(self.retained.write().apply(&message), Applied::Refused(_))
    }

    /// Subscribes (or re-subscribes with a new QoS). Returns whether it replaced one.
    pub fn subscribe(&self, filter: &str, mut subscriber: Subscriber) -> bool {
        if let Some((_, inner)) = topic::split_shared(filter) {
            subscriber.share = Some(self.share_groups.get(filter));
            // No local has no meaning for a shared subscription (MQTT-3.8.3-4).
            subscriber.no_local = false;
            return self.subscriptions.write().insert(inner, subscriber);
        }
        self.subscriptions.write().insert(filter, subscriber)
    }

    /// Removes one subscription (a `$share/` filter: the session's membership of that
    /// group); returns whether it existed.
    pub fn unsubscribe(&self, filter: &str, session: SessionId) -> bool {
        let mut tree = self.subscriptions.write();
        self.remove_from(&mut tree, filter, session)
    }

    fn remove_from(&self, tree: &mut SubscriptionTree, filter: &str, session: SessionId) -> bool {
        match topic::split_shared(filter) {
            Some((_, inner)) => {
                let removed = tree.remove(inner, session, Some(filter));
                self.share_groups.prune(filter);
                removed
            }
            None => tree.remove(filter, session, None),
        }
    }

    /// Removes every subscription of a session, given its filters.
    pub fn unsubscribe_all<'a>(
        &self,
        filters: impl IntoIterator<Item = &'a ByteString>,
        session: SessionId,
    ) {
        let mut tree = self.subscriptions.write();
        for f in filters {
            self.remove_from(&mut tree, f, session);
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
    pub fn publish(&self, message: Arc<Message>) -> Routed {
        self.route(message, false, |_| {})
    }

    /// [`publish`](Self::publish), also calling `queued_offline` with the client id of
    /// every offline persistent session the message was queued for (for the
    /// `retained_message` QUEUED event).
    pub fn publish_noting_offline(
        &self,
        message: Arc<Message>,
        queued_offline: impl FnMut(&ByteString),
    ) -> Routed {
        self.route(message, false, queued_offline)
    }

    /// Routes a client's message like [`publish_noting_offline`](Self::publish_noting_offline),
    /// except that QoS 1/2 deliveries to full queues under `mqtt.queue_full:
    /// backpressure` come back in [`Routed::blocked`] for the publisher to wait with.
    pub fn publish_waiting(
        &self,
        message: Arc<Message>,
        queued_offline: impl FnMut(&ByteString),
    ) -> Routed {
        self.route(message, true, queued_offline)
    }

    fn route(
        &self,
        message: Arc<Message>,
        can_wait: bool,
        mut queued_offline: impl FnMut(&ByteString),
    ) -> Routed {
        let mut stored = false;
        if message.retain {
            let applied = self.retained.write().apply(&message);
            if let Applied::Refused(why) = applied {
                self.retained_refused(&message, why);
            }
            stored = self.store_retained(&message, applied);
        }
        let tree = self.subscriptions.read();
        let mut matches: SmallVec<[&Subscriber; 16]> = SmallVec::new();
        let mut shared: SmallVec<[&Subscriber; 4]> = SmallVec::new();
        tree.for_each_match(&message.topic, &mut |s| {
            if s.share.is_some() {
                shared.push(s);
            } else if !(s.no_local && message.from == Some(s.session)) {
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
        let mut blocked = Vec::new();
        let mut offer = |group: &[&Subscriber]| {
            let sub = group[0];
            let delivery = Delivery {
                message: message.clone(),
                qos: sub.qos.min(message.qos),
                retain: sub.retain_as_published && message.retain,
                subscription_ids: subscription_ids(group),
                share: sub.share.clone(),
                stored: None,
            };
            let durable = sub.mailbox.stores(delivery.qos);
            let offered = if can_wait {
                match sub.mailbox.try_offer(delivery) {
                    Ok(offered) => offered,
                    Err(delivery) => {
                        blocked.push((sub.mailbox.clone(), delivery));
                        return;
                    }
                }
            } else {
                sub.mailbox.offer(delivery)
            };
            if offered.dropped() {
                self.stats.add_dropped(1);
            }
            if offered.queued() || offered == Offer::Skipped {
                queued += 1;
            }
            if offered.queued() {
                stored |= durable;
            }
            if offered.offline() {
                queued_offline(sub.mailbox.client_id());
            }
        };
        for group in runs(&matches, |s| s.session) {
            offer(group);
        }
        if !shared.is_empty() {
            // One member of each share group, apart from the session's own
            // subscriptions: a session may get a message both ways.
            shared.sort_unstable_by_key(share_of);
            for members in runs(&shared, share_of) {
                if let Some(group) = &members[0].share {
                    let ready = |m: &&Subscriber| m.mailbox.is_online() && !m.mailbox.is_full();
                    offer(&[*group.pick(members, ready)]);
                }
            }
        }
        Routed {
            matched: queued,
            stored,
            blocked,
        }
    }

    /// Writes what a retained publish changed to the store; whether it wrote anything.
    /// `$SYS/` topics are the broker's own, published again after a restart.
    fn store_retained(&self, message: &Arc<Message>, applied: Applied) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        if message.topic.starts_with('$') {
            return false;
        }
        match applied {
            Applied::Stored | Applied::Replaced => store.submit(Op::Retained {
                message: message.clone(),
            }),
            Applied::Cleared | Applied::Refused(_) => store.submit(Op::RetainedCleared {
                topic: message.topic.clone(),
            }),
            Applied::Unchanged => return false,
        }
        true
    }

    /// Offers `delivery`, which came to `leaving` through a shared subscription, to
    /// another member of the same group that is online with room in its queue (the next
    /// in the group's turn). Returns whether one took it; `false` when it did not come
    /// through a group, or no other member is ready (it then stays with `leaving`).
    pub fn reroute(&self, delivery: &Delivery, leaving: SessionId) -> bool {
        let Some(group) = &delivery.share else {
            return false;
        };
        let tree = self.subscriptions.read();
        let mut members: SmallVec<[&Subscriber; 4]> = SmallVec::new();
        tree.for_each_match(&delivery.message.topic, &mut |s| {
            if s.session != leaving && s.share.as_ref().is_some_and(|g| Arc::ptr_eq(g, group)) {
                members.push(s);
            }
        });
        if members.is_empty() {
            return false;
        }
        let ready = |m: &&Subscriber| m.mailbox.is_online() && !m.mailbox.is_full();
        let member = *group.pick(&members, ready);
        if !ready(&member) {
            return false;
        }
        let message = delivery.message.clone();
        let offered = member.mailbox.offer(Delivery {
            qos: member.qos.min(message.qos),
            retain: member.retain_as_published && message.retain,
            subscription_ids: subscription_ids(&[member]),
            share: member.share.clone(),
            stored: None,
            message,
        });
        if offered.dropped() {
            self.stats.add_dropped(1);
        }
        offered.queued()
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
fn subscription_ids(group: &[&Subscriber]) -> SubscriptionIds {
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
    Some(Box::new(ids))
}

/// The share group a subscriber belongs to, as an identity for sorting and grouping.
fn share_of(s: &&Subscriber) -> *const ShareGroup {
    s.share.as_ref().map_or(std::ptr::null(), Arc::as_ptr)
}

/// The runs of consecutive items of `items` with the same `key`.
fn runs<'s, 'a, K: PartialEq>(
    items: &'s [&'a Subscriber],
    key: impl Fn(&&'a Subscriber) -> K,
) -> impl Iterator<Item = &'s [&'a Subscriber]> {
    items.chunk_by(move |a, b| key(a) == key(b))
}
