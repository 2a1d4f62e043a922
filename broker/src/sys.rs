//! `$SYS/broker/...`: broker statistics published as retained messages on an interval,
//! as aMQTT's `BrokerSysPlugin` and Mosquitto do. Topics starting with `$` are not
//! matched by `#` or `+/...`, so only clients that ask for `$SYS/...` see them.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::protocol::QoS;
use crate::router::Message;
use crate::server::Broker;

/// The broker's version, published once per interval on `$SYS/broker/version`.
pub const VERSION: &str = concat!("tandem ", env!("CARGO_PKG_VERSION"));

/// Publishes every statistic now.
pub fn publish_once(broker: &Broker) {
    let s = broker.stats.snapshot();
    let values: [(&str, String); 14] = [
        ("version", VERSION.to_owned()),
        ("uptime", format!("{} seconds", s.uptime_secs)),
        ("clients/connected", s.clients_connected.to_string()),
        ("clients/total", broker.registry.len().to_string()),
        ("clients/maximum", s.clients_maximum.to_string()),
        ("connections/total", s.connections_total.to_string()),
        ("connections/refused", s.connections_refused.to_string()),
        ("messages/received", s.messages_received.to_string()),
        ("messages/sent", s.messages_sent.to_string()),
        ("messages/dropped", s.messages_dropped.to_string()),
        ("bytes/received", s.bytes_received.to_string()),
        ("bytes/sent", s.bytes_sent.to_string()),
        (
            "subscriptions/count",
            broker.router.subscription_count().to_string(),
        ),
        (
            "retained messages/count",
            broker.router.retained_count().to_string(),
        ),
    ];
    for (name, value) in values {
        broker.router.publish(Arc::new(Message {
            topic: format!("$SYS/broker/{name}").into(),
            payload: value.into(),
            qos: QoS::AtMostOnce,
            retain: true,
        }));
    }
}

/// Publishes the statistics every `sys.interval` until shutdown.
pub async fn publish_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(broker.config.sys.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => publish_once(&broker),
        }
    }
}
