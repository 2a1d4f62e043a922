//! `/metrics`: the broker's counters in the OpenMetrics text format, which Prometheus
//! scrapes.
//!
//! Nothing here counts. The collector reads, on each scrape, the same counters `$SYS`
//! publishes ([`Stats`](crate::stats::Stats), each plugin's
//! [`RpcStats`](crate::plugins::plugin::RpcStats), each event queue), so there is one
//! source of truth shown twice and the message path pays nothing for being scraped.
//! Every metric is listed with its labels in `docs/operations.md`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::broker::Broker;
use crate::config::ListenerKind;
use crate::plugins::{ErrorKind, Rpc, Verdict};

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry whose one collector reads `broker` on every scrape.
pub fn registry(broker: Arc<Broker>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(BrokerCollector(broker)));
    registry
}

/// The OpenMetrics text exposition of `registry`.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

struct BrokerCollector(Arc<Broker>);

impl std::fmt::Debug for BrokerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerCollector")
    }
}

/// One metric family: its samples are written through [`Family::counter`] and
/// [`Family::gauge`].
struct Family<'a>(prometheus_client::encoding::MetricEncoder<'a>);

impl<'a> Family<'a> {
    fn new(
        encoder: &'a mut DescriptorEncoder<'_>,
        name: &'a str,
        help: &str,
        kind: MetricType,
    ) -> Result<Self, std::fmt::Error> {
        Ok(Self(encoder.encode_descriptor(name, help, None, kind)?))
    }

    fn counter(&mut self, labels: &impl EncodeLabelSet, v: u64) -> std::fmt::Result {
        self.0
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)
    }

    fn gauge(&mut self, labels: &impl EncodeLabelSet, v: i64) -> std::fmt::Result {
        self.0.encode_family(labels)?.encode_gauge(&v)
    }
}

/// Writes a single unlabelled sample.
fn single(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    v: u64,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => metric.encode_counter::<NoLabelSet, _, u64>(&v, None),
        _ => metric.encode_gauge(&i64::try_from(v).unwrap_or(i64::MAX)),
    }
}

/// One event queue's counters, read once per scrape.
struct EventCounts {
    queued: u64,
    sent: u64,
    acked: u64,
    resent: u64,
    dropped: u64,
}

/// Reads one counter out of [`EventCounts`].
type Pick = fn(&EventCounts) -> u64;

const QOS: [&str; 3] = ["0", "1", "2"];
const RPCS: [Rpc; 2] = [Rpc::Authenticate, Rpc::TopicFilter];
const VERDICTS: [Verdict; 3] = [Verdict::Allow, Verdict::Deny, Verdict::Abstain];

