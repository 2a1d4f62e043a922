//! Sessions: the state that outlives a connection, and who owns it.
//!
//! A [`SessionState`] has exactly one owner at a time: the connection serving it, or the
//! [`Registry`] while a persistent session is offline. A takeover moves it from the old
//! connection to the new one through the registry (see [`registry`]), so there is never
//! a moment where two connections write the same session.
//!
//! # Layout
//! - [`message`]: what sessions receive: a routed message and one delivery of it.
//! - [`id`]: a session's identity in the router.
//! - [`state`]: what MQTT keeps for a session between connections.
//! - [`mailbox`]: the bounded queue from the router to the session.
//! - [`inflight`]: outbound QoS 1/2 messages awaiting acknowledgement.
//! - [`registry`]: sessions by client id, takeover, resumption, ownership and expiry.

pub mod id;
pub mod inflight;
pub mod mailbox;
pub mod message;
pub mod registry;
pub mod state;

pub use id::SessionId;
pub use inflight::{Inflight, OutState, Outgoing};
pub use mailbox::{Mailbox, Offer, Queue, QueueBound, QueueFull};
pub use message::{Delivery, Message};
pub use registry::{ClaimError, Limits, Registry};
pub use state::{Held, SessionState};
