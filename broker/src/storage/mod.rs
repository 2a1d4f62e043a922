//! Storage: what survives a restart, behind one trait.
//!
//! With `storage.path` set, persistent sessions (identity, expiry, subscriptions), the
//! QoS 1/2 messages queued for them or in flight to them, inbound QoS 2 packet ids
//! awaiting PUBREL, and retained messages are written to an embedded store and restored
//! at the next start, before any listener opens. Without it (the embedded default) the
//! broker keeps everything in memory, as before, and no code on the message path does
//! more than test an `Option`.
//!
//! # Shape
//! The broker never talks to an engine directly. Everything it changes becomes an
//! [`Op`], handed to the [`Store`] (see [`writer`]): a FIFO into one writer thread that
//! applies ops in batches through the [`Storage`] trait, one transaction per batch, and
//! answers barriers once their batch is as durable as `storage.sync` promises. The FIFO
//! is what keeps ops in causal order without locks: a message's record is handed over
//! before the message becomes visible to its subscriber, so its removal (after the ack)
//! always comes later.
//!
//! An engine implements [`Storage`]: apply a batch, load everything. The embedded one
//! is redb ([`engine`]); a distributed one (sessions and retained messages on NATS
//! JetStream, for a cluster) implements the same two methods.
//!
//! # Layout
//! - [`ops`]: the contract: ops, the snapshot, the [`Storage`] trait, errors.
//! - [`record`]: how sessions, messages and states are encoded.
//! - [`engine`]: the redb engine, its tables and its format version.
//! - [`writer`]: the [`Store`] the broker holds: group commit, periodic sync, failure.
//! - [`restore`]: rebuilding sessions, queues and retained messages at start-up.

pub mod engine;
pub mod ops;
pub mod record;
pub mod restore;
pub mod writer;

pub use ops::{
    FORMAT, Op, Restored, Snapshot, Storage, StorageError, StoredMessage, StoredSession,
};
pub use record::{Corrupt, Sent, SessionRecord, StoredDelivery, SubOptions, WillRecord};
pub use writer::{Hold, Store, Stored};

#[cfg(test)]
mod tests;