impl Collector for BrokerCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let broker = &self.0;
        let s = broker.stats.snapshot();
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        Family::new(&mut e, "tandem_build_info", "The broker's version.", Gauge)?
            .gauge(&version, 1)?;
        #[rustfmt::skip]
        let singles: [(&str, &str, MetricType, u64); 17] = [
            ("tandem_uptime_seconds", "Seconds since the broker started.", Gauge, s.uptime_secs),
            ("tandem_clients_connected", "Clients connected now.", Gauge, s.clients_connected as u64),
            ("tandem_clients_maximum", "Most clients connected at once since start.", Gauge, s.clients_maximum as u64),
            ("tandem_sessions", "Sessions known: online plus parked persistent ones.", Gauge, broker.registry.len() as u64),
            ("tandem_connections", "Connections that completed CONNECT.", Counter, s.connections_total),
            ("tandem_connections_refused", "Connections refused at mqtt.max_connections.", Counter, s.connections_refused),
            ("tandem_connections_protocol_errors", "Connections closed for a protocol violation or malformed packet.", Counter, s.protocol_errors),
            ("tandem_handshakes", "Connections in the handshake now: CONNECT not yet read or not yet authenticated (bounded by mqtt.max_handshakes).", Gauge, broker.handshakes_in_progress() as u64),
            ("tandem_handshakes_refused", "New connections closed at once at mqtt.max_handshakes.", Counter, s.handshakes_refused),
            ("tandem_transport_failures", "Connections closed before MQTT: a failed PROXY header, TLS handshake or WebSocket upgrade.", Counter, s.transport_failures),
            ("tandem_connects_too_large", "Connections closed for a CONNECT over mqtt.max_connect_packet_size.", Counter, s.connects_too_large),
            ("tandem_clients_denied", "CONNECTs denied by the auth chain.", Counter, s.auth_denied),
            ("tandem_topics_denied", "Topic actions denied by the topic-check chain (cache hits not counted).", Counter, s.topic_denied),
            ("tandem_bytes_received", "Bytes read from clients.", Counter, s.bytes_received),
            ("tandem_bytes_sent", "Bytes written to clients.", Counter, s.bytes_sent),
            ("tandem_retained_messages", "Retained messages stored.", Gauge, broker.router.retained_count() as u64),
            ("tandem_messages_queued", "Messages waiting in session queues, online and offline (bounded per session by mqtt.max_queued_messages).", Gauge, broker.registry.queued_messages()),
        ];
        for (name, help, kind, v) in singles {
            single(&mut e, name, help, kind, v)?;
        }
        single(
            &mut e,
            "tandem_subscriptions",
            "Subscriptions in the router.",
            Gauge,
            broker.router.subscription_count() as u64,
        )?;
        let mut f = Family::new(
            &mut e,
            "tandem_connections_by_version",
            "Connections that completed CONNECT, by MQTT version.",
            Counter,
        )?;
        for (v, n) in ["3.1", "3.1.1", "5"].iter().zip(s.connections_by_version) {
            f.counter(&[("mqtt", *v)], n)?;
        }
        let mut f = Family::new(
            &mut e,
            "tandem_connections_by_transport",
            "Connections that completed CONNECT, by listener transport.",
            Counter,
        )?;
        for (t, n) in ListenerKind::ALL.iter().zip(s.connections_by_transport) {
            f.counter(&[("transport", t.as_str())], n)?;
        }
        let mut f = Family::new(
            &mut e,
            "tandem_messages_received",
            "PUBLISH packets received from clients, by QoS.",
            Counter,
        )?;
        for (qos, n) in QOS.iter().zip(s.messages_received_by_qos) {
            f.counter(&[("qos", *qos)], n)?;
        }
        let mut f = Family::new(
            &mut e,
            "tandem_messages_sent",
            "PUBLISH packets sent to clients, by QoS.",
            Counter,
        )?;
        for (qos, n) in QOS.iter().zip(s.messages_sent_by_qos) {
            f.counter(&[("qos", *qos)], n)?;
        }
        let mut f = Family::new(
            &mut e,
            "tandem_messages_dropped",
            "Messages not delivered to a session, by reason (queue_full: mqtt.max_queued_messages; hold_expired: topic-check.hold; expired: MQTT 5 message expiry; too_large: the MQTT 5 client's maximum packet size).",
            Counter,
        )?;
        f.counter(&[("reason", "queue_full")], s.messages_dropped)?;
        f.counter(&[("reason", "hold_expired")], s.messages_hold_expired)?;
        f.counter(&[("reason", "expired")], s.messages_expired)?;
        f.counter(&[("reason", "too_large")], s.messages_too_large)?;
        single(
            &mut e,
            "tandem_messages_held",
            "Deliveries and wills held because their topic check failed with a plugin error (topic-check.hold).",
            Counter,
            s.messages_held,
        )?;
        single(
            &mut e,
            "tandem_topic_cache_full",
            "Topic decisions not cached because the session's cache was at topic-check.cache.max_entries or max_bytes.",
            Counter,
            s.topic_cache_full,
        )?;
        self.encode_limits(&mut e)?;
        self.encode_sessions(&mut e, &s)?;
        self.encode_storage(&mut e)?;

        self.encode_plugins(&mut e)
    }
}

impl BrokerCollector {
    /// Refusals at the router's bounds, and the retained store's size in bytes.
    /// The store's writer and what the start-up restored; nothing without a store.
    fn encode_storage(&self, e: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let broker = &self.0;
        let Some(store) = &broker.store else {
            return Ok(());
        };
        let st = store.stats();
        #[rustfmt::skip]
        let singles: [(&str, &str, MetricType, u64); 6] = [
            ("tandem_storage_commits", "Transactions the store committed (each a batch of changes: group commit).", Counter, st.commits.load(Relaxed)),
            ("tandem_storage_syncs", "Commits synced to disk (every commit with sync: always; every interval with periodic).", Counter, st.syncs.load(Relaxed)),
            ("tandem_storage_ops", "Changes committed to the store.", Counter, st.ops.load(Relaxed)),
            ("tandem_storage_errors", "Commits that failed (a full disk, an I/O error); each is retried until it lands.", Counter, st.errors.load(Relaxed)),
            ("tandem_storage_pending_ops", "Changes handed to the store and not yet committed.", Gauge, st.pending.load(Relaxed) as u64),
            ("tandem_storage_failing", "1 while the last commit failed: QoS 1/2 publishes that need the store are not acknowledged.", Gauge, u64::from(st.failing.load(Relaxed))),
        ];
        for (name, help, kind, v) in singles {
            single(e, name, help, kind, v)?;
        }
        if let Some(r) = broker.restored.get() {
            let mut f = Family::new(
                e,
                "tandem_storage_restored",
                "What the start-up restored from the store, by kind (expired: sessions that expired while the broker was down; dropped: messages past today's bounds).",
                Gauge,
            )?;
            for (kind, v) in [
                ("sessions", r.sessions),
                ("expired", r.expired),
                ("queued", r.queued),
                ("inflight", r.inflight),
                ("incoming_qos2", r.incoming),
                ("retained", r.retained),
                ("dropped", r.dropped),
            ] {
                f.gauge(&[("kind", kind)], i64::try_from(v).unwrap_or(i64::MAX))?;
            }
        }
        Ok(())
    }

