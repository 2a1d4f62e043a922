//! The call path: one RPC on an up replica, within the plugin's deadline, shed over
//! `max_concurrency`, retried once on another replica after a transport failure; and
//! what each outcome counts as (see the plugin module docs on failure accounting).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tracing::field::Empty;
use tracing::{Instrument, debug, info_span, warn};

use super::Plugin;
use super::replicas::{Client, Replica};
use crate::plugins::config::OnError;
use crate::plugins::error::status_text;
use crate::plugins::rpc::{ErrorKind, Rpc, Verdict};
use crate::telemetry::TracedRpc;

impl Plugin {
    /// The next replica that is up, round robin.
    pub(super) fn pick(&self, skip: Option<&Arc<Replica>>) -> Option<Arc<Replica>> {
        let replicas = self.replicas.read();
        let n = replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &replicas[(start + i) % n])
            .find(|r| r.up.load(Ordering::Acquire) && skip.is_none_or(|s| !Arc::ptr_eq(s, r)))
            .cloned()
    }

    fn failure(self: &Arc<Self>, replica: &Arc<Replica>, kind: ErrorKind) {
        let n = replica.consecutive_errors.fetch_add(1, Ordering::AcqRel) + 1;
        if kind == ErrorKind::Unavailable {
            self.mark_down(replica, "transport failure");
        } else if n >= self.config.failure_threshold && replica.up.load(Ordering::Acquire) {
            replica.trips.fetch_add(1, Ordering::AcqRel);
            self.mark_down(replica, "too many consecutive errors");
        }
    }

    /// Calls an RPC with the plugin's deadline, on an up replica, shedding over the
    /// concurrency bound. One retry on another replica after a transport failure.
    pub(crate) async fn call<Req, Resp, F, Fut>(
        self: &Arc<Self>,
        request: Req,
        f: F,
    ) -> Result<Resp, ErrorKind>
    where
        Req: Clone + TracedRpc<Response = Resp>,
        F: Fn(Client, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let Ok(_permit) = self.inflight.try_acquire() else {
            return Err(ErrorKind::Shed);
        };
        let deadline = Instant::now() + self.config.timeout;
        let mut tried: Option<Arc<Replica>> = None;
        for _attempt in 0..2 {
            let Some(replica) = self.pick(tried.as_ref()) else {
                return Err(if tried.is_some() {
                    ErrorKind::Unavailable
                } else {
                    ErrorKind::CircuitOpen
                });
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ErrorKind::Deadline);
            }
            // One span per attempt; its trace context goes to the plugin in the metadata.
            let span = info_span!("plugin_call", "otel.kind" = "client", plugin = %self.alias, rpc = Req::RPC,
                replica = %replica.label, verdict = Empty, error = Empty, "otel.status_code" = Empty);
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(left);
            crate::telemetry::inject(&span, req.metadata_mut());
            let client = Client::new(self.authed(replica.channel.read().clone()));
            replica.calls.fetch_add(1, Ordering::Relaxed);
            let answered_before = replica.answered.load(Ordering::Acquire);
            let attempt =
                tokio::time::timeout_at(deadline, f(client, req)).instrument(span.clone());
            let kind = match attempt.await {
                Ok(Ok(resp)) => {
                    span.record("verdict", Req::verdict(resp.get_ref()));
                    replica.answered.fetch_add(1, Ordering::AcqRel);
                    replica.consecutive_errors.store(0, Ordering::Release);
                    replica.trips.store(0, Ordering::Release);
                    return Ok(resp.into_inner());
                }
                Err(_) => ErrorKind::Deadline,
                Ok(Err(status)) => {
                    let kind = failure_kind(&status, Instant::now() >= deadline);
                    if kind == ErrorKind::Status {
                        self.log_error(kind, &status_text(&status));
                    }
                    kind
                }
            };
            span.record("error", kind.as_str());
            span.record("otel.status_code", "ERROR");
            let busy = kind == ErrorKind::Deadline
                && replica.answered.load(Ordering::Acquire) != answered_before;
            if busy {
                // It answered others meanwhile: queueing, not broken (see the module docs).
                debug!(plugin = %self.alias, replica = %replica.label,
                    "deadline passed while the replica answered other calls; not counted against it");
            } else {
                self.failure(&replica, kind);
            }
            if kind != ErrorKind::Unavailable {
                return Err(kind);
            }
            tried = Some(replica);
        }
        Err(ErrorKind::Unavailable)
    }

    /// Counts a call's outcome for `rpc`, and its duration if a call was made.
    pub(crate) fn record(
        &self,
        rpc: Rpc,
        verdict: Verdict,
        error: Option<ErrorKind>,
        took: Duration,
    ) {
        self.stats[rpc as usize].record(verdict, error, took);
    }

    /// Logs a call error at most once a second per plugin, with the count suppressed.
    pub(crate) fn log_error(&self, kind: ErrorKind, detail: &str) {
        let now = std::time::Instant::now();
        let mut last = self.last_error_log.lock();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            self.suppressed_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        drop(last);
        let suppressed = self.suppressed_errors.swap(0, Ordering::Relaxed);
        let on_error = self.config.on_error;
        if on_error == OnError::Allow {
            warn!(plugin = %self.alias, kind = kind.as_str(), detail, suppressed, "plugin call failed; on_error=allow lets it through (FAIL-OPEN)");
        } else {
            warn!(plugin = %self.alias, kind = kind.as_str(), detail, suppressed, on_error = on_error.as_str(), "plugin call failed; applying on_error");
        }
    }
}

