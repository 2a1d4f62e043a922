//! A session's mailbox: the bounded queue between the router and the session.
//!
//! The same queue holds messages while the client is online (waiting behind the inflight
//! window or the socket) and while a persistent session is offline, so "max queued
//! messages" is one bound, and `mqtt.queue_full` is what happens at it:
//! - `drop_new` (the default): the new message is dropped for this session;
//! - `drop_oldest`: the oldest queued message makes room for it;
//! - `backpressure`: a QoS 1/2 publisher waits for room (up to
//!   `mqtt.backpressure_timeout`), so its PUBACK/PUBREC says the message was queued for
//!   every subscriber. At the bound the publisher's connection is closed without the
//!   acknowledgement (see `server::publish`).
//!
//! Every message dropped is counted (globally and per session) and logged at a falling
//! rate with the session's client id.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytestring::ByteString;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::protocol::QoS;
use crate::session::message::Delivery;
use crate::storage::Store;

/// `mqtt.queue_full`: what a full session queue does with one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueFull {
    /// Drop the new message for this session.
    #[default]
    DropNew,
    /// Drop the oldest queued message to make room.
    DropOldest,
    /// Make a QoS 1/2 publisher wait for room.
    Backpressure,
}

/// A session queue's bound and its behaviour at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBound {
    /// Messages queued at most (`mqtt.max_queued_messages`).
    pub capacity: usize,
    /// What one more does (`mqtt.queue_full`).
    pub full: QueueFull,
}

impl QueueBound {
    /// `capacity` messages, dropping new ones past it.
    pub fn drop_new(capacity: usize) -> Self {
        Self {
            capacity,
            full: QueueFull::DropNew,
        }
    }
}

/// The receiving end, shared with the mailbox under `drop_oldest` so that it can take
/// the oldest message out. The lock is held only for one poll or one take.
type SharedRx = Arc<Mutex<mpsc::Receiver<Delivery>>>;

/// The receiving side of a session's queue: what its connection drains. Only a
/// `drop_oldest` queue is shared (and locked per poll); the others are the channel's
/// receiver as it is, so the default pays nothing for the policy it does not use.
pub enum Queue {
    /// Owned by the session alone.
    Owned(mpsc::Receiver<Delivery>),
    /// Shared with the mailbox (`drop_oldest`).
    Shared(SharedRx),
}

impl Queue {
    /// The next delivery; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        match self {
            Queue::Owned(rx) => rx.recv().await,
            Queue::Shared(rx) => std::future::poll_fn(|cx| rx.lock().poll_recv(cx)).await,
        }
    }

    /// The next delivery if one is queued.
    pub fn try_recv(&mut self) -> Result<Delivery, mpsc::error::TryRecvError> {
        match self {
            Queue::Owned(rx) => rx.try_recv(),
            Queue::Shared(rx) => rx.lock().try_recv(),
        }
    }
}

/// The sending side of a session's queue, shared by every subscription of the session.
pub struct Mailbox {
    tx: mpsc::Sender<Delivery>,
    /// The receiving end, under `drop_oldest` only.
    rx: Option<SharedRx>,
    full: QueueFull,
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
    /// A mailbox of `capacity` messages for `client_id`'s session that drops new
    /// messages past it, and its receiving end.
    pub fn new(client_id: ByteString, capacity: usize) -> (Arc<Self>, Queue) {
        Self::with_store(client_id, QueueBound::drop_new(capacity), None)
    }

