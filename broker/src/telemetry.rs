//! OpenTelemetry: the broker's spans as OTLP traces, and the W3C trace context that every
//! plugin call carries.
//!
//! `main.rs` adds [`layer`] to its `tracing` subscriber. The layer turns the broker's own
//! spans (target `tandem_broker`, level INFO and above, whatever the log filter says) into
//! OpenTelemetry spans: `connection`, `authenticate`, `topic_check` and one `plugin_call`
//! per RPC attempt. [`inject`] writes the current `plugin_call` span's `traceparent` (and
//! `tracestate`) into the call's gRPC metadata, so a plugin continues the same trace.
//!
//! Without an OTLP endpoint nothing is exported, but spans still get trace and span ids, so
//! plugins receive a usable `traceparent` and can export their side. With one, finished spans
//! are batched on a background thread and sent over OTLP/gRPC; [`Telemetry::shutdown`] sends
//! what is left, within a deadline, on the way out.
//!
//! # What the hot path pays
//! Spans exist only around real plugin calls and around connections: a topic check answered
//! by the session's decision cache creates no span. A plugin call pays one span (a few small
//! allocations for its OpenTelemetry builder) and one formatted `traceparent` header, next to
//! a gRPC round trip.

use std::time::Duration;

use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::{Deserialize, Serialize};
use tandem_proto::v1 as pb;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;

/// The environment variable OpenTelemetry SDKs read the OTLP endpoint from; used when the
/// configuration names none.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// How long one OTLP export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `tracing:` section of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`. Absent: `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// if set, else nothing is exported (spans still carry ids for plugins).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of new traces recorded, 0.0 to 1.0. A trace a client's connection started is
    /// kept or dropped whole: its child spans follow the root's decision.
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "tandem".to_owned(),
            sample_ratio: 1.0,
        }
    }
}

impl TracingConfig {
    /// Checks the values; an error names the key under `tracing.` and what is wrong.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(("tracing.sample_ratio", "must be between 0.0 and 1.0".into()));
        }
        if self.service_name.is_empty() {
            return Err(("tracing.service_name", "must not be empty".into()));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            check_endpoint(endpoint).map_err(|m| ("tracing.otlp_endpoint", m))?;
        }
        Ok(())
    }

    /// The endpoint to export to: the configured one, else the environment's.
    fn endpoint(&self) -> Option<String> {
        self.otlp_endpoint.clone().or_else(|| {
            std::env::var(OTLP_ENDPOINT_ENV)
                .ok()
                .filter(|e| !e.trim().is_empty())
        })
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: http_uri::Uri = endpoint
        .parse()
        .map_err(|e| format!("`{endpoint}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some() => Ok(()),
        Some("https") => Err(format!(
            "`{endpoint}`: https is not supported yet; export to a collector on a trusted \
             network or localhost (http://host:4317)"
        )),
        _ => Err(format!(
            "`{endpoint}` must be http://host:port (OTLP over gRPC, usually port 4317)"
        )),
    }
}

/// `http::Uri`, reached through tonic so the broker needs no direct `http` dependency.
mod http_uri {
    pub(super) use tonic::codegen::http::Uri;
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The configuration is not usable.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, e.g. `tracing.otlp_endpoint`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The OTLP exporter could not be built.
    #[error("tracing: cannot build the OTLP exporter for {endpoint}: {cause}")]
    Exporter {
        /// The endpoint.
        endpoint: String,
        /// The exporter's error.
        cause: String,
    },
}

/// The tracer provider behind [`layer`]; flush it with [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    endpoint: Option<String>,
}

impl Telemetry {
    /// Where spans are exported, if anywhere.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// Exports the spans still queued and stops the exporter, waiting at most `timeout`.
    /// Call it from a thread that may block, while the tokio runtime still runs (the
    /// exporter's connection lives on it).
    pub fn shutdown(self, timeout: Duration) {
        if self.endpoint.is_none() {
            return;
        }
        if let Err(err) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!(cause = %err, "tracing: not every span could be exported at shutdown");
        }
    }
}

