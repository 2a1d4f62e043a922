//! Reloading the configuration while serving (SIGHUP, `tandem reload`).
//!
//! Only the plugin sections take effect without a restart: `plugins:`, `auth:` and
//! `topic-check:` (see [`PluginHost::reload`](crate::plugins::PluginHost::reload)); and
//! the TLS listeners' certificate files are read again (as when they change).
//! Listeners, MQTT limits, `$SYS` and the shutdown timeout are read at start-up; a
//! reload that changes them says so in the log and leaves them as they are, so
//! listeners and connected clients are never touched. A file that does not parse, or a
//! plugin section that cannot be put in force, is refused with the reason, and the
//! configuration in force keeps serving.

use tracing::{info, warn};

use crate::broker::Broker;
use crate::config::{Config, ConfigError};
use crate::plugins::{PluginError, ReloadSummary};

/// Why a reload was refused. The configuration in force is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The broker serves the embedded default: there is no file to read again.
    #[error("no configuration file to reload (the broker serves the embedded default)")]
    NoFile,
    /// The new file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The new plugin sections could not be put in force.
    #[error("{0}")]
    Plugins(#[from] PluginError),
}

/// Sections that a reload does not apply, named as in the file.
fn ignored_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.listeners != new.listeners {
        changed.push("listeners");
    }
    if old.mqtt != new.mqtt {
        changed.push("mqtt");
    }
    if old.sys != new.sys {
        changed.push("sys");
    }
    if old.shutdown_timeout != new.shutdown_timeout {
        changed.push("shutdown_timeout");
    }
    changed
}

/// Reads the broker's configuration file again and applies its plugin sections.
pub async fn reload(broker: &Broker) -> Result<ReloadSummary, ReloadError> {
    let source = broker.config_source.as_ref().ok_or(ReloadError::NoFile)?;
    let _one = broker.reloading.lock().await;
    info!(file = %source.file.display(), "reloading the configuration");
    let new = source.load()?;
    let ignored = ignored_changes(&broker.config, &new);
    if !ignored.is_empty() {
        warn!(
            sections = ?ignored,
            "these sections changed but only take effect on restart; left as they are"
        );
    }
    broker.certificates.reload(crate::transport::watch::RELOAD);
    let summary = broker.plugins.reload(&new.plugin_sections()).await?;
    info!(
        generation = summary.generation,
        added = ?summary.added,
        removed = ?summary.removed,
        replaced = ?summary.replaced,
        reconfigured = ?summary.reconfigured,
        "configuration reloaded"
    );
    Ok(summary)
}

/// A reload's outcome in one line, for `tandem reload`: what changed, and a warning
/// for each chain it removed.
pub fn describe(summary: &ReloadSummary) -> String {
    let list = |v: &[String]| v.join(",");
    let mut text = format!(
        "configuration reloaded: generation {} added [{}] removed [{}] replaced [{}] reconfigured [{}]",
        summary.generation,
        list(&summary.added),
        list(&summary.removed),
        list(&summary.replaced),
        list(&summary.reconfigured),
    );
    for open in &summary.opened {
        text.push_str(&format!(
            "; warning: the reload removed the {} section: {} now",
            open.section, open.allows
        ));
    }
    text
}

/// Reloads on every SIGHUP until `shutdown`; a refused reload is logged with its
/// reason and the broker goes on with the configuration in force.
pub async fn on_sighup(
    broker: std::sync::Arc<Broker>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!("cannot install the SIGHUP handler: reload by signal is unavailable");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        info!("SIGHUP: reloading");
        if let Err(err) = reload(&broker).await {
            tracing::error!("reload refused; the configuration in force keeps serving: {err}");
        }
    }
}
