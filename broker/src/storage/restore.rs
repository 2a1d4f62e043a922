//! Start-up: sessions, their queues and inflight windows, inbound QoS 2 ids and
//! retained messages rebuilt from a [`Snapshot`] before any listener accepts.
//!
//! A restored session is parked, as if its client had just gone: it expires when it
//! would have had the broker kept running (its clock counts from when its connection
//! ended, in wall-clock time, so downtime counts), its subscriptions route again at
//! once, and its subscriptions are checked again against the plugins in force before
//! anything is delivered when its client comes back (`checked_generation` 0). A
//! message that expired meanwhile is dropped when it would be delivered, as any other.

use std::sync::Arc;
use std::time::SystemTime;

use tracing::{info, warn};

use super::ops::{Op, Restored, Snapshot, StoredSession};
use super::writer::Store;
use crate::broker::Broker;
use crate::protocol::QoS;
use crate::router::Subscriber;
use crate::session::{Delivery, Offer, OutState, SessionState};

/// Rebuilds everything in `snapshot` into `broker`'s router and registry.
pub fn restore(broker: &Broker, store: &Arc<Store>, snapshot: Snapshot) -> Restored {
    let mut restored = Restored::default();
    for message in snapshot.retained {
        if message.expired_now() {
            store.submit(Op::RetainedCleared {
                topic: message.topic.clone(),
            });
        } else if broker.router.restore_retained(Arc::new(message)) {
            restored.retained += 1;
        } else {
            restored.dropped += 1;
        }
    }
    for session in snapshot.sessions {
        restore_session(broker, store, session, &mut restored);
    }
    if restored.dropped > 0 {
        warn!(
            dropped = restored.dropped,
            "storage: stored messages past today's mqtt.max_queued_messages or retained bounds were dropped"
        );
    }
    info!(
        sessions = restored.sessions,
        expired = restored.expired,
        queued = restored.queued,
        inflight = restored.inflight,
        incoming_qos2 = restored.incoming,
        retained = restored.retained,
        orphans_removed = snapshot.orphans,
        "storage: restored"
    );
    restored
}

fn restore_session(
    broker: &Broker,
    store: &Arc<Store>,
    stored: StoredSession,
    restored: &mut Restored,
) {
    let StoredSession {
        client_id,
        record,
        messages,
        incoming,
    } = stored;
    let mut state = SessionState::restored(
        client_id.clone(),
        broker.config.mqtt.queue_bound(),
        store.clone(),
        record.incarnation,
    );
    state.expiry = record.expiry;
    state.owner = record.owner.clone();
    state.incoming_qos2.extend(incoming.iter().copied());
    for (filter, options) in record.subscriptions {
        broker.router.subscribe(
            &filter,
            Subscriber {
                session: state.id,
                qos: options.qos,
                subscription_id: options.subscription_id,
                no_local: options.no_local,
                retain_as_published: options.retain_as_published,
                mailbox: state.mailbox.clone(),
                share: None,
            },
        );
        state.subscriptions.insert(filter, options);
    }
    let (mut queued, mut inflight) = (0, 0);
    for m in messages {
        let d = m.delivery;
        let delivery = Delivery {
            message: d.message,
            qos: d.qos,
            retain: d.retain,
            subscription_ids: (!d.subscription_ids.is_empty())
                .then(|| Box::new(d.subscription_ids)),
            // Its subscriptions are back in the router: the group their members hold.
            share: d.share.map(|name| broker.router.share_group(&name)),
            stored: Some(store.restored(&client_id, m.seq)),
        };
        match m.sent {
            Some(sent) if d.qos == QoS::ExactlyOnce => {
                let out = if sent.released {
                    OutState::Released
                } else {
                    OutState::Published
                };
                state.inflight.restore(sent.pkid, delivery, out);
                inflight += 1;
            }
            _ => match state.mailbox.restore(delivery) {
                Offer::Dropped => restored.dropped += 1,
                _ => queued += 1,
            },
        }
    }
    let offline_for = record
        .disconnected_at
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .unwrap_or_default();
    if broker.registry.adopt(state, record.owner, offline_for) {
        restored.sessions += 1;
        restored.queued += queued;
        restored.inflight += inflight;
        restored.incoming += incoming.len() as u64;
    } else {
        restored.expired += 1;
    }
}