/// The OpenTelemetry layer for the broker's subscriber, and the provider to flush at exit.
///
/// Must be called inside a tokio runtime when an endpoint is configured (the OTLP/gRPC
/// exporter's connection is spawned on it). The layer has its own filter (the broker's spans
/// at INFO and above), so the log filter (`--log`) does not switch propagation off.
pub fn layer<S>(config: &TracingConfig) -> Result<(impl Layer<S>, Telemetry), TelemetryError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    config
        .check()
        .map_err(|(key, message)| TelemetryError::Invalid { key, message })?;
    let endpoint = config.endpoint();
    let mut provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        );
    if let Some(endpoint) = &endpoint {
        check_endpoint(endpoint).map_err(|message| TelemetryError::Invalid {
            key: OTLP_ENDPOINT_ENV,
            message,
        })?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TelemetryError::Exporter {
                endpoint: endpoint.clone(),
                cause: e.to_string(),
            })?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    let tracer = provider.tracer("tandem-broker");
    let exporting = endpoint.is_some();
    // A connection's span is entered on every poll of its task, so nothing is done on
    // entering one: no busy/idle tracking (a clock read each time) and no activation of
    // its OpenTelemetry context (nothing here reads the current context: `inject` takes
    // the span's own). Source location and target attributes are built only for spans
    // that are exported. (In a connect storm with an Authenticate plugin and no endpoint
    // the layer took 9% of the broker's samples; these settings made no difference that
    // three A/B runs could tell from noise: spans are built and ended all the same.)
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_context_activation(false)
        .with_location(exporting)
        .with_target(exporting)
        .with_filter(Targets::new().with_target("tandem_broker", tracing::Level::INFO));
    Ok((layer, Telemetry { provider, endpoint }))
}

/// A decision RPC as the plugin call path traces it: its name and its answer's verdict.
pub(crate) trait TracedRpc {
    /// The RPC's answer.
    type Response;
    /// The RPC's name, the `rpc` field of its `plugin_call` span.
    const RPC: &'static str;
    /// The answer's verdict, the `verdict` field of the span.
    fn verdict(response: &Self::Response) -> &'static str;
}

fn verdict_name(raw: i32) -> &'static str {
    match pb::Verdict::try_from(raw) {
        Ok(pb::Verdict::Allow) => "allow",
        Ok(pb::Verdict::Deny) => "deny",
        Ok(pb::Verdict::Abstain) => "abstain",
        _ => "unspecified",
    }
}

impl TracedRpc for pb::AuthenticateRequest {
    type Response = pb::AuthenticateResponse;
    const RPC: &'static str = "authenticate";
    fn verdict(response: &Self::Response) -> &'static str {
        verdict_name(response.verdict)
    }
}

impl TracedRpc for pb::TopicFilterRequest {
    type Response = pb::TopicFilterResponse;
    const RPC: &'static str = "topic_filter";
    fn verdict(response: &Self::Response) -> &'static str {
        verdict_name(response.verdict)
    }
}

/// Writes the W3C trace context of `span` into a gRPC call's metadata. Nothing is written
/// when the span has no OpenTelemetry context (tracing not set up, or the span disabled).
pub(crate) fn inject(span: &tracing::Span, metadata: &mut tonic::metadata::MetadataMap) {
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// Lets the propagator write into tonic's metadata.
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        assert!(check_endpoint("http://127.0.0.1:4317").is_ok());
        assert!(check_endpoint("http://otel-collector:4317").is_ok());
        assert!(
            check_endpoint("https://x:4317")
                .unwrap_err()
                .contains("https")
        );
        assert!(check_endpoint("127.0.0.1:4317").is_err());
        assert!(check_endpoint("grpc://x:1").is_err());
    }

    #[test]
    fn sample_ratio_is_bounded() {
        let c = TracingConfig {
            sample_ratio: 1.5,
            ..Default::default()
        };
        assert_eq!(c.check().unwrap_err().0, "tracing.sample_ratio");
    }

    #[test]
    fn a_span_with_the_layer_injects_a_traceparent() {
        use tracing_subscriber::layer::SubscriberExt;
        let (layer, _telemetry) = layer(&TracingConfig::default()).unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("plugin_call");
            let mut metadata = tonic::metadata::MetadataMap::new();
            inject(&span, &mut metadata);
            let tp = metadata.get("traceparent").unwrap().to_str().unwrap();
            let parts: Vec<&str> = tp.split('-').collect();
            assert_eq!(parts.len(), 4, "{tp}");
            assert_eq!(parts[0], "00");
            assert_ne!(parts[1], "0".repeat(32));
            assert_eq!(parts[3], "01", "sampled at ratio 1.0");
        });
    }

    #[test]
    fn without_the_layer_nothing_is_injected() {
        let span = tracing::info_span!("plugin_call");
        let mut metadata = tonic::metadata::MetadataMap::new();
        inject(&span, &mut metadata);
        assert!(metadata.get("traceparent").is_none());
    }
}
