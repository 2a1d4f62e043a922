//! How serving ends: on SIGTERM (what Kubernetes and the broker's supervisor send) or SIGINT,
//! and within [`DRAIN_TIMEOUT`] however long in-flight calls take, so that a handler stuck on a
//! backend cannot keep the process alive past the pod's grace period.

use std::future::Future;
use std::time::Duration;

use tracing::{info, warn};

/// Resolves when SIGTERM (what Kubernetes and the broker's supervisor send) or SIGINT arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!(cause = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                warn!(cause = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => info!("SIGINT received; shutting down"),
        () = term => info!("SIGTERM received; shutting down"),
    }
}

/// How long a shutdown waits for in-flight calls before exiting anyway (under Kubernetes'
/// default 30 s grace period).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the server until it ends, or until the drain deadline passes.
pub(crate) async fn bounded(
    serve: impl Future<Output = Result<(), tonic::transport::Error>>,
    drain_deadline: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tokio::select! {
        served = serve => served,
        () = drain_deadline => {
            warn!(timeout = ?DRAIN_TIMEOUT, "in-flight calls did not finish in time; exiting anyway");
            Ok(())
        }
    }
}