/// What a call that ended with `status` counts as, `deadline_passed` telling whether
/// its deadline had passed when it ended.
///
/// A status the plugin sent has no source; one the client made from a transport error
/// carries that error. Every transport failure is `Unavailable`, so the replica is
/// marked down and the call retried on another one: the connection refused or lost
/// (UNAVAILABLE), reset or broken under a call in flight (UNKNOWN "transport error"),
/// a GOAWAY or protocol error (INTERNAL "h2 protocol error"), and a request that hyper
/// cancelled because its connection closed as it was sent (CANCELLED "operation was
/// canceled", source "connection closed": a replica killed while the broker had not yet
/// read the close). CANCELLED is a deadline when the deadline has passed, or when the
/// plugin sent it (its server's timer answers CANCELLED "Timeout expired").
pub(super) fn failure_kind(status: &tonic::Status, deadline_passed: bool) -> ErrorKind {
    let from_transport = std::error::Error::source(status).is_some();
    match status.code() {
        tonic::Code::DeadlineExceeded => ErrorKind::Deadline,
        tonic::Code::Cancelled if deadline_passed || !from_transport => ErrorKind::Deadline,
        tonic::Code::Unavailable => ErrorKind::Unavailable,
        _ if from_transport => ErrorKind::Unavailable,
        _ => ErrorKind::Status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_unavailable_and_only_a_real_deadline_is_a_deadline() {
        use tonic::{Code, Status};
        // What the client makes from a transport error: the code it derived, and the
        // error itself as the source (as for hyper's "connection closed").
        #[derive(Debug)]
        struct Lost(Status);
        impl std::fmt::Display for Lost {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connection closed")
            }
        }
        impl std::error::Error for Lost {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let transport = |code: Code, what: &str| {
            let status = Status::from_error(Box::new(Lost(Status::new(code, what))));
            assert_eq!(status.code(), code);
            assert!(std::error::Error::source(&status).is_some());
            status
        };
        let canceled = transport(Code::Cancelled, "operation was canceled");
        assert_eq!(canceled.code(), Code::Cancelled);
        assert_eq!(failure_kind(&canceled, false), ErrorKind::Unavailable);
        assert_eq!(failure_kind(&canceled, true), ErrorKind::Deadline);
        assert_eq!(
            failure_kind(&transport(Code::Unknown, "transport error"), false),
            ErrorKind::Unavailable
        );
        assert_eq!(
            failure_kind(&transport(Code::Internal, "h2 protocol error"), false),
            ErrorKind::Unavailable
        );
        // Sent by the plugin: no source.
        let sent = |code: Code| Status::new(code, "from the plugin");
        assert_eq!(
            failure_kind(&sent(Code::Cancelled), false),
            ErrorKind::Deadline
        );
        assert_eq!(
            failure_kind(&sent(Code::DeadlineExceeded), false),
            ErrorKind::Deadline
        );
        assert_eq!(
            failure_kind(&sent(Code::Unavailable), false),
            ErrorKind::Unavailable
        );
        assert_eq!(
            failure_kind(&sent(Code::Internal), false),
            ErrorKind::Status
        );
        assert_eq!(
            failure_kind(&sent(Code::PermissionDenied), true),
            ErrorKind::Status
        );
    }
}
