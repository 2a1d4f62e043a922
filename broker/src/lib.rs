//! Tandem: an MQTT broker whose plugins run out of process as gRPC servers.
//!
//! This crate is the broker as a library; the `tandem` binary is a thin CLI over
//! [`run`]. Tests and embedders bind [`Server`] on port 0 and call the same code.
//!
//! # Layout
//! - [`protocol`]: the MQTT codec (one packet model, wire forms per version).
//! - [`broker`]: the state every connection shares.
//! - [`server`]: listeners, the accept loop, connection tasks.
//! - [`session`]: session state, takeover, inflight window, the bounded session queue.
//! - [`router`]: topic rules, the subscription tree, retained messages, fan-out.
//! - [`plugins`]: the plugin host: gRPC plugins, chains, failure policy, decision cache.
//! - [`conformance`]: `tandem plugin check`, the conformance kit run against a plugin.
//! - [`sys`]: `$SYS/broker/...` statistics.
//! - [`stats`]: broker-wide counters.
//! - [`admin`]: the admin HTTP listener: `/metrics`, `/healthz`, `/readyz`.
//! - [`metrics`]: the counters in the OpenMetrics text format, read on each scrape.
//! - [`config`]: strict YAML configuration with embedded defaults.
//! - [`reload`]: SIGHUP / `tandem reload`: the plugin sections applied while serving.
//! - [`control`]: the local control socket `tandem reload` asks and hears the outcome on.
//! - [`telemetry`]: OpenTelemetry export and the trace context sent to plugins.
//! - [`logging`]: text log lines a client cannot forge (control characters escaped).
//! - [`scaffold`]: `tandem plugin new`: a standalone plugin project (Rust or Python) from
//!   embedded templates.
//!
//! # Quick start
//! ```no_run
//! use tandem_broker::{config::Config, run};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let shutdown = CancellationToken::new();
//! // Serves 127.0.0.1:1883 until `shutdown` is cancelled.
//! run(Config::embedded_default(), shutdown).await?;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod broker;
pub mod config;
pub mod conformance;
pub mod control;
pub mod logging;
pub mod metrics;
pub mod plugins;
pub mod protocol;
pub mod reload;
pub mod router;
pub mod scaffold;
pub mod server;
pub mod session;
pub mod stats;
pub mod storage;
pub mod sys;
pub mod telemetry;
pub mod transport;

pub use server::{Server, ServerError};
use tokio_util::sync::CancellationToken;

/// Binds every listener of `config` and serves until `shutdown` is cancelled, then
/// drains connections within `shutdown_timeout`.
pub async fn run(config: config::Config, shutdown: CancellationToken) -> Result<(), ServerError> {
    // The control socket's name is taken before anything slow starts (see `control`).
    let control = control::bind();
    let server = Server::start(config, &shutdown).await?;
    if let Some(listener) = control {
        tokio::spawn(control::serve(
            listener,
            server.broker().clone(),
            shutdown.clone(),
        ));
    }
    server.serve(shutdown).await;
    Ok(())
}

/// [`run`] for a configuration read from `source`: SIGHUP (or `tandem reload`) reads
/// it again and applies its plugin sections (see [`reload`]).
pub async fn run_file(
    config: config::Config,
    source: config::overrides::ConfigSource,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let control = control::bind();
    let mut server = Server::start(config, &shutdown).await?;
    server.set_config_source(source);
    tokio::spawn(reload::on_sighup(server.broker().clone(), shutdown.clone()));
    if let Some(listener) = control {
        tokio::spawn(control::serve(
            listener,
            server.broker().clone(),
            shutdown.clone(),
        ));
    }
    server.serve(shutdown).await;
    Ok(())
}
