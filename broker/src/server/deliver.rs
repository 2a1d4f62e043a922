//! Messages out: every delivery passes its RECEIVE check here, then is written, skipped,
//! held or dropped; a resumed session's inflight messages are resent the same way.
//!
//! A QoS 1/2 delivery whose check fails with a plugin error is held (with the queue
//! behind it, so order holds) and asked again with backoff beside the connection's other
//! work, until a verdict or `topic-check.hold` runs out. QoS 0 promises nothing: its
//! `on_error` stands.

use std::borrow::Cow;
use std::time::Duration;

use bytestring::ByteString;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::plugins::cache::CachedAction;
use crate::plugins::client::{Checked, LaterAnswer};
use crate::protocol::{self, PacketType, PublishRef, QoS};
use crate::server::connection::{Connection, WRITE_BATCH};
use crate::session::{Delivery, Held, OutState};

/// The longest a connection moves queued messages into its outbox before it writes them
/// and reads what its client sent: see [`drain_queue`](Connection::drain_queue).
const DRAIN_SLICE: Duration = Duration::from_millis(50);

/// What becomes of one delivery after its RECEIVE check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receive {
    /// Write it to the client.
    Deliver,
    /// Skip it for this client: denied, or QoS 0 whose check failed (`on_error`).
    Skip,
    /// Hold it (and the queue behind it) and ask again: a QoS 1/2 delivery whose check
    /// failed with a plugin error.
    Hold,
    /// Drop it and count it: its check failed after a hold already ran out on this
    /// connection, and no verdict has come since.
    Expire,
}

