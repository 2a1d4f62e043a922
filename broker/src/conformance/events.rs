//! The `Events` stream as the broker drives it: batches in sequence order, acks read as
//! cumulative (the highest sequence handled) and never going back, an event of a kind
//! the contract does not define, and a reconnect that sends events again: the
//! `events-acks`, `events-unknown-kind` and `events-reconnect` rows.
//!
//! Batches go out before the response headers are waited for: a server may send its
//! headers only with its first ack (grpcio does), as the broker's stream knows too.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use tandem_proto::v1 as pb;
use tokio::sync::mpsc;

use super::conn::{CallError, Conn, describe_status, humantime, rpc_path};
use super::report::{Outcome, Report};
use super::samples;
use super::unknown::{Encoded, append_unknown_fields};
use crate::plugins::plugin::{Chan, Described};

/// The events of the run, each encoded once as an `EventBatch.events` element, so an
/// event sent again is the same bytes.
struct Events {
    elements: BTreeMap<u64, Vec<u8>>,
    /// The plugin's `max_events_per_batch` (0: no limit).
    max_batch: usize,
}

impl Events {
    /// Events 1..=`last` of the kinds the plugin asked for, in turn; `unknown` is of a kind
    /// the contract does not define.
    fn new(described: &Described, last: u64, unknown: u64) -> Self {
        let topic = samples::message_topic(&described.message_topic_filters);
        let kinds = &described.event_kinds;
        let elements = (1..=last)
            .map(|seq| {
                let mut buf = Vec::new();
                if seq == unknown {
                    samples::unknown_kind_event(seq, &mut buf);
                } else {
                    let kind = kinds[(seq as usize - 1) % kinds.len()];
                    let event = samples::event(kind, seq, &topic);
                    prost::encoding::message::encode(1, &event, &mut buf);
                }
                (seq, buf)
            })
            .collect();
        Self {
            elements,
            max_batch: described.max_events_per_batch as usize,
        }
    }

    /// `seqs` as batches of at most `max_batch` events; `strange` adds fields the
    /// contract does not define to each batch.
    fn batches(&self, seqs: RangeInclusive<u64>, strange: bool) -> Vec<Encoded> {
        let seqs: Vec<u64> = seqs.collect();
        let size = if self.max_batch == 0 {
            seqs.len()
        } else {
            self.max_batch
        };
        seqs.chunks(size.max(1))
            .map(|chunk| {
                let mut buf = Vec::new();
                for seq in chunk {
                    buf.extend_from_slice(&self.elements[seq]);
                }
                if strange {
                    append_unknown_fields(&mut buf);
                }
                Encoded(buf.into())
            })
            .collect()
    }
}

/// One open `Events` call.
struct Stream {
    /// The batches still to send; dropping it ends the call's request side.
    tx: mpsc::Sender<Encoded>,
    acks: tonic::Streaming<pb::EventAck>,
    /// The highest sequence sent on this stream.
    highest_sent: u64,
    /// Every ack read on this stream, in order.
    acks_seen: Vec<u64>,
}

