//! The broker's own lifecycle told to plugins: before the first client is served, once
//! listening, when shutdown begins and after the last connection closed. The server
//! calls these in its terms; the events are built here.

use std::net::SocketAddr;
use std::time::Duration;

use tandem_proto::v1 as pb;

use crate::plugins::PluginHost;

/// `broker_pre_start`: delivered and acked (bounded) before any client is served, so
/// plugins can set up.
pub async fn pre_start(host: &PluginHost) {
    host.current()
        .events
        .emit_and_wait(pb::EventKind::BrokerPreStart, |_| {
            pb::event::Kind::BrokerPreStart(pb::BrokerPreStart {
                broker_version: env!("CARGO_PKG_VERSION").to_owned(),
            })
        })
        .await;
}

/// `broker_post_start`, naming the listeners serving: name, transport, bound address.
pub async fn post_start(host: &PluginHost, listeners: &[(String, &'static str, SocketAddr)]) {
    host.current()
        .events
        .emit(pb::EventKind::BrokerPostStart, None, None, |_| {
            pb::event::Kind::BrokerPostStart(pb::BrokerPostStart {
                listeners: listeners
                    .iter()
                    .map(|(name, transport, addr)| pb::ListenerInfo {
                        name: name.clone(),
                        transport: (*transport).to_owned(),
                        bind_addr: addr.to_string(),
                    })
                    .collect(),
            })
        })
        .await;
}

/// `broker_pre_shutdown`, queued within `within` (a `backpressure` queue of a stalled
/// plugin must not stop the shutdown). Returns whether it was queued in time.
pub async fn pre_shutdown(host: &PluginHost, reason: &str, within: Duration) -> bool {
    let set = host.current();
    let queued = set
        .events
        .emit(pb::EventKind::BrokerPreShutdown, None, None, |_| {
            pb::event::Kind::BrokerPreShutdown(pb::BrokerPreShutdown {
                reason: reason.to_owned(),
            })
        });
    tokio::time::timeout(within, queued).await.is_ok()
}

/// `broker_post_shutdown`: delivered and acked (bounded) before the process exits, by
/// the set in force now (a reload may have changed it since start-up).
pub async fn post_shutdown(host: &PluginHost) {
    host.current()
        .events
        .emit_and_wait(pb::EventKind::BrokerPostShutdown, |_| {
            pb::event::Kind::BrokerPostShutdown(pb::BrokerPostShutdown {})
        })
        .await;
}