    /// A mailbox bounded by `bound`, whose QoS 1/2 deliveries are written to `store`
    /// (when set) as they are queued.
    pub fn with_store(
        client_id: ByteString,
        bound: QueueBound,
        store: Option<Arc<Store>>,
    ) -> (Arc<Self>, Queue) {
        let (tx, rx) = mpsc::channel(bound.capacity);
        let (queue, shared) = if bound.full == QueueFull::DropOldest {
            let rx = Arc::new(Mutex::new(rx));
            (Queue::Shared(rx.clone()), Some(rx))
        } else {
            (Queue::Owned(rx), None)
        };
        let mailbox = Arc::new(Self {
            tx,
            rx: shared,
            full: bound.full,
            online: AtomicBool::new(true),
            dropped: AtomicU64::new(0),
            client_id,
            store,
        });
        (mailbox, queue)
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
    /// skipped, which is not a drop; past the bound the delivery is dropped and counted
    /// (the new one, or with `drop_oldest` the oldest). Under `backpressure`, use
    /// [`try_offer`](Self::try_offer) to wait instead.
    pub fn offer(&self, delivery: Delivery) -> Offer {
        self.try_offer(delivery).unwrap_or_else(|_| self.drop_one())
    }

    /// Like [`offer`](Self::offer), except that under `backpressure` a QoS 1/2 delivery
    /// that finds the queue full is handed back, for the publisher to wait with
    /// ([`offer_waiting`](Self::offer_waiting)).
    ///
    /// A delivery to a stored session is handed to the store before it enters the
    /// queue, so its removal (once acknowledged) can only come after it.
    pub fn try_offer(&self, delivery: Delivery) -> Result<Offer, Delivery> {
        let online = self.online.load(Ordering::Acquire);
        if delivery.qos == QoS::AtMostOnce && !online {
            return Ok(Offer::Skipped);
        }
        // Plain drop_new without a store needs no look first: a full channel refuses.
        if (self.full != QueueFull::DropNew || self.store.is_some()) && self.is_full() {
            match self.full {
                QueueFull::DropNew => return Ok(self.drop_one()),
                QueueFull::Backpressure if delivery.qos != QoS::AtMostOnce => {
                    return Err(delivery);
                }
                QueueFull::Backpressure => return Ok(self.drop_one()),
                QueueFull::DropOldest => {
                    let oldest = self.rx.as_ref().and_then(|rx| rx.lock().try_recv().ok());
                    let Some(oldest) = oldest else {
                        return Ok(self.send(self.stored(delivery), online));
                    };
                    self.drop_one();
                    // Dropped outside the lock: a stored one writes its removal.
                    drop(oldest);
                    return Ok(match self.send(self.stored(delivery), online) {
                        Offer::Queued | Offer::QueuedOffline => Offer::QueuedOverOldest { online },
                        other => other,
                    });
                }
            }
        }
        Ok(self.send(self.stored(delivery), online))
    }

    /// Waits up to `within` for room, then queues `delivery` (stored first, as
    /// [`try_offer`](Self::try_offer) does); past it the delivery is dropped and counted.
    pub async fn offer_waiting(&self, delivery: Delivery, within: Duration) -> Offer {
        match tokio::time::timeout(within, self.tx.reserve()).await {
            Ok(Ok(permit)) => {
                let online = self.online.load(Ordering::Acquire);
                permit.send(self.stored(delivery));
                if online {
                    Offer::Queued
                } else {
                    Offer::QueuedOffline
                }
            }
            // The session ended meanwhile.
            Ok(Err(_)) => Offer::Skipped,
            Err(_) => self.drop_one(),
        }
    }

    /// Puts a delivery restored from the store back in the queue, as it was stored.
    pub fn restore(&self, delivery: Delivery) -> Offer {
        self.send(delivery, false)
    }

    /// The delivery with its record in the store, when this session is stored.
    fn stored(&self, mut delivery: Delivery) -> Delivery {
        if let Some(store) = &self.store
            && delivery.qos != QoS::AtMostOnce
        {
            delivery.stored = Some(store.queued(&self.client_id, &delivery));
        }
        delivery
    }

    fn send(&self, delivery: Delivery, online: bool) -> Offer {
        match self.tx.try_send(delivery) {
            Ok(()) if online => Offer::Queued,
            Ok(()) => Offer::QueuedOffline,
            // A closed channel means the session ended between routing and delivery.
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Skipped,
            // Another publisher took the room since it was checked.
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
                policy = ?self.full,
                "session queue full; dropping messages (mqtt.max_queued_messages, mqtt.queue_full)"
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
    /// Queued in place of the oldest message, which was dropped (`drop_oldest`).
    QueuedOverOldest {
        /// Whether a connection drains the queue.
        online: bool,
    },
}

impl Offer {
    /// Whether the delivery is in the queue.
    pub fn queued(self) -> bool {
        matches!(
            self,
            Offer::Queued | Offer::QueuedOffline | Offer::QueuedOverOldest { .. }
        )
    }

    /// Whether a message was dropped for the session (this one or the oldest).
    pub fn dropped(self) -> bool {
        matches!(self, Offer::Dropped | Offer::QueuedOverOldest { .. })
    }

    /// Whether it was queued for a session whose client is offline.
    pub fn offline(self) -> bool {
        matches!(
            self,
            Offer::QueuedOffline | Offer::QueuedOverOldest { online: false }
        )
    }
}