    fn encode_limits(&self, e: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let broker = &self.0;
        let limits = &broker.stats.limits;
        let mut f = Family::new(
            e,
            "tandem_topic_levels_refused",
            "Topics past mqtt.max_topic_levels, by packet (subscribe: SUBACK 0x80; publish, will: connection closed).",
            Counter,
        )?;
        for (packet, n) in ["subscribe", "publish", "will"]
            .iter()
            .zip(&limits.topic_levels)
        {
            f.counter(&[("packet", *packet)], n.load(Relaxed))?;
        }
        single(
            e,
            "tandem_subscriptions_refused",
            "SUBSCRIBE filters answered 0x80 at mqtt.max_subscriptions_per_client.",
            Counter,
            limits.subscriptions.load(Relaxed),
        )?;
        let mut f = Family::new(
            e,
            "tandem_retained_refused",
            "Retained messages not stored, by the bound that refused them (still routed).",
            Counter,
        )?;
        f.counter(
            &[("bound", "max_retained_messages")],
            limits.retained_count.load(Relaxed),
        )?;
        f.counter(
            &[("bound", "max_retained_bytes")],
            limits.retained_bytes.load(Relaxed),
        )?;
        single(
            e,
            "tandem_retained_bytes",
            "Topic plus payload bytes in the retained store (bounded by mqtt.max_retained_bytes).",
            Gauge,
            broker.router.retained_bytes() as u64,
        )
    }

