//! OpenTelemetry end to end: the broker and a plugin process (`tandem-policy`, built with the
//! SDK's `otel` feature) both export over OTLP/gRPC to a collector in this test, and one trace
//! holds the client's connection, the broker's chain and plugin call, and the plugin's handler,
//! parented through the `traceparent` the broker put in the call's metadata.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tandem_broker::protocol::{QoS, SubscribeReason};
use tandem_tests::{DEADLINE, Tandem, connect_as, policy_bin};
use tonic::{Request, Response, Status};

/// A span as received: who sent it, its ids and its string attributes.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
}

/// The collector: keeps every span exported to it.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

fn strings(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::BoolValue(b) => b.to_string(),
                Value::IntValue(i) => i.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = Vec::new();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .map(|r| strings(&r.attributes))
                .and_then(|a| a.get("service.name").cloned())
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    attributes: strings(&span.attributes),
                });
            }
        }
        self.spans.lock().unwrap().extend(received);
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves OTLP/gRPC on an ephemeral port; returns its `http://` endpoint.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// The one span matching `pred`, if exactly one has arrived.
    fn find(&self, pred: impl Fn(&Received) -> bool) -> Option<Received> {
        let spans = self.spans();
        let mut found = spans.iter().filter(|s| pred(s));
        let first = found.next()?.clone();
        assert!(
            found.next().is_none(),
            "more than one span matches: {spans:#?}"
        );
        Some(first)
    }
}

fn config(dir: &std::path::Path, collector: &str) -> String {
    let bin = policy_bin();
    format!(
        r##"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
tracing:
  otlp_endpoint: {collector}
  service_name: tandem-under-test
plugins:
  policy:
    endpoint: unix://{d}/policy.sock
    command: [{bin}]
    config:
      users:
        alice: {{ password: pa, attributes: {{ tenant: acme }} }}
      rules:
        - {{ action: any, filter: "tenants/{{tenant}}/#", verdict: allow }}
auth:
  plugins: [policy]
topic-check:
  plugins: [policy]
"##,
        d = dir.display(),
        bin = bin.display(),
    )
}

// Multi-threaded: the collector must keep serving while the test blocks in `terminate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_the_broker_and_the_plugin() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let dir = tempfile::tempdir().unwrap();
    // The plugin process inherits the broker's environment: it exports there too.
    let mut broker = Tandem::start_config_env(
        &config(dir.path(), &endpoint),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
    );

    let mut client = connect_as(broker.addr, "traced-client", "alice", "pa")
        .await
        .expect("alice may connect");
    let ack = client
        .subscribe("tenants/acme/temperature", QoS::AtLeastOnce)
        .await;
    assert_eq!(ack.reasons, [SubscribeReason::Granted(QoS::AtLeastOnce)]);
    client.disconnect().await;

    // A graceful stop flushes the broker's exporter, and the broker stops the plugin, which
    // flushes its own.
    let status = broker
        .terminate(3 * DEADLINE)
        .expect("the broker stops after SIGTERM");
    assert!(status.success(), "broker exit: {status:?}");

    let broker_service = |s: &Received| s.service == "tandem-under-test";
    let plugin_service = |s: &Received| s.service == "tandem-policy";
    let deadline = Instant::now() + DEADLINE;
    let arrived = || {
        let spans = collector.spans();
        let has = |service: &dyn Fn(&Received) -> bool, name: &str, rpc: Option<&str>| {
            spans.iter().any(|s| {
                service(s)
                    && s.name == name
                    && rpc.is_none_or(|r| s.attributes.get("rpc").map(String::as_str) == Some(r))
            })
        };
        has(&broker_service, "connection", None)
            && has(&broker_service, "authenticate", None)
            && has(&broker_service, "topic_check", None)
            && has(&broker_service, "plugin_call", Some("authenticate"))
            && has(&broker_service, "plugin_call", Some("topic_filter"))
            && has(&plugin_service, "plugin_rpc", Some("authenticate"))
            && has(&plugin_service, "plugin_rpc", Some("topic_filter"))
    };
    while !arrived() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the spans of the connection; received: {:#?}\nbroker logs:\n{}",
            collector.spans(),
            broker.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let connection = collector
        .find(|s| broker_service(s) && s.name == "connection")
        .unwrap();
    assert_eq!(
        connection.attributes.get("client_id").map(String::as_str),
        Some("traced-client")
    );
    for (chain, rpc) in [
        ("authenticate", "authenticate"),
        ("topic_check", "topic_filter"),
    ] {
        let chain_span = collector
            .find(|s| broker_service(s) && s.name == chain)
            .unwrap();
        let call = collector
            .find(|s| {
                broker_service(s)
                    && s.name == "plugin_call"
                    && s.attributes.get("rpc").map(String::as_str) == Some(rpc)
            })
            .unwrap();
        let handler = collector
            .find(|s| {
                plugin_service(s)
                    && s.name == "plugin_rpc"
                    && s.attributes.get("rpc").map(String::as_str) == Some(rpc)
            })
            .unwrap();
        // One trace: the connection, the chain, the call, the plugin's handler.
        assert_eq!(chain_span.trace_id, connection.trace_id, "{chain}");
        assert_eq!(call.trace_id, connection.trace_id, "{rpc} call");
        assert_eq!(handler.trace_id, connection.trace_id, "{rpc} handler");
        assert_eq!(chain_span.parent_span_id, connection.span_id, "{chain}");
        assert_eq!(call.parent_span_id, chain_span.span_id, "{rpc} call");
        assert_eq!(
            handler.parent_span_id, call.span_id,
            "the plugin's {rpc} handler is a child of the broker's plugin_call"
        );
        assert_eq!(
            call.attributes.get("plugin").map(String::as_str),
            Some("policy")
        );
        assert_eq!(
            call.attributes.get("verdict").map(String::as_str),
            Some("allow")
        );
        assert!(
            call.attributes
                .get("replica")
                .is_some_and(|r| r.starts_with("unix://")),
            "{call:?}"
        );
        assert_eq!(
            chain_span.attributes.get("allowed").map(String::as_str),
            Some("true")
        );
    }
}
