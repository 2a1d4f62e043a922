//! [`EventStream`]: one open `Events` stream to the plugin, as the broker keeps per connection:
//! batches go out numbered, acks come back.

use tandem_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::events::{Event, EventData};
use crate::types::Client;

/// An open `Events` stream to the plugin.
#[derive(Debug)]
pub struct EventStream {
    /// Where batches go: the request stream of the `Events` call.
    batches: mpsc::Sender<pb::EventBatch>,
    /// The plugin's answers to them.
    acks: Streaming<pb::EventAck>,
    /// The sequence given to the next event sent with sequence 0.
    next_sequence: u64,
}

impl EventStream {
    /// A stream whose first unnumbered event gets sequence 1, as on a new broker connection.
    pub(super) fn new(
        batches: mpsc::Sender<pb::EventBatch>,
        acks: Streaming<pb::EventAck>,
    ) -> Self {
        EventStream {
            batches,
            acks,
            next_sequence: 1,
        }
    }

    /// Sends one batch and waits for the plugin's ack, returning the acked sequence. Events with
    /// sequence 0 are numbered after the last one sent; others keep theirs (to test duplicates).
    pub async fn send(&mut self, events: Vec<Event>) -> Result<u64, Status> {
        let events = events
            .into_iter()
            .map(|mut event| {
                if event.sequence == 0 {
                    event.sequence = self.next_sequence;
                }
                self.next_sequence = self.next_sequence.max(event.sequence + 1);
                pb::Event::from(event)
            })
            .collect();
        let batch = pb::EventBatch {
            events,
            dropped_events: 0,
        };
        self.send_raw(batch).await
    }

    /// Sends one event about this client (or none) with the next sequence; returns the ack.
    pub async fn send_one(
        &mut self,
        client: Option<Client>,
        data: EventData,
    ) -> Result<u64, Status> {
        let mut event = Event::new(0, data);
        event.client = client;
        self.send(vec![event]).await
    }

    /// Sends a batch in wire form (for events this SDK's types cannot express, such as a kind
    /// from a newer broker) and waits for the ack.
    pub async fn send_raw(&mut self, batch: pb::EventBatch) -> Result<u64, Status> {
        self.batches
            .send(batch)
            .await
            .map_err(|_| Status::unavailable("the plugin closed the event stream"))?;
        match self.acks.message().await? {
            Some(ack) => Ok(ack.acked_sequence),
            None => Err(Status::unavailable("the plugin ended the event stream")),
        }
    }
}