    /// Session ownership, expiry and revocation counters.
    fn encode_sessions(
        &self,
        e: &mut DescriptorEncoder<'_>,
        s: &crate::stats::Snapshot,
    ) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        single(
            e,
            "tandem_sessions_parked",
            "Persistent sessions kept for offline clients (bounded by mqtt.max_parked_sessions).",
            Gauge,
            self.0.registry.parked() as u64,
        )?;
        let mut f = Family::new(
            e,
            "tandem_sessions_discarded",
            "Parked sessions discarded, by reason (expired: mqtt.session_expiry; evicted: mqtt.max_parked_sessions).",
            Counter,
        )?;
        f.counter(&[("reason", "expired")], s.sessions_expired)?;
        f.counter(&[("reason", "evicted")], s.sessions_evicted)?;
        #[rustfmt::skip]
        let singles: [(&str, &str, u64); 3] = [
            ("tandem_session_takeovers_refused", "CONNECTs refused with \"identifier rejected\": another identity owns the session (mqtt.session_takeover).", s.takeovers_refused),
            ("tandem_subscriptions_revoked", "Subscriptions removed because the topic-check chain in force after a reload denies them.", s.subscriptions_revoked),
            ("tandem_inflight_resend_denied", "Inflight messages of a resumed session dropped instead of resent: RECEIVE denies them.", s.resend_denied),
        ];
        for (name, help, v) in singles {
            single(e, name, help, Counter, v)?;
        }
        Ok(())
    }

    fn encode_plugins(&self, e: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        use MetricType::{Counter, Gauge, Histogram};
        let set = self.0.plugins.current();
        let open = set.open_chains();
        let mut f = Family::new(
            e,
            "tandem_chain_enforced",
            "1 while the chain is configured; 0 means it allows everything (no auth: every client connects; no topic-check: every topic is allowed).",
            Gauge,
        )?;
        for chain in crate::plugins::OpenChain::ALL {
            let enforced = !open.contains(&chain);
            f.gauge(&[("chain", chain.section)], i64::from(enforced))?;
        }
        let plugins: Vec<_> = set.plugins().collect();
        if plugins.is_empty() {
            return Ok(());
        }
        let mut f = Family::new(
            e,
            "tandem_plugin_replicas",
            "Replicas the plugin's endpoint resolves to.",
            Gauge,
        )?;
        for p in &plugins {
            f.gauge(&[("plugin", p.alias.as_str())], p.replica_health().0 as i64)?;
        }
        let mut f = Family::new(
            e,
            "tandem_plugin_replicas_up",
            "Replicas described and answering.",
            Gauge,
        )?;
        for p in &plugins {
            f.gauge(&[("plugin", p.alias.as_str())], p.replica_health().1 as i64)?;
        }
        let mut f = Family::new(
            e,
            "tandem_plugin_circuit_open",
            "1 while no replica is up: calls answer on_error at once without being made.",
            Gauge,
        )?;
        for p in &plugins {
            let open = p.replica_health().1 == 0;
            f.gauge(&[("plugin", p.alias.as_str())], i64::from(open))?;
        }
        let mut f = Family::new(
            e,
            "tandem_plugin_calls",
            "Decisions asked of the plugin, including those answered by on_error without a call.",
            Counter,
        )?;
        for p in &plugins {
            for rpc in RPCS {
                let n = p.stats[rpc as usize].calls.load(Relaxed);
                f.counter(&[("plugin", p.alias.as_str()), ("rpc", rpc.as_str())], n)?;
            }
        }
        let mut f = Family::new(
            e,
            "tandem_plugin_verdicts",
            "Verdicts, after on_error was applied to failures.",
            Counter,
        )?;
        for p in &plugins {
            for rpc in RPCS {
                for v in VERDICTS {
                    let n = p.stats[rpc as usize].verdicts[v as usize].load(Relaxed);
                    let labels = [
                        ("plugin", p.alias.as_str()),
                        ("rpc", rpc.as_str()),
                        ("verdict", v.as_str()),
                    ];
                    f.counter(&labels, n)?;
                }
            }
        }
        let mut f = Family::new(
            e,
            "tandem_plugin_errors",
            "Calls that produced no verdict, by kind: deadline, unavailable, status, unspecified, shed, circuit_open.",
            Counter,
        )?;
        for p in &plugins {
            for rpc in RPCS {
                for kind in ErrorKind::ALL {
                    let n = p.stats[rpc as usize].errors[kind as usize].load(Relaxed);
                    let labels = [
                        ("plugin", p.alias.as_str()),
                        ("rpc", rpc.as_str()),
                        ("kind", kind.as_str()),
                    ];
                    f.counter(&labels, n)?;
                }
            }
        }
        {
            let mut f = e.encode_descriptor(
            "tandem_plugin_call_duration_seconds",
            "Time from sending a call to its answer or failure (shed and circuit_open excluded).",
            None,
            Histogram,
        )?;
            for p in &plugins {
                for rpc in RPCS {
                    let (sum, count, buckets) = p.stats[rpc as usize].latency.snapshot();
                    f.encode_family(&[("plugin", p.alias.as_str()), ("rpc", rpc.as_str())])?
                        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
                }
            }
        }

        let subscribers = set.events.subscribers();
        if subscribers.is_empty() {
            return Ok(());
        }
        let mut f = Family::new(
            e,
            "tandem_plugin_events_queue_depth",
            "Events queued for the plugin and not yet acknowledged.",
            Gauge,
        )?;
        for sub in subscribers {
            f.gauge(&[("plugin", sub.alias.as_str())], sub.queue.depth() as i64)?;
        }
        let mut f = Family::new(
            e,
            "tandem_plugin_events_queue_bytes",
            "Encoded bytes of the events queued for the plugin (bounded by events.max_bytes).",
            Gauge,
        )?;
        for sub in subscribers {
            let bytes = i64::try_from(sub.queue.bytes()).unwrap_or(i64::MAX);
            f.gauge(&[("plugin", sub.alias.as_str())], bytes)?;
        }
        let mut f = Family::new(
            e,
            "tandem_plugin_events_dropped_for_bytes",
            "Events dropped because the plugin's queue reached events.max_bytes (a part of tandem_plugin_events_dropped).",
            Counter,
        )?;
        for sub in subscribers {
            f.counter(
                &[("plugin", sub.alias.as_str())],
                sub.queue.dropped_for_bytes(),
            )?;
        }
        let counters: Vec<(&str, EventCounts)> = subscribers
            .iter()
            .map(|sub| {
                let (queued, sent, acked, dropped) = sub.queue.counters();
                let resent = sub.queue.resent();
                let c = EventCounts {
                    queued,
                    sent,
                    acked,
                    resent,
                    dropped,
                };
                (sub.alias.as_str(), c)
            })
            .collect();
        #[rustfmt::skip]
        let families: [(&str, &str, Pick); 5] = [
            ("tandem_plugin_events_queued", "Events queued for the plugin.", |c| c.queued),
            ("tandem_plugin_events_sent", "Events handed to the plugin's stream, resends included.", |c| c.sent),
            ("tandem_plugin_events_acked", "Events the plugin acknowledged.", |c| c.acked),
            ("tandem_plugin_events_resent", "Unacknowledged events sent again on a new stream after a reconnect.", |c| c.resent),
            ("tandem_plugin_events_dropped", "Events dropped because the plugin's queue was full, by events.queue or events.max_bytes (overflow: drop_oldest).", |c| c.dropped),
        ];
        for (name, help, pick) in families {
            let mut f = Family::new(e, name, help, Counter)?;
            for (alias, counts) in &counters {
                f.counter(&[("plugin", *alias)], pick(counts))?;
            }
        }
        Ok(())
    }
}
