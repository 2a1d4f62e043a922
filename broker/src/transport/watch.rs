//! Certificates that change without a restart: the TLS listeners' files are read again
//! when something changes in their directories (cert-manager rewrites a Kubernetes
//! Secret by swapping a symlink there), every [`POLL`] in case no event comes (a
//! filesystem without inotify), and on a configuration reload.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::tls::{Reloaded, TlsEndpoint};

/// How often the files are read even without a change event.
const POLL: Duration = Duration::from_secs(60);

/// How long events settle before the files are read: a rotation writes the
/// certificate and the key one after the other.
const SETTLE: Duration = Duration::from_millis(300);

/// The `why` of a configuration reload (SIGHUP, `tandem reload`): its refusals are
/// always logged at `error`, repeated or not.
pub const RELOAD: &str = "configuration reload";

/// The TLS listeners' certificates, for reloads.
#[derive(Default, Clone)]
pub struct Certificates {
    endpoints: Vec<Arc<TlsEndpoint>>,
}

impl Certificates {
    pub(crate) fn new(endpoints: Vec<Arc<TlsEndpoint>>) -> Self {
        Self { endpoints }
    }

    /// Reads every TLS listener's files again and puts changed ones in force; a pair
    /// that does not load is logged and the one in force serves on (a file event or a
    /// poll that meets the same refusal again logs it at `debug`; an operator's reload
    /// always at `error`). Returns how many listeners' files could not be put in force.
    pub fn reload(&self, why: &str) -> usize {
        let mut failed = 0;
        for endpoint in &self.endpoints {
            match endpoint.reload() {
                Ok(Reloaded::Unchanged) => {
                    debug!(
                        listener = endpoint.listener(),
                        why, "TLS certificate files unchanged"
                    );
                }
                Ok(Reloaded::Replaced) => info!(
                    listener = endpoint.listener(),
                    why,
                    not_after = endpoint.not_after().unwrap_or_default(),
                    "TLS certificates replaced: new handshakes use the new pair"
                ),
                Ok(Reloaded::StillRefused(err)) if why != RELOAD => {
                    failed += 1;
                    debug!(why, "TLS certificates still not replaced: {err}");
                }
                Ok(Reloaded::StillRefused(err)) | Err(err) => {
                    failed += 1;
                    error!(
                        why,
                        "TLS certificates not replaced; the pair in force serves on: {err}"
                    );
                }
            }
        }
        failed
    }

    /// Watches the files until `shutdown`, reloading on change.
    pub(crate) async fn watch(self, shutdown: CancellationToken) {
        if self.endpoints.is_empty() {
            return;
        }
        let changed = Arc::new(Notify::new());
        let signal = changed.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                signal.notify_one();
            }
        });
        // Held for as long as the loop runs: dropping it stops the events.
        let _watcher = match watcher {
            Ok(mut watcher) => {
                for dir in self.endpoints.iter().flat_map(|e| e.directories()) {
                    if let Err(err) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                        warn!(dir = %dir.display(), cause = %err, "cannot watch the TLS files' directory; reading it every {POLL:?}");
                    }
                }
                Some(watcher)
            }
            Err(err) => {
                warn!(cause = %err, "no file events for TLS certificates; reading them every {POLL:?}");
                None
            }
        };
        loop {
            let why = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changed.notified() => "files changed",
                _ = tokio::time::sleep(POLL) => "periodic check",
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SETTLE) => {}
            }
            self.reload(why);
        }
    }
}
