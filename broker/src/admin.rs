//! The admin HTTP listener (`admin.bind`): `GET /metrics`, `/healthz`, `/readyz`.
//!
//! HTTP/1.1 with hyper, no framework: three fixed routes do not need one. It is bounded
//! like the MQTT side: `admin.max_connections` connections at once (one more is closed
//! at once), request heads of at most [`MAX_HEAD`] bytes, read within
//! [`HEAD_TIMEOUT`]; request bodies are never read. It keeps serving while the broker
//! drains, so `/readyz` answers 503 during shutdown, and stops when the broker has.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::broker::Broker;

/// Largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 16 * 1024;
/// Time a client has to send a request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open admin connections get to finish when the admin listener stops.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

struct Admin {
    broker: Arc<Broker>,
    registry: Registry,
    /// The broker's shutdown signal: once cancelled, `/readyz` answers 503.
    shutdown: CancellationToken,
}

/// Serves the admin routes on `listener` until `stop` is cancelled. Call it before the
/// store's contents are restored (`/readyz` answers 503 until they are) and the MQTT
/// listeners accept.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(broker.config.admin.max_connections));
    let admin = Arc::new(Admin {
        registry: crate::metrics::registry(broker.clone()),
        broker,
        shutdown,
    });
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(err) => {
                warn!(cause = %err, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            debug!(%peer, "admin connection refused: admin.max_connections reached");
            continue;
        };
        let admin = admin.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.route(&req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(CLOSE_GRACE, conn.as_mut())
                        .await
                        .unwrap_or(Ok(()))
                }
            };
            if let Err(err) = result {
                debug!(%peer, cause = %err, "admin connection ended with an error");
            }
            drop(permit);
        });
    }
}

impl Admin {
    async fn route(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
            return text(StatusCode::NOT_FOUND, "not found\n".into());
        }
        if req.method() != Method::GET {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            return resp;
        }
        match path {
            "/metrics" => match crate::metrics::encode(&self.registry) {
                Ok(body) => {
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    resp.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                    );
                    resp
                }
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics could not be encoded\n".into(),
                ),
            },
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            _ => match not_ready(&self.broker, &self.shutdown).await {
                None => {
                    // Ready, and what an open chain allows: a probe reads the status, a
                    // person reading the body learns the broker checks nothing.
                    let mut body = String::from("ready\n");
                    for open in self.broker.plugins.current().open_chains() {
                        body.push_str(&format!(
                            "note: no {} chain: {}\n",
                            open.section, open.allows
                        ));
                    }
                    text(StatusCode::OK, body)
                }
                Some(reasons) => text(StatusCode::SERVICE_UNAVAILABLE, reasons),
            },
        }
    }
}

/// Why the broker is not ready, one reason per line; `None` when it is. Ready means:
/// not shutting down, the store restored and writing (when `storage.path` is set), and
/// every plugin a chain depends on (the auth and topic-check
/// chains, and every plugin streaming events) has a replica that answers its gRPC
/// health check now (see [`Plugin::check_health`](crate::plugins::Plugin::check_health)).
pub async fn not_ready(broker: &Broker, shutdown: &CancellationToken) -> Option<String> {
    if shutdown.is_cancelled() {
        return Some("shutting down\n".into());
    }
    if broker.restored.get().is_none() {
        return Some("restoring the store\n".into());
    }
    let mut reasons = String::new();
    if let Some(why) = broker.store.as_ref().and_then(|s| s.failing()) {
        reasons.push_str(&format!("storage failing: {why}\n"));
    }
    // The set in force: a reload may have changed the chains since start-up.
    let host = broker.plugins.current();
    let mut required: Vec<&str> = Vec::new();
    for chain in [&host.auth, &host.topic_check].into_iter().flatten() {
        required.extend(chain.plugins().iter().map(|p| p.alias.as_str()));
    }
    required.extend(host.events.subscribers().iter().map(|s| s.alias.as_str()));
    let checks = host
        .plugins()
        .filter(|p| required.contains(&p.alias.as_str()))
        .map(|plugin| async move { (plugin, plugin.check_health().await) });
    for (plugin, answering) in futures_util::future::join_all(checks).await {
        if answering == 0 {
            let (replicas, _) = plugin.replica_health();
            // The alias only: /readyz is often reachable from outside the pod, and the
            // endpoint (a socket path, an address) is not for strangers to learn.
            reasons.push_str(&format!(
                "plugin {}: no replica answering (of {replicas})\n",
                plugin.alias
            ));
        }
    }
    (!reasons.is_empty()).then_some(reasons)
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
