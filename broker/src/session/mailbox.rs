//! A session's mailbox: the bounded queue between the router and the session.
//!
//! The same queue holds messages while the client is online (waiting behind the inflight
//! window or the socket) and while a persistent session is offline, so "max queued
//! messages" is one bound with one behaviour: past it, the message is dropped for this
//! session, counted, and logged at a falling rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytestring::ByteString;
use tokio::sync::mpsc;

use crate::protocol::QoS;
use crate::session::message::Delivery;
use crate::storage::Store;

/// The sending side of a session's queue, shared by every subscription of the session.
pub struct Mailbox {
    tx: mpsc::Sender<Delivery>,
    /// Whether a connection is draining the queue. QoS 0 messages are not queued for
    /// an offline session (MQTT-3.1.2-5 lets a broker keep only QoS 1 and 2).
    online: AtomicBool,
    dropped: AtomicU64,
    /// Names the session in drop logs, and in the store.
    client_id: ByteString,
    /// The store, for a persistent session when `storage.path` is set: every QoS 1/2
    /// delivery queued here is stored first.
    store: Option<Arc<Store>>,
}

impl Mailbox {
    /// A mailbox of `capacity` messages for `client_id`'s session, and its receiving end.
    pub fn new(client_id: ByteString, capacity: usize) -> (Arc<Self>, mpsc::Receiver<Delivery>) {
        Self::with_store(client_id, capacity, None)
    }

    /// A mailbox whose QoS 1/2 deliveries are written to `store` (when set) as they are
    /// queued.
    pub fn with_store(
        client_id: ByteString,
        capacity: usize,
        store: Option<Arc<Store>>,
    ) -> (Arc<Self>, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(capacity);
        let mailbox = Arc::new(Self {
            tx,
            online: AtomicBool::new(true),
            dropped: AtomicU64::new(0),
            client_id,
            store,
        });
        (mailbox, rx)
    }

    /// The store its deliveries are written to, if any.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Whether a delivery at `qos` queued here is written to the store.
    pub fn stores(&self, qos: QoS) -> bool {
        qos != QoS::AtMostOnce && self.store.is_some()
    }

    /// Marks the session online (a connection drains it) or offline.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Release);
    }

    /// Whether a connection is draining the queue.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Whether the queue has no room left.
    pub fn is_full(&self) -> bool {
        self.tx.capacity() == 0
    }

    /// Messages in the queue now (read from the channel's free capacity: no counter
    /// on the message path).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Messages dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The session's client id.
    pub fn client_id(&self) -> &ByteString {
        &self.client_id
    }

    /// Queues a delivery without waiting. A QoS 0 delivery to an offline session is
    /// skipped, which is not a drop; past the bound the delivery is dropped and counted.
    ///
    /// A delivery to a stored session is handed to the store before it enters the
    /// queue, so its removal (once acknowledged) can only come after it.
    pub fn offer(&self, mut delivery: Delivery) -> Offer {
        let online = self.online.load(Ordering::Acquire);
        if delivery.qos == QoS::AtMostOnce && !online {
            return Offer::Skipped;
        }
        if let Some(store) = &self.store
            && delivery.qos != QoS::AtMostOnce
        {
            if self.tx.capacity() == 0 {
                return self.drop_one();
            }
            delivery.stored = Some(store.queued(&self.client_id, &delivery));
        }
        self.send(delivery, online)
    }

    /// Puts a delivery restored from the store back in the queue, as it was stored.
    pub fn restore(&self, delivery: Delivery) -> Offer {
        self.send(delivery, false)
    }

    fn send(&self, delivery: Delivery, online: bool) -> Offer {
        match self.tx.try_send(delivery) {
            Ok(()) if online => Offer::Queued,
            Ok(()) => Offer::QueuedOffline,
            // A closed channel means the session ended between routing and delivery.
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Skipped,
            Err(mpsc::error::TrySendError::Full(_)) => self.drop_one(),
        }
    }

    /// Counts a delivery dropped at the bound, and logs at a falling rate.
    fn drop_one(&self) -> Offer {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                client_id = %self.client_id,
                dropped = n,
                capacity = self.tx.max_capacity(),
                "session queue full; dropping messages (mqtt.max_queued_messages)"
            );
        }
        Offer::Dropped
    }
}

/// What became of a delivery offered to a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued for the connected client.
    Queued,
    /// Queued for a persistent session whose client is offline.
    QueuedOffline,
    /// Not queued, and not a loss: QoS 0 for an offline session, or a session that
    /// just ended.
    Skipped,
    /// Dropped: the queue was full (`mqtt.max_queued_messages`).
    Dropped,
}