impl<R, W> Connection<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Checks one delivery (RECEIVE) and writes, skips, holds or drops it: the one
    /// place a queued message is decided. A delivery is never written unchecked.
    pub(super) async fn deliver(&mut self, delivery: Delivery) {
        if delivery.message.expired_now() {
            // Its MQTT 5 expiry interval ran out while it was queued.
            self.broker.stats.message_expired();
            return;
        }
        let checked = self
            .plugins
            .check(
                CachedAction::Receive,
                &delivery.message.topic,
                delivery.qos,
                delivery.retain,
            )
            .await;
        let receive = match checked {
            Checked::Allowed => Receive::Deliver,
            Checked::Denied => Receive::Skip,
            Checked::Failed if delivery.qos == QoS::AtMostOnce => Receive::Skip,
            Checked::Failed if self.plugins.gave_up() => Receive::Expire,
            Checked::Failed => Receive::Hold,
        };
        match receive {
            Receive::Deliver => self.write_delivery(delivery),
            Receive::Skip => {}
            Receive::Hold => self.hold(delivery),
            Receive::Expire => self.expire(&delivery),
        }
    }

    /// Encodes one checked delivery, entering it into the inflight window if QoS > 0.
    /// One larger than the client's maximum packet size is dropped for it and counted
    /// (MQTT 5, section 3.1.2.11.4).
    fn write_delivery(&mut self, delivery: Delivery) {
        let pkid = match delivery.qos {
            QoS::AtMostOnce => 0,
            _ => self.state.inflight.push(delivery.clone()),
        };
        self.sending(&delivery, pkid);
        if self.encode_delivery(&delivery, pkid, false) {
            self.traffic.messages_out[delivery.qos as usize] += 1;
        } else if pkid != 0 {
            self.state.inflight.remove(pkid);
        }
    }

    /// Encodes a PUBLISH of `delivery` with `pkid`, its MQTT 5 properties as of now;
    /// `false` (nothing encoded, the drop counted) when it would be larger than the
    /// client accepts.
    fn encode_delivery(&mut self, delivery: &Delivery, pkid: u16, dup: bool) -> bool {
        let m = &delivery.message;
        let mut publish = PublishRef {
            topic: &m.topic,
            payload: &m.payload,
            qos: delivery.qos,
            pkid,
            dup,
            retain: delivery.retain,
            properties: None,
        };
        if !self.out.version().is_v5() {
            // 3.1.1: no properties, aliases or packet size to mind.
            self.out.publish(&publish);
            return true;
        }
        let ids = delivery
            .subscription_ids
            .as_deref()
            .map_or(&[][..], Vec::as_slice);
        let mut properties = m.properties_at(Instant::now(), ids);
        let empty = ByteString::new();
        let alias = self.out_aliases.for_topic(&m.topic);
        if let Some((alias, new)) = alias {
            let mut owned = properties.map(Cow::into_owned).unwrap_or_default();
            owned.topic_alias = Some(alias);
            properties = Some(Cow::Owned(owned));
            if !new {
                publish.topic = &empty;
            }
        }
        publish.properties = properties.as_deref();
        if self.client_max_packet != usize::MAX
            && protocol::publish_len(self.out.version(), &publish) > self.client_max_packet
        {
            self.broker.stats.message_too_large();
            debug!(topic = ?m.topic, max = self.client_max_packet,
                "dropping a message larger than the client's maximum packet size");
            if let Some((_, true)) = alias {
                self.out_aliases.forget(&m.topic);
            }
            return false;
        }
        self.out.publish(&publish);
        true
    }

    /// Holds a delivery whose RECEIVE check failed with a plugin error: nothing more is
    /// taken from the queue until it is decided, and its check is asked again with
    /// backoff beside the connection's other work.
    fn hold(&mut self, delivery: Delivery) {
        self.broker.stats.message_held();
        info!(topic = ?delivery.message.topic, qos = ?delivery.qos, hold = ?self.plugins.hold(),
            "RECEIVE check failed (plugin error); holding the delivery and the queue behind it");
        self.state.held = Some(Held {
            delivery,
            since: Instant::now(),
        });
        self.hold_backoff.reset();
        let wait = self.hold_backoff.next_wait();
        self.schedule_retry(wait);
    }

    /// Drops a delivery whose check kept failing past `topic-check.hold`, and counts it.
    fn expire(&mut self, delivery: &Delivery) {
        self.broker.stats.hold_expired();
        if self.plugins.gave_up() {
            debug!(topic = ?delivery.message.topic, "dropping a delivery: RECEIVE check failing since the hold ran out");
        } else {
            self.plugins.give_up();
            warn!(topic = ?delivery.message.topic, hold = ?self.plugins.hold(),
                "dropping a delivery: its RECEIVE check kept failing for topic-check.hold; \
                 further deliveries whose check fails are dropped until a plugin answers");
        }
    }

    /// After a session resumed with a held delivery: the hold starts again for this
    /// connection, and the check is asked at once.
    pub(super) fn resume_held(&mut self) {
        if let Some(held) = &mut self.state.held {
            held.since = Instant::now();
            self.hold_backoff.reset();
            self.schedule_retry(Duration::ZERO);
        }
    }

    /// Schedules the next check of the held delivery, `after` from now, against the
    /// plugin set in force now.
    fn schedule_retry(&mut self, after: Duration) {
        let Some(held) = &self.state.held else {
            return;
        };
        let d = &held.delivery;
        self.retry = Some(self.plugins.check_later(
            CachedAction::Receive,
            &d.message.topic,
            d.qos,
            d.retain,
            after,
        ));
    }

    /// A retried check of the held delivery answered: deliver it, drop it, or ask again.
    pub(super) async fn retry_done(&mut self, answer: Option<LaterAnswer>) {
        let Some(held) = self.state.held.take() else {
            return;
        };
        let d = &held.delivery;
        let Some(checked) = self
            .plugins
            .settle(CachedAction::Receive, &d.message.topic, answer)
        else {
            // A reload replaced the set that was asked: ask the set in force, at once.
            self.state.held = Some(held);
            self.schedule_retry(Duration::ZERO);
            return;
        };
        match checked {
            Checked::Failed if held.since.elapsed() < self.plugins.hold() => {
                self.state.held = Some(held);
                let wait = self.hold_backoff.next_wait();
                self.schedule_retry(wait);
                return;
            }
            Checked::Failed => self.expire(&held.delivery),
            Checked::Allowed => {
                debug!(topic = ?d.message.topic, held = ?held.since.elapsed(), "held delivery allowed");
                self.write_delivery(held.delivery);
            }
            Checked::Denied => {
                debug!(topic = ?d.message.topic, "held delivery denied");
            }
        }
        self.drain_queue().await;
    }

    /// Moves queued messages into the outbox while the window and batch allow, and no
    /// delivery is held, for at most [`DRAIN_SLICE`]: each delivery may wait for a
    /// RECEIVE check, and while it does nothing is read from the client. Without the
    /// bound a slow topic-check plugin kept a busy subscriber's connection here for
    /// tens of seconds (a window of checks, one after another), its PINGREQs and acks
    /// unread, until the broker closed it for an expired keepalive.
    pub(super) async fn drain_queue(&mut self) {
        let started = Instant::now();
        while self.out.len() < WRITE_BATCH
            && self.state.inflight.len() < self.max_inflight
            && self.state.held.is_none()
            && started.elapsed() < DRAIN_SLICE
        {
            match self.state.queue.try_recv() {
                Ok(delivery) if self.through_revoked(&delivery) => {}
                Ok(delivery) => self.deliver(delivery).await,
                Err(_) => {
                    // Nothing queued through a revoked subscription is left.
                    self.purge_revoked = false;
                    break;
                }
            }
        }
    }

    /// After a resumed session's CONNACK: resends what was in flight, in order, with DUP
    /// for publishes and PUBREL for released QoS 2 messages (MQTT-4.4.0-1).
    ///
    /// A publish is resent only if RECEIVE allows it for this client now, as any
    /// delivery: the session may have been taken over by another identity
    /// (`session_takeover: any`) or the rules may have changed since it was first sent.
    /// A denied one leaves the window, counted and logged. A released QoS 2 message
    /// carries no payload: its PUBREL goes out as it is.
    pub(super) async fn resend_inflight(&mut self) {
        let pending: Vec<(u16, OutState, Delivery)> = self
            .state
            .inflight
            .iter()
            .map(|out| (out.pkid, out.state, out.delivery.clone()))
            .collect();
        for (pkid, state, delivery) in pending {
            if state == OutState::Released {
                self.out.ack(PacketType::PubRel, pkid);
                continue;
            }
            let m = &delivery.message;
            match self
                .plugins
                .check(
                    CachedAction::Receive,
                    &m.topic,
                    delivery.qos,
                    delivery.retain,
                )
                .await
            {
                Checked::Allowed => {
                    if !self.encode_delivery(&delivery, pkid, true) {
                        // Larger than the client now accepts: it can never be sent.
                        self.state.inflight.remove(pkid);
                    }
                }
                Checked::Failed => {
                    // Acknowledged to its publisher: never dropped for a plugin failure,
                    // never sent unchecked. It keeps its slot in the window and is
                    // resent, checked again, on the next resume.
                    warn!(
                        topic = ?m.topic,
                        pkid,
                        "not resending an inflight message now: its RECEIVE check failed (plugin error); kept for the next resume"
                    );
                }
                Checked::Denied => {
                    self.state.inflight.remove(pkid);
                    self.broker.stats.resend_denied();
                    info!(
                        topic = ?m.topic,
                        pkid,
                        "not resending an inflight message: RECEIVE denies it"
                    );
                }
            }
        }
    }

    /// A member of a shared subscription goes away: what it was sent through a share
    /// group and has not acknowledged goes to another member of the group (MQTT 5
    /// section 4.8.2 lets a broker do so at once), and so does a held delivery. For a
    /// session that ends with the connection, the queue's shared deliveries go too
    /// (the rest is discarded with the session, as before); a persistent session keeps
    /// its queue for when its client comes back. What no other member can take now
    /// (none online with room) stays with this session.
    pub(super) fn hand_over_shared(&mut self) {
        let router = &self.broker.router;
        let id = self.state.id;
        let mut handed = self
            .state
            .inflight
            .hand_over(|d| d.share.is_some() && router.reroute(d, id));
        if let Some(held) = &self.state.held
            && held.delivery.share.is_some()
            && router.reroute(&held.delivery, id)
        {
            self.state.held = None;
            handed += 1;
        }
        if !self.state.persistent {
            while let Ok(delivery) = self.state.queue.try_recv() {
                if delivery.share.is_some()
                    && delivery.qos != QoS::AtMostOnce
                    && router.reroute(&delivery, id)
                {
                    handed += 1;
                }
            }
        }
        if handed > 0 {
            info!(
                messages = handed,
                "handed unacknowledged shared-subscription messages to other members"
            );
        }
    }
}
