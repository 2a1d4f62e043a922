//! Event streams to plugins: one bounded queue per plugin, filled by the broker without
//! ever waiting for the plugin (unless the plugin's overflow policy is `backpressure`),
//! drained in batches on the plugin's `Events` stream, freed by its acks.
//!
//! Every event gets the next sequence number of its plugin's stream. The queue keeps
//! events until they are acked; after a reconnect the unacked ones are sent again with
//! their sequence (at-least-once while they fit in the queue). At the bound,
//! `drop_oldest` drops the oldest event and counts it (the plugin sees a gap and
//! `EventBatch.dropped_events`); `backpressure` makes the producer wait for room.
//! The queue is bounded twice: by events (`queue`) and by their encoded bytes
//! (`max_bytes`), so a few large payloads cannot hold more memory than many small ones;
//! whichever bound is reached first applies the overflow policy. One event larger than
//! `max_bytes` on its own is queued only into an otherwise empty queue (so neither policy
//! can wait or drop forever), and the bound is then exceeded by that event alone.
//!
//! # Layout
//! - [`codec`]: events encoded once, when queued, and batches written from those bytes.
//! - [`queue`]: [`EventQueue`], one plugin's bounded queue.
//! - [`hub`]: [`EventHub`] and its [`Subscriber`]s: who wants what; events enter here.
//! - [`stream`]: [`drive`], the `Events` call that drains a queue to its plugin.
//!
//! The settings (`plugins.<alias>.events`) are in the host's configuration module and
//! re-exported here.

pub mod codec;
pub mod hub;
pub mod queue;
pub mod stream;

pub use codec::{EncodedClient, OutBatch};
pub use hub::{EventHub, Pending, Subscriber};
pub use queue::EventQueue;
pub use stream::drive;

pub use crate::plugins::config::{EventsConfig, Overflow};