impl Stream {
    /// Opens the call with `first` already queued, so it goes out before the headers are
    /// waited for.
    async fn open(
        conn: &Conn,
        chan: &Chan,
        first: Vec<Encoded>,
        highest: u64,
    ) -> Result<Self, CallError> {
        let (tx, rx) = mpsc::channel(first.len().max(8));
        for batch in first {
            // Fits: the channel is as large as the first batches.
            let _ = tx.try_send(batch);
        }
        let mut grpc = tonic::client::Grpc::new(chan.clone());
        let call = async {
            grpc.ready().await.map_err(|e| {
                tonic::Status::from_error(Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            })?;
            let request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            let codec = tonic_prost::ProstCodec::<Encoded, pb::EventAck>::default();
            grpc.streaming(request, rpc_path("Events"), codec).await
        };
        let response = conn.timed("Events (open)", call).await?;
        Ok(Self {
            tx,
            acks: response.into_inner(),
            highest_sent: highest,
            acks_seen: Vec::new(),
        })
    }

    /// Sends batches whose highest sequence is `highest`, each within the deadline (a
    /// plugin that reads nothing stops the request side once HTTP/2's window is full).
    async fn send(
        &mut self,
        conn: &Conn,
        batches: Vec<Encoded>,
        highest: u64,
    ) -> Result<(), String> {
        for batch in batches {
            match tokio::time::timeout(conn.timeout, self.tx.send(batch)).await {
                Err(_) => {
                    let within = humantime(conn.timeout);
                    return Err(format!("the plugin read no batch within {within}"));
                }
                Ok(Err(_)) => return Err("the stream ended while events were being sent".into()),
                Ok(Ok(())) => {}
            }
        }
        self.highest_sent = self.highest_sent.max(highest);
        Ok(())
    }

    /// Reads acks until one reaches `target`, within the deadline; every ack must be
    /// for a sequence sent and not below the one before.
    async fn acked(&mut self, conn: &Conn, target: u64) -> Result<(), String> {
        let started = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + conn.timeout;
        let what = format!("Events ack of {target}");
        loop {
            let last = self.acks_seen.last().copied();
            let next = tokio::time::timeout_at(deadline, self.acks.message()).await;
            let ack = match next {
                Err(_) => {
                    conn.record(&what, started.elapsed(), true);
                    let last = last.map_or("none".to_owned(), |a| a.to_string());
                    return Err(format!(
                        "no ack of sequence {target} within {} (last ack: {last})",
                        humantime(conn.timeout)
                    ));
                }
                Ok(Ok(Some(ack))) => ack.acked_sequence,
                Ok(Ok(None)) => {
                    return Err(format!(
                        "the plugin ended the stream before acking {target}"
                    ));
                }
                Ok(Err(status)) => {
                    return Err(format!(
                        "the stream failed before the ack of {target}: {}",
                        describe_status(&status)
                    ));
                }
            };
            if ack > self.highest_sent {
                return Err(format!(
                    "acked sequence {ack}, which was never sent (highest sent: {})",
                    self.highest_sent
                ));
            }
            if let Some(last) = last.filter(|l| ack < *l) {
                return Err(format!(
                    "ack {ack} after ack {last}: acks are cumulative and never go back"
                ));
            }
            self.acks_seen.push(ack);
            if ack >= target {
                conn.record(&what, started.elapsed(), false);
                return Ok(());
            }
        }
    }
}

/// The event the run sends with a kind the contract does not define.
const UNKNOWN_AT: u64 = 6;
/// The last event of the run.
const LAST: u64 = 9;

/// The three `events-*` rows.
pub(super) async fn events(conn: &Conn, chan: &Chan, described: &Described, report: &mut Report) {
    let skip = |report: &mut Report, rows: &[&'static str], why: &str| {
        for row in rows {
            report.push(row, Outcome::Skip(why.to_owned()));
        }
    };
    if described.event_kinds.is_empty() {
        let why = "declares no event kinds: the broker opens no Events stream";
        skip(
            report,
            &["events-acks", "events-unknown-kind", "events-reconnect"],
            why,
        );
        return;
    }
    let events = Events::new(described, LAST, UNKNOWN_AT);
    let mut stream = match acks(conn, chan, &events).await {
        Ok((stream, text)) => {
            report.push("events-acks", Outcome::Pass(text));
            stream
        }
        Err(why) => {
            report.push("events-acks", Outcome::Fail(why));
            let rows = ["events-unknown-kind", "events-reconnect"];
            skip(report, &rows, "needs acks (see events-acks)");
            return;
        }
    };
    let unknown = async {
        let last = UNKNOWN_AT + 1;
        stream
            .send(conn, events.batches(UNKNOWN_AT..=last, true), last)
            .await?;
        stream.acked(conn, last).await
    };
    let outcome = match unknown.await {
        Ok(()) => Outcome::Pass(format!(
            "acked event {UNKNOWN_AT} of a kind the contract lacks, in batches with unknown fields, and kept the stream"
        )),
        Err(why) => Outcome::Fail(format!("event {UNKNOWN_AT} is of an unknown kind: {why}")),
    };
    report.push("events-unknown-kind", outcome);
    // The broker drops a failed stream's connection and reconnects; so does the check.
    drop(stream);
    report.push("events-reconnect", reconnect(conn, &events).await);
}

/// Events 1..=5 in two batches: acks must reach 5, cumulative and never going back.
async fn acks(conn: &Conn, chan: &Chan, events: &Events) -> Result<(Stream, String), String> {
    let mut stream = match Stream::open(conn, chan, events.batches(1..=3, false), 3).await {
        Ok(s) => s,
        Err(e) if e.unimplemented() => {
            return Err("declares event kinds but Events answers UNIMPLEMENTED".into());
        }
        Err(e) => return Err(format!("Events: {e}")),
    };
    stream.acked(conn, 3).await?;
    stream.send(conn, events.batches(4..=5, false), 5).await?;
    stream.acked(conn, 5).await?;
    let text = format!(
        "events 1..5 acked, acks {:?} cumulative and monotone",
        stream.acks_seen
    );
    Ok((stream, text))
}

/// A new connection, described as the broker describes every connection, and a new
/// stream sending events it already acked, then new ones: all acked again.
async fn reconnect(conn: &Conn, events: &Events) -> Outcome {
    let chan = conn.channel();
    let body = Encoded::plain(&conn.describe);
    if let Err(e) = conn
        .unary::<pb::DescribeResponse>(&chan, "Describe", "Describe (reconnect)", body)
        .await
    {
        return Outcome::Fail(format!("Describe on a new connection: {e}"));
    }
    let resent = 4..=UNKNOWN_AT + 1;
    let first = events.batches(resent.clone(), false);
    let result = async {
        let mut stream = Stream::open(conn, &chan, first, *resent.end())
            .await
            .map_err(|e| format!("Events on a new connection: {e}"))?;
        stream.acked(conn, *resent.end()).await.map_err(|why| {
            format!(
                "resent {}..{} (already acked): {why}",
                resent.start(),
                resent.end()
            )
        })?;
        stream
            .send(conn, events.batches(resent.end() + 1..=LAST, false), LAST)
            .await?;
        stream.acked(conn, LAST).await?;
        Ok::<_, String>(stream.acks_seen)
    };
    match result.await {
        Ok(acks) => Outcome::Pass(format!(
            "on a new stream, resent {}..{} and new {}..{LAST} acked (acks {acks:?})",
            resent.start(),
            resent.end(),
            resent.end() + 1
        )),
        Err(why) => Outcome::Fail(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn described(kinds: Vec<pb::EventKind>, max: u32) -> Described {
        Described {
            name: "p".into(),
            event_kinds: kinds,
            max_events_per_batch: max,
            ..Default::default()
        }
    }

    #[test]
    fn batches_hold_the_events_in_order_within_the_plugins_bound() {
        let d = described(
            vec![
                pb::EventKind::ClientConnected,
                pb::EventKind::MessageReceived,
            ],
            2,
        );
        let events = Events::new(&d, LAST, UNKNOWN_AT);
        let batches = events.batches(1..=5, false);
        assert_eq!(batches.len(), 3, "at most 2 a batch");
        let seqs: Vec<u64> = batches
            .iter()
            .flat_map(|b| pb::EventBatch::decode(b.0.clone()).unwrap().events)
            .map(|e| e.sequence)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        let strange = events.batches(UNKNOWN_AT..=UNKNOWN_AT, true);
        let batch = pb::EventBatch::decode(strange[0].0.clone()).unwrap();
        assert_eq!(batch.events[0].sequence, UNKNOWN_AT);
        assert!(batch.events[0].kind.is_none(), "a kind this contract lacks");
    }
}
