//! Sessions by client id: creation, resumption, takeover, ownership and expiry.
//!
//! # Takeover
//! Each connection that claims a client id bumps the entry's generation and leaves a
//! way to stop it (a [`CancellationToken`]) and a way to receive its session (a oneshot
//! receiver). A second connection with the same id cancels the first and waits for the
//! session to arrive through that oneshot: the first connection publishes its will,
//! closes its socket and hands the state over on its way out. When a connection ends
//! and nobody took over, it parks a persistent session in the registry, or drops a
//! clean one. The registry lock is never held across an `.await`.
//!
//! # Ownership
//! An entry remembers the identity that owns it (see [`Registry::claim`]). With
//! `mqtt.session_takeover: same_identity`, a claim by another identity is refused
//! before anything is touched: the owner's connection stays up and its parked session
//! stays parked.
//!
//! # Expiry and bound
//! Parked sessions are indexed by the time they were parked, and those that expire by
//! when they are due. [`Registry::run_expiry`] discards a session once it has been
//! parked for its expiry (`mqtt.session_expiry`, or the shorter interval an MQTT 5
//! client asked for, see [`SessionState::expiry`]); parking one more than
//! `mqtt.max_parked_sessions` discards the one parked longest ago first. A discarded
//! session's subscriptions leave the router and its queue is freed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use foldhash::HashMap;
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Mailbox, SessionState};
use crate::config::{MqttConfig, SessionTakeover};
use crate::router::Router;
use crate::stats::Stats;

/// How long a new connection waits for the old one to hand its session over.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// Another identity owns the client id's session, and `mqtt.session_takeover` is
    /// `same_identity`.
    #[error("the client id's session belongs to another identity (mqtt.session_takeover)")]
    OwnedByAnother,
}

/// The session rules the registry applies, from `mqtt:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Who may claim a client id another identity owns.
    pub takeover: SessionTakeover,
    /// How long a session stays parked unless it asked for less; `None`: until the
    /// broker stops.
    pub expiry: Option<Duration>,
    /// Sessions parked at most.
    pub max_parked: usize,
}

impl From<&MqttConfig> for Limits {
    fn from(mqtt: &MqttConfig) -> Self {
        Self {
            takeover: mqtt.session_takeover,
            expiry: mqtt.session_expiry,
            max_parked: mqtt.max_parked_sessions,
        }
    }
}

/// Where a parked session sits in the expiry index: when it was parked, then a
/// sequence number so two sessions parked in the same instant both have a key.
type ParkedKey = (Instant, u64);

#[derive(Default)]
struct Entry {
    generation: u64,
    /// The identity that owns the session: the last claim's (see [`Registry::claim`]).
    owner: ByteString,
    live: Option<Live>,
    /// The parked session, its key in the parked index and, if it expires, its key in
    /// the due index.
    parked: Option<(SessionState, ParkedKey, Option<ParkedKey>)>,
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

/// Entries and the index of parked sessions, under one lock so they never disagree.
#[derive(Default)]
struct Inner {
    entries: HashMap<ByteString, Entry>,
    /// Parked sessions, oldest first.
    parked: BTreeMap<ParkedKey, ByteString>,
    /// Parked sessions that expire, by when they are due.
    due: BTreeMap<ParkedKey, ByteString>,
    next_seq: u64,
}

impl Inner {
    /// Takes the parked session of `client_id` out (the entry stays).
    fn unpark(&mut self, client_id: &ByteString) -> Option<SessionState> {
        let entry = self.entries.get_mut(client_id)?;
        let (state, key, due) = entry.parked.take()?;
        self.parked.remove(&key);
        if let Some(due) = due {
            self.due.remove(&due);
        }
        Some(state)
    }

    /// Removes the parked session of `client_id` and its entry.
    fn remove_parked(&mut self, client_id: &ByteString) -> Option<SessionState> {
        let state = self.unpark(client_id)?;
        self.entries.remove(client_id);
        Some(state)
    }

    /// Removes the oldest parked session and its entry.
    fn pop_oldest(&mut self) -> Option<(ByteString, SessionState, Instant)> {
        let (&(parked_at, _), client_id) = self.parked.first_key_value()?;
        let client_id = client_id.clone();
        let state = self.remove_parked(&client_id)?;
        Some((client_id, state, parked_at))
    }
}

/// All sessions, online and parked.
pub struct Registry {
    inner: Mutex<Inner>,
    router: Arc<Router>,
    stats: Arc<Stats>,
    limits: Limits,
    /// Wakes [`run_expiry`](Self::run_expiry) when a session is parked.
    parked_changed: Notify,
}

impl Registry {
    /// An empty registry whose sessions subscribe through `router`, applying `limits`
    /// and counting into `stats`.
    pub fn new(router: Arc<Router>, stats: Arc<Stats>, limits: Limits) -> Self {
        Self {
            inner: Mutex::default(),
            router,
            stats,
            limits,
            parked_changed: Notify::new(),
        }
    }

