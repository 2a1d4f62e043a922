//! What sessions receive: an application message, shared by every subscriber, and one
//! delivery of it to one session. The router makes them; sessions queue, send and
//! resend them.

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use tokio::time::Instant;

use crate::protocol::{Properties, Publish, QoS};
use crate::router::shared::ShareGroup;
use crate::session::id::SessionId;

/// An application message as routed: one allocation shared by every subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name.
    pub topic: ByteString,
    /// Payload, shared with the frame it arrived in.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// Whether it was published with the retain flag.
    pub retain: bool,
    /// The MQTT 5 properties that travel with the message to its subscribers (payload
    /// format, content type, response topic, correlation data, user properties, the
    /// expiry interval as published); `None` for a 3.1.1 publish or a bare 5.0 one.
    pub properties: Option<Box<Properties>>,
    /// When it expires (MQTT 5 message expiry interval, counted from when the broker
    /// received it): a queued or retained message past it is not delivered.
    pub expires_at: Option<Instant>,
    /// The session that published it (its will included), for subscriptions with "no
    /// local"; `None` for what the broker publishes itself.
    pub from: Option<SessionId>,
}

impl Message {
    /// A message without MQTT 5 properties or expiry, published by the broker.
    pub fn new(topic: ByteString, payload: Bytes, qos: QoS, retain: bool) -> Self {
        Self {
            topic,
            payload,
            qos,
            retain,
            properties: None,
            expires_at: None,
            from: None,
        }
    }

    /// The message a PUBLISH carries, expiring at `expires_at`, from `from`.
    pub fn of_publish(p: Publish, expires_at: Option<Instant>, from: Option<SessionId>) -> Self {
        Self {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties,
            expires_at,
            from,
        }
    }

    /// Whether its expiry interval has run out at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// Whether its expiry interval has run out; reads the clock only for a message
    /// that has one.
    pub fn expired_now(&self) -> bool {
        self.expires_at.is_some_and(|at| Instant::now() >= at)
    }

    /// The properties a PUBLISH of it carries at `now` to an MQTT 5 subscriber: those
    /// it was published with, the expiry interval lowered to the time left (section
    /// 3.3.2.3.3), and the subscription identifiers that matched. Borrowed when nothing
    /// changes, so the common message costs no allocation.
    pub fn properties_at(
        &self,
        now: Instant,
        subscription_ids: &[u32],
    ) -> Option<std::borrow::Cow<'_, Properties>> {
        use std::borrow::Cow;
        if self.expires_at.is_none() && subscription_ids.is_empty() {
            return self.properties.as_deref().map(Cow::Borrowed);
        }
        let mut p = self.properties.as_deref().cloned().unwrap_or_default();
        if let Some(at) = self.expires_at {
            let left = at.saturating_duration_since(now);
            // Rounded up: a message with 0.4 s left is not announced as already expired.
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            p.message_expiry_interval = Some(u32::try_from(secs).unwrap_or(u32::MAX));
        }
        p.subscription_identifiers = subscription_ids.to_vec();
        Some(Cow::Owned(p))
    }
}

/// The MQTT 5 subscription identifiers a delivery carries; `None` for none. A box
/// around the vector on purpose (clippy's `box_collection` says otherwise): one word
/// instead of three, since every delivery moves through a session's queue and nearly
/// none carries an identifier.
#[allow(clippy::box_collection)]
pub type SubscriptionIds = Option<Box<Vec<u32>>>;

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// QoS of this delivery: min(published, granted).
    pub qos: QoS,
    /// Retain flag on the wire: set for retained messages sent on subscribe, and
    /// through an MQTT 5 subscription with "retain as published".
    pub retain: bool,
    /// The MQTT 5 subscription identifiers of the subscriptions it matched.
    pub subscription_ids: SubscriptionIds,
    /// The shared subscription group it was routed through, if any: when this member
    /// goes away with the delivery unacknowledged, another member of the group gets it
    /// (see [`Router::reroute`](crate::router::Router::reroute)).
    pub share: Option<Arc<ShareGroup>>,
    /// Its record in the store, for a QoS 1/2 delivery to a stored session: removed
    /// when the last copy of the delivery goes (see `storage::Stored`).
    pub stored: Option<Arc<dyn DeliveryRecord>>,
}

/// A delivery's record in the store (`storage::Stored`), as sessions see it: it is
/// removed when the last copy of the delivery goes, and told where a QoS 2 delivery
/// stands. A trait so that sessions need not know the store.
pub trait DeliveryRecord: Send + Sync + std::fmt::Debug {
    /// The QoS 2 delivery went out as `pkid` (`released: false`), or its PUBREC came
    /// (`released: true`).
    fn sent(&self, pkid: u16, released: bool);
}

impl Delivery {
    /// `message` at `qos`, with no retain flag and no subscription identifier.
    pub fn new(message: Arc<Message>, qos: QoS) -> Self {
        Self {
            message,
            qos,
            retain: false,
            subscription_ids: None,
            share: None,
            stored: None,
        }
    }
}
