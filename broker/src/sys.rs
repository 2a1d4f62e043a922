//! `$SYS/broker/...`: broker statistics published as retained messages on an interval,
//! as aMQTT's `BrokerSysPlugin` and Mosquitto do. Topics starting with `$` are not
//! matched by `#` or `+/...`, so only clients that ask for `$SYS/...` see them.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use std::sync::atomic::Ordering;

use crate::broker::Broker;
use crate::plugins::{ErrorKind, Rpc, Verdict};
use crate::protocol::QoS;
use crate::session::Message;

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
        publish(broker, format!("$SYS/broker/{name}"), value);
    }
    publish(
        broker,
        "$SYS/broker/clients/denied".into(),
        s.auth_denied.to_string(),
    );
    publish(
        broker,
        "$SYS/broker/topics/denied".into(),
        s.topic_denied.to_string(),
    );
    publish(
        broker,
        "$SYS/broker/connections/protocol_errors".into(),
        s.protocol_errors.to_string(),
    );
    publish(
        broker,
        "$SYS/broker/connections/handshakes_refused".into(),
        s.handshakes_refused.to_string(),
    );
    publish(
        broker,
        "$SYS/broker/connections/connects_too_large".into(),
        s.connects_too_large.to_string(),
    );
    let plugins = broker.plugins.current();
    for sub in plugins.events.subscribers() {
        let (queued, sent, acked, dropped) = sub.queue.counters();
        let base = format!("$SYS/broker/plugins/{}/events", sub.alias);
        publish(broker, format!("{base}/queued"), queued.to_string());
        publish(broker, format!("{base}/sent"), sent.to_string());
        publish(broker, format!("{base}/acked"), acked.to_string());
        publish(broker, format!("{base}/dropped"), dropped.to_string());
        publish(
            broker,
            format!("{base}/resent"),
            sub.queue.resent().to_string(),
        );
        publish(
            broker,
            format!("{base}/depth"),
            sub.queue.depth().to_string(),
        );
    }
    for plugin in plugins.plugins() {
        let (replicas, up) = plugin.replica_health();
        let base = format!("$SYS/broker/plugins/{}", plugin.alias);
        publish(broker, format!("{base}/replicas"), replicas.to_string());
        publish(broker, format!("{base}/replicas_up"), up.to_string());
        // Replicas by number, not address: `$SYS` is readable by any client, and a
        // plugin's socket path or address is not theirs to learn.
        for (number, (_, _, calls)) in plugin.replicas().into_iter().enumerate() {
            publish(
                broker,
                format!("{base}/replica/{number}/calls"),
                calls.to_string(),
            );
        }
        for rpc in [Rpc::Authenticate, Rpc::TopicFilter] {
            let stats = &plugin.stats[rpc as usize];
            let base = format!("{base}/{}", rpc.as_str());
            let calls = stats.calls.load(Ordering::Relaxed);
            publish(broker, format!("{base}/calls"), calls.to_string());
            for v in [Verdict::Allow, Verdict::Deny, Verdict::Abstain] {
                let n = stats.verdicts[v as usize].load(Ordering::Relaxed);
                publish(broker, format!("{base}/{}", v.as_str()), n.to_string());
            }
            for kind in ErrorKind::ALL {
                let n = stats.errors[kind as usize].load(Ordering::Relaxed);
                publish(
                    broker,
                    format!("{base}/errors/{}", kind.as_str()),
                    n.to_string(),
                );
            }
        }
    }
}

fn publish(broker: &Broker, topic: String, value: String) {
    broker.router.publish(Arc::new(Message::new(
        topic.into(),
        value.into(),
        QoS::AtMostOnce,
        true,
    )));
}

/// Publishes the statistics every `sys.interval` until shutdown. Called once the
/// listeners are open: the version at once, the first statistics one interval later,
/// so what is retained describes the broker serving, not zeros from its start-up.
pub async fn publish_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    publish(&broker, "$SYS/broker/version".into(), VERSION.to_owned());
    let interval = broker.config.sys.interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => publish_once(&broker),
        }
    }
}
