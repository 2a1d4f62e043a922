//! The `Events` stream's wire form. An event is encoded once, when it is queued: its
//! body (every field but its sequence and its client) as bytes, and its connection's
//! client once per connection ([`EncodedClient`]), shared by all of that connection's
//! events. Sending a batch (and resending it after a reconnect) writes each entry's
//! sequence and copies those bytes: no message is built, measured or encoded again.
//! Acks are decoded with prost. A test proves the result equal to the generated message.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tandem_proto::v1 as pb;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};

/// A connection's client as its events carry it: `Event.client` encoded once (key and
/// length included) and appended to each of its events.
#[derive(Debug, Clone)]
pub struct EncodedClient(Bytes);

impl EncodedClient {
    /// Encodes `client` as the `Event.client` field.
    pub fn new(client: &pb::ClientRef) -> Self {
        let mut buf = Vec::with_capacity(client.encoded_len() + 8);
        prost::encoding::message::encode(EVENT_CLIENT_FIELD, client, &mut buf);
        Self(buf.into())
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// An event as queued: its sequence, and its bytes as the stream sends them.
pub(crate) struct Queued {
    /// The event's sequence in its plugin's stream.
    pub(super) sequence: u64,
    /// The event's other fields, encoded (its client and sequence left out).
    body: Bytes,
    /// The connection's client, appended when encoding.
    client: Option<EncodedClient>,
}

impl Queued {
    /// Encodes `event` (its `sequence` and `client` unset) for `client`'s stream entry.
    pub(super) fn new(event: &pb::Event, client: Option<EncodedClient>) -> Self {
        debug_assert!(event.sequence == 0 && event.client.is_none());
        Self {
            sequence: 0,
            body: event.encode_to_vec().into(),
            client,
        }
    }

    /// What the entry costs the queue's byte bound: its encoded size, less its
    /// sequence's few bytes (so that it is known before the sequence is).
    pub(super) fn bytes(&self) -> usize {
        self.body.len() + self.client.as_ref().map_or(0, EncodedClient::len)
    }

    /// The encoded length of the `Event` message of this entry.
    fn element_len(&self) -> usize {
        key_len(EVENT_SEQUENCE_FIELD)
            + encoded_len_varint(self.sequence)
            + self.body.len()
            + self.client.as_ref().map_or(0, EncodedClient::len)
    }

    /// The event as one protobuf message (tests and diagnostics; the stream encodes
    /// without it).
    fn to_pb(&self) -> pb::Event {
        let mut buf = Vec::new();
        self.encode_event(&mut buf);
        pb::Event::decode(buf.as_slice()).expect("an entry decodes as the Event it encodes")
    }

    /// Writes the `Event` message: its sequence, then its body and its client. Protobuf
    /// lets fields come in any order, so this decodes to the event with both set.
    fn encode_event(&self, buf: &mut impl BufMut) {
        encode_key(EVENT_SEQUENCE_FIELD, WireType::Varint, buf);
        encode_varint(self.sequence, buf);
        buf.put_slice(&self.body);
        if let Some(client) = &self.client {
            buf.put_slice(&client.0);
        }
    }

    /// Encodes this entry as one `EventBatch.events` element.
    fn encode_as_batch_element(&self, buf: &mut impl BufMut) {
        encode_key(BATCH_EVENTS_FIELD, WireType::LengthDelimited, buf);
        encode_varint(self.element_len() as u64, buf);
        self.encode_event(buf);
    }
}

/// `EventBatch.events`, `Event.sequence` and `Event.client` in `plugin.proto`; a test
/// checks them against the generated code.
const BATCH_EVENTS_FIELD: u32 = 1;
const EVENT_SEQUENCE_FIELD: u32 = 1;
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
        self.events.iter().map(|e| e.sequence).collect()
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
    fn entry(sequence: u64, event: pb::Event, client: Option<&pb::ClientRef>) -> Arc<Queued> {
        let mut queued = Queued::new(&event, client.map(EncodedClient::new));
        queued.sequence = sequence;
        Arc::new(queued)
    }

    #[test]
    fn batches_encode_exactly_as_the_generated_message() {
        let client = pb::ClientRef {
            client_id: "c1".into(),
            username: "alice".into(),
            attributes: [("tenant".to_owned(), "acme".to_owned())].into(),
            connect_username: "al".into(),
        };
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
                entry(3, message("a/3"), Some(&client)),
                entry(4, pb::Event::default(), None), // no client: nothing appended
            ],
            dropped_events: 2,
        };
        assert_eq!(batch.dropped_events(), 2);
        let mut wire = bytes::BytesMut::new();
        batch.encode(&mut wire);
        let decoded = pb::EventBatch::decode(wire.freeze()).unwrap();
        assert_eq!(decoded, batch.to_pb());
        // As the generated code would have written it.
        let mut expected = message("a/3");
        expected.sequence = 3;
        expected.client = Some(client.clone());
        assert_eq!(decoded.events[0], expected);
        assert_eq!(
            decoded.events[1],
            pb::Event {
                sequence: 4,
                ..Default::default()
            }
        );
        assert_eq!(
            batch.events[0].bytes() + 2,
            expected.encoded_len(),
            "the byte bound counts the encoded size (but the sequence's key and varint)"
        );
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
