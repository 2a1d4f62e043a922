//! OpenTelemetry for plugins (feature `otel`): continue the broker's trace, and export spans
//! over OTLP.
//!
//! The broker sends the W3C `traceparent` of its `plugin_call` span with every call. With this
//! feature, each handler's `plugin_rpc` span takes that span as its OpenTelemetry parent, so a
//! plugin's spans (and the spans it creates inside its handlers) land in the broker's trace,
//! under the call that caused them.
//!
//! [`Plugin::serve`](crate::Plugin::serve) and [`Plugin::run`](crate::Plugin::run) set this up
//! on their own: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and the program installed no
//! subscriber), spans are exported there over OTLP/gRPC with `service.name` set to the plugin's
//! name (or `OTEL_SERVICE_NAME`), and the queue is flushed when the plugin stops. A program that
//! builds its own subscriber adds [`layer`] to it instead, or calls [`init_otlp`] for the same
//! setup as `serve`.
//!
//! ```no_run
//! # async fn example() -> Result<(), tandem_plugin::Error> {
//! // Logs per RUST_LOG; spans to $OTEL_EXPORTER_OTLP_ENDPOINT when it is set.
//! let telemetry = tandem_plugin::telemetry::init_otlp("my-plugin")?;
//! // ... serve, or do other work in spans ...
//! telemetry.shutdown().await; // send what is still queued
//! # Ok(()) }
//! ```

use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;

use crate::error::Error;

/// The standard variable naming the OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The standard variable that overrides the exported `service.name`.
pub const SERVICE_NAME_ENV: &str = "OTEL_SERVICE_NAME";

/// How long [`Telemetry::shutdown`] waits for the last spans to be sent.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The exporter behind [`layer`] or [`init_otlp`]: keep it, and call
/// [`shutdown`](Self::shutdown) before the program exits so the last spans are sent.
#[derive(Debug, Default)]
#[must_use = "the last spans are only sent by `shutdown`"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported (an endpoint was set).
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still queued and stops the exporter, within [`FLUSH_TIMEOUT`]. Call it
    /// inside the tokio runtime the exporter was built in, before the runtime ends.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK's shutdown blocks until its export thread is done; that export needs this
        // runtime to run meanwhile.
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT));
        match done.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(cause = %err, "not every span could be exported at shutdown")
            }
            Err(err) => tracing::warn!(cause = %err, "span export at shutdown failed"),
        }
    }
}

/// The OpenTelemetry layer exporting to `OTEL_EXPORTER_OTLP_ENDPOINT`, for a subscriber you
/// build yourself; `None` when the variable is unset or empty. Call it inside a tokio runtime
/// (the exporter's gRPC connection is spawned on it).
///
/// `service_name` is the exported `service.name` unless `OTEL_SERVICE_NAME` is set. Sampling
/// follows the broker's decision (the `traceparent`'s sampled flag), or `OTEL_TRACES_SAMPLER`.
pub fn layer<S>(service_name: &str) -> Result<Option<(impl Layer<S>, Telemetry)>, Error>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let Some(endpoint) = std::env::var(OTLP_ENDPOINT_ENV)
        .ok()
        .filter(|e| !e.trim().is_empty())
    else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|e| Error::Telemetry {
            reason: format!("{OTLP_ENDPOINT_ENV}={endpoint}: {e}"),
        })?;
    let mut resource = Resource::builder();
    if std::env::var_os(SERVICE_NAME_ENV).is_none() {
        resource = resource.with_service_name(service_name.to_owned());
    }
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_batch_exporter(exporter)
        .build();
    // No busy/idle tracking: it reads the clock on every enter and exit of a span.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("tandem-plugin"))
        .with_tracked_inactivity(false);
    Ok(Some((
        layer,
        Telemetry {
            provider: Some(provider),
        },
    )))
}

/// Installs the global `tracing` subscriber: logs to stderr filtered by `RUST_LOG` (default
/// `info`), and spans to `OTEL_EXPORTER_OTLP_ENDPOINT` when it is set. Call it inside a tokio
/// runtime. Fails when a subscriber is already installed or the endpoint is unusable.
pub fn init_otlp(service_name: &str) -> Result<Telemetry, Error> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Stderr, as without this feature (see `logging.rs`): stdout may be the plugin's own output.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter);
    let (otel, telemetry) = match layer(service_name)? {
        Some((layer, telemetry)) => (Some(layer), telemetry),
        None => (None, Telemetry::default()),
    };
    tracing_subscriber::registry()
        .with(otel)
        .with(fmt)
        .try_init()
        .map_err(|e| Error::Telemetry {
            reason: format!("cannot install the tracing subscriber: {e}"),
        })?;
    Ok(telemetry)
}

/// Makes the broker's span, named by `traceparent`, the OpenTelemetry parent of `span`. Does
/// nothing when the program has no OpenTelemetry layer or the header is not valid W3C.
pub(crate) fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let parent = TraceContextPropagator::new().extract(&Traceparent(traceparent));
    let _ = span.set_parent(parent);
}

/// The one header the broker sends, as the propagator reads it.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;
    use tracing_subscriber::prelude::*;

    use super::*;

    #[test]
    fn a_handler_span_continues_the_brokers_trace() {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("plugin_rpc");
            continue_trace(
                &span,
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            );
            let cx = span.context();
            let sc = cx.span().span_context().clone();
            assert_eq!(
                sc.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert_ne!(
                sc.span_id().to_string(),
                "00f067aa0ba902b7",
                "a new child span"
            );
            assert!(sc.is_sampled());
        });
    }
}
