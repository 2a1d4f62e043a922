//! The MQTT codec: one packet model, wire forms per protocol version.
//!
//! # Layout
//! - [`packet`]: the packet model. It is a superset shaped after MQTT 5 (reason codes,
//!   properties) so that the 3.1.1 wire form and the 5.0 one decode into the same types
//!   and the rest of the broker never branches on the wire version to read a packet.
//! - [`properties`]: MQTT 5 properties as a plain struct. The 3.1.1 wire form ignores
//!   them on encode and leaves them empty on decode; [`v5::properties`] reads and writes
//!   them.
//! - [`v4`]: the 3.1.1 wire form (protocol level 4, and level 3 "MQIsdp", which has the
//!   same layout), one file per packet.
//! - [`v5`]: the 5.0 wire form (protocol level 5), one file per packet, and the property
//!   blocks every 5.0 packet carries.
//! - [`error`]: why bytes are not an acceptable packet.
//! - [`frame`]: fixed-header framing and the small shared primitives (remaining length,
//!   strings, binary data).
//! - [`codec`]: the one door to the wire versions: [`Wire`], the codec a connection
//!   negotiated, and the version-dispatching decode and encode.
//! - [`outbox`]: what a connection is about to write, with a summary of each packet
//!   for packet events, taken from the packet written (never decoded again).
//! - this file: declarations and re-exports only.
//!
//! # Framing
//! Decoding is two-phase ("check then parse"): [`check`] looks at the bytes buffered so
//! far and answers whether a whole packet is there, without allocating. The announced
//! size is compared with the maximum packet size *before* waiting for the body, so a
//! hostile length never makes the broker buffer more than it allows. Only then is the
//! frame split off the `BytesMut` as a frozen `Bytes`, and payloads and topics are slices
//! of it: a PUBLISH payload is never copied between the socket and its subscribers.

pub mod codec;
pub mod error;
pub mod frame;
pub mod outbox;
pub mod packet;
pub mod properties;
pub mod v4;
pub mod v5;

pub use codec::{
    Wire, decode, decode_connect, decode_connect_frame, encode, publish_len, redacted_connect_frame,
};
pub use error::Error;
pub use frame::{FixedHeader, MAX_REMAINING_LENGTH, check, next_frame, validate_topic_name};
pub use outbox::{KEEP_CAPACITY, Outbox, PacketSummary};
pub use packet::*;
pub use properties::Properties;

#[cfg(test)]
mod tests;
