//! Outbound QoS 1 and 2 messages awaiting acknowledgement.

use std::collections::VecDeque;

use crate::session::message::Delivery;

/// Where an outbound QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// PUBLISH sent, PUBACK (QoS 1) or PUBREC (QoS 2) awaited.
    Published,
    /// QoS 2: PUBREL sent, PUBCOMP awaited.
    Released,
}

/// One outbound message in flight.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Packet identifier.
    pub pkid: u16,
    /// Allocation sequence; `pkid` is derived from it.
    seq: u64,
    /// The message.
    pub delivery: Delivery,
    /// Handshake state.
    pub state: OutState,
}

/// The inflight window, oldest first.
///
/// Packet identifiers are allocated in sequence (`seq % 65535 + 1`), so an identifier can
/// only still be in use if the oldest entry is 65535 allocations old; only then is the
/// window searched. Acknowledgements nearly always come back in order, so lookups hit
/// the front.
#[derive(Debug, Default)]
pub struct Inflight {
    entries: VecDeque<Outgoing>,
    next_seq: u64,
    /// Until this sequence number every new id is checked against the whole window:
    /// restored entries keep the ids they were stored with, in no particular order.
    scattered_until: u64,
}

impl Inflight {
    /// Messages in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records an outbound message and returns its packet identifier.
    pub fn push(&mut self, delivery: Delivery) -> u16 {
        let (seq, pkid) = loop {
            let seq = self.next_seq;
            self.next_seq += 1;
            let pkid = (seq % 65_535) as u16 + 1;
            let may_collide = seq < self.scattered_until
                || self
                    .entries
                    .front()
                    .is_some_and(|oldest| seq - oldest.seq >= 65_535);
            if !may_collide || !self.entries.iter().any(|e| e.pkid == pkid) {
                break (seq, pkid);
            }
        };
        self.entries.push_back(Outgoing {
            pkid,
            seq,
            delivery,
            state: OutState::Published,
        });
        pkid
    }

    /// Puts back a message restored from the store with the packet id it was sent
    /// with, in `state`.
    pub fn restore(&mut self, pkid: u16, delivery: Delivery, state: OutState) {
        let seq = u64::from(pkid.max(1) - 1);
        self.entries.push_back(Outgoing {
            pkid,
            seq,
            delivery,
            state,
        });
        self.next_seq = self.next_seq.max(seq + 1);
        self.scattered_until = self.next_seq + 65_535;
    }

    fn position(&self, pkid: u16) -> Option<usize> {
        self.entries.iter().position(|e| e.pkid == pkid)
    }

    /// Completes a QoS 1 message (PUBACK). Returns whether it was in flight.
    pub fn ack(&mut self, pkid: u16) -> bool {
        match self.position(pkid) {
            Some(i) if self.entries[i].state == OutState::Published => {
                self.entries.remove(i);
                true
            }
            _ => false,
        }
    }

    /// Moves a QoS 2 message to `Released` (PUBREC). Returns it if it was in flight.
    pub fn received(&mut self, pkid: u16) -> Option<&Outgoing> {
        let i = self.position(pkid)?;
        self.entries[i].state = OutState::Released;
        Some(&self.entries[i])
    }

    /// Completes a QoS 2 message (PUBCOMP). Returns whether it was in flight.
    pub fn complete(&mut self, pkid: u16) -> bool {
        match self.position(pkid) {
            Some(i) if self.entries[i].state == OutState::Released => {
                self.entries.remove(i);
                true
            }
            _ => false,
        }
    }

    /// Takes a message out of the window whatever its state (it will not be resent).
    /// Returns whether it was in flight.
    pub fn remove(&mut self, pkid: u16) -> bool {
        match self.position(pkid) {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    /// Takes out every message published and not yet acknowledged (QoS 1, and QoS 2
    /// before its PUBREC) for which `handed_over` says another session took it. Returns
    /// how many went.
    pub fn hand_over(&mut self, mut handed_over: impl FnMut(&Delivery) -> bool) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|e| !(e.state == OutState::Published && handed_over(&e.delivery)));
        before - self.entries.len()
    }

    /// Everything in flight, oldest first, for redelivery after a reconnect.
    pub fn iter(&self) -> impl Iterator<Item = &Outgoing> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::QoS;
    use crate::session::message::Message;

    fn delivery() -> Delivery {
        Delivery::new(
            Arc::new(Message::new(
                "t".into(),
                "p".into(),
                QoS::AtLeastOnce,
                false,
            )),
            QoS::AtLeastOnce,
        )
    }

    #[test]
    fn ids_are_sequential_non_zero_and_wrap() {
        let mut w = Inflight::default();
        assert_eq!(w.push(delivery()), 1);
        assert!(w.ack(1));
        for expect in 2..=65_535u16 {
            assert_eq!(w.push(delivery()), expect);
            assert!(w.ack(expect));
        }
        assert_eq!(w.push(delivery()), 1, "wraps past 65535, skipping 0");
    }

    #[test]
    fn a_stuck_id_is_skipped_after_wrapping() {
        let mut w = Inflight::default();
        let stuck = w.push(delivery());
        for _ in 0..65_534 {
            let id = w.push(delivery());
            assert!(w.ack(id));
        }
        let next = w.push(delivery());
        assert_ne!(next, stuck);
        assert_eq!(next, 2);
    }

    #[test]
    fn qos2_states() {
        let mut w = Inflight::default();
        let id = w.push(delivery());
        assert!(!w.complete(id), "PUBCOMP before PUBREC is ignored");
        assert!(w.received(id).is_some());
        assert!(!w.ack(id), "PUBACK for a released message is ignored");
        assert!(w.complete(id));
        assert!(w.is_empty());
    }
}
