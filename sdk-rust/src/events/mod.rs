//! The event role: [`EventHandler`], what it subscribes to ([`EventSubscription`]) and the events.
//!
//! The SDK reads the broker's `Events` stream, calls the handlers whose subscription matches each
//! event, one event at a time in sequence order, and acks the highest sequence once the handlers
//! have returned for a whole batch. Delivery is at least once: after a reconnect the broker resends
//! what was not acked, so a handler with side effects skips sequences it has already handled (see
//! [`Event::sequence`]). A handler error is logged and the event still counts as handled: a
//! poisonous event must not stall the stream forever.
//!
//! # Layout
//! - `handler.rs`: [`EventHandler`], and [`EventSubscription`], which events it sees.
//! - `kind.rs`: [`EventKind`], numbered as on the wire, with its names ([`UnknownEventKind`]).
//! - `event.rs`: [`Event`] and [`EventData`], one variant per kind.
//! - `data.rs`: what the variants carry ([`ClientConnected`], [`Message`], [`MqttPacket`], ...).
//!
//! Their conversions from and to the wire are in `convert/events.rs` and `convert/event_parts.rs`.

mod data;
mod event;
mod handler;
mod kind;

pub use data::{
    ClientConnected, ClientDisconnected, DisconnectReason, ListenerInfo, Message, MessageBroadcast,
    MessageReceived, MqttPacket, PacketType, RetainedAction, RetainedMessage, Subscription,
};
pub use event::{Event, EventData};
pub use handler::{EventHandler, EventSubscription};
pub use kind::{EventKind, UnknownEventKind};
