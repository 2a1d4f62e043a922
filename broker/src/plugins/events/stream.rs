//! A plugin's `Events` stream: opened on an up replica, fed in batches from the
//! plugin's queue, its acks applied; reopened with backoff after any failure, the
//! replica marked down so its probe describes it again first.

use std::sync::Arc;
use std::time::Duration;

use tandem_proto::v1 as pb;

use super::codec::{EventsCodec, OutBatch};
use super::queue::EventQueue;
use crate::plugins::plugin::{Chan, Plugin};

/// How long a stream waits for a batch to fill once an event is ready (see
/// [`EventQueue::next_batch_lingering`]).
const BATCH_LINGER: Duration = Duration::from_millis(1);

/// Opens the `Events` call on `channel`, sending the batches from `rx` with
/// [`EventsCodec`] (what the generated client does, with our codec).
async fn open_stream(
    channel: Chan,
    rx: tokio::sync::mpsc::Receiver<OutBatch>,
) -> Result<tonic::Response<tonic::Streaming<pb::EventAck>>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("plugin not ready: {e}")))?;
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/tandem.plugin.v1.Plugin/Events");
    let request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    grpc.streaming(request, path, EventsCodec).await
}

/// Keeps a plugin's `Events` stream open on an up replica, sending batches from its
/// queue and applying its acks; after any stream failure it reconnects (with backoff)
/// and sends everything unacked again.
pub async fn drive(
    plugin: Arc<Plugin>,
    queue: Arc<EventQueue>,
    max_batch: usize,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let Some((replica, channel)) = plugin.up_replica() else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<OutBatch>(4);
        queue.rewind();
        // Batches go out while the call waits for the plugin's response headers: a
        // server may send its headers only with its first ack (grpcio, grpc-go), and
        // it acks only what it received, so waiting for them first would deadlock.
        let mut opening = std::pin::pin!(open_stream(channel, rx));
        let opened = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = &mut opening => break r,
                batch = queue.next_batch_lingering(max_batch, BATCH_LINGER) => {
                    if tx.send(batch).await.is_err() {
                        // The call ended; its outcome says why.
                        break opening.await;
                    }
                }
            }
        };
        let mut acks = match opened {
            Ok(r) => r.into_inner(),
            Err(status) => {
                tracing::warn!(plugin = %plugin.alias, cause = %crate::plugins::error::status_text(&status), "cannot open the Events stream; retrying");
                plugin.stream_lost(&replica);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        tracing::debug!(plugin = %plugin.alias, "Events stream open");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                batch = queue.next_batch_lingering(max_batch, BATCH_LINGER) => {
                    if tx.send(batch).await.is_err() {
                        break;
                    }
                }
                ack = acks.message() => match ack {
                    Ok(Some(a)) => queue.ack(a.acked_sequence),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        tracing::info!(plugin = %plugin.alias, unacked = queue.depth(), "Events stream closed; reconnecting");
        plugin.stream_lost(&replica);
    }
}
