//! `storage:`: whether sessions, queues, inflight and retained messages survive a
//! restart, and how durable an acknowledgement is.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::storage::writer::SyncMode;

/// The embedded store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The store's directory; `None` (the embedded default) keeps everything in
    /// memory, lost at a restart.
    pub path: Option<PathBuf>,
    /// When a QoS 1/2 publish is acknowledged.
    pub sync: Sync,
    /// How often `sync: periodic` syncs what was written.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            path: None,
            sync: Sync::Always,
            interval: Duration::from_secs(1),
        }
    }
}

/// `storage.sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sync {
    /// A QoS 1/2 PUBLISH is acknowledged only once what it changed is on disk
    /// (concurrent publishers share syncs: group commit).
    Always,
    /// Written at once, synced every `interval`: a crash loses at most the last
    /// interval; a graceful stop loses nothing.
    Periodic,
}

impl StorageConfig {
    /// The writer's sync mode.
    pub fn mode(&self) -> SyncMode {
        match self.sync {
            Sync::Always => SyncMode::Always,
            Sync::Periodic => SyncMode::Periodic(self.interval),
        }
    }

    /// Checks what serde cannot: the offending key and why.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(("path", "must name a directory (null: memory only)".into()));
        }
        if self.sync == Sync::Periodic
            && (self.interval < Duration::from_millis(10)
                || self.interval > Duration::from_secs(3600))
        {
            return Err(("interval", "must be between 10ms and 1h".into()));
        }
        Ok(())
    }
}
