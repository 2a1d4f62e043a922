//! Sessions by client id: creation, resumption and takeover.
//!
//! # Takeover
//! Each connection that claims a client id bumps the entry's generation and leaves a
//! way to stop it (a [`CancellationToken`]) and a way to receive its session (a oneshot
//! receiver). A second connection with the same id cancels the first and waits for the
//! session to arrive through that oneshot: the first connection publishes its will,
//! closes its socket and hands the state over on its way out. When a connection ends
//! and nobody took over, it parks a persistent session in the registry, or drops a
//! clean one. The registry lock is never held across an `.await`.

use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use foldhash::HashMap;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{Mailbox, SessionState};
use crate::router::Router;

/// How long a new connection waits for the old one to hand its session over.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Entry {
    generation: u64,
    live: Option<Live>,
    parked: Option<SessionState>,
}

struct Live {
    stop: CancellationToken,
    handoff: oneshot::Receiver<SessionState>,
    /// The connection's session queue, once its session is settled (for metrics).
    mailbox: Option<Arc<Mailbox>>,
}

/// A connection's claim on a client id, returned by [`Registry::claim`].
pub struct Claim {
    /// Cancelled when another connection takes the client id over.
    pub stop: CancellationToken,
    generation: u64,
    handoff: oneshot::Sender<SessionState>,
}

/// All sessions, online and parked.
pub struct Registry {
    entries: Mutex<HashMap<ByteString, Entry>>,
    router: Arc<Router>,
}

impl Registry {
    /// Records the queue of the session a claim's connection serves, so that
    /// [`queued_messages`](Self::queued_messages) counts it while it is online.
    pub fn serving(&self, client_id: &ByteString, claim: &Claim, mailbox: Arc<Mailbox>) {
        let mut entries = self.entries.lock();
        if let Some(entry) = entries.get_mut(client_id)
            && entry.generation == claim.generation
            && let Some(live) = entry.live.as_mut()
        {
            live.mailbox = Some(mailbox);
        }
    }

    /// Messages waiting in every session's queue, online and parked. Walks the
    /// sessions under the registry lock: for a scrape, not for the message path.
    pub fn queued_messages(&self) -> u64 {
        let entries = self.entries.lock();
        entries
            .values()
            .map(|e| {
                let live = e.live.as_ref().and_then(|l| l.mailbox.as_ref());
                let parked = e.parked.as_ref().map(|s| &s.mailbox);
                live.into_iter()
                    .chain(parked)
                    .map(|m| m.queued() as u64)
                    .sum::<u64>()
            })
            .sum()
    }

    /// An empty registry whose sessions subscribe through `router`.
    pub fn new(router: Arc<Router>) -> Self {
        Self {
            entries: Mutex::default(),
            router,
        }
    }

    /// Sessions known: online ones plus parked persistent ones.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.entries.lock().is_empty()
    }

    /// Claims `client_id` for a new connection, stopping any connection that holds it,
    /// and returns the claim and the previous session state, if any (taken over from a
    /// live connection or resumed from the parked ones).
    pub async fn claim(&self, client_id: &ByteString) -> (Claim, Option<SessionState>) {
        let stop = CancellationToken::new();
        let (handoff_tx, handoff_rx) = oneshot::channel();
        let (generation, previous_live, parked) = {
            let mut entries = self.entries.lock();
            let entry = entries.entry(client_id.clone()).or_default();
            entry.generation += 1;
            let previous = entry.live.replace(Live {
                stop: stop.clone(),
                handoff: handoff_rx,
                mailbox: None,
            });
            (entry.generation, previous, entry.parked.take())
        };
        let previous = match previous_live {
            Some(live) => {
                live.stop.cancel();
                match tokio::time::timeout(HANDOFF_TIMEOUT, live.handoff).await {
                    Ok(Ok(state)) => Some(state),
                    _ => {
                        tracing::warn!(%client_id, "previous connection did not hand its session over; starting a new one");
                        None
                    }
                }
            }
            None => parked,
        };
        let claim = Claim {
            stop,
            generation,
            handoff: handoff_tx,
        };
        (claim, previous)
    }

    /// Ends a connection's claim: hands the session to the connection that took over,
    /// parks it if persistent, or discards it and its subscriptions.
    pub fn release(&self, claim: Claim, state: SessionState) {
        state.mailbox.set_online(false);
        let discard = {
            let mut entries = self.entries.lock();
            match entries.get_mut(&state.client_id) {
                Some(entry) if entry.generation == claim.generation => {
                    entry.live = None;
                    if state.persistent {
                        entry.parked = Some(state);
                        None
                    } else {
                        entries.remove(&state.client_id);
                        Some(state)
                    }
                }
                // Taken over: the new connection decides what to keep.
                _ => claim.handoff.send(state).err(),
            }
        };
        if let Some(state) = discard {
            self.discard(state);
        }
    }

    /// Drops a session's subscriptions from the router.
    pub fn discard(&self, state: SessionState) {
        self.router
            .unsubscribe_all(state.subscriptions.keys(), state.id);
    }
}