    /// Records the queue of the session a claim's connection serves, so that
    /// [`queued_messages`](Self::queued_messages) counts it while it is online.
    pub fn serving(&self, client_id: &ByteString, claim: &Claim, mailbox: Arc<Mailbox>) {
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.entries.get_mut(client_id)
            && entry.generation == claim.generation
            && let Some(live) = entry.live.as_mut()
        {
            live.mailbox = Some(mailbox);
        }
    }

    /// Messages waiting in every session's queue, online and parked. Walks the
    /// sessions under the registry lock: for a scrape, not for the message path.
    pub fn queued_messages(&self) -> u64 {
        let inner = self.inner.lock();
        inner
            .entries
            .values()
            .map(|e| {
                let live = e.live.as_ref().and_then(|l| l.mailbox.as_ref());
                let parked = e.parked.as_ref().map(|(s, _, _)| &s.mailbox);
                live.into_iter()
                    .chain(parked)
                    .map(|m| m.queued() as u64)
                    .sum::<u64>()
            })
            .sum()
    }

    /// Sessions known: online ones plus parked persistent ones.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().entries.is_empty()
    }

    /// Persistent sessions parked now.
    pub fn parked(&self) -> usize {
        self.inner.lock().parked.len()
    }

    /// Claims `client_id` for a new connection of `identity` (the identity the auth
    /// chain established; empty for an anonymous client), stopping any connection that
    /// holds it, and returns the claim and the previous session state, if any (taken
    /// over from a live connection or resumed from the parked ones).
    ///
    /// With `session_takeover: same_identity`, a client id whose live or parked session
    /// another identity owns is refused, whatever the new CONNECT's clean flag: nothing
    /// changes, the owner keeps its connection and session. A claim that succeeds makes
    /// `identity` the owner.
    pub async fn claim(
        &self,
        client_id: &ByteString,
        identity: &str,
    ) -> Result<(Claim, Option<SessionState>), ClaimError> {
        let stop = CancellationToken::new();
        let (handoff_tx, handoff_rx) = oneshot::channel();
        let (generation, previous_live, parked) = {
            let mut inner = self.inner.lock();
            if self.limits.takeover == SessionTakeover::SameIdentity
                && let Some(entry) = inner.entries.get(client_id)
                && (entry.live.is_some() || entry.parked.is_some())
                && entry.owner != identity
            {
                return Err(ClaimError::OwnedByAnother);
            }
            let parked = inner.unpark(client_id);
            let entry = inner.entries.entry(client_id.clone()).or_default();
            entry.generation += 1;
            if entry.owner != identity {
                entry.owner = identity.into();
            }
            let previous = entry.live.replace(Live {
                stop: stop.clone(),
                handoff: handoff_rx,
                mailbox: None,
            });
            (entry.generation, previous, parked)
        };
        let previous = match previous_live {
            Some(live) => {
                live.stop.cancel();
                match tokio::time::timeout(HANDOFF_TIMEOUT, live.handoff).await {
                    Ok(Ok(state)) => Some(state),
                    _ => {
                        warn!(
                            ?client_id,
                            "previous connection did not hand its session over; starting a new one"
                        );
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
        Ok((claim, previous))
    }

    /// Ends a connection's claim: hands the session to the connection that took over,
    /// parks it if persistent, or discards it and its subscriptions. Parking past
    /// `max_parked` discards the session parked longest ago.
    pub fn release(&self, claim: Claim, state: SessionState) {
        state.mailbox.set_online(false);
        let mut evicted = None;
        let discard = {
            let mut inner = self.inner.lock();
            let inner = &mut *inner;
            match inner.entries.get_mut(&state.client_id) {
                Some(entry) if entry.generation == claim.generation => {
                    entry.live = None;
                    if state.persistent {
                        state.save(Some(std::time::SystemTime::now()));
                        let now = Instant::now();
                        let key = (now, inner.next_seq);
                        inner.next_seq += 1;
                        inner.parked.insert(key, state.client_id.clone());
                        let due = state
                            .expiry
                            .or(self.limits.expiry)
                            .map(|expiry| (now + expiry, key.1));
                        if let Some(due) = due {
                            inner.due.insert(due, state.client_id.clone());
                        }
                        entry.parked = Some((state, key, due));
                        if inner.parked.len() > self.limits.max_parked {
                            evicted = inner.pop_oldest();
                        }
                        None
                    } else {
                        inner.entries.remove(&state.client_id);
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
        self.discard_evicted(evicted);
        self.parked_changed.notify_one();
    }

    /// Discards the session parked longest ago, taken out because parking one more
    /// passed `max_parked`.
    fn discard_evicted(&self, evicted: Option<(ByteString, SessionState, Instant)>) {
        if let Some((client_id, state, parked_at)) = evicted {
            self.stats.session_evicted();
            info!(
                ?client_id,
                parked_for = ?parked_at.elapsed(),
                max = self.limits.max_parked,
                "discarding the session parked longest ago: mqtt.max_parked_sessions reached"
            );
            self.discard(state);
        }
    }

    /// Drops a session's subscriptions from the router and its record from the store;
    /// its queue goes with `state`.
    pub fn discard(&self, state: SessionState) {
        state.forget();
        self.router
            .unsubscribe_all(state.subscriptions.keys(), state.id);
    }

    /// Gives the parked session of `client_id` a delayed will's cancel switch (see
    /// `SessionState::pending_will`) and returns its router id; `None` (the switch
    /// dropped: the will goes at once) when no session is parked under it.
    pub fn attach_will(
        &self,
        client_id: &ByteString,
        cancel: tokio::sync::oneshot::Sender<bool>,
    ) -> Option<crate::session::SessionId> {
        let mut inner = self.inner.lock();
        let (state, _, _) = inner.entries.get_mut(client_id)?.parked.as_mut()?;
        state.pending_will = Some(cancel);
        Some(state.id)
    }

    /// Parks a session restored from the store, as if its connection had ended
    /// `offline_for` ago: it expires when it would have had the broker kept running, and
    /// counts toward `max_parked` (past it, the one offline longest goes). Returns
    /// `false` (and discards it) when it expired while the broker was down.
    pub fn adopt(&self, state: SessionState, owner: ByteString, offline_for: Duration) -> bool {
        state.mailbox.set_online(false);
        let expiry = state.expiry.or(self.limits.expiry);
        if expiry.is_some_and(|e| offline_for >= e) {
            self.discard(state);
            return false;
        }
        let now = Instant::now();
        // Parked `offline_for` ago, as far as the monotonic clock reaches back.
        let parked_at = now.checked_sub(offline_for).unwrap_or(now);
        let evicted = {
            let mut inner = self.inner.lock();
            let inner = &mut *inner;
            let key = (parked_at, inner.next_seq);
            inner.next_seq += 1;
            let due = expiry.map(|e| (now + e.saturating_sub(offline_for), key.1));
            inner.parked.insert(key, state.client_id.clone());
            if let Some(due) = due {
                inner.due.insert(due, state.client_id.clone());
            }
            inner.entries.insert(
                state.client_id.clone(),
                Entry {
                    generation: 0,
                    owner,
                    live: None,
                    parked: Some((state, key, due)),
                },
            );
            (inner.parked.len() > self.limits.max_parked)
                .then(|| inner.pop_oldest())
                .flatten()
        };
        self.discard_evicted(evicted);
        self.parked_changed.notify_one();
        true
    }

    /// Discards every parked session whose expiry is due at `now`, and returns when the
    /// next one is due (`None`: none expires).
    pub fn expire_due(&self, now: Instant) -> Option<Instant> {
        loop {
            let expired = {
                let mut inner = self.inner.lock();
                let (&(due, _), client_id) = inner.due.first_key_value()?;
                if due > now {
                    return Some(due);
                }
                let client_id = client_id.clone();
                let parked_at = inner
                    .entries
                    .get(&client_id)
                    .and_then(|e| e.parked.as_ref())
                    .map(|(_, (at, _), _)| *at);
                inner
                    .remove_parked(&client_id)
                    .map(|state| (client_id, state, parked_at.unwrap_or(now)))
            };
            if let Some((client_id, state, parked_at)) = expired {
                self.stats.session_expired();
                info!(
                    ?client_id,
                    parked_for = ?now.saturating_duration_since(parked_at),
                    "persistent session expired: discarded with its subscriptions and queue"
                );
                self.discard(state);
            }
        }
    }

    /// Expires parked sessions on time (see [`expire_due`](Self::expire_due)) until
    /// `shutdown`.
    pub async fn run_expiry(&self, shutdown: CancellationToken) {
        loop {
            let next = self.expire_due(Instant::now());
            let due = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.parked_changed.notified() => {}
                _ = due => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "tests/registry.rs"]
mod tests;
