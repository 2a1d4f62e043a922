//! Tandem: an MQTT broker whose plugins run out of process as gRPC servers.
//!
//! This crate is the broker as a library; the `tandem` binary is a thin CLI over
//! [`run`]. Tests and embedders bind [`Server`] on port 0 and call the same code.
//!
//! # Layout
//! - [`protocol`]: the MQTT codec (one packet model, wire forms per version).
//! - [`server`]: listeners, the accept loop, connection tasks.
//! - [`session`]: session state, takeover, inflight window, the bounded session queue.
//! - [`router`]: topic rules, the subscription tree, retained messages, fan-out.
//! - [`plugins`]: the plugin host: gRPC plugins, chains, failure policy, decision cache.
//! - [`sys`]: `$SYS/broker/...` statistics.
//! - [`stats`]: broker-wide counters.
//! - [`config`]: strict YAML configuration with embedded defaults.
//! - [`telemetry`]: OpenTelemetry export and the trace context sent to plugins.
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

pub mod config;
pub mod plugins;
pub mod protocol;
pub mod router;
pub mod server;
pub mod session;
pub mod stats;
pub mod sys;
pub mod telemetry;

pub use server::{Server, ServerError};
use tokio_util::sync::CancellationToken;

/// Binds every listener of `config` and serves until `shutdown` is cancelled, then
/// drains connections within `shutdown_timeout`.
pub async fn run(config: config::Config, shutdown: CancellationToken) -> Result<(), ServerError> {
    let server = Server::start(config, &shutdown).await?;
    server.serve(shutdown).await;
    Ok(())
}
