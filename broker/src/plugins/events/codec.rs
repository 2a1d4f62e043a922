//! The `Events` stream's wire form: a batch is encoded straight from the queue's
//! entries, each event's shared client appended as it goes, so sending (and resending
//! after a reconnect) copies nothing. Acks are decoded with prost. A test proves the
//! hand-written encoding equal to the generated message.

use std::sync::Arc;

use bytes::BufMut;
use prost::Message as _;
use tandem_proto::v1 as pb;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};

/// An event as queued: its client is shared with every other event of the connection
/// and is never copied: the event is encoded straight from the queue entry with its
/// client appended (see [`EventsCodec`]), so neither sending nor resending copies it.
pub(crate) struct Queued {
    /// The event, with `client` unset.
    pub(super) event: pb::Event,
    /// The connection's client, shared by its events, appended when encoding.
    pub(super) client: Option<Arc<pb::ClientRef>>,
    /// What the entry costs the queue's byte bound: its encoded size.
    pub(super) bytes: usize,
}

impl Queued {
    /// The entry's encoded size (the event and its client), as counted by `max_bytes`.
    pub(super) fn cost(event: &pb::Event, client: Option<&pb::ClientRef>) -> usize {
        event.encoded_len() + client.map_or(0, |c| c.encoded_len() + 8)
    }

    /// The event as one protobuf message (tests and diagnostics; the stream encodes
    /// without it).
    fn to_pb(&self) -> pb::Event {
        let mut event = self.event.clone();
        event.client = self.client.as_deref().cloned();
        event
    }

    /// Encodes this entry as one `EventBatch.events` element. Protobuf lets fields come
    /// in any order, so the shared client is written after the event's other fields as
    /// field 3 (`Event.client`): the bytes decode to exactly [`to_pb`](Self::to_pb).
    fn encode_as_batch_element(&self, buf: &mut impl BufMut) {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
        let client_len = self.client.as_deref().map_or(0, |c| {
            let len = c.encoded_len();
            key_len(EVENT_CLIENT_FIELD) + encoded_len_varint(len as u64) + len
        });
        encode_key(BATCH_EVENTS_FIELD, WireType::LengthDelimited, buf);
        encode_varint((self.event.encoded_len() + client_len) as u64, buf);
        self.event.encode_raw(buf);
        if let Some(client) = self.client.as_deref() {
            prost::encoding::message::encode(EVENT_CLIENT_FIELD, client, buf);
        }
    }
}

/// `EventBatch.events` and `Event.client` in `plugin.proto`; a test checks them against
/// the generated code.
const BATCH_EVENTS_FIELD: u32 = 1;
const EVENT_CLIENT_FIELD: u32 = 3;

/// A batch as the stream sends it: reference-counted queue entries, encoded by
/// [`EventsCodec`] without building a `pb::EventBatch`.
pub struct OutBatch {
    /// The queue entries sent, oldest first.
    pub(super) events: Vec<Arc<Queued>>,
    /// Drops not reported before this batch.
    pub(super) dropped_events: u64,
}

impl OutBatch {
    /// Sequences in the batch, in order.
    pub fn sequences(&self) -> Vec<u64> {
        self.events.iter().map(|e| e.event.sequence).collect()
    }

    /// Drops reported by this batch.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// Writes the batch as an `EventBatch` message.
    fn encode(&self, buf: &mut impl BufMut) {
        for q in &self.events {
            q.encode_as_batch_element(buf);
        }
        if self.dropped_events != 0 {
            prost::encoding::uint64::encode(2, &self.dropped_events, buf);
        }
    }

    /// The batch as the generated protobuf type.
    pub fn to_pb(&self) -> pb::EventBatch {
        pb::EventBatch {
            events: self.events.iter().map(|q| q.to_pb()).collect(),
            dropped_events: self.dropped_events,
        }
    }
}

/// The `Events` call's codec: batches out as [`OutBatch`], acks in with prost.
#[derive(Default)]
pub(super) struct EventsCodec;

pub(super) struct BatchEncoder;

impl Encoder for BatchEncoder {
    type Item = OutBatch;
    type Error = tonic::Status;

    fn encode(&mut self, batch: OutBatch, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        batch.encode(dst);
        Ok(())
    }
}

impl Codec for EventsCodec {
    type Encode = OutBatch;
    type Decode = pb::EventAck;
    type Encoder = BatchEncoder;
    type Decoder = tonic_prost::ProstDecoder<pb::EventAck>;

    fn encoder(&mut self) -> BatchEncoder {
        BatchEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(BufferSettings::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue entry as the queue makes it, with its sequence.
    fn entry(
        sequence: u64,
        mut event: pb::Event,
        client: Option<Arc<pb::ClientRef>>,
    ) -> Arc<Queued> {
        event.sequence = sequence;
        let bytes = Queued::cost(&event, client.as_deref());
        Arc::new(Queued {
            event,
            client,
            bytes,
        })
    }

    #[test]
    fn batches_encode_exactly_as_the_generated_message() {
        let client = Arc::new(pb::ClientRef {
            client_id: "c1".into(),
            username: "alice".into(),
            attributes: [("tenant".to_owned(), "acme".to_owned())].into(),
            connect_username: "al".into(),
        });
        let message = |topic: &str| pb::Event {
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            kind: Some(pb::event::Kind::MessageReceived(pb::MessageReceived {
                message: Some(pb::Message {
                    topic: topic.into(),
                    payload: b"xyz".to_vec(),
                    payload_size: 3,
                    ..Default::default()
                }),
                packet_id: 7,
                dup: false,
            })),
            ..Default::default()
        };
        // What a queue of two holds after three events with a client and one without:
        // two dropped, the last with its client, then one with none.
        let batch = OutBatch {
            events: vec![
                entry(3, message("a/3"), Some(client.clone())),
                entry(4, pb::Event::default(), None), // no client: nothing appended
            ],
            dropped_events: 2,
        };
        assert_eq!(batch.dropped_events(), 2);
        let mut wire = bytes::BytesMut::new();
        batch.encode(&mut wire);
        let decoded = pb::EventBatch::decode(wire.freeze()).unwrap();
        assert_eq!(decoded, batch.to_pb());
        assert_eq!(
            decoded.events[0]
                .client
                .as_ref()
                .map(|c| c.username.as_str()),
            Some("alice")
        );
        assert!(decoded.events[1].client.is_none());
    }
}
