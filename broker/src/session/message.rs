//! What sessions receive: an application message, shared by every subscriber, and one
//! delivery of it to one session. The router makes them; sessions queue, send and
//! resend them.

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;

use crate::protocol::QoS;

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
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// QoS of this delivery: min(published, granted).
    pub qos: QoS,
    /// Retain flag on the wire: set only for retained messages sent on subscribe.
    pub retain: bool,
}
