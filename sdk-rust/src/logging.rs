//! Where the SDK's logs go when the program set up none: to stderr, filtered by `RUST_LOG`.
//!
//! Stderr, because stdout may be the plugin's own output channel (the event logger writes its
//! JSON lines there, and tools read it), and because the broker passes a plugin's stderr
//! through to its own log. ANSI colours only when stderr is a terminal, so that a captured log
//! holds plain text.

use std::io::IsTerminal as _;

/// What [`init_tracing`] set up, to finish when serving ends.
pub(crate) struct TracingSetup {
    /// The OTLP exporter to flush (feature `otel`, endpoint set).
    #[cfg(feature = "otel")]
    telemetry: Option<crate::telemetry::Telemetry>,
}

impl TracingSetup {
    /// Sends the spans still queued.
    pub(crate) async fn finish(self) {
        #[cfg(feature = "otel")]
        if let Some(telemetry) = self.telemetry {
            telemetry.shutdown().await;
        }
    }
}

/// Installs a subscriber unless the program installed one (which then wins): logs to stderr per
/// `RUST_LOG`, and with feature `otel` spans to `OTEL_EXPORTER_OTLP_ENDPOINT` when set.
pub(crate) fn init_tracing(service_name: &str) -> TracingSetup {
    #[cfg(feature = "otel")]
    if !tracing::dispatcher::has_been_set() {
        match crate::telemetry::init_otlp(service_name) {
            Ok(telemetry) => {
                return TracingSetup {
                    telemetry: Some(telemetry),
                };
            }
            // Serving matters more than tracing: say why and serve with logs only.
            Err(err) => eprintln!("warning: {err}; spans are not exported"),
        }
    }
    #[cfg(not(feature = "otel"))]
    let _ = service_name;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Fails only when the program already installed a subscriber, which then wins.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    TracingSetup {
        #[cfg(feature = "otel")]
        telemetry: None,
    }
}
