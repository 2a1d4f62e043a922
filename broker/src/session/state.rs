//! What MQTT keeps for a session between connections.

use std::sync::Arc;

use bytestring::ByteString;
use foldhash::{HashMap, HashSet};

use crate::session::id::SessionId;
use crate::session::inflight::Inflight;
use crate::session::mailbox::{Mailbox, Queue, QueueBound};
use crate::session::message::Delivery;
use crate::storage::{Op, SessionRecord, Store, SubOptions};

/// Everything MQTT keeps for a session between connections.
pub struct SessionState {
    /// Router identity.
    pub id: SessionId,
    /// The client identifier.
    pub client_id: ByteString,
    /// Whether the session survives disconnection (3.1.1 clean session = 0; MQTT 5
    /// session expiry interval above 0).
    pub persistent: bool,
    /// How long a persistent session is kept once its connection ended, when shorter
    /// than `mqtt.session_expiry` (an MQTT 5 client's session expiry interval); `None`:
    /// `mqtt.session_expiry`.
    pub expiry: Option<std::time::Duration>,
    /// Sending side of the session's queue, held by its subscriptions.
    pub mailbox: Arc<Mailbox>,
    /// Receiving side of the session's queue.
    pub queue: Queue,
    /// Filters and the options granted for each (what the router routes by).
    pub subscriptions: HashMap<ByteString, SubOptions>,
    /// Outbound QoS 1/2 messages awaiting acknowledgement.
    pub inflight: Inflight,
    /// Inbound QoS 2 packet identifiers received and not yet released (PUBREL), so a
    /// redelivered PUBLISH is not routed twice.
    pub incoming_qos2: HashSet<u16>,
    /// The identity the session's subscriptions were checked for: the owner that last
    /// served it (empty: anonymous).
    pub owner: ByteString,
    /// The plugin generation whose topic-check chain last allowed every subscription
    /// (0: not checked since it was resumed). A connection serving the session checks
    /// them again when this is not the generation in force (see `follow_reload`).
    pub checked_generation: u64,
    /// A QoS 1/2 delivery whose RECEIVE check failed with a plugin error: checked again
    /// until `topic-check.hold` runs out. Nothing is taken from `queue` meanwhile, so
    /// the session's order holds. Kept with the session across reconnects.
    pub held: Option<Held>,
    /// An MQTT 5 will waiting out its delay interval since the last connection ended:
    /// sending `false` drops it (a connection resumed the session); dropping the sender
    /// (the session is discarded) publishes it at once.
    pub pending_will: Option<tokio::sync::oneshot::Sender<bool>>,
    /// Which life of the client id's session this is in the store; 0 when the session
    /// is not stored (memory only, or not persistent when it was created).
    pub incarnation: u64,
}

/// A delivery waiting for a RECEIVE verdict (see [`SessionState::held`]).
#[derive(Debug)]
pub struct Held {
    /// The delivery, not yet checked.
    pub delivery: Delivery,
    /// When a connection first failed to check it: the hold runs from here.
    pub since: tokio::time::Instant,
}

impl SessionState {
    /// A fresh session with a queue of `capacity` messages.
    pub fn new(client_id: ByteString, persistent: bool, capacity: usize) -> Self {
        let (mailbox, queue) = Mailbox::new(client_id.clone(), capacity);
        Self {
            id: SessionId::next(),
            client_id,
            persistent,
            expiry: None,
            mailbox,
            queue,
            subscriptions: HashMap::default(),
            inflight: Inflight::default(),
            incoming_qos2: HashSet::default(),
            held: None,
            pending_will: None,
            owner: ByteString::new(),
            checked_generation: 0,
            incarnation: 0,
        }
    }

    /// A fresh session bounded by `bound`; a persistent one is written to `store` when
    /// given (its record now, and each QoS 1/2 message as it is queued).
    pub fn with_queue(
        client_id: ByteString,
        persistent: bool,
        bound: QueueBound,
        store: Option<&Arc<Store>>,
    ) -> Self {
        match store {
            Some(store) if persistent => {
                let incarnation = store.next_seq();
                Self::restored(client_id, bound, store.clone(), incarnation)
            }
            _ => {
                let (mailbox, queue) = Mailbox::with_store(client_id.clone(), bound, None);
                Self {
                    mailbox,
                    queue,
                    ..Self::new(client_id, persistent, 1)
                }
            }
        }
    }

    /// A persistent session read back from `store`, under the incarnation it was
    /// stored with.
    pub fn restored(
        client_id: ByteString,
        bound: QueueBound,
        store: Arc<Store>,
        incarnation: u64,
    ) -> Self {
        let (mailbox, queue) = Mailbox::with_store(client_id.clone(), bound, Some(store));
        Self {
            mailbox,
            queue,
            incarnation,
            ..Self::new(client_id, true, 1)
        }
    }

    /// The store the session is written to, if any.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.mailbox.store().filter(|_| self.incarnation != 0)
    }

    /// Writes the session's record (identity, expiry, subscriptions) to its store;
    /// `disconnected_at` is when its connection ended (`None` while one serves it).
    pub fn save(&self, disconnected_at: Option<std::time::SystemTime>) {
        let Some(store) = self.store() else {
            return;
        };
        let mut subscriptions: Vec<(ByteString, SubOptions)> = self
            .subscriptions
            .iter()
            .map(|(f, o)| (f.clone(), *o))
            .collect();
        subscriptions.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        store.submit(Op::Session {
            client_id: self.client_id.clone(),
            record: SessionRecord {
                incarnation: self.incarnation,
                owner: self.owner.clone(),
                expiry: self.expiry,
                disconnected_at,
                subscriptions,
            },
        });
    }

    /// Removes the session from its store (it ended for good).
    pub fn forget(&self) {
        if let Some(store) = self.store() {
            store.submit(Op::SessionGone {
                client_id: self.client_id.clone(),
                incarnation: self.incarnation,
            });
        }
    }
}
