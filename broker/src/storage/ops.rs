//! The contract between the broker and a storage engine: the [`Op`]s it applies, the
//! [`Snapshot`] it reads back, the [`Storage`] trait, and its errors.

use std::path::PathBuf;
use std::sync::Arc;

use bytestring::ByteString;

use super::record::{Sent, SessionRecord, StoredDelivery, WillRecord};
use crate::session::message::Message;

/// The store's format. Stored in the store; a store of a newer format refuses the start,
/// an older one is migrated when it opens. 1 is the first.
pub const FORMAT: u64 = 1;

/// Why the store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage directory or file could not be created, opened or written.
    #[error("storage {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The engine refused the file or an operation on it.
    #[error("storage {path}: {detail}")]
    Engine {
        /// The store file.
        path: PathBuf,
        /// What the engine said.
        detail: String,
    },
    /// A record did not decode, or the file is damaged.
    #[error("storage {path}: the store is damaged ({detail}); move it aside to start empty")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The store was written by a newer Tandem.
    #[error(
        "storage {path}: the store has format {found}, newer than this Tandem's {FORMAT}; run the newer version or move the store aside"
    )]
    Newer {
        /// The store file.
        path: PathBuf,
        /// The format found.
        found: u64,
    },
}

/// One change to what is stored. Keys are client ids (sessions, queues, inbound ids) and
/// topics (retained messages); `seq` numbers are unique across the whole store, so a
/// late removal from an older session under a reused client id cannot touch a newer one.
#[derive(Debug, Clone)]
pub enum Op {
    /// A persistent session was created, resumed, parked or changed its subscriptions.
    Session {
        /// Its client id.
        client_id: ByteString,
        /// The whole record (replaces the stored one).
        record: SessionRecord,
    },
    /// A session ended for good (expired, evicted, replaced by a clean start, or its
    /// client left a non-persistent one): its record, if it is still this incarnation,
    /// and every message and inbound id from this incarnation go.
    SessionGone {
        /// Its client id.
        client_id: ByteString,
        /// Which life of the session ended.
        incarnation: u64,
    },
    /// A QoS 1/2 delivery was queued for a stored session.
    Queued {
        /// The session's client id.
        client_id: ByteString,
        /// The delivery's sequence number.
        seq: u64,
        /// The delivery.
        delivery: StoredDelivery,
    },
    /// A QoS 2 delivery went out with a packet id, or its PUBREC came.
    Sent {
        /// The session's client id.
        client_id: ByteString,
        /// The delivery's sequence number.
        seq: u64,
        /// Its state.
        sent: Sent,
    },
    /// A delivery is done: acknowledged, skipped or dropped.
    Done {
        /// The session's client id.
        client_id: ByteString,
        /// The delivery's sequence number.
        seq: u64,
    },
    /// An inbound QoS 2 message was routed and its PUBREC is due: a redelivery of the
    /// same packet id must not be routed again, even after a restart.
    Incoming {
        /// The publishing session's client id.
        client_id: ByteString,
        /// The packet id.
        pkid: u16,
        /// The session's incarnation.
        incarnation: u64,
    },
    /// The PUBREL for an inbound QoS 2 packet id came.
    IncomingReleased {
        /// The publishing session's client id.
        client_id: ByteString,
        /// The packet id.
        pkid: u16,
    },
    /// A retained message was set (it replaces the topic's).
    Retained {
        /// The message.
        message: Arc<Message>,
    },
    /// A topic's retained message was cleared.
    RetainedCleared {
        /// The topic.
        topic: ByteString,
    },
    /// An MQTT 5 will started waiting out its delay interval.
    Will {
        /// The session's client id.
        client_id: ByteString,
        /// The will and who sent it.
        record: Box<WillRecord>,
    },
    /// The delayed will of a session was published or cancelled (its client came back).
    WillGone {
        /// The session's client id.
        client_id: ByteString,
    },
}

/// A stored message of one session, in queue order.
#[derive(Debug)]
pub struct StoredMessage {
    /// Its sequence number.
    pub seq: u64,
    /// The delivery.
    pub delivery: StoredDelivery,
    /// For a QoS 2 delivery that went out: its packet id and state.
    pub sent: Option<Sent>,
}

/// A stored session with everything that belongs to it.
#[derive(Debug)]
pub struct StoredSession {
    /// Its client id.
    pub client_id: ByteString,
    /// The record.
    pub record: SessionRecord,
    /// Its messages, oldest first.
    pub messages: Vec<StoredMessage>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub incoming: Vec<u16>,
}

/// Everything a store holds, read at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Persistent sessions.
    pub sessions: Vec<StoredSession>,
    /// Retained messages.
    pub retained: Vec<Message>,
    /// MQTT 5 wills waiting out their delay, by client id.
    pub wills: Vec<(ByteString, WillRecord)>,
    /// One past the largest sequence number or incarnation in the store.
    pub next_seq: u64,
    /// Records that belonged to no session and were removed while loading.
    pub orphans: u64,
}

/// A storage engine: applies batches of ops and reads everything back.
///
/// Called from one thread at a time (the store's writer), so an engine needs no locking
/// of its own.
pub trait Storage: Send + 'static {
    /// Applies `ops` in order, as one transaction: all or none. With `durable`, they are
    /// on stable storage when this returns; without, they are written and reach stable
    /// storage with a later durable commit (or are lost in a crash before it).
    fn commit(&mut self, ops: &[Op], durable: bool) -> Result<(), StorageError>;

    /// Reads everything stored, removing what belongs to no session.
    fn load(&mut self) -> Result<Snapshot, StorageError>;

    /// Gets ready to commit again after a failed commit (an engine may need to reopen
    /// its file). The default does nothing.
    fn recover(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// What a restore put back, for the log and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Persistent sessions parked again.
    pub sessions: u64,
    /// Sessions that expired while the broker was down (removed).
    pub expired: u64,
    /// Messages queued again.
    pub queued: u64,
    /// QoS 2 messages put back in flight (resent with their packet id).
    pub inflight: u64,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub incoming: u64,
    /// Retained messages.
    pub retained: u64,
    /// Messages that did not fit `mqtt.max_queued_messages` or `mqtt.max_retained_*`
    /// now (the limits were lowered since they were stored): dropped and removed.
    pub dropped: u64,
}
