//! Negative checks with a positive end.
//!
//! "Nothing arrives" cannot be shown by waiting: a fixed silence passes on a slow
//! machine whether or not the message was going to come. Instead a test sends a
//! *marker* after the thing that must not arrive, through a path that would have
//! delivered that thing first, and asserts the marker is the very next packet.
//!
//! The ordering this relies on: a connection handles its packets one after another and
//! routes each PUBLISH before it reads the next, and each session has one FIFO queue.
//! So a message routed to a session before the marker (same publisher, or another
//! publisher whose QoS 1/2 handshake or PINGREQ round trip completed first) is written
//! to the subscriber before the marker.

use bytes::Bytes;
use tandem_broker::protocol::{Packet, Publish, QoS};

use crate::client::RawClient;

/// The topic [`RawClient::expect_nothing_before_marker`] uses unless told otherwise.
pub const MARKER_TOPIC: &str = "marker/end";

impl RawClient {
    /// Asserts that the next packet is the PUBLISH of `payload` on `topic` (at any QoS;
    /// a QoS 1/2 marker is acknowledged), and that nothing came before it.
    pub async fn expect_marker(&mut self, topic: &str, payload: &[u8]) {
        match self.recv().await {
            Packet::Publish(p) if &p.topic[..] == topic && p.payload[..] == *payload => {
                self.ack(&p).await;
            }
            other => panic!(
                "expected only the marker {topic:?} {:?} next, got {other:?}",
                String::from_utf8_lossy(payload)
            ),
        }
    }

    /// Asserts `self` receives nothing before a marker: subscribes `self` to `topic`
    /// (if `subscribe`), has `publisher` publish a unique marker there at QoS 0 and
    /// expects it to be the next packet. Anything routed to `self` before the marker
    /// would have arrived first.
    pub async fn expect_nothing_before_marker(
        &mut self,
        publisher: &mut RawClient,
        topic: &str,
        subscribe: bool,
    ) {
        if subscribe {
            self.subscribe(topic, QoS::AtMostOnce).await;
        }
        let payload = marker_payload();
        publisher
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: topic.into(),
                pkid: 0,
                payload: Bytes::copy_from_slice(payload.as_bytes()),
                properties: None,
            }))
            .await;
        self.expect_marker(topic, payload.as_bytes()).await;
    }
}

impl RawClient {
    /// Like [`expect_nothing_before_marker`](Self::expect_nothing_before_marker) with
    /// `self` as the publisher (it must be allowed to publish to `topic` and already be
    /// subscribed to it).
    pub async fn expect_nothing_before_own_marker(&mut self, topic: &str) {
        let payload = marker_payload();
        self.publish(topic, payload.as_bytes(), QoS::AtMostOnce, false)
            .await;
        self.expect_marker(topic, payload.as_bytes()).await;
    }

    /// Receives PUBLISH packets until the marker `payload` on `topic` arrives (a QoS 1/2
    /// one acknowledged); returns the (topic, payload) of every one before it, each
    /// acknowledged as it came.
    pub async fn publishes_before_marker(
        &mut self,
        topic: &str,
        payload: &[u8],
    ) -> Vec<(String, Bytes)> {
        let mut before = Vec::new();
        loop {
            let p = self.recv_publish().await;
            self.ack(&p).await;
            if &p.topic[..] == topic && p.payload[..] == *payload {
                return before;
            }
            before.push((p.topic.to_string(), p.payload));
        }
    }
}

/// A payload no test publishes otherwise.
pub fn marker_payload() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("marker-{}", N.fetch_add(1, Ordering::Relaxed))
}
