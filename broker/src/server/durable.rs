//! What the store promises a client: with `storage.sync: always`, nothing that
//! acknowledges a change (PUBACK, PUBREC, PUBCOMP, SUBACK, a QoS 2 PUBLISH's packet id)
//! reaches the client before the change is on disk.
//!
//! A turn hands its ops to the store as it handles packets and only notes that it did
//! ([`after_store`](Connection::after_store)); before the turn's output is written, one
//! barrier covers all of it ([`settle_store`](Connection::settle_store)). A client that
//! pipelines a hundred publishes waits for one commit, not a hundred, and concurrent
//! connections share commits (group commit, see `storage::writer`). A barrier that
//! fails (the disk is full, an I/O error) ends the connection without writing what the
//! turn encoded: its client sends the unacknowledged messages again.

use tokio::io::{AsyncRead, AsyncWrite};

use crate::protocol::{PacketType, QoS};
use crate::server::connection::Connection;
use crate::server::exit::Exit;
use crate::session::Delivery;
use crate::storage::Op;

impl<R, W> Connection<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Notes that what this turn encodes depends on ops just handed to the store: the
    /// output waits for them when the store says so (`sync: always`, or a `periodic`
    /// writer far behind).
    pub(super) fn after_store(&mut self) {
        if self.broker.store.as_ref().is_some_and(|s| s.must_wait()) {
            self.store_due = true;
        }
    }

    /// Waits until the ops this turn handed to the store are committed, if it handed
    /// any that must be waited for. Called before the turn's output is written.
    pub(super) async fn settle_store(&mut self) -> Result<(), Exit> {
        if !std::mem::take(&mut self.store_due) {
            return Ok(());
        }
        match &self.broker.store {
            Some(store) => store.barrier().await.map_err(Exit::Storage),
            None => Ok(()),
        }
    }

    /// Writes the session's record (its subscriptions changed) when it is stored.
    pub(super) fn save_session(&mut self) {
        if self.state.store().is_some() {
            self.state.save(None);
            self.after_store();
        }
    }

    /// An inbound QoS 2 message was routed: its packet id is kept until PUBREL, in the
    /// store too, so a redelivery after a restart is not routed twice.
    pub(super) fn incoming_qos2(&mut self, pkid: u16) {
        self.state.incoming_qos2.insert(pkid);
        if let Some(store) = self.state.store() {
            store.submit(Op::Incoming {
                client_id: self.state.client_id.clone(),
                pkid,
                incarnation: self.state.incarnation,
            });
            self.after_store();
        }
    }

    /// The client's PUBREL: the packet id is released, then PUBCOMP.
    pub(super) fn on_pubrel(&mut self, pkid: u16) {
        if self.state.incoming_qos2.remove(&pkid)
            && let Some(store) = self.state.store()
        {
            store.submit(Op::IncomingReleased {
                client_id: self.state.client_id.clone(),
                pkid,
            });
            // A PUBCOMP before the release is stored would let a crash keep the id,
            // and the client's next message under it be taken for a redelivery.
            self.after_store();
        }
        self.out.ack(PacketType::PubComp, pkid);
    }

    /// The client's PUBREC for a QoS 2 delivery: PUBREL from now on, also after a
    /// restart.
    pub(super) fn on_pubrec(&mut self, pkid: u16) {
        if let Some(stored) = self
            .state
            .inflight
            .received(pkid)
            .and_then(|o| o.delivery.stored.as_ref())
        {
            stored.sent(pkid, true);
            // A PUBREL before its state is stored would let a crash bring back the
            // PUBLISH, which a client that already completed the id takes for a new
            // message.
            self.after_store();
        }
        self.out.ack(PacketType::PubRel, pkid);
    }

    /// A stored QoS 2 delivery goes out as `pkid`: the id is stored before the client
    /// can see it, so a resend after a restart uses the same one and the client can tell
    /// it is a duplicate.
    pub(super) fn sending(&mut self, delivery: &Delivery, pkid: u16) {
        if delivery.qos == QoS::ExactlyOnce
            && let Some(stored) = &delivery.stored
        {
            stored.sent(pkid, false);
            self.after_store();
        }
    }
}
