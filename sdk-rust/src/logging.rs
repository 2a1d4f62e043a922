//! The SDK's log setup when the program set up none: filtered by `RUST_LOG`.

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

/// Installs a subscriber unless the program installed one (which then wins): logs per
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
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    TracingSetup {
        #[cfg(feature = "otel")]
        telemetry: None,
    }
}
